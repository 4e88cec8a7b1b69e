//! CRDT documents (DESIGN §7): per-tenant, labelled JSON-like documents that several writers edit
//! concurrently and that merge without conflicts, stored as [automerge] documents whose every
//! change is an event of the tenant's log.
//!
//! - [`CrdtStore`] is the interface; [`AutomergeStore`] the default, over a
//!   [`SqliteEventLog`](nodus_fabric::SqliteEventLog): `create` and `change` append a
//!   `doc.created` / `doc.changed` event (entity `doc/<id>`, the document's label, the automerge
//!   change bytes in base64) and write the projection ([`CRDT_TABLES`]) in the log's transaction.
//! - Remote events are applied with [`apply_event`] (what [`AutomergeStore::ingest`] and
//!   [`AutomergeStore::rebuild`] call); the merge does not depend on the order events arrive in.
//! - **MAC** as for fabric objects: one id may exist at several labels; a read sees the highest
//!   version the subject dominates, and a version above the subject is indistinguishable from a
//!   missing one (same [`CrdtError::NotFound`]).
//! - **Limits** ([`CrdtLimits`]): allowed document types and a size cap per document.
//! - **Air-gap deltas**: [`CrdtStore::delta_since`] the receiver's acknowledged heads, and
//!   [`CrdtStore::apply_delta`].
//!
//! See `docs/sync.md`, "CRDT documents", for the ops language and the event layout.
//!
//! ```
//! use std::sync::Arc;
//! use nodus_fabric::{NodeId, SqliteEventLog};
//! use nodus_policy::{ActorId, PolicySources, PolicyStore, RoleSet, Subject, TenantId};
//! use nodus_sync::crdt::{AutomergeStore, CrdtStore, DocOp};
//! use serde_json::json;
//!
//! let tenant = TenantId::new("acme").unwrap();
//! let policy = PolicyStore::new(
//!     PolicySources::new().with_tenant(tenant.clone(), "tenants/acme.toml", ""),
//! ).unwrap();
//! let snap = policy.snapshot(&tenant).unwrap();
//! let scheme = snap.label_scheme();
//! let alice = Subject::new(
//!     tenant.clone(), ActorId::new("alice").unwrap(), RoleSet::from_ids([]),
//!     scheme.parse("UNCLASSIFIED").unwrap(), scheme,
//! );
//!
//! let log = Arc::new(SqliteEventLog::in_memory(NodeId::from_bytes([1; 16])).unwrap());
//! let store = AutomergeStore::new(log).unwrap();
//! store.create(&tenant, &snap, &alice, "note", "n1", "UNCLASSIFIED", &json!({"title": "Plan"})).unwrap();
//! let ops: Vec<DocOp> = serde_json::from_value(json!([
//!     {"op": "splice_text", "path": ["title"], "pos": 4, "text": " B"},
//!     {"op": "set", "path": ["done"], "value": false},
//! ])).unwrap();
//! store.change(&tenant, &snap, &alice, "n1", &ops).unwrap();
//! let doc = store.get(&tenant, &snap, &alice, "n1").unwrap();
//! assert_eq!(doc.content, json!({"title": "Plan B", "done": false}));
//! ```

mod error;
mod ops;
mod store;

use nodus_policy::{PolicySnapshot, Subject, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::CrdtError;
pub use ops::{DocOp, PathElem};
pub use store::{AutomergeStore, CrdtIngestReport, CrdtProjector, apply_event};

/// Kind of the event that creates a document (payload: [`DocPayload`]).
pub const DOC_CREATED: &str = "doc.created";
/// Kind of the event that records changes to a document (payload: [`DocPayload`]).
pub const DOC_CHANGED: &str = "doc.changed";
/// The prefix of a document event's entity: `doc/<id>`.
pub const ENTITY_PREFIX: &str = "doc/";
/// Most bytes (UTF-8) a document id may have.
pub const MAX_ID_LEN: usize = 128;
/// Most bytes (UTF-8) a document type may have.
pub const MAX_TYPE_LEN: usize = 64;
/// Deepest nesting of maps and lists a document may be written or read with.
pub const MAX_DEPTH: usize = 64;
/// The size cap when neither the policy nor the [`CrdtLimits`] set one: 16 MiB.
pub const DEFAULT_MAX_DOC_BYTES: u64 = 16 * 1024 * 1024;

/// The projection tables the store keeps in the log's database, so a host rebuilding projections
/// itself can clear them (rows are keyed by `tenant` first).
pub const CRDT_TABLES: &[&str] = &["crdt_docs", "crdt_incr", "crdt_queue", "crdt_history"];

/// The payload of a `doc.created` / `doc.changed` event (canonical JSON):
/// `{"changes": [<base64 of one automerge change chunk>, …], "id": "<id>", "type": "<doc type>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocPayload {
    /// The document id.
    pub id: String,
    /// The document type.
    #[serde(rename = "type")]
    pub doc_type: String,
    /// The automerge changes, each the standard base64 (with padding) of its raw change bytes.
    pub changes: Vec<String>,
}

