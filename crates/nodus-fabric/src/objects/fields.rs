//! Encrypted fields (DESIGN §6): a field a type marks `encrypted` is sealed by the vault with the
//! tenant's key for the field's purpose, bound to the envelope context `(tenant, type, object id,
//! field)`. The object's `data` keeps only a marker `{"_encrypted": true, "key": <key id>,
//! "version": <n>}`; the envelope travels in the event (`sealed`) and is kept apart, in the
//! `fabric_fields` projection. Plaintext never reaches an event, a projection row or an error.
//!
//! Re-envelope jobs rewrap the ciphertexts of one key to its active version in batches: each batch
//! is one transaction holding one `field.rewrapped` event and the job's new state
//! (`fabric_field_jobs`), so a job killed at any point resumes from its last committed batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nodus_policy::{Label, LabelScheme, PolicySnapshot, Subject, TenantId};
use nodus_security::vault::{
    EnvelopeContext, KeyAlgorithm, KeyId, KeyScope, SecretVault, VaultError, envelope_from_text,
    envelope_to_text, parse_envelope_header,
};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{FabricError, Result, VersionRow, corrupt};
use crate::event::{EntityId, Event, EventKind, EventLabel, NewEvent, Payload};
use crate::types::TypeDef;

/// Kind of the event of one re-envelope batch (payload `{job, key, items: [{type, id, label,
/// field, stamp, envelope}]}`): each item's ciphertext rewrapped to the key's active version.
pub const FIELD_REWRAPPED: &str = "field.rewrapped";

/// The member of a marker object that says "this field is encrypted".
pub const MARKER: &str = "_encrypted";

/// The field-ciphertext projection (rebuilt from the log) and the re-envelope job table
/// (operational state, written in the transaction of each batch; never rebuilt).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fabric_fields (
    tenant      TEXT NOT NULL,
    type        TEXT NOT NULL,
    id          TEXT NOT NULL,
    label       TEXT NOT NULL,
    field       TEXT NOT NULL,
    key         TEXT NOT NULL,
    key_version INTEGER NOT NULL,
    stamp       TEXT NOT NULL,
    envelope    BLOB NOT NULL,
    PRIMARY KEY (tenant, type, id, label, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fabric_fields_by_key ON fabric_fields (tenant, key, key_version);
CREATE TABLE IF NOT EXISTS fabric_field_jobs (
    tenant         TEXT NOT NULL,
    job            TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    key            TEXT NOT NULL,
    target_version INTEGER NOT NULL,
    state          TEXT NOT NULL,
    done           INTEGER NOT NULL,
    failed         INTEGER NOT NULL,
    total          INTEGER NOT NULL,
    batch_size     INTEGER NOT NULL,
    batches        INTEGER NOT NULL,
    cursor         TEXT NOT NULL,
    created_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL,
    PRIMARY KEY (tenant, job)
) WITHOUT ROWID;
";

/// Decides whether a subject may write a value into an encrypted field (the host's policy:
/// `security.fields.allow_encrypted_write` in Nodus).
pub type WriteCheck = dyn Fn(&PolicySnapshot, &Subject) -> bool + Send + Sync;

/// What a [`Fabric`](super::Fabric) needs to seal encrypted fields: the vault and the write
/// permission check. Without it ([`Fabric::enable_encrypted_fields`](super::Fabric::enable_encrypted_fields)
/// never called), a value for an encrypted field is refused (`NoFieldVault`).
pub struct FieldSealing {
    vault: Arc<dyn SecretVault>,
    may_write: Arc<WriteCheck>,
    keys: Mutex<HashMap<(TenantId, String), KeyId>>,
}

impl std::fmt::Debug for FieldSealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldSealing").finish_non_exhaustive()
    }
}

