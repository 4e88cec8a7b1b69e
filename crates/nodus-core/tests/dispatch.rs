//! The front door through the public API, exactly as a host uses it: every outcome, every denial
//! reason, hot reload, and the audit trail they leave.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use nodus_core::security::audit::Outcome;
use nodus_core::{BuildError, Context, DenyReason, DispatchError, Nodus};
use serde_json::json;

/// The last `n` audit records as (command, outcome, reason).
fn last_records(nodus: &Nodus, n: usize) -> Vec<(String, Outcome, Option<String>)> {
    nodus.flush_audit().unwrap();
    nodus
        .audit_log()
        .tail(n)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.record.command.as_deref().unwrap_or("").to_owned(),
                r.record.outcome,
                r.record.reason.as_deref().map(str::to_owned),
            )
        })
        .collect()
}

fn last_record(nodus: &Nodus) -> (String, Outcome, Option<String>) {
    last_records(nodus, 1).pop().unwrap()
}

fn denial(e: DispatchError) -> DenyReason {
    match e {
        DispatchError::Denied(d) => d.reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn allowed_typed_and_json() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "SECRET//CRYPTO");
    let note = n
        .invoke::<CreateNote>(
            &alice,
            NewNote {
                title: "hi".into(),
                tags: vec![],
            },
        )
        .unwrap();
    assert_eq!(
        note,
        Note {
            id: 1,
            title: "hi".into()
        }
    );
    assert_eq!(
        last_record(&n),
        ("notes.create".into(), Outcome::Allowed, None)
    );

    let out = n
        .dispatch(&alice, "notes.create", r#"{"title":"json"}"#)
        .unwrap();
    assert_eq!(out, json!({"id": 1, "title": "json"}));
    assert_eq!(n.invoke::<ReadReport>(&alice, ()).unwrap(), "the report");
    let rec = n.audit_log().tail(1).unwrap().pop().unwrap().record;
    assert_eq!(rec.tenant.unwrap().as_str(), "acme");
    assert_eq!(rec.actor.unwrap().as_str(), "alice");
    assert_eq!(rec.session.as_deref(), Some("session-1"));
    assert_eq!(rec.kind, "dispatch");
    assert_eq!(rec.policy_epoch, n.policy().epoch());
}

#[test]
fn missing_permission_is_denied_and_audited() {
    let n = build_in_memory();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let e = n
        .invoke::<CreateNote>(
            &bob,
            NewNote {
                title: "x".into(),
                tags: vec![],
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "MissingPermission");
    assert_eq!(denial(e), DenyReason::MissingPermission);
    assert_eq!(
        last_record(&n),
        (
            "notes.create".into(),
            Outcome::Denied,
            Some("MissingPermission".into())
        )
    );
    // A subject with no role at all.
    let nobody = ctx(&n, "acme", "eve", &[], "TOP SECRET");
    assert_eq!(
        denial(n.invoke::<Ping>(&nobody, 1).unwrap_err()),
        DenyReason::MissingPermission
    );
}

#[test]
fn clearance_too_low_is_denied() {
    let n = build_in_memory();
    // Level too low.
    let c1 = ctx(&n, "acme", "carol", &["editor"], "CONFIDENTIAL//CRYPTO");
    assert_eq!(
        denial(n.invoke::<ReadReport>(&c1, ()).unwrap_err()),
        DenyReason::ClearanceTooLow
    );
    // Level high enough, compartment missing.
    let c2 = ctx(&n, "acme", "carol", &["editor"], "TOP SECRET//NOFORN");
    assert_eq!(
        denial(n.dispatch(&c2, "reports.read", "null").unwrap_err()),
        DenyReason::ClearanceTooLow
    );
    assert_eq!(
        last_record(&n),
        (
            "reports.read".into(),
            Outcome::Denied,
            Some("ClearanceTooLow".into())
        )
    );
}

#[test]
fn unknown_tenant_is_denied() {
    let n = build_in_memory();
    let s = common::unknown_tenant_subject(&n, "initech", "mallory", &["admin"]);
    let ctx = n.context(&tenant("initech"), s, "s");
    assert_eq!(
        denial(n.invoke::<Ping>(&ctx, 1).unwrap_err()),
        DenyReason::UnknownTenant
    );
    assert_eq!(
        last_record(&n),
        (
            "notes.ping".into(),
            Outcome::Denied,
            Some("UnknownTenant".into())
        )
    );
    assert!(
        n.subject(&tenant("initech"), actor("m"), &[], "UNCLASSIFIED")
            .is_err()
    );
}

#[test]
fn unknown_command_is_an_audited_error() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["admin"], "UNCLASSIFIED");
    let e = n.dispatch(&alice, "notes.nope", "{}").unwrap_err();
    assert!(
        matches!(&e, DispatchError::UnknownCommand(name) if name == "notes.nope"),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "unknown command `notes.nope`");
    assert_eq!(
        last_record(&n),
        (
            "notes.nope".into(),
            Outcome::Error,
            Some("UnknownCommand".into())
        )
    );
}

