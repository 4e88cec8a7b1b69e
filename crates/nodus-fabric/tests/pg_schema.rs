//! `PgEventLog`'s schema: names, versions and migrations, and what its errors reveal. Skipped,
//! with a message, when `NODUS_PG_URL` is not set (except the checks that need no server).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod conformance;
mod pg_common;

use conformance::{fresh_node, new_event, peer_chain, tenant, variant};
use nodus_fabric::{Durability, EventLogError, PgConnectError, PgEventLog, TenantEventLog};

fn versions(url: &str, schema: &str) -> Vec<i64> {
    pg_common::client(url)
        .query(
            &format!("SELECT version FROM \"{schema}\".nodus_schema_version ORDER BY version"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn schema_names_are_checked_before_connecting() {
    // No server needed: the name is refused first (the URL points nowhere).
    let long = "a".repeat(64);
    for bad in [
        "",
        "Upper",
        "a-b",
        "1abc",
        "pg_catalog",
        "x\"; DROP SCHEMA public; --",
        "sp ace",
        "é",
        long.as_str(),
    ] {
        let e = PgEventLog::connect(
            "host=127.0.0.1 port=1 user=nobody",
            bad,
            fresh_node(),
            Durability::Full,
        )
        .unwrap_err();
        assert!(
            matches!(e, PgConnectError::SchemaName(_)),
            "`{bad}` refused as a name: {e}"
        );
    }
}

#[test]
fn errors_do_not_reveal_the_password() {
    let secret = "hunter2-Very-Secret";
    for url in [
        format!("host=127.0.0.1 port=1 user=postgres password={secret} dbname=test"),
        format!("postgresql://postgres:{secret}@127.0.0.1:1/test"),
        format!("host=127.0.0.1 port=1 password={secret} bogus_option=1"),
        format!("postgresql://postgres:{secret}@127.0.0.1:1/test?bogus={secret}"),
    ] {
        let e = PgEventLog::connect(&url, "nodus_x", fresh_node(), Durability::Full).unwrap_err();
        let text = e.to_string();
        eprintln!("{text}");
        assert!(!text.contains(secret), "{text}");
        assert!(!format!("{e:?}").contains(secret));
        assert!(!EventLogError::from(e).to_string().contains(secret));
        assert!(
            text.starts_with("cannot connect to postgresql")
                || text.starts_with("invalid postgresql connection string"),
            "{text}"
        );
    }
    // Connected (trust authentication accepts any password): not in `Debug` either.
    let Some(url) = pg_common::url() else { return };
    if url.contains("://") {
        return;
    }
    let schemas = pg_common::Schemas::new(&url, "secret");
    let log = PgEventLog::connect(
        &format!("{url} password={secret}"),
        &schemas.fresh(),
        fresh_node(),
        Durability::Full,
    )
    .unwrap();
    assert!(!format!("{log:?}").contains(secret));
}

#[test]
fn a_fresh_schema_is_at_the_latest_version() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "fresh");
    let schema = schemas.fresh();
    let log = PgEventLog::connect(&url, &schema, fresh_node(), Durability::Normal).unwrap();
    assert_eq!(log.schema(), schema);
    assert_eq!(log.durability(), Durability::Normal);
    assert_eq!(versions(&url, &schema), vec![1, 2]);
    assert_eq!(PgEventLog::SCHEMA_VERSION, 2);
    // Reopening changes nothing.
    drop(PgEventLog::connect(&url, &schema, fresh_node(), Durability::Full).unwrap());
    assert_eq!(versions(&url, &schema), vec![1, 2]);
}

#[test]
fn an_older_schema_is_migrated_and_keeps_its_data() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "older");
    let schema = schemas.fresh();
    let t = tenant("acme");
    let node = fresh_node();
    let (mine, incarnation) = {
        let log = PgEventLog::connect(&url, &schema, node, Durability::Full).unwrap();
        let mine = log.append(&t, (0..3).map(new_event).collect()).unwrap();
        let peer = peer_chain(&t, conformance::chain_id(1, 1), 2, 0);
        log.ingest(&t, peer.clone()).unwrap();
        log.ingest(&t, vec![variant(&peer[1], "evil")]).unwrap();
        (mine, log.node().incarnation)
    };
    // Take the schema back to version 1, as a release with only version 1 left it.
    pg_common::client(&url)
        .batch_execute(&format!(
            "DROP INDEX \"{schema}\".quarantine_by_tenant;
             DELETE FROM \"{schema}\".nodus_schema_version WHERE version = 2;"
        ))
        .unwrap();
    assert_eq!(versions(&url, &schema), vec![1]);
    let log = PgEventLog::connect(&url, &schema, node, Durability::Full).unwrap();
    assert_eq!(versions(&url, &schema), vec![1, 2]);
    let index: i64 = pg_common::client(&url)
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = 'quarantine_by_tenant'",
            &[&schema],
        )
        .unwrap()
        .get(0);
    assert_eq!(index, 1);
    // Everything is still there and the node continues.
    assert_eq!(log.node().incarnation, incarnation);
    assert_eq!(log.read_chain(&t, log.node().chain(), 1, 10).unwrap(), mine);
    assert_eq!(log.quarantined(&t).unwrap().len(), 1);
    assert_eq!(log.append(&t, vec![new_event(9)]).unwrap()[0].seq, 4);
    assert!(log.verify(&t).unwrap().is_valid());
}

