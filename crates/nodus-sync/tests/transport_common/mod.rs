//! One suite run against every `DiffTransport`: publish/subscribe, catch-up from a version
//! vector, signature and trust checks, redelivery deduplicated by the event log, gaps that wait.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::time::Duration;

use nodus_fabric::{
    ChainId, EntityId, Event, EventKind, EventLabel, NewEvent, NodeId, Payload, SqliteEventLog,
    TenantEventLog, VersionVector,
};
use nodus_policy::TenantId;
use nodus_sync::transport::{
    Batch, BatchBody, BatchError, DiffTransport, PeerStatus, SignedBatch, Subscription,
    verify_batch, wants_for,
};
use nodus_sync::{Ed25519BundleSigner, TrustStore, TrustedKey};
use serde_json::json;

pub const NOW: u64 = 1_796_083_200;
pub const WAIT: Duration = Duration::from_secs(5);

pub fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

pub fn other_tenant() -> TenantId {
    TenantId::new("globex").unwrap()
}

/// A node: its event log, and a signer whose key id is its node id (as in `nodus-core`).
pub struct Node {
    pub log: SqliteEventLog,
    pub signer: Ed25519BundleSigner,
}

impl Node {
    pub fn new(n: u8) -> Self {
        let node_id = NodeId::from_bytes([n; 16]);
        Node {
            log: SqliteEventLog::in_memory(node_id).unwrap(),
            signer: Ed25519BundleSigner::new(
                node_id.to_string(),
                ed25519_dalek::SigningKey::from_bytes(&[n; 32]),
            )
            .unwrap(),
        }
    }
    pub fn key_id(&self) -> String {
        self.log.node().node_id.to_string()
    }
    pub fn chain(&self) -> ChainId {
        self.log.node().chain()
    }
    pub fn trusted(&self) -> TrustedKey {
        self.signer.trusted_key()
    }
    pub fn append(&self, n: u64) -> Vec<Event> {
        let start = self
            .log
            .high_water_marks(&tenant())
            .unwrap()
            .get(&self.chain())
            .map_or(0, |h| h.seq);
        self.log
            .append(
                &tenant(),
                (start..start + n)
                    .map(|i| {
                        NewEvent::new(
                            EventKind::new("object.created").unwrap(),
                            EntityId::new(format!("obj-{i}")).unwrap(),
                            EventLabel::new("UNCLASSIFIED").unwrap(),
                            Payload::from_value(&json!({ "i": i })).unwrap(),
                        )
                    })
                    .collect(),
            )
            .unwrap()
    }
    pub fn batch(&self, events: Vec<Event>) -> SignedBatch {
        Batch::events(tenant(), self.key_id(), events)
            .unwrap()
            .sign(&self.signer)
            .unwrap()
    }
    pub fn trust_store(&self, peers: &[&Node]) -> TrustStore {
        let mut t = TrustStore::new();
        for p in peers {
            t.insert(p.trusted().for_tenants([tenant().as_str()]));
        }
        t
    }
}

/// The next delivery, or a panic after `WAIT`.
pub fn next(sub: &mut Box<dyn Subscription>) -> nodus_sync::transport::Delivery {
    sub.next(WAIT).unwrap().expect("a delivery within the wait")
}

pub fn events_of(batch: &SignedBatch, trust: &TrustStore) -> Vec<Event> {
    match verify_batch(batch, &tenant(), trust, NOW).unwrap().body {
        BatchBody::Events(e) => e,
        BatchBody::Status(_) => panic!("expected events"),
    }
}

/// Publish, subscribe, verify, ingest, acknowledge: B applies A's events exactly as A has them.
pub fn publish_subscribe(t: &dyn DiffTransport) {
    let (a, b) = (Node::new(1), Node::new(2));
    let sent = a.append(10);
    let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    t.publish(&tenant(), &a.batch(sent.clone())).unwrap();
    let d = next(&mut sub);
    assert!(!d.redelivered);
    let got = events_of(&d.batch, &b.trust_store(&[&a]));
    assert_eq!(got, sent);
    let report = b.log.ingest(&tenant(), got).unwrap();
    assert_eq!(report.applied.len(), 10);
    sub.ack(&d).unwrap();
    assert_eq!(
        b.log.high_water_marks(&tenant()).unwrap(),
        a.log.high_water_marks(&tenant()).unwrap()
    );
    // Nothing else is pending for B; another tenant's channel is separate.
    assert!(sub.next(Duration::from_millis(50)).unwrap().is_none());
    let mut other = t
        .subscribe(&other_tenant(), "b", &VersionVector::new())
        .unwrap();
    assert!(other.next(Duration::from_millis(50)).unwrap().is_none());
}

