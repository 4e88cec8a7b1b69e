//! Verification: re-deriving the tree from stored records and checking every checkpoint.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::error::{AuditError, storage};
use super::merkle::{Hash, Tree, empty_root, leaf_hash, verify_consistency};
use super::note::{
    NoteError, parse_checkpoint_body, parse_verifier_key, verifier_key, verify_note,
};
use super::record::AuditRecord;
use super::store::{Material, load_material};
use super::witness;

/// What kind of problem verification found. Serialized in `snake_case` (`modified_record`, …);
/// `docs/audit.md` defines each kind and the order in which the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TamperKind {
    /// A record's bytes changed: they no longer match their stored leaf hash or a signed root, or
    /// they are not a canonical leaf encoding.
    ModifiedRecord,
    /// A record is missing (deleted): the record at position `i` has a sequence number above `i`.
    MissingRecord,
    /// A record appears twice (in an export): the record at position `i` has a sequence number
    /// below `i`.
    DuplicateRecord,
    /// A record is stored at another index than it was written at.
    ReorderedRecord,
    /// Records below a signed checkpoint's size are gone.
    TruncatedTail,
    /// A well-formed checkpoint note carries no valid signature by the log's key.
    BadCheckpointSignature,
    /// A checkpoint is stored under another size or origin than it names, out of order, or
    /// contradicts an earlier one.
    InconsistentCheckpoint,
    /// A checkpoint note, or the checkpoint text it signs, is not in its canonical form.
    Malformed,
    /// An export names another key than the trusted one (its `public_key` or `verifier_key`).
    KeyMismatch,
    /// The log does not extend the witnessed checkpoint: it has fewer records than the witness
    /// covers (rolled back or truncated), or its records do not lead to the witnessed root
    /// (rewritten).
    WitnessNotExtended,
    /// The records extend the witnessed checkpoint, but no stored checkpoint covers it any more:
    /// signed checkpoints were deleted, leaving signed history uncovered.
    UncoveredSignedHistory,
}

/// The first problem verification found. It carries no record content (no tenant, actor,
/// command or detail text): only a kind, an index and a fixed sentence with numbers in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?} at index {index}: {detail}")]
pub struct Tamper {
    /// The first bad index (a leaf index or a checkpoint size, see `docs/audit.md`).
    pub index: u64,
    /// What is wrong.
    pub kind: TamperKind,
    /// A human-readable sentence (informative, not normative; never record content).
    pub detail: String,
}

/// The result of verifying a log or an export. It carries no record content, so it may be shown
/// to anyone allowed to know that the log is (in)valid. Its JSON form is documented in
/// `docs/audit.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// `true` when nothing is wrong (`problem` is `None`).
    pub valid: bool,
    /// Records that passed the record checks, in order (all of them when no record problem).
    pub size: u64,
    /// Checkpoints stored (or in the export), verified or not.
    pub checkpoints: usize,
    /// The newest checkpoint that verified before the first problem.
    pub latest: Option<Checkpoint>,
    /// Records (of `size`) that no verified checkpoint covers: `size - latest.size` (all of them
    /// when `latest` is `None`). Records written since the last checkpoint are uncovered until the
    /// next one; signed history that became uncovered is a problem only a witness can show.
    #[serde(default)]
    pub uncovered: u64,
    /// The size of the witnessed checkpoint the log was checked against (`None`: no witness).
    #[serde(default)]
    pub witnessed: Option<u64>,
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

