//! Hidden ≡ absent: two fabrics built by the same low operations, one of them with data above the
//! low subjects interleaved (new objects, and polyinstantiated versions of low ids). Every objects
//! command run as a low subject gives byte-identical output in both worlds: results, error text,
//! counts, cursors, page boundaries, histories, type lists.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_fabric::{Direction, Fabric, ListQuery, Op, Predicate};
use nodus_policy::{PolicySnapshot, Subject};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Subjects whose outputs are compared (the "low" side).
const LOW: [&str; 2] = ["UNCLASSIFIED", "CONFIDENTIAL//CRYPTO"];
/// Subjects that exist only in world B: each is above, or incomparable with, both low subjects.
const HIGH: [&str; 4] = [
    "SECRET//CRYPTO",
    "CONFIDENTIAL//NOFORN",
    "TOP SECRET//CRYPTO,NOFORN",
    "CONFIDENTIAL//CRYPTO,NOFORN",
];

#[derive(Clone, Debug)]
enum Act {
    Create { id: u8, k: u8 },
    Update { id: u8, expected: u64, k: u8 },
    Delete { id: u8, expected: u64 },
}

fn act() -> impl Strategy<Value = (usize, Act)> {
    let a = prop_oneof![
        (0u8..6, 0u8..8).prop_map(|(id, k)| Act::Create { id, k }),
        (0u8..6, 1u64..4, 0u8..8).prop_map(|(id, expected, k)| Act::Update { id, expected, k }),
        (0u8..6, 1u64..4).prop_map(|(id, expected)| Act::Delete { id, expected }),
    ];
    (0usize..4, a)
}

fn data(k: u8) -> Value {
    let tag = match k % 4 {
        0 => json!("red"),
        1 => json!(k),
        2 => json!(k > 4),
        _ => Value::Null,
    };
    let mut d = json!({"title": format!("t{}", k % 5), "n": f64::from(k) / 2.0, "tag": tag});
    if k.is_multiple_of(3) {
        d["codeword"] = json!("CW");
    }
    if k == 7 {
        d.as_object_mut().unwrap().remove("tag");
    }
    d
}

fn run(f: &Fabric, snap: &PolicySnapshot, s: &Subject, a: &Act) -> String {
    let t = tenant();
    let id = |i: &u8| format!("o{i}");
    match a {
        Act::Create { id: i, k } => format!(
            "{:?}",
            f.create(&t, snap, s, "note", Some(id(i)), None, data(*k))
        ),
        Act::Update { id: i, expected, k } => {
            format!(
                "{:?}",
                f.update(&t, snap, s, "note", &id(i), *expected, data(*k))
            )
        }
        Act::Delete { id: i, expected } => {
            format!("{:?}", f.delete(&t, snap, s, "note", &id(i), *expected))
        }
    }
}

