//! Transcript tests: the acceptance tests of the binary.
//!
//! A transcript (`tests/transcripts/<name>.txt`) is a list of steps run in order against a fresh
//! database named after the file ([`TestDb`]). The runner writes one text output, which must
//! equal the committed snapshot `tests/it/snapshots/it__transcript__<name>.snap`.
//!
//! # Step syntax
//!
//! Each step is a header line starting with `## `, then a body that runs to the next header.
//! Text before the first header is a free-form description and is ignored.
//!
//! | header              | what it does |
//! |---------------------|--------------|
//! | `## sql`            | runs the body as superuser in the test database (one batch) |
//! | `## spec`           | runs the binary with stdin `{"spec":{"connectorType":"IMAGE","config":{}}}` |
//! | `## discover`       | runs the binary with the internal spec request, then a discover request with the test's endpoint config; an optional body (JSON or YAML) is merged into the config as an RFC 7396 merge patch |
//! | `## request`        | runs the binary with the body's lines as stdin; `{{config}}` becomes the endpoint config JSON, `{{slot}}` the slot name, `{{database}}` the database name |
//! | `## capture`        | runs `source-postgres preview --output-state --output-schemas` over a generated catalog (so `["sourcedSchema",…]` lines show each schema at the checkpoint that commits it), with a state file kept across the transcript's capture steps; optional body (YAML or JSON): `{bindings: [{namespace, stream, mode?, priority?, target?, backfill?}], config: <merge patch>}`; no bindings means every discovered table |
//! | `## expect-exit N`  | the previous step must exit with code N (otherwise every step must exit 0) |
//!
//! # Output
//!
//! For each step: its header line, then for `sql` the body as run, and for the others the
//! binary's stdout after [`normalize`]. Each stdout line must be one JSON value (the protocol's
//! framing); lines that are not are marked `!! not JSON:`. Responses are pretty-printed (key
//! order kept, small flat arrays and objects on one line); `capture` output stays one document
//! per line, and a run of identical `["connectorState",…]` lines (after normalization: typically
//! checkpoints that only advance the cursor, whose number depends on timing) is shown once.
//! The answer to the internal spec request of a `discover` step is elided. A non-zero
//! exit adds `exit: N` and the last stderr line. Temporary paths show as `<tmp>` and the binary's
//! path as `<connector>`.
//!
//! # Running
//!
//! Each transcript is a test of its own: `cargo test --test it transcript::` runs them all,
//! `cargo test --test it transcript::capture_modes` one. `INSTA_UPDATE=always` writes new
//! snapshots; review them before committing.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use source_postgres::capture::state::merge_patch;

use crate::harness::{connector_path, normalize, run_connector, TestDb};

const TRANSCRIPT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/transcripts");
const SPEC_REQUEST: &str = r#"{"spec":{"connectorType":"IMAGE","config":{}}}"#;
const CAPTURE_NAME: &str = "tests/source-postgres";

/// One test per transcript, so that one can be filtered and rerun
/// (`cargo test --test it transcript::capture_modes`).
macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_transcript(stringify!($name));
            }
        )*

        /// The transcripts the tests above run, which must be every file of the directory.
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

transcripts! {
    capture_backfill_scheduling,
    capture_key_types,
    capture_modes,
    capture_replica_identity,
    capture_table_lifecycle,
    capture_toast_and_key_changes,
    discover_history_mode,
    discover_keys,
    discover_partitions,
    discover_simple,
    discover_types,
    spec,
    validate_apply,
    validate_binding_rules,
    validate_keyless_table,
    validate_missing_publication,
    validate_unreadable_table,
}

/// A transcript added to the directory but not to the list above would never run.
#[test]
fn every_transcript_file_has_its_test() {
    let mut files: Vec<String> = std::fs::read_dir(TRANSCRIPT_DIR)
        .unwrap_or_else(|e| panic!("read {TRANSCRIPT_DIR}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .map(|path| transcript_name(&path))
        .collect();
    files.sort();
    let mut listed: Vec<String> = LISTED.iter().map(|name| name.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "every tests/transcripts/*.txt needs a line in the `transcripts!` list");
}

fn transcript_name(path: &Path) -> String {
    path.file_stem().and_then(|stem| stem.to_str()).expect("transcript file name is UTF-8").to_string()
}

fn check_transcript(name: &str) {
    let path = Path::new(TRANSCRIPT_DIR).join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let output = run_transcript(name, &text);
    let mut settings = insta::Settings::clone_current();
    settings.set_input_file(&path);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, output));
}

