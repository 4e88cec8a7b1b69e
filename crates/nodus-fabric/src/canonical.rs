//! The canonical JSON text of event payloads (see `docs/fabric.md`, "Canonical payload JSON").
//!
//! One JSON value has exactly one canonical text: object members sorted by the UTF-8 bytes of
//! their keys, no whitespace outside strings, minimal string escapes, integers in plain decimal and
//! other numbers as ECMAScript writes them (the shortest form that round-trips to the same
//! binary64). The writer below relies on neither `serde_json`'s map ordering (a `preserve_order`
//! feature enabled elsewhere in a build would change it) nor its float formatting (which has
//! changed between releases): only on Rust's own shortest round-trip digits.

use std::fmt::Write as _;

use serde_json::Value;

/// Deepest nesting of arrays and objects accepted in a payload (the same limit `serde_json`
/// applies when parsing).
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// Why a value or text is not a canonical payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The text is not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// The text is JSON but not in canonical form.
    #[error("payload is not in canonical form (sorted keys, no whitespace, minimal escapes)")]
    NotCanonical,
    /// Arrays and objects nest deeper than [`MAX_PAYLOAD_DEPTH`].
    #[error("payload nests deeper than {MAX_PAYLOAD_DEPTH} levels")]
    TooDeep,
    /// The canonical text is longer than [`MAX_PAYLOAD_BYTES`](crate::MAX_PAYLOAD_BYTES).
    #[error("payload is {len} bytes in canonical form, the limit is {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Writes the canonical text of `value`.
pub(crate) fn to_canonical(value: &Value) -> Result<String, PayloadError> {
    let mut out = String::new();
    write_value(&mut out, value, 0)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), PayloadError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else {
                // A finite binary64 (serde_json has no NaN or infinity).
                write_float(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if depth >= MAX_PAYLOAD_DEPTH {
                return Err(PayloadError::TooDeep);
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if depth >= MAX_PAYLOAD_DEPTH {
                return Err(PayloadError::TooDeep);
            }
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // `str` ordering is byte-wise lexicographic on UTF-8.
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, v, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Writes a finite binary64 as ECMAScript's `Number.prototype.toString` does (ECMA-262
/// Number::toString, the form RFC 8785 uses): the shortest digit string that reads back as the
/// same number (the closest to it when several are as short), in plain notation when the decimal
/// exponent allows and in `d.ddde±x` notation otherwise. Zero (either sign) is `0`.
fn write_float(out: &mut String, f: f64) {
    if f == 0.0 || !f.is_finite() {
        out.push('0');
        return;
    }
    // Rust's shortest round-trip formatting: `d.ddd…e<exp>` with the shortest digits.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i64 = exp.parse().unwrap_or(0);
    let k = i64::try_from(digits.len()).unwrap_or(1);
    let n = exp + 1; // the value is 0.digits × 10^n
    if f < 0.0 {
        out.push('-');
    }
    let zeros = |out: &mut String, count: i64| {
        for _ in 0..count {
            out.push('0');
        }
    };
    if k <= n && n <= 21 {
        out.push_str(&digits);
        zeros(out, n - k);
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(usize::try_from(n).unwrap_or(0).min(digits.len()));
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        zeros(out, -n);
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs());
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Checks that `text` is the canonical text of the value it denotes.
pub(crate) fn check_canonical(text: &str) -> Result<Value, PayloadError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let again = to_canonical(&value)?;
    if again != text {
        return Err(PayloadError::NotCanonical);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_bytewise_and_drops_whitespace() {
        let v = json!({"b": 1, "a": [true, null, {"z": "x", "é": 2, "Z": 3}], "aa": -4});
        assert_eq!(
            to_canonical(&v).unwrap(),
            r#"{"a":[true,null,{"Z":3,"z":"x","é":2}],"aa":-4,"b":1}"#
        );
    }

    #[test]
    fn numbers_have_one_form() {
        let cases = [
            ("0", "0"),
            ("-1", "-1"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("12345678901234567890", "12345678901234567890"),
            ("1.0", "1"),
            ("100.0", "100"),
            ("1.50", "1.5"),
            ("0.1", "0.1"),
            ("-2.5", "-2.5"),
            ("1e20", "100000000000000000000"),
            ("123456789012345680000", "123456789012345680000"),
            ("1e21", "1e+21"),
            ("1.234e33", "1.234e+33"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("-1.5E-9", "-1.5e-9"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("-0.0", "0"),
            ("-0", "0"),
        ];
        for (input, canonical) in cases {
            let v: Value = serde_json::from_str(input).unwrap();
            assert_eq!(to_canonical(&v).unwrap(), canonical, "{input}");
            assert!(check_canonical(canonical).is_ok(), "{canonical}");
        }
    }

    #[test]
    fn escapes_are_minimal() {
        let v = json!("q\" b\\ \u{08}\u{0C}\n\r\t \u{01}\u{1f} \u{7f} \u{2028} é 😀 /");
        assert_eq!(
            to_canonical(&v).unwrap(),
            "\"q\\\" b\\\\ \\b\\f\\n\\r\\t \\u0001\\u001f \u{7f} \u{2028} é 😀 /\""
        );
    }

    #[test]
    fn refuses_non_canonical_text() {
        for t in [
            r#"{"b":1,"a":2}"#,
            r#"{"a": 1}"#,
            " 1",
            "1.50",
            r#""\u0041""#,
            r#""\/""#,
            "[1,2] ",
        ] {
            assert_eq!(check_canonical(t), Err(PayloadError::NotCanonical), "{t}");
        }
        assert!(matches!(
            check_canonical("{"),
            Err(PayloadError::NotJson(_))
        ));
    }

    #[test]
    fn refuses_deep_values_without_overflowing() {
        let mut v = json!(1);
        for _ in 0..10_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(to_canonical(&v), Err(PayloadError::TooDeep));
        // Dropping a deep Value recurses in serde_json; unwind it iteratively.
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or(Value::Null);
        }
    }
}
