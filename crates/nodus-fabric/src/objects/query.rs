//! Lists, counts and histories: compiled to SQL over the index projection, after the choice rule.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nodus_policy::{PolicySnapshot, Subject, TenantId};
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::apply::{ABSENT, index_value};
use super::{
    Fabric, FabricError, HistoryEntry, HistoryKind, MAX_PAGE, ObjectView, Result, VersionRow,
    corrupt, load_versions, mask, ranked_visible,
};
use crate::types::TypeDef;

/// A comparison of [`Predicate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The field equals the value (same JSON type; `1` equals `1.0`).
    Eq,
    /// The field is absent or does not equal the value (the negation of `Eq`).
    Ne,
    /// The field is of the value's JSON type and below it.
    Lt,
    /// The field is of the value's JSON type and at most it.
    Le,
    /// The field is of the value's JSON type and above it.
    Gt,
    /// The field is of the value's JSON type and at least it.
    Ge,
    /// The field equals one of the values (the value is a JSON array; empty matches nothing).
    In,
    /// The field is present (any value, `null` included); the value is ignored.
    Exists,
    /// The field is a string starting with the value (a string).
    Prefix,
}

/// One condition on a top-level **indexed** field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Predicate {
    /// The top-level field.
    pub field: String,
    /// The comparison.
    pub op: Op,
    /// The operand (`null` for `Exists`).
    #[serde(default)]
    pub value: Value,
}

impl Predicate {
    /// A predicate.
    pub fn new(field: impl Into<String>, op: Op, value: Value) -> Self {
        Predicate {
            field: field.into(),
            op,
            value,
        }
    }
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// What [`Fabric::list`] returns.
///
/// Items are ordered by the sort field's value — absent first, then `null`, booleans
/// (`false < true`), numbers (numerically), strings (by UTF-8 bytes), arrays and objects (by
/// canonical text) — then by id, all reversed for [`Direction::Desc`]; without a sort, by id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListQuery {
    /// The type.
    pub type_name: String,
    /// Conditions, all of which must hold.
    pub filter: Vec<Predicate>,
    /// The indexed field to sort by, and the direction.
    pub sort: Option<(String, Direction)>,
    /// Most items in the page: 1 to [`MAX_PAGE`].
    pub limit: usize,
    /// Where to continue: a previous page's `next_cursor` for the same type and sort.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// All objects of `type_name`, by id, 100 per page.
    pub fn new(type_name: impl Into<String>) -> Self {
        ListQuery {
            type_name: type_name.into(),
            filter: Vec::new(),
            sort: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// One page of [`Fabric::list`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The items.
    pub items: Vec<ObjectView>,
    /// The cursor of the next page, when there are more items.
    pub next_cursor: Option<String>,
}

/// The cursor's content: the last item's sort key and id (both visible to the caller), and the
/// sort it belongs to.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorDoc {
    s: Option<String>,
    d: bool,
    t: i64,
    v: Value,
    id: String,
}

fn encode_cursor(doc: &CursorDoc) -> Result<String> {
    let bytes = serde_json::to_vec(doc).map_err(corrupt)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn decode_cursor(text: &str, sort: Option<&str>, desc: bool) -> Result<(i64, SqlValue, String)> {
    let bad = |reason| FabricError::BadCursor { reason };
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad("it is not a cursor this fabric produced"))?;
    let doc: CursorDoc = serde_json::from_slice(&bytes)
        .map_err(|_| bad("it is not a cursor this fabric produced"))?;
    if doc.s.as_deref() != sort || doc.d != desc {
        return Err(bad("it belongs to a query with another sort"));
    }
    let v = match &doc.v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().ok_or(bad("malformed sort value"))?),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        _ => return Err(bad("malformed sort value")),
    };
    Ok((doc.t, v, doc.id))
}

