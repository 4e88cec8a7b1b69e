//! `Fabric::list` and `Fabric::count` against a model: random objects at random labels (with
//! polyinstantiated ids and deleted versions), a random viewer, filter, sort and page size; paging
//! through every cursor must give exactly the model's answer, which is computed from `get` (the
//! choice rule) and a filter and sort written out here in Rust.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use std::cmp::Ordering;

use common::{fabric, snapshot, subject, tenant, with_note};
use nodus_fabric::{Direction, ListQuery, Op, Predicate};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const LABELS: [&str; 5] = [
    "UNCLASSIFIED",
    "CONFIDENTIAL",
    "SECRET",
    "SECRET//CRYPTO",
    "CONFIDENTIAL//NOFORN",
];
const VIEWERS: [&str; 4] = [
    "UNCLASSIFIED",
    "SECRET",
    "SECRET//CRYPTO",
    "TOP SECRET//CRYPTO,NOFORN",
];
const TAGS: [&str; 4] = ["a", "ab", "b", "ba"];

#[derive(Clone, Debug)]
struct Obj {
    id: u8,
    label: usize,
    n: Option<i64>,
    tag: Option<usize>,
    deleted: bool,
}

fn obj() -> impl Strategy<Value = Obj> {
    (
        0u8..12,
        0..LABELS.len(),
        proptest::option::of(-3i64..4),
        proptest::option::of(0..TAGS.len()),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(id, label, n, tag, deleted)| Obj {
            id,
            label,
            n,
            tag,
            deleted,
        })
}

/// The filter under test: 0 `n = v`, 1 `n != v`, 2 `n < v`, 3 `n >= v`, 4 `n exists`,
/// 5 `tag prefix "a"`, 6 `tag in ["ab", "b"]`.
fn predicate(kind: u8, v: i64) -> Predicate {
    match kind {
        0 => Predicate::new("n", Op::Eq, json!(v)),
        1 => Predicate::new("n", Op::Ne, json!(v)),
        2 => Predicate::new("n", Op::Lt, json!(v)),
        3 => Predicate::new("n", Op::Ge, json!(v)),
        4 => Predicate::new("n", Op::Exists, Value::Null),
        5 => Predicate::new("tag", Op::Prefix, json!("a")),
        _ => Predicate::new("tag", Op::In, json!(["ab", "b"])),
    }
}

fn matches(p: &Predicate, data: &Map<String, Value>) -> bool {
    let field = data.get(&p.field);
    match p.op {
        Op::Eq => field == Some(&p.value),
        Op::Ne => field != Some(&p.value),
        Op::Lt => field
            .and_then(Value::as_i64)
            .is_some_and(|n| Some(n) < p.value.as_i64()),
        Op::Ge => field
            .and_then(Value::as_i64)
            .is_some_and(|n| Some(n) >= p.value.as_i64()),
        Op::Exists => field.is_some(),
        Op::Prefix => field
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(p.value.as_str().unwrap())),
        Op::In => field.is_some_and(|v| p.value.as_array().unwrap().contains(v)),
        other => panic!("not modelled: {other:?}"),
    }
}

/// Absent first, then by value (the fields here hold one JSON type each).
fn key_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_i64().cmp(&y.as_i64()),
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        (x, y) => panic!("not modelled: {x:?} {y:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn list_and_count_equal_the_model(
        objs in proptest::collection::vec(obj(), 1..40),
        viewer in 0..VIEWERS.len(),
        filter in proptest::option::of((0u8..7, -3i64..4)),
        sort in proptest::option::of((any::<bool>(), any::<bool>())),
        limit in 1usize..6,
    ) {
        let snap = snapshot();
        let f = fabric(1);
        with_note(&f, &snap);
        let t = tenant();
        for o in &objs {
            let writer = subject(&snap, "w", LABELS[o.label]);
            let mut data = json!({"title": "x"});
            if let Some(n) = o.n {
                data["n"] = json!(n);
            }
            if let Some(tag) = o.tag {
                data["tag"] = json!(TAGS[tag]);
            }
            let id = format!("o{:02}", o.id);
            // A second object at the same id and label is refused (already exists): skip it.
            let Ok(created) = f.create(&t, &snap, &writer, "note", Some(id.clone()), None, data) else {
                continue;
            };
            if o.deleted {
                f.delete(&t, &snap, &writer, "note", &id, created.version).unwrap();
            }
        }
        let viewer = subject(&snap, "v", VIEWERS[viewer]);
        let filter: Vec<Predicate> = filter.map(|(k, v)| predicate(k, v)).into_iter().collect();
        let sort = sort.map(|(tag, desc)| {
            let field = if tag { "tag" } else { "n" };
            (field.to_owned(), if desc { Direction::Desc } else { Direction::Asc })
        });

        // The model: the version `get` returns for each id, filtered, sorted.
        let mut model: Vec<(String, Map<String, Value>)> = (0u8..12)
            .filter_map(|i| {
                let id = format!("o{i:02}");
                let v = f.get(&t, &snap, &viewer, "note", &id).ok()?;
                let Value::Object(data) = v.data else { panic!("not an object") };
                Some((id, data))
            })
            .filter(|(_, data)| filter.iter().all(|p| matches(p, data)))
            .collect();
        if let Some((field, dir)) = &sort {
            model.sort_by(|a, b| {
                let o = key_cmp(a.1.get(field), b.1.get(field)).then_with(|| a.0.cmp(&b.0));
                if *dir == Direction::Desc { o.reverse() } else { o }
            });
        }
        let want: Vec<String> = model.into_iter().map(|(id, _)| id).collect();

        let mut got = Vec::new();
        let mut q = ListQuery { filter: filter.clone(), sort, limit, ..ListQuery::new("note") };
        for _ in 0..=40 {
            let page = f.list(&t, &snap, &viewer, &q).unwrap();
            prop_assert!(page.items.len() <= limit);
            for item in &page.items {
                let chosen = f.get(&t, &snap, &viewer, "note", &item.id).unwrap();
                prop_assert_eq!(&chosen, item);
            }
            got.extend(page.items.into_iter().map(|i| i.id));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(f.count(&t, &snap, &viewer, "note", &filter).unwrap(), want.len() as u64);
    }
}
