//! Crash test: a child process appends (with a projection written in the same transaction) and
//! prints each acknowledgement; the parent kills it with SIGKILL at a random moment, reopens the
//! store and checks that every acknowledged event is there, unchanged, and that the projection is
//! exactly as far as the log — never ahead, never behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod conformance;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use conformance::{new_event, tenant};
use nodus_fabric::{Durability, EventLogError, NodeId, SqliteEventLog, TenantEventLog};

const CHILD_ENV: &str = "NODUS_FABRIC_CRASH_CHILD_DB";

fn node() -> NodeId {
    "k0123456789abcdef0123456789abcdef".parse().unwrap()
}

/// The child role (runs only when spawned by `crash_never_loses_an_acknowledged_event`): appends
/// batches of one to three events and prints `ACK <seq> <hash>` for each once acknowledged.
#[test]
#[ignore]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = SqliteEventLog::open(Path::new(&path), node(), Durability::Full).unwrap();
    let t = tenant("acme");
    let out = std::io::stdout();
    for i in 0u64.. {
        let batch = (0..=(i % 3)).map(|j| new_event(i * 10 + j)).collect();
        let events = log
            .append_with(&t, batch, |tx, events| {
                for e in events {
                    tx.execute(
                        "INSERT INTO projection (seq, hash) VALUES (?1, ?2)",
                        rusqlite::params![e.seq as i64, e.hash.to_string()],
                    )
                    .map_err(|e| EventLogError::Storage(e.to_string()))?;
                }
                Ok::<(), EventLogError>(())
            })
            .unwrap();
        let mut o = out.lock();
        for e in events {
            writeln!(o, "ACK {} {}", e.seq, e.hash).unwrap();
        }
        o.flush().unwrap();
    }
}

#[test]
fn crash_never_loses_an_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fabric.db");
    {
        // Create the store and the projection table once.
        let log = SqliteEventLog::open(&path, node(), Durability::Full).unwrap();
        drop(log);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE projection (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL)")
            .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let t = tenant("acme");
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for iteration in 0..6 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(40 + seed % 160));
        child.kill().unwrap(); // SIGKILL
        let stdout = child.stdout.take().unwrap();
        child.wait().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // The last line may be cut short by the kill: only whole lines count.
            if let Some((seq, hash)) = line.strip_prefix("ACK ").and_then(|r| r.split_once(' '))
                && let Ok(seq) = seq.parse::<u64>()
                && hash.len() == 64
            {
                acked.push((seq, hash.to_owned()));
            }
        }
        let log = SqliteEventLog::open(&path, node(), Durability::Full)
            .unwrap_or_else(|e| panic!("iteration {iteration}: {e}"));
        let report = log.verify(&t).unwrap();
        assert!(report.is_valid(), "iteration {iteration}: {report:?}");
        let events = log
            .read_chain(&t, log.node().chain(), 1, usize::MAX)
            .unwrap();
        for (seq, hash) in &acked {
            let e = events
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("acknowledged event {seq} lost"));
            assert_eq!(&e.hash.to_string(), hash, "event {seq} changed");
        }
        // The projection holds exactly the log's events.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn
            .prepare("SELECT seq, hash FROM projection ORDER BY seq")
            .unwrap();
        let projected: Vec<(u64, String)> = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let logged: Vec<(u64, String)> =
            events.iter().map(|e| (e.seq, e.hash.to_string())).collect();
        assert_eq!(projected, logged, "iteration {iteration}");
    }
    assert!(
        acked.len() > 10,
        "the children acknowledged only {} events",
        acked.len()
    );
}
