//! Quickstart: a host application's first ten minutes with Nodus.
//!
//! ```sh
//! cargo run -p nodus-examples --example quickstart
//! ```
//!
//! It builds a `Nodus` on the embedded defaults (SQLite vault and audit log in a temporary data
//! directory) with the sample policies in `examples/policies` — two tenants, roles viewer / editor /
//! admin — registers three commands (one labelled, one in a strict rate class), then walks through
//! what the front door does: an allowed call, a permission denial, a clearance denial, a rate-limit
//! denial with its retry time (and the call admitted after waiting it out), a JSON call with a bad
//! field, a policy hot reload that changes an outcome, and finally verifies the audit log every one
//! of those calls left behind and prints the signed checkpoint that covers it.
//!
//! `docs/getting-started.md` walks through this file step by step.

use std::error::Error;
use std::process::ExitCode;

use nodus_core::{
    ActorId, Command, CommandError, CommandSpec, Context, DispatchError, MasterKey, Nodus, TenantId,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// 1. Commands: plain Rust types. The spec says which permission, label and rate class apply.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct NewNote {
    title: String,
}

#[derive(Serialize, Debug)]
struct Note {
    id: u32,
    title: String,
}

/// `notes.create` — needs the `notes.create` permission (editors have `notes.*`).
struct CreateNote;

impl Command for CreateNote {
    type Input = NewNote;
    type Output = Note;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.create")
    }
    fn call(&self, _ctx: &Context, input: NewNote) -> Result<Note, CommandError> {
        Ok(Note {
            id: 1,
            title: input.title,
        })
    }
}

/// `reports.read` — labelled: the caller's clearance must dominate `SECRET//CRYPTO`.
struct ReadReport;

impl Command for ReadReport {
    type Input = ();
    type Output = String;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("reports.read")
            .permission("notes.read")
            .min_label("SECRET//CRYPTO")
    }
    fn call(&self, _ctx: &Context, _: ()) -> Result<String, CommandError> {
        Ok("quarterly crypto report".into())
    }
}

/// `notes.export` — expensive, so it is in the `strict` rate class (policy: 2 per second).
struct ExportNotes;

impl Command for ExportNotes {
    type Input = ();
    type Output = u32;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.export")
            .permission("notes.read")
            .rate_class("strict")
    }
    fn call(&self, _ctx: &Context, _: ()) -> Result<u32, CommandError> {
        Ok(42)
    }
}

