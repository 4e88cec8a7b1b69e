//! Object types: a JSON Schema document plus Nodus metadata per field.
//!
//! A type is defined once per tenant and redefined only in backwards-compatible steps (see
//! [`TypeDef::redefine`]). Object data is validated against the schema with the
//! [`jsonschema`] crate, built with no resolver at all: a `$ref` that leaves the document (a URL,
//! a file) is refused when the type is defined, never fetched. Validation errors name the field's
//! JSON path and the rule, never the value: the values of classified or encrypted fields must not
//! reach error text or logs.
//!
//! ```
//! use nodus_fabric::types::{TypeDef, TypeName};
//! use nodus_policy::LabelScheme;
//! use serde_json::json;
//!
//! let scheme = LabelScheme::classic();
//! let case = TypeDef::new(
//!     TypeName::new("case").unwrap(),
//!     json!({
//!         "type": "object",
//!         "properties": {
//!             "title": {"type": "string", "maxLength": 200},
//!             "client_ssn": {"type": "string"},
//!             "status": {"enum": ["open", "closed"]}
//!         },
//!         "required": ["title"]
//!     }),
//!     json!({
//!         "status": {"indexed": true},
//!         "client_ssn": {"encrypted": true, "classification": "SECRET", "masked": true}
//!     }),
//!     &scheme,
//! ).unwrap();
//! let problems = case.validate(&json!({"title": 7, "status": "lost"})).unwrap_err();
//! assert_eq!(problems[0].path, "/status");
//! assert_eq!(problems[0].rule, "enum");
//! assert!(!problems.iter().any(|p| p.to_string().contains("lost"))); // never the value
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use nodus_policy::{Label, LabelScheme};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most bytes a type's schema may take, as compact JSON.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// Most top-level properties a type may declare.
pub const MAX_PROPERTIES: usize = 1024;
/// Most validation problems reported for one object (the count of the rest is not reported).
pub const MAX_REPORTED_ISSUES: usize = 32;

/// A type's name: 1–64 characters, lowercase ASCII letters, digits, `_` and `.`, starting with a
/// letter, no empty segment (`case`, `crm.contact`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TypeName(Arc<str>);

impl TypeName {
    /// A validated type name.
    ///
    /// # Errors
    /// [`TypeError::InvalidName`] naming the input and the rule.
    pub fn new(name: &str) -> Result<Self, TypeError> {
        let bad = |why: &'static str| TypeError::InvalidName {
            name: name.chars().take(80).collect(),
            reason: why,
        };
        if name.is_empty() || name.len() > 64 {
            return Err(bad("a type name has 1 to 64 characters"));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(bad("a type name starts with a lowercase letter"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            return Err(bad(
                "a type name holds only lowercase letters, digits, `_` and `.`",
            ));
        }
        if name.split('.').any(str::is_empty) {
            return Err(bad("a type name has no empty `.`-separated segment"));
        }
        Ok(TypeName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TypeName::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Nodus metadata for one top-level field of a type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMeta {
    /// The value is sealed by the vault and stored apart from the object; `data` keeps a marker.
    /// An encrypted field is never indexed, filtered, sorted on or embedded.
    #[serde(default)]
    pub encrypted: bool,
    /// The vault key purpose that seals it (default `fields`); only for encrypted fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_purpose: Option<String>,
    /// The minimum label a subject needs to see this field, as label text (`SECRET//CRYPTO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// The field may be filtered and sorted on (`objects.list`).
    #[serde(default)]
    pub indexed: bool,
    /// A UI hint: the widget to edit it with (`text`, `date`, …); not interpreted by Nodus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widget: Option<String>,
    /// A UI hint: show it masked.
    #[serde(default)]
    pub masked: bool,
}

impl FieldMeta {
    /// The key purpose of an encrypted field.
    pub fn purpose(&self) -> &str {
        self.key_purpose.as_deref().unwrap_or("fields")
    }
}

/// One rule an object broke: the JSON pointer of the field (`/address/zip`, `` for the root) and
/// the JSON Schema keyword (`type`, `required`, `maxLength`, …). Never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValidationIssue {
    /// The JSON pointer of the offending field.
    pub path: String,
    /// The schema keyword it broke.
    pub rule: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "`{path}` breaks `{}`", self.rule)
    }
}

/// Why a type could not be defined or redefined.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    /// The name breaks the naming rule.
    #[error("invalid type name `{name}`: {reason}")]
    InvalidName {
        /// The name as given (at most 80 characters of it).
        name: String,
        /// The rule.
        reason: &'static str,
    },
    /// The schema is not usable, with where and why.
    #[error("type `{name}`: invalid schema at `{path}`: {reason}")]
    InvalidSchema {
        /// The type.
        name: String,
        /// JSON pointer into the schema.
        path: String,
        /// Why.
        reason: String,
    },
    /// A field's metadata is wrong.
    #[error("type `{name}`: field `{field}`: {reason}")]
    InvalidField {
        /// The type.
        name: String,
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// A redefinition would break stored objects; every reason is listed.
    #[error("type `{name}`: the new definition is not backwards compatible: {}", reasons.join("; "))]
    Incompatible {
        /// The type.
        name: String,
        /// Each incompatibility, naming the schema path and the rule.
        reasons: Vec<String>,
    },
}

/// A type: its schema (compiled once), its field metadata, and its version (1 for the first
/// definition, +1 for each accepted redefinition).
#[derive(Clone)]
pub struct TypeDef {
    name: TypeName,
    version: u32,
    schema: Arc<Value>,
    fields: BTreeMap<String, FieldMeta>,
    classifications: BTreeMap<String, Label>,
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for TypeDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeDef")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TypeDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.version == other.version
            && self.schema == other.schema
            && self.fields == other.fields
    }
}

