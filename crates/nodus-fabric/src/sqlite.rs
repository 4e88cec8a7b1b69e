//! `SqliteEventLog`: the default [`TenantEventLog`] on SQLite.

use std::path::Path;
use std::time::Duration;

use nodus_policy::TenantId;
use parking_lot::Mutex;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::engine::{
    self, EMPTY_HEAD, Head, Table, Verifier, VerifyRow, build_append, corrupt, corrupt_raw,
};
use crate::event::{
    ChainId, EntityId, Event, EventHash, EventKind, EventLabel, EventRef, Incarnation, NewEvent,
    NodeId, Payload,
};
use crate::log::{
    ChainHead, Cursor, Equivocation, EquivocationKind, EventLogError, IngestReport, NodeInfo,
    TenantEventLog, VerifyReport, VersionVector, storage,
};

/// The value of the `format` metadata key of a store this version writes.
pub const STORE_FORMAT: &str = "nodus-fabric-log-v1";

/// WAL pages between automatic checkpoints (`PRAGMA wal_autocheckpoint`; SQLite's default is
/// 1,000). See `docs/fabric.md`, "Durability".
pub const CHECKPOINT_PAGES: u32 = 16_384;

/// The size the WAL file is truncated to after a checkpoint resets it (`journal_size_limit`).
const WAL_LIMIT_BYTES: u64 = 64 << 20;

/// The schema (see `docs/fabric.md`, "SQLite schema").
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    tenant   TEXT PRIMARY KEY,
    lamport  INTEGER NOT NULL CHECK (lamport >= 0),
    position INTEGER NOT NULL CHECK (position >= 0)
);
CREATE TABLE IF NOT EXISTS events (
    tenant      TEXT NOT NULL,
    node_id     BLOB NOT NULL CHECK (length(node_id) = 16),
    incarnation BLOB NOT NULL CHECK (length(incarnation) = 16),
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    pos         INTEGER NOT NULL CHECK (pos >= 1),
    lamport     INTEGER NOT NULL CHECK (lamport >= 1),
    kind        TEXT NOT NULL,
    entity      TEXT NOT NULL,
    label       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    model_ver   INTEGER NOT NULL,
    prev_hash   BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash        BLOB NOT NULL CHECK (length(hash) = 32),
    time_ms     INTEGER NOT NULL,
    UNIQUE (tenant, node_id, incarnation, seq),
    UNIQUE (tenant, pos)
);
CREATE TABLE IF NOT EXISTS chains (
    tenant      TEXT NOT NULL,
    node_id     BLOB NOT NULL,
    incarnation BLOB NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    hash        BLOB NOT NULL CHECK (length(hash) = 32),
    lamport     INTEGER NOT NULL,
    PRIMARY KEY (tenant, node_id, incarnation)
);
CREATE TABLE IF NOT EXISTS pending (
    tenant      TEXT NOT NULL,
    node_id     BLOB NOT NULL CHECK (length(node_id) = 16),
    incarnation BLOB NOT NULL CHECK (length(incarnation) = 16),
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    lamport     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    entity      TEXT NOT NULL,
    label       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    model_ver   INTEGER NOT NULL,
    prev_hash   BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash        BLOB NOT NULL CHECK (length(hash) = 32),
    time_ms     INTEGER NOT NULL,
    PRIMARY KEY (tenant, node_id, incarnation, seq)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id               INTEGER PRIMARY KEY,
    tenant           TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('same_seq', 'fork')),
    stored           BLOB NOT NULL,
    conflicting      BLOB NOT NULL,
    conflicting_hash BLOB NOT NULL CHECK (length(conflicting_hash) = 32),
    UNIQUE (tenant, conflicting_hash)
);
";

const EVENT_COLS: &str = "node_id, incarnation, seq, lamport, kind, entity, label, payload, model_ver, prev_hash, hash, time_ms";

/// When an acknowledged append or ingest is durable. (`PgEventLog` maps the same two modes to
/// PostgreSQL's `synchronous_commit`; see `docs/postgres.md`, "Durability".)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Durability {
    /// Each call's commit is fsync'd before it returns (SQLite `synchronous=FULL`): survives
    /// power loss and operating-system crashes.
    #[default]
    Full,
    /// Each call's commit is in the WAL before it returns (`synchronous=NORMAL`): survives a
    /// process crash; the last commits may be lost on power loss (never half of one).
    Normal,
}