impl FieldSealing {
    /// Sealing with `vault`; `may_write` decides who may write encrypted fields.
    pub fn new(
        vault: Arc<dyn SecretVault>,
        may_write: impl Fn(&PolicySnapshot, &Subject) -> bool + Send + Sync + 'static,
    ) -> Self {
        FieldSealing {
            vault,
            may_write: Arc::new(may_write),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The vault.
    pub fn vault(&self) -> &Arc<dyn SecretVault> {
        &self.vault
    }

    /// The tenant's key for `purpose`, generated on first use.
    ///
    /// # Errors
    /// The vault's error.
    pub fn key_for(&self, tenant: &TenantId, purpose: &str) -> Result<KeyId, VaultError> {
        let k = (tenant.clone(), purpose.to_owned());
        if let Some(id) = self.keys.lock().get(&k) {
            return Ok(*id);
        }
        let scope = KeyScope::Tenant(tenant.clone());
        let id = match self.vault.find(&scope, purpose)? {
            Some(id) => id,
            None => match self
                .vault
                .generate(&scope, purpose, KeyAlgorithm::XChaCha20Poly1305)
            {
                Ok(meta) => meta.id,
                // Another writer generated it meanwhile.
                Err(VaultError::KeyExists { .. }) => self
                    .vault
                    .find(&scope, purpose)?
                    .ok_or_else(|| VaultError::UnknownKey(purpose.to_owned()))?,
                Err(e) => return Err(e),
            },
        };
        self.keys.lock().insert(k, id);
        Ok(id)
    }
}

/// The marker an object's `data` keeps for an encrypted field.
pub fn marker(key: &KeyId, version: u32) -> Value {
    let mut m = Map::new();
    m.insert(MARKER.to_owned(), Value::Bool(true));
    m.insert("key".to_owned(), Value::String(key.to_string()));
    m.insert("version".to_owned(), Value::from(version));
    Value::Object(m)
}

/// Whether `v` is a marker object (`{"_encrypted": true, …}`).
pub fn is_marker(v: &Value) -> bool {
    v.get(MARKER) == Some(&Value::Bool(true))
}

fn seal_error(type_name: &str, field: &str, e: &VaultError) -> FabricError {
    FabricError::SealFailed {
        type_name: type_name.to_owned(),
        field: field.to_owned(),
        code: e.code(),
    }
}

/// The fields a validation issue at `path` is about (its first JSON pointer segment).
fn issue_field(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

/// Validates `data` under the type; an encrypted field holding a marker (a value sealed earlier,
/// validated when it was written) is exempt from its schema.
pub(crate) fn validate(def: &TypeDef, data: &Map<String, Value>) -> Result<()> {
    let Err(issues) = def.validate(&Value::Object(data.clone())) else {
        return Ok(());
    };
    let issues: Vec<_> = issues
        .into_iter()
        .filter(|i| {
            let f = issue_field(&i.path);
            !(def.field(f).is_some_and(|m| m.encrypted) && data.get(f).is_some_and(is_marker))
        })
        .collect();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(FabricError::Invalid {
            type_name: def.name().to_string(),
            issues,
        })
    }
}

/// The version a write updates: its data and its envelopes by field.
pub(crate) type Stored<'a> = (&'a Map<String, Value>, &'a BTreeMap<String, Vec<u8>>);

/// Adds the envelopes sealed by a write to its event payload (as `sealed`), if any.
pub(crate) fn attach(payload: &mut Value, sealed: Map<String, Value>) {
    if !sealed.is_empty()
        && let Value::Object(m) = payload
    {
        m.insert("sealed".to_owned(), Value::Object(sealed));
    }
}

/// Seals the encrypted fields of `data` for a write of `type/id` by `subject`, after validating
/// the plaintext: each plaintext value is replaced by its marker, and its envelope (text form) is
/// returned by field, for the event's `sealed` member. `stored` is the version being updated:
/// its data and envelopes. A field given back as its stored marker, or as a plaintext equal to
/// the stored value, is kept as it is (not re-sealed); a removed encrypted field counts as a
/// write.
#[allow(clippy::too_many_arguments)]
pub(crate) fn seal(
    sealing: Option<&FieldSealing>,
    tenant: &TenantId,
    snap: &PolicySnapshot,
    subject: &Subject,
    def: &TypeDef,
    id: &str,
    data: &mut Map<String, Value>,
    stored: Option<Stored<'_>>,
) -> Result<Map<String, Value>> {
    let tname = def.name().as_str();
    let mut sealed = Map::new();
    let encrypted: Vec<&str> = def.encrypted_fields().collect();
    if encrypted.is_empty() {
        validate(def, data)?;
        return Ok(sealed);
    }
    let denied = |field: &str| FabricError::EncryptedWriteDenied {
        type_name: tname.to_owned(),
        field: field.to_owned(),
    };
    // Markers first: only the stored one may be given back.
    for field in &encrypted {
        if let Some(v) = data.get(*field)
            && is_marker(v)
            && stored.and_then(|(d, _)| d.get(*field)) != Some(v)
        {
            return Err(FabricError::BadMarker {
                type_name: tname.to_owned(),
                field: (*field).to_owned(),
            });
        }
    }
    validate(def, data)?;
    for field in encrypted {
        let old = stored.and_then(|(d, _)| d.get(field));
        let Some(value) = data.get(field) else {
            if old.is_some() && !sealing.is_some_and(|s| (s.may_write)(snap, subject)) {
                return Err(denied(field));
            }
            continue;
        };
        if is_marker(value) {
            continue;
        }
        let Some(s) = sealing else {
            return Err(FabricError::NoFieldVault {
                type_name: tname.to_owned(),
                field: field.to_owned(),
            });
        };
        if !(s.may_write)(snap, subject) {
            return Err(denied(field));
        }
        let plain = zeroize_json(value)?;
        let ctx = EnvelopeContext::tenant(tenant, tname, id, field);
        // The same value as stored: keep the stored envelope and marker.
        if let (Some(old), Some(env)) = (old, stored.and_then(|(_, e)| e.get(field)))
            && s.vault.open(env, &ctx).is_ok_and(|p| *p == *plain)
        {
            data.insert(field.to_owned(), old.clone());
            continue;
        }
        let purpose = def.field(field).map_or("fields", |m| m.purpose());
        let key = s
            .key_for(tenant, purpose)
            .map_err(|e| seal_error(tname, field, &e))?;
        let env = s
            .vault
            .seal(&key, &plain, &ctx)
            .map_err(|e| seal_error(tname, field, &e))?;
        let header = parse_envelope_header(&env).map_err(|e| seal_error(tname, field, &e))?;
        data.insert(field.to_owned(), marker(&key, header.key_version));
        sealed.insert(field.to_owned(), Value::String(envelope_to_text(&env)));
    }
    Ok(sealed)
}

/// The JSON text of a value, in a buffer wiped on drop.
fn zeroize_json(v: &Value) -> Result<nodus_security::vault::Zeroizing<Vec<u8>>> {
    serde_json::to_vec(v)
        .map(nodus_security::vault::Zeroizing::new)
        .map_err(|_| corrupt("a field value cannot be encoded"))
}

/// The stored envelopes of one labelled version, by field.
pub(crate) fn load_envelopes(
    conn: &Connection,
    tenant: &TenantId,
    type_name: &str,
    id: &str,
    label: &str,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT field, envelope FROM fabric_fields
         WHERE tenant = ?1 AND type = ?2 AND id = ?3 AND label = ?4",
    )?;
    let rows = stmt.query_map(
        rusqlite::params![tenant.as_str(), type_name, id, label],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Applies the encrypted-field part of an object event to `fabric_fields`, after the object row
/// was merged into `row`: an envelope is kept when this event won its field (the field's merge
/// stamp is this event's), and rows of fields the version no longer holds as markers go.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_object_fields(
    conn: &Connection,
    tenant: &TenantId,
    type_name: &str,
    id: &str,
    row: &VersionRow,
    sealed: &Map<String, Value>,
    may_drop: bool,
    stamp: &str,
) -> Result<()> {
    if sealed.is_empty() && !may_drop {
        return Ok(());
    }
    for (field, env) in sealed {
        let won = row.stamps.get(field).is_some_and(|s| s == stamp)
            && row.data.get(field).is_some_and(is_marker);
        if !won {
            continue;
        }
        let Some(env) = env.as_str().and_then(|t| envelope_from_text(t).ok()) else {
            continue;
        };
        let Ok(header) = parse_envelope_header(&env) else {
            continue;
        };
        conn.prepare_cached(
            "INSERT INTO fabric_fields (tenant, type, id, label, field, key, key_version, stamp, envelope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (tenant, type, id, label, field) DO UPDATE SET key = excluded.key,
                 key_version = excluded.key_version, stamp = excluded.stamp, envelope = excluded.envelope",
        )?
        .execute(rusqlite::params![
            tenant.as_str(),
            type_name,
            id,
            row.label,
            field,
            header.key_id.to_string(),
            i64::from(header.key_version),
            stamp,
            env
        ])?;
    }
    // Fields the version no longer holds as markers (removed, or reset by a re-creation).
    let stored: Vec<String> = load_envelopes(conn, tenant, type_name, id, &row.label)?
        .into_keys()
        .filter(|f| !row.data.get(f).is_some_and(is_marker))
        .collect();
    for field in stored {
        conn.prepare_cached(
            "DELETE FROM fabric_fields
             WHERE tenant = ?1 AND type = ?2 AND id = ?3 AND label = ?4 AND field = ?5",
        )?
        .execute(rusqlite::params![
            tenant.as_str(),
            type_name,
            id,
            row.label,
            field
        ])?;
    }
    Ok(())
}

/// One rewrapped ciphertext in a `field.rewrapped` event.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RewrapItem {
    #[serde(rename = "type")]
    type_name: String,
    id: String,
    label: String,
    field: String,
    /// The merge stamp of the value rewrapped: the rewrap applies only while it is current.
    stamp: String,
    envelope: String,
}

#[derive(Serialize, Deserialize)]
struct RewrapPayload {
    job: String,
    key: String,
    items: Vec<RewrapItem>,
}

/// Applies a `field.rewrapped` event: each item replaces the stored envelope of its field if the
/// value is still the one rewrapped (same stamp), and the marker's version follows.
pub(crate) fn apply_rewrap(conn: &Connection, tenant: &TenantId, e: &Event) -> Result<bool> {
    let Some(p) = e
        .payload
        .to_value()
        .ok()
        .and_then(|v| serde_json::from_value::<RewrapPayload>(v).ok())
    else {
        return Ok(false);
    };
    for item in &p.items {
        let Some(env) = envelope_from_text(&item.envelope).ok() else {
            continue;
        };
        let Ok(header) = parse_envelope_header(&env) else {
            continue;
        };
        let changed = conn
            .prepare_cached(
                "UPDATE fabric_fields SET key = ?1, key_version = ?2, envelope = ?3
                 WHERE tenant = ?4 AND type = ?5 AND id = ?6 AND label = ?7 AND field = ?8
                   AND stamp = ?9",
            )?
            .execute(rusqlite::params![
                header.key_id.to_string(),
                i64::from(header.key_version),
                env,
                tenant.as_str(),
                item.type_name,
                item.id,
                item.label,
                item.field,
                item.stamp
            ])?;
        if changed == 0 {
            continue;
        }
        let data: Option<String> = conn
            .prepare_cached(
                "SELECT data FROM fabric_objects
                 WHERE tenant = ?1 AND type = ?2 AND id = ?3 AND label = ?4",
            )?
            .query_row(
                rusqlite::params![tenant.as_str(), item.type_name, item.id, item.label],
                |r| r.get(0),
            )
            .optional()?;
        let Some(data) = data else { continue };
        let mut data: Map<String, Value> = serde_json::from_str(&data)
            .map_err(|_| corrupt(format!("object `{}/{}`", item.type_name, item.id)))?;
        if data.get(&item.field).is_some_and(is_marker) {
            data.insert(
                item.field.clone(),
                marker(&header.key_id, header.key_version),
            );
            conn.prepare_cached(
                "UPDATE fabric_objects SET data = ?1
                 WHERE tenant = ?2 AND type = ?3 AND id = ?4 AND label = ?5",
            )?
            .execute(rusqlite::params![
                super::apply::canonical(&Value::Object(data)),
                tenant.as_str(),
                item.type_name,
                item.id,
                item.label
            ])?;
        }
    }
    Ok(true)
}

// ---- re-envelope jobs ----------------------------------------------------------------------

/// A re-envelope job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Recorded before the rotation it follows; becomes `running` once the rotation is done
    /// ([`Fabric::activate_job`](super::Fabric::activate_job)), or `cancelled` when the process
    /// died before the rotation happened.
    Pending,
    /// Batches remain; a worker runs it (and resumes it after a restart).
    Running,
    /// Every ciphertext it found was handled.
    Done,
    /// Cancelled; what it rewrapped stays rewrapped.
    Cancelled,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(JobState::Pending),
            "running" => Some(JobState::Running),
            "done" => Some(JobState::Done),
            "cancelled" => Some(JobState::Cancelled),
            _ => None,
        }
    }
}

