//! The event bus: named topics, tenant-scoped delivery, one bounded queue per subscriber.
//!
//! `publish` never blocks the publisher: it try-sends into each matching subscriber's queue; a full
//! queue drops the event *for that subscriber* and counts it, and the subscriber can read its loss
//! count. The subscriber list is copy-on-write (`arc-swap`), so publishing takes no lock. There is no
//! global bus: each `Nodus` instance owns one.
//!
//! ```
//! use nodus_registry::events::{EventBus, Scope};
//! use nodus_policy::TenantId;
//!
//! let bus = EventBus::new();
//! let acme = TenantId::new("acme").unwrap();
//! let sub = bus.subscribe("policy.*", Scope::Tenant(acme.clone()), 16).unwrap();
//! bus.publish("policy.reloaded", Some(&acme), serde_json::json!({"epoch": 2}));
//! bus.publish("policy.reloaded", Some(&TenantId::new("globex").unwrap()), serde_json::json!({}));
//! let ev = sub.try_recv().unwrap();
//! assert_eq!(&*ev.topic, "policy.reloaded");
//! assert!(sub.try_recv().is_err()); // globex's event never reaches an acme subscriber
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use nodus_policy::TenantId;
use parking_lot::Mutex;
use serde::Serialize;

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// The topic, e.g. `policy.reloaded`.
    pub topic: Arc<str>,
    /// The tenant it concerns (`None`: system-wide).
    pub tenant: Option<TenantId>,
    /// The payload.
    pub payload: serde_json::Value,
    /// Per-bus sequence number (monotonic).
    pub seq: u64,
}

/// Which tenants' events a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's events, plus system-wide ones.
    Tenant(TenantId),
    /// Every tenant's events (an administrator's view).
    AllTenants,
}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The topic pattern is not `*`, `name.name` or `prefix.*`.
    #[error("invalid topic pattern `{0}`: use `*`, an exact topic, or `prefix.*`")]
    InvalidPattern(String),
    /// A queue needs room for at least one event.
    #[error("a subscriber queue needs a capacity of at least 1")]
    ZeroCapacity,
}

/// What one publish did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Subscribers that received the event.
    pub delivered: usize,
    /// Subscribers whose queue was full (the event was dropped for them).
    pub dropped: usize,
}

struct Subscriber {
    id: u64,
    pattern: Pattern,
    scope: Scope,
    tx: Sender<Event>,
    dropped: Arc<AtomicU64>,
}

#[derive(Clone, Debug)]
enum Pattern {
    All,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(p: &str) -> Result<Pattern, EventError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|seg| {
                    !seg.is_empty() && !seg.contains('*') && !seg.contains(char::is_whitespace)
                })
        };
        if p == "*" {
            Ok(Pattern::All)
        } else if let Some(prefix) = p.strip_suffix(".*") {
            if valid(prefix) {
                Ok(Pattern::Prefix(format!("{prefix}.")))
            } else {
                Err(EventError::InvalidPattern(p.to_owned()))
            }
        } else if valid(p) {
            Ok(Pattern::Exact(p.to_owned()))
        } else {
            Err(EventError::InvalidPattern(p.to_owned()))
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Exact(t) => t == topic,
            Pattern::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }
}

struct BusInner {
    subscribers: ArcSwap<Vec<Arc<Subscriber>>>,
    write: Mutex<()>,
    next_id: AtomicU64,
    seq: AtomicU64,
    published: AtomicU64,
}

