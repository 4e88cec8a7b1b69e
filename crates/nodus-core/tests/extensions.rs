//! Plugins and UI components through the public API: signed manifests checked against the trust
//! store and `plugins.allowed`, component visibility from `ui.allowed_components`, quarantine on
//! reload, and the audit trail and events they leave.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use nodus_core::registry::components::ComponentSpec;
use nodus_core::registry::events::Scope;
use nodus_core::registry::plugins::{ChangeKind, DenyReason, PluginManifest, SignedManifest};
use nodus_core::security::audit::Outcome;
use nodus_core::{Nodus, PolicySources};

fn sources(allowed_plugins: &str, components: &str) -> PolicySources {
    let doc = format!(
        "{}\n[plugins]\nallowed = {allowed_plugins}\n[ui]\nallowed_components = {components}\n",
        tenant_toml(false)
    );
    PolicySources::new()
        .with_system("system.toml", SYSTEM)
        .with_tenant(tenant("acme"), "tenants/acme.toml", &doc)
}

fn build(src: PolicySources) -> Nodus {
    Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(src)
        .component(ComponentSpec::new(
            "note-editor",
            "editor",
            serde_json::json!({"type": "object"}),
        ))
        .component(ComponentSpec::new(
            "admin-panel",
            "admin",
            serde_json::json!({}),
        ))
        .build()
        .unwrap()
}

