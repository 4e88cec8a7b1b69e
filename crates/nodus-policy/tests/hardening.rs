//! Inputs the loader used to accept, skip or mishandle. Each gives a clear error naming the file
//! (and the key, where there is one) — never a panic, a hang or a silent default — and legal edge
//! values are accepted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use nodus_policy::{
    ActorId, Layer, MAX_DEPTH, MAX_FILE_BYTES, MAX_TOTAL_BYTES, PolicyError, PolicyErrorKind,
    PolicySources, PolicyStore, TenantId,
};

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn a(s: &str) -> ActorId {
    ActorId::new(s).unwrap()
}

fn errors(sources: PolicySources) -> Vec<PolicyError> {
    match PolicyStore::new(sources) {
        Ok(_) => panic!("expected validation errors"),
        Err(e) => e.errors().to_vec(),
    }
}

fn dir_errors(dir: &Path) -> Vec<PolicyError> {
    errors(PolicySources::from_dir(dir).unwrap())
}

fn only(sources: PolicySources) -> PolicyError {
    let mut e = errors(sources);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.pop().unwrap()
}

fn write(dir: &Path, rel: &str, text: impl AsRef<[u8]>) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `(file, layer, key)` of each error, and asserts each message starts with its file.
fn named(errs: &[PolicyError]) -> Vec<(String, Layer, Option<String>)> {
    for e in errs {
        assert!(e.to_string().starts_with(&e.file), "{e}");
    }
    errs.iter()
        .map(|e| (e.file.clone(), e.layer, e.key.clone()))
        .collect()
}

fn not_a_file(e: &PolicyError) -> bool {
    matches!(e.kind, PolicyErrorKind::NotAFile(_))
}

// --- the directory layout -----------------------------------------------------------------------

#[test]
fn a_directory_where_a_file_belongs_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for rel in [
        "schema.toml",
        "system.toml",
        "tenants/acme.toml",
        "users/globex/gina.toml",
    ] {
        std::fs::create_dir_all(d.join(rel)).unwrap();
    }
    write(d, "tenants/globex.toml", "");
    // acme's users are not reported again as users of an unknown tenant (its file is the problem).
    write(d, "users/acme/alice.toml", "");
    let errs = dir_errors(d);
    assert_eq!(
        named(&errs),
        vec![
            ("schema.toml".into(), Layer::Default, None),
            ("system.toml".into(), Layer::System, None),
            ("tenants/acme.toml".into(), Layer::Tenant, None),
            ("users/globex/gina.toml".into(), Layer::User, None),
        ],
        "{errs:#?}"
    );
    assert!(errs.iter().all(not_a_file), "{errs:#?}");
    assert!(errs[2].to_string().contains("directory"), "{}", errs[2]);
}

#[test]
fn tenants_and_users_that_are_files_instead_of_directories_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "tenants", "acme = 1\n");
    write(d, "users", "");
    let errs = dir_errors(d);
    assert_eq!(
        named(&errs),
        vec![
            ("tenants".into(), Layer::Tenant, None),
            ("users".into(), Layer::User, None),
        ],
        "{errs:#?}"
    );
    assert!(errs.iter().all(not_a_file), "{errs:#?}");
}

#[cfg(unix)]
#[test]
fn dangling_symlinks_and_symlink_loops_are_errors_naming_the_file() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tenants")).unwrap();
    std::fs::create_dir_all(d.join("users/globex")).unwrap();
    symlink(d.join("nowhere.toml"), d.join("tenants/acme.toml")).unwrap();
    symlink(d.join("tenants/loop.toml"), d.join("tenants/loop.toml")).unwrap();
    write(d, "real/globex.toml", "[observability]\nlevel = \"warn\"\n");
    symlink(d.join("real/globex.toml"), d.join("tenants/globex.toml")).unwrap();
    symlink(d.join("users/globex/b.toml"), d.join("users/globex/a.toml")).unwrap();
    symlink(d.join("users/globex/a.toml"), d.join("users/globex/b.toml")).unwrap();
    symlink(d.join("missing.toml"), d.join("system.toml")).unwrap();
    let errs = dir_errors(d);
    assert_eq!(
        named(&errs),
        vec![
            ("system.toml".into(), Layer::System, None),
            ("tenants/acme.toml".into(), Layer::Tenant, None),
            ("tenants/loop.toml".into(), Layer::Tenant, None),
            ("users/globex/a.toml".into(), Layer::User, None),
            ("users/globex/b.toml".into(), Layer::User, None),
        ],
        "{errs:#?}"
    );
    assert!(errs.iter().all(not_a_file), "{errs:#?}");
    assert!(errs[1].to_string().contains("symbolic link"), "{}", errs[1]);
    // A symlink to a regular file is followed.
    std::fs::remove_file(d.join("system.toml")).unwrap();
    std::fs::remove_file(d.join("tenants/acme.toml")).unwrap();
    std::fs::remove_file(d.join("tenants/loop.toml")).unwrap();
    std::fs::remove_dir_all(d.join("users")).unwrap();
    let store = PolicyStore::new(PolicySources::from_dir(d).unwrap()).unwrap();
    assert_eq!(
        store
            .snapshot(&t("globex"))
            .unwrap()
            .get_str("observability.level")
            .unwrap(),
        "warn"
    );
}

