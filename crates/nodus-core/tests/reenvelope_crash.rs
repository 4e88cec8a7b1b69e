//! Crash test of re-envelope jobs through the front door: a child process opens the data
//! directory (which resumes any job left running), starts a rotation with a re-envelope job in
//! small batches when none is running, and idles while the job's worker rewraps; the parent kills
//! it with SIGKILL at random moments. After each kill the parent reopens the directory and checks
//! that every value still opens to its plaintext, that the event log's chains verify, and that
//! rebuilding the projections from the log gives exactly what the crash left. At the end the
//! jobs run to completion: every job is `done` with nothing failed, and every ciphertext is
//! under the active key version.
//!
//! 20 kills in the default run; `reenvelope_crash_soak_200` (ignored) runs 200.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nodus_core::fabric::objects::Fabric;
use nodus_core::fabric::{Durability, SqliteEventLog};
use nodus_core::{Context, Nodus, PolicySources};
use serde_json::{Value, json};

const CHILD_ENV: &str = "NODUS_CORE_REENVELOPE_CRASH_DIR";
const VALUES: usize = 240;
const JOBS_FILE: &str = "jobs.txt";

const ACME: &str = r#"
[rbac.roles]
admin = ["*"]
[rate.limits]
default = { rate = 1000000, per = "1s", burst = 1000000 }
[security.fields]
allow_encrypted_read = ["admin"]
allow_encrypted_write = ["admin"]
max_bulk_decrypt = 1000
[security.keys]
allow_manual_rotation = ["admin"]
allow_reenvelope = ["admin"]
reenvelope_batch_size = 4
"#;

fn build(dir: &Path) -> Nodus {
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

fn call(n: &Nodus, c: &Context, cmd: &str, payload: Value) -> Value {
    n.dispatch(c, cmd, &payload.to_string())
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn jobs(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(JOBS_FILE))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The child role: resumes (by opening the directory), starts a job when none runs, then idles
/// while the worker rewraps, until it is killed.
#[test]
#[ignore]
fn reenvelope_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let n = build(&dir.join("data"));
    let c = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    let running = jobs(dir)
        .last()
        .is_some_and(|j| call(&n, &c, "jobs.status", json!({"job": j}))["state"] == "running");
    if !running {
        let started = call(&n, &c, "fields.rotate_keys", json!({"purpose": "fields"}));
        let id = started["job"]["job"].as_str().unwrap().to_owned();
        let mut all = jobs(dir);
        all.push(id);
        std::fs::write(dir.join(JOBS_FILE), all.join("\n")).unwrap();
    }
    std::thread::sleep(Duration::from_secs(60));
}

fn expected(i: usize) -> String {
    format!("secret value {i}")
}

fn ids() -> Vec<String> {
    (0..VALUES).map(|i| format!("c{i:03}")).collect()
}

/// Every value opens to its plaintext; returns the key versions the markers name.
fn check_values(n: &Nodus, c: &Context, when: &str) -> Vec<u64> {
    let d = call(
        n,
        c,
        "fields.decrypt",
        json!({"type": "client", "ids": ids(), "fields": ["notes"]}),
    );
    for (i, o) in d["objects"].as_array().unwrap().iter().enumerate() {
        assert_eq!(o["unreadable"], json!([]), "{when}: {o}");
        assert_eq!(o["values"]["notes"], expected(i), "{when}");
    }
    let page = call(
        n,
        c,
        "objects.list",
        json!({"type_name": "client", "filter": [], "sort": null, "limit": 1000, "cursor": null}),
    );
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["data"]["notes"]["version"].as_u64().unwrap())
        .collect()
}

fn crash_loop(kills: usize) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let node = {
        let n = build(&data);
        let c = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
        call(
            &n,
            &c,
            "types.define",
            json!({"name": "client",
                   "schema": {"type": "object", "properties": {"notes": {"type": "string"}}},
                   "fields": {"notes": {"encrypted": true}}}),
        );
        for (i, id) in ids().iter().enumerate() {
            call(
                &n,
                &c,
                "objects.create",
                json!({"type": "client", "id": id, "data": {"notes": expected(i)}}),
            );
        }
        let node = n.node();
        n.shutdown().unwrap();
        node
    };
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let started = Instant::now();
    let mut interrupted = 0usize;
    for iteration in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "reenvelope_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(40 + seed % 160));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Reopen (this resumes the job too) and check that nothing is unreadable.
        let n = build(&data);
        let report = n.verify_events(&tenant("acme")).unwrap();
        assert!(
            report.problems.is_empty(),
            "iteration {iteration}: {report:?}"
        );
        let c = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
        // Did the kill interrupt a job? (This instance resumed it, so it may be moving.)
        if let Some(j) = jobs(root.path()).last() {
            let s = call(&n, &c, "jobs.status", json!({"job": j}));
            if s["state"] == "running" && s["done"].as_u64() > Some(0) {
                interrupted += 1;
            }
        }
        check_values(&n, &c, &format!("iteration {iteration}"));
        n.shutdown().unwrap();
        drop(n);
        // Rebuilding the projections from the log gives exactly what the crash left.
        let log = SqliteEventLog::open(
            &data.join(nodus_core::FABRIC_FILE),
            node.node_id,
            Durability::Full,
        )
        .unwrap();
        let fabric = Fabric::new(Arc::new(log)).unwrap();
        let live = fabric.projection_rows(&tenant("acme")).unwrap();
        fabric.rebuild(&tenant("acme")).unwrap();
        assert_eq!(
            live,
            fabric.projection_rows(&tenant("acme")).unwrap(),
            "iteration {iteration}"
        );
    }
    // Every job runs to its end, and every ciphertext is under the active version.
    let n = build(&data);
    let c = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    let all = jobs(root.path());
    // Usually several jobs start over the run; on a loaded machine the first may outlive every
    // kill, so one is enough.
    assert!(!all.is_empty(), "no job started");
    let deadline = Instant::now() + Duration::from_secs(60);
    for j in &all {
        loop {
            let s = call(&n, &c, "jobs.status", json!({"job": j}));
            if s["state"] == "done" {
                assert_eq!(s["failed"], 0, "{s}");
                assert_eq!(s["done"], s["total"], "{s}");
                break;
            }
            assert_eq!(s["state"], "running", "{s}");
            assert!(Instant::now() < deadline, "job {j} did not finish: {s}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let keys = call(&n, &c, "keys.list", json!({}));
    let active = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active")
        .unwrap()["version"]
        .as_u64()
        .unwrap();
    // A child killed between starting a job and noting its id leaves one more rotation (and a
    // job that the restarts finish all the same).
    assert!(active > all.len() as u64, "{active}");
    loop {
        let versions = check_values(&n, &c, "the end");
        assert_eq!(versions.len(), VALUES);
        if versions.iter().all(|v| *v == active) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all under {active}: {versions:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    n.shutdown().unwrap();
    eprintln!(
        "{kills} kills ({interrupted} in the middle of a job) in {:?}",
        started.elapsed()
    );
    assert!(
        interrupted * 4 >= kills,
        "only {interrupted} of {kills} kills hit a job in progress"
    );
}

#[test]
fn a_killed_reenvelope_job_resumes_and_leaves_every_value_readable() {
    crash_loop(20);
}

#[test]
#[ignore]
fn reenvelope_crash_soak_200() {
    crash_loop(200);
}
