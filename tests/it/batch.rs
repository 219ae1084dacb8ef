//! The batch connector (`source-postgres-batch`) end to end, against a server without
//! logical replication: a private cluster with `wal_level=replica`, captured by a role
//! without `REPLICATION` that may only read the test schema.
//!
//! Each test drives the real binary over the capture protocol, keeps the documents that a
//! checkpoint committed (those after the last checkpoint of a killed session are dropped, as
//! the runtime drops them), reduces them by the collection key as the collection would, and
//! compares the result with the table itself.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::harness::{describe_pg_error, PrivateCluster};
use source_postgres::capture::state::merge_patch;

/// The batch binary built with the tests, or the one `TEST_BATCH_CONNECTOR_BIN` names.
fn binary() -> String {
    std::env::var("TEST_BATCH_CONNECTOR_BIN")
        .ok()
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_source-postgres-batch").to_string())
}
const READER: &str = "batch_reader";
const READER_PASSWORD: &str = "batch-secret-1";

static CLUSTER: OnceLock<PrivateCluster> = OnceLock::new();

/// The shared cluster of these tests: `wal_level=replica`, and a role without REPLICATION.
async fn cluster() -> &'static PrivateCluster {
    if let Some(cluster) = CLUSTER.get() {
        return cluster;
    }
    tokio::task::spawn_blocking(|| {
        CLUSTER.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let cluster = PrivateCluster::start(&["wal_level=replica"]).await;
                let admin = cluster.cluster.superuser_client("postgres").await;
                admin
                    .batch_execute(&format!("CREATE ROLE {READER} LOGIN NOREPLICATION PASSWORD '{READER_PASSWORD}'"))
                    .await
                    .unwrap_or_else(|e| panic!("create the reader role: {}", describe_pg_error(&e)));
                cluster
            })
        })
    })
    .await
    .expect("starting the batch cluster panicked")
}

/// A database of the test's own, readable by the reader role; returns its name and a
/// superuser client.
async fn database(name: &str) -> (String, tokio_postgres::Client) {
    let cluster = cluster().await;
    let database = cluster.create_db(name).await;
    let client = cluster.cluster.superuser_client(&database).await;
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA test TO {READER};
             ALTER DEFAULT PRIVILEGES IN SCHEMA test GRANT SELECT ON TABLES TO {READER};"
        ))
        .await
        .unwrap_or_else(|e| panic!("grants: {}", describe_pg_error(&e)));
    (database, client)
}

async fn execute(client: &tokio_postgres::Client, sql: &str) {
    if let Err(e) = client.batch_execute(sql).await {
        panic!("SQL failed: {}\n{sql}", describe_pg_error(&e));
    }
}

fn config(database: &str, advanced: Value) -> Value {
    let mut advanced_config = json!({"sslmode": "disable", "poll": "1s"});
    merge_patch(&mut advanced_config, &advanced);
    json!({
        "address": CLUSTER.get().expect("cluster").cluster.address(),
        "user": READER,
        "password": READER_PASSWORD,
        "database": database,
        "advanced": advanced_config,
    })
}

fn binding(resource: Value, key: &[&str]) -> Value {
    let name = resource["name"].as_str().expect("resource name").to_string();
    json!({
        "resourceConfig": resource,
        "resourcePath": [name],
        "collection": {"name": format!("tests/{name}"), "key": key},
        "stateKey": name,
    })
}

/// Run the binary on `input` until it exits; (stdout lines as JSON, stderr, exit code).
async fn run_once(input: &str) -> (Vec<Value>, String, i32) {
    let mut child = Command::new(binary())
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the batch connector");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write requests");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the connector did not exit within 60 s")
        .expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON output line")).collect();
    (lines, String::from_utf8_lossy(&output.stderr).into_owned(), output.status.code().unwrap_or(-1))
}

/// The message of the last (error) log line.
fn error_message(stderr: &str) -> String {
    let last = stderr.lines().last().unwrap_or_default();
    let line: Value = serde_json::from_str(last).unwrap_or_else(|_| panic!("not a JSON log line: {last}"));
    line["msg"].as_str().unwrap_or_default().to_string()
}

/// A capture session of the binary, playing the runtime: documents count once a checkpoint
/// follows them, and the state is the merge of the checkpoints.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    pending: Vec<Value>,
    committed: Vec<Value>,
    state: Value,
    checkpoints: usize,
    exited: bool,
}

