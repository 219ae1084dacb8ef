//! Names and counts that must mean exactly what they say, through the real binary:
//!
//! - an acknowledgement of 0 checkpoints acknowledges none (the slot stays where it was);
//! - columns named `_meta`, `_meta_`, ... become the properties `_meta_`, `_meta__`, ... in
//!   discovered schemas and keys, backfill and replication documents alike, and never collide
//!   with the connector's own `_meta`;
//! - every table, schema and column name PostgreSQL allows (control characters, quotes,
//!   slashes, tildes, percent signs, Unicode, names that look empty, 63-byte names) is
//!   discovered, validated, applied and captured, and the captured documents equal the table.
//!
//! Captured documents are read as raw lines and parsed with duplicate keys refused: a plain
//! `serde_json` parse keeps the last of two equal keys and would hide a collision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

use source_postgres::capture::state::encode_state_key;
use source_postgres::lsn::Lsn;

use crate::driver::{binding, confirmed_flush, lsn_value, merge_patch, settle, Event, Session};
use crate::harness::{connector_path, describe_pg_error, run_connector, TestDb, CAPTURE_USER};
use crate::types::{discover, validate_documents};

// ---------------------------------------------------------------------------------------------
// Acknowledgement counts

/// Poll the slot until its confirmed position reaches `target` (never past it).
async fn wait_confirmed(admin: &tokio_postgres::Client, slot: &str, target: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let confirmed = confirmed_flush(admin, slot).await.expect("the slot exists");
        assert!(confirmed <= target, "slot confirmed {}, past the acknowledged cursor {}", Lsn(confirmed), Lsn(target));
        if confirmed == target {
            return confirmed;
        }
        assert!(Instant::now() < deadline, "slot confirmed {}, not {}, after {within:?}", Lsn(confirmed), Lsn(target));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_zero_checkpoints_leaves_the_slot_where_it_was() {
    let db = TestDb::create("acknowledge_zero").await;
    db.execute("CREATE TABLE test.acks (id int PRIMARY KEY)").await;
    let admin = db.superuser_client().await;
    let slot = db.slot_name();
    let mut state = json!({});
    let mut session = Session::open(&db.endpoint_config(), vec![binding("acks", &["/id"])], &state, &[]).await;
    settle(&mut session, &mut state).await;
    let acknowledged = lsn_value(state["cursor"].as_str().expect("cursor"));
    let before = wait_confirmed(&admin, &slot, acknowledged, Duration::from_secs(30)).await;

    // A checkpoint the runtime has not committed.
    db.execute("INSERT INTO test.acks VALUES (1)").await;
    let mut pending = 0u64;
    let mut documents = 0;
    loop {
        match session.next(Duration::from_secs(60)).await {
            Event::Captured { .. } => documents += 1,
            // Document-less checkpoints before the insert's are not acknowledged either.
            Event::Checkpoint { patch } => {
                merge_patch(&mut state, &patch);
                pending += 1;
                if documents > 0 {
                    break;
                }
            }
            other => panic!("no checkpoint for the insert: {other:?}"),
        }
    }
    let unacknowledged = lsn_value(state["cursor"].as_str().expect("cursor"));
    assert!(unacknowledged > before, "the insert's checkpoint {} is past {}", Lsn(unacknowledged), Lsn(before));

    // The connector reports an acknowledgement at once when its last report is a second old.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    session.acknowledge_many(0).await;
    // Two and a half status intervals (a third of the test server's 10 s wal_sender_timeout).
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        match session.next(Duration::from_millis(500)).await {
            Event::SourcedSchema { .. } => {}
            Event::Checkpoint { patch } => {
                merge_patch(&mut state, &patch);
                pending += 1;
            }
            Event::Timeout => {}
            Event::Captured { doc } => panic!("an unexpected document: {doc}"),
            Event::Exited(status) => panic!("the connector exited after an acknowledgement of 0: {status}"),
        }
        let confirmed = confirmed_flush(&admin, &slot).await.expect("the slot exists");
        assert!(
            confirmed == before,
            "acknowledging 0 checkpoints moved the slot from {} to {} (unacknowledged checkpoint at {})",
            Lsn(before),
            Lsn(confirmed),
            Lsn(unacknowledged)
        );
    }

    // Acknowledging them does move it, typically within one status interval: the slot was
    // watched long enough above to see a move.
    let target = lsn_value(state["cursor"].as_str().expect("cursor"));
    session.acknowledge_many(pending).await;
    wait_confirmed(&admin, &slot, target, Duration::from_secs(15)).await;
    session.kill().await;
}

