//! Objects and types: every operation and every error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_fabric::{Direction, FabricError, HistoryKind, ListQuery, Op, Predicate, TenantEventLog};
use serde_json::{Value, json};

fn events(f: &nodus_fabric::Fabric) -> usize {
    f.log()
        .read_tenant(&tenant(), None, 100_000)
        .unwrap()
        .0
        .len()
}

#[test]
fn create_get_update_delete_round_trip() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");

    let v = f
        .create(
            &t,
            &snap,
            &u,
            "note",
            Some("n1".into()),
            None,
            json!({"title": "a", "n": 1}),
        )
        .unwrap();
    assert_eq!(
        (
            v.type_name.as_str(),
            v.id.as_str(),
            v.label.as_str(),
            v.version
        ),
        ("note", "n1", "UNCLASSIFIED", 1)
    );
    assert_eq!(f.get(&t, &snap, &u, "note", "n1").unwrap(), v);

    let generated = f
        .create(&t, &snap, &u, "note", None, None, json!({"title": "g"}))
        .unwrap();
    assert_eq!(generated.id.len(), 32);

    let v2 = f
        .update(
            &t,
            &snap,
            &u,
            "note",
            "n1",
            1,
            json!({"title": "b", "tag": "x"}),
        )
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.data, json!({"title": "b", "tag": "x"}));
    assert_eq!(f.get(&t, &snap, &u, "note", "n1").unwrap(), v2);

    // A stale version is a conflict naming both versions; nothing is appended.
    let before = events(&f);
    let err = f
        .update(&t, &snap, &u, "note", "n1", 1, json!({"title": "c"}))
        .unwrap_err();
    assert_eq!(
        err,
        FabricError::Conflict {
            entity: "note/n1".into(),
            expected: 1,
            actual: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "`note/n1` is at version 2, not the expected version 1"
    );
    assert!(matches!(
        f.delete(&t, &snap, &u, "note", "n1", 7).unwrap_err(),
        FabricError::Conflict {
            expected: 7,
            actual: 2,
            ..
        }
    ));
    assert_eq!(events(&f), before);

    f.delete(&t, &snap, &u, "note", "n1", 2).unwrap();
    let nf = f.get(&t, &snap, &u, "note", "n1").unwrap_err();
    assert_eq!(nf.to_string(), "object `note/n1` not found");
    assert!(matches!(
        f.update(&t, &snap, &u, "note", "n1", 3, json!({"title": "z"}))
            .unwrap_err(),
        FabricError::NotFound { .. }
    ));

    // The tombstone keeps the history; creating again continues the version.
    let h = f.history(&t, &snap, &u, "note", "n1").unwrap();
    let kinds: Vec<_> = h.iter().map(|e| (e.kind, e.version)).collect();
    assert_eq!(
        kinds,
        [
            (HistoryKind::Created, 1),
            (HistoryKind::Updated, 2),
            (HistoryKind::Deleted, 3)
        ]
    );
    assert_eq!(
        h[1].set,
        json!({"title": "b", "tag": "x"})
            .as_object()
            .unwrap()
            .clone()
    );
    assert!(h[1].unset.contains(&"n".to_owned()));
    let again = f
        .create(
            &t,
            &snap,
            &u,
            "note",
            Some("n1".into()),
            None,
            json!({"title": "new"}),
        )
        .unwrap();
    assert_eq!(again.version, 4);
    assert_eq!(again.data, json!({"title": "new"}));
    // Every event is in the log: 1 type + 2 creates + update + delete + create.
    assert_eq!(events(&f), 6);
}

