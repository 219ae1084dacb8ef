//! `sourcedSchema` responses of a running capture: one per binding at the start, a new one
//! when a table's columns change (announced by the stream, or found by periodic
//! rediscovery), each followed by a checkpoint; none with `no_emit_sourced_schemas`.
//!
//! Test hook: `SOURCE_POSTGRES_TEST_REDISCOVERY_MS` sets the rediscovery interval in
//! milliseconds, below the configuration's one-minute minimum, so that the rediscovery test
//! takes seconds (see `src/capture/sourced.rs`). It is not a setting.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::driver::{backfills_done, binding, merge_patch, Event, Session};
use crate::harness::TestDb;
use crate::types::validator;

/// The next event; a checkpoint is merged into `state` and acknowledged.
async fn next_event(session: &mut Session, state: &mut Value, within: Duration) -> Event {
    let event = session.next(within).await;
    if let Event::Checkpoint { patch } = &event {
        merge_patch(state, patch);
        session.acknowledge().await;
    }
    event
}

/// Read until every backfill is done and the stream is quiet; every event on the way must
/// be a checkpoint or a document (returned).
async fn settle(session: &mut Session, state: &mut Value) -> Vec<Value> {
    let mut documents = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match next_event(session, state, Duration::from_secs(2)).await {
            Event::Checkpoint { .. } => {}
            Event::Captured { doc } => documents.push(doc),
            Event::Timeout if backfills_done(state) => return documents,
            Event::Timeout if Instant::now() < deadline => {}
            other => panic!("unexpected event while settling (state {state}): {other:?}"),
        }
    }
}

/// The row properties of a sourced schema (the `$defs` anchor's).
fn row_properties(schema: &Value) -> &serde_json::Map<String, Value> {
    let defs = schema["$defs"].as_object().expect("$defs");
    assert_eq!(defs.len(), 1, "one row anchor");
    defs.values().next().and_then(|row| row["properties"].as_object()).expect("row properties")
}

