//! What the fault-injection tests share ([`crate::capture_faults`], [`crate::capture_chaos`]):
//! a driver that plays the Flow runtime across a series of connector sessions, and the
//! invariant checks.
//!
//! The driver ([`Runner`]) commits documents only at checkpoints: it reduces a checkpoint's
//! documents by key with the collections' `merge` reduction (a document's columns replace the
//! stored ones, columns it omits — unchanged TOAST values — keep theirs; `op: d` removes the
//! key), merges the state patch, then acknowledges. Documents after the last checkpoint of a
//! session that dies are never committed. Every restart opens the connector with the last
//! committed state, as the runtime would.
//!
//! Invariants:
//! - after a final clean run, the reduced documents equal the table ([`assert_matches_table`]);
//! - no key's committed history goes backwards ([`Committed::commit`]): a counter column only
//!   ever increases, and a key whose deletion was committed never comes back (the workloads
//!   never reuse a key);
//! - the slot's `confirmed_flush_lsn` never passes the cursor of the last checkpoint the
//!   driver committed and acknowledged ([`check_slot`], after every checkpoint and session).

#![allow(dead_code)] // Not every fault test uses every helper.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::driver::{lsn_value, merge_patch, Event, Session};
use crate::harness::{describe_pg_error, TestCluster};

/// How to reach a database as superuser, again after a server restart.
#[derive(Clone)]
pub struct Conn {
    host: String,
    port: u16,
    user: String,
    password: String,
    pub database: String,
}

