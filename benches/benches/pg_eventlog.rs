//! `PgEventLog` (feature `postgres`) beside the raw PostgreSQL floor it is built on.
//!
//! Run: `NODUS_PG_URL='host=127.0.0.1 user=postgres dbname=test' cargo bench -p nodus-benches
//! --features postgres --bench pg_eventlog`. Without `NODUS_PG_URL` it prints a line and measures
//! nothing. Each run works in fresh random schemas and drops them at the end.
//!
//! Measures, on one connection to a local server (fsync on):
//! - `pg_eventlog/append_1_full`: one local event per `append` (one transaction), under
//!   `Durability::Full` (`synchronous_commit = on`): the optimistic path — one conditional write
//!   statement that commits by itself, starting from the state this handle's previous append left
//!   (one round trip; a second one to read the state when another writer moved it);
//! - `pg_eventlog/append_100_full`: 100 events per `append` (one transaction, one multi-row
//!   insert); throughput is per event;
//! - `pg_eventlog/append_1_normal`: as `append_1_full` under `Durability::Normal`
//!   (`synchronous_commit = off`: the commit does not wait for the WAL flush), i.e. the cost of an
//!   append without the fsync;
//! - `pg_raw/insert_1_full`: the floor for `append_1_full`: one row of the same shape per commit
//!   (a prepared autocommit `INSERT`, no hashing, no head or counters);
//! - `pg_raw/insert_100_full`: the floor for `append_100_full`: 100 such rows in one commit (one
//!   prepared `INSERT … SELECT FROM unnest(…)`).
//!
//! Last figures (2026-12-03, `-- --measurement-time 5`, 2-core x86_64 KVM guest, 24 GiB,
//! PostgreSQL 15.20 on the same machine over TCP to 127.0.0.1, fsync on), medians of three runs
//! made while *other engineers' builds and benches were loading the same cores and disk (load
//! average 5–7)*. The fsync floor was far from the 5,000 single-row commits/s measured on the idle
//! machine — a one-row commit took 1.3–3.5 ms (pgbench: ~620–770 tps at the time) — so the absolute
//! figures are upper bounds and the ratio to the floor, measured in the same run, is what they
//! show:
//!
//! | bench | run 1 | run 2 | run 3 | per event (best run) | ratio to the floor |
//! |---|---|---|---|---|---|
//! | `pg_eventlog/append_1_full` (two round trips) | 4.39 ms | 3.06 ms | — | ≈ 330/s | 2.0–3.3× |
//! | `pg_eventlog/append_1_full` (one round trip) | — | — | 4.28 ms | ≈ 230/s | 1.2× |
//! | `pg_raw/insert_1_full` (floor) | 1.34 ms | 1.54 ms | 3.53 ms | ≈ 750/s | — |
//! | `pg_eventlog/append_100_full` | 4.15 ms | 4.66 ms | 4.80 ms | ≈ 24,100 events/s | 1.3–1.45× |
//! | `pg_raw/insert_100_full` (floor) | 2.87 ms | 3.56 ms | 3.71 ms | ≈ 34,800 rows/s | — |
//! | `pg_eventlog/append_1_normal` (no fsync wait) | 233 µs | 614 µs | 456 µs | ≈ 4,300/s | — |
//!
//! Targets from the issue: ≥ 3,000 appends/s one per transaction, ≥ 30,000 events/s in batches of
//! 100. **Not demonstrated on this machine in this state**: every figure here, the floor included,
//! is bound by a disk that other jobs were flushing to. What the figures do show: an append is one
//! commit (one WAL flush), like the floor; without the flush an append costs 0.23–0.6 ms here (the
//! canonical encoding and SHA-256, one or two statements, the tenant and head rows); a batch of 100
//! costs 1.3–1.45× the bare rows (three tables and four indexes written instead of one table and
//! two). On the idle machine's floors (200 µs per commit, 97,600 rows/s in 100-row commits) the
//! same ratios would give roughly 2,300–4,000 appends/s and 67,000–75,000 events/s: the batched
//! target with room, the single one close. Re-measure on a quiet machine.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodus_fabric::{
    Durability, EntityId, EventKind, EventLabel, NewEvent, NodeId, Payload, PgEventLog,
    TenantEventLog,
};
use nodus_policy::TenantId;
use serde_json::json;

fn new_event(i: u64) -> NewEvent {
    NewEvent::new(
        EventKind::new("object.created").unwrap(),
        EntityId::new(format!("note-{i}")).unwrap(),
        EventLabel::new("UNCLASSIFIED").unwrap(),
        Payload::from_value(&json!({"title": format!("note {i}"), "status": "open", "n": i}))
            .unwrap(),
    )
}

/// A schema name nobody else uses.
fn schema(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("nodus_bench_{what}_{}_{nanos}", std::process::id())
}

