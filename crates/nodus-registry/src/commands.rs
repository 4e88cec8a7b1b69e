//! The command registry: every action a host exposes, resolved to a dense [`CommandId`] once, at
//! registration.
//!
//! A command has a name (`notes.create`), a required permission (by default its name), an optional
//! minimum label, a rate class and an audit level ([`CommandSpec`]), and a handler written one of two
//! ways:
//!
//! * a typed [`Command`] (`Input: DeserializeOwned`, `Output: Serialize`), called from Rust with no
//!   JSON at all, and also reachable from JSON (the registry derives the JSON adapter);
//! * a JSON handler ([`CommandRegistry::register_json`]) for hosts that speak JSON end to end.
//!
//! Reads never lock: the table is an `ArcSwap` snapshot; registration and revalidation build a new
//! table and swap it in. Entries that a new policy makes invalid (a minimum label the label scheme no
//! longer defines) are quarantined — kept, inactive, listed — never deleted.
//!
//! ```
//! use std::sync::Arc;
//! use nodus_policy::{LabelScheme, Symbols};
//! use nodus_registry::commands::{Command, CommandError, CommandRegistry, CommandSpec, Context};
//!
//! struct Echo;
//! impl Command for Echo {
//!     type Input = String;
//!     type Output = String;
//!     fn spec(&self) -> CommandSpec {
//!         CommandSpec::new("demo.echo").permission("demo.read")
//!     }
//!     fn call(&self, _ctx: &Context, input: String) -> Result<String, CommandError> {
//!         Ok(input)
//!     }
//! }
//!
//! let registry = CommandRegistry::new(Arc::new(Symbols::default()));
//! let id = registry.register(Echo, &LabelScheme::classic()).unwrap();
//! assert_eq!(registry.resolve("demo.echo"), Some(id));
//! assert!(registry.register(Echo, &LabelScheme::classic()).is_err()); // duplicate name
//! ```

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};
use nodus_policy::{
    ActorId, Label, LabelScheme, PermissionId, RateClassId, Subject, Symbols, TenantHandle,
    TenantId,
};
use nodus_security::audit::SharedStr;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::rate::RateCells;

/// The longest command name accepted, in bytes.
pub const MAX_COMMAND_NAME: usize = 128;

/// A registered command's dense id (its index in the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CommandId(pub u32);

/// How much a command's calls leave in the audit log. Every outcome is always recorded; `Detailed`
/// adds the input and output sizes to the record's detail map (one small allocation per call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditLevel {
    /// One record per call: who, what, outcome, reason, policy epoch.
    #[default]
    Standard,
    /// As `Standard`, plus input/output sizes.
    Detailed,
}

/// The declaration of a command: everything the guard needs, nothing about its handler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandSpec {
    /// The name (a literal is kept as `&'static str`: audit records copy it without touching a
    /// shared reference count).
    name: SharedStr,
    permission: Arc<str>,
    min_label: Option<Arc<str>>,
    rate_class: Arc<str>,
    audit: AuditLevel,
    description: Option<Arc<str>>,
}

impl CommandSpec {
    /// A spec named `name`, requiring the permission `name`, in rate class `default`, with no
    /// minimum label and the standard audit level.
    ///
    /// Give the name as a string literal where you can: audit records then carry it without a
    /// shared reference count, so threads calling the same command do not contend on it. A
    /// `String` works too (it is shared behind an `Arc`).
    pub fn new(name: impl Into<SharedStr>) -> Self {
        let name: SharedStr = name.into();
        CommandSpec {
            permission: Arc::from(name.as_str()),
            name,
            min_label: None,
            rate_class: Arc::from("default"),
            audit: AuditLevel::Standard,
            description: None,
        }
    }

    /// Sets the permission a subject's roles must grant.
    pub fn permission(mut self, permission: impl AsRef<str>) -> Self {
        self.permission = Arc::from(permission.as_ref());
        self
    }

    /// Sets the minimum label (e.g. `SECRET//CRYPTO`) a subject's clearance must dominate. It is
    /// parsed against the policy's label scheme at registration and on every policy reload.
    pub fn min_label(mut self, label: impl AsRef<str>) -> Self {
        self.min_label = Some(Arc::from(label.as_ref()));
        self
    }

