//! The policy store: one `ArcSwap` per tenant, hot reload, explain, and a polling watcher.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use serde::Serialize;

use crate::compile::{
    Compiled, Effective, LayerValues, Provenance, compile, compile_tenant, overlay,
};
use crate::error::{ExplainError, PolicyError, PolicyErrorKind, PolicyErrors};
use crate::ids::{ActorId, TenantId};
use crate::snapshot::PolicySnapshot;
use crate::source::{PolicySources, TenantSources};
use crate::subject::Symbols;
use crate::value::{Layer, Scope, Value};

/// Options of a [`PolicyStore`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StoreOptions {}

/// One tenant's slot: never removed, so a [`TenantHandle`] stays valid across reloads.
#[derive(Debug, Default)]
struct TenantSlot {
    snap: ArcSwapOption<PolicySnapshot>,
}

/// A tenant resolved once: loading its snapshot hashes nothing and never blocks.
#[derive(Clone)]
pub struct TenantHandle {
    tenant: TenantId,
    slot: Arc<TenantSlot>,
    fallback: Arc<ArcSwapOption<PolicySnapshot>>,
}

impl fmt::Debug for TenantHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantHandle")
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl TenantHandle {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Runs `f` on the tenant's current snapshot (`None` when the tenant has no policy and unknown
    /// tenants are refused) without touching the snapshot's reference count: the hot path's way in,
    /// so threads deciding for the same tenant share no written cache line.
    #[inline]
    pub fn with_snapshot<R>(&self, f: impl FnOnce(Option<&PolicySnapshot>) -> R) -> R {
        let guard = self.slot.snap.load();
        match guard.as_deref() {
            Some(s) => f(Some(s)),
            None => {
                let fallback = self.fallback.load();
                f(fallback.as_deref())
            }
        }
    }

    /// The tenant's current snapshot (an arc-swap load; no allocation, no lock). `None` when the
    /// tenant has no policy and unknown tenants are refused.
    #[inline]
    pub fn snapshot(&self) -> Option<Arc<PolicySnapshot>> {
        match self.slot.snap.load_full() {
            Some(s) => Some(s),
            None => self.fallback.load_full(),
        }
    }
}

/// A key whose effective value or provenance changed in a reload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyChange {
    /// The tenant (`None` for the system layer).
    pub tenant: Option<TenantId>,
    /// The user, for a change of a user's own layer (`None` for system and tenant changes).
    pub user: Option<ActorId>,
    /// The dotted key.
    pub key: String,
    /// The value before.
    pub old: Option<Value>,
    /// The value after.
    pub new: Option<Value>,
    /// Who set it before.
    pub old_from: Option<Provenance>,
    /// Who sets it now.
    pub new_from: Option<Provenance>,
}

/// What a successful reload changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReloadReport {
    /// The store's epoch after the reload (unchanged if nothing changed).
    pub epoch: u64,
    /// Tenants that gained a policy.
    pub added: Vec<TenantId>,
    /// Tenants that lost their policy.
    pub removed: Vec<TenantId>,
    /// Tenants whose effective policy changed.
    pub changed: Vec<TenantId>,
    /// Users whose own layer (`users/<tenant>/<actor>.toml`) was added, edited or removed.
    pub changed_users: Vec<(TenantId, ActorId)>,
    /// Key-level changes, old → new, with provenance: the system layer's, each changed tenant's,
    /// and, for each changed user, the keys their own layer sets or set.
    pub diff: Vec<KeyChange>,
}

impl ReloadReport {
    /// The part of this report one tenant may see: whether it was added, removed or changed, its
    /// users' changes, and the key changes of its own layers and of the system layer (which every
    /// tenant inherits). Nothing about any other tenant.
    pub fn for_tenant(&self, tenant: &TenantId) -> ReloadReport {
        let mine = |t: &TenantId| t == tenant;
        ReloadReport {
            epoch: self.epoch,
            added: self.added.iter().filter(|t| mine(t)).cloned().collect(),
            removed: self.removed.iter().filter(|t| mine(t)).cloned().collect(),
            changed: self.changed.iter().filter(|t| mine(t)).cloned().collect(),
            changed_users: self
                .changed_users
                .iter()
                .filter(|(t, _)| mine(t))
                .cloned()
                .collect(),
            diff: self
                .diff
                .iter()
                .filter(|k| k.tenant.as_ref().is_none_or(mine))
                .cloned()
                .collect(),
        }
    }