#[test]
fn plugins_are_verified_allowed_audited_and_quarantined() {
    let n = build(sources(r#"["markdown"]"#, r#"["note-editor"]"#));
    let acme = tenant("acme");
    let issuer = SigningKey::from_bytes(&[21; 32]);
    n.trust_store()
        .add_issuer(&acme, &issuer.verifying_key().to_bytes(), None, None)
        .unwrap();
    let events = n
        .events()
        .subscribe("plugin.*", Scope::Tenant(acme.clone()), 16)
        .unwrap();

    let md = SignedManifest::sign(
        &PluginManifest::new("markdown", "1.0.0", acme.clone(), ["notes.read"]),
        &issuer,
    )
    .unwrap();
    assert_eq!(
        n.load_plugin(&acme, &md).unwrap().change,
        ChangeKind::Loaded
    );
    assert!(n.plugins().is_active(&acme, "markdown"));

    let kv = SignedManifest::sign(
        &PluginManifest::new("kv", "1.0.0", acme.clone(), ["notes.write"]),
        &issuer,
    )
    .unwrap();
    assert_eq!(
        n.load_plugin(&acme, &kv).unwrap_err().reason,
        DenyReason::NotAllowedByPolicy
    );
    let stranger = SignedManifest::sign(
        &PluginManifest::new("markdown", "1.0.0", acme.clone(), ["x"]),
        &SigningKey::from_bytes(&[22; 32]),
    )
    .unwrap();
    assert_eq!(
        n.load_plugin(&acme, &stranger).unwrap_err().reason,
        DenyReason::UnknownIssuer
    );

    // A reload that drops the plugin from policy quarantines it (kept, listed, inactive).
    n.reload_policy(sources("[]", r#"["note-editor"]"#))
        .unwrap();
    assert!(!n.plugins().is_active(&acme, "markdown"));
    assert_eq!(n.plugins().list(&acme).len(), 1);

    n.flush_audit().unwrap();
    let kinds: Vec<(String, Outcome, Option<String>)> = n
        .audit_log()
        .tail(100)
        .unwrap()
        .into_iter()
        .filter(|r| r.record.kind.starts_with("plugin."))
        .map(|r| {
            (
                r.record.kind.to_string(),
                r.record.outcome,
                r.record.reason.map(|x| x.to_string()),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("plugin.loaded".into(), Outcome::Allowed, None),
            (
                "plugin.denied".into(),
                Outcome::Denied,
                Some("NotAllowedByPolicy".into())
            ),
            (
                "plugin.denied".into(),
                Outcome::Denied,
                Some("UnknownIssuer".into())
            ),
            (
                "plugin.quarantined".into(),
                Outcome::Denied,
                Some("NotAllowedByPolicy".into())
            ),
        ]
    );
    let topics: Vec<String> = (0..4)
        .map(|_| {
            events
                .recv_timeout(Duration::from_secs(1))
                .unwrap()
                .topic
                .to_string()
        })
        .collect();
    assert_eq!(
        topics,
        vec![
            "plugin.loaded",
            "plugin.denied",
            "plugin.denied",
            "plugin.quarantined"
        ]
    );
    assert!(n.verify_audit().unwrap().valid);
}

#[test]
fn components_follow_policy_and_reloads() {
    let n = build(sources("[]", r#"["note-editor"]"#));
    let acme = tenant("acme");
    let ids = |n: &Nodus| {
        n.components()
            .visible(&acme)
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&n), vec!["note-editor"]);
    assert_eq!(n.components().quarantined(&acme), vec!["admin-panel"]);
    n.reload_policy(sources("[]", r#"["note-editor", "admin-panel"]"#))
        .unwrap();
    assert_eq!(ids(&n), vec!["admin-panel", "note-editor"]);
    n.flush_audit().unwrap();
    assert!(
        n.audit_log()
            .tail(50)
            .unwrap()
            .iter()
            .any(|r| r.record.kind == "component.reinstated")
    );
    let e = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources("[]", "[]"))
        .component(ComponentSpec::new("Bad Id", "x", serde_json::json!({})))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("`Bad Id`"), "{e}");
}

fn plugin_rows(n: &Nodus) -> Vec<(String, Option<String>)> {
    n.flush_audit().unwrap();
    n.audit_log()
        .tail(200)
        .unwrap()
        .into_iter()
        .filter(|r| r.record.kind.starts_with("plugin."))
        .map(|r| {
            (
                r.record.kind.to_string(),
                r.record.reason.map(|x| x.to_string()),
            )
        })
        .collect()
}

#[test]
fn revocation_quarantines_on_revalidation_and_reinstatement_is_audited() {
    let n = build(sources(r#"["markdown"]"#, "[]"));
    let acme = tenant("acme");
    let issuer = SigningKey::from_bytes(&[31; 32]);
    let issuer_id = n
        .trust_store()
        .add_issuer(&acme, &issuer.verifying_key().to_bytes(), None, None)
        .unwrap();
    let md = SignedManifest::sign(
        &PluginManifest::new("markdown", "1.0.0", acme.clone(), ["notes.read"]),
        &issuer,
    )
    .unwrap();
    n.load_plugin(&acme, &md).unwrap();
    // Policy drops it, then allows it again: quarantined, then reinstated.
    n.reload_policy(sources("[]", "[]")).unwrap();
    assert!(!n.plugins().is_active(&acme, "markdown"));
    n.reload_policy(sources(r#"["markdown"]"#, "[]")).unwrap();
    assert!(n.plugins().is_active(&acme, "markdown"));
    // The issuer is revoked: the next revalidation (a reload) quarantines it with that reason,
    // and a new load is refused.
    n.trust_store().revoke(&acme, &issuer_id).unwrap();
    n.reload_policy(sources(r#"["markdown", "kv"]"#, "[]"))
        .unwrap();
    let info = n.plugins().get(&acme, "markdown").unwrap();
    assert_eq!(
        info.state,
        nodus_core::registry::plugins::PluginState::Quarantined {
            reason: DenyReason::Revoked
        }
    );
    assert_eq!(
        n.load_plugin(&acme, &md).unwrap_err().reason,
        DenyReason::Revoked
    );
    assert_eq!(
        plugin_rows(&n),
        vec![
            ("plugin.loaded".into(), None),
            (
                "plugin.quarantined".into(),
                Some("NotAllowedByPolicy".into())
            ),
            ("plugin.reinstated".into(), None),
            ("plugin.quarantined".into(), Some("Revoked".into())),
            ("plugin.denied".into(), Some("Revoked".into())),
        ]
    );
    assert!(n.verify_audit().unwrap().valid);
}

#[test]
fn manifests_for_another_tenant_and_tampered_ones_are_refused_and_audited() {
    let n = build(sources(r#"["markdown"]"#, "[]"));
    let acme = tenant("acme");
    let issuer = SigningKey::from_bytes(&[41; 32]);
    n.trust_store()
        .add_issuer(&acme, &issuer.verifying_key().to_bytes(), None, None)
        .unwrap();
    let for_globex = SignedManifest::sign(
        &PluginManifest::new("markdown", "1.0.0", tenant("globex"), ["notes.read"]),
        &issuer,
    )
    .unwrap();
    assert_eq!(
        n.load_plugin(&acme, &for_globex).unwrap_err().reason,
        DenyReason::TenantMismatch
    );
    let mut tampered = SignedManifest::sign(
        &PluginManifest::new("markdown", "1.0.0", acme.clone(), ["notes.read"]),
        &issuer,
    )
    .unwrap();
    tampered.manifest = tampered.manifest.replace("notes.read", "notes.admin");
    assert_eq!(
        n.load_plugin(&acme, &tampered).unwrap_err().reason,
        DenyReason::BadSignature
    );
    let mut garbage = tampered.clone();
    garbage.manifest = "{".into();
    assert_eq!(
        n.load_plugin(&acme, &garbage).unwrap_err().reason,
        DenyReason::InvalidManifest
    );
    assert!(n.plugins().list(&acme).is_empty());
    assert_eq!(
        plugin_rows(&n),
        vec![
            ("plugin.denied".into(), Some("TenantMismatch".into())),
            ("plugin.denied".into(), Some("BadSignature".into())),
            ("plugin.denied".into(), Some("InvalidManifest".into())),
        ]
    );
}

#[test]
fn extension_events_reach_only_their_tenant() {
    let two = |acme_plugins: &str| {
        sources(acme_plugins, r#"["note-editor"]"#).with_tenant(
            tenant("globex"),
            "tenants/globex.toml",
            &tenant_toml(false),
        )
    };
    let n = build(two(r#"["markdown"]"#));
    let acme = tenant("acme");
    let globex_sub = n
        .events()
        .subscribe("*", Scope::Tenant(tenant("globex")), 16)
        .unwrap();
    let acme_sub = n
        .events()
        .subscribe("plugin.*", Scope::Tenant(acme.clone()), 16)
        .unwrap();
    let issuer = SigningKey::from_bytes(&[51; 32]);
    n.trust_store()
        .add_issuer(&acme, &issuer.verifying_key().to_bytes(), None, None)
        .unwrap();
    let md = SignedManifest::sign(
        &PluginManifest::new("markdown", "1.0.0", acme.clone(), ["notes.read"]),
        &issuer,
    )
    .unwrap();
    n.load_plugin(&acme, &md).unwrap();
    n.reload_policy(two("[]")).unwrap();
    let acme_topics: Vec<String> = acme_sub
        .drain()
        .iter()
        .map(|e| e.topic.to_string())
        .collect();
    assert_eq!(acme_topics, vec!["plugin.loaded", "plugin.quarantined"]);
    // globex hears nothing: not acme's plugin events, and no `policy.reloaded` (only acme's
    // policy changed, and that event goes to acme alone).
    let globex_topics: Vec<String> = globex_sub
        .drain()
        .iter()
        .map(|e| e.topic.to_string())
        .collect();
    assert!(globex_topics.is_empty(), "{globex_topics:?}");
}

/// A tenant removed from policy has nothing visible, like a tenant that never had a policy
/// (`Nodus::revalidate_extensions` walks the tenants with components too).
#[test]
fn components_of_a_removed_tenant_are_hidden() {
    let with_globex = sources("[]", r#"["note-editor"]"#).with_tenant(
        tenant("globex"),
        "tenants/globex.toml",
        &format!(
            "{}\n[ui]\nallowed_components = [\"admin-panel\"]\n",
            tenant_toml(false)
        ),
    );
    let n = build(with_globex);
    let globex = tenant("globex");
    assert!(n.components().is_allowed(&globex, "admin-panel"));
    n.reload_policy(sources("[]", r#"["note-editor"]"#))
        .unwrap();
    assert!(n.policy().snapshot(&globex).is_none());
    assert!(
        n.components().visible(&globex).is_empty(),
        "globex has no policy any more but still sees {:?}",
        n.components().visible(&globex)
    );
}
