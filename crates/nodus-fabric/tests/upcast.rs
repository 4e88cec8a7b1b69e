//! Upcasters: old events read in the current shape; stored bytes and hashes never change.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod conformance;

use conformance::{fresh_node, tenant};
use nodus_fabric::{
    EntityId, EventKind, EventLabel, NewEvent, Payload, SqliteEventLog, TenantEventLog,
    UpcastError, Upcasters,
};
use serde_json::json;

fn kind() -> EventKind {
    EventKind::new("object.created").unwrap()
}

fn ev(model_ver: u32, payload: serde_json::Value) -> NewEvent {
    NewEvent::new(
        kind(),
        EntityId::new("p-1").unwrap(),
        EventLabel::new("UNCLASSIFIED").unwrap(),
        Payload::from_value(&payload).unwrap(),
    )
    .model_ver(model_ver)
}

fn upcasters() -> Upcasters {
    let mut up = Upcasters::new();
    // v1 {name} → v2 {first, last}
    up.register(kind(), 1, |v| {
        let name = v["name"].as_str().ok_or("`name` is not a string")?;
        let (first, last) = name.split_once(' ').unwrap_or((name, ""));
        Ok(json!({"first": first, "last": last}))
    });
    // v2 → v3 adds `tags`
    up.register(kind(), 2, |mut v| {
        v["tags"] = json!([]);
        Ok(v)
    });
    up
}

#[test]
fn old_events_read_in_the_current_shape_and_stored_bytes_do_not_change() {
    let log = SqliteEventLog::in_memory(fresh_node()).unwrap();
    let t = tenant("acme");
    let stored = log
        .append(
            &t,
            vec![
                ev(1, json!({"name": "Ada Lovelace"})),
                ev(2, json!({"first": "Alan", "last": "Turing"})),
                ev(
                    3,
                    json!({"first": "Grace", "last": "Hopper", "tags": ["navy"]}),
                ),
            ],
        )
        .unwrap();
    let up = upcasters();
    assert_eq!(up.current(&kind()), Some(3));
    let (read, _) = up.read_tenant(&log, &t, None, 10).unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].model_ver, 3);
    assert_eq!(
        read[0].payload,
        json!({"first": "Ada", "last": "Lovelace", "tags": []})
    );
    assert_eq!(
        read[1].payload,
        json!({"first": "Alan", "last": "Turing", "tags": []})
    );
    assert_eq!(
        read[2].payload,
        json!({"first": "Grace", "last": "Hopper", "tags": ["navy"]})
    );
    // The stored events are untouched: same bytes, same model_ver, same hashes.
    for (u, s) in read.iter().zip(&stored) {
        assert_eq!(&u.event, s);
    }
    assert_eq!(log.read_tenant(&t, None, 10).unwrap().0, stored);
    assert!(log.verify(&t).unwrap().is_valid());
    let chain = up.read_chain(&log, &t, log.node().chain(), 2, 10).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].payload["tags"], json!([]));
    // Kinds without upcasters read as stored.
    let other = EventKind::new("link.added").unwrap();
    assert_eq!(up.current(&other), None);
    assert_eq!(up.upcast_value(&other, 7, json!(1)).unwrap(), (7, json!(1)));
    // A version above the current one is passed through unchanged.
    assert_eq!(
        up.upcast_value(&kind(), 9, json!({})).unwrap(),
        (9, json!({}))
    );
}

#[test]
fn a_failing_or_missing_step_is_an_error_naming_the_event() {
    let log = SqliteEventLog::in_memory(fresh_node()).unwrap();
    let t = tenant("acme");
    log.append(&t, vec![ev(1, json!({"name": 5}))]).unwrap();
    match upcasters().read_tenant(&log, &t, None, 10) {
        Err(UpcastError::Step {
            from,
            reason,
            event,
            ..
        }) => {
            assert_eq!(from, 1);
            assert!(reason.contains("`name`"));
            assert!(event.ends_with("#1"), "{event}");
        }
        other => panic!("expected a step error, got {other:?}"),
    }
    // Only a 2 → 3 step registered: a v1 event has no way up.
    let mut partial = Upcasters::new();
    partial.register(kind(), 2, Ok);
    match partial.upcast_value(&kind(), 1, json!({})) {
        Err(
            e @ UpcastError::Missing {
                at: 1, lowest: 2, ..
            },
        ) => {
            assert!(e.to_string().contains("`object.created`"), "{e}")
        }
        other => panic!("expected a missing step, got {other:?}"),
    }
    assert_eq!(format!("{partial:?}"), r#"{"object.created@2"}"#);
}
