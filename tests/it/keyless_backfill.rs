//! Keyless backfills (tables without a usable key, read in windows of CTID pages): every row
//! arrives whatever the table's size relative to the window, and a rewrite of the table in
//! the middle of the backfill (VACUUM FULL, CLUSTER), which moves every row to another CTID,
//! restarts the table's backfill instead of silently losing the rows that moved behind it.
//!
//! Keyless documents are keyed by their location (`/_meta/source/loc`), so the driver here
//! reduces committed documents by that key, as the runtime does, and compares the row values
//! of the result with the table's rows as a multiset.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

use crate::driver::{backfills_done, merge_patch, Event, Session};
use crate::harness::TestDb;

/// A binding of `test.<table>` in mode "Without Primary Key", with the fallback key.
fn keyless_binding(table: &str) -> Value {
    json!({
        "resourceConfig": {"namespace": "test", "stream": table, "mode": "Without Primary Key"},
        "resourcePath": ["test", table],
        "collection": {
            "name": format!("tests/{table}"),
            "key": ["/_meta/source/loc/0", "/_meta/source/loc/1", "/_meta/source/loc/2"],
        },
        "stateKey": format!("test%2F{table}"),
    })
}

/// The endpoint configuration with `backfill_chunk_size` set (or left at its default).
fn config(db: &TestDb, chunk_size: Option<i64>) -> Value {
    let mut config = db.endpoint_config();
    if let Some(size) = chunk_size {
        config["advanced"]["backfill_chunk_size"] = json!(size);
    }
    config
}

/// What the runtime has committed: documents reduced by (table, location), and the state.
#[derive(Default)]
struct Collections {
    state: Value,
    documents: BTreeMap<(String, String), Value>,
    pending: Vec<Value>,
    /// Backfill documents received (committed or not).
    backfill_documents: u64,
    checkpoints: u64,
}

impl Collections {
    fn new() -> Collections {
        Collections { state: json!({}), ..Collections::default() }
    }

    /// Apply one event; returns whether the session exited (successfully: anything else fails).
    async fn apply(&mut self, session: &mut Session, event: Event) -> bool {
        match event {
            Event::SourcedSchema { .. } => false,
            Event::Captured { doc } => {
                if doc["_meta"]["source"]["snapshot"] == true {
                    self.backfill_documents += 1;
                }
                self.pending.push(doc);
                false
            }
            Event::Checkpoint { patch } => {
                for doc in self.pending.drain(..) {
                    let source = &doc["_meta"]["source"];
                    let table = source["table"].as_str().expect("_meta/source/table").to_string();
                    let loc = source["loc"].to_string();
                    self.documents.insert((table, loc), doc);
                }
                merge_patch(&mut self.state, &patch);
                self.checkpoints += 1;
                session.acknowledge().await;
                false
            }
            Event::Exited(status) => {
                let stderr = session.stderr_lines().await.join("\n");
                assert!(status.success(), "the connector failed: {status}\n{stderr}");
                assert!(self.pending.is_empty(), "documents after the last checkpoint of a clean exit");
                true
            }
            Event::Timeout => panic!("the capture stalled ({} backfill documents so far)", self.backfill_documents),
        }
    }

    /// The committed rows of `table` as `{"a":..,"b":..}` texts, with their counts.
    fn rows(&self, table: &str) -> BTreeMap<String, u64> {
        let mut rows = BTreeMap::new();
        for ((t, _), doc) in &self.documents {
            if t == table {
                assert_eq!(doc["_meta"]["op"], "c", "a backfill-only test sees only creates: {doc}");
                *rows.entry(json!({"a": doc["a"], "b": doc["b"]}).to_string()).or_default() += 1;
            }
        }
        rows
    }
}

/// The rows of `test.<table>` as `{"a":..,"b":..}` texts, with their counts.
async fn table_rows(db: &TestDb, table: &str) -> BTreeMap<String, u64> {
    let client = db.superuser_client().await;
    let rows = client
        .query(&format!("SELECT json_build_object('a', a, 'b', b)::text FROM test.{table}"), &[])
        .await
        .expect("read the table");
    let mut counts = BTreeMap::new();
    for row in rows {
        let value: Value = serde_json::from_str(row.get(0)).expect("JSON row");
        *counts.entry(value.to_string()).or_default() += 1;
    }
    counts
}

