//! Errors, events and audit details are confined: nothing reachable from tenant A's contexts
//! names tenant B's files, keys, values or records.
//!
//! Tenant B (`globex`) is filled with distinctive markers — in its policy file (role names,
//! permissions, a host key's value), its users' files, its audit records (actor, session, command
//! payload) — and then its file is broken with a marker in the bad value. From tenant A (`acme`),
//! every built-in command is run by a role that may run it and by one that may not, next to every
//! kind of denial and error; every output (result, error text and JSON, every event A's
//! subscription receives, every audit record about A's calls) is searched for the markers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::*;
use nodus_core::registry::events::Scope;
use nodus_core::{Nodus, Subject};

/// Every string that would betray tenant B. Its id itself is one: A must not even learn it.
const MARKERS: &[&str] = &["globex", "zebra", "ZEBRA"];

/// Each built-in command with a payload that is valid for it. A new built-in must be added here:
/// the test fails while one is missing.
const BUILTINS: &[(&str, &str)] = &[
    ("policy.reload", "{}"),
    ("policy.explain", r#"{"key":"app.motto"}"#),
    ("audit.verify", "{}"),
    ("system.policy.reload", "{}"),
    ("system.audit.verify", "{}"),
    ("system.audit.checkpoint", "{}"),
    (
        "types.define",
        r#"{"name":"memo","schema":{"type":"object","properties":{"t":{"type":"string"}}}}"#,
    ),
    ("types.get", r#"{"name":"case"}"#),
    ("types.list", "{}"),
    (
        "objects.create",
        r#"{"type":"case","data":{"title":"acme's own"}}"#,
    ),
    ("objects.get", r#"{"type":"case","id":"shared-id"}"#),
    (
        "objects.update",
        r#"{"type":"case","id":"shared-id","expected_version":1,"data":{"title":"x"}}"#,
    ),
    (
        "objects.delete",
        r#"{"type":"case","id":"shared-id","expected_version":1}"#,
    ),
    (
        "objects.list",
        r#"{"type_name":"case","filter":[],"sort":null,"limit":10,"cursor":null}"#,
    ),
    ("objects.count", r#"{"type":"case"}"#),
    ("objects.history", r#"{"type":"case","id":"shared-id"}"#),
    (
        "docs.create",
        r#"{"type":"note","content":{"t":"acme's own"}}"#,
    ),
    (
        "docs.change",
        r#"{"id":"shared-doc","ops":[{"op":"set","path":["t"],"value":"x"}]}"#,
    ),
    ("docs.get", r#"{"id":"shared-doc"}"#),
    ("docs.list", "{}"),
    ("docs.history", r#"{"id":"shared-doc"}"#),
    (
        "config.set",
        r#"{"domain":"ui","key":"theme","value":"dark"}"#,
    ),
    ("config.get", r#"{"domain":"ui","key":"theme"}"#),
    ("config.list", "{}"),
    ("config.history", r#"{"domain":"ui","key":"theme"}"#),
    ("sync.keys", "{}"),
    ("sync.export", r#"{"to":["no-such-peer"]}"#),
    ("sync.verify", r#"{"file":"x.noduspkg"}"#),
    ("sync.stage", r#"{"file":"x.noduspkg"}"#),
    (
        "sync.activate",
        r#"{"bundle_id":"00000000000000000000000000000000"}"#,
    ),
    ("sync.recheck", "{}"),
    (
        "fields.decrypt",
        r#"{"type":"case","id":"shared-id","fields":["title"]}"#,
    ),
    ("fields.rotate_keys", r#"{"purpose":"fields"}"#),
    ("keys.list", "{}"),
    ("keys.rotate", r#"{"purpose":"fields"}"#),
    (
        "keys.destroy_version",
        r#"{"purpose":"fields","version":1}"#,
    ),
    (
        "keys.min_decryption_version",
        r#"{"purpose":"fields","version":1}"#,
    ),
    ("jobs.status", r#"{"job":"j0"}"#),
    ("jobs.cancel", r#"{"job":"j0"}"#),
    ("sync.status", "{}"),
];

const SCHEMA: &str = r#"
[keys."app.motto"]
type = "string"
scope = "user"
default = "hello"
doc = "a host string key"
"#;

fn acme_toml() -> String {
    format!(
        "{}\n[app]\nmotto = \"acme motto\"\n",
        tenant_toml(false).replace(
            r#"admin = ["*"]"#,
            r#"admin = ["*"]
clerk = ["notes.read"]"#
        )
    )
}

fn globex_toml() -> String {
    r#"
[rbac.roles]
zebra_marker_role = ["notes.zebra_marker_permission", "policy.*", "audit.*"]
admin = ["*"]

[app]
motto = "ZEBRA-MARKER-VALUE"

[rate.limits]
default = { rate = 10000, per = "1s", burst = 10000 }
"#
    .to_owned()
}

fn write(dir: &Path) {
    std::fs::create_dir_all(dir.join("tenants")).unwrap();
    std::fs::create_dir_all(dir.join("users/globex")).unwrap();
    std::fs::create_dir_all(dir.join("users/acme")).unwrap();
    std::fs::write(dir.join("schema.toml"), SCHEMA).unwrap();
    // The platform operator's role: granted by the system layer, the only one that may grant
    // `system.` permissions.
    std::fs::write(
        dir.join("system.toml"),
        format!("{SYSTEM}\n[rbac.roles]\nplatform = [\"system.*\"]\n"),
    )
    .unwrap();
    std::fs::write(dir.join("tenants/acme.toml"), acme_toml()).unwrap();
    // The platform owner's own tenant leaves `rbac.roles` to the system layer, so its users can
    // hold the system-granted `platform` role.
    std::fs::write(
        dir.join("tenants/ops.toml"),
        "[rate.limits]\ndefault = { rate = 10000, per = \"1s\", burst = 10000 }\n",
    )
    .unwrap();
    std::fs::write(dir.join("tenants/globex.toml"), globex_toml()).unwrap();
    std::fs::write(
        dir.join("users/globex/zebra-marker-user.toml"),
        "[app]\nmotto = \"ZEBRA-MARKER-USER-VALUE\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("users/acme/alice.toml"),
        "[app]\nmotto = \"alice motto\"\n",
    )
    .unwrap();
}

fn assert_clean(what: &str, text: &str) {
    for m in MARKERS {
        assert!(
            !text.contains(m),
            "tenant A saw tenant B's marker `{m}` in {what}: {text}"
        );
    }
}

#[test]
fn nothing_reachable_from_one_tenant_names_another() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let sync_dir = tempfile::tempdir().unwrap();
    let n = Nodus::builder()
        .in_memory()
        .sync_dir(sync_dir.path())
        .master_key(master())
        .policy_dir(dir.path())
        .command(CreateNote)
        .command(ExportNotes)
        .command(Ping)
        .config_domain(
            nodus_core::fabric::config::ConfigDomain::new(
                "ui",
                serde_json::json!({"type": "object", "properties": {"theme": {"type": "string"}}}),
                ["theme"],
            )
            .unwrap(),
        )
        .build()
        .unwrap();

    // Every registered built-in is in the table above.
    let host = ["notes.create", "notes.export", "notes.ping"];
    let mut registered: Vec<String> = n
        .commands()
        .into_iter()
        .map(|c| c.spec.name().to_string())
        .filter(|name| !host.contains(&name.as_str()))
        .collect();
    registered.sort();
    let mut listed: Vec<String> = BUILTINS.iter().map(|(c, _)| (*c).to_owned()).collect();
    listed.sort();
    assert_eq!(registered, listed, "add every built-in to BUILTINS");

    // Tenant B leaves records in the audit log, with markers in every field it controls.
    let zebra = {
        let s = n
            .subject(
                &tenant("globex"),
                actor("zebra-marker-actor"),
                &["zebra_marker_role", "admin"],
                "UNCLASSIFIED",
            )
            .unwrap();
        n.context(&tenant("globex"), s, "zebra-marker-session")
    };
    n.dispatch(&zebra, "notes.create", r#"{"title":"ZEBRA-MARKER-TITLE"}"#)
        .unwrap();
    let _ = n.dispatch(&zebra, "notes.create", r#"{"title":7,"zebra":1}"#);
    let _ = n.dispatch(&zebra, "policy.explain", r#"{"key":"app.motto"}"#);
    // Tenant B's data: a type named like A's, another with a marker name, objects with markers,
    // one with an id tenant A will ask for.
    n.dispatch(
        &zebra,
        "types.define",
        r#"{"name":"case","schema":{"type":"object","properties":{"zebra_marker_field":{"type":"string"}}},"fields":{"zebra_marker_field":{"indexed":true}}}"#,
    )
    .unwrap();
    n.dispatch(
        &zebra,
        "types.define",
        r#"{"name":"zebra_marker_type","schema":{"type":"object","properties":{}}}"#,
    )
    .unwrap();
    for id in ["shared-id", "zebra-marker-id"] {
        n.dispatch(
            &zebra,
            "objects.create",
            &format!(r#"{{"type":"case","id":"{id}","data":{{"zebra_marker_field":"ZEBRA-MARKER-DATA"}}}}"#),
        )
        .unwrap();
    }
    // Tenant B's configuration value of the key tenant A will ask for.
    n.dispatch(
        &zebra,
        "config.set",
        r#"{"domain":"ui","key":"theme","value":"ZEBRA-MARKER-THEME"}"#,
    )
    .unwrap();
    // And a CRDT document with the id tenant A will ask for, of a marker type, marker content.
    n.dispatch(
        &zebra,
        "docs.create",
        r#"{"type":"zebra_marker_doctype","id":"shared-doc","content":{"zebra_marker_key":"ZEBRA-MARKER-DOC"}}"#,
    )
    .unwrap();
    // Then B's file breaks, with a marker in the bad value and a marker-named unknown key.
    std::fs::write(
        dir.path().join("tenants/globex.toml"),
        "[app]\nmotto = 12\n[zebra_marker_section]\nzebra_marker_key = \"ZEBRA-MARKER-BROKEN\"\n",
    )
    .unwrap();

    // What tenant A can observe: an event subscription of its own.
    let events = n
        .events()
        .subscribe("*", Scope::Tenant(tenant("acme")), 1024)
        .unwrap();
    let admin = ctx(&n, "acme", "alice", &["admin"], "UNCLASSIFIED");
    let clerk = ctx(&n, "acme", "carl", &["clerk"], "UNCLASSIFIED");
    // Tenant A's own type of the same name.
    n.dispatch(
        &admin,
        "types.define",
        r#"{"name":"case","schema":{"type":"object","properties":{"title":{"type":"string"}}}}"#,
    )
    .unwrap();
    let before = n.flush_audit().unwrap().checkpoint.size;
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut record = |what: String, out: Result<serde_json::Value, nodus_core::DispatchError>| {
        let text = match out {
            Ok(v) => v.to_string(),
            Err(e) => format!("{e} | {} | {e:?}", e.to_json()),
        };
        outputs.push((what, text));
    };

    for (cmd, payload) in BUILTINS {
        for (who, c) in [("admin", &admin), ("clerk", &clerk)] {
            record(format!("{who} {cmd}"), n.dispatch(c, cmd, payload));
            record(
                format!("{who} {cmd} bad input"),
                n.dispatch(c, cmd, r#"{"unexpected": true}"#),
            );
        }
    }
    // Explain of every kind of key and user A could ask about.
    for payload in [
        r#"{"key":"app.motto","user":"alice"}"#,
        r#"{"key":"app.motto","user":"nobody"}"#,
        r#"{"key":"rbac.roles"}"#,
        r#"{"key":"no.such_key"}"#,
    ] {
        record(
            format!("explain {payload}"),
            n.dispatch(&admin, "policy.explain", payload),
        );
    }
    // Every other outcome: unknown command, payload too large, invalid input, handler error,
    // rate limited, tenant mismatch.
    record("unknown".into(), n.dispatch(&admin, "no.such", "{}"));
    record(
        "too large".into(),
        n.dispatch(&admin, "notes.create", &format!("\"{}\"", "x".repeat(400))),
    );
    record("invalid".into(), n.dispatch(&admin, "notes.create", "[1]"));
    record(
        "handler error".into(),
        n.dispatch(&admin, "notes.create", r#"{"title":""}"#),
    );
    for _ in 0..3 {
        record("rate".into(), n.dispatch(&admin, "notes.export", "null"));
    }
    let scheme = n.policy().system_snapshot().label_scheme().clone();
    let stranger = Subject::new(
        tenant("acme"),
        actor("stranger"),
        n.policy().symbols().role_set(["admin"]),
        nodus_core::Label::BOTTOM,
        &scheme,
    );
    record(
        "stranger".into(),
        n.dispatch(
            &n.context(&tenant("acme"), stranger, "s"),
            "notes.ping",
            "1",
        ),
    );

    // The walls held for the right reason: tenant A's admin (`*`) reloads its own files, and is
    // refused every `system.` command (a tenant's wildcard never reaches them).
    let find = |what: &str| -> &str {
        &outputs
            .iter()
            .find(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("no output for {what}"))
            .1
    };
    assert!(find("admin policy.reload").contains("\"epoch\""));
    // A's fabric answers from A's data only: its own types, not B's object of the same id.
    assert!(find("admin types.list").contains("\"memo\""));
    assert!(find("admin types.get").contains("\"title\""));
    assert!(find("admin objects.get").contains("NotFound"));
    assert!(find("admin objects.count").contains("\"count\":1"));
    for cmd in [
        "system.policy.reload",
        "system.audit.verify",
        "system.audit.checkpoint",
    ] {
        assert!(
            find(&format!("admin {cmd}")).contains("MissingPermission"),
            "{cmd}"
        );
    }
    for (what, text) in &outputs {
        assert_clean(what, text);
    }
    for ev in events.drain() {
        assert_clean(&format!("event {}", ev.topic), &ev.payload.to_string());
    }
    // The audit records of A's calls (and the reloads they caused) carry nothing of B's.
    n.flush_audit().unwrap();
    let after = n.audit_log().size().unwrap();
    let ours = n.audit_log().tail((after - before) as usize).unwrap();
    assert!(!ours.is_empty());
    for r in ours {
        if r.record
            .tenant
            .as_ref()
            .is_none_or(|t| t.as_str() == "acme")
        {
            assert_clean("an audit record about acme", &format!("{:?}", r.record));
        }
    }

    // Positive control: the markers are there to be found, by the platform operator's system
    // commands (whose reach is every tenant).
    let operator = ctx(&n, "ops", "pat", &["platform"], "UNCLASSIFIED");
    let e = n
        .dispatch(&operator, "system.policy.reload", "{}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("globex") && e.contains("zebra_marker"), "{e}");
    assert!(n.dispatch(&operator, "system.audit.verify", "{}").is_ok());
    assert!(
        n.dispatch(&operator, "system.audit.checkpoint", "{}")
            .is_ok()
    );
}