#[cfg(unix)]
#[test]
fn a_fifo_is_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("tenants")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(d.join("tenants/acme.toml"))
        .status()
        .unwrap();
    assert!(status.success());
    let errs = dir_errors(d);
    assert_eq!(
        named(&errs),
        vec![("tenants/acme.toml".into(), Layer::Tenant, None)]
    );
    assert!(not_a_file(&errs[0]), "{errs:#?}");
}

#[test]
fn nested_directories_under_tenants_and_users_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "tenants/acme.toml", "");
    write(d, "tenants/archive/old.toml", "");
    write(d, "users/acme/alice.toml", "");
    write(d, "users/acme/team/bob.toml", "");
    let errs = dir_errors(d);
    assert_eq!(
        named(&errs),
        vec![
            ("tenants/archive".into(), Layer::Tenant, None),
            ("users/acme/team".into(), Layer::User, None),
        ],
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .all(|e| matches!(e.kind, PolicyErrorKind::MisplacedFile(_))),
        "{errs:#?}"
    );
}

#[test]
fn a_non_utf8_file_is_its_own_error_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "tenants/acme.toml",
        b"# acme\n[observability]\nlevel = \"\xff\xfe\"\n",
    );
    write(
        d,
        "users/acme/alice.toml",
        "[observability]\nlevel = \"warn\"\n",
    );
    write(d, "users/acme/bob.toml", "");
    write(d, "tenants/globex.toml", "");
    write(d, "users/globex/gina.toml", b"\xc3\x28 = 1\n");
    let errs = dir_errors(d);
    assert_eq!(
        named(&errs),
        vec![
            ("tenants/acme.toml".into(), Layer::Tenant, None),
            ("users/globex/gina.toml".into(), Layer::User, None),
        ],
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .all(|e| matches!(e.kind, PolicyErrorKind::NotUtf8)),
        "{errs:#?}"
    );
    assert_eq!((errs[0].line, errs[1].line), (Some(3), Some(1)));
    assert!(errs[0].to_string().contains("UTF-8"), "{}", errs[0]);
    // The system file: reported alone, the layers above it are not checked against defaults.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "system.toml",
        b"[mac]\ncompartments = [\"CRYPTO\"]\n# \xff\n",
    );
    write(d, "schema.toml", "");
    write(
        d,
        "tenants/acme.toml",
        "[observability]\nlevel = \"warn\"\n",
    );
    let errs = dir_errors(d);
    assert_eq!(
        named(&errs),
        vec![("system.toml".into(), Layer::System, None)],
        "{errs:#?}"
    );
}

// --- the schema -----------------------------------------------------------------------------------

fn schema_error(schema: &str, key: &str) -> PolicyError {
    let e = only(PolicySources::new().with_schema("schema.toml", schema));
    assert_eq!(
        (e.file.as_str(), e.layer, e.key.as_deref()),
        ("schema.toml", Layer::Default, Some(key)),
        "{e}"
    );
    assert!(matches!(e.kind, PolicyErrorKind::InvalidSchema(_)), "{e}");
    assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
    e
}

#[test]
fn contradictory_schema_constraints_are_errors() {
    let key = |body: &str| format!("[keys.\"app.x\"]\nscope = \"user\"\n{body}\n");
    let e = schema_error(&key("type = \"integer\"\nmin = 10\nmax = 1"), "app.x");
    assert!(e.to_string().contains("min"), "{e}");
    schema_error(&key("type = \"float\"\nmin = nan"), "app.x");
    schema_error(&key("type = \"float\"\nmax = nan"), "app.x");
    schema_error(&key("type = \"float\"\nmax = inf"), "app.x");
    schema_error(&key("type = \"float\"\nmin = 2.0\nmax = 1.0"), "app.x");
    // Float bounds on an integer key.
    let e = schema_error(&key("type = \"integer\"\nmin = 0.5"), "app.x");
    assert!(e.to_string().contains("integer"), "{e}");
    schema_error(&key("type = \"integer\"\nmax = 10.0"), "app.x");
    // Bounds and lengths on types they do not apply to.
    schema_error(&key("type = \"string\"\nmin = 1"), "app.x");
    schema_error(&key("type = \"bool\"\nmax_len = 1"), "app.x");
    schema_error(&key("type = \"integer\"\nvalues = [\"a\"]"), "app.x");
}