/// The gates on documents: what the host configured, narrowed by the tenant's policy keys of the
/// same name (`crdt.allowed_types`, `crdt.max_doc_bytes`; defaults: every type, 16 MiB). The
/// stricter of the two always applies: a type must be allowed by both, and the size cap is the
/// smaller one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrdtLimits {
    /// `crdt.allowed_types`: the document types that may be created and changed; `None` = all.
    pub allowed_types: Option<Vec<String>>,
    /// `crdt.max_doc_bytes`: the largest a document may become through `create`, `change` or
    /// `apply_delta`, in bytes of its compacted automerge encoding.
    pub max_doc_bytes: u64,
}

impl Default for CrdtLimits {
    fn default() -> Self {
        CrdtLimits {
            allowed_types: None,
            max_doc_bytes: DEFAULT_MAX_DOC_BYTES,
        }
    }
}

impl CrdtLimits {
    /// These limits narrowed by the policy's `crdt.allowed_types` (a list containing `*` narrows
    /// nothing; otherwise only the types both allow remain) and `crdt.max_doc_bytes` (the smaller
    /// cap wins); a key the snapshot's schema does not declare narrows nothing.
    pub fn with_policy(&self, snap: &PolicySnapshot) -> CrdtLimits {
        let mut out = self.clone();
        if let Ok(types) = snap.get_strings("crdt.allowed_types")
            && !types.iter().any(|t| t == "*")
        {
            out.allowed_types = Some(match &self.allowed_types {
                None => types.to_vec(),
                Some(mine) => mine.iter().filter(|t| types.contains(t)).cloned().collect(),
            });
        }
        if let Ok(max) = snap.get_int("crdt.max_doc_bytes") {
            out.max_doc_bytes = out.max_doc_bytes.min(u64::try_from(max).unwrap_or(0));
        }
        out
    }

    /// Whether `doc_type` may be created and changed.
    pub fn allows(&self, doc_type: &str) -> bool {
        self.allowed_types
            .as_ref()
            .is_none_or(|t| t.iter().any(|a| a == doc_type))
    }
}

/// A document as a subject sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocView {
    /// The id.
    pub id: String,
    /// The document type.
    #[serde(rename = "type")]
    pub doc_type: String,
    /// The label of this version, canonical text.
    pub label: String,
    /// The materialised content: a JSON object (texts as strings).
    pub content: Value,
    /// The automerge heads, 64 hex digits each, sorted.
    pub heads: Vec<String>,
}

/// One document in a [`CrdtStore::list`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSummary {
    /// The id.
    pub id: String,
    /// The document type.
    #[serde(rename = "type")]
    pub doc_type: String,
    /// The label of the version the subject sees.
    pub label: String,
    /// Stored bytes (compacted document plus incremental changes).
    pub size: u64,
    /// The automerge heads, sorted.
    pub heads: Vec<String>,
}

/// What a change did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeOutcome {
    /// The label of the version changed.
    pub label: String,
    /// The automerge hashes of the changes recorded (empty when the ops changed nothing, and then
    /// no event was appended).
    pub changes: Vec<String>,
    /// The heads after the change, sorted.
    pub heads: Vec<String>,
}

/// What a document event was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocEventKind {
    /// `doc.created`.
    Created,
    /// `doc.changed`.
    Changed,
}

/// One event of a document's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHistoryEntry {
    /// What it was.
    pub kind: DocEventKind,
    /// The node that appended it (`k` + 32 hex digits).
    pub node_id: String,
    /// Its seq in that node's chain.
    pub seq: u64,
    /// Its Lamport time (history is ordered by `(lamport, node, incarnation, seq)`).
    pub lamport: u64,
    /// The automerge hashes of the changes it carried.
    pub changes: Vec<String>,
    /// The bytes of those changes.
    pub bytes: u64,
}

/// Which form [`CrdtStore::delta_since`] chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaForm {
    /// `save_after(acknowledged heads)`: the changes the receiver lacks.
    Changes,
    /// The whole compacted document (`save()`), chosen when it is strictly smaller.
    Whole,
}

