//! Streaming keys: every document carries its collection key, and the reduced collection
//! follows the table when keys are stored out of line (TOAST, also under a precise
//! backfill that filters changes by key), when a key changes while
//! other columns are TOASTed and unchanged, when the replica identity does not carry the
//! key, and when the lookup of a partition's root fails.
//!
//! The driver here plays the runtime as [`crate::faults_common::Runner`] does (documents
//! are committed at checkpoints and reduced by key with `merge`; `op: d` removes the key),
//! but for keys of any type: a document's key is the JSON of its key properties.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::driver::{backfills_done, binding, merge_patch, Event, Session};
use crate::faults_common::{error_message, short, Admin, Conn};
use crate::harness::{cluster, run_connector, TestDb, CAPTURE_USER};

/// The collections the runtime would hold, reduced with `merge`.
struct Collection {
    /// The collection key's properties (top-level columns in these tests).
    key: Vec<String>,
    /// Each key's document (without `_meta`), by table and the JSON of the key's values.
    docs: BTreeMap<(String, String), Map<String, Value>>,
    /// Committed documents that lacked a key property: the runtime cannot place them.
    keyless: Vec<String>,
    state: Value,
}

impl Collection {
    fn new(key: &[&str]) -> Collection {
        Collection {
            key: key.iter().map(|k| k.to_string()).collect(),
            docs: BTreeMap::new(),
            keyless: Vec::new(),
            state: json!({}),
        }
    }

    /// The key of a document (or table row), if it has every key property.
    fn key_of(&self, doc: &Map<String, Value>) -> Option<String> {
        let values: Option<Vec<&Value>> = self.key.iter().map(|k| doc.get(k)).collect();
        values.map(|v| serde_json::to_string(&v).expect("JSON"))
    }

    fn commit(&mut self, documents: Vec<Value>, patch: &Value) {
        for doc in documents {
            let Value::Object(mut doc) = doc else { panic!("a document is not an object: {doc}") };
            let meta = doc.remove("_meta").unwrap_or(Value::Null);
            let table = meta["source"]["table"].as_str().expect("_meta.source.table").to_string();
            let Some(key) = self.key_of(&doc) else {
                self.keyless.push(format!("{table}: {} (op {})", short(&doc), meta["op"]));
                continue;
            };
            if meta["op"] == "d" {
                self.docs.remove(&(table, key));
            } else {
                self.docs.entry((table, key)).or_default().extend(doc);
            }
        }
        merge_patch(&mut self.state, patch);
    }

    /// The documents of table `test.<table>`, by key.
    fn of(&self, table: &str) -> BTreeMap<String, Map<String, Value>> {
        self.docs.iter().filter(|((t, _), _)| t == table).map(|((_, k), doc)| (k.clone(), doc.clone())).collect()
    }

