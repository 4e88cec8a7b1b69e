//! The `TenantEventLog` conformance suite, written against `&dyn TenantEventLog` only so that every
//! backend (SQLite in memory and on file today, PostgreSQL later) runs it unchanged:
//!
//! ```ignore
//! mod conformance;
//! #[test]
//! fn conformance() {
//!     conformance::run_all(&|| Box::new(MyLog::new(conformance::fresh_node())));
//! }
//! ```
//!
//! `make` must return a new, empty log for a new node each time it is called.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::{AtomicU64, Ordering};

use nodus_fabric::{
    ChainHead, ChainId, Cursor, EntityId, EquivocationKind, Event, EventHash, EventKind,
    EventLabel, Incarnation, NewEvent, NodeId, Payload, RejectReason, TenantEventLog,
};
use nodus_policy::TenantId;
use serde_json::json;

/// Builds a log.
pub type Make<'a> = &'a dyn Fn() -> Box<dyn TenantEventLog>;

/// Every case, in turn.
pub fn run_all(make: Make<'_>) {
    append_assigns_contiguous_seqs_and_chains_hashes(make);
    append_of_nothing_is_nothing(make);
    lamport_passes_everything_applied(make);
    ingest_applies_a_peer_chain(make);
    ingest_duplicates_are_no_ops(make);
    own_events_come_back_as_duplicates(make);
    equivocation_same_seq_is_quarantined_not_applied(make);
    equivocation_against_a_pending_event(make);
    fork_by_prev_hash_is_quarantined(make);
    fork_found_when_a_gap_fills(make);
    gap_is_held_then_applied_in_order(make);
    tampered_events_are_rejected(make);
    out_of_range_and_malformed_events_are_rejected(make);
    lamport_must_increase_along_a_chain(make);
    events_claiming_the_local_chain_are_rejected(make);
    tenants_do_not_mix(make);
    reinstalled_node_is_a_new_chain(make);
    high_water_marks_are_contiguous(make);
    read_chain_from_seq_with_limit(make);
    cursor_is_stable_across_appends_and_ingests(make);
    verify_passes_after_mixed_traffic(make);
    concurrent_calls_keep_chains_contiguous(make);
    ingest_of_nothing_is_nothing(make);
    equivocations_within_one_call(make);
    an_old_incarnation_of_this_node_is_a_peer_chain(make);
    lamport_exhaustion_is_an_error_and_appends_nothing(make);
}

