//! Building a `Nodus`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nodus_fabric::state::{QuickStateStore, StateStore};
use nodus_fabric::{SqliteEventLog, TenantEventLog};
use nodus_policy::{LabelScheme, PolicySnapshot, PolicySources, PolicyStore};
use nodus_registry::commands::{
    Command, CommandId, CommandRegistry, CommandSpec, Context, JsonCallError, RegistryError,
};
use nodus_registry::components::{ComponentRegistry, ComponentSpec};
use nodus_registry::events::EventBus;
use nodus_registry::plugins::PluginRegistry;
use nodus_registry::rate::RateTable;
use nodus_security::audit::{
    AuditConfig, AuditLog, AuditSink, Durability, Overflow, WitnessConfig,
};
use nodus_security::vault::{MasterKey, SecretVault, SoftVault, TrustStore};
use parking_lot::Mutex;

use crate::builtins::{
    AuditVerify, PolicyExplain, PolicyReload, SystemAuditCheckpoint, SystemAuditVerify,
    SystemPolicyReload,
};
use crate::clock::CoarseClock;
use crate::error::BuildError;
use crate::nodus::{Inner, Nodus, PolicyOrigin, WeakNodus, next_instance_id};
use crate::signer::VaultSigner;

/// The vault file inside the data directory.
pub const VAULT_FILE: &str = "vault.db";
/// The audit log file inside the data directory.
pub const AUDIT_FILE: &str = "audit.db";
/// The fabric's event log inside the data directory.
pub const FABRIC_FILE: &str = nodus_fabric::SqliteEventLog::FILE_NAME;

enum Storage {
    Dir(PathBuf),
    Memory,
}

type Registration =
    Box<dyn FnOnce(&CommandRegistry, &LabelScheme) -> Result<CommandId, RegistryError> + Send>;

/// Builds a [`Nodus`]. Required: where data lives ([`data_dir`](Self::data_dir) or
/// [`in_memory`](Self::in_memory)), the policy ([`policy_dir`](Self::policy_dir) or
/// [`policy`](Self::policy)) and the master key (unless a custom vault is given). Everything else
/// has an embedded default: a SQLite-backed [`SoftVault`] and [`AuditLog`] in the data directory,
/// with the audit durability, overflow and checkpoint cadence read from the system policy
/// (`audit.*`).
///
/// [`build`](Self::build) validates everything — storage, master key, policy, command names — and
/// fails with a clear error before any thread starts.
#[derive(Default)]
pub struct NodusBuilder {
    storage: Option<Storage>,
    master_key: Option<MasterKey>,
    policy: Option<(PolicySources, PolicyOrigin)>,
    policy_error: Option<nodus_policy::PolicyErrors>,
    vault: Option<Arc<dyn SecretVault>>,
    audit: Option<Arc<dyn AuditSink>>,
    objects_cache: Option<Arc<dyn StateStore>>,
    audit_origin: Option<String>,
    audit_witness: WitnessConfig,
    registrations: Vec<Registration>,
    components: Vec<ComponentSpec>,
    trust: Option<TrustStore>,
    record_latency: bool,
    sync_dir: Option<PathBuf>,
    config_domains: Vec<nodus_fabric::config::ConfigDomain>,
    /// The rotation schedule's interval and clock (`field_commands.rs`).
    key_schedule: Option<(Duration, crate::field_commands::ScheduleClock)>,
    key_usage_limit: Option<u64>,
    live_sync: Option<Arc<dyn nodus_sync::DiffTransport>>,
    live_sync_options: crate::LiveSyncOptions,
}

impl std::fmt::Debug for NodusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodusBuilder")
            .field("commands", &self.registrations.len())
            .field("custom_vault", &self.vault.is_some())
            .field("custom_audit", &self.audit.is_some())
            .finish()
    }
}

