//! The builder: every way `build()` refuses (each with a clear message naming what is wrong), and
//! the parts a host may replace — the vault, the audit sink, the trust store — with what Nodus does
//! when a replaced audit sink stops accepting records (it fails closed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use nodus_core::security::audit::{
    AuditConfig, AuditError, AuditLog, AuditRecord, AuditSink, AuditStats, Ed25519Signer,
    SignedCheckpoint, StoredRecord, VerifyReport,
};
use nodus_core::security::vault::{SoftVault, TrustStore};
use nodus_core::{
    BuildError, Command, CommandError, CommandSpec, Context, DispatchError, Nodus, PolicySources,
};

fn base() -> nodus_core::NodusBuilder {
    Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(sources(false))
}

fn err(b: nodus_core::NodusBuilder) -> BuildError {
    b.build().unwrap_err()
}

#[test]
fn each_build_error_names_what_is_wrong() {
    let e = err(Nodus::builder().master_key(master()).policy(sources(false)));
    assert!(matches!(e, BuildError::NoStorage), "{e}");
    assert!(e.to_string().contains("`data_dir(path)`"), "{e}");

    let e = err(Nodus::builder().in_memory().policy(sources(false)));
    assert!(matches!(e, BuildError::MissingMasterKey), "{e}");
    assert!(e.to_string().starts_with("missing master key"), "{e}");

    let e = err(Nodus::builder().in_memory().master_key(master()));
    assert!(matches!(e, BuildError::MissingPolicy), "{e}");

    // Invalid policy: every problem, each naming file, layer and key.
    let bad = PolicySources::new()
        .with_system("system.toml", SYSTEM)
        .with_tenant(
            tenant("acme"),
            "tenants/acme.toml",
            "[limits]\nmax_payload_bytes = \"big\"\n[nope]\nx = 1\n",
        );
    let e = err(Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(bad));
    let BuildError::Policy(problems) = &e else {
        panic!("{e}")
    };
    assert_eq!(problems.errors().len(), 2, "{e}");
    let text = e.to_string();
    assert!(text.starts_with("invalid policy"), "{text}");
    assert!(text.contains("tenants/acme.toml"), "{text}");
    assert!(text.contains("`limits.max_payload_bytes`"), "{text}");
    assert!(text.contains("`nope`"), "{text}");

    // Duplicate command names, typed or JSON.
    let e = err(base().command(Ping).command(Ping));
    assert_eq!(
        e.to_string(),
        "command registration failed: command `notes.ping` is already registered"
    );
    let e = err(base()
        .command(CreateNote)
        .json_command(CommandSpec::new("notes.create"), |_, _| {
            Ok(serde_json::Value::Null)
        }));
    assert!(matches!(e, BuildError::Command(_)), "{e}");
    // A host command may not take a built-in's name.
    let e = err(
        base().json_command(CommandSpec::new("policy.reload"), |_, _| {
            Ok(serde_json::Value::Null)
        }),
    );
    assert!(
        e.to_string()
            .contains("`policy.reload` is already registered"),
        "{e}"
    );
    // Invalid names, empty permissions, unparseable labels.
    let e = err(
        base().json_command(CommandSpec::new("Notes.Create"), |_, _| {
            Ok(serde_json::Value::Null)
        }),
    );
    assert!(
        e.to_string()
            .contains("invalid command name `Notes.Create`"),
        "{e}"
    );
    let e = err(
        base().json_command(CommandSpec::new("notes.x").permission(" "), |_, _| {
            Ok(serde_json::Value::Null)
        }),
    );
    assert!(
        e.to_string().contains("`notes.x` has an empty permission"),
        "{e}"
    );
    let e = err(base().json_command(
        CommandSpec::new("notes.x").min_label("SECRET//UMBRA"),
        |_, _| Ok(serde_json::Value::Null),
    ));
    assert!(e.to_string().contains("`notes.x`"), "{e}");
    assert!(e.to_string().contains("`SECRET//UMBRA`"), "{e}");

    // A policy directory that does not exist.
    let e = err(Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy_dir("/no/such/policy/dir"));
    assert!(e.to_string().contains("/no/such/policy/dir"), "{e}");

    // Every message is lowercase-first, like every error in the SDK.
    for e in [
        err(Nodus::builder().policy(sources(false))),
        err(Nodus::builder().in_memory().policy(sources(false))),
        err(Nodus::builder().in_memory().master_key(master())),
        err(base().command(Ping).command(Ping)),
    ] {
        let first = e.to_string().chars().next().unwrap();
        assert!(first.is_lowercase(), "{e}");
    }
}

