//! The export format: writing, reading and verifying a self-contained export file.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::checkpoint::SignedCheckpoint;
use super::error::{AuditError, storage};
use super::log::AuditLog;
use super::merkle::{Tree, leaf_hash};
use super::note::verifier_key;
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

/// The export file format (see `docs/audit.md`). Unknown fields are refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
struct ExportRecord {
    seq: u64,
    leaf: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// Standard base64 with padding, in its one canonical form.
fn canonical_b64(s: &str) -> Option<Vec<u8>> {
    let raw = B64.decode(s).ok()?;
    (B64.encode(&raw) == s).then_some(raw)
}

/// Reads and parses an export: its material and its `verifier_key` string.
fn read_export(path: &Path) -> Result<(Material, String), AuditError> {
    let text = std::fs::read_to_string(path).map_err(|e| export_err(path, e))?;
    let f: ExportFile = serde_json::from_str(&text).map_err(|e| export_err(path, e))?;
    if f.format != EXPORT_FORMAT {
        return Err(export_err(path, format!("unknown format `{}`", f.format)));
    }
    let public_key = canonical_b64(&f.public_key)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| export_err(path, "`public_key` is not the base64 of 32 bytes"))?;
    let mut records = Vec::with_capacity(f.records.len());
    for (i, r) in f.records.into_iter().enumerate() {
        let leaf = canonical_b64(&r.leaf).ok_or_else(|| {
            export_err(
                path,
                format!("`records[{i}].leaf` is not canonical standard base64"),
            )
        })?;
        records.push((r.seq, leaf, None));
    }
    Ok((
        Material {
            origin: f.origin,
            key_name: f.key_name,
            public_key,
            records,
            checkpoints: f
                .checkpoints
                .into_iter()
                .map(|c| (c.size, c.note))
                .collect(),
        },
        f.verifier_key,
    ))
}

/// The offline verifier: needs only an export file and a trusted public key.
///
/// First the key check: the export's `public_key` must be `trusted_key` and its `verifier_key`
/// must be exactly `verifier_key(key_name, trusted_key)` (see [`note::verifier_key`]), else the
/// report's problem is [`TamperKind::KeyMismatch`] at index 0 and nothing else is checked. Then the
/// records and checkpoints, as for a database (see `docs/audit.md`).
///
/// [`note::verifier_key`]: super::note::verifier_key
///
/// # Errors
/// [`AuditError::Export`] when the file cannot be read or parsed.
pub fn verify_export(path: &Path, trusted_key: &[u8; 32]) -> Result<VerifyReport, AuditError> {
    let (m, vkey) = read_export(path)?;
    if &m.public_key != trusted_key || vkey != verifier_key(&m.key_name, trusted_key) {
        return Ok(VerifyReport {
            valid: false,
            size: 0,
            checkpoints: m.checkpoints.len(),
            latest: None,
            uncovered: 0,
            witnessed: None,
            problem: Some(tamper(
                0,
                TamperKind::KeyMismatch,
                "the export's `public_key` or `verifier_key` is not the trusted key",
            )),
        });
    }
    Ok(verify_material(&m, trusted_key, None))
}

/// An export's records, checkpoints and public key.
pub type ExportContents = (Vec<StoredRecord>, Vec<SignedCheckpoint>, [u8; 32]);

/// Reads an export's records and checkpoints (for tools: proofs, listings).
///
/// # Errors
/// [`AuditError::Export`].
pub fn read_export_records(path: &Path) -> Result<ExportContents, AuditError> {
    let (m, _) = read_export(path)?;
    let mut records = Vec::new();
    for (seq, leaf, _) in &m.records {
        let (_, record) = AuditRecord::decode(leaf)
            .map_err(|e| export_err(path, format!("record {seq}: {e}")))?;
        records.push(StoredRecord { seq: *seq, record });
    }
    let cps = m
        .checkpoints
        .into_iter()
        .filter_map(|(_, note)| SignedCheckpoint::from_note(note))
        .collect();
    Ok((records, cps, m.public_key))
}

/// Leaf hashes of an export, for proofs.
///
/// # Errors
/// [`AuditError::Export`].
pub fn export_tree(path: &Path) -> Result<Tree, AuditError> {
    let (m, _) = read_export(path)?;
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
