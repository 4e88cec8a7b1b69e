//! The in-memory transport: the shared transport suite, and its disconnection switch.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod transport_common;

use std::time::Duration;

use nodus_fabric::VersionVector;
use nodus_sync::transport::{DiffTransport, MemoryTransport, TransportError};
use transport_common::*;

fn transport() -> MemoryTransport {
    MemoryTransport::with_ack_wait(Duration::from_millis(200))
}

#[test]
fn publish_subscribe_round_trip() {
    publish_subscribe(&transport());
}

#[test]
fn subscribing_from_a_version_vector_skips_what_is_covered() {
    from_version_vector(&transport());
}

#[test]
fn forged_batches_are_refused_and_honest_ones_flow() {
    signature_checks(&transport());
}

#[test]
fn redelivery_has_no_second_effect() {
    redelivery_dedupe(&transport());
}

#[test]
fn a_gap_waits_and_is_asked_for() {
    gap_waits(&transport());
}

#[test]
fn statuses_round_trip() {
    status_round_trip(&transport());
}

#[test]
fn disconnected_fails_then_reconnects() {
    let t = transport();
    let a = Node::new(1);
    let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    t.set_connected(false);
    let batch = a.batch(a.append(1));
    assert!(matches!(
        t.publish(&tenant(), &batch),
        Err(TransportError::Unavailable(_))
    ));
    assert!(sub.next(Duration::from_millis(10)).is_err());
    assert!(t.subscribe(&tenant(), "b", &VersionVector::new()).is_err());
    t.set_connected(true);
    t.publish(&tenant(), &batch).unwrap();
    let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    assert_eq!(next(&mut sub).batch, batch);
    assert_eq!(t.published(&tenant()), 1);
}
