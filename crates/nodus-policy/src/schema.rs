//! The schema: every key a policy document may set, with its type, constraints, default and scope.
//!
//! The built-in schema (`builtin_schema.toml`, documented in `docs/policy.md`) declares the runtime's
//! own keys; hosts extend it with a `schema.toml` in the same format:
//!
//! ```toml
//! [keys."notes.max_attachments"]
//! type = "integer"
//! scope = "tenant"
//! default = 10
//! min = 0
//! max = 100
//! doc = "attachments per note"
//! ```

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::error::{PolicyError, PolicyErrorKind};
use crate::label::LabelScheme;
use crate::source::{Doc, Raw, RawKind, parse_doc};
use crate::value::{Layer, RateLimit, Scope, Value, ValueType, parse_duration};

/// The built-in schema's text.
pub const BUILTIN_SCHEMA: &str = include_str!("builtin_schema.toml");

/// The declaration of one key.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KeySpec {
    /// The dotted key.
    pub key: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ValueType,
    /// The highest layer allowed to set it.
    pub scope: Scope,
    /// The default value.
    pub default: Option<Value>,
    /// Lower bound (integer, float).
    pub min: Option<f64>,
    /// Upper bound (integer, float).
    pub max: Option<f64>,
    /// Longest string / list.
    pub max_len: Option<usize>,
    /// Allowed values (enum).
    pub values: Vec<String>,
    /// One line of documentation.
    pub doc: String,
    /// `true` for keys of the built-in schema.
    pub builtin: bool,
}

/// Every declared key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schema {
    keys: BTreeMap<String, KeySpec>,
    /// Where each host key was declared: file and line.
    origins: BTreeMap<String, (String, u32)>,
}

/// The largest magnitude of an integer bound: every integer up to 2^53 is exact as a float (the
/// type of [`KeySpec::min`] and [`KeySpec::max`]), so integer values compare exactly against it.
pub const MAX_EXACT_INTEGER_BOUND: i64 = 1 << 53;

fn schema_err(
    file: &str,
    key: Option<&str>,
    line: Option<u32>,
    msg: impl Into<String>,
) -> PolicyError {
    PolicyError {
        file: file.to_owned(),
        layer: Layer::Default,
        key: key.map(str::to_owned),
        line,
        kind: PolicyErrorKind::InvalidSchema(msg.into()),
    }
}

impl Schema {
    /// The built-in schema alone. It is parsed once per process and cloned on each call, so a
    /// reload does not pay for parsing it again.
    pub fn builtin() -> Self {
        static BUILTIN: LazyLock<Schema> = LazyLock::new(|| {
            let mut s = Schema::default();
            let doc = Doc {
                file: "<builtin schema>".into(),
                text: BUILTIN_SCHEMA.into(),
            };
            let mut errors = Vec::new();
            s.extend(&doc, true, &mut errors);
            debug_assert!(errors.is_empty(), "{errors:?}");
            s
        });
        BUILTIN.clone()
    }

    /// The spec of `key`.
    pub fn get(&self, key: &str) -> Option<&KeySpec> {
        self.keys.get(key)
    }

    /// Every spec, by key.
    pub fn keys(&self) -> impl Iterator<Item = &KeySpec> {
        self.keys.values()
    }

    /// The file that declared a host key (`None` for built-in keys).
    pub(crate) fn file_of(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(|(f, _)| f.as_str())
    }

    /// The line that declared a host key.
    pub(crate) fn line_of(&self, key: &str) -> Option<u32> {
        self.origins.get(key).map(|(_, l)| *l)
    }

