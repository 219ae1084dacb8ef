//! Chaos: the capture under a concurrent write load meets the faults of production — a crash
//! at each named failpoint of the connector, a PostgreSQL immediate restart, network cuts and
//! stalls, a dropped slot, a table dropped from the publication, a table dropped and recreated
//! — and must either carry on or fail clearly, then resume from the last committed checkpoint
//! without losing or replaying anything.
//!
//! The driver is [`crate::faults_common::Runner`] (it plays the runtime: documents are
//! committed only at checkpoints, reduced by key with the `merge` reduction), and after a final
//! clean run the invariants of [`crate::faults_common`] are checked: the documents equal the
//! table, no key's history went backwards, the slot was never confirmed past the acknowledged
//! cursor.
//!
//! The write load ([`Workload`]) mixes single-row updates, multi-row transactions, deletes,
//! inserts, primary-key changes, updates that change a TOAST value and (far more) updates that
//! leave it unchanged (a `big` column of 3000 random alphanumeric bytes, which pglz cannot
//! compress, so it is stored out of line; under `REPLICA IDENTITY DEFAULT` the connector omits
//! it from such updates and the merge reduction must keep the stored value), and one in 25
//! transactions far larger than `logical_decoding_work_mem`, which is set to 64kB for the test's
//! database, so that PostgreSQL 14+ streams it to the connector in progress.
//!
//! `CHAOS_SEED` fixes the seed (printed in every failure message).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::driver::binding;
use crate::faults_common::{
    assert_matches_table, check_slot, final_run, table_rows, Admin, Capture, Committed, Conn, Ending, Proxy, Runner,
};
use crate::harness::{cluster, describe_pg_error, run_connector, PrivateCluster, TestDb};

/// Rows of the chaos table before the load starts.
pub(crate) const INITIAL_ROWS: i64 = 2_000;
/// Keys the workload inserts start here (never reused).
const FRESH_IDS: i64 = 1_000_000;
/// Marker rows written by the tests themselves start here.
const MARKERS: i64 = 900_000_000;
/// The id offset of a second table's rows, far from the first's.
const SECOND_TABLE: i64 = 10_000_000_000;
/// Rows per backfill chunk, so that a backfill takes many chunks.
pub(crate) const CHUNK: i64 = 100;
/// One transaction in this many is larger than `logical_decoding_work_mem`.
const LARGE_EVERY: u32 = 25;
/// Length of the out-of-line TOAST values.
const TOAST_BYTES: usize = 3_000;

pub(crate) fn seed() -> u64 {
    std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::random::<u32>().into())
}

fn random_text(rng: &mut StdRng, len: usize) -> String {
    rng.sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Create `table` (`id bigint PRIMARY KEY, counter bigint, pad text, big text`) with `rows`
/// rows whose ids start after `offset`; every third row's `big` is a TOAST value.
pub(crate) async fn create_chaos_table(client: &Client, table: &str, offset: i64, rows: i64, seed: u64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL, big text NOT NULL)"
        ))
        .await
        .unwrap_or_else(|e| panic!("create {table}: {}", describe_pg_error(&e)));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7ab1e);
    let mut first = 1;
    while first <= rows {
        let ids: Vec<i64> = (first..=(first + 99).min(rows)).map(|i| offset + i).collect();
        let bigs: Vec<String> =
            ids.iter().map(|id| if id % 3 == 0 { random_text(&mut rng, TOAST_BYTES) } else { "s".into() }).collect();
        client
            .execute(
                &format!("INSERT INTO {table} SELECT id, 0, repeat('p', (id % 40)::int), big FROM unnest($1::bigint[], $2::text[]) AS u(id, big)"),
                &[&ids, &bigs],
            )
            .await
            .unwrap_or_else(|e| panic!("fill {table}: {}", describe_pg_error(&e)));
        first += 100;
    }
}

/// Per-database settings, picked up by every later session (walsenders included).
pub(crate) async fn set_database(conn: &Conn, settings: &[(&str, &str)]) {
    let client = conn.connect_retrying(Duration::from_secs(30)).await;
    for (name, value) in settings {
        client
            .batch_execute(&format!("ALTER DATABASE \"{}\" SET {name} = '{value}'", conn.database))
            .await
            .unwrap_or_else(|e| panic!("set {name}: {}", describe_pg_error(&e)));
    }
}

/// A capture of `test.<table>` for each table, with small backfill chunks.
pub(crate) fn chaos_capture(mut config: Value, slot: String, tables: &[&str]) -> Capture {
    config["advanced"]["backfill_chunk_size"] = json!(CHUNK);
    Capture { config, bindings: tables.iter().map(|t| binding(t, &["/id"])).collect(), slot }
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WorkloadStats {
    pub(crate) transactions: u64,
    pub(crate) large: u64,
    pub(crate) multi_row: u64,
    pub(crate) key_changes: u64,
    pub(crate) toast_changes: u64,
    pub(crate) deletes: u64,
    pub(crate) inserts: u64,
    pub(crate) reconnects: u64,
}

impl WorkloadStats {
    fn add(&mut self, other: WorkloadStats) {
        self.transactions += other.transactions;
        self.large += other.large;
        self.multi_row += other.multi_row;
        self.key_changes += other.key_changes;
        self.toast_changes += other.toast_changes;
        self.deletes += other.deletes;
        self.inserts += other.inserts;
        self.reconnects += other.reconnects;
    }
}

/// The concurrent writer of one table (see the module docs). It reconnects after the server
/// cut its connection; a statement that fails otherwise fails the test.
pub(crate) struct Workload {
    stop: Arc<AtomicBool>,
    /// Held by the writer for each transaction: a test takes it to run DDL in between.
    pause: Arc<tokio::sync::Mutex<()>>,
    task: JoinHandle<WorkloadStats>,
}

impl Workload {
    pub(crate) fn start(conn: Conn, table: &str, offset: i64, seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(tokio::sync::Mutex::new(()));
        let task = tokio::spawn(write_load(conn, table.to_string(), offset, seed, stop.clone(), pause.clone()));
        Workload { stop, pause, task }
    }

    pub(crate) async fn stop(self) -> WorkloadStats {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the workload panicked")
    }
}

/// Whether a failed statement lost its connection (then its outcome is unknown, which is fine:
/// the final comparison is with the table).
fn lost_connection(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
    }
}

