//! Hidden ≡ absent, through the front door: two instances built by the same low operations, one of
//! them with data above the low subjects interleaved (new objects, and polyinstantiated versions
//! of the low subjects' ids). Every objects command dispatched as a low subject — writes included —
//! returns byte-identical JSON or the same error code and text in both worlds: results, counts,
//! cursors, page boundaries, histories, type lists, conflicts and not-founds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use nodus_core::{Context, Nodus, PolicySources};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Subjects whose outputs are compared (the "low" side).
const LOW: [&str; 2] = ["UNCLASSIFIED", "CONFIDENTIAL//CRYPTO"];
/// Subjects that act only in world B: each is above, or incomparable with, both low subjects.
const HIGH: [&str; 4] = [
    "SECRET//CRYPTO",
    "CONFIDENTIAL//NOFORN",
    "TOP SECRET//CRYPTO,NOFORN",
    "CONFIDENTIAL//CRYPTO,NOFORN",
];

fn build() -> Nodus {
    let acme = r#"
[rbac.roles]
admin = ["*"]

[rate.limits]
default = { rate = 1000000, per = "1s", burst = 1000000 }
"#;
    let n = Nodus::builder()
        .in_memory()
        .master_key(master())
        .policy(
            PolicySources::new()
                .with_system("system.toml", SYSTEM)
                .with_tenant(tenant("acme"), "tenants/acme.toml", acme),
        )
        .build()
        .unwrap();
    let admin = ctx(&n, "acme", "root", &["admin"], "UNCLASSIFIED");
    n.dispatch(
        &admin,
        "types.define",
        &json!({
            "name": "note",
            "schema": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "maxLength": 50},
                    "n": {"type": "number"},
                    "tag": {"type": ["string", "number", "boolean", "null"]},
                    "codeword": {"type": "string"}
                },
                "required": ["title"]
            },
            "fields": {
                "title": {"indexed": true},
                "n": {"indexed": true},
                "tag": {"indexed": true},
                "codeword": {"indexed": true, "classification": "CONFIDENTIAL//CRYPTO"}
            }
        })
        .to_string(),
    )
    .unwrap();
    n
}

#[derive(Clone, Debug)]
enum Act {
    Create { id: u8, k: u8 },
    Update { id: u8, expected: u64, k: u8 },
    Delete { id: u8, expected: u64 },
}

fn act() -> impl Strategy<Value = (usize, Act)> {
    let a = prop_oneof![
        (0u8..6, 0u8..8).prop_map(|(id, k)| Act::Create { id, k }),
        (0u8..6, 1u64..4, 0u8..8).prop_map(|(id, expected, k)| Act::Update { id, expected, k }),
        (0u8..6, 1u64..4).prop_map(|(id, expected)| Act::Delete { id, expected }),
    ];
    (0usize..4, a)
}

fn data(k: u8) -> Value {
    let tag = match k % 4 {
        0 => json!("red"),
        1 => json!(k),
        2 => json!(k > 4),
        _ => Value::Null,
    };
    let mut d = json!({"title": format!("t{}", k % 5), "n": f64::from(k) / 2.0, "tag": tag});
    if k.is_multiple_of(3) {
        d["codeword"] = json!("CW");
    }
    if k == 7 {
        d.as_object_mut().unwrap().remove("tag");
    }
    d
}

/// One command's outcome as text: the result JSON, or the error's code and message.
fn call(n: &Nodus, c: &Context, cmd: &str, payload: &Value) -> String {
    match n.dispatch(c, cmd, &payload.to_string()) {
        Ok(v) => format!("ok {v}"),
        Err(e) => format!("err {} {e}", e.code()),
    }
}

fn run(n: &Nodus, c: &Context, a: &Act) -> String {
    let id = |i: &u8| format!("o{i}");
    match a {
        Act::Create { id: i, k } => call(
            n,
            c,
            "objects.create",
            &json!({"type": "note", "id": id(i), "data": data(*k)}),
        ),
        Act::Update { id: i, expected, k } => call(
            n,
            c,
            "objects.update",
            &json!({"type": "note", "id": id(i), "expected_version": expected, "data": data(*k)}),
        ),
        Act::Delete { id: i, expected } => call(
            n,
            c,
            "objects.delete",
            &json!({"type": "note", "id": id(i), "expected_version": expected}),
        ),
    }
}

