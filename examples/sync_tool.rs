//! `sync_tool`: the `nodus-sync` command line — move a tenant's data between air-gapped nodes as
//! sealed `.noduspkg` bundles, through the instance's audited `sync.*` built-ins.
//!
//! ```sh
//! export NODUS_MASTER_KEY=<64 hex digits or base64>       # the node's vault master key
//! sync_tool keys   --data <dir>                            # this node's identity, for a peer
//! sync_tool trust  --data <dir> <peer-keys.json | ->       # trust a peer (its `keys` output) for --tenant
//! sync_tool export --data <dir> --to <key id>[,<key id>…] [--out <path>] [--since-last]
//! sync_tool verify --data <dir> <bundle>                   # every check, a dry run
//! sync_tool import --data <dir> <bundle> [--dry-run]       # verify, stage, activate
//! sync_tool status --data <dir>                            # the air-gap posture report
//! ```
//!
//! Common options: `--tenant <id>` (default `acme`), `--policy <dir>` (default: a built-in
//! policy giving the `operator` role `sync.*` for that tenant), `--role <role>` (default
//! `operator`), `--clearance <label>` (default `UNCLASSIFIED`: the import ceiling when the policy
//! sets none).
//!
//! A `<bundle>` that names an existing file outside the node is copied into the node's inbox
//! first (the commands themselves only accept a file name in the inbox); `--out` copies the
//! exported bundle from the outbox to a path of your choice (a USB stick). `--since-last` exports
//! only what follows the last export to the same peers.
//!
//! JSON on stdout (errors too: `{"error": {"code", "message"}}`), messages on stderr. Exit code 0
//! on success, 1 when a bundle is rejected or a command fails, 2 on usage errors.

// `serde_json::Value[...]` never panics (a missing key or index reads as `null`).
#![allow(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nodus_core::{ActorId, MasterKey, Nodus, PolicySources, TenantId};
use serde_json::{Value, json};

const USAGE: &str = "usage:
  sync_tool keys   --data <dir>
  sync_tool trust  --data <dir> <peer-keys.json | ->
  sync_tool export --data <dir> --to <key id>[,<key id>...] [--out <path>] [--since-last]
  sync_tool verify --data <dir> <bundle>
  sync_tool import --data <dir> <bundle> [--dry-run]
  sync_tool status --data <dir>
options: --tenant <id> (acme)  --policy <dir>  --role <role> (operator)  --clearance <label>
the master key is read from NODUS_MASTER_KEY";

const SYSTEM: &str = "[audit]\ndurability = \"normal\"\n";
const TENANT: &str = "[rbac.roles]\noperator = [\"sync.*\"]\n";

