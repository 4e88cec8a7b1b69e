//! Runnable starter templates for the Nodus SDK.
//!
//! The examples live beside this file; run one with
//! `cargo run -p nodus-examples --example <name> -- <args>`. This library holds nothing but the
//! path of the sample policies the examples share.

use std::path::PathBuf;

/// The directory holding the sample policies (`examples/policies`).
pub fn sample_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// Writes `text` and a newline to stdout for the command-line examples. A closed pipe (the tool
/// piped into `head`) is not an error worth a panic: the output is simply cut short.
pub fn print_line(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}