    /// Sets the rate class whose limit (policy key `rate.limits`) applies.
    pub fn rate_class(mut self, class: impl AsRef<str>) -> Self {
        self.rate_class = Arc::from(class.as_ref());
        self
    }

    /// Sets the audit level.
    pub fn audit(mut self, level: AuditLevel) -> Self {
        self.audit = level;
        self
    }

    /// Sets a one-line description shown in listings.
    pub fn description(mut self, text: impl AsRef<str>) -> Self {
        self.description = Some(Arc::from(text.as_ref()));
        self
    }

    /// The command name.
    pub fn name(&self) -> &SharedStr {
        &self.name
    }

    /// The required permission.
    pub fn required_permission(&self) -> &str {
        &self.permission
    }

    /// The minimum label, as written.
    pub fn required_label(&self) -> Option<&str> {
        self.min_label.as_deref()
    }

    /// The rate class.
    pub fn class(&self) -> &str {
        &self.rate_class
    }

    /// The audit level.
    pub fn audit_level(&self) -> AuditLevel {
        self.audit
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another command already has this name.
    #[error("command `{0}` is already registered")]
    Duplicate(String),
    /// The name is not a dotted lowercase identifier.
    #[error(
        "invalid command name `{0}`: use dot-separated segments of `a-z 0-9 _ -`, at most {MAX_COMMAND_NAME} bytes"
    )]
    InvalidName(String),
    /// The same typed command type was registered twice under different names.
    #[error("the command type behind `{0}` is already registered as `{1}`")]
    DuplicateType(String, String),
    /// The minimum label does not parse under the policy's label scheme.
    #[error(
        "command `{command}` has minimum label `{label}`, which the policy cannot parse: {reason}"
    )]
    InvalidLabel {
        /// The command.
        command: String,
        /// The label as written.
        label: String,
        /// Why it does not parse.
        reason: String,
    },
    /// An empty permission or rate class.
    #[error("command `{0}` has an empty {1}")]
    Empty(String, &'static str),
}

fn valid_segment_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

fn validate_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COMMAND_NAME
        && name
            .split('.')
            .all(|seg| !seg.is_empty() && seg.chars().all(valid_segment_char));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_owned()))
    }
}

/// An error a handler returns: a stable machine-readable code and a human message.
///
/// ```
/// use nodus_registry::commands::CommandError;
/// let e = CommandError::new("NoteNotFound", "note `n1` does not exist");
/// assert_eq!(e.code(), "NoteNotFound");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{code}: {message}")]
pub struct CommandError {
    code: Cow<'static, str>,
    message: String,
}

