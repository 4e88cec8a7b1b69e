//! Merge precedence, provenance, explain, locks, unknown tenants, snapshots and decisions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_policy::{
    ActorId, ExplainError, Label, Layer, PolicySources, PolicyStore, Subject, TenantId, Value,
};
use proptest::prelude::*;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn a(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

/// The seed's example.
fn seed() -> PolicySources {
    PolicySources::new()
        .with_system(
            "system.toml",
            "[observability]\nenabled = true\nsampling_rate = 0.05\n",
        )
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[observability]\nsampling_rate = 0.2\nexport_targets = [\"prometheus\"]\n",
        )
        .with_user(
            t("acme"),
            a("alice"),
            "users/alice.toml",
            "[observability]\nsampling_rate = 0.15\n",
        )
}

#[test]
fn seed_example_merges_with_provenance() {
    let store = PolicyStore::new(seed()).unwrap();
    let alice = store.user_snapshot(&t("acme"), &a("alice")).unwrap();
    assert_eq!(
        alice.get_float("observability.sampling_rate").unwrap(),
        0.15
    );
    let p = alice.provenance("observability.sampling_rate").unwrap();
    assert_eq!(
        (p.layer, p.file.as_deref()),
        (Layer::User, Some("users/alice.toml"))
    );
    assert!(alice.get_bool("observability.enabled").unwrap());
    assert_eq!(
        alice.provenance("observability.enabled").unwrap().layer,
        Layer::System
    );
    let tenant = store.snapshot(&t("acme")).unwrap();
    assert_eq!(
        tenant.get_float("observability.sampling_rate").unwrap(),
        0.2
    );
    // A user with no file gets the tenant snapshot.
    let bob = store.user_snapshot(&t("acme"), &a("bob")).unwrap();
    assert_eq!(bob.get_float("observability.sampling_rate").unwrap(), 0.2);
    // `enabled` stays immutable: a tenant or user trying to change it is an error.
    let bad = seed().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "[observability]\nenabled = false\n",
    );
    assert!(PolicyStore::new(bad).is_err());
    // The JSON form carries the provenance.
    let j = alice.to_json();
    assert_eq!(j["observability.sampling_rate"]["layer"], "user");
    assert_eq!(j["observability.sampling_rate"]["value"], 0.15);
}

#[test]
fn explain_gives_winner_and_lower_layers() {
    let store = PolicyStore::new(seed()).unwrap();
    let e = store
        .explain(&t("acme"), Some(&a("alice")), "observability.sampling_rate")
        .unwrap();
    assert_eq!(e.value, Value::Float(0.15));
    assert_eq!(
        (e.layer, e.file.as_deref()),
        (Layer::User, Some("users/alice.toml"))
    );
    let lower: Vec<(Layer, Value)> = e.lower.iter().map(|l| (l.layer, l.value.clone())).collect();
    assert_eq!(
        lower,
        vec![
            (Layer::Default, Value::Float(0.05)),
            (Layer::System, Value::Float(0.05)),
            (Layer::Tenant, Value::Float(0.2))
        ]
    );
    let e = store
        .explain(&t("acme"), None, "observability.sampling_rate")
        .unwrap();
    assert_eq!((e.layer, e.value), (Layer::Tenant, Value::Float(0.2)));
    let e = store.explain(&t("acme"), None, "links.max_depth").unwrap();
    assert_eq!((e.layer, e.file), (Layer::Default, None));
    assert!(e.lower.is_empty());
    assert_eq!(
        store.explain(&t("nope"), None, "links.max_depth"),
        Err(ExplainError::UnknownTenant("nope".into()))
    );
    assert_eq!(
        store.explain(&t("acme"), None, "no.key"),
        Err(ExplainError::UnknownKey("no.key".into()))
    );
}

