//! The built-in commands — tenant-scoped `policy.reload`, `policy.explain`, `audit.verify`, and the
//! system forms `system.policy.reload`, `system.audit.verify`, `system.audit.checkpoint` — through
//! the front door: what they do, what they leave in the audit log and on the event bus, and that
//! their permissions come from policy like any other command's (the `system.` ones from the system
//! layer only).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use nodus_core::registry::events::Scope;
use nodus_core::security::audit::Outcome;
use nodus_core::{DenyReason, Nodus};
use serde_json::json;

/// acme's roles: `auditor` may only verify; `operator` has every built-in by wildcard; `admin`
/// everything. `viewer_extra` is spliced into the viewer's grants.
fn acme_toml(viewer_extra: &str) -> String {
    format!(
        r#"
[rbac.roles]
viewer = ["notes.read"{viewer_extra}]
editor = ["notes.*"]
auditor = ["audit.verify"]
operator = ["policy.*", "audit.*"]
admin = ["*"]

[rate.limits]
default = {{ rate = 10000, per = "1s", burst = 10000 }}
strict = {{ rate = 2, per = "1s", burst = 2 }}
"#
    )
}

/// The system layer grants the platform operator's role every `system.` command. Its roles reach
/// tenants whose own file leaves `rbac.roles` to the system layer: here `ops`, the platform
/// owner's own tenant.
fn system_toml() -> String {
    format!("{SYSTEM}\n[rbac.roles]\nplatform = [\"system.*\"]\n")
}

const OPS_TOML: &str = "[rate.limits]\ndefault = { rate = 10000, per = \"1s\", burst = 10000 }\n";

fn write_policy(dir: &Path, acme: &str) {
    std::fs::create_dir_all(dir.join("tenants")).unwrap();
    std::fs::write(dir.join("system.toml"), system_toml()).unwrap();
    std::fs::write(dir.join("tenants/ops.toml"), OPS_TOML).unwrap();
    std::fs::write(dir.join("tenants/acme.toml"), acme).unwrap();
}

fn build(policy_dir: &Path) -> Nodus {
    Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy_dir(policy_dir)
        .command(CreateNote)
        .command(Ping)
        .build()
        .unwrap()
}

fn reason(e: nodus_core::DispatchError) -> DenyReason {
    e.denial()
        .unwrap_or_else(|| panic!("expected a denial, got {e:?}"))
        .reason
}

#[test]
fn policy_reload_validates_swaps_audits_and_publishes() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &acme_toml(""));
    let n = build(dir.path());
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let op = ctx(&n, "acme", "olga", &["operator"], "UNCLASSIFIED");
    let note = || NewNote {
        title: "t".into(),
        tags: vec![],
    };
    assert_eq!(
        reason(n.invoke::<CreateNote>(&bob, note()).unwrap_err()),
        DenyReason::MissingPermission
    );
    let events = n
        .events()
        .subscribe("policy.reloaded", Scope::Tenant(tenant("acme")), 4)
        .unwrap();
    let epoch = n.policy().epoch();

    // Edit the file, then reload through the front door.
    write_policy(dir.path(), &acme_toml(r#", "notes.create""#));
    let report = n.dispatch(&op, "policy.reload", "{}").unwrap();
    assert_eq!(report["epoch"], json!(epoch + 1));
    assert_eq!(report["changed"], json!(["acme"]));
    assert!(n.invoke::<CreateNote>(&bob, note()).is_ok());
    let ev = events.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(&*ev.topic, "policy.reloaded");
    assert_eq!(ev.payload["epoch"], json!(epoch + 1));

    // Audited twice: the reload itself, then the dispatch that asked for it.
    n.flush_audit().unwrap();
    let tail = n.audit_log().tail(3).unwrap();
    assert_eq!(tail[0].record.kind, "policy.reloaded");
    assert_eq!(tail[0].record.outcome, Outcome::Allowed);
    assert_eq!(tail[0].record.policy_epoch, epoch + 1);
    assert_eq!(tail[1].record.command.as_deref(), Some("policy.reload"));
    assert_eq!(tail[1].record.outcome, Outcome::Allowed);

    // A broken file: nothing changes, the failure is audited and reported to the caller.
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        "[rbac.roles]\nviewer = 3\n",
    )
    .unwrap();
    let e = n.dispatch(&op, "policy.reload", "{}").unwrap_err();
    assert_eq!(e.code(), "ReloadFailed");
    assert!(e.to_string().contains("tenants/acme.toml"), "{e}");
    assert_eq!(n.policy().epoch(), epoch + 1);
    assert!(n.invoke::<CreateNote>(&bob, note()).is_ok());
    n.flush_audit().unwrap();
    let tail = n.audit_log().tail(3).unwrap();
    assert_eq!(
        (
            tail[0].record.kind.as_ref(),
            tail[0].record.outcome,
            tail[0].record.reason.as_deref()
        ),
        ("policy.reloaded", Outcome::Error, Some("InvalidPolicy"))
    );
    assert_eq!(
        (tail[1].record.outcome, tail[1].record.reason.as_deref()),
        (Outcome::Error, Some("ReloadFailed"))
    );
    assert!(
        events.try_recv().is_err(),
        "a failed reload publishes nothing"
    );
    assert!(n.verify_audit().unwrap().valid);
}