#[test]
fn a_custom_vault_needs_no_master_key() {
    let vault = SoftVault::in_memory(master()).unwrap();
    let n = Nodus::builder()
        .in_memory()
        .with_vault(vault)
        .policy(sources(false))
        .command(Ping)
        .build()
        .unwrap();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    assert_eq!(n.invoke::<Ping>(&alice, 1).unwrap(), 2);
    // The audit log's checkpoint key lives in the vault given.
    assert!(
        n.vault()
            .find(
                &nodus_core::security::vault::KeyScope::System,
                nodus_core::AUDIT_KEY_PURPOSE
            )
            .unwrap()
            .is_some()
    );
    assert!(n.verify_audit().unwrap().valid);
}

#[test]
fn a_custom_trust_store_is_the_one_plugins_are_checked_against() {
    let trust = TrustStore::in_memory().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    trust
        .add_issuer(&tenant("acme"), &key.verifying_key().to_bytes(), None, None)
        .unwrap();
    let n = base().trust_store(trust).build().unwrap();
    let manifest = nodus_core::registry::plugins::PluginManifest::new(
        "kv",
        "1.0.0",
        tenant("acme"),
        ["notes.read"],
    );
    let signed = nodus_core::registry::plugins::SignedManifest::sign(&manifest, &key).unwrap();
    // The default trust store would not know the issuer (`UnknownIssuer`); the one given does, so
    // the load is refused only because acme's policy does not list the plugin.
    assert_eq!(
        n.load_plugin(&tenant("acme"), &signed).unwrap_err().reason,
        nodus_core::registry::plugins::DenyReason::NotAllowedByPolicy
    );
}

/// An audit sink that wraps the real log and can be told to stop accepting records, the way the
/// real writer does after an fsync error.
struct Breakable {
    log: AuditLog,
    broken: Arc<AtomicBool>,
}

impl Breakable {
    fn new() -> (Self, Arc<AtomicBool>) {
        let signer = Arc::new(Ed25519Signer::generate("test.local/audit").unwrap());
        let log = AuditLog::in_memory(signer, AuditConfig::default()).unwrap();
        let broken = Arc::new(AtomicBool::new(false));
        (
            Breakable {
                log,
                broken: broken.clone(),
            },
            broken,
        )
    }
}

impl AuditSink for Breakable {
    fn check(&self) -> Result<(), AuditError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(AuditError::WriterStopped("disk full".into()));
        }
        self.log.check()
    }
    fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(AuditError::WriterStopped("disk full".into()));
        }
        self.log.record(record)
    }
    fn flush(&self) -> Result<SignedCheckpoint, AuditError> {
        self.log.flush()
    }
    fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.log.verify()
    }
    fn stats(&self) -> AuditStats {
        self.log.stats()
    }
    fn size(&self) -> Result<u64, AuditError> {
        self.log.size()
    }
    fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        self.log.latest_checkpoint()
    }
    fn tail(&self, n: usize) -> Result<Vec<StoredRecord>, AuditError> {
        self.log.tail(n)
    }
    fn public_key(&self) -> [u8; 32] {
        self.log.public_key()
    }
    fn shutdown(&self) -> Result<(), AuditError> {
        self.log.shutdown()
    }
}

