//! The backfill half of the session: planning, running and reading chunk queries.
//!
//! The SQL itself comes from the pure planner ([`backfill`]); this module runs it. A chunk
//! query runs on the second connection, in a `REPEATABLE READ` transaction that first
//! reports its snapshot, all pipelined into one round trip ([`run_chunk_query`]), so the
//! next chunk can be read while the replication stream catches up to the current fence.
//! Its rows are used only if that snapshot sees every transaction the stream has delivered
//! for the backfilling tables; otherwise the chunk waits for them to become visible and is
//! read again (see [`visibility`]). Rows are read as raw cells (text, or the binary send
//! form of a few fixed-width types: the `chunk_row` module), encoded into documents and emitted as
//! they arrive, so memory stays bounded whatever the chunk size; the last
//! row's key becomes the resume key (`scanned`) in the Go connector's tuple encoding. A
//! chunk cut by `statement_timeout` keeps the rows it read, or is retried at half the size
//! when it read none.

use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;

use super::backfill::KeyCell;
use super::chunk_query::{run_chunk_query, RelationAnswer};
use super::chunk_row::RowCodec;
use super::document::{self, DocumentLayout, Op, Source};
use super::state::TableMode;
use super::visibility::Snapshot;
use super::{backfill, chunk_plan, order, pg, value_error, Binding, PrefetchedChunk, Session};
use crate::discovery::DiscoveredTable;
use crate::error::Error;
use crate::failpoint::{self, Failpoint};
use crate::pg::replication::ReplicationStream;
use crate::pg::PgError;
use crate::value::PgType;

