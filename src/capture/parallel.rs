//! One keyed chunk read by several connections at once (`advanced.backfill_readers`).
//!
//! A large table's backfill is bound by one connection reading rows: one server process
//! produces them, and the capture encodes them while it waits for the next. With K readers,
//! a round reads K consecutive key ranges of the table at once:
//!
//! 1. one key-only query finds the K-1 keys that split the next K chunks' worth of rows
//!    after the resume key (`backfill::split_keys_sql`: every N-th key in key order);
//! 2. K range queries, `key > b(i-1) AND key <= b(i)` (the last one `key > b(K-1) LIMIT N`),
//!    run concurrently, each on its own connection, in its own `REPEATABLE READ`
//!    transaction that reports its snapshot ([`run_chunk_query`]);
//! 3. their rows are emitted in key order: the first range's as they arrive, the later
//!    ones' from a bounded read-ahead (below), so that the ranges are read at once while
//!    memory stays bounded;
//! 4. one fence for the round, and the resume key moves to the last row emitted.
//!
//! Why this keeps the guarantee: it is one chunk of K*N rows whose rows were read by K
//! snapshots instead of one. Each snapshot was taken after the previous fence and before
//! the round's fence, and each is checked to see every transaction the stream delivered
//! (all K, without forgetting any transaction until all K see it: one snapshot seeing a
//! commit does not mean that a concurrent one does). A row's document then comes from
//! the snapshot of the range holding its key, and every change to that key committed after
//! that snapshot is in the stream up to the round's fence, which is emitted after the
//! rows, in the same checkpoint, as for a single chunk; a precise backfill drops only
//! changes beyond the resume key, which no range has read. Ranges are contiguous and
//! disjoint by construction (their bounds are key values cast back to the key's type and
//! compared by PostgreSQL, as resume keys are), whatever was inserted or deleted since
//! the split keys were read: a bound need not be a row anymore. Rows emitted past a cut
//! (a range cut by the statement timeout ends the round at its last row; the later ranges'
//! rows are dropped unread) are never beyond the resume key. A kill at any moment loses
//! only the uncommitted round, which is read again from the last committed resume key.
//!
//! A table rewrite is not MVCC-safe: a range query queued behind the rewrite's lock, with a
//! snapshot taken before it committed, sees the rewritten table empty. A single chunk that
//! saw no row is taken back for that (see `retype`); here one empty range among full ones
//! could hide rows the others do not vouch for, so the round's empty ranges keep their
//! snapshots, and one that misses a definition change restarts the table's backfill.
//!
//! Locks: each range query holds its table's lock until its transaction ends, which is
//! after its rows are read. A lock request queued between two of them (an `ALTER TABLE`
//! waiting for the first range) would make the next range wait for a transaction that
//! itself waits for the capture to read its rows, which it does in key order, after every
//! range has started: a wait in a circle that only `lock_timeout` would end, failing the
//! capture. So the first range starts alone; once it holds its lock, the others start, each
//! waiting at most [`LATER_LOCK_WAIT_MS`] for its lock, and a range refused is left out with
//! the ranges after it (the round is cut short there, as after a statement timeout).
//!
//! Read-ahead: each later range is read by a task into a queue bounded by bytes
//! ([`READ_AHEAD_BYTES`] shared by the later ranges); a full queue stops reading its
//! connection, which stops the server process at its socket. The first range, read
//! directly, is never blocked by them, so nothing waits in a circle.
//!
//! How many: `advanced.backfill_readers`, or when it is not set, the number the table's size
//! calls for, used only while rounds are measured faster than single chunks
//! (`reader_trial`).
//!
//! Connections: the K-1 extra connections are opened when a table with more than one
//! reader is backfilled and closed once no backfilling table needs them; each counts
//! against the server's `max_connections`. They only read, so a read-only capture (a
//! standby) reads the same way.
//!
//! Keyless tables: a round reads K consecutive page windows of the chunk's size at once, no
//! split query needed; each window's transaction also reports the files it read and the
//! relation's size (`backfill::RELATION_SQL`). The backfill ends when the last window read
//! ends past the relation's size, and the resume position is the last window's end. Windows
//! that read different files saw a rewrite between them (rows moved, so together they are not
//! one table's pages): the backfill restarts, as after a rewrite between two chunks.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::Either;
use futures::Stream;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, Semaphore};

