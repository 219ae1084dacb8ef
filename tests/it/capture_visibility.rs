//! A commit the replication stream delivers before it is visible to queries.
//!
//! PostgreSQL writes a transaction's commit record, then (with synchronous replication) waits
//! for the standby's confirmation, and only then removes the transaction from the set of
//! running ones: until that moment no new snapshot sees it. The logical walsender does not
//! wait for standbys: it decodes and sends the transaction as soon as its commit record is
//! flushed locally. So the stream can carry a change that a backfill query started *after*
//! the following watermark fence does not see. Without synchronous replication the same
//! window exists, for microseconds, between every commit's WAL flush and its visibility
//! (the concurrency test once lost an update to it).
//!
//! A precise backfill drops changes to rows it has not read yet, trusting the chunk that
//! reads them later to see them; a normal backfill emits them, and the later chunk must not
//! overwrite them with an older row. Both need the chunk's snapshot to see every transaction
//! the stream delivered before its fence. The test holds one update in exactly that state
//! (a synchronous standby that never answers) while a capture backfills, then releases it:
//! the captured documents must equal the table.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::driver::binding;
use crate::faults_common::{assert_matches_table, table_rows, Admin, Capture, Committed, Conn, Ending, Runner};
use crate::harness::{describe_pg_error, PrivateCluster};

