//! The fabric's built-in commands: `types.*` and `objects.*`, through the front door like any
//! other command (guarded, rate limited, audited).
//!
//! **Permissions, two levels.** The guard checks the command's own permission (`types.define`,
//! `objects.create`, …: "may use this action at all"). The handler then checks the action on the
//! object's type: `objects.<action>.<type>` (e.g. `objects.create.case`). A role needs both;
//! `objects.*` grants both for every type, `["objects.create", "objects.create.*"]` the action on
//! every type, `["objects.get", "objects.get.case"]` reading cases only. A refusal of the
//! per-type permission is the handler's error `MissingPermission` naming the type.
//!
//! **Labels.** Every read answers for the caller's clearance under the current policy: a version
//! above it is *absent* (`NotFound`), never forbidden; see `docs/fabric.md`.

use nodus_fabric::objects::{
    Fabric, FabricError, HistoryEntry, ListQuery, ObjectView, Page, Predicate,
};
use nodus_fabric::state::Visibility;
use nodus_fabric::types::TypeDoc;
use nodus_policy::PolicySnapshot;
use nodus_registry::commands::{Command, CommandError, CommandSpec, Context, JsonCallError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::builtins::{NoInput, instance};
use crate::nodus::WeakNodus;

fn fabric_error(e: FabricError) -> CommandError {
    CommandError::new(e.code(), e.to_string())
}

/// The caller's tenant snapshot, and the per-type permission check.
fn prepare(
    n: &crate::Nodus,
    ctx: &Context,
    action: &str,
    type_name: Option<&str>,
) -> Result<std::sync::Arc<PolicySnapshot>, CommandError> {
    let policy = &n.inner.policy;
    // A per-type permission seen for the first time is interned after the snapshots were
    // compiled: recompile them once (same content and epoch) so this and every later check
    // takes the bitset fast path instead of matching patterns.
    let permission = type_name.map(|t| {
        with_joined(action, b'.', t, |name| {
            match policy.symbols().permissions().get(name) {
                Some(id) => nodus_policy::PermissionId(id),
                None => {
                    let id = policy.symbols().permission(name);
                    policy.recompile();
                    id
                }
            }
        })
    });
    let snap = crate::builtins::tenant_snapshot(n, ctx)?;
    if let (Some(t), Some(permission)) = (type_name, permission)
        && !snap.permits(ctx.subject(), permission)
    {
        return Err(CommandError::new(
            "MissingPermission",
            format!("`{action}` on type `{t}` needs the permission `{action}.{t}`"),
        ));
    }
    Ok(snap)
}

/// After a write: the tenant's cache moves to a new generation, and the change is published to
/// the tenant's subscribers — ids, label and version only, never field values.
fn changed(n: &crate::Nodus, ctx: &Context, topic: &str, payload: Value) {
    n.inner.objects_cache.invalidate_tenant(ctx.tenant());
    let _ = n.inner.events.publish(topic, Some(ctx.tenant()), payload);
}

fn object_event(type_name: &str, id: &str, label: &str, version: u64) -> Value {
    serde_json::json!({"type": type_name, "id": id, "label": label, "version": version})
}

fn fabric(n: &crate::Nodus) -> &Fabric {
    &n.inner.fabric
}

/// Input of `types.define`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefineType {
    /// The type's name.
    pub name: String,
    /// Its JSON Schema (an object schema).
    pub schema: Value,
    /// Field metadata by top-level field (`encrypted`, `classification`, `indexed`, …).
    #[serde(default)]
    pub fields: Value,
}

/// `types.define`: defines a type, or redefines it compatibly (the next version). Output: the
/// type's document.
pub struct TypesDefine(pub(crate) WeakNodus);

impl Command for TypesDefine {
    type Input = DefineType;
    type Output = TypeDoc;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("types.define")
            .rate_class("admin")
            .description("define or compatibly redefine an object type")
    }
    fn call(&self, ctx: &Context, input: DefineType) -> Result<TypeDoc, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "types.define", None)?;
        let def = fabric(&n)
            .define_type(ctx.tenant(), &snap, &input.name, input.schema, input.fields)
            .map_err(fabric_error)?;
        changed(
            &n,
            ctx,
            "types.defined",
            serde_json::json!({"name": def.name().as_str(), "version": def.version()}),
        );
        Ok(def.to_doc())
    }
}

/// Input naming a type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeRef {
    /// The type's name.
    pub name: String,
}

/// `types.get`: a type's document.
pub struct TypesGet(pub(crate) WeakNodus);

