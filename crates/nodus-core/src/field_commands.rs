//! Encrypted fields and the key lifecycle: `fields.decrypt`, `fields.rotate_keys`, `keys.list`,
//! `keys.rotate`, `keys.destroy_version`, `keys.min_decryption_version`, `jobs.status`,
//! `jobs.cancel`, the re-envelope worker and the rotation schedule. See `docs/security.md`,
//! "Encrypted fields".
//!
//! **Permissions, two levels.** The guard checks each command's own permission (its name, e.g.
//! `fields.decrypt`). The handler then checks the role lists of the tenant's policy:
//! `security.fields.allow_encrypted_read` (decrypt; the subject's clearance must also dominate
//! the field's classification), `security.keys.allow_manual_rotation` (`keys.rotate`,
//! `keys.destroy_version`, `keys.min_decryption_version`, the rotation of `fields.rotate_keys`)
//! and `security.keys.allow_reenvelope` (the job of `fields.rotate_keys`, `jobs.cancel`).
//! Forcing `keys.destroy_version` over live ciphertext needs the system permission
//! [`FORCE_DESTROY_PERMISSION`].
//!
//! Every decrypt, refusal and key operation is an audit record of its own (names in
//! [`audit_kinds`]); none carries a plaintext value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use nodus_fabric::objects::{FieldJob, JobState};
use nodus_policy::{PolicySnapshot, RoleId, Subject, TenantId};
use nodus_registry::commands::{Command, CommandError, CommandSpec, Context};
use nodus_security::audit::{AuditRecord, Outcome};
use nodus_security::vault::{
    EnvelopeContext, KeyAlgorithm, KeyId, KeyMeta, KeyScope, KeyState, VaultError, Zeroizing,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::builtins::{instance, tenant_snapshot as snapshot};
use crate::nodus::WeakNodus;

/// The audit record kinds this module writes.
pub mod audit_kinds {
    /// One field decrypted (outcome `allowed`), or failing to open (`error`, reason = the vault
    /// error's code).
    pub const DECRYPT: &str = "fields.decrypt";
    /// One field refused to a decrypt (reason `MissingRole`, `ClearanceTooLow` or
    /// `BulkLimit`).
    pub const DECRYPT_DENIED: &str = "fields.decrypt_denied";
    /// A key rotated by hand (actor, purpose, alg, old and new version).
    pub const ROTATED: &str = "keys.rotated";
    /// A rotation refused (reason `MissingRole`).
    pub const ROTATE_DENIED: &str = "keys.rotate_denied";
    /// A key rotated by the schedule.
    pub const ROTATE_SCHEDULED: &str = "keys.rotate_scheduled";
    /// A scheduled rotation that failed (reason = the vault error's code).
    pub const ROTATE_FAILED: &str = "keys.rotate_failed";
    /// A key version destroyed (details: version, `unreadable` = values it made unreadable,
    /// `forced`).
    pub const VERSION_DESTROYED: &str = "keys.version_destroyed";
    /// A destruction refused (reason `MissingRole`, `VersionInUse`, `ForceDenied`).
    pub const DESTROY_DENIED: &str = "keys.destroy_denied";
    /// The minimum decryption version set (details: version, disabled, enabled).
    pub const MIN_VERSION_SET: &str = "keys.min_decryption_version";
    /// Setting the minimum decryption version refused (reason `MissingRole`).
    pub const MIN_VERSION_DENIED: &str = "keys.min_decryption_version_denied";
    /// A key version near its usage limit (`keys.list` and the schedule notice it).
    pub const USAGE_WARNING: &str = "keys.usage_warning";
    /// A re-envelope job started.
    pub const REENVELOPE_STARTED: &str = "fields.reenvelope_started";
    /// A re-envelope job refused (reason `MissingRole`).
    pub const REENVELOPE_DENIED: &str = "fields.reenvelope_denied";
    /// One committed re-envelope batch (details: job, rewrapped, failed, done, total, state).
    pub const REENVELOPE: &str = "fields.reenvelope";
    /// A job cancelled.
    pub const JOB_CANCELLED: &str = "jobs.cancelled";
}

/// The system permission that lets `keys.destroy_version` destroy a version that ciphertext
/// still names (`force: true`). Only the system layer can grant it.
pub const FORCE_DESTROY_PERMISSION: &str = "system.keys.force_destroy";

/// The documented AEAD usage limit per key version: 2^32 encryptions. XChaCha20-Poly1305 with
/// random 192-bit nonces stays far below any nonce-collision risk at this count; the limit is an
/// operational bound (as NIST SP 800-38D sets for random-nonce AES-GCM) after which a version
/// should be rotated. `keys.list` flags a version at [`USAGE_WARNING_PERCENT`] of it.
pub const AEAD_USAGE_LIMIT: u64 = 1 << 32;

/// The share of the usage limit (percent) at which a version is flagged and a
/// `keys.usage_warning` is audited and published.
pub const USAGE_WARNING_PERCENT: u64 = 80;

// ---- shared state ------------------------------------------------------------------------------

type CacheKey = (Arc<str>, TenantId, String, String, String);

struct CachedValue {
    envelope: Vec<u8>,
    value: Zeroizing<Vec<u8>>,
    at_ms: u64,
    epoch: u64,
}

/// The instance's encrypted-field state: the per-session decrypted-value cache, the re-envelope
/// worker and the rotation schedule. Stopped (threads joined) on shutdown.
pub(crate) struct FieldState {
    cache: Mutex<HashMap<CacheKey, CachedValue>>,
    usage_limit: u64,
    worker: Mutex<Option<Worker>>,
    scheduler: Mutex<Option<Worker>>,
    stopped: AtomicBool,
}

struct Worker {
    tx: Option<Sender<(TenantId, String)>>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Worker {
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tx.take();
        // The last handle may be dropped on the worker itself: never join oneself.
        if self.handle.thread().id() != std::thread::current().id() {
            let _ = self.handle.join();
        }
    }
}

/// How the rotation schedule reads the time (unix ms): the system clock, or a host's (tests).
pub type ScheduleClock = Arc<dyn Fn() -> u64 + Send + Sync>;

impl FieldState {
    pub(crate) fn new(usage_limit: u64) -> Self {
        FieldState {
            cache: Mutex::new(HashMap::new()),
            usage_limit: usage_limit.max(1),
            worker: Mutex::new(None),
            scheduler: Mutex::new(None),
            stopped: AtomicBool::new(false),
        }
    }

    /// Drops every cached value of `tenant` (rotation, shredding, min version).
    pub(crate) fn flush_tenant(&self, tenant: &TenantId) {
        self.cache.lock().retain(|k, _| &k.1 != tenant);
    }

    /// Drops every cached value (policy change).
    pub(crate) fn flush_all(&self) {
        self.cache.lock().clear();
    }

    fn flush_session(&self, tenant: &TenantId, session: &Arc<str>) {
        self.cache
            .lock()
            .retain(|k, _| !(&k.1 == tenant && k.0 == *session));
    }

    /// Stops and joins the worker and the scheduler (idempotent).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(w) = self.scheduler.lock().take() {
            w.stop();
        }
        if let Some(w) = self.worker.lock().take() {
            w.stop();
        }
        self.flush_all();
    }

    /// Hands a job to the worker, starting it on first use.
    fn enqueue(&self, weak: &WeakNodus, tenant: TenantId, job: String) -> Result<(), CommandError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(CommandError::new(
                "ShuttingDown",
                "this Nodus instance is shut down",
            ));
        }
        let mut w = self.worker.lock();
        if w.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let stop = Arc::new(AtomicBool::new(false));
            let (s, weak) = (stop.clone(), weak.clone());
            let handle = std::thread::Builder::new()
                .name("nodus-reenvelope".into())
                .spawn(move || worker_loop(&weak, &rx, &s))
                .map_err(|e| CommandError::new("JobFailed", e.to_string()))?;
            *w = Some(Worker {
                tx: Some(tx),
                stop,
                handle,
            });
        }
        if let Some(tx) = w.as_ref().and_then(|w| w.tx.as_ref()) {
            let _ = tx.send((tenant, job));
        }
        Ok(())
    }
}