// ------------------------------------------------------------------------------------------------
// Helpers.

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A node id not used before in this process.
pub fn fresh_node() -> NodeId {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut b = [0xa5u8; 16];
    b[8..].copy_from_slice(&n.to_be_bytes());
    NodeId::from_bytes(b)
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

pub fn new_event(i: u64) -> NewEvent {
    NewEvent::new(
        EventKind::new("object.created").unwrap(),
        EntityId::new(format!("obj-{i}")).unwrap(),
        EventLabel::new("UNCLASSIFIED").unwrap(),
        Payload::from_value(&json!({"i": i, "title": format!("note {i}")})).unwrap(),
    )
}

pub fn chain_id(node: u8, incarnation: u8) -> ChainId {
    ChainId {
        node_id: NodeId::from_bytes([node; 16]),
        incarnation: Incarnation::from_bytes([incarnation; 16]),
    }
}

/// Sets `hash` from the content.
pub fn seal(mut e: Event) -> Event {
    e.hash = e.compute_hash();
    e
}

/// The events `1..=n` of a peer's chain, correctly hashed and linked; lamport = seq × 10 + salt.
pub fn peer_chain(tenant: &TenantId, chain: ChainId, n: u64, salt: u64) -> Vec<Event> {
    let mut prev = EventHash::ZERO;
    (1..=n)
        .map(|seq| {
            let e = seal(Event {
                tenant: tenant.clone(),
                node_id: chain.node_id,
                incarnation: chain.incarnation,
                seq,
                lamport: seq * 10 + salt,
                kind: EventKind::new("object.updated").unwrap(),
                entity: EntityId::new(format!("e-{seq}")).unwrap(),
                label: EventLabel::new("SECRET//CRYPTO").unwrap(),
                payload: Payload::from_value(&json!({"seq": seq, "salt": salt})).unwrap(),
                model_ver: 1,
                prev_hash: prev,
                hash: EventHash::ZERO,
                time_ms: 1_700_000_000_000 + seq,
            });
            prev = e.hash;
            e
        })
        .collect()
}

/// Another version of `e` (different payload), re-hashed.
pub fn variant(e: &Event, tag: &str) -> Event {
    let mut v = e.clone();
    v.payload = Payload::from_value(&json!({"variant": tag})).unwrap();
    seal(v)
}

fn all_events(log: &dyn TenantEventLog, t: &TenantId) -> Vec<Event> {
    log.read_tenant(t, None, usize::MAX).unwrap().0
}

fn head(log: &dyn TenantEventLog, t: &TenantId, chain: ChainId) -> Option<ChainHead> {
    log.high_water_marks(t).unwrap().get(&chain).copied()
}

// ------------------------------------------------------------------------------------------------
// Cases.

pub fn append_assigns_contiguous_seqs_and_chains_hashes(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let first = log.append(&t, (0..3).map(new_event).collect()).unwrap();
    let second = log.append(&t, (3..5).map(new_event).collect()).unwrap();
    let all: Vec<Event> = first.into_iter().chain(second).collect();
    let node = log.node();
    let mut prev = EventHash::ZERO;
    let mut lamport = 0;
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.tenant, t);
        assert_eq!((e.node_id, e.incarnation), (node.node_id, node.incarnation));
        assert_eq!(e.prev_hash, prev, "seq {} links to its predecessor", e.seq);
        assert_eq!(e.hash, e.compute_hash());
        assert!(e.lamport > lamport);
        assert_eq!(e.entity.as_str(), format!("obj-{i}"));
        assert!(e.time_ms > 0);
        prev = e.hash;
        lamport = e.lamport;
    }
    assert_eq!(all_events(&*log, &t), all);
    assert_eq!(
        head(&*log, &t, node.chain()),
        Some(ChainHead { seq: 5, hash: prev })
    );
    assert!(log.verify(&t).unwrap().is_valid());
}

pub fn append_of_nothing_is_nothing(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    assert!(log.append(&t, vec![]).unwrap().is_empty());
    assert!(log.high_water_marks(&t).unwrap().is_empty());
    assert_eq!(log.read_tenant(&t, None, 10).unwrap(), (vec![], None));
    let e = log.append(&t, vec![new_event(0)]).unwrap();
    assert_eq!(e[0].seq, 1);
}

pub fn lamport_passes_everything_applied(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let peer = peer_chain(&t, chain_id(1, 1), 3, 500); // lamports 510, 520, 530
    let r = log.ingest(&t, peer).unwrap();
    assert_eq!(r.applied.len(), 3);
    let mine = log.append(&t, vec![new_event(0), new_event(1)]).unwrap();
    assert_eq!(mine[0].lamport, 531);
    assert_eq!(mine[1].lamport, 532);
}

