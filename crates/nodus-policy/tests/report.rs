//! A reload report split per tenant: each tenant's part holds only its own changes, and with the
//! system layer's part it adds up to the whole report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nodus_policy::{ActorId, PolicySources, PolicyStore, TenantId};

fn sources(
    system_rate: &str,
    acme_rate: &str,
    with_globex: bool,
    with_initech: bool,
) -> PolicySources {
    let t = |s: &str| TenantId::new(s).unwrap();
    let mut s = PolicySources::new()
        .with_system(
            "system.toml",
            &format!("[observability]\nsampling_rate = {system_rate}\n"),
        )
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            &format!("[observability]\nsampling_rate = {acme_rate}\n"),
        )
        .with_user(
            t("acme"),
            ActorId::new("alice").unwrap(),
            "users/acme/alice.toml",
            &format!(
                "[observability]\nlevel = \"{}\"\n",
                if acme_rate == "0.2" { "info" } else { "debug" }
            ),
        );
    if with_globex {
        s = s.with_tenant(t("globex"), "tenants/globex.toml", "");
    }
    if with_initech {
        s = s.with_tenant(t("initech"), "tenants/initech.toml", "");
    }
    s
}

#[test]
fn split_by_tenant_matches_for_tenant_and_adds_up() {
    let store = PolicyStore::new(sources("0.05", "0.2", true, false)).unwrap();
    // System changes, acme changes (and its user), globex removed, initech added.
    let report = store.reload(sources("0.06", "0.3", false, true)).unwrap();
    let parts = report.split_by_tenant();
    let names: Vec<&str> = parts.keys().map(|t| t.as_str()).collect();
    assert_eq!(names, vec!["acme", "globex", "initech"]);
    let system = report.system_part();
    assert!(!system.diff.is_empty());
    let mut total = system.diff.len();
    for (t, part) in &parts {
        let mut expected = report.for_tenant(t);
        expected.diff.retain(|k| k.tenant.is_some());
        assert_eq!(part, &expected, "{t}");
        assert!(part.diff.iter().all(|k| k.tenant.as_ref() == Some(t)));
        total += part.diff.len();
    }
    assert_eq!(total, report.diff.len());
    assert_eq!(
        parts[&TenantId::new("acme").unwrap()].changed_users.len(),
        1
    );
}