impl Run {
    async fn open(config: &Value, bindings: &[Value], state: &Value, env: &[(&str, &str)]) -> Run {
        let mut child = Command::new(binary())
            .env("LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the batch connector");
        let mut stdin = child.stdin.take().expect("stdin");
        let open = json!({"open": {"capture": {"name": "tests/batch", "config": config, "bindings": bindings}, "state": state}});
        stdin.write_all(format!("{open}\n").as_bytes()).await.expect("write open");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut run = Run {
            child,
            stdin: Some(stdin),
            lines,
            pending: Vec::new(),
            committed: Vec::new(),
            state: state.clone(),
            checkpoints: 0,
            exited: false,
        };
        let line = tokio::time::timeout(Duration::from_secs(60), run.lines.next_line())
            .await
            .expect("no response to open within 60 s")
            .expect("read")
            .expect("the connector exited before \"opened\"");
        assert!(line.contains("\"opened\""), "expected opened, got {line}");
        run
    }

    /// Read output until `done` holds (true) or `within` passes or the connector exits (false).
    async fn until(&mut self, within: Duration, mut done: impl FnMut(&Run) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while !done(self) {
            if self.exited {
                return false;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            let line = match tokio::time::timeout(left, self.lines.next_line()).await {
                Err(_) => return false,
                Ok(line) => line.expect("read connector output"),
            };
            let Some(line) = line else {
                self.exited = true;
                continue;
            };
            let message: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
            if let Some(captured) = message.get("captured") {
                self.pending.push(captured["doc"].clone());
            } else if let Some(checkpoint) = message.get("checkpoint") {
                merge_patch(&mut self.state, &checkpoint["state"]["updated"]);
                self.committed.append(&mut self.pending);
                self.checkpoints += 1;
                if let Some(stdin) = &mut self.stdin {
                    let _ = stdin.write_all(b"{\"acknowledge\":{\"checkpoints\":1}}\n").await;
                }
            } else {
                panic!("unexpected output {line}");
            }
        }
        true
    }

    /// The binding's stream state.
    fn stream(&self, name: &str) -> &Value {
        &self.state["bindingStateV1"][name]
    }

    async fn kill(mut self) -> (Vec<Value>, Value) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        (self.committed, self.state)
    }
}

/// The LastPolled of a binding (changes once per completed poll).
fn last_polled(run: &Run, name: &str) -> String {
    run.stream(name)["LastPolled"].as_str().unwrap_or("").to_string()
}

/// Documents reduced by `key` (a top-level property or a `_meta` property) with last write
/// wins, deletions removing the document.
fn reduce(documents: &[Value], key: &str) -> BTreeMap<String, Value> {
    let mut reduced = BTreeMap::new();
    for doc in documents {
        let id = match key.strip_prefix("_meta/") {
            Some(meta) => doc["_meta"][meta].to_string(),
            None => doc[key].to_string(),
        };
        if doc["_meta"]["op"] == "d" {
            reduced.remove(&id);
        } else {
            reduced.insert(id, doc.clone());
        }
    }
    reduced
}

/// `SELECT id, v FROM <table>` as id → v (v as text).
async fn table_values(client: &tokio_postgres::Client, table: &str) -> BTreeMap<String, Value> {
    let rows = client.query(&format!("SELECT id::text, v FROM {table}"), &[]).await.expect("read the table");
    rows.iter().map(|r| (r.get::<_, String>(0), json!(r.get::<_, Option<String>>(1)))).collect()
}

fn reduced_values(reduced: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    reduced.iter().map(|(id, doc)| (id.clone(), doc["v"].clone())).collect()
}