async fn write_load(
    conn: Conn,
    table: String,
    offset: i64,
    seed: u64,
    stop: Arc<AtomicBool>,
    pause: Arc<tokio::sync::Mutex<()>>,
) -> WorkloadStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = conn.connect_retrying(Duration::from_secs(60)).await;
    let mut stats = WorkloadStats::default();
    let mut next_id = offset + FRESH_IDS;
    let mut since_large = 0;
    // The first transactions make one change of each kind (rolls of `one_transaction`, then a
    // large one), so that even a short test sees them all.
    let mut first_kinds = [Some(40), Some(50), Some(58), Some(73), Some(80), None].into_iter();
    while !stop.load(Ordering::Relaxed) {
        let forced = first_kinds.next();
        let large = since_large >= LARGE_EVERY || forced == Some(None);
        since_large += 1;
        let guard = pause.lock().await;
        let result =
            one_transaction(&mut client, &table, offset, &mut rng, &mut next_id, large, forced.flatten()).await;
        drop(guard);
        match result {
            Ok(kind) => {
                stats.transactions += 1;
                match kind {
                    "large" => {
                        stats.large += 1;
                        since_large = 0;
                    }
                    "multi_row" => stats.multi_row += 1,
                    "key_change" => stats.key_changes += 1,
                    "toast_change" => stats.toast_changes += 1,
                    "delete" => stats.deletes += 1,
                    "insert" => stats.inserts += 1,
                    _ => {}
                }
            }
            Err(e) if lost_connection(&e) || client.is_closed() => {
                stats.reconnects += 1;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return stats;
                    }
                    match conn.connect().await {
                        Ok(c) => {
                            client = c;
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            Err(e) => panic!("a workload statement on {table} failed (seed {seed}): {}", describe_pg_error(&e)),
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..4))).await;
    }
    stats
}

async fn one_transaction(
    client: &mut Client,
    table: &str,
    offset: i64,
    rng: &mut StdRng,
    next_id: &mut i64,
    large: bool,
    roll: Option<u32>,
) -> Result<&'static str, tokio_postgres::Error> {
    let fresh = offset + FRESH_IDS;
    let id: i64 = if *next_id > fresh && rng.gen_bool(0.3) {
        rng.gen_range(fresh..*next_id)
    } else {
        offset + rng.gen_range(1..=INITIAL_ROWS)
    };
    if large {
        // About 400 changes of a few hundred bytes each: well past 64kB of decoding memory.
        let base = *next_id;
        *next_id += 200;
        let transaction = client.transaction().await?;
        transaction
            .execute(&format!("UPDATE {table} SET counter = counter + 1 WHERE id BETWEEN $1 AND $1 + 200"), &[&id])
            .await?;
        transaction
            .execute(&format!("INSERT INTO {table} SELECT g, 0, repeat('L', 300), 's' FROM generate_series($1::bigint, $1::bigint + 199) g"), &[&base])
            .await?;
        transaction.commit().await?;
        return Ok("large");
    }
    Ok(match roll.unwrap_or_else(|| rng.gen_range(0..100)) {
        0..=39 => {
            // Leaves `big` unchanged: an out-of-line value is then omitted from the document.
            client.execute(&format!("UPDATE {table} SET counter = counter + 1 WHERE id = $1"), &[&id]).await?;
            "update"
        }
        40..=49 => {
            let other = offset + rng.gen_range(1..=INITIAL_ROWS);
            let transaction = client.transaction().await?;
            transaction
                .execute(&format!("UPDATE {table} SET counter = counter + 1 WHERE id BETWEEN $1 AND $1 + 20"), &[&id])
                .await?;
            transaction
                .execute(
                    &format!("UPDATE {table} SET pad = pad || 'y', counter = counter + 1 WHERE id = $1"),
                    &[&other],
                )
                .await?;
            transaction.commit().await?;
            "multi_row"
        }
        50..=57 => {
            client.execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&id]).await?;
            "delete"
        }
        58..=72 => {
            let new = *next_id;
            *next_id += 1;
            let big = if rng.gen_bool(0.4) { random_text(rng, TOAST_BYTES) } else { "s".to_string() };
            client.execute(&format!("INSERT INTO {table} VALUES ($1, 0, 'new', $2)"), &[&new, &big]).await?;
            "insert"
        }
        73..=79 => {
            // A primary-key change. `big || ''` rewrites the TOAST value: under REPLICA
            // IDENTITY DEFAULT an unchanged one could not follow the row to its new key
            // (documented; see docs/reliability.md).
            let new = *next_id;
            *next_id += 1;
            client
                .execute(
                    &format!("UPDATE {table} SET id = $2, counter = counter + 1, big = big || '' WHERE id = $1"),
                    &[&id, &new],
                )
                .await?;
            "key_change"
        }
        80..=87 => {
            let big = random_text(rng, TOAST_BYTES);
            client
                .execute(&format!("UPDATE {table} SET big = $2, counter = counter + 1 WHERE id = $1"), &[&id, &big])
                .await?;
            "toast_change"
        }
        _ => {
            client
                .execute(&format!("UPDATE {table} SET pad = pad || 'z', counter = counter + 1 WHERE id = $1"), &[&id])
                .await?;
            "update"
        }
    })
}

