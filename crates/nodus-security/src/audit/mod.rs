//! The tamper-evident audit log: records are leaves of an RFC 6962 Merkle tree stored in SQLite,
//! C2SP-signed checkpoints are made every N records or T ms, one writer thread group-commits a
//! bounded queue. See `docs/audit.md` for the formats and the guarantees.
//!
//! ```
//! use std::sync::Arc;
//! use nodus_security::audit::{AuditConfig, AuditLog, AuditRecord, AuditSink, Ed25519Signer, Outcome};
//!
//! let signer = Arc::new(Ed25519Signer::generate("example.com/audit").unwrap());
//! let log = AuditLog::in_memory(signer, AuditConfig { origin: "example.com/audit".into(), ..Default::default() }).unwrap();
//! log.record(AuditRecord::new("dispatch", Outcome::Allowed).command("notes.create")).unwrap();
//! let checkpoint = log.flush().unwrap();            // durable, with the signed checkpoint covering it
//! assert_eq!(checkpoint.checkpoint.size, 1);
//! let proof = log.inclusion_proof(0, 1).unwrap();   // verifiable offline with `merkle::verify_inclusion`
//! assert!(proof.is_empty());
//! assert!(log.verify().unwrap().valid);
//! log.shutdown().unwrap();
//! ```

mod intake;
mod log;
pub mod merkle;
pub mod note;
mod record;

pub use log::{
    AuditConfig, AuditError, AuditLog, AuditSink, AuditStats, Checkpoint, CheckpointSigner,
    Durability, Ed25519Signer, ExportContents, ExportSummary, Overflow, SignedCheckpoint, Tamper,
    TamperKind, VerifyReport, export_tree, read_export_records, verify_db, verify_export,
};
pub use record::{AuditRecord, LEAF_TAG, Outcome, SharedStr, StoredRecord};