pub fn ingest_applies_a_peer_chain(make: Make<'_>) {
    let a = make();
    let b = make();
    let t = tenant("acme");
    let sent = a.append(&t, (0..4).map(new_event).collect()).unwrap();
    let r = b.ingest(&t, sent.clone()).unwrap();
    assert_eq!(r.applied, sent);
    assert_eq!(
        (
            r.duplicates,
            r.pending.len(),
            r.equivocations.len(),
            r.rejected.len()
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(b.read_chain(&t, a.node().chain(), 1, 100).unwrap(), sent);
    assert_eq!(
        b.high_water_marks(&t).unwrap(),
        a.high_water_marks(&t).unwrap()
    );
    // b's next local event is causally after everything it applied.
    let mine = b.append(&t, vec![new_event(9)]).unwrap();
    assert!(mine[0].lamport > sent[3].lamport);
    assert_eq!(mine[0].seq, 1);
}

pub fn ingest_duplicates_are_no_ops(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let chain = peer_chain(&t, chain_id(2, 1), 5, 0);
    assert_eq!(log.ingest(&t, chain.clone()).unwrap().applied.len(), 5);
    let before = (all_events(&*log, &t), log.high_water_marks(&t).unwrap());
    let mut twice = chain.clone();
    twice.extend(chain.iter().rev().cloned());
    let r = log.ingest(&t, twice).unwrap();
    assert!(r.applied.is_empty());
    assert_eq!(r.duplicates, 10);
    assert!(r.equivocations.is_empty() && r.rejected.is_empty() && r.pending.is_empty());
    assert_eq!(
        (all_events(&*log, &t), log.high_water_marks(&t).unwrap()),
        before
    );
    // Duplicates within one call of new events: the first applies, the rest are duplicates.
    let fresh = peer_chain(&t, chain_id(2, 2), 2, 0);
    let r = log
        .ingest(
            &t,
            vec![
                fresh[0].clone(),
                fresh[0].clone(),
                fresh[1].clone(),
                fresh[1].clone(),
            ],
        )
        .unwrap();
    assert_eq!((r.applied.len(), r.duplicates), (2, 2));
}

pub fn own_events_come_back_as_duplicates(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let mine = log.append(&t, (0..3).map(new_event).collect()).unwrap();
    let r = log.ingest(&t, mine).unwrap();
    assert_eq!((r.applied.len(), r.duplicates), (0, 3));
    assert!(r.rejected.is_empty());
}

pub fn equivocation_same_seq_is_quarantined_not_applied(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let chain = peer_chain(&t, chain_id(3, 1), 2, 0);
    log.ingest(&t, chain.clone()).unwrap();
    let evil = variant(&chain[1], "evil");
    let r = log.ingest(&t, vec![evil.clone()]).unwrap();
    assert!(r.applied.is_empty());
    assert_eq!(r.equivocations.len(), 1);
    let q = &r.equivocations[0];
    assert_eq!(q.kind, EquivocationKind::SameSeq);
    assert_eq!((&q.stored, &q.conflicting), (&chain[1], &evil));
    // The stored version stays applied, the other is never applied.
    assert_eq!(
        log.read_chain(&t, chain_id(3, 1), 1, 10).unwrap(),
        chain.clone()
    );
    // Both versions are retrievable from the quarantine.
    let kept = log.quarantined(&t).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0], *q);
    // Received again, the conflicting version is a duplicate (reported once, audited once).
    let r = log.ingest(&t, vec![evil]).unwrap();
    assert!(r.equivocations.is_empty());
    assert_eq!(r.duplicates, 1);
    assert_eq!(log.quarantined(&t).unwrap().len(), 1);
    // A third version is another equivocation.
    let r = log.ingest(&t, vec![variant(&chain[1], "third")]).unwrap();
    assert_eq!(r.equivocations.len(), 1);
    assert_eq!(log.quarantined(&t).unwrap().len(), 2);
    // The chain continues on the version applied first.
    let next = peer_chain(&t, chain_id(3, 1), 3, 0);
    assert_eq!(
        log.ingest(&t, vec![next[2].clone()]).unwrap().applied.len(),
        1
    );
    assert!(log.verify(&t).unwrap().is_valid());
}

pub fn equivocation_against_a_pending_event(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let chain = peer_chain(&t, chain_id(4, 1), 3, 0);
    let r = log.ingest(&t, vec![chain[2].clone()]).unwrap();
    assert_eq!(r.pending, vec![chain[2].event_ref()]);
    let evil = variant(&chain[2], "evil");
    let r = log.ingest(&t, vec![evil.clone()]).unwrap();
    assert_eq!(r.equivocations.len(), 1);
    assert_eq!(r.equivocations[0].stored, chain[2]);
    assert_eq!(r.equivocations[0].conflicting, evil);
    // The first-seen version stays pending and applies when the gap fills.
    let r = log.ingest(&t, chain[..2].to_vec()).unwrap();
    assert_eq!(r.applied, chain);
    assert!(log.pending(&t).unwrap().is_empty());
}

pub fn fork_by_prev_hash_is_quarantined(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let chain = peer_chain(&t, chain_id(5, 1), 3, 0);
    log.ingest(&t, chain[..2].to_vec()).unwrap();
    // seq 3 claiming a predecessor other than the stored seq 2.
    let mut fork = chain[2].clone();
    fork.prev_hash = chain[0].hash;
    let fork = seal(fork);
    let r = log.ingest(&t, vec![fork.clone()]).unwrap();
    assert!(r.applied.is_empty());
    assert_eq!(r.equivocations.len(), 1);
    assert_eq!(r.equivocations[0].kind, EquivocationKind::Fork);
    assert_eq!(r.equivocations[0].stored, chain[1]);
    assert_eq!(r.equivocations[0].conflicting, fork);
    assert_eq!(head(&*log, &t, chain_id(5, 1)).unwrap().seq, 2);
    assert_eq!(log.quarantined(&t).unwrap().len(), 1);
    // The genuine seq 3 still applies.
    let r = log.ingest(&t, vec![chain[2].clone(), fork]).unwrap();
    assert_eq!(r.applied, vec![chain[2].clone()]);
    assert_eq!(r.duplicates, 1);
    assert!(log.verify(&t).unwrap().is_valid());
}