/// How long a backfill chunk may wait for a delivered commit to become visible before the
/// wait is reported as a warning.
const VISIBILITY_WAIT_WARNING: Duration = Duration::from_secs(5);
/// Longest pause between snapshot checks while a chunk waits for a commit to become visible.
const VISIBILITY_RETRY_MAX: Duration = Duration::from_millis(100);
/// Rows a chunk takes as they are ready before it polls its timer (and reads the clock) again.
const READY_STREAK: u32 = 256;

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// A chunk query hit the statement timeout before yielding progress: retry smaller
    /// (the chunk is read again, so nothing is returned).
    pub(super) fn shrink_chunk<T>(
        &mut self,
        index: usize,
        plan: &backfill::ChunkPlan,
        err: tokio_postgres::Error,
    ) -> Result<Option<T>, Error> {
        let binding = &mut self.bindings[index];
        let Some(smaller) = chunk_plan::shrunk(plan) else {
            return Err(backfill_error(&binding.table, err));
        };
        binding.chunk_limit = Some(smaller);
        tracing::info!(
            table = %format!("{}.{}", binding.table.schema, binding.table.name),
            chunk = smaller,
            "backfill chunk hit the statement timeout: retrying with a smaller chunk"
        );
        Ok(None)
    }

    /// While a chunk query is silent (no row yet, or none for a while): it may be working,
    /// or its connection may be gone with the socket still open. A `SELECT 1` on the other
    /// connection tells the two apart: a server that answers it is alive and busy; one that
    /// does not within the deadline is not, and the capture fails rather than hang.
    ///
    /// The replication connection's watchdog does not run while a chunk is read (its frames
    /// are not read then), so this probe is what notices a cut network path: it starts after
    /// one status interval of silence and allows half the silence limit for the answer, so
    /// that a dead server is noticed within about the same time as on the stream.
    pub(super) async fn probe_if_quiet(&self, quiet_since: &mut Instant) -> Result<(), Error> {
        if quiet_since.elapsed() < self.status.interval() {
            return Ok(());
        }
        let limit = (self.silence_limit() / 2).max(super::MIN_PROBE_ANSWER);
        super::with_deadline(
            limit,
            "a liveness probe while a backfill query was silent",
            self.client.simple_query("SELECT 1"),
        )
        .await?
        .map_err(pg)?;
        *quiet_since = Instant::now();
        Ok(())
    }

    /// A chunk's result column is not of the type its binary codec reads (the column was
    /// retyped since the table was described): read this table as text from now on, as
    /// every column was before binary reads, and let the caller run the chunk again (it
    /// emitted nothing yet). Returns None, the chunk's "read it again".
    fn read_as_text<T>(&mut self, index: usize, column: Option<usize>) -> Option<T> {
        let binding = &mut self.bindings[index];
        binding.binary_cells = false;
        let column = column.and_then(|i| binding.table.columns.get(i)).map_or("?", |c| c.name.as_str());
        tracing::info!(
            table = %format!("{}.{}", binding.table.schema, binding.table.name),
            column,
            "a backfill result column is not of the type the table was described with (retyped during the backfill?): reading the table's chunks as text"
        );
        None
    }

    /// A chunk query named a column the table no longer has: it was dropped or renamed
    /// while the backfill ran (the columns were read when the session started). Read the
    /// table's columns again and let the caller run the chunk again with them; the chunk
    /// emitted nothing yet, and its resume key is unchanged. If the columns did not change,
    /// the error stands.
    pub(super) async fn retry_with_current_columns<T>(
        &mut self,
        index: usize,
        err: tokio_postgres::Error,
    ) -> Result<Option<T>, Error> {
        if self.columns_changed(index).await? {
            Ok(None)
        } else {
            Err(backfill_error(&self.bindings[index].table, err))
        }
    }

    /// Describe binding `index`'s table again; true if its columns changed (its chunks are
    /// then built with the current ones).
    pub(super) async fn columns_changed(&mut self, index: usize) -> Result<bool, Error> {
        let changed = self.describe_again(index, "reading a table's columns again").await?;
        if changed {
            let table = &self.bindings[index].table;
            tracing::info!(
                table = %format!("{}.{}", table.schema, table.name),
                columns = ?column_names(table),
                "the table's columns changed during its backfill: reading its chunk again with the current columns"
            );
        }
        Ok(changed)
    }

    /// The next chunk of a binding: its plan, SQL and parameters (after `prepare_backfill`).
    pub(super) fn chunk_query(
        &self,
        index: usize,
    ) -> Result<(backfill::ChunkPlan, String, Vec<Option<String>>), Error> {
        let binding = &self.bindings[index];
        let keyless = binding.state.mode == TableMode::KeylessBackfill;
        let table = format!("{}.{}", binding.table.schema, binding.table.name);
        let scanned = binding.state.scanned.as_deref();
        let plan = if keyless {
            chunk_plan::keyless_window(scanned, binding.chunk_limit, binding.keyless_pages)
        } else {
            chunk_plan::keyed_page(scanned, &binding.key_columns, &table, binding.chunk_limit, self.config.chunk_size)
        }
        .map_err(|err| Error::user(err.message, err.hint))?;
        let params = match &plan {
            backfill::ChunkPlan::Keyless { .. } => {
                backfill::keyless_params(&plan, self.keyless_scan(), binding.table.oid)
            }
            backfill::ChunkPlan::Keyed { after, .. } => after.clone().unwrap_or_default(),
        };
        let key_types = binding.key_types.clone().unwrap_or_default();
        let filter = binding.resource.advanced.additional_backfill_filter.clone();
        let collate_c: Vec<bool> = match (&binding.key_orders, binding.state.mode) {
            (Some(orders), TableMode::Backfill) => orders.iter().map(|o| *o == order::KeyOrder::Text).collect(),
            _ => vec![false; binding.key_columns.len()],
        };
        let sql = backfill::chunk_sql(
            &binding.table,
            &binding.key_columns,
            &key_types,
            &collate_c,
            &plan,
            backfill::RowFilter { min_xid: self.config.min_backfill_xid, user: filter.as_deref() },
            self.read_form(index),
        );
        Ok((plan, sql, params))
    }

    /// How binding `index`'s chunk queries select their rows: the server's keyless scan,
    /// and whether fixed-width columns are read in binary (not after a retype was seen, nor
    /// in the Go connector's value formats).
    pub(super) fn read_form(&self, index: usize) -> backfill::ReadForm {
        backfill::ReadForm {
            scan: self.keyless_scan(),
            binary: self.bindings[index].binary_cells && self.config.formats.binary_reads_apply(),
        }
    }

    /// How this server reads a keyless window efficiently.
    fn keyless_scan(&self) -> backfill::KeylessScan {
        backfill::KeylessScan::for_server(self.server_version)
    }

    /// The table whose files a chunk query of binding `index` reports after its rows
    /// (keyless backfills only: their resume position is a location in those files).
    pub(super) fn relation_to_check(&self, index: usize) -> Option<u32> {
        let binding = &self.bindings[index];
        (binding.state.mode == TableMode::KeylessBackfill).then_some(binding.table.oid)
    }

    /// Read and emit one chunk of binding `index` (its query possibly started already, as
    /// `prefetched`). With `next`, the next chunk query of that binding is sent once this
    /// chunk's rows are flowing, and left in `self.speculative`.
    pub(super) async fn backfill_chunk(
        &mut self,
        index: usize,
        prefetched: Option<PrefetchedChunk>,
        next: Option<usize>,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        self.prepare_backfill(index).await?;
        let (plan, sql, params) = self.chunk_query(index)?;
        let prefetched = self.usable_prefetch(index, prefetched, &plan, &sql).await;
        let started = Instant::now();
        let mut watch = ChunkWatch::start(self.status.interval()).await;
        let query = ChunkQuery { index, plan: &plan, sql: &sql, params: &params };
        let Some(chunk) = self.visible_chunk(&query, prefetched, &mut watch, stream).await? else {
            return Ok(());
        };
        // This chunk's query has been executed (its rows are on their way), so a query sent
        // now is answered after it: it cannot block this one.
        if let Some(next) = next {
            self.speculative = self.start_chunk_query(next).await?;
        }
        let Some(read) = self.emit_chunk_rows(index, &plan, chunk.rows, 0, &mut watch, stream).await? else {
            return Ok(());
        };
        self.rows_this_session += read.rows;
        let relation = self.chunk_relation(index, chunk.relation, &mut watch, stream).await?;
        self.finish_chunk(index, &plan, chunk.snapshot, read, relation, started.elapsed())
    }

    /// The prefetched query, if it is exactly this chunk (the chunk size may have changed
    /// since, after a statement timeout) and its snapshot can still be checked against every
    /// delivered transaction.
    async fn usable_prefetch(
        &self,
        index: usize,
        prefetched: Option<PrefetchedChunk>,
        plan: &backfill::ChunkPlan,
        sql: &str,
    ) -> Option<PrefetchedChunk> {
        match prefetched {
            Some(p)
                if p.index == index
                    && p.plan == *plan
                    && p.sql == sql
                    && p.forgotten_deliveries == self.forgotten_deliveries =>
            {
                Some(p)
            }
            Some(stale) => {
                // Dropping its row stream lets the connection discard its rows; only then
                // may another query follow it.
                stale.query.abort();
                let _ = stale.query.await;
                None
            }
            None => None,
        }
    }

    /// Run the chunk query (or take the prefetched one's answer) until its snapshot sees
    /// every transaction the stream has delivered for a backfilling table (see the
    /// `visibility` module). None: the query failed in a way that retries the chunk (see
    /// `shrink_chunk` and `retry_with_current_columns`).
    async fn visible_chunk(
        &mut self,
        query: &ChunkQuery<'_>,
        mut prefetched: Option<PrefetchedChunk>,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<Option<VisibleChunk>, Error> {
        let client = self.backfill_client.clone();
        let relation = self.relation_to_check(query.index);
        let table_oid = self.bindings[query.index].table.oid;
        // Whether a wait for delivered commits to become visible was reported.
        let mut warned = false;
        loop {
            let attempt = prefetched.take();
            let work = async {
                match attempt {
                    Some(prefetched) => prefetched
                        .query
                        .await
                        .map_err(|err| Error::Internal(format!("the prefetched backfill query failed to run: {err}"))),
                    None => Ok(run_chunk_query(&client, table_oid, query.sql, query.params, relation).await),
                }
            };
            tokio::pin!(work);
            let result = loop {
                tokio::select! {
                    result = &mut work => break result?,
                    _ = watch.timer.tick() => {
                        self.send_status(stream, false).await?;
                        self.probe_if_quiet(&mut watch.quiet_since).await?;
                    }
                }
            };
            let chunk = match result {
                Ok(chunk) => chunk,
                Err(err) if is_statement_timeout(&err) => return self.shrink_chunk(query.index, query.plan, err),
                Err(err) if is_column_gone(&err) => return self.retry_with_current_columns(query.index, err).await,
                Err(err) => return Err(backfill_error(&self.bindings[query.index].table, err)),
            };
            let described = column_names(&self.bindings[query.index].table);
            if chunk.columns.as_ref().is_some_and(|seen| *seen != described)
                && self.columns_changed(query.index).await?
            {
                // The table's columns changed since it was described: its rows would be
                // read without the new ones. The chunk is read again with the current ones.
                // (If they read the same as before, the change was undone meanwhile and
                // this chunk stands.)
                drop(chunk);
                return Ok(None);
            }
            let snapshot = Snapshot::parse(&chunk.snapshot)
                .map_err(|err| Error::Internal(format!("the backfill query's snapshot: {err}")))?;
            let Some(unseen) = self.delivered.forget_seen(&snapshot) else {
                return Ok(Some(VisibleChunk { rows: chunk.rows, relation: chunk.relation, snapshot }));
            };
            drop(chunk);
            tracing::debug!(xid = unseen, snapshot = %snapshot, "a delivered commit is not visible to the backfill query yet: waiting");
            self.wait_until_visible(query.index, unseen, &mut warned, watch, stream).await?;
            watch.quiet_since = Instant::now();
        }
    }

    /// Wait until a fresh snapshot sees every delivered transaction, starting with
    /// `unseen`. Waits with a cheap snapshot query, not by repeating the chunk query: a
    /// synchronous standby can hold commits back for as long as it is unreachable.
    pub(super) async fn wait_until_visible(
        &mut self,
        index: usize,
        mut unseen: u32,
        warned: &mut bool,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        let since = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            if !*warned && since.elapsed() >= VISIBILITY_WAIT_WARNING {
                let binding = &self.bindings[index];
                tracing::warn!(
                    table = %format!("{}.{}", binding.table.schema, binding.table.name),
                    xid = unseen,
                    "the backfill waits for transaction {unseen}: the replication stream delivered its commit, but queries do not see it yet. PostgreSQL makes a commit visible only after synchronous standbys confirm it: check synchronous_standby_names and the health of the standbys"
                );
                *warned = true;
            }
            let sleep = tokio::time::sleep(pause);
            pause = (pause * 2).min(VISIBILITY_RETRY_MAX);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    _ = watch.timer.tick() => self.send_status(stream, false).await?,
                }
            }
            // No chunk query is in flight, so forgetting what a fresh snapshot sees is
            // safe: the chunk query sent next has a later snapshot still.
            let snapshot = self.current_snapshot().await?;
            match self.delivered.forget_seen(&snapshot) {
                Some(still) => unseen = still,
                None => return Ok(()),
            }
        }
    }

    /// Encode and emit a chunk's rows as they arrive. None: the query failed in a way that
    /// retries the chunk (see `shrink_chunk` and `retry_with_current_columns`).
    pub(super) async fn emit_chunk_rows(
        &mut self,
        index: usize,
        plan: &backfill::ChunkPlan,
        row_stream: impl futures::Stream<Item = Result<tokio_postgres::Row, tokio_postgres::Error>>,
        emitted_before: u64,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<Option<RowsRead>, Error> {
        let binding = &self.bindings[index];
        let emitted = backfill::emitted_columns(&binding.table);
        let binary = self.read_form(index).binary;
        // The same rule as the chunk's SQL (`backfill::select_sql`): which key texts lead the row.
        let key_cells = match plan {
            backfill::ChunkPlan::Keyed { .. } => backfill::key_cells(&binding.table, &binding.key_columns, binary),
            backfill::ChunkPlan::Keyless { .. } => Vec::new(),
        };
        let keyed = !key_cells.is_empty();
        let key_count = key_cells.iter().filter(|cell| **cell == KeyCell::Text).count();
        let codec = RowCodec::new(&binding.table, &binding.key_columns, binary, &self.config.formats);
        let layout =
            DocumentLayout::new(&emitted.iter().map(|i| binding.table.columns[*i].name.as_str()).collect::<Vec<_>>());
        // Every row's `_meta` but its offset in `loc`, written once for the chunk.
        let row_meta = document::RowMeta::new(
            Op::Create,
            &Source {
                ts_ms: None,
                schema: &binding.table.schema,
                table: &binding.table.name,
                snapshot: true,
                loc: [-1, 0, 0],
                txid: None,
                tag: self.source_tag.as_deref(),
            },
        );
        let binding_number = u32::try_from(index).map_err(|_| Error::Internal("binding index overflows u32".into()))?;
        tokio::pin!(row_stream);
        let mut rows: u64 = 0;
        let mut timed_out = false;
        let mut last_row: Option<tokio_postgres::Row> = None;
        // Rows already received are taken without the timer's select and clock read; every
        // READY_STREAK rows (or when none is ready) the select runs, so the timer still ticks.
        // `quiet_since` is refreshed only there too: rows taken ready are at most
        // READY_STREAK rows' time old, far below the status interval it is compared with.
        let mut streak = 0;
        loop {
            use futures::{FutureExt, StreamExt};
            let ready = if streak < READY_STREAK { row_stream.next().now_or_never() } else { None };
            let next = if let Some(next) = ready {
                streak += 1;
                next
            } else {
                streak = 0;
                let next = tokio::select! {
                    next = row_stream.next() => next,
                    _ = watch.timer.tick() => {
                        self.status.send(stream, self.checkpoints.confirmable(), false).await?;
                        self.probe_if_quiet(&mut watch.quiet_since).await?;
                        continue;
                    }
                };
                watch.quiet_since = Instant::now();
                next
            };
            let Some(row) = next else { break };
            let row = match row {
                Ok(row) => row,
                // Rows already emitted are progress: keep them and resume after the last
                // (keyed chunks are ordered, so the rest is simply the next chunk).
                Err(err) if is_statement_timeout(&err) && rows > 0 && keyed => {
                    tracing::info!(rows, "backfill chunk cut by the statement timeout: keeping its progress");
                    timed_out = true;
                    break;
                }
                Err(err) if is_statement_timeout(&err) => {
                    // A keyless chunk has no order to resume from: retry a smaller page
                    // range. Rows it already emitted are re-read first, in the same CTID
                    // order and so at the same offsets, within the same checkpoint: their
                    // location keys make the repeats replace the first copies.
                    return self.shrink_chunk(index, plan, err);
                }
                Err(err) if is_column_gone(&err) && rows == 0 => {
                    return self.retry_with_current_columns(index, err).await
                }
                Err(err) => return Err(backfill_error(&self.bindings[index].table, err)),
            };
            if rows == 0 {
                let types = row.columns().iter().skip(key_count).map(|c| c.type_().oid());
                if let Err(position) = codec.check_types(types) {
                    // Returning drops the row stream: the connection discards its rows.
                    return Ok(self.read_as_text(index, emitted.get(position).copied()));
                }
            }
            let binding = &self.bindings[index];
            let offset = i64::try_from(binding.state.backfilled + emitted_before + rows).unwrap_or(i64::MAX);
            // Fields are used directly (not `self.emit`): the encoders borrow the binding.
            // Each value is encoded straight into the output buffer, in the document's
            // property order: no copy of the values nor of the document.
            let table = &binding.table;
            let write = |out: &mut Vec<u8>| {
                row_meta.try_write_document(out, &layout, offset, |out, position| {
                    let cell = row
                        .try_get::<_, Option<RawText<'_>>>(key_count + position)
                        .map_err(|err| backfill_error(table, err))?;
                    let column = codec
                        .column(position)
                        .ok_or_else(|| Error::Internal(format!("no codec for column {position} of a chunk row")))?;
                    column
                        .encode(cell.map(|RawText(raw)| raw), out)
                        .map_err(|err| value_error(&format!("{}.{}", table.schema, table.name), err))
                })
            };
            self.emitter.append_captured(binding_number, write)?;
            let confirmable = self.checkpoints.confirmable();
            self.status.during(stream, confirmable, self.emitter.write_if_full()).await?;
            self.checkpoints.on_document();
            rows += 1;
            if failpoint::fires(Failpoint::MidChunk) {
                let _ = self.emitter.flush().await;
                failpoint::exit(Failpoint::MidChunk);
            }
            // Only the last row's key is needed (the resume key): keep the row, not its text.
            last_row = Some(row);
        }
        let last_key = match &last_row {
            Some(row) if keyed => Some(resume_key(row, &key_cells, key_count, &emitted, &self.bindings[index].table)?),
            _ => None,
        };
        Ok(Some(RowsRead { rows, tail_rows: rows, timed_out, last_key, readers: 1 }))
    }

    /// A keyless chunk's rows are followed by the size (in pages) and files of the relation
    /// it read.
    pub(super) async fn chunk_relation(
        &mut self,
        index: usize,
        answer: Option<RelationAnswer>,
        watch: &mut ChunkWatch,
        stream: &mut ReplicationStream,
    ) -> Result<Option<(u64, String)>, Error> {
        let Some(answer) = answer else { return Ok(None) };
        tokio::pin!(answer);
        // The answer comes after the rows: a network path cut in between leaves it pending
        // for good, so a silence here is probed like the chunk query's own.
        let rows = loop {
            tokio::select! {
                rows = &mut answer => break rows,
                _ = watch.timer.tick() => {
                    self.send_status(stream, false).await?;
                    self.probe_if_quiet(&mut watch.quiet_since).await?;
                }
            }
        };
        let table = &self.bindings[index].table;
        let rows = rows.map_err(|err| backfill_error(table, err))?;
        let row = rows.first().ok_or_else(|| Error::Internal("the relation query returned no row".into()))?;
        let pages: i64 = row.try_get(0).map_err(|err| backfill_error(table, err))?;
        let files: String = row.try_get(1).map_err(|err| backfill_error(table, err))?;
        Ok(Some((u64::try_from(pages).unwrap_or(0), files)))
    }

    /// Record a chunk that was read in the binding's state: rows, resume position or
    /// completion, and the next chunk's size.
    pub(super) fn finish_chunk(
        &mut self,
        index: usize,
        plan: &backfill::ChunkPlan,
        snapshot: Snapshot,
        read: RowsRead,
        relation: Option<(u64, String)>,
        elapsed: Duration,
    ) -> Result<(), Error> {
        if matches!(plan, backfill::ChunkPlan::Keyless { .. }) && relation.is_none() {
            return Err(Error::Internal("a keyless chunk did not report its relation".into()));
        }
        let binding = &mut self.bindings[index];
        if binding.state.mode != TableMode::KeylessBackfill && !binding.key_columns.is_empty() {
            // Kept until the round's check (`Session::check_key_types`): a chunk read with a
            // snapshot older than a change to its table's definition is taken back.
            binding.chunk_undo = Some(super::ChunkUndo {
                snapshot,
                state: binding.state.clone(),
                scanned_key: binding.scanned_key.clone(),
                rows: read.rows,
                empty_ranges: Vec::new(),
            });
        }
        binding.state.backfilled += read.rows;
        let keyless_identity = relation.as_ref().map(|(_, files)| backfill::relation_identity(files));
        if let Some(identity) = &keyless_identity {
            if restart_if_rewritten(binding, identity) {
                self.checkpoints.binding_changed(index);
                return Ok(());
            }
        }
        let ceiling = if binding.state.mode == TableMode::KeylessBackfill {
            binding.keyless_pages.map_or(1, |p| i64::try_from(p).unwrap_or(1))
        } else {
            self.config.chunk_size
        };
        let sizing = chunk_plan::Sizing {
            limit: binding.chunk_limit,
            statement_timeout: self.config.statement_timeout,
            ceiling,
        };
        let chunk = chunk_plan::ChunkRead {
            rows: read.tail_rows,
            timed_out: read.timed_out,
            elapsed,
            relation_pages: relation.as_ref().map(|(pages, _)| *pages),
        };
        let outcome = chunk_plan::outcome(plan, &chunk, &sizing);
        binding.chunk_limit = outcome.limit;
        // A whole chunk's throughput, from the table's previous chunk's end: how fast its
        // readers read it, with everything a chunk costs (its fence, and the other tables'
        // chunks of the same rounds, which either way are read).
        let now = Instant::now();
        if let Some(ended) = binding.last_chunk_end.replace(now) {
            if !outcome.done && !read.timed_out {
                binding.reader_trial.record(read.readers, read.rows, now.saturating_duration_since(ended));
            }
        }
        // The order this chunk was read in, which its resume key is only valid in (checked
        // against the catalog once the round's chunks are read: `Session::check_key_types`).
        binding.state.key_types = if outcome.done { None } else { binding.key_signature.clone() };
        if outcome.done {
            // A completed backfill has no position left to check the files against.
            binding.state.set_keyless_relation(None);
            binding.state.mode = TableMode::Active;
            binding.state.scanned = None;
            binding.scanned_key = None;
            tracing::info!(table = %format!("{}.{}", binding.table.schema, binding.table.name), rows = binding.state.backfilled, "backfill completed");
        } else {
            if keyless_identity.is_some() {
                binding.state.set_keyless_relation(keyless_identity);
            }
            binding.state.scanned = Some(match plan {
                backfill::ChunkPlan::Keyless { until_block, .. } => chunk_plan::keyless_resume(*until_block),
                backfill::ChunkPlan::Keyed { .. } => {
                    let key = read.last_key.unwrap_or_default();
                    if let Some(orders) = &binding.key_orders {
                        binding.scanned_key = chunk_plan::comparable_key(orders, &key);
                    }
                    let types: Vec<Option<&PgType>> =
                        binding.key_columns.iter().map(|c| binding.table.column(c).map(|c| &c.pg_type)).collect();
                    chunk_plan::keyed_resume(&key, &types)
                }
            });
        }
        self.checkpoints.binding_changed(index);
        tracing::debug!(table = %format!("{}.{}", binding.table.schema, binding.table.name), rows = read.rows, elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX), "backfill chunk");
        Ok(())
    }
}

