//! A second verifier of exports, written from `docs/audit.md` alone (its grammars, the
//! signature-selection rule, the key check and the order of the checks), against
//! `verify_export`: on a corpus of valid exports and thousands of mutated ones — many of them
//! re-signed with the log's key, so only strict decoding can refuse them — both must give the same
//! verdict, problem kind, index, `size`, `uncovered` and `latest`.
//!
//! Nothing from `nodus_security` is used by the verifier itself; the crate only produces the
//! starting export and is the implementation under comparison.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use nodus_policy::{ActorId, TenantId};
use nodus_security::audit::{
    AuditConfig, AuditLog, AuditRecord, AuditSink, Durability, Ed25519Signer, Outcome, Overflow,
    verify_export,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ORIGIN: &str = "test.nodus/audit";

// ------------------------------------------------------------------------------------------------
// The verifier written from the documentation.
// ------------------------------------------------------------------------------------------------

/// What the documented report says: (valid, size, uncovered, latest size, problem kind, index).
type Verdict = (bool, u64, u64, Option<u64>, Option<(String, u64)>);

fn canon_b64(s: &str) -> Option<Vec<u8>> {
    let raw = B64.decode(s).ok()?;
    (B64.encode(&raw) == s).then_some(raw)
}

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn mth(d: &[[u8; 32]]) -> [u8; 32] {
    match d.len() {
        0 => sha(&[b""]),
        1 => d[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            sha(&[&[1u8], &mth(&d[..k]), &mth(&d[k..])])
        }
    }
}

/// The leaf grammar; returns the embedded `seq` of a leaf it accepts.
fn parse_leaf(b: &[u8]) -> Option<u64> {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (h, t) = self.0.split_at(n);
            self.0 = t;
            Some(h)
        }
        fn u8(&mut self) -> Option<u8> {
            Some(self.take(1)?[0])
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
        fn string(&mut self) -> Option<&'a str> {
            let n = self.u32()? as usize;
            std::str::from_utf8(self.take(n)?).ok()
        }
        fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
            match self.u8()? {
                0 => Some(None),
                1 => Some(Some(f(self)?)),
                _ => None,
            }
        }
    }
    fn id(s: &str) -> Option<&str> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphanumeric() || (i > 0 && b"._@:-".contains(&c)));
        ok.then_some(s)
    }
    let mut r = R(b);
    if r.take(15)? != b"nodus.audit.v1\0" {
        return None;
    }
    let seq = r.u64()?;
    r.u64()?; // time
    r.opt(|r| r.string().and_then(id))?; // tenant
    r.opt(|r| r.string().and_then(id))?; // actor
    r.opt(|r| r.string())?; // session
    r.string()?; // kind
    r.opt(|r| r.string())?; // command
    if r.u8()? > 2 {
        return None;
    }
    r.opt(|r| r.string())?; // reason
    let n = r.u32()?;
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let k = r.string()?.as_bytes();
        r.string()?;
        if prev.is_some_and(|p| p >= k) {
            return None;
        }
        prev = Some(k);
    }
    r.u64()?; // policy epoch
    r.opt(|r| r.u64())?; // latency
    r.0.is_empty().then_some(seq)
}

enum NoteOutcome {
    Malformed,
    BadSignature,
    Text(String),
}