use super::backfill::{self, ChunkPlan};
use super::chunk_query::{run_chunk_query, run_query_waiting, ChunkRows, RelationAnswer};
use super::chunks::{
    backfill_error, column_names, is_column_gone, is_statement_timeout, ChunkWatch, RawText, RowsRead,
};
use super::open::configure_session;
use super::state::TableMode;
use super::visibility::Snapshot;
use super::{order, with_deadline, Session, STARTUP_ANSWER_LIMIT};
use crate::error::Error;
use crate::pg::replication::ReplicationStream;

/// Bytes of rows read ahead for the later ranges of a round, all of them together.
const READ_AHEAD_BYTES: usize = 4 << 20;
/// Read-ahead is counted in units of this many bytes.
const PERMIT_BYTES: usize = 1024;
/// How long a range after the first may wait for its table's lock (milliseconds).
const LATER_LOCK_WAIT_MS: u32 = 200;

/// A range's query: its SQL and text parameters.
struct RangeQuery {
    sql: String,
    params: Vec<Option<String>>,
    /// A keyless round's page window (keyed ranges: None).
    window: Option<ChunkPlan>,
}

/// The answers of a round's range queries, whose snapshots all see every delivered
/// transaction.
struct VisibleRanges {
    rows: Vec<tokio_postgres::RowStream>,
    snapshots: Vec<Snapshot>,
    /// Keyless windows: each one's plan and the answer of its relation query.
    windows: Vec<Option<(ChunkPlan, RelationAnswer)>>,
    /// Ranges at the end of the round were left out (their lock was not granted at once).
    truncated: bool,
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// How many connections read binding `index`'s next chunk: one for tables without a
    /// key, else `advanced.backfill_readers`, or when that is not set, the count chosen from
    /// the table's size where it was measured to be faster than one (see `reader_trial`).
    pub(super) fn backfill_readers(&self, index: usize) -> usize {
        let readers = self.readers_allowed(index);
        if self.config.backfill_readers.is_some() {
            return readers;
        }
        self.bindings[index].reader_trial.readers(readers)
    }

    /// How many connections may read binding `index`'s backfill: one for tables without a
    /// key, else `advanced.backfill_readers` (see `Config::backfill_readers_for`), at most
    /// as many as the server allowed.
    fn readers_allowed(&self, index: usize) -> usize {
        let binding = &self.bindings[index];
        if binding.state.mode != TableMode::KeylessBackfill && binding.key_columns.is_empty() {
            return 1;
        }
        let readers = self.config.backfill_readers_for(binding.estimated_rows.unwrap_or(0));
        self.readers_refused.map_or(readers, |cap| readers.min(cap))
    }

    /// Close the extra reader connections that no backfilling table needs any more. A table
    /// read by one connection for now, as measured faster, keeps its readers open for the
    /// next measurement.
    pub(super) fn close_unneeded_readers(&mut self) {
        if self.extra_readers.is_empty() {
            return;
        }
        let needed = (0..self.bindings.len())
            .filter(|i| self.bindings[*i].state.mode.is_backfilling())
            .map(|i| self.readers_allowed(i))
            .max()
            .unwrap_or(1);
        self.extra_readers.truncate(needed.saturating_sub(1));
    }