    /// The collection of `test.<table>` equals `rows` (by key), and no document ever lacked
    /// its key.
    fn assert_matches(&self, table: &str, rows: &BTreeMap<String, Map<String, Value>>, context: &str) {
        assert!(
            self.keyless.is_empty(),
            "{context}: {} documents without their key {:?} were captured, e.g. {}",
            self.keyless.len(),
            self.key,
            self.keyless[0]
        );
        let docs = self.of(table);
        let missing: Vec<String> = rows.keys().filter(|k| !docs.contains_key(*k)).map(|k| cut(k)).collect();
        let extra: Vec<String> = docs.keys().filter(|k| !rows.contains_key(*k)).map(|k| cut(k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{context}: the keys of {table}'s documents differ from its rows': missing {missing:?}, extra {extra:?} ({} documents, {} rows)",
            docs.len(),
            rows.len()
        );
        let differing: Vec<String> = rows
            .iter()
            .filter(|(k, row)| docs.get(*k) != Some(row))
            .map(|(k, row)| format!("{}: {}", cut(k), difference(&docs[k], row)))
            .collect();
        assert!(
            differing.is_empty(),
            "{context}: documents of {table} differ from their rows:\n{}",
            differing.join("\n")
        );
    }
}

/// The columns on which a document differs from its row, for messages: long values cut.
fn difference(doc: &Map<String, Value>, row: &Map<String, Value>) -> String {
    let value = |v: Option<&Value>| match v {
        None => "(absent)".to_string(),
        Some(v) => cut(&v.to_string()),
    };
    let mut columns: Vec<&String> = doc.keys().chain(row.keys()).collect();
    columns.sort();
    columns.dedup();
    columns
        .into_iter()
        .filter(|c| doc.get(*c) != row.get(*c))
        .map(|c| format!("{c}: collection {}, table {}", value(doc.get(c)), value(row.get(c))))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A key for messages: long text keys are cut.
fn cut(key: &str) -> String {
    if key.len() > 40 {
        format!("{}…({} bytes)", key.chars().take(20).collect::<String>(), key.len())
    } else {
        key.to_string()
    }
}

/// Every row of `test.<table>` as its JSON document, by the collection's key.
async fn table_rows(client: &Client, table: &str, collection: &Collection) -> BTreeMap<String, Map<String, Value>> {
    let documents = crate::faults_common::table_documents(client, &format!("test.{table}")).await;
    documents.into_iter().map(|doc| (collection.key_of(&doc).expect("a row has its key"), doc)).collect()
}

/// How a session ended.
#[derive(Debug)]
enum End {
    /// Exit status 0.
    Completed,
    /// Another exit, with the message of its last error line.
    Failed(String),
}

/// Drive `session` until `stop` holds (then `None`) or it exits, committing documents at
/// checkpoints into `collection`. Panics if neither happens within `within`.
async fn drive(
    session: &mut Session,
    collection: &mut Collection,
    within: Duration,
    mut stop: impl FnMut(&Collection) -> bool,
) -> Option<End> {
    let deadline = Instant::now() + within;
    let mut pending = Vec::new();
    loop {
        if stop(collection) {
            return None;
        }
        match session.next(deadline.saturating_duration_since(Instant::now())).await {
            Event::SourcedSchema { .. } => {}
            Event::Captured { doc } => pending.push(doc),
            Event::Checkpoint { patch } => {
                collection.commit(std::mem::take(&mut pending), &patch);
                session.acknowledge().await;
            }
            Event::Exited(status) if status.success() => {
                assert!(pending.is_empty(), "documents after the last checkpoint of a session that ended cleanly");
                return Some(End::Completed);
            }
            Event::Exited(status) => {
                let stderr = session.stderr_lines().await;
                return Some(End::Failed(error_message(&stderr).unwrap_or_else(|| format!("exit {status}"))));
            }
            Event::Timeout => panic!("the session neither stopped nor exited within {within:?}"),
        }
    }
}

/// Wait until no walsender holds the test's slot (a session that just ended may still).
async fn slot_released(db: &TestDb) {
    let conn = Conn::superuser(cluster().await, &db.name);
    Admin::new(conn).wait_slot_released(&db.slot_name(), Duration::from_secs(30)).await;
}

/// One session from the committed state that finishes its backfills, catches up with the
/// stream and exits (`SHUTDOWN_AFTER_POLLING`), as a final run of the runtime would.
async fn run_to_idle(db: &TestDb, config: &Value, bindings: &[Value], collection: &mut Collection) -> End {
    slot_released(db).await;
    let state = collection.state.clone();
    let mut session =
        Session::open_capturing_stderr(config, bindings.to_vec(), &state, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    drive(&mut session, collection, Duration::from_secs(120), |_| false).await.expect("no stop condition")
}

async fn run_to_idle_ok(db: &TestDb, config: &Value, bindings: &[Value], collection: &mut Collection, what: &str) {
    match run_to_idle(db, config, bindings, collection).await {
        End::Completed => {}
        End::Failed(error) => panic!("{what}: the session failed: {error}"),
    }
}

/// Item 7: updates that leave an out-of-line (TOASTed) text key unchanged. The new row only
/// marks the key as unchanged; the server sends the key in the update's old key, and the
/// document must take it from there, not mistake the update for a key change (which
/// deleted the row's document and created one without its key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_that_leave_an_out_of_line_key_unchanged_keep_their_rows() {
    let db = TestDb::create("stream_keys_toasted_key").await;
    // Keys of 2,400 bytes under EXTERNAL storage: the heap stores them out of line (the
    // TOAST threshold is about 2 kB) while the btree, within its 2,704-byte limit, holds
    // them whole.
    db.execute(
        "CREATE TABLE test.toasted_keys (id text PRIMARY KEY, v int NOT NULL);
         ALTER TABLE test.toasted_keys ALTER COLUMN id SET STORAGE EXTERNAL;
         INSERT INTO test.toasted_keys SELECT repeat(md5(g::text), 75), g FROM generate_series(1, 5) g;",
    )
    .await;
    let admin = db.superuser_client().await;
    let toasted: bool = admin
        .query_one(
            "SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE oid = 'test.toasted_keys'::regclass",
            &[],
        )
        .await
        .expect("TOAST size")
        .get(0);
    assert!(toasted, "the keys are stored out of line");
    let config = db.endpoint_config();
    let bindings = [binding("toasted_keys", &["/id"])];
    let mut collection = Collection::new(&["id"]);
    run_to_idle_ok(&db, &config, &bindings, &mut collection, "the backfill").await;
    collection.assert_matches(
        "toasted_keys",
        &table_rows(&admin, "toasted_keys", &collection).await,
        "after the backfill",
    );

    db.execute(
        "UPDATE test.toasted_keys SET v = v + 10;
         UPDATE test.toasted_keys SET v = v + 10 WHERE v = 12;
         DELETE FROM test.toasted_keys WHERE v = 13;
         INSERT INTO test.toasted_keys VALUES (repeat(md5('new'), 75), 6);
         UPDATE test.toasted_keys SET v = 60 WHERE v = 6;
         UPDATE test.toasted_keys SET id = repeat(md5('moved'), 75) WHERE v = 14;",
    )
    .await;
    run_to_idle_ok(&db, &config, &bindings, &mut collection, "streaming the updates").await;
    collection.assert_matches(
        "toasted_keys",
        &table_rows(&admin, "toasted_keys", &collection).await,
        "after the updates",
    );
}

/// Item 9: a primary-key change under `REPLICA IDENTITY DEFAULT` with TOASTed columns left
/// unchanged. The new key's document cannot be merged onto the old key's, so the values the
/// server did not resend are read from the table; when the row is gone by then, the stream's
/// delete follows; when it changed again since, the later change follows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_keeps_the_unchanged_toast_columns_of_its_row() {
    let db = TestDb::create("stream_keys_key_change_toast").await;
    db.execute(
        "CREATE TABLE test.moving (id int PRIMARY KEY, big text, tags text[], v int NOT NULL);
         ALTER TABLE test.moving ALTER COLUMN big SET STORAGE EXTERNAL, ALTER COLUMN tags SET STORAGE EXTERNAL;
         INSERT INTO test.moving
           SELECT g, repeat(md5(g::text), 200), ARRAY(SELECT md5(g::text || i::text) FROM generate_series(1, 100) i), g
           FROM generate_series(1, 8) g;",
    )
    .await;
    let admin = db.superuser_client().await;
    let config = db.endpoint_config();
    let bindings = [binding("moving", &["/id"])];
    let mut collection = Collection::new(&["id"]);
    run_to_idle_ok(&db, &config, &bindings, &mut collection, "the backfill").await;

    db.execute(
        // Plain key changes, two rows in one statement.
        "UPDATE test.moving SET id = id + 100 WHERE id IN (1, 2);
         -- A key change, then another key change and a later update of a TOASTed column:
         -- the first lookup may read values newer than its change; what follows fixes them.
         UPDATE test.moving SET id = 30 WHERE id = 3;
         UPDATE test.moving SET id = 31 WHERE id = 30;
         UPDATE test.moving SET big = 'small now' WHERE id = 31;
         -- A key change whose row is gone before it can be read.
         BEGIN;
         UPDATE test.moving SET id = 40 WHERE id = 4;
         DELETE FROM test.moving WHERE id = 40;
         COMMIT;
         -- A key change, then an update that leaves the TOASTed columns unchanged again.
         UPDATE test.moving SET id = 50 WHERE id = 5;
         UPDATE test.moving SET v = v + 1 WHERE id = 50;
         -- A key change that also rewrites one TOASTed column (the other is unchanged).
         UPDATE test.moving SET id = 60, tags = '{one}' WHERE id = 6;
         -- A NULL among the unchanged columns.
         UPDATE test.moving SET tags = NULL WHERE id = 7;
         UPDATE test.moving SET id = 70 WHERE id = 7;",
    )
    .await;
    run_to_idle_ok(&db, &config, &bindings, &mut collection, "streaming the key changes").await;
    collection.assert_matches("moving", &table_rows(&admin, "moving", &collection).await, "after the key changes");
}

/// Found by the differential harness: a precise backfill of a table with an out-of-line text
/// key under `REPLICA IDENTITY FULL`. An update that leaves the key unchanged marks it so in
/// the new row; the filter that drops changes to rows the backfill has not read yet must take
/// the key from the old row, as the row's later delete carries it. It took the update for
/// one whose key cannot be computed and emitted it, then dropped the delete: the collection
/// kept rows the table no longer had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precise_backfill_filters_updates_of_unread_rows_with_out_of_line_keys() {
    let db = TestDb::create("stream_keys_precise_toasted_key").await;
    db.execute(
        "CREATE TABLE test.toasted_full (id text PRIMARY KEY, v int NOT NULL);
         ALTER TABLE test.toasted_full ALTER COLUMN id SET STORAGE EXTERNAL;
         ALTER TABLE test.toasted_full REPLICA IDENTITY FULL;
         INSERT INTO test.toasted_full SELECT lpad(g::text, 4, '0') || repeat(md5(g::text), 75), g
           FROM generate_series(1, 60) g;",
    )
    .await;
    let admin = db.superuser_client().await;
    let mut config = db.endpoint_config();
    config["advanced"]["backfill_chunk_size"] = json!(5);
    let mut table = binding("toasted_full", &["/id"]);
    table["resourceConfig"]["mode"] = json!("Precise");
    let bindings = [table];
    let mut collection = Collection::new(&["id"]);