/// The signed-note grammar and the signature-selection rule.
fn open_note(note: &str, name: &str, pk: &[u8; 32]) -> NoteOutcome {
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return NoteOutcome::Malformed;
    }
    let Some(split) = note.rfind("\n\n") else {
        return NoteOutcome::Malformed;
    };
    let (text, block) = (&note[..=split], &note[split + 2..]);
    if block.is_empty() || !block.ends_with('\n') {
        return NoteOutcome::Malformed;
    }
    let lines: Vec<&str> = block[..block.len() - 1].split('\n').collect();
    if lines.len() > 100 {
        return NoteOutcome::Malformed;
    }
    let mut parsed = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return NoteOutcome::Malformed;
        };
        let Some((n, b64)) = rest.split_once(' ') else {
            return NoteOutcome::Malformed;
        };
        if n.is_empty() || n.contains('+') || n.chars().any(char::is_whitespace) {
            return NoteOutcome::Malformed;
        }
        let Some(raw) = canon_b64(b64) else {
            return NoteOutcome::Malformed;
        };
        if raw.len() < 5 {
            return NoteOutcome::Malformed;
        }
        parsed.push((n, raw));
    }
    let mut id_in = name.as_bytes().to_vec();
    id_in.extend_from_slice(&[0x0A, 0x01]);
    id_in.extend_from_slice(pk);
    let id = &sha(&[&id_in])[..4];
    let Some((_, raw)) = parsed.iter().find(|(n, raw)| *n == name && &raw[..4] == id) else {
        return NoteOutcome::BadSignature;
    };
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(pk) else {
        return NoteOutcome::BadSignature;
    };
    let Ok(sig) = <[u8; 64]>::try_from(&raw[4..]) else {
        return NoteOutcome::BadSignature;
    };
    if vk
        .verify_strict(text.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
        .is_err()
    {
        return NoteOutcome::BadSignature;
    }
    NoteOutcome::Text(text.to_owned())
}

/// The checkpoint-text grammar: (origin, size, root).
fn parse_text(text: &str) -> Option<(String, u64, [u8; 32])> {
    let body = text.strip_suffix('\n')?;
    let lines: Vec<&str> = body.split('\n').collect();
    let [origin, size, root] = lines.as_slice() else {
        return None;
    };
    if origin.is_empty() || origin.chars().any(|c| c < ' ') {
        return None;
    }
    let canonical_size = !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_digit())
        && (*size == "0" || !size.starts_with('0'));
    if !canonical_size {
        return None;
    }
    let size: u64 = size.parse().ok()?;
    let root: [u8; 32] = canon_b64(root)?.try_into().ok()?;
    Some((origin.to_string(), size, root))
}

/// The documented export verifier. `Err` = not an export (a file-level error).
fn docs_verify(doc: &str, trusted: &[u8; 32]) -> Result<Verdict, ()> {
    let v: Value = serde_json::from_str(doc).map_err(|_| ())?;
    let o = v.as_object().ok_or(())?;
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys
        != [
            "checkpoints",
            "format",
            "key_name",
            "origin",
            "public_key",
            "records",
            "verifier_key",
        ]
    {
        return Err(());
    }
    let s = |k: &str| o[k].as_str().ok_or(());
    if s("format")? != "nodus-audit-export-v1" {
        return Err(());
    }
    let (origin, key_name, vkey) = (s("origin")?, s("key_name")?, s("verifier_key")?);
    let public_key: [u8; 32] = canon_b64(s("public_key")?)
        .and_then(|k| k.try_into().ok())
        .ok_or(())?;
    let mut records = Vec::new();
    for r in o["records"].as_array().ok_or(())? {
        let r = r.as_object().ok_or(())?;
        if r.len() != 2 {
            return Err(());
        }
        let seq = r.get("seq").and_then(Value::as_u64).ok_or(())?;
        let leaf = r
            .get("leaf")
            .and_then(Value::as_str)
            .and_then(canon_b64)
            .ok_or(())?;
        records.push((seq, leaf));
    }
    let mut checkpoints = Vec::new();
    for c in o["checkpoints"].as_array().ok_or(())? {
        let c = c.as_object().ok_or(())?;
        if c.len() != 2 {
            return Err(());
        }
        let size = c.get("size").and_then(Value::as_u64).ok_or(())?;
        let note = c.get("note").and_then(Value::as_str).ok_or(())?;
        checkpoints.push((size, note.to_owned()));
    }
    // Step 0: the key.
    let mut id_in = key_name.as_bytes().to_vec();
    id_in.extend_from_slice(&[0x0A, 0x01]);
    id_in.extend_from_slice(trusted);
    let expected_vkey = format!(
        "{key_name}+{}+{}",
        hex::encode(&sha(&[&id_in])[..4]),
        B64.encode([&[1u8][..], trusted].concat())
    );
    if &public_key != trusted || vkey != expected_vkey {
        return Ok((false, 0, 0, None, Some(("key_mismatch".into(), 0))));
    }
    let fail = |size: u64, latest: Option<u64>, kind: &str, index: u64| -> Verdict {
        (
            false,
            size,
            size - latest.unwrap_or(0),
            latest,
            Some((kind.into(), index)),
        )
    };
    // Step 1: records.
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    for (i, (seq, leaf)) in records.iter().enumerate() {
        let i = i as u64;
        let n = hashes.len() as u64;
        if *seq > i {
            return Ok(fail(n, None, "missing_record", i));
        }
        if *seq < i {
            return Ok(fail(n, None, "duplicate_record", i));
        }
        match parse_leaf(leaf) {
            None => return Ok(fail(n, None, "modified_record", i)),
            Some(inner) if inner != i => return Ok(fail(n, None, "reordered_record", i)),
            Some(_) => {}
        }
        hashes.push(sha(&[&[0u8], leaf]));
    }
    let n = hashes.len() as u64;
    // Step 2: checkpoints.
    let mut latest: Option<u64> = None;
    for (s, note) in &checkpoints {
        let text = match open_note(note, key_name, trusted) {
            NoteOutcome::Malformed => return Ok(fail(n, latest, "malformed", *s)),
            NoteOutcome::BadSignature => {
                return Ok(fail(n, latest, "bad_checkpoint_signature", *s));
            }
            NoteOutcome::Text(t) => t,
        };
        let Some((o, size, root)) = parse_text(&text) else {
            return Ok(fail(n, latest, "malformed", *s));
        };
        if o != origin || size != *s {
            return Ok(fail(n, latest, "inconsistent_checkpoint", *s));
        }
        if latest.is_some_and(|l| size <= l) {
            return Ok(fail(n, latest, "inconsistent_checkpoint", size));
        }
        if size > n {
            return Ok(fail(n, latest, "truncated_tail", n));
        }
        if mth(&hashes[..size as usize]) != root {
            return Ok(fail(n, latest, "modified_record", latest.unwrap_or(0)));
        }
        latest = Some(size);
    }
    Ok((true, n, n - latest.unwrap_or(0), latest, None))
}

