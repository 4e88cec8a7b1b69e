//! Errors and denials, as a host sees them.

use std::sync::Arc;
use std::time::Duration;

use nodus_policy::PolicyErrors;
use nodus_registry::commands::{CommandError, RegistryError};
use nodus_security::audit::{AuditError, SharedStr};
use nodus_security::vault::VaultError;
use serde::Serialize;

/// Why the guard refused a call. Each has a stable code ([`DenyReason::code`]) that appears in the
/// audit record's `reason` field and in the host-facing error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum DenyReason {
    /// The context's tenant has no policy (unknown tenants are refused by default).
    UnknownTenant,
    /// The subject's roles do not grant the command's permission.
    MissingPermission,
    /// The subject's clearance does not dominate the command's minimum label.
    ClearanceTooLow,
    /// The (tenant, actor, rate class) limit is exhausted; see `retry_after`.
    RateLimited,
    /// The command is quarantined by the current policy.
    Quarantined,
    /// The context's parts belong to different tenants: its subject was made for another tenant,
    /// or its bound policy handle is another tenant's. Nothing was evaluated.
    TenantMismatch,
    /// The subject's clearance was interned under a label scheme the policy no longer has (a level
    /// or compartment was renamed, reordered, added or removed). Make the subject again with
    /// `Nodus::subject` and issue a new context; a clearance is never reinterpreted.
    SessionStale,
}

impl DenyReason {
    /// The stable reason code, e.g. `"MissingPermission"`.
    pub const fn code(self) -> &'static str {
        match self {
            DenyReason::UnknownTenant => "UnknownTenant",
            DenyReason::MissingPermission => "MissingPermission",
            DenyReason::ClearanceTooLow => "ClearanceTooLow",
            DenyReason::RateLimited => "RateLimited",
            DenyReason::Quarantined => "Quarantined",
            DenyReason::TenantMismatch => "TenantMismatch",
            DenyReason::SessionStale => "SessionStale",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal by the guard: a value, never a panic; always audited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// Why.
    pub reason: DenyReason,
    /// The command that was refused.
    pub command: SharedStr,
    /// For [`DenyReason::RateLimited`]: when the call would be admitted.
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` denied: {}", self.command, self.reason)?;
        if let Some(r) = self.retry_after {
            write!(f, " (retry after {} ms)", r.as_millis().max(1))?;
        }
        Ok(())
    }
}

/// Why a `dispatch` or `invoke` failed. Every variant except [`DispatchError::ShuttingDown`] and
/// [`DispatchError::AuditUnavailable`] is recorded in the audit log with [`DispatchError::code`]
/// as its reason.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The guard refused the call.
    #[error("{0}")]
    Denied(Denial),
    /// No command has this name (or this type was never registered).
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    /// The payload is larger than the tenant's `limits.max_payload_bytes`; it was not parsed.
    #[error("payload for `{command}` is {size} bytes, the limit is {limit}")]
    PayloadTooLarge {
        /// The command.
        command: SharedStr,
        /// Payload size in bytes.
        size: usize,
        /// The policy limit.
        limit: usize,
    },
    /// The payload did not match the command's input; `path` names the field.
    #[error("invalid input for `{command}` at `{path}`: {message}")]
    InvalidInput {
        /// The command.
        command: SharedStr,
        /// Path of the offending field (`.` for the root).
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The handler returned an error.
    #[error("`{command}` failed: {error}")]
    Handler {
        /// The command.
        command: SharedStr,
        /// The handler's error.
        error: CommandError,
    },
    /// The handler panicked. The panic was caught, the call audited with reason `HandlerPanicked`,
    /// and the instance keeps serving; the panic message is not reported (it may hold data).
    #[error("`{command}` failed: its handler panicked")]
    HandlerPanicked {
        /// The command.
        command: SharedStr,
    },
    /// The audit log refused the record (its writer stopped): Nodus fails closed.
    #[error("audit log unavailable, call refused: {0}")]
    AuditUnavailable(Arc<AuditError>),
    /// `shutdown()` was called.
    #[error("this Nodus instance is shut down")]
    ShuttingDown,
}

impl DispatchError {
    /// The stable code recorded as the audit reason (`MissingPermission`, `UnknownCommand`, …).
    pub fn code(&self) -> &str {
        match self {
            DispatchError::Denied(d) => d.reason.code(),
            DispatchError::UnknownCommand(_) => "UnknownCommand",
            DispatchError::PayloadTooLarge { .. } => "PayloadTooLarge",
            DispatchError::InvalidInput { .. } => "InvalidInput",
            DispatchError::Handler { error, .. } => error.code(),
            DispatchError::HandlerPanicked { .. } => "HandlerPanicked",
            DispatchError::AuditUnavailable(_) => "AuditUnavailable",
            DispatchError::ShuttingDown => "ShuttingDown",
        }
    }

    /// The denial, if the guard refused the call.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            DispatchError::Denied(d) => Some(d),
            _ => None,
        }
    }

    /// A JSON form for hosts that speak JSON: `{"code": …, "message": …, "retry_after_ms": …}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let (Some(d), Some(obj)) = (self.denial(), v.as_object_mut())
            && let Some(r) = d.retry_after
        {
            obj.insert(
                "retry_after_ms".into(),
                serde_json::json!(r.as_millis() as u64),
            );
        }
        if let (DispatchError::InvalidInput { path, .. }, Some(obj)) = (self, v.as_object_mut()) {
            obj.insert("path".into(), serde_json::json!(path));
        }
        v
    }
}

