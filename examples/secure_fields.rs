//! `secure_fields`: an encrypted custom field from write to shredding, through the front door.
//!
//! ```sh
//! cargo run -p nodus-examples --example secure_fields
//! ```
//!
//! A `client` type marks `ssn` encrypted and SECRET. A clerk writes clients (the value is sealed;
//! `data` keeps a marker); a decrypt without the reading role is refused, one by a cleared
//! officer succeeds. A key admin rotates the key with a re-envelope job and follows its progress;
//! then version 1, which no value names any more, is destroyed. Each step prints the audit records
//! it left. Exits non-zero if any expectation fails.

// `serde_json::Value[...]` never panics (a missing key or index reads as `null`).
#![allow(clippy::indexing_slicing)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nodus_core::{ActorId, Context, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::{Value, json};

const SYSTEM: &str = "[audit]\ndurability = \"normal\"\n";
const ACME: &str = r#"
[rbac.roles]
clerk = ["objects.*", "types.*", "fields.decrypt"]
officer = ["objects.get", "objects.get.*", "fields.decrypt"]
keyadmin = ["keys.*", "fields.rotate_keys", "jobs.*"]

[security.fields]
allow_encrypted_read = ["officer"]
allow_encrypted_write = ["clerk"]

[security.keys]
allow_manual_rotation = ["keyadmin"]
allow_reenvelope = ["keyadmin"]
reenvelope_batch_size = 10
"#;

fn call(n: &Nodus, c: &Context, cmd: &str, payload: Value) -> Result<Value, String> {
    n.dispatch(c, cmd, &payload.to_string())
        .map_err(|e| e.to_string())
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("expectation failed: {what}"))
    }
}

/// Prints the audit records written since `since` (their kind, outcome, reason and details).
fn show_audit(n: &Nodus, since: &mut u64) -> Result<(), String> {
    n.flush_audit().map_err(|e| e.to_string())?;
    let records = n.audit_log().tail(10_000).map_err(|e| e.to_string())?;
    for r in records.iter().filter(|r| r.seq >= *since) {
        let rec = &r.record;
        if rec.kind == "dispatch" {
            continue;
        }
        println!(
            "    audit #{:<3} {:<28} {:?}{} {:?}",
            r.seq,
            rec.kind,
            rec.outcome,
            rec.reason
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default(),
            rec.detail
        );
    }
    *since = records.last().map_or(*since, |r| r.seq + 1);
    Ok(())
}

fn run() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let acme = TenantId::new("acme").map_err(|e| e.to_string())?;
    let n = Nodus::builder()
        .data_dir(dir.path())
        .master_key(MasterKey::from_bytes([42; 32]))
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(acme.clone(), "tenants/acme.toml", ACME),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let session = |who: &str, roles: &[&str], clearance: &str| -> Result<Context, String> {
        let actor = ActorId::new(who).map_err(|e| e.to_string())?;
        let subject = n
            .subject(&acme, actor, roles, clearance)
            .map_err(|e| e.to_string())?;
        Ok(n.context(&acme, subject, format!("{who}-session")))
    };
    let clerk = session("carol", &["clerk"], "SECRET")?;
    let officer = session("olga", &["officer"], "SECRET")?;
    let keys = session("kim", &["keyadmin"], "UNCLASSIFIED")?;
    let mut since = 0;

    println!("1. a type with an encrypted field, and clients written by a clerk");
    call(
        &n,
        &clerk,
        "types.define",
        json!({"name": "client",
               "schema": {"type": "object", "properties": {"name": {"type": "string"}, "ssn": {"type": "string"}}},
               "fields": {"ssn": {"encrypted": true, "classification": "SECRET"}}}),
    )?;
    for i in 0..25 {
        call(
            &n,
            &clerk,
            "objects.create",
            json!({"type": "client", "id": format!("c{i:02}"), "data": {"name": format!("client {i}"), "ssn": format!("078-05-{:04}", 1120 + i)}}),
        )?;
    }
    let c0 = call(
        &n,
        &clerk,
        "objects.get",
        json!({"type": "client", "id": "c00"}),
    )?;
    println!("   objects.get shows a marker: {}", c0["data"]);
    expect(c0["data"]["ssn"]["_encrypted"] == true, "a marker in data")?;
    show_audit(&n, &mut since)?;

    println!("2. the clerk may write the field but not read it");
    let denied = call(
        &n,
        &clerk,
        "fields.decrypt",
        json!({"type": "client", "id": "c00", "fields": ["ssn"]}),
    );
    println!("   {}", denied.as_ref().err().map_or("?", String::as_str));
    expect(denied.is_err(), "the clerk's decrypt is refused")?;
    show_audit(&n, &mut since)?;

    println!("3. a cleared officer decrypts it (one audit record per field)");
    let ok = call(
        &n,
        &officer,
        "fields.decrypt",
        json!({"type": "client", "id": "c00", "fields": ["ssn"]}),
    )?;
    println!("   {}", ok["objects"][0]["values"]);
    expect(
        ok["objects"][0]["values"]["ssn"] == "078-05-1120",
        "the officer reads the value",
    )?;
    show_audit(&n, &mut since)?;

    println!("4. rotation with a re-envelope job, and its progress");
    let started = call(
        &n,
        &keys,
        "fields.rotate_keys",
        json!({"purpose": "fields"}),
    )?;
    let job = started["job"]["job"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!(
        "   rotated v{} -> v{}, job {job}",
        started["rotation"]["old_version"], started["rotation"]["new_version"]
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        let s = call(&n, &keys, "jobs.status", json!({"job": job}))?;
        let line = format!("{} {}", s["state"], s["progress"]);
        if line != last {
            println!("   job: {line}");
            last = line;
        }
        if s["state"] != "running" {
            expect(s["state"] == "done" && s["failed"] == 0, "the job is done")?;
            break;
        }
        expect(Instant::now() < deadline, "the job finishes")?;
        std::thread::sleep(Duration::from_millis(2));
    }
    show_audit(&n, &mut since)?;

    println!("5. version 1 names no value any more: destroy it (crypto-shredding)");
    let d = call(
        &n,
        &keys,
        "keys.destroy_version",
        json!({"purpose": "fields", "version": 1}),
    )?;
    println!("   destroyed: {d}");
    expect(d["unreadable"] == 0, "nothing made unreadable")?;
    let after = call(
        &n,
        &officer,
        "fields.decrypt",
        json!({"type": "client", "id": "c24", "fields": ["ssn"]}),
    )?;
    expect(
        after["objects"][0]["values"]["ssn"] == "078-05-1144",
        "values still open under version 2",
    )?;
    for k in call(&n, &keys, "keys.list", json!({}))?
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        println!(
            "   key {} v{} {} ({} encryptions)",
            k["purpose"], k["version"], k["state"], k["encryptions"]
        );
    }
    show_audit(&n, &mut since)?;
    n.shutdown().map_err(|e| e.to_string())?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secure_fields: {e}");
            ExitCode::FAILURE
        }
    }
}
