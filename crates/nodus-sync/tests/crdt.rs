//! CRDT documents: create/change/get/list/history, MAC (hidden ≡ absent, no write down), limits,
//! two stores exchanging events, rebuild equals live, air-gap deltas in both forms.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use nodus_fabric::{Event, NodeId, SqliteEventLog, TenantEventLog};
use nodus_policy::{ActorId, PolicySnapshot, PolicySources, PolicyStore, Subject, TenantId};
use nodus_sync::crdt::{
    AutomergeStore, CrdtError, CrdtLimits, CrdtStore, DeltaForm, DocEventKind, DocOp, DocView,
};
use serde_json::{Value, json};

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn snapshot() -> Arc<PolicySnapshot> {
    let store = PolicyStore::new(
        PolicySources::new()
            .with_system("system.toml", "[mac]\ncompartments = [\"CRYPTO\"]\n")
            .with_tenant(tenant(), "tenants/acme.toml", ""),
    )
    .unwrap();
    store.snapshot(&tenant()).unwrap()
}

fn subject(snap: &PolicySnapshot, actor: &str, clearance: &str) -> Subject {
    let scheme = snap.label_scheme();
    Subject::new(
        tenant(),
        ActorId::new(actor).unwrap(),
        nodus_policy::RoleSet::from_ids([]),
        scheme.parse(clearance).unwrap(),
        scheme,
    )
}

fn store(n: u8) -> AutomergeStore {
    AutomergeStore::new(Arc::new(
        SqliteEventLog::in_memory(NodeId::from_bytes([n; 16])).unwrap(),
    ))
    .unwrap()
}

fn store_with(n: u8, limits: CrdtLimits) -> AutomergeStore {
    AutomergeStore::with_limits(
        Arc::new(SqliteEventLog::in_memory(NodeId::from_bytes([n; 16])).unwrap()),
        limits,
    )
    .unwrap()
}

fn ops(v: Value) -> Vec<DocOp> {
    serde_json::from_value(v).unwrap()
}

fn all_events(s: &AutomergeStore) -> Vec<Event> {
    s.log().read_tenant(&tenant(), None, 100_000).unwrap().0
}

/// Ingests into `to` every event of `from` it lacks.
fn sync(from: &AutomergeStore, to: &AutomergeStore) {
    let r = to.ingest(&tenant(), all_events(from)).unwrap();
    assert!(r.unprojected.is_empty());
}

