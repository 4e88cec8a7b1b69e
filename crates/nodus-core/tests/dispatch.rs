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
    let acme = tenant("acme");
    let s = n
        .subject(&acme, actor("mallory"), &["admin"], "UNCLASSIFIED")
        .unwrap();
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
    assert_eq!(
        denial(n.invoke::<ReadReport>(&alice, ()).unwrap_err()),
        DenyReason::Quarantined
    );
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
    assert!(n.invoke::<ReadReport>(&alice, ()).is_ok());
}

fn sources_for_restore() -> nodus_core::PolicySources {
    sources(false)
}

#[test]
fn every_outcome_is_audited_and_the_log_verifies() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "CONFIDENTIAL");
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let _ = n.invoke::<Ping>(&alice, 1); // allowed
    let _ = n.invoke::<CreateNote>(
        &bob,
        NewNote {
            title: "x".into(),
            tags: vec![],
        },
    ); // MissingPermission
    let _ = n.invoke::<ReadReport>(&alice, ()); // ClearanceTooLow
    let _ = n.dispatch(&alice, "nope.nope", "{}"); // UnknownCommand
    let _ = n.dispatch(&alice, "notes.create", "{"); // InvalidInput
    let _ = n.invoke::<CreateNote>(
        &alice,
        NewNote {
            title: String::new(),
            tags: vec![],
        },
    ); // EmptyTitle
    for _ in 0..3 {
        let _ = n.invoke::<ExportNotes>(&alice, ()); // allowed, allowed, RateLimited
    }
    let reasons: Vec<Option<String>> = last_records(&n, 9).into_iter().map(|r| r.2).collect();
    assert_eq!(
        reasons,
        vec![
            None,
            Some("MissingPermission".into()),
            Some("ClearanceTooLow".into()),
            Some("UnknownCommand".into()),
            Some("InvalidInput".into()),
            Some("EmptyTitle".into()),
            None,
            None,
            Some("RateLimited".into()),
        ]
    );
    let report = n.verify_audit().unwrap();
    assert!(report.valid, "{report:?}");
    assert!(report.size >= 9);
    // The built-in audit commands go through the same door.
    let admin = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    let v = n.dispatch(&admin, "audit.verify", "{}").unwrap();
    assert_eq!(v["valid"], true);
    let cp = n.dispatch(&admin, "audit.checkpoint", "null").unwrap();
    assert!(cp["note"].as_str().unwrap().contains("nodus.local/audit"));
    assert_eq!(
        denial(n.dispatch(&bob, "audit.verify", "{}").unwrap_err()),
        DenyReason::MissingPermission
    );
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
