//! Applying fabric events to projections: one pure function of (projection, event), commutative
//! for object events so that any arrival order of the same events gives the same projections.

use nodus_policy::TenantId;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension as _};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    OBJECT_CREATED, OBJECT_DELETED, OBJECT_UPDATED, Result, TYPE_DEFINED, VersionRow, corrupt,
    load_rows,
};
use crate::event::{Event, Payload};
use crate::types::TypeDoc;

/// The merge stamp of an event: `(lamport, node_id, incarnation)` as text that sorts like the
/// tuple (fixed-width lamport, fixed-width ids).
pub(crate) fn stamp(e: &Event) -> String {
    format!("{:020}/{}/{}", e.lamport, e.node_id, e.incarnation)
}

#[derive(Deserialize)]
struct ObjectPayload {
    #[serde(rename = "type")]
    type_name: String,
    id: String,
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    set: Map<String, Value>,
    #[serde(default)]
    unset: Vec<String>,
    /// Envelopes of encrypted fields by field (`objects/fields.rs`).
    #[serde(default)]
    sealed: Map<String, Value>,
}

/// Applies one event. `Ok(false)` when the event is of a fabric kind but its payload is not
/// well formed (it has no effect); events of other kinds are not the fabric's (`Ok(true)`).
pub(crate) fn apply_event(conn: &Connection, tenant: &TenantId, e: &Event) -> Result<bool> {
    match e.kind.as_str() {
        TYPE_DEFINED => apply_type(conn, tenant, e),
        OBJECT_CREATED | OBJECT_UPDATED | OBJECT_DELETED => {
            apply_object(conn, tenant, e).map(|r| r.is_some())
        }
        super::fields::FIELD_REWRAPPED => super::fields::apply_rewrap(conn, tenant, e),
        _ => Ok(true),
    }
}

fn apply_type(conn: &Connection, tenant: &TenantId, e: &Event) -> Result<bool> {
    let Ok(doc) = e
        .payload
        .to_value()
        .ok()
        .map(serde_json::from_value::<TypeDoc>)
        .transpose()
    else {
        return Ok(false);
    };
    let Some(doc) = doc else {
        return Ok(false);
    };
    let s = stamp(e);
    let version = i64::from(doc.version);
    let indexed: Vec<&str> = doc
        .fields
        .iter()
        .filter(|(_, m)| m.indexed && !m.encrypted)
        .map(|(f, _)| f.as_str())
        .collect();
    let indexed_text = serde_json::to_string(&indexed).map_err(corrupt)?;
    // The definition kept is the one with the highest (version, stamp).
    let changed = conn
        .prepare_cached(
            "INSERT INTO fabric_types (tenant, name, version, stamp, doc, indexed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tenant, name) DO UPDATE SET version = excluded.version,
                 stamp = excluded.stamp, doc = excluded.doc, indexed = excluded.indexed
             WHERE (excluded.version, excluded.stamp) > (fabric_types.version, fabric_types.stamp)",
        )?
        .execute(rusqlite::params![
            tenant.as_str(),
            doc.name.as_str(),
            version,
            s,
            e.payload.as_str(),
            indexed_text
        ])?;
    if changed > 0 {
        reindex_type(conn, tenant, doc.name.as_str(), &indexed)?;
    }
    Ok(true)
}

/// The indexed (and not encrypted) fields of a type as its projection row records them; none
/// when the type is not (yet) known, e.g. when a peer's objects arrive before its definition.
fn indexed_fields(conn: &Connection, tenant: &TenantId, type_name: &str) -> Result<Vec<String>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT indexed FROM fabric_types WHERE tenant = ?1 AND name = ?2")?
        .query_row([tenant.as_str(), type_name], |r| r.get(0))
        .optional()?;
    text.map_or_else(
        || Ok(Vec::new()),
        |t| serde_json::from_str(&t).map_err(|_| corrupt(format!("type `{type_name}`"))),
    )
}