impl Conn {
    pub fn superuser(cluster: &TestCluster, database: &str) -> Conn {
        Conn {
            host: cluster.host.clone(),
            port: cluster.port,
            user: cluster.superuser.clone(),
            password: cluster.superuser_password.clone(),
            database: database.to_string(),
        }
    }

    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database)
            .application_name("source-postgres-fault-tests")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connect, retrying while the server (re)starts, for at most `within`.
    pub async fn connect_retrying(&self, within: Duration) -> Client {
        let deadline = Instant::now() + within;
        loop {
            match self.connect().await {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot connect to database {} within {within:?}: {}", self.database, describe_pg_error(&e))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// A superuser connection that reconnects after its server restarted.
pub struct Admin {
    conn: Conn,
    client: Option<Client>,
}

impl Admin {
    pub fn new(conn: Conn) -> Admin {
        Admin { conn, client: None }
    }

    pub async fn client(&mut self) -> &Client {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(self.conn.connect_retrying(Duration::from_secs(60)).await);
        }
        self.client.as_ref().expect("connected")
    }

    /// The slot's `confirmed_flush_lsn` and whether a walsender holds it (`None`: no such
    /// slot); `Err` while the server cannot be reached.
    pub async fn slot(&mut self, slot: &str) -> Result<Option<(Option<u64>, bool)>, tokio_postgres::Error> {
        let row = self
            .client()
            .await
            .query_opt(
                "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match row {
            Ok(row) => Ok(row.map(|row| (row.get::<_, Option<String>>(0).map(|text| lsn_value(&text)), row.get(1)))),
            Err(e) => {
                self.client = None;
                Err(e)
            }
        }
    }

    /// Wait until no walsender holds the slot: the server notices a dead or killed
    /// connector's connection only a moment later, and a new session would find the slot
    /// busy meanwhile.
    pub async fn wait_slot_released(&mut self, slot: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(None | Some((_, false))) = self.slot(slot).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replication slot {slot} is still in use {within:?} after its connector ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the driver has committed so far.
pub struct Committed {
    pub state: Value,
    /// Each key's reduced document (the columns; `_meta` is left out).
    pub rows: BTreeMap<i64, Map<String, Value>>,
    /// Keys whose deletion was committed.
    pub deleted: BTreeSet<i64>,
    pub checkpoints: u64,
    pub documents: u64,
    /// Per column, update documents that left it out although the stored document has it
    /// (unchanged TOAST values under `REPLICA IDENTITY DEFAULT`).
    pub omitted: BTreeMap<String, u64>,
    /// The column whose committed value must never decrease, if any.
    counter: Option<String>,
    /// How to take the last checkpoint back (see [`Committed::undo_last`]).
    undo: Option<Undo>,
}

struct Undo {
    state: Value,
    rows: Vec<(i64, Option<Map<String, Value>>)>,
    deleted: Vec<i64>,
    documents: u64,
}

impl Committed {
    pub fn new(counter: Option<&str>) -> Committed {
        Committed {
            state: json!({}),
            rows: BTreeMap::new(),
            deleted: BTreeSet::new(),
            checkpoints: 0,
            documents: 0,
            omitted: BTreeMap::new(),
            counter: counter.map(str::to_string),
            undo: None,
        }
    }

    /// Commit one checkpoint: its documents in order, then its state patch. Panics if a key's
    /// history went backwards.
    pub fn commit(&mut self, documents: Vec<Value>, patch: &Value) {
        let count = documents.len() as u64;
        // Each touched key's committed document before this checkpoint.
        let mut before: BTreeMap<i64, Option<Map<String, Value>>> = BTreeMap::new();
        for doc in documents {
            let Value::Object(mut doc) = doc else { panic!("a document is not an object: {doc}") };
            let id = doc
                .get("id")
                .and_then(Value::as_i64)
                .unwrap_or_else(|| panic!("a document without an integer id: {}", short(&doc)));
            let meta = doc.remove("_meta").unwrap_or(Value::Null);
            if std::env::var("FAULT_TRACE").ok().and_then(|t| t.parse::<i64>().ok()) == Some(id) {
                eprintln!("trace: {meta} {}", short(&doc));
            }
            before.entry(id).or_insert_with(|| self.rows.get(&id).cloned());
            if meta["op"] == "d" {
                self.rows.remove(&id);
                continue;
            }
            match self.rows.get_mut(&id) {
                Some(stored) => {
                    if meta["op"] == "u" {
                        for column in stored.keys().filter(|c| !doc.contains_key(*c)) {
                            *self.omitted.entry(column.clone()).or_default() += 1;
                        }
                    }
                    stored.extend(doc);
                }
                None => {
                    self.rows.insert(id, doc);
                }
            }
        }
        let mut newly_deleted = Vec::new();
        for (id, previous) in &before {
            match self.rows.get(id) {
                None => {
                    if self.deleted.insert(*id) {
                        newly_deleted.push(*id);
                    }
                }
                Some(row) => {
                    assert!(
                        !self.deleted.contains(id),
                        "history of id {id} went backwards: it came back after its deletion was committed: {}",
                        short(row)
                    );
                    if let (Some(counter), Some(previous)) = (&self.counter, previous) {
                        if let (Some(new), Some(old)) =
                            (row.get(counter).and_then(Value::as_i64), previous.get(counter).and_then(Value::as_i64))
                        {
                            assert!(new >= old, "history of id {id} went backwards: {counter} {new} after {old}");
                        }
                    }
                }
            }
        }
        let state = self.state.clone();
        merge_patch(&mut self.state, patch);
        if std::env::var("FAULT_TRACE").is_ok() {
            eprintln!("trace: checkpoint {patch}");
        }
        self.checkpoints += 1;
        self.documents += count;
        self.undo = Some(Undo { state, rows: before.into_iter().collect(), deleted: newly_deleted, documents: count });
    }

    /// Take the last committed checkpoint back, as a runtime that died before its commit
    /// became durable would restart from the one before.
    pub fn undo_last(&mut self) {
        let undo = self.undo.take().expect("a checkpoint to take back");
        self.state = undo.state;
        for (id, row) in undo.rows {
            match row {
                Some(row) => self.rows.insert(id, row),
                None => self.rows.remove(&id),
            };
        }
        for id in undo.deleted {
            self.deleted.remove(&id);
        }
        self.checkpoints -= 1;
        self.documents -= undo.documents;
    }

    /// The committed cursor, if any.
    pub fn cursor(&self) -> Option<&str> {
        self.state.get("cursor").and_then(Value::as_str).filter(|c| !c.is_empty())
    }

    /// Whether every binding's backfill is done.
    pub fn streaming(&self) -> bool {
        crate::driver::backfills_done(&self.state)
    }
}

/// A document for a failure message: long values are cut.
pub fn short(row: &Map<String, Value>) -> String {
    let cut: Map<String, Value> = row
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) if s.len() > 40 => (k.clone(), Value::String(format!("{}…({} bytes)", &s[..20], s.len()))),
            other => (k.clone(), other.clone()),
        })
        .collect();
    Value::Object(cut).to_string()
}

/// The slot must never be confirmed past the last acknowledged cursor. Skipped while the
/// server cannot be reached (it is restarting).
pub async fn check_slot(admin: &mut Admin, slot: &str, committed: &Committed) {
    let Some(cursor) = committed.cursor() else { return };
    if let Ok(Some((Some(confirmed), _))) = admin.slot(slot).await {
        let acknowledged = lsn_value(cursor);
        assert!(
            confirmed <= acknowledged,
            "slot {slot} confirmed {} past the acknowledged cursor {cursor}",
            source_postgres::lsn::Lsn(confirmed)
        );
    }
}

/// What a capture test captures.
pub struct Capture {
    pub config: Value,
    pub bindings: Vec<Value>,
    pub slot: String,
}

/// What the driver has seen of the current session.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub backfill_documents: u64,
    pub change_documents: u64,
    pub checkpoints: u64,
}

