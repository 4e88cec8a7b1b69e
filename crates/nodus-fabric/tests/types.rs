//! Types: definition rules, validation errors that name the path and never the value, and the
//! backwards-compatibility check of a redefinition.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use nodus_fabric::types::{TypeDef, TypeError, TypeName};
use nodus_policy::LabelScheme;
use proptest::prelude::*;
use serde_json::{Value, json};

fn scheme() -> LabelScheme {
    LabelScheme::new(
        ["UNCLASSIFIED", "CONFIDENTIAL", "SECRET", "TOP SECRET"],
        ["CRYPTO"],
    )
    .unwrap()
}

fn case_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "status": {"enum": ["open", "closed"]},
            "ssn": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{2}-[0-9]{4}$"},
            "address": {
                "type": "object",
                "properties": {"zip": {"type": "string", "maxLength": 10}},
                "required": ["zip"]
            },
            "tags": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["title"],
        "additionalProperties": false
    })
}

fn case() -> TypeDef {
    TypeDef::new(
        TypeName::new("case").unwrap(),
        case_schema(),
        json!({
            "status": {"indexed": true, "widget": "select"},
            "priority": {"indexed": true},
            "ssn": {"encrypted": true, "classification": "SECRET//CRYPTO", "masked": true}
        }),
        &scheme(),
    )
    .unwrap()
}

