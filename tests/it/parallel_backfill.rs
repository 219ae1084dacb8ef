//! Parallel backfill of one table (`advanced.backfill_readers`): a table of many small
//! chunks is backfilled by 2 and 4 connections at once while a writer inserts, updates,
//! deletes and changes keys of the very rows being read, and the connector is killed at
//! random moments and restarted from the last committed checkpoint (the driver plays the
//! runtime: [`crate::faults_common::Runner`]). After a final clean run the collection must
//! equal the table, and no key's committed history may go backwards (see
//! [`crate::faults_common`]). The server's own view of the capture's connections shows that
//! the extra readers were really used, and closed once the backfill was done.
//!
//! A keyless table is read the same way by page windows. The key shapes beyond integers
//! (text, composite, uuid) run in the differential
//! harness, which draws `backfill_readers` in a fraction of its cases (`DIFF_READERS=n`
//! forces it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::driver::binding;
use crate::faults_common::{
    assert_matches_table, final_run, table_rows, Admin, Capture, Committed, Conn, Ending, Runner,
};
use crate::harness::{cluster, TestDb};

const ROWS: i64 = 6_000;

/// Random changes until stopped: counter updates (single rows and ranges), deletes, inserts
/// and key changes (a row moved to a fresh key, never reused).
async fn write_load(client: tokio_postgres::Client, stop: Arc<AtomicBool>, seed: u64, keyless: bool) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next_id: i64 = 1_000_000;
    let mut transactions = 0;
    while !stop.load(Ordering::Relaxed) {
        let id: i64 = rng.gen_range(1..=ROWS);
        let sql = match rng.gen_range(0..10) {
            0..=3 => format!("UPDATE test.big SET counter = counter + 1 WHERE id = {id}"),
            4 => format!(
                "BEGIN; UPDATE test.big SET counter = counter + 1 WHERE id BETWEEN {id} AND {}; \
                 UPDATE test.big SET pad = pad || 'y', counter = counter + 1 WHERE id = {}; COMMIT;",
                id + 50,
                (id * 7) % ROWS + 1
            ),
            5 => format!("DELETE FROM test.big WHERE id = {id}"),
            6 | 7 => {
                next_id += 1;
                // Inserted anywhere in key order: before, inside and beyond the ranges read.
                let key = if rng.gen_bool(0.5) { next_id } else { -next_id };
                format!("INSERT INTO test.big VALUES ({key}, 0, 'new')")
            }
            _ => {
                next_id += 1;
                // A keyless table's rows are not keyed by `id`: an update moves one instead
                // (to another page, like any update that is not HOT).
                if keyless {
                    format!("UPDATE test.big SET pad = pad || 'moved', counter = counter + 1 WHERE id = {id}")
                } else {
                    format!("UPDATE test.big SET id = {next_id}, counter = counter + 1 WHERE id = {id}")
                }
            }
        };
        client.batch_execute(&sql).await.expect("write load statement");
        transactions += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..3))).await;
    }
    transactions
}

