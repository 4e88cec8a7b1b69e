//! Tenants are walls: contexts cannot be forged, subjects belong to one tenant, a handler panic
//! leaves evidence, every reload path is audited, and a label-scheme change never reinterprets a
//! live session's clearance. Every test goes through the public API, as a host would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nodus_core::policy::PolicyStore;
use nodus_core::registry::commands::ContextIssuer;
use nodus_core::registry::events::Scope;
use nodus_core::registry::rate::RateTable;
use nodus_core::security::audit::Outcome;
use nodus_core::{
    Command, CommandError, CommandSpec, Context, DenyReason, DispatchError, Nodus, PolicySources,
    Subject,
};

type Row = (String, String, Outcome, Option<String>, Option<String>);

/// The last `n` audit records as (kind, command, outcome, reason, tenant).
fn rows(nodus: &Nodus, n: usize) -> Vec<Row> {
    nodus.flush_audit().unwrap();
    nodus
        .audit_log()
        .tail(n)
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.record.kind.to_string(),
                r.record.command.as_deref().unwrap_or("").to_owned(),
                r.record.outcome,
                r.record.reason.as_deref().map(str::to_owned),
                r.record.tenant.as_ref().map(|t| t.to_string()),
            )
        })
        .collect()
}

fn denial(e: DispatchError) -> DenyReason {
    e.denial()
        .unwrap_or_else(|| panic!("not a denial: {e}"))
        .reason
}

fn note() -> NewNote {
    NewNote {
        title: "t".into(),
        tags: vec![],
    }
}

/// Viewers of acme may create notes; viewers of globex may not.
fn build() -> Nodus {
    Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(true))
        .command(CreateNote)
        .command(ReadReport)
        .command(Ping)
        .command(Panics)
        .build()
        .unwrap()
}

// ---- item 1: contexts cannot be forged ----------------------------------------------------------

