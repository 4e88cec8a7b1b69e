//! Upcasters: read old events in the current payload shape.
//!
//! The log stores every event exactly as it was appended (its bytes and hash never change). When
//! the shape of a kind's payload changes, its writer bumps `model_ver` and registers an upcaster
//! from the old version to the next; readers pass events through [`Upcasters`], which chains the
//! registered steps until no step applies. The upcast is a view computed on read and replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use nodus_policy::TenantId;
use serde_json::Value;

use crate::event::{ChainId, Event, EventKind};
use crate::log::{Cursor, EventLogError, TenantEventLog};

/// One upcasting step: the payload at version `v` to the payload at version `v + 1`.
pub type UpcastFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

/// Why an event could not be upcast.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// A step from `from` to `from + 1` failed.
    #[error("upcasting `{kind}` event `{event}` from model version {from} failed: {reason}")]
    Step {
        /// The event kind.
        kind: EventKind,
        /// The event (`chain#seq`).
        event: String,
        /// The version the failing step starts from.
        from: u32,
        /// The step's message.
        reason: String,
    },
    /// The event is below a registered step but no step starts at its version.
    #[error(
        "`{kind}` event `{event}` has model version {at}, and no upcaster starts there (the lowest registered starts at {lowest})"
    )]
    Missing {
        /// The event kind.
        kind: EventKind,
        /// The event (`chain#seq`).
        event: String,
        /// Where the chain of steps stopped.
        at: u32,
        /// The lowest registered step.
        lowest: u32,
    },
    /// The stored payload is not JSON (a corrupted store).
    #[error("`{kind}` event `{event}` has a payload that is not JSON")]
    Payload {
        /// The event kind.
        kind: EventKind,
        /// The event (`chain#seq`).
        event: String,
    },
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] EventLogError),
}

/// An event with its payload in the current shape. `event` is untouched (stored bytes, stored
/// `model_ver`, stored hash); `model_ver` and `payload` are the upcast view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upcast {
    /// The event as stored.
    pub event: Event,
    /// The model version after upcasting.
    pub model_ver: u32,
    /// The payload after upcasting.
    pub payload: Value,
}

/// The registry of upcasting steps, keyed by `(kind, from_model_ver)`.
///
/// ```
/// use nodus_fabric::{EventKind, Upcasters};
/// use serde_json::json;
/// let mut up = Upcasters::new();
/// let kind = EventKind::new("object.created").unwrap();
/// // v1 had `name`; v2 splits it; v3 adds `tags`.
/// up.register(kind.clone(), 1, |mut v| {
///     let name = v["name"].take();
///     Ok(json!({"first": name, "last": null}))
/// });
/// up.register(kind.clone(), 2, |mut v| {
///     v["tags"] = json!([]);
///     Ok(v)
/// });
/// assert_eq!(up.current(&kind), Some(3));
/// let (ver, v) = up.upcast_value(&kind, 1, json!({"name": "Ada"})).unwrap();
/// assert_eq!((ver, v), (3, json!({"first": "Ada", "last": null, "tags": []})));
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: BTreeMap<(EventKind, u32), Arc<UpcastFn>>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.steps.keys().map(|(k, v)| format!("{k}@{v}")))
            .finish()
    }
}

impl Upcasters {
    /// An empty registry (every event reads as stored).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step that turns a `kind` payload at `from_model_ver` into one at
    /// `from_model_ver + 1`, replacing any step registered for the same pair.
    pub fn register(
        &mut self,
        kind: EventKind,
        from_model_ver: u32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> &mut Self {
        self.steps.insert((kind, from_model_ver), Arc::new(step));
        self
    }

    /// The version `kind` payloads are upcast to (one above its highest step), `None` when no
    /// step is registered for it.
    pub fn current(&self, kind: &EventKind) -> Option<u32> {
        self.steps
            .range((kind.clone(), 0)..=(kind.clone(), u32::MAX))
            .next_back()
            .map(|((_, v), _)| v.saturating_add(1))
    }

    fn lowest(&self, kind: &EventKind) -> Option<u32> {
        self.steps
            .range((kind.clone(), 0)..=(kind.clone(), u32::MAX))
            .next()
            .map(|((_, v), _)| *v)
    }

    /// Upcasts a payload of `kind` at `model_ver`: applies the step at each version in turn while
    /// one is registered. A payload at or above [`current`](Self::current) is returned unchanged.
    ///
    /// # Errors
    /// [`UpcastError::Step`] when a step fails, [`UpcastError::Missing`] when the payload is below
    /// the current version but no step starts at its version.
    pub fn upcast_value(
        &self,
        kind: &EventKind,
        model_ver: u32,
        payload: Value,
    ) -> Result<(u32, Value), UpcastError> {
        self.run(kind, model_ver, payload, "-")
    }

    fn run(
        &self,
        kind: &EventKind,
        model_ver: u32,
        mut payload: Value,
        event: &str,
    ) -> Result<(u32, Value), UpcastError> {
        let Some(current) = self.current(kind) else {
            return Ok((model_ver, payload));
        };
        let mut ver = model_ver;
        while ver < current {
            let Some(step) = self.steps.get(&(kind.clone(), ver)) else {
                return Err(UpcastError::Missing {
                    kind: kind.clone(),
                    event: event.to_owned(),
                    at: ver,
                    lowest: self.lowest(kind).unwrap_or(ver),
                });
            };
            payload = step(payload).map_err(|reason| UpcastError::Step {
                kind: kind.clone(),
                event: event.to_owned(),
                from: ver,
                reason,
            })?;
            ver += 1;
        }
        Ok((ver, payload))
    }

    /// Upcasts one event.
    ///
    /// # Errors
    /// [`UpcastError`].
    pub fn upcast(&self, event: Event) -> Result<Upcast, UpcastError> {
        let name = event.event_ref().to_string();
        let value = event.payload.to_value().map_err(|_| UpcastError::Payload {
            kind: event.kind.clone(),
            event: name.clone(),
        })?;
        let (model_ver, payload) = self.run(&event.kind, event.model_ver, value, &name)?;
        Ok(Upcast {
            event,
            model_ver,
            payload,
        })
    }

    /// [`TenantEventLog::read_chain`], upcast.
    ///
    /// # Errors
    /// [`UpcastError`].
    pub fn read_chain(
        &self,
        log: &dyn TenantEventLog,
        tenant: &TenantId,
        chain: ChainId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Upcast>, UpcastError> {
        log.read_chain(tenant, chain, from_seq, limit)?
            .into_iter()
            .map(|e| self.upcast(e))
            .collect()
    }

    /// [`TenantEventLog::read_tenant`], upcast.
    ///
    /// # Errors
    /// [`UpcastError`].
    pub fn read_tenant(
        &self,
        log: &dyn TenantEventLog,
        tenant: &TenantId,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Upcast>, Option<Cursor>), UpcastError> {
        let (events, next) = log.read_tenant(tenant, cursor, limit)?;
        let events = events
            .into_iter()
            .map(|e| self.upcast(e))
            .collect::<Result<_, _>>()?;
        Ok((events, next))
    }
}
