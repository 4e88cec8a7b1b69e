//! Policy sources: the documents of every layer, from a directory or from strings.
//!
//! Directory layout:
//!
//! ```text
//! <dir>/schema.toml                 optional: the host's schema extension (system-owned)
//! <dir>/system.toml                 the system layer
//! <dir>/tenants/<tenant>.toml       one per tenant
//! <dir>/users/<tenant>/<actor>.toml optional: per user within a tenant
//! ```
//!
//! Any other `.toml` file at the top or directly under `users/` is reported as misplaced.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use crate::error::{PolicyError, PolicyErrorKind, PolicyErrors};
use crate::ids::{ActorId, TenantId};
use crate::value::Layer;

/// One document: its name (used in errors), its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Doc {
    pub(crate) file: String,
    pub(crate) text: String,
}

/// The documents of every layer. Build it from a directory ([`PolicySources::from_dir`]) or from
/// strings; a `PolicyStore` validates and compiles it.
///
/// ```
/// use nodus_policy::{PolicySources, TenantId};
/// let sources = PolicySources::new()
///     .with_system("system.toml", "[observability]\nsampling_rate = 0.05\n")
///     .with_tenant(TenantId::new("acme").unwrap(), "tenants/acme.toml", "[observability]\nsampling_rate = 0.2\n");
/// assert_eq!(sources.tenant_count(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySources {
    pub(crate) schema: Vec<Doc>,
    pub(crate) system: Option<Doc>,
    pub(crate) tenants: Vec<(TenantId, Doc)>,
    pub(crate) users: Vec<(TenantId, ActorId, Doc)>,
    /// Problems found while reading (bad file names, unreadable files), reported with validation.
    pub(crate) read_errors: Vec<PolicyError>,
}

impl PolicySources {
    /// No documents: every key has its schema default, and there are no tenants.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a host schema extension.
    pub fn with_schema(mut self, file_name: &str, toml: &str) -> Self {
        self.schema.push(Doc {
            file: file_name.to_owned(),
            text: toml.to_owned(),
        });
        self
    }

    /// Sets the system document.
    pub fn with_system(mut self, file_name: &str, toml: &str) -> Self {
        self.system = Some(Doc {
            file: file_name.to_owned(),
            text: toml.to_owned(),
        });
        self
    }

    /// Adds (or replaces) a tenant document.
    pub fn with_tenant(mut self, tenant: TenantId, file_name: &str, toml: &str) -> Self {
        self.tenants.retain(|(t, _)| *t != tenant);
        self.tenants.push((
            tenant,
            Doc {
                file: file_name.to_owned(),
                text: toml.to_owned(),
            },
        ));
        self
    }

    /// Adds (or replaces) a user document within a tenant.
    pub fn with_user(
        mut self,
        tenant: TenantId,
        actor: ActorId,
        file_name: &str,
        toml: &str,
    ) -> Self {
        self.users
            .retain(|(t, a, _)| !(*t == tenant && *a == actor));
        self.users.push((
            tenant,
            actor,
            Doc {
                file: file_name.to_owned(),
                text: toml.to_owned(),
            },
        ));
        self
    }

