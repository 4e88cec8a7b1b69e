//! The projection layout: indexing follows the type's `indexed` fields (a redefinition that
//! indexes a field reindexes stored objects), and a database whose projections were written under
//! another layout has them rebuilt from the log when it is opened.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use common::{node, note_fields, note_schema, snapshot, subject, tenant};
use nodus_fabric::{
    Direction, Durability, Fabric, FabricError, ListQuery, Op, Predicate, SqliteEventLog,
    TenantEventLog,
};
use serde_json::json;

fn ids(p: &nodus_fabric::Page) -> Vec<&str> {
    p.items.iter().map(|i| i.id.as_str()).collect()
}

#[test]
fn indexing_a_field_later_reindexes_the_stored_objects() {
    let snap = snapshot();
    let f = common::fabric(1);
    let t = tenant();
    f.define_type(&t, &snap, "note", note_schema(), note_fields())
        .unwrap();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    for (id, body) in [("a", Some("zeta")), ("b", None), ("c", Some("alpha"))] {
        let mut data = json!({"title": id});
        if let Some(b) = body {
            data["body"] = json!(b);
        }
        f.create(&t, &snap, &u, "note", Some(id.into()), None, data)
            .unwrap();
    }
    let by_body = ListQuery {
        sort: Some(("body".into(), Direction::Asc)),
        ..ListQuery::new("note")
    };
    assert_eq!(
        f.list(&t, &snap, &u, &by_body).unwrap_err(),
        FabricError::FilterNotIndexed {
            field: "body".into()
        }
    );
    let mut fields = note_fields();
    fields["body"] = json!({"indexed": true});
    f.define_type(&t, &snap, "note", note_schema(), fields)
        .unwrap();
    // Absent first, then by value; the objects stored before the redefinition are all there.
    assert_eq!(
        ids(&f.list(&t, &snap, &u, &by_body).unwrap()),
        ["b", "c", "a"]
    );
    let q = ListQuery {
        filter: vec![Predicate::new("body", Op::Exists, json!(null))],
        ..ListQuery::new("note")
    };
    assert_eq!(ids(&f.list(&t, &snap, &u, &q).unwrap()), ["a", "c"]);
    let live = f.projection_rows(&t).unwrap();
    f.rebuild(&t).unwrap();
    assert_eq!(f.projection_rows(&t).unwrap(), live);
}

#[test]
fn projections_of_another_layout_are_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let snap = snapshot();
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    let open = || {
        Fabric::new(Arc::new(
            SqliteEventLog::open(&path, node(1), Durability::Normal).unwrap(),
        ))
        .unwrap()
    };
    let live = {
        let f = open();
        f.define_type(&t, &snap, "note", note_schema(), note_fields())
            .unwrap();
        for i in 0..5 {
            f.create(
                &t,
                &snap,
                &u,
                "note",
                Some(format!("n{i}")),
                None,
                json!({"title": "t", "n": i}),
            )
            .unwrap();
        }
        f.projection_rows(&t).unwrap()
    };
    // Simulate a database written by an older layout: another version mark and damaged rows.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "UPDATE fabric_meta SET v = '1' WHERE k = 'projection_version';
             DELETE FROM fabric_index; DELETE FROM fabric_labels;",
        )
        .unwrap();
    }
    let f = open();
    assert_eq!(f.projection_rows(&t).unwrap(), live);
    let q = ListQuery {
        filter: vec![Predicate::new("n", Op::Ge, json!(3))],
        ..ListQuery::new("note")
    };
    assert_eq!(ids(&f.list(&t, &snap, &u, &q).unwrap()), ["n3", "n4"]);
    // Opening again with the current layout keeps the projections as they are.
    drop(f);
    assert_eq!(open().projection_rows(&t).unwrap(), live);
}

/// Counts events by kind in its own table; fails on demand.
struct Counter {
    fail: std::sync::atomic::AtomicBool,
}

