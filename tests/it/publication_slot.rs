//! What the capture does when the publication or the replication slot is not what it
//! expects: a publication narrowed, filtered or dropped while the capture runs, a TRUNCATE,
//! a state whose position the server never reached, and slots that are not the capture's
//! own. In every case the capture must stop with the cause and the fix rather than go on
//! (losing changes without a word) or destroy what is not its own.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::driver::{backfills_done, binding, confirmed_flush, lsn_value, merge_patch, Event, Session};
use crate::faults_common::{error_message, Admin, Conn};
use crate::harness::{cluster, run_connector, ConnectorOutput, TestDb, CAPTURE_USER};

/// Drain checkpoints (acknowledging them) until every binding's backfill is done and
/// nothing has arrived for two seconds; documents are returned.
async fn settle(session: &mut Session, state: &mut Value) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut documents = Vec::new();
    loop {
        match session.next(Duration::from_secs(2)).await {
            Event::Captured { doc } => documents.push(doc),
            Event::Checkpoint { patch } => {
                merge_patch(state, &patch);
                session.acknowledge().await;
            }
            Event::Timeout if backfills_done(state) => return documents,
            Event::Timeout if Instant::now() < deadline => {}
            other => panic!("unexpected event while settling (state {state}): {other:?}"),
        }
    }
}

/// Drive the session (acknowledging checkpoints, collecting documents) until it exits; it
/// must fail within `within`. Returns the error line's message (with its hint) and the
/// documents that arrived.
async fn expect_failure(
    session: &mut Session,
    state: &mut Value,
    within: Duration,
    what: &str,
) -> (String, Vec<Value>) {
    let deadline = Instant::now() + within;
    let mut documents = Vec::new();
    loop {
        match session.next(deadline.saturating_duration_since(Instant::now())).await {
            Event::SourcedSchema { .. } => {}
            Event::Captured { doc } => documents.push(doc),
            Event::Checkpoint { patch } => {
                merge_patch(state, &patch);
                session.acknowledge().await;
            }
            Event::Exited(status) => {
                assert!(!status.success(), "{what}: the capture exited cleanly ({} documents)", documents.len());
                let stderr = session.stderr_lines().await;
                let message =
                    error_message(&stderr).unwrap_or_else(|| panic!("{what}: no error line in\n{}", stderr.join("\n")));
                return (message, documents);
            }
            Event::Timeout => {
                panic!("{what}: the capture was still running after {within:?} ({} documents)", documents.len())
            }
        }
    }
}

/// One connector run (spec, open, then the end of input), as capture `name`, with
/// `SHUTDOWN_AFTER_POLLING`.
async fn run_once(name: &str, config: &Value, bindings: Vec<Value>, state: &Value) -> ConnectorOutput {
    let input = format!(
        "{}\n{}\n",
        json!({"spec": {}}),
        json!({"open": {"capture": {"name": name, "config": config, "bindings": bindings}, "state": state}})
    );
    tokio::task::spawn_blocking(move || run_connector(&[], &input, &[("SHUTDOWN_AFTER_POLLING", "yes")]))
        .await
        .expect("run the connector")
}

/// The last stderr line's message of a run that must have failed.
fn failure_text(output: &ConnectorOutput, what: &str) -> String {
    assert_eq!(output.exit_code, 1, "{what}: expected a failure\n--- stderr ---\n{}", output.stderr);
    let last = output.stderr.lines().rev().find(|l| !l.trim().is_empty()).expect("an error line");
    let line: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {last}"));
    assert_eq!(line["level"], "error", "{last}");
    line["msg"].as_str().expect("msg").to_string()
}

/// The server's `server_version_num`.
async fn server_version(client: &tokio_postgres::Client) -> i32 {
    client.query_one("SELECT current_setting('server_version_num')::int", &[]).await.expect("version").get(0)
}

