//! The capture session (`open`): backfill interleaved with watermark fences, pgoutput
//! streaming, checkpoints and acknowledgements.
//!
//! ```text
//!   open ─► prerequisites ─► reconcile state ─► opened + checkpoint ─► slot / start LSN
//!                                                                          │
//!        ┌──────────────────────────── main loop ◄─────────────────────────┘
//!        │  while a binding is backfilling:
//!        │     chunk query (rows → documents)      ─┐ one checkpoint:
//!        │     watermark write                       │ chunk rows, every change up to
//!        │     stream until the watermark commits  ─┘ the fence, the new resume key
//!        │  then: stream, one checkpoint per source transaction (coalesced under load)
//!        └──────────────────────────────────────────────────────────────────
//! ```
//!
//! Why this is exactly-once at the level of committed checkpoints: the state's `cursor` is
//! the end LSN of the last transaction whose documents precede the checkpoint, and a
//! transaction is never split across checkpoints. After a crash the runtime hands back the
//! last committed state and replication restarts at its cursor, so nothing committed is
//! replayed and nothing after it is skipped. The replication slot is confirmed only up to
//! cursors of checkpoints the runtime has acknowledged, so the server never discards WAL we
//! might need. When the captured tables are idle the walsender's keepalive position is
//! turned into a document-less checkpoint; once acknowledged it advances the slot too, so
//! an idle capture never makes the server retain WAL.
//!
//! Backfill chunks are read in key order; each is followed by a watermark write and the
//! stream is read up to that watermark's commit, all in one checkpoint. The next chunk's
//! query starts (on a second connection) right after the watermark is written, so the
//! database reads it while the stream catches up to the fence. A precise backfill drops
//! changes to rows beyond its resume key (a later chunk reads their current state); a normal
//! one emits every change, and a change that precedes a chunk's snapshot is either already
//! reflected in its rows or re-applied after them within the same checkpoint. Either way the
//! reduced result converges to the table and no committed history goes backwards, provided
//! each chunk's snapshot sees every transaction the stream delivered before its fence.
//! PostgreSQL does not order visibility like the WAL, so that is checked, not assumed: chunk
//! queries report their snapshot, and a chunk whose snapshot misses a delivered transaction
//! that changed a backfilling table is read again once that transaction is visible (see
//! [`visibility`]).
//!
//! Small tables share fences: a round reads back-to-back chunks of several tables of the
//! same priority until one chunk's worth of rows is read, then writes one watermark for all
//! of them (see `Session::backfill_round`).
//!
//! The session's code is in three files: this one (setup, the main loop, fences, checkpoints
//! and the connection watchdog), [`changes`] (replication messages to documents) and
//! [`chunks`] (running and reading backfill chunks); the pure parts they build on are
//! [`backfill`] (chunk SQL), [`keys`] and [`order`] (resume keys), [`retype`] (key columns
//! whose type changes under a backfill), [`document`], [`spill`], [`state`] and
//! [`visibility`]. Which slot a session streams from, and from where (slot ownership, resume
//! positions the server never reached), is decided in [`slot`].
//!
//! The replication connection is watched: every status update asks the walsender for a
//! reply, and a connection that leaves replies unanswered for six status intervals is
//! declared dead (the capture fails and is restarted from its last checkpoint) instead of
//! hanging on a socket whose network path was cut.

pub mod backfill;
mod change_plan;
mod changes;
mod chunks;
pub mod document;
pub mod keys;
pub mod order;
mod relations;
pub mod retype;
mod slot;
pub mod slot_wait;
pub mod spill;
pub mod state;
mod transactions;
pub mod visibility;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::config::{BackfillMode, Config, ResourceConfig};
use crate::discovery::catalog::TypeRegistry;
use crate::discovery::{schema::column_of_pointer, DiscoveredTable, FALLBACK_KEY};
use crate::error::Error;
use crate::failpoint::{self, Failpoint};
use crate::lsn::Lsn;
use crate::pg::replication::{ReplicationClient, ReplicationStream};
use crate::pg::{quote_identifier, PgError};
use crate::protocol::emitter::Emitter;
use crate::protocol::{Open, Request, RequestReader};
use crate::value;
use chunks::ChunkRows;
use document::EncodedRow;
use relations::Relations;
use spill::Spill;
use state::{BindingState, CaptureState, TableMode};
use transactions::TransactionAssembler;
use visibility::{DeliveredXids, Snapshot};

/// Longest interval between standby status updates. The walsender closes a connection
/// that sends nothing for `wal_sender_timeout` (60 s by default), so the interval actually
/// used is a third of the server's setting when that is shorter (see [`status_interval`]).
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Coalescing bounds: a checkpoint is written when the stream has nothing ready, or after
/// this many transactions or documents.
const MAX_TRANSACTIONS_PER_CHECKPOINT: u64 = 1_000;
const MAX_DOCUMENTS_PER_CHECKPOINT: u64 = 20_000;
/// How far the server's WAL end may be ahead of the message being read before the stream
/// counts as draining a backlog, and how long to wait for the next frame then.
const BACKLOG_BYTES: u64 = 64 * 1024;
const BACKLOG_WAIT: Duration = Duration::from_millis(5);

/// Bounds of a backfill round (chunks of several tables sharing one fence).
const MAX_TABLES_PER_FENCE: usize = 100;
const MAX_ROUND_TIME: Duration = Duration::from_secs(5);

/// Delivered transactions to remember before asking the server which of them every new
/// snapshot sees (see [`visibility`]); this bounds the set during a long catch-up.
const DELIVERED_XIDS_CHECK_AT: usize = 4_096;
/// When a slot creation that is still waiting is first reported, and how often after that.
const SLOT_WAIT_FIRST_REPORT: Duration = Duration::from_secs(5);
const SLOT_WAIT_REPORT_EVERY: Duration = Duration::from_secs(30);

/// The shortest silence after a reply request that counts as a dead connection.
const MIN_UNANSWERED: Duration = Duration::from_secs(5);
/// A binding of this session.
struct Binding {
    state_key: String,
    resource: ResourceConfig,
    table: DiscoveredTable,
    state: BindingState,
    /// Key columns used for backfill order and key-change detection (empty: keyless).
    key_columns: Vec<String>,
    /// Whether the collection is keyed by `/_meta/source/loc/*`.
    keyed_by_location: bool,
    /// The columns of the collection key, when every key pointer names a column: every
    /// document must carry them (empty: the key is not made of columns, nothing to check).
    document_key: Vec<String>,
    /// Backfill query details, prepared on first use.
    key_types: Option<Vec<String>>,
    /// The key columns' order signatures, read with `key_types` (see [`retype`]).
    key_signature: Option<Vec<String>>,
    /// The snapshot of this round's keyed chunk and the state before it (see [`retype`]).
    chunk_undo: Option<ChunkUndo>,
    /// Pages per keyless chunk (the Go connector's heuristic, from the leaf count).
    keyless_pages: Option<u64>,
    /// How each key column orders, when all can be compared exactly (precise backfills).
    key_orders: Option<Vec<order::KeyOrder>>,
    /// The precise backfill's resume key, as comparable values.
    scanned_key: Option<Vec<order::KeyValue>>,
    /// Rows (keyed) or pages (keyless) per chunk: shrinks when a chunk query hits the
    /// statement timeout, and grows back while chunks are fast.
    chunk_limit: Option<i64>,
    /// Planner estimate of the table's rows (all partitions), for progress reports.
    estimated_rows: Option<u64>,
}

/// How to take back a keyed chunk: the snapshot it read with, and what it changed.
struct ChunkUndo {
    snapshot: Snapshot,
    state: BindingState,
    scanned_key: Option<Vec<order::KeyValue>>,
}