    // A first session reads a few chunks and is stopped mid-backfill.
    let mut session = Session::open(&config, bindings.to_vec(), &json!({}), &[]).await;
    let partway = |c: &Collection| {
        let state = &c.state["bindingStateV1"]["test%2Ftoasted_full"];
        state["mode"] == "Backfill" && state["backfilled"].as_u64().is_some_and(|n| (10..40).contains(&n))
    };
    let end = drive(&mut session, &mut collection, Duration::from_secs(60), partway).await;
    assert!(end.is_none(), "the first session ended before its backfill was partway: {end:?}");
    session.kill().await;

    // Every row changes without its key, and the last rows (not read yet) are deleted: the
    // next session meets these changes in the stream while the backfill is still short of them.
    db.execute(
        "UPDATE test.toasted_full SET v = v + 1000;
         DELETE FROM test.toasted_full WHERE v > 1050;",
    )
    .await;
    run_to_idle_ok(&db, &config, &bindings, &mut collection, "resuming the backfill").await;
    collection.assert_matches(
        "toasted_full",
        &table_rows(&admin, "toasted_full", &collection).await,
        "after the backfill",
    );
}

/// A `validate` request for `tables`, each keyed by `/id`.
fn validate_line(config: &Value, tables: &[&str]) -> String {
    let bindings: Vec<Value> = tables
        .iter()
        .map(|table| {
            json!({
                "resourceConfig": {"namespace": "test", "stream": table},
                "collection": {"name": format!("tests/{table}"), "key": ["/id"]},
                "backfill": 0
            })
        })
        .collect();
    json!({"validate": {"name": "tests/capture", "connectorType": "IMAGE", "config": config, "bindings": bindings}})
        .to_string()
}