    /// Why `key` cannot be declared next to the keys already declared: a key of the same name, a
    /// key it would sit under (the document's table for that key would swallow it), or keys that
    /// would sit under it.
    fn collision(&self, key: &str) -> Option<String> {
        let kind = |k: &str| {
            if self.keys.get(k).is_some_and(|s| s.builtin) {
                "built-in key"
            } else {
                "key"
            }
        };
        if self.keys.contains_key(key) {
            return Some(if kind(key) == "built-in key" {
                "redefines a built-in key".to_owned()
            } else {
                "is declared twice".to_owned()
            });
        }
        let mut end = 0;
        while let Some(dot) = key.get(end..).and_then(|rest| rest.find('.')) {
            end += dot;
            let parent = key.get(..end).unwrap_or_default();
            if self.keys.contains_key(parent) {
                return Some(format!(
                    "sits under {} `{parent}`: a document setting `{parent}` would swallow it",
                    kind(parent)
                ));
            }
            end += 1;
        }
        let p = format!("{key}.");
        if let Some((child, _)) = self
            .keys
            .range(p.clone()..)
            .next()
            .filter(|(k, _)| k.starts_with(&p))
        {
            return Some(format!(
                "is a section holding {} `{child}`: a key cannot also be a section",
                kind(child)
            ));
        }
        None
    }