    /// Number of tenant documents.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Reads a policy directory (layout in the module docs). File names in errors are relative to
    /// `dir`. A file that cannot be read or a file name that is not a valid id is reported when the
    /// sources are validated, together with every other problem; a missing or unreadable directory
    /// is an error here.
    ///
    /// # Errors
    /// [`PolicyErrors`] when `dir` itself cannot be read.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, PolicyErrors> {
        let dir = dir.as_ref();
        let io_err = |file: String, e: std::io::Error, layer: Layer| PolicyError {
            file,
            layer,
            key: None,
            line: None,
            kind: PolicyErrorKind::Io(e.to_string()),
        };
        if let Err(e) = std::fs::read_dir(dir) {
            return Err(io_err(dir.display().to_string(), e, Layer::System).into());
        }
        let mut s = PolicySources::new();
        let read = |rel: String, layer: Layer, s: &mut PolicySources| -> Option<String> {
            match std::fs::read_to_string(dir.join(&rel)) {
                Ok(t) => Some(t),
                Err(e) => {
                    s.read_errors.push(io_err(rel, e, layer));
                    None
                }
            }
        };
        if dir.join("schema.toml").is_file()
            && let Some(t) = read("schema.toml".into(), Layer::Default, &mut s)
        {
            s = s.with_schema("schema.toml", &t);
        }
        if dir.join("system.toml").is_file()
            && let Some(t) = read("system.toml".into(), Layer::System, &mut s)
        {
            s = s.with_system("system.toml", &t);
        }
        // A policy file outside the layout would be an override silently skipped: report it.
        let misplaced = |rel: String, layer: Layer, expected: &str| PolicyError {
            file: rel,
            layer,
            key: None,
            line: None,
            kind: PolicyErrorKind::MisplacedFile(expected.to_owned()),
        };
        for (stem, rel) in toml_files(dir, "") {
            if stem != "schema" && stem != "system" {
                s.read_errors.push(misplaced(
                    rel,
                    Layer::System,
                    "only `schema.toml` and `system.toml` belong at the top; tenants go in `tenants/<tenant>.toml`",
                ));
            }
        }
        for (_, rel) in toml_files(&dir.join("users"), "users") {
            s.read_errors.push(misplaced(
                rel,
                Layer::User,
                "user files go in `users/<tenant>/<actor>.toml`",
            ));
        }
        for (stem, rel) in toml_files(&dir.join("tenants"), "tenants") {
            match TenantId::new(&stem) {
                Ok(t) => {
                    if let Some(text) = read(rel.clone(), Layer::Tenant, &mut s) {
                        s = s.with_tenant(t, &rel, &text);
                    }
                }
                Err(e) => s.read_errors.push(PolicyError {
                    file: rel,
                    layer: Layer::Tenant,
                    key: None,
                    line: None,
                    kind: PolicyErrorKind::InvalidId(e.to_string()),
                }),
            }
        }
        let users_dir = dir.join("users");
        let mut tenant_dirs: Vec<_> = std::fs::read_dir(&users_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        tenant_dirs.sort();
        for tdir in tenant_dirs {
            let tname = tdir.to_string_lossy().to_string();
            let base = format!("users/{tname}");
            let tenant = match TenantId::new(&tname) {
                Ok(t) => t,
                Err(e) => {
                    s.read_errors.push(PolicyError {
                        file: base,
                        layer: Layer::User,
                        key: None,
                        line: None,
                        kind: PolicyErrorKind::InvalidId(e.to_string()),
                    });
                    continue;
                }
            };
            for (actor, rel, text) in read_users(dir, &tname, &mut s.read_errors) {
                s = s.with_user(tenant.clone(), actor, &rel, &text);
            }
        }
        Ok(s)
    }
}

/// Reads `users/<tenant>/*.toml` under `dir`: `(actor, relative path, text)` of each readable file
/// with a valid actor id; every other problem goes to `errors`.
fn read_users(
    dir: &Path,
    tenant_name: &str,
    errors: &mut Vec<PolicyError>,
) -> Vec<(ActorId, String, String)> {
    let base = format!("users/{tenant_name}");
    let mut out = Vec::new();
    for (stem, rel) in toml_files(&dir.join(&base), &base) {
        match ActorId::new(&stem) {
            Ok(a) => match read_file(dir, &rel, Layer::User) {
                Ok(text) => out.push((a, rel, text)),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(PolicyError {
                file: rel,
                layer: Layer::User,
                key: None,
                line: None,
                kind: PolicyErrorKind::InvalidId(e.to_string()),
            }),
        }
    }
    out
}

/// Reads one policy file, `rel` (relative to `dir`, and named so in errors).
fn read_file(dir: &Path, rel: &str, layer: Layer) -> Result<String, PolicyError> {
    std::fs::read_to_string(dir.join(rel)).map_err(|e| PolicyError {
        file: rel.to_owned(),
        layer,
        key: None,
        line: None,
        kind: PolicyErrorKind::Io(e.to_string()),
    })
}

/// One tenant's documents — its tenant file and its users' files — for
/// [`PolicyStore::reload_tenant`](crate::PolicyStore::reload_tenant), which validates them against
/// the system layer and schema the store has loaded. Build it from a policy directory
/// ([`TenantSources::from_dir`], which reads only this tenant's files) or from strings.
///
/// ```
/// use nodus_policy::{ActorId, TenantId, TenantSources};
/// let acme = TenantId::new("acme").unwrap();
/// let sources = TenantSources::new(acme.clone())
///     .with_tenant_file("tenants/acme.toml", "[observability]\nsampling_rate = 0.2\n")
///     .with_user(ActorId::new("alice").unwrap(), "users/acme/alice.toml", "");
/// assert_eq!(sources.tenant(), &acme);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TenantSources {
    pub(crate) tenant: TenantId,
    pub(crate) doc: Option<Doc>,
    pub(crate) users: Vec<(ActorId, Doc)>,
    /// Problems found while reading, reported with validation.
    pub(crate) read_errors: Vec<PolicyError>,
}

