//! `audit_tool`: verify, export, prove and tail Nodus audit logs.
//!
//! ```sh
//! cargo run -p nodus-examples --example audit_tool -- verify <audit.db | export.json> [--key <base64|hex>] [--witness <file>]
//! cargo run -p nodus-examples --example audit_tool -- export <audit.db> <export.json>
//! cargo run -p nodus-examples --example audit_tool -- prove  <export.json> <index> [--key <base64|hex>]
//! cargo run -p nodus-examples --example audit_tool -- tail   <audit.db> [n]
//! ```
//!
//! `verify` checks a database against its witness (the latest checkpoint kept outside the
//! database): `--witness <file>`, else `<audit.db>.witness` when it exists (with a warning when it
//! does not). The report's `uncovered` counts records no checkpoint covers.
//!
//! `verify` tells a database from an export by parsing: a file starting with SQLite's 16-byte
//! header is a database; any other file must parse as an export document (JSON whose `format` is
//! `nodus-audit-export-v1`, whatever its whitespace), else it is refused.
//!
//! JSON on stdout (also for errors: `{"error": …}`), messages on stderr. Exit code 0 when the log
//! is valid (or the command succeeded), 1 when tampering is found (or a file cannot be read or
//! does not verify), 2 on usage errors.
//!
//! Trust: `verify` and `prove` check signatures with `--key` when given. Without it, they use the
//! public key stored in the file itself and say so — that catches accidents and partial tampering,
//! not someone who rewrote the whole file with their own key. Pass the key you trust.
//!
//! `prove` verifies the whole export first (every record against every signed checkpoint), then
//! prints the inclusion proof of one record against the latest checkpoint and checks it against
//! that checkpoint's *signed* root: what it prints can be re-checked with only the record, the
//! proof, the note and the verifier key.

use std::path::Path;
use std::process::ExitCode;

use nodus_security::audit::{
    AuditLog, export_tree, merkle, note, read_export_records, verify_db, verify_db_with_witness,
    verify_export,
};
use serde_json::{Value, json};

const USAGE: &str = "usage:
  audit_tool verify <audit.db|export.json> [--key <base64|hex>] [--witness <file>]
  audit_tool export <audit.db> <export.json>
  audit_tool prove <export.json> <index> [--key <base64|hex>]
  audit_tool tail <audit.db> [n]";

