//! The audit log's error type.

use super::merkle::TreeError;
use super::verify::Tamper;

/// Why an audit operation failed. Cloneable: a writer failure is kept and returned to every later
/// call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database could not be opened, read or written.
    #[error("audit storage error: {0}")]
    Storage(String),
    /// The writer stopped after an I/O or fsync error; it does not retry (a retried fsync can lie).
    #[error("the audit writer stopped after an error and accepts nothing more: {0}")]
    WriterStopped(String),
    /// The log was shut down.
    #[error("the audit log is shut down")]
    Closed,
    /// The checkpoint signer failed.
    #[error("checkpoint signing failed: {0}")]
    Signing(String),
    /// The stored log does not verify; it was not opened for writing.
    #[error("the audit log at `{path}` does not verify: {tamper}")]
    Tampered {
        /// The database path.
        path: String,
        /// The first problem.
        tamper: Tamper,
    },
    /// The log was created with another signing key.
    #[error("the audit log was created with signing key `{expected}`, not `{given}`")]
    WrongKey {
        /// The key id recorded in the log.
        expected: String,
        /// The key id of the signer given.
        given: String,
    },
    /// A proof was asked for sizes or indexes the tree does not have.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Opening refused: the log holds records or checkpoints but its witness file is missing
    /// (deleted, perhaps together with checkpoints). Nothing was written. Open with
    /// [`WitnessConfig::accept_missing`](super::WitnessConfig::accept_missing) to trust the log as
    /// it is and start a new witness.
    #[error(
        "the audit log at `{db}` has records but its witness `{witness}` is missing; nothing was written (open with `accept_missing` to trust the log as it is and start a new witness)"
    )]
    WitnessMissing {
        /// The database path.
        db: String,
        /// The witness path.
        witness: String,
    },
    /// The witness file cannot be read or written, or is not a canonical checkpoint of this log
    /// (its origin) signed by the log's key.
    #[error("audit witness `{witness}`: {reason}")]
    Witness {
        /// The witness path.
        witness: String,
        /// Why.
        reason: String,
    },
    /// Opening refused: the log does not extend the checkpoint its witness holds (records rolled
    /// back, rewritten, or checkpoints deleted). Nothing was written.
    #[error(
        "the audit log at `{db}` does not extend the checkpoint in its witness `{witness}`; nothing was written: {tamper}"
    )]
    WitnessNotExtended {
        /// The database path.
        db: String,
        /// The witness path.
        witness: String,
        /// The problem: [`TamperKind::WitnessNotExtended`](super::TamperKind::WitnessNotExtended)
        /// or [`TamperKind::UncoveredSignedHistory`](super::TamperKind::UncoveredSignedHistory).
        tamper: Tamper,
    },
    /// An export file could not be written or read.
    #[error("audit export `{path}`: {reason}")]
    Export {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

pub(crate) fn storage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(e.to_string())
}
