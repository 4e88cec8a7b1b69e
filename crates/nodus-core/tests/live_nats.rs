//! Convergence over real NATS JetStream (feature `nats`, server in `NODUS_NATS_URL`; skipped
//! with a message when unset): three instances in one process, random writes on each, every
//! node's transport randomly disconnected and reconnected, one node restarted mid-run. After
//! quiet, every projection is identical and each node applied each event of the others exactly
//! once (counted across the restart).
#![cfg(feature = "nats")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod live_common;

use std::path::Path;
use std::time::{Duration, Instant};

use live_common::*;
use nodus_core::Nodus;
use nodus_core::sync::transport::{NatsConfig, NatsTransport, Switched};
use rand::RngExt;
use serde_json::json;

fn config() -> Option<NatsConfig> {
    let Ok(url) = std::env::var("NODUS_NATS_URL") else {
        eprintln!(
            "skipping the NATS convergence test: NODUS_NATS_URL is not set (e.g. nats://127.0.0.1:4222)"
        );
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
    Some(
        NatsConfig::new(url)
            .stream(format!("LIVE_{unique}"), format!("live{unique}"))
            .ack_wait(Duration::from_secs(1)),
    )
}

/// A node with its own connection, which the test can cut (the switch).
fn start(dir: &Path, seed: u8, config: &NatsConfig) -> (Nodus, Switched<NatsTransport>) {
    let t = Switched::new(NatsTransport::connect(config.clone()).unwrap());
    (node(dir, seed, t.clone()), t)
}

/// A random write: create a new object, or update one that exists here (concurrent updates of
/// the same object on several nodes merge per field).
fn random_write(n: &Nodus, name: &str, i: usize, rng: &mut impl RngExt) {
    if i < 3 || rng.random_bool(0.6) {
        ok(
            n,
            "objects.create",
            json!({"type": "case", "id": format!("{name}-{i}"), "data": {"title": format!("{name} {i}"), "n": i}}),
        );
    } else {
        let id = format!("shared-{}", rng.random_range(0..3));
        if let Ok(o) = call(n, "objects.get", json!({"type": "case", "id": id})) {
            let _ = call(
                n,
                "objects.update",
                json!({"type": "case", "id": id, "expected_version": o["version"], "data": {"by": name, "n": i}}),
            );
        }
    }
}

#[test]
fn three_nodes_converge_over_jetstream_through_cuts_and_a_restart() {
    let Some(config) = config() else { return };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (a, up_a) = start(&dir.path().join("a"), 1, &config);
    let (b, up_b) = start(&dir.path().join("b"), 2, &config);
    let (c, up_c) = start(&dir.path().join("c"), 3, &config);
    trust_all(&[&a, &b, &c]);
    define_case(&a);
    for i in 0..3 {
        ok(
            &a,
            "objects.create",
            json!({"type": "case", "id": format!("shared-{i}"), "data": {"title": "shared", "n": 0}}),
        );
    }
    assert!(wait_until(Duration::from_secs(15), || [&b, &c].iter().all(
        |n| call(n, "objects.get", json!({"type": "case", "id": "shared-2"})).is_ok()
    )));

    let mut rng = rand::rng();
    let mut c = Some(c);
    let mut up_c = up_c;
    let mut c_applied_before_restart = 0;
    for round in 0..8 {
        // Cut or restore each connection at random.
        for up in [&up_a, &up_b, &up_c] {
            up.set_connected(rng.random_bool(0.7));
        }
        let writers = [("a", &a), ("b", &b)];
        std::thread::scope(|s| {
            for (name, n) in writers {
                s.spawn(move || {
                    let mut rng = rand::rng();
                    for i in 0..6 {
                        random_write(n, name, round * 100 + i, &mut rng);
                    }
                });
            }
            if let Some(c) = c.as_ref() {
                s.spawn(move || {
                    let mut rng = rand::rng();
                    for i in 0..6 {
                        random_write(c, "c", round * 100 + i, &mut rng);
                    }
                });
            }
        });
        std::thread::sleep(Duration::from_millis(150));
        if round == 3 {
            // Restart C: cut it first so nothing is half received, count what it applied, stop it.
            up_c.set_connected(false);
            std::thread::sleep(Duration::from_millis(100));
            let old = c.take().unwrap();
            c_applied_before_restart = old.live_sync_status(&tenant()).unwrap().applied;
            old.shutdown().unwrap();
            drop(old);
        }
        if round == 5 {
            let (again, up) = start(&dir.path().join("c"), 3, &config);
            c = Some(again);
            up_c = up;
        }
    }
    let c = c.unwrap();
    for up in [&up_a, &up_b, &up_c] {
        up.set_connected(true);
    }
    assert!(
        converged(&[&a, &b, &c], Duration::from_secs(30)),
        "no convergence after quiet"
    );
    let views: Vec<_> = [&a, &b, &c].iter().map(|n| view(n)).collect();
    assert_eq!(views[0], views[1]);
    assert_eq!(views[1], views[2]);

    // No event applied twice: each node applied exactly the events the others appended.
    let heads: Vec<u64> = [&a, &b, &c]
        .iter()
        .map(|n| n.live_sync_status(&tenant()).unwrap().published_seq)
        .collect();
    let applied = [
        a.live_sync_status(&tenant()).unwrap().applied,
        b.live_sync_status(&tenant()).unwrap().applied,
        c.live_sync_status(&tenant()).unwrap().applied + c_applied_before_restart,
    ];
    let total: u64 = heads.iter().sum();
    for (i, got) in applied.iter().enumerate() {
        assert_eq!(
            *got,
            total - heads[i],
            "node {i}: applied {applied:?}, heads {heads:?}"
        );
    }
    for n in [&a, &b, &c] {
        assert!(n.verify_events(&tenant()).unwrap().is_valid());
        assert_eq!(n.live_sync_status(&tenant()).unwrap().equivocations, 0);
    }
    eprintln!(
        "converged in {:?}: heads {heads:?}, applied {applied:?}, duplicates {:?}",
        started.elapsed(),
        [&a, &b, &c].map(|n| n.live_sync_status(&tenant()).unwrap().duplicates)
    );
    drop((a, b, c));
    NatsTransport::connect(config)
        .unwrap()
        .delete_stream()
        .unwrap();
}