/// Shows JSON output as JSON rather than as a Rust value.
struct Json(String);

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn show<T: std::fmt::Debug>(what: &str, result: &Result<T, DispatchError>) {
    match result {
        Ok(v) => println!("  ✔ {what}: allowed → {v:?}"),
        Err(e) => println!("  ✘ {what}: {} ({e})", e.code()),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    // -----------------------------------------------------------------------------------------
    // 2. Build the instance. A copy of the sample policies, so the hot reload below can edit it.
    // -----------------------------------------------------------------------------------------
    // `--data-dir <path>` keeps the vault and audit log afterwards (e.g. for `audit_tool`).
    let args: Vec<String> = std::env::args().collect();
    let keep = args
        .iter()
        .position(|a| a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    let work = tempfile::tempdir()?;
    let data_dir = keep.unwrap_or_else(|| work.path().join("data"));
    let policy_dir = work.path().join("policies");
    copy_dir(&nodus_examples::sample_policies(), &policy_dir)?;

    // A real host reads the master key from a secret store or `MasterKey::from_env(..)`.
    let master = MasterKey::from_bytes(*b"quickstart-demo-master-key-32-b!");
    let nodus = Nodus::builder()
        .data_dir(&data_dir)
        .master_key(master)
        .policy_dir(&policy_dir)
        .command(CreateNote)
        .command(ReadReport)
        .command(ExportNotes)
        .build()?;
    println!(
        "Nodus is up: policy epoch {}, data in {}",
        nodus.policy().epoch(),
        data_dir.display()
    );

    // -----------------------------------------------------------------------------------------
    // 3. Who is calling: build a Context once per session and reuse it.
    // -----------------------------------------------------------------------------------------
    let acme = TenantId::new("acme")?;
    let alice = nodus.subject(
        &acme,
        ActorId::new("alice")?,
        &["editor"],
        "CONFIDENTIAL//CRYPTO",
    )?;
    let bob = nodus.subject(&acme, ActorId::new("bob")?, &["viewer"], "UNCLASSIFIED")?;
    let root = nodus.subject(
        &acme,
        ActorId::new("root")?,
        &["admin"],
        "TOP SECRET//CRYPTO,NOFORN",
    )?;
    let alice = nodus.context(&acme, alice, "session-alice");
    let bob = nodus.context(&acme, bob, "session-bob");
    let root = nodus.context(&acme, root, "session-root");

    println!("\nThe front door:");
    let r = nodus.invoke::<CreateNote>(
        &alice,
        NewNote {
            title: "hello".into(),
        },
    );
    show("alice (editor) creates a note", &r);
    let r = nodus.invoke::<CreateNote>(&bob, NewNote { title: "hi".into() });
    show("bob (viewer) creates a note", &r);
    let r = nodus.invoke::<ReadReport>(&alice, ());
    show(
        "alice (CONFIDENTIAL//CRYPTO) reads a SECRET//CRYPTO report",
        &r,
    );
    let r = nodus.invoke::<ReadReport>(&root, ());
    show("root (TOP SECRET//CRYPTO,NOFORN) reads it", &r);

    println!("\nRate limits (class `strict`, from policy):");
    let mut retry_after = None;
    for i in 1..=3 {
        let r = nodus.invoke::<ExportNotes>(&alice, ());
        show(&format!("alice exports, call {i}"), &r);
        if let Some(d) = r.as_ref().err().and_then(DispatchError::denial) {
            retry_after = d.retry_after;
        }
    }
    // The denial says when the budget refills; waiting that long is enough.
    let wait = retry_after.ok_or("the third export should have been rate limited")?;
    std::thread::sleep(wait + std::time::Duration::from_millis(5));
    let r = nodus.invoke::<ExportNotes>(&alice, ());
    show(
        &format!("alice exports after waiting {} ms", wait.as_millis()),
        &r,
    );

    println!("\nJSON entry point (what a Tauri `invoke` or HTTP gateway would call):");
    let r = nodus.dispatch(&alice, "notes.create", r#"{"title": 7}"#);
    show("alice sends a bad payload", &r.map(|v| Json(v.to_string())));
    let r = nodus.dispatch(&alice, "notes.create", r#"{"title": "from json"}"#);
    show("alice sends a good one", &r.map(|v| Json(v.to_string())));

    // -----------------------------------------------------------------------------------------
    // 4. Hot reload: grant viewers `notes.create`, reload through the audited built-in command.
    // -----------------------------------------------------------------------------------------
    println!("\nHot reload:");
    let tenant_file = policy_dir.join("tenants").join("acme.toml");
    let text = std::fs::read_to_string(&tenant_file)?;
    let edited = text.replacen(
        "viewer = [\"notes.read\"]",
        "viewer = [\"notes.read\", \"notes.create\"]",
        1,
    );
    if edited == text {
        return Err("the sample acme policy no longer has the viewer line this demo edits".into());
    }
    std::fs::write(&tenant_file, edited)?;
    let report = nodus.dispatch(&root, "policy.reload", "{}")?;
    println!(
        "  policy.reload → epoch {}, tenants changed {}",
        report.get("epoch").unwrap_or(&serde_json::Value::Null),
        report.get("changed").unwrap_or(&serde_json::Value::Null)
    );
    let r = nodus.invoke::<CreateNote>(
        &bob,
        NewNote {
            title: "now I can".into(),
        },
    );
    show("bob (viewer) creates a note after the reload", &r);

    // -----------------------------------------------------------------------------------------
    // 5. Every decision above left evidence. Verify the tamper-evident log.
    // -----------------------------------------------------------------------------------------
    println!("\nAudit log:");
    let report = nodus.verify_audit()?;
    let checkpoint = nodus.flush_audit()?;
    println!("  {} records, verified: {}", report.size, report.valid);
    println!(
        "  latest signed checkpoint covers {} records, root hash {}",
        checkpoint.checkpoint.size,
        hex::encode(checkpoint.checkpoint.root)
    );
    println!("{}", indent(&checkpoint.note));
    println!("  the last records:");
    for r in nodus.audit_log().tail(4)? {
        let rec = r.record;
        println!(
            "    #{:<3} {:<16} {:<14} {:?} {}",
            r.seq,
            rec.kind,
            rec.command.as_deref().unwrap_or("-"),
            rec.outcome,
            rec.reason.as_deref().unwrap_or("")
        );
    }
    nodus.shutdown().map_err(|e| e.to_string())?;
    if !report.valid {
        return Err("the audit log did not verify".into());
    }
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
