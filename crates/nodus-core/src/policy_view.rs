//! A read-only view of an instance's policy store.

use std::fmt;
use std::sync::Arc;

use nodus_policy::{
    ActorId, ExplainError, Explanation, PolicySnapshot, PolicyStore, Symbols, TenantId,
};

/// What a host may read of an instance's policy: snapshots, `explain`, the epoch, the interning
/// tables. It cannot change the policy: every change goes through [`crate::Nodus::reload_policy`],
/// the `policy.reload` built-ins or [`crate::Nodus::watch_policy`], which validate, audit and
/// publish `policy.reloaded`. No public path changes an instance's policy without evidence.
///
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct PolicyView {
    store: Arc<PolicyStore>,
}

impl fmt::Debug for PolicyView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyView")
            .field("epoch", &self.store.epoch())
            .finish()
    }
}

impl From<Arc<PolicyStore>> for PolicyView {
    /// A view of a store the caller owns (for example a standalone store in a test).
    fn from(store: Arc<PolicyStore>) -> Self {
        PolicyView { store }
    }
}

impl PolicyView {
    /// The current epoch (bumped by every successful reload).
    pub fn epoch(&self) -> u64 {
        self.store.epoch()
    }

    /// The tenants that have a policy.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.store.tenants()
    }

    /// The tenant's current snapshot; `None` for a tenant without policy.
    pub fn snapshot(&self, tenant: &TenantId) -> Option<Arc<PolicySnapshot>> {
        self.store.snapshot(tenant)
    }

    /// The snapshot of the system layer alone (defaults ⊕ system file).
    pub fn system_snapshot(&self) -> Arc<PolicySnapshot> {
        self.store.system_snapshot()
    }

    /// The snapshot of one user of a tenant (tenant ⊕ user layer).
    pub fn user_snapshot(&self, tenant: &TenantId, actor: &ActorId) -> Option<Arc<PolicySnapshot>> {
        self.store.user_snapshot(tenant, actor)
    }

    /// Why a key has its effective value for a tenant (and optionally one of its users).
    ///
    /// # Errors
    /// [`ExplainError`] for an unknown tenant or key.
    pub fn explain(
        &self,
        tenant: &TenantId,
        user: Option<&ActorId>,
        key: &str,
    ) -> Result<Explanation, ExplainError> {
        self.store.explain(tenant, user, key)
    }

    /// The interning tables (roles, permissions, rate classes).
    pub fn symbols(&self) -> &Arc<Symbols> {
        self.store.symbols()
    }
}
