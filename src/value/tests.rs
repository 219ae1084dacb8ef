//! Every type family end to end: PostgreSQL text output (as a PostgreSQL 15 session with
//! the pinned settings prints it) → JSON, and that JSON validates against the column's
//! schema with format checking on.

use serde_json::{json, Value};

use super::*;

fn builtin(name: &str) -> PgType {
    PgType::Builtin { name: name.into(), typmod: -1 }
}

fn sized(name: &str, length: i32) -> PgType {
    PgType::Builtin { name: name.into(), typmod: length + 4 }
}

fn array(element: PgType) -> PgType {
    PgType::Array { element: Box::new(element) }
}

fn mood() -> PgType {
    PgType::Enum { name: "mood".into(), labels: vec!["sad".into(), "ok".into(), "happy".into()] }
}

/// A validator like Flow's: formats are checked, and `format: number` accepts what Flow
/// accepts (a decimal string, `NaN`, `Infinity`, `-Infinity`).
fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .with_format("number", |s: &str| matches!(s, "NaN" | "Infinity" | "-Infinity") || s.parse::<f64>().is_ok())
        .build(schema)
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

/// Encodes `text`, checks the output is strict JSON, and returns it.
fn encode(ty: &PgType, text: &str) -> String {
    let mut out = Vec::new();
    encode_value(ty, text.as_bytes(), &mut out).unwrap_or_else(|e| panic!("{ty} {text:?}: {e}"));
    let json = String::from_utf8(out).expect("output is UTF-8");
    serde_json::from_str::<Value>(&json).unwrap_or_else(|e| panic!("{ty} {text:?} gave invalid JSON {json}: {e}"));
    json
}

/// Checks that each `(text, json)` pair encodes exactly so and that the value validates
/// against the column schema (nullable and not; null only against the nullable one).
fn check(ty: &PgType, cases: &[(&str, &str)]) {
    let strict = validator(&column_schema(ty, false, false, &ValueFormats::improved()));
    let nullable = validator(&column_schema(ty, true, false, &ValueFormats::improved()));
    let null_allowed = !kind::domain_is_not_null(ty);
    assert_eq!(nullable.is_valid(&Value::Null), null_allowed, "{ty}: null validates only when nullable");
    for (text, expected) in cases {
        let json = encode(ty, text);
        assert_eq!(json, *expected, "{ty} {text:?}");
        let value: Value = serde_json::from_str(&json).unwrap();
        for (label, validator) in [("non-nullable", &strict), ("nullable", &nullable)] {
            if let Err(error) = validator.validate(&value) {
                panic!(
                    "{ty} {text:?} → {json} fails its {label} schema {}: {error}",
                    column_schema(ty, true, false, &ValueFormats::improved())
                );
            }
        }
    }
}

fn encode_error(ty: &PgType, text: &[u8]) -> ValueError {
    let mut out = b"prefix".to_vec();
    let error = encode_value(ty, text, &mut out)
        .expect_err(&format!("{ty} {:?} should be rejected", String::from_utf8_lossy(text)));
    assert_eq!(out, b"prefix", "the buffer is restored after an error");
    error
}

#[test]
fn booleans_accept_output_and_text_cast_forms() {
    check(&builtin("bool"), &[("t", "true"), ("f", "false"), ("true", "true"), ("false", "false")]);
}

#[test]
fn integers_are_exact_json_numbers() {
    check(&builtin("int2"), &[("-32768", "-32768"), ("0", "0")]);
    check(&builtin("int4"), &[("2147483647", "2147483647")]);
    check(
        &builtin("int8"),
        &[("9223372036854775807", "9223372036854775807"), ("-9223372036854775808", "-9223372036854775808")],
    );
    check(&builtin("oid"), &[("4294967295", "4294967295")]);
}