/// A keyless backfill's resume position is a location in the files the previous chunks
/// read. A rewrite (VACUUM FULL, CLUSTER, TRUNCATE, a table-rewriting ALTER TABLE) moved
/// every row elsewhere, so positions before it mean nothing now: what this chunk read and
/// what the next would read are no longer "the rest of the table". The only way to capture
/// every row is to start over, as a new backfill of the table would (offsets from 0, the Go
/// connector's locations for a new backfill). True: the backfill was restarted.
fn restart_if_rewritten(binding: &mut Binding, identity: &str) -> bool {
    let rewritten = binding.state.scanned.is_some()
        && binding.state.keyless_relation().is_some_and(|recorded| recorded != identity);
    if !rewritten {
        return false;
    }
    tracing::warn!(
        table = %format!("{}.{}", binding.table.schema, binding.table.name),
        rows_emitted = binding.state.backfilled,
        previous_files = binding.state.keyless_relation().unwrap_or_default(),
        files = %identity,
        "table \"{}.{}\" was rewritten during its keyless backfill (VACUUM FULL, CLUSTER, TRUNCATE or a table-rewriting ALTER TABLE), which moves every row to a new location: its backfill restarts from the beginning. The {} rows it already emitted are emitted again: documents of a keyless table are keyed by their position in the backfill (/_meta/source/loc), so in a collection reduced by its key the repeats replace the earlier documents, while the collection's history holds both",
        binding.table.schema,
        binding.table.name,
        binding.state.backfilled,
    );
    binding.state.scanned = None;
    binding.state.backfilled = 0;
    binding.state.set_keyless_relation(Some(identity.to_string()));
    true
}