#[test]
fn create_change_get_list_history() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let s = store(1);
    let t = tenant();
    let v = s
        .create(
            &t,
            &snap,
            &alice,
            "note",
            "n1",
            "unclassified",
            &json!({"title": "Plan", "items": [1, 2], "meta": {"n": 1.5, "ok": true, "x": null}}),
        )
        .unwrap();
    assert_eq!(v.label, "UNCLASSIFIED");
    assert_eq!(v.heads.len(), 1);
    let out = s
        .change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([
                {"op": "splice_text", "path": ["title"], "pos": 4, "delete": 0, "text": " B"},
                {"op": "insert", "path": ["items", 2], "value": {"done": false}},
                {"op": "set", "path": ["items", 0], "value": 10},
                {"op": "delete", "path": ["meta", "x"]},
                {"op": "set", "path": ["tags"], "value": ["a", "b"]},
                {"op": "delete", "path": ["items", 1]},
            ])),
        )
        .unwrap();
    assert_eq!(out.changes.len(), 1);
    let doc = s.get(&t, &snap, &alice, "n1").unwrap();
    assert_eq!(
        doc.content,
        json!({"title": "Plan B", "items": [10, {"done": false}], "meta": {"n": 1.5, "ok": true}, "tags": ["a", "b"]})
    );
    assert_eq!(doc.heads, out.heads);
    assert_eq!(doc.doc_type, "note");

    // A no-op change appends nothing.
    let before = s.log().high_water_marks(&t).unwrap();
    let none = s.change(&t, &snap, &alice, "n1", &[]).unwrap();
    assert!(none.changes.is_empty());
    assert_eq!(s.log().high_water_marks(&t).unwrap(), before);

    s.create(&t, &snap, &alice, "sheet", "s1", "UNCLASSIFIED", &json!({}))
        .unwrap();
    let all = s.list(&t, &snap, &alice, None).unwrap();
    assert_eq!(
        all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["n1", "s1"]
    );
    let notes = s.list(&t, &snap, &alice, Some("note")).unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].id, "n1");

    let h = s.history(&t, &snap, &alice, "n1").unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].kind, DocEventKind::Created);
    assert_eq!(h[1].kind, DocEventKind::Changed);
    assert_eq!(h[1].changes, out.changes);
    assert!(h[0].lamport < h[1].lamport);

    // the events: kinds, entity, label, payload layout
    let events = all_events(&s);
    assert_eq!(events[0].kind.as_str(), "doc.created");
    assert_eq!(events[0].entity.as_str(), "doc/n1");
    assert_eq!(events[0].label.as_str(), "UNCLASSIFIED");
    let p = events[1].payload.to_value().unwrap();
    assert_eq!(p["id"], "n1");
    assert_eq!(p["type"], "note");
    assert_eq!(p["changes"].as_array().unwrap().len(), 1);

    // an existing id at the same label
    let e = s
        .create(&t, &snap, &alice, "note", "n1", "UNCLASSIFIED", &json!({}))
        .unwrap_err();
    assert!(matches!(e, CrdtError::AlreadyExists { .. }), "{e}");
}

#[test]
fn bad_ops_write_nothing_and_name_the_document_not_the_content() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let s = store(1);
    let t = tenant();
    s.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"secret-key": "hush", "l": []}),
    )
    .unwrap();
    let before = s.get(&t, &snap, &alice, "n1").unwrap();
    let marks = s.log().high_water_marks(&t).unwrap();
    for bad in [
        json!([{"op": "set", "path": ["ok"], "value": 1}, {"op": "set", "path": ["nope", "x"], "value": 1}]),
        json!([{"op": "delete", "path": ["missing-key"]}]),
        json!([{"op": "insert", "path": ["l", 5], "value": 1}]),
        json!([{"op": "set", "path": ["l", 0], "value": 1}]),
        json!([{"op": "splice_text", "path": ["secret-key"], "pos": 3, "delete": 5, "text": "x"}]),
        json!([{"op": "splice_text", "path": ["l"], "pos": 0, "text": "x"}]),
        json!([{"op": "set", "path": [], "value": 1}]),
    ] {
        let e = s.change(&t, &snap, &alice, "n1", &ops(bad)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CrdtError::BadOp { .. }), "{msg}");
        assert!(msg.contains("`n1`"), "{msg}");
        assert!(
            !msg.contains("hush") && !msg.contains("secret-key"),
            "{msg}"
        );
    }
    assert_eq!(s.get(&t, &snap, &alice, "n1").unwrap(), before);
    assert_eq!(s.log().high_water_marks(&t).unwrap(), marks);
    // initial content must be an object
    let e = s
        .create(&t, &snap, &alice, "note", "n2", "UNCLASSIFIED", &json!([1]))
        .unwrap_err();
    assert!(matches!(e, CrdtError::NotAnObject { .. }));
    let e = s
        .create(&t, &snap, &alice, "no/te", "n2", "UNCLASSIFIED", &json!({}))
        .unwrap_err();
    assert!(matches!(e, CrdtError::InvalidType { .. }));
    let e = s
        .create(&t, &snap, &alice, "note", "", "UNCLASSIFIED", &json!({}))
        .unwrap_err();
    assert!(matches!(e, CrdtError::InvalidId { .. }));
}