/// Why `build()` failed. Nothing was started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither `data_dir` nor `in_memory` was chosen.
    #[error("choose where Nodus keeps its data: call `data_dir(path)` or `in_memory()`")]
    NoStorage,
    /// No master key and no custom vault.
    #[error(
        "missing master key: call `master_key(..)` (e.g. `MasterKey::from_env(\"NODUS_MASTER_KEY\")`) or `with_vault(..)`"
    )]
    MissingMasterKey,
    /// No policy source.
    #[error("missing policy: call `policy_dir(path)` or `policy(sources)`")]
    MissingPolicy,
    /// The policy did not validate; every problem is listed.
    #[error("invalid policy:\n{0}")]
    Policy(#[from] PolicyErrors),
    /// A command could not be registered.
    #[error("command registration failed: {0}")]
    Command(#[from] RegistryError),
    /// A UI component could not be registered.
    #[error("component registration failed: {0}")]
    Component(String),
    /// The vault could not be opened.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] AuditError),
    /// The fabric's projections could not be prepared.
    #[error("fabric: {0}")]
    Fabric(String),
    /// A configuration domain was refused (e.g. a key that names a policy key).
    #[error("configuration: {0}")]
    Config(String),
    /// The fabric's event log could not be opened (e.g. it belongs to another node).
    #[error("event log: {0}")]
    EventLog(#[from] nodus_fabric::EventLogError),
    /// A policy setting the runtime needs has an unusable value.
    #[error("policy key `{key}`: {reason}")]
    Setting {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory `{path}`: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Why a policy reload failed. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new policy did not validate; every problem is listed.
    #[error("invalid policy, nothing changed:\n{0}")]
    Invalid(#[from] PolicyErrors),
    /// There is no policy directory to reload from (the policy was given as strings).
    #[error("this instance was built from in-memory policy: pass new sources to `reload_policy`")]
    NoDirectory,
    /// The audit log refused the reload record.
    #[error("audit log unavailable: {0}")]
    Audit(#[from] AuditError),
}

/// Why a subject or label could not be made for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// The tenant has no policy.
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    /// The clearance label does not parse with the tenant's label scheme.
    #[error("invalid label `{label}`: {reason}")]
    InvalidClearance {
        /// The label as written.
        label: String,
        /// Why.
        reason: String,
    },
}

/// Why `Nodus::watch_policy` could not start watching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The policy was given in memory: there is no directory to watch.
    #[error("this instance was built from in-memory policy: there is no directory to watch")]
    NoDirectory,
    /// A watcher already runs for this instance.
    #[error("the policy directory is already being watched")]
    AlreadyWatching,
    /// The instance is shut down.
    #[error("this Nodus instance is shut down")]
    ShutDown,
    /// The watcher thread could not be started.
    #[error("cannot start the policy watcher thread: {0}")]
    Spawn(std::io::Error),
}
