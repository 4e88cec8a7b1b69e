//! [`CrdtError`]: why a CRDT document operation failed.

use nodus_fabric::{EventLogError, PayloadError};

/// Why a CRDT document operation failed. Messages are lowercase and name the document id, type or
/// label in backticks; they never carry document content, and a document the subject may not read
/// is reported exactly like a missing one.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CrdtError {
    /// No version of the document that the subject may read exists.
    #[error("document `{id}` not found")]
    NotFound {
        /// The id.
        id: String,
    },
    /// A create at a label where a version of the id already exists.
    #[error("document `{id}` already exists at label `{label}`")]
    AlreadyExists {
        /// The id.
        id: String,
        /// The label (one the subject may read).
        label: String,
    },
    /// The policy's write rule forbids the subject to write the document at this label.
    #[error("the subject may not write document `{id}` at label `{label}`")]
    WriteDenied {
        /// The id.
        id: String,
        /// The label (given by the caller, or of a version the subject may read).
        label: String,
    },
    /// The document type is not in `crdt.allowed_types`.
    #[error("document type `{doc_type}` is not allowed (`crdt.allowed_types`)")]
    TypeNotAllowed {
        /// The type.
        doc_type: String,
    },
    /// The document would exceed `crdt.max_doc_bytes`; nothing was written.
    #[error(
        "document `{id}` would be {size} bytes, above the limit of {max} bytes (`crdt.max_doc_bytes`); nothing was written"
    )]
    TooLarge {
        /// The id.
        id: String,
        /// Its size after the change (compacted).
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The id breaks the id rule.
    #[error("invalid document id: {reason}")]
    InvalidId {
        /// Why.
        reason: &'static str,
    },
    /// The document type breaks the type rule.
    #[error("invalid document type: {reason}")]
    InvalidType {
        /// Why.
        reason: &'static str,
    },
    /// The label text does not parse under the tenant's scheme.
    #[error("invalid label: {reason}")]
    BadLabel {
        /// Why.
        reason: String,
    },
    /// The initial content is not a JSON object.
    #[error("initial content of document `{id}` must be a JSON object")]
    NotAnObject {
        /// The id.
        id: String,
    },
    /// An op of a change cannot be applied; nothing was written.
    #[error("op {index} on document `{id}`: {reason}")]
    BadOp {
        /// The id.
        id: String,
        /// The op's position in the change, from 0.
        index: usize,
        /// Why (never the content).
        reason: &'static str,
    },
    /// A delta does not decode as automerge data, or depends on changes this store lacks.
    #[error("delta for document `{id}` does not decode or needs changes this store lacks")]
    BadDelta {
        /// The id.
        id: String,
    },
    /// An acknowledged head is not 64 lowercase hex digits.
    #[error("acknowledged head of document `{id}` is not 64 hex digits")]
    BadHeads {
        /// The id.
        id: String,
    },
    /// The document is nested deeper than [`MAX_DEPTH`](crate::crdt::MAX_DEPTH).
    #[error("document `{id}` is nested deeper than {max} levels")]
    TooDeep {
        /// The id.
        id: String,
        /// The limit.
        max: usize,
    },
    /// The document changed concurrently too many times in a row; retry.
    #[error("document `{id}` changed concurrently; retry")]
    Busy {
        /// The id.
        id: String,
    },
    /// The subject belongs to another tenant.
    #[error("the subject belongs to another tenant")]
    TenantMismatch,
    /// The subject's clearance was parsed under another label scheme than the snapshot's.
    #[error("the subject's clearance belongs to another label scheme: start a new session")]
    StaleSubject,
    /// The event log failed; nothing was written.
    #[error(transparent)]
    Log(#[from] EventLogError),
    /// An event payload could not be built (for example above the event payload limit).
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A projection row cannot be read back.
    #[error("crdt projection of document `{id}` is corrupt")]
    Corrupt {
        /// The id.
        id: String,
    },
}

impl CrdtError {
    /// The stable code of this error: its variant's name (`"NotFound"`, `"TooLarge"`, …), except
    /// [`CrdtError::Log`] and [`CrdtError::Payload`], which are `"StorageError"` and
    /// `"BadPayload"`. `docs.*` commands answer with it.
    pub const fn code(&self) -> &'static str {
        match self {
            CrdtError::NotFound { .. } => "NotFound",
            CrdtError::AlreadyExists { .. } => "AlreadyExists",
            CrdtError::WriteDenied { .. } => "WriteDenied",
            CrdtError::TypeNotAllowed { .. } => "TypeNotAllowed",
            CrdtError::TooLarge { .. } => "TooLarge",
            CrdtError::InvalidId { .. } => "InvalidId",
            CrdtError::InvalidType { .. } => "InvalidType",
            CrdtError::BadLabel { .. } => "BadLabel",
            CrdtError::NotAnObject { .. } => "NotAnObject",
            CrdtError::BadOp { .. } => "BadOp",
            CrdtError::BadDelta { .. } => "BadDelta",
            CrdtError::BadHeads { .. } => "BadHeads",
            CrdtError::TooDeep { .. } => "TooDeep",
            CrdtError::Busy { .. } => "Busy",
            CrdtError::TenantMismatch => "TenantMismatch",
            CrdtError::StaleSubject => "StaleSubject",
            CrdtError::Log(_) => "StorageError",
            CrdtError::Payload(_) => "BadPayload",
            CrdtError::Corrupt { .. } => "Corrupt",
        }
    }
}

impl From<rusqlite::Error> for CrdtError {
    fn from(e: rusqlite::Error) -> Self {
        CrdtError::Log(EventLogError::Storage(e.to_string()))
    }
}
