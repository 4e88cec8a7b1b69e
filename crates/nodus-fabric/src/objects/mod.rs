//! Objects: typed, validated, labelled and polyinstantiated records over the event log
//! (DESIGN §6), and the projections they are read from.
//!
//! A [`Fabric`] sits on a [`SqliteEventLog`] and keeps its projections (types, object versions,
//! an index of top-level field values, object histories) in the same SQLite database. Every
//! mutation is an event appended with [`SqliteEventLog::append_with`], and its projection write
//! happens in that same transaction: on any error nothing is written at all.
//!
//! **MAC.** Every object version carries a label. One `(type, id)` may have several versions at
//! different labels (polyinstantiation). A read returns the *highest* live version the subject
//! dominates, by the [choice rule](choice_key): the greatest label level, then the most
//! compartments, then the greatest canonical label text. Lists, counts, filters, sort order,
//! cursors, errors and histories are computed after that selection, so a version the subject does
//! not dominate is absent from every output (`not found`, never `forbidden`).
//!
//! Permissions (RBAC per type) are the caller's: the fabric decides only by labels.

mod apply;
mod codes;
mod fields;
mod query;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nodus_policy::{Label, LabelScheme, PolicySnapshot, SchemeId, Subject, TenantId};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::PayloadError;
use crate::event::{
    EntityId, Event, EventKind, EventLabel, EventRef, Incarnation, NewEvent, Payload,
};
use crate::log::{EventLogError, IngestReport};
use crate::sqlite::SqliteEventLog;
use crate::types::{TypeDef, TypeDoc, TypeError, TypeName, ValidationIssue};

pub use fields::{
    BatchReport, FIELD_REWRAPPED, FieldJob, FieldSealing, JobState, MARKER, WriteCheck, is_marker,
    marker,
};
pub use query::{Direction, ListQuery, Op, Page, Predicate};

/// Most bytes (UTF-8) an object id may have.
pub const MAX_ID_LEN: usize = 128;
/// Most items one [`Fabric::list`] page may hold.
pub const MAX_PAGE: usize = 1000;

/// Kind of the event that defines or redefines a type (payload: the [`TypeDoc`]).
pub const TYPE_DEFINED: &str = "type.defined";
/// Kind of the event that creates an object version (payload `{type, id, data}`).
pub const OBJECT_CREATED: &str = "object.created";
/// Kind of the event that updates an object version (payload `{type, id, set, unset}`).
pub const OBJECT_UPDATED: &str = "object.updated";
/// Kind of the event that deletes an object version: a tombstone (payload `{type, id}`).
pub const OBJECT_DELETED: &str = "object.deleted";

