//! Policy-driven observability: a per-layer [`Filter`] that applies each tenant's `observability`
//! policy (`enabled`, `sampling_rate`, `level`) to what a `tracing` layer sees, so a tenant admin
//! turns tracing up or down by policy — no restart, no code change.
//!
//! Every `invoke`/`dispatch` runs inside a `nodus.invoke` / `nodus.dispatch` span carrying
//! `tenant` and `actor` fields. When such a span opens, the filter reads the current snapshot of
//! that user of that tenant once (the tenant's, when the user has no layer of their own;
//! `sampling_rate` and `level` are user-scoped keys) and decides for the span and everything
//! inside it (including a handler's own events):
//! - `observability.enabled = false` → nothing inside is seen;
//! - `observability.sampling_rate = r` → a deterministic fraction `r` of calls are seen (a counter,
//!   not a random draw, so 0.25 means exactly every fourth call);
//! - `observability.level = "info"` → events more verbose than `info` are dropped.
//!
//! Events outside any Nodus span pass through untouched. Wrap the layer you want governed:
//!
//! ```
//! # use std::sync::Arc;
//! use nodus_core::PolicyFilter;
//! use tracing_subscriber::{Layer, Registry, layer::SubscriberExt};
//! # fn demo(nodus: &nodus_core::Nodus) {
//! let filter = PolicyFilter::new(nodus.policy());
//! let layer = tracing_subscriber::fmt::layer().with_filter(filter);
//! let subscriber = Registry::default().with(layer);
//! // tracing::subscriber::set_global_default(subscriber) — the host's choice, never ours.
//! # let _ = subscriber;
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use nodus_policy::{ActorId, TenantId};

use crate::PolicyView;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

/// The decision made for one Nodus span and inherited by everything inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decision {
    visible: bool,
    max_level: Level,
}

/// A `tracing_subscriber` per-layer filter applying each tenant's observability policy.
pub struct PolicyFilter {
    store: PolicyView,
    calls: AtomicU64,
}

impl fmt::Debug for PolicyFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyFilter")
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish()
    }
}

/// The `tenant` and `actor` fields of a Nodus span.
#[derive(Default)]
struct Who {
    tenant: Option<String>,
    actor: Option<String>,
}

impl Who {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "tenant" => self.tenant = Some(value),
            "actor" => self.actor = Some(value),
            _ => {}
        }
    }
}

impl Visit for Who {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }
}

fn parse_level(s: &str) -> Level {
    match s {
        "trace" => Level::TRACE,
        "debug" => Level::DEBUG,
        "warn" => Level::WARN,
        "error" => Level::ERROR,
        _ => Level::INFO,
    }
}

fn is_ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("nodus")
}

impl PolicyFilter {
    /// A filter reading policy from `policy`: usually `nodus.policy()`, or an
    /// `Arc<PolicyStore>` the host owns.
    pub fn new(policy: impl Into<PolicyView>) -> Self {
        PolicyFilter {
            store: policy.into(),
            calls: AtomicU64::new(0),
        }
    }

    fn decide(&self, who: &Who) -> Decision {
        // The user's snapshot when the span names an actor: `sampling_rate` and `level` are
        // user-scoped keys, so a user's own layer (or the tenant's lock) decides for that user.
        let tenant = who.tenant.as_deref().and_then(|t| TenantId::new(t).ok());
        let actor = who.actor.as_deref().and_then(|a| ActorId::new(a).ok());
        let snap = match (tenant, actor) {
            (Some(t), Some(a)) => self.store.user_snapshot(&t, &a),
            (Some(t), None) => self.store.snapshot(&t),
            _ => None,
        };
        let snap = snap.unwrap_or_else(|| self.store.system_snapshot());
        let enabled = snap.get_bool("observability.enabled").unwrap_or(true);
        let rate = snap
            .get_float("observability.sampling_rate")
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let max_level = parse_level(snap.get_str("observability.level").unwrap_or("info"));
        // Deterministic sampling: call n is kept iff floor((n+1)·r) > floor(n·r).
        let n = self.calls.fetch_add(1, Ordering::Relaxed) as f64;
        let sampled = ((n + 1.0) * rate).floor() > (n * rate).floor();
        Decision {
            visible: enabled && sampled,
            max_level,
        }
    }
}