fn worker_loop(weak: &WeakNodus, rx: &Receiver<(TenantId, String)>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let Ok((tenant, job)) = rx.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        // One batch per turn, holding the instance only for that batch.
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let Some(n) = weak.get() else { return };
            let more = run_batch(&n, &tenant, &job);
            drop(n);
            if !more {
                break;
            }
        }
    }
}

/// Runs one batch of a job, audits and publishes it; whether the job goes on.
fn run_batch(n: &crate::Nodus, tenant: &TenantId, job: &str) -> bool {
    let Some(snap) = n.inner.policy.snapshot(tenant) else {
        return false;
    };
    match n
        .inner
        .fabric
        .reenvelope_step(tenant, snap.label_scheme(), job, n.now_ms())
    {
        Ok(Some(report)) => {
            let j = &report.job;
            let mut rec = AuditRecord::new(audit_kinds::REENVELOPE, Outcome::Allowed);
            rec.time_ms = n.now_ms();
            rec.tenant = Some(tenant.clone());
            rec.policy_epoch = snap.epoch();
            for (k, v) in [
                ("job", j.job.clone()),
                ("purpose", j.purpose.clone()),
                ("key", j.key.clone()),
                ("target_version", j.target_version.to_string()),
                ("rewrapped", report.rewrapped.to_string()),
                ("failed", report.failed.to_string()),
                ("done", j.done.to_string()),
                ("total", j.total.to_string()),
                ("state", state_text(j.state).to_owned()),
            ] {
                rec.detail.insert(k.into(), v);
            }
            let _ = n.audit_event(rec);
            let _ = n
                .inner
                .events
                .publish("jobs.progress", Some(tenant), job_json(j));
            n.inner.objects_cache.invalidate_tenant(tenant);
            n.inner.fields.flush_tenant(tenant);
            j.state == JobState::Running
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(job, code = e.code(), "re-envelope batch failed");
            false
        }
    }
}

fn state_text(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Cancelled => "cancelled",
    }
}

fn job_json(j: &FieldJob) -> Value {
    serde_json::json!({
        "job": j.job, "purpose": j.purpose, "state": state_text(j.state),
        "done": j.done, "failed": j.failed, "total": j.total,
        "progress": format!("{}/{}", j.done + j.failed, j.total),
    })
}

// ---- helpers -----------------------------------------------------------------------------------

/// Whether the subject has a role the tenant's policy lists under `key`.
pub(crate) fn has_listed_role(
    symbols: &nodus_policy::Symbols,
    snap: &PolicySnapshot,
    subject: &Subject,
    key: &str,
) -> bool {
    snap.get_strings(key).is_ok_and(|roles| {
        roles.iter().any(|r| {
            symbols
                .roles()
                .get(r)
                .is_some_and(|id| subject.roles().contains(RoleId(id)))
        })
    })
}

fn allowed(n: &crate::Nodus, snap: &PolicySnapshot, ctx: &Context, key: &str) -> bool {
    has_listed_role(n.inner.policy.symbols(), snap, ctx.subject(), key)
}

fn record(n: &crate::Nodus, ctx: &Context, kind: &'static str, outcome: Outcome) -> AuditRecord {
    let mut rec = AuditRecord::new(kind, outcome);
    rec.time_ms = n.now_ms();
    rec.tenant = Some(ctx.tenant().clone());
    rec.actor = Some(ctx.actor().clone());
    rec.session = Some(ctx.session().clone());
    rec
}

fn audit(n: &crate::Nodus, rec: AuditRecord) -> Result<(), CommandError> {
    n.audit_event(rec)
        .map_err(|e| CommandError::new("AuditUnavailable", e.to_string()))
}

fn detail(rec: &mut AuditRecord, pairs: &[(&str, String)]) {
    for (k, v) in pairs {
        rec.detail.insert((*k).to_owned(), v.clone());
    }
}

fn fabric_error(e: nodus_fabric::objects::FabricError) -> CommandError {
    CommandError::new(e.code(), e.to_string())
}

fn vault_error(e: &VaultError) -> CommandError {
    CommandError::new(e.code(), e.to_string())
}

/// Audits a refusal of kind `kind` (reason `reason`) and returns the command's error.
fn refuse(
    n: &crate::Nodus,
    ctx: &Context,
    kind: &'static str,
    reason: &'static str,
    pairs: &[(&str, String)],
    error: CommandError,
) -> CommandError {
    let mut rec = record(n, ctx, kind, Outcome::Denied);
    rec.reason = Some(Cow::Borrowed(reason));
    detail(&mut rec, pairs);
    match audit(n, rec) {
        Ok(()) => error,
        Err(e) => e,
    }
}