/// Drops the schemas it was given when the bench ends.
struct Cleanup {
    url: String,
    schemas: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            for s in &self.schemas {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
            }
        }
    }
}

fn benches(c: &mut Criterion) {
    let Ok(url) = std::env::var("NODUS_PG_URL") else {
        eprintln!("skipping: NODUS_PG_URL is not set");
        return;
    };
    let mut cleanup = Cleanup {
        url: url.clone(),
        schemas: Vec::new(),
    };
    let tenant = TenantId::new("acme").unwrap();

    let s = schema("full");
    cleanup.schemas.push(s.clone());
    let log = PgEventLog::connect(&url, &s, NodeId::from_bytes([1; 16]), Durability::Full).unwrap();
    let mut i = 0u64;
    let mut group = c.benchmark_group("pg_eventlog");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_1_full", |b| {
        b.iter(|| {
            i += 1;
            log.append(&tenant, vec![new_event(i)]).unwrap()
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("append_100_full", |b| {
        b.iter(|| {
            let batch = (0..100).map(|k| new_event(i * 1000 + k)).collect();
            i += 1;
            log.append(&tenant, batch).unwrap()
        })
    });
    let s = schema("normal");
    cleanup.schemas.push(s.clone());
    let normal =
        PgEventLog::connect(&url, &s, NodeId::from_bytes([2; 16]), Durability::Normal).unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_1_normal", |b| {
        b.iter(|| {
            i += 1;
            normal.append(&tenant, vec![new_event(i)]).unwrap()
        })
    });
    group.finish();

    // The floor: the same rows, no log.
    let s = schema("raw");
    cleanup.schemas.push(s.clone());
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    raw.batch_execute(&format!(
        "SET synchronous_commit TO on;
         CREATE SCHEMA \"{s}\";
         CREATE TABLE \"{s}\".events (tenant TEXT NOT NULL, node_id BYTEA NOT NULL,
           incarnation BYTEA NOT NULL, seq BIGINT NOT NULL, pos BIGINT NOT NULL,
           lamport BIGINT NOT NULL, kind TEXT NOT NULL, entity TEXT NOT NULL, label TEXT NOT NULL,
           payload TEXT NOT NULL, model_ver BIGINT NOT NULL, prev_hash BYTEA NOT NULL,
           hash BYTEA NOT NULL, time_ms BIGINT NOT NULL,
           PRIMARY KEY (tenant, node_id, incarnation, seq), UNIQUE (tenant, pos));"
    ))
    .unwrap();
    let one = raw
        .prepare(&format!(
            "INSERT INTO \"{s}\".events VALUES ($1, $2, $3, $4, $4, $4, $5, $6, $7, $8, 1, $9, $9, 0)"
        ))
        .unwrap();
    let many = raw
        .prepare(&format!(
            "INSERT INTO \"{s}\".events
             SELECT $1, $2, $3, u.seq, u.seq, u.seq, $4, u.entity, $5, u.payload, 1, $6, $6, 0
             FROM unnest($7::bigint[], $8::text[], $9::text[]) AS u(seq, entity, payload)"
        ))
        .unwrap();
    let (node, inc, hash) = (&[1u8; 16][..], &[2u8; 16][..], &[0u8; 32][..]);
    let mut seq = 0i64;
    let mut group = c.benchmark_group("pg_raw");
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_1_full", |b| {
        b.iter(|| {
            seq += 1;
            raw.execute(
                &one,
                &[
                    &"acme",
                    &node,
                    &inc,
                    &seq,
                    &"object.created",
                    &format!("note-{seq}"),
                    &"UNCLASSIFIED",
                    &format!(r#"{{"n":{seq},"status":"open","title":"note {seq}"}}"#),
                    &hash,
                ],
            )
            .unwrap();
        })
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("insert_100_full", |b| {
        b.iter(|| {
            let seqs: Vec<i64> = (1..=100).map(|k| seq + k).collect();
            seq += 100;
            let entities: Vec<String> = seqs.iter().map(|s| format!("note-{s}")).collect();
            let payloads: Vec<String> = seqs
                .iter()
                .map(|s| format!(r#"{{"n":{s},"status":"open","title":"note {s}"}}"#))
                .collect();
            let n = raw
                .execute(
                    &many,
                    &[
                        &"acme",
                        &node,
                        &inc,
                        &"object.created",
                        &"UNCLASSIFIED",
                        &hash,
                        &seqs,
                        &entities,
                        &payloads,
                    ],
                )
                .unwrap();
            assert_eq!(n, 100);
        })
    });
    group.finish();
}

criterion_group! {
    name = pg_eventlog;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).sample_size(30);
    targets = benches
}
criterion_main!(pg_eventlog);
