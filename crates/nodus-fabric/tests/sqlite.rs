//! What is specific to `SqliteEventLog`: files, incarnations, durability, the in-transaction
//! callbacks, and stored rows edited or corrupted behind its back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod conformance;

use conformance::{chain_id, fresh_node, new_event, peer_chain, tenant, variant};
use nodus_fabric::{
    Durability, EventLogError, ProblemKind, STORE_FORMAT, SqliteEventLog, TenantEventLog,
};
use proptest::prelude::*;
use rusqlite::Connection;

#[test]
fn reopening_keeps_the_incarnation_and_a_new_file_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = fresh_node();
    let path = dir.path().join(SqliteEventLog::FILE_NAME);
    let first = SqliteEventLog::open(&path, node, Durability::Full).unwrap();
    let info = first.node();
    assert_eq!(info.node_id, node);
    drop(first);
    let again = SqliteEventLog::open(&path, node, Durability::Full).unwrap();
    assert_eq!(again.node(), info);
    let other = SqliteEventLog::open(&dir.path().join("other.db"), node, Durability::Full).unwrap();
    assert_eq!(other.node().node_id, node);
    assert_ne!(other.node().incarnation, info.incarnation);
    let mem = SqliteEventLog::in_memory(node).unwrap();
    assert_ne!(mem.node().incarnation, info.incarnation);
    assert_eq!(again.location(), path.display().to_string());
    assert_eq!(mem.location(), "<memory>");
}

#[test]
fn a_store_refuses_another_node_and_corrupt_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let node = fresh_node();
    drop(SqliteEventLog::open(&path, node, Durability::Full).unwrap());
    let other = fresh_node();
    match SqliteEventLog::open(&path, other, Durability::Full) {
        Err(EventLogError::WrongNode { stored, given }) => {
            assert_eq!((stored, given), (node, other));
        }
        other => panic!("expected WrongNode, got {other:?}"),
    }
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE meta SET v = 'zz' WHERE k = 'incarnation'", [])
        .unwrap();
    drop(conn);
    let e = SqliteEventLog::open(&path, node, Durability::Full).unwrap_err();
    assert_eq!(e, EventLogError::Meta { key: "incarnation" });
    assert!(e.to_string().contains("`incarnation`"), "{e}");
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE meta SET v = 'other-format' WHERE k = 'format'", [])
        .unwrap();
    drop(conn);
    assert_eq!(
        SqliteEventLog::open(&path, node, Durability::Full).unwrap_err(),
        EventLogError::Meta { key: "format" }
    );
    let conn = Connection::open(&path).unwrap();
    let format: String = conn
        .query_row("SELECT v FROM meta WHERE k = 'format'", [], |r| r.get(0))
        .unwrap();
    assert_ne!(format, STORE_FORMAT);
}

#[test]
fn every_acknowledged_event_survives_reopening() {
    for durability in [Durability::Full, Durability::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fabric.db");
        let node = fresh_node();
        let t = tenant("acme");
        let peer = peer_chain(&t, chain_id(1, 1), 4, 0);
        let (acked, hwm, info) = {
            let log = SqliteEventLog::open(&path, node, durability).unwrap();
            let mut acked = Vec::new();
            for i in 0..50 {
                acked.extend(log.append(&t, vec![new_event(i)]).unwrap());
            }
            acked.extend(log.ingest(&t, peer[..2].to_vec()).unwrap().applied);
            // Held and quarantined state is durable too.
            log.ingest(&t, vec![peer[3].clone()]).unwrap();
            log.ingest(&t, vec![variant(&peer[0], "evil")]).unwrap();
            (acked, log.high_water_marks(&t).unwrap(), log.node())
            // dropped without any shutdown step
        };
        let log = SqliteEventLog::open(&path, node, durability).unwrap();
        assert_eq!(log.node(), info);
        assert_eq!(log.read_tenant(&t, None, usize::MAX).unwrap().0, acked);
        assert_eq!(log.high_water_marks(&t).unwrap(), hwm);
        assert_eq!(log.pending(&t).unwrap(), vec![peer[3].event_ref()]);
        assert_eq!(log.quarantined(&t).unwrap().len(), 1);
        // The chain continues where it stopped, and the held event applies when its gap fills.
        assert_eq!(log.append(&t, vec![new_event(99)]).unwrap()[0].seq, 51);
        let r = log.ingest(&t, vec![peer[2].clone()]).unwrap();
        assert_eq!(r.applied, peer[2..].to_vec());
        assert!(log.verify(&t).unwrap().is_valid());
    }
}

