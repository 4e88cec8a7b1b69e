//! Helpers shared by the integration tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flate2::Compression;
use flate2::write::DeflateEncoder;
use nodus_fabric::{
    ChainId, EntityId, Event, EventHash, EventKind, EventLabel, Incarnation, NewEvent, NodeId,
    Payload, SqliteEventLog, TenantEventLog, VersionVector,
};
use nodus_policy::TenantId;
use nodus_sync::age::x25519::{Identity, Recipient};
use nodus_sync::format::{Manifest, PAYLOAD_TYPE, pae};
use nodus_sync::{
    BundleSigner, Ed25519BundleSigner, ExportReport, Exporter, FixedClock, Importer, Rejection,
    TrustStore,
};
use serde_json::json;

/// The receivers' clock in every test: 2026-12-01.
pub const NOW: u64 = 1_796_083_200;

pub fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

pub fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 16])
}

pub fn signer(seed: u8) -> Ed25519BundleSigner {
    Ed25519BundleSigner::new(
        format!("node-{seed}"),
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
    )
    .unwrap()
}

pub fn new_event(i: u64) -> NewEvent {
    NewEvent::new(
        EventKind::new("object.created").unwrap(),
        EntityId::new(format!("obj-{i}")).unwrap(),
        EventLabel::new("UNCLASSIFIED").unwrap(),
        Payload::from_value(&json!({"i": i, "title": format!("note {i}")})).unwrap(),
    )
}

pub fn log_with(n: u8, events: u64) -> SqliteEventLog {
    let log = SqliteEventLog::in_memory(node(n)).unwrap();
    append(&log, events);
    log
}

pub fn append(log: &SqliteEventLog, events: u64) {
    let mut i = 0;
    while i < events {
        let batch = (events - i).min(1000);
        log.append(&tenant(), (i..i + batch).map(new_event).collect())
            .unwrap();
        i += batch;
    }
}

/// A hand-made chain of `n` events (seq 1..=n), `salt` in each payload so two salts equivocate.
pub fn chain_events(chain: ChainId, n: u64, salt: &str) -> Vec<Event> {
    let mut prev = EventHash::ZERO;
    (1..=n)
        .map(|seq| {
            let mut e = Event {
                tenant: tenant(),
                node_id: chain.node_id,
                incarnation: chain.incarnation,
                seq,
                lamport: seq,
                kind: EventKind::new("object.created").unwrap(),
                entity: EntityId::new(format!("obj-{seq}")).unwrap(),
                label: EventLabel::new("UNCLASSIFIED").unwrap(),
                payload: Payload::from_value(&json!({"seq": seq, "salt": salt})).unwrap(),
                model_ver: 1,
                prev_hash: prev,
                hash: EventHash::ZERO,
                time_ms: 1_700_000_000_000,
            };
            e.hash = e.compute_hash();
            prev = e.hash;
            e
        })
        .collect()
}

pub fn chain(n: u8, inc: u8) -> ChainId {
    ChainId {
        node_id: node(n),
        incarnation: Incarnation::from_bytes([inc; 16]),
    }
}

/// A receiver: an importer in a temporary directory, trusting `trust`.
pub struct Receiver {
    pub dir: tempfile::TempDir,
    pub identity: Identity,
    pub importer: Importer,
    pub log: SqliteEventLog,
}

