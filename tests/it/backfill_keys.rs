//! Backfill keys: a key column whose type changes mid-backfill, key columns that may hold
//! NULL, and an `additional_backfill_filter` that is not one expression.
//!
//! The retype tests play the runtime as [`crate::faults_common::Runner`] does (documents are
//! committed only at checkpoints and reduced by key, the state patch is merged, every
//! checkpoint is acknowledged, a killed session's uncommitted documents are dropped, the
//! next session opens with the committed state), with one difference: the key changes type,
//! so documents are keyed by the key's text (`5` and `"5"` are the same row here).

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::driver::{backfills_done, binding, merge_patch, Event, Session};
use crate::faults_common::{Admin, Conn};
use crate::harness::{cluster, run_connector, TestDb};

/// What the runtime has committed.
#[derive(Default)]
struct Store {
    state: Value,
    /// Each key's reduced document (without `_meta`), by the key's text.
    rows: BTreeMap<String, Map<String, Value>>,
    /// Documents since the last checkpoint.
    pending: Vec<Value>,
    /// Backfill documents committed, per session (the last entry is the current session's).
    backfill_documents: Vec<u64>,
}

/// A key value as text: a number and its text form are the same key.
fn key_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Store {
    fn new() -> Store {
        Store { state: json!({}), ..Default::default() }
    }

    fn commit(&mut self, patch: &Value) {
        for doc in std::mem::take(&mut self.pending) {
            let Value::Object(mut doc) = doc else { panic!("a document is not an object: {doc}") };
            let meta = doc.remove("_meta").unwrap_or(Value::Null);
            let key = key_text(doc.get("id").unwrap_or_else(|| panic!("a document without /id: {doc:?}")));
            if meta["source"]["snapshot"] == true {
                *self.backfill_documents.last_mut().expect("a session") += 1;
            }
            if meta["op"] == "d" {
                self.rows.remove(&key);
            } else {
                self.rows.entry(key).or_default().extend(doc);
            }
        }
        merge_patch(&mut self.state, patch);
    }

    /// Rows the committed state records as backfilled for binding `table`.
    fn backfilled(&self, table: &str) -> u64 {
        self.state["bindingStateV1"][format!("test%2F{table}")]["backfilled"].as_u64().unwrap_or(0)
    }
}

/// Drive `session` until `stop` holds after a checkpoint (`None`), or the connector exits.
async fn drive(
    session: &mut Session,
    store: &mut Store,
    within: Duration,
    mut stop: impl FnMut(&Store) -> bool,
) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        match session.next(deadline.saturating_duration_since(Instant::now())).await {
            Event::SourcedSchema { .. } => {}
            Event::Captured { doc } => store.pending.push(doc),
            Event::Checkpoint { patch } => {
                store.commit(&patch);
                session.acknowledge().await;
                if stop(store) {
                    return None;
                }
            }
            Event::Exited(status) => {
                // Never committed: the runtime drops them.
                store.pending.clear();
                return Some(status);
            }
            Event::Timeout => panic!("the session neither stopped nor ended within {within:?} (state {})", store.state),
        }
    }
}

/// Open a session from the committed state.
async fn open(db: &TestDb, config: &Value, table: &str, store: &mut Store, env: &[(&str, &str)]) -> Session {
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));
    admin.wait_slot_released(&db.slot_name(), Duration::from_secs(30)).await;
    store.backfill_documents.push(0);
    Session::open_capturing_stderr(config, vec![binding(table, &["/id"])], &store.state, env).await
}

