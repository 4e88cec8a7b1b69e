#![doc = include_str!("../README.md")]

mod canonical;
pub mod config;
mod engine;
mod event;
mod log;
pub mod objects;
#[cfg(feature = "postgres")]
mod pg;
mod sqlite;
pub mod state;
pub mod types;
mod upcast;

pub use canonical::{MAX_PAYLOAD_DEPTH, PayloadError};
pub use event::{
    ChainId, DecodeError, EVENT_TAG, EntityId, Event, EventHash, EventKind, EventLabel, EventRef,
    FieldError, Incarnation, MAX_COUNTER, MAX_ENTITY_LEN, MAX_KIND_LEN, MAX_LABEL_LEN,
    MAX_PAYLOAD_BYTES, NewEvent, NodeId, Payload,
};
pub use log::{
    ChainHead, Cursor, Equivocation, EquivocationKind, EventLogError, IngestReport, NodeInfo,
    ProblemKind, RejectReason, Rejection, TenantEventLog, VerifyProblem, VerifyReport,
    VersionVector,
};
pub use objects::{
    Direction, Fabric, FabricError, FabricIngestReport, HistoryEntry, HistoryKind, ListQuery,
    ObjectView, Op, Page, Predicate, Projector,
};
#[cfg(feature = "postgres")]
pub use pg::{PgConnectError, PgEventLog};
pub use sqlite::{CHECKPOINT_PAGES, Durability, STORE_FORMAT, SqliteEventLog};
pub use upcast::{Upcast, UpcastError, UpcastFn, Upcasters};
