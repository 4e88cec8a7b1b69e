#![doc = include_str!("../README.md")]

mod compile;
mod error;
pub mod ids;
pub mod label;
pub mod schema;
mod snapshot;
mod source;
mod store;
pub mod subject;
mod value;
mod watch;

pub use compile::Provenance;
pub use error::{
    AccessError, ExplainError, MAX_REPORTED_PROBLEMS, PolicyError, PolicyErrorKind, PolicyErrors,
};
pub use ids::{ActorId, IdError, TenantId};
pub use label::{Label, LabelError, LabelScheme, SchemeId};
pub use schema::{BUILTIN_SCHEMA, KeySpec, Schema};
pub use snapshot::{PolicySnapshot, RESERVED_PERMISSION_PREFIX, WriteRule, is_reserved_permission};
pub use source::{
    MAX_DEPTH, MAX_ENTRIES_PER_FILE, MAX_FILE_BYTES, MAX_TOTAL_BYTES, PolicySources, TenantSources,
};
pub use store::{
    Explanation, KeyChange, LayerValue, PolicyStore, ReloadReport, StoreOptions, TenantHandle,
};
pub use subject::{
    Interner, PermissionId, PermissionSet, RateClassId, RoleId, RoleSet, Subject, Symbols,
};
pub use value::{Layer, RateLimit, Scope, Value, ValueType, format_duration, parse_duration};
pub use watch::PolicyWatcher;