/// Run a session to its clean end (`SHUTDOWN_AFTER_POLLING`); its stderr lines.
async fn finish(db: &TestDb, config: &Value, table: &str, store: &mut Store) -> Vec<String> {
    let mut session = open(db, config, table, store, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    let status = drive(&mut session, store, Duration::from_secs(180), |_| false).await.expect("exited");
    let stderr = session.stderr_lines().await;
    assert!(status.success(), "the final session failed ({status}):\n{}", stderr.join("\n"));
    stderr
}

/// The table's rows as `id::text -> v`, and the committed documents the same way.
async fn compare(db: &TestDb, table: &str, store: &Store, context: &str) {
    let client = db.superuser_client().await;
    let rows = client.query(&format!("SELECT id::text, v FROM test.{table}"), &[]).await.expect("read the table");
    let expected: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let captured: BTreeMap<String, String> = store
        .rows
        .iter()
        .map(|(k, doc)| (k.clone(), doc.get("v").and_then(Value::as_str).unwrap_or_default().to_string()))
        .collect();
    let missing: Vec<&String> = expected.keys().filter(|k| !captured.contains_key(*k)).collect();
    let extra: Vec<&String> = captured.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{context}: captured rows differ from the table: {} of {} rows missing (first {:?}), {} extra (first {:?})",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
    let differing: Vec<&String> = expected.keys().filter(|k| expected[*k] != captured[*k]).take(5).collect();
    assert!(differing.is_empty(), "{context}: values differ for keys {differing:?}");
    assert!(backfills_done(&store.state), "{context}: the backfill is not done: {}", store.state);
}

/// Whether the connector warned that `table`'s backfill restarts.
fn warned_restart(stderr: &[String], table: &str) -> bool {
    stderr.iter().any(|line| {
        let Ok(line) = serde_json::from_str::<Value>(line) else { return false };
        let text = line.to_string();
        line["level"] == "warn" && text.contains("restarts from the start") && text.contains(&format!("test.{table}"))
    })
}

/// One retype scenario: the table, and the `ALTER`s run between sessions (one per kill).
struct Retype {
    table: &'static str,
    create: &'static str,
    /// The key of row `g`.
    ids: &'static str,
    alters: &'static [&'static str],
    /// Whether the key order changes (the backfill must restart) or not (it continues).
    reorders: bool,
    /// Resume from a state without the recorded key types, as the Go connector or an earlier
    /// version writes it.
    old_state: bool,
}

const ROWS: i64 = 2_000;

/// The scenarios to run: all, or the one `RETYPE_TABLE` names (to replay one).
fn selected(retype: &Retype) -> bool {
    std::env::var("RETYPE_TABLE").map_or(true, |table| table == retype.table)
}

const RETYPES: &[Retype] = &[
    Retype {
        table: "int_to_text",
        create: "CREATE TABLE test.int_to_text (id integer PRIMARY KEY, v text NOT NULL)",
        ids: "g",
        alters: &["ALTER TABLE test.int_to_text ALTER COLUMN id TYPE text"],
        reorders: true,
        old_state: false,
    },
    Retype {
        table: "int_to_text_old_state",
        create: "CREATE TABLE test.int_to_text_old_state (id integer PRIMARY KEY, v text NOT NULL)",
        ids: "g",
        alters: &["ALTER TABLE test.int_to_text_old_state ALTER COLUMN id TYPE text"],
        reorders: true,
        old_state: true,
    },
    Retype {
        table: "text_to_int",
        create: "CREATE TABLE test.text_to_int (id text PRIMARY KEY, v text NOT NULL)",
        ids: "g::text",
        alters: &["ALTER TABLE test.text_to_int ALTER COLUMN id TYPE integer USING id::integer"],
        reorders: true,
        old_state: false,
    },
    // The same type in another collation: mixed-case keys order differently under ICU's
    // root collation ("a" < "B" < "b") and "C" ("B" < "a" < "b").
    Retype {
        table: "collation",
        create: "CREATE TABLE test.collation (id text COLLATE \"und-x-icu\" PRIMARY KEY, v text NOT NULL)",
        ids: "CASE WHEN g % 2 = 0 THEN upper(md5(g::text)) ELSE md5(g::text) END",
        alters: &["ALTER TABLE test.collation ALTER COLUMN id TYPE text COLLATE \"C\""],
        reorders: true,
        old_state: false,
    },
    // Not the key: the rewrites alone.
    Retype {
        table: "other_column",
        create: "CREATE TABLE test.other_column (id integer PRIMARY KEY, v text NOT NULL, n integer)",
        ids: "g",
        alters: &[
            "ALTER TABLE test.other_column ALTER COLUMN n TYPE bigint",
            "ALTER TABLE test.other_column ALTER COLUMN n TYPE integer",
            "ALTER TABLE test.other_column ALTER COLUMN n TYPE bigint",
        ],
        reorders: false,
        old_state: false,
    },
    Retype {
        table: "int_bigint_numeric",
        create: "CREATE TABLE test.int_bigint_numeric (id integer PRIMARY KEY, v text NOT NULL)",
        ids: "g",
        alters: &[
            "ALTER TABLE test.int_bigint_numeric ALTER COLUMN id TYPE bigint",
            "ALTER TABLE test.int_bigint_numeric ALTER COLUMN id TYPE numeric",
        ],
        reorders: false,
        old_state: false,
    },
    Retype {
        table: "int_bigint_text",
        create: "CREATE TABLE test.int_bigint_text (id integer PRIMARY KEY, v text NOT NULL)",
        ids: "g",
        alters: &[
            "ALTER TABLE test.int_bigint_text ALTER COLUMN id TYPE bigint",
            "ALTER TABLE test.int_bigint_text ALTER COLUMN id TYPE text",
        ],
        reorders: true,
        old_state: false,
    },
];