/// A re-envelope job: rewraps every ciphertext of one tenant key older than `target_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldJob {
    /// The job id.
    pub job: String,
    /// The key purpose.
    pub purpose: String,
    /// The key.
    pub key: String,
    /// Ciphertexts below this version are rewrapped (the active version when the job started).
    pub target_version: u32,
    /// Its state.
    pub state: JobState,
    /// Ciphertexts rewrapped so far.
    pub done: u64,
    /// Ciphertexts that could not be rewrapped (their version is destroyed or disabled).
    pub failed: u64,
    /// Ciphertexts to handle, counted when the job started; once the job is `done`, what it
    /// handled (`done + failed`: values rewritten, or rewrapped by another job, meanwhile no
    /// longer count).
    pub total: u64,
    /// Ciphertexts per batch.
    pub batch_size: u32,
    /// Batches committed.
    pub batches: u64,
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Time of the last committed change, unix ms.
    pub updated_ms: u64,
}

/// What one committed batch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchReport {
    /// Ciphertexts rewrapped in this batch.
    pub rewrapped: u64,
    /// Ciphertexts of this batch that could not be rewrapped.
    pub failed: u64,
    /// The job after the batch (state `done` when nothing remained).
    pub job: FieldJob,
}

const JOB_COLS: &str = "job, purpose, key, target_version, state, done, failed, total, batch_size, batches, created_ms, updated_ms";

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(FieldJob, bool)> {
    let state: String = r.get(4)?;
    let parsed = JobState::parse(&state);
    Ok((
        FieldJob {
            job: r.get(0)?,
            purpose: r.get(1)?,
            key: r.get(2)?,
            target_version: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            state: parsed.unwrap_or(JobState::Cancelled),
            done: u(r.get(5)?),
            failed: u(r.get(6)?),
            total: u(r.get(7)?),
            batch_size: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(1),
            batches: u(r.get(9)?),
            created_ms: u(r.get(10)?),
            updated_ms: u(r.get(11)?),
        },
        parsed.is_some(),
    ))
}