impl TenantSources {
    /// No documents yet for `tenant` (a tenant-scoped reload of it refuses until its tenant file is
    /// set: removing a tenant takes a full reload).
    pub fn new(tenant: TenantId) -> Self {
        TenantSources {
            tenant,
            doc: None,
            users: Vec::new(),
            read_errors: Vec::new(),
        }
    }

    /// The tenant these documents belong to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Sets the tenant document.
    pub fn with_tenant_file(mut self, file_name: &str, toml: &str) -> Self {
        self.doc = Some(Doc {
            file: file_name.to_owned(),
            text: toml.to_owned(),
        });
        self
    }

    /// Adds (or replaces) a user document of this tenant.
    pub fn with_user(mut self, actor: ActorId, file_name: &str, toml: &str) -> Self {
        self.users.retain(|(a, _)| *a != actor);
        self.users.push((
            actor,
            Doc {
                file: file_name.to_owned(),
                text: toml.to_owned(),
            },
        ));
        self
    }

    /// Reads `tenants/<tenant>.toml` and `users/<tenant>/*.toml` from a policy directory (layout in
    /// the module docs) and nothing else: no other tenant's file is listed, opened or parsed, and
    /// neither are `system.toml` and `schema.toml`. A missing tenant file leaves the tenant
    /// document unset; a file that cannot be read or a user file name that is not a valid id is
    /// reported when the sources are validated.
    ///
    /// # Errors
    /// [`PolicyErrors`] when `dir` itself cannot be read.
    pub fn from_dir(dir: impl AsRef<Path>, tenant: &TenantId) -> Result<Self, PolicyErrors> {
        let dir = dir.as_ref();
        if let Err(e) = std::fs::read_dir(dir) {
            return Err(PolicyError {
                file: dir.display().to_string(),
                layer: Layer::Tenant,
                key: None,
                line: None,
                kind: PolicyErrorKind::Io(e.to_string()),
            }
            .into());
        }
        let mut s = TenantSources::new(tenant.clone());
        let rel = format!("tenants/{tenant}.toml");
        let path = dir.join(&rel);
        if std::fs::symlink_metadata(&path).is_ok() {
            match read_file(dir, &rel, Layer::Tenant) {
                Ok(text) => s = s.with_tenant_file(&rel, &text),
                Err(e) => s.read_errors.push(e),
            }
        }
        let mut errors = Vec::new();
        for (actor, rel, text) in read_users(dir, tenant.as_str(), &mut errors) {
            s = s.with_user(actor, &rel, &text);
        }
        s.read_errors.extend(errors);
        Ok(s)
    }
}

/// `(file stem, relative path)` of every `*.toml` file in `dir`, sorted (`rel_base` empty: the
/// path is the bare file name).
fn toml_files(dir: &Path, rel_base: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let stem = name.strip_suffix(".toml")?.to_owned();
                    let rel = if rel_base.is_empty() {
                        name.clone()
                    } else {
                        format!("{rel_base}/{name}")
                    };
                    Some((stem, rel))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A parsed TOML value with the line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Raw {
    pub(crate) line: u32,
    pub(crate) kind: RawKind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawKind {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Datetime(String),
    Array(Vec<Raw>),
    Table(Vec<(String, Raw)>),
}

impl RawKind {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            RawKind::Bool(_) => "bool",
            RawKind::Int(_) => "integer",
            RawKind::Float(_) => "float",
            RawKind::Str(_) => "string",
            RawKind::Datetime(_) => "datetime",
            RawKind::Array(_) => "array",
            RawKind::Table(_) => "table",
        }
    }
}

