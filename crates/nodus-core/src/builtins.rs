//! Built-in commands. Their permissions come from policy like any other command's.
//!
//! Two families, by reach:
//! - **tenant-scoped** (`policy.reload`, `policy.explain`, `audit.verify`): act on, and show, only
//!   the caller's tenant; grant them in a tenant's policy (`policy.*`, `audit.*`, `*` match them).
//! - **system** (`system.policy.reload`, `system.audit.verify`, `system.audit.checkpoint`): their
//!   effect or output crosses tenants. Permissions under `system.` can be granted only by the
//!   system layer; a tenant or user layer naming one is a validation error, and a wildcard set by
//!   a tenant (`*`) never matches them.

use nodus_policy::{ActorId, Explanation, ReloadReport};
use nodus_registry::commands::{Command, CommandError, CommandSpec, Context};
use nodus_security::audit::{SignedCheckpoint, TamperKind, VerifyReport};
use serde::{Deserialize, Serialize};

use crate::nodus::WeakNodus;

pub(crate) fn instance(weak: &WeakNodus) -> Result<crate::Nodus, CommandError> {
    weak.get()
        .ok_or_else(|| CommandError::new("ShuttingDown", "this Nodus instance is shut down"))
}

/// The caller's tenant's policy snapshot (`UnknownTenant` when it has none).
pub(crate) fn tenant_snapshot(
    n: &crate::Nodus,
    ctx: &Context,
) -> Result<std::sync::Arc<nodus_policy::PolicySnapshot>, CommandError> {
    n.inner
        .policy
        .snapshot(ctx.tenant())
        .ok_or_else(|| CommandError::new("UnknownTenant", "the tenant has no policy"))
}

/// Input of commands that take no argument: `{}` (or `null`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

/// `policy.reload`: re-reads the caller's tenant's own files from the policy directory the
/// instance was built with (its tenant file and its users' files; no other tenant's file is
/// opened), validates them against the system layer already loaded, swaps that tenant's snapshot,
/// audits the reload and publishes `policy.reloaded` to that tenant. Output: the reload report,
/// which concerns only the caller's tenant; on failure, only the caller's files' problems.
pub struct PolicyReload(pub(crate) WeakNodus);

impl Command for PolicyReload {
    type Input = Option<NoInput>;
    type Output = ReloadReport;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("policy.reload")
            .rate_class("admin")
            .description("reload the caller's tenant's policy files")
    }
    fn call(&self, ctx: &Context, _input: Option<NoInput>) -> Result<ReloadReport, CommandError> {
        instance(&self.0)?
            .reload_tenant_policy_from_dir(ctx.tenant())
            .map_err(|e| CommandError::new("ReloadFailed", e.to_string()))
    }
}

/// `system.policy.reload`: re-reads the whole policy directory (system layer and every tenant),
/// validates it, swaps every tenant's snapshot atomically, audits the reload and publishes
/// `policy.reloaded`. Output: the whole reload report, every tenant's part. System permission only.
pub struct SystemPolicyReload(pub(crate) WeakNodus);

impl Command for SystemPolicyReload {
    type Input = Option<NoInput>;
    type Output = ReloadReport;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("system.policy.reload")
            .rate_class("admin")
            .description("reload every tenant's policy from the directory (system)")
    }
    fn call(&self, _ctx: &Context, _input: Option<NoInput>) -> Result<ReloadReport, CommandError> {
        instance(&self.0)?
            .reload_policy_from_dir()
            .map_err(|e| CommandError::new("ReloadFailed", e.to_string()))
    }
}

/// Input of `policy.explain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The dotted key, e.g. `observability.sampling_rate`.
    pub key: String,
    /// Explain the value for this user of the caller's tenant (default: the tenant layer).
    #[serde(default)]
    pub user: Option<ActorId>,
}

/// `policy.explain`: the effective value of a key for the caller's tenant (and optionally a user),
/// the layer and file that set it, and what each lower layer had.
pub struct PolicyExplain(pub(crate) WeakNodus);