/// Counts its calls, so a test can tell whether the handler ran.
struct Counted(Arc<AtomicU64>);
impl Command for Counted {
    type Input = ();
    type Output = ();
    fn spec(&self) -> CommandSpec {
        CommandSpec::new("notes.touch").permission("notes.read")
    }
    fn call(&self, _: &Context, _: ()) -> Result<(), CommandError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_custom_audit_sink_receives_every_record_and_a_stopped_one_fails_closed() {
    let (sink, broken) = Breakable::new();
    let runs = Arc::new(AtomicU64::new(0));
    let n = base()
        .with_audit(sink)
        .command(Counted(runs.clone()))
        .command(CreateNote)
        .build()
        .unwrap();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    n.invoke::<Counted>(&bob, ()).unwrap();
    let _ = n.invoke::<CreateNote>(
        &bob,
        NewNote {
            title: "t".into(),
            tags: vec![],
        },
    );
    n.flush_audit().unwrap();
    let tail = n.audit_log().tail(2).unwrap();
    assert_eq!(tail[0].record.command.as_deref(), Some("notes.touch"));
    assert_eq!(tail[1].record.reason.as_deref(), Some("MissingPermission"));
    assert!(n.audit_log().verify().unwrap().valid);

    // The sink stops: no call — allowed or denied — reports success or a plain denial.
    broken.store(true, Ordering::SeqCst);
    let e = n
        .invoke::<CreateNote>(
            &bob,
            NewNote {
                title: "t".into(),
                tags: vec![],
            },
        )
        .unwrap_err();
    assert!(matches!(e, DispatchError::AuditUnavailable(_)), "{e:?}");
    assert_eq!(e.code(), "AuditUnavailable");
    let e = n.invoke::<Counted>(&bob, ()).unwrap_err();
    assert!(matches!(e, DispatchError::AuditUnavailable(_)), "{e:?}");
    let e = n.dispatch(&bob, "notes.nope", "{}").unwrap_err();
    assert!(matches!(e, DispatchError::AuditUnavailable(_)), "{e:?}");
    assert!(e.to_string().contains("disk full"), "{e}");
    n.shutdown().unwrap();
}

/// Fail closed means nothing *runs* unaudited (docs/getting-started.md: "nothing runs
/// unaudited"): once the audit sink has stopped, a handler must not run. The dispatcher asks the
/// sink (`AuditSink::check`) after the guard admits a call and before routing it.
#[test]
fn a_stopped_audit_sink_stops_handlers_from_running() {
    let (sink, broken) = Breakable::new();
    let runs = Arc::new(AtomicU64::new(0));
    let n = base()
        .with_audit(sink)
        .command(Counted(runs.clone()))
        .build()
        .unwrap();
    let bob = ctx(&n, "acme", "bob", &["viewer"], "UNCLASSIFIED");
    n.invoke::<Counted>(&bob, ()).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    broken.store(true, Ordering::SeqCst);
    assert!(n.invoke::<Counted>(&bob, ()).is_err());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the handler ran although its call could not be audited"
    );
}

#[test]
fn audit_origin_and_latency_recording_are_configurable() {
    let n = base()
        .audit_origin("notes.example.com/audit")
        .record_latency(true)
        .command(Ping)
        .build()
        .unwrap();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    n.invoke::<Ping>(&alice, 1).unwrap();
    let cp = n.flush_audit().unwrap();
    assert!(
        cp.note.starts_with("notes.example.com/audit\n"),
        "{}",
        cp.note
    );
    let rec = n.audit_log().tail(1).unwrap().pop().unwrap().record;
    assert!(rec.latency_ns.is_some());
    // Off by default: the hot path reads no clock.
    let n = base().command(Ping).build().unwrap();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    n.invoke::<Ping>(&alice, 1).unwrap();
    n.flush_audit().unwrap();
    assert!(
        n.audit_log()
            .tail(1)
            .unwrap()
            .pop()
            .unwrap()
            .record
            .latency_ns
            .is_none()
    );
}

/// The audit log's durability comes from the system policy (`audit.durability`): `full` fsyncs
/// each group commit, `normal` does not.
#[test]
fn audit_durability_comes_from_policy() {
    for (durability, fsyncs) in [("full", true), ("normal", false)] {
        let dir = tempfile::tempdir().unwrap();
        let system = SYSTEM.replace(
            "durability = \"normal\"",
            &format!("durability = \"{durability}\""),
        );
        let n = Nodus::builder()
            .data_dir(dir.path())
            .master_key(master())
            .policy(
                PolicySources::new()
                    .with_system("system.toml", &system)
                    .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_toml(false)),
            )
            .command(Ping)
            .build()
            .unwrap();
        let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
        n.invoke::<Ping>(&alice, 1).unwrap();
        n.flush_audit().unwrap();
        assert_eq!(n.audit_log().stats().fsyncs > 0, fsyncs, "{durability}");
        n.shutdown().unwrap();
    }
}

