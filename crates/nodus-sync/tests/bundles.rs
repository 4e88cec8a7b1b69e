//! Round trips, and one test per rejection reason: each asserts the reason and that nothing
//! changed (log high-water marks, ledger, staged bundles, staging directory, quarantine).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use nodus_fabric::{EventHash, TenantEventLog, VersionVector};
use nodus_sync::age::x25519::Identity;
use nodus_sync::format::{EntryKind, Hex32, ManifestChain, ManifestEntry};
use nodus_sync::{
    AdmitAll, Decision, Exporter, FixedClock, Limits, RejectReason, TrustStore, TrustedKey,
};

fn trusting(seed: u8) -> TrustStore {
    TrustStore::new().with(signer(seed).trusted_key())
}

#[test]
fn round_trip_one_recipient() {
    let a = log_with(1, 50);
    let b = Receiver::new(2, trusting(1));
    let (path, report) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    assert_eq!(report.events, 50);

    let summary = b.importer.verify(&b.log, &tenant(), &path).unwrap();
    assert_eq!(summary.events, 50);
    assert_eq!(summary.new_events, 50);
    assert_eq!(summary.file_sha256, report.file_sha256);
    // verify is a dry run
    assert!(b.log.high_water_marks(&tenant()).unwrap().is_empty());
    assert!(b.importer.staged().unwrap().is_empty());

    let staged = b.importer.stage(&b.log, &tenant(), &path).unwrap();
    assert_eq!(staged.summary.bundle_id, report.bundle_id);
    assert!(staged.path.exists());
    // The staged file is the file as received: still encrypted, no plaintext on disk.
    assert_eq!(
        std::fs::read(&staged.path).unwrap(),
        std::fs::read(&path).unwrap()
    );
    assert_eq!(b.importer.staged().unwrap().len(), 1);
    // staging is idempotent
    let again = b.importer.stage(&b.log, &tenant(), &path).unwrap();
    assert_eq!(again.summary.bundle_id, staged.summary.bundle_id);
    assert_eq!(b.importer.staged().unwrap().len(), 1);

    let act = b
        .importer
        .activate(&b.log, &report.bundle_id, &AdmitAll)
        .unwrap();
    assert_eq!(act.applied, 50);
    assert!(act.quarantined.is_empty());
    assert_eq!(
        b.log.high_water_marks(&tenant()).unwrap(),
        a.high_water_marks(&tenant()).unwrap()
    );
    assert!(b.importer.is_imported(&report.bundle_id).unwrap());
    assert!(b.importer.staged().unwrap().is_empty());
    assert!(!staged.path.exists());
    assert_eq!(
        b.importer.imported().unwrap()[0].file_sha256,
        report.file_sha256
    );
}

#[test]
fn round_trip_three_recipients_each_can_import() {
    let a = log_with(1, 20);
    let rs: Vec<Receiver> = (2..5).map(|n| Receiver::new(n, trusting(1))).collect();
    let recipients: Vec<_> = rs.iter().map(Receiver::recipient).collect();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &recipients,
        dir.path(),
        "a.noduspkg",
    );
    for r in &rs {
        let act = r.import(&path);
        assert_eq!(act.applied, 20);
        assert_eq!(
            r.log.high_water_marks(&tenant()).unwrap(),
            a.high_water_marks(&tenant()).unwrap()
        );
    }
}

#[test]
fn incremental_bundle_with_prerequisite_and_opaque_entries() {
    let a = log_with(1, 10);
    let b = Receiver::new(2, trusting(1));
    let (p1, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "1.noduspkg",
    );
    b.import(&p1);
    append(&a, 5);
    let ack = b.log.high_water_marks(&tenant()).unwrap();
    let exporter = Exporter::new()
        .clock(FixedClock(NOW - 10))
        .with_trust_material(b"public cert".to_vec())
        .with_crdt_delta(vec![1, 2, 3]);
    let (p2, r2) = export_with(
        &exporter,
        &a,
        &ack,
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "2.noduspkg",
    );
    assert_eq!(r2.events, 5);
    assert_eq!(r2.chains[0].from, 11);
    let act = b.import(&p2);
    assert_eq!(act.applied, 5);
    assert_eq!(act.opaque.len(), 2);
    assert_eq!(act.opaque[0].kind, EntryKind::Trust);
    assert_eq!(act.opaque[0].bytes, b"public cert");
    assert_eq!(act.opaque[1].bytes, vec![1, 2, 3]);
    assert_eq!(
        b.log.high_water_marks(&tenant()).unwrap(),
        a.high_water_marks(&tenant()).unwrap()
    );
}