// ---------------------------------------------------------------------------------------------
// A raw capture driver

/// A JSON value parsed with duplicate object keys refused, at any depth.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrictVisitor;
        impl<'de> Visitor<'de> for StrictVisitor {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(json!(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(json!(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
                Ok(Strict(json!(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                let mut items = Vec::new();
                while let Some(Strict(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Strict(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                let mut object = Map::new();
                while let Some((key, Strict(value))) = map.next_entry::<String, Strict>()? {
                    if object.insert(key.clone(), value).is_some() {
                        return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                    }
                }
                Ok(Strict(Value::Object(object)))
            }
        }
        deserializer.deserialize_any(StrictVisitor)
    }
}

/// A captured document: its binding index and the document.
type Captured = (usize, Value);

/// One capture session that runs until it has caught up and exits (`SHUTDOWN_AFTER_POLLING`),
/// acknowledging every checkpoint. Returns the committed documents (every one ends in a
/// checkpoint when the session exits cleanly) and merges the checkpoints into `state`.
async fn capture_until_idle(config: &Value, bindings: &[Value], state: &mut Value) -> Vec<Captured> {
    let mut child = Command::new(connector_path())
        .env("LOG_LEVEL", "warn")
        .env("SHUTDOWN_AFTER_POLLING", "yes")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the connector");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let open =
        json!({"open": {"capture": {"name": "tests/names", "config": config, "bindings": bindings}, "state": state}});
    stdin.write_all(format!("{}\n{open}\n", json!({"spec": {}})).as_bytes()).await.expect("write requests");

    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut committed, mut pending) = (Vec::new(), Vec::new());
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the capture did not finish within 180 s")
            .expect("read the connector's output");
        let Some(line) = line else { break };
        let Strict(response) =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad output line ({e}): {line:.300}"));
        if let Some(captured) = response.get("captured") {
            let index = captured.get("binding").and_then(Value::as_u64).unwrap_or(0);
            pending.push((usize::try_from(index).expect("binding index"), captured["doc"].clone()));
        } else if let Some(checkpoint) = response.get("checkpoint") {
            merge_patch(state, &checkpoint["state"]["updated"]);
            committed.append(&mut pending);
            // The connector may already be on its way out.
            let _ = stdin.write_all(b"{\"acknowledge\":{\"checkpoints\":1}}\n").await;
        }
    }
    let status = child.wait().await.expect("wait for the connector");
    assert!(status.success(), "the capture failed ({status}): see its error above");
    assert!(pending.is_empty(), "{} documents after the last checkpoint", pending.len());
    committed
}

/// A `validate` request through the binary.
fn run_validate(config: &Value, bindings: &[Value]) -> crate::harness::ConnectorOutput {
    let request = json!({"validate": {"name": "tests/names", "config": config, "bindings": bindings}});
    run_connector(&[], &format!("{SPEC_REQUEST}\n{request}\n"), &[])
}

const SPEC_REQUEST: &str = r#"{"spec":{"connectorType":"IMAGE","config":{}}}"#;

/// The Flow runtime's part up to a capture: `validate` and `apply` of `discovered` through
/// the binary (each must succeed, validate with the tables' own resource paths), and the
/// bindings of an `open` request.
fn validate_and_apply(config: &Value, discovered: &[&Value]) -> Vec<Value> {
    let collection = |i: usize, b: &Value| json!({"name": format!("tests/binding{i}"), "key": b["key"], "writeSchema": b["documentSchema"]});
    let validate_bindings: Vec<Value> = discovered
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"resourceConfig": b["resourceConfig"], "collection": collection(i, b)}))
        .collect();
    let output = run_validate(config, &validate_bindings);
    let last = output.stderr.lines().last().unwrap_or("");
    assert_eq!(output.exit_code, 0, "validate refused discovered bindings: {last}");
    let validated: Value = serde_json::from_str(output.stdout.lines().nth(1).expect("a validated response"))
        .expect("the validated response is JSON");
    let paths: Vec<Value> =
        discovered.iter().map(|b| json!([b["resourceConfig"]["namespace"], b["resourceConfig"]["stream"]])).collect();
    let validated_paths: Vec<Value> = validated["validated"]["bindings"]
        .as_array()
        .expect("validated bindings")
        .iter()
        .map(|b| b["resourcePath"].clone())
        .collect();
    assert_eq!(validated_paths, paths, "resource paths are the tables' names");

    let bindings: Vec<Value> = discovered
        .iter()
        .zip(&paths)
        .enumerate()
        .map(|(i, (b, path))| {
            let path: Vec<String> = serde_json::from_value(path.clone()).expect("path");
            json!({
                "resourceConfig": b["resourceConfig"],
                "resourcePath": path,
                "collection": collection(i, b),
                "stateKey": encode_state_key(&path, 0),
            })
        })
        .collect();
    let request =
        json!({"apply": {"capture": {"name": "tests/names", "config": config, "bindings": bindings}, "version": "v1"}});
    let output = run_connector(&[], &format!("{SPEC_REQUEST}\n{request}\n"), &[]);
    let last = output.stderr.lines().last().unwrap_or("");
    assert_eq!(output.exit_code, 0, "apply refused discovered bindings: {last}");
    bindings
}

/// The documents of one collection reduced as its schema declares: merge, and `_meta.op = d`
/// deletes. By the JSON text of the key's values.
fn reduce<'a>(documents: impl Iterator<Item = &'a Value>, key: &[String]) -> BTreeMap<String, Map<String, Value>> {
    let mut reduced: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for document in documents {
        let Value::Object(mut document) = document.clone() else { panic!("a document is not an object: {document}") };
        let key_value = key_of(&document, key);
        let meta = document.remove("_meta").expect("every document has _meta");
        if meta["op"] == "d" {
            reduced.remove(&key_value);
        } else {
            reduced.entry(key_value).or_default().extend(document);
        }
    }
    reduced
}

fn key_of(row: &Map<String, Value>, key: &[String]) -> String {
    let row = Value::Object(row.clone());
    let parts: Vec<&Value> =
        key.iter().map(|p| row.pointer(p).unwrap_or_else(|| panic!("{row} has no key property {p}"))).collect();
    serde_json::to_string(&parts).expect("key")
}

/// `"name"` for SQL text.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every row of `schema.table` as JSON (`to_jsonb`, which encodes these tests' int and text
/// columns as the connector does), its properties renamed by `property`, keyed by `key`.
async fn table_documents(
    db: &TestDb,
    schema: &str,
    table: &str,
    property: impl Fn(&str) -> String,
    key: &[String],
) -> BTreeMap<String, Map<String, Value>> {
    let client = db.superuser_client().await;
    let sql = format!("SELECT to_jsonb(t)::text FROM {}.{} t", ident(schema), ident(table));
    let rows = client.query(&sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {}", describe_pg_error(&e)));
    rows.iter()
        .map(|row| {
            let Ok(Value::Object(columns)) = serde_json::from_str(row.get::<_, &str>(0)) else { panic!("a row") };
            let document: Map<String, Value> = columns.into_iter().map(|(c, v)| (property(&c), v)).collect();
            (key_of(&document, key), document)
        })
        .collect()
}

/// The discovered binding of `schema.table`.
fn discovered<'a>(bindings: &'a [Value], schema: &str, table: &str) -> Option<&'a Value> {
    bindings.iter().find(|b| b["resourceConfig"]["namespace"] == schema && b["resourceConfig"]["stream"] == table)
}