/// A bus: cheap to clone (all clones are the same bus).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        EventBus {
            inner: Arc::new(BusInner {
                subscribers: ArcSwap::from_pointee(Vec::new()),
                write: Mutex::new(()),
                next_id: AtomicU64::new(1),
                seq: AtomicU64::new(0),
                published: AtomicU64::new(0),
            }),
        }
    }

    /// Subscribes to topics matching `pattern` (`*`, an exact topic, or `prefix.*`) within `scope`,
    /// with a queue of `capacity` events. Dropping the subscription unsubscribes.
    ///
    /// # Errors
    /// [`EventError`] for a bad pattern or a zero capacity.
    pub fn subscribe(
        &self,
        pattern: &str,
        scope: Scope,
        capacity: usize,
    ) -> Result<Subscription, EventError> {
        if capacity == 0 {
            return Err(EventError::ZeroCapacity);
        }
        let pattern = Pattern::parse(pattern)?;
        let (tx, rx) = bounded(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Subscriber {
            id,
            pattern,
            scope,
            tx,
            dropped: dropped.clone(),
        });
        let _w = self.inner.write.lock();
        let mut list = Vec::clone(&self.inner.subscribers.load());
        list.push(sub);
        self.inner.subscribers.store(Arc::new(list));
        Ok(Subscription {
            id,
            rx,
            dropped,
            bus: Arc::downgrade(&self.inner),
        })
    }

    /// Publishes an event. Never blocks: a subscriber whose queue is full loses this event (counted).
    pub fn publish(
        &self,
        topic: &str,
        tenant: Option<&TenantId>,
        payload: serde_json::Value,
    ) -> Delivery {
        let subs = self.inner.subscribers.load();
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let topic: Arc<str> = Arc::from(topic);
        let mut d = Delivery::default();
        for s in subs.iter() {
            let in_scope = match (&s.scope, tenant) {
                (Scope::AllTenants, _) | (Scope::Tenant(_), None) => true,
                (Scope::Tenant(mine), Some(t)) => mine == t,
            };
            if !in_scope || !s.pattern.matches(&topic) {
                continue;
            }
            let ev = Event {
                topic: topic.clone(),
                tenant: tenant.cloned(),
                payload: payload.clone(),
                seq,
            };
            match s.tx.try_send(ev) {
                Ok(()) => d.delivered += 1,
                Err(TrySendError::Full(_)) => {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    d.dropped += 1;
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
        d
    }

    /// Live subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.inner.subscribers.load().len()
    }

    /// Events published so far.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }
}

/// A subscriber's end: a bounded queue and its loss counter. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    rx: Receiver<Event>,
    dropped: Arc<AtomicU64>,
    bus: std::sync::Weak<BusInner>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("queued", &self.rx.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Why no event was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Nothing queued (or the timeout passed).
    #[error("no event")]
    Empty,
    /// The bus is gone.
    #[error("the event bus is gone")]
    Closed,
}

impl Subscription {
    /// Waits for the next event.
    ///
    /// # Errors
    /// [`RecvError::Closed`] when the bus is gone.
    pub fn recv(&self) -> Result<Event, RecvError> {
        self.rx.recv().map_err(|_| RecvError::Closed)
    }

    /// The next event, if one is queued.
    ///
    /// # Errors
    /// [`RecvError::Empty`].
    pub fn try_recv(&self) -> Result<Event, RecvError> {
        self.rx.try_recv().map_err(|e| {
            if e.is_empty() {
                RecvError::Empty
            } else {
                RecvError::Closed
            }
        })
    }

    /// Waits up to `timeout` for the next event.
    ///
    /// # Errors
    /// [`RecvError::Empty`] on timeout.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvError> {
        self.rx.recv_timeout(timeout).map_err(|e| {
            if e.is_timeout() {
                RecvError::Empty
            } else {
                RecvError::Closed
            }
        })
    }

    /// Every event queued right now.
    pub fn drain(&self) -> Vec<Event> {
        self.rx.try_iter().collect()
    }

    /// Events this subscriber lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            let _w = bus.write.lock();
            let list: Vec<Arc<Subscriber>> = bus
                .subscribers
                .load()
                .iter()
                .filter(|s| s.id != self.id)
                .cloned()
                .collect();
            bus.subscribers.store(Arc::new(list));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[test]
    fn tenant_isolation_and_patterns() {
        let bus = EventBus::new();
        let a = bus.subscribe("policy.*", Scope::Tenant(t("a")), 8).unwrap();
        let admin = bus.subscribe("*", Scope::AllTenants, 8).unwrap();
        let exact = bus
            .subscribe("plugin.loaded", Scope::Tenant(t("b")), 8)
            .unwrap();
        bus.publish("policy.reloaded", Some(&t("a")), json!(1));
        bus.publish("policy.reloaded", Some(&t("b")), json!(2));
        bus.publish("plugin.loaded", Some(&t("b")), json!(3));
        bus.publish("audit.gap", None, json!(4));
        assert_eq!(
            a.drain()
                .iter()
                .map(|e| e.payload.clone())
                .collect::<Vec<_>>(),
            vec![json!(1)]
        );
        assert_eq!(admin.drain().len(), 4);
        assert_eq!(
            exact
                .drain()
                .iter()
                .map(|e| e.payload.clone())
                .collect::<Vec<_>>(),
            vec![json!(3)]
        );
        for bad in ["", "policy.", "po*", "*.x", "a b"] {
            assert!(bus.subscribe(bad, Scope::AllTenants, 1).is_err(), "{bad}");
        }
        assert_eq!(
            bus.subscribe("x", Scope::AllTenants, 0).unwrap_err(),
            EventError::ZeroCapacity
        );
    }

    #[test]
    fn slow_subscribers_lose_and_count_and_publishers_never_block() {
        let bus = EventBus::new();
        let slow = bus.subscribe("*", Scope::AllTenants, 2).unwrap();
        let fast = bus.subscribe("*", Scope::AllTenants, 10_000).unwrap();
        for i in 0..1_000 {
            bus.publish("x.y", None, json!(i)); // would hang here if publish blocked
        }
        assert_eq!(slow.drain().len(), 2);
        assert_eq!(slow.dropped(), 998);
        assert_eq!(fast.drain().len(), 1_000);
        assert_eq!(fast.dropped(), 0);
        let seqs: Vec<u64> = {
            bus.publish("x.y", None, json!(0));
            bus.publish("x.y", None, json!(0));
            fast.drain().iter().map(|e| e.seq).collect()
        };
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn dropping_a_subscription_unsubscribes_and_buses_are_independent() {
        let bus = EventBus::new();
        let other = EventBus::new();
        let s = bus.subscribe("*", Scope::AllTenants, 4).unwrap();
        let o = other.subscribe("*", Scope::AllTenants, 4).unwrap();
        assert_eq!(bus.subscriber_count(), 1);
        bus.publish("a.b", None, json!(null));
        assert!(o.try_recv().is_err());
        drop(s);
        assert_eq!(bus.subscriber_count(), 0);
        assert_eq!(bus.publish("a.b", None, json!(null)), Delivery::default());
    }

    #[test]
    fn concurrent_publishers() {
        let bus = EventBus::new();
        let s = bus.subscribe("*", Scope::AllTenants, 100_000).unwrap();
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let b = bus.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        b.publish("t.x", None, json!(i));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(s.drain().len(), 4_000);
        assert_eq!(bus.published(), 4_000);
    }
}
