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
//! Any other `.toml` file at the top or directly under `users/`, and any directory under `tenants/`
//! or `users/<tenant>/`, is reported as misplaced.
//!
//! Size caps: a file is at most [`MAX_FILE_BYTES`] long, holds at most [`MAX_ENTRIES_PER_FILE`]
//! entries (keys at any depth plus array items) and nests at most [`MAX_DEPTH`] tables or arrays
//! deep. A file over a cap is refused with one error before it is validated, whether it comes
//! from a directory or from a string. Reading a directory stops at [`MAX_TOTAL_BYTES`] in total.

/// The longest policy file accepted, in bytes (2 MiB).
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;
/// The most entries one policy file may hold: keys at any depth plus array items.
pub const MAX_ENTRIES_PER_FILE: usize = 200_000;
/// The deepest nesting of tables and arrays in a policy file.
pub const MAX_DEPTH: usize = 32;
/// The most bytes read from one policy directory (16 MiB), all files together: a file that would
/// pass it is refused ([`PolicySources::from_dir`], [`TenantSources::from_dir`]).
pub const MAX_TOTAL_BYTES: u64 = 16 * 1024 * 1024;

use std::io::Read;
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
    /// Tenants whose file could not be read: their users are not checked (nor reported as users
    /// of an unknown tenant) — the tenant file's own error says it all.
    pub(crate) unreadable_tenants: Vec<TenantId>,
    /// `true` when `schema.toml` or `system.toml` could not be read: the tenant and user layers
    /// are then not checked against a base that is not the real one.
    pub(crate) base_unreadable: bool,
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
    /// `dir`. Every problem with a path is reported when the sources are validated, together with
    /// every other problem, naming the path: a file that cannot be read, is not UTF-8, is over
    /// [`MAX_FILE_BYTES`], or is not a regular file (a directory, a dangling or looping symbolic
    /// link, a FIFO); a file name that is not a valid id; a `.toml` file or a directory outside
    /// the layout; `tenants` or `users` that is not a directory. A tenant file that cannot be read
    /// is its own only problem: its users' files are not reported again as users of an unknown
    /// tenant. A missing or unreadable `dir` is an error here.
    ///
    /// # Errors
    /// [`PolicyErrors`] when `dir` itself cannot be read.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, PolicyErrors> {
        let dir = dir.as_ref();
        if let Err(e) = std::fs::read_dir(dir) {
            return Err(PolicyError {
                file: dir.display().to_string(),
                layer: Layer::System,
                key: None,
                line: None,
                kind: PolicyErrorKind::Io(e.to_string()),
            }
            .into());
        }
        let mut s = PolicySources::new();
        // Bytes read so far, against `MAX_TOTAL_BYTES`.
        let mut read = 0u64;
        for (name, layer) in [
            ("schema.toml", Layer::Default),
            ("system.toml", Layer::System),
        ] {
            if !exists(&dir.join(name)) {
                continue;
            }
            match read_file(dir, name, layer, &mut read) {
                Ok(t) if layer == Layer::Default => s = s.with_schema(name, &t),
                Ok(t) => s = s.with_system(name, &t),
                Err(e) => {
                    s.read_errors.push(e);
                    s.base_unreadable = true;
                }
            }
        }
        // A policy file outside the layout would be an override silently skipped: report it.
        let top = list(dir, "", Layer::System, &mut s.read_errors);
        for entry in top.files {
            if entry.stem != "schema" && entry.stem != "system" {
                s.read_errors.push(misplaced(
                    entry.rel,
                    Layer::System,
                    "only `schema.toml` and `system.toml` belong at the top; tenants go in `tenants/<tenant>.toml`",
                ));
            }
        }
        let tenants = list(dir, "tenants", Layer::Tenant, &mut s.read_errors);
        for rel in tenants.dirs {
            s.read_errors.push(misplaced(
                rel,
                Layer::Tenant,
                "a directory under `tenants/`: tenant files are `tenants/<tenant>.toml`",
            ));
        }
        for entry in tenants.files {
            match TenantId::new(&entry.stem) {
                Ok(t) => match read_file(dir, &entry.rel, Layer::Tenant, &mut read) {
                    Ok(text) => s = s.with_tenant(t, &entry.rel, &text),
                    Err(e) => {
                        s.read_errors.push(e);
                        s.unreadable_tenants.push(t);
                    }
                },
                Err(e) => s.read_errors.push(invalid_id(entry.rel, Layer::Tenant, &e)),
            }
        }
        let users = list(dir, "users", Layer::User, &mut s.read_errors);
        for entry in users.files {
            s.read_errors.push(misplaced(
                entry.rel,
                Layer::User,
                "user files go in `users/<tenant>/<actor>.toml`",
            ));
        }
        for rel in users.dirs {
            let tname = rel.strip_prefix("users/").unwrap_or(&rel).to_owned();
            let tenant = match TenantId::new(&tname) {
                Ok(t) => t,
                Err(e) => {
                    s.read_errors.push(invalid_id(rel, Layer::User, &e));
                    continue;
                }
            };
            for (actor, rel, text) in read_users(dir, &tname, &mut s.read_errors, &mut read) {
                s = s.with_user(tenant.clone(), actor, &rel, &text);
            }
        }
        Ok(s)
    }
}

