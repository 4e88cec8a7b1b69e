//! Plugins and UI components through the public API: every refusal reason, quarantine that keeps
//! and lists, reinstatement, per-tenant isolation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use ed25519_dalek::SigningKey;
use nodus_policy::TenantId;
use nodus_registry::components::{ComponentError, ComponentRegistry, ComponentSpec};
use nodus_registry::plugins::{
    ChangeKind, DenyReason, PluginManifest, PluginRegistry, PluginState, SignedManifest,
};
use nodus_security::vault::TrustStore;
use serde_json::json;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn yes(_: &str) -> bool {
    true
}

/// A trust store where `acme` trusts the issuer `[1; 32]`; returns it with that key and its id.
fn trust() -> (TrustStore, SigningKey, String) {
    let trust = TrustStore::in_memory().unwrap();
    let key = SigningKey::from_bytes(&[1; 32]);
    let id = trust
        .add_issuer(&t("acme"), &key.verifying_key().to_bytes(), None, None)
        .unwrap();
    (trust, key, id)
}

fn signed(id: &str, version: &str, tenant: &str, key: &SigningKey) -> SignedManifest {
    SignedManifest::sign(
        &PluginManifest::new(id, version, t(tenant), ["notes.read"]),
        key,
    )
    .unwrap()
}

fn refusal(
    reg: &PluginRegistry,
    s: &SignedManifest,
    trust: &TrustStore,
    allowed: &dyn Fn(&str) -> bool,
) -> DenyReason {
    let d = reg.load(&t("acme"), s, trust, allowed).unwrap_err();
    let text = d.to_string();
    assert!(text.starts_with("plugin `"), "{text}");
    assert!(text.contains(d.reason.code()), "{text}");
    d.reason
}

