//! The policy-driven observability layer (feature `policy-layer`) on real calls: each tenant's
//! `observability` policy decides which calls a `tracing` layer sees and at what level, and a hot
//! reload changes that without a restart.
//!
//! Run with `cargo test -p nodus-core --features policy-layer`.

#![cfg(feature = "policy-layer")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use nodus_core::{Command, CommandError, CommandSpec, Context, Nodus, PolicyFilter, PolicySources};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

/// A command whose handler logs one DEBUG and one INFO event.
struct Traced;
impl Command for Traced {
    type Input = ();
    type Output = ();
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.traced").permission("notes.read")
    }
    fn call(&self, _: &Context, _: ()) -> Result<(), CommandError> {
        tracing::debug!("handler detail");
        tracing::info!("handler summary");
        Ok(())
    }
}

/// What the governed layer saw: (span or event, level, tenant of the enclosing Nodus span).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Seen {
    fn on_event(&self, e: &tracing::Event<'_>, cx: tracing_subscriber::layer::Context<'_, S>) {
        let span = cx
            .event_span(e)
            .map(|s| s.name().to_owned())
            .unwrap_or_else(|| "-".into());
        self.0
            .lock()
            .unwrap()
            .push(format!("{} in {span}", e.metadata().level()));
    }
}

impl Seen {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn count(seen: &[String], what: &str) -> usize {
        seen.iter().filter(|s| *s == what).count()
    }
}

fn tenant_doc(obs: &str) -> String {
    format!("{}\n[observability]\n{obs}\n", tenant_toml(false))
}

fn policy(acme_obs: &str, globex_obs: &str) -> PolicySources {
    PolicySources::new()
        .with_system("system.toml", SYSTEM)
        .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_doc(acme_obs))
        .with_tenant(
            tenant("globex"),
            "tenants/globex.toml",
            &tenant_doc(globex_obs),
        )
}

#[test]
fn tenant_policy_governs_tracing_and_a_reload_changes_it() {
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(policy(
            "sampling_rate = 1.0\nlevel = \"debug\"",
            "sampling_rate = 0.25\nlevel = \"info\"",
        ))
        .command(Traced)
        .build()
        .unwrap();
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry()
        .with(seen.clone().with_filter(PolicyFilter::new(n.policy())));
    let acme = ctx(&n, "acme", "alice", &["viewer"], "UNCLASSIFIED");
    let globex = ctx(&n, "globex", "gina", &["viewer"], "UNCLASSIFIED");

    tracing::subscriber::with_default(subscriber, || {
        // acme: every call, DEBUG and INFO, typed and JSON alike.
        for _ in 0..4 {
            n.invoke::<Traced>(&acme, ()).unwrap();
        }
        n.dispatch(&acme, "notes.traced", "null").unwrap();
        let s = seen.take();
        assert_eq!(Seen::count(&s, "DEBUG in nodus.invoke"), 4, "{s:?}");
        assert_eq!(Seen::count(&s, "INFO in nodus.invoke"), 4, "{s:?}");
        assert_eq!(Seen::count(&s, "DEBUG in nodus.dispatch"), 1, "{s:?}");

        // globex: a quarter of the calls, INFO only.
        for _ in 0..8 {
            n.invoke::<Traced>(&globex, ()).unwrap();
        }
        let s = seen.take();
        assert_eq!(Seen::count(&s, "INFO in nodus.invoke"), 2, "{s:?}");
        assert_eq!(Seen::count(&s, "DEBUG in nodus.invoke"), 0, "{s:?}");

        // Events outside any Nodus call pass through untouched.
        tracing::trace!("host event");
        assert_eq!(seen.take(), vec!["TRACE in -".to_string()]);

        // A tenant admin turns acme down and globex up: no restart, same contexts.
        n.reload_policy(policy(
            "sampling_rate = 0.0",
            "sampling_rate = 1.0\nlevel = \"debug\"",
        ))
        .unwrap();
        for _ in 0..4 {
            n.invoke::<Traced>(&acme, ()).unwrap();
            n.invoke::<Traced>(&globex, ()).unwrap();
        }
        let s = seen.take();
        assert_eq!(Seen::count(&s, "DEBUG in nodus.invoke"), 4, "{s:?}");
        assert_eq!(Seen::count(&s, "INFO in nodus.invoke"), 4, "{s:?}");
    });
}
