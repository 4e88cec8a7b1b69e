//! Keys seal only for their scope: a tenant's key is used only under that tenant's envelope
//! context, a system key only under a system context — for `seal`, `open` and `rewrap`, checked
//! before any cryptography, with an error that names the key and the caller's scope only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_policy::TenantId;
use nodus_security::vault::{
    EnvelopeContext, KeyAlgorithm, KeyId, KeyScope, MasterKey, SecretVault, SoftVault, VaultError,
    check_key_scope,
};
use proptest::prelude::*;

/// The other tenant's name is distinctive so that any leak of it into error text is found.
const THEIRS: &str = "globex-private-name";

fn tid(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn vault() -> SoftVault {
    SoftVault::in_memory(MasterKey::from_bytes([9; 32])).unwrap()
}

fn key(v: &SoftVault, scope: &KeyScope) -> KeyId {
    v.generate(scope, "fields", KeyAlgorithm::XChaCha20Poly1305)
        .unwrap()
        .id
}

/// The number of envelopes sealed with any version of `k`.
fn encryptions(v: &SoftVault, k: &KeyId) -> u64 {
    v.list(None)
        .unwrap()
        .iter()
        .filter(|m| &m.id == k)
        .map(|m| m.encryptions)
        .sum()
}

/// Asserts `r` is the scope refusal for key `k` (of `scope`) in the context scope `context`, and
/// that its text names the key id and the caller's scope, never the key's own tenant.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    r: Result<T, VaultError>,
    k: &KeyId,
    scope: &KeyScope,
    context: &str,
) {
    let e = r.unwrap_err();
    assert_eq!(
        e,
        VaultError::ScopeMismatch {
            key: k.to_string(),
            context: context.to_owned(),
        }
    );
    assert_eq!(e.code(), "ScopeMismatch");
    let text = e.to_string();
    assert!(text.contains(&format!("`{k}`")), "{text}");
    assert!(text.contains(&format!("`{context}`")), "{text}");
    if let KeyScope::Tenant(t) = scope {
        assert!(!text.contains(t.as_str()), "the key's tenant leaks: {text}");
    }
    assert!(text.starts_with(char::is_lowercase), "{text}");
}

#[test]
fn another_tenants_key_is_refused_for_seal_open_and_rewrap() {
    let v = vault();
    let (acme, globex) = (tid("acme"), tid(THEIRS));
    let their_scope = KeyScope::Tenant(globex.clone());
    let theirs = key(&v, &their_scope);
    let ours = EnvelopeContext::tenant(&acme, "notes", "n1", "body");
    let their_ctx = EnvelopeContext::tenant(&globex, "notes", "n1", "body");

    // Seal: globex's key under acme's context.
    assert_refused(
        v.seal(&theirs, b"secret", &ours),
        &theirs,
        &their_scope,
        "tenant:acme",
    );
    assert_eq!(encryptions(&v, &theirs), 0, "a refused seal is not counted");

    // Open and rewrap: an envelope whose header names globex's key, under acme's context (the
    // same table, entity and field, so only the tenant differs).
    let sealed = v.seal(&theirs, b"secret", &their_ctx).unwrap();
    assert_eq!(encryptions(&v, &theirs), 1);
    assert_refused(v.open(&sealed, &ours), &theirs, &their_scope, "tenant:acme");
    assert_refused(
        v.rewrap(&sealed, &ours),
        &theirs,
        &their_scope,
        "tenant:acme",
    );
    assert_eq!(
        encryptions(&v, &theirs),
        1,
        "a refused rewrap is not counted"
    );
    // The owner still opens and rewraps it.
    assert_eq!(&*v.open(&sealed, &their_ctx).unwrap(), b"secret");
    let re = v.rewrap(&sealed, &their_ctx).unwrap();
    assert_eq!(&*v.open(&re, &their_ctx).unwrap(), b"secret");
}

