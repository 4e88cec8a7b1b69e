//! Threads an instance owns: `build()` refuses before starting any; `shutdown()` and dropping the
//! last handle join every one.
//!
//! This binary holds a single test on purpose: it counts the process's threads (Linux
//! `/proc/self/task`), so no other test may run alongside it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use nodus_core::{CommandSpec, Nodus, NodusBuilder, PolicySources};

/// This process's threads, by name (a thread names itself just after it starts, so count them
/// rather than match names).
fn threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}

/// A joined thread can linger in `/proc` for a moment after `join` returns: poll briefly.
fn assert_back_to(baseline: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = threads();
        if now.len() <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {} threads, expected {baseline}: {now:?}",
            now.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn build_errors_start_nothing_and_shutdown_joins_everything() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("skipped: no /proc/self/task on this platform");
        return;
    }
    // This test's thread and the harness's: nothing else runs in this binary.
    let baseline = threads().len();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let builder = || {
        Nodus::builder()
            .data_dir(&data)
            .master_key(master())
            .policy(sources(false))
    };
    let failures: Vec<(&str, NodusBuilder)> = vec![
        (
            "missing master key",
            Nodus::builder().data_dir(&data).policy(sources(false)),
        ),
        (
            "missing policy",
            Nodus::builder().data_dir(&data).master_key(master()),
        ),
        (
            "invalid policy",
            Nodus::builder()
                .data_dir(&data)
                .master_key(master())
                .policy(PolicySources::new().with_system("system.toml", "[nope]\nx = 1\n")),
        ),
        ("duplicate command", builder().command(Ping).command(Ping)),
        (
            "unparseable minimum label",
            builder().json_command(CommandSpec::new("x.y").min_label("COSMIC"), |_, _| {
                Ok(serde_json::Value::Null)
            }),
        ),
        (
            "invalid component",
            builder().component(nodus_core::registry::components::ComponentSpec::new(
                "Bad Id",
                "x",
                serde_json::json!({}),
            )),
        ),
    ];
    for (what, b) in failures {
        assert!(b.build().is_err(), "{what} built");
        assert_back_to(baseline, what);
        assert!(!data.exists(), "{what}: the data directory was created");
    }
    let no_storage = Nodus::builder().master_key(master()).policy(sources(false));
    assert!(no_storage.build().is_err());
    assert_back_to(baseline, "no storage");

    // A good build starts the clock and the audit writer; shutdown joins them.
    let n = builder().command(Ping).build().unwrap();
    let running = threads();
    assert!(
        running.len() >= baseline + 2,
        "the clock and the audit writer: {running:?}"
    );
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    n.invoke::<Ping>(&alice, 1).unwrap();
    n.shutdown().unwrap();
    assert_back_to(baseline, "after shutdown()");
    drop(n);

    // The wrong master key for an existing vault: refused, nothing left running.
    let wrong = Nodus::builder()
        .data_dir(&data)
        .master_key(nodus_core::MasterKey::from_bytes([9; 32]))
        .policy(sources(false));
    assert!(wrong.build().is_err());
    assert_back_to(baseline, "wrong master key");

    // Dropping the last of several handles joins them too.
    let n = builder().command(Ping).build().unwrap();
    let clone = n.clone();
    drop(n);
    assert!(threads().len() >= baseline + 2, "a handle is still alive");
    drop(clone);
    assert_back_to(baseline, "after dropping the last handle");
    drop(alice);
}