#[test]
fn quarantine_keeps_events_and_release_applies_them() {
    let a = log_with(1, 6);
    let b = Receiver::new(2, trusting(1));
    let (path, report) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.importer.stage(&b.log, &tenant(), &path).unwrap();
    let deny_seq_4 = |_: &nodus_policy::TenantId, e: &nodus_fabric::Event| {
        if e.seq == 4 {
            Decision::Quarantine("label above the tenant ceiling".into())
        } else {
            Decision::Apply
        }
    };
    let act = b
        .importer
        .activate(&b.log, &report.bundle_id, &deny_seq_4)
        .unwrap();
    assert_eq!(act.applied, 3);
    assert_eq!(act.quarantined.len(), 1);
    assert_eq!(
        act.pending.len(),
        2,
        "5 and 6 wait behind the quarantined 4"
    );
    let q = b.importer.quarantined(None).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].event.seq, 4);
    assert_eq!(q[0].reason, "label above the tenant ceiling");
    assert_eq!(q[0].bundle_id, report.bundle_id);

    // Still refused under the same policy: nothing moves, the reason is refreshed.
    let r = b.importer.requarantine(&b.log, &deny_seq_4).unwrap();
    assert!(r.released.is_empty());
    assert_eq!(r.remaining, 1);
    // Released by an operator's decision.
    let r = b.importer.release(&b.log, &[q[0].id], &AdmitAll).unwrap();
    assert_eq!(r.released.len(), 1);
    assert_eq!(r.applied, 3, "4, then 5 and 6 it unblocked");
    assert!(b.importer.quarantined(None).unwrap().is_empty());
    assert_eq!(
        b.log.high_water_marks(&tenant()).unwrap(),
        a.high_water_marks(&tenant()).unwrap()
    );
}

// ---- one test per rejection reason ----

#[test]
fn refuses_file_too_large() {
    let a = log_with(1, 5);
    let mut b = Receiver::new(2, trusting(1));
    let (path, report) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.importer = b.importer.limits(Limits {
        max_file: report.file_len - 1,
        ..Limits::default()
    });
    let r = b.refuse(&path, "file_too_large");
    assert!(r.bundle_id.is_none());
}

#[test]
fn refuses_manifest_too_large() {
    let a = log_with(1, 5);
    let mut b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.importer = b.importer.limits(Limits {
        max_manifest: 100,
        ..Limits::default()
    });
    b.refuse(&path, "manifest_too_large");
}

#[test]
fn refuses_entry_too_large_and_payload_too_large_and_too_many() {
    let a = log_with(1, 5);
    let mut b = Receiver::new(2, trusting(1));
    let (path, report) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.importer = b.importer.limits(Limits {
        max_entry: 10,
        ..Limits::default()
    });
    let r = b.refuse(&path, "entry_too_large");
    assert_eq!(r.bundle_id, Some(report.bundle_id));
    b.importer = b.importer.limits(Limits {
        max_payload: report.payload_len - 1,
        ..Limits::default()
    });
    b.refuse(&path, "payload_too_large");
    b.importer = b.importer.limits(Limits {
        max_chains: 0,
        ..Limits::default()
    });
    b.refuse(&path, "too_many");
}

