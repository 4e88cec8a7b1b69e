//! The audit log through its public API: tampering with the SQLite file, crashes (SIGKILL) of a
//! writing child process, overflow under a flood, export and offline verification.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nodus_security::audit::{
    AuditConfig, AuditError, AuditLog, AuditRecord, AuditSink, CheckpointSigner, Durability,
    Ed25519Signer, Outcome, Overflow, TamperKind, WitnessConfig, merkle, verify_db,
    verify_db_with_witness, verify_export,
};
use rusqlite::{Connection, params};

const ORIGIN: &str = "test.nodus/audit";

fn signer() -> Arc<Ed25519Signer> {
    Arc::new(Ed25519Signer::from_signing_key(
        ORIGIN,
        SigningKey::from_bytes(&[42; 32]),
    ))
}

fn config(durability: Durability) -> AuditConfig {
    AuditConfig {
        origin: ORIGIN.into(),
        durability,
        overflow: Overflow::Block,
        queue_capacity: 1024,
        checkpoint_every: 10,
        checkpoint_interval: Duration::from_secs(60),
    }
}

/// The deterministic record written at index `s` (so a reader can check it byte for byte).
fn record(s: u64) -> AuditRecord {
    let mut r = AuditRecord::new("test.write", Outcome::Allowed).detail("i", s.to_string());
    r.time_ms = 1_700_000_000_000 + s;
    r
}

fn write_log(path: &Path, n: u64) -> [u8; 32] {
    let log = AuditLog::open(path, signer(), config(Durability::Normal)).unwrap();
    for s in 0..n {
        log.record(record(s)).unwrap();
    }
    let cp = log.flush().unwrap();
    assert_eq!(cp.checkpoint.size, n);
    let pk = log.public_key();
    log.shutdown().unwrap();
    pk
}

fn tampered(path: &Path, pk: &[u8; 32]) -> (u64, TamperKind) {
    let r = verify_db(path, Some(pk)).unwrap();
    assert!(!r.valid);
    let t = r.problem.unwrap();
    // A tampered log is also refused for writing.
    assert!(matches!(
        AuditLog::open(path, signer(), config(Durability::Normal)),
        Err(AuditError::Tampered { .. })
    ));
    (t.index, t.kind)
}

#[test]
fn tampering_with_the_sqlite_file_is_caught_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let p = dir.path().join(name);
        let pk = write_log(&p, 100);
        assert!(verify_db(&p, Some(&pk)).unwrap().valid);
        (p, pk, Connection::open(dir.path().join(name)).unwrap())
    };

    // 1. Change one byte of a record.
    let (p, pk, c) = fresh("modified.db");
    let mut leaf: Vec<u8> = c
        .query_row("SELECT leaf FROM records WHERE seq = 37", [], |r| r.get(0))
        .unwrap();
    let last = leaf.len() - 12;
    leaf[last] ^= 0x01;
    c.execute("UPDATE records SET leaf = ?1 WHERE seq = 37", params![leaf])
        .unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk), (37, TamperKind::ModifiedRecord));

    // 2. Delete a row.
    let (p, pk, c) = fresh("deleted.db");
    c.execute("DELETE FROM records WHERE seq = 50", []).unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk), (50, TamperKind::MissingRecord));

    // 3. Swap two rows.
    let (p, pk, c) = fresh("swapped.db");
    let a: (Vec<u8>, Vec<u8>) = c
        .query_row("SELECT leaf, hash FROM records WHERE seq = 20", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let b: (Vec<u8>, Vec<u8>) = c
        .query_row("SELECT leaf, hash FROM records WHERE seq = 30", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    c.execute(
        "UPDATE records SET leaf = ?1, hash = ?2 WHERE seq = 20",
        params![b.0, b.1],
    )
    .unwrap();
    c.execute(
        "UPDATE records SET leaf = ?1, hash = ?2 WHERE seq = 30",
        params![a.0, a.1],
    )
    .unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk), (20, TamperKind::ReorderedRecord));

    // 4. Truncate the tail below the last checkpoint.
    let (p, pk, c) = fresh("truncated.db");
    c.execute("DELETE FROM records WHERE seq >= 95", [])
        .unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk), (95, TamperKind::TruncatedTail));

    // 5. Rewrite a record *and* its stored hash: the signed checkpoint roots catch it, and the
    //    first checkpoint that disagrees bounds where.
    let (p, pk, c) = fresh("forged.db");
    let forged = record(63).detail("forged", "yes").leaf_bytes(63);
    c.execute(
        "UPDATE records SET leaf = ?1, hash = ?2 WHERE seq = 63",
        params![forged, merkle::leaf_hash(&forged).to_vec()],
    )
    .unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk), (60, TamperKind::ModifiedRecord));

    // 6. A checkpoint whose signature does not verify.
    let (p, pk, c) = fresh("badsig.db");
    let note: String = c
        .query_row("SELECT note FROM checkpoints WHERE size = 100", [], |r| {
            r.get(0)
        })
        .unwrap();
    // One signature byte changed (the line stays well formed).
    let (text, line) = note.rsplit_once(' ').unwrap();
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, line.trim_end())
            .unwrap();
    raw[20] ^= 1;
    let bad = format!(
        "{text} {}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw)
    );
    c.execute(
        "UPDATE checkpoints SET note = ?1 WHERE size = 100",
        params![bad],
    )
    .unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk).1, TamperKind::BadCheckpointSignature);

    // 6b. A garbled signature line makes the note malformed.
    let (p, pk, c) = fresh("garbled.db");
    c.execute(
        "UPDATE checkpoints SET note = replace(note, '— test.nodus/audit ', '— test.nodus/audit A') WHERE size = 100",
        [],
    )
    .unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk).1, TamperKind::Malformed);

    // 7. Verifying with another key fails.
    let (p, _, _) = fresh("otherkey.db");
    assert!(!verify_db(&p, Some(&[9u8; 32])).unwrap().valid);
}