impl CommandError {
    /// An error with a stable code (e.g. `NoteNotFound`) and a message.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        CommandError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Why a JSON call failed before or inside the handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonCallError {
    /// The payload did not deserialize into the command's input; `path` names the offending field
    /// (`.` for the root).
    #[error("invalid input at `{path}`: {message}")]
    InvalidInput {
        /// Dotted path of the field, e.g. `items[2].title`.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The handler's output could not be serialised.
    #[error("output could not be serialised: {0}")]
    Output(String),
    /// The handler failed.
    #[error(transparent)]
    Handler(#[from] CommandError),
}

/// Deserialises `json` into `T`, naming the path of the first problem.
///
/// # Errors
/// [`JsonCallError::InvalidInput`] naming the path and the reason.
pub fn parse_input<T: DeserializeOwned>(json: &str) -> Result<T, JsonCallError> {
    // Fast path: one pass without path tracking, and the rest of the text must be whitespace.
    // Only a failure takes the slow path below, which finds the same failure again with its
    // path (so the result is the same either way).
    let mut fast = serde_json::Deserializer::from_str(json);
    if let Ok(v) = <T as serde::Deserialize>::deserialize(&mut fast)
        && fast.end().is_ok()
    {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_str(json);
    let value: Result<T, _> = serde_path_to_error::deserialize(de);
    match value {
        Ok(v) => {
            // Trailing characters after the value are an error too.
            let mut rest =
                serde_json::Deserializer::from_str(json).into_iter::<serde::de::IgnoredAny>();
            let _ = rest.next();
            if rest.next().is_some() {
                return Err(JsonCallError::InvalidInput {
                    path: ".".into(),
                    message: "trailing characters after the JSON value".into(),
                });
            }
            Ok(v)
        }
        Err(e) => {
            let path = e.path().to_string();
            Err(JsonCallError::InvalidInput {
                path,
                message: e.into_inner().to_string(),
            })
        }
    }
}

/// Who is calling, for which tenant, in which session: the first argument of every call.
///
/// Build it once per session with `Nodus::context`, which *issues* it: it binds the tenant's policy
/// handle and the actor's rate cells so that the hot path hashes nothing, and stamps the context
/// with the instance's private [`ContextIssuer`]. There is no public way to attach a binding to a
/// context: an instance trusts only the bindings its own issuer made, and even then checks on every
/// call that the bound policy handle and the subject belong to the context's tenant
/// (`TenantMismatch` otherwise). Derive per-request copies with [`Context::with_request_id`]
/// (cloning never allocates).
///
/// [`Context::new`] makes an *unbound* context, for calling a [`Command`] directly (unit tests)
/// or for hosts that do not keep contexts: an instance resolves its tenant and rate cells on every
/// call, and applies the same checks.
#[derive(Clone)]
pub struct Context {
    tenant: TenantId,
    subject: Subject,
    session: Arc<str>,
    request_id: u64,
    binding: Option<Binding>,
}

#[derive(Clone)]
struct Binding {
    issuer: u64,
    tenant_handle: TenantHandle,
    rate: Arc<RateCells>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("tenant", &self.tenant)
            .field("subject", &self.subject)
            .field("session", &self.session)
            .field("request_id", &self.request_id)
            .field("bound", &self.binding.is_some())
            .finish()
    }
}

/// Issues bound [`Context`]s. Each issuer has a process-unique identity that cannot be chosen or
/// copied: a `Nodus` instance keeps its issuer private and honours only the bindings it issued,
/// so a context bound elsewhere (another instance, a host-made issuer) is never trusted as bound.
#[derive(Debug)]
pub struct ContextIssuer {
    id: u64,
}

static NEXT_ISSUER: AtomicU64 = AtomicU64::new(1);

impl Default for ContextIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl ContextIssuer {
    /// A new issuer with a fresh identity.
    pub fn new() -> Self {
        ContextIssuer {
            id: NEXT_ISSUER.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A context for `subject` in `tenant`, bound to `tenant_handle` and `rate`.
    pub fn issue(
        &self,
        tenant: TenantId,
        subject: Subject,
        session: impl AsRef<str>,
        tenant_handle: TenantHandle,
        rate: Arc<RateCells>,
    ) -> Context {
        let mut ctx = Context::new(tenant, subject, session);
        ctx.binding = Some(Binding {
            issuer: self.id,
            tenant_handle,
            rate,
        });
        ctx
    }

    /// The bound policy handle and rate cells of `ctx`, when this issuer issued it; `None` for
    /// unbound contexts and contexts issued elsewhere.
    #[inline]
    pub fn binding<'c>(&self, ctx: &'c Context) -> Option<(&'c TenantHandle, &'c Arc<RateCells>)> {
        match &ctx.binding {
            Some(b) if b.issuer == self.id => Some((&b.tenant_handle, &b.rate)),
            _ => None,
        }
    }
}

impl Context {
    /// An unbound context: an instance resolves the tenant and the actor's rate cells on every
    /// call. `Nodus::context` gives a bound one.
    pub fn new(tenant: TenantId, subject: Subject, session: impl AsRef<str>) -> Self {
        Context {
            tenant,
            subject,
            session: Arc::from(session.as_ref()),
            request_id: 0,
            binding: None,
        }
    }

    /// A copy of this context for another request (no allocation).
    pub fn with_request_id(&self, request_id: u64) -> Self {
        let mut c = self.clone();
        c.request_id = request_id;
        c
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The subject.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The actor (shorthand for `subject().actor()`).
    pub fn actor(&self) -> &ActorId {
        self.subject.actor()
    }

    /// The session id.
    pub fn session(&self) -> &Arc<str> {
        &self.session
    }

    /// The request id.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// `true` when an issuer bound this context (whether a given instance trusts the binding is
    /// that instance's decision).
    pub fn is_bound(&self) -> bool {
        self.binding.is_some()
    }
}

/// A command implemented in Rust with typed input and output.
pub trait Command: Send + Sync + 'static {
    /// The input, deserialised from JSON on the JSON entry point, passed as is on the typed one.
    type Input: DeserializeOwned + Send + 'static;
    /// The output, serialised to JSON on the JSON entry point.
    type Output: Serialize + Send + 'static;
    /// The command's declaration (read once, at registration).
    fn spec(&self) -> CommandSpec;
    /// Runs the command. Called only after the guard allowed it.
    ///
    /// # Errors
    /// A [`CommandError`] with a stable code; it is audited as an error outcome.
    fn call(&self, ctx: &Context, input: Self::Input) -> Result<Self::Output, CommandError>;

    /// The output as JSON, on the JSON entry point. The default serialises it with serde; a
    /// command on a hot path may build the value directly instead, which must equal what
    /// `serde_json::to_value` makes of it.
    ///
    /// # Errors
    /// When the output cannot be represented as JSON (reported as an output error).
    fn output_json(&self, output: Self::Output) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(output)
    }

    /// Runs the command on the JSON entry point: [`call`](Self::call), then
    /// [`output_json`](Self::output_json). A command that can answer with JSON it already holds
    /// (e.g. a cached read) may override it to skip the typed output; the result must equal
    /// what the default makes, errors included. Called only after the guard allowed it.
    ///
    /// # Errors
    /// As [`call`](Self::call), or [`JsonCallError::Output`].
    fn call_json(
        &self,
        ctx: &Context,
        input: Self::Input,
    ) -> Result<serde_json::Value, JsonCallError> {
        let out = self.call(ctx, input)?;
        self.output_json(out)
            .map_err(|e| JsonCallError::Output(e.to_string()))
    }
}

/// A JSON handler: payload text in, JSON value out.
pub type JsonHandler =
    dyn Fn(&Context, &str) -> Result<serde_json::Value, JsonCallError> + Send + Sync;

/// Whether a command can be called.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CommandStatus {
    /// Callable.
    Active,
    /// Kept but not callable, with the reason (e.g. its minimum label no longer parses).
    Quarantined {
        /// Why.
        reason: String,
    },
}

/// One registered command, as the dispatcher sees it.
#[derive(Clone)]
pub struct CommandEntry {
    id: CommandId,
    spec: CommandSpec,
    permission: PermissionId,
    rate_class: RateClassId,
    min_label: Option<Label>,
    status: CommandStatus,
    json: Arc<JsonHandler>,
    typed: Option<Arc<dyn Any + Send + Sync>>,
    metrics: CommandMetrics,
}

impl fmt::Debug for CommandEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandEntry")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("status", &self.status)
            .finish()
    }
}

