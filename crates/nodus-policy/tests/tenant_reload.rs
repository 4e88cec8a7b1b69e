//! Tenant-scoped reload: one tenant's files, validated against the loaded system layer and schema,
//! swap only that tenant's snapshot; other tenants' files are never read and their snapshots stay
//! the same `Arc`; the report and the errors mention only that tenant's files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;

use nodus_policy::{
    ActorId, Layer, PolicyErrorKind, PolicyErrors, PolicySources, PolicyStore, TenantId,
    TenantSources, Value,
};

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn a(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn write(dir: &Path, rel: &str, text: impl AsRef<[u8]>) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A policy directory with tenants acme (and its user alice) and globex.
fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "schema.toml",
        "[keys.\"notes.max\"]\ntype = \"integer\"\nscope = \"user\"\ndefault = 1\nmin = 0\nmax = 100\n",
    );
    write(
        d,
        "system.toml",
        "[observability]\nsampling_rate = 0.05\n[mac]\ncompartments = [\"CRYPTO\"]\n",
    );
    write(
        d,
        "tenants/acme.toml",
        "[observability]\nsampling_rate = 0.2\n[notes]\nmax = 10\n",
    );
    write(d, "users/acme/alice.toml", "[notes]\nmax = 11\n");
    write(d, "tenants/globex.toml", "[notes]\nmax = 20\n");
    write(d, "users/globex/gina.toml", "[notes]\nmax = 21\n");
    dir
}

fn load(dir: &Path) -> PolicyStore {
    PolicyStore::new(PolicySources::from_dir(dir).unwrap()).unwrap()
}

fn scoped(
    store: &PolicyStore,
    dir: &Path,
    tenant: &str,
) -> Result<nodus_policy::ReloadReport, PolicyErrors> {
    store.reload_tenant(&t(tenant), TenantSources::from_dir(dir, &t(tenant))?)
}

#[test]
fn a_scoped_reload_swaps_only_its_tenant() {
    let dir = policy_dir();
    let d = dir.path();
    let store = load(d);
    let globex = store.snapshot(&t("globex")).unwrap();
    let system = store.system_snapshot();
    let gina = store.user_snapshot(&t("globex"), &a("gina")).unwrap();
    assert_eq!(store.epoch(), 1);

    write(
        d,
        "tenants/acme.toml",
        "[observability]\nsampling_rate = 0.3\n[notes]\nmax = 12\n",
    );
    write(d, "users/acme/alice.toml", "[notes]\nmax = 13\n");
    let report = scoped(&store, d, "acme").unwrap();
    assert_eq!(report.epoch, 2);
    assert_eq!(store.epoch(), 2);
    assert_eq!(report.changed, vec![t("acme")]);
    assert!(report.added.is_empty() && report.removed.is_empty());
    assert_eq!(report.changed_users, vec![(t("acme"), a("alice"))]);
    assert!(!report.diff.is_empty());
    assert!(
        report.diff.iter().all(|k| k.tenant == Some(t("acme"))),
        "{report:#?}"
    );
    let files: Vec<&str> = report
        .diff
        .iter()
        .flat_map(|k| [k.old_from.as_ref(), k.new_from.as_ref()])
        .flatten()
        .filter_map(|p| p.file.as_deref())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| *f == "tenants/acme.toml" || *f == "users/acme/alice.toml"),
        "{files:?}"
    );

    let acme = store.snapshot(&t("acme")).unwrap();
    assert_eq!(acme.epoch(), 2);
    assert_eq!(acme.get_float("observability.sampling_rate").unwrap(), 0.3);
    let alice = store.user_snapshot(&t("acme"), &a("alice")).unwrap();
    assert_eq!(alice.get_int("notes.max").unwrap(), 13);
    // Every other tenant's snapshot, the system snapshot and other users' snapshots: same Arc.
    assert!(Arc::ptr_eq(&globex, &store.snapshot(&t("globex")).unwrap()));
    assert!(Arc::ptr_eq(&system, &store.system_snapshot()));
    assert!(Arc::ptr_eq(
        &gina,
        &store.user_snapshot(&t("globex"), &a("gina")).unwrap()
    ));
    assert_eq!(store.tenants(), vec![t("acme"), t("globex")]);

    // Nothing changed: no epoch bump, nothing swapped.
    let again = scoped(&store, d, "acme").unwrap();
    assert_eq!(again.epoch, 2);
    assert!(again.changed.is_empty() && again.diff.is_empty());
    assert!(Arc::ptr_eq(&acme, &store.snapshot(&t("acme")).unwrap()));

    // A removed user file is a user change of this tenant.
    std::fs::remove_file(d.join("users/acme/alice.toml")).unwrap();
    let r = scoped(&store, d, "acme").unwrap();
    assert_eq!(r.changed_users, vec![(t("acme"), a("alice"))]);
    assert_eq!(
        store
            .user_snapshot(&t("acme"), &a("alice"))
            .unwrap()
            .get_int("notes.max")
            .unwrap(),
        12
    );
}

