//! Encrypted fields and the key lifecycle through `dispatch`: sealing on write, every allowed and
//! refused decrypt with its audit records, context binding, rotation (by hand, by
//! `fields.rotate_keys` with its re-envelope job, by the schedule), shredding, the minimum
//! decryption version, the per-session cache, and the plaintext-grep over everything the
//! instance writes or emits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use nodus_core::registry::events::Scope;
use nodus_core::security::audit::{AuditRecord, Outcome};
use nodus_core::security::vault::{EnvelopeContext, KeyScope};
use nodus_core::{Context, Nodus, NodusBuilder, PolicySources};
use serde_json::{Value, json};

/// A plaintext that must appear nowhere but in `fields.decrypt`'s answer.
const MARKER: &str = "PLAINTEXT-7f3a9c-do-not-leak";

fn tenant_policy(extra: &str) -> String {
    format!(
        r#"
[rbac.roles]
admin = ["*"]
writer = ["objects.*"]
clerk = ["objects.*", "fields.decrypt"]
reader = ["objects.get", "objects.get.*", "fields.decrypt"]
keyadmin = ["keys.*", "fields.rotate_keys", "jobs.*"]

[rate.limits]
default = {{ rate = 1000000, per = "1s", burst = 1000000 }}

[security.fields]
allow_encrypted_read = ["reader", "admin"]
allow_encrypted_write = ["writer", "admin"]

[security.keys]
allow_manual_rotation = ["keyadmin", "admin", "platform"]
allow_reenvelope = ["keyadmin", "admin"]
reenvelope_batch_size = 7
{extra}
"#
    )
}

const SYSTEM_TOML: &str = r#"
[mac]
compartments = ["CRYPTO"]

[audit]
durability = "normal"
checkpoint_every = 64
checkpoint_interval = "50ms"

[rbac.roles]
platform = ["system.keys.force_destroy", "keys.*"]
"#;

fn sources(extra: &str) -> PolicySources {
    PolicySources::new()
        .with_system("system.toml", SYSTEM_TOML)
        .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_policy(extra))
        .with_tenant(tenant("globex"), "tenants/globex.toml", &tenant_policy(""))
}

fn builder(extra: &str) -> NodusBuilder {
    Nodus::builder().master_key(master()).policy(sources(extra))
}

fn build(extra: &str) -> Nodus {
    builder(extra).in_memory().build().unwrap()
}

fn call(n: &Nodus, c: &Context, cmd: &str, payload: Value) -> Result<Value, (String, String)> {
    n.dispatch(c, cmd, &payload.to_string())
        .map_err(|e| (e.code().to_owned(), e.to_string()))
}

fn as_(n: &Nodus, who: &str, roles: &[&str], clearance: &str) -> Context {
    ctx(n, "acme", who, roles, clearance)
}

fn define(n: &Nodus, admin: &Context) {
    call(
        n,
        admin,
        "types.define",
        json!({
            "name": "client",
            "schema": {"type": "object", "properties": {
                "name": {"type": "string"},
                "ssn": {"type": "string", "maxLength": 64},
                "notes": {"type": "string"},
                "pin": {"type": "string"}
            }, "required": ["name"]},
            "fields": {
                "ssn": {"encrypted": true, "classification": "SECRET"},
                "notes": {"encrypted": true},
                "pin": {"encrypted": true, "key_purpose": "pins"}
            }
        }),
    )
    .unwrap();
}

/// Every audit record of `kind` so far.
fn audits(n: &Nodus, kind: &str) -> Vec<AuditRecord> {
    n.flush_audit().unwrap();
    n.audit_log()
        .tail(100_000)
        .unwrap()
        .into_iter()
        .map(|s| s.record)
        .filter(|r| r.kind == kind)
        .collect()
}

fn decrypt(n: &Nodus, c: &Context, id: &str, fields: &[&str]) -> Result<Value, (String, String)> {
    call(
        n,
        c,
        "fields.decrypt",
        json!({"type": "client", "id": id, "fields": fields}),
    )
    .map(|v| v["objects"][0].clone())
}

fn create(n: &Nodus, c: &Context, id: &str, data: Value) -> Value {
    call(
        n,
        c,
        "objects.create",
        json!({"type": "client", "id": id, "data": data}),
    )
    .unwrap()
}

fn wait_job(n: &Nodus, c: &Context, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = call(n, c, "jobs.status", json!({"job": job})).unwrap();
        if s["state"] != "running" {
            return s;
        }
        assert!(Instant::now() < deadline, "job did not finish: {s}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_write_seals_the_value_and_data_keeps_only_a_marker() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    let v = create(
        &n,
        &admin,
        "c1",
        json!({"name": "Ann", "ssn": "123-45-6789"}),
    );
    let m = &v["data"]["ssn"];
    assert_eq!(m["_encrypted"], true);
    assert_eq!(m["version"], 1);
    assert!(m["key"].as_str().unwrap().starts_with('k'));
    assert!(!v.to_string().contains("123-45-6789"));
    let got = call(
        &n,
        &admin,
        "objects.get",
        json!({"type": "client", "id": "c1"}),
    )
    .unwrap();
    assert_eq!(got["data"]["ssn"], *m);
    assert_eq!(got["data"]["name"], "Ann");
    // One key per purpose, made on first use.
    let keys = call(&n, &admin, "keys.list", json!({})).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["purpose"], "fields");
    assert_eq!(keys[0]["encryptions"], 1);
    create(&n, &admin, "c2", json!({"name": "Bob", "pin": "0000"}));
    let keys = call(&n, &admin, "keys.list", json!({})).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    // The schema is applied to the plaintext, and the error names the path only.
    let (code, msg) = call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "client", "id": "c3", "data": {"name": "C", "ssn": "x".repeat(65)}}),
    )
    .unwrap_err();
    assert_eq!(code, "Invalid");
    assert!(msg.contains("/ssn") && !msg.contains("xxxx"), "{msg}");
    // Encrypted fields are never filtered on.
    let (code, _) = call(
        &n,
        &admin,
        "objects.list",
        json!({"type_name": "client", "filter": [{"field": "ssn", "op": "eq", "value": "1"}],
               "sort": null, "limit": 10, "cursor": null}),
    )
    .unwrap_err();
    assert_eq!(code, "FilterEncrypted");
}