#[test]
fn malformed_json_names_the_path() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    let e = n
        .dispatch(&alice, "notes.create", r#"{"title":"t","tags":["a", 5]}"#)
        .unwrap_err();
    match &e {
        DispatchError::InvalidInput { path, .. } => assert_eq!(path, "tags[1]"),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("at `tags[1]`"), "{e}");
    assert_eq!(e.to_json()["path"], "tags[1]");
    let e = n
        .dispatch(&alice, "notes.create", r#"{"title": 5}"#)
        .unwrap_err();
    assert!(
        matches!(&e, DispatchError::InvalidInput { path, .. } if path == "title"),
        "{e:?}"
    );
    let e = n
        .dispatch(&alice, "notes.create", r#"{"title": "#)
        .unwrap_err();
    assert!(matches!(&e, DispatchError::InvalidInput { .. }), "{e:?}");
    assert_eq!(
        last_record(&n),
        (
            "notes.create".into(),
            Outcome::Error,
            Some("InvalidInput".into())
        )
    );
}

#[test]
fn oversized_payload_is_rejected_before_parsing() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    // Not even valid JSON: it must be refused for its size, not parsed.
    let big = format!("{{\"title\": \"{}", "x".repeat(300));
    let e = n.dispatch(&alice, "notes.create", &big).unwrap_err();
    assert!(
        matches!(e, DispatchError::PayloadTooLarge { limit: 256, .. }),
        "{e:?}"
    );
    assert_eq!(
        last_record(&n),
        (
            "notes.create".into(),
            Outcome::Error,
            Some("PayloadTooLarge".into())
        )
    );
}

#[test]
fn handler_errors_are_audited_with_their_code() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    let e = n
        .invoke::<CreateNote>(
            &alice,
            NewNote {
                title: String::new(),
                tags: vec![],
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "EmptyTitle");
    assert_eq!(
        last_record(&n),
        (
            "notes.create".into(),
            Outcome::Error,
            Some("EmptyTitle".into())
        )
    );
}

#[test]
fn rate_limit_then_recovery_after_retry_after() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    assert_eq!(n.invoke::<ExportNotes>(&alice, ()).unwrap(), 7);
    assert_eq!(n.invoke::<ExportNotes>(&alice, ()).unwrap(), 7);
    let e = n.invoke::<ExportNotes>(&alice, ()).unwrap_err();
    let d = e.denial().cloned().unwrap();
    assert_eq!(d.reason, DenyReason::RateLimited);
    let retry = d.retry_after.unwrap();
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_millis(500),
        "{retry:?}"
    );
    assert!(e.to_json()["retry_after_ms"].as_u64().unwrap() >= 1);
    let (cmd, outcome, reason) = last_record(&n);
    assert_eq!(
        (cmd.as_str(), outcome, reason.as_deref()),
        ("notes.export", Outcome::Denied, Some("RateLimited"))
    );
    let detail = n.audit_log().tail(1).unwrap().pop().unwrap().record.detail;
    assert!(detail.contains_key("retry_after_ms"));
    // Another actor is not affected; another class of the same actor is not affected.
    let bob = ctx(&n, "acme", "bob", &["editor"], "UNCLASSIFIED");
    assert!(n.invoke::<ExportNotes>(&bob, ()).is_ok());
    assert!(n.invoke::<Ping>(&alice, 1).is_ok());
    // A fresh context for the same actor shares the limit.
    let alice2 = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    assert!(n.invoke::<ExportNotes>(&alice2, ()).is_err());
    // Recovery: after retry_after (plus the coarse clock's tick), the call is admitted.
    std::thread::sleep(retry + Duration::from_millis(20));
    assert_eq!(n.invoke::<ExportNotes>(&alice, ()).unwrap(), 7);
}

