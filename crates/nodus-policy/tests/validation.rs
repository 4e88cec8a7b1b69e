//! Every validation error, one negative test each, asserting the key, layer and file (and line)
//! named in the error; plus the sample policies and several problems reported at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_policy::{
    ActorId, Layer, PolicyError, PolicyErrorKind, PolicySources, PolicyStore, TenantId,
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

fn only(sources: PolicySources) -> PolicyError {
    let mut e = errors(sources);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.pop().unwrap()
}

fn tenant(toml: &str) -> PolicySources {
    PolicySources::new().with_tenant(t("acme"), "tenants/acme.toml", toml)
}

fn user(tenant_toml: &str, user_toml: &str) -> PolicySources {
    tenant(tenant_toml).with_user(t("acme"), a("alice"), "users/acme/alice.toml", user_toml)
}

#[test]
fn the_sample_policies_validate() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let store = PolicyStore::new(PolicySources::from_dir(dir).unwrap()).unwrap();
    assert_eq!(store.tenants(), vec![t("acme"), t("globex")]);
    let alice = store.user_snapshot(&t("acme"), &a("alice")).unwrap();
    assert_eq!(
        alice.get_float("observability.sampling_rate").unwrap(),
        0.15
    );
    assert_eq!(alice.get_int("notes.max_attachments").unwrap(), 25);
    assert_eq!(
        alice.get_label("notes.default_label").unwrap(),
        alice.label_scheme().parse("CONFIDENTIAL//CRYPTO").unwrap()
    );
}

