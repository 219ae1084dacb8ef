//! Drop-in configuration: the Go connector's configurations go through this connector's
//! `validate` (tests/fixtures/go-configs), each of its settings either works or is refused
//! by name as not supported yet, never by the parser; and the Go settings this connector
//! implements behave as in the Go connector: `min_backfill_xid`, the prerequisite flags,
//! `use_schema_inference`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::driver::{backfills_done, binding, merge_patch, Event, Session};
use crate::harness::{run_connector, ConnectorOutput, TestDb, CAPTURE_USER};

/// The last stderr line of a failed run: its message (with the hint).
fn failure(output: &ConnectorOutput, what: &str) -> String {
    assert_eq!(
        output.exit_code, 1,
        "{what}: expected a failure\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout, output.stderr
    );
    assert_eq!(output.stdout, "", "{what}: no response may be written");
    let last = output.stderr.lines().rev().find(|l| !l.trim().is_empty()).expect("an error line");
    let line: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: not a JSON log line ({e}): {last}"));
    assert_eq!(line["level"], "error", "{what}: {last}");
    line["msg"].as_str().expect("msg").to_string()
}

fn validate_request(config: &Value, resources: &[Value]) -> String {
    let bindings: Vec<Value> = resources
        .iter()
        .map(|resource| {
            json!({
                "resourceConfig": resource,
                "collection": {"name": format!("tests/{}", resource["stream"].as_str().unwrap_or("t")), "key": ["/id"]},
                "backfill": 0
            })
        })
        .collect();
    format!(
        "{}\n",
        json!({"validate": {"name": "tests/capture", "connectorType": "IMAGE", "config": config, "bindings": bindings}})
    )
}

/// An example's configuration pointed at the test database: the connection (address, user,
/// password, database, slot, no TLS) is the test's, every other setting is the example's.
/// IAM credentials are kept (they must be refused before any connection).
fn at_test_database(db: &TestDb, example: &Value) -> Value {
    let ours = db.endpoint_config();
    let mut config = example.clone();
    for field in ["address", "user", "database"] {
        config[field] = ours[field].clone();
    }
    let iam = config["credentials"]["auth_type"].as_str().is_some_and(|t| t != "UserPassword");
    if !iam {
        config["credentials"] = ours["credentials"].clone();
        if let Some(object) = config.as_object_mut() {
            object.remove("password");
        }
    }
    if !config["advanced"].is_object() {
        config["advanced"] = json!({});
    }
    config["advanced"]["slotName"] = ours["advanced"]["slotName"].clone();
    config["advanced"]["sslmode"] = json!("disable");
    config
}