#[test]
fn a_live_log_catches_tampering_underneath_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("live.db");
    let log = AuditLog::open(&p, signer(), config(Durability::Normal)).unwrap();
    for s in 0..30 {
        log.record(record(s)).unwrap();
    }
    log.flush().unwrap();
    assert!(log.verify().unwrap().valid);
    Connection::open(&p)
        .unwrap()
        .execute("DELETE FROM records WHERE seq = 7", [])
        .unwrap();
    let r = log.verify().unwrap();
    assert_eq!(
        (r.valid, r.problem.map(|t| (t.index, t.kind))),
        (false, Some((7, TamperKind::MissingRecord)))
    );
}

/// Copies `src` to a fresh `name` in `dir` (a database that is closed, so it has no WAL).
fn copy_db(src: &Path, dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
    std::fs::copy(src, &p).unwrap();
    p
}

#[test]
fn editing_the_database_file_bytes_is_caught_at_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("orig.db");
    let pk = write_log(&original, 100);
    assert!(
        !Path::new(&format!("{}-wal", original.display())).exists(),
        "a closed log leaves no write-ahead log behind"
    );
    let bytes = std::fs::read(&original).unwrap();
    let find = |needle: &[u8]| -> usize {
        let at: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "needle found {} times", at.len());
        at[0]
    };
    // Every byte of record 37's leaf, and of its stored hash, edited in the file itself.
    let leaf = record(37).leaf_bytes(37);
    let hash = merkle::leaf_hash(&leaf);
    let (leaf_at, hash_at) = (find(&leaf), find(&hash));
    let scratch = dir.path().join("edited.db");
    for (at, len) in [(leaf_at, leaf.len()), (hash_at, hash.len())] {
        for i in at..at + len {
            let mut b = bytes.clone();
            b[i] ^= 0x04;
            std::fs::write(&scratch, &b).unwrap();
            let r = verify_db(&scratch, Some(&pk)).unwrap();
            let t = r
                .problem
                .unwrap_or_else(|| panic!("edit at file byte {i} missed"));
            assert_eq!(t.index, 37, "edit at file byte {i}: {t:?}");
            assert!(
                matches!(
                    t.kind,
                    TamperKind::ModifiedRecord | TamperKind::ReorderedRecord
                ),
                "{t:?}"
            );
        }
    }
    // Cutting the file short: an error or an invalid log, never a valid smaller one.
    let page = 4096;
    for len in (page..bytes.len())
        .step_by(page)
        .chain([1, 100, bytes.len() - 1])
    {
        std::fs::write(&scratch, &bytes[..len]).unwrap();
        match verify_db(&scratch, Some(&pk)) {
            Err(_) => {}
            Ok(r) => assert!(!r.valid || r.size == 100, "cut at {len}: {r:?}"),
        }
    }
}

#[test]
fn more_deletions_and_reorderings_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("orig.db");
    let pk = write_log(&original, 100);
    let case = |name: &str, sql: &str| -> (u64, TamperKind) {
        let p = copy_db(&original, dir.path(), name);
        Connection::open(&p).unwrap().execute_batch(sql).unwrap();
        tampered(&p, &pk)
    };
    assert_eq!(
        case("first.db", "DELETE FROM records WHERE seq = 0"),
        (0, TamperKind::MissingRecord)
    );
    assert_eq!(
        case("last-signed.db", "DELETE FROM records WHERE seq = 99"),
        (99, TamperKind::TruncatedTail)
    );
    // Renumbering the rows to close a gap does not hide it: the index is inside each leaf.
    assert_eq!(
        case(
            "renumbered.db",
            "DELETE FROM records WHERE seq = 50; UPDATE records SET seq = seq - 1 WHERE seq > 50;"
        ),
        (50, TamperKind::ReorderedRecord)
    );
    // Swapping neighbours by their sequence numbers.
    assert_eq!(
        case(
            "adjacent.db",
            "UPDATE records SET seq = -1 WHERE seq = 71; UPDATE records SET seq = 71 WHERE seq = 72; UPDATE records SET seq = 72 WHERE seq = -1;"
        ),
        (71, TamperKind::ReorderedRecord)
    );
    // A record copied over another (a replay inside the log).
    assert_eq!(
        case(
            "replayed.db",
            "UPDATE records SET leaf = (SELECT leaf FROM records WHERE seq = 10), hash = (SELECT hash FROM records WHERE seq = 10) WHERE seq = 11;"
        ),
        (11, TamperKind::ReorderedRecord)
    );
    // A checkpoint moved to another size, or with another origin, is refused.
    assert_eq!(
        case(
            "cp-moved.db",
            "UPDATE checkpoints SET size = 101 WHERE size = 100;"
        )
        .1,
        TamperKind::InconsistentCheckpoint
    );
    // A checkpoint whose text was altered (and so no longer matches its signature).
    assert_eq!(
        case(
            "cp-altered.db",
            "UPDATE checkpoints SET note = replace(note, 'test.nodus/audit\n50\n', 'test.nodus/audit\n51\n') WHERE size = 50;"
        ),
        (50, TamperKind::BadCheckpointSignature)
    );
}