/// A chunk query started ahead of time (see `Session::prefetch_next_chunk`).
struct PrefetchedChunk {
    index: usize,
    plan: backfill::ChunkPlan,
    /// The query text: the table's columns may have been read again since it was sent.
    sql: String,
    /// `Session::forgotten_deliveries` when the query was sent.
    forgotten_deliveries: u64,
    query: tokio::task::JoinHandle<Result<ChunkRows, tokio_postgres::Error>>,
}

/// Events from the stdin reader task.
enum Input {
    Acknowledge(u32),
    Eof,
    Failed(Error),
}

/// Session state.
struct Session<'e, W: AsyncWrite + Unpin> {
    config: Config,
    emitter: &'e mut Emitter<W>,
    client: Client,
    /// A second connection for backfill chunk queries, so the next chunk can be read while
    /// the first connection writes a watermark.
    backfill_client: std::sync::Arc<Client>,
    registry: TypeRegistry,
    bindings: Vec<Binding>,
    by_table: BTreeMap<(String, String), usize>,
    relations: Relations,
    protocol_version: u32,
    /// End LSN of the last transaction whose changes were emitted.
    cursor: Lsn,
    /// Cursor of every checkpoint written and not yet acknowledged, oldest first.
    unacknowledged: VecDeque<Lsn>,
    /// Highest acknowledged cursor: the only position reported to the server as flushed.
    acknowledged: Lsn,
    transactions: TransactionAssembler,
    spill: Spill,
    changed_bindings: BTreeSet<usize>,
    documents_since_checkpoint: u64,
    transactions_since_checkpoint: u64,
    /// Whether a transaction committed since the last checkpoint (or the cursor moved).
    checkpoint_due: bool,
    /// Per-commit checkpoints are held back while streaming to a backfill fence.
    hold_checkpoints: bool,
    /// The watermark we are streaming towards, and whether its write has been seen.
    pending_watermark: Option<String>,
    watermark_seen: bool,
    fence_reached: bool,
    last_status: Instant,
    /// When a status update asked the server for a reply that has not come yet (any frame
    /// counts as the answer): the dead-connection detector of `stream_until`.
    reply_awaited_since: Option<Instant>,
    /// The chunk query a backfill round sent ahead for its next table.
    speculative: Option<PrefetchedChunk>,
    /// Transactions the stream delivered that changed a backfilling table, until a chunk
    /// query's snapshot is known to see them (see [`visibility`]).
    delivered: DeliveredXids,
    /// Size of `delivered` at which its visible transactions are looked up and forgotten.
    delivered_check_at: usize,
    /// How many times transactions were forgotten on the strength of a fresh snapshot
    /// (`forget_visible_deliveries`): a chunk query sent before that may have an older
    /// snapshot that does not see them, so its rows are not used.
    forgotten_deliveries: u64,
    /// When the publication was last checked to still carry everything the capture reads
    /// (see `check_publication`).
    publication_checked: Instant,
    server_version: i32,
    /// The server's WAL end as of the last XLogData, and where that message started.
    server_wal_end: Lsn,
    last_message_start: Lsn,
    /// The furthest position the server has shown it has (its flush position at the start,
    /// then every XLogData's and keepalive's WAL end): the slot is never confirmed beyond it,
    /// whatever the state said.
    server_flushed: Lsn,
    /// The capture's task name, written into every watermark: what later proves that the
    /// slot of this name is this capture's (see `start_without_cursor`).
    owner: String,
    /// How often to send standby status updates (see [`STATUS_INTERVAL`]).
    status_interval: Duration,
    document: Vec<u8>,
    row: EncodedRow,
    old_row: EncodedRow,
    source_tag: Option<String>,
    skipped_changes: BTreeMap<String, u64>,
    /// Tables already warned about key changes that lost unchanged TOAST values.
    toast_warnings: BTreeSet<u32>,
    /// Backfill progress reporting: when this session's backfill began, rows read in
    /// this session, and when the last status line was written.
    backfill_started: Option<Instant>,
    rows_this_session: u64,
    last_progress_report: Option<Instant>,
}

fn pg(err: tokio_postgres::Error) -> Error {
    Error::Pg(PgError::from(err))
}