/// The layout of the projection tables; a database whose projections were written under another
/// layout has them rebuilt from the log when it is opened.
const PROJECTION_VERSION: &str = "3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fabric_meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fabric_types (
    tenant  TEXT NOT NULL,
    name    TEXT NOT NULL,
    version INTEGER NOT NULL,
    stamp   TEXT NOT NULL,
    doc     TEXT NOT NULL,
    indexed TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fabric_objects (
    tenant    TEXT NOT NULL,
    type      TEXT NOT NULL,
    id        TEXT NOT NULL,
    label     TEXT NOT NULL,
    version   INTEGER NOT NULL,
    deleted   INTEGER NOT NULL,
    data      TEXT NOT NULL,
    stamps    TEXT NOT NULL,
    reset     TEXT NOT NULL,
    del_stamp TEXT NOT NULL,
    PRIMARY KEY (tenant, type, id, label)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fabric_index (
    tenant TEXT NOT NULL,
    type   TEXT NOT NULL,
    id     TEXT NOT NULL,
    label  TEXT NOT NULL,
    field  TEXT NOT NULL,
    t      INTEGER NOT NULL,
    v      NOT NULL,
    PRIMARY KEY (tenant, type, id, label, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fabric_index_by_value ON fabric_index (tenant, type, field, t, v);
CREATE TABLE IF NOT EXISTS fabric_labels (
    tenant TEXT NOT NULL,
    type   TEXT NOT NULL,
    label  TEXT NOT NULL,
    PRIMARY KEY (tenant, type, label)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fabric_history (
    tenant TEXT NOT NULL,
    type   TEXT NOT NULL,
    id     TEXT NOT NULL,
    stamp  TEXT NOT NULL,
    label  TEXT NOT NULL,
    kind   TEXT NOT NULL,
    change TEXT NOT NULL,
    PRIMARY KEY (tenant, type, id, stamp)
) WITHOUT ROWID;
";

/// The projection tables, in the order [`Fabric::projection_rows`] reports them.
pub const PROJECTION_TABLES: [&str; 6] = [
    "fabric_types",
    "fabric_objects",
    "fabric_index",
    "fabric_labels",
    "fabric_history",
    // Encrypted fields' envelopes (`objects/fields.rs`).
    "fabric_fields",
];

/// Why a fabric operation failed. Messages are lowercase and name the type, id or field in
/// backticks; they never carry a field's value, and never depend on data the caller cannot read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FabricError {
    /// The type is not defined in the tenant.
    #[error("unknown type `{name}`")]
    UnknownType {
        /// The type name.
        name: String,
    },
    /// No version of the object that the caller may read exists (or it is deleted).
    #[error("object `{type_name}/{id}` not found")]
    NotFound {
        /// The type.
        type_name: String,
        /// The id.
        id: String,
    },
    /// A create at a label where a live version of the id already exists.
    #[error("object `{type_name}/{id}` already exists at label `{label}`")]
    AlreadyExists {
        /// The type.
        type_name: String,
        /// The id.
        id: String,
        /// The label of the version (one the caller may read).
        label: String,
    },
    /// The object or type is at another version than the one the caller expected.
    #[error("`{entity}` is at version {actual}, not the expected version {expected}")]
    Conflict {
        /// `type/id` of the object, or the type name.
        entity: String,
        /// The version the caller expected.
        expected: u64,
        /// The version it is at.
        actual: u64,
    },
    /// The data breaks the type's schema.
    #[error("object of type `{type_name}` is invalid: {}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The type.
        type_name: String,
        /// Each issue: the field's JSON pointer and the rule, never the value.
        issues: Vec<ValidationIssue>,
    },
    /// The data is not a JSON object.
    #[error("object data of type `{type_name}` must be a JSON object")]
    NotAnObject {
        /// The type.
        type_name: String,
    },
    /// The policy's write rule forbids the caller to write at this label.
    #[error("the subject may not write at label `{label}`")]
    WriteDenied {
        /// The label (given by the caller, or of a version the caller may read).
        label: String,
    },
    /// The label text does not parse under the tenant's scheme.
    #[error("invalid label: {reason}")]
    BadLabel {
        /// Why.
        reason: String,
    },
    /// The id breaks the id rule.
    #[error("invalid object id: {reason}")]
    InvalidId {
        /// Why.
        reason: &'static str,
    },
    /// An encrypted field was given a value, and this fabric has no vault to seal it
    /// ([`Fabric::enable_encrypted_fields`] was not called).
    #[error(
        "field `{field}` of type `{type_name}` is encrypted and this fabric has no vault to seal it"
    )]
    NoFieldVault {
        /// The type.
        type_name: String,
        /// The field.
        field: String,
    },
    /// The subject may not write (set, change or remove) an encrypted field.
    #[error(
        "writing the encrypted field `{field}` of type `{type_name}` needs a role in `security.fields.allow_encrypted_write`"
    )]
    EncryptedWriteDenied {
        /// The type.
        type_name: String,
        /// The field.
        field: String,
    },
    /// An encrypted field was given a marker other than the one stored for it (markers can only
    /// be given back unchanged; a ciphertext cannot be moved by copying its marker).
    #[error(
        "field `{field}` of type `{type_name}`: an encryption marker can only be given back unchanged"
    )]
    BadMarker {
        /// The type.
        type_name: String,
        /// The field.
        field: String,
    },
    /// The vault refused to seal a field (its code says why; never the value).
    #[error("sealing field `{field}` of type `{type_name}` failed: vault error `{code}`")]
    SealFailed {
        /// The type.
        type_name: String,
        /// The field.
        field: String,
        /// The vault error's code.
        code: &'static str,
    },
    /// A decrypt named a field that is not encrypted.
    #[error("field `{field}` of type `{type_name}` is not encrypted")]
    NotEncrypted {
        /// The type.
        type_name: String,
        /// The field.
        field: String,
    },
    /// No re-envelope job with this id in the tenant.
    #[error("no job `{job}`")]
    JobNotFound {
        /// The job id.
        job: String,
    },
    /// The job is not running (done or cancelled).
    #[error("job `{job}` is not running")]
    JobNotRunning {
        /// The job id.
        job: String,
    },
    /// A filter or sort names a field that is not marked `indexed`.
    #[error("field `{field}` is not indexed: it cannot be filtered or sorted on")]
    FilterNotIndexed {
        /// The field.
        field: String,
    },
    /// A filter or sort names an encrypted field.
    #[error("field `{field}` is encrypted: it is never filtered or sorted on")]
    FilterEncrypted {
        /// The field.
        field: String,
    },
    /// A filter or sort names a field classified above the caller.
    #[error("field `{field}` is classified above the subject: it cannot be filtered or sorted on")]
    FieldNotReadable {
        /// The field.
        field: String,
    },
    /// A filter's value or a limit is not usable.
    #[error("bad query: {reason}")]
    BadQuery {
        /// Why.
        reason: String,
    },
    /// The cursor is not one this query produced.
    #[error("bad cursor: {reason}")]
    BadCursor {
        /// Why.
        reason: &'static str,
    },
    /// A stored type is redefined incompatibly, or stored objects break the new definition.
    #[error("type `{name}`: stored objects break the new definition: {}", reasons.join("; "))]
    StoredObjectsBreak {
        /// The type.
        name: String,
        /// Each `(path, rule)` broken and how many stored objects break it.
        reasons: Vec<String>,
    },
    /// The subject belongs to another tenant.
    #[error("the subject belongs to another tenant")]
    TenantMismatch,
    /// The subject's clearance was parsed under another label scheme than the snapshot's (the
    /// policy's labels changed since): its labels cannot be compared, so nothing is decided.
    #[error("the subject's clearance belongs to another label scheme: start a new session")]
    StaleSubject,
    /// A type definition error.
    #[error(transparent)]
    Type(#[from] TypeError),
    /// The event log failed; nothing was written.
    #[error(transparent)]
    Log(#[from] EventLogError),
    /// An event payload could not be built.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A projection row cannot be read back.
    #[error("fabric projection is corrupt: {0}")]
    Corrupt(String),
    /// A [`Projector`] failed to apply an event; nothing was written.
    #[error("projector `{projector}` failed: {reason}")]
    Projector {
        /// The projector's name.
        projector: String,
        /// What failed.
        reason: String,
    },
}

impl From<rusqlite::Error> for FabricError {
    fn from(e: rusqlite::Error) -> Self {
        FabricError::Log(EventLogError::Storage(e.to_string()))
    }
}

/// Shorthand for fabric results.
pub type Result<T, E = FabricError> = std::result::Result<T, E>;

/// One object version as a caller sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectView {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The id.
    pub id: String,
    /// The version's label, canonical text.
    pub label: String,
    /// The version number of this labelled version (1 at creation, +1 per update or delete).
    pub version: u64,
    /// The data (a JSON object), without fields classified above the caller.
    pub data: Value,
}

