//! The `Nodus` handle and its dispatch pipeline.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use nodus_policy::{
    ActorId, Label, PolicySnapshot, PolicySources, PolicyStore, RateClassId, ReloadReport, Subject,
    TenantId,
};
use nodus_registry::commands::{
    AuditLevel, Command, CommandEntry, CommandInfo, CommandRegistry, Context, ContextIssuer,
    JsonCallError,
};
use nodus_registry::components::ComponentRegistry;
use nodus_registry::events::EventBus;
use nodus_registry::plugins::{
    ChangeKind, PluginChange, PluginDenied, PluginRegistry, SignedManifest,
};
use nodus_registry::rate::{RateCells, RateTable};
use nodus_security::audit::{
    AuditRecord, AuditSink, Outcome, SharedStr, SignedCheckpoint, VerifyReport,
};
use nodus_security::vault::SecretVault;
use nodus_security::vault::TrustStore;
use parking_lot::Mutex;

use crate::clock::CoarseClock;
use crate::error::{Denial, DenyReason, DispatchError, ReloadError};

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a new instance (only used to tell instances apart, never as shared state).
pub(crate) fn next_instance_id() -> u64 {
    NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
}

/// Whether two tenant ids are the same: pointer equality first (a context and the subject it was
/// issued with share one id), else a byte comparison inlined for short ids (no libc call on the
/// hot path).
#[inline(always)]
fn same_tenant(a: &TenantId, b: &TenantId) -> bool {
    if Arc::ptr_eq(a.as_arc(), b.as_arc()) {
        return true;
    }
    let (a, b) = (a.as_str().as_bytes(), b.as_str().as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    a8.iter()
        .zip(b8)
        .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_rest.iter().zip(b_rest).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The object cache's settings from the system policy (`state.cache.objects.*`).
pub(crate) fn objects_cache_config(
    system: &PolicySnapshot,
) -> Result<nodus_fabric::state::CacheConfig, crate::BuildError> {
    let key = "state.cache.objects.capacity_bytes";
    let capacity = system
        .get_int(key)
        .ok()
        .and_then(|c| u64::try_from(c).ok())
        .ok_or_else(|| crate::BuildError::Setting {
            key: key.to_owned(),
            reason: "missing or negative".to_owned(),
        })?;
    let ttl = system
        .get_duration("state.cache.objects.ttl")
        .map_err(|e| crate::BuildError::Setting {
            key: "state.cache.objects.ttl".to_owned(),
            reason: e.to_string(),
        })?;
    Ok(nodus_fabric::state::CacheConfig::with_capacity(capacity).ttl(ttl))
}

/// Where the policy came from, so that `policy.reload` can re-read it.
#[derive(Debug, Clone)]
pub(crate) enum PolicyOrigin {
    Dir(PathBuf),
    Memory,
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) policy_origin: PolicyOrigin,
    pub(crate) commands: Arc<CommandRegistry>,
    /// Issues this instance's bound contexts; private, so no one else can bind a context to it.
    pub(crate) issuer: ContextIssuer,
    pub(crate) vault: Arc<dyn SecretVault>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) events: EventBus,
    pub(crate) plugins: PluginRegistry,
    pub(crate) components: ComponentRegistry,
    pub(crate) trust: TrustStore,
    pub(crate) rates: RateTable,
    pub(crate) clock: CoarseClock,
    pub(crate) default_class: RateClassId,
    pub(crate) closed: AtomicBool,
    pub(crate) record_latency: bool,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) shutdown_lock: Mutex<bool>,
    pub(crate) reload_lock: Mutex<()>,
    /// The fabric's event log (SQLite, `fabric.db` in the data directory).
    pub(crate) event_log: Arc<nodus_fabric::SqliteEventLog>,
    /// This instance as a fabric node.
    pub(crate) node: crate::NodeIdentity,
    /// The fabric: types and objects over the event log.
    pub(crate) fabric: nodus_fabric::objects::Fabric,
    /// Configuration values over the same event log (their projector is registered with the
    /// fabric).
    pub(crate) config: Arc<nodus_fabric::config::ConfigStore>,
    /// CRDT documents over the same event log (their projector is registered with the fabric).
    pub(crate) docs: Arc<nodus_sync::crdt::AutomergeStore>,
    /// The object cache in front of the fabric's projections.
    pub(crate) objects_cache: Arc<dyn nodus_fabric::state::StateStore>,
    /// Air-gap sync, when the instance has a sync directory.
    pub(crate) sync: Option<Arc<crate::sync_commands::SyncState>>,
    /// The policy directory watcher, when `watch_policy` started one.
    pub(crate) watcher: Mutex<Option<nodus_policy::PolicyWatcher>>,
    /// Encrypted fields: decrypted-value cache, re-envelope worker, rotation schedule.
    pub(crate) fields: crate::field_commands::FieldState,
    /// The live sync agent, when the builder was given a transport.
    pub(crate) sync_agent: Mutex<Option<crate::sync_agent::AgentHandle>>,
}