#[test]
fn malformed_toml() {
    let e = only(tenant("[rbac\nroles = 1\n"));
    assert_eq!(
        (e.file.as_str(), e.layer, e.line),
        ("tenants/acme.toml", Layer::Tenant, Some(1))
    );
    assert!(matches!(e.kind, PolicyErrorKind::Malformed(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("tenants/acme.toml:1: tenant layer: malformed TOML"),
        "{e}"
    );
}

#[test]
fn unknown_key() {
    let e = only(tenant("[observability]\nsampling_rat = 0.3\n"));
    assert_eq!(e.key.as_deref(), Some("observability.sampling_rat"));
    assert_eq!(
        (e.file.as_str(), e.layer, e.line),
        ("tenants/acme.toml", Layer::Tenant, Some(2))
    );
    assert!(matches!(e.kind, PolicyErrorKind::UnknownKey(_)));
    // An unknown section too.
    let e = only(PolicySources::new().with_system("system.toml", "[nope]\nx = 1\n"));
    assert_eq!((e.key.as_deref(), e.layer), (Some("nope"), Layer::System));
}

#[test]
fn wrong_type() {
    let e = only(tenant("[limits]\nmax_payload_bytes = \"big\"\n"));
    assert_eq!(e.key.as_deref(), Some("limits.max_payload_bytes"));
    assert_eq!((e.layer, e.line), (Layer::Tenant, Some(2)));
    assert_eq!(
        e.kind,
        PolicyErrorKind::WrongType {
            expected: "integer".into(),
            found: "string".into()
        }
    );
    let e = only(tenant("[rbac.roles]\nviewer = [\"a.b\", 3]\n"));
    assert_eq!(e.key.as_deref(), Some("rbac.roles"));
    let e = only(tenant("[cache]\nttl = \"5 minutes\"\n"));
    assert_eq!(e.key.as_deref(), Some("cache.ttl"));
    assert!(matches!(e.kind, PolicyErrorKind::WrongType { .. }));
}

#[test]
fn out_of_range() {
    let e = only(user("", "[observability]\nsampling_rate = 1.5\n"));
    assert_eq!(e.key.as_deref(), Some("observability.sampling_rate"));
    assert_eq!(
        (e.file.as_str(), e.layer),
        ("users/acme/alice.toml", Layer::User)
    );
    assert!(matches!(e.kind, PolicyErrorKind::OutOfRange { .. }), "{e}");
    let e = only(tenant("[links]\nmax_depth = 0\n"));
    assert_eq!(e.key.as_deref(), Some("links.max_depth"));
}

#[test]
fn enum_value_not_allowed() {
    let e = only(
        PolicySources::new().with_system("system.toml", "[audit]\ndurability = \"sometimes\"\n"),
    );
    assert_eq!(
        (e.key.as_deref(), e.layer),
        (Some("audit.durability"), Layer::System)
    );
    assert!(matches!(&e.kind, PolicyErrorKind::NotAllowed { value, .. } if value == "sometimes"));
}

#[test]
fn tenant_setting_a_system_key() {
    let e = only(tenant("[observability]\nenabled = false\n"));
    assert_eq!(e.key.as_deref(), Some("observability.enabled"));
    assert_eq!(
        (e.file.as_str(), e.layer, e.line),
        ("tenants/acme.toml", Layer::Tenant, Some(2))
    );
    assert!(matches!(e.kind, PolicyErrorKind::AboveScope { .. }));
    assert!(
        e.to_string().contains("only the system layer may set it"),
        "{e}"
    );
}

#[test]
fn user_setting_a_tenant_key() {
    let e = only(user("", "[rbac.roles]\nsuperuser = [\"*\"]\n"));
    assert_eq!(e.key.as_deref(), Some("rbac.roles"));
    assert_eq!(
        (e.file.as_str(), e.layer),
        ("users/acme/alice.toml", Layer::User)
    );
    assert!(matches!(e.kind, PolicyErrorKind::AboveScope { .. }));
}

#[test]
fn user_overriding_a_locked_key() {
    let e = only(user(
        "[policy]\nlock = [\"observability.level\"]\n",
        "[observability]\nlevel = \"trace\"\n",
    ));
    assert_eq!(e.key.as_deref(), Some("observability.level"));
    assert_eq!(
        (e.layer, e.kind.clone()),
        (Layer::User, PolicyErrorKind::Locked)
    );
    // The same override is fine when not locked.
    assert!(PolicyStore::new(user("", "[observability]\nlevel = \"trace\"\n")).is_ok());
}

#[test]
fn locking_a_key_that_is_not_user_scoped() {
    let e = only(tenant("[policy]\nlock = [\"rbac.roles\"]\n"));
    assert_eq!(
        (e.key.as_deref(), e.layer),
        (Some("policy.lock"), Layer::Tenant)
    );
    assert!(matches!(&e.kind, PolicyErrorKind::BadLock { key, .. } if key == "rbac.roles"));
    let e = only(tenant("[policy]\nlock = [\"no.such\"]\n"));
    assert!(matches!(&e.kind, PolicyErrorKind::BadLock { key, .. } if key == "no.such"));
}

#[test]
fn invalid_label() {
    let schema = "[keys.\"notes.default_label\"]\ntype = \"label\"\nscope = \"user\"\n";
    let s = PolicySources::new()
        .with_schema("schema.toml", schema)
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[notes]\ndefault_label = \"SECRET//MAGIC\"\n",
        );
    let e = only(s);
    assert_eq!(
        (e.key.as_deref(), e.layer),
        (Some("notes.default_label"), Layer::Tenant)
    );
    assert!(matches!(e.kind, PolicyErrorKind::InvalidLabel(_)), "{e}");
    // A bad scheme (duplicate level) names `mac.levels`.
    let e =
        only(PolicySources::new().with_system("system.toml", "[mac]\nlevels = [\"A\", \"a\"]\n"));
    assert_eq!(
        (e.key.as_deref(), e.layer),
        (Some("mac.levels"), Layer::System)
    );
}

#[test]
fn invalid_permission_pattern() {
    let e = only(tenant("[rbac.roles]\nviewer = [\"notes*\"]\n"));
    assert_eq!(e.key.as_deref(), Some("rbac.roles"));
    assert_eq!(e.kind, PolicyErrorKind::InvalidPattern("notes*".into()));
}

#[test]
fn bad_file_names_and_orphan_users() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
    std::fs::create_dir_all(dir.path().join("users/ghost")).unwrap();
    std::fs::write(dir.path().join("tenants/bad name.toml"), "").unwrap();
    std::fs::write(dir.path().join("users/ghost/bob.toml"), "").unwrap();
    let errs = errors(PolicySources::from_dir(dir.path()).unwrap());
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(
        (errs[0].file.as_str(), errs[0].layer),
        ("tenants/bad name.toml", Layer::Tenant)
    );
    assert!(matches!(errs[0].kind, PolicyErrorKind::InvalidId(_)));
    assert_eq!(
        (errs[1].file.as_str(), errs[1].layer),
        ("users/ghost/bob.toml", Layer::User)
    );
    assert!(matches!(errs[1].kind, PolicyErrorKind::UnknownTenant(_)));
    let missing = PolicySources::from_dir(dir.path().join("nope")).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn invalid_host_schema() {
    let e = only(PolicySources::new().with_schema(
        "schema.toml",
        "[keys.\"app.x\"]\ntype = \"number\"\nscope = \"user\"\n",
    ));
    assert_eq!(
        (e.file.as_str(), e.key.as_deref()),
        ("schema.toml", Some("app.x"))
    );
    assert!(matches!(e.kind, PolicyErrorKind::InvalidSchema(_)));
}

#[test]
fn every_problem_in_every_file_is_reported_at_once() {
    let s = PolicySources::new()
        .with_system("system.toml", "[audit]\ndurability = \"x\"\n")
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[observability]\nenabled = false\nsampling_rate = 2.0\n",
        )
        .with_tenant(t("globex"), "tenants/globex.toml", "bogus = 1\n")
        .with_user(
            t("acme"),
            a("alice"),
            "users/acme/alice.toml",
            "[rbac.roles]\nx = []\n",
        );
    let errs = errors(s);
    let got: Vec<(&str, Option<&str>)> = errs
        .iter()
        .map(|e| (e.file.as_str(), e.key.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("system.toml", Some("audit.durability")),
            ("tenants/acme.toml", Some("observability.enabled")),
            ("tenants/acme.toml", Some("observability.sampling_rate")),
            ("tenants/globex.toml", Some("bogus")),
            ("users/acme/alice.toml", Some("rbac.roles")),
        ]
    );
    let text = PolicyStore::new(PolicySources::new().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "a = 1\nb = 2\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(text.starts_with("2 policy problems:"), "{text}");
}
