//! C2SP signed notes (`c2sp.org/signed-note`) with Ed25519 keys, and tlog checkpoints
//! (`c2sp.org/tlog-checkpoint`).
//!
//! A note is UTF-8 text ending in a newline, a blank line, then one line per signature:
//! `— <key name> <base64(key id ‖ signature)>`. The key id is the first 4 bytes of
//! `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`; a verifier key is written
//! `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature-type byte of Ed25519 note keys.
const ED25519: u8 = 0x01;

/// Why a note or key was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The verifier key is not `name+keyid+base64`.
    #[error("malformed verifier key `{0}`")]
    MalformedKey(String),
    /// The note is not text, blank line, signature lines.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// No signature line by the expected key.
    #[error("no valid signature by `{0}`")]
    NoValidSignature(String),
    /// A signature line names the expected key and carries its id, but does not verify.
    #[error("the signature by `{0}` does not verify")]
    BadSignature(String),
    /// The checkpoint body is not origin, size, base64 root.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

/// The 4-byte key id of an Ed25519 note key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public_key);
    let d: [u8; 32] = h.finalize().into();
    let [a, b, c, e, ..] = d;
    [a, b, c, e]
}

/// The verifier key string `<name>+<hex key id>+<base64(0x01 ‖ pk)>`.
pub fn verifier_key(name: &str, public_key: &[u8; 32]) -> String {
    let mut raw = vec![ED25519];
    raw.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public_key)),
        B64.encode(raw)
    )
}

/// A parsed verifier key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key name.
    pub name: String,
    /// The key id.
    pub id: [u8; 4],
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
}

/// Parses `<name>+<hex key id>+<base64(0x01 ‖ pk)>`, checking that the id matches the key and
/// that the string is the canonical one [`verifier_key`] writes (lowercase hex, canonical base64).
///
/// # Errors
/// [`NoteError::MalformedKey`].
pub fn parse_verifier_key(vkey: &str) -> Result<VerifierKey, NoteError> {
    let bad = || NoteError::MalformedKey(vkey.to_owned());
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if !is_valid_key_name(name) {
        return Err(bad());
    }
    let id: [u8; 4] = hex::decode(id_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(bad)?;
    let raw = B64.decode(b64).map_err(|_| bad())?;
    let (Some(&ED25519), Some(pk)) = (raw.first(), raw.get(1..)) else {
        return Err(bad());
    };
    let public_key: [u8; 32] = pk.try_into().map_err(|_| bad())?;
    // Canonical: lowercase hex, canonical base64, the id of this name and key.
    if key_id(name, &public_key) != id || verifier_key(name, &public_key) != vkey {
        return Err(bad());
    }
    Ok(VerifierKey {
        name: name.to_owned(),
        id,
        public_key,
    })
}

/// Builds the signature line for `text` (which must end in `\n`) from a raw signature.
pub fn signature_line(name: &str, public_key: &[u8; 32], signature: &[u8; 64]) -> String {
    let mut raw = key_id(name, public_key).to_vec();
    raw.extend_from_slice(signature);
    format!("— {name} {}\n", B64.encode(raw))
}

/// The most signature lines a note may carry (as in golang.org/x/mod/sumdb/note).
pub const MAX_SIGNATURES: usize = 100;

/// One parsed signature line: the key name, the 4-byte key id and the signature bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureLine<'a> {
    /// The key name.
    pub name: &'a str,
    /// The key id (the first 4 decoded bytes).
    pub id: [u8; 4],
    /// The rest of the decoded bytes (64 for an Ed25519 signature).
    pub signature: Vec<u8>,
}

/// `true` for a valid key name: non-empty, no `+`, no whitespace (Unicode `White_Space`).
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.contains(char::is_whitespace)
}

/// Standard base64 with padding, in its one canonical form (re-encoding gives the same text).
fn canonical_b64(s: &str) -> Option<Vec<u8>> {
    let raw = B64.decode(s).ok()?;
    (B64.encode(&raw) == s).then_some(raw)
}