/// Every example of the Go connector's docs and tests goes through the binary's `validate`
/// against a real server: the ones this connector implements are validated, the others fail
/// with one line that names each unsupported field, and none fails in the parser.
#[test]
fn every_go_example_goes_through_validate() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(TestDb::create("go_configs_validate"));
    // One table per binding position; the examples' own table names are replaced, their
    // resource settings (mode, priority, filters, key overrides) are kept.
    runtime.block_on(db.execute(
        "CREATE TABLE test.t0 (id int PRIMARY KEY, created_at date);
         CREATE TABLE test.t1 (id int PRIMARY KEY, created_at date);
         CREATE TABLE test.t2 (id int PRIMARY KEY, created_at date);
         CREATE TABLE test.t3 (id int PRIMARY KEY, created_at date);",
    ));
    // The capture's slot exists, as for a capture that runs already: one example turns
    // `create_replication_slot` off, and validation then requires the slot.
    runtime.block_on(async {
        let admin = db.superuser_client().await;
        admin
            .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&db.slot_name()])
            .await
            .expect("create the capture's slot");
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go-configs");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut seen = 0;
    for path in files {
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        for example in file["examples"].as_array().expect("examples") {
            seen += 1;
            let what = format!("{} / {}", path.file_name().unwrap().to_string_lossy(), example["name"]);
            let mut config = at_test_database(&db, &example["config"]);
            if example["invalid"].is_string() {
                // The example is refused for its own value, which may be the TLS mode.
                config["advanced"]["sslmode"] = example["config"]["advanced"]["sslmode"].clone();
            }
            let resources: Vec<Value> = example["bindings"]
                .as_array()
                .expect("bindings")
                .iter()
                .enumerate()
                .map(|(i, resource)| {
                    let mut resource = resource.clone();
                    resource["namespace"] = json!("test");
                    resource["stream"] = json!(format!("t{i}"));
                    resource
                })
                .collect();
            // The test publication suits the example's partition setting, as a user's would.
            let as_partitions = config["advanced"]["capture_as_partitions"] == json!(true);
            runtime.block_on(db.execute(&format!(
                "ALTER PUBLICATION flow_publication SET (publish_via_partition_root = {})",
                !as_partitions
            )));
            let output = run_connector(&[], &validate_request(&config, &resources), &[]);
            if let Some(field) = example["invalid"].as_str() {
                let message = failure(&output, &what);
                assert!(message.contains(&format!("{field:?} is invalid")), "{what}: {message}");
                continue;
            }
            let unsupported: Vec<&str> =
                example["unsupported"].as_array().expect("unsupported").iter().map(|f| f.as_str().unwrap()).collect();
            if unsupported.is_empty() {
                assert_eq!(
                    output.exit_code, 0,
                    "{what}: not validated\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    output.stdout, output.stderr
                );
                let response: Value = serde_json::from_str(output.stdout.trim()).expect("one JSON response");
                assert_eq!(response["validated"]["bindings"].as_array().map(Vec::len), Some(resources.len()), "{what}");
            } else {
                let message = failure(&output, &what);
                let first_line = message.lines().next().unwrap_or_default();
                assert!(first_line.contains("not supported yet"), "{what}: {message}");
                for field in &unsupported {
                    assert!(first_line.contains(&format!("{field:?}")), "{what}: {field} is not named in: {message}");
                }
                assert!(!message.contains("example-secret") && !message.contains("example-token"), "{what}: {message}");
            }
            if example["name"].as_str().is_some_and(|n| n.contains("newer version")) {
                let warned = output.stderr.lines().any(|line| {
                    serde_json::from_str::<Value>(line)
                        .is_ok_and(|l| l["level"] == "warn" && line.contains("some_future_flag"))
                });
                assert!(warned, "{what}: no warning about the unknown flag in\n{}", output.stderr);
            }
        }
    }
    assert!(seen >= 20, "{seen} examples");
}

/// `skip_table_prerequisites` skips the per-table checks (as in the Go connector: table
/// access and publication membership), not the server-wide ones; `skip_prerequisites` skips
/// them all.
#[test]
fn prerequisite_flags_skip_what_the_go_connector_skips() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(TestDb::create("go_configs_skip_prerequisites"));
    runtime.block_on(db.execute(&format!(
        "CREATE TABLE test.secret (id int PRIMARY KEY); REVOKE SELECT ON test.secret FROM {CAPTURE_USER};"
    )));
    let resources = [json!({"namespace": "test", "stream": "secret"})];
    let with_flags = |flags: &str| {
        let mut config = db.endpoint_config();
        config["advanced"]["feature_flags"] = json!(flags);
        config
    };

    let output = run_connector(&[], &validate_request(&with_flags(""), &resources), &[]);
    let message = failure(&output, "an unreadable table");
    assert!(message.contains("cannot read from table \"test.secret\""), "{message}");

    let output = run_connector(&[], &validate_request(&with_flags("skip_table_prerequisites"), &resources), &[]);
    assert_eq!(output.exit_code, 0, "skip_table_prerequisites: {}", output.stderr);

    // A server-wide problem (the capture user may not create the publication) is still
    // reported with skip_table_prerequisites, not with skip_prerequisites.
    runtime.block_on(db.execute("DROP PUBLICATION flow_publication"));
    let output = run_connector(&[], &validate_request(&with_flags("skip_table_prerequisites"), &resources), &[]);
    let message = failure(&output, "skip_table_prerequisites without a publication");
    assert!(message.contains("publication \"flow_publication\" does not exist"), "{message}");
    assert!(!message.contains("cannot read from table"), "{message}");
    let output = run_connector(&[], &validate_request(&with_flags("skip_prerequisites"), &resources), &[]);
    assert_eq!(output.exit_code, 0, "skip_prerequisites: {}", output.stderr);
}