/// The default [`TenantEventLog`]: one SQLite database (WAL) per node, `data_dir/fabric.db` by
/// convention. See `docs/fabric.md` for the schema and guarantees.
///
/// One connection serialises every call; each call is one transaction, so a crash leaves a call
/// either wholly applied or not at all.
pub struct SqliteEventLog {
    conn: Mutex<Connection>,
    writes: std::sync::atomic::AtomicU64,
    node: NodeInfo,
    location: String,
}

impl std::fmt::Debug for SqliteEventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventLog")
            .field("location", &self.location)
            .field("node", &self.node)
            .finish()
    }
}

impl SqliteEventLog {
    /// The file name of the log in a node's data directory: `data_dir/fabric.db`.
    pub const FILE_NAME: &'static str = "fabric.db";

    /// Opens the log at `path`, creating it (with a new random incarnation) if it does not exist;
    /// its directory must exist. Reopening keeps the incarnation.
    ///
    /// # Errors
    /// [`EventLogError::WrongNode`] when the store belongs to another node,
    /// [`EventLogError::Meta`] when its metadata is corrupt, [`EventLogError::Storage`].
    pub fn open(
        path: &Path,
        node_id: NodeId,
        durability: Durability,
    ) -> Result<Self, EventLogError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(storage)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(storage)?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // `wal_autocheckpoint`: copy the WAL back into the database every `CHECKPOINT_PAGES`
        // pages instead of SQLite's 1,000. Each checkpoint waits for two fsyncs and rewrites every
        // page it carries; a create dirties ~14 pages, so at 1,000 that was a checkpoint every
        // ~70 creates, about half of a create's wall time (`benches/benches/fabric.rs`). Commits
        // are unchanged: each is in the WAL before the call returns.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};
             PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}; PRAGMA journal_size_limit={WAL_LIMIT_BYTES};"
        ))
        .map_err(storage)?;
        Self::start(conn, node_id, path.display().to_string())
    }

    /// A log kept in memory: the same behaviour, nothing on disk, a new incarnation each time.
    ///
    /// # Errors
    /// [`EventLogError::Storage`].
    pub fn in_memory(node_id: NodeId) -> Result<Self, EventLogError> {
        let conn = Connection::open_in_memory().map_err(storage)?;
        Self::start(conn, node_id, "<memory>".into())
    }

    fn start(
        mut conn: Connection,
        node_id: NodeId,
        location: String,
    ) -> Result<Self, EventLogError> {
        conn.set_prepared_statement_cache_capacity(64);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        tx.execute_batch(SCHEMA).map_err(storage)?;
        let meta = |k: &str| -> Result<Option<String>, EventLogError> {
            tx.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
                .optional()
                .map_err(storage)
        };
        let node = match (meta("format")?, meta("node_id")?, meta("incarnation")?) {
            (None, None, None) => {
                let incarnation = Incarnation::random().map_err(EventLogError::Random)?;
                tx.execute(
                    "INSERT INTO meta (k, v) VALUES ('format', ?1), ('node_id', ?2), ('incarnation', ?3)",
                    [STORE_FORMAT, &node_id.to_string(), &incarnation.to_string()],
                )
                .map_err(storage)?;
                NodeInfo {
                    node_id,
                    incarnation,
                }
            }
            (format, stored, incarnation) => {
                if format.as_deref() != Some(STORE_FORMAT) {
                    return Err(EventLogError::Meta { key: "format" });
                }
                let stored: NodeId = stored
                    .and_then(|s| s.parse().ok())
                    .ok_or(EventLogError::Meta { key: "node_id" })?;
                let incarnation: Incarnation = incarnation
                    .and_then(|s| s.parse().ok())
                    .ok_or(EventLogError::Meta { key: "incarnation" })?;
                if stored != node_id {
                    return Err(EventLogError::WrongNode {
                        stored,
                        given: node_id,
                    });
                }
                NodeInfo {
                    node_id,
                    incarnation,
                }
            }
        };
        tx.commit().map_err(storage)?;
        Ok(SqliteEventLog {
            conn: Mutex::new(conn),
            writes: std::sync::atomic::AtomicU64::new(0),
            node,
            location,
        })
    }

    /// Appends like [`TenantEventLog::append`] and runs `f` with the appended events **in the same
    /// transaction** before it commits (for projections). If `f` fails, nothing is written and its
    /// error is returned.
    ///
    /// # Errors
    /// `f`'s error or an [`EventLogError`] converted into `E`.
    pub fn append_with<E, F>(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
        f: F,
    ) -> Result<Vec<Event>, E>
    where
        E: From<EventLogError>,
        F: FnOnce(&Transaction<'_>, &[Event]) -> Result<(), E>,
    {
        let _mark = WriteMark(&self.writes);
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let out = append_tx(&tx, self.node.chain(), tenant, events)?;
        f(&tx, &out)?;
        tx.commit().map_err(storage)?;
        Ok(out)
    }

    /// Ingests like [`TenantEventLog::ingest`] and runs `f` with the report (whose `applied`
    /// events are what a projection applies) **in the same transaction** before it commits. If
    /// `f` fails, nothing of the call is kept (no event applied, held or quarantined).
    ///
    /// # Errors
    /// `f`'s error or an [`EventLogError`] converted into `E`.
    pub fn ingest_with<E, F>(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
        f: F,
    ) -> Result<IngestReport, E>
    where
        E: From<EventLogError>,
        F: FnOnce(&Transaction<'_>, &IngestReport) -> Result<(), E>,
    {
        let _mark = WriteMark(&self.writes);
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        let counters = tenant_counters(&tx, tenant)?;
        let report = engine::ingest(
            &mut SqliteStore { tx: &tx, tenant },
            self.node.chain(),
            tenant,
            counters,
            events,
        )?;
        f(&tx, &report)?;
        tx.commit().map_err(storage)?;
        Ok(report)
    }

    /// Runs `f` on the log's connection for **reads** of projections kept in the same database
    /// (the `Fabric`'s tables), and for creating those tables (idempotent DDL, `Fabric::new`).
    /// `f` sees every committed write and nothing half written; it must not write data
    /// (projection writes go through [`append_with`](Self::append_with),
    /// [`ingest_with`](Self::ingest_with) or [`rebuild_with`](Self::rebuild_with), in the log's
    /// transaction). Calls are serialised with every other call on the log.
    ///
    /// # Errors
    /// `f`'s error.
    pub fn read_projection<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E>,
    {
        let conn = self.conn.lock();
        f(&conn)
    }

    /// Rebuilds projections of `tenant` in one transaction: runs `clear`, then `apply` on every
    /// applied event of the tenant in local application order, streamed from the log (memory
    /// stays bounded by one event, whatever the log's size). Each event's hash is checked as it
    /// is read. If any step fails, nothing written is kept.
    ///
    /// # Errors
    /// `clear`'s or `apply`'s error, or an [`EventLogError`] converted into `E`.
    pub fn rebuild_with<E, C, F>(&self, tenant: &TenantId, clear: C, mut apply: F) -> Result<(), E>
    where
        E: From<EventLogError>,
        C: FnOnce(&Transaction<'_>) -> Result<(), E>,
        F: FnMut(&Transaction<'_>, &Event) -> Result<(), E>,
    {
        let _mark = WriteMark(&self.writes);
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage)?;
        clear(&tx)?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLS} FROM events WHERE tenant = ?1 ORDER BY pos"
                ))
                .map_err(storage)?;
            let mut rows = stmt.query([tenant.as_str()]).map_err(storage)?;
            while let Some(row) = rows.next().map_err(storage)? {
                let e = checked_event(tenant, row, 0)?;
                apply(&tx, &e)?;
            }
        }
        tx.commit().map_err(storage)?;
        Ok(())
    }

    /// A counter that moves after every write transaction on this log has ended (committed or
    /// rolled back): a value read before reading projections, and unchanged afterwards, proves
    /// that no write ended in between. Caches of projection data use it.
    pub fn write_generation(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every tenant the log holds events of, by id.
    ///
    /// # Errors
    /// [`EventLogError::Storage`].
    pub fn tenants(&self) -> Result<Vec<TenantId>, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached("SELECT tenant FROM tenants ORDER BY tenant")
            .map_err(storage)?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(storage)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(storage)?;
        names
            .into_iter()
            .map(|n| TenantId::new(&n).map_err(|e| storage(format!("tenant `{n}`: {e}"))))
            .collect()
    }

    /// Where the log is (`<memory>` for an in-memory log).
    pub fn location(&self) -> &str {
        &self.location
    }
}