/// Metric handles cached per command at registration (the `metrics` facade: no-ops unless the host
/// installed a recorder before building).
#[derive(Clone, Debug)]
pub struct CommandMetrics {
    /// Calls allowed and routed.
    pub allowed: metrics::Counter,
    /// Calls denied by the guard.
    pub denied: metrics::Counter,
    /// Calls that failed (invalid input, handler error).
    pub errors: metrics::Counter,
    /// Handler latency in seconds (recorded only when instrumentation is enabled).
    pub latency: metrics::Histogram,
}

impl CommandMetrics {
    fn new(name: &str) -> Self {
        let n = name.to_string();
        CommandMetrics {
            allowed: metrics::counter!("nodus_dispatch_total", "command" => n.clone(), "outcome" => "allowed"),
            denied: metrics::counter!("nodus_dispatch_total", "command" => n.clone(), "outcome" => "denied"),
            errors: metrics::counter!("nodus_dispatch_total", "command" => n.clone(), "outcome" => "error"),
            latency: metrics::histogram!("nodus_dispatch_seconds", "command" => n),
        }
    }
}

impl CommandEntry {
    /// The id.
    pub fn id(&self) -> CommandId {
        self.id
    }
    /// The name (copying a literal name touches no shared counter).
    #[inline]
    pub fn name(&self) -> &SharedStr {
        &self.spec.name
    }
    /// The declaration.
    pub fn spec(&self) -> &CommandSpec {
        &self.spec
    }
    /// The interned required permission.
    pub fn permission(&self) -> PermissionId {
        self.permission
    }
    /// The interned rate class.
    pub fn rate_class(&self) -> RateClassId {
        self.rate_class
    }
    /// The parsed minimum label.
    pub fn min_label(&self) -> Option<Label> {
        self.min_label
    }
    /// Whether the command is callable.
    pub fn status(&self) -> &CommandStatus {
        &self.status
    }
    /// `true` when callable.
    pub fn is_active(&self) -> bool {
        matches!(self.status, CommandStatus::Active)
    }
    /// The JSON handler.
    pub fn json_handler(&self) -> &Arc<JsonHandler> {
        &self.json
    }
    /// The typed handler, if this command was registered as a [`Command`] of type `C`.
    #[inline]
    pub fn typed<C: Command>(&self) -> Option<&C> {
        self.typed.as_ref().and_then(|t| t.downcast_ref::<C>())
    }
    /// Cached metric handles.
    pub fn metrics(&self) -> &CommandMetrics {
        &self.metrics
    }
}