/// The most client connections of the capture user to `database` seen until stopped.
async fn watch_connections(
    client: tokio_postgres::Client,
    database: String,
    stop: Arc<AtomicBool>,
    most: Arc<AtomicI64>,
) {
    let user = cluster().await.capture_user.clone();
    while !stop.load(Ordering::Relaxed) {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2 AND backend_type = 'client backend'",
                &[&database, &user],
            )
            .await
            .expect("pg_stat_activity");
        most.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `mode`: the binding's backfill mode, or `Without Primary Key` for a keyless table (whose
/// documents the driver reduces by `id`, which the writer never changes there).
async fn run(readers: usize, mode: Option<&str>, seed: u64) {
    let keyless = mode == Some("Without Primary Key");
    let db = TestDb::create(&format!(
        "parallel_backfill_{readers}_{}",
        if keyless { "keyless" } else { mode.unwrap_or("auto") }
    ))
    .await;
    let key = if keyless { "NOT NULL" } else { "PRIMARY KEY" };
    db.execute(&format!(
        "CREATE TABLE test.big (id bigint {key}, counter bigint NOT NULL, pad text NOT NULL);
         ALTER TABLE test.big REPLICA IDENTITY FULL;
         INSERT INTO test.big SELECT g, 0, repeat('p', (g % 40)::int) FROM generate_series(1, {ROWS}) g;"
    ))
    .await;
    let mut config = db.endpoint_config();
    config["advanced"]["backfill_chunk_size"] = json!(100);
    config["advanced"]["backfill_readers"] = json!(readers);
    let mut big = binding("big", &["/id"]);
    if keyless {
        big["collection"]["key"] = json!(["/_meta/source/loc/0", "/_meta/source/loc/1", "/_meta/source/loc/2"]);
    } else if let Some(mode) = mode {
        big["resourceConfig"]["mode"] = json!(mode);
    }
    let capture = Capture { config, bindings: vec![big], slot: db.slot_name() };
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(db.superuser_client().await, stop.clone(), seed, keyless));
    let most = Arc::new(AtomicI64::new(0));
    // Watched until the backfill is done, the final session included (under load, the
    // killed sessions may end before their first round).
    let watched = Arc::new(AtomicBool::new(false));
    let watcher =
        tokio::spawn(watch_connections(db.superuser_client().await, db.name.clone(), watched.clone(), most.clone()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut committed = Committed::new(Some("counter"));
    let mut kills = 0;
    for _ in 0..5 {
        let kill_after = Duration::from_millis(rng.gen_range(200..2_000));
        let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "no")]).await;
        match runner.run_until(&mut admin, tokio::time::Instant::now() + kill_after, |_, _| false).await {
            Some(Ending::TimedOut) => {
                runner.kill(&mut admin).await;
                kills += 1;
            }
            Some(Ending::Completed) => {}
            other => panic!("the connector failed (seed {seed}): {}", other.map_or_else(String::new, |e| e.describe())),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = writer.await.expect("writer");
    final_run(&capture, &mut committed, &mut admin).await;
    watched.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    let during = most.load(Ordering::Relaxed);

    let table = table_rows(admin.client().await, "test.big").await;
    assert_matches_table(&committed, &table, &format!("{readers} readers, mode {mode:?}, seed {seed}"));
    // The session's own two connections (catalog and backfill) and its extra readers.
    assert!(
        during > i64::try_from(readers).expect("readers"),
        "{readers} readers never had their connections open at once (at most {during} connections seen)"
    );
    eprintln!(
        "parallel backfill: {readers} readers, mode {mode:?}, seed {seed}: {kills} kills, {transactions} writer transactions, {} checkpoints, {} rows, at most {during} connections",
        committed.checkpoints,
        table.len()
    );
}

/// A streaming session after the backfill holds no reader connections.
async fn readers_are_closed_after_the_backfill() {
    let db = TestDb::create("parallel_backfill_closed").await;
    db.execute(&format!(
        "CREATE TABLE test.big (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL);
         INSERT INTO test.big SELECT g, 0, 'p' FROM generate_series(1, {ROWS}) g;"
    ))
    .await;
    let mut config = db.endpoint_config();
    config["advanced"]["backfill_chunk_size"] = json!(500);
    config["advanced"]["backfill_readers"] = json!(3);
    let capture = Capture { config, bindings: vec![binding("big", &["/id"])], slot: db.slot_name() };
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));
    let mut committed = Committed::new(None);
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    runner
        .reach(&mut admin, Duration::from_secs(120), "the backfill to complete", |_, c| {
            crate::driver::backfills_done(&c.state)
        })
        .await;
    db.execute("INSERT INTO test.big VALUES (-1, 0, 'after')").await;
    runner
        .reach(&mut admin, Duration::from_secs(60), "the insert to be captured", |_, c| c.rows.contains_key(&-1))
        .await;
    let user = cluster().await.capture_user.clone();
    let connections: i64 = admin
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2 AND backend_type = 'client backend'",
            &[&db.name, &user],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert!(connections <= 2, "{connections} connections of the capture while streaming: the readers stayed open");
    runner.kill(&mut admin).await;
    let table = table_rows(admin.client().await, "test.big").await;
    assert_matches_table(&committed, &table, "readers closed");
}

