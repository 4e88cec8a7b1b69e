//! The `sync.*` built-ins: two instances exchanging sealed bundles through the commands, and
//! every refusal (tampered, replayed, untrusted, path traversal, no permission) audited.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use nodus_core::security::audit::StoredRecord;
use nodus_core::{Context, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::{Value, json};
use sha2::Digest;

const SYSTEM: &str = r#"
[audit]
durability = "normal"
checkpoint_every = 64
checkpoint_interval = "50ms"
"#;

const TENANT: &str = r#"
[rbac.roles]
admin = ["*"]
viewer = ["objects.get", "objects.get.*", "sync.status"]

[rate.limits]
default = { rate = 10000, per = "1s", burst = 10000 }
admin = { rate = 10000, per = "1s", burst = 10000 }
"#;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn node(dir: &Path, seed: u8) -> Nodus {
    Nodus::builder()
        .data_dir(dir)
        .master_key(MasterKey::from_bytes([seed; 32]))
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant(), "tenants/acme.toml", TENANT)
                .with_tenant(globex(), "tenants/globex.toml", TENANT),
        )
        .build()
        .unwrap()
}

fn globex() -> TenantId {
    TenantId::new("globex").unwrap()
}

fn ctx(n: &Nodus, role: &str) -> Context {
    ctx_in(n, &tenant(), role)
}

fn ctx_in(n: &Nodus, t: &TenantId, role: &str) -> Context {
    let s = n
        .subject(
            t,
            nodus_core::ActorId::new("alice").unwrap(),
            &[role],
            "UNCLASSIFIED",
        )
        .unwrap();
    n.context(t, s, "s1")
}

fn call(n: &Nodus, c: &Context, cmd: &str, input: Value) -> Result<Value, (String, String)> {
    n.dispatch(c, cmd, &input.to_string())
        .map_err(|e| (e.code().to_owned(), e.to_string()))
}

fn ok(n: &Nodus, cmd: &str, input: Value) -> Value {
    call(n, &ctx(n, "admin"), cmd, input).unwrap_or_else(|e| panic!("{cmd}: {e:?}"))
}

/// Moves an exported bundle from `from`'s outbox to `to`'s inbox under `name`.
fn courier(from: &Nodus, file: &str, to: &Nodus, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(from.sync().dir().unwrap().join("outbox").join(file)).unwrap();
    std::fs::write(to.sync().dir().unwrap().join("inbox").join(name), &bytes).unwrap();
    bytes
}

fn audit_records(n: &Nodus) -> Vec<StoredRecord> {
    n.flush_audit().unwrap();
    let size = n.audit_log().size().unwrap();
    n.audit_log().tail(size as usize).unwrap()
}

fn find_audit<'a>(
    records: &'a [StoredRecord],
    kind: &str,
    reason: Option<&str>,
    sha: &str,
) -> Option<&'a StoredRecord> {
    records.iter().find(|r| {
        r.record.kind == kind
            && reason.is_none_or(|c| r.record.reason.as_deref() == Some(c))
            && r.record.detail.get("file_sha256").map(String::as_str) == Some(sha)
    })
}

fn pair() -> (tempfile::TempDir, Nodus, Nodus) {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), 1);
    let b = node(&dir.path().join("b"), 2);
    a.sync()
        .trust_peer(&b.sync().keys().unwrap(), &[tenant(), globex()])
        .unwrap();
    b.sync()
        .trust_peer(&a.sync().keys().unwrap(), &[tenant(), globex()])
        .unwrap();
    (dir, a, b)
}

fn seed_objects(a: &Nodus) {
    ok(
        a,
        "types.define",
        json!({"name": "case", "schema": {"type": "object", "properties": {"title": {"type": "string"}}}}),
    );
    ok(
        a,
        "objects.create",
        json!({"type": "case", "id": "c1", "data": {"title": "from a"}}),
    );
}

fn import(n: &Nodus, file: &str) -> Value {
    let v = ok(n, "sync.verify", json!({"file": file}));
    let s = ok(n, "sync.stage", json!({"file": file}));
    assert_eq!(v["bundle_id"], s["bundle_id"]);
    ok(n, "sync.activate", json!({"bundle_id": s["bundle_id"]}))
}

