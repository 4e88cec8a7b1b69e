//! The `TenantEventLog` trait and the values its operations return.

use std::collections::BTreeMap;
use std::fmt;

use nodus_policy::TenantId;
use serde::{Deserialize, Serialize};

use crate::event::{ChainId, Event, EventHash, EventRef, Incarnation, NewEvent, NodeId};

/// The local node as peers see it: put both in their trust stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (the vault key id of its signing key).
    pub node_id: NodeId,
    /// The incarnation of this node's store.
    pub incarnation: Incarnation,
}

impl NodeInfo {
    /// The chain this node appends to in every tenant.
    pub fn chain(&self) -> ChainId {
        ChainId {
            node_id: self.node_id,
            incarnation: self.incarnation,
        }
    }
}

/// A position in a tenant's local application order (the order events were appended or applied
/// here). Opaque and stable: reading from a cursor returns exactly the events applied after it,
/// whatever is appended or ingested meanwhile. Positions are per tenant, so a cursor says nothing
/// about other tenants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor(u64);

impl Cursor {
    /// The cursor at a position (as [`position`](Self::position) returned it, e.g. persisted by a
    /// subscriber).
    pub const fn from_position(position: u64) -> Self {
        Cursor(position)
    }
    /// The position: the number of events the tenant had applied up to and including the last
    /// one read.
    pub const fn position(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The head of a chain: its highest contiguous applied seq and that event's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHead {
    /// The highest seq applied with every lower seq applied too.
    pub seq: u64,
    /// The hash of the event at `seq`.
    pub hash: EventHash,
}

/// A tenant's version vector: every chain with at least one applied event, and its head.
pub type VersionVector = BTreeMap<ChainId, ChainHead>;

/// Why an ingested event was rejected. Rejected events are not stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// The event belongs to another tenant than the one ingesting.
    WrongTenant,
    /// `hash` is not the SHA-256 of the event's canonical encoding.
    HashMismatch {
        /// The hash the content gives.
        computed: EventHash,
    },
    /// `seq`, `lamport` or `time_ms` is 0 where it must not be, or above 2⁶³−1.
    OutOfRange {
        /// The field.
        field: String,
    },
    /// A chain's first event (seq 1) whose `prev_hash` is not zero.
    FirstEventPrevHash,
    /// An event whose `lamport` is not above its predecessor's.
    LamportNotIncreasing,
    /// A new event claiming to be of this node's own current chain: only this node appends there.
    LocalChain,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::WrongTenant => f.write_str("it belongs to another tenant"),
            RejectReason::HashMismatch { computed } => {
                write!(f, "its hash is not its content's (`{computed}`)")
            }
            RejectReason::OutOfRange { field } => write!(f, "`{field}` is out of range"),
            RejectReason::FirstEventPrevHash => {
                f.write_str("it is a chain's first event and its `prev_hash` is not zero")
            }
            RejectReason::LamportNotIncreasing => {
                f.write_str("its `lamport` is not above its predecessor's")
            }
            RejectReason::LocalChain => f.write_str("it claims this node's own chain"),
        }
    }
}

/// An ingested event that was refused, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The event as received (chain, seq and claimed hash).
    pub event: EventRef,
    /// Why.
    pub reason: RejectReason,
}

/// What kind of equivocation was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EquivocationKind {
    /// Two events with the same identity `(tenant, node_id, incarnation, seq)` and different
    /// hashes.
    SameSeq,
    /// An event whose `prev_hash` is not the hash of the stored event before it: its chain forked.
    /// `stored` is that predecessor (seq − 1).
    Fork,
}

/// Two versions of a chain that cannot both be true. The `stored` one came first and stays where
/// it was (applied, or pending); the `conflicting` one is never applied. Both are kept in the
/// quarantine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Equivocation {
    /// Same seq, or a fork.
    pub kind: EquivocationKind,
    /// The version this log had first.
    pub stored: Event,
    /// The version that contradicts it.
    pub conflicting: Event,
}

/// What an ingest did with each event received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Events applied by this call, in application order (events received earlier and held
    /// pending are included when this call filled their gap).
    pub applied: Vec<Event>,
    /// Events already stored with the same hash (applied, pending or quarantined): no effect.
    pub duplicates: u64,
    /// Events of this call held after a gap, not yet applied.
    pub pending: Vec<EventRef>,
    /// Equivocations found by this call (the caller audits each as `sync.equivocation`).
    pub equivocations: Vec<Equivocation>,
    /// Events refused.
    pub rejected: Vec<Rejection>,
}

/// What is wrong with a stored chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A stored field cannot be decoded (wrong type, length or text).
    Undecodable,
    /// The stored hash is not the hash of the stored content.
    HashMismatch,
    /// `prev_hash` is not the previous event's hash (or not zero at seq 1).
    BrokenLink,
    /// Seqs are not 1, 2, 3, … without a gap.
    SeqGap,
    /// The recorded chain head does not match the chain's last event.
    HeadMismatch,
    /// The tenant's recorded positions or Lamport clock are inconsistent with its events.
    Counters,
}

/// One problem found by [`TenantEventLog::verify`]. Names where, never what: no payload content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyProblem {
    /// The chain (`None` when the chain's own id cannot be decoded).
    pub chain: Option<ChainId>,
    /// The seq at fault (0 for the chain or tenant as a whole).
    pub seq: u64,
    /// What.
    pub kind: ProblemKind,
}