impl nodus_fabric::Projector for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn tables(&self) -> &[&str] {
        &["test_counts"]
    }
    fn apply(
        &self,
        conn: &rusqlite::Connection,
        tenant: &nodus_policy::TenantId,
        event: &nodus_fabric::Event,
    ) -> Result<bool, String> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("told to fail".into());
        }
        conn.execute(
            "INSERT INTO test_counts (tenant, kind, n) VALUES (?1, ?2, 1)
             ON CONFLICT (tenant, kind) DO UPDATE SET n = n + 1",
            [tenant.as_str(), event.kind.as_str()],
        )
        .map_err(|e| e.to_string())?;
        Ok(true)
    }
}

fn counts(f: &Fabric, t: &nodus_policy::TenantId) -> Vec<(String, i64)> {
    f.log()
        .read_projection(|c| {
            let mut stmt = c
                .prepare("SELECT kind, n FROM test_counts WHERE tenant = ?1 ORDER BY kind")
                .unwrap();
            let rows: Vec<(String, i64)> = stmt
                .query_map([t.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            Ok::<_, rusqlite::Error>(rows)
        })
        .unwrap()
}

#[test]
fn projectors_apply_in_the_same_transaction_and_rebuild() {
    let snap = snapshot();
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    let peer = common::fabric(2);
    peer.define_type(&t, &snap, "note", note_schema(), note_fields())
        .unwrap();
    for i in 0..3 {
        peer.create(
            &t,
            &snap,
            &u,
            "note",
            Some(format!("n{i}")),
            None,
            json!({"title": "t"}),
        )
        .unwrap();
    }
    let events = peer.log().read_tenant(&t, None, 100).unwrap().0;

    let f = common::fabric(1);
    f.log()
        .read_projection(|c| {
            c.execute_batch(
                "CREATE TABLE test_counts (tenant TEXT NOT NULL, kind TEXT NOT NULL,
                 n INTEGER NOT NULL, PRIMARY KEY (tenant, kind))",
            )
        })
        .unwrap();
    let counter = Arc::new(Counter {
        fail: std::sync::atomic::AtomicBool::new(true),
    });
    f.add_projector(counter.clone());
    // A failing projector rolls the whole ingest back: the log and the projections keep nothing.
    let err = f.ingest(&t, events.clone()).unwrap_err();
    assert_eq!(err.to_string(), "projector `counter` failed: told to fail");
    assert_eq!(err.code(), "ProjectorFailed");
    assert!(f.log().read_tenant(&t, None, 100).unwrap().0.is_empty());
    assert!(counts(&f, &t).is_empty());

    counter
        .fail
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let report = f.ingest(&t, events).unwrap();
    assert_eq!(report.log.applied.len(), 4);
    let want = vec![
        ("object.created".to_owned(), 3),
        ("type.defined".to_owned(), 1),
    ];
    assert_eq!(counts(&f, &t), want);
    assert_eq!(f.get(&t, &snap, &u, "note", "n1").unwrap().version, 1);
    // Rebuild clears the projector's rows too and replays into them.
    f.rebuild(&t).unwrap();
    assert_eq!(counts(&f, &t), want);
}

/// The type cache follows the log, not the handle: a definition changed through another `Fabric`
/// over the same log is seen at once.
#[test]
fn type_definitions_are_never_served_stale() {
    let snap = snapshot();
    let t = tenant();
    let log = Arc::new(SqliteEventLog::in_memory(node(1)).unwrap());
    let a = Fabric::new(log.clone()).unwrap();
    let b = Fabric::new(log).unwrap();
    a.define_type(&t, &snap, "note", note_schema(), note_fields())
        .unwrap();
    assert_eq!(a.get_type(&t, &snap, "note").unwrap().version(), 1);
    let mut fields = note_fields();
    fields["body"] = json!({"indexed": true});
    b.define_type(&t, &snap, "note", note_schema(), fields)
        .unwrap();
    let seen = a.get_type(&t, &snap, "note").unwrap();
    assert_eq!(seen.version(), 2);
    assert!(seen.field("body").is_some_and(|m| m.indexed));
}