/// How a session ended.
#[derive(Debug)]
pub enum Ending {
    /// Exit status 0.
    Completed,
    /// Any other exit, with the message of its last error line and its stderr.
    Failed { status: ExitStatus, error: Option<String>, stderr: Vec<String> },
    /// Still running at the deadline (the caller decides whether to kill it).
    TimedOut,
}

impl Ending {
    /// The exit code of a failed session.
    pub fn code(&self) -> Option<i32> {
        match self {
            Ending::Failed { status, .. } => status.code(),
            _ => None,
        }
    }

    /// For failure messages: the status, the error, and the end of stderr.
    pub fn describe(&self) -> String {
        match self {
            Ending::Completed => "completed (exit 0)".into(),
            Ending::TimedOut => "still running at the deadline".into(),
            Ending::Failed { status, error, stderr } => {
                let tail = stderr[stderr.len().saturating_sub(15)..].join("\n");
                format!("failed ({status}) with error {error:?}; end of stderr:\n{tail}")
            }
        }
    }
}

/// The `msg` of the last `level: error` line of a connector's stderr.
pub fn error_message(stderr: &[String]) -> Option<String> {
    stderr.iter().rev().find_map(|line| {
        let line: Value = serde_json::from_str(line).ok()?;
        (line["level"] == "error").then(|| line["msg"].as_str().unwrap_or_default().to_string())
    })
}

/// One connector session driven as the runtime drives it.
pub struct Runner<'a> {
    session: Session,
    capture: &'a Capture,
    committed: &'a mut Committed,
    pending: Vec<Value>,
    pub progress: Progress,
}

