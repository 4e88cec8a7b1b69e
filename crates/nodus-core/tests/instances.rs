//! Two `Nodus` instances in one process share nothing: policy, commands, rate state, audit log,
//! event bus and lifecycle are all per instance.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_core::{DenyReason, Nodus, PolicySources};

fn other_instance() -> Nodus {
    // Same tenants, but viewers may create notes here, and a different command set.
    Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(true))
        .command(CreateNote)
        .command(ExportNotes)
        .build()
        .unwrap()
}

#[test]
fn two_instances_share_no_state() {
    let a = build_in_memory();
    let b = other_instance();

    // Policy: the same subject gets different decisions.
    let bob_a = ctx(&a, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let bob_b = ctx(&b, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let note = || NewNote {
        title: "t".into(),
        tags: vec![],
    };
    assert_eq!(
        a.invoke::<CreateNote>(&bob_a, note()).unwrap_err().code(),
        "MissingPermission"
    );
    assert!(b.invoke::<CreateNote>(&bob_b, note()).is_ok());

    // A context bound by one instance is not trusted by the other: it is resolved against the
    // other instance's own policy.
    assert!(b.invoke::<CreateNote>(&bob_a, note()).is_ok());
    assert_eq!(
        a.invoke::<CreateNote>(&bob_b, note()).unwrap_err().code(),
        "MissingPermission"
    );

    // Commands: `reports.read` exists only in `a`.
    let alice_b = ctx(&b, "acme", "alice", &["editor"], "TOP SECRET//CRYPTO");
    assert_eq!(
        b.dispatch(&alice_b, "reports.read", "null")
            .unwrap_err()
            .code(),
        "UnknownCommand"
    );

    // Rate state: exhausting alice's strict class in `a` leaves `b` untouched.
    let alice_a = ctx(&a, "acme", "alice", &["editor"], "UNCLASSIFIED");
    for _ in 0..2 {
        a.invoke::<ExportNotes>(&alice_a, ()).unwrap();
    }
    assert_eq!(
        a.invoke::<ExportNotes>(&alice_a, ())
            .unwrap_err()
            .denial()
            .unwrap()
            .reason,
        DenyReason::RateLimited
    );
    assert!(b.invoke::<ExportNotes>(&alice_b, ()).is_ok());

    // Policy reload in one leaves the other's epoch alone.
    let epoch_b = b.policy().epoch();
    a.reload_policy(sources(true)).unwrap();
    assert_eq!(b.policy().epoch(), epoch_b);
    let reload_b = PolicySources::new().with_system("system.toml", SYSTEM);
    assert!(b.reload_policy(reload_b).is_ok());
    assert!(a.policy().snapshot(&tenant("acme")).is_some());
    assert!(b.policy().snapshot(&tenant("acme")).is_none());

    // Audit logs are separate.
    let size_a = a.verify_audit().unwrap().size;
    let size_b = b.verify_audit().unwrap().size;
    assert_ne!(
        a.audit_log().public_key(),
        b.audit_log().public_key(),
        "each instance signs its own log with its own vault's key"
    );
    let before = b.audit_log().size().unwrap();
    a.invoke::<Ping>(&alice_a, 1).unwrap();
    a.flush_audit().unwrap();
    assert_eq!(b.audit_log().size().unwrap(), before);
    assert!(a.audit_log().size().unwrap() > size_a);
    assert!(size_b > 0);

    // Event buses are separate.
    let sub_b = b
        .events()
        .subscribe("*", nodus_core::registry::events::Scope::AllTenants, 16)
        .unwrap();
    a.reload_policy(sources(false)).unwrap();
    assert!(sub_b.try_recv().is_err());

    // Lifecycle: shutting one down leaves the other running.
    a.shutdown().unwrap();
    assert!(a.invoke::<Ping>(&alice_a, 1).is_err());
    b.reload_policy(sources(true)).unwrap();
    assert!(b.invoke::<CreateNote>(&alice_b, note()).is_ok());
    assert!(b.verify_audit().unwrap().valid);
}

/// Extensions are per instance too: a trusted issuer, a loaded plugin and component visibility in
/// one instance mean nothing in another, and their events stay on their own bus.
#[test]
fn two_instances_share_no_extensions() {
    use ed25519_dalek::SigningKey;
    use nodus_core::registry::components::ComponentSpec;
    use nodus_core::registry::events::Scope;
    use nodus_core::registry::plugins::{DenyReason, PluginManifest, SignedManifest};

    let doc = format!(
        "{}\n[plugins]\nallowed = [\"kv\"]\n[ui]\nallowed_components = [\"note-editor\"]\n",
        tenant_toml(false)
    );
    let policy = || {
        PolicySources::new()
            .with_system("system.toml", SYSTEM)
            .with_tenant(tenant("acme"), "tenants/acme.toml", &doc)
    };
    let a = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(policy())
        .component(ComponentSpec::new(
            "note-editor",
            "editor",
            serde_json::json!({}),
        ))
        .build()
        .unwrap();
    let b = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(policy())
        .build()
        .unwrap();
    let acme = tenant("acme");
    assert_eq!(a.components().visible(&acme).len(), 1);
    assert!(b.components().visible(&acme).is_empty());

    let issuer = SigningKey::from_bytes(&[61; 32]);
    a.trust_store()
        .add_issuer(&acme, &issuer.verifying_key().to_bytes(), None, None)
        .unwrap();
    let kv = SignedManifest::sign(
        &PluginManifest::new("kv", "1.0.0", acme.clone(), ["notes.read"]),
        &issuer,
    )
    .unwrap();
    let on_b = b.events().subscribe("*", Scope::AllTenants, 16).unwrap();
    a.load_plugin(&acme, &kv).unwrap();
    assert!(a.plugins().is_active(&acme, "kv"));
    assert!(b.plugins().list(&acme).is_empty());
    assert_eq!(
        b.load_plugin(&acme, &kv).unwrap_err().reason,
        DenyReason::UnknownIssuer,
        "b does not trust what a trusts"
    );
    let b_topics: Vec<String> = on_b.drain().iter().map(|e| e.topic.to_string()).collect();
    assert_eq!(b_topics, vec!["plugin.denied"], "only b's own refusal");
}