#[test]
fn refuses_malformed_and_unsupported_version() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let bytes = std::fs::read(&path).unwrap();
    let bad = b.dir.path().join("bad.noduspkg");

    let mut m = bytes.clone();
    m[0] = b'X';
    std::fs::write(&bad, &m).unwrap();
    b.refuse(&bad, "malformed");

    let mut m = bytes.clone();
    m[9] = 2;
    std::fs::write(&bad, &m).unwrap();
    b.refuse(&bad, "unsupported_version");

    std::fs::write(&bad, &bytes[..10]).unwrap();
    b.refuse(&bad, "malformed");

    // A manifest that is valid JSON but not canonical (a space added), header adjusted.
    let (man, sig, payload) = split(&bytes);
    let mut spaced = b"{ ".to_vec();
    spaced.extend_from_slice(&man[1..]);
    let mut m = b"NODUSPKG\x00\x01\x00\x00".to_vec();
    m.extend_from_slice(&(spaced.len() as u32).to_be_bytes());
    m.extend_from_slice(&spaced);
    m.extend_from_slice(&sig);
    m.extend_from_slice(&payload);
    std::fs::write(&bad, &m).unwrap();
    let r = b.refuse(&bad, "malformed");
    assert!(r.to_string().contains("canonical"), "{r}");
}

#[test]
fn refuses_untrusted_key() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, TrustStore::new());
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.refuse(&path, "untrusted_key");
    // The right key id with another public key is not trusted either.
    let b = Receiver::new(
        2,
        TrustStore::new().with(TrustedKey::new("node-1", [9; 32])),
    );
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.refuse(&path, "untrusted_key");
}

#[test]
fn refuses_revoked_key() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.importer.update_trust(|t| {
        t.revoke("node-1");
    });
    b.refuse(&path, "revoked_key");
}

#[test]
fn refuses_a_key_trusted_for_other_tenants_only() {
    let a = log_with(1, 5);
    let scoped = |tenants: &[&str]| {
        TrustStore::new().with(signer(1).trusted_key().for_tenants(tenants.iter().copied()))
    };
    let b = Receiver::new(2, scoped(&["globex"]));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let r = b.refuse(&path, "key_not_for_tenant");
    assert_eq!(
        r.reason.to_string(),
        "sender key `node-1` is not trusted for tenant `acme`"
    );
    // Trusted for the bundle's tenant (among others): accepted.
    let b = Receiver::new(2, scoped(&["globex", "acme"]));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    assert_eq!(b.import(&path).applied, 5);
}

#[test]
fn refuses_expired_key() {
    let a = log_with(1, 5);
    let b = Receiver::new(
        2,
        TrustStore::new().with(signer(1).trusted_key().not_after(NOW - 1)),
    );
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.refuse(&path, "key_expired");
}

#[test]
fn refuses_bad_signature() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let mut bytes = std::fs::read(&path).unwrap();
    let (man, _, _) = split(&bytes);
    bytes[16 + man.len() + 5] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    b.refuse(&path, "bad_signature");
}

#[test]
fn refuses_a_manifest_signed_by_another_trusted_key_claiming_the_first() {
    // Key 3 is trusted too, but signs a manifest naming key 1's id and public key.
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1).with(signer(3).trusted_key()));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let bytes = std::fs::read(&path).unwrap();
    let (man, _, payload) = split(&bytes);
    let sig = nodus_sync::BundleSigner::sign(
        &signer(3),
        &nodus_sync::format::pae(nodus_sync::format::PAYLOAD_TYPE, &man),
    )
    .unwrap();
    let mut m = bytes[..16 + man.len()].to_vec();
    m.extend_from_slice(&sig);
    m.extend_from_slice(&payload);
    std::fs::write(&path, &m).unwrap();
    b.refuse(&path, "bad_signature");
}

#[test]
fn refuses_expired_bundle() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let exporter = Exporter::new().clock(FixedClock(NOW - 90_000));
    let (path, _) = export_with(
        &exporter,
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.refuse(&path, "expired");
}

#[test]
fn refuses_bundle_created_in_the_future() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let exporter = Exporter::new().clock(FixedClock(NOW + 3600));
    let (path, _) = export_with(
        &exporter,
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.refuse(&path, "created_in_future");
    // Within the skew it is fine.
    let exporter = Exporter::new().clock(FixedClock(NOW + 60));
    let (path, _) = export_with(
        &exporter,
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "b.noduspkg",
    );
    b.importer.verify(&b.log, &tenant(), &path).unwrap();
}

