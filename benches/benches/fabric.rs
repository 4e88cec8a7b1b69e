//! The fabric's event log, beside the SQLite floor it is built on.
//!
//! Measures, on a file-backed `SqliteEventLog` in a temporary directory (WAL), with the raw
//! rusqlite equivalent of the same rows side by side so the ratio to the floor is visible:
//! - `eventlog/append_1_normal`: one local event per call (`append`: assign seq and lamport,
//!   canonical encoding, SHA-256 chain, one transaction) under `Durability::Normal`;
//! - `raw_sqlite/insert_1_normal`: one row of the same shape per transaction (prepared, cached),
//!   `synchronous = NORMAL`, no hashing — the floor for `append_1_normal`;
//! - `eventlog/ingest_1000`: a batch of 1,000 remote events from one peer chain into a fresh log
//!   (hash check, identity, chain link, one transaction), per batch;
//! - `eventlog/ingest_1000_duplicates`: the same batch again (every event a duplicate);
//! - `eventlog/read_tenant_1000`: one page of 1,000 events by cursor;
//! - `state/get_hit`: a cached object (a ~200-byte JSON value) found in the `QuickStateStore`,
//!   key built from the deciding inputs (tenant, clearance, scheme, epoch, generation, entity);
//! - `state/get_miss`: the same lookup for an entity that is not cached.
//!
//! - `objects/*`: the fabric's built-in commands through a file-backed instance (`Normal`
//!   durability, the real audit log with `drop_with_marker`): `create` through `dispatch` with one
//!   indexed field; `get` through `dispatch` and through the typed facade, cached and uncached
//!   (`state.cache.objects.capacity_bytes = 0`); `list` of 50 from 100,000 objects with a filter
//!   on the indexed field (1 in 20 match).
//! - `objects/*_library_*`: `Fabric::create` / `Fabric::get` without the front door (no
//!   dispatch, audit or cache), beside `raw_sqlite/object_rows_insert_normal` — the same rows
//!   (event, object version, one index row, history row; same keys and indexes) inserted by hand
//!   in one transaction, no hashing, no checks — and `raw_sqlite/object_select` (one object row
//!   by key, JSON parsed): the floor under `create` and `get`.
//! - `rebuild/rebuild_100k_events`: `Fabric::rebuild` of a log of 100,000 `object.created`
//!   events (one indexed field); with `NODUS_BENCH_REBUILD_1M=1` the same for 1,000,000 events,
//!   one shot, printed to stderr.
//!
//! Round 1 figures, before the changes of round 2 below (2026-12-03, `cargo bench -p
//! nodus-benches --bench fabric -- --measurement-time 3`, 2-core x86_64 KVM guest, 24 GiB, load
//! average 3–6 from builds running beside it, so upper bounds; medians):
//!
//! | bench | median | rate | |
//! |---|---|---|---|
//! | `eventlog/append_1_normal` | 55.5 µs | ≈ 18,000 appends/s | 1.95× the floor |
//! | `raw_sqlite/insert_1_normal` (floor) | 28.4 µs | ≈ 35,000 inserts/s | — |
//! | `eventlog/ingest_1000` | 3.72 ms | 3.7 µs ≈ 269,000 events/s | target for remote events ≥ 50,000/s ✔ |
//! | `eventlog/ingest_1000_duplicates` | 2.26 ms | 2.3 µs | — |
//! | `eventlog/read_tenant_1000` | 1.20 ms | 1.2 µs | — |
//! | `state/get_hit` | 296 ns | ≈ 3.4 M lookups/s | — |
//! | `state/get_miss` | 91 ns | — | — |
//! | `objects/create_dispatch_1_indexed_normal` | 283 µs | ≈ 3,500/s | target ≥ 10,000/s ✘ (below the floor, see below) |
//! | `objects/create_library_1_indexed_normal` | 277 µs | ≈ 3,600/s | 1.6× the floor |
//! | `raw_sqlite/object_rows_insert_normal` (floor) | 172 µs | ≈ 5,800/s | — |
//! | `objects/get_dispatch_uncached` | 5.98 µs | ≈ 167,000/s | target ≥ 100,000/s ✔ (16.9 µs before this round: the type cache no longer reads the database, the output is built directly) |
//! | `objects/get_library_uncached` | 7.8 µs | ≈ 128,000/s | 1.7× the floor |
//! | `raw_sqlite/object_select` (floor) | 4.6 µs | ≈ 219,000/s | — |
//! | `objects/get_dispatch_cached` | 1.37 µs | ≈ 730,000/s | JSON in and out: target ≥ 1,000,000/s ✘ (2.08 µs before this round) |
//! | `objects/get_invoke_cached` (typed facade) | 827 ns | ≈ 1,210,000/s | target ≥ 1,000,000/s ✔ |
//! | `objects/list_50_of_100k_indexed_filter` | 0.52 ms | — | target ≤ 1 ms ✔ (was 300 ms) |
//! | `rebuild/rebuild_100k_events` | 3.74 s | ≈ 26,700 events/s | — |
//! | rebuild of 1,000,000 events (one shot) | 35.3 s | ≈ 28,000 events/s | target ≤ 60 s ✔ |
//!
//! Round 2 (2026-12-03 16:00–16:40 UTC, same machine, branch `wt-perf`; load average 5–10 from
//! three other engineers' builds, so wall-clock medians moved by 2× between back-to-back runs
//! and decisions were taken on counts, not times):
//!
//! | bench (back to back, old binary then new) | old | new | load |
//! |---|---|---|---|
//! | `objects/create_dispatch_1_indexed_normal` | 258 µs | 230 µs | 5.1 → 4.1 |
//! | `raw_sqlite/object_rows_insert_normal` (floor) | 98 µs | 107 µs | 5.1 → 4.1 |
//! | `objects/get_dispatch_cached` | 3.25 µs | 3.12 µs | 5.1 → 4.1 |
//! | `objects/get_invoke_cached` | 1.72 µs | 2.53 µs | 5.1 → 4.1 |
//!
//! Two more old/new pairs at 16:45 (load 5.0 → 3.3): create 207 / 207 µs → 212 / 175 µs;
//! `get_dispatch_cached` 1.38 / 1.81 µs → 2.15 / 1.84 µs; `get_invoke_cached` 1.34 / 1.55 µs →
//! 1.88 / 2.08 µs. At this load wall clock does not resolve the `get` changes (±30 % between
//! identical runs); the instruction counts below do, and they say −11 % on the JSON path and
//! +4 % on the typed one (the cache now holds the JSON form, so a typed hit reads it by key).
//!
//! Deterministic evidence (the figures to trust):
//! - **create, where the wall time went** (`Fabric::create`, 20,000 creates, file-backed,
//!   `Normal`, `perf stat` task-clock; load ≈ 6.5): CPU per create (user + sys) ≈ 110–120 µs
//!   whatever the checkpoint setting (≈ 60 user, ≈ 55 sys), but wall time 463 µs with SQLite's
//!   `wal_autocheckpoint = 1000`, 347 µs at 4,000 and 234 µs at 16,384: the rest is waiting for
//!   checkpoint fsyncs. `strace -c` (5,000 creates, old setting): 28 `pwrite64`, 8 `fcntl` per
//!   create and one `fsync` every 24 creates. With checkpoints off the same run takes 305 µs vs
//!   505 µs. Hence `CHECKPOINT_PAGES = 16,384` in `SqliteEventLog::open` (commits unchanged;
//!   the raw floor here uses the same setting so the ratio stays honest).
//! - **pages per create**: 13.6 WAL frames (4 KiB) per create (WAL growth with checkpoints off,
//!   4,000 creates); `tests/write_cost.rs` bounds it at ≤ 14.5 and pins the rows changed per
//!   create at 6. The floor's rows written by hand (Python `sqlite3`, same tables): 9.7 frames;
//!   events `WITHOUT ROWID` keyed by `(tenant, pos)` 9.0 (−7 %); no history table 7.9 (−18 %,
//!   but history then needs an events index on `(tenant, entity)`, one B-tree back). `page_size`
//!   1024/2048 writes fewer bytes but more frames (13.6 / 11.6 per commit) and no less CPU.
//!   Not adopted in this round: the events-table change needs a store-format migration and saves
//!   one page in fourteen.
//! - **cached get through `dispatch`**: callgrind, main thread, per hit (the benchmark loop's
//!   drop of the output included): 11.0k instructions before the output cache, 9.8k now; typed
//!   facade 7.4k. What is left on the JSON path: the clone of the cached output `Value` (≈ 2.1k:
//!   ~15 allocations, the 5 keys, 3 strings and the data map) and its drop by the caller (≈ 2.5k),
//!   the input parse (≈ 1.1k), the cache lookup (≈ 1.4k) and the per-type permission check.
//!
//! What the misses mean:
//! - **create ≥ 10,000/s: not met.** A create costs ≈ 110 µs of CPU on this machine before
//!   any waiting (half of it kernel time for the ~28 page-frame writes and locks of one WAL
//!   commit), so one thread cannot reach 10,000/s here even on an idle machine; the raw floor
//!   for the same rows measured 98–107 µs at load 4–5. Reaching the target needs fewer pages
//!   per commit (events `WITHOUT ROWID`, a compact merge stamp — today 86 bytes of text, stored
//!   per field, as reset, as delete stamp and in the history key — so fewer splits), or group
//!   commit across callers; a one-thread bench cannot batch, and batching acknowledged writes is
//!   ruled out.
//! - **cached get through `dispatch` ≥ 1,000,000/s**: the JSON path is now ≈ 1.3× the typed
//!   facade in instructions (was ≈ 1.55×); scaling round 1's 1.37 µs by the instruction counts
//!   gives ≈ 1.2 µs, still short of 1 µs, and no wall-clock run here confirmed it. The
//!   remaining gap is the output `Value` itself (built by cloning, dropped by the caller), which
//!   `dispatch`'s signature (`serde_json::Value` out) requires.
//!
//! Where an append's extra ~27 µs over its floor go: the canonical encoding and SHA-256 of the
//! event, reading the chain head and the tenant's lamport clock, and the head/clock updates — three
//! more statements in the same transaction.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use nodus_fabric::state::{CacheConfig, QuickStateStore, StateStore, Visibility};
use nodus_fabric::{
    Durability, EntityId, Event, EventKind, EventLabel, NewEvent, NodeId, Payload, SqliteEventLog,
    TenantEventLog,
};
use nodus_policy::TenantId;
use serde_json::json;