/// Expect a `sourcedSchema` for `binding` now, then the checkpoint that commits it (maybe
/// after documents, which are returned with the schema).
async fn expect_schema_then_checkpoint(
    session: &mut Session,
    state: &mut Value,
    binding: u64,
    within: Duration,
) -> (Value, Vec<Value>) {
    let mut documents = Vec::new();
    let mut schema = None;
    loop {
        match next_event(session, state, within).await {
            Event::Captured { doc } => documents.push(doc),
            Event::SourcedSchema { binding: b, schema: s } => {
                assert_eq!(b, binding, "a schema for another binding: {s}");
                assert!(schema.replace(s).is_none(), "two schemas before a checkpoint");
            }
            // Idle checkpoints may come first; the one after the schema commits it.
            Event::Checkpoint { .. } if schema.is_none() => {}
            Event::Checkpoint { .. } => return (schema.expect("a schema"), documents),
            other => panic!("expected a sourced schema of binding {binding} and a checkpoint, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_sends_each_bindings_schema_then_a_new_one_for_an_added_column() {
    let db = TestDb::create("sourced_schemas_stream").await;
    db.execute(
        "CREATE TABLE test.first (id int PRIMARY KEY, a text);
         CREATE TABLE test.second (k text PRIMARY KEY, n int NOT NULL);
         INSERT INTO test.first VALUES (1, 'one'), (2, NULL);
         INSERT INTO test.second VALUES ('x', 1);",
    )
    .await;
    let mut state = json!({});
    let bindings = vec![binding("first", &["/id"]), binding("second", &["/k"])];
    let mut session = Session::open(&db.endpoint_config(), bindings, &state, &[]).await;
    session.report_sourced_schemas();

    // First, one schema per binding in binding order, then the checkpoint that commits them.
    let mut first_events = Vec::new();
    for _ in 0..3 {
        first_events.push(next_event(&mut session, &mut state, Duration::from_secs(60)).await);
    }
    let schemas: Vec<(u64, Value)> = match first_events.as_slice() {
        [Event::SourcedSchema { binding: 0, schema: a }, Event::SourcedSchema { binding: 1, schema: b }, Event::Checkpoint { .. }] =>
        {
            vec![(0, a.clone()), (1, b.clone())]
        }
        other => panic!("expected two sourced schemas and a checkpoint, got {other:?}"),
    };
    let first = &schemas[0].1;
    assert_eq!(first["$defs"]["TestFirst"]["required"], json!(["a", "id"]), "every column is required");
    assert_eq!(row_properties(first)["a"]["type"], json!(["string", "null"]));
    assert_eq!(first["unevaluatedProperties"], json!(false));
    assert_eq!(first["allOf"][0]["properties"]["_meta"]["additionalProperties"], json!(false));
    assert_eq!(row_properties(&schemas[1].1)["n"]["type"], json!("integer"));

    // The backfill's documents (a NULL among them) validate against their sourced schema.
    let backfilled = settle(&mut session, &mut state).await;
    assert_eq!(backfilled.len(), 3, "{backfilled:?}");
    for doc in &backfilled {
        let index = usize::from(doc["_meta"]["source"]["table"] == "second");
        let errors: Vec<String> = validator(&schemas[index].1).iter_errors(doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{doc} fails its sourced schema: {errors:?}");
    }

    // A column added while streaming: the stream announces it, and its schema is sent
    // before the checkpoint that commits the first document carrying it.
    db.execute("ALTER TABLE test.first ADD COLUMN added numeric; INSERT INTO test.first VALUES (3, 'three', 1.5);")
        .await;
    let (schema, documents) = expect_schema_then_checkpoint(&mut session, &mut state, 0, Duration::from_secs(30)).await;
    assert_eq!(row_properties(&schema)["added"]["type"], json!(["string", "null"]), "{schema}");
    assert_eq!(schema["$defs"]["TestFirst"]["required"], json!(["a", "added", "id"]));
    assert_eq!(documents.len(), 1, "{documents:?}");
    assert_eq!(documents[0]["added"], "1.5");
    assert!(validator(&schema).is_valid(&documents[0]), "{} fails {schema}", documents[0]);

    // More changes of the same columns send no schema again.
    db.execute("INSERT INTO test.first VALUES (4, 'four', 2); INSERT INTO test.second VALUES ('y', 2);").await;
    let mut seen = 0;
    while seen < 2 {
        match next_event(&mut session, &mut state, Duration::from_secs(30)).await {
            Event::Captured { .. } => seen += 1,
            Event::Checkpoint { .. } => {}
            other => panic!("expected the two documents only, got {other:?}"),
        }
    }
    assert_eq!(session.sourced_schemas().len(), 3, "start (2) and the added column (1)");
    session.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_emit_sourced_schemas_sends_none() {
    let db = TestDb::create("sourced_schemas_off").await;
    db.execute("CREATE TABLE test.quiet (id int PRIMARY KEY, a text); INSERT INTO test.quiet VALUES (1, 'one');").await;
    let mut config = db.endpoint_config();
    config["advanced"]["feature_flags"] = json!("no_emit_sourced_schemas");
    let mut state = json!({});
    // A short rediscovery interval too: with the flag off, rediscovery has nothing to send.
    let env = [("SOURCE_POSTGRES_TEST_REDISCOVERY_MS", "200")];
    let mut session = Session::open(&config, vec![binding("quiet", &["/id"])], &state, &env).await;
    session.report_sourced_schemas();
    assert_eq!(settle(&mut session, &mut state).await.len(), 1);
    db.execute("ALTER TABLE test.quiet ADD COLUMN b int; INSERT INTO test.quiet VALUES (2, 'two', 2);").await;
    let mut documents = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match next_event(&mut session, &mut state, Duration::from_millis(500)).await {
            Event::Captured { doc } => documents.push(doc),
            Event::Checkpoint { .. } | Event::Timeout => {}
            other => panic!("unexpected event with sourced schemas off: {other:?}"),
        }
    }
    assert_eq!(documents.len(), 1, "{documents:?}");
    assert_eq!(documents[0]["b"], 2);
    assert!(session.sourced_schemas().is_empty(), "{:?}", session.sourced_schemas());
    session.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediscovery_sends_schemas_for_changes_no_replication_message_announces() {
    let db = TestDb::create("sourced_schemas_rediscovery").await;
    db.execute(
        "CREATE TYPE test.mood AS ENUM ('sad', 'ok');
         CREATE TABLE test.feelings (id int PRIMARY KEY, m test.mood);
         CREATE TABLE test.other (id int PRIMARY KEY);",
    )
    .await;
    let mut state = json!({});
    let env = [("SOURCE_POSTGRES_TEST_REDISCOVERY_MS", "300")];
    let bindings = vec![binding("feelings", &["/id"]), binding("other", &["/id"])];
    let mut session = Session::open(&db.endpoint_config(), bindings, &state, &env).await;
    settle(&mut session, &mut state).await;
    assert_eq!(session.sourced_schemas().len(), 2, "one per binding at the start");
    session.report_sourced_schemas();

    // A new enum label: no replication message says so.
    db.execute("ALTER TYPE test.mood ADD VALUE 'happy';").await;
    let (schema, documents) = expect_schema_then_checkpoint(&mut session, &mut state, 0, Duration::from_secs(30)).await;
    assert!(documents.is_empty());
    assert_eq!(row_properties(&schema)["m"]["enum"], json!(["sad", "ok", "happy", null]), "{schema}");

    // A column added to a table that sees no change since.
    db.execute("ALTER TABLE test.other ADD COLUMN later text;").await;
    let (schema, _) = expect_schema_then_checkpoint(&mut session, &mut state, 1, Duration::from_secs(30)).await;
    assert!(row_properties(&schema).contains_key("later"), "{schema}");

    // Unchanged schemas are not sent again, however many rediscoveries run.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match next_event(&mut session, &mut state, Duration::from_millis(500)).await {
            Event::Checkpoint { .. } | Event::Timeout => {}
            other => panic!("nothing changed, yet {other:?}"),
        }
    }
    assert_eq!(session.sourced_schemas().len(), 4);
    session.kill().await;
}
