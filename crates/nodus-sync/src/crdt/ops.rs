//! The ops language of [`CrdtStore::change`](super::CrdtStore::change), and the mapping between
//! JSON and automerge values.

use std::borrow::Cow;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value as AmValue};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::MAX_DEPTH;

/// One step of a [path](DocOp): a key of a map or a position in a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathElem {
    /// A key of a map (a JSON string in the path).
    Key(String),
    /// A position in a list, from 0 (a JSON non-negative integer in the path).
    Index(usize),
}

impl From<&str> for PathElem {
    fn from(k: &str) -> Self {
        PathElem::Key(k.to_owned())
    }
}

impl From<usize> for PathElem {
    fn from(i: usize) -> Self {
        PathElem::Index(i)
    }
}

/// One op of a change, written as a JSON object with an `"op"` tag (see `docs/sync.md`, "CRDT
/// documents"). A `path` is a JSON array of map keys (strings) and list positions (integers) from
/// the document's root map. JSON strings written by `set` and `insert` become collaborative text
/// (automerge `Text`), arrays become lists and objects become maps.
///
/// ```
/// use nodus_sync::crdt::DocOp;
/// let ops: Vec<DocOp> = serde_json::from_value(serde_json::json!([
///     {"op": "set", "path": ["title"], "value": "Plan"},
///     {"op": "insert", "path": ["items", 0], "value": {"done": false}},
///     {"op": "splice_text", "path": ["title"], "pos": 4, "delete": 0, "text": " B"},
///     {"op": "delete", "path": ["draft"]}
/// ])).unwrap();
/// assert_eq!(ops.len(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum DocOp {
    /// Sets the key (last path element a string; the parent must be a map) or overwrites the list
    /// element (last path element an index below the list's length) to `value`.
    Set {
        /// Where; not empty.
        path: Vec<PathElem>,
        /// The new value.
        value: Value,
    },
    /// Deletes the key of a map or the element of a list; it must exist.
    Delete {
        /// Where; not empty.
        path: Vec<PathElem>,
    },
    /// Inserts `value` into a list before the position the last path element names (at most
    /// the list's length: equal to it appends).
    Insert {
        /// Where; the last element an index.
        path: Vec<PathElem>,
        /// The new element.
        value: Value,
    },
    /// Edits the text at `path`: deletes `delete` characters (Unicode code points) from `pos`,
    /// then inserts `text` there. `pos + delete` must not exceed the text's length.
    SpliceText {
        /// The text.
        path: Vec<PathElem>,
        /// Where, in code points from 0.
        pos: usize,
        /// How many code points to delete.
        #[serde(default)]
        delete: usize,
        /// What to insert.
        #[serde(default)]
        text: String,
    },
}

/// Why an op failed: a fixed reason, never the content.
pub(crate) type OpFail = &'static str;

fn prop_of(e: &PathElem) -> automerge::Prop {
    match e {
        PathElem::Key(k) => automerge::Prop::Map(k.clone()),
        PathElem::Index(i) => automerge::Prop::Seq(*i),
    }
}

/// The object at `path` (every element must name an existing map or list).
fn resolve<D: ReadDoc>(doc: &D, path: &[PathElem]) -> Result<(ObjId, ObjType), OpFail> {
    let mut obj = ROOT;
    let mut ty = ObjType::Map;
    for e in path {
        match (e, ty) {
            (PathElem::Key(_), ObjType::Map | ObjType::Table) => {}
            (PathElem::Index(_), ObjType::List) => {}
            (PathElem::Key(_), _) => return Err("a path key names into something not a map"),
            (PathElem::Index(_), _) => return Err("a path index names into something not a list"),
        }
        if let PathElem::Index(i) = e
            && *i >= doc.length(&obj)
        {
            return Err("a path index is past the end of its list");
        }
        match doc.get(&obj, prop_of(e)) {
            Ok(Some((AmValue::Object(t), id))) => {
                obj = id;
                ty = t;
            }
            Ok(Some((AmValue::Scalar(_), _))) => return Err("the path goes through a scalar"),
            Ok(None) => return Err("the path does not exist"),
            Err(_) => return Err("the path cannot be read"),
        }
    }
    Ok((obj, ty))
}

/// Where a value goes.
enum Slot<'a> {
    Key(&'a ObjId, &'a str),
    Put(&'a ObjId, usize),
    Insert(&'a ObjId, usize),
}

fn scalar(v: &Value) -> Option<ScalarValue> {
    match v {
        Value::Null => Some(ScalarValue::Null),
        Value::Bool(b) => Some(ScalarValue::Boolean(*b)),
        Value::Number(n) => Some(if let Some(i) = n.as_i64() {
            ScalarValue::Int(i)
        } else if let Some(u) = n.as_u64() {
            ScalarValue::Uint(u)
        } else {
            ScalarValue::F64(n.as_f64().unwrap_or(0.0))
        }),
        _ => None,
    }
}

/// Writes `value` at `slot`, recursively (depth-limited).
fn write<T: Transactable>(
    tx: &mut T,
    slot: Slot<'_>,
    value: &Value,
    depth: usize,
) -> Result<(), OpFail> {
    const FAIL: OpFail = "the value cannot be written there";
    if depth > MAX_DEPTH {
        return Err("the value is nested too deeply");
    }
    if let Some(s) = scalar(value) {
        return match slot {
            Slot::Key(o, k) => tx.put(o, k, s),
            Slot::Put(o, i) => tx.put(o, i, s),
            Slot::Insert(o, i) => tx.insert(o, i, s),
        }
        .map_err(|_| FAIL);
    }
    let ty = match value {
        Value::String(_) => ObjType::Text,
        Value::Array(_) => ObjType::List,
        _ => ObjType::Map,
    };
    let obj = match slot {
        Slot::Key(o, k) => tx.put_object(o, k, ty),
        Slot::Put(o, i) => tx.put_object(o, i, ty),
        Slot::Insert(o, i) => tx.insert_object(o, i, ty),
    }
    .map_err(|_| FAIL)?;
    match value {
        Value::String(s) if !s.is_empty() => {
            tx.splice_text(&obj, 0, 0, s).map_err(|_| FAIL)?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                write(tx, Slot::Insert(&obj, i), item, depth + 1)?;
            }
        }
        Value::Object(m) => write_map(tx, &obj, m, depth + 1)?,
        _ => {}
    }
    Ok(())
}