#[test]
fn two_handles_on_one_file_serialise_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let node = fresh_node();
    let a = SqliteEventLog::open(&path, node, Durability::Normal).unwrap();
    let b = SqliteEventLog::open(&path, node, Durability::Normal).unwrap();
    assert_eq!(a.node(), b.node());
    let t = tenant("acme");
    std::thread::scope(|s| {
        for log in [&a, &b] {
            let t = &t;
            s.spawn(move || {
                for i in 0..25 {
                    log.append(t, vec![new_event(i)]).unwrap();
                }
            });
        }
    });
    let events = a.read_chain(&t, a.node().chain(), 1, 100).unwrap();
    assert_eq!(events.len(), 50);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1)
    );
    assert!(b.verify(&t).unwrap().is_valid());
}

#[derive(Debug, PartialEq)]
enum ProjectionError {
    Log(EventLogError),
    Refused,
}

impl From<EventLogError> for ProjectionError {
    fn from(e: EventLogError) -> Self {
        ProjectionError::Log(e)
    }
}

impl From<rusqlite::Error> for ProjectionError {
    fn from(e: rusqlite::Error) -> Self {
        ProjectionError::Log(EventLogError::Storage(e.to_string()))
    }
}

fn count(log_path: &std::path::Path, table: &str) -> i64 {
    Connection::open(log_path)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn append_with_runs_in_the_log_transaction_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let log = SqliteEventLog::open(&path, fresh_node(), Durability::Full).unwrap();
    let t = tenant("acme");
    // A projection table, written in the same transaction.
    let appended = log
        .append_with(&t, vec![new_event(0), new_event(1)], |tx, events| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, seq INTEGER)",
            )?;
            for e in events {
                tx.execute(
                    "INSERT INTO notes (id, seq) VALUES (?1, ?2)",
                    rusqlite::params![e.entity.as_str(), e.seq as i64],
                )?;
            }
            Ok::<(), ProjectionError>(())
        })
        .unwrap();
    assert_eq!(appended.len(), 2);
    assert_eq!(count(&path, "notes"), 2);
    let hwm = log.high_water_marks(&t).unwrap();

    // A failing projection: nothing of the call is written, neither the events nor the projection.
    let r = log.append_with(&t, vec![new_event(2), new_event(3)], |tx, events| {
        assert_eq!(events.len(), 2);
        tx.execute("INSERT INTO notes (id, seq) VALUES ('half', 0)", [])?;
        Err(ProjectionError::Refused)
    });
    assert_eq!(r, Err(ProjectionError::Refused));
    assert_eq!(count(&path, "notes"), 2);
    assert_eq!(count(&path, "events"), 2);
    assert_eq!(log.high_water_marks(&t).unwrap(), hwm);
    assert_eq!(log.read_tenant(&t, None, 100).unwrap().0, appended);
    // The chain continues as if the failed call never happened.
    let next = log.append(&t, vec![new_event(4)]).unwrap();
    assert_eq!(next[0].seq, 3);
    assert_eq!(next[0].prev_hash, appended[1].hash);
    assert_eq!(next[0].lamport, appended[1].lamport + 1);
    assert!(log.verify(&t).unwrap().is_valid());
}