fn misplaced(rel: String, layer: Layer, expected: &str) -> PolicyError {
    PolicyError {
        file: rel,
        layer,
        key: None,
        line: None,
        kind: PolicyErrorKind::MisplacedFile(expected.to_owned()),
    }
}

fn invalid_id(rel: String, layer: Layer, e: &crate::ids::IdError) -> PolicyError {
    PolicyError {
        file: rel,
        layer,
        key: None,
        line: None,
        kind: PolicyErrorKind::InvalidId(e.to_string()),
    }
}

/// `true` when something (a file, a directory, a link, even a dangling one) is at `path`.
fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// A `*.toml` entry of a listed directory (whatever its type: reading it reports a non-file).
struct TomlEntry {
    stem: String,
    rel: String,
}

/// The entries of a policy directory that matter: `*.toml` names, and subdirectories (sorted).
#[derive(Default)]
struct Listing {
    files: Vec<TomlEntry>,
    dirs: Vec<String>,
}

/// Lists `dir/rel` (`rel` empty: `dir` itself). A missing `rel` is an empty listing; a `rel` that
/// is not a directory (a file, a dangling link) is reported. Names that are not `*.toml` and are
/// not directories are ignored.
fn list(dir: &Path, rel: &str, layer: Layer, errors: &mut Vec<PolicyError>) -> Listing {
    let path = if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    };
    let mut out = Listing::default();
    if !rel.is_empty() && !exists(&path) {
        return out;
    }
    let not_dir = |why: String| PolicyError {
        file: rel.to_owned(),
        layer,
        key: None,
        line: None,
        kind: PolicyErrorKind::NotAFile(why),
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            errors.push(not_dir(format!("`{rel}` must be a directory")));
            return out;
        }
        Err(e) => {
            errors.push(not_dir(format!(
                "`{rel}` is a symbolic link that cannot be followed (dangling, or a loop): {e}"
            )));
            return out;
        }
    }
    let rd = match std::fs::read_dir(&path) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(PolicyError {
                file: rel.to_owned(),
                layer,
                key: None,
                line: None,
                kind: PolicyErrorKind::Io(e.to_string()),
            });
            return out;
        }
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().to_string();
        let rel_name = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if let Some(stem) = name.strip_suffix(".toml") {
            out.files.push(TomlEntry {
                stem: stem.to_owned(),
                rel: rel_name,
            });
        } else if !rel.is_empty() && e.path().is_dir() {
            out.dirs.push(rel_name);
        }
    }
    out.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    out.dirs.sort();
    out
}