#[test]
fn refuses_replay() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, report) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let copy = b.dir.path().join("copy.noduspkg");
    std::fs::copy(&path, &copy).unwrap();
    b.import(&path);
    let r = b.refuse(&copy, "replayed");
    assert_eq!(r.bundle_id, Some(report.bundle_id));
}

#[test]
fn refuses_wrong_tenant() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let other = nodus_policy::TenantId::new("globex").unwrap();
    let before = b.snapshot();
    let r = b.importer.verify(&b.log, &other, &path).unwrap_err();
    assert_eq!(r.code(), "wrong_tenant");
    let r = b.importer.stage(&b.log, &other, &path).unwrap_err();
    assert_eq!(r.code(), "wrong_tenant");
    assert_eq!(b.snapshot(), before);
}

#[test]
fn refuses_wrong_recipient() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let someone = Identity::generate().to_public();
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[someone],
        b.dir.path(),
        "a.noduspkg",
    );
    b.refuse(&path, "not_a_recipient");
}

#[test]
fn refuses_payload_that_does_not_decrypt() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    b.refuse(&path, "decrypt_failed");
    // Bytes appended after the age stream are refused too.
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "b.noduspkg",
    );
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"more");
    std::fs::write(&path, &bytes).unwrap();
    b.refuse(&path, "decrypt_failed");
}

#[test]
fn refuses_the_recipient_listed_but_not_encrypted_to() {
    // A trusted sender lists the receiver in the manifest but encrypts to someone else.
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let bytes = std::fs::read(&path).unwrap();
    let plain = decrypt(&bytes, &b.identity);
    let forged = craft(
        &parse_manifest(&bytes),
        &plain,
        &signer(1),
        &[Identity::generate().to_public()],
    );
    std::fs::write(&path, forged).unwrap();
    b.refuse(&path, "decrypt_failed");
}

#[test]
fn refuses_tampered_entry() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let bytes = std::fs::read(&path).unwrap();
    let mut plain = decrypt(&bytes, &b.identity);
    // Re-encrypted by someone who can decrypt (a recipient), with one byte of an event changed.
    let n = plain.len();
    plain[n - 40] ^= 1;
    let (man, sig, _) = split(&bytes);
    let mut m = bytes[..16].to_vec();
    m.extend_from_slice(&man);
    m.extend_from_slice(&sig);
    m.extend_from_slice(&encrypt(&plain, &[b.recipient()]));
    std::fs::write(&path, &m).unwrap();
    let r = b.refuse(&path, "entry_digest");
    assert!(matches!(r.reason, RejectReason::EntryDigest { index: 0 }));
}

#[test]
fn refuses_mix_and_match() {
    // The payload of one bundle under the signed manifest of another.
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (p1, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "1.noduspkg",
    );
    let other = log_with(1, 5);
    let (p2, _) = export_to(
        &other,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "2.noduspkg",
    );
    let b1 = std::fs::read(&p1).unwrap();
    let b2 = std::fs::read(&p2).unwrap();
    let (man, sig, _) = split(&b1);
    let (_, _, payload2) = split(&b2);
    let mut m = b1[..16].to_vec();
    m.extend_from_slice(&man);
    m.extend_from_slice(&sig);
    m.extend_from_slice(&payload2);
    let mixed = b.dir.path().join("mixed.noduspkg");
    std::fs::write(&mixed, &m).unwrap();
    let r = b.importer.verify(&b.log, &tenant(), &mixed).unwrap_err();
    assert!(matches!(r.code(), "entry_digest" | "entry_length"), "{r}");
    b.refuse(&mixed, r.code());
}

#[test]
fn refuses_entry_length_mismatch() {
    // A trusted sender whose frame declares another length than its manifest.
    let b = Receiver::new(2, trusting(1));
    let events = chain_events(chain(7, 7), 3, "x");
    let entry = events_entry(&events);
    let manifest = manifest_for(
        &b,
        &[(chain(7, 7), 1, 3, EventHash::ZERO, events[2].hash)],
        &[(EntryKind::Events, &entry)],
    );
    let mut plain = frame(&[(1, entry.clone())]);
    plain[8] ^= 1; // the frame's length
    let path = b.dir.path().join("x.noduspkg");
    std::fs::write(
        &path,
        craft(&manifest, &plain, &signer(1), &[b.recipient()]),
    )
    .unwrap();
    b.refuse(&path, "entry_length");
}

