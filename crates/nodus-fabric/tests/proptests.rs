//! Laws: arrival order does not matter; the canonical encoding is one-to-one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod conformance;

use conformance::{chain_id, fresh_node, peer_chain, tenant};
use nodus_fabric::{
    EntityId, Event, EventHash, EventKind, EventLabel, Incarnation, NodeId, Payload,
    SqliteEventLog, TenantEventLog,
};
use nodus_policy::TenantId;
use proptest::prelude::*;
use serde_json::Value;

/// Events of up to four chains (two of them the same node in two incarnations), each with a
/// random length.
fn chains() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(1u64..8, 1..=4).prop_map(|lens| {
        let t = tenant("acme");
        lens.iter()
            .enumerate()
            .flat_map(|(i, n)| {
                let c = if i == 3 {
                    chain_id(1, 2)
                } else {
                    chain_id(i as u8 + 1, 1)
                };
                peer_chain(&t, c, *n, i as u64)
            })
            .collect()
    })
}

/// The events, with some duplicated, shuffled, cut into batches.
fn deliveries() -> impl Strategy<Value = (Vec<Event>, Vec<Vec<Event>>)> {
    chains().prop_flat_map(|events| {
        let n = events.len();
        (
            Just(events.clone()),
            proptest::collection::vec(0..n, 0..n),
            Just(events).prop_shuffle(),
            proptest::collection::vec(1usize..5, 1..10),
        )
            .prop_map(|(events, dups, shuffled, cuts)| {
                let mut stream = shuffled;
                for d in dups {
                    let e = events[d].clone();
                    let at = (d * 7) % (stream.len() + 1);
                    stream.insert(at, e);
                }
                let mut batches = Vec::new();
                let mut rest = stream.as_slice();
                for c in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (b, r) = rest.split_at((*c).min(rest.len()));
                    batches.push(b.to_vec());
                    rest = r;
                }
                (events, batches)
            })
    })
}