/// Every read command, as `c`, in a transcript.
fn transcript(n: &Nodus, c: &Context) -> Vec<String> {
    let mut out = vec![
        call(n, c, "types.list", &json!({})),
        call(n, c, "types.get", &json!({"name": "note"})),
    ];
    for i in 0..7 {
        let r = json!({"type": "note", "id": format!("o{i}")});
        out.push(call(n, c, "objects.get", &r));
        out.push(call(n, c, "objects.history", &r));
    }
    let filters = [
        json!([]),
        json!([{"field": "tag", "op": "eq", "value": "red"}]),
        json!([{"field": "tag", "op": "ne", "value": "red"}]),
        json!([{"field": "n", "op": "lt", "value": 2}]),
        json!([{"field": "n", "op": "ge", "value": 1.5}]),
        json!([{"field": "tag", "op": "in", "value": [true, 3, "red"]}]),
        json!([{"field": "tag", "op": "exists"}]),
        json!([{"field": "title", "op": "prefix", "value": "t1"}]),
        json!([{"field": "codeword", "op": "eq", "value": "CW"}]),
        json!([{"field": "body", "op": "eq", "value": "x"}]),
    ];
    let sorts = [
        Value::Null,
        json!(["n", "asc"]),
        json!(["tag", "desc"]),
        json!(["title", "asc"]),
        json!(["codeword", "asc"]),
    ];
    for filter in &filters {
        out.push(call(
            n,
            c,
            "objects.count",
            &json!({"type": "note", "filter": filter}),
        ));
        for sort in &sorts {
            for limit in [1, 2, 5] {
                let mut cursor = Value::Null;
                for _ in 0..10 {
                    let q = json!({"type_name": "note", "filter": filter, "sort": sort,
                                   "limit": limit, "cursor": cursor});
                    let page = n.dispatch(c, "objects.list", &q.to_string());
                    out.push(match &page {
                        Ok(v) => format!("ok {v}"),
                        Err(e) => format!("err {} {e}", e.code()),
                    });
                    match page {
                        Ok(v) if !v["next_cursor"].is_null() => cursor = v["next_cursor"].clone(),
                        _ => break,
                    }
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_low_subject_cannot_tell_the_worlds_apart_through_dispatch(
        low in proptest::collection::vec(act(), 1..20),
        high in proptest::collection::vec(act(), 1..30),
    ) {
        let a = build();
        let b = build();
        let lows = |n: &Nodus| -> Vec<Context> {
            LOW.iter().map(|c| ctx(n, "acme", "low", &["admin"], c)).collect()
        };
        let (lows_a, lows_b) = (lows(&a), lows(&b));
        let highs: Vec<Context> =
            HIGH.iter().map(|c| ctx(&b, "acme", "high", &["admin"], c)).collect();
        let mut high = high.into_iter();
        // World B starts with some high data already there.
        for (who, act) in high.by_ref().take(5) {
            run(&b, &highs[who], &act);
        }
        for (who, act) in &low {
            let ra = run(&a, &lows_a[who % 2], act);
            let rb = run(&b, &lows_b[who % 2], act);
            prop_assert_eq!(ra, rb);
            for (who, act) in high.by_ref().take(2) {
                run(&b, &highs[who], &act);
            }
        }
        for (ca, cb) in lows_a.iter().zip(&lows_b) {
            let ta = transcript(&a, ca);
            let tb = transcript(&b, cb);
            prop_assert_eq!(ta.len(), tb.len());
            for (x, y) in ta.iter().zip(&tb) {
                prop_assert_eq!(x, y);
            }
        }
    }
}

/// A fixed scenario, with a control: the high subject does see the difference.
#[test]
fn polyinstantiated_ids_through_dispatch() {
    let a = build();
    let b = build();
    let high = ctx(&b, "acme", "high", &["admin"], "SECRET//CRYPTO");
    for (id, k) in [("o1", 3), ("o9", 0)] {
        run(
            &b,
            &high,
            &Act::Create {
                id: id[1..].parse().unwrap(),
                k,
            },
        );
    }
    let low = |n: &Nodus| ctx(n, "acme", "low", &["admin"], "CONFIDENTIAL//CRYPTO");
    for n in [&a, &b] {
        let c = low(n);
        assert!(run(n, &c, &Act::Create { id: 1, k: 1 }).starts_with("ok "));
        assert!(run(n, &c, &Act::Create { id: 2, k: 2 }).starts_with("ok "));
    }
    assert!(
        run(
            &b,
            &high,
            &Act::Update {
                id: 1,
                expected: 1,
                k: 5
            }
        )
        .starts_with("ok ")
    );
    assert_eq!(transcript(&a, &low(&a)), transcript(&b, &low(&b)));
    let high_a = ctx(&a, "acme", "high", &["admin"], "SECRET//CRYPTO");
    assert_ne!(transcript(&a, &high_a), transcript(&b, &high));
}