/// The chunk being read: its binding, plan, and query.
struct ChunkQuery<'a> {
    index: usize,
    plan: &'a backfill::ChunkPlan,
    sql: &'a str,
    params: &'a [Option<String>],
}

/// While a chunk is read: the status timer that keeps the replication connection alive,
/// and when the chunk query last gave a sign of life (see `Session::probe_if_quiet`).
pub(super) struct ChunkWatch {
    pub(super) timer: tokio::time::Interval,
    pub(super) quiet_since: Instant,
}

impl ChunkWatch {
    pub(super) async fn start(interval: Duration) -> ChunkWatch {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the first update is due an interval from now.
        timer.tick().await;
        ChunkWatch { timer, quiet_since: Instant::now() }
    }
}

/// A chunk query's answer whose snapshot sees every delivered transaction.
struct VisibleChunk {
    rows: tokio_postgres::RowStream,
    relation: Option<RelationAnswer>,
    snapshot: Snapshot,
}

/// What reading a chunk's rows found.
pub(super) struct RowsRead {
    pub(super) rows: u64,
    /// Rows of the query that decides whether the backfill is done: the chunk's, or the
    /// last range's of a chunk read by several connections (see `parallel`).
    pub(super) tail_rows: u64,
    /// Cut by the statement timeout after some rows: the rest is the next chunk.
    pub(super) timed_out: bool,
    /// The last row's key columns as text (keyed chunks).
    pub(super) last_key: Option<Vec<Option<String>>>,
    /// Connections that read it.
    pub(super) readers: usize,
}

