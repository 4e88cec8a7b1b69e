//! Merge precedence, provenance, explain, locks, unknown tenants, snapshots and decisions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_policy::{
    ActorId, ExplainError, Label, Layer, PolicyErrorKind, PolicySources, PolicyStore, Scope,
    Subject, TenantId, Value,
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
    seed_without_users().with_user(
        t("acme"),
        a("alice"),
        "users/alice.toml",
        "[observability]\nsampling_rate = 0.15\n",
    )
}

/// The seed's system and tenant layers.
fn seed_without_users() -> PolicySources {
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
    // `enabled` stays immutable: a tenant or a user trying to change it is an error naming the
    // key and the layer, never a silently skipped override.
    let bad = seed().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "[observability]\nenabled = false\n",
    );
    let errs = PolicyStore::new(bad).unwrap_err();
    let e = &errs.errors()[0];
    assert_eq!(
        (errs.len(), e.key.as_deref(), e.layer),
        (1, Some("observability.enabled"), Layer::Tenant)
    );
    let bad = seed().with_user(
        t("acme"),
        a("alice"),
        "users/alice.toml",
        "[observability]\nenabled = false\nsampling_rate = 0.15\n",
    );
    let errs = PolicyStore::new(bad).unwrap_err();
    let e = &errs.errors()[0];
    assert_eq!(
        (errs.len(), e.key.as_deref(), e.layer),
        (1, Some("observability.enabled"), Layer::User)
    );
    let why = store
        .explain(&t("acme"), Some(&a("alice")), "observability.enabled")
        .unwrap();
    assert_eq!(
        (why.value, why.layer, why.scope),
        (Value::Bool(true), Layer::System, Scope::System)
    );
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
    // A user without a file: explained from the tenant.
    let e = store
        .explain(&t("acme"), Some(&a("bob")), "observability.sampling_rate")
        .unwrap();
    assert_eq!((e.layer, e.value), (Layer::Tenant, Value::Float(0.2)));
    // A key with no default that no layer sets has no value to explain.
    let s = seed().with_schema(
        "schema.toml",
        "[keys.\"app.name\"]\ntype = \"string\"\nscope = \"tenant\"\n",
    );
    let store = PolicyStore::new(s).unwrap();
    assert_eq!(
        store.explain(&t("acme"), None, "app.name"),
        Err(ExplainError::Unset("app.name".into()))
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
    // Its users get the same, and `explain` answers from the system layer, as the snapshot does.
    let user = store.user_snapshot(&t("initech"), &a("carol")).unwrap();
    assert!(std::sync::Arc::ptr_eq(&user, &snap));
    let why = store
        .explain(&t("initech"), None, "observability.sampling_rate")
        .unwrap();
    assert_eq!(
        (why.layer, why.value, why.locked),
        (Layer::Default, Value::Float(0.05), false)
    );
    // Refused: no user snapshot, no explanation.
    let store = PolicyStore::new(seed()).unwrap();
    assert!(store.user_snapshot(&t("initech"), &a("carol")).is_none());
    assert_eq!(
        store.explain(&t("initech"), None, "links.max_depth"),
        Err(ExplainError::UnknownTenant("initech".into()))
    );
}

