//! The instrument step's `metrics` side: handles cached per command at registration, one counter
//! per outcome (`nodus_dispatch_total{command, outcome}`), and the latency histogram when latency
//! recording is on. A host installs its recorder before `build()`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use nodus_core::Nodus;

/// Counts per `name{label=value,…}`.
#[derive(Default)]
struct Recording {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(AtomicU64);
impl HistogramFn for Samples {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn render(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = self
            .counters
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let h = self
            .histograms
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Histogram::from_arc(h)
    }
}

impl Recording {
    fn counter(&self, command: &str, outcome: &str) -> u64 {
        let key = format!("nodus_dispatch_total{{command={command},outcome={outcome}}}");
        self.counters
            .lock()
            .unwrap()
            .get(&key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[test]
fn each_outcome_counts_on_its_commands_cached_handles() {
    let recording = Recording::default();
    // The handles are taken at registration, so the recorder only needs to be in place for build.
    let n = metrics::with_local_recorder(&recording, || {
        Nodus::builder()
            .in_memory()
            .master_key(master())
            .policy(sources(false))
            .record_latency(true)
            .command(CreateNote)
            .command(ExportNotes)
            .build()
            .unwrap()
    });
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let note = |title: &str| NewNote {
        title: title.into(),
        tags: vec![],
    };
    n.invoke::<CreateNote>(&alice, note("a")).unwrap();
    n.dispatch(&alice, "notes.create", r#"{"title":"b"}"#)
        .unwrap();
    let _ = n.invoke::<CreateNote>(&bob, note("c")); // denied
    let _ = n.invoke::<CreateNote>(&alice, note("")); // handler error
    let _ = n.dispatch(&alice, "notes.create", "{"); // invalid input
    for _ in 0..3 {
        let _ = n.invoke::<ExportNotes>(&alice, ()); // 2 allowed, 1 rate limited
    }
    assert_eq!(recording.counter("notes.create", "allowed"), 2);
    assert_eq!(recording.counter("notes.create", "denied"), 1);
    assert_eq!(recording.counter("notes.create", "error"), 2);
    assert_eq!(recording.counter("notes.export", "allowed"), 2);
    assert_eq!(recording.counter("notes.export", "denied"), 1);
    let latency = recording
        .histograms
        .lock()
        .unwrap()
        .get("nodus_dispatch_seconds{command=notes.create}")
        .map(|h| h.0.load(Ordering::Relaxed));
    assert_eq!(latency, Some(2), "one sample per completed allowed call");
}