/// `no_use_schema_inference` drops `x-infer-schema` from discovered collection schemas;
/// it is there by default, as in the Go connector.
#[test]
fn use_schema_inference_is_honoured_by_discovery() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(TestDb::create("go_configs_schema_inference"));
    runtime.block_on(db.execute("CREATE TABLE test.t (id int PRIMARY KEY);"));
    let discover = |flags: &str| {
        let mut config = db.endpoint_config();
        config["advanced"]["feature_flags"] = json!(flags);
        let output = run_connector(
            &[],
            &format!("{}\n", json!({"discover": {"connectorType": "IMAGE", "config": config}})),
            &[],
        );
        assert_eq!(output.exit_code, 0, "discover ({flags}): {}", output.stderr);
        let response: Value = serde_json::from_str(output.stdout.trim()).expect("one response");
        let binding = response["discovered"]["bindings"]
            .as_array()
            .expect("bindings")
            .iter()
            .find(|b| b["resourceConfig"]["stream"] == "t")
            .cloned()
            .expect("test.t");
        binding["documentSchema"].get("x-infer-schema").cloned()
    };
    assert_eq!(discover(""), Some(json!(true)));
    assert_eq!(discover("use_schema_inference"), Some(json!(true)));
    assert_eq!(discover("no_use_schema_inference"), None);
}

/// Run a capture until every backfill is done and nothing arrives for two seconds; the
/// captured documents.
async fn capture_until_idle(config: &Value, bindings: Vec<Value>) -> Vec<Value> {
    let mut state = json!({});
    let mut session = Session::open(config, bindings, &state, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut documents = Vec::new();
    loop {
        match session.next(Duration::from_secs(2)).await {
            Event::Captured { doc } => documents.push(doc),
            Event::Checkpoint { patch } => {
                merge_patch(&mut state, &patch);
                session.acknowledge().await;
            }
            Event::Timeout if backfills_done(&state) => break,
            Event::Timeout if Instant::now() < deadline => {}
            other => panic!("unexpected event (state {state}): {other:?}"),
        }
    }
    session.kill().await;
    documents
}

/// `(table, id, data)` of each document, sorted.
fn rows_of(documents: &[Value]) -> Vec<(String, i64, String)> {
    let mut rows: Vec<(String, i64, String)> = documents
        .iter()
        .map(|d| {
            (
                d["_meta"]["source"]["table"].as_str().unwrap_or_default().to_string(),
                d["id"].as_i64().expect("id"),
                d["data"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `min_backfill_xid` as in the Go connector's TestXMINBackfill, over several chunks, for a
/// keyed table, a keyless one and a partitioned one: the backfill emits exactly the rows
/// whose xmin is the XID or newer (inserted or updated since), compared with the table
/// itself; older rows and deleted ones are not emitted. The XID is given with its epoch
/// (64 bits), as `pg_current_xact_id()` prints it.
#[test]
fn min_backfill_xid_backfills_only_rows_written_since() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let db = TestDb::create("go_configs_min_backfill_xid").await;
        db.execute(
            "CREATE TABLE test.keyed (id int PRIMARY KEY, data text);
             CREATE TABLE test.keyless (id int, data text);
             ALTER TABLE test.keyless REPLICA IDENTITY FULL;
             CREATE TABLE test.parted (id int PRIMARY KEY, data text) PARTITION BY RANGE (id);
             CREATE TABLE test.parted_low PARTITION OF test.parted FOR VALUES FROM (0) TO (8);
             CREATE TABLE test.parted_high PARTITION OF test.parted FOR VALUES FROM (8) TO (100);",
        )
        .await;
        for table in ["keyed", "keyless", "parted"] {
            db.execute(&format!("INSERT INTO test.{table} SELECT i, 'old ' || i FROM generate_series(0, 11) i")).await;
        }
        let client = db.superuser_client().await;
        // A transaction ID of its own, assigned after the old rows were written and before
        // the new ones (a snapshot's xmin would not do: another test's transaction may be
        // older than the old rows).
        let lower: String =
            client.query_one("SELECT pg_current_xact_id()::text", &[]).await.expect("current XID").get(0);
        for table in ["keyed", "keyless", "parted"] {
            db.execute(&format!(
                "INSERT INTO test.{table} VALUES (20, 'new 20'), (21, 'new 21'), (22, 'new 22');
                 DELETE FROM test.{table} WHERE id = 0;
                 UPDATE test.{table} SET data = 'updated 5' WHERE id = 5;
                 UPDATE test.{table} SET data = 'updated 9' WHERE id = 9;"
            ))
            .await;
        }
        // What the table itself says was written since (no XID wraparound on the test
        // server, so a plain comparison is the circular one).
        let mut expected = Vec::new();
        for table in ["keyed", "keyless", "parted"] {
            let rows = client
                .query(
                    &format!(
                        "SELECT id, data FROM test.{table}
                         WHERE xmin::text::bigint >= ($1::text::bigint & 4294967295) ORDER BY id"
                    ),
                    &[&lower],
                )
                .await
                .expect("rows written since");
            for row in rows {
                expected.push((table.to_string(), i64::from(row.get::<_, i32>(0)), row.get::<_, String>(1)));
            }
        }
        expected.sort();
        assert_eq!(expected.len(), 15, "{expected:?}");
        assert!(expected.iter().all(|(_, id, _)| [5, 9, 20, 21, 22].contains(id)), "{expected:?}");

        let mut config = db.endpoint_config();
        config["advanced"]["min_backfill_xid"] = json!(lower);
        config["advanced"]["backfill_chunk_size"] = json!(2);
        let mut keyless = binding("keyless", &["/_meta/source/loc/0", "/_meta/source/loc/1", "/_meta/source/loc/2"]);
        keyless["resourceConfig"]["mode"] = json!("Without Primary Key");
        let documents =
            capture_until_idle(&config, vec![binding("keyed", &["/id"]), keyless, binding("parted", &["/id"])]).await;
        assert!(documents.iter().all(|d| d["_meta"]["op"] == "c"), "{documents:?}");
        assert_eq!(rows_of(&documents), expected);

        // Without the setting, the same capture (another slot) reads every row.
        let mut config = db.endpoint_config();
        config["advanced"]["slotName"] = json!(format!("{}_all", db.slot_name()));
        let documents = capture_until_idle(&config, vec![binding("keyed", &["/id"])]).await;
        assert_eq!(documents.len(), 14, "{documents:?}");
        client.execute("SELECT pg_drop_replication_slot($1)", &[&format!("{}_all", db.slot_name())]).await.ok();
    });
}

/// The `min_backfill_xid` condition follows PostgreSQL's circular XID order, the Go
/// connector's comparison, also across a wraparound: checked on the server against a model
/// for XIDs around the minimum, 2^31 away from it, and around 2^32.
#[test]
fn min_backfill_xid_condition_is_the_circular_xid_order() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let db = TestDb::create("go_configs_xid_order").await;
        let client = db.superuser_client().await;
        // `b` follows `a` (or is `a`) when (b - a) mod 2^32 < 2^31.
        let follows = |b: u32, a: u32| b.wrapping_sub(a) < 1 << 31;
        for min in [3u32, 1_000, 1 << 31, u32::MAX - 4] {
            let condition = source_postgres::capture::backfill::min_xid_condition(min);
            let sql = format!(
                "SELECT {condition}, pg_snapshot_xmax(pg_current_snapshot())::text::bigint
                 FROM (SELECT $1::text::xid AS xmin) AS src"
            );
            for xmin in [
                0u32,
                1,
                2,
                3,
                min.wrapping_sub(1),
                min,
                min.wrapping_add(1),
                min.wrapping_add((1 << 31) - 1),
                min.wrapping_add(1 << 31),
                u32::MAX,
            ] {
                let row = client.query_one(&sql, &[&xmin.to_string()]).await.expect("evaluate the condition");
                let kept: bool = row.get(0);
                let xmax = (row.get::<_, i64>(1) as u64 & 0xFFFF_FFFF) as u32;
                let model = xmin >= 3 && follows(xmin, min) && follows(xmax, xmin);
                assert_eq!(kept, model, "xmin {xmin}, min_backfill_xid {min}, snapshot xmax {xmax}");
            }
        }
    });
}

