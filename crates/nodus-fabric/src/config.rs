//! Configuration (DESIGN §6): per-tenant — and, where a key allows, per-user — values in named
//! **domains** (`ui`, `plugins`, `data`, or any the host registers), each value validated against
//! the schema the host registered for its domain, labelled, event-sourced (`config.set` events)
//! and projected into the log's database.
//!
//! Configuration holds preferences and layouts; **policy governs**. A configuration key
//! `<domain>.<key>` that names a policy key is refused ([`ConfigError::ShadowsPolicy`]); the
//! front door checks that against the live policy schema.
//!
//! **Labels** as for objects: one `(scope, domain, key)` may hold values at several labels; a read
//! sees the highest the subject dominates, and a value above the subject is indistinguishable from
//! an unset one ([`ConfigError::NotSet`]). **Merge** across nodes: per `(scope, domain, key,
//! label)` the value of the greatest `(lamport, node id)` wins, whatever the order events arrive
//! in.
//!
//! ```
//! use std::sync::Arc;
//! use nodus_fabric::config::{ConfigDomain, ConfigStore, Scope};
//! use nodus_fabric::{NodeId, SqliteEventLog};
//! use nodus_policy::{ActorId, PolicySources, PolicyStore, RoleSet, Subject, TenantId};
//! use serde_json::json;
//!
//! let tenant = TenantId::new("acme").unwrap();
//! let policy = PolicyStore::new(
//!     PolicySources::new().with_tenant(tenant.clone(), "tenants/acme.toml", ""),
//! ).unwrap();
//! let snap = policy.snapshot(&tenant).unwrap();
//! let scheme = snap.label_scheme();
//! let alice = Subject::new(
//!     tenant.clone(), ActorId::new("alice").unwrap(), RoleSet::from_ids([]),
//!     scheme.parse("UNCLASSIFIED").unwrap(), scheme,
//! );
//! let log = Arc::new(SqliteEventLog::in_memory(NodeId::from_bytes([1; 16])).unwrap());
//! let config = ConfigStore::new(log).unwrap();
//! config.register(ConfigDomain::new(
//!     "ui",
//!     json!({"type": "object", "properties": {"theme": {"enum": ["light", "dark"]}}}),
//!     ["theme"],
//! ).unwrap());
//! config.set(&tenant, &snap, &alice, Scope::User, "ui", "theme", json!("dark"), None).unwrap();
//! let v = config.get(&tenant, &snap, &alice, "ui", "theme").unwrap();
//! assert_eq!((v.value, v.scope), (json!("dark"), Scope::User));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nodus_policy::{ActorId, PolicySnapshot, Subject, TenantId};
use parking_lot::RwLock;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::objects::{Projector, choice_key};
use crate::{
    EntityId, Event, EventKind, EventLabel, EventLogError, NewEvent, Payload, PayloadError,
    SqliteEventLog,
};

/// Kind of the event that sets a configuration value (payload: [`SetPayload`]).
pub const CONFIG_SET: &str = "config.set";
/// The projection tables (rows keyed by `tenant` first).
pub const CONFIG_TABLES: &[&str] = &["fabric_config", "fabric_config_history"];
/// Most bytes a domain or key name may have (`A-Z a-z 0-9 _ -`, starting with a letter).
pub const MAX_NAME_LEN: usize = 64;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fabric_config (
    tenant  TEXT NOT NULL,
    scope   TEXT NOT NULL,
    domain  TEXT NOT NULL,
    key     TEXT NOT NULL,
    label   TEXT NOT NULL,
    value   TEXT NOT NULL,
    lamport INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (tenant, scope, domain, key, label)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fabric_config_history (
    tenant      TEXT NOT NULL,
    scope       TEXT NOT NULL,
    domain      TEXT NOT NULL,
    key         TEXT NOT NULL,
    label       TEXT NOT NULL,
    value       TEXT NOT NULL,
    lamport     INTEGER NOT NULL,
    node_id     TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    actor       TEXT,
    PRIMARY KEY (tenant, scope, domain, key, node_id, incarnation, seq)
) WITHOUT ROWID;
";

/// Whose value: the tenant's, or the calling user's own (only for keys that allow it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The tenant's value, for every user.
    Tenant,
    /// The calling user's own value, which takes precedence over the tenant's for that user.
    User,
}