#[test]
fn a_rollback_to_an_earlier_checkpoint_needs_a_remembered_checkpoint_to_be_seen() {
    // Deleting the newest checkpoints together with the records after the remaining newest one
    // leaves a self-consistent file. The witness (the latest checkpoint, kept in a file outside
    // the database) exposes it; so does any checkpoint remembered elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    let pk = write_log(&p, 100);
    let log = AuditLog::open(&p, signer(), config(Durability::Normal)).unwrap();
    let witnessed = log.latest_checkpoint().unwrap().unwrap();
    log.shutdown().unwrap();
    drop(log);
    Connection::open(&p)
        .unwrap()
        .execute_batch(
            "DELETE FROM checkpoints WHERE size > 90; DELETE FROM records WHERE seq >= 90;",
        )
        .unwrap();
    let r = verify_db_with_witness(&p, Some(&pk), None).unwrap();
    assert!(r.valid, "the file alone cannot show a rollback: {r:?}");
    assert_eq!(r.size, 90);
    // With its witness (found beside the database), it can, and opening is refused.
    let r = verify_db(&p, Some(&pk)).unwrap();
    assert_eq!(
        r.problem.map(|t| (t.kind, t.index)),
        Some((TamperKind::WitnessNotExtended, 90))
    );
    assert!(matches!(
        AuditLog::open(&p, signer(), config(Durability::Normal)),
        Err(AuditError::WitnessNotExtended { .. })
    ));
    // Rolled back with its witness deleted too, and knowingly reopened: the size a remembered
    // checkpoint names is gone, and once regrown, the consistency proof to it fails.
    std::fs::remove_file(format!("{}.witness", p.display())).unwrap();
    let log = AuditLog::open_with_witness(
        &p,
        signer(),
        config(Durability::Normal),
        WitnessConfig {
            accept_missing: true,
            ..WitnessConfig::default()
        },
    )
    .unwrap();
    assert!(
        log.root(witnessed.checkpoint.size).is_err(),
        "the witnessed size is gone: rolled back"
    );
    for s in 90..100 {
        let mut r = record(s);
        r.detail.insert("regrown".into(), "yes".into());
        log.record(r).unwrap();
    }
    let regrown = log.flush().unwrap();
    assert_eq!(regrown.checkpoint.size, 100);
    assert_ne!(regrown.checkpoint.root, witnessed.checkpoint.root);
    let proof = log.consistency_proof(100, 100).unwrap();
    assert!(!merkle::verify_consistency(
        100,
        100,
        &witnessed.checkpoint.root,
        &regrown.checkpoint.root,
        &proof
    ));
}

/// A checkpoint signer that signs `budget` checkpoints, then fails.
struct FailingSigner {
    inner: Ed25519Signer,
    budget: std::sync::atomic::AtomicU64,
}

impl CheckpointSigner for FailingSigner {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn public_key(&self) -> [u8; 32] {
        self.inner.public_key()
    }
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], AuditError> {
        use std::sync::atomic::Ordering;
        if self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_err()
        {
            return Err(AuditError::Signing("the test signer is exhausted".into()));
        }
        self.inner.sign(message)
    }
}

#[test]
fn a_writer_error_stops_the_log_for_good_and_every_later_call_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    let failing = Arc::new(FailingSigner {
        inner: Ed25519Signer::from_signing_key(ORIGIN, SigningKey::from_bytes(&[42; 32])),
        budget: std::sync::atomic::AtomicU64::new(1),
    });
    let log = Arc::new(AuditLog::open(&p, failing, config(Durability::Full)).unwrap());
    log.record(record(0)).unwrap();
    assert_eq!(log.flush().unwrap().checkpoint.size, 1);
    log.record(record(1)).unwrap();
    let first = log.flush().unwrap_err();
    assert!(
        matches!(&first, AuditError::WriterStopped(m) if m.contains("exhausted")),
        "{first:?}"
    );
    // No retry: every later call gets the same error.
    assert_eq!(log.record(record(2)).unwrap_err(), first);
    assert_eq!(log.flush().unwrap_err(), first);
    assert_eq!(within_5s(&log, |l| l.shutdown()).unwrap_err(), first);
    assert_eq!(within_5s(&log, |l| l.shutdown()).unwrap_err(), first);
    // Record 1 may have been committed by a background batch before the flush's checkpoint
    // failed (committing needs no signature); the failed transaction itself left nothing.
    let size = log.size().unwrap();
    assert!(size == 1 || size == 2, "{size}");
    drop(log);
    // What was acknowledged is intact, and the log still verifies and reopens.
    let log = AuditLog::open(&p, signer(), config(Durability::Full)).unwrap();
    assert_eq!(log.size().unwrap(), size);
    assert!(log.verify().unwrap().valid);
    let records = log.tail(5).unwrap();
    assert_eq!(records[0].record, record(0));
    if size == 2 {
        assert_eq!(records[1].record, record(1));
    }
}