#[test]
fn mac_hidden_is_absent_and_no_write_down() {
    let snap = snapshot();
    let low = subject(&snap, "low", "UNCLASSIFIED");
    let high = subject(&snap, "high", "SECRET");
    let t = tenant();
    let s = store(1);
    let empty = store(2);
    s.create(
        &t,
        &snap,
        &high,
        "note",
        "s1",
        "SECRET",
        &json!({"plan": "x"}),
    )
    .unwrap();

    // read up: exactly the error of a missing document, for every read
    let hidden = s.get(&t, &snap, &low, "s1").unwrap_err();
    let missing = empty.get(&t, &snap, &low, "s1").unwrap_err();
    assert_eq!(hidden, missing);
    assert_eq!(hidden.to_string(), "document `s1` not found");
    assert_eq!(
        s.history(&t, &snap, &low, "s1").unwrap_err(),
        empty.history(&t, &snap, &low, "s1").unwrap_err()
    );
    assert_eq!(
        s.delta_since(&t, &snap, &low, "s1", &[]).unwrap_err(),
        empty.delta_since(&t, &snap, &low, "s1", &[]).unwrap_err()
    );
    let set = ops(json!([{"op": "set", "path": ["a"], "value": 1}]));
    assert_eq!(
        s.change(&t, &snap, &low, "s1", &set).unwrap_err(),
        empty.change(&t, &snap, &low, "s1", &set).unwrap_err()
    );
    // a low list never shows high documents
    assert!(s.list(&t, &snap, &low, None).unwrap().is_empty());
    assert_eq!(s.list(&t, &snap, &high, None).unwrap().len(), 1);

    // write down is refused (create and change)
    let e = s
        .create(&t, &snap, &high, "note", "u1", "UNCLASSIFIED", &json!({}))
        .unwrap_err();
    assert!(matches!(e, CrdtError::WriteDenied { .. }), "{e}");
    s.create(
        &t,
        &snap,
        &low,
        "note",
        "u1",
        "UNCLASSIFIED",
        &json!({"a": 1}),
    )
    .unwrap();
    let e = s.change(&t, &snap, &high, "u1", &set).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the subject may not write document `u1` at label `UNCLASSIFIED`"
    );
    // write up at create is refused too (the subject could not read it back)
    let e = s
        .create(&t, &snap, &low, "note", "u2", "SECRET", &json!({}))
        .unwrap_err();
    assert!(matches!(e, CrdtError::WriteDenied { .. }));

    // polyinstantiation: low creates its own `s1` without learning of the high one
    s.create(
        &t,
        &snap,
        &low,
        "note",
        "s1",
        "UNCLASSIFIED",
        &json!({"mine": true}),
    )
    .unwrap();
    assert_eq!(
        s.get(&t, &snap, &low, "s1").unwrap().content,
        json!({"mine": true})
    );
    let hv = s.get(&t, &snap, &high, "s1").unwrap();
    assert_eq!(hv.label, "SECRET");
    assert_eq!(hv.content, json!({"plan": "x"}));
    let low_list = s.list(&t, &snap, &low, None).unwrap();
    assert!(low_list.iter().all(|d| d.label == "UNCLASSIFIED"));
    assert_eq!(low_list.len(), 2);
}

#[test]
fn size_cap_refuses_naming_the_document_and_writes_nothing() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let s = store_with(
        1,
        CrdtLimits {
            allowed_types: None,
            max_doc_bytes: 2_000,
        },
    );
    s.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"body": ""}),
    )
    .unwrap();
    let before = s.get(&t, &snap, &alice, "n1").unwrap();
    let marks = s.log().high_water_marks(&t).unwrap();
    // incompressible text, well above the cap
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: String = (0..4000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + u8::try_from(x % 90).unwrap())
        })
        .collect();
    let e = s
        .change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([{"op": "splice_text", "path": ["body"], "pos": 0, "text": big}])),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CrdtError::TooLarge { max: 2000, .. }), "{msg}");
    assert!(msg.contains("`n1`") && !msg.contains(&big[..20]), "{msg}");
    assert_eq!(s.log().high_water_marks(&t).unwrap(), marks);
    assert_eq!(s.get(&t, &snap, &alice, "n1").unwrap(), before);
    assert_eq!(s.history(&t, &snap, &alice, "n1").unwrap().len(), 1);
    // small changes still pass
    s.change(
        &t,
        &snap,
        &alice,
        "n1",
        &ops(json!([{"op": "splice_text", "path": ["body"], "pos": 0, "text": "ok"}])),
    )
    .unwrap();
    // and a creation above the cap is refused
    let e = s
        .create(
            &t,
            &snap,
            &alice,
            "note",
            "n2",
            "UNCLASSIFIED",
            &json!({"b": big}),
        )
        .unwrap_err();
    assert!(matches!(e, CrdtError::TooLarge { .. }));
    assert!(s.get(&t, &snap, &alice, "n2").is_err());
}

