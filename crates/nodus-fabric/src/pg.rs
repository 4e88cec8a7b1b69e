//! `PgEventLog`: [`TenantEventLog`] on PostgreSQL (feature `postgres`), for deployments whose nodes
//! share one log. See `docs/postgres.md` for the schema, the migrations and the guarantees.
//!
//! Concurrency model: every write of a tenant's data (an append or an ingest) holds the row lock
//! on that tenant's `tenants` row until it commits, so the writes of one tenant are serialised
//! across every connection and node, and positions are handed out in commit order. Appends first
//! try an optimistic single statement that commits only if the tenant's `position` is still the
//! one read (or the one this handle's last append left); after a few conflicts they take the lock
//! first. Ingests always take it first. The
//! primary keys and unique constraints are the backstop: a write that would duplicate an identity
//! or a position fails as a whole and is retried.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use nodus_policy::TenantId;
use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, IsolationLevel, NoTls, Row, Statement, Transaction};
use sha2::{Digest, Sha256};

use crate::engine::{
    self, EMPTY_HEAD, Head, Table, Verifier, VerifyRow, build_append, corrupt, corrupt_raw, now_ms,
};
use crate::event::{
    ChainId, EntityId, Event, EventHash, EventKind, EventLabel, EventRef, Incarnation, NewEvent,
    NodeId, Payload,
};
use crate::log::{
    ChainHead, Cursor, Equivocation, EquivocationKind, EventLogError, IngestReport, NodeInfo,
    TenantEventLog, VerifyReport, VersionVector,
};
use crate::sqlite::Durability;

/// How many times a call is retried after a conflict with another writer (an optimistic append
/// that lost the race, a serialization failure, a deadlock, a unique violation) before it fails.
const MAX_ATTEMPTS: u32 = 50;
/// Optimistic append attempts before an append takes the tenant's lock first.
const OPTIMISTIC_ATTEMPTS: u32 = 3;

/// Longest schema name (PostgreSQL's identifier limit, in bytes).
const MAX_SCHEMA_LEN: usize = 63;

/// Why [`PgEventLog::connect`] failed. Messages never contain the password of the connection
/// string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgConnectError {
    /// The schema name is not a plain lowercase identifier.
    #[error(
        "schema name `{0}` is not 1 to 63 characters of `a-z 0-9 _` starting with a letter or `_` (and not starting with `pg_`)"
    )]
    SchemaName(String),
    /// The connection string does not parse.
    #[error("invalid postgresql connection string: {0}")]
    Url(String),
    /// The server could not be reached, or refused the connection.
    #[error("cannot connect to postgresql: {0}")]
    Connect(String),
    /// The schema was written by a newer version of this crate.
    #[error(
        "schema `{schema}` is at version {found}, newer than version {supported} that this build of nodus-fabric knows; upgrade nodus-fabric"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i64,
        /// The newest version this build knows ([`PgEventLog::SCHEMA_VERSION`]).
        supported: i64,
    },
    /// Creating or migrating the schema failed; nothing of the failed step was kept.
    #[error("cannot migrate schema `{schema}` to version {version}: {reason}")]
    Migrate {
        /// The schema.
        schema: String,
        /// The version being applied.
        version: i64,
        /// Why.
        reason: String,
    },
    /// The node's stored incarnation is missing or corrupt.
    #[error("node `{node}` has no valid incarnation in schema `{schema}`")]
    Node {
        /// The schema.
        schema: String,
        /// The node.
        node: NodeId,
    },
    /// Another storage error while opening.
    #[error("event log storage error: {0}")]
    Storage(String),
    /// The random generator failed.
    #[error("cannot make an incarnation: {0}")]
    Random(String),
}

impl From<PgConnectError> for EventLogError {
    fn from(e: PgConnectError) -> Self {
        match e {
            PgConnectError::Random(r) => EventLogError::Random(r),
            other => EventLogError::Storage(other.to_string()),
        }
    }
}

/// The migrations, in order: `(version, what it does, SQL)`. `{s}` is the quoted schema name.
/// Each runs in the transaction that records it in `nodus_schema_version`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "event log tables",
        "
CREATE TABLE {s}.nodes (
    node_id     BYTEA PRIMARY KEY CHECK (octet_length(node_id) = 16),
    incarnation BYTEA NOT NULL CHECK (octet_length(incarnation) = 16),
    created_ms  BIGINT NOT NULL CHECK (created_ms >= 0)
);
CREATE TABLE {s}.tenants (
    tenant   TEXT PRIMARY KEY,
    lamport  BIGINT NOT NULL CHECK (lamport >= 0),
    position BIGINT NOT NULL CHECK (position >= 0)
);
CREATE TABLE {s}.events (
    tenant      TEXT NOT NULL,
    node_id     BYTEA NOT NULL CHECK (octet_length(node_id) = 16),
    incarnation BYTEA NOT NULL CHECK (octet_length(incarnation) = 16),
    seq         BIGINT NOT NULL CHECK (seq >= 1),
    pos         BIGINT NOT NULL CHECK (pos >= 1),
    lamport     BIGINT NOT NULL CHECK (lamport >= 1),
    kind        TEXT NOT NULL,
    entity      TEXT NOT NULL,
    label       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    model_ver   BIGINT NOT NULL CHECK (model_ver BETWEEN 0 AND 4294967295),
    prev_hash   BYTEA NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        BYTEA NOT NULL CHECK (octet_length(hash) = 32),
    time_ms     BIGINT NOT NULL CHECK (time_ms >= 0),
    PRIMARY KEY (tenant, node_id, incarnation, seq),
    UNIQUE (tenant, pos)
);
CREATE TABLE {s}.chains (
    tenant      TEXT NOT NULL,
    node_id     BYTEA NOT NULL CHECK (octet_length(node_id) = 16),
    incarnation BYTEA NOT NULL CHECK (octet_length(incarnation) = 16),
    seq         BIGINT NOT NULL CHECK (seq >= 1),
    hash        BYTEA NOT NULL CHECK (octet_length(hash) = 32),
    lamport     BIGINT NOT NULL CHECK (lamport >= 1),
    PRIMARY KEY (tenant, node_id, incarnation)
);
CREATE TABLE {s}.pending (
    tenant      TEXT NOT NULL,
    node_id     BYTEA NOT NULL CHECK (octet_length(node_id) = 16),
    incarnation BYTEA NOT NULL CHECK (octet_length(incarnation) = 16),
    seq         BIGINT NOT NULL CHECK (seq >= 1),
    lamport     BIGINT NOT NULL CHECK (lamport >= 1),
    kind        TEXT NOT NULL,
    entity      TEXT NOT NULL,
    label       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    model_ver   BIGINT NOT NULL CHECK (model_ver BETWEEN 0 AND 4294967295),
    prev_hash   BYTEA NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        BYTEA NOT NULL CHECK (octet_length(hash) = 32),
    time_ms     BIGINT NOT NULL CHECK (time_ms >= 0),
    PRIMARY KEY (tenant, node_id, incarnation, seq)
);
CREATE TABLE {s}.quarantine (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant           TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('same_seq', 'fork')),
    stored           BYTEA NOT NULL,
    conflicting      BYTEA NOT NULL,
    conflicting_hash BYTEA NOT NULL CHECK (octet_length(conflicting_hash) = 32),
    UNIQUE (tenant, conflicting_hash)
);
",
    ),
    (
        2,
        "index for reading a tenant's quarantine in order",
        "CREATE INDEX quarantine_by_tenant ON {s}.quarantine (tenant, id);",
    ),
];

