//! The `config.*` built-ins through `dispatch`: host-registered domains, tenant and per-user
//! values, validation that names the path and never the value, labels (hidden ≡ absent), expected
//! versions, history, the refusal to shadow a policy key (at build and on set), audit, and
//! configuration travelling in bundles with a last-writer-wins merge.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use nodus_core::fabric::config::ConfigDomain;
use nodus_core::{BuildError, Context, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::{Value, json};

const SYSTEM: &str = "[audit]\ndurability = \"normal\"\n";
const TENANT: &str = r#"
[rbac.roles]
admin = ["*"]
member = ["config.get", "config.list", "config.history", "config.set"]
reader = ["config.get", "config.list"]

[rate.limits]
default = { rate = 10000, per = "1s", burst = 10000 }
admin = { rate = 10000, per = "1s", burst = 10000 }
"#;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn ui() -> ConfigDomain {
    ConfigDomain::new(
        "ui",
        json!({"type": "object", "properties": {
            "theme": {"enum": ["light", "dark"]},
            "layout": {"type": "object", "properties": {"columns": {"type": "integer", "minimum": 1, "maximum": 6}}, "required": ["columns"]},
            "banner": {"type": "string", "maxLength": 40}
        }}),
        ["theme", "layout"],
    )
    .unwrap()
}

fn builder(dir: &Path, seed: u8, schema: &str) -> nodus_core::NodusBuilder {
    Nodus::builder()
        .data_dir(dir)
        .master_key(MasterKey::from_bytes([seed; 32]))
        .policy(
            PolicySources::new()
                .with_schema("schema.toml", schema)
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant(), "tenants/acme.toml", TENANT),
        )
        .config_domain(ui())
}

fn node(dir: &Path, seed: u8) -> Nodus {
    builder(dir, seed, "").build().unwrap()
}

fn ctx(n: &Nodus, actor: &str, role: &str, clearance: &str) -> Context {
    let s = n
        .subject(
            &tenant(),
            nodus_core::ActorId::new(actor).unwrap(),
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

fn ok(n: &Nodus, c: &Context, cmd: &str, input: Value) -> Value {
    call(n, c, cmd, input).unwrap_or_else(|e| panic!("{cmd}: {e:?}"))
}

fn err(n: &Nodus, c: &Context, cmd: &str, input: Value) -> (String, String) {
    match call(n, c, cmd, input) {
        Ok(v) => panic!("{cmd} succeeded: {v}"),
        Err(e) => e,
    }
}

#[test]
fn tenant_and_user_values_with_versions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let admin = ctx(&n, "alice", "admin", "UNCLASSIFIED");
    let bob = ctx(&n, "bob", "member", "UNCLASSIFIED");

    let set = ok(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "light"}),
    );
    assert_eq!(
        set,
        json!({"domain": "ui", "key": "theme", "scope": "tenant", "label": "UNCLASSIFIED", "value": "light", "version": 1})
    );
    // Bob sees the tenant's value until he sets his own; Alice keeps seeing the tenant's.
    assert_eq!(
        ok(
            &n,
            &bob,
            "config.get",
            json!({"domain": "ui", "key": "theme"})
        )["value"],
        "light"
    );
    ok(
        &n,
        &bob,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "dark", "scope": "user"}),
    );
    let mine = ok(
        &n,
        &bob,
        "config.get",
        json!({"domain": "ui", "key": "theme"}),
    );
    assert_eq!(
        (mine["value"].clone(), mine["scope"].clone()),
        (json!("dark"), json!("user"))
    );
    assert_eq!(
        ok(
            &n,
            &admin,
            "config.get",
            json!({"domain": "ui", "key": "theme"})
        )["value"],
        "light"
    );

    // Expected versions: the stored one passes, a stale one is a Conflict naming both.
    let v2 = ok(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "dark", "expected_version": 1}),
    );
    assert_eq!(v2["version"], 2);
    let (code, msg) = err(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "light", "expected_version": 1}),
    );
    assert_eq!(code, "Conflict");
    assert!(msg.contains("version 2, not the expected 1"), "{msg}");

    ok(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "layout", "value": {"columns": 3}}),
    );
    let list = ok(&n, &bob, "config.list", json!({"domain": "ui"}));
    let keys: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["key"].as_str().unwrap().to_owned(),
                v["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("layout".into(), "tenant".into()),
            ("theme".into(), "user".into())
        ]
    );
    assert_eq!(n.dispatch(&bob, "config.list", "null").unwrap(), list);

    // History: the tenant's sets and the caller's own, in order; not another user's.
    let h = ok(
        &n,
        &bob,
        "config.history",
        json!({"domain": "ui", "key": "theme"}),
    );
    let seen: Vec<(String, Value)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["scope"].as_str().unwrap().to_owned(), e["value"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("tenant".into(), json!("light")),
            ("user".into(), json!("dark")),
            ("tenant".into(), json!("dark")),
        ]
    );
    let h_admin = ok(
        &n,
        &admin,
        "config.history",
        json!({"domain": "ui", "key": "theme"}),
    );
    assert_eq!(h_admin.as_array().unwrap().len(), 2);
}

