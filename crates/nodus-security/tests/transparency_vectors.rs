//! Known answers for the audit log's building blocks, through the public API: the RFC 6962 test
//! tree of the Certificate Transparency / transparency-dev suites (roots, every published inclusion
//! and consistency proof, their corrupted variants), a from-the-RFC reference implementation that
//! every proof must match for trees up to 64 leaves, and the signed-note vectors of c2sp.org and
//! golang.org/x/mod.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use nodus_security::audit::merkle::{
    Hash, Tree, TreeError, empty_root, leaf_hash, node_hash, root_of, verify_consistency,
    verify_inclusion,
};
use nodus_security::audit::note::{
    NoteError, checkpoint_body, key_id, parse_checkpoint_body, parse_verifier_key, signature_line,
    verifier_key, verify_note,
};
use sha2::{Digest, Sha256};

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// The leaves of the standard 8-leaf test tree.
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Its leaf hashes (level 0 of the published node hashes).
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// The roots of its first 1..=8 leaves.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// The published inclusion proofs, with 0-based leaf indexes: (index, size, proof).
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    let v = |s: &[&str]| s.iter().map(|x| h(x)).collect::<Vec<_>>();
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            v(&[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]),
        ),
        (
            5,
            8,
            v(&[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
        (
            2,
            3,
            v(&["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        ),
        (
            1,
            5,
            v(&[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]),
        ),
    ]
}

/// The published consistency proofs: (size1, size2, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    let v = |s: &[&str]| s.iter().map(|x| h(x)).collect::<Vec<_>>();
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            v(&[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]),
        ),
        (
            6,
            8,
            v(&[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
        (
            2,
            5,
            v(&[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]),
        ),
        (
            6,
            7,
            v(&[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]),
        ),
    ]
}

fn test_tree() -> Tree {
    let mut t = Tree::new();
    for l in LEAVES {
        t.push(leaf_hash(&hex::decode(l).unwrap()));
    }
    t
}

#[test]
fn rfc6962_hashes_and_roots() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let t = test_tree();
    assert_eq!(t.root(0).unwrap(), empty_root());
    for (i, want) in LEAF_HASHES.iter().enumerate() {
        assert_eq!(t.leaf(i as u64).unwrap(), h(want), "leaf {i}");
    }
    // Node hash: SHA-256(0x01 ‖ left ‖ right); the two-leaf root is one.
    assert_eq!(
        node_hash(&h(LEAF_HASHES[0]), &h(LEAF_HASHES[1])),
        h(ROOTS[1])
    );
    assert_eq!(
        node_hash(&h(LEAF_HASHES[2]), &h(LEAF_HASHES[3])),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e")
    );
    for (i, want) in ROOTS.iter().enumerate() {
        let size = i as u64 + 1;
        assert_eq!(t.root(size).unwrap(), h(want), "root of size {size}");
        let leaves: Vec<Hash> = (0..size).map(|j| t.leaf(j).unwrap()).collect();
        assert_eq!(root_of(&leaves), h(want));
    }
    assert_eq!(t.root(9), Err(TreeError::SizeTooLarge { size: 9, len: 8 }));
}

#[test]
fn rfc6962_inclusion_proofs_and_their_corruptions() {
    let t = test_tree();
    let some_hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (index, size, proof) in inclusion_vectors() {
        assert_eq!(
            t.inclusion_proof(index, size).unwrap(),
            proof,
            "{index}/{size}"
        );
        let leaf = t.leaf(index).unwrap();
        let root = h(ROOTS[size as usize - 1]);
        assert!(verify_inclusion(&leaf, index, size, &proof, &root));
        let fails = |i: u64, s: u64, l: &Hash, r: &Hash, p: &[Hash], what: &str| {
            assert!(
                !verify_inclusion(l, i, s, p, r),
                "{index}/{size}: {what} accepted"
            );
        };
        // Wrong index or size.
        if index > 0 {
            fails(index - 1, size, &leaf, &root, &proof, "index - 1");
        }
        fails(index + 1, size, &leaf, &root, &proof, "index + 1");
        fails(index ^ 2, size, &leaf, &root, &proof, "index ^ 2");
        fails(index, size * 2, &leaf, &root, &proof, "size * 2");
        fails(index, size / 2, &leaf, &root, &proof, "size / 2");
        fails(index, index, &leaf, &root, &proof, "index == size");
        // Wrong leaf or root.
        fails(index, size, &some_hash, &root, &proof, "wrong leaf");
        fails(index, size, &leaf, &empty_root(), &proof, "empty root");
        fails(index, size, &leaf, &some_hash, &proof, "random root");
        // Elements added at either end, removed, inserted or bit-flipped.
        let mut trailing = proof.clone();
        trailing.push(root);
        fails(index, size, &leaf, &root, &trailing, "trailing root");
        trailing.pop();
        trailing.push(some_hash);
        fails(index, size, &leaf, &root, &trailing, "trailing element");
        let mut preceding = vec![root];
        preceding.extend(proof.iter().copied());
        fails(index, size, &leaf, &root, &preceding, "preceding root");
        if let Some((_, rest)) = proof.split_last() {
            fails(index, size, &leaf, &root, rest, "removed element");
        }
        if proof.len() > 1 {
            let mut inserted = vec![proof[0], some_hash];
            inserted.extend_from_slice(&proof[1..]);
            fails(index, size, &leaf, &root, &inserted, "inserted element");
        }
        for i in 0..proof.len() {
            for bit in [0u8, 3, 7] {
                let mut flipped = proof.clone();
                flipped[i][i % 32] ^= 1 << bit;
                fails(index, size, &leaf, &root, &flipped, "bit-flipped element");
            }
        }
    }
    // Impossible positions never verify, whatever the proof.
    for (index, size) in [(0, 0), (1, 0), (2, 1), (1, 1)] {
        assert!(!verify_inclusion(&some_hash, index, size, &[], &some_hash));
    }
    assert_eq!(
        t.inclusion_proof(8, 8),
        Err(TreeError::IndexOutOfRange { index: 8, size: 8 })
    );
    assert_eq!(
        t.inclusion_proof(0, 9),
        Err(TreeError::SizeTooLarge { size: 9, len: 8 })
    );
}

#[test]
fn rfc6962_consistency_proofs_and_their_corruptions() {
    let t = test_tree();
    let some_hash = h("abacaba000000000000000000000000000000000000000000060061e00123456");
    for (size1, size2, proof) in consistency_vectors() {
        assert_eq!(
            t.consistency_proof(size1, size2).unwrap(),
            proof,
            "{size1} -> {size2}"
        );
        let (root1, root2) = (h(ROOTS[size1 as usize - 1]), h(ROOTS[size2 as usize - 1]));
        assert!(verify_consistency(size1, size2, &root1, &root2, &proof));
        if proof.is_empty() {
            // size1 == size2: only the same root with an empty proof is consistent.
            assert!(!verify_consistency(
                size1, size2, &root1, &some_hash, &proof
            ));
            assert!(!verify_consistency(size1, size2, &root1, &root2, &[root1]));
            continue;
        }
        let fails = |s1: u64, s2: u64, r1: &Hash, r2: &Hash, p: &[Hash], what: &str| {
            assert!(
                !verify_consistency(s1, s2, r1, r2, p),
                "{size1} -> {size2}: {what} accepted"
            );
        };
        fails(size1 - 1, size2, &root1, &root2, &proof, "size1 - 1");
        fails(size1 + 1, size2, &root1, &root2, &proof, "size1 + 1");
        fails(size1 ^ 2, size2, &root1, &root2, &proof, "size1 ^ 2");
        fails(size1, size2 * 2, &root1, &root2, &proof, "size2 * 2");
        fails(size1, size2 / 2, &root1, &root2, &proof, "size2 / 2");
        fails(0, size2, &root1, &root2, &proof, "size1 = 0");
        fails(0, 0, &root1, &root1, &[], "size1 = size2 = 0");
        fails(size2, size1, &root2, &root1, &proof, "sizes swapped");
        fails(size1, size2, &some_hash, &root2, &proof, "wrong root1");
        fails(size1, size2, &root1, &some_hash, &proof, "wrong root2");
        fails(size1, size2, &root2, &root1, &proof, "roots swapped");
        fails(size1, size2, &root1, &root2, &[], "empty proof");
        for extra in [root1, root2, some_hash] {
            let mut trailing = proof.clone();
            trailing.push(extra);
            fails(size1, size2, &root1, &root2, &trailing, "trailing element");
            let mut preceding = vec![extra];
            preceding.extend(proof.iter().copied());
            fails(
                size1,
                size2,
                &root1,
                &root2,
                &preceding,
                "preceding element",
            );
        }
        let mut preceding = vec![proof[0]];
        preceding.extend(proof.iter().copied());
        fails(
            size1,
            size2,
            &root1,
            &root2,
            &preceding,
            "preceding proof[0]",
        );
        fails(
            size1,
            size2,
            &root1,
            &root2,
            &proof[..proof.len() - 1],
            "truncated proof",
        );
        for i in 0..proof.len() {
            for bit in [0u8, 4, 7] {
                let mut flipped = proof.clone();
                flipped[i][31 - i % 32] ^= 1 << bit;
                fails(
                    size1,
                    size2,
                    &root1,
                    &root2,
                    &flipped,
                    "bit-flipped element",
                );
            }
        }
    }
    assert_eq!(
        t.consistency_proof(0, 3),
        Err(TreeError::BadSizes { size1: 0, size2: 3 })
    );
    assert_eq!(
        t.consistency_proof(4, 3),
        Err(TreeError::BadSizes { size1: 4, size2: 3 })
    );
}

// ----- an independent reference, written from RFC 6962 §2.1 -----------------------------------

fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => Sha256::digest(b"").into(),
        1 => d[0],
        n => {
            let k = largest_power_of_two_below(n);
            let mut b = vec![1u8];
            b.extend_from_slice(&mth(&d[..k]));
            b.extend_from_slice(&mth(&d[k..]));
            Sha256::digest(&b).into()
        }
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// PATH(m, D[n]).
fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = largest_power_of_two_below(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// SUBPROOF(m, D[n], b).
fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

#[test]
fn every_proof_up_to_64_leaves_matches_the_rfc_definitions() {
    let leaves: Vec<Hash> = (0..64u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let mut t = Tree::new();
    t.extend(leaves.iter().copied());
    for n in 1..=64usize {
        let d = &leaves[..n];
        let root = mth(d);
        assert_eq!(t.root(n as u64).unwrap(), root, "MTH of {n}");
        for m in 0..n {
            let p = t.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(p, path(m, d), "PATH({m}, D[{n}])");
            assert!(verify_inclusion(&d[m], m as u64, n as u64, &p, &root));
            // A proof for another leaf, or for this leaf at another place, never verifies.
            for other in 0..n {
                if other != m {
                    assert!(!verify_inclusion(&d[other], m as u64, n as u64, &p, &root));
                    assert!(!verify_inclusion(&d[m], other as u64, n as u64, &p, &root));
                }
            }
        }
        for m in 1..=n {
            let p = t.consistency_proof(m as u64, n as u64).unwrap();
            let want = if m == n { vec![] } else { subproof(m, d, true) };
            assert_eq!(p, want, "PROOF({m}, D[{n}])");
            assert!(verify_consistency(
                m as u64,
                n as u64,
                &mth(&d[..m]),
                &root,
                &p
            ));
            if m < n {
                assert!(!verify_consistency(
                    m as u64,
                    n as u64,
                    &mth(&leaves[1..=m]),
                    &root,
                    &p
                ));
            }
        }
    }
}

// ----- signed notes -------------------------------------------------------------------------

/// c2sp.org/signed-note, the specification's own example.
const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const SPEC_TEXT: &str = "This is an example message.\n";
const SPEC_SIG: &str = "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

/// golang.org/x/mod/sumdb/note's test vectors.
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

#[test]
fn the_c2sp_signed_note_example_verifies_and_one_flipped_byte_fails() {
    let key = parse_verifier_key(SPEC_VKEY).unwrap();
    assert_eq!(key.name, "example.com/foo");
    assert_eq!(hex::encode(key.id), "530d903a");
    assert_eq!(key_id(&key.name, &key.public_key), key.id);
    assert_eq!(verifier_key(&key.name, &key.public_key), SPEC_VKEY);
    let note = format!("{SPEC_TEXT}\n{SPEC_SIG}");
    assert_eq!(verify_note(&note, &key).unwrap(), SPEC_TEXT);
    // One flipped byte anywhere — text, separator, signature line — makes it fail. Flips that
    // leave invalid UTF-8 cannot even be handed over as a note.
    let bytes = note.as_bytes();
    let mut tried = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x20, 0x80] {
            let mut b = bytes.to_vec();
            b[i] ^= mask;
            if let Ok(s) = std::str::from_utf8(&b) {
                tried += 1;
                assert!(
                    verify_note(s, &key).is_err(),
                    "byte {i} ^ {mask:#04x} still verifies"
                );
            }
        }
    }
    assert!(tried > bytes.len(), "{tried}");
    // Each byte of the decoded signature (key id and Ed25519 signature) matters too.
    let b64 = SPEC_SIG.trim_end().rsplit(' ').next().unwrap();
    let raw = B64.decode(b64).unwrap();
    for i in 0..raw.len() {
        let mut r = raw.clone();
        r[i] ^= 0x01;
        let forged = format!("{SPEC_TEXT}\n— example.com/foo {}\n", B64.encode(&r));
        assert!(verify_note(&forged, &key).is_err(), "signature byte {i}");
    }
    // Other text under the same signature, a missing blank line or final newline.
    assert!(verify_note(&format!("This is an example message!\n\n{SPEC_SIG}"), &key).is_err());
    assert!(verify_note(&format!("{SPEC_TEXT}{SPEC_SIG}"), &key).is_err());
    assert!(verify_note(note.trim_end(), &key).is_err());
    // Keys whose id, name or key bytes disagree are refused when parsed.
    for bad in [
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/fo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2l",
        "example.com/foo+530d903a",
        "example.com/foo 530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ] {
        assert!(
            matches!(parse_verifier_key(bad), Err(NoteError::MalformedKey(_))),
            "{bad}"
        );
    }
}

#[test]
fn the_go_sumdb_note_vectors_sign_and_verify_byte_for_byte() {
    // The Go signer key is `PRIVATE+KEY+<name>+<id>+base64(0x01 ‖ seed)`.
    let raw = B64.decode(GO_SKEY.splitn(5, '+').nth(4).unwrap()).unwrap();
    assert_eq!(raw[0], 0x01);
    let sk = SigningKey::from_bytes(&raw[1..].try_into().unwrap());
    let pk = sk.verifying_key().to_bytes();
    assert_eq!(verifier_key("PeterNeumann", &pk), GO_VKEY);
    // Ed25519 is deterministic: our signature line is the Go one, byte for byte.
    let sig = sk.sign(GO_TEXT.as_bytes()).to_bytes();
    assert_eq!(signature_line("PeterNeumann", &pk, &sig), PETER_SIG);
    // A note with two signatures verifies for each of its keys, not for a stranger's.
    let note = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let peter = parse_verifier_key(GO_VKEY).unwrap();
    let enoch = parse_verifier_key(ENOCH_VKEY).unwrap();
    assert_eq!(verify_note(&note, &peter).unwrap(), GO_TEXT);
    assert_eq!(verify_note(&note, &enoch).unwrap(), GO_TEXT);
    let spec = parse_verifier_key(SPEC_VKEY).unwrap();
    assert!(matches!(
        verify_note(&note, &spec),
        Err(NoteError::NoValidSignature(_))
    ));
    // Enoch's signature alone does not make Peter's note.
    assert!(verify_note(&format!("{GO_TEXT}\n{ENOCH_SIG}"), &peter).is_err());
    // A bad signature line by the expected key rejects the note, even with a good one after it
    // (as Go's `note.Open` does): the line is Peter's id with Enoch's signature bytes.
    let enoch_raw = B64
        .decode(ENOCH_SIG.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    let peter_raw = B64
        .decode(PETER_SIG.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    let mut forged = peter_raw[..4].to_vec();
    forged.extend_from_slice(&enoch_raw[4..]);
    let forged_line = format!("— PeterNeumann {}\n", B64.encode(&forged));
    let note = format!("{GO_TEXT}\n{forged_line}{PETER_SIG}");
    assert!(matches!(
        verify_note(&note, &peter),
        Err(NoteError::BadSignature(_))
    ));
}

#[test]
fn checkpoint_bodies_follow_tlog_checkpoint() {
    let root = h(ROOTS[7]);
    let body = checkpoint_body("example.com/log", 8, &root);
    assert_eq!(body, format!("example.com/log\n8\n{}\n", B64.encode(root)));
    assert_eq!(
        parse_checkpoint_body(&body).unwrap(),
        ("example.com/log".to_owned(), 8, root)
    );
    // Nodus checkpoints define no extension lines: a text with one is refused (one text per
    // checkpoint).
    assert!(parse_checkpoint_body(&format!("{body}ext\n")).is_err());
    for bad in [
        format!("example.com/log\n08\n{}\n", B64.encode(root)),
        format!("example.com/log\n-8\n{}\n", B64.encode(root)),
        format!("example.com/log\n8\n{}\n", B64.encode([0u8; 31])),
        "example.com/log\n8\n".to_owned(),
        format!("\n8\n{}\n", B64.encode(root)),
    ] {
        assert!(
            matches!(
                parse_checkpoint_body(&bad),
                Err(NoteError::MalformedCheckpoint(_))
            ),
            "{bad:?}"
        );
    }
}