/// The key of a keyed chunk's row as text, each column's from where `key_cells` says: one
/// of the `key_count` key texts that lead the row, or its emitted binary cell (`emitted`:
/// the table's emitted columns, `backfill::emitted_columns`).
fn resume_key(
    row: &tokio_postgres::Row,
    key_cells: &[KeyCell],
    key_count: usize,
    emitted: &[usize],
    table: &DiscoveredTable,
) -> Result<Vec<Option<String>>, Error> {
    let mut texts = 0..key_count;
    key_cells
        .iter()
        .map(|cell| match cell {
            KeyCell::Text => {
                let i = texts.next().ok_or_else(|| Error::Internal("fewer key texts than key columns".into()))?;
                let text = row.try_get::<_, Option<&str>>(i).map_err(|err| backfill_error(table, err))?;
                Ok(text.map(str::to_string))
            }
            KeyCell::Emitted { position, codec } => {
                let i = key_count + position;
                let cell = row.try_get::<_, Option<RawText<'_>>>(i).map_err(|err| backfill_error(table, err))?;
                let column = emitted.get(*position).map(|c| &table.columns[*c]);
                let column = column.ok_or_else(|| Error::Internal("a key cell past the emitted columns".into()))?;
                let Some(RawText(raw)) = cell else { return Ok(None) };
                let name = format!("{}.{}", table.schema, table.name);
                match codec.text_output(&column.pg_type, raw).map_err(|err| value_error(&name, err))? {
                    Some(text) => Ok(Some(text)),
                    None => Err(Error::Internal(format!("the key column {:?} has no exact text", column.name))),
                }
            }
        })
        .collect()
}

/// A result cell as the raw bytes the server sent: a text column's UTF-8 bytes (the value
/// encoder checks them, so decoding to `&str` first would validate every byte twice), or
/// the binary send form of a column read in binary.
pub(super) struct RawText<'a>(pub(super) &'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for RawText<'a> {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawText(raw))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// Whether a query named a column that does not exist (SQLSTATE 42703): the table changed
/// since its columns were read.
pub(super) fn is_column_gone(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN)
}

pub(super) fn column_names(table: &DiscoveredTable) -> Vec<&str> {
    table.columns.iter().map(|c| c.name.as_str()).collect()
}

/// Whether a query was cancelled by `statement_timeout` (SQLSTATE 57014).
pub(super) fn is_statement_timeout(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
}

pub(super) fn backfill_error(table: &DiscoveredTable, err: tokio_postgres::Error) -> Error {
    let err = PgError::from(err);
    Error::user(
        format!("backfill query of table \"{}.{}\" failed: {err}", table.schema, table.name),
        err.hint().unwrap_or_else(|| {
            "check that the capture user can SELECT the table and that any additional_backfill_filter is valid SQL"
                .into()
        }),
    )
}