impl TenantEventLog for SqliteEventLog {
    fn node(&self) -> NodeInfo {
        self.node
    }

    fn append(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, EventLogError> {
        self.append_with(tenant, events, |_, _| Ok::<(), EventLogError>(()))
    }

    fn ingest(&self, tenant: &TenantId, events: Vec<Event>) -> Result<IngestReport, EventLogError> {
        self.ingest_with(tenant, events, |_, _| Ok::<(), EventLogError>(()))
    }

    fn read_chain(
        &self,
        tenant: &TenantId,
        chain: ChainId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM events WHERE tenant = ?1 AND node_id = ?2 AND incarnation = ?3 AND seq >= ?4 ORDER BY seq LIMIT ?5"
            ))
            .map_err(storage)?;
        let mut rows = stmt
            .query(rusqlite::params![
                tenant.as_str(),
                &chain.node_id.as_bytes()[..],
                &chain.incarnation.as_bytes()[..],
                sql_int(from_seq),
                sql_limit(limit)
            ])
            .map_err(storage)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage)? {
            out.push(checked_event(tenant, row, 0)?);
        }
        Ok(out)
    }

    fn read_tenant(
        &self,
        tenant: &TenantId,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<Cursor>), EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS}, pos FROM events WHERE tenant = ?1 AND pos > ?2 ORDER BY pos LIMIT ?3"
            ))
            .map_err(storage)?;
        let from = cursor.map_or(0, Cursor::position);
        let mut rows = stmt
            .query(rusqlite::params![
                tenant.as_str(),
                sql_int(from),
                sql_limit(limit)
            ])
            .map_err(storage)?;
        let mut out = Vec::new();
        let mut last = cursor;
        while let Some(row) = rows.next().map_err(storage)? {
            let e = checked_event(tenant, row, 0)?;
            let pos = int_at(row, 12).ok_or_else(|| corrupt(tenant, &e.chain(), e.seq, "pos"))?;
            last = Some(Cursor::from_position(pos));
            out.push(e);
        }
        Ok((out, last))
    }

    fn high_water_marks(&self, tenant: &TenantId) -> Result<VersionVector, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node_id, incarnation, seq, hash FROM chains WHERE tenant = ?1 ORDER BY node_id, incarnation",
            )
            .map_err(storage)?;
        let mut rows = stmt.query([tenant.as_str()]).map_err(storage)?;
        let mut out = VersionVector::new();
        while let Some(row) = rows.next().map_err(storage)? {
            let chain = chain_at(row, 0).ok_or_else(|| corrupt_raw(tenant, "?", 0, "chain id"))?;
            let seq = int_at(row, 2).ok_or_else(|| corrupt(tenant, &chain, 0, "head seq"))?;
            let hash = blob_at::<32>(row, 3)
                .map(EventHash::from_bytes)
                .ok_or_else(|| corrupt(tenant, &chain, seq, "head hash"))?;
            out.insert(chain, ChainHead { seq, hash });
        }
        Ok(out)
    }

    fn pending(&self, tenant: &TenantId) -> Result<Vec<EventRef>, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT node_id, incarnation, seq, hash FROM pending WHERE tenant = ?1 ORDER BY node_id, incarnation, seq",
            )
            .map_err(storage)?;
        let mut rows = stmt.query([tenant.as_str()]).map_err(storage)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage)? {
            let chain = chain_at(row, 0).ok_or_else(|| corrupt_raw(tenant, "?", 0, "chain id"))?;
            let seq = int_at(row, 2).ok_or_else(|| corrupt(tenant, &chain, 0, "pending seq"))?;
            let hash = blob_at::<32>(row, 3)
                .map(EventHash::from_bytes)
                .ok_or_else(|| corrupt(tenant, &chain, seq, "pending hash"))?;
            out.push(EventRef { chain, seq, hash });
        }
        Ok(out)
    }

    fn quarantined(&self, tenant: &TenantId) -> Result<Vec<Equivocation>, EventLogError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT kind, stored, conflicting FROM quarantine WHERE tenant = ?1 ORDER BY id",
            )
            .map_err(storage)?;
        let mut rows = stmt.query([tenant.as_str()]).map_err(storage)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage)? {
            let bad = |what: &str| corrupt_raw(tenant, "?", 0, &format!("quarantined {what}"));
            let kind = match text_at(row, 0) {
                Some("same_seq") => EquivocationKind::SameSeq,
                Some("fork") => EquivocationKind::Fork,
                _ => return Err(bad("kind")),
            };
            let decode = |i: usize| {
                row.get_ref(i)
                    .ok()
                    .and_then(|v| v.as_blob().ok())
                    .and_then(|b| Event::decode(b).ok())
                    .filter(|e| &e.tenant == tenant)
            };
            let stored = decode(1).ok_or_else(|| bad("stored event"))?;
            let conflicting = decode(2).ok_or_else(|| bad("conflicting event"))?;
            out.push(Equivocation {
                kind,
                stored,
                conflicting,
            });
        }
        Ok(out)
    }

    fn verify(&self, tenant: &TenantId) -> Result<VerifyReport, EventLogError> {
        let conn = self.conn.lock();
        verify_tenant(&conn, tenant)
    }
}