impl<S> Filter<S> for PolicyFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if meta.is_span() {
            // Spans must exist for the decision to be stored on them; nested spans inside a
            // hidden call stay hidden through `event_enabled` of their events.
            return true;
        }
        let Some(span) = cx.lookup_current() else {
            return true;
        };
        for s in span.scope() {
            if let Some(d) = s.extensions().get::<Decision>() {
                return d.visible && *meta.level() <= d.max_level;
            }
        }
        true
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        let Some(span) = cx.span(id) else { return };
        let decision = if is_ours(attrs.metadata()) {
            let mut who = Who::default();
            attrs.record(&mut who);
            Some(self.decide(&who))
        } else {
            // A host span inside a Nodus span inherits its decision.
            span.parent()
                .and_then(|p| p.extensions().get::<Decision>().copied())
        };
        if let Some(d) = decision {
            span.extensions_mut().insert(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodus_policy::{PolicySources, PolicyStore};
    use std::sync::Arc;
    use std::sync::Mutex;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    /// A layer that counts the events it is shown.
    #[derive(Clone, Default)]
    struct Count(Arc<Mutex<Vec<String>>>);
    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0
                .lock()
                .unwrap()
                .push(e.metadata().level().to_string());
        }
    }

    fn store(tenant_obs: &str) -> Arc<PolicyStore> {
        let s = PolicySources::new()
            .with_system("system.toml", "[observability]\nsampling_rate = 1.0\n")
            .with_tenant(
                TenantId::new("acme").unwrap(),
                "tenants/acme.toml",
                tenant_obs,
            )
            .with_tenant(TenantId::new("globex").unwrap(), "tenants/globex.toml", "");
        Arc::new(PolicyStore::new(s).unwrap())
    }

    fn run(store: Arc<PolicyStore>, tenant: &str, calls: usize) -> Vec<String> {
        let count = Count::default();
        let sub = tracing_subscriber::registry()
            .with(count.clone().with_filter(PolicyFilter::new(store)));
        tracing::subscriber::with_default(sub, || {
            for _ in 0..calls {
                let span =
                    tracing::debug_span!(target: "nodus_core", "nodus.invoke", tenant = %tenant);
                let _e = span.enter();
                tracing::debug!("handler detail");
                tracing::info!("handler info");
            }
            tracing::trace!("outside any nodus span");
        });
        count.0.lock().unwrap().clone()
    }

    #[test]
    fn level_and_sampling_follow_the_tenant_policy() {
        let s = store("[observability]\nsampling_rate = 0.25\nlevel = \"info\"\n");
        let seen = run(s.clone(), "acme", 8);
        // 8 calls at 25% → 2 calls; only INFO inside; plus the trace event outside.
        assert_eq!(seen.iter().filter(|l| *l == "INFO").count(), 2);
        assert_eq!(seen.iter().filter(|l| *l == "DEBUG").count(), 0);
        assert_eq!(seen.iter().filter(|l| *l == "TRACE").count(), 1);
        // globex keeps the system default (sampling 1.0, level info).
        let seen = run(s, "globex", 3);
        assert_eq!(seen.iter().filter(|l| *l == "INFO").count(), 3);
    }

    #[test]
    fn a_reload_turns_tracing_up_without_restart() {
        let s = store("[observability]\nlevel = \"info\"\n");
        assert_eq!(
            run(s.clone(), "acme", 2)
                .iter()
                .filter(|l| *l == "DEBUG")
                .count(),
            0
        );
        let up = PolicySources::new()
            .with_system("system.toml", "[observability]\nsampling_rate = 1.0\n")
            .with_tenant(
                TenantId::new("acme").unwrap(),
                "tenants/acme.toml",
                "[observability]\nlevel = \"debug\"\n",
            )
            .with_tenant(TenantId::new("globex").unwrap(), "tenants/globex.toml", "");
        s.reload(up).unwrap();
        assert_eq!(
            run(s, "acme", 2).iter().filter(|l| *l == "DEBUG").count(),
            2
        );
    }

    #[test]
    fn a_users_own_layer_decides_for_that_user() {
        // acme samples 1 call in 4; alice's own layer (user-scoped key) wants every call at debug.
        let s = PolicySources::new()
            .with_system("system.toml", "[observability]\nsampling_rate = 1.0\n")
            .with_tenant(
                TenantId::new("acme").unwrap(),
                "tenants/acme.toml",
                "[observability]\nsampling_rate = 0.25\nlevel = \"info\"\n",
            )
            .with_user(
                TenantId::new("acme").unwrap(),
                ActorId::new("alice").unwrap(),
                "users/acme/alice.toml",
                "[observability]\nsampling_rate = 1.0\nlevel = \"debug\"\n",
            );
        let store = Arc::new(PolicyStore::new(s).unwrap());
        let seen = |actor: &str| {
            let count = Count::default();
            let sub = tracing_subscriber::registry()
                .with(count.clone().with_filter(PolicyFilter::new(store.clone())));
            tracing::subscriber::with_default(sub, || {
                for _ in 0..8 {
                    let span = tracing::debug_span!(
                        target: "nodus_core", "nodus.invoke", tenant = "acme", actor = actor
                    );
                    let _e = span.enter();
                    tracing::debug!("handler detail");
                }
            });
            count.0.lock().unwrap().len()
        };
        assert_eq!(seen("alice"), 8);
        assert_eq!(
            seen("bob"),
            0,
            "bob follows the tenant: info only, 1 call in 4"
        );
    }

    #[test]
    fn disabled_by_system_policy_hides_everything_inside() {
        let s = PolicySources::new()
            .with_system("system.toml", "[observability]\nenabled = false\n")
            .with_tenant(TenantId::new("acme").unwrap(), "tenants/acme.toml", "");
        let seen = run(Arc::new(PolicyStore::new(s).unwrap()), "acme", 4);
        assert_eq!(seen, vec!["TRACE".to_string()]);
    }
}