fn missing_role(key: &str) -> CommandError {
    CommandError::new(
        "MissingRole",
        format!("this needs a role listed in `{key}`"),
    )
}

/// The tenant's key for `purpose`.
fn tenant_key(n: &crate::Nodus, tenant: &TenantId, purpose: &str) -> Result<KeyId, CommandError> {
    n.inner
        .vault
        .find(&KeyScope::Tenant(tenant.clone()), purpose)
        .map_err(|e| vault_error(&e))?
        .ok_or_else(|| {
            CommandError::new(
                "UnknownKey",
                format!("the tenant has no key for purpose `{purpose}`"),
            )
        })
}

fn versions(
    n: &crate::Nodus,
    tenant: &TenantId,
    key: &KeyId,
) -> Result<Vec<KeyMeta>, CommandError> {
    Ok(n.inner
        .vault
        .list(Some(&KeyScope::Tenant(tenant.clone())))
        .map_err(|e| vault_error(&e))?
        .into_iter()
        .filter(|m| m.id == *key)
        .collect())
}

fn alg_text(a: KeyAlgorithm) -> &'static str {
    match a {
        KeyAlgorithm::XChaCha20Poly1305 => "xchacha20poly1305",
        KeyAlgorithm::Ed25519 => "ed25519",
    }
}

/// What a rotation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The key.
    pub key: KeyId,
    /// Its purpose.
    pub purpose: String,
    /// The algorithm.
    pub alg: String,
    /// The version that was active.
    pub old_version: u32,
    /// The new active version.
    pub new_version: u32,
}

/// Rotates the tenant's key for `purpose` (no permission check: the callers check).
fn rotate(n: &crate::Nodus, tenant: &TenantId, purpose: &str) -> Result<Rotation, CommandError> {
    let key = tenant_key(n, tenant, purpose)?;
    let old = versions(n, tenant, &key)?
        .iter()
        .filter(|m| m.state == KeyState::Active)
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let meta = n.inner.vault.rotate(&key).map_err(|e| vault_error(&e))?;
    n.inner.fields.flush_tenant(tenant);
    Ok(Rotation {
        key,
        purpose: purpose.to_owned(),
        alg: alg_text(meta.alg).to_owned(),
        old_version: old,
        new_version: meta.version,
    })
}

fn rotation_detail(r: &Rotation) -> Vec<(&'static str, String)> {
    vec![
        ("purpose", r.purpose.clone()),
        ("key", r.key.to_string()),
        ("alg", r.alg.clone()),
        ("old_version", r.old_version.to_string()),
        ("new_version", r.new_version.to_string()),
    ]
}

// ---- fields.decrypt ----------------------------------------------------------------------------

/// Input of `fields.decrypt`: one object (`id`) or, when policy allows bulk decrypt, several
/// (`ids`, at most `security.fields.max_bulk_decrypt`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// One object.
    #[serde(default)]
    pub id: Option<String>,
    /// Several objects (bulk).
    #[serde(default)]
    pub ids: Vec<String>,
    /// The encrypted fields to decrypt.
    pub fields: Vec<String>,
}

/// A field a decrypt did not return, and why (a stable code).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRefusal {
    /// The field.
    pub field: String,
    /// `ClearanceTooLow` (refused), or a vault error's code (`KeyDestroyed`, `KeyDisabled`,
    /// `Authentication`) for a value that does not open.
    pub code: String,
}

/// The decrypted fields of one object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecryptedObject {
    /// The id.
    pub id: String,
    /// The label of the version read.
    pub label: String,
    /// Decrypted values by field.
    pub values: Map<String, Value>,
    /// Fields refused to the caller (each audited as `fields.decrypt_denied`).
    pub denied: Vec<FieldRefusal>,
    /// Fields whose value does not open (each audited as `fields.decrypt`, outcome `error`).
    pub unreadable: Vec<FieldRefusal>,
    /// Fields the version holds no value for.
    pub missing: Vec<String>,
}

/// What `fields.decrypt` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decrypted {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// One entry per object asked for, in order.
    pub objects: Vec<DecryptedObject>,
}

/// `fields.decrypt`: the values of encrypted fields, to roles in
/// `security.fields.allow_encrypted_read` whose clearance dominates each field's classification.
/// Each field decrypted and each refusal is its own audit record.
pub struct FieldsDecrypt(pub(crate) WeakNodus);

impl Command for FieldsDecrypt {
    type Input = DecryptRequest;
    type Output = Decrypted;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("fields.decrypt").description("decrypt encrypted fields of an object")
    }
    fn call(&self, ctx: &Context, input: DecryptRequest) -> Result<Decrypted, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        let bulk = input.id.is_none();
        let ids: Vec<String> = match input.id {
            Some(id) if input.ids.is_empty() => vec![id],
            Some(_) => {
                return Err(CommandError::new(
                    "InvalidInput",
                    "give either `id` or `ids`, not both",
                ));
            }
            None if input.ids.is_empty() => {
                return Err(CommandError::new(
                    "InvalidInput",
                    "name the object: `id`, or `ids` for a bulk decrypt",
                ));
            }
            None => input.ids,
        };
        let max_bulk = snap
            .get_int("security.fields.max_bulk_decrypt")
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0);
        if bulk && ids.len() > max_bulk {
            return Err(refuse(
                &n,
                ctx,
                audit_kinds::DECRYPT_DENIED,
                "BulkLimit",
                &[
                    ("type", input.type_name.clone()),
                    ("objects", ids.len().to_string()),
                    ("max_bulk_decrypt", max_bulk.to_string()),
                ],
                CommandError::new(
                    "BulkDecryptDenied",
                    format!(
                        "a decrypt of {} objects exceeds `security.fields.max_bulk_decrypt` ({max_bulk})",
                        ids.len()
                    ),
                ),
            ));
        }
        if !allowed(&n, &snap, ctx, "security.fields.allow_encrypted_read") {
            let mut last = None;
            for id in &ids {
                for f in &input.fields {
                    let mut rec = record(&n, ctx, audit_kinds::DECRYPT_DENIED, Outcome::Denied);
                    rec.reason = Some(Cow::Borrowed("MissingRole"));
                    detail(
                        &mut rec,
                        &[
                            ("type", input.type_name.clone()),
                            ("id", id.clone()),
                            ("field", f.clone()),
                        ],
                    );
                    last = audit(&n, rec).err().or(last);
                }
            }
            return Err(
                last.unwrap_or_else(|| missing_role("security.fields.allow_encrypted_read"))
            );
        }
        let ttl_ms = snap
            .get_int("state.cache.fields.ttl_secs")
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
            .saturating_mul(1000);
        let mut objects = Vec::with_capacity(ids.len());
        for id in ids {
            objects.push(decrypt_one(
                &n,
                ctx,
                &snap,
                &input.type_name,
                &id,
                &input.fields,
                ttl_ms,
            )?);
        }
        Ok(Decrypted {
            type_name: input.type_name,
            objects,
        })
    }
}