#[test]
fn allowed_types_gate_create_and_change() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let open = store(1);
    open.create(&t, &snap, &alice, "sheet", "s1", "UNCLASSIFIED", &json!({}))
        .unwrap();
    let limits = CrdtLimits {
        allowed_types: Some(vec!["note".into()]),
        ..CrdtLimits::default()
    };
    let s = AutomergeStore::with_limits(open.log().clone(), limits).unwrap();
    let e = s
        .create(&t, &snap, &alice, "sheet", "s2", "UNCLASSIFIED", &json!({}))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "document type `sheet` is not allowed (`crdt.allowed_types`)"
    );
    s.create(&t, &snap, &alice, "note", "n1", "UNCLASSIFIED", &json!({}))
        .unwrap();
    let set = ops(json!([{"op": "set", "path": ["a"], "value": 1}]));
    assert!(matches!(
        s.change(&t, &snap, &alice, "s1", &set).unwrap_err(),
        CrdtError::TypeNotAllowed { .. }
    ));
    // reads stay possible
    assert_eq!(s.get(&t, &snap, &alice, "s1").unwrap().doc_type, "sheet");
}

fn views(s: &AutomergeStore, snap: &PolicySnapshot, who: &Subject) -> Vec<(DocView, usize)> {
    let t = tenant();
    s.list(&t, snap, who, None)
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                s.get(&t, snap, who, &d.id).unwrap(),
                s.history(&t, snap, who, &d.id).unwrap().len(),
            )
        })
        .collect()
}

#[test]
fn two_stores_exchanging_events_converge_and_rebuild_equals_live() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let high = subject(&snap, "high", "SECRET");
    let t = tenant();
    let a = store(1);
    let b = store(2);
    a.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"title": "Plan", "items": []}),
    )
    .unwrap();
    a.create(&t, &snap, &high, "note", "k1", "SECRET", &json!({"n": 1}))
        .unwrap();
    sync(&a, &b);
    assert_eq!(views(&a, &snap, &high), views(&b, &snap, &high));
    assert_eq!(views(&b, &snap, &alice).len(), 1);

    // concurrent edits on both sides
    for i in 0..5 {
        a.change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([
                {"op": "splice_text", "path": ["title"], "pos": 0, "text": "A"},
                {"op": "insert", "path": ["items", 0], "value": i},
                {"op": "set", "path": ["by"], "value": "a"},
            ])),
        )
        .unwrap();
        b.change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([
                {"op": "splice_text", "path": ["title"], "pos": 4, "text": "b"},
                {"op": "insert", "path": ["items", 0], "value": 100 + i},
                {"op": "set", "path": ["by"], "value": "b"},
            ])),
        )
        .unwrap();
    }
    b.create(
        &t,
        &snap,
        &alice,
        "sheet",
        "b1",
        "UNCLASSIFIED",
        &json!({"x": [1]}),
    )
    .unwrap();
    sync(&a, &b);
    sync(&b, &a);
    let va = views(&a, &snap, &high);
    assert_eq!(va, views(&b, &snap, &high));
    let n1 = &va.iter().find(|(v, _)| v.id == "n1").unwrap().0;
    let title = n1.content["title"].as_str().unwrap();
    assert_eq!(title.matches('A').count(), 5);
    assert_eq!(title.matches('b').count(), 5);
    assert_eq!(n1.content["items"].as_array().unwrap().len(), 10);
    assert_eq!(n1.heads.len(), 2, "two concurrent branches");
    // a re-delivery changes nothing
    let r = a.ingest(&t, all_events(&b)).unwrap();
    assert!(r.log.applied.is_empty());
    assert_eq!(views(&a, &snap, &high), va);

    // rebuild equals live, on both
    for s in [&a, &b] {
        let live = views(s, &snap, &high);
        let sizes: Vec<_> = s.list(&t, &snap, &high, None).unwrap();
        s.rebuild(&t).unwrap();
        assert_eq!(views(s, &snap, &high), live);
        assert_eq!(s.list(&t, &snap, &high, None).unwrap(), sizes);
    }
    // and a fresh store over the same log, with the projection rebuilt, agrees
    let c = AutomergeStore::new(a.log().clone()).unwrap();
    c.rebuild(&t).unwrap();
    assert_eq!(views(&c, &snap, &high), va);
}

