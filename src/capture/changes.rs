//! The replication half of the session: pgoutput frames in, change documents out.
//!
//! Every frame goes through the pure decoder ([`crate::replication::pgoutput`]); nothing
//! here parses bytes. Keepalives may advance the cursor when no transaction is open. A
//! transaction's BEGIN, changes and COMMIT arrive in order and its documents are emitted as
//! they come, so memory does not grow with the transaction; the checkpoint after its COMMIT
//! is what makes them durable. With protocol 2 and up, the server may stream a large
//! transaction while it is still in progress: those blocks are spilled to disk ([`spill`])
//! and replayed at their commit, or dropped at their abort.
//!
//! A change becomes a document through its table's binding: relation messages record each
//! table's columns and types (partitions map to the bound root), a backfilling binding
//! filters out changes beyond its resume key (precise mode) and records the transaction
//! for the chunk visibility check ([`visibility`]), a key change becomes a delete of the old
//! key and a create of the new one, and unchanged TOAST values are omitted (the collection's
//! merge reduction keeps the stored value) unless the old tuple carries them: a full old row
//! carries every column, an old key the unchanged out-of-line key columns.
//!
//! Every document carries its collection key. A change that arrives without it (a replica
//! identity that leaves key columns out, an unchanged out-of-line key with no old key, a
//! column list without the key) fails the capture with the cause and the fix, except while
//! the binding's backfill has read nothing yet: that backfill reads every row's current
//! state, so the change is dropped (which is how a re-backfill gets past such changes).
//!
//! A key change under `REPLICA IDENTITY DEFAULT` cannot carry the unchanged TOAST values
//! over to the new key's document (merge works within a key), so they are read from the
//! table with a point query by the replica identity ([`current_values`]); the row's current
//! state may be newer than the change, which merge reductions absorb because every later
//! change of the row follows in the stream.
//!
//! The decisions are pure and live apart, each with its unit tests: [`transactions`] says
//! which transaction a message belongs to (and what to spill, replay or discard),
//! [`relations`] builds the relation cache's entries, and [`change_plan`] filters changes
//! for a precise backfill and says which documents a change becomes. This file does the IO
//! around them: catalog reads, the spill, the current-values lookup, emitting.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::Client;