#[test]
fn writing_an_encrypted_field_needs_allow_encrypted_write() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    let clerk = as_(&n, "cleo", &["clerk"], "SECRET");
    let (code, msg) = call(
        &n,
        &clerk,
        "objects.create",
        json!({"type": "client", "id": "c1", "data": {"name": "A", "ssn": MARKER}}),
    )
    .unwrap_err();
    assert_eq!(code, "EncryptedWriteDenied");
    assert!(msg.contains("`ssn`") && !msg.contains(MARKER), "{msg}");
    // Plain fields are fine, and so is giving the stored marker back unchanged.
    let v = create(&n, &admin, "c2", json!({"name": "A", "ssn": "s"}));
    let mut data = v["data"].clone();
    data["name"] = json!("B");
    let u = call(
        &n,
        &clerk,
        "objects.update",
        json!({"type": "client", "id": "c2", "expected_version": 1, "data": data}),
    )
    .unwrap();
    assert_eq!(u["data"]["ssn"], v["data"]["ssn"]);
    // Removing the value is a write of the field too.
    let (code, _) = call(
        &n,
        &clerk,
        "objects.update",
        json!({"type": "client", "id": "c2", "expected_version": 2, "data": {"name": "B"}}),
    )
    .unwrap_err();
    assert_eq!(code, "EncryptedWriteDenied");
    // Every refusal is audited by dispatch with its code.
    let denied: Vec<_> = audits(&n, "dispatch")
        .into_iter()
        .filter(|r| r.reason.as_deref() == Some("EncryptedWriteDenied"))
        .collect();
    assert_eq!(denied.len(), 2);
}

#[test]
fn an_unchanged_value_is_not_resealed() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    let v = create(&n, &admin, "c1", json!({"name": "A", "notes": "same"}));
    let encryptions =
        || call(&n, &admin, "keys.list", json!({})).unwrap()[0]["encryptions"].clone();
    assert_eq!(encryptions(), 1);
    // The same plaintext again: the stored envelope and marker stay.
    let u = call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "client", "id": "c1", "expected_version": 1,
               "data": {"name": "B", "notes": "same"}}),
    )
    .unwrap();
    assert_eq!(u["data"]["notes"], v["data"]["notes"]);
    assert_eq!(encryptions(), 1);
    let h = call(
        &n,
        &admin,
        "objects.history",
        json!({"type": "client", "id": "c1"}),
    )
    .unwrap();
    assert!(
        h[1]["set"].get("notes").is_none(),
        "the update changed only `name`: {h}"
    );
    // Another plaintext: sealed anew.
    call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "client", "id": "c1", "expected_version": 2,
               "data": {"name": "B", "notes": "changed"}}),
    )
    .unwrap();
    assert_eq!(encryptions(), 2);
    let d = decrypt(&n, &admin, "c1", &["notes"]).unwrap();
    assert_eq!(d["values"]["notes"], "changed");
}