#[tokio::test]
async fn batch_spec_discover_validate_and_apply_without_replication() {
    let (database, admin) = database("batch_discover").await;
    let settings = admin
        .query_one(
            &format!(
                "SELECT current_setting('wal_level'), (SELECT rolreplication FROM pg_roles WHERE rolname = '{READER}')"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((settings.get::<_, String>(0).as_str(), settings.get::<_, bool>(1)), ("replica", false));
    execute(
        &admin,
        "CREATE TABLE test.items (id int PRIMARY KEY, v text, updated_at timestamptz);
         CREATE TABLE test.\"Keyless Rows\" (a int, b text);
         CREATE VIEW test.items_view AS SELECT id, v FROM test.items;
         GRANT SELECT ON ALL TABLES IN SCHEMA test TO batch_reader;",
    )
    .await;

    let (lines, stderr, code) = run_once("{\"spec\":{}}\n").await;
    assert_eq!(code, 0, "{stderr}");
    let spec = &lines[0]["spec"];
    assert_eq!(spec["resourcePathPointers"], json!(["/name"]));
    assert_eq!(spec["documentationUrl"], "https://go.estuary.dev/source-postgres-batch");
    for field in ["address", "user", "password", "database", "advanced"] {
        assert!(spec["configSchema"]["properties"].get(field).is_some(), "config schema lacks {field}");
    }
    for field in
        ["discover_views", "poll", "discover_schemas", "sslmode", "source_tag", "feature_flags", "statement_timeout"]
    {
        assert!(
            spec["configSchema"]["properties"]["advanced"]["properties"].get(field).is_some(),
            "advanced lacks {field}"
        );
    }
    for field in ["name", "schema", "table", "cursor", "poll", "template"] {
        assert!(spec["resourceConfigSchema"]["properties"].get(field).is_some(), "resource schema lacks {field}");
    }

    let discover =
        |advanced: Value| json!({"discover": {"connectorType": "IMAGE", "config": config(&database, advanced)}});
    let (lines, stderr, code) = run_once(&format!("{}\n", discover(json!({"discover_schemas": ["test"]})))).await;
    assert_eq!(code, 0, "{stderr}");
    let bindings = lines[0]["discovered"]["bindings"].as_array().expect("bindings").clone();
    let names: Vec<&str> = bindings.iter().map(|b| b["resourceConfig"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["test_keyless_rows", "test_items"], "views only with discover_views");
    let items = &bindings[1];
    assert_eq!(
        items["resourceConfig"],
        json!({"name": "test_items", "schema": "test", "table": "items", "cursor": ["txid"]})
    );
    assert_eq!(items["key"], json!(["/id"]));
    assert_eq!(items["recommendedName"], "test/items");
    assert_eq!(items["documentSchema"]["required"], json!(["_meta", "id"]));
    assert_eq!(items["documentSchema"]["properties"]["updated_at"]["format"], "date-time");
    assert_eq!(bindings[0]["key"], json!(["/_meta/row_id"]));
    let (lines, _, _) =
        run_once(&format!("{}\n", discover(json!({"discover_schemas": ["test"], "discover_views": true})))).await;
    let view = lines[0]["discovered"]["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["resourceConfig"]["name"] == "test_items_view")
        .expect("the view is discovered")
        .clone();
    assert_eq!(view["resourceConfig"], json!({"name": "test_items_view", "schema": "test", "table": "items_view"}));
    assert_eq!(view["key"], json!(["/_meta/row_id"]));

    let validate = |resources: Vec<Value>| {
        let bindings: Vec<Value> = resources.into_iter().map(|r| binding(r, &["/_meta/row_id"])).collect();
        format!(
            "{}\n",
            json!({"validate": {"name": "tests/batch", "config": config(&database, json!({})), "bindings": bindings}})
        )
    };
    let (lines, stderr, code) = run_once(&validate(vec![
        json!({"name": "items", "schema": "test", "table": "items", "cursor": ["txid"]}),
        json!({"name": "by_time", "schema": "test", "table": "items", "cursor": ["updated_at", "id"], "poll": "daily at 02:00Z"}),
        json!({"name": "view", "schema": "test", "table": "items_view"}),
        json!({"name": "query", "template": "SELECT id, v FROM {{quoteTableName \"test\" \"items\"}}{{if not .IsFirstQuery}} WHERE id > $1{{end}} ORDER BY id", "cursor": ["id"]}),
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines[0]["validated"]["bindings"][3]["resourcePath"], json!(["query"]));

    for (resource, expected) in [
        (
            json!({"name": "v", "schema": "test", "table": "items_view", "cursor": ["txid"]}),
            "is a view, which has no xmin",
        ),
        (
            json!({"name": "c", "schema": "test", "table": "items", "cursor": ["nope"]}),
            "cursor column \"nope\" of resource \"c\" is not a column of \"test.items\"",
        ),
        (
            json!({"name": "m", "schema": "test", "table": "missing"}),
            "table \"test.missing\" of resource \"m\" does not exist",
        ),
        (json!({"name": "t", "template": "SELECT {{ .Nope }}"}), "unknown field .Nope"),
        (
            json!({"name": "t", "template": "SELECT {{ if .IsFirstQuery }}"}),
            "line 1: \"if\" without a matching \"end\"",
        ),
        (json!({"name": "t", "template": "SELEC 1"}), "the first query of resource \"t\" is refused by the server"),
        (
            json!({"name": "t", "template": "SELECT id FROM test.items WHERE id > 0", "cursor": ["id"]}),
            "the subsequent query of resource \"t\" has 0 parameter(s), but it is given 1",
        ),
        (json!({"name": "p", "schema": "test", "table": "items", "poll": "sometimes"}), "\"poll\" of resource \"p\""),
    ] {
        let (_, stderr, code) = run_once(&validate(vec![resource.clone()])).await;
        assert_eq!(code, 1, "{resource} should fail validation");
        let message = error_message(&stderr);
        assert!(message.contains(expected), "{resource}: expected {expected:?} in\n{message}");
    }

    // The collection key's columns must come out of the query.
    let keyed = json!({"validate": {"name": "tests/batch", "config": config(&database, json!({})), "bindings": [
        binding(json!({"name": "k", "template": "SELECT v FROM test.items"}), &["/id"])]}});
    let (_, stderr, code) = run_once(&format!("{keyed}\n")).await;
    assert_eq!(code, 1);
    let message = error_message(&stderr);
    assert!(
        message.contains("the collection key of resource \"k\" needs column \"id\", which its query does not return"),
        "{message}"
    );

    let apply = json!({"apply": {"capture": {"name": "tests/batch", "config": config(&database, json!({})), "bindings": []}, "version": "1"}});
    let (lines, stderr, code) = run_once(&format!("{apply}\n")).await;
    assert_eq!((code, lines[0].clone()), (0, json!({"applied": {}})), "{stderr}");
}

#[tokio::test]
async fn batch_xmin_mode_captures_inserts_and_updates_across_polls() {
    let (database, admin) = database("batch_xmin").await;
    execute(
        &admin,
        "CREATE TABLE test.items (id int PRIMARY KEY, v text, pad text);
         INSERT INTO test.items SELECT g, 'v' || g, repeat('x', 200) FROM generate_series(1, 400) g;",
    )
    .await;
    let resource = json!({"name": "items", "schema": "test", "table": "items", "cursor": ["txid"]});
    let env = [("FLOW_BATCH_PAGES_PER_CHUNK", "3"), ("FLOW_BATCH_FETCH_ROWS", "50")];
    let mut run = Run::open(
        &config(&database, json!({"source_tag": "tagged"})),
        &[binding(resource, &["/id"])],
        &json!({}),
        &env,
    )
    .await;
    assert!(
        run.until(Duration::from_secs(60), |r| !last_polled(r, "items").is_empty()
            && r.stream("items")["ScanTID"] == "")
            .await,
        "the first poll did not complete"
    );
    assert!(run.checkpoints > 2, "a checkpoint per page range, got {}", run.checkpoints);
    assert_eq!(run.committed.len(), 400);
    let doc = &run.committed[0];
    assert!(doc["txid"].is_u64(), "{doc}");
    assert_eq!(
        doc["_meta"]["source"],
        json!({"resource": "items", "schema": "test", "table": "items", "tag": "tagged"})
    );
    assert!(doc["_meta"]["polled"].as_str().unwrap().ends_with('Z') && doc["_meta"]["row_id"].is_i64(), "{doc}");
    assert_eq!(doc["_meta"].get("op"), None, "no op without the row id key, as in Go");

    let first = run.committed.len();
    let previous_poll = last_polled(&run, "items");
    execute(
        &admin,
        "UPDATE test.items SET v = 'changed' || id WHERE id % 7 = 0;
         INSERT INTO test.items SELECT g, 'new' || g, 'p' FROM generate_series(401, 450) g;",
    )
    .await;
    assert!(
        run.until(Duration::from_secs(60), |r| last_polled(r, "items") != previous_poll).await,
        "the second poll did not complete"
    );
    let second = &run.committed[first..];
    assert_eq!(second.len(), 57 + 50, "only the updated and inserted rows are read again");
    let (committed, _) = run.kill().await;
    assert_eq!(reduced_values(&reduce(&committed, "id")), table_values(&admin, "test.items").await);
}

#[tokio::test]
async fn batch_cursor_mode_reads_only_rows_past_the_cursor() {
    let (database, admin) = database("batch_cursor").await;
    execute(
        &admin,
        "CREATE TABLE test.events (id int PRIMARY KEY, grp int NOT NULL, seq int NOT NULL, v text);
         INSERT INTO test.events SELECT g, g / 10, g % 10, 'v' || g FROM generate_series(1, 95) g;",
    )
    .await;
    let resource = json!({"name": "events", "schema": "test", "table": "events", "cursor": ["grp", "seq"]});
    let mut run = Run::open(
        &config(&database, json!({})),
        &[binding(resource, &["/id"])],
        &json!({}),
        &[("FLOW_BATCH_FETCH_ROWS", "7")],
    )
    .await;
    assert!(run.until(Duration::from_secs(60), |r| !last_polled(r, "events").is_empty()).await);
    assert_eq!(run.committed.len(), 95);
    assert_eq!(run.stream("events")["CursorValues"], json!(["9", "5"]), "the last row's cursor, as text");
    let polled = last_polled(&run, "events");
    // Rows past the cursor are read; a row changed in place (its cursor unchanged) is not.
    execute(
        &admin,
        "INSERT INTO test.events SELECT g, g / 10, g % 10, 'v' || g FROM generate_series(96, 120) g;
         UPDATE test.events SET v = 'late' WHERE id = 3;",
    )
    .await;
    assert!(run.until(Duration::from_secs(60), |r| last_polled(r, "events") != polled).await);
    let second: Vec<i64> = run.committed[95..].iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(second, (96..=120).collect::<Vec<_>>());
    assert_eq!(run.stream("events")["DocumentCount"], 120);
    let (committed, _) = run.kill().await;
    let mut expected = table_values(&admin, "test.events").await;
    expected.insert("3".into(), json!("v3"));
    assert_eq!(reduced_values(&reduce(&committed, "id")), expected);
}

#[tokio::test]
async fn batch_full_refresh_of_a_view_infers_deletes_by_row_id() {
    let (database, admin) = database("batch_view").await;
    execute(
        &admin,
        "CREATE TABLE test.base (id int PRIMARY KEY, v text);
         INSERT INTO test.base SELECT g, 'v' || g FROM generate_series(1, 30) g;
         CREATE VIEW test.odd AS SELECT id, v FROM test.base WHERE id % 2 = 1 ORDER BY id;
         GRANT SELECT ON test.odd TO batch_reader;",
    )
    .await;
    let resource = json!({"name": "odd", "schema": "test", "table": "odd"});
    let mut run =
        Run::open(&config(&database, json!({})), &[binding(resource, &["/_meta/row_id"])], &json!({}), &[]).await;
    assert!(run.until(Duration::from_secs(60), |r| !last_polled(r, "odd").is_empty()).await);
    assert_eq!(run.committed.len(), 15);
    assert!(run.committed.iter().all(|d| d["_meta"]["op"] == "c"));
    let polled = last_polled(&run, "odd");
    execute(&admin, "DELETE FROM test.base WHERE id > 20; UPDATE test.base SET v = 'x' WHERE id = 1;").await;
    assert!(run.until(Duration::from_secs(60), |r| last_polled(r, "odd") != polled).await);
    let second = &run.committed[15..];
    assert_eq!(second.iter().filter(|d| d["_meta"]["op"] == "u").count(), 10);
    assert_eq!(second.iter().filter(|d| d["_meta"]["op"] == "d").count(), 5, "rows past the new end are deleted");
    let (committed, _) = run.kill().await;
    let reduced = reduce(&committed, "_meta/row_id");
    let ids: Vec<(i64, Value)> = reduced.values().map(|d| (d["id"].as_i64().unwrap(), d["v"].clone())).collect();
    let mut ids = ids;
    ids.sort_by_key(|(id, _)| *id);
    let expected: Vec<(i64, Value)> = admin
        .query("SELECT id, v FROM test.odd", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (i64::from(r.get::<_, i32>(0)), json!(r.get::<_, String>(1))))
        .collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn batch_template_queries_render_with_cursor_parameters_and_bad_ones_fail_clearly() {
    let (database, admin) = database("batch_template").await;
    execute(
        &admin,
        "CREATE TABLE test.\"Mixed Case\" (id int PRIMARY KEY, v text);
         INSERT INTO test.\"Mixed Case\" SELECT g, 'v' || g FROM generate_series(1, 20) g;",
    )
    .await;
    let template = "SELECT id, v, upper(v) AS shout FROM {{quoteTableName .SchemaName .TableName}}\
                    {{if not .IsFirstQuery}} WHERE {{index .CursorFields 0}} > $1{{end}} ORDER BY {{index .CursorFields 0}}";
    let resource =
        json!({"name": "shouting", "schema": "test", "table": "Mixed Case", "cursor": ["id"], "template": template});
    let mut run =
        Run::open(&config(&database, json!({})), &[binding(resource.clone(), &["/id"])], &json!({}), &[]).await;
    assert!(run.until(Duration::from_secs(60), |r| !last_polled(r, "shouting").is_empty()).await);
    assert_eq!(run.committed.len(), 20);
    assert_eq!(run.committed[4]["shout"], "V5");
    let polled = last_polled(&run, "shouting");
    execute(&admin, "INSERT INTO test.\"Mixed Case\" VALUES (21, 'new');").await;
    assert!(run.until(Duration::from_secs(60), |r| last_polled(r, "shouting") != polled).await);
    assert_eq!(run.committed[20..].iter().map(|d| d["shout"].clone()).collect::<Vec<_>>(), [json!("NEW")]);
    run.kill().await;

    // A template that renders SQL the server refuses ends the capture with one clear line.
    let mut bad = resource;
    bad["template"] = json!("SELECT * FROM {{quoteTableName .SchemaName .TableName}} WHERE nope > 1");
    let open = json!({"open": {"capture": {"name": "tests/batch", "config": config(&database, json!({})), "bindings": [binding(bad, &["/id"])]}, "state": {}}});
    let (_, stderr, code) = run_once(&format!("{open}\n")).await;
    assert_eq!(code, 1);
    let message = error_message(&stderr);
    assert!(message.starts_with("polling resource \"shouting\" failed") && message.contains("nope"), "{message}");
}

/// Kill -9 in the middle of a poll, then resume from the committed state: the reduced
/// collection equals the table, and the second session did not start over. Groups of equal
/// cursor values (7 rows, which divides no fetch or checkpoint size) straddle the points
/// where the poll checkpoints, so a resume point inside a group would lose rows.
#[tokio::test]
async fn batch_resumes_after_kill_9_in_cursor_and_xmin_modes() {
    let (database, admin) = database("batch_resume").await;
    execute(
        &admin,
        "CREATE TABLE test.by_cursor (id int PRIMARY KEY, v text, seq bigint NOT NULL);
         INSERT INTO test.by_cursor SELECT g, 'v' || g, g / 7 FROM generate_series(1, 6000) g;
         CREATE TABLE test.by_numeric (id int PRIMARY KEY, v text, n numeric NOT NULL);
         INSERT INTO test.by_numeric SELECT g, 'v' || g, trunc((g / 7)::numeric, g % 3) FROM generate_series(1, 6000) g;
         CREATE TABLE test.by_xmin (id int PRIMARY KEY, v text, pad text);
         INSERT INTO test.by_xmin SELECT g, 'v' || g, repeat('p', 300) FROM generate_series(1, 3000) g;",
    )
    .await;
    for (name, resource, poll) in [
        ("by_cursor", json!({"name": "by_cursor", "schema": "test", "table": "by_cursor", "cursor": ["seq"]}), "1h"),
        // Equal cursor values with different text (5, 5.0, 5.00): a group is whole only when the
        // server says the next value is greater, not when the text differs.
        ("by_numeric", json!({"name": "by_numeric", "schema": "test", "table": "by_numeric", "cursor": ["n"]}), "1h"),
        ("by_xmin", json!({"name": "by_xmin", "schema": "test", "table": "by_xmin", "cursor": ["txid"]}), "1s"),
    ] {
        let env = [("FLOW_BATCH_FETCH_ROWS", "100"), ("FLOW_BATCH_PAGES_PER_CHUNK", "4")];
        let bindings = [binding(resource, &["/id"])];
        let config = config(&database, json!({"poll": poll}));
        let mut run = Run::open(&config, &bindings, &json!({}), &env).await;
        assert!(run.until(Duration::from_secs(60), |r| r.checkpoints >= 2).await, "{name}: no checkpoints");
        assert!(last_polled(&run, name).starts_with("0001-"), "{name}: killed mid-poll");
        let (mut committed, state) = run.kill().await;
        let before_restart = committed.len();
        assert!(before_restart > 0 && before_restart < 3000, "{name}: {before_restart} documents before the kill");
        // Rows changed while the connector was down: row 1 was read before the kill, row 2999 not.
        execute(&admin, &format!("UPDATE test.{name} SET v = 'while down' WHERE id IN (1, 2999);")).await;
        let mut run = Run::open(&config, &bindings, &state, &env).await;
        assert!(
            run.until(Duration::from_secs(120), |r| !last_polled(r, name).starts_with("0001-")).await,
            "{name}: the resumed poll did not complete"
        );
        let resumed_from = run.committed.first().map(|d| d["id"].as_i64().unwrap()).unwrap_or(0);
        assert!(resumed_from > 1, "{name}: the resumed session started over (first id {resumed_from})");
        let mut expected = table_values(&admin, &format!("test.{name}")).await;
        if name == "by_xmin" {
            // Both updates wrote row versions after the interrupted scan began: the scan that
            // follows it reads them.
            let polled = last_polled(&run, name);
            assert!(
                run.until(Duration::from_secs(60), |r| last_polled(r, name) != polled).await,
                "no second xmin poll"
            );
        } else {
            // An update that leaves the cursor as it was is not seen by a cursor (documented).
            expected.insert("1".into(), json!("v1"));
        }
        let (resumed, _) = run.kill().await;
        committed.extend(resumed);
        assert_eq!(reduced_values(&reduce(&committed, "id")), expected, "{name}");
    }
}

/// The SQL form of the wraparound-safe comparison, computed by the server, agrees with the
/// Rust one at the wraparound.
#[tokio::test]
async fn batch_xid_window_arithmetic_matches_the_server_at_the_wraparound() {
    let (_, admin) = database("batch_xid").await;
    for (x, y) in [
        (5_i64, 7_i64),
        (4_294_967_290, 5),
        (5, 4_294_967_290),
        (4_294_967_295, 0),
        (3, (1 << 32) + 3),
        (10, (7 << 32) + 4_294_967_290),
    ] {
        let server: i64 =
            admin.query_one("SELECT ((($1::bigint - $2::bigint) << 32) >> 32)", &[&x, &y]).await.unwrap().get(0);
        assert_eq!(server, source_postgres::batch::query::wrapping_delta(x, y), "{x} - {y}");
        let ordering = source_postgres::batch::query::compare_xid32(x as u32, y as u32);
        assert_eq!(server.cmp(&0), ordering, "{x} vs {y}");
    }
}

/// Kill -9 at checkpoints chosen at random, several times, while a writer keeps updating and
/// inserting rows (one statement at a time, so a sequence gives growing cursor values in commit order):
/// after a last session has polled past the writer's end, the reduced collection equals the
/// table, in both incremental modes.
#[tokio::test]
async fn batch_survives_repeated_kill_9_under_writes() {
    use rand::{Rng, SeedableRng};
    let (database, admin) = database("batch_kills").await;
    execute(
        &admin,
        "CREATE SEQUENCE test.bump START 10000;
         CREATE TABLE test.by_cursor (id int PRIMARY KEY, v text, seq bigint NOT NULL);
         INSERT INTO test.by_cursor SELECT g, 'v' || g, g / 7 FROM generate_series(1, 4000) g;
         CREATE TABLE test.by_xmin (id int PRIMARY KEY, v text, pad text);
         INSERT INTO test.by_xmin SELECT g, 'v' || g, repeat('p', 200) FROM generate_series(1, 4000) g;",
    )
    .await;
    let seed: u64 = std::env::var("BATCH_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(17);
    eprintln!("batch_survives_repeated_kill_9_under_writes: BATCH_KILL_SEED={seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);
    for (name, cursor) in [("by_cursor", json!(["seq"])), ("by_xmin", json!(["txid"]))] {
        let resource = json!({"name": name, "schema": "test", "table": name, "cursor": cursor});
        let bindings = [binding(resource, &["/id"])];
        let config = config(&database, json!({"poll": "1s"}));
        let env = [("FLOW_BATCH_FETCH_ROWS", "50"), ("FLOW_BATCH_PAGES_PER_CHUNK", "2")];

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let writer_client = CLUSTER.get().unwrap().cluster.superuser_client(&database).await;
            let statement = format!(
                "UPDATE test.{name} SET v = 'w' || nextval('test.bump'), {} WHERE id = $1",
                if name == "by_cursor" { "seq = currval('test.bump')" } else { "pad = pad" }
            );
            let insert = format!(
                "INSERT INTO test.{name} VALUES ($1, 'i', {})",
                if name == "by_cursor" { "nextval('test.bump')" } else { "'p'" }
            );
            let writer_seed = random.gen::<u64>();
            tokio::spawn(async move {
                let mut random = rand::rngs::StdRng::seed_from_u64(writer_seed);
                let mut writes = 0;
                let mut next_id = 4001;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if writes % 5 == 4 {
                        writer_client.execute(&insert, &[&next_id]).await.expect("insert");
                        next_id += 1;
                    } else {
                        // Rows 1..=2000 are never written: a resume that skipped one shows.
                        let id: i32 = random.gen_range(2001..next_id);
                        writer_client.execute(&statement, &[&id]).await.expect("update");
                    }
                    writes += 1;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                writes
            })
        };

        let mut state = json!({});
        let mut committed = Vec::new();
        for round in 0..4 {
            let mut run = Run::open(&config, &bindings, &state, &env).await;
            // An xmin scan checkpoints after every two pages: let its sessions span polls too.
            let target = run.checkpoints + random.gen_range(1..=if name == "by_xmin" { 150 } else { 12 });
            assert!(
                run.until(Duration::from_secs(60), |r| r.checkpoints >= target).await,
                "{name} round {round}: no checkpoints"
            );
            let (documents, next_state) = run.kill().await;
            committed.extend(documents);
            state = next_state;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = writer.await.expect("writer");
        // The last session: two complete polls after the last write (the first may have begun before it).
        let mut run = Run::open(&config, &bindings, &state, &env).await;
        let mut polls = 0;
        let mut previous = last_polled(&run, name);
        while polls < 2 {
            assert!(
                run.until(Duration::from_secs(120), |r| last_polled(r, name) != previous).await,
                "{name}: no complete poll"
            );
            previous = last_polled(&run, name);
            polls += 1;
        }
        let (documents, _) = run.kill().await;
        committed.extend(documents);
        eprintln!("{name}: {writes} writes, {} committed documents", committed.len());
        assert_eq!(
            reduced_values(&reduce(&committed, "id")),
            table_values(&admin, &format!("test.{name}")).await,
            "{name}"
        );
    }
}

/// A table rewrite (`VACUUM FULL`) in the middle of an xmin scan moves the rows not read
/// yet into pages the scan already read: the scan starts again from the first page, and
/// every row of the table is captured.
#[tokio::test]
async fn batch_xmin_scan_survives_a_table_rewrite_mid_scan() {
    let (database, admin) = database("batch_rewrite").await;
    execute(
        &admin,
        "CREATE TABLE test.rewritten (id int PRIMARY KEY, v text, pad text);
         INSERT INTO test.rewritten SELECT g, 'v' || g, repeat('p', 300) FROM generate_series(1, 20000) g;",
    )
    .await;
    let resource = json!({"name": "rewritten", "schema": "test", "table": "rewritten", "cursor": ["txid"]});
    let env = [("FLOW_BATCH_PAGES_PER_CHUNK", "5"), ("FLOW_BATCH_FETCH_ROWS", "50")];
    let mut run =
        Run::open(&config(&database, json!({"poll": "1h"})), &[binding(resource, &["/id"])], &json!({}), &env).await;
    assert!(run.until(Duration::from_secs(60), |r| r.checkpoints >= 3).await);
    // Not reading its output, the connector soon blocks on a full pipe, mid-scan.
    tokio::time::sleep(Duration::from_millis(500)).await;
    execute(&admin, "DELETE FROM test.rewritten WHERE id <= 15000").await;
    let vacuum = {
        let client = CLUSTER.get().unwrap().cluster.superuser_client(&database).await;
        tokio::spawn(async move { client.batch_execute("VACUUM FULL test.rewritten").await })
    };
    assert!(
        run.until(Duration::from_secs(120), |r| !last_polled(r, "rewritten").starts_with("0001-")).await,
        "the scan did not complete"
    );
    vacuum.await.expect("vacuum task").expect("VACUUM FULL");
    let (committed, _) = run.kill().await;
    let reduced = reduced_values(&reduce(&committed, "id"));
    let table = table_values(&admin, "test.rewritten").await;
    let missing: Vec<&String> = table.keys().filter(|id| reduced.get(*id) != table.get(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} rows of the table were not captured, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The batch connector takes the CDC connector's `networkTunnel`: discovery and a poll go
/// through the test bastion (its log shows forwards to the database's port), and the
/// captured rows equal the table. A refused key is one clear error naming the tunnel.
#[tokio::test]
async fn batch_discovers_and_polls_through_an_ssh_tunnel() {
    let (database, admin) = database("batch_ssh_tunnel").await;
    execute(
        &admin,
        "CREATE TABLE test.items (id int PRIMARY KEY, v text);
         INSERT INTO test.items SELECT g, 'v' || g FROM generate_series(1, 300) g;",
    )
    .await;
    let bastion = crate::harness::ssh_bastion();
    let port = cluster().await.cluster.port;
    let mut config = config(&database, json!({}));
    config["networkTunnel"] =
        json!({"sshForwarding": {"sshEndpoint": bastion.endpoint(), "privateKey": bastion.authorized_key}});

    let before = crate::ssh_tunnel::forwards_to(port);
    let discover = json!({"discover": {"connectorType": "IMAGE", "config": config}});
    let (lines, stderr, code) = run_once(&format!("{discover}\n")).await;
    assert_eq!(code, 0, "discovery through the tunnel failed: {stderr}");
    let names: Vec<&str> = lines[0]["discovered"]["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["recommendedName"].as_str())
        .collect();
    assert!(names.iter().any(|n| n.contains("items")), "test.items was not discovered: {names:?}");
    assert!(
        crate::ssh_tunnel::forwards_to(port) > before,
        "discovery did not go through the bastion:\n{}",
        bastion.log()
    );

    let before = crate::ssh_tunnel::forwards_to(port);
    let resource = json!({"name": "items", "schema": "test", "table": "items", "cursor": ["txid"]});
    let mut run = Run::open(&config, &[binding(resource, &["/id"])], &json!({}), &[]).await;
    assert!(
        run.until(Duration::from_secs(60), |r| !last_polled(r, "items").is_empty()).await,
        "the first poll through the tunnel did not complete"
    );
    let (committed, _) = run.kill().await;
    assert_eq!(reduced_values(&reduce(&committed, "id")), table_values(&admin, "test.items").await);
    assert!(
        crate::ssh_tunnel::forwards_to(port) > before,
        "the poll did not go through the bastion:\n{}",
        bastion.log()
    );

    // A key the bastion does not know: one error line, naming the tunnel, never the key.
    let mut refused = config.clone();
    refused["networkTunnel"]["sshForwarding"]["privateKey"] = json!(bastion.unauthorized_key);
    let discover = json!({"discover": {"connectorType": "IMAGE", "config": refused}});
    let (_, stderr, code) = run_once(&format!("{discover}\n")).await;
    assert_eq!(code, 1, "a refused key must fail: {stderr}");
    let message = error_message(&stderr);
    assert!(message.contains("refused public-key authentication"), "the error does not name the tunnel: {message}");
    let body = bastion.unauthorized_key.lines().find(|l| l.len() > 16 && !l.starts_with("-----")).expect("key body");
    assert!(!stderr.contains(body), "the output holds the key: {stderr}");
}
