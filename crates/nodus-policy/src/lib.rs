#![doc = include_str!("../README.md")]

pub mod ids;
pub mod label;
pub mod subject;

pub use ids::{ActorId, IdError, TenantId};
pub use label::{Label, LabelError, LabelScheme};
pub use subject::{
    Interner, PermissionId, PermissionSet, RateClassId, RoleId, RoleSet, Subject, Symbols,
};