#[test]
fn hot_reload_changes_a_decision_without_restart() {
    let n = build_in_memory();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let input = || NewNote {
        title: "t".into(),
        tags: vec![],
    };
    assert_eq!(
        denial(n.invoke::<CreateNote>(&bob, input()).unwrap_err()),
        DenyReason::MissingPermission
    );
    let epoch_before = n.policy().epoch();
    let events = n
        .events()
        .subscribe(
            "policy.*",
            nodus_core::registry::events::Scope::AllTenants,
            8,
        )
        .unwrap();
    let report = n.reload_policy(sources(true)).unwrap();
    assert!(report.epoch > epoch_before);
    assert_eq!(
        report
            .changed
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        vec!["acme"]
    );
    // The same bound context sees the new policy at once.
    assert!(n.invoke::<CreateNote>(&bob, input()).is_ok());
    n.flush_audit().unwrap();
    let rec = n.audit_log().tail(2).unwrap();
    assert_eq!(rec[0].record.kind, "policy.reloaded");
    assert_eq!(rec[1].record.policy_epoch, report.epoch);
    let ev = events.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(&*ev.topic, "policy.reloaded");
    // A failed reload changes nothing and is audited.
    let bad =
        nodus_core::PolicySources::new().with_system("system.toml", "[audit]\ndurability = 3\n");
    assert!(n.reload_policy(bad).is_err());
    assert_eq!(n.policy().epoch(), report.epoch);
    assert!(n.invoke::<CreateNote>(&bob, input()).is_ok());
    n.flush_audit().unwrap();
    let failed = n.audit_log().tail(2).unwrap();
    assert_eq!(failed[0].record.kind, "policy.reloaded");
    assert_eq!(failed[0].record.outcome, Outcome::Error);
}

#[test]
fn a_label_the_new_policy_cannot_parse_quarantines_the_command() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "SECRET//CRYPTO");
    assert!(n.invoke::<ReadReport>(&alice, ()).is_ok());
    let no_crypto = common::SYSTEM.replace(
        r#"compartments = ["CRYPTO", "NOFORN"]"#,
        r#"compartments = ["NOFORN"]"#,
    );
    let sources = nodus_core::PolicySources::new()
        .with_system("system.toml", &no_crypto)
        .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_toml(false));
    n.reload_policy(sources).unwrap();
    // The scheme changed: alice's clearance is never reinterpreted under the new names.
    assert_eq!(
        denial(n.invoke::<ReadReport>(&alice, ()).unwrap_err()),
        DenyReason::SessionStale
    );
    let alice = ctx(&n, "acme", "alice", &["editor"], "SECRET");
    assert_eq!(
        denial(n.invoke::<ReadReport>(&alice, ()).unwrap_err()),
        DenyReason::Quarantined
    );
    assert_eq!(
        last_record(&n),
        (
            "reports.read".into(),
            Outcome::Denied,
            Some("Quarantined".into())
        )
    );
    // The JSON entry point refuses it too, before parsing anything.
    assert_eq!(
        denial(n.dispatch(&alice, "reports.read", "not json").unwrap_err()),
        DenyReason::Quarantined
    );
    // Kept and visible to an admin, with the reason; not deleted.
    assert_eq!(n.commands().len(), 44); // 4 host commands and 40 built-ins
    let info = n
        .commands()
        .into_iter()
        .find(|c| &**c.spec.name() == "reports.read")
        .unwrap();
    assert!(matches!(
        info.status,
        nodus_core::registry::commands::CommandStatus::Quarantined { .. }
    ));
    n.reload_policy(sources_for_restore()).unwrap();
    let alice = ctx(&n, "acme", "alice", &["editor"], "SECRET//CRYPTO");
    assert!(n.invoke::<ReadReport>(&alice, ()).is_ok());
}