/// The refusal happens wherever the configuration is used, not only in `validate`: `open`
/// refuses a setting it does not implement (IAM authentication, the one left) before it
/// connects (so nothing is written), `discover` refuses it too, and `discover` checks an SSH
/// tunnel's settings (it connects through the tunnel).
#[test]
fn open_and_discover_refuse_unsupported_settings_by_name() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = runtime.block_on(TestDb::create("go_configs_open_refuses"));
    runtime.block_on(db.execute("CREATE TABLE test.t (id int PRIMARY KEY); INSERT INTO test.t VALUES (1);"));
    let mut config = db.endpoint_config();
    config["credentials"] = json!({"auth_type": "AWSIAM", "aws_region": "us-east-1",
        "aws_role_arn": "arn:aws:iam::123456789012:role/flow"});
    config["advanced"]["watermarksTable"] = json!("public.never_created");
    let open = json!({"open": {"capture": {"name": "tests/capture", "config": config, "bindings": [binding("t", &["/id"])]}, "state": {}}});
    let output =
        run_connector(&[], &format!("{}\n{open}\n", json!({"spec": {}})), &[("SHUTDOWN_AFTER_POLLING", "yes")]);
    assert_eq!(output.exit_code, 1, "{}", output.stderr);
    let last = output.stderr.lines().rev().find(|l| !l.trim().is_empty()).expect("an error line");
    let line: Value = serde_json::from_str(last).expect("JSON");
    let message = line["msg"].as_str().expect("msg");
    assert!(
        message.starts_with("endpoint configuration field \"credentials.auth_type\" is not supported yet"),
        "{message}"
    );
    assert!(!output.stdout.contains("\"captured\""), "{}", output.stdout);
    let created: bool = runtime.block_on(async {
        let client = db.superuser_client().await;
        client
            .query_one("SELECT to_regclass('public.never_created') IS NOT NULL", &[])
            .await
            .expect("look for the watermarks table")
            .get(0)
    });
    assert!(!created, "a refused capture created its watermarks table");

    let discover = |config: &Value| {
        run_connector(&[], &format!("{}\n", json!({"discover": {"connectorType": "IMAGE", "config": config}})), &[])
    };
    let message = failure(&discover(&config), "discover with IAM authentication");
    assert!(
        message.starts_with("endpoint configuration field \"credentials.auth_type\" is not supported yet"),
        "{message}"
    );
    let mut tunnelled = db.endpoint_config();
    tunnelled["networkTunnel"] =
        json!({"sshForwarding": {"sshEndpoint": "ssh://user@bastion.example.com", "privateKey": "KEY"}});
    // Discovery goes through the tunnel too, so it checks the tunnel's settings.
    let message = failure(&discover(&tunnelled), "discover through a tunnel");
    assert!(
        message.starts_with("endpoint configuration field \"networkTunnel.sshForwarding.privateKey\" is invalid"),
        "{message}"
    );
}