    /// The part of this report about the system layer only (what every tenant may see).
    pub fn system_part(&self) -> ReloadReport {
        ReloadReport {
            epoch: self.epoch,
            added: vec![],
            removed: vec![],
            changed: vec![],
            changed_users: vec![],
            diff: self
                .diff
                .iter()
                .filter(|k| k.tenant.is_none())
                .cloned()
                .collect(),
        }
    }

    /// Each mentioned tenant's own part — as [`for_tenant`](Self::for_tenant) but without the
    /// system layer's changes, which [`system_part`](Self::system_part) carries once — built in one
    /// pass over the report (a reload touching many tenants stays linear).
    pub fn split_by_tenant(&self) -> BTreeMap<TenantId, ReloadReport> {
        let mut parts: BTreeMap<TenantId, ReloadReport> = self
            .tenants()
            .into_iter()
            .map(|t| {
                let empty = ReloadReport {
                    epoch: self.epoch,
                    added: vec![],
                    removed: vec![],
                    changed: vec![],
                    changed_users: vec![],
                    diff: vec![],
                };
                (t, empty)
            })
            .collect();
        for t in &self.added {
            if let Some(p) = parts.get_mut(t) {
                p.added.push(t.clone());
            }
        }
        for t in &self.removed {
            if let Some(p) = parts.get_mut(t) {
                p.removed.push(t.clone());
            }
        }
        for t in &self.changed {
            if let Some(p) = parts.get_mut(t) {
                p.changed.push(t.clone());
            }
        }
        for u in &self.changed_users {
            if let Some(p) = parts.get_mut(&u.0) {
                p.changed_users.push(u.clone());
            }
        }
        for k in &self.diff {
            if let Some(p) = k.tenant.as_ref().and_then(|t| parts.get_mut(t)) {
                p.diff.push(k.clone());
            }
        }
        parts
    }

    /// Every tenant this report mentions (added, removed, changed, or with a changed user).
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut out: Vec<TenantId> = self
            .added
            .iter()
            .chain(&self.removed)
            .chain(&self.changed)
            .chain(self.changed_users.iter().map(|(t, _)| t))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// One layer's value of a key, for [`Explanation`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerValue {
    /// The layer.
    pub layer: Layer,
    /// Its file (`None` for the default).
    pub file: Option<String>,
    /// The value it had.
    pub value: Value,
}

/// Why a key has its effective value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// The dotted key.
    pub key: String,
    /// The effective value.
    pub value: Value,
    /// The layer that set it.
    pub layer: Layer,
    /// The file that set it.
    pub file: Option<String>,
    /// What each lower layer had (lowest first), overridden by the winner.
    pub lower: Vec<LayerValue>,
    /// The key's scope.
    pub scope: Scope,
    /// `true` when the tenant locked the key for its users.
    pub locked: bool,
    /// The key's documentation.
    pub doc: String,
}

/// Everything one reload published, swapped as a whole so that readers of `state` never mix two.
struct State {
    compiled: Arc<Compiled>,
    system: Arc<PolicySnapshot>,
    /// The published tenant snapshots: what the slots hold.
    tenants: BTreeMap<TenantId, Arc<PolicySnapshot>>,
    /// The epoch at which each user's own layer last changed (added, edited or removed), kept
    /// while it is newer than the tenant's snapshot. A user snapshot's epoch is the larger of the
    /// two, so a given (tenant, user, epoch) always has the same content and epochs never go back.
    user_epochs: HashMap<(TenantId, ActorId), u64>,
}