fn node(b: u8) -> NodeId {
    NodeId::from_bytes([b; 16])
}

fn new_event(i: u64) -> NewEvent {
    NewEvent::new(
        EventKind::new("object.created").unwrap(),
        EntityId::new(format!("note-{i}")).unwrap(),
        EventLabel::new("UNCLASSIFIED").unwrap(),
        Payload::from_value(&json!({"title": format!("note {i}"), "status": "open", "n": i}))
            .unwrap(),
    )
}

/// 1,000 events of a peer's chain, as a receiver gets them.
fn peer_batch(tenant: &TenantId) -> Vec<Event> {
    let peer = SqliteEventLog::in_memory(node(9)).unwrap();
    peer.append(tenant, (0..1000).map(new_event).collect())
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let tenant = TenantId::new("acme").unwrap();
    let dir = tempfile::tempdir().unwrap();

    let log =
        SqliteEventLog::open(&dir.path().join("append.db"), node(1), Durability::Normal).unwrap();
    let mut i = 0u64;
    c.bench_function("eventlog/append_1_normal", |b| {
        b.iter(|| {
            i += 1;
            log.append(&tenant, vec![new_event(i)]).unwrap()
        })
    });

    let raw = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
    raw.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = {};",
        nodus_fabric::CHECKPOINT_PAGES
    ))
    .unwrap();
    raw.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE events (tenant TEXT NOT NULL, node BLOB NOT NULL, incarnation BLOB NOT NULL,
           seq INTEGER NOT NULL, lamport INTEGER NOT NULL, kind TEXT NOT NULL, entity TEXT NOT NULL,
           label TEXT NOT NULL, payload TEXT NOT NULL, model_ver INTEGER NOT NULL,
           prev_hash BLOB NOT NULL, hash BLOB NOT NULL, time_ms INTEGER NOT NULL,
           PRIMARY KEY (tenant, node, incarnation, seq));",
    )
    .unwrap();
    let mut raw = raw;
    let mut seq = 0i64;
    c.bench_function("raw_sqlite/insert_1_normal", |b| {
        b.iter(|| {
            seq += 1;
            let tx = raw.transaction().unwrap();
            tx.prepare_cached(
                "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .unwrap()
            .execute(rusqlite::params![
                "acme",
                &[1u8; 16][..],
                &[2u8; 16][..],
                seq,
                seq,
                "object.created",
                format!("note-{seq}"),
                "UNCLASSIFIED",
                format!(r#"{{"n":{seq},"status":"open","title":"note {seq}"}}"#),
                1,
                &[0u8; 32][..],
                &[0u8; 32][..],
                0,
            ])
            .unwrap();
            tx.commit().unwrap();
        })
    });

    let batch = peer_batch(&tenant);
    let mut n = 0u32;
    c.bench_function("eventlog/ingest_1000", |b| {
        b.iter_batched(
            || {
                n += 1;
                let path = dir.path().join(format!("ingest-{n}.db"));
                (
                    SqliteEventLog::open(&path, node(1), Durability::Normal).unwrap(),
                    batch.clone(),
                )
            },
            |(log, events)| {
                let report = log.ingest(&tenant, events).unwrap();
                assert_eq!(report.applied.len(), 1000);
                log
            },
            BatchSize::PerIteration,
        )
    });

    let warm =
        SqliteEventLog::open(&dir.path().join("dups.db"), node(1), Durability::Normal).unwrap();
    warm.ingest(&tenant, batch.clone()).unwrap();
    c.bench_function("eventlog/ingest_1000_duplicates", |b| {
        b.iter(|| {
            let report = warm.ingest(&tenant, batch.clone()).unwrap();
            assert_eq!(report.duplicates, 1000);
        })
    });

    let cache = QuickStateStore::new("objects", CacheConfig::with_capacity(64 << 20));
    let scheme = nodus_policy::LabelScheme::classic();
    let who = Visibility::new(scheme.parse("SECRET").unwrap(), scheme.id(), 3);
    for i in 0..10_000 {
        let v = json!({"title": format!("case {i}"), "status": "open", "priority": 3, "owner": "alice",
                       "tags": ["litigation", "urgent"], "summary": "x".repeat(80)});
        cache.insert(&tenant, &who, &format!("case/{i}"), std::sync::Arc::new(v));
    }
    let mut k = 0usize;
    c.bench_function("state/get_hit", |b| {
        b.iter(|| {
            k = (k + 7) % 10_000;
            cache.get(&tenant, &who, &format!("case/{k}")).unwrap()
        })
    });
    c.bench_function("state/get_miss", |b| {
        b.iter(|| cache.get(&tenant, &who, "case/none"))
    });

    c.bench_function("eventlog/read_tenant_1000", |b| {
        b.iter(|| {
            let (events, _) = warm.read_tenant(&tenant, None, 1000).unwrap();
            assert_eq!(events.len(), 1000);
        })
    });
}

const SYSTEM: &str = r#"
[audit]
durability = "normal"
overflow = "drop_with_marker"
queue_capacity = 65536
checkpoint_every = 4096
checkpoint_interval = "1s"
"#;

const TENANT: &str = r#"
[rbac.roles]
admin = ["*"]
[rate.limits]
default = { rate = 1000000000, per = "1s", burst = 1000000000 }
[limits]
max_payload_bytes = 65536
"#;

fn instance(dir: &std::path::Path, cache_bytes: u64) -> nodus_core::Nodus {
    let system = format!("{SYSTEM}\n[state.cache.objects]\ncapacity_bytes = {cache_bytes}\n");
    nodus_core::Nodus::builder()
        .data_dir(dir)
        .master_key(nodus_core::MasterKey::from_bytes([5; 32]))
        .policy(
            nodus_core::PolicySources::new()
                .with_system("system.toml", &system)
                .with_tenant(TenantId::new("acme").unwrap(), "tenants/acme.toml", TENANT),
        )
        .build()
        .unwrap()
}

fn objects(c: &mut Criterion) {
    let acme = TenantId::new("acme").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let setup = |n: &nodus_core::Nodus| {
        let s = n
            .subject(
                &acme,
                nodus_core::ActorId::new("root").unwrap(),
                &["admin"],
                "UNCLASSIFIED",
            )
            .unwrap();
        let ctx = n.context(&acme, s, "bench");
        n.dispatch(
            &ctx,
            "types.define",
            r#"{"name":"case","schema":{"type":"object","properties":{"title":{"type":"string"},"status":{"type":"string"},"n":{"type":"integer"}}},"fields":{"status":{"indexed":true}}}"#,
        )
        .unwrap();
        ctx
    };

    let cached = instance(&dir.path().join("cached"), 64 << 20);
    let ctx = setup(&cached);
    cached
        .dispatch(
            &ctx,
            "objects.create",
            r#"{"type":"case","id":"seed","data":{"title":"case seed","status":"open","n":0}}"#,
        )
        .unwrap();
    let mut i = 0u64;
    c.bench_function("objects/create_dispatch_1_indexed_normal", |b| {
        b.iter(|| {
            i += 1;
            cached
                .dispatch(
                    &ctx,
                    "objects.create",
                    &format!(r#"{{"type":"case","id":"c{i}","data":{{"title":"case {i}","status":"open","n":{i}}}}}"#),
                )
                .unwrap()
        })
    });
    c.bench_function("objects/get_dispatch_cached", |b| {
        b.iter(|| {
            cached
                .dispatch(&ctx, "objects.get", r#"{"type":"case","id":"seed"}"#)
                .unwrap()
        })
    });
    c.bench_function("objects/get_invoke_cached", |b| {
        b.iter(|| cached.objects(&ctx).get("case", "seed").unwrap())
    });

    let uncached = instance(&dir.path().join("uncached"), 0);
    let uctx = setup(&uncached);
    for k in 0..1000 {
        uncached
            .dispatch(
                &uctx,
                "objects.create",
                &format!(r#"{{"type":"case","id":"c{k}","data":{{"title":"case {k}","status":"open","n":{k}}}}}"#),
            )
            .unwrap();
    }
    let mut k = 0u64;
    c.bench_function("objects/get_dispatch_uncached", |b| {
        b.iter(|| {
            k = (k + 7) % 1000;
            uncached
                .dispatch(
                    &uctx,
                    "objects.get",
                    &format!(r#"{{"type":"case","id":"c{k}"}}"#),
                )
                .unwrap()
        })
    });

    // 100,000 objects, 1 in 20 `closed`: a page of 50 of the closed ones.
    let big = instance(&dir.path().join("big"), 0);
    let bctx = setup(&big);
    let facade = big.objects(&bctx);
    for k in 0..100_000u64 {
        let status = if k % 20 == 0 { "closed" } else { "open" };
        facade
            .create(
                "case",
                Some(&format!("c{k:06}")),
                None,
                json!({"title": "t", "status": status, "n": k}),
            )
            .unwrap();
    }
    let query = r#"{"type_name":"case","filter":[{"field":"status","op":"eq","value":"closed"}],"sort":null,"limit":50,"cursor":null}"#;
    c.bench_function("objects/list_50_of_100k_indexed_filter", |b| {
        b.iter(|| {
            let page = big.dispatch(&bctx, "objects.list", query).unwrap();
            assert_eq!(page["items"].as_array().unwrap().len(), 50);
        })
    });
}

/// A file-backed fabric whose log holds a `case` type and `n` created objects (one indexed
/// field), appended straight to the log in batches of 10,000 (no projections written), ready for
/// `rebuild`.
fn log_of(dir: &std::path::Path, n: u64) -> (nodus_fabric::Fabric, TenantId) {
    let acme = TenantId::new("acme").unwrap();
    let log = std::sync::Arc::new(
        SqliteEventLog::open(&dir.join("fabric.db"), node(1), Durability::Normal).unwrap(),
    );
    let fabric = nodus_fabric::Fabric::new(log.clone()).unwrap();
    let store = nodus_policy::PolicyStore::new(nodus_policy::PolicySources::new().with_tenant(
        acme.clone(),
        "tenants/acme.toml",
        "",
    ))
    .unwrap();
    let snap = store.snapshot(&acme).unwrap();
    fabric
        .define_type(
            &acme,
            &snap,
            "case",
            json!({"type":"object","properties":{"title":{"type":"string"},"status":{"type":"string"},"n":{"type":"integer"}}}),
            json!({"status":{"indexed":true}}),
        )
        .unwrap();
    let mut k = 0u64;
    while k < n {
        let batch: Vec<NewEvent> = (k..n.min(k + 10_000))
            .map(|i| {
                let status = if i % 20 == 0 { "closed" } else { "open" };
                NewEvent::new(
                    EventKind::new("object.created").unwrap(),
                    EntityId::new(format!("case/c{i:07}")).unwrap(),
                    EventLabel::new("UNCLASSIFIED").unwrap(),
                    Payload::from_value(&json!({"type": "case", "id": format!("c{i:07}"),
                        "data": {"title": format!("case {i}"), "status": status, "n": i}}))
                    .unwrap(),
                )
            })
            .collect();
        k += batch.len() as u64;
        log.append(&acme, batch).unwrap();
    }
    (fabric, acme)
}

/// `Fabric::create` without the front door (no dispatch, audit or cache), and the raw rusqlite
/// floor for the same rows: one transaction inserting the event, the object version, its one
/// index row and its history row into plain tables with the same keys.
fn objects_floor(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (fabric, acme) = log_of(dir.path(), 0);
    let store = nodus_policy::PolicyStore::new(nodus_policy::PolicySources::new().with_tenant(
        acme.clone(),
        "tenants/acme.toml",
        "",
    ))
    .unwrap();
    let snap = store.snapshot(&acme).unwrap();
    let scheme = snap.label_scheme();
    let subject = nodus_policy::Subject::new(
        acme.clone(),
        nodus_policy::ActorId::new("root").unwrap(),
        nodus_policy::RoleSet::from_ids([]),
        scheme.parse("UNCLASSIFIED").unwrap(),
        scheme,
    );
    let mut i = 0u64;
    c.bench_function("objects/create_library_1_indexed_normal", |b| {
        b.iter(|| {
            i += 1;
            fabric
                .create(
                    &acme,
                    &snap,
                    &subject,
                    "case",
                    Some(format!("c{i}")),
                    None,
                    json!({"title": format!("case {i}"), "status": "open", "n": i}),
                )
                .unwrap()
        })
    });
    c.bench_function("objects/get_library_uncached", |b| {
        b.iter(|| fabric.get(&acme, &snap, &subject, "case", "c1").unwrap())
    });

    let mut raw = rusqlite::Connection::open(dir.path().join("raw_objects.db")).unwrap();
    // The same checkpoint interval as `SqliteEventLog` (`CHECKPOINT_PAGES`), so the ratio to the
    // floor compares the rows written, not the checkpoint settings.
    raw.execute_batch(&format!(
        "PRAGMA wal_autocheckpoint = {};",
        nodus_fabric::CHECKPOINT_PAGES
    ))
    .unwrap();
    raw.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE events (tenant TEXT NOT NULL, pos INTEGER NOT NULL, seq INTEGER NOT NULL,
           entity TEXT NOT NULL, payload TEXT NOT NULL, hash BLOB NOT NULL,
           UNIQUE (tenant, seq), UNIQUE (tenant, pos));
         CREATE TABLE objects (tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
           label TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
           PRIMARY KEY (tenant, type, id, label)) WITHOUT ROWID;
         CREATE TABLE idx (tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
           label TEXT NOT NULL, field TEXT NOT NULL, t INTEGER NOT NULL, v NOT NULL,
           PRIMARY KEY (tenant, type, id, label, field)) WITHOUT ROWID;
         CREATE INDEX idx_by_value ON idx (tenant, type, field, t, v);
         CREATE TABLE history (tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
           stamp TEXT NOT NULL, change TEXT NOT NULL,
           PRIMARY KEY (tenant, type, id, stamp)) WITHOUT ROWID;",
    )
    .unwrap();
    let mut k = 0i64;
    c.bench_function("raw_sqlite/object_rows_insert_normal", |b| {
        b.iter(|| {
            k += 1;
            let data = format!(r#"{{"n":{k},"status":"open","title":"case {k}"}}"#);
            let tx = raw.transaction().unwrap();
            tx.prepare_cached("INSERT INTO events VALUES ('acme', ?1, ?1, ?2, ?3, ?4)")
                .unwrap()
                .execute(rusqlite::params![
                    k,
                    format!("case/c{k}"),
                    data,
                    &[0u8; 32][..]
                ])
                .unwrap();
            tx.prepare_cached(
                "INSERT INTO objects VALUES ('acme', 'case', ?1, 'UNCLASSIFIED', 1, ?2)",
            )
            .unwrap()
            .execute(rusqlite::params![format!("c{k}"), data])
            .unwrap();
            tx.prepare_cached(
                "INSERT INTO idx VALUES ('acme', 'case', ?1, 'UNCLASSIFIED', 'status', 3, 'open')",
            )
            .unwrap()
            .execute([format!("c{k}")])
            .unwrap();
            tx.prepare_cached("INSERT INTO history VALUES ('acme', 'case', ?1, ?2, ?3)")
                .unwrap()
                .execute(rusqlite::params![format!("c{k}"), format!("{k:020}"), data])
                .unwrap();
            tx.commit().unwrap();
        })
    });
    c.bench_function("raw_sqlite/object_select", |b| {
        b.iter(|| {
            let data: String = raw
                .prepare_cached(
                    "SELECT data FROM objects WHERE tenant = 'acme' AND type = 'case' AND id = 'c1'",
                )
                .unwrap()
                .query_row([], |r| r.get(0))
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&data).unwrap()
        })
    });
}

fn rebuild(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (fabric, acme) = log_of(dir.path(), 100_000);
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10);
    g.bench_function("rebuild_100k_events", |b| {
        b.iter(|| fabric.rebuild(&acme).unwrap())
    });
    g.finish();
    // The issue's figure, one shot (a criterion run would take ten): set NODUS_BENCH_REBUILD_1M=1.
    if std::env::var_os("NODUS_BENCH_REBUILD_1M").is_some() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::Instant::now();
        let (fabric, acme) = log_of(dir.path(), 1_000_000);
        eprintln!("rebuild_1m: appended 1,000,000 events in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        fabric.rebuild(&acme).unwrap();
        eprintln!("rebuild_1m: rebuilt 1,000,000 events in {:?}", t.elapsed());
    }
}

criterion_group! {
    name = fabric;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = benches, objects, objects_floor, rebuild
}
criterion_main!(fabric);