impl Inner {
    fn shutdown(&self) -> Result<(), Arc<nodus_security::audit::AuditError>> {
        let mut done = self.shutdown_lock.lock();
        if *done {
            return Ok(());
        }
        *done = true;
        // The live sync agent stops first (joined), so its last records reach the audit log.
        if let Some(mut agent) = self.sync_agent.lock().take() {
            agent.stop();
        }
        // No reload may start once the audit log is closing.
        if let Some(w) = self.watcher.lock().take() {
            w.stop();
        }
        self.closed.store(true, Ordering::SeqCst);
        // The re-envelope worker and the key schedule stop before the audit log closes.
        self.fields.stop();
        let flushed = self.audit.flush().map(|_| ());
        let stopped = self.audit.shutdown();
        self.clock.stop();
        flushed.and(stopped).map_err(Arc::new)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the last handle drains and flushes the audit log and joins every thread.
        let _ = self.shutdown();
    }
}

/// The Nodus runtime: a cheap `Clone` handle over one instance's policy store, registries, vault,
/// audit log and event bus. Two instances in one process share nothing.
///
/// Every user action goes through one front door — [`Nodus::invoke`] (typed, no JSON) or
/// [`Nodus::dispatch`] (JSON) — and one pipeline, in this order:
///
/// 1. **resolve** the command (typed calls find it by type; JSON calls by name);
/// 2. **snapshot** the tenant's policy (a wait-free `arc-swap` load);
/// 3. **guard**: the tenant is known; the command is not quarantined; the subject's roles grant the
///    command's permission (RBAC); the subject's clearance dominates the command's minimum label
///    (MAC); the (tenant, actor, rate class) GCRA limit admits the call; for JSON, the payload is
///    within `limits.max_payload_bytes` and parses;
/// 4. **instrument**: a `tracing` span (only when a subscriber enables it) and cached `metrics`
///    handles;
/// 5. **route** to the handler;
/// 6. **audit** the outcome — allowed, each denial reason, unknown command, invalid input, handler
///    error — as one record, enqueued without blocking for the audit writer thread.
///
/// See the crate documentation for a complete example.
#[derive(Clone)]
pub struct Nodus {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Nodus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodus")
            .field("instance", &self.inner.id)
            .field("epoch", &self.inner.policy.epoch())
            .field("data_dir", &self.inner.data_dir)
            .finish()
    }
}

/// A weak reference to an instance, for built-in commands (so they do not keep it alive).
#[derive(Clone, Default)]
pub(crate) struct WeakNodus(pub(crate) Arc<OnceLock<Weak<Inner>>>);

impl WeakNodus {
    pub(crate) fn get(&self) -> Option<Nodus> {
        self.0
            .get()
            .and_then(Weak::upgrade)
            .map(|inner| Nodus { inner })
    }
}

/// What the guard hands the route step when it admits a call.
#[derive(Clone, Copy)]
struct Admitted {
    epoch: u64,
    max_payload: usize,
}

enum Verdict {
    Admit(Admitted),
    Deny(DenyReason, Option<Duration>, u64),
}

struct AuditFields {
    command: Option<SharedStr>,
    outcome: Outcome,
    reason: Option<Cow<'static, str>>,
    epoch: u64,
    latency: Option<Duration>,
    detail: BTreeMap<String, String>,
}

impl Nodus {
    /// Starts building an instance.
    pub fn builder() -> crate::NodusBuilder {
        crate::NodusBuilder::default()
    }

    /// A context for `subject` acting in `tenant` during `session`, issued and bound by this
    /// instance: the tenant's policy handle and the actor's rate cells are resolved here, once, so
    /// calls made with it hash nothing. Reuse it for the session; derive per-request copies with
    /// [`Context::with_request_id`].
    ///
    /// Only this instance honours the binding, and every call still checks that the subject was
    /// made for `tenant` ([`Nodus::subject`]) and under the current label scheme: a mismatch is a
    /// `TenantMismatch` denial, a stale scheme `SessionStale`, both audited.
    pub fn context(
        &self,
        tenant: &TenantId,
        subject: Subject,
        session: impl AsRef<str>,
    ) -> Context {
        // A session-private copy of the tenant id: audit records clone it on every call, and
        // threads serving the same tenant should not share that reference count's cache line.
        // `Nodus::subject` gives each subject its own copy; sharing it with the context and the
        // bound handle lets the guard's every-call tenant checks succeed on a pointer comparison.
        let own = if subject.tenant() == tenant {
            subject.tenant().clone()
        } else {
            TenantId::new(tenant.as_str()).unwrap_or_else(|_| tenant.clone())
        };
        let handle = self.inner.policy.tenant_handle(&own);
        let classes = self.inner.policy.symbols().rate_classes().len();
        let cells = self
            .inner
            .rates
            .cells(tenant, subject.actor(), classes.max(8));
        self.inner
            .issuer
            .issue(own, subject, session, handle, cells)
    }