#[test]
fn decrypt_is_allowed_only_to_listed_roles_with_clearance_and_each_field_is_audited() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    // At UNCLASSIFIED, so that an uncleared reader sees the object (but not its SECRET field).
    let low_writer = as_(&n, "root", &["admin"], "UNCLASSIFIED");
    create(
        &n,
        &low_writer,
        "c1",
        json!({"name": "A", "ssn": "111", "notes": "n1"}),
    );
    // A role without `allow_encrypted_read` (the guard admits `fields.decrypt`).
    let clerk = as_(&n, "cleo", &["clerk"], "SECRET");
    let (code, _) = decrypt(&n, &clerk, "c1", &["ssn", "notes"]).unwrap_err();
    assert_eq!(code, "MissingRole");
    let denied = audits(&n, "fields.decrypt_denied");
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|r| r.outcome == Outcome::Denied
        && r.reason.as_deref() == Some("MissingRole")
        && r.actor.as_ref().unwrap().as_str() == "cleo"));
    // A role that lacks the command's permission is refused by the guard.
    let writer = as_(&n, "wes", &["writer"], "SECRET");
    let (code, _) = decrypt(&n, &writer, "c1", &["notes"]).unwrap_err();
    assert_eq!(code, "MissingPermission");
    // A reader below the field's classification: that field refused, the other decrypted.
    let low = as_(&n, "rita", &["reader"], "UNCLASSIFIED");
    let d = decrypt(&n, &low, "c1", &["ssn", "notes"]).unwrap();
    assert_eq!(d["values"], json!({"notes": "n1"}));
    assert_eq!(
        d["denied"],
        json!([{"field": "ssn", "code": "ClearanceTooLow"}])
    );
    let denied = audits(&n, "fields.decrypt_denied");
    assert_eq!(denied.len(), 3);
    assert_eq!(denied[2].reason.as_deref(), Some("ClearanceTooLow"));
    assert_eq!(denied[2].detail["field"], "ssn");
    // Cleared: both, one audit record each, naming the key version and never the value.
    let high = as_(&n, "sam", &["reader"], "SECRET");
    let d = decrypt(&n, &high, "c1", &["ssn", "notes"]).unwrap();
    assert_eq!(d["values"], json!({"ssn": "111", "notes": "n1"}));
    let ok = audits(&n, "fields.decrypt");
    assert_eq!(ok.len(), 3);
    for r in &ok {
        assert_eq!(r.outcome, Outcome::Allowed);
        assert_eq!(r.detail["version"], "1");
        assert!(!format!("{r:?}").contains("111"));
    }
    // A field that is not encrypted, or an object that is absent: clear errors.
    let (code, _) = decrypt(&n, &high, "c1", &["name"]).unwrap_err();
    assert_eq!(code, "NotEncrypted");
    let (code, _) = decrypt(&n, &high, "nope", &["ssn"]).unwrap_err();
    assert_eq!(code, "NotFound");
    // A field without a value is reported missing.
    let d = decrypt(&n, &high, "c1", &["pin"]).unwrap();
    assert_eq!(d["missing"], json!(["pin"]));
}

#[test]
fn bulk_decrypt_only_up_to_the_policy_cap() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    for i in 0..3 {
        create(
            &n,
            &admin,
            &format!("c{i}"),
            json!({"name": "A", "notes": format!("n{i}")}),
        );
    }
    let bulk = json!({"type": "client", "ids": ["c0", "c1"], "fields": ["notes"]});
    let (code, _) = call(&n, &admin, "fields.decrypt", bulk.clone()).unwrap_err();
    assert_eq!(code, "BulkDecryptDenied");
    let denied = audits(&n, "fields.decrypt_denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].reason.as_deref(), Some("BulkLimit"));

    // Policy allowing two objects per call.
    let n = Nodus::builder()
        .master_key(master())
        .in_memory()
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM_TOML)
                .with_tenant(
                    tenant("acme"),
                    "tenants/acme.toml",
                    &tenant_policy("").replace(
                        "allow_encrypted_write = [\"writer\", \"admin\"]",
                        "allow_encrypted_write = [\"writer\", \"admin\"]\nmax_bulk_decrypt = 2",
                    ),
                ),
        )
        .build()
        .unwrap();
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    for i in 0..3 {
        create(
            &n,
            &admin,
            &format!("c{i}"),
            json!({"name": "A", "notes": format!("n{i}")}),
        );
    }
    let d = call(&n, &admin, "fields.decrypt", bulk).unwrap();
    assert_eq!(d["objects"][1]["values"]["notes"], "n1");
    assert_eq!(audits(&n, "fields.decrypt").len(), 2);
    let (code, _) = call(
        &n,
        &admin,
        "fields.decrypt",
        json!({"type": "client", "ids": ["c0", "c1", "c2"], "fields": ["notes"]}),
    )
    .unwrap_err();
    assert_eq!(code, "BulkDecryptDenied");
    // Naming no object, or both forms, is bad input.
    for bad in [
        json!({"type": "client", "fields": ["notes"]}),
        json!({"type": "client", "id": "c0", "ids": ["c1"], "fields": ["notes"]}),
    ] {
        let (code, _) = call(&n, &admin, "fields.decrypt", bad).unwrap_err();
        assert_eq!(code, "InvalidInput");
    }
}

#[test]
fn a_ciphertext_opens_only_in_its_own_context() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let n = builder("").data_dir(&data).build().unwrap();
    let node = n.node();
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    let v = create(&n, &admin, "c1", json!({"name": "A", "notes": "bound"}));
    create(&n, &admin, "c2", json!({"name": "B"}));
    // Copying the marker to another object is refused (a marker is never a value).
    let (code, _) = call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "client", "id": "c2", "expected_version": 1,
               "data": {"name": "B", "notes": v["data"]["notes"]}}),
    )
    .unwrap_err();
    assert_eq!(code, "BadMarker");
    let g = ctx(&n, "globex", "root", &["admin"], "SECRET");
    define(&n, &g);
    create(&n, &g, "c1", json!({"name": "G", "notes": "theirs"}));
    // The stored envelope, read from the fabric's own file.
    let log = nodus_core::fabric::SqliteEventLog::open(
        &data.join(nodus_core::FABRIC_FILE),
        node.node_id,
        nodus_core::fabric::Durability::Full,
    )
    .unwrap();
    let fabric = nodus_core::fabric::objects::Fabric::new(Arc::new(log)).unwrap();
    let acme = tenant("acme");
    let snap = n.policy().snapshot(&acme).unwrap();
    let subj = n
        .subject(&acme, actor("root"), &["admin"], "SECRET")
        .unwrap();
    let (_, _, envs) = fabric
        .sealed_fields(&acme, &snap, &subj, "client", "c1", &["notes".into()])
        .unwrap();
    let env = envs[0].1.clone().unwrap();
    let globex = tenant("globex");
    let vault = n.vault();
    assert_eq!(
        &*vault
            .open(
                &env,
                &EnvelopeContext::tenant(&acme, "client", "c1", "notes")
            )
            .unwrap(),
        b"\"bound\""
    );
    // Another object, field or type of the same tenant: not authentic.
    for other in [
        EnvelopeContext::tenant(&acme, "client", "c2", "notes"),
        EnvelopeContext::tenant(&acme, "client", "c1", "ssn"),
        EnvelopeContext::tenant(&acme, "case", "c1", "notes"),
    ] {
        assert_eq!(
            vault.open(&env, &other).unwrap_err().code(),
            "Authentication"
        );
    }
    // Another tenant: refused before any cryptography.
    assert_eq!(
        vault
            .open(
                &env,
                &EnvelopeContext::tenant(&globex, "client", "c1", "notes")
            )
            .unwrap_err()
            .code(),
        "ScopeMismatch"
    );
    // Each tenant reads its own value.
    assert_eq!(
        decrypt(&n, &g, "c1", &["notes"]).unwrap()["values"]["notes"],
        "theirs"
    );
    assert_eq!(
        decrypt(&n, &admin, "c1", &["notes"]).unwrap()["values"]["notes"],
        "bound"
    );
}

