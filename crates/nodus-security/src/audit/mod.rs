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

mod checkpoint;
mod config;
mod error;
mod export;
mod intake;
mod log;
pub mod merkle;
pub mod note;
mod record;
mod signer;
mod sink;
mod store;
mod verify;
mod witness;
mod writer;

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use config::{AuditConfig, AuditStats, Durability, Overflow, WitnessConfig};
pub use error::AuditError;
pub use export::{ExportContents, ExportSummary, export_tree, read_export_records, verify_export};
pub use log::AuditLog;
pub use record::{AuditRecord, LEAF_TAG, Outcome, SharedStr, StoredRecord};
pub use signer::{CheckpointSigner, Ed25519Signer};
pub use sink::AuditSink;
pub use verify::{Tamper, TamperKind, VerifyReport, verify_db, verify_db_with_witness};
