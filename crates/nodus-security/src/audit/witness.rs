//! The witness: the latest signed checkpoint kept in a file outside the database, written
//! atomically after each new checkpoint is durable, and checked when the log opens.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::checkpoint::Checkpoint;
use super::error::AuditError;
use super::note::{parse_checkpoint_body, parse_verifier_key, verifier_key, verify_note};

/// `<database path>.witness`.
pub(crate) fn default_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".witness");
    PathBuf::from(s)
}

fn err(path: &Path, reason: impl std::fmt::Display) -> AuditError {
    AuditError::Witness {
        witness: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The witness note, or `None` when the file does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<String>, AuditError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| err(path, "not UTF-8 text")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(path, e)),
    }
}

/// Checks that `note` is a canonical checkpoint of `origin` signed by (`key_name`, `key`) under
/// the signature-selection rule, and returns it.
pub(crate) fn parse(
    path: &Path,
    note: &str,
    origin: &str,
    key_name: &str,
    key: &[u8; 32],
) -> Result<Checkpoint, AuditError> {
    let vkey = parse_verifier_key(&verifier_key(key_name, key)).map_err(|e| err(path, e))?;
    let text = verify_note(note, &vkey).map_err(|e| err(path, e))?;
    let (o, size, root) = parse_checkpoint_body(text).map_err(|e| err(path, e))?;
    if o != origin {
        return Err(err(path, "a checkpoint of another log (origin)"));
    }
    Ok(Checkpoint {
        origin: o,
        size,
        root,
    })
}

/// Replaces the witness with `note` atomically: a temporary file in the same directory is written
/// and fsync'd, renamed over the witness, and the directory is fsync'd (on Unix), so a crash
/// leaves either the old witness or the new one, never a torn one.
pub(crate) fn write(path: &Path, note: &str) -> Result<(), AuditError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
    f.write_all(note.as_bytes()).map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(path, format!("fsync of its directory: {e}")))?;
    }
    Ok(())
}