fn sources_for_restore() -> nodus_core::PolicySources {
    sources(false)
}

/// One audit record as (kind, command, outcome, reason).
type Row = (String, String, Outcome, Option<String>);

fn rows(nodus: &Nodus, n: usize) -> Vec<Row> {
    nodus.flush_audit().unwrap();
    nodus
        .audit_log()
        .tail(n)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.record.kind.to_string(),
                r.record.command.as_deref().unwrap_or("").to_owned(),
                r.record.outcome,
                r.record.reason.as_deref().map(str::to_owned),
            )
        })
        .collect()
}

fn row(kind: &str, command: &str, outcome: Outcome, reason: Option<&str>) -> Row {
    (
        kind.to_owned(),
        command.to_owned(),
        outcome,
        reason.map(str::to_owned),
    )
}

/// Every outcome the front door can produce — allowed, each denial reason, unknown command,
/// oversized payload, invalid input, handler error — leaves exactly one record with the right
/// outcome and reason code, read back through the public API, and the log verifies afterwards.
#[test]
fn every_outcome_is_audited_and_the_log_verifies() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "CONFIDENTIAL");
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let stranger = {
        let s = common::unknown_tenant_subject(&n, "initech", "mallory", &["admin"]);
        n.context(&tenant("initech"), s, "s")
    };
    let before = n.flush_audit().unwrap().checkpoint.size;

    let _ = n.invoke::<Ping>(&alice, 1); // allowed
    let _ = n.invoke::<CreateNote>(
        &bob,
        NewNote {
            title: "x".into(),
            tags: vec![],
        },
    ); // MissingPermission
    let _ = n.invoke::<ReadReport>(&alice, ()); // ClearanceTooLow
    let _ = n.invoke::<Ping>(&stranger, 1); // UnknownTenant
    for _ in 0..3 {
        let _ = n.invoke::<ExportNotes>(&alice, ()); // allowed, allowed, RateLimited
    }
    let _ = n.dispatch(&alice, "nope.nope", "{}"); // UnknownCommand
    let big = format!("\"{}\"", "x".repeat(300));
    let _ = n.dispatch(&alice, "notes.create", &big); // PayloadTooLarge
    let _ = n.dispatch(&alice, "notes.create", r#"{"title": 1}"#); // InvalidInput
    let _ = n.invoke::<CreateNote>(
        &alice,
        NewNote {
            title: String::new(),
            tags: vec![],
        },
    ); // the handler's own code: EmptyTitle
    // A policy without the CRYPTO compartment quarantines `reports.read` (SECRET//CRYPTO).
    let no_crypto = common::SYSTEM.replace(r#""CRYPTO", "#, "");
    let quarantine = nodus_core::PolicySources::new()
        .with_system("system.toml", &no_crypto)
        .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_toml(false));
    n.reload_policy(quarantine).unwrap();
    let root = ctx(&n, "acme", "root", &["admin"], "TOP SECRET//NOFORN"); // the new scheme
    let e = n.invoke::<ReadReport>(&root, ()).unwrap_err(); // Quarantined
    assert_eq!(denial(e), DenyReason::Quarantined);

    let d = "dispatch";
    let got = rows(&n, 13);
    assert_eq!(
        got,
        vec![
            row(d, "notes.ping", Outcome::Allowed, None),
            row(
                d,
                "notes.create",
                Outcome::Denied,
                Some("MissingPermission")
            ),
            row(d, "reports.read", Outcome::Denied, Some("ClearanceTooLow")),
            row(d, "notes.ping", Outcome::Denied, Some("UnknownTenant")),
            row(d, "notes.export", Outcome::Allowed, None),
            row(d, "notes.export", Outcome::Allowed, None),
            row(d, "notes.export", Outcome::Denied, Some("RateLimited")),
            row(d, "nope.nope", Outcome::Error, Some("UnknownCommand")),
            row(d, "notes.create", Outcome::Error, Some("PayloadTooLarge")),
            row(d, "notes.create", Outcome::Error, Some("InvalidInput")),
            row(d, "notes.create", Outcome::Error, Some("EmptyTitle")),
            row("policy.reloaded", "", Outcome::Allowed, None),
            row(d, "reports.read", Outcome::Denied, Some("Quarantined")),
        ]
    );
    // Every denial reason the guard has is among them.
    for reason in [
        DenyReason::UnknownTenant,
        DenyReason::Quarantined,
        DenyReason::MissingPermission,
        DenyReason::ClearanceTooLow,
        DenyReason::RateLimited,
    ] {
        assert!(
            got.iter().any(|r| r.3.as_deref() == Some(reason.code())),
            "{reason} not audited"
        );
    }
    // Details a reader needs: the bad field's path, the retry time, the new epoch.
    let tail = n.audit_log().tail(13).unwrap();
    assert_eq!(
        tail[9].record.detail.get("path").map(String::as_str),
        Some("title")
    );
    assert!(tail[6].record.detail.contains_key("retry_after_ms"));
    assert_eq!(tail[12].record.policy_epoch, n.policy().epoch());
    assert!(tail[0].record.policy_epoch < n.policy().epoch());

    let report = n.verify_audit().unwrap();
    assert!(report.valid, "{report:?}");
    assert_eq!(report.size, before + 13, "exactly one record per call");
    assert_eq!(report.latest.unwrap().size, report.size);
}