impl ObjectView {
    /// The view as JSON: exactly what `serde_json::to_value` makes of it, built directly (the
    /// strings are moved, not copied).
    pub fn into_json(self) -> Value {
        let mut m = Map::new();
        m.insert("type".to_owned(), Value::String(self.type_name));
        m.insert("id".to_owned(), Value::String(self.id));
        m.insert("label".to_owned(), Value::String(self.label));
        m.insert("version".to_owned(), Value::from(self.version));
        m.insert("data".to_owned(), self.data);
        Value::Object(m)
    }
}

/// What an object event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    /// `object.created` (also a re-creation after a delete).
    Created,
    /// `object.updated`.
    Updated,
    /// `object.deleted`.
    Deleted,
}

/// One event of an object's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The label of the version the event is about.
    pub label: String,
    /// The ordinal of the event among the events of that labelled version (1, 2, …), in merge
    /// order (`(lamport, node)`); for local-only histories, the version it produced.
    pub version: u64,
    /// What happened.
    pub kind: HistoryKind,
    /// Fields set (all the data for a creation), without fields classified above the caller.
    pub set: Map<String, Value>,
    /// Fields removed.
    pub unset: Vec<String>,
}

/// What [`Fabric::ingest`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FabricIngestReport {
    /// The event log's report.
    pub log: IngestReport,
    /// Applied events of a fabric kind whose payload is not a well-formed fabric payload: kept in
    /// the log, no effect on projections.
    pub unprojected: Vec<EventRef>,
}

/// Compiled types by `(tenant, name)`: the stamp of the definition they were compiled from and
/// the label scheme they were compiled under.
/// Per tenant and type name: the stamp of the definition, the scheme it was compiled under, the
/// definition, and the types generation at which the stamp was last confirmed.
type TypeCache = HashMap<TenantId, HashMap<String, (String, SchemeId, Arc<TypeDef>, u64)>>;

/// The objects and types of every tenant of one [`SqliteEventLog`]. Share it in an `Arc`.
///
/// Compiled types are cached per `(tenant, name)` and recompiled when the stored definition or the
/// label scheme changes.
pub struct Fabric {
    log: Arc<SqliteEventLog>,
    types: Mutex<TypeCache>,
    projectors: parking_lot::RwLock<Vec<Arc<dyn Projector>>>,
    /// The vault and write check for encrypted fields (`objects/fields.rs`).
    sealing: std::sync::OnceLock<FieldSealing>,
}

/// Projections kept beside the fabric's own in the log's database (a CRDT document store, say):
/// applied to the same events, in the same transaction, by [`Fabric::ingest`] and
/// [`Fabric::rebuild`]. Local writes of such a store go through its own
/// [`SqliteEventLog::append_with`] calls.
pub trait Projector: Send + Sync {
    /// The projector's name, for errors.
    fn name(&self) -> &str;
    /// Its tables: each keyed by tenant first (a column named `tenant`); a rebuild deletes the
    /// tenant's rows from each before replaying.
    fn tables(&self) -> &[&str];
    /// Applies one event (of any kind) to its tables. `Ok(false)` when the event is of one of
    /// its kinds but malformed (no effect); events of other kinds leave it untouched (`Ok(true)`).
    ///
    /// # Errors
    /// A description of what failed; the whole ingest or rebuild is then rolled back.
    fn apply(
        &self,
        conn: &Connection,
        tenant: &TenantId,
        event: &Event,
    ) -> std::result::Result<bool, String>;
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// One stored labelled version of an object (a row of `fabric_objects`).
#[derive(Clone, Debug, Default)]
pub(crate) struct VersionRow {
    pub(crate) label: String,
    pub(crate) version: u64,
    pub(crate) deleted: bool,
    pub(crate) data: Map<String, Value>,
    pub(crate) stamps: BTreeMap<String, String>,
    pub(crate) reset: String,
    pub(crate) del_stamp: String,
}

/// The deterministic order of the choice rule for labels the subject dominates: level, then
/// compartment count, then the canonical label text. The highest key is chosen; two distinct
/// labels never have equal keys (their texts differ).
pub fn choice_key(scheme: &LabelScheme, label: Label) -> (u8, u32, String) {
    (
        label.level(),
        label.compartments().count_ones(),
        scheme.format(label),
    )
}

/// The labels among `texts` that `subject` may read, ranked by [`choice_key`] (rank 0 lowest).
/// Unparsable labels are not readable (fail closed).
pub(crate) fn ranked_visible<'a>(
    snap: &PolicySnapshot,
    subject: &Subject,
    texts: impl Iterator<Item = &'a str>,
) -> Vec<(String, i64)> {
    let scheme = snap.label_scheme();
    let mut keys: Vec<((u8, u32, String), String)> = texts
        .filter_map(|t| {
            let label = scheme.parse(t).ok()?;
            snap.can_read(subject, label)
                .then(|| (choice_key(scheme, label), t.to_owned()))
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .enumerate()
        .map(|(i, (_, t))| (t, i64::try_from(i).unwrap_or(i64::MAX)))
        .collect()
}

fn readable(snap: &PolicySnapshot, subject: &Subject, text: &str) -> Option<Label> {
    let label = snap.label_scheme().parse(text).ok()?;
    snap.can_read(subject, label).then_some(label)
}

/// The version a read returns: the live version with the highest [`choice_key`] among those the
/// subject may read.
fn select<'r>(
    snap: &PolicySnapshot,
    subject: &Subject,
    rows: &'r [VersionRow],
) -> Option<&'r VersionRow> {
    let scheme = snap.label_scheme();
    rows.iter()
        .filter(|r| !r.deleted)
        .filter_map(|r| readable(snap, subject, &r.label).map(|l| (choice_key(scheme, l), r)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, r)| r)
}