/// The row shape of a discovered schema: the `$defs` entry holding the columns.
fn row_schema(binding: &Value) -> &Value {
    let defs = binding["documentSchema"]["$defs"].as_object().expect("$defs");
    assert_eq!(defs.len(), 1, "one row shape");
    defs.values().next().expect("the row shape")
}

fn key_of_binding(binding: &Value) -> Vec<String> {
    serde_json::from_value(binding["key"].clone()).expect("key pointers")
}

// ---------------------------------------------------------------------------------------------
// Columns named like `_meta`

/// What a user reads in docs/types.md: a column `_meta` followed by underscores gets one more.
fn documented_property(column: &str) -> String {
    match column {
        "_meta" => "_meta_".into(),
        "_meta_" => "_meta__".into(),
        "_meta__" => "_meta___".into(),
        other => other.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_named_meta_get_their_own_property_in_schemas_keys_and_documents() {
    let db = TestDb::create("meta_columns").await;
    // `_meta` holds a value stored out of line, so an update of another column leaves it out of
    // the replication document (unchanged TOAST), and the merge reduction must keep it.
    db.execute(
        r#"CREATE TABLE test.meta_columns (id int PRIMARY KEY, "_meta" text, "_meta_" text, "_meta__" int, "_meta_x" text, v int);
           ALTER TABLE test.meta_columns ALTER COLUMN "_meta" SET STORAGE EXTERNAL;
           INSERT INTO test.meta_columns VALUES
             (1, repeat('m', 6000), 'one', 1, 'x1', 0),
             (2, 'small', NULL, NULL, NULL, 0),
             (3, NULL, 'three', 3, 'x3', 0);
           CREATE TABLE test.meta_key ("_meta" int, "_meta_" text, v int, PRIMARY KEY ("_meta", "_meta_"));
           INSERT INTO test.meta_key VALUES (1, 'a', 0), (2, 'b', 0);"#,
    )
    .await;
    let config = db.endpoint_config();
    let all = discover(&config);
    let columns = discovered(&all, "test", "meta_columns").expect("test.meta_columns is discovered");
    let keyed = discovered(&all, "test", "meta_key").expect("test.meta_key is discovered");

    // Discovery: the schema's properties, required keys and key pointers use the mapping.
    let properties = |b: &Value| -> BTreeSet<String> {
        row_schema(b)["properties"].as_object().expect("properties").keys().cloned().collect()
    };
    let expected: BTreeSet<String> =
        ["id", "_meta_", "_meta__", "_meta___", "_meta_x", "v"].iter().map(|s| s.to_string()).collect();
    assert_eq!(properties(columns), expected);
    assert_eq!(key_of_binding(columns), ["/id"]);
    let expected: BTreeSet<String> = ["_meta_", "_meta__", "v"].iter().map(|s| s.to_string()).collect();
    assert_eq!(properties(keyed), expected);
    assert_eq!(key_of_binding(keyed), ["/_meta_", "/_meta__"]);
    assert_eq!(row_schema(keyed)["required"], json!(["_meta_", "_meta__"]));
    assert_eq!(keyed["documentSchema"]["allOf"][0]["required"], json!(["_meta"]), "_meta is the connector's");

    // Validate, apply, then a backfill, then changes captured from the replication stream.
    let bindings = validate_and_apply(&config, &[columns, keyed]);
    let mut state = json!({});
    let mut documents = capture_until_idle(&config, &bindings, &mut state).await;
    assert_eq!(documents.len(), 5, "one backfill document per row: {documents:?}");
    db.execute(
        r#"UPDATE test.meta_columns SET v = 1 WHERE id = 1;
           UPDATE test.meta_columns SET "_meta" = 'now set', "_meta_" = 'two', "_meta__" = 2 WHERE id = 2;
           DELETE FROM test.meta_columns WHERE id = 3;
           INSERT INTO test.meta_columns VALUES (4, 'four', 'four_', 4, NULL, 0);
           UPDATE test.meta_key SET "_meta" = 3 WHERE "_meta" = 2;
           UPDATE test.meta_key SET v = 5 WHERE "_meta" = 1;
           INSERT INTO test.meta_key VALUES (4, 'd', 0);"#,
    )
    .await;
    let changes = capture_until_idle(&config, &bindings, &mut state).await;
    assert!(changes.iter().all(|(_, d)| d["_meta"]["source"]["snapshot"].is_null()), "replication documents");
    documents.extend(changes);

    for (index, binding) in [columns, keyed].into_iter().enumerate() {
        let ours: Vec<Value> = documents.iter().filter(|(i, _)| *i == index).map(|(_, d)| d.clone()).collect();
        let table = binding["resourceConfig"]["stream"].as_str().expect("stream");
        for document in &ours {
            assert!(matches!(document["_meta"]["op"].as_str(), Some("c" | "u" | "d")), "{table}: {document}");
            if let Some(before) = document["_meta"].get("before") {
                assert!(before.get("_meta").is_none(), "{table}: a column in before is named _meta: {document}");
            }
        }
        validate_documents(table, &binding["documentSchema"], &ours);
        let key = key_of_binding(binding);
        let expected = table_documents(&db, "test", table, documented_property, &key).await;
        assert_eq!(reduce(ours.iter(), &key), expected, "{table}: the reduced documents equal the table");
    }
    // The update of `v` left the out-of-line `_meta` value out; the reduction kept it.
    let toast_update = documents
        .iter()
        .find(|(i, d)| *i == 0 && d["id"] == 1 && d["_meta"]["op"] == "u")
        .expect("the update of row 1");
    assert!(toast_update.1.get("_meta_").is_none(), "unchanged TOAST value omitted: {}", toast_update.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_collection_keys_that_name_meta_columns_by_their_raw_name() {
    let db = TestDb::create("meta_stale_keys").await;
    db.execute(
        r#"CREATE TABLE test.meta_pk ("_meta" int PRIMARY KEY, v int);
           CREATE TABLE test.meta_underscore_pk ("_meta_" int PRIMARY KEY, v int);"#,
    )
    .await;
    let config = db.endpoint_config();
    // Keys as the Go connector discovered them: the columns' raw names.
    let stale = |table: &str, key: &str| json!({"resourceConfig": {"namespace": "test", "stream": table}, "collection": {"name": format!("tests/{table}"), "key": [key]}});
    let output = run_validate(&config, &[stale("meta_pk", "/_meta"), stale("meta_underscore_pk", "/_meta_")]);
    let last = output.stderr.lines().last().unwrap_or("");
    assert_eq!(output.exit_code, 1, "validate accepted keys that name no property of the documents: {last}");
    let error: Value = serde_json::from_str(last).expect("a JSON log line");
    let message = error["msg"].as_str().expect("msg");
    for expected in [
        r#"collection key "/_meta" of binding 0 (table "test.meta_pk") names the column "_meta", which is captured as the property "_meta_""#,
        r#"collection key "/_meta_" of binding 1 (table "test.meta_underscore_pk") names the column "_meta_", which is captured as the property "_meta__""#,
        r#"change its collection key to "/_meta__""#,
    ] {
        assert!(message.contains(expected), "{expected:?} is not in:\n{message}");
    }
    // The keys discovery gives them are accepted.
    let all = discover(&config);
    let fresh: Vec<Value> = ["meta_pk", "meta_underscore_pk"]
        .iter()
        .map(|t| {
            let b = discovered(&all, "test", t).expect("discovered");
            json!({"resourceConfig": b["resourceConfig"], "collection": {"name": format!("tests/{t}"), "key": b["key"]}})
        })
        .collect();
    assert_eq!(fresh[0]["collection"]["key"], json!(["/_meta_"]));
    assert_eq!(fresh[1]["collection"]["key"], json!(["/_meta__"]));
    let output = run_validate(&config, &fresh);
    assert_eq!(output.exit_code, 0, "validate refused discovered keys: {}", output.stderr);
}

// ---------------------------------------------------------------------------------------------
// Every name the server allows

/// Names PostgreSQL accepts for schemas, tables and columns (anything but NUL, at most 63 bytes).
fn nasty_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "new\nline",
        "ctrl\u{1}a",
        "tab\tand\rreturn",
        "del\u{7f}",
        "c1\u{85}\u{9b}",
        "quote\"double",
        "quote'single",
        "sl/ash",
        "back\\slash",
        "ti~lde~0~1",
        "per%cent%2F",
        "ünïcødé ☃ 日本 🐘",
        " ",
        "\u{200b}",
        "\u{a0}",
        ".",
        "..",
        "MiXeD CaSe",
        "_meta",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("x".repeat(63));
    names.push(format!("{}x", "é".repeat(31)));
    for name in &names {
        assert!(name.len() <= 63 && !name.is_empty(), "{name:?} is not a name PostgreSQL keeps as it is");
        assert!(!["id", "keys", "test"].contains(&name.as_str()), "{name:?} is taken by the test itself");
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_the_server_allows_is_discovered_validated_and_captured() {
    let db = TestDb::create("nasty_names").await;
    let names = nasty_names();
    // Each nasty name as a table in `test`, and as a schema holding a table of another nasty
    // name; every table has a column of its own name too.
    let mut tables: Vec<(String, String)> = names.iter().map(|n| ("test".to_string(), n.clone())).collect();
    for (i, schema) in names.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        tables.push((schema.clone(), names[(i + 1) % names.len()].clone()));
    }
    let mut setup = String::new();
    for schema in tables.iter().map(|(s, _)| s).filter(|s| *s != "test").collect::<BTreeSet<_>>() {
        setup.push_str(&format!("CREATE SCHEMA {0}; GRANT USAGE ON SCHEMA {0} TO {CAPTURE_USER};\n", ident(schema)));
    }
    for (schema, table) in &tables {
        let qualified = format!("{}.{}", ident(schema), ident(table));
        let column = ident(table);
        setup.push_str(&format!(
            "CREATE TABLE {qualified} (id int PRIMARY KEY, {column} text);
             GRANT SELECT ON {qualified} TO {CAPTURE_USER};
             INSERT INTO {qualified} VALUES (1, 'one'), (2, 'two');\n"
        ));
    }
    // A key of nasty columns: the key pointers escape `~` and `/`.
    setup.push_str(
        "CREATE TABLE test.keys (\"k/~1\" int, \"new\nline\" text, v int, PRIMARY KEY (\"k/~1\", \"new\nline\"));
         INSERT INTO test.keys VALUES (1, 'a', 0), (2, 'b', 0);\n",
    );
    tables.push(("test".into(), "keys".into()));
    db.execute(&setup).await;

    let config = db.endpoint_config();
    let all = discover(&config);
    let missing: Vec<String> =
        tables.iter().filter(|(s, t)| discovered(&all, s, t).is_none()).map(|(s, t)| format!("{s:?}.{t:?}")).collect();
    assert!(missing.is_empty(), "not discovered: {}", missing.join(", "));
    let chosen: Vec<&Value> = tables.iter().map(|(s, t)| discovered(&all, s, t).expect("discovered")).collect();
    assert_eq!(key_of_binding(chosen[chosen.len() - 1]), ["/k~1~01", "/new\nline"]);

    let bindings = validate_and_apply(&config, &chosen);
    let mut state = json!({});
    let mut documents = capture_until_idle(&config, &bindings, &mut state).await;
    assert_eq!(documents.len(), 2 * tables.len(), "two backfill documents per table");
    let mut changes = String::new();
    for (schema, table) in &tables {
        let qualified = format!("{}.{}", ident(schema), ident(table));
        if table == "keys" && schema == "test" {
            changes.push_str("UPDATE test.keys SET v = 1 WHERE \"k/~1\" = 1; DELETE FROM test.keys WHERE \"k/~1\" = 2; INSERT INTO test.keys VALUES (3, 'c', 0);\n");
            continue;
        }
        let column = ident(table);
        changes.push_str(&format!(
            "UPDATE {qualified} SET {column} = 'changed' WHERE id = 1; DELETE FROM {qualified} WHERE id = 2; INSERT INTO {qualified} VALUES (3, 'three');\n"
        ));
    }
    db.execute(&changes).await;
    documents.extend(capture_until_idle(&config, &bindings, &mut state).await);

    for (index, (schema, table)) in tables.iter().enumerate() {
        let ours: Vec<Value> = documents.iter().filter(|(i, _)| *i == index).map(|(_, d)| d.clone()).collect();
        for document in &ours {
            let source = &document["_meta"]["source"];
            assert_eq!((&source["schema"], &source["table"]), (&json!(schema), &json!(table)), "{document}");
        }
        let name = format!("{schema:?}.{table:?}");
        validate_documents(&name, &chosen[index]["documentSchema"], &ours);
        let key = key_of_binding(chosen[index]);
        let expected = table_documents(&db, schema, table, documented_property, &key).await;
        assert_eq!(reduce(ours.iter(), &key), expected, "{name}: the reduced documents equal the table");
    }
}