#[test]
fn compaction_keeps_content_over_many_changes() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let a = store(1);
    a.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"t": ""}),
    )
    .unwrap();
    // 40 changes of 1,000 incompressible characters: ~40 KB of changes, past the compaction floor
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = || -> String {
        (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + u8::try_from(x % 90).unwrap())
            })
            .collect()
    };
    for i in 0..40 {
        a.change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([{"op": "splice_text", "path": ["t"], "pos": i * 1000, "text": chunk()}])),
        )
        .unwrap();
    }
    let live = a.get(&t, &snap, &alice, "n1").unwrap();
    assert_eq!(live.content["t"].as_str().unwrap().len(), 40_000);
    // stored bytes stay below the compacted document plus the larger of it and the 32 KiB floor
    let d = &a.list(&t, &snap, &alice, None).unwrap()[0];
    let whole = a
        .delta_since(&t, &snap, &alice, "n1", &[])
        .unwrap()
        .bytes
        .len() as u64;
    assert!(whole > 32 * 1024, "{whole}");
    assert!(d.size <= 2 * whole + 1024, "{} vs {}", d.size, whole);
    // a rebuild stores the same bytes (same compaction decisions)
    a.rebuild(&t).unwrap();
    assert_eq!(&a.list(&t, &snap, &alice, None).unwrap()[0], d);
    // a second store over the same log (cold cache) reads the same
    let cold = AutomergeStore::new(a.log().clone()).unwrap();
    assert_eq!(cold.get(&t, &snap, &alice, "n1").unwrap(), live);
}