// ---------------------------------------------------------------------------------------------
// Row helpers: every stored value is read through `ValueRef` and checked, so a row edited to hold
// any type or bytes yields `None` (then an error or a problem), never a panic.

fn int_at(row: &Row<'_>, i: usize) -> Option<u64> {
    match row.get_ref(i).ok()? {
        ValueRef::Integer(v) => u64::try_from(v).ok(),
        _ => None,
    }
}

fn blob_at<const N: usize>(row: &Row<'_>, i: usize) -> Option<[u8; N]> {
    match row.get_ref(i).ok()? {
        ValueRef::Blob(b) => b.try_into().ok(),
        _ => None,
    }
}

fn text_at<'r>(row: &'r Row<'_>, i: usize) -> Option<&'r str> {
    match row.get_ref(i).ok()? {
        ValueRef::Text(t) => std::str::from_utf8(t).ok(),
        _ => None,
    }
}

fn chain_at(row: &Row<'_>, i: usize) -> Option<ChainId> {
    Some(ChainId {
        node_id: NodeId::from_bytes(blob_at(row, i)?),
        incarnation: Incarnation::from_bytes(blob_at(row, i + 1)?),
    })
}

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Decodes the event columns (`EVENT_COLS`, from column `at`) of a row of `tenant`. The hash is
/// the stored one, not checked. `Err` names the field that does not decode, with the chain and
/// seq when those decode.
fn decode_event(
    tenant: &TenantId,
    row: &Row<'_>,
    at: usize,
) -> Result<Event, (Option<ChainId>, u64, &'static str)> {
    let chain = chain_at(row, at);
    let seq = int_at(row, at + 2).filter(|s| *s >= 1);
    let fail = |field: &'static str| (chain, seq.unwrap_or(0), field);
    let chain = chain.ok_or_else(|| fail("chain id"))?;
    let seq = seq.ok_or_else(|| fail("seq"))?;
    let text = |i: usize, field: &'static str| text_at(row, at + i).ok_or_else(|| fail(field));
    Ok(Event {
        tenant: tenant.clone(),
        node_id: chain.node_id,
        incarnation: chain.incarnation,
        seq,
        lamport: int_at(row, at + 3).ok_or_else(|| fail("lamport"))?,
        kind: EventKind::new(text(4, "kind")?).map_err(|_| fail("kind"))?,
        entity: EntityId::new(text(5, "entity")?).map_err(|_| fail("entity"))?,
        label: EventLabel::new(text(6, "label")?).map_err(|_| fail("label"))?,
        payload: Payload::from_stored(text(7, "payload")?.to_owned()),
        model_ver: int_at(row, at + 8)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| fail("model_ver"))?,
        prev_hash: EventHash::from_bytes(blob_at(row, at + 9).ok_or_else(|| fail("prev_hash"))?),
        hash: EventHash::from_bytes(blob_at(row, at + 10).ok_or_else(|| fail("hash"))?),
        time_ms: int_at(row, at + 11).ok_or_else(|| fail("time_ms"))?,
    })
}