#[derive(Debug, PartialEq)]
enum StepKind {
    Sql,
    Spec,
    Discover,
    Request,
    Capture,
    ExpectExit(i32),
}

#[derive(Debug)]
struct Step {
    header: String,
    kind: StepKind,
    body: String,
    /// 1-based line of the header, for error messages.
    line: usize,
}

fn parse_transcript(text: &str) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(header) = line.strip_prefix("## ") else {
            if let Some(step) = steps.last_mut() {
                step.body.push_str(line);
                step.body.push('\n');
            }
            continue;
        };
        let number = index + 1;
        let words: Vec<&str> = header.split_whitespace().collect();
        let kind = match words.as_slice() {
            ["sql"] => StepKind::Sql,
            ["spec"] => StepKind::Spec,
            ["discover"] => StepKind::Discover,
            ["request"] => StepKind::Request,
            ["capture"] => StepKind::Capture,
            ["expect-exit", code] => {
                StepKind::ExpectExit(code.parse().map_err(|_| format!("line {number}: bad exit code {code:?}"))?)
            }
            _ => return Err(format!("line {number}: unknown step {line:?}")),
        };
        if let StepKind::ExpectExit(_) = kind {
            let follows_a_run =
                steps.last().is_some_and(|step| !matches!(step.kind, StepKind::Sql | StepKind::ExpectExit(_)));
            if !follows_a_run {
                return Err(format!("line {number}: expect-exit must follow a step that runs the binary"));
            }
        }
        steps.push(Step { header: line.trim_end().to_string(), kind, body: String::new(), line: number });
    }
    for step in &mut steps {
        step.body = step.body.trim_matches('\n').to_string();
        if matches!(step.kind, StepKind::Spec | StepKind::ExpectExit(_)) && !step.body.trim().is_empty() {
            return Err(format!("line {}: this step takes no body", step.line));
        }
    }
    Ok(steps)
}

/// Runs the transcript's steps and returns the text to compare with the snapshot.
fn run_transcript(name: &str, text: &str) -> String {
    let steps = parse_transcript(text).unwrap_or_else(|e| panic!("transcript {name}: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let db = runtime.block_on(TestDb::create(&format!("transcript_{name}")));
    let work = tempfile::Builder::new().prefix("transcript-").tempdir().expect("temporary directory");
    let runner = Runner { db: &db, work: work.path(), state_file: work.path().join("state.json") };

    let mut out = String::new();
    for (index, step) in steps.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        out.push_str(&step.header);
        out.push('\n');
        let output = match step.kind {
            StepKind::ExpectExit(_) => continue,
            StepKind::Sql => {
                runtime.block_on(db.execute(&step.body));
                push_line(&mut out, &step.body);
                continue;
            }
            StepKind::Spec => run_connector(&[], &format!("{SPEC_REQUEST}\n"), &[]),
            StepKind::Discover => runner.discover(step),
            StepKind::Request => runner.request(step),
            StepKind::Capture => runner.capture(step),
        };
        let stdout = runner.normalize(&output.stdout);
        let stderr = runner.normalize(&output.stderr);
        let mut lines = stdout.lines().peekable();
        if step.kind == StepKind::Discover && lines.peek().is_some_and(|l| l.starts_with("{\"spec\":")) {
            lines.next();
            out.push_str("(answer to the internal spec request elided)\n");
        }
        let mut printed = false;
        let mut previous_state_line = None;
        for line in lines {
            // How many checkpoints merely advance the cursor between two events depends on
            // timing (keepalives, idle polls): show a run of identical state lines once.
            let is_state = line.starts_with("[\"connectorState\",");
            if is_state && previous_state_line == Some(line) {
                continue;
            }
            previous_state_line = is_state.then_some(line);
            printed = true;
            push_line(&mut out, &render_stdout_line(line, step.kind != StepKind::Capture));
        }
        if !printed {
            out.push_str("(no output)\n");
        }
        if output.exit_code != 0 {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            out.push_str(&format!("exit: {}\nstderr: {last}\n", output.exit_code));
        }
        let expected = match steps.get(index + 1).map(|next| &next.kind) {
            Some(StepKind::ExpectExit(code)) => *code,
            _ => 0,
        };
        assert_eq!(
            output.exit_code, expected,
            "transcript {name}, step `{}` at line {}: exit code {} (expected {expected})\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            step.header, step.line, output.exit_code, output.stdout, output.stderr
        );
    }
    out
}

struct Runner<'a> {
    db: &'a TestDb,
    work: &'a Path,
    state_file: PathBuf,
}

