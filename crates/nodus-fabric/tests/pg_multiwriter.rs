//! Several `PgEventLog` handles on one schema — different nodes, and one node from two
//! connections — appending and ingesting at once; then restarts. Skipped, with a message, when
//! `NODUS_PG_URL` is not set.
#![cfg(feature = "postgres")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod conformance;
mod pg_common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use conformance::{chain_id, fresh_node, new_event, peer_chain, tenant, variant};
use nodus_fabric::{
    ChainId, Cursor, Durability, Event, EventHash, NodeId, PgEventLog, TenantEventLog,
};

fn open(url: &str, schema: &str, node: NodeId) -> PgEventLog {
    PgEventLog::connect(url, schema, node, Durability::Full).unwrap()
}

/// Checks one chain as read back: seqs 1..=n without a gap or a repeat, every link and hash.
fn assert_chain(events: &[Event]) {
    let mut prev = EventHash::ZERO;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq gap or repeat in {}", e.chain());
        assert_eq!(e.prev_hash, prev, "broken link at {}#{}", e.chain(), e.seq);
        assert_eq!(e.hash, e.compute_hash());
        prev = e.hash;
    }
}

#[test]
fn concurrent_writers_on_one_schema() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "multi");
    let schema = schemas.fresh();
    let (node_a, node_b, node_c) = (fresh_node(), fresh_node(), fresh_node());
    // Node A twice (two connections), B and C once each, and a reader.
    let a1 = open(&url, &schema, node_a);
    let a2 = open(&url, &schema, node_a);
    let b = open(&url, &schema, node_b);
    let c = open(&url, &schema, node_c);
    let reader = open(&url, &schema, fresh_node());
    assert_eq!(a1.node(), a2.node(), "one node, one incarnation, one chain");
    assert_ne!(a1.node().chain(), b.node().chain());

    let t = tenant("acme");
    let other = tenant("other");
    // Two external peers' chains, delivered by several handles in pieces, out of order, twice.
    let (p1, p2) = (chain_id(201, 1), chain_id(202, 1));
    let peer1 = peer_chain(&t, p1, 60, 0);
    let peer2 = peer_chain(&t, p2, 60, 7);
    // A second version of peer 1's last event: whichever arrives first stays, the other is
    // quarantined.
    let evil = variant(&peer1[59], "evil");
    const APPENDS: u64 = 40;

    let done = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let mut writers = Vec::new();
        // Local appends: A from both connections, B and C; batches of 1 to 3, two tenants.
        for (w, log) in [(0u64, &a1), (1, &a2), (2, &b), (3, &c)] {
            let (t, other) = (&t, &other);
            writers.push(s.spawn(move || {
                for i in 0..APPENDS {
                    let n = 1 + (i + w) % 3;
                    let batch = (0..n).map(|k| new_event(w * 10_000 + i * 10 + k)).collect();
                    log.append(t, batch).unwrap();
                    if i % 8 == w {
                        log.append(other, vec![new_event(i)]).unwrap();
                    }
                }
            }));
        }
        // Ingest: peers' pieces, reversed, each piece by two handles.
        for (log, chunks) in [
            (&b, peer1.chunks(15).rev().collect::<Vec<_>>()),
            (&c, peer1.chunks(15).collect()),
            (&a2, peer2.chunks(10).rev().collect()),
            (&b, peer2.chunks(20).collect()),
        ] {
            let t = &t;
            writers.push(s.spawn(move || {
                for chunk in chunks {
                    let mut batch = chunk.to_vec();
                    batch.reverse();
                    log.ingest(t, batch).unwrap();
                }
            }));
        }
        {
            let (c, t, evil) = (&c, &t, evil.clone());
            writers.push(s.spawn(move || {
                c.ingest(t, vec![evil]).unwrap();
            }));
        }
        // "Each other's events": C keeps ingesting what the others appended (all duplicates in a
        // shared log, never errors or equivocations).
        {
            let (c, t, done) = (&c, &t, &done);
            s.spawn(move || {
                let mut cursor: Option<Cursor> = None;
                while !done.load(Ordering::Relaxed) {
                    let (events, next) = c.read_tenant(t, cursor, 50).unwrap();
                    cursor = next;
                    let n = events.len() as u64;
                    let r = c.ingest(t, events).unwrap();
                    assert_eq!(r.duplicates, n);
                    assert!(r.applied.is_empty() && r.rejected.is_empty());
                    assert!(r.equivocations.is_empty() && r.pending.is_empty());
                }
            });
        }
        // A reader paging by cursor while everything is written: it must end up with exactly the
        // tenant's events in order, none skipped (positions are handed out in commit order).
        let reader_thread = {
            let (reader, t, done) = (&reader, &t, &done);
            s.spawn(move || {
                let mut seen: Vec<Event> = Vec::new();
                let mut cursor: Option<Cursor> = None;
                let mut last_round = false;
                loop {
                    let (page, next) = reader.read_tenant(t, cursor, 37).unwrap();
                    cursor = next;
                    let empty = page.is_empty();
                    seen.extend(page);
                    if empty {
                        if last_round {
                            break;
                        }
                        if done.load(Ordering::Relaxed) {
                            last_round = true;
                        }
                    }
                }
                seen
            })
        };
        // Wait for the writers, then stop the two loops.
        let failed = writers.into_iter().any(|w| w.join().is_err());
        done.store(true, Ordering::Relaxed);
        assert!(!failed, "a writer failed");
        reader_thread.join().unwrap()
    });

    // Everything the writers did is there, once, in order.
    let all = a1.read_tenant(&t, None, usize::MAX).unwrap().0;
    assert_eq!(
        seen, all,
        "a cursor reader saw every event, in order, none skipped"
    );
    let mut ids = HashSet::new();
    for e in &all {
        assert!(
            ids.insert((e.chain(), e.seq)),
            "duplicate identity {}",
            e.event_ref()
        );
    }
    let mut by_chain: BTreeMap<ChainId, Vec<Event>> = BTreeMap::new();
    for e in &all {
        by_chain.entry(e.chain()).or_default().push(e.clone());
    }
    for events in by_chain.values_mut() {
        events.sort_by_key(|e| e.seq);
        assert_chain(events);
    }
    let local: u64 = (0..4u64)
        .map(|w| (0..APPENDS).map(|i| 1 + (i + w) % 3).sum::<u64>())
        .sum();
    let a_count = (0..2u64)
        .map(|w| (0..APPENDS).map(|i| 1 + (i + w) % 3).sum::<u64>())
        .sum::<u64>();
    assert_eq!(by_chain[&a1.node().chain()].len() as u64, a_count);
    assert_eq!(by_chain[&p1].len(), 60);
    assert_eq!(by_chain[&p2].len(), 60);
    assert_eq!(all.len() as u64, local + 120);
    // Lamport times of local events: unique across every node (one clock per tenant, under the
    // tenant's lock) and increasing along each chain.
    let mut lamports = HashSet::new();
    for chain in [a1.node().chain(), b.node().chain(), c.node().chain()] {
        for e in &by_chain[&chain] {
            assert!(lamports.insert(e.lamport), "lamport {} twice", e.lamport);
        }
    }
    // Peer 1's last seq: one version applied, the other quarantined with it.
    let applied_last = &by_chain[&p1][59];
    assert!(applied_last.hash == peer1[59].hash || applied_last.hash == evil.hash);
    let q = a1.quarantined(&t).unwrap();
    assert_eq!(q.len(), 1, "the equivocation is detected once");
    let pair: HashSet<EventHash> = [q[0].stored.hash, q[0].conflicting.hash].into();
    assert_eq!(pair, [peer1[59].hash, evil.hash].into());
    assert_eq!(q[0].stored.hash, applied_last.hash);
    // Every handle agrees, and every chain verifies.
    let hwm = a1.high_water_marks(&t).unwrap();
    assert_eq!(hwm.len(), 5);
    for (chain, events) in &by_chain {
        let last = events.last().unwrap();
        assert_eq!((hwm[chain].seq, hwm[chain].hash), (last.seq, last.hash));
    }
    for log in [&a1, &a2, &b, &c, &reader] {
        assert_eq!(log.high_water_marks(&t).unwrap(), hwm);
        assert!(log.pending(&t).unwrap().is_empty());
        let report = log.verify(&t).unwrap();
        assert!(report.is_valid(), "{report:?}");
        assert_eq!((report.chains, report.events), (5, all.len() as u64));
        assert!(log.verify(&other).unwrap().is_valid());
    }
}