impl Command for PolicyExplain {
    type Input = ExplainRequest;
    type Output = Explanation;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("policy.explain").description("explain a policy key's effective value")
    }
    fn call(&self, ctx: &Context, input: ExplainRequest) -> Result<Explanation, CommandError> {
        instance(&self.0)?
            .policy()
            .explain(ctx.tenant(), input.user.as_ref(), &input.key)
            .map_err(|e| CommandError::new("ExplainFailed", e.to_string()))
    }
}

/// `system.audit.verify`: flushes the audit log, re-derives its Merkle tree and checks every
/// checkpoint; returns the whole report, problem details included. System permission only.
pub struct SystemAuditVerify(pub(crate) WeakNodus);

impl Command for SystemAuditVerify {
    type Input = Option<NoInput>;
    type Output = VerifyReport;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("system.audit.verify")
            .rate_class("admin")
            .description("verify the whole audit log (system)")
    }
    fn call(&self, _ctx: &Context, _input: Option<NoInput>) -> Result<VerifyReport, CommandError> {
        instance(&self.0)?
            .verify_audit()
            .map_err(|e| CommandError::new("AuditFailed", e.to_string()))
    }
}

/// What a tenant admin sees of a verification: counts, the signed checkpoint (the proof anchor)
/// and the kind and index of the first problem — never a record, a detail text or another
/// tenant's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantAuditReport {
    /// `true` when the whole log verified.
    pub valid: bool,
    /// Records in the log (all tenants').
    pub size: u64,
    /// Stored checkpoints.
    pub checkpoints: usize,
    /// Records no stored checkpoint covers yet.
    pub uncovered: u64,
    /// The latest signed checkpoint (C2SP signed note), after a flush.
    pub checkpoint: SignedCheckpoint,
    /// The first problem's kind, if any.
    pub problem: Option<TamperKind>,
    /// The first problem's leaf index, if any.
    pub problem_index: Option<u64>,
}

/// `audit.verify`: flushes and verifies the whole audit log, and shows the caller only counts,
/// the signed checkpoint and the first problem's kind and index ([`TenantAuditReport`]).
pub struct AuditVerify(pub(crate) WeakNodus);

impl Command for AuditVerify {
    type Input = Option<NoInput>;
    type Output = TenantAuditReport;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("audit.verify")
            .rate_class("admin")
            .description("verify the audit log (counts and proofs only)")
    }
    fn call(
        &self,
        _ctx: &Context,
        _input: Option<NoInput>,
    ) -> Result<TenantAuditReport, CommandError> {
        let n = instance(&self.0)?;
        let failed = |e: nodus_security::audit::AuditError| {
            // The error of a failed read names no record; keep only its code.
            let _ = e;
            CommandError::new("AuditFailed", "the audit log could not be verified")
        };
        let report = n.verify_audit().map_err(failed)?;
        let checkpoint = n.flush_audit().map_err(failed)?;
        Ok(TenantAuditReport {
            valid: report.valid,
            size: report.size,
            checkpoints: report.checkpoints,
            uncovered: report.uncovered,
            checkpoint,
            problem: report.problem.as_ref().map(|p| p.kind),
            problem_index: report.problem.as_ref().map(|p| p.index),
        })
    }
}

/// `system.audit.checkpoint`: flushes the audit log and returns the signed checkpoint covering it.
/// System permission only (it forces a flush for every tenant).
pub struct SystemAuditCheckpoint(pub(crate) WeakNodus);

impl Command for SystemAuditCheckpoint {
    type Input = Option<NoInput>;
    type Output = SignedCheckpoint;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("system.audit.checkpoint")
            .rate_class("admin")
            .description("flush and checkpoint the audit log")
    }
    fn call(
        &self,
        _ctx: &Context,
        _input: Option<NoInput>,
    ) -> Result<SignedCheckpoint, CommandError> {
        instance(&self.0)?
            .flush_audit()
            .map_err(|e| CommandError::new("AuditFailed", e.to_string()))
    }
}
