//! The state layer: caches in front of the projections.
//!
//! A [`StateStore`] holds values a subject was allowed to see, keyed by **every input of that
//! decision**: the tenant, the entity, the subject's clearance, the label scheme the clearance was
//! interned under, the epoch of the tenant's policy snapshot that decided, and the tenant's write
//! generation. So a value is only ever served to a subject whose visibility decision would be the
//! same: a reclassification, a clearance change, a policy reload that changes the tenant, a label
//! scheme change, or any write in the tenant ([`StateStore::invalidate_tenant`]) makes the old
//! entries unreachable at once (they age out of the cache's memory by eviction), without a scan.
//!
//! The default, [`QuickStateStore`], is a [`quick_cache`] cache (S3-FIFO-like admission, weighted
//! by an estimate of each value's size) with a runtime-adjustable capacity, an optional TTL, and
//! hit, miss, insert and eviction counters, also published through the [`metrics`] facade as
//! `nodus_state_cache_{hits,misses,inserts,evictions}_total{cache="<name>"}`.
//!
//! ```
//! use std::sync::Arc;
//! use nodus_fabric::state::{CacheConfig, QuickStateStore, StateStore, Visibility};
//! use nodus_policy::{LabelScheme, TenantId};
//! use serde_json::json;
//!
//! let cache = QuickStateStore::new("objects", CacheConfig::with_capacity(1 << 20));
//! let scheme = LabelScheme::classic();
//! let acme = TenantId::new("acme").unwrap();
//! let secret = Visibility::new(scheme.parse("SECRET").unwrap(), scheme.id(), 7);
//! let public = Visibility::new(scheme.parse("UNCLASSIFIED").unwrap(), scheme.id(), 7);
//!
//! cache.insert(&acme, &secret, "case/1", Arc::new(json!({"title": "x"})));
//! assert!(cache.get(&acme, &secret, "case/1").is_some());
//! assert!(cache.get(&acme, &public, "case/1").is_none()); // decided for another clearance
//! cache.invalidate_tenant(&acme);                          // a write in the tenant
//! assert!(cache.get(&acme, &secret, "case/1").is_none());
//! assert_eq!(cache.report().hits, 1);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nodus_policy::{Label, PolicySnapshot, SchemeId, Subject, TenantId};
use parking_lot::RwLock;
use quick_cache::Lifecycle;
use serde::Serialize;
use serde_json::Value;

/// The inputs of a visibility decision that a cached value depends on, besides the tenant and the
/// entity: the subject's clearance, the scheme it is interned under, and the epoch of the tenant's
/// policy snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Visibility {
    clearance: Label,
    scheme: SchemeId,
    epoch: u64,
}

impl Visibility {
    /// From its parts.
    pub fn new(clearance: Label, scheme: SchemeId, epoch: u64) -> Self {
        Visibility {
            clearance,
            scheme,
            epoch,
        }
    }

    /// What decides for `subject` under `snap`.
    pub fn of(snap: &PolicySnapshot, subject: &Subject) -> Self {
        Visibility {
            clearance: subject.clearance(),
            scheme: snap.label_scheme().id(),
            epoch: snap.epoch(),
        }
    }
}

/// A cache's settings. A capacity of 0 turns the cache off (nothing is kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CacheConfig {
    /// The most weight (estimated bytes of the cached values) the cache holds.
    pub capacity_bytes: u64,
    /// How long an entry stays fresh; `None`: until evicted or invalidated.
    pub ttl: Option<Duration>,
}

impl CacheConfig {
    /// A capacity and no TTL.
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        CacheConfig {
            capacity_bytes,
            ttl: None,
        }
    }

    /// The same with a TTL (`Duration::ZERO` means none).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = (!ttl.is_zero()).then_some(ttl);
        self
    }
}