#[test]
fn numerics_keep_every_digit_scale_and_special_value() {
    let thousand_digits = format!("{}.{}", "9".repeat(600), "1".repeat(400));
    check(
        &builtin("numeric"),
        &[
            ("123456.7890", r#""123456.7890""#),
            ("0.000", r#""0.000""#),
            ("-2.5", r#""-2.5""#),
            ("0.00000000000000000001", r#""0.00000000000000000001""#),
            ("NaN", r#""NaN""#),
            ("Infinity", r#""Infinity""#),
            ("-Infinity", r#""-Infinity""#),
            (&thousand_digits, &format!("\"{thousand_digits}\"")),
        ],
    );
}

#[test]
fn floats_print_like_go_and_special_values_are_strings() {
    check(
        &builtin("float8"),
        &[
            ("1.5", "1.5"),
            ("0.1", "0.1"),
            ("-0", "-0"),
            ("1e+20", "100000000000000000000"),
            ("1e+21", "1e+21"),
            ("1e-07", "1e-7"),
            ("1e-06", "0.000001"),
            ("1e+300", "1e+300"),
            ("1.7976931348623157e+308", "1.7976931348623157e+308"),
            ("0.30000000000000004", "0.30000000000000004"),
            ("NaN", r#""NaN""#),
            ("Infinity", r#""Infinity""#),
            ("-Infinity", r#""-Infinity""#),
        ],
    );
    check(
        &builtin("float4"),
        &[
            ("123.456", "123.456"),
            // PostgreSQL 11 and older print float4 with 9 digits at extra_float_digits=3.
            ("123.456001", "123.456"),
            ("3.4e+38", "3.4e+38"),
            ("1.5", "1.5"),
            ("-Infinity", r#""-Infinity""#),
        ],
    );
}

#[test]
fn float_keys_are_strings_in_fixed_notation() {
    let cases: &[(&str, &str, &str)] = &[
        ("float8", "3.14", r#""3.14""#),
        ("float8", "-1", r#""-1""#),
        ("float8", "0", r#""0""#),
        ("float8", "9999999999.99", r#""9999999999.99""#),
        ("float8", "1e-07", r#""0.0000001""#),
        ("float8", "NaN", r#""NaN""#),
        ("float4", "123.456", r#""123.456""#),
        ("float4", "-Infinity", r#""-Infinity""#),
    ];
    for (name, text, expected) in cases {
        let ty = builtin(name);
        let mut out = Vec::new();
        encode_key_value(&ty, text.as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), *expected, "{name} {text}");
        let value: Value = serde_json::from_str(expected).unwrap();
        assert!(validator(&column_schema(&ty, false, true, &ValueFormats::improved())).is_valid(&value));
    }
    let mut out = Vec::new();
    encode_key_value(&builtin("int8"), b"42", &mut out).unwrap();
    encode_key_value(&builtin("text"), b"a", &mut out).unwrap();
    assert_eq!(out, br#"42"a""#);
}

#[test]
fn text_is_escaped_for_json_without_changing_characters() {
    check(
        &builtin("text"),
        &[
            ("plain", r#""plain""#),
            ("", r#""""#),
            ("quote \" and backslash \\", r#""quote \" and backslash \\""#),
            ("line\nfeed\ttab\rreturn", r#""line\nfeed\ttab\rreturn""#),
            ("\u{1}\u{8}\u{c}\u{1f}\u{7f}", "\"\\u0001\\b\\f\\u001f\u{7f}\""),
            ("unicode é ☃ 😀 \u{2028}", "\"unicode é ☃ 😀 \u{2028}\""),
            ("</script>&", r#""</script>&""#),
        ],
    );
    check(&PgType::Extension { name: "citext".into() }, &[("Hello", r#""Hello""#)]);
    check(&builtin("name"), &[("pg_catalog", r#""pg_catalog""#)]);
    check(&builtin("char"), &[("x", r#""x""#), ("\\351", r#""\\351""#), ("", r#""""#)]);
}

#[test]
fn varchar_and_char_keep_to_their_declared_lengths() {
    check(&sized("varchar", 5), &[("abcde", r#""abcde""#), ("ééééé", r#""ééééé""#)]);
    check(
        &sized("bpchar", 5),
        &[
            ("ab   ", r#""ab   ""#),
            // A `::text` cast trims the padding; it is restored.
            ("ab", r#""ab   ""#),
            ("é", r#""é    ""#),
            ("", r#""     ""#),
        ],
    );
    check(&builtin("bpchar"), &[("unbounded", r#""unbounded""#)]);
}

#[test]
fn bytea_becomes_standard_padded_base64() {
    check(
        &builtin("bytea"),
        &[
            ("\\xdeadbeef", r#""3q2+7w==""#),
            ("\\xDEADBEEF", r#""3q2+7w==""#),
            ("\\x", r#""""#),
            ("\\x00ff10", r#""AP8Q""#),
            // bytea_output=escape, should a session not be pinned.
            ("abc\\\\\\000\\377", r#""YWJjXAD/""#),
        ],
    );
    let big = format!("\\x{}", "0123456789abcdef".repeat(10_000));
    let json = encode(&builtin("bytea"), &big);
    let expected = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        [0x01u8, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef].repeat(10_000),
    );
    assert_eq!(json, format!("\"{expected}\""));
}

#[test]
fn json_and_jsonb_are_embedded_compacted_and_repaired() {
    check(
        &builtin("json"),
        &[
            (r#"{"a" : "\ud83d\ude00", "b":"\udc00x"}"#, r#"{"a":"\ud83d\ude00","b":"\ufffdx"}"#),
            (r#""\ud83d""#, r#""\ufffd""#),
            ("[1e5, -0.0, \"\\u0000\"]", r#"[1e5,-0.0,"\u0000"]"#),
            ("null", "null"),
            ("12", "12"),
        ],
    );
    check(&builtin("jsonb"), &[(r#"{"a": 1, "b": [1, 2.50, "x"]}"#, r#"{"a":1,"b":[1,2.50,"x"]}"#)]);
}

#[test]
fn dates_and_timestamps_validate_as_date_and_date_time() {
    check(
        &builtin("date"),
        &[
            ("2024-01-15", r#""2024-01-15""#),
            ("infinity", r#""9999-12-31""#),
            ("-infinity", r#""0000-01-01""#),
            ("5874897-12-31", r#""9999-12-31""#),
            ("0044-03-15 BC", r#""0000-01-01""#),
            ("0001-12-31 BC", r#""0000-12-31""#),
        ],
    );
    check(
        &builtin("timestamp"),
        &[
            ("2024-01-15 06:30:00.12", r#""2024-01-15T06:30:00.12Z""#),
            ("1991-08-31 12:34:56.111", r#""1991-08-31T12:34:56.111Z""#),
            ("infinity", r#""9999-12-31T23:59:59Z""#),
            ("-infinity", r#""0000-01-01T00:00:00Z""#),
            ("12345-06-07 01:02:03", r#""9999-12-31T23:59:59Z""#),
            ("0044-03-15 10:00:00 BC", r#""0000-01-01T00:00:00Z""#),
        ],
    );
    check(
        &builtin("timestamptz"),
        &[
            ("2024-01-15 01:00:00.5+00", r#""2024-01-15T01:00:00.5Z""#),
            ("2024-01-15 06:30:00-08", r#""2024-01-15T14:30:00Z""#),
            ("294276-12-31 23:59:59.999999+00", r#""9999-12-31T23:59:59Z""#),
            ("4713-01-01 00:00:00+00 BC", r#""0000-01-01T00:00:00Z""#),
        ],
    );
}

#[test]
fn times_validate_as_time() {
    check(
        &builtin("time"),
        &[
            ("14:30:00", r#""14:30:00Z""#),
            ("12:34:56.789", r#""12:34:56.789Z""#),
            ("24:00:00", r#""23:59:59.999999999Z""#),
        ],
    );
    check(
        &builtin("timetz"),
        &[
            ("14:30:00+05:30", r#""14:30:00+05:30""#),
            ("12:00:00-08", r#""12:00:00-08:00""#),
            ("00:00:00+00", r#""00:00:00Z""#),
            ("12:00:00+05:30:15", r#""06:29:45Z""#),
            ("24:00:00+05", r#""23:59:59.999999999+05:00""#),
        ],
    );
}

#[test]
fn intervals_are_iso_8601_duration_strings() {
    check(
        &builtin("interval"),
        &[
            ("P1Y2M3DT4H5M6.5S", r#""P1Y2M3DT4H5M6.5S""#),
            ("PT0S", r#""PT0S""#),
            ("P-1Y-2DT3H", r#""P-1Y-2DT3H""#),
            ("P1Y3D", r#""P1Y3D""#),
        ],
    );
}

#[test]
fn network_addresses_print_as_their_output_functions_do() {
    check(
        &builtin("inet"),
        &[
            ("192.168.1.1", r#""192.168.1.1""#),
            // `inet::text` adds a host prefix length; the output function does not.
            ("192.168.1.1/32", r#""192.168.1.1""#),
            ("::1/128", r#""::1""#),
            ("10.0.0.1/8", r#""10.0.0.1/8""#),
            ("2001:4f8:3:ba::/64", r#""2001:4f8:3:ba::/64""#),
        ],
    );
    check(&builtin("cidr"), &[("192.168.1.0/24", r#""192.168.1.0/24""#), ("10.1.2.3/32", r#""10.1.2.3/32""#)]);
    check(&builtin("macaddr"), &[("08:00:2b:01:02:03", r#""08:00:2b:01:02:03""#)]);
    check(&builtin("macaddr8"), &[("08:00:2b:01:02:03:04:05", r#""08:00:2b:01:02:03:04:05""#)]);
}

#[test]
fn uuids_validate_as_uuid() {
    check(&builtin("uuid"), &[("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#)]);
}

#[test]
fn other_builtins_are_their_text_output() {
    let cases: &[(&str, &str)] = &[
        ("money", "$1,234.56"),
        ("money", "-$12.30"),
        ("point", "(1,2)"),
        ("line", "{1,2,3}"),
        ("lseg", "[(1,2),(3,4)]"),
        ("box", "(3,4),(1,2)"),
        ("path", "((1,2),(3,4))"),
        ("polygon", "((1,2),(3,4),(5,6))"),
        ("circle", "<(1,2),3>"),
        ("tsvector", "'a' 'cat' 'fat'"),
        ("tsquery", "'fat' & 'cat'"),
        ("bit", "101"),
        ("varbit", "1"),
        ("xml", "<a>x</a>"),
        ("jsonpath", "$.\"name\""),
        ("pg_lsn", "0/16B3748"),
        ("tid", "(1,2)"),
        ("xid", "123"),
        ("xid8", "123"),
        ("regclass", "pg_class"),
    ];
    for (name, text) in cases {
        let expected = serde_json::to_string(text).unwrap();
        check(&builtin(name), &[(text, &expected)]);
        assert_eq!(column_schema(&builtin(name), false, false, &ValueFormats::improved()), json!({"type": "string"}));
    }
}

#[test]
fn enums_are_their_labels() {
    check(&mood(), &[("sad", r#""sad""#), ("happy", r#""happy""#)]);
    // A label added after discovery still encodes (the schema is refreshed on rediscovery).
    assert_eq!(encode(&mood(), "ecstatic"), r#""ecstatic""#);
}

#[test]
fn domains_encode_as_their_base_type() {
    let positive = PgType::Domain { name: "positive".into(), base: Box::new(builtin("int4")), not_null: true };
    check(&positive, &[("42", "42")]);
    let mood_domain = PgType::Domain { name: "feeling".into(), base: Box::new(mood()), not_null: false };
    check(&mood_domain, &[("ok", r#""ok""#)]);
    let stamps =
        PgType::Domain { name: "stamps".into(), base: Box::new(array(builtin("timestamptz"))), not_null: false };
    check(&stamps, &[(r#"{"2024-01-01 00:00:00+00",infinity}"#, r#"["2024-01-01T00:00:00Z","9999-12-31T23:59:59Z"]"#)]);
}

#[test]
fn arrays_flatten_every_dimension() {
    check(
        &array(builtin("int4")),
        &[
            ("{1,2,3}", "[1,2,3]"),
            ("{{1,2},{3,4}}", "[1,2,3,4]"),
            ("{}", "[]"),
            ("[0:2]={1,2,3}", "[1,2,3]"),
            ("[1:1][-2:-1]={{1,2}}", "[1,2]"),
            ("{{{1}},{{NULL}}}", "[1,null]"),
            ("{NULL,null, 7 }", "[null,null,7]"),
        ],
    );
    check(
        &array(builtin("text")),
        &[(
            r#"{"a b","c\"d","e\\f",NULL,"NULL",""," x ","{}","a,b",plain}"#,
            r#"["a b","c\"d","e\\f",null,"NULL",""," x ","{}","a,b","plain"]"#,
        )],
    );
    check(&array(builtin("box")), &[("{(3,4),(1,2);(5,6),(1,1)}", r#"["(3,4),(1,2)","(5,6),(1,1)"]"#)]);
    // PostGIS declares ':' as the array delimiter of geometry and geography.
    check(
        &array(PgType::Extension { name: "geometry".into() }),
        &[(
            "{{0101000000000000000000F03F0000000000000040:NULL}:{010300000000000000:010300000000000000}}",
            r#"["0101000000000000000000F03F0000000000000040",null,"010300000000000000","010300000000000000"]"#,
        )],
    );
    assert!(array_delimiter_known(&builtin("box"), ';'));
    assert!(!array_delimiter_known(&builtin("box"), ','));
    assert!(array_delimiter_known(&builtin("int4"), ','));
    check(&array(builtin("float8")), &[("{NaN,Infinity,1.5,-0}", r#"["NaN","Infinity",1.5,-0]"#)]);
    check(&array(builtin("bytea")), &[(r#"{"\\x01ff",NULL}"#, r#"["Af8=",null]"#)]);
    check(&array(builtin("jsonb")), &[(r#"{"{\"a\": [1, \"x,y\"]}",null}"#, r#"[{"a":[1,"x,y"]},null]"#)]);
    check(&array(builtin("date")), &[("{2024-01-01,infinity}", r#"["2024-01-01","9999-12-31"]"#)]);
    check(&array(mood()), &[("{sad,NULL,happy}", r#"["sad",null,"happy"]"#)]);
    check(&array(sized("bpchar", 3)), &[(r#"{"a  ",b}"#, r#"["a  ","b  "]"#)]);
}

#[test]
fn arrays_of_composites_and_ranges_encode_each_element_fully() {
    let pair = PgType::Composite {
        name: "pair".into(),
        fields: vec![("a".into(), builtin("int4")), ("b".into(), builtin("text"))],
    };
    check(&array(pair), &[(r#"{"(1,\"b c\")","(2,)",NULL}"#, r#"[{"a":1,"b":"b c"},{"a":2,"b":null},null]"#)]);
    let int4range = PgType::Range { name: "int4range".into(), subtype: Box::new(builtin("int4")) };
    check(&array(int4range), &[(r#"{"[1,5)",empty}"#, r#"["[1,5)","empty"]"#)]);
}

#[test]
fn ranges_keep_their_notation_and_rewrite_date_and_time_bounds() {
    let range = |name: &str, subtype: &str| PgType::Range { name: name.into(), subtype: Box::new(builtin(subtype)) };
    check(
        &range("int4range", "int4"),
        &[("[1,5)", r#""[1,5)""#), ("empty", r#""empty""#), ("(,)", r#""(,)""#), ("[3,)", r#""[3,)""#)],
    );
    check(&range("numrange", "numeric"), &[("[1.5,2.5]", r#""[1.5,2.5]""#)]);
    check(&range("daterange", "date"), &[("[2024-01-01,2024-12-31)", r#""[2024-01-01,2024-12-31)""#)]);
    check(
        &range("tsrange", "timestamp"),
        &[
            (r#"["2024-01-01 00:00:00",infinity)"#, r#""[2024-01-01T00:00:00Z,infinity)""#),
            (r#"["12345-01-01 00:00:00",)"#, r#""[+12345-01-01T00:00:00Z,)""#),
        ],
    );
    check(
        &range("tstzrange", "timestamptz"),
        &[(
            r#"["2024-01-01 00:00:00+00","2024-06-01 12:00:00.5+00")"#,
            r#""[2024-01-01T00:00:00Z,2024-06-01T12:00:00.5Z)""#,
        )],
    );
    // A bound of a subtype without a rule is copied with its quoting, so the string is
    // still a valid range literal.
    check(&range("textrange", "text"), &[(r#"["a,b","c\"d")"#, r#""[\"a,b\",\"c\\\"d\")""#)]);
}

#[test]
fn multiranges_are_strings_of_their_ranges() {
    let multirange =
        |name: &str, subtype: &str| PgType::Multirange { name: name.into(), subtype: Box::new(builtin(subtype)) };
    check(&multirange("int4multirange", "int4"), &[("{[1,3),[5,7)}", r#""{[1,3),[5,7)}""#), ("{}", r#""{}""#)]);
    check(
        &multirange("tsmultirange", "timestamp"),
        &[(r#"{["2024-01-01 00:00:00","2024-01-02 00:00:00")}"#, r#""{[2024-01-01T00:00:00Z,2024-01-02T00:00:00Z)}""#)],
    );
}

#[test]
fn composites_become_objects_of_typed_fields() {
    let comp = PgType::Composite {
        name: "comp".into(),
        fields: vec![
            ("a".into(), builtin("int4")),
            ("b".into(), builtin("text")),
            ("c".into(), builtin("float8")),
            ("d".into(), mood()),
            ("e".into(), array(builtin("int4"))),
        ],
    };
    check(
        &comp,
        &[
            (r#"(1,"b c",,ok,"{1,2}")"#, r#"{"a":1,"b":"b c","c":null,"d":"ok","e":[1,2]}"#),
            (r#"(,"",1.5,,)"#, r#"{"a":null,"b":"","c":1.5,"d":null,"e":null}"#),
            (r#"(2,"x""y\\z,(p)",NaN,sad,{})"#, r#"{"a":2,"b":"x\"y\\z,(p)","c":"NaN","d":"sad","e":[]}"#),
        ],
    );
    // Keys come out in byte order of the field names, whatever the declaration order.
    let reversed = PgType::Composite {
        name: "rev".into(),
        fields: vec![("z".into(), builtin("int4")), ("A".into(), builtin("int4")), ("m".into(), builtin("int4"))],
    };
    check(&reversed, &[("(1,2,3)", r#"{"A":2,"m":3,"z":1}"#)]);
    let nested = PgType::Composite {
        name: "outer".into(),
        fields: vec![("inner".into(), reversed), ("t".into(), builtin("timestamptz"))],
    };
    check(
        &nested,
        &[(r#"("(1,2,3)","2024-01-01 00:00:00+00")"#, r#"{"inner":{"A":2,"m":3,"z":1},"t":"2024-01-01T00:00:00Z"}"#)],
    );
    let empty = PgType::Composite { name: "nothing".into(), fields: vec![] };
    check(&empty, &[("()", "{}")]);
}

#[test]
fn hstore_becomes_an_object_of_strings_and_nulls() {
    check(
        &PgType::Extension { name: "hstore".into() },
        &[
            (r#""b c"=>NULL, "a"=>"1", "q\"x"=>"v\\w", ""=>"""#, r#"{"":"","a":"1","b c":null,"q\"x":"v\\w"}"#),
            ("", "{}"),
            ("a=>1, b => NULL", r#"{"a":"1","b":null}"#),
        ],
    );
}

#[test]
fn extension_types_have_defined_encodings() {
    let extension = |name: &str| PgType::Extension { name: name.into() };
    check(&extension("vector"), &[("[1,2.5,-3e-05]", "[1,2.5,-0.00003]"), ("[1e-07]", "[1e-7]")]);
    check(&extension("halfvec"), &[("[0.1,2,3]", "[0.1,2,3]")]);
    check(&extension("sparsevec"), &[("{1:1.5,3:2}/5", r#""{1:1.5,3:2}/5""#)]);
    check(
        &extension("geometry"),
        &[(
            "0101000020E6100000000000000000F03F0000000000000040",
            r#""0101000020E6100000000000000000F03F0000000000000040""#,
        )],
    );
    check(
        &extension("geography"),
        &[(
            "0101000020E6100000000000000000F03F0000000000000040",
            r#""0101000020E6100000000000000000F03F0000000000000040""#,
        )],
    );
    check(&extension("ltree"), &[("a.b.c", r#""a.b.c""#)]);
    check(&extension("lquery"), &[("*.b.*{1,2}", r#""*.b.*{1,2}""#)]);
}

#[test]
fn unknown_types_are_strings_under_the_catch_all_schema() {
    for ty in
        [PgType::Unknown { name: "mytype".into() }, builtin("int2vector"), PgType::Extension { name: "cube".into() }]
    {
        check(&ty, &[("1 2 3", r#""1 2 3""#)]);
        let schema = column_schema(&ty, true, false, &ValueFormats::improved());
        assert!(schema.get("type").is_none(), "{schema}");
        assert!(schema["description"].as_str().unwrap().starts_with("using catch-all schema"));
    }
}

#[test]
fn malformed_text_is_an_error_and_never_a_panic() {
    let comp = PgType::Composite {
        name: "pair".into(),
        fields: vec![("a".into(), builtin("int4")), ("b".into(), builtin("text"))],
    };
    let cases: Vec<(PgType, &[u8])> = vec![
        (builtin("bool"), b"yes"),
        (builtin("int4"), b"12x"),
        (builtin("int4"), b""),
        (builtin("int4"), b"-"),
        (builtin("int8"), b"007"),
        (builtin("numeric"), b"1e5"),
        (builtin("numeric"), b"1."),
        (builtin("numeric"), b"nan"),
        (builtin("float8"), b"inf"),
        (builtin("float8"), b"1.2.3"),
        (builtin("float8"), b""),
        (builtin("bytea"), b"\\x0"),
        (builtin("bytea"), b"\\xzz"),
        (builtin("bytea"), b"\\9"),
        (builtin("uuid"), b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"),
        (builtin("uuid"), b"a0eebc99x9c0b-4ef8-bb6d-6bb9bd380a11"),
        (builtin("json"), b"{\"a\":"),
        (builtin("json"), b"\"\\q\""),
        (builtin("date"), b"2024-02-30"),
        (builtin("timestamp"), b"2024-01-01"),
        (builtin("time"), b"25:00:00"),
        (array(builtin("int4")), b"{1,2"),
        (array(builtin("int4")), b"{1,,2}"),
        (array(builtin("int4")), b"{1,2}}"),
        (array(builtin("int4")), b"{{1,2}"),
        (array(builtin("int4")), b"1,2"),
        (array(builtin("int4")), b"[0:2]{1}"),
        (array(builtin("int4")), b"[0:2"),
        (array(builtin("text")), b"{\"abc}"),
        (array(builtin("text")), b"{\"a\\"),
        (array(builtin("text")), b"{a\"b}"),
        (array(builtin("int4")), b"{1,x}"),
        (comp.clone(), b"(1,2"),
        (comp.clone(), b"(1)"),
        (comp.clone(), b"(1,2,3)"),
        (comp.clone(), b"(1,\"x)"),
        (comp.clone(), b"1,2"),
        (comp.clone(), b"(1,2)x"),
        (PgType::Range { name: "int4range".into(), subtype: Box::new(builtin("int4")) }, b"[1,5"),
        (PgType::Range { name: "int4range".into(), subtype: Box::new(builtin("int4")) }, b"<1,5>"),
        (PgType::Range { name: "daterange".into(), subtype: Box::new(builtin("date")) }, b"[2024-13-01,)"),
        (PgType::Multirange { name: "int4multirange".into(), subtype: Box::new(builtin("int4")) }, b"{[1,3)"),
        (PgType::Extension { name: "hstore".into() }, b"\"a\"=>"),
        (PgType::Extension { name: "hstore".into() }, b"\"a\"=\"b\""),
        (PgType::Extension { name: "hstore".into() }, b"\"a"),
        (PgType::Extension { name: "vector".into() }, b"[1,NaN]"),
        (PgType::Extension { name: "vector".into() }, b"[1,2"),
    ];
    for (ty, text) in cases {
        let error = encode_error(&ty, text);
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn invalid_utf8_is_an_error_for_every_string_family() {
    let bad: &[u8] = b"ok \xff\xfe";
    for ty in [
        builtin("text"),
        sized("bpchar", 8),
        builtin("inet"),
        builtin("json"),
        mood(),
        PgType::Unknown { name: "x".into() },
        PgType::Extension { name: "hstore".into() },
        PgType::Range { name: "textrange".into(), subtype: Box::new(builtin("text")) },
    ] {
        let error = encode_error(&ty, bad);
        assert_eq!(error.kind(), &ValueErrorKind::InvalidUtf8 { offset: 3 }, "{ty}");
    }
    let error = encode_error(&array(builtin("text")), b"{\"a\",\"\xc3\"}");
    assert_eq!(error.type_name(), "text", "the innermost type is named");
}

#[test]
fn errors_inside_nested_values_name_the_innermost_type() {
    let comp = PgType::Composite { name: "pair".into(), fields: vec![("t".into(), builtin("timestamptz"))] };
    let error = encode_error(&array(comp), br#"{"(\"2024-01-01 00:00:00\")"}"#);
    assert_eq!(error.type_name(), "timestamptz");
    assert!(error.to_string().contains("UTC offset"), "{error}");
}

/// Deterministic pseudo-random bytes (xorshift), biased towards the syntax characters.
fn noise(seed: u64, length: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"{}[]()\",;\\=>:. -+0123456789eEnNULaftxTZ\x00\xff\xc3";
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[usize::try_from(state % ALPHABET.len() as u64).unwrap()]
        })
        .collect()
}

#[test]
fn random_input_never_panics_and_success_is_always_valid_json() {
    let comp = PgType::Composite {
        name: "c".into(),
        fields: vec![("a".into(), array(builtin("int4"))), ("b".into(), builtin("text"))],
    };
    let types = [
        builtin("bool"),
        builtin("int4"),
        builtin("numeric"),
        builtin("float8"),
        builtin("bytea"),
        builtin("json"),
        builtin("date"),
        builtin("timestamptz"),
        builtin("timetz"),
        array(builtin("text")),
        array(array(builtin("int4"))),
        comp,
        PgType::Range { name: "tsrange".into(), subtype: Box::new(builtin("timestamp")) },
        PgType::Multirange { name: "m".into(), subtype: Box::new(builtin("int4")) },
        PgType::Extension { name: "hstore".into() },
        PgType::Extension { name: "vector".into() },
    ];
    for seed in 0..3_000u64 {
        let text = noise(seed, usize::try_from(seed % 40).unwrap());
        for ty in &types {
            let mut out = Vec::new();
            if encode_value(ty, &text, &mut out).is_ok() {
                serde_json::from_slice::<Value>(&out)
                    .unwrap_or_else(|e| panic!("{ty} {text:?} gave invalid JSON {out:?}: {e}"));
            }
        }
    }
}

pub(crate) mod allocations;
mod go_formats;

/// The values of [`encoding_work_grows_linearly_with_the_value`], about `size` bytes each.
fn large_values(size: usize) -> [(PgType, Vec<u8>); 4] {
    [
        (builtin("text"), "a\"é\n".repeat(size / 5).into_bytes()),
        (builtin("bytea"), format!("\\x{}", "0f".repeat(size / 2)).into_bytes()),
        (builtin("json"), format!("[{}1]", "{\"k\": \"\\ud83d v\"}, ".repeat(size / 20)).into_bytes()),
        (array(builtin("text")), format!("{{{}x}}", "\"a b\",NULL,".repeat(size / 11)).into_bytes()),
    ]
}

const MEGABYTE: usize = 1 << 20;

/// Encoding a value costs work in proportion to its size: the allocations stay few (no
/// allocation per character or element) and the bytes allocated stay a small multiple of
/// the value's size (no copy of the output so far per piece). A quadratic encoder of a
/// 10 MB value would allocate terabytes. Counted, not timed, so a busy machine cannot make
/// it fail.
#[test]
fn encoding_work_grows_linearly_with_the_value() {
    let small = large_values(MEGABYTE);
    let large = large_values(10 * MEGABYTE);
    for ((ty, small), (_, large)) in small.iter().zip(&large) {
        let work = |text: &[u8]| {
            let mut out = Vec::new();
            let counted = allocations::during(|| encode_value(ty, text, &mut out).unwrap());
            assert!(out.len() <= 2 * text.len(), "{ty}: {} bytes of JSON from {} bytes", out.len(), text.len());
            counted
        };
        let (small_calls, small_bytes) = work(small);
        let (large_calls, large_bytes) = work(large);
        // Growing the output by doubling makes a few more allocations per tenfold size.
        assert!(large_calls <= small_calls + 16, "{ty}: {small_calls} allocations for 1 MB, {large_calls} for 10 MB");
        // Ten times the value, about ten times the bytes (quadratic would be a hundred).
        assert!(large_bytes <= 12 * small_bytes, "{ty}: {small_bytes} bytes for 1 MB, {large_bytes} for 10 MB");
        for (text, bytes) in [(small, small_bytes), (large, large_bytes)] {
            assert!(bytes <= 8 * text.len() as u64, "{ty}: {bytes} bytes allocated for a value of {}", text.len());
        }
    }
}
