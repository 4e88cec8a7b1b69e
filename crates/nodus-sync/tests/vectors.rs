//! The known-answer bundle in `tests/vectors/`: a fixed sender key, receiver identity, bundle
//! id, clock and events. Everything but the age payload is deterministic (Ed25519 signatures
//! are), so the test regenerates the header, manifest and signature and compares them byte for
//! byte, decrypts the committed payload and compares the plaintext, and verifies the whole file.
//! The age file key, ephemeral X25519 key and payload nonce are random, so the age bytes (and the
//! file's SHA-256) are only those of the committed file.
//!
//! Regenerate (only when the format changes): `NODUS_SYNC_WRITE_VECTORS=1 cargo test -p
//! nodus-sync --test vectors`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use nodus_fabric::{SqliteEventLog, TenantEventLog, VersionVector};
use nodus_sync::age::x25519::Identity;
use nodus_sync::{BundleId, Ed25519BundleSigner, Exporter, FixedClock, Importer, TrustStore};

/// The receiver's age identity: a published test key, never use it for anything else.
const IDENTITY: &str = "AGE-SECRET-KEY-1ZUJ8CESAVTYDVNDJJJ25NMCVKQW4AJSPAN65QK3DWFQX6GD9979SCKT0S4";
const RECIPIENT: &str = "age16afyzhpl4awzt4fg5tf44ks500lwsykuaymf4ly65stl0n2pxfnqncj47r";
/// The sender's Ed25519 seed (32 bytes of 0x42), key id `vector-sender`.
const SEED: [u8; 32] = [0x42; 32];
const BUNDLE_ID: &str = "000102030405060708090a0b0c0d0e0f";
const CREATED_AT: u64 = NOW - 60;
/// 100 years of validity, so the vector does not expire.
const EXPIRES_IN: u64 = 100 * 365 * 86_400;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn sender() -> Ed25519BundleSigner {
    Ed25519BundleSigner::new(
        "vector-sender",
        ed25519_dalek::SigningKey::from_bytes(&SEED),
    )
    .unwrap()
}

/// The sender's log: chain 07…07/07…07 with three events of payload `{"salt":"vector","seq":n}`.
fn sender_log() -> SqliteEventLog {
    let log = SqliteEventLog::in_memory(node(1)).unwrap();
    log.ingest(&tenant(), chain_events(chain(7, 7), 3, "vector"))
        .unwrap();
    log
}

fn export() -> Vec<u8> {
    let identity: Identity = IDENTITY.parse().unwrap();
    assert_eq!(identity.to_public().to_string(), RECIPIENT);
    let exporter = Exporter::new()
        .clock(FixedClock(CREATED_AT))
        .fixed_bundle_id(BUNDLE_ID.parse().unwrap())
        .with_trust_material(b"vector trust material".to_vec());
    let mut out = Vec::new();
    exporter
        .export(
            &sender_log(),
            &tenant(),
            &VersionVector::new(),
            &sender(),
            &[identity.to_public()],
            Duration::from_secs(EXPIRES_IN),
            &mut out,
        )
        .unwrap();
    out
}

#[test]
fn known_answer_bundle() {
    let fresh = export();
    if std::env::var_os("NODUS_SYNC_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).unwrap();
        std::fs::write(dir().join("bundle-v1.noduspkg"), &fresh).unwrap();
        let identity: Identity = IDENTITY.parse().unwrap();
        std::fs::write(
            dir().join("bundle-v1.plaintext"),
            decrypt(&fresh, &identity),
        )
        .unwrap();
        std::fs::write(dir().join("bundle-v1.manifest.json"), split(&fresh).0).unwrap();
    }
    let committed = std::fs::read(dir().join("bundle-v1.noduspkg")).unwrap();

    // Header, manifest and signature are deterministic.
    let (m_fresh, s_fresh, _) = split(&fresh);
    let (m, s, _) = split(&committed);
    assert_eq!(committed[..16], fresh[..16]);
    assert_eq!(m, m_fresh);
    assert_eq!(s, s_fresh);
    assert_eq!(
        m,
        std::fs::read(dir().join("bundle-v1.manifest.json")).unwrap()
    );
    assert_eq!(
        hex::encode(&s),
        hex::encode(
            nodus_sync::BundleSigner::sign(
                &sender(),
                &nodus_sync::format::pae(nodus_sync::format::PAYLOAD_TYPE, &m)
            )
            .unwrap()
        )
    );

    // The payload decrypts with the published identity to the committed plaintext, whose
    // framing is the documented one.
    let identity: Identity = IDENTITY.parse().unwrap();
    let plain = decrypt(&committed, &identity);
    assert_eq!(
        plain,
        std::fs::read(dir().join("bundle-v1.plaintext")).unwrap()
    );
    assert_eq!(plain, decrypt(&fresh, &identity));
    let events = chain_events(chain(7, 7), 3, "vector");
    assert_eq!(
        plain,
        frame(&[
            (1, events_entry(&events)),
            (3, b"vector trust material".to_vec())
        ])
    );

    // And the whole file verifies.
    let tmp = tempfile::tempdir().unwrap();
    let importer = Importer::open(
        tmp.path(),
        identity,
        TrustStore::new().with(sender().trusted_key()),
    )
    .unwrap()
    .clock(FixedClock(NOW));
    let receiver = SqliteEventLog::in_memory(node(2)).unwrap();
    let summary = importer
        .verify(&receiver, &tenant(), &dir().join("bundle-v1.noduspkg"))
        .unwrap();
    assert_eq!(summary.bundle_id, BUNDLE_ID.parse::<BundleId>().unwrap());
    assert_eq!(summary.events, 3);
    assert_eq!(summary.created_at, CREATED_AT);
    assert_eq!(summary.expires_at, CREATED_AT + EXPIRES_IN);
    assert_eq!(summary.file_sha256, sha256(&committed));
    assert!(receiver.high_water_marks(&tenant()).unwrap().is_empty());
}

/// The independent verifier written from `docs/sync.md` (Python, `cryptography`) accepts the
/// vector and refuses it with a flipped payload byte. Skips, saying so, without Python or the
/// package.
#[test]
fn independent_python_verifier_agrees() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: python3 with the `cryptography` package is not available");
        return;
    }
    let run = |path: &std::path::Path| {
        std::process::Command::new("python3")
            .arg(dir().join("verify_vector.py"))
            .arg(path)
            .arg(IDENTITY)
            .arg(hex::encode(nodus_sync::BundleSigner::public_key(&sender())))
            .arg("acme")
            .arg(NOW.to_string())
            .output()
            .unwrap()
    };
    let out = run(&dir().join("bundle-v1.noduspkg"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("OK bundle 000102030405060708090a0b0c0d0e0f events 3")
    );
    let mut bytes = std::fs::read(dir().join("bundle-v1.noduspkg")).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.noduspkg");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(!run(&bad).status.success());
}