fn sql_to_json(v: &SqlValue) -> Value {
    match v {
        SqlValue::Integer(i) => Value::from(*i),
        SqlValue::Real(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        SqlValue::Text(s) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

/// SQL text and its positional parameters, built together so they stay in step.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<SqlValue>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }
    fn bind(&mut self, v: impl Into<SqlValue>) -> &mut Self {
        self.text.push('?');
        self.params.push(v.into());
        self
    }
}

/// Refuses a filter or sort on a field that is not indexed, is encrypted or is classified above
/// the subject.
fn check_field(def: &TypeDef, snap: &PolicySnapshot, subject: &Subject, field: &str) -> Result<()> {
    let meta = def.field(field);
    if meta.is_some_and(|m| m.encrypted) {
        return Err(FabricError::FilterEncrypted {
            field: field.to_owned(),
        });
    }
    if !meta.is_some_and(|m| m.indexed) {
        return Err(FabricError::FilterNotIndexed {
            field: field.to_owned(),
        });
    }
    if def
        .classification(field)
        .is_some_and(|c| !snap.can_read(subject, c))
    {
        return Err(FabricError::FieldNotReadable {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// Where a query starts: the rows it walks in output order, so that a page stops after `limit`
/// matches instead of choosing the visible version of every object first.
enum Driver<'q> {
    /// `fabric_objects` by id (no sort, no equality predicate).
    Objects,
    /// `fabric_index` rows of one field, by `(t, v, id)`: the sort field, or (without a sort)
    /// the field of an equality predicate, restricted to its value and so walked by id.
    Index {
        field: &'q str,
        eq: Option<(i64, SqlValue)>,
    },
}

impl<'q> Driver<'q> {
    fn choose(sort: Option<&'q str>, filter: &'q [Predicate]) -> Self {
        if let Some(field) = sort {
            return Driver::Index { field, eq: None };
        }
        filter
            .iter()
            .find(|p| p.op == Op::Eq)
            .map_or(Driver::Objects, |p| Driver::Index {
                field: &p.field,
                eq: Some(index_value(&p.value)),
            })
    }
}

/// `WITH vis(label, rnk) …`: the labels the subject may read with their rank.
fn with_visible(sql: &mut Sql, vis: &[(String, i64)]) {
    sql.push("WITH vis(label, rnk) AS (VALUES ");
    for (i, (label, rank)) in vis.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(")
            .bind(label.clone())
            .push(", ")
            .bind(*rank)
            .push(")");
    }
    sql.push(") ");
}

/// `FROM … WHERE …` selecting, in the driver's order, the version of each object a read returns
/// (a live version at a visible label with no live version at a higher-ranked visible label),
/// as `o`; with an index driver, `d` is the driving index row.
fn chosen_versions(
    sql: &mut Sql,
    tenant: &TenantId,
    def: &TypeDef,
    vis: &[(String, i64)],
    driver: &Driver<'_>,
) {
    match driver {
        Driver::Objects => {
            sql.push("FROM fabric_objects o WHERE o.tenant = ")
                .bind(tenant.as_str().to_owned())
                .push(" AND o.type = ")
                .bind(def.name().to_string());
        }
        Driver::Index { field, eq } => {
            sql.push(
                "FROM fabric_index d INDEXED BY fabric_index_by_value CROSS JOIN fabric_objects o \
                 WHERE d.tenant = ",
            )
            .bind(tenant.as_str().to_owned())
            .push(" AND d.type = ")
            .bind(def.name().to_string())
            .push(" AND d.field = ")
            .bind((*field).to_owned());
            if let Some((t, v)) = eq {
                sql.push(" AND d.t = ")
                    .bind(*t)
                    .push(" AND d.v = ")
                    .bind(v.clone());
            }
            sql.push(
                " AND o.tenant = d.tenant AND o.type = d.type AND o.id = d.id AND o.label = d.label",
            );
        }
    }
    sql.push(" AND o.deleted = 0 AND o.label IN (SELECT label FROM vis)");
    if vis.len() > 1 {
        sql.push(
            " AND NOT EXISTS (SELECT 1 FROM fabric_objects h WHERE h.tenant = o.tenant \
             AND h.type = o.type AND h.id = o.id AND h.deleted = 0 AND h.label IN \
             (SELECT label FROM vis WHERE rnk > (SELECT rnk FROM vis WHERE label = o.label)))",
        );
    }
}

fn index_cond(sql: &mut Sql, field: &str) {
    sql.push(
        "SELECT 1 FROM fabric_index i WHERE i.tenant = o.tenant AND i.type = o.type \
         AND i.id = o.id AND i.label = o.label AND i.field = ",
    )
    .bind(field.to_owned());
}

fn predicates(
    sql: &mut Sql,
    def: &TypeDef,
    snap: &PolicySnapshot,
    subject: &Subject,
    filter: &[Predicate],
) -> Result<()> {
    for p in filter {
        check_field(def, snap, subject, &p.field)?;
        let bad = |reason: &str| FabricError::BadQuery {
            reason: format!("`{}`: {reason}", p.field),
        };
        sql.push(" AND ");
        if p.op == Op::Ne {
            sql.push("NOT ");
        }
        sql.push("EXISTS (");
        index_cond(sql, &p.field);
        match p.op {
            Op::Exists => {
                sql.push(" AND i.t <> ").bind(ABSENT);
            }
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let (t, v) = index_value(&p.value);
                let cmp = match p.op {
                    Op::Lt => " < ",
                    Op::Le => " <= ",
                    Op::Gt => " > ",
                    Op::Ge => " >= ",
                    _ => " = ",
                };
                sql.push(" AND i.t = ")
                    .bind(t)
                    .push(" AND i.v")
                    .push(cmp)
                    .bind(v);
            }
            Op::In => {
                let Value::Array(items) = &p.value else {
                    return Err(bad("`in` takes an array"));
                };
                sql.push(" AND (0");
                for item in items {
                    let (t, v) = index_value(item);
                    sql.push(" OR (i.t = ")
                        .bind(t)
                        .push(" AND i.v = ")
                        .bind(v)
                        .push(")");
                }
                sql.push(")");
            }
            Op::Prefix => {
                let Value::String(prefix) = &p.value else {
                    return Err(bad("`prefix` takes a string"));
                };
                let n = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
                sql.push(" AND i.t = 3 AND substr(i.v, 1, ")
                    .bind(n)
                    .push(") = ")
                    .bind(prefix.clone());
            }
        }
        sql.push(")");
    }
    Ok(())
}

fn visible(
    fabric: &Fabric,
    tenant: &TenantId,
    snap: &PolicySnapshot,
    subject: &Subject,
    def: &TypeDef,
) -> Result<Vec<(String, i64)>> {
    let labels: Vec<String> = fabric.read(|c| {
        let mut stmt =
            c.prepare_cached("SELECT label FROM fabric_labels WHERE tenant = ?1 AND type = ?2")?;
        let rows = stmt.query_map([tenant.as_str(), def.name().as_str()], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
    })?;
    Ok(ranked_visible(
        snap,
        subject,
        labels.iter().map(String::as_str),
    ))
}

pub(super) fn list(
    fabric: &Fabric,
    tenant: &TenantId,
    snap: &PolicySnapshot,
    subject: &Subject,
    def: &TypeDef,
    q: &ListQuery,
) -> Result<Page> {
    if q.limit == 0 || q.limit > MAX_PAGE {
        return Err(FabricError::BadQuery {
            reason: format!("the limit is 1 to {MAX_PAGE}"),
        });
    }
    if let Some((field, _)) = &q.sort {
        check_field(def, snap, subject, field)?;
    }
    let desc = matches!(q.sort, Some((_, Direction::Desc)));
    let sort_field = q.sort.as_ref().map(|(f, _)| f.as_str());
    let after = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, sort_field, desc))
        .transpose()?;
    // Validate every predicate even when nothing is visible, so errors do not depend on data.
    let mut preds = Sql::default();
    predicates(&mut preds, def, snap, subject, &q.filter)?;
    let vis = visible(fabric, tenant, snap, subject, def)?;
    if vis.is_empty() {
        return Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        });
    }
    let driver = Driver::choose(sort_field, &q.filter);
    let mut sql = Sql::default();
    with_visible(&mut sql, &vis);
    let (key_t, key_v, key_id) = match (&driver, sort_field) {
        (Driver::Objects, _) => ("-1", "0", "o.id"),
        (Driver::Index { .. }, Some(_)) => ("d.t", "d.v", "d.id"),
        (Driver::Index { .. }, None) => ("-1", "0", "d.id"),
    };
    sql.push(&format!(
        "SELECT o.id, o.label, o.version, o.data, {key_t}, {key_v} "
    ));
    chosen_versions(&mut sql, tenant, def, &vis, &driver);
    sql.text.push_str(&preds.text);
    sql.params.append(&mut preds.params);
    let (cmp, dir) = if desc {
        (" < ", " DESC")
    } else {
        (" > ", " ASC")
    };
    if let Some((t, v, id)) = after {
        if sort_field.is_some() {
            sql.push(&format!(" AND ({key_t}, {key_v}, {key_id})"))
                .push(cmp)
                .push("(")
                .bind(t)
                .push(", ")
                .bind(v)
                .push(", ")
                .bind(id)
                .push(")");
        } else {
            sql.push(&format!(" AND {key_id}")).push(cmp).bind(id);
        }
    }
    if sort_field.is_some() {
        sql.push(&format!(
            " ORDER BY {key_t}{dir}, {key_v}{dir}, {key_id}{dir} LIMIT "
        ));
    } else {
        sql.push(&format!(" ORDER BY {key_id}{dir} LIMIT "));
    }
    sql.bind(i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX));
    type Raw = (String, String, i64, String, i64, SqlValue);
    let rows: Vec<Raw> = fabric.read(|c| {
        let mut stmt = c.prepare_cached(&sql.text)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(sql.params.iter()), |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<Raw>>>()?)
    })?;
    let more = rows.len() > q.limit;
    let mut items = Vec::new();
    let mut last = None;
    for (id, label, version, data, st, sv) in rows.into_iter().take(q.limit) {
        let bad = || corrupt(format!("object `{}/{id}`", def.name()));
        let data: Map<String, Value> = serde_json::from_str(&data).map_err(|_| bad())?;
        items.push(ObjectView {
            type_name: def.name().to_string(),
            id: id.clone(),
            label,
            version: u64::try_from(version).map_err(|_| bad())?,
            data: Value::Object(mask(Some(def), snap, subject, data)),
        });
        last = Some(CursorDoc {
            s: sort_field.map(str::to_owned),
            d: desc,
            t: st,
            v: sql_to_json(&sv),
            id,
        });
    }
    let next_cursor = match (more, last) {
        (true, Some(doc)) => Some(encode_cursor(&doc)?),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}