/// Runs `f` on another thread and fails the test if it has not returned within five seconds
/// (instead of hanging the test run).
fn within_5s<T: Send + 'static>(
    log: &Arc<AuditLog>,
    f: impl FnOnce(&AuditLog) -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let log = log.clone();
    std::thread::spawn(move || {
        let _ = tx.send(f(&log));
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the call did not return within 5 s")
}

/// A request that reaches the writer while it is stopping is still answered: the caller never
/// waits forever. (With a bounded crossbeam channel, a request sent after the writer's last read
/// stayed in the buffer, with its reply sender, until every *sender* was gone, and the caller hung;
/// the control channel must drop pending requests when the writer goes.)
#[test]
fn shutdown_right_after_a_writer_error_returns() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Arc::new(FailingSigner {
        inner: Ed25519Signer::from_signing_key(ORIGIN, SigningKey::from_bytes(&[42; 32])),
        budget: std::sync::atomic::AtomicU64::new(0),
    });
    let log = Arc::new(
        AuditLog::open(
            &dir.path().join("log.db"),
            failing,
            config(Durability::Full),
        )
        .unwrap(),
    );
    log.record(record(0)).unwrap();
    assert!(log.flush().is_err());
    assert!(within_5s(&log, |l| l.shutdown()).is_err());
}

