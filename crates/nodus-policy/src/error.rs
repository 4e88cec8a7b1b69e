//! Policy errors: every problem names the file, layer, key (dotted path) and line.

use std::fmt;

use crate::value::{Layer, Scope};

/// What is wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// The TOML does not parse.
    #[error("malformed TOML: {0}")]
    Malformed(String),
    /// The key is not in the schema.
    #[error("unknown key{}", suggestion(.0))]
    UnknownKey(Option<String>),
    /// The value has the wrong type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The schema type.
        expected: String,
        /// What the document had.
        found: String,
    },
    /// A number or length outside the schema's bounds.
    #[error("{value} is out of range ({bounds})")]
    OutOfRange {
        /// The value.
        value: String,
        /// The allowed bounds, e.g. `0 ≤ x ≤ 1`.
        bounds: String,
    },
    /// An enum value not in the schema's `values`.
    #[error("`{value}` is not one of {allowed:?}")]
    NotAllowed {
        /// The value.
        value: String,
        /// The allowed values.
        allowed: Vec<String>,
    },
    /// The layer may not set this key.
    #[error("only the {} may set it (scope `{scope}`)", scope_layers(*.scope))]
    AboveScope {
        /// The key's scope.
        scope: Scope,
    },
    /// A user override of a key the tenant locked.
    #[error("the tenant locked it for its users")]
    Locked,
    /// A `policy.lock` entry that cannot be locked.
    #[error("cannot lock `{key}`: {reason}")]
    BadLock {
        /// The lock entry.
        key: String,
        /// Why.
        reason: String,
    },
    /// A label that does not parse, or a label scheme that is invalid.
    #[error("invalid label: {0}")]
    InvalidLabel(String),
    /// A permission pattern with a wildcard somewhere other than a trailing `.*` or a lone `*`.
    #[error("invalid permission pattern `{0}`: use `name`, `prefix.*` or `*`")]
    InvalidPattern(String),
    /// The schema itself is invalid.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    /// A tenant or user file name is not a valid id.
    #[error("invalid id in file name: {0}")]
    InvalidId(String),
    /// A user file for a tenant that has no tenant file.
    #[error("user file for unknown tenant `{0}`")]
    UnknownTenant(String),
    /// A `.toml` file in a policy directory outside the layout, which would otherwise be ignored.
    #[error("not part of the policy layout: {0}")]
    MisplacedFile(String),
    /// A tenant or user layer grants a permission reserved to the system layer (a permission under
    /// [`RESERVED_PERMISSION_PREFIX`](crate::RESERVED_PERMISSION_PREFIX), or a pattern naming
    /// such permissions).
    #[error(
        "role `{role}` grants `{pattern}`: permissions under `system.` can be granted only by the system layer"
    )]
    ReservedPermission {
        /// The role.
        role: String,
        /// The permission pattern.
        pattern: String,
    },
    /// A path that must be a regular file is not one: a directory, a symbolic link that cannot be
    /// followed (dangling, or a loop), a FIFO, socket or device — or `tenants`/`users` is not a
    /// directory.
    #[error("wrong file type: {0}")]
    NotAFile(String),
    /// The file is not UTF-8 text (the error's line is the line of the first invalid byte).
    #[error("not valid UTF-8: policy files are UTF-8 text")]
    NotUtf8,
    /// The file is over a size cap ([`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES),
    /// [`MAX_ENTRIES_PER_FILE`](crate::MAX_ENTRIES_PER_FILE)) or nests deeper than
    /// [`MAX_DEPTH`](crate::MAX_DEPTH); it is refused before it is validated.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A tenant-scoped reload that cannot be done in a tenant's scope: the tenant has no policy
    /// loaded (adding a tenant takes a full reload), its tenant file is missing (removing a tenant
    /// takes a full reload), or the sources were read for another tenant.
    #[error("tenant-scoped reload refused: {0}")]
    TenantReloadRefused(String),
}

fn suggestion(s: &Option<String>) -> String {
    match s {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    }
}

fn scope_layers(scope: Scope) -> &'static str {
    match scope {
        Scope::System => "system layer",
        Scope::Tenant => "system and tenant layers",
        Scope::User => "system, tenant and user layers",
    }
}

/// One problem in one policy file.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyError {
    /// The file (as given to `PolicySources`, e.g. `tenants/acme.toml`).
    pub file: String,
    /// The layer the file belongs to (`Default` for schema files).
    pub layer: Layer,
    /// The dotted key, when the problem concerns one.
    pub key: Option<String>,
    /// The 1-based line, where TOML gives it.
    pub line: Option<u32>,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        let layer = if self.layer == Layer::Default {
            "schema".to_string()
        } else {
            format!("{} layer", self.layer)
        };
        match &self.key {
            Some(k) => write!(f, ": {layer}: `{k}`: {}", self.kind),
            None => write!(f, ": {layer}: {}", self.kind),
        }
    }
}