/// Decodes a row and checks its hash: what every read returns.
fn checked_event(tenant: &TenantId, row: &Row<'_>, at: usize) -> Result<Event, EventLogError> {
    let e = decode_event(tenant, row, at).map_err(|(chain, seq, field)| {
        let chain = chain.map_or_else(|| "?".to_owned(), |c| c.to_string());
        corrupt_raw(tenant, &chain, seq, &format!("`{field}` does not decode"))
    })?;
    if e.compute_hash() != e.hash {
        return Err(corrupt(
            tenant,
            &e.chain(),
            e.seq,
            "its content does not match its hash",
        ));
    }
    Ok(e)
}

/// Moves the write generation when a write call ends, whatever its outcome.
struct WriteMark<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for WriteMark<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared write helpers.

fn tenant_counters(tx: &Transaction<'_>, tenant: &TenantId) -> Result<(u64, u64), EventLogError> {
    let mut stmt = tx
        .prepare_cached("SELECT lamport, position FROM tenants WHERE tenant = ?1")
        .map_err(storage)?;
    let mut rows = stmt.query([tenant.as_str()]).map_err(storage)?;
    match rows.next().map_err(storage)? {
        None => Ok((0, 0)),
        Some(row) => match (int_at(row, 0), int_at(row, 1)) {
            (Some(l), Some(p)) => Ok((l, p)),
            _ => Err(corrupt_raw(tenant, "-", 0, "tenant counters")),
        },
    }
}