#[test]
fn rotation_never_makes_a_value_unreadable_and_is_audited() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    create(&n, &admin, "old", json!({"name": "A", "notes": "v1 value"}));
    let keyadmin = ctx(&n, "acme", "kim", &["keyadmin"], "SECRET");
    let r = call(&n, &keyadmin, "keys.rotate", json!({"purpose": "fields"})).unwrap();
    assert_eq!(r["old_version"], 1);
    assert_eq!(r["new_version"], 2);
    assert_eq!(r["alg"], "xchacha20poly1305");
    let rec = audits(&n, "keys.rotated");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].actor.as_ref().unwrap().as_str(), "kim");
    assert_eq!(rec[0].detail["purpose"], "fields");
    assert_eq!(rec[0].detail["old_version"], "1");
    assert_eq!(rec[0].detail["new_version"], "2");
    assert_eq!(rec[0].detail["alg"], "xchacha20poly1305");
    // The old value still opens; a new write seals under version 2.
    let d = decrypt(&n, &admin, "old", &["notes"]).unwrap();
    assert_eq!(d["values"]["notes"], "v1 value");
    let v = create(&n, &admin, "new", json!({"name": "B", "notes": "v2 value"}));
    assert_eq!(v["data"]["notes"]["version"], 2);
    let d = decrypt(&n, &admin, "new", &["notes"]).unwrap();
    assert_eq!(d["values"]["notes"], "v2 value");
    // An unknown purpose is a clear error.
    let (code, _) = call(&n, &admin, "keys.rotate", json!({"purpose": "nope"})).unwrap_err();
    assert_eq!(code, "UnknownKey");
}

#[test]
fn key_commands_are_refused_without_the_policy_roles_and_each_refusal_is_audited() {
    // `keyuser` holds every key command's permission but no role in the policy lists.
    let n = {
        let n = Nodus::builder()
            .master_key(master())
            .in_memory()
            .policy(
                PolicySources::new()
                    .with_system("system.toml", SYSTEM_TOML)
                    .with_tenant(
                        tenant("acme"),
                        "tenants/acme.toml",
                        &tenant_policy("").replace(
                            "keyadmin = [",
                            "keyuser = [\"keys.*\", \"fields.rotate_keys\", \"jobs.*\"]\nkeyadmin = [",
                        ),
                    ),
            )
            .build()
            .unwrap();
        let admin = as_(&n, "root", &["admin"], "SECRET");
        define(&n, &admin);
        create(&n, &admin, "c1", json!({"name": "A", "notes": "x"}));
        n
    };
    let k = as_(&n, "kay", &["keyuser"], "SECRET");
    let cases = [
        (
            "keys.rotate",
            json!({"purpose": "fields"}),
            "keys.rotate_denied",
        ),
        (
            "keys.destroy_version",
            json!({"purpose": "fields", "version": 1}),
            "keys.destroy_denied",
        ),
        (
            "keys.min_decryption_version",
            json!({"purpose": "fields", "version": 1}),
            "keys.min_decryption_version_denied",
        ),
        (
            "fields.rotate_keys",
            json!({"purpose": "fields"}),
            "fields.reenvelope_denied",
        ),
        (
            "jobs.cancel",
            json!({"job": "j0"}),
            "fields.reenvelope_denied",
        ),
    ];
    for (cmd, payload, kind) in cases {
        let (code, _) = call(&n, &k, cmd, payload).unwrap_err();
        assert_eq!(code, "MissingRole", "{cmd}");
        let recs = audits(&n, kind);
        let last = recs
            .last()
            .unwrap_or_else(|| panic!("{cmd}: no `{kind}` record"));
        assert_eq!(last.outcome, Outcome::Denied);
        assert_eq!(last.reason.as_deref(), Some("MissingRole"));
        assert_eq!(last.actor.as_ref().unwrap().as_str(), "kay");
    }
    // `keys.list` is metadata only: the permission suffices.
    let keys = call(&n, &k, "keys.list", json!({})).unwrap();
    assert_eq!(keys[0]["version"], 1);
    assert!(keys[0].get("material").is_none());
    // Nothing rotated.
    assert!(audits(&n, "keys.rotated").is_empty());
}

