//! The NATS JetStream transport (feature `nats`) against the server in `NODUS_NATS_URL`: the
//! shared transport suite, each test on its own stream so runs never collide. Skips, saying so,
//! when `NODUS_NATS_URL` is unset.
#![cfg(feature = "nats")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod transport_common;

use std::time::Duration;

use nodus_fabric::VersionVector;
use nodus_sync::transport::{DiffTransport, NatsConfig, NatsTransport};
use transport_common::*;

/// A transport on a stream of its own, or `None` (with a message) when no server is configured.
fn transport(test: &str) -> Option<NatsTransport> {
    let Ok(url) = std::env::var("NODUS_NATS_URL") else {
        eprintln!("skipping {test}: NODUS_NATS_URL is not set (e.g. nats://127.0.0.1:4222)");
        return None;
    };
    let unique = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let config = NatsConfig::new(url)
        .stream(format!("T_{test}_{unique}"), format!("t{unique}{test}"))
        .ack_wait(Duration::from_millis(500));
    Some(NatsTransport::connect(config).unwrap())
}

fn run(test: &str, suite: impl FnOnce(&dyn DiffTransport)) {
    if let Some(t) = transport(test) {
        suite(&t);
        t.delete_stream().unwrap();
    }
}

#[test]
fn publish_subscribe_round_trip() {
    run("pubsub", publish_subscribe);
}

#[test]
fn subscribing_from_a_version_vector_skips_what_is_covered() {
    run("fromvv", from_version_vector);
}

#[test]
fn forged_batches_are_refused_and_honest_ones_flow() {
    run("forged", signature_checks);
}

#[test]
fn redelivery_has_no_second_effect() {
    run("redeliver", redelivery_dedupe);
}

#[test]
fn a_gap_waits_and_is_asked_for() {
    run("gap", gap_waits);
}

#[test]
fn statuses_round_trip() {
    run("status", status_round_trip);
}

/// A durable consumer resumes where its node left off: what it acknowledged is not delivered
/// again to a new subscription of the same node.
#[test]
fn a_durable_consumer_resumes_after_its_last_ack() {
    run("durable", |t| {
        let a = Node::new(1);
        let first = a.batch(a.append(1));
        let second = a.batch(a.append(1));
        let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
        t.publish(&tenant(), &first).unwrap();
        let d = next(&mut sub);
        assert_eq!(d.batch, first);
        sub.ack(&d).unwrap();
        drop(sub);
        t.publish(&tenant(), &second).unwrap();
        let mut again = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
        assert_eq!(next(&mut again).batch, second);
    });
}