    /// `true` when some declared key starts with `prefix.`.
    pub(crate) fn is_section(&self, prefix: &str) -> bool {
        let p = format!("{prefix}.");
        self.keys
            .range(p.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&p))
    }

    /// The declared key closest to `key`, for suggestions: the nearest by edit distance when it is
    /// close (a typo), else one with the same last segment (a key in the wrong section).
    pub(crate) fn suggest(&self, key: &str) -> Option<String> {
        let limit = (key.chars().count() / 3).max(2);
        let nearest = self
            .keys
            .keys()
            .map(|k| (edit_distance(key, k), k))
            .filter(|(d, _)| *d <= limit)
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k);
        let last = key.rsplit('.').next().unwrap_or(key);
        nearest
            .or_else(|| {
                self.keys
                    .keys()
                    .find(|k| k.rsplit('.').next() == Some(last))
            })
            .cloned()
    }

    /// Adds the keys declared in `doc`; problems go to `errors`.
    pub(crate) fn extend(&mut self, doc: &Doc, builtin: bool, errors: &mut Vec<PolicyError>) {
        let table = match parse_doc(doc, Layer::Default) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                return;
            }
        };
        for (top, raw) in table {
            let (RawKind::Table(entries), "keys") = (&raw.kind, top.as_str()) else {
                errors.push(schema_err(
                    &doc.file,
                    Some(&top),
                    Some(raw.line),
                    "a schema holds only `[keys.\"<dotted.key>\"]` tables",
                ));
                continue;
            };
            for (key, raw) in entries {
                match self.parse_spec(&doc.file, key, raw, builtin) {
                    Ok(spec) => {
                        if let Some(why) = self.collision(key) {
                            errors.push(schema_err(&doc.file, Some(key), Some(raw.line), why));
                        } else {
                            if !builtin {
                                self.origins
                                    .insert(key.clone(), (doc.file.clone(), raw.line));
                            }
                            self.keys.insert(key.clone(), spec);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
    }

    fn parse_spec(
        &self,
        file: &str,
        key: &str,
        raw: &Raw,
        builtin: bool,
    ) -> Result<KeySpec, PolicyError> {
        let err = |msg: String| schema_err(file, Some(key), Some(raw.line), msg);
        if key.is_empty() || key.split('.').count() < 2 || key.split('.').any(|s| s.is_empty()) {
            return Err(err(
                "keys are dotted paths with at least two segments, like `section.name`".into(),
            ));
        }
        let RawKind::Table(fields) = &raw.kind else {
            return Err(err("a key's declaration is a table".into()));
        };
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        for (k, _) in fields {
            if ![
                "type", "scope", "default", "min", "max", "max_len", "values", "doc",
            ]
            .contains(&k.as_str())
            {
                return Err(err(format!("unknown field `{k}`")));
            }
        }
        let ty = match field("type").map(|r| &r.kind) {
            Some(RawKind::Str(s)) => {
                ValueType::parse(s).ok_or_else(|| err(format!("unknown type `{s}`")))?
            }
            _ => return Err(err("missing `type`".into())),
        };
        let scope = match field("scope").map(|r| &r.kind) {
            Some(RawKind::Str(s)) => Scope::parse(s)
                .ok_or_else(|| err(format!("unknown scope `{s}`: use system, tenant or user")))?,
            _ => return Err(err("missing `scope`".into())),
        };
        let numeric = matches!(ty, ValueType::Integer | ValueType::Float);
        let bound = |name: &str| -> Result<Option<f64>, PolicyError> {
            let Some(r) = field(name) else {
                return Ok(None);
            };
            if !numeric {
                return Err(err(format!(
                    "`{name}` applies to integer and float keys, not to a {ty}"
                )));
            }
            match (ty, &r.kind) {
                (_, RawKind::Int(i)) => {
                    if i.unsigned_abs() > MAX_EXACT_INTEGER_BOUND.unsigned_abs() {
                        return Err(err(format!(
                            "`{name}` = {i} is beyond the exact range of a bound (±{MAX_EXACT_INTEGER_BOUND})"
                        )));
                    }
                    Ok(Some(*i as f64))
                }
                (ValueType::Integer, RawKind::Float(f)) => Err(err(format!(
                    "`{name}` = {f}: the bounds of an integer key are integers"
                ))),
                (_, RawKind::Float(f)) if f.is_finite() => Ok(Some(*f)),
                (_, RawKind::Float(f)) => {
                    Err(err(format!("`{name}` = {f}: bounds are finite numbers")))
                }
                _ => Err(err(format!("`{name}` must be a number"))),
            }
        };
        let min = bound("min")?;
        let max = bound("max")?;
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            return Err(err(format!(
                "`min` ({lo}) is greater than `max` ({hi}): no value would be allowed"
            )));
        }
        let max_len = match field("max_len").map(|r| &r.kind) {
            Some(_) if !matches!(ty, ValueType::String | ValueType::StringList) => {
                return Err(err(format!(
                    "`max_len` applies to string and string_list keys, not to a {ty}"
                )));
            }
            Some(RawKind::Int(i)) if *i >= 0 => Some(usize::try_from(*i).unwrap_or(usize::MAX)),
            Some(_) => return Err(err("`max_len` must be a non-negative integer".into())),
            None => None,
        };
        if field("values").is_some() && ty != ValueType::Enum {
            return Err(err(format!("`values` applies to enum keys, not to a {ty}")));
        }
        let values = match field("values").map(|r| &r.kind) {
            Some(RawKind::Array(items)) => items
                .iter()
                .map(|i| match &i.kind {
                    RawKind::Str(s) => Ok(s.clone()),
                    _ => Err(err("`values` must be strings".into())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(err("`values` must be an array of strings".into())),
            None => Vec::new(),
        };
        if ty == ValueType::Enum && values.is_empty() {
            return Err(err("an enum needs `values`".into()));
        }
        let doc = match field("doc").map(|r| &r.kind) {
            Some(RawKind::Str(s)) => s.clone(),
            Some(_) => return Err(err("`doc` must be a string".into())),
            None => String::new(),
        };
        let mut spec = KeySpec {
            key: key.to_owned(),
            ty,
            scope,
            default: None,
            min,
            max,
            max_len,
            values,
            doc,
            builtin,
        };
        if let Some(d) = field("default") {
            // A label default is checked against the policy's scheme once it is known (the system
            // layer defines it); here only its type.
            let v = spec
                .check(d, None)
                .map_err(|k| err(format!("invalid default: {k}")))?;
            spec.default = Some(v);
        }
        Ok(spec)
    }

    /// All keys with their defaults.
    pub(crate) fn defaults(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.keys
            .iter()
            .filter_map(|(k, s)| s.default.as_ref().map(|d| (k, d)))
    }
}

/// Levenshtein distance between two strings, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let at = |v: &Vec<usize>, k: usize| v.get(k).copied().unwrap_or(usize::MAX);
            let substitute = at(&prev, j).saturating_add(usize::from(ca != *cb));
            let delete = at(&prev, j + 1).saturating_add(1);
            let insert = cur.last().copied().unwrap_or(usize::MAX).saturating_add(1);
            cur.push(substitute.min(delete).min(insert));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

fn wrong(expected: &str, raw: &Raw) -> PolicyErrorKind {
    PolicyErrorKind::WrongType {
        expected: expected.to_owned(),
        found: raw.kind.type_name().to_owned(),
    }
}

fn bounds(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("{a} ≤ x ≤ {b}"),
        (Some(a), None) => format!("x ≥ {a}"),
        (None, Some(b)) => format!("x ≤ {b}"),
        (None, None) => String::new(),
    }
}

/// `true` when `p` is `*`, `name` or `prefix.*` with no other wildcard.
pub(crate) fn valid_pattern(p: &str) -> bool {
    if p == "*" {
        return true;
    }
    let body = p.strip_suffix(".*").unwrap_or(p);
    !body.is_empty()
        && !body.contains('*')
        && !body.split('.').any(str::is_empty)
        && !body.contains(char::is_whitespace)
}

impl KeySpec {
    /// Converts and checks a raw value. Labels are checked only when a scheme is given.
    pub(crate) fn check(
        &self,
        raw: &Raw,
        scheme: Option<&LabelScheme>,
    ) -> Result<Value, PolicyErrorKind> {
        let range = |x: f64| -> Result<(), PolicyErrorKind> {
            if self.min.is_some_and(|m| x < m) || self.max.is_some_and(|m| x > m) {
                Err(PolicyErrorKind::OutOfRange {
                    value: x.to_string(),
                    bounds: bounds(self.min, self.max),
                })
            } else {
                Ok(())
            }
        };
        let len = |n: usize| -> Result<(), PolicyErrorKind> {
            match self.max_len {
                Some(m) if n > m => Err(PolicyErrorKind::OutOfRange {
                    value: format!("length {n}"),
                    bounds: format!("length ≤ {m}"),
                }),
                _ => Ok(()),
            }
        };
        let strings = |raw: &Raw| -> Result<Vec<String>, PolicyErrorKind> {
            let RawKind::Array(items) = &raw.kind else {
                return Err(wrong("a list of strings", raw));
            };
            items
                .iter()
                .map(|i| match &i.kind {
                    RawKind::Str(s) => Ok(s.clone()),
                    _ => Err(wrong("a list of strings", i)),
                })
                .collect()
        };
        Ok(match self.ty {
            ValueType::Bool => match raw.kind {
                RawKind::Bool(b) => Value::Bool(b),
                _ => return Err(wrong("bool", raw)),
            },
            ValueType::Integer => match raw.kind {
                RawKind::Int(i) => {
                    // Bounds of integer keys are integers within ±2^53 (see `parse_spec`), exact
                    // as i64: compare integers, never the value rounded to a float.
                    let below = self.min.is_some_and(|m| i < m as i64);
                    let above = self.max.is_some_and(|m| i > m as i64);
                    if below || above {
                        return Err(PolicyErrorKind::OutOfRange {
                            value: i.to_string(),
                            bounds: bounds(self.min, self.max),
                        });
                    }
                    Value::Int(i)
                }
                _ => return Err(wrong("integer", raw)),
            },
            ValueType::Float => match raw.kind {
                RawKind::Float(f) if f.is_finite() => {
                    range(f)?;
                    Value::Float(f)
                }
                RawKind::Int(i) => {
                    if i.unsigned_abs() > MAX_EXACT_INTEGER_BOUND.unsigned_abs() {
                        return Err(PolicyErrorKind::OutOfRange {
                            value: i.to_string(),
                            bounds: format!(
                                "|x| ≤ {MAX_EXACT_INTEGER_BOUND} for an integer given to a float key (write it as a float)"
                            ),
                        });
                    }
                    range(i as f64)?;
                    Value::Float(i as f64)
                }
                RawKind::Float(f) => {
                    return Err(PolicyErrorKind::WrongType {
                        expected: "a finite float".into(),
                        found: f.to_string(),
                    });
                }
                _ => return Err(wrong("float", raw)),
            },
            ValueType::String => match &raw.kind {
                RawKind::Str(s) => {
                    len(s.chars().count())?;
                    Value::Str(s.clone())
                }
                _ => return Err(wrong("string", raw)),
            },
            ValueType::Enum => match &raw.kind {
                RawKind::Str(s) if self.values.contains(s) => Value::Str(s.clone()),
                RawKind::Str(s) => {
                    return Err(PolicyErrorKind::NotAllowed {
                        value: s.clone(),
                        allowed: self.values.clone(),
                    });
                }
                _ => return Err(wrong("string", raw)),
            },
            ValueType::StringList => {
                let v = strings(raw)?;
                len(v.len())?;
                Value::Strings(v)
            }
            ValueType::Duration => match &raw.kind {
                RawKind::Str(s) => Value::Duration(parse_duration(s).ok_or_else(|| {
                    PolicyErrorKind::WrongType {
                        expected: "a duration like \"250ms\", \"30s\", \"5m\", \"1h\", \"7d\""
                            .into(),
                        found: format!("\"{s}\""),
                    }
                })?),
                _ => return Err(wrong("duration string", raw)),
            },
            ValueType::Label => match &raw.kind {
                RawKind::Str(s) => {
                    if let Some(scheme) = scheme {
                        scheme
                            .parse(s)
                            .map_err(|e| PolicyErrorKind::InvalidLabel(format!("`{s}`: {e}")))?;
                    }
                    Value::Label(s.clone())
                }
                _ => return Err(wrong("label string", raw)),
            },
            ValueType::RoleMap => {
                let RawKind::Table(roles) = &raw.kind else {
                    return Err(wrong("a table of role = [permissions]", raw));
                };
                let mut m = BTreeMap::new();
                for (role, perms) in roles {
                    let perms = strings(perms)?;
                    if let Some(bad) = perms.iter().find(|p| !valid_pattern(p)) {
                        return Err(PolicyErrorKind::InvalidPattern(bad.clone()));
                    }
                    m.insert(role.clone(), perms);
                }
                Value::RoleMap(m)
            }
            ValueType::RateMap => {
                let RawKind::Table(classes) = &raw.kind else {
                    return Err(wrong("a table of class = { rate, per, burst }", raw));
                };
                let mut m = BTreeMap::new();
                for (class, spec) in classes {
                    m.insert(class.clone(), rate_limit(class, spec)?);
                }
                Value::RateMap(m)
            }
        })
    }
}

fn rate_limit(class: &str, raw: &Raw) -> Result<RateLimit, PolicyErrorKind> {
    let RawKind::Table(fields) = &raw.kind else {
        return Err(PolicyErrorKind::WrongType {
            expected: format!("class `{class}` = {{ rate = <n>, per = \"1s\", burst = <n> }}"),
            found: raw.kind.type_name().to_owned(),
        });
    };
    let mut rate = None;
    let mut per = None;
    let mut burst = None;
    for (k, v) in fields {
        let as_u32 = |v: &Raw, name: &str, min: u32| -> Result<u32, PolicyErrorKind> {
            match v.kind {
                RawKind::Int(i) => u32::try_from(i).ok().filter(|n| *n >= min).ok_or_else(|| {
                    PolicyErrorKind::OutOfRange {
                        value: format!("class `{class}`: {name} = {i}"),
                        bounds: format!("{min} ≤ {name} ≤ {}", u32::MAX),
                    }
                }),
                _ => Err(PolicyErrorKind::WrongType {
                    expected: format!("an integer for `{name}` in class `{class}`"),
                    found: v.kind.type_name().to_owned(),
                }),
            }
        };
        match k.as_str() {
            // A zero rate admits nothing (a closed class); a zero burst would admit nothing
            // either, by accident: it is an error, never silently 1.
            "rate" => rate = Some(as_u32(v, "rate", 0)?),
            "burst" => burst = Some(as_u32(v, "burst", 1)?),
            "per" => match &v.kind {
                RawKind::Str(s) => match parse_duration(s) {
                    Some(d) if !d.is_zero() => per = Some(d),
                    _ => {
                        return Err(PolicyErrorKind::WrongType {
                            expected: format!("a non-zero duration for `per` in class `{class}`"),
                            found: format!("\"{s}\""),
                        });
                    }
                },
                _ => {
                    return Err(PolicyErrorKind::WrongType {
                        expected: format!("a duration string for `per` in class `{class}`"),
                        found: v.kind.type_name().to_owned(),
                    });
                }
            },
            other => {
                return Err(PolicyErrorKind::WrongType {
                    expected: format!("fields `rate`, `per`, `burst` in class `{class}`"),
                    found: format!("field `{other}`"),
                });
            }
        }
    }
    let missing = |name: &str| PolicyErrorKind::WrongType {
        expected: format!("a `{name}` field in class `{class}` (rate, per and burst are required)"),
        found: "none".into(),
    };
    Ok(RateLimit {
        rate: rate.ok_or_else(|| missing("rate"))?,
        per: per.ok_or_else(|| missing("per"))?,
        burst: burst.ok_or_else(|| missing("burst"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schema_parses_completely() {
        let doc = Doc {
            file: "<builtin schema>".into(),
            text: BUILTIN_SCHEMA.into(),
        };
        let mut s = Schema::default();
        let mut errors = Vec::new();
        s.extend(&doc, true, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        for key in [
            "rbac.roles",
            "mac.levels",
            "mac.compartments",
            "mac.write_rule",
            "rate.limits",
            "audit.durability",
            "audit.overflow",
            "audit.queue_capacity",
            "audit.checkpoint_every",
            "audit.checkpoint_interval",
            "security.fields.allow_encrypted_read",
            "security.fields.allow_encrypted_write",
            "security.fields.max_bulk_decrypt",
            "security.keys.allow_manual_rotation",
            "security.keys.allow_reenvelope",
            "security.keys.rotation_days",
            "security.keys.reenvelope_batch_size",
            "state.cache.fields.ttl_secs",
            "links.allowed_relations",
            "links.max_depth",
            "plugins.allowed",
            "ui.allowed_components",
            "observability.enabled",
            "observability.sampling_rate",
            "observability.level",
            "state.cache.objects.capacity_bytes",
            "state.cache.objects.ttl",
            "retention.audit_days",
            "limits.max_payload_bytes",
            "tenancy.unknown_tenants",
        ] {
            assert!(s.get(key).is_some(), "{key}");
        }
        assert_eq!(
            s.get("observability.sampling_rate").unwrap().default,
            Some(Value::Float(0.05))
        );
        assert!(s.is_section("observability"));
        assert!(!s.is_section("observ"));
    }

    #[test]
    fn suggestions() {
        let s = Schema::builtin();
        assert_eq!(
            s.suggest("observability.sampling_rat").as_deref(),
            Some("observability.sampling_rate")
        );
        assert_eq!(
            s.suggest("links.max_dept").as_deref(),
            Some("links.max_depth")
        );
        assert_eq!(
            s.suggest("tracing.sampling_rate").as_deref(),
            Some("observability.sampling_rate")
        );
        assert_eq!(s.suggest("bogus"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    #[test]
    fn patterns() {
        for ok in ["*", "notes.read", "notes.*", "a.b.*"] {
            assert!(valid_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "notes*",
            "*.read",
            "no*tes.read",
            "notes.**",
            ".*",
            "a..b",
        ] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn host_schema_cannot_redefine_builtin() {
        let mut s = Schema::builtin();
        let mut errors = Vec::new();
        let doc = Doc {
            file: "schema.toml".into(),
            text: "[keys.\"mac.levels\"]\ntype = \"bool\"\nscope = \"user\"\n[keys.\"app.x\"]\ntype = \"integer\"\nscope = \"user\"\ndefault = \"no\"\n".into(),
        };
        s.extend(&doc, false, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.key.as_deref() == Some("mac.levels")
            && e.to_string().contains("redefines a built-in key")));
        assert!(errors.iter().any(
            |e| e.key.as_deref() == Some("app.x") && e.to_string().contains("invalid default")
        ));
    }
}