#[test]
fn fields_rotate_keys_starts_a_job_that_rewraps_every_value_in_audited_batches() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    for i in 0..30 {
        create(
            &n,
            &admin,
            &format!("c{i:02}"),
            json!({"name": "A", "notes": format!("note {i}"), "ssn": format!("ssn {i}")}),
        );
    }
    let mut sub = n
        .events()
        .subscribe("jobs.*", Scope::Tenant(tenant("acme")), 1000)
        .unwrap();
    let started = call(
        &n,
        &admin,
        "fields.rotate_keys",
        json!({"purpose": "fields"}),
    )
    .unwrap();
    assert_eq!(started["rotation"]["new_version"], 2);
    let job = started["job"]["job"].as_str().unwrap().to_owned();
    assert_eq!(started["job"]["total"], 60);
    assert_eq!(started["job"]["batch_size"], 7);
    let s = wait_job(&n, &admin, &job);
    assert_eq!(s["state"], "done");
    assert_eq!(s["done"], 60);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["progress"], "60/60");
    // 60 values in batches of 7: 9 batches, then an empty one that finishes the job.
    let batches = audits(&n, "fields.reenvelope");
    assert_eq!(batches.len(), 10);
    let sum: u64 = batches
        .iter()
        .map(|r| r.detail["rewrapped"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, 60);
    assert_eq!(batches.last().unwrap().detail["state"], "done");
    assert_eq!(audits(&n, "fields.reenvelope_started").len(), 1);
    let progress = sub.drain();
    assert_eq!(progress.len(), 10);
    assert_eq!(progress.last().unwrap().payload["progress"], "60/60");
    let _ = &mut sub;
    // Every value opens, under version 2, and every marker says so.
    for i in 0..30 {
        let id = format!("c{i:02}");
        let d = decrypt(&n, &admin, &id, &["notes", "ssn"]).unwrap();
        assert_eq!(d["values"]["notes"], format!("note {i}"));
        let got = call(
            &n,
            &admin,
            "objects.get",
            json!({"type": "client", "id": id}),
        )
        .unwrap();
        assert_eq!(got["data"]["notes"]["version"], 2, "{got}");
    }
    // Version 1 names nothing now: it can be destroyed, making nothing unreadable.
    let d = call(
        &n,
        &admin,
        "keys.destroy_version",
        json!({"purpose": "fields", "version": 1}),
    )
    .unwrap();
    assert_eq!(d["unreadable"], 0);
    let d = decrypt(&n, &admin, "c07", &["notes"]).unwrap();
    assert_eq!(d["values"]["notes"], "note 7");
    // A job of another tenant is not found.
    let g = ctx(&n, "globex", "root", &["admin"], "SECRET");
    let (code, _) = call(&n, &g, "jobs.status", json!({"job": job})).unwrap_err();
    assert_eq!(code, "JobNotFound");
}

/// Roles set by the system layer (a tenant file that sets `rbac.roles` cannot reach a `system.`
/// permission): `platform` may force a destruction, `admin` may not.
fn build_with_system_roles() -> Nodus {
    let system = format!(
        "{SYSTEM_TOML}\nadmin = [\"objects.*\", \"types.*\", \"fields.*\", \"keys.*\", \"jobs.*\"]\n"
    );
    let acme = tenant_policy("");
    let acme = &acme[acme.find("[security.fields]").unwrap()..];
    Nodus::builder()
        .master_key(master())
        .in_memory()
        .policy(
            PolicySources::new()
                .with_system("system.toml", &system)
                .with_tenant(tenant("acme"), "tenants/acme.toml", acme),
        )
        .build()
        .unwrap()
}

#[test]
fn shredding_makes_exactly_the_values_of_that_version_unreadable() {
    let n = build_with_system_roles();
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    for i in 0..4 {
        create(
            &n,
            &admin,
            &format!("a{i}"),
            json!({"name": "A", "notes": format!("v1-{i}")}),
        );
    }
    call(&n, &admin, "keys.rotate", json!({"purpose": "fields"})).unwrap();
    for i in 0..3 {
        create(
            &n,
            &admin,
            &format!("b{i}"),
            json!({"name": "B", "notes": format!("v2-{i}")}),
        );
    }
    // Refused while version 1 still seals four values.
    let (code, msg) = call(
        &n,
        &admin,
        "keys.destroy_version",
        json!({"purpose": "fields", "version": 1}),
    )
    .unwrap_err();
    assert_eq!(code, "VersionInUse");
    assert!(
        msg.contains(": 4 stored value(s) are sealed under version 1"),
        "{msg}"
    );
    // Forcing needs the system permission: a tenant admin's `*` does not grant it.
    let (code, _) = call(
        &n,
        &admin,
        "keys.destroy_version",
        json!({"purpose": "fields", "version": 1, "force": true}),
    )
    .unwrap_err();
    assert_eq!(code, "ForceDenied");
    let denied = audits(&n, "keys.destroy_denied");
    assert_eq!(
        denied
            .iter()
            .map(|r| r.reason.as_deref().unwrap())
            .collect::<Vec<_>>(),
        ["VersionInUse", "ForceDenied"]
    );
    assert_eq!(denied[0].detail["in_use"], "4");
    // The platform operator (system layer) may force it.
    let platform = as_(&n, "op", &["platform"], "SECRET");
    let d = call(
        &n,
        &platform,
        "keys.destroy_version",
        json!({"purpose": "fields", "version": 1, "force": true}),
    )
    .unwrap();
    assert_eq!(d["unreadable"], 4);
    let rec = audits(&n, "keys.version_destroyed");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].detail["unreadable"], "4");
    assert_eq!(rec[0].detail["forced"], "true");
    // Exactly the four version-1 values are gone; the version-2 ones open.
    for i in 0..4 {
        let d = decrypt(&n, &admin, &format!("a{i}"), &["notes"]).unwrap();
        assert_eq!(
            d["unreadable"],
            json!([{"field": "notes", "code": "KeyDestroyed"}])
        );
    }
    for i in 0..3 {
        let d = decrypt(&n, &admin, &format!("b{i}"), &["notes"]).unwrap();
        assert_eq!(d["values"]["notes"], format!("v2-{i}"));
    }
    let failed: Vec<_> = audits(&n, "fields.decrypt")
        .into_iter()
        .filter(|r| r.outcome == Outcome::Error)
        .collect();
    assert_eq!(failed.len(), 4);
    assert!(
        failed
            .iter()
            .all(|r| r.reason.as_deref() == Some("KeyDestroyed"))
    );
    // The active version is never destroyed.
    let (code, _) = call(
        &n,
        &admin,
        "keys.destroy_version",
        json!({"purpose": "fields", "version": 2, "force": true}),
    )
    .unwrap_err();
    assert!(code == "ForceDenied" || code == "InvalidState", "{code}");
}

