//! Verification: re-deriving the tree from stored records and checking every checkpoint.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::error::{AuditError, storage};
use super::merkle::{Hash, Tree, leaf_hash, verify_consistency};
use super::note::{parse_checkpoint_body, parse_verifier_key, verifier_key, verify_note};
use super::record::AuditRecord;
use super::store::{Material, load_material};

/// What kind of tampering verification found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// A record's bytes changed.
    ModifiedRecord,
    /// A record is missing (deleted).
    MissingRecord,
    /// A record is stored at another index than it was written at.
    ReorderedRecord,
    /// Records below the latest checkpoint's size are gone.
    TruncatedTail,
    /// A checkpoint's signature does not verify with the log's key.
    BadCheckpointSignature,
    /// A checkpoint's root does not match the records, or contradicts another checkpoint.
    InconsistentCheckpoint,
    /// Something unparseable.
    Malformed,
}

/// The first problem verification found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?} at index {index}: {detail}")]
pub struct Tamper {
    /// The first bad index.
    pub index: u64,
    /// What is wrong.
    pub kind: TamperKind,
    /// Details.
    pub detail: String,
}

/// The result of verifying a log or an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `true` when nothing is wrong.
    pub valid: bool,
    /// Records in the log.
    pub size: u64,
    /// Stored checkpoints.
    pub checkpoints: usize,
    /// The latest checkpoint.
    pub latest: Option<Checkpoint>,
    /// The first problem, if any.
    pub problem: Option<Tamper>,
}

pub(crate) fn tamper(index: u64, kind: TamperKind, detail: impl Into<String>) -> Tamper {
    Tamper {
        index,
        kind,
        detail: detail.into(),
    }
}

/// Re-derives the tree from the records and checks every checkpoint against it and against `key`.
pub(crate) fn verify_material(m: &Material, key: &[u8; 32]) -> VerifyReport {
    let mut tree = Tree::new();
    let mut problem: Option<Tamper> = None;
    for (i, (seq, leaf, stored_hash)) in m.records.iter().enumerate() {
        let i = i as u64;
        if *seq != i {
            problem = Some(tamper(
                i,
                TamperKind::MissingRecord,
                format!("expected record {i}, found record {seq}"),
            ));
            break;
        }
        match AuditRecord::decode(leaf) {
            Err(why) => {
                problem = Some(tamper(
                    i,
                    TamperKind::ModifiedRecord,
                    format!("record does not decode: {why}"),
                ));
                break;
            }
            Ok((inner, _)) if inner != i => {
                problem = Some(tamper(
                    i,
                    TamperKind::ReorderedRecord,
                    format!("record written as {inner} is stored at {i}"),
                ));
                break;
            }
            Ok(_) => {}
        }
        let h = leaf_hash(leaf);
        if let Some(stored) = stored_hash
            && stored.as_slice() != h
        {
            problem = Some(tamper(
                i,
                TamperKind::ModifiedRecord,
                "record bytes do not match their leaf hash",
            ));
            break;
        }
        tree.push(h);
    }
    let size = tree.len();
    let mut latest = None;
    let name_key = verifier_key(&m.key_name, key);
    let vkey = parse_verifier_key(&name_key);
    let mut prev: Option<(u64, Hash)> = None;
    for (stored_size, note) in &m.checkpoints {
        if problem.is_some() {
            break;
        }
        let text = match vkey.as_ref().ok().map(|k| verify_note(note, k)) {
            Some(Ok(t)) => t,
            _ => {
                problem = Some(tamper(
                    *stored_size,
                    TamperKind::BadCheckpointSignature,
                    "checkpoint signature does not verify with the log key",
                ));
                break;
            }
        };
        let Ok((origin, cp_size, root)) = parse_checkpoint_body(text) else {
            problem = Some(tamper(
                *stored_size,
                TamperKind::Malformed,
                "checkpoint body does not parse",
            ));
            break;
        };
        if cp_size != *stored_size || origin != m.origin {
            problem = Some(tamper(
                *stored_size,
                TamperKind::InconsistentCheckpoint,
                "checkpoint stored under another size or origin",
            ));
            break;
        }
        if cp_size > size {
            problem = Some(tamper(
                size,
                TamperKind::TruncatedTail,
                format!("log has {size} records, checkpoint {cp_size} was signed"),
            ));
            break;
        }
        match tree.root(cp_size) {
            Ok(r) if r == root => {}
            _ => {
                let from = prev.map_or(0, |(s, _)| s);
                problem = Some(tamper(
                    from,
                    TamperKind::ModifiedRecord,
                    format!("records {from}..{cp_size} do not match the signed checkpoint root"),
                ));
                break;
            }
        }
        if let Some((ps, pr)) = prev.filter(|(s, _)| *s > 0) {
            let consistent = tree
                .consistency_proof(ps, cp_size)
                .map(|p| verify_consistency(ps, cp_size, &pr, &root, &p))
                .unwrap_or(false);
            if !consistent {
                problem = Some(tamper(
                    ps,
                    TamperKind::InconsistentCheckpoint,
                    format!("checkpoint {cp_size} contradicts checkpoint {ps}"),
                ));
                break;
            }
        }
        prev = Some((cp_size, root));
        latest = Some(Checkpoint {
            origin,
            size: cp_size,
            root,
        });
    }
    VerifyReport {
        valid: problem.is_none(),
        size,
        checkpoints: m.checkpoints.len(),
        latest,
        problem,
    }
}

/// Verifies an audit database file offline with `key` (or, when `None`, the key stored in the file
/// itself — which proves integrity against accidents, not against someone who can rewrite the file).
///
/// # Errors
/// Storage errors.
pub fn verify_db(path: &Path, key: Option<&[u8; 32]>) -> Result<VerifyReport, AuditError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
    let m = load_material(&conn)?;
    Ok(verify_material(&m, key.unwrap_or(&m.public_key)))
}
