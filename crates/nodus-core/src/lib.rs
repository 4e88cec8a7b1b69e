#![doc = include_str!("../README.md")]

mod audited_vault;
pub use audited_vault::AuditedVault;
mod builder;
pub mod builtins;
mod clock;
pub mod config_commands;
pub mod docs_commands;
mod error;
pub mod fabric_commands;
pub mod field_commands;
mod node;
mod nodus;
#[cfg(feature = "policy-layer")]
mod policy_layer;
mod policy_view;
mod signer;
pub mod sync_agent;
pub mod sync_commands;

pub use builder::{AUDIT_FILE, FABRIC_FILE, NodusBuilder, VAULT_FILE};
pub use error::{
    BuildError, Denial, DenyReason, DispatchError, ReloadError, SubjectError, WatchError,
};
pub use node::{NODE_KEY_PURPOSE, NodeIdentity};
pub use nodus::Nodus;
#[cfg(feature = "policy-layer")]
pub use policy_layer::PolicyFilter;
pub use policy_view::PolicyView;
pub use signer::AUDIT_KEY_PURPOSE;
pub use sync_agent::{LivePeer, LiveStatus, LiveSyncOptions};

pub use nodus_fabric as fabric;
/// Everything a host needs, re-exported from the subsystem crates.
pub use nodus_policy as policy;
pub use nodus_registry as registry;
pub use nodus_security as security;
pub use nodus_sync as sync;

pub use nodus_policy::{ActorId, Label, PolicySources, Subject, TenantId};
pub use nodus_registry::commands::{AuditLevel, Command, CommandError, CommandSpec, Context};
pub use nodus_security::vault::MasterKey;