#[test]
fn every_refusal_has_its_stable_reason() {
    let (trust, key, _) = trust();
    let reg = PluginRegistry::new();
    let good = signed("kv", "1.0.0", "acme", &key);

    // InvalidManifest: not JSON, unknown fields, bad id, bad version, bad capability.
    let mut not_json = good.clone();
    not_json.manifest = "{not json".into();
    assert_eq!(
        refusal(&reg, &not_json, &trust, &yes),
        DenyReason::InvalidManifest
    );
    let mut unknown_field = good.clone();
    unknown_field.manifest = good.manifest.replacen('{', r#"{"sandbox":"none","#, 1);
    assert_eq!(
        refusal(&reg, &unknown_field, &trust, &yes),
        DenyReason::InvalidManifest
    );
    for (id, version, cap) in [
        ("-kv", "1.0.0", "notes.read"),
        ("kv", "1.0", "notes.read"),
        ("kv", "01.0.0", "notes.read"),
        ("kv", "1.0.0-", "notes.read"),
        ("kv", "1.0.0", "Notes.Read"),
        ("kv", "1.0.0", "notes..read"),
    ] {
        let m = PluginManifest::new(id, version, t("acme"), [cap]);
        assert!(m.validate().is_err(), "{id} {version} {cap}");
        let s = SignedManifest::sign(&m, &key).unwrap();
        assert_eq!(
            refusal(&reg, &s, &trust, &yes),
            DenyReason::InvalidManifest,
            "{id} {version} {cap}"
        );
    }
    assert!(
        PluginManifest::new("kv", "1.0.0-rc.1", t("acme"), ["a.b"])
            .validate()
            .is_ok()
    );

    // TenantMismatch: issued for globex, loaded by acme.
    assert_eq!(
        refusal(&reg, &signed("kv", "1.0.0", "globex", &key), &trust, &yes),
        DenyReason::TenantMismatch
    );
    // UnknownIssuer: a key acme never trusted, or one only globex trusts.
    let stranger = SigningKey::from_bytes(&[2; 32]);
    assert_eq!(
        refusal(
            &reg,
            &signed("kv", "1.0.0", "acme", &stranger),
            &trust,
            &yes
        ),
        DenyReason::UnknownIssuer
    );
    trust
        .add_issuer(
            &t("globex"),
            &stranger.verifying_key().to_bytes(),
            None,
            None,
        )
        .unwrap();
    assert_eq!(
        refusal(
            &reg,
            &signed("kv", "1.0.0", "acme", &stranger),
            &trust,
            &yes
        ),
        DenyReason::UnknownIssuer
    );
    // BadSignature: tampered text, a signature that is not base64, another key's signature
    // under the trusted key id.
    let mut tampered = good.clone();
    tampered.manifest = good.manifest.replace("notes.read", "notes.write");
    assert_eq!(
        refusal(&reg, &tampered, &trust, &yes),
        DenyReason::BadSignature
    );
    let mut not_b64 = good.clone();
    not_b64.signature = "!!!".into();
    assert_eq!(
        refusal(&reg, &not_b64, &trust, &yes),
        DenyReason::BadSignature
    );
    let mut swapped = signed("kv", "1.0.0", "acme", &stranger);
    swapped.key_id = good.key_id.clone();
    assert_eq!(
        refusal(&reg, &swapped, &trust, &yes),
        DenyReason::BadSignature
    );
    // NotYetValid / Expired: the issuer's validity window.
    let windowed = TrustStore::in_memory().unwrap();
    let far_future = u64::MAX / 2;
    windowed
        .add_issuer(
            &t("acme"),
            &key.verifying_key().to_bytes(),
            Some(far_future),
            None,
        )
        .unwrap();
    assert_eq!(
        refusal(&reg, &good, &windowed, &yes),
        DenyReason::NotYetValid
    );
    let expired = TrustStore::in_memory().unwrap();
    expired
        .add_issuer(&t("acme"), &key.verifying_key().to_bytes(), None, Some(1))
        .unwrap();
    assert_eq!(refusal(&reg, &good, &expired, &yes), DenyReason::Expired);
    // NotAllowedByPolicy: trusted and valid, but `plugins.allowed` does not list it.
    assert_eq!(
        refusal(&reg, &good, &trust, &|id: &str| id == "markdown"),
        DenyReason::NotAllowedByPolicy
    );
    // Nothing refused was registered.
    assert!(reg.list(&t("acme")).is_empty());
    assert!(reg.tenants().is_empty());
}

#[test]
fn revocation_and_policy_quarantine_then_reinstate() {
    let (trust, key, issuer) = trust();
    let reg = PluginRegistry::new();
    let kv = signed("kv", "1.0.0", "acme", &key);
    reg.load(&t("acme"), &kv, &trust, &yes).unwrap();
    let held = reg.list(&t("acme"));

    // Policy stops allowing it: quarantined, kept, listed with the reason.
    let changes = reg.revalidate(&t("acme"), &trust, &|_: &str| false);
    assert_eq!(
        changes[0].change,
        ChangeKind::Quarantined {
            reason: DenyReason::NotAllowedByPolicy
        }
    );
    assert!(!reg.is_active(&t("acme"), "kv"));
    assert_eq!(
        reg.get(&t("acme"), "kv").unwrap().state,
        PluginState::Quarantined {
            reason: DenyReason::NotAllowedByPolicy
        }
    );
    assert_eq!(
        held[0].state,
        PluginState::Active,
        "earlier reads are snapshots"
    );
    // Loading the same version again once policy allows it reinstates it.
    assert_eq!(
        reg.load(&t("acme"), &kv, &trust, &yes).unwrap().change,
        ChangeKind::Reinstated
    );
    assert!(reg.is_active(&t("acme"), "kv"));
    // Revoked issuer: quarantined with that reason; a load is refused.
    trust.revoke(&t("acme"), &issuer).unwrap();
    let changes = reg.revalidate(&t("acme"), &trust, &yes);
    assert_eq!(
        changes[0].change,
        ChangeKind::Quarantined {
            reason: DenyReason::Revoked
        }
    );
    assert_eq!(
        reg.load(&t("acme"), &kv, &trust, &yes).unwrap_err().reason,
        DenyReason::Revoked
    );
    assert_eq!(reg.list(&t("acme")).len(), 1);
    // Unchanged state: revalidation reports nothing.
    assert!(reg.revalidate(&t("acme"), &trust, &yes).is_empty());
}

#[test]
fn revalidation_touches_only_its_tenant() {
    let trust = TrustStore::in_memory().unwrap();
    let key = SigningKey::from_bytes(&[3; 32]);
    for tenant in ["acme", "globex"] {
        trust
            .add_issuer(&t(tenant), &key.verifying_key().to_bytes(), None, None)
            .unwrap();
    }
    let reg = PluginRegistry::new();
    reg.load(
        &t("acme"),
        &signed("kv", "1.0.0", "acme", &key),
        &trust,
        &yes,
    )
    .unwrap();
    reg.load(
        &t("globex"),
        &signed("kv", "1.0.0", "globex", &key),
        &trust,
        &yes,
    )
    .unwrap();
    let changes = reg.revalidate(&t("acme"), &trust, &|_: &str| false);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].tenant, t("acme"));
    assert!(!reg.is_active(&t("acme"), "kv"));
    assert!(reg.is_active(&t("globex"), "kv"));
    assert_eq!(reg.tenants(), vec![t("acme"), t("globex")]);
}