fn save_counters(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    lamport: u64,
    position: u64,
) -> Result<(), EventLogError> {
    tx.prepare_cached(
        "INSERT INTO tenants (tenant, lamport, position) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant) DO UPDATE SET lamport = excluded.lamport, position = excluded.position",
    )
    .map_err(storage)?
    .execute(rusqlite::params![
        tenant.as_str(),
        sql_int(lamport),
        sql_int(position)
    ])
    .map_err(storage)?;
    Ok(())
}

fn load_head(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    chain: &ChainId,
) -> Result<Head, EventLogError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT seq, hash, lamport FROM chains WHERE tenant = ?1 AND node_id = ?2 AND incarnation = ?3",
        )
        .map_err(storage)?;
    let mut rows = stmt
        .query(rusqlite::params![
            tenant.as_str(),
            &chain.node_id.as_bytes()[..],
            &chain.incarnation.as_bytes()[..]
        ])
        .map_err(storage)?;
    match rows.next().map_err(storage)? {
        None => Ok(EMPTY_HEAD),
        Some(row) => match (int_at(row, 0), blob_at::<32>(row, 1), int_at(row, 2)) {
            (Some(seq), Some(hash), Some(lamport)) => Ok(Head {
                seq,
                hash: EventHash::from_bytes(hash),
                lamport,
            }),
            _ => Err(corrupt(tenant, chain, 0, "chain head")),
        },
    }
}

fn save_head(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    chain: &ChainId,
    head: &Head,
) -> Result<(), EventLogError> {
    tx.prepare_cached(
        "INSERT INTO chains (tenant, node_id, incarnation, seq, hash, lamport) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tenant, node_id, incarnation) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, lamport = excluded.lamport",
    )
    .map_err(storage)?
    .execute(rusqlite::params![
        tenant.as_str(),
        &chain.node_id.as_bytes()[..],
        &chain.incarnation.as_bytes()[..],
        sql_int(head.seq),
        &head.hash.as_bytes()[..],
        sql_int(head.lamport)
    ])
    .map_err(storage)?;
    Ok(())
}