const EVENT_COLS: &str = "node_id, incarnation, seq, lamport, kind, entity, label, payload, model_ver, prev_hash, hash, time_ms";

/// The statements of the log, prepared once per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Q {
    RegisterNode,
    NodeIncarnation,
    LockTenant,
    AppendRead,
    AppendWrite,
    LoadHead,
    LoadEvent,
    LoadPending,
    HasPending,
    AnyQuarantined,
    IsQuarantined,
    Quarantine,
    Hold,
    Unhold,
    InsertEvent,
    SaveHead,
    SaveCounters,
    ReadChain,
    ReadTenant,
    Heads,
    Pending,
    Quarantined,
    VerifyEvents,
    Counters,
}

impl Q {
    fn sql(self, s: &str) -> String {
        match self {
            Q::RegisterNode => format!(
                "INSERT INTO {s}.nodes (node_id, incarnation, created_ms) VALUES ($1, $2, $3) ON CONFLICT (node_id) DO NOTHING"
            ),
            Q::NodeIncarnation => format!("SELECT incarnation FROM {s}.nodes WHERE node_id = $1"),
            // Creates the tenant's row if needed and locks it until the transaction ends; returns
            // the counters as the last writer committed them.
            Q::LockTenant => format!(
                "INSERT INTO {s}.tenants AS cur (tenant, lamport, position) VALUES ($1, 0, 0)
                 ON CONFLICT (tenant) DO UPDATE SET tenant = excluded.tenant
                 RETURNING cur.lamport, cur.position"
            ),
            // One statement, one snapshot: the counters and the chain head agree.
            Q::AppendRead => format!(
                "SELECT t.lamport, t.position, c.seq, c.hash, c.lamport
                 FROM (SELECT $1::text AS tenant) k
                 LEFT JOIN {s}.tenants t ON t.tenant = k.tenant
                 LEFT JOIN {s}.chains c ON c.tenant = k.tenant AND c.node_id = $2 AND c.incarnation = $3"
            ),
            // Writes only if the tenant's position is still $6 (every applied event moves it, so
            // it versions the counters and every chain head of the tenant); the row lock taken by
            // `t` is held until commit. Returns the number of events written (0: lost the race).
            Q::AppendWrite => format!(
                "WITH t AS (
                    INSERT INTO {s}.tenants AS cur (tenant, lamport, position) VALUES ($1, $4, $5)
                    ON CONFLICT (tenant) DO UPDATE SET lamport = excluded.lamport, position = excluded.position
                    WHERE cur.position = $6
                    RETURNING 1
                 ), c AS (
                    INSERT INTO {s}.chains AS cur (tenant, node_id, incarnation, seq, hash, lamport)
                    SELECT $1, $2, $3, $7, $8, $9 FROM t
                    ON CONFLICT (tenant, node_id, incarnation)
                    DO UPDATE SET seq = excluded.seq, hash = excluded.hash, lamport = excluded.lamport
                    RETURNING 1
                 )
                 INSERT INTO {s}.events (tenant, {EVENT_COLS}, pos)
                 SELECT $1, $2, $3, u.seq, u.lamport, u.kind, u.entity, u.label, u.payload, u.model_ver,
                        u.prev_hash, u.hash, $10, u.pos
                 FROM unnest($11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::text[],
                             $16::text[], $17::text[], $18::bigint[], $19::bytea[], $20::bytea[])
                      AS u(seq, pos, lamport, kind, entity, label, payload, model_ver, prev_hash, hash)
                 WHERE EXISTS (SELECT 1 FROM t) AND EXISTS (SELECT 1 FROM c)"
            ),
            Q::LoadHead => format!(
                "SELECT seq, hash, lamport FROM {s}.chains WHERE tenant = $1 AND node_id = $2 AND incarnation = $3"
            ),
            Q::LoadEvent => format!(
                "SELECT {EVENT_COLS} FROM {s}.events WHERE tenant = $1 AND node_id = $2 AND incarnation = $3 AND seq = $4"
            ),
            Q::LoadPending => format!(
                "SELECT {EVENT_COLS} FROM {s}.pending WHERE tenant = $1 AND node_id = $2 AND incarnation = $3 AND seq = $4"
            ),
            Q::HasPending => format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.pending WHERE tenant = $1 AND node_id = $2 AND incarnation = $3)"
            ),
            Q::AnyQuarantined => {
                format!("SELECT EXISTS (SELECT 1 FROM {s}.quarantine WHERE tenant = $1)")
            }
            Q::IsQuarantined => format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.quarantine WHERE tenant = $1 AND conflicting_hash = $2)"
            ),
            Q::Quarantine => format!(
                "INSERT INTO {s}.quarantine (tenant, kind, stored, conflicting, conflicting_hash) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, conflicting_hash) DO NOTHING"
            ),
            Q::Hold => format!(
                "INSERT INTO {s}.pending (tenant, {EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ),
            Q::Unhold => format!(
                "DELETE FROM {s}.pending WHERE tenant = $1 AND node_id = $2 AND incarnation = $3 AND seq = $4"
            ),
            Q::InsertEvent => format!(
                "INSERT INTO {s}.events (tenant, {EVENT_COLS}, pos) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            Q::SaveHead => format!(
                "INSERT INTO {s}.chains (tenant, node_id, incarnation, seq, hash, lamport) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant, node_id, incarnation) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, lamport = excluded.lamport"
            ),
            Q::SaveCounters => {
                format!("UPDATE {s}.tenants SET lamport = $2, position = $3 WHERE tenant = $1")
            }
            Q::ReadChain => format!(
                "SELECT {EVENT_COLS} FROM {s}.events WHERE tenant = $1 AND node_id = $2 AND incarnation = $3 AND seq >= $4 ORDER BY seq LIMIT $5"
            ),
            Q::ReadTenant => format!(
                "SELECT {EVENT_COLS}, pos FROM {s}.events WHERE tenant = $1 AND pos > $2 ORDER BY pos LIMIT $3"
            ),
            Q::Heads => format!(
                "SELECT node_id, incarnation, seq, hash FROM {s}.chains WHERE tenant = $1 ORDER BY node_id, incarnation"
            ),
            Q::Pending => format!(
                "SELECT node_id, incarnation, seq, hash FROM {s}.pending WHERE tenant = $1 ORDER BY node_id, incarnation, seq"
            ),
            Q::Quarantined => format!(
                "SELECT kind, stored, conflicting FROM {s}.quarantine WHERE tenant = $1 ORDER BY id"
            ),
            Q::VerifyEvents => format!(
                "SELECT {EVENT_COLS}, pos FROM {s}.events WHERE tenant = $1 ORDER BY node_id, incarnation, seq"
            ),
            Q::Counters => {
                format!("SELECT lamport, position FROM {s}.tenants WHERE tenant = $1")
            }
        }
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    stmts: HashMap<Q, Statement>,
    /// What this handle last wrote per tenant (its counters and this node's chain head), so the
    /// next append can skip reading them. Only a hint: the write commits only if the tenant's
    /// position is still this one, and a miss drops the entry.
    known: HashMap<TenantId, Known>,
}

