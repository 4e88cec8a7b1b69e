//! Configuration and counters of the audit log.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a record counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Durability {
    /// After the batch's commit is fsync'd (SQLite `synchronous=FULL`): survives power loss.
    Full,
    /// After the batch's commit (`synchronous=NORMAL` in WAL mode): survives a process crash; the
    /// last commits may be lost on power loss.
    Normal,
}

/// What `record` does when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// The caller waits for room.
    Block,
    /// The record is dropped and counted; the writer then appends a signed `audit.gap` record with
    /// the count and time range, so the loss itself is in the log.
    DropWithMarker,
}

/// Configuration of an [`AuditLog`](super::AuditLog).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The checkpoint origin line (and signed-note key name), e.g. `nodus.local/audit`.
    pub origin: String,
    /// Durability mode.
    pub durability: Durability,
    /// Overflow policy.
    pub overflow: Overflow,
    /// Queue capacity in records.
    pub queue_capacity: usize,
    /// Sign a checkpoint at least every this many records.
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often while records arrive.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            origin: "nodus.local/audit".into(),
            durability: Durability::Full,
            overflow: Overflow::Block,
            queue_capacity: 65_536,
            checkpoint_every: 1024,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Writer counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditStats {
    /// Records accepted into the queue.
    pub enqueued: u64,
    /// Records written (gap records included).
    pub written: u64,
    /// Records dropped under `DropWithMarker`.
    pub dropped: u64,
    /// Deepest the queue has been (sampled every 64th enqueue).
    pub max_queue_depth: u64,
    /// Group commits.
    pub batches: u64,
    /// Fsync'd commits (`Full` mode).
    pub fsyncs: u64,
    /// Duration of the last fsync'd commit, µs.
    pub last_fsync_micros: u64,
    /// Longest fsync'd commit, µs.
    pub max_fsync_micros: u64,
}

/// Where a file-backed audit log keeps its **witness** — a copy of its latest signed checkpoint
/// outside the database — and what opening does when it is missing. See `docs/audit.md`
/// ("The witness"). In-memory logs keep none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WitnessConfig {
    /// The witness file. `None`: `<database path>.witness`, beside the database. Choose a path on
    /// another disk or host directory (one that whoever can edit the database cannot) to make a
    /// rollback of both impossible to hide.
    pub path: Option<PathBuf>,
    /// Open a log that has records but no witness file, trusting it as it is, and start a new
    /// witness from its latest checkpoint. Off by default: a missing witness is refused with
    /// [`AuditError::WitnessMissing`](super::AuditError::WitnessMissing), because deleting the
    /// witness together with checkpoints is exactly how signed history would be made unsigned.
    /// Turn it on once, knowingly: for a log written before witnesses existed, or after
    /// restoring a backup of the database alone.
    pub accept_missing: bool,
}