/// Run a capture session until the input ends (or, with `SHUTDOWN_AFTER_POLLING=yes`,
/// until backfills are done and the stream has caught up).
pub async fn run<R, W>(open: Open, reader: RequestReader<R>, emitter: &mut Emitter<W>) -> Result<(), Error>
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let exit_when_idle = std::env::var("SHUTDOWN_AFTER_POLLING").is_ok_and(|v| v == "yes" || v == "true");
    let config = Config::parse(&open.capture.config)?;
    config.check_supported(crate::config::Purpose::Capture)?;
    let mut resources = Vec::with_capacity(open.capture.bindings.len());
    for (index, binding) in open.capture.bindings.iter().enumerate() {
        resources.push(ResourceConfig::parse(index, &binding.resource_config)?);
    }
    let state = CaptureState::parse(&open.state).map_err(|err| {
        Error::user(
            err.to_string(),
            "the state was not written by this connector or Estuary's source-postgres; reset the capture's state",
        )
    })?;

    crate::log::status("Connecting to database");
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    configure_session(&client, &config).await?;

    crate::log::status("Verifying capture requirements");
    let wanted: BTreeSet<(String, String)> =
        resources.iter().map(|r| (r.namespace.clone(), r.stream.clone())).collect();
    if !config.skips_prerequisites() {
        let keys = crate::validate::collection_key_columns(
            resources.iter().zip(&open.capture.bindings).map(|(r, b)| (r, b.collection.key.as_slice())),
        );
        let mut problems = crate::validate::check_server(&client, &config).await?;
        if !config.skips_table_prerequisites() {
            problems.extend(crate::validate::check_tables(&client, &config, &wanted, &keys).await?);
            problems.extend(crate::validate::check_publication_filters(&client, &config, &wanted).await?);
        }
        if !problems.is_empty() {
            return Err(crate::validate::report(&problems));
        }
    }
    crate::validate::ensure_objects_for(&client, &config, &wanted).await?;

    let tables = crate::discovery::discover_tables(&client, &config, Some(&wanted)).await?;
    let mut tables_by_name: BTreeMap<(String, String), DiscoveredTable> =
        tables.into_iter().map(|t| ((t.schema.clone(), t.name.clone()), t)).collect();
    let type_oids: Vec<u32> = tables_by_name.values().flat_map(|t| t.columns.iter().map(|c| c.type_oid)).collect();
    let registry = TypeRegistry::load(&client, &type_oids).await.map_err(pg)?;

    // Reconcile the persisted state with the current bindings.
    let mut bindings = Vec::with_capacity(resources.len());
    let mut patch_bindings = Map::new();
    let mut any_existing = false;
    for (resource, spec) in resources.into_iter().zip(&open.capture.bindings) {
        let name = (resource.namespace.clone(), resource.stream.clone());
        let table = tables_by_name.remove(&name).ok_or_else(|| {
            Error::user(
                format!("stream \"{}.{}\" is a configured binding of this capture, but doesn't exist or isn't visible with current permissions", name.0, name.1),
                "create the table or grant the capture user access to it, or remove the binding",
            )
        })?;
        let state_key =
            if spec.state_key.is_empty() { format!("{}%2F{}", name.0, name.1) } else { spec.state_key.clone() };
        let existing = state.bindings.get(&state_key).filter(|s| s.mode != TableMode::Ignore).cloned();
        any_existing |= existing.is_some();
        let binding_state = existing.unwrap_or_else(|| {
            patch_bindings.insert(state_key.clone(), Value::Null);
            BindingState::pending()
        });
        let keyed_by_location = spec.collection.key.iter().map(String::as_str).eq(FALLBACK_KEY);
        let key_columns = choose_key_columns(&resource, &spec.collection.key, &table, keyed_by_location);
        let document_key = if keyed_by_location {
            Vec::new()
        } else {
            spec.collection
                .key
                .iter()
                .map(|pointer| column_of_pointer(pointer).filter(|c| table.column(c).is_some()))
                .collect::<Option<Vec<String>>>()
                .unwrap_or_default()
        };
        bindings.push(Binding {
            state_key,
            resource,
            table,
            state: binding_state,
            key_columns,
            keyed_by_location,
            document_key,
            key_types: None,
            key_signature: None,
            chunk_undo: None,
            keyless_pages: None,
            key_orders: None,
            scanned_key: None,
            chunk_limit: None,
            estimated_rows: None,
        });
    }
    for key in state.bindings.keys() {
        if !bindings.iter().any(|b| b.state_key == *key) {
            patch_bindings.insert(key.clone(), Value::Null);
        }
    }
    // A cursor in the state shows that this capture streamed from its slot before, even when
    // every binding is new (all re-backfilled): see `start_without_cursor`.
    let streamed_before = state.cursor.as_deref().is_some_and(|c| !c.is_empty());
    // With no binding carrying state, nothing in the stream is of value: start afresh.
    let mut cursor = if any_existing { state.cursor.clone() } else { None };
    if cursor.as_deref() == Some("") {
        cursor = None;
    }

    check_backfill_keys(&bindings, &config)?;

    emitter.opened().await.map_err(Error::Output)?;

    // Replication: slot and start position.
    let mut replication = ReplicationClient::connect(&config.connect_params()).await?;
    let server_version = replication.server_version_num();
    let slot = config.slot_name().to_string();
    let owner = open.capture.name.as_str();
    let start = match &cursor {
        None => slot::start_without_cursor(&mut replication, &client, &config, owner, streamed_before).await?,
        Some(text) => {
            let lsn: Lsn = text.parse().map_err(|err: crate::lsn::ParseLsnError| {
                Error::user(format!("the capture state's cursor is not an LSN: {err}"), "reset the capture's state")
            })?;
            with_deadline(
                STARTUP_ANSWER_LIMIT,
                "reading the server's WAL position",
                slot::check_cursor_within_wal(&client, lsn),
            )
            .await??;
            with_deadline(
                STARTUP_ANSWER_LIMIT,
                "reading the replication slot",
                slot::check_slot_for_resume(&client, &config, lsn),
            )
            .await??;
            lsn
        }
    };
    // What the server has written so far: the slot is never confirmed beyond what the server
    // has sent (see `Session::send_status`). Every start position above is at most this.
    let server_flushed =
        with_deadline(STARTUP_ANSWER_LIMIT, "reading the server's WAL position", slot::server_wal_end(&client))
            .await??
            .max(start);
    let protocol_version = if server_version >= 140_000 { 2 } else { 1 };
    let mut options: Vec<(&str, String)> = vec![
        ("proto_version", protocol_version.to_string()),
        ("publication_names", quote_identifier(config.publication_name())),
    ];
    if protocol_version >= 2 {
        options.push(("streaming", "on".to_string()));
    }
    let mut stream = with_deadline(
        STARTUP_ANSWER_LIMIT,
        "starting replication",
        replication.start_replication(&slot, start, &options),
    )
    .await?
    .map_err(|err| {
        let text = err.to_string();
        if text.contains("is active for PID") {
            Error::user(
                format!("another capture is already running against this database: {text}"),
                format!(
                    "stop the other capture, or give this one its own slot with advanced.slotName (currently {slot:?})"
                ),
            )
        } else {
            Error::Pg(err)
        }
    })?;

    let source_tag = Some(config.raw.advanced.source_tag.clone()).filter(|t| !t.is_empty());
    let publication_config = config.clone();
    let status_interval =
        with_deadline(STARTUP_ANSWER_LIMIT, "reading wal_sender_timeout", status_interval(&client)).await??;
    let backfill_client = crate::pg::connect_sql(&config.connect_params()).await?;
    with_deadline(
        STARTUP_ANSWER_LIMIT,
        "configuring the backfill session",
        configure_session(&backfill_client, &config),
    )
    .await??;
    let mut session = Session {
        config,
        emitter,
        client,
        backfill_client: std::sync::Arc::new(backfill_client),
        registry,
        by_table: bindings
            .iter()
            .enumerate()
            .map(|(i, b)| ((b.table.schema.clone(), b.table.name.clone()), i))
            .collect(),
        bindings,
        relations: Relations::default(),
        protocol_version,
        cursor: start,
        unacknowledged: VecDeque::new(),
        acknowledged: start,
        transactions: TransactionAssembler::default(),
        spill: Spill::default(),
        changed_bindings: BTreeSet::new(),
        documents_since_checkpoint: 0,
        transactions_since_checkpoint: 0,
        checkpoint_due: false,
        hold_checkpoints: false,
        pending_watermark: None,
        watermark_seen: false,
        fence_reached: false,
        last_status: Instant::now(),
        reply_awaited_since: None,
        speculative: None,
        delivered: DeliveredXids::default(),
        delivered_check_at: DELIVERED_XIDS_CHECK_AT,
        forgotten_deliveries: 0,
        publication_checked: Instant::now(),
        server_version: i32::try_from(server_version).unwrap_or(i32::MAX),
        server_wal_end: start,
        server_flushed,
        last_message_start: start,
        owner: owner.to_string(),
        status_interval,
        document: Vec::with_capacity(4096),
        row: EncodedRow::default(),
        old_row: EncodedRow::default(),
        source_tag,
        skipped_changes: BTreeMap::new(),
        toast_warnings: BTreeSet::new(),
        backfill_started: None,
        rows_this_session: 0,
        last_progress_report: None,
    };
    session.check_resume_key_types().await?;
    session.activate_pending();
    // The first checkpoint records the reconciled bindings (removed ones as null) and the
    // start position.
    session.checkpoint_with(patch_bindings, &mut stream).await?;

    let (input_tx, input_rx) = mpsc::unbounded_channel();
    let reader_task = tokio::spawn(read_input(reader, input_tx));
    let result = session.run(stream, input_rx, exit_when_idle).await;
    reader_task.abort();
    result.map_err(|err| publication_stream_error(err, &publication_config))
}

/// pgoutput ends the stream with `publication "p" does not exist` when the publication was
/// dropped (it checks when it next decodes a change): say so, and how to recover, instead of
/// passing on a bare server error.
fn publication_stream_error(err: Error, config: &Config) -> Error {
    let Error::Pg(PgError::Server { code, message, .. }) = &err else { return err };
    let expected = format!("publication {} does not exist", quote_identifier(config.publication_name()));
    if code != "42704" || !message.starts_with(&expected) {
        return err;
    }
    let gone = crate::validate::publication::PublicationShape::default();
    match crate::validate::publication::running_problem(config, &gone) {
        Some((message, hint)) => Error::user(message, hint),
        None => err,
    }
}

/// Reads acknowledgements from stdin for the whole session; anything else is an error.
async fn read_input<R: AsyncBufRead + Unpin>(mut reader: RequestReader<R>, tx: mpsc::UnboundedSender<Input>) {
    loop {
        let input = match reader.next().await {
            // The count as sent: an explicit 0 acknowledges nothing (the protocol reads an
            // absent count as 1).
            Ok(Some(Request::Acknowledge(ack))) => Input::Acknowledge(ack.checkpoints),
            Ok(Some(other)) => Input::Failed(Error::user(
                format!("unexpected {} request during a capture session", request_name(&other)),
                "only acknowledge requests may follow open",
            )),
            Ok(None) => Input::Eof,
            Err(err) => Input::Failed(err.into()),
        };
        let done = !matches!(input, Input::Acknowledge(_));
        if tx.send(input).is_err() || done {
            return;
        }
    }
}

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Spec => "spec",
        Request::Discover(_) => "discover",
        Request::Validate(_) => "validate",
        Request::Apply(_) => "apply",
        Request::Open(_) => "open",
        Request::Acknowledge(_) => "acknowledge",
    }
}