/// The hot-reloadable policy store.
///
/// ```
/// use nodus_policy::{ActorId, Label, PolicySources, PolicyStore, Subject, TenantId};
/// let acme = TenantId::new("acme").unwrap();
/// let store = PolicyStore::new(
///     PolicySources::new()
///         .with_system("system.toml", "[observability]\nsampling_rate = 0.05\n")
///         .with_tenant(acme.clone(), "tenants/acme.toml", r#"
///             [rbac.roles]
///             editor = ["notes.*"]
///             [observability]
///             sampling_rate = 0.2
///         "#),
/// ).unwrap();
/// let read = store.symbols().permission("notes.read");
/// let snap = store.snapshot(&acme).unwrap();
/// let alice = Subject::new(
///     acme.clone(),
///     ActorId::new("alice").unwrap(),
///     store.symbols().role_set(["editor"]),
///     Label::BOTTOM,
///     snap.label_scheme(),
/// );
/// assert!(snap.permits(&alice, read));
/// let why = store.explain(&acme, None, "observability.sampling_rate").unwrap();
/// assert_eq!(why.file.as_deref(), Some("tenants/acme.toml"));
/// ```
pub struct PolicyStore {
    symbols: Arc<Symbols>,
    epoch: AtomicU64,
    slots: ArcSwap<HashMap<TenantId, Arc<TenantSlot>>>,
    fallback: Arc<ArcSwapOption<PolicySnapshot>>,
    state: ArcSwap<State>,
    users: Mutex<HashMap<(TenantId, ActorId), Arc<PolicySnapshot>>>,
    write: Mutex<()>,
}

impl fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyStore")
            .field("epoch", &self.epoch())
            .field("tenants", &self.tenants())
            .finish()
    }
}

fn build_snapshots(
    compiled: &Compiled,
    epoch: u64,
    symbols: &Arc<Symbols>,
) -> (Arc<PolicySnapshot>, BTreeMap<TenantId, Arc<PolicySnapshot>>) {
    let mk = |tenant: Option<TenantId>, values: &Arc<Effective>| {
        Arc::new(PolicySnapshot::compile(
            tenant,
            None,
            epoch,
            values.clone(),
            compiled.schema.clone(),
            compiled.scheme.clone(),
            symbols.clone(),
        ))
    };
    let system = mk(None, &compiled.system_effective);
    let tenants = compiled
        .tenants
        .iter()
        .map(|(t, (_, eff))| (t.clone(), mk(Some(t.clone()), eff)))
        .collect();
    (system, tenants)
}

fn unknown_gets_defaults(system: &PolicySnapshot) -> bool {
    system.get_str("tenancy.unknown_tenants") == Ok("system_defaults")
}

impl PolicyStore {
    /// Validates and compiles `sources`.
    ///
    /// # Errors
    /// [`PolicyErrors`] listing every problem.
    pub fn new(sources: PolicySources) -> Result<Self, PolicyErrors> {
        Self::with_options(sources, StoreOptions::default())
    }

    /// As [`PolicyStore::new`], with options.
    ///
    /// # Errors
    /// [`PolicyErrors`] listing every problem.
    pub fn with_options(sources: PolicySources, _opts: StoreOptions) -> Result<Self, PolicyErrors> {
        let compiled = Arc::new(compile(&sources)?);
        let symbols = Arc::new(Symbols::default());
        let (system, tenants) = build_snapshots(&compiled, 1, &symbols);
        let fallback = Arc::new(ArcSwapOption::from(
            unknown_gets_defaults(&system).then(|| system.clone()),
        ));
        let slots: HashMap<TenantId, Arc<TenantSlot>> = tenants
            .iter()
            .map(|(t, s)| {
                (
                    t.clone(),
                    Arc::new(TenantSlot {
                        snap: ArcSwapOption::from(Some(s.clone())),
                    }),
                )
            })
            .collect();
        Ok(PolicyStore {
            symbols,
            epoch: AtomicU64::new(1),
            slots: ArcSwap::from_pointee(slots),
            fallback,
            state: ArcSwap::from_pointee(State {
                compiled,
                system,
                tenants,
                user_epochs: HashMap::new(),
            }),
            users: Mutex::new(HashMap::new()),
            write: Mutex::new(()),
        })
    }

    /// The interning tables shared with everything that decides against this store.
    pub fn symbols(&self) -> &Arc<Symbols> {
        &self.symbols
    }