impl std::error::Error for PolicyError {}

/// The most problems a [`PolicyErrors`] lists; the rest are counted ([`PolicyErrors::total`]).
pub const MAX_REPORTED_PROBLEMS: usize = 100;

/// Every problem found in a set of policy sources. Validation never stops at the first: it finds
/// them all, lists the first [`MAX_REPORTED_PROBLEMS`] (in file order) and counts the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyErrors {
    errors: Vec<PolicyError>,
    total: usize,
}

impl PolicyErrors {
    /// Keeps the first [`MAX_REPORTED_PROBLEMS`] of `errors` and counts them all.
    pub(crate) fn new(mut errors: Vec<PolicyError>) -> Self {
        let total = errors.len();
        errors.truncate(MAX_REPORTED_PROBLEMS);
        PolicyErrors { errors, total }
    }

    /// `errors` (only the first [`MAX_REPORTED_PROBLEMS`] kept) and `unlisted` more, counted but
    /// not built.
    pub(crate) fn with_unlisted(errors: Vec<PolicyError>, unlisted: usize) -> Self {
        let mut e = PolicyErrors::new(errors);
        e.total = e.total.saturating_add(unlisted);
        e
    }

    /// The problems listed (at most [`MAX_REPORTED_PROBLEMS`]), in file order.
    pub fn errors(&self) -> &[PolicyError] {
        &self.errors
    }

    /// Number of problems listed (at most [`MAX_REPORTED_PROBLEMS`]; see [`total`](Self::total)).
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Number of problems found, listed or not.
    pub fn total(&self) -> usize {
        self.total
    }

    /// `true` when there is no problem (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, shown) = (self.total, self.errors.len());
        let s = if n == 1 { "" } else { "s" };
        if shown < n {
            writeln!(f, "{n} policy problem{s} (the first {shown} shown):")?;
        } else {
            writeln!(f, "{n} policy problem{s}:")?;
        }
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        if shown < n {
            writeln!(f, "  … and {} more", n - shown)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        PolicyErrors::new(vec![e])
    }
}

/// Why a typed accessor could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The key is not in the schema.
    #[error("unknown policy key `{0}`")]
    Unknown(String),
    /// The key has no value (no default and no layer set it).
    #[error("policy key `{0}` has no value")]
    Unset(String),
    /// The key has another type.
    #[error("policy key `{key}` is a {actual}, not a {requested}")]
    WrongType {
        /// The key.
        key: String,
        /// Its type.
        actual: &'static str,
        /// The accessor's type.
        requested: &'static str,
    },
}