/// The record checks, in order: position, strict decoding, embedded index, stored hash. Pushes
/// each good leaf's hash into `tree`; returns the first problem.
fn check_records(m: &Material, tree: &mut Tree) -> Option<Tamper> {
    for (i, (seq, leaf, stored_hash)) in m.records.iter().enumerate() {
        let i = i as u64;
        if *seq > i {
            return Some(tamper(
                i,
                TamperKind::MissingRecord,
                format!("expected record {i}, found record {seq}"),
            ));
        }
        if *seq < i {
            return Some(tamper(
                i,
                TamperKind::DuplicateRecord,
                format!("record {seq} appears again at position {i}"),
            ));
        }
        match AuditRecord::decode(leaf) {
            Err(why) => {
                return Some(tamper(
                    i,
                    TamperKind::ModifiedRecord,
                    format!("record does not decode: {why}"),
                ));
            }
            Ok((inner, _)) if inner != i => {
                return Some(tamper(
                    i,
                    TamperKind::ReorderedRecord,
                    format!("record written as {inner} is stored at {i}"),
                ));
            }
            Ok(_) => {}
        }
        let h = leaf_hash(leaf);
        if let Some(stored) = stored_hash
            && stored.as_slice() != h
        {
            return Some(tamper(
                i,
                TamperKind::ModifiedRecord,
                "record bytes do not match their leaf hash",
            ));
        }
        tree.push(h);
    }
    None
}

/// The checkpoint checks, in stored (increasing size) order. Sets `latest` to each checkpoint
/// that verifies; returns the first problem.
fn check_checkpoints(
    m: &Material,
    key: &[u8; 32],
    tree: &Tree,
    latest: &mut Option<Checkpoint>,
) -> Option<Tamper> {
    let size = tree.len();
    let vkey = parse_verifier_key(&verifier_key(&m.key_name, key));
    let mut prev: Option<(u64, Hash)> = None;
    for (stored_size, note) in &m.checkpoints {
        let text = match vkey.as_ref().map(|k| verify_note(note, k)) {
            Ok(Ok(t)) => t,
            Ok(Err(NoteError::MalformedNote(why))) => {
                return Some(tamper(
                    *stored_size,
                    TamperKind::Malformed,
                    format!("checkpoint note is malformed: {why}"),
                ));
            }
            _ => {
                return Some(tamper(
                    *stored_size,
                    TamperKind::BadCheckpointSignature,
                    "checkpoint signature does not verify with the log key",
                ));
            }
        };
        let (origin, cp_size, root) = match parse_checkpoint_body(text) {
            Ok(c) => c,
            Err(e) => {
                return Some(tamper(
                    *stored_size,
                    TamperKind::Malformed,
                    format!("checkpoint text is not canonical: {e}"),
                ));
            }
        };
        if cp_size != *stored_size || origin != m.origin {
            return Some(tamper(
                *stored_size,
                TamperKind::InconsistentCheckpoint,
                "checkpoint stored under another size or origin",
            ));
        }
        if let Some((ps, _)) = prev
            && cp_size <= ps
        {
            return Some(tamper(
                cp_size,
                TamperKind::InconsistentCheckpoint,
                format!("checkpoint {cp_size} follows checkpoint {ps}: sizes must increase"),
            ));
        }
        if cp_size > size {
            return Some(tamper(
                size,
                TamperKind::TruncatedTail,
                format!("log has {size} records, checkpoint {cp_size} was signed"),
            ));
        }
        match tree.root(cp_size) {
            Ok(r) if r == root => {}
            _ => {
                let from = prev.map_or(0, |(s, _)| s);
                return Some(tamper(
                    from,
                    TamperKind::ModifiedRecord,
                    format!("records {from}..{cp_size} do not match the signed checkpoint root"),
                ));
            }
        }
        if let Some((ps, pr)) = prev.filter(|(s, _)| *s > 0) {
            let consistent = tree
                .consistency_proof(ps, cp_size)
                .map(|p| verify_consistency(ps, cp_size, &pr, &root, &p))
                .unwrap_or(false);
            if !consistent {
                return Some(tamper(
                    ps,
                    TamperKind::InconsistentCheckpoint,
                    format!("checkpoint {cp_size} contradicts checkpoint {ps}"),
                ));
            }
        }
        prev = Some((cp_size, root));
        *latest = Some(Checkpoint {
            origin,
            size: cp_size,
            root,
        });
    }
    None
}