/// Rewrites the index rows of every stored version of a type after its indexed fields changed.
fn reindex_type(
    conn: &Connection,
    tenant: &TenantId,
    type_name: &str,
    indexed: &[&str],
) -> Result<()> {
    conn.prepare_cached("DELETE FROM fabric_index WHERE tenant = ?1 AND type = ?2")?
        .execute([tenant.as_str(), type_name])?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, label, data FROM fabric_objects WHERE tenant = ?1 AND type = ?2",
    )?;
    let mut rows = stmt.query([tenant.as_str(), type_name])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let label: String = r.get(1)?;
        let data: String = r.get(2)?;
        let data: Map<String, Value> = serde_json::from_str(&data)
            .map_err(|_| corrupt(format!("object `{type_name}/{id}`")))?;
        insert_index(
            conn,
            tenant,
            type_name,
            &id,
            &label,
            &data,
            indexed.iter().copied(),
        )?;
    }
    Ok(())
}

/// The index rows of one version: one per indexed field, absent fields included (tag
/// [`ABSENT`]), so that a sort on the field can walk the index alone.
fn insert_index<'f>(
    conn: &Connection,
    tenant: &TenantId,
    type_name: &str,
    id: &str,
    label: &str,
    data: &Map<String, Value>,
    indexed: impl Iterator<Item = &'f str>,
) -> Result<()> {
    let mut ins = conn.prepare_cached(
        "INSERT INTO fabric_index (tenant, type, id, label, field, t, v) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for field in indexed {
        let (t, v) = data
            .get(field)
            .map_or((ABSENT, SqlValue::Integer(0)), index_value);
        ins.execute(rusqlite::params![
            tenant.as_str(),
            type_name,
            id,
            label,
            field,
            t,
            v
        ])?;
    }
    Ok(())
}

/// The index tag of a field the version does not have.
pub(crate) const ABSENT: i64 = -1;

fn set_field(row: &mut VersionRow, field: &str, value: Option<&Value>, s: &str) {
    if s < row.reset.as_str() {
        return;
    }
    if row.stamps.get(field).is_some_and(|old| old.as_str() >= s) {
        return;
    }
    row.stamps.insert(field.to_owned(), s.to_owned());
    match value {
        Some(v) => {
            row.data.insert(field.to_owned(), v.clone());
        }
        None => {
            row.data.remove(field);
        }
    }
}

/// Applies one object event; the labelled version after it, or `None` when the payload is not
/// well formed (no effect).
pub(crate) fn apply_object(
    conn: &Connection,
    tenant: &TenantId,
    e: &Event,
) -> Result<Option<VersionRow>> {
    apply_object_checked(conn, tenant, e, |_| Ok(()))
}

/// [`apply_object`], with `check` run on the stored version at the event's label (if any)
/// before anything is written: a local write's precondition (a create's "no live version", an
/// update's expected version) decided on the row the apply reads anyway, not on a second read.
pub(crate) fn apply_object_checked(
    conn: &Connection,
    tenant: &TenantId,
    e: &Event,
    check: impl FnOnce(Option<&VersionRow>) -> Result<()>,
) -> Result<Option<VersionRow>> {
    // Straight from the canonical text (no intermediate `Value` tree).
    let Ok(p) = serde_json::from_str::<ObjectPayload>(e.payload.as_str()) else {
        return Ok(None);
    };
    let label = e.label.as_str();
    let stored = load_rows(conn, tenant, &p.type_name, &p.id, Some(label))?
        .into_iter()
        .next();
    check(stored.as_ref())?;
    let existed = stored.is_some();
    let mut row = stored.unwrap_or_else(|| VersionRow {
        label: label.to_owned(),
        ..VersionRow::default()
    });
    let s = stamp(e);
    // Encrypted fields: whether this event may drop stored envelopes (`objects/fields.rs`).
    let may_drop = !p.unset.is_empty() || (existed && e.kind.as_str() == OBJECT_CREATED);
    row.version = row.version.saturating_add(1);
    let (kind, change) = match e.kind.as_str() {
        OBJECT_CREATED => {
            let Some(data) = p.data else {
                return Ok(None);
            };
            if s > row.reset {
                row.reset.clone_from(&s);
                let reset = row.reset.clone();
                let stale: Vec<String> = row
                    .stamps
                    .iter()
                    .filter(|(_, st)| st.as_str() < reset.as_str())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    row.stamps.remove(&k);
                    row.data.remove(&k);
                }
            }
            for (k, v) in &data {
                set_field(&mut row, k, Some(v), &s);
            }
            if s > row.del_stamp {
                row.del_stamp.clone_from(&s);
                row.deleted = false;
            }
            ("created", serde_json::json!({"set": data, "unset": []}))
        }
        OBJECT_UPDATED => {
            for (k, v) in &p.set {
                set_field(&mut row, k, Some(v), &s);
            }
            for k in &p.unset {
                set_field(&mut row, k, None, &s);
            }
            (
                "updated",
                serde_json::json!({"set": p.set, "unset": p.unset}),
            )
        }
        _ => {
            if s > row.del_stamp {
                row.del_stamp.clone_from(&s);
                row.deleted = true;
            }
            ("deleted", serde_json::json!({"set": {}, "unset": []}))
        }
    };
    save_row(conn, tenant, &p.type_name, &p.id, &row, existed)?;
    super::fields::apply_object_fields(
        conn,
        tenant,
        &p.type_name,
        &p.id,
        &row,
        &p.sealed,
        may_drop,
        &s,
    )?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO fabric_history (tenant, type, id, stamp, label, kind, change)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(rusqlite::params![
        tenant.as_str(),
        p.type_name,
        p.id,
        s,
        label,
        kind,
        canonical(&change)
    ])?;
    Ok(Some(row))
}