/// What a command ends with (and the exit code it maps to).
#[derive(Debug)]
pub(crate) enum Exit {
    /// Exit 0, with the JSON printed on stdout.
    Ok(Value),
    /// Exit 1: tampering found; the JSON report on stdout.
    Tampered(Value),
    /// Exit 1: a file could not be read, parsed or verified.
    Failed(String),
    /// Exit 2: a usage error.
    Usage(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Exit::Ok(v) => {
            print_line(&serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Exit::Tampered(v) => {
            print_line(&serde_json::to_string_pretty(&v).unwrap_or_default());
            eprintln!("tampering detected");
            ExitCode::from(1)
        }
        Exit::Failed(msg) => {
            print_line(&json!({ "valid": false, "error": msg }).to_string());
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Exit::Usage(msg) => {
            print_line(&json!({ "error": msg, "usage": USAGE }).to_string());
            eprintln!("error: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Writes `text` and a newline to stdout; a closed pipe only cuts the output short.
fn print_line(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn parse_key(s: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let bytes = if s.len() == 64 {
        hex::decode(s).ok()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(s).ok()?
    };
    bytes.try_into().ok()
}

/// What a file given to `verify` is.
enum Input {
    /// A SQLite database (its 16-byte file header says so).
    Database,
    /// An export: a JSON document whose `format` is `nodus-audit-export-v1`. Its public key
    /// (`None` when the field is not a 32-byte base64 key; verification then reports the error).
    Export(Option<[u8; 32]>),
}

/// Decides by parsing: a file that starts with SQLite's header is a database; any other file must
/// parse as an export document (whatever whitespace or layout it has), or it is neither.
fn classify(path: &Path) -> Result<Input, String> {
    use std::io::Read as _;
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let n = f.read(&mut head).unwrap_or(0);
    if head.get(..n) == Some(b"SQLite format 3\0".as_slice()) {
        return Ok(Input::Database);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "`{}` is neither an audit database nor an export: {e}",
            path.display()
        )
    })?;
    if v.get("format").and_then(Value::as_str) != Some("nodus-audit-export-v1") {
        return Err(format!(
            "`{}` is neither an audit database nor an export (`format` is not `nodus-audit-export-v1`)",
            path.display()
        ));
    }
    Ok(Input::Export(
        v.get("public_key")
            .and_then(Value::as_str)
            .and_then(parse_key),
    ))
}

/// Parses an optional trailing `--key <key>`.
fn key_option(rest: &[&str]) -> Result<Option<[u8; 32]>, Exit> {
    match rest {
        [] => Ok(None),
        ["--key", k] => parse_key(k)
            .map(Some)
            .ok_or_else(|| Exit::Usage(format!("`{k}` is not a 32-byte key in base64 or hex"))),
        _ => Err(Exit::Usage(
            "expected at most `--key <key>` after the arguments".into(),
        )),
    }
}

/// Parses `verify`'s options: `--key <key>` and `--witness <file>`, each at most once, in any
/// order.
fn verify_options<'a>(rest: &[&'a str]) -> Result<(Option<[u8; 32]>, Option<&'a str>), Exit> {
    let (mut key, mut witness) = (None, None);
    let mut it = rest.iter();
    while let Some(opt) = it.next() {
        match (*opt, it.next()) {
            ("--key", Some(k)) if key.is_none() => {
                key = Some(parse_key(k).ok_or_else(|| {
                    Exit::Usage(format!("`{k}` is not a 32-byte key in base64 or hex"))
                })?);
            }
            ("--witness", Some(w)) if witness.is_none() => {
                if !Path::new(w).is_file() {
                    return Err(Exit::Usage(format!("witness `{w}` is not a file")));
                }
                witness = Some(*w);
            }
            _ => {
                return Err(Exit::Usage(
                    "expected at most `--key <key>` and `--witness <file>` after the file".into(),
                ));
            }
        }
    }
    Ok((key, witness))
}

/// The export's signed-note key name (the name on its checkpoints' signature lines).
fn export_key_name(path: &Path) -> Option<String> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v.get("key_name")?.as_str().map(str::to_owned)
}

/// Runs the tool on its arguments (without the program name). The tests call this directly.
pub(crate) fn run(args: &[String]) -> Exit {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["verify", file, rest @ ..] => {
            let (key, witness) = match verify_options(rest) {
                Ok(o) => o,
                Err(e) => return e,
            };
            let path = Path::new(file);
            if !path.is_file() {
                return Exit::Usage(format!("`{file}` is not a file"));
            }
            if key.is_none() {
                eprintln!(
                    "warning: no --key given: trusting the public key stored in `{file}` itself"
                );
            }
            let input = match classify(path) {
                Ok(i) => i,
                Err(e) => return Exit::Failed(e),
            };
            if witness.is_some() && matches!(input, Input::Export(_)) {
                return Exit::Usage("--witness applies to a database, not an export".into());
            }
            let report = match input {
                Input::Export(file_key) => match key.or(file_key) {
                    Some(k) => verify_export(path, &k),
                    None => return Exit::Failed(format!("`{file}` has no valid `public_key`")),
                },
                Input::Database => match witness {
                    Some(w) => verify_db_with_witness(path, key.as_ref(), Some(Path::new(w))),
                    None => {
                        let beside = format!("{file}.witness");
                        if !Path::new(&beside).is_file() {
                            eprintln!(
                                "warning: no witness (`{beside}` is missing and no --witness given): signed history that lost its checkpoints cannot be told from unsigned records"
                            );
                        }
                        verify_db(path, key.as_ref())
                    }
                },
            };
            match report {
                Ok(r) => {
                    let v = serde_json::to_value(&r).unwrap_or(Value::Null);
                    if r.valid {
                        Exit::Ok(v)
                    } else {
                        Exit::Tampered(v)
                    }
                }
                Err(e) => Exit::Failed(e.to_string()),
            }
        }
        ["export", db, out] => {
            if !Path::new(db).is_file() {
                return Exit::Usage(format!("`{db}` is not a file"));
            }
            match AuditLog::export_db(Path::new(db), Path::new(out)) {
                Ok(s) => Exit::Ok(
                    json!({ "exported": out, "records": s.records, "checkpoints": s.checkpoints }),
                ),
                Err(e) => Exit::Failed(e.to_string()),
            }
        }
        ["prove", export, index, rest @ ..] => {
            let Ok(index) = index.parse::<u64>() else {
                return Exit::Usage(format!("`{index}` is not an index"));
            };
            let key = match key_option(rest) {
                Ok(k) => k,
                Err(e) => return e,
            };
            let path = Path::new(export);
            if !path.is_file() {
                return Exit::Usage(format!("`{export}` is not a file"));
            }
            let file_key = match classify(path) {
                Ok(Input::Export(k)) => k,
                Ok(Input::Database) => {
                    return Exit::Usage(format!("`{export}` is a database: export it first"));
                }
                Err(e) => return Exit::Failed(e),
            };
            let key = match key {
                Some(k) => k,
                None => {
                    eprintln!(
                        "warning: no --key given: trusting the public key stored in `{export}` itself"
                    );
                    match file_key {
                        Some(k) => k,
                        None => {
                            return Exit::Failed(format!("`{export}` has no valid `public_key`"));
                        }
                    }
                }
            };
            // The proof is only worth something against a checkpoint that verifies, over records
            // that verify (strictly: every record re-encodes to its leaf).
            match verify_export(path, &key) {
                Ok(r) if r.valid => {}
                Ok(r) => {
                    return Exit::Tampered(serde_json::to_value(&r).unwrap_or(Value::Null));
                }
                Err(e) => return Exit::Failed(e.to_string()),
            }
            let (records, checkpoints, _) = match read_export_records(path) {
                Ok(x) => x,
                Err(e) => return Exit::Failed(e.to_string()),
            };
            let Some(latest) = checkpoints.last() else {
                return Exit::Failed("the export has no checkpoint".into());
            };
            let size = latest.checkpoint.size;
            if index >= size {
                return Exit::Usage(format!(
                    "index {index} is not covered by the latest checkpoint (size {size})"
                ));
            }
            let tree = match export_tree(path) {
                Ok(t) => t,
                Err(e) => return Exit::Failed(e.to_string()),
            };
            let (Ok(proof), Some(leaf)) = (tree.inclusion_proof(index, size), tree.leaf(index))
            else {
                return Exit::Failed("the export's records do not cover the checkpoint".into());
            };
            let name = export_key_name(path).unwrap_or_else(|| latest.checkpoint.origin.clone());
            let vkey = note::verifier_key(&name, &key);
            let signed = note::parse_verifier_key(&vkey)
                .ok()
                .and_then(|k| note::verify_note(&latest.note, &k).ok())
                .is_some();
            let verified = signed
                && merkle::verify_inclusion(&leaf, index, size, &proof, &latest.checkpoint.root);
            let out = json!({
                "index": index,
                "tree_size": size,
                "leaf_hash": hex::encode(leaf),
                "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
                "root": hex::encode(latest.checkpoint.root),
                "checkpoint": latest.note,
                "verifier_key": vkey,
                "record": records.iter().find(|r| r.seq == index),
                "verified": verified,
            });
            if verified {
                Exit::Ok(out)
            } else {
                Exit::Tampered(out)
            }
        }
        ["tail", db, rest @ ..] => {
            let n = match rest {
                [] => 10,
                [n] => match n.parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => return Exit::Usage(format!("`{n}` is not a count")),
                },
                _ => return Exit::Usage("tail takes a database and an optional count".into()),
            };
            if !Path::new(db).is_file() {
                return Exit::Usage(format!("`{db}` is not a file"));
            }
            match AuditLog::tail_db(Path::new(db), n) {
                Ok(records) => Exit::Ok(serde_json::to_value(records).unwrap_or(Value::Null)),
                Err(e) => Exit::Failed(e.to_string()),
            }
        }
        [] => Exit::Usage("no command given".into()),
        [cmd, ..] => Exit::Usage(format!("unknown command or wrong arguments: `{cmd}`")),
    }
}