/// The serialisable form of a [`TypeDef`] (what `types.get` returns and a `type.defined` event
/// carries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDoc {
    /// The type's name.
    pub name: TypeName,
    /// Its version.
    pub version: u32,
    /// The JSON Schema.
    pub schema: Value,
    /// Field metadata by top-level field name.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldMeta>,
}

fn invalid(name: &TypeName, path: impl Into<String>, reason: impl Into<String>) -> TypeError {
    TypeError::InvalidSchema {
        name: name.to_string(),
        path: path.into(),
        reason: reason.into(),
    }
}

/// Every `$ref` / `$dynamicRef` in the schema must point inside the document (`#…`).
fn check_refs(name: &TypeName, v: &Value, path: &str) -> Result<(), TypeError> {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}/{}", escape(k));
                if matches!(k.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef") {
                    let Some(target) = child.as_str() else {
                        return Err(invalid(name, here, "a reference is a string"));
                    };
                    if !target.starts_with('#') {
                        return Err(invalid(
                            name,
                            here,
                            "references must stay inside the schema (`#…`): nothing is fetched",
                        ));
                    }
                }
                if k == "$id" || k == "$schema" {
                    // `$schema` may name a draft; `$id` could re-base references: refuse it.
                    if k == "$id" {
                        return Err(invalid(name, here, "`$id` is not allowed in a type schema"));
                    }
                    continue;
                }
                check_refs(name, child, &here)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                check_refs(name, child, &format!("{path}/{i}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// JSON pointer escaping of one segment.
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

impl TypeDef {
    /// Version 1 of a type: `schema` must be an object schema (`"type": "object"` with
    /// `properties`), whose references stay inside it; `fields` maps top-level property names to
    /// [`FieldMeta`] (a JSON object); classifications parse under `scheme`.
    ///
    /// # Errors
    /// [`TypeError`] naming the schema path or the field and the reason.
    pub fn new(
        name: TypeName,
        schema: Value,
        fields: Value,
        scheme: &LabelScheme,
    ) -> Result<Self, TypeError> {
        let fields: BTreeMap<String, FieldMeta> = if fields.is_null() {
            BTreeMap::new()
        } else {
            serde_json::from_value(fields).map_err(|e| TypeError::InvalidField {
                name: name.to_string(),
                field: "*".into(),
                reason: e.to_string(),
            })?
        };
        Self::build(name, 1, schema, fields, scheme)
    }

    /// A type from its serialisable form (as stored or received), checked like [`TypeDef::new`].
    ///
    /// # Errors
    /// As [`TypeDef::new`].
    pub fn from_doc(doc: TypeDoc, scheme: &LabelScheme) -> Result<Self, TypeError> {
        Self::build(doc.name, doc.version.max(1), doc.schema, doc.fields, scheme)
    }

    fn build(
        name: TypeName,
        version: u32,
        schema: Value,
        fields: BTreeMap<String, FieldMeta>,
        scheme: &LabelScheme,
    ) -> Result<Self, TypeError> {
        let size = serde_json::to_vec(&schema)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_SCHEMA_BYTES {
            return Err(invalid(
                &name,
                "",
                format!("the schema is {size} bytes, the limit is {MAX_SCHEMA_BYTES}"),
            ));
        }
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(
                &name,
                "/type",
                "a type's schema has `\"type\": \"object\"`",
            ));
        }
        let Some(props) = properties(&schema) else {
            return Err(invalid(
                &name,
                "/properties",
                "a type's schema declares `properties`",
            ));
        };
        if props.len() > MAX_PROPERTIES {
            return Err(invalid(
                &name,
                "/properties",
                format!("{} properties, the limit is {MAX_PROPERTIES}", props.len()),
            ));
        }
        check_refs(&name, &schema, "")?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| {
                invalid(
                    &name,
                    e.schema_path().to_string(),
                    e.kind().keyword().to_owned(),
                )
            })?;
        let mut classifications = BTreeMap::new();
        for (field, meta) in &fields {
            let bad = |reason: String| TypeError::InvalidField {
                name: name.to_string(),
                field: field.clone(),
                reason,
            };
            if !props.contains_key(field) {
                return Err(bad(
                    "metadata for a field the schema does not declare".into()
                ));
            }
            if meta.encrypted && meta.indexed {
                return Err(bad(
                    "an encrypted field cannot be indexed (it is never filtered or sorted on)"
                        .into(),
                ));
            }
            if meta.key_purpose.is_some() && !meta.encrypted {
                return Err(bad(
                    "`key_purpose` applies only to an encrypted field".into()
                ));
            }
            if let Some(p) = &meta.key_purpose
                && (p.is_empty()
                    || p.len() > 64
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            {
                return Err(bad(format!(
                    "`key_purpose` `{p}` is not 1-64 letters, digits, `_`, `.` or `-`"
                )));
            }
            if let Some(text) = &meta.classification {
                let label = scheme
                    .parse(text)
                    .map_err(|e| bad(format!("classification: {e}")))?;
                classifications.insert(field.clone(), label);
            }
        }
        Ok(TypeDef {
            name,
            version,
            schema: Arc::new(schema),
            fields,
            classifications,
            validator: Arc::new(validator),
        })
    }

    /// The name.
    pub fn name(&self) -> &TypeName {
        &self.name
    }

    /// The version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The JSON Schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Field metadata by top-level field name (fields without metadata are absent).
    pub fn fields(&self) -> &BTreeMap<String, FieldMeta> {
        &self.fields
    }

    /// The metadata of one field, if it has any.
    pub fn field(&self, name: &str) -> Option<&FieldMeta> {
        self.fields.get(name)
    }

    /// The minimum label to see `field`, if classified.
    pub fn classification(&self, field: &str) -> Option<Label> {
        self.classifications.get(field).copied()
    }

    /// Names of the fields marked `encrypted`.
    pub fn encrypted_fields(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(|(_, m)| m.encrypted)
            .map(|(k, _)| k.as_str())
    }

    /// Names of the fields marked `indexed`.
    pub fn indexed_fields(&self) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(|(_, m)| m.indexed)
            .map(|(k, _)| k.as_str())
    }

    /// The serialisable form.
    pub fn to_doc(&self) -> TypeDoc {
        TypeDoc {
            name: self.name.clone(),
            version: self.version,
            schema: Value::clone(&self.schema),
            fields: self.fields.clone(),
        }
    }

    /// Checks `data` against the schema. On failure, up to [`MAX_REPORTED_ISSUES`] issues, each
    /// naming the field's JSON pointer and the broken keyword, sorted by path then rule — never a
    /// value.
    ///
    /// # Errors
    /// The issues found.
    pub fn validate(&self, data: &Value) -> Result<(), Vec<ValidationIssue>> {
        let mut issues: Vec<ValidationIssue> = self
            .validator
            .iter_errors(data)
            .take(MAX_REPORTED_ISSUES)
            .map(|e| ValidationIssue {
                path: e.instance_path().to_string(),
                rule: e.kind().keyword().to_owned(),
            })
            .collect();
        if issues.is_empty() {
            return Ok(());
        }
        issues.sort_by(|a, b| (&a.path, &a.rule).cmp(&(&b.path, &b.rule)));
        issues.dedup();
        Err(issues)
    }

    /// The next version of this type with a new schema and field metadata, if it is backwards
    /// compatible with this one (every object valid under this version stays valid, and no field
    /// changes how it is protected), else [`TypeError::Incompatible`] listing every reason.
    ///
    /// Compatible steps: new optional properties; widened constraints (a lower `minimum` or
    /// `minLength`, a higher `maximum` or `maxLength`, more `enum` values, more JSON types, fewer
    /// `required` fields); dropping `additionalProperties: false`; indexing, UI hints, and a
    /// *higher* classification. Everything else — removing a property, a new required field, a
    /// narrowed constraint, changing `pattern`, `encrypted` or `key_purpose`, a lower
    /// classification, any other keyword that changed — is refused: it needs an explicit
    /// migration (an upcaster) instead.
    ///
    /// # Errors
    /// As [`TypeDef::new`] for the new definition itself, then [`TypeError::Incompatible`].
    pub fn redefine(
        &self,
        schema: Value,
        fields: Value,
        scheme: &LabelScheme,
    ) -> Result<TypeDef, TypeError> {
        let mut next = TypeDef::new(self.name.clone(), schema, fields, scheme)?;
        next.version = self.version.saturating_add(1);
        let reasons = self.incompatibilities(&next, scheme);
        if reasons.is_empty() {
            Ok(next)
        } else {
            Err(TypeError::Incompatible {
                name: self.name.to_string(),
                reasons,
            })
        }
    }

    /// Every reason `next` is not a backwards-compatible successor of `self` (empty if it is).
    pub fn incompatibilities(&self, next: &TypeDef, scheme: &LabelScheme) -> Vec<String> {
        let mut reasons = Vec::new();
        compare_schema(&self.schema, &next.schema, "", &mut reasons);
        let empty = Map::new();
        let old_props = properties(&self.schema).unwrap_or(&empty);
        let none = FieldMeta::default();
        // Every field that existed before, with or without metadata on either side.
        let names: BTreeSet<&String> = self
            .fields
            .keys()
            .chain(next.fields.keys())
            .filter(|f| old_props.contains_key(f.as_str()))
            .collect();
        for field in names {
            let old = self.fields.get(field).unwrap_or(&none);
            let new = next.fields.get(field).unwrap_or(&none);
            if old.encrypted != new.encrypted {
                reasons.push(format!(
                    "field `{field}`: `encrypted` changed (stored values need a migration)"
                ));
            } else if old.encrypted && old.purpose() != new.purpose() {
                reasons.push(format!(
                    "field `{field}`: `key_purpose` changed (stored values need re-sealing)"
                ));
            }
            if let Some(old_label) = self.classifications.get(field) {
                let lowered = match next.classifications.get(field) {
                    None => true,
                    Some(new_label) => !new_label.dominates(*old_label),
                };
                if lowered {
                    reasons.push(format!(
                        "field `{field}`: classification `{}` would be lowered (it would expose stored values)",
                        scheme.format(*old_label)
                    ));
                }
            }
        }
        reasons
    }
}