#[test]
fn integers_beyond_the_exact_range_of_a_bound_are_errors() {
    // A bound a float cannot hold exactly is refused in the schema.
    let key =
        |body: &str| format!("[keys.\"app.x\"]\nscope = \"user\"\ntype = \"integer\"\n{body}\n");
    schema_error(&key("max = 9007199254740993"), "app.x");
    schema_error(&key("min = -9223372036854775808"), "app.x");
    // With an exact bound, integers compare exactly: 2^53 + 1 is above a max of 2^53.
    let s = PolicySources::new()
        .with_schema("schema.toml", &key("max = 9007199254740992"))
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[app]\nx = 9007199254740993\n",
        );
    let e = only(s);
    assert_eq!(
        (e.file.as_str(), e.key.as_deref(), e.line),
        ("tenants/acme.toml", Some("app.x"), Some(2))
    );
    assert!(matches!(e.kind, PolicyErrorKind::OutOfRange { .. }), "{e}");
    // A float key given an integer a float cannot hold exactly.
    let s = PolicySources::new()
        .with_schema(
            "schema.toml",
            "[keys.\"app.f\"]\nscope = \"user\"\ntype = \"float\"\n",
        )
        .with_tenant(
            t("acme"),
            "tenants/acme.toml",
            "[app]\nf = 9007199254740993\n",
        );
    let e = only(s);
    assert_eq!(e.key.as_deref(), Some("app.f"));
    assert!(matches!(e.kind, PolicyErrorKind::OutOfRange { .. }), "{e}");
}

#[test]
fn host_keys_colliding_with_or_under_built_in_keys_are_errors() {
    let decl = |k: &str| format!("[keys.\"{k}\"]\ntype = \"integer\"\nscope = \"tenant\"\n");
    let e = schema_error(&decl("rbac.roles.extra"), "rbac.roles.extra");
    assert!(e.to_string().contains("`rbac.roles`"), "{e}");
    schema_error(
        &decl("rate.limits.default.burst"),
        "rate.limits.default.burst",
    );
    // Host keys among themselves: a key and a section of the same name.
    let e =
        only(PolicySources::new().with_schema("schema.toml", &(decl("app.x") + &decl("app.x.y"))));
    assert_eq!(e.key.as_deref(), Some("app.x.y"), "{e}");
    assert!(matches!(e.kind, PolicyErrorKind::InvalidSchema(_)), "{e}");
    let e =
        only(PolicySources::new().with_schema("schema.toml", &(decl("app.x.y") + &decl("app.x"))));
    // Whichever of the two is declared second is the one in error; the message names the other.
    let (key, other) = match e.key.as_deref() {
        Some("app.x") => ("app.x", "`app.x.y`"),
        Some("app.x.y") => ("app.x.y", "`app.x`"),
        k => panic!("{k:?}: {e}"),
    };
    assert!(e.to_string().contains(other), "{key}: {e}");
    // Redefining a built-in key stays an error.
    schema_error(&decl("links.max_depth"), "links.max_depth");
}

// --- values ---------------------------------------------------------------------------------------

fn rate(body: &str) -> PolicyError {
    let e = only(PolicySources::new().with_tenant(
        t("acme"),
        "tenants/acme.toml",
        &format!("[rate.limits]\n{body}\n"),
    ));
    assert_eq!(
        (e.file.as_str(), e.layer, e.key.as_deref()),
        ("tenants/acme.toml", Layer::Tenant, Some("rate.limits")),
        "{e}"
    );
    assert!(e.to_string().contains("`strict`"), "{e}");
    e
}

#[test]
fn a_rate_limit_with_burst_zero_or_a_missing_field_is_an_error() {
    let e = rate("strict = { rate = 2, per = \"1s\", burst = 0 }");
    assert!(matches!(e.kind, PolicyErrorKind::OutOfRange { .. }), "{e}");
    assert!(e.to_string().contains("burst"), "{e}");
    for missing in [
        ("strict = { per = \"1s\", burst = 2 }", "rate"),
        ("strict = { rate = 2, burst = 2 }", "per"),
        ("strict = { rate = 2, per = \"1s\" }", "burst"),
    ] {
        let e = rate(missing.0);
        assert!(e.to_string().contains(&format!("`{}`", missing.1)), "{e}");
    }
}

