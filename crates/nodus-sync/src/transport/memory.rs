//! [`MemoryTransport`]: every batch of every tenant kept in memory, shared by the nodes of one
//! process (tests, single-process hosts).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodus_fabric::VersionVector;
use nodus_policy::TenantId;
use parking_lot::{Condvar, Mutex};

use super::{Delivery, DiffTransport, SignedBatch, Subscription, TransportError};

#[derive(Default)]
struct State {
    connected: bool,
    batches: HashMap<TenantId, Vec<SignedBatch>>,
}

struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
    ack_wait: Duration,
}

/// An in-process [`DiffTransport`]: a tenant's batches are kept in publication order for the
/// life of the transport, and each subscription reads them from the start, skipping event batches
/// its version vector covers and statuses published before it subscribed. A delivery not
/// acknowledged within the acknowledgement wait is delivered again. Clones share the batches.
///
/// [`set_connected`](Self::set_connected) simulates a network outage: publishing fails and
/// subscriptions fail until it is reconnected.
#[derive(Clone)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.lock();
        f.debug_struct("MemoryTransport")
            .field("connected", &st.connected)
            .field("tenants", &st.batches.len())
            .finish()
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// A connected transport with an acknowledgement wait of 1 s.
    pub fn new() -> Self {
        Self::with_ack_wait(Duration::from_secs(1))
    }

    /// A connected transport redelivering what is not acknowledged within `ack_wait`.
    pub fn with_ack_wait(ack_wait: Duration) -> Self {
        MemoryTransport {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    connected: true,
                    batches: HashMap::new(),
                }),
                arrived: Condvar::new(),
                ack_wait,
            }),
        }
    }

    /// Connects or disconnects every user of the transport.
    pub fn set_connected(&self, connected: bool) {
        self.shared.state.lock().connected = connected;
        self.shared.arrived.notify_all();
    }

    /// How many batches were published for `tenant`.
    pub fn published(&self, tenant: &TenantId) -> usize {
        self.shared
            .state
            .lock()
            .batches
            .get(tenant)
            .map_or(0, Vec::len)
    }
}

impl DiffTransport for MemoryTransport {
    fn publish(&self, tenant: &TenantId, batch: &SignedBatch) -> Result<(), TransportError> {
        let mut st = self.shared.state.lock();
        if !st.connected {
            return Err(TransportError::Unavailable(
                "the in-memory transport is disconnected".into(),
            ));
        }
        st.batches
            .entry(tenant.clone())
            .or_default()
            .push(batch.clone());
        drop(st);
        self.shared.arrived.notify_all();
        Ok(())
    }

    fn subscribe(
        &self,
        tenant: &TenantId,
        _subscriber: &str,
        from: &VersionVector,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        let st = self.shared.state.lock();
        if !st.connected {
            return Err(TransportError::Unavailable(
                "the in-memory transport is disconnected".into(),
            ));
        }
        let history = st.batches.get(tenant).map_or(0, Vec::len);
        Ok(Box::new(MemorySubscription {
            shared: self.shared.clone(),
            tenant: tenant.clone(),
            next: 0,
            history,
            from: from.clone(),
            unacked: BTreeMap::new(),
        }))
    }
}

struct MemorySubscription {
    shared: Arc<Shared>,
    tenant: TenantId,
    next: usize,
    /// Batches published before the subscription: filtered by `from`.
    history: usize,
    from: VersionVector,
    /// Index → when it was delivered.
    unacked: BTreeMap<usize, Instant>,
}

impl Subscription for MemorySubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock();
        loop {
            if !st.connected {
                return Err(TransportError::Unavailable(
                    "the in-memory transport is disconnected".into(),
                ));
            }
            let now = Instant::now();
            let overdue = self
                .unacked
                .iter()
                .find(|(_, at)| now.duration_since(**at) >= self.shared.ack_wait)
                .map(|(i, _)| *i);
            let batches = st.batches.get(&self.tenant);
            if let Some(i) = overdue
                && let Some(b) = batches.and_then(|v| v.get(i))
            {
                self.unacked.insert(i, now);
                return Ok(Some(Delivery {
                    batch: b.clone(),
                    token: i as u64,
                    redelivered: true,
                }));
            }
            while let Some(b) = batches.and_then(|v| v.get(self.next)) {
                let i = self.next;
                self.next += 1;
                if i < self.history && b.covered_by(&self.from) {
                    continue;
                }
                self.unacked.insert(i, now);
                return Ok(Some(Delivery {
                    batch: b.clone(),
                    token: i as u64,
                    redelivered: false,
                }));
            }
            if now >= deadline {
                return Ok(None);
            }
            let wake = self
                .unacked
                .values()
                .map(|at| *at + self.shared.ack_wait)
                .min()
                .map_or(deadline, |w| w.min(deadline));
            self.shared.arrived.wait_until(&mut st, wake);
        }
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        if let Ok(i) = usize::try_from(delivery.token) {
            self.unacked.remove(&i);
        }
        Ok(())
    }
}
