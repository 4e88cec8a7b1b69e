//! The merge of CRDT documents does not depend on the order events arrive in: the changes of 2–3
//! concurrent writers, applied with `apply_event` in random orders with duplicates (also against
//! the order of each writer's chain), give the same materialised JSON and heads as the writers'
//! own converged state.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use nodus_fabric::{Event, NodeId, SqliteEventLog, TenantEventLog};
use nodus_policy::{ActorId, PolicySnapshot, PolicySources, PolicyStore, Subject, TenantId};
use nodus_sync::crdt::{AutomergeStore, CrdtStore, DocOp, DocView, apply_event};
use proptest::prelude::*;
use serde_json::json;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn snapshot() -> Arc<PolicySnapshot> {
    PolicyStore::new(PolicySources::new().with_tenant(tenant(), "tenants/acme.toml", ""))
        .unwrap()
        .snapshot(&tenant())
        .unwrap()
}

fn subject(snap: &PolicySnapshot) -> Subject {
    let scheme = snap.label_scheme();
    Subject::new(
        tenant(),
        ActorId::new("w").unwrap(),
        nodus_policy::RoleSet::from_ids([]),
        scheme.parse("UNCLASSIFIED").unwrap(),
        scheme,
    )
}

fn store(n: u8) -> AutomergeStore {
    AutomergeStore::new(Arc::new(
        SqliteEventLog::in_memory(NodeId::from_bytes([n; 16])).unwrap(),
    ))
    .unwrap()
}

fn events(s: &AutomergeStore) -> Vec<Event> {
    s.log().read_tenant(&tenant(), None, 100_000).unwrap().0
}

/// An op that is valid on any state of the document below: (kind, key, value).
fn op(kind: u8, key: u8, value: i64) -> DocOp {
    let v = match kind % 5 {
        0 => json!({"op": "set", "path": [format!("k{}", key % 3)], "value": value}),
        1 => json!({"op": "splice_text", "path": ["t"], "pos": 0, "text": format!("{}", key % 10)}),
        2 => json!({"op": "insert", "path": ["l", 0], "value": value}),
        3 => json!({"op": "set", "path": ["m", format!("x{}", key % 2)], "value": {"v": value}}),
        _ => json!({"op": "set", "path": [format!("k{}", key % 3)], "value": format!("s{value}")}),
    };
    serde_json::from_value(v).unwrap()
}

fn view(s: &AutomergeStore, snap: &PolicySnapshot, who: &Subject) -> DocView {
    s.get(&tenant(), snap, who, "d").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_order_independent(
        writers in 2usize..=3,
        edits in prop::collection::vec((0usize..3, 0u8..5, 0u8..10, -5i64..5), 1..12),
        order in Just(()).prop_flat_map(|()| prop::collection::vec(any::<prop::sample::Index>(), 40)),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let snap = snapshot();
        let who = subject(&snap);
        let t = tenant();
        let ws: Vec<AutomergeStore> = (0..writers).map(|i| store(u8::try_from(i + 1).unwrap())).collect();
        ws[0].create(&t, &snap, &who, "note", "d", "UNCLASSIFIED", &json!({"t": "", "l": [], "m": {}})).unwrap();
        let created = events(&ws[0]);
        for w in &ws[1..] {
            w.ingest(&t, created.clone()).unwrap();
        }
        // concurrent edits: no exchange while editing
        for (w, kind, key, value) in &edits {
            let w = &ws[*w % writers];
            w.change(&t, &snap, &who, "d", &[op(*kind, *key, *value)]).unwrap();
        }
        // every event of every writer (the create once)
        let mut all: Vec<Event> = created.clone();
        for w in &ws {
            all.extend(events(w).into_iter().filter(|e| !created.contains(e)));
        }
        // the writers converge among themselves
        for w in &ws {
            w.ingest(&t, all.clone()).unwrap();
        }
        let expected = view(&ws[0], &snap, &who);
        for w in &ws[1..] {
            prop_assert_eq!(&view(w, &snap, &who), &expected);
        }
        // a random permutation, plus duplicates, straight into the projection
        let mut perm: Vec<usize> = (0..all.len()).collect();
        for (i, idx) in order.iter().enumerate() {
            let n = perm.len();
            perm.swap(i % n, idx.index(n));
        }
        for d in &dups {
            let at = d.index(perm.len() + 1);
            perm.insert(at, d.index(all.len()));
        }
        let fresh = store(9);
        fresh.log().read_projection(|c| {
            for i in &perm {
                assert!(apply_event(c, &t, &all[*i]).unwrap());
            }
            Ok::<(), ()>(())
        }).unwrap();
        prop_assert_eq!(view(&fresh, &snap, &who), expected);
    }
}