/// Compare the committed rows of a table with the table, as multisets.
async fn assert_captured(db: &TestDb, collections: &Collections, table: &str) {
    let expected = table_rows(db, table).await;
    let captured = collections.rows(table);
    let count = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    if captured != expected {
        let missing: Vec<&String> = expected.keys().filter(|k| captured.get(*k) < expected.get(*k)).take(5).collect();
        let extra: Vec<&String> = captured.keys().filter(|k| expected.get(*k) < captured.get(*k)).take(5).collect();
        panic!(
            "table test.{table}: {} rows, the collection holds {} (missing e.g. {missing:?}, extra e.g. {extra:?})",
            count(&expected),
            count(&captured),
        );
    }
}

/// Create `test.<table> (a int, b text)` with `rows` rows, analyzed.
async fn keyless_table(db: &TestDb, table: &str, rows: i64) {
    db.execute(&format!(
        "CREATE TABLE test.{table} (a int, b text);
         ALTER TABLE test.{table} REPLICA IDENTITY FULL;
         INSERT INTO test.{table} SELECT g, 'row ' || g FROM generate_series(1, {rows}) g;
         ANALYZE test.{table};"
    ))
    .await;
}

/// Run a capture (exiting once backfills are done and the stream caught up) from
/// `collections`' state, within `within`.
async fn capture_to_the_end(
    config: &Value,
    bindings: Vec<Value>,
    collections: &mut Collections,
    within: Duration,
) -> Vec<String> {
    let mut session =
        Session::open_capturing_stderr(config, bindings, &collections.state, &[("SHUTDOWN_AFTER_POLLING", "yes")])
            .await;
    let deadline = Instant::now() + within;
    loop {
        let event = session.next(deadline.saturating_duration_since(Instant::now())).await;
        if collections.apply(&mut session, event).await {
            break;
        }
    }
    assert!(backfills_done(&collections.state), "backfills are done at the end: {}", collections.state);
    session.stderr_lines().await
}

/// Rows in one window of pages at `backfill_chunk_size` 100 (2 pages) of a fresh
/// `(a int, b text)` table written as [`keyless_table`] does.
async fn rows_per_window(db: &TestDb) -> i64 {
    keyless_table(db, "probe", 2000).await;
    let client = db.superuser_client().await;
    let row = client
        .query_one("SELECT count(*) FROM test.probe WHERE ctid < '(2,0)'", &[])
        .await
        .expect("count the rows of the first two pages");
    db.execute("DROP TABLE test.probe").await;
    row.get(0)
}

/// Tables of every size around the window (empty, one row, a window's rows and one either
/// side, a few around the configured chunk size, many windows), all in one capture: each
/// collection holds exactly its table's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_backfill_reads_every_window_whatever_the_table_size() {
    let db = TestDb::create("keyless_backfill_sizes").await;
    let window = rows_per_window(&db).await;
    let sizes: Vec<(String, i64)> = [
        ("empty", 0),
        ("one", 1),
        ("chunk_less_one", 99),
        ("chunk", 100),
        ("chunk_plus_one", 101),
        ("window_less_one", window - 1),
        ("window", window),
        ("window_plus_one", window + 1),
        ("windows", 3000),
        ("many_windows", 20 * window + 7),
    ]
    .into_iter()
    .map(|(name, rows)| (name.to_string(), rows))
    .collect();
    for (table, rows) in &sizes {
        keyless_table(&db, table, *rows).await;
    }
    let bindings = sizes.iter().map(|(table, _)| keyless_binding(table)).collect();
    let mut collections = Collections::new();
    capture_to_the_end(&config(&db, Some(100)), bindings, &mut collections, Duration::from_secs(300)).await;
    for (table, _) in &sizes {
        assert_captured(&db, &collections, table).await;
    }
}

/// The report of the issue: 200,000 rows at the default chunk size (three windows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_backfill_of_a_plain_table_reads_past_its_first_window() {
    let db = TestDb::create("keyless_backfill_default_chunk").await;
    keyless_table(&db, "events", 200_000).await;
    let mut collections = Collections::new();
    capture_to_the_end(&config(&db, None), vec![keyless_binding("events")], &mut collections, Duration::from_secs(600))
        .await;
    assert_captured(&db, &collections, "events").await;
}