/// Canonical JSON text (the payload form), or compact JSON if too deep.
pub(crate) fn canonical(v: &Value) -> String {
    Payload::from_value(v).map_or_else(|_| v.to_string(), |p| p.as_str().to_owned())
}

/// The index form of a JSON value: a type tag (0 null, 1 boolean, 2 number, 3 string, 4 array or
/// object) and an SQLite value that orders within the tag (numbers numerically, strings by
/// their UTF-8 bytes, arrays and objects by their canonical text).
pub(crate) fn index_value(v: &Value) -> (i64, SqlValue) {
    match v {
        Value::Null => (0, SqlValue::Integer(0)),
        Value::Bool(b) => (1, SqlValue::Integer(i64::from(*b))),
        Value::Number(n) => (
            2,
            n.as_i64().map_or_else(
                || SqlValue::Real(n.as_f64().unwrap_or(0.0)),
                SqlValue::Integer,
            ),
        ),
        Value::String(s) => (3, SqlValue::Text(s.clone())),
        other => (4, SqlValue::Text(canonical(other))),
    }
}

fn save_row(
    conn: &Connection,
    tenant: &TenantId,
    type_name: &str,
    id: &str,
    row: &VersionRow,
    existed: bool,
) -> Result<()> {
    let data = canonical(&Value::Object(row.data.clone()));
    let stamps = serde_json::to_string(&row.stamps).map_err(corrupt)?;
    let version = i64::try_from(row.version).map_err(|_| corrupt("version overflow"))?;
    conn.prepare_cached(
        "INSERT INTO fabric_objects (tenant, type, id, label, version, deleted, data, stamps, reset, del_stamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (tenant, type, id, label) DO UPDATE SET version = excluded.version,
             deleted = excluded.deleted, data = excluded.data, stamps = excluded.stamps,
             reset = excluded.reset, del_stamp = excluded.del_stamp",
    )?
    .execute(rusqlite::params![
        tenant.as_str(),
        type_name,
        id,
        row.label,
        version,
        i64::from(row.deleted),
        data,
        stamps,
        row.reset,
        row.del_stamp
    ])?;
    // A new labelled version has no index rows yet, and its label may be new for the type.
    if existed {
        conn.prepare_cached(
            "DELETE FROM fabric_index WHERE tenant = ?1 AND type = ?2 AND id = ?3 AND label = ?4",
        )?
        .execute(rusqlite::params![tenant.as_str(), type_name, id, row.label])?;
    } else {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO fabric_labels (tenant, type, label) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![tenant.as_str(), type_name, row.label])?;
    }
    let indexed = indexed_fields(conn, tenant, type_name)?;
    insert_index(
        conn,
        tenant,
        type_name,
        id,
        &row.label,
        &row.data,
        indexed.iter().map(String::as_str),
    )
}