#[test]
fn ingest_with_failure_keeps_nothing_of_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let log = SqliteEventLog::open(&path, fresh_node(), Durability::Full).unwrap();
    let t = tenant("acme");
    let peer = peer_chain(&t, chain_id(2, 1), 4, 0);
    log.ingest(&t, peer[..1].to_vec()).unwrap();
    // This call would apply seq 2, hold seq 4 and quarantine an equivocation: all rolled back.
    let batch = vec![peer[1].clone(), peer[3].clone(), variant(&peer[0], "evil")];
    let r = log.ingest_with(&t, batch.clone(), |_, report| {
        assert_eq!(report.applied, vec![peer[1].clone()]);
        assert_eq!(report.pending.len(), 1);
        assert_eq!(report.equivocations.len(), 1);
        Err(ProjectionError::Refused)
    });
    assert_eq!(r, Err(ProjectionError::Refused));
    assert_eq!(log.high_water_marks(&t).unwrap()[&chain_id(2, 1)].seq, 1);
    assert!(log.pending(&t).unwrap().is_empty());
    assert!(log.quarantined(&t).unwrap().is_empty());
    assert_eq!(count(&path, "events"), 1);
    // The same batch again, accepted this time, has the same effect as if first.
    let r = log
        .ingest_with(&t, batch, |_, _| Ok::<(), EventLogError>(()))
        .unwrap();
    assert_eq!(r.applied, vec![peer[1].clone()]);
    assert_eq!(log.pending(&t).unwrap().len(), 1);
    assert_eq!(log.quarantined(&t).unwrap().len(), 1);
}

fn seeded_log(path: &std::path::Path) -> (SqliteEventLog, nodus_policy::TenantId) {
    let log = SqliteEventLog::open(path, fresh_node(), Durability::Full).unwrap();
    let t = tenant("acme");
    log.append(&t, (0..5).map(new_event).collect()).unwrap();
    log.ingest(&t, peer_chain(&t, chain_id(3, 1), 3, 0))
        .unwrap();
    (log, t)
}

#[test]
fn verify_detects_a_payload_byte_edited_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let (log, t) = seeded_log(&path);
    assert!(log.verify(&t).unwrap().is_valid());
    let chain = log.node().chain();
    let conn = Connection::open(&path).unwrap();
    let payload: String = conn
        .query_row(
            "SELECT payload FROM events WHERE node_id = ?1 AND seq = 3",
            [&chain.node_id.as_bytes()[..]],
            |r| r.get(0),
        )
        .unwrap();
    // `{"i":2,…}` → `{"i":7,…}`: still canonical JSON, one byte different.
    let edited = payload.replacen("\"i\":2", "\"i\":7", 1);
    assert_ne!(edited, payload);
    conn.execute(
        "UPDATE events SET payload = ?1 WHERE node_id = ?2 AND seq = 3",
        rusqlite::params![edited, &chain.node_id.as_bytes()[..]],
    )
    .unwrap();
    let report = log.verify(&t).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let p = &report.problems[0];
    assert_eq!(
        (p.chain, p.seq, p.kind),
        (Some(chain), 3, ProblemKind::HashMismatch)
    );
    // Problems name where, never what.
    assert!(!format!("{report:?}").contains("note 2"));
    // Reads refuse the edited event rather than return it.
    match log.read_chain(&t, chain, 1, 10) {
        Err(EventLogError::Corrupt { seq: 3, reason, .. }) => {
            assert!(reason.contains("hash"), "{reason}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let e = log.read_tenant(&t, None, 100).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`acme`") && msg.contains("`3`") && msg.contains(&format!("`{chain}`")),
        "{msg}"
    );
    // Other chains still read.
    assert_eq!(log.read_chain(&t, chain_id(3, 1), 1, 10).unwrap().len(), 3);
}