#[test]
fn locked_keys_show_in_explain() {
    let s = seed().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "[policy]\nlock = [\"observability.level\"]\n",
    );
    let store = PolicyStore::new(s).unwrap();
    assert!(
        store
            .explain(&t("acme"), None, "observability.level")
            .unwrap()
            .locked
    );
    assert!(
        !store
            .explain(&t("acme"), None, "observability.sampling_rate")
            .unwrap()
            .locked
    );
}

#[test]
fn unknown_tenants_are_refused_by_default_or_get_system_defaults() {
    let store = PolicyStore::new(seed()).unwrap();
    assert!(store.snapshot(&t("initech")).is_none());
    assert!(store.tenant_handle(&t("initech")).snapshot().is_none());
    let s = seed().with_system(
        "system.toml",
        "[tenancy]\nunknown_tenants = \"system_defaults\"\n",
    );
    let store = PolicyStore::new(s).unwrap();
    let snap = store.snapshot(&t("initech")).unwrap();
    assert_eq!(snap.tenant(), None);
    assert_eq!(snap.get_float("observability.sampling_rate").unwrap(), 0.05);
    assert!(store.tenant_handle(&t("initech")).snapshot().is_some());
}

#[test]
fn handles_follow_reloads_including_added_and_removed_tenants() {
    let store = PolicyStore::new(seed()).unwrap();
    let h = store.tenant_handle(&t("globex"));
    assert!(h.snapshot().is_none());
    let with_globex = seed().with_tenant(t("globex"), "tenants/globex.toml", "");
    let r = store.reload(with_globex).unwrap();
    assert_eq!(r.added, vec![t("globex")]);
    assert_eq!(h.snapshot().unwrap().epoch(), r.epoch);
    let r = store.reload(seed()).unwrap();
    assert_eq!(r.removed, vec![t("globex")]);
    assert!(h.snapshot().is_none());
}

#[test]
fn reload_reports_a_key_level_diff() {
    let store = PolicyStore::new(seed()).unwrap();
    assert_eq!(store.epoch(), 1);
    // Same content: nothing changes, the epoch stays.
    let r = store.reload(seed()).unwrap();
    assert_eq!((r.epoch, r.changed.len(), r.diff.len()), (1, 0, 0));
    let changed = seed().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "[observability]\nsampling_rate = 0.3\n",
    );
    let r = store.reload(changed).unwrap();
    assert_eq!(r.epoch, 2);
    assert_eq!(r.changed, vec![t("acme")]);
    let c = r
        .diff
        .iter()
        .find(|c| c.key == "observability.sampling_rate")
        .unwrap();
    assert_eq!(
        (c.old.clone(), c.new.clone()),
        (Some(Value::Float(0.2)), Some(Value::Float(0.3)))
    );
    // export_targets went back to the default: provenance changes too.
    let c = r
        .diff
        .iter()
        .find(|c| c.key == "observability.export_targets")
        .unwrap();
    assert_eq!(c.new_from.as_ref().unwrap().layer, Layer::Default);
    assert_eq!(store.snapshot(&t("acme")).unwrap().epoch(), 2);
}

#[test]
fn failed_reload_leaves_every_snapshot_identical() {
    let store =
        PolicyStore::new(seed().with_tenant(t("globex"), "tenants/globex.toml", "")).unwrap();
    let before: Vec<_> = store
        .tenants()
        .iter()
        .map(|t| store.snapshot(t).unwrap())
        .collect();
    let system_before = store.system_snapshot();
    let bad = seed().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "[observability]\nsampling_rate = \"high\"\n",
    );
    assert!(store.reload(bad).is_err());
    assert_eq!(store.epoch(), 1);
    for (t, old) in store.tenants().iter().zip(&before) {
        let now = store.snapshot(t).unwrap();
        assert!(std::sync::Arc::ptr_eq(&now, old));
        assert_eq!(
            (now.epoch(), now.content_hash()),
            (old.epoch(), old.content_hash())
        );
        assert_eq!(now.to_json(), old.to_json());
    }
    assert!(std::sync::Arc::ptr_eq(
        &store.system_snapshot(),
        &system_before
    ));
}