/// A summary of one command, for listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandInfo {
    /// The id.
    pub id: CommandId,
    /// The declaration.
    pub spec: CommandSpec,
    /// Whether it is callable.
    pub status: CommandStatus,
}

/// A command whose status changed on revalidation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandChange {
    /// The command.
    pub command: String,
    /// Status before.
    pub from: CommandStatus,
    /// Status after.
    pub to: CommandStatus,
}

/// A hasher for `TypeId` keys: `TypeId` is already a well-mixed hash, so pass its bits through.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

/// A read-only view of the registry at one moment.
#[derive(Default)]
pub struct CommandTable {
    entries: Vec<Arc<CommandEntry>>,
    by_name: HashMap<SharedStr, CommandId>,
    by_type: HashMap<TypeId, CommandId, BuildHasherDefault<TypeIdHasher>>,
}

impl CommandTable {
    /// The entry with `id`.
    #[inline]
    pub fn get(&self, id: CommandId) -> Option<&Arc<CommandEntry>> {
        self.entries.get(id.0 as usize)
    }
    /// The id of the command named `name`.
    pub fn resolve(&self, name: &str) -> Option<CommandId> {
        self.by_name.get(name).copied()
    }
    /// The id of the typed command `C`.
    #[inline]
    pub fn id_of<C: Command>(&self) -> Option<CommandId> {
        self.by_type.get(&TypeId::of::<C>()).copied()
    }
    /// Every entry, by id.
    pub fn entries(&self) -> &[Arc<CommandEntry>] {
        &self.entries
    }
}

/// The registry of commands. Reads never lock; writes build and swap a new table.
pub struct CommandRegistry {
    symbols: Arc<Symbols>,
    table: ArcSwap<CommandTable>,
    write: Mutex<()>,
}

impl fmt::Debug for CommandRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandRegistry")
            .field("commands", &self.table.load().entries.len())
            .finish()
    }
}

impl CommandRegistry {
    /// An empty registry interning permissions and rate classes into `symbols` (the policy
    /// store's table, so that snapshots can compile them).
    pub fn new(symbols: Arc<Symbols>) -> Self {
        CommandRegistry {
            symbols,
            table: ArcSwap::from_pointee(CommandTable::default()),
            write: Mutex::new(()),
        }
    }

    /// Registers a typed command.
    ///
    /// # Errors
    /// [`RegistryError`] for an invalid or duplicate name, or a minimum label `scheme` cannot parse.
    pub fn register<C: Command>(
        &self,
        command: C,
        scheme: &LabelScheme,
    ) -> Result<CommandId, RegistryError> {
        let command = Arc::new(command);
        let spec = command.spec();
        let for_json = command.clone();
        let json: Arc<JsonHandler> = Arc::new(move |ctx: &Context, payload: &str| {
            let input: C::Input = parse_input(payload)?;
            for_json.call_json(ctx, input)
        });
        let typed: Arc<dyn Any + Send + Sync> = command;
        self.insert(spec, json, Some((TypeId::of::<C>(), typed)), scheme)
    }

    /// Registers a JSON handler.
    ///
    /// # Errors
    /// As [`CommandRegistry::register`].
    pub fn register_json<F>(
        &self,
        spec: CommandSpec,
        handler: F,
        scheme: &LabelScheme,
    ) -> Result<CommandId, RegistryError>
    where
        F: Fn(&Context, &str) -> Result<serde_json::Value, JsonCallError> + Send + Sync + 'static,
    {
        self.insert(spec, Arc::new(handler), None, scheme)
    }