/// An air-gap delta of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    /// Which form was chosen.
    pub form: DeltaForm,
    /// The bytes to carry to the receiver, for [`CrdtStore::apply_delta`].
    pub bytes: Vec<u8>,
}

/// What [`CrdtStore::apply_delta`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaOutcome {
    /// The changes new to this store (recorded in one `doc.changed` event; none: no event).
    pub added: usize,
    /// The heads after, sorted.
    pub heads: Vec<String>,
}

/// Collaborative JSON documents: per tenant, labelled, every change an event.
///
/// Every method checks that the subject belongs to `tenant` and was made under the snapshot's
/// label scheme. A document the subject may not read is reported as [`CrdtError::NotFound`], like a
/// missing one.
pub trait CrdtStore: Send + Sync {
    /// Creates document `id` of type `doc_type` at `label` with `initial` content (a JSON object),
    /// appending a `doc.created` event.
    ///
    /// # Errors
    /// [`CrdtError::InvalidId`], [`CrdtError::InvalidType`], [`CrdtError::TypeNotAllowed`],
    /// [`CrdtError::BadLabel`], [`CrdtError::WriteDenied`], [`CrdtError::AlreadyExists`] (a
    /// version at that very label), [`CrdtError::NotAnObject`], [`CrdtError::TooLarge`],
    /// [`CrdtError::Log`].
    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        doc_type: &str,
        id: &str,
        label: &str,
        initial: &Value,
    ) -> Result<DocView, CrdtError>;

    /// Applies `ops` to the version of `id` the subject reads, in one automerge transaction,
    /// appending one `doc.changed` event (none when the ops change nothing). On any error nothing
    /// is written.
    ///
    /// # Errors
    /// [`CrdtError::NotFound`], [`CrdtError::WriteDenied`], [`CrdtError::TypeNotAllowed`],
    /// [`CrdtError::BadOp`], [`CrdtError::TooLarge`], [`CrdtError::Busy`], [`CrdtError::Log`].
    fn change(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        ops: &[DocOp],
    ) -> Result<ChangeOutcome, CrdtError>;

    /// Applies several groups of ops to the version of `id` the subject reads: each group is one
    /// automerge transaction (one change), and all the changes are recorded in **one**
    /// `doc.changed` event — one durable append for a burst of edits (an editor's keystrokes of
    /// the last few hundred milliseconds). Groups that change nothing add no change; when none
    /// does, no event is appended. The index of a [`CrdtError::BadOp`] counts the ops of all
    /// groups in order. On any error nothing is written.
    ///
    /// # Errors
    /// As [`CrdtStore::change`].
    fn change_batch(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        batch: &[Vec<DocOp>],
    ) -> Result<ChangeOutcome, CrdtError>;

    /// The materialised content and heads of the version of `id` the subject reads.
    ///
    /// # Errors
    /// [`CrdtError::NotFound`], [`CrdtError::TooDeep`], [`CrdtError::Corrupt`].
    fn get(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
    ) -> Result<DocView, CrdtError>;

    /// The documents the subject can read (one entry per id, the version it reads), by id; only
    /// those of `doc_type` when given.
    ///
    /// # Errors
    /// [`CrdtError::Log`].
    fn list(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        doc_type: Option<&str>,
    ) -> Result<Vec<DocSummary>, CrdtError>;

    /// The events of the version of `id` the subject reads, in `(lamport, node)` order.
    ///
    /// # Errors
    /// [`CrdtError::NotFound`], [`CrdtError::Log`].
    fn history(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
    ) -> Result<Vec<DocHistoryEntry>, CrdtError>;

    /// The bytes a receiver that has `acknowledged` heads (hex) of `id` needs:
    /// `save_after(acknowledged)`, or the whole compacted document when that is strictly smaller.
    /// Heads this store does not know are ignored (the delta can only grow).
    ///
    /// # Errors
    /// [`CrdtError::NotFound`], [`CrdtError::BadHeads`].
    fn delta_since(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        acknowledged: &[String],
    ) -> Result<Delta, CrdtError>;

    /// Merges a delta ([`Delta::bytes`], either form) into the version of `id` the subject reads
    /// and may write, recording the new changes in one `doc.changed` event. A delta that does not
    /// decode, or whose changes depend on changes this store lacks (it was made from heads this
    /// store never acknowledged), is refused whole.
    ///
    /// # Errors
    /// [`CrdtError::NotFound`], [`CrdtError::WriteDenied`], [`CrdtError::TypeNotAllowed`],
    /// [`CrdtError::BadDelta`], [`CrdtError::TooLarge`], [`CrdtError::Log`].
    fn apply_delta(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        delta: &[u8],
    ) -> Result<DeltaOutcome, CrdtError>;
}