/// Session settings of the SQL connection used for backfills and watermarks.
async fn configure_session(client: &Client, config: &Config) -> Result<(), Error> {
    let timeout_ms = config.statement_timeout.map_or(0, |d| d.as_millis());
    client
        .batch_execute(&format!(
            "SET statement_timeout = {timeout_ms}; SET max_parallel_workers_per_gather = 0; SET lock_timeout = 60000"
        ))
        .await
        .map_err(pg)
}

/// The standby status interval for this server: [`STATUS_INTERVAL`], or a third of
/// `wal_sender_timeout` when that is shorter (it is 0 when the timeout is disabled).
async fn status_interval(client: &Client) -> Result<Duration, Error> {
    let timeout_ms: i64 = client
        .query_one("SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_sender_timeout'", &[])
        .await
        .map_err(pg)?
        .get(0);
    let third = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0) / 3);
    Ok(if third.is_zero() { STATUS_INTERVAL } else { third.min(STATUS_INTERVAL) }.max(Duration::from_millis(100)))
}

/// How long a statement of the session's start may go unanswered before the server is taken
/// for unreachable (the capture fails and is restarted rather than hang on a cut network path
/// whose sockets stay open). Slot creation, which may rightly wait, is watched separately.
const STARTUP_ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// How long the query listing what a slot creation waits for may go unanswered.
const SLOT_WAIT_ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// Create the capture's slot, reporting while the server makes it wait for transactions
/// that were running when it was requested (see [`slot_wait`]): first after
/// [`SLOT_WAIT_FIRST_REPORT`], then every [`SLOT_WAIT_REPORT_EVERY`].
pub(super) async fn create_slot(
    replication: &mut ReplicationClient,
    client: &Client,
    slot: &str,
) -> Result<Lsn, Error> {
    let requested = tokio::time::Instant::now();
    let create = replication.create_logical_slot(slot);
    tokio::pin!(create);
    let mut report_at = requested + SLOT_WAIT_FIRST_REPORT;
    loop {
        match tokio::time::timeout_at(report_at, create.as_mut()).await {
            Ok(created) => return Ok(created?),
            Err(_) => {
                let waited = i64::try_from(requested.elapsed().as_secs()).unwrap_or(i64::MAX);
                // A server that does not answer this query within the silence limit is not
                // busy making the slot: the network path or the server is gone (the slot
                // request on the other connection would wait forever), so the capture fails
                // and is restarted instead of hanging.
                let blockers = match with_deadline(
                    SLOT_WAIT_ANSWER_LIMIT,
                    "listing the transactions a slot creation waits for",
                    slot_wait::blockers(client, waited),
                )
                .await?
                {
                    Ok(blockers) => Some(blockers),
                    Err(err) => {
                        tracing::debug!(error = %PgError::from(err), "listing the transactions a slot creation waits for failed");
                        None
                    }
                };
                let (message, hint) = slot_wait::describe(slot, waited, blockers.as_ref());
                tracing::warn!(slot = %slot, waited_s = waited, "{message}\nHINT: {hint}");
                if report_at == requested + SLOT_WAIT_FIRST_REPORT {
                    crate::log::status(
                        "Waiting for running transactions to end before the replication slot can be created",
                    );
                }
                report_at += SLOT_WAIT_REPORT_EVERY;
            }
        }
    }
}

/// Key columns for backfill order and key-change detection: the resource's legacy
/// override, else the collection key when it names top-level columns, else the table's key.
pub(crate) fn choose_key_columns(
    resource: &ResourceConfig,
    collection_key: &[String],
    table: &DiscoveredTable,
    keyed_by_location: bool,
) -> Vec<String> {
    if let Some(columns) = &resource.primary_key {
        return columns.clone();
    }
    if resource.mode == BackfillMode::WithoutPrimaryKey || keyed_by_location {
        return Vec::new();
    }
    let from_collection: Option<Vec<String>> =
        collection_key.iter().map(|pointer| column_of_pointer(pointer).filter(|c| table.column(c).is_some())).collect();
    match from_collection {
        Some(columns) if !columns.is_empty() => columns,
        _ => table.key.clone(),
    }
}

/// Why a keyed backfill of `table` cannot page by `key_columns`, if it cannot: a column
/// that may hold NULL, or one the table does not have. Chunks are read with
/// `WHERE (k1, k2) > (..) ORDER BY k1, k2`, and a row-value comparison is never true for a
/// row whose key has a NULL part: such rows would be skipped, and the backfill would end at
/// the first chunk that ends on one (every later row compares as NULL). Several rows can
/// also share a NULL key, even under a unique index, and keyset paging needs unique keys,
/// so NULL keys cannot be paged correctly at all: the key must be NOT NULL. The table's own
/// key never gets here (discovery keys tables only by NOT NULL columns); a `primary_key`
/// override or a collection key chosen by the user can.
pub(crate) fn unusable_backfill_key(table: &DiscoveredTable, key_columns: &[String]) -> Option<UnusableKey> {
    let name = format!("{}.{}", table.schema, table.name);
    for column in key_columns {
        match table.column(column) {
            None => {
                return Some(UnusableKey {
                    message: format!(
                        "backfill key column {column:?} of table {name:?} does not exist (the binding's primary_key or collection key names it)"
                    ),
                    nullable: None,
                })
            }
            Some(c) if c.nullable => {
                return Some(UnusableKey {
                    message: format!(
                        "backfill key column {column:?} of table {name:?} is nullable, and a backfill in key order cannot page through NULL keys (rows would be missed)"
                    ),
                    nullable: Some(column.clone()),
                })
            }
            Some(_) => {}
        }
    }
    None
}

/// A key column a keyed backfill cannot page by (see [`unusable_backfill_key`]).
pub(crate) struct UnusableKey {
    pub message: String,
    /// The column, when it exists but may hold NULL (`SET NOT NULL` fixes that).
    pub nullable: Option<String>,
}

/// How to fix [`unusable_backfill_key`].
pub(crate) const UNUSABLE_KEY_HINT: &str = "declare the column NOT NULL (ALTER TABLE ... ALTER COLUMN ... SET NOT NULL), or key the binding by NOT NULL columns (its primary_key override or its collection key), or set the binding's mode to \"Without Primary Key\"";