/// Inserts `e` into `table` (`events` with its local position, or `pending` without): one column
/// list and one binding order for both, `EVENT_COLS`.
fn insert_into(
    tx: &Transaction<'_>,
    table: &str,
    e: &Event,
    pos: Option<u64>,
) -> Result<(), EventLogError> {
    let (extra_col, extra_param) = if pos.is_some() {
        (", pos", ", ?14")
    } else {
        ("", "")
    };
    let mut stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} (tenant, {EVENT_COLS}{extra_col}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13{extra_param})"
        ))
        .map_err(storage)?;
    let pos_value = sql_int(pos.unwrap_or(0));
    let params: [&dyn rusqlite::ToSql; 14] = [
        &e.tenant.as_str(),
        &&e.node_id.as_bytes()[..],
        &&e.incarnation.as_bytes()[..],
        &sql_int(e.seq),
        &sql_int(e.lamport),
        &e.kind.as_str(),
        &e.entity.as_str(),
        &e.label.as_str(),
        &e.payload.as_str(),
        &i64::from(e.model_ver),
        &&e.prev_hash.as_bytes()[..],
        &&e.hash.as_bytes()[..],
        &sql_int(e.time_ms),
        &pos_value,
    ];
    let bound = if pos.is_some() { 14 } else { 13 };
    stmt.execute(params.get(..bound).unwrap_or(&params[..]))
        .map_err(storage)?;
    Ok(())
}

fn insert_event(tx: &Transaction<'_>, e: &Event, pos: u64) -> Result<(), EventLogError> {
    insert_into(tx, "events", e, Some(pos))
}

fn append_tx(
    tx: &Transaction<'_>,
    chain: ChainId,
    tenant: &TenantId,
    events: Vec<NewEvent>,
) -> Result<Vec<Event>, EventLogError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let (lamport, position) = tenant_counters(tx, tenant)?;
    let head = load_head(tx, tenant, &chain)?;
    let appended = build_append(chain, tenant, head, lamport, position, events)?;
    let mut out = Vec::with_capacity(appended.events.len());
    for (e, pos) in appended.events {
        insert_event(tx, &e, pos)?;
        out.push(e);
    }
    save_head(tx, tenant, &chain, &appended.head)?;
    save_counters(tx, tenant, appended.lamport, appended.position)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Ingest.

/// The SQLite side of [`engine::Store`]: one tenant, inside the call's transaction.
struct SqliteStore<'t, 'c> {
    tx: &'t Transaction<'c>,
    tenant: &'t TenantId,
}

impl engine::Store for SqliteStore<'_, '_> {
    fn load_head(&mut self, chain: &ChainId) -> Result<Head, EventLogError> {
        load_head(self.tx, self.tenant, chain)
    }