    /// A subject of `tenant` with `roles` (interned once) and a clearance parsed with the current
    /// label scheme. The subject belongs to `tenant` and to this scheme: used for another tenant it
    /// is refused (`TenantMismatch`), after a label-scheme change it is stale (`SessionStale`).
    ///
    /// # Errors
    /// A message naming the label when it does not parse, or the tenant when it is unknown.
    pub fn subject(
        &self,
        tenant: &TenantId,
        actor: ActorId,
        roles: &[&str],
        clearance: &str,
    ) -> Result<Subject, crate::SubjectError> {
        let snap = self
            .inner
            .policy
            .snapshot(tenant)
            .ok_or_else(|| crate::SubjectError::UnknownTenant(tenant.to_string()))?;
        let clearance = snap.label_scheme().parse(clearance).map_err(|e| {
            crate::SubjectError::InvalidClearance {
                label: clearance.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let roles = self.inner.policy.symbols().role_set(roles);
        // The subject's own copy of the id (see `Nodus::context`).
        let own = TenantId::new(tenant.as_str()).unwrap_or_else(|_| tenant.clone());
        Ok(Subject::new(
            own,
            actor,
            roles,
            clearance,
            snap.label_scheme(),
        ))
    }

    /// Calls the typed command `C` with `input`: no JSON, no string hashing, no heap allocation on
    /// the allowed path (beyond what the handler itself does).
    ///
    /// # Errors
    /// [`DispatchError`]: a denial, an unknown command (type never registered), a handler error, or
    /// an unavailable audit log. Every outcome is audited.
    pub fn invoke<C: Command>(
        &self,
        ctx: &Context,
        input: C::Input,
    ) -> Result<C::Output, DispatchError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(DispatchError::ShuttingDown);
        }
        let table = inner.commands.load();
        let Some(entry) = table.id_of::<C>().and_then(|id| table.get(id)) else {
            return self.fail_unknown(ctx, SharedStr::Static(std::any::type_name::<C>()));
        };
        let snap = self.guard(ctx, entry)?;
        self.audit_ready()?;
        let span = tracing::debug_span!("nodus.invoke", command = %entry.name(), tenant = %ctx.tenant(), actor = %ctx.actor());
        let _enter = span.enter();
        let started = inner.record_latency.then(Instant::now);
        let Some(handler) = entry.typed::<C>() else {
            return self.fail_unknown(ctx, entry.name().clone());
        };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.call(ctx, input)));
        let latency = started.map(|s| s.elapsed());
        let Ok(result) = result else {
            return self.fail_panicked(ctx, entry, snap.epoch, latency);
        };
        match result {
            Ok(out) => {
                self.allowed(ctx, entry, snap.epoch, latency, BTreeMap::new())?;
                Ok(out)
            }
            Err(error) => {
                entry.metrics().errors.increment(1);
                let err = DispatchError::Handler {
                    command: entry.name().clone(),
                    error,
                };
                self.audit_error(ctx, entry.name().clone(), &err, snap.epoch, latency)?;
                Err(err)
            }
        }
    }

    /// Calls the command named `command` with a JSON `payload`; returns its JSON output.
    ///
    /// # Errors
    /// As [`Nodus::invoke`], plus [`DispatchError::PayloadTooLarge`] (checked before parsing) and
    /// [`DispatchError::InvalidInput`] naming the path of the offending field.
    pub fn dispatch(
        &self,
        ctx: &Context,
        command: &str,
        payload: &str,
    ) -> Result<serde_json::Value, DispatchError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(DispatchError::ShuttingDown);
        }
        let table = inner.commands.load();
        let Some(entry) = table.resolve(command).and_then(|id| table.get(id)) else {
            return self.fail_unknown(ctx, SharedStr::from(command.to_owned()));
        };
        let snap = self.guard(ctx, entry)?;
        let limit = snap.max_payload;
        if payload.len() > limit {
            entry.metrics().errors.increment(1);
            let err = DispatchError::PayloadTooLarge {
                command: entry.name().clone(),
                size: payload.len(),
                limit,
            };
            self.audit_error(ctx, entry.name().clone(), &err, snap.epoch, None)?;
            return Err(err);
        }
        self.audit_ready()?;
        let span = tracing::debug_span!("nodus.dispatch", command = %entry.name(), tenant = %ctx.tenant(), actor = %ctx.actor());
        let _enter = span.enter();
        let started = inner.record_latency.then(Instant::now);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (entry.json_handler())(ctx, payload)
        }));
        let latency = started.map(|s| s.elapsed());
        let Ok(result) = result else {
            return self.fail_panicked(ctx, entry, snap.epoch, latency);
        };
        match result {
            Ok(out) => {
                let mut detail = BTreeMap::new();
                if entry.spec().audit_level() == AuditLevel::Detailed {
                    detail.insert("input_bytes".to_owned(), payload.len().to_string());
                }
                self.allowed(ctx, entry, snap.epoch, latency, detail)?;
                Ok(out)
            }
            Err(e) => {
                entry.metrics().errors.increment(1);
                let err = match e {
                    JsonCallError::InvalidInput { path, message } => DispatchError::InvalidInput {
                        command: entry.name().clone(),
                        path,
                        message,
                    },
                    JsonCallError::Handler(error) => DispatchError::Handler {
                        command: entry.name().clone(),
                        error,
                    },
                    JsonCallError::Output(message) => DispatchError::Handler {
                        command: entry.name().clone(),
                        error: nodus_registry::commands::CommandError::new(
                            "OutputNotSerializable",
                            message,
                        ),
                    },
                    other => DispatchError::Handler {
                        command: entry.name().clone(),
                        error: nodus_registry::commands::CommandError::new(
                            "HandlerFailed",
                            other.to_string(),
                        ),
                    },
                };
                self.audit_error(ctx, entry.name().clone(), &err, snap.epoch, latency)?;
                Err(err)
            }
        }
    }

    /// Audits a caught handler panic (one outcome record, reason `HandlerPanicked`) and reports it.
    #[cold]
    fn fail_panicked<T>(
        &self,
        ctx: &Context,
        entry: &CommandEntry,
        epoch: u64,
        latency: Option<Duration>,
    ) -> Result<T, DispatchError> {
        entry.metrics().errors.increment(1);
        tracing::error!(command = %entry.name(), tenant = %ctx.tenant(), "command handler panicked");
        let err = DispatchError::HandlerPanicked {
            command: entry.name().clone(),
        };
        self.audit_error(ctx, entry.name().clone(), &err, epoch, latency)?;
        Err(err)
    }

    /// Fails closed before a handler runs when the audit log can no longer record its outcome.
    #[inline]
    fn audit_ready(&self) -> Result<(), DispatchError> {
        self.inner
            .audit
            .check()
            .map_err(|e| DispatchError::AuditUnavailable(Arc::new(e)))
    }

    /// The guard: tenant walls, known tenant, label scheme, quarantine, RBAC, MAC, rate. A denial
    /// is audited before it is returned.
    #[inline]
    fn guard(&self, ctx: &Context, entry: &CommandEntry) -> Result<Admitted, DispatchError> {
        let inner = &*self.inner;
        // The walls first: a subject made for another tenant is never evaluated here.
        let verdict = if !same_tenant(ctx.subject().tenant(), ctx.tenant()) {
            Verdict::Deny(DenyReason::TenantMismatch, None, 0)
        } else {
            match inner.issuer.binding(ctx) {
                Some((handle, cells)) => {
                    // Issued by this instance, so built from one tenant; checked anyway, every
                    // call.
                    if same_tenant(handle.tenant(), ctx.tenant()) {
                        handle.with_snapshot(|snap| self.decide(ctx, entry, snap, Some(cells)))
                    } else {
                        Verdict::Deny(DenyReason::TenantMismatch, None, 0)
                    }
                }
                None => {
                    let snap = inner.policy.snapshot(ctx.tenant());
                    self.decide(ctx, entry, snap.as_deref(), None)
                }
            }
        };
        match verdict {
            Verdict::Admit(a) => Ok(a),
            Verdict::Deny(reason, retry, epoch) => Err(self.deny(ctx, entry, reason, retry, epoch)),
        }
    }

    #[inline]
    fn decide(
        &self,
        ctx: &Context,
        entry: &CommandEntry,
        snap: Option<&PolicySnapshot>,
        cells: Option<&Arc<RateCells>>,
    ) -> Verdict {
        let inner = &*self.inner;
        let subject = ctx.subject();
        let Some(snap) = snap else {
            return Verdict::Deny(DenyReason::UnknownTenant, None, 0);
        };
        let epoch = snap.epoch();
        if subject.scheme() != snap.label_scheme().id() {
            return Verdict::Deny(DenyReason::SessionStale, None, epoch);
        }
        if !entry.is_active() {
            return Verdict::Deny(DenyReason::Quarantined, None, epoch);
        }
        if !snap.permits(subject, entry.permission()) {
            return Verdict::Deny(DenyReason::MissingPermission, None, epoch);
        }
        if let Some(min) = entry.min_label()
            && !subject.clearance().dominates(min)
        {
            return Verdict::Deny(DenyReason::ClearanceTooLow, None, epoch);
        }
        let class = entry.rate_class();
        if let Some(limit) = snap
            .rate_limit(class)
            .or_else(|| snap.rate_limit(inner.default_class))
        {
            let now = inner.clock.mono_ns();
            let verdict = match cells {
                Some(cells) => cells.check(class, limit, now),
                None => self.unbound_cells(ctx).check(class, limit, now),
            };
            if let Err(retry) = verdict {
                return Verdict::Deny(DenyReason::RateLimited, Some(retry), epoch);
            }
        }
        Verdict::Admit(Admitted {
            epoch,
            max_payload: snap.max_payload_bytes(),
        })
    }

    /// Counts and audits a call the handler completed.
    #[inline]
    fn allowed(
        &self,
        ctx: &Context,
        entry: &CommandEntry,
        epoch: u64,
        latency: Option<Duration>,
        detail: BTreeMap<String, String>,
    ) -> Result<(), DispatchError> {
        entry.metrics().allowed.increment(1);
        if let Some(l) = latency {
            entry.metrics().latency.record(l.as_secs_f64());
        }
        self.audit(
            ctx,
            AuditFields {
                command: Some(entry.name().clone()),
                outcome: Outcome::Allowed,
                reason: None,
                epoch,
                latency,
                detail,
            },
        )
    }

    fn unbound_cells(&self, ctx: &Context) -> Arc<RateCells> {
        let classes = self.inner.policy.symbols().rate_classes().len();
        self.inner
            .rates
            .cells(ctx.tenant(), ctx.actor(), classes.max(8))
    }

    fn deny(
        &self,
        ctx: &Context,
        entry: &CommandEntry,
        reason: DenyReason,
        retry_after: Option<Duration>,
        epoch: u64,
    ) -> DispatchError {
        entry.metrics().denied.increment(1);
        let mut detail = BTreeMap::new();
        if let Some(r) = retry_after {
            detail.insert(
                "retry_after_ms".to_owned(),
                r.as_millis().max(1).to_string(),
            );
        }
        let audited = self.audit(
            ctx,
            AuditFields {
                command: Some(entry.name().clone()),
                outcome: Outcome::Denied,
                reason: Some(Cow::Borrowed(reason.code())),
                epoch,
                latency: None,
                detail,
            },
        );
        match audited {
            Ok(()) => DispatchError::Denied(Denial {
                reason,
                command: entry.name().clone(),
                retry_after,
            }),
            Err(e) => e,
        }
    }

    fn fail_unknown<T>(&self, ctx: &Context, name: SharedStr) -> Result<T, DispatchError> {
        let err = DispatchError::UnknownCommand(name.to_string());
        let epoch = self
            .inner
            .policy
            .snapshot(ctx.tenant())
            .map(|s| s.epoch())
            .unwrap_or(0);
        self.audit_error(ctx, name, &err, epoch, None)?;
        Err(err)
    }

    fn audit_error(
        &self,
        ctx: &Context,
        command: SharedStr,
        err: &DispatchError,
        epoch: u64,
        latency: Option<Duration>,
    ) -> Result<(), DispatchError> {
        let mut detail = BTreeMap::new();
        if let DispatchError::InvalidInput { path, .. } = err {
            detail.insert("path".to_owned(), path.clone());
        }
        self.audit(
            ctx,
            AuditFields {
                command: Some(command),
                outcome: Outcome::Error,
                reason: Some(Cow::Owned(err.code().to_owned())),
                epoch,
                latency,
                detail,
            },
        )
    }

    #[inline]
    fn audit(&self, ctx: &Context, f: AuditFields) -> Result<(), DispatchError> {
        let record = AuditRecord {
            time_ms: self.inner.clock.unix_ms(),
            tenant: Some(ctx.tenant().clone()),
            actor: Some(ctx.actor().clone()),
            session: Some(ctx.session().clone()),
            kind: Cow::Borrowed("dispatch"),
            command: f.command,
            outcome: f.outcome,
            reason: f.reason,
            detail: f.detail,
            policy_epoch: f.epoch,
            latency_ns: f.latency.map(|l| l.as_nanos() as u64),
        };
        self.inner
            .audit
            .record(record)
            .map_err(|e| DispatchError::AuditUnavailable(Arc::new(e)))
    }

    /// Records an audit event outside dispatch (built-ins and subsystems use it).
    pub(crate) fn audit_event(
        &self,
        record: AuditRecord,
    ) -> Result<(), nodus_security::audit::AuditError> {
        self.inner.audit.record(record)
    }

    /// The current time as the instance's coarse clock sees it (unix milliseconds).
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.unix_ms()
    }

    /// Validates `sources`, swaps every tenant's snapshot atomically, revalidates the registries
    /// against the new policy, audits the reload and publishes `policy.reloaded`.
    ///
    /// # Errors
    /// [`ReloadError::Invalid`] listing every problem; nothing changed.
    pub fn reload_policy(&self, sources: PolicySources) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.inner.reload_lock.lock();
        let time_ms = self.now_ms();
        let result = self.inner.policy.reload(sources);
        self.after_reload(time_ms, None, result)
    }

    /// Reloads one tenant's layer — its tenant file and its users' files — against the system
    /// layer and schema already loaded; every other tenant keeps its snapshot. The reload report,
    /// the errors, the audit record (`policy.reloaded` with the tenant) and the published event
    /// (to that tenant's subscribers) concern that tenant's files only.
    ///
    /// # Errors
    /// [`ReloadError::Invalid`] listing the tenant's problems (or why a tenant-scoped reload is
    /// refused: the tenant is not loaded, its file is gone); nothing changed.
    pub fn reload_tenant_policy(
        &self,
        tenant: &TenantId,
        sources: nodus_policy::TenantSources,
    ) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.inner.reload_lock.lock();
        let time_ms = self.now_ms();
        let result = self.inner.policy.reload_tenant(tenant, sources);
        self.after_reload(time_ms, Some(tenant), result)
    }

    /// Reloads one tenant's files from the policy directory the instance was built with (only
    /// `tenants/<tenant>.toml` and `users/<tenant>/*.toml` are read: another tenant's files are
    /// never opened). What the `policy.reload` built-in does for the caller's tenant.
    ///
    /// # Errors
    /// [`ReloadError::NoDirectory`] when the policy was given in memory, else as
    /// [`Nodus::reload_tenant_policy`].
    pub fn reload_tenant_policy_from_dir(
        &self,
        tenant: &TenantId,
    ) -> Result<ReloadReport, ReloadError> {
        let PolicyOrigin::Dir(dir) = &self.inner.policy_origin else {
            return Err(ReloadError::NoDirectory);
        };
        match nodus_policy::TenantSources::from_dir(dir, tenant) {
            Ok(sources) => self.reload_tenant_policy(tenant, sources),
            Err(errors) => {
                let _one_at_a_time = self.inner.reload_lock.lock();
                self.audit_failed_reload(self.now_ms(), Some(tenant), &errors)?;
                Err(ReloadError::Invalid(errors))
            }
        }
    }

    /// The one path after every reload attempt: revalidate, audit, publish.
    fn after_reload(
        &self,
        time_ms: u64,
        tenant: Option<&TenantId>,
        result: Result<ReloadReport, nodus_policy::PolicyErrors>,
    ) -> Result<ReloadReport, ReloadError> {
        match result {
            Ok(report) => {
                let system = self.inner.policy.system_snapshot();
                // Cache sizes follow the policy at once; entries decided under the old policy are
                // unreachable already (the snapshot epoch is part of every key).
                if let Ok(config) = objects_cache_config(&system) {
                    self.inner.objects_cache.configure(config);
                }
                // Decrypted field values are never served across a policy change.
                self.inner.fields.flush_all();
                let scheme = system.label_scheme().clone();
                let changes = self.inner.commands.revalidate(&scheme);
                self.revalidate_extensions(time_ms)?;
                let mut rec = AuditRecord::new("policy.reloaded", Outcome::Allowed);
                rec.tenant = tenant.cloned();
                rec.time_ms = time_ms;
                rec.policy_epoch = report.epoch;
                rec.detail
                    .insert("tenants_changed".into(), report.changed.len().to_string());
                rec.detail
                    .insert("tenants_added".into(), report.added.len().to_string());
                rec.detail
                    .insert("tenants_removed".into(), report.removed.len().to_string());
                rec.detail
                    .insert("keys_changed".into(), report.diff.len().to_string());
                rec.detail.insert(
                    "commands_quarantine_changes".into(),
                    changes.len().to_string(),
                );
                self.audit_event(rec)?;
                // Each tenant hears about its own changes only; a system-wide event, when the
                // system layer changed, carries that layer's changes (which every tenant inherits).
                let events = &self.inner.events;
                let system = report.system_part();
                if !system.diff.is_empty() {
                    let system = serde_json::to_value(system).unwrap_or_default();
                    let _ = events.publish("policy.reloaded", None, system);
                }
                for (t, part) in report.split_by_tenant() {
                    let part = serde_json::to_value(part).unwrap_or_default();
                    let _ = events.publish("policy.reloaded", Some(&t), part);
                }
                Ok(report)
            }
            Err(errors) => {
                self.audit_failed_reload(time_ms, tenant, &errors)?;
                Err(ReloadError::Invalid(errors))
            }
        }
    }

    fn audit_failed_reload(
        &self,
        time_ms: u64,
        tenant: Option<&TenantId>,
        errors: &nodus_policy::PolicyErrors,
    ) -> Result<(), nodus_security::audit::AuditError> {
        let mut rec = AuditRecord::new("policy.reloaded", Outcome::Error);
        rec.tenant = tenant.cloned();
        rec.time_ms = time_ms;
        rec.policy_epoch = self.inner.policy.epoch();
        rec.reason = Some(Cow::Borrowed("InvalidPolicy"));
        rec.detail
            .insert("problems".into(), errors.total().to_string());
        self.audit_event(rec)
    }

    /// Re-applies every tenant's `plugins.allowed` and `ui.allowed_components` (and its trust store)
    /// to the plugin and component registries; audits and publishes each change.
    pub(crate) fn revalidate_extensions(
        &self,
        time_ms: u64,
    ) -> Result<(), nodus_security::audit::AuditError> {
        let inner = &*self.inner;
        // Every tenant with a policy, plugins or components: a tenant removed from policy loses its
        // extensions (quarantined, not deleted) like one whose policy stopped allowing them.
        let mut tenants = inner.policy.tenants();
        for t in inner
            .plugins
            .tenants()
            .into_iter()
            .chain(inner.components.tenants())
        {
            if !tenants.contains(&t) {
                tenants.push(t);
            }
        }
        for tenant in tenants {
            let snap = inner.policy.snapshot(&tenant);
            let list = |key: &str| -> Vec<String> {
                snap.as_ref()
                    .and_then(|s| s.get_strings(key).ok())
                    .map(<[String]>::to_vec)
                    .unwrap_or_default()
            };
            let plugins_allowed = list("plugins.allowed");
            let components_allowed = list("ui.allowed_components");
            for c in inner
                .plugins
                .revalidate(&tenant, &inner.trust, &|id: &str| {
                    plugins_allowed.iter().any(|a| a == id)
                })
            {
                self.audit_plugin_change(&c, time_ms)?;
            }
            for c in inner.components.revalidate(&tenant, &|id: &str| {
                components_allowed.iter().any(|a| a == id)
            }) {
                let kind = if c.quarantined {
                    "component.quarantined"
                } else {
                    "component.reinstated"
                };
                let mut rec = AuditRecord::new(kind, Outcome::Allowed)
                    .tenant(tenant.clone())
                    .detail("component", c.component.clone());
                rec.time_ms = time_ms;
                self.audit_event(rec)?;
                let _ = inner.events.publish(
                    kind,
                    Some(&tenant),
                    serde_json::to_value(&c).unwrap_or_default(),
                );
            }
        }
        Ok(())
    }

    fn audit_plugin_change(
        &self,
        c: &PluginChange,
        time_ms: u64,
    ) -> Result<(), nodus_security::audit::AuditError> {
        let (kind, outcome, reason) = match &c.change {
            ChangeKind::Quarantined { reason } => {
                ("plugin.quarantined", Outcome::Denied, Some(reason.code()))
            }
            ChangeKind::Reinstated => ("plugin.reinstated", Outcome::Allowed, None),
            _ => ("plugin.loaded", Outcome::Allowed, None),
        };
        let mut rec = AuditRecord::new(kind, outcome)
            .tenant(c.tenant.clone())
            .detail("plugin", c.plugin.clone())
            .detail("version", c.version.clone());
        rec.time_ms = time_ms;
        rec.reason = reason.map(Cow::Borrowed);
        rec.policy_epoch = self.inner.policy.epoch();
        self.audit_event(rec)?;
        let _ = self.inner.events.publish(
            kind,
            Some(&c.tenant),
            serde_json::to_value(c).unwrap_or_default(),
        );
        Ok(())
    }

    /// Loads a signed plugin manifest for `tenant`: the tenant's trust store must trust its issuer
    /// and its policy (`plugins.allowed`) must list it. Every load and refusal is audited
    /// (`plugin.loaded` / `plugin.denied`) and published on the event bus.
    ///
    /// # Errors
    /// [`PluginDenied`] with a stable reason code.
    pub fn load_plugin(
        &self,
        tenant: &TenantId,
        signed: &SignedManifest,
    ) -> Result<PluginChange, PluginDenied> {
        let inner = &*self.inner;
        let allowed: Vec<String> = inner
            .policy
            .snapshot(tenant)
            .and_then(|s| {
                s.get_strings("plugins.allowed")
                    .ok()
                    .map(<[String]>::to_vec)
            })
            .unwrap_or_default();
        let result = inner
            .plugins
            .load(tenant, signed, &inner.trust, &|id: &str| {
                allowed.iter().any(|a| a == id)
            });
        let time_ms = self.now_ms();
        match &result {
            Ok(c) => {
                // An audit failure is reported by the next dispatch (fail closed there).
                let _ = self.audit_plugin_change(c, time_ms);
            }
            Err(d) => {
                let mut rec = AuditRecord::new("plugin.denied", Outcome::Denied)
                    .tenant(tenant.clone())
                    .detail("plugin", d.plugin.clone());
                rec.time_ms = time_ms;
                rec.reason = Some(Cow::Borrowed(d.reason.code()));
                rec.policy_epoch = inner.policy.epoch();
                let _ = self.audit_event(rec);
                let _ = inner.events.publish(
                    "plugin.denied",
                    Some(tenant),
                    serde_json::to_value(d).unwrap_or_default(),
                );
            }
        }
        result
    }

    /// The plugin registry (list, get, is_active).
    pub fn plugins(&self) -> &PluginRegistry {
        &self.inner.plugins
    }

    /// The UI component registry (visible components per tenant).
    pub fn components(&self) -> &ComponentRegistry {
        &self.inner.components
    }

    /// The trust store plugin manifests are verified against.
    pub fn trust_store(&self) -> &TrustStore {
        &self.inner.trust
    }

    /// Reloads from the policy directory the instance was built with. A directory that cannot be
    /// read is a failed reload like an invalid policy: audited, nothing changed.
    ///
    /// # Errors
    /// [`ReloadError::NoDirectory`] when the policy was given in memory, else as
    /// [`Nodus::reload_policy`].
    pub fn reload_policy_from_dir(&self) -> Result<ReloadReport, ReloadError> {
        match &self.inner.policy_origin {
            PolicyOrigin::Dir(dir) => match PolicySources::from_dir(dir) {
                Ok(sources) => self.reload_policy(sources),
                Err(errors) => {
                    let _one_at_a_time = self.inner.reload_lock.lock();
                    self.audit_failed_reload(self.now_ms(), None, &errors)?;
                    Err(ReloadError::Invalid(errors))
                }
            },
            PolicyOrigin::Memory => Err(ReloadError::NoDirectory),
        }
    }

    /// Watches the policy directory the instance was built with, every `interval`, and reloads it
    /// when a file changes — through the same path as [`Nodus::reload_policy_from_dir`], so every
    /// attempt is validated, audited (`policy.reloaded`, allowed or error) and published on the
    /// event bus. The watcher is a thread the instance owns: [`Nodus::shutdown`] stops and joins
    /// it. Changes are detected by file modification time and size (symlinked files are followed,
    /// symlinked directories are not entered), against the directory as it is when this is
    /// called: an edit made between `build()` and this call is picked up by the next change, or
    /// by calling [`Nodus::reload_policy_from_dir`] first.
    ///
    /// # Errors
    /// [`WatchError::NoDirectory`](crate::WatchError::NoDirectory) for a policy given in memory, [`WatchError::AlreadyWatching`](crate::WatchError::AlreadyWatching)
    /// when a watcher runs, [`WatchError::ShutDown`](crate::WatchError::ShutDown) after shutdown, [`WatchError::Spawn`](crate::WatchError::Spawn) when
    /// the thread cannot start.
    pub fn watch_policy(&self, interval: Duration) -> Result<(), crate::WatchError> {
        let PolicyOrigin::Dir(dir) = &self.inner.policy_origin else {
            return Err(crate::WatchError::NoDirectory);
        };
        // Held across the check and the spawn, so shutdown cannot slip between them.
        let done = self.inner.shutdown_lock.lock();
        if *done {
            return Err(crate::WatchError::ShutDown);
        }
        let mut slot = self.inner.watcher.lock();
        if slot.is_some() {
            return Err(crate::WatchError::AlreadyWatching);
        }
        let weak = Arc::downgrade(&self.inner);
        let watch = nodus_policy::PolicyWatcher::spawn(dir, interval, move || {
            let Some(inner) = weak.upgrade() else {
                return false;
            };
            let nodus = Nodus { inner };
            if nodus.is_shut_down() {
                return false;
            }
            // Success and failure are both audited and published by the reload path.
            let _ = nodus.reload_policy_from_dir();
            true
        })
        .map_err(crate::WatchError::Spawn)?;
        *slot = Some(watch);
        drop(done);
        Ok(())
    }

    /// A read-only view of the policy (snapshots, explain, symbols). Changing policy goes through
    /// [`Nodus::reload_policy`] and friends only, which audit and publish every change.
    pub fn policy(&self) -> crate::PolicyView {
        crate::PolicyView::from(self.inner.policy.clone())
    }

    /// The vault. A key is used only in its own scope (a tenant's key for that tenant's envelope
    /// contexts, a system key for system contexts); each refusal (`ScopeMismatch`) met through
    /// this handle is audited as `vault.scope_denied` ([`crate::AuditedVault`]).
    pub fn vault(&self) -> &Arc<dyn SecretVault> {
        &self.inner.vault
    }

    /// The typed facade over the fabric's commands for `ctx`: `nodus.objects(&ctx).get("case",
    /// "c1")` goes through the same guarded, audited pipeline as `dispatch(&ctx, "objects.get", …)`.
    pub fn objects<'a>(&'a self, ctx: &'a Context) -> crate::fabric_commands::Objects<'a> {
        crate::fabric_commands::Objects::new(self, ctx)
    }

    /// The typed facade over the `docs.*` commands (CRDT documents) for a bound context: each
    /// call goes through the same pipeline as `dispatch`.
    pub fn docs<'a>(&'a self, ctx: &'a Context) -> crate::docs_commands::Docs<'a> {
        crate::docs_commands::Docs::new(self, ctx)
    }

    /// The memory profile of every cache in the state layer: entries, weight, capacity, TTL, hits,
    /// misses, inserts and evictions.
    pub fn state_report(&self) -> Vec<nodus_fabric::state::CacheReport> {
        vec![self.inner.objects_cache.report()]
    }

    /// This instance as a node of the fabric: its node id (the vault key id of its Ed25519 signing
    /// key, purpose [`crate::NODE_KEY_PURPOSE`]), the incarnation of its event store, and its
    /// public key — what a peer adds to its trust store to accept this node's events.
    pub fn node(&self) -> crate::NodeIdentity {
        self.inner.node
    }

    /// Air-gap sync administration: this node's public sync identity (`keys`, its `age1…`
    /// recipient included) and the trust store of peers (`trust_peer`, `revoke_peer`, audited).
    pub fn sync(&self) -> crate::sync_commands::SyncAdmin<'_> {
        crate::sync_commands::SyncAdmin::new(self)
    }

    /// Verifies every hash chain of `tenant` in the fabric's event log.
    ///
    /// # Errors
    /// The event log's storage error.
    pub fn verify_events(
        &self,
        tenant: &TenantId,
    ) -> Result<nodus_fabric::VerifyReport, nodus_fabric::EventLogError> {
        use nodus_fabric::TenantEventLog;
        self.inner.event_log.verify(tenant)
    }

    /// The audit log.
    pub fn audit_log(&self) -> &Arc<dyn AuditSink> {
        &self.inner.audit
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Every registered command with its status.
    pub fn commands(&self) -> Vec<CommandInfo> {
        self.inner.commands.list()
    }

    /// Blocks until every audit record enqueued so far is durable; returns the covering checkpoint.
    ///
    /// # Errors
    /// The audit writer's error, if it stopped.
    pub fn flush_audit(&self) -> Result<SignedCheckpoint, nodus_security::audit::AuditError> {
        self.inner.audit.flush()
    }

    /// Flushes and re-verifies the whole audit log.
    ///
    /// # Errors
    /// The audit log's error, if it cannot be read.
    pub fn verify_audit(&self) -> Result<VerifyReport, nodus_security::audit::AuditError> {
        self.inner.audit.flush()?;
        self.inner.audit.verify()
    }

    /// Stops accepting calls, drains and flushes the audit log, and joins every thread the instance
    /// owns. Idempotent; dropping the last handle does the same.
    ///
    /// # Errors
    /// The audit log's error if the final flush failed.
    pub fn shutdown(&self) -> Result<(), Arc<nodus_security::audit::AuditError>> {
        self.inner.shutdown()
    }

    /// `true` once [`Nodus::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// A label parsed with the tenant's scheme (for hosts labelling data).
    ///
    /// # Errors
    /// As [`Nodus::subject`].
    pub fn label(&self, tenant: &TenantId, text: &str) -> Result<Label, crate::SubjectError> {
        let snap = self
            .inner
            .policy
            .snapshot(tenant)
            .ok_or_else(|| crate::SubjectError::UnknownTenant(tenant.to_string()))?;
        snap.label_scheme()
            .parse(text)
            .map_err(|e| crate::SubjectError::InvalidClearance {
                label: text.to_owned(),
                reason: e.to_string(),
            })
    }
}
