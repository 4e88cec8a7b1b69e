//! The fabric's built-in commands through `dispatch`, as a host calls them: every command and
//! every error — invalid data (with the path, never the value), stale version, unknown type,
//! forbidden type, write down refused, read up as not found, tombstoned object absent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_core::security::audit::Outcome;
use nodus_core::{Context, Nodus, PolicySources};
use serde_json::{Value, json};

/// `clerk` may read and create cases only; `admin` everything (but `system.`).
fn build() -> Nodus {
    let acme = r#"
[rbac.roles]
admin = ["*"]
clerk = ["objects.get", "objects.get.case", "objects.create", "objects.create.case", "objects.list", "objects.list.case"]

[rate.limits]
default = { rate = 10000, per = "1s", burst = 10000 }
"#;
    Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant("acme"), "tenants/acme.toml", acme),
        )
        .build()
        .unwrap()
}

fn call(n: &Nodus, c: &Context, cmd: &str, payload: Value) -> Result<Value, (String, String)> {
    n.dispatch(c, cmd, &payload.to_string())
        .map_err(|e| (e.code().to_owned(), e.to_string()))
}

fn define_case(n: &Nodus, admin: &Context) {
    call(
        n,
        admin,
        "types.define",
        json!({
            "name": "case",
            "schema": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "status": {"enum": ["open", "closed"]},
                    "notes": {"type": "string"}
                },
                "required": ["title"]
            },
            "fields": {"status": {"indexed": true}, "notes": {"classification": "SECRET"}}
        }),
    )
    .unwrap();
}

#[test]
fn every_objects_command_through_the_front_door() {
    let n = build();
    let admin = ctx(&n, "acme", "root", &["admin"], "SECRET");
    define_case(&n, &admin);
    assert_eq!(
        call(&n, &admin, "types.get", json!({"name": "case"})).unwrap()["version"],
        1
    );
    assert_eq!(
        call(&n, &admin, "types.list", json!({})).unwrap()[0]["name"],
        "case"
    );

    let created = call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "case", "id": "c1", "label": "SECRET", "data": {"title": "T", "status": "open", "notes": "n"}}),
    )
    .unwrap();
    assert_eq!(
        (created["id"].as_str(), created["version"].as_u64()),
        (Some("c1"), Some(1))
    );
    assert_eq!(created["label"], "SECRET");
    let got = call(
        &n,
        &admin,
        "objects.get",
        json!({"type": "case", "id": "c1"}),
    )
    .unwrap();
    assert_eq!(got["data"]["title"], "T");
    let updated = call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "case", "id": "c1", "expected_version": 1, "data": {"title": "T2", "status": "closed", "notes": "n"}}),
    )
    .unwrap();
    assert_eq!(updated["version"], 2);
    // A stale version is a conflict naming both versions.
    let (code, text) = call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "case", "id": "c1", "expected_version": 1, "data": {"title": "T3"}}),
    )
    .unwrap_err();
    assert_eq!(code, "Conflict");
    assert!(text.contains('1') && text.contains('2'), "{text}");
    // Invalid data: the path and the rule, never the value.
    let (code, text) = call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "case", "data": {"title": "", "status": "VALUE-lost"}}),
    )
    .unwrap_err();
    assert_eq!(code, "Invalid");
    assert!(text.contains("/status") && text.contains("enum"), "{text}");
    assert!(!text.contains("VALUE-lost"), "{text}");
    // Unknown type.
    let (code, _) = call(
        &n,
        &admin,
        "objects.get",
        json!({"type": "nope", "id": "x"}),
    )
    .unwrap_err();
    assert_eq!(code, "UnknownType");
    // List with a filter on an indexed field, count, history.
    call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "case", "id": "c2", "label": "SECRET", "data": {"title": "Other", "status": "open"}}),
    )
    .unwrap();
    let page = call(
        &n,
        &admin,
        "objects.list",
        json!({"type_name": "case", "filter": [{"field": "status", "op": "eq", "value": "open"}], "sort": null, "limit": 10, "cursor": null}),
    )
    .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c2"]);
    let (code, text) = call(
        &n,
        &admin,
        "objects.list",
        json!({"type_name": "case", "filter": [{"field": "title", "op": "eq", "value": "T"}], "sort": null, "limit": 10, "cursor": null}),
    )
    .unwrap_err();
    assert_eq!(code, "FilterNotIndexed");
    assert!(text.contains("title"), "{text}");
    assert_eq!(
        call(&n, &admin, "objects.count", json!({"type": "case"})).unwrap()["count"],
        2
    );
    let history = call(
        &n,
        &admin,
        "objects.history",
        json!({"type": "case", "id": "c1"}),
    )
    .unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);
    // Delete: a tombstone; the object is absent from get, list and count.
    call(
        &n,
        &admin,
        "objects.delete",
        json!({"type": "case", "id": "c2", "expected_version": 1}),
    )
    .unwrap();
    let (code, _) = call(
        &n,
        &admin,
        "objects.get",
        json!({"type": "case", "id": "c2"}),
    )
    .unwrap_err();
    assert_eq!(code, "NotFound");
    assert_eq!(
        call(&n, &admin, "objects.count", json!({"type": "case"})).unwrap()["count"],
        1
    );
    let page = call(
        &n,
        &admin,
        "objects.list",
        json!({"type_name": "case", "filter": [], "sort": null, "limit": 10, "cursor": null}),
    )
    .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // Every call was audited, and the events chain verifies.
    n.flush_audit().unwrap();
    let tail = n.audit_log().tail(3).unwrap();
    assert!(tail.iter().all(|r| r.record.kind == "dispatch"));
    assert!(
        n.verify_events(&tenant("acme"))
            .unwrap()
            .problems
            .is_empty()
    );
}

