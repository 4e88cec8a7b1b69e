//! [`Switched`]: any transport behind an on/off switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nodus_fabric::VersionVector;
use nodus_policy::TenantId;

use super::{Delivery, DiffTransport, SignedBatch, Subscription, TransportError};

/// A transport behind a switch ([`Switched::set_connected`]): while it is off, publishing and
/// subscribing fail and open subscriptions fail (their owner drops them and subscribes again),
/// as in a network outage. For maintenance windows, tests and benches. Clones share the switch.
#[derive(Debug)]
pub struct Switched<T> {
    inner: Arc<T>,
    on: Arc<AtomicBool>,
}

impl<T> Clone for Switched<T> {
    fn clone(&self) -> Self {
        Switched {
            inner: self.inner.clone(),
            on: self.on.clone(),
        }
    }
}

impl<T: DiffTransport> Switched<T> {
    /// `inner`, switched on.
    pub fn new(inner: T) -> Self {
        Switched {
            inner: Arc::new(inner),
            on: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Switches the transport on or off.
    pub fn set_connected(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// `true` while switched on.
    pub fn is_connected(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// The transport behind the switch.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

fn off() -> TransportError {
    TransportError::Unavailable("the transport is switched off".into())
}

impl<T: DiffTransport + 'static> DiffTransport for Switched<T> {
    fn publish(&self, tenant: &TenantId, batch: &SignedBatch) -> Result<(), TransportError> {
        if !self.is_connected() {
            return Err(off());
        }
        self.inner.publish(tenant, batch)
    }

    fn subscribe(
        &self,
        tenant: &TenantId,
        subscriber: &str,
        from: &VersionVector,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        if !self.is_connected() {
            return Err(off());
        }
        Ok(Box::new(SwitchedSubscription {
            inner: self.inner.subscribe(tenant, subscriber, from)?,
            on: self.on.clone(),
        }))
    }
}

struct SwitchedSubscription {
    inner: Box<dyn Subscription>,
    on: Arc<AtomicBool>,
}

impl Subscription for SwitchedSubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        if !self.on.load(Ordering::SeqCst) {
            return Err(off());
        }
        self.inner.next(timeout)
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        if !self.on.load(Ordering::SeqCst) {
            return Err(off());
        }
        self.inner.ack(delivery)
    }
}
