//! The state layer: a cached value is served only under the same deciding inputs; invalidation,
//! TTL, weighted capacity and its runtime changes, counters.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use nodus_fabric::state::{CacheConfig, QuickStateStore, StateStore, Visibility, estimate_weight};
use nodus_policy::{LabelScheme, TenantId};
use proptest::prelude::*;
use serde_json::json;

fn scheme() -> LabelScheme {
    LabelScheme::new(["U", "C", "S", "TS"], ["CRYPTO"]).unwrap()
}

fn vis(label: &str, epoch: u64) -> Visibility {
    let s = scheme();
    Visibility::new(s.parse(label).unwrap(), s.id(), epoch)
}

fn t(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

#[test]
fn a_value_is_served_only_for_the_inputs_that_decided_it() {
    let cache = QuickStateStore::new("objects", CacheConfig::with_capacity(1 << 20));
    let v = Arc::new(json!({"title": "secret plans"}));
    cache.insert(&t("acme"), &vis("S", 3), "case/1", v.clone());
    assert_eq!(cache.get(&t("acme"), &vis("S", 3), "case/1"), Some(v));
    // Another clearance (lower or higher), another policy epoch, another scheme, another tenant,
    // another entity: never served.
    assert!(cache.get(&t("acme"), &vis("C", 3), "case/1").is_none());
    assert!(cache.get(&t("acme"), &vis("TS", 3), "case/1").is_none());
    assert!(
        cache
            .get(&t("acme"), &vis("S//CRYPTO", 3), "case/1")
            .is_none()
    );
    assert!(cache.get(&t("acme"), &vis("S", 4), "case/1").is_none());
    let renamed = LabelScheme::new(["U", "C", "SECRET", "TS"], ["CRYPTO"]).unwrap();
    let same_bits = Visibility::new(renamed.parse("SECRET").unwrap(), renamed.id(), 3);
    assert!(cache.get(&t("acme"), &same_bits, "case/1").is_none());
    assert!(cache.get(&t("globex"), &vis("S", 3), "case/1").is_none());
    assert!(cache.get(&t("acme"), &vis("S", 3), "case/2").is_none());
    let r = cache.report();
    assert_eq!((r.hits, r.misses, r.inserts), (1, 7, 1));
}

#[test]
fn a_write_in_a_tenant_invalidates_only_that_tenant() {
    let cache = QuickStateStore::new("objects", CacheConfig::with_capacity(1 << 20));
    for tenant in ["acme", "globex"] {
        cache.insert(&t(tenant), &vis("U", 1), "case/1", Arc::new(json!(1)));
    }
    cache.invalidate_tenant(&t("acme"));
    assert!(cache.get(&t("acme"), &vis("U", 1), "case/1").is_none());
    assert!(cache.get(&t("globex"), &vis("U", 1), "case/1").is_some());
    // New entries after the invalidation are served again.
    cache.insert(&t("acme"), &vis("U", 1), "case/1", Arc::new(json!(2)));
    assert_eq!(
        *cache.get(&t("acme"), &vis("U", 1), "case/1").unwrap(),
        json!(2)
    );
    cache.clear();
    assert!(cache.get(&t("globex"), &vis("U", 1), "case/1").is_none());
    assert_eq!(cache.report().entries, 0);
}

#[test]
fn entries_expire_after_the_ttl() {
    let cache = QuickStateStore::new(
        "objects",
        CacheConfig::with_capacity(1 << 20).ttl(Duration::from_millis(1)),
    );
    cache.insert(&t("acme"), &vis("U", 1), "a", Arc::new(json!(1)));
    std::thread::sleep(Duration::from_millis(20));
    assert!(cache.get(&t("acme"), &vis("U", 1), "a").is_none());
    assert_eq!(cache.report().entries, 0, "the expired entry was removed");
    // No TTL: kept.
    cache.configure(CacheConfig::with_capacity(1 << 20).ttl(Duration::ZERO));
    cache.insert(&t("acme"), &vis("U", 1), "a", Arc::new(json!(1)));
    std::thread::sleep(Duration::from_millis(20));
    assert!(cache.get(&t("acme"), &vis("U", 1), "a").is_some());
    assert_eq!(cache.report().config.ttl, None);
}

#[test]
fn capacity_is_weighted_and_changes_at_runtime() {
    let cache = QuickStateStore::new("objects", CacheConfig::with_capacity(64 * 1024));
    let value = Arc::new(json!({"body": "x".repeat(1000)}));
    let w = estimate_weight(&value);
    assert!(w > 1000);
    for i in 0..500 {
        cache.insert(
            &t("acme"),
            &vis("U", 1),
            &format!("case/{i}"),
            value.clone(),
        );
    }
    let r = cache.report();
    assert!(r.weight <= 64 * 1024, "{r:?}");
    assert!(r.entries < 500 && r.entries > 10, "{r:?}");
    assert!(r.evictions > 0, "{r:?}");
    assert_eq!(r.inserts, 500);
    // Shrinking evicts down to the new capacity at once.
    cache.configure(CacheConfig::with_capacity(8 * 1024));
    let r = cache.report();
    assert!(r.weight <= 8 * 1024, "{r:?}");
    assert_eq!(r.config.capacity_bytes, 8 * 1024);
    // Zero turns the cache off: nothing is kept.
    cache.configure(CacheConfig::with_capacity(0));
    cache.insert(&t("acme"), &vis("U", 1), "x", value);
    assert_eq!(cache.report().entries, 0);
    assert!(cache.get(&t("acme"), &vis("U", 1), "x").is_none());
}

#[test]
fn concurrent_readers_and_writers_never_see_another_decision() {
    let cache = Arc::new(QuickStateStore::new(
        "objects",
        CacheConfig::with_capacity(1 << 20),
    ));
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let label = ["U", "C", "S", "TS"][n];
                for i in 0..2000 {
                    let entity = format!("e{}", i % 50);
                    cache.insert(&t("acme"), &vis(label, 1), &entity, Arc::new(json!(label)));
                    if let Some(v) = cache.get(&t("acme"), &vis(label, 1), &entity) {
                        assert_eq!(*v, json!(label));
                    }
                    if i % 100 == 0 {
                        cache.invalidate_tenant(&t("acme"));
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
}

proptest! {
    /// Law: a get hits only if the same (tenant, visibility, entity) was inserted after the last
    /// invalidation of the tenant (with capacity to spare, nothing is evicted).
    #[test]
    fn hits_exactly_when_inserted_since_the_last_invalidation(
        ops in proptest::collection::vec((0u8..3, 0usize..2, 0usize..3, 0u64..2, 0usize..3), 1..200)
    ) {
        let cache = QuickStateStore::new("objects", CacheConfig::with_capacity(1 << 24));
        let tenants = ["acme", "globex"];
        let labels = ["U", "S", "S//CRYPTO"];
        let mut model = std::collections::HashSet::new();
        for (op, tn, lb, ep, ent) in ops {
            let (tenant, v, entity) = (t(tenants[tn]), vis(labels[lb], ep), format!("e{ent}"));
            match op {
                0 => {
                    cache.insert(&tenant, &v, &entity, Arc::new(json!(ent)));
                    model.insert((tn, lb, ep, ent));
                }
                1 => {
                    let hit = cache.get(&tenant, &v, &entity).is_some();
                    prop_assert_eq!(hit, model.contains(&(tn, lb, ep, ent)));
                }
                _ => {
                    cache.invalidate_tenant(&tenant);
                    model.retain(|k| k.0 != tn);
                }
            }
        }
    }
}
