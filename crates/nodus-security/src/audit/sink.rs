//! The `AuditSink` trait: what the dispatcher records into.

use super::checkpoint::SignedCheckpoint;
use super::config::AuditStats;
use super::error::AuditError;
use super::record::{AuditRecord, StoredRecord};
use super::verify::VerifyReport;

/// The sink every audited action goes to. Object safe; `AuditLog` is the default.
pub trait AuditSink: Send + Sync {
    /// Enqueues a record. The hot path: it allocates nothing and, under `DropWithMarker`, never
    /// blocks. After a writer failure every call returns the stored error.
    ///
    /// # Errors
    /// [`AuditError::WriterStopped`] or [`AuditError::Closed`].
    fn record(&self, record: AuditRecord) -> Result<(), AuditError>;
    /// Whether the sink can take records now: `Err` once the writer stopped or the log was shut
    /// down. The dispatcher asks before running a handler, so nothing acts unaudited. Cheap (an
    /// atomic load); the default says yes.
    ///
    /// # Errors
    /// The error `record` would return.
    fn check(&self) -> Result<(), AuditError> {
        Ok(())
    }
    /// A barrier: returns once everything enqueued before it is durable, with the checkpoint
    /// covering it.
    ///
    /// # Errors
    /// The writer's error.
    fn flush(&self) -> Result<SignedCheckpoint, AuditError>;
    /// Re-derives the tree from the stored records and checks every stored checkpoint (and, for
    /// [`AuditLog`](super::AuditLog), that the latest checkpoint it signed is still stored and
    /// extended). The report counts the records no checkpoint covers (`uncovered`).
    ///
    /// # Errors
    /// Storage errors (tampering is reported in the report, not as an error).
    fn verify(&self) -> Result<VerifyReport, AuditError>;
    /// Writer counters.
    fn stats(&self) -> AuditStats;
    /// Records durable in the tree.
    ///
    /// # Errors
    /// Storage errors.
    fn size(&self) -> Result<u64, AuditError>;
    /// The latest stored checkpoint.
    ///
    /// # Errors
    /// Storage errors.
    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError>;
    /// The last `n` records, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    fn tail(&self, n: usize) -> Result<Vec<StoredRecord>, AuditError>;
    /// The log's Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Drains the queue, signs a final checkpoint and joins the writer. Idempotent.
    ///
    /// # Errors
    /// The writer's error.
    fn shutdown(&self) -> Result<(), AuditError>;
}