fn decrypt_one(
    n: &crate::Nodus,
    ctx: &Context,
    snap: &PolicySnapshot,
    type_name: &str,
    id: &str,
    fields: &[String],
    ttl_ms: u64,
) -> Result<DecryptedObject, CommandError> {
    let (def, label, envs) = n
        .inner
        .fabric
        .sealed_fields(ctx.tenant(), snap, ctx.subject(), type_name, id, fields)
        .map_err(fabric_error)?;
    let tname = def.name().as_str();
    let mut out = DecryptedObject {
        id: id.to_owned(),
        label: label.clone(),
        values: Map::new(),
        denied: Vec::new(),
        unreadable: Vec::new(),
        missing: Vec::new(),
    };
    for (field, env) in envs {
        let base = [
            ("type", tname.to_owned()),
            ("id", id.to_owned()),
            ("label", label.clone()),
            ("field", field.clone()),
        ];
        if def
            .classification(&field)
            .is_some_and(|c| !snap.can_read(ctx.subject(), c))
        {
            let mut rec = record(n, ctx, audit_kinds::DECRYPT_DENIED, Outcome::Denied);
            rec.reason = Some(Cow::Borrowed("ClearanceTooLow"));
            detail(&mut rec, &base);
            audit(n, rec)?;
            out.denied.push(FieldRefusal {
                field,
                code: "ClearanceTooLow".into(),
            });
            continue;
        }
        let Some(env) = env else {
            out.missing.push(field);
            continue;
        };
        let header = nodus_security::vault::parse_envelope_header(&env).ok();
        let key_detail = header.map_or_else(Vec::new, |h| {
            vec![
                ("key", h.key_id.to_string()),
                ("version", h.key_version.to_string()),
            ]
        });
        let (opened, cached) = open_cached(n, ctx, snap, tname, id, &field, &env, ttl_ms);
        match opened {
            Ok(plain) => {
                let Ok(value) = serde_json::from_slice::<Value>(&plain) else {
                    return Err(CommandError::new(
                        "Corrupt",
                        format!("field `{field}` of `{tname}/{id}` does not hold JSON"),
                    ));
                };
                let mut rec = record(n, ctx, audit_kinds::DECRYPT, Outcome::Allowed);
                detail(&mut rec, &base);
                detail(&mut rec, &key_detail);
                detail(&mut rec, &[("cached", cached.to_string())]);
                audit(n, rec)?;
                out.values.insert(field, value);
            }
            Err(e) => {
                let mut rec = record(n, ctx, audit_kinds::DECRYPT, Outcome::Error);
                rec.reason = Some(Cow::Borrowed(e.code()));
                detail(&mut rec, &base);
                detail(&mut rec, &key_detail);
                audit(n, rec)?;
                out.unreadable.push(FieldRefusal {
                    field,
                    code: e.code().into(),
                });
            }
        }
    }
    Ok(out)
}

/// Opens `env` through the session's cache (when `ttl_ms` > 0): a hit needs the same envelope,
/// the same policy epoch and an age below the TTL. Whether it was a hit.
#[allow(clippy::too_many_arguments)]
fn open_cached(
    n: &crate::Nodus,
    ctx: &Context,
    snap: &PolicySnapshot,
    tname: &str,
    id: &str,
    field: &str,
    env: &[u8],
    ttl_ms: u64,
) -> (Result<Zeroizing<Vec<u8>>, VaultError>, bool) {
    let now = n.now_ms();
    let key: CacheKey = (
        ctx.session().clone(),
        ctx.tenant().clone(),
        tname.to_owned(),
        id.to_owned(),
        field.to_owned(),
    );
    if ttl_ms > 0
        && let Some(hit) = n.inner.fields.cache.lock().get(&key)
        && hit.envelope == env
        && hit.epoch == snap.epoch()
        && now.saturating_sub(hit.at_ms) < ttl_ms
    {
        return (Ok(hit.value.clone()), true);
    }
    let ectx = EnvelopeContext::tenant(ctx.tenant(), tname, id, field);
    let opened = n.inner.vault.open(env, &ectx);
    if ttl_ms > 0
        && let Ok(v) = &opened
    {
        n.inner.fields.cache.lock().insert(
            key,
            CachedValue {
                envelope: env.to_vec(),
                value: v.clone(),
                at_ms: now,
                epoch: snap.epoch(),
            },
        );
    }
    (opened, false)
}

// ---- keys.* ------------------------------------------------------------------------------------

/// One key version as `keys.list` shows it: metadata and usage, never material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key.
    pub key: KeyId,
    /// Its purpose.
    pub purpose: String,
    /// The algorithm.
    pub alg: String,
    /// The version.
    pub version: u32,
    /// `active`, `decrypt_only`, `disabled` or `destroyed`.
    pub state: KeyState,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Envelopes sealed with this version.
    pub encryptions: u64,
    /// Signatures made with this version.
    pub signatures: u64,
    /// The documented usage limit ([`AEAD_USAGE_LIMIT`]).
    pub usage_limit: u64,
    /// `true` at [`USAGE_WARNING_PERCENT`] of the limit or above.
    pub usage_warning: bool,
}

/// `keys.list`: the caller's tenant's keys, every version, with usage counts. A version near the
/// usage limit is flagged, audited (`keys.usage_warning`) and published (`keys.usage_warning`).
pub struct KeysList(pub(crate) WeakNodus);

