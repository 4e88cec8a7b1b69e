//! Built-in commands. Their permissions come from policy like any other command's: grant
//! `policy.reload`, `policy.explain`, `audit.verify` and `audit.checkpoint` (or `policy.*`,
//! `audit.*`, `*`) to the roles that should have them.

use nodus_policy::{ActorId, Explanation, ReloadReport};
use nodus_registry::commands::{Command, CommandError, CommandSpec, Context};
use nodus_security::audit::{SignedCheckpoint, VerifyReport};
use serde::Deserialize;

use crate::nodus::WeakNodus;

fn instance(weak: &WeakNodus) -> Result<crate::Nodus, CommandError> {
    weak.get()
        .ok_or_else(|| CommandError::new("ShuttingDown", "this Nodus instance is shut down"))
}

/// Input of commands that take no argument: `{}` (or `null`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

/// `policy.reload`: re-reads the policy directory the instance was built with, validates it, swaps
/// every tenant's snapshot atomically, audits the reload and publishes `policy.reloaded`. Output: the
/// caller's tenant's part of the reload report ([`ReloadReport::for_tenant`]: whether it was added,
/// removed or changed, and the key-level diff of its own and the system layers, with provenance).
pub struct PolicyReload(pub(crate) WeakNodus);

impl Command for PolicyReload {
    type Input = Option<NoInput>;
    type Output = ReloadReport;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("policy.reload")
            .rate_class("admin")
            .description("reload policy from its directory")
    }
    fn call(&self, ctx: &Context, _input: Option<NoInput>) -> Result<ReloadReport, CommandError> {
        // The caller sees its own tenant's part of the report, never another tenant's changes.
        instance(&self.0)?
            .reload_policy_from_dir()
            .map(|report| report.for_tenant(ctx.tenant()))
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

/// `audit.verify`: flushes the audit log, re-derives its Merkle tree and checks every checkpoint.
pub struct AuditVerify(pub(crate) WeakNodus);

impl Command for AuditVerify {
    type Input = Option<NoInput>;
    type Output = VerifyReport;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("audit.verify")
            .rate_class("admin")
            .description("verify the audit log")
    }
    fn call(&self, _ctx: &Context, _input: Option<NoInput>) -> Result<VerifyReport, CommandError> {
        instance(&self.0)?
            .verify_audit()
            .map_err(|e| CommandError::new("AuditFailed", e.to_string()))
    }
}

/// `audit.checkpoint`: flushes the audit log and returns the signed checkpoint covering it.
pub struct AuditCheckpoint(pub(crate) WeakNodus);

impl Command for AuditCheckpoint {
    type Input = Option<NoInput>;
    type Output = SignedCheckpoint;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("audit.checkpoint")
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
