//! A raw-protocol driver for capture sessions: it plays the Flow runtime's part (spec, open,
//! reading documents and checkpoints, acknowledging) so tests can kill, inspect and restart
//! the connector at will.

use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};

use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::harness::connector_path;

/// RFC 7396 merge patch, as the runtime applies checkpoint states.
pub use source_postgres::capture::state::merge_patch;

/// One thing the connector did.
#[derive(Debug)]
pub enum Event {
    Captured {
        doc: Value,
    },
    Checkpoint {
        patch: Value,
    },
    /// A `sourcedSchema` response. Reported only by a session that asked for them
    /// ([`Session::report_sourced_schemas`]); others record it in
    /// [`Session::sourced_schemas`] and read on, so tests about documents and checkpoints
    /// need not know about schemas.
    SourcedSchema {
        binding: u64,
        schema: Value,
    },
    /// The connector closed its output and exited with this status.
    Exited(std::process::ExitStatus),
    /// Nothing arrived before the deadline.
    Timeout,
}

pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// With [`Session::open_capturing_stderr`]: the stderr lines so far, and their reader.
    stderr: Option<(StderrLines, JoinHandle<()>)>,
    /// Every `sourcedSchema` response so far: (binding, schema).
    sourced: Vec<(u64, Value)>,
    /// Whether [`Session::next`] returns them as [`Event::SourcedSchema`].
    report_sourced: bool,
}

/// The stderr lines a session has written so far, shared with the task that reads them.
type StderrLines = Arc<Mutex<Vec<String>>>;

/// A binding of table `test.<table>` keyed by `key`.
pub fn binding(table: &str, key: &[&str]) -> Value {
    json!({
        "resourceConfig": {"namespace": "test", "stream": table},
        "resourcePath": ["test", table],
        "collection": {"name": format!("tests/{table}"), "key": key},
        "stateKey": format!("test%2F{table}"),
    })
}

impl Session {
    /// Start the connector and open a capture; returns once `opened` arrived.
    pub async fn open(config: &Value, bindings: Vec<Value>, state: &Value, env: &[(&str, &str)]) -> Session {
        Session::start(config, bindings, state, env, false).await
    }

    /// [`Session::open`], collecting the connector's stderr (still echoed to the test's
    /// stderr) for [`Session::stderr_lines`].
    pub async fn open_capturing_stderr(
        config: &Value,
        bindings: Vec<Value>,
        state: &Value,
        env: &[(&str, &str)],
    ) -> Session {
        Session::start(config, bindings, state, env, true).await
    }

