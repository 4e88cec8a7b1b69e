//! Per-(tenant, actor, rate class) rate limiting with the generic cell rate algorithm (GCRA).
//!
//! Why not `governor`: its keyed limiters fix one quota per limiter, while our quotas come from
//! the policy snapshot and change on every hot reload, and its keyed store hashes the key on every
//! call. Here a [`Context`](crate::commands::Context) resolves its actor's [`RateCells`] once, so a
//! check is one atomic compare-and-swap on a per-class *theoretical arrival time* (TAT), with the
//! quota passed in from the current snapshot. Time is whatever monotonic nanosecond clock the caller
//! passes (nodus-core uses a coarse clock, so the hot path reads no clock).
//!
//! GCRA with emission interval `T = per / rate` and tolerance `τ = (burst − 1)·T` admits a request at
//! time `now` iff `max(TAT, now) − now ≤ τ`, then sets `TAT = max(TAT, now) + T`. A denied request
//! changes nothing and learns `retry_after = max(TAT, now) − now − τ`.
//!
//! ```
//! use std::time::Duration;
//! use nodus_policy::{RateClassId, RateLimit};
//! use nodus_registry::rate::RateCells;
//!
//! let cells = RateCells::new(4);
//! let limit = RateLimit { rate: 2, per: Duration::from_secs(1), burst: 2 };
//! let class = RateClassId(0);
//! assert!(cells.check(class, limit, 0).is_ok());
//! assert!(cells.check(class, limit, 0).is_ok());
//! let retry = cells.check(class, limit, 0).unwrap_err();
//! assert_eq!(retry, Duration::from_millis(500));
//! assert!(cells.check(class, limit, 500_000_000).is_ok());
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nodus_policy::{ActorId, RateClassId, RateLimit, TenantId};
use parking_lot::Mutex;

/// One actor's rate state: a theoretical arrival time per rate class.
#[derive(Debug)]
pub struct RateCells {
    fast: Box<[AtomicU64]>,
    overflow: Mutex<HashMap<u32, u64>>,
}

fn emission_interval_ns(limit: RateLimit) -> u64 {
    let per = u64::try_from(limit.per.as_nanos()).unwrap_or(u64::MAX);
    per / u64::from(limit.rate.max(1))
}

fn decide(tat: u64, now: u64, limit: RateLimit) -> Result<u64, Duration> {
    let t = emission_interval_ns(limit);
    let tau = t.saturating_mul(u64::from(limit.burst.max(1) - 1));
    let start = tat.max(now);
    let wait = start - now;
    if wait > tau {
        Err(Duration::from_nanos(wait - tau))
    } else {
        Ok(start.saturating_add(t))
    }
}

impl RateCells {
    /// Cells with lock-free slots for the first `classes` rate classes (later classes use a
    /// mutex-protected map).
    pub fn new(classes: usize) -> Self {
        let fast = (0..classes.max(1)).map(|_| AtomicU64::new(0)).collect();
        RateCells {
            fast,
            overflow: Mutex::new(HashMap::new()),
        }
    }

    /// Admits or refuses one request of `class` at monotonic time `now_ns` under `limit`.
    ///
    /// # Errors
    /// The time after which the request would be admitted.
    #[inline]
    pub fn check(&self, class: RateClassId, limit: RateLimit, now_ns: u64) -> Result<(), Duration> {
        if limit.rate == 0 {
            // A zero rate admits nothing; say "try again in one period".
            return Err(limit.per.max(Duration::from_millis(1)));
        }
        match self.fast.get(class.0 as usize) {
            Some(cell) => {
                let mut tat = cell.load(Ordering::Relaxed);
                loop {
                    let next = decide(tat, now_ns, limit)?;
                    match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
                    {
                        Ok(_) => return Ok(()),
                        Err(seen) => tat = seen,
                    }
                }
            }
            None => {
                let mut map = self.overflow.lock();
                let tat = map.get(&class.0).copied().unwrap_or(0);
                let next = decide(tat, now_ns, limit)?;
                map.insert(class.0, next);
                Ok(())
            }
        }
    }
}

/// The rate cells of every (tenant, actor) seen, created on first use. Looked up once per
/// [`Context`](crate::commands::Context), never per call.
#[derive(Debug, Default)]
pub struct RateTable {
    cells: Mutex<HashMap<(TenantId, ActorId), Arc<RateCells>>>,
}

impl RateTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cells of `(tenant, actor)`, with lock-free slots for `classes` rate classes.
    pub fn cells(&self, tenant: &TenantId, actor: &ActorId, classes: usize) -> Arc<RateCells> {
        let mut map = self.cells.lock();
        map.entry((tenant.clone(), actor.clone()))
            .or_insert_with(|| Arc::new(RateCells::new(classes)))
            .clone()
    }

    /// How many (tenant, actor) pairs have rate state.
    pub fn len(&self) -> usize {
        self.cells.lock().len()
    }

    /// `true` when no actor has rate state yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim(rate: u32, per_ms: u64, burst: u32) -> RateLimit {
        RateLimit {
            rate,
            per: Duration::from_millis(per_ms),
            burst,
        }
    }

    #[test]
    fn burst_then_steady_rate() {
        let c = RateCells::new(1);
        let l = lim(10, 1000, 3); // T = 100 ms
        for _ in 0..3 {
            assert!(c.check(RateClassId(0), l, 0).is_ok());
        }
        assert_eq!(
            c.check(RateClassId(0), l, 0),
            Err(Duration::from_millis(100))
        );
        assert!(c.check(RateClassId(0), l, 100_000_000).is_ok());
        assert!(c.check(RateClassId(0), l, 100_000_000).is_err());
    }

    #[test]
    fn zero_rate_refuses() {
        let c = RateCells::new(1);
        assert_eq!(
            c.check(RateClassId(0), lim(0, 1000, 5), 0),
            Err(Duration::from_secs(1))
        );
    }

    #[test]
    fn overflow_classes_work() {
        let c = RateCells::new(1);
        let l = lim(1, 1000, 1);
        assert!(c.check(RateClassId(7), l, 0).is_ok());
        assert!(c.check(RateClassId(7), l, 0).is_err());
        assert!(c.check(RateClassId(0), l, 0).is_ok());
    }

    #[test]
    fn table_shares_cells_per_actor() {
        let t = RateTable::new();
        let a = ActorId::new("a").unwrap();
        let ten = TenantId::new("t").unwrap();
        let c1 = t.cells(&ten, &a, 2);
        let c2 = t.cells(&ten, &a, 2);
        assert!(Arc::ptr_eq(&c1, &c2));
        let other = t.cells(&TenantId::new("u").unwrap(), &a, 2);
        assert!(!Arc::ptr_eq(&c1, &other));
        assert_eq!(t.len(), 2);
    }

    proptest! {
        /// Over any window, GCRA admits at most burst + window/T requests.
        #[test]
        fn never_exceeds_quota(rate in 1u32..50, burst in 1u32..10, gaps in proptest::collection::vec(0u64..50_000_000, 1..200)) {
            let c = RateCells::new(1);
            let l = RateLimit { rate, per: Duration::from_secs(1), burst };
            let t = 1_000_000_000 / u64::from(rate);
            let mut now = 0u64;
            let mut admitted = 0u64;
            for g in gaps {
                now += g;
                if c.check(RateClassId(0), l, now).is_ok() {
                    admitted += 1;
                }
            }
            prop_assert!(admitted <= u64::from(burst) + now / t + 1);
        }
    }
}
