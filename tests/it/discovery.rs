//! Discovery through the real binary: which tables are listed under each filter, tables
//! the capture user cannot read, deterministic output, and a catalog of 20,000 tables.
//! The schemas and keys themselves are reviewed in the `discover_*` transcripts.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::{run_connector, TestDb};
use crate::types::{self, discover};

/// `schema.table` of every discovered binding, in output order.
fn names(bindings: &[Value]) -> Vec<String> {
    bindings
        .iter()
        .map(|b| {
            format!(
                "{}.{}",
                b["resourceConfig"]["namespace"].as_str().unwrap(),
                b["resourceConfig"]["stream"].as_str().unwrap()
            )
        })
        .collect()
}

/// `config` with `patch` merged in (objects merged recursively, RFC 7396).
fn patched(config: &Value, patch: Value) -> Value {
    fn merge(target: &mut Value, patch: Value) {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(&key);
                    } else {
                        merge(target.entry(key).or_insert(Value::Null), value);
                    }
                }
            }
            (target, patch) => *target = patch,
        }
    }
    let mut config = config.clone();
    merge(&mut config, patch);
    config
}

const WEIRD_SCHEMA: &str = "sql'; DROP TABLE test.alpha; --";
const WEIRD_TABLE: &str = "x\"y'z %_";

