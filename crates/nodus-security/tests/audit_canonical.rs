//! One canonical encoding (issue "Tenants are walls", item 10): leaves and checkpoint texts are
//! decoded strictly (one byte string per record, one text per checkpoint), the signature-selection
//! rule and the export's `verifier_key` check are the documented ones, and a duplicated export
//! record is reported as such. Every input here is *validly signed*: only strict decoding can
//! refuse it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use nodus_security::audit::note::{
    NoteError, checkpoint_body, parse_checkpoint_body, parse_verifier_key, signature_line,
    verifier_key, verify_note,
};
use nodus_security::audit::{AuditRecord, LEAF_TAG, Outcome, merkle, verify_export};
use serde_json::{Value, json};

const ORIGIN: &str = "test.nodus/audit";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn pk() -> [u8; 32] {
    key().verifying_key().to_bytes()
}

/// A leaf written by hand from the grammar in `docs/audit.md`, with the detail pairs in the order
/// given (so they can be out of order or repeated).
fn raw_leaf(seq: u64, details: &[(&str, &str)]) -> Vec<u8> {
    fn s(b: &mut Vec<u8>, v: &str) {
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    let mut b = LEAF_TAG.to_vec();
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
    b.push(0); // tenant
    b.push(0); // actor
    b.push(0); // session
    s(&mut b, "test.write");
    b.push(0); // command
    b.push(0); // outcome allowed
    b.push(0); // reason
    b.extend_from_slice(&(details.len() as u32).to_be_bytes());
    for (k, v) in details {
        s(&mut b, k);
        s(&mut b, v);
    }
    b.extend_from_slice(&0u64.to_be_bytes()); // policy epoch
    b.push(0); // latency
    b
}

fn canonical_leaf(seq: u64) -> Vec<u8> {
    let mut r = AuditRecord::new("test.write", Outcome::Allowed).detail("i", seq.to_string());
    r.time_ms = 1_700_000_000_000 + seq;
    r.leaf_bytes(seq)
}

/// Signs `text` (a checkpoint body or any text ending in a newline) as a one-signature note.
fn sign(text: &str) -> String {
    let sig = key().sign(text.as_bytes()).to_bytes();
    format!("{text}\n{}", signature_line(ORIGIN, &pk(), &sig))
}

fn root(leaves: &[Vec<u8>], size: usize) -> [u8; 32] {
    let hashes: Vec<[u8; 32]> = leaves[..size]
        .iter()
        .map(|l| merkle::leaf_hash(l))
        .collect();
    merkle::root_of(&hashes)
}

/// A well-formed export of `leaves` with one validly signed checkpoint per `(size, note)`.
fn export(leaves: &[Vec<u8>], checkpoints: &[(u64, String)]) -> Value {
    json!({
        "format": "nodus-audit-export-v1",
        "origin": ORIGIN,
        "key_name": ORIGIN,
        "public_key": B64.encode(pk()),
        "verifier_key": verifier_key(ORIGIN, &pk()),
        "records": leaves.iter().enumerate().map(|(i, l)| json!({"seq": i, "leaf": B64.encode(l)})).collect::<Vec<_>>(),
        "checkpoints": checkpoints.iter().map(|(s, n)| json!({"size": s, "note": n})).collect::<Vec<_>>(),
    })
}

/// The export with a canonical checkpoint over every leaf.
fn signed_export(leaves: &[Vec<u8>]) -> Value {
    let n = leaves.len();
    let note = sign(&checkpoint_body(ORIGIN, n as u64, &root(leaves, n)));
    export(leaves, &[(n as u64, note)])
}

/// Runs `verify_export` on `v` and returns the report as JSON (the documented report format).
fn verify_json(dir: &Path, v: &Value) -> Value {
    let p = dir.join("export.json");
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    serde_json::to_value(verify_export(&p, &pk()).unwrap()).unwrap()
}

fn problem(report: &Value) -> (Value, Value) {
    (
        report["problem"]["kind"].clone(),
        report["problem"]["index"].clone(),
    )
}

#[test]
fn a_leaf_decodes_only_from_its_one_canonical_encoding() {
    // Canonical: sorted, distinct keys.
    let ok = raw_leaf(3, &[("a", "1"), ("b", "2")]);
    let (seq, rec) = AuditRecord::decode(&ok).unwrap();
    assert_eq!(rec.leaf_bytes(seq), ok);
    // Unsorted keys, a repeated key, an empty key repeated: each would decode to a record whose
    // encoding is another byte string.
    for details in [
        &[("b", "2"), ("a", "1")][..],
        &[("a", "1"), ("a", "2")][..],
        &[("a", "1"), ("a", "1")][..],
        &[("", "1"), ("", "1")][..],
    ] {
        let leaf = raw_leaf(3, details);
        assert!(
            AuditRecord::decode(&leaf).is_err(),
            "{details:?} must not decode"
        );
    }
    // Flags other than 0 and 1, an outcome beyond 2, trailing bytes, a bad tenant id.
    let mut flag = ok.clone();
    flag[LEAF_TAG.len() + 16] = 2;
    assert!(AuditRecord::decode(&flag).is_err());
    let mut trailing = ok.clone();
    trailing.push(0);
    assert!(AuditRecord::decode(&trailing).is_err());
    let mut bad_tenant = LEAF_TAG.to_vec();
    bad_tenant.extend_from_slice(&ok[LEAF_TAG.len()..LEAF_TAG.len() + 16]);
    bad_tenant.push(1);
    bad_tenant.extend_from_slice(&2u32.to_be_bytes());
    bad_tenant.extend_from_slice(b"-x");
    bad_tenant.extend_from_slice(&ok[LEAF_TAG.len() + 17..]);
    assert!(AuditRecord::decode(&bad_tenant).is_err());
}

#[test]
fn a_signed_export_with_a_non_canonical_leaf_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let good = vec![
        canonical_leaf(0),
        raw_leaf(1, &[("a", "1")]),
        canonical_leaf(2),
    ];
    let r = verify_json(dir.path(), &signed_export(&good));
    assert_eq!(r["valid"], true, "{r}");
    for bad in [
        raw_leaf(1, &[("b", "2"), ("a", "1")]),
        raw_leaf(1, &[("a", "1"), ("a", "1")]),
    ] {
        let leaves = vec![canonical_leaf(0), bad, canonical_leaf(2)];
        let r = verify_json(dir.path(), &signed_export(&leaves));
        assert_eq!(r["valid"], false, "{r}");
        assert_eq!(problem(&r), (json!("modified_record"), json!(1)), "{r}");
    }
}