#[test]
fn user_snapshots_are_cached_and_their_epochs_follow_user_edits() {
    let with_alice = |rate: &str| {
        seed().with_user(
            t("acme"),
            a("alice"),
            "users/alice.toml",
            &format!("[observability]\nsampling_rate = {rate}\n"),
        )
    };
    let store = PolicyStore::new(with_alice("0.15")).unwrap();
    let (acme, alice) = (t("acme"), a("alice"));
    let u1 = store.user_snapshot(&acme, &alice).unwrap();
    assert_eq!((u1.epoch(), u1.user()), (1, Some(&alice)));
    // Built once, then cached.
    assert!(std::sync::Arc::ptr_eq(
        &u1,
        &store.user_snapshot(&acme, &alice).unwrap()
    ));

    // Only alice's file changes: the tenant keeps its snapshot, alice gets a new epoch, and the
    // report names her and the key her layer changed.
    let tenant_before = store.snapshot(&acme).unwrap();
    let r = store.reload(with_alice("0.3")).unwrap();
    assert_eq!(r.epoch, 2);
    assert!(r.changed.is_empty());
    assert_eq!(r.changed_users, vec![(acme.clone(), alice.clone())]);
    let c = &r.diff[0];
    assert_eq!(
        (
            r.diff.len(),
            c.user.as_ref(),
            c.key.as_str(),
            c.old.clone(),
            c.new.clone()
        ),
        (
            1,
            Some(&alice),
            "observability.sampling_rate",
            Some(Value::Float(0.15)),
            Some(Value::Float(0.3))
        )
    );
    assert!(std::sync::Arc::ptr_eq(
        &tenant_before,
        &store.snapshot(&acme).unwrap()
    ));
    let u2 = store.user_snapshot(&acme, &alice).unwrap();
    assert_eq!(u2.epoch(), 2);
    assert_ne!(u2.content_hash(), u1.content_hash());
    assert_eq!(u2.get_float("observability.sampling_rate").unwrap(), 0.3);

    // Her file is removed: her values fall back to the tenant's, and her epoch does not go back
    // to the tenant snapshot's (1).
    let r = store.reload(seed_without_users()).unwrap();
    assert_eq!(r.changed_users, vec![(acme.clone(), alice.clone())]);
    let c = &r.diff[0];
    assert_eq!(
        (c.new.clone(), c.new_from.as_ref().unwrap().layer),
        (Some(Value::Float(0.2)), Layer::Tenant)
    );
    let u3 = store.user_snapshot(&acme, &alice).unwrap();
    assert_eq!(u3.epoch(), 3);
    assert_eq!(u3.content_hash(), tenant_before.content_hash());

    // The tenant changes: alice (no file) now simply gets the tenant snapshot, at a later epoch.
    let r = store
        .reload(seed_without_users().with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[observability]\nsampling_rate = 0.25\n",
        ))
        .unwrap();
    assert_eq!(r.epoch, 4);
    let u4 = store.user_snapshot(&acme, &alice).unwrap();
    assert!(std::sync::Arc::ptr_eq(&u4, &store.snapshot(&acme).unwrap()));
    assert_eq!(u4.epoch(), 4);
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

