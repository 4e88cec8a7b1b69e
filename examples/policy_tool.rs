//! `policy_tool`: validate, merge, explain and diff Nodus policy directories.
//!
//! ```sh
//! cargo run -p nodus-examples --example policy_tool -- validate examples/policies
//! cargo run -p nodus-examples --example policy_tool -- merge    examples/policies acme [alice]
//! cargo run -p nodus-examples --example policy_tool -- explain  examples/policies acme [alice] observability.sampling_rate
//! cargo run -p nodus-examples --example policy_tool -- diff     <dir-a> <dir-b>
//! cargo run -p nodus-examples --example policy_tool -- diff-tenant <dir-a> <dir-b> <tenant>
//! ```
//!
//! Machine-readable JSON on stdout, human-readable errors on stderr (each policy problem prefixed
//! with the directory it was found in). Exit code 0 on success, 1 when a policy does not validate
//! (or a key/tenant is unknown), 2 on usage errors (bad arguments, a path that is not a directory,
//! an invalid tenant or user id).
//!
//! `diff` loads `<dir-a>`, then reloads it with `<dir-b>` and prints the reload report: tenants
//! added, removed and changed, users whose own file changed, and the key-level diff with the
//! provenance of each old and new value.
//!
//! `diff-tenant` loads `<dir-a>`, then reloads only `<tenant>` from `<dir-b>` (a tenant-scoped
//! reload: `<dir-b>`'s `tenants/<tenant>.toml` and `users/<tenant>/*.toml`, validated against
//! `<dir-a>`'s system layer and schema; no other file of `<dir-b>` is read) and prints the report.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use nodus_policy::{ActorId, PolicyErrors, PolicySources, PolicyStore, TenantId, TenantSources};
use serde_json::{Value, json};

const USAGE: &str = "usage:
  policy_tool validate <dir>
  policy_tool merge <dir> <tenant> [user]
  policy_tool explain <dir> <tenant> [user] <key>
  policy_tool diff <dir-a> <dir-b>
  policy_tool diff-tenant <dir-a> <dir-b> <tenant>";

enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// Invalid policy, unknown tenant or key: exit 1.
    Invalid(String),
}

/// Policy problems, prefixed with the directory they were found in (`diff` reads two).
fn invalid(dir: &str) -> impl Fn(PolicyErrors) -> Failure + '_ {
    move |e| Failure::Invalid(format!("{dir}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            nodus_examples::print_line(
                &serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string()),
            );
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Invalid(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn load(dir: &str) -> Result<PolicyStore, Failure> {
    if !Path::new(dir).is_dir() {
        return Err(Failure::Usage(format!("`{dir}` is not a directory")));
    }
    let sources = PolicySources::from_dir(dir).map_err(invalid(dir))?;
    PolicyStore::new(sources).map_err(invalid(dir))
}

fn tenant(s: &str) -> Result<TenantId, Failure> {
    TenantId::new(s).map_err(|e| Failure::Usage(e.to_string()))
}

fn actor(s: &str) -> Result<ActorId, Failure> {
    ActorId::new(s).map_err(|e| Failure::Usage(e.to_string()))
}

fn run(args: &[String]) -> Result<Value, Failure> {
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match strs.as_slice() {
        ["validate", dir] => {
            let store = load(dir)?;
            let tenants: Vec<String> = store.tenants().iter().map(|t| t.to_string()).collect();
            Ok(json!({ "valid": true, "epoch": store.epoch(), "tenants": tenants }))
        }
        ["merge", dir, t] => {
            let store = load(dir)?;
            let t = tenant(t)?;
            let snap = store
                .snapshot(&t)
                .ok_or_else(|| Failure::Invalid(format!("unknown tenant `{t}`")))?;
            Ok(
                json!({ "tenant": t, "epoch": snap.epoch(), "content_hash": hex(snap.content_hash()), "effective": snap.to_json() }),
            )
        }
        ["merge", dir, t, u] => {
            let store = load(dir)?;
            let (t, u) = (tenant(t)?, actor(u)?);
            let snap = store
                .user_snapshot(&t, &u)
                .ok_or_else(|| Failure::Invalid(format!("unknown tenant `{t}`")))?;
            Ok(
                json!({ "tenant": t, "user": u, "epoch": snap.epoch(), "content_hash": hex(snap.content_hash()), "effective": snap.to_json() }),
            )
        }
        ["explain", dir, t, key] => explain(&load(dir)?, &tenant(t)?, None, key),
        ["explain", dir, t, u, key] => explain(&load(dir)?, &tenant(t)?, Some(&actor(u)?), key),
        ["diff", a, b] => {
            let store = Arc::new(load(a)?);
            if !Path::new(b).is_dir() {
                return Err(Failure::Usage(format!("`{b}` is not a directory")));
            }
            let sources = PolicySources::from_dir(b).map_err(invalid(b))?;
            let report = store.reload(sources).map_err(invalid(b))?;
            Ok(serde_json::to_value(&report).map_err(|e| Failure::Invalid(e.to_string()))?)
        }
        ["diff-tenant", a, b, t] => {
            let t = tenant(t)?;
            let store = load(a)?;
            if !Path::new(b).is_dir() {
                return Err(Failure::Usage(format!("`{b}` is not a directory")));
            }
            let sources = TenantSources::from_dir(b, &t).map_err(invalid(b))?;
            let report = store.reload_tenant(&t, sources).map_err(invalid(b))?;
            Ok(serde_json::to_value(&report).map_err(|e| Failure::Invalid(e.to_string()))?)
        }
        [] => Err(Failure::Usage("no command given".into())),
        [cmd, ..] if !["validate", "merge", "explain", "diff", "diff-tenant"].contains(cmd) => {
            Err(Failure::Usage(format!("unknown command `{cmd}`")))
        }
        [cmd, ..] => Err(Failure::Usage(format!(
            "wrong number of arguments for `{cmd}`"
        ))),
    }
}

fn explain(
    store: &PolicyStore,
    t: &TenantId,
    u: Option<&ActorId>,
    key: &str,
) -> Result<Value, Failure> {
    let e = store
        .explain(t, u, key)
        .map_err(|e| Failure::Invalid(e.to_string()))?;
    serde_json::to_value(&e).map_err(|e| Failure::Invalid(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
