//! The `docs.*` built-ins (CRDT documents) through `dispatch` as a host uses them: every command,
//! every refusal with its code, hidden ≡ absent, audit records, policy gates, and documents
//! travelling between two instances in sealed bundles (concurrent edits merge identically).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use nodus_core::registry::events::Scope;
use nodus_core::{Context, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::{Value, json};

const SYSTEM: &str = r#"
[audit]
durability = "normal"
checkpoint_every = 64
checkpoint_interval = "50ms"
"#;

const TENANT: &str = r#"
[rbac.roles]
admin = ["*"]
viewer = ["docs.get", "docs.list", "docs.history"]

[rate.limits]
default = { rate = 10000, per = "1s", burst = 10000 }
admin = { rate = 10000, per = "1s", burst = 10000 }

[crdt]
allowed_types = ["note", "layout"]
max_doc_bytes = 4096
"#;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn node_with(dir: &Path, seed: u8, tenant_policy: &str) -> Nodus {
    Nodus::builder()
        .data_dir(dir)
        .master_key(MasterKey::from_bytes([seed; 32]))
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant(), "tenants/acme.toml", tenant_policy),
        )
        .build()
        .unwrap()
}

fn node(dir: &Path, seed: u8) -> Nodus {
    node_with(dir, seed, TENANT)
}

fn ctx_at(n: &Nodus, role: &str, clearance: &str) -> Context {
    let s = n
        .subject(
            &tenant(),
            nodus_core::ActorId::new("alice").unwrap(),
            &[role],
            clearance,
        )
        .unwrap();
    n.context(&tenant(), s, "s1")
}

fn call(n: &Nodus, c: &Context, cmd: &str, input: Value) -> Result<Value, (String, String)> {
    n.dispatch(c, cmd, &input.to_string())
        .map_err(|e| (e.code().to_owned(), e.to_string()))
}

fn ok(n: &Nodus, cmd: &str, input: Value) -> Value {
    call(n, &ctx_at(n, "admin", "UNCLASSIFIED"), cmd, input)
        .unwrap_or_else(|e| panic!("{cmd}: {e:?}"))
}

fn err(n: &Nodus, c: &Context, cmd: &str, input: Value) -> (String, String) {
    match call(n, c, cmd, input) {
        Ok(_) => panic!("{cmd} succeeded"),
        Err(e) => e,
    }
}

/// Text that does not compress (automerge compresses its columns): `len` hex digits.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect()
}

#[test]
fn create_change_get_list_history() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let created = ok(
        &n,
        "docs.create",
        json!({"type": "note", "id": "n1", "content": {"title": "Plan", "tags": []}}),
    );
    assert_eq!(created["id"], "n1");
    assert_eq!(created["type"], "note");
    assert_eq!(created["label"], "UNCLASSIFIED");
    assert_eq!(created["content"], json!({"title": "Plan", "tags": []}));

    let changed = ok(
        &n,
        "docs.change",
        json!({"id": "n1", "ops": [
            {"op": "splice_text", "path": ["title"], "pos": 4, "text": " B"},
            {"op": "insert", "path": ["tags", 0], "value": "urgent"}
        ]}),
    );
    assert_eq!(changed["changes"].as_array().unwrap().len(), 1);
    // A batch: several changes, one event.
    let batch = ok(
        &n,
        "docs.change",
        json!({"id": "n1", "batch": [
            [{"op": "splice_text", "path": ["title"], "pos": 6, "text": "!"}],
            [{"op": "set", "path": ["done"], "value": false}],
            []
        ]}),
    );
    assert_eq!(batch["changes"].as_array().unwrap().len(), 2, "{batch}");
    let got = ok(&n, "docs.get", json!({"id": "n1"}));
    assert_eq!(
        got["content"],
        json!({"title": "Plan B!", "tags": ["urgent"], "done": false})
    );
    assert_eq!(got["heads"], batch["heads"]);

    // Nothing changed: no change, no event.
    let none = ok(&n, "docs.change", json!({"id": "n1", "ops": []}));
    assert_eq!(none["changes"], json!([]));

    let history = ok(&n, "docs.history", json!({"id": "n1"}));
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "changed", "changed"]);
    assert_eq!(history[2]["changes"].as_array().unwrap().len(), 2);

    ok(&n, "docs.create", json!({"type": "layout", "id": "l1"}));
    let all = ok(&n, "docs.list", json!({}));
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["l1", "n1"]);
    let notes = ok(&n, "docs.list", json!({"type": "note"}));
    assert_eq!(notes.as_array().unwrap().len(), 1);
    // `docs.list` takes no input too.
    let c = ctx_at(&n, "admin", "UNCLASSIFIED");
    assert_eq!(n.dispatch(&c, "docs.list", "null").unwrap(), all);

    // The typed facade is the same pipeline.
    let typed = n.docs(&c).get("n1").unwrap();
    assert_eq!(typed.content, got["content"]);
    assert_eq!(n.docs(&c).list(Some("layout")).unwrap().len(), 1);

    // A random id when none is given.
    let anon = ok(&n, "docs.create", json!({"type": "note"}));
    assert_eq!(anon["id"].as_str().unwrap().len(), 32);
}