#[test]
fn already_exists_only_at_the_same_label_and_nothing_is_half_written() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    f.create(
        &t,
        &snap,
        &u,
        "note",
        Some("a".into()),
        None,
        json!({"title": "a"}),
    )
    .unwrap();
    let before = f.projection_rows(&t).unwrap();
    let n = events(&f);
    let err = f
        .create(
            &t,
            &snap,
            &u,
            "note",
            Some("a".into()),
            None,
            json!({"title": "b"}),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "object `note/a` already exists at label `UNCLASSIFIED`"
    );
    assert_eq!(events(&f), n);
    assert_eq!(f.projection_rows(&t).unwrap(), before);
}

#[test]
fn polyinstantiation_and_the_choice_rule() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let t = tenant();
    let low = subject(&snap, "lo", "UNCLASSIFIED");
    let sec = subject(&snap, "hi", "SECRET");
    let crypto = subject(&snap, "cr", "SECRET//CRYPTO");
    let top = subject(&snap, "top", "TOP SECRET//CRYPTO,NOFORN");

    f.create(
        &t,
        &snap,
        &sec,
        "note",
        Some("x".into()),
        None,
        json!({"title": "secret"}),
    )
    .unwrap();
    // The low subject does not see it, and creating the same id makes its own version.
    assert!(matches!(
        f.get(&t, &snap, &low, "note", "x").unwrap_err(),
        FabricError::NotFound { .. }
    ));
    let lowv = f
        .create(
            &t,
            &snap,
            &low,
            "note",
            Some("x".into()),
            None,
            json!({"title": "low"}),
        )
        .unwrap();
    assert_eq!((lowv.label.as_str(), lowv.version), ("UNCLASSIFIED", 1));
    assert_eq!(
        f.get(&t, &snap, &low, "note", "x").unwrap().data["title"],
        "low"
    );
    assert_eq!(
        f.get(&t, &snap, &sec, "note", "x").unwrap().data["title"],
        "secret"
    );

    // Incomparable labels: SECRET//CRYPTO vs CONFIDENTIAL//NOFORN → the top subject sees the
    // highest by (level, compartments, text).
    f.create(
        &t,
        &snap,
        &crypto,
        "note",
        Some("x".into()),
        None,
        json!({"title": "crypto"}),
    )
    .unwrap();
    let nf = subject(&snap, "nf", "CONFIDENTIAL//NOFORN");
    f.create(
        &t,
        &snap,
        &nf,
        "note",
        Some("x".into()),
        None,
        json!({"title": "noforn"}),
    )
    .unwrap();
    assert_eq!(
        f.get(&t, &snap, &crypto, "note", "x").unwrap().data["title"],
        "crypto"
    );
    assert_eq!(
        f.get(&t, &snap, &nf, "note", "x").unwrap().data["title"],
        "noforn"
    );
    assert_eq!(
        f.get(&t, &snap, &top, "note", "x").unwrap().data["title"],
        "crypto"
    );
    assert_eq!(f.count(&t, &snap, &top, "note", &[]).unwrap(), 1);
    assert_eq!(f.count(&t, &snap, &low, "note", &[]).unwrap(), 1);

    // The history shows only versions the subject dominates.
    let h = f.history(&t, &snap, &sec, "note", "x").unwrap();
    let labels: Vec<_> = h.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(labels, ["SECRET", "UNCLASSIFIED"]);
    assert_eq!(f.history(&t, &snap, &low, "note", "x").unwrap().len(), 1);

    // Deleting the secret version uncovers the low one for the secret subject.
    f.delete(&t, &snap, &sec, "note", "x", 1).unwrap();
    assert_eq!(
        f.get(&t, &snap, &sec, "note", "x").unwrap().data["title"],
        "low"
    );
}

