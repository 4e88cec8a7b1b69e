//! Validation cost is linear in the input: a large file with many problems reports a capped list
//! plus the total count (timings are measured outside the test suite; see `docs/policy.md`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_policy::{
    Layer, MAX_ENTRIES_PER_FILE, MAX_REPORTED_PROBLEMS, PolicyErrorKind, PolicySources,
    PolicyStore, TenantId,
};

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// About 1.3 MB: 100,000 unknown keys.
fn unknown_keys(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("unknown_{i:05} = 1\n"));
    }
    s
}

#[test]
fn a_huge_file_of_unknown_keys_reports_a_capped_list_and_the_total() {
    let text = unknown_keys(100_000);
    assert!(text.len() > 1_300_000, "{}", text.len());
    let errs = PolicyStore::new(
        PolicySources::new()
            .with_tenant(t("acme"), "tenants/acme.toml", &text)
            .with_tenant(t("globex"), "tenants/globex.toml", "bogus = 1\n"),
    )
    .unwrap_err();
    assert_eq!(errs.total(), 100_001);
    assert_eq!(errs.len(), MAX_REPORTED_PROBLEMS);
    assert_eq!(errs.errors().len(), MAX_REPORTED_PROBLEMS);
    // The first problems, in file order, each with its key and line.
    for (i, e) in errs.errors().iter().enumerate() {
        assert_eq!(
            (e.file.as_str(), e.layer, e.key.clone(), e.line),
            (
                "tenants/acme.toml",
                Layer::Tenant,
                Some(format!("unknown_{i:05}")),
                Some(u32::try_from(i + 1).unwrap())
            )
        );
        assert!(matches!(e.kind, PolicyErrorKind::UnknownKey(_)), "{e}");
    }
    let text = errs.to_string();
    assert!(
        text.starts_with("100001 policy problems (the first 100 shown):"),
        "{}",
        &text[..200]
    );
    assert!(text.trim_end().ends_with("… and 99901 more"), "{text}");
    assert_eq!(text.lines().count(), 1 + MAX_REPORTED_PROBLEMS + 1);
    // A list under the cap is shown whole, with no count line.
    let errs = PolicyStore::new(PolicySources::new().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        "a = 1\nb = 2\n",
    ))
    .unwrap_err();
    assert_eq!((errs.len(), errs.total()), (2, 2));
    assert!(errs.to_string().starts_with("2 policy problems:\n"));
    assert!(!errs.to_string().contains("more"));
}

#[test]
fn a_file_over_the_entry_cap_is_refused() {
    let text = "x = [".to_owned() + &"1,".repeat(MAX_ENTRIES_PER_FILE) + "1]\n";
    let errs =
        PolicyStore::new(PolicySources::new().with_tenant(t("acme"), "tenants/acme.toml", &text))
            .unwrap_err();
    assert_eq!(errs.total(), 1, "{errs}");
    let e = &errs.errors()[0];
    assert_eq!(e.file, "tenants/acme.toml");
    assert!(matches!(e.kind, PolicyErrorKind::TooLarge(_)), "{e}");
}

/// Run with `cargo test -p nodus-policy --release --test cost -- --ignored --nocapture` to print
/// the validation time of the largest inputs the caps allow.
#[test]
#[ignore = "a timing probe, not a test: run it by hand in release mode"]
fn timing_probe() {
    let text = unknown_keys(100_000);
    let start = std::time::Instant::now();
    let errs =
        PolicyStore::new(PolicySources::new().with_tenant(t("acme"), "tenants/acme.toml", &text))
            .unwrap_err();
    println!(
        "{} bytes, {} unknown keys: {:?} ({} problems listed)",
        text.len(),
        100_000,
        start.elapsed(),
        errs.errors().len()
    );
    let start = std::time::Instant::now();
    let parsed = toml::de::DeTable::parse(&text).unwrap();
    println!("  of which TOML parsing: {:?}", start.elapsed());
    drop(parsed);
    // The largest inputs the caps allow, of several shapes.
    let cap = usize::try_from(nodus_policy::MAX_FILE_BYTES).unwrap() - 64;
    let mut shapes: Vec<(&str, String)> = Vec::new();
    let mut short = String::new();
    let mut i = 0usize;
    while short.len() < cap {
        short.push_str(&format!("k{i}=1\n"));
        i += 1;
    }
    shapes.push(("short unknown keys up to the entry cap", short));
    let mut roles = String::from("[rbac.roles]\n");
    let mut i = 0usize;
    while roles.len() < cap {
        roles.push_str(&format!(
            "r{i} = [\"notes.read\", \"notes.*\", \"a.b.c\"]\n"
        ));
        i += 1;
    }
    shapes.push(("a role map of valid roles", roles));
    shapes.push((
        "one long string",
        format!("[observability]\nlevel = \"{}\"\n", "x".repeat(cap - 40)),
    ));
    let mut arr = String::from("[plugins]\nallowed = [");
    while arr.len() < cap {
        arr.push_str("\"p\",");
    }
    arr.push_str("]\n");
    shapes.push(("one long array", arr));
    for (name, text) in shapes {
        let start = std::time::Instant::now();
        let r = PolicyStore::new(PolicySources::new().with_tenant(
            t("acme"),
            "tenants/acme.toml",
            &text,
        ));
        println!(
            "{name}: {} bytes, {:?} (valid: {}, {} problems)",
            text.len(),
            start.elapsed(),
            r.is_ok(),
            r.err().map_or(0, |e| e.total())
        );
    }
}