/// Removes fields classified above the subject.
pub(crate) fn mask(
    def: Option<&TypeDef>,
    snap: &PolicySnapshot,
    subject: &Subject,
    mut data: Map<String, Value>,
) -> Map<String, Value> {
    if let Some(def) = def {
        data.retain(|k, _| {
            def.classification(k)
                .is_none_or(|c| snap.can_read(subject, c))
        });
    }
    data
}

fn view(
    def: &TypeDef,
    snap: &PolicySnapshot,
    subject: &Subject,
    id: &str,
    row: &VersionRow,
) -> ObjectView {
    ObjectView {
        type_name: def.name().to_string(),
        id: id.to_owned(),
        label: row.label.clone(),
        version: row.version,
        data: Value::Object(mask(Some(def), snap, subject, row.data.clone())),
    }
}

fn check_id(id: &str) -> Result<()> {
    let bad = |reason| Err(FabricError::InvalidId { reason });
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return bad("an id has 1 to 128 bytes");
    }
    if id.chars().any(char::is_control) {
        return bad("an id has no control characters");
    }
    Ok(())
}

fn entity(type_name: &str, id: &str) -> Result<EntityId> {
    EntityId::new(format!("{type_name}/{id}")).map_err(|_| FabricError::InvalidId {
        reason: "an id has 1 to 128 bytes",
    })
}

fn kind(k: &'static str) -> Result<EventKind> {
    EventKind::new(k).map_err(|e| FabricError::Corrupt(e.to_string()))
}

fn event_label(text: &str) -> Result<EventLabel> {
    EventLabel::new(text).map_err(|e| FabricError::BadLabel {
        reason: e.to_string(),
    })
}

fn check_subject(tenant: &TenantId, snap: &PolicySnapshot, subject: &Subject) -> Result<()> {
    if subject.tenant() != tenant {
        return Err(FabricError::TenantMismatch);
    }
    if subject.scheme() != snap.label_scheme().id() {
        return Err(FabricError::StaleSubject);
    }
    Ok(())
}

fn into_object(def: &TypeDef, data: Value) -> Result<Map<String, Value>> {
    match data {
        Value::Object(m) => Ok(m),
        _ => Err(FabricError::NotAnObject {
            type_name: def.name().to_string(),
        }),
    }
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> FabricError {
    FabricError::Corrupt(what.to_string())
}

fn load_type(conn: &Connection, tenant: &TenantId, name: &str) -> Result<Option<TypeDoc>> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM fabric_types WHERE tenant = ?1 AND name = ?2")?
        .query_row([tenant.as_str(), name], |r| r.get(0))
        .optional()?;
    doc.map(|d| serde_json::from_str(&d).map_err(|_| corrupt(format!("type `{name}`"))))
        .transpose()
}

/// The stored versions of `type/id` for reading: label, version, deleted and data (no merge
/// stamps, which only applying events needs).
pub(crate) fn load_versions(
    conn: &Connection,
    tenant: &TenantId,
    type_name: &str,
    id: &str,
) -> Result<Vec<VersionRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT label, version, deleted, data FROM fabric_objects
         WHERE tenant = ?1 AND type = ?2 AND id = ?3 ORDER BY label",
    )?;
    let mut rows = stmt.query(rusqlite::params![tenant.as_str(), type_name, id])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let bad = || corrupt(format!("object `{type_name}/{id}`"));
        let data: String = r.get(3)?;
        out.push(VersionRow {
            label: r.get(0)?,
            version: u64::try_from(r.get::<_, i64>(1)?).map_err(|_| bad())?,
            deleted: r.get::<_, i64>(2)? != 0,
            data: serde_json::from_str(&data).map_err(|_| bad())?,
            ..VersionRow::default()
        });
    }
    Ok(out)
}

pub(crate) fn load_rows(
    conn: &Connection,
    tenant: &TenantId,
    type_name: &str,
    id: &str,
    label: Option<&str>,
) -> Result<Vec<VersionRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT label, version, deleted, data, stamps, reset, del_stamp FROM fabric_objects
         WHERE tenant = ?1 AND type = ?2 AND id = ?3 AND (?4 IS NULL OR label = ?4) ORDER BY label",
    )?;
    let mut rows = stmt.query(rusqlite::params![tenant.as_str(), type_name, id, label])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let bad = || corrupt(format!("object `{type_name}/{id}`"));
        let data: String = r.get(3)?;
        let stamps: String = r.get(4)?;
        out.push(VersionRow {
            label: r.get(0)?,
            version: u64::try_from(r.get::<_, i64>(1)?).map_err(|_| bad())?,
            deleted: r.get::<_, i64>(2)? != 0,
            data: serde_json::from_str(&data).map_err(|_| bad())?,
            stamps: serde_json::from_str(&stamps).map_err(|_| bad())?,
            reset: r.get(5)?,
            del_stamp: r.get(6)?,
        });
    }
    Ok(out)
}