/// Every read, as `s`, in a transcript.
fn transcript(f: &Fabric, snap: &PolicySnapshot, s: &Subject) -> Vec<String> {
    let t = tenant();
    let mut out = Vec::new();
    out.push(format!(
        "{:?}",
        f.list_types(&t, snap)
            .map(|v| v.iter().map(|d| d.to_doc()).collect::<Vec<_>>())
    ));
    out.push(format!(
        "{:?}",
        f.get_type(&t, snap, "note").map(|d| d.to_doc())
    ));
    for i in 0..7 {
        let id = format!("o{i}");
        out.push(format!("{:?}", f.get(&t, snap, s, "note", &id)));
        out.push(format!("{:?}", f.history(&t, snap, s, "note", &id)));
    }
    let p = Predicate::new;
    let filters: Vec<Vec<Predicate>> = vec![
        vec![],
        vec![p("tag", Op::Eq, json!("red"))],
        vec![p("tag", Op::Ne, json!("red"))],
        vec![p("n", Op::Lt, json!(2))],
        vec![p("n", Op::Ge, json!(1.5))],
        vec![p("tag", Op::In, json!([true, 3, "red"]))],
        vec![p("tag", Op::Exists, Value::Null)],
        vec![p("title", Op::Prefix, json!("t1"))],
        vec![p("codeword", Op::Eq, json!("CW"))],
        vec![p("body", Op::Eq, json!("x"))],
    ];
    let sorts = [
        None,
        Some(("n".to_owned(), Direction::Asc)),
        Some(("tag".to_owned(), Direction::Desc)),
        Some(("title".to_owned(), Direction::Asc)),
        Some(("codeword".to_owned(), Direction::Asc)),
    ];
    for filter in &filters {
        out.push(format!("{:?}", f.count(&t, snap, s, "note", filter)));
        for sort in &sorts {
            for limit in [1, 2, 5] {
                let mut q = ListQuery {
                    filter: filter.clone(),
                    sort: sort.clone(),
                    limit,
                    ..ListQuery::new("note")
                };
                for _ in 0..10 {
                    let page = f.list(&t, snap, s, &q);
                    out.push(format!("{page:?}"));
                    match page {
                        Ok(nodus_fabric::Page {
                            next_cursor: Some(c),
                            ..
                        }) => q.cursor = Some(c),
                        _ => break,
                    }
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_low_subject_cannot_tell_the_worlds_apart(
        low in proptest::collection::vec(act(), 1..25),
        high in proptest::collection::vec(act(), 1..40),
    ) {
        let snap = snapshot();
        let a = fabric(1);
        let b = fabric(1);
        with_note(&a, &snap);
        with_note(&b, &snap);
        let lows: Vec<Subject> = LOW.iter().map(|c| subject(&snap, "low", c)).collect();
        let highs: Vec<Subject> = HIGH.iter().map(|c| subject(&snap, "high", c)).collect();
        for h in &highs {
            for l in &lows {
                prop_assert!(!snap.can_read(l, h.clearance()));
            }
        }
        let mut high = high.into_iter();
        // World B starts with some high data already there.
        for (who, act) in high.by_ref().take(5) {
            run(&b, &snap, &highs[who], &act);
        }
        for (who, act) in &low {
            let s = &lows[who % 2];
            let ra = run(&a, &snap, s, act);
            let rb = run(&b, &snap, s, act);
            prop_assert_eq!(ra, rb);
            for (who, act) in high.by_ref().take(2) {
                run(&b, &snap, &highs[who], &act);
            }
        }
        for s in &lows {
            let ta = transcript(&a, &snap, s);
            let tb = transcript(&b, &snap, s);
            prop_assert_eq!(ta.len(), tb.len());
            for (x, y) in ta.iter().zip(&tb) {
                prop_assert_eq!(x, y);
            }
        }
    }
}

#[test]
fn a_fixed_scenario_of_polyinstantiated_ids() {
    let snap = snapshot();
    let a = fabric(1);
    let b = fabric(1);
    with_note(&a, &snap);
    with_note(&b, &snap);
    let t = tenant();
    let low = subject(&snap, "low", "CONFIDENTIAL//CRYPTO");
    let high = subject(&snap, "high", "SECRET//CRYPTO");
    // In B, the high subject creates o1 first; then the low subject creates o1 in both worlds.
    b.create(&t, &snap, &high, "note", Some("o1".into()), None, data(3))
        .unwrap();
    b.create(&t, &snap, &high, "note", Some("o9".into()), None, data(0))
        .unwrap();
    for f in [&a, &b] {
        f.create(&t, &snap, &low, "note", Some("o1".into()), None, data(1))
            .unwrap();
        f.create(&t, &snap, &low, "note", Some("o2".into()), None, data(2))
            .unwrap();
    }
    b.update(&t, &snap, &high, "note", "o1", 1, data(5))
        .unwrap();
    assert_eq!(transcript(&a, &snap, &low), transcript(&b, &snap, &low));
    // The high subject does see the difference.
    assert_ne!(transcript(&a, &snap, &high), transcript(&b, &snap, &high));
}