fn line_of(text: &str, offset: usize) -> u32 {
    let upto = text.get(..offset).unwrap_or(text);
    u32::try_from(upto.bytes().filter(|b| *b == b'\n').count() + 1).unwrap_or(u32::MAX)
}

/// A value TOML parsed but Nodus cannot represent: the message, the line, the dotted path.
struct ConvertError {
    message: String,
    line: u32,
    path: String,
}

fn convert(
    text: &str,
    path: &str,
    span_start: usize,
    v: &DeValue<'_>,
) -> Result<RawKind, ConvertError> {
    let fail = |message: String| ConvertError {
        message,
        line: line_of(text, span_start),
        path: path.to_owned(),
    };
    Ok(match v {
        DeValue::String(s) => RawKind::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            RawKind::Int(
                i64::from_str_radix(&digits, i.radix())
                    .map_err(|e| fail(format!("integer `{i}`: {e}")))?,
            )
        }
        DeValue::Float(f) => {
            let s = f.as_str().replace('_', "");
            RawKind::Float(
                s.parse::<f64>()
                    .map_err(|e| fail(format!("float `{f}`: {e}")))?,
            )
        }
        DeValue::Boolean(b) => RawKind::Bool(*b),
        DeValue::Datetime(d) => RawKind::Datetime(d.to_string()),
        DeValue::Array(a) => {
            let mut out = Vec::new();
            for item in a.iter() {
                let start = item.span().start;
                out.push(Raw {
                    line: line_of(text, start),
                    kind: convert(text, path, start, item.get_ref())?,
                });
            }
            RawKind::Array(out)
        }
        DeValue::Table(t) => RawKind::Table(convert_table(text, path, t)?),
    })
}

fn convert_table(
    text: &str,
    prefix: &str,
    t: &DeTable<'_>,
) -> Result<Vec<(String, Raw)>, ConvertError> {
    let mut out = Vec::new();
    for (k, v) in t.iter() {
        let start = k.span().start;
        let name = k.get_ref().to_string();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        out.push((
            name,
            Raw {
                line: line_of(text, start),
                kind: convert(text, &path, v.span().start, v.get_ref())?,
            },
        ));
    }
    Ok(out)
}

/// Parses a document into a table of raw values with line numbers.
pub(crate) fn parse_doc(doc: &Doc, layer: Layer) -> Result<Vec<(String, Raw)>, PolicyError> {
    let table = DeTable::parse(&doc.text).map_err(|e| PolicyError {
        file: doc.file.clone(),
        layer,
        key: None,
        line: e.span().map(|s| line_of(&doc.text, s.start)),
        kind: PolicyErrorKind::Malformed(e.message().trim().to_owned()),
    })?;
    convert_table(&doc.text, "", table.get_ref()).map_err(|e| PolicyError {
        file: doc.file.clone(),
        layer,
        key: Some(e.path),
        line: Some(e.line),
        kind: PolicyErrorKind::Malformed(e.message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_lines() {
        let doc = Doc {
            file: "x.toml".into(),
            text: "a = 1\n\n[b]\nc = \"x\"\nd = [1, 2]\n".into(),
        };
        let t = parse_doc(&doc, Layer::System).unwrap();
        assert_eq!(t[0].0, "a");
        assert_eq!(
            t[0].1,
            Raw {
                line: 1,
                kind: RawKind::Int(1)
            }
        );
        let RawKind::Table(b) = &t[1].1.kind else {
            panic!()
        };
        assert_eq!(b[0].1.line, 4);
        assert_eq!(b[1].1.line, 5);
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let doc = Doc {
            file: "x.toml".into(),
            text: "a = 1\nb = = 2\n".into(),
        };
        let e = parse_doc(&doc, Layer::Tenant).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(matches!(e.kind, PolicyErrorKind::Malformed(_)));
    }

    #[test]
    fn unrepresentable_integer_names_the_key_and_line() {
        let doc = Doc {
            file: "x.toml".into(),
            text: "a = 1

[links]
max_depth = 99999999999999999999
"
            .into(),
        };
        let e = parse_doc(&doc, Layer::Tenant).unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.line, e.layer),
            (Some("links.max_depth"), Some(4), Layer::Tenant)
        );
        assert!(matches!(e.kind, PolicyErrorKind::Malformed(_)), "{e}");
    }
}