impl Command for TypesGet {
    type Input = TypeRef;
    type Output = TypeDoc;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("types.get").description("read an object type")
    }
    fn call(&self, ctx: &Context, input: TypeRef) -> Result<TypeDoc, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "types.get", None)?;
        fabric(&n)
            .get_type(ctx.tenant(), &snap, &input.name)
            .map(|d| d.to_doc())
            .map_err(fabric_error)
    }
}

/// `types.list`: every type of the caller's tenant, by name.
pub struct TypesList(pub(crate) WeakNodus);

impl Command for TypesList {
    type Input = Option<NoInput>;
    type Output = Vec<TypeDoc>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("types.list").description("list the tenant's object types")
    }
    fn call(&self, ctx: &Context, _input: Option<NoInput>) -> Result<Vec<TypeDoc>, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "types.list", None)?;
        fabric(&n)
            .list_types(ctx.tenant(), &snap)
            .map(|v| v.iter().map(|d| d.to_doc()).collect())
            .map_err(fabric_error)
    }
}

/// Input of `objects.create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateObject {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The id (default: a random one).
    #[serde(default)]
    pub id: Option<String>,
    /// The label (default: the caller's clearance).
    #[serde(default)]
    pub label: Option<String>,
    /// The data (a JSON object valid under the type).
    pub data: Value,
}

/// `objects.create`: creates an object version at a label the caller may write.
pub struct ObjectsCreate(pub(crate) WeakNodus);

impl Command for ObjectsCreate {
    type Input = CreateObject;
    type Output = ObjectView;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("objects.create").description("create an object")
    }
    fn output_json(&self, output: ObjectView) -> Result<Value, serde_json::Error> {
        Ok(output.into_json())
    }
    fn call(&self, ctx: &Context, input: CreateObject) -> Result<ObjectView, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "objects.create", Some(&input.type_name))?;
        let view = fabric(&n)
            .create(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.type_name,
                input.id,
                input.label.as_deref(),
                input.data,
            )
            .map_err(fabric_error)?;
        let event = object_event(&view.type_name, &view.id, &view.label, view.version);
        changed(&n, ctx, "objects.created", event);
        Ok(view)
    }
}

/// Input naming an object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The id.
    pub id: String,
}

/// An [`ObjectView`] back from its cached form: its JSON output ([`ObjectView::into_json`]).
fn cached_view(v: &Value) -> Option<ObjectView> {
    let m = v.as_object()?;
    Some(ObjectView {
        type_name: m.get("type")?.as_str()?.to_owned(),
        id: m.get("id")?.as_str()?.to_owned(),
        label: m.get("label")?.as_str()?.to_owned(),
        version: m.get("version")?.as_u64()?,
        data: m.get("data")?.clone(),
    })
}

/// Runs `f` on `a` + `sep` + `b` (an ASCII `sep`), built on the stack when it fits: this is on
/// the cached-read path, where a heap string per key costs as much as the lookup.
fn with_joined<R>(a: &str, sep: u8, b: &str, f: impl FnOnce(&str) -> R) -> R {
    const CAP: usize = 320;
    let len = a.len() + 1 + b.len();
    let mut buf = [0u8; CAP];
    if let Some(out) = buf.get_mut(..len) {
        let (head, rest) = out.split_at_mut(a.len());
        head.copy_from_slice(a.as_bytes());
        if let Some((s, tail)) = rest.split_first_mut() {
            *s = sep;
            tail.copy_from_slice(b.as_bytes());
        }
        if let Ok(joined) = std::str::from_utf8(out) {
            return f(joined);
        }
    }
    let mut s = String::with_capacity(len);
    s.push_str(a);
    s.push(char::from(sep));
    s.push_str(b);
    f(&s)
}

/// `objects.get`: the version of an object the caller sees (the highest it dominates).
pub struct ObjectsGet(pub(crate) WeakNodus);

impl ObjectsGet {
    /// The object's JSON output ([`ObjectView::into_json`]) as the cache holds it, read (and
    /// cached) on a miss. The cache answers only for the same deciding inputs (tenant,
    /// clearance, scheme, policy epoch, write generation): see `nodus_fabric::state`. The JSON
    /// entry point clones this value; the typed one turns it back into a view.
    fn lookup(
        &self,
        ctx: &Context,
        input: &ObjectRef,
    ) -> Result<std::sync::Arc<Value>, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "objects.get", Some(&input.type_name))?;
        let who = Visibility::of(&snap, ctx.subject());
        let cache = &n.inner.objects_cache;
        let hit = with_joined(&input.type_name, b'/', &input.id, |entity| {
            cache.get(ctx.tenant(), &who, entity)
        });
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let entity = format!("{}/{}", input.type_name, input.id);
        let view = fabric(&n)
            .get(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.type_name,
                &input.id,
            )
            .map_err(fabric_error)?;
        let value = std::sync::Arc::new(view.into_json());
        cache.insert(ctx.tenant(), &who, &entity, value.clone());
        Ok(value)
    }
}

