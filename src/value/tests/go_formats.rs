//! Every switchable difference from the Go connector, both ways: the value and the schema
//! in this connector's form and in Go's (see `docs/types.md`).

use serde_json::{json, Value};

use crate::value::{column_schema, encode_value_with, PgType, ValueFormats};

fn builtin(name: &str) -> PgType {
    PgType::Builtin { name: name.into(), typmod: -1 }
}

fn encode(formats: &ValueFormats, ty: &PgType, text: &str) -> Value {
    let mut out = Vec::new();
    encode_value_with(formats, ty, text.as_bytes(), &mut out).unwrap_or_else(|e| panic!("{ty:?} {text:?}: {e}"));
    serde_json::from_slice(&out).unwrap()
}

fn mood() -> PgType {
    PgType::Enum { name: "mood".into(), labels: vec!["sad".into(), "ok".into()] }
}

fn pair() -> PgType {
    PgType::Composite {
        name: "pair".into(),
        fields: vec![("a".into(), builtin("int4")), ("b".into(), builtin("text"))],
    }
}

/// (improvement, type, text, improved value, Go value)
fn cases() -> Vec<(&'static str, PgType, &'static str, Value, Value)> {
    let daterange = PgType::Range { name: "daterange".into(), subtype: Box::new(builtin("date")) };
    let tsrange = PgType::Range { name: "tstzrange".into(), subtype: Box::new(builtin("timestamptz")) };
    vec![
        ("iso_intervals", builtin("interval"), "P1Y2M3D", json!("P1Y2M3D"), json!("14 mon 3 day")),
        ("iso_intervals", builtin("interval"), "PT5H30M", json!("PT5H30M"), json!(" 05:30:00")),
        ("iso_intervals", builtin("interval"), "PT0S", json!("PT0S"), json!("")),
        ("inet_as_printed", builtin("inet"), "192.168.1.1", json!("192.168.1.1"), json!("192.168.1.1/32")),
        ("inet_as_printed", builtin("inet"), "10.0.0.1/8", json!("10.0.0.1/8"), json!("10.0.0.1/8")),
        (
            "date_ranges_as_dates",
            daterange.clone(),
            "[2024-01-01,2024-12-31)",
            json!("[2024-01-01,2024-12-31)"),
            json!("[2024-01-01T00:00:00Z,2024-12-31T00:00:00Z)"),
        ),
        ("date_ranges_as_dates", daterange, "(,2024-01-01]", json!("(,2024-01-01]"), json!("(,2024-01-01T00:00:00Z]")),
        ("saturating_dates", builtin("date"), "12345-06-07", json!("9999-12-31"), json!("0000-01-01")),
        (
            "saturating_dates",
            builtin("timestamp"),
            "12345-06-07 00:00:00",
            json!("9999-12-31T23:59:59Z"),
            json!("0000-01-01T00:00:00Z"),
        ),
        (
            "exact_range_bounds",
            tsrange.clone(),
            "[2024-01-01 00:00:00+00,infinity)",
            json!("[2024-01-01T00:00:00Z,infinity)"),
            json!("[2024-01-01T00:00:00Z,9999-12-31T23:59:59Z)"),
        ),
        (
            "exact_range_bounds",
            tsrange,
            "[12345-01-01 00:00:00+00,)",
            json!("[+12345-01-01T00:00:00Z,)"),
            json!("[0000-01-01T00:00:00Z,)"),
        ),
        ("typed_composites", pair(), "(1,\"x y\")", json!({"a": 1, "b": "x y"}), json!("(1,\"x y\")")),
        (
            "typed_hstore",
            PgType::Extension { name: "hstore".into() },
            "\"k\"=>\"v\"",
            json!({"k": "v"}),
            json!("\"k\"=>\"v\""),
        ),
        ("typed_vectors", PgType::Extension { name: "vector".into() }, "[1,2.5]", json!([1, 2.5]), json!("[1,2.5]")),
        (
            "typed_user_arrays",
            PgType::Array { element: Box::new(mood()) },
            "{sad,ok}",
            json!(["sad", "ok"]),
            json!("{sad,ok}"),
        ),
        ("numeric_scale_kept", builtin("numeric"), "0.000", json!("0.000"), json!("0")),
        ("numeric_scale_kept", builtin("numeric"), "123456.7890", json!("123456.7890"), json!("123456.7890")),
    ]
}