enum Exit {
    Ok(Value),
    Failed(Value),
    Usage(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Exit::Ok(v) => {
            print_line(&serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Exit::Failed(v) => {
            print_line(&v.to_string());
            eprintln!("sync_tool: failed");
            ExitCode::from(1)
        }
        Exit::Usage(msg) => {
            print_line(&json!({"error": {"code": "Usage", "message": msg}}).to_string());
            eprintln!("error: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn print_line(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn failed(code: &str, message: impl std::fmt::Display) -> Exit {
    Exit::Failed(json!({"error": {"code": code, "message": message.to_string()}}))
}

/// Parsed options: flags with a value, boolean flags, positional arguments.
struct Args {
    data: Option<PathBuf>,
    tenant: String,
    policy: Option<PathBuf>,
    role: String,
    clearance: String,
    to: Vec<String>,
    out: Option<PathBuf>,
    dry_run: bool,
    since_last: bool,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        data: None,
        tenant: "acme".into(),
        policy: None,
        role: "operator".into(),
        clearance: "UNCLASSIFIED".into(),
        to: Vec::new(),
        out: None,
        dry_run: false,
        since_last: false,
        positional: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("`{name}` needs a value"))
        };
        match arg.as_str() {
            "--data" => a.data = Some(PathBuf::from(value("--data")?)),
            "--tenant" => a.tenant = value("--tenant")?,
            "--policy" => a.policy = Some(PathBuf::from(value("--policy")?)),
            "--role" => a.role = value("--role")?,
            "--clearance" => a.clearance = value("--clearance")?,
            "--to" => a.to.extend(
                value("--to")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "--out" => a.out = Some(PathBuf::from(value("--out")?)),
            "--dry-run" => a.dry_run = true,
            "--since-last" => a.since_last = true,
            s if s.starts_with("--") => return Err(format!("unknown option `{s}`")),
            s => a.positional.push(s.to_owned()),
        }
    }
    Ok(a)
}

fn run(args: &[String]) -> Exit {
    let Some((cmd, rest)) = args.split_first() else {
        return Exit::Usage("no command".into());
    };
    if !["keys", "trust", "export", "verify", "import", "status"].contains(&cmd.as_str()) {
        return Exit::Usage(format!("unknown command `{cmd}`"));
    }
    let a = match parse(rest) {
        Ok(a) => a,
        Err(e) => return Exit::Usage(e),
    };
    let Some(data) = a.data.clone() else {
        return Exit::Usage("`--data <dir>` is required".into());
    };
    let wanted = match cmd.as_str() {
        "trust" | "verify" | "import" => 1,
        _ => 0,
    };
    if a.positional.len() != wanted {
        return Exit::Usage(format!(
            "`{cmd}` takes {wanted} argument(s), {} given",
            a.positional.len()
        ));
    }
    if cmd == "export" && a.to.is_empty() {
        return Exit::Usage("`export` needs `--to <key id>`".into());
    }
    let node = match open(&data, &a) {
        Ok(n) => n,
        Err(e) => return failed("OpenFailed", e),
    };
    let result = match cmd.as_str() {
        "keys" => node
            .nodus
            .sync()
            .keys()
            .map_err(|e| ("SyncNotConfigured".to_owned(), e.to_string()))
            .and_then(|k| serde_json::to_value(k).map_err(|e| ("Json".into(), e.to_string()))),
        "trust" => trust(&node, a.positional.first().map_or("-", String::as_str)),
        "export" => export(&node, &a),
        "verify" => bundle(&node, a.positional.first(), true),
        "import" => bundle(&node, a.positional.first(), a.dry_run),
        _ => node.call("sync.status", json!({})),
    };
    let _ = node.nodus.shutdown();
    match result {
        Ok(v) => Exit::Ok(v),
        Err((code, message)) => failed(&code, message),
    }
}

struct Node {
    nodus: Nodus,
    ctx: nodus_core::Context,
}

type CallResult = Result<Value, (String, String)>;

impl Node {
    fn call(&self, cmd: &str, input: Value) -> CallResult {
        self.nodus
            .dispatch(&self.ctx, cmd, &input.to_string())
            .map_err(|e| (e.code().to_owned(), e.to_string()))
    }
    fn inbox(&self) -> Result<PathBuf, (String, String)> {
        self.nodus
            .sync()
            .dir()
            .map(|d| d.join("inbox"))
            .map_err(|e| ("SyncNotConfigured".to_owned(), e.to_string()))
    }
}

fn open(data: &Path, a: &Args) -> Result<Node, String> {
    let key = MasterKey::from_env("NODUS_MASTER_KEY").map_err(|e| e.to_string())?;
    let tenant = TenantId::new(&a.tenant).map_err(|e| e.to_string())?;
    let builder = Nodus::builder().data_dir(data).master_key(key);
    let builder = match &a.policy {
        Some(dir) => builder.policy_dir(dir),
        None => builder.policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant.clone(), &format!("tenants/{tenant}.toml"), TENANT),
        ),
    };
    let nodus = builder.build().map_err(|e| e.to_string())?;
    let actor = ActorId::new("sync-tool").map_err(|e| e.to_string())?;
    let subject = nodus
        .subject(&tenant, actor, &[a.role.as_str()], &a.clearance)
        .map_err(|e| e.to_string())?;
    let ctx = nodus.context(&tenant, subject, "sync-tool");
    Ok(Node { nodus, ctx })
}

fn trust(node: &Node, source: &str) -> CallResult {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| ("Io".to_owned(), e.to_string()))?;
        s
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| ("Io".to_owned(), format!("`{source}`: {e}")))?
    };
    let keys: nodus_core::sync_commands::PeerKeys = serde_json::from_str(&text)
        .map_err(|e| ("BadPeer".to_owned(), format!("not a `keys` document: {e}")))?;
    node.nodus
        .sync()
        .trust_peer(&keys, std::slice::from_ref(node.ctx.tenant()))
        .map_err(|e| ("BadPeer".to_owned(), e.to_string()))?;
    Ok(json!({"trusted": keys.key_id, "tenants": [node.ctx.tenant().as_str()]}))
}

fn export(node: &Node, a: &Args) -> CallResult {
    let mut out = node.call(
        "sync.export",
        json!({"to": a.to, "since_last": a.since_last}),
    )?;
    if let Some(dest) = &a.out {
        let file = out["file"].as_str().unwrap_or_default().to_owned();
        let src = node
            .nodus
            .sync()
            .dir()
            .map_err(|e| ("SyncNotConfigured".to_owned(), e.to_string()))?
            .join("outbox")
            .join(&file);
        std::fs::copy(&src, dest)
            .map_err(|e| ("Io".to_owned(), format!("`{}`: {e}", dest.display())))?;
        out["copied_to"] = json!(dest.display().to_string());
    }
    Ok(out)
}

/// `verify` (dry run) or `import` (stage + activate) of a bundle: an existing path is copied
/// into the inbox first; anything else is a file name in the inbox.
fn bundle(node: &Node, arg: Option<&String>, dry_run: bool) -> CallResult {
    let arg = arg.map_or("", String::as_str);
    let path = Path::new(arg);
    let name = if path.is_file() && path.components().count() > 1 {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = node.inbox()?.join(&name);
        std::fs::copy(path, &dest).map_err(|e| ("Io".to_owned(), format!("`{arg}`: {e}")))?;
        name
    } else {
        arg.to_owned()
    };
    let verified = node.call("sync.verify", json!({"file": name}))?;
    if dry_run {
        return Ok(json!({"verified": verified}));
    }
    let staged = node.call("sync.stage", json!({"file": name}))?;
    let activated = node.call("sync.activate", json!({"bundle_id": staged["bundle_id"]}))?;
    Ok(json!({"verified": verified, "activated": activated}))
}
