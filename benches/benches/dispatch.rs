//! The dispatch hot path.
//!
//! Measures, on an in-memory instance with the audit writer running (`Normal` durability,
//! `drop_with_marker` overflow so the writer's speed does not throttle the measured thread, and
//! `tracing` compiled in with no subscriber):
//! - `invoke/allowed`: typed `invoke` of a trivial command on the allowed path, audit enqueue included;
//! - `invoke/denied`: typed `invoke` refused by RBAC (audited);
//! - `dispatch/json_small`: JSON `dispatch` with a ~40-byte payload (parse, route, serialise output);
//! - `throughput/{1,2}_threads_with_reload`: calls per second with one and two threads invoking while
//!   a third thread reloads policy every millisecond.
//!
//! Targets (issue 5): typed allowed ≤ 150 ns (stretch ≤ 60 ns); JSON ≤ 2 µs; 2 threads ≥ 1.7× one.
//!
//! `invoke/allowed`, `invoke/denied` and `dispatch/json_small` time only calls whose audit record is
//! *accepted* by the queue: calls run in batches shorter than a lane's share of the queue and the
//! log is flushed, untimed, between batches (the bench asserts nothing was dropped). The writer
//! thread persists concurrently on the other core. `invoke/allowed_queue_full` is the overflow path
//! (`drop_with_marker` with the queue kept full: each record counted as dropped).
//!
//! Last figures (2026-11-25, `cargo bench -p nodus-benches --bench dispatch -- --measurement-time 3`,
//! 2-core x86_64 KVM guest (Intel Xeon, Sapphire Rapids class, AVX-512), 24 GiB; medians; `tracing` compiled in, no subscriber):
//!
//! | bench | median | target |
//! |---|---|---|
//! | `invoke/allowed` (typed, record accepted into the real log's queue) | 122 ns (122–136 ns over five runs) | ≤ 150 ns ✔ (stretch ≤ 60 ns ✘) |
//! | `invoke/denied` (RBAC denial, audited) | 125 ns | — |
//! | `invoke/allowed_queue_full` (the counted-drop path) | 183 ns | — |
//! | `invoke/allowed_counting_sink` (same path, records discarded) | 86 ns | — |
//! | `dispatch/json_small` (parse, route, serialise) | 425 ns | ≤ 2 µs ✔ |
//! | throughput, discarding sink: 1 → 2 threads, reload every ms | 11.66 → 20.87 M calls/s (1.79×) | ≥ 1.7× ✔ |
//! | throughput, real audit log (`drop_with_marker`, queue full): 1 → 2 threads | 5.44 → 4.95 M calls/s (0.91×) | see below |
//!
//! Scaling: the dispatch path itself shares no written cache line between threads (per-thread
//! audit lanes, context-private `Arc`s, literal command names as `SharedStr`, per-actor rate cells,
//! snapshots read through arc-swap guards), which the discarding-sink run shows: 1.79× on 2 cores
//! with the reload and clock threads also running. With the real log, the writer thread persists
//! ~650k records/s and is busy 100% of the time once callers outrun it (this run: 0.91×; other
//! runs up to 1.47×, depending on how the scheduler shares the cores), so on this 2-core machine
//! three busy threads share two cores: two dispatching threads can get at most ~4/3 of a core
//! between them, and they also contend with the writer on the full lanes. That figure measures
//! overload (records are being dropped and counted), not the dispatch path; on a machine with a
//! core to spare for the writer it approaches the discarding-sink ratio.
//!
//! Where the 122 ns go (callgrind, ~790 instructions per call): two arc-swap loads (command table,
//! tenant snapshot) ~190, building and moving the 184-byte audit record and the lane push ~200,
//! GCRA rate check ~85, RBAC/MAC ~40. The stretch target would need the record to shrink (an
//! interned identity instead of three `Arc`s) and one of the two arc-swap loads to go.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use nodus_core::security::audit::{
    AuditError, AuditRecord, AuditSink, AuditStats, Checkpoint, SignedCheckpoint, StoredRecord,
    VerifyReport,
};
use nodus_core::{
    ActorId, Command, CommandError, CommandSpec, Context, MasterKey, Nodus, PolicySources, TenantId,
};
use serde::Deserialize;