use super::change_plan::{
    missing_key_error, plan_documents, sides_to_emit, unresent_toast_positions, write_documents, written_watermark,
    ChangeKind, Plan, PreciseBackfill,
};
use super::document::{EncodedRow, Source};
use super::relations::{BoundKeys, IdentityGap, RelationEntry};
use super::state::TableMode;
use super::status::StatusReporter;
use super::transactions::{Step, Transaction, TransactionAssembler};
use super::visibility::Snapshot;
use super::{backfill, lsn_i64, pg, value_error, with_deadline, Binding, Session};
use crate::error::Error;
use crate::failpoint::{self, Failpoint};
use crate::lsn::Lsn;
use crate::pg::quote_identifier;
use crate::pg::replication::{ReplicationFrame, ReplicationStream};
use crate::replication::pgoutput::{self, LogicalMessage, OldTuple, TupleData, TupleValue};
use crate::value;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    pub(super) async fn on_frame(
        &mut self,
        frame: Option<ReplicationFrame>,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        self.status.answered();
        match frame {
            None => Err(Error::user(
                "the server ended the replication stream",
                "check the server log: the slot may have been dropped or the server shut down",
            )),
            Some(ReplicationFrame::Keepalive { wal_end, reply_requested, .. }) => {
                // An idle position: nothing of ours is in flight below `wal_end`, so it can
                // become the cursor (and, once acknowledged, the slot's confirmed position).
                let between_transactions = self.transactions.is_idle();
                self.checkpoints.on_keepalive(wal_end, between_transactions);
                let before = self.fence.reached();
                self.fence.on_keepalive(wal_end, between_transactions);
                if !before && self.fence.reached() {
                    // Only a WAL-position fence is passed by a keepalive.
                    self.checkpoints.on_fence_passed_idle(wal_end);
                }
                if reply_requested {
                    self.send_status(stream, false).await?;
                }
                Ok(())
            }
            Some(ReplicationFrame::XLogData { wal_start, wal_end, data, .. }) => {
                self.checkpoints.on_data(wal_start, wal_end);
                let context = self.transactions.decode_context(self.protocol_version);
                let message = pgoutput::decode_message(&data, &context).map_err(|err| {
                    Error::Internal(format!("cannot decode a pgoutput message at {wal_start}: {err}"))
                })?;
                match self.transactions.step(&message)? {
                    Step::Spill { top_xid, xid } => self.spill.push(top_xid, wal_start, xid, &data).map_err(|err| {
                        Error::Internal(format!("buffering streamed transaction {top_xid} failed: {err}"))
                    }),
                    Step::Nothing => Ok(()),
                    Step::Discard { xid, subxid } => {
                        self.spill.abort(xid, subxid);
                        Ok(())
                    }
                    Step::Commit { end_lsn } => {
                        self.on_commit(end_lsn);
                        Ok(())
                    }
                    Step::Replay(transaction) => self.replay_streamed(transaction, stream).await,
                    step @ (Step::Relation | Step::Truncate | Step::Change(_)) => {
                        self.apply(step, message, wal_start, stream).await
                    }
                }
            }
        }
    }

    /// Replay a committed streamed transaction from the spill, then commit it.
    async fn replay_streamed(&mut self, transaction: Transaction, stream: &mut ReplicationStream) -> Result<(), Error> {
        let xid = transaction.xid;
        let failed = |err: std::io::Error| Error::Internal(format!("reading streamed transaction {xid} failed: {err}"));
        let mut replay = self.spill.take(xid).map_err(failed)?;
        let context = TransactionAssembler::replay_context(self.protocol_version);
        while let Some(spilled) = replay.next_message().map_err(failed)? {
            let message = pgoutput::decode_message(&spilled.payload, &context)
                .map_err(|err| Error::Internal(format!("cannot decode a buffered pgoutput message: {err}")))?;
            let step = self.transactions.step(&message)?;
            self.apply(step, message, spilled.wal_start, stream).await?;
            // Replaying a huge transaction takes a while: keep the walsender, which
            // waits for our replies, from timing the connection out meanwhile.
            let confirmable = self.checkpoints.confirmable();
            self.status.send_if_due(stream, confirmable).await?;
        }
        let end_lsn = self.transactions.finish_replay()?;
        self.on_commit(end_lsn);
        Ok(())
    }

    /// Apply a Relation message, a TRUNCATE or a change (live, or replayed from the spill).
    async fn apply(
        &mut self,
        step: Step,
        message: LogicalMessage<'_>,
        wal_start: Lsn,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        match (step, message) {
            (Step::Relation, LogicalMessage::Relation(relation)) => self.on_relation(relation).await,
            (Step::Truncate, LogicalMessage::Truncate(truncate)) => {
                self.on_truncate(&truncate.relation_oids, wal_start)
            }
            (Step::Change(transaction), LogicalMessage::Insert(insert)) => {
                let change = ChangeKind::Insert { new: &insert.new };
                self.on_change(transaction, insert.relation_oid, wal_start, change, stream).await
            }
            (Step::Change(transaction), LogicalMessage::Update(update)) => {
                let change = ChangeKind::Update { old: update.old.as_ref(), new: &update.new };
                self.on_change(transaction, update.relation_oid, wal_start, change, stream).await
            }
            (Step::Change(transaction), LogicalMessage::Delete(delete)) => {
                let change = ChangeKind::Delete { old: &delete.old };
                self.on_change(transaction, delete.relation_oid, wal_start, change, stream).await
            }
            (step, message) => Err(Error::Internal(format!("cannot apply {message:?} as {step:?}"))),
        }
    }

    fn on_truncate(&self, relation_oids: &[u32], wal_start: Lsn) -> Result<(), Error> {
        for oid in relation_oids {
            if let Some(relation) = self.relations.get(oid) {
                if let Some(binding) = relation.binding {
                    if self.truncate_is_fatal(binding) {
                        return Err(super::truncate_error(&relation.namespace, &relation.name, wal_start));
                    }
                    tracing::warn!(
                        table = %format!("{}.{}", relation.namespace, relation.name),
                        "TRUNCATE is not captured: rows captured before it stay in the collection; increment the binding's backfill counter to re-backfill the table"
                    );
                }
            }
        }
        Ok(())
    }

    fn on_commit(&mut self, end_lsn: Lsn) {
        self.checkpoints.on_commit(end_lsn, Instant::now());
        self.fence.on_commit(end_lsn);
    }

    async fn on_relation(&mut self, relation: pgoutput::Relation<'_>) -> Result<(), Error> {
        let oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
        if !self.registry.knows_all(&oids) {
            let limit = self.silence_limit();
            with_deadline(limit, "reading column types", self.registry.extend(&self.client, &oids))
                .await?
                .map_err(pg)?;
        }
        let mut binding = self.by_table.get(&(relation.namespace.to_string(), relation.name.to_string())).copied();
        if binding.is_none() {
            // A partition published on its own while its root is captured.
            binding = self.bound_ancestor(relation.oid).await?;
        }
        let column_names: Vec<&str> = relation.columns.iter().map(|c| c.name).collect();
        if let Some(b) = binding {
            self.follow_announced_columns(b, &relation, &column_names).await?;
        }
        let types = relation.columns.iter().map(|c| self.registry.resolve(c.type_oid, c.type_modifier)).collect();
        let bound = binding.map(|index| {
            let binding = &self.bindings[index];
            BoundKeys { index, key_columns: &binding.key_columns, document_key: &binding.document_key }
        });
        let watermarks = (self.config.watermarks_schema.as_str(), self.config.watermarks_table.as_str());
        let entry = RelationEntry::new(&relation, types, bound, watermarks, &self.config.formats);
        self.check_publication_on_relation(relation.oid, binding, column_names.len()).await?;
        self.relations.insert(relation.oid, entry);
        Ok(())
    }

    /// A Relation message announces a table's columns, after they changed among others.
    /// Two things may need the table described again, and one catalog query serves both:
    /// - a backfilling table's chunk queries name its columns as they were read when the
    ///   session started: a column added since would be missing from the rows the backfill
    ///   reads after this, while a precise backfill drops the changes (which carry it) of rows
    ///   it has not read yet. So the backfill follows the current columns, and chunk queries
    ///   built before are not used;
    /// - with sourced schemas, new or retyped columns must never reach the collection
    ///   without a schema (see [`super::sourced`]).
    async fn follow_announced_columns(
        &mut self,
        index: usize,
        relation: &pgoutput::Relation<'_>,
        announced: &[&str],
    ) -> Result<(), Error> {
        let binding = &self.bindings[index];
        let backfill_follows = binding.state.mode.is_backfilling()
            && !binding
                .table
                .columns
                .iter()
                .filter(|c| !c.generated)
                .map(|c| c.name.as_str())
                .eq(announced.iter().copied());
        let typed = relation.columns.iter().map(|c| (c.name.to_string(), c.type_oid, c.type_modifier)).collect();
        let schema_follows = self.sourced.announcement_differs(index, typed, &self.bindings[index].table);
        if !(backfill_follows || schema_follows) {
            return Ok(());
        }
        self.describe_again(index, "reading a table's columns again").await?;
        if backfill_follows {
            let table = &self.bindings[index].table;
            tracing::info!(
                table = %format!("{}.{}", table.schema, table.name),
                columns = ?table.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                "the table's columns changed during its backfill: the backfill reads the current columns"
            );
        }
        Ok(())
    }

    async fn bound_ancestor(&self, oid: u32) -> Result<Option<usize>, Error> {
        let rows = self
            .sql_deadline(
                "looking up a partition's root",
                self.client.query(
                    "SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_ancestors($1::oid::regclass) a
                     JOIN pg_catalog.pg_class c ON c.oid = a.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
                    &[&oid],
                ),
            )
            .await?
            // A relation dropped since the change was written has no ancestors (no rows, no
            // error). A failure is not "unbound": that would skip the partition's changes
            // while the cursor moves past them. Failing restarts the capture from its last
            // checkpoint, and the question is asked again.
            .map_err(pg)?;
        Ok(rows.iter().find_map(|row| self.by_table.get(&(row.get::<_, String>(0), row.get::<_, String>(1))).copied()))
    }

    async fn on_change(
        &mut self,
        transaction: Transaction,
        relation_oid: u32,
        wal_start: Lsn,
        change: ChangeKind<'_, '_>,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        if self.delivered.len() >= self.delivered_check_at {
            self.forget_visible_deliveries().await?;
        }
        let Some(binding_index) = self.route_change(relation_oid, &change, transaction.xid)? else {
            return Ok(());
        };
        let limit = self.silence_limit();
        let relation = self.relations.of_change(relation_oid)?;
        check_tuple_widths(relation, &change)?;
        let binding = &self.bindings[binding_index];
        // A backfill that has not read a row yet will read every row's current state, with
        // a snapshot that sees this transaction (see `visibility`). A change that cannot be
        // matched to its document (its key is missing) is then covered by the backfill and
        // dropped; this is also how a capture gets past such changes once the table is fixed
        // and its binding re-backfilled. Anywhere else the capture fails rather than emit a
        // document without its key.
        let backfill_covers = binding.state.mode.is_backfilling() && binding.state.scanned.is_none();
        if let (Some(gap), false) = (&relation.identity_gap, matches!(change, ChangeKind::Insert { .. })) {
            if backfill_covers {
                return Ok(());
            }
            return Err(identity_gap_error(gap, &self.client, relation_oid, relation).await);
        }
        let sides = sides_to_emit(precise_backfill(binding), &relation.key_positions, &change);
        let table_name = || format!("{}.{}", relation.namespace, relation.name);
        let plan =
            plan_documents(&mut self.row, &mut self.old_row, relation, binding.keyed_by_location, &change, sides)
                .map_err(|e| value_error(&table_name(), e))?;
        match plan {
            Plan::Skip => return Ok(()),
            // The change cannot be placed: covered by the backfill, or the capture fails.
            Plan::KeyMissing { .. } if backfill_covers => return Ok(()),
            Plan::KeyMissing { column, cause } => return Err(missing_key_error(relation, column, cause)),
            Plan::KeyChange { create_new: true, .. } => {
                if let ChangeKind::Update { old, new } = change {
                    let old = old.map(|(OldTuple::Key(t) | OldTuple::Full(t))| t);
                    let moved = MovedRow { relation, relation_oid, new, old, xid: transaction.xid };
                    let mut lookup = RowLookup {
                        client: &self.client,
                        status: &mut self.status,
                        stream: &mut *stream,
                        confirmable: self.checkpoints.confirmable(),
                        limit,
                        toast_warnings: &mut self.toast_warnings,
                    };
                    lookup.fill_unresent_toast(&moved, &mut self.row).await?;
                }
            }
            Plan::Create | Plan::Update { .. } | Plan::Delete | Plan::KeyChange { .. } => {}
        }
        let loc = [lsn_i64(self.checkpoints.cursor()), lsn_i64(wal_start), lsn_i64(transaction.final_lsn)];
        let source = change_source(binding, transaction, loc, self.source_tag.as_deref());
        let old_key_delete = write_documents(&mut self.document, relation, (&self.row, &self.old_row), plan, &source);
        if let Some(delete) = old_key_delete {
            self.emit_old_key_delete(binding_index, &delete, stream).await?;
        }
        if self.document.is_empty() {
            return Ok(());
        }
        self.emit(binding_index, stream).await?;
        if failpoint::fires(Failpoint::MidTransaction) {
            let _ = self.emitter.flush().await;
            failpoint::exit(Failpoint::MidTransaction);
        }
        Ok(())
    }

    /// The binding whose collection a change of `relation_oid` goes to, if it is captured:
    /// not for the watermarks table (whose change may be the awaited watermark), a table
    /// without a binding (counted), or a binding not (yet) captured. A backfilling binding
    /// records the change's transaction, whether the change is emitted or dropped: the
    /// chunk that reads its row later must see it (see `visibility`).
    fn route_change(
        &mut self,
        relation_oid: u32,
        change: &ChangeKind<'_, '_>,
        xid: u32,
    ) -> Result<Option<usize>, Error> {
        let relation = self.relations.of_change(relation_oid)?;
        if relation.is_watermarks {
            if let Some(value) = written_watermark(relation, change) {
                self.fence.saw(value);
            }
            return Ok(None);
        }
        let Some(binding_index) = relation.binding else {
            *self.skipped_changes.entry(format!("{}.{}", relation.namespace, relation.name)).or_default() += 1;
            return Ok(None);
        };
        let mode = self.bindings[binding_index].state.mode;
        if matches!(mode, TableMode::Pending | TableMode::Ignore | TableMode::Missing) {
            return Ok(None);
        }
        if mode.is_backfilling() {
            self.delivered.record(xid);
        }
        Ok(Some(binding_index))
    }

    /// Emit the delete of the old key's document of a row whose key changed (before the
    /// new key's create).
    async fn emit_old_key_delete(
        &mut self,
        binding_index: usize,
        delete: &[u8],
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        let index = u32::try_from(binding_index).map_err(|_| Error::Internal("binding index overflows u32".into()))?;
        let confirmable = self.checkpoints.confirmable();
        self.status.during(stream, confirmable, self.emitter.captured(index, delete)).await?;
        self.checkpoints.on_document();
        Ok(())
    }
}