#[test]
fn delta_both_forms() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let a = store(1);
    let b = store(2);
    // a document of some size (incompressible text), so a few changes are smaller than it
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let body: String = (0..3000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + u8::try_from(x % 90).unwrap())
        })
        .collect();
    a.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"t": "start", "body": body}),
    )
    .unwrap();
    sync(&a, &b);
    let acked = b.get(&t, &snap, &alice, "n1").unwrap().heads;

    // a few changes: the changes themselves are smaller than the whole document
    for i in 0..3 {
        a.change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([{"op": "set", "path": [format!("k{i}")], "value": i}])),
        )
        .unwrap();
    }
    let d = a.delta_since(&t, &snap, &alice, "n1", &acked).unwrap();
    assert_eq!(d.form, DeltaForm::Changes);
    let out = b.apply_delta(&t, &snap, &alice, "n1", &d.bytes).unwrap();
    assert_eq!(out.added, 3);
    assert_eq!(
        b.get(&t, &snap, &alice, "n1").unwrap(),
        a.get(&t, &snap, &alice, "n1").unwrap()
    );
    // applying it again adds nothing and appends no event
    let marks = b.log().high_water_marks(&t).unwrap();
    assert_eq!(
        b.apply_delta(&t, &snap, &alice, "n1", &d.bytes)
            .unwrap()
            .added,
        0
    );
    assert_eq!(b.log().high_water_marks(&t).unwrap(), marks);

    // many small changes: the compacted document is smaller than their sum
    let acked = b.get(&t, &snap, &alice, "n1").unwrap().heads;
    for i in 0..400 {
        a.change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([{"op": "splice_text", "path": ["t"], "pos": 5 + i, "text": "."}])),
        )
        .unwrap();
    }
    let d = a.delta_since(&t, &snap, &alice, "n1", &acked).unwrap();
    assert_eq!(d.form, DeltaForm::Whole);
    let out = b.apply_delta(&t, &snap, &alice, "n1", &d.bytes).unwrap();
    assert_eq!(out.added, 400);
    assert_eq!(
        b.get(&t, &snap, &alice, "n1").unwrap(),
        a.get(&t, &snap, &alice, "n1").unwrap()
    );
    // the merged changes are events on b: a rebuild of b keeps them
    let live = b.get(&t, &snap, &alice, "n1").unwrap();
    b.rebuild(&t).unwrap();
    assert_eq!(b.get(&t, &snap, &alice, "n1").unwrap(), live);
    // and the events b recorded merge back into a as duplicates of a's changes
    sync(&b, &a);
    assert_eq!(a.get(&t, &snap, &alice, "n1").unwrap(), live);

    // bad input
    let e = b
        .apply_delta(&t, &snap, &alice, "n1", b"not automerge")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "delta for document `n1` does not decode or needs changes this store lacks"
    );
    let e = a
        .delta_since(&t, &snap, &alice, "n1", &["zz".into()])
        .unwrap_err();
    assert!(matches!(e, CrdtError::BadHeads { .. }));
}

#[test]
fn subject_of_another_tenant_is_refused() {
    let snap = snapshot();
    let scheme = snap.label_scheme();
    let other = Subject::new(
        TenantId::new("other").unwrap(),
        ActorId::new("eve").unwrap(),
        nodus_policy::RoleSet::from_ids([]),
        scheme.parse("SECRET").unwrap(),
        scheme,
    );
    let s = store(1);
    assert_eq!(
        s.get(&tenant(), &snap, &other, "n1").unwrap_err(),
        CrdtError::TenantMismatch
    );
}

#[test]
fn malformed_document_events_are_kept_unprojected_and_other_kinds_untouched() {
    use nodus_fabric::{EntityId, EventKind, EventLabel, NewEvent, Payload};
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let a = store(1);
    let b = store(2);
    a.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"a": 1}),
    )
    .unwrap();
    let ev = |kind: &str, entity: &str, payload: Value| {
        NewEvent::new(
            EventKind::new(kind).unwrap(),
            EntityId::new(entity).unwrap(),
            EventLabel::new("UNCLASSIFIED").unwrap(),
            Payload::from_value(&payload).unwrap(),
        )
    };
    a.log()
        .append(
            &t,
            vec![
                ev(
                    "doc.changed",
                    "doc/n1",
                    json!({"id": "n1", "type": "note", "changes": ["!!"]}),
                ),
                ev(
                    "doc.changed",
                    "doc/n2",
                    json!({"id": "n1", "type": "note", "changes": []}),
                ),
                ev("doc.changed", "doc/n1", json!({"id": "n1"})),
                ev(
                    "object.created",
                    "note/x",
                    json!({"type": "note", "id": "x", "data": {}}),
                ),
            ],
        )
        .unwrap();
    let r = b.ingest(&t, all_events(&a)).unwrap();
    assert_eq!(r.log.applied.len(), 5);
    assert_eq!(r.unprojected.len(), 3);
    assert_eq!(
        b.get(&t, &snap, &alice, "n1").unwrap(),
        a.get(&t, &snap, &alice, "n1").unwrap()
    );
    let other = all_events(&a).pop().unwrap();
    assert!(
        b.log()
            .read_projection(|c| nodus_sync::crdt::apply_event(c, &t, &other))
            .unwrap()
    );
    // a rebuild skips them the same way
    a.rebuild(&t).unwrap();
    assert_eq!(a.history(&t, &snap, &alice, "n1").unwrap().len(), 1);
}