#[test]
fn labels_and_type_permissions_decide() {
    let n = build();
    let admin = ctx(&n, "acme", "root", &["admin"], "SECRET");
    define_case(&n, &admin);
    call(
        &n,
        &admin,
        "types.define",
        json!({"name": "memo", "schema": {"type": "object", "properties": {"t": {"type": "string"}}}}),
    )
    .unwrap();
    call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "case", "id": "high", "label": "SECRET", "data": {"title": "above you"}}),
    )
    .unwrap();
    let low = ctx(&n, "acme", "lou", &["clerk"], "UNCLASSIFIED");
    // Read up: not found — the same answer as for an id that does not exist.
    let above = call(
        &n,
        &low,
        "objects.get",
        json!({"type": "case", "id": "high"}),
    )
    .unwrap_err();
    let absent = call(
        &n,
        &low,
        "objects.get",
        json!({"type": "case", "id": "none"}),
    )
    .unwrap_err();
    assert_eq!(above.0, "NotFound");
    assert_eq!(
        above.1.replace("high", "ID"),
        absent.1.replace("none", "ID")
    );
    // The low subject creating the same id makes its own version, learning nothing.
    let mine = call(
        &n,
        &low,
        "objects.create",
        json!({"type": "case", "id": "high", "data": {"title": "mine"}}),
    )
    .unwrap();
    assert_eq!(mine["label"], "UNCLASSIFIED");
    assert_eq!(
        call(
            &n,
            &admin,
            "objects.get",
            json!({"type": "case", "id": "high"})
        )
        .unwrap()["data"]["title"],
        "above you"
    );
    // Write down: refused (no write down by default).
    let (code, _) = call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "case", "id": "down", "label": "UNCLASSIFIED", "data": {"title": "x"}}),
    )
    .unwrap_err();
    assert_eq!(code, "WriteDenied");
    // Type permissions: the clerk may create cases, not memos, and may not update cases at all.
    let (code, text) = call(
        &n,
        &low,
        "objects.create",
        json!({"type": "memo", "data": {"t": "x"}}),
    )
    .unwrap_err();
    assert_eq!(code, "MissingPermission");
    assert!(text.contains("objects.create.memo"), "{text}");
    let e = n
        .dispatch(
            &low,
            "objects.update",
            r#"{"type":"case","id":"high","expected_version":1,"data":{"title":"y"}}"#,
        )
        .unwrap_err();
    assert_eq!(
        e.denial().unwrap().reason,
        nodus_core::DenyReason::MissingPermission
    );
    // Each refusal is in the audit log with its code.
    n.flush_audit().unwrap();
    let tail = n.audit_log().tail(2).unwrap();
    assert_eq!(
        (tail[0].record.outcome, tail[0].record.reason.as_deref()),
        (Outcome::Error, Some("MissingPermission"))
    );
    assert_eq!(tail[1].record.outcome, Outcome::Denied);
}