#[test]
fn a_newer_schema_is_refused() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "newer");
    let schema = schemas.fresh();
    drop(PgEventLog::connect(&url, &schema, fresh_node(), Durability::Full).unwrap());
    pg_common::client(&url)
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".nodus_schema_version (version, description, applied_ms) VALUES (7, 'from the future', 0)"
        ))
        .unwrap();
    let e = PgEventLog::connect(&url, &schema, fresh_node(), Durability::Full).unwrap_err();
    assert_eq!(
        e,
        PgConnectError::SchemaTooNew {
            schema: schema.clone(),
            found: 7,
            supported: 2
        }
    );
    assert!(e.to_string().contains("upgrade nodus-fabric"), "{e}");
    // Nothing was changed by the refusal.
    assert_eq!(versions(&url, &schema), vec![1, 2, 7]);
}

#[test]
fn schemas_are_independent_logs() {
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "indep");
    let node = fresh_node();
    let one = PgEventLog::connect(&url, &schemas.fresh(), node, Durability::Full).unwrap();
    let two = PgEventLog::connect(&url, &schemas.fresh(), node, Durability::Full).unwrap();
    let t = tenant("acme");
    one.append(&t, (0..3).map(new_event).collect()).unwrap();
    assert!(two.read_tenant(&t, None, 10).unwrap().0.is_empty());
    assert_eq!(two.append(&t, vec![new_event(0)]).unwrap()[0].seq, 1);
}

#[test]
fn tampering_behind_the_logs_back_is_found() {
    use nodus_fabric::ProblemKind;
    let Some(url) = pg_common::url() else { return };
    let schemas = pg_common::Schemas::new(&url, "tamper");
    let schema = schemas.fresh();
    let log = PgEventLog::connect(&url, &schema, fresh_node(), Durability::Full).unwrap();
    let t = tenant("acme");
    let mine = log.append(&t, (0..5).map(new_event).collect()).unwrap();
    let chain = log.node().chain();
    assert!(log.verify(&t).unwrap().is_valid());
    let mut admin = pg_common::client(&url);
    let kinds = |log: &PgEventLog| -> Vec<(u64, ProblemKind)> {
        let r = log.verify(&t).unwrap();
        r.problems.iter().map(|p| (p.seq, p.kind)).collect()
    };
    // A payload edited: its hash no longer matches; reads refuse it with an error, not a panic.
    admin
        .execute(
            &format!("UPDATE \"{schema}\".events SET payload = '{{\"x\":1}}' WHERE seq = 2"),
            &[],
        )
        .unwrap();
    assert_eq!(kinds(&log), vec![(2, ProblemKind::HashMismatch)]);
    assert!(matches!(
        log.read_chain(&t, chain, 1, 10),
        Err(EventLogError::Corrupt { seq: 2, .. })
    ));
    admin
        .execute(
            &format!("UPDATE \"{schema}\".events SET payload = $1 WHERE seq = 2"),
            &[&mine[1].payload.as_str()],
        )
        .unwrap();
    assert!(log.verify(&t).unwrap().is_valid());
    // A kind that is no event kind: undecodable (and, its hash being unknown, the next link
    // cannot be checked: reported too, as SQLite does).
    admin
        .execute(
            &format!("UPDATE \"{schema}\".events SET kind = 'Not A Kind' WHERE seq = 3"),
            &[],
        )
        .unwrap();
    assert_eq!(
        kinds(&log),
        vec![(3, ProblemKind::Undecodable), (4, ProblemKind::BrokenLink)]
    );
    admin
        .execute(
            &format!("UPDATE \"{schema}\".events SET kind = 'object.created' WHERE seq = 3"),
            &[],
        )
        .unwrap();
    // An event removed from the middle: a gap, and the counters disagree.
    admin
        .execute(
            &format!("DELETE FROM \"{schema}\".events WHERE seq = 4"),
            &[],
        )
        .unwrap();
    let found = kinds(&log);
    assert!(found.contains(&(5, ProblemKind::SeqGap)), "{found:?}");
    assert!(found.contains(&(0, ProblemKind::Counters)), "{found:?}");
    // A head moved back: a head mismatch.
    admin
        .execute(&format!("UPDATE \"{schema}\".chains SET seq = 1"), &[])
        .unwrap();
    assert!(
        kinds(&log)
            .iter()
            .any(|(_, k)| *k == ProblemKind::HeadMismatch)
    );
    // The identity is a key: a second version of seq 1 cannot be stored behind the log's back.
    let dup = admin.execute(
        &format!(
            "INSERT INTO \"{schema}\".events SELECT tenant, node_id, incarnation, seq, pos + 100, lamport, kind, entity, label, '{{}}', model_ver, prev_hash, hash, time_ms FROM \"{schema}\".events WHERE seq = 1"
        ),
        &[],
    );
    assert!(dup.is_err());
}
