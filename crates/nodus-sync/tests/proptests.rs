//! The parser and verifier never panic and never accept a modified bundle: truncations, bit
//! flips anywhere in the file, oversized declared lengths, appended bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::OnceLock;

use common::*;
use nodus_fabric::VersionVector;
use nodus_sync::{Exporter, FixedClock, TrustStore};
use proptest::prelude::*;

struct Fixture {
    receiver: Receiver,
    bytes: Vec<u8>,
    path: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let a = log_with(1, 8);
        let receiver = Receiver::new(2, TrustStore::new().with(signer(1).trusted_key()));
        // Two recipients, so the age header holds a stanza this receiver does not use.
        let other = nodus_sync::age::x25519::Identity::generate().to_public();
        let exporter = Exporter::new()
            .clock(FixedClock(NOW - 60))
            .with_trust_material(b"cert".to_vec());
        let (path, _) = export_with(
            &exporter,
            &a,
            &VersionVector::new(),
            &signer(1),
            &[receiver.recipient(), other],
            receiver.dir.path(),
            "good.noduspkg",
        );
        let bytes = std::fs::read(&path).unwrap();
        receiver
            .importer
            .verify(&receiver.log, &tenant(), &path)
            .expect("the unmodified bundle verifies");
        Fixture {
            receiver,
            bytes,
            path: std::env::temp_dir(),
        }
    })
}

fn refused(modified: &[u8]) {
    let f = fixture();
    assert_ne!(modified, f.bytes.as_slice());
    let dir = tempfile::tempdir_in(&f.path).unwrap();
    let path = dir.path().join("m.noduspkg");
    std::fs::write(&path, modified).unwrap();
    let r = f
        .receiver
        .importer
        .verify(&f.receiver.log, &tenant(), &path);
    assert!(r.is_err(), "a modified bundle was accepted");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn truncation_is_refused(cut in 0.0f64..1.0) {
        let b = &fixture().bytes;
        let at = ((b.len() as f64) * cut) as usize;
        refused(&b[..at.min(b.len() - 1)]);
    }

    #[test]
    fn bit_flip_anywhere_is_refused(pos in 0.0f64..1.0, bit in 0u8..8) {
        let mut b = fixture().bytes.clone();
        let at = (((b.len() as f64) * pos) as usize).min(b.len() - 1);
        b[at] ^= 1 << bit;
        refused(&b);
    }

    #[test]
    fn bit_flip_in_header_manifest_or_signature_is_refused(pos in 0usize..2000, bit in 0u8..8) {
        let mut b = fixture().bytes.clone();
        let len = u32::from_be_bytes(b[12..16].try_into().unwrap()) as usize;
        let at = pos % (16 + len + 64);
        b[at] ^= 1 << bit;
        refused(&b);
    }

    #[test]
    fn oversized_declared_manifest_length_is_refused(len in any::<u32>()) {
        let mut b = fixture().bytes.clone();
        let old = u32::from_be_bytes(b[12..16].try_into().unwrap());
        prop_assume!(len != old);
        b[12..16].copy_from_slice(&len.to_be_bytes());
        refused(&b);
    }

    #[test]
    fn appended_or_inserted_bytes_are_refused(extra in proptest::collection::vec(any::<u8>(), 1..64), pos in 0.0f64..1.0) {
        let b = &fixture().bytes;
        let mut appended = b.clone();
        appended.extend_from_slice(&extra);
        refused(&appended);
        let at = ((b.len() as f64) * pos) as usize;
        let mut inserted = b[..at].to_vec();
        inserted.extend_from_slice(&extra);
        inserted.extend_from_slice(&b[at..]);
        refused(&inserted);
    }

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut with_magic = b"NODUSPKG\x00\x01\x00\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        refused(&bytes);
        refused(&with_magic);
    }
}