#[test]
fn two_nodes_exchange_bundles_both_ways() {
    let (_dir, a, b) = pair();
    seed_objects(&a);
    let b_key = b.sync().keys().unwrap().key_id;
    let a_key = a.sync().keys().unwrap().key_id;
    // The age identity is sealed on disk, never plaintext.
    let sealed = std::fs::read(a.sync().dir().unwrap().join("identity.age.sealed")).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("AGE-SECRET-KEY"));
    assert!(a.sync().keys().unwrap().recipient.starts_with("age1"));

    let out = ok(
        &a,
        "sync.export",
        json!({"to": [b_key], "file": "a1.noduspkg"}),
    );
    assert_eq!(out["file"], "a1.noduspkg");
    assert_eq!(out["events"], 2);
    // An outbox file is never overwritten.
    let (code, msg) = call(
        &a,
        &ctx(&a, "admin"),
        "sync.export",
        json!({"to": [b_key.clone()], "file": "a1.noduspkg"}),
    )
    .unwrap_err();
    assert_eq!(code, "ExportFailed", "{msg}");
    assert!(msg.contains("exists already"), "{msg}");
    courier(&a, "a1.noduspkg", &b, "a1.noduspkg");
    let report = import(&b, "a1.noduspkg");
    assert_eq!(report["applied"], 2, "{report}");
    assert_eq!(report["quarantined"], json!({}));
    let got = ok(&b, "objects.get", json!({"type": "case", "id": "c1"}));
    let want = ok(&a, "objects.get", json!({"type": "case", "id": "c1"}));
    assert_eq!(got, want);

    // B edits, exports back; A imports and sees the edit.
    ok(
        &b,
        "objects.update",
        json!({"type": "case", "id": "c1", "expected_version": 1, "data": {"title": "edited by b"}}),
    );
    let back = ok(&b, "sync.export", json!({"to": [a_key]}));
    let file = back["file"].as_str().unwrap().to_owned();
    assert!(file.starts_with("acme-") && file.ends_with(".noduspkg"));
    courier(&b, &file, &a, &file);
    let report = import(&a, &file);
    assert_eq!(report["applied"], 1, "{report}");
    let got = ok(&a, "objects.get", json!({"type": "case", "id": "c1"}));
    assert_eq!(got["data"]["title"], "edited by b");
    assert_eq!(
        got,
        ok(&b, "objects.get", json!({"type": "case", "id": "c1"}))
    );

    // Status: the posture report.
    let st = ok(&b, "sync.status", json!({}));
    assert_eq!(st["activated"].as_array().unwrap().len(), 1);
    assert_eq!(st["exported"].as_array().unwrap().len(), 1);
    assert_eq!(st["staged"], json!([]));
    assert_eq!(st["quarantined"], 0);
    assert_eq!(st["peers"][0]["key_id"], a_key.as_str());
    assert_eq!(st["peers"][0]["state"], "trusted");
    assert!(st["peers"][0]["last_import_ms"].is_u64());
    assert!(st["peers"][0]["last_export_ms"].is_u64());

    // Every step is audited with the bundle id and the file's SHA-256.
    let recs = audit_records(&b);
    let sha = report_sha(&out);
    for kind in ["sync.verified", "sync.staged", "sync.activated"] {
        let r = find_audit(&recs, kind, None, &sha).unwrap_or_else(|| panic!("{kind}"));
        assert_eq!(
            r.record.detail["bundle_id"],
            out["bundle_id"].as_str().unwrap()
        );
    }
    let recs = audit_records(&a);
    assert!(find_audit(&recs, "sync.exported", None, &sha).is_some());
    assert!(recs.iter().any(|r| r.record.kind == "sync.peer_trusted"));
}

fn report_sha(v: &Value) -> String {
    v["file_sha256"].as_str().unwrap().to_owned()
}

fn assert_rejected(n: &Nodus, cmd: &str, file: &str, code: &str, bytes: &[u8]) {
    let (err, msg) = call(n, &ctx(n, "admin"), cmd, json!({"file": file})).unwrap_err();
    assert_eq!(err, "BundleRejected", "{msg}");
    assert!(msg.contains(&format!("`{code}`")), "{msg}");
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    let recs = audit_records(n);
    let r = find_audit(&recs, "sync.rejected", Some(code), &sha)
        .unwrap_or_else(|| panic!("no sync.rejected record for {code}"));
    assert_eq!(r.record.detail["file"], file);
    assert_eq!(r.record.tenant.as_ref().unwrap().as_str(), "acme");
}