fn state(log: &dyn TenantEventLog, t: &TenantId, events: &[Event]) -> Vec<Vec<Event>> {
    let mut chains: Vec<_> = events.iter().map(Event::chain).collect();
    chains.sort();
    chains.dedup();
    chains
        .into_iter()
        .map(|c| log.read_chain(t, c, 1, usize::MAX).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// (a) The same set of events, from several chains, in any order and batching, with
    /// duplicates, gives identical high-water marks and identical per-chain reads — equal to
    /// ingesting them in order.
    #[test]
    fn any_arrival_order_gives_the_same_state((events, batches) in deliveries()) {
        let t = tenant("acme");
        let reference = SqliteEventLog::in_memory(fresh_node()).unwrap();
        let r = reference.ingest(&t, events.clone()).unwrap();
        prop_assert_eq!(r.applied.len(), events.len());

        let log = SqliteEventLog::in_memory(fresh_node()).unwrap();
        let mut applied = 0;
        let mut duplicates = 0;
        let delivered: usize = batches.iter().map(Vec::len).sum();
        for b in batches {
            let r = log.ingest(&t, b).unwrap();
            prop_assert!(r.equivocations.is_empty() && r.rejected.is_empty());
            // Within each chain, applied events come out in seq order.
            for w in r.applied.windows(2) {
                if w[0].chain() == w[1].chain() {
                    prop_assert_eq!(w[0].seq + 1, w[1].seq);
                }
            }
            applied += r.applied.len();
            duplicates += r.duplicates as usize;
        }
        // Every delivery is applied exactly once or counted as a duplicate.
        prop_assert_eq!(applied + duplicates, delivered);
        prop_assert_eq!(applied, events.len());
        prop_assert!(log.pending(&t).unwrap().is_empty());
        prop_assert_eq!(log.high_water_marks(&t).unwrap(), reference.high_water_marks(&t).unwrap());
        prop_assert_eq!(state(&log, &t, &events), state(&reference, &t, &events));
        prop_assert!(log.verify(&t).unwrap().is_valid());
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        proptest::collection::vec(any::<char>(), 0..6)
            .prop_map(|c| Value::String(c.into_iter().collect())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event() -> impl Strategy<Value = Event> {
    (
        "[a-z][a-z0-9._@:-]{0,20}",
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        1u64..=i64::MAX as u64,
        1u64..=i64::MAX as u64,
        "[a-z][a-z0-9_]{0,8}\\.[a-z][a-z0-9_]{0,8}",
        "[^\\p{Cc}]{1,20}",
        "[A-Z ]{1,10}(//[A-Z]{1,6})?",
        json_value(),
        any::<u32>(),
        any::<[u8; 32]>(),
        0u64..=i64::MAX as u64,
    )
        .prop_map(
            |(t, node, inc, seq, lamport, kind, entity, label, payload, model_ver, prev, time)| {
                let mut e = Event {
                    tenant: TenantId::new(t).unwrap(),
                    node_id: NodeId::from_bytes(node),
                    incarnation: Incarnation::from_bytes(inc),
                    seq,
                    lamport,
                    kind: EventKind::new(kind).unwrap(),
                    entity: EntityId::new(entity).unwrap(),
                    label: EventLabel::new(label.trim_end().to_owned() + "X").unwrap(),
                    payload: Payload::from_value(&payload).unwrap(),
                    model_ver,
                    prev_hash: EventHash::from_bytes(prev),
                    hash: EventHash::ZERO,
                    time_ms: time,
                };
                e.hash = e.compute_hash();
                e
            },
        )
}

/// Every way of changing one field of an event.
fn mutations(e: &Event) -> Vec<(&'static str, Event)> {
    let mut out = Vec::new();
    let mut m = |name: &'static str, f: &dyn Fn(&mut Event)| {
        let mut x = e.clone();
        f(&mut x);
        out.push((name, x));
    };
    m("tenant", &|x| {
        x.tenant =
            TenantId::new(format!("{}x", x.tenant)).unwrap_or_else(|_| TenantId::new("y").unwrap())
    });
    m("node_id", &|x| {
        let mut b = *x.node_id.as_bytes();
        b[0] ^= 1;
        x.node_id = NodeId::from_bytes(b);
    });
    m("incarnation", &|x| {
        let mut b = *x.incarnation.as_bytes();
        b[15] ^= 0x80;
        x.incarnation = Incarnation::from_bytes(b);
    });
    m("seq", &|x| x.seq ^= 1);
    m("lamport", &|x| x.lamport ^= 1 << 20);
    m("kind", &|x| {
        x.kind = EventKind::new(format!("{}x", x.kind)).unwrap()
    });
    m("entity", &|x| {
        x.entity = EntityId::new(format!("{}x", x.entity)).unwrap()
    });
    m("label", &|x| {
        x.label = EventLabel::new(format!("{}x", x.label)).unwrap()
    });
    m("payload", &|x| {
        let v = x.payload.to_value().unwrap();
        x.payload = Payload::from_value(&Value::Array(vec![v])).unwrap();
    });
    m("model_ver", &|x| x.model_ver = x.model_ver.wrapping_add(1));
    m("prev_hash", &|x| {
        let mut b = *x.prev_hash.as_bytes();
        b[31] ^= 1;
        x.prev_hash = EventHash::from_bytes(b);
    });
    m("time_ms", &|x| x.time_ms ^= 1);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (b) The canonical encoding decodes to the same event, and changing any single field
    /// changes the hash.
    #[test]
    fn encoding_round_trips_and_every_field_is_bound(e in event()) {
        let bytes = e.canonical_bytes();
        prop_assert_eq!(Event::decode(&bytes).unwrap(), e.clone());
        for (field, changed) in mutations(&e) {
            prop_assert_ne!(changed.compute_hash(), e.hash, "changing `{}` kept the hash", field);
        }
        // The serde form round-trips too (the wire form sync will use), hash intact.
        let json = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back.compute_hash(), e.hash);
        prop_assert_eq!(back, e);
    }

    /// One value, one text: canonical text parses back to the same value and re-canonicalises to
    /// itself; floats keep their exact binary64.
    #[test]
    fn canonical_payload_is_a_fixed_point(v in json_value()) {
        let p = Payload::from_value(&v).unwrap();
        let again = Payload::from_canonical(p.as_str()).unwrap();
        prop_assert_eq!(again.as_str(), p.as_str());
        let parsed = p.to_value().unwrap();
        let third = Payload::from_value(&parsed).unwrap();
        prop_assert_eq!(third.as_str(), p.as_str());
    }

    #[test]
    fn floats_read_back_exactly(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
        let p = Payload::from_value(&Value::from(f)).unwrap();
        let back = p.to_value().unwrap().as_f64().unwrap();
        prop_assert!(back == f, "{} -> {} -> {}", f, p.as_str(), back);
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Event::decode(&bytes);
        let mut tagged = nodus_fabric::EVENT_TAG.to_vec();
        tagged.extend_from_slice(&bytes);
        let _ = Event::decode(&tagged);
    }
}