#[test]
fn checkpoint_texts_are_canonical() {
    let root = [7u8; 32];
    let r64 = B64.encode(root);
    let body = checkpoint_body(ORIGIN, 256, &root);
    assert_eq!(
        parse_checkpoint_body(&body).unwrap(),
        (ORIGIN.into(), 256, root)
    );
    for bad in [
        format!("{ORIGIN}\n+256\n{r64}\n"),
        format!("{ORIGIN}\n0256\n{r64}\n"),
        format!("{ORIGIN}\n 256\n{r64}\n"),
        format!("{ORIGIN}\n256 \n{r64}\n"),
        format!("{ORIGIN}\n18446744073709551616\n{r64}\n"),
        format!("{ORIGIN}\r\n256\r\n{r64}\r\n"),
        format!("{ORIGIN}\n256\n{r64}\r\n"),
        format!("{ORIGIN}\n256\n{r64}"),
        format!("{ORIGIN}\n256\n{r64}\n\n"),
        format!("{ORIGIN}\n256\n{r64}\nextension\n"),
        format!("{ORIGIN}\n256\n{r64}\ntrailing"),
        format!("{ORIGIN}\n256\n{}\n", r64.trim_end_matches('=')),
        format!("{ORIGIN}\n256\n{}\n", B64.encode([7u8; 33])),
        format!("{ORIGIN}\tx\n256\n{r64}\n"),
        format!("\n256\n{r64}\n"),
    ] {
        assert!(
            matches!(
                parse_checkpoint_body(&bad),
                Err(NoteError::MalformedCheckpoint(_))
            ),
            "{bad:?} must be refused"
        );
    }
    // Signed with the log's key, a non-canonical text is still refused by verification.
    let dir = tempfile::tempdir().unwrap();
    let leaves: Vec<Vec<u8>> = (0..5).map(canonical_leaf).collect();
    let r5 = B64.encode(self::root(&leaves, 5));
    for (text, kind) in [
        (format!("{ORIGIN}\n+5\n{r5}\n"), "malformed"),
        (format!("{ORIGIN}\n05\n{r5}\n"), "malformed"),
        (format!("{ORIGIN}\n5\n{r5}\nextension\n"), "malformed"),
        (format!("{ORIGIN}\r\n5\r\n{r5}\r\n"), "malformed"),
    ] {
        let v = export(&leaves, &[(5, sign(&text))]);
        let r = verify_json(dir.path(), &v);
        assert_eq!(r["valid"], false, "{text:?}: {r}");
        assert_eq!(r["problem"]["kind"], kind, "{text:?}: {r}");
    }
}