impl Runner<'_> {
    fn discover(&self, step: &Step) -> crate::harness::ConnectorOutput {
        let mut config = self.db.endpoint_config();
        if !step.body.trim().is_empty() {
            merge_patch(&mut config, &parse_body(step));
        }
        let discover = json!({"discover": {"connectorType": "IMAGE", "config": config}});
        run_connector(&[], &format!("{SPEC_REQUEST}\n{discover}\n"), &[])
    }

    fn request(&self, step: &Step) -> crate::harness::ConnectorOutput {
        let config = self.db.endpoint_config().to_string();
        let mut stdin = String::new();
        for line in step.body.lines().filter(|line| !line.trim().is_empty()) {
            stdin.push_str(
                &line
                    .replace("{{config}}", &config)
                    .replace("{{slot}}", &self.db.slot_name())
                    .replace("{{database}}", &self.db.name),
            );
            stdin.push('\n');
        }
        run_connector(&[], &stdin, &[])
    }

    fn capture(&self, step: &Step) -> crate::harness::ConnectorOutput {
        let body = if step.body.trim().is_empty() { json!({}) } else { parse_body(step) };
        let Value::Object(body) = body else {
            panic!("line {}: the capture body must be a mapping", step.line);
        };
        let mut config = self.db.endpoint_config();
        let mut bindings = Vec::new();
        for (key, value) in body {
            match key.as_str() {
                "config" => merge_patch(&mut config, &value),
                "bindings" => {
                    let Value::Array(items) = value else {
                        panic!("line {}: `bindings` must be a list", step.line);
                    };
                    bindings = items.into_iter().map(|item| catalog_binding(step, item)).collect();
                }
                other => panic!("line {}: unknown capture setting {other:?}", step.line),
            }
        }
        let catalog = json!({
            "captures": {
                CAPTURE_NAME: {
                    "endpoint": {"local": {"command": [connector_path()], "config": config}},
                    "bindings": bindings,
                }
            }
        });
        let catalog_path = self.work.join("catalog.yaml");
        let yaml = serde_saphyr::to_string(&catalog).expect("catalog to YAML");
        std::fs::write(&catalog_path, yaml).expect("write the catalog");
        run_connector(
            &[
                "preview",
                "--source",
                catalog_path.to_str().expect("UTF-8 path"),
                "--state-file",
                self.state_file.to_str().expect("UTF-8 path"),
                "--until-idle",
                "--output-state",
                "--output-schemas",
            ],
            "",
            &[],
        )
    }

    /// [`normalize`], plus this run's temporary directory and the binary's path.
    fn normalize(&self, text: &str) -> String {
        let work = self.work.to_str().expect("UTF-8 path");
        normalize(&text.replace(connector_path(), "<connector>").replace(work, "<tmp>"))
    }
}

/// `{namespace, stream, mode?, target?, backfill?, ...}` → a catalog binding. The target
/// collection defaults to `tests/<namespace>/<stream>`; `backfill` is the binding's backfill
/// counter; every other key is part of the resource config.
fn catalog_binding(step: &Step, item: Value) -> Value {
    let Value::Object(mut resource) = item else {
        panic!("line {}: each binding must be a mapping", step.line);
    };
    let target = match resource.remove("target") {
        Some(Value::String(target)) => target,
        Some(other) => panic!("line {}: bad binding target {other}", step.line),
        None => {
            let part = |key: &str| resource.get(key).and_then(Value::as_str).map(str::to_string);
            let stream = part("stream").unwrap_or_else(|| panic!("line {}: a binding needs a stream", step.line));
            match part("namespace") {
                Some(namespace) => format!("tests/{namespace}/{stream}"),
                None => format!("tests/{stream}"),
            }
        }
    };
    // The backfill counter belongs to the binding, not to the resource config.
    match resource.remove("backfill") {
        Some(backfill) => json!({"resource": resource, "target": target, "backfill": backfill}),
        None => json!({"resource": resource, "target": target}),
    }
}