/// Writes every entry of `m` into the map `obj`.
pub(crate) fn write_map<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    m: &Map<String, Value>,
    depth: usize,
) -> Result<(), OpFail> {
    for (k, v) in m {
        write(tx, Slot::Key(obj, k), v, depth)?;
    }
    Ok(())
}

fn split(path: &[PathElem]) -> Result<(&[PathElem], &PathElem), OpFail> {
    match path.split_last() {
        Some((last, parent)) => Ok((parent, last)),
        None => Err("the path is empty"),
    }
}

/// Applies one op in a transaction.
pub(crate) fn apply_op<T: Transactable>(tx: &mut T, op: &DocOp) -> Result<(), OpFail> {
    match op {
        DocOp::Set { path, value } => {
            let (parent, last) = split(path)?;
            let (obj, ty) = resolve(tx, parent)?;
            match (last, ty) {
                (PathElem::Key(k), ObjType::Map | ObjType::Table) => {
                    write(tx, Slot::Key(&obj, k), value, path.len())
                }
                (PathElem::Index(i), ObjType::List) => {
                    if *i >= tx.length(&obj) {
                        return Err("the index is past the end of the list (use insert)");
                    }
                    write(tx, Slot::Put(&obj, *i), value, path.len())
                }
                _ => Err("the last path element does not fit its parent"),
            }
        }
        DocOp::Delete { path } => {
            let (parent, last) = split(path)?;
            let (obj, ty) = resolve(tx, parent)?;
            match (last, ty) {
                (PathElem::Key(k), ObjType::Map | ObjType::Table) => {
                    if !matches!(tx.get(&obj, k.as_str()), Ok(Some(_))) {
                        return Err("the key to delete does not exist");
                    }
                    tx.delete(&obj, k.as_str())
                        .map_err(|_| "the key cannot be deleted")
                }
                (PathElem::Index(i), ObjType::List) => {
                    if *i >= tx.length(&obj) {
                        return Err("the index is past the end of the list");
                    }
                    tx.delete(&obj, *i)
                        .map_err(|_| "the element cannot be deleted")
                }
                _ => Err("the last path element does not fit its parent"),
            }
        }
        DocOp::Insert { path, value } => {
            let (parent, last) = split(path)?;
            let (obj, ty) = resolve(tx, parent)?;
            match (last, ty) {
                (PathElem::Index(i), ObjType::List) => {
                    if *i > tx.length(&obj) {
                        return Err("the index is past the end of the list");
                    }
                    write(tx, Slot::Insert(&obj, *i), value, path.len())
                }
                _ => Err("insert needs a list and an index"),
            }
        }
        DocOp::SpliceText {
            path,
            pos,
            delete,
            text,
        } => {
            let (obj, ty) = resolve(tx, path)?;
            if ty != ObjType::Text {
                return Err("the path does not name a text");
            }
            let len = tx.length(&obj);
            if pos.checked_add(*delete).is_none_or(|end| end > len) {
                return Err("the range is past the end of the text");
            }
            let del = isize::try_from(*delete).map_err(|_| "the range is too long")?;
            tx.splice_text(&obj, *pos, del, text)
                .map_err(|_| "the text cannot be spliced")
        }
    }
}

fn scalar_json(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Null | ScalarValue::Unknown { .. } => Value::Null,
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Value::Number((*i).into()),
        ScalarValue::Uint(u) => Value::Number((*u).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Counter(c) => Value::Number(i64::from(c).into()),
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

/// The document as JSON: maps as objects (keys sorted), lists as arrays, texts and strings as
/// strings; counters and timestamps as integers, bytes as base64 strings. `None` when nested
/// deeper than [`MAX_DEPTH`].
pub(crate) fn materialise<D: ReadDoc>(doc: &D) -> Option<Value> {
    object_json(doc, &ROOT, ObjType::Map, 0)
}

fn value_json<D: ReadDoc>(doc: &D, v: (AmValue<'_>, ObjId), depth: usize) -> Option<Value> {
    match v {
        (AmValue::Scalar(s), _) => Some(scalar_json(Cow::as_ref(&s))),
        (AmValue::Object(t), id) => object_json(doc, &id, t, depth + 1),
    }
}

fn object_json<D: ReadDoc>(doc: &D, obj: &ObjId, ty: ObjType, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    match ty {
        ObjType::Text => doc.text(obj).ok().map(Value::String),
        ObjType::List => {
            let n = doc.length(obj);
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                match doc.get(obj, i) {
                    Ok(Some(v)) => out.push(value_json(doc, v, depth)?),
                    _ => out.push(Value::Null),
                }
            }
            Some(Value::Array(out))
        }
        ObjType::Map | ObjType::Table => {
            let mut out = Map::new();
            for k in doc.keys(obj) {
                if let Ok(Some(v)) = doc.get(obj, k.as_str()) {
                    out.insert(k, value_json(doc, v, depth)?);
                }
            }
            Some(Value::Object(out))
        }
    }
}