impl Receiver {
    pub fn new(n: u8, trust: TrustStore) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::generate();
        let importer = Importer::open(dir.path(), identity.clone(), trust)
            .unwrap()
            .clock(FixedClock(NOW));
        Receiver {
            dir,
            identity,
            importer,
            log: SqliteEventLog::in_memory(node(n)).unwrap(),
        }
    }

    pub fn recipient(&self) -> Recipient {
        self.identity.to_public()
    }

    /// Everything a refusal must leave as it was.
    pub fn snapshot(&self) -> Snapshot {
        let mut files: Vec<String> = std::fs::read_dir(self.dir.path().join("staging"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        Snapshot {
            hwm: self.log.high_water_marks(&tenant()).unwrap(),
            ledger: self
                .importer
                .imported()
                .unwrap()
                .into_iter()
                .map(|l| l.bundle_id.to_string())
                .collect(),
            staged: self
                .importer
                .staged()
                .unwrap()
                .into_iter()
                .map(|s| s.summary.bundle_id.to_string())
                .collect(),
            files,
            quarantined: self.importer.quarantined(None).unwrap().len(),
        }
    }

    /// Verifies and stages `path` expecting refusal with `code`; checks nothing changed.
    pub fn refuse(&self, path: &Path, code: &str) -> Rejection {
        let before = self.snapshot();
        let r = self
            .importer
            .verify(&self.log, &tenant(), path)
            .expect_err("verify must refuse");
        assert_eq!(r.code(), code, "{r}");
        let s = self
            .importer
            .stage(&self.log, &tenant(), path)
            .expect_err("stage must refuse");
        assert_eq!(s.code(), code, "{s}");
        assert_eq!(s.reason, r.reason);
        assert_eq!(self.snapshot(), before, "a refusal changed something");
        if code == "file_too_large" {
            assert_eq!(r.file_sha256, [0; 32], "an oversized file is not read");
        } else if path.exists() {
            let sha: [u8; 32] = sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(std::fs::read(path).unwrap()),
            )
            .into();
            assert_eq!(r.file_sha256, sha, "the rejection names the file's sha256");
        }
        r
    }

    /// Stages and activates with every event admitted.
    pub fn import(&self, path: &Path) -> nodus_sync::ActivateReport {
        let staged = self.importer.stage(&self.log, &tenant(), path).unwrap();
        self.importer
            .activate(&self.log, &staged.summary.bundle_id, &nodus_sync::AdmitAll)
            .unwrap()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub hwm: VersionVector,
    pub ledger: Vec<String>,
    pub staged: Vec<String>,
    pub files: Vec<String>,
    pub quarantined: usize,
}

pub fn export_to(
    log: &dyn TenantEventLog,
    since: &VersionVector,
    signer: &dyn BundleSigner,
    recipients: &[Recipient],
    dir: &Path,
    name: &str,
) -> (PathBuf, ExportReport) {
    export_with(
        &Exporter::new().clock(FixedClock(NOW - 60)),
        log,
        since,
        signer,
        recipients,
        dir,
        name,
    )
}

pub fn export_with(
    exporter: &Exporter,
    log: &dyn TenantEventLog,
    since: &VersionVector,
    signer: &dyn BundleSigner,
    recipients: &[Recipient],
    dir: &Path,
    name: &str,
) -> (PathBuf, ExportReport) {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let report = exporter
        .export(
            log,
            &tenant(),
            since,
            signer,
            recipients,
            Duration::from_secs(86_400),
            std::io::BufWriter::new(file),
        )
        .unwrap();
    (path, report)
}

/// Splits a bundle into (manifest bytes, signature, age payload).
pub fn split(bytes: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let len = u32::from_be_bytes(bytes[12..16].try_into().unwrap()) as usize;
    (
        bytes[16..16 + len].to_vec(),
        bytes[16 + len..16 + len + 64].to_vec(),
        bytes[16 + len + 64..].to_vec(),
    )
}

pub fn parse_manifest(bytes: &[u8]) -> Manifest {
    serde_json::from_slice(split(bytes).0.as_slice()).unwrap()
}

/// Writes a bundle by hand: `manifest` signed by `signer`, `plaintext` deflated and encrypted to
/// `recipients` — a sender that is trusted but builds whatever it likes.
pub fn craft(
    manifest: &Manifest,
    plaintext: &[u8],
    signer: &dyn BundleSigner,
    recipients: &[Recipient],
) -> Vec<u8> {
    let m = serde_json::to_vec(manifest).unwrap();
    let sig = signer.sign(&pae(PAYLOAD_TYPE, &m)).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(b"NODUSPKG\x00\x01\x00\x00");
    out.extend_from_slice(&(m.len() as u32).to_be_bytes());
    out.extend_from_slice(&m);
    out.extend_from_slice(&sig);
    out.extend_from_slice(&encrypt(plaintext, recipients));
    out
}

pub fn encrypt(plaintext: &[u8], recipients: &[Recipient]) -> Vec<u8> {
    let enc = nodus_sync::age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|r| r as &dyn nodus_sync::age::Recipient),
    )
    .unwrap();
    let mut ct = Vec::new();
    let mut w = enc.wrap_output(&mut ct).unwrap();
    let mut d = DeflateEncoder::new(Vec::new(), Compression::default());
    d.write_all(plaintext).unwrap();
    w.write_all(&d.finish().unwrap()).unwrap();
    w.finish().unwrap();
    ct
}

/// Decrypts a bundle's payload plaintext.
pub fn decrypt(bytes: &[u8], identity: &Identity) -> Vec<u8> {
    use std::io::Read;
    let (_, _, payload) = split(bytes);
    let d = nodus_sync::age::Decryptor::new(payload.as_slice()).unwrap();
    let r = d
        .decrypt(std::iter::once(identity as &dyn nodus_sync::age::Identity))
        .unwrap();
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(r)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Frames entries as the payload plaintext does.
pub fn frame(entries: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, bytes) in entries {
        out.push(*kind);
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// An `events` entry of `events`.
pub fn events_entry(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let b = e.canonical_bytes();
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}