/// Create the scenario's table with [`ROWS`] rows.
///
/// Values are padded to 4 KB (compressed on disk): the connector's output pipe, which it grows
/// to 1 MiB, then holds about 250 documents, so a running connector is never more than that
/// ahead of what the test has read, and an ALTER at "row N" lands mid-backfill.
async fn create_table(db: &TestDb, retype: &Retype) {
    db.execute(&format!(
        "{}; INSERT INTO test.{} SELECT {}, 'v' || g || repeat('-', 4000) FROM generate_series(1, {ROWS}) g",
        retype.create, retype.table, retype.ids
    ))
    .await;
}

/// Each scenario: sessions are killed at a random point of the backfill (a committed state
/// mid-backfill), the key column is retyped while no session runs, and the next session
/// resumes from the committed state; after a last clean run the collection must equal the
/// table. A reordering retype restarts the table's backfill with a warning naming it; a
/// widening one continues without re-reading the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_retyped_between_sessions_mid_backfill_loses_no_row() {
    let seed: u64 = std::env::var("RETYPE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for retype in RETYPES.iter().filter(|r| selected(r)) {
        let context = format!("{} (seed {seed})", retype.table);
        let db = TestDb::create(&format!("retype_{}", retype.table)).await;
        create_table(&db, retype).await;
        let mut config = db.endpoint_config();
        config["advanced"]["backfill_chunk_size"] = json!(100);
        let mut store = Store::new();
        let mut restarted = false;
        let mut read_before_last_alter = 0;
        for alter in retype.alters {
            // Kill the session once the committed state has passed a random point of the
            // backfill (each phase goes a little further).
            let step = 1_500 / retype.alters.len() as u64;
            let target = store.backfilled(retype.table) + rng.gen_range(100..=step);
            let mut session = open(&db, &config, retype.table, &mut store, &[]).await;
            let ended =
                drive(&mut session, &mut store, Duration::from_secs(120), |s| s.backfilled(retype.table) >= target)
                    .await;
            assert!(ended.is_none(), "{context}: the session ended early: {:?}", session.stderr_lines().await);
            restarted |= warned_restart(&session.stderr_lines().await, retype.table);
            session.kill().await;
            assert!(
                !backfills_done(&store.state),
                "{context}: the committed state must be mid-backfill: {}",
                store.state
            );
            read_before_last_alter = store.backfilled(retype.table);
            db.execute(alter).await;
            if retype.old_state {
                let key = format!("test%2F{}", retype.table);
                // As the Go connector (or a version before key types were recorded) left it.
                let binding = store.state["bindingStateV1"][&key].as_object_mut().expect("binding state");
                let metadata = binding.get_mut("metadata").and_then(Value::as_object_mut).expect("binding metadata");
                assert!(metadata.remove("key_types").is_some(), "{context}: no key types recorded: {metadata:?}");
            }
        }
        let stderr = finish(&db, &config, retype.table, &mut store).await;
        restarted |= warned_restart(&stderr, retype.table);
        compare(&db, retype.table, &store, &context).await;
        let last = *store.backfill_documents.last().expect("a session");
        if retype.reorders {
            assert!(restarted, "{context}: no warning that the backfill restarts");
            assert!(last >= ROWS as u64, "{context}: the backfill did not restart: {last} rows read after the retype");
        } else {
            assert!(!restarted, "{context}: a widening retype restarted the backfill");
            assert!(
                last <= (ROWS as u64) - read_before_last_alter + 100,
                "{context}: the backfill read {last} rows after the retype, it should have continued after {read_before_last_alter}"
            );
        }
        eprintln!("{context}: {:?} backfill documents per session", store.backfill_documents);
    }
}