#[test]
fn every_refusal_has_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let admin = ctx_at(&n, "admin", "UNCLASSIFIED");
    ok(
        &n,
        "docs.create",
        json!({"type": "note", "id": "n1", "content": {"title": "x"}}),
    );
    let before = ok(&n, "docs.get", json!({"id": "n1"}));

    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "docs.create",
            json!({"type": "note", "id": "n1"}),
            "AlreadyExists",
            "document `n1` already exists at label `UNCLASSIFIED`",
        ),
        (
            "docs.create",
            json!({"type": "sheet", "id": "s1"}),
            "TypeNotAllowed",
            "document type `sheet` is not allowed (`crdt.allowed_types`)",
        ),
        (
            "docs.create",
            json!({"type": "note", "id": "n2", "content": [1]}),
            "NotAnObject",
            "`n2`",
        ),
        (
            "docs.create",
            json!({"type": "note", "id": ""}),
            "InvalidId",
            "invalid document id",
        ),
        (
            "docs.create",
            json!({"type": "note", "id": "n3", "label": "PURPLE"}),
            "BadLabel",
            "invalid label",
        ),
        (
            "docs.create",
            json!({"type": "note", "id": "big", "content": {"text": noise(20_000)}}),
            "TooLarge",
            "`big`",
        ),
        (
            "docs.change",
            json!({"id": "n1", "ops": [
                {"op": "set", "path": ["ok"], "value": 1},
                {"op": "splice_text", "path": ["nope"], "pos": 0, "text": "a"}
            ]}),
            "BadOp",
            "op 1 on document `n1`",
        ),
        (
            "docs.change",
            json!({"id": "n1", "batch": [
                [{"op": "set", "path": ["ok"], "value": 1}],
                [{"op": "splice_text", "path": ["nope"], "pos": 0, "text": "a"}]
            ]}),
            "BadOp",
            "op 1 on document `n1`",
        ),
        (
            "docs.change",
            json!({"id": "n1", "ops": [{"op": "splice_text", "path": ["title"], "pos": 1, "text": noise(20_000)}]}),
            "TooLarge",
            "`n1`",
        ),
        (
            "docs.change",
            json!({"id": "n1", "ops": [], "batch": []}),
            "InvalidInput",
            "exactly one of `ops` and `batch`",
        ),
        (
            "docs.change",
            json!({"id": "n1"}),
            "InvalidInput",
            "exactly one",
        ),
        (
            "docs.get",
            json!({"id": "missing"}),
            "NotFound",
            "document `missing` not found",
        ),
        (
            "docs.history",
            json!({"id": "missing"}),
            "NotFound",
            "`missing`",
        ),
        (
            "docs.get",
            json!({"id": "n1", "extra": 1}),
            "InvalidInput",
            "extra",
        ),
    ];
    for (cmd, input, code, text) in cases {
        let (c, msg) = err(&n, &admin, cmd, input.clone());
        assert_eq!(c, code, "{cmd} {input}: {msg}");
        assert!(msg.contains(text), "{cmd} {input}: {msg}");
    }
    // Nothing was written by any refusal.
    assert_eq!(ok(&n, "docs.get", json!({"id": "n1"})), before);
    assert_eq!(
        ok(&n, "docs.history", json!({"id": "n1"}))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ok(&n, "docs.list", json!({})).as_array().unwrap().len(), 1);

    // Permissions come from policy like any command's.
    let viewer = ctx_at(&n, "viewer", "UNCLASSIFIED");
    assert_eq!(
        err(&n, &viewer, "docs.change", json!({"id": "n1", "ops": []})).0,
        "MissingPermission"
    );
    assert!(call(&n, &viewer, "docs.get", json!({"id": "n1"})).is_ok());

    // Write rule: a SECRET subject may not write down into an UNCLASSIFIED document.
    let high = ctx_at(&n, "admin", "SECRET");
    let (code, msg) = err(
        &n,
        &high,
        "docs.change",
        json!({"id": "n1", "ops": [{"op": "set", "path": ["x"], "value": 1}]}),
    );
    assert_eq!(code, "WriteDenied", "{msg}");
}