#[test]
fn write_rule_is_enforced() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let t = tenant();
    let low = subject(&snap, "lo", "UNCLASSIFIED");
    let sec = subject(&snap, "hi", "SECRET");
    f.create(
        &t,
        &snap,
        &low,
        "note",
        Some("l".into()),
        None,
        json!({"title": "l"}),
    )
    .unwrap();
    // No write down.
    let err = f
        .create(
            &t,
            &snap,
            &sec,
            "note",
            Some("y".into()),
            Some("UNCLASSIFIED"),
            json!({"title": "y"}),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the subject may not write at label `UNCLASSIFIED`"
    );
    // The secret subject sees the low version but may not update or delete it.
    assert_eq!(
        f.update(&t, &snap, &sec, "note", "l", 1, json!({"title": "m"}))
            .unwrap_err(),
        FabricError::WriteDenied {
            label: "UNCLASSIFIED".into()
        }
    );
    assert!(matches!(
        f.delete(&t, &snap, &sec, "note", "l", 1).unwrap_err(),
        FabricError::WriteDenied { .. }
    ));
    // Writing up to a label the subject cannot read is refused too (it could not see the result).
    assert!(matches!(
        f.create(
            &t,
            &snap,
            &low,
            "note",
            Some("z".into()),
            Some("secret"),
            json!({"title": "z"})
        )
        .unwrap_err(),
        FabricError::WriteDenied { .. }
    ));
    // An explicit label is parsed under the scheme.
    assert!(matches!(
        f.create(
            &t,
            &snap,
            &low,
            "note",
            None,
            Some("PURPLE"),
            json!({"title": "z"})
        )
        .unwrap_err(),
        FabricError::BadLabel { .. }
    ));
}

#[test]
fn hidden_versions_give_the_same_errors_as_none() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let t = tenant();
    let low = subject(&snap, "lo", "UNCLASSIFIED");
    let sec = subject(&snap, "hi", "SECRET");
    f.create(
        &t,
        &snap,
        &sec,
        "note",
        Some("h".into()),
        None,
        json!({"title": "h"}),
    )
    .unwrap();
    let hidden = [
        f.get(&t, &snap, &low, "note", "h").unwrap_err().to_string(),
        f.update(&t, &snap, &low, "note", "h", 1, json!({"title": "x"}))
            .unwrap_err()
            .to_string(),
        f.delete(&t, &snap, &low, "note", "h", 1)
            .unwrap_err()
            .to_string(),
        f.history(&t, &snap, &low, "note", "h")
            .unwrap_err()
            .to_string(),
    ];
    let f2 = fabric(2);
    with_note(&f2, &snap);
    let absent = [
        f2.get(&t, &snap, &low, "note", "h")
            .unwrap_err()
            .to_string(),
        f2.update(&t, &snap, &low, "note", "h", 1, json!({"title": "x"}))
            .unwrap_err()
            .to_string(),
        f2.delete(&t, &snap, &low, "note", "h", 1)
            .unwrap_err()
            .to_string(),
        f2.history(&t, &snap, &low, "note", "h")
            .unwrap_err()
            .to_string(),
    ];
    assert_eq!(hidden, absent);
    assert_eq!(hidden[0], "object `note/h` not found");
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");

    let err = f
        .create(
            &t,
            &snap,
            &u,
            "note",
            None,
            None,
            json!({"title": "a", "secret": "s3cr3t"}),
        )
        .unwrap_err();
    assert_eq!(
        err,
        FabricError::NoFieldVault {
            type_name: "note".into(),
            field: "secret".into()
        }
    );
    assert!(err.to_string().contains("`secret`"));
    assert!(!err.to_string().contains("s3cr3t"));

    let err = f
        .create(&t, &snap, &u, "note", None, None, json!({"title": "very-long-title-that-is-secret-and-longer-than-fifty-chars", "n": "one"}))
        .unwrap_err();
    let FabricError::Invalid { issues, .. } = &err else {
        panic!("{err:?}")
    };
    let found: Vec<_> = issues
        .iter()
        .map(|i| (i.path.as_str(), i.rule.as_str()))
        .collect();
    assert_eq!(found, [("/n", "type"), ("/title", "maxLength")]);
    assert!(!err.to_string().contains("very-long"));

    assert!(matches!(
        f.create(&t, &snap, &u, "note", None, None, json!([1]))
            .unwrap_err(),
        FabricError::NotAnObject { .. }
    ));
    assert_eq!(
        f.create(&t, &snap, &u, "nope", None, None, json!({}))
            .unwrap_err()
            .to_string(),
        "unknown type `nope`"
    );
    assert!(matches!(
        f.get(&t, &snap, &u, "Bad Name", "x").unwrap_err(),
        FabricError::Type(_)
    ));
    assert!(matches!(
        f.create(
            &t,
            &snap,
            &u,
            "note",
            Some(String::new()),
            None,
            json!({"title": "a"})
        )
        .unwrap_err(),
        FabricError::InvalidId { .. }
    ));
    assert!(matches!(
        f.get(&t, &snap, &u, "note", &"x".repeat(129)).unwrap_err(),
        FabricError::InvalidId { .. }
    ));
    assert!(matches!(
        f.get(&t, &snap, &u, "note", "a\nb").unwrap_err(),
        FabricError::InvalidId { .. }
    ));
    // A subject of another tenant.
    let other = nodus_policy::Subject::new(
        nodus_policy::TenantId::new("globex").unwrap(),
        nodus_policy::ActorId::new("eve").unwrap(),
        nodus_policy::RoleSet::from_ids([]),
        snap.label_scheme().parse("UNCLASSIFIED").unwrap(),
        snap.label_scheme(),
    );
    assert_eq!(
        f.get(&t, &snap, &other, "note", "x").unwrap_err(),
        FabricError::TenantMismatch
    );
    // Without a vault, update refuses encrypted values too.
    f.create(
        &t,
        &snap,
        &u,
        "note",
        Some("e".into()),
        None,
        json!({"title": "e"}),
    )
    .unwrap();
    assert!(matches!(
        f.update(
            &t,
            &snap,
            &u,
            "note",
            "e",
            1,
            json!({"title": "e", "secret": "x"})
        )
        .unwrap_err(),
        FabricError::NoFieldVault { .. }
    ));
}