    fn insert(
        &self,
        spec: CommandSpec,
        json: Arc<JsonHandler>,
        typed: Option<(TypeId, Arc<dyn Any + Send + Sync>)>,
        scheme: &LabelScheme,
    ) -> Result<CommandId, RegistryError> {
        validate_name(&spec.name)?;
        if spec.permission.trim().is_empty() {
            return Err(RegistryError::Empty(spec.name.to_string(), "permission"));
        }
        if spec.rate_class.trim().is_empty() {
            return Err(RegistryError::Empty(spec.name.to_string(), "rate class"));
        }
        let min_label = match &spec.min_label {
            None => None,
            Some(text) => Some(
                scheme
                    .parse(text)
                    .map_err(|e| RegistryError::InvalidLabel {
                        command: spec.name.to_string(),
                        label: text.to_string(),
                        reason: e.to_string(),
                    })?,
            ),
        };
        let _guard = self.write.lock();
        let old = self.table.load_full();
        if old.by_name.contains_key(&*spec.name) {
            return Err(RegistryError::Duplicate(spec.name.to_string()));
        }
        if let Some((tid, _)) = &typed
            && let Some(prev) = old.by_type.get(tid).and_then(|id| old.get(*id))
        {
            return Err(RegistryError::DuplicateType(
                spec.name.to_string(),
                prev.name().to_string(),
            ));
        }
        let id = CommandId(
            u32::try_from(old.entries.len())
                .map_err(|_| RegistryError::InvalidName(spec.name.to_string()))?,
        );
        let entry = CommandEntry {
            id,
            permission: self.symbols.permission(&spec.permission),
            rate_class: self.symbols.rate_class(&spec.rate_class),
            min_label,
            status: CommandStatus::Active,
            json,
            typed: typed.as_ref().map(|(_, t)| t.clone()),
            metrics: CommandMetrics::new(&spec.name),
            spec,
        };
        let mut entries = old.entries.clone();
        let mut by_name = old.by_name.clone();
        let mut by_type = old.by_type.clone();
        by_name.insert(entry.spec.name.clone(), id);
        if let Some((tid, _)) = typed {
            by_type.insert(tid, id);
        }
        entries.push(Arc::new(entry));
        self.table.store(Arc::new(CommandTable {
            entries,
            by_name,
            by_type,
        }));
        Ok(id)
    }

    /// The current table (an `arc-swap` guard: wait-free, no allocation).
    #[inline]
    pub fn load(&self) -> Guard<Arc<CommandTable>> {
        self.table.load()
    }

    /// The id of the command named `name`.
    pub fn resolve(&self, name: &str) -> Option<CommandId> {
        self.table.load().resolve(name)
    }

    /// The id of the typed command `C`.
    pub fn id_of<C: Command>(&self) -> Option<CommandId> {
        self.table.load().id_of::<C>()
    }

    /// Every command with its status.
    pub fn list(&self) -> Vec<CommandInfo> {
        self.table
            .load()
            .entries
            .iter()
            .map(|e| CommandInfo {
                id: e.id,
                spec: e.spec.clone(),
                status: e.status.clone(),
            })
            .collect()
    }