#[test]
fn duplicate_or_malformed_compartments_name_mac_compartments() {
    for comps in [
        "[\"CRYPTO\", \"crypto\"]",
        "[\"A/B\"]",
        "[\"\"]",
        "[\" X\"]",
        "[\"A,B\"]",
        "[\"SECRET\"]",
    ] {
        // The tenant's label is not reported again against a stand-in scheme.
        let e = only(
            PolicySources::new()
                .with_schema(
                    "schema.toml",
                    "[keys.\"app.label\"]\ntype = \"label\"\nscope = \"user\"\n",
                )
                .with_system(
                    "system.toml",
                    &format!("[mac]\nlevels = [\"PUBLIC\", \"SECRET\"]\ncompartments = {comps}\n"),
                )
                .with_tenant(
                    t("acme"),
                    "tenants/acme.toml",
                    "[app]\nlabel = \"SECRET//CRYPTO\"\n",
                ),
        );
        assert_eq!(
            (e.file.as_str(), e.layer, e.key.as_deref(), e.line),
            (
                "system.toml",
                Layer::System,
                Some("mac.compartments"),
                Some(3)
            ),
            "{comps}: {e}"
        );
        assert!(matches!(e.kind, PolicyErrorKind::InvalidLabel(_)), "{e}");
    }
    let e = only(PolicySources::new().with_system(
        "system.toml",
        "[mac]\ncompartments = [\"X\"]\nlevels = [\"A\", \"a\"]\n",
    ));
    assert_eq!(
        (e.key.as_deref(), e.line),
        (Some("mac.levels"), Some(3)),
        "{e}"
    );
}