impl Command for ObjectsGet {
    type Input = ObjectRef;
    type Output = ObjectView;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("objects.get").description("read an object")
    }
    fn output_json(&self, output: ObjectView) -> Result<Value, serde_json::Error> {
        Ok(output.into_json())
    }
    fn call(&self, ctx: &Context, input: ObjectRef) -> Result<ObjectView, CommandError> {
        let value = self.lookup(ctx, &input)?;
        cached_view(&value).ok_or_else(|| {
            CommandError::new("HandlerFailed", "a cached object is not an object view")
        })
    }
    fn call_json(&self, ctx: &Context, input: ObjectRef) -> Result<Value, JsonCallError> {
        // The output without the typed view in between: one clone of the cached JSON.
        Ok(std::sync::Arc::unwrap_or_clone(self.lookup(ctx, &input)?))
    }
}

/// Input of `objects.update`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateObject {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The id.
    pub id: String,
    /// The version the caller read (a stale one is a `Conflict` naming both).
    pub expected_version: u64,
    /// The new data (see `docs/fabric.md`, "Operations").
    pub data: Value,
}

/// `objects.update`: updates the caller's version of an object, optimistically.
pub struct ObjectsUpdate(pub(crate) WeakNodus);

impl Command for ObjectsUpdate {
    type Input = UpdateObject;
    type Output = ObjectView;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("objects.update").description("update an object")
    }
    fn output_json(&self, output: ObjectView) -> Result<Value, serde_json::Error> {
        Ok(output.into_json())
    }
    fn call(&self, ctx: &Context, input: UpdateObject) -> Result<ObjectView, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "objects.update", Some(&input.type_name))?;
        let view = fabric(&n)
            .update(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.type_name,
                &input.id,
                input.expected_version,
                input.data,
            )
            .map_err(fabric_error)?;
        let event = object_event(&view.type_name, &view.id, &view.label, view.version);
        changed(&n, ctx, "objects.updated", event);
        Ok(view)
    }
}

/// Input of `objects.delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteObject {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The id.
    pub id: String,
    /// The version the caller read.
    pub expected_version: u64,
}

/// What `objects.delete` answers.
#[derive(Debug, Serialize)]
pub struct Deleted {
    /// Always `true`.
    pub deleted: bool,
}

/// `objects.delete`: a tombstone event; nothing is erased from the log.
pub struct ObjectsDelete(pub(crate) WeakNodus);

impl Command for ObjectsDelete {
    type Input = DeleteObject;
    type Output = Deleted;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("objects.delete").description("delete an object (a tombstone)")
    }
    fn call(&self, ctx: &Context, input: DeleteObject) -> Result<Deleted, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "objects.delete", Some(&input.type_name))?;
        fabric(&n)
            .delete(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.type_name,
                &input.id,
                input.expected_version,
            )
            .map_err(fabric_error)?;
        changed(
            &n,
            ctx,
            "objects.deleted",
            serde_json::json!({"type": input.type_name, "id": input.id}),
        );
        Ok(Deleted { deleted: true })
    }
}

/// `objects.list`: a page of the objects of a type the caller sees, filtered on indexed fields.
/// Input: a [`ListQuery`] as JSON (`{"type_name", "filter", "sort", "limit", "cursor"}`).
pub struct ObjectsList(pub(crate) WeakNodus);

impl Command for ObjectsList {
    type Input = ListQuery;
    type Output = Page;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("objects.list").description("list objects of a type")
    }
    fn call(&self, ctx: &Context, input: ListQuery) -> Result<Page, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "objects.list", Some(&input.type_name))?;
        fabric(&n)
            .list(ctx.tenant(), &snap, ctx.subject(), &input)
            .map_err(fabric_error)
    }
}

/// Input of `objects.count`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountObjects {
    /// The type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Conditions on indexed fields, all of which must hold.
    #[serde(default)]
    pub filter: Vec<Predicate>,
}

/// What `objects.count` answers.
#[derive(Debug, Serialize)]
pub struct Count {
    /// How many objects the caller sees.
    pub count: u64,
}

/// `objects.count`: how many objects of a type the caller sees (after the label selection).
pub struct ObjectsCount(pub(crate) WeakNodus);

impl Command for ObjectsCount {
    type Input = CountObjects;
    type Output = Count;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("objects.count").description("count objects of a type")
    }
    fn call(&self, ctx: &Context, input: CountObjects) -> Result<Count, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "objects.count", Some(&input.type_name))?;
        fabric(&n)
            .count(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.type_name,
                &input.filter,
            )
            .map(|count| Count { count })
            .map_err(fabric_error)
    }
}

