//! What one `create` writes, counted (never timed): the rows it changes and the WAL pages its
//! commit carries. A change that adds a row, a B-tree or a read-modify-write to every create
//! shows here before it shows in `benches/benches/fabric.rs` (see its header for the figures).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use common::{node, snapshot, subject, tenant};
use nodus_fabric::{Durability, Fabric, SqliteEventLog};
use serde_json::json;

fn case_fabric(dir: &std::path::Path) -> (Fabric, std::path::PathBuf) {
    let path = dir.join(SqliteEventLog::FILE_NAME);
    let log = Arc::new(SqliteEventLog::open(&path, node(1), Durability::Normal).unwrap());
    (Fabric::new(log).unwrap(), path)
}

#[test]
fn a_create_changes_six_rows_and_carries_a_bounded_number_of_wal_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = case_fabric(dir.path());
    let (t, snap) = (tenant(), snapshot());
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    f.define_type(
        &t,
        &snap,
        "case",
        json!({"type": "object", "properties": {"title": {"type": "string"},
            "status": {"type": "string"}, "n": {"type": "integer"}}}),
        json!({"status": {"indexed": true}}),
    )
    .unwrap();
    let create = |i: u64| {
        f.create(
            &t,
            &snap,
            &u,
            "case",
            Some(format!("c{i}")),
            None,
            json!({"title": format!("case {i}"), "status": "open", "n": i}),
        )
        .unwrap();
    };
    create(0);
    // Rows: the event, the chain head, the tenant clock, the object version, its one index row
    // and its history row. (The label row of the type is written by the first create only.)
    let changes = || {
        f.log()
            .read_projection(|c| Ok::<_, rusqlite::Error>(c.total_changes()))
            .unwrap()
    };
    let before = changes();
    create(1);
    assert_eq!(changes() - before, 6);

    // WAL pages per create, with automatic checkpoints off so the WAL only grows: each page a
    // commit dirties is one frame. About 13 today with 4 KiB pages (the event row and its two
    // unique indexes, head, clock, version, two index B-trees, history, and the interior pages
    // their splits touch); the bound leaves room for split noise, not for another B-tree.
    f.log()
        .read_projection(|c| {
            c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA wal_autocheckpoint=0;")
        })
        .unwrap();
    let wal = path.with_extension("db-wal");
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let page = f
        .log()
        .read_projection(|c| c.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)))
        .unwrap();
    let start = size();
    let n = 500;
    for i in 2..2 + n {
        create(i);
    }
    let page = u64::try_from(page).unwrap();
    let frames = (size() - start) / (page + 24);
    let per_create = frames as f64 / n as f64;
    assert!(
        per_create <= 14.5,
        "{per_create:.2} WAL pages per create (bound 14.5)"
    );
}
