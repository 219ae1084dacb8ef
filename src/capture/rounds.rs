//! Backfill rounds: which chunks share a fence, what is prepared before they are read,
//! which chunk query is sent ahead, and the progress reported meanwhile.
//!
//! A round reads back-to-back chunks of several tables of the same priority until one
//! chunk's worth of rows is read (or [`MAX_TABLES_PER_FENCE`] tables, or
//! [`MAX_ROUND_TIME`]), then the session writes one watermark for all of them: many small
//! tables cost one fence per chunk's worth of rows instead of one each. The next table's
//! chunk query is sent behind the current one (the backfill connection answers pipelined
//! queries in order), and after the round's watermark the next round's first query is sent
//! ahead, to run while the stream catches up to the fence. The chunks themselves are read
//! in [`super::chunks`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;

use super::chunk_query::run_chunk_query;
use super::state::TableMode;
use super::visibility::Snapshot;
use super::{backfill, pg, snapshot_of, with_deadline, Binding, PrefetchedChunk, Session, DELIVERED_XIDS_CHECK_AT};
use crate::error::Error;
use crate::pg::replication::ReplicationStream;

/// Bounds of a backfill round (chunks of several tables sharing one fence).
const MAX_TABLES_PER_FENCE: usize = 100;
const MAX_ROUND_TIME: Duration = Duration::from_secs(5);

