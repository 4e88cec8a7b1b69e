//! The projection layout: indexing follows the type's `indexed` fields (a redefinition that
//! indexes a field reindexes stored objects), and a database whose projections were written under
//! another layout has them rebuilt from the log when it is opened.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use common::{node, note_fields, note_schema, snapshot, subject, tenant};
use nodus_fabric::{
    Direction, Durability, Fabric, FabricError, ListQuery, Op, Predicate, SqliteEventLog,
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