const SYSTEM: &str = r#"
[audit]
durability = "normal"
overflow = "drop_with_marker"
queue_capacity = 65536
checkpoint_every = 4096
checkpoint_interval = "1s"
"#;

fn tenant_toml(version: u32) -> String {
    format!(
        r#"
[rbac.roles]
viewer = ["notes.read"]
editor = ["notes.*"]
admin = ["*"]
v{version} = ["other.thing"]

[rate.limits]
default = {{ rate = 1000000000, per = "1s", burst = 1000000000 }}
"#
    )
}

fn sources(version: u32) -> PolicySources {
    PolicySources::new()
        .with_system("system.toml", SYSTEM)
        .with_tenant(
            TenantId::new("acme").unwrap(),
            "tenants/acme.toml",
            &tenant_toml(version),
        )
}

struct Ping;
impl Command for Ping {
    type Input = u64;
    type Output = u64;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.ping").permission("notes.read")
    }
    fn call(&self, _: &Context, i: u64) -> Result<u64, CommandError> {
        Ok(i.wrapping_add(1))
    }
}

#[derive(Deserialize)]
struct NewNote {
    title: String,
    tags: Vec<String>,
}

struct Create;
impl Command for Create {
    type Input = NewNote;
    type Output = usize;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.create")
    }
    fn call(&self, _: &Context, n: NewNote) -> Result<usize, CommandError> {
        Ok(n.title.len() + n.tags.len())
    }
}

struct Admin;
impl Command for Admin {
    type Input = ();
    type Output = ();
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("admin.op")
    }
    fn call(&self, _: &Context, _: ()) -> Result<(), CommandError> {
        Ok(())
    }
}

fn builder() -> nodus_core::NodusBuilder {
    Nodus::builder()
        .in_memory()
        .master_key(MasterKey::from_bytes([1; 32]))
        .policy(sources(0))
        .command(Ping)
        .command(Create)
        .command(Admin)
}

fn build() -> Nodus {
    builder().build().unwrap()
}

/// An audit sink that counts and discards: isolates the dispatch path from the audit writer's
/// work (which, on this 2-core machine, competes with the dispatching threads for CPU).
#[derive(Default)]
struct CountingSink(std::sync::atomic::AtomicU64);

// The counter is only read by `size`; the benches use a sink that just drops records so the
// measurement does not add a contended counter of its own.

impl AuditSink for CountingSink {
    fn record(&self, r: AuditRecord) -> Result<(), AuditError> {
        std::hint::black_box(r);
        Ok(())
    }
    fn flush(&self) -> Result<SignedCheckpoint, AuditError> {
        let size = self.0.load(Ordering::Relaxed);
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint {
                origin: "counting".into(),
                size,
                root: [0; 32],
            },
            note: String::new(),
        })
    }
    fn verify(&self) -> Result<VerifyReport, AuditError> {
        Err(AuditError::Closed)
    }
    fn stats(&self) -> AuditStats {
        AuditStats::default()
    }
    fn size(&self) -> Result<u64, AuditError> {
        Ok(self.0.load(Ordering::Relaxed))
    }
    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        Ok(None)
    }
    fn tail(&self, _n: usize) -> Result<Vec<StoredRecord>, AuditError> {
        Ok(vec![])
    }
    fn public_key(&self) -> [u8; 32] {
        [0; 32]
    }
    fn shutdown(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

fn build_counting() -> Nodus {
    builder()
        .with_audit(CountingSink::default())
        .build()
        .unwrap()
}

fn ctx(n: &Nodus, actor: &str, roles: &[&str]) -> Context {
    let t = TenantId::new("acme").unwrap();
    let s = n
        .subject(&t, ActorId::new(actor).unwrap(), roles, "UNCLASSIFIED")
        .unwrap();
    n.context(&t, s, "bench")
}

/// Calls per timed run: well below one lane's share of the queue.
const RUN: u64 = 16_384;

/// Times `iters` calls of `call` in runs of at most `RUN`, flushing the audit log (untimed) after
/// each run, so every timed call's record is accepted by the queue rather than dropped.
fn accepted_runs(n: &Nodus, iters: u64, mut call: impl FnMut(u64)) -> Duration {
    let dropped_before = n.audit_log().stats().dropped;
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let run = (iters - done).min(RUN);
        n.flush_audit().unwrap();
        let t = Instant::now();
        for i in 0..run {
            call(i);
        }
        total += t.elapsed();
        done += run;
    }
    n.flush_audit().unwrap();
    assert_eq!(
        n.audit_log().stats().dropped,
        dropped_before,
        "a timed record was dropped"
    );
    total
}

