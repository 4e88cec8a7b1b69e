//! Deleting checkpoints must not make history unsigned (issue "Tenants are walls", item 9): the
//! latest checkpoint is kept outside `audit.db` too (a witness file), opening checks that the log
//! extends it and refuses otherwise with nothing written, and `verify` reports the records no
//! checkpoint covers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nodus_security::audit::{
    AuditConfig, AuditLog, AuditRecord, AuditSink, Durability, Ed25519Signer, Outcome, Overflow,
    merkle, verify_db,
};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

const ORIGIN: &str = "test.nodus/audit";

fn signer() -> Arc<Ed25519Signer> {
    Arc::new(Ed25519Signer::from_signing_key(
        ORIGIN,
        SigningKey::from_bytes(&[42; 32]),
    ))
}

fn pk() -> [u8; 32] {
    SigningKey::from_bytes(&[42; 32]).verifying_key().to_bytes()
}

fn config() -> AuditConfig {
    AuditConfig {
        origin: ORIGIN.into(),
        durability: Durability::Normal,
        overflow: Overflow::Block,
        queue_capacity: 1024,
        checkpoint_every: 10,
        checkpoint_interval: Duration::from_secs(60),
    }
}

fn record(s: u64) -> AuditRecord {
    let mut r = AuditRecord::new("test.write", Outcome::Allowed).detail("i", s.to_string());
    r.time_ms = 1_700_000_000_000 + s;
    r
}

fn write_log(path: &Path, n: u64) {
    let log = AuditLog::open(path, signer(), config()).unwrap();
    for s in 0..n {
        log.record(record(s)).unwrap();
    }
    assert_eq!(log.flush().unwrap().checkpoint.size, n);
    log.shutdown().unwrap();
}

fn report(path: &Path) -> Value {
    serde_json::to_value(verify_db(path, Some(&pk())).unwrap()).unwrap()
}

/// A digest of the database file and of the frames in its WAL (an empty or absent WAL holds
/// none), to show that a refused open wrote nothing.
fn snapshot(path: &Path) -> (String, Option<String>) {
    use sha2::{Digest, Sha256};
    let db = hex::encode(Sha256::digest(std::fs::read(path).unwrap()));
    let wal = std::fs::read(format!("{}-wal", path.display()))
        .ok()
        .filter(|w| !w.is_empty())
        .map(|w| hex::encode(Sha256::digest(w)));
    (db, wal)
}

fn checkpoint_rows(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM checkpoints", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn deleting_every_checkpoint_and_forging_a_record_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    write_log(&p, 40);
    let c = Connection::open(&p).unwrap();
    c.execute("DELETE FROM checkpoints", []).unwrap();
    let forged = record(17).detail("forged", "yes").leaf_bytes(17);
    c.execute(
        "UPDATE records SET leaf = ?1, hash = ?2 WHERE seq = 17",
        params![forged, merkle::leaf_hash(&forged).to_vec()],
    )
    .unwrap();
    drop(c);
    // The file alone now holds no signature over the forgery: the witness does.
    let r = report(&p);
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(r["uncovered"], 40, "{r}");
    assert_eq!(r["problem"]["kind"], "witness_not_extended", "{r}");
    assert_eq!(r["problem"]["index"], 0, "{r}");
    // Opening is refused, and nothing is written: above all, no checkpoint re-signs the forgery.
    let before = snapshot(&p);
    let err = AuditLog::open(&p, signer(), config()).unwrap_err();
    assert!(
        err.to_string().contains("witness"),
        "a clear error naming the witness: {err}"
    );
    assert_eq!(snapshot(&p), before, "a refused open writes nothing");
    assert_eq!(checkpoint_rows(&p), 0);
}

#[test]
fn deleting_every_checkpoint_leaves_signed_history_uncovered() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    write_log(&p, 40);
    Connection::open(&p)
        .unwrap()
        .execute("DELETE FROM checkpoints WHERE size > 20", [])
        .unwrap();
    let r = report(&p);
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(r["uncovered"], 20, "{r}");
    assert_eq!(r["latest"]["size"], 20, "{r}");
    assert_eq!(
        (r["problem"]["kind"].clone(), r["problem"]["index"].clone()),
        (json!("uncovered_signed_history"), json!(20)),
        "{r}"
    );
    let before = snapshot(&p);
    assert!(AuditLog::open(&p, signer(), config()).is_err());
    assert_eq!(snapshot(&p), before);
    assert_eq!(checkpoint_rows(&p), 2);
}

#[test]
fn a_live_log_reports_the_records_no_checkpoint_covers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    let log = AuditLog::open(
        &p,
        signer(),
        AuditConfig {
            checkpoint_every: 1000,
            ..config()
        },
    )
    .unwrap();
    for s in 0..5 {
        log.record(record(s)).unwrap();
    }
    log.flush().unwrap();
    for s in 5..8 {
        log.record(record(s)).unwrap();
    }
    // Committed by the writer, not yet signed (no checkpoint is due): uncovered, but valid.
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.size().unwrap() < 8 {
        assert!(Instant::now() < deadline, "the writer never committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = serde_json::to_value(log.verify().unwrap()).unwrap();
    assert_eq!(
        (r["valid"].clone(), r["uncovered"].clone()),
        (json!(true), json!(3)),
        "{r}"
    );
    log.flush().unwrap();
    let r = serde_json::to_value(log.verify().unwrap()).unwrap();
    assert_eq!(
        (r["valid"].clone(), r["uncovered"].clone()),
        (json!(true), json!(0)),
        "{r}"
    );
    // Checkpoints deleted underneath the live log: signed history is uncovered.
    Connection::open(&p)
        .unwrap()
        .execute("DELETE FROM checkpoints", [])
        .unwrap();
    let r = serde_json::to_value(log.verify().unwrap()).unwrap();
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(r["uncovered"], 8, "{r}");
    assert_eq!(r["problem"]["kind"], "uncovered_signed_history", "{r}");
}

#[test]
fn a_rollback_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    write_log(&p, 100);
    Connection::open(&p)
        .unwrap()
        .execute_batch(
            "DELETE FROM checkpoints WHERE size > 90; DELETE FROM records WHERE seq >= 90;",
        )
        .unwrap();
    let r = report(&p);
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(
        (r["problem"]["kind"].clone(), r["problem"]["index"].clone()),
        (json!("witness_not_extended"), json!(90)),
        "{r}"
    );
    let before = snapshot(&p);
    assert!(AuditLog::open(&p, signer(), config()).is_err());
    assert_eq!(snapshot(&p), before);
}

