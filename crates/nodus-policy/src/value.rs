//! Policy values, their types, layers and scopes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// A policy layer, lowest first. A higher layer's legal override wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The schema's default.
    Default,
    /// The platform owner's `system.toml`.
    System,
    /// A tenant's `tenants/<id>.toml`.
    Tenant,
    /// A user's `users/<tenant>/<actor>.toml`.
    User,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Default => "default",
            Layer::System => "system",
            Layer::Tenant => "tenant",
            Layer::User => "user",
        })
    }
}

/// The highest layer allowed to set a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only the system layer: immutable to tenants and users.
    System,
    /// The system and tenant layers.
    Tenant,
    /// Every layer.
    User,
}

impl Scope {
    /// `true` when `layer` may set a key of this scope.
    pub fn allows(self, layer: Layer) -> bool {
        match layer {
            Layer::Default | Layer::System => true,
            Layer::Tenant => self >= Scope::Tenant,
            Layer::User => self == Scope::User,
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Scope> {
        match s {
            "system" => Some(Scope::System),
            "tenant" => Some(Scope::Tenant),
            "user" => Some(Scope::User),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::System => "system",
            Scope::Tenant => "tenant",
            Scope::User => "user",
        })
    }
}

/// The type of a schema key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// `true` / `false`.
    Bool,
    /// A 64-bit integer (`min`/`max` apply).
    Integer,
    /// A float (`min`/`max` apply).
    Float,
    /// A string (`max_len` applies).
    String,
    /// A string from the key's `values`.
    Enum,
    /// A list of strings (`max_len` applies to the list length).
    StringList,
    /// A duration written `"250ms"`, `"30s"`, `"5m"`, `"1h"` or `"7d"`.
    Duration,
    /// A security label such as `"SECRET//CRYPTO"`, parsed with the policy's label scheme.
    Label,
    /// Role name → list of permission patterns (`"notes.read"`, `"notes.*"`, `"*"`).
    RoleMap,
    /// Rate class → `{ rate = <n>, per = "<duration>", burst = <n> }`.
    RateMap,
}

impl ValueType {
    pub(crate) fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "bool" => ValueType::Bool,
            "integer" => ValueType::Integer,
            "float" => ValueType::Float,
            "string" => ValueType::String,
            "enum" => ValueType::Enum,
            "string_list" => ValueType::StringList,
            "duration" => ValueType::Duration,
            "label" => ValueType::Label,
            "role_map" => ValueType::RoleMap,
            "rate_map" => ValueType::RateMap,
            _ => return None,
        })
    }

    /// The name used in schema files and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Bool => "bool",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::String => "string",
            ValueType::Enum => "enum",
            ValueType::StringList => "string_list",
            ValueType::Duration => "duration",
            ValueType::Label => "label",
            ValueType::RoleMap => "role_map",
            ValueType::RateMap => "rate_map",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rate limit: `rate` requests per `per`, with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests admitted per period.
    pub rate: u32,
    /// The period.
    pub per: Duration,
    /// Requests admitted at once after a quiet period.
    pub burst: u32,
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("rate", &self.rate)?;
        m.serialize_entry("per", &format_duration(self.per))?;
        m.serialize_entry("burst", &self.burst)?;
        m.end()
    }
}

/// An effective policy value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A bool.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string or enum value.
    Str(String),
    /// A list of strings.
    Strings(Vec<String>),
    /// A duration.
    Duration(Duration),
    /// A label, as written (it parsed with the policy's scheme when validated).
    Label(String),
    /// Role → permission patterns.
    RoleMap(BTreeMap<String, Vec<String>>),
    /// Rate class → limit.
    RateMap(BTreeMap<String, RateLimit>),
}

impl Value {
    /// The type name of this value (for error messages).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Strings(_) => "string_list",
            Value::Duration(_) => "duration",
            Value::Label(_) => "label",
            Value::RoleMap(_) => "role_map",
            Value::RateMap(_) => "rate_map",
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) | Value::Label(v) => s.serialize_str(v),
            Value::Strings(v) => v.serialize(s),
            Value::Duration(d) => s.serialize_str(&format_duration(*d)),
            Value::RoleMap(m) => m.serialize(s),
            Value::RateMap(m) => m.serialize(s),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("<unprintable>"),
        }
    }
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"` (a non-negative integer and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1_000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Formats a duration in the largest unit that divides it exactly (`"1500ms"`, `"2s"`, `"7d"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (s, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
        ] {
            let d = parse_duration(s).unwrap();
            assert_eq!(d.as_millis(), ms);
            assert_eq!(format_duration(d), s);
        }
        assert_eq!(format_duration(Duration::ZERO), "0ms");
        for bad in [
            "",
            "s",
            "10",
            "1.5s",
            "-1s",
            "10 years",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn scopes_allow_layers() {
        assert!(Scope::System.allows(Layer::System));
        assert!(!Scope::System.allows(Layer::Tenant));
        assert!(Scope::Tenant.allows(Layer::Tenant));
        assert!(!Scope::Tenant.allows(Layer::User));
        assert!(Scope::User.allows(Layer::User));
    }
}
