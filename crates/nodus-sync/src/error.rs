//! Errors: why a bundle was refused, why an export or a store operation failed.

use std::fmt;

use nodus_fabric::{ChainId, EventLogError};
use nodus_policy::TenantId;

use crate::format::BundleId;
use crate::trust::SignerError;

/// Why a bundle was refused, in the order the importer checks (see `docs/sync.md`, "Check
/// order"). Each reason has a stable [`code`](RejectReason::code) for audit records.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The file is larger than [`Limits::max_file`](crate::Limits::max_file).
    #[error("the file is {size} bytes, the limit is {max}")]
    FileTooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The declared manifest length is above the limit.
    #[error("the manifest is {len} bytes, the limit is {max}")]
    ManifestTooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An entry's declared length is above the limit for its kind.
    #[error("entry `{index}` is {len} bytes, the limit is {max}")]
    EntryTooLarge {
        /// The entry's index.
        index: usize,
        /// Declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The declared payload plaintext length is above the limit.
    #[error("the payload is {len} bytes once decrypted and decompressed, the limit is {max}")]
    PayloadTooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The manifest lists more chains, entries or recipients than allowed.
    #[error("the manifest lists {count} {what}, the limit is {max}")]
    TooMany {
        /// `chains`, `entries` or `recipients`.
        what: &'static str,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The file is not a bundle this version can read: bad magic, truncated header, a manifest
    /// that is not canonical JSON of the expected shape, inconsistent declarations.
    #[error("not a well-formed bundle: {0}")]
    Malformed(String),
    /// The header's format version is not one this crate reads.
    #[error("bundle format version `{0}` is not supported")]
    UnsupportedVersion(u16),
    /// The sender's key id is not in the trust store, or names another public key.
    #[error("sender key `{key_id}` is not trusted")]
    UntrustedKey {
        /// The key id the manifest names.
        key_id: String,
    },
    /// The sender's key is revoked.
    #[error("sender key `{key_id}` is revoked")]
    RevokedKey {
        /// The key id.
        key_id: String,
    },
    /// The sender's key is trusted, but not for the bundle's tenant.
    #[error("sender key `{key_id}` is not trusted for tenant `{tenant}`")]
    KeyNotForTenant {
        /// The key id.
        key_id: String,
        /// The bundle's tenant.
        tenant: String,
    },
    /// The sender's key is past its trust end.
    #[error("sender key `{key_id}` expired at {not_after}")]
    KeyExpired {
        /// The key id.
        key_id: String,
        /// Its trust end, unix seconds.
        not_after: u64,
    },
    /// The signature does not verify over the manifest.
    #[error("the manifest signature does not verify")]
    BadSignature,
    /// The bundle is past its expiry.
    #[error("the bundle expired at {expires_at} (now {now})")]
    Expired {
        /// Its expiry, unix seconds.
        expires_at: u64,
        /// The receiver's clock.
        now: u64,
    },
    /// The bundle claims to be made later than the receiver's clock plus the allowed skew.
    #[error("the bundle was created at {created_at}, in the future (now {now})")]
    CreatedInFuture {
        /// Its creation time, unix seconds.
        created_at: u64,
        /// The receiver's clock.
        now: u64,
    },
    /// The bundle id is in the replay ledger: it was activated already.
    #[error("the bundle was imported already")]
    Replayed,
    /// The bundle is for another tenant than the one importing.
    #[error("the bundle is for tenant `{found}`, not `{expected}`")]
    WrongTenant {
        /// The tenant importing.
        expected: TenantId,
        /// The tenant the manifest names.
        found: TenantId,
    },
    /// The receiver's identity is not among the manifest's recipients.
    #[error("this receiver is not a recipient of the bundle")]
    NotARecipient,
    /// The payload does not decrypt or decompress (age header, MAC, a chunk, DEFLATE data).
    #[error("the payload does not decrypt: {0}")]
    Decrypt(String),
    /// An entry's frame does not match the manifest (kind, length), or bytes follow the last one.
    #[error("entry `{index}` does not match the manifest: {detail}")]
    EntryLength {
        /// The entry's index.
        index: usize,
        /// What differs.
        detail: String,
    },
    /// An entry's SHA-256 is not the manifest's.
    #[error("entry `{index}` digest does not match the manifest")]
    EntryDigest {
        /// The entry's index.
        index: usize,
    },
    /// The receiver does not hold the events the bundle builds on.
    #[error("chain `{chain}` needs seq {need} here, this receiver has {have}")]
    MissingPrerequisite {
        /// The chain.
        chain: ChainId,
        /// The seq the receiver must hold contiguously.
        need: u64,
        /// The receiver's high-water mark.
        have: u64,
    },
    /// An event does not decode, its link or seq is wrong, or the range differs from the manifest.
    #[error("chain `{chain}` is broken at seq {seq}: {detail}")]
    BrokenChain {
        /// The chain.
        chain: ChainId,
        /// The seq at fault (as expected at that place).
        seq: u64,
        /// What.
        detail: String,
    },
    /// An event contradicts what the receiver holds (same seq, other hash; or another predecessor).
    #[error("chain `{chain}` equivocates at seq {seq}: the receiver holds another event there")]
    Equivocation {
        /// The chain.
        chain: ChainId,
        /// The seq.
        seq: u64,
    },
    /// The bundle carries new events of the receiver's own chain, which only it appends.
    #[error("chain `{chain}` is this receiver's own chain and the bundle extends it")]
    LocalChain {
        /// The chain.
        chain: ChainId,
    },
    /// `activate` or `discard` named a bundle that is not staged.
    #[error("bundle `{0}` is not staged")]
    NotStaged(BundleId),
    /// Reading the file or writing the staging copy failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// The sync store or the event log failed.
    #[error("storage error: {0}")]
    Storage(String),
}

impl RejectReason {
    /// A stable code for audit records and host logic.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::FileTooLarge { .. } => "file_too_large",
            RejectReason::ManifestTooLarge { .. } => "manifest_too_large",
            RejectReason::EntryTooLarge { .. } => "entry_too_large",
            RejectReason::PayloadTooLarge { .. } => "payload_too_large",
            RejectReason::TooMany { .. } => "too_many",
            RejectReason::Malformed(_) => "malformed",
            RejectReason::UnsupportedVersion(_) => "unsupported_version",
            RejectReason::UntrustedKey { .. } => "untrusted_key",
            RejectReason::RevokedKey { .. } => "revoked_key",
            RejectReason::KeyExpired { .. } => "key_expired",
            RejectReason::KeyNotForTenant { .. } => "key_not_for_tenant",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::Expired { .. } => "expired",
            RejectReason::CreatedInFuture { .. } => "created_in_future",
            RejectReason::Replayed => "replayed",
            RejectReason::WrongTenant { .. } => "wrong_tenant",
            RejectReason::NotARecipient => "not_a_recipient",
            RejectReason::Decrypt(_) => "decrypt_failed",
            RejectReason::EntryLength { .. } => "entry_length",
            RejectReason::EntryDigest { .. } => "entry_digest",
            RejectReason::MissingPrerequisite { .. } => "missing_prerequisite",
            RejectReason::BrokenChain { .. } => "broken_chain",
            RejectReason::Equivocation { .. } => "equivocation",
            RejectReason::LocalChain { .. } => "local_chain",
            RejectReason::NotStaged(_) => "not_staged",
            RejectReason::Io(_) => "io",
            RejectReason::Storage(_) => "storage",
        }
    }
}

