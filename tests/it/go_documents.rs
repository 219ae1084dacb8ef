//! Replay of the Go connector's capture tests: the documents a capture in the Go value
//! formats (`go_value_formats`) emits are the ones the Go connector emitted.
//!
//! The facts come from tests/fixtures/go-documents (see its README and
//! scripts/go-snapshot-facts.py): per Go test, its SQL in order and each capture run's
//! documents. Each test's SQL is replayed in a fresh database; each run restarts the capture
//! with the state so far, as the Go tests do, and its documents are compared with Go's as a
//! multiset: `_meta.op`, `_meta.before` where Go has it, and every column value (numbers as
//! numbers; instants were already converted to UTC by the script). A Go document not
//! reproduced fails the test unless the allow-list (`allowed.json` there) names the test and
//! column with the reason. Tests whose SQL this server cannot run (an extension that is not
//! installed) are reported as not replayable, with the server's error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::driver::{backfills_done, binding, merge_patch, Event, Session};
use crate::harness::TestDb;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go-documents");

/// Values compared as the runtime would: numbers by value, objects by their fields.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Our document reduced to what the fixture keeps: columns, `_meta.op`, and `_meta.before`
/// when Go's document has one.
fn comparable(doc: &Value, with_before: bool) -> Value {
    let mut out = doc.clone();
    let meta = &doc["_meta"];
    let mut kept = json!({"op": meta["op"]});
    if with_before {
        kept["before"] = meta.get("before").cloned().unwrap_or(Value::Null);
    }
    out["_meta"] = kept;
    out
}

/// The columns whose values differ between two documents of the same key.
fn differing_columns(go: &Value, ours: &Value) -> Vec<String> {
    let (Some(go), Some(ours)) = (go.as_object(), ours.as_object()) else { return vec!["<document>".into()] };
    let mut names: Vec<String> = go.keys().chain(ours.keys()).cloned().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|k| !same(go.get(k).unwrap_or(&Value::Null), ours.get(k).unwrap_or(&Value::Null)))
        .collect()
}

/// The table names a test creates (`CREATE TABLE test.<name>`), in order.
fn created_tables(steps: &[Value]) -> Vec<String> {
    let mut tables = Vec::new();
    for sql in steps.iter().filter_map(|s| s["sql"].as_str()) {
        let upper = sql.to_uppercase();
        if let Some(at) = upper.find("CREATE TABLE TEST.") {
            let name: String = sql[at + 18..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            tables.push(name.to_lowercase());
        }
    }
    tables
}

/// The primary key of `test.<table>` as JSON pointers.
async fn key_of(db: &TestDb, table: &str) -> Vec<String> {
    let client = db.superuser_client().await;
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
               AND a.attnum = ANY(i.indkey) WHERE i.indrelid = ('test.' || quote_ident($1))::regclass
               AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
            &[&table],
        )
        .await
        .expect("read the primary key");
    rows.iter().map(|r| format!("/{}", r.get::<_, String>(0))).collect()
}