/// Progress reports estimate the rows to backfill from the planner's statistics, for plain
/// tables as for partitioned ones (`pg_partition_tree` lists nothing for a plain table, which
/// made every plain table's estimate 0), from the first report on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_estimate_the_rows_of_plain_tables() {
    use source_postgres::capture::backfill::{
        TABLE_LEAVES_SQL, TABLE_ROWS_ESTIMATE_BATCH_SQL, TABLE_ROWS_ESTIMATE_SQL,
    };
    let db = TestDb::create("keyless_row_estimates").await;
    keyless_table(&db, "plain", 3000).await;
    db.execute(
        "CREATE TABLE test.parted (a int, b text) PARTITION BY RANGE (a);
         ALTER TABLE test.parted REPLICA IDENTITY FULL;
         CREATE TABLE test.parted_low PARTITION OF test.parted FOR VALUES FROM (0) TO (1000);
         CREATE TABLE test.parted_high PARTITION OF test.parted FOR VALUES FROM (1000) TO (2000)
           PARTITION BY RANGE (a);
         CREATE TABLE test.parted_high_a PARTITION OF test.parted_high FOR VALUES FROM (1000) TO (2000);
         ALTER TABLE test.parted_low REPLICA IDENTITY FULL;
         ALTER TABLE test.parted_high_a REPLICA IDENTITY FULL;
         INSERT INTO test.parted SELECT g, 'row ' || g FROM generate_series(0, 1999) g;
         ANALYZE test.parted_low; ANALYZE test.parted_high_a;",
    )
    .await;

    // The connector's first progress report.
    let mut collections = Collections::new();
    let mut session = Session::open_capturing_stderr(
        &config(&db, Some(100)),
        vec![keyless_binding("plain")],
        &json!({}),
        &[("SHUTDOWN_AFTER_POLLING", "yes"), ("LOG_LEVEL", "info")],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let event = session.next(deadline.saturating_duration_since(Instant::now())).await;
        if collections.apply(&mut session, event).await {
            break;
        }
    }
    let stderr = session.stderr_lines().await;
    let report: Value = stderr
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["eventType"] == "connectorStatus" && line["fields"]["tables_backfilling"] == 1)
        .unwrap_or_else(|| panic!("no progress report while backfilling:\n{}", stderr.join("\n")));
    assert_eq!(report["fields"]["rows_estimated"], 3000, "the first progress report: {report}");
    assert_captured(&db, &collections, "plain").await;

    // The same queries over partitions of any depth.
    let client = db.superuser_client().await;
    let oid = |name: &'static str| {
        let client = &client;
        async move {
            let row = client.query_one("SELECT $1::text::regclass::oid", &[&name]).await.expect("table OID");
            row.get::<_, u32>(0)
        }
    };
    let (plain, parted) = (oid("test.plain").await, oid("test.parted").await);
    for (table, expected_rows, leaves) in [(plain, 3000, 1), (parted, 2000, 2)] {
        let estimate: i64 = client.query_one(TABLE_ROWS_ESTIMATE_SQL, &[&table]).await.expect("estimate").get(0);
        assert_eq!(estimate, expected_rows, "row estimate of table {table}");
        let counted: i64 = client.query_one(TABLE_LEAVES_SQL, &[&table]).await.expect("leaves").get(0);
        assert_eq!(counted, leaves, "heap relations of table {table}");
    }
    let batch: BTreeMap<u32, i64> = client
        .query(TABLE_ROWS_ESTIMATE_BATCH_SQL, &[&vec![plain, parted]])
        .await
        .expect("batch estimate")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(batch, BTreeMap::from([(plain, 3000), (parted, 2000)]));
}

/// A keyless backfill of a partitioned table with partitions of different depths and sizes:
/// the window covers every leaf, and the backfill runs to the largest leaf's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_backfill_of_nested_partitions_reads_every_leaf() {
    let db = TestDb::create("keyless_backfill_partitions").await;
    db.execute(
        "CREATE TABLE test.parted (a int, b text) PARTITION BY RANGE (a);
         CREATE TABLE test.parted_small PARTITION OF test.parted FOR VALUES FROM (0) TO (100);
         CREATE TABLE test.parted_mid PARTITION OF test.parted FOR VALUES FROM (100) TO (100000)
           PARTITION BY RANGE (a);
         CREATE TABLE test.parted_big PARTITION OF test.parted_mid FOR VALUES FROM (100) TO (100000);
         ALTER TABLE test.parted REPLICA IDENTITY FULL;
         ALTER TABLE test.parted_small REPLICA IDENTITY FULL;
         ALTER TABLE test.parted_big REPLICA IDENTITY FULL;
         INSERT INTO test.parted SELECT g, 'row ' || g FROM generate_series(0, 5099) g;",
    )
    .await;
    let mut collections = Collections::new();
    capture_to_the_end(
        &config(&db, Some(100)),
        vec![keyless_binding("parted")],
        &mut collections,
        Duration::from_secs(300),
    )
    .await;
    assert_captured(&db, &collections, "parted").await;
}