/// Reads `users/<tenant>/*.toml` under `dir`: `(actor, relative path, text)` of each readable file
/// with a valid actor id; every other problem (including a directory nested there) goes to
/// `errors`.
fn read_users(
    dir: &Path,
    tenant_name: &str,
    errors: &mut Vec<PolicyError>,
    read: &mut u64,
) -> Vec<(ActorId, String, String)> {
    let base = format!("users/{tenant_name}");
    let listing = list(dir, &base, Layer::User, errors);
    for rel in listing.dirs {
        errors.push(misplaced(
            rel,
            Layer::User,
            "a directory under `users/<tenant>/`: user files are `users/<tenant>/<actor>.toml`",
        ));
    }
    let mut out = Vec::new();
    for entry in listing.files {
        match ActorId::new(&entry.stem) {
            Ok(a) => match read_file(dir, &entry.rel, Layer::User, read) {
                Ok(text) => out.push((a, entry.rel, text)),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(invalid_id(entry.rel, Layer::User, &e)),
        }
    }
    out
}

/// Reads one policy file, `rel` (relative to `dir`, and named so in errors): it must be a regular
/// file (symbolic links are followed), at most [`MAX_FILE_BYTES`] long, and UTF-8. A FIFO or
/// device is refused before it is opened, so reading never blocks on one. `read` counts the bytes
/// read so far from the directory, against [`MAX_TOTAL_BYTES`].
fn read_file(dir: &Path, rel: &str, layer: Layer, read: &mut u64) -> Result<String, PolicyError> {
    let path = dir.join(rel);
    let err = |kind: PolicyErrorKind, line: Option<u32>| PolicyError {
        file: rel.to_owned(),
        layer,
        key: None,
        line,
        kind,
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            let kind = if link {
                PolicyErrorKind::NotAFile(format!(
                    "a symbolic link that cannot be followed (dangling, or a loop): {e}"
                ))
            } else {
                PolicyErrorKind::Io(e.to_string())
            };
            return Err(err(kind, None));
        }
    };
    if meta.is_dir() {
        return Err(err(
            PolicyErrorKind::NotAFile("a directory where a policy file belongs".into()),
            None,
        ));
    }
    if !meta.is_file() {
        return Err(err(
            PolicyErrorKind::NotAFile("a FIFO, socket or device, not a file".into()),
            None,
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(too_large(meta.len()), None));
    }
    let over_total = |len: u64| {
        PolicyErrorKind::TooLarge(format!(
            "with its {len} bytes the files read pass {MAX_TOTAL_BYTES} bytes, the limit per policy directory"
        ))
    };
    if read.saturating_add(meta.len()) > MAX_TOTAL_BYTES {
        return Err(err(over_total(meta.len()), None));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| err(PolicyErrorKind::Io(e.to_string()), None))?;
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > MAX_FILE_BYTES {
        return Err(err(too_large(len), None));
    }
    if read.saturating_add(len) > MAX_TOTAL_BYTES {
        return Err(err(over_total(len), None));
    }
    *read = read.saturating_add(len);
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let newlines = bytes
            .get(..valid)
            .unwrap_or(bytes)
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        let line = u32::try_from(newlines + 1).unwrap_or(u32::MAX);
        err(PolicyErrorKind::NotUtf8, Some(line))
    })
}

fn too_large(len: u64) -> PolicyErrorKind {
    PolicyErrorKind::TooLarge(format!(
        "{len} bytes, the limit is {MAX_FILE_BYTES} bytes per file"
    ))
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
        let mut read = 0u64;
        let rel = format!("tenants/{tenant}.toml");
        let path = dir.join(&rel);
        if std::fs::symlink_metadata(&path).is_ok() {
            match read_file(dir, &rel, Layer::Tenant, &mut read) {
                Ok(text) => s = s.with_tenant_file(&rel, &text),
                Err(e) => s.read_errors.push(e),
            }
        }
        let mut errors = Vec::new();
        for (actor, rel, text) in read_users(dir, tenant.as_str(), &mut errors, &mut read) {
            s = s.with_user(actor, &rel, &text);
        }
        s.read_errors.extend(errors);
        Ok(s)
    }
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