/// The same while the capture runs: the key column (or another one) is retyped between two
/// chunks of a running backfill (the connector is not restarted), at a random point. The
/// ALTER rewrites the table, and a chunk query queued behind its lock, with a snapshot from
/// before the rewrite, finds the table empty: that chunk must be read again, not end the
/// backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_retyped_under_a_running_backfill_loses_no_row() {
    let seed: u64 = std::env::var("RETYPE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for retype in RETYPES.iter().filter(|r| selected(r) && !r.old_state && r.table != "int_bigint_text") {
        let context = format!("{} while running (seed {seed})", retype.table);
        let db = TestDb::create(&format!("retype_live_{}", retype.table)).await;
        create_table(&db, retype).await;
        let mut config = db.endpoint_config();
        // Small chunks and wide rows (see `create_table`), so that the connector (which runs
        // ahead of the checkpoints this test has read by what the output pipe holds) is still
        // backfilling when the ALTER runs.
        config["advanced"]["backfill_chunk_size"] = json!(10);
        let mut store = Store::new();
        let mut session = open(&db, &config, retype.table, &mut store, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
        let admin = db.superuser_client().await;
        for alter in retype.alters {
            let target = store.backfilled(retype.table) + rng.gen_range(50..=400);
            let ended =
                drive(&mut session, &mut store, Duration::from_secs(120), |s| s.backfilled(retype.table) >= target)
                    .await;
            assert!(
                ended.is_none(),
                "{context}: the session ended before the backfill reached row {target}: it read {} of {ROWS} rows ({:?})",
                store.backfilled(retype.table),
                session.stderr_lines().await
            );
            admin.batch_execute(alter).await.expect("ALTER");
        }
        let status = drive(&mut session, &mut store, Duration::from_secs(180), |_| false).await.expect("exited");
        let stderr = session.stderr_lines().await;
        assert!(status.success(), "{context}: the session failed ({status}):\n{}", stderr.join("\n"));
        compare(&db, retype.table, &store, &context).await;
        assert_eq!(warned_restart(&stderr, retype.table), retype.reorders, "{context}: restart warning");
        eprintln!("{context}: {:?} backfill documents", store.backfill_documents);
    }
}

/// The `msg` of a failed run's last stderr line (which must be an error line), with the
/// stdout and stderr in the failure message otherwise.
fn failure_text(output: &crate::harness::ConnectorOutput) -> String {
    assert_eq!(
        output.exit_code, 1,
        "expected a failure\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.stdout, output.stderr
    );
    let last = output.stderr.lines().rev().find(|l| !l.trim().is_empty()).expect("an error line");
    let line: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {last}"));
    assert_eq!(line["level"], "error", "{last}");
    line["msg"].as_str().expect("msg").to_string()
}

fn validate_request(config: &Value, resource: Value, key: &[&str]) -> String {
    let binding = json!({"resourceConfig": resource, "collection": {"name": "tests/t", "key": key}, "backfill": 0});
    let request = json!({"validate": {"name": "tests/capture", "connectorType": "IMAGE", "config": config, "bindings": [binding]}});
    format!("{request}\n")
}

/// `spec` then `open` with an empty state; the input then ends, which ends a running capture.
fn open_request(config: &Value, resource: Value, key: &[&str]) -> String {
    let mut binding = binding("t", key);
    binding["resourceConfig"] = resource;
    let open =
        json!({"open": {"capture": {"name": "tests/capture", "config": config, "bindings": [binding]}, "state": {}}});
    format!("{}\n{open}\n", json!({"spec": {}}))
}

