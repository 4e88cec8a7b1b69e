//! The CRDT documents' built-in commands: `docs.create`, `docs.change`, `docs.get`, `docs.list`
//! and `docs.history`, through the front door like any other command (guarded, rate limited,
//! audited), over the instance's [`AutomergeStore`](nodus_sync::crdt::AutomergeStore).
//!
//! Documents live in the same event log as objects: every change is a `doc.created` /
//! `doc.changed` event, so documents travel in `.noduspkg` bundles and are rebuilt with the
//! fabric's projections. **Labels** apply as for objects: a version above the caller's clearance is
//! absent (`NotFound`), never forbidden. **Policy**: `crdt.allowed_types` and `crdt.max_doc_bytes`
//! (see `docs/policy.md`); the error codes are [`CrdtError::code`]. See `docs/sync.md`,
//! "CRDT documents".

use nodus_registry::commands::{Command, CommandError, CommandSpec, Context};
use nodus_sync::crdt::{
    ChangeOutcome, CrdtError, CrdtStore, DocHistoryEntry, DocOp, DocSummary, DocView,
};
use serde::Deserialize;
use serde_json::Value;

use crate::builtins::{instance, tenant_snapshot as snapshot};
use crate::nodus::WeakNodus;

fn crdt_error(e: CrdtError) -> CommandError {
    CommandError::new(e.code(), e.to_string())
}

/// After a write: publish the change to the tenant's subscribers — id, type and label only, never
/// content.
fn changed(n: &crate::Nodus, ctx: &Context, topic: &str, id: &str, doc_type: &str, label: &str) {
    let payload = serde_json::json!({"id": id, "type": doc_type, "label": label});
    let _ = n.inner.events.publish(topic, Some(ctx.tenant()), payload);
}

/// Input of `docs.create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDoc {
    /// The document type (`crdt.allowed_types` must allow it).
    #[serde(rename = "type")]
    pub doc_type: String,
    /// The id (default: 32 random hex digits).
    #[serde(default)]
    pub id: Option<String>,
    /// The label (default: the caller's clearance).
    #[serde(default)]
    pub label: Option<String>,
    /// The initial content: a JSON object (default `{}`); strings become automerge text.
    #[serde(default)]
    pub content: Option<Value>,
}

/// `docs.create`: creates a document at a label the caller may read and write.
pub struct DocsCreate(pub(crate) WeakNodus);

impl Command for DocsCreate {
    type Input = CreateDoc;
    type Output = DocView;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("docs.create").description("create a CRDT document")
    }
    fn call(&self, ctx: &Context, input: CreateDoc) -> Result<DocView, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        let id = match input.id {
            Some(id) => id,
            None => nodus_fabric::Incarnation::random()
                .map_err(|e| CommandError::new("StorageError", e.to_string()))?
                .to_string(),
        };
        let label = match input.label {
            Some(l) => l,
            None => snap.label_scheme().format(ctx.subject().clearance()),
        };
        let content = input
            .content
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let view = n
            .inner
            .docs
            .create(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                &input.doc_type,
                &id,
                &label,
                &content,
            )
            .map_err(crdt_error)?;
        changed(
            &n,
            ctx,
            "docs.created",
            &view.id,
            &view.doc_type,
            &view.label,
        );
        Ok(view)
    }
}

/// Input of `docs.change`: exactly one of `ops` (one change) and `batch` (several changes, one
/// event).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeDoc {
    /// The document.
    pub id: String,
    /// Ops applied as one automerge change.
    #[serde(default)]
    pub ops: Option<Vec<DocOp>>,
    /// Groups of ops, each one automerge change, all recorded in one `doc.changed` event (a burst
    /// of edits for one durable append). An error's op index counts the ops of all groups.
    #[serde(default)]
    pub batch: Option<Vec<Vec<DocOp>>>,
}

/// `docs.change`: applies ops to the version of a document the caller reads (and may write).
pub struct DocsChange(pub(crate) WeakNodus);

impl Command for DocsChange {
    type Input = ChangeDoc;
    type Output = ChangeOutcome;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("docs.change").description("change a CRDT document")
    }
    fn call(&self, ctx: &Context, input: ChangeDoc) -> Result<ChangeOutcome, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        let docs = &n.inner.docs;
        let out = match (input.ops, input.batch) {
            (Some(ops), None) => docs.change(ctx.tenant(), &snap, ctx.subject(), &input.id, &ops),
            (None, Some(batch)) => {
                docs.change_batch(ctx.tenant(), &snap, ctx.subject(), &input.id, &batch)
            }
            _ => {
                return Err(CommandError::new(
                    "InvalidInput",
                    "`docs.change` takes exactly one of `ops` and `batch`",
                ));
            }
        }
        .map_err(crdt_error)?;
        if !out.changes.is_empty() {
            // The type is not in the outcome: subscribers get the id and label.
            let payload = serde_json::json!({"id": input.id, "label": out.label});
            let _ = n
                .inner
                .events
                .publish("docs.changed", Some(ctx.tenant()), payload);
        }
        Ok(out)
    }
}