pub fn fork_found_when_a_gap_fills(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let chain = peer_chain(&t, chain_id(6, 1), 3, 0);
    let mut fork = chain[2].clone();
    fork.prev_hash = EventHash::from_bytes([7; 32]);
    let fork = seal(fork);
    let r = log.ingest(&t, vec![fork.clone()]).unwrap();
    assert_eq!(r.pending.len(), 1);
    let r = log.ingest(&t, chain[..2].to_vec()).unwrap();
    assert_eq!(r.applied, chain[..2].to_vec());
    assert_eq!(r.equivocations.len(), 1);
    assert_eq!(r.equivocations[0].kind, EquivocationKind::Fork);
    assert_eq!(r.equivocations[0].stored, chain[1]);
    assert_eq!(r.equivocations[0].conflicting, fork);
    assert!(log.pending(&t).unwrap().is_empty());
    assert_eq!(head(&*log, &t, chain_id(6, 1)).unwrap().seq, 2);
}

pub fn gap_is_held_then_applied_in_order(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let c = chain_id(7, 1);
    let chain = peer_chain(&t, c, 5, 0);
    let r = log
        .ingest(&t, vec![chain[4].clone(), chain[2].clone()])
        .unwrap();
    assert!(r.applied.is_empty());
    assert_eq!(r.pending, vec![chain[4].event_ref(), chain[2].event_ref()]);
    assert_eq!(head(&*log, &t, c), None);
    assert!(log.read_chain(&t, c, 1, 10).unwrap().is_empty());
    let mut pending = log.pending(&t).unwrap();
    pending.sort();
    assert_eq!(pending, vec![chain[2].event_ref(), chain[4].event_ref()]);
    // seq 1 applies; 3 and 5 still wait for 2 and 4.
    let r = log.ingest(&t, vec![chain[0].clone()]).unwrap();
    assert_eq!(r.applied, vec![chain[0].clone()]);
    assert_eq!(head(&*log, &t, c).unwrap().seq, 1);
    // seq 2 fills the first gap: 2 and the held 3 apply, in order.
    let r = log.ingest(&t, vec![chain[1].clone()]).unwrap();
    assert_eq!(r.applied, chain[1..3].to_vec());
    assert!(r.pending.is_empty());
    // seq 4 fills the last: 4, 5.
    let r = log.ingest(&t, vec![chain[3].clone()]).unwrap();
    assert_eq!(r.applied, chain[3..5].to_vec());
    assert!(log.pending(&t).unwrap().is_empty());
    assert_eq!(all_events(&*log, &t), chain);
    assert_eq!(
        head(&*log, &t, c),
        Some(ChainHead {
            seq: 5,
            hash: chain[4].hash
        })
    );
    // A held event received again is a duplicate, not held twice.
    let c2 = chain_id(7, 2);
    let later = peer_chain(&t, c2, 3, 0);
    log.ingest(&t, vec![later[2].clone()]).unwrap();
    let r = log.ingest(&t, vec![later[2].clone()]).unwrap();
    assert_eq!((r.duplicates, r.pending.len()), (1, 0));
    // Reverse order within one call applies everything.
    let r = log
        .ingest(&t, vec![later[1].clone(), later[0].clone()])
        .unwrap();
    assert_eq!(r.applied, later);
    assert!(r.pending.is_empty());
}