/// Item 8: `REPLICA IDENTITY USING INDEX` on columns other than the collection key. Deletes
/// (and changes of the index's columns) then arrive without the key: validation refuses the
/// table with the fix, the capture refuses to start, and a capture that skips its
/// prerequisites fails at the first such change, naming table, index and fix, rather than
/// emit a delete without its key. Once the identity is fixed and the binding re-backfilled,
/// the capture gets past the changes already written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_identity_index_without_the_collection_key_is_refused() {
    let db = TestDb::create("stream_keys_identity_index").await;
    db.execute(
        "CREATE TABLE test.coded (id int PRIMARY KEY, code text NOT NULL, v int NOT NULL);
         CREATE UNIQUE INDEX coded_code ON test.coded (code);
         ALTER TABLE test.coded REPLICA IDENTITY USING INDEX coded_code;
         INSERT INTO test.coded SELECT g, 'c' || g, g FROM generate_series(1, 5) g;
         CREATE TABLE test.other (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO test.other VALUES (1, 1);",
    )
    .await;
    let admin = db.superuser_client().await;
    let config = db.endpoint_config();
    let expected = "table \"test.coded\" has REPLICA IDENTITY USING INDEX \"coded_code\" (columns \"code\"), which leaves out collection key column \"id\"";

    // Validation refuses it, with the statement that fixes it.
    let output = run_connector(&[], &format!("{}\n", validate_line(&config, &["coded", "other"])), &[]);
    let error = error_message(&output.stderr.lines().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("validation did not fail (exit {}):\n{}", output.exit_code, output.stdout));
    assert_eq!(output.exit_code, 1);
    assert!(error.contains(expected), "{error}");
    assert!(error.contains("ALTER TABLE \"test\".\"coded\" REPLICA IDENTITY FULL;"), "{error}");

    // So does the capture, before it opens.
    let bindings = vec![binding("coded", &["/id"]), binding("other", &["/id"])];
    let open =
        json!({"open": {"capture": {"name": "tests/driver", "config": config, "bindings": bindings}, "state": {}}});
    let output = run_connector(&[], &format!("{}\n{open}\n", json!({"spec": {}})), &[]);
    let error = error_message(&output.stderr.lines().map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("the capture did not fail (exit {}):\n{}", output.exit_code, output.stdout));
    assert!(error.contains(expected), "{error}");
    assert!(!output.stdout.contains("\"opened\""), "the capture opened:\n{}", output.stdout);
    let mut collection = Collection::new(&["id"]);

    // Told to skip its prerequisites, it stops at the first delete, with the fix. Skipping
    // them also means creating nothing (as in the Go connector): the user made the
    // watermarks table.
    db.execute(
        "CREATE TABLE public.flow_watermarks (slot TEXT PRIMARY KEY, watermark TEXT);
         GRANT SELECT, INSERT, UPDATE ON public.flow_watermarks TO flow_capture;",
    )
    .await;
    let mut skipping = config.clone();
    skipping["advanced"]["skip_prerequisites"] = json!(true);
    run_to_idle_ok(&db, &skipping, &bindings, &mut collection, "the backfill").await;
    db.execute("DELETE FROM test.coded WHERE id = 1; INSERT INTO test.other VALUES (2, 2);").await;
    match run_to_idle(&db, &skipping, &bindings, &mut collection).await {
        End::Failed(error) => {
            assert!(
                error.contains("table \"test.coded\" has REPLICA IDENTITY USING INDEX \"coded_code\" (columns \"code\"), which leaves out collection key column \"id\": its updates and deletes arrive without the key"),
                "{error}"
            );
            assert!(error.contains("HINT: run ALTER TABLE \"test\".\"coded\" REPLICA IDENTITY FULL;"), "{error}");
            assert!(error.contains("increment the binding's backfill counter"), "{error}");
        }
        End::Completed => panic!(
            "a delete without the collection key was captured as if nothing were wrong ({} documents without a key)",
            collection.keyless.len()
        ),
    }
    assert!(collection.keyless.is_empty(), "documents without their key: {:?}", collection.keyless);

    // The fix: REPLICA IDENTITY FULL, and a backfill of the binding (a new state key), which
    // reads every row again; the delete already written is dropped on the way.
    db.execute("ALTER TABLE test.coded REPLICA IDENTITY FULL; UPDATE test.coded SET v = 20 WHERE id = 2;").await;
    let mut rebackfilled = bindings.clone();
    rebackfilled[0]["stateKey"] = json!("test%2Fcoded.v2");
    run_to_idle_ok(&db, &config, &rebackfilled, &mut collection, "the re-backfill").await;
    db.execute("DELETE FROM test.coded WHERE id = 3; UPDATE test.coded SET code = 'x', v = 40 WHERE id = 4;").await;
    run_to_idle_ok(&db, &config, &rebackfilled, &mut collection, "streaming after the fix").await;
    let mut rows = table_rows(&admin, "coded", &collection).await;
    // The row deleted while its deletes could not be keyed keeps its document: a backfill
    // adds rows, it does not remove documents (resetting the collection would).
    let lingering = collection.of("coded").get("[1]").cloned().expect("row 1's document stays");
    rows.insert("[1]".into(), lingering);
    collection.assert_matches("coded", &rows, "after the fix");
    collection.assert_matches("other", &table_rows(&admin, "other", &collection).await, "after the fix");
}