fn type_set(v: &Value) -> Option<BTreeSet<String>> {
    match v.get("type")? {
        Value::String(s) => Some(std::iter::once(s.clone()).collect()),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

/// Compares an old and a new (sub)schema; records every change that could make an old-valid
/// instance invalid.
fn compare_schema(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        if old != new {
            out.push(format!("`{}`: the schema changed", display_path(path)));
        }
        return;
    };
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for key in keys {
        let here = format!("{path}/{}", escape(key));
        let (ov, nv) = (o.get(key.as_str()), n.get(key.as_str()));
        if ov == nv {
            continue;
        }
        match key.as_str() {
            "type" => {
                let (Some(ot), Some(nt)) = (type_set(old), type_set(new)) else {
                    if nv.is_some() {
                        out.push(format!("`{}`: `type` narrowed", display_path(&here)));
                    }
                    continue;
                };
                // `integer` is widened by `number`.
                let widened = ot
                    .iter()
                    .all(|t| nt.contains(t) || (t == "integer" && nt.contains("number")));
                if !widened {
                    out.push(format!("`{}`: `type` narrowed", display_path(&here)));
                }
            }
            "minimum" | "exclusiveMinimum" | "minLength" | "minItems" | "minProperties" => {
                if let Some(nn) = nv.and_then(Value::as_f64) {
                    let wider = num(old, key).is_some_and(|on| nn <= on);
                    if !wider {
                        out.push(format!("`{}`: `{key}` raised", display_path(&here)));
                    }
                }
            }
            "maximum" | "exclusiveMaximum" | "maxLength" | "maxItems" | "maxProperties" => {
                if let Some(nn) = nv.and_then(Value::as_f64) {
                    let wider = num(old, key).is_some_and(|on| nn >= on);
                    if !wider {
                        out.push(format!("`{}`: `{key}` lowered", display_path(&here)));
                    }
                }
            }
            "enum" => {
                if let Some(ne) = nv.and_then(Value::as_array) {
                    let kept = ov
                        .and_then(Value::as_array)
                        .is_some_and(|oe| oe.iter().all(|x| ne.contains(x)));
                    if !kept {
                        out.push(format!("`{}`: `enum` lost values", display_path(&here)));
                    }
                }
            }
            "required" => {
                let old_req: BTreeSet<&str> = ov
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for r in nv
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    if !old_req.contains(r) {
                        out.push(format!("`{}`: `{r}` became required", display_path(&here)));
                    }
                }
            }
            "properties" => {
                let empty = Map::new();
                let op = ov.and_then(Value::as_object).unwrap_or(&empty);
                let np = nv.and_then(Value::as_object).unwrap_or(&empty);
                for (prop, osub) in op {
                    let sub_path = format!("{here}/{}", escape(prop));
                    match np.get(prop) {
                        Some(nsub) => compare_schema(osub, nsub, &sub_path, out),
                        None => out.push(format!(
                            "`{}`: property `{prop}` removed",
                            display_path(&sub_path)
                        )),
                    }
                }
            }
            "additionalProperties" => {
                // Dropping a `false` (or widening to `true`) is compatible; anything else is not.
                let now_open = nv.is_none() || nv == Some(&Value::Bool(true));
                if !now_open {
                    out.push(format!(
                        "`{}`: `additionalProperties` narrowed",
                        display_path(&here)
                    ));
                }
            }
            "items" => match (ov, nv) {
                (Some(osub), Some(nsub)) => compare_schema(osub, nsub, &here, out),
                (Some(_), None) => {}
                (None, Some(_)) => out.push(format!("`{}`: `items` added", display_path(&here))),
                (None, None) => {}
            },
            "title" | "description" | "$comment" | "examples" | "default" | "deprecated"
            | "readOnly" | "writeOnly" => {}
            other => out.push(format!(
                "`{}`: `{other}` changed (compatibility cannot be proven)",
                display_path(&here)
            )),
        }
    }
}

fn display_path(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}