/// Wait until no walsender holds the test's slot (a killed connector's lingers a moment).
async fn wait_slot_released(db: &TestDb) {
    let client = db.superuser_client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let active: Option<bool> = client
            .query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&db.slot_name()])
            .await
            .expect("read the slot")
            .map(|row| row.get(0));
        if active != Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "the slot is still in use 30 s after its connector was killed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows whose deletion left half of every page free, so that a rewrite moves the rest.
///
/// Each row carries 2 KB of padding (compressed on disk, so pages hold as many rows as
/// without it): its document is then wide enough that the connector's output pipe (which it
/// grows to 1 MiB) holds about 500 of them, and a connector cannot run more than a few
/// chunks ahead of what a test has read. Narrow documents let the whole table through the
/// pipe before a test's rewrite at "document N" ran, and the rewrite landed after the
/// backfill.
async fn bloated_keyless_table(db: &TestDb, table: &str, live_rows: i64) {
    db.execute(&format!(
        "CREATE TABLE test.{table} (a int, b text, pad text);
         ALTER TABLE test.{table} REPLICA IDENTITY FULL;
         ALTER TABLE test.{table} SET (autovacuum_enabled = false);
         INSERT INTO test.{table} SELECT g, 'row ' || g, repeat('.', 2000) FROM generate_series(1, {}) g;
         DELETE FROM test.{table} WHERE a % 2 = 0;
         CREATE INDEX {table}_b ON test.{table} (b);
         ANALYZE test.{table};",
        live_rows * 2
    ))
    .await;
}