/// Item 10: a failed catalog lookup of a partition's root must fail the capture (which then
/// restarts from its last checkpoint), not count the partition as unbound and skip its
/// changes while the cursor moves past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_partition_lookup_fails_the_capture_instead_of_skipping_changes() {
    let db = TestDb::create("stream_keys_partition_lookup").await;
    db.execute(
        "CREATE TABLE test.parts (id int PRIMARY KEY, v int NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE test.parts_low PARTITION OF test.parts FOR VALUES FROM (0) TO (1000);
         INSERT INTO test.parts VALUES (1, 1);",
    )
    .await;
    let admin = db.superuser_client().await;
    let config = db.endpoint_config();
    let bindings = vec![binding("parts", &["/id"])];
    let mut collection = Collection::new(&["id"]);
    let mut session = Session::open_capturing_stderr(&config, bindings.clone(), &collection.state, &[]).await;
    let settled = drive(&mut session, &mut collection, Duration::from_secs(120), |c| {
        backfills_done(&c.state) && !c.docs.is_empty()
    })
    .await;
    assert!(settled.is_none(), "the session ended during its backfill: {settled:?}");

    // From now on the partition's changes arrive under its own name, and the capture must
    // ask the catalog for its root: on a connection that is gone.
    db.execute("ALTER PUBLICATION flow_publication SET (publish_via_partition_root = false)").await;
    let terminated: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND usename = $1 AND backend_type = 'client backend'",
            &[&CAPTURE_USER],
        )
        .await
        .expect("terminate the connector's SQL connections")
        .get(0);
    assert!(terminated > 0, "the connector's SQL connections were found");
    db.execute("INSERT INTO test.parts VALUES (2, 2)").await;
    let written: String = admin.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.expect("WAL position").get(0);
    let written = crate::driver::lsn_value(&written);
    // Until the session fails, or checkpoints past the insert (having skipped it).
    let end = drive(&mut session, &mut collection, Duration::from_secs(60), |c| {
        c.state["cursor"].as_str().is_some_and(|cursor| crate::driver::lsn_value(cursor) >= written)
    })
    .await;
    session.kill().await;
    let committed_past = collection.state["cursor"].as_str().is_some_and(|c| crate::driver::lsn_value(c) >= written);
    assert!(
        !committed_past || collection.of("parts").contains_key("[2]"),
        "the session checkpointed past the partition's insert without capturing it (ended: {end:?})"
    );

    // The restarted capture reads the change again.
    db.execute("ALTER PUBLICATION flow_publication SET (publish_via_partition_root = true)").await;
    run_to_idle_ok(&db, &config, &bindings, &mut collection, "the restarted capture").await;
    collection.assert_matches("parts", &table_rows(&admin, "parts", &collection).await, "after the restart");
}