/// The witness checks, after every stored checkpoint verified: the records must extend the
/// witnessed checkpoint (a consistency proof from it to the whole tree), and a stored checkpoint
/// must still cover it.
fn check_witness(tree: &Tree, latest: Option<&Checkpoint>, w: &Checkpoint) -> Option<Tamper> {
    let size = tree.len();
    let covered = latest.map_or(0, |c| c.size);
    let (ws, wr) = (w.size, w.root);
    let extended = if ws > size {
        false
    } else if ws == 0 {
        wr == empty_root()
    } else {
        match (tree.consistency_proof(ws, size), tree.root(size)) {
            (Ok(proof), Ok(root)) => verify_consistency(ws, size, &wr, &root, &proof),
            _ => false,
        }
    };
    if !extended {
        let index = if ws > size {
            size
        } else {
            latest.map_or(0, |c| c.size.min(ws))
        };
        return Some(tamper(
            index,
            TamperKind::WitnessNotExtended,
            format!(
                "the log ({size} records) does not extend the witnessed checkpoint of size {ws}"
            ),
        ));
    }
    if covered < ws {
        return Some(tamper(
            covered,
            TamperKind::UncoveredSignedHistory,
            format!(
                "records {covered}..{ws} were covered by a signed checkpoint (the witness) that the log no longer stores"
            ),
        ));
    }
    None
}

/// Re-derives the tree from the records and checks every checkpoint against it and against `key`,
/// then (when given) that the log extends the `witness` checkpoint and still stores one covering
/// it.
pub(crate) fn verify_material(
    m: &Material,
    key: &[u8; 32],
    witness: Option<&Checkpoint>,
) -> VerifyReport {
    let mut tree = Tree::new();
    let mut latest = None;
    let problem = check_records(m, &mut tree)
        .or_else(|| check_checkpoints(m, key, &tree, &mut latest))
        .or_else(|| witness.and_then(|w| check_witness(&tree, latest.as_ref(), w)));
    let size = tree.len();
    VerifyReport {
        valid: problem.is_none(),
        size,
        checkpoints: m.checkpoints.len(),
        uncovered: size.saturating_sub(latest.as_ref().map_or(0, |c| c.size)),
        witnessed: witness.map(|w| w.size),
        latest,
        problem,
    }
}

/// Verifies an audit database file offline with `key` (or, when `None`, the key stored in the file
/// itself — which proves integrity against accidents, not against someone who can rewrite the
/// file), and against its witness beside it (`<path>.witness`) when that file exists. See
/// [`verify_db_with_witness`] to name the witness.
///
/// # Errors
/// Storage errors; [`AuditError::Witness`] when the witness exists but is not a checkpoint of this
/// log signed by the key.
pub fn verify_db(path: &Path, key: Option<&[u8; 32]>) -> Result<VerifyReport, AuditError> {
    let beside = witness::default_path(path);
    let w = beside.is_file().then_some(beside);
    verify_db_with_witness(path, key, w.as_deref())
}

/// Verifies an audit database file offline with `key` (or the key stored in the file) and, when
/// `witness` is given, against the checkpoint in that witness file: the log must extend it and
/// still store a checkpoint covering it (see `docs/audit.md`).
///
/// # Errors
/// Storage errors; [`AuditError::Witness`] when the witness cannot be read (a named witness must
/// exist) or is not a canonical checkpoint of this log signed by the key.
pub fn verify_db_with_witness(
    path: &Path,
    key: Option<&[u8; 32]>,
    witness: Option<&Path>,
) -> Result<VerifyReport, AuditError> {
    if !path.is_file() {
        return Err(AuditError::Storage(format!(
            "`{}` is not a file",
            path.display()
        )));
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
    let m = load_material(&conn)?;
    let key = key.unwrap_or(&m.public_key);
    let Some(wp) = witness else {
        return Ok(verify_material(&m, key, None));
    };
    let parsed = witness::read(wp).and_then(|note| {
        let note = note.ok_or_else(|| AuditError::Witness {
            witness: wp.display().to_string(),
            reason: "not found".into(),
        })?;
        witness::parse(wp, &note, &m.origin, &m.key_name, key)
    });
    match parsed {
        Ok(w) => Ok(verify_material(&m, key, Some(&w))),
        // The database's own checks come first: a log that fails them is reported as such;
        // only a log that passes them is refused for a bad witness.
        Err(e) => {
            let r = verify_material(&m, key, None);
            if r.valid { Err(e) } else { Ok(r) }
        }
    }
}