fn rbac() -> PolicySources {
    PolicySources::new()
        .with_system("system.toml", "[mac]\ncompartments = [\"CRYPTO\"]\n")
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[rbac.roles]\nviewer = [\"notes.read\"]\neditor = [\"notes.*\"]\nadmin = [\"*\"]\n[rate.limits]\nstrict = { rate = 2, per = \"1s\", burst = 3 }\n",
        )
}

#[test]
fn permits_with_wildcards_late_permissions_and_undefined_roles() {
    let store = PolicyStore::new(rbac()).unwrap();
    let sy = store.symbols();
    let read = sy.permission("notes.read");
    let snap = store.snapshot(&t("acme")).unwrap();
    let subject = |roles: &[&str]| Subject::new(a("x"), sy.role_set(roles), Label::BOTTOM);
    assert!(snap.permits(&subject(&["viewer"]), read));
    assert!(snap.permits(&subject(&["editor"]), read));
    assert!(snap.permits(&subject(&["admin"]), read));
    assert!(!snap.permits(&subject(&["ghost"]), read));
    assert!(!snap.permits(&subject(&[]), read));
    // Interned after the snapshot was built: answered by the slow path, correctly.
    let create = sy.permission("notes.create");
    let other = sy.permission("billing.pay");
    assert!(!snap.permits(&subject(&["viewer"]), create));
    assert!(snap.permits(&subject(&["editor"]), create));
    assert!(!snap.permits(&subject(&["editor"]), other));
    assert!(snap.permits(&subject(&["admin", "viewer"]), other));
    // Rate limits: configured class, unknown class, late class.
    let strict = snap.rate_limit(sy.rate_class("strict")).unwrap();
    assert_eq!((strict.rate, strict.burst), (2, 3));
    assert!(snap.rate_limit(sy.rate_class("default")).is_none());
    assert!(snap.rate_limit(sy.rate_class("later")).is_none());
}

#[test]
fn mac_read_and_write_rules() {
    for (rule, expect_down, expect_equal, expect_up) in [
        ("no_write_down", false, true, true),
        ("equal", false, true, false),
        ("dominates", true, true, false),
    ] {
        let s = rbac().with_system("system.toml", &format!("[mac]\nwrite_rule = \"{rule}\"\n"));
        let store = PolicyStore::new(s).unwrap();
        let snap = store.snapshot(&t("acme")).unwrap();
        let scheme = snap.label_scheme().clone();
        let secret = scheme.parse("SECRET").unwrap();
        let subject = Subject::new(a("x"), store.symbols().role_set(["viewer"]), secret);
        let low = scheme.parse("CONFIDENTIAL").unwrap();
        let high = scheme.parse("TOP SECRET").unwrap();
        assert!(
            snap.can_read(&subject, low)
                && snap.can_read(&subject, secret)
                && !snap.can_read(&subject, high)
        );
        assert_eq!(snap.can_write(&subject, low), expect_down, "{rule} down");
        assert_eq!(
            snap.can_write(&subject, secret),
            expect_equal,
            "{rule} equal"
        );
        assert_eq!(snap.can_write(&subject, high), expect_up, "{rule} up");
    }
}

#[test]
fn typed_accessors_report_misuse() {
    let store = PolicyStore::new(seed()).unwrap();
    let snap = store.snapshot(&t("acme")).unwrap();
    assert!(snap.get_int("observability.sampling_rate").is_err());
    assert!(snap.get_bool("no.such").is_err());
    assert_eq!(
        snap.get_strings("observability.export_targets").unwrap(),
        ["prometheus"]
    );
    assert_eq!(
        snap.get_duration("audit.checkpoint_interval").unwrap(),
        std::time::Duration::from_secs(1)
    );
    assert_eq!(snap.get_str("audit.durability").unwrap(), "full");
    assert_eq!(snap.max_payload_bytes(), 1 << 20);
}