#[test]
fn a_system_key_needs_a_system_context_and_a_tenant_key_a_tenant_context() {
    let v = vault();
    let acme = tid("acme");
    let system = key(&v, &KeyScope::System);
    let acme_scope = KeyScope::Tenant(acme.clone());
    let tenant = key(&v, &acme_scope);
    let sys_ctx = EnvelopeContext::system("settings", "smtp", "password");
    let acme_ctx = EnvelopeContext::tenant(&acme, "settings", "smtp", "password");

    // A system key under a tenant's context.
    assert_refused(
        v.seal(&system, b"s", &acme_ctx),
        &system,
        &KeyScope::System,
        "tenant:acme",
    );
    let sys_sealed = v.seal(&system, b"s", &sys_ctx).unwrap();
    assert_refused(
        v.open(&sys_sealed, &acme_ctx),
        &system,
        &KeyScope::System,
        "tenant:acme",
    );
    assert_refused(
        v.rewrap(&sys_sealed, &acme_ctx),
        &system,
        &KeyScope::System,
        "tenant:acme",
    );

    // A tenant's key under a system context.
    assert_refused(
        v.seal(&tenant, b"t", &sys_ctx),
        &tenant,
        &acme_scope,
        "system",
    );
    let acme_sealed = v.seal(&tenant, b"t", &acme_ctx).unwrap();
    assert_refused(
        v.open(&acme_sealed, &sys_ctx),
        &tenant,
        &acme_scope,
        "system",
    );
    assert_refused(
        v.rewrap(&acme_sealed, &sys_ctx),
        &tenant,
        &acme_scope,
        "system",
    );

    // Each in its own scope works, rewrap included.
    assert_eq!(&*v.open(&sys_sealed, &sys_ctx).unwrap(), b"s");
    assert_eq!(&*v.open(&acme_sealed, &acme_ctx).unwrap(), b"t");
    let re = v.rewrap(&sys_sealed, &sys_ctx).unwrap();
    assert_eq!(&*v.open(&re, &sys_ctx).unwrap(), b"s");
    let re = v.rewrap(&acme_sealed, &acme_ctx).unwrap();
    assert_eq!(&*v.open(&re, &acme_ctx).unwrap(), b"t");
    // One seal and one rewrap each: refusals counted nothing.
    assert_eq!(encryptions(&v, &system), 2);
    assert_eq!(encryptions(&v, &tenant), 2);
}

/// The scope is checked first: another tenant learns neither the key's algorithm nor the state of
/// the version an envelope names.
#[test]
fn the_scope_is_checked_before_algorithm_and_key_state() {
    let v = vault();
    let (acme, globex) = (tid("acme"), tid(THEIRS));
    let ours = EnvelopeContext::tenant(&acme, "notes", "n1", "body");
    let their_ctx = EnvelopeContext::tenant(&globex, "notes", "n1", "body");
    let their_scope = KeyScope::Tenant(globex.clone());

    // A signing key of theirs: not `WrongAlgorithm`.
    let signing = v
        .generate(&their_scope, "sign", KeyAlgorithm::Ed25519)
        .unwrap()
        .id;
    assert_refused(
        v.seal(&signing, b"m", &ours),
        &signing,
        &their_scope,
        "tenant:acme",
    );

    // A destroyed and a disabled version of theirs: not `KeyDestroyed` / `KeyDisabled`.
    let theirs = key(&v, &their_scope);
    let v1 = v.seal(&theirs, b"old", &their_ctx).unwrap();
    v.rotate(&theirs).unwrap();
    let v2 = v.seal(&theirs, b"mid", &their_ctx).unwrap();
    v.rotate(&theirs).unwrap();
    v.destroy(&theirs, 1).unwrap();
    v.disable(&theirs, 2).unwrap();
    assert!(matches!(
        v.open(&v1, &their_ctx),
        Err(VaultError::KeyDestroyed { version: 1, .. })
    ));
    assert!(matches!(
        v.open(&v2, &their_ctx),
        Err(VaultError::KeyDisabled { version: 2, .. })
    ));
    for envelope in [&v1, &v2] {
        assert_refused(
            v.open(envelope, &ours),
            &theirs,
            &their_scope,
            "tenant:acme",
        );
        assert_refused(
            v.rewrap(envelope, &ours),
            &theirs,
            &their_scope,
            "tenant:acme",
        );
    }

    // An unknown key stays `UnknownKey` for seal and the opaque error for open.
    let unknown = KeyId::parse("k000102030405060708090a0b0c0d0e0f").unwrap();
    assert!(matches!(
        v.seal(&unknown, b"m", &ours),
        Err(VaultError::UnknownKey(_))
    ));
}

/// The constructors build exactly the contexts the struct literal builds, so envelopes sealed
/// before them keep opening.
#[test]
fn context_constructors_match_the_struct_form() {
    let acme = tid("acme");
    assert_eq!(
        EnvelopeContext::tenant(&acme, "t", "e", "f"),
        EnvelopeContext {
            tenant: Some(&acme),
            table: "t",
            entity_id: "e",
            field: "f",
        }
    );
    assert_eq!(
        EnvelopeContext::system("t", "e", "f"),
        EnvelopeContext {
            tenant: None,
            table: "t",
            entity_id: "e",
            field: "f",
        }
    );
    let v = vault();
    let k = key(&v, &KeyScope::Tenant(acme.clone()));
    let literal = EnvelopeContext {
        tenant: Some(&acme),
        table: "t",
        entity_id: "e",
        field: "f",
    };
    let sealed = v.seal(&k, b"x", &literal).unwrap();
    assert_eq!(
        &*v.open(&sealed, &EnvelopeContext::tenant(&acme, "t", "e", "f"))
            .unwrap(),
        b"x"
    );
}