impl Fabric {
    /// A fabric over `log`, creating its projection tables in the log's database if needed.
    ///
    /// # Errors
    /// [`FabricError::Log`] when the tables cannot be created.
    pub fn new(log: Arc<SqliteEventLog>) -> Result<Fabric> {
        // Projections written by another projection version are dropped and rebuilt from the
        // log (they are derived data); a fresh database just gets the tables.
        let stale = log.read_projection(|c| {
            let had_tables: bool = c
                .prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'fabric_objects'")?
                .query_row([], |r| r.get::<_, i64>(0))?
                > 0;
            let had_meta: bool = c
                .prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'fabric_meta'")?
                .query_row([], |r| r.get::<_, i64>(0))?
                > 0;
            let version: Option<String> = if had_meta {
                c.prepare("SELECT v FROM fabric_meta WHERE k = 'projection_version'")?
                    .query_row([], |r| r.get(0))
                    .optional()?
            } else {
                None
            };
            let stale = had_tables && version.as_deref() != Some(PROJECTION_VERSION);
            if stale {
                for table in PROJECTION_TABLES {
                    c.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
                }
            }
            c.execute_batch(SCHEMA)?;
            c.execute_batch(fields::SCHEMA)?;
            c.execute(
                "INSERT INTO fabric_meta (k, v) VALUES ('projection_version', ?1)
                 ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                [PROJECTION_VERSION],
            )?;
            Ok::<bool, FabricError>(stale)
        })?;
        let fabric = Fabric {
            log,
            types: Mutex::new(HashMap::new()),
            projectors: parking_lot::RwLock::new(Vec::new()),
            sealing: std::sync::OnceLock::new(),
        };
        if stale {
            for tenant in fabric.log.tenants()? {
                fabric.rebuild(&tenant)?;
            }
        }
        Ok(fabric)
    }

    /// The log under this fabric.
    pub fn log(&self) -> &Arc<SqliteEventLog> {
        &self.log
    }

    /// Adds a [`Projector`]: from now on [`ingest`](Self::ingest) and
    /// [`rebuild`](Self::rebuild) apply every event to it too, in the same transaction. Its
    /// tables must exist already (create them before adding it).
    pub fn add_projector(&self, projector: Arc<dyn Projector>) {
        self.projectors.write().push(projector);
    }

    fn read<R>(&self, f: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
        self.log.read_projection(f)
    }