impl Command for KeysList {
    type Input = Option<crate::builtins::NoInput>;
    type Output = Vec<KeyInfo>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("keys.list").description("list the tenant's keys (metadata only)")
    }
    fn call(
        &self,
        ctx: &Context,
        _input: Option<crate::builtins::NoInput>,
    ) -> Result<Vec<KeyInfo>, CommandError> {
        let n = instance(&self.0)?;
        let metas = n
            .inner
            .vault
            .list(Some(&KeyScope::Tenant(ctx.tenant().clone())))
            .map_err(|e| vault_error(&e))?;
        let limit = n.inner.fields.usage_limit;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            let used = m.encryptions.max(m.signatures);
            let warn =
                u128::from(used) * 100 >= u128::from(limit) * u128::from(USAGE_WARNING_PERCENT);
            if warn {
                let mut rec = record(&n, ctx, audit_kinds::USAGE_WARNING, Outcome::Allowed);
                detail(
                    &mut rec,
                    &[
                        ("purpose", m.purpose.clone()),
                        ("key", m.id.to_string()),
                        ("version", m.version.to_string()),
                        ("used", used.to_string()),
                        ("limit", limit.to_string()),
                    ],
                );
                audit(&n, rec)?;
                let _ = n.inner.events.publish(
                    "keys.usage_warning",
                    Some(ctx.tenant()),
                    serde_json::json!({"purpose": m.purpose, "key": m.id.to_string(),
                        "version": m.version, "used": used, "limit": limit}),
                );
            }
            out.push(KeyInfo {
                key: m.id,
                purpose: m.purpose,
                alg: alg_text(m.alg).to_owned(),
                version: m.version,
                state: m.state,
                created_ms: m.created_ms,
                encryptions: m.encryptions,
                signatures: m.signatures,
                usage_limit: limit,
                usage_warning: warn,
            });
        }
        Ok(out)
    }
}

/// Input naming a key purpose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeRef {
    /// The purpose (`fields` unless a type names another `key_purpose`).
    pub purpose: String,
}

/// `keys.rotate`: a new active version of the tenant's key for a purpose; older versions stay
/// decrypt-only. Needs a role in `security.keys.allow_manual_rotation`. Audited `keys.rotated`
/// (actor, purpose, alg, old and new version), refusals `keys.rotate_denied`.
pub struct KeysRotate(pub(crate) WeakNodus);

impl Command for KeysRotate {
    type Input = PurposeRef;
    type Output = Rotation;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("keys.rotate")
            .rate_class("admin")
            .description("rotate a tenant key")
    }
    fn call(&self, ctx: &Context, input: PurposeRef) -> Result<Rotation, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        manual_rotation(&n, &snap, ctx, &input.purpose)
    }
}

fn manual_rotation(
    n: &crate::Nodus,
    snap: &PolicySnapshot,
    ctx: &Context,
    purpose: &str,
) -> Result<Rotation, CommandError> {
    const KEY: &str = "security.keys.allow_manual_rotation";
    if !allowed(n, snap, ctx, KEY) {
        return Err(refuse(
            n,
            ctx,
            audit_kinds::ROTATE_DENIED,
            "MissingRole",
            &[("purpose", purpose.to_owned())],
            missing_role(KEY),
        ));
    }
    let r = rotate(n, ctx.tenant(), purpose)?;
    let mut rec = record(n, ctx, audit_kinds::ROTATED, Outcome::Allowed);
    detail(&mut rec, &rotation_detail(&r));
    audit(n, rec)?;
    let _ = n.inner.events.publish(
        "keys.rotated",
        Some(ctx.tenant()),
        serde_json::json!({"purpose": r.purpose, "old_version": r.old_version, "new_version": r.new_version}),
    );
    Ok(r)
}

/// Input of `keys.destroy_version`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyVersion {
    /// The purpose.
    pub purpose: String,
    /// The version to destroy (not the active one).
    pub version: u32,
    /// Destroy even though ciphertext still names it (needs [`FORCE_DESTROY_PERMISSION`]).
    #[serde(default)]
    pub force: bool,
}

/// What `keys.destroy_version` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destroyed {
    /// The key.
    pub key: KeyId,
    /// The version destroyed.
    pub version: u32,
    /// Stored values it made unreadable (0 unless forced).
    pub unreadable: u64,
}

/// `keys.destroy_version`: crypto-shredding of one non-active version. Refused
/// (`VersionInUse`, naming the count) while stored ciphertext names the version, unless `force`
/// and the caller holds [`FORCE_DESTROY_PERMISSION`]. Audited `keys.version_destroyed` with the
/// count of values made unreadable; refusals `keys.destroy_denied`.
pub struct KeysDestroyVersion(pub(crate) WeakNodus);

impl Command for KeysDestroyVersion {
    type Input = DestroyVersion;
    type Output = Destroyed;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("keys.destroy_version")
            .rate_class("admin")
            .description("destroy a key version (crypto-shredding)")
    }
    fn call(&self, ctx: &Context, input: DestroyVersion) -> Result<Destroyed, CommandError> {
        const KEY: &str = "security.keys.allow_manual_rotation";
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        let base = [
            ("purpose", input.purpose.clone()),
            ("version", input.version.to_string()),
            ("forced", input.force.to_string()),
        ];
        if !allowed(&n, &snap, ctx, KEY) {
            return Err(refuse(
                &n,
                ctx,
                audit_kinds::DESTROY_DENIED,
                "MissingRole",
                &base,
                missing_role(KEY),
            ));
        }
        let key = tenant_key(&n, ctx.tenant(), &input.purpose)?;
        let in_use = n
            .inner
            .fabric
            .count_ciphertexts(ctx.tenant(), &key, Some(input.version))
            .map_err(fabric_error)?;
        if in_use > 0 {
            if !input.force {
                return Err(refuse(
                    &n,
                    ctx,
                    audit_kinds::DESTROY_DENIED,
                    "VersionInUse",
                    &[&base[..], &[("in_use", in_use.to_string())]].concat(),
                    CommandError::new(
                        "VersionInUse",
                        format!(
                            "{in_use} stored value(s) are sealed under version {} of key `{key}`: re-envelope them first, or force (system permission `{FORCE_DESTROY_PERMISSION}`)",
                            input.version
                        ),
                    ),
                ));
            }
            // Interned at build time (`NodusBuilder::build`).
            let permission = n
                .inner
                .policy
                .symbols()
                .permission(FORCE_DESTROY_PERMISSION);
            let may_force = snap.permits(ctx.subject(), permission);
            if !may_force {
                return Err(refuse(
                    &n,
                    ctx,
                    audit_kinds::DESTROY_DENIED,
                    "ForceDenied",
                    &[&base[..], &[("in_use", in_use.to_string())]].concat(),
                    CommandError::new(
                        "ForceDenied",
                        format!(
                            "forcing a destruction needs the system permission `{FORCE_DESTROY_PERMISSION}`"
                        ),
                    ),
                ));
            }
        }
        n.inner
            .vault
            .destroy(&key, input.version)
            .map_err(|e| vault_error(&e))?;
        n.inner.fields.flush_tenant(ctx.tenant());
        let mut rec = record(&n, ctx, audit_kinds::VERSION_DESTROYED, Outcome::Allowed);
        detail(
            &mut rec,
            &[
                &base[..],
                &[("key", key.to_string()), ("unreadable", in_use.to_string())],
            ]
            .concat(),
        );
        audit(&n, rec)?;
        Ok(Destroyed {
            key,
            version: input.version,
            unreadable: in_use,
        })
    }
}