#[test]
fn every_refusal_has_its_code_names_the_key_and_never_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let admin = ctx(&n, "alice", "admin", "UNCLASSIFIED");
    let secret = "SUPER-SECRET-BANNER-TEXT-THAT-IS-FAR-TOO-LONG-FOR-THE-SCHEMA";
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"domain": "nope", "key": "theme", "value": 1}),
            "UnknownDomain",
            "no configuration domain `nope`",
        ),
        (
            json!({"domain": "ui", "key": "nope", "value": 1}),
            "UnknownKey",
            "domain `ui` has no key `nope`",
        ),
        (
            json!({"domain": "ui", "key": "theme", "value": "purple"}),
            "InvalidValue",
            "config `ui.theme`: value at `` fails `enum`",
        ),
        (
            json!({"domain": "ui", "key": "layout", "value": {"columns": 9}}),
            "InvalidValue",
            "value at `/columns` fails `maximum`",
        ),
        (
            json!({"domain": "ui", "key": "layout", "value": {}}),
            "InvalidValue",
            "fails `required`",
        ),
        (
            json!({"domain": "ui", "key": "banner", "value": secret}),
            "InvalidValue",
            "`ui.banner`: value at `` fails `maxLength`",
        ),
        (
            json!({"domain": "ui", "key": "banner", "value": "hi", "scope": "user"}),
            "NoUserScope",
            "`ui.banner` has no per-user values",
        ),
        (
            json!({"domain": "ui", "key": "theme", "value": "dark", "label": "PURPLE"}),
            "BadLabel",
            "invalid label",
        ),
        (
            json!({"domain": "bad name", "key": "theme", "value": 1}),
            "BadName",
            "invalid configuration name `bad name`",
        ),
        (
            json!({"domain": "ui", "key": "theme"}),
            "InvalidInput",
            "value",
        ),
    ];
    for (input, code, text) in cases {
        let (c, msg) = err(&n, &admin, "config.set", input.clone());
        assert_eq!(c, code, "{input}: {msg}");
        assert!(msg.contains(text), "{input}: {msg}");
        assert!(!msg.contains("SUPER-SECRET"), "{msg}");
    }
    assert_eq!(
        err(
            &n,
            &admin,
            "config.get",
            json!({"domain": "ui", "key": "theme"})
        )
        .0,
        "NotSet"
    );
    assert_eq!(ok(&n, &admin, "config.list", json!({})), json!([]));
    // Permissions come from policy like any command's.
    let reader = ctx(&n, "rita", "reader", "UNCLASSIFIED");
    assert_eq!(
        err(
            &n,
            &reader,
            "config.set",
            json!({"domain": "ui", "key": "theme", "value": "dark"})
        )
        .0,
        "MissingPermission"
    );
    // No write down: a SECRET subject may not set an UNCLASSIFIED value.
    let high = ctx(&n, "hal", "admin", "SECRET");
    let (code, msg) = err(
        &n,
        &high,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "dark", "label": "UNCLASSIFIED"}),
    );
    assert_eq!(code, "WriteDenied", "{msg}");
}

#[test]
fn a_value_above_the_caller_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let high = ctx(&n, "hal", "admin", "SECRET");
    let low = ctx(&n, "lou", "admin", "UNCLASSIFIED");
    ok(
        &n,
        &high,
        "config.set",
        json!({"domain": "ui", "key": "banner", "value": "exercise"}),
    );
    // Unset and hidden answer alike.
    let hidden = err(
        &n,
        &low,
        "config.get",
        json!({"domain": "ui", "key": "banner"}),
    );
    let unset = err(
        &n,
        &low,
        "config.get",
        json!({"domain": "ui", "key": "theme"}),
    );
    assert_eq!(hidden.0, unset.0);
    assert_eq!(
        hidden.1.replace("banner", "X"),
        unset.1.replace("theme", "X")
    );
    assert_eq!(ok(&n, &low, "config.list", json!({})), json!([]));
    assert_eq!(
        ok(
            &n,
            &low,
            "config.history",
            json!({"domain": "ui", "key": "banner"})
        ),
        json!([])
    );
    // Polyinstantiation: the low subject's own value at its label; each sees its own.
    ok(
        &n,
        &low,
        "config.set",
        json!({"domain": "ui", "key": "banner", "value": "all clear"}),
    );
    assert_eq!(
        ok(
            &n,
            &low,
            "config.get",
            json!({"domain": "ui", "key": "banner"})
        )["value"],
        "all clear"
    );
    assert_eq!(
        ok(
            &n,
            &high,
            "config.get",
            json!({"domain": "ui", "key": "banner"})
        )["value"],
        "exercise"
    );
}