/// Refuse to start or continue a keyed backfill whose key columns may hold NULL (see
/// [`unusable_backfill_key`]). Bindings whose backfill is done or skipped are not checked:
/// streaming does not page by the key.
fn check_backfill_keys(bindings: &[Binding], config: &Config) -> Result<(), Error> {
    for binding in bindings {
        let table = &binding.table;
        let key_columns = match binding.state.mode {
            TableMode::Backfill | TableMode::UnfilteredBackfill => binding
                .state
                .key_columns
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| binding.key_columns.clone()),
            TableMode::Pending
                if binding.resource.mode != BackfillMode::OnlyChanges
                    && !config.skips_backfill(&table.schema, &table.name) =>
            {
                binding.key_columns.clone()
            }
            _ => continue,
        };
        if let Some(problem) = unusable_backfill_key(table, &key_columns) {
            return Err(Error::user(problem.message, UNUSABLE_KEY_HINT));
        }
    }
    Ok(())
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// Move Pending bindings into their backfill mode.
    fn activate_pending(&mut self) {
        for index in 0..self.bindings.len() {
            let binding = &mut self.bindings[index];
            let skip = self.config.skips_backfill(&binding.table.schema, &binding.table.name);
            if let Some(columns) = binding.state.key_columns.clone().filter(|c| !c.is_empty()) {
                if binding.state.mode != TableMode::KeylessBackfill {
                    binding.key_columns = columns;
                }
            }
            binding.key_orders = binding
                .key_columns
                .iter()
                .map(|k| binding.table.column(k).and_then(|c| order::key_order(&c.pg_type)))
                .collect::<Option<Vec<_>>>()
                .filter(|orders| !orders.is_empty());
            let has_filter = binding.resource.advanced.additional_backfill_filter.is_some();
            // Automatic mode is precise only where it costs nothing: text keys would need
            // `ORDER BY .. COLLATE "C"`, which cannot use an index in another collation.
            let precise_ok = binding.key_orders.is_some();
            let automatic_precise = precise_ok
                && !has_filter
                && binding.key_orders.as_ref().is_some_and(|o| !o.contains(&order::KeyOrder::Text));
            let table_name = format!("{}.{}", binding.table.schema, binding.table.name);
            if binding.state.mode == TableMode::Pending {
                let mode = match binding.resource.mode {
                    BackfillMode::OnlyChanges => TableMode::Active,
                    _ if skip => TableMode::Active,
                    _ if binding.key_columns.is_empty() => TableMode::KeylessBackfill,
                    BackfillMode::Precise if precise_ok => TableMode::Backfill,
                    BackfillMode::Precise => {
                        tracing::warn!(table = %table_name, "the table's key types cannot be compared exactly: backfilling in normal mode");
                        TableMode::UnfilteredBackfill
                    }
                    BackfillMode::Automatic if automatic_precise => TableMode::Backfill,
                    _ => TableMode::UnfilteredBackfill,
                };
                binding.state = BindingState {
                    mode,
                    key_columns: (!binding.key_columns.is_empty()).then(|| binding.key_columns.clone()),
                    scanned: None,
                    metadata: None,
                    backfilled: 0,
                    key_types: None,
                };
                tracing::info!(table = %table_name, mode = ?mode, observable = true, "backfill triggered");
                self.changed_bindings.insert(index);
            } else if skip && binding.state.mode.is_backfilling() {
                binding.state.mode = TableMode::Active;
                binding.state.scanned = None;
                self.changed_bindings.insert(index);
            } else if binding.state.mode == TableMode::Backfill {
                // A precise backfill (perhaps started by the Go connector) continues precisely
                // when its resume key can be compared here, and normally otherwise.
                let resumable = match (&binding.state.scanned, &binding.key_orders) {
                    (None, Some(_)) => true,
                    (Some(scanned), Some(orders)) => {
                        let key = keys::decode_base64(scanned).ok().and_then(|e| order::key_from_elements(orders, &e));
                        binding.scanned_key = key.clone();
                        key.is_some()
                    }
                    _ => false,
                };
                if !resumable {
                    binding.state.mode = TableMode::UnfilteredBackfill;
                    self.changed_bindings.insert(index);
                }
            }
        }
    }

    /// Read the chunks that will share the next fence: the chunk of `first`, then, while
    /// the round has read fewer rows than one full chunk, one chunk of each other table at
    /// the same priority, in binding order. Many small tables then cost one watermark and
    /// one fence per chunk's worth of rows instead of one each.
    ///
    /// Sharing a fence keeps the algorithm's guarantee: every chunk is read after the
    /// previous fence, and the stream up to the next fence carries every change committed
    /// after each chunk's snapshot, so each table is filtered against its own resume key
    /// exactly as if its chunk had had a fence of its own. The bounds keep the stream's
    /// backlog (and the held checkpoint) no larger than one chunk would.
    async fn backfill_round(
        &mut self,
        first: usize,
        prefetched: Option<PrefetchedChunk>,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let rows_before = self.rows_this_session;
        let priority = self.bindings[first].resource.priority;
        let full_chunk = u64::try_from(self.config.chunk_size).unwrap_or(1);
        self.prepare_backfills().await?;
        let mut read = BTreeSet::new();
        let mut index = first;
        let mut prefetched = prefetched;
        let next_in_round = |bindings: &[Binding], read: &BTreeSet<usize>, current: usize| {
            bindings
                .iter()
                .enumerate()
                .find(|(i, b)| {
                    *i != current
                        && b.state.mode.is_backfilling()
                        && b.resource.priority == priority
                        && !read.contains(i)
                })
                .map(|(i, _)| i)
        };
        loop {
            // This chunk's query goes out first: the backfill connection answers pipelined
            // queries in order, so a query queued ahead of it whose rows nobody reads yet
            // would block it for good.
            let current = match prefetched.take() {
                Some(p) if p.index == index => Some(p),
                other => {
                    if let Some(stale) = other {
                        stale.query.abort();
                    }
                    self.start_chunk_query(index).await?
                }
            };
            // Then the query of the table likely to come next, behind it (`backfill_chunk`
            // sends it once this chunk's query is under way), so small tables do not each
            // wait for a round trip. Its snapshot still follows the previous fence; if the
            // round ends instead, it is dropped, never carried past the fence.
            let next = next_in_round(&self.bindings, &read, index).filter(|_| read.len() + 1 < MAX_TABLES_PER_FENCE);
            self.bindings[index].chunk_undo = None;
            if let Err(err) = self.backfill_chunk(index, current, next, stream).await {
                // A key column retyped under the backfill fails the chunk query when no
                // operator compares its new type with the resume key's old one: that restarts
                // the table's backfill (`check_key_types`, below), it does not fail the capture.
                if !self.key_types_changed(index).await? {
                    return Err(err);
                }
                if let Some(unused) = self.speculative.take() {
                    unused.query.abort();
                    let _ = unused.query.await;
                }
            }
            let speculative = self.speculative.take();
            read.insert(index);
            let next = next_in_round(&self.bindings, &read, index);
            let round_over = self.rows_this_session - rows_before >= full_chunk
                || read.len() >= MAX_TABLES_PER_FENCE
                || started.elapsed() >= MAX_ROUND_TIME
                || next.is_none();
            match (round_over, next) {
                (false, Some(i)) => {
                    prefetched = speculative;
                    index = i;
                }
                _ => {
                    if let Some(unused) = speculative {
                        unused.query.abort();
                    }
                    break;
                }
            }
        }
        // Before the round's resume keys are checkpointed: were they read in the key order
        // the chunks were planned with?
        self.check_key_types(&read).await?;
        if read.len() > 1 {
            tracing::debug!(
                tables = read.len(),
                rows = self.rows_this_session - rows_before,
                "backfill chunks sharing one fence"
            );
        }
        Ok(())
    }

    /// The next binding to backfill: highest priority first, then binding order.
    fn next_backfill(&self) -> Option<usize> {
        self.bindings
            .iter()
            .enumerate()
            .filter(|(_, b)| b.state.mode.is_backfilling())
            .max_by(|(ia, a), (ib, b)| a.resource.priority.cmp(&b.resource.priority).then(ib.cmp(ia)))
            .map(|(i, _)| i)
    }

    async fn run(
        &mut self,
        mut stream: ReplicationStream,
        mut input: mpsc::UnboundedReceiver<Input>,
        exit_when_idle: bool,
    ) -> Result<(), Error> {
        crate::log::status("Capture started");
        self.send_status(&mut stream, false).await?;
        // Catch up with what happened while we were away, up to a fresh watermark.
        crate::log::status("Catching up on CDC history");
        if !self.stream_to_new_fence(&mut stream, &mut input, false).await? {
            return Ok(());
        }
        self.checkpoint_if_due(true, &mut stream).await?;
        let mut prefetched: Option<PrefetchedChunk> = None;
        loop {
            if let Some(index) = self.next_backfill() {
                // The size estimates first, so that even the first report has them.
                self.prepare_backfills().await?;
                self.report_backfill_status(false);
                self.backfill_round(index, prefetched.take(), &mut stream).await?;
                self.write_watermark().await?;
                // The next chunk's query runs while the stream catches up to this fence.
                prefetched = self.prefetch_next_chunk().await?;
                // The chunk and every change up to its fence share one checkpoint, so
                // that no committed history goes backwards (see the module docs).
                if !self.stream_to_fence(&mut stream, &mut input, true).await? {
                    return Ok(());
                }
                self.checkpoint_if_due(true, &mut stream).await?;
                continue;
            }
            if let Some(unused) = prefetched.take() {
                unused.query.abort();
            }
            self.delivered = DeliveredXids::default();
            if self.backfill_started.is_some() && self.last_progress_report.is_some() {
                self.report_backfill_status(true);
                self.backfill_started = None;
            }
            if exit_when_idle {
                if !self.stream_to_new_fence(&mut stream, &mut input, false).await? {
                    return Ok(());
                }
                self.checkpoint_if_due(true, &mut stream).await?;
                self.log_skipped();
                return Ok(());
            }
            crate::log::status("Streaming CDC Events");
            return self.stream_forever(&mut stream, &mut input).await;
        }
    }

    /// A status line for the UI (and the local runner's progress bar), at most every few
    /// seconds: tables done, rows read, an estimate of the rows to read, and the rate.
    fn report_backfill_status(&mut self, force: bool) {
        let now = Instant::now();
        let started = *self.backfill_started.get_or_insert(now);
        if !force && self.last_progress_report.is_some_and(|t| now.duration_since(t) < Duration::from_secs(5)) {
            return;
        }
        self.last_progress_report = Some(now);
        let total = self.bindings.len();
        let backfilling: Vec<&Binding> = self.bindings.iter().filter(|b| b.state.mode.is_backfilling()).collect();
        let rows: u64 = self.bindings.iter().map(|b| b.state.backfilled).sum();
        let estimate: u64 = backfilling
            .iter()
            .map(|b| b.estimated_rows.unwrap_or(0).max(b.state.backfilled))
            .sum::<u64>()
            + self.bindings.iter().filter(|b| !b.state.mode.is_backfilling()).map(|b| b.state.backfilled).sum::<u64>();
        let seconds = now.duration_since(started).as_secs_f64();
        let rate = if seconds > 0.0 { (self.rows_this_session as f64 / seconds).round() as u64 } else { 0 };
        tracing::info!(
            eventType = "connectorStatus",
            tables_backfilling = backfilling.len(),
            tables_total = total,
            rows_backfilled = rows,
            rows_estimated = estimate,
            rows_per_second = rate,
            "Backfilling {} out of {} tables",
            backfilling.len(),
            total
        );
    }

    fn log_skipped(&self) {
        if !self.skipped_changes.is_empty() {
            let tally: BTreeMap<&String, &u64> = self.skipped_changes.iter().collect();
            tracing::debug!(tables = ?tally, "changes of tables without a binding were skipped");
        }
    }

    /// Handle one input event. Returns false when the session should end cleanly.
    async fn on_input(&mut self, event: Option<Input>, stream: &mut ReplicationStream) -> Result<bool, Error> {
        match event {
            Some(Input::Acknowledge(count)) => {
                for _ in 0..count {
                    let Some(lsn) = self.unacknowledged.pop_front() else {
                        return Err(Error::Internal(format!(
                            "the runtime acknowledged {count} checkpoints, more than were written"
                        )));
                    };
                    self.acknowledged = self.acknowledged.max(lsn);
                }
                // Report promptly so the server can release WAL.
                if self.last_status.elapsed() >= Duration::from_secs(1) {
                    self.send_status(stream, false).await?;
                }
                Ok(true)
            }
            Some(Input::Failed(err)) => Err(err),
            Some(Input::Eof) | None => {
                tracing::info!("input ended: stopping the capture");
                Ok(false)
            }
        }
    }

    /// The position the slot may be confirmed to: acknowledged, and sent by the server.
    fn confirmable(&self) -> Lsn {
        self.acknowledged.min(self.server_flushed)
    }

    async fn send_status(&mut self, stream: &mut ReplicationStream, reply: bool) -> Result<(), Error> {
        let flushed = self.confirmable();
        stream.send_standby_status(flushed, flushed, flushed, reply).await?;
        self.last_status = Instant::now();
        if reply && self.reply_awaited_since.is_none() {
            self.reply_awaited_since = Some(self.last_status);
        }
        Ok(())
    }

    /// A status tick of the streaming loop: ask the server for a reply, unless an earlier
    /// request went unanswered for too long. The walsender answers a reply request at once,
    /// whatever its `wal_sender_timeout`, so silence means the connection is gone even if
    /// the socket still looks open (a cut network path, a frozen host): fail, so that the
    /// runtime restarts the capture from its last checkpoint, rather than hang.
    async fn on_status_tick(&mut self, stream: &mut ReplicationStream) -> Result<(), Error> {
        let dead_after = self.silence_limit();
        if let Some(since) = self.reply_awaited_since {
            if since.elapsed() >= dead_after {
                // Frames may be queued behind a long stdout write: drain one before deciding.
                match tokio::time::timeout(Duration::from_secs(1), stream.recv()).await {
                    Ok(frame) => return self.on_frame(frame?, stream).await,
                    Err(_) => {
                        return Err(stalled_sql_error("a status update on the replication connection", since.elapsed()))
                    }
                }
            }
        }
        // Every status interval: a publication change loses changes from the moment it
        // commits, so the sooner the capture stops, the less there is to re-backfill. The
        // catalog queries take a millisecond.
        if self.publication_checked.elapsed() >= self.status_interval / 2 {
            self.publication_checked = Instant::now();
            let check = self.check_publication();
            // A stalled connection must not stall the dead-connection check itself.
            match tokio::time::timeout(dead_after, check).await {
                Ok(result) => result?,
                Err(_) => return Err(stalled_sql_error("checking the publication", dead_after)),
            }
        }
        self.send_status(stream, true).await
    }

    /// How long the server may stay silent before it counts as gone: an unanswered reply
    /// request on the replication connection (see `on_status_tick`), or a short statement (a
    /// watermark write, a catalog query) that takes milliseconds when all is well. Six
    /// status intervals: at least the server's own `wal_sender_timeout` (the interval is at
    /// most a third of it), so a walsender busy reading WAL is not mistaken for a dead one.
    fn silence_limit(&self) -> Duration {
        (self.status_interval * 6).max(MIN_UNANSWERED)
    }

    async fn sql_deadline<T>(&self, what: &str, work: impl std::future::Future<Output = T>) -> Result<T, Error> {
        with_deadline(self.silence_limit(), what, work).await
    }

    /// While a chunk query is silent (no row yet, or none for a while): it may be working,
    /// or its connection may be gone with the socket still open. A `SELECT 1` on the other
    /// connection tells the two apart: a server that answers it is alive and busy; one that
    /// does not within the deadline is not, and the capture fails rather than hang.
    async fn probe_if_quiet(&self, quiet_since: &mut Instant) -> Result<(), Error> {
        if quiet_since.elapsed() < self.silence_limit() {
            return Ok(());
        }
        self.sql_deadline("a liveness probe while a backfill query was silent", self.client.simple_query("SELECT 1"))
            .await?
            .map_err(pg)?;
        *quiet_since = Instant::now();
        Ok(())
    }

    /// Forget the delivered transactions that a fresh snapshot sees (every later snapshot
    /// sees them too), so that a long catch-up does not grow the set without bound.
    async fn forget_visible_deliveries(&mut self) -> Result<(), Error> {
        let snapshot = self.current_snapshot().await?;
        let before = self.delivered.len();
        self.delivered.forget_seen(&snapshot);
        self.forgotten_deliveries += 1;
        tracing::debug!(
            forgotten = before - self.delivered.len(),
            left = self.delivered.len(),
            "delivered transactions seen by a fresh snapshot were forgotten"
        );
        self.delivered_check_at = DELIVERED_XIDS_CHECK_AT.max(2 * self.delivered.len());
        Ok(())
    }

    /// A snapshot taken now, on the main connection.
    async fn current_snapshot(&self) -> Result<Snapshot, Error> {
        let rows = self
            .sql_deadline(
                "reading the current snapshot",
                self.client.simple_query("SELECT pg_current_snapshot()::text"),
            )
            .await?
            .map_err(pg)?;
        snapshot_of(&rows)
    }

    /// Check the publication when a Relation message of a bound table suggests it changed,
    /// before any change of the table is emitted: the message is sent again (the server
    /// dropped what it knew of the table: a schema change, or any change of the publication,
    /// which is announced no other way), or it carries fewer columns than the table has (a
    /// column list; generated columns, which are never published, also count, at the price
    /// of one extra check).
    async fn check_publication_on_relation(
        &self,
        oid: u32,
        binding: Option<usize>,
        columns: usize,
    ) -> Result<(), Error> {
        let Some(binding) = binding else { return Ok(()) };
        if !self.relations.contains_key(&oid) && columns >= self.bindings[binding].table.columns.len() {
            return Ok(());
        }
        with_deadline(self.silence_limit(), "checking the publication", self.check_publication()).await?
    }

    /// Whether a TRUNCATE of the table of `binding` fails the capture: with
    /// `advanced.fail_on_truncate`, unless the binding's backfill has not read anything yet
    /// (after the re-backfill that the error asks for, the capture meets the same TRUNCATE
    /// again while catching up, and the backfill that follows reads the table as it is now).
    fn truncate_is_fatal(&self, binding: usize) -> bool {
        let state = &self.bindings[binding].state;
        let backfill_not_started = state.mode.is_backfilling() && state.scanned.is_none() && state.backfilled == 0;
        self.config.raw.advanced.fail_on_truncate && !backfill_not_started
    }

    /// Fail if the publication no longer carries everything the capture needs: dropped,
    /// narrowed to fewer actions, or (PostgreSQL 15+) filtering a bound table's columns or
    /// rows (see [`crate::validate::publication`]). pgoutput applies such a change without a
    /// word in the stream.
    async fn check_publication_shape(&self) -> Result<(), Error> {
        use crate::validate::publication::{running_problem, PublicationShape};
        let tables: BTreeSet<(String, String)> = self
            .bindings
            .iter()
            .filter(|b| !matches!(b.state.mode, TableMode::Ignore | TableMode::Missing))
            .map(|b| (b.table.schema.clone(), b.table.name.clone()))
            .collect();
        let shape =
            PublicationShape::load(&self.client, &self.config, self.server_version, &tables).await.map_err(pg)?;
        match running_problem(&self.config, &shape) {
            Some((message, hint)) => Err(Error::user(message, hint)),
            None => Ok(()),
        }
    }

    /// Fail if a bound table has left the publication. pgoutput then simply stops sending
    /// its changes, with no message at all: without this check the capture would go on
    /// without them, silently. A table that no longer exists is left to the replication
    /// stream (a re-created table is captured again once it is published).
    async fn check_publication(&self) -> Result<(), Error> {
        self.check_publication_shape().await?;
        let (schemas, names): (Vec<&str>, Vec<&str>) = self
            .bindings
            .iter()
            .filter(|b| !matches!(b.state.mode, TableMode::Ignore | TableMode::Missing))
            .map(|b| (b.table.schema.as_str(), b.table.name.as_str()))
            .unzip();
        if names.is_empty() {
            return Ok(());
        }
        let published = crate::validate::server::published_sql(self.server_version, "c.oid", "$3");
        let sql = format!(
            "SELECT n.nspname, c.relname
             FROM unnest($1::text[], $2::text[]) AS b(schema, name)
             JOIN pg_catalog.pg_namespace n ON n.nspname = b.schema
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = b.name
             WHERE NOT {published}
             ORDER BY 1, 2"
        );
        let rows = self.client.query(&sql, &[&schemas, &names, &self.config.publication_name()]).await.map_err(pg)?;
        if rows.is_empty() {
            return Ok(());
        }
        let publication = quote_identifier(self.config.publication_name());
        let tables: Vec<String> =
            rows.iter().map(|r| format!("{}.{}", quote_identifier(r.get(0)), quote_identifier(r.get(1)))).collect();
        Err(Error::user(
            format!(
                "{} left publication {publication} while being captured: the server no longer sends {} changes",
                tables.join(", "),
                if tables.len() == 1 { "its" } else { "their" }
            ),
            format!(
                "ALTER PUBLICATION {publication} ADD TABLE {}; then increment the backfill counter of {} binding{}, since changes made in the meantime were not captured",
                tables.join(", "),
                if tables.len() == 1 { "its" } else { "their" },
                if tables.len() == 1 { "" } else { "s" }
            ),
        ))
    }

    /// Write a watermark and stream until its transaction commits. With `hold`, no
    /// checkpoint is written before the fence. False: the input ended.
    async fn stream_to_new_fence(
        &mut self,
        stream: &mut ReplicationStream,
        input: &mut mpsc::UnboundedReceiver<Input>,
        hold: bool,
    ) -> Result<bool, Error> {
        self.write_watermark().await?;
        self.stream_to_fence(stream, input, hold).await
    }

    /// Write a fresh watermark: its commit is the next fence.
    async fn write_watermark(&mut self) -> Result<(), Error> {
        let watermark = slot::new_watermark(&self.owner);
        let write = slot::upsert_watermark(&self.client, &self.config, &watermark);
        self.sql_deadline("writing a watermark", write).await??;
        if failpoint::fires(Failpoint::AfterWatermark) {
            failpoint::exit(Failpoint::AfterWatermark);
        }
        self.pending_watermark = Some(watermark);
        self.watermark_seen = false;
        self.fence_reached = false;
        Ok(())
    }

    /// Stream until the written watermark's transaction commits. With `hold`, no checkpoint
    /// is written before the fence. False: the input ended.
    async fn stream_to_fence(
        &mut self,
        stream: &mut ReplicationStream,
        input: &mut mpsc::UnboundedReceiver<Input>,
        hold: bool,
    ) -> Result<bool, Error> {
        self.hold_checkpoints = hold;
        let running = self.stream_until(stream, input, true).await;
        self.hold_checkpoints = false;
        self.pending_watermark = None;
        running
    }

    /// Stream until the input ends, checkpointing at transaction boundaries.
    async fn stream_forever(
        &mut self,
        stream: &mut ReplicationStream,
        input: &mut mpsc::UnboundedReceiver<Input>,
    ) -> Result<(), Error> {
        self.stream_until(stream, input, false).await.map(|_| ())
    }

    /// The streaming loop: relay replication messages, acknowledgements and status updates
    /// until the fence is reached (`to_fence`) or the input ends (returns false). Unless
    /// checkpoints are held, one is written per source transaction, coalescing transactions
    /// that are already waiting in the stream, within bounds.
    async fn stream_until(
        &mut self,
        stream: &mut ReplicationStream,
        input: &mut mpsc::UnboundedReceiver<Input>,
        to_fence: bool,
    ) -> Result<bool, Error> {
        let mut status_timer = tokio::time::interval(self.status_interval);
        status_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if to_fence && self.fence_reached {
                return Ok(true);
            }
            // Checkpoints fall between transactions only: with one open, keep reading
            // until its commit.
            if self.checkpoint_due && !self.hold_checkpoints && self.transactions.current().is_none() {
                let bounds_hit = self.transactions_since_checkpoint >= MAX_TRANSACTIONS_PER_CHECKPOINT
                    || self.documents_since_checkpoint >= MAX_DOCUMENTS_PER_CHECKPOINT;
                if bounds_hit {
                    self.checkpoint_if_due(false, stream).await?;
                } else {
                    // While draining a backlog (the server's WAL end is well ahead of what
                    // we are reading) the next frame is in flight: wait for it briefly rather
                    // than paying a checkpoint per small transaction. Caught up, checkpoint
                    // at once, which keeps latency low.
                    let lagging = self.server_wal_end.0.saturating_sub(self.last_message_start.0) > BACKLOG_BYTES;
                    let wait = if lagging { BACKLOG_WAIT } else { Duration::ZERO };
                    match tokio::time::timeout(wait, stream.recv()).await {
                        Ok(frame) => {
                            self.on_frame(frame?, stream).await?;
                            continue;
                        }
                        Err(_) => self.checkpoint_if_due(false, stream).await?,
                    }
                }
            }
            tokio::select! {
                biased;
                // 1. acknowledgements and the end of input
                event = input.recv() => {
                    if !self.on_input(event, stream).await? {
                        return Ok(false);
                    }
                }
                // 2. status updates, so the walsender never times us out; asking for a
                //    reply makes an idle server send its position, which becomes an idle
                //    checkpoint (see on_frame)
                _ = status_timer.tick() => self.on_status_tick(stream).await?,
                // 3. the next replication message
                frame = stream.recv() => self.on_frame(frame?, stream).await?,
            }
        }
    }

    /// Write a checkpoint if a transaction committed (or the cursor moved) since the last.
    async fn checkpoint_if_due(&mut self, force_bindings: bool, stream: &mut ReplicationStream) -> Result<(), Error> {
        let bindings_changed = force_bindings && !self.changed_bindings.is_empty();
        if !(self.checkpoint_due || bindings_changed || self.documents_since_checkpoint > 0) {
            return Ok(());
        }
        self.checkpoint_with(Map::new(), stream).await
    }

    /// Write a checkpoint: the cursor, changed bindings, and any extra binding patches.
    async fn checkpoint_with(
        &mut self,
        mut binding_patches: Map<String, Value>,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        if let Some(transaction) = self.transactions.current() {
            return Err(Error::Internal(format!("a checkpoint was requested inside transaction {}", transaction.xid)));
        }
        for index in std::mem::take(&mut self.changed_bindings) {
            let binding = &self.bindings[index];
            binding_patches.insert(binding.state_key.clone(), binding.state.to_patch());
        }
        let mut patch = json!({"cursor": self.cursor.to_string()});
        if !binding_patches.is_empty() {
            patch["bindingStateV1"] = Value::Object(binding_patches);
        }
        if self.documents_since_checkpoint > 0 && failpoint::fires(Failpoint::AfterDocuments) {
            let _ = self.emitter.flush().await;
            failpoint::exit(Failpoint::AfterDocuments);
        }
        let mut keepalive = Keepalive {
            stream,
            last_status: &mut self.last_status,
            interval: self.status_interval,
            flushed: self.acknowledged.min(self.server_flushed),
        };
        keepalive.during(self.emitter.checkpoint(&patch)).await?;
        if failpoint::fires(Failpoint::AfterCheckpoint) {
            failpoint::exit(Failpoint::AfterCheckpoint);
        }
        self.unacknowledged.push_back(self.cursor);
        self.checkpoint_due = false;
        self.documents_since_checkpoint = 0;
        self.transactions_since_checkpoint = 0;
        Ok(())
    }

    async fn emit(&mut self, binding: usize, stream: &mut ReplicationStream) -> Result<(), Error> {
        let index = u32::try_from(binding).map_err(|_| Error::Internal("binding index overflows u32".into()))?;
        let mut keepalive = Keepalive {
            stream,
            last_status: &mut self.last_status,
            interval: self.status_interval,
            flushed: self.acknowledged.min(self.server_flushed),
        };
        keepalive.during(self.emitter.captured(index, &self.document)).await?;
        self.documents_since_checkpoint += 1;
        Ok(())
    }
}