/// Capture until every backfill is done, `wanted` ids were captured, and nothing arrives for
/// two seconds; the documents, the merged state and the connector's log lines.
async fn capture_until(config: &Value, state: &Value, wanted: &[i64]) -> (Vec<Value>, Value, Vec<String>) {
    let mut state = state.clone();
    let mut session = Session::open_capturing_stderr(config, vec![binding("t", &["/id"])], &state, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut documents: Vec<Value> = Vec::new();
    loop {
        match session.next(Duration::from_secs(2)).await {
            Event::Captured { doc } => documents.push(doc),
            Event::Checkpoint { patch } => {
                merge_patch(&mut state, &patch);
                session.acknowledge().await;
            }
            Event::SourcedSchema { .. } => {}
            Event::Timeout
                if backfills_done(&state)
                    && wanted.iter().all(|id| documents.iter().any(|d| d["id"].as_i64() == Some(*id))) =>
            {
                break
            }
            Event::Timeout if Instant::now() < deadline => {}
            other => panic!("unexpected event (state {state}): {other:?}"),
        }
    }
    let log = session.stderr_lines().await;
    session.kill().await;
    (documents, state, log)
}

/// `force_reset_cursor=<LSN>`, as the Go connector applies it: streaming resumes from that
/// position whatever the state's cursor says, so a transaction committed between the
/// state's cursor and the forced position is skipped (the flag's purpose: stepping over
/// WAL), one committed after it is captured, and the capture warns that the flag is set.
#[test]
fn force_reset_cursor_resumes_streaming_from_the_given_position() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let db = TestDb::create("go_configs_force_reset_cursor").await;
        db.execute("CREATE TABLE test.t (id int PRIMARY KEY, data text); INSERT INTO test.t VALUES (1, 'backfilled');")
            .await;
        let config = db.endpoint_config();
        let (first, state, _) = capture_until(&config, &json!({}), &[1]).await;
        assert_eq!(rows_of(&first), [("t".to_string(), 1, "backfilled".to_string())]);

        let admin = db.superuser_client().await;
        admin.batch_execute("INSERT INTO test.t VALUES (2, 'stepped over')").await.expect("insert 2");
        let forced: String =
            admin.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.expect("WAL position").get(0);
        admin.batch_execute("INSERT INTO test.t VALUES (3, 'after the forced position')").await.expect("insert 3");

        let mut flagged = config.clone();
        flagged["advanced"]["feature_flags"] = json!(format!("force_reset_cursor={forced}"));
        let (second, _, log) = capture_until(&flagged, &state, &[3]).await;
        assert_eq!(
            rows_of(&second),
            [("t".to_string(), 3, "after the forced position".to_string())],
            "only the change after {forced} is captured (state {state})"
        );
        assert!(
            log.iter().any(|l| l.contains("force_reset_cursor") && l.contains("\"level\":\"warn\"")),
            "no warning about the flag:\n{}",
            log.join("\n")
        );
    });
}