/// The number of readers chosen from the table's size when none is configured, and what
/// happens when the server refuses the extra connections (here the database's connection
/// limit, SQLSTATE 53300): readers chosen by default are given up with a warning and the
/// backfill completes with one connection; a number set explicitly fails, naming the setting.
async fn default_readers_follow_the_size_and_yield_to_a_connection_limit() {
    let db = TestDb::create("parallel_backfill_default").await;
    db.execute(&format!(
        "CREATE TABLE test.big (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL);
         INSERT INTO test.big SELECT g, 0, 'p' FROM generate_series(1, {ROWS}) g;
         ANALYZE test.big;"
    ))
    .await;
    let backfill = |readers: Option<usize>, slot: String| {
        let mut config = db.endpoint_config();
        // 6,000 rows in chunks of 100: 60 chunks, two readers by default.
        config["advanced"]["backfill_chunk_size"] = json!(100);
        if let Some(readers) = readers {
            config["advanced"]["backfill_readers"] = json!(readers);
        }
        config["advanced"]["slotName"] = json!(slot);
        Capture { config, bindings: vec![binding("big", &["/id"])], slot }
    };
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));

    // No limit: the default reads with more than the session's own two connections.
    let capture = backfill(None, format!("{}_a", db.slot_name()));
    let most = Arc::new(AtomicI64::new(0));
    let watched = Arc::new(AtomicBool::new(false));
    let watcher =
        tokio::spawn(watch_connections(db.superuser_client().await, db.name.clone(), watched.clone(), most.clone()));
    let mut committed = Committed::new(None);
    final_run(&capture, &mut committed, &mut admin).await;
    watched.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    let table = table_rows(admin.client().await, "test.big").await;
    assert_matches_table(&committed, &table, "default readers");
    let during = most.load(Ordering::Relaxed);
    assert!(during > 2, "a table of 60 chunks was read with the session's own connections only ({during} seen)");

    // The connections already there (this test's own) and the capture's catalog and backfill
    // connections, not one more (its walsender is not counted against the database's limit;
    // the limit refuses only roles that are not superusers, as the capture user).
    let postgres = cluster().await.superuser_client("postgres").await;
    let open_now = connections_to(admin.client().await, &db.name).await;
    let limit = format!("ALTER DATABASE \"{}\" CONNECTION LIMIT {}", db.name, open_now + 2);
    postgres.batch_execute(&limit).await.expect("set the database's connection limit");
    let capture = backfill(None, format!("{}_b", db.slot_name()));
    let mut committed = Committed::new(None);
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    let ending =
        runner.run_until(&mut admin, tokio::time::Instant::now() + Duration::from_secs(120), |_, _| false).await;
    let stderr = runner.stderr_lines().await;
    assert!(matches!(ending, Some(Ending::Completed)), "refused default readers failed the capture: {stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("refused a backfill reader connection") && l.contains("backfill_readers")),
        "no warning about the refused reader: {stderr:?}"
    );
    assert_matches_table(&committed, &table, "default readers under a connection limit");

    let capture = backfill(Some(2), format!("{}_c", db.slot_name()));
    let mut committed = Committed::new(None);
    let runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    match runner.finish(&mut admin, Duration::from_secs(120)).await {
        Ending::Failed { error: Some(error), .. } => {
            assert!(error.contains("advanced.backfill_readers") && error.contains("max_connections"), "{error}");
        }
        other => panic!("two readers configured under a limit of one: {}", other.describe()),
    }
    let unlimited = format!("ALTER DATABASE \"{}\" CONNECTION LIMIT -1", db.name);
    postgres.batch_execute(&unlimited).await.expect("lift the database's connection limit");
    db.drop_slots().await;
}