#[test]
fn the_signature_selection_rule_is_the_documented_one() {
    let vkey = parse_verifier_key(&verifier_key(ORIGIN, &pk())).unwrap();
    let body = checkpoint_body(ORIGIN, 1, &[1u8; 32]);
    let good = sign(&body);
    let good_line = good.rsplit_once("\n\n").unwrap().1.to_owned();
    let other = SigningKey::from_bytes(&[9; 32]);
    let other_sig = other.sign(body.as_bytes()).to_bytes();
    let other_line = signature_line(
        "other.example/key",
        &other.verifying_key().to_bytes(),
        &other_sig,
    );
    // Lines by other keys are skipped, wherever they are.
    assert!(verify_note(&format!("{body}\n{other_line}{good_line}"), &vkey).is_ok());
    assert!(verify_note(&format!("{body}\n{good_line}{other_line}"), &vkey).is_ok());
    // The first line by this key (name and key id) decides: a bad signature there rejects the
    // note even when a good one follows; a repeated good line after the deciding one is ignored.
    let mut raw = B64
        .decode(good_line.trim_end().rsplit(' ').next().unwrap())
        .unwrap();
    raw[10] ^= 1;
    let bad_line = format!("— {ORIGIN} {}\n", B64.encode(&raw));
    assert!(matches!(
        verify_note(&format!("{body}\n{bad_line}{good_line}"), &vkey),
        Err(NoteError::BadSignature(_))
    ));
    assert!(verify_note(&format!("{body}\n{good_line}{good_line}"), &vkey).is_ok());
    // A malformed signature line rejects the note, even one that only names this key.
    for line in [
        format!("— {ORIGIN} !!notbase64\n"),
        format!("— {ORIGIN} {}\n", B64.encode([1u8, 2, 3, 4])),
        format!("— {ORIGIN}\n"),
        format!(
            "— {ORIGIN} {}=\n",
            good_line.trim_end().rsplit(' ').next().unwrap()
        ),
        format!("-- {ORIGIN} AAAA\n"),
    ] {
        assert!(
            matches!(
                verify_note(&format!("{body}\n{line}{good_line}"), &vkey),
                Err(NoteError::MalformedNote(_))
            ),
            "{line:?} must make the note malformed"
        );
    }
    // Control characters other than LF (a CR, a tab) anywhere make the note malformed.
    let cr = format!("{}\r\n", body.trim_end());
    assert!(matches!(
        verify_note(&sign(&cr), &vkey),
        Err(NoteError::MalformedNote(_))
    ));
    assert!(matches!(
        verify_note(&format!("{good}\r"), &vkey),
        Err(NoteError::MalformedNote(_))
    ));
    // No line by this key at all.
    assert!(matches!(
        verify_note(&format!("{body}\n{other_line}"), &vkey),
        Err(NoteError::NoValidSignature(_))
    ));
}

#[test]
fn the_exports_verifier_key_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let leaves: Vec<Vec<u8>> = (0..4).map(canonical_leaf).collect();
    let v = signed_export(&leaves);
    assert_eq!(verify_json(dir.path(), &v)["valid"], true);
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
    for vk in [
        verifier_key(ORIGIN, &other),
        verifier_key("another.name", &pk()),
        verifier_key(ORIGIN, &pk()).replace('+', " +"),
        String::new(),
    ] {
        let mut bad = v.clone();
        bad["verifier_key"] = json!(vk);
        let r = verify_json(dir.path(), &bad);
        assert_eq!(r["valid"], false, "{vk:?}: {r}");
        assert_eq!(
            problem(&r),
            (json!("key_mismatch"), json!(0)),
            "{vk:?}: {r}"
        );
    }
    // The file's `public_key` must be the trusted key too.
    let mut bad = v.clone();
    bad["public_key"] = json!(B64.encode(other));
    let r = verify_json(dir.path(), &bad);
    assert_eq!(problem(&r), (json!("key_mismatch"), json!(0)), "{r}");
}

#[test]
fn a_duplicated_export_record_is_reported_as_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let leaves: Vec<Vec<u8>> = (0..8).map(canonical_leaf).collect();
    let mut v = signed_export(&leaves);
    let dup = v["records"][5].clone();
    v["records"].as_array_mut().unwrap().insert(6, dup);
    let r = verify_json(dir.path(), &v);
    assert_eq!(r["valid"], false, "{r}");
    assert_eq!(problem(&r), (json!("duplicate_record"), json!(6)), "{r}");
    // A missing one is still `missing_record`.
    let mut v = signed_export(&leaves);
    v["records"].as_array_mut().unwrap().remove(3);
    let r = verify_json(dir.path(), &v);
    assert_eq!(problem(&r), (json!("missing_record"), json!(3)), "{r}");
}

#[test]
fn an_export_document_is_parsed_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let leaves: Vec<Vec<u8>> = (0..2).map(canonical_leaf).collect();
    let v = signed_export(&leaves);
    let p = dir.path().join("export.json");
    let mut extra = v.clone();
    extra["unexpected"] = json!(1);
    let mut rec_extra = v.clone();
    rec_extra["records"][0]["hash"] = json!("");
    for (what, bad) in [
        ("unknown field", extra),
        ("unknown record field", rec_extra),
    ] {
        std::fs::write(&p, bad.to_string()).unwrap();
        assert!(verify_export(&p, &pk()).is_err(), "{what}");
    }
    // Leading whitespace is still JSON.
    std::fs::write(&p, format!("{}{}", " ".repeat(100), v)).unwrap();
    assert!(verify_export(&p, &pk()).unwrap().valid);
}