/// The slot's plugin, database, restart position and two-phase flag (PostgreSQL 14+; false
/// before), `None` when there is no such slot.
async fn slot_facts(client: &tokio_postgres::Client, slot: &str) -> Option<(String, String, String, bool)> {
    client
        .query_opt(
            "SELECT plugin::text, database::text, restart_lsn::text, COALESCE((to_jsonb(s) ->> 'two_phase')::bool, false)
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("query slot")
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
}

/// A publication narrowed to inserts keeps sending inserts and silently drops every update
/// and delete: the capture must notice (pgoutput says nothing) and stop with the statement
/// that restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_narrowed_to_inserts_stops_the_capture() {
    let db = TestDb::create("publication_narrowed").await;
    db.execute("CREATE TABLE test.t (id int PRIMARY KEY, v text); INSERT INTO test.t VALUES (1, 'a'), (2, 'b');").await;
    let mut state = json!({});
    let mut session =
        Session::open_capturing_stderr(&db.endpoint_config(), vec![binding("t", &["/id"])], &state, &[]).await;
    settle(&mut session, &mut state).await;

    db.execute("ALTER PUBLICATION flow_publication SET (publish = 'insert')").await;
    db.execute("UPDATE test.t SET v = 'changed' WHERE id = 1; DELETE FROM test.t WHERE id = 2; INSERT INTO test.t VALUES (3, 'c');")
        .await;
    let (message, documents) =
        expect_failure(&mut session, &mut state, Duration::from_secs(30), "after publish = 'insert'").await;
    assert!(message.contains("publication \"flow_publication\" no longer publishes UPDATE, DELETE"), "{message}");
    assert!(
        message.contains(
            "HINT: ALTER PUBLICATION \"flow_publication\" SET (publish = 'insert, update, delete, truncate');"
        ),
        "{message}"
    );
    assert!(message.contains("backfill counter"), "{message}");
    assert!(documents.iter().all(|d| d["_meta"]["op"] == "c"), "only inserts can have arrived: {documents:?}");
}

/// A dropped publication makes pgoutput fail with "publication ... does not exist" under the
/// slot's SQLSTATE for a missing object: it must be named as what it is, with the statement
/// that recreates it, not reported as a missing replication slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_publication_is_named_with_the_statement_that_recreates_it() {
    let db = TestDb::create("publication_dropped").await;
    db.execute("CREATE TABLE test.t (id int PRIMARY KEY, v text); INSERT INTO test.t VALUES (1, 'a');").await;
    let mut state = json!({});
    let mut session =
        Session::open_capturing_stderr(&db.endpoint_config(), vec![binding("t", &["/id"])], &state, &[]).await;
    settle(&mut session, &mut state).await;

    db.execute("DROP PUBLICATION flow_publication").await;
    db.execute("INSERT INTO test.t VALUES (2, 'b')").await;
    let (message, _) =
        expect_failure(&mut session, &mut state, Duration::from_secs(30), "after DROP PUBLICATION").await;
    assert!(message.starts_with("publication \"flow_publication\" does not exist"), "{message}");
    assert!(message.contains("HINT: create it again, e.g. CREATE PUBLICATION \"flow_publication\""), "{message}");
    assert!(!message.contains("replication slot"), "{message}");
}

/// Column lists and row filters (PostgreSQL 15+) hide columns or rows from the stream while
/// the backfill reads them all: validation refuses them with the statement that removes
/// them, and a running capture stops when one appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_and_column_lists_are_refused_and_stop_a_running_capture() {
    let db = TestDb::create("publication_filters").await;
    if server_version(&db.superuser_client().await).await < 150_000 {
        eprintln!("column lists and row filters need PostgreSQL 15");
        return;
    }
    db.execute(&format!(
        "CREATE TABLE test.t (id int PRIMARY KEY, v text);
         INSERT INTO test.t SELECT g, 'v' || g FROM generate_series(1, 20) g;
         CREATE TABLE public.flow_watermarks (slot TEXT PRIMARY KEY, watermark TEXT);
         GRANT SELECT, INSERT, UPDATE ON public.flow_watermarks TO {CAPTURE_USER};
         DROP PUBLICATION flow_publication;
         CREATE PUBLICATION flow_publication FOR TABLE test.t WHERE (id > 10), public.flow_watermarks
           WITH (publish_via_partition_root = true);"
    ))
    .await;
    let validate = json!({"validate": {"name": "tests/capture", "connectorType": "IMAGE", "config": db.endpoint_config(), "bindings": [
        {"resourceConfig": {"namespace": "test", "stream": "t"}, "collection": {"name": "tests/t", "key": ["/id"]}, "backfill": 0}
    ]}});
    let input = format!("{validate}\n");
    let output = tokio::task::spawn_blocking(move || run_connector(&[], &input, &[])).await.expect("validate");
    let message = failure_text(&output, "validate with a row filter");
    assert!(
        message.contains(
            "publication \"flow_publication\" publishes table \"test.t\" with a row filter (WHERE (id > 10))"
        ),
        "{message}"
    );
    let fix = "BEGIN; ALTER PUBLICATION \"flow_publication\" DROP TABLE \"test\".\"t\"; ALTER PUBLICATION \"flow_publication\" ADD TABLE \"test\".\"t\"; COMMIT;";
    assert!(message.contains(fix), "{message}");
    db.execute(fix).await;
    let input = format!("{validate}\n");
    let output = tokio::task::spawn_blocking(move || run_connector(&[], &input, &[])).await.expect("validate");
    assert_eq!(output.exit_code, 0, "validate after the fix\n{}", output.stderr);

    // Unfiltered, the capture reads all 20 rows; a column list added while it runs stops it.
    let mut state = json!({});
    let mut session =
        Session::open_capturing_stderr(&db.endpoint_config(), vec![binding("t", &["/id"])], &state, &[]).await;
    let documents = settle(&mut session, &mut state).await;
    assert_eq!(documents.len(), 20);
    db.execute("ALTER PUBLICATION flow_publication SET TABLE test.t (id), public.flow_watermarks").await;
    db.execute("UPDATE test.t SET v = 'changed' WHERE id = 5").await;
    let (message, documents) =
        expect_failure(&mut session, &mut state, Duration::from_secs(30), "after a column list").await;
    assert!(
        message.contains(
            "publication \"flow_publication\" publishes only some columns of table \"test.t\" (a column list)"
        ),
        "{message}"
    );
    assert!(message.contains(fix), "{message}");
    assert!(
        documents.iter().all(|d| d.get("v").is_some()),
        "a document without the column outside the column list arrived: {documents:?}"
    );
}

