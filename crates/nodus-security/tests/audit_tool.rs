//! `audit_tool` (examples/audit_tool.rs), driven through its `run` function: the tool's logic with
//! the library it ships with, no process spawning needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../../../examples/audit_tool.rs"]
#[allow(dead_code, unreachable_pub)]
mod audit_tool;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use audit_tool::Exit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use nodus_security::audit::note::{checkpoint_body, signature_line, verifier_key};
use nodus_security::audit::{
    AuditConfig, AuditLog, AuditRecord, AuditSink, Durability, Ed25519Signer, LEAF_TAG, Outcome,
    Overflow, merkle,
};
use serde_json::{Value, json};

const ORIGIN: &str = "test.nodus/audit";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn pk() -> [u8; 32] {
    key().verifying_key().to_bytes()
}

fn tool(args: &[&str]) -> Exit {
    audit_tool::run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
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

fn write_log(path: &Path, n: u64) {
    let log = AuditLog::open(
        path,
        Arc::new(Ed25519Signer::from_signing_key(ORIGIN, key())),
        config(),
    )
    .unwrap();
    for s in 0..n {
        log.record(AuditRecord::new("test.write", Outcome::Allowed).detail("i", s.to_string()))
            .unwrap();
    }
    log.flush().unwrap();
    log.shutdown().unwrap();
}

#[test]
fn an_export_is_recognised_by_parsing_not_by_its_first_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    write_log(&db, 25);
    let db_s = db.to_str().unwrap();
    let key = B64.encode(pk());
    assert!(matches!(
        tool(&["verify", db_s, "--key", &key]),
        Exit::Ok(_)
    ));
    let export = dir.path().join("export.json");
    let export_s = export.to_str().unwrap();
    assert!(matches!(tool(&["export", db_s, export_s]), Exit::Ok(_)));
    // Pretty-printed or not, with more than 64 bytes of leading whitespace: still an export.
    let text = std::fs::read_to_string(&export).unwrap();
    std::fs::write(&export, format!("{}\n{text}", " ".repeat(200))).unwrap();
    match tool(&["verify", export_s, "--key", &key]) {
        Exit::Ok(v) => assert_eq!(v["valid"], true, "{v}"),
        other => panic!("{other:?}"),
    }
    // Neither a database nor an export: a clear failure, not a database error in disguise.
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "{ not json").unwrap();
    assert!(matches!(
        tool(&["verify", junk.to_str().unwrap(), "--key", &key]),
        Exit::Failed(_)
    ));
}

/// A validly signed export whose record 1 has unsorted detail keys.
fn non_canonical_export() -> Value {
    fn s(b: &mut Vec<u8>, v: &str) {
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    let leaf = |seq: u64, details: &[(&str, &str)]| {
        let mut b = LEAF_TAG.to_vec();
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&5u64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        s(&mut b, "test.write");
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&(details.len() as u32).to_be_bytes());
        for (k, v) in details {
            s(&mut b, k);
            s(&mut b, v);
        }
        b.extend_from_slice(&0u64.to_be_bytes());
        b.push(0);
        b
    };
    let leaves = [
        leaf(0, &[("a", "1")]),
        leaf(1, &[("b", "2"), ("a", "1")]),
        leaf(2, &[]),
    ];
    let hashes: Vec<[u8; 32]> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let body = checkpoint_body(ORIGIN, 3, &merkle::root_of(&hashes));
    let sig = key().sign(body.as_bytes()).to_bytes();
    let note = format!("{body}\n{}", signature_line(ORIGIN, &pk(), &sig));
    json!({
        "format": "nodus-audit-export-v1",
        "origin": ORIGIN,
        "key_name": ORIGIN,
        "public_key": B64.encode(pk()),
        "verifier_key": verifier_key(ORIGIN, &pk()),
        "records": leaves.iter().enumerate().map(|(i, l)| json!({"seq": i, "leaf": B64.encode(l)})).collect::<Vec<_>>(),
        "checkpoints": [{"size": 3, "note": note}],
    })
}

#[test]
fn the_tool_refuses_a_signed_but_non_canonical_export() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.json");
    std::fs::write(&export, non_canonical_export().to_string()).unwrap();
    let export_s = export.to_str().unwrap();
    let key = B64.encode(pk());
    match tool(&["verify", export_s, "--key", &key]) {
        Exit::Tampered(v) => {
            assert_eq!(v["problem"]["kind"], "modified_record", "{v}");
            assert_eq!(v["problem"]["index"], 1, "{v}");
        }
        other => panic!("{other:?}"),
    }
    // `prove` never prints a record that does not re-encode to its leaf.
    assert!(matches!(
        tool(&["prove", export_s, "1", "--key", &key]),
        Exit::Tampered(_)
    ));
    // A wrong `verifier_key` is refused by both commands.
    let mut v = non_canonical_export();
    v["records"][1] = v["records"][2].clone();
    v["records"].as_array_mut().unwrap().pop();
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    v["verifier_key"] = json!(verifier_key(ORIGIN, &other));
    std::fs::write(&export, v.to_string()).unwrap();
    for cmd in [
        vec!["verify", export_s, "--key", &key],
        vec!["prove", export_s, "0", "--key", &key],
        vec!["verify", export_s],
    ] {
        match tool(&cmd) {
            Exit::Tampered(v) => assert_eq!(v["problem"]["kind"], "key_mismatch", "{cmd:?}: {v}"),
            other => panic!("{cmd:?}: {other:?}"),
        }
    }
}

#[test]
fn the_tool_reports_uncovered_signed_history_from_the_witness() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    write_log(&db, 30);
    let db_s = db.to_str().unwrap();
    let key = B64.encode(pk());
    match tool(&["verify", db_s, "--key", &key]) {
        Exit::Ok(v) => assert_eq!(
            (v["uncovered"].clone(), v["witnessed"].clone()),
            (json!(0), json!(30)),
            "{v}"
        ),
        other => panic!("{other:?}"),
    }
    // Every checkpoint deleted: the file alone looks like 30 unsigned records; the witness
    // beside it shows they were signed.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM checkpoints", [])
        .unwrap();
    match tool(&["verify", db_s, "--key", &key]) {
        Exit::Tampered(v) => {
            assert_eq!(v["uncovered"], 30, "{v}");
            assert_eq!(v["problem"]["kind"], "uncovered_signed_history", "{v}");
        }
        other => panic!("{other:?}"),
    }
    // The witness moved elsewhere and named explicitly.
    let elsewhere = dir.path().join("kept-elsewhere.witness");
    std::fs::rename(format!("{db_s}.witness"), &elsewhere).unwrap();
    match tool(&[
        "verify",
        db_s,
        "--witness",
        elsewhere.to_str().unwrap(),
        "--key",
        &key,
    ]) {
        Exit::Tampered(v) => assert_eq!(v["problem"]["kind"], "uncovered_signed_history", "{v}"),
        other => panic!("{other:?}"),
    }
    // Without any witness the file alone cannot tell: valid, with every record uncovered.
    match tool(&["verify", db_s, "--key", &key]) {
        Exit::Ok(v) => assert_eq!(
            (v["uncovered"].clone(), v["witnessed"].clone()),
            (json!(30), Value::Null),
            "{v}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        tool(&["verify", db_s, "--witness", "/nonexistent/witness"]),
        Exit::Usage(_)
    ));
}