    /// Re-checks every command against a (new) label scheme: a command whose minimum label no
    /// longer parses is quarantined; one whose label parses again is reinstated. Returns the
    /// changes.
    pub fn revalidate(&self, scheme: &LabelScheme) -> Vec<CommandChange> {
        let _guard = self.write.lock();
        let old = self.table.load_full();
        let mut changes = Vec::new();
        let mut entries = Vec::with_capacity(old.entries.len());
        for e in &old.entries {
            let (status, min_label) = match &e.spec.min_label {
                None => (CommandStatus::Active, None),
                Some(text) => match scheme.parse(text) {
                    Ok(l) => (CommandStatus::Active, Some(l)),
                    Err(err) => (
                        CommandStatus::Quarantined {
                            reason: format!("minimum label `{text}` does not parse: {err}"),
                        },
                        e.min_label,
                    ),
                },
            };
            if status != e.status || min_label != e.min_label {
                if status != e.status {
                    changes.push(CommandChange {
                        command: e.spec.name.to_string(),
                        from: e.status.clone(),
                        to: status.clone(),
                    });
                }
                let mut n = (**e).clone();
                n.status = status;
                n.min_label = min_label;
                entries.push(Arc::new(n));
            } else {
                entries.push(e.clone());
            }
        }
        self.table.store(Arc::new(CommandTable {
            entries,
            by_name: old.by_name.clone(),
            by_type: old.by_type.clone(),
        }));
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct NoteIn {
        title: String,
        #[allow(dead_code)]
        tags: Vec<String>,
    }

    struct Create;
    impl Command for Create {
        type Input = NoteIn;
        type Output = String;
        fn spec(&self) -> CommandSpec {
            CommandSpec::new("notes.create").min_label("SECRET")
        }
        fn call(&self, _: &Context, i: NoteIn) -> Result<String, CommandError> {
            Ok(i.title)
        }
    }

    fn ctx() -> Context {
        let sy = Symbols::default();
        Context::new(
            TenantId::new("t").unwrap(),
            Subject::new(
                TenantId::new("t").unwrap(),
                ActorId::new("a").unwrap(),
                sy.role_set(["r"]),
                Label::BOTTOM,
                &nodus_policy::LabelScheme::classic(),
            ),
            "s",
        )
    }

    #[test]
    fn names_are_validated() {
        for bad in [
            "",
            "Notes.create",
            "notes..create",
            "notes.",
            "a b",
            &"x".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["notes", "notes.create", "a-b.c_d.e1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn register_resolve_and_json_path() {
        let r = CommandRegistry::new(Arc::new(Symbols::default()));
        let id = r.register(Create, &LabelScheme::classic()).unwrap();
        let t = r.load();
        let e = t.get(id).unwrap();
        assert_eq!(e.min_label(), Some(Label::new(2, 0)));
        assert!(e.typed::<Create>().is_some());
        assert_eq!(t.id_of::<Create>(), Some(id));
        let out = (e.json_handler())(&ctx(), r#"{"title":"hi","tags":[]}"#).unwrap();
        assert_eq!(out, serde_json::json!("hi"));
        let err = (e.json_handler())(&ctx(), r#"{"title":"hi","tags":[1]}"#).unwrap_err();
        assert_eq!(
            err,
            JsonCallError::InvalidInput {
                path: "tags[0]".into(),
                message: "invalid type: integer `1`, expected a string at line 1 column 23".into()
            }
        );
        let err = (e.json_handler())(&ctx(), r#"{"title":"hi","tags":[]} x"#).unwrap_err();
        assert!(matches!(err, JsonCallError::InvalidInput { .. }));
    }

    #[test]
    fn duplicates_and_bad_labels_are_refused() {
        let r = CommandRegistry::new(Arc::new(Symbols::default()));
        r.register(Create, &LabelScheme::classic()).unwrap();
        assert_eq!(
            r.register_json(
                CommandSpec::new("notes.create"),
                |_, _| Ok(serde_json::Value::Null),
                &LabelScheme::classic()
            ),
            Err(RegistryError::Duplicate("notes.create".into()))
        );
        let e = r
            .register_json(
                CommandSpec::new("x.y").min_label("COSMIC"),
                |_, _| Ok(serde_json::Value::Null),
                &LabelScheme::classic(),
            )
            .unwrap_err();
        assert!(matches!(e, RegistryError::InvalidLabel { .. }), "{e}");
        assert!(e.to_string().contains("`COSMIC`"));
    }

    #[test]
    fn revalidate_quarantines_and_reinstates() {
        let r = CommandRegistry::new(Arc::new(Symbols::default()));
        let id = r.register(Create, &LabelScheme::classic()).unwrap();
        let other = LabelScheme::new(["LOW", "HIGH"], Vec::<&str>::new()).unwrap();
        let changes = r.revalidate(&other);
        assert_eq!(changes.len(), 1);
        assert!(!r.load().get(id).unwrap().is_active());
        let changes = r.revalidate(&LabelScheme::classic());
        assert_eq!(changes.len(), 1);
        assert!(r.load().get(id).unwrap().is_active());
        assert!(r.revalidate(&LabelScheme::classic()).is_empty());
    }
}