#[test]
fn another_tenants_broken_files_do_not_affect_or_appear_in_a_scoped_reload() {
    let dir = policy_dir();
    let d = dir.path();
    let store = load(d);
    let globex = store.snapshot(&t("globex")).unwrap();
    // globex breaks its files in every way: bad TOML, a secret-looking value, non-UTF-8 bytes.
    write(
        d,
        "tenants/globex.toml",
        "[notes]\nmax = \"globex-secret-value\"\n[[[\n",
    );
    write(d, "users/globex/gina.toml", b"max = \xff\xfe\n");
    write(d, "users/globex/bad name.toml", "");
    // The full reload sees them (and mentions globex)...
    let full = store
        .reload(PolicySources::from_dir(d).unwrap())
        .unwrap_err()
        .to_string();
    assert!(full.contains("globex"), "{full}");
    // ...acme's scoped reload does not.
    write(d, "tenants/acme.toml", "[notes]\nmax = 30\n");
    let report = scoped(&store, d, "acme").unwrap();
    assert_eq!(report.changed, vec![t("acme")]);
    let text = format!("{report:?}");
    assert!(!text.contains("globex"), "{text}");
    assert!(Arc::ptr_eq(&globex, &store.snapshot(&t("globex")).unwrap()));
    assert_eq!(
        store
            .snapshot(&t("acme"))
            .unwrap()
            .get_int("notes.max")
            .unwrap(),
        30
    );
}

#[test]
fn a_scoped_reload_reports_its_own_errors_with_file_line_and_key_and_changes_nothing() {
    let dir = policy_dir();
    let d = dir.path();
    let store = load(d);
    let acme = store.snapshot(&t("acme")).unwrap();
    // globex is broken too; it must not show up in acme's errors.
    write(d, "tenants/globex.toml", "bogus = 1\n");
    write(
        d,
        "tenants/acme.toml",
        "[observability]\nsampling_rate = 2.0\n[rbac.roles]\nadmin = [\"system.policy.reload\"]\n",
    );
    write(d, "users/acme/alice.toml", "[notes]\nmaxx = 1\n");
    let errs = scoped(&store, d, "acme").unwrap_err();
    let got: Vec<(&str, Layer, Option<&str>, Option<u32>)> = errs
        .errors()
        .iter()
        .map(|e| (e.file.as_str(), e.layer, e.key.as_deref(), e.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "tenants/acme.toml",
                Layer::Tenant,
                Some("observability.sampling_rate"),
                Some(2)
            ),
            (
                "tenants/acme.toml",
                Layer::Tenant,
                Some("rbac.roles"),
                Some(4)
            ),
            (
                "users/acme/alice.toml",
                Layer::User,
                Some("notes.maxx"),
                Some(2)
            ),
        ],
        "{errs}"
    );
    assert!(!errs.to_string().contains("globex"), "{errs}");
    assert!(Arc::ptr_eq(&acme, &store.snapshot(&t("acme")).unwrap()));
    assert_eq!(store.epoch(), 1);
}