/// One cache's memory profile and counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CacheReport {
    /// The cache's name.
    pub name: String,
    /// Entries held now (including ones no key can reach any more, until evicted).
    pub entries: usize,
    /// Their weight (estimated bytes).
    pub weight: u64,
    /// The configured capacity and TTL.
    pub config: CacheConfig,
    /// Lookups that found a fresh entry.
    pub hits: u64,
    /// Lookups that did not (absent, or expired by the TTL).
    pub misses: u64,
    /// Values inserted.
    pub inserts: u64,
    /// Entries evicted to stay within capacity.
    pub evictions: u64,
}

/// A cache in front of the projections. Implementations must never serve a value under a key that
/// differs in any of the deciding inputs (tenant, entity, [`Visibility`], write generation).
pub trait StateStore: Send + Sync {
    /// The cache's name (`objects`, …).
    fn name(&self) -> &str;
    /// The value cached for `entity` of `tenant` as decided for `who`, if fresh.
    fn get(&self, tenant: &TenantId, who: &Visibility, entity: &str) -> Option<Arc<Value>>;
    /// Caches `value` for `entity` of `tenant` as decided for `who`.
    fn insert(&self, tenant: &TenantId, who: &Visibility, entity: &str, value: Arc<Value>);
    /// Makes every entry of `tenant` unreachable (call on every write in the tenant). O(1).
    fn invalidate_tenant(&self, tenant: &TenantId);
    /// Drops every entry.
    fn clear(&self);
    /// Applies new settings at once (a smaller capacity evicts down to it).
    fn configure(&self, config: CacheConfig);
    /// The memory profile and counters.
    fn report(&self) -> CacheReport;
}

#[derive(Clone, PartialEq, Eq)]
struct Key {
    tenant: TenantId,
    generation: u64,
    who: Visibility,
    entity: Arc<str>,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.tenant.as_str().hash(state);
        self.generation.hash(state);
        self.who.hash(state);
        self.entity.hash(state);
    }
}

/// A lookup key borrowing its parts: a `get` allocates nothing. Hashes exactly as [`Key`].
#[derive(Clone, Copy)]
struct KeyRef<'a> {
    tenant: &'a str,
    generation: u64,
    who: Visibility,
    entity: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.tenant.hash(state);
        self.generation.hash(state);
        self.who.hash(state);
        self.entity.hash(state);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.generation == key.generation
            && self.who == key.who
            && self.entity == &*key.entity
            && self.tenant == key.tenant.as_str()
    }
}

#[derive(Clone)]
struct Entry {
    value: Arc<Value>,
    weight: u64,
    at: Instant,
}

#[derive(Clone)]
struct Weighter;

impl quick_cache::Weighter<Key, Entry> for Weighter {
    fn weight(&self, _key: &Key, val: &Entry) -> u64 {
        val.weight
    }
}

#[derive(Clone)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Key, Entry> for CountEvictions {
    type RequestState = ();
    fn on_evict(&self, _state: &mut (), _key: Key, _val: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Inner =
    quick_cache::sync::Cache<Key, Entry, Weighter, quick_cache::DefaultHashBuilder, CountEvictions>;

/// An estimate of a JSON value's memory, in bytes: what the cache weighs it by.
pub fn estimate_weight(v: &Value) -> u64 {
    const NODE: u64 = 32;
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => NODE,
        Value::String(s) => NODE + s.len() as u64,
        Value::Array(a) => NODE + a.iter().map(estimate_weight).sum::<u64>(),
        Value::Object(o) => {
            NODE + o
                .iter()
                .map(|(k, v)| NODE + k.len() as u64 + estimate_weight(v))
                .sum::<u64>()
        }
    }
}

/// The default [`StateStore`] on [`quick_cache`].
pub struct QuickStateStore {
    name: String,
    cache: Inner,
    generations: RwLock<HashMap<TenantId, u64>>,
    next_generation: AtomicU64,
    ttl_nanos: AtomicU64,
    capacity: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl fmt::Debug for QuickStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuickStateStore")
            .field("name", &self.name)
            .field("report", &self.report())
            .finish()
    }
}