/// Most tenants whose last append a handle remembers.
const MAX_KNOWN: usize = 1024;

/// A tenant's counters and this node's chain head, as of a position.
#[derive(Clone, Copy)]
struct Known {
    lamport: u64,
    position: u64,
    head: Head,
}

impl Conn {
    fn new(client: Client) -> Self {
        Conn {
            client,
            stmts: HashMap::new(),
            known: HashMap::new(),
        }
    }

    fn remember(&mut self, tenant: &TenantId, known: Known) {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(tenant) {
            self.known.clear();
        }
        self.known.insert(tenant.clone(), known);
    }
}

/// Whatever can run a statement: the client or a transaction.
trait Exec {
    fn prep(&mut self, sql: &str) -> Result<Statement, postgres::Error>;
    fn rows(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error>;
    fn exec(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error>;
}

impl Exec for Client {
    fn prep(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        self.prepare(sql)
    }
    fn rows(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        self.query(st, params)
    }
    fn exec(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        self.execute(st, params)
    }
}

impl Exec for Transaction<'_> {
    fn prep(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        self.prepare(sql)
    }
    fn rows(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        self.query(st, params)
    }
    fn exec(
        &mut self,
        st: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        self.execute(st, params)
    }
}

/// A statement runner: an [`Exec`], the connection's statement cache and the schema.
struct Db<'a, E> {
    ex: &'a mut E,
    stmts: &'a mut HashMap<Q, Statement>,
    schema: &'a str,
}

impl<E: Exec> Db<'_, E> {
    fn stmt(&mut self, q: Q) -> Result<Statement, postgres::Error> {
        if let Some(st) = self.stmts.get(&q) {
            return Ok(st.clone());
        }
        let st = self.ex.prep(&q.sql(self.schema))?;
        self.stmts.insert(q, st.clone());
        Ok(st)
    }
    fn rows(&mut self, q: Q, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, postgres::Error> {
        let st = self.stmt(q)?;
        self.ex.rows(&st, params)
    }
    fn exec(&mut self, q: Q, params: &[&(dyn ToSql + Sync)]) -> Result<u64, postgres::Error> {
        let st = self.stmt(q)?;
        self.ex.exec(&st, params)
    }
}

/// A failed attempt: retry it (another writer won a race; nothing was kept), reconnect and retry
/// it (the connection was lost before anything could be committed), or give up.
enum Failure {
    Retry,
    Reconnect,
    Fatal(EventLogError),
}

/// The [`TenantEventLog`] on PostgreSQL: several nodes share one log in one schema of one database
/// (several schemas hold independent logs). Same rules as [`SqliteEventLog`](crate::SqliteEventLog)
/// (the two run the same code for them); see `docs/postgres.md` for the schema and what is
/// guaranteed with several writers.
///
/// One handle holds one connection and serialises its own calls; open a handle per thread for
/// parallel writes. Calls are safe to run from any number of handles, processes and machines at
/// once: correctness comes from the database's row locks, constraints and transactions, not from
/// this process. A lost connection is re-established on the next call; a call that failed because
/// the connection broke may or may not have been committed (read the chain to find out).
pub struct PgEventLog {
    conn: Mutex<Conn>,
    config: Config,
    /// The schema, validated (unquoted).
    schema: String,
    /// The schema as an SQL identifier (quoted).
    quoted: String,
    node: NodeInfo,
    durability: Durability,
    /// The connection string's password, removed from every error message.
    secret: Option<String>,
}

impl fmt::Debug for PgEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEventLog")
            .field("schema", &self.schema)
            .field("node", &self.node)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// Checks a schema name: `[a-z_][a-z0-9_]*`, at most 63 bytes, not `pg_…` (reserved by