/// Why a configuration operation failed. Values never appear in these messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No schema is registered for the domain.
    #[error("no configuration domain `{domain}` is registered")]
    UnknownDomain {
        /// The domain.
        domain: String,
    },
    /// The domain's schema does not declare the key.
    #[error("configuration domain `{domain}` has no key `{key}`")]
    UnknownKey {
        /// The domain.
        domain: String,
        /// The key.
        key: String,
    },
    /// The value does not satisfy the key's schema.
    #[error("config `{domain}.{key}`: value at `{path}` fails `{rule}`")]
    Invalid {
        /// The domain.
        domain: String,
        /// The key.
        key: String,
        /// JSON pointer into the value.
        path: String,
        /// The schema keyword that failed.
        rule: String,
    },
    /// A per-user value for a key that allows only the tenant's.
    #[error("config `{domain}.{key}` has no per-user values")]
    NoUserScope {
        /// The domain.
        domain: String,
        /// The key.
        key: String,
    },
    /// The configuration key names a policy key: policy governs, configuration may not override.
    #[error(
        "config key `{config_key}` would override policy key `{policy_key}`: policy keys are set in policy files"
    )]
    ShadowsPolicy {
        /// The configuration key, `<domain>.<key>`.
        config_key: String,
        /// The policy key it names.
        policy_key: String,
    },
    /// No value the subject may see (unset, or above its clearance: the same answer).
    #[error("config `{domain}.{key}` is not set")]
    NotSet {
        /// The domain.
        domain: String,
        /// The key.
        key: String,
    },
    /// The subject may not write at that label.
    #[error("the subject may not write config at label `{label}`")]
    WriteDenied {
        /// The label.
        label: String,
    },
    /// The label does not parse.
    #[error("invalid label: {reason}")]
    BadLabel {
        /// Why.
        reason: String,
    },
    /// The domain's schema is not an object schema with `properties`, or does not compile.
    #[error("configuration domain `{domain}`: {reason}")]
    BadSchema {
        /// The domain.
        domain: String,
        /// Why.
        reason: String,
    },
    /// A domain or key name is not `A-Z a-z 0-9 _ -` (1–64 bytes, starting with a letter).
    #[error(
        "invalid configuration name `{name}`: 1 to 64 of `A-Z a-z 0-9 _ -`, starting with a letter"
    )]
    BadName {
        /// The name (as given, cut to 64 characters).
        name: String,
    },
    /// The expected version is not the stored one.
    #[error("config `{domain}.{key}` is at version {actual}, not the expected {expected}")]
    Conflict {
        /// The domain.
        domain: String,
        /// The key.
        key: String,
        /// What the caller expected.
        expected: u64,
        /// What is stored (0: unset at that label).
        actual: u64,
    },
    /// The subject belongs to another tenant.
    #[error("the subject belongs to another tenant")]
    TenantMismatch,
    /// The event log failed; nothing was written.
    #[error(transparent)]
    Log(#[from] EventLogError),
    /// The event payload could not be built (above the payload limit, too deep).
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

impl ConfigError {
    /// The stable code of this error (its variant name; `Log` is `StorageError`, `Payload`
    /// `BadPayload`).
    pub const fn code(&self) -> &'static str {
        match self {
            ConfigError::UnknownDomain { .. } => "UnknownDomain",
            ConfigError::UnknownKey { .. } => "UnknownKey",
            ConfigError::Invalid { .. } => "InvalidValue",
            ConfigError::NoUserScope { .. } => "NoUserScope",
            ConfigError::ShadowsPolicy { .. } => "ShadowsPolicy",
            ConfigError::NotSet { .. } => "NotSet",
            ConfigError::WriteDenied { .. } => "WriteDenied",
            ConfigError::BadLabel { .. } => "BadLabel",
            ConfigError::BadSchema { .. } => "BadSchema",
            ConfigError::BadName { .. } => "BadName",
            ConfigError::Conflict { .. } => "Conflict",
            ConfigError::TenantMismatch => "TenantMismatch",
            ConfigError::Log(_) => "StorageError",
            ConfigError::Payload(_) => "BadPayload",
        }
    }
}