pub fn tampered_events_are_rejected(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let chain = peer_chain(&t, chain_id(8, 1), 2, 0);
    // Content changed, hash kept.
    let mut changed = chain[0].clone();
    changed.payload = Payload::from_value(&json!({"seq": 1, "salt": 1})).unwrap();
    // Hash changed, content kept.
    let mut rehashed = chain[0].clone();
    rehashed.hash = EventHash::from_bytes([1; 32]);
    // Label changed.
    let mut relabelled = chain[0].clone();
    relabelled.label = EventLabel::new("UNCLASSIFIED").unwrap();
    let r = log.ingest(&t, vec![changed, rehashed, relabelled]).unwrap();
    assert_eq!(r.rejected.len(), 3);
    for rej in &r.rejected {
        match &rej.reason {
            RejectReason::HashMismatch { computed } => assert_ne!(*computed, rej.event.hash),
            other => panic!("expected a hash mismatch, got {other:?}"),
        }
    }
    assert!(r.applied.is_empty() && r.pending.is_empty() && r.equivocations.is_empty());
    assert!(log.high_water_marks(&t).unwrap().is_empty());
    assert!(log.quarantined(&t).unwrap().is_empty());
    // The genuine events still apply.
    assert_eq!(log.ingest(&t, chain).unwrap().applied.len(), 2);
}

pub fn out_of_range_and_malformed_events_are_rejected(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let base = peer_chain(&t, chain_id(9, 1), 1, 0).remove(0);
    let with = |f: &dyn Fn(&mut Event)| {
        let mut e = base.clone();
        f(&mut e);
        seal(e)
    };
    let cases: Vec<(Event, RejectReason)> = vec![
        (
            with(&|e| e.seq = 0),
            RejectReason::OutOfRange {
                field: "seq".into(),
            },
        ),
        (
            with(&|e| e.seq = u64::MAX),
            RejectReason::OutOfRange {
                field: "seq".into(),
            },
        ),
        (
            with(&|e| e.lamport = 0),
            RejectReason::OutOfRange {
                field: "lamport".into(),
            },
        ),
        (
            with(&|e| e.lamport = 1 << 63),
            RejectReason::OutOfRange {
                field: "lamport".into(),
            },
        ),
        (
            with(&|e| e.time_ms = u64::MAX),
            RejectReason::OutOfRange {
                field: "time_ms".into(),
            },
        ),
        (
            with(&|e| e.prev_hash = EventHash::from_bytes([9; 32])),
            RejectReason::FirstEventPrevHash,
        ),
    ];
    for (e, reason) in cases {
        let r = log.ingest(&t, vec![e]).unwrap();
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].reason, reason);
    }
    assert!(log.high_water_marks(&t).unwrap().is_empty());
    assert!(log.pending(&t).unwrap().is_empty());
}

pub fn lamport_must_increase_along_a_chain(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let c = chain_id(10, 1);
    let first = peer_chain(&t, c, 1, 0).remove(0); // lamport 10
    let mut second = peer_chain(&t, c, 2, 0).remove(1);
    second.lamport = 10;
    second.prev_hash = first.hash;
    let second = seal(second);
    let r = log.ingest(&t, vec![second.clone(), first]).unwrap();
    assert_eq!(r.applied.len(), 1);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].event, second.event_ref());
    assert_eq!(r.rejected[0].reason, RejectReason::LamportNotIncreasing);
    assert!(log.pending(&t).unwrap().is_empty());
}

pub fn events_claiming_the_local_chain_are_rejected(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let mine = log.append(&t, vec![new_event(0)]).unwrap();
    let node = log.node();
    let mut forged = peer_chain(&t, node.chain(), 2, 100).remove(1);
    forged.prev_hash = mine[0].hash;
    let forged = seal(forged);
    let r = log.ingest(&t, vec![forged]).unwrap();
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].reason, RejectReason::LocalChain);
    // A different version of one of its own events is an equivocation.
    let r = log.ingest(&t, vec![variant(&mine[0], "x")]).unwrap();
    assert_eq!(r.equivocations.len(), 1);
    let next = log.append(&t, vec![new_event(1)]).unwrap();
    assert_eq!(next[0].seq, 2);
    assert_eq!(next[0].prev_hash, mine[0].hash);
}