/// The precise backfill of `binding`, when it is one (and its keys compare exactly).
fn precise_backfill(binding: &Binding) -> Option<PreciseBackfill<'_>> {
    match (binding.state.mode, &binding.key_orders) {
        (TableMode::Backfill, Some(orders)) => {
            Some(PreciseBackfill { orders, scanned: binding.scanned_key.as_deref() })
        }
        _ => None,
    }
}

/// The `_meta/source` of a change of `binding`'s table in `transaction`, at `loc` (the
/// cursor, the change's LSN, the commit's).
fn change_source<'a>(
    binding: &'a Binding,
    transaction: Transaction,
    loc: [i64; 3],
    tag: Option<&'a str>,
) -> Source<'a> {
    Source {
        ts_ms: Some((transaction.commit_time_us + POSTGRES_EPOCH_MICROS) / 1000),
        schema: &binding.table.schema,
        table: &binding.table.name,
        snapshot: false,
        loc,
        txid: Some(transaction.xid),
        tag,
    }
}

/// A row whose key changed, whose new key's document needs the values the server did not
/// resend (see [`unresent_toast_positions`]).
struct MovedRow<'a> {
    relation: &'a RelationEntry,
    relation_oid: u32,
    new: &'a TupleData<'a>,
    old: Option<&'a TupleData<'a>>,
    /// The change's transaction: the lookup waits until queries see it.
    xid: u32,
}