#[test]
fn min_decryption_version_stops_older_versions_and_is_reversible() {
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    create(&n, &admin, "a", json!({"name": "A", "notes": "one"}));
    call(&n, &admin, "keys.rotate", json!({"purpose": "fields"})).unwrap();
    create(&n, &admin, "b", json!({"name": "B", "notes": "two"}));
    let v = call(
        &n,
        &admin,
        "keys.min_decryption_version",
        json!({"purpose": "fields", "version": 2}),
    )
    .unwrap();
    assert_eq!(v[0]["state"], "disabled");
    assert_eq!(v[1]["state"], "active");
    let d = decrypt(&n, &admin, "a", &["notes"]).unwrap();
    assert_eq!(d["unreadable"][0]["code"], "KeyDisabled");
    assert_eq!(
        decrypt(&n, &admin, "b", &["notes"]).unwrap()["values"]["notes"],
        "two"
    );
    // Back to 1: readable again.
    call(
        &n,
        &admin,
        "keys.min_decryption_version",
        json!({"purpose": "fields", "version": 1}),
    )
    .unwrap();
    assert_eq!(
        decrypt(&n, &admin, "a", &["notes"]).unwrap()["values"]["notes"],
        "one"
    );
    let rec = audits(&n, "keys.min_decryption_version");
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[0].detail["disabled"], "1");
    assert_eq!(rec[1].detail["enabled"], "1");
    let (code, _) = call(
        &n,
        &admin,
        "keys.min_decryption_version",
        json!({"purpose": "fields", "version": 3}),
    )
    .unwrap_err();
    assert_eq!(code, "InvalidVersion");
}

#[test]
fn the_session_cache_follows_its_ttl_and_is_flushed_on_rotation_and_session_end() {
    let n = build("[state.cache.fields]\nttl_secs = 60\n");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    create(&n, &admin, "a", json!({"name": "A", "notes": "cached"}));
    let cached = |n: &Nodus| -> Vec<String> {
        audits(n, "fields.decrypt")
            .into_iter()
            .map(|r| r.detail["cached"].clone())
            .collect()
    };
    decrypt(&n, &admin, "a", &["notes"]).unwrap();
    decrypt(&n, &admin, "a", &["notes"]).unwrap();
    assert_eq!(cached(&n), ["false", "true"]);
    // Another session does not share it.
    let other = n.context(
        &tenant("acme"),
        n.subject(&tenant("acme"), actor("root"), &["admin"], "SECRET")
            .unwrap(),
        "session-2",
    );
    decrypt(&n, &other, "a", &["notes"]).unwrap();
    assert_eq!(cached(&n)[2], "false");
    // Rotation flushes it.
    call(&n, &admin, "keys.rotate", json!({"purpose": "fields"})).unwrap();
    decrypt(&n, &admin, "a", &["notes"]).unwrap();
    assert_eq!(cached(&n)[3], "false");
    decrypt(&n, &admin, "a", &["notes"]).unwrap();
    assert_eq!(cached(&n)[4], "true");
    // Session end flushes it.
    n.end_session(&admin);
    decrypt(&n, &admin, "a", &["notes"]).unwrap();
    assert_eq!(cached(&n)[5], "false");
    // A new value is never answered from the cache.
    call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "client", "id": "a", "expected_version": 1, "data": {"name": "A", "notes": "new"}}),
    )
    .unwrap();
    let d = decrypt(&n, &admin, "a", &["notes"]).unwrap();
    assert_eq!(d["values"]["notes"], "new");
    assert_eq!(cached(&n)[6], "false");
    // TTL 0 (the default): never cached.
    let n = build("");
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    create(&n, &admin, "a", json!({"name": "A", "notes": "x"}));
    decrypt(&n, &admin, "a", &["notes"]).unwrap();
    decrypt(&n, &admin, "a", &["notes"]).unwrap();
    assert_eq!(cached(&n), ["false", "false"]);
}

