//! The typed allowed path makes zero heap allocations, audit enqueue included.
//!
//! `allocation-counter` replaces the global allocator in this test binary and counts only the
//! current thread's allocations, so the audit writer thread's work is not counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_core::Nodus;
use nodus_core::security::audit::Overflow;

fn check_zero_allocations(n: &Nodus) {
    let alice = ctx(n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    // Warm up: thread-local arc-swap debt slots, lazily created metric handles, etc.
    for i in 0..1_000 {
        n.invoke::<Ping>(&alice, i).unwrap();
    }
    let before = n.flush_audit().unwrap().checkpoint.size;
    let info = allocation_counter::measure(|| {
        for i in 0..1_000u64 {
            let out = n.invoke::<Ping>(&alice, i).unwrap();
            assert_eq!(out, i + 1);
        }
    });
    assert_eq!(info.count_total, 0, "typed invoke allocated: {info:?}");
    // The measured calls were audited: exactly one enqueued record each, all written.
    n.flush_audit().unwrap();
    assert_eq!(n.audit_log().size().unwrap(), before + 1_000);
    let last = n.audit_log().tail(1).unwrap().pop().unwrap().record;
    assert_eq!(last.command.as_deref(), Some("notes.ping"));
    assert_eq!(last.actor.unwrap().as_str(), "alice");
}

/// The counter is live in this binary: a JSON call whose input and output hold strings is seen
/// allocating — so a zero above is a measurement, not a missing allocator.
#[test]
fn the_counter_sees_allocations() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    let create = || {
        n.dispatch(&alice, "notes.create", r#"{"title":"x"}"#)
            .unwrap()
    };
    create();
    let info = allocation_counter::measure(|| {
        create();
    });
    assert!(info.count_total > 0, "{info:?}");
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(8));
    });
    assert_eq!(info.count_total, 1);
}

#[test]
fn typed_invoke_allocates_nothing_with_the_default_overflow() {
    let n = build_in_memory();
    check_zero_allocations(&n);
}

#[test]
fn typed_invoke_allocates_nothing_with_drop_with_marker() {
    let system = format!("{SYSTEM}\n");
    let system = system.replace(
        "durability = \"normal\"",
        "durability = \"normal\"\noverflow = \"drop_with_marker\"",
    );
    let sources = nodus_core::PolicySources::new()
        .with_system("system.toml", &system)
        .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_toml(false));
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources)
        .command(Ping)
        .build()
        .unwrap();
    assert_eq!(
        n.policy()
            .system_snapshot()
            .get_str("audit.overflow")
            .unwrap(),
        "drop_with_marker"
    );
    let _ = Overflow::DropWithMarker;
    check_zero_allocations(&n);
}

/// Commands intern their permissions after the policy is loaded; `build()` recompiles the
/// snapshots so the guard's RBAC check is a bitset test, never a pattern match.
#[test]
fn built_instances_decide_every_registered_permission_on_the_fast_path() {
    let n = build_in_memory();
    for t in n.policy().tenants() {
        let snap = n.policy().snapshot(&t).unwrap();
        assert!(
            snap.is_current(),
            "tenant `{t}` snapshot predates registered permissions"
        );
    }
    assert!(n.policy().system_snapshot().is_current());
    // And a reload keeps them current.
    n.reload_policy(sources(true)).unwrap();
    for t in n.policy().tenants() {
        assert!(n.policy().snapshot(&t).unwrap().is_current());
    }
}
