//! The export format: writing, reading and verifying a self-contained export file.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoint, SignedCheckpoint};
use super::error::{AuditError, storage};
use super::log::AuditLog;
use super::merkle::{Tree, leaf_hash};
use super::note::{parse_checkpoint_body, verifier_key};
use super::record::{AuditRecord, StoredRecord};
use super::store::{Material, load_material};
use super::verify::{TamperKind, VerifyReport, tamper, verify_material};

/// Summary of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Records exported.
    pub records: u64,
    /// Checkpoints exported.
    pub checkpoints: usize,
}

/// The export file format (see `docs/audit.md`).
#[derive(Serialize, Deserialize)]
struct ExportFile {
    format: String,
    origin: String,
    key_name: String,
    public_key: String,
    verifier_key: String,
    records: Vec<ExportRecord>,
    checkpoints: Vec<ExportCheckpoint>,
}

#[derive(Serialize, Deserialize)]
struct ExportRecord {
    seq: u64,
    leaf: String,
}

#[derive(Serialize, Deserialize)]
struct ExportCheckpoint {
    size: u64,
    note: String,
}

const EXPORT_FORMAT: &str = "nodus-audit-export-v1";

fn export_err(path: &Path, reason: impl std::fmt::Display) -> AuditError {
    AuditError::Export {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_export(path: &Path) -> Result<Material, AuditError> {
    let text = std::fs::read_to_string(path).map_err(|e| export_err(path, e))?;
    let f: ExportFile = serde_json::from_str(&text).map_err(|e| export_err(path, e))?;
    if f.format != EXPORT_FORMAT {
        return Err(export_err(path, format!("unknown format `{}`", f.format)));
    }
    let public_key = B64
        .decode(&f.public_key)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| export_err(path, "bad public key"))?;
    let mut records = Vec::with_capacity(f.records.len());
    for r in f.records {
        let leaf = B64
            .decode(&r.leaf)
            .map_err(|e| export_err(path, format!("record {}: {e}", r.seq)))?;
        records.push((r.seq, leaf, None));
    }
    Ok(Material {
        origin: f.origin,
        key_name: f.key_name,
        public_key,
        records,
        checkpoints: f
            .checkpoints
            .into_iter()
            .map(|c| (c.size, c.note))
            .collect(),
    })
}

/// The offline verifier: needs only an export file and a trusted public key.
///
/// # Errors
/// [`AuditError::Export`] when the file cannot be read or parsed.
pub fn verify_export(path: &Path, trusted_key: &[u8; 32]) -> Result<VerifyReport, AuditError> {
    let m = read_export(path)?;
    if &m.public_key != trusted_key {
        let mut r = verify_material(&m, trusted_key);
        if r.problem.is_none() {
            r.problem = Some(tamper(
                0,
                TamperKind::BadCheckpointSignature,
                "the export names another key than the trusted one",
            ));
            r.valid = false;
        }
        return Ok(r);
    }
    Ok(verify_material(&m, trusted_key))
}

/// An export's records, checkpoints and public key.
pub type ExportContents = (Vec<StoredRecord>, Vec<SignedCheckpoint>, [u8; 32]);

/// Reads an export's records and checkpoints (for tools: proofs, listings).
///
/// # Errors
/// [`AuditError::Export`].
pub fn read_export_records(path: &Path) -> Result<ExportContents, AuditError> {
    let m = read_export(path)?;
    let mut records = Vec::new();
    for (seq, leaf, _) in &m.records {
        let (_, record) = AuditRecord::decode(leaf)
            .map_err(|e| export_err(path, format!("record {seq}: {e}")))?;
        records.push(StoredRecord { seq: *seq, record });
    }
    let mut cps = Vec::new();
    for (_, note) in m.checkpoints {
        let body = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
        if let Ok((origin, size, root)) = parse_checkpoint_body(&body) {
            cps.push(SignedCheckpoint {
                checkpoint: Checkpoint { origin, size, root },
                note,
            });
        }
    }
    Ok((records, cps, m.public_key))
}

/// Leaf hashes of an export, for proofs.
///
/// # Errors
/// [`AuditError::Export`].
pub fn export_tree(path: &Path) -> Result<Tree, AuditError> {
    let m = read_export(path)?;
    let mut t = Tree::new();
    for (_, leaf, _) in &m.records {
        t.push(leaf_hash(leaf));
    }
    Ok(t)
}

impl AuditLog {
    /// Writes a self-contained export (records, checkpoints, the log's public key) to `path`.
    ///
    /// # Errors
    /// Storage or export errors.
    pub fn export(&self, path: &Path) -> Result<ExportSummary, AuditError> {
        let m = load_material(&self.reader.lock())?;
        write_export(&m, path)
    }

    /// Exports an audit database file (offline, read-only).
    ///
    /// # Errors
    /// Storage or export errors.
    pub fn export_db(db: &Path, path: &Path) -> Result<ExportSummary, AuditError> {
        let conn =
            Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
        write_export(&load_material(&conn)?, path)
    }
}

fn write_export(m: &Material, path: &Path) -> Result<ExportSummary, AuditError> {
    let f = ExportFile {
        format: EXPORT_FORMAT.into(),
        origin: m.origin.clone(),
        key_name: m.key_name.clone(),
        public_key: B64.encode(m.public_key),
        verifier_key: verifier_key(&m.key_name, &m.public_key),
        records: m
            .records
            .iter()
            .map(|(seq, leaf, _)| ExportRecord {
                seq: *seq,
                leaf: B64.encode(leaf),
            })
            .collect(),
        checkpoints: m
            .checkpoints
            .iter()
            .map(|(size, note)| ExportCheckpoint {
                size: *size,
                note: note.clone(),
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&f).map_err(|e| export_err(path, e))?;
    std::fs::write(path, text).map_err(|e| export_err(path, e))?;
    Ok(ExportSummary {
        records: m.records.len() as u64,
        checkpoints: m.checkpoints.len(),
    })
}