/// Transactions PostgreSQL streamed in progress through `slot` (PostgreSQL 14+; statistics
/// do not survive a crash restart).
async fn streamed_transactions(client: &Client, slot: &str) -> Option<i64> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .expect("server version")
        .get(0);
    if version < 140_000 {
        return None;
    }
    let row = client
        .query_opt("SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .expect("read pg_stat_replication_slots");
    Some(row.map_or(0, |row| row.get(0)))
}

/// The checks after a final run: the documents equal the tables, and the load did exercise
/// what it claims to (every kind of change, omitted TOAST values, streamed transactions).
async fn verify(
    committed: &Committed,
    admin: &mut Admin,
    slot: &str,
    tables: &[&str],
    stats: &WorkloadStats,
    streamed: bool,
    context: &str,
) {
    let mut expected = BTreeMap::new();
    for table in tables {
        expected.extend(table_rows(admin.client().await, table).await);
    }
    assert_matches_table(committed, &expected, context);
    assert!(
        stats.large > 0
            && stats.multi_row > 0
            && stats.key_changes > 0
            && stats.toast_changes > 0
            && stats.deletes > 0
            && stats.inserts > 0,
        "the load did not make every kind of change ({context}): {stats:?}"
    );
    let omitted = committed.omitted.get("big").copied().unwrap_or(0);
    assert!(omitted > 0, "no update document omitted the unchanged TOAST column: that path went untested ({context})");
    if streamed {
        if let Some(streamed) = streamed_transactions(admin.client().await, slot).await {
            assert!(streamed > 0, "PostgreSQL streamed no in-progress transaction to the capture ({context})");
        }
    }
}

/// The connector exited with status 1 and a last stderr line at level error whose message
/// contains one of `words` (lowercase).
fn assert_clear_error(ending: &Ending, words: &[&str], what: &str) -> String {
    let Ending::Failed { status, error, stderr } = ending else {
        panic!("{what}: the connector should have failed, but it {}", ending.describe())
    };
    assert_eq!(status.code(), Some(1), "{what}: exit status: {}", ending.describe());
    let last: Value = stderr.last().and_then(|line| serde_json::from_str(line).ok()).unwrap_or(Value::Null);
    assert_eq!(last["level"], "error", "{what}: the last stderr line is not the error: {}", ending.describe());
    let error = error.clone().unwrap_or_default();
    let lower = error.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "{what}: the error does not say what happened (expected one of {words:?}): {error}"
    );
    error
}

/// Words an error about a lost connection uses.
const CONNECTION_WORDS: [&str; 3] = ["connection", "communicating with the server", "server closed"];

/// After a fault that cut the connector off its server: it must either fail with a clear
/// error within 30 s, or survive — which only counts if a row written after the fault (a
/// marker) arrives in a committed checkpoint. Returns what happened, for the report.
#[allow(clippy::too_many_arguments)]
async fn fail_or_survive(
    mut runner: Runner<'_>,
    admin: &mut Admin,
    conn: &Conn,
    table: &str,
    marker: i64,
    words: &[&str],
    what: &str,
    fault_at: std::time::Instant,
) -> String {
    let client = conn.connect_retrying(Duration::from_secs(60)).await;
    client
        .execute(&format!("INSERT INTO {table} VALUES ($1, 0, 'marker', 's')"), &[&marker])
        .await
        .unwrap_or_else(|e| panic!("insert a marker: {}", describe_pg_error(&e)));
    let ending = runner
        .run_until(admin, Instant::now() + Duration::from_secs(30), |_, committed| committed.rows.contains_key(&marker))
        .await;
    match ending {
        None => {
            runner.kill(admin).await;
            format!("{what}: survived (a row written after the fault arrived)")
        }
        Some(Ending::TimedOut) => {
            runner.kill(admin).await;
            panic!(
                "{what}: the connector neither failed nor captured a row written after the fault within 30 s: it hangs"
            )
        }
        Some(ending) => {
            let error = assert_clear_error(&ending, words, what);
            assert!(
                !error.contains("GRANT"),
                "{what}: the error about a lost connection gives a misleading hint (privileges): {error}"
            );
            format!(
                "{what}: failed {:.1} s after the fault: {}",
                fault_at.elapsed().as_secs_f64(),
                error.replace('\n', " | ")
            )
        }
    }
}

// ---- Named failpoints -------------------------------------------------------------------