/// A manifest for hand-made bundles.
fn manifest_for(
    b: &Receiver,
    chains: &[(nodus_fabric::ChainId, u64, u64, EventHash, EventHash)],
    entries: &[(EntryKind, &Vec<u8>)],
) -> nodus_sync::format::Manifest {
    let s = signer(1);
    nodus_sync::format::Manifest {
        bundle_id: "0f0e0d0c0b0a09080706050403020100".parse().unwrap(),
        chains: chains
            .iter()
            .enumerate()
            .map(|(i, (c, from, to, prereq, head))| ManifestChain {
                entry: i as u32,
                from: *from,
                head_hash: *head,
                incarnation: c.incarnation,
                node_id: c.node_id,
                prereq_hash: *prereq,
                to: *to,
            })
            .collect(),
        compression: "deflate".into(),
        created_at: NOW - 10,
        entries: entries
            .iter()
            .map(|(kind, bytes)| ManifestEntry {
                kind: *kind,
                len: bytes.len() as u64,
                sha256: Hex32(sha256(bytes)),
            })
            .collect(),
        expires_at: NOW + 1000,
        format: 1,
        payload_len: entries.iter().map(|(_, b)| 9 + b.len() as u64).sum(),
        recipients: vec![Hex32(nodus_sync::format::recipient_fingerprint(
            &b.recipient(),
        ))],
        sender: nodus_sync::format::ManifestSender {
            key_id: nodus_sync::BundleSigner::key_id(&s).to_owned(),
            public_key: Hex32(nodus_sync::BundleSigner::public_key(&s)),
        },
        tenant: tenant(),
    }
}

