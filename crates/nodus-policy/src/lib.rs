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

pub use compile::Provenance;
pub use error::{AccessError, ExplainError, PolicyError, PolicyErrorKind, PolicyErrors};
pub use ids::{ActorId, IdError, TenantId};
pub use label::{Label, LabelError, LabelScheme, SchemeId};
pub use schema::{BUILTIN_SCHEMA, KeySpec, Schema};
pub use snapshot::{PolicySnapshot, RESERVED_PERMISSION_PREFIX, WriteRule, is_reserved_permission};
pub use source::{PolicySources, TenantSources};
pub use store::{
    Explanation, KeyChange, LayerValue, PolicyStore, PolicyWatcher, ReloadReport, StoreOptions,
    TenantHandle,
};
pub use subject::{
    Interner, PermissionId, PermissionSet, RateClassId, RoleId, RoleSet, Subject, Symbols,
};
pub use value::{Layer, RateLimit, Scope, Value, ValueType, format_duration, parse_duration};