/// PostgreSQL).
fn valid_schema(name: &str) -> bool {
    let mut b = name.bytes();
    name.len() <= MAX_SCHEMA_LEN
        && !name.starts_with("pg_")
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// A 64-bit advisory lock key for migrating `schema` (the first 8 bytes of a SHA-256).
fn migration_lock_key(schema: &str) -> i64 {
    let d = Sha256::digest(format!("nodus-fabric/pg-event-log/{schema}").as_bytes());
    let mut k = [0u8; 8];
    for (o, i) in k.iter_mut().zip(d.iter()) {
        *o = *i;
    }
    i64::from_be_bytes(k)
}

/// The text of a PostgreSQL error: the server's message and SQLSTATE, or the client's error and
/// its cause.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (sqlstate {})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

fn redact(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text,
    }
}

/// Whether the error says the transaction was rolled back because of another writer.
fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

/// Whether the error says the connection is gone (closed, reset, or the server shutting it down).
fn connection_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || matches!(
            e.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        )
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PgEventLog {
    /// The newest schema version this build knows; [`connect`](Self::connect) migrates older
    /// schemas to it and refuses newer ones.
    pub const SCHEMA_VERSION: i64 = 2;

    /// Connects to the database at `url` (a libpq-style `host=… user=… dbname=…` string or a
    /// `postgresql://…` URL; no TLS), creates or migrates the log in `schema`, and registers
    /// `node`: a node seen for the first time in the schema gets a new random incarnation; a node
    /// already registered (another handle, a restart) keeps its incarnation and continues its
    /// chains. Sets `synchronous_commit` for the session from `durability` (see
    /// `docs/postgres.md`, "Durability").
    ///
    /// `schema` must be 1 to 63 bytes of `a-z 0-9 _`, starting with a letter or `_`, and not
    /// `pg_…`; it is created if missing. Several logs can live in one database under different
    /// schemas.
    ///
    /// # Errors
    /// [`PgConnectError`]; its messages never contain the connection string's password. It
    /// converts into [`EventLogError`] with `?`.
    pub fn connect(
        url: &str,
        schema: &str,
        node: NodeId,
        durability: Durability,
    ) -> Result<Self, PgConnectError> {
        if !valid_schema(schema) {
            return Err(PgConnectError::SchemaName(
                schema.chars().take(64).collect(),
            ));
        }
        let mut config: Config = url.parse().map_err(|e: postgres::Error| {
            // The cause alone ("unknown option `x`"): it names options, never values.
            PgConnectError::Url(
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
            )
        })?;
        let secret = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        if config.get_application_name().is_none() {
            config.application_name("nodus-fabric");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let quoted = format!("\"{schema}\"");
        let mut client = open_client(&config, durability)
            .map_err(|e| PgConnectError::Connect(redact(describe(&e), secret.as_deref())))?;
        let storage =
            |e: postgres::Error| PgConnectError::Storage(redact(describe(&e), secret.as_deref()));
        migrate(&mut client, schema, &quoted, secret.as_deref())?;
        let mut stmts = HashMap::new();
        let mut db = Db {
            ex: &mut client,
            stmts: &mut stmts,
            schema: &quoted,
        };
        let fresh = Incarnation::random().map_err(PgConnectError::Random)?;
        let created = sql_int(now_ms().map_err(|e| PgConnectError::Storage(e.to_string()))?);
        db.exec(
            Q::RegisterNode,
            &[&&node.as_bytes()[..], &&fresh.as_bytes()[..], &created],
        )
        .map_err(storage)?;
        let rows = db
            .rows(Q::NodeIncarnation, &[&&node.as_bytes()[..]])
            .map_err(storage)?;
        let incarnation = rows
            .first()
            .and_then(|r| r.try_get::<_, &[u8]>(0).ok())
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Incarnation::from_bytes)
            .ok_or_else(|| PgConnectError::Node {
                schema: schema.to_owned(),
                node,
            })?;
        Ok(PgEventLog {
            conn: Mutex::new(Conn {
                stmts,
                ..Conn::new(client)
            }),
            config,
            schema: schema.to_owned(),
            quoted,
            node: NodeInfo {
                node_id: node,
                incarnation,
            },
            durability,
            secret,
        })
    }

    /// The schema holding this log.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The durability this handle's commits have.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    fn err(&self, e: &postgres::Error) -> EventLogError {
        EventLogError::Storage(redact(describe(e), self.secret.as_deref()))
    }

    /// A failure before the commit was sent: nothing was kept.
    fn fail(&self, e: &postgres::Error) -> Failure {
        if retryable(e) {
            Failure::Retry
        } else if connection_lost(e) {
            Failure::Reconnect
        } else {
            Failure::Fatal(self.err(e))
        }
    }

    /// A failure of the step that commits: a lost connection leaves it unknown whether the
    /// commit happened, so the call is not repeated (an append would be appended twice).
    fn fail_commit(&self, e: &postgres::Error) -> Failure {
        if retryable(e) {
            Failure::Retry
        } else if connection_lost(e) {
            Failure::Fatal(EventLogError::Storage(format!(
                "the connection to postgresql was lost while committing, so the call may or may not have been stored (read the chain to know): {}",
                redact(describe(e), self.secret.as_deref())
            )))
        } else {
            Failure::Fatal(self.err(e))
        }
    }

    /// Runs `f` on the connection (re-established first if it was lost), retrying it while it
    /// reports a conflict with another writer. `f` gets the attempt number, from 0.
    fn run<T>(
        &self,
        mut f: impl FnMut(&mut Conn, u32) -> Result<T, Failure>,
    ) -> Result<T, EventLogError> {
        let mut conn = self.conn.lock();
        let mut attempt = 0u32;
        let mut reconnect = false;
        loop {
            if reconnect || conn.client.is_closed() {
                reconnect = false;
                let client =
                    open_client(&self.config, self.durability).map_err(|e| self.err(&e))?;
                *conn = Conn::new(client);
            }
            match f(&mut conn, attempt) {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Reconnect) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(EventLogError::Storage(
                            "the connection to postgresql keeps failing".to_owned(),
                        ));
                    }
                    reconnect = true;
                }
                Err(Failure::Retry) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(EventLogError::Storage(format!(
                            "gave up after {MAX_ATTEMPTS} conflicts with other writers of schema `{}`",
                            self.schema
                        )));
                    }
                    // Back off a little, more each time, with jitter from the clock.
                    let jitter = u64::from(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.subsec_nanos())
                            % 500,
                    );
                    std::thread::sleep(Duration::from_micros(
                        u64::from(attempt.min(10)) * 200 + jitter,
                    ));
                }
            }
        }
    }

    fn db<'a, E: Exec>(&'a self, ex: &'a mut E, stmts: &'a mut HashMap<Q, Statement>) -> Db<'a, E> {
        Db {
            ex,
            stmts,
            schema: &self.quoted,
        }
    }

    /// One append attempt: optimistic (one read, one conditional write, each its own
    /// transaction) for the first attempts, then with the tenant's lock taken first.
    fn append_once(
        &self,
        conn: &mut Conn,
        attempt: u32,
        tenant: &TenantId,
        events: &[NewEvent],
    ) -> Result<Vec<Event>, Failure> {
        let chain = self.node.chain();
        if attempt < OPTIMISTIC_ATTEMPTS {
            // The first attempt trusts what this handle wrote last, if anything.
            let known = if attempt == 0 {
                conn.known.get(tenant).copied()
            } else {
                None
            };
            let mut db = self.db(&mut conn.client, &mut conn.stmts);
            let out = self.append_in(&mut db, chain, tenant, events, known, true)?;
            return match out {
                Some((events, known)) => {
                    conn.remember(tenant, known);
                    Ok(events)
                }
                None => {
                    conn.known.remove(tenant);
                    Err(Failure::Retry)
                }
            };
        }
        conn.known.remove(tenant);
        let Conn { client, stmts, .. } = conn;
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .map_err(|e| self.fail(&e))?;
        let mut db = self.db(&mut tx, stmts);
        db.rows(Q::LockTenant, &[&tenant.as_str()])
            .map_err(|e| self.fail(&e))?;
        let out = self.append_in(&mut db, chain, tenant, events, None, false)?;
        let Some((out, known)) = out else {
            // Impossible while the lock is held; roll back and try again.
            return Err(Failure::Retry);
        };
        tx.commit().map_err(|e| self.fail_commit(&e))?;
        conn.remember(tenant, known);
        Ok(out)
    }

    /// The tenant's counters and this node's chain head, in one statement (one snapshot).
    fn read_state<E: Exec>(
        &self,
        db: &mut Db<'_, E>,
        chain: ChainId,
        tenant: &TenantId,
    ) -> Result<Known, Failure> {
        let rows = db
            .rows(
                Q::AppendRead,
                &[
                    &tenant.as_str(),
                    &&chain.node_id.as_bytes()[..],
                    &&chain.incarnation.as_bytes()[..],
                ],
            )
            .map_err(|e| self.fail(&e))?;
        let counters = || Failure::Fatal(corrupt_raw(tenant, "-", 0, "tenant counters"));
        let row = rows.first().ok_or_else(counters)?;
        let (lamport, position) = match (opt_int(row, 0), opt_int(row, 1)) {
            (Ok(None), Ok(None)) => (0, 0),
            (Ok(Some(l)), Ok(Some(p))) => (l, p),
            _ => return Err(counters()),
        };
        let head = match (opt_int(row, 2), opt_blob::<32>(row, 3), opt_int(row, 4)) {
            (Ok(None), Ok(None), Ok(None)) => EMPTY_HEAD,
            (Ok(Some(seq)), Ok(Some(hash)), Ok(Some(lamport))) => Head {
                seq,
                hash: EventHash::from_bytes(hash),
                lamport,
            },
            _ => return Err(Failure::Fatal(corrupt(tenant, &chain, 0, "chain head"))),
        };
        Ok(Known {
            lamport,
            position,
            head,
        })
    }

    /// Reads the tenant's counters and the chain head (or takes `known`), builds the events and
    /// writes them if the tenant's position has not moved meanwhile; returns them and the new
    /// state, or `None` when it had moved. `autocommit`: the write statement commits by itself.
    fn append_in<E: Exec>(
        &self,
        db: &mut Db<'_, E>,
        chain: ChainId,
        tenant: &TenantId,
        events: &[NewEvent],
        known: Option<Known>,
        autocommit: bool,
    ) -> Result<Option<(Vec<Event>, Known)>, Failure> {
        let node_id = &chain.node_id.as_bytes()[..];
        let incarnation = &chain.incarnation.as_bytes()[..];
        let Known {
            lamport,
            position,
            head,
        } = match known {
            Some(k) => k,
            None => self.read_state(db, chain, tenant)?,
        };
        let appended = build_append(chain, tenant, head, lamport, position, events.to_vec())
            .map_err(Failure::Fatal)?;
        let n = appended.events.len();
        let mut seqs = Vec::with_capacity(n);
        let mut poss = Vec::with_capacity(n);
        let mut lamports = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut entities = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut model_vers = Vec::with_capacity(n);
        let mut prevs = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut time_ms = 0;
        for (e, pos) in &appended.events {
            seqs.push(sql_int(e.seq));
            poss.push(sql_int(*pos));
            lamports.push(sql_int(e.lamport));
            kinds.push(e.kind.as_str());
            entities.push(e.entity.as_str());
            labels.push(e.label.as_str());
            payloads.push(e.payload.as_str());
            model_vers.push(i64::from(e.model_ver));
            prevs.push(&e.prev_hash.as_bytes()[..]);
            hashes.push(&e.hash.as_bytes()[..]);
            time_ms = sql_int(e.time_ms);
        }
        let written = db
            .exec(
                Q::AppendWrite,
                &[
                    &tenant.as_str(),
                    &node_id,
                    &incarnation,
                    &sql_int(appended.lamport),
                    &sql_int(appended.position),
                    &sql_int(position),
                    &sql_int(appended.head.seq),
                    &&appended.head.hash.as_bytes()[..],
                    &sql_int(appended.head.lamport),
                    &time_ms,
                    &seqs,
                    &poss,
                    &lamports,
                    &kinds,
                    &entities,
                    &labels,
                    &payloads,
                    &model_vers,
                    &prevs,
                    &hashes,
                ],
            )
            .map_err(|e| {
                if autocommit {
                    self.fail_commit(&e)
                } else {
                    self.fail(&e)
                }
            })?;
        if written == 0 {
            return Ok(None);
        }
        if usize::try_from(written).ok() != Some(n) {
            return Err(Failure::Fatal(corrupt(
                tenant,
                &chain,
                appended.head.seq,
                "append wrote another number of events than it built",
            )));
        }
        let known = Known {
            lamport: appended.lamport,
            position: appended.position,
            head: appended.head,
        };
        Ok(Some((
            appended.events.into_iter().map(|(e, _)| e).collect(),
            known,
        )))
    }

    fn ingest_once(
        &self,
        conn: &mut Conn,
        tenant: &TenantId,
        events: &[Event],
    ) -> Result<IngestReport, Failure> {
        // An ingest moves the tenant's position: the next append reads it again.
        conn.known.remove(tenant);
        let Conn { client, stmts, .. } = conn;
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .map_err(|e| self.fail(&e))?;
        let mut store = PgStore {
            db: self.db(&mut tx, stmts),
            tenant,
            failed: None,
        };
        let rows = store
            .db
            .rows(Q::LockTenant, &[&tenant.as_str()])
            .map_err(|e| self.fail(&e))?;
        let counters = match rows.first().map(|r| (opt_int(r, 0), opt_int(r, 1))) {
            Some((Ok(Some(l)), Ok(Some(p)))) => (l, p),
            _ => {
                return Err(Failure::Fatal(corrupt_raw(
                    tenant,
                    "-",
                    0,
                    "tenant counters",
                )));
            }
        };
        let report = engine::ingest(
            &mut store,
            self.node.chain(),
            tenant,
            counters,
            events.to_vec(),
        );
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                return Err(match store.failed.take() {
                    Some(pe) if retryable(&pe) => Failure::Retry,
                    Some(pe) if connection_lost(&pe) => Failure::Reconnect,
                    _ => Failure::Fatal(e),
                });
            }
        };
        tx.commit().map_err(|e| self.fail_commit(&e))?;
        Ok(report)
    }

    /// Runs `f` in a read-only REPEATABLE READ transaction: one snapshot for all its reads.
    fn snapshot<T>(
        &self,
        f: impl Fn(&mut Db<'_, Transaction<'_>>) -> Result<T, Failure>,
    ) -> Result<T, EventLogError> {
        self.run(|conn, _| {
            let Conn { client, stmts, .. } = conn;
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| self.fail(&e))?;
            let out = f(&mut self.db(&mut tx, stmts))?;
            tx.commit().map_err(|e| self.fail(&e))?;
            Ok(out)
        })
    }

    fn query(&self, q: Q, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, EventLogError> {
        self.run(|conn, _| {
            self.db(&mut conn.client, &mut conn.stmts)
                .rows(q, params)
                .map_err(|e| self.fail(&e))
        })
    }
}