#[test]
fn a_delta_needing_changes_the_receiver_lacks_is_refused_whole() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let a = store(1);
    let b = store(2);
    a.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"t": "x"}),
    )
    .unwrap();
    sync(&a, &b);
    let set = |k: &str| ops(json!([{"op": "set", "path": [k], "value": 1}]));
    a.change(&t, &snap, &alice, "n1", &set("k1")).unwrap();
    let acked = a.get(&t, &snap, &alice, "n1").unwrap().heads;
    a.change(&t, &snap, &alice, "n1", &set("k2")).unwrap();
    // made from heads b never had
    let d = a.delta_since(&t, &snap, &alice, "n1", &acked).unwrap();
    assert_eq!(d.form, DeltaForm::Changes);
    let marks = b.log().high_water_marks(&t).unwrap();
    let e = b
        .apply_delta(&t, &snap, &alice, "n1", &d.bytes)
        .unwrap_err();
    assert!(matches!(e, CrdtError::BadDelta { .. }), "{e}");
    assert_eq!(b.log().high_water_marks(&t).unwrap(), marks);
    assert_eq!(
        b.get(&t, &snap, &alice, "n1").unwrap().content,
        json!({"t": "x"})
    );
}

#[test]
fn policy_narrows_the_configured_limits_never_widens_them() {
    let t = tenant();
    let policy = |tenant_toml: &str| {
        PolicyStore::new(
            PolicySources::new()
                .with_system("system.toml", "")
                .with_tenant(t.clone(), "tenants/acme.toml", tenant_toml),
        )
        .unwrap()
        .snapshot(&t)
        .unwrap()
    };
    let mine = CrdtLimits {
        allowed_types: Some(vec!["note".into(), "sheet".into()]),
        max_doc_bytes: 10_000,
    };
    // The defaults (`["*"]`, 16 MiB) narrow nothing.
    assert_eq!(mine.with_policy(&policy("")), mine);
    assert_eq!(
        CrdtLimits::default().with_policy(&policy("")),
        CrdtLimits::default()
    );
    let narrowed = mine.with_policy(&policy(
        "[crdt]\nallowed_types = [\"sheet\", \"layout\"]\nmax_doc_bytes = 1000000\n",
    ));
    assert_eq!(narrowed.allowed_types, Some(vec!["sheet".to_owned()]));
    assert_eq!(narrowed.max_doc_bytes, 10_000);
    let policy_only = CrdtLimits::default().with_policy(&policy(
        "[crdt]\nallowed_types = [\"layout\"]\nmax_doc_bytes = 2048\n",
    ));
    assert_eq!(policy_only.allowed_types, Some(vec!["layout".to_owned()]));
    assert_eq!(policy_only.max_doc_bytes, 2048);
    assert!(!policy_only.allows("note"));
}