#[test]
fn classified_fields_are_masked_and_not_filterable_below_their_label() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    let s = subject(&snap, "sam", "SECRET");
    // A secret subject may create at UNCLASSIFIED only if it could write there: it cannot (no
    // write down), so the low subject writes, and the classified field comes from an update by…
    // the low subject itself (write-up of a field it cannot read is not possible), so create a
    // secret object instead and check the low subject's filter is refused.
    f.create(
        &t,
        &snap,
        &s,
        "note",
        Some("c".into()),
        None,
        json!({"title": "t", "codeword": "ALPHA"}),
    )
    .unwrap();
    assert_eq!(
        f.get(&t, &snap, &s, "note", "c").unwrap().data["codeword"],
        "ALPHA"
    );
    let q = ListQuery {
        filter: vec![Predicate::new("codeword", Op::Eq, json!("ALPHA"))],
        ..ListQuery::new("note")
    };
    assert_eq!(f.list(&t, &snap, &s, &q).unwrap().items.len(), 1);
    assert_eq!(
        f.list(&t, &snap, &u, &q).unwrap_err(),
        FabricError::FieldNotReadable {
            field: "codeword".into()
        }
    );
    // A low object with a codeword (set by the low subject) is masked from the low subject.
    f.create(
        &t,
        &snap,
        &u,
        "note",
        Some("d".into()),
        None,
        json!({"title": "t", "codeword": "B"}),
    )
    .unwrap();
    let low_view = f.get(&t, &snap, &u, "note", "d").unwrap();
    assert_eq!(low_view.data, json!({"title": "t"}));
    // Updating keeps the field the subject cannot see.
    f.update(&t, &snap, &u, "note", "d", 1, json!({"title": "t2"}))
        .unwrap();
    assert_eq!(
        f.get(&t, &snap, &s, "note", "d").unwrap().data,
        json!({"title": "t2", "codeword": "B"})
    );
}

