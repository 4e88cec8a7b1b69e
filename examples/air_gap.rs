//! `air_gap`: two nodes that never share a network exchange a tenant's data as sealed bundles.
//!
//! ```sh
//! cargo run -p nodus-examples --example air_gap
//! ```
//!
//! Node A and node B live in two data directories and trust each other's keys (`sync.keys` →
//! `nodus.sync().trust_peer`). A creates objects and a CRDT document and exports a bundle for B
//! (signed with A's vault-held node key, encrypted to B's age recipient); a "courier" copies the
//! file into B's inbox; B verifies, stages and activates it and shows the same objects and
//! document. B edits an object and the document while A edits the document too; bundles cross
//! both ways and the document merges to the same text on both nodes. Then three bundles are
//! refused, each with its code and an audit record: a tampered one, a replayed one and one from a
//! node B does not trust. Exits non-zero if any expectation fails.

// `serde_json::Value[...]` never panics (a missing key or index reads as `null`).
#![allow(clippy::indexing_slicing)]

use std::path::Path;
use std::process::ExitCode;

use nodus_core::{ActorId, Context, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::{Value, json};

const SYSTEM: &str = "[audit]\ndurability = \"normal\"\n";
const ACME: &str = "[rbac.roles]\nclerk = [\"objects.*\", \"types.*\", \"docs.*\", \"sync.*\"]\n";

struct Node {
    name: &'static str,
    nodus: Nodus,
    ctx: Context,
}

impl Node {
    fn open(name: &'static str, dir: &Path, seed: u8) -> Result<Node, String> {
        let tenant = TenantId::new("acme").map_err(|e| e.to_string())?;
        let nodus = Nodus::builder()
            .data_dir(dir)
            .master_key(MasterKey::from_bytes([seed; 32]))
            .policy(
                PolicySources::new()
                    .with_system("system.toml", SYSTEM)
                    .with_tenant(tenant.clone(), "tenants/acme.toml", ACME),
            )
            .build()
            .map_err(|e| e.to_string())?;
        let actor = ActorId::new(format!("clerk-{name}")).map_err(|e| e.to_string())?;
        let subject = nodus
            .subject(&tenant, actor, &["clerk"], "UNCLASSIFIED")
            .map_err(|e| e.to_string())?;
        let ctx = nodus.context(&tenant, subject, "air-gap");
        Ok(Node { name, nodus, ctx })
    }

    fn call(&self, cmd: &str, input: Value) -> Result<Value, String> {
        self.nodus
            .dispatch(&self.ctx, cmd, &input.to_string())
            .map_err(|e| format!("{}: {e}", e.code()))
    }

    fn key_id(&self) -> Result<String, String> {
        self.nodus
            .sync()
            .keys()
            .map(|k| k.key_id)
            .map_err(|e| e.to_string())
    }

    fn dir(&self, sub: &str) -> Result<std::path::PathBuf, String> {
        self.nodus
            .sync()
            .dir()
            .map(|d| d.join(sub))
            .map_err(|e| e.to_string())
    }

    /// verify → stage → activate a bundle from the inbox.
    fn import(&self, file: &str) -> Result<Value, String> {
        let v = self.call("sync.verify", json!({"file": file}))?;
        println!(
            "  {}: verified bundle {} ({} events, {} new)",
            self.name, v["bundle_id"], v["events"], v["new_events"]
        );
        let s = self.call("sync.stage", json!({"file": file}))?;
        let a = self.call("sync.activate", json!({"bundle_id": s["bundle_id"]}))?;
        println!(
            "  {}: activated: {} applied, {} duplicates, {} quarantined",
            self.name,
            a["applied"],
            a["duplicates"],
            a["quarantined"].as_object().map_or(0, |q| q.len())
        );
        Ok(a)
    }
}

/// The courier: copies a bundle from one node's outbox into another's inbox.
fn courier(from: &Node, file: &str, to: &Node, as_name: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(from.dir("outbox")?.join(file)).map_err(|e| e.to_string())?;
    std::fs::write(to.dir("inbox")?.join(as_name), &bytes).map_err(|e| e.to_string())?;
    println!(
        "  courier: {file} ({} bytes) from {} to {}",
        bytes.len(),
        from.name,
        to.name
    );
    Ok(bytes)
}

struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, ok: bool, what: &str) {
        if ok {
            println!("  ok: {what}");
        } else {
            println!("  FAILED: {what}");
            self.0.push(what.to_owned());
        }
    }

    /// The command is refused with `BundleRejected` naming `code`.
    fn rejected(&mut self, result: Result<Value, String>, code: &str, what: &str) {
        match result {
            Err(e) if e.starts_with("BundleRejected") && e.contains(&format!("`{code}`")) => {
                println!("  ok: {what} is rejected: {e}");
            }
            other => self.expect(
                false,
                &format!("{what} is rejected with `{code}` ({other:?})"),
            ),
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(failures) if failures.is_empty() => {
            println!("every expectation held");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            eprintln!(
                "air_gap: {} expectation(s) failed: {failures:?}",
                failures.len()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("air_gap: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<Vec<String>, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut checks = Checks(Vec::new());
    let a = Node::open("A", &tmp.path().join("node-a"), 1)?;
    let b = Node::open("B", &tmp.path().join("node-b"), 2)?;

    println!("1. the nodes exchange their public sync identities (sync.keys) and trust each other");
    let a_keys = a.call("sync.keys", json!({}))?;
    let b_keys = b.call("sync.keys", json!({}))?;
    println!("  A: {a_keys}");
    let parse = |v: Value| -> Result<nodus_core::sync_commands::PeerKeys, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    };
    a.nodus
        .sync()
        .trust_peer(&parse(b_keys)?, &[acme()?])
        .map_err(|e| e.to_string())?;
    b.nodus
        .sync()
        .trust_peer(&parse(a_keys)?, &[acme()?])
        .map_err(|e| e.to_string())?;

    println!("2. A creates objects and exports a bundle for B");
    a.call(
        "types.define",
        json!({"name": "case", "schema": {"type": "object", "properties": {"title": {"type": "string"}}}}),
    )?;
    for (id, title) in [("c1", "bridge inspection"), ("c2", "river levels")] {
        a.call(
            "objects.create",
            json!({"type": "case", "id": id, "data": {"title": title}}),
        )?;
    }
    a.call(
        "docs.create",
        json!({"type": "runbook", "id": "r1", "content": {"steps": "check the bridge"}}),
    )?;
    let out = a.call(
        "sync.export",
        json!({"to": [b.key_id()?], "file": "a-1.noduspkg"}),
    )?;
    println!(
        "  A: exported bundle {} ({} events, sha256 {})",
        out["bundle_id"], out["events"], out["file_sha256"]
    );
    courier(&a, "a-1.noduspkg", &b, "a-1.noduspkg")?;

    println!("3. B verifies, stages and activates it, and sees the same state");
    b.import("a-1.noduspkg")?;
    for id in ["c1", "c2"] {
        let q = json!({"type": "case", "id": id});
        let same = b.call("objects.get", q.clone()).ok() == a.call("objects.get", q).ok();
        checks.expect(same, &format!("B's `{id}` equals A's"));
    }
    let doc = |n: &Node| n.call("docs.get", json!({"id": "r1"})).ok();
    checks.expect(doc(&b) == doc(&a), "B's runbook document equals A's");

    println!("4. B edits c1 and the runbook, A edits the runbook too; bundles cross both ways");
    b.call(
        "objects.update",
        json!({"type": "case", "id": "c1", "expected_version": 1, "data": {"title": "bridge closed"}}),
    )?;
    b.call(
        "docs.change",
        json!({"id": "r1", "ops": [{"op": "splice_text", "path": ["steps"], "pos": 16, "text": ", then close the road"}]}),
    )?;
    a.call(
        "docs.change",
        json!({"id": "r1", "ops": [{"op": "splice_text", "path": ["steps"], "pos": 0, "text": "1. "}]}),
    )?;
    let back = b.call(
        "sync.export",
        json!({"to": [a.key_id()?], "file": "b-1.noduspkg"}),
    )?;
    println!("  B: exported bundle {}", back["bundle_id"]);
    courier(&b, "b-1.noduspkg", &a, "b-1.noduspkg")?;
    a.import("b-1.noduspkg")?;
    let title =
        a.call("objects.get", json!({"type": "case", "id": "c1"}))?["data"]["title"].clone();
    checks.expect(title == "bridge closed", "A sees B's edit");
    a.call(
        "sync.export",
        json!({"to": [b.key_id()?], "file": "a-2.noduspkg"}),
    )?;
    courier(&a, "a-2.noduspkg", &b, "a-2.noduspkg")?;
    b.import("a-2.noduspkg")?;
    let steps = doc(&a).map(|d| d["content"]["steps"].clone());
    println!("  runbook on A: {steps:?}");
    checks.expect(
        steps == Some(json!("1. check the bridge, then close the road")),
        "the concurrent document edits merged on A",
    );
    checks.expect(
        doc(&a) == doc(&b),
        "A's and B's runbook documents are identical",
    );

    println!("5. refusals: tampered, replayed, untrusted");
    // A fresh bundle from A (not imported yet: an imported one would be refused as a replay
    // before its payload is even decrypted), one byte flipped in its encrypted payload.
    a.call(
        "sync.export",
        json!({"to": [b.key_id()?], "file": "a-3.noduspkg"}),
    )?;
    let mut tampered =
        std::fs::read(a.dir("outbox")?.join("a-3.noduspkg")).map_err(|e| e.to_string())?;
    let at = tampered.len().saturating_sub(20);
    if let Some(byte) = tampered.get_mut(at) {
        *byte ^= 0x40;
    }
    std::fs::write(b.dir("inbox")?.join("tampered.noduspkg"), &tampered)
        .map_err(|e| e.to_string())?;
    checks.rejected(
        b.call("sync.verify", json!({"file": "tampered.noduspkg"})),
        "decrypt_failed",
        "a bundle with one flipped byte",
    );
    checks.rejected(
        b.call("sync.stage", json!({"file": "a-1.noduspkg"})),
        "replayed",
        "the first bundle, imported again",
    );
    let c = Node::open("C", &tmp.path().join("node-c"), 3)?;
    c.nodus
        .sync()
        .trust_peer(
            &b.nodus.sync().keys().map_err(|e| e.to_string())?,
            &[acme()?],
        )
        .map_err(|e| e.to_string())?;
    c.call(
        "sync.export",
        json!({"to": [b.key_id()?], "file": "c-1.noduspkg"}),
    )?;
    courier(&c, "c-1.noduspkg", &b, "c-1.noduspkg")?;
    checks.rejected(
        b.call("sync.verify", json!({"file": "c-1.noduspkg"})),
        "untrusted_key",
        "a bundle from node C, which B does not trust",
    );

    println!("6. B's air-gap posture (sync.status) and its audit trail");
    let status = b.call("sync.status", json!({}))?;
    println!(
        "  B: {} activated, {} staged, {} exported, {} quarantined, peers {}",
        status["activated"].as_array().map_or(0, Vec::len),
        status["staged"].as_array().map_or(0, Vec::len),
        status["exported"].as_array().map_or(0, Vec::len),
        status["quarantined"],
        status["peers"]
    );
    checks.expect(
        status["activated"].as_array().map_or(0, Vec::len) == 2,
        "B activated exactly two bundles",
    );
    b.nodus.flush_audit().map_err(|e| e.to_string())?;
    let size = b.nodus.audit_log().size().map_err(|e| e.to_string())?;
    let records = b
        .nodus
        .audit_log()
        .tail(usize::try_from(size).unwrap_or(usize::MAX))
        .map_err(|e| e.to_string())?;
    for code in ["decrypt_failed", "replayed", "untrusted_key"] {
        let r = records
            .iter()
            .find(|r| r.record.kind == "sync.rejected" && r.record.reason.as_deref() == Some(code));
        if let Some(r) = r {
            println!(
                "  audit: sync.rejected `{code}` bundle {} sha256 {}",
                r.record.detail.get("bundle_id").map_or("-", String::as_str),
                r.record
                    .detail
                    .get("file_sha256")
                    .map_or("-", String::as_str)
            );
        }
        checks.expect(r.is_some(), &format!("the `{code}` rejection is audited"));
    }
    for n in [&a, &b, &c] {
        let _ = n.nodus.shutdown();
    }
    Ok(checks.0)
}

/// The tenant both nodes serve; peers are trusted for it only.
fn acme() -> Result<TenantId, String> {
    TenantId::new("acme").map_err(|e| e.to_string())
}