/// What reading a moved row's current values needs of the session.
struct RowLookup<'a> {
    client: &'a Client,
    /// Keep-alive updates while the lookup runs, reporting `confirmable`.
    status: &'a mut StatusReporter,
    stream: &'a mut ReplicationStream,
    confirmable: Lsn,
    limit: Duration,
    /// Tables already warned about key changes that lost unchanged TOAST values.
    toast_warnings: &'a mut BTreeSet<u32>,
}

impl RowLookup<'_> {
    /// Fill `row` (the new key's) with the current values of the columns the server did not
    /// resend, read from the table by the replica identity; warn once per table when the
    /// row cannot be looked up.
    async fn fill_unresent_toast(&mut self, moved: &MovedRow<'_>, row: &mut EncodedRow) -> Result<(), Error> {
        let missing = unresent_toast_positions(moved.new, row);
        if missing.is_empty() {
            return Ok(());
        }
        let table = format!("{}.{}", moved.relation.namespace, moved.relation.name);
        match current_values_query(moved.relation, moved.new, moved.old, &missing) {
            Some((sql, params)) => {
                let lookup = current_values(self.client, &sql, &params, moved.xid, self.limit);
                let current = self.status.around(self.stream, self.confirmable, lookup).await?;
                // Row gone (deleted or moved on since): the stream carries that change after
                // this one, so the document needs nothing.
                if let Some(values) = current {
                    fill_current_values(row, moved.relation, &missing, &values, &table);
                }
            }
            None => {
                if self.toast_warnings.insert(moved.relation_oid) {
                    tracing::warn!(
                        table = %table,
                        "a primary-key change left unchanged TOAST columns without a value, and the row cannot be looked up by its replica identity; set REPLICA IDENTITY FULL on the table so that the old row carries them"
                    );
                }
            }
        }
        Ok(())
    }
}