fn witness_beside(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.witness", db.display()))
}

#[test]
fn a_missing_witness_is_refused_unless_accepted() {
    use nodus_security::audit::{AuditError, WitnessConfig};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    write_log(&p, 30);
    let w = witness_beside(&p);
    assert!(w.is_file(), "the default witness lives beside the database");
    std::fs::remove_file(&w).unwrap();
    let before = snapshot(&p);
    match AuditLog::open(&p, signer(), config()) {
        Err(AuditError::WitnessMissing { db, witness }) => {
            assert_eq!(witness, w.display().to_string());
            assert_eq!(db, p.display().to_string());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&p), before);
    assert!(!w.exists(), "a refused open writes no witness either");
    // Knowingly accepted: the log opens and starts a new witness from its latest checkpoint.
    let log = AuditLog::open_with_witness(
        &p,
        signer(),
        config(),
        WitnessConfig {
            accept_missing: true,
            ..WitnessConfig::default()
        },
    )
    .unwrap();
    let latest = log.latest_checkpoint().unwrap().unwrap();
    assert_eq!(std::fs::read_to_string(&w).unwrap(), latest.note);
    log.record(record(30)).unwrap();
    let cp = log.flush().unwrap();
    assert_eq!(std::fs::read_to_string(&w).unwrap(), cp.note);
    log.shutdown().unwrap();
    drop(log);
    AuditLog::open(&p, signer(), config())
        .unwrap()
        .shutdown()
        .unwrap();
}

#[test]
fn a_witness_kept_elsewhere_exposes_a_rollback_of_both_files() {
    use nodus_security::audit::{AuditError, TamperKind, WitnessConfig, verify_db_with_witness};
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    let w = other.path().join("audit.witness");
    let wc = WitnessConfig {
        path: Some(w.clone()),
        accept_missing: false,
    };
    let log = AuditLog::open_with_witness(&p, signer(), config(), wc.clone()).unwrap();
    for s in 0..50 {
        log.record(record(s)).unwrap();
    }
    let cp = log.flush().unwrap();
    log.shutdown().unwrap();
    drop(log);
    assert_eq!(std::fs::read_to_string(&w).unwrap(), cp.note);
    assert!(
        !witness_beside(&p).exists(),
        "no witness beside the database"
    );
    // A witness in a directory that does not exist is refused at open, not at the first
    // checkpoint.
    let nowhere = WitnessConfig {
        path: Some(other.path().join("missing-dir").join("w")),
        accept_missing: true,
    };
    assert!(matches!(
        AuditLog::open_with_witness(&dir.path().join("fresh.db"), signer(), config(), nowhere),
        Err(AuditError::Witness { .. })
    ));
    assert!(!dir.path().join("fresh.db").exists());
    // The log and the witness agree: it opens and verifies against it.
    let r = verify_db_with_witness(&p, Some(&pk()), Some(&w)).unwrap();
    assert!(
        r.valid && r.witnessed == Some(50) && r.uncovered == 0,
        "{r:?}"
    );
    AuditLog::open_with_witness(&p, signer(), config(), wc.clone())
        .unwrap()
        .shutdown()
        .unwrap();
    // Roll the database back to 30 records (a consistent, older file on its own).
    Connection::open(&p)
        .unwrap()
        .execute_batch(
            "DELETE FROM checkpoints WHERE size > 30; DELETE FROM records WHERE seq >= 30;",
        )
        .unwrap();
    let before = snapshot(&p);
    match AuditLog::open_with_witness(&p, signer(), config(), wc.clone()) {
        Err(AuditError::WitnessNotExtended { tamper, .. }) => {
            assert_eq!(
                (tamper.kind, tamper.index),
                (TamperKind::WitnessNotExtended, 30)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&p), before);
    let r = verify_db_with_witness(&p, Some(&pk()), Some(&w)).unwrap();
    assert!(!r.valid, "{r:?}");
    // A witness that is not this log's signed checkpoint is refused as such.
    std::fs::write(&w, cp.note.replace("\n50\n", "\n51\n")).unwrap();
    assert!(matches!(
        AuditLog::open_with_witness(&p, signer(), config(), wc),
        Err(AuditError::Witness { .. })
    ));
    assert!(matches!(
        verify_db_with_witness(&p, Some(&pk()), Some(&w)),
        Err(AuditError::Witness { .. })
    ));
}

#[test]
fn a_normal_durability_log_keeps_its_witness_current() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    let log = AuditLog::open(&p, signer(), config()).unwrap();
    for s in 0..25 {
        log.record(record(s)).unwrap();
    }
    let cp = log.flush().unwrap();
    let w = std::fs::read_to_string(witness_beside(&p)).unwrap();
    assert_eq!(w, cp.note);
    assert!(!Path::new(&format!("{}.tmp", witness_beside(&p).display())).exists());
    log.shutdown().unwrap();
}