fn parse_signature_line(line: &str) -> Result<SignatureLine<'_>, NoteError> {
    let rest = line.strip_prefix("— ").ok_or(NoteError::MalformedNote(
        "a signature line starts with `— `",
    ))?;
    let (name, b64) = rest.split_once(' ').ok_or(NoteError::MalformedNote(
        "a signature line is `— <name> <base64>`",
    ))?;
    if !is_valid_key_name(name) {
        return Err(NoteError::MalformedNote(
            "invalid key name on a signature line",
        ));
    }
    let raw = canonical_b64(b64).ok_or(NoteError::MalformedNote(
        "a signature is not canonical standard base64",
    ))?;
    let (Some(id), Some(signature)) = (raw.get(..4), raw.get(4..)) else {
        return Err(NoteError::MalformedNote(
            "a signature is shorter than 5 bytes",
        ));
    };
    let id: [u8; 4] = id
        .try_into()
        .map_err(|_| NoteError::MalformedNote("a signature is shorter than 5 bytes"))?;
    if signature.is_empty() {
        return Err(NoteError::MalformedNote(
            "a signature is shorter than 5 bytes",
        ));
    }
    Ok(SignatureLine {
        name,
        id,
        signature: signature.to_vec(),
    })
}

/// Splits a note into its text (with the final newline) and its parsed signature lines.
///
/// The grammar (as golang.org/x/mod/sumdb/note): no character below U+0020 but LF anywhere; the
/// text ends at the *last* `"\n\n"` (its first newline is the text's last byte); after the
/// blank line, 1 to [`MAX_SIGNATURES`] lines `— <name> <base64>` each ending in LF, where the name
/// is a valid key name and the base64 is canonical and decodes to at least 5 bytes.
///
/// # Errors
/// [`NoteError::MalformedNote`].
pub fn split_note(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), NoteError> {
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::MalformedNote(
            "a control character other than LF",
        ));
    }
    let idx = note.rfind("\n\n").ok_or(NoteError::MalformedNote(
        "no blank line before the signatures",
    ))?;
    let (text, sigs) = note.split_at(idx + 1);
    let sigs = sigs
        .strip_prefix('\n')
        .ok_or(NoteError::MalformedNote("no blank line"))?;
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(NoteError::MalformedNote(
            "signatures must end with a newline",
        ));
    };
    let lines: Vec<SignatureLine<'_>> = sigs
        .split('\n')
        .map(parse_signature_line)
        .collect::<Result<_, _>>()?;
    if lines.len() > MAX_SIGNATURES {
        return Err(NoteError::MalformedNote("more than 100 signature lines"));
    }
    Ok((text, lines))
}

/// Verifies `note` against `key`. The note must be well formed ([`split_note`]); then the
/// **first** signature line whose name equals the key name *and* whose key id equals the key's id
/// decides: its signature must be 64 bytes and verify (Ed25519, strictly) over the text, or the
/// note is rejected. Lines by other keys, and later lines by this key, are ignored. Returns the
/// text.
///
/// # Errors
/// [`NoteError::MalformedNote`] for a malformed note, [`NoteError::BadSignature`] when the deciding
/// line does not verify, [`NoteError::NoValidSignature`] when no line is by `key`.
pub fn verify_note<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, NoteError> {
    let (text, lines) = split_note(note)?;
    let vk = VerifyingKey::from_bytes(&key.public_key)
        .map_err(|_| NoteError::MalformedKey(key.name.clone()))?;
    let Some(line) = lines.iter().find(|l| l.name == key.name && l.id == key.id) else {
        return Err(NoteError::NoValidSignature(key.name.clone()));
    };
    // Like Go's `note.Open`, a bad signature by the expected key rejects the note rather than
    // being skipped.
    let valid = <[u8; 64]>::try_from(line.signature.as_slice()).is_ok_and(|sig| {
        vk.verify_strict(text.as_bytes(), &Signature::from_bytes(&sig))
            .is_ok()
    });
    if !valid {
        return Err(NoteError::BadSignature(key.name.clone()));
    }
    Ok(text)
}