#[test]
fn builtin_permissions_come_from_policy() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &acme_toml(""));
    let n = build(dir.path());
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let aud = ctx(&n, "acme", "ann", &["auditor"], "UNCLASSIFIED");
    let op = ctx(&n, "acme", "olga", &["operator"], "UNCLASSIFIED");
    let admin = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");

    // `auditor` = ["audit.verify"]: exactly that one.
    assert_eq!(
        n.dispatch(&aud, "audit.verify", "{}").unwrap()["valid"],
        true
    );
    for cmd in ["policy.reload", "policy.explain"] {
        let payload = if cmd == "policy.explain" {
            r#"{"key":"limits.max_payload_bytes"}"#
        } else {
            "{}"
        };
        assert_eq!(
            reason(n.dispatch(&aud, cmd, payload).unwrap_err()),
            DenyReason::MissingPermission,
            "{cmd}"
        );
        assert_eq!(
            reason(n.dispatch(&bob, cmd, payload).unwrap_err()),
            DenyReason::MissingPermission,
            "{cmd}"
        );
        // Wildcards grant them like any other permission.
        assert!(n.dispatch(&op, cmd, payload).is_ok(), "{cmd}");
        assert!(n.dispatch(&admin, cmd, payload).is_ok(), "{cmd}");
    }
    // Granting `policy.explain` to viewers by policy opens it to them, after a reload.
    write_policy(dir.path(), &acme_toml(r#", "policy.explain""#));
    n.dispatch(&admin, "policy.reload", "{}").unwrap();
    assert!(
        n.dispatch(
            &bob,
            "policy.explain",
            r#"{"key":"limits.max_payload_bytes"}"#
        )
        .is_ok()
    );
    assert_eq!(
        reason(n.dispatch(&bob, "policy.reload", "{}").unwrap_err()),
        DenyReason::MissingPermission
    );
    // The system forms: only a role the system layer grants them reaches them — not a tenant's
    // `operator = ["policy.*", "audit.*"]`, not its `admin = ["*"]`.
    let platform = ctx(&n, "ops", "pat", &["platform"], "UNCLASSIFIED");
    for cmd in [
        "system.policy.reload",
        "system.audit.verify",
        "system.audit.checkpoint",
    ] {
        for who in [&bob, &aud, &op, &admin] {
            assert_eq!(
                reason(n.dispatch(who, cmd, "{}").unwrap_err()),
                DenyReason::MissingPermission,
                "{cmd}"
            );
        }
        assert!(n.dispatch(&platform, cmd, "{}").is_ok(), "{cmd}");
    }
    // They are listed like any command, with the permission each requires.
    let listed: Vec<(String, String)> = n
        .commands()
        .into_iter()
        .filter(|c| {
            ["policy.", "audit.", "system."]
                .iter()
                .any(|p| c.spec.name().starts_with(p))
        })
        .map(|c| {
            (
                c.spec.name().to_string(),
                c.spec.required_permission().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            "policy.reload",
            "policy.explain",
            "audit.verify",
            "system.policy.reload",
            "system.audit.verify",
            "system.audit.checkpoint",
        ]
        .map(|s| (s.to_owned(), s.to_owned()))
    );
}

#[test]
fn policy_explain_names_the_layer_and_file() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(dir.path(), &acme_toml(""));
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        format!("{}\n[observability]\nsampling_rate = 0.5\n", acme_toml("")),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("users/acme")).unwrap();
    std::fs::write(
        dir.path().join("users/acme/alice.toml"),
        "[observability]\nsampling_rate = 0.25\n",
    )
    .unwrap();
    let n = build(dir.path());
    let op = ctx(&n, "acme", "olga", &["operator"], "UNCLASSIFIED");
    let tenant_view = n
        .dispatch(
            &op,
            "policy.explain",
            r#"{"key":"observability.sampling_rate"}"#,
        )
        .unwrap();
    assert_eq!(tenant_view["key"], "observability.sampling_rate");
    assert_eq!(tenant_view["value"], json!(0.5));
    assert!(
        tenant_view.to_string().contains("tenants/acme.toml"),
        "{tenant_view}"
    );
    let user_view = n
        .dispatch(
            &op,
            "policy.explain",
            r#"{"key":"observability.sampling_rate","user":"alice"}"#,
        )
        .unwrap();
    assert_eq!(user_view["value"], json!(0.25));
    assert!(user_view.to_string().contains("alice.toml"), "{user_view}");
    // Bad input names the field; an unknown key is the handler's error.
    let e = n
        .dispatch(&op, "policy.explain", r#"{"key":"x","usr":"alice"}"#)
        .unwrap_err();
    assert_eq!(e.code(), "InvalidInput");
    let e = n
        .dispatch(&op, "policy.explain", r#"{"key":"no.such_key"}"#)
        .unwrap_err();
    assert_eq!(e.code(), "ExplainFailed");
    assert!(e.to_string().contains("`no.such_key`"), "{e}");
}

#[test]
fn audit_verify_and_checkpoint_report_the_log() {
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(
            nodus_core::PolicySources::new()
                .with_system("system.toml", &system_toml())
                .with_tenant(tenant("acme"), "tenants/acme.toml", &acme_toml(""))
                .with_tenant(tenant("ops"), "tenants/ops.toml", OPS_TOML),
        )
        .command(Ping)
        .build()
        .unwrap();
    let admin = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    for i in 0..5 {
        n.invoke::<Ping>(&admin, i).unwrap();
    }
    let platform = ctx(&n, "ops", "pat", &["platform"], "UNCLASSIFIED");
    let cp = n
        .dispatch(&platform, "system.audit.checkpoint", "{}")
        .unwrap();
    // Five pings, each flushed into the checkpoint before it was signed.
    assert_eq!(cp["checkpoint"]["size"], json!(5));
    let v = n
        .dispatch(&platform, "system.audit.verify", "null")
        .unwrap();
    assert_eq!(v["valid"], true);
    // The checkpoint dispatch itself was audited after its checkpoint was taken.
    assert_eq!(v["size"], json!(6));
    assert!(v["checkpoints"].as_u64().unwrap() >= 1);
    // The tenant's form: counts, the signed checkpoint, no records.
    let t = n.dispatch(&admin, "audit.verify", "{}").unwrap();
    assert_eq!(t["valid"], true);
    assert_eq!(t["size"], json!(7));
    assert_eq!(t["problem"], serde_json::Value::Null);
    assert!(t["checkpoint"]["note"].as_str().unwrap().contains("— "));
    let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "checkpoint",
            "checkpoints",
            "problem",
            "problem_index",
            "size",
            "uncovered",
            "valid"
        ]
    );
    let e = n
        .dispatch(&admin, "audit.verify", r#"{"deep": true}"#)
        .unwrap_err();
    assert_eq!(e.code(), "InvalidInput");
}

/// Tenant-scoped delivery must not leak one tenant's policy to another: each tenant's
/// `policy.reloaded` event carries its own part of the report (`ReloadReport::for_tenant`), the
/// system-wide one only the system layer's changes.
#[test]
fn a_reload_event_tells_a_tenant_only_about_itself() {
    let two = |acme_viewer_extra: &str| {
        nodus_core::PolicySources::new()
            .with_system("system.toml", SYSTEM)
            .with_tenant(
                tenant("acme"),
                "tenants/acme.toml",
                &acme_toml(acme_viewer_extra),
            )
            .with_tenant(tenant("globex"), "tenants/globex.toml", &acme_toml(""))
    };
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(two(""))
        .build()
        .unwrap();
    let globex = n
        .events()
        .subscribe("policy.*", Scope::Tenant(tenant("globex")), 8)
        .unwrap();
    n.reload_policy(two(r#", "notes.secret_plans""#)).unwrap();
    for ev in globex.drain() {
        let text = ev.payload.to_string();
        assert!(
            !text.contains("acme") && !text.contains("secret_plans"),
            "globex received acme's policy change: {text}"
        );
    }
}