/// The same without any error: a `flush()` from another thread racing `shutdown()` comes back
/// (with a checkpoint, or `Closed`).
#[test]
fn a_flush_racing_shutdown_returns() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            AuditLog::open(
                &dir.path().join("log.db"),
                signer(),
                config(Durability::Full),
            )
            .unwrap(),
        );
        log.record(record(0)).unwrap();
        let flusher = {
            let log = log.clone();
            std::thread::spawn(move || {
                // Flush until the log says it is closed; each flush must come back.
                loop {
                    let r = within_5s(&log, |l| l.flush());
                    if r.is_err() {
                        return;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(2));
        within_5s(&log, |l| l.shutdown()).unwrap();
        flusher
            .join()
            .unwrap_or_else(|_| panic!("round {round}: a flush never returned"));
    }
}

/// Every `record()` that returned `Ok` while `shutdown()` ran is either in the log or counted in
/// an `audit.gap` record; nothing is lost silently. (`shutdown()` waits for every recorder that
/// passed the `closed` check to finish its push before the writer's last drain.)
#[test]
fn records_accepted_during_shutdown_are_written_or_counted() {
    for (round, overflow) in [Overflow::DropWithMarker, Overflow::Block]
        .into_iter()
        .cycle()
        .take(20)
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = Arc::new(
            AuditLog::open(
                &path,
                signer(),
                AuditConfig {
                    overflow,
                    queue_capacity: 64,
                    checkpoint_every: 1_000_000,
                    ..config(Durability::Normal)
                },
            )
            .unwrap(),
        );
        let producers: Vec<_> = (0..2u64)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut ok = 0u64;
                    for i in 0.. {
                        match log.record(record(t * 1_000_000_000 + i)) {
                            Ok(()) => ok += 1,
                            Err(_) => return ok,
                        }
                    }
                    ok
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        within_5s(&log, |l| l.shutdown()).unwrap();
        let accepted: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        let dropped_counter = log.stats().dropped;
        drop(log);
        let log = AuditLog::open(&path, signer(), config(Durability::Normal)).unwrap();
        let all = log.tail(100_000_000).unwrap();
        let written = all.iter().filter(|r| r.record.kind == "test.write").count() as u64;
        let gaps: u64 = all
            .iter()
            .filter(|r| r.record.kind == "audit.gap")
            .map(|r| r.record.detail["dropped"].parse::<u64>().unwrap())
            .sum();
        assert_eq!(
            (gaps, written + gaps),
            (dropped_counter, accepted),
            "round {round} ({overflow:?}): accepted {accepted}, written {written}, in gaps {gaps}, counted dropped {dropped_counter}"
        );
    }
}

/// An in-memory log's readers (`tail()`, `verify()`, `checkpoints()`, `export()`) never make the
/// writer fail: in its shared-cache database a reader's table lock would fail the writer's INSERT at
/// once with "database table is locked"; with SQLite's unlock-notify the INSERT waits instead.
#[test]
fn an_in_memory_log_survives_concurrent_readers() {
    let log = Arc::new(
        AuditLog::in_memory(
            signer(),
            AuditConfig {
                checkpoint_every: 1000,
                ..config(Durability::Normal)
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    log.record(record(t * 1_000_000 + i))?;
                    if i % 50 == 49 {
                        log.flush()?;
                        log.tail(1_000_000)?;
                    }
                }
                Ok::<(), AuditError>(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert!(log.verify().unwrap().valid);
}

#[test]
fn checkpoints_come_every_n_records_or_t_ms_never_per_record() {
    let dir = tempfile::tempdir().unwrap();
    // Every N: 25 records with N = 10 give checkpoints at 10 and 20 and, on flush, 25 — not 25.
    let log = AuditLog::open(
        &dir.path().join("n.db"),
        signer(),
        config(Durability::Normal),
    )
    .unwrap();
    for s in 0..25 {
        log.record(record(s)).unwrap();
    }
    log.flush().unwrap();
    let sizes: Vec<u64> = log
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.checkpoint.size)
        .collect();
    assert_eq!(sizes, vec![10, 20, 25]);
    // A flush with nothing new signs nothing new.
    log.flush().unwrap();
    assert_eq!(log.checkpoints().unwrap().len(), 3);
    log.shutdown().unwrap();
    // Every T: with N out of reach, a checkpoint still follows within the interval, unasked.
    let log = AuditLog::open(
        &dir.path().join("t.db"),
        signer(),
        AuditConfig {
            checkpoint_every: 1_000_000,
            checkpoint_interval: Duration::from_millis(50),
            ..config(Durability::Normal)
        },
    )
    .unwrap();
    for s in 0..3 {
        log.record(record(s)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while log
        .latest_checkpoint()
        .unwrap()
        .is_none_or(|c| c.checkpoint.size < 3)
    {
        assert!(
            Instant::now() < deadline,
            "no checkpoint within the interval"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = log.checkpoints().unwrap().len();
    assert!((1..=3).contains(&n), "{n} checkpoints for 3 records");
    log.shutdown().unwrap();
}

#[test]
fn flush_is_a_barrier_for_every_thread() {
    // On a file (the in-memory variant with concurrent readers is the test above).
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::open(
            &dir.path().join("barrier.db"),
            signer(),
            AuditConfig {
                checkpoint_every: 1000,
                ..config(Durability::Normal)
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    log.record(record(t * 1_000_000 + i)).unwrap();
                    if i % 50 == 49 {
                        // Everything this thread enqueued is durable and covered.
                        let cp = log.flush().unwrap();
                        let durable = log.size().unwrap();
                        assert!(cp.checkpoint.size <= durable);
                        // (Other threads keep appending: look below the checkpoint only.)
                        let mine = log
                            .tail(1_000_000)
                            .unwrap()
                            .iter()
                            .filter(|r| r.seq < cp.checkpoint.size)
                            .filter(|r| {
                                r.record.detail["i"].parse::<u64>().unwrap() / 1_000_000 == t
                            })
                            .count() as u64;
                        assert_eq!(mine, i + 1, "thread {t} after {i}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = log.stats();
    assert_eq!(
        (stats.enqueued, stats.written, stats.dropped),
        (800, 800, 0)
    );
    assert!(stats.batches >= 1 && stats.batches <= 800);
    assert_eq!(stats.fsyncs, 0, "Normal durability does not count fsyncs");
    assert!(log.verify().unwrap().valid);
}

#[test]
fn proofs_export_and_offline_verification() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    let log = AuditLog::open(&p, signer(), config(Durability::Full)).unwrap();
    for s in 0..57 {
        log.record(record(s)).unwrap();
    }
    let cp = log.flush().unwrap();
    let cps = log.checkpoints().unwrap();
    assert!(
        cps.len() >= 6,
        "checkpoints every 10 records: {}",
        cps.len()
    );
    // Every checkpoint is consistent with the latest.
    for c in &cps {
        let proof = log
            .consistency_proof(c.checkpoint.size, cp.checkpoint.size)
            .unwrap();
        assert!(merkle::verify_consistency(
            c.checkpoint.size,
            cp.checkpoint.size,
            &c.checkpoint.root,
            &cp.checkpoint.root,
            &proof
        ));
    }
    // Inclusion of record 13 in the latest checkpoint.
    let leaf = merkle::leaf_hash(&record(13).leaf_bytes(13));
    let proof = log.inclusion_proof(13, cp.checkpoint.size).unwrap();
    assert!(merkle::verify_inclusion(
        &leaf,
        13,
        cp.checkpoint.size,
        &proof,
        &cp.checkpoint.root
    ));
    assert!(log.stats().fsyncs >= 1);
    // Export, verify offline with the trusted key only.
    let export = dir.path().join("export.json");
    let summary = log.export(&export).unwrap();
    assert_eq!(summary.records, 57);
    let pk = log.public_key();
    log.shutdown().unwrap();
    assert!(verify_export(&export, &pk).unwrap().valid);
    assert!(!verify_export(&export, &[1u8; 32]).unwrap().valid);
    // An edited export fails.
    let text = std::fs::read_to_string(&export).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["records"].as_array_mut().unwrap().remove(40);
    std::fs::write(&export, v.to_string()).unwrap();
    let r = verify_export(&export, &pk).unwrap();
    assert_eq!(r.problem.unwrap().index, 40);
    // Reopening continues the same tree, and a checkpoint never contradicts an earlier one.
    let log = AuditLog::open(&p, signer(), config(Durability::Full)).unwrap();
    assert_eq!(log.size().unwrap(), 57);
    log.record(record(57)).unwrap();
    let cp2 = log.flush().unwrap();
    let proof = log.consistency_proof(57, 58).unwrap();
    assert!(merkle::verify_consistency(
        57,
        58,
        &cp.checkpoint.root,
        &cp2.checkpoint.root,
        &proof
    ));
    // Another key cannot take over the log.
    drop(log);
    let other = Arc::new(Ed25519Signer::from_signing_key(
        ORIGIN,
        SigningKey::from_bytes(&[1; 32]),
    ));
    assert!(matches!(
        AuditLog::open(&p, other, config(Durability::Full)),
        Err(AuditError::WrongKey { .. })
    ));
}

#[test]
fn drop_with_marker_under_a_flood_accounts_for_every_loss() {
    let log = AuditLog::in_memory(
        signer(),
        AuditConfig {
            overflow: Overflow::DropWithMarker,
            queue_capacity: 8,
            checkpoint_every: 1000,
            ..config(Durability::Normal)
        },
    )
    .unwrap();
    let start = Instant::now();
    for s in 0..50_000u64 {
        log.record(record(s)).unwrap(); // never blocks
    }
    let flood = start.elapsed();
    log.flush().unwrap();
    let stats = log.stats();
    assert!(
        stats.dropped > 0,
        "the flood should overflow an 8-slot queue: {stats:?} in {flood:?}"
    );
    assert_eq!(stats.enqueued + stats.dropped, 50_000);
    let size = log.size().unwrap() as usize;
    let all = log.tail(size).unwrap();
    let gaps: u64 = all
        .iter()
        .filter(|r| r.record.kind == "audit.gap")
        .map(|r| r.record.detail["dropped"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(gaps, stats.dropped, "gap records account for every drop");
    assert!(
        all.iter()
            .filter(|r| r.record.kind == "audit.gap")
            .all(|r| r.record.outcome == Outcome::Error)
    );
    assert!(log.verify().unwrap().valid);
    log.shutdown().unwrap();
    assert_eq!(log.record(record(0)), Err(AuditError::Closed));
}

#[test]
fn drop_with_marker_under_a_multi_threaded_flood_accounts_for_every_loss() {
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::open(
            &dir.path().join("flood.db"),
            signer(),
            AuditConfig {
                overflow: Overflow::DropWithMarker,
                queue_capacity: 4,
                checkpoint_every: 500,
                ..config(Durability::Full)
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    log.record(record(t * 1_000_000 + i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.flush().unwrap();
    let stats = log.stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.enqueued + stats.dropped, 80_000);
    let all = log.tail(1_000_000).unwrap();
    let gap_records: Vec<_> = all
        .iter()
        .filter(|r| r.record.kind == "audit.gap")
        .collect();
    let gaps: u64 = gap_records
        .iter()
        .map(|r| r.record.detail["dropped"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(gaps, stats.dropped, "gap records account for every drop");
    // Written = enqueued + one gap record per gap; each gap names a time range.
    let written = all.len() as u64 - gap_records.len() as u64;
    assert_eq!(written, stats.enqueued);
    assert_eq!(stats.written, all.len() as u64);
    for g in &gap_records {
        let first: u64 = g.record.detail["first_ms"].parse().unwrap();
        let last: u64 = g.record.detail["last_ms"].parse().unwrap();
        // Both ends are times of dropped records, except that a drop racing the writer's take
        // (its time already absorbed by the previous gap's range) is bounded by the writer's
        // clock instead (see `Intake::take_pending_drops`): a real time during this test.
        let span = 1_700_000_000_000..1_700_003_020_000;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let clock = started_ms..=now;
        let ok = |t: u64| span.contains(&t) || clock.contains(&t);
        assert!(ok(first) && ok(last), "{:?}", g.record.detail);
        assert_eq!(g.record.reason.as_deref(), Some("Dropped"));
    }
    assert!(log.verify().unwrap().valid);
}

/// An export verified by a program written from `docs/audit.md` alone (the "independent
/// program" of the export-format section), with nothing from this crate but the file.
fn independent_verify(export: &serde_json::Value, trusted: &[u8; 32]) -> Result<u64, String> {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| e.to_string())
    };
    let field = |k: &str| export[k].as_str().ok_or(format!("no `{k}`"));
    if field("format")? != "nodus-audit-export-v1" {
        return Err("unknown format".into());
    }
    let (origin, key_name) = (field("origin")?, field("key_name")?);
    // The key you trust, as the note key `<name>+<hex id>+<base64(0x01 ‖ pk)>`.
    let mut id_input = key_name.as_bytes().to_vec();
    id_input.extend_from_slice(b"\n\x01");
    id_input.extend_from_slice(trusted);
    let key_id = Sha256::digest(&id_input)[..4].to_vec();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(trusted).map_err(|e| e.to_string())?;
    // Leaves: `records[i].seq == i`, the leaf starts with the domain tag and its own index.
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    for (i, r) in export["records"]
        .as_array()
        .ok_or("no records")?
        .iter()
        .enumerate()
    {
        if r["seq"].as_u64() != Some(i as u64) {
            return Err(format!("record {i}: wrong seq"));
        }
        let leaf = b64(r["leaf"].as_str().ok_or("no leaf")?)?;
        let tag = b"nodus.audit.v1\0";
        if !leaf.starts_with(tag) || leaf[tag.len()..tag.len() + 8] != (i as u64).to_be_bytes() {
            return Err(format!("record {i}: not the leaf of index {i}"));
        }
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(&leaf);
        hashes.push(h.finalize().into());
    }
    fn mth(d: &[[u8; 32]]) -> [u8; 32] {
        match d.len() {
            0 => Sha256::digest(b"").into(),
            1 => d[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                let mut h = Sha256::new();
                h.update([1u8]);
                h.update(mth(&d[..k]));
                h.update(mth(&d[k..]));
                h.finalize().into()
            }
        }
    }
    let mut latest = 0;
    for c in export["checkpoints"].as_array().ok_or("no checkpoints")? {
        let note = c["note"].as_str().ok_or("no note")?;
        // Text up to and including the newline before the blank line; then signature lines
        // `— <name> <base64(key id ‖ signature)>` (an em dash, U+2014, and a space).
        let split = note.rfind("\n\n").ok_or("no blank line")?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        let ok = sigs.lines().any(|line| {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return false;
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                return false;
            };
            let Ok(raw) = b64(sig) else { return false };
            name == key_name
                && raw.len() == 68
                && raw[..4] == key_id[..]
                && vk
                    .verify_strict(
                        text.as_bytes(),
                        &ed25519_dalek::Signature::from_bytes(&raw[4..].try_into().unwrap()),
                    )
                    .is_ok()
        });
        if !ok {
            return Err(format!("checkpoint {}: no valid signature", c["size"]));
        }
        let lines: Vec<&str> = text.lines().collect();
        let size: u64 = lines[1].parse().map_err(|_| "bad size")?;
        let root = b64(lines[2])?;
        if lines[0] != origin || Some(size) != c["size"].as_u64() {
            return Err(format!("checkpoint {size}: wrong origin or size"));
        }
        if size < latest {
            return Err("checkpoints out of order".into());
        }
        if size as usize > hashes.len() || mth(&hashes[..size as usize]).to_vec() != root {
            return Err(format!(
                "checkpoint {size}: root does not match the records"
            ));
        }
        latest = size;
    }
    Ok(latest)
}

#[test]
fn an_export_verifies_with_a_program_written_from_the_docs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("log.db");
    let log = AuditLog::open(&p, signer(), config(Durability::Full)).unwrap();
    for s in 0..37 {
        let mut r = record(s).tenant(nodus_policy::TenantId::new("acme").unwrap());
        r.reason = Some("Because".into());
        r.latency_ns = Some(s * 100);
        log.record(r).unwrap();
    }
    log.flush().unwrap();
    let pk = log.public_key();
    let export = dir.path().join("export.json");
    log.export(&export).unwrap();
    log.shutdown().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(independent_verify(&v, &pk), Ok(37));
    assert_eq!(
        v["verifier_key"].as_str().unwrap(),
        merkle_note_vkey(ORIGIN, &pk)
    );
    assert!(independent_verify(&v, &[7u8; 32]).is_err());
    // The independent verifier and `verify_export` agree on damage.
    let mut edited = v.clone();
    let leaf = edited["records"][20]["leaf"].as_str().unwrap().to_owned();
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &leaf).unwrap();
    *raw.last_mut().unwrap() ^= 1;
    edited["records"][20]["leaf"] =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw).into();
    assert!(independent_verify(&edited, &pk).is_err());
    std::fs::write(&export, edited.to_string()).unwrap();
    let r = verify_export(&export, &pk).unwrap();
    assert!(!r.valid);
    assert_eq!(r.problem.unwrap().index, 20);
    // The database itself verifies with the same program after an export by the tool path.
    let again = dir.path().join("again.json");
    AuditLog::export_db(&p, &again).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&again).unwrap()).unwrap();
    assert_eq!(independent_verify(&v, &pk), Ok(37));
}

fn merkle_note_vkey(name: &str, pk: &[u8; 32]) -> String {
    nodus_security::audit::note::verifier_key(name, pk)
}

// ----- crash test: a child appends and acknowledges; the parent kills it with SIGKILL ----------

const CHILD_ENV: &str = "NODUS_AUDIT_CRASH_CHILD_DB";

/// The child role (runs only when spawned by the crash test): appends one record at a time and,
/// once `flush()` acknowledges it, prints `ACK <index> <checkpoint size> <checkpoint root hex>`.
#[test]
#[ignore]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = AuditLog::open(
        Path::new(&path),
        signer(),
        AuditConfig {
            checkpoint_every: 8,
            ..config(Durability::Full)
        },
    )
    .unwrap();
    let out = std::io::stdout();
    let mut s = log.size().unwrap();
    loop {
        log.record(record(s)).unwrap();
        let cp = log.flush().unwrap();
        assert!(cp.checkpoint.size > s);
        let mut o = out.lock();
        writeln!(
            o,
            "ACK {s} {} {}",
            cp.checkpoint.size,
            hex::encode(cp.checkpoint.root)
        )
        .unwrap();
        o.flush().unwrap();
        s += 1;
    }
}

/// Runs `iterations` children, each SIGKILLed after a random delay, and checks the log after
/// each: it reopens (which verifies it), every acknowledged record is present and unchanged,
/// every acknowledged checkpoint is still the log's root at its size, and the newest checkpoint
/// is consistent with the one seen after the previous kill. Returns the acknowledged count.
fn crash_loop(iterations: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut acked_checkpoints: Vec<(u64, [u8; 32])> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut prev_cp: Option<(u64, [u8; 32])> = None;
    for iteration in 0..iterations {
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
        std::thread::sleep(Duration::from_millis(30 + seed % 120));
        child.kill().unwrap(); // SIGKILL
        let stdout = child.stdout.take().unwrap();
        child.wait().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            // The last line may be cut short by the kill: only whole lines count.
            let parts: Vec<&str> = rest.split(' ').collect();
            if let [n, size, root] = parts.as_slice()
                && let (Ok(n), Ok(size), Ok(root)) = (
                    n.parse::<u64>(),
                    size.parse::<u64>(),
                    hex::decode(root).map(<[u8; 32]>::try_from),
                )
                && let Ok(root) = root
            {
                acked.push(n);
                acked_checkpoints.push((size, root));
            }
        }
        // Reopen: it verifies on open (no truncation below a checkpoint, every signature valid).
        let log = AuditLog::open(&path, signer(), config(Durability::Full))
            .unwrap_or_else(|e| panic!("iteration {iteration}: {e}"));
        let size = log.size().unwrap();
        let report = log.verify().unwrap();
        assert!(report.valid, "iteration {iteration}: {report:?}");
        if let Some(m) = acked.iter().max().copied() {
            assert!(size > m, "acknowledged record {m} lost (size {size})");
        }
        // Every acknowledged record is present and unchanged…
        let records = log.tail(size as usize).unwrap();
        for &a in &acked {
            assert_eq!(records[a as usize].record, record(a), "record {a} changed");
        }
        // …and every acknowledged checkpoint still describes the log.
        for &(cp_size, cp_root) in &acked_checkpoints {
            assert_eq!(
                log.root(cp_size).unwrap(),
                cp_root,
                "acknowledged checkpoint {cp_size} no longer matches"
            );
        }
        // The newest checkpoint is consistent with the previous one, and never older.
        let latest = log.latest_checkpoint().unwrap();
        if let Some((ps, pr)) = prev_cp {
            let latest = latest.as_ref().expect("a checkpoint disappeared");
            assert!(
                latest.checkpoint.size >= ps,
                "checkpoint went back from {ps} to {}",
                latest.checkpoint.size
            );
            if ps > 0 {
                let proof = log.consistency_proof(ps, latest.checkpoint.size).unwrap();
                assert!(merkle::verify_consistency(
                    ps,
                    latest.checkpoint.size,
                    &pr,
                    &latest.checkpoint.root,
                    &proof
                ));
            }
        }
        if let Some(l) = latest {
            prev_cp = Some((l.checkpoint.size, l.checkpoint.root));
        }
        log.shutdown().unwrap();
    }
    assert!(
        acked.len() >= iterations,
        "children acknowledged too little: {}",
        acked.len()
    );
    acked.len()
}

#[test]
fn sigkill_never_loses_an_acknowledged_record() {
    crash_loop(20);
}

/// The soak: `cargo test -p nodus-security --release --test audit -- --ignored crash_soak_500`.
#[test]
#[ignore]
fn crash_soak_500() {
    let start = Instant::now();
    let acked = crash_loop(500);
    eprintln!(
        "crash soak: 500 SIGKILLs, {acked} acknowledged records, all intact, in {:?}",
        start.elapsed()
    );
}

/// A signer that panics: the writer thread dies mid-commit.
struct PanickingSigner;

impl CheckpointSigner for PanickingSigner {
    fn name(&self) -> &str {
        ORIGIN
    }
    fn public_key(&self) -> [u8; 32] {
        SigningKey::from_bytes(&[42; 32]).verifying_key().to_bytes()
    }
    fn sign(&self, _message: &[u8]) -> Result<[u8; 64], AuditError> {
        panic!("signer exploded (expected by the test)");
    }
}

/// If the writer thread panics, the log stops for good like after an I/O error: `flush` and
/// `record` report it, and a `Block`-mode recorder facing a full queue does not wait forever.
#[test]
fn a_panicking_writer_stops_the_log_instead_of_hanging_callers() {
    let log = Arc::new(
        AuditLog::in_memory(
            Arc::new(PanickingSigner),
            AuditConfig {
                queue_capacity: 2,
                checkpoint_every: 1,
                ..config(Durability::Normal)
            },
        )
        .unwrap(),
    );
    let _ = log.record(record(0));
    let e = within_5s(&log, |l| l.flush()).unwrap_err();
    assert!(
        matches!(e, AuditError::WriterStopped(ref m) if m.contains("panicked")),
        "{e:?}"
    );
    // Block mode, a tiny queue, nobody draining it: each call still returns, with the error.
    for i in 1..50 {
        let r = within_5s(&log, move |l| l.record(record(i)));
        assert!(matches!(r, Err(AuditError::WriterStopped(_))), "{r:?}");
    }
    assert!(log.shutdown().is_err());
}
