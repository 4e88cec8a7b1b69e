//! `fabric_tour`: the data fabric in one run, on the embedded defaults.
//!
//! ```sh
//! cargo run -p nodus-examples --example fabric_tour
//! ```
//!
//! Defines a type with a classified field, creates objects at two labels *with the same id*
//! (polyinstantiation), shows what a low and a high subject see (the hidden version is absent,
//! never forbidden), lists with a filter on an indexed field, shows an object's history, verifies
//! the event log's hash chains, and reads the state layer's cache report. Every step is a command
//! through the front door: guarded, audited.

// `serde_json::Value[...]` never panics (a missing key or index reads as `null`).
#![allow(clippy::indexing_slicing)]

use std::process::ExitCode;

use nodus_core::{ActorId, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::json;

const SYSTEM: &str = r#"
[mac]
levels = ["UNCLASSIFIED", "CONFIDENTIAL", "SECRET", "TOP SECRET"]

[audit]
durability = "normal"
"#;

const ACME: &str = r#"
[rbac.roles]
analyst = ["objects.*", "types.*"]
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fabric_tour: {e}");
            ExitCode::FAILURE
        }
    }
}

fn show(what: &str, value: &serde_json::Value) {
    println!("  {what}: {value}");
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let acme = TenantId::new("acme")?;
    let nodus = Nodus::builder()
        .data_dir(work.path())
        .master_key(MasterKey::from_bytes([42; 32])) // a demo key; use MasterKey::from_env in real hosts
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(acme.clone(), "tenants/acme.toml", ACME),
        )
        .build()?;
    let node = nodus.node();
    println!("Node {} (incarnation {})", node.node_id, node.incarnation);

    let high = {
        let s = nodus.subject(&acme, ActorId::new("hana")?, &["analyst"], "SECRET")?;
        nodus.context(&acme, s, "tour-high")
    };
    let low = {
        let s = nodus.subject(&acme, ActorId::new("lou")?, &["analyst"], "UNCLASSIFIED")?;
        nodus.context(&acme, s, "tour-low")
    };

    println!("\n1. A type with an indexed status and a SECRET-classified field");
    let doc = nodus.dispatch(
        &high,
        "types.define",
        &json!({
            "name": "case",
            "schema": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1},
                    "status": {"enum": ["open", "closed"]},
                    "source": {"type": "string"}
                },
                "required": ["title"]
            },
            "fields": {"status": {"indexed": true}, "source": {"classification": "SECRET"}}
        })
        .to_string(),
    )?;
    show("defined", &doc["name"]);

    println!("\n2. The same id at two labels (polyinstantiation)");
    let secret = nodus.dispatch(
        &high,
        "objects.create",
        r#"{"type":"case","id":"op-7","label":"SECRET","data":{"title":"Operation 7","status":"open","source":"an informant"}}"#,
    )?;
    show("SECRET version", &secret);
    // The low analyst writes the same id: it gets its own version, learning nothing.
    let cover = nodus.dispatch(
        &low,
        "objects.create",
        r#"{"type":"case","id":"op-7","data":{"title":"Routine audit","status":"closed"}}"#,
    )?;
    show("UNCLASSIFIED version", &cover);

    println!("\n3. What each subject sees");
    let get = r#"{"type":"case","id":"op-7"}"#;
    show(
        "hana (SECRET) gets",
        &nodus.dispatch(&high, "objects.get", get)?["data"],
    );
    show(
        "lou (UNCLASSIFIED) gets",
        &nodus.dispatch(&low, "objects.get", get)?["data"],
    );
    nodus.dispatch(
        &high,
        "objects.create",
        r#"{"type":"case","id":"op-8","label":"SECRET","data":{"title":"Operation 8","status":"open"}}"#,
    )?;
    let absent = nodus
        .dispatch(&low, "objects.get", r#"{"type":"case","id":"op-8"}"#)
        .err()
        .map(|e| e.code().to_owned());
    println!("  lou asks for op-8 (SECRET only): {absent:?} — absent, never forbidden");

    println!("\n4. A list with a filter on the indexed field, after the label selection");
    let query =
        json!({"type_name": "case", "filter": [{"field": "status", "op": "eq", "value": "open"}],
                       "sort": null, "limit": 10, "cursor": null})
        .to_string();
    for (who, ctx) in [("hana", &high), ("lou", &low)] {
        let page = nodus.dispatch(ctx, "objects.list", &query)?;
        let ids: Vec<&str> = page["items"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["id"].as_str()).collect())
            .unwrap_or_default();
        let count = nodus.dispatch(ctx, "objects.count", r#"{"type":"case"}"#)?;
        println!("  {who}: open cases {ids:?}, all cases {}", count["count"]);
    }

    println!("\n5. History and a stale update");
    nodus.dispatch(
        &high,
        "objects.update",
        r#"{"type":"case","id":"op-7","expected_version":1,"data":{"title":"Operation 7","status":"closed","source":"an informant"}}"#,
    )?;
    let stale = nodus
        .dispatch(
            &high,
            "objects.update",
            r#"{"type":"case","id":"op-7","expected_version":1,"data":{"title":"x"}}"#,
        )
        .err()
        .map(|e| e.to_string());
    println!("  a second writer with version 1: {stale:?}");
    let history = nodus.dispatch(&high, "objects.history", get)?;
    for entry in history.as_array().into_iter().flatten() {
        println!(
            "  {} {} v{}",
            entry["label"], entry["kind"], entry["version"]
        );
    }

    println!("\n6. Evidence");
    let report = nodus.verify_events(&acme)?;
    println!(
        "  event log: {} events in {} chain(s), {} problem(s)",
        report.events,
        report.chains,
        report.problems.len()
    );
    let audit = nodus.verify_audit()?;
    println!(
        "  audit log: {} records, valid = {}",
        audit.size, audit.valid
    );
    for cache in nodus.state_report() {
        println!(
            "  cache `{}`: {} entries, {} hits, {} misses",
            cache.name, cache.entries, cache.hits, cache.misses
        );
    }
    if !report.problems.is_empty() || !audit.valid {
        return Err("verification failed".into());
    }
    nodus.shutdown().map_err(|e| e.to_string())?;
    Ok(())
}