#[test]
fn a_config_key_may_never_shadow_a_policy_key() {
    let dir = tempfile::tempdir().unwrap();
    // At build: a domain whose key names a built-in policy key.
    let shadow = ConfigDomain::new(
        "observability",
        json!({"type": "object", "properties": {"level": {"type": "string"}}}),
        Vec::<String>::new(),
    )
    .unwrap();
    let e = builder(&dir.path().join("a"), 1, "")
        .config_domain(shadow)
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::Config(_)), "{e}");
    assert!(
        e.to_string().contains(
            "config key `observability.level` would override policy key `observability.level`"
        ),
        "{e}"
    );
    // On set: the host's policy schema gained a key after the domain was registered.
    let n = node(&dir.path().join("b"), 1);
    let admin = ctx(&n, "alice", "admin", "UNCLASSIFIED");
    ok(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "banner", "value": "hi"}),
    );
    n.reload_policy(
        PolicySources::new()
            .with_schema(
                "schema.toml",
                "[keys.\"ui.banner\"]\ntype = \"string\"\nscope = \"tenant\"\ndefault = \"\"\ndoc = \"a banner policy governs\"\n",
            )
            .with_system("system.toml", SYSTEM)
            .with_tenant(tenant(), "tenants/acme.toml", TENANT),
    )
    .unwrap();
    let admin = ctx(&n, "alice", "admin", "UNCLASSIFIED");
    let (code, msg) = err(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "banner", "value": "x"}),
    );
    assert_eq!(code, "ShadowsPolicy");
    assert!(
        msg.contains("`ui.banner` would override policy key `ui.banner`"),
        "{msg}"
    );
}

#[test]
fn every_call_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), 1);
    let admin = ctx(&n, "alice", "admin", "UNCLASSIFIED");
    ok(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "dark"}),
    );
    let _ = err(
        &n,
        &admin,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "neon"}),
    );
    ok(
        &n,
        &admin,
        "config.get",
        json!({"domain": "ui", "key": "theme"}),
    );
    n.flush_audit().unwrap();
    let size = n.audit_log().size().unwrap();
    let recs = n.audit_log().tail(size as usize).unwrap();
    let seen: Vec<(String, Option<String>)> = recs
        .iter()
        .filter(|r| {
            r.record
                .command
                .as_deref()
                .is_some_and(|c| c.starts_with("config."))
        })
        .map(|r| {
            (
                r.record.command.as_deref().unwrap().to_owned(),
                r.record.reason.as_deref().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("config.set".to_owned(), None),
            ("config.set".to_owned(), Some("InvalidValue".to_owned())),
            ("config.get".to_owned(), None),
        ]
    );
    for r in &recs {
        assert!(!format!("{:?}", r.record).contains("neon"));
    }
}

#[test]
fn configuration_travels_in_bundles_and_the_last_writer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), 1);
    let b = node(&dir.path().join("b"), 2);
    a.sync()
        .trust_peer(&b.sync().keys().unwrap(), &[tenant()])
        .unwrap();
    b.sync()
        .trust_peer(&a.sync().keys().unwrap(), &[tenant()])
        .unwrap();
    let ship = |from: &Nodus, to: &Nodus| {
        let c = ctx(from, "alice", "admin", "UNCLASSIFIED");
        let out = ok(
            from,
            &c,
            "sync.export",
            json!({"to": [to.sync().keys().unwrap().key_id]}),
        );
        let file = out["file"].as_str().unwrap().to_owned();
        std::fs::copy(
            from.sync().dir().unwrap().join("outbox").join(&file),
            to.sync().dir().unwrap().join("inbox").join(&file),
        )
        .unwrap();
        let c = ctx(to, "alice", "admin", "UNCLASSIFIED");
        let staged = ok(to, &c, "sync.stage", json!({"file": file}));
        ok(
            to,
            &c,
            "sync.activate",
            json!({"bundle_id": staged["bundle_id"]}),
        )
    };
    let ca = ctx(&a, "alice", "admin", "UNCLASSIFIED");
    let cb = ctx(&b, "alice", "admin", "UNCLASSIFIED");
    ok(
        &a,
        &ca,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "light"}),
    );
    ship(&a, &b);
    assert_eq!(
        ok(
            &b,
            &cb,
            "config.get",
            json!({"domain": "ui", "key": "theme"})
        )["value"],
        "light"
    );
    // Concurrent sets on both sides: after an exchange both ways, both hold the same winner.
    ok(
        &a,
        &ca,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "dark"}),
    );
    ok(
        &b,
        &cb,
        "config.set",
        json!({"domain": "ui", "key": "theme", "value": "light"}),
    );
    ship(&a, &b);
    ship(&b, &a);
    let on_a = ok(
        &a,
        &ca,
        "config.get",
        json!({"domain": "ui", "key": "theme"}),
    );
    let on_b = ok(
        &b,
        &cb,
        "config.get",
        json!({"domain": "ui", "key": "theme"}),
    );
    assert_eq!(on_a, on_b);
    assert_eq!(on_a["version"], 3);
    assert_eq!(
        ok(
            &a,
            &ca,
            "config.history",
            json!({"domain": "ui", "key": "theme"})
        ),
        ok(
            &b,
            &cb,
            "config.history",
            json!({"domain": "ui", "key": "theme"})
        )
    );
}
