//! Projections are a function of the set of events: rebuilding from the log gives the live
//! projections, and ingesting the same events from several nodes in any order (with duplicates)
//! gives identical projections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_fabric::{Event, Fabric, TenantEventLog};
use nodus_policy::{PolicySnapshot, Subject};
use proptest::prelude::*;
use serde_json::{Value, json};

const LABELS: [&str; 3] = ["UNCLASSIFIED", "SECRET", "SECRET//CRYPTO"];

#[derive(Clone, Debug)]
enum Step {
    Create {
        node: usize,
        who: usize,
        id: u8,
        k: u8,
    },
    Update {
        node: usize,
        who: usize,
        id: u8,
        k: u8,
    },
    Delete {
        node: usize,
        who: usize,
        id: u8,
    },
    Sync {
        from: usize,
        to: usize,
    },
    Redefine {
        node: usize,
    },
}

fn step(nodes: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..nodes, 0usize..3, 0u8..4, 0u8..6).prop_map(|(node, who, id, k)| Step::Create { node, who, id, k }),
        4 => (0..nodes, 0usize..3, 0u8..4, 0u8..6).prop_map(|(node, who, id, k)| Step::Update { node, who, id, k }),
        1 => (0..nodes, 0usize..3, 0u8..4).prop_map(|(node, who, id)| Step::Delete { node, who, id }),
        2 => (0..nodes, 0..nodes).prop_map(|(from, to)| Step::Sync { from, to }),
        1 => (0..nodes).prop_map(|node| Step::Redefine { node }),
    ]
}

fn data(k: u8) -> Value {
    let mut d = json!({"title": format!("t{k}")});
    if k % 2 == 1 {
        d["n"] = json!(k);
    }
    if k > 2 {
        d["tag"] = json!(k % 3);
    }
    d
}

fn all_events(f: &Fabric) -> Vec<Event> {
    f.log().read_tenant(&tenant(), None, usize::MAX).unwrap().0
}

fn sync(from: &Fabric, to: &Fabric) {
    let r = to.ingest(&tenant(), all_events(from)).unwrap();
    assert!(
        r.log.rejected.is_empty() && r.log.equivocations.is_empty() && r.unprojected.is_empty()
    );
}

/// Runs the steps on `nodes` fabrics (node 0 defines the type and every node starts with it).
fn simulate(nodes: usize, steps: &[Step], snap: &PolicySnapshot) -> Vec<Fabric> {
    let t = tenant();
    let fabrics: Vec<Fabric> = (0..nodes)
        .map(|n| fabric(u8::try_from(n).unwrap() + 1))
        .collect();
    with_note(&fabrics[0], snap);
    for f in &fabrics[1..] {
        sync(&fabrics[0], f);
    }
    let subjects: Vec<Subject> = LABELS.iter().map(|l| subject(snap, "s", l)).collect();
    let mut extra = 0;
    for s in steps {
        match s {
            Step::Create { node, who, id, k } => {
                let _ = fabrics[*node].create(
                    &t,
                    snap,
                    &subjects[*who],
                    "note",
                    Some(format!("o{id}")),
                    None,
                    data(*k),
                );
            }
            Step::Update { node, who, id, k } => {
                let f = &fabrics[*node];
                if let Ok(v) = f.get(&t, snap, &subjects[*who], "note", &format!("o{id}")) {
                    let _ = f.update(
                        &t,
                        snap,
                        &subjects[*who],
                        "note",
                        &v.id,
                        v.version,
                        data(*k),
                    );
                }
            }
            Step::Delete { node, who, id } => {
                let f = &fabrics[*node];
                if let Ok(v) = f.get(&t, snap, &subjects[*who], "note", &format!("o{id}")) {
                    let _ = f.delete(&t, snap, &subjects[*who], "note", &v.id, v.version);
                }
            }
            Step::Sync { from, to } => {
                if from != to {
                    sync(&fabrics[*from], &fabrics[*to]);
                }
            }
            Step::Redefine { node } => {
                extra += 1;
                let mut schema = note_schema();
                schema["properties"][format!("extra{extra}")] = json!({"type": "string"});
                let _ = fabrics[*node].define_type(&t, snap, "note", schema, note_fields());
            }
        }
    }
    fabrics
}