/// Every tuple of a change carries one value per column of the Relation message that
/// announced its relation. Encoding pairs values with columns by position, so a tuple of
/// another width would silently lose (or misplace) values: that is a stream the relation
/// cache does not describe, and the capture fails (and restarts from its last checkpoint,
/// with a fresh cache) rather than emit such documents.
fn check_tuple_widths(relation: &RelationEntry, change: &ChangeKind<'_, '_>) -> Result<(), Error> {
    let tuples: [Option<&TupleData<'_>>; 2] = match change {
        ChangeKind::Insert { new } => [Some(new), None],
        ChangeKind::Update { old, new } => [Some(new), old.map(|(OldTuple::Key(t) | OldTuple::Full(t))| t)],
        ChangeKind::Delete { old: OldTuple::Key(t) | OldTuple::Full(t) } => [Some(t), None],
    };
    for tuple in tuples.into_iter().flatten() {
        if tuple.values.len() != relation.types.len() {
            return Err(Error::Internal(format!(
                "a change of table \"{}.{}\" carries {} values, but its Relation message announced {} columns",
                relation.namespace,
                relation.name,
                tuple.values.len(),
                relation.types.len()
            )));
        }
    }
    Ok(())
}

/// The error that ends the capture when `relation`'s replica identity leaves out key
/// columns, naming the identity's index (looked up now: the replication stream names only
/// its columns).
async fn identity_gap_error(gap: &IdentityGap, client: &Client, relation_oid: u32, relation: &RelationEntry) -> Error {
    let index = if gap.using_index {
        let params: [&(dyn ToSql + Sync); 1] = [&relation_oid];
        let lookup = client.query_opt(
            "SELECT c.relname::text FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = $1 AND i.indisreplident",
            &params,
        );
        match tokio::time::timeout(Duration::from_secs(10), lookup).await {
            Ok(Ok(Some(row))) => row.try_get::<_, String>(0).ok(),
            _ => None,
        }
    } else {
        None
    };
    gap.describe(relation, index.as_deref())
}

