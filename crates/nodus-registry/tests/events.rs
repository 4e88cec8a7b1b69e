//! The event bus through its public API: topics, tenant-scoped delivery, bounded per-subscriber
//! queues, a publisher that never blocks, and per-subscriber loss counts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use nodus_policy::TenantId;
use nodus_registry::events::{Delivery, EventBus, EventError, RecvError, Scope};
use serde_json::json;

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[test]
fn subscription_refusals() {
    let bus = EventBus::new();
    for bad in [
        "",
        ".",
        "policy.",
        ".reloaded",
        "po*",
        "policy.*.x",
        "*.reloaded",
        "a b",
        "**",
    ] {
        let e = bus.subscribe(bad, Scope::AllTenants, 4).unwrap_err();
        assert_eq!(e, EventError::InvalidPattern(bad.into()));
        assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
    }
    assert_eq!(
        bus.subscribe("policy.*", Scope::AllTenants, 0).unwrap_err(),
        EventError::ZeroCapacity
    );
    assert_eq!(bus.subscriber_count(), 0);
}

#[test]
fn tenant_scoped_delivery() {
    let bus = EventBus::new();
    let acme = bus.subscribe("*", Scope::Tenant(t("acme")), 16).unwrap();
    let globex = bus.subscribe("*", Scope::Tenant(t("globex")), 16).unwrap();
    let admin = bus.subscribe("plugin.*", Scope::AllTenants, 16).unwrap();
    assert_eq!(
        bus.publish("plugin.loaded", Some(&t("acme")), json!("kv")),
        Delivery {
            delivered: 2,
            dropped: 0
        }
    );
    bus.publish("plugin.denied", Some(&t("globex")), json!("x"));
    bus.publish("policy.reloaded", None, json!({"epoch": 2})); // system-wide
    let topics = |s: &nodus_registry::events::Subscription| {
        s.drain()
            .into_iter()
            .map(|e| {
                format!(
                    "{}@{}",
                    e.topic,
                    e.tenant.map(|t| t.to_string()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        topics(&acme),
        vec!["plugin.loaded@acme", "policy.reloaded@"]
    );
    assert_eq!(
        topics(&globex),
        vec!["plugin.denied@globex", "policy.reloaded@"]
    );
    assert_eq!(
        topics(&admin),
        vec!["plugin.loaded@acme", "plugin.denied@globex"]
    );
    // `prefix.*` matches the prefix's topics only, not a longer word.
    let p = bus.subscribe("policy.*", Scope::AllTenants, 4).unwrap();
    bus.publish("policyx.reloaded", None, json!(null));
    bus.publish("policy", None, json!(null));
    assert_eq!(p.try_recv(), Err(RecvError::Empty));
}

#[test]
fn a_slow_subscriber_loses_events_counted_and_never_blocks_the_publisher() {
    let bus = EventBus::new();
    let slow = bus.subscribe("*", Scope::AllTenants, 1).unwrap();
    let other_slow = bus.subscribe("*", Scope::AllTenants, 3).unwrap();
    let keeps_up = bus.subscribe("*", Scope::AllTenants, 64).unwrap();
    // Publishing from another thread while nobody drains `slow`: it must finish.
    let b = bus.clone();
    let publisher = std::thread::spawn(move || {
        let mut dropped = 0;
        for i in 0..50 {
            dropped += b.publish("t.x", None, json!(i)).dropped;
        }
        dropped
    });
    let dropped = publisher.join().unwrap();
    assert_eq!(slow.dropped(), 49);
    assert_eq!(other_slow.dropped(), 47);
    assert_eq!(keeps_up.dropped(), 0);
    assert_eq!(dropped, 49 + 47);
    // The survivors are the oldest ones (a bounded queue keeps what it accepted).
    assert_eq!(slow.drain()[0].payload, json!(0));
    assert_eq!(keeps_up.drain().len(), 50);
    // Draining makes room again; the loss count stays as evidence.
    bus.publish("t.x", None, json!("after"));
    assert_eq!(slow.try_recv().unwrap().payload, json!("after"));
    assert_eq!(slow.dropped(), 49);
    assert_eq!(bus.published(), 51);
}

#[test]
fn unsubscribe_on_drop_and_a_gone_bus_closes_subscriptions() {
    let bus = EventBus::new();
    let a = bus.subscribe("*", Scope::AllTenants, 4).unwrap();
    let b = bus.subscribe("*", Scope::AllTenants, 4).unwrap();
    assert_eq!(bus.subscriber_count(), 2);
    drop(a);
    assert_eq!(bus.subscriber_count(), 1);
    assert_eq!(
        bus.publish("x.y", None, json!(1)),
        Delivery {
            delivered: 1,
            dropped: 0
        }
    );
    assert_eq!(
        b.recv_timeout(Duration::from_millis(10)).unwrap().payload,
        json!(1)
    );
    assert_eq!(
        b.recv_timeout(Duration::from_millis(1)),
        Err(RecvError::Empty)
    );
    drop(bus);
    assert_eq!(b.try_recv(), Err(RecvError::Closed));
    assert_eq!(b.recv(), Err(RecvError::Closed));
}