#[test]
fn restart_continues_the_chain() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "restart");
    let schema = schemas.fresh();
    let t = tenant("acme");
    let (node_a, node_b) = (fresh_node(), fresh_node());
    let (first, incarnation, peer) = {
        let a = open(&url, &schema, node_a);
        let b = open(&url, &schema, node_b);
        let first = a.append(&t, (0..5).map(new_event).collect()).unwrap();
        let peer = peer_chain(&t, chain_id(210, 1), 4, 0);
        // A gap: seqs 3 and 4 wait for 1 and 2 across the restart.
        b.ingest(&t, peer[2..].to_vec()).unwrap();
        (first, a.node().incarnation, peer)
    };
    // Reopened: the same incarnation, the chain continues where it was.
    let a = open(&url, &schema, node_a);
    assert_eq!(a.node().incarnation, incarnation);
    let next = a.append(&t, vec![new_event(5)]).unwrap();
    assert_eq!(next[0].seq, 6);
    assert_eq!(next[0].prev_hash, first[4].hash);
    assert!(next[0].lamport > first[4].lamport);
    let b = open(&url, &schema, node_b);
    assert_eq!(b.pending(&t).unwrap().len(), 2);
    let r = b.ingest(&t, peer[..2].to_vec()).unwrap();
    assert_eq!(r.applied, peer);
    let chain = a.read_chain(&t, a.node().chain(), 1, 100).unwrap();
    assert_chain(&chain);
    assert_eq!(chain.len(), 6);
    assert!(a.verify(&t).unwrap().is_valid());
    // Another schema is another log: the same node gets a new incarnation there.
    let elsewhere = open(&url, &schemas.fresh(), node_a);
    assert_ne!(elsewhere.node().incarnation, incarnation);
    assert!(elsewhere.high_water_marks(&t).unwrap().is_empty());
}