fn seed_list(f: &nodus_fabric::Fabric, snap: &nodus_policy::PolicySnapshot) {
    let t = tenant();
    let u = subject(snap, "ann", "UNCLASSIFIED");
    let rows: [(&str, Value); 8] = [
        ("a", json!({"title": "apple", "n": 3, "tag": "red"})),
        ("b", json!({"title": "banana", "n": 1.5, "tag": 7})),
        ("c", json!({"title": "cherry", "n": -2, "tag": true})),
        ("d", json!({"title": "date", "n": 10, "tag": null})),
        ("e", json!({"title": "apricot", "n": 3})),
        ("f", json!({"title": "fig", "tag": "blue"})),
        ("g", json!({"title": "grape", "n": 3.0, "tag": false})),
        ("h", json!({"title": "Avocado", "n": 1e20, "tag": 2})),
    ];
    for (id, data) in rows {
        f.create(&t, snap, &u, "note", Some(id.into()), None, data)
            .unwrap();
    }
}

fn ids(p: &nodus_fabric::Page) -> Vec<&str> {
    p.items.iter().map(|i| i.id.as_str()).collect()
}

#[test]
fn list_filters_every_operator() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    seed_list(&f, &snap);
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    let run = |preds: Vec<Predicate>| {
        let q = ListQuery {
            filter: preds.clone(),
            ..ListQuery::new("note")
        };
        let page = f.list(&t, &snap, &u, &q).unwrap();
        assert_eq!(
            f.count(&t, &snap, &u, "note", &preds).unwrap(),
            page.items.len() as u64
        );
        ids(&page)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let p = Predicate::new;
    assert_eq!(run(vec![p("n", Op::Eq, json!(3))]), ["a", "e", "g"]);
    assert_eq!(
        run(vec![p("n", Op::Ne, json!(3))]),
        ["b", "c", "d", "f", "h"]
    );
    assert_eq!(run(vec![p("n", Op::Lt, json!(3))]), ["b", "c"]);
    assert_eq!(
        run(vec![p("n", Op::Le, json!(3))]),
        ["a", "b", "c", "e", "g"]
    );
    assert_eq!(run(vec![p("n", Op::Gt, json!(3))]), ["d", "h"]);
    assert_eq!(run(vec![p("n", Op::Ge, json!(10))]), ["d", "h"]);
    // Comparisons are typed: a string bound never matches numbers.
    assert_eq!(
        run(vec![p("n", Op::Lt, json!("zzz"))]),
        Vec::<String>::new()
    );
    assert_eq!(
        run(vec![p("tag", Op::In, json!(["red", 7, true]))]),
        ["a", "b", "c"]
    );
    assert_eq!(run(vec![p("tag", Op::In, json!([]))]), Vec::<String>::new());
    assert_eq!(
        run(vec![p("tag", Op::Exists, Value::Null)]),
        ["a", "b", "c", "d", "f", "g", "h"]
    );
    assert_eq!(run(vec![p("tag", Op::Eq, Value::Null)]), ["d"]);
    assert_eq!(run(vec![p("title", Op::Prefix, json!("ap"))]), ["a", "e"]);
    assert_eq!(run(vec![p("title", Op::Prefix, json!("A"))]), ["h"]);
    assert_eq!(
        run(vec![
            p("title", Op::Prefix, json!("a")),
            p("n", Op::Eq, json!(3))
        ]),
        ["a", "e"]
    );

    let bad = |pred: Predicate| {
        let q = ListQuery {
            filter: vec![pred],
            ..ListQuery::new("note")
        };
        f.list(&t, &snap, &u, &q).unwrap_err()
    };
    assert_eq!(
        bad(p("body", Op::Eq, json!("x"))),
        FabricError::FilterNotIndexed {
            field: "body".into()
        }
    );
    assert_eq!(
        bad(p("body", Op::Eq, json!("x"))).to_string(),
        "field `body` is not indexed: it cannot be filtered or sorted on"
    );
    assert_eq!(
        bad(p("secret", Op::Exists, Value::Null)),
        FabricError::FilterEncrypted {
            field: "secret".into()
        }
    );
    assert!(matches!(
        bad(p("tag", Op::In, json!("red"))),
        FabricError::BadQuery { .. }
    ));
    assert!(matches!(
        bad(p("title", Op::Prefix, json!(1))),
        FabricError::BadQuery { .. }
    ));
    assert!(matches!(
        f.count(&t, &snap, &u, "note", &[p("body", Op::Exists, Value::Null)])
            .unwrap_err(),
        FabricError::FilterNotIndexed { .. }
    ));
}

