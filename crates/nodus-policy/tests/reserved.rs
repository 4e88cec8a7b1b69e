//! Permissions under `system.` (acts whose effect crosses tenants) are granted only by the system
//! layer: a tenant or user layer naming one is a validation error, and a wildcard a tenant or user
//! layer sets never matches one — on the compiled bitset path and on the slow path alike.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_policy::{
    ActorId, Label, Layer, PolicyError, PolicyErrorKind, PolicySources, PolicyStore,
    RESERVED_PERMISSION_PREFIX, Subject, TenantId, is_reserved_permission,
};

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn a(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn errors(sources: PolicySources) -> Vec<PolicyError> {
    PolicyStore::new(sources).unwrap_err().errors().to_vec()
}

fn reserved(e: &PolicyError) -> (&str, &str) {
    match &e.kind {
        PolicyErrorKind::ReservedPermission { role, pattern } => (role.as_str(), pattern.as_str()),
        other => panic!("expected ReservedPermission, got {other:?} ({e})"),
    }
}

#[test]
fn the_prefix_is_published() {
    assert_eq!(RESERVED_PERMISSION_PREFIX, "system.");
    assert!(is_reserved_permission("system.policy.reload"));
    assert!(is_reserved_permission("system.audit.verify"));
    assert!(!is_reserved_permission("system"));
    assert!(!is_reserved_permission("systems.x"));
    assert!(!is_reserved_permission("policy.reload"));
    assert!(!is_reserved_permission("System.policy.reload"));
}

#[test]
fn a_tenant_granting_a_system_permission_is_an_error_naming_file_layer_role_and_pattern() {
    let s = PolicySources::new().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "[rbac.roles]\nviewer = [\"notes.read\"]\nadmin = [\"notes.*\", \"system.policy.reload\"]\nops = [\"system.*\", \"system.audit.*\"]\n",
    );
    let errs = errors(s);
    type Row<'a> = (
        &'a str,
        Layer,
        Option<&'a str>,
        Option<u32>,
        (&'a str, &'a str),
    );
    let got: Vec<Row<'_>> = errs
        .iter()
        .map(|e| {
            (
                e.file.as_str(),
                e.layer,
                e.key.as_deref(),
                e.line,
                reserved(e),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "tenants/acme.toml",
                Layer::Tenant,
                Some("rbac.roles"),
                Some(3),
                ("admin", "system.policy.reload")
            ),
            (
                "tenants/acme.toml",
                Layer::Tenant,
                Some("rbac.roles"),
                Some(4),
                ("ops", "system.*")
            ),
            (
                "tenants/acme.toml",
                Layer::Tenant,
                Some("rbac.roles"),
                Some(4),
                ("ops", "system.audit.*")
            ),
        ],
        "{errs:#?}"
    );
    let text = errs[0].to_string();
    for part in [
        "tenants/acme.toml:3",
        "tenant layer",
        "`rbac.roles`",
        "`admin`",
        "`system.policy.reload`",
        "system layer",
    ] {
        assert!(text.contains(part), "{part} missing from: {text}");
    }
}

#[test]
fn a_user_layer_role_map_may_not_grant_one_either() {
    // A host role map a user may set: the same rule applies to every role_map key.
    let schema = "[keys.\"app.roles\"]\ntype = \"role_map\"\nscope = \"user\"\n";
    let s = PolicySources::new()
        .with_schema("schema.toml", schema)
        .with_tenant(t("acme"), "tenants/acme.toml", "")
        .with_user(
            t("acme"),
            a("alice"),
            "users/acme/alice.toml",
            "[app.roles]\nme = [\"system.keys.rotate\"]\n",
        );
    let errs = errors(s);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].file.as_str(), errs[0].layer, errs[0].key.as_deref()),
        ("users/acme/alice.toml", Layer::User, Some("app.roles"))
    );
    assert_eq!(reserved(&errs[0]), ("me", "system.keys.rotate"));
    // The system layer may set it.
    let ok = PolicySources::new()
        .with_schema("schema.toml", schema)
        .with_system("system.toml", "[app.roles]\nops = [\"system.*\"]\n");
    assert!(PolicyStore::new(ok).is_ok());
}

fn subject(store: &PolicyStore, tenant: &str, roles: &[&str]) -> Subject {
    let snap = store.snapshot(&t(tenant)).unwrap();
    Subject::new(
        t(tenant),
        a("x"),
        store.symbols().role_set(roles),
        Label::BOTTOM,
        snap.label_scheme(),
    )
}