pub(crate) fn load_job(
    conn: &Connection,
    tenant: &TenantId,
    job: &str,
) -> Result<Option<FieldJob>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {JOB_COLS} FROM fabric_field_jobs WHERE tenant = ?1 AND job = ?2"
        ))?
        .query_row([tenant.as_str(), job], job_from_row)
        .optional()?;
    match row {
        Some((j, true)) => Ok(Some(j)),
        Some((_, false)) => Err(corrupt(format!("job `{job}`"))),
        None => Ok(None),
    }
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn save_job(conn: &Connection, tenant: &TenantId, j: &FieldJob, cursor: &str) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO fabric_field_jobs (tenant, {JOB_COLS}, cursor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (tenant, job) DO UPDATE SET state = excluded.state, done = excluded.done,
             failed = excluded.failed, total = excluded.total, batches = excluded.batches,
             updated_ms = excluded.updated_ms, cursor = excluded.cursor"
    ))?
    .execute(rusqlite::params![
        tenant.as_str(),
        j.job,
        j.purpose,
        j.key,
        i64::from(j.target_version),
        j.state.as_str(),
        i(j.done),
        i(j.failed),
        i(j.total),
        i64::from(j.batch_size),
        i(j.batches),
        i(j.created_ms),
        i(j.updated_ms),
        cursor
    ])?;
    Ok(())
}