fn open_client(config: &Config, durability: Durability) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    let sync = match durability {
        Durability::Full => "on",
        Durability::Normal => "off",
    };
    client.batch_execute(&format!(
        "SET synchronous_commit TO {sync}; SET default_transaction_isolation TO 'read committed'"
    ))?;
    Ok(client)
}

/// Creates the schema if needed and applies the migrations it lacks, under an advisory lock so
/// that nodes opening one schema at once migrate it once.
fn migrate(
    client: &mut Client,
    schema: &str,
    quoted: &str,
    secret: Option<&str>,
) -> Result<(), PgConnectError> {
    let fail = |version: i64| {
        move |e: postgres::Error| PgConnectError::Migrate {
            schema: schema.to_owned(),
            version,
            reason: redact(describe(&e), secret),
        }
    };
    let mut tx = client.transaction().map_err(fail(0))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&migration_lock_key(schema)],
    )
    .map_err(fail(0))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.nodus_schema_version (
             version     BIGINT PRIMARY KEY CHECK (version >= 1),
             description TEXT NOT NULL,
             applied_ms  BIGINT NOT NULL
         );"
    ))
    .map_err(fail(0))?;
    let found: i64 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {quoted}.nodus_schema_version"),
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(fail(0))?;
    if found > PgEventLog::SCHEMA_VERSION {
        return Err(PgConnectError::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            supported: PgEventLog::SCHEMA_VERSION,
        });
    }
    let applied_ms = sql_int(now_ms().map_err(|e| PgConnectError::Storage(e.to_string()))?);
    for (version, description, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > found) {
        tx.batch_execute(&sql.replace("{s}", quoted))
            .map_err(fail(*version))?;
        tx.execute(
            &format!(
                "INSERT INTO {quoted}.nodus_schema_version (version, description, applied_ms) VALUES ($1, $2, $3)"
            ),
            &[version, description, &applied_ms],
        )
        .map_err(fail(*version))?;
    }
    tx.commit().map_err(fail(PgEventLog::SCHEMA_VERSION))
}