/// Readers chosen by default are measured against one (`reader_trial`): a large table's
/// first chunk is read by one connection, its second by one and measured, its third by its
/// default readers, as a round, whatever the machine then decides. The tables after it, too
/// small for more than one reader, are read by one, and every table's rows arrive.
async fn default_readers_are_measured_against_one_reader_first() {
    const SMALL_ROWS: i64 = 1_500;
    let db = TestDb::create("parallel_backfill_trial").await;
    db.execute(&format!(
        "CREATE TABLE test.big (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL);
         INSERT INTO test.big SELECT g, 0, 'p' FROM generate_series(1, {ROWS}) g;
         CREATE TABLE test.small_a (LIKE test.big INCLUDING ALL);
         INSERT INTO test.small_a SELECT g, 0, 'a' FROM generate_series(1000001, 1000000 + {SMALL_ROWS}) g;
         CREATE TABLE test.small_b (LIKE test.big INCLUDING ALL);
         INSERT INTO test.small_b SELECT g, 0, 'b' FROM generate_series(2000001, 2000000 + {SMALL_ROWS}) g;
         ANALYZE test.big; ANALYZE test.small_a; ANALYZE test.small_b;"
    ))
    .await;
    let mut config = db.endpoint_config();
    // Chunks of 100: the big table has 60 (two readers by default), the small ones 15 each
    // (one reader).
    config["advanced"]["backfill_chunk_size"] = json!(100);
    let slot = db.slot_name();
    config["advanced"]["slotName"] = json!(slot);
    let bindings = vec![binding("big", &["/id"]), binding("small_a", &["/id"]), binding("small_b", &["/id"])];
    let capture = Capture { config, bindings, slot };
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));
    let mut committed = Committed::new(None);
    let mut runner = Runner::open(
        &capture,
        &mut committed,
        &mut admin,
        &[("SHUTDOWN_AFTER_POLLING", "yes"), ("LOG_LEVEL", "debug")],
    )
    .await;
    let ending =
        runner.run_until(&mut admin, tokio::time::Instant::now() + Duration::from_secs(180), |_, _| false).await;
    let stderr = runner.stderr_lines().await;
    assert!(matches!(ending, Some(Ending::Completed)), "the capture did not complete: {stderr:?}");
    // Each chunk's debug line names its table and rows: a round of two readers reads more
    // than one chunk's 100 rows.
    let chunks: Vec<(String, u64)> = stderr
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["msg"] == "backfill chunk")
        .map(|line| {
            (
                line["fields"]["table"].as_str().unwrap_or_default().to_string(),
                line["fields"]["rows"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let rows_of = |name: &str| -> Vec<u64> { chunks.iter().filter(|(t, _)| t == name).map(|(_, r)| *r).collect() };
    let big = rows_of("test.big");
    assert!(
        big.len() > 3 && big[0] == 100 && big[1] == 100 && big[2] == 200,
        "the big table's first two chunks are read by one reader and its third by two: {big:?}"
    );
    for small in ["test.small_a", "test.small_b"] {
        let rows = rows_of(small);
        assert!(rows.iter().all(|r| *r <= 100), "{small} was read by more than one reader: {rows:?}");
    }
    let mut expected = BTreeMap::new();
    for table in ["test.big", "test.small_a", "test.small_b"] {
        expected.extend(table_rows(admin.client().await, table).await);
    }
    assert_matches_table(&committed, &expected, "default readers measured");
    db.drop_slots().await;
}

/// Backends connected to `database` now, once those closing have gone (the harness's
/// short-lived connections end asynchronously).
async fn connections_to(client: &tokio_postgres::Client, database: &str) -> i64 {
    let mut last = -1;
    loop {
        let count: i64 = client
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&database])
            .await
            .expect("pg_stat_activity")
            .get(0);
        if count == last {
            return count;
        }
        last = count;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `PARALLEL_SEED` fixes the seed (printed on failure for replay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_readers_under_writes_and_kills_converge_to_the_table() {
    let seed: u64 = std::env::var("PARALLEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u32>().into());
    // Automatic mode (precise, for an integer key) and normal mode.
    run(2, None, seed).await;
    run(4, Some("Normal"), seed + 1).await;
    run(4, None, seed + 2).await;
    run(3, Some("Without Primary Key"), seed + 3).await;
    readers_are_closed_after_the_backfill().await;
    default_readers_follow_the_size_and_yield_to_a_connection_limit().await;
    default_readers_are_measured_against_one_reader_first().await;
}

/// The split keys of a round are the keys of every N-th row after the resume key, in the
/// order the chunk queries read (bytewise for precise text keys), as the table itself
/// orders them: a composite key whose first column repeats and holds non-ASCII text, an
/// integer key with gaps, no resume key, splits of one row, and tables that end before the
/// last split (those splits are left out).
#[tokio::test]
async fn split_keys_are_every_nth_key_in_chunk_order() {
    use source_postgres::capture::backfill::{split_keys_sql, KeyOrder};
    use source_postgres::discovery::DiscoveredTable;

    let db = TestDb::create("split_keys_every_nth").await;
    db.execute(
        "CREATE TABLE test.comp (g text, id int, PRIMARY KEY (g, id));
         INSERT INTO test.comp SELECT chr(65 + (i % 7)) || CASE WHEN i % 3 = 0 THEN 'é' ELSE 'b' END, i
           FROM generate_series(1, 2000) AS i;
         CREATE TABLE test.gaps (id bigint PRIMARY KEY);
         INSERT INTO test.gaps SELECT i * 7 - 3 FROM generate_series(-500, 1500) AS i;
         ANALYZE test.comp; ANALYZE test.gaps;",
    )
    .await;
    let client = db.superuser_client().await;
    let table = |name: &str| DiscoveredTable {
        oid: 0,
        schema: "test".into(),
        name: name.into(),
        relkind: 'r',
        is_partition: false,
        published: true,
        columns: Vec::new(),
        key: Vec::new(),
        key_is_unique_index: false,
    };
    /// A table: its key columns, their types, which order bytewise, and its keys in order.
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [bool], &'a str);
    let cases: [Case<'_>; 2] = [
        (
            "comp",
            &["g", "id"],
            &["text", "integer"],
            &[true, false],
            r#"SELECT c.g, c.id::text FROM test.comp AS c ORDER BY c.g COLLATE "C", c.id"#,
        ),
        ("gaps", &["id"], &["bigint"], &[false], "SELECT g.id::text FROM test.gaps AS g ORDER BY g.id"),
    ];
    for (name, columns, types, collate_c, ordered) in cases {
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
        let keys = KeyOrder { columns: &columns, types: &types, collate_c };
        let all: Vec<Vec<String>> = client
            .query(ordered, &[])
            .await
            .expect("the table's keys")
            .iter()
            .map(|row| (0..columns.len()).map(|i| row.get::<_, String>(i)).collect())
            .collect();
        // (the resume key's index, every, count). The reference orders by the columns, not by
        // the text of the output (a bare `id` in ORDER BY would name the text).
        for (skip, every, count) in
            [(None, 100, 3), (Some(57), 333, 4), (Some(1_900), 50, 5), (None, 1, 2), (Some(all.len() - 1), 10, 3)]
        {
            let first = skip.map_or(0, |s| s + 1);
            let expected: Vec<Vec<String>> = (1..=count)
                .map(|n| first + n * every - 1)
                .take_while(|i| *i < all.len())
                .map(|i| all[i].clone())
                .collect();
            let sql = split_keys_sql(
                &table(name),
                &keys,
                skip.is_some(),
                i64::try_from(every).unwrap(),
                i64::try_from(count).unwrap(),
            );
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = match skip {
                Some(s) => all[s].iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)).collect(),
                None => Vec::new(),
            };
            let got: Vec<Vec<String>> = client
                .query(&sql, &params)
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"))
                .iter()
                .map(|row| (0..columns.len()).map(|i| row.get::<_, String>(i)).collect())
                .collect();
            assert_eq!(got, expected, "{name}: after {skip:?}, every {every}, {count} splits");
        }
    }
}