/// Input of `keys.min_decryption_version`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinVersion {
    /// The purpose.
    pub purpose: String,
    /// Versions below it stop decrypting (disabled); versions from it on that were disabled are
    /// enabled again. At most the active version.
    pub version: u32,
}

/// `keys.min_decryption_version` (Vault transit's control): versions below `version` are
/// disabled in the vault (reversible: a lower minimum enables them again; destroyed ones stay
/// destroyed). Audited `keys.min_decryption_version`; refusals
/// `keys.min_decryption_version_denied`. Output: every version after the change.
pub struct KeysMinDecryptionVersion(pub(crate) WeakNodus);

impl Command for KeysMinDecryptionVersion {
    type Input = MinVersion;
    type Output = Vec<KeyInfo>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("keys.min_decryption_version")
            .rate_class("admin")
            .description("set the oldest key version that still decrypts")
    }
    fn call(&self, ctx: &Context, input: MinVersion) -> Result<Vec<KeyInfo>, CommandError> {
        const KEY: &str = "security.keys.allow_manual_rotation";
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        if !allowed(&n, &snap, ctx, KEY) {
            return Err(refuse(
                &n,
                ctx,
                audit_kinds::MIN_VERSION_DENIED,
                "MissingRole",
                &[
                    ("purpose", input.purpose.clone()),
                    ("version", input.version.to_string()),
                ],
                missing_role(KEY),
            ));
        }
        let key = tenant_key(&n, ctx.tenant(), &input.purpose)?;
        let all = versions(&n, ctx.tenant(), &key)?;
        let active = all
            .iter()
            .filter(|m| m.state == KeyState::Active)
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        if input.version == 0 || input.version > active {
            return Err(CommandError::new(
                "InvalidVersion",
                format!(
                    "the minimum decryption version of key `{key}` must be between 1 and the active version {active}"
                ),
            ));
        }
        let (mut disabled, mut enabled) = (0u32, 0u32);
        for m in &all {
            if m.version < input.version && m.state == KeyState::DecryptOnly {
                n.inner
                    .vault
                    .disable(&key, m.version)
                    .map_err(|e| vault_error(&e))?;
                disabled += 1;
            } else if m.version >= input.version && m.state == KeyState::Disabled {
                n.inner
                    .vault
                    .enable(&key, m.version)
                    .map_err(|e| vault_error(&e))?;
                enabled += 1;
            }
        }
        n.inner.fields.flush_tenant(ctx.tenant());
        let mut rec = record(&n, ctx, audit_kinds::MIN_VERSION_SET, Outcome::Allowed);
        detail(
            &mut rec,
            &[
                ("purpose", input.purpose.clone()),
                ("key", key.to_string()),
                ("version", input.version.to_string()),
                ("disabled", disabled.to_string()),
                ("enabled", enabled.to_string()),
            ],
        );
        audit(&n, rec)?;
        let limit = n.inner.fields.usage_limit;
        Ok(versions(&n, ctx.tenant(), &key)?
            .into_iter()
            .map(|m| KeyInfo {
                key: m.id,
                purpose: m.purpose,
                alg: alg_text(m.alg).to_owned(),
                version: m.version,
                state: m.state,
                created_ms: m.created_ms,
                encryptions: m.encryptions,
                signatures: m.signatures,
                usage_limit: limit,
                usage_warning: false,
            })
            .collect())
    }
}

// ---- fields.rotate_keys and jobs.* ---------------------------------------------------------------

/// Input of `fields.rotate_keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeys {
    /// The key purpose (default `fields`).
    #[serde(default = "default_purpose")]
    pub purpose: String,
    /// Start a re-envelope job for the older versions' ciphertext (default `true`).
    #[serde(default = "yes")]
    pub reenvelope: bool,
    /// Ciphertexts per batch (default and cap: `security.keys.reenvelope_batch_size`).
    #[serde(default)]
    pub batch_size: Option<u32>,
}

fn default_purpose() -> String {
    "fields".into()
}

fn yes() -> bool {
    true
}

/// What `fields.rotate_keys` answers at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateKeysStarted {
    /// The rotation.
    pub rotation: Rotation,
    /// The re-envelope job, when one was started (follow it with `jobs.status`).
    pub job: Option<FieldJob>,
}

/// `fields.rotate_keys` (the seed's command): rotates the tenant's key for a purpose (as
/// `keys.rotate`) and starts a re-envelope job (needs a role in `security.keys.allow_reenvelope`
/// too), returning at once with the job.
pub struct FieldsRotateKeys(pub(crate) WeakNodus);

