//! The command registry through its public API: every registration refusal, copy-on-write reads,
//! quarantine on revalidation (kept, inactive, listed), and readers racing a writer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nodus_policy::{ActorId, Label, LabelScheme, Subject, Symbols, TenantId};
use nodus_registry::commands::{
    Command, CommandError, CommandRegistry, CommandSpec, CommandStatus, Context, JsonCallError,
    RegistryError, parse_input,
};
use serde::Deserialize;

/// A typed command whose name is chosen at construction.
struct Named(&'static str);
impl Command for Named {
    type Input = ();
    type Output = &'static str;
    fn spec(&self) -> CommandSpec {
        CommandSpec::new(self.0)
    }
    fn call(&self, _: &Context, _: ()) -> Result<&'static str, CommandError> {
        Ok(self.0)
    }
}

struct Other;
impl Command for Other {
    type Input = ();
    type Output = ();
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.other").min_label("SECRET//CRYPTO")
    }
    fn call(&self, _: &Context, _: ()) -> Result<(), CommandError> {
        Ok(())
    }
}

fn null(_: &Context, _: &str) -> Result<serde_json::Value, JsonCallError> {
    Ok(serde_json::Value::Null)
}

fn registry() -> CommandRegistry {
    CommandRegistry::new(Arc::new(Symbols::default()))
}

fn crypto() -> LabelScheme {
    LabelScheme::new(
        ["UNCLASSIFIED", "CONFIDENTIAL", "SECRET", "TOP SECRET"],
        ["CRYPTO"],
    )
    .unwrap()
}

fn ctx() -> Context {
    let symbols = Symbols::default();
    Context::new(
        TenantId::new("acme").unwrap(),
        Subject::new(
            TenantId::new("acme").unwrap(),
            ActorId::new("alice").unwrap(),
            symbols.role_set(["editor"]),
            Label::BOTTOM,
            &crypto(),
        ),
        "s",
    )
}

#[test]
fn every_registration_refusal_names_the_command() {
    let r = registry();
    let scheme = crypto();
    r.register(Named("notes.create"), &scheme).unwrap();

    // The same name again, typed or JSON.
    assert_eq!(
        r.register_json(CommandSpec::new("notes.create"), null, &scheme),
        Err(RegistryError::Duplicate("notes.create".into()))
    );
    // The same Rust type under another name: `invoke::<C>` would be ambiguous.
    let e = r.register(Named("notes.again"), &scheme).unwrap_err();
    assert_eq!(
        e,
        RegistryError::DuplicateType("notes.again".into(), "notes.create".into())
    );
    assert_eq!(
        e.to_string(),
        "the command type behind `notes.again` is already registered as `notes.create`"
    );
    // Names: dotted lowercase segments, bounded length.
    for bad in [
        "",
        "Notes.create",
        "notes..create",
        ".notes",
        "notes create",
        "nötes",
    ] {
        let e = r
            .register_json(CommandSpec::new(bad.to_owned()), null, &scheme)
            .unwrap_err();
        assert_eq!(e, RegistryError::InvalidName(bad.into()));
        assert!(
            e.to_string()
                .starts_with(&format!("invalid command name `{bad}`"))
        );
    }
    let long = format!(
        "a.{}",
        "b".repeat(nodus_registry::commands::MAX_COMMAND_NAME)
    );
    assert!(matches!(
        r.register_json(CommandSpec::new(long), null, &scheme),
        Err(RegistryError::InvalidName(_))
    ));
    // Empty permission or rate class.
    let e = r
        .register_json(CommandSpec::new("notes.a").permission(""), null, &scheme)
        .unwrap_err();
    assert_eq!(e.to_string(), "command `notes.a` has an empty permission");
    let e = r
        .register_json(CommandSpec::new("notes.b").rate_class("  "), null, &scheme)
        .unwrap_err();
    assert_eq!(e.to_string(), "command `notes.b` has an empty rate class");
    // A minimum label the scheme cannot parse.
    let e = r
        .register_json(
            CommandSpec::new("notes.c").min_label("SECRET//UMBRA"),
            null,
            &scheme,
        )
        .unwrap_err();
    assert!(
        matches!(&e, RegistryError::InvalidLabel { command, label, .. }
        if command == "notes.c" && label == "SECRET//UMBRA")
    );
    assert!(e.to_string().contains("`SECRET//UMBRA`"), "{e}");
    // Nothing refused was half-registered.
    assert_eq!(r.list().len(), 1);
    assert_eq!(r.resolve("notes.again"), None);
}