#[test]
fn verify_detects_rewritten_links_removed_events_and_moved_heads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    let (log, t) = seeded_log(&path);
    let chain = log.node().chain();
    let conn = Connection::open(&path).unwrap();
    let node = &chain.node_id.as_bytes()[..];
    // A deleted middle event: a gap, the chain's later seqs no longer link.
    conn.execute("DELETE FROM events WHERE node_id = ?1 AND seq = 2", [node])
        .unwrap();
    // A rewritten prev_hash on the peer chain.
    conn.execute(
        "UPDATE events SET prev_hash = zeroblob(32) WHERE seq = 3 AND node_id = ?1",
        [&chain_id(3, 1).node_id.as_bytes()[..]],
    )
    .unwrap();
    // A head moved back.
    conn.execute("UPDATE chains SET seq = 4 WHERE node_id = ?1", [node])
        .unwrap();
    let report = log.verify(&t).unwrap();
    let kinds: Vec<(u64, ProblemKind)> = report.problems.iter().map(|p| (p.seq, p.kind)).collect();
    assert!(kinds.contains(&(3, ProblemKind::SeqGap)), "{kinds:?}");
    assert!(kinds.contains(&(3, ProblemKind::BrokenLink)), "{kinds:?}");
    assert!(kinds.contains(&(3, ProblemKind::HashMismatch)), "{kinds:?}");
    assert!(kinds.contains(&(5, ProblemKind::HeadMismatch)), "{kinds:?}");
    assert!(kinds.contains(&(0, ProblemKind::Counters)), "{kinds:?}");
}

/// The event columns an attacker or a disk fault might change, and values of every SQLite type.
const COLUMNS: &[&str] = &[
    "node_id",
    "incarnation",
    "seq",
    "lamport",
    "kind",
    "entity",
    "label",
    "payload",
    "model_ver",
    "prev_hash",
    "hash",
    "time_ms",
    "pos",
];

fn garbage() -> impl Strategy<Value = rusqlite::types::Value> {
    use rusqlite::types::Value;
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| Value::Text(String::from_utf8_lossy(&b).into_owned())),
        "\\PC{0,20}".prop_map(Value::Text),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever is written into a stored row, every read and `verify` returns a value or an
    /// error, never panics; reads never return an event whose hash does not match.
    #[test]
    fn corrupt_rows_give_errors_not_panics(
        col in 0..COLUMNS.len(),
        value in garbage(),
        seq in 1i64..=5,
        table in prop_oneof![Just("events"), Just("pending"), Just("chains"), Just("quarantine"), Just("tenants")],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fabric.db");
        let (log, t) = seeded_log(&path);
        // Also a pending event and a quarantined pair to corrupt.
        let peer = peer_chain(&t, chain_id(3, 1), 5, 0);
        log.ingest(&t, vec![peer[4].clone(), variant(&peer[0], "evil")]).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA ignore_check_constraints = ON").unwrap();
        let column = match table {
            "events" => COLUMNS[col],
            "pending" => COLUMNS[col % 12],
            "chains" => ["node_id", "incarnation", "seq", "hash", "lamport"][col % 5],
            "quarantine" => ["kind", "stored", "conflicting", "conflicting_hash"][col % 4],
            _ => ["lamport", "position"][col % 2],
        };
        let filter = match table {
            "events" | "chains" => format!("WHERE seq = {seq}"),
            _ => String::new(),
        };
        // Unique constraints may refuse a value; that is the store defending itself.
        let _ = conn.execute(&format!("UPDATE {table} SET {column} = ?1 {filter}"), [&value]);
        drop(conn);
        let _ = log.verify(&t);
        if let Ok((events, _)) = log.read_tenant(&t, None, 100) {
            for e in events {
                prop_assert_eq!(e.compute_hash(), e.hash);
            }
        }
        let _ = log.read_chain(&t, log.node().chain(), 1, 100);
        let _ = log.high_water_marks(&t);
        let _ = log.pending(&t);
        let _ = log.quarantined(&t);
        let _ = log.append(&t, vec![new_event(7)]);
        let _ = log.ingest(&t, peer);
        let _ = log.verify(&t);
    }
}