/// What the connector must keep doing while stdout is blocked: the runtime applies
/// backpressure by not reading, and meanwhile the walsender still expects a status update
/// within `wal_sender_timeout`, or it closes the connection.
struct Keepalive<'a> {
    stream: &'a mut ReplicationStream,
    last_status: &'a mut Instant,
    interval: Duration,
    flushed: Lsn,
}

impl Keepalive<'_> {
    /// Drive `work` (a query the stream waits for) to completion, sending status updates
    /// meanwhile.
    async fn around<T, F: std::future::Future<Output = Result<T, Error>>>(&mut self, work: F) -> Result<T, Error> {
        tokio::pin!(work);
        loop {
            let next_status = tokio::time::Instant::from_std(*self.last_status + self.interval);
            tokio::select! {
                result = &mut work => return result,
                _ = tokio::time::sleep_until(next_status) => {
                    self.stream.send_standby_status(self.flushed, self.flushed, self.flushed, false).await?;
                    *self.last_status = Instant::now();
                }
            }
        }
    }

    /// Drive `write` to completion, sending status updates while it is blocked.
    async fn during<F: std::future::Future<Output = std::io::Result<()>>>(&mut self, write: F) -> Result<(), Error> {
        use futures::FutureExt;
        tokio::pin!(write);
        // Almost every write lands in the buffer at once; only a blocked one needs a timer.
        if let Some(result) = (&mut write).now_or_never() {
            return result.map_err(Error::Output);
        }
        loop {
            let next_status = tokio::time::Instant::from_std(*self.last_status + self.interval);
            tokio::select! {
                result = &mut write => return result.map_err(Error::Output),
                _ = tokio::time::sleep_until(next_status) => {
                    self.stream.send_standby_status(self.flushed, self.flushed, self.flushed, false).await?;
                    *self.last_status = Instant::now();
                }
            }
        }
    }
}