/// TRUNCATE keeps the Go connector's behaviour by default (a warning, the capture goes on);
/// with `advanced.fail_on_truncate` it stops the capture, and a re-backfill of the binding
/// then goes past the TRUNCATE (the other binding keeps the resume position, so the
/// TRUNCATE is met again while catching up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_warns_by_default_and_fails_with_fail_on_truncate() {
    let db = TestDb::create("publication_truncate").await;
    db.execute(
        "CREATE TABLE test.t (id int PRIMARY KEY); INSERT INTO test.t VALUES (1), (2);
         CREATE TABLE test.u (id int PRIMARY KEY); INSERT INTO test.u VALUES (1);",
    )
    .await;
    let bindings = || vec![binding("t", &["/id"]), binding("u", &["/id"])];

    // Default: a warning, and later changes still arrive.
    let mut state = json!({});
    let mut session = Session::open_capturing_stderr(&db.endpoint_config(), bindings(), &state, &[]).await;
    settle(&mut session, &mut state).await;
    db.execute("TRUNCATE test.t; INSERT INTO test.t VALUES (3);").await;
    let documents = settle(&mut session, &mut state).await;
    let ids: Vec<&Value> = documents.iter().map(|d| &d["id"]).collect();
    assert_eq!(ids, [&json!(3)], "the insert after the TRUNCATE arrives");
    let stderr = session.stderr_lines().await;
    assert!(stderr.iter().any(|l| l.contains("TRUNCATE is not captured")), "no warning:\n{}", stderr.join("\n"));
    session.kill().await;

    // fail_on_truncate: the capture stops, and resuming from its state stops again.
    let mut config = db.endpoint_config();
    config["advanced"]["fail_on_truncate"] = json!(true);
    let mut session = Session::open_capturing_stderr(&config, bindings(), &state, &[]).await;
    settle(&mut session, &mut state).await;
    db.execute("TRUNCATE test.t; INSERT INTO test.t VALUES (4), (5);").await;
    let (message, documents) =
        expect_failure(&mut session, &mut state, Duration::from_secs(30), "after TRUNCATE with fail_on_truncate").await;
    assert!(message.starts_with("table \"test.t\" was truncated"), "{message}");
    assert!(message.contains("advanced.fail_on_truncate is set"), "{message}");
    assert!(message.contains("HINT: increment the binding's backfill counter"), "{message}");
    assert!(documents.is_empty(), "nothing of the truncating transaction is emitted: {documents:?}");
    let mut session = Session::open_capturing_stderr(&config, bindings(), &state, &[]).await;
    let (message, _) =
        expect_failure(&mut session, &mut state, Duration::from_secs(30), "resuming past the TRUNCATE").await;
    assert!(message.starts_with("table \"test.t\" was truncated"), "{message}");

    // A re-backfill (a new state key for the binding) goes past it and reads the table anew.
    let mut rebackfilled = binding("t", &["/id"]);
    rebackfilled["stateKey"] = json!("test%2Ft.v1");
    let mut session = Session::open_capturing_stderr(
        &config,
        vec![rebackfilled, binding("u", &["/id"])],
        &state,
        &[("SHUTDOWN_AFTER_POLLING", "yes")],
    )
    .await;
    let mut ids = Vec::new();
    loop {
        match session.next(Duration::from_secs(60)).await {
            Event::SourcedSchema { .. } => {}
            Event::Captured { doc } => {
                assert_eq!(doc["_meta"]["source"]["table"], "t", "{doc}");
                ids.push(doc["id"].as_i64().expect("id"));
            }
            Event::Checkpoint { patch } => {
                merge_patch(&mut state, &patch);
                session.acknowledge().await;
            }
            Event::Exited(status) => {
                assert!(status.success(), "the re-backfill failed: {}", session.stderr_lines().await.join("\n"));
                break;
            }
            Event::Timeout => panic!("the re-backfill did not finish"),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, [4, 5]);
}