#[test]
fn ids_are_dense_and_reads_are_snapshots() {
    let r = registry();
    let scheme = crypto();
    let a = r.register(Named("notes.a"), &scheme).unwrap();
    let held = r.load();
    let b = r.register(Other, &scheme).unwrap();
    assert_eq!((a.0, b.0), (0, 1));
    // A table loaded before a write is unchanged by it (writers swap a new table).
    assert_eq!(held.entries().len(), 1);
    assert_eq!(held.resolve("notes.other"), None);
    assert_eq!(r.load().resolve("notes.other"), Some(b));
    assert_eq!(r.id_of::<Other>(), Some(b));
    assert_eq!(r.id_of::<Named>(), Some(a));
    let now = r.load();
    let entry = now.get(b).unwrap();
    assert_eq!(entry.name().as_ref(), "notes.other");
    assert!(entry.typed::<Other>().is_some());
    assert!(entry.typed::<Named>().is_none());
    assert!(now.get(nodus_registry::commands::CommandId(99)).is_none());
}

#[test]
fn revalidation_quarantines_keeps_and_reinstates() {
    let r = registry();
    let id = r.register(Other, &crypto()).unwrap();
    r.register(Named("notes.plain"), &crypto()).unwrap();
    let held = r.load();
    let no_crypto = LabelScheme::new(["UNCLASSIFIED", "SECRET"], Vec::<&str>::new()).unwrap();
    let changes = r.revalidate(&no_crypto);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].command, "notes.other");
    assert_eq!(changes[0].from, CommandStatus::Active);
    // Kept, resolvable, listed with its reason; inactive.
    assert_eq!(r.resolve("notes.other"), Some(id));
    let info = r.list().into_iter().find(|c| c.id == id).unwrap();
    match &info.status {
        CommandStatus::Quarantined { reason } => {
            assert!(reason.contains("`SECRET//CRYPTO`"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!r.load().get(id).unwrap().is_active());
    assert!(
        held.get(id).unwrap().is_active(),
        "readers of the old table are unaffected"
    );
    // Still quarantined under the same scheme: no change reported.
    assert!(r.revalidate(&no_crypto).is_empty());
    // Reinstated when the label parses again, with its parsed label back.
    let back = r.revalidate(&crypto());
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].to, CommandStatus::Active);
    let now = r.load();
    let entry = now.get(id).unwrap();
    assert!(entry.is_active());
    assert_eq!(
        entry.min_label(),
        Some(crypto().parse("SECRET//CRYPTO").unwrap())
    );
}

#[test]
fn readers_never_wait_for_a_writer() {
    let r = Arc::new(registry());
    let scheme = crypto();
    r.register(Named("notes.base"), &scheme).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let r = r.clone();
            let stop = stop.clone();
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                loop {
                    let t = r.load();
                    // Every table is internally consistent: each name resolves to its own entry.
                    for e in t.entries() {
                        assert_eq!(t.resolve(e.name()), Some(e.id()));
                    }
                    assert!(t.resolve("notes.base").is_some());
                    reads += 1;
                    if reads == 1 {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                    if stop.load(Ordering::Relaxed) {
                        return reads;
                    }
                }
            })
        })
        .collect();
    while ready.load(Ordering::SeqCst) < 2 {
        std::thread::yield_now();
    }
    for i in 0..200 {
        r.register_json(CommandSpec::new(format!("bulk.c{i}")), null, &scheme)
            .unwrap();
        if i % 50 == 0 {
            r.revalidate(&scheme);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in readers {
        assert!(h.join().unwrap() > 0);
    }
    assert_eq!(r.list().len(), 201);
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Item {
    title: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Batch {
    items: Vec<Item>,
}

#[test]
fn json_input_errors_name_the_path() {
    let e =
        parse_input::<Batch>(r#"{"items":[{"title":"a"},{"title":"b"},{"title":3}]}"#).unwrap_err();
    assert!(
        matches!(&e, JsonCallError::InvalidInput { path, .. } if path == "items[2].title"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("invalid input at `items[2].title`"),
        "{e}"
    );
    let e = parse_input::<Batch>(r#"{"items":[]} {"#).unwrap_err();
    assert!(
        matches!(&e, JsonCallError::InvalidInput { path, .. } if path == "."),
        "{e:?}"
    );
    let e = parse_input::<Batch>("\"x\"").unwrap_err();
    assert!(
        matches!(&e, JsonCallError::InvalidInput { path, .. } if path == "."),
        "{e:?}"
    );
    assert!(parse_input::<Batch>(r#"{"items":[{"title":"a"}]}"#).is_ok());
}

#[test]
fn typed_commands_are_reachable_from_json() {
    let r = registry();
    let id = r.register(Named("notes.echo"), &crypto()).unwrap();
    let t = r.load();
    let handler = t.get(id).unwrap().json_handler().clone();
    assert_eq!(
        handler(&ctx(), "null").unwrap(),
        serde_json::json!("notes.echo")
    );
    assert!(matches!(
        handler(&ctx(), "{\"x\":1}"),
        Err(JsonCallError::InvalidInput { .. })
    ));
    let c = ctx().with_request_id(7);
    assert_eq!(c.request_id(), 7);
    assert_eq!(ctx().request_id(), 0);
    assert_eq!(c.tenant().as_str(), "acme");
    assert_eq!(c.actor().as_str(), "alice");
    assert_eq!(&**c.session(), "s");
}