// ------------------------------------------------------------------------------------------------
// The corpus.
// ------------------------------------------------------------------------------------------------

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn pk() -> [u8; 32] {
    key().verifying_key().to_bytes()
}

/// A real export: 25 records with every optional field used somewhere, checkpoints every 10.
fn base_export() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.db");
    let log = AuditLog::open(
        &p,
        Arc::new(Ed25519Signer::from_signing_key(ORIGIN, key())),
        AuditConfig {
            origin: ORIGIN.into(),
            durability: Durability::Normal,
            overflow: Overflow::Block,
            queue_capacity: 1024,
            checkpoint_every: 10,
            checkpoint_interval: Duration::from_secs(60),
        },
    )
    .unwrap();
    for s in 0..25u64 {
        let mut r = AuditRecord::new("dispatch", Outcome::Denied)
            .command("notes.create")
            .detail("i", s.to_string())
            .detail("", "empty key")
            .detail("z\u{e9}", "\u{2014}");
        if s % 2 == 0 {
            r = r.tenant(TenantId::new("acme").unwrap());
        }
        if s % 3 == 0 {
            r = r
                .actor(ActorId::new("alice@acme").unwrap())
                .reason("Because");
        }
        if s % 5 == 0 {
            r.latency_ns = Some(s);
            r.session = Some("s-1".into());
        }
        r.time_ms = s;
        log.record(r).unwrap();
    }
    log.flush().unwrap();
    let out = dir.path().join("export.json");
    log.export(&out).unwrap();
    log.shutdown().unwrap();
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// A tiny deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn leaves(v: &Value) -> Vec<Vec<u8>> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            B64.decode(r["leaf"].as_str().unwrap_or(""))
                .unwrap_or_default()
        })
        .collect()
}

fn sign_text(text: &str) -> String {
    let mut id_in = ORIGIN.as_bytes().to_vec();
    id_in.extend_from_slice(&[0x0A, 0x01]);
    id_in.extend_from_slice(&pk());
    let mut raw = sha(&[&id_in])[..4].to_vec();
    raw.extend_from_slice(&key().sign(text.as_bytes()).to_bytes());
    format!("{text}\n\u{2014} {ORIGIN} {}\n", B64.encode(raw))
}

