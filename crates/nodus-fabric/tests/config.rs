//! The configuration store: validation, scopes, labels, and the merge law — the same `config.set`
//! events from three writers, ingested in any order (with duplicates) through a `Fabric` with the
//! store's projector, give the same values, versions and histories, equal to a rebuild.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use common::*;
use nodus_fabric::config::{ConfigDomain, ConfigError, ConfigStore, Scope};
use nodus_fabric::{Event, Fabric, SqliteEventLog, TenantEventLog};
use nodus_policy::{PolicySnapshot, Subject};
use proptest::prelude::*;
use serde_json::{Value, json};

fn domain() -> ConfigDomain {
    ConfigDomain::new(
        "ui",
        json!({"type": "object", "properties": {
            "theme": {"type": "string"},
            "columns": {"type": "integer", "minimum": 1}
        }}),
        ["theme"],
    )
    .unwrap()
}

fn store(n: u8) -> ConfigStore {
    let s = ConfigStore::new(Arc::new(SqliteEventLog::in_memory(node(n)).unwrap())).unwrap();
    s.register(domain());
    s
}

fn events(log: &SqliteEventLog) -> Vec<Event> {
    log.read_tenant(&tenant(), None, 10_000).unwrap().0
}

/// Everything a reader can observe, for each of three subjects.
fn observe(s: &ConfigStore, snap: &PolicySnapshot, who: &[Subject]) -> Value {
    let t = tenant();
    Value::Array(
        who.iter()
            .map(|w| {
                json!({
                    "list": s.list(&t, snap, w, None).unwrap(),
                    "theme": s.history(&t, snap, w, "ui", "theme").unwrap(),
                    "columns": s.history(&t, snap, w, "ui", "columns").unwrap(),
                })
            })
            .collect(),
    )
}

#[test]
fn domains_refuse_bad_schemas_and_names() {
    assert!(matches!(
        ConfigDomain::new("ui", json!({"type": "object"}), Vec::<String>::new()).unwrap_err(),
        ConfigError::BadSchema { .. }
    ));
    assert!(matches!(
        ConfigDomain::new("9ui", json!({"properties": {}}), Vec::<String>::new()).unwrap_err(),
        ConfigError::BadName { .. }
    ));
    let e = ConfigDomain::new("ui", json!({"properties": {"a": {}}}), ["b"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "configuration domain `ui`: user key `b` is not a property"
    );
    let e = ConfigDomain::new(
        "ui",
        json!({"properties": {"a": {"type": 7}}}),
        Vec::<String>::new(),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("configuration domain `ui`: key `a`"),
        "{e}"
    );
}

#[derive(Clone, Debug)]
struct Set {
    writer: usize,
    user: bool,
    key: bool,
    value: u8,
}

fn set() -> impl Strategy<Value = Set> {
    (0usize..3, any::<bool>(), any::<bool>(), 1u8..9).prop_map(|(writer, user, key, value)| Set {
        writer,
        user,
        key,
        value,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_order_of_arrival_gives_the_same_configuration(
        sets in proptest::collection::vec(set(), 1..20),
        seed in any::<u64>(),
    ) {
        let snap = snapshot();
        let t = tenant();
        let writers: Vec<(Arc<SqliteEventLog>, ConfigStore)> = (1..=3u8)
            .map(|n| {
                let log = Arc::new(SqliteEventLog::in_memory(node(n)).unwrap());
                let s = ConfigStore::new(log.clone()).unwrap();
                s.register(domain());
                (log, s)
            })
            .collect();
        let people = [
            subject(&snap, "ann", "UNCLASSIFIED"),
            subject(&snap, "ben", "SECRET"),
            subject(&snap, "cat", "SECRET"),
        ];
        for s in &sets {
            let who = &people[s.writer];
            let (key, value) = if s.key { ("theme", json!(format!("t{}", s.value))) } else { ("columns", json!(s.value)) };
            let scope = if s.user && s.key { Scope::User } else { Scope::Tenant };
            // No write down: the SECRET writers write at SECRET.
            let label = if s.writer == 0 { "UNCLASSIFIED" } else { "SECRET" };
            writers[s.writer].1.set(&t, &snap, who, scope, "ui", key, value, Some(label)).unwrap();
        }
        let mut all: Vec<Event> = writers.iter().flat_map(|(log, _)| events(log)).collect();
        // Two receivers: one in the writers' order, one shuffled with duplicates.
        let receive = |evs: &[Event]| {
            let log = Arc::new(SqliteEventLog::in_memory(node(9)).unwrap());
            let r = ConfigStore::new(log.clone()).unwrap();
            r.register(domain());
            let fabric = Fabric::new(log).unwrap();
            fabric.add_projector(r.projector());
            for e in evs {
                fabric.ingest(&t, vec![e.clone()]).unwrap();
            }
            (fabric, r)
        };
        let (_fa, a) = receive(&all);
        let mut x = seed | 1;
        for i in (1..all.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            all.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let dup = all.clone();
        all.extend(dup.into_iter().step_by(3));
        let (fb, b) = receive(&all);
        let seen_a = observe(&a, &snap, &people);
        prop_assert_eq!(&seen_a, &observe(&b, &snap, &people));
        fb.rebuild(&t).unwrap();
        prop_assert_eq!(&seen_a, &observe(&b, &snap, &people));
    }
}

#[test]
fn user_values_belong_to_their_user_and_labels_hide() {
    let snap = snapshot();
    let t = tenant();
    let s = store(1);
    let ann = subject(&snap, "ann", "UNCLASSIFIED");
    let ben = subject(&snap, "ben", "SECRET");
    s.set(
        &t,
        &snap,
        &ann,
        Scope::User,
        "ui",
        "theme",
        json!("a"),
        None,
    )
    .unwrap();
    s.set(
        &t,
        &snap,
        &ben,
        Scope::Tenant,
        "ui",
        "theme",
        json!("b"),
        None,
    )
    .unwrap();
    // Ann sees her own; Ben (no user value) the tenant's SECRET one; a second unclassified user
    // sees nothing (the tenant value is above them).
    assert_eq!(
        s.get(&t, &snap, &ann, "ui", "theme").unwrap().value,
        json!("a")
    );
    assert_eq!(
        s.get(&t, &snap, &ben, "ui", "theme").unwrap().value,
        json!("b")
    );
    let cat = subject(&snap, "cat", "UNCLASSIFIED");
    assert!(matches!(
        s.get(&t, &snap, &cat, "ui", "theme").unwrap_err(),
        ConfigError::NotSet { .. }
    ));
    assert!(matches!(
        s.set(
            &t,
            &snap,
            &ann,
            Scope::User,
            "ui",
            "columns",
            json!(2),
            None
        )
        .unwrap_err(),
        ConfigError::NoUserScope { .. }
    ));
}