    /// The current epoch (starts at 1; each reload that changes anything bumps it).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Tenants with a policy, sorted.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut v: Vec<TenantId> = self.state.load().compiled.tenants.keys().cloned().collect();
        v.sort();
        v
    }

    /// The tenant's snapshot. Never blocks. `None` for an unknown tenant, unless
    /// `tenancy.unknown_tenants = "system_defaults"`, which gives it the system snapshot.
    pub fn snapshot(&self, tenant: &TenantId) -> Option<Arc<PolicySnapshot>> {
        match self.slots.load().get(tenant) {
            Some(slot) => slot.snap.load_full().or_else(|| self.fallback.load_full()),
            None => self.fallback.load_full(),
        }
    }

    /// A handle that loads the tenant's snapshot without hashing (resolve once per session). A
    /// handle for an unknown tenant starts answering when a reload adds the tenant. The store keeps
    /// a slot for a tenant without a policy only while some handle holds it, so handles made for
    /// arbitrary (untrusted) tenant ids cost nothing once dropped.
    pub fn tenant_handle(&self, tenant: &TenantId) -> TenantHandle {
        if let Some(slot) = self.slots.load().get(tenant) {
            return TenantHandle {
                tenant: tenant.clone(),
                slot: slot.clone(),
                fallback: self.fallback.clone(),
            };
        }
        let _w = self.write.lock();
        let mut map = HashMap::clone(&self.slots.load());
        // A slot for a tenant without a policy lives only while a handle holds it: tenant ids
        // from untrusted input must not grow the map without bound.
        let state = self.state.load();
        // (The published map and this copy hold two references; a handle makes a third.)
        map.retain(|t, slot| state.tenants.contains_key(t) || Arc::strong_count(slot) > 2);
        let slot = map.entry(tenant.clone()).or_default().clone();
        self.slots.store(Arc::new(map));
        TenantHandle {
            tenant: tenant.clone(),
            slot,
            fallback: self.fallback.clone(),
        }
    }

    /// How many tenant slots the store holds: one per tenant with a policy, plus one per tenant
    /// without a policy that a live [`TenantHandle`] still refers to. For monitoring.
    pub fn slot_count(&self) -> usize {
        self.slots.load().len()
    }

    /// The system snapshot (system layer ⊕ defaults).
    pub fn system_snapshot(&self) -> Arc<PolicySnapshot> {
        self.state.load().system.clone()
    }

    /// A user's snapshot (tenant ⊕ user layer), built on first use and cached. A user without a
    /// user file gets the tenant's snapshot; an unknown tenant gets what
    /// [`snapshot`](Self::snapshot) gives it.
    ///
    /// Its epoch is the later of the tenant snapshot's epoch and the epoch of the last reload that
    /// added, edited or removed the user's own file: it never goes backwards, and two user
    /// snapshots with the same epoch have the same content.
    pub fn user_snapshot(&self, tenant: &TenantId, actor: &ActorId) -> Option<Arc<PolicySnapshot>> {
        let state = self.state.load();
        let Some(base) = state.tenants.get(tenant) else {
            return unknown_gets_defaults(&state.system).then(|| state.system.clone());
        };
        let key = (tenant.clone(), actor.clone());
        let layer = state.compiled.users.get(&key);
        let user_epoch = state.user_epochs.get(&key).copied().unwrap_or(0);
        if layer.is_none() && user_epoch <= base.epoch() {
            return Some(base.clone());
        }
        let epoch = user_epoch.max(base.epoch());
        if let Some(s) = self.users.lock().get(&key)
            && s.epoch() == epoch
        {
            return Some(s.clone());
        }
        let values = match layer {
            Some(u) => Arc::new(overlay(base.values(), Layer::User, u)),
            None => base.values_shared().clone(),
        };
        let snap = Arc::new(PolicySnapshot::compile(
            Some(tenant.clone()),
            Some(actor.clone()),
            epoch,
            values,
            state.compiled.schema.clone(),
            state.compiled.scheme.clone(),
            self.symbols.clone(),
        ));
        // A slower thread that built from an older state must not replace a newer entry.
        let mut cache = self.users.lock();
        if cache.get(&key).is_none_or(|s| s.epoch() <= epoch) {
            cache.insert(key, snap.clone());
        }
        Some(snap)
    }

    /// Why `key` has its value for `tenant` (and `user`): the value, the winning layer and file,
    /// and what each lower layer had. An unknown tenant is explained from the system layer when
    /// `tenancy.unknown_tenants = "system_defaults"` (as [`snapshot`](Self::snapshot) answers it).
    ///
    /// # Errors
    /// [`ExplainError`] for an unknown tenant (when refused), an unknown key, or a key no layer set
    /// and without a default.
    pub fn explain(
        &self,
        tenant: &TenantId,
        user: Option<&ActorId>,
        key: &str,
    ) -> Result<Explanation, ExplainError> {
        let state = self.state.load();
        let c = &state.compiled;
        let spec = c
            .schema
            .get(key)
            .ok_or_else(|| ExplainError::UnknownKey(key.to_owned()))?;
        let tenant_entry = c.tenants.get(tenant);
        if tenant_entry.is_none() && !unknown_gets_defaults(&state.system) {
            return Err(ExplainError::UnknownTenant(tenant.to_string()));
        }
        let mut layers: Vec<LayerValue> = Vec::new();
        if let Some(d) = &spec.default {
            layers.push(LayerValue {
                layer: Layer::Default,
                file: None,
                value: d.clone(),
            });
        }
        if let Some(v) = c.system.values.get(key) {
            layers.push(LayerValue {
                layer: Layer::System,
                file: Some(c.system.file.clone()),
                value: v.clone(),
            });
        }
        if let Some((tenant_vals, _)) = tenant_entry
            && let Some(v) = tenant_vals.values.get(key)
        {
            layers.push(LayerValue {
                layer: Layer::Tenant,
                file: Some(tenant_vals.file.clone()),
                value: v.clone(),
            });
        }
        if let Some(u) = user.and_then(|u| c.users.get(&(tenant.clone(), u.clone())))
            && let Some(v) = u.values.get(key)
        {
            layers.push(LayerValue {
                layer: Layer::User,
                file: Some(u.file.clone()),
                value: v.clone(),
            });
        }
        let locked = tenant_entry.is_some_and(|(_, eff)| {
            matches!(eff.get("policy.lock"), Some((Value::Strings(l), _)) if l.iter().any(|k| k == key))
        });
        let Some(winner) = layers.pop() else {
            return Err(ExplainError::Unset(key.to_owned()));
        };
        Ok(Explanation {
            key: key.to_owned(),
            value: winner.value,
            layer: winner.layer,
            file: winner.file,
            lower: layers,
            scope: spec.scope,
            locked,
            doc: spec.doc.clone(),
        })
    }

    /// Rebuilds the decision tables of every published snapshot that predates a permission or
    /// rate class interned since (commands are registered after the policy is loaded, and a
    /// command's permission is interned then). Content, content hash and epoch stay the same — a
    /// reader sees the same policy, decided faster — so this is not a reload and bumps nothing.
    /// Returns how many snapshots were rebuilt. `nodus-core` calls it once its commands are
    /// registered.
    pub fn recompile(&self) -> usize {
        let _w = self.write.lock();
        let old = self.state.load_full();
        let mut rebuilt = 0usize;
        let mut fresh = |s: &Arc<PolicySnapshot>| {
            if s.is_current() {
                s.clone()
            } else {
                rebuilt += 1;
                Arc::new(s.recompiled())
            }
        };
        let system = fresh(&old.system);
        let tenants: BTreeMap<TenantId, Arc<PolicySnapshot>> = old
            .tenants
            .iter()
            .map(|(t, s)| (t.clone(), fresh(s)))
            .collect();
        if rebuilt == 0 {
            return 0;
        }
        let slots = self.slots.load();
        for (t, snap) in &tenants {
            if let Some(slot) = slots.get(t) {
                let current = slot.snap.load();
                if current.as_ref().is_some_and(|c| !Arc::ptr_eq(c, snap)) {
                    slot.snap.store(Some(snap.clone()));
                }
            }
        }
        self.fallback
            .store(unknown_gets_defaults(&system).then(|| system.clone()));
        self.state.store(Arc::new(State {
            compiled: old.compiled.clone(),
            system,
            tenants,
            user_epochs: old.user_epochs.clone(),
        }));
        // Cached user snapshots are rebuilt on next use (same epoch, same content).
        self.users.lock().clear();
        rebuilt
    }

    /// Validates `sources` and, when valid, swaps every changed tenant's snapshot atomically.
    /// On any error nothing changes and every problem is returned.
    ///
    /// # Errors
    /// [`PolicyErrors`] listing every problem.
    pub fn reload(&self, sources: PolicySources) -> Result<ReloadReport, PolicyErrors> {
        let _w = self.write.lock();
        let compiled = Arc::new(compile(&sources)?);
        let old = self.state.load_full();
        let old_epoch = self.epoch();
        let next = old_epoch + 1;
        let (system, tenants) = build_snapshots(&compiled, next, &self.symbols);

        let mut report = ReloadReport {
            epoch: old_epoch,
            added: vec![],
            removed: vec![],
            changed: vec![],
            changed_users: vec![],
            diff: vec![],
        };
        // Provenance counts: a value that moved from one file to another is a change.
        let system_changed = old.compiled.system_effective != compiled.system_effective;
        if system_changed {
            report.diff.extend(diff(
                None,
                None,
                &old.compiled.system_effective,
                &compiled.system_effective,
                |_, _| true,
            ));
        }
        // The snapshots to publish: a fresh one for each added or changed tenant (every tenant when
        // the system layer changed), the old one otherwise, so an unchanged tenant keeps its epoch.
        let mut published = BTreeMap::new();
        for (t, snap) in tenants {
            let fresh = match old.compiled.tenants.get(&t) {
                None => {
                    report.added.push(t.clone());
                    true
                }
                Some((_, old_eff)) => {
                    let d = diff(Some(&t), None, old_eff, snap.values(), |_, _| true);
                    let changed = !d.is_empty();
                    if changed {
                        report.changed.push(t.clone());
                        report.diff.extend(d);
                    }
                    changed
                }
            };
            // An old snapshot is kept only while its decision tables are current (see
            // `recompile`); otherwise the fresh build, with the same content, replaces it.
            let keep = if fresh || system_changed {
                None
            } else {
                old.tenants.get(&t).filter(|s| s.is_current()).cloned()
            };
            published.insert(t, keep.unwrap_or(snap));
        }
        for t in old.compiled.tenants.keys() {
            if !published.contains_key(t) {
                report.removed.push(t.clone());
            }
        }
        // Users whose own layer changed: a new user epoch, and the keys that layer sets or set.
        let mut user_epochs = old.user_epochs.clone();
        let user_keys: BTreeSet<&(TenantId, ActorId)> = old
            .compiled
            .users
            .keys()
            .chain(compiled.users.keys())
            .collect();
        for key in user_keys {
            let (was, is) = (old.compiled.users.get(key), compiled.users.get(key));
            if was == is {
                continue;
            }
            report.changed_users.push(key.clone());
            user_epochs.insert(key.clone(), next);
            let effective = |c: &Compiled, layer: Option<&LayerValues>| {
                c.tenants.get(&key.0).map(|(_, eff)| match layer {
                    Some(u) => overlay(eff, Layer::User, u),
                    None => Effective::clone(eff),
                })
            };
            if let (Some(a), Some(b)) = (effective(&old.compiled, was), effective(&compiled, is)) {
                report
                    .diff
                    .extend(diff(Some(&key.0), Some(&key.1), &a, &b, |o, n| {
                        o.is_some_and(|p| p.layer == Layer::User)
                            || n.is_some_and(|p| p.layer == Layer::User)
                    }));
            }
        }
        let anything = system_changed
            || !report.changed_users.is_empty()
            || !report.added.is_empty()
            || !report.removed.is_empty()
            || !report.changed.is_empty();
        if !anything {
            // Same content: keep every snapshot and the epoch, but remember the new sources (their
            // schema docs and scopes, which `explain` reports).
            self.state.store(Arc::new(State {
                compiled,
                system: old.system.clone(),
                tenants: old.tenants.clone(),
                user_epochs: old.user_epochs.clone(),
            }));
            return Ok(report);
        }
        // A user epoch no newer than its tenant's snapshot says nothing: drop it.
        user_epochs.retain(|(t, _), e| published.get(t).is_some_and(|s| *e > s.epoch()));
        // Everything is built; now publish. Slots first (readers see each tenant swap atomically),
        // then the system snapshot and the epoch.
        let mut slots = HashMap::clone(&self.slots.load());
        for (t, snap) in &published {
            let slot = slots.entry(t.clone()).or_default();
            let current = slot.snap.load();
            if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, snap)) {
                slot.snap.store(Some(snap.clone()));
            }
        }
        for t in &report.removed {
            if let Some(slot) = slots.get(t) {
                slot.snap.store(None);
            }
        }
        // Slots of tenants without a policy are kept only while a handle holds them (the
        // published map and this copy hold two references; a handle makes a third).
        slots.retain(|t, slot| published.contains_key(t) || Arc::strong_count(slot) > 2);
        self.slots.store(Arc::new(slots));
        self.fallback
            .store(unknown_gets_defaults(&system).then(|| system.clone()));
        self.state.store(Arc::new(State {
            compiled,
            system,
            tenants: published,
            user_epochs,
        }));
        self.users.lock().clear();
        self.epoch.store(next, Ordering::Release);
        report.epoch = next;
        Ok(report)
    }
}