pub(super) fn count(
    fabric: &Fabric,
    tenant: &TenantId,
    snap: &PolicySnapshot,
    subject: &Subject,
    def: &TypeDef,
    filter: &[Predicate],
) -> Result<u64> {
    let mut preds = Sql::default();
    predicates(&mut preds, def, snap, subject, filter)?;
    let vis = visible(fabric, tenant, snap, subject, def)?;
    if vis.is_empty() {
        return Ok(0);
    }
    let driver = Driver::choose(None, filter);
    let mut sql = Sql::default();
    with_visible(&mut sql, &vis);
    sql.push("SELECT count(*) ");
    chosen_versions(&mut sql, tenant, def, &vis, &driver);
    sql.text.push_str(&preds.text);
    sql.params.append(&mut preds.params);
    let n: i64 = fabric.read(|c| {
        Ok(c.prepare_cached(&sql.text)?
            .query_row(rusqlite::params_from_iter(sql.params.iter()), |r| r.get(0))?)
    })?;
    u64::try_from(n).map_err(corrupt)
}

pub(super) fn history(
    fabric: &Fabric,
    tenant: &TenantId,
    snap: &PolicySnapshot,
    subject: &Subject,
    def: &TypeDef,
    id: &str,
) -> Result<Vec<HistoryEntry>> {
    let tname = def.name().to_string();
    let (rows, events) = fabric.read(|c: &Connection| {
        let rows: Vec<VersionRow> = load_versions(c, tenant, &tname, id)?;
        let mut stmt = c.prepare_cached(
            "SELECT label, kind, change FROM fabric_history WHERE tenant = ?1 AND type = ?2 AND id = ?3 ORDER BY stamp",
        )?;
        let events = stmt
            .query_map([tenant.as_str(), tname.as_str(), id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((rows, events))
    })?;
    let vis = ranked_visible(snap, subject, rows.iter().map(|r| r.label.as_str()));
    if vis.is_empty() {
        return Err(FabricError::NotFound {
            type_name: tname,
            id: id.to_owned(),
        });
    }
    #[derive(Deserialize)]
    struct Change {
        set: Map<String, Value>,
        unset: Vec<String>,
    }
    let mut ordinal: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (label, kind, change) in events {
        if !vis.iter().any(|(l, _)| *l == label) {
            continue;
        }
        let n = ordinal.entry(label.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let bad = || corrupt(format!("history of `{tname}/{id}`"));
        let change: Change = serde_json::from_str(&change).map_err(|_| bad())?;
        let kind = match kind.as_str() {
            "created" => HistoryKind::Created,
            "updated" => HistoryKind::Updated,
            "deleted" => HistoryKind::Deleted,
            _ => return Err(bad()),
        };
        let unset = change
            .unset
            .into_iter()
            .filter(|k| {
                def.classification(k)
                    .is_none_or(|c| snap.can_read(subject, c))
            })
            .collect();
        out.push(HistoryEntry {
            label,
            version: *n,
            kind,
            set: mask(Some(def), snap, subject, change.set),
            unset,
        });
    }
    Ok(out)
}
