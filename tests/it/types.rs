//! Every PostgreSQL type, end to end: discovered schemas validated against captured values.
//!
//! A "torture" table holds one column per type, nullable and NOT NULL, plus an array
//! column of it, filled with edge values (NaN and infinite floats, numeric NaN and
//! 1000-digit values, infinite and BC dates, multi-dimensional arrays with NULL elements,
//! lone UTF-16 surrogates in json, every enum label, composites with NULL fields, ...).
//! The real binary discovers it, a `preview` capture backfills it, and every captured
//! document must validate against its binding's discovered `documentSchema` (JSON Schema
//! 2020-12, formats checked). The same rows are then inserted again while the capture is
//! stopped, and a second `preview` run, resuming from the state file, captures them through
//! logical replication: those documents must validate too and must equal their backfilled
//! twins value for value, since backfill (`::text` casts) and replication (pgoutput text)
//! share one encoder.
//!
//! Extension types: citext, hstore and ltree are contrib modules and always present.
//! PostGIS is tested when the server can install it (`scripts/test.sh` installs it under
//! CI), and [`postgis_is_installed_in_ci`] fails under `CI=true` if it is missing, so CI
//! never skips it. pgvector has no Debian package: its test is ignored unless asked for.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::harness::{connector_path, run_connector, TestDb};

/// One column type of the torture table.
pub struct TypeCase {
    /// Column-name stem.
    pub label: &'static str,
    /// The SQL type.
    pub ty: &'static str,
    /// SQL expressions of the values (each is cast to `ty`).
    pub values: &'static [&'static str],
    /// Also an array column `ty[]`.
    pub array: bool,
    /// The type forbids NULL (a NOT NULL domain): no NULL values or elements.
    pub never_null: bool,
}

const fn case(label: &'static str, ty: &'static str, values: &'static [&'static str]) -> TypeCase {
    TypeCase { label, ty, values, array: true, never_null: false }
}

/// User-defined types the cases refer to.
pub const TYPE_SETUP: &str = r#"
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE EXTENSION ltree;
CREATE TYPE test.mood AS ENUM ('sad', 'ok', 'happy', 'with space', 'odd "label" ☃');
CREATE DOMAIN test.positive AS int4 CHECK (VALUE > 0);
CREATE DOMAIN test.nn_text AS text NOT NULL;
CREATE DOMAIN test.positive_nn AS test.positive NOT NULL;
CREATE DOMAIN test.short AS varchar(5);
CREATE DOMAIN test.mood_domain AS test.mood;
CREATE DOMAIN test.int_list AS int4[];
CREATE TYPE test.inner AS (x float8, y date);
CREATE TYPE test.pair AS (a int4, b text, c test.mood, d int4[], e test.inner, "Odd ""F"" /~" bool);
CREATE DOMAIN test.pair_domain AS test.pair;
CREATE TYPE test.floatrange AS RANGE (subtype = float8);
CREATE SCHEMA "Odd ""Schema"" /~ Ünï";
GRANT USAGE ON SCHEMA "Odd ""Schema"" /~ Ünï" TO flow_capture;
CREATE TYPE "Odd ""Schema"" /~ Ünï"."Odd ""Enum""" AS ENUM ('a', 'B c');
"#;

