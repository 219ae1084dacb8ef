//! The capture session (`open`): backfill interleaved with watermark fences, pgoutput
//! streaming, checkpoints and acknowledgements.
//!
//! ```text
//!   open ─► prerequisites ─► reconcile state ─► opened + checkpoint ─► slot / start LSN
//!                                                                          │
//!        ┌──────────────────────────── main loop ◄─────────────────────────┘
//!        │  while a binding is backfilling:
//!        │     chunk query (rows → documents)      ─┐ one checkpoint:
//!        │     watermark write (read-only: WAL pos.) │ chunk rows, every change up to
//!        │     stream until the fence is passed    ─┘ the fence, the new resume key
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
//! stream is read up to that watermark's commit, all in one checkpoint. A read-only capture
//! (`advanced.read_only_capture`) writes nothing: its fence is the server's WAL position read
//! after the chunk's snapshot, passed by a commit or an idle keepalive at or beyond it (see
//! `fence`). The next chunk's query starts (on a second connection) right after the fence
//! is set, so the database reads it while the stream catches up to the fence. A precise
//! backfill drops changes to rows beyond its resume key (a later chunk reads their current
//! state); a normal one emits every change, and a change that precedes a chunk's snapshot is either already
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
//! The session keeps the IO handles and the main loop (this file). It drives `open` (setup
//! up to the first checkpoint), `changes` (replication messages to documents), `rounds` and
//! `chunks` (backfill chunks), `publication` (checks while running), `slot` (which slot, from
//! where), `sourced` (`sourcedSchema` responses and periodic rediscovery, written just before
//! the checkpoint that commits them) and `input` (acknowledgements), and these pure,
//! unit-tested parts:
//! `transactions` (Begin/Commit/Stream* messages into apply, spill, discard and replay
//! steps), `relations` (the relation cache: layouts, key positions, identity gaps),
//! `change_plan` (the precise-backfill filter and the documents of one change),
//! `checkpoints` (checkpoint policy, acknowledgement queue, how far the slot may be
//! confirmed), `fence` (the watermark or WAL-position fence), `status` (status updates, the
//! reply watchdog, keep-alive while stdout blocks), `chunk_plan` (chunk windows, sizes, outcomes) and
//! `reconcile` (saved state x bindings). Below them: [`backfill`] (chunk SQL), [`keys`] and
//! [`order`] (resume keys), [`retype`], [`document`], [`spill`], [`state`], [`visibility`].
//!
//! The replication connection is watched: a connection that leaves a reply request
//! unanswered for six status intervals is declared dead (the capture fails and is restarted
//! from its last checkpoint) instead of hanging on a socket whose network path was cut.

pub mod backfill;
mod change_plan;
mod changes;
mod checkpoints;
mod chunk_plan;
mod chunk_query;
mod chunk_row;
mod chunks;
pub mod document;
mod fence;
mod input;
pub mod keys;
mod open;
pub mod order;
mod parallel;
mod publication;
mod reader_trial;
mod reconcile;
mod relations;
pub mod retype;
mod rounds;
mod slot;
pub mod slot_wait;
mod sourced;
pub mod spill;
mod spill_budget;
pub mod state;
mod status;
mod transactions;
pub mod visibility;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::Client;

use crate::config::{Config, ResourceConfig};
use crate::discovery::catalog::TypeRegistry;
use crate::discovery::DiscoveredTable;
use crate::error::Error;
use crate::failpoint::{self, Failpoint};
use crate::lsn::Lsn;
use crate::pg::replication::ReplicationStream;
use crate::pg::PgError;
use crate::protocol::emitter::Emitter;
use crate::protocol::{Open, RequestReader};
use crate::value;
use checkpoints::{Checkpoints, Timing};
use chunk_query::ChunkRows;
use document::EncodedRow;
use fence::Fence;
use input::{read_input, Input};
use relations::Relations;
use spill::Spill;
use state::BindingState;
use status::StatusReporter;
use transactions::TransactionAssembler;
use visibility::{DeliveredXids, Snapshot};