/// `hold`: how long the update stays invisible while the capture runs.
async fn backfill_waits_for_a_commit_that_is_not_visible_yet(mode: &str, hold: Duration) {
    // Commits wait for a standby named "phantom" (which never connects) only in sessions that
    // ask for it: everything else, the connector included, commits locally.
    let private = PrivateCluster::start(&["synchronous_standby_names=phantom", "synchronous_commit=local"]).await;
    let database = private.create_db(&format!("visibility_{}", mode.to_lowercase())).await;
    let conn = Conn::superuser(&private.cluster, &database);
    let admin_client = conn.connect_retrying(Duration::from_secs(30)).await;
    let slot = format!("slot_visibility_{}", mode.to_lowercase());
    admin_client
        .batch_execute(
            "CREATE TABLE test.rows (id bigint PRIMARY KEY, counter bigint NOT NULL);
             INSERT INTO test.rows SELECT g, 0 FROM generate_series(1, 40) g;
             CREATE TABLE test.other (id bigint PRIMARY KEY, counter bigint NOT NULL);
             INSERT INTO test.other VALUES (1000, 0);",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe_pg_error(&e)));
    let mut config = private.endpoint_config(&database, &slot);
    config["advanced"]["backfill_chunk_size"] = json!(5);
    let mut admin = Admin::new(conn.clone());
    let mut committed = Committed::new(Some("counter"));

    // A first capture of another table creates the slot and leaves a cursor, so that the
    // next session streams from before the update (creating a slot would wait for it).
    let first = Capture { config: config.clone(), bindings: vec![binding("other", &["/id"])], slot: slot.clone() };
    let runner = Runner::open(&first, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    match runner.finish(&mut admin, Duration::from_secs(60)).await {
        Ending::Completed => {}
        other => panic!("the first capture failed: {}", other.describe()),
    }

    // The update commits in the WAL after the slot's start, and then waits for the standby:
    // the stream will deliver it, no snapshot sees it.
    let writer = conn.connect_retrying(Duration::from_secs(30)).await;
    let writer_pid: i32 = writer.query_one("SELECT pg_backend_pid()", &[]).await.expect("writer pid").get(0);
    let update = tokio::spawn(async move {
        writer.batch_execute("SET synchronous_commit = on; UPDATE test.rows SET counter = 1 WHERE id = 33").await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: bool = admin_client
            .query_one(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'",
                &[&writer_pid],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting {
            break;
        }
        assert!(Instant::now() < deadline, "the update never started waiting for the synchronous standby");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let invisible: i64 =
        admin_client.query_one("SELECT counter FROM test.rows WHERE id = 33", &[]).await.expect("read").get(0);
    assert_eq!(invisible, 0, "the waiting update is already visible: the test would prove nothing");

    // The table is added to the capture: its backfill starts while the stream delivers the
    // update it cannot see.
    let mut rows = binding("rows", &["/id"]);
    rows["resourceConfig"]["mode"] = json!(mode);
    let capture = Capture { config, bindings: vec![binding("other", &["/id"]), rows], slot };
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;

    // While the update is held, the backfill must not complete with the row's old value.
    let held = runner.run_until(&mut admin, Instant::now() + hold, |_, _| false).await;
    let held = match held {
        Some(Ending::TimedOut) => "held".to_string(),
        Some(ending) => ending.describe(),
        None => "stopped".to_string(),
    };

    // Release it: cancelling the wait leaves the transaction committed, now visible.
    admin_client.query_one("SELECT pg_cancel_backend($1)", &[&writer_pid]).await.expect("cancel the wait");
    update.await.expect("writer task").unwrap_or_else(|e| panic!("the update failed: {}", describe_pg_error(&e)));
    let visible: i64 =
        admin_client.query_one("SELECT counter FROM test.rows WHERE id = 33", &[]).await.expect("read").get(0);
    assert_eq!(visible, 1, "the released update is not visible");

    // No correct capture can finish this backfill before the update is visible: the row's
    // current value cannot be read until then.
    assert_eq!(held, "held", "the capture ended while the update it had been sent was invisible to its queries");
    // A long wait is reported, naming the likely cause.
    let warned = runner.stderr_lines().await.iter().any(|line| {
        let line: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        line["level"] == "warn" && line["msg"].as_str().is_some_and(|m| m.contains("synchronous_standby_names"))
    });
    assert_eq!(warned, hold > Duration::from_secs(5), "a wait of {hold:?} was reported: {warned}");
    match runner.finish(&mut admin, Duration::from_secs(60)).await {
        Ending::Completed => {}
        other => panic!("the capture did not complete after the update became visible: {}", other.describe()),
    }
    let mut table = table_rows(admin.client().await, "test.rows").await;
    table.extend(table_rows(admin.client().await, "test.other").await);
    assert_matches_table(&committed, &table, &format!("mode {mode}"));
    assert!(committed.streaming(), "the backfill did not complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precise_backfill_waits_for_a_delivered_commit_to_become_visible() {
    backfill_waits_for_a_commit_that_is_not_visible_yet("Precise", Duration::from_secs(7)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_backfill_waits_for_a_delivered_commit_to_become_visible() {
    backfill_waits_for_a_commit_that_is_not_visible_yet("Normal", Duration::from_secs(3)).await;
}

/// A catch-up that delivers thousands of transactions for a table whose backfill is under
/// way: the set of delivered transactions is cut down with a fresh snapshot as it grows
/// (memory stays bounded), and the capture still converges to the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_catch_up_during_a_backfill_keeps_the_delivered_set_bounded() {
    let private = PrivateCluster::start(&[]).await;
    let database = private.create_db("visibility_catch_up").await;
    let conn = Conn::superuser(&private.cluster, &database);
    let admin_client = conn.connect_retrying(Duration::from_secs(30)).await;
    admin_client
        .batch_execute(
            "CREATE TABLE test.many (id bigint PRIMARY KEY, counter bigint NOT NULL);
             INSERT INTO test.many SELECT g, 0 FROM generate_series(1, 200) g;",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe_pg_error(&e)));
    let mut config = private.endpoint_config(&database, "slot_visibility_catch_up");
    config["advanced"]["backfill_chunk_size"] = json!(10);
    let capture =
        Capture { config, bindings: vec![binding("many", &["/id"])], slot: "slot_visibility_catch_up".into() };
    let mut admin = Admin::new(conn.clone());
    let mut committed = Committed::new(Some("counter"));

    // Part of the backfill, then the connector is gone.
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "no")]).await;
    runner.reach(&mut admin, Duration::from_secs(60), "the first session ended early", |_, c| c.checkpoints >= 4).await;
    runner.kill(&mut admin).await;
    assert!(!committed.streaming(), "the backfill finished before the connector was stopped");

    // 6000 transactions on rows the backfill has not read yet.
    admin_client
        .batch_execute(
            "DO $$ BEGIN
               FOR i IN 1..6000 LOOP
                 UPDATE test.many SET counter = counter + 1 WHERE id = 150 + i % 50;
                 COMMIT;
               END LOOP;
             END $$;",
        )
        .await
        .unwrap_or_else(|e| panic!("updates: {}", describe_pg_error(&e)));

    let mut runner = Runner::open(
        &capture,
        &mut committed,
        &mut admin,
        &[("SHUTDOWN_AFTER_POLLING", "yes"), ("LOG_LEVEL", "debug")],
    )
    .await;
    let ending = runner.run_until(&mut admin, Instant::now() + Duration::from_secs(120), |_, _| false).await;
    let stderr = runner.stderr_lines().await;
    match ending {
        Some(Ending::Completed) => {}
        other => panic!("the resumed capture did not complete: {}", other.map(|e| e.describe()).unwrap_or_default()),
    }
    let forgets = stderr
        .iter()
        .filter(|line| line.contains("delivered transactions seen by a fresh snapshot were forgotten"))
        .count();
    assert!(forgets >= 1, "6000 delivered transactions never made the capture cut its set down");
    let table = table_rows(admin.client().await, "test.many").await;
    assert_matches_table(&committed, &table, "catch-up");
    assert!(committed.streaming(), "the backfill did not complete");
}