#[test]
fn keys_list_warns_near_the_usage_limit() {
    let n = builder("").in_memory().key_usage_limit(10).build().unwrap();
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    let mut sub = n
        .events()
        .subscribe("keys.*", Scope::Tenant(tenant("acme")), 100)
        .unwrap();
    for i in 0..7 {
        create(
            &n,
            &admin,
            &format!("c{i}"),
            json!({"name": "A", "notes": "x"}),
        );
    }
    let keys = call(&n, &admin, "keys.list", json!({})).unwrap();
    assert_eq!(keys[0]["usage_warning"], false);
    create(&n, &admin, "c8", json!({"name": "A", "notes": "x"}));
    let keys = call(&n, &admin, "keys.list", json!({})).unwrap();
    assert_eq!(keys[0]["usage_warning"], true);
    assert_eq!(keys[0]["encryptions"], 8);
    assert_eq!(keys[0]["usage_limit"], 10);
    let rec = audits(&n, "keys.usage_warning");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].detail["used"], "8");
    let ev = sub.drain();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].topic.as_ref(), "keys.usage_warning");
    let _ = &mut sub;
}

#[test]
fn the_schedule_rotates_keys_older_than_rotation_days_with_an_injected_clock() {
    let now = Arc::new(AtomicU64::new(0));
    let clock = now.clone();
    let n = builder("")
        .in_memory()
        .key_rotation_schedule_with_clock(Duration::from_millis(5), move || {
            clock.load(Ordering::SeqCst)
        })
        .build()
        .unwrap();
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    create(&n, &admin, "a", json!({"name": "A", "notes": "kept"}));
    let created = call(&n, &admin, "keys.list", json!({})).unwrap()[0]["created_ms"]
        .as_u64()
        .unwrap();
    // 89 days later (the default is 90): nothing.
    now.store(created + 89 * 86_400_000, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(60));
    assert!(audits(&n, "keys.rotate_scheduled").is_empty());
    // 91 days later: rotated once, with a re-envelope job.
    now.store(created + 91 * 86_400_000, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while audits(&n, "keys.rotate_scheduled").is_empty() {
        assert!(Instant::now() < deadline, "the schedule did not rotate");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rec = audits(&n, "keys.rotate_scheduled");
    assert_eq!(rec[0].detail["old_version"], "1");
    assert_eq!(rec[0].detail["new_version"], "2");
    assert_eq!(rec[0].detail["rotation_days"], "90");
    // The new version is young: no second rotation.
    std::thread::sleep(Duration::from_millis(60));
    let keys = call(&n, &admin, "keys.list", json!({})).unwrap();
    assert!(keys.as_array().unwrap().len() >= 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = call(
            &n,
            &admin,
            "objects.get",
            json!({"type": "client", "id": "a"}),
        )
        .unwrap();
        let v = got["data"]["notes"]["version"].as_u64().unwrap();
        if v >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the re-envelope job did not run");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        decrypt(&n, &admin, "a", &["notes"]).unwrap()["values"]["notes"],
        "kept"
    );
    // Shutdown joins the schedule's thread.
    n.shutdown().unwrap();
}

#[test]
fn each_pass_of_the_schedule_rotates_each_due_key_once_and_rotation_days_0_turns_it_off() {
    // acme turns the schedule off; globex keeps the default (90 days).
    let n = build("rotation_days = 0\n");
    let a = as_(&n, "root", &["admin"], "SECRET");
    let g = ctx(&n, "globex", "root", &["admin"], "SECRET");
    for c in [&a, &g] {
        define(&n, c);
        create(&n, c, "x", json!({"name": "A", "notes": "x", "pin": "1"}));
    }
    let far = n.now_ms() + 365 * 86_400_000;
    let out = n.rotate_due_keys(far);
    // globex's two purposes (`fields`, `pins`), not acme's.
    assert_eq!(out.len(), 2, "{out:?}");
    let rec = audits(&n, "keys.rotate_scheduled");
    assert_eq!(rec.len(), 2);
    assert!(
        rec.iter()
            .all(|r| r.tenant.as_ref().unwrap().as_str() == "globex")
    );
    assert!(audits(&n, "keys.rotate_failed").is_empty());
    // The new versions are young: a second pass at the same time rotates nothing.
    assert!(n.rotate_due_keys(n.now_ms()).is_empty());
    let acme_keys = n
        .vault()
        .list(Some(&KeyScope::Tenant(tenant("acme"))))
        .unwrap();
    assert!(acme_keys.iter().all(|k| k.version == 1));
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_plaintext_appears_nowhere_but_in_the_decrypt_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let n = builder("").data_dir(&data).build().unwrap();
    let mut bus = n
        .events()
        .subscribe("*", Scope::AllTenants, 100_000)
        .unwrap();
    let admin = as_(&n, "root", &["admin"], "SECRET");
    let clerk = as_(&n, "cleo", &["clerk"], "SECRET");
    let low = as_(&n, "rita", &["reader"], "UNCLASSIFIED");
    define(&n, &admin);
    // Objects at UNCLASSIFIED: the uncleared reader sees them, and `notes` (unclassified).
    let admin = as_(&n, "root", &["admin"], "UNCLASSIFIED");
    let mut outputs: Vec<String> = Vec::new();
    let mut push = |r: Result<Value, (String, String)>| match r {
        Ok(v) => outputs.push(v.to_string()),
        Err((c, m)) => outputs.push(format!("{c}: {m}")),
    };
    for i in 0..20 {
        push(call(
            &n,
            &admin,
            "objects.create",
            json!({"type": "client", "id": format!("c{i}"), "data": {"name": "A", "ssn": format!("{MARKER}-{i}"), "notes": MARKER}}),
        ));
    }
    // Refused writes and reads, errors that could echo a value.
    push(call(
        &n,
        &clerk,
        "objects.create",
        json!({"type": "client", "id": "x", "data": {"name": "A", "ssn": MARKER}}),
    ));
    push(call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "client", "id": "y", "data": {"name": "A", "ssn": format!("{MARKER}{}", "x".repeat(64))}}),
    ));
    push(call(
        &n,
        &admin,
        "objects.create",
        json!({"type": "client", "id": "z", "data": {"name": MARKER.len(), "ssn": MARKER}}),
    ));
    push(decrypt(&n, &clerk, "c1", &["ssn"]));
    let seen = decrypt(&n, &low, "c1", &["ssn", "notes"]).unwrap();
    // The reader sees `notes` (unclassified): its answer is the one place a plaintext is.
    assert_eq!(seen["values"]["notes"], MARKER);
    assert_eq!(seen["denied"][0]["field"], "ssn");
    push(call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "client", "id": "c2", "expected_version": 1, "data": {"name": "B", "notes": MARKER, "ssn": format!("{MARKER}-x")}}),
    ));
    push(call(
        &n,
        &admin,
        "objects.get",
        json!({"type": "client", "id": "c2"}),
    ));
    push(call(
        &n,
        &admin,
        "objects.list",
        json!({"type_name": "client", "filter": [], "sort": null, "limit": 100, "cursor": null}),
    ));
    push(call(
        &n,
        &admin,
        "objects.history",
        json!({"type": "client", "id": "c2"}),
    ));
    let started = call(
        &n,
        &admin,
        "fields.rotate_keys",
        json!({"purpose": "fields"}),
    )
    .unwrap();
    let job = started["job"]["job"].as_str().unwrap().to_owned();
    wait_job(&n, &admin, &job);
    push(call(&n, &admin, "keys.list", json!({})));
    let high = as_(&n, "root", &["admin"], "SECRET");
    let d = decrypt(&n, &high, "c3", &["ssn"]).unwrap();
    assert_eq!(d["values"]["ssn"], format!("{MARKER}-3"));
    for o in &outputs {
        assert!(!o.contains(MARKER), "an output carries the plaintext: {o}");
    }
    for e in bus.drain() {
        let t = format!("{} {}", e.topic, e.payload);
        assert!(
            !t.contains(MARKER),
            "a bus event carries the plaintext: {t}"
        );
    }
    let _ = &mut bus;
    // The audit log, record by record.
    n.flush_audit().unwrap();
    for r in n.audit_log().tail(1_000_000).unwrap() {
        let t = format!("{:?}", r.record);
        assert!(
            !t.contains(MARKER),
            "an audit record carries the plaintext: {t}"
        );
    }
    n.shutdown().unwrap();
    drop(n);
    // Every byte of the data directory (databases, WALs, vault, audit log, sync state).
    let mut all = Vec::new();
    files(&data, &mut all);
    assert!(all.iter().any(|p| p.ends_with("fabric.db")));
    for p in all {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "`{}` holds the plaintext",
            p.display()
        );
        // Nor a sliver of it long enough to be telling.
        assert!(
            !contains(&bytes, &MARKER.as_bytes()[..16]),
            "`{}`",
            p.display()
        );
    }
}