    fn load(
        &mut self,
        chain: &ChainId,
        seq: u64,
        table: Table,
    ) -> Result<Option<Event>, EventLogError> {
        let table = match table {
            Table::Events => "events",
            Table::Pending => "pending",
        };
        let mut stmt = self
            .tx
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS} FROM {table} WHERE tenant = ?1 AND node_id = ?2 AND incarnation = ?3 AND seq = ?4"
            ))
            .map_err(storage)?;
        let mut rows = stmt
            .query(rusqlite::params![
                self.tenant.as_str(),
                &chain.node_id.as_bytes()[..],
                &chain.incarnation.as_bytes()[..],
                sql_int(seq)
            ])
            .map_err(storage)?;
        match rows.next().map_err(storage)? {
            None => Ok(None),
            Some(row) => checked_event(self.tenant, row, 0).map(Some),
        }
    }

    fn has_pending(&mut self, chain: &ChainId) -> Result<bool, EventLogError> {
        self.tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM pending WHERE tenant = ?1 AND node_id = ?2 AND incarnation = ?3)",
            )
            .map_err(storage)?
            .query_row(
                rusqlite::params![
                    self.tenant.as_str(),
                    &chain.node_id.as_bytes()[..],
                    &chain.incarnation.as_bytes()[..]
                ],
                |r| r.get::<_, bool>(0),
            )
            .map_err(storage)
    }

    fn any_quarantined(&mut self) -> Result<bool, EventLogError> {
        self.tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM quarantine WHERE tenant = ?1)")
            .map_err(storage)?
            .query_row([self.tenant.as_str()], |r| r.get::<_, bool>(0))
            .map_err(storage)
    }

    fn is_quarantined(&mut self, hash: &EventHash) -> Result<bool, EventLogError> {
        self.tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM quarantine WHERE tenant = ?1 AND conflicting_hash = ?2)",
            )
            .map_err(storage)?
            .query_row(
                rusqlite::params![self.tenant.as_str(), &hash.as_bytes()[..]],
                |r| r.get::<_, bool>(0),
            )
            .map_err(storage)
    }

    fn quarantine(
        &mut self,
        kind: EquivocationKind,
        stored: &Event,
        conflicting: &Event,
    ) -> Result<(), EventLogError> {
        let k = match kind {
            EquivocationKind::SameSeq => "same_seq",
            EquivocationKind::Fork => "fork",
        };
        self.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO quarantine (tenant, kind, stored, conflicting, conflicting_hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(storage)?
            .execute(rusqlite::params![
                self.tenant.as_str(),
                k,
                stored.canonical_bytes(),
                conflicting.canonical_bytes(),
                &conflicting.hash.as_bytes()[..]
            ])
            .map_err(storage)?;
        Ok(())
    }

    fn hold(&mut self, e: &Event) -> Result<(), EventLogError> {
        insert_into(self.tx, "pending", e, None)
    }

    fn unhold(&mut self, chain: &ChainId, seq: u64) -> Result<(), EventLogError> {
        self.tx
            .prepare_cached(
                "DELETE FROM pending WHERE tenant = ?1 AND node_id = ?2 AND incarnation = ?3 AND seq = ?4",
            )
            .map_err(storage)?
            .execute(rusqlite::params![
                self.tenant.as_str(),
                &chain.node_id.as_bytes()[..],
                &chain.incarnation.as_bytes()[..],
                sql_int(seq)
            ])
            .map_err(storage)?;
        Ok(())
    }

    fn insert_event(&mut self, e: &Event, pos: u64) -> Result<(), EventLogError> {
        insert_event(self.tx, e, pos)
    }

    fn save_head(&mut self, chain: &ChainId, head: &Head) -> Result<(), EventLogError> {
        save_head(self.tx, self.tenant, chain, head)
    }

    fn save_counters(&mut self, lamport: u64, position: u64) -> Result<(), EventLogError> {
        save_counters(self.tx, self.tenant, lamport, position)
    }
}

// ---------------------------------------------------------------------------------------------
// Verification.

fn verify_tenant(conn: &Connection, tenant: &TenantId) -> Result<VerifyReport, EventLogError> {
    let mut walk = Verifier::default();
    // Recorded heads.
    {
        let mut stmt = conn
            .prepare_cached("SELECT node_id, incarnation, seq, hash FROM chains WHERE tenant = ?1")
            .map_err(storage)?;
        let mut rows = stmt.query([tenant.as_str()]).map_err(storage)?;
        while let Some(row) = rows.next().map_err(storage)? {
            walk.head(chain_at(row, 0), int_at(row, 2), blob_at::<32>(row, 3));
        }
    }
    {
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {EVENT_COLS}, pos FROM events WHERE tenant = ?1 ORDER BY node_id, incarnation, seq"
            ))
            .map_err(storage)?;
        let mut rows = stmt.query([tenant.as_str()]).map_err(storage)?;
        while let Some(row) = rows.next().map_err(storage)? {
            walk.row(VerifyRow {
                event: decode_event(tenant, row, 0).map_err(|(chain, seq, _)| (chain, seq)),
                pos: int_at(row, 12),
            });
        }
    }
    let counters = conn
        .query_row(
            "SELECT lamport, position FROM tenants WHERE tenant = ?1",
            [tenant.as_str()],
            |r| Ok((int_at(r, 0), int_at(r, 1))),
        )
        .optional()
        .map_err(storage)?;
    Ok(walk.finish(counters))
}