/// Every built-in type family, the user-defined kinds and the contrib extension types.
pub const CASES: &[TypeCase] = &[
    case("bool", "bool", &["true", "false"]),
    case("int2", "int2", &["-32768", "32767", "0"]),
    case("int4", "int4", &["-2147483648", "2147483647"]),
    case("int8", "int8", &["-9223372036854775808", "9223372036854775807"]),
    case("oid", "oid", &["0", "4294967295"]),
    case(
        "numeric",
        "numeric",
        &["'NaN'", "'Infinity'", "'-Infinity'", "0.000", "-123456.7890", "repeat('9', 1000)", "'1e-300'"],
    ),
    case("numeric_10_3", "numeric(10,3)", &["1234567.891", "-0.5", "'NaN'", "0"]),
    case("float4", "float4", &["'NaN'", "'Infinity'", "'-Infinity'", "123.456", "3.4028235e38", "1e-45", "'-0'"]),
    case(
        "float8",
        "float8",
        &["'NaN'", "'Infinity'", "'-Infinity'", "0.1", "1.7976931348623157e308", "5e-324", "'-0'", "1e21", "1e-7"],
    ),
    case("money", "money", &["12.30", "-92233720368547758.08", "92233720368547758.07"]),
    case(
        "text",
        "text",
        &["''", r#"E'a "quoted"\\ line\nwith\ttabs \u0001 and \u2028'"#, "'ünï©ødé ☃ 😀'", "repeat('big ', 262144)"],
    ),
    case("varchar", "varchar", &["'abc'", "''"]),
    case("varchar_10", "varchar(10)", &["'0123456789'", "'ü☃😀'", "''"]),
    case("bpchar_5", "char(5)", &["'ab'", "'abcde'", "'😀'", "''"]),
    case("bpchar", "char", &["'x'", "' '"]),
    case("char", "\"char\"", &["'a'", "'é'", "''"]),
    case("name", "name", &["'a_name'", "repeat('n', 63)"]),
    case("bytea", "bytea", &[r"'\x'", r"'\xdeadbeef'", "decode(repeat('ff', 100000), 'hex')"]),
    case(
        "date",
        "date",
        &[
            "'2024-02-29'",
            "'infinity'",
            "'-infinity'",
            "'0001-01-01'",
            "'0001-12-31 BC'",
            "'4713-01-01 BC'",
            "'5874897-12-31'",
            "'9999-12-31'",
            "'10000-01-01'",
        ],
    ),
    case("time", "time", &["'00:00:00'", "'23:59:59.999999'", "'24:00:00'", "'14:30:00.5'"]),
    case("time_3", "time(3)", &["'12:34:56.789'"]),
    case(
        "timetz",
        "timetz",
        &["'14:30:00+05:30'", "'00:00:00+00'", "'23:59:59.999999-15:59'", "'24:00:00+00'", "'12:00:00+00:53:28'"],
    ),
    case(
        "timestamp",
        "timestamp",
        &[
            "'2024-01-15 06:30:00.12'",
            "'infinity'",
            "'-infinity'",
            "'4713-01-01 00:00:00 BC'",
            "'294276-12-31 23:59:59.999999'",
            "'0001-12-31 23:59:59 BC'",
            "'10000-01-01 00:00:00'",
        ],
    ),
    case("timestamp_0", "timestamp(0)", &["'2024-01-15 06:30:00.6'"]),
    case(
        "timestamptz",
        "timestamptz",
        &[
            "'2024-01-15 01:00:00.5+00'",
            "'infinity'",
            "'-infinity'",
            "'2024-03-10 02:30:00 America/New_York'",
            "'4713-01-01 00:00:00+00 BC'",
            "'294276-12-31 23:59:59.999999+00'",
            "'1883-11-18 12:00:00 America/Los_Angeles'",
        ],
    ),
    case(
        "interval",
        "interval",
        &[
            "'1 year 2 months 3 days 04:05:06.5'",
            "'0'",
            "'-178000000 years'",
            "'1 day -1 second'",
            "'-00:00:00.000001'",
        ],
    ),
    case("uuid", "uuid", &["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A12}'"]),
    case("inet", "inet", &["'192.168.1.1'", "'10.0.0.1/8'", "'::1'", "'2001:db8::1/64'"]),
    case("cidr", "cidr", &["'192.168.1.0/24'", "'2001:db8::/32'"]),
    case("macaddr", "macaddr", &["'08:00:2b:01:02:03'"]),
    case("macaddr8", "macaddr8", &["'08:00:2b:01:02:03:04:05'"]),
    case("point", "point", &["'(1.5,-2)'", "point('NaN', 'Infinity')"]),
    case("line", "line", &["'{1,2,3}'"]),
    case("lseg", "lseg", &["'[(1,2),(3,4)]'"]),
    case("box", "box", &["'(3,4),(1,2)'"]),
    case("path", "path", &["'[(1,2),(3,4)]'", "'((0,0),(1,1),(2,0))'"]),
    case("polygon", "polygon", &["'((0,0),(1,1),(2,0))'"]),
    case("circle", "circle", &["'<(1,2),3>'"]),
    case("bit_3", "bit(3)", &["B'101'"]),
    case("varbit", "varbit", &["B''", "B'1'", "B'0101010101'"]),
    case("tsvector", "tsvector", &["'a fat cat'", "''", "$$'it''s' 'a:1A'$$"]),
    case("tsquery", "tsquery", &["'fat & (rat | cat)'", "'!a <-> b'"]),
    case("xml", "xml", &["'<a/>'", "'<?xml version=\"1.0\"?><a>ü</a>'", "'text &amp; content'"]),
    case(
        "json",
        "json",
        &[
            r#"'"\ud83d"'"#,
            r#"'{"a" : "\ud83d\ude00 \udc00", "b": [1, 2.50, true, null]}'"#,
            "'null'",
            r#"'{"dup": 1, "dup": 2}'"#,
            "repeat('[', 100) || repeat(']', 100)",
        ],
    ),
    case("jsonb", "jsonb", &[r#"'{"a": 1, "b": [2.50]}'"#, r#"'"\u00e9"'"#, "'null'", "'[]'", "'{}'"]),
    case("jsonpath", "jsonpath", &["'$.\"name\"'", "'strict $.a[*] ? (@ > 1)'"]),
    case("pg_lsn", "pg_lsn", &["'0/16B3748'", "'FFFFFFFF/FFFFFFFF'"]),
    case("xid", "xid", &["'42'"]),
    case("xid8", "xid8", &["'18446744073709551615'"]),
    case("cid", "cid", &["'7'"]),
    case("tid", "tid", &["'(1,2)'"]),
    case("regclass", "regclass", &["'pg_class'"]),
    case("regtype", "regtype", &["'integer'"]),
    case("regproc", "regproc", &["'now'"]),
    case("regprocedure", "regprocedure", &["'abs(int4)'"]),
    case("regoper", "regoper", &["'||/'"]),
    case("regoperator", "regoperator", &["'+(int4,int4)'"]),
    case("regnamespace", "regnamespace", &["'public'"]),
    case("regrole", "regrole", &["'postgres'"]),
    case("regconfig", "regconfig", &["'english'"]),
    case("regdictionary", "regdictionary", &["'simple'"]),
    case("regcollation", "regcollation", &["'\"C\"'"]),
    case("txid_snapshot", "txid_snapshot", &["'10:20:10,14,15'"]),
    case("pg_snapshot", "pg_snapshot", &["'10:20:10,14,15'"]),
    case("refcursor", "refcursor", &["'c1'"]),
    case("aclitem", "aclitem", &["'postgres=arwdDxt/postgres'"]),
    case("int2vector", "int2vector", &["'1 2 3'"]),
    case("oidvector", "oidvector", &["'1 2'"]),
    case("int4range", "int4range", &["'[5,6)'", "'empty'", "'(,)'"]),
    case("int8range", "int8range", &["'[-9223372036854775808,9223372036854775807)'"]),
    case("numrange", "numrange", &["'[1.5,NaN]'", "'(,2.50]'"]),
    case("tsrange", "tsrange", &["'[\"2024-01-01 00:00:00\",infinity)'", "'[\"0044-03-15 BC\",)'"]),
    case("tstzrange", "tstzrange", &["'[\"2024-01-01 00:00:00+05\",)'", "'(-infinity,\"12345-06-07 00:00:00+00\"]'"]),
    case("daterange", "daterange", &["'[2024-01-01,2024-02-01)'", "'[-infinity,infinity]'"]),
    case("int4multirange", "int4multirange", &["'{[1,3),[5,7)}'", "'{}'"]),
    case("int8multirange", "int8multirange", &["'{[1,3)}'"]),
    case("nummultirange", "nummultirange", &["'{[1.5,2.5]}'"]),
    case("tsmultirange", "tsmultirange", &["'{[\"2024-01-01 00:00:00\",infinity)}'"]),
    case("tstzmultirange", "tstzmultirange", &["'{[\"2024-01-01 00:00:00+00\",)}'"]),
    case("datemultirange", "datemultirange", &["'{[2024-01-01,2024-02-01),[2024-03-01,)}'"]),
    case("mood", "test.mood", &["'sad'", "'ok'", "'happy'", "'with space'", "'odd \"label\" ☃'"]),
    case("odd_enum", "\"Odd \"\"Schema\"\" /~ Ünï\".\"Odd \"\"Enum\"\"\"", &["'a'", "'B c'"]),
    case("positive", "test.positive", &["1", "2147483647"]),
    TypeCase { label: "text_domain_nn", ty: "test.nn_text", values: &["'x'", "''"], array: true, never_null: true },
    TypeCase { label: "positive_domain_nn", ty: "test.positive_nn", values: &["1"], array: true, never_null: true },
    case("short", "test.short", &["'abcde'", "'ü'"]),
    case("mood_domain", "test.mood_domain", &["'happy'"]),
    TypeCase {
        label: "int_list",
        ty: "test.int_list",
        values: &["'{}'", "'{1,NULL,3}'", "'{{1,2},{3,4}}'"],
        array: false,
        never_null: false,
    },
    case(
        "pair",
        "test.pair",
        &[
            "ROW(1, 'b c', 'ok', '{1,2}', ROW('NaN', 'infinity'), true)",
            "ROW(NULL, NULL, NULL, NULL, NULL, NULL)",
            r#"ROW(-1, E'quote " and \\ backslash, comma (paren)', 'odd "label" ☃', '{}', ROW(1.5, '2024-01-01'), false)"#,
            "ROW(0, '', 'sad', '{{1,NULL},{3,4}}', ROW(NULL, NULL), NULL)",
        ],
    ),
    case("pair_domain", "test.pair_domain", &["ROW(2, 'x', 'sad', '{}', NULL, true)"]),
    case("floatrange", "test.floatrange", &["'[1.5,2.5)'", "'(-Infinity,Infinity)'", "'empty'"]),
    case("citext", "citext", &["'MiXeD'", "''"]),
    case("hstore", "hstore", &[r#"'"a"=>"1", "b"=>NULL, "c \"q\""=>"☃"'"#, "''"]),
    case("ltree", "ltree", &["'Top.Science.Astronomy'", "''"]),
    case("lquery", "lquery", &["'*.Science.*'"]),
    case("ltxtquery", "ltxtquery", &["'Science & Astro*'"]),
];

/// Types whose schema is the catch-all, on purpose: no rule gives them a better one.
pub const CATCH_ALL_TYPES: &[&str] = &["aclitem", "int2vector", "oidvector"];

/// PostGIS types, tested when the extension is installable.
pub const POSTGIS_CASES: &[TypeCase] = &[
    case(
        "geometry",
        "geometry",
        &["'POINT(1 2)'", "'SRID=4326;LINESTRING(0 0,1 1)'", "'POLYGON EMPTY'", "'POINT Z (1 2 3)'"],
    ),
    case("geometry_point", "geometry(Point,4326)", &["'SRID=4326;POINT(1 2)'"]),
    case("geography", "geography", &["'POINT(-122.4 37.8)'", "'LINESTRING(0 0,1 1)'"]),
];

/// pgvector types, tested when the extension is installable.
pub const PGVECTOR_CASES: &[TypeCase] =
    &[case("vector", "vector", &["'[1,2.5,-3e-05]'"]), case("vector_3", "vector(3)", &["'[1,2,3]'"])];

/// Extra odd columns of the torture table: (quoted SQL name, type, value).
const ODD_COLUMNS: &[(&str, &str, &str)] = &[
    (r#""Odd ""Quote"" /slash~tilde Space""#, "text", "'odd'"),
    (r#""ünï©ødé ☃""#, "int4", "7"),
    (r#""CamelCase""#, "bool", "true"),
];

/// A value expression cast to the case's type.
fn typed(case: &TypeCase, expression: &str) -> String {
    format!("({expression})::{}", case.ty)
}

/// Column names of a case: nullable, NOT NULL and array.
fn column_names(case: &TypeCase) -> Vec<String> {
    let mut names = vec![format!("c_{}", case.label), format!("c_{}_nn", case.label)];
    if case.array {
        names.push(format!("c_{}_array", case.label));
    }
    names
}

/// The values of one row of a case's columns, in [`column_names`] order.
fn row_values(case: &TypeCase, row: usize) -> Vec<String> {
    let values = case.values;
    let pick = |i: usize| typed(case, values[i % values.len()]);
    let nullable = if row == 0 && !case.never_null { "NULL".to_string() } else { pick(row + values.len() - 1) };
    let mut out = vec![nullable, pick(row)];
    if case.array {
        let null_element = if case.never_null { String::new() } else { ", NULL".to_string() };
        let array = match row % 6 {
            0 if case.never_null => format!("'{{}}'::{}[]", case.ty),
            0 => "NULL".to_string(),
            1 => format!("'{{}}'::{}[]", case.ty),
            2 => {
                let all: Vec<String> = (0..values.len()).map(pick).collect();
                format!("ARRAY[{}{null_element}]::{}[]", all.join(", "), case.ty)
            }
            3 => {
                let second = if case.never_null { pick(row + 2) } else { "NULL".to_string() };
                format!(
                    "ARRAY[ARRAY[{}, {}], ARRAY[{}, {second}]]::{}[]",
                    pick(row),
                    pick(row + 1),
                    pick(row + 2),
                    case.ty
                )
            }
            4 => format!("('[0:1]=' || ARRAY[{}, {}]::{}[]::text)::{}[]", pick(row), pick(row + 1), case.ty, case.ty),
            _ => format!("ARRAY[{}]::{}[]", pick(row), case.ty),
        };
        out.push(array);
    }
    out
}

/// Rows of the torture table: enough that every value of every case appears in every
/// column and every array shape appears.
fn row_count(cases: &[TypeCase]) -> usize {
    cases.iter().map(|c| c.values.len() + 1).max().unwrap_or(1).max(6)
}

/// `CREATE TABLE` for a torture table (`keyed`: primary key `id`; else keyless) with a
/// stored generated column and a column comment.
pub fn create_table_sql(table: &str, cases: &[TypeCase], keyed: bool) -> String {
    let mut columns = vec![if keyed { "id int4 PRIMARY KEY".to_string() } else { "id int4 NOT NULL".to_string() }];
    for case in cases {
        let names = column_names(case);
        columns.push(format!("{} {}", names[0], case.ty));
        columns.push(format!("{} {} NOT NULL", names[1], case.ty));
        if case.array {
            columns.push(format!("{} {}[]", names[2], case.ty));
        }
    }
    for (name, ty, _) in ODD_COLUMNS {
        columns.push(format!("{name} {ty}"));
    }
    columns.push("doubled int8 GENERATED ALWAYS AS (id * 2) STORED".to_string());
    format!(
        "CREATE TABLE {table} (\n  {}\n);\nCOMMENT ON COLUMN {table}.id IS 'The row''s \"id\".';\n",
        columns.join(",\n  ")
    )
}

/// `INSERT`s of the torture rows, with ids `first_id..`.
pub fn insert_sql(table: &str, cases: &[TypeCase], first_id: usize) -> String {
    let mut names = vec!["id".to_string()];
    for case in cases {
        names.extend(column_names(case));
    }
    names.extend(ODD_COLUMNS.iter().map(|(name, _, _)| name.to_string()));
    let mut sql = String::new();
    for row in 0..row_count(cases) {
        let mut values = vec![(first_id + row).to_string()];
        for case in cases {
            values.extend(row_values(case, row));
        }
        for (_, ty, value) in ODD_COLUMNS {
            values.push(if row == 0 { "NULL".into() } else { format!("{value}::{ty}") });
        }
        sql.push_str(&format!("INSERT INTO {table} ({}) VALUES ({});\n", names.join(", "), values.join(", ")));
    }
    sql
}

/// A validator as strict as Flow's: JSON Schema 2020-12 with formats checked, and
/// `format: number` as Flow defines it (a decimal string, `NaN`, `Infinity`, `-Infinity`).
pub fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .with_format("number", |s: &str| matches!(s, "NaN" | "Infinity" | "-Infinity") || s.parse::<f64>().is_ok())
        .build(schema)
        .unwrap_or_else(|e| panic!("the discovered schema does not compile: {e}\n{schema:#}"))
}

/// Runs discovery with `config` through the binary and returns its bindings.
pub fn discover(config: &Value) -> Vec<Value> {
    let request = json!({"discover": {"connectorType": "IMAGE", "config": config}});
    let output =
        run_connector(&[], &format!("{{\"spec\":{{\"connectorType\":\"IMAGE\",\"config\":{{}}}}}}\n{request}\n"), &[]);
    assert_eq!(output.exit_code, 0, "discovery failed:\n{}", output.stderr);
    let line = output.stdout.lines().nth(1).unwrap_or_else(|| panic!("no discover response:\n{}", output.stdout));
    let response: Value = serde_json::from_str(line).expect("the discover response is JSON");
    response["discovered"]["bindings"].as_array().cloned().expect("bindings")
}

/// The binding of `namespace.stream`.
pub fn binding<'a>(bindings: &'a [Value], namespace: &str, stream: &str) -> &'a Value {
    bindings
        .iter()
        .find(|b| b["resourceConfig"]["namespace"] == namespace && b["resourceConfig"]["stream"] == stream)
        .unwrap_or_else(|| panic!("{namespace}.{stream} was not discovered"))
}

/// Runs `preview --until-idle` over the given discovered bindings with a state file in
/// `work`, and returns the captured documents by table (`namespace.stream`).
pub fn capture(work: &Path, config: &Value, discovered: &[&Value]) -> BTreeMap<String, Vec<Value>> {
    capture_with_schemas(work, config, discovered).0
}

/// [`capture`], plus the sourced schemas the connector sent, by table (the last one of
/// each).
pub fn capture_with_schemas(
    work: &Path,
    config: &Value,
    discovered: &[&Value],
) -> (BTreeMap<String, Vec<Value>>, BTreeMap<String, Value>) {
    let bindings: Vec<Value> = discovered
        .iter()
        .enumerate()
        .map(|(i, binding)| json!({"resource": binding["resourceConfig"], "target": format!("tests/binding{i}")}))
        .collect();
    let catalog = json!({
        "captures": {"tests/source-postgres": {
            "endpoint": {"local": {"command": [connector_path()], "config": config}},
            "bindings": bindings,
        }}
    });
    let catalog_path = work.join("catalog.json");
    std::fs::write(&catalog_path, catalog.to_string()).expect("write the catalog");
    let state_path = work.join("state.json");
    let output = run_connector(
        &[
            "preview",
            "--source",
            catalog_path.to_str().expect("UTF-8 path"),
            "--state-file",
            state_path.to_str().expect("UTF-8 path"),
            "--until-idle",
            "--output-schemas",
        ],
        "",
        &[],
    );
    assert_eq!(output.exit_code, 0, "the capture failed:\n{}", output.stderr);
    let mut documents: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    for line in output.stdout.lines() {
        let item: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("preview printed a line that is not JSON ({e}): {line:.300}"));
        let (collection, body) = match item[0].as_str().expect("a name") {
            "sourcedSchema" => (item[1]["collection"].as_str().expect("collection name"), &item[1]["documentSchema"]),
            collection => (collection, &item[1]),
        };
        let index: usize =
            collection.strip_prefix("tests/binding").and_then(|i| i.parse().ok()).expect("a binding of ours");
        let resource = &discovered[index]["resourceConfig"];
        let table =
            format!("{}.{}", resource["namespace"].as_str().unwrap_or(""), resource["stream"].as_str().unwrap_or(""));
        if item[0] == "sourcedSchema" {
            schemas.insert(table, body.clone());
        } else {
            documents.entry(table).or_default().push(body.clone());
        }
    }
    (documents, schemas)
}

/// Validates every document of `table` against `schema`, panicking with every failure.
pub fn validate_documents(table: &str, schema: &Value, documents: &[Value]) {
    let validator = validator(schema);
    let mut failures = Vec::new();
    for document in documents {
        for error in validator.iter_errors(document) {
            let at = error.instance_path().to_string();
            let shown = document.pointer(&at).map(|v| truncate(&v.to_string())).unwrap_or_default();
            failures.push(format!("{table} id {}: {at} = {shown}: {error:.300}", document["id"]));
        }
    }
    assert!(failures.is_empty(), "documents fail their discovered schema:\n{}", failures.join("\n"));
}

fn truncate(text: &str) -> String {
    if text.len() <= 200 {
        return text.to_string();
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Whether the test server can install `extension`.
async fn extension_available(extension: &str) -> bool {
    let client = crate::harness::cluster().await.superuser_client("postgres").await;
    let row = client
        .query_one("SELECT count(*) FROM pg_catalog.pg_available_extensions WHERE name = $1", &[&extension])
        .await
        .expect("query pg_available_extensions");
    row.get::<_, i64>(0) > 0
}

/// The row shape of a document: everything but `_meta` and the given columns.
fn row_shape(document: &Value, except: &[&str]) -> Value {
    let mut object = document.as_object().cloned().expect("a document is an object");
    object.remove("_meta");
    for column in except {
        object.remove(*column);
    }
    Value::Object(object)
}

/// Checks a torture table's documents: `backfilled` rows have ids `1..=n`, `replicated`
/// rows ids `1001..=1000+n`, all validate, and each replicated row equals its backfilled
/// twin.
fn check_torture_documents(table: &str, schema: &Value, backfilled: &[Value], replicated: &[Value], n: usize) {
    validate_documents(table, schema, backfilled);
    validate_documents(table, schema, replicated);
    let by_id = |documents: &[Value], offset: u64| -> BTreeMap<u64, Value> {
        documents
            .iter()
            .filter(|d| d["_meta"]["op"] == "c")
            .map(|d| (d["id"].as_u64().expect("id") - offset, row_shape(d, &["id"])))
            .collect()
    };
    let first = by_id(backfilled, 0);
    let second = by_id(replicated, 1000);
    assert_eq!(first.len(), n, "{table}: backfilled rows");
    assert_eq!(second.len(), n, "{table}: replicated rows");
    let from_backfill = |d: &Value| d["_meta"]["source"]["snapshot"] == true;
    assert!(backfilled.iter().all(from_backfill), "{table}: backfill documents");
    assert!(!replicated.iter().any(from_backfill), "{table}: replication documents");
    for (id, row) in &first {
        let twin = &second[id];
        if row != twin {
            let object = row.as_object().expect("object");
            let differing: Vec<String> = object
                .iter()
                .filter(|(column, value)| twin.get(column.as_str()) != Some(value))
                .map(|(column, value)| {
                    format!(
                        "{column}: backfill {} / replication {}",
                        truncate(&value.to_string()),
                        truncate(&twin[column].to_string())
                    )
                })
                .collect();
            panic!("{table} row {id}: backfill and replication disagree:\n{}", differing.join("\n"));
        }
        // Generated columns are omitted, as pgoutput omits them.
        assert!(row.get("doubled").is_none(), "{table}: the generated column is omitted");
    }
}

/// The torture test for a set of cases: keyed and keyless tables, backfill then
/// replication, every document validated.
async fn run_torture(test_name: &str, setup: &str, cases: &[TypeCase]) {
    let db = TestDb::create(test_name).await;
    db.execute(setup).await;
    let keyed = "test.torture";
    let keyless = r#""Odd ""Schema"" /~ Ünï"."Keyless ""Torture"" '; /~""#;
    db.execute(&create_table_sql(keyed, cases, true)).await;
    db.execute(&create_table_sql(keyless, cases, false)).await;
    // Without a key, PostgreSQL refuses updates and deletes of a published table unless the
    // replica identity is FULL (and the connector's validation insists on it).
    db.execute(&format!("ALTER TABLE {keyless} REPLICA IDENTITY FULL;")).await;
    db.execute(r#"GRANT SELECT ON ALL TABLES IN SCHEMA "Odd ""Schema"" /~ Ünï" TO flow_capture;"#).await;
    db.execute(&insert_sql(keyed, cases, 1)).await;
    db.execute(&insert_sql(keyless, cases, 1)).await;
    let n = row_count(cases);

    let config = db.endpoint_config();
    let bindings = discover(&config);
    let keyless_name = ("Odd \"Schema\" /~ Ünï", "Keyless \"Torture\" '; /~");
    let keyed_binding = binding(&bindings, "test", "torture");
    let keyless_binding = binding(&bindings, keyless_name.0, keyless_name.1);
    assert_eq!(keyed_binding["key"], json!(["/id"]));
    assert_eq!(keyless_binding["resourceConfig"]["mode"], "Without Primary Key");

    // Every column has a typed schema, except the few types meant for the catch-all.
    let properties = &keyed_binding["documentSchema"]["$defs"]["TestTorture"]["properties"];
    for case in cases {
        for column in column_names(case) {
            let schema = &properties[&column];
            assert!(schema.is_object(), "column {column} is missing from the schema");
            let catch_all = schema["description"].as_str().is_some_and(|d| d.contains("catch-all"));
            let expected = CATCH_ALL_TYPES.contains(&case.label) && !column.ends_with("_array");
            assert_eq!(catch_all, expected, "column {column}: catch-all schema {schema}");
        }
    }
    assert!(properties.get("doubled").is_none(), "generated columns are not in the schema");

    let work = tempfile::tempdir().expect("temporary directory");
    let tables = [keyed_binding, keyless_binding];
    let (first, sourced) = capture_with_schemas(work.path(), &config, &tables);
    // The same rows again, through replication (the capture resumes from its state file).
    db.execute(&insert_sql(keyed, cases, 1001)).await;
    db.execute(&insert_sql(keyless, cases, 1001)).await;
    let second = capture(work.path(), &config, &tables);
    // Then one row updated and one deleted.
    for table in [keyed, keyless] {
        db.execute(&format!(
            "UPDATE {table} SET \"CamelCase\" = false WHERE id = 1; DELETE FROM {table} WHERE id = 2;"
        ))
        .await;
    }
    let third = capture(work.path(), &config, &tables);

    let docs = |run: &BTreeMap<String, Vec<Value>>, table: &str| run.get(table).cloned().unwrap_or_default();
    let keyless_table = format!("{}.{}", keyless_name.0, keyless_name.1);
    let checked = [("test.torture", keyed_binding), (keyless_table.as_str(), keyless_binding)];
    for (name, binding) in checked {
        let schema = &binding["documentSchema"];
        check_torture_documents(name, schema, &docs(&first, name), &docs(&second, name), n);
        // Complete rows, from the backfill and from replication, validate against the
        // sourced schema too: the closed, every-column-required schema the runtime
        // intersects with the collection's.
        let sourced = sourced.get(name).unwrap_or_else(|| panic!("{name}: no sourced schema was sent"));
        assert_eq!(sourced["unevaluatedProperties"], json!(false), "{name}: the sourced schema is closed");
        validate_documents(name, sourced, &docs(&first, name));
        validate_documents(name, sourced, &docs(&second, name));
    }
    // An update and a delete: under the default replica identity the delete carries only
    // the key; under FULL (the keyless table) both carry whole rows.
    for (name, binding) in checked {
        let changes = docs(&third, name);
        validate_documents(name, &binding["documentSchema"], &changes);
        let ops: Vec<(&Value, &Value, &Value)> =
            changes.iter().map(|d| (&d["id"], &d["_meta"]["op"], &d["CamelCase"])).collect();
        let deleted_flag = if binding == keyed_binding { Value::Null } else { json!(true) };
        assert_eq!(
            ops,
            [(&json!(1), &json!("u"), &json!(false)), (&json!(2), &json!("d"), &deleted_flag)],
            "{name}: the update and the delete"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn torture_tables_validate_against_their_discovered_schemas() {
    run_torture("types_torture", TYPE_SETUP, CASES).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgis_types_validate_against_their_discovered_schemas() {
    if !extension_available("postgis").await {
        eprintln!("SKIPPED: PostGIS is not installable on this server (postgis_is_installed_in_ci guards CI)");
        return;
    }
    let setup = format!("{TYPE_SETUP}\nCREATE EXTENSION postgis;");
    run_torture("types_postgis", &setup, POSTGIS_CASES).await;
}

/// Ignored: Debian has no pgvector package for PostgreSQL 15, so neither developers nor CI
/// have it; run with `--ignored` against a server that does. The value encoding is unit
/// tested in `src/value`, and discovery's recognition of the extension in `catalog`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the pgvector extension, which Debian does not package for PostgreSQL 15"]
async fn pgvector_types_validate_against_their_discovered_schemas() {
    assert!(extension_available("vector").await, "the pgvector extension is not installable on this server");
    let setup = format!("{TYPE_SETUP}\nCREATE EXTENSION vector;");
    run_torture("types_pgvector", &setup, PGVECTOR_CASES).await;
}

/// PostGIS must not be skipped silently in CI.
#[tokio::test]
async fn postgis_is_installed_in_ci() {
    if std::env::var("CI").as_deref() != Ok("true") {
        return;
    }
    assert!(
        extension_available("postgis").await,
        "CI must install PostGIS for the server's PostgreSQL version (Debian package postgresql-<major>-postgis-3)"
    );
}