#[test]
fn the_typed_facade_goes_through_the_same_door_and_changes_are_published() {
    use nodus_core::registry::events::Scope;
    let n = build();
    let admin = ctx(&n, "acme", "root", &["admin"], "SECRET");
    let events = n
        .events()
        .subscribe("*", Scope::Tenant(tenant("acme")), 64)
        .unwrap();
    let objects = n.objects(&admin);
    objects
        .define_type(
            "case",
            json!({"type": "object", "properties": {"title": {"type": "string"}}}),
            Value::Null,
        )
        .unwrap();
    let v = objects
        .create("case", Some("c1"), None, json!({"title": "secret title"}))
        .unwrap();
    assert_eq!((v.label.as_str(), v.version), ("SECRET", 1));
    let v = objects
        .update("case", "c1", 1, json!({"title": "t2"}))
        .unwrap();
    assert_eq!(objects.get("case", "c1").unwrap(), v);
    assert_eq!(objects.count("case", vec![]).unwrap(), 1);
    assert_eq!(objects.history("case", "c1").unwrap().len(), 2);
    objects.delete("case", "c1", 2).unwrap();
    let e = objects.get("case", "c1").unwrap_err();
    assert_eq!(e.code(), "NotFound");
    // Audited like dispatch: one record per call.
    n.flush_audit().unwrap();
    let tail = n.audit_log().tail(7).unwrap();
    assert!(tail.iter().all(|r| r.record.kind == "dispatch"), "{tail:?}");
    // Published to the tenant: ids, labels and versions, never field values.
    let got: Vec<(String, String)> = events
        .drain()
        .into_iter()
        .map(|e| (e.topic.to_string(), e.payload.to_string()))
        .collect();
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "types.defined",
            "objects.created",
            "objects.updated",
            "objects.deleted"
        ]
    );
    assert!(
        got.iter()
            .all(|(_, p)| !p.contains("secret title") && !p.contains("t2")),
        "{got:?}"
    );
}

/// `objects.get` is served from the object cache only under the same deciding inputs: another
/// clearance never gets a cached answer, and a write is seen at once.
#[test]
fn cached_reads_never_cross_a_decision() {
    let n = build();
    let admin = ctx(&n, "acme", "root", &["admin"], "SECRET");
    define_case(&n, &admin);
    let objects = n.objects(&admin);
    objects
        .create("case", Some("c1"), Some("SECRET"), json!({"title": "v1"}))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(objects.get("case", "c1").unwrap().data["title"], "v1");
    }
    let r = &n.state_report()[0];
    assert!(r.hits >= 2 && r.inserts >= 1, "{r:?}");
    // Another clearance: decided afresh, not served the SECRET version.
    let low = ctx(&n, "acme", "lou", &["clerk"], "UNCLASSIFIED");
    assert_eq!(
        n.objects(&low).get("case", "c1").unwrap_err().code(),
        "NotFound"
    );
    // A write is seen at once.
    objects
        .update("case", "c1", 1, json!({"title": "v2"}))
        .unwrap();
    assert_eq!(objects.get("case", "c1").unwrap().data["title"], "v2");
    // A policy reload that changes the tenant changes the epoch in every key.
    let before = n.state_report()[0].hits;
    n.reload_policy(
        PolicySources::new()
            .with_system("system.toml", SYSTEM)
            .with_tenant(
                tenant("acme"),
                "tenants/acme.toml",
                "[rbac.roles]\nadmin = [\"*\"]\n[rate.limits]\ndefault = { rate = 10000, per = \"1s\", burst = 10000 }\n[limits]\nmax_payload_bytes = 4096\n",
            ),
    )
    .unwrap();
    assert_eq!(objects.get("case", "c1").unwrap().data["title"], "v2");
    assert_eq!(
        n.state_report()[0].hits,
        before,
        "the first read after the reload is a miss"
    );
}