/// A state whose cursor the server never reached (another server's, or from before a
/// restore) would make the stream wait for WAL that never comes, and confirm the slot to
/// it: the capture must refuse it, and leave the slot where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_beyond_the_servers_wal_end_is_refused_and_never_confirmed() {
    let db = TestDb::create("cursor_beyond_wal").await;
    db.execute("CREATE TABLE test.t (id int PRIMARY KEY); INSERT INTO test.t VALUES (1);").await;
    let mut state = json!({});
    let mut session = Session::open(&db.endpoint_config(), vec![binding("t", &["/id"])], &state, &[]).await;
    settle(&mut session, &mut state).await;
    session.kill().await;
    let mut admin = Admin::new(Conn::superuser(cluster().await, &db.name));
    admin.wait_slot_released(&db.slot_name(), Duration::from_secs(30)).await;
    let client = db.superuser_client().await;
    let confirmed_before = confirmed_flush(&client, &db.slot_name()).await.expect("confirmed");

    let flush: String = client.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await.expect("flush").get(0);
    let future = lsn_value(&flush) + 0x4000_0000;
    let mut foreign = state.clone();
    foreign["cursor"] = json!(format!("{:X}/{:X}", future >> 32, future & 0xFFFF_FFFF));
    let mut session =
        Session::open_capturing_stderr(&db.endpoint_config(), vec![binding("t", &["/id"])], &foreign, &[]).await;
    let (message, _) =
        expect_failure(&mut session, &mut foreign, Duration::from_secs(30), "resuming beyond the WAL end").await;
    assert!(message.contains("is beyond the end of the server's WAL"), "{message}");
    assert!(message.contains("HINT: the capture cannot resume from it"), "{message}");
    let confirmed_after = confirmed_flush(&client, &db.slot_name()).await.expect("confirmed");
    assert_eq!(confirmed_after, confirmed_before, "the slot's confirmed position moved");

    // The real state still resumes.
    let mut session = Session::open(
        &db.endpoint_config(),
        vec![binding("t", &["/id"])],
        &state,
        &[("SHUTDOWN_AFTER_POLLING", "yes")],
    )
    .await;
    loop {
        match session.next(Duration::from_secs(60)).await {
            Event::SourcedSchema { .. } => {}
            Event::Checkpoint { .. } => session.acknowledge().await,
            Event::Captured { doc } => panic!("nothing changed, yet {doc} arrived"),
            Event::Exited(status) => {
                assert!(status.success(), "{status}");
                break;
            }
            Event::Timeout => panic!("the resumed capture did not finish"),
        }
    }
}