/// A host can no longer attach tenant A's policy handle and rate cells to a context for tenant B:
/// the only public binder is a `ContextIssuer`, and an instance honours only its own private one.
/// A context bound elsewhere is decided against its *own* tenant's policy, and audited as it.
#[test]
fn a_context_bound_by_anyone_else_is_never_trusted_as_bound() {
    let n = build();
    // Tenant A (acme) grants viewers `notes.create`; tenant B (globex) does not.
    let acme_store = Arc::new(PolicyStore::new(sources(true)).unwrap());
    let acme_handle = acme_store.tenant_handle(&tenant("acme"));
    let cells = RateTable::new().cells(&tenant("acme"), &actor("bob"), 8);
    let globex_bob = n
        .subject(&tenant("globex"), actor("bob"), &["viewer"], "UNCLASSIFIED")
        .unwrap();
    let forged = ContextIssuer::new().issue(tenant("globex"), globex_bob, "s", acme_handle, cells);
    assert!(forged.is_bound());
    assert_eq!(
        denial(n.invoke::<CreateNote>(&forged, note()).unwrap_err()),
        DenyReason::MissingPermission,
        "decided with globex's grants, not the forged binding's"
    );
    assert_eq!(
        denial(
            n.dispatch(&forged, "notes.create", r#"{"title":"t"}"#)
                .unwrap_err()
        ),
        DenyReason::MissingPermission
    );
    let got = rows(&n, 2);
    for row in got {
        assert_eq!(row.4.as_deref(), Some("globex"));
        assert_eq!(row.3.as_deref(), Some("MissingPermission"));
    }
    // The same subject, through the instance's own context, is decided the same way.
    let own = ctx(&n, "globex", "bob", &["viewer"], "UNCLASSIFIED");
    assert_eq!(
        denial(n.invoke::<CreateNote>(&own, note()).unwrap_err()),
        DenyReason::MissingPermission
    );
    // A context another *instance* issued is not trusted either.
    let other = build();
    let from_other = ctx(&other, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    assert!(n.invoke::<CreateNote>(&from_other, note()).is_ok());
}

// ---- item 2: subjects belong to a tenant --------------------------------------------------------

#[test]
fn a_subject_of_another_tenant_is_refused_and_audited() {
    let n = build();
    // An acme admin placed in a globex context: refused, not evaluated against globex's `admin`.
    let acme_admin = n
        .subject(&tenant("acme"), actor("root"), &["admin"], "UNCLASSIFIED")
        .unwrap();
    let issued = n.context(&tenant("globex"), acme_admin.clone(), "s");
    let unbound = Context::new(tenant("globex"), acme_admin, "s");
    for c in [&issued, &unbound] {
        assert_eq!(
            denial(n.invoke::<Ping>(c, 1).unwrap_err()),
            DenyReason::TenantMismatch
        );
        assert_eq!(
            denial(n.dispatch(c, "notes.ping", "1").unwrap_err()),
            DenyReason::TenantMismatch
        );
        // Refused before anything is parsed.
        assert_eq!(
            denial(n.dispatch(c, "notes.ping", "not json").unwrap_err()),
            DenyReason::TenantMismatch
        );
    }
    let got = rows(&n, 6);
    assert!(
        got.iter()
            .all(|r| r.2 == Outcome::Denied && r.3.as_deref() == Some("TenantMismatch")),
        "{got:?}"
    );
    // A subject made by hand for globex works there.
    let scheme = n.policy().system_snapshot().label_scheme().clone();
    let s = Subject::new(
        tenant("globex"),
        actor("root"),
        n.policy().symbols().role_set(["admin"]),
        nodus_core::Label::BOTTOM,
        &scheme,
    );
    assert_eq!(
        n.invoke::<Ping>(&n.context(&tenant("globex"), s, "s"), 1)
            .unwrap(),
        2
    );
}

// ---- item 5: keys seal only for their scope ----------------------------------------------------

#[test]
fn the_instance_vault_refuses_and_audits_a_key_used_outside_its_scope() {
    use nodus_core::security::vault::{EnvelopeContext, KeyAlgorithm, KeyScope};
    let n = build();
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let vault = n.vault();
    let globex_key = vault
        .generate(
            &KeyScope::Tenant(globex.clone()),
            "fields",
            KeyAlgorithm::XChaCha20Poly1305,
        )
        .unwrap();
    let system_key = vault
        .generate(
            &KeyScope::System,
            "backups",
            KeyAlgorithm::XChaCha20Poly1305,
        )
        .unwrap();
    let acme_ctx = EnvelopeContext::tenant(&acme, "notes", "n1", "body");
    let globex_ctx = EnvelopeContext::tenant(&globex, "notes", "n1", "body");
    let system_ctx = EnvelopeContext::system("backups", "b1", "blob");
    let before = n.flush_audit().unwrap().checkpoint.size;
    // Tenant B's key under tenant A's context: refused, for seal, open and rewrap.
    let e = vault.seal(&globex_key.id, b"x", &acme_ctx).unwrap_err();
    assert_eq!(e.code(), "ScopeMismatch");
    assert!(!e.to_string().contains("globex"), "{e}");
    let sealed = vault.seal(&globex_key.id, b"x", &globex_ctx).unwrap();
    assert_eq!(
        vault.open(&sealed, &acme_ctx).unwrap_err().code(),
        "ScopeMismatch"
    );
    assert_eq!(
        vault.rewrap(&sealed, &acme_ctx).unwrap_err().code(),
        "ScopeMismatch"
    );
    // A system key needs an explicit system context; a tenant context is refused.
    assert_eq!(
        vault
            .seal(&system_key.id, b"x", &acme_ctx)
            .unwrap_err()
            .code(),
        "ScopeMismatch"
    );
    assert!(vault.seal(&system_key.id, b"x", &system_ctx).is_ok());
    assert_eq!(&*vault.open(&sealed, &globex_ctx).unwrap(), b"x");
    // Four refusals, four records, each naming the caller's tenant and never the key's.
    n.flush_audit().unwrap();
    let after = n.audit_log().size().unwrap();
    let recs = n.audit_log().tail((after - before) as usize).unwrap();
    let denied: Vec<_> = recs
        .iter()
        .filter(|r| r.record.kind == "vault.scope_denied")
        .collect();
    assert_eq!(denied.len(), 4);
    for r in denied {
        assert_eq!(r.record.outcome, Outcome::Denied);
        assert_eq!(r.record.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
        assert!(!format!("{:?}", r.record.detail).contains("globex"));
    }
}

// ---- item 6: a panicking handler leaves evidence ------------------------------------------------

/// `notes.panic`: panics with a message that must not reach the error or the audit record.
struct Panics;
impl Command for Panics {
    type Input = u64;
    type Output = u64;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.panic").permission("notes.read")
    }
    fn call(&self, _ctx: &Context, input: u64) -> Result<u64, CommandError> {
        if input > 0 {
            panic!("secret-in-panic-message");
        }
        Ok(0)
    }
}

#[test]
fn a_panicking_handler_is_audited_once_and_the_instance_keeps_serving() {
    let n = build();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let before = n.flush_audit().unwrap().checkpoint.size;
    let e = n.invoke::<Panics>(&bob, 1).unwrap_err();
    assert!(matches!(e, DispatchError::HandlerPanicked { .. }), "{e:?}");
    assert_eq!(e.code(), "HandlerPanicked");
    assert!(!e.to_string().contains("secret-in-panic-message"));
    let e = n.dispatch(&bob, "notes.panic", "1").unwrap_err();
    assert_eq!(e.code(), "HandlerPanicked");
    assert_eq!(e.to_json()["code"], "HandlerPanicked");
    // Exactly one outcome record per call.
    let after = n.flush_audit().unwrap().checkpoint.size;
    assert_eq!(after - before, 2);
    let got = rows(&n, 2);
    for r in &got {
        assert_eq!(
            (r.1.as_str(), r.2, r.3.as_deref()),
            ("notes.panic", Outcome::Error, Some("HandlerPanicked"))
        );
    }
    let tail = n.audit_log().tail(2).unwrap();
    for r in tail {
        assert!(!format!("{:?}", r.record).contains("secret-in-panic-message"));
    }
    // The instance keeps serving, on the same and on other threads.
    assert_eq!(n.invoke::<Ping>(&bob, 1).unwrap(), 2);
    let n2 = n.clone();
    let bob2 = bob.clone();
    std::thread::spawn(move || assert_eq!(n2.invoke::<Panics>(&bob2, 0).unwrap(), 0))
        .join()
        .unwrap();
    assert!(n.verify_audit().unwrap().valid);
}

// ---- item 7: every reload path is audited and published -----------------------------------------

/// Replaces a file atomically (write aside, rename), as an editor or deploy tool does: the watcher
/// never sees a half-written file.
fn replace(dir: &std::path::Path, file: &str, text: &str) {
    // Beside the policy directory, not in it (the loader reads every file there).
    let tmp = dir.with_extension("edit");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn write_policy_dir(dir: &std::path::Path, acme: &str) {
    std::fs::create_dir_all(dir.join("tenants")).unwrap();
    std::fs::write(dir.join("system.toml"), SYSTEM).unwrap();
    std::fs::write(dir.join("tenants/acme.toml"), acme).unwrap();
}

/// Polls `cond` until it holds or a generous deadline passes (no timing assertion: a slow machine
/// only waits longer).
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn the_policy_watcher_reloads_through_the_audited_path() {
    let dir = tempfile::tempdir().unwrap();
    write_policy_dir(dir.path(), &tenant_toml(false));
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy_dir(dir.path())
        .command(CreateNote)
        .build()
        .unwrap();
    let events = n
        .events()
        .subscribe("policy.*", Scope::AllTenants, 8)
        .unwrap();
    n.watch_policy(Duration::from_millis(20)).unwrap();
    assert!(matches!(
        n.watch_policy(Duration::from_millis(20)),
        Err(nodus_core::WatchError::AlreadyWatching)
    ));
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    assert!(n.invoke::<CreateNote>(&bob, note()).is_err());
    let epoch = n.policy().epoch();

    // A valid edit: reloaded, audited, published; the live context sees it.
    replace(dir.path(), "tenants/acme.toml", &tenant_toml(true));
    assert!(eventually(|| n.policy().epoch() > epoch));
    assert!(n.invoke::<CreateNote>(&bob, note()).is_ok());
    let ev = events.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(&*ev.topic, "policy.reloaded");
    let reloads = |n: &Nodus| {
        n.flush_audit().unwrap();
        n.audit_log()
            .tail(64)
            .unwrap()
            .into_iter()
            .filter(|r| r.record.kind == "policy.reloaded")
            .map(|r| r.record.outcome)
            .collect::<Vec<_>>()
    };
    assert_eq!(reloads(&n), vec![Outcome::Allowed]);

    // An invalid edit: nothing changes, and the failure is audited too.
    let epoch = n.policy().epoch();
    replace(
        dir.path(),
        "tenants/acme.toml",
        "[observability]\nsampling_rate = 7\n",
    );
    assert!(eventually(|| reloads(&n).len() == 2));
    assert_eq!(reloads(&n), vec![Outcome::Allowed, Outcome::Error]);
    assert_eq!(n.policy().epoch(), epoch);
    assert!(n.invoke::<CreateNote>(&bob, note()).is_ok());

    // Shutdown stops and joins the watcher; no reload happens after it.
    n.shutdown().unwrap();
    replace(dir.path(), "tenants/acme.toml", &tenant_toml(false));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(n.policy().epoch(), epoch);
    assert!(matches!(
        n.watch_policy(Duration::from_millis(20)),
        Err(nodus_core::WatchError::ShutDown)
    ));
}

#[test]
fn in_memory_policy_has_nothing_to_watch_and_dropping_the_instance_stops_the_watcher() {
    let n = build();
    assert!(matches!(
        n.watch_policy(Duration::from_millis(5)),
        Err(nodus_core::WatchError::NoDirectory)
    ));
    let dir = tempfile::tempdir().unwrap();
    write_policy_dir(dir.path(), &tenant_toml(false));
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy_dir(dir.path())
        .build()
        .unwrap();
    n.watch_policy(Duration::from_millis(5)).unwrap();
    // Dropping the last handle shuts the instance down and joins the watcher (this returns).
    drop(n);
}

// ---- item 8: labels never change meaning silently -----------------------------------------------

fn with_levels(levels: &str) -> PolicySources {
    // SYSTEM opens with a `[mac]` table.
    let system = SYSTEM.replacen("[mac]\n", &format!("[mac]\nlevels = {levels}\n"), 1);
    PolicySources::new()
        .with_system("system.toml", &system)
        .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_toml(true))
        .with_tenant(tenant("globex"), "tenants/globex.toml", &tenant_toml(false))
}

#[test]
fn a_label_scheme_change_makes_live_sessions_stale_never_reinterpreted() {
    let n = build();
    let classic = r#"["UNCLASSIFIED", "CONFIDENTIAL", "SECRET", "TOP SECRET"]"#;
    n.reload_policy(with_levels(classic)).unwrap();
    let secret = ctx(&n, "acme", "sam", &["editor"], "SECRET//CRYPTO");
    assert!(n.invoke::<ReadReport>(&secret, ()).is_ok());

    // A reload that keeps the scheme keeps sessions valid.
    n.reload_policy(with_levels(classic)).unwrap();
    assert!(n.invoke::<ReadReport>(&secret, ()).is_ok());

    // Reordered: level index 2 now means TOP SECRET. The session is stale, on every command.
    let reordered = r#"["UNCLASSIFIED", "CONFIDENTIAL", "TOP SECRET", "SECRET"]"#;
    n.reload_policy(with_levels(reordered)).unwrap();
    assert_eq!(
        denial(n.invoke::<ReadReport>(&secret, ()).unwrap_err()),
        DenyReason::SessionStale
    );
    assert_eq!(
        denial(n.invoke::<Ping>(&secret, 1).unwrap_err()),
        DenyReason::SessionStale
    );
    let got = rows(&n, 2);
    assert!(
        got.iter().all(|r| r.3.as_deref() == Some("SessionStale")),
        "{got:?}"
    );
    // Re-resolved under the new scheme, SECRET is below `reports.read`'s SECRET//CRYPTO.
    let again = ctx(&n, "acme", "sam", &["editor"], "SECRET//CRYPTO");
    assert!(n.invoke::<ReadReport>(&again, ()).is_ok());

    // Renamed: the same positions, other names. Stale again.
    let renamed = r#"["PUBLIC", "INTERNAL", "TOP SECRET", "SECRET"]"#;
    n.reload_policy(with_levels(renamed)).unwrap();
    assert_eq!(
        denial(n.invoke::<Ping>(&again, 1).unwrap_err()),
        DenyReason::SessionStale
    );
}