#[test]
fn a_lost_connection_is_reestablished() {
    let Some(url) = pg_common::url() else { return };
    if url.contains("://") {
        eprintln!("skipping: this test needs a key=value NODUS_PG_URL");
        return;
    }
    let schemas = pg_common::Schemas::new(&url, "reconnect");
    let schema = schemas.fresh();
    let app = format!("nodus_reconnect_{}", &schema[schema.len() - 8..]);
    let log = PgEventLog::connect(
        &format!("{url} application_name={app}"),
        &schema,
        fresh_node(),
        Durability::Full,
    )
    .unwrap();
    let t = tenant("acme");
    log.append(&t, vec![new_event(0)]).unwrap();
    let mut admin = pg_common::client(&url);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap();
    assert_eq!(killed.len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Reads and appends work again: the read found the connection gone before sending anything,
    // so it reconnected and ran.
    assert_eq!(log.read_tenant(&t, None, 10).unwrap().0.len(), 1);
    let e = log.append(&t, vec![new_event(1)]).unwrap();
    assert_eq!(e[0].seq, 2);
    assert!(log.verify(&t).unwrap().is_valid());
}

#[test]
fn many_handles_opening_a_fresh_schema_at_once() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "race");
    let schema = schemas.fresh();
    let node = fresh_node();
    let logs: Vec<PgEventLog> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (url, schema) = (&url, &schema);
                s.spawn(move || open(url, schema, if i % 2 == 0 { node } else { fresh_node() }))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One node registered once: every handle of it has the same incarnation.
    let incarnations: HashSet<_> = logs
        .iter()
        .filter(|l| l.node().node_id == node)
        .map(|l| l.node().incarnation)
        .collect();
    assert_eq!(incarnations.len(), 1);
    let mut admin = pg_common::client(&url);
    let versions: Vec<i64> = admin
        .query(
            &format!("SELECT version FROM \"{schema}\".nodus_schema_version ORDER BY version"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);
}

#[test]
fn alternating_handles_never_append_on_a_stale_head() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "alternate");
    let schema = schemas.fresh();
    let node = fresh_node();
    // Each handle remembers what it wrote last; the other handle's writes make that stale.
    let (h1, h2, other) = (
        open(&url, &schema, node),
        open(&url, &schema, node),
        open(&url, &schema, fresh_node()),
    );
    let t = tenant("acme");
    let peer = peer_chain(&t, chain_id(220, 1), 6, 0);
    let mut mine = Vec::new();
    for i in 0..12u64 {
        let log = if i % 3 == 2 { &h2 } else { &h1 };
        mine.extend(
            log.append(&t, vec![new_event(i), new_event(i + 100)])
                .unwrap(),
        );
        if i % 4 == 1 {
            other.append(&t, vec![new_event(i)]).unwrap();
        }
        if i % 2 == 0 {
            h1.ingest(&t, vec![peer[(i / 2) as usize].clone()]).unwrap();
        }
    }
    assert_chain(&mine);
    assert_eq!(h2.read_chain(&t, node_chain(&h1), 1, 100).unwrap(), mine);
    let all = other.read_tenant(&t, None, usize::MAX).unwrap().0;
    assert_eq!(all.len(), 24 + 3 + 6);
    let lamports: HashSet<u64> = all
        .iter()
        .filter(|e| e.chain() != chain_id(220, 1))
        .map(|e| e.lamport)
        .collect();
    assert_eq!(lamports.len(), 24 + 3);
    assert!(h1.verify(&t).unwrap().is_valid());
}

fn node_chain(log: &PgEventLog) -> ChainId {
    log.node().chain()
}