impl Command for FieldsRotateKeys {
    type Input = RotateKeys;
    type Output = RotateKeysStarted;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("fields.rotate_keys")
            .rate_class("admin")
            .description("rotate a field key and re-envelope its ciphertext in the background")
    }
    fn call(&self, ctx: &Context, input: RotateKeys) -> Result<RotateKeysStarted, CommandError> {
        const KEY: &str = "security.keys.allow_reenvelope";
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        if input.reenvelope && !allowed(&n, &snap, ctx, KEY) {
            return Err(refuse(
                &n,
                ctx,
                audit_kinds::REENVELOPE_DENIED,
                "MissingRole",
                &[("purpose", input.purpose.clone())],
                missing_role(KEY),
            ));
        }
        if !input.reenvelope {
            let rotation = manual_rotation(&n, &snap, ctx, &input.purpose)?;
            return Ok(RotateKeysStarted {
                rotation,
                job: None,
            });
        }
        let cap = batch_size(&snap);
        let batch = input.batch_size.map_or(cap, |b| b.clamp(1, cap));
        let pending = pend_job(&n, ctx.tenant(), &input.purpose, batch)?;
        let rotation = match manual_rotation(&n, &snap, ctx, &input.purpose) {
            Ok(r) => r,
            Err(e) => {
                let _ = n
                    .inner
                    .fabric
                    .cancel_job(ctx.tenant(), &pending.job, n.now_ms());
                return Err(e);
            }
        };
        let job = start_job(&n, ctx.tenant(), Some(ctx), &rotation, &pending)?;
        Ok(RotateKeysStarted {
            rotation,
            job: Some(job),
        })
    }
}

fn batch_size(snap: &PolicySnapshot) -> u32 {
    snap.get_int("security.keys.reenvelope_batch_size")
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(500)
        .max(1)
}

fn new_job_id() -> Result<String, CommandError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|_| CommandError::new("Rng", "the OS RNG failed"))?;
    Ok(format!("j{}", hex::encode(b)))
}

/// Records a pending re-envelope job for the rotation about to happen on `purpose` (its target
/// is the version after the active one), before the rotation: a crash between the two leaves a
/// pending job that [`Nodus::resume_jobs`] resolves.
fn pend_job(
    n: &crate::Nodus,
    tenant: &TenantId,
    purpose: &str,
    batch: u32,
) -> Result<FieldJob, CommandError> {
    let key = tenant_key(n, tenant, purpose)?;
    let active = versions(n, tenant, &key)?
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    n.inner
        .fabric
        .start_reenvelope_job(
            tenant,
            &new_job_id()?,
            purpose,
            &key,
            active.saturating_add(1),
            batch,
            n.now_ms(),
        )
        .map_err(fabric_error)
}

/// After `rotation`: activates the pending job, audits its start and hands it to the worker.
fn start_job(
    n: &crate::Nodus,
    tenant: &TenantId,
    ctx: Option<&Context>,
    rotation: &Rotation,
    pending: &FieldJob,
) -> Result<FieldJob, CommandError> {
    if rotation.new_version != pending.target_version {
        // Another rotation came in between: the job follows the one that happened.
        let _ = n.inner.fabric.cancel_job(tenant, &pending.job, n.now_ms());
        let again = n
            .inner
            .fabric
            .start_reenvelope_job(
                tenant,
                &new_job_id()?,
                &rotation.purpose,
                &rotation.key,
                rotation.new_version,
                pending.batch_size,
                n.now_ms(),
            )
            .map_err(fabric_error)?;
        return start_job(n, tenant, ctx, rotation, &again);
    }
    let job = n
        .inner
        .fabric
        .activate_job(tenant, &pending.job, n.now_ms())
        .map_err(fabric_error)?;
    let mut rec = match ctx {
        Some(c) => record(n, c, audit_kinds::REENVELOPE_STARTED, Outcome::Allowed),
        None => {
            let mut r = AuditRecord::new(audit_kinds::REENVELOPE_STARTED, Outcome::Allowed);
            r.time_ms = n.now_ms();
            r.tenant = Some(tenant.clone());
            r
        }
    };
    detail(
        &mut rec,
        &[
            ("job", job.job.clone()),
            ("purpose", rotation.purpose.clone()),
            ("key", rotation.key.to_string()),
            ("target_version", rotation.new_version.to_string()),
            ("total", job.total.to_string()),
            ("batch_size", job.batch_size.to_string()),
        ],
    );
    audit(n, rec)?;
    n.inner
        .fields
        .enqueue(&n.weak(), tenant.clone(), job.job.clone())?;
    Ok(job)
}

/// Input naming a job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    /// The job id.
    pub job: String,
}

/// A job's state as `jobs.status` and `jobs.cancel` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    #[serde(flatten)]
    pub job: FieldJob,
    /// `done/total` (rewrapped and failed count as handled).
    pub progress: String,
}

fn status(j: FieldJob) -> JobStatus {
    JobStatus {
        progress: format!("{}/{}", j.done + j.failed, j.total),
        job: j,
    }
}

/// `jobs.status`: a re-envelope job of the caller's tenant, with `done/total`.
pub struct JobsStatus(pub(crate) WeakNodus);

impl Command for JobsStatus {
    type Input = JobRef;
    type Output = JobStatus;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("jobs.status").description("a background job's progress")
    }
    fn call(&self, ctx: &Context, input: JobRef) -> Result<JobStatus, CommandError> {
        let n = instance(&self.0)?;
        n.inner
            .fabric
            .job(ctx.tenant(), &input.job)
            .map(status)
            .map_err(fabric_error)
    }
}

/// `jobs.cancel`: stops a running re-envelope job after its current batch (what it rewrapped
/// stays rewrapped). Needs a role in `security.keys.allow_reenvelope`; audited `jobs.cancelled`.
pub struct JobsCancel(pub(crate) WeakNodus);

impl Command for JobsCancel {
    type Input = JobRef;
    type Output = JobStatus;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("jobs.cancel")
            .rate_class("admin")
            .description("cancel a background job")
    }
    fn call(&self, ctx: &Context, input: JobRef) -> Result<JobStatus, CommandError> {
        const KEY: &str = "security.keys.allow_reenvelope";
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        if !allowed(&n, &snap, ctx, KEY) {
            return Err(refuse(
                &n,
                ctx,
                audit_kinds::REENVELOPE_DENIED,
                "MissingRole",
                &[("job", input.job.clone())],
                missing_role(KEY),
            ));
        }
        let j = n
            .inner
            .fabric
            .cancel_job(ctx.tenant(), &input.job, n.now_ms())
            .map_err(fabric_error)?;
        let mut rec = record(&n, ctx, audit_kinds::JOB_CANCELLED, Outcome::Allowed);
        detail(
            &mut rec,
            &[
                ("job", j.job.clone()),
                ("done", j.done.to_string()),
                ("total", j.total.to_string()),
            ],
        );
        audit(&n, rec)?;
        Ok(status(j))
    }
}