impl From<rusqlite::Error> for ConfigError {
    fn from(e: rusqlite::Error) -> Self {
        ConfigError::Log(EventLogError::Storage(e.to_string()))
    }
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName {
            name: name.chars().take(64).collect(),
        })
    }
}

/// A configuration domain: its name, one JSON Schema per key, and the keys that allow per-user
/// values.
#[derive(Clone)]
pub struct ConfigDomain {
    name: String,
    schema: Value,
    keys: BTreeMap<String, Arc<jsonschema::Validator>>,
    user_keys: BTreeSet<String>,
}

impl std::fmt::Debug for ConfigDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigDomain")
            .field("name", &self.name)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("user_keys", &self.user_keys)
            .finish()
    }
}

impl ConfigDomain {
    /// A domain named `name` whose keys are the `properties` of the object schema `schema` (each
    /// key's subschema validates its value on its own: it must be self-contained, no `$ref` to
    /// the rest), and whose `user_keys` allow per-user values. Schemas are compiled with format
    /// validation on and no network or file resolution.
    ///
    /// # Errors
    /// [`ConfigError::BadName`] for a bad domain or key name, [`ConfigError::BadSchema`] when the
    /// schema is not an object schema with `properties`, a subschema does not compile, or a user
    /// key is not a property.
    pub fn new<I, S>(name: &str, schema: Value, user_keys: I) -> Result<ConfigDomain>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        check_name(name)?;
        let bad = |reason: String| ConfigError::BadSchema {
            domain: name.to_owned(),
            reason,
        };
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(
                || bad("the schema needs an object of `properties` (one per key)".into()),
            )?;
        let mut keys = BTreeMap::new();
        for (key, sub) in props {
            check_name(key)?;
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(sub)
                .map_err(|e| {
                    bad(format!(
                        "key `{key}`: schema `{}` fails `{}`",
                        e.schema_path(),
                        e.kind().keyword()
                    ))
                })?;
            keys.insert(key.clone(), Arc::new(validator));
        }
        let user_keys: BTreeSet<String> = user_keys.into_iter().map(Into::into).collect();
        if let Some(k) = user_keys.iter().find(|k| !keys.contains_key(*k)) {
            return Err(bad(format!("user key `{k}` is not a property")));
        }
        Ok(ConfigDomain {
            name: name.to_owned(),
            schema,
            keys,
            user_keys,
        })
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema it was registered with.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Its keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether `key` allows per-user values.
    pub fn allows_user(&self, key: &str) -> bool {
        self.user_keys.contains(key)
    }

    fn validate(&self, key: &str, value: &Value) -> Result<()> {
        let v = self.keys.get(key).ok_or_else(|| ConfigError::UnknownKey {
            domain: self.name.clone(),
            key: key.to_owned(),
        })?;
        if let Some(e) = v.iter_errors(value).next() {
            return Err(ConfigError::Invalid {
                domain: self.name.clone(),
                key: key.to_owned(),
                path: e.instance_path().to_string(),
                rule: e.kind().keyword().to_owned(),
            });
        }
        Ok(())
    }
}

/// The payload of a `config.set` event (canonical JSON):
/// `{"domain", "key", "user": <actor id or null>, "value"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPayload {
    /// The domain.
    pub domain: String,
    /// The key.
    pub key: String,
    /// The user whose own value this is; `None` for the tenant's value.
    pub user: Option<String>,
    /// The value.
    pub value: Value,
}

/// A value as a subject sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigValue {
    /// The domain.
    pub domain: String,
    /// The key.
    pub key: String,
    /// Whose value it is.
    pub scope: Scope,
    /// The label of this value, canonical text.
    pub label: String,
    /// The value.
    pub value: Value,
    /// How many sets this value at this label has seen (across nodes).
    pub version: u64,
}

/// One set of a value, as `history` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigHistoryEntry {
    /// Whose value.
    pub scope: Scope,
    /// The label.
    pub label: String,
    /// The value set.
    pub value: Value,
    /// The node that wrote it.
    pub node_id: String,
    /// Its seq in that node's chain.
    pub seq: u64,
    /// Its Lamport time (history is ordered by `(lamport, node, incarnation, seq)`).
    pub lamport: u64,
}

