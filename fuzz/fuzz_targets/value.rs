//! Feeds arbitrary text to the value encoder for a spread of column types, and the same
//! bytes as a binary cell to the binary decoder of the fixed-width types backfill reads in
//! binary.
//!
//! Besides "never panics", it checks the encoders' contract: a value that encodes is
//! exactly one valid JSON value, and a failure leaves the output buffer as it was. For
//! binary cells of the right length it also checks that the JSON is what the text path
//! writes for the same value's text, as PostgreSQL prints it, where that text is easy to
//! produce independently (integers, `bool`, `uuid`, `float4`, `float8` as collection keys);
//! `float8` values must read back to the same value, and a `date` must encode as the
//! midnight `timestamp` of that day does, less the time. (`tests/it/binary_values.rs`
//! compares every binary type with a real server's text output.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use source_postgres::value::{encode_key_value, encode_value, BinaryCodec, PgType};

fn builtin(name: &str) -> PgType {
    PgType::Builtin { name: name.to_string(), typmod: -1 }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the type, the rest is the text output.
    let Some((selector, text)) = data.split_first() else { return };
    let types = [
        builtin("int8"),
        builtin("numeric"),
        builtin("float8"),
        builtin("float4"),
        builtin("text"),
        builtin("bytea"),
        builtin("json"),
        builtin("jsonb"),
        builtin("date"),
        builtin("timestamp"),
        builtin("timestamptz"),
        builtin("time"),
        builtin("timetz"),
        builtin("uuid"),
        builtin("inet"),
        builtin("bool"),
        PgType::Array { element: Box::new(builtin("int4")) },
        PgType::Array { element: Box::new(builtin("text")) },
        PgType::Range { name: "int4range".into(), subtype: Box::new(builtin("int4")) },
        PgType::Range { name: "tstzrange".into(), subtype: Box::new(builtin("timestamptz")) },
        PgType::Composite {
            name: "pair".into(),
            fields: vec![("a".into(), builtin("int4")), ("b".into(), builtin("text"))],
        },
        PgType::Extension { name: "hstore".into() },
        PgType::Extension { name: "vector".into() },
    ];
    let ty = &types[usize::from(*selector) % types.len()];
    for key in [false, true] {
        let mut out = b"prefix".to_vec();
        let result = if key { encode_key_value(ty, text, &mut out) } else { encode_value(ty, text, &mut out) };
        match result {
            Ok(()) => {
                let value = &out[b"prefix".len()..];
                serde_json::from_slice::<serde_json::Value>(value).expect("the encoder wrote invalid JSON");
            }
            Err(_) => assert_eq!(out, b"prefix", "a failed encoding must leave the buffer as it was"),
        }
    }
    binary(*selector, text);
});

/// The binary types, their OIDs and send-form widths.
const BINARY: &[(&str, u32, usize)] = &[
    ("bool", 16, 1),
    ("int2", 21, 2),
    ("int4", 23, 4),
    ("int8", 20, 8),
    ("oid", 26, 4),
    ("float4", 700, 4),
    ("float8", 701, 8),
    ("date", 1082, 4),
    ("timestamp", 1114, 8),
    ("timestamptz", 1184, 8),
    ("uuid", 2950, 16),
];

fn binary(selector: u8, raw: &[u8]) {
    let (name, oid, width) = BINARY[usize::from(selector) % BINARY.len()];
    let ty = builtin(name);
    for key in [false, true] {
        let codec = BinaryCodec::for_column(&ty, oid, key).expect("a binary type");
        let mut out = b"prefix".to_vec();
        let result = codec.encode(&ty, raw, &mut out);
        if raw.len() != width {
            assert!(result.is_err(), "{name}: a cell of {} bytes must be an error", raw.len());
        }
        let Ok(()) = result else {
            assert_eq!(out, b"prefix", "a failed encoding must leave the buffer as it was");
            continue;
        };
        let json = &out[b"prefix".len()..];
        let value: serde_json::Value = serde_json::from_slice(json).expect("the binary decoder wrote invalid JSON");
        // A float key is parsed whatever its notation; any text that reads back will do.
        let text = match (name, key) {
            ("float8", true) => raw.try_into().ok().map(|bytes| float_text(f64::from_be_bytes(bytes))),
            _ => postgres_text(name, raw),
        };
        if let Some(text) = text {
            let mut expected = Vec::new();
            let text_result = if key {
                encode_key_value(&ty, text.as_bytes(), &mut expected)
            } else {
                encode_value(&ty, text.as_bytes(), &mut expected)
            };
            text_result.expect("PostgreSQL's text of the value encodes");
            assert_eq!(
                String::from_utf8_lossy(json),
                String::from_utf8_lossy(&expected),
                "{name} key={key}: binary {raw:02x?}, text {text}"
            );
        }
        match name {
            "float8" if !key => {
                let bits = f64::from_be_bytes(raw.try_into().expect("8 bytes"));
                if bits.is_finite() {
                    let read: f64 = std::str::from_utf8(json).expect("ASCII").parse().expect("a JSON number");
                    assert_eq!(read.to_bits(), bits.to_bits(), "float8 {bits:e} read back as {read:e}");
                }
            }
            "date" => {
                let days = i32::from_be_bytes(raw.try_into().expect("4 bytes"));
                // Days beyond the timestamp range (from about 292,000 years on) have no midnight.
                let micros = i64::from(days).checked_mul(86_400_000_000).filter(|m| *m != i64::MAX && *m != i64::MIN);
                if let (true, Some(micros)) = (days != i32::MAX && days != i32::MIN, micros) {
                    let timestamp = builtin("timestamp");
                    let mut midnight = Vec::new();
                    BinaryCodec::for_column(&timestamp, 1114, false)
                        .expect("timestamp")
                        .encode(&timestamp, &micros.to_be_bytes(), &mut midnight)
                        .expect("a timestamp");
                    let date = value.as_str().expect("a string");
                    let midnight: serde_json::Value = serde_json::from_slice(&midnight).expect("JSON");
                    let midnight = midnight.as_str().expect("a string");
                    // Saturated values differ between the two (their sentinels do).
                    if !date.starts_with("9999-12-31") && !date.starts_with("0000-01-01") {
                        assert_eq!(format!("{date}T00:00:00Z"), midnight, "date {days}");
                    }
                }
            }
            _ => {}
        }
    }
}

/// The value's text as PostgreSQL prints it, for the types where that is simple.
fn postgres_text(name: &str, raw: &[u8]) -> Option<String> {
    Some(match name {
        "bool" => match raw {
            [0] => "f".into(),
            [1] => "t".into(),
            _ => return None,
        },
        "int2" => i16::from_be_bytes(raw.try_into().ok()?).to_string(),
        "int4" => i32::from_be_bytes(raw.try_into().ok()?).to_string(),
        "int8" => i64::from_be_bytes(raw.try_into().ok()?).to_string(),
        "oid" => u32::from_be_bytes(raw.try_into().ok()?).to_string(),
        // Any text that reads back to the value: the text path parses float4 always.
        "float4" => float_text(f64::from(f32::from_be_bytes(raw.try_into().ok()?))),
        "uuid" => {
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if hex.len() != 32 {
                return None;
            }
            format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
        }
        _ => return None,
    })
}

/// A float's text that reads back to it exactly (a widened `float4` is exact as `f64`).
fn float_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value < 0.0 { "-Infinity" } else { "Infinity" }.into()
    } else {
        format!("{value:e}")
    }
}