/// Input naming a document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocRef {
    /// The document.
    pub id: String,
}

/// `docs.get`: the content and heads of the version of a document the caller reads.
pub struct DocsGet(pub(crate) WeakNodus);

impl Command for DocsGet {
    type Input = DocRef;
    type Output = DocView;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("docs.get").description("read a CRDT document")
    }
    fn call(&self, ctx: &Context, input: DocRef) -> Result<DocView, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        n.inner
            .docs
            .get(ctx.tenant(), &snap, ctx.subject(), &input.id)
            .map_err(crdt_error)
    }
}

/// Input of `docs.list`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListDocs {
    /// Only documents of this type.
    #[serde(default, rename = "type")]
    pub doc_type: Option<String>,
}

/// `docs.list`: the documents the caller can read, one per id, by id.
pub struct DocsList(pub(crate) WeakNodus);

impl Command for DocsList {
    type Input = Option<ListDocs>;
    type Output = Vec<DocSummary>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("docs.list").description("list the CRDT documents the caller can read")
    }
    fn call(
        &self,
        ctx: &Context,
        input: Option<ListDocs>,
    ) -> Result<Vec<DocSummary>, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        let input = input.unwrap_or_default();
        n.inner
            .docs
            .list(
                ctx.tenant(),
                &snap,
                ctx.subject(),
                input.doc_type.as_deref(),
            )
            .map_err(crdt_error)
    }
}

/// `docs.history`: the events of the version of a document the caller reads.
pub struct DocsHistory(pub(crate) WeakNodus);

impl Command for DocsHistory {
    type Input = DocRef;
    type Output = Vec<DocHistoryEntry>;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("docs.history").description("the change events of a CRDT document")
    }
    fn call(&self, ctx: &Context, input: DocRef) -> Result<Vec<DocHistoryEntry>, CommandError> {
        let n = instance(&self.0)?;
        let snap = snapshot(&n, ctx)?;
        n.inner
            .docs
            .history(ctx.tenant(), &snap, ctx.subject(), &input.id)
            .map_err(crdt_error)
    }
}

/// The typed facade over the `docs.*` commands: `nodus.docs(&ctx).change(…)` is
/// `nodus.invoke::<DocsChange>(&ctx, …)` — the same guard, rate limits and audit as `dispatch`,
/// without JSON around the call.
#[derive(Debug)]
pub struct Docs<'a> {
    nodus: &'a crate::Nodus,
    ctx: &'a Context,
}

impl<'a> Docs<'a> {
    pub(crate) fn new(nodus: &'a crate::Nodus, ctx: &'a Context) -> Self {
        Docs { nodus, ctx }
    }

    /// `docs.create`.
    ///
    /// # Errors
    /// As the command: a denial, or the handler's error with its code.
    pub fn create(
        &self,
        doc_type: &str,
        id: Option<&str>,
        label: Option<&str>,
        content: Value,
    ) -> Result<DocView, crate::DispatchError> {
        self.nodus.invoke::<DocsCreate>(
            self.ctx,
            CreateDoc {
                doc_type: doc_type.to_owned(),
                id: id.map(str::to_owned),
                label: label.map(str::to_owned),
                content: Some(content),
            },
        )
    }

    /// `docs.change` with `ops`: one change.
    ///
    /// # Errors
    /// As the command.
    pub fn change(&self, id: &str, ops: Vec<DocOp>) -> Result<ChangeOutcome, crate::DispatchError> {
        self.nodus.invoke::<DocsChange>(
            self.ctx,
            ChangeDoc {
                id: id.to_owned(),
                ops: Some(ops),
                batch: None,
            },
        )
    }

    /// `docs.change` with `batch`: one change per group, one event.
    ///
    /// # Errors
    /// As the command.
    pub fn change_batch(
        &self,
        id: &str,
        batch: Vec<Vec<DocOp>>,
    ) -> Result<ChangeOutcome, crate::DispatchError> {
        self.nodus.invoke::<DocsChange>(
            self.ctx,
            ChangeDoc {
                id: id.to_owned(),
                ops: None,
                batch: Some(batch),
            },
        )
    }

    /// `docs.get`.
    ///
    /// # Errors
    /// As the command (`NotFound` for a document above the caller's clearance).
    pub fn get(&self, id: &str) -> Result<DocView, crate::DispatchError> {
        self.nodus
            .invoke::<DocsGet>(self.ctx, DocRef { id: id.to_owned() })
    }

    /// `docs.list`.
    ///
    /// # Errors
    /// As the command.
    pub fn list(&self, doc_type: Option<&str>) -> Result<Vec<DocSummary>, crate::DispatchError> {
        self.nodus.invoke::<DocsList>(
            self.ctx,
            Some(ListDocs {
                doc_type: doc_type.map(str::to_owned),
            }),
        )
    }

    /// `docs.history`.
    ///
    /// # Errors
    /// As the command.
    pub fn history(&self, id: &str) -> Result<Vec<DocHistoryEntry>, crate::DispatchError> {
        self.nodus
            .invoke::<DocsHistory>(self.ctx, DocRef { id: id.to_owned() })
    }
}