/// A deterministic shuffle (xorshift) with duplicates.
fn permute(events: &[Event], seed: u64, dups: usize) -> Vec<Event> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out: Vec<Event> = events.to_vec();
    for _ in 0..dups {
        if !events.is_empty() {
            out.push(events[(next() % events.len() as u64) as usize].clone());
        }
    }
    for i in (1..out.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn rebuild_equals_the_live_projections(steps in proptest::collection::vec(step(2), 1..40)) {
        let snap = snapshot();
        let fabrics = simulate(2, &steps, &snap);
        for f in &fabrics {
            let live = f.projection_rows(&tenant()).unwrap();
            f.rebuild(&tenant()).unwrap();
            let rebuilt = f.projection_rows(&tenant()).unwrap();
            prop_assert_eq!(live.len(), rebuilt.len());
            for (a, b) in live.iter().zip(&rebuilt) {
                prop_assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn any_arrival_order_gives_identical_projections(
        steps in proptest::collection::vec(step(3), 1..40),
        seeds in proptest::collection::vec(any::<u64>(), 3),
        batch in 1usize..7,
    ) {
        let snap = snapshot();
        let fabrics = simulate(3, &steps, &snap);
        // Every event of every node, from every log (so with many duplicates).
        let mut events = Vec::new();
        for f in &fabrics {
            events.extend(all_events(f));
        }
        let mut reference: Option<Vec<String>> = None;
        for seed in seeds {
            let fresh = fabric(9);
            for chunk in permute(&events, seed, 5).chunks(batch) {
                let r = fresh.ingest(&tenant(), chunk.to_vec()).unwrap();
                prop_assert!(r.log.rejected.is_empty() && r.unprojected.is_empty());
            }
            prop_assert!(fresh.log().pending(&tenant()).unwrap().is_empty());
            let rows = fresh.projection_rows(&tenant()).unwrap();
            prop_assert!(!rows.is_empty());
            match &reference {
                None => reference = Some(rows),
                Some(r) => prop_assert_eq!(r, &rows),
            }
        }
        // The nodes themselves converge to the same projections once fully synced.
        for to in 0..3 {
            for from in 0..3 {
                if from != to {
                    sync(&fabrics[from], &fabrics[to]);
                }
            }
        }
        for f in &fabrics {
            prop_assert_eq!(reference.as_ref().unwrap(), &f.projection_rows(&tenant()).unwrap());
        }
    }
}

#[test]
fn concurrent_updates_merge_per_top_level_field() {
    let snap = snapshot();
    let t = tenant();
    let s = subject(&snap, "s", "UNCLASSIFIED");
    let a = fabric(1);
    let b = fabric(2);
    with_note(&a, &snap);
    a.create(
        &t,
        &snap,
        &s,
        "note",
        Some("x".into()),
        None,
        json!({"title": "t", "n": 1, "tag": "a"}),
    )
    .unwrap();
    sync(&a, &b);
    // Concurrently: A changes `n`, B changes `tag` and removes `n`.
    a.update(
        &t,
        &snap,
        &s,
        "note",
        "x",
        1,
        json!({"title": "t", "n": 2, "tag": "a"}),
    )
    .unwrap();
    b.update(
        &t,
        &snap,
        &s,
        "note",
        "x",
        1,
        json!({"title": "t", "tag": "b"}),
    )
    .unwrap();
    sync(&a, &b);
    sync(&b, &a);
    let va = a.get(&t, &snap, &s, "note", "x").unwrap();
    let vb = b.get(&t, &snap, &s, "note", "x").unwrap();
    assert_eq!(va, vb);
    // Same lamport on both sides: node 2's stamp is newer, so its removal of `n` wins; `tag`
    // was changed only by B.
    assert_eq!(va.data, json!({"title": "t", "tag": "b"}));
    assert_eq!(va.version, 3);
    assert_eq!(
        a.projection_rows(&t).unwrap(),
        b.projection_rows(&t).unwrap()
    );
    // A later update on A (higher lamport) wins over B's field.
    a.update(
        &t,
        &snap,
        &s,
        "note",
        "x",
        3,
        json!({"title": "t", "n": 5, "tag": "b"}),
    )
    .unwrap();
    sync(&a, &b);
    assert_eq!(b.get(&t, &snap, &s, "note", "x").unwrap().data["n"], 5);
}
