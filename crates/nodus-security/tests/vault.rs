//! The vault through its public API: known answers, cut-and-paste, byte flips, rotation, rewrap,
//! destroy (crypto-shredding, also in the file), persistence, wrong master key, truncated and
//! corrupt files, master-key sources, secrecy of key material, the trust store, round-trip laws and
//! nonce uniqueness.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use ed25519_dalek::{Signer, SigningKey};
use nodus_policy::TenantId;
use nodus_security::vault::{
    EnvelopeContext, HEADER_LEN, KeyAlgorithm, KeyId, KeyScope, KeyState, MasterKey, SecretVault,
    SoftVault, TAG_LEN, TrustStore, TrustVerdict, VaultError, envelope_from_text, envelope_to_text,
    key_id_for, parse_envelope_header,
};
use proptest::prelude::*;
use rusqlite::Connection;

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
    let n = nonce.as_slice().try_into().unwrap();
    let ct = c
        .encrypt(
            n,
            Payload {
                msg: SUNSCREEN,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(ct, expected);
    let pt = c
        .decrypt(
            n,
            Payload {
                msg: &ct,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(pt, SUNSCREEN);
    let mut bad = ct.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(
        c.decrypt(
            n,
            Payload {
                msg: &bad,
                aad: &aad
            }
        )
        .is_err()
    );
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
    let n = nonce.as_slice().try_into().unwrap();
    let ct = c
        .encrypt(
            n,
            Payload {
                msg: SUNSCREEN,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(ct, expected);
    let pt = c
        .decrypt(
            n,
            Payload {
                msg: &ct,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(pt, SUNSCREEN);
    assert!(c.decrypt(n, Payload { msg: &ct, aad: b"" }).is_err());
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
        let mut other = hx(msg);
        other.push(0);
        assert_eq!(
            ts.verify(&t, &id, &other, &s.to_bytes()).unwrap(),
            TrustVerdict::BadSignature
        );
    }
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn setup() -> (SoftVault, KeyId) {
    let v = SoftVault::in_memory(MasterKey::from_bytes([1; 32])).unwrap();
    let k = fields_key(&v, &acme());
    (v, k)
}

/// A tenant-scoped XChaCha20-Poly1305 key for the purpose `fields`.
fn fields_key(v: &SoftVault, t: &TenantId) -> KeyId {
    v.generate(
        &KeyScope::Tenant(t.clone()),
        "fields",
        KeyAlgorithm::XChaCha20Poly1305,
    )
    .unwrap()
    .id
}

fn notes_ctx(t: &TenantId) -> EnvelopeContext<'_> {
    EnvelopeContext {
        tenant: Some(t),
        table: "notes",
        entity_id: "n1",
        field: "body",
    }
}

#[test]
fn cut_and_paste_is_refused() {
    let (v, k) = setup();
    let t = acme();
    let globex = TenantId::new("globex").unwrap();
    let ctx = notes_ctx(&t);
    let ct = v.seal(&k, b"secret", &ctx).unwrap();
    assert_eq!(&*v.open(&ct, &ctx).unwrap(), b"secret");
    // Another tenant (or none): acme's key is refused outside acme's scope before any
    // decryption is tried (`tests/vault_scope.rs` has the whole rule).
    for other in [
        EnvelopeContext {
            tenant: Some(&globex),
            ..ctx
        },
        EnvelopeContext {
            tenant: None,
            ..ctx
        },
    ] {
        assert!(
            matches!(v.open(&ct, &other), Err(VaultError::ScopeMismatch { .. })),
            "{other:?}"
        );
    }
    // Another field, entity or table.
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
        // Length prefixes: shifting bytes between neighbouring fields is another context.
        EnvelopeContext {
            table: "note",
            entity_id: "sn1",
            ..ctx
        },
    ] {
        assert_eq!(
            v.open(&ct, &other).unwrap_err(),
            VaultError::Authentication,
            "{other:?}"
        );
    }
    // Another key id in the header: an existing key of the same tenant, and an unknown id.
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
    let mut unknown = ct.clone();
    unknown[2..18].copy_from_slice(&[0xee; 16]);
    assert_eq!(
        v.open(&unknown, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    // Another key version: an existing one, and one that does not exist.
    v.rotate(&k).unwrap();
    let mut bumped = ct.clone();
    bumped[18..22].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(
        v.open(&bumped, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    bumped[18..22].copy_from_slice(&99u32.to_be_bytes());
    assert_eq!(
        v.open(&bumped, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    // Another algorithm or format byte.
    let mut alg = ct.clone();
    alg[1] = KeyAlgorithm::Ed25519.byte();
    assert_eq!(v.open(&alg, &ctx).unwrap_err(), VaultError::Authentication);
    let mut format = ct.clone();
    format[0] = 2;
    assert_eq!(
        v.open(&format, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    // A ciphertext made by another vault (another key altogether).
    let (other_vault, other_key) = setup();
    let foreign = other_vault.seal(&other_key, b"secret", &ctx).unwrap();
    assert_eq!(
        v.open(&foreign, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    // Every single-byte change of header or body — all 255 other values of every byte — fails
    // with the same opaque error.
    assert_eq!(ct.len(), HEADER_LEN + 6 + TAG_LEN);
    for i in 0..ct.len() {
        for mask in 1..=255u8 {
            let mut b = ct.clone();
            b[i] ^= mask;
            assert_eq!(
                v.open(&b, &ctx).unwrap_err(),
                VaultError::Authentication,
                "byte {i} xor {mask:#04x}"
            );
        }
    }
    // Every truncation, and an extra trailing byte.
    for len in 0..ct.len() {
        assert_eq!(
            v.open(&ct[..len], &ctx).unwrap_err(),
            VaultError::Authentication,
            "truncated to {len}"
        );
    }
    let mut longer = ct.clone();
    longer.push(0);
    assert_eq!(
        v.open(&longer, &ctx).unwrap_err(),
        VaultError::Authentication
    );
    // Rewrap is held to the same rules.
    assert_eq!(
        v.rewrap(&ct, &EnvelopeContext { field: "x", ..ctx })
            .unwrap_err(),
        VaultError::Authentication
    );
    // Error text reveals nothing.
    let text = VaultError::Authentication.to_string();
    assert!(!text.contains("secret") && !text.contains(&k.to_string()));
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
    // What cannot be done to a destroyed version, and what stays possible.
    assert!(matches!(
        v.rewrap(&old, &ctx),
        Err(VaultError::KeyDestroyed { version: 1, .. })
    ));
    assert!(matches!(
        v.disable(&k, 1),
        Err(VaultError::KeyDestroyed { .. })
    ));
    assert!(matches!(
        v.destroy(&k, 1),
        Err(VaultError::KeyDestroyed { .. })
    ));
    assert!(matches!(
        v.disable(&k, 7),
        Err(VaultError::UnknownVersion { version: 7, .. })
    ));
    // A disabled version refuses rewrap too; enabling an enabled version is refused.
    let m3 = v.rotate(&k).unwrap();
    assert_eq!((m3.version, m3.rotated_from), (3, Some(2)));
    v.disable(&k, 2).unwrap();
    assert!(matches!(
        v.rewrap(&new, &ctx),
        Err(VaultError::KeyDisabled { version: 2, .. })
    ));
    v.enable(&k, 2).unwrap();
    assert!(matches!(
        v.enable(&k, 2),
        Err(VaultError::InvalidState { .. })
    ));
    assert!(matches!(
        v.disable(&k, 3),
        Err(VaultError::InvalidState { .. })
    ));
    // Rewrap moves version-2 data to version 3; the newest rotation is what seals.
    let moved = v.rewrap(&new, &ctx).unwrap();
    assert_eq!(parse_envelope_header(&moved).unwrap().key_version, 3);
    assert_eq!(&*v.open(&moved, &ctx).unwrap(), b"v2 data");
    assert_eq!(
        parse_envelope_header(&v.seal(&k, b"x", &ctx).unwrap())
            .unwrap()
            .key_version,
        3
    );
    // The destroyed-key error names the key and version, never material.
    let e = VaultError::KeyDestroyed {
        key: k.to_string(),
        version: 1,
    }
    .to_string();
    assert_eq!(e, format!("key `{k}` version 1 was destroyed"));
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
    // New signatures use version 2; the exported public keys verify them outside the vault.
    let sig2 = v.sign(&k, b"later").unwrap();
    let pk2 = v.public_key(&k, Some(2)).unwrap();
    assert_eq!(v.public_key(&k, Some(1)).unwrap(), pk1);
    ed25519_dalek::VerifyingKey::from_bytes(&pk2)
        .unwrap()
        .verify_strict(b"later", &ed25519_dalek::Signature::from_bytes(&sig2))
        .unwrap();
    assert_eq!(
        v.verify(&k, 1, b"later", &sig2),
        Err(VaultError::Authentication)
    );
    // Strict verification: the malleable twin (S + ℓ) of a valid signature is refused.
    assert_eq!(
        v.verify(&k, 2, b"later", &add_l_to_s(sig2)),
        Err(VaultError::Authentication)
    );
    // Destroying version 1 makes its signatures unverifiable by the vault and its key unexportable.
    v.destroy(&k, 1).unwrap();
    assert!(matches!(
        v.verify(&k, 1, b"hello", &sig),
        Err(VaultError::KeyDestroyed { version: 1, .. })
    ));
    assert!(matches!(
        v.public_key(&k, Some(1)),
        Err(VaultError::KeyDestroyed { .. })
    ));
    assert!(matches!(
        v.public_key(&fields, None),
        Err(VaultError::WrongAlgorithm { .. })
    ));
    assert!(matches!(
        v.seal(&k, b"m", &EnvelopeContext::system("notes", "n1", "body")),
        Err(VaultError::WrongAlgorithm { .. })
    ));
    // Trust stores name issuers by an id derived from the public key.
    assert_eq!(key_id_for(&pk2).len(), 16);
    assert_ne!(key_id_for(&pk1), key_id_for(&pk2));
}

/// Adds the group order ℓ to the S half of a signature: the same signature, non-canonically.
fn add_l_to_s(mut sig: [u8; 64]) -> [u8; 64] {
    let l: [u8; 32] =
        hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
            .unwrap()
            .try_into()
            .unwrap();
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
        sig[32 + i] = s as u8;
        carry = s >> 8;
    }
    sig
}

/// Reads the file at `p` (empty when it does not exist).
fn bytes_of(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn persistence_wrong_master_key_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let t = acme();
    let ctx = notes_ctx(&t);
    let signer = SigningKey::from_bytes(&[5; 32]);
    let revoked = SigningKey::from_bytes(&[6; 32]);
    let (k, s, sealed, sealed2, issuer, bad_issuer) = {
        let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
        let k = fields_key(&v, &t);
        let s = v
            .generate(&KeyScope::System, "audit.checkpoint", KeyAlgorithm::Ed25519)
            .unwrap()
            .id;
        let sealed = v.seal(&k, b"persisted", &ctx).unwrap();
        v.seal(&k, b"again", &ctx).unwrap();
        v.sign(&s, b"one").unwrap();
        v.sign(&s, b"two").unwrap();
        v.sign(&s, b"three").unwrap();
        v.rotate(&k).unwrap();
        let sealed2 = v.seal(&k, b"version two", &ctx).unwrap();
        v.rotate(&k).unwrap();
        v.disable(&k, 1).unwrap();
        v.destroy(&k, 2).unwrap();
        let ts = v.trust_store();
        let issuer = ts
            .add_issuer(&t, &signer.verifying_key().to_bytes(), None, Some(u64::MAX))
            .unwrap();
        let bad_issuer = ts
            .add_issuer(&t, &revoked.verifying_key().to_bytes(), None, None)
            .unwrap();
        assert_eq!(ts.revoke(&t, &bad_issuer).unwrap(), 1);
        (k, s, sealed, sealed2, issuer, bad_issuer)
    };
    // The wrong master key is refused with a clear error and changes nothing in the file.
    let before = bytes_of(&path);
    let e = SoftVault::open(&path, MasterKey::from_bytes([4; 32])).unwrap_err();
    assert_eq!(e, VaultError::WrongMasterKey);
    assert!(e.to_string().contains("wrong master key"), "{e}");
    assert_eq!(bytes_of(&path), before);
    assert!(bytes_of(&dir.path().join("vault.db-wal")).is_empty());
    // Reopened with the right one: keys, states, usage counts and the trust store are back.
    let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
    let metas: Vec<(u32, KeyState, u64, u64)> = v
        .list(Some(&KeyScope::Tenant(t.clone())))
        .unwrap()
        .iter()
        .map(|m| (m.version, m.state, m.encryptions, m.signatures))
        .collect();
    assert_eq!(
        metas,
        vec![
            (1, KeyState::Disabled, 2, 0),
            (2, KeyState::Destroyed, 1, 0),
            (3, KeyState::Active, 0, 0)
        ]
    );
    let sys = v.list(Some(&KeyScope::System)).unwrap();
    assert_eq!(
        (sys.len(), sys[0].id, sys[0].signatures, sys[0].state),
        (1, s, 3, KeyState::Active)
    );
    assert_eq!(
        v.find(&KeyScope::Tenant(t.clone()), "fields").unwrap(),
        Some(k)
    );
    assert!(matches!(
        v.open(&sealed, &ctx),
        Err(VaultError::KeyDisabled { version: 1, .. })
    ));
    assert!(matches!(
        v.open(&sealed2, &ctx),
        Err(VaultError::KeyDestroyed { version: 2, .. })
    ));
    v.enable(&k, 1).unwrap();
    assert_eq!(&*v.open(&sealed, &ctx).unwrap(), b"persisted");
    let ts = v.trust_store();
    let sig = signer.sign(b"manifest").to_bytes();
    assert_eq!(
        ts.verify(&t, &issuer, b"manifest", &sig).unwrap(),
        TrustVerdict::Trusted
    );
    assert_eq!(
        ts.verify(&t, &bad_issuer, b"m", &revoked.sign(b"m").to_bytes())
            .unwrap(),
        TrustVerdict::Revoked
    );
    assert_eq!(ts.revocation_version(&t).unwrap(), 1);
    // The revocation list stays monotonic across reopenings.
    assert_eq!(ts.revoke(&t, &issuer).unwrap(), 2);
    // Usage counted after a reopen adds to what was persisted.
    v.seal(&k, b"x", &ctx).unwrap();
    drop(v);
    let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
    let v3 = v
        .list(None)
        .unwrap()
        .into_iter()
        .find(|m| m.id == k && m.version == 3)
        .unwrap();
    assert_eq!(v3.encryptions, 1);
    assert_eq!(v.trust_store().revocation_version(&t).unwrap(), 2);
}

#[test]
fn a_lost_check_value_does_not_let_a_wrong_master_key_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let t = acme();
    let ctx = notes_ctx(&t);
    let sealed = {
        let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
        let k = fields_key(&v, &t);
        v.seal(&k, b"kept", &ctx).unwrap()
    };
    Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM vault_meta WHERE k = 'check'", [])
        .unwrap();
    let before = bytes_of(&path);
    assert_eq!(
        SoftVault::open(&path, MasterKey::from_bytes([4; 32])).unwrap_err(),
        VaultError::WrongMasterKey
    );
    assert_eq!(
        bytes_of(&path),
        before,
        "a wrong master key wrote to the file"
    );
    // The right key still opens it (and restores the check value).
    let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
    assert_eq!(&*v.open(&sealed, &ctx).unwrap(), b"kept");
    drop(v);
    assert_eq!(
        SoftVault::open(&path, MasterKey::from_bytes([4; 32])).unwrap_err(),
        VaultError::WrongMasterKey
    );
}

#[test]
fn destroy_removes_the_material_from_the_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let wal = dir.path().join("vault.db-wal");
    let t = acme();
    let ctx = notes_ctx(&t);
    let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
    let k = fields_key(&v, &t);
    let old = v.seal(&k, b"shred me", &ctx).unwrap();
    v.rotate(&k).unwrap();
    // Neighbours in the same database page.
    for purpose in ["a", "b", "c"] {
        let other = v
            .generate(&KeyScope::System, purpose, KeyAlgorithm::XChaCha20Poly1305)
            .unwrap();
        v.rotate(&other.id).unwrap();
    }
    let material: Vec<u8> = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT sealed FROM vault_keys WHERE id = ?1 AND version = 1",
            [k.to_string()],
            |r| r.get(0),
        )
        .unwrap();
    // The sealed key (its tail, so that a partly overwritten copy still counts).
    let material = &material[material.len() - 32..];
    assert!(contains(
        &[bytes_of(&path), bytes_of(&wal)].concat(),
        material
    ));
    v.destroy(&k, 1).unwrap();
    // Gone from the database file and from its write-ahead log while the vault is still open…
    assert!(
        !contains(&bytes_of(&path), material),
        "material left in the database file"
    );
    assert!(
        !contains(&bytes_of(&wal), material),
        "material left in the write-ahead log"
    );
    assert_eq!(
        v.open(&old, &ctx).unwrap_err(),
        VaultError::KeyDestroyed {
            key: k.to_string(),
            version: 1
        }
    );
    drop(v);
    // …and after a reopen, where the version is still destroyed.
    assert!(!contains(&bytes_of(&path), material));
    let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
    assert!(matches!(
        v.open(&old, &ctx),
        Err(VaultError::KeyDestroyed { version: 1, .. })
    ));
}

#[test]
fn truncated_or_corrupted_vault_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let t = acme();
    {
        let v = SoftVault::open(&path, MasterKey::from_bytes([3; 32])).unwrap();
        let k = fields_key(&v, &t);
        v.rotate(&k).unwrap();
        v.generate(&KeyScope::System, "sign", KeyAlgorithm::Ed25519)
            .unwrap();
        v.trust_store()
            .add_issuer(
                &t,
                &SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes(),
                None,
                None,
            )
            .unwrap();
    }
    let good = std::fs::read(&path).unwrap();
    let master = || MasterKey::from_bytes([3; 32]);
    let scratch = dir.path().join("scratch.db");
    let put = |bytes: &[u8]| {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", scratch.display()));
        }
        std::fs::write(&scratch, bytes).unwrap();
    };
    let contents = |v: &SoftVault| (v.list(None).unwrap(), v.trust_store().issuers(&t).unwrap());
    let expected = contents(&SoftVault::open(&path, master()).unwrap());
    assert_eq!((expected.0.len(), expected.1.len()), (3, 1));
    // Truncated anywhere (an empty file included): an error — or, when the cut only removed
    // bytes SQLite reads back as zeros anyway, the complete vault. Never a silently emptier one.
    let page = 4096;
    let mut cuts: Vec<usize> = vec![0, 1, 15, 16, 99, 100, 512, 1000];
    cuts.extend((1..good.len() / page).map(|p| p * page));
    cuts.extend((1..good.len() / page).map(|p| p * page + 7));
    cuts.extend((1..good.len() / page).map(|p| p * page + 2048));
    let mut refused = 0;
    for len in cuts {
        put(&good[..len]);
        match SoftVault::open(&scratch, master()) {
            Err(VaultError::Corrupt(_)) => refused += 1,
            Ok(v) => assert_eq!(contents(&v), expected, "truncated to {len}: data lost"),
            Err(e) => panic!("truncated to {len}: unexpected {e:?}"),
        }
    }
    assert!(refused >= 16, "only {refused} truncations refused");
    // A byte flipped anywhere (sampled): an error or a vault that still works — never a panic.
    for at in (0..good.len()).step_by(61) {
        let mut b = good.clone();
        b[at] ^= 0x5a;
        put(&b);
        if let Ok(v) = SoftVault::open(&scratch, master()) {
            let (keys, _) = contents(&v);
            // Whatever opens is authentic: every listed version's material unsealed.
            assert!(keys.len() <= 3);
        }
    }
    // Targeted damage: each gives an error that names what is wrong, and never material.
    let damage = |sql: &str| -> VaultError {
        put(&good);
        Connection::open(&scratch)
            .unwrap()
            .execute(sql, [])
            .unwrap();
        SoftVault::open(&scratch, master()).unwrap_err()
    };
    put(&good);
    {
        let c = Connection::open(&scratch).unwrap();
        let mut m: Vec<u8> = c
            .query_row("SELECT sealed FROM vault_keys WHERE version = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        m[30] ^= 1;
        c.execute("UPDATE vault_keys SET sealed = ?1 WHERE version = 2", [m])
            .unwrap();
    }
    let e = SoftVault::open(&scratch, master()).unwrap_err();
    assert!(
        matches!(&e, VaultError::Corrupt(m) if m.contains("version 2: material does not unseal")),
        "{e:?}"
    );
    for sql in [
        "UPDATE vault_keys SET purpose = 'other' WHERE version = 2",
        "UPDATE vault_keys SET scope = 'tenant:globex' WHERE version = 1",
        "UPDATE vault_keys SET version = 5 WHERE version = 2",
        "UPDATE vault_keys SET alg = 9",
        "UPDATE vault_keys SET state = 9",
        "UPDATE vault_keys SET sealed = NULL WHERE state = 0",
        "UPDATE vault_keys SET id = 'not-a-key-id' WHERE version = 2",
    ] {
        let e = damage(sql);
        assert!(matches!(e, VaultError::Corrupt(_)), "{sql}: {e:?}");
        assert!(e.to_string().contains("key `"), "{sql}: {e}");
    }
    // A damaged check value reads as a wrong master key (the two cannot be told apart).
    assert_eq!(
        damage("UPDATE vault_meta SET v = zeroblob(40) WHERE k = 'check'"),
        VaultError::WrongMasterKey
    );
    // Not a database at all.
    put(&[0x5a; 8192]);
    assert!(matches!(
        SoftVault::open(&scratch, master()),
        Err(VaultError::Corrupt(_))
    ));
    // A fresh path still creates a new vault.
    SoftVault::open(&dir.path().join("new.db"), master()).unwrap();
}

#[test]
fn master_key_sources() {
    let dir = tempfile::tempdir().unwrap();
    let key = [0xabu8; 32];
    // A vault sealed with the raw bytes opens with the same key from every source.
    let vault_path = dir.path().join("vault.db");
    drop(SoftVault::open(&vault_path, MasterKey::from_bytes(key)).unwrap());
    let opens = |mk: MasterKey| SoftVault::open(&vault_path, mk).map(|_| ());
    let hexfile = dir.path().join("k.hex");
    std::fs::write(&hexfile, format!("{}\n", hex::encode(key))).unwrap();
    opens(MasterKey::from_file(&hexfile).unwrap()).unwrap();
    let upper = dir.path().join("k.HEX");
    std::fs::write(&upper, hex::encode_upper(key)).unwrap();
    opens(MasterKey::from_file(&upper).unwrap()).unwrap();
    let b64file = dir.path().join("k.b64");
    std::fs::write(&b64file, format!("{}\n", b64(&key))).unwrap();
    opens(MasterKey::from_file(&b64file).unwrap()).unwrap();
    let raw = dir.path().join("k.bin");
    std::fs::write(&raw, key).unwrap();
    opens(MasterKey::from_file(&raw).unwrap()).unwrap();
    // Wrong lengths and garbage name the source, never the content.
    for (name, content) in [
        ("short", "abcd".to_owned()),
        ("long", hex::encode([0xcd; 33])),
        ("b64short", b64(&[0xef; 16])),
        ("garbage", "not a key at all!".to_owned()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &content).unwrap();
        let e = MasterKey::from_file(&p).unwrap_err();
        assert!(matches!(e, VaultError::InvalidMasterKey { .. }));
        let e = e.to_string();
        assert!(e.contains(name) && !e.contains(&content), "{e}");
    }
    assert!(MasterKey::from_file(&dir.path().join("missing")).is_err());
    let e = MasterKey::from_env("NODUS_TEST_SURELY_UNSET_VAR")
        .unwrap_err()
        .to_string();
    assert!(e.contains("$NODUS_TEST_SURELY_UNSET_VAR"), "{e}");
    // From the environment (hex and base64), in a child process: this one must not set variables.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "master_key_from_env_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env(ENV_CHILD_VAULT, &vault_path)
        .env("NODUS_TEST_MASTER_HEX", hex::encode(key))
        .env("NODUS_TEST_MASTER_B64", b64(&key))
        .env("NODUS_TEST_MASTER_BAD", "zz".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Never printed.
    assert_eq!(format!("{:?}", MasterKey::from_bytes(key)), "MasterKey(..)");
}

const ENV_CHILD_VAULT: &str = "NODUS_TEST_ENV_CHILD_VAULT";

/// The child half of `master_key_sources` (does nothing unless spawned by it).
#[test]
#[ignore]
fn master_key_from_env_child() {
    let Ok(path) = std::env::var(ENV_CHILD_VAULT) else {
        return;
    };
    let path = Path::new(&path);
    for var in ["NODUS_TEST_MASTER_HEX", "NODUS_TEST_MASTER_B64"] {
        SoftVault::open(path, MasterKey::from_env(var).unwrap()).unwrap();
    }
    let e = MasterKey::from_env("NODUS_TEST_MASTER_BAD")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("$NODUS_TEST_MASTER_BAD") && !e.contains("zzzz"),
        "{e}"
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Collects the messages of `WARN` events.
struct WarnCapture(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for WarnCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_generated_development_master_key_warns_loudly() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = tracing::subscriber::with_default(WarnCapture(seen.clone()), || {
        (
            MasterKey::generate_for_development().unwrap(),
            MasterKey::generate_for_development().unwrap(),
        )
    });
    let warnings = seen.lock().unwrap().clone();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("DEVELOPMENT master key") && warnings[0].contains("production"),
        "{warnings:?}"
    );
    // Two generated keys differ: a vault sealed with one refuses the other.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dev.db");
    drop(SoftVault::open(&p, a).unwrap());
    assert_eq!(
        SoftVault::open(&p, b).unwrap_err(),
        VaultError::WrongMasterKey
    );
}

#[test]
fn key_material_never_shows_in_debug_or_errors() {
    let master = [0x3cu8; 32];
    let v = SoftVault::in_memory(MasterKey::from_bytes(master)).unwrap();
    let t = acme();
    let k = fields_key(&v, &t);
    let s = v
        .generate(&KeyScope::System, "sign", KeyAlgorithm::Ed25519)
        .unwrap()
        .id;
    let pk = v.public_key(&s, None).unwrap();
    let debug = format!(
        "{v:?} {:?} {:?} {:?}",
        v.list(None).unwrap(),
        v.trust_store(),
        MasterKey::from_bytes(master)
    );
    for needle in [
        hex::encode(master),
        hex::encode(&master[..4]),
        b64(&master),
        format!("{:?}", &master[..4]),
    ] {
        assert!(!debug.contains(&needle), "{needle} in {debug}");
    }
    // Metadata is listed; the only key bytes exported are public ones, on request.
    assert!(debug.contains(&k.to_string()));
    assert!(!debug.contains(&hex::encode(pk)));
    // Errors name keys and versions only.
    let ctx = notes_ctx(&t);
    let errors = [
        v.open(&[0u8; 80], &ctx).unwrap_err(),
        v.sign(&k, b"m").unwrap_err(),
        v.destroy(&k, 1).unwrap_err(),
        SoftVault::in_memory(MasterKey::from_bytes(master))
            .unwrap()
            .seal(&k, b"m", &ctx)
            .unwrap_err(),
    ];
    for e in errors {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(&hex::encode(master)), "{text}");
    }
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
    let mall = add_l_to_s(sig);
    assert_eq!(
        ts2.verify(&t, &id2, b"m", &mall).unwrap(),
        TrustVerdict::BadSignature
    );
    // A signature of the wrong length, or made by another key, is a bad signature.
    assert_eq!(
        ts2.verify(&t, &id2, b"m", &sig[..63]).unwrap(),
        TrustVerdict::BadSignature
    );
    let impostor = SigningKey::from_bytes(&[8; 32]).sign(b"m").to_bytes();
    assert_eq!(
        ts2.verify(&t, &id2, b"m", &impostor).unwrap(),
        TrustVerdict::BadSignature
    );
    // Revocation is monotonic: re-adding a revoked issuer leaves it revoked, every new revocation
    // bumps the version, revoking again changes nothing, and tenants are independent.
    assert_eq!(ts.add_issuer(&t, &pk, None, None).unwrap(), id);
    assert_eq!(
        ts.verify_at(&t, &id, b"m", &sig, 1_500).unwrap(),
        TrustVerdict::Revoked
    );
    let other_pk = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    let other_id = ts.add_issuer(&t, &other_pk, None, None).unwrap();
    assert_eq!(ts.revoke(&t, &other_id).unwrap(), 2);
    assert_eq!(ts.revoke(&t, "never-added").unwrap(), 3);
    assert_eq!(ts.revoke(&t, &id).unwrap(), 3);
    assert_eq!(ts.revocation_version(&t).unwrap(), 3);
    let other_tenant = TenantId::new("other").unwrap();
    assert_eq!(ts.revocation_version(&other_tenant).unwrap(), 0);
    let listed: Vec<(String, bool)> = ts
        .issuers(&t)
        .unwrap()
        .into_iter()
        .map(|i| (i.key_id, i.revoked))
        .collect();
    let mut want = vec![(id.clone(), true), (other_id, true)];
    want.sort();
    assert_eq!(listed, want);
    // Points that are not on the curve are refused too.
    let not_a_point = (2u8..=255)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
        .unwrap();
    assert!(matches!(
        ts.add_issuer(&t, &not_a_point, None, None),
        Err(VaultError::BadPublicKey(_))
    ));
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

/// A million seals in the default run (nodus-security is built optimised even in the dev
/// profile, see the root `Cargo.toml`).
#[test]
fn no_repeated_nonce_in_1_000_000_seals() {
    assert_unique_nonces(1_000_000);
}

/// Context parts from a tiny alphabet, so that naive concatenations would often collide.
fn part() -> impl Strategy<Value = String> {
    "[ab:]{0,3}"
}

fn tenant() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ab]{1,2}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn seal_open_round_trip_and_any_context_change_fails(
        pt in proptest::collection::vec(any::<u8>(), 0..2048),
        t1 in tenant(), table1 in part(), entity1 in part(), field1 in part(),
        t2 in tenant(), table2 in part(), entity2 in part(), field2 in part(),
    ) {
        let v = SoftVault::in_memory(MasterKey::from_bytes([1; 32])).unwrap();
        let (tid1, tid2) = (t1.map(|t| TenantId::new(t).unwrap()), t2.map(|t| TenantId::new(t).unwrap()));
        // A key of the first context's scope (keys seal only for their own scope).
        let k = match &tid1 {
            Some(t) => fields_key(&v, t),
            None => v.generate(&KeyScope::System, "fields", KeyAlgorithm::XChaCha20Poly1305).unwrap().id,
        };
        let ctx = EnvelopeContext { tenant: tid1.as_ref(), table: &table1, entity_id: &entity1, field: &field1 };
        let other = EnvelopeContext { tenant: tid2.as_ref(), table: &table2, entity_id: &entity2, field: &field2 };
        let ct = v.seal(&k, &pt, &ctx).unwrap();
        prop_assert_eq!(ct.len(), HEADER_LEN + pt.len() + TAG_LEN);
        prop_assert_eq!(&**v.open(&ct, &ctx).unwrap(), pt.as_slice());
        // The text form round-trips.
        prop_assert_eq!(envelope_from_text(&envelope_to_text(&ct)).unwrap(), ct.clone());
        // Any other context fails: another scope with `ScopeMismatch` before any decryption, the
        // same scope with the opaque error; the same context (however built) opens.
        if other == ctx {
            prop_assert_eq!(&**v.open(&ct, &other).unwrap(), pt.as_slice());
        } else if other.tenant != ctx.tenant {
            prop_assert_eq!(v.open(&ct, &other).unwrap_err().code(), "ScopeMismatch");
        } else {
            prop_assert_eq!(v.open(&ct, &other).unwrap_err(), VaultError::Authentication);
        }
        // And so does rewrap.
        let re = v.rewrap(&ct, &ctx).unwrap();
        prop_assert_eq!(&**v.open(&re, &ctx).unwrap(), pt.as_slice());
        prop_assert_ne!(parse_envelope_header(&re).unwrap().nonce, parse_envelope_header(&ct).unwrap().nonce);
    }

    #[test]
    fn arbitrary_input_never_panics_and_never_opens(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        text in ".{0,64}",
    ) {
        let (v, k) = setup();
        let t = acme();
        let ctx = notes_ctx(&t);
        prop_assert!(v.open(&bytes, &ctx).is_err());
        // Even with a valid header naming a real key, random bytes do not authenticate.
        let mut forged = v.seal(&k, b"", &ctx).unwrap();
        forged.truncate(HEADER_LEN);
        forged.extend_from_slice(&bytes);
        prop_assert_eq!(v.open(&forged, &ctx).unwrap_err(), VaultError::Authentication);
        let _ = envelope_from_text(&text);
        let _ = envelope_from_text(&format!("nodus:v1:{text}"));
        let _ = parse_envelope_header(&bytes);
    }
}
