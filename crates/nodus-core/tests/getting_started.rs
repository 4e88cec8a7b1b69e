//! Keeps `docs/getting-started.md` honest: every Rust snippet in it appears verbatim below, where it
//! is compiled against the real API (and run, where it can be), and a test fails when a snippet in
//! the guide no longer matches the code here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_core::{Nodus, PolicySources};

/// The guide's snippets, verbatim, inside the smallest wrappers that make them compile. Not
/// formatted, so that they stay byte-for-byte what the guide shows.
#[rustfmt::skip]
mod guide {
    #![allow(dead_code, unused_variables, clippy::let_and_return)]

    use std::error::Error;

    use nodus_core::registry::events::Scope;
    use nodus_core::registry::plugins::SignedManifest;
    use nodus_core::{ActorId, DenyReason, MasterKey, Nodus, NodusBuilder, TenantId};

    use crate::common::ExportNotes;

    // ---- 2. Write a command -----------------------------------------------------------------

    use nodus_core::{Command, CommandError, CommandSpec, Context};

    struct ReadReport;

    impl Command for ReadReport {
        type Input = ();
        type Output = String;

        fn spec(&self) -> CommandSpec {
            CommandSpec::new("reports.read")      // the name hosts dispatch by
                .permission("notes.read")          // a role must grant this (default: the name)
                .min_label("SECRET//CRYPTO")       // clearance must dominate this (optional)
                .rate_class("default")             // which `rate.limits` entry applies
        }

        fn call(&self, ctx: &Context, _: ()) -> Result<String, CommandError> {
            // ctx.tenant(), ctx.actor(), ctx.subject(), ctx.session(), ctx.request_id()
            Ok(format!("the report, for {}", ctx.actor()))
        }
    }

    // ---- 2. A JSON handler ------------------------------------------------------------------

    use nodus_core::registry::commands::parse_input;

    #[derive(serde::Deserialize)]
    struct ListQuery {
        limit: u32,
    }

    pub(crate) fn json_handler() -> NodusBuilder {
        let builder = Nodus::builder().json_command(
            CommandSpec::new("notes.list").permission("notes.read"),
            |ctx, payload| {
                let query: ListQuery = parse_input(payload)?;   // `InvalidInput { path }` on a bad field
                Ok(serde_json::json!({ "tenant": ctx.tenant().as_str(), "limit": query.limit }))
            },
        );
        builder
    }

    // ---- 3. Build the instance (compiled only: it reads the environment and writes ./nodus-data)

    fn build() -> Result<Nodus, Box<dyn Error>> {
        let nodus = Nodus::builder()
            .data_dir("./nodus-data")                       // or .in_memory()
            .master_key(MasterKey::from_env("NODUS_MASTER_KEY")?)
            .policy_dir("./policy")                         // or .policy(PolicySources::new()…)
            .command(ReadReport)
            .build()?;
        Ok(nodus)
    }

    pub(crate) fn with_read_report(builder: NodusBuilder) -> NodusBuilder {
        builder.command(ReadReport)
    }

    // ---- 4. Call it -------------------------------------------------------------------------

    pub(crate) fn call_it(nodus: &Nodus) -> Result<(String, serde_json::Value), Box<dyn Error>> {
        let acme = TenantId::new("acme")?;
        let subject = nodus.subject(&acme, ActorId::new("alice")?, &["editor"], "SECRET//CRYPTO")?;
        let ctx = nodus.context(&acme, subject, "session-42");   // once per session

        let report: String = nodus.invoke::<ReadReport>(&ctx, ())?;                  // typed, no JSON
        let json = nodus.dispatch(&ctx, "reports.read", "null")?;                    // JSON in, JSON out
        Ok((report, json))
    }

    // ---- How denials and errors look to a host -----------------------------------------------

    pub(crate) fn handle(nodus: &Nodus, ctx: Context) {
        match nodus.invoke::<ExportNotes>(&ctx, ()) {
            Ok(count) => println!("exported {count}"),
            Err(e) => match e.denial() {
                Some(d) if d.reason == DenyReason::RateLimited => {
                    let wait = d.retry_after.unwrap_or_default();   // when the budget refills
                    println!("busy, try again in {} ms", wait.as_millis());
                }
                Some(d) => println!("refused: {}", d.reason),       // a stable code, also in the audit log
                None => println!("failed: {} ({e})", e.code()),     // UnknownCommand, InvalidInput, …
            },
        }
    }

    // ---- Plugins, UI components and events ----------------------------------------------------

    pub(crate) fn extensions(
        nodus: &Nodus,
        acme: TenantId,
        issuer_public_key: [u8; 32],
        signed_manifest: SignedManifest,
    ) -> Result<usize, Box<dyn Error>> {
        // Trust an issuer for a tenant, then load a manifest it signed. The tenant's `plugins.allowed` must
        // list the plugin; every load and refusal is audited (`plugin.loaded`, `plugin.denied`).
        nodus.trust_store().add_issuer(&acme, &issuer_public_key, None, None)?;
        let change = nodus.load_plugin(&acme, &signed_manifest)?;

        // Components registered with `builder.component(ComponentSpec::new(..))` are visible to a tenant
        // when its `ui.allowed_components` lists them.
        let visible = nodus.components().visible(&acme);

        // Subscribe to what happens: `policy.reloaded`, `plugin.*`, `component.*`.
        let sub = nodus.events().subscribe("plugin.*", Scope::Tenant(acme.clone()), 64)?;
        Ok(visible.len())
    }
}