/// A subscriber that has events 1..=5 starts at the batch with 6..=10: no full resend.
pub fn from_version_vector(t: &dyn DiffTransport) {
    let (a, b) = (Node::new(1), Node::new(2));
    let first = a.append(5);
    let second = a.append(5);
    t.publish(&tenant(), &a.batch(first.clone())).unwrap();
    t.publish(&tenant(), &a.batch(second.clone())).unwrap();
    b.log.ingest(&tenant(), first).unwrap();
    let vv = b.log.high_water_marks(&tenant()).unwrap();
    let mut sub = t.subscribe(&tenant(), "b", &vv).unwrap();
    let d = next(&mut sub);
    assert_eq!(events_of(&d.batch, &b.trust_store(&[&a])), second);
    sub.ack(&d).unwrap();
    assert!(sub.next(Duration::from_millis(50)).unwrap().is_none());
}

/// Forged batches are refused with their code, and an honest batch after them still flows.
pub fn signature_checks(t: &dyn DiffTransport) {
    let (a, b, mallory) = (Node::new(1), Node::new(2), Node::new(9));
    let trust = {
        let mut t = b.trust_store(&[&a]);
        // C is trusted, for another tenant only; D is revoked.
        t.insert(
            Node::new(3)
                .trusted()
                .for_tenants([other_tenant().as_str()]),
        );
        t.insert(Node::new(4).trusted());
        t.revoke(&Node::new(4).key_id());
        t
    };
    let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    let events = a.append(3);

    // A flipped byte in an event: bad signature.
    let mut bytes = a.batch(events.clone()).as_bytes().to_vec();
    let i = bytes.len() - 80;
    bytes[i] ^= 1;
    t.publish(&tenant(), &SignedBatch::from_bytes(bytes))
        .unwrap();
    // Mallory signs with her own key but claims A's name: bad signature.
    let claimed = Batch::events(tenant(), a.key_id(), events.clone()).unwrap();
    t.publish(&tenant(), &claimed.sign(&mallory.signer).unwrap())
        .unwrap();
    // Mallory under her own name: untrusted.
    let m_events = mallory.append(1);
    t.publish(&tenant(), &mallory.batch(m_events)).unwrap();
    // C is trusted for another tenant only; D is revoked.
    let c = Node::new(3);
    let c_events = c.append(1);
    t.publish(&tenant(), &c.batch(c_events)).unwrap();
    let d4 = Node::new(4);
    let d_events = d4.append(1);
    t.publish(&tenant(), &d4.batch(d_events)).unwrap();
    // A relays events of B's chain: not its own.
    let b_events = b.append(1);
    t.publish(&tenant(), &a.batch(b_events)).unwrap();
    // Truncated.
    t.publish(&tenant(), &SignedBatch::from_bytes(b"NODUSLB1".to_vec()))
        .unwrap();
    // And the honest batch.
    t.publish(&tenant(), &a.batch(events.clone())).unwrap();

    let expected = [
        "bad_signature",
        "bad_signature",
        "untrusted_key",
        "key_not_for_tenant",
        "revoked_key",
        "foreign_event",
        "malformed",
    ];
    let mut codes = Vec::new();
    let mut honest = None;
    for _ in 0..expected.len() + 1 {
        let d = next(&mut sub);
        match verify_batch(&d.batch, &tenant(), &trust, NOW) {
            Err(e) => codes.push(e.code()),
            Ok(batch) => honest = Some(batch),
        }
        sub.ack(&d).unwrap();
    }
    assert_eq!(codes, expected);
    let honest = honest.expect("the honest batch arrives after the forged ones");
    assert_eq!(honest.sender, a.key_id());
    assert_eq!(honest.body, BatchBody::Events(events));
    // A batch delivered on another tenant's subscription is refused.
    let e = verify_batch(&a.batch(a.append(1)), &other_tenant(), &trust, NOW).unwrap_err();
    assert!(matches!(e, BatchError::WrongTenant { .. }));
}

/// What is not acknowledged comes again; the event log makes the second delivery a no-op, and so
/// is the same events published again in another batch.
pub fn redelivery_dedupe(t: &dyn DiffTransport) {
    let (a, b) = (Node::new(1), Node::new(2));
    let trust = b.trust_store(&[&a]);
    let sent = a.append(4);
    let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    t.publish(&tenant(), &a.batch(sent.clone())).unwrap();
    let first = next(&mut sub);
    let r1 = b
        .log
        .ingest(&tenant(), events_of(&first.batch, &trust))
        .unwrap();
    assert_eq!(r1.applied.len(), 4);
    // Not acknowledged (a crash before the ack): delivered again.
    let again = next(&mut sub);
    assert!(again.redelivered);
    assert_eq!(again.batch, first.batch);
    let r2 = b
        .log
        .ingest(&tenant(), events_of(&again.batch, &trust))
        .unwrap();
    assert_eq!((r2.applied.len(), r2.duplicates), (0, 4));
    sub.ack(&again).unwrap();
    // A resend is another batch (another nonce, another id) with the same events: no effect.
    let resend = a.batch(sent);
    assert_ne!(resend.id(), first.batch.id());
    t.publish(&tenant(), &resend).unwrap();
    let d = next(&mut sub);
    let r3 = b
        .log
        .ingest(&tenant(), events_of(&d.batch, &trust))
        .unwrap();
    assert_eq!((r3.applied.len(), r3.duplicates), (0, 4));
    sub.ack(&d).unwrap();
    assert!(sub.next(Duration::from_millis(50)).unwrap().is_none());
}