    /// Open extra reader connections until there are `count`, at once, keeping the
    /// replication connection alive meanwhile (connecting can take seconds on a busy server).
    async fn open_readers(
        &mut self,
        count: usize,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        let missing = count.saturating_sub(self.extra_readers.len());
        if missing == 0 {
            return Ok(());
        }
        let opening: Vec<_> = (0..missing)
            .map(|_| {
                let config = self.config.clone();
                tokio::spawn(async move {
                    with_deadline(STARTUP_ANSWER_LIMIT, "opening a backfill reader connection", async {
                        let client = crate::pg::connect_sql(&config.connect_params()).await?;
                        configure_session(&client, &config).await?;
                        Ok::<_, Error>(client)
                    })
                    .await?
                })
            })
            .collect();
        let opened = self.watched(tokio::spawn(futures::future::join_all(opening)), watch, stream).await?;
        for client in opened {
            let client = client.map_err(|err| Error::Internal(format!("a backfill reader task failed: {err}")))?;
            match client {
                Ok(client) => self.extra_readers.push(Arc::new(client)),
                // Too many connections (53300): the extra readers are what is too many.
                Err(err) if is_too_many_connections(&err) => {
                    if self.config.backfill_readers.is_some() {
                        return Err(Error::user(
                            format!("opening a backfill reader connection failed: {err}"),
                            "each backfill reader beyond the first is one more server connection: lower advanced.backfill_readers (1 reads with one connection) or raise the server's max_connections",
                        ));
                    }
                    // Readers the user did not ask for: read with the connections there are.
                    let readers = 1 + self.extra_readers.len();
                    tracing::warn!(
                        readers,
                        error = %err,
                        "the server refused a backfill reader connection (too many connections): reading with fewer; set advanced.backfill_readers to choose how many"
                    );
                    self.readers_refused = Some(readers);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Read one chunk of binding `index` with `readers` connections at once (see the module
    /// docs); a table with too few rows left to split is read as a single chunk.
    pub(super) async fn backfill_parallel(
        &mut self,
        index: usize,
        readers: usize,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        self.prepare_backfill(index).await?;
        let (plan, _, _) = self.chunk_query(index)?;
        let started = Instant::now();
        let mut watch = ChunkWatch::start(self.status.interval()).await;
        self.open_readers(readers - 1, &mut watch, stream).await?;
        // The server may have refused some of the readers chosen by default.
        let readers = readers.min(1 + self.extra_readers.len());
        if readers < 2 {
            return self.backfill_chunk(index, None, None, stream).await;
        }
        let (after, limit) = match &plan {
            ChunkPlan::Keyed { after, limit } => (after, limit),
            ChunkPlan::Keyless { after_block, until_block } => {
                let queries = self.window_queries(index, *after_block, until_block - after_block, readers);
                let Some(visible) = self.visible_ranges(index, &plan, &queries, &mut watch, stream).await? else {
                    return Ok(());
                };
                return self.emit_ranges(index, &plan, visible, started, &mut watch, stream).await;
            }
        };
        let Some(splits) = self.split_keys(index, after.as_ref(), *limit, readers - 1, &mut watch, stream).await?
        else {
            return self.backfill_chunk(index, None, None, stream).await;
        };
        let queries = self.range_queries(index, after.as_ref(), &splits, *limit);
        let Some(visible) = self.visible_ranges(index, &plan, &queries, &mut watch, stream).await? else {
            return Ok(());
        };
        self.emit_ranges(index, &plan, visible, started, &mut watch, stream).await
    }

    /// How binding `index`'s keys compare and order in its chunk queries.
    fn key_order_parts(&self, index: usize) -> (Vec<String>, Vec<bool>) {
        let binding = &self.bindings[index];
        let key_types = binding.key_types.clone().unwrap_or_default();
        let collate_c: Vec<bool> = match (&binding.key_orders, binding.state.mode) {
            (Some(orders), TableMode::Backfill) => orders.iter().map(|o| *o == order::KeyOrder::Text).collect(),
            _ => vec![false; binding.key_columns.len()],
        };
        (key_types, collate_c)
    }

    /// The keys that split the next `(count + 1) * limit` rows into `count + 1` ranges.
    /// None: fewer than two ranges' worth of rows are left, or the query took too long (the
    /// chunk is then read by one connection, as usual).
    async fn split_keys(
        &mut self,
        index: usize,
        after: Option<&Vec<Option<String>>>,
        limit: i64,
        count: usize,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<Option<Vec<Vec<Option<String>>>>, Error> {
        let (key_types, collate_c) = self.key_order_parts(index);
        let binding = &self.bindings[index];
        let keys = backfill::KeyOrder { columns: &binding.key_columns, types: &key_types, collate_c: &collate_c };
        let sql =
            backfill::split_keys_sql(&binding.table, &keys, after.is_some(), limit, i64::try_from(count).unwrap_or(1));
        let params: Vec<Option<String>> = after.cloned().unwrap_or_default();
        let key_count = binding.key_columns.len();
        let client = self.backfill_client.clone();
        let query = tokio::spawn(async move {
            use futures::TryStreamExt;
            let rows = client
                .query_typed_raw(&sql, params.iter().map(|p| (p.as_deref(), tokio_postgres::types::Type::TEXT)))
                .await?;
            rows.try_collect::<Vec<tokio_postgres::Row>>().await
        });
        let rows = match self.watched(query, watch, stream).await? {
            Ok(rows) => rows,
            Err(err) if is_statement_timeout(&err) => return Ok(None),
            Err(err) => return Err(backfill_error(&self.bindings[index].table, err)),
        };
        let mut splits = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: Vec<Option<String>> = (0..key_count)
                .map(|i| row.try_get::<_, Option<&str>>(i).map(|v| v.map(str::to_string)))
                .collect::<Result<_, _>>()
                .map_err(|err| backfill_error(&self.bindings[index].table, err))?;
            splits.push(key);
        }
        Ok((!splits.is_empty()).then_some(splits))
    }

    /// The range queries of a round: `(after, splits[0]]`, `(splits[0], splits[1]]`, ...,
    /// and the rows after the last split, at most `limit`.
    fn range_queries(
        &self,
        index: usize,
        after: Option<&Vec<Option<String>>>,
        splits: &[Vec<Option<String>>],
        limit: i64,
    ) -> Vec<RangeQuery> {
        let (key_types, collate_c) = self.key_order_parts(index);
        let binding = &self.bindings[index];
        let keys = backfill::KeyOrder { columns: &binding.key_columns, types: &key_types, collate_c: &collate_c };
        let filter = backfill::RowFilter {
            min_xid: self.config.min_backfill_xid,
            user: binding.resource.advanced.additional_backfill_filter.as_deref(),
        };
        let binary = self.read_form(index).binary;
        let lower = std::iter::once(after).chain(splits.iter().map(Some));
        let upper = splits.iter().map(Some).chain(std::iter::once(None));
        lower
            .zip(upper)
            .map(|(lower, upper)| {
                let sql =
                    backfill::range_sql(&binding.table, &keys, lower.is_some(), upper.is_some(), limit, filter, binary);
                let params = lower.into_iter().chain(upper).flatten().cloned().collect();
                RangeQuery { sql, params, window: None }
            })
            .collect()
    }

    /// The queries of a keyless round: `readers` consecutive windows of `pages` pages each
    /// from `after_block` on.
    fn window_queries(&self, index: usize, after_block: u64, pages: u64, readers: usize) -> Vec<RangeQuery> {
        let binding = &self.bindings[index];
        let filter = backfill::RowFilter {
            min_xid: self.config.min_backfill_xid,
            user: binding.resource.advanced.additional_backfill_filter.as_deref(),
        };
        let form = self.read_form(index);
        (0..readers as u64)
            .map(|i| {
                let window = ChunkPlan::Keyless {
                    after_block: after_block + i * pages.max(1),
                    until_block: after_block + (i + 1) * pages.max(1),
                };
                let sql = backfill::chunk_sql(&binding.table, &[], &[], &[], &window, filter, form);
                let params = backfill::keyless_params(&window, form.scan, binding.table.oid);
                RangeQuery { sql, params, window: Some(window) }
            })
            .collect()
    }

    /// Await a spawned query while keeping the replication connection alive and probing
    /// the server when it stays silent.
    async fn watched<T>(
        &mut self,
        query: tokio::task::JoinHandle<T>,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<T, Error> {
        tokio::pin!(query);
        loop {
            tokio::select! {
                done = &mut query => {
                    return done.map_err(|err| Error::Internal(format!("a backfill query task failed: {err}")));
                }
                _ = watch.timer.tick() => {
                    self.send_status(stream, false).await?;
                    self.probe_if_quiet(&mut watch.quiet_since).await?;
                }
            }
        }
    }

    /// Run the range queries at once, each on its own connection, until every one's
    /// snapshot sees every delivered transaction. None: the round is read again (a query
    /// hit the statement timeout, with the chunk size halved, or the table's columns
    /// changed).
    async fn visible_ranges(
        &mut self,
        index: usize,
        plan: &ChunkPlan,
        queries: &[RangeQuery],
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<Option<VisibleRanges>, Error> {
        let table_oid = self.bindings[index].table.oid;
        let relation = self.relation_to_check(index);
        let mut warned = false;
        loop {
            // The first range first, and the others once it holds its table's lock, each
            // waiting briefly for theirs: a lock request queued between them (an ALTER TABLE
            // waiting for the first range's transaction) would otherwise make a later range
            // wait for a transaction that waits for its rows to be read, which they are not
            // until every range has started. A later range that cannot have its lock at once
            // is left out of the round.
            let first = {
                let client = self.backfill_client.clone();
                let (sql, params) = (queries[0].sql.clone(), queries[0].params.clone());
                tokio::spawn(async move { run_chunk_query(&client, table_oid, &sql, &params, relation).await })
            };
            let first = self.watched(first, watch, stream).await?;
            let tasks: Vec<_> = queries
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, query)| {
                    let client = self.extra_readers[i - 1].clone();
                    let (sql, params) = (query.sql.clone(), query.params.clone());
                    tokio::spawn(async move {
                        run_query_waiting(&client, table_oid, &sql, &params, relation, Some(LATER_LOCK_WAIT_MS)).await
                    })
                })
                .collect();
            let later = self.watched(tokio::spawn(futures::future::join_all(tasks)), watch, stream).await?;
            let mut chunks: Vec<ChunkRows> = Vec::with_capacity(queries.len());
            let mut truncated = false;
            for (i, answer) in std::iter::once(Ok(first)).chain(later).enumerate() {
                match answer.map_err(|err| Error::Internal(format!("a backfill range query task failed: {err}")))? {
                    Ok(chunk) => chunks.push(chunk),
                    Err(err) if i > 0 && is_lock_wait(&err) => {
                        tracing::debug!(
                            range = i,
                            "a backfill range waited for its table's lock: the round ends before it"
                        );
                        truncated = true;
                        break;
                    }
                    Err(err) if is_statement_timeout(&err) => return self.shrink_chunk(index, plan, err),
                    Err(err) if is_column_gone(&err) => return self.retry_with_current_columns(index, err).await,
                    Err(err) => return Err(backfill_error(&self.bindings[index].table, err)),
                }
            }
            let described = column_names(&self.bindings[index].table);
            let stale_columns = chunks.iter().any(|c| c.columns.as_ref().is_some_and(|seen| *seen != described));
            if stale_columns && self.columns_changed(index).await? {
                return Ok(None);
            }
            let snapshots = chunks
                .iter()
                .map(|c| Snapshot::parse(&c.snapshot))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| Error::Internal(format!("a backfill range query's snapshot: {err}")))?;
            match snapshots.iter().find_map(|s| self.delivered.first_unseen(s)) {
                None => {
                    // Every snapshot sees every delivered transaction: forget them.
                    if let Some(first) = snapshots.first() {
                        self.delivered.forget_seen(first);
                    }
                    let mut rows = Vec::with_capacity(chunks.len());
                    let mut windows = Vec::with_capacity(chunks.len());
                    for (chunk, query) in chunks.into_iter().zip(queries) {
                        rows.push(chunk.rows);
                        windows.push(query.window.clone().zip(chunk.relation));
                    }
                    return Ok(Some(VisibleRanges { rows, snapshots, windows, truncated }));
                }
                Some(unseen) => {
                    drop(chunks);
                    tracing::debug!(
                        xid = unseen,
                        "a delivered commit is not visible to every backfill range yet: waiting"
                    );
                    self.wait_until_visible(index, unseen, &mut warned, watch, stream).await?;
                }
            }
        }
    }

    /// Emit the ranges' rows in key order and record the round's chunk.
    async fn emit_ranges(
        &mut self,
        index: usize,
        plan: &ChunkPlan,
        visible: VisibleRanges,
        started: Instant,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        let VisibleRanges { rows, snapshots, windows, truncated } = visible;
        let later = rows.len().saturating_sub(1).max(1);
        // The later ranges are read ahead at once, while the first one is emitted.
        let ranges: Vec<Either<tokio_postgres::RowStream, ReadAhead>> = rows
            .into_iter()
            .enumerate()
            .map(|(i, rows)| {
                if i == 0 {
                    Either::Left(rows)
                } else {
                    Either::Right(ReadAhead::start(rows, READ_AHEAD_BYTES / later))
                }
            })
            .collect();
        let mut total = RowsRead { rows: 0, tail_rows: 0, timed_out: false, last_key: None, readers: ranges.len() };
        let mut empty_ranges = Vec::new();
        // Ranges read to their end, and for keyless windows the last one's plan and relation,
        // and every identity of the files they read.
        let mut complete = 0;
        let mut last_window: Option<(ChunkPlan, Option<(u64, String)>)> = None;
        let mut identities = Vec::new();
        // Later ranges not emitted are dropped unread with the iterators (their tasks end).
        let mut windows = windows.into_iter();
        for (range, rows) in ranges.into_iter().enumerate() {
            let window = windows.next().flatten();
            let range_plan = window.as_ref().map_or(plan, |(window, _)| window);
            let read = self.emit_chunk_rows(index, range_plan, rows, total.rows, watch, stream).await?;
            // None: nothing of this range is kept (see `shrink_chunk`, `retry_with_current_columns`): the
            // round ends before it.
            let Some(read) = read else { break };
            if let Some((window, answer)) = window {
                let relation = self.chunk_relation(index, Some(answer), watch, stream).await?;
                identities.extend(relation.as_ref().map(|(_, files)| backfill::relation_identity(files)));
                last_window = Some((window, relation));
            }
            if read.rows == 0 {
                empty_ranges.push(snapshots[range].clone());
            }
            total.rows += read.rows;
            total.tail_rows = read.rows;
            if read.last_key.is_some() {
                total.last_key = read.last_key;
            }
            if read.timed_out {
                break;
            }
            complete += 1;
        }
        self.rows_this_session += total.rows;
        let snapshot = snapshots.first().cloned().ok_or_else(|| Error::Internal("a round without ranges".into()))?;
        if let (ChunkPlan::Keyless { after_block, .. }, Some((window, relation))) = (plan, last_window) {
            let ChunkPlan::Keyless { until_block, .. } = window else {
                return Err(Error::Internal("a keyless window without pages".into()));
            };
            self.windows_rewritten(index, *after_block, &identities);
            let read = ChunkPlan::Keyless { after_block: *after_block, until_block };
            return self.finish_chunk(index, &read, snapshot, total, relation, started.elapsed());
        }
        // Only the last range is unbounded: a round cut short is never the last, and its
        // resume key is its last row.
        let whole = !truncated && complete == snapshots.len();
        if total.rows == 0 && !whole {
            return Ok(());
        }
        total.timed_out = !whole;
        self.finish_chunk(index, plan, snapshot, total, None, started.elapsed())?;
        if let Some(undo) = self.bindings[index].chunk_undo.as_mut() {
            undo.empty_ranges = empty_ranges;
        }
        Ok(())
    }

    /// The windows of a keyless round read different files: the table was rewritten between
    /// them (its rows moved), so what they read is not the rest of one table. The first
    /// window's files are recorded as the backfill's, so that `finish_chunk` finds the last
    /// window's files different and restarts the backfill, as after a rewrite between two
    /// chunks.
    fn windows_rewritten(&mut self, index: usize, after_block: u64, identities: &[String]) {
        let Some(first) = identities.first() else { return };
        if identities.iter().all(|identity| identity == first) {
            return;
        }
        let binding = &mut self.bindings[index];
        if binding.state.scanned.is_none() {
            binding.state.scanned = Some(super::chunk_plan::keyless_resume(after_block));
        }
        binding.state.set_keyless_relation(Some(first.clone()));
    }
}

/// The rows of one read-ahead batch.
type Batch = Vec<Result<tokio_postgres::Row, tokio_postgres::Error>>;

/// Rows at most in one read-ahead batch: a batch is what the connection had ready, so that
/// the queue and the budget cost a few operations per batch rather than per row.
const BATCH_ROWS: usize = 256;

/// A later range's rows, read ahead by a task into a queue bounded by bytes.
struct ReadAhead {
    queue: mpsc::UnboundedReceiver<(Batch, u32)>,
    budget: Arc<Semaphore>,
    /// The batch being handed out, and its permits, returned when the next batch is taken
    /// (its rows are encoded and emitted by then).
    current: std::vec::IntoIter<Result<tokio_postgres::Row, tokio_postgres::Error>>,
    held: u32,
    task: tokio::task::JoinHandle<()>,
}

impl ReadAhead {
    fn start(rows: tokio_postgres::RowStream, bytes: usize) -> ReadAhead {
        let permits = u32::try_from((bytes / PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
        let budget = Arc::new(Semaphore::new(permits as usize));
        let (sender, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move {
                use futures::StreamExt;
                // Every row already received, up to a batch, without waiting for more.
                let batches = rows.ready_chunks(BATCH_ROWS);
                tokio::pin!(batches);
                while let Some(batch) = batches.next().await {
                    // A batch larger than the whole budget waits for an empty queue.
                    let cost = batch_permits(&batch).min(permits);
                    match budget.acquire_many(cost).await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return,
                    }
                    let failed = batch.iter().any(Result::is_err);
                    if sender.send((batch, cost)).is_err() || failed {
                        return;
                    }
                }
            }
        });
        ReadAhead { queue, budget, current: Vec::new().into_iter(), held: 0, task }
    }
}

impl Stream for ReadAhead {
    type Item = Result<tokio_postgres::Row, tokio_postgres::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(row) = self.current.next() {
                return Poll::Ready(Some(row));
            }
            if self.held > 0 {
                let held = std::mem::take(&mut self.held);
                self.budget.add_permits(held as usize);
            }
            match self.queue.poll_recv(cx) {
                Poll::Ready(Some((batch, cost))) => {
                    self.current = batch.into_iter();
                    self.held = cost;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Its rows are not wanted: dropping the row stream lets the connection discard
        // them before it answers another query.
        self.task.abort();
    }
}

/// A batch's share of the read-ahead budget: its cells' bytes and a per-cell overhead.
fn batch_permits(batch: &Batch) -> u32 {
    let bytes: usize = batch
        .iter()
        .filter_map(|row| row.as_ref().ok())
        .map(|row| {
            (0..row.len())
                .map(|i| row.try_get::<_, Option<RawText<'_>>>(i).ok().flatten().map_or(0, |cell| cell.0.len()) + 32)
                .sum::<usize>()
                + 64
        })
        .sum();
    u32::try_from(bytes.div_ceil(PERMIT_BYTES).max(1)).unwrap_or(u32::MAX)
}

/// Whether the server refused a connection because it has too many (SQLSTATE 53300).
fn is_too_many_connections(err: &Error) -> bool {
    matches!(err, Error::Pg(crate::pg::PgError::Server { code, .. }) if code == "53300")
}

/// Whether a query gave up waiting for a lock (`lock_timeout`, SQLSTATE 55P03).
fn is_lock_wait(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}