#[test]
fn list_sorts_and_pages_with_cursors() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    seed_list(&f, &snap);
    let t = tenant();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    let all = |sort: Option<(String, Direction)>, limit: usize| {
        let mut q = ListQuery {
            sort,
            limit,
            ..ListQuery::new("note")
        };
        let mut out = Vec::new();
        let mut pages = 0;
        loop {
            let page = f.list(&t, &snap, &u, &q).unwrap();
            assert!(page.items.len() <= limit);
            pages += 1;
            out.extend(ids(&page).into_iter().map(str::to_owned));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        (out, pages)
    };
    // By id.
    let (by_id, pages) = all(None, 3);
    assert_eq!(by_id, ["a", "b", "c", "d", "e", "f", "g", "h"]);
    assert_eq!(pages, 3);
    // By a number field: absent first, then numbers numerically (3 = 3.0, then id).
    let asc = vec!["f", "c", "b", "a", "e", "g", "d", "h"];
    for limit in [1, 2, 3, 8, 100] {
        assert_eq!(all(Some(("n".into(), Direction::Asc)), limit).0, asc);
        let mut desc = asc.clone();
        desc.reverse();
        assert_eq!(all(Some(("n".into(), Direction::Desc)), limit).0, desc);
    }
    // Mixed types: absent < null < booleans < numbers < strings.
    assert_eq!(
        all(Some(("tag".into(), Direction::Asc)), 2).0,
        ["e", "d", "g", "c", "h", "b", "f", "a"]
    );
    // Strings by bytes: uppercase first.
    assert_eq!(
        all(Some(("title".into(), Direction::Asc)), 4).0,
        ["h", "a", "e", "b", "c", "d", "f", "g"]
    );

    // Cursors: malformed, or from another sort, are refused.
    let first = f
        .list(
            &t,
            &snap,
            &u,
            &ListQuery {
                limit: 2,
                ..ListQuery::new("note")
            },
        )
        .unwrap();
    let cursor = first.next_cursor.unwrap();
    let q = |cursor: &str, sort: Option<(String, Direction)>| ListQuery {
        cursor: Some(cursor.into()),
        sort,
        limit: 2,
        ..ListQuery::new("note")
    };
    assert!(matches!(
        f.list(&t, &snap, &u, &q("not a cursor!", None))
            .unwrap_err(),
        FabricError::BadCursor { .. }
    ));
    assert!(matches!(
        f.list(&t, &snap, &u, &q("e30", None)).unwrap_err(),
        FabricError::BadCursor { .. }
    ));
    assert_eq!(
        f.list(
            &t,
            &snap,
            &u,
            &q(&cursor, Some(("n".into(), Direction::Asc)))
        )
        .unwrap_err()
        .to_string(),
        "bad cursor: it belongs to a query with another sort"
    );
    assert_eq!(
        ids(&f.list(&t, &snap, &u, &q(&cursor, None)).unwrap()),
        ["c", "d"]
    );
    // Sorting on a field that is not indexed, and bad limits, are refused.
    assert!(matches!(
        f.list(
            &t,
            &snap,
            &u,
            &ListQuery {
                sort: Some(("body".into(), Direction::Asc)),
                ..ListQuery::new("note")
            }
        )
        .unwrap_err(),
        FabricError::FilterNotIndexed { .. }
    ));
    for limit in [0, 1001] {
        assert!(matches!(
            f.list(
                &t,
                &snap,
                &u,
                &ListQuery {
                    limit,
                    ..ListQuery::new("note")
                }
            )
            .unwrap_err(),
            FabricError::BadQuery { .. }
        ));
    }
    // Deleted objects are not listed or counted.
    f.delete(&t, &snap, &u, "note", "a", 1).unwrap();
    assert_eq!(f.count(&t, &snap, &u, "note", &[]).unwrap(), 7);
}