/// A refused bundle: why, which bundle (the id its manifest claims, when it could be read) and
/// the SHA-256 of the file as received — what an audit record needs.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("bundle {} (file sha256 `{}`) refused: {reason}", bundle_label(.bundle_id), hex::encode(.file_sha256))]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// The bundle id, when the manifest could be read.
    pub bundle_id: Option<BundleId>,
    /// SHA-256 of the whole file as received; all zeros when the file was not read: it could not
    /// be opened (`io`), is larger than the limit (`file_too_large`: hashing an arbitrarily large
    /// file would be the endless-data attack again), or the refusal is about a staged bundle id
    /// (`not_staged`).
    pub file_sha256: [u8; 32],
}

fn bundle_label(id: &Option<BundleId>) -> String {
    match id {
        Some(id) => format!("`{id}`"),
        None => "<unknown>".to_owned(),
    }
}

impl Rejection {
    /// The reason's stable code.
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("code", &self.code())
            .field("reason", &self.reason)
            .field("bundle_id", &self.bundle_id)
            .field("file_sha256", &hex::encode(self.file_sha256))
            .finish()
    }
}

/// Why an export failed. The writer may hold a partial file then: discard it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The event log failed.
    #[error("event log error: {0}")]
    Log(#[from] EventLogError),
    /// The signer failed.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// Recipients are 1 to 128.
    #[error("a bundle needs 1 to 128 recipients, {0} given")]
    Recipients(usize),
    /// The age encryptor refused the recipients.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// Writing failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The log returned other events on the second read than on the first (it must not: applied
    /// events are immutable).
    #[error("chain `{0}` changed while it was exported")]
    LogChanged(ChainId),
    /// The random generator failed.
    #[error("cannot make a bundle id: {0}")]
    Random(String),
    /// An opaque entry or the manifest is too large, or a value cannot be encoded.
    #[error("cannot encode the bundle: {0}")]
    Encode(String),
}

/// Why a sync store operation (list, quarantine, release) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The sync database failed.
    #[error("sync store error: {0}")]
    Storage(String),
    /// The event log failed.
    #[error("event log error: {0}")]
    Log(#[from] EventLogError),
    /// A file operation failed.
    #[error("i/o error at `{path}`: {message}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        message: String,
    },
    /// A stored row cannot be read back.
    #[error("sync store row `{0}` is corrupt")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}
