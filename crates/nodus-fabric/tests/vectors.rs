//! Known-answer vectors for the canonical event encoding and its hash (`docs/fabric.md`, "Canonical
//! encoding"). The expected hashes were computed once and checked with an independent Python
//! encoder (the one in `docs/fabric.md`); they are pinned: a change here is a format change and
//! needs a new `EVENT_TAG`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use nodus_fabric::{
    EntityId, Event, EventHash, EventKind, EventLabel, Incarnation, NodeId, Payload,
};
use nodus_policy::TenantId;
use sha2::{Digest, Sha256};

fn vector_event(prev_hash: EventHash, seq: u64) -> Event {
    let mut e = Event {
        tenant: TenantId::new("acme").unwrap(),
        node_id: "k000102030405060708090a0b0c0d0e0f".parse().unwrap(),
        incarnation: "f0e0d0c0b0a090807060504030201000".parse().unwrap(),
        seq,
        lamport: seq + 41,
        kind: EventKind::new("object.created").unwrap(),
        entity: EntityId::new("note-1").unwrap(),
        label: EventLabel::new("SECRET//CRYPTO").unwrap(),
        payload: Payload::from_value(&serde_json::json!({"title": "Hello", "n": 1, "x": 2.5}))
            .unwrap(),
        model_ver: 2,
        prev_hash,
        hash: EventHash::ZERO,
        time_ms: 1_700_000_000_000,
    };
    e.hash = e.compute_hash();
    e
}

/// An independent encoder written from the documentation's grammar.
fn reference_bytes(e: &Event) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, t: &str) {
        out.extend_from_slice(&(t.len() as u32).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
    }
    let mut out = b"nodus.fabric.event.v1\0".to_vec();
    s(&mut out, e.tenant.as_str());
    out.extend_from_slice(&hex::decode(&e.node_id.to_string()[1..]).unwrap());
    out.extend_from_slice(&hex::decode(e.incarnation.to_string()).unwrap());
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.lamport.to_be_bytes());
    s(&mut out, e.kind.as_str());
    s(&mut out, e.entity.as_str());
    s(&mut out, e.label.as_str());
    out.extend_from_slice(&e.model_ver.to_be_bytes());
    out.extend_from_slice(&e.time_ms.to_be_bytes());
    s(&mut out, e.payload.as_str());
    out.extend_from_slice(&hex::decode(e.prev_hash.to_string()).unwrap());
    out
}

#[test]
fn first_event_encoding_is_byte_exact() {
    let e = vector_event(EventHash::ZERO, 1);
    assert_eq!(e.payload.as_str(), r#"{"n":1,"title":"Hello","x":2.5}"#);
    let bytes = e.canonical_bytes();
    assert_eq!(bytes, reference_bytes(&e));
    let expected = concat!(
        "6e6f6475732e6661627269632e6576656e742e763100", // "nodus.fabric.event.v1" NUL
        "00000004",
        "61636d65",                         // tenant "acme"
        "000102030405060708090a0b0c0d0e0f", // node_id
        "f0e0d0c0b0a090807060504030201000", // incarnation
        "0000000000000001",                 // seq 1
        "000000000000002a",                 // lamport 42
        "0000000e",
        "6f626a6563742e63726561746564", // kind "object.created"
        "00000006",
        "6e6f74652d31", // entity "note-1"
        "0000000e",
        "5345435245542f2f43525950544f", // label "SECRET//CRYPTO"
        "00000002",                     // model_ver 2
        "0000018bcfe56800",             // time_ms 1700000000000
        "0000001f",
        "7b226e223a312c227469746c65223a2248656c6c6f222c2278223a322e357d",
        "0000000000000000000000000000000000000000000000000000000000000000", // prev_hash
    );
    assert_eq!(hex::encode(&bytes), expected);
    assert_eq!(e.hash.as_bytes(), &<[u8; 32]>::from(Sha256::digest(&bytes)));
    assert_eq!(e.hash.to_string(), VECTOR_1);
}

const VECTOR_1: &str = "43d13051792f5c6e2a4072f7475b23ed7d1efde42be58db6f41918fc84c974ad";
const VECTOR_2: &str = "0745cfb4b3eae150d0bdb2716506c7604bc9700ce011b15b889653d2cc1df725";
const VECTOR_3: &str = "3fedc96fd913efa2f0ef1ea73a72751cfe3343bbea9ac2b99a568d3fe902e8ef";

#[test]
fn chained_event_vector() {
    let first = vector_event(EventHash::ZERO, 1);
    let second = vector_event(first.hash, 2);
    assert_eq!(second.canonical_bytes(), reference_bytes(&second));
    assert_eq!(second.hash.to_string(), VECTOR_2);
}

#[test]
fn unicode_and_empty_payload_vector() {
    let mut e = Event {
        tenant: TenantId::new("t-2").unwrap(),
        node_id: NodeId::from_bytes([0xff; 16]),
        incarnation: Incarnation::from_bytes([0; 16]),
        seq: 1,
        lamport: 1,
        kind: EventKind::new("config.set").unwrap(),
        entity: EntityId::new("ключ/ü").unwrap(),
        label: EventLabel::new("UNCLASSIFIED").unwrap(),
        payload: Payload::from_value(&serde_json::json!({})).unwrap(),
        model_ver: 1,
        prev_hash: EventHash::ZERO,
        hash: EventHash::ZERO,
        time_ms: 0,
    };
    e.hash = e.compute_hash();
    assert_eq!(e.canonical_bytes(), reference_bytes(&e));
    assert_eq!(e.hash.to_string(), VECTOR_3);
}

#[test]
fn wire_form_carries_the_hashed_text() {
    let e = vector_event(EventHash::ZERO, 1);
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "tenant": "acme",
            "node_id": "k000102030405060708090a0b0c0d0e0f",
            "incarnation": "f0e0d0c0b0a090807060504030201000",
            "seq": 1,
            "lamport": 42,
            "kind": "object.created",
            "entity": "note-1",
            "label": "SECRET//CRYPTO",
            "payload": "{\"n\":1,\"title\":\"Hello\",\"x\":2.5}",
            "model_ver": 2,
            "prev_hash": "0000000000000000000000000000000000000000000000000000000000000000",
            "hash": VECTOR_1,
            "time_ms": 1_700_000_000_000u64,
        })
    );
    let back: Event = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, e);
    // A payload that is not canonical text is refused, not silently rewritten.
    let mut bad = json;
    bad["payload"] = serde_json::json!("{\"x\":2.5,\"n\":1}");
    assert!(serde_json::from_value::<Event>(bad.clone()).is_err());
    bad["payload"] = serde_json::json!({"n": 1});
    assert!(serde_json::from_value::<Event>(bad).is_err());
}

#[test]
fn decode_round_trips_the_vectors() {
    let first = vector_event(EventHash::ZERO, 1);
    let again = Event::decode(&first.canonical_bytes()).unwrap();
    assert_eq!(again, first);
    let mut extra = first.canonical_bytes();
    extra.push(0);
    assert!(Event::decode(&extra).is_err());
    let bytes = first.canonical_bytes();
    for cut in 0..bytes.len() {
        assert!(Event::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
}