#[test]
fn tampered_replayed_and_untrusted_bundles_are_rejected_and_audited() {
    let (dir, a, b) = pair();
    seed_objects(&a);
    let b_key = b.sync().keys().unwrap().key_id;
    let out = ok(
        &a,
        "sync.export",
        json!({"to": [b_key.clone()], "file": "a1.noduspkg"}),
    );
    let mut bytes = courier(&a, "a1.noduspkg", &b, "a1.noduspkg");

    // Tampered: one byte flipped near the end (inside the encrypted payload).
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    std::fs::write(b.sync().dir().unwrap().join("inbox/bad.noduspkg"), &bytes).unwrap();
    assert_rejected(&b, "sync.verify", "bad.noduspkg", "decrypt_failed", &bytes);
    // Its record names the bundle (the manifest is intact).
    let recs = audit_records(&b);
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let r = find_audit(&recs, "sync.rejected", Some("decrypt_failed"), &sha).unwrap();
    assert_eq!(
        r.record.detail["bundle_id"],
        out["bundle_id"].as_str().unwrap()
    );

    // Replayed: imported once, then again.
    import(&b, "a1.noduspkg");
    let good = std::fs::read(b.sync().dir().unwrap().join("inbox/a1.noduspkg")).unwrap();
    assert_rejected(&b, "sync.stage", "a1.noduspkg", "replayed", &good);
    let recs = audit_records(&b);
    let r = find_audit(&recs, "sync.rejected", Some("replayed"), &report_sha(&out)).unwrap();
    assert_eq!(
        r.record.detail["bundle_id"],
        out["bundle_id"].as_str().unwrap()
    );

    // Untrusted: node C knows B's recipient, but B does not trust C.
    let c = node(&dir.path().join("c"), 3);
    c.sync()
        .trust_peer(&b.sync().keys().unwrap(), &[tenant(), globex()])
        .unwrap();
    seed_objects(&c);
    ok(
        &c,
        "sync.export",
        json!({"to": [b_key.clone()], "file": "c1.noduspkg"}),
    );
    let from_c = courier(&c, "c1.noduspkg", &b, "c1.noduspkg");
    assert_rejected(&b, "sync.verify", "c1.noduspkg", "untrusted_key", &from_c);

    // Revoked: A is revoked at B; a new bundle from A is refused.
    assert!(
        b.sync()
            .revoke_peer(&a.sync().keys().unwrap().key_id)
            .unwrap()
    );
    let out2 = ok(
        &a,
        "sync.export",
        json!({"to": [b_key], "file": "a2.noduspkg"}),
    );
    let a2 = courier(&a, "a2.noduspkg", &b, "a2.noduspkg");
    assert_rejected(&b, "sync.stage", "a2.noduspkg", "revoked_key", &a2);
    assert!(out2["bundle_id"].is_string());
    let st = ok(&b, "sync.status", json!(null));
    let states: Vec<&str> = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["revoked"]);
    assert!(
        audit_records(&b)
            .iter()
            .any(|r| r.record.kind == "sync.peer_revoked")
    );
}

#[test]
fn paths_permissions_and_unknown_peers_are_refused() {
    let (_dir, a, b) = pair();
    let admin = ctx(&a, "admin");
    for bad in ["../a.noduspkg", "/etc/passwd", "sub/a.noduspkg", "..", ""] {
        for cmd in ["sync.verify", "sync.stage"] {
            let (code, msg) = call(&a, &admin, cmd, json!({"file": bad})).unwrap_err();
            assert_eq!(code, "BadFileName", "{cmd} {bad}: {msg}");
        }
    }
    let b_key = b.sync().keys().unwrap().key_id;
    let (code, _) = call(
        &a,
        &admin,
        "sync.export",
        json!({"to": [b_key.clone()], "file": "../escape.noduspkg"}),
    )
    .unwrap_err();
    assert_eq!(code, "BadFileName");
    let (code, _) = call(&a, &admin, "sync.export", json!({"to": ["nobody"]})).unwrap_err();
    assert_eq!(code, "UnknownPeer");
    let (code, _) = call(
        &a,
        &admin,
        "sync.activate",
        json!({"bundle_id": "00000000000000000000000000000000"}),
    )
    .unwrap_err();
    assert_eq!(code, "NotStaged");

    // Without the permission: denied by the guard (and audited like every denial).
    let viewer = ctx(&a, "viewer");
    for (cmd, input) in [
        ("sync.export", json!({"to": [b_key]})),
        ("sync.verify", json!({"file": "x.noduspkg"})),
        ("sync.stage", json!({"file": "x.noduspkg"})),
        (
            "sync.activate",
            json!({"bundle_id": "00000000000000000000000000000000"}),
        ),
        ("sync.keys", json!({})),
        ("sync.recheck", json!({})),
    ] {
        let (code, _) = call(&a, &viewer, cmd, input).unwrap_err();
        assert_eq!(code, "MissingPermission", "{cmd}");
    }
    assert!(call(&a, &viewer, "sync.status", json!({})).is_ok());
}