/// The result of verifying a tenant's chains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Chains checked.
    pub chains: u64,
    /// Events checked.
    pub events: u64,
    /// Every problem found, in chain and seq order.
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// `true` when no problem was found.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Why an event log operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The store could not be opened, read or written. Nothing of the call was kept.
    #[error("event log storage error: {0}")]
    Storage(String),
    /// A stored event cannot be read back as it was written (edited, truncated or corrupted).
    #[error("stored event `{seq}` of chain `{chain}` in tenant `{tenant}` is corrupt: {reason}")]
    Corrupt {
        /// The tenant.
        tenant: TenantId,
        /// The chain, as stored (text).
        chain: String,
        /// The seq.
        seq: u64,
        /// What is wrong (no content).
        reason: String,
    },
    /// The store's own metadata (node id, incarnation, format) is missing or corrupt.
    #[error("event log metadata `{key}` is missing or corrupt")]
    Meta {
        /// The metadata key.
        key: &'static str,
    },
    /// The store was created by another node.
    #[error("the event log was created by node `{stored}`, not `{given}`")]
    WrongNode {
        /// The node id in the store.
        stored: NodeId,
        /// The node id given.
        given: NodeId,
    },
    /// A chain's seq or the tenant's Lamport clock or position would pass 2⁶³−1.
    #[error("`{counter}` of tenant `{tenant}` is exhausted")]
    Exhausted {
        /// The tenant.
        tenant: TenantId,
        /// Which counter (`seq`, `lamport`, `position`).
        counter: &'static str,
    },
    /// The system clock is before the unix epoch.
    #[error("the system clock is before 1970")]
    Clock,
    /// The random generator failed.
    #[error("cannot make an incarnation: {0}")]
    Random(String),
}

pub(crate) fn storage(e: impl fmt::Display) -> EventLogError {
    EventLogError::Storage(e.to_string())
}

/// A per-tenant, hash-chained, multi-node event log (DESIGN §6). Object safe: hold it as
/// `Arc<dyn TenantEventLog>`.
///
/// Each `(tenant, node_id, incarnation)` is a hash chain whose seqs run 1, 2, 3, … The identity of
/// an event is `(tenant, node_id, incarnation, seq)`: receiving it again with the same hash is a
/// duplicate (no effect); with another hash it is an **equivocation** (both kept in quarantine,
/// the newcomer never applied). Events are applied per chain strictly in seq order; an event after
/// a gap is held until the gap fills. Every method is all-or-nothing.
pub trait TenantEventLog: Send + Sync {
    /// The local node (its id and incarnation).
    fn node(&self) -> NodeInfo;

    /// Appends local events to the local chain of `tenant`, all or none: assigns contiguous seqs,
    /// Lamport times above every event the tenant has applied, the time, `prev_hash` and `hash`.
    /// Durable under the log's durability setting when it returns.
    ///
    /// # Errors
    /// [`EventLogError`]; nothing is appended then.
    fn append(&self, tenant: &TenantId, events: Vec<NewEvent>)
    -> Result<Vec<Event>, EventLogError>;

    /// Ingests events received from peers for `tenant`, in any order, with the rules of the trait
    /// documentation; see [`IngestReport`] for the outcome of each. Durable when it returns.
    ///
    /// # Errors
    /// [`EventLogError`] (storage); nothing of the call is kept then. Bad events are not errors:
    /// they are in the report.
    fn ingest(&self, tenant: &TenantId, events: Vec<Event>) -> Result<IngestReport, EventLogError>;

    /// Up to `limit` applied events of one chain, from seq `from_seq` upwards, in seq order.
    ///
    /// # Errors
    /// [`EventLogError`].
    fn read_chain(
        &self,
        tenant: &TenantId,
        chain: ChainId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, EventLogError>;

    /// Up to `limit` applied events of `tenant` after `cursor` (from the start when `None`), in
    /// local application order, and the cursor to continue from (`None` only when nothing was
    /// read and no cursor was given).
    ///
    /// # Errors
    /// [`EventLogError`].
    fn read_tenant(
        &self,
        tenant: &TenantId,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<Cursor>), EventLogError>;

    /// The head of every chain of `tenant`.
    ///
    /// # Errors
    /// [`EventLogError`].
    fn high_water_marks(&self, tenant: &TenantId) -> Result<VersionVector, EventLogError>;

    /// Events of `tenant` held after a gap, by chain and seq.
    ///
    /// # Errors
    /// [`EventLogError`].
    fn pending(&self, tenant: &TenantId) -> Result<Vec<EventRef>, EventLogError>;

    /// Every equivocation kept in quarantine for `tenant`, oldest first.
    ///
    /// # Errors
    /// [`EventLogError`].
    fn quarantined(&self, tenant: &TenantId) -> Result<Vec<Equivocation>, EventLogError>;

    /// Re-derives every hash and link of every chain of `tenant` from the stored content.
    ///
    /// # Errors
    /// [`EventLogError`] when the store cannot be read; problems in the data are in the report.
    fn verify(&self, tenant: &TenantId) -> Result<VerifyReport, EventLogError>;
}