/// Why `explain` could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// The tenant has no policy.
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    /// The key is not in the schema.
    #[error("unknown policy key `{0}`")]
    UnknownKey(String),
    /// The key has no default and no layer sets it.
    #[error("policy key `{0}` has no value: no default and no layer sets it")]
    Unset(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant's name. The matches are exhaustive: a new variant does not compile until it
    /// is named here, and the test below then wants it in the guide's error catalogue.
    fn kind_name(k: &PolicyErrorKind) -> &'static str {
        match k {
            PolicyErrorKind::Io(_) => "Io",
            PolicyErrorKind::Malformed(_) => "Malformed",
            PolicyErrorKind::UnknownKey(_) => "UnknownKey",
            PolicyErrorKind::WrongType { .. } => "WrongType",
            PolicyErrorKind::OutOfRange { .. } => "OutOfRange",
            PolicyErrorKind::NotAllowed { .. } => "NotAllowed",
            PolicyErrorKind::AboveScope { .. } => "AboveScope",
            PolicyErrorKind::Locked => "Locked",
            PolicyErrorKind::BadLock { .. } => "BadLock",
            PolicyErrorKind::InvalidLabel(_) => "InvalidLabel",
            PolicyErrorKind::InvalidPattern(_) => "InvalidPattern",
            PolicyErrorKind::InvalidSchema(_) => "InvalidSchema",
            PolicyErrorKind::InvalidId(_) => "InvalidId",
            PolicyErrorKind::UnknownTenant(_) => "UnknownTenant",
            PolicyErrorKind::MisplacedFile(_) => "MisplacedFile",
            PolicyErrorKind::ReservedPermission { .. } => "ReservedPermission",
            PolicyErrorKind::TenantReloadRefused(_) => "TenantReloadRefused",
            PolicyErrorKind::NotAFile(_) => "NotAFile",
            PolicyErrorKind::NotUtf8 => "NotUtf8",
            PolicyErrorKind::TooLarge(_) => "TooLarge",
        }
    }

    fn explain_name(e: &ExplainError) -> &'static str {
        match e {
            ExplainError::UnknownTenant(_) => "UnknownTenant",
            ExplainError::UnknownKey(_) => "UnknownKey",
            ExplainError::Unset(_) => "Unset",
        }
    }

    fn access_name(e: &AccessError) -> &'static str {
        match e {
            AccessError::Unknown(_) => "Unknown",
            AccessError::Unset(_) => "Unset",
            AccessError::WrongType { .. } => "WrongType",
        }
    }

    fn all_kinds() -> Vec<PolicyErrorKind> {
        let s = || String::from("x");
        vec![
            PolicyErrorKind::Io(s()),
            PolicyErrorKind::Malformed(s()),
            PolicyErrorKind::UnknownKey(Some(s())),
            PolicyErrorKind::WrongType {
                expected: s(),
                found: s(),
            },
            PolicyErrorKind::OutOfRange {
                value: s(),
                bounds: s(),
            },
            PolicyErrorKind::NotAllowed {
                value: s(),
                allowed: vec![s()],
            },
            PolicyErrorKind::AboveScope {
                scope: Scope::Tenant,
            },
            PolicyErrorKind::Locked,
            PolicyErrorKind::BadLock {
                key: s(),
                reason: s(),
            },
            PolicyErrorKind::InvalidLabel(s()),
            PolicyErrorKind::InvalidPattern(s()),
            PolicyErrorKind::InvalidSchema(s()),
            PolicyErrorKind::InvalidId(s()),
            PolicyErrorKind::UnknownTenant(s()),
            PolicyErrorKind::MisplacedFile(s()),
            PolicyErrorKind::ReservedPermission {
                role: s(),
                pattern: s(),
            },
            PolicyErrorKind::TenantReloadRefused(s()),
            PolicyErrorKind::NotAFile(s()),
            PolicyErrorKind::NotUtf8,
            PolicyErrorKind::TooLarge(s()),
        ]
    }

    fn guide() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/policy.md"))
            .unwrap_or_default()
    }

    #[test]
    fn the_error_catalogue_lists_every_kind() {
        let guide = guide();
        let catalogue = guide.split("## Error catalogue").nth(1).unwrap_or_default();
        let kinds = all_kinds();
        let mut names: Vec<&str> = kinds.iter().map(kind_name).collect();
        names.dedup();
        assert_eq!(names.len(), 20, "every variant once in all_kinds()");
        for name in names {
            assert!(
                catalogue.contains(&format!("| `{name}` |")),
                "`{name}` is missing from the error catalogue of docs/policy.md"
            );
        }
        for e in [
            ExplainError::UnknownTenant("t".into()),
            ExplainError::UnknownKey("k".into()),
            ExplainError::Unset("k".into()),
        ] {
            let row = format!("| `ExplainError` | `{}` |", explain_name(&e));
            assert!(catalogue.contains(&row), "{row} missing");
        }
        for e in [
            AccessError::Unknown("k".into()),
            AccessError::Unset("k".into()),
            AccessError::WrongType {
                key: "k".into(),
                actual: "float",
                requested: "integer",
            },
        ] {
            let row = format!("| `AccessError` | `{}` |", access_name(&e));
            assert!(catalogue.contains(&row), "{row} missing");
        }
    }

    #[test]
    fn messages_are_lowercase_and_name_the_key() {
        for k in all_kinds() {
            let text = k.to_string();
            let first = text.chars().next().unwrap_or('x');
            // `malformed TOML` keeps the acronym; everything starts lowercase.
            assert!(!first.is_uppercase(), "{text}");
        }
        let e = PolicyError {
            file: "tenants/acme.toml".into(),
            layer: Layer::Tenant,
            key: Some("observability.level".into()),
            line: Some(3),
            kind: PolicyErrorKind::Locked,
        };
        assert_eq!(
            e.to_string(),
            "tenants/acme.toml:3: tenant layer: `observability.level`: the tenant locked it for its users"
        );
        assert!(
            ExplainError::Unset("a.b".into())
                .to_string()
                .contains("`a.b`")
        );
        assert!(
            AccessError::Unknown("a.b".into())
                .to_string()
                .contains("`a.b`")
        );
    }
}