#[test]
fn objects_above_the_ceiling_or_of_unknown_types_are_quarantined() {
    let (_dir, a, b) = pair();
    seed_objects(&a);
    // A SECRET object at A; B's activator is UNCLASSIFIED: that event is quarantined.
    let secret = {
        let s = a
            .subject(
                &tenant(),
                nodus_core::ActorId::new("sam").unwrap(),
                &["admin"],
                "SECRET",
            )
            .unwrap();
        a.context(&tenant(), s, "s2")
    };
    call(
        &a,
        &secret,
        "objects.create",
        json!({"type": "case", "id": "s1", "label": "SECRET", "data": {"title": "secret"}}),
    )
    .unwrap();
    let out = ok(
        &a,
        "sync.export",
        json!({"to": [b.sync().keys().unwrap().key_id], "file": "a.noduspkg"}),
    );
    courier(&a, "a.noduspkg", &b, "a.noduspkg");
    let report = import(&b, "a.noduspkg");
    assert_eq!(report["applied"], 2, "{report}");
    let q = report["quarantined"].as_object().unwrap();
    assert_eq!(q.len(), 1, "{report}");
    assert!(
        q.values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .contains("ceiling")
    );
    assert_eq!(ok(&b, "sync.status", json!({}))["quarantined"], 1);
    let recs = audit_records(&b);
    assert!(find_audit(&recs, "sync.quarantined", None, &report_sha(&out)).is_some());
    // The type was defined by the same bundle: its unclassified object is applied.
    assert!(
        call(
            &b,
            &ctx(&b, "admin"),
            "objects.get",
            json!({"type": "case", "id": "c1"})
        )
        .is_ok()
    );

    // Re-checked by someone cleared for it (the ceiling is the caller's clearance): released.
    let unclassified = call(&b, &ctx(&b, "admin"), "sync.recheck", json!({})).unwrap();
    assert_eq!(unclassified["released"], json!([]));
    assert_eq!(unclassified["remaining"], 1);
    let high = {
        let s = b
            .subject(
                &tenant(),
                nodus_core::ActorId::new("sam").unwrap(),
                &["admin"],
                "SECRET",
            )
            .unwrap();
        b.context(&tenant(), s, "s2")
    };
    assert_eq!(
        call(
            &b,
            &high,
            "objects.get",
            json!({"type": "case", "id": "s1"})
        )
        .unwrap_err()
        .0,
        "NotFound"
    );
    let rechecked = call(&b, &high, "sync.recheck", json!({})).unwrap();
    assert_eq!(
        rechecked["released"].as_array().unwrap().len(),
        1,
        "{rechecked}"
    );
    assert_eq!(rechecked["remaining"], 0);
    let s1 = call(
        &b,
        &high,
        "objects.get",
        json!({"type": "case", "id": "s1"}),
    )
    .unwrap();
    assert_eq!(s1["label"], "SECRET");
    assert_eq!(ok(&b, "sync.status", json!({}))["quarantined"], 0);
    let recs = audit_records(&b);
    let r = find_audit(&recs, "sync.released", None, &report_sha(&out)).unwrap();
    assert_eq!(
        r.record.detail["bundle_id"],
        out["bundle_id"].as_str().unwrap()
    );
}

#[test]
fn an_in_memory_instance_without_a_sync_dir_says_so() {
    let n = Nodus::builder()
        .in_memory()
        .master_key(MasterKey::from_bytes([9; 32]))
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant(), "tenants/acme.toml", TENANT),
        )
        .build()
        .unwrap();
    let (code, _) = call(&n, &ctx(&n, "admin"), "sync.status", json!({})).unwrap_err();
    assert_eq!(code, "SyncNotConfigured");
    assert!(n.sync().keys().is_err());
}