fn bench_invoke(c: &mut Criterion) {
    let n = build();
    let editor = ctx(&n, "alice", &["editor"]);
    let viewer = ctx(&n, "bob", &["viewer"]);
    let mut g = c.benchmark_group("invoke");
    // Every timed call's record is accepted into the queue (none dropped): calls are timed in
    // runs shorter than the queue, and the queue is flushed, untimed, between runs.
    g.bench_function("allowed", |b| {
        b.iter_custom(|iters| {
            accepted_runs(&n, iters, |i| {
                std::hint::black_box(n.invoke::<Ping>(&editor, std::hint::black_box(i)).unwrap());
            })
        })
    });
    g.bench_function("denied", |b| {
        b.iter_custom(|iters| {
            accepted_runs(&n, iters, |_| {
                std::hint::black_box(n.invoke::<Admin>(&viewer, ()).unwrap_err());
            })
        })
    });
    g.bench_function("allowed_queue_full", |b| {
        // The overflow path: the queue is kept full, so each record is counted as dropped.
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            n.invoke::<Ping>(&editor, std::hint::black_box(i)).unwrap()
        })
    });
    let nc = build_counting();
    let editor_c = ctx(&nc, "alice", &["editor"]);
    g.bench_function("allowed_counting_sink", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            nc.invoke::<Ping>(&editor_c, std::hint::black_box(i))
                .unwrap()
        })
    });
    g.finish();
    let mut g = c.benchmark_group("dispatch");
    let payload = r#"{"title":"hello world","tags":["a","b"]}"#;
    g.bench_function("json_small", |b| {
        b.iter_custom(|iters| {
            accepted_runs(&n, iters, |_| {
                std::hint::black_box(
                    n.dispatch(&editor, "notes.create", std::hint::black_box(payload))
                        .unwrap(),
                );
            })
        })
    });
    g.finish();
    n.shutdown().unwrap();
}

/// Calls per second over `window` with `threads` invoking threads and one reloading thread.
fn throughput(threads: usize, window: Duration, counting: bool) -> (f64, u64) {
    let n = if counting { build_counting() } else { build() };
    let stop = Arc::new(AtomicBool::new(false));
    let reloader = {
        let n = n.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut v = 0u32;
            let mut reloads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                n.reload_policy(sources(v % 2)).unwrap();
                reloads += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            reloads
        })
    };
    let workers: Vec<_> = (0..threads)
        .map(|k| {
            let n = n.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let c = ctx(&n, &format!("worker{k}"), &["editor"]);
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..256u64 {
                        std::hint::black_box(n.invoke::<Ping>(&c, i).unwrap());
                    }
                    calls += 256;
                }
                calls
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    let calls: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = start.elapsed().as_secs_f64();
    let reloads = reloader.join().unwrap();
    n.shutdown().unwrap();
    (calls as f64 / elapsed, reloads)
}

fn bench_throughput(c: &mut Criterion) {
    // Criterion's per-iteration model does not fit a fixed-window multi-thread run; report the
    // figures directly, and give criterion one cheap sample so the group still appears.
    let window = Duration::from_secs(2);
    for counting in [false, true] {
        let (one, r1) = throughput(1, window, counting);
        let (two, r2) = throughput(2, window, counting);
        println!(
            "throughput/with_reload ({}): 1 thread {:.2} M calls/s ({r1} reloads), 2 threads {:.2} M calls/s ({r2} reloads), ratio {:.2}",
            if counting {
                "discarding sink"
            } else {
                "audit log"
            },
            one / 1e6,
            two / 1e6,
            two / one
        );
    }
    c.bench_function("throughput/noop", |b| b.iter(|| 1));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_invoke, bench_throughput
}
criterion_main!(benches);
