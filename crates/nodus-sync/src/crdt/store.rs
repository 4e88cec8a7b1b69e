//! [`AutomergeStore`]: the default [`CrdtStore`] over a [`SqliteEventLog`], and [`apply_event`].

use std::collections::HashMap;
use std::sync::Arc;

use automerge::transaction::CommitOptions;
use automerge::{
    ActorId, Automerge, Change, ChangeHash, LoadOptions, OnPartialLoad, ROOT, ReadDoc,
};
use base64::Engine as _;
use nodus_fabric::objects::choice_key;
use nodus_fabric::{
    EntityId, Event, EventKind, EventLabel, EventRef, IngestReport, NewEvent, Payload,
    SqliteEventLog, TenantEventLog,
};
use nodus_policy::{PolicySnapshot, Subject, TenantId};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::ops::{apply_op, materialise, write_map};
use super::{
    ChangeOutcome, CrdtError, CrdtLimits, CrdtStore, DOC_CHANGED, DOC_CREATED, Delta, DeltaForm,
    DeltaOutcome, DocEventKind, DocHistoryEntry, DocOp, DocPayload, DocSummary, DocView,
    ENTITY_PREFIX, MAX_DEPTH, MAX_ID_LEN, MAX_TYPE_LEN,
};

type Result<T, E = CrdtError> = std::result::Result<T, E>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS crdt_docs (
    tenant   TEXT NOT NULL,
    id       TEXT NOT NULL,
    label    TEXT NOT NULL,
    doc_type TEXT NOT NULL,
    saved    BLOB NOT NULL,
    incr_len INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    heads    TEXT NOT NULL,
    UNIQUE (tenant, id, label)
);
CREATE TABLE IF NOT EXISTS crdt_incr (
    tenant TEXT NOT NULL,
    id     TEXT NOT NULL,
    label  TEXT NOT NULL,
    n      INTEGER NOT NULL,
    bytes  BLOB NOT NULL,
    PRIMARY KEY (tenant, id, label, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS crdt_queue (
    tenant   TEXT NOT NULL,
    id       TEXT NOT NULL,
    label    TEXT NOT NULL,
    hash     TEXT NOT NULL,
    doc_type TEXT NOT NULL,
    bytes    BLOB NOT NULL,
    PRIMARY KEY (tenant, id, label, hash)
);
CREATE TABLE IF NOT EXISTS crdt_history (
    tenant      TEXT NOT NULL,
    id          TEXT NOT NULL,
    label       TEXT NOT NULL,
    lamport     INTEGER NOT NULL,
    node_id     TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    changes     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    PRIMARY KEY (tenant, id, label, node_id, incarnation, seq)
);
";

/// Incremental bytes below which a document is never compacted: compacting (`save()`) costs
/// about as much as loading the whole document, so small documents under heavy editing would
/// otherwise be re-saved every few changes.
const COMPACT_FLOOR: u64 = 32 * 1024;

/// Whether a document whose compacted part has `saved` bytes and whose incremental changes
/// would have `incr` bytes is compacted.
fn compact_due(saved: u64, incr: u64) -> bool {
    incr > saved.max(COMPACT_FLOOR)
}

/// How many loaded documents the store keeps in memory (beyond that, one is evicted).
const CACHE_DOCS: usize = 64;
/// How many times a change is retried when the document changed between its read and its write.
const ATTEMPTS: usize = 4;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What [`AutomergeStore::ingest`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrdtIngestReport {
    /// The event log's report.
    pub log: IngestReport,
    /// Applied document events whose payload is not a well-formed document payload: kept in the
    /// log, no effect on the projection.
    pub unprojected: Vec<EventRef>,
}

type DocKey = (TenantId, String, String);

struct Cached {
    heads: String,
    doc: Automerge,
}

/// The default [`CrdtStore`]: automerge documents projected into the database of a
/// [`SqliteEventLog`] ([`CRDT_TABLES`](super::CRDT_TABLES)).
///
/// A document is stored as its compacted `save()` plus the change chunks appended since (rows of
/// `crdt_incr`); when those grow larger than both the compacted part and 32 KiB, the document is
/// compacted again.
/// Documents are loaded lazily and up to 64 loaded documents are kept in memory, each checked
/// against the stored heads before use. The automerge actor of local changes is the log's node id
/// and incarnation (32 bytes).
pub struct AutomergeStore {
    log: Arc<SqliteEventLog>,
    limits: CrdtLimits,
    actor: ActorId,
    cache: Mutex<HashMap<DocKey, Cached>>,
}

impl std::fmt::Debug for AutomergeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutomergeStore")
            .field("log", &self.log)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One stored version of a document, without its bytes.
#[derive(Clone, Debug)]
struct Meta {
    label: String,
    doc_type: String,
    heads: String,
    size: u64,
    saved_len: u64,
    incr_len: u64,
}

fn check_id(id: &str) -> Result<()> {
    let bad = |reason| Err(CrdtError::InvalidId { reason });
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return bad("an id has 1 to 128 bytes");
    }
    if id.chars().any(char::is_control) {
        return bad("an id has no control characters");
    }
    Ok(())
}

fn check_type(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= MAX_TYPE_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CrdtError::InvalidType {
            reason: "a type has 1 to 64 bytes of `A-Z a-z 0-9 _ . -`",
        })
    }
}