fn parse_body(step: &Step) -> Value {
    serde_json::from_str(&step.body)
        .or_else(|_| serde_saphyr::from_str(&step.body))
        .unwrap_or_else(|e| panic!("line {}: the body is neither JSON nor YAML: {e}", step.line))
}

fn push_line(out: &mut String, text: &str) {
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

/// Checks the line is one JSON value and, if `pretty` (a response), indents it; otherwise
/// (a captured document or checkpoint) summarises its long strings.
fn render_stdout_line(line: &str, pretty: bool) -> String {
    if serde_json::from_str::<Value>(line).is_err() {
        return format!("!! not JSON: {line}");
    }
    if !pretty {
        return summarise_long_strings(line);
    }
    let mut parser = JsonParser { text: line, at: 0 };
    let tree = parser.value();
    let mut out = String::new();
    render(&tree, 0, &mut out);
    out
}

/// String literals longer than this (as written, escapes included) are summarised.
const LONG_STRING: usize = 1024;

/// Replaces each string literal of a JSON text longer than [`LONG_STRING`] by its length and
/// the start of its SHA-256 (of the literal as written), so that a snapshot of a document
/// with a TOASTed value stays readable and still changes when the value does.
fn summarise_long_strings(json: &str) -> String {
    use sha2::{Digest, Sha256};
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len().min(4096));
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'"' {
            at += 1;
            continue;
        }
        let start = at;
        at += 1;
        while at < bytes.len() && bytes[at] != b'"' {
            at += if bytes[at] == b'\\' { 2 } else { 1 };
        }
        let end = at.min(bytes.len() - 1);
        at += 1;
        let content = &json[start + 1..end];
        if content.len() > LONG_STRING {
            let digest = Sha256::digest(content.as_bytes());
            let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
            out.push_str(&json[copied..start]);
            out.push_str(&format!("\"<{} bytes, sha256 {hex}…>\"", content.len()));
            copied = end + 1;
        }
    }
    out.push_str(&json[copied..]);
    out
}

/// A JSON value with its scalars kept as written and its keys in their original order (a
/// `serde_json::Value` may sort them).
enum Json<'a> {
    Scalar(&'a str),
    Array(Vec<Json<'a>>),
    Object(Vec<(&'a str, Json<'a>)>),
}

/// Parses text already known to be valid JSON.
struct JsonParser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> JsonParser<'a> {
    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn peek(&mut self) -> u8 {
        self.skip_space();
        self.text.as_bytes()[self.at]
    }

    fn value(&mut self) -> Json<'a> {
        match self.peek() {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                while self.peek() != b'}' {
                    let key = self.string();
                    self.peek(); // skip to ':'
                    self.at += 1;
                    members.push((key, self.value()));
                    if self.peek() == b',' {
                        self.at += 1;
                    }
                }
                self.at += 1;
                Json::Object(members)
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                while self.peek() != b']' {
                    items.push(self.value());
                    if self.peek() == b',' {
                        self.at += 1;
                    }
                }
                self.at += 1;
                Json::Array(items)
            }
            b'"' => Json::Scalar(self.string()),
            _ => {
                let start = self.at;
                let rest = &self.text.as_bytes()[start..];
                let len =
                    rest.iter().take_while(|b| !matches!(b, b',' | b']' | b'}') && !b.is_ascii_whitespace()).count();
                self.at += len;
                Json::Scalar(&self.text[start..start + len])
            }
        }
    }

    /// A string literal, quotes and escapes included.
    fn string(&mut self) -> &'a str {
        self.skip_space();
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start + 1;
        while bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        self.at = i + 1;
        &self.text[start..=i]
    }
}

const INLINE_WIDTH: usize = 80;