    fn require_type(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        name: &str,
    ) -> Result<Arc<TypeDef>> {
        let name = TypeName::new(name)?;
        let unknown = || FabricError::UnknownType {
            name: name.to_string(),
        };
        let scheme = snap.label_scheme();
        // Read before the database: a cached definition confirmed at the log's current write
        // generation is used without reading the database (no write has ended since).
        let generation = self.log.write_generation();
        // Confirmed at the current generation: the definition, without copying anything else.
        let cached = match self
            .types
            .lock()
            .get(tenant)
            .and_then(|m| m.get(name.as_str()))
            .filter(|(_, id, _, _)| *id == scheme.id())
        {
            Some((_, _, def, at)) if *at == generation => return Ok(def.clone()),
            Some((s, _, def, _)) => Some((s.clone(), def.clone())),
            None => None,
        };
        // The stamp says whether the cached definition is current; the document is read only
        // when it is not.
        let stamp = self
            .read(|c| {
                Ok(c.prepare_cached(
                    "SELECT stamp FROM fabric_types WHERE tenant = ?1 AND name = ?2",
                )?
                .query_row([tenant.as_str(), name.as_str()], |r| r.get::<_, String>(0))
                .optional()?)
            })?
            .ok_or_else(unknown)?;
        let (stamp, def) = match cached {
            Some((s, def)) if s == stamp => (stamp, def),
            _ => {
                // Stamp and document in one read (the type may have been redefined since).
                let (stamp, doc) = self
                    .read(|c| {
                        Ok(c.prepare_cached(
                            "SELECT stamp, doc FROM fabric_types WHERE tenant = ?1 AND name = ?2",
                        )?
                        .query_row([tenant.as_str(), name.as_str()], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                        })
                        .optional()?)
                    })?
                    .ok_or_else(unknown)?;
                let doc: TypeDoc =
                    serde_json::from_str(&doc).map_err(|_| corrupt(format!("type `{name}`")))?;
                (stamp, Arc::new(TypeDef::from_doc(doc, scheme)?))
            }
        };
        self.types.lock().entry(tenant.clone()).or_default().insert(
            name.to_string(),
            (stamp, scheme.id(), def.clone(), generation),
        );
        Ok(def)
    }

    // ---- types ---------------------------------------------------------------------------------

    /// Defines type `name` (version 1) or redefines it: the new definition must be a
    /// backwards-compatible successor ([`TypeDef::redefine`]) **and** every stored live object of
    /// the type must be valid under it; otherwise it is refused with every reason. Appends a
    /// `type.defined` event carrying the [`TypeDoc`]. Types are tenant-wide metadata (labelled at
    /// the scheme's bottom label); defining them is an administrative act the caller permits.
    ///
    /// # Errors
    /// [`FabricError::Type`] (name, schema, fields, incompatibility),
    /// [`FabricError::StoredObjectsBreak`], [`FabricError::Conflict`] when the type changed
    /// meanwhile, [`FabricError::Log`].
    pub fn define_type(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        name: &str,
        schema: Value,
        fields: Value,
    ) -> Result<TypeDef> {
        let name = TypeName::new(name)?;
        let scheme = snap.label_scheme();
        let current = self.read(|c| load_type(c, tenant, name.as_str()))?;
        let (def, base) = match current {
            None => (TypeDef::new(name.clone(), schema, fields, scheme)?, 0),
            Some(doc) => {
                let cur = TypeDef::from_doc(doc, scheme)?;
                (cur.redefine(schema, fields, scheme)?, cur.version())
            }
        };
        if base > 0 {
            self.revalidate(tenant, &def)?;
        }
        let payload = Payload::from_value(
            &serde_json::to_value(def.to_doc()).map_err(|e| corrupt(e.to_string()))?,
        )?;
        let ev = NewEvent::new(
            kind(TYPE_DEFINED)?,
            EntityId::new(name.as_str()).map_err(|e| corrupt(e.to_string()))?,
            event_label(&scheme.format(Label::BOTTOM))?,
            payload,
        );
        let appended = self.log.append_with(tenant, vec![ev], |tx, evs| {
            let now = load_type(tx, tenant, name.as_str())?.map_or(0, |d| d.version);
            if now != base {
                return Err(FabricError::Conflict {
                    entity: name.to_string(),
                    expected: u64::from(base),
                    actual: u64::from(now),
                });
            }
            for e in evs {
                apply::apply_event(tx, tenant, e)?;
            }
            Ok(())
        });
        appended?;
        Ok(def)
    }

    fn revalidate(&self, tenant: &TenantId, def: &TypeDef) -> Result<()> {
        let datas: Vec<String> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT data FROM fabric_objects WHERE tenant = ?1 AND type = ?2 AND deleted = 0",
            )?;
            let rows = stmt.query_map([tenant.as_str(), def.name().as_str()], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })?;
        let mut broken: BTreeMap<(String, String), u64> = BTreeMap::new();
        for d in datas {
            let data: Value =
                serde_json::from_str(&d).map_err(|_| corrupt(format!("type `{}`", def.name())))?;
            if let Value::Object(m) = &data
                && let Err(FabricError::Invalid { issues, .. }) = fields::validate(def, m)
            {
                for i in issues {
                    *broken.entry((i.path, i.rule)).or_default() += 1;
                }
            }
        }
        if broken.is_empty() {
            return Ok(());
        }
        Err(FabricError::StoredObjectsBreak {
            name: def.name().to_string(),
            reasons: broken
                .into_iter()
                .map(|((path, rule), n)| {
                    let path = if path.is_empty() { "/".into() } else { path };
                    format!("{n} stored object(s) would break `{rule}` at `{path}`")
                })
                .collect(),
        })
    }

    /// The current definition of type `name`.
    ///
    /// # Errors
    /// [`FabricError::UnknownType`], [`FabricError::Type`] for a bad name.
    pub fn get_type(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        name: &str,
    ) -> Result<TypeDef> {
        self.require_type(tenant, snap, name).map(|d| (*d).clone())
    }

    /// Every type of the tenant, by name.
    ///
    /// # Errors
    /// [`FabricError::Log`], [`FabricError::Corrupt`].
    pub fn list_types(&self, tenant: &TenantId, snap: &PolicySnapshot) -> Result<Vec<TypeDef>> {
        let docs: Vec<String> = self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT doc FROM fabric_types WHERE tenant = ?1 ORDER BY name")?;
            let rows = stmt.query_map([tenant.as_str()], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })?;
        docs.into_iter()
            .map(|d| {
                let doc: TypeDoc = serde_json::from_str(&d).map_err(|_| corrupt("a type"))?;
                Ok(TypeDef::from_doc(doc, snap.label_scheme())?)
            })
            .collect()
    }

    // ---- objects -------------------------------------------------------------------------------

    /// Creates a version of object `type/id` at `label` (default: the subject's clearance), with
    /// `data` (a JSON object valid under the type). `id` defaults to 32 random hex digits. The
    /// subject must be able to read and write `label` (the policy's write rule); a version of the
    /// id at another label — visible or not — does not prevent it (polyinstantiation). A deleted
    /// version at the same label is created anew (its version number continues).
    ///
    /// # Errors
    /// [`FabricError::UnknownType`], [`FabricError::InvalidId`], [`FabricError::BadLabel`],
    /// [`FabricError::WriteDenied`], [`FabricError::NotAnObject`],
    /// [`FabricError::EncryptedWriteDenied`], [`FabricError::BadMarker`], [`FabricError::Invalid`],
    /// [`FabricError::AlreadyExists`], [`FabricError::TenantMismatch`],
    /// [`FabricError::StaleSubject`], [`FabricError::Log`].
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        type_name: &str,
        id: Option<String>,
        label: Option<&str>,
        data: Value,
    ) -> Result<ObjectView> {
        check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, type_name)?;
        let id = match id {
            Some(id) => id,
            None => Incarnation::random()
                .map_err(EventLogError::Random)?
                .to_string(),
        };
        check_id(&id)?;
        let scheme = snap.label_scheme();
        let label = match label {
            Some(t) => scheme.parse(t).map_err(|e| FabricError::BadLabel {
                reason: e.to_string(),
            })?,
            None => subject.clearance(),
        };
        let label_text = scheme.format(label);
        if !(snap.can_read(subject, label) && snap.can_write(subject, label)) {
            return Err(FabricError::WriteDenied { label: label_text });
        }
        let mut data = into_object(&def, data)?;
        let sealed = fields::seal(
            self.sealing.get(),
            tenant,
            snap,
            subject,
            &def,
            &id,
            &mut data,
            None,
        )?;
        let tname = def.name().to_string();
        let mut payload = serde_json::json!({"type": tname, "id": id, "data": data});
        fields::attach(&mut payload, sealed);
        let ev = NewEvent::new(
            kind(OBJECT_CREATED)?,
            entity(&tname, &id)?,
            event_label(&label_text)?,
            Payload::from_value(&payload)?,
        );
        let mut out = None;
        self.log.append_with(tenant, vec![ev], |tx, evs| {
            let mut row = None;
            for e in evs {
                row = apply::apply_object_checked(tx, tenant, e, |stored| {
                    if stored.is_some_and(|s| !s.deleted) {
                        return Err(FabricError::AlreadyExists {
                            type_name: tname.clone(),
                            id: id.clone(),
                            label: label_text.clone(),
                        });
                    }
                    Ok(())
                })?;
            }
            let row = row.ok_or_else(|| corrupt("a created object was not projected"))?;
            out = Some(view(&def, snap, subject, &id, &row));
            Ok::<(), FabricError>(())
        })?;
        out.ok_or_else(|| corrupt("a created object was not projected"))
    }

    /// The version of `type/id` a read returns: the live version with the highest
    /// [`choice_key`] among those the subject may read.
    ///
    /// # Errors
    /// [`FabricError::UnknownType`], [`FabricError::InvalidId`], [`FabricError::NotFound`] (also
    /// when every version is above the subject or deleted), [`FabricError::TenantMismatch`].
    pub fn get(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        type_name: &str,
        id: &str,
    ) -> Result<ObjectView> {
        check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, type_name)?;
        check_id(id)?;
        let rows = self.read(|c| load_versions(c, tenant, def.name().as_str(), id))?;
        let row = select(snap, subject, &rows).ok_or_else(|| not_found(&def, id))?;
        Ok(view(&def, snap, subject, id, row))
    }

    /// Replaces the data of the version of `type/id` a read returns (`data` is the whole new
    /// object, not a patch), if it is at `expected_version` and the subject may write its label.
    /// Fields classified above the subject (which it cannot see) are kept as they are. The event
    /// records only the top-level fields that changed (`set`) or disappeared (`unset`), which is
    /// what cross-node merge works on.
    ///
    /// # Errors
    /// [`FabricError::NotFound`], [`FabricError::Conflict`] (naming both versions),
    /// [`FabricError::WriteDenied`], [`FabricError::NotAnObject`],
    /// [`FabricError::EncryptedWriteDenied`], [`FabricError::BadMarker`], [`FabricError::Invalid`], and as
    /// [`get`](Self::get).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        type_name: &str,
        id: &str,
        expected_version: u64,
        data: Value,
    ) -> Result<ObjectView> {
        check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, type_name)?;
        check_id(id)?;
        let tname = def.name().to_string();
        let rows = self.read(|c| load_versions(c, tenant, &tname, id))?;
        let row = select(snap, subject, &rows)
            .ok_or_else(|| not_found(&def, id))?
            .clone();
        self.check_writable(snap, subject, &tname, id, &row, expected_version)?;
        let mut data = into_object(&def, data)?;
        for (k, v) in &row.data {
            if def
                .classification(k)
                .is_some_and(|c| !snap.can_read(subject, c))
            {
                data.insert(k.clone(), v.clone());
            }
        }
        let envelopes = if def.encrypted_fields().next().is_some() {
            self.read(|c| fields::load_envelopes(c, tenant, &tname, id, &row.label))?
        } else {
            BTreeMap::new()
        };
        let sealed = fields::seal(
            self.sealing.get(),
            tenant,
            snap,
            subject,
            &def,
            id,
            &mut data,
            Some((&row.data, &envelopes)),
        )?;
        let set: Map<String, Value> = data
            .iter()
            // A field sealed anew is a change even if its marker (key, version) is the same.
            .filter(|(k, v)| row.data.get(*k) != Some(*v) || sealed.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let unset: Vec<&String> = row.data.keys().filter(|k| !data.contains_key(*k)).collect();
        let mut payload = serde_json::json!({"type": tname, "id": id, "set": set, "unset": unset});
        fields::attach(&mut payload, sealed);
        let ev = NewEvent::new(
            kind(OBJECT_UPDATED)?,
            entity(&tname, id)?,
            event_label(&row.label)?,
            Payload::from_value(&payload)?,
        );
        self.append_checked(tenant, &tname, id, &row, ev)?
            .map(|r| view(&def, snap, subject, id, &r))
            .ok_or_else(|| corrupt("an updated object was not projected"))
    }

    /// Deletes the version of `type/id` a read returns, if it is at `expected_version` and the
    /// subject may write its label: an `object.deleted` tombstone event; nothing is erased from
    /// the log, and the history stays readable. A version of the id at a lower label (if any)
    /// becomes the one reads return.
    ///
    /// # Errors
    /// As [`update`](Self::update), without the data errors.
    pub fn delete(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        type_name: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<()> {
        check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, type_name)?;
        check_id(id)?;
        let tname = def.name().to_string();
        let rows = self.read(|c| load_versions(c, tenant, &tname, id))?;
        let row = select(snap, subject, &rows)
            .ok_or_else(|| not_found(&def, id))?
            .clone();
        self.check_writable(snap, subject, &tname, id, &row, expected_version)?;
        let payload = serde_json::json!({"type": tname, "id": id});
        let ev = NewEvent::new(
            kind(OBJECT_DELETED)?,
            entity(&tname, id)?,
            event_label(&row.label)?,
            Payload::from_value(&payload)?,
        );
        self.append_checked(tenant, &tname, id, &row, ev)?;
        Ok(())
    }

    fn check_writable(
        &self,
        snap: &PolicySnapshot,
        subject: &Subject,
        tname: &str,
        id: &str,
        row: &VersionRow,
        expected: u64,
    ) -> Result<()> {
        if row.version != expected {
            return Err(FabricError::Conflict {
                entity: format!("{tname}/{id}"),
                expected,
                actual: row.version,
            });
        }
        let writable = snap
            .label_scheme()
            .parse(&row.label)
            .is_ok_and(|l| snap.can_write(subject, l));
        if !writable {
            return Err(FabricError::WriteDenied {
                label: row.label.clone(),
            });
        }
        Ok(())
    }

    /// Appends `ev` about `row` if the row is still at the version read (else `Conflict`), and
    /// returns the row after it.
    fn append_checked(
        &self,
        tenant: &TenantId,
        tname: &str,
        id: &str,
        row: &VersionRow,
        ev: NewEvent,
    ) -> Result<Option<VersionRow>> {
        let mut out = None;
        self.log.append_with(tenant, vec![ev], |tx, evs| {
            for e in evs {
                out = apply::apply_object_checked(tx, tenant, e, |now| match now {
                    Some(n) if n.version == row.version && !n.deleted => Ok(()),
                    _ => Err(FabricError::Conflict {
                        entity: format!("{tname}/{id}"),
                        expected: row.version,
                        actual: now.map_or(0, |n| n.version),
                    }),
                })?;
            }
            Ok::<(), FabricError>(())
        })?;
        Ok(out)
    }

    /// One page of the objects of `query.type_name` a read returns (after the choice rule),
    /// filtered, sorted, and continued from `query.cursor`. See [`ListQuery`].
    ///
    /// # Errors
    /// [`FabricError::UnknownType`], [`FabricError::FilterNotIndexed`],
    /// [`FabricError::FilterEncrypted`], [`FabricError::FieldNotReadable`],
    /// [`FabricError::BadQuery`], [`FabricError::BadCursor`], [`FabricError::TenantMismatch`].
    pub fn list(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        query: &ListQuery,
    ) -> Result<Page> {
        check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, &query.type_name)?;
        query::list(self, tenant, snap, subject, &def, query)
    }

    /// How many objects of `type_name` a read returns that match `filter` (after the choice
    /// rule).
    ///
    /// # Errors
    /// As [`list`](Self::list), without the cursor and limit errors.
    pub fn count(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        type_name: &str,
        filter: &[Predicate],
    ) -> Result<u64> {
        check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, type_name)?;
        query::count(self, tenant, snap, subject, &def, filter)
    }

    /// The events of `type/id` at labels the subject may read (deleted versions included), in
    /// merge order `(lamport, node)`.
    ///
    /// # Errors
    /// [`FabricError::NotFound`] when no version of the id is readable by the subject, and as
    /// [`get`](Self::get).
    pub fn history(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        type_name: &str,
        id: &str,
    ) -> Result<Vec<HistoryEntry>> {
        check_subject(tenant, snap, subject)?;
        let def = self.require_type(tenant, snap, type_name)?;
        check_id(id)?;
        query::history(self, tenant, snap, subject, &def, id)
    }

    // ---- projections ---------------------------------------------------------------------------

    /// Ingests events from peers through [`SqliteEventLog::ingest_with`] and applies the events
    /// the log applied to the projections in the same transaction. Remote events are applied as
    /// data, whatever the local subject or policy (policy-based quarantine of remote data comes
    /// with sync import); object updates merge per top-level field by `(lamport, node_id)`.
    ///
    /// # Errors
    /// [`FabricError::Log`]; nothing of the call is kept then.
    pub fn ingest(&self, tenant: &TenantId, events: Vec<Event>) -> Result<FabricIngestReport> {
        let mut unprojected = Vec::new();
        let projectors = self.projectors.read().clone();
        let log = self.log.ingest_with(tenant, events, |tx, report| {
            for e in &report.applied {
                let mut ok = apply::apply_event(tx, tenant, e)?;
                for p in &projectors {
                    ok &= project(p.as_ref(), tx, tenant, e)?;
                }
                if !ok {
                    unprojected.push(e.event_ref());
                }
            }
            Ok::<(), FabricError>(())
        })?;
        Ok(FabricIngestReport { log, unprojected })
    }

    /// Drops the tenant's projections and replays its log into them, in one transaction. The
    /// result equals the live projections (a proptest checks it).
    ///
    /// # Errors
    /// [`FabricError::Log`]; nothing changes then.
    pub fn rebuild(&self, tenant: &TenantId) -> Result<()> {
        let projectors = self.projectors.read().clone();
        self.log.rebuild_with(
            tenant,
            |tx| {
                let theirs = projectors.iter().flat_map(|p| p.tables().iter().copied());
                for table in PROJECTION_TABLES.into_iter().chain(theirs) {
                    tx.execute(
                        &format!(
                            "DELETE FROM \"{}\" WHERE tenant = ?1",
                            table.replace('"', "\"\"")
                        ),
                        [tenant.as_str()],
                    )?;
                }
                Ok::<(), FabricError>(())
            },
            |tx, e| {
                apply::apply_event(tx, tenant, e)?;
                for p in &projectors {
                    project(p.as_ref(), tx, tenant, e)?;
                }
                Ok(())
            },
        )
    }

    /// Every projection row of the tenant as text, table by table (in [`PROJECTION_TABLES`]
    /// order) and by primary key: for comparing projections (tests, diagnostics). Contains data
    /// at every label: never show it to a subject.
    ///
    /// # Errors
    /// [`FabricError::Log`].
    pub fn projection_rows(&self, tenant: &TenantId) -> Result<Vec<String>> {
        self.read(|c| {
            let mut out = Vec::new();
            for table in PROJECTION_TABLES {
                let n = c
                    .prepare(&format!("SELECT * FROM {table} LIMIT 0"))?
                    .column_count();
                let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
                let mut stmt = c.prepare(&format!(
                    "SELECT * FROM {table} WHERE tenant = ?1 ORDER BY {}",
                    order.join(", ")
                ))?;
                let mut rows = stmt.query([tenant.as_str()])?;
                while let Some(r) = rows.next()? {
                    let mut line = format!("{table}:");
                    for i in 0..n {
                        let v: rusqlite::types::Value = r.get(i)?;
                        line.push_str(&format!(" {v:?}"));
                    }
                    out.push(line);
                }
            }
            Ok(out)
        })
    }
}

fn project(p: &dyn Projector, tx: &Connection, tenant: &TenantId, e: &Event) -> Result<bool> {
    p.apply(tx, tenant, e)
        .map_err(|reason| FabricError::Projector {
            projector: p.name().to_owned(),
            reason,
        })
}

fn not_found(def: &TypeDef, id: &str) -> FabricError {
    FabricError::NotFound {
        type_name: def.name().to_string(),
        id: id.to_owned(),
    }
}