#[test]
fn names_follow_the_rule() {
    for ok in ["case", "crm.contact", "a1_b", &"a".repeat(64)] {
        assert!(TypeName::new(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Case",
        "1case",
        "case-x",
        "crm..contact",
        "case.",
        ".case",
        &"a".repeat(65),
        "café",
    ] {
        let e = TypeName::new(bad).unwrap_err();
        assert!(matches!(e, TypeError::InvalidName { .. }), "{bad}");
    }
}

#[test]
fn a_type_exposes_its_metadata() {
    let t = case();
    assert_eq!(t.version(), 1);
    assert_eq!(t.encrypted_fields().collect::<Vec<_>>(), ["ssn"]);
    assert_eq!(
        t.indexed_fields().collect::<Vec<_>>(),
        ["priority", "status"]
    );
    assert_eq!(t.field("ssn").unwrap().purpose(), "fields");
    assert_eq!(
        t.classification("ssn"),
        Some(scheme().parse("SECRET//CRYPTO").unwrap())
    );
    assert_eq!(t.classification("title"), None);
    // The document round-trips.
    let doc = t.to_doc();
    let text = serde_json::to_string(&doc).unwrap();
    let back = TypeDef::from_doc(serde_json::from_str(&text).unwrap(), &scheme()).unwrap();
    assert_eq!(back, t);
}

#[test]
fn definitions_are_refused_with_the_path_and_reason() {
    let name = || TypeName::new("case").unwrap();
    let def = |schema: Value, fields: Value| TypeDef::new(name(), schema, fields, &scheme());
    let reason = |r: Result<TypeDef, TypeError>| r.unwrap_err().to_string();

    assert!(reason(def(json!({"type": "string"}), Value::Null)).contains("`/type`"));
    assert!(reason(def(json!({"type": "object"}), Value::Null)).contains("`/properties`"));
    let remote =
        json!({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}});
    let e = reason(def(remote, Value::Null));
    assert!(
        e.contains("`/properties/a/$ref`") && e.contains("nothing is fetched"),
        "{e}"
    );
    let file = json!({"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}});
    assert!(reason(def(file, Value::Null)).contains("$ref"));
    let id = json!({"$id": "https://x/", "type": "object", "properties": {}});
    assert!(reason(def(id, Value::Null)).contains("`$id`"));
    let broken = json!({"type": "object", "properties": {"a": {"type": "strnig"}}});
    assert!(reason(def(broken, Value::Null)).contains("invalid schema"));
    // Internal references work.
    let internal = json!({
        "type": "object",
        "$defs": {"zip": {"type": "string"}},
        "properties": {"zip": {"$ref": "#/$defs/zip"}}
    });
    let t = def(internal, Value::Null).unwrap();
    assert_eq!(t.validate(&json!({"zip": 5})).unwrap_err()[0].path, "/zip");

    let props = || json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let e = reason(def(props(), json!({"b": {"indexed": true}})));
    assert!(
        e.contains("field `b`") && e.contains("does not declare"),
        "{e}"
    );
    let e = reason(def(
        props(),
        json!({"a": {"encrypted": true, "indexed": true}}),
    ));
    assert!(e.contains("cannot be indexed"), "{e}");
    let e = reason(def(props(), json!({"a": {"key_purpose": "x"}})));
    assert!(e.contains("only to an encrypted field"), "{e}");
    let e = reason(def(props(), json!({"a": {"classification": "COSMIC"}})));
    assert!(e.contains("field `a`") && e.contains("COSMIC"), "{e}");
    let e = reason(def(props(), json!({"a": {"secret": true}})));
    assert!(e.contains("secret"), "{e}");
    let big: serde_json::Map<String, Value> = (0..1025)
        .map(|i| (format!("f{i}"), json!({"type": "string"})))
        .collect();
    let e = reason(def(
        json!({"type": "object", "properties": big}),
        Value::Null,
    ));
    assert!(e.contains("1025 properties"), "{e}");
}

#[test]
fn validation_names_paths_and_rules_never_values() {
    let t = case();
    assert!(
        t.validate(&json!({"title": "ok", "priority": 3, "status": "open"}))
            .is_ok()
    );
    let secret = "123-45-678X-SECRET-VALUE";
    let bad = json!({
        "title": "",
        "priority": 9,
        "status": "lost-VALUE",
        "ssn": secret,
        "address": {"zip": "12345678901-VALUE"},
        "tags": ["a", 7],
        "extra-VALUE": 1
    });
    let issues = t.validate(&bad).unwrap_err();
    let got: Vec<(&str, &str)> = issues
        .iter()
        .map(|i| (i.path.as_str(), i.rule.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("", "additionalProperties"),
            ("/address/zip", "maxLength"),
            ("/priority", "maximum"),
            ("/ssn", "pattern"),
            ("/status", "enum"),
            ("/tags/1", "type"),
            ("/title", "minLength"),
        ]
    );
    let text = format!(
        "{issues:?} {}",
        issues
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(!text.contains("VALUE"), "{text}");
    let missing = t.validate(&json!({})).unwrap_err();
    assert_eq!(
        (missing[0].path.as_str(), missing[0].rule.as_str()),
        ("", "required")
    );
}

fn redefine(schema: Value, fields: Value) -> Result<TypeDef, TypeError> {
    case().redefine(schema, fields, &scheme())
}

fn fields() -> Value {
    json!({
        "status": {"indexed": true},
        "priority": {"indexed": true},
        "ssn": {"encrypted": true, "classification": "SECRET//CRYPTO"}
    })
}

/// `schema` with the value at `pointer` set (its parent must exist).
fn with(mut schema: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    schema
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert(key.to_owned(), value);
    schema
}

#[test]
fn compatible_redefinitions_are_accepted_as_the_next_version() {
    let base = case_schema();
    let cases = [
        // A new optional property.
        with(base.clone(), "/properties/notes", json!({"type": "string"})),
        // Widened constraints.
        with(base.clone(), "/properties/title/maxLength", json!(500)),
        with(base.clone(), "/properties/priority/minimum", json!(0)),
        with(base.clone(), "/properties/priority/type", json!("number")),
        with(
            base.clone(),
            "/properties/status/enum",
            json!(["open", "closed", "archived"]),
        ),
        with(
            base.clone(),
            "/properties/title/type",
            json!(["string", "null"]),
        ),
        with(base.clone(), "/required", json!([])),
        with(base.clone(), "/additionalProperties", json!(true)),
        with(base.clone(), "/properties/address/required", json!([])),
        with(
            base.clone(),
            "/properties/title/description",
            json!("docs change nothing"),
        ),
    ];
    for schema in cases {
        let next = redefine(schema.clone(), fields()).unwrap_or_else(|e| panic!("{schema}: {e}"));
        assert_eq!(next.version(), 2);
    }
    // Metadata: indexing, UI hints and a higher classification are compatible.
    let more = json!({
        "status": {"indexed": false, "widget": "radio"},
        "title": {"indexed": true, "classification": "CONFIDENTIAL"},
        "ssn": {"encrypted": true, "classification": "TOP SECRET//CRYPTO", "masked": true}
    });
    assert!(redefine(case_schema(), more).is_ok());
}

#[test]
fn incompatible_redefinitions_are_refused_with_every_reason() {
    let base = case_schema();
    let refused = |schema: Value, fields: Value, expect: &[&str]| {
        let e = redefine(schema.clone(), fields).unwrap_err();
        let TypeError::Incompatible { reasons, .. } = &e else {
            panic!("{e}")
        };
        for x in expect {
            assert!(
                reasons.iter().any(|r| r.contains(x)),
                "{schema}: {reasons:?} lacks {x}"
            );
        }
        e
    };
    let mut removed = base.clone();
    removed["properties"]
        .as_object_mut()
        .unwrap()
        .remove("tags");
    refused(removed, fields(), &["/properties/tags", "removed"]);
    refused(
        with(base.clone(), "/required", json!(["title", "status"])),
        fields(),
        &["`status` became required"],
    );
    refused(
        with(base.clone(), "/properties/title/maxLength", json!(100)),
        fields(),
        &["/properties/title/maxLength", "lowered"],
    );
    refused(
        with(base.clone(), "/properties/priority/minimum", json!(2)),
        fields(),
        &["`minimum` raised"],
    );
    refused(
        with(base.clone(), "/properties/status/enum", json!(["open"])),
        fields(),
        &["`enum` lost values"],
    );
    refused(
        with(base.clone(), "/properties/priority/type", json!("string")),
        fields(),
        &["`type` narrowed"],
    );
    refused(
        with(base.clone(), "/properties/ssn/pattern", json!("^.*$")),
        fields(),
        &["`pattern` changed"],
    );
    refused(
        with(
            base.clone(),
            "/properties/address/properties/zip/maxLength",
            json!(5),
        ),
        fields(),
        &["/properties/address/properties/zip/maxLength"],
    );
    refused(
        with(
            base.clone(),
            "/properties/tags/items",
            json!({"type": "integer"}),
        ),
        fields(),
        &["/properties/tags/items/type"],
    );
    let mut open = base.clone();
    open.as_object_mut().unwrap().remove("additionalProperties");
    let t = TypeDef::new(
        TypeName::new("case").unwrap(),
        open.clone(),
        fields(),
        &scheme(),
    )
    .unwrap();
    let e = t.redefine(base.clone(), fields(), &scheme()).unwrap_err();
    assert!(
        e.to_string().contains("`additionalProperties` narrowed"),
        "{e}"
    );
    // Protection of stored values.
    refused(
        base.clone(),
        json!({"ssn": {"classification": "SECRET//CRYPTO"}}),
        &["field `ssn`: `encrypted` changed"],
    );
    refused(
        base.clone(),
        json!({"ssn": {"encrypted": true, "key_purpose": "pii", "classification": "SECRET//CRYPTO"}}),
        &["`key_purpose` changed"],
    );
    refused(
        base.clone(),
        json!({"ssn": {"encrypted": true, "classification": "SECRET"}}),
        &["classification `SECRET//CRYPTO` would be lowered"],
    );
    refused(
        base.clone(),
        json!({"ssn": {"encrypted": true}}),
        &["would be lowered"],
    );
    refused(
        base.clone(),
        json!({"ssn": {"encrypted": true, "classification": "SECRET//CRYPTO"}, "title": {"encrypted": true}}),
        &["field `title`: `encrypted` changed"],
    );
    // Every reason at once.
    let e = refused(
        with(
            with(base, "/properties/title/maxLength", json!(1)),
            "/required",
            json!(["title", "tags"]),
        ),
        json!({"ssn": {"encrypted": true}}),
        &["lowered", "became required", "would be lowered"],
    );
    assert!(
        e.to_string()
            .starts_with("type `case`: the new definition is not backwards compatible: ")
    );
}

proptest! {
    /// Law: a compatible redefinition keeps every old-valid object valid. Generated objects that
    /// the old schema accepts are checked against a widened schema.
    #[test]
    fn widening_keeps_old_objects_valid(
        title in "[a-z]{1,200}",
        priority in 1i64..=5,
        open in any::<bool>(),
        extra_len in 0usize..100,
    ) {
        let object = json!({"title": title, "priority": priority, "status": if open {"open"} else {"closed"}});
        let old = case();
        prop_assert!(old.validate(&object).is_ok());
        let wider = with(
            with(case_schema(), "/properties/title/maxLength", json!(200 + extra_len)),
            "/properties/status/enum",
            json!(["open", "closed", "archived"]),
        );
        let next = old.redefine(wider, fields(), &scheme()).unwrap();
        prop_assert!(next.validate(&object).is_ok());
    }
}
