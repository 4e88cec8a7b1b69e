//! Every validation error, one negative test each, asserting the key, layer and file (and line)
//! named in the error; plus the sample policies and several problems reported at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_policy::{
    ActorId, Layer, PolicyError, PolicyErrorKind, PolicySources, PolicyStore, Scope, TenantId,
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

/// Asserts that `e` names `file`, `layer` and `key`, both in its fields and in its message (the
/// message is what a person reads: `file:line: <layer> layer: `key`: reason`).
fn assert_names(e: &PolicyError, file: &str, layer: Layer, key: &str) {
    assert_eq!(
        (e.file.as_str(), e.layer, e.key.as_deref()),
        (file, layer, Some(key)),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.starts_with(file), "{text}");
    assert!(text.contains(&format!("{layer} layer")), "{text}");
    assert!(text.contains(&format!("`{key}`")), "{text}");
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
    // A document that does not parse names no key (there is none yet): file, layer and line.
    let e = only(tenant("[rbac\nroles = 1\n"));
    assert_eq!(
        (e.file.as_str(), e.layer, e.line, e.key.as_deref()),
        ("tenants/acme.toml", Layer::Tenant, Some(1), None)
    );
    assert!(matches!(e.kind, PolicyErrorKind::Malformed(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("tenants/acme.toml:1: tenant layer: malformed TOML"),
        "{e}"
    );
    // In a user file, and a key set twice (TOML rejects it; the second value is never silently
    // taken).
    let e = only(user(
        "",
        "[observability]\nlevel = \"warn\"\nlevel = \"info\"\n",
    ));
    assert_eq!(
        (e.file.as_str(), e.layer, e.line),
        ("users/acme/alice.toml", Layer::User, Some(3))
    );
    assert!(matches!(e.kind, PolicyErrorKind::Malformed(_)), "{e}");
    assert!(e.to_string().contains("user layer"), "{e}");
}

#[test]
fn unrepresentable_number() {
    // TOML parses it, but it does not fit an i64: the error names the key and the line.
    let e = only(tenant("\n[links]\nmax_depth = 99999999999999999999\n"));
    assert_names(&e, "tenants/acme.toml", Layer::Tenant, "links.max_depth");
    assert_eq!(e.line, Some(3));
    assert!(matches!(e.kind, PolicyErrorKind::Malformed(_)), "{e}");
}

#[test]
fn unknown_key() {
    let e = only(tenant("[observability]\nsampling_rat = 0.3\n"));
    assert_names(
        &e,
        "tenants/acme.toml",
        Layer::Tenant,
        "observability.sampling_rat",
    );
    assert_eq!(e.line, Some(2));
    assert_eq!(
        e.kind,
        PolicyErrorKind::UnknownKey(Some("observability.sampling_rate".into()))
    );
    // An unknown section too.
    let e = only(PolicySources::new().with_system("system.toml", "[nope]\nx = 1\n"));
    assert_names(&e, "system.toml", Layer::System, "nope");
    // And in a user file, written as a dotted key.
    let e = only(user("", "observability.colour = \"red\"\n"));
    assert_names(
        &e,
        "users/acme/alice.toml",
        Layer::User,
        "observability.colour",
    );
}

#[test]
fn wrong_type() {
    let e = only(tenant("[limits]\nmax_payload_bytes = \"big\"\n"));
    assert_names(
        &e,
        "tenants/acme.toml",
        Layer::Tenant,
        "limits.max_payload_bytes",
    );
    assert_eq!(e.line, Some(2));
    assert_eq!(
        e.kind,
        PolicyErrorKind::WrongType {
            expected: "integer".into(),
            found: "string".into()
        }
    );
    let e = only(tenant("[rbac.roles]\nviewer = [\"a.b\", 3]\n"));
    assert_names(&e, "tenants/acme.toml", Layer::Tenant, "rbac.roles");
    let e = only(PolicySources::new().with_system(
        "system.toml",
        "[state.cache.objects]\nttl = \"5 minutes\"\n",
    ));
    assert_names(&e, "system.toml", Layer::System, "state.cache.objects.ttl");
    assert!(matches!(e.kind, PolicyErrorKind::WrongType { .. }));
    // A float that is not a number is a wrong type too, with a message that says why.
    let e = only(user("", "[observability]\nsampling_rate = nan\n"));
    assert_names(
        &e,
        "users/acme/alice.toml",
        Layer::User,
        "observability.sampling_rate",
    );
    assert!(
        e.to_string().contains("expected a finite float, found NaN"),
        "{e}"
    );
}

#[test]
fn out_of_range() {
    let e = only(user("", "[observability]\nsampling_rate = 1.5\n"));
    assert_names(
        &e,
        "users/acme/alice.toml",
        Layer::User,
        "observability.sampling_rate",
    );
    assert_eq!(e.line, Some(2));
    assert!(matches!(e.kind, PolicyErrorKind::OutOfRange { .. }), "{e}");
    let e = only(tenant("[links]\nmax_depth = 0\n"));
    assert_names(&e, "tenants/acme.toml", Layer::Tenant, "links.max_depth");
    assert!(matches!(e.kind, PolicyErrorKind::OutOfRange { .. }), "{e}");
    // `max_len` on a list.
    let long: Vec<String> = (0..129).map(|i| format!("\"C{i}\"")).collect();
    let e = only(PolicySources::new().with_system(
        "system.toml",
        &format!("[mac]\ncompartments = [{}]\n", long.join(", ")),
    ));
    assert_names(&e, "system.toml", Layer::System, "mac.compartments");
    assert!(matches!(e.kind, PolicyErrorKind::OutOfRange { .. }), "{e}");
}

#[test]
fn enum_value_not_allowed() {
    let e = only(
        PolicySources::new().with_system("system.toml", "[audit]\ndurability = \"sometimes\"\n"),
    );
    assert_names(&e, "system.toml", Layer::System, "audit.durability");
    assert!(matches!(&e.kind, PolicyErrorKind::NotAllowed { value, .. } if value == "sometimes"));
}

#[test]
fn tenant_setting_a_system_key() {
    let e = only(tenant("[observability]\nenabled = false\n"));
    assert_names(
        &e,
        "tenants/acme.toml",
        Layer::Tenant,
        "observability.enabled",
    );
    assert_eq!(e.line, Some(2));
    assert_eq!(
        e.kind,
        PolicyErrorKind::AboveScope {
            scope: Scope::System
        }
    );
    assert!(
        e.to_string().contains("only the system layer may set it"),
        "{e}"
    );
}

#[test]
fn user_setting_a_tenant_key() {
    let e = only(user("", "[rbac.roles]\nsuperuser = [\"*\"]\n"));
    assert_names(&e, "users/acme/alice.toml", Layer::User, "rbac.roles");
    // A table-valued key is where its table starts.
    assert_eq!(e.line, Some(1));
    assert_eq!(
        e.kind,
        PolicyErrorKind::AboveScope {
            scope: Scope::Tenant
        }
    );
    assert!(
        e.to_string()
            .contains("only the system and tenant layers may set it"),
        "{e}"
    );
}

#[test]
fn user_setting_a_system_key() {
    let e = only(user("", "[observability]\nenabled = false\n"));
    assert_names(
        &e,
        "users/acme/alice.toml",
        Layer::User,
        "observability.enabled",
    );
    assert_eq!(
        e.kind,
        PolicyErrorKind::AboveScope {
            scope: Scope::System
        }
    );
}

#[test]
fn user_overriding_a_locked_key() {
    let e = only(user(
        "[policy]\nlock = [\"observability.level\"]\n",
        "[observability]\nlevel = \"trace\"\n",
    ));
    assert_names(
        &e,
        "users/acme/alice.toml",
        Layer::User,
        "observability.level",
    );
    assert_eq!((e.line, e.kind.clone()), (Some(2), PolicyErrorKind::Locked));
    assert!(e.to_string().contains("the tenant locked it"), "{e}");
    // A lock the system layer sets for every tenant binds users too.
    let s = PolicySources::new()
        .with_system(
            "system.toml",
            "[policy]\nlock = [\"observability.level\"]\n",
        )
        .with_tenant(t("acme"), "tenants/acme.toml", "")
        .with_user(
            t("acme"),
            a("alice"),
            "users/acme/alice.toml",
            "[observability]\nlevel = \"trace\"\n",
        );
    let e = only(s);
    assert_names(
        &e,
        "users/acme/alice.toml",
        Layer::User,
        "observability.level",
    );
    assert_eq!(e.kind, PolicyErrorKind::Locked);
    // The same override is fine when not locked.
    assert!(PolicyStore::new(user("", "[observability]\nlevel = \"trace\"\n")).is_ok());
}

#[test]
fn locking_a_key_that_is_not_user_scoped() {
    let e = only(tenant("[policy]\nlock = [\"rbac.roles\"]\n"));
    assert_names(&e, "tenants/acme.toml", Layer::Tenant, "policy.lock");
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
    assert_names(
        &e,
        "tenants/acme.toml",
        Layer::Tenant,
        "notes.default_label",
    );
    assert!(matches!(e.kind, PolicyErrorKind::InvalidLabel(_)), "{e}");
    // A label key the system layer sets is checked against the system's own scheme, and a wrong
    // type there is reported once (not once per pass).
    let s = PolicySources::new()
        .with_schema("schema.toml", schema)
        .with_system("system.toml", "[notes]\ndefault_label = 3\n");
    let e = only(s);
    assert_names(&e, "system.toml", Layer::System, "notes.default_label");
    assert!(matches!(e.kind, PolicyErrorKind::WrongType { .. }), "{e}");
    let s = PolicySources::new()
        .with_schema("schema.toml", schema)
        .with_system(
            "system.toml",
            "[mac]\ncompartments = [\"MAGIC\"]\n[notes]\ndefault_label = \"SECRET//MAGIC\"\n",
        );
    assert!(PolicyStore::new(s).is_ok());
    // A bad scheme (duplicate level) names `mac.levels`.
    let e =
        only(PolicySources::new().with_system("system.toml", "[mac]\nlevels = [\"A\", \"a\"]\n"));
    assert_names(&e, "system.toml", Layer::System, "mac.levels");
}

#[test]
fn invalid_permission_pattern() {
    let e = only(tenant("[rbac.roles]\nviewer = [\"notes*\"]\n"));
    assert_names(&e, "tenants/acme.toml", Layer::Tenant, "rbac.roles");
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
    // A policy file outside the layout is reported, not ignored.
    std::fs::write(dir.path().join("acme.toml"), "").unwrap();
    std::fs::write(dir.path().join("users/bob.toml"), "").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not policy").unwrap();
    let errs = errors(PolicySources::from_dir(dir.path()).unwrap());
    let misplaced: Vec<(&str, Layer)> = errs
        .iter()
        .filter(|e| matches!(e.kind, PolicyErrorKind::MisplacedFile(_)))
        .map(|e| (e.file.as_str(), e.layer))
        .collect();
    assert_eq!(
        misplaced,
        vec![
            ("acme.toml", Layer::System),
            ("users/bob.toml", Layer::User)
        ],
        "{errs:#?}"
    );
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