#[test]
fn refuses_missing_prerequisite() {
    let a = log_with(1, 10);
    let b = Receiver::new(2, trusting(1));
    let mut since = a.high_water_marks(&tenant()).unwrap();
    let chain = *since.keys().next().unwrap();
    let h5 = a.read_chain(&tenant(), chain, 5, 1).unwrap()[0].hash;
    since.insert(chain, nodus_fabric::ChainHead { seq: 5, hash: h5 });
    let (path, _) = export_to(
        &a,
        &since,
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let r = b.refuse(&path, "missing_prerequisite");
    assert_eq!(
        r.reason,
        RejectReason::MissingPrerequisite {
            chain,
            need: 5,
            have: 0
        }
    );
}

#[test]
fn refuses_broken_chain() {
    // Digests are right (a trusted sender signed them), the links are not.
    let b = Receiver::new(2, trusting(1));
    let mut events = chain_events(chain(7, 7), 4, "x");
    events[2].prev_hash = EventHash::from_bytes([1; 32]);
    events[2].hash = events[2].compute_hash();
    let entry = events_entry(&events);
    let manifest = manifest_for(
        &b,
        &[(chain(7, 7), 1, 4, EventHash::ZERO, events[3].hash)],
        &[(EntryKind::Events, &entry)],
    );
    let path = b.dir.path().join("x.noduspkg");
    std::fs::write(
        &path,
        craft(
            &manifest,
            &frame(&[(1, entry)]),
            &signer(1),
            &[b.recipient()],
        ),
    )
    .unwrap();
    let r = b.refuse(&path, "broken_chain");
    assert!(
        matches!(r.reason, RejectReason::BrokenChain { seq: 3, .. }),
        "{r}"
    );
}

#[test]
fn refuses_equivocation() {
    // The receiver holds version "x" of chain 7; the sender has version "y".
    let c = chain(7, 7);
    let a = log_with(1, 0);
    a.ingest(&tenant(), chain_events(c, 4, "y")).unwrap();
    let b = Receiver::new(2, trusting(1));
    b.log.ingest(&tenant(), chain_events(c, 2, "x")).unwrap();
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    let r = b.refuse(&path, "equivocation");
    assert_eq!(r.reason, RejectReason::Equivocation { chain: c, seq: 1 });
    // An incremental bundle built on another predecessor than the receiver's.
    let mut since = VersionVector::new();
    let theirs = chain_events(c, 2, "y");
    since.insert(
        c,
        nodus_fabric::ChainHead {
            seq: 2,
            hash: theirs[1].hash,
        },
    );
    let (path, _) = export_to(
        &a,
        &since,
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "b.noduspkg",
    );
    let r = b.refuse(&path, "equivocation");
    assert_eq!(r.reason, RejectReason::Equivocation { chain: c, seq: 2 });
}

#[test]
fn refuses_extending_the_receivers_own_chain() {
    let b = Receiver::new(2, trusting(1));
    let own = b.log.node().chain();
    let a = log_with(1, 0);
    a.ingest(&tenant(), chain_events(own, 3, "forged")).unwrap();
    let (path, _) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.refuse(&path, "local_chain");
}

#[test]
fn refuses_activation_of_an_unknown_bundle_and_io() {
    let b = Receiver::new(2, trusting(1));
    let before = b.snapshot();
    let id = "00000000000000000000000000000001".parse().unwrap();
    let r = b.importer.activate(&b.log, &id, &AdmitAll).unwrap_err();
    assert_eq!(r.code(), "not_staged");
    assert_eq!(b.snapshot(), before);
    b.refuse(&b.dir.path().join("missing.noduspkg"), "io");
}

#[test]
fn activation_re_verifies_expiry() {
    let a = log_with(1, 5);
    let b = Receiver::new(2, trusting(1));
    let (path, report) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.importer.stage(&b.log, &tenant(), &path).unwrap();
    let later = b.importer;
    let importer = later.clock(FixedClock(NOW + 2 * 86_400));
    let r = importer
        .activate(&b.log, &report.bundle_id, &AdmitAll)
        .unwrap_err();
    assert_eq!(r.code(), "expired");
    assert!(b.log.high_water_marks(&tenant()).unwrap().is_empty());
    assert!(!importer.is_imported(&report.bundle_id).unwrap());
    assert_eq!(importer.staged().unwrap().len(), 1, "still staged");
}

#[test]
fn every_reason_has_a_distinct_code() {
    let c = chain(1, 1);
    let id = "00000000000000000000000000000001".parse().unwrap();
    let reasons = vec![
        RejectReason::FileTooLarge { size: 1, max: 0 },
        RejectReason::ManifestTooLarge { len: 1, max: 0 },
        RejectReason::EntryTooLarge {
            index: 0,
            len: 1,
            max: 0,
        },
        RejectReason::PayloadTooLarge { len: 1, max: 0 },
        RejectReason::TooMany {
            what: "chains",
            count: 1,
            max: 0,
        },
        RejectReason::Malformed("x".into()),
        RejectReason::UnsupportedVersion(2),
        RejectReason::UntrustedKey { key_id: "k".into() },
        RejectReason::RevokedKey { key_id: "k".into() },
        RejectReason::KeyExpired {
            key_id: "k".into(),
            not_after: 0,
        },
        RejectReason::BadSignature,
        RejectReason::Expired {
            expires_at: 0,
            now: 1,
        },
        RejectReason::CreatedInFuture {
            created_at: 2,
            now: 1,
        },
        RejectReason::Replayed,
        RejectReason::WrongTenant {
            expected: tenant(),
            found: tenant(),
        },
        RejectReason::NotARecipient,
        RejectReason::Decrypt("x".into()),
        RejectReason::EntryLength {
            index: 0,
            detail: "x".into(),
        },
        RejectReason::EntryDigest { index: 0 },
        RejectReason::MissingPrerequisite {
            chain: c,
            need: 1,
            have: 0,
        },
        RejectReason::BrokenChain {
            chain: c,
            seq: 1,
            detail: "x".into(),
        },
        RejectReason::Equivocation { chain: c, seq: 1 },
        RejectReason::LocalChain { chain: c },
        RejectReason::NotStaged(id),
        RejectReason::Io("x".into()),
        RejectReason::Storage("x".into()),
    ];
    let mut codes: Vec<_> = reasons.iter().map(RejectReason::code).collect();
    for r in &reasons {
        let msg = r.to_string();
        assert!(msg.chars().next().unwrap().is_lowercase(), "{msg}");
    }
    codes.sort_unstable();
    let n = codes.len();
    codes.dedup();
    assert_eq!(codes.len(), n);
}

#[test]
fn refuses_lamport_not_above_the_receivers_predecessor() {
    let c = chain(7, 7);
    let b = Receiver::new(2, trusting(1));
    let held = chain_events(c, 2, "x");
    b.log.ingest(&tenant(), held.clone()).unwrap();
    // Seq 3 links to the receiver's seq 2 but its lamport (1) is not above seq 2's (2).
    let mut e3 = chain_events(c, 3, "x").pop().unwrap();
    e3.lamport = 1;
    e3.hash = e3.compute_hash();
    let entry = events_entry(std::slice::from_ref(&e3));
    let manifest = manifest_for(
        &b,
        &[(c, 3, 3, held[1].hash, e3.hash)],
        &[(EntryKind::Events, &entry)],
    );
    let path = b.dir.path().join("x.noduspkg");
    std::fs::write(
        &path,
        craft(
            &manifest,
            &frame(&[(1, entry)]),
            &signer(1),
            &[b.recipient()],
        ),
    )
    .unwrap();
    let r = b.refuse(&path, "broken_chain");
    assert!(r.to_string().contains("lamport"), "{r}");
}

#[test]
fn staged_lists_and_discard_removes() {
    let a = log_with(1, 3);
    let b = Receiver::new(2, trusting(1));
    let (p1, r1) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "1.noduspkg",
    );
    let (p2, r2) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "2.noduspkg",
    );
    let s1 = b.importer.stage(&b.log, &tenant(), &p1).unwrap();
    b.importer.stage(&b.log, &tenant(), &p2).unwrap();
    let mut ids: Vec<_> = b
        .importer
        .staged()
        .unwrap()
        .iter()
        .map(|s| s.summary.bundle_id)
        .collect();
    ids.sort();
    let mut want = vec![r1.bundle_id, r2.bundle_id];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(s1.summary.chains[0].new_events, 3);
    assert!(b.importer.discard(&r1.bundle_id).unwrap());
    assert!(!b.importer.discard(&r1.bundle_id).unwrap());
    assert!(!s1.path.exists());
    assert_eq!(b.importer.staged().unwrap().len(), 1);
    // The other one still activates; afterwards the first one's events are all duplicates.
    let act = b
        .importer
        .activate(&b.log, &r2.bundle_id, &AdmitAll)
        .unwrap();
    assert_eq!(act.applied, 3);
    let s1 = b.importer.stage(&b.log, &tenant(), &p1).unwrap();
    assert_eq!(s1.summary.new_events, 0);
    let act = b
        .importer
        .activate(&b.log, &r1.bundle_id, &AdmitAll)
        .unwrap();
    assert_eq!(act.applied, 0);
    assert_eq!(b.importer.imported().unwrap().len(), 2);
}