impl PolicyStore {
    /// Reloads one tenant: validates `sources` (its tenant file and its users' files) against the
    /// system layer and schema **this store has loaded** — never the files on disk, so a
    /// half-edited `system.toml` is not picked up — and, when valid, swaps that tenant's snapshot
    /// alone. Every other tenant's snapshot, the system snapshot and other tenants' user snapshots
    /// stay the same `Arc`. The report and the errors mention only this tenant's files: its
    /// `changed`/`changed_users` and a key-level diff of its tenant and user layers (nothing of the
    /// system layer, which did not change). The epoch goes up by one when anything changed and
    /// stays otherwise.
    ///
    /// A scoped reload only updates a tenant the store has: a tenant without a loaded policy, or
    /// whose tenant document is missing from `sources` (its file was deleted), is refused with
    /// [`TenantReloadRefused`](crate::PolicyErrorKind::TenantReloadRefused) — adding or removing a
    /// tenant takes a full [`reload`](Self::reload). So are sources read for another tenant.
    ///
    /// # Errors
    /// [`PolicyErrors`] listing every problem in this tenant's files, or the refusal; nothing
    /// changed.
    pub fn reload_tenant(
        &self,
        tenant: &TenantId,
        sources: TenantSources,
    ) -> Result<ReloadReport, PolicyErrors> {
        let _w = self.write.lock();
        let old = self.state.load_full();
        let tenant_file = format!("tenants/{tenant}.toml");
        let refuse = |file: &str, why: String| -> PolicyErrors {
            PolicyError {
                file: file.to_owned(),
                layer: Layer::Tenant,
                key: None,
                line: None,
                kind: PolicyErrorKind::TenantReloadRefused(why),
            }
            .into()
        };
        if sources.tenant != *tenant {
            return Err(refuse(
                &tenant_file,
                format!(
                    "the sources hold tenant `{}`'s files, not tenant `{tenant}`'s",
                    sources.tenant
                ),
            ));
        }
        let Some((_, old_eff)) = old.compiled.tenants.get(tenant) else {
            return Err(refuse(
                &tenant_file,
                format!(
                    "tenant `{tenant}` has no policy loaded; adding a tenant takes a full reload"
                ),
            ));
        };
        if sources.doc.is_none() && sources.read_errors.is_empty() {
            return Err(refuse(
                &tenant_file,
                "the tenant file is missing; removing a tenant takes a full reload".to_owned(),
            ));
        }
        let fresh = compile_tenant(&old.compiled, &sources)?;
        let old_epoch = self.epoch();
        let next = old_epoch + 1;
        let mut report = ReloadReport {
            epoch: old_epoch,
            added: vec![],
            removed: vec![],
            changed: vec![],
            changed_users: vec![],
            diff: vec![],
        };
        let d = diff(Some(tenant), None, old_eff, &fresh.effective, |_, _| true);
        let tenant_changed = !d.is_empty();
        if tenant_changed {
            report.changed.push(tenant.clone());
            report.diff.extend(d);
        }
        // The new compiled sources: the old ones with this tenant's layers replaced.
        let mut compiled = Compiled::clone(&old.compiled);
        compiled
            .tenants
            .insert(tenant.clone(), (fresh.values, fresh.effective.clone()));
        let old_users: BTreeMap<&ActorId, &LayerValues> = old
            .compiled
            .users
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, a), v)| (a, v))
            .collect();
        compiled.users.retain(|(t, _), _| t != tenant);
        let mut user_epochs = old.user_epochs.clone();
        let actors: BTreeSet<&ActorId> = old_users
            .keys()
            .copied()
            .chain(fresh.users.keys())
            .collect();
        for actor in actors {
            let (was, is) = (old_users.get(actor).copied(), fresh.users.get(actor));
            if was == is {
                continue;
            }
            let key = (tenant.clone(), actor.clone());
            report.changed_users.push(key.clone());
            user_epochs.insert(key, next);
            let layered = |eff: &Effective, layer: Option<&LayerValues>| match layer {
                Some(u) => overlay(eff, Layer::User, u),
                None => Effective::clone(eff),
            };
            let (a, b) = (layered(old_eff, was), layered(&fresh.effective, is));
            report
                .diff
                .extend(diff(Some(tenant), Some(actor), &a, &b, |o, n| {
                    o.is_some_and(|p| p.layer == Layer::User)
                        || n.is_some_and(|p| p.layer == Layer::User)
                }));
        }
        for (actor, v) in fresh.users {
            compiled.users.insert((tenant.clone(), actor), v);
        }
        if !tenant_changed && report.changed_users.is_empty() {
            // Same content: nothing to publish, the epoch stays.
            return Ok(report);
        }
        let snap = match old.tenants.get(tenant) {
            Some(s) if !tenant_changed => s.clone(),
            _ => Arc::new(PolicySnapshot::compile(
                Some(tenant.clone()),
                None,
                next,
                fresh.effective,
                compiled.schema.clone(),
                compiled.scheme.clone(),
                self.symbols.clone(),
            )),
        };
        // A user epoch no newer than its tenant's snapshot says nothing: drop it.
        user_epochs.retain(|(t, _), e| t != tenant || *e > snap.epoch());
        let mut tenants = old.tenants.clone();
        tenants.insert(tenant.clone(), snap.clone());
        // Publish: this tenant's slot, then the state and the epoch.
        let slots = self.slots.load();
        match slots.get(tenant) {
            Some(slot) => {
                let current = slot.snap.load();
                if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &snap)) {
                    slot.snap.store(Some(snap.clone()));
                }
            }
            None => {
                let mut map = HashMap::clone(&slots);
                map.insert(
                    tenant.clone(),
                    Arc::new(TenantSlot {
                        snap: ArcSwapOption::from(Some(snap.clone())),
                    }),
                );
                self.slots.store(Arc::new(map));
            }
        }
        self.state.store(Arc::new(State {
            compiled: Arc::new(compiled),
            system: old.system.clone(),
            tenants,
            user_epochs,
        }));
        self.users.lock().retain(|(t, _), _| t != tenant);
        self.epoch.store(next, Ordering::Release);
        report.epoch = next;
        Ok(report)
    }
}