impl QuickStateStore {
    /// A cache named `name` with `config`.
    pub fn new(name: &str, config: CacheConfig) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        // Weighted capacity with a rough item estimate (1 KiB per value) for the table sizes.
        let items = usize::try_from(config.capacity_bytes / 1024)
            .unwrap_or(usize::MAX)
            .clamp(16, 1 << 20);
        let cache = Inner::with(
            items,
            config.capacity_bytes.max(1),
            Weighter,
            quick_cache::DefaultHashBuilder::default(),
            CountEvictions(evictions.clone()),
        );
        let store = QuickStateStore {
            name: name.to_owned(),
            cache,
            generations: RwLock::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            ttl_nanos: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            evictions,
        };
        store.configure(config);
        store
    }

    fn generation(&self, tenant: &TenantId) -> u64 {
        self.generations.read().get(tenant).copied().unwrap_or(0)
    }

    fn key(&self, tenant: &TenantId, who: &Visibility, entity: &str) -> Key {
        Key {
            tenant: tenant.clone(),
            generation: self.generation(tenant),
            who: *who,
            entity: Arc::from(entity),
        }
    }

    fn count(&self, counter: &AtomicU64, metric: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(metric, "cache" => self.name.clone()).increment(1);
    }
}

impl StateStore for QuickStateStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, tenant: &TenantId, who: &Visibility, entity: &str) -> Option<Arc<Value>> {
        let key = KeyRef {
            tenant: tenant.as_str(),
            generation: self.generation(tenant),
            who: *who,
            entity,
        };
        let ttl = self.ttl_nanos.load(Ordering::Relaxed);
        let expired = |e: &Entry| ttl != 0 && e.at.elapsed() >= Duration::from_nanos(ttl);
        let fresh = self.cache.get(&key).and_then(|e| {
            if expired(&e) {
                // Only if still the expired entry: a fresh one a racing insert put there stays.
                self.cache.remove_if(&key, |e| expired(e));
                None
            } else {
                Some(e.value)
            }
        });
        match &fresh {
            Some(_) => self.count(&self.hits, "nodus_state_cache_hits_total"),
            None => self.count(&self.misses, "nodus_state_cache_misses_total"),
        }
        fresh
    }

    fn insert(&self, tenant: &TenantId, who: &Visibility, entity: &str, value: Arc<Value>) {
        if self.capacity.load(Ordering::Relaxed) == 0 {
            return;
        }
        let weight = estimate_weight(&value) + entity.len() as u64;
        let key = self.key(tenant, who, entity);
        self.cache.insert(
            key,
            Entry {
                value,
                weight,
                at: Instant::now(),
            },
        );
        self.count(&self.inserts, "nodus_state_cache_inserts_total");
    }

    fn invalidate_tenant(&self, tenant: &TenantId) {
        // A generation no key made before has: every older entry of the tenant is unreachable.
        let next = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.generations.write().insert(tenant.clone(), next);
    }

    fn clear(&self) {
        self.cache.clear();
    }

    fn configure(&self, config: CacheConfig) {
        self.capacity
            .store(config.capacity_bytes, Ordering::Relaxed);
        let ttl = config
            .ttl
            .map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.ttl_nanos.store(ttl, Ordering::Relaxed);
        if config.capacity_bytes == 0 {
            self.cache.clear();
        }
        self.cache.set_capacity(config.capacity_bytes.max(1));
    }

    fn report(&self) -> CacheReport {
        let ttl = self.ttl_nanos.load(Ordering::Relaxed);
        CacheReport {
            name: self.name.clone(),
            entries: self.cache.len(),
            weight: self.cache.weight(),
            config: CacheConfig {
                capacity_bytes: self.capacity.load(Ordering::Relaxed),
                ttl: (ttl != 0).then(|| Duration::from_nanos(ttl)),
            },
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}