/// Events after a gap wait; the receiver's status asks for the gap; the author answers from its
/// log and everything applies in order.
pub fn gap_waits(t: &dyn DiffTransport) {
    let (a, b) = (Node::new(1), Node::new(2));
    let trust_b = b.trust_store(&[&a]);
    let trust_a = a.trust_store(&[&b]);
    let events = a.append(10);
    let mut sub_b = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    let mut sub_a = t.subscribe(&tenant(), "a", &VersionVector::new()).unwrap();
    // The batch with 1..=5 is lost; 6..=10 arrives.
    t.publish(&tenant(), &a.batch(events[5..].to_vec()))
        .unwrap();
    let d = next(&mut sub_b);
    let r = b
        .log
        .ingest(&tenant(), events_of(&d.batch, &trust_b))
        .unwrap();
    sub_b.ack(&d).unwrap();
    assert!(r.applied.is_empty());
    assert_eq!(r.pending.len(), 5);
    assert!(
        !b.log
            .high_water_marks(&tenant())
            .unwrap()
            .contains_key(&a.chain())
    );
    // B asks.
    let heads = b.log.high_water_marks(&tenant()).unwrap();
    let wants = wants_for(&heads, &b.log.pending(&tenant()).unwrap());
    assert_eq!(wants.len(), 1);
    assert_eq!((wants[0].chain, wants[0].from_seq), (a.chain(), 1));
    let status = Batch::status(
        tenant(),
        b.key_id(),
        PeerStatus {
            heads,
            wants: wants.clone(),
        },
    )
    .unwrap()
    .sign(&b.signer)
    .unwrap();
    t.publish(&tenant(), &status).unwrap();
    // A sees the status (after its own batch) and answers from its log.
    let mut asked = None;
    while asked.is_none() {
        let d = next(&mut sub_a);
        if let Ok(batch) = verify_batch(&d.batch, &tenant(), &trust_a, NOW)
            && let BatchBody::Status(s) = batch.body
        {
            asked = Some(s.wants);
        }
        sub_a.ack(&d).unwrap();
    }
    let want = asked.unwrap()[0];
    let missing = a
        .log
        .read_chain(&tenant(), want.chain, want.from_seq, 100)
        .unwrap();
    t.publish(&tenant(), &a.batch(missing[..5].to_vec()))
        .unwrap();
    loop {
        let d = next(&mut sub_b);
        sub_b.ack(&d).unwrap();
        if d.batch.peek().unwrap().sender == b.key_id() {
            continue; // its own status, back from the shared channel
        }
        let batch = verify_batch(&d.batch, &tenant(), &trust_b, NOW).unwrap();
        if let BatchBody::Events(e) = batch.body {
            let r = b.log.ingest(&tenant(), e).unwrap();
            let seqs: Vec<u64> = r.applied.iter().map(|e| e.seq).collect();
            assert_eq!(
                seqs,
                (1..=10).collect::<Vec<_>>(),
                "applied in chain order, gap first"
            );
            break;
        }
    }
    assert!(b.log.pending(&tenant()).unwrap().is_empty());
    assert_eq!(
        b.log.high_water_marks(&tenant()).unwrap(),
        a.log.high_water_marks(&tenant()).unwrap()
    );
}

/// A status survives encoding and verification exactly.
pub fn status_round_trip(t: &dyn DiffTransport) {
    let (a, b) = (Node::new(1), Node::new(2));
    a.append(3);
    let heads = a.log.high_water_marks(&tenant()).unwrap();
    let wants = vec![nodus_sync::transport::Want {
        chain: b.chain(),
        from_seq: 7,
    }];
    let status = PeerStatus { heads, wants };
    let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    t.publish(
        &tenant(),
        &Batch::status(tenant(), a.key_id(), status.clone())
            .unwrap()
            .sign(&a.signer)
            .unwrap(),
    )
    .unwrap();
    let d = next(&mut sub);
    let got = verify_batch(&d.batch, &tenant(), &b.trust_store(&[&a]), NOW).unwrap();
    assert_eq!(got.body, BatchBody::Status(status));
    sub.ack(&d).unwrap();
}