/// The audit log's witness (its latest signed checkpoint, kept outside `audit.db`) can live where
/// the host chooses; an instance whose log no longer has it refuses to build unless told to accept
/// that once.
#[test]
fn the_audit_witness_lives_where_the_host_puts_it_and_guards_the_next_build() {
    let data = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let witness = elsewhere.path().join("acme-audit.witness");
    let build = |accept: bool| {
        Nodus::builder()
            .data_dir(data.path())
            .master_key(master())
            .policy(sources(false))
            .command(Ping)
            .audit_witness(&witness)
            .audit_accept_missing_witness(accept)
            .build()
    };
    let n = build(false).unwrap();
    let alice = ctx(&n, "acme", "alice", &["editor"], "UNCLASSIFIED");
    n.invoke::<Ping>(&alice, 1).unwrap();
    let cp = n.flush_audit().unwrap();
    drop(alice);
    drop(n);
    let text = std::fs::read_to_string(&witness).unwrap();
    assert!(text.starts_with(&cp.checkpoint.origin), "{text}");
    assert!(!data.path().join("audit.db.witness").exists());

    // The witness is gone: the log cannot prove it still holds its signed history.
    std::fs::rename(&witness, elsewhere.path().join("kept-aside")).unwrap();
    let e = build(false).unwrap_err();
    assert!(matches!(e, BuildError::Audit(_)), "{e}");
    assert!(e.to_string().contains("witness"), "{e}");
    // Accepted once, knowingly: the instance builds and writes a new witness.
    let n = build(true).unwrap();
    assert!(n.verify_audit().unwrap().valid);
    n.shutdown().unwrap();
    assert!(witness.exists());
}

/// Each instance is a fabric node: an Ed25519 key in its vault (whose key id is the node id) and
/// the incarnation of its event store, both stable across restarts of one data directory.
#[test]
fn an_instance_is_a_node_whose_identity_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        Nodus::builder()
            .data_dir(dir.path())
            .master_key(master())
            .policy(sources(false))
            .build()
            .unwrap()
    };
    let n = build();
    let first = n.node();
    assert!(dir.path().join(nodus_core::FABRIC_FILE).exists());
    // The node key is a system key of the vault, purpose `node`, whose public half peers trust.
    let key = n
        .vault()
        .find(
            &nodus_core::security::vault::KeyScope::System,
            nodus_core::NODE_KEY_PURPOSE,
        )
        .unwrap()
        .unwrap();
    assert_eq!(key.as_bytes(), first.node_id.as_bytes());
    assert_eq!(n.vault().public_key(&key, None).unwrap(), first.public_key);
    let json = serde_json::to_value(first).unwrap();
    assert_eq!(json["node_id"], first.node_id.to_string());
    assert_eq!(json["public_key"].as_str().unwrap().len(), 64);
    let report = n.verify_events(&tenant("acme")).unwrap();
    assert!(report.problems.is_empty());
    drop(n);
    let again = build();
    assert_eq!(again.node(), first);
    drop(again);

    // Another data directory is another node; an in-memory instance is one too.
    let other = tempfile::tempdir().unwrap();
    let n2 = Nodus::builder()
        .data_dir(other.path())
        .master_key(master())
        .policy(sources(false))
        .build()
        .unwrap();
    assert_ne!(n2.node().node_id, first.node_id);
    let mem = base().build().unwrap();
    assert_ne!(mem.node().incarnation, first.incarnation);
    drop(n2);

    // A fabric store belongs to its node: moved under another vault, it is refused.
    std::fs::copy(
        dir.path().join(nodus_core::FABRIC_FILE),
        other.path().join(nodus_core::FABRIC_FILE),
    )
    .unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(
            other
                .path()
                .join(format!("{}{suffix}", nodus_core::FABRIC_FILE)),
        );
    }
    let e = Nodus::builder()
        .data_dir(other.path())
        .master_key(master())
        .policy(sources(false))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::EventLog(_)), "{e}");
}

/// The object cache's capacity and TTL come from the system policy and follow a reload at once.
#[test]
fn the_state_report_follows_the_policy() {
    let n = base().build().unwrap();
    let report = n.state_report();
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].name, "objects");
    assert_eq!(report[0].config.capacity_bytes, 64 << 20);
    assert_eq!(
        report[0].config.ttl,
        Some(std::time::Duration::from_secs(300))
    );
    let sources = PolicySources::new()
        .with_system(
            "system.toml",
            &format!("{SYSTEM}\n[state.cache.objects]\ncapacity_bytes = 4096\nttl = \"0s\"\n"),
        )
        .with_tenant(tenant("acme"), "tenants/acme.toml", &tenant_toml(false));
    n.reload_policy(sources).unwrap();
    let report = n.state_report();
    assert_eq!(report[0].config.capacity_bytes, 4096);
    assert_eq!(report[0].config.ttl, None);
    // A tenant cannot size the instance's cache.
    let tenant_sets_it = PolicySources::new().with_tenant(
        tenant("acme"),
        "tenants/acme.toml",
        "[state.cache.objects]\ncapacity_bytes = 1\n",
    );
    assert!(n.reload_policy(tenant_sets_it).is_err());
}