#[test]
fn builtin_audit_commands_go_through_the_same_door() {
    let n = build_in_memory();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let admin = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    let _ = n.invoke::<Ping>(&bob, 1);
    let v = n.dispatch(&admin, "audit.verify", "{}").unwrap();
    assert_eq!(v["valid"], true);
    assert!(
        v["checkpoint"]["note"]
            .as_str()
            .unwrap()
            .contains("nodus.local/audit")
    );
    assert_eq!(
        denial(n.dispatch(&bob, "audit.verify", "{}").unwrap_err()),
        DenyReason::MissingPermission
    );
    // The whole-log forms are system commands: a tenant's `admin = ["*"]` does not reach them.
    for cmd in ["system.audit.verify", "system.audit.checkpoint"] {
        assert_eq!(
            denial(n.dispatch(&admin, cmd, "{}").unwrap_err()),
            DenyReason::MissingPermission
        );
    }
}

#[test]
fn policy_explain_builtin() {
    let n = build_in_memory();
    let admin = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    let out = n
        .dispatch(
            &admin,
            "policy.explain",
            r#"{"key": "limits.max_payload_bytes"}"#,
        )
        .unwrap();
    assert_eq!(out["key"], "limits.max_payload_bytes");
    let e = n
        .dispatch(&admin, "policy.explain", r#"{"key": "no.such_key"}"#)
        .unwrap_err();
    assert_eq!(e.code(), "ExplainFailed");
    // In-memory policy cannot be reloaded from a directory.
    assert_eq!(
        n.dispatch(&admin, "policy.reload", "{}")
            .unwrap_err()
            .code(),
        "ReloadFailed"
    );
}

#[test]
fn shutdown_stops_calls_and_is_idempotent() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    n.invoke::<Ping>(&alice, 1).unwrap();
    let clone = n.clone();
    n.shutdown().unwrap();
    n.shutdown().unwrap();
    assert!(clone.is_shut_down());
    assert!(matches!(
        clone.invoke::<Ping>(&alice, 1),
        Err(DispatchError::ShuttingDown)
    ));
    assert!(matches!(
        clone.dispatch(&alice, "notes.ping", "1"),
        Err(DispatchError::ShuttingDown)
    ));
}