/// A row awaiting rewrap.
struct Pending {
    type_name: String,
    id: String,
    label: String,
    field: String,
    stamp: String,
    envelope: Vec<u8>,
}

impl super::Fabric {
    /// Enables encrypted fields: from now on a value for a field a type marks `encrypted` is
    /// sealed with `sealing`'s vault (the tenant's key for the field's purpose, generated on first
    /// use). Call it once, before the first write; later calls are ignored.
    pub fn enable_encrypted_fields(&self, sealing: FieldSealing) {
        let _ = self.sealing.set(sealing);
    }

    /// The sealing set by [`enable_encrypted_fields`](Self::enable_encrypted_fields).
    pub fn field_sealing(&self) -> Option<&FieldSealing> {
        self.sealing.get()
    }

    /// The envelopes of `fields` of the version of `type/id` a read by `subject` returns, for a
    /// decrypt: the type, the version's label, and per field its envelope (`None` when the
    /// version holds no value for it). Every field must be encrypted.
    ///
    /// # Errors
    /// [`FabricError::NotFound`] (also when the version is above the subject),
    /// [`FabricError::NotEncrypted`], and as [`get`](Self::get).
    #[allow(clippy::type_complexity)]
    pub fn sealed_fields(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        type_name: &str,
        id: &str,
        fields: &[String],
    ) -> Result<(Arc<TypeDef>, String, Vec<(String, Option<Vec<u8>>)>)> {
        super::check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, type_name)?;
        super::check_id(id)?;
        for f in fields {
            if !def.field(f).is_some_and(|m| m.encrypted) {
                return Err(FabricError::NotEncrypted {
                    type_name: def.name().to_string(),
                    field: f.clone(),
                });
            }
        }
        let tname = def.name().to_string();
        let rows = self.read(|c| super::load_versions(c, tenant, &tname, id))?;
        let row = super::select(snap, subject, &rows).ok_or_else(|| super::not_found(&def, id))?;
        let mut envs = self.read(|c| load_envelopes(c, tenant, &tname, id, &row.label))?;
        let out = fields
            .iter()
            .map(|f| {
                let env = row
                    .data
                    .get(f)
                    .filter(|v| is_marker(v))
                    .and_then(|_| envs.remove(f));
                (f.clone(), env)
            })
            .collect();
        Ok((def, row.label.clone(), out))
    }

    /// How many stored ciphertexts of the tenant name `key` (at `version`, or any version).
    ///
    /// # Errors
    /// [`FabricError::Log`].
    pub fn count_ciphertexts(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        version: Option<u32>,
    ) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c
                .prepare_cached(
                    "SELECT count(*) FROM fabric_fields
                     WHERE tenant = ?1 AND key = ?2 AND (?3 IS NULL OR key_version = ?3)",
                )?
                .query_row(
                    rusqlite::params![tenant.as_str(), key.to_string(), version.map(i64::from)],
                    |r| r.get(0),
                )?;
            Ok(u(n))
        })
    }

    /// Records a re-envelope job for `key` (purpose `purpose`), `pending` until
    /// [`activate_job`](Self::activate_job): every ciphertext of the tenant below
    /// `target_version` will then be rewrapped by [`reenvelope_step`](Self::reenvelope_step).
    /// Record it *before* the rotation that makes `target_version` active, and activate it after:
    /// a crash in between leaves a pending job that a restart resolves either way.
    ///
    /// # Errors
    /// [`FabricError::Log`].
    #[allow(clippy::too_many_arguments)]
    pub fn start_reenvelope_job(
        &self,
        tenant: &TenantId,
        job: &str,
        purpose: &str,
        key: &KeyId,
        target_version: u32,
        batch_size: u32,
        now_ms: u64,
    ) -> Result<FieldJob> {
        let mut out = None;
        self.log.append_with(tenant, Vec::new(), |tx, _| {
            let total: i64 = tx
                .prepare_cached(
                    "SELECT count(*) FROM fabric_fields
                     WHERE tenant = ?1 AND key = ?2 AND key_version < ?3",
                )?
                .query_row(
                    rusqlite::params![tenant.as_str(), key.to_string(), i64::from(target_version)],
                    |r| r.get(0),
                )?;
            let j = FieldJob {
                job: job.to_owned(),
                purpose: purpose.to_owned(),
                key: key.to_string(),
                target_version,
                state: JobState::Pending,
                done: 0,
                failed: 0,
                total: u(total),
                batch_size: batch_size.max(1),
                batches: 0,
                created_ms: now_ms,
                updated_ms: now_ms,
            };
            save_job(tx, tenant, &j, "[]")?;
            out = Some(j);
            Ok::<(), FabricError>(())
        })?;
        out.ok_or_else(|| corrupt("a job was not saved"))
    }

    /// The job `job` of the tenant.
    ///
    /// # Errors
    /// [`FabricError::JobNotFound`], [`FabricError::Log`].
    pub fn job(&self, tenant: &TenantId, job: &str) -> Result<FieldJob> {
        self.read(|c| load_job(c, tenant, job))?
            .ok_or_else(|| FabricError::JobNotFound {
                job: job.to_owned(),
            })
    }

    /// Makes a pending job running (after its rotation); a job in another state is returned as
    /// it is.
    ///
    /// # Errors
    /// [`FabricError::JobNotFound`], [`FabricError::Log`].
    pub fn activate_job(&self, tenant: &TenantId, job: &str, now_ms: u64) -> Result<FieldJob> {
        self.set_job_state(tenant, job, JobState::Pending, JobState::Running, now_ms)
    }

    fn set_job_state(
        &self,
        tenant: &TenantId,
        job: &str,
        from: JobState,
        to: JobState,
        now_ms: u64,
    ) -> Result<FieldJob> {
        let mut out = None;
        self.log.append_with(tenant, Vec::new(), |tx, _| {
            let mut j = load_job(tx, tenant, job)?.ok_or_else(|| FabricError::JobNotFound {
                job: job.to_owned(),
            })?;
            if j.state == from {
                j.state = to;
                j.updated_ms = now_ms;
                let cursor: String = tx
                    .prepare_cached(
                        "SELECT cursor FROM fabric_field_jobs WHERE tenant = ?1 AND job = ?2",
                    )?
                    .query_row([tenant.as_str(), job], |r| r.get(0))?;
                save_job(tx, tenant, &j, &cursor)?;
            }
            out = Some(j);
            Ok::<(), FabricError>(())
        })?;
        out.ok_or_else(|| corrupt("a job was not saved"))
    }

    /// Every pending or running job of every tenant (to resume them after a restart).
    ///
    /// # Errors
    /// [`FabricError::Log`], [`FabricError::Corrupt`].
    pub fn running_jobs(&self) -> Result<Vec<(TenantId, FieldJob)>> {
        let keys: Vec<(String, String)> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT tenant, job FROM fabric_field_jobs WHERE state IN ('pending', 'running')
                 ORDER BY created_ms, job",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        keys.into_iter()
            .map(|(t, j)| {
                let tenant = TenantId::new(&t).map_err(|_| corrupt(format!("job `{j}`")))?;
                let job = self.job(&tenant, &j)?;
                Ok((tenant, job))
            })
            .collect()
    }

    /// Cancels a pending or running job (a finished one is returned as it is).
    ///
    /// # Errors
    /// [`FabricError::JobNotFound`], [`FabricError::Log`].
    pub fn cancel_job(&self, tenant: &TenantId, job: &str, now_ms: u64) -> Result<FieldJob> {
        let j = self.set_job_state(tenant, job, JobState::Pending, JobState::Cancelled, now_ms)?;
        self.set_job_state(
            tenant,
            &j.job,
            JobState::Running,
            JobState::Cancelled,
            now_ms,
        )
    }

    /// Runs one batch of a running job: rewraps (inside the vault) up to `batch_size` ciphertexts
    /// after the job's cursor, then commits, in one transaction, one `field.rewrapped` event
    /// (labelled with the join of the items' labels), the projection change and the job's new
    /// state. A batch that finds nothing left marks the job `done`. `None` when the job is not
    /// running. Killed at any point, the job resumes from its last committed batch: a ciphertext
    /// is never left half rewrapped, and a rewrapped one is not selected again.
    ///
    /// # Errors
    /// [`FabricError::JobNotFound`], [`FabricError::NoFieldVault`], [`FabricError::Log`].
    pub fn reenvelope_step(
        &self,
        tenant: &TenantId,
        scheme: &LabelScheme,
        job: &str,
        now_ms: u64,
    ) -> Result<Option<BatchReport>> {
        let sealing = self
            .sealing
            .get()
            .ok_or_else(|| FabricError::NoFieldVault {
                type_name: String::new(),
                field: String::new(),
            })?;
        let (j, cursor) = self.read(|c| {
            let j = load_job(c, tenant, job)?;
            let cursor: Option<String> = c
                .prepare_cached(
                    "SELECT cursor FROM fabric_field_jobs WHERE tenant = ?1 AND job = ?2",
                )?
                .query_row([tenant.as_str(), job], |r| r.get(0))
                .optional()?;
            Ok::<_, FabricError>((j, cursor))
        })?;
        let j = j.ok_or_else(|| FabricError::JobNotFound {
            job: job.to_owned(),
        })?;
        if j.state != JobState::Running {
            return Ok(None);
        }
        let after: Vec<String> = cursor
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default();
        let at = |n: usize| after.get(n).map_or("", String::as_str);
        let pending: Vec<Pending> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT type, id, label, field, stamp, envelope FROM fabric_fields
                 WHERE tenant = ?1 AND key = ?2 AND key_version < ?3
                   AND (type, id, label, field) > (?4, ?5, ?6, ?7)
                 ORDER BY type, id, label, field LIMIT ?8",
            )?;
            let rows = stmt.query_map(
                rusqlite::params![
                    tenant.as_str(),
                    j.key,
                    i64::from(j.target_version),
                    at(0),
                    at(1),
                    at(2),
                    at(3),
                    i64::from(j.batch_size)
                ],
                |r| {
                    Ok(Pending {
                        type_name: r.get(0)?,
                        id: r.get(1)?,
                        label: r.get(2)?,
                        field: r.get(3)?,
                        stamp: r.get(4)?,
                        envelope: r.get(5)?,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let mut items = Vec::with_capacity(pending.len());
        let mut failed = 0u64;
        let mut label = Label::BOTTOM;
        for p in &pending {
            let ctx = EnvelopeContext::tenant(tenant, &p.type_name, &p.id, &p.field);
            match sealing.vault.rewrap(&p.envelope, &ctx) {
                Ok(env) => {
                    if let Ok(l) = scheme.parse(&p.label) {
                        label = label.lub(l);
                    }
                    items.push(RewrapItem {
                        type_name: p.type_name.clone(),
                        id: p.id.clone(),
                        label: p.label.clone(),
                        field: p.field.clone(),
                        stamp: p.stamp.clone(),
                        envelope: envelope_to_text(&env),
                    });
                }
                Err(_) => failed += 1,
            }
        }
        let next_cursor = pending.last().map_or_else(
            || serde_json::to_string(&after),
            |p| serde_json::to_string(&[&p.type_name, &p.id, &p.label, &p.field]),
        );
        let next_cursor = next_cursor.map_err(corrupt)?;
        let rewrapped = items.len() as u64;
        let events = if items.is_empty() {
            Vec::new()
        } else {
            let payload = serde_json::to_value(RewrapPayload {
                job: job.to_owned(),
                key: j.key.clone(),
                items,
            })
            .map_err(corrupt)?;
            vec![NewEvent::new(
                EventKind::new(FIELD_REWRAPPED).map_err(|e| corrupt(e.to_string()))?,
                EntityId::new(format!("job/{job}")).map_err(|e| corrupt(e.to_string()))?,
                EventLabel::new(scheme.format(label)).map_err(|e| FabricError::BadLabel {
                    reason: e.to_string(),
                })?,
                Payload::from_value(&payload)?,
            )]
        };
        let mut out = None;
        let appended = self.log.append_with(tenant, events, |tx, evs| {
            // Re-read under the write lock: a cancel may have landed meanwhile.
            let Some(mut now) = load_job(tx, tenant, job)? else {
                return Err(FabricError::JobNotFound {
                    job: job.to_owned(),
                });
            };
            if now.state != JobState::Running {
                return Err(FabricError::JobNotRunning {
                    job: job.to_owned(),
                });
            }
            for e in evs {
                apply_rewrap(tx, tenant, e)?;
            }
            now.done = now.done.saturating_add(rewrapped);
            now.failed = now.failed.saturating_add(failed);
            now.updated_ms = now_ms;
            if pending.is_empty() {
                now.state = JobState::Done;
                // Values rewritten, or rewrapped by another job, meanwhile were not the job's
                // to handle: at the end, the total is what it handled.
                now.total = now.done.saturating_add(now.failed);
            } else {
                now.batches = now.batches.saturating_add(1);
            }
            save_job(tx, tenant, &now, &next_cursor)?;
            out = Some(now);
            Ok(())
        });
        match appended {
            Ok(_) => out
                .map(|job| {
                    Some(BatchReport {
                        rewrapped,
                        failed,
                        job,
                    })
                })
                .ok_or_else(|| corrupt("a job was not saved")),
            // Cancelled between the read and the commit: nothing of the batch was kept.
            Err(FabricError::JobNotRunning { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