#[test]
fn the_identity_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let n = node(dir.path(), 5);
        let k = n.sync().keys().unwrap();
        n.shutdown().unwrap();
        k
    };
    let n = node(dir.path(), 5);
    assert_eq!(n.sync().keys().unwrap(), first);
}

#[test]
fn one_tenants_bundles_are_walled_from_another() {
    let (_dir, a, b) = pair();
    let b_key = b.sync().keys().unwrap().key_id;
    let (ga, gb) = (
        ctx_in(&a, &globex(), "admin"),
        ctx_in(&b, &globex(), "admin"),
    );
    call(
        &a,
        &ga,
        "types.define",
        json!({"name": "memo", "schema": {"type": "object", "properties": {}}}),
    )
    .unwrap();
    let out = call(
        &a,
        &ga,
        "sync.export",
        json!({"to": [b_key], "file": "g.noduspkg"}),
    )
    .unwrap();
    courier(&a, "g.noduspkg", &b, "g.noduspkg");
    // acme cannot verify or stage globex's bundle (it is for another tenant) ...
    let (code, msg) = call(
        &b,
        &ctx(&b, "admin"),
        "sync.stage",
        json!({"file": "g.noduspkg"}),
    )
    .unwrap_err();
    assert_eq!(code, "BundleRejected");
    assert!(msg.contains("`wrong_tenant`"), "{msg}");
    // ... nor activate it once globex staged it, nor see it in its status.
    call(&b, &gb, "sync.stage", json!({"file": "g.noduspkg"})).unwrap();
    let (code, _) = call(
        &b,
        &ctx(&b, "admin"),
        "sync.activate",
        json!({"bundle_id": out["bundle_id"]}),
    )
    .unwrap_err();
    assert_eq!(code, "NotStaged");
    assert_eq!(ok(&b, "sync.status", json!({}))["staged"], json!([]));
    let st = call(&b, &gb, "sync.status", json!({})).unwrap();
    assert_eq!(st["staged"][0]["bundle_id"], out["bundle_id"]);
    call(
        &b,
        &gb,
        "sync.activate",
        json!({"bundle_id": out["bundle_id"]}),
    )
    .unwrap();
    assert_eq!(
        call(&b, &gb, "types.list", json!({})).unwrap()[0]["name"],
        "memo"
    );
    assert_eq!(ok(&b, "types.list", json!({})), json!([]));
}