fn mixed() -> PolicySources {
    PolicySources::new()
        .with_system(
            "system.toml",
            "[rbac.roles]\nroot = [\"*\"]\nops = [\"system.*\"]\nreloader = [\"system.policy.reload\"]\n",
        )
        // acme sets its own roles: its `*` is a tenant-layer wildcard.
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[rbac.roles]\nroot = [\"*\"]\nops = [\"*\", \"policy.*\"]\n",
        )
        // ops-tenant sets no roles: it inherits the system layer's.
        .with_tenant(t("opsco"), "tenants/opsco.toml", "")
}

/// Decisions for every (tenant, role, permission) of interest.
fn decisions(store: &PolicyStore) -> Vec<(&'static str, &'static str, &'static str, bool)> {
    let mut out = Vec::new();
    for tenant in ["acme", "opsco"] {
        let snap = store.snapshot(&t(tenant)).unwrap();
        for role in ["root", "ops", "reloader"] {
            for perm in [
                "system.policy.reload",
                "system.audit.verify",
                "policy.reload",
            ] {
                let p = store.symbols().permission(perm);
                let s = subject(store, tenant, &[role]);
                out.push((tenant, role, perm, snap.permits(&s, p)));
            }
        }
    }
    out
}

fn expected() -> Vec<(&'static str, &'static str, &'static str, bool)> {
    vec![
        // acme: tenant-layer `*` never reaches `system.`; ordinary permissions are granted.
        ("acme", "root", "system.policy.reload", false),
        ("acme", "root", "system.audit.verify", false),
        ("acme", "root", "policy.reload", true),
        ("acme", "ops", "system.policy.reload", false),
        ("acme", "ops", "system.audit.verify", false),
        ("acme", "ops", "policy.reload", true),
        ("acme", "reloader", "system.policy.reload", false),
        ("acme", "reloader", "system.audit.verify", false),
        ("acme", "reloader", "policy.reload", false),
        // opsco: the roles come from the system layer, whose `*` and `system.*` do match.
        ("opsco", "root", "system.policy.reload", true),
        ("opsco", "root", "system.audit.verify", true),
        ("opsco", "root", "policy.reload", true),
        ("opsco", "ops", "system.policy.reload", true),
        ("opsco", "ops", "system.audit.verify", true),
        ("opsco", "ops", "policy.reload", false),
        ("opsco", "reloader", "system.policy.reload", true),
        ("opsco", "reloader", "system.audit.verify", false),
        ("opsco", "reloader", "policy.reload", false),
    ]
}

#[test]
fn tenant_wildcards_never_match_system_permissions_on_the_slow_path() {
    // Every permission is interned after the snapshots were compiled: the slow path decides.
    let store = PolicyStore::new(mixed()).unwrap();
    assert_eq!(decisions(&store), expected());
    // Unknown tenants under `system_defaults` get the system snapshot, whose roles the system
    // layer set: its `*` reaches reserved permissions.
    let s = PolicySources::new().with_system(
        "system.toml",
        "[tenancy]\nunknown_tenants = \"system_defaults\"\n[rbac.roles]\nroot = [\"*\"]\n",
    );
    let store = PolicyStore::new(s).unwrap();
    let snap = store.snapshot(&t("nobody")).unwrap();
    let subject = Subject::new(
        t("nobody"),
        a("x"),
        store.symbols().role_set(["root"]),
        Label::BOTTOM,
        snap.label_scheme(),
    );
    assert!(snap.permits(&subject, store.symbols().permission("system.policy.reload")));
}

#[test]
fn tenant_wildcards_never_match_system_permissions_in_the_compiled_bitsets() {
    let store = PolicyStore::new(mixed()).unwrap();
    for perm in [
        "system.policy.reload",
        "system.audit.verify",
        "policy.reload",
    ] {
        store.symbols().permission(perm);
    }
    for role in ["root", "ops", "reloader"] {
        store.symbols().role(role);
    }
    assert!(store.recompile() > 0);
    assert!(store.snapshot(&t("acme")).unwrap().is_current());
    assert_eq!(decisions(&store), expected());
    // The user snapshot of a user without a file is the tenant's; with a file, it is rebuilt from
    // the same tenant-set roles and decides the same way.
    let with_user = mixed().with_user(
        t("acme"),
        a("alice"),
        "users/acme/alice.toml",
        "[observability]\nlevel = \"debug\"\n",
    );
    store.reload(with_user).unwrap();
    let snap = store.user_snapshot(&t("acme"), &a("alice")).unwrap();
    let s = subject(&store, "acme", &["root"]);
    assert!(!snap.permits(&s, store.symbols().permission("system.policy.reload")));
    assert!(snap.permits(&s, store.symbols().permission("policy.reload")));
}