// ---- the rotation schedule -----------------------------------------------------------------------

/// What one pass of the rotation schedule did for one tenant key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduledRotation {
    /// Rotated (audited `keys.rotate_scheduled`), with the re-envelope job started for it.
    Rotated {
        /// The tenant.
        tenant: TenantId,
        /// The rotation.
        rotation: Rotation,
        /// The job id.
        job: Option<String>,
    },
    /// The rotation failed (audited `keys.rotate_failed`).
    Failed {
        /// The tenant.
        tenant: TenantId,
        /// The purpose.
        purpose: String,
        /// The error's code.
        code: String,
    },
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl crate::Nodus {
    pub(crate) fn weak(&self) -> WeakNodus {
        let w = WeakNodus::default();
        let _ = w.0.set(Arc::downgrade(&self.inner));
        w
    }

    /// Ends a session's use of encrypted fields: drops the values its decrypts cached
    /// (`state.cache.fields.ttl_secs`). Call it when the host's session ends.
    pub fn end_session(&self, ctx: &Context) {
        self.inner.fields.flush_session(ctx.tenant(), ctx.session());
    }

    /// One pass of the rotation schedule at time `now_ms` (unix ms): every tenant AEAD key whose
    /// active version is older than the tenant's `security.keys.rotation_days` (0: never) is
    /// rotated and a re-envelope job started for it, each audited (`keys.rotate_scheduled`, or
    /// `keys.rotate_failed`). The schedule thread
    /// ([`NodusBuilder::key_rotation_schedule`](crate::NodusBuilder::key_rotation_schedule)) calls
    /// it; hosts and tests may call it with any time.
    pub fn rotate_due_keys(&self, now_ms: u64) -> Vec<ScheduledRotation> {
        let mut out = Vec::new();
        let Ok(all) = self.inner.vault.list(None) else {
            return out;
        };
        // The active version of each tenant AEAD key.
        let mut due: Vec<(TenantId, String, u64)> = all
            .into_iter()
            .filter(|m| m.state == KeyState::Active && m.alg == KeyAlgorithm::XChaCha20Poly1305)
            .filter_map(|m| match m.scope {
                KeyScope::Tenant(t) => Some((t, m.purpose, m.created_ms)),
                KeyScope::System => None,
            })
            .collect();
        due.sort();
        for (tenant, purpose, created) in due {
            let Some(snap) = self.inner.policy.snapshot(&tenant) else {
                continue;
            };
            let days = snap
                .get_int("security.keys.rotation_days")
                .ok()
                .and_then(|d| u64::try_from(d).ok())
                .unwrap_or(0);
            if days == 0 || now_ms < created.saturating_add(days.saturating_mul(DAY_MS)) {
                continue;
            }
            let mut rec = AuditRecord::new(audit_kinds::ROTATE_SCHEDULED, Outcome::Allowed);
            rec.time_ms = self.now_ms();
            rec.tenant = Some(tenant.clone());
            rec.policy_epoch = snap.epoch();
            let pending = pend_job(self, &tenant, &purpose, batch_size(&snap)).ok();
            match rotate(self, &tenant, &purpose) {
                Ok(rotation) => {
                    detail(&mut rec, &rotation_detail(&rotation));
                    detail(&mut rec, &[("rotation_days", days.to_string())]);
                    let _ = self.audit_event(rec);
                    let job = pending
                        .and_then(|p| start_job(self, &tenant, None, &rotation, &p).ok())
                        .map(|j| j.job);
                    out.push(ScheduledRotation::Rotated {
                        tenant,
                        rotation,
                        job,
                    });
                }
                Err(e) => {
                    if let Some(p) = pending {
                        let _ = self.inner.fabric.cancel_job(&tenant, &p.job, self.now_ms());
                    }
                    rec.kind = Cow::Borrowed(audit_kinds::ROTATE_FAILED);
                    rec.outcome = Outcome::Error;
                    rec.reason = Some(Cow::Owned(e.code().to_owned()));
                    detail(&mut rec, &[("purpose", purpose.clone())]);
                    let _ = self.audit_event(rec);
                    out.push(ScheduledRotation::Failed {
                        tenant,
                        purpose,
                        code: e.code().to_owned(),
                    });
                }
            }
        }
        out
    }

    /// Resumes every running re-envelope job (after a restart). A pending job whose rotation
    /// happened (its target version is the key's active one) becomes running; one whose
    /// rotation did not happen is cancelled.
    pub(crate) fn resume_jobs(&self) {
        let Ok(jobs) = self.inner.fabric.running_jobs() else {
            return;
        };
        for (tenant, job) in jobs {
            if job.state == JobState::Pending {
                let rotated = KeyId::parse(&job.key)
                    .and_then(|k| versions(self, &tenant, &k).ok())
                    .is_some_and(|vs| {
                        vs.iter()
                            .any(|m| m.state == KeyState::Active && m.version == job.target_version)
                    });
                let now = self.now_ms();
                let resolved = if rotated {
                    self.inner.fabric.activate_job(&tenant, &job.job, now)
                } else {
                    self.inner.fabric.cancel_job(&tenant, &job.job, now)
                };
                if !matches!(resolved, Ok(ref j) if j.state == JobState::Running) {
                    continue;
                }
            }
            let _ = self.inner.fields.enqueue(&self.weak(), tenant, job.job);
        }
    }

    /// Starts the schedule thread: every `interval`, [`Nodus::rotate_due_keys`] at `clock()`.
    pub(crate) fn start_schedule(
        &self,
        interval: Duration,
        clock: ScheduleClock,
    ) -> std::io::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, weak) = (stop.clone(), self.weak());
        let handle = std::thread::Builder::new()
            .name("nodus-key-schedule".into())
            .spawn(move || {
                let step = Duration::from_millis(10).min(interval);
                let mut waited = Duration::ZERO;
                while !s.load(Ordering::SeqCst) {
                    std::thread::sleep(step);
                    waited += step;
                    if waited < interval {
                        continue;
                    }
                    waited = Duration::ZERO;
                    let Some(n) = weak.get() else { return };
                    n.rotate_due_keys(clock());
                }
            })?;
        *self.inner.fields.scheduler.lock() = Some(Worker {
            tx: None,
            stop,
            handle,
        });
        Ok(())
    }
}
