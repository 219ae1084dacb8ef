//! Read-only captures (`advanced.read_only_capture`): fenced by WAL positions, writing
//! nothing.
//!
//! - [`read_only_backfill_under_load_writes_nothing`]: a role with only SELECT and REPLICATION
//!   (its writes are shown to fail) backfills a many-chunk table under the chaos write load
//!   (inserts, updates, deletes, key changes, transactions streamed in progress); the reduced
//!   documents equal the table, and the server shows no watermarks table.
//! - [`read_only_backfill_of_an_idle_database_finishes`]: nothing commits in the captured
//!   database while another database moves the WAL on; every fence must still be passed
//!   (the Go connector hangs there), promptly.
//! - [`read_only_capture_survives_kills_mid_backfill`]: SIGKILLs in the middle of the backfill,
//!   each session resumed from the last committed checkpoint, converge to the table.
//! - [`read_only_capture_leaves_a_slot_it_cannot_prove_its_own`]: no ownership watermark, so
//!   an existing slot is refused while the state is empty.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::capture_chaos::{chaos_capture, create_chaos_table, seed, set_database, Workload, CHUNK, INITIAL_ROWS};
use crate::driver::binding;
use crate::faults_common::{
    assert_matches_table, final_run, table_rows, Admin, Capture, Committed, Conn, Ending, Runner,
};
use crate::harness::{cluster, describe_pg_error, PrivateCluster, TestDb};

/// A role that may read and replicate, nothing else.
const READER: &str = "flow_reader";
const READER_PASSWORD: &str = "reader5678";

/// Create the reader role (once per cluster), give it SELECT on the `test` schema's tables of
/// `db` and take every other right to write away (CREATE and TEMP on the database, CREATE on
/// `public`), then show that its writes fail.
async fn read_only_role(db: &TestDb) {
    let cluster = cluster().await;
    let admin = cluster.superuser_client("postgres").await;
    // Tests run in parallel: tolerate a concurrent CREATE ROLE.
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256';
             DO $$ BEGIN
               CREATE ROLE {READER} LOGIN REPLICATION;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;
             ALTER ROLE {READER} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{READER_PASSWORD}';"
        ))
        .await
        .unwrap_or_else(|e| panic!("create role {READER}: {}", describe_pg_error(&e)));
    db.execute(&format!(
        "REVOKE CREATE, TEMPORARY ON DATABASE \"{db}\" FROM PUBLIC;
         REVOKE CREATE ON SCHEMA public FROM PUBLIC;
         GRANT CONNECT ON DATABASE \"{db}\" TO {READER};
         GRANT USAGE ON SCHEMA test TO {READER};
         GRANT SELECT ON ALL TABLES IN SCHEMA test TO {READER};",
        db = db.name
    ))
    .await;
    let reader = cluster.connect(&db.name, READER, READER_PASSWORD).await.expect("connect as the reader");
    for statement in [
        "CREATE TABLE public.flow_watermarks (slot TEXT PRIMARY KEY, watermark TEXT)",
        "CREATE TABLE test.flow_watermarks (slot TEXT PRIMARY KEY, watermark TEXT)",
        "CREATE TEMP TABLE scratch (x int)",
        "CREATE SCHEMA scratch",
        "CREATE PUBLICATION scratch",
        "INSERT INTO test.chaos (id, counter, pad, big) VALUES (-1, 0, '', '')",
        "UPDATE test.chaos SET counter = counter + 1 WHERE id = 1",
        "DELETE FROM test.chaos WHERE id = 1",
        "ALTER PUBLICATION flow_publication SET (publish = 'insert')",
    ] {
        let err = reader.batch_execute(statement).await.expect_err(&format!("the reader may run {statement}"));
        let code = err.as_db_error().map(|e| e.code().code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {}", describe_pg_error(&err));
    }
    let can_read: i64 = reader.query_one("SELECT count(*) FROM test.chaos", &[]).await.expect("read").get(0);
    assert!(can_read > 0, "the reader cannot read the table");
}