pub fn tenants_do_not_mix(make: Make<'_>) {
    let log = make();
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let ea = log.append(&a, (0..3).map(new_event).collect()).unwrap();
    let eb = log.append(&b, (0..2).map(new_event).collect()).unwrap();
    // The same node has one chain per tenant, each from seq 1.
    assert_eq!(eb[0].seq, 1);
    assert_eq!(eb[0].prev_hash, EventHash::ZERO);
    assert_eq!(all_events(&*log, &a), ea);
    assert_eq!(all_events(&*log, &b), eb);
    assert_eq!(head(&*log, &a, log.node().chain()).unwrap().seq, 3);
    assert_eq!(head(&*log, &b, log.node().chain()).unwrap().seq, 2);
    // A peer's tenant-A events offered to tenant B are refused.
    let peer_a = peer_chain(&a, chain_id(11, 1), 2, 0);
    let r = log.ingest(&b, peer_a.clone()).unwrap();
    assert_eq!(r.rejected.len(), 2);
    assert!(
        r.rejected
            .iter()
            .all(|x| x.reason == RejectReason::WrongTenant)
    );
    // Relabelled as tenant B without re-hashing: refused by its hash.
    let mut moved = peer_a[0].clone();
    moved.tenant = b.clone();
    let r = log.ingest(&b, vec![moved]).unwrap();
    assert!(matches!(
        r.rejected[0].reason,
        RejectReason::HashMismatch { .. }
    ));
    assert_eq!(all_events(&*log, &b), eb);
    assert_eq!(log.high_water_marks(&b).unwrap().len(), 1);
    // The same chain id in two tenants is two chains.
    let peer_b = peer_chain(&b, chain_id(11, 1), 1, 0);
    assert_eq!(log.ingest(&a, peer_a).unwrap().applied.len(), 2);
    assert_eq!(log.ingest(&b, peer_b).unwrap().applied.len(), 1);
    assert_eq!(head(&*log, &a, chain_id(11, 1)).unwrap().seq, 2);
    assert_eq!(head(&*log, &b, chain_id(11, 1)).unwrap().seq, 1);
    // Quarantine, pending and verify are per tenant too.
    log.ingest(&a, vec![variant(&ea[0], "x")]).unwrap();
    assert_eq!(log.quarantined(&a).unwrap().len(), 1);
    assert!(log.quarantined(&b).unwrap().is_empty());
    assert_eq!(log.verify(&b).unwrap().events, 3);
}

pub fn reinstalled_node_is_a_new_chain(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let before = peer_chain(&t, chain_id(12, 1), 3, 0);
    let after = peer_chain(&t, chain_id(12, 2), 2, 100); // same node, new incarnation, seq 1 again
    log.ingest(&t, before.clone()).unwrap();
    let r = log.ingest(&t, after.clone()).unwrap();
    assert_eq!(r.applied, after);
    assert_eq!(r.duplicates, 0);
    assert!(r.equivocations.is_empty());
    let hwm = log.high_water_marks(&t).unwrap();
    assert_eq!(hwm.len(), 2);
    assert_eq!(hwm[&chain_id(12, 1)].seq, 3);
    assert_eq!(hwm[&chain_id(12, 2)].seq, 2);
    assert_eq!(log.read_chain(&t, chain_id(12, 1), 1, 10).unwrap(), before);
}

pub fn high_water_marks_are_contiguous(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let c = chain_id(13, 1);
    let chain = peer_chain(&t, c, 6, 0);
    log.ingest(
        &t,
        vec![
            chain[0].clone(),
            chain[1].clone(),
            chain[3].clone(),
            chain[5].clone(),
        ],
    )
    .unwrap();
    assert_eq!(
        head(&*log, &t, c),
        Some(ChainHead {
            seq: 2,
            hash: chain[1].hash
        })
    );
    log.ingest(&t, vec![chain[2].clone()]).unwrap();
    assert_eq!(head(&*log, &t, c).unwrap().seq, 4);
    log.ingest(&t, vec![chain[4].clone()]).unwrap();
    assert_eq!(
        head(&*log, &t, c),
        Some(ChainHead {
            seq: 6,
            hash: chain[5].hash
        })
    );
}

