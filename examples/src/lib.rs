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