/// Byte offsets of every newline of a text: the line of an offset is one binary search away, so
/// naming the line of each of n keys costs O(n log n), not O(n × text length).
struct Lines(Vec<usize>);

impl Lines {
    fn of(text: &str) -> Self {
        Lines(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The 1-based line of `offset`.
    fn line(&self, offset: usize) -> u32 {
        let before = self.0.partition_point(|nl| *nl < offset);
        u32::try_from(before + 1).unwrap_or(u32::MAX)
    }
}

/// A value TOML parsed but Nodus cannot represent (or that is over a cap): the kind, the line, the
/// dotted path.
struct ConvertError {
    kind: PolicyErrorKind,
    line: u32,
    path: String,
}

/// Converts parsed TOML to [`Raw`] values, counting entries and depth against the caps.
struct Converter<'a> {
    lines: &'a Lines,
    entries: usize,
}

impl Converter<'_> {
    fn count(&mut self, path: &str, line: u32, depth: usize) -> Result<(), ConvertError> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES_PER_FILE {
            return Err(ConvertError {
                kind: PolicyErrorKind::TooLarge(format!(
                    "more than {MAX_ENTRIES_PER_FILE} entries (keys and array items)"
                )),
                line,
                path: path.to_owned(),
            });
        }
        if depth > MAX_DEPTH {
            return Err(ConvertError {
                kind: PolicyErrorKind::TooLarge(format!(
                    "tables and arrays nest more than {MAX_DEPTH} deep"
                )),
                line,
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    fn value(
        &mut self,
        path: &str,
        span_start: usize,
        v: &DeValue<'_>,
        depth: usize,
    ) -> Result<RawKind, ConvertError> {
        let line = self.lines.line(span_start);
        let fail = |message: String| ConvertError {
            kind: PolicyErrorKind::Malformed(message),
            line,
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
                    let line = self.lines.line(start);
                    self.count(path, line, depth + 1)?;
                    out.push(Raw {
                        line,
                        kind: self.value(path, start, item.get_ref(), depth + 1)?,
                    });
                }
                RawKind::Array(out)
            }
            DeValue::Table(t) => RawKind::Table(self.table(path, t, depth + 1)?),
        })
    }

    fn table(
        &mut self,
        prefix: &str,
        t: &DeTable<'_>,
        depth: usize,
    ) -> Result<Vec<(String, Raw)>, ConvertError> {
        let mut out = Vec::new();
        for (k, v) in t.iter() {
            let line = self.lines.line(k.span().start);
            let name = k.get_ref().to_string();
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            self.count(&path, line, depth)?;
            let kind = self.value(&path, v.span().start, v.get_ref(), depth)?;
            out.push((name, Raw { line, kind }));
        }
        Ok(out)
    }
}

/// Parses a document into a table of raw values with line numbers. A document over
/// [`MAX_FILE_BYTES`] is refused before parsing; one over [`MAX_ENTRIES_PER_FILE`] or
/// [`MAX_DEPTH`] as soon as the cap is crossed.
pub(crate) fn parse_doc(doc: &Doc, layer: Layer) -> Result<Vec<(String, Raw)>, PolicyError> {
    let len = u64::try_from(doc.text.len()).unwrap_or(u64::MAX);
    if len > MAX_FILE_BYTES {
        return Err(PolicyError {
            file: doc.file.clone(),
            layer,
            key: None,
            line: None,
            kind: too_large(len),
        });
    }
    let lines = Lines::of(&doc.text);
    let table = DeTable::parse(&doc.text).map_err(|e| PolicyError {
        file: doc.file.clone(),
        layer,
        key: None,
        line: e.span().map(|s| lines.line(s.start)),
        kind: PolicyErrorKind::Malformed(e.message().trim().to_owned()),
    })?;
    let mut conv = Converter {
        lines: &lines,
        entries: 0,
    };
    conv.table("", table.get_ref(), 0).map_err(|e| PolicyError {
        file: doc.file.clone(),
        layer,
        key: Some(e.path),
        line: Some(e.line),
        kind: e.kind,
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