pub(crate) use reconcile::{choose_key_columns, unusable_backfill_key, UNUSABLE_KEY_HINT};

/// How long a statement of the session's start may go unanswered before the server is taken
/// for unreachable (the capture fails and is restarted rather than hang on a cut network path
/// whose sockets stay open). Slot creation, which may rightly wait, is watched separately.
const STARTUP_ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// The least time a liveness probe of a silent backfill query is given to answer.
const MIN_PROBE_ANSWER: Duration = Duration::from_secs(5);

/// Delivered transactions to remember before asking the server which of them every new
/// snapshot sees (see [`visibility`]); this bounds the set during a long catch-up.
const DELIVERED_XIDS_CHECK_AT: usize = 4_096;

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
    /// Chunks read the emitted columns of fixed-width built-in types in binary (see
    /// [`backfill::ReadForm`]); false once a result column was not of its described type.
    binary_cells: bool,
    /// Whether its default readers read it faster than one connection (see `reader_trial`),
    /// and when its last backfill chunk (or round) ended in this session.
    reader_trial: reader_trial::ReaderTrial,
    last_chunk_end: Option<Instant>,
}

/// How to take back a keyed chunk: the snapshot it read with, and what it changed.
struct ChunkUndo {
    snapshot: Snapshot,
    state: BindingState,
    scanned_key: Option<Vec<order::KeyValue>>,
    /// Rows the chunk emitted: none (a rewritten table looks empty to an older snapshot)
    /// means taking it back is exact whatever the backfill's mode.
    rows: u64,
    /// The snapshots of the key ranges that read no row, when several connections read
    /// the chunk (see `parallel`): an empty range whose snapshot misses a rewrite of the
    /// table may have missed rows that the other ranges' rows do not vouch for.
    empty_ranges: Vec<Snapshot>,
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

/// Session state.
struct Session<'e, W: AsyncWrite + Unpin> {
    config: Config,
    emitter: &'e mut Emitter<W>,
    client: Client,
    /// A second connection for backfill chunk queries, so the next chunk can be read while
    /// the first connection writes a watermark.
    backfill_client: std::sync::Arc<Client>,
    /// More connections for a table read by several at once (see `parallel`), opened when
    /// such a table is backfilled and closed once none is.
    extra_readers: Vec<std::sync::Arc<Client>>,
    /// How many connections the server allowed to read one table, once it refused one of
    /// the readers chosen by default (too many connections): later rounds read with that many.
    readers_refused: Option<usize>,
    registry: TypeRegistry,
    bindings: Vec<Binding>,
    by_table: BTreeMap<(String, String), usize>,
    relations: Relations,
    protocol_version: u32,
    /// The cursor, when a checkpoint is due, and the acknowledgement queue.
    checkpoints: Checkpoints,
    transactions: TransactionAssembler,
    spill: Spill,
    /// The fence (a watermark, or a WAL position) we are streaming towards, and whether it
    /// was reached.
    fence: Fence,
    /// Standby status updates and the dead-connection watchdog.
    status: StatusReporter,
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
    /// The `sourcedSchema` responses sent, and when the next rediscovery is due.
    sourced: sourced::SourcedSchemas,
    /// The capture's task name, written into every watermark: what later proves that the
    /// slot of this name is this capture's (see `start_without_cursor`).
    owner: String,
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
    let (mut session, stream) = open::open_session(&open, emitter).await?;
    let (input_tx, input_rx) = mpsc::unbounded_channel();
    let reader_task = tokio::spawn(read_input(reader, input_tx));
    let result = session.run(stream, input_rx, exit_when_idle).await;
    reader_task.abort();
    result.map_err(|err| open::publication_stream_error(err, &session.config))
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
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
                self.set_fence(&mut stream).await?;
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
            // No table is backfilled any more: its extra readers are closed.
            self.extra_readers.clear();
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
                self.checkpoints.acknowledge(count).map_err(|err| Error::Internal(err.to_string()))?;
                // Report promptly so the server can release WAL.
                if self.status.after_acknowledgement(Instant::now()) == status::Action::Send {
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

    /// Send a status update with the position the slot may be confirmed to.
    async fn send_status(&mut self, stream: &mut ReplicationStream, reply: bool) -> Result<(), Error> {
        self.status.send(stream, self.checkpoints.confirmable(), reply).await
    }

    /// A status tick of the streaming loop: ask the server for a reply, unless an earlier
    /// request went unanswered for too long. The walsender answers a reply request at once,
    /// whatever its `wal_sender_timeout`, so silence means the connection is gone even if
    /// the socket still looks open (a cut network path, a frozen host): fail, so that the
    /// runtime restarts the capture from its last checkpoint, rather than hang.
    async fn on_status_tick(&mut self, stream: &mut ReplicationStream) -> Result<(), Error> {
        let dead_after = self.silence_limit();
        if let status::Action::DeclareDead { since } = self.status.on_tick(Instant::now()) {
            // Frames may be queued behind a long stdout write: drain one before deciding.
            match tokio::time::timeout(Duration::from_secs(1), stream.recv()).await {
                Ok(frame) => return self.on_frame(frame?, stream).await,
                Err(_) => {
                    return Err(stalled_sql_error("a status update on the replication connection", since.elapsed()))
                }
            }
        }
        // Every status interval: a publication change loses changes from the moment it
        // commits, so the sooner the capture stops, the less there is to re-backfill. The
        // catalog queries take a millisecond.
        if self.publication_checked.elapsed() >= self.status.interval() / 2 {
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

    /// How long the server may stay silent before it counts as gone (see
    /// [`StatusReporter::silence_limit`]).
    fn silence_limit(&self) -> Duration {
        self.status.silence_limit()
    }

    async fn sql_deadline<T>(&self, what: &str, work: impl std::future::Future<Output = T>) -> Result<T, Error> {
        with_deadline(self.silence_limit(), what, work).await
    }

    /// Set a fence and stream until it is passed. With `hold`, no checkpoint is written
    /// before the fence. False: the input ended.
    async fn stream_to_new_fence(
        &mut self,
        stream: &mut ReplicationStream,
        input: &mut mpsc::UnboundedReceiver<Input>,
        hold: bool,
    ) -> Result<bool, Error> {
        self.set_fence(stream).await?;
        self.stream_to_fence(stream, input, hold).await
    }

    /// Set the next fence (see [`fence`]): write a fresh watermark, whose commit is the
    /// fence, or with `advanced.read_only_capture`, which writes nothing, read the server's
    /// WAL position. Called after the chunks it fences were read, so that it follows their
    /// snapshots.
    async fn set_fence(&mut self, stream: &mut ReplicationStream) -> Result<(), Error> {
        if self.config.read_only() {
            let read = slot::fence_position(&self.client);
            let position = self.sql_deadline("reading the server's WAL position for a fence", read).await??;
            self.fence.at(position);
            if !self.fence.reached() {
                // The walsender tells its position in a keepalive when asked, and when it
                // waits for WAL while the position we report is behind what it sent: ask
                // now, so that a fence in a database where nothing commits is passed as soon
                // as the walsender has decoded up to it, not a status interval later. The
                // reported position stays the acknowledged one.
                self.send_status(stream, true).await?;
            }
        } else {
            let watermark = fence::new_watermark(&self.owner);
            let write = slot::upsert_watermark(&self.client, &self.config, &watermark);
            self.sql_deadline("writing a watermark", write).await??;
            self.fence.written(watermark);
        }
        if failpoint::fires(Failpoint::AfterWatermark) {
            failpoint::exit(Failpoint::AfterWatermark);
        }
        Ok(())
    }

    /// Stream until the fence is passed. With `hold`, no checkpoint is written before the
    /// fence. False: the input ended.
    async fn stream_to_fence(
        &mut self,
        stream: &mut ReplicationStream,
        input: &mut mpsc::UnboundedReceiver<Input>,
        hold: bool,
    ) -> Result<bool, Error> {
        self.checkpoints.hold(hold);
        let running = self.stream_until(stream, input, true).await;
        self.checkpoints.hold(false);
        self.fence.finish();
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
        let mut status_timer = tokio::time::interval(self.status.interval());
        status_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if to_fence && self.fence.reached() {
                return Ok(true);
            }
            // Between transactions only, so the checkpoint it makes due can follow at once.
            if self.transactions.current().is_none() && self.sourced.rediscovery_due(Instant::now()) {
                self.rediscover(stream).await?;
            }
            // Checkpoints fall between transactions only: with one open, keep reading
            // until its commit.
            match self.checkpoints.timing(self.transactions.current().is_none(), Instant::now) {
                Timing::NotDue => {}
                Timing::Now => self.checkpoint_if_due(false, stream).await?,
                Timing::UnlessFrameWithin(wait) if wait.is_zero() => {
                    // "Unless a frame is ready now": the stream is polled once, and a frame
                    // that is not there yet is left to the select below (`recv` is
                    // cancel-safe). Not a zero `timeout`: its timer fires at the timer's
                    // next millisecond tick, and the worker sleeps in `epoll_wait` until
                    // then, so every commit of a live stream waited up to a millisecond
                    // for its checkpoint (docs/performance.md, finding 20).
                    match futures::FutureExt::now_or_never(stream.recv()) {
                        Some(frame) => {
                            self.on_frame(frame?, stream).await?;
                            continue;
                        }
                        None => self.checkpoint_if_due(false, stream).await?,
                    }
                }
                Timing::UnlessFrameWithin(wait) => match tokio::time::timeout(wait, stream.recv()).await {
                    Ok(frame) => {
                        self.on_frame(frame?, stream).await?;
                        continue;
                    }
                    Err(_) => self.checkpoint_if_due(false, stream).await?,
                },
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
                // 4. wake an idle stream for rediscovery (done at the top of the loop);
                //    disabled inside a transaction, where it would only spin
                _ = sleep_until(self.sourced.rediscovery_deadline()),
                    if self.transactions.current().is_none() && self.sourced.enabled() => {}
            }
        }
    }

    /// Write a checkpoint if a transaction committed (or the cursor moved) since the last.
    async fn checkpoint_if_due(&mut self, force_bindings: bool, stream: &mut ReplicationStream) -> Result<(), Error> {
        if !self.checkpoints.pending(force_bindings) {
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
        // Schemas of tables described again since the last checkpoint: this one commits them.
        self.send_marked_sourced_schemas(stream).await?;
        // Taken before it is written: a write that fails ends the session.
        let checkpoint = self.checkpoints.take(Instant::now());
        // Every binding state written carries the value-formats marker (see `state`), also
        // one whose state was replaced since the session started (a new backfill).
        let formats = self.config.formats.improvement_names();
        for index in checkpoint.bindings {
            let binding = &mut self.bindings[index];
            binding.state.set_value_formats(&formats);
            binding_patches.insert(binding.state_key.clone(), binding.state.to_patch());
        }
        let mut patch = json!({"cursor": checkpoint.cursor.to_string()});
        if !binding_patches.is_empty() {
            patch["bindingStateV1"] = Value::Object(binding_patches);
        }
        if checkpoint.documents > 0 && failpoint::fires(Failpoint::AfterDocuments) {
            let _ = self.emitter.flush().await;
            failpoint::exit(Failpoint::AfterDocuments);
        }
        let confirmable = self.checkpoints.confirmable();
        self.status.during(stream, confirmable, self.emitter.checkpoint(&patch)).await?;
        if failpoint::fires(Failpoint::AfterCheckpoint) {
            failpoint::exit(Failpoint::AfterCheckpoint);
        }
        Ok(())
    }

    async fn emit(&mut self, binding: usize, stream: &mut ReplicationStream) -> Result<(), Error> {
        let index = u32::try_from(binding).map_err(|_| Error::Internal("binding index overflows u32".into()))?;
        let confirmable = self.checkpoints.confirmable();
        self.status.during(stream, confirmable, self.emitter.captured(index, &self.document)).await?;
        self.checkpoints.on_document();
        Ok(())
    }
}

/// Sleep until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
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