fn render(value: &Json, indent: usize, out: &mut String) {
    if let Some(inline) = inline_form(value) {
        out.push_str(&inline);
        return;
    }
    let pad = "  ".repeat(indent + 1);
    match value {
        Json::Scalar(text) => out.push_str(text),
        Json::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad);
                render(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&"  ".repeat(indent));
            out.push(']');
        }
        Json::Object(members) => {
            out.push_str("{\n");
            for (i, (key, item)) in members.iter().enumerate() {
                out.push_str(&pad);
                out.push_str(key);
                out.push_str(": ");
                render(item, indent + 1, out);
                out.push_str(if i + 1 < members.len() { ",\n" } else { "\n" });
            }
            out.push_str(&"  ".repeat(indent));
            out.push('}');
        }
    }
}

/// The compact form of scalars, empty containers and short containers of scalars.
fn inline_form(value: &Json) -> Option<String> {
    let scalar = |v: &Json| match v {
        Json::Scalar(text) => Some(text.to_string()),
        Json::Array(items) if items.is_empty() => Some("[]".into()),
        Json::Object(members) if members.is_empty() => Some("{}".into()),
        _ => None,
    };
    let text = match value {
        Json::Scalar(_) => return scalar(value),
        Json::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            format!("[{}]", parts?.join(","))
        }
        Json::Object(members) => {
            let parts: Option<Vec<String>> =
                members.iter().map(|(key, v)| scalar(v).map(|v| format!("{key}:{v}"))).collect();
            format!("{{{}}}", parts?.join(","))
        }
    };
    (text.len() <= INLINE_WIDTH).then_some(text)
}

#[test]
fn transcript_steps_parse() {
    let steps =
        parse_transcript("A description.\n## sql\nCREATE TABLE t();\n\n## discover\n{\"a\":1}\n## expect-exit 1\n")
            .expect("parses");
    let kinds: Vec<&StepKind> = steps.iter().map(|step| &step.kind).collect();
    assert_eq!(kinds, [&StepKind::Sql, &StepKind::Discover, &StepKind::ExpectExit(1)]);
    assert_eq!(steps[0].body, "CREATE TABLE t();");
    assert_eq!(steps[1].body, "{\"a\":1}");
    assert!(parse_transcript("## sql\nSELECT 1;\n## expect-exit 1\n").is_err());
    assert!(parse_transcript("## frobnicate\n").is_err());
}

#[test]
fn transcript_output_is_pretty_and_keeps_key_order() {
    let line = r#"{"spec":{"protocol":3032023,"z":{"type":["string","null"]},"a":[],"list":[{"b":1},{"a":"x\"}"}]}}"#;
    insta::assert_snapshot!(render_stdout_line(line, true), @r#"
    {
      "spec": {
        "protocol": 3032023,
        "z": {
          "type": ["string","null"]
        },
        "a": [],
        "list": [
          {"b":1},
          {"a":"x\"}"}
        ]
      }
    }
    "#);
    assert_eq!(render_stdout_line("{oops", true), "!! not JSON: {oops");
}

#[test]
fn transcript_merge_patch_follows_rfc_7396() {
    let mut config = json!({"a": 1, "advanced": {"slotName": "s", "sslmode": "disable"}});
    merge_patch(&mut config, &json!({"a": null, "advanced": {"sslmode": "require"}, "b": [1]}));
    assert_eq!(config, json!({"advanced": {"slotName": "s", "sslmode": "require"}, "b": [1]}));
}

#[test]
fn long_strings_are_summarised_by_length_and_hash() {
    let long = "x".repeat(LONG_STRING + 1);
    let escaped = format!("{}\\\"", "y".repeat(LONG_STRING));
    let line = format!(r#"{{"short":"a\"b","long":"{long}","{long}":["{escaped}",1]}}"#);
    let out = summarise_long_strings(&line);
    let value: Value = serde_json::from_str(&out).expect("still JSON");
    assert_eq!(value["short"], "a\"b");
    let summary = value["long"].as_str().expect("a string");
    assert!(summary.starts_with(&format!("<{} bytes, sha256 ", LONG_STRING + 1)), "{summary}");
    // Keys are strings too; equal values give equal summaries, other values other ones.
    assert!(value.get(summary).is_some(), "{out}");
    let other = value[summary][0].as_str().expect("a string");
    assert!(other.starts_with(&format!("<{} bytes, sha256 ", LONG_STRING + 2)) && other != summary, "{out}");
    assert_eq!(summarise_long_strings(r#"{"a":"b"}"#), r#"{"a":"b"}"#);
}