pub fn read_chain_from_seq_with_limit(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let mine = log.append(&t, (0..10).map(new_event).collect()).unwrap();
    let c = log.node().chain();
    assert_eq!(log.read_chain(&t, c, 4, 3).unwrap(), mine[3..6].to_vec());
    assert_eq!(log.read_chain(&t, c, 0, 2).unwrap(), mine[..2].to_vec());
    assert_eq!(log.read_chain(&t, c, 9, 100).unwrap(), mine[8..].to_vec());
    assert!(log.read_chain(&t, c, 11, 100).unwrap().is_empty());
    assert!(log.read_chain(&t, c, 1, 0).unwrap().is_empty());
    assert!(
        log.read_chain(&t, chain_id(99, 9), 1, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        log.read_chain(&tenant("other"), c, 1, 10)
            .unwrap()
            .is_empty()
    );
}

pub fn cursor_is_stable_across_appends_and_ingests(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let first = log.append(&t, (0..3).map(new_event).collect()).unwrap();
    let (page, cursor) = log.read_tenant(&t, None, 2).unwrap();
    assert_eq!(page, first[..2].to_vec());
    let cursor = cursor.unwrap();
    // More events arrive: appended and ingested (a peer's, with a gap filled later).
    let more = log.append(&t, vec![new_event(3)]).unwrap();
    let peer = peer_chain(&t, chain_id(14, 1), 2, 0);
    log.ingest(&t, vec![peer[1].clone()]).unwrap();
    log.ingest(&t, vec![peer[0].clone()]).unwrap();
    let expected: Vec<Event> = first[2..]
        .iter()
        .chain(&more)
        .chain(&peer)
        .cloned()
        .collect();
    let (rest, end) = log.read_tenant(&t, Some(cursor), 100).unwrap();
    assert_eq!(rest, expected);
    // The same cursor reads the same events again; paging gives the same sequence.
    assert_eq!(log.read_tenant(&t, Some(cursor), 100).unwrap().0, expected);
    let mut paged = Vec::new();
    let mut c = Some(cursor);
    loop {
        let (p, next) = log.read_tenant(&t, c, 1).unwrap();
        if p.is_empty() {
            assert_eq!(next, c, "an empty read keeps the cursor");
            break;
        }
        paged.extend(p);
        c = next;
    }
    assert_eq!(paged, expected);
    // The end cursor reads nothing until something new is applied.
    let end = end.unwrap();
    assert_eq!(
        log.read_tenant(&t, Some(end), 10).unwrap(),
        (vec![], Some(end))
    );
    let last = log.append(&t, vec![new_event(4)]).unwrap();
    assert_eq!(log.read_tenant(&t, Some(end), 10).unwrap().0, last);
    // A cursor survives being persisted as its position.
    let again = Cursor::from_position(cursor.position());
    assert_eq!(log.read_tenant(&t, Some(again), 100).unwrap().0.len(), 5);
    // Positions are per tenant: another tenant's traffic does not move them.
    log.append(&tenant("other"), (0..5).map(new_event).collect())
        .unwrap();
    let (_, c2) = log.read_tenant(&t, None, 1).unwrap();
    assert_eq!(c2.unwrap().position(), 1);
}

pub fn verify_passes_after_mixed_traffic(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    log.append(&t, (0..4).map(new_event).collect()).unwrap();
    let peer = peer_chain(&t, chain_id(15, 1), 4, 0);
    log.ingest(&t, vec![peer[3].clone(), peer[0].clone()])
        .unwrap();
    log.ingest(&t, vec![variant(&peer[0], "evil")]).unwrap();
    log.append(&t, vec![new_event(4)]).unwrap();
    let report = log.verify(&t).unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!((report.chains, report.events), (2, 6));
    let empty = log.verify(&tenant("nobody")).unwrap();
    assert!(empty.is_valid());
    assert_eq!(empty.events, 0);
}

pub fn concurrent_calls_keep_chains_contiguous(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let peer = peer_chain(&t, chain_id(16, 1), 40, 0);
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let log = &*log;
            let t = &t;
            s.spawn(move || {
                for i in 0..10 {
                    log.append(t, vec![new_event(w * 100 + i), new_event(w * 100 + i + 50)])
                        .unwrap();
                }
            });
        }
        for half in peer.chunks(20) {
            let log = &*log;
            let t = &t;
            let mut batch = half.to_vec();
            batch.reverse();
            s.spawn(move || {
                log.ingest(t, batch).unwrap();
            });
        }
    });
    let mine = log
        .read_chain(&t, log.node().chain(), 1, usize::MAX)
        .unwrap();
    assert_eq!(mine.len(), 80);
    for (i, e) in mine.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    assert_eq!(head(&*log, &t, chain_id(16, 1)).unwrap().seq, 40);
    let all = all_events(&*log, &t);
    assert_eq!(all.len(), 120);
    // Lamport times of local events are unique and increase along the chain.
    assert!(mine.windows(2).all(|w| w[0].lamport < w[1].lamport));
    assert!(log.verify(&t).unwrap().is_valid());
}

