//! Crash test through the front door: a child process builds an instance on a data directory and
//! creates objects, printing each acknowledged id; the parent kills it with SIGKILL at random
//! moments, reopens the directory and checks that every acknowledged object is there, that the
//! event log's chains verify, that the audit log reopens and verifies, and that rebuilding the
//! projections from the log gives exactly the projections the crash left.
//!
//! 20 kills in the default run; `crash_soak_300` (ignored) runs 300.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nodus_core::fabric::objects::Fabric;
use nodus_core::fabric::{Durability, SqliteEventLog};
use nodus_core::{Nodus, PolicySources};
use serde_json::json;

const CHILD_ENV: &str = "NODUS_CORE_FABRIC_CRASH_DIR";

const ACME: &str = r#"
[rbac.roles]
admin = ["*"]
[rate.limits]
default = { rate = 1000000, per = "1s", burst = 1000000 }
"#;

fn build(dir: &Path) -> Nodus {
    // `durability = "full"`: an acknowledged create is on disk.
    Nodus::builder()
        .data_dir(dir)
        .master_key(master())
        .policy(
            PolicySources::new()
                .with_system("system.toml", "[audit]\ndurability = \"full\"\n")
                .with_tenant(tenant("acme"), "tenants/acme.toml", ACME),
        )
        .build()
        .unwrap()
}

/// The child role: creates objects forever, printing `ACK <id>` after each acknowledgement.
#[test]
#[ignore]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let n = build(Path::new(&dir));
    let c = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    let objects = n.objects(&c);
    let _ = objects.define_type(
        "case",
        json!({"type": "object", "properties": {"title": {"type": "string"}, "n": {"type": "integer"}}}),
        json!({"n": {"indexed": true}}),
    );
    let out = std::io::stdout();
    let pid = std::process::id();
    for i in 0u64.. {
        let id = format!("p{pid}-{i}");
        objects
            .create("case", Some(&id), None, json!({"title": "t", "n": i}))
            .unwrap();
        let mut o = out.lock();
        writeln!(o, "ACK {id}").unwrap();
        o.flush().unwrap();
    }
}

fn crash_loop(kills: usize) {
    let dir = tempfile::tempdir().unwrap();
    let node = {
        let n = build(dir.path());
        let node = n.node();
        n.shutdown().unwrap();
        node
    };
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    for iteration in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(60 + seed % 240));
        child.kill().unwrap(); // SIGKILL
        let stdout = child.stdout.take().unwrap();
        child.wait().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // Only whole lines count: the last one may be cut by the kill.
            if let Some(id) = line.strip_prefix("ACK ")
                && id.contains('-')
                && id
                    .rsplit('-')
                    .next()
                    .is_some_and(|n| n.parse::<u64>().is_ok())
            {
                acked.push(id.to_owned());
            }
        }
        // Reopen: the audit log (and its witness) and the event log accept what the crash left.
        let n = build(dir.path());
        assert!(
            n.verify_audit().unwrap().valid,
            "iteration {iteration}: the audit log does not verify"
        );
        let report = n.verify_events(&tenant("acme")).unwrap();
        assert!(
            report.problems.is_empty(),
            "iteration {iteration}: {report:?}"
        );
        let c = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
        if !acked.is_empty() {
            let objects = n.objects(&c);
            for id in &acked {
                objects.get("case", id).unwrap_or_else(|e| {
                    panic!("iteration {iteration}: acknowledged `{id}` lost: {e}")
                });
            }
        }
        n.shutdown().unwrap();
        drop(n);
        // Rebuilding the projections from the log gives exactly what the crash left.
        let log = SqliteEventLog::open(
            &dir.path().join(nodus_core::FABRIC_FILE),
            node.node_id,
            Durability::Full,
        )
        .unwrap();
        let fabric = Fabric::new(Arc::new(log)).unwrap();
        let live = fabric.projection_rows(&tenant("acme")).unwrap();
        fabric.rebuild(&tenant("acme")).unwrap();
        let rebuilt = fabric.projection_rows(&tenant("acme")).unwrap();
        assert_eq!(live, rebuilt, "iteration {iteration}");
    }
    assert!(
        acked.len() > kills,
        "only {} objects acknowledged",
        acked.len()
    );
}

#[test]
fn crash_never_loses_an_acknowledged_object() {
    crash_loop(20);
}

#[test]
#[ignore]
fn crash_soak_300() {
    crash_loop(300);
}