impl<W: AsyncWrite + Unpin> Session<'_, W> {
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
    pub(super) async fn backfill_round(
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
        self.close_unneeded_readers();
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
            self.bindings[index].chunk_undo = None;
            let readers = self.backfill_readers(index);
            let result = if readers > 1 {
                // Its ranges are read by several connections at once (see `parallel`): a
                // query sent ahead of it is not one of them.
                if let Some(stale) = prefetched.take() {
                    stale.query.abort();
                    let _ = stale.query.await;
                }
                self.backfill_parallel(index, readers, stream).await
            } else {
                // This chunk's query goes out first: the backfill connection answers
                // pipelined queries in order, so a query queued ahead of it whose rows
                // nobody reads yet would block it for good.
                let current = match prefetched.take() {
                    Some(p) if p.index == index => Some(p),
                    other => {
                        if let Some(stale) = other {
                            stale.query.abort();
                        }
                        self.start_chunk_query(index).await?
                    }
                };
                // Then the query of the table likely to come next, behind it
                // (`backfill_chunk` sends it once this chunk's query is under way), so small
                // tables do not each wait for a round trip. Its snapshot still follows the
                // previous fence; if the round ends instead, it is dropped, never carried
                // past the fence. A table read by several connections gets none.
                let next = next_in_round(&self.bindings, &read, index)
                    .filter(|i| read.len() + 1 < MAX_TABLES_PER_FENCE && self.backfill_readers(*i) == 1);
                self.backfill_chunk(index, current, next, stream).await
            };
            if let Err(err) = result {
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
    pub(super) fn next_backfill(&self) -> Option<usize> {
        self.bindings
            .iter()
            .enumerate()
            .filter(|(_, b)| b.state.mode.is_backfilling())
            .max_by(|(ia, a), (ib, b)| a.resource.priority.cmp(&b.resource.priority).then(ib.cmp(ia)))
            .map(|(i, _)| i)
    }

    /// A status line for the UI (and the local runner's progress bar), at most every few
    /// seconds: tables done, rows read, an estimate of the rows to read, and the rate.
    pub(super) fn report_backfill_status(&mut self, force: bool) {
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

    /// Forget the delivered transactions that a fresh snapshot sees (every later snapshot
    /// sees them too), so that a long catch-up does not grow the set without bound.
    pub(super) async fn forget_visible_deliveries(&mut self) -> Result<(), Error> {
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
    pub(super) async fn current_snapshot(&self) -> Result<Snapshot, Error> {
        let rows = self
            .sql_deadline(
                "reading the current snapshot",
                self.client.simple_query("SELECT pg_current_snapshot()::text"),
            )
            .await?
            .map_err(pg)?;
        snapshot_of(&rows)
    }

    /// Prepare the backfill query details of every backfilling binding that lacks them, in
    /// two catalog queries rather than two per table (which dominated the backfill of many
    /// small tables). `prepare_backfill` then finds them ready.
    pub(super) async fn prepare_backfills(&mut self) -> Result<(), Error> {
        let need_estimate: Vec<u32> = self
            .bindings
            .iter()
            .filter(|b| b.state.mode.is_backfilling() && b.estimated_rows.is_none())
            .map(|b| b.table.oid)
            .collect();
        let need_types: Vec<u32> = self
            .bindings
            .iter()
            .filter(|b| {
                b.state.mode.is_backfilling() && b.state.mode != TableMode::KeylessBackfill && b.key_types.is_none()
            })
            .map(|b| b.table.oid)
            .collect();
        if !need_estimate.is_empty() {
            let rows = self
                .sql_deadline(
                    "estimating table sizes",
                    self.client.query(backfill::TABLE_ROWS_ESTIMATE_BATCH_SQL, &[&need_estimate]),
                )
                .await?
                .map_err(pg)?;
            let estimates: BTreeMap<u32, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            for binding in self.bindings.iter_mut().filter(|b| b.estimated_rows.is_none()) {
                if let Some(estimate) = estimates.get(&binding.table.oid) {
                    binding.estimated_rows = Some(u64::try_from(*estimate).unwrap_or(0));
                }
            }
        }
        if need_types.len() > 1 {
            let rows = self
                .sql_deadline(
                    "reading key column types",
                    self.client.query(backfill::COLUMN_TYPES_BATCH_SQL, &[&need_types]),
                )
                .await?
                .map_err(pg)?;
            let mut types: BTreeMap<u32, BTreeMap<String, (String, String)>> = BTreeMap::new();
            for row in &rows {
                types.entry(row.get(0)).or_default().insert(row.get(1), (row.get(2), row.get(3)));
            }
            for binding in self.bindings.iter_mut().filter(|b| b.state.mode.is_backfilling() && b.key_types.is_none()) {
                // A table missing here (dropped since) or a missing key column is left for
                // `prepare_backfill`, which reports it.
                let Some(columns) = types.get(&binding.table.oid) else { continue };
                let key_types: Option<Vec<(String, String)>> =
                    binding.key_columns.iter().map(|c| columns.get(c).cloned()).collect();
                binding.key_signature = key_types.as_ref().map(|t| t.iter().map(|(_, s)| s.clone()).collect());
                binding.key_types = key_types.map(|t| t.into_iter().map(|(name, _)| name).collect());
            }
        }
        Ok(())
    }

    /// Prepare backfill query details of a binding.
    pub(super) async fn prepare_backfill(&mut self, index: usize) -> Result<(), Error> {
        let limit = self.silence_limit();
        let binding = &mut self.bindings[index];
        if binding.estimated_rows.is_none() {
            let row = with_deadline(
                limit,
                "estimating a table's size",
                self.client.query_one(backfill::TABLE_ROWS_ESTIMATE_SQL, &[&binding.table.oid]),
            )
            .await?
            .map_err(pg)?;
            binding.estimated_rows = Some(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
        }
        if binding.state.mode == TableMode::KeylessBackfill {
            if binding.keyless_pages.is_none() {
                let row = with_deadline(
                    limit,
                    "counting a table's partitions",
                    self.client.query_one(backfill::TABLE_LEAVES_SQL, &[&binding.table.oid]),
                )
                .await?
                .map_err(pg)?;
                binding.keyless_pages = Some(backfill::pages_per_chunk(self.config.chunk_size, row.get(0)));
            }
        } else if binding.key_types.is_none() {
            let rows = with_deadline(
                limit,
                "reading key column types",
                self.client.query(backfill::COLUMN_TYPES_SQL, &[&binding.table.oid]),
            )
            .await?
            .map_err(pg)?;
            let types: BTreeMap<String, (String, String)> =
                rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
            let mut key_types = Vec::new();
            for column in &binding.key_columns {
                key_types.push(types.get(column).cloned().ok_or_else(|| {
                    Error::user(
                        format!("key column {column:?} of table \"{}.{}\" does not exist", binding.table.schema, binding.table.name),
                        "the table changed since discovery: re-discover the capture and increment the binding's backfill counter",
                    )
                })?);
            }
            binding.key_signature = Some(key_types.iter().map(|(_, signature)| signature.clone()).collect());
            binding.key_types = Some(key_types.into_iter().map(|(name, _)| name).collect());
        }
        Ok(())
    }

    /// Start the next chunk's query on the backfill connection, to run while the stream
    /// catches up to the current fence. Must be called after that fence is set (its
    /// watermark written, or its WAL position read): the chunk's snapshot then follows the
    /// fence, so every change to its rows that the fence does not emit (they are beyond the
    /// current resume key) is either in the chunk or arrives after it. (A transaction that
    /// committed before the fence but is not visible yet to that snapshot, since visibility
    /// does not follow WAL order, is caught by the visibility check: see [`super::visibility`].)
    pub(super) async fn prefetch_next_chunk(&mut self) -> Result<Option<PrefetchedChunk>, Error> {
        let Some(index) = self.next_backfill() else { return Ok(None) };
        if self.backfill_readers(index) > 1 {
            // Read by several connections at once: see `parallel`.
            return Ok(None);
        }
        self.start_chunk_query(index).await
    }

    /// Start the next chunk query of binding `index` on the backfill connection.
    pub(super) async fn start_chunk_query(&mut self, index: usize) -> Result<Option<PrefetchedChunk>, Error> {
        self.prepare_backfill(index).await?;
        let (plan, sql, params) = self.chunk_query(index)?;
        let client = self.backfill_client.clone();
        let relation = self.relation_to_check(index);
        let sent = sql.clone();
        let table_oid = self.bindings[index].table.oid;
        let query = tokio::spawn(async move { run_chunk_query(&client, table_oid, &sent, &params, relation).await });
        Ok(Some(PrefetchedChunk { index, plan, sql, forgotten_deliveries: self.forgotten_deliveries, query }))
    }
}