fn check_subject(tenant: &TenantId, snap: &PolicySnapshot, subject: &Subject) -> Result<()> {
    if subject.tenant() != tenant {
        return Err(CrdtError::TenantMismatch);
    }
    if subject.scheme() != snap.label_scheme().id() {
        return Err(CrdtError::StaleSubject);
    }
    Ok(())
}

fn not_found(id: &str) -> CrdtError {
    CrdtError::NotFound { id: id.to_owned() }
}

fn corrupt(id: &str) -> CrdtError {
    CrdtError::Corrupt { id: id.to_owned() }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn len64(b: &[u8]) -> u64 {
    u64::try_from(b.len()).unwrap_or(u64::MAX)
}

fn sorted_heads(heads: &[ChangeHash]) -> Vec<String> {
    let mut out: Vec<String> = heads.iter().map(ToString::to_string).collect();
    out.sort();
    out
}

fn heads_text(doc: &Automerge) -> String {
    sorted_heads(&doc.get_heads()).join(",")
}

fn split_heads(text: &str) -> Vec<String> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::to_owned).collect()
    }
}

fn load_metas(conn: &Connection, tenant: &TenantId, id: &str) -> Result<Vec<Meta>> {
    let mut stmt = conn.prepare_cached(
        "SELECT label, doc_type, heads, size, length(saved), incr_len FROM crdt_docs
         WHERE tenant = ?1 AND id = ?2 ORDER BY label",
    )?;
    let rows = stmt.query_map([tenant.as_str(), id], |r| {
        Ok(Meta {
            label: r.get(0)?,
            doc_type: r.get(1)?,
            heads: r.get(2)?,
            size: to_u64(r.get(3)?),
            saved_len: to_u64(r.get(4)?),
            incr_len: to_u64(r.get(5)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The version a subject reads: the highest [`choice_key`] among the labels it may read.
fn select<'m>(snap: &PolicySnapshot, subject: &Subject, metas: &'m [Meta]) -> Option<&'m Meta> {
    let scheme = snap.label_scheme();
    metas
        .iter()
        .filter_map(|m| {
            let label = scheme.parse(&m.label).ok()?;
            snap.can_read(subject, label)
                .then(|| (choice_key(scheme, label), m))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, m)| m)
}

fn load_doc(conn: &Connection, tenant: &TenantId, id: &str, label: &str) -> Result<Automerge> {
    let saved: Vec<u8> = conn
        .prepare_cached("SELECT saved FROM crdt_docs WHERE tenant = ?1 AND id = ?2 AND label = ?3")?
        .query_row([tenant.as_str(), id, label], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found(id))?;
    let incr = load_incr(conn, tenant, id, label)?;
    let mut doc = Automerge::load(&saved).map_err(|_| corrupt(id))?;
    if !incr.is_empty() {
        doc.load_incremental(&incr).map_err(|_| corrupt(id))?;
    }
    Ok(doc)
}

fn current_heads(conn: &Connection, tenant: &TenantId, id: &str, label: &str) -> Result<String> {
    conn.prepare_cached("SELECT heads FROM crdt_docs WHERE tenant = ?1 AND id = ?2 AND label = ?3")?
        .query_row([tenant.as_str(), id, label], |r| r.get::<_, String>(0))
        .optional()?
        .ok_or_else(|| CrdtError::Busy { id: id.to_owned() })
}

/// The incremental change chunks of a document, concatenated in the order they were stored.
fn load_incr(conn: &Connection, tenant: &TenantId, id: &str, label: &str) -> Result<Vec<u8>> {
    let mut stmt = conn.prepare_cached(
        "SELECT bytes FROM crdt_incr WHERE tenant = ?1 AND id = ?2 AND label = ?3 ORDER BY n",
    )?;
    let mut rows = stmt.query([tenant.as_str(), id, label])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let b: Vec<u8> = r.get(0)?;
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// Writes the document as compacted `saved` (no incremental chunks).
#[allow(clippy::too_many_arguments)]
fn upsert_doc(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    label: &str,
    doc_type: &str,
    saved: &[u8],
    heads: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO crdt_docs (tenant, id, label, doc_type, saved, incr_len, size, heads)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)
         ON CONFLICT (tenant, id, label) DO UPDATE SET doc_type = excluded.doc_type,
           saved = excluded.saved, incr_len = 0, size = excluded.size, heads = excluded.heads",
    )?
    .execute(rusqlite::params![
        tenant.as_str(),
        id,
        label,
        doc_type,
        saved,
        to_i64(len64(saved)),
        heads
    ])?;
    conn.prepare_cached("DELETE FROM crdt_incr WHERE tenant = ?1 AND id = ?2 AND label = ?3")?
        .execute([tenant.as_str(), id, label])?;
    Ok(())
}

fn append_incr(
    conn: &Connection,
    tenant: &TenantId,
    id: &str,
    label: &str,
    bytes: &[u8],
    heads: &str,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO crdt_incr (tenant, id, label, n, bytes)
         VALUES (?1, ?2, ?3, (SELECT coalesce(max(n), 0) + 1 FROM crdt_incr
                              WHERE tenant = ?1 AND id = ?2 AND label = ?3), ?4)",
    )?
    .execute(rusqlite::params![tenant.as_str(), id, label, bytes])?;
    conn.prepare_cached(
        "UPDATE crdt_docs SET incr_len = incr_len + ?4, size = size + ?4, heads = ?5
         WHERE tenant = ?1 AND id = ?2 AND label = ?3",
    )?
    .execute(rusqlite::params![
        tenant.as_str(),
        id,
        label,
        to_i64(len64(bytes)),
        heads
    ])?;
    Ok(())
}

fn insert_history(
    conn: &Connection,
    e: &Event,
    id: &str,
    kind: DocEventKind,
    changes: &[Change],
) -> Result<()> {
    let hashes: Vec<String> = changes.iter().map(|c| c.hash().to_string()).collect();
    let bytes: u64 = changes.iter().map(|c| len64(c.raw_bytes())).sum();
    let kind = match kind {
        DocEventKind::Created => DOC_CREATED,
        DocEventKind::Changed => DOC_CHANGED,
    };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO crdt_history
         (tenant, id, label, lamport, node_id, incarnation, seq, kind, changes, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(rusqlite::params![
        e.tenant.as_str(),
        id,
        e.label.as_str(),
        to_i64(e.lamport),
        e.node_id.to_string(),
        e.incarnation.to_string(),
        to_i64(e.seq),
        kind,
        hashes.join(","),
        to_i64(bytes)
    ])?;
    Ok(())
}

fn doc_event(
    kind: &str,
    id: &str,
    label: &str,
    doc_type: &str,
    changes: &[Change],
) -> Result<NewEvent> {
    let payload = DocPayload {
        id: id.to_owned(),
        doc_type: doc_type.to_owned(),
        changes: changes.iter().map(|c| B64.encode(c.raw_bytes())).collect(),
    };
    let value = serde_json::to_value(&payload).map_err(|_| corrupt(id))?;
    Ok(NewEvent::new(
        EventKind::new(kind).map_err(|_| corrupt(id))?,
        EntityId::new(format!("{ENTITY_PREFIX}{id}")).map_err(|_| CrdtError::InvalidId {
            reason: "an id has 1 to 128 bytes",
        })?,
        EventLabel::new(label).map_err(|e| CrdtError::BadLabel {
            reason: e.to_string(),
        })?,
        Payload::from_value(&value)?,
    ))
}

/// The document event kinds, parsed.
fn event_kind(e: &Event) -> Option<DocEventKind> {
    match e.kind.as_str() {
        DOC_CREATED => Some(DocEventKind::Created),
        DOC_CHANGED => Some(DocEventKind::Changed),
        _ => None,
    }
}

/// A document event's payload and changes, when well formed.
fn decode_event(e: &Event) -> Option<(DocPayload, Vec<Change>)> {
    let p: DocPayload = serde_json::from_value(e.payload.to_value().ok()?).ok()?;
    if e.entity.as_str().strip_prefix(ENTITY_PREFIX) != Some(p.id.as_str())
        || check_id(&p.id).is_err()
        || check_type(&p.doc_type).is_err()
    {
        return None;
    }
    let mut changes = Vec::with_capacity(p.changes.len());
    for c in &p.changes {
        let bytes = B64.decode(c).ok()?;
        changes.push(Change::from_bytes(bytes).ok()?);
    }
    Some((p, changes))
}

/// Applies a document event (`doc.created` / `doc.changed`) of `tenant` to the projection on
/// `conn` (normally inside the log's transaction: [`SqliteEventLog::ingest_with`] or
/// [`rebuild_with`](SqliteEventLog::rebuild_with)): loads the document at the event's label,
/// applies the event's changes and saves it. Changes whose dependencies have not arrived yet are
/// kept in `crdt_queue` and applied when they do, so the result does not depend on the order of
/// arrival; a change already present is skipped.
///
/// Returns `Ok(true)` when the event was applied or is not a document event (left untouched), and
/// `Ok(false)` for a document event whose payload is not well formed (nothing written).
///
/// # Errors
/// [`CrdtError::Log`] on a storage error, [`CrdtError::Corrupt`] when the stored document does not
/// load.
pub fn apply_event(conn: &Connection, tenant: &TenantId, e: &Event) -> Result<bool, CrdtError> {
    let Some(kind) = event_kind(e) else {
        return Ok(true);
    };
    if &e.tenant != tenant {
        return Ok(false);
    }
    let Some((p, changes)) = decode_event(e) else {
        return Ok(false);
    };
    let (id, label) = (p.id.as_str(), e.label.as_str());
    let row: Option<(Vec<u8>, i64, String)> = conn
        .prepare_cached(
            "SELECT saved, incr_len, doc_type FROM crdt_docs WHERE tenant = ?1 AND id = ?2 AND label = ?3",
        )?
        .query_row([tenant.as_str(), id, label], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let existed = row.is_some();
    let (mut doc, saved_len, incr_len, stored_type) = match row {
        Some((saved, incr_len, t)) => {
            let mut doc = Automerge::load(&saved).map_err(|_| corrupt(id))?;
            let incr = load_incr(conn, tenant, id, label)?;
            if !incr.is_empty() {
                doc.load_incremental(&incr).map_err(|_| corrupt(id))?;
            }
            (doc, len64(&saved), to_u64(incr_len), t)
        }
        None => (Automerge::new(), 0, 0, p.doc_type.clone()),
    };
    let mut doc_type = stored_type.clone();
    if p.doc_type < doc_type {
        doc_type.clone_from(&p.doc_type);
    }
    let mut queued: Vec<(bool, Change)> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT bytes, doc_type FROM crdt_queue WHERE tenant = ?1 AND id = ?2 AND label = ?3 ORDER BY hash",
        )?;
        let mut rows = stmt.query([tenant.as_str(), id, label])?;
        while let Some(r) = rows.next()? {
            let bytes: Vec<u8> = r.get(0)?;
            let t: String = r.get(1)?;
            if t < doc_type {
                doc_type = t;
            }
            queued.push((true, Change::from_bytes(bytes).map_err(|_| corrupt(id))?));
        }
    }
    for c in changes.iter() {
        if doc.get_change_by_hash(&c.hash()).is_none()
            && !queued.iter().any(|(_, q)| q.hash() == c.hash())
        {
            queued.push((false, c.clone()));
        }
    }
    let incoming: Vec<Change> = queued.iter().map(|(_, c)| c.clone()).collect();
    if doc.apply_changes(incoming).is_err() {
        return Ok(false);
    }
    let mut added: Vec<u8> = Vec::new();
    for (was_queued, c) in &queued {
        let hash = c.hash().to_string();
        if doc.get_change_by_hash(&c.hash()).is_some() {
            added.extend_from_slice(c.raw_bytes());
            if *was_queued {
                conn.prepare_cached(
                    "DELETE FROM crdt_queue WHERE tenant = ?1 AND id = ?2 AND label = ?3 AND hash = ?4",
                )?
                .execute([tenant.as_str(), id, label, hash.as_str()])?;
            }
        } else if !*was_queued {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO crdt_queue (tenant, id, label, hash, doc_type, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(rusqlite::params![
                tenant.as_str(),
                id,
                label,
                hash,
                p.doc_type,
                c.raw_bytes()
            ])?;
        }
    }
    insert_history(conn, e, id, kind, &changes)?;
    if added.is_empty() && !existed {
        return Ok(true);
    }
    let heads = heads_text(&doc);
    if !existed || compact_due(saved_len, incr_len.saturating_add(len64(&added))) {
        upsert_doc(conn, tenant, id, label, &doc_type, &doc.save(), &heads)?;
        return Ok(true);
    }
    if !added.is_empty() {
        append_incr(conn, tenant, id, label, &added, &heads)?;
    }
    if doc_type != stored_type {
        conn.prepare_cached(
            "UPDATE crdt_docs SET doc_type = ?4 WHERE tenant = ?1 AND id = ?2 AND label = ?3",
        )?
        .execute([tenant.as_str(), id, label, doc_type.as_str()])?;
    }
    Ok(true)
}

/// The [`Projector`](nodus_fabric::objects::Projector) that keeps the documents of an
/// [`AutomergeStore`] current when a [`Fabric`](nodus_fabric::objects::Fabric) over the same log
/// ingests remote events (live sync, bundle activation) or rebuilds its projections: it applies
/// every document event with [`apply_event`] in the fabric's transaction, and a rebuild clears
/// [`CRDT_TABLES`](super::CRDT_TABLES) first. Get it from [`AutomergeStore::projector`] (the
/// store creates the tables it writes).
#[derive(Clone, Copy, Debug, Default)]
pub struct CrdtProjector {
    _tables_exist: (),
}

impl nodus_fabric::objects::Projector for CrdtProjector {
    fn name(&self) -> &str {
        "crdt"
    }
    fn tables(&self) -> &[&str] {
        super::CRDT_TABLES
    }
    fn apply(
        &self,
        conn: &Connection,
        tenant: &TenantId,
        event: &Event,
    ) -> std::result::Result<bool, String> {
        apply_event(conn, tenant, event).map_err(|e| e.to_string())
    }
}

/// How a change's projection write is done.
enum Write {
    /// Replace the stored document with this compacted one.
    Compact(Vec<u8>),
    /// Append these change bytes to `incr`.
    Append(Vec<u8>),
}

impl AutomergeStore {
    /// A store over `log` with default [`CrdtLimits`], creating its tables in the log's database
    /// if needed.
    ///
    /// # Errors
    /// [`CrdtError::Log`] when the tables cannot be created.
    pub fn new(log: Arc<SqliteEventLog>) -> Result<AutomergeStore> {
        AutomergeStore::with_limits(log, CrdtLimits::default())
    }

    /// A store over `log` whose gates are `limits` (overridden by the policy's `crdt.*` keys when
    /// the schema declares them: [`CrdtLimits::with_policy`]).
    ///
    /// # Errors
    /// [`CrdtError::Log`] when the tables cannot be created.
    pub fn with_limits(log: Arc<SqliteEventLog>, limits: CrdtLimits) -> Result<AutomergeStore> {
        log.read_projection(|c| c.execute_batch(SCHEMA))?;
        let node = log.node();
        let mut actor = Vec::with_capacity(32);
        actor.extend_from_slice(node.node_id.as_bytes());
        actor.extend_from_slice(node.incarnation.as_bytes());
        Ok(AutomergeStore {
            log,
            limits,
            actor: ActorId::from(actor),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The [`CrdtProjector`] to add to a [`Fabric`](nodus_fabric::objects::Fabric) over this
    /// store's log ([`Fabric::add_projector`](nodus_fabric::objects::Fabric::add_projector)), so
    /// that the fabric's `ingest` and `rebuild` keep the documents current.
    pub fn projector(&self) -> Arc<dyn nodus_fabric::objects::Projector> {
        Arc::new(CrdtProjector { _tables_exist: () })
    }

    /// The log under this store.
    pub fn log(&self) -> &Arc<SqliteEventLog> {
        &self.log
    }

    /// The configured limits (before the policy's keys).
    pub fn limits(&self) -> &CrdtLimits {
        &self.limits
    }

    /// Ingests remote events like [`SqliteEventLog::ingest_with`], applying the document events
    /// among the applied ones with [`apply_event`] in the same transaction.
    ///
    /// # Errors
    /// [`CrdtError::Log`], [`CrdtError::Corrupt`]; nothing of the call is kept.
    pub fn ingest(&self, tenant: &TenantId, events: Vec<Event>) -> Result<CrdtIngestReport> {
        let mut unprojected = Vec::new();
        let log = self.log.ingest_with(tenant, events, |tx, report| {
            for e in &report.applied {
                if !apply_event(tx, tenant, e)? {
                    unprojected.push(e.event_ref());
                }
            }
            Ok::<(), CrdtError>(())
        })?;
        Ok(CrdtIngestReport { log, unprojected })
    }

    /// Rebuilds the documents of `tenant` from the log: clears its rows of
    /// [`CRDT_TABLES`](super::CRDT_TABLES) and applies every event with [`apply_event`], in one
    /// transaction.
    ///
    /// # Errors
    /// [`CrdtError::Log`], [`CrdtError::Corrupt`]; nothing is kept on error.
    pub fn rebuild(&self, tenant: &TenantId) -> Result<()> {
        self.cache.lock().retain(|k, _| &k.0 != tenant);
        self.log.rebuild_with(
            tenant,
            |tx| {
                for table in super::CRDT_TABLES {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE tenant = ?1"),
                        [tenant.as_str()],
                    )?;
                }
                Ok::<(), CrdtError>(())
            },
            |tx, e| apply_event(tx, tenant, e).map(|_| ()),
        )
    }

    fn limits_for(&self, snap: &PolicySnapshot) -> CrdtLimits {
        self.limits.with_policy(snap)
    }

    /// The selected version of `id` for the subject.
    fn selected(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
    ) -> Result<Meta> {
        check_subject(tenant, snap, subject)?;
        check_id(id)?;
        let metas = self.log.read_projection(|c| load_metas(c, tenant, id))?;
        select(snap, subject, &metas)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// The selected version, which the subject must also be allowed to write and whose type must
    /// be allowed.
    fn writable(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        limits: &CrdtLimits,
    ) -> Result<Meta> {
        let meta = self.selected(tenant, snap, subject, id)?;
        if !limits.allows(&meta.doc_type) {
            return Err(CrdtError::TypeNotAllowed {
                doc_type: meta.doc_type,
            });
        }
        let label = snap
            .label_scheme()
            .parse(&meta.label)
            .map_err(|_| not_found(id))?;
        if !snap.can_write(subject, label) {
            return Err(CrdtError::WriteDenied {
                id: id.to_owned(),
                label: meta.label,
            });
        }
        Ok(meta)
    }

    /// The loaded document of a version: from the cache when its heads are current, else from
    /// the database. The caller puts it back with [`Self::keep`].
    fn take_doc(&self, tenant: &TenantId, id: &str, meta: &Meta) -> Result<Automerge> {
        let key = (tenant.clone(), id.to_owned(), meta.label.clone());
        let cached = self.cache.lock().remove(&key);
        if let Some(c) = cached
            && c.heads == meta.heads
        {
            return Ok(c.doc);
        }
        let mut doc = self
            .log
            .read_projection(|c| load_doc(c, tenant, id, &meta.label))?;
        doc.set_actor(self.actor.clone());
        Ok(doc)
    }

    fn keep(&self, tenant: &TenantId, id: &str, label: &str, heads: String, doc: Automerge) {
        let key = (tenant.clone(), id.to_owned(), label.to_owned());
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_DOCS && !cache.contains_key(&key) {
            let victim = cache.keys().next().cloned();
            if let Some(v) = victim {
                cache.remove(&v);
            }
        }
        cache.insert(key, Cached { heads, doc });
    }

    /// `change` and `change_batch`: each group of ops is one automerge transaction (one change),
    /// and every change the groups made is recorded in one `doc.changed` event. An op's index in
    /// [`CrdtError::BadOp`] counts the ops of all groups in order. On any error nothing is
    /// written, and a document holding changes that were not stored is not kept in the cache.
    fn change_groups(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        groups: &[&[DocOp]],
    ) -> Result<ChangeOutcome> {
        let limits = self.limits_for(snap);
        for _ in 0..ATTEMPTS {
            let meta = self.writable(tenant, snap, subject, id, &limits)?;
            let mut doc = self.take_doc(tenant, id, &meta)?;
            let before = doc.get_heads();
            let mut hashes: Vec<ChangeHash> = Vec::new();
            let mut base = 0usize;
            for ops in groups {
                let result = doc.transact(|tx| {
                    for (i, op) in ops.iter().enumerate() {
                        apply_op(tx, op).map_err(|reason| (base.saturating_add(i), reason))?;
                    }
                    Ok::<(), (usize, &'static str)>(())
                });
                match result {
                    Ok(s) => hashes.extend(s.hash),
                    Err(f) => {
                        let (index, reason) = f.error;
                        if hashes.is_empty() {
                            self.keep(tenant, id, &meta.label, meta.heads.clone(), doc);
                        }
                        return Err(CrdtError::BadOp {
                            id: id.to_owned(),
                            index,
                            reason,
                        });
                    }
                }
                base = base.saturating_add(ops.len());
            }
            if hashes.is_empty() {
                let heads = split_heads(&meta.heads);
                self.keep(tenant, id, &meta.label, meta.heads.clone(), doc);
                return Ok(ChangeOutcome {
                    label: meta.label,
                    changes: Vec::new(),
                    heads,
                });
            }
            // One pass over the document for all the new changes: automerge rebuilds a change
            // from its op set, so asking hash by hash costs a pass each.
            let new = if hashes.len() == 1 {
                let h = hashes.first().ok_or_else(|| corrupt(id))?;
                vec![doc.get_change_by_hash(h).ok_or_else(|| corrupt(id))?]
            } else {
                doc.get_changes(&before)
            };
            if new.len() != hashes.len() {
                return Err(corrupt(id));
            }
            let write = Self::plan_write(id, &meta, &doc, &new, limits.max_doc_bytes)?;
            match self.record(tenant, id, &meta, &doc, &new, write) {
                Ok(heads) => {
                    let out = ChangeOutcome {
                        label: meta.label.clone(),
                        changes: hashes.iter().map(ToString::to_string).collect(),
                        heads: split_heads(&heads),
                    };
                    self.keep(tenant, id, &meta.label, heads, doc);
                    return Ok(out);
                }
                Err(CrdtError::Busy { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(CrdtError::Busy { id: id.to_owned() })
    }

    /// Decides how to store `new` changes on top of `meta`, enforcing the size cap.
    fn plan_write(
        id: &str,
        meta: &Meta,
        doc: &Automerge,
        new: &[Change],
        max: u64,
    ) -> Result<Write> {
        let bytes: Vec<u8> = new.iter().flat_map(|c| c.raw_bytes().to_vec()).collect();
        let incr = meta.incr_len.saturating_add(len64(&bytes));
        let size = meta.saved_len.saturating_add(incr);
        if compact_due(meta.saved_len, incr) || size > max {
            let full = doc.save();
            if len64(&full) > max {
                return Err(CrdtError::TooLarge {
                    id: id.to_owned(),
                    size: len64(&full),
                    max,
                });
            }
            Ok(Write::Compact(full))
        } else {
            Ok(Write::Append(bytes))
        }
    }

    /// Appends one `doc.changed` event for `new` and writes the projection, if the stored heads
    /// are still `meta.heads` (else [`CrdtError::Busy`]).
    fn record(
        &self,
        tenant: &TenantId,
        id: &str,
        meta: &Meta,
        doc: &Automerge,
        new: &[Change],
        write: Write,
    ) -> Result<String> {
        let heads = heads_text(doc);
        let event = doc_event(DOC_CHANGED, id, &meta.label, &meta.doc_type, new)?;
        self.log.append_with(tenant, vec![event], |tx, appended| {
            if current_heads(tx, tenant, id, &meta.label)? != meta.heads {
                return Err(CrdtError::Busy { id: id.to_owned() });
            }
            match &write {
                Write::Compact(full) => {
                    upsert_doc(tx, tenant, id, &meta.label, &meta.doc_type, full, &heads)?;
                }
                Write::Append(bytes) => append_incr(tx, tenant, id, &meta.label, bytes, &heads)?,
            }
            for e in appended {
                insert_history(tx, e, id, DocEventKind::Changed, new)?;
            }
            Ok(())
        })?;
        Ok(heads)
    }
}

impl CrdtStore for AutomergeStore {
    fn create(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        doc_type: &str,
        id: &str,
        label: &str,
        initial: &Value,
    ) -> Result<DocView> {
        check_subject(tenant, snap, subject)?;
        check_id(id)?;
        check_type(doc_type)?;
        let limits = self.limits_for(snap);
        if !limits.allows(doc_type) {
            return Err(CrdtError::TypeNotAllowed {
                doc_type: doc_type.to_owned(),
            });
        }
        let scheme = snap.label_scheme();
        let parsed = scheme.parse(label).map_err(|e| CrdtError::BadLabel {
            reason: e.to_string(),
        })?;
        let label = EventLabel::from_label(scheme, parsed).to_string();
        if !(snap.can_read(subject, parsed) && snap.can_write(subject, parsed)) {
            return Err(CrdtError::WriteDenied {
                id: id.to_owned(),
                label,
            });
        }
        let Value::Object(map) = initial else {
            return Err(CrdtError::NotAnObject { id: id.to_owned() });
        };
        let mut doc = Automerge::new().with_actor(self.actor.clone());
        let hash = match doc.transact(|tx| write_map(tx, &ROOT, map, 1)) {
            Ok(s) => s.hash,
            Err(f) => {
                return Err(CrdtError::BadOp {
                    id: id.to_owned(),
                    index: 0,
                    reason: f.error,
                });
            }
        };
        let hash = match hash {
            Some(h) => h,
            None => doc.empty_commit(CommitOptions::default()),
        };
        let change = doc.get_change_by_hash(&hash).ok_or_else(|| corrupt(id))?;
        let saved = doc.save();
        if len64(&saved) > limits.max_doc_bytes {
            return Err(CrdtError::TooLarge {
                id: id.to_owned(),
                size: len64(&saved),
                max: limits.max_doc_bytes,
            });
        }
        let heads = heads_text(&doc);
        let changes = [change];
        let event = doc_event(DOC_CREATED, id, &label, doc_type, &changes)?;
        self.log.append_with(tenant, vec![event], |tx, appended| {
            let exists: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM crdt_docs WHERE tenant = ?1 AND id = ?2 AND label = ?3)",
                )?
                .query_row([tenant.as_str(), id, label.as_str()], |r| r.get(0))?;
            if exists {
                return Err(CrdtError::AlreadyExists {
                    id: id.to_owned(),
                    label: label.clone(),
                });
            }
            upsert_doc(tx, tenant, id, &label, doc_type, &saved, &heads)?;
            for e in appended {
                insert_history(tx, e, id, DocEventKind::Created, &changes)?;
            }
            Ok(())
        })?;
        let content = materialise(&doc).ok_or_else(|| CrdtError::TooDeep {
            id: id.to_owned(),
            max: MAX_DEPTH,
        })?;
        let view = DocView {
            id: id.to_owned(),
            doc_type: doc_type.to_owned(),
            label: label.clone(),
            content,
            heads: split_heads(&heads),
        };
        self.keep(tenant, id, &label, heads, doc);
        Ok(view)
    }

    fn change(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        ops: &[DocOp],
    ) -> Result<ChangeOutcome> {
        self.change_groups(tenant, snap, subject, id, &[ops])
    }

    fn change_batch(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        batch: &[Vec<DocOp>],
    ) -> Result<ChangeOutcome> {
        let groups: Vec<&[DocOp]> = batch.iter().map(Vec::as_slice).collect();
        self.change_groups(tenant, snap, subject, id, &groups)
    }

    fn get(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
    ) -> Result<DocView> {
        let meta = self.selected(tenant, snap, subject, id)?;
        let doc = self.take_doc(tenant, id, &meta)?;
        let content = materialise(&doc);
        let heads = heads_text(&doc);
        self.keep(tenant, id, &meta.label, heads.clone(), doc);
        Ok(DocView {
            id: id.to_owned(),
            doc_type: meta.doc_type,
            label: meta.label,
            content: content.ok_or_else(|| CrdtError::TooDeep {
                id: id.to_owned(),
                max: MAX_DEPTH,
            })?,
            heads: split_heads(&heads),
        })
    }

    fn list(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        doc_type: Option<&str>,
    ) -> Result<Vec<DocSummary>> {
        check_subject(tenant, snap, subject)?;
        let rows: Vec<(String, Meta)> = self.log.read_projection(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, label, doc_type, heads, size FROM crdt_docs WHERE tenant = ?1 ORDER BY id, label",
            )?;
            let rows = stmt.query_map([tenant.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Meta {
                        label: r.get(1)?,
                        doc_type: r.get(2)?,
                        heads: r.get(3)?,
                        size: to_u64(r.get(4)?),
                        saved_len: 0,
                        incr_len: 0,
                    },
                ))
            })?;
            Ok::<_, CrdtError>(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let mut out = Vec::new();
        let mut rest = rows.as_slice();
        while let Some((first, _)) = rest.first() {
            let n = rest.iter().take_while(|(i, _)| i == first).count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let metas: Vec<Meta> = group.iter().map(|(_, m)| m.clone()).collect();
            if let Some(m) = select(snap, subject, &metas)
                && doc_type.is_none_or(|t| t == m.doc_type)
            {
                out.push(DocSummary {
                    id: first.clone(),
                    doc_type: m.doc_type.clone(),
                    label: m.label.clone(),
                    size: m.size,
                    heads: split_heads(&m.heads),
                });
            }
        }
        Ok(out)
    }

    fn history(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
    ) -> Result<Vec<DocHistoryEntry>> {
        let meta = self.selected(tenant, snap, subject, id)?;
        self.log.read_projection(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, node_id, seq, lamport, changes, bytes FROM crdt_history
                 WHERE tenant = ?1 AND id = ?2 AND label = ?3
                 ORDER BY lamport, node_id, incarnation, seq",
            )?;
            let rows = stmt.query_map([tenant.as_str(), id, meta.label.as_str()], |r| {
                let kind: String = r.get(0)?;
                let changes: String = r.get(4)?;
                Ok(DocHistoryEntry {
                    kind: if kind == DOC_CREATED {
                        DocEventKind::Created
                    } else {
                        DocEventKind::Changed
                    },
                    node_id: r.get(1)?,
                    seq: to_u64(r.get(2)?),
                    lamport: to_u64(r.get(3)?),
                    changes: split_heads(&changes),
                    bytes: to_u64(r.get(5)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn delta_since(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        acknowledged: &[String],
    ) -> Result<Delta> {
        let meta = self.selected(tenant, snap, subject, id)?;
        let mut heads = Vec::with_capacity(acknowledged.len());
        for h in acknowledged {
            let valid = h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
            let hash: ChangeHash = h
                .parse()
                .ok()
                .filter(|_| valid)
                .ok_or_else(|| CrdtError::BadHeads { id: id.to_owned() })?;
            heads.push(hash);
        }
        let doc = self.take_doc(tenant, id, &meta)?;
        let known: Vec<ChangeHash> = heads
            .into_iter()
            .filter(|h| doc.get_change_by_hash(h).is_some())
            .collect();
        let changes = doc.save_after(&known);
        let whole = doc.save();
        self.keep(tenant, id, &meta.label, meta.heads.clone(), doc);
        Ok(if whole.len() < changes.len() {
            Delta {
                form: DeltaForm::Whole,
                bytes: whole,
            }
        } else {
            Delta {
                form: DeltaForm::Changes,
                bytes: changes,
            }
        })
    }

    fn apply_delta(
        &self,
        tenant: &TenantId,
        snap: &PolicySnapshot,
        subject: &Subject,
        id: &str,
        delta: &[u8],
    ) -> Result<DeltaOutcome> {
        let limits = self.limits_for(snap);
        for _ in 0..ATTEMPTS {
            let meta = self.writable(tenant, snap, subject, id, &limits)?;
            let doc = self.take_doc(tenant, id, &meta)?;
            // `load_incremental` skips what does not parse: load the document and the delta
            // together, strictly, instead.
            let before = doc.get_heads();
            let mut bytes = doc.save();
            bytes.extend_from_slice(delta);
            let mut doc = Automerge::load_with_options(
                &bytes,
                LoadOptions::new().on_partial_load(OnPartialLoad::Error),
            )
            .map_err(|_| CrdtError::BadDelta { id: id.to_owned() })?;
            doc.set_actor(self.actor.clone());
            if !doc.get_missing_deps(&[]).is_empty() {
                return Err(CrdtError::BadDelta { id: id.to_owned() });
            }
            let new = doc.get_changes(&before);
            if new.is_empty() {
                self.keep(tenant, id, &meta.label, meta.heads.clone(), doc);
                return Ok(DeltaOutcome {
                    added: 0,
                    heads: split_heads(&meta.heads),
                });
            }
            let write = Self::plan_write(id, &meta, &doc, &new, limits.max_doc_bytes)?;
            match self.record(tenant, id, &meta, &doc, &new, write) {
                Ok(heads) => {
                    let out = DeltaOutcome {
                        added: new.len(),
                        heads: split_heads(&heads),
                    };
                    self.keep(tenant, id, &meta.label, heads, doc);
                    return Ok(out);
                }
                Err(CrdtError::Busy { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(CrdtError::Busy { id: id.to_owned() })
    }
}