const FILTER_SETUP: &str = r#"
CREATE SCHEMA other;
CREATE SCHEMA "Excluded";
CREATE SCHEMA "sql'; DROP TABLE test.alpha; --";
CREATE SCHEMA cron;
CREATE SCHEMA pglogical;
GRANT USAGE ON SCHEMA other, "Excluded", "sql'; DROP TABLE test.alpha; --" TO flow_capture;
CREATE TABLE test.alpha (id int4 PRIMARY KEY);
CREATE TABLE test.beta (id int4 PRIMARY KEY);
CREATE TABLE test.events_2024 (id int4 PRIMARY KEY);
CREATE TABLE test.events_2024x (id int4 PRIMARY KEY);
CREATE TABLE test."Events_2025" (id int4 PRIMARY KEY);
CREATE TABLE test.flow_materializations_v2 (id int4 PRIMARY KEY);
CREATE TABLE test.flow_checkpoints_v1 (id int4 PRIMARY KEY);
CREATE TABLE test.materialized_by_flow (id int4 PRIMARY KEY, flow_published_at timestamptz);
CREATE TABLE test.part (id int4, k int4, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE test.part_1 PARTITION OF test.part FOR VALUES IN (1);
CREATE UNLOGGED TABLE test.unlogged (id int4 PRIMARY KEY);
CREATE VIEW test.a_view AS SELECT * FROM test.alpha;
CREATE MATERIALIZED VIEW test.a_matview AS SELECT * FROM test.alpha;
CREATE SEQUENCE test.a_sequence;
CREATE TYPE test.a_composite AS (a int4);
CREATE FOREIGN DATA WRAPPER dummy;
CREATE SERVER dummy_server FOREIGN DATA WRAPPER dummy;
CREATE FOREIGN TABLE test.a_foreign (a int4) SERVER dummy_server;
CREATE TABLE public.flow_watermarks (slot text PRIMARY KEY, watermark text);
CREATE TABLE other.gamma (id int4 PRIMARY KEY);
CREATE TABLE "Excluded".delta (id int4 PRIMARY KEY);
CREATE TABLE "sql'; DROP TABLE test.alpha; --"."x""y'z %_" (id int4 PRIMARY KEY);
CREATE TABLE cron.job (id int4 PRIMARY KEY);
CREATE TABLE pglogical.node (id int4 PRIMARY KEY);
CREATE PUBLICATION only_alpha FOR TABLE test.alpha, test.part;
"#;

#[tokio::test(flavor = "multi_thread")]
async fn filters_choose_the_listed_tables() {
    let db = TestDb::create("discovery_filters").await;
    db.execute(FILTER_SETUP).await;
    // A temporary table lives as long as its session: keep one open during discovery.
    let session = db.superuser_client().await;
    session
        .batch_execute("CREATE TEMPORARY TABLE temporary_t (id int4 PRIMARY KEY)")
        .await
        .expect("create a temporary table");

    let config = db.endpoint_config();
    let weird = format!("{WEIRD_SCHEMA}.{WEIRD_TABLE}");
    let everything = vec![
        "Excluded.delta".to_string(),
        "other.gamma".to_string(),
        weird.clone(),
        "test.Events_2025".to_string(),
        "test.alpha".to_string(),
        "test.beta".to_string(),
        "test.events_2024".to_string(),
        "test.events_2024x".to_string(),
        "test.part".to_string(),
    ];
    let cases: Vec<(&str, Value, Vec<String>)> = vec![
        // Permanent ordinary tables and partitioned roots, sorted bytewise; no views,
        // sequences, foreign or unlogged or temporary tables, partitions, system schemas,
        // Flow materialization tables or the watermarks table.
        ("defaults", json!({}), everything.clone()),
        (
            "include_schemas",
            json!({"discoveryFilters": {"include_schemas": ["other", WEIRD_SCHEMA]}}),
            vec!["other.gamma".into(), weird.clone()],
        ),
        (
            "include_schemas with the legacy discover_schemas",
            json!({"discoveryFilters": {"include_schemas": ["other"]}, "advanced": {"discover_schemas": ["Excluded", "other"]}}),
            vec!["Excluded.delta".into(), "other.gamma".into()],
        ),
        (
            "exclude_schemas",
            json!({"discoveryFilters": {"exclude_schemas": ["test", "Excluded"]}}),
            vec!["other.gamma".into(), weird.clone()],
        ),
        (
            "table_patterns",
            json!({"discoveryFilters": {"table_patterns": ["test.events_????", "gamma", "sql'*.x\"y'z ?_", "*.Events_*"]}}),
            vec!["other.gamma".into(), weird.clone(), "test.Events_2025".into(), "test.events_2024".into()],
        ),
        (
            "include and exclude with patterns",
            json!({"discoveryFilters": {"include_schemas": ["test", "other"], "exclude_schemas": ["other"], "table_patterns": ["*a"]}}),
            vec!["test.alpha".into(), "test.beta".into()],
        ),
        (
            "publication",
            json!({"advanced": {"publicationName": "only_alpha"}}),
            vec!["test.alpha".into(), "test.part".into()],
        ),
        (
            "unpublished tables (filters)",
            json!({"advanced": {"publicationName": "only_alpha"}, "discoveryFilters": {"discover_unpublished_tables": true}}),
            everything.clone(),
        ),
        (
            "unpublished tables (advanced)",
            json!({"advanced": {"publicationName": "only_alpha", "discover_unpublished_tables": true}}),
            everything.clone(),
        ),
        ("missing publication", json!({"advanced": {"publicationName": "no_such_publication"}}), vec![]),
        ("another watermarks table", json!({"advanced": {"watermarksTable": "other.gamma"}}), {
            let mut expected: Vec<String> = everything.iter().filter(|n| *n != "other.gamma").cloned().collect();
            expected.insert(1, "public.flow_watermarks".into());
            expected
        }),
        (
            "partitions",
            json!({"advanced": {"capture_as_partitions": true, "discover_unpublished_tables": true}}),
            everything.iter().map(|n| if n == "test.part" { "test.part_1".to_string() } else { n.clone() }).collect(),
        ),
    ];
    for (label, patch, expected) in cases {
        let bindings = discover(&patched(&config, patch));
        assert_eq!(names(&bindings), expected, "{label}");
    }
    // Bound parameters, quoted identifiers: nothing was executed from a name.
    let alive = session.query_one("SELECT count(*) FROM test.alpha", &[]).await;
    assert!(alive.is_ok(), "test.alpha still exists");
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_the_user_cannot_read_are_still_discovered() {
    let db = TestDb::create("discovery_permissions").await;
    db.execute(
        "CREATE TABLE test.readable (id int4 PRIMARY KEY, v text);
         CREATE TABLE test.unreadable (id int4 PRIMARY KEY, secret text NOT NULL);
         REVOKE SELECT ON test.unreadable FROM flow_capture;
         CREATE SCHEMA private;
         CREATE TABLE private.hidden (k text PRIMARY KEY, n numeric);",
    )
    .await;
    let bindings = discover(&db.endpoint_config());
    assert_eq!(names(&bindings), ["private.hidden", "test.readable", "test.unreadable"]);
    // Their columns and keys come from the catalog, which every user can read.
    let unreadable = types::binding(&bindings, "test", "unreadable");
    assert_eq!(unreadable["key"], json!(["/id"]));
    let properties = &unreadable["documentSchema"]["$defs"]["TestUnreadable"]["properties"];
    assert_eq!(properties["secret"]["type"], "string");
    let hidden = types::binding(&bindings, "private", "hidden");
    assert_eq!(hidden["key"], json!(["/k"]));
    assert_eq!(hidden["documentSchema"]["$defs"]["PrivateHidden"]["properties"]["n"]["format"], "number");
}

/// Statements creating a set of tables that do not depend on one another.
fn independent_tables() -> Vec<String> {
    let mut statements = vec![
        types::create_table_sql("test.torture", types::CASES, true),
        "CREATE TABLE test.zeta (\"Z\" int4 PRIMARY KEY, a text)".to_string(),
        "CREATE TABLE test.\"Zeta\" (id int4 PRIMARY KEY)".to_string(),
        "CREATE TABLE test.\"ä\" (id int4)".to_string(),
        "CREATE UNIQUE INDEX b_index ON test.a (b)".to_string(),
        "CREATE UNIQUE INDEX a_index ON test.a (id)".to_string(),
        "CREATE TABLE public.\"Public Table\" (id int4 PRIMARY KEY)".to_string(),
    ];
    for i in 0..20 {
        statements.push(format!("CREATE TABLE test.numbered_{i} (id int4 PRIMARY KEY, v{i} text)"));
    }
    statements
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_output_is_byte_identical_across_runs_and_catalog_order() {
    let statements = independent_tables();
    let forward = TestDb::create("discovery_deterministic_forward").await;
    let setup = format!("{}\nCREATE TABLE test.a (id int4 NOT NULL, b int4 NOT NULL);", types::TYPE_SETUP);
    forward.execute(&setup).await;
    forward.execute(&statements.join(";\n")).await;
    let backward = TestDb::create("discovery_deterministic_backward").await;
    backward.execute(&setup).await;
    // The same tables, created in the opposite order (so with other OIDs, in another
    // physical catalog order), and indexes in the opposite order too.
    let reversed: Vec<String> = statements.iter().rev().cloned().collect();
    backward.execute(&reversed.join(";\n")).await;

    let request = |db: &TestDb| {
        let discover = json!({"discover": {"connectorType": "IMAGE", "config": db.endpoint_config()}});
        let output = run_connector(&[], &format!("{discover}\n"), &[]);
        assert_eq!(output.exit_code, 0, "discovery failed:\n{}", output.stderr);
        output.stdout
    };
    let first = request(&forward);
    let second = request(&forward);
    let other = request(&backward);
    assert!(first.len() > 10_000, "discovered something: {first:.200}");
    assert!(first == second, "two discoveries of one database differ");
    assert!(first == other, "discovery depends on the order tables were created in");
    let bindings: Value = serde_json::from_str(first.trim_end()).expect("JSON");
    let a = types::binding(bindings["discovered"]["bindings"].as_array().unwrap(), "test", "a");
    assert_eq!(a["key"], json!(["/id"]), "the alphabetically first unique index");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_tables_are_discovered_in_a_few_queries() {
    const TABLES: usize = 20_000;
    let db = TestDb::create("discovery_twenty_thousand_tables").await;
    let started = Instant::now();
    // One statement, committing every 500 tables: a single transaction would need more
    // lock slots than the server has.
    db.execute(&format!(
        "DO $$
         BEGIN
           FOR i IN 1..{TABLES} LOOP
             EXECUTE format('CREATE TABLE test.t%s (id int8 PRIMARY KEY, label text, amount numeric, at timestamptz)', i);
             IF i % 500 = 0 THEN COMMIT; END IF;
           END LOOP;
         END $$"
    ))
    .await;
    let created = started.elapsed();

    let started = Instant::now();
    let discover = json!({"discover": {"connectorType": "IMAGE", "config": db.endpoint_config()}});
    let output = run_connector(&[], &format!("{discover}\n"), &[]);
    let elapsed = started.elapsed();
    assert_eq!(output.exit_code, 0, "discovery failed:\n{}", output.stderr);
    let response: Value = serde_json::from_str(output.stdout.trim_end()).expect("JSON");
    let bindings = response["discovered"]["bindings"].as_array().expect("bindings");
    assert_eq!(bindings.len(), TABLES);
    let distinct: BTreeSet<&str> = bindings.iter().map(|b| b["recommendedName"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), TABLES);
    assert_eq!(bindings[0]["key"], json!(["/id"]));
    eprintln!(
        "discovered {TABLES} tables in {:.2} s ({} MB of output; creating them took {:.1} s)",
        elapsed.as_secs_f64(),
        output.stdout.len() / 1_000_000,
        created.as_secs_f64()
    );
}