#[test]
fn a_label_scheme_that_breaks_a_host_default_is_an_error() {
    let schema = "[keys.\"notes.default_label\"]\ntype = \"label\"\nscope = \"user\"\ndefault = \"UNCLASSIFIED\"\n";
    let e = only(
        PolicySources::new()
            .with_schema("schema.toml", schema)
            .with_system("system.toml", "[mac]\nlevels = [\"PUBLIC\", \"PRIVATE\"]\n"),
    );
    assert_eq!(
        (e.file.as_str(), e.layer, e.key.as_deref(), e.line),
        ("system.toml", Layer::System, Some("mac.levels"), Some(2))
    );
    assert!(matches!(e.kind, PolicyErrorKind::InvalidLabel(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("`notes.default_label`"), "{text}");
    assert!(text.contains("UNCLASSIFIED"), "{text}");
    // The inverse: a host default valid under the policy's own scheme is accepted (it used to be
    // checked against the classic scheme).
    let schema = "[keys.\"notes.default_label\"]\ntype = \"label\"\nscope = \"user\"\ndefault = \"PUBLIC\"\n";
    let store = PolicyStore::new(
        PolicySources::new()
            .with_schema("schema.toml", schema)
            .with_system("system.toml", "[mac]\nlevels = [\"PUBLIC\", \"PRIVATE\"]\n")
            .with_tenant(t("acme"), "tenants/acme.toml", ""),
    )
    .unwrap();
    let snap = store.snapshot(&t("acme")).unwrap();
    assert_eq!(snap.get_label("notes.default_label").unwrap().level(), 0);
}

#[test]
fn legal_edge_values_are_accepted() {
    let levels: Vec<String> = (0..256).map(|i| format!("\"L{i}\"")).collect();
    let comps: Vec<String> = (0..128).map(|i| format!("\"C{i}\"")).collect();
    // The extreme integer bounds, and a label default only the policy's own scheme can parse.
    let schema = "[keys.\"app.n\"]\ntype = \"integer\"\nscope = \"user\"\nmin = -9007199254740992\nmax = 9007199254740992\n[keys.\"app.label\"]\ntype = \"label\"\nscope = \"user\"\ndefault = \"L255//C127\"\n";
    let store = PolicyStore::new(
        PolicySources::new()
            .with_schema("schema.toml", schema)
            .with_system(
                "system.toml",
                &format!(
                    "[mac]\nlevels = [{}]\ncompartments = [{}]\n",
                    levels.join(", "),
                    comps.join(", ")
                ),
            )
            .with_tenant(
                t("acme"),
                "tenants/acme.toml",
                "[app]\nn = 9007199254740992\nlabel = \"L255//C0,C127\"\n[rate.limits]\nclosed = { rate = 0, per = \"1s\", burst = 1 }\nhuge = { rate = 4294967295, per = \"1ms\", burst = 4294967295 }\n",
            )
            .with_user(
                t("acme"),
                a("alice"),
                "users/acme/alice.toml",
                "[app]\nn = -9007199254740992\n",
            ),
    )
    .unwrap();
    let snap = store.snapshot(&t("acme")).unwrap();
    let alice = store.user_snapshot(&t("acme"), &a("alice")).unwrap();
    // The default (the system snapshot: no tenant sets it there).
    assert_eq!(
        store.system_snapshot().get_label("app.label").unwrap(),
        snap.label_scheme().parse("L255//C127").unwrap()
    );
    assert_eq!(alice.get_int("app.n").unwrap(), -9_007_199_254_740_992);
    let top = snap.get_label("app.label").unwrap();
    assert_eq!(top.level(), 255);
    assert_eq!(top.compartments(), 1 | (1u128 << 127));
    assert_eq!(snap.label_scheme().levels().len(), 256);
    assert_eq!(snap.get_int("app.n").unwrap(), 9_007_199_254_740_992);
    // One level more: one error at `mac.levels`, and the tenant's labels (valid under the scheme
    // meant) are not reported again against a stand-in scheme.
    let too_many: Vec<String> = (0..257).map(|i| format!("\"L{i}\"")).collect();
    let e = only(
        PolicySources::new()
            .with_schema("schema.toml", schema)
            .with_system(
                "system.toml",
                &format!("[mac]\nlevels = [{}]\n", too_many.join(", ")),
            )
            .with_tenant(t("acme"), "tenants/acme.toml", "[app]\nlabel = \"L256\"\n"),
    );
    assert_eq!(e.key.as_deref(), Some("mac.levels"), "{e}");
}

// --- size caps ------------------------------------------------------------------------------------

#[test]
fn a_file_over_the_size_cap_is_refused_before_parsing() {
    let big = "#".repeat(usize::try_from(MAX_FILE_BYTES).unwrap() + 1);
    let e = only(PolicySources::new().with_tenant(t("acme"), "tenants/acme.toml", &big));
    assert_eq!(
        (e.file.as_str(), e.layer),
        ("tenants/acme.toml", Layer::Tenant)
    );
    assert!(matches!(e.kind, PolicyErrorKind::TooLarge(_)), "{e}");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tenants/acme.toml", &big);
    write(dir.path(), "users/acme/alice.toml", "");
    let errs = dir_errors(dir.path());
    assert_eq!(
        named(&errs),
        vec![("tenants/acme.toml".into(), Layer::Tenant, None)],
        "{errs:#?}"
    );
    assert!(
        matches!(errs[0].kind, PolicyErrorKind::TooLarge(_)),
        "{errs:#?}"
    );
}

#[test]
fn a_directory_over_the_total_cap_is_refused_at_the_file_that_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Nine comment-only files just under the per-file cap pass the 16 MiB total at the ninth.
    let chunk = "#".repeat(usize::try_from(MAX_FILE_BYTES).unwrap() - 1) + "\n";
    let n = usize::try_from(MAX_TOTAL_BYTES / MAX_FILE_BYTES).unwrap() + 1;
    for i in 0..n {
        write(d, &format!("tenants/t{i}.toml"), &chunk);
    }
    let errs = dir_errors(d);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].file, format!("tenants/t{}.toml", n - 1));
    assert!(
        matches!(errs[0].kind, PolicyErrorKind::TooLarge(_)),
        "{errs:#?}"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    // Past `MAX_DEPTH`: refused as too large, naming the file and the key.
    let deep = format!(
        "[plugins]\nallowed = {}\"p\"{}\n",
        "[".repeat(MAX_DEPTH + 2),
        "]".repeat(MAX_DEPTH + 2)
    );
    let e = only(PolicySources::new().with_tenant(t("acme"), "tenants/acme.toml", &deep));
    assert_eq!(
        (e.file.as_str(), e.key.as_deref(), e.line),
        ("tenants/acme.toml", Some("plugins.allowed"), Some(2))
    );
    assert!(matches!(e.kind, PolicyErrorKind::TooLarge(_)), "{e}");
    // Far past it, in the parser's own terms: still one error, never a stack overflow.
    let dotted = format!("{} = 1\n", vec!["a"; 50_000].join("."));
    let e = only(PolicySources::new().with_tenant(t("acme"), "tenants/acme.toml", &dotted));
    assert_eq!(e.file, "tenants/acme.toml");
    let arrays = format!("x = {}1{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let e = only(PolicySources::new().with_tenant(t("acme"), "tenants/acme.toml", &arrays));
    assert_eq!(e.file, "tenants/acme.toml");
}