#[test]
fn since_last_exports_only_what_follows_and_a_lost_bundle_is_a_missing_prerequisite() {
    let (_dir, a, b) = pair();
    seed_objects(&a);
    let b_key = b.sync().keys().unwrap().key_id;
    ok(
        &a,
        "sync.export",
        json!({"to": [b_key.clone()], "file": "full.noduspkg"}),
    );
    courier(&a, "full.noduspkg", &b, "full.noduspkg");
    import(&b, "full.noduspkg");

    let create = |id: &str| {
        ok(
            &a,
            "objects.create",
            json!({"type": "case", "id": id, "data": {"title": id}}),
        );
    };
    create("c2");
    let inc = ok(
        &a,
        "sync.export",
        json!({"to": [b_key.clone()], "file": "inc.noduspkg", "since_last": true}),
    );
    assert_eq!(inc["events"], 1, "{inc}");
    assert_eq!(inc["incremental"], true);
    let range = inc["chains"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(range, json!([3, 3]));
    courier(&a, "inc.noduspkg", &b, "inc.noduspkg");
    assert_eq!(import(&b, "inc.noduspkg")["applied"], 1);
    assert!(ok(&b, "objects.get", json!({"type": "case", "id": "c2"})).is_object());

    // A bundle that never arrives: the next incremental one needs it.
    create("c3");
    ok(
        &a,
        "sync.export",
        json!({"to": [b_key.clone()], "file": "lost.noduspkg", "since_last": true}),
    );
    create("c4");
    ok(
        &a,
        "sync.export",
        json!({"to": [b_key.clone()], "file": "next.noduspkg", "since_last": true}),
    );
    let next = courier(&a, "next.noduspkg", &b, "next.noduspkg");
    assert_rejected(
        &b,
        "sync.verify",
        "next.noduspkg",
        "missing_prerequisite",
        &next,
    );
    // A full export catches up.
    ok(
        &a,
        "sync.export",
        json!({"to": [b_key], "file": "again.noduspkg"}),
    );
    courier(&a, "again.noduspkg", &b, "again.noduspkg");
    assert_eq!(import(&b, "again.noduspkg")["applied"], 2);
}

#[test]
fn the_tenant_import_ceiling_comes_from_policy_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let schema = "[keys.\"sync.import_ceiling\"]\ntype = \"string\"\nscope = \"tenant\"\ndefault = \"SECRET\"\ndoc = \"highest label a bundle may bring in\"\n";
    let build = |d: &str, seed: u8| {
        Nodus::builder()
            .data_dir(dir.path().join(d))
            .master_key(MasterKey::from_bytes([seed; 32]))
            .policy(
                PolicySources::new()
                    .with_schema("schema.toml", schema)
                    .with_system("system.toml", SYSTEM)
                    .with_tenant(tenant(), "tenants/acme.toml", TENANT),
            )
            .build()
            .unwrap()
    };
    let (a, b) = (build("a", 1), build("b", 2));
    a.sync()
        .trust_peer(&b.sync().keys().unwrap(), &[tenant(), globex()])
        .unwrap();
    b.sync()
        .trust_peer(&a.sync().keys().unwrap(), &[tenant(), globex()])
        .unwrap();
    seed_objects(&a);
    let secret = {
        let s = a
            .subject(
                &tenant(),
                nodus_core::ActorId::new("sam").unwrap(),
                &["admin"],
                "SECRET",
            )
            .unwrap();
        a.context(&tenant(), s, "s2")
    };
    for (id, label) in [("s1", "SECRET"), ("t1", "TOP SECRET")] {
        let c = if label == "SECRET" {
            secret.clone()
        } else {
            let s = a
                .subject(
                    &tenant(),
                    nodus_core::ActorId::new("tom").unwrap(),
                    &["admin"],
                    "TOP SECRET",
                )
                .unwrap();
            a.context(&tenant(), s, "s3")
        };
        call(
            &a,
            &c,
            "objects.create",
            json!({"type": "case", "id": id, "label": label, "data": {"title": id}}),
        )
        .unwrap();
    }
    ok(
        &a,
        "sync.export",
        json!({"to": [b.sync().keys().unwrap().key_id], "file": "a.noduspkg"}),
    );
    courier(&a, "a.noduspkg", &b, "a.noduspkg");
    // The activator is UNCLASSIFIED, the tenant's ceiling SECRET: only TOP SECRET is held.
    let report = import(&b, "a.noduspkg");
    assert_eq!(report["applied"], 3, "{report}");
    let q = report["quarantined"].as_object().unwrap();
    assert_eq!(q.len(), 1, "{report}");
    assert_eq!(q.values().next().unwrap(), "label above the import ceiling");
}

/// Trust is per tenant: a peer trusted for acme only cannot bring globex's data in.
#[test]
fn a_peer_trusted_for_one_tenant_cannot_sign_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = node(&dir.path().join("a"), 1);
    let b = node(&dir.path().join("b"), 2);
    a.sync()
        .trust_peer(&b.sync().keys().unwrap(), &[tenant(), globex()])
        .unwrap();
    b.sync()
        .trust_peer(&a.sync().keys().unwrap(), &[tenant()])
        .unwrap();
    assert_eq!(b.sync().peers().unwrap()[0].tenants, ["acme"]);
    let b_key = b.sync().keys().unwrap().key_id;
    let ga = ctx_in(&a, &globex(), "admin");
    call(
        &a,
        &ga,
        "types.define",
        json!({"name": "memo", "schema": {"type": "object", "properties": {}}}),
    )
    .unwrap();
    let out = call(
        &a,
        &ga,
        "sync.export",
        json!({"to": [b_key], "file": "g.noduspkg"}),
    )
    .unwrap();
    courier(&a, "g.noduspkg", &b, "g.noduspkg");
    let gb = ctx_in(&b, &globex(), "admin");
    let (code, msg) = call(&b, &gb, "sync.stage", json!({"file": "g.noduspkg"})).unwrap_err();
    assert_eq!(code, "BundleRejected");
    assert!(msg.contains("`key_not_for_tenant`"), "{msg}");
    b.flush_audit().unwrap();
    let records = b.audit_log().tail(50).unwrap();
    let sha = out["file_sha256"].as_str().unwrap();
    assert!(find_audit(&records, "sync.rejected", Some("key_not_for_tenant"), sha).is_some());
    // No tenant at all is refused.
    assert!(b.sync().trust_peer(&a.sync().keys().unwrap(), &[]).is_err());
}
