//! Malformed requests and configurations: each must end the connector with exit code 1 and
//! one clear error line on stderr (a JSON log line whose message names the problem), print
//! no response, and never echo a password. Names with quotes, semicolons and unicode reach
//! the server only as bind parameters or quoted identifiers, so they can only ever be "not
//! found", never executed.
//!
//! All cases are in one snapshot, `bad_input`, to be read like a table of error messages.

use serde_json::{json, Value};

use crate::harness::{normalize, run_connector, TestDb};

/// A password that must never appear in any output.
const SECRET: &str = "hunter2-very-secret";

/// `validate` with `config` and one binding per resource config.
fn validate(config: &Value, resources: &[Value]) -> String {
    let bindings: Vec<Value> = resources
        .iter()
        .map(|resource| json!({"resourceConfig": resource, "collection": {"name": "tests/t", "key": ["/id"]}}))
        .collect();
    json!({"validate": {"name": "tests/capture", "connectorType": "IMAGE", "config": config, "bindings": bindings}})
        .to_string()
}

/// `base` with `patch` merged in (RFC 7396: null removes a key).
fn patched(base: &Value, patch: Value) -> Value {
    fn merge(target: &mut Value, patch: &Value) {
        let Value::Object(patch) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        let object = target.as_object_mut().unwrap();
        for (key, value) in patch {
            if value.is_null() {
                object.remove(key);
            } else {
                merge(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
    let mut config = base.clone();
    merge(&mut config, &patch);
    config
}

#[test]
fn malformed_configs_and_requests_fail_with_one_clear_line() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::create("bad_input").await;
        db.execute("CREATE TABLE test.t (id int PRIMARY KEY);").await;
        db
    });
    // Configs that fail before connecting carry a secret that must never be echoed; the
    // last cases connect for real, with the real password.
    let real = db.endpoint_config();
    let mut base = real.clone();
    base["credentials"]["password"] = json!(SECRET);
    let table = json!({"namespace": "test", "stream": "t"});
    let with = |patch: Value| validate(&patched(&base, patch), std::slice::from_ref(&table));
    let bound = |resource: Value| validate(&base, &[resource]);
    let connected = |resource: Value| validate(&real, &[resource]);
    let long = "x".repeat(10_000);

    let cases: Vec<(&str, String)> = vec![
        // Requests.
        ("request is not JSON", "{oops".into()),
        ("request is a JSON array", "[1, 2]".into()),
        ("request is an empty object", "{}".into()),
        ("request is unknown", r#"{"frobnicate": {}}"#.into()),
        ("request names two verbs", r#"{"spec": {}, "discover": {}}"#.into()),
        ("validate is a string", r#"{"validate": "yes"}"#.into()),
        ("bindings is an object", json!({"validate": {"config": base, "bindings": {}}}).to_string()),
        (
            "backfill counter is negative",
            json!({"validate": {"config": base, "bindings": [{"resourceConfig": table, "backfill": -1}]}}).to_string(),
        ),
        (
            "backfill counter is huge",
            json!({"validate": {"config": base, "bindings": [{"resourceConfig": table, "backfill": 1e20}]}})
                .to_string(),
        ),
        ("acknowledge outside a capture", r#"{"acknowledge": {"checkpoints": 1}}"#.into()),
        // The endpoint configuration.
        ("config is a string", validate(&json!("postgres://u:p@h/db"), std::slice::from_ref(&table))),
        ("config is null", validate(&Value::Null, std::slice::from_ref(&table))),
        ("address is missing", with(json!({"address": null}))),
        ("address is empty", with(json!({"address": ""}))),
        ("address is blank", with(json!({"address": "   "}))),
        ("address is a URL", with(json!({"address": format!("postgres://flow:{SECRET}@db.example.com:5432/shop")}))),
        ("address port is not a number", with(json!({"address": "db.example.com:abc"}))),
        ("address port is zero", with(json!({"address": "db.example.com:0"}))),
        ("address port is too large", with(json!({"address": "db.example.com:70000"}))),
        ("address is huge", with(json!({"address": long}))),
        ("address has a space", with(json!({"address": "db host:5432"}))),
        ("address is a number", with(json!({"address": 5432}))),
        ("address is a Supabase pooler", with(json!({"address": "aws-0-us-east-1.pooler.supabase.com:6543"}))),
        ("address is a Supabase transaction port", with(json!({"address": "db.abcdefgh.supabase.co:6543"}))),
        ("address is a Neon pooler", with(json!({"address": "ep-cool-name-123456-pooler.us-east-2.aws.neon.tech"}))),
        ("user is empty", with(json!({"user": ""}))),
        ("user has a NUL", with(json!({"user": "flow\u{0}capture"}))),
        ("user is too long", with(json!({"user": "u".repeat(100)}))),
        ("database is empty", with(json!({"database": ""}))),
        ("database is an array", with(json!({"database": ["a", "b"]}))),
        ("database has a newline", with(json!({"database": "shop\nDROP"}))),
        ("password is missing", with(json!({"credentials": null}))),
        ("password is empty", with(json!({"credentials": {"password": ""}}))),
        ("password is a number", with(json!({"credentials": {"password": 1234567}}))),
        ("password has a NUL", with(json!({"credentials": {"password": format!("{SECRET}\u{0}")}}))),
        ("auth_type is unknown", with(json!({"credentials": {"auth_type": "Kerberos"}}))),
        ("sslmode is unknown", with(json!({"advanced": {"sslmode": "sometimes"}}))),
        ("slot name has quotes", with(json!({"advanced": {"slotName": "Flow\"Slot"}}))),
        ("slot name has a semicolon", with(json!({"advanced": {"slotName": "s; DROP DATABASE x"}}))),
        ("slot name is unicode", with(json!({"advanced": {"slotName": "slöt_表"}}))),
        ("publication name is empty", with(json!({"advanced": {"publicationName": ""}}))),
        ("publication name is too long", with(json!({"advanced": {"publicationName": "p".repeat(200)}}))),
        ("watermarks table is not qualified", with(json!({"advanced": {"watermarksTable": "flow_watermarks"}}))),
        ("watermarks table has an empty part", with(json!({"advanced": {"watermarksTable": "public."}}))),
        ("watermarks table is huge", with(json!({"advanced": {"watermarksTable": long}}))),
        ("backfill chunk size is a string", with(json!({"advanced": {"backfill_chunk_size": "lots"}}))),
        ("backfill chunk size is a huge float", with(json!({"advanced": {"backfill_chunk_size": 1e30}}))),
        ("statement timeout is not a duration", with(json!({"advanced": {"statement_timeout": "forever"}}))),
        ("skip_backfills entry is not qualified", with(json!({"advanced": {"skip_backfills": "public.a, b"}}))),
        ("table pattern has too many dots", with(json!({"discoveryFilters": {"table_patterns": ["a.b.c"]}}))),
        ("discovery filters have an unknown field", with(json!({"discoveryFilters": {"frobnicate": true}}))),
        ("included schema is blank", with(json!({"discoveryFilters": {"include_schemas": [" "]}}))),
        ("advanced has an unknown field", with(json!({"advanced": {"frobnicate": 1}}))),
        (
            "SSH endpoint names no user",
            with(json!({"networkTunnel": {"sshForwarding": {"sshEndpoint": "ssh://bastion", "privateKey": SECRET}}})),
        ),
        (
            "SSH private key is no key",
            with(json!({"networkTunnel": {"sshForwarding": {"sshEndpoint": "ssh://u@bastion", "privateKey": SECRET}}})),
        ),
        // Resource configurations.
        ("resource is an array", bound(json!(["test", "t"]))),
        ("resource has no stream", bound(json!({"namespace": "test"}))),
        ("resource namespace is empty", bound(json!({"namespace": "", "stream": "t"}))),
        ("resource stream is a number", bound(json!({"namespace": "test", "stream": 7}))),
        ("resource stream is too long", bound(json!({"namespace": "test", "stream": "t".repeat(64)}))),
        ("resource stream has a NUL", bound(json!({"namespace": "test", "stream": "t\u{0}"}))),
        ("resource mode is unknown", bound(json!({"namespace": "test", "stream": "t", "mode": "Sometimes"}))),
        (
            "resource filter with Precise mode",
            bound(
                json!({"namespace": "test", "stream": "t", "mode": "Precise", "advanced": {"additional_backfill_filter": "id > 1"}}),
            ),
        ),
        (
            "resource filter is blank",
            bound(json!({"namespace": "test", "stream": "t", "advanced": {"additional_backfill_filter": "  "}})),
        ),
        (
            "resource priority is huge",
            bound(json!({"namespace": "test", "stream": "t", "priority": 1_000_000_000_000_i64})),
        ),
        ("resource binds a table twice", validate(&base, &[table.clone(), table.clone()])),
        (
            "stream with quotes and a semicolon",
            connected(json!({"namespace": "test", "stream": "t\"; DROP TABLE test.t; --"})),
        ),
        ("namespace with quotes and unicode", connected(json!({"namespace": "Ünï\"cødé 表", "stream": "t"}))),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let mut report = String::new();
    for (name, request) in &cases {
        let output = run_connector(&[], &format!("{request}\n"), &[]);
        let context = format!("case {name:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", output.stdout, output.stderr);
        assert_eq!(output.exit_code, 1, "{context}");
        assert_eq!(output.stdout, "", "no response may be written: {context}");
        assert!(
            !output.stderr.contains(SECRET) && !output.stderr.contains("1234567"),
            "a password was echoed: {context}"
        );
        let last = output.stderr.lines().last().unwrap_or_default();
        let line: Value =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("the last stderr line is not JSON ({e}): {context}"));
        assert_eq!(line["level"], "error", "{context}");
        let message = line["msg"].as_str().unwrap_or_default();
        assert!(!message.is_empty() && message.len() < 1_000, "{context}");
        report.push_str(&format!("## {name}\n{}\n\n", normalize(message).replace(&db.name, "<db>")));
    }
    insta::assert_snapshot!("bad_input", report);

    // Nothing was executed: the table is still there.
    runtime.block_on(db.execute("SELECT 1 FROM test.t"));
}