impl<'a> Runner<'a> {
    /// Start a session from the committed state, once no walsender holds the slot.
    pub async fn open(
        capture: &'a Capture,
        committed: &'a mut Committed,
        admin: &mut Admin,
        env: &[(&str, &str)],
    ) -> Runner<'a> {
        admin.wait_slot_released(&capture.slot, Duration::from_secs(30)).await;
        // `FAULT_LOG_LEVEL` (e.g. `debug`) overrides the sessions' `LOG_LEVEL=warn`.
        let level = std::env::var("FAULT_LOG_LEVEL").ok();
        let mut env = env.to_vec();
        if let Some(level) = &level {
            env.push(("LOG_LEVEL", level.as_str()));
        }
        let session =
            Session::open_capturing_stderr(&capture.config, capture.bindings.clone(), &committed.state, &env).await;
        Runner { session, capture, committed, pending: Vec::new(), progress: Progress::default() }
    }

    pub fn committed(&self) -> &Committed {
        self.committed
    }

    /// The connector's stderr lines so far.
    pub async fn stderr_lines(&mut self) -> Vec<String> {
        self.session.stderr_lines().await
    }

    /// The `sourcedSchema` responses so far, as (binding, schema).
    pub fn sourced_schemas(&self) -> &[(u64, Value)] {
        self.session.sourced_schemas()
    }

    /// Drive the session until `stop` holds; the test fails, saying `what` did not happen,
    /// how the session ended and how far it had come (so a stuck session tells itself from
    /// a slow one), if it ends or `within` passes first.
    pub async fn reach(
        &mut self,
        admin: &mut Admin,
        within: Duration,
        what: &str,
        stop: impl FnMut(&Progress, &Committed) -> bool,
    ) {
        if let Some(ending) = self.run_until(admin, Instant::now() + within, stop).await {
            let Progress { backfill_documents, change_documents, checkpoints } = &self.progress;
            panic!(
                "{what}: {}; this session had sent {backfill_documents} backfill and {change_documents} change \
                 documents and {checkpoints} checkpoints within {within:?}, and the committed state is {}",
                ending.describe(),
                if self.committed.streaming() { "streaming" } else { "still backfilling" },
            );
        }
    }

    /// Drive the session until `stop` holds (then `None`), it exits, or the deadline passes.
    pub async fn run_until(
        &mut self,
        admin: &mut Admin,
        deadline: Instant,
        mut stop: impl FnMut(&Progress, &Committed) -> bool,
    ) -> Option<Ending> {
        loop {
            if stop(&self.progress, self.committed) {
                return None;
            }
            match self.session.next(deadline.saturating_duration_since(Instant::now())).await {
                Event::SourcedSchema { .. } => {}
                Event::Timeout => return Some(Ending::TimedOut),
                Event::Exited(status) => {
                    let stderr = self.session.stderr_lines().await;
                    check_slot(admin, &self.capture.slot, self.committed).await;
                    if status.success() {
                        assert!(
                            self.pending.is_empty(),
                            "{} documents after the last checkpoint of a session that ended cleanly",
                            self.pending.len()
                        );
                        return Some(Ending::Completed);
                    }
                    // Never committed: the runtime drops them.
                    self.pending.clear();
                    return Some(Ending::Failed { status, error: error_message(&stderr), stderr });
                }
                Event::Captured { doc } => {
                    if doc["_meta"]["source"]["snapshot"] == true {
                        self.progress.backfill_documents += 1;
                    } else {
                        self.progress.change_documents += 1;
                    }
                    self.pending.push(doc);
                }
                Event::Checkpoint { patch } => {
                    self.committed.commit(std::mem::take(&mut self.pending), &patch);
                    self.session.acknowledge().await;
                    self.progress.checkpoints += 1;
                    check_slot(admin, &self.capture.slot, self.committed).await;
                }
            }
        }
    }

    /// Drive the session until it exits, or kill it at the deadline (then `TimedOut`).
    pub async fn finish(mut self, admin: &mut Admin, within: Duration) -> Ending {
        let ending = self.run_until(admin, Instant::now() + within, |_, _| false).await.expect("no stop condition");
        if let Ending::TimedOut = ending {
            self.session.kill().await;
            check_slot(admin, &self.capture.slot, self.committed).await;
        }
        ending
    }

    /// SIGKILL, as a crash or the runtime tearing the session down. Documents after the last
    /// checkpoint were never committed.
    pub async fn kill(self, admin: &mut Admin) {
        if std::env::var("FAULT_TRACE").is_ok() {
            eprintln!("trace: kill");
        }
        self.session.kill().await;
        check_slot(admin, &self.capture.slot, self.committed).await;
    }
}