/// Run `work`, failing with the stalled-server error if it takes longer than `limit`.
async fn with_deadline<T>(limit: Duration, what: &str, work: impl std::future::Future<Output = T>) -> Result<T, Error> {
    tokio::time::timeout(limit, work).await.map_err(|_| stalled_sql_error(what, limit))
}

/// The first column of the first row of a simple query's answer.
fn first_text(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    })
}

/// The snapshot a `SELECT pg_current_snapshot()::text` answered.
fn snapshot_of(messages: &[tokio_postgres::SimpleQueryMessage]) -> Result<Snapshot, Error> {
    Snapshot::parse(&first_text(messages).unwrap_or_default())
        .map_err(|err| Error::Internal(format!("the current snapshot: {err}")))
}

fn stalled_sql_error(what: &str, after: Duration) -> Error {
    Error::user(
        format!("the server stopped answering: {what} got no reply in {} s", after.as_secs()),
        "the network path or the server failed; the capture restarts from its last checkpoint. If this repeats, check the server's health and any proxy or firewall between the connector and the server",
    )
}

/// A TRUNCATE of a bound table with `advanced.fail_on_truncate`.
fn truncate_error(schema: &str, table: &str, at: Lsn) -> Error {
    Error::user(
        format!(
            "table {} was truncated (at {at}), and advanced.fail_on_truncate is set: the rows captured before it would stay in the collection",
            crate::validate::display_name(schema, table)
        ),
        "increment the binding's backfill counter to capture the table afresh (the capture then goes past the TRUNCATE; documents of rows it removed stay in the collection until its materializations are reset), or remove advanced.fail_on_truncate to only log a warning",
    )
}

fn value_error(table: &str, err: value::ValueError) -> Error {
    Error::user(
        format!("a value of table {table:?} could not be encoded: {err}"),
        "please report this with the column's type",
    )
}

fn lsn_i64(lsn: Lsn) -> i64 {
    i64::try_from(lsn.0).unwrap_or(i64::MAX)
}
