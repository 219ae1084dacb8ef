//! Fault injection: the connector is killed with SIGKILL at random moments while a writer
//! inserts, updates and deletes the very rows it is backfilling and streaming, and is
//! restarted each time from the last checkpoint the driver committed (as the Flow runtime
//! would). The driver plays the runtime ([`crate::faults_common::Runner`]): it commits
//! documents only at checkpoints, reduces them by key (merge; `op: d` deletes), merges state
//! patches, and acknowledges.
//!
//! Invariants checked (see [`crate::faults_common`]):
//! - after a final clean run, the reduced documents equal the table, row for row;
//! - no key's committed history goes backwards: each row carries a counter that only ever
//!   increases, and the value committed for a key never decreases from one checkpoint to
//!   the next, and a deleted key never reappears (deleted keys are never reused);
//! - the replication slot's confirmed position never passes the cursor of the last
//!   checkpoint the driver acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::driver::binding;
use crate::faults_common::{
    assert_matches_table, final_run, table_rows, Admin, Capture, Committed, Conn, Ending, Runner,
};
use crate::harness::{cluster, TestDb};

/// Random single-row and multi-row changes until stopped.
async fn write_load(db_client: tokio_postgres::Client, stop: Arc<AtomicBool>, seed: u64) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next_id: i64 = 100_000;
    let mut transactions = 0;
    while !stop.load(Ordering::Relaxed) {
        let id: i64 = rng.gen_range(1..=3_000);
        let result = match rng.gen_range(0..10) {
            0..=4 => db_client
                .execute("UPDATE test.stress SET counter = counter + 1 WHERE id = $1", &[&id])
                .await
                .map(|_| ()),
            5 => {
                db_client
                    .batch_execute(&format!(
                        "BEGIN; UPDATE test.stress SET counter = counter + 1 WHERE id BETWEEN {id} AND {}; \
                     UPDATE test.stress SET pad = pad || 'y', counter = counter + 1 WHERE id = {}; COMMIT;",
                        id + 20,
                        (id + 7) % 3_000 + 1
                    ))
                    .await
            }
            6 => db_client.execute("DELETE FROM test.stress WHERE id = $1", &[&id]).await.map(|_| ()),
            _ => {
                next_id += 1;
                db_client.execute("INSERT INTO test.stress VALUES ($1, 0, 'new')", &[&next_id]).await.map(|_| ())
            }
        };
        result.expect("write load statement");
        transactions += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..4))).await;
    }
    transactions
}

async fn run_once(run: u64, seed: u64) {
    let db = TestDb::create(&format!("faults_run_{run}")).await;
    db.execute(
        "CREATE TABLE test.stress (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL);
         INSERT INTO test.stress SELECT g, 0, repeat('p', (g % 40)::int) FROM generate_series(1, 3000) g;",
    )
    .await;
    let mut config = db.endpoint_config();
    config["advanced"]["backfill_chunk_size"] = json!(150);
    let mut stress = binding("stress", &["/id"]);
    if let Ok(mode) = std::env::var("FAULT_MODE") {
        stress["resourceConfig"]["mode"] = json!(mode);
    }
    let capture = Capture { config, bindings: vec![stress], slot: db.slot_name() };
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(db.superuser_client().await, stop.clone(), seed));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut committed = Committed::new(Some("counter"));
    let mut kills = 0;
    for _ in 0..6 {
        let kill_after = Duration::from_millis(rng.gen_range(150..1_500));
        let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[("SHUTDOWN_AFTER_POLLING", "no")]).await;
        match runner.run_until(&mut admin, tokio::time::Instant::now() + kill_after, |_, _| false).await {
            Some(Ending::TimedOut) => {
                // Documents after the last checkpoint were never committed: dropped.
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

    let table = table_rows(admin.client().await, "test.stress").await;
    assert_matches_table(&committed, &table, &format!("seed {seed}"));
    eprintln!(
        "fault run {run}: seed {seed}, {kills} kills, {transactions} writer transactions, {} checkpoints, {} rows",
        committed.checkpoints,
        table.len()
    );
}

/// `FAULT_RUNS` consecutive runs (default 10), each with its own seed (`FAULT_SEED` fixes
/// the first; the seed is printed on failure for replay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_captures_converge_to_the_table_without_going_backwards() {
    let runs: u64 = std::env::var("FAULT_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let first_seed: u64 =
        std::env::var("FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::random::<u32>().into());
    for run in 0..runs {
        run_once(run, first_seed + run).await;
    }
}