/// A last session with `SHUTDOWN_AFTER_POLLING=yes`, after the faults: it must finish the
/// backfills, catch up with the stream and exit 0.
pub async fn final_run(capture: &Capture, committed: &mut Committed, admin: &mut Admin) {
    let runner = Runner::open(capture, committed, admin, &[("SHUTDOWN_AFTER_POLLING", "yes")]).await;
    match runner.finish(admin, Duration::from_secs(180)).await {
        Ending::Completed => {}
        other => panic!("the final session did not complete within 180 s: {}", other.describe()),
    }
}

/// Every row of `table` (a qualified, quoted name) as its JSON document (`to_jsonb`, which
/// encodes these tests' column types as the connector does).
pub async fn table_documents(client: &Client, table: &str) -> Vec<Map<String, Value>> {
    client
        .query(&format!("SELECT to_jsonb(t)::text FROM {table} t"), &[])
        .await
        .unwrap_or_else(|e| panic!("read {table}: {}", describe_pg_error(&e)))
        .iter()
        .map(|row| {
            let Ok(Value::Object(doc)) = serde_json::from_str(row.get::<_, &str>(0)) else {
                panic!("to_jsonb did not give an object")
            };
            doc
        })
        .collect()
}

/// [`table_documents`] by `id`.
pub async fn table_rows(client: &Client, table: &str) -> BTreeMap<i64, Map<String, Value>> {
    let documents = table_documents(client, table).await;
    documents.into_iter().map(|doc| (doc["id"].as_i64().expect("an integer id"), doc)).collect()
}

/// The committed documents equal `expected` (the table, usually), row for row.
pub fn assert_matches_table(committed: &Committed, expected: &BTreeMap<i64, Map<String, Value>>, context: &str) {
    let missing: Vec<&i64> = expected.keys().filter(|id| !committed.rows.contains_key(id)).take(10).collect();
    let extra: Vec<&i64> = committed.rows.keys().filter(|id| !expected.contains_key(id)).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "captured rows differ from the table ({context}): missing {missing:?}, extra {extra:?} ({} captured, {} in the table)",
        committed.rows.len(),
        expected.len()
    );
    let differing: Vec<String> = expected
        .iter()
        .filter(|(id, row)| committed.rows.get(id) != Some(row))
        .take(5)
        .map(|(id, row)| format!("id {id}: captured {}, table {}", short(&committed.rows[id]), short(row)))
        .collect();
    assert!(differing.is_empty(), "captured rows differ from the table ({context}):\n{}", differing.join("\n"));
}

// ---- Network faults, through a proxy ------------------------------------------------------

/// What the proxy does with its connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyState {
    /// Forward nothing (in either direction), but keep the sockets open.
    stalled: bool,
    /// Bumped to reset every connection open at the time.
    cuts: u64,
}

/// A TCP proxy in front of PostgreSQL that can cut every connection (a reset on both sides)
/// or stall them (a blackhole: bytes are no longer forwarded, sockets stay open).
pub struct Proxy {
    pub address: String,
    control: watch::Sender<ProxyState>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let (control, watcher) = watch::channel(ProxyState::default());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), watcher.clone()));
            }
        });
        Proxy { address, control, accept }
    }

    /// Reset every open connection; new ones are forwarded again.
    pub fn cut(&self) {
        self.control.send_modify(|s| {
            s.cuts += 1;
            s.stalled = false;
        });
    }

    /// Stop forwarding bytes on every connection, old and new.
    pub fn stall(&self) {
        self.control.send_modify(|s| s.stalled = true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(mut client: TcpStream, upstream: String, control: watch::Receiver<ProxyState>) {
    let cuts = control.borrow().cuts;
    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut = control.clone();
    let was_cut = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::select! {
            _ = async { tokio::join!(forward(client_read, server_write, control.clone()), forward(server_read, client_write, control.clone())) } => false,
            _ = cut.wait_for(|s| s.cuts != cuts) => true,
        }
    };
    if was_cut {
        // Closing with a zero linger sends a reset: the connection dies abruptly.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

async fn forward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut control: watch::Receiver<ProxyState>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if control.wait_for(|s| !s.stalled).await.is_err() {
            return;
        }
        tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = control.changed() => {}
        }
    }
}