/// One capture run: restart with `state`, read until the backfills are done, nothing more
/// arrives and at least `expected` documents came (or a deadline).
async fn run_capture(config: &Value, bindings: &[Value], state: &mut Value, expected: usize) -> Vec<(usize, Value)> {
    let mut session = Session::open(config, bindings.to_vec(), state, &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut docs = Vec::new();
    loop {
        match session.next(Duration::from_secs(3)).await {
            Event::Captured { doc } => {
                let binding = doc["_meta"]["source"]["table"].as_str().unwrap_or("").to_string();
                let index = bindings.iter().position(|b| b["resourceConfig"]["stream"] == binding.as_str());
                docs.push((index.unwrap_or(usize::MAX), doc));
            }
            Event::Checkpoint { patch } => {
                merge_patch(state, &patch);
                session.acknowledge().await;
            }
            Event::Timeout if backfills_done(state) && docs.len() >= expected => break,
            Event::Timeout if tokio::time::Instant::now() < deadline => {}
            Event::Timeout => break,
            other => panic!("unexpected event: {other:?}"),
        }
    }
    session.kill().await;
    docs
}

/// Per test: (reproduced, allowed, total, problems).
struct Outcome {
    reproduced: usize,
    allowed: usize,
    total: usize,
    problems: Vec<String>,
}

async fn replay(fixture: &Value, allowed: &Value) -> Result<Outcome, String> {
    let test = fixture["test"].as_str().unwrap();
    let db = TestDb::create(&format!("go_documents_{test}")).await;
    let outcome = replay_in(&db, fixture, allowed).await;
    // Fifty replays must not hold fifty slots: the server's are shared by every test.
    db.drop_slots().await;
    outcome
}

async fn replay_in(db: &TestDb, fixture: &Value, allowed: &Value) -> Result<Outcome, String> {
    let test = fixture["test"].as_str().unwrap();
    let steps = fixture["steps"].as_array().unwrap();
    let tables = created_tables(steps);
    // `GO_DOCUMENTS_FLAGS` replaces `go_value_formats`, to see what other formats reproduce
    // (with this connector's own formats, most type tests must fail).
    let umbrella = std::env::var("GO_DOCUMENTS_FLAGS").unwrap_or_else(|_| "go_value_formats".into());
    let mut flags = vec![umbrella];
    match test {
        "TestFeatureFlagFlattenArrays-Disabled" => flags.push("no_flatten_arrays".into()),
        "TestMultidimensionalArrays" => flags.push("multidimensional_arrays".into()),
        _ => {}
    }
    let mut config = db.endpoint_config();
    config["advanced"]["feature_flags"] = json!(flags.join(","));
    let mut state = json!({});
    let mut bindings: Option<Vec<Value>> = None;
    let mut outcome = Outcome { reproduced: 0, allowed: 0, total: 0, problems: Vec::new() };
    let allowed_columns = &allowed[test];
    // The Go tests' database has `citext` installed by its init script.
    if let Err(e) = db.superuser_client().await.batch_execute("CREATE EXTENSION IF NOT EXISTS citext").await {
        if steps.iter().any(|s| s["sql"].as_str().is_some_and(|q| q.to_lowercase().contains("citext"))) {
            return Err(format!("not replayable: {}", crate::harness::describe_pg_error(&e)));
        }
    }
    for step in steps {
        if let Some(sql) = step["sql"].as_str() {
            let client = db.superuser_client().await;
            if let Err(e) = client.batch_execute(sql).await {
                return Err(format!("not replayable: {}", crate::harness::describe_pg_error(&e)));
            }
            continue;
        }
        if bindings.is_none() {
            let mut list = Vec::new();
            for table in &tables {
                list.push(binding(table, &key_of(db, table).await.iter().map(String::as_str).collect::<Vec<_>>()));
            }
            bindings = Some(list);
        }
        let bindings = bindings.as_ref().unwrap();
        let expected = step["documents"].as_array().unwrap();
        let ours = run_capture(&config, bindings, &mut state, expected.len()).await;
        let mut unmatched: Vec<Value> = ours.iter().map(|(_, d)| d.clone()).collect();
        for pair in expected {
            outcome.total += 1;
            let go = &pair[1];
            let with_before = go["_meta"].get("before").is_some();
            if let Some(at) = unmatched.iter().position(|d| same(&comparable(d, with_before), go)) {
                unmatched.remove(at);
                outcome.reproduced += 1;
                continue;
            }
            // The nearest of ours (same op, fewest differing columns) names the difference.
            let nearest = unmatched
                .iter()
                .enumerate()
                .map(|(i, d)| (i, differing_columns(go, &comparable(d, with_before))))
                .min_by_key(|(_, cols)| cols.len());
            let columns = nearest.as_ref().map(|(_, c)| c.clone()).unwrap_or_else(|| vec!["<missing>".into()]);
            let all_allowed =
                columns.iter().all(|c| allowed_columns.get(c).and_then(Value::as_str).is_some_and(|r| !r.is_empty()));
            if all_allowed {
                outcome.allowed += 1;
                if let Some((i, _)) = nearest {
                    unmatched.remove(i);
                }
            } else {
                let ours = nearest.map(|(i, _)| comparable(&unmatched[i], with_before)).unwrap_or(Value::Null);
                outcome
                    .problems
                    .push(format!("run {:?}: columns {columns:?}\n  go:   {go}\n  ours: {ours}", step["run"]));
            }
        }
        for extra in unmatched {
            let reason = allowed["extra_documents"].get(test).and_then(Value::as_str).filter(|r| !r.is_empty());
            match reason {
                Some(reason) => eprintln!("go documents: {test}: an extra document, allowed ({reason}): {extra}"),
                None => outcome.problems.push(format!("run {:?}: a document Go did not emit: {extra}", step["run"])),
            }
        }
    }
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_connector_documents_are_reproduced_in_go_value_formats() {
    let allowed: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/allowed.json")).unwrap()).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("allowed.json"))
        .collect();
    paths.sort();
    let only = std::env::var("GO_DOCUMENTS_ONLY").ok();
    let mut report = BTreeMap::new();
    let mut failures = Vec::new();
    let (mut sum_reproduced, mut sum_total) = (0, 0);
    for path in paths {
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let test = fixture["test"].as_str().unwrap().to_string();
        // `GO_DOCUMENTS_ONLY=a,b`: only the tests whose names contain one of these.
        if only.as_ref().is_some_and(|o| !o.split(',').any(|part| test.contains(part))) {
            continue;
        }
        match replay(&fixture, &allowed).await {
            Ok(outcome) => {
                sum_reproduced += outcome.reproduced;
                sum_total += outcome.total;
                let line = format!(
                    "{}/{} reproduced, {} allowed differences",
                    outcome.reproduced, outcome.total, outcome.allowed
                );
                if !outcome.problems.is_empty() {
                    failures.push(format!("{test}:\n{}", outcome.problems.join("\n")));
                }
                report.insert(test, line);
            }
            Err(reason) => {
                let listed = allowed["not_replayable"].get(&test).and_then(Value::as_str);
                if listed.is_none() {
                    failures.push(format!("{test}: {reason}"));
                }
                report.insert(test, reason);
            }
        }
    }
    for (test, line) in &report {
        eprintln!("go documents: {test}: {line}");
    }
    eprintln!("go documents: total {sum_reproduced}/{sum_total} reproduced");
    assert!(failures.is_empty(), "documents not reproduced:\n{}", failures.join("\n"));
}

/// The value `SELECT <expression> FROM test.formats WHERE id = <id>` as JSON: what the
/// table itself says a document should hold.
async fn from_table(db: &TestDb, expression: &str, id: i32) -> Value {
    let client = db.superuser_client().await;
    let sql = format!("SELECT ({expression})::text FROM test.formats WHERE id = $1");
    let text: String = client.query_one(&sql, &[&id]).await.expect("read the row").get(0);
    serde_json::from_str(&text).expect("JSON from the table")
}

/// Insert row `id`, run the capture once (restarting with `state`) and return its document.
async fn capture_row(db: &TestDb, config: &Value, state: &mut Value, id: i32) -> Value {
    db.execute(&format!("INSERT INTO test.formats VALUES ({id}, ROW({id}, 'x y')::pair, '10.0.0.{id}')")).await;
    let bindings = vec![binding("formats", &["/id"])];
    let docs = run_capture(config, &bindings, state, 1).await;
    let doc = docs.into_iter().map(|(_, d)| d).find(|d| d["id"] == id);
    doc.unwrap_or_else(|| panic!("no document for row {id}"))
}

/// The value-formats marker of the merged state's binding.
fn marker(state: &Value) -> Value {
    state["bindingStateV1"]["test%2Fformats"]["metadata"]["value_formats"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_keeps_the_formats_it_started_with_and_flags_override_both_ways() {
    let db = TestDb::create("value_formats_state").await;
    db.execute(
        "CREATE TYPE pair AS (a int, b text); CREATE TABLE test.formats (id int PRIMARY KEY, p pair, addr inet)",
    )
    .await;
    let typed = "to_jsonb(p)";
    let literal = "to_jsonb(p::text)";
    let printed = "to_jsonb(addr)";
    let prefixed = "to_jsonb(addr::text)";
    let all = json!(source_postgres::value::ValueFormats::improved().improvement_names());
    let config = db.endpoint_config();

    // A new capture (empty state): every improvement, written down with its checkpoints.
    let mut state = json!({});
    let doc = capture_row(&db, &config, &mut state, 1).await;
    assert_eq!(doc["p"], from_table(&db, typed, 1).await);
    assert_eq!(doc["addr"], from_table(&db, printed, 1).await);
    assert_ne!(doc["addr"], from_table(&db, prefixed, 1).await, "the two forms differ for a host address");
    assert_eq!(marker(&state), all);

    // A restart keeps them.
    let doc = capture_row(&db, &config, &mut state, 2).await;
    assert_eq!(doc["p"], from_table(&db, typed, 2).await);
    assert_eq!(marker(&state), all);

    // The same state as the Go connector writes it (no marker): the Go connector's formats,
    // with no configuration change, and the marker now says so.
    let mut go_state = state.clone();
    for binding in go_state["bindingStateV1"].as_object_mut().unwrap().values_mut() {
        binding.as_object_mut().unwrap().remove("metadata");
    }
    let doc = capture_row(&db, &config, &mut go_state, 3).await;
    assert_eq!(doc["p"], from_table(&db, literal, 3).await);
    assert_eq!(doc["addr"], from_table(&db, prefixed, 3).await);
    assert_eq!(marker(&go_state), json!([]));
    // ... and keeps them across a restart.
    let doc = capture_row(&db, &config, &mut go_state, 4).await;
    assert_eq!(doc["p"], from_table(&db, literal, 4).await);

    // Flags override the state both ways, one difference at a time; the marker records what
    // was in effect, so a restart without the flag keeps it.
    let mut flagged = config.clone();
    flagged["advanced"]["feature_flags"] = json!("typed_composites");
    let doc = capture_row(&db, &flagged, &mut go_state, 5).await;
    assert_eq!(doc["p"], from_table(&db, typed, 5).await);
    assert_eq!(doc["addr"], from_table(&db, prefixed, 5).await);
    assert_eq!(marker(&go_state), json!(["typed_composites"]));
    let doc = capture_row(&db, &config, &mut go_state, 6).await;
    assert_eq!(doc["p"], from_table(&db, typed, 6).await);
    assert_eq!(doc["addr"], from_table(&db, prefixed, 6).await);

    // A state marked with every improvement, and one of them switched off by its flag.
    let mut state = go_state;
    state["bindingStateV1"]["test%2Fformats"]["metadata"]["value_formats"] = all.clone();
    flagged["advanced"]["feature_flags"] = json!("no_inet_as_printed");
    let doc = capture_row(&db, &flagged, &mut state, 7).await;
    assert_eq!(doc["p"], from_table(&db, typed, 7).await);
    assert_eq!(doc["addr"], from_table(&db, prefixed, 7).await);
    // The umbrella flag puts a new-format capture in Go's formats.
    flagged["advanced"]["feature_flags"] = json!("go_value_formats");
    let doc = capture_row(&db, &flagged, &mut state, 8).await;
    assert_eq!(doc["p"], from_table(&db, literal, 8).await);
    assert_eq!(doc["addr"], from_table(&db, prefixed, 8).await);
}