#[test]
fn a_document_above_the_caller_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let high = ctx_at(&n, "admin", "SECRET");
    let low = ctx_at(&n, "admin", "UNCLASSIFIED");
    call(
        &n,
        &high,
        "docs.create",
        json!({"type": "note", "id": "plan", "content": {"title": "secret plan"}}),
    )
    .unwrap();
    // The low subject sees exactly what it would see if the document did not exist.
    let hidden = err(&n, &low, "docs.get", json!({"id": "plan"}));
    let missing = err(&n, &low, "docs.get", json!({"id": "nothing"}));
    assert_eq!(hidden.0, missing.0);
    assert_eq!(
        hidden.1.replace("plan", "X"),
        missing.1.replace("nothing", "X")
    );
    assert_eq!(
        err(&n, &low, "docs.history", json!({"id": "plan"})).0,
        "NotFound"
    );
    assert_eq!(
        err(&n, &low, "docs.change", json!({"id": "plan", "ops": []})).0,
        "NotFound"
    );
    assert_eq!(call(&n, &low, "docs.list", json!({})).unwrap(), json!([]));
    // Polyinstantiation: the low subject may create its own version of the same id.
    call(
        &n,
        &low,
        "docs.create",
        json!({"type": "note", "id": "plan", "content": {"title": "cover"}}),
    )
    .unwrap();
    let low_view = call(&n, &low, "docs.get", json!({"id": "plan"})).unwrap();
    assert_eq!(low_view["content"]["title"], "cover");
    let high_view = call(&n, &high, "docs.get", json!({"id": "plan"})).unwrap();
    assert_eq!(high_view["content"]["title"], "secret plan");
    assert_eq!(high_view["label"], "SECRET");
}

#[test]
fn every_call_is_audited_and_published_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let sub = n
        .events()
        .subscribe("docs.*", Scope::Tenant(tenant()), 16)
        .unwrap();
    ok(
        &n,
        "docs.create",
        json!({"type": "note", "id": "n1", "content": {"title": "hush"}}),
    );
    ok(
        &n,
        "docs.change",
        json!({"id": "n1", "ops": [{"op": "splice_text", "path": ["title"], "pos": 0, "text": "sh "}]}),
    );
    let admin = ctx_at(&n, "admin", "UNCLASSIFIED");
    let _ = err(&n, &admin, "docs.get", json!({"id": "nope"}));
    n.flush_audit().unwrap();
    let size = n.audit_log().size().unwrap();
    let records = n.audit_log().tail(size as usize).unwrap();
    let mut seen: Vec<(String, Option<String>)> = records
        .iter()
        .filter(|r| {
            r.record
                .command
                .as_deref()
                .is_some_and(|c| c.starts_with("docs."))
        })
        .map(|r| {
            (
                r.record.command.as_deref().unwrap().to_owned(),
                r.record.reason.as_deref().map(str::to_owned),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("docs.change".to_owned(), None),
            ("docs.create".to_owned(), None),
            ("docs.get".to_owned(), Some("NotFound".to_owned())),
        ]
    );
    let published: Vec<String> = std::iter::from_fn(|| sub.try_recv().ok())
        .map(|e| format!("{} {}", e.topic, e.payload))
        .collect();
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(
        published.iter().all(|p| !p.contains("hush")),
        "{published:?}"
    );
}