// ---------------------------------------------------------------------------------------------
// Row helpers: every value is read with `try_get` and checked, so a row edited to hold anything
// yields `None` or an error, never a panic.

fn int_at(row: &Row, i: usize) -> Option<u64> {
    row.try_get::<_, i64>(i)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

/// A nullable integer column: `Ok(None)` for NULL, `Err` when it does not decode.
fn opt_int(row: &Row, i: usize) -> Result<Option<u64>, ()> {
    match row.try_get::<_, Option<i64>>(i) {
        Ok(None) => Ok(None),
        Ok(Some(v)) => u64::try_from(v).map(Some).map_err(|_| ()),
        Err(_) => Err(()),
    }
}

fn opt_blob<const N: usize>(row: &Row, i: usize) -> Result<Option<[u8; N]>, ()> {
    match row.try_get::<_, Option<&[u8]>>(i) {
        Ok(None) => Ok(None),
        Ok(Some(b)) => b.try_into().map(Some).map_err(|_| ()),
        Err(_) => Err(()),
    }
}

fn blob_at<const N: usize>(row: &Row, i: usize) -> Option<[u8; N]> {
    row.try_get::<_, &[u8]>(i)
        .ok()
        .and_then(|b| b.try_into().ok())
}

fn text_at(row: &Row, i: usize) -> Option<&str> {
    row.try_get::<_, &str>(i).ok()
}

fn chain_at(row: &Row, i: usize) -> Option<ChainId> {
    Some(ChainId {
        node_id: NodeId::from_bytes(blob_at(row, i)?),
        incarnation: Incarnation::from_bytes(blob_at(row, i + 1)?),
    })
}

/// Decodes the event columns (`EVENT_COLS`) of a row of `tenant`. The hash is the stored one,
/// not checked. `Err` names the field that does not decode, with the chain and seq when those do.
fn decode_event(
    tenant: &TenantId,
    row: &Row,
) -> Result<Event, (Option<ChainId>, u64, &'static str)> {
    let chain = chain_at(row, 0);
    let seq = int_at(row, 2).filter(|s| *s >= 1);
    let fail = |field: &'static str| (chain, seq.unwrap_or(0), field);
    let chain = chain.ok_or_else(|| fail("chain id"))?;
    let seq = seq.ok_or_else(|| fail("seq"))?;
    let text = |i: usize, field: &'static str| text_at(row, i).ok_or_else(|| fail(field));
    Ok(Event {
        tenant: tenant.clone(),
        node_id: chain.node_id,
        incarnation: chain.incarnation,
        seq,
        lamport: int_at(row, 3).ok_or_else(|| fail("lamport"))?,
        kind: EventKind::new(text(4, "kind")?).map_err(|_| fail("kind"))?,
        entity: EntityId::new(text(5, "entity")?).map_err(|_| fail("entity"))?,
        label: EventLabel::new(text(6, "label")?).map_err(|_| fail("label"))?,
        payload: Payload::from_stored(text(7, "payload")?.to_owned()),
        model_ver: int_at(row, 8)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| fail("model_ver"))?,
        prev_hash: EventHash::from_bytes(blob_at(row, 9).ok_or_else(|| fail("prev_hash"))?),
        hash: EventHash::from_bytes(blob_at(row, 10).ok_or_else(|| fail("hash"))?),
        time_ms: int_at(row, 11).ok_or_else(|| fail("time_ms"))?,
    })
}