impl NodusBuilder {
    /// Keep the vault (`vault.db`) and the audit log (`audit.db`) in `dir` (created if missing).
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.storage = Some(Storage::Dir(dir.as_ref().to_path_buf()));
        self
    }

    /// Keep everything in memory (same behaviour, nothing on disk): for tests and demos.
    pub fn in_memory(mut self) -> Self {
        self.storage = Some(Storage::Memory);
        self
    }

    /// The master key that seals the software vault's keys.
    pub fn master_key(mut self, key: MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// Load policy from a directory (`system.toml`, `tenants/<id>.toml`, `users/<tenant>/<actor>.toml`,
    /// optional `schema.toml`); `policy.reload` re-reads it.
    pub fn policy_dir(mut self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_path_buf();
        match PolicySources::from_dir(&dir) {
            Ok(sources) => {
                self.policy = Some((sources, PolicyOrigin::Dir(dir)));
                self.policy_error = None;
            }
            Err(e) => self.policy_error = Some(e),
        }
        self
    }

    /// Use policy documents given in memory.
    pub fn policy(mut self, sources: PolicySources) -> Self {
        self.policy = Some((sources, PolicyOrigin::Memory));
        self.policy_error = None;
        self
    }

    /// Replace the default software vault.
    pub fn with_vault(mut self, vault: impl SecretVault + 'static) -> Self {
        self.vault = Some(Arc::new(vault));
        self
    }

    /// Runs the key rotation schedule: a thread the instance owns (joined on shutdown) calls
    /// [`Nodus::rotate_due_keys`] every `interval` with the system time, rotating each tenant key
    /// older than the tenant's `security.keys.rotation_days` and re-enveloping its ciphertext.
    /// Off unless called.
    pub fn key_rotation_schedule(self, interval: Duration) -> Self {
        self.key_rotation_schedule_with_clock(interval, || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        })
    }

    /// As [`key_rotation_schedule`](Self::key_rotation_schedule), reading the time (unix ms)
    /// from `clock` — a test's clock, so that tests do not wait for days.
    pub fn key_rotation_schedule_with_clock(
        mut self,
        interval: Duration,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.key_schedule = Some((interval.max(Duration::from_millis(1)), Arc::new(clock)));
        self
    }

    /// The usage limit per key version `keys.list` warns against (default
    /// [`AEAD_USAGE_LIMIT`](crate::field_commands::AEAD_USAGE_LIMIT)); lower it to exercise the
    /// warning.
    pub fn key_usage_limit(mut self, limit: u64) -> Self {
        self.key_usage_limit = Some(limit);
        self
    }

    /// Replace the default SQLite audit log.
    pub fn with_audit(mut self, audit: impl AuditSink + 'static) -> Self {
        self.audit = Some(Arc::new(audit));
        self
    }

    /// Replace the object cache (default: a [`QuickStateStore`] named `objects`). Its capacity and
    /// TTL are set from the system policy (`state.cache.objects.*`) at build and on every reload.
    pub fn with_objects_cache(mut self, cache: impl StateStore + 'static) -> Self {
        self.objects_cache = Some(Arc::new(cache));
        self
    }

    /// The origin line of the audit log's signed checkpoints (default `nodus.local/audit`).
    pub fn audit_origin(mut self, origin: impl Into<String>) -> Self {
        self.audit_origin = Some(origin.into());
        self
    }

    /// Keep the audit log's witness — a copy of its latest signed checkpoint, outside `audit.db` —
    /// at `path` instead of `audit.db.witness` in the data directory. Choose a place that whoever
    /// can edit the data directory cannot (another disk, a host-managed directory): opening then
    /// refuses a log that was rolled back or lost signed checkpoints, even if both files were
    /// edited together. Ignored for in-memory instances. See `docs/audit.md` ("The witness").
    pub fn audit_witness(mut self, path: impl AsRef<Path>) -> Self {
        self.audit_witness.path = Some(path.as_ref().to_path_buf());
        self
    }

    /// Open an existing audit log whose witness file is missing, trusting the log as it is and
    /// starting a new witness (off by default: a missing witness is refused with
    /// `AuditError::WitnessMissing`). Use it once, knowingly: for a log written before witnesses
    /// existed, or after restoring a backup of `audit.db` alone.
    pub fn audit_accept_missing_witness(mut self, accept: bool) -> Self {
        self.audit_witness.accept_missing = accept;
        self
    }

    /// Measure handler latency (two clock reads per call) for the audit record and the
    /// `nodus_dispatch_seconds` histogram. Off by default: the hot path reads no clock.
    pub fn record_latency(mut self, on: bool) -> Self {
        self.record_latency = on;
        self
    }

    /// Live sync over `transport`: the instance starts a sync agent (one thread, joined on
    /// shutdown) that publishes this node's events of each synced tenant as signed batches and
    /// applies its trusted peers' (see [`crate::sync_agent`]). Needs a sync directory (a data
    /// directory, or [`sync_dir`](Self::sync_dir)): peers are trusted there.
    pub fn sync(mut self, transport: impl nodus_sync::DiffTransport + 'static) -> Self {
        self.live_sync = Some(Arc::new(transport));
        self
    }

    /// How the live sync agent paces itself and which tenants it syncs (default: every tenant of
    /// the policy at start).
    pub fn live_sync_options(mut self, options: crate::LiveSyncOptions) -> Self {
        self.live_sync_options = options;
        self
    }

    /// Keep air-gap sync files (inbox, outbox, staging, `sync.db`, the sealed age identity) in
    /// `dir` instead of `<data_dir>/sync`. An in-memory instance has sync only when this is set.
    /// See [`crate::sync_commands`].
    pub fn sync_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.sync_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Register a configuration domain: its keys' schemas and which keys allow per-user values
    /// (the `config.*` built-ins; see [`crate::config_commands`]). [`build`](Self::build) refuses
    /// a domain whose `<domain>.<key>` names a policy key (`BuildError::Config`, naming both).
    pub fn config_domain(mut self, domain: nodus_fabric::config::ConfigDomain) -> Self {
        self.config_domains.push(domain);
        self
    }

    /// Register a UI component (shown to a tenant when its `ui.allowed_components` lists it).
    pub fn component(mut self, spec: ComponentSpec) -> Self {
        self.components.push(spec);
        self
    }

    /// The trust store plugin manifests are verified against (default: the software vault's own,
    /// or an in-memory one with a custom vault).
    pub fn trust_store(mut self, trust: TrustStore) -> Self {
        self.trust = Some(trust);
        self
    }

    /// Register a typed command.
    pub fn command<C: Command>(mut self, command: C) -> Self {
        self.registrations
            .push(Box::new(move |r, scheme| r.register(command, scheme)));
        self
    }

    /// Register a JSON handler.
    pub fn json_command<F>(mut self, spec: CommandSpec, handler: F) -> Self
    where
        F: Fn(&Context, &str) -> Result<serde_json::Value, JsonCallError> + Send + Sync + 'static,
    {
        self.registrations.push(Box::new(move |r, scheme| {
            r.register_json(spec, handler, scheme)
        }));
        self
    }

    /// Validates everything and starts the instance.
    ///
    /// # Errors
    /// [`BuildError`] naming what is missing or wrong; nothing was started.
    pub fn build(self) -> Result<Nodus, BuildError> {
        let storage = self.storage.ok_or(BuildError::NoStorage)?;
        if self.vault.is_none() && self.master_key.is_none() {
            return Err(BuildError::MissingMasterKey);
        }
        if let Some(e) = self.policy_error {
            return Err(BuildError::Policy(e));
        }
        let (sources, origin) = self.policy.ok_or(BuildError::MissingPolicy)?;
        let policy = Arc::new(PolicyStore::new(sources)?);
        let system = policy.system_snapshot();
        let scheme = system.label_scheme().clone();

        let commands = Arc::new(CommandRegistry::new(policy.symbols().clone()));
        let weak = WeakNodus(Arc::new(OnceLock::new()));
        commands.register(PolicyReload(weak.clone()), &scheme)?;
        commands.register(PolicyExplain(weak.clone()), &scheme)?;
        commands.register(AuditVerify(weak.clone()), &scheme)?;
        commands.register(SystemPolicyReload(weak.clone()), &scheme)?;
        commands.register(SystemAuditVerify(weak.clone()), &scheme)?;
        commands.register(SystemAuditCheckpoint(weak.clone()), &scheme)?;
        {
            use crate::fabric_commands::*;
            commands.register(TypesDefine(weak.clone()), &scheme)?;
            commands.register(TypesGet(weak.clone()), &scheme)?;
            commands.register(TypesList(weak.clone()), &scheme)?;
            commands.register(ObjectsCreate(weak.clone()), &scheme)?;
            commands.register(ObjectsGet(weak.clone()), &scheme)?;
            commands.register(ObjectsUpdate(weak.clone()), &scheme)?;
            commands.register(ObjectsDelete(weak.clone()), &scheme)?;
            commands.register(ObjectsList(weak.clone()), &scheme)?;
            commands.register(ObjectsCount(weak.clone()), &scheme)?;
            commands.register(ObjectsHistory(weak.clone()), &scheme)?;
        }
        {
            use crate::config_commands::*;
            commands.register(ConfigSet(weak.clone()), &scheme)?;
            commands.register(ConfigGet(weak.clone()), &scheme)?;
            commands.register(ConfigList(weak.clone()), &scheme)?;
            commands.register(ConfigHistory(weak.clone()), &scheme)?;
        }
        {
            use crate::docs_commands::*;
            commands.register(DocsCreate(weak.clone()), &scheme)?;
            commands.register(DocsChange(weak.clone()), &scheme)?;
            commands.register(DocsGet(weak.clone()), &scheme)?;
            commands.register(DocsList(weak.clone()), &scheme)?;
            commands.register(DocsHistory(weak.clone()), &scheme)?;
        }
        {
            use crate::field_commands::*;
            commands.register(FieldsDecrypt(weak.clone()), &scheme)?;
            commands.register(FieldsRotateKeys(weak.clone()), &scheme)?;
            commands.register(KeysList(weak.clone()), &scheme)?;
            commands.register(KeysRotate(weak.clone()), &scheme)?;
            commands.register(KeysDestroyVersion(weak.clone()), &scheme)?;
            commands.register(KeysMinDecryptionVersion(weak.clone()), &scheme)?;
            commands.register(JobsStatus(weak.clone()), &scheme)?;
            commands.register(JobsCancel(weak.clone()), &scheme)?;
        }
        {
            use crate::sync_commands::*;
            commands.register(SyncKeys(weak.clone()), &scheme)?;
            commands.register(SyncExport(weak.clone()), &scheme)?;
            commands.register(SyncVerify(weak.clone()), &scheme)?;
            commands.register(SyncStage(weak.clone()), &scheme)?;
            commands.register(SyncActivate(weak.clone()), &scheme)?;
            commands.register(SyncRecheck(weak.clone()), &scheme)?;
            commands.register(SyncStatusCommand(weak.clone()), &scheme)?;
        }
        // Interned before the snapshots are compiled, so that its check takes the bitset path.
        policy
            .symbols()
            .permission(crate::field_commands::FORCE_DESTROY_PERMISSION);
        for register in self.registrations {
            register(&commands, &scheme)?;
        }
        // The commands interned their permissions and rate classes after the snapshots were
        // compiled: rebuild the decision tables so every guard check takes the bitset fast path.
        policy.recompile();

        let config = audit_config(&system, self.audit_origin)?;
        let components = ComponentRegistry::new();
        for spec in self.components {
            components
                .register(spec)
                .map_err(|e| BuildError::Component(e.to_string()))?;
        }
        let data_dir = match &storage {
            Storage::Dir(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| BuildError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
                Some(dir.clone())
            }
            Storage::Memory => None,
        };
        let (vault, default_trust): (Arc<dyn SecretVault>, Option<TrustStore>) =
            match (self.vault, self.master_key) {
                (Some(v), _) => (v, None),
                (None, Some(master)) => {
                    let soft = match &data_dir {
                        Some(dir) => SoftVault::open(&dir.join(VAULT_FILE), master)?,
                        None => SoftVault::in_memory(master)?,
                    };
                    let trust = soft.trust_store().clone();
                    (Arc::new(soft), Some(trust))
                }
                (None, None) => return Err(BuildError::MissingMasterKey),
            };
        let trust = match (self.trust, default_trust) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => TrustStore::in_memory()?,
        };
        // The fabric's event log follows the instance's durability setting (`audit.durability`).
        let fabric_durability = match config.durability {
            Durability::Normal => nodus_fabric::Durability::Normal,
            _ => nodus_fabric::Durability::Full,
        };
        let (node_key, node_public) =
            crate::node::system_signing_key(&vault, crate::NODE_KEY_PURPOSE)?;
        let node_id = nodus_fabric::NodeId::from_bytes(*node_key.as_bytes());
        let event_log = match &data_dir {
            Some(dir) => SqliteEventLog::open(&dir.join(FABRIC_FILE), node_id, fabric_durability)?,
            None => SqliteEventLog::in_memory(node_id)?,
        };
        let event_log = Arc::new(event_log);
        let fabric = nodus_fabric::objects::Fabric::new(event_log.clone())
            .map_err(|e| BuildError::Fabric(e.to_string()))?;
        // CRDT documents share the log: the fabric's ingest (bundles, live sync) and rebuild
        // keep them current through their projector.
        let docs = Arc::new(
            nodus_sync::crdt::AutomergeStore::new(event_log.clone())
                .map_err(|e| BuildError::Fabric(e.to_string()))?,
        );
        fabric.add_projector(docs.projector());
        let config_store = Arc::new(
            nodus_fabric::config::ConfigStore::new(event_log.clone())
                .map_err(|e| BuildError::Fabric(e.to_string()))?,
        );
        for domain in self.config_domains {
            for key in domain.keys() {
                crate::config_commands::check_shadow(&system, domain.name(), key)
                    .map_err(|e| BuildError::Config(e.to_string()))?;
            }
            config_store.register(domain);
        }
        fabric.add_projector(config_store.projector());
        let node = crate::NodeIdentity {
            node_id,
            incarnation: event_log.node().incarnation,
            public_key: node_public,
        };
        let sync_dir = self.sync_dir.or_else(|| {
            data_dir
                .as_ref()
                .map(|d| d.join(crate::sync_commands::SYNC_DIR))
        });
        let sync = match &sync_dir {
            Some(dir) => Some(Arc::new(
                crate::sync_commands::SyncState::open(dir, vault.clone(), &node).map_err(|e| {
                    BuildError::DataDir {
                        path: dir.display().to_string(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?,
            )),
            None => None,
        };
        let audit: Arc<dyn AuditSink> = match self.audit {
            Some(a) => a,
            None => {
                let signer = Arc::new(VaultSigner::new(vault.clone(), &config.origin)?);
                match &data_dir {
                    Some(dir) => Arc::new(AuditLog::open_with_witness(
                        &dir.join(AUDIT_FILE),
                        signer,
                        config,
                        self.audit_witness,
                    )?),
                    None => Arc::new(AuditLog::in_memory(signer, config)?),
                }
            }
        };
        let clock = match CoarseClock::start() {
            Ok(c) => c,
            Err(e) => {
                let _ = audit.shutdown();
                return Err(BuildError::DataDir {
                    path: "<clock thread>".into(),
                    source: e,
                });
            }
        };
        let cache_config = crate::nodus::objects_cache_config(&system)?;
        let objects_cache: Arc<dyn StateStore> = match self.objects_cache {
            Some(c) => {
                c.configure(cache_config);
                c
            }
            None => Arc::new(QuickStateStore::new("objects", cache_config)),
        };
        let default_class = policy.symbols().rate_class("default");
        // Every key-scope refusal a host meets through `nodus.vault()` leaves an audit record.
        let vault: Arc<dyn SecretVault> = Arc::new(crate::AuditedVault::new(vault, audit.clone()));
        // Encrypted fields: sealed with the instance's vault; writing one needs a role in the
        // tenant's `security.fields.allow_encrypted_write`.
        {
            let symbols = policy.symbols().clone();
            fabric.enable_encrypted_fields(nodus_fabric::objects::FieldSealing::new(
                vault.clone(),
                move |snap, subject| {
                    crate::field_commands::has_listed_role(
                        &symbols,
                        snap,
                        subject,
                        "security.fields.allow_encrypted_write",
                    )
                },
            ));
        }
        let inner = Arc::new(Inner {
            id: next_instance_id(),
            policy,
            policy_origin: origin,
            commands,
            issuer: nodus_registry::commands::ContextIssuer::new(),
            watcher: Mutex::new(None),
            sync_agent: Mutex::new(None),
            vault,
            audit,
            events: EventBus::new(),
            plugins: PluginRegistry::new(),
            components,
            trust,
            rates: RateTable::new(),
            clock,
            default_class,
            closed: AtomicBool::new(false),
            record_latency: self.record_latency,
            data_dir,
            shutdown_lock: Mutex::new(false),
            reload_lock: Mutex::new(()),
            fabric,
            docs,
            config: config_store,
            event_log,
            objects_cache,
            node,
            sync,
            fields: crate::field_commands::FieldState::new(
                self.key_usage_limit
                    .unwrap_or(crate::field_commands::AEAD_USAGE_LIMIT),
            ),
        });
        let _ = weak.0.set(Arc::downgrade(&inner));
        let nodus = Nodus { inner };
        // Initial visibility of components per tenant (audited like any later change).
        let now = nodus.now_ms();
        nodus.revalidate_extensions(now)?;
        // Re-envelope jobs a previous process left running go on from their last batch.
        nodus.resume_jobs();
        if let Some((interval, clock)) = self.key_schedule {
            nodus
                .start_schedule(interval, clock)
                .map_err(|source| BuildError::DataDir {
                    path: "<key schedule thread>".into(),
                    source,
                })?;
        }
        if let Some(transport) = self.live_sync {
            if nodus.inner.sync.is_none() {
                return Err(setting_err(
                    "sync",
                    "live sync needs a sync directory (a data directory or `sync_dir`)",
                ));
            }
            let agent = crate::sync_agent::start(&nodus, transport, self.live_sync_options)
                .map_err(|e| BuildError::DataDir {
                    path: "<sync agent thread>".into(),
                    source: e,
                })?;
            *nodus.inner.sync_agent.lock() = Some(agent);
        }
        Ok(nodus)
    }
}

fn setting_err(key: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Setting {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

fn audit_config(
    system: &PolicySnapshot,
    origin: Option<String>,
) -> Result<AuditConfig, BuildError> {
    let mut config = AuditConfig::default();
    if let Some(o) = origin {
        config.origin = o;
    }
    config.durability = match system
        .get_str("audit.durability")
        .map_err(|e| setting_err("audit.durability", e))?
    {
        "normal" => Durability::Normal,
        _ => Durability::Full,
    };
    config.overflow = match system
        .get_str("audit.overflow")
        .map_err(|e| setting_err("audit.overflow", e))?
    {
        "drop_with_marker" => Overflow::DropWithMarker,
        _ => Overflow::Block,
    };
    let cap = system
        .get_int("audit.queue_capacity")
        .map_err(|e| setting_err("audit.queue_capacity", e))?;
    config.queue_capacity = usize::try_from(cap)
        .map_err(|e| setting_err("audit.queue_capacity", e))?
        .max(1);
    let every = system
        .get_int("audit.checkpoint_every")
        .map_err(|e| setting_err("audit.checkpoint_every", e))?;
    config.checkpoint_every = u64::try_from(every)
        .map_err(|e| setting_err("audit.checkpoint_every", e))?
        .max(1);
    config.checkpoint_interval = system
        .get_duration("audit.checkpoint_interval")
        .map_err(|e| setting_err("audit.checkpoint_interval", e))?
        .max(Duration::from_millis(1));
    Ok(config)
}