#[test]
fn each_difference_has_both_forms_switched_by_its_own_flag() {
    for (name, ty, text, improved, go) in cases() {
        assert_eq!(encode(&ValueFormats::improved(), &ty, text), improved, "{name} improved {text}");
        assert_eq!(encode(&ValueFormats::go(), &ty, text), go, "{name} go {text}");
        // The one flag alone switches it, both ways.
        let explicit = |on: bool| std::iter::once((name.to_string(), on)).collect();
        let only_off = ValueFormats::resolve(&explicit(false), &crate::value::StateFormats::New);
        assert_eq!(encode(&only_off, &ty, text), go, "{name} off alone {text}");
        let only_on = ValueFormats::resolve(&explicit(true), &crate::value::StateFormats::Go);
        assert_eq!(encode(&only_on, &ty, text), improved, "{name} on alone {text}");
    }
}

#[test]
fn schemas_follow_the_formats() {
    let (improved, go) = (ValueFormats::improved(), ValueFormats::go());
    let catch_all = |schema: &Value| schema.get("type").is_none() && schema.get("description").is_some();
    for ty in [pair(), PgType::Extension { name: "hstore".into() }, PgType::Extension { name: "vector".into() }] {
        assert!(!catch_all(&column_schema(&ty, true, false, &improved)), "{ty:?}");
        assert!(catch_all(&column_schema(&ty, true, false, &go)), "{ty:?}");
    }
    let moods = PgType::Array { element: Box::new(mood()) };
    assert_eq!(column_schema(&moods, true, false, &improved)["items"]["enum"], json!(["sad", "ok", null]));
    assert!(catch_all(&column_schema(&moods, true, false, &go)));
    assert_eq!(column_schema(&mood(), false, false, &go), json!({"type": "string"}));
    assert_eq!(column_schema(&builtin("name"), false, false, &improved), json!({"type": "string"}));
    assert!(catch_all(&column_schema(&builtin("name"), false, false, &go)));
    // Types Go described as strings stay strings in its form.
    assert_eq!(column_schema(&builtin("interval"), false, false, &go), json!({"type": "string"}));
    assert_eq!(column_schema(&builtin("inet"), false, false, &go), json!({"type": "string"}));
    // Values of the Go catch-all types are still their text.
    assert_eq!(encode(&go, &builtin("name"), "abc"), json!("abc"));
}

#[test]
fn go_value_flags_change_dates_times_and_arrays_with_their_schemas() {
    let formats =
        ValueFormats { date_as_date: false, time_as_time: false, flatten_arrays: false, ..ValueFormats::go() };
    assert_eq!(encode(&formats, &builtin("date"), "2024-01-15"), json!("2024-01-15T00:00:00Z"));
    assert_eq!(encode(&formats, &builtin("date"), "infinity"), json!("9999-12-31T23:59:59Z"));
    assert_eq!(encode(&formats, &builtin("time"), "14:30:00.5"), json!(52_200_500_000_i64));
    let ints = PgType::Array { element: Box::new(builtin("int4")) };
    assert_eq!(encode(&formats, &ints, "{{1,2},{3,4}}"), json!({"dimensions": [2, 2], "elements": [1, 2, 3, 4]}));
    assert_eq!(
        column_schema(&builtin("date"), false, false, &formats),
        json!({"type": "string", "format": "date-time"})
    );
    assert_eq!(column_schema(&builtin("time"), true, false, &formats), json!({"type": ["integer", "null"]}));
    assert_eq!(
        column_schema(&ints, false, false, &formats)["properties"]["elements"]["items"],
        json!({"type": ["integer", "null"]})
    );
    let nested = ValueFormats { multidimensional_arrays: true, ..ValueFormats::go() };
    assert_eq!(encode(&nested, &ints, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
    assert_eq!(column_schema(&ints, true, false, &nested), json!({"type": ["array", "null"]}));
    // The defaults of Go's own flags are the same in both modes.
    assert_eq!(encode(&ValueFormats::go(), &ints, "{{1,2},{3,4}}"), json!([1, 2, 3, 4]));
    assert_eq!(encode(&ValueFormats::go(), &builtin("date"), "2024-01-15"), json!("2024-01-15"));
}
