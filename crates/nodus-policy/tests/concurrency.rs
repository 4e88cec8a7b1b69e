//! Readers take snapshots in a loop while a writer reloads alternating policies ≥ 1,000 times:
//! every snapshot a reader sees is one that was published (its epoch and content hash match a
//! published version), and the epochs a reader sees never go backwards. The same for per-user
//! snapshots, built on demand and cached, while the user's own file and the tenant's alternate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::type_complexity
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nodus_policy::{ActorId, PolicySources, PolicyStore, TenantId, Value};
use parking_lot::Mutex;

fn sources(v: u32) -> PolicySources {
    let mut s = PolicySources::new().with_system("system.toml", "");
    for tenant in ["acme", "globex", "initech"] {
        let toml = format!(
            "[rbac.roles]\nrole{v} = [\"notes.read\"]\n[observability]\nsampling_rate = 0.{v}\n"
        );
        s = s.with_tenant(
            TenantId::new(tenant).unwrap(),
            &format!("tenants/{tenant}.toml"),
            &toml,
        );
    }
    s
}

#[test]
fn readers_never_see_a_mix_and_epochs_never_go_backwards() {
    const RELOADS: u32 = 1_000;
    let store = Arc::new(PolicyStore::new(sources(1)).unwrap());
    let tenants: Vec<TenantId> = store.tenants();
    // (tenant, epoch) -> content hash, for every published snapshot.
    let published: Arc<Mutex<HashMap<(String, u64), [u8; 32]>>> =
        Arc::new(Mutex::new(HashMap::new()));
    for t in &tenants {
        let s = store.snapshot(t).unwrap();
        published
            .lock()
            .insert((t.to_string(), s.epoch()), *s.content_hash());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(String, u64, [u8; 32])>>> = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let store = store.clone();
            let stop = stop.clone();
            let seen = seen.clone();
            let handle = store.tenant_handle(&tenants[i % tenants.len()]);
            let t = tenants[i % tenants.len()].clone();
            std::thread::spawn(move || {
                let mut last = 0u64;
                let mut reads = 0u64;
                let mut local = Vec::new();
                while !stop.load(Ordering::Relaxed) || reads < 1000 {
                    let a = handle.snapshot().unwrap();
                    let b = store.snapshot(&t).unwrap();
                    for s in [&a, &b] {
                        assert!(
                            s.epoch() >= last,
                            "epoch went backwards: {} after {last}",
                            s.epoch()
                        );
                        last = s.epoch();
                        // Internally consistent: the values agree with each other.
                        let rate = s.get_float("observability.sampling_rate").unwrap();
                        let role = format!("role{}", (rate * 10.0).round() as u32);
                        let Some(Value::RoleMap(roles)) = s.get("rbac.roles") else {
                            panic!("no roles")
                        };
                        assert!(
                            roles.contains_key(&role) && roles.len() == 1,
                            "mixed snapshot: {roles:?} vs {rate}"
                        );
                        if local.len() < 20_000 {
                            local.push((t.to_string(), s.epoch(), *s.content_hash()));
                        }
                    }
                    reads += 1;
                }
                seen.lock().extend(local);
                reads
            })
        })
        .collect();
    for i in 0..RELOADS {
        let report = store
            .reload(sources(if i % 2 == 0 { 2 } else { 1 }))
            .unwrap();
        for t in &tenants {
            let s = store.snapshot(t).unwrap();
            assert_eq!(s.epoch(), report.epoch);
            published
                .lock()
                .insert((t.to_string(), s.epoch()), *s.content_hash());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let total: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(total >= 3_000);
    assert_eq!(store.epoch(), u64::from(RELOADS) + 1);
    let published = published.lock();
    for (t, epoch, hash) in seen.lock().iter() {
        assert_eq!(
            published.get(&(t.clone(), *epoch)),
            Some(hash),
            "unpublished snapshot {t}@{epoch}"
        );
    }
}

/// Tenant content `v`, user content `w` (alice's sampling rate 0.0w).
fn user_sources(v: u32, w: u32) -> PolicySources {
    let acme = TenantId::new("acme").unwrap();
    PolicySources::new()
        .with_tenant(
            acme.clone(),
            "tenants/acme.toml",
            &format!("[observability]\nsampling_rate = 0.{v}\nlevel = \"warn\"\n"),
        )
        .with_user(
            acme,
            ActorId::new("alice").unwrap(),
            "users/acme/alice.toml",
            &format!(
                "[observability]\nlevel = \"{}\"\n",
                if w == 0 { "debug" } else { "trace" }
            ),
        )
}

#[test]
fn user_snapshots_stay_consistent_across_reloads() {
    const RELOADS: u32 = 1_000;
    let acme = TenantId::new("acme").unwrap();
    let alice = ActorId::new("alice").unwrap();
    let store = Arc::new(PolicyStore::new(user_sources(1, 0)).unwrap());
    // epoch -> content hash of alice's snapshot, for every version the writer saw published.
    let published: Arc<Mutex<HashMap<u64, [u8; 32]>>> = Arc::new(Mutex::new(HashMap::new()));
    let first = store.user_snapshot(&acme, &alice).unwrap();
    published
        .lock()
        .insert(first.epoch(), *first.content_hash());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            let (acme, alice) = (acme.clone(), alice.clone());
            std::thread::spawn(move || {
                let mut last = 0u64;
                let mut seen = HashMap::new();
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) || reads < 1000 {
                    let s = store.user_snapshot(&acme, &alice).unwrap();
                    assert!(
                        s.epoch() >= last,
                        "epoch went backwards: {} after {last}",
                        s.epoch()
                    );
                    last = s.epoch();
                    // Internally consistent: alice's own level over the tenant's rate.
                    let level = s.get_str("observability.level").unwrap();
                    assert!(level == "debug" || level == "trace", "{level}");
                    let rate = s.get_float("observability.sampling_rate").unwrap();
                    assert!(rate == 0.1 || rate == 0.2, "{rate}");
                    // One epoch, one content.
                    let hash = *s.content_hash();
                    assert_eq!(
                        *seen.entry(s.epoch()).or_insert(hash),
                        hash,
                        "epoch {}",
                        s.epoch()
                    );
                    reads += 1;
                    std::thread::yield_now();
                }
                seen
            })
        })
        .collect();
    for i in 0..RELOADS {
        // The user's file changes every reload, the tenant's every other one.
        let report = store
            .reload(user_sources(1 + (i / 2) % 2, (i + 1) % 2))
            .unwrap();
        assert_eq!(report.changed_users.len(), 1);
        let s = store.user_snapshot(&acme, &alice).unwrap();
        assert_eq!(s.epoch(), report.epoch);
        let old = published.lock().insert(s.epoch(), *s.content_hash());
        assert!(old.is_none());
    }
    stop.store(true, Ordering::Relaxed);
    let published = published.lock();
    for r in readers {
        for (epoch, hash) in r.join().unwrap() {
            assert_eq!(
                published.get(&epoch),
                Some(&hash),
                "unpublished user snapshot @{epoch}"
            );
        }
    }
}