/// `objects.history`: the events of one object the caller may see.
pub struct ObjectsHistory(pub(crate) WeakNodus);

impl Command for ObjectsHistory {
    type Input = ObjectRef;
    type Output = Vec<HistoryEntry>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("objects.history").description("the history of an object")
    }
    fn call(&self, ctx: &Context, input: ObjectRef) -> Result<Vec<HistoryEntry>, CommandError> {
        let n = instance(&self.0)?;
        let snap = prepare(&n, ctx, "objects.history", Some(&input.type_name))?;
        fabric(&n)
            .history(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.type_name,
                &input.id,
            )
            .map_err(fabric_error)
    }
}

/// The typed facade over the objects commands: `nodus.objects(&ctx).create(…)` is
/// `nodus.invoke::<ObjectsCreate>(&ctx, …)` — the same guard, rate limits and audit as `dispatch`,
/// without JSON around the call.
#[derive(Debug)]
pub struct Objects<'a> {
    nodus: &'a crate::Nodus,
    ctx: &'a Context,
}

impl<'a> Objects<'a> {
    pub(crate) fn new(nodus: &'a crate::Nodus, ctx: &'a Context) -> Self {
        Objects { nodus, ctx }
    }

    /// `types.define`.
    ///
    /// # Errors
    /// As the command: a denial, or the handler's error with its code.
    pub fn define_type(
        &self,
        name: &str,
        schema: Value,
        fields: Value,
    ) -> Result<TypeDoc, crate::DispatchError> {
        self.nodus.invoke::<TypesDefine>(
            self.ctx,
            DefineType {
                name: name.to_owned(),
                schema,
                fields,
            },
        )
    }

    /// `objects.create`.
    ///
    /// # Errors
    /// As the command.
    pub fn create(
        &self,
        type_name: &str,
        id: Option<&str>,
        label: Option<&str>,
        data: Value,
    ) -> Result<ObjectView, crate::DispatchError> {
        self.nodus.invoke::<ObjectsCreate>(
            self.ctx,
            CreateObject {
                type_name: type_name.to_owned(),
                id: id.map(str::to_owned),
                label: label.map(str::to_owned),
                data,
            },
        )
    }

    /// `objects.get`.
    ///
    /// # Errors
    /// As the command (`NotFound` for an object above the caller's clearance).
    pub fn get(&self, type_name: &str, id: &str) -> Result<ObjectView, crate::DispatchError> {
        self.nodus
            .invoke::<ObjectsGet>(self.ctx, object_ref(type_name, id))
    }

    /// `objects.update`.
    ///
    /// # Errors
    /// As the command (`Conflict` for a stale `expected_version`).
    pub fn update(
        &self,
        type_name: &str,
        id: &str,
        expected_version: u64,
        data: Value,
    ) -> Result<ObjectView, crate::DispatchError> {
        self.nodus.invoke::<ObjectsUpdate>(
            self.ctx,
            UpdateObject {
                type_name: type_name.to_owned(),
                id: id.to_owned(),
                expected_version,
                data,
            },
        )
    }

    /// `objects.delete`.
    ///
    /// # Errors
    /// As the command.
    pub fn delete(
        &self,
        type_name: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<(), crate::DispatchError> {
        self.nodus
            .invoke::<ObjectsDelete>(
                self.ctx,
                DeleteObject {
                    type_name: type_name.to_owned(),
                    id: id.to_owned(),
                    expected_version,
                },
            )
            .map(|_| ())
    }

    /// `objects.list`.
    ///
    /// # Errors
    /// As the command.
    pub fn list(&self, query: ListQuery) -> Result<Page, crate::DispatchError> {
        self.nodus.invoke::<ObjectsList>(self.ctx, query)
    }

    /// `objects.count`.
    ///
    /// # Errors
    /// As the command.
    pub fn count(
        &self,
        type_name: &str,
        filter: Vec<Predicate>,
    ) -> Result<u64, crate::DispatchError> {
        self.nodus
            .invoke::<ObjectsCount>(
                self.ctx,
                CountObjects {
                    type_name: type_name.to_owned(),
                    filter,
                },
            )
            .map(|c| c.count)
    }

    /// `objects.history`.
    ///
    /// # Errors
    /// As the command.
    pub fn history(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Vec<HistoryEntry>, crate::DispatchError> {
        self.nodus
            .invoke::<ObjectsHistory>(self.ctx, object_ref(type_name, id))
    }
}

fn object_ref(type_name: &str, id: &str) -> ObjectRef {
    ObjectRef {
        type_name: type_name.to_owned(),
        id: id.to_owned(),
    }
}
