//! The vault through its public API: known answers, cut-and-paste, byte flips, rotation, rewrap,
//! destroy, persistence, wrong master key, corrupt files, round-trip laws and nonce uniqueness.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use ed25519_dalek::{Signer, SigningKey};
use nodus_policy::TenantId;
use nodus_security::vault::{
    EnvelopeContext, HEADER_LEN, KeyAlgorithm, KeyScope, KeyState, MasterKey, SecretVault,
    SoftVault, TrustStore, TrustVerdict, VaultError, envelope_from_text, envelope_to_text,
    key_id_for, parse_envelope_header,
};
use proptest::prelude::*;

const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";

fn hx(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

#[test]
fn rfc8439_2_8_2_chacha20_poly1305() {
    let key = hx("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = hx("070000004041424344454647");
    let aad = hx("50515253c0c1c2c3c4c5c6c7");
    let expected = hx("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b
         1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9d
         e576d26586cec64b6116 1ae10b594f09e26a7e902ecbd0600691");
    let c = ChaCha20Poly1305::new_from_slice(&key).unwrap();
    let ct = c
        .encrypt(
            nonce.as_slice().try_into().unwrap(),
            Payload {
                msg: SUNSCREEN,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(ct, expected);
}

#[test]
fn xchacha20_poly1305_draft_a_3() {
    let key = hx("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = hx("404142434445464748494a4b4c4d4e4f5051525354555657");
    let aad = hx("50515253c0c1c2c3c4c5c6c7");
    let expected = hx("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39
         ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9
         768812f615c68b13b52e c0875924c1c7987947deafd8780acf49");
    let c = XChaCha20Poly1305::new_from_slice(&key).unwrap();
    let ct = c
        .encrypt(
            nonce.as_slice().try_into().unwrap(),
            Payload {
                msg: SUNSCREEN,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(ct, expected);
}

#[test]
fn rfc8032_7_1_ed25519_tests_1_to_3() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];
    for (sk, pk, msg, sig) in cases {
        let sk = SigningKey::from_bytes(&hx(sk).try_into().unwrap());
        assert_eq!(sk.verifying_key().to_bytes().to_vec(), hx(pk));
        let s = sk.sign(&hx(msg));
        assert_eq!(s.to_bytes().to_vec(), hx(sig));
        // And through the trust store's strict verification.
        let ts = TrustStore::in_memory().unwrap();
        let t = TenantId::new("t").unwrap();
        let id = ts
            .add_issuer(&t, &hx(pk).try_into().unwrap(), None, None)
            .unwrap();
        assert_eq!(
            ts.verify(&t, &id, &hx(msg), &s.to_bytes()).unwrap(),
            TrustVerdict::Trusted
        );
    }
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn setup() -> (SoftVault, nodus_security::vault::KeyId) {
    let v = SoftVault::in_memory(MasterKey::from_bytes([1; 32])).unwrap();
    let k = v
        .generate(
            &KeyScope::Tenant(acme()),
            "fields",
            KeyAlgorithm::XChaCha20Poly1305,
        )
        .unwrap();
    (v, k.id)
}

#[test]
fn cut_and_paste_is_refused() {
    let (v, k) = setup();
    let t = acme();
    let globex = TenantId::new("globex").unwrap();
    let ctx = EnvelopeContext {
        tenant: Some(&t),
        table: "notes",
        entity_id: "n1",
        field: "body",
    };
    let ct = v.seal(&k, b"secret", &ctx).unwrap();
    assert_eq!(&*v.open(&ct, &ctx).unwrap(), b"secret");
    for other in [
        EnvelopeContext {
            field: "title",
            ..ctx
        },
        EnvelopeContext {
            entity_id: "n2",
            ..ctx
        },
        EnvelopeContext {
            table: "todos",
            ..ctx
        },
        EnvelopeContext {
            tenant: Some(&globex),
            ..ctx
        },
        EnvelopeContext {
            tenant: None,
            ..ctx
        },
    ] {
        assert_eq!(
            v.open(&ct, &other).unwrap_err(),
            VaultError::Authentication,
            "{other:?}"
        );
    }
    // Another key id or version in the header.
    let k2 = v
        .generate(
            &KeyScope::Tenant(t.clone()),
            "other",
            KeyAlgorithm::XChaCha20Poly1305,
        )
        .unwrap();
    let mut moved = ct.clone();
    moved[2..18].copy_from_slice(k2.id.as_bytes());
    assert_eq!(
        v.open(&moved, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    v.rotate(&k).unwrap();
    let mut bumped = ct.clone();
    bumped[21] = 2;
    assert_eq!(
        v.open(&bumped, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    // Every single-bit flip of header or body fails, with the same opaque error.
    for i in 0..ct.len() {
        let mut b = ct.clone();
        b[i] ^= 0x01;
        assert_eq!(
            v.open(&b, &ctx).unwrap_err(),
            VaultError::Authentication,
            "flip at byte {i}"
        );
    }
    // Truncation.
    assert_eq!(
        v.open(&ct[..HEADER_LEN + 3], &ctx).unwrap_err(),
        VaultError::Authentication
    );
    // Error text reveals nothing.
    assert!(!VaultError::Authentication.to_string().contains("secret"));
}

#[test]
fn rotation_rewrap_and_destroy() {
    let (v, k) = setup();
    let t = acme();
    let ctx = EnvelopeContext {
        tenant: Some(&t),
        table: "notes",
        entity_id: "n1",
        field: "body",
    };
    let old = v.seal(&k, b"v1 data", &ctx).unwrap();
    assert_eq!(parse_envelope_header(&old).unwrap().key_version, 1);
    let m = v.rotate(&k).unwrap();
    assert_eq!((m.version, m.rotated_from), (2, Some(1)));
    assert_eq!(&*v.open(&old, &ctx).unwrap(), b"v1 data");
    let new = v.seal(&k, b"v2 data", &ctx).unwrap();
    assert_eq!(parse_envelope_header(&new).unwrap().key_version, 2);
    let rewrapped = v.rewrap(&old, &ctx).unwrap();
    assert_eq!(parse_envelope_header(&rewrapped).unwrap().key_version, 2);
    assert_eq!(&*v.open(&rewrapped, &ctx).unwrap(), b"v1 data");
    let states: Vec<(u32, KeyState)> = v
        .list(None)
        .unwrap()
        .into_iter()
        .filter(|m| m.id == k)
        .map(|m| (m.version, m.state))
        .collect();
    assert_eq!(
        states,
        vec![(1, KeyState::DecryptOnly), (2, KeyState::Active)]
    );
    // The active version cannot be destroyed or disabled.
    assert!(matches!(
        v.destroy(&k, 2),
        Err(VaultError::InvalidState { .. })
    ));
    // Disable, enable.
    v.disable(&k, 1).unwrap();
    assert_eq!(
        v.open(&old, &ctx).unwrap_err(),
        VaultError::KeyDisabled {
            key: k.to_string(),
            version: 1
        }
    );
    v.enable(&k, 1).unwrap();
    assert_eq!(&*v.open(&old, &ctx).unwrap(), b"v1 data");
    // Destroy: old data gone for good, newer data still decrypts.
    v.destroy(&k, 1).unwrap();
    assert_eq!(
        v.open(&old, &ctx).unwrap_err(),
        VaultError::KeyDestroyed {
            key: k.to_string(),
            version: 1
        }
    );
    assert_eq!(&*v.open(&new, &ctx).unwrap(), b"v2 data");
    assert_eq!(&*v.open(&rewrapped, &ctx).unwrap(), b"v1 data");
    assert!(matches!(
        v.enable(&k, 1),
        Err(VaultError::KeyDestroyed { .. })
    ));
    // Text form.
    let text = envelope_to_text(&new);
    assert!(text.starts_with("nodus:v1:"));
    assert_eq!(envelope_from_text(&text).unwrap(), new);
    assert_eq!(
        envelope_from_text("nodus:v2:AAAA"),
        Err(VaultError::BadTextEnvelope)
    );
}

#[test]
fn signing_keys_and_usage_counts() {
    let v = SoftVault::in_memory(MasterKey::from_bytes([2; 32])).unwrap();
    let k = v
        .generate(&KeyScope::System, "audit.checkpoint", KeyAlgorithm::Ed25519)
        .unwrap()
        .id;
    assert!(matches!(
        v.generate(&KeyScope::System, "audit.checkpoint", KeyAlgorithm::Ed25519),
        Err(VaultError::KeyExists { .. })
    ));
    assert_eq!(
        v.find(&KeyScope::System, "audit.checkpoint").unwrap(),
        Some(k)
    );
    let sig = v.sign(&k, b"hello").unwrap();
    v.verify(&k, 1, b"hello", &sig).unwrap();
    assert_eq!(
        v.verify(&k, 1, b"hellO", &sig),
        Err(VaultError::Authentication)
    );
    let pk1 = v.public_key(&k, None).unwrap();
    v.rotate(&k).unwrap();
    assert_ne!(v.public_key(&k, None).unwrap(), pk1);
    v.verify(&k, 1, b"hello", &sig).unwrap(); // verify-only version still verifies
    let fields = v
        .generate(&KeyScope::System, "x", KeyAlgorithm::XChaCha20Poly1305)
        .unwrap()
        .id;
    assert!(matches!(
        v.sign(&fields, b"m"),
        Err(VaultError::WrongAlgorithm { .. })
    ));
    let meta = v.list(Some(&KeyScope::System)).unwrap();
    let v1 = meta.iter().find(|m| m.id == k && m.version == 1).unwrap();
    assert_eq!(v1.signatures, 1);
}

#[test]
fn persistence_wrong_master_key_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let t = acme();
    let ctx = EnvelopeContext {
        tenant: Some(&t),
        table: "notes",
        entity_id: "n1",
        field: "body",
    };
    let (k, sealed, issuer) = {
        let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
        let k = v
            .generate(
                &KeyScope::Tenant(t.clone()),
                "fields",
                KeyAlgorithm::XChaCha20Poly1305,
            )
            .unwrap()
            .id;
        let sealed = v.seal(&k, b"persisted", &ctx).unwrap();
        v.seal(&k, b"again", &ctx).unwrap();
        v.rotate(&k).unwrap();
        v.disable(&k, 1).unwrap();
        let issuer = SigningKey::from_bytes(&[5; 32]);
        let id = v
            .trust_store()
            .add_issuer(&t, &issuer.verifying_key().to_bytes(), None, None)
            .unwrap();
        v.trust_store().revoke(&t, "deadbeef").unwrap();
        (k, sealed, (issuer, id))
    };
    // Wrong master key: refused, nothing changed.
    let before = std::fs::read(&path).unwrap();
    assert_eq!(
        SoftVault::open(&path, MasterKey::from_bytes([4; 32])).unwrap_err(),
        VaultError::WrongMasterKey
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
    let metas: Vec<_> = v.list(None).unwrap();
    assert_eq!(
        metas
            .iter()
            .map(|m| (m.version, m.state, m.encryptions))
            .collect::<Vec<_>>(),
        vec![(1, KeyState::Disabled, 2), (2, KeyState::Active, 0)]
    );
    v.enable(&k, 1).unwrap();
    assert_eq!(&*v.open(&sealed, &ctx).unwrap(), b"persisted");
    let sig = issuer.0.sign(b"manifest").to_bytes();
    assert_eq!(
        v.trust_store()
            .verify(&t, &issuer.1, b"manifest", &sig)
            .unwrap(),
        TrustVerdict::Trusted
    );
    assert_eq!(v.trust_store().revocation_version(&t).unwrap(), 1);
    drop(v);
    // A corrupt or truncated file is an error, not a panic.
    let bytes = std::fs::read(&path).unwrap();
    let trunc = dir.path().join("trunc.db");
    std::fs::write(&trunc, &bytes[..bytes.len().min(1000)]).unwrap();
    assert!(SoftVault::open(&trunc, MasterKey::from_bytes([3; 32])).is_err());
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    assert!(matches!(
        SoftVault::open(&garbage, MasterKey::from_bytes([3; 32])),
        Err(VaultError::Corrupt(_))
    ));
}

#[test]
fn master_key_sources() {
    let dir = tempfile::tempdir().unwrap();
    let hexfile = dir.path().join("k.hex");
    std::fs::write(&hexfile, format!("{}\n", "ab".repeat(32))).unwrap();
    MasterKey::from_file(&hexfile).unwrap();
    let raw = dir.path().join("k.bin");
    std::fs::write(&raw, [9u8; 32]).unwrap();
    MasterKey::from_file(&raw).unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "abcd").unwrap();
    let e = MasterKey::from_file(&short).unwrap_err().to_string();
    assert!(e.contains("short") && !e.contains("abcd"), "{e}");
    assert!(MasterKey::from_env("NODUS_TEST_SURELY_UNSET_VAR").is_err());
    assert_eq!(
        format!("{:?}", MasterKey::from_bytes([1; 32])),
        "MasterKey(..)"
    );
}

#[test]
fn trust_store_verdicts() {
    let ts = TrustStore::in_memory().unwrap();
    let t = acme();
    let sk = SigningKey::from_bytes(&[7; 32]);
    let pk = sk.verifying_key().to_bytes();
    let id = ts.add_issuer(&t, &pk, Some(1_000), Some(2_000)).unwrap();
    assert_eq!(id, key_id_for(&pk));
    let sig = sk.sign(b"m").to_bytes();
    assert_eq!(
        ts.verify_at(&t, &id, b"m", &sig, 1_500).unwrap(),
        TrustVerdict::Trusted
    );
    assert_eq!(
        ts.verify_at(&t, &id, b"m", &sig, 500).unwrap(),
        TrustVerdict::NotYetValid
    );
    assert_eq!(
        ts.verify_at(&t, &id, b"m", &sig, 2_000).unwrap(),
        TrustVerdict::Expired
    );
    assert_eq!(
        ts.verify_at(&t, &id, b"x", &sig, 1_500).unwrap(),
        TrustVerdict::BadSignature
    );
    assert_eq!(
        ts.verify_at(&t, "nope", b"m", &sig, 1_500).unwrap(),
        TrustVerdict::UnknownIssuer
    );
    assert_eq!(
        ts.verify_at(&TenantId::new("other").unwrap(), &id, b"m", &sig, 1_500)
            .unwrap(),
        TrustVerdict::UnknownIssuer
    );
    assert_eq!(ts.revoke(&t, &id).unwrap(), 1);
    assert_eq!(
        ts.revoke(&t, &id).unwrap(),
        1,
        "revoking twice is idempotent and the version monotonic"
    );
    assert_eq!(
        ts.verify_at(&t, &id, b"m", &sig, 1_500).unwrap(),
        TrustVerdict::Revoked
    );
    // Weak keys are refused: the identity point.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(
        ts.add_issuer(&t, &identity, None, None),
        Err(VaultError::BadPublicKey(_))
    ));
    // A malleable signature (S + ℓ) is refused by strict verification.
    let ts2 = TrustStore::in_memory().unwrap();
    let id2 = ts2.add_issuer(&t, &pk, None, None).unwrap();
    let mut mall = sig;
    let l: [u8; 32] =
        hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
            .unwrap()
            .try_into()
            .unwrap();
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(mall[32 + i]) + u16::from(l[i]) + carry;
        mall[32 + i] = s as u8;
        carry = s >> 8;
    }
    assert_eq!(
        ts2.verify(&t, &id2, b"m", &mall).unwrap(),
        TrustVerdict::BadSignature
    );
}

/// Seals `n` tiny plaintexts and checks that no nonce repeats.
fn assert_unique_nonces(n: usize) {
    let (v, k) = setup();
    let t = acme();
    let ctx = EnvelopeContext {
        tenant: Some(&t),
        table: "t",
        entity_id: "e",
        field: "f",
    };
    let mut seen = HashSet::with_capacity(n);
    for _ in 0..n {
        let ct = v.seal(&k, b"x", &ctx).unwrap();
        assert!(
            seen.insert(parse_envelope_header(&ct).unwrap().nonce),
            "repeated nonce"
        );
    }
    let meta = v.list(None).unwrap();
    assert_eq!(meta[0].encryptions, n as u64);
}

#[test]
fn no_repeated_nonce_in_100_000_seals() {
    assert_unique_nonces(100_000);
}

/// The full million (about 3 s in release): `cargo test --release -p nodus-security --test vault -- --ignored`.
#[test]
#[ignore]
fn no_repeated_nonce_in_1_000_000_seals() {
    assert_unique_nonces(1_000_000);
}

proptest! {
    #[test]
    fn seal_open_round_trip_and_any_context_change_fails(
        pt in proptest::collection::vec(any::<u8>(), 0..512),
        table in "[a-z]{1,8}", entity in "[a-z0-9]{1,8}", field in "[a-z]{1,8}", which in 0usize..4,
    ) {
        let (v, k) = setup();
        let t = acme();
        let ctx = EnvelopeContext { tenant: Some(&t), table: &table, entity_id: &entity, field: &field };
        let ct = v.seal(&k, &pt, &ctx).unwrap();
        prop_assert_eq!(&**v.open(&ct, &ctx).unwrap(), pt.as_slice());
        let other_t = TenantId::new("zz").unwrap();
        let changed_table = format!("{table}x");
        let changed_entity = format!("{entity}x");
        let changed_field = format!("{field}x");
        let changed = match which {
            0 => EnvelopeContext { tenant: Some(&other_t), ..ctx },
            1 => EnvelopeContext { table: &changed_table, ..ctx },
            2 => EnvelopeContext { entity_id: &changed_entity, ..ctx },
            _ => EnvelopeContext { field: &changed_field, ..ctx },
        };
        prop_assert_eq!(v.open(&ct, &changed).unwrap_err(), VaultError::Authentication);
    }
}