/// Everything a reader can observe of a store, byte for byte.
fn observe(store: &PolicyStore, handle: &nodus_policy::TenantHandle) -> Vec<String> {
    let snap = |s: &std::sync::Arc<nodus_policy::PolicySnapshot>| {
        format!(
            "{:p} {} {} {}",
            std::sync::Arc::as_ptr(s),
            s.epoch(),
            hex(s.content_hash()),
            serde_json::to_string(&s.to_json()).unwrap()
        )
    };
    let mut out = vec![
        format!("epoch {}", store.epoch()),
        format!("tenants {:?}", store.tenants()),
        snap(&store.system_snapshot()),
        snap(&handle.snapshot().unwrap()),
        snap(&store.user_snapshot(&t("acme"), &a("alice")).unwrap()),
        format!("{:?}", store.snapshot(&t("initech")).map(|s| s.epoch())),
        serde_json::to_string(
            &store
                .explain(&t("acme"), Some(&a("alice")), "observability.sampling_rate")
                .unwrap(),
        )
        .unwrap(),
    ];
    for tenant in store.tenants() {
        out.push(snap(&store.snapshot(&tenant).unwrap()));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn failed_reload_of_any_kind_leaves_every_snapshot_byte_identical() {
    let good = || seed().with_tenant(t("globex"), "tenants/globex.toml", "");
    let store = PolicyStore::new(good()).unwrap();
    let handle = store.tenant_handle(&t("acme"));
    let before = observe(&store, &handle);
    let label_schema = "[keys.\"notes.label\"]\ntype = \"label\"\nscope = \"user\"\n";
    let bad: Vec<(&str, PolicySources)> = vec![
        (
            "malformed TOML",
            good().with_tenant(t("acme"), "tenants/acme.toml", "[observability\n"),
        ),
        (
            "unknown key",
            good().with_system("system.toml", "[observability]\nsampling_rat = 0.1\n"),
        ),
        (
            "wrong type",
            good().with_tenant(
                t("acme"),
                "tenants/acme.toml",
                "[observability]\nsampling_rate = \"high\"\n",
            ),
        ),
        (
            "out of range",
            good().with_user(
                t("acme"),
                a("alice"),
                "users/alice.toml",
                "[observability]\nsampling_rate = 7.0\n",
            ),
        ),
        (
            "tenant sets a system key",
            good().with_tenant(
                t("globex"),
                "tenants/globex.toml",
                "[observability]\nenabled = false\n",
            ),
        ),
        (
            "user sets a tenant key",
            good().with_user(
                t("acme"),
                a("alice"),
                "users/alice.toml",
                "[retention]\nevents_days = 1\n",
            ),
        ),
        (
            "user overrides a locked key",
            good().with_tenant(
                t("acme"),
                "tenants/acme.toml",
                "[policy]\nlock = [\"observability.sampling_rate\"]\n",
            ),
        ),
        (
            "invalid host schema",
            good().with_schema("schema.toml", "[keys.\"x\"]\ntype = \"bool\"\n"),
        ),
        (
            "invalid label",
            good().with_schema("schema.toml", label_schema).with_tenant(
                t("globex"),
                "tenants/globex.toml",
                "[notes]\nlabel = \"COSMIC\"\n",
            ),
        ),
        (
            "user of an unknown tenant",
            good().with_user(t("initech"), a("bob"), "users/initech/bob.toml", ""),
        ),
        (
            "one good change among the errors",
            good()
                .with_tenant(
                    t("globex"),
                    "tenants/globex.toml",
                    "[observability]\nsampling_rate = 0.9\n",
                )
                .with_tenant(t("acme"), "tenants/acme.toml", "bogus = 1\n"),
        ),
    ];
    for (what, sources) in bad {
        let errs = store.reload(sources).unwrap_err();
        assert!(!errs.is_empty(), "{what}");
        assert_eq!(observe(&store, &handle), before, "{what}");
    }
    // The store still reloads afterwards.
    let r = store
        .reload(good().with_tenant(
            t("globex"),
            "tenants/globex.toml",
            "[observability]\nsampling_rate = 0.9\n",
        ))
        .unwrap();
    assert_eq!((r.epoch, r.changed.clone()), (2, vec![t("globex")]));
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
    let subject = |roles: &[&str]| {
        Subject::new(
            t("acme"),
            a("x"),
            sy.role_set(roles),
            Label::BOTTOM,
            snap.label_scheme(),
        )
    };
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
        let subject = Subject::new(
            t("acme"),
            a("x"),
            store.symbols().role_set(["viewer"]),
            secret,
            &scheme,
        );
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

/// Keys of every scope, and how a small integer becomes a legal value of each (TOML, value).
const KEYS: [(&str, Scope); 4] = [
    ("observability.sampling_rate", Scope::User),
    ("observability.level", Scope::User),
    ("links.max_depth", Scope::Tenant),
    ("audit.queue_capacity", Scope::System),
];

fn legal(key: &str, n: u8) -> (String, Value) {
    match key {
        "observability.sampling_rate" => {
            let f = f64::from(n) / 100.0;
            (format!("{f:?}"), Value::Float(f))
        }
        "observability.level" => {
            let l = ["trace", "debug", "info", "warn", "error"][usize::from(n) % 5];
            (format!("\"{l}\""), Value::Str(l.into()))
        }
        "links.max_depth" => {
            let d = n % 64 + 1;
            (d.to_string(), Value::Int(i64::from(d)))
        }
        _ => ((u32::from(n) + 1).to_string(), Value::Int(i64::from(n) + 1)),
    }
}

fn doc(values: &[Option<u8>], extra: &str) -> String {
    let mut out = String::from(extra);
    for ((key, _), v) in KEYS.iter().zip(values) {
        if let Some(n) = v {
            out.push_str(&format!("{key} = {}\n", legal(key, *n).0));
        }
    }
    out
}

fn layer_values() -> impl Strategy<Value = Vec<Option<u8>>> {
    proptest::collection::vec(proptest::option::of(0u8..100), KEYS.len())
}

proptest! {
    /// Over keys of every scope, each layer setting any of them, and a tenant lock or not: when
    /// every override is legal, the highest layer that sets a key wins (value, provenance and
    /// `explain` agree); when any is illegal, the store refuses and names exactly the illegal
    /// (key, layer) pairs.
    #[test]
    fn merge_precedence_over_keys_of_every_scope(
        sys in layer_values(),
        ten in layer_values(),
        usr in layer_values(),
        lock in any::<bool>(),
    ) {
        let lock_line = if lock { "policy.lock = [\"observability.level\"]\n" } else { "" };
        let s = PolicySources::new()
            .with_system("system.toml", &doc(&sys, ""))
            .with_tenant(t("acme"), "tenants/acme.toml", &doc(&ten, lock_line))
            .with_user(t("acme"), a("u"), "users/acme/u.toml", &doc(&usr, ""));
        let mut illegal = Vec::new();
        for (i, (key, scope)) in KEYS.iter().enumerate() {
            // The scope rule, written out here rather than taken from the crate under test.
            if ten[i].is_some() && *scope == Scope::System {
                illegal.push((key.to_string(), Layer::Tenant, false));
            }
            if usr[i].is_some() && *scope != Scope::User {
                illegal.push((key.to_string(), Layer::User, false));
            } else if usr[i].is_some() && lock && *key == "observability.level" {
                illegal.push((key.to_string(), Layer::User, true));
            }
        }
        match PolicyStore::new(s) {
            Err(errs) => {
                let mut got: Vec<(String, Layer, bool)> = errs
                    .errors()
                    .iter()
                    .map(|e| (
                        e.key.clone().unwrap_or_default(),
                        e.layer,
                        e.kind == PolicyErrorKind::Locked,
                    ))
                    .collect();
                got.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
                illegal.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
                prop_assert!(!illegal.is_empty(), "refused a legal policy: {errs}");
                prop_assert_eq!(got, illegal);
            }
            Ok(store) => {
                prop_assert!(illegal.is_empty(), "accepted {:?}", illegal);
                let snap = store.user_snapshot(&t("acme"), &a("u")).unwrap();
                for (i, (key, _)) in KEYS.iter().enumerate() {
                    let (value, layer) = match (sys[i], ten[i], usr[i]) {
                        (_, _, Some(n)) => (legal(key, n).1, Layer::User),
                        (_, Some(n), _) => (legal(key, n).1, Layer::Tenant),
                        (Some(n), _, _) => (legal(key, n).1, Layer::System),
                        _ => (
                            nodus_policy::Schema::builtin().get(key).unwrap().default.clone().unwrap(),
                            Layer::Default,
                        ),
                    };
                    prop_assert_eq!(snap.get(key), Some(&value), "{}", key);
                    prop_assert_eq!(snap.provenance(key).unwrap().layer, layer, "{}", key);
                    let why = store.explain(&t("acme"), Some(&a("u")), key).unwrap();
                    prop_assert_eq!((why.value, why.layer), (value, layer));
                    // Each lower layer that set it is listed, lowest first, below the winner.
                    let lower: Vec<Layer> = why.lower.iter().map(|l| l.layer).collect();
                    let mut expected = vec![Layer::Default];
                    for (l, set) in [(Layer::System, sys[i]), (Layer::Tenant, ten[i]), (Layer::User, usr[i])] {
                        if set.is_some() && l < layer {
                            expected.push(l);
                        }
                    }
                    if layer == Layer::Default {
                        expected.clear();
                    }
                    prop_assert_eq!(lower, expected);
                }
            }
        }
    }

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
        let tenant = format!("{}{}", if ten { "[observability]\nenabled = false\n" } else { "" }, line("[retention]\nevents_days", other));
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
    let watcher = nodus_policy::PolicyWatcher::reloading(
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
