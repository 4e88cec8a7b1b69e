//! Lifecycle: `shutdown()` stops accepting calls, drains and flushes the audit log; dropping the
//! last handle does the same; no acknowledged call is lost when shutdown races with callers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use nodus_core::{DispatchError, Nodus};

fn build(dir: &Path) -> Nodus {
    Nodus::builder()
        .data_dir(dir)
        .master_key(master())
        .policy(sources(false))
        .command(Ping)
        .build()
        .unwrap()
}

/// Reopens the data directory and returns the verified size of its audit log.
fn reopened_size(dir: &Path) -> u64 {
    let n = build(dir);
    let report = n.verify_audit().unwrap();
    assert!(report.valid, "{report:?}");
    n.shutdown().unwrap();
    report.size
}

#[test]
fn shutdown_drains_and_flushes_what_was_enqueued() {
    let dir = tempfile::tempdir().unwrap();
    let n = build(dir.path());
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    for i in 0..200 {
        n.invoke::<Ping>(&alice, i).unwrap();
    }
    // No flush: shutdown itself must drain the queue and make it durable.
    n.shutdown().unwrap();
    assert!(n.is_shut_down());
    assert!(matches!(
        n.invoke::<Ping>(&alice, 1),
        Err(DispatchError::ShuttingDown)
    ));
    assert!(matches!(
        n.dispatch(&alice, "notes.ping", "1"),
        Err(DispatchError::ShuttingDown)
    ));
    // Refused calls after shutdown leave no record (there is nowhere to write one).
    drop(n);
    assert_eq!(reopened_size(dir.path()), 200);
}

#[test]
fn dropping_the_last_handle_drains_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let n = build(dir.path());
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    let clone = n.clone();
    for i in 0..50 {
        clone.invoke::<Ping>(&alice, i).unwrap();
    }
    drop(n);
    // Another handle is alive: still running.
    assert!(!clone.is_shut_down());
    clone.invoke::<Ping>(&alice, 1).unwrap();
    // Contexts and subscriptions do not keep the instance alive.
    let _sub = clone
        .events()
        .subscribe("*", nodus_core::registry::events::Scope::AllTenants, 4)
        .unwrap();
    drop(clone);
    assert_eq!(reopened_size(dir.path()), 51);
    drop(alice);
}

/// Callers racing a shutdown: every call that returned `Ok` was audited and is durable; every
/// other call was refused (`ShuttingDown`, or `AuditUnavailable` for one that got past the door
/// just as the log closed). Nothing hangs.
#[test]
fn no_acknowledged_call_is_lost_when_shutdown_races_callers() {
    let dir = tempfile::tempdir().unwrap();
    let n = build(dir.path());
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let n = n.clone();
            let acknowledged = acknowledged.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                let me = ctx(
                    &n,
                    "acme",
                    &format!("worker{w}"),
                    &["editor"],
                    "UNCLASSIFIED",
                );
                let mut i = 0u64;
                loop {
                    match n.invoke::<Ping>(&me, i) {
                        Ok(_) => {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                            started.store(true, Ordering::SeqCst);
                        }
                        Err(DispatchError::ShuttingDown) => return,
                        Err(DispatchError::AuditUnavailable(_)) => {}
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    n.shutdown().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    drop(n);
    let acknowledged = acknowledged.load(Ordering::SeqCst);
    assert!(acknowledged > 0);
    assert_eq!(reopened_size(dir.path()), acknowledged);
}