fn pair(policy_b: &str) -> (tempfile::TempDir, Nodus, Nodus) {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), 1);
    let b = node_with(&dir.path().join("b"), 2, policy_b);
    a.sync()
        .trust_peer(&b.sync().keys().unwrap(), &[tenant()])
        .unwrap();
    b.sync()
        .trust_peer(&a.sync().keys().unwrap(), &[tenant()])
        .unwrap();
    (dir, a, b)
}

/// Exports from `from` to `to`, carries the file and imports it; the activation report.
fn ship(from: &Nodus, to: &Nodus) -> Value {
    let key = to.sync().keys().unwrap().key_id;
    let out = ok(from, "sync.export", json!({"to": [key]}));
    let file = out["file"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(from.sync().dir().unwrap().join("outbox").join(&file)).unwrap();
    std::fs::write(to.sync().dir().unwrap().join("inbox").join(&file), bytes).unwrap();
    let staged = ok(to, "sync.stage", json!({"file": file}));
    ok(
        to,
        "sync.activate",
        json!({"bundle_id": staged["bundle_id"]}),
    )
}

#[test]
fn documents_travel_in_bundles_and_concurrent_edits_merge() {
    let (_dir, a, b) = pair(TENANT);
    ok(
        &a,
        "docs.create",
        json!({"type": "note", "id": "n1", "content": {"title": "Plan", "items": []}}),
    );
    ok(
        &a,
        "docs.change",
        json!({"id": "n1", "ops": [{"op": "insert", "path": ["items", 0], "value": "from a"}]}),
    );
    let report = ship(&a, &b);
    assert_eq!(report["applied"], 2, "{report}");
    assert_eq!(
        ok(&b, "docs.get", json!({"id": "n1"})),
        ok(&a, "docs.get", json!({"id": "n1"}))
    );

    // Concurrent edits on both sides, then an exchange both ways.
    ok(
        &a,
        "docs.change",
        json!({"id": "n1", "ops": [{"op": "splice_text", "path": ["title"], "pos": 4, "text": " A"}]}),
    );
    ok(
        &b,
        "docs.change",
        json!({"id": "n1", "batch": [
            [{"op": "splice_text", "path": ["title"], "pos": 0, "text": "B: "}],
            [{"op": "insert", "path": ["items", 1], "value": "from b"}]
        ]}),
    );
    ship(&a, &b);
    ship(&b, &a);
    let on_a = ok(&a, "docs.get", json!({"id": "n1"}));
    let on_b = ok(&b, "docs.get", json!({"id": "n1"}));
    assert_eq!(on_a, on_b);
    assert_eq!(on_a["content"]["title"], "B: Plan A");
    assert_eq!(on_a["content"]["items"], json!(["from a", "from b"]));
    // Both histories list the same events.
    assert_eq!(
        ok(&a, "docs.history", json!({"id": "n1"})),
        ok(&b, "docs.history", json!({"id": "n1"}))
    );
    // Re-shipping changes nothing.
    ship(&a, &b);
    assert_eq!(ok(&b, "docs.get", json!({"id": "n1"})), on_b);
}

#[test]
fn a_document_type_the_receiver_does_not_allow_is_quarantined() {
    let strict = TENANT.replace(
        r#"allowed_types = ["note", "layout"]"#,
        r#"allowed_types = ["layout"]"#,
    );
    let (_dir, a, b) = pair(&strict);
    // The layout first: a quarantined event holds back the rest of its chain (never applied past
    // a gap), so the note comes last.
    ok(&a, "docs.create", json!({"type": "layout", "id": "l1"}));
    ok(
        &a,
        "docs.create",
        json!({"type": "note", "id": "n1", "content": {"title": "Plan"}}),
    );
    let report = ship(&a, &b);
    assert_eq!(report["applied"], 1, "{report}");
    let q = report["quarantined"].to_string();
    assert!(q.contains("document type not allowed `note`"), "{report}");
    let admin = ctx_at(&b, "admin", "UNCLASSIFIED");
    assert_eq!(
        err(&b, &admin, "docs.get", json!({"id": "n1"})).0,
        "NotFound"
    );
    assert!(call(&b, &admin, "docs.get", json!({"id": "l1"})).is_ok());
}