/// A table rewritten (by `rewrite`) at a random moment of its keyless backfill: the backfill
/// notices and starts over, and the collection ends up holding exactly the table's rows.
async fn rewrite_mid_backfill(test: &str, rewrite: &str) {
    let db = TestDb::create(test).await;
    bloated_keyless_table(&db, "t", 10_000).await;
    let seed: u64 = rand::thread_rng().gen();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    // Somewhere in the first 60% of the rows, so that most runs rewrite the table well
    // before the backfill's last window.
    let at = rng.gen_range(1..=6_000u64);
    eprintln!("{test}: seed {seed}: `{rewrite}` after {at} backfill documents");
    let mut session = Session::open_capturing_stderr(
        &config(&db, Some(100)),
        vec![keyless_binding("t")],
        &json!({}),
        &[("SHUTDOWN_AFTER_POLLING", "yes")],
    )
    .await;
    let mut collections = Collections::new();
    let mut rewriting: Option<tokio::task::JoinHandle<()>> = None;
    // Whether the rewrite finished while the backfill was still running.
    let mut rewritten_mid_backfill = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let event = session.next(deadline.saturating_duration_since(Instant::now())).await;
        let exited = collections.apply(&mut session, event).await;
        if rewriting.is_none() && collections.backfill_documents >= at {
            // In a task: the rewrite waits for the chunk query's lock, and that chunk's rows
            // wait for this loop to read them.
            let client = db.superuser_client().await;
            let sql = rewrite.to_string();
            rewriting = Some(tokio::spawn(async move {
                client.batch_execute(&sql).await.expect("rewrite the table");
            }));
        }
        if rewritten_mid_backfill.is_none() && rewriting.as_ref().is_some_and(|task| task.is_finished()) {
            rewritten_mid_backfill = Some(!backfills_done(&collections.state));
        }
        if exited {
            break;
        }
    }
    let stderr = session.stderr_lines().await;
    assert!(backfills_done(&collections.state), "backfills are done at the end: {}", collections.state);
    assert_captured(&db, &collections, "t").await;
    rewriting.expect("the backfill reached the rewrite").await.expect("the rewrite task");
    let warned = stderr.iter().any(|line| line.contains("was rewritten during its keyless backfill"));
    eprintln!(
        "{test}: {} backfill documents, rewrite finished mid-backfill: {rewritten_mid_backfill:?}, restart warned: {warned}",
        collections.backfill_documents
    );
    // A restart reads the table again, so more documents than rows: it happened if and
    // only if it was reported.
    assert_eq!(warned, collections.backfill_documents > 10_000, "a restart is reported, and only a restart");
    if rewritten_mid_backfill == Some(true) {
        assert!(warned, "a rewrite during the backfill is reported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_full_during_a_keyless_backfill_restarts_it() {
    rewrite_mid_backfill("keyless_vacuum_full", "VACUUM FULL test.t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_during_a_keyless_backfill_restarts_it() {
    rewrite_mid_backfill("keyless_cluster", "CLUSTER test.t USING t_b").await;
}

/// A rewrite while no connector runs: the next session resumes from a position in the old
/// files, notices that the files changed, and starts the table's backfill over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_between_sessions_restarts_the_keyless_backfill() {
    let db = TestDb::create("keyless_rewrite_between_sessions").await;
    bloated_keyless_table(&db, "t", 10_000).await;
    let config = config(&db, Some(100));
    let mut collections = Collections::new();
    let mut session = Session::open(&config, vec![keyless_binding("t")], &json!({}), &[]).await;
    // A few windows in (each window is a checkpoint of its own at this chunk size).
    let deadline = Instant::now() + Duration::from_secs(120);
    while (collections.backfill_documents < 1_000 || !collections.pending.is_empty())
        && !backfills_done(&collections.state)
    {
        let event = session.next(deadline.saturating_duration_since(Instant::now())).await;
        assert!(!collections.apply(&mut session, event).await, "the session ended early");
    }
    session.kill().await;
    wait_slot_released(&db).await;
    let position = &collections.state["bindingStateV1"]["test%2Ft"];
    assert_eq!(
        position["mode"], "KeylessBackfill",
        "the backfill is under way after {} of 10000 rows: {position}",
        collections.backfill_documents
    );
    assert!(position["scanned"].is_string(), "the backfill has a resume position: {position}");

    db.execute("VACUUM FULL test.t").await;
    let stderr =
        capture_to_the_end(&config, vec![keyless_binding("t")], &mut collections, Duration::from_secs(300)).await;
    assert_captured(&db, &collections, "t").await;
    assert!(
        stderr.iter().any(|line| line.contains("was rewritten during its keyless backfill")),
        "the restart is reported:\n{}",
        stderr.join("\n")
    );
    // The metadata keeps only the value-formats marker (see capture::state).
    assert_eq!(
        collections.state["bindingStateV1"]["test%2Ft"]["metadata"].get("keyless_relation"),
        None,
        "a completed backfill keeps no file identity"
    );
}

/// Each window reads only its own pages: a keyless backfill reads every row about once,
/// however many windows the table has. PostgreSQL 13 has no TID range scan, so a
/// `ctid > $1 AND ctid <= $2` window was a sequential scan of the whole table there, every
/// row read once per window (quadratic); it is a TID scan now (run this on 13 with
/// `TEST_PG_BINDIR`). The server's own counter of rows read by sequential and TID range
/// scans tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_backfill_reads_each_row_about_once() {
    let db = TestDb::create("keyless_backfill_reads_once").await;
    let rows = 20_000;
    keyless_table(&db, "t", rows).await;
    let admin = db.superuser_client().await;
    let read = || async {
        // A fresh look at the statistics, not this transaction's cached snapshot of them.
        admin.batch_execute("SELECT pg_stat_clear_snapshot()").await.expect("clear the statistics snapshot");
        let row = admin
            .query_one("SELECT seq_tup_read FROM pg_stat_user_tables WHERE relid = 'test.t'::regclass", &[])
            .await
            .expect("read the table's statistics");
        row.get::<_, i64>(0)
    };
    let before = read().await;
    let mut collections = Collections::new();
    capture_to_the_end(&config(&db, Some(100)), vec![keyless_binding("t")], &mut collections, Duration::from_secs(300))
        .await;
    // The connector's sessions report their statistics as they end (PostgreSQL 13 and 14
    // through the statistics collector, a moment later).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sessions: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'estuary_flow'",
                &[],
            )
            .await
            .expect("list sessions")
            .get(0);
        if sessions == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the connector's sessions are still open 30 s after it exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let windows = collections.checkpoints;
    let read_rows = read().await - before;
    eprintln!("{rows} rows, {windows} checkpoints: {read_rows} rows read by sequential or TID range scans");
    assert!(
        read_rows <= 2 * rows,
        "the backfill of {rows} rows read {read_rows} rows: windows scan more than their own pages"
    );
    // (Last: it reads the table too.)
    assert_captured(&db, &collections, "t").await;
}
