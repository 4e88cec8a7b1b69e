#![doc = include_str!("../README.md")]

pub mod crdt;
mod error;
mod export;
pub mod format;
mod import;
pub mod transport;
mod trust;
mod verify;

pub use crdt::{
    AutomergeStore, CRDT_TABLES, CrdtError, CrdtIngestReport, CrdtLimits, CrdtStore, DocOp,
};
pub use error::{ExportError, RejectReason, Rejection, StoreError};
pub use export::{ChainRange, DEFAULT_PAGE_SIZE, ExportReport, Exporter};
pub use format::{BundleId, BundleIdError, EntryKind};
pub use import::{
    ActivateReport, Admission, AdmitAll, Decision, Importer, LedgerEntry, QuarantinedEvent,
    ReleaseReport, StagedBundle,
};
pub use transport::{
    Batch, BatchBody, BatchError, DiffTransport, FileDropTransport, MemoryTransport, PeerStatus,
    SignedBatch, Subscription, TransportError, Want,
};
pub use trust::{
    BundleSigner, Clock, Ed25519BundleSigner, FixedClock, SignerError, SystemClock, TrustStore,
    TrustedKey,
};
pub use verify::{BundleSummary, ChainPlan, EntryInfo, Limits, OpaqueEntry};

/// The age crate this one encrypts with, for its `x25519::Identity` and `x25519::Recipient`.
pub use age;