pub fn ingest_of_nothing_is_nothing(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let r = log.ingest(&t, vec![]).unwrap();
    assert_eq!(r, nodus_fabric::IngestReport::default());
    assert!(log.high_water_marks(&t).unwrap().is_empty());
    assert_eq!(log.read_tenant(&t, None, 10).unwrap(), (vec![], None));
    let report = log.verify(&t).unwrap();
    assert!(report.is_valid(), "{report:?}");
    assert_eq!((report.chains, report.events), (0, 0));
    // Nothing but duplicates and rejections changes nothing either.
    let mine = log.append(&t, vec![new_event(0)]).unwrap();
    let mut forged = mine[0].clone();
    forged.hash = EventHash::from_bytes([3; 32]);
    let r = log.ingest(&t, vec![mine[0].clone(), forged]).unwrap();
    assert_eq!((r.duplicates, r.rejected.len(), r.applied.len()), (1, 1, 0));
    assert_eq!(all_events(&*log, &t), mine);
    assert!(log.verify(&t).unwrap().is_valid());
}

pub fn equivocations_within_one_call(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    // Two versions of seq 2 in one call: the first applies, the second is quarantined.
    let c = chain_id(17, 1);
    let chain = peer_chain(&t, c, 2, 0);
    let other = variant(&chain[1], "other");
    let r = log
        .ingest(&t, vec![chain[0].clone(), chain[1].clone(), other.clone()])
        .unwrap();
    assert_eq!(r.applied, chain);
    assert_eq!(r.equivocations.len(), 1);
    assert_eq!(r.equivocations[0].kind, EquivocationKind::SameSeq);
    assert_eq!(
        (&r.equivocations[0].stored, &r.equivocations[0].conflicting),
        (&chain[1], &other)
    );
    // Two versions of a held seq in one call, then its gap in the same call: the first-seen
    // version is applied when the gap fills, the second stays quarantined.
    let c2 = chain_id(17, 2);
    let chain2 = peer_chain(&t, c2, 3, 0);
    let other2 = variant(&chain2[2], "other");
    let r = log
        .ingest(
            &t,
            vec![
                chain2[2].clone(),
                other2.clone(),
                chain2[0].clone(),
                chain2[1].clone(),
            ],
        )
        .unwrap();
    assert_eq!(r.applied, chain2);
    assert!(r.pending.is_empty());
    assert_eq!(r.equivocations.len(), 1);
    assert_eq!(r.equivocations[0].conflicting, other2);
    assert_eq!(log.quarantined(&t).unwrap().len(), 2);
    assert!(log.pending(&t).unwrap().is_empty());
    assert!(log.verify(&t).unwrap().is_valid());
}

pub fn an_old_incarnation_of_this_node_is_a_peer_chain(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let node = log.node();
    let mut b = *node.incarnation.as_bytes();
    b[0] ^= 0xff;
    let old = ChainId {
        node_id: node.node_id,
        incarnation: Incarnation::from_bytes(b),
    };
    let before = peer_chain(&t, old, 3, 0);
    let r = log.ingest(&t, before.clone()).unwrap();
    assert_eq!(r.applied, before);
    assert!(r.rejected.is_empty());
    // The current chain is untouched and starts at 1.
    assert_eq!(log.append(&t, vec![new_event(0)]).unwrap()[0].seq, 1);
    assert_eq!(log.high_water_marks(&t).unwrap().len(), 2);
}

pub fn lamport_exhaustion_is_an_error_and_appends_nothing(make: Make<'_>) {
    let log = make();
    let t = tenant("acme");
    let mut top = peer_chain(&t, chain_id(18, 1), 1, 0).remove(0);
    top.lamport = (1 << 63) - 1; // the largest allowed
    let top = seal(top);
    assert_eq!(log.ingest(&t, vec![top]).unwrap().applied.len(), 1);
    let before = all_events(&*log, &t);
    match log.append(&t, vec![new_event(0)]) {
        Err(nodus_fabric::EventLogError::Exhausted { counter, .. }) => {
            assert_eq!(counter, "lamport");
        }
        other => panic!("expected lamport exhaustion, got {other:?}"),
    }
    assert_eq!(all_events(&*log, &t), before);
    assert!(head(&*log, &t, log.node().chain()).is_none());
    assert!(log.verify(&t).unwrap().is_valid());
}
