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
    AuditConfig, AuditError, AuditLog, AuditRecord, AuditSink, Durability, Ed25519Signer, Outcome,
    Overflow, TamperKind, merkle, verify_db, verify_export,
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
    let bad = note
        .replacen("100\n", "100\n\n", 0)
        .replace("— test.nodus/audit ", "— test.nodus/audit A");
    c.execute(
        "UPDATE checkpoints SET note = ?1 WHERE size = 100",
        params![bad],
    )
    .unwrap();
    drop(c);
    assert_eq!(tampered(&p, &pk).1, TamperKind::BadCheckpointSignature);

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

// ----- crash test: a child appends and acknowledges; the parent kills it with SIGKILL ----------

const CHILD_ENV: &str = "NODUS_AUDIT_CRASH_CHILD_DB";

/// The child role (runs only when spawned by the crash test).
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
        writeln!(o, "ACK {s}").unwrap();
        o.flush().unwrap();
        s += 1;
    }
}

fn crash_loop(iterations: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut prev_cp: Option<(u64, [u8; 32])> = None;
    for _ in 0..iterations {
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
            if let Some(n) = line.unwrap().strip_prefix("ACK ") {
                acked.push(n.parse().unwrap());
            }
        }
        // Reopen: it verifies on open (no truncation below a checkpoint, every signature valid).
        let log = AuditLog::open(&path, signer(), config(Durability::Full)).unwrap();
        let size = log.size().unwrap();
        let report = log.verify().unwrap();
        assert!(report.valid, "{report:?}");
        let max_acked = acked.iter().max().copied();
        if let Some(m) = max_acked {
            assert!(size > m, "acknowledged record {m} lost (size {size})");
        }
        // Every acknowledged record is present and unchanged.
        let records = log.tail(size as usize).unwrap();
        for &a in &acked {
            assert_eq!(records[a as usize].record, record(a), "record {a} changed");
        }
        // The newest checkpoint is consistent with the previous one.
        if let Some(latest) = log.latest_checkpoint().unwrap() {
            if let Some((ps, pr)) =
                prev_cp.filter(|(ps, _)| *ps > 0 && *ps <= latest.checkpoint.size)
            {
                let proof = log.consistency_proof(ps, latest.checkpoint.size).unwrap();
                assert!(merkle::verify_consistency(
                    ps,
                    latest.checkpoint.size,
                    &pr,
                    &latest.checkpoint.root,
                    &proof
                ));
            }
            prev_cp = Some((latest.checkpoint.size, latest.checkpoint.root));
        }
        log.shutdown().unwrap();
    }
    assert!(
        acked.len() >= iterations,
        "children acknowledged too little: {}",
        acked.len()
    );
}

#[test]
fn sigkill_never_loses_an_acknowledged_record() {
    crash_loop(20);
}

/// The soak: `cargo test -p nodus-security --test audit -- --ignored crash_soak`.
#[test]
#[ignore]
fn crash_soak_500() {
    crash_loop(500);
}