#[test]
fn a_batch_is_one_event_and_all_or_nothing() {
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let s = store(1);
    s.create(
        &t,
        &snap,
        &alice,
        "note",
        "n1",
        "UNCLASSIFIED",
        &json!({"title": ""}),
    )
    .unwrap();
    let events_before = all_events(&s).len();
    let batch: Vec<Vec<DocOp>> = (0..5)
        .map(|i| {
            ops(json!([{"op": "splice_text", "path": ["title"], "pos": i, "text": "abcde".get(i..=i).unwrap()}]))
        })
        .chain([Vec::new()])
        .collect();
    let out = s.change_batch(&t, &snap, &alice, "n1", &batch).unwrap();
    assert_eq!(out.changes.len(), 5);
    assert_eq!(all_events(&s).len(), events_before + 1);
    let doc = s.get(&t, &snap, &alice, "n1").unwrap();
    assert_eq!(doc.content, json!({"title": "abcde"}));
    assert_eq!(doc.heads, out.heads);
    let history = s.history(&t, &snap, &alice, "n1").unwrap();
    assert_eq!(history.last().unwrap().changes.len(), 5);

    // A bad op in the third group: nothing of the batch is written, and the cached document does
    // not keep the first groups' changes.
    let bad = vec![
        ops(json!([{"op": "set", "path": ["a"], "value": 1}])),
        ops(
            json!([{"op": "set", "path": ["b"], "value": 2}, {"op": "set", "path": ["c"], "value": 3}]),
        ),
        ops(json!([{"op": "delete", "path": ["missing"]}])),
    ];
    match s.change_batch(&t, &snap, &alice, "n1", &bad).unwrap_err() {
        CrdtError::BadOp { id, index, .. } => assert_eq!((id.as_str(), index), ("n1", 3)),
        e => panic!("{e}"),
    }
    assert_eq!(all_events(&s).len(), events_before + 1);
    assert_eq!(s.get(&t, &snap, &alice, "n1").unwrap(), doc);
    // The next change builds on the stored document, not on the refused batch.
    let next = s
        .change(
            &t,
            &snap,
            &alice,
            "n1",
            &ops(json!([{"op": "set", "path": ["d"], "value": 4}])),
        )
        .unwrap();
    assert_eq!(next.changes.len(), 1);
    assert_eq!(
        s.get(&t, &snap, &alice, "n1").unwrap().content,
        json!({"title": "abcde", "d": 4})
    );
    // A batch of empty groups changes nothing and appends nothing.
    let none = s
        .change_batch(&t, &snap, &alice, "n1", &[Vec::new(), Vec::new()])
        .unwrap();
    assert!(none.changes.is_empty());
    assert_eq!(all_events(&s).len(), events_before + 2);
}

#[test]
fn a_fabric_over_the_same_log_ingests_and_rebuilds_documents_through_the_projector() {
    use nodus_fabric::objects::Fabric;
    let snap = snapshot();
    let alice = subject(&snap, "alice", "UNCLASSIFIED");
    let t = tenant();
    let writer = store(1);
    writer
        .create(
            &t,
            &snap,
            &alice,
            "note",
            "n1",
            "UNCLASSIFIED",
            &json!({"title": "Plan"}),
        )
        .unwrap();
    writer
        .change_batch(
            &t,
            &snap,
            &alice,
            "n1",
            &[
                ops(json!([{"op": "splice_text", "path": ["title"], "pos": 4, "text": " B"}])),
                ops(json!([{"op": "set", "path": ["done"], "value": true}])),
            ],
        )
        .unwrap();

    let reader = store(2);
    let fabric = Fabric::new(reader.log().clone()).unwrap();
    fabric.add_projector(reader.projector());
    // Events arrive in reverse order: the second waits for its dependency, then both apply.
    let mut events = all_events(&writer);
    events.reverse();
    for e in events {
        let report = fabric.ingest(&t, vec![e]).unwrap();
        assert!(report.unprojected.is_empty());
    }
    let live = reader.get(&t, &snap, &alice, "n1").unwrap();
    assert_eq!(live, writer.get(&t, &snap, &alice, "n1").unwrap());
    let live_history = reader.history(&t, &snap, &alice, "n1").unwrap();

    // The fabric's rebuild clears and replays the documents too.
    fabric.rebuild(&t).unwrap();
    assert_eq!(reader.get(&t, &snap, &alice, "n1").unwrap(), live);
    assert_eq!(
        reader.history(&t, &snap, &alice, "n1").unwrap(),
        live_history
    );
    // A store opened afresh over the rebuilt tables (cold cache) reads the same.
    let cold = AutomergeStore::new(reader.log().clone()).unwrap();
    assert_eq!(cold.get(&t, &snap, &alice, "n1").unwrap(), live);
}