/// The query that reads the current values of columns `missing` of the row a change left at
/// its new key, by the relation's replica identity (unique, and always sent: changed
/// values from the new row, unchanged ones from the old key), and its parameters. It always
/// answers one row: the statement's snapshot, then `true` and the values if the row exists.
/// `None` when the identity's values are not all known.
fn current_values_query(
    relation: &RelationEntry,
    new: &TupleData<'_>,
    old: Option<&TupleData<'_>>,
    missing: &[usize],
) -> Option<(String, Vec<Vec<u8>>)> {
    if relation.identity_positions.is_empty() {
        return None;
    }
    let mut params = Vec::with_capacity(relation.identity_positions.len());
    let mut conditions = Vec::with_capacity(relation.identity_positions.len());
    for (i, position) in relation.identity_positions.iter().enumerate() {
        let value = match new.values.get(*position)? {
            TupleValue::Text(text) => *text,
            TupleValue::UnchangedToast => match old?.values.get(*position)? {
                TupleValue::Text(text) => *text,
                _ => return None,
            },
            TupleValue::Null | TupleValue::Binary(_) => return None,
        };
        params.push(value.to_vec());
        conditions.push(format!("src.{} = ${}", quote_identifier(relation.columns.get(*position)?), i + 1));
    }
    let mut select = Vec::with_capacity(missing.len());
    for (i, position) in missing.iter().enumerate() {
        let column = format!("src.{}", quote_identifier(relation.columns.get(*position)?));
        select.push(format!("{} AS v{i}", backfill::text_expression(&column, relation.types.get(*position)?)));
    }
    let sql = format!(
        "SELECT pg_catalog.pg_current_snapshot()::text, r.* FROM (SELECT 1) AS one
         LEFT JOIN LATERAL (SELECT true AS found, {} FROM {}.{} AS src WHERE {} LIMIT 1) AS r ON true",
        select.join(", "),
        quote_identifier(&relation.namespace),
        quote_identifier(&relation.name),
        conditions.join(" AND ")
    );
    Some((sql, params))
}

