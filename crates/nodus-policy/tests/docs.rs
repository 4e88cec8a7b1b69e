//! `docs/policy.md` stays true: its built-in key table lists exactly the keys of the built-in
//! schema, each with the schema's type, scope, default, constraints and documentation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use nodus_policy::{KeySpec, Schema, ValueType};

fn guide() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/policy.md")).unwrap()
}

/// The rows of the markdown table under `heading`, as cells (`\|` unescaped), header excluded.
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section `{heading}`"));
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.replace("\\|", "\u{0}")
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('\u{0}', "|"))
                .collect()
        })
        .collect()
}

fn unquote(cell: &str) -> &str {
    cell.strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or(cell)
}

fn constraints(spec: &KeySpec) -> String {
    let num = |x: f64| {
        if spec.ty == ValueType::Float {
            format!("{x:?}")
        } else {
            format!("{x}")
        }
    };
    let mut parts = Vec::new();
    if let Some(m) = spec.min {
        parts.push(format!("min {}", num(m)));
    }
    if let Some(m) = spec.max {
        parts.push(format!("max {}", num(m)));
    }
    if let Some(m) = spec.max_len {
        parts.push(format!("max_len {m}"));
    }
    if !spec.values.is_empty() {
        parts.push(spec.values.join(" | "));
    }
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(", ")
    }
}

#[test]
fn the_guide_lists_every_built_in_key_as_the_schema_declares_it() {
    let doc = guide();
    let rows: BTreeMap<String, Vec<String>> = table(&doc, "Built-in keys")
        .into_iter()
        .map(|r| (unquote(&r[0]).to_owned(), r))
        .collect();
    let schema = Schema::builtin();
    let declared: Vec<&str> = schema.keys().map(|k| k.key.as_str()).collect();
    let documented: Vec<&str> = rows.keys().map(String::as_str).collect();
    assert_eq!(
        documented, declared,
        "the guide's key table and the schema differ"
    );
    for spec in schema.keys() {
        let row = &rows[&spec.key];
        assert_eq!(row.len(), 6, "{row:?}");
        assert_eq!(row[1], spec.ty.name(), "type of `{}`", spec.key);
        assert_eq!(row[2], spec.scope.to_string(), "scope of `{}`", spec.key);
        let default: serde_json::Value = serde_json::from_str(unquote(&row[3]))
            .unwrap_or_else(|e| panic!("default of `{}`: {e}", spec.key));
        assert_eq!(
            default,
            serde_json::to_value(&spec.default).unwrap(),
            "default of `{}`",
            spec.key
        );
        assert_eq!(row[4], constraints(spec), "constraints of `{}`", spec.key);
        assert_eq!(row[5], spec.doc, "meaning of `{}`", spec.key);
    }
}

#[test]
fn the_guide_shows_the_schema_format_it_documents() {
    // The guide's schema example is the sample host schema, which must itself be valid.
    let doc = guide();
    for needle in [
        "[keys.\"notes.max_attachments\"]",
        "type = \"integer\"",
        "scope = \"tenant\"",
        "users/<tenant>/<actor>.toml",
        "tenants/<tenant>.toml",
        "system.toml",
        "SECRET//CRYPTO,NOFORN",
    ] {
        assert!(doc.contains(needle), "the guide lacks {needle}");
    }
}