#[test]
fn build_errors_are_clear_and_start_nothing() {
    let e = Nodus::builder()
        .master_key(master())
        .policy(sources(false))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::NoStorage), "{e}");
    let e = Nodus::builder()
        .in_memory()
        .policy(sources(false))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::MissingMasterKey), "{e}");
    assert!(e.to_string().contains("master key"));
    let e = Nodus::builder()
        .in_memory()
        .master_key(master())
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::MissingPolicy), "{e}");
    let bad = nodus_core::PolicySources::new().with_system("system.toml", "[nope]\nx = 1\n");
    let e = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(bad)
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::Policy(_)), "{e}");
    assert!(
        e.to_string()
            .contains("system.toml:1: system layer: `nope`: unknown key"),
        "{e}"
    );
    let e = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(false))
        .command(CreateNote)
        .json_command(nodus_core::CommandSpec::new("notes.create"), |_, _| {
            Ok(serde_json::Value::Null)
        })
        .build()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("`notes.create` is already registered"),
        "{e}"
    );
    let e = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(false))
        .json_command(
            nodus_core::CommandSpec::new("x.secret").min_label("COSMIC"),
            |_, _| Ok(serde_json::Value::Null),
        )
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("`COSMIC`"), "{e}");
    let e = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy_dir("/definitely/not/here")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("/definitely/not/here"), "{e}");
}

#[test]
fn unbound_contexts_work_too() {
    let n = build_in_memory();
    let acme = tenant("acme");
    let s = n
        .subject(&acme, actor("alice"), &["editor"], "UNCLASSIFIED")
        .unwrap();
    let ctx = Context::new(acme, s, "s");
    assert_eq!(n.invoke::<Ping>(&ctx, 41).unwrap(), 42);
    for _ in 0..2 {
        n.invoke::<ExportNotes>(&ctx, ()).unwrap();
    }
    assert_eq!(
        denial(n.invoke::<ExportNotes>(&ctx, ()).unwrap_err()),
        DenyReason::RateLimited
    );
}

#[test]
fn data_dir_persists_the_audit_log_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        Nodus::builder()
            .data_dir(dir.path())
            .master_key(master())
            .policy(sources(false))
            .command(Ping)
            .build()
            .unwrap()
    };
    let n = build();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    for i in 0..10 {
        n.invoke::<Ping>(&alice, i).unwrap();
    }
    let size1 = n.verify_audit().unwrap().size;
    drop(alice);
    drop(n); // the last handle: drains, flushes, joins
    assert!(dir.path().join(nodus_core::VAULT_FILE).exists());
    assert!(dir.path().join(nodus_core::AUDIT_FILE).exists());
    let n = build();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    n.invoke::<Ping>(&alice, 1).unwrap();
    let report = n.verify_audit().unwrap();
    assert!(report.valid, "{report:?}");
    assert!(report.size > size1);
    // The wrong master key is refused.
    drop(alice);
    drop(n);
    let e = Nodus::builder()
        .data_dir(dir.path())
        .master_key(nodus_core::MasterKey::from_bytes([8u8; 32]))
        .policy(sources(false))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::Vault(_)), "{e}");
}

#[test]
fn invoking_an_unregistered_type_is_an_audited_unknown_command() {
    // An instance without `ReadReport`.
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(false))
        .command(Ping)
        .build()
        .unwrap();
    let root = ctx(&n, "acme", "root", &["admin"], "TOP SECRET//CRYPTO");
    let e = n.invoke::<ReadReport>(&root, ()).unwrap_err();
    assert_eq!(e.code(), "UnknownCommand");
    assert!(
        matches!(&e, DispatchError::UnknownCommand(name) if name.ends_with("ReadReport")),
        "{e:?}"
    );
    let (cmd, outcome, reason) = last_record(&n);
    assert!(cmd.ends_with("ReadReport"), "{cmd}");
    assert_eq!(
        (outcome, reason.as_deref()),
        (Outcome::Error, Some("UnknownCommand"))
    );
}