/// A backfill key that may hold NULL (from a `primary_key` override or from the collection
/// key) is refused by validate and by open, naming the column; before, row-value paging
/// skipped the NULL keys and ended the backfill early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nullable_backfill_keys_are_refused_naming_the_column() {
    let db = TestDb::create("nullable_backfill_keys").await;
    db.execute(
        // REPLICA IDENTITY FULL, so that a collection key other than the primary key is
        // refused for its nullability alone (the identity would leave it out otherwise).
        "CREATE TABLE test.t (id integer PRIMARY KEY, maybe integer, v text NOT NULL);
         ALTER TABLE test.t REPLICA IDENTITY FULL;
         INSERT INTO test.t SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE g END, 'v' || g FROM generate_series(1, 300) g;",
    )
    .await;
    let mut config = db.endpoint_config();
    config["advanced"]["backfill_chunk_size"] = json!(50);
    let plain = json!({"namespace": "test", "stream": "t"});
    let mut override_key = plain.clone();
    override_key["primary_key"] = json!(["maybe"]);
    for (what, resource, key) in
        [("a primary_key override", override_key, ["/id"]), ("the collection key", plain.clone(), ["/maybe"])]
    {
        let validated = run_connector(&[], &validate_request(&config, resource.clone(), &key), &[]);
        let message = failure_text(&validated);
        assert!(
            message.contains("backfill key column \"maybe\" of table \"test.t\" is nullable")
                && message.contains("SET NOT NULL"),
            "validate with {what}: {message}"
        );
        let opened = run_connector(&[], &open_request(&config, resource, &key), &[("SHUTDOWN_AFTER_POLLING", "yes")]);
        let message = failure_text(&opened);
        assert!(
            message.contains("backfill key column \"maybe\" of table \"test.t\" is nullable"),
            "open with {what}: {message}"
        );
        assert!(!opened.stdout.contains("\"captured\""), "open with {what} captured documents: {}", opened.stdout);
    }
    // The table's own key, and a NOT NULL override, are fine.
    let mut not_null = plain.clone();
    not_null["primary_key"] = json!(["id"]);
    for resource in [plain, not_null] {
        let validated = run_connector(&[], &validate_request(&config, resource, &["/id"]), &[]);
        assert_eq!(validated.exit_code, 0, "{}", validated.stderr);
    }
}

/// An `additional_backfill_filter` must be one boolean expression: `true) OR (true` (which
/// escaped its parentheses, so the capture re-read the table forever) is refused at
/// validate and at open; a filter ending in a `--` comment (which used to swallow the rest
/// of the chunk query) backfills exactly the rows it selects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_filters_must_be_one_expression() {
    let db = TestDb::create("backfill_filter_one_expression").await;
    db.execute(
        "CREATE TABLE test.t (id integer PRIMARY KEY, v text NOT NULL);
         INSERT INTO test.t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let mut config = db.endpoint_config();
    config["advanced"]["backfill_chunk_size"] = json!(10);
    let with_filter = |filter: &str| json!({"namespace": "test", "stream": "t", "mode": "Normal", "advanced": {"additional_backfill_filter": filter}});
    for filter in ["true) OR (true", "id > 3; SELECT 1", "id > 3 ORDER BY 1"] {
        let validated = run_connector(&[], &validate_request(&config, with_filter(filter), &["/id"]), &[]);
        let message = failure_text(&validated);
        assert!(
            message.contains("\"advanced.additional_backfill_filter\" of table \"test.t\" must be exactly one SQL boolean expression"),
            "validate with {filter:?}: {message}"
        );
        let opened = run_connector(
            &[],
            &open_request(&config, with_filter(filter), &["/id"]),
            &[("SHUTDOWN_AFTER_POLLING", "yes")],
        );
        let message = failure_text(&opened);
        assert!(message.contains("must be exactly one SQL boolean expression"), "open with {filter:?}: {message}");
        assert!(!opened.stdout.contains("\"captured\""), "open with {filter:?} captured documents");
    }

    let filter = "id % 2 = 0 -- even rows only";
    let validated = run_connector(&[], &validate_request(&config, with_filter(filter), &["/id"]), &[]);
    assert_eq!(validated.exit_code, 0, "{}", validated.stderr);
    let mut store = Store::new();
    store.backfill_documents.push(0);
    let bindings = vec![json!({
        "resourceConfig": with_filter(filter),
        "resourcePath": ["test", "t"],
        "collection": {"name": "tests/t", "key": ["/id"]},
        "stateKey": "test%2Ft",
    })];
    let mut session =
        Session::open_capturing_stderr(&config, bindings, &store.state, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    let status = drive(&mut session, &mut store, Duration::from_secs(120), |_| false).await.expect("exited");
    assert!(status.success(), "the filtered capture failed: {:?}", session.stderr_lines().await);
    let mut ids: Vec<i64> = store.rows.keys().map(|k| k.parse().expect("an integer id")).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=50).map(|i| i * 2).collect::<Vec<i64>>(), "the filtered backfill");
}