/// Run a [`current_values_query`] once its snapshot sees transaction `xid`, the change's own
/// (it has committed, but PostgreSQL may make it visible a moment after the stream delivered
/// it). `None`: the row is not there (any more).
///
/// The values are the row's current state, which may be newer than the change: a later
/// transaction may have changed them already. That is safe under the collection's merge
/// reduction: such a transaction touched this row after the change, so it follows it in the
/// stream, and its own documents carry (or, unchanged TOAST again, keep) the values. Once
/// the stream has passed it, the reduced document equals the row again. In between (and in
/// history mode) the document can show a value from slightly later than its transaction.
async fn current_values(
    client: &Client,
    sql: &str,
    params: &[Vec<u8>],
    xid: u32,
    limit: Duration,
) -> Result<Option<Vec<Option<String>>>, Error> {
    let text: Vec<TextParam<'_>> = params.iter().map(|p| TextParam(p)).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = text.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let started = Instant::now();
    loop {
        let rows = match with_deadline(
            limit,
            "reading the current values of a row whose key changed",
            client.query(sql, &refs),
        )
        .await?
        {
            Ok(rows) => rows,
            // Dropped since: the stream says so in its own time; nothing to read.
            Err(err)
                if err.code() == Some(&SqlState::UNDEFINED_TABLE)
                    || err.code() == Some(&SqlState::UNDEFINED_COLUMN) =>
            {
                return Ok(None)
            }
            Err(err) => return Err(pg(err)),
        };
        let row = rows.first().ok_or_else(|| Error::Internal("the current values query answered no row".into()))?;
        let bad = |err: tokio_postgres::Error| Error::Internal(format!("the current values query's answer: {err}"));
        let snapshot: String = row.try_get(0).map_err(bad)?;
        let snapshot =
            Snapshot::parse(&snapshot).map_err(|err| Error::Internal(format!("the current snapshot: {err}")))?;
        if snapshot.sees_committed(xid) {
            if row.try_get::<_, Option<bool>>(1).map_err(bad)? != Some(true) {
                return Ok(None);
            }
            return (2..row.len())
                .map(|i| row.try_get::<_, Option<String>>(i).map_err(bad))
                .collect::<Result<_, _>>()
                .map(Some);
        }
        if started.elapsed() >= limit {
            return Err(Error::user(
                format!("transaction {xid} was delivered by the replication stream but is still not visible to queries after {} s", limit.as_secs()),
                "a synchronous standby may be holding commits back: check synchronous_standby_names and the standby; the capture restarts from its last checkpoint",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Encode values read by [`current_values`] into `row` at `positions`. A value that does not
/// encode (the column's type changed since the change was written) is left out, as the
/// server left it out: the merge reduction keeps what the collection has.
fn fill_current_values(
    row: &mut EncodedRow,
    relation: &RelationEntry,
    positions: &[usize],
    values: &[Option<String>],
    table: &str,
) {
    for (position, value) in positions.iter().zip(values) {
        let (Some(ty), Some(column)) = (relation.types.get(*position), relation.columns.get(*position)) else {
            continue;
        };
        match value {
            None => row.set_null(*position),
            Some(text) => {
                let start = row.bytes.len();
                match value::encode_value_with(&relation.formats, ty, text.as_bytes(), &mut row.bytes) {
                    Ok(()) => row.finish_value(*position, start),
                    Err(err) => {
                        row.bytes.truncate(start);
                        tracing::warn!(table = %table, column = %column, error = %err, "the current value of a column of a row whose key changed could not be encoded; it is left out");
                    }
                }
            }
        }
    }
}

/// A bind parameter sent in text format. The server reads it with the input function of
/// the type it infers for the parameter (the column it is compared with), so a value taken
/// from the replication stream, which is that type's output, round-trips exactly, and no
/// type name has to go into the SQL text.
#[derive(Debug)]
struct TextParam<'a>(&'a [u8]);

impl ToSql for TextParam<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::change_plan::tests::{relation, tuple};
    use crate::replication::pgoutput::ReplicaIdentity;

    #[test]
    fn current_values_are_read_by_the_replica_identity_with_quoted_names_and_parameters() {
        let entry = relation(ReplicaIdentity::Default, &["id", "code"]);
        let new = tuple(&[
            TupleValue::Text(b"8"),
            TupleValue::UnchangedToast,
            TupleValue::UnchangedToast,
            TupleValue::UnchangedToast,
        ]);
        let old = tuple(&[TupleValue::Text(b"7"), TupleValue::Text(b"c'; --"), TupleValue::Null, TupleValue::Null]);
        let (sql, params) = current_values_query(&entry, &new, Some(&old), &[2, 3]).expect("a query");
        assert_eq!(
            sql.split_whitespace().collect::<Vec<_>>().join(" "),
            "SELECT pg_catalog.pg_current_snapshot()::text, r.* FROM (SELECT 1) AS one LEFT JOIN LATERAL \
             (SELECT true AS found, src.\"big\"::text AS v0, CASE WHEN src.\"doc\" IS NULL THEN NULL ELSE pg_catalog.format('%s', src.\"doc\") END AS v1 \
             FROM \"we\"\"ird\".\"t\" AS src WHERE src.\"id\" = $1 AND src.\"code\" = $2 LIMIT 1) AS r ON true"
        );
        assert_eq!(params, [b"8".to_vec(), b"c'; --".to_vec()]);
        // An identity value that is not known: no query.
        assert_eq!(current_values_query(&entry, &new, None, &[2]), None);
        let keyless = relation(ReplicaIdentity::Default, &[]);
        assert_eq!(current_values_query(&keyless, &new, Some(&old), &[2]), None);
    }
}