/// Sessions per failpoint, each stopped by it (`CHAOS_SESSIONS` overrides).
fn failpoint_sessions() -> usize {
    std::env::var("CHAOS_SESSIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(20)
}

/// A captured table of a scenario: `test.<name>`, ids after `offset`.
struct Table {
    name: &'static str,
    offset: i64,
    rows: i64,
}

const ONE_TABLE: &[Table] = &[Table { name: "chaos", offset: 0, rows: INITIAL_ROWS }];
/// Two tables at the same priority: their chunks share backfill rounds (and fences).
const TWO_TABLES: &[Table] = &[
    Table { name: "chaos", offset: 0, rows: INITIAL_ROWS },
    Table { name: "second", offset: SECOND_TABLE, rows: INITIAL_ROWS / 2 },
];

/// Sessions that stop at `point` (`SOURCE_POSTGRES_FAILPOINT=point:n`, `n` drawn from
/// `counts`) under the load (one writer per table), each restarted from the last committed
/// checkpoint; then a session without failpoint under the load, a final clean run and the
/// invariants. With `take_back`, half the time the checkpoint written right before the crash
/// is taken back, as if the runtime had died before committing it.
async fn failpoint_scenario(point: &str, counts: RangeInclusive<u64>, take_back: bool, tables: &[Table]) {
    failpoint_scenario_in(point, counts, take_back, tables, false).await;
}

/// [`failpoint_scenario`], with `read_only` as `advanced.read_only_capture` (fences are WAL
/// positions; the capture role could create a watermarks table, and must not).
async fn failpoint_scenario_in(
    point: &str,
    counts: RangeInclusive<u64>,
    take_back: bool,
    tables: &[Table],
    read_only: bool,
) {
    let started = std::time::Instant::now();
    let seed = seed();
    let mode = if read_only { "_read_only" } else { "" };
    let db = TestDb::create(&format!("chaos_failpoint_{point}{mode}")).await;
    let conn = Conn::superuser(cluster().await, &db.name);
    set_database(&conn, &[("logical_decoding_work_mem", "64kB")]).await;
    let client = db.superuser_client().await;
    for table in tables {
        create_chaos_table(&client, &format!("test.{}", table.name), table.offset, table.rows, seed).await;
    }
    let names: Vec<&str> = tables.iter().map(|t| t.name).collect();
    let qualified: Vec<String> = names.iter().map(|n| format!("test.{n}")).collect();
    let qualified: Vec<&str> = qualified.iter().map(String::as_str).collect();
    let mut config = db.endpoint_config();
    if read_only {
        config["advanced"]["read_only_capture"] = json!(true);
    }
    let capture = chaos_capture(config, db.slot_name(), &names);
    let mut admin = Admin::new(conn.clone());
    let workloads: Vec<Workload> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| Workload::start(conn.clone(), &format!("test.{}", t.name), t.offset, seed + i as u64))
        .collect();
    let mut committed = Committed::new(Some("counter"));
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa11);
    let mut taken_back = 0;
    let mut counts_used = Vec::new();
    let sessions = failpoint_sessions();
    for session in 0..sessions {
        let n = rng.gen_range(counts.clone());
        counts_used.push(n);
        let failpoint = format!("{point}:{n}");
        let runner =
            Runner::open(&capture, &mut committed, &mut admin, &[("SOURCE_POSTGRES_FAILPOINT", failpoint.as_str())])
                .await;
        let ending = runner.finish(&mut admin, Duration::from_secs(30)).await;
        assert_eq!(
            ending.code(),
            Some(source_postgres::failpoint::EXIT_CODE),
            "session {session} with SOURCE_POSTGRES_FAILPOINT={failpoint} (seed {seed}) did not stop at the failpoint within 30 s \
             (if it was still running, it was stuck or the point was never reached): {}",
            ending.describe()
        );
        if take_back && rng.gen_bool(0.5) {
            committed.undo_last();
            taken_back += 1;
            check_slot(&mut admin, &capture.slot, &committed).await;
        }
    }
    // Then a session without failpoint resumes, finishes the backfill and streams under the
    // load (the crashes above may all have hit the backfill).
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    // A liveness bound, not a speed target: the writers keep writing while this session
    // catches up on the backlog of 20 crashed sessions, so the time grows with the load on
    // the machine. On 2 cores under the whole suite it has taken over 120 s, and with two
    // release builds beside the suite over 300 s in all four two-table scenarios at once.
    runner
        .reach(
            &mut admin,
            Duration::from_secs(600),
            &format!("the session after the crashes did not reach streaming (seed {seed})"),
            |p, c| c.streaming() && p.change_documents > 300 && p.checkpoints > 20,
        )
        .await;
    runner.kill(&mut admin).await;
    let mut stats = WorkloadStats::default();
    for workload in workloads {
        stats.add(workload.stop().await);
    }
    final_run(&capture, &mut committed, &mut admin).await;
    let context = format!("failpoint {point}{mode}, counts {counts_used:?}, seed {seed}");
    verify(&committed, &mut admin, &capture.slot, &qualified, &stats, true, &context).await;
    if read_only {
        let created: bool = admin
            .client()
            .await
            .query_one("SELECT to_regclass('public.flow_watermarks') IS NOT NULL", &[])
            .await
            .expect("look for the watermarks table")
            .get(0);
        assert!(!created, "a read-only capture created its watermarks table ({context})");
    }
    eprintln!(
        "chaos failpoint {point} ({} tables): {sessions} sessions stopped at counts {counts_used:?}{}, {} checkpoints, {} documents, {} rows; load {stats:?}; {:.1} s (seed {seed})",
        tables.len(),
        if take_back { format!(" ({taken_back} last checkpoints taken back)") } else { String::new() },
        committed.checkpoints,
        committed.documents,
        committed.rows.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_documents_before_their_checkpoint() {
    failpoint_scenario("after_documents", 1..=30, false, ONE_TABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_checkpoint_before_its_acknowledgement() {
    failpoint_scenario("after_checkpoint", 1..=30, true, ONE_TABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_backfill_chunk() {
    // At most one chunk commits per session: the backfill is still running at every crash.
    failpoint_scenario("mid_chunk", 1..=150, false, TWO_TABLES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_source_transaction() {
    failpoint_scenario("mid_transaction", 1..=400, false, ONE_TABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_watermark_before_its_fence() {
    // One watermark for the catch-up fence, then one per backfill round.
    failpoint_scenario("after_watermark", 1..=3, false, TWO_TABLES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_a_read_only_fence_before_it_is_passed() {
    // The same point in read-only mode: the fence's WAL position read, the stream not past it.
    failpoint_scenario_in("after_watermark", 1..=3, false, TWO_TABLES, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_the_middle_of_a_read_only_backfill_chunk() {
    failpoint_scenario_in("mid_chunk", 1..=150, false, TWO_TABLES, true).await;
}

/// The fault of the restart and network-cut scenarios, hit twice under the load: once during
/// the backfill (after 300 backfill documents) and once while streaming; each time the
/// connector must fail clearly or survive ([`fail_or_survive`]). Then a session must resume
/// and make progress. Returns what happened at each fault, for the report.
async fn fault_during_backfill_and_while_streaming(
    capture: &Capture,
    committed: &mut Committed,
    admin: &mut Admin,
    conn: &Conn,
    fault_name: &str,
    mut fault: impl AsyncFnMut(),
) -> Vec<String> {
    let mut report = Vec::new();

    let mut runner = Runner::open(capture, committed, admin, &[]).await;
    runner
        .reach(admin, Duration::from_secs(60), "the first session ended before 300 backfill documents", |p, _| {
            p.backfill_documents >= 300
        })
        .await;
    assert!(!runner.committed().streaming(), "the backfill is already over: the {fault_name} would not hit it");
    let fault_at = std::time::Instant::now();
    fault().await;
    let what = format!("{fault_name} during backfill");
    report.push(
        fail_or_survive(runner, admin, conn, "test.chaos", MARKERS + 1, &CONNECTION_WORDS, &what, fault_at).await,
    );

    let mut runner = Runner::open(capture, committed, admin, &[]).await;
    runner
        .reach(admin, Duration::from_secs(120), "the second session did not reach streaming", |p, c| {
            c.streaming() && p.change_documents > 100 && p.checkpoints > 20
        })
        .await;
    let fault_at = std::time::Instant::now();
    fault().await;
    let what = format!("{fault_name} while streaming");
    report.push(
        fail_or_survive(runner, admin, conn, "test.chaos", MARKERS + 2, &CONNECTION_WORDS, &what, fault_at).await,
    );

    let mut runner = Runner::open(capture, committed, admin, &[]).await;
    runner
        .reach(
            admin,
            Duration::from_secs(60),
            &format!("the session after the {fault_name}s made no progress"),
            |p, _| p.change_documents > 100 && p.checkpoints > 10,
        )
        .await;
    runner.kill(admin).await;
    report
}

// ---- PostgreSQL immediate restart ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_immediate_restarts_during_backfill_and_streaming() {
    let started = std::time::Instant::now();
    let seed = seed();
    let private = PrivateCluster::start(&["logical_decoding_work_mem=64kB"]).await;
    let database = private.create_db("chaos_restart").await;
    let conn = Conn::superuser(&private.cluster, &database);
    create_chaos_table(&conn.connect_retrying(Duration::from_secs(30)).await, "test.chaos", 0, 2 * INITIAL_ROWS, seed)
        .await;
    let slot = "slot_chaos_restart".to_string();
    let capture = chaos_capture(private.endpoint_config(&database, &slot), slot, &["chaos"]);
    let mut admin = Admin::new(conn.clone());
    let workload = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let mut committed = Committed::new(Some("counter"));
    let report =
        fault_during_backfill_and_while_streaming(&capture, &mut committed, &mut admin, &conn, "restart", async || {
            private.restart_immediate().await
        })
        .await;

    let stats = workload.stop().await;
    assert!(stats.reconnects >= 2, "the load was not cut by the restarts: {stats:?}");
    final_run(&capture, &mut committed, &mut admin).await;
    // Statistics (streamed transactions) do not survive a crash restart.
    verify(&committed, &mut admin, &capture.slot, &["test.chaos"], &stats, false, &format!("restarts, seed {seed}"))
        .await;
    eprintln!(
        "chaos restart: {}; {} checkpoints; load {stats:?}; {:.1} s (seed {seed})",
        report.join("; "),
        committed.checkpoints,
        started.elapsed().as_secs_f64()
    );
}

// ---- Network faults, through a proxy ------------------------------------------------------

/// A shared-cluster database with the chaos table, captured through a proxy.
async fn proxied(test: &str, settings: &[(&str, &str)], seed: u64) -> (TestDb, Conn, Proxy, Capture) {
    let db = TestDb::create(test).await;
    let conn = Conn::superuser(cluster().await, &db.name);
    set_database(&conn, settings).await;
    create_chaos_table(&db.superuser_client().await, "test.chaos", 0, INITIAL_ROWS, seed).await;
    let mut config = db.endpoint_config();
    let proxy = Proxy::start(config["address"].as_str().expect("address").to_string()).await;
    config["address"] = json!(proxy.address);
    let capture = chaos_capture(config, db.slot_name(), &["chaos"]);
    (db, conn, proxy, capture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cuts_during_backfill_and_streaming() {
    let started = std::time::Instant::now();
    let seed = seed();
    let (_db, conn, proxy, capture) =
        proxied("chaos_network_cut", &[("logical_decoding_work_mem", "64kB")], seed).await;
    let mut admin = Admin::new(conn.clone());
    let workload = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let mut committed = Committed::new(Some("counter"));
    let report =
        fault_during_backfill_and_while_streaming(&capture, &mut committed, &mut admin, &conn, "cut", async || {
            proxy.cut()
        })
        .await;

    let stats = workload.stop().await;
    final_run(&capture, &mut committed, &mut admin).await;
    verify(&committed, &mut admin, &capture.slot, &["test.chaos"], &stats, true, &format!("network cuts, seed {seed}"))
        .await;
    eprintln!(
        "chaos network cut: {}; {} checkpoints; load {stats:?}; {:.1} s (seed {seed})",
        report.join("; "),
        committed.checkpoints,
        started.elapsed().as_secs_f64()
    );
}

/// How long a stalled connection may go unnoticed.
const STALL_BOUND: Duration = Duration::from_secs(60);

/// The proxy stops forwarding (sockets stay open) once `when` holds; the connector must give
/// up with an error within [`STALL_BOUND`] instead of hanging; then it resumes through the
/// restored proxy. `wal_sender_timeout` is 3 s for the database, so the status interval is 1 s.
async fn stall_scenario(
    test: &str,
    phase: &str,
    when: impl FnMut(&crate::faults_common::Progress, &Committed) -> bool,
    words: &[&str],
) {
    let started = std::time::Instant::now();
    let seed = seed();
    let (_db, conn, proxy, capture) =
        proxied(test, &[("logical_decoding_work_mem", "64kB"), ("wal_sender_timeout", "3s")], seed).await;
    let mut admin = Admin::new(conn.clone());
    let workload = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let mut committed = Committed::new(Some("counter"));

    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    runner
        .reach(&mut admin, Duration::from_secs(120), &format!("the session ended before the stall ({phase})"), when)
        .await;
    let streaming = runner.committed().streaming();
    proxy.stall();
    let stalled = std::time::Instant::now();
    let ending = runner.finish(&mut admin, STALL_BOUND).await;
    let detected = stalled.elapsed();
    if let Ending::TimedOut = ending {
        panic!("stall {phase}: the connector was still waiting {STALL_BOUND:?} after its connections stopped forwarding (it was killed): a dead connection hangs the capture");
    }
    let error = assert_clear_error(&ending, words, &format!("stall {phase}")).replace('\n', " | ");
    proxy.cut();

    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    runner
        .reach(&mut admin, Duration::from_secs(60), "the session after the stall made no progress", |p, _| {
            p.checkpoints > 10
        })
        .await;
    runner.kill(&mut admin).await;

    let stats = workload.stop().await;
    final_run(&capture, &mut committed, &mut admin).await;
    verify(
        &committed,
        &mut admin,
        &capture.slot,
        &["test.chaos"],
        &stats,
        true,
        &format!("stall {phase}, seed {seed}"),
    )
    .await;
    eprintln!(
        "chaos stall {phase} (streaming: {streaming}): detected after {:.1} s: {error}; load {stats:?}; {:.1} s (seed {seed})",
        detected.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_while_streaming_fails_instead_of_hanging() {
    stall_scenario(
        "chaos_stall_streaming",
        "while streaming",
        |p, c| c.streaming() && p.change_documents > 100 && p.checkpoints > 20,
        &["stopped answering", "not answer"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_during_backfill_fails_instead_of_hanging() {
    stall_scenario(
        "chaos_stall_backfill",
        "during backfill",
        |p, _| p.backfill_documents >= 300,
        &["stopped answering", "not answer", "connection", "timed out", "timeout"],
    )
    .await;
}

// ---- Slot, publication and table changes while capturing ---------------------------------

/// Terminate the walsender holding `slot`, then drop the slot (retrying until the walsender
/// has let go of it).
async fn drop_slot_in_use(client: &Client, slot: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        client
            .execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", &[&slot])
            .await
            .expect("terminate the walsender");
        match client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("could not drop slot {slot}: {}", describe_pg_error(&e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_dropped_while_capturing_fails_clearly_and_a_rebackfill_recovers() {
    let started = std::time::Instant::now();
    let seed = seed();
    let db = TestDb::create("chaos_dropped_slot").await;
    let conn = Conn::superuser(cluster().await, &db.name);
    create_chaos_table(&db.superuser_client().await, "test.chaos", 0, INITIAL_ROWS / 4, seed).await;
    let capture = chaos_capture(db.endpoint_config(), db.slot_name(), &["chaos"]);
    let slot = capture.slot.clone();
    let mut admin = Admin::new(conn.clone());
    let workload = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let mut committed = Committed::new(Some("counter"));

    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    runner
        .reach(&mut admin, Duration::from_secs(60), "the session did not reach streaming", |p, c| {
            c.streaming() && p.checkpoints > 10
        })
        .await;
    drop_slot_in_use(admin.client().await, &slot).await;
    let ending = runner.finish(&mut admin, Duration::from_secs(30)).await;
    let first = assert_clear_error(&ending, &["terminat", "connection", "slot"], "slot dropped while capturing");

    // Restarting from the committed state must not silently start over from "now".
    let runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    let ending = runner.finish(&mut admin, Duration::from_secs(30)).await;
    let second = assert_clear_error(&ending, &["does not exist"], "restart after the slot was dropped");
    assert!(second.contains(&format!("\"{slot}\"")), "the error does not name the slot {slot}: {second}");
    assert!(second.contains("HINT: "), "the error says what to do: {second}");
    assert!(admin.slot(&slot).await.expect("query the slot").is_none(), "the failed restart recreated the slot");

    // The remedy the hint gives: backfill every binding again (the state starts over).
    let mut rebackfilled = Committed::new(Some("counter"));
    let mut runner = Runner::open(&capture, &mut rebackfilled, &mut admin, &[]).await;
    runner
        .reach(&mut admin, Duration::from_secs(60), "the re-backfill did not reach streaming", |p, c| {
            c.streaming() && p.checkpoints > 10
        })
        .await;
    runner.kill(&mut admin).await;
    let stats = workload.stop().await;
    final_run(&capture, &mut rebackfilled, &mut admin).await;
    let table = table_rows(admin.client().await, "test.chaos").await;
    assert_matches_table(&rebackfilled, &table, &format!("re-backfill after a dropped slot, seed {seed}"));
    let (first, second) = (first.replace('\n', " | "), second.replace('\n', " | "));
    eprintln!("chaos dropped slot: while capturing: {first}; on restart: {second}; re-backfill converged; load {stats:?}; {:.1} s (seed {seed})", started.elapsed().as_secs_f64());
}

/// Whether a stderr line is a warning or error that mentions `needle`.
fn complains_about(line: &str, needle: &str) -> bool {
    let Ok(line) = serde_json::from_str::<Value>(line) else { return false };
    matches!(line["level"].as_str(), Some("warn" | "error")) && line.to_string().contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_from_the_publication_while_capturing_is_not_silently_lost() {
    let started = std::time::Instant::now();
    let seed = seed();
    let db = TestDb::create("chaos_publication").await;
    let conn = Conn::superuser(cluster().await, &db.name);
    // A publication of listed tables (the harness's is FOR ALL TABLES), owned by the superuser:
    // the capture user cannot change it.
    let client = db.superuser_client().await;
    create_chaos_table(&client, "test.chaos", 0, 300, seed).await;
    create_chaos_table(&client, "test.control", SECOND_TABLE, 300, seed).await;
    client
        .batch_execute(
            "DROP PUBLICATION flow_publication;
             CREATE TABLE public.flow_watermarks (slot TEXT PRIMARY KEY, watermark TEXT);
             GRANT SELECT, INSERT, UPDATE ON public.flow_watermarks TO flow_capture;
             CREATE PUBLICATION flow_publication FOR TABLE test.chaos, test.control, public.flow_watermarks
               WITH (publish_via_partition_root = true);",
        )
        .await
        .unwrap_or_else(|e| panic!("set up the publication: {}", describe_pg_error(&e)));
    let mut capture = chaos_capture(db.endpoint_config(), db.slot_name(), &["chaos", "control"]);
    // Different priorities: the tables backfill one after the other, never in one round
    // (rounds are the failpoint tests' business), so that only the publication matters here.
    capture.bindings[1]["resourceConfig"]["priority"] = json!(1);
    let mut admin = Admin::new(conn.clone());
    let chaos_load = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let control_load = Workload::start(conn.clone(), "test.control", SECOND_TABLE, seed ^ 1);
    let mut committed = Committed::new(Some("counter"));

    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    runner
        .reach(&mut admin, Duration::from_secs(60), "the session did not reach streaming", |p, c| {
            c.streaming() && p.checkpoints > 10
        })
        .await;
    let lines_before = runner.stderr_lines().await.len();
    client
        .batch_execute("ALTER PUBLICATION flow_publication DROP TABLE test.chaos")
        .await
        .expect("drop the table from the publication");
    let (chaos_marker, control_marker) = (MARKERS + 1, SECOND_TABLE + MARKERS + 1);
    client
        .batch_execute(&format!(
            "INSERT INTO test.chaos VALUES ({chaos_marker}, 0, 'marker', 's'); INSERT INTO test.control VALUES ({control_marker}, 0, 'marker', 's');"
        ))
        .await
        .expect("markers");
    // The capture goes on (the other table's marker arrives), or fails; then give it 30 s
    // to say something about the table it no longer receives.
    let ending = runner
        .run_until(&mut admin, Instant::now() + Duration::from_secs(30), |_, c| c.rows.contains_key(&control_marker))
        .await;
    let what = "table dropped from the publication";
    let check_failure = |ending: &Ending| {
        let error = assert_clear_error(ending, &["publication"], what);
        assert!(error.contains("chaos"), "{what}: the error does not name the table: {error}");
        format!("failed: {error}")
    };
    let outcome = match ending {
        Some(Ending::TimedOut) => panic!("{what}: neither the other table's changes nor an error arrived within 30 s"),
        Some(ending) => check_failure(&ending),
        None => {
            // Keep driving the session (under the load) until it says something, for 30 s.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut complaint = None;
            let mut ended = None;
            while complaint.is_none() && ended.is_none() && Instant::now() < deadline {
                ended = runner
                    .run_until(&mut admin, Instant::now() + Duration::from_millis(500), |_, _| false)
                    .await
                    .filter(|e| !matches!(e, Ending::TimedOut));
                let stderr = runner.stderr_lines().await;
                complaint = stderr[lines_before..]
                    .iter()
                    .find(|line| complains_about(line, "publication") && line.contains("chaos"))
                    .cloned();
            }
            match ended {
                Some(ending) => check_failure(&ending),
                None => {
                    let received = runner.committed().rows.contains_key(&chaos_marker);
                    runner.kill(&mut admin).await;
                    assert!(
                        received || complaint.is_some(),
                        "BUG: after `ALTER PUBLICATION flow_publication DROP TABLE test.chaos`, the capture keeps running, no longer \
                         receives the table's changes, and says nothing (no warning or error within 30 s); the other table's changes still arrive"
                    );
                    match complaint {
                        Some(line) => format!("kept running and warned: {line}"),
                        None => "kept running and still receives the table's changes".into(),
                    }
                }
            }
        }
    };

    // A restart refuses to run without the table in the publication.
    let open = json!({"open": {"capture": {"name": "tests/driver", "config": capture.config, "bindings": capture.bindings}, "state": committed.state}});
    let input = format!("{}\n{}\n", json!({"spec": {}}), open);
    let output = tokio::task::spawn_blocking(move || run_connector(&[], &input, &[("LOG_LEVEL", "warn")]))
        .await
        .expect("run the connector");
    let restart_error =
        crate::faults_common::error_message(&output.stderr.lines().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
    assert_eq!(output.exit_code, 1, "a restart without the table in the publication: {}", output.stderr);
    assert!(
        restart_error.contains("publication") && restart_error.contains("chaos"),
        "the restart's error names neither the publication nor the table: {restart_error}"
    );

    // Put the table back and backfill it again (its changes while it was out are gone from
    // the stream); the capture converges.
    client.batch_execute("ALTER PUBLICATION flow_publication ADD TABLE test.chaos").await.expect("re-add the table");
    if let Some(bindings) = committed.state.get_mut("bindingStateV1").and_then(Value::as_object_mut) {
        bindings.remove("test%2Fchaos");
    }
    for id in committed.rows.keys().copied().filter(|id| *id < SECOND_TABLE).collect::<Vec<_>>() {
        committed.rows.remove(&id);
    }
    let chaos_stats = chaos_load.stop().await;
    let control_stats = control_load.stop().await;
    final_run(&capture, &mut committed, &mut admin).await;
    let mut expected: BTreeMap<i64, Map<String, Value>> = table_rows(admin.client().await, "test.chaos").await;
    expected.extend(table_rows(admin.client().await, "test.control").await);
    assert_matches_table(&committed, &expected, &format!("publication, seed {seed}"));
    eprintln!(
        "chaos publication: {}; restart: {}; loads {chaos_stats:?} {control_stats:?}; {:.1} s (seed {seed})",
        outcome.replace('\n', " | "),
        restart_error.replace('\n', " | "),
        started.elapsed().as_secs_f64()
    );
}

/// The table is dropped and recreated (same columns) between two of the writer's
/// transactions, while streaming or in the middle of its backfill; the capture goes on, also
/// across a restart. Documented behaviour: the old table's captured rows stay in the
/// collection and the new table's rows follow under the same binding. While streaming, every
/// old row had been captured, so the collection must equal the old table's last rows plus the
/// new table. During the backfill, the old rows it had not reached are gone with the table
/// (never captured); every captured old row must still hold its last value.
async fn recreate_scenario(test: &str, during_backfill: bool) {
    let started = std::time::Instant::now();
    let seed = seed();
    let db = TestDb::create(test).await;
    let conn = Conn::superuser(cluster().await, &db.name);
    set_database(&conn, &[("logical_decoding_work_mem", "64kB")]).await;
    let client = db.superuser_client().await;
    create_chaos_table(&client, "test.chaos", 0, INITIAL_ROWS, seed).await;
    let capture = chaos_capture(db.endpoint_config(), db.slot_name(), &["chaos"]);
    let mut admin = Admin::new(conn.clone());
    let workload = Workload::start(conn.clone(), "test.chaos", 0, seed);
    let mut committed = Committed::new(Some("counter"));

    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    let ending = if during_backfill {
        runner.run_until(&mut admin, Instant::now() + Duration::from_secs(60), |p, _| p.backfill_documents >= 300).await
    } else {
        runner
            .run_until(&mut admin, Instant::now() + Duration::from_secs(60), |p, c| {
                c.streaming() && p.change_documents > 100 && p.checkpoints > 10
            })
            .await
    };
    assert!(
        ending.is_none(),
        "the session ended before the swap: {}",
        ending.map(|e| e.describe()).unwrap_or_default()
    );
    assert_eq!(runner.committed().streaming(), !during_backfill, "the swap would not hit the intended phase");
    // Between two of the writer's transactions: the old table's last rows, then the swap.
    let old_rows = {
        let _paused = workload.pause.lock().await;
        let rows = table_rows(&client, "test.chaos").await;
        client
            .batch_execute(
                "BEGIN;
                 DROP TABLE test.chaos;
                 CREATE TABLE test.chaos (id bigint PRIMARY KEY, counter bigint NOT NULL, pad text NOT NULL, big text NOT NULL);
                 COMMIT;",
            )
            .await
            .unwrap_or_else(|e| panic!("drop and recreate the table: {}", describe_pg_error(&e)));
        rows
    };
    // The new table's rows arrive, under the load.
    client.execute("INSERT INTO test.chaos VALUES ($1, 0, 'marker', 's')", &[&(MARKERS + 1)]).await.expect("marker");
    let before = runner.progress.clone();
    runner
        .reach(
            &mut admin,
            Duration::from_secs(60),
            "the recreated table's rows did not arrive under the binding",
            |p, c| c.rows.contains_key(&(MARKERS + 1)) && p.change_documents > before.change_documents + 200,
        )
        .await;
    runner.kill(&mut admin).await;

    // A restart resumes on the new table (a new relation OID) under the same binding.
    let mut runner = Runner::open(&capture, &mut committed, &mut admin, &[]).await;
    client.execute("INSERT INTO test.chaos VALUES ($1, 0, 'marker', 's')", &[&(MARKERS + 2)]).await.expect("marker");
    runner
        .reach(
            &mut admin,
            Duration::from_secs(60),
            "after a restart, the recreated table's rows did not arrive",
            |p, c| c.rows.contains_key(&(MARKERS + 2)) && c.streaming() && p.change_documents > 200,
        )
        .await;
    runner.kill(&mut admin).await;

    let stats = workload.stop().await;
    final_run(&capture, &mut committed, &mut admin).await;
    let new_rows = table_rows(&client, "test.chaos").await;
    assert!(new_rows.keys().all(|id| !old_rows.contains_key(id)), "the workload reused a key across the swap");
    let context = format!("{test}, seed {seed}");
    let lost_old = if during_backfill {
        let kept: BTreeMap<i64, Map<String, Value>> = old_rows
            .iter()
            .filter(|(id, _)| committed.rows.contains_key(id))
            .map(|(id, row)| (*id, row.clone()))
            .collect();
        let mut expected = kept.clone();
        expected.extend(new_rows.clone());
        assert_matches_table(&committed, &expected, &context);
        assert!(
            kept.len() < old_rows.len(),
            "the backfill had read the whole old table before the swap: the test missed its phase"
        );
        old_rows.len() - kept.len()
    } else {
        let mut expected = old_rows.clone();
        expected.extend(new_rows.clone());
        assert_matches_table(&committed, &expected, &context);
        0
    };
    eprintln!(
        "chaos drop and recreate {}: {} old rows kept ({lost_old} never reached), {} rows of the new table; load {stats:?}; {:.1} s (seed {seed})",
        if during_backfill { "during backfill" } else { "while streaming" },
        old_rows.len() - lost_old,
        new_rows.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_and_recreated_while_streaming_continues_under_its_binding() {
    recreate_scenario("chaos_recreated_streaming", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_and_recreated_during_its_backfill_continues_under_its_binding() {
    recreate_scenario("chaos_recreated_backfill", true).await;
}