/// The endpoint configuration of a read-only capture of `db` by the reader role.
fn read_only_config(db: &TestDb) -> Value {
    let mut config = db.endpoint_config();
    config["user"] = json!(READER);
    config["credentials"]["password"] = json!(READER_PASSWORD);
    config["advanced"]["read_only_capture"] = json!(true);
    config
}

/// The watermarks tables of the database (there must be none: nothing could create one).
async fn watermark_tables(admin: &mut Admin) -> Vec<String> {
    admin
        .client()
        .await
        .query("SELECT c.oid::regclass::text FROM pg_catalog.pg_class c WHERE c.relname = 'flow_watermarks'", &[])
        .await
        .expect("look for watermarks tables")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A read-only capture of `test.chaos` by the reader role under the chaos load: `kills`
/// sessions SIGKILLed in the middle of the backfill (each after a random number of backfill
/// documents), then one that reaches streaming, then a final clean run. The reduced documents
/// must equal the table, and nothing may have been written.
async fn read_only_under_load(test: &str, kills: usize, async_commit: bool) {
    let started = std::time::Instant::now();
    let seed = seed();
    let db = TestDb::create(test).await;
    let conn = Conn::superuser(cluster().await, &db.name);
    // Transactions larger than this are streamed to the capture in progress.
    set_database(&conn, &[("logical_decoding_work_mem", "64kB")]).await;
    if async_commit {
        // The writer's commits become visible before they are flushed: a fence at the flush
        // position (rather than the insert position) would not cover them.
        set_database(&conn, &[("synchronous_commit", "off")]).await;
    }
    let client = db.superuser_client().await;
    create_chaos_table(&client, "test.chaos", 0, INITIAL_ROWS, seed).await;
    read_only_role(&db).await;
    let mut capture = chaos_capture(read_only_config(&db), db.slot_name(), &["chaos"]);
    // Under asynchronous commit a fence waits for the WAL writer to flush up to it (up to
    // wal_writer_delay, 200 ms): larger chunks, so that the backfill outruns the writer.
    let chunk = if async_commit { 5 * CHUNK } else { CHUNK };
    capture.config["advanced"]["backfill_chunk_size"] = json!(chunk);
    // One reader: the count of checkpoints below is per chunk, and parallel readers (the
    // default from 20 chunks' worth of rows by the table's statistics, which autovacuum may
    // or may not have gathered by then) share one checkpoint per round.
    capture.config["advanced"]["backfill_readers"] = json!(1);
    let mut admin = Admin::new(conn.clone());
    let workload = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let mut committed = Committed::new(Some("counter"));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4ead);
    let mut killed_at = Vec::new();
    for session in 0..kills {
        let after = committed.documents + rng.gen_range(50..=(INITIAL_ROWS as u64 / 3));
        killed_at.push(after);
        let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
        runner
            .reach(
                &mut admin,
                Duration::from_secs(60),
                &format!("read-only session {session} did not emit {after} documents (seed {seed})"),
                |p, c| c.documents + p.backfill_documents >= after || c.streaming(),
            )
            .await;
        assert!(!runner.committed().streaming(), "the backfill ended before kill {session}: make the table larger");
        runner.kill(&mut admin).await;
    }
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    runner
        .reach(
            &mut admin,
            Duration::from_secs(120),
            &format!("the read-only capture did not reach streaming under the load (seed {seed})"),
            |p, c| c.streaming() && p.change_documents > 200 && p.checkpoints > 10,
        )
        .await;
    runner.kill(&mut admin).await;
    let stats = workload.stop().await;
    final_run(&capture, &mut committed, &mut admin).await;
    let context = format!("{test}, kills after {killed_at:?} documents, seed {seed}");
    let expected = table_rows(admin.client().await, "test.chaos").await;
    assert_matches_table(&committed, &expected, &context);
    assert!(
        stats.deletes > 0 && stats.inserts > 0 && stats.key_changes > 0 && stats.large > 0,
        "the load did not insert, update and delete ({context}): {stats:?}"
    );
    // Many chunks: the backfill alone took at least one checkpoint (one fence) per chunk.
    assert!(
        committed.checkpoints as i64 > INITIAL_ROWS / chunk,
        "{} checkpoints for {} chunks ({context})",
        committed.checkpoints,
        INITIAL_ROWS / chunk
    );
    assert_eq!(watermark_tables(&mut admin).await, Vec::<String>::new(), "a watermarks table exists ({context})");
    eprintln!(
        "read-only {test}: {} checkpoints, {} documents, {} rows; load {stats:?}; {:.1} s (seed {seed})",
        committed.checkpoints,
        committed.documents,
        committed.rows.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_backfill_under_load_writes_nothing() {
    read_only_under_load("read_only_under_load", 0, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_backfill_under_asynchronous_commit() {
    read_only_under_load("read_only_async_commit", 0, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_capture_survives_kills_mid_backfill() {
    read_only_under_load("read_only_kills", 4, false).await;
}

/// Rows of the idle table; with chunks of [`IDLE_CHUNK`] rows, a fence per chunk.
const IDLE_ROWS: i64 = 1_000;
const IDLE_CHUNK: i64 = 100;
/// The bound on the whole capture. With a fence passed only at a status interval (10 s
/// under the default `wal_sender_timeout`), the backfill's dozen fences would take minutes.
const IDLE_BOUND: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_backfill_of_an_idle_database_finishes() {
    idle_scenario("read_only_idle", true).await;
}

/// The same without the writes in another database: a fence must also be passed when the
/// WAL does not move at all (the walsender, caught up, tells its position when asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_backfill_of_a_quiet_cluster_finishes() {
    idle_scenario("read_only_quiet", false).await;
}

/// A read-only backfill of a database where nothing commits, with (`writes_elsewhere`) or
/// without writes in database `postgres` meanwhile: it must finish within [`IDLE_BOUND`].
async fn idle_scenario(test: &str, writes_elsewhere: bool) {
    let db = TestDb::create(test).await;
    db.execute(&format!(
        "CREATE TABLE test.chaos (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL, big text NOT NULL);
         INSERT INTO test.chaos SELECT g, 0, 'p', 's' FROM generate_series(1, {IDLE_ROWS}) g;"
    ))
    .await;
    read_only_role(&db).await;
    let cluster = cluster().await;
    // The WAL moves on in another database all along: nothing of it is decoded for the slot.
    let stop = Arc::new(AtomicBool::new(false));
    let elsewhere = {
        let stop = stop.clone();
        let client = cluster.superuser_client("postgres").await;
        tokio::spawn(async move {
            client
                .batch_execute("CREATE TEMP TABLE elsewhere (x int)")
                .await
                .unwrap_or_else(|e| panic!("create a table in postgres: {}", describe_pg_error(&e)));
            let mut writes = 0_u64;
            while writes_elsewhere && !stop.load(Ordering::Relaxed) {
                client
                    .batch_execute("INSERT INTO elsewhere VALUES (1)")
                    .await
                    .unwrap_or_else(|e| panic!("write in postgres: {}", describe_pg_error(&e)));
                writes += 1;
                // Often enough that every chunk's fence lies at a new position: a backfill
                // of ten chunks takes a few milliseconds when the connector is fast, and with
                // a write every 20 ms its checkpoints carried at most two cursors.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            writes
        })
    };
    let mut config = read_only_config(&db);
    config["advanced"]["backfill_chunk_size"] = json!(IDLE_CHUNK);
    let capture = Capture { config, bindings: vec![binding("chaos", &["/id"])], slot: db.slot_name() };
    let conn = Conn::superuser(cluster, &db.name);
    let mut admin = Admin::new(conn);
    let mut committed = Committed::new(None);
    let started = Instant::now();
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    // The cursors of the checkpoints written while the table was backfilled.
    let mut backfill_cursors = std::collections::BTreeSet::new();
    let ending = runner
        .run_until(&mut admin, Instant::now() + IDLE_BOUND, |_, c| {
            if !c.streaming() {
                backfill_cursors.extend(c.cursor().map(crate::driver::lsn_value));
            }
            false
        })
        .await;
    let ending = match ending {
        Some(Ending::TimedOut) | None => {
            runner.kill(&mut admin).await;
            Ending::TimedOut
        }
        Some(ending) => ending,
    };
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let writes = elsewhere.await.expect("the writer in postgres panicked");
    assert!(
        matches!(ending, Ending::Completed),
        "the read-only backfill of an idle database did not finish within {IDLE_BOUND:?}: {}",
        ending.describe()
    );
    let expected = table_rows(admin.client().await, "test.chaos").await;
    assert_matches_table(&committed, &expected, test);
    assert!(committed.streaming(), "the backfill is not done: {}", committed.state);
    assert!(
        committed.checkpoints as i64 > IDLE_ROWS / IDLE_CHUNK,
        "{} checkpoints: the backfill did not take a fence per chunk",
        committed.checkpoints
    );
    assert_eq!(writes > 0, writes_elsewhere, "{writes} writes in database postgres");
    if writes_elsewhere {
        // Fences passed by keepalives move the cursor (and so the slot) on while nothing
        // commits in the database: the slot does not keep the other databases' WAL for the
        // whole backfill.
        assert!(
            backfill_cursors.len() > 2,
            "the cursor did not move during the backfill of an idle database ({writes} writes elsewhere in {took:?}): {backfill_cursors:?}"
        );
    }
    assert_eq!(watermark_tables(&mut admin).await, Vec::<String>::new(), "a watermarks table exists");
    assert_eq!(
        committed.documents, IDLE_ROWS as u64,
        "only the backfill's documents: nothing committed in the database"
    );
    eprintln!(
        "read-only {test}: {} rows in {} checkpoints ({} cursors while backfilling) in {:.1} s, {writes} writes in database postgres meanwhile",
        committed.rows.len(),
        committed.checkpoints,
        backfill_cursors.len(),
        took.as_secs_f64()
    );
}

/// A read-only capture records no slot ownership (that would be a write): with an empty state
/// it leaves an existing slot of its name alone and says what to do, and once the slot is gone
/// it creates its own and captures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_capture_leaves_a_slot_it_cannot_prove_its_own() {
    let db = TestDb::create("read_only_foreign_slot").await;
    db.execute(
        "CREATE TABLE test.chaos (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL, big text NOT NULL);
         INSERT INTO test.chaos SELECT g, 0, 'p', 's' FROM generate_series(1, 10) g;",
    )
    .await;
    read_only_role(&db).await;
    let slot = db.slot_name();
    let admin_client = db.superuser_client().await;
    admin_client
        .execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot])
        .await
        .unwrap_or_else(|e| panic!("create the slot: {}", describe_pg_error(&e)));
    let capture =
        Capture { config: read_only_config(&db), bindings: vec![binding("chaos", &["/id"])], slot: slot.clone() };
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));
    let mut committed = Committed::new(None);
    let env = [("SHUTDOWN_AFTER_POLLING", "yes")];
    let ending = Runner::open(&capture, &mut committed, &mut admin, &env).await.finish(&mut admin, IDLE_BOUND).await;
    let Ending::Failed { error: Some(error), .. } = &ending else {
        panic!("the capture did not refuse the slot: {}", ending.describe())
    };
    assert!(error.contains("nothing shows that this capture created it"), "{error}");
    let exists: bool = admin_client
        .query_one("SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)", &[&slot])
        .await
        .expect("look for the slot")
        .get(0);
    assert!(exists, "the slot was dropped");
    admin.wait_slot_released(&slot, Duration::from_secs(30)).await;
    admin_client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("drop the slot");
    let ending = Runner::open(&capture, &mut committed, &mut admin, &env).await.finish(&mut admin, IDLE_BOUND).await;
    assert!(matches!(ending, Ending::Completed), "{}", ending.describe());
    let expected = table_rows(admin.client().await, "test.chaos").await;
    assert_matches_table(&committed, &expected, "read-only capture after the slot was dropped");
}

/// A read-only capture from a hot standby (made with `pg_basebackup` from a private primary),
/// the main use of read-only mode: PostgreSQL 16 and later decode logically on a standby, so
/// the capture backfills (fences at the standby's replay position) and streams under the
/// chaos load written on the primary, and the result equals the table. On older servers the
/// capture must fail with the server's reason instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_capture_from_a_hot_standby() {
    let seed = seed();
    let primary = PrivateCluster::start(&[]).await;
    let database = primary.create_db("read_only_standby").await;
    let conn = Conn::superuser(&primary.cluster, &database);
    let client = conn.connect_retrying(Duration::from_secs(30)).await;
    create_chaos_table(&client, "test.chaos", 0, INITIAL_ROWS, seed).await;
    let version: i32 =
        client.query_one("SELECT current_setting('server_version_num')::int", &[]).await.expect("version").get(0);
    let standby = primary.start_standby(&["hot_standby_feedback=on"]).await;
    let standby_conn = Conn::superuser(&standby.cluster, &database);
    let mut admin = Admin::new(standby_conn.clone());
    let in_recovery: bool =
        admin.client().await.query_one("SELECT pg_is_in_recovery()", &[]).await.expect("recovery").get(0);
    assert!(in_recovery, "the standby is not in recovery");
    let slot = "slot_read_only_standby".to_string();
    let mut config = standby.endpoint_config(&database, &slot);
    config["advanced"]["read_only_capture"] = json!(true);
    let capture = chaos_capture(config, slot, &["chaos"]);
    let mut committed = Committed::new(Some("counter"));
    if version < 160_000 {
        let runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
        let ending = runner.finish(&mut admin, Duration::from_secs(60)).await;
        let Ending::Failed { error: Some(error), .. } = &ending else {
            panic!("a capture from a PostgreSQL {version} standby did not fail: {}", ending.describe())
        };
        assert!(error.contains("recovery"), "the error does not say why: {error}");
        return;
    }
    // A standby builds a slot's starting snapshot from the primary's running-transactions
    // records, written every 15 s otherwise.
    let stop = Arc::new(AtomicBool::new(false));
    let snapshots = {
        let stop = stop.clone();
        let client = conn.connect_retrying(Duration::from_secs(30)).await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = client.batch_execute("SELECT pg_log_standby_snapshot()").await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let workload = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    runner
        .reach(
            &mut admin,
            Duration::from_secs(120),
            &format!("the read-only capture from a standby did not reach streaming (seed {seed})"),
            |p, c| c.streaming() && p.change_documents > 200 && p.checkpoints > 10,
        )
        .await;
    runner.kill(&mut admin).await;
    let stats = workload.stop().await;
    // The standby replays everything the primary wrote before the final run reads it.
    let written: String = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.expect("primary LSN").get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replayed: bool = admin
            .client()
            .await
            .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&written])
            .await
            .expect("replay LSN")
            .get(0);
        if replayed {
            break;
        }
        assert!(Instant::now() < deadline, "the standby did not replay up to {written}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    final_run(&capture, &mut committed, &mut admin).await;
    stop.store(true, Ordering::Relaxed);
    snapshots.await.expect("the snapshot task panicked");
    let context = format!("standby, server_version_num {version}, seed {seed}");
    let expected = table_rows(&client, "test.chaos").await;
    assert_matches_table(&committed, &expected, &context);
    assert!(stats.deletes > 0 && stats.inserts > 0, "the load did not insert and delete ({context}): {stats:?}");
    eprintln!(
        "read-only from a standby ({context}): {} checkpoints, {} documents, {} rows; load {stats:?}",
        committed.checkpoints,
        committed.documents,
        committed.rows.len()
    );
}