#[test]
fn types_define_get_list_and_redefine() {
    let snap = snapshot();
    let f = fabric(1);
    let t = tenant();
    let d1 = f
        .define_type(&t, &snap, "note", note_schema(), note_fields())
        .unwrap();
    assert_eq!(d1.version(), 1);
    f.define_type(
        &t,
        &snap,
        "alpha",
        json!({"type": "object", "properties": {}}),
        Value::Null,
    )
    .unwrap();
    assert_eq!(f.get_type(&t, &snap, "note").unwrap(), d1);
    let names: Vec<_> = f
        .list_types(&t, &snap)
        .unwrap()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    assert_eq!(names, ["alpha", "note"]);

    // A compatible redefinition (a new optional field).
    let mut schema = note_schema();
    schema["properties"]["extra"] = json!({"type": "string"});
    let d2 = f
        .define_type(&t, &snap, "note", schema.clone(), note_fields())
        .unwrap();
    assert_eq!(d2.version(), 2);
    assert_eq!(f.get_type(&t, &snap, "note").unwrap().version(), 2);

    // An incompatible one is refused with its reasons.
    let mut narrow = schema;
    narrow["properties"]["title"]["maxLength"] = json!(5);
    narrow["required"] = json!(["title", "n"]);
    let err = f
        .define_type(&t, &snap, "note", narrow, note_fields())
        .unwrap_err();
    let FabricError::Type(nodus_fabric::types::TypeError::Incompatible { reasons, .. }) = &err
    else {
        panic!("{err:?}")
    };
    assert!(reasons.len() >= 2, "{reasons:?}");
    assert_eq!(f.get_type(&t, &snap, "note").unwrap().version(), 2);
    assert!(matches!(
        f.get_type(&t, &snap, "nope").unwrap_err(),
        FabricError::UnknownType { .. }
    ));
    assert!(matches!(
        f.define_type(
            &t,
            &snap,
            "Bad",
            json!({"type": "object", "properties": {}}),
            Value::Null
        )
        .unwrap_err(),
        FabricError::Type(_)
    ));
}

#[test]
fn redefinition_revalidates_stored_objects() {
    // Node 2 stores an object under a looser definition; node 1's stricter definition wins (a
    // higher version) and a further redefinition is refused because of the stored object.
    let snap = snapshot();
    let t = tenant();
    let strict = fabric(1);
    strict
        .define_type(&t, &snap, "note", note_schema(), note_fields())
        .unwrap();
    let mut v2 = note_schema();
    v2["properties"]["extra"] = json!({"type": "string"});
    strict
        .define_type(&t, &snap, "note", v2.clone(), note_fields())
        .unwrap();

    let loose = fabric(2);
    let mut schema = note_schema();
    schema["properties"]["title"] = json!({"type": "string"});
    loose
        .define_type(&t, &snap, "note", schema, note_fields())
        .unwrap();
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    loose
        .create(
            &t,
            &snap,
            &u,
            "note",
            Some("long".into()),
            None,
            json!({"title": "x".repeat(60)}),
        )
        .unwrap();
    let remote = loose.log().read_tenant(&t, None, 100).unwrap().0;
    let report = strict.ingest(&t, remote).unwrap();
    assert_eq!(report.log.applied.len(), 2);
    assert!(report.unprojected.is_empty());
    assert_eq!(strict.get_type(&t, &snap, "note").unwrap().version(), 2);

    let mut v3 = v2;
    v3["properties"]["more"] = json!({"type": "string"});
    let err = strict
        .define_type(&t, &snap, "note", v3, note_fields())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "type `note`: stored objects break the new definition: 1 stored object(s) would break `maxLength` at `/title`"
    );
    assert_eq!(strict.get_type(&t, &snap, "note").unwrap().version(), 2);
}