#[test]
fn requarantine_releases_what_the_new_policy_allows() {
    let a = log_with(1, 4);
    let b = Receiver::new(2, trusting(1));
    let (path, report) = export_to(
        &a,
        &VersionVector::new(),
        &signer(1),
        &[b.recipient()],
        b.dir.path(),
        "a.noduspkg",
    );
    b.importer.stage(&b.log, &tenant(), &path).unwrap();
    let deny_all = |_: &nodus_policy::TenantId, _: &nodus_fabric::Event| {
        Decision::Quarantine("unknown type `object.created`".into())
    };
    let act = b
        .importer
        .activate(&b.log, &report.bundle_id, &deny_all)
        .unwrap();
    assert_eq!(act.applied, 0);
    assert_eq!(act.quarantined.len(), 4);
    assert!(b.log.high_water_marks(&tenant()).unwrap().is_empty());
    assert!(b.importer.is_imported(&report.bundle_id).unwrap());
    let r = b.importer.requarantine(&b.log, &AdmitAll).unwrap();
    assert_eq!(r.released.len(), 4);
    assert_eq!(r.applied, 4);
    assert_eq!(r.remaining, 0);
    assert_eq!(
        b.log.high_water_marks(&tenant()).unwrap(),
        a.high_water_marks(&tenant()).unwrap()
    );
}