fn normalized(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Does every blank-line-separated paragraph of `block` appear verbatim (up to indentation), in
/// order, in `here`? Paragraphs may be apart: the wrappers that make a snippet compile go between.
fn compiled_here(block: &str, here: &[&str]) -> bool {
    let mut from = 0;
    for paragraph in block.split("\n\n") {
        let want = normalized(paragraph);
        if want.is_empty() {
            continue;
        }
        let Some(at) = here
            .get(from..)
            .unwrap_or_default()
            .windows(want.len())
            .position(|w| w == want.as_slice())
        else {
            return false;
        };
        from += at + want.len();
    }
    true
}

#[test]
fn every_rust_snippet_in_the_guide_is_compiled_here() {
    let guide_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/getting-started.md");
    let guide = std::fs::read_to_string(guide_path).unwrap();
    let here = normalized(include_str!("getting_started.rs"));
    let mut snippets = 0;
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("```rust") {
            continue;
        }
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let block = block.join("\n");
        snippets += 1;
        assert!(
            compiled_here(&block, &here),
            "docs/getting-started.md has a snippet that is not compiled in \
             crates/nodus-core/tests/getting_started.rs (copy it into `mod guide`):\n{block}"
        );
    }
    assert_eq!(
        snippets, 6,
        "new snippets in the guide? add them to `mod guide`"
    );
    // And the check is not vacuous.
    assert!(!compiled_here(
        "let nodus = Nodus::builder().in_memory().buld()?;",
        &here
    ));
}

#[test]
fn the_call_snippets_run() {
    let n = guide::with_read_report(guide::json_handler())
        .in_memory()
        .master_key(master())
        .policy(sources(false))
        .command(ExportNotes)
        .build()
        .unwrap();
    let (report, json) = guide::call_it(&n).unwrap();
    assert_eq!(report, "the report, for alice");
    assert_eq!(json, "the report, for alice");

    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    let out = n.dispatch(&bob, "notes.list", r#"{"limit": 5}"#).unwrap();
    assert_eq!(out, serde_json::json!({"tenant": "acme", "limit": 5}));
    let e = n
        .dispatch(&bob, "notes.list", r#"{"limit": "five"}"#)
        .unwrap_err();
    assert_eq!(e.to_json()["path"], "limit");

    // The match on a denial: allowed twice, then rate limited, then a permission denial.
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    for _ in 0..3 {
        guide::handle(&n, alice.clone());
    }
    guide::handle(&n, ctx(&n, "acme", "eve", &[], "UNCLASSIFIED"));
}

#[test]
fn the_error_shapes_shown_in_the_guide_are_real() {
    let n = build_in_memory();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    let e = n
        .dispatch(&alice, "notes.create", r#"{"title":"t","tags":["a", 5]}"#)
        .unwrap_err();
    assert_eq!(
        e.to_json(),
        serde_json::json!({
            "code": "InvalidInput",
            "message": "invalid input for `notes.create` at `tags[1]`: invalid type: integer `5`, \
                        expected a string at line 1 column 27",
            "path": "tags[1]"
        })
    );
    for _ in 0..2 {
        n.invoke::<ExportNotes>(&alice, ()).unwrap();
    }
    let e = n.invoke::<ExportNotes>(&alice, ()).unwrap_err();
    let json = e.to_json();
    let ms = json["retry_after_ms"].as_u64().unwrap();
    assert!((1..=500).contains(&ms), "{json}");
    assert_eq!(json["code"], "RateLimited");
    assert_eq!(
        json["message"],
        format!("`notes.export` denied: RateLimited (retry after {ms} ms)")
    );
}

#[test]
fn the_extension_snippet_runs() {
    let doc = format!(
        "{}\n[plugins]\nallowed = [\"markdown\"]\n[ui]\nallowed_components = [\"note-editor\"]\n",
        tenant_toml(false)
    );
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant("acme"), "tenants/acme.toml", &doc),
        )
        .component(nodus_core::registry::components::ComponentSpec::new(
            "note-editor",
            "editor",
            serde_json::json!({}),
        ))
        .build()
        .unwrap();
    let issuer = ed25519_dalek::SigningKey::from_bytes(&[71; 32]);
    let manifest = nodus_core::registry::plugins::PluginManifest::new(
        "markdown",
        "1.0.0",
        tenant("acme"),
        ["notes.read"],
    );
    let signed = nodus_core::registry::plugins::SignedManifest::sign(&manifest, &issuer).unwrap();
    let visible = guide::extensions(
        &n,
        tenant("acme"),
        issuer.verifying_key().to_bytes(),
        signed,
    )
    .unwrap();
    assert_eq!(visible, 1);
    assert!(n.plugins().is_active(&tenant("acme"), "markdown"));
}