/// Without a resume position the capture starts afresh with a new slot, but never at the
/// cost of a slot that is not provably its own: a user's slot of the same name, one of
/// another plugin or database, or another capture's are left alone with a clear error.
/// Its own earlier slot is still replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_state_leaves_slots_that_are_not_provably_its_own_alone() {
    let db = TestDb::create("slot_ownership").await;
    db.execute("CREATE TABLE test.t (id int PRIMARY KEY); INSERT INTO test.t VALUES (1);").await;
    let slot = db.slot_name();
    let client = db.superuser_client().await;
    let config = db.endpoint_config();
    let bindings = || vec![binding("t", &["/id"])];

    // A user's pgoutput slot of the same name.
    client.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot]).await.expect("user slot");
    let before = slot_facts(&client, &slot).await.expect("the user's slot");
    let output = run_once("tests/driver", &config, bindings(), &json!({})).await;
    let message = failure_text(&output, "a user's slot");
    assert!(message.contains("already exists, and nothing shows that this capture created it"), "{message}");
    assert!(message.contains("no_create_replication_slot"), "{message}");
    assert_eq!(slot_facts(&client, &slot).await, Some(before), "the user's slot was replaced");
    client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("drop");

    // Another output plugin.
    client.execute("SELECT pg_create_logical_replication_slot($1, 'test_decoding')", &[&slot]).await.expect("slot");
    let output = run_once("tests/driver", &config, bindings(), &json!({})).await;
    let message = failure_text(&output, "a test_decoding slot");
    assert!(message.contains("uses the output plugin \"test_decoding\""), "{message}");
    assert_eq!(slot_facts(&client, &slot).await.expect("slot").0, "test_decoding");
    client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("drop");

    // Another database's slot (skipping validation, which refuses it too).
    let other = TestDb::create("slot_ownership_other").await;
    let other_client = other.superuser_client().await;
    other_client.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot]).await.expect("slot");
    let mut unchecked = config.clone();
    unchecked["advanced"]["skip_prerequisites"] = json!(true);
    let output = run_once("tests/driver", &unchecked, bindings(), &json!({})).await;
    let message = failure_text(&output, "another database's slot");
    assert!(message.contains(&format!("belongs to database \"{}\"", other.name)), "{message}");
    assert_eq!(slot_facts(&client, &slot).await.expect("slot").1, other.name);
    other_client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await.expect("drop");

    // The capture's own slot: created, then replaced by a later start without state.
    let output = run_once("tests/driver", &config, bindings(), &json!({})).await;
    assert_eq!(output.exit_code, 0, "{}", output.stderr);
    let first = slot_facts(&client, &slot).await.expect("the capture's slot");
    db.execute("INSERT INTO test.t VALUES (2)").await;
    let output = run_once("tests/driver", &config, bindings(), &json!({})).await;
    assert_eq!(output.exit_code, 0, "{}", output.stderr);
    let second = slot_facts(&client, &slot).await.expect("the capture's slot");
    assert!(
        lsn_value(&second.2) > lsn_value(&first.2),
        "the capture's own slot was not recreated: {first:?} {second:?}"
    );

    // Another capture with the same slot name finds it taken.
    let output = run_once("tests/other", &config, bindings(), &json!({})).await;
    let message = failure_text(&output, "another capture's slot");
    assert!(message.contains("belongs to capture \"tests/driver\""), "{message}");
    assert_eq!(slot_facts(&client, &slot).await, Some(second), "the other capture's slot was replaced");
}

/// `no_create_replication_slot` means what it means in the Go connector: the slot is the
/// user's. It must exist (validation and the capture say so), and it is used as it is,
/// never dropped or recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_create_replication_slot_uses_the_users_slot_as_it_is() {
    let db = TestDb::create("slot_user_managed").await;
    db.execute("CREATE TABLE test.t (id int PRIMARY KEY); INSERT INTO test.t VALUES (1), (2);").await;
    let slot = db.slot_name();
    let client = db.superuser_client().await;
    let mut config = db.endpoint_config();
    config["advanced"]["feature_flags"] = json!("no_create_replication_slot");

    let output = run_once("tests/driver", &config, vec![binding("t", &["/id"])], &json!({})).await;
    let message = failure_text(&output, "no slot with no_create_replication_slot");
    assert!(
        message.contains(&format!(
            "replication slot \"{slot}\" does not exist and the 'no_create_replication_slot' feature flag is set"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("SELECT pg_catalog.pg_create_logical_replication_slot('{slot}', 'pgoutput');")),
        "{message}"
    );
    assert_eq!(slot_facts(&client, &slot).await, None, "the capture created the slot");

    // A two-phase slot (PostgreSQL 14+): the capture never creates one, so the flag shows the
    // slot is still the user's at the end.
    let two_phase = server_version(&client).await >= 140_000;
    let create = if two_phase {
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, true)"
    } else {
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    client.execute(create, &[&slot]).await.expect("user slot");
    let mut state = json!({});
    let mut session = Session::open(&config, vec![binding("t", &["/id"])], &state, &[]).await;
    let documents = settle(&mut session, &mut state).await;
    assert_eq!(documents.len(), 2, "{documents:?}");
    db.execute("INSERT INTO test.t VALUES (3)").await;
    let documents = settle(&mut session, &mut state).await;
    assert_eq!(documents.iter().map(|d| d["id"].clone()).collect::<Vec<_>>(), [json!(3)]);
    session.kill().await;
    let facts = slot_facts(&client, &slot).await.expect("the user's slot");
    assert_eq!(facts.3, two_phase, "the user's two-phase slot was replaced by one of the capture's: {facts:?}");
}