/// The configuration store over a [`SqliteEventLog`]: registered domains, `set` as events,
/// `get` / `list` / `history` from the projection. Its [`ConfigStore::projector`] keeps the
/// projection current on a [`Fabric`](crate::Fabric)'s ingest and rebuild.
pub struct ConfigStore {
    log: Arc<SqliteEventLog>,
    domains: RwLock<BTreeMap<String, Arc<ConfigDomain>>>,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore")
            .field("domains", &self.domains.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A stored row: scope, user, label, value, version.
struct Row {
    user: String,
    label: String,
    value: String,
    version: u64,
}

fn scope_text(user: Option<&ActorId>) -> String {
    match user {
        Some(a) => format!("user:{}", a.as_str()),
        None => "tenant".to_owned(),
    }
}

impl ConfigStore {
    /// A store over `log`, creating its tables in the log's database if needed.
    ///
    /// # Errors
    /// [`ConfigError::Log`].
    pub fn new(log: Arc<SqliteEventLog>) -> Result<ConfigStore> {
        log.read_projection(|c| c.execute_batch(SCHEMA))?;
        Ok(ConfigStore {
            log,
            domains: RwLock::new(BTreeMap::new()),
        })
    }

    /// Registers (or replaces) a domain. Values already stored are kept; new sets are validated
    /// against the new schema.
    pub fn register(&self, domain: ConfigDomain) {
        self.domains
            .write()
            .insert(domain.name.clone(), Arc::new(domain));
    }

    /// The registered domains, by name.
    pub fn domains(&self) -> Vec<Arc<ConfigDomain>> {
        self.domains.read().values().cloned().collect()
    }

    fn domain(&self, name: &str) -> Result<Arc<ConfigDomain>> {
        self.domains
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownDomain {
                domain: name.chars().take(64).collect(),
            })
    }

    /// The domain of `domain.key` for a read by `subject` of `tenant`.
    fn readable_key(
        &self,
        tenant: &TenantId,
        subject: &Subject,
        domain: &str,
        key: &str,
    ) -> Result<Arc<ConfigDomain>> {
        if subject.tenant() != tenant {
            return Err(ConfigError::TenantMismatch);
        }
        let def = self.domain(domain)?;
        if !def.keys.contains_key(key) {
            return Err(ConfigError::UnknownKey {
                domain: domain.to_owned(),
                key: key.chars().take(64).collect(),
            });
        }
        Ok(def)
    }

    /// The projector to add to a [`Fabric`](crate::Fabric) over this store's log.
    pub fn projector(&self) -> Arc<dyn Projector> {
        Arc::new(ConfigProjector { _private: () })
    }

    /// Sets `domain.key` at `label` (default: the subject's clearance) for the tenant, or for the
    /// subject itself ([`Scope::User`], where the key allows it), appending one `config.set`
    /// event. With `expected_version`, the stored version at that label must match (0: unset).
    ///
    /// # Errors
    /// [`ConfigError::UnknownDomain`], [`ConfigError::UnknownKey`], [`ConfigError::Invalid`],
    /// [`ConfigError::NoUserScope`], [`ConfigError::BadLabel`], [`ConfigError::WriteDenied`],
    /// [`ConfigError::Conflict`], [`ConfigError::TenantMismatch`], [`ConfigError::Log`].
    #[allow(clippy::too_many_arguments)]
    pub fn set(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        scope: Scope,
        domain: &str,
        key: &str,
        value: Value,
        label: Option<&str>,
    ) -> Result<ConfigValue> {
        self.set_checked(
            tenant, snap, subject, scope, domain, key, value, label, None,
        )
    }

    /// [`ConfigStore::set`] with an expected version.
    ///
    /// # Errors
    /// As [`ConfigStore::set`].
    #[allow(clippy::too_many_arguments)]
    pub fn set_checked(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        scope: Scope,
        domain: &str,
        key: &str,
        value: Value,
        label: Option<&str>,
        expected_version: Option<u64>,
    ) -> Result<ConfigValue> {
        if subject.tenant() != tenant {
            return Err(ConfigError::TenantMismatch);
        }
        check_name(domain)?;
        check_name(key)?;
        let def = self.domain(domain)?;
        def.validate(key, &value)?;
        let user = match scope {
            Scope::Tenant => None,
            Scope::User if def.allows_user(key) => Some(subject.actor()),
            Scope::User => {
                return Err(ConfigError::NoUserScope {
                    domain: domain.to_owned(),
                    key: key.to_owned(),
                });
            }
        };
        let scheme = snap.label_scheme();
        let parsed = match label {
            Some(t) => scheme.parse(t).map_err(|e| ConfigError::BadLabel {
                reason: e.to_string(),
            })?,
            None => subject.clearance(),
        };
        let label_text = scheme.format(parsed);
        if !(snap.can_read(subject, parsed) && snap.can_write(subject, parsed)) {
            return Err(ConfigError::WriteDenied { label: label_text });
        }
        let payload = SetPayload {
            domain: domain.to_owned(),
            key: key.to_owned(),
            user: user.map(|a| a.as_str().to_owned()),
            value: value.clone(),
        };
        let body = serde_json::to_value(&payload).map_err(|e| {
            ConfigError::Log(EventLogError::Storage(format!("config payload: {e}")))
        })?;
        let event = NewEvent::new(
            EventKind::new(CONFIG_SET).map_err(field)?,
            EntityId::new(format!("config/{domain}/{key}")).map_err(field)?,
            EventLabel::new(&label_text).map_err(|e| ConfigError::BadLabel {
                reason: e.to_string(),
            })?,
            Payload::from_value(&body)?,
        );
        let scope_key = scope_text(user);
        let mut version = 0;
        self.log.append_with(tenant, vec![event], |tx, appended| {
            let actual = stored_version(tx, tenant, &scope_key, domain, key, &label_text)?;
            if let Some(expected) = expected_version
                && expected != actual
            {
                return Err(ConfigError::Conflict {
                    domain: domain.to_owned(),
                    key: key.to_owned(),
                    expected,
                    actual,
                });
            }
            for e in appended {
                apply(tx, tenant, e)?;
            }
            version = stored_version(tx, tenant, &scope_key, domain, key, &label_text)?;
            Ok(())
        })?;
        Ok(ConfigValue {
            domain: domain.to_owned(),
            key: key.to_owned(),
            scope,
            label: label_text,
            value,
            version,
        })
    }

    /// The value of `domain.key` the subject sees: its own ([`Scope::User`]) when the key allows
    /// per-user values and it has one it may read, else the tenant's — each the highest label the
    /// subject dominates.
    ///
    /// # Errors
    /// [`ConfigError::UnknownDomain`], [`ConfigError::UnknownKey`], [`ConfigError::NotSet`].
    pub fn get(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        domain: &str,
        key: &str,
    ) -> Result<ConfigValue> {
        let def = self.readable_key(tenant, subject, domain, key)?;
        let rows = self
            .log
            .read_projection(|c| load_rows(c, tenant, Some(domain), Some(key)))?;
        effective(
            snap,
            subject,
            &def,
            key,
            rows.get(&(domain.to_owned(), key.to_owned())),
        )
        .ok_or_else(|| ConfigError::NotSet {
            domain: domain.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Every value the subject sees (as [`ConfigStore::get`] answers), of one domain or of all
    /// registered ones, by domain then key.
    ///
    /// # Errors
    /// [`ConfigError::UnknownDomain`], [`ConfigError::Log`].
    pub fn list(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        domain: Option<&str>,
    ) -> Result<Vec<ConfigValue>> {
        if subject.tenant() != tenant {
            return Err(ConfigError::TenantMismatch);
        }
        if let Some(d) = domain {
            self.domain(d)?;
        }
        let rows = self
            .log
            .read_projection(|c| load_rows(c, tenant, domain, None))?;
        let domains = self.domains.read().clone();
        let mut out = Vec::new();
        for ((d, k), rows) in &rows {
            let Some(def) = domains.get(d) else { continue };
            if !def.keys.contains_key(k) {
                continue;
            }
            if let Some(v) = effective(snap, subject, def, k, Some(rows)) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The sets of `domain.key` the subject may see — the tenant's and its own, at labels it
    /// dominates — in `(lamport, node)` order.
    ///
    /// # Errors
    /// [`ConfigError::UnknownDomain`], [`ConfigError::UnknownKey`], [`ConfigError::Log`].
    pub fn history(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        domain: &str,
        key: &str,
    ) -> Result<Vec<ConfigHistoryEntry>> {
        self.readable_key(tenant, subject, domain, key)?;
        let mine = scope_text(Some(subject.actor()));
        let scheme = snap.label_scheme();
        self.log.read_projection(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT scope, label, value, node_id, seq, lamport FROM fabric_config_history
                 WHERE tenant = ?1 AND domain = ?2 AND key = ?3 AND (scope = 'tenant' OR scope = ?4)
                 ORDER BY lamport, node_id, incarnation, seq",
            )?;
            let rows = stmt.query_map([tenant.as_str(), domain, key, mine.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (scope, label, value, node_id, seq, lamport) = row?;
                let visible = scheme
                    .parse(&label)
                    .is_ok_and(|l| snap.can_read(subject, l));
                if !visible {
                    continue;
                }
                out.push(ConfigHistoryEntry {
                    scope: if scope == "tenant" {
                        Scope::Tenant
                    } else {
                        Scope::User
                    },
                    label,
                    value: serde_json::from_str(&value).unwrap_or(Value::Null),
                    node_id,
                    seq: u64::try_from(seq).unwrap_or(0),
                    lamport: u64::try_from(lamport).unwrap_or(0),
                });
            }
            Ok(out)
        })
    }
}

fn field(e: crate::FieldError) -> ConfigError {
    ConfigError::Log(EventLogError::Storage(e.to_string()))
}

fn stored_version(
    c: &Connection,
    tenant: &TenantId,
    scope: &str,
    domain: &str,
    key: &str,
    label: &str,
) -> Result<u64> {
    let v: Option<i64> = c
        .prepare_cached(
            "SELECT version FROM fabric_config
             WHERE tenant = ?1 AND scope = ?2 AND domain = ?3 AND key = ?4 AND label = ?5",
        )?
        .query_row([tenant.as_str(), scope, domain, key, label], |r| r.get(0))
        .optional()?;
    Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
}

type Rows = BTreeMap<(String, String), Vec<Row>>;

fn load_rows(
    c: &Connection,
    tenant: &TenantId,
    domain: Option<&str>,
    key: Option<&str>,
) -> Result<Rows> {
    let mut stmt = c.prepare_cached(
        "SELECT domain, key, scope, label, value, version FROM fabric_config
         WHERE tenant = ?1 AND (?2 IS NULL OR domain = ?2) AND (?3 IS NULL OR key = ?3)
         ORDER BY domain, key",
    )?;
    let rows = stmt.query_map(rusqlite::params![tenant.as_str(), domain, key], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            Row {
                user: r.get(2)?,
                label: r.get(3)?,
                value: r.get(4)?,
                version: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
            },
        ))
    })?;
    let mut out: Rows = BTreeMap::new();
    for row in rows {
        let (d, k, row) = row?;
        out.entry((d, k)).or_default().push(row);
    }
    Ok(out)
}

/// The value the subject sees among `rows` of one key: its own (when the key allows), else the
/// tenant's; each the highest visible label by [`choice_key`].
fn effective(
    snap: &PolicySnapshot,
    subject: &Subject,
    def: &ConfigDomain,
    key: &str,
    rows: Option<&Vec<Row>>,
) -> Option<ConfigValue> {
    let rows = rows?;
    let scheme = snap.label_scheme();
    let mine = scope_text(Some(subject.actor()));
    let pick = |scope: &str| {
        rows.iter()
            .filter(|r| r.user == scope)
            .filter_map(|r| {
                let l = scheme.parse(&r.label).ok()?;
                snap.can_read(subject, l)
                    .then(|| (choice_key(scheme, l), r))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, r)| r)
    };
    let (scope, row) = match def.allows_user(key).then(|| pick(&mine)).flatten() {
        Some(r) => (Scope::User, r),
        None => (Scope::Tenant, pick("tenant")?),
    };
    Some(ConfigValue {
        domain: def.name.clone(),
        key: key.to_owned(),
        scope,
        label: row.label.clone(),
        value: serde_json::from_str(&row.value).ok()?,
        version: row.version,
    })
}

/// Applies one event to the projection: `config.set` events only (others untouched). The value
/// of the greatest `(lamport, node id)` wins per `(scope, domain, key, label)`; the version counts
/// the sets applied. `Ok(false)` for a `config.set` event whose payload is not well formed.
fn apply(c: &Connection, tenant: &TenantId, e: &Event) -> Result<bool> {
    if e.kind.as_str() != CONFIG_SET {
        return Ok(true);
    }
    if &e.tenant != tenant {
        return Ok(false);
    }
    let Some(p) = e
        .payload
        .to_value()
        .ok()
        .and_then(|v| serde_json::from_value::<SetPayload>(v).ok())
    else {
        return Ok(false);
    };
    if check_name(&p.domain).is_err() || check_name(&p.key).is_err() {
        return Ok(false);
    }
    let user = match p.user.as_deref().map(ActorId::new) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return Ok(false),
    };
    let scope = scope_text(user.as_ref());
    let value = p.value.to_string();
    let node = e.node_id.to_string();
    let lamport = i64::try_from(e.lamport).unwrap_or(i64::MAX);
    let label = e.label.as_str();
    let current: Option<(i64, String)> = c
        .prepare_cached(
            "SELECT lamport, node_id FROM fabric_config
             WHERE tenant = ?1 AND scope = ?2 AND domain = ?3 AND key = ?4 AND label = ?5",
        )?
        .query_row([tenant.as_str(), &scope, &p.domain, &p.key, label], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match current {
        None => {
            c.prepare_cached(
                "INSERT INTO fabric_config (tenant, scope, domain, key, label, value, lamport, node_id, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)",
            )?
            .execute(rusqlite::params![
                tenant.as_str(),
                scope,
                p.domain,
                p.key,
                label,
                value,
                lamport,
                node
            ])?;
        }
        Some(stamp) => {
            let wins = (lamport, node.as_str()) > (stamp.0, stamp.1.as_str());
            c.prepare_cached(
                "UPDATE fabric_config SET version = version + 1,
                     value = CASE WHEN ?6 THEN ?7 ELSE value END,
                     lamport = CASE WHEN ?6 THEN ?8 ELSE lamport END,
                     node_id = CASE WHEN ?6 THEN ?9 ELSE node_id END
                 WHERE tenant = ?1 AND scope = ?2 AND domain = ?3 AND key = ?4 AND label = ?5",
            )?
            .execute(rusqlite::params![
                tenant.as_str(),
                scope,
                p.domain,
                p.key,
                label,
                wins,
                value,
                lamport,
                node
            ])?;
        }
    }
    c.prepare_cached(
        "INSERT OR IGNORE INTO fabric_config_history
             (tenant, scope, domain, key, label, value, lamport, node_id, incarnation, seq, actor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(rusqlite::params![
        tenant.as_str(),
        scope,
        p.domain,
        p.key,
        label,
        value,
        lamport,
        node,
        e.incarnation.to_string(),
        i64::try_from(e.seq).unwrap_or(i64::MAX),
        p.user
    ])?;
    Ok(true)
}

/// The [`Projector`] of a [`ConfigStore`]: applies `config.set` events on a
/// [`Fabric`](crate::Fabric)'s ingest and rebuild. Get it from [`ConfigStore::projector`] (the
/// store creates its tables).
#[derive(Clone, Copy, Debug)]
pub struct ConfigProjector {
    _private: (),
}

impl Projector for ConfigProjector {
    fn name(&self) -> &str {
        "config"
    }
    fn tables(&self) -> &[&str] {
        CONFIG_TABLES
    }
    fn apply(&self, conn: &Connection, tenant: &TenantId, event: &Event) -> Result<bool, String> {
        apply(conn, tenant, event).map_err(|e| e.to_string())
    }
}