/// Re-signs every checkpoint over the export's current leaves (so the log key vouches for them).
fn resign(v: &mut Value) {
    let hashes: Vec<[u8; 32]> = leaves(v).iter().map(|l| sha(&[&[0u8], l])).collect();
    for c in v["checkpoints"].as_array_mut().unwrap() {
        let size = c["size"].as_u64().unwrap() as usize;
        let root = mth(&hashes[..size.min(hashes.len())]);
        c["note"] = json!(sign_text(&format!(
            "{ORIGIN}\n{size}\n{}\n",
            B64.encode(root)
        )));
    }
}

fn set_leaf(v: &mut Value, i: usize, leaf: &[u8]) {
    v["records"][i]["leaf"] = json!(B64.encode(leaf));
}

/// One mutation of a valid export, chosen by `rng`.
fn mutate(base: &Value, rng: &mut Rng) -> Value {
    let mut v = base.clone();
    let n = v["records"].as_array().unwrap().len();
    let ncp = v["checkpoints"].as_array().unwrap().len();
    if n == 0 || ncp == 0 {
        return v;
    }
    match rng.below(17) {
        0 => {
            // A flipped byte in a leaf, re-signed half of the time.
            let i = rng.below(n);
            let mut l = leaves(&v)[i].clone();
            let at = rng.below(l.len());
            l[at] ^= 1 << rng.below(8);
            set_leaf(&mut v, i, &l);
            if rng.below(2) == 0 {
                resign(&mut v);
            }
        }
        1 => {
            // Detail pairs swapped or repeated (re-signed).
            let i = rng.below(n);
            let l = leaves(&v)[i].clone();
            let needle = b"\x00\x00\x00\x01i";
            if let Some(at) = l.windows(5).position(|w| w == needle) {
                let mut m = l.clone();
                m.insert(at, 0);
                m.truncate(l.len());
                set_leaf(&mut v, i, &m);
            }
            resign(&mut v);
        }
        2 => {
            let i = rng.below(n);
            let dup = v["records"][i].clone();
            v["records"].as_array_mut().unwrap().insert(i, dup);
        }
        3 => {
            let i = rng.below(n);
            v["records"].as_array_mut().unwrap().remove(i);
            if rng.below(2) == 0 {
                resign(&mut v);
            }
        }
        4 => {
            let (i, j) = (rng.below(n), rng.below(n));
            v["records"].as_array_mut().unwrap().swap(i, j);
        }
        5 => {
            let i = rng.below(n);
            v["records"][i]["seq"] = json!(rng.below(n + 2));
        }
        6 => {
            // A character of a note changed.
            let c = rng.below(ncp);
            let note = v["checkpoints"][c]["note"].as_str().unwrap().to_owned();
            let mut chars: Vec<char> = note.chars().collect();
            let at = rng.below(chars.len());
            chars[at] = ['+', '\r', '\n', ' ', 'A', '0', '=', '\t'][rng.below(8)];
            v["checkpoints"][c]["note"] = json!(chars.into_iter().collect::<String>());
        }
        7 => {
            // A non-canonical but validly signed text.
            let c = rng.below(ncp);
            let note = v["checkpoints"][c]["note"].as_str().unwrap().to_owned();
            let text = note.rsplit_once("\n\n").unwrap().0.to_owned() + "\n";
            let bad = match rng.below(6) {
                0 => text.replacen('\n', "\n+", 1),
                1 => text.replacen('\n', "\n0", 1),
                2 => text.replace('\n', "\r\n"),
                3 => format!("{text}ext\n"),
                4 => text.replacen("=\n", "\n", 1),
                _ => format!(" {text}"),
            };
            v["checkpoints"][c]["note"] = json!(sign_text(&bad));
        }
        8 => {
            // Extra signature lines: another key's, a repeated one, a garbled one.
            let c = rng.below(ncp);
            let note = v["checkpoints"][c]["note"].as_str().unwrap().to_owned();
            let (text, sig) = note.rsplit_once("\n\n").unwrap();
            let other = format!("\u{2014} other.key {}\n", B64.encode([7u8; 68]));
            let extra = [
                other.clone(),
                sig.to_owned(),
                "\u{2014} x AAAA\n".to_owned(),
                format!("\u{2014} {ORIGIN} {}\n", B64.encode([0u8; 68])),
            ][rng.below(4)]
            .clone();
            let note = if rng.below(2) == 0 {
                format!("{text}\n\n{extra}{sig}")
            } else {
                format!("{text}\n\n{sig}{extra}")
            };
            v["checkpoints"][c]["note"] = json!(note);
        }
        9 => {
            let (i, j) = (rng.below(ncp), rng.below(ncp));
            v["checkpoints"].as_array_mut().unwrap().swap(i, j);
        }
        10 => {
            let c = rng.below(ncp);
            let dup = v["checkpoints"][c].clone();
            v["checkpoints"].as_array_mut().unwrap().insert(c, dup);
        }
        11 => {
            let c = rng.below(ncp);
            v["checkpoints"][c]["size"] = json!(rng.below(n + 3));
        }
        12 => {
            let other = SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes();
            match rng.below(3) {
                0 => v["public_key"] = json!(B64.encode(other)),
                1 => v["verifier_key"] = json!(format!("{ORIGIN}+00000000+AAAA")),
                _ => v["key_name"] = json!("other.name"),
            }
        }
        13 => {
            // Records cut at the tail, re-signed half of the time.
            let keep = rng.below(n);
            v["records"].as_array_mut().unwrap().truncate(keep);
            if rng.below(2) == 0 {
                v["checkpoints"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|c| c["size"].as_u64().unwrap() as usize <= keep);
            }
        }
        14 => {
            v["origin"] = json!(["other/log", "", "test.nodus/audit\r"][rng.below(3)]);
        }
        15 => {
            // Not an export at all (file-level errors).
            match rng.below(5) {
                0 => v["extra"] = json!(1),
                1 => v["records"][0]["hash"] = json!(""),
                2 => {
                    let l = v["records"][0]["leaf"]
                        .as_str()
                        .unwrap()
                        .trim_end_matches('=');
                    v["records"][0]["leaf"] = json!(l.to_owned());
                }
                3 => v["records"][0]["seq"] = json!("0"),
                _ => v["format"] = json!("nodus-audit-export-v2"),
            }
        }
        _ => {
            // A tenant id made invalid, re-signed.
            let i = 2 * rng.below(n.div_ceil(2));
            let mut l = leaves(&v)[i].clone();
            if let Some(at) = l.windows(4).position(|w| w == b"acme") {
                l[at] = [b'-', b'_', b'.', b' '][rng.below(4)];
                set_leaf(&mut v, i, &l);
                resign(&mut v);
            }
        }
    }
    v
}