#[derive(Debug, Clone, Copy)]
enum Set {
    No,
    Yes(u8),
}

fn set() -> impl Strategy<Value = Set> {
    prop_oneof![Just(Set::No), (0u8..=100).prop_map(Set::Yes)]
}

fn line(key: &str, s: Set) -> String {
    match s {
        Set::No => String::new(),
        Set::Yes(v) => format!("{key} = {}\n", f64::from(v) / 100.0),
    }
}

proptest! {
    /// For a user-scoped key, the highest layer that sets it always wins.
    #[test]
    fn highest_legal_override_wins(sys in set(), ten in set(), usr in set()) {
        let key = "[observability]\nsampling_rate";
        let s = PolicySources::new()
            .with_system("system.toml", &line(key, sys))
            .with_tenant(t("acme"), "tenants/acme.toml", &line(key, ten))
            .with_user(t("acme"), a("u"), "users/acme/u.toml", &line(key, usr));
        let store = PolicyStore::new(s).unwrap();
        let snap = store.user_snapshot(&t("acme"), &a("u")).unwrap();
        let (expected, layer) = match (sys, ten, usr) {
            (_, _, Set::Yes(v)) => (f64::from(v) / 100.0, Layer::User),
            (_, Set::Yes(v), _) => (f64::from(v) / 100.0, Layer::Tenant),
            (Set::Yes(v), _, _) => (f64::from(v) / 100.0, Layer::System),
            _ => (0.05, Layer::Default),
        };
        prop_assert_eq!(snap.get_float("observability.sampling_rate").unwrap(), expected);
        prop_assert_eq!(snap.provenance("observability.sampling_rate").unwrap().layer, layer);
    }

    /// An override above a key's scope is always an error, whatever else is set.
    #[test]
    fn override_above_scope_is_always_an_error(ten in any::<bool>(), usr in any::<bool>(), other in set()) {
        prop_assume!(ten || usr);
        let tenant = format!("{}{}", if ten { "[observability]\nenabled = false\n" } else { "" }, line("[cache]\ncapacity", other));
        let user = if usr { "[links]\nmax_depth = 3\n" } else { "" };
        let s = PolicySources::new()
            .with_tenant(t("acme"), "tenants/acme.toml", &tenant)
            .with_user(t("acme"), a("u"), "users/acme/u.toml", user);
        let errs = PolicyStore::new(s).unwrap_err();
        let keys: Vec<&str> = errs.errors().iter().filter_map(|e| e.key.as_deref()).collect();
        prop_assert_eq!(keys.contains(&"observability.enabled"), ten);
        prop_assert_eq!(keys.contains(&"links.max_depth"), usr);
    }
}

#[test]
fn the_watcher_reloads_when_files_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
    std::fs::write(dir.path().join("system.toml"), "").unwrap();
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        "[observability]\nsampling_rate = 0.2\n",
    )
    .unwrap();
    let store = std::sync::Arc::new(
        PolicyStore::new(PolicySources::from_dir(dir.path()).unwrap()).unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = nodus_policy::PolicyWatcher::spawn(
        store.clone(),
        dir.path(),
        std::time::Duration::from_millis(20),
        move |r| {
            let _ = tx.send(r.map(|rep| rep.epoch).map_err(|e| e.len()));
        },
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(60));
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        "[observability]\nsampling_rate = 0.3\n",
    )
    .unwrap();
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
        Ok(2)
    );
    assert_eq!(
        store
            .snapshot(&t("acme"))
            .unwrap()
            .get_float("observability.sampling_rate")
            .unwrap(),
        0.3
    );
    // A broken edit is reported and changes nothing.
    std::fs::write(
        dir.path().join("tenants/acme.toml"),
        "[observability]\nsampling_rate = \"x\"\n",
    )
    .unwrap();
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
        Err(1)
    );
    assert_eq!(store.epoch(), 2);
    watcher.stop();
}