#[test]
fn component_refusals_and_per_tenant_visibility() {
    let ui = ComponentRegistry::new();
    ui.register(ComponentSpec::new(
        "note-editor",
        "editor",
        json!({"type": "object"}),
    ))
    .unwrap();
    ui.register(ComponentSpec::new("admin-panel", "admin", json!({})))
        .unwrap();
    for (spec, expected) in [
        (
            ComponentSpec::new("note-editor", "viewer", json!({})),
            ComponentError::Duplicate("note-editor".into()),
        ),
        (
            ComponentSpec::new("Note Editor", "editor", json!({})),
            ComponentError::InvalidId("Note Editor".into()),
        ),
        (
            ComponentSpec::new(&"x".repeat(65), "editor", json!({})),
            ComponentError::InvalidId("x".repeat(65)),
        ),
        (
            ComponentSpec::new("chart", "", json!({})),
            ComponentError::EmptyCategory("chart".into()),
        ),
        (
            ComponentSpec::new("chart", "viewer", json!("not a schema")),
            ComponentError::SchemaNotObject("chart".into()),
        ),
    ] {
        let e = ui.register(spec).unwrap_err();
        assert_eq!(e, expected);
        assert!(e.to_string().contains('`'), "{e}");
    }
    assert_eq!(ui.all().len(), 2);

    // Nothing is visible before a tenant's policy is applied.
    assert!(ui.visible(&t("acme")).is_empty());
    ui.revalidate(&t("acme"), &|id: &str| id == "note-editor");
    ui.revalidate(&t("globex"), &yes);
    assert!(ui.is_allowed(&t("acme"), "note-editor"));
    assert!(!ui.is_allowed(&t("acme"), "admin-panel"));
    assert_eq!(ui.quarantined(&t("acme")), vec!["admin-panel".to_string()]);
    assert_eq!(ui.visible(&t("globex")).len(), 2);
    assert!(ui.quarantined(&t("globex")).is_empty());
    // A policy that no longer allows it: hidden for that tenant only, still registered.
    let changes = ui.revalidate(&t("acme"), &|_: &str| false);
    assert_eq!(changes.len(), 1);
    assert!(changes[0].quarantined);
    assert!(ui.visible(&t("acme")).is_empty());
    assert_eq!(ui.visible(&t("globex")).len(), 2);
    assert_eq!(ui.all().len(), 2);
    // Allowed ids that are not registered are ignored.
    ui.revalidate(&t("acme"), &|id: &str| id == "ghost");
    assert!(ui.visible(&t("acme")).is_empty());
}