/// Decodes a row and checks its hash: what every read returns.
fn checked_event(tenant: &TenantId, row: &Row) -> Result<Event, EventLogError> {
    let e = decode_event(tenant, row).map_err(|(chain, seq, field)| {
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

// ---------------------------------------------------------------------------------------------
// The ingest store.

/// The PostgreSQL side of [`engine::Store`]: one tenant, inside the call's transaction, which
/// holds the tenant's row lock.
struct PgStore<'a, 't> {
    db: Db<'a, Transaction<'t>>,
    tenant: &'a TenantId,
    /// The database error that ended the ingest, to tell a conflict (retry) from a failure.
    failed: Option<postgres::Error>,
}

impl PgStore<'_, '_> {
    fn err(&mut self, e: postgres::Error) -> EventLogError {
        let out = EventLogError::Storage(describe(&e));
        self.failed = Some(e);
        out
    }

    fn rows(&mut self, q: Q, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, EventLogError> {
        match self.db.rows(q, params) {
            Ok(r) => Ok(r),
            Err(e) => Err(self.err(e)),
        }
    }

    fn exec(&mut self, q: Q, params: &[&(dyn ToSql + Sync)]) -> Result<u64, EventLogError> {
        match self.db.exec(q, params) {
            Ok(n) => Ok(n),
            Err(e) => Err(self.err(e)),
        }
    }

    fn exists(&mut self, q: Q, params: &[&(dyn ToSql + Sync)]) -> Result<bool, EventLogError> {
        let rows = self.rows(q, params)?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get::<_, bool>(0).ok())
            .unwrap_or(false))
    }

    /// Inserts `e` into `events` (with its position) or `pending` (without): one column list
    /// and one binding order for both, `EVENT_COLS`.
    fn insert(&mut self, q: Q, e: &Event, pos: Option<u64>) -> Result<(), EventLogError> {
        let (tenant, kind, entity, label, payload) = (
            e.tenant.as_str(),
            e.kind.as_str(),
            e.entity.as_str(),
            e.label.as_str(),
            e.payload.as_str(),
        );
        let (node_id, incarnation, prev_hash, hash) = (
            &e.node_id.as_bytes()[..],
            &e.incarnation.as_bytes()[..],
            &e.prev_hash.as_bytes()[..],
            &e.hash.as_bytes()[..],
        );
        let (seq, lamport, model_ver, time_ms) = (
            sql_int(e.seq),
            sql_int(e.lamport),
            i64::from(e.model_ver),
            sql_int(e.time_ms),
        );
        let pos_value = sql_int(pos.unwrap_or(0));
        let params: [&(dyn ToSql + Sync); 14] = [
            &tenant,
            &node_id,
            &incarnation,
            &seq,
            &lamport,
            &kind,
            &entity,
            &label,
            &payload,
            &model_ver,
            &prev_hash,
            &hash,
            &time_ms,
            &pos_value,
        ];
        let bound = if pos.is_some() { 14 } else { 13 };
        self.exec(q, params.get(..bound).unwrap_or(&params[..]))?;
        Ok(())
    }
}

impl engine::Store for PgStore<'_, '_> {
    fn load_head(&mut self, chain: &ChainId) -> Result<Head, EventLogError> {
        let rows = self.rows(
            Q::LoadHead,
            &[
                &self.tenant.as_str(),
                &&chain.node_id.as_bytes()[..],
                &&chain.incarnation.as_bytes()[..],
            ],
        )?;
        match rows.first() {
            None => Ok(EMPTY_HEAD),
            Some(row) => match (int_at(row, 0), blob_at::<32>(row, 1), int_at(row, 2)) {
                (Some(seq), Some(hash), Some(lamport)) => Ok(Head {
                    seq,
                    hash: EventHash::from_bytes(hash),
                    lamport,
                }),
                _ => Err(corrupt(self.tenant, chain, 0, "chain head")),
            },
        }
    }

    fn load(
        &mut self,
        chain: &ChainId,
        seq: u64,
        table: Table,
    ) -> Result<Option<Event>, EventLogError> {
        let q = match table {
            Table::Events => Q::LoadEvent,
            Table::Pending => Q::LoadPending,
        };
        let rows = self.rows(
            q,
            &[
                &self.tenant.as_str(),
                &&chain.node_id.as_bytes()[..],
                &&chain.incarnation.as_bytes()[..],
                &sql_int(seq),
            ],
        )?;
        rows.first()
            .map(|row| checked_event(self.tenant, row))
            .transpose()
    }

    fn has_pending(&mut self, chain: &ChainId) -> Result<bool, EventLogError> {
        self.exists(
            Q::HasPending,
            &[
                &self.tenant.as_str(),
                &&chain.node_id.as_bytes()[..],
                &&chain.incarnation.as_bytes()[..],
            ],
        )
    }

    fn any_quarantined(&mut self) -> Result<bool, EventLogError> {
        self.exists(Q::AnyQuarantined, &[&self.tenant.as_str()])
    }

    fn is_quarantined(&mut self, hash: &EventHash) -> Result<bool, EventLogError> {
        self.exists(
            Q::IsQuarantined,
            &[&self.tenant.as_str(), &&hash.as_bytes()[..]],
        )
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
        self.exec(
            Q::Quarantine,
            &[
                &self.tenant.as_str(),
                &k,
                &stored.canonical_bytes(),
                &conflicting.canonical_bytes(),
                &&conflicting.hash.as_bytes()[..],
            ],
        )?;
        Ok(())
    }

    fn hold(&mut self, e: &Event) -> Result<(), EventLogError> {
        self.insert(Q::Hold, e, None)
    }

    fn unhold(&mut self, chain: &ChainId, seq: u64) -> Result<(), EventLogError> {
        self.exec(
            Q::Unhold,
            &[
                &self.tenant.as_str(),
                &&chain.node_id.as_bytes()[..],
                &&chain.incarnation.as_bytes()[..],
                &sql_int(seq),
            ],
        )?;
        Ok(())
    }

    fn insert_event(&mut self, e: &Event, pos: u64) -> Result<(), EventLogError> {
        self.insert(Q::InsertEvent, e, Some(pos))
    }

    fn save_head(&mut self, chain: &ChainId, head: &Head) -> Result<(), EventLogError> {
        self.exec(
            Q::SaveHead,
            &[
                &self.tenant.as_str(),
                &&chain.node_id.as_bytes()[..],
                &&chain.incarnation.as_bytes()[..],
                &sql_int(head.seq),
                &&head.hash.as_bytes()[..],
                &sql_int(head.lamport),
            ],
        )?;
        Ok(())
    }

    fn save_counters(&mut self, lamport: u64, position: u64) -> Result<(), EventLogError> {
        self.exec(
            Q::SaveCounters,
            &[&self.tenant.as_str(), &sql_int(lamport), &sql_int(position)],
        )?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

impl TenantEventLog for PgEventLog {
    fn node(&self) -> NodeInfo {
        self.node
    }

    fn append(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, EventLogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|conn, attempt| self.append_once(conn, attempt, tenant, &events))
    }

    fn ingest(&self, tenant: &TenantId, events: Vec<Event>) -> Result<IngestReport, EventLogError> {
        self.run(|conn, _| self.ingest_once(conn, tenant, &events))
    }

    fn read_chain(
        &self,
        tenant: &TenantId,
        chain: ChainId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, EventLogError> {
        let rows = self.query(
            Q::ReadChain,
            &[
                &tenant.as_str(),
                &&chain.node_id.as_bytes()[..],
                &&chain.incarnation.as_bytes()[..],
                &sql_int(from_seq),
                &sql_limit(limit),
            ],
        )?;
        rows.iter().map(|r| checked_event(tenant, r)).collect()
    }

    fn read_tenant(
        &self,
        tenant: &TenantId,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<Cursor>), EventLogError> {
        let from = cursor.map_or(0, Cursor::position);
        let rows = self.query(
            Q::ReadTenant,
            &[&tenant.as_str(), &sql_int(from), &sql_limit(limit)],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last = cursor;
        for row in &rows {
            let e = checked_event(tenant, row)?;
            let pos = int_at(row, 12).ok_or_else(|| corrupt(tenant, &e.chain(), e.seq, "pos"))?;
            last = Some(Cursor::from_position(pos));
            out.push(e);
        }
        Ok((out, last))
    }

    fn high_water_marks(&self, tenant: &TenantId) -> Result<VersionVector, EventLogError> {
        let rows = self.query(Q::Heads, &[&tenant.as_str()])?;
        let mut out = VersionVector::new();
        for row in &rows {
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
        let rows = self.query(Q::Pending, &[&tenant.as_str()])?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
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
        let rows = self.query(Q::Quarantined, &[&tenant.as_str()])?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let bad = |what: &str| corrupt_raw(tenant, "?", 0, &format!("quarantined {what}"));
            let kind = match text_at(row, 0) {
                Some("same_seq") => EquivocationKind::SameSeq,
                Some("fork") => EquivocationKind::Fork,
                _ => return Err(bad("kind")),
            };
            let decode = |i: usize| {
                row.try_get::<_, &[u8]>(i)
                    .ok()
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
        self.snapshot(|db| {
            let mut walk = Verifier::default();
            let fail = |e: postgres::Error| self.fail(&e);
            for row in &db.rows(Q::Heads, &[&tenant.as_str()]).map_err(fail)? {
                walk.head(chain_at(row, 0), int_at(row, 2), blob_at::<32>(row, 3));
            }
            for row in &db
                .rows(Q::VerifyEvents, &[&tenant.as_str()])
                .map_err(fail)?
            {
                walk.row(VerifyRow {
                    event: decode_event(tenant, row).map_err(|(chain, seq, _)| (chain, seq)),
                    pos: int_at(row, 12),
                });
            }
            let counters = db
                .rows(Q::Counters, &[&tenant.as_str()])
                .map_err(fail)?
                .first()
                .map(|r| (int_at(r, 0), int_at(r, 1)));
            Ok(walk.finish(counters))
        })
    }
}