/// The body of a tlog checkpoint: origin, decimal size, base64 root, each on its own line.
pub fn checkpoint_body(origin: &str, size: u64, root: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Parses a checkpoint body into `(origin, size, root)`, strictly: the text must be exactly
/// `origin LF size LF root LF` — the origin non-empty with no character below U+0020, the size
/// `0` or a decimal without sign or leading zero that fits in a u64, the root the canonical
/// 44-character padded standard base64 of 32 bytes — and nothing else (Nodus checkpoints have no
/// extension lines). Every accepted text is the one [`checkpoint_body`] writes.
///
/// # Errors
/// [`NoteError::MalformedCheckpoint`].
pub fn parse_checkpoint_body(text: &str) -> Result<(String, u64, [u8; 32]), NoteError> {
    let body = text
        .strip_suffix('\n')
        .ok_or(NoteError::MalformedCheckpoint(
            "the text does not end in LF",
        ))?;
    let mut lines = body.split('\n');
    let (Some(origin), Some(size), Some(root), None) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Err(NoteError::MalformedCheckpoint(
            "not exactly three lines (origin, size, root)",
        ));
    };
    if origin.is_empty() || origin.chars().any(|c| c < ' ') {
        return Err(NoteError::MalformedCheckpoint("bad origin"));
    }
    let size = parse_canonical_u64(size).ok_or(NoteError::MalformedCheckpoint("bad size"))?;
    let root = canonical_b64(root)
        .and_then(|r| <[u8; 32]>::try_from(r).ok())
        .ok_or(NoteError::MalformedCheckpoint("bad root"))?;
    Ok((origin.to_owned(), size, root))
}

/// `0`, or ASCII digits without a leading zero, within u64.
fn parse_canonical_u64(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn the_c2sp_example_verifies() {
        let key = parse_verifier_key(SPEC_VKEY).unwrap();
        assert_eq!(key.name, "example.com/foo");
        assert_eq!(hex::encode(key.id), "530d903a");
        assert_eq!(verifier_key(&key.name, &key.public_key), SPEC_VKEY);
        assert_eq!(
            verify_note(SPEC_NOTE, &key).unwrap(),
            "This is an example message.\n"
        );
    }

    #[test]
    fn one_flipped_byte_fails() {
        let key = parse_verifier_key(SPEC_VKEY).unwrap();
        let bytes = SPEC_NOTE.as_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0x01;
            if let Ok(s) = std::str::from_utf8(&b) {
                assert!(
                    verify_note(s, &key).is_err(),
                    "flip at byte {i} still verifies"
                );
            }
        }
        // A key with a wrong id or name is refused.
        assert!(
            parse_verifier_key(
                "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
            )
            .is_err()
        );
        assert!(
            parse_verifier_key(
                "example.com/fo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
            )
            .is_err()
        );
    }

    #[test]
    fn sign_and_verify_a_checkpoint() {
        let sk = SigningKey::from_bytes(&[9u8; 32]);
        let pk = sk.verifying_key().to_bytes();
        let body = checkpoint_body("nodus.local/audit", 42, &[7u8; 32]);
        let sig = sk.sign(body.as_bytes()).to_bytes();
        let note = format!("{body}\n{}", signature_line("nodus.local/audit", &pk, &sig));
        let key = parse_verifier_key(&verifier_key("nodus.local/audit", &pk)).unwrap();
        let text = verify_note(&note, &key).unwrap();
        assert_eq!(
            parse_checkpoint_body(text).unwrap(),
            ("nodus.local/audit".into(), 42, [7u8; 32])
        );
        assert!(parse_checkpoint_body("o\n007\nAAAA\n").is_err());
    }
}
