//! The SQLite schema and the queries shared by the log, verification and export.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::{Connection, OpenFlags};

use super::error::{AuditError, storage};
use super::record::{AuditRecord, StoredRecord};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, leaf BLOB NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL, time_ms INTEGER NOT NULL);
";

pub(crate) static MEMORY_DB: AtomicU64 = AtomicU64::new(0);

pub(crate) fn open_conn(target: &str, uri: bool) -> Result<Connection, AuditError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if uri {
        flags |= OpenFlags::SQLITE_OPEN_URI;
    }
    let c = Connection::open_with_flags(target, flags).map_err(storage)?;
    c.busy_timeout(Duration::from_secs(10)).map_err(storage)?;
    Ok(c)
}

/// Everything a verification needs, from a database or an export.
pub(crate) struct Material {
    pub(crate) origin: String,
    pub(crate) key_name: String,
    pub(crate) public_key: [u8; 32],
    pub(crate) records: Vec<(u64, Vec<u8>, Option<Vec<u8>>)>,
    pub(crate) checkpoints: Vec<(u64, String)>,
}

pub(crate) fn load_material(conn: &Connection) -> Result<Material, AuditError> {
    let meta = |k: &str| -> Result<Option<String>, AuditError> {
        conn.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| {
            r.get::<_, String>(0)
        })
        .map(Some)
        .or_else(|e| {
            if matches!(e, rusqlite::Error::QueryReturnedNoRows) {
                Ok(None)
            } else {
                Err(storage(e))
            }
        })
    };
    let origin = meta("origin")?.unwrap_or_default();
    let key_name = meta("key_name")?.unwrap_or_else(|| origin.clone());
    let pk = meta("public_key")?
        .and_then(|p| B64.decode(p).ok())
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .unwrap_or([0; 32]);
    let mut stmt = conn
        .prepare("SELECT seq, leaf, hash FROM records ORDER BY seq")
        .map_err(storage)?;
    let records = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Vec<u8>>(1)?,
                Some(r.get::<_, Vec<u8>>(2)?),
            ))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    let mut stmt = conn
        .prepare("SELECT size, note FROM checkpoints ORDER BY size")
        .map_err(storage)?;
    let checkpoints = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    Ok(Material {
        origin,
        key_name,
        public_key: pk,
        records,
        checkpoints,
    })
}

pub(crate) fn tail_conn(conn: &Connection, n: usize) -> Result<Vec<StoredRecord>, AuditError> {
    let mut stmt = conn
        .prepare("SELECT seq, leaf FROM records ORDER BY seq DESC LIMIT ?1")
        .map_err(storage)?;
    let rows = stmt
        .query_map([n as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, leaf) in rows.into_iter().rev() {
        let (_, record) = AuditRecord::decode(&leaf)
            .map_err(|e| AuditError::Storage(format!("record {seq}: {e}")))?;
        out.push(StoredRecord { seq, record });
    }
    Ok(out)
}