#[test]
fn a_payload_exactly_at_the_limit_is_parsed_one_byte_more_is_not() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    let wrap = |len: usize| {
        let prefix = r#"{"title":""#;
        let suffix = r#""}"#;
        format!(
            "{prefix}{}{suffix}",
            "x".repeat(len - prefix.len() - suffix.len())
        )
    };
    let at = wrap(256);
    assert_eq!(at.len(), 256);
    assert!(n.dispatch(&alice, "notes.create", &at).is_ok());
    let over = wrap(257);
    let e = n.dispatch(&alice, "notes.create", &over).unwrap_err();
    assert!(
        matches!(
            e,
            DispatchError::PayloadTooLarge {
                size: 257,
                limit: 256,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.to_json()["code"], "PayloadTooLarge");
}

#[test]
fn json_handlers_share_the_guard_the_errors_and_the_audit() {
    use nodus_core::registry::commands::JsonCallError;
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(false))
        .json_command(
            nodus_core::CommandSpec::new("notes.search")
                .permission("notes.read")
                .min_label("CONFIDENTIAL"),
            |ctx, payload| match payload {
                "\"boom\"" => Err(JsonCallError::Handler(nodus_core::CommandError::new(
                    "SearchFailed",
                    "index offline",
                ))),
                "1" => Err(JsonCallError::InvalidInput {
                    path: "query".into(),
                    message: "expected a string".into(),
                }),
                _ => Ok(json!({ "tenant": ctx.tenant().as_str(), "hits": 0 })),
            },
        )
        .build()
        .unwrap();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "CONFIDENTIAL");
    assert_eq!(
        n.dispatch(&bob, "notes.search", "\"q\"").unwrap(),
        json!({"tenant": "acme", "hits": 0})
    );
    let low = ctx(&n, "acme", "lou", &["viewer"], "UNCLASSIFIED");
    assert_eq!(
        denial(n.dispatch(&low, "notes.search", "\"q\"").unwrap_err()),
        DenyReason::ClearanceTooLow
    );
    let e = n.dispatch(&bob, "notes.search", "\"boom\"").unwrap_err();
    assert_eq!(e.code(), "SearchFailed");
    let e = n.dispatch(&bob, "notes.search", "1").unwrap_err();
    assert_eq!(e.to_json()["path"], "query");
    let got: Vec<Option<String>> = last_records(&n, 4).into_iter().map(|r| r.2).collect();
    assert_eq!(
        got,
        vec![
            None,
            Some("ClearanceTooLow".into()),
            Some("SearchFailed".into()),
            Some("InvalidInput".into())
        ]
    );
}

/// Contexts bind a per-tenant slot, not a snapshot: a reload that adds or removes a tenant takes
/// effect on contexts already handed out.
#[test]
fn a_reload_adding_or_removing_a_tenant_reaches_live_contexts() {
    let n = build_in_memory();
    let s = common::unknown_tenant_subject(&n, "initech", "ivy", &["editor"]);
    let ivy = n.context(&tenant("initech"), s, "s");
    assert_eq!(
        denial(n.invoke::<Ping>(&ivy, 1).unwrap_err()),
        DenyReason::UnknownTenant
    );
    let with_initech = sources(false).with_tenant(
        tenant("initech"),
        "tenants/initech.toml",
        &tenant_toml(false),
    );
    let report = n.reload_policy(with_initech).unwrap();
    assert_eq!(report.added, vec![tenant("initech")]);
    assert_eq!(n.invoke::<Ping>(&ivy, 1).unwrap(), 2);
    let report = n.reload_policy(sources(false)).unwrap();
    assert_eq!(report.removed, vec![tenant("initech")]);
    assert_eq!(
        denial(n.invoke::<Ping>(&ivy, 1).unwrap_err()),
        DenyReason::UnknownTenant
    );
}

#[test]
fn denials_render_for_a_json_host() {
    let n = build_in_memory();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let e = n
        .dispatch(&bob, "notes.create", r#"{"title":"x"}"#)
        .unwrap_err();
    assert_eq!(
        e.to_json(),
        json!({
            "code": "MissingPermission",
            "message": "`notes.create` denied: MissingPermission"
        })
    );
    let d = e.denial().unwrap();
    assert_eq!((&*d.command, d.retry_after), ("notes.create", None));
}
