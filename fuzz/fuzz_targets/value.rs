//! Feeds arbitrary text to the value encoder for a spread of column types.
//!
//! Besides "never panics", it checks the encoder's contract: a value that encodes is
//! exactly one valid JSON value, and a failure leaves the output buffer as it was.

#![no_main]

use libfuzzer_sys::fuzz_target;
use source_postgres::value::{encode_key_value, encode_value, PgType};

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
});