/// The keys whose value or provenance differs between `old` and `new` and that `keep` selects
/// (given each side's provenance).
fn diff(
    tenant: Option<&TenantId>,
    user: Option<&ActorId>,
    old: &Effective,
    new: &Effective,
    keep: impl Fn(Option<&Provenance>, Option<&Provenance>) -> bool,
) -> Vec<KeyChange> {
    let mut out = Vec::new();
    let mut push =
        |k: &String, o: Option<&(Value, Provenance)>, n: Option<&(Value, Provenance)>| {
            if o != n && keep(o.map(|(_, p)| p), n.map(|(_, p)| p)) {
                out.push(KeyChange {
                    tenant: tenant.cloned(),
                    user: user.cloned(),
                    key: k.clone(),
                    old: o.map(|(v, _)| v.clone()),
                    new: n.map(|(v, _)| v.clone()),
                    old_from: o.map(|(_, p)| p.clone()),
                    new_from: n.map(|(_, p)| p.clone()),
                });
            }
        };
    // Both maps iterate in key order: one merge pass, no key set to build.
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    push(ka, Some(va), None);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    push(kb, None, Some(vb));
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    push(ka, Some(va), Some(vb));
                    a.next();
                    b.next();
                }
            },
            (Some((ka, va)), None) => {
                push(ka, Some(va), None);
                a.next();
            }
            (None, Some((kb, vb))) => {
                push(kb, None, Some(vb));
                b.next();
            }
            (None, None) => break,
        }
    }
    out
}