#[test]
fn a_scoped_reload_uses_the_loaded_system_layer_and_schema_not_the_files_on_disk() {
    let dir = policy_dir();
    let d = dir.path();
    let store = load(d);
    // The platform owner is half-way through editing the system layer and the schema.
    write(
        d,
        "system.toml",
        "[observability]\nsampling_rate = 0.9\n[[[ half edited",
    );
    write(d, "schema.toml", "broken");
    // acme uses a compartment and a host key from the loaded system layer and schema.
    write(d, "tenants/acme.toml", "[notes]\nmax = 40\n");
    write(d, "users/acme/alice.toml", "[notes]\nmax = 41\n");
    let report = scoped(&store, d, "acme").unwrap();
    assert_eq!(report.changed, vec![t("acme")]);
    let acme = store.snapshot(&t("acme")).unwrap();
    // The system value still comes from the loaded system layer.
    assert_eq!(acme.get_float("observability.sampling_rate").unwrap(), 0.05);
    assert_eq!(acme.get("notes.max"), Some(&Value::Int(40)));
    assert_eq!(acme.label_scheme().compartments().len(), 1);
}

#[test]
fn scoped_reloads_refuse_what_they_cannot_do() {
    let dir = policy_dir();
    let d = dir.path();
    let store = load(d);
    let refused = |e: &PolicyErrors| {
        assert_eq!(e.len(), 1, "{e}");
        let e = &e.errors()[0];
        assert!(
            matches!(e.kind, PolicyErrorKind::TenantReloadRefused(_)),
            "{e}"
        );
        e.clone()
    };
    // A tenant whose file was deleted: removing a tenant takes a full reload.
    std::fs::remove_file(d.join("tenants/acme.toml")).unwrap();
    let e = refused(&scoped(&store, d, "acme").unwrap_err());
    assert_eq!(
        (e.file.as_str(), e.layer),
        ("tenants/acme.toml", Layer::Tenant)
    );
    assert!(e.to_string().contains("full reload"), "{e}");
    assert!(store.snapshot(&t("acme")).is_some());
    // A tenant the store does not have: adding a tenant takes a full reload.
    write(d, "tenants/initech.toml", "");
    let e = refused(&scoped(&store, d, "initech").unwrap_err());
    assert_eq!(e.file.as_str(), "tenants/initech.toml");
    assert!(store.snapshot(&t("initech")).is_none());
    // Sources read for another tenant.
    let e = refused(
        &store
            .reload_tenant(
                &t("acme"),
                TenantSources::from_dir(d, &t("globex")).unwrap(),
            )
            .unwrap_err(),
    );
    assert!(e.to_string().contains("`globex`"), "{e}");
    assert_eq!(store.epoch(), 1);
}

#[test]
fn tenant_sources_from_strings() {
    let store = PolicyStore::new(
        PolicySources::new()
            .with_tenant(t("acme"), "tenants/acme.toml", "")
            .with_tenant(t("globex"), "tenants/globex.toml", ""),
    )
    .unwrap();
    let sources = TenantSources::new(t("acme"))
        .with_tenant_file(
            "tenants/acme.toml",
            "[observability]\nsampling_rate = 0.5\n",
        )
        .with_user(
            a("alice"),
            "users/acme/alice.toml",
            "[observability]\nlevel = \"debug\"\n",
        );
    assert_eq!(sources.tenant(), &t("acme"));
    let r = store.reload_tenant(&t("acme"), sources).unwrap();
    assert_eq!(
        (r.changed.clone(), r.changed_users.clone()),
        (vec![t("acme")], vec![(t("acme"), a("alice"))])
    );
    assert_eq!(
        store
            .user_snapshot(&t("acme"), &a("alice"))
            .unwrap()
            .get_str("observability.level")
            .unwrap(),
        "debug"
    );
}

#[test]
fn a_non_utf8_tenant_file_is_its_own_error_only() {
    let dir = policy_dir();
    let d = dir.path();
    let store = load(d);
    write(d, "tenants/acme.toml", b"[notes]\nmax = \"\xff\"\n");
    let e = scoped(&store, d, "acme").unwrap_err();
    assert_eq!(e.len(), 1, "{e}");
    assert_eq!(e.errors()[0].file, "tenants/acme.toml");
}
