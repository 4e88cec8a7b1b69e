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

/// Parses `<name>+<hex key id>+<base64(0x01 ‖ pk)>`, checking that the id matches the key.
///
/// # Errors
/// [`NoteError::MalformedKey`].
pub fn parse_verifier_key(vkey: &str) -> Result<VerifierKey, NoteError> {
    let bad = || NoteError::MalformedKey(vkey.to_owned());
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
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
    if key_id(name, &public_key) != id {
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

/// Splits a note into its text (with the final newline) and its signature lines.
///
/// # Errors
/// [`NoteError::MalformedNote`].
pub fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    let idx = note.rfind("\n\n").ok_or(NoteError::MalformedNote(
        "no blank line before the signatures",
    ))?;
    let (text, sigs) = note.split_at(idx + 1);
    let sigs = sigs
        .strip_prefix('\n')
        .ok_or(NoteError::MalformedNote("no blank line"))?;
    if !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote(
            "signatures must end with a newline",
        ));
    }
    let lines: Vec<&str> = sigs.lines().collect();
    if lines.is_empty() || lines.iter().any(|l| !l.starts_with("— ")) {
        return Err(NoteError::MalformedNote(
            "a signature line starts with `— `",
        ));
    }
    Ok((text, lines))
}

/// Verifies `note` against `key`: the first signature line that names the key and carries its id
/// must hold an Ed25519 signature over the text that verifies (strictly). Lines by other keys are
/// ignored. Returns the text.
///
/// # Errors
/// [`NoteError`] when the note is malformed or no signature by `key` verifies.
pub fn verify_note<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, NoteError> {
    let (text, lines) = split_note(note)?;
    let vk = VerifyingKey::from_bytes(&key.public_key)
        .map_err(|_| NoteError::MalformedKey(key.name.clone()))?;
    for line in lines {
        let Some(rest) = line.strip_prefix("— ") else {
            continue;
        };
        let Some((name, b64)) = rest.split_once(' ') else {
            continue;
        };
        if name != key.name {
            continue;
        }
        let Ok(raw) = B64.decode(b64) else { continue };
        let (Some(id), Some(sig)) = (raw.get(..4), raw.get(4..)) else {
            continue;
        };
        if id != key.id {
            continue;
        }
        // A line that names this key and carries its id must verify: like Go's `note.Open`, a
        // bad signature by the expected key rejects the note rather than being skipped.
        let valid = <[u8; 64]>::try_from(sig).is_ok_and(|sig| {
            vk.verify_strict(text.as_bytes(), &Signature::from_bytes(&sig))
                .is_ok()
        });
        if !valid {
            return Err(NoteError::BadSignature(key.name.clone()));
        }
        return Ok(text);
    }
    Err(NoteError::NoValidSignature(key.name.clone()))
}

/// The body of a tlog checkpoint: origin, decimal size, base64 root, each on its own line.
pub fn checkpoint_body(origin: &str, size: u64, root: &[u8; 32]) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Parses a checkpoint body into `(origin, size, root)` (extension lines are ignored).
///
/// # Errors
/// [`NoteError::MalformedCheckpoint`].
pub fn parse_checkpoint_body(text: &str) -> Result<(String, u64, [u8; 32]), NoteError> {
    let mut lines = text.lines();
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or(NoteError::MalformedCheckpoint("no origin"))?;
    let size = lines
        .next()
        .and_then(|s| {
            if s.starts_with('0') && s.len() > 1 {
                None
            } else {
                s.parse::<u64>().ok()
            }
        })
        .ok_or(NoteError::MalformedCheckpoint("bad size"))?;
    let root = lines
        .next()
        .and_then(|r| B64.decode(r).ok())
        .and_then(|r| <[u8; 32]>::try_from(r).ok())
        .ok_or(NoteError::MalformedCheckpoint("bad root"))?;
    Ok((origin.to_owned(), size, root))
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