fn library_verdict(dir: &std::path::Path, doc: &str) -> Result<Verdict, ()> {
    let p = dir.join("export.json");
    std::fs::write(&p, doc).unwrap();
    let r = verify_export(&p, &pk()).map_err(|_| ())?;
    Ok((
        r.valid,
        r.size,
        r.uncovered,
        r.latest.map(|l| l.size),
        r.problem.map(|t| {
            (
                serde_json::to_value(t.kind)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
                t.index,
            )
        }),
    ))
}

#[test]
fn a_verifier_written_from_the_docs_agrees_on_valid_and_mutated_exports() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_export();
    let doc = base.to_string();
    let v = docs_verify(&doc, &pk());
    assert_eq!(v, Ok((true, 25, 0, Some(25), None)));
    assert_eq!(library_verdict(dir.path(), &doc), v);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut invalid, mut errors) = (0, 0);
    for round in 0..3000 {
        let mut m = mutate(&base, &mut rng);
        if rng.below(4) == 0 {
            m = mutate(&m, &mut rng);
        }
        let doc = m.to_string();
        let ours = library_verdict(dir.path(), &doc);
        let theirs = docs_verify(&doc, &pk());
        assert_eq!(ours, theirs, "round {round}: {doc}");
        match ours {
            Err(()) => errors += 1,
            Ok(v) if !v.0 => invalid += 1,
            Ok(_) => {}
        }
    }
    // The corpus exercises refusals of every sort, not only agreement on valid input.
    assert!(
        invalid > 1500 && errors > 0,
        "{invalid} invalid, {errors} errors"
    );
}