    async fn start(
        config: &Value,
        bindings: Vec<Value>,
        state: &Value,
        env: &[(&str, &str)],
        capture_stderr: bool,
    ) -> Session {
        let mut command = Command::new(connector_path());
        command
            .env("LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if capture_stderr { Stdio::piped() } else { Stdio::inherit() })
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start the connector");
        let mut stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = child.stderr.take().map(|pipe| {
            let collected = Arc::new(Mutex::new(Vec::new()));
            let sink = collected.clone();
            let reader = tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{line}");
                    sink.lock().expect("stderr lines").push(line);
                }
            });
            (collected, reader)
        });
        let open = json!({"open": {"capture": {"name": "tests/driver", "config": config, "bindings": bindings}, "state": state}});
        stdin.write_all(format!("{}\n{}\n", json!({"spec": {}}), open).as_bytes()).await.expect("write requests");
        let mut session =
            Session { child, stdin: Some(stdin), lines, stderr, sourced: Vec::new(), report_sourced: false };
        for expected in ["spec", "opened"] {
            let line = tokio::time::timeout(Duration::from_secs(60), session.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {expected} response within 60 s"))
                .expect("read");
            let Some(line) = line else {
                let _ = session.child.wait().await;
                let stderr = session.stderr_lines().await.join("\n");
                panic!("the connector exited before {expected}\n{stderr}");
            };
            let response: Value = serde_json::from_str(&line).expect("JSON response");
            assert!(response.get(expected).is_some(), "expected {expected}, got {line}");
        }
        session
    }

    /// The stderr lines so far (all of them once the connector exited), with
    /// [`Session::open_capturing_stderr`]; empty otherwise.
    pub async fn stderr_lines(&mut self) -> Vec<String> {
        let Some((lines, reader)) = &mut self.stderr else { return Vec::new() };
        if matches!(self.child.try_wait(), Ok(Some(_))) && !reader.is_finished() {
            // The pipe closes with the process (the connector starts no children).
            let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
        }
        lines.lock().expect("stderr lines").clone()
    }

    /// The connector's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Make [`Session::next`] return `sourcedSchema` responses as events.
    pub fn report_sourced_schemas(&mut self) {
        self.report_sourced = true;
    }

    /// Every `sourcedSchema` response read so far, as (binding, schema), in order.
    pub fn sourced_schemas(&self) -> &[(u64, Value)] {
        &self.sourced
    }

    /// The next event, waiting at most `wait` (for each line read).
    pub async fn next(&mut self, wait: Duration) -> Event {
        loop {
            match self.next_response(wait).await {
                Event::SourcedSchema { binding, schema } if !self.report_sourced => {
                    self.sourced.push((binding, schema));
                }
                Event::SourcedSchema { binding, schema } => {
                    self.sourced.push((binding, schema.clone()));
                    return Event::SourcedSchema { binding, schema };
                }
                other => return other,
            }
        }
    }

    async fn next_response(&mut self, wait: Duration) -> Event {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Err(_) => Event::Timeout,
            Ok(line) => match line.expect("read connector output") {
                None => Event::Exited(self.child.wait().await.expect("wait")),
                Some(line) => {
                    let response: Value = match serde_json::from_str(&line) {
                        Ok(response) => response,
                        // A connector that dies (or fails) while its output buffer holds part
                        // of a line leaves that part last: the runtime never commits it.
                        Err(e) => match self.lines.next_line().await {
                            Ok(None) => return Event::Exited(self.child.wait().await.expect("wait")),
                            _ => panic!("bad output line {line:?}: {e}"),
                        },
                    };
                    if let Some(captured) = response.get("captured") {
                        Event::Captured { doc: captured["doc"].clone() }
                    } else if let Some(checkpoint) = response.get("checkpoint") {
                        assert_eq!(checkpoint["state"]["mergePatch"], true, "checkpoints are merge patches");
                        Event::Checkpoint { patch: checkpoint["state"]["updated"].clone() }
                    } else if let Some(sourced) = response.get("sourcedSchema") {
                        let binding = sourced.get("binding").map_or(Some(0), Value::as_u64).expect("a binding number");
                        let schema = sourced.get("documentSchema").cloned().expect("a documentSchema");
                        Event::SourcedSchema { binding, schema }
                    } else {
                        panic!("unexpected response {line}")
                    }
                }
            },
        }
    }

    /// Acknowledge one checkpoint (ignored if the connector already exited).
    pub async fn acknowledge(&mut self) {
        if let Some(stdin) = &mut self.stdin {
            if stdin.write_all(b"{\"acknowledge\":{\"checkpoints\":1}}\n").await.is_err() {
                self.stdin = None;
            }
        }
    }

    /// Acknowledge `count` checkpoints at once, as a runtime whose commits lag behind does
    /// (ignored if the connector already exited).
    pub async fn acknowledge_many(&mut self, count: u64) {
        if let Some(stdin) = &mut self.stdin {
            let line = format!("{}\n", json!({"acknowledge": {"checkpoints": count}}));
            if stdin.write_all(line.as_bytes()).await.is_err() {
                self.stdin = None;
            }
        }
    }

    /// SIGKILL, as a crash or the runtime tearing the session down.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `X/Y` LSN text as a number.
pub fn lsn_value(text: &str) -> u64 {
    text.parse::<source_postgres::lsn::Lsn>().expect("LSN text").0
}

/// The slot's confirmed position, if it has one.
pub async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Option<u64> {
    client
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
        .expect("query slot")
        .and_then(|row| row.get::<_, Option<String>>(0))
        .map(|text| lsn_value(&text))
}

/// Whether a capture state records every binding as past its backfill (mode `Active`).
pub fn backfills_done(state: &Value) -> bool {
    state
        .get("bindingStateV1")
        .and_then(Value::as_object)
        .is_some_and(|bindings| !bindings.is_empty() && bindings.values().all(|b| b["mode"] == "Active"))
}

/// Drain checkpoints that carry no documents (startup, catch-up) until every binding's
/// backfill is done and nothing has arrived for a while. Quiet alone is not enough: on a
/// busy shared server the connector can spend longer than the quiet period creating its slot
/// (which waits for every running transaction), and a test's changes would then race the
/// backfill instead of following it.
pub async fn settle(session: &mut Session, state: &mut Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match session.next(Duration::from_secs(2)).await {
            Event::Checkpoint { patch } => {
                merge_patch(state, &patch);
                session.acknowledge().await;
            }
            Event::Timeout if backfills_done(state) => return,
            Event::Timeout if Instant::now() < deadline => {}
            other => panic!("unexpected event while settling (state {state}): {other:?}"),
        }
    }
}