#[test]
fn ingest_applies_remote_events_and_reports_malformed_ones() {
    use nodus_fabric::{EntityId, EventKind, EventLabel, NewEvent, Payload};
    let snap = snapshot();
    let t = tenant();
    let local = fabric(1);
    let remote = fabric(2);
    with_note(&remote, &snap);
    let u = subject(&snap, "ann", "UNCLASSIFIED");
    remote
        .create(
            &t,
            &snap,
            &u,
            "note",
            Some("r".into()),
            None,
            json!({"title": "remote"}),
        )
        .unwrap();
    // A fabric kind with a payload that is not a fabric payload, and a kind that is not ours.
    let bad = NewEvent::new(
        EventKind::new("object.updated").unwrap(),
        EntityId::new("note/r").unwrap(),
        EventLabel::new("UNCLASSIFIED").unwrap(),
        Payload::from_value(&json!({"nonsense": true})).unwrap(),
    );
    let other = NewEvent::new(
        EventKind::new("config.set").unwrap(),
        EntityId::new("k").unwrap(),
        EventLabel::new("UNCLASSIFIED").unwrap(),
        Payload::from_value(&json!(1)).unwrap(),
    );
    let odd = remote.log().append(&t, vec![bad, other]).unwrap();
    let all = remote.log().read_tenant(&t, None, 100).unwrap().0;
    let report = local.ingest(&t, all.clone()).unwrap();
    assert_eq!(report.log.applied.len(), 4);
    assert_eq!(report.unprojected, vec![odd[0].event_ref()]);
    let v = local.get(&t, &snap, &u, "note", "r").unwrap();
    assert_eq!((v.data, v.version), (json!({"title": "remote"}), 1));
    // Again: duplicates, no effect.
    let before = local.projection_rows(&t).unwrap();
    let again = local.ingest(&t, all).unwrap();
    assert_eq!(again.log.duplicates, 4);
    assert_eq!(local.projection_rows(&t).unwrap(), before);
    // Rebuild gives the same.
    local.rebuild(&t).unwrap();
    assert_eq!(local.projection_rows(&t).unwrap(), before);
}

#[test]
fn a_subject_of_another_label_scheme_is_refused() {
    let snap = snapshot();
    let f = fabric(1);
    with_note(&f, &snap);
    let other_scheme = nodus_policy::LabelScheme::new(["LOW", "HIGH"], ["X"]).unwrap();
    let stale = nodus_policy::Subject::new(
        tenant(),
        nodus_policy::ActorId::new("old").unwrap(),
        nodus_policy::RoleSet::from_ids([]),
        other_scheme.parse("LOW").unwrap(),
        &other_scheme,
    );
    assert_eq!(
        f.get(&tenant(), &snap, &stale, "note", "x").unwrap_err(),
        FabricError::StaleSubject
    );
}

#[test]
fn object_view_into_json_equals_serde() {
    let v = nodus_fabric::ObjectView {
        type_name: "note".into(),
        id: "a/b\"c".into(),
        label: "SECRET//CRYPTO".into(),
        version: u64::MAX,
        data: json!({"title": "t", "n": 1.5, "nested": {"x": [1, null, "y"]}}),
    };
    assert_eq!(v.clone().into_json(), serde_json::to_value(&v).unwrap());
}