/// Every (key scope, context scope) pair, for every operation: allowed exactly when the scopes
/// are the same, else `ScopeMismatch` naming the context's scope.
#[test]
fn every_scope_combination() {
    let v = vault();
    let tenants = [tid("acme"), tid(THEIRS)];
    let scopes = [
        KeyScope::System,
        KeyScope::Tenant(tenants[0].clone()),
        KeyScope::Tenant(tenants[1].clone()),
    ];
    let ctx_tenants: [Option<&TenantId>; 3] = [None, Some(&tenants[0]), Some(&tenants[1])];
    fn ctx_of(t: Option<&TenantId>) -> EnvelopeContext<'_> {
        match t {
            None => EnvelopeContext::system("notes", "n1", "body"),
            Some(t) => EnvelopeContext::tenant(t, "notes", "n1", "body"),
        }
    }
    let mut refused = 0;
    for scope in &scopes {
        let k = key(&v, scope);
        let own = match scope {
            KeyScope::System => ctx_of(None),
            KeyScope::Tenant(t) => ctx_of(Some(t)),
        };
        let sealed = v.seal(&k, b"payload", &own).unwrap();
        for t in ctx_tenants {
            let ctx = ctx_of(t);
            let same = match (scope, t) {
                (KeyScope::System, None) => true,
                (KeyScope::Tenant(a), Some(b)) => a == b,
                _ => false,
            };
            assert_eq!(ctx.admits(scope), same, "{scope:?} under {t:?}");
            assert_eq!(check_key_scope(&k, scope, &ctx).is_ok(), same);
            let context = t.map_or("system".to_owned(), |t| format!("tenant:{t}"));
            if same {
                let again = v.seal(&k, b"payload", &ctx).unwrap();
                assert_eq!(&*v.open(&again, &ctx).unwrap(), b"payload");
                assert_eq!(&*v.open(&sealed, &ctx).unwrap(), b"payload");
                let re = v.rewrap(&sealed, &ctx).unwrap();
                assert_eq!(&*v.open(&re, &ctx).unwrap(), b"payload");
            } else {
                let before = encryptions(&v, &k);
                assert_refused(v.seal(&k, b"payload", &ctx), &k, scope, &context);
                assert_refused(v.open(&sealed, &ctx), &k, scope, &context);
                assert_refused(v.rewrap(&sealed, &ctx), &k, scope, &context);
                assert_eq!(encryptions(&v, &k), before);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 6, "six of the nine pairs are mismatched");
}

fn scope_name() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ab]{1,2}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any key scope and context scope: seal succeeds exactly when they are the same; when
    /// they differ, the error never names the key's tenant.
    #[test]
    fn seal_succeeds_exactly_in_the_keys_own_scope(
        key_tenant in scope_name(),
        ctx_tenant in scope_name(),
        pt in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let v = vault();
        let key_tid = key_tenant.as_deref().map(tid);
        let ctx_tid = ctx_tenant.as_deref().map(tid);
        let scope = key_tid.clone().map_or(KeyScope::System, KeyScope::Tenant);
        let k = key(&v, &scope);
        let ctx = EnvelopeContext { tenant: ctx_tid.as_ref(), table: "t", entity_id: "e", field: "f" };
        match v.seal(&k, &pt, &ctx) {
            Ok(sealed) => {
                prop_assert_eq!(&key_tenant, &ctx_tenant);
                prop_assert_eq!(&**v.open(&sealed, &ctx).unwrap(), pt.as_slice());
            }
            Err(e) => {
                prop_assert_ne!(&key_tenant, &ctx_tenant);
                prop_assert_eq!(e.code(), "ScopeMismatch");
                let context = ctx_tenant.as_ref().map_or("system".to_owned(), |t| format!("tenant:{t}"));
                prop_assert_eq!(&e, &VaultError::ScopeMismatch { key: k.to_string(), context });
                // The message names the caller's scope, never the key's.
                if let Some(kt) = &key_tenant {
                    let leak = format!("`tenant:{kt}`");
                    prop_assert!(!e.to_string().contains(&leak), "{}", e);
                }
            }
        }
    }
}