#[test]
fn rebuilding_the_projections_from_the_log_gives_the_same_field_ciphertexts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let n = builder("").data_dir(&data).build().unwrap();
    let node = n.node();
    let admin = as_(&n, "root", &["admin"], "SECRET");
    define(&n, &admin);
    for i in 0..12 {
        create(
            &n,
            &admin,
            &format!("c{i}"),
            json!({"name": "A", "notes": format!("n{i}")}),
        );
    }
    call(
        &n,
        &admin,
        "objects.update",
        json!({"type": "client", "id": "c1", "expected_version": 1, "data": {"name": "A"}}),
    )
    .unwrap();
    let started = call(
        &n,
        &admin,
        "fields.rotate_keys",
        json!({"purpose": "fields"}),
    )
    .unwrap();
    wait_job(&n, &admin, started["job"]["job"].as_str().unwrap());
    n.shutdown().unwrap();
    drop(n);
    let log = nodus_core::fabric::SqliteEventLog::open(
        &data.join(nodus_core::FABRIC_FILE),
        node.node_id,
        nodus_core::fabric::Durability::Full,
    )
    .unwrap();
    let fabric = nodus_core::fabric::objects::Fabric::new(Arc::new(log)).unwrap();
    let live = fabric.projection_rows(&tenant("acme")).unwrap();
    assert_eq!(
        live.iter()
            .filter(|l| l.starts_with("fabric_fields:"))
            .count(),
        11
    );
    fabric.rebuild(&tenant("acme")).unwrap();
    assert_eq!(live, fabric.projection_rows(&tenant("acme")).unwrap());
}
