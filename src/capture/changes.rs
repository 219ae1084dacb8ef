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

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::Client;

use super::document::{self, EncodedRow, Op, Source};
use super::relations::{BoundKeys, IdentityGap, RelationEntry};
use super::spill::SpilledMessage;
use super::state::TableMode;
use super::transactions::{Step, Transaction, TransactionAssembler};
use super::visibility::Snapshot;
use super::{backfill, lsn_i64, order, pg, value_error, with_deadline, Keepalive, Session};
use crate::error::Error;
use crate::failpoint::{self, Failpoint};
use crate::lsn::Lsn;
use crate::pg::quote_identifier;
use crate::pg::replication::{ReplicationFrame, ReplicationStream};
use crate::replication::pgoutput::{self, LogicalMessage, OldTuple, TupleData, TupleValue};
use crate::validate::{display_name, qualified};
use crate::value;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    pub(super) async fn on_frame(
        &mut self,
        frame: Option<ReplicationFrame>,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        self.reply_awaited_since = None;
        match frame {
            None => Err(Error::user(
                "the server ended the replication stream",
                "check the server log: the slot may have been dropped or the server shut down",
            )),
            Some(ReplicationFrame::Keepalive { wal_end, reply_requested, .. }) => {
                self.server_flushed = self.server_flushed.max(wal_end);
                // An idle position: nothing of ours is in flight below `wal_end`, so it can
                // become the cursor (and, once acknowledged, the slot's confirmed position).
                if self.transactions.is_idle() && wal_end > self.cursor && !self.hold_checkpoints {
                    self.cursor = wal_end;
                    self.checkpoint_due = true;
                }
                if reply_requested {
                    self.send_status(stream, false).await?;
                }
                Ok(())
            }
            Some(ReplicationFrame::XLogData { wal_start, wal_end, data, .. }) => {
                self.server_wal_end = self.server_wal_end.max(wal_end);
                self.server_flushed = self.server_flushed.max(wal_end);
                self.last_message_start = wal_start;
                let context = self.transactions.decode_context(self.protocol_version);
                let message = pgoutput::decode_message(&data, &context).map_err(|err| {
                    Error::Internal(format!("cannot decode a pgoutput message at {wal_start}: {err}"))
                })?;
                match self.transactions.step(&message)? {
                    Step::Spill { top_xid, xid } => {
                        self.spill.push(top_xid, &SpilledMessage { wal_start, xid, payload: data.to_vec() }).map_err(
                            |err| Error::Internal(format!("buffering streamed transaction {top_xid} failed: {err}")),
                        )
                    }
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
            if self.last_status.elapsed() >= self.status_interval {
                self.send_status(stream, false).await?;
            }
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
        self.cursor = self.cursor.max(end_lsn);
        self.checkpoint_due = true;
        self.transactions_since_checkpoint += 1;
        if self.watermark_seen {
            self.fence_reached = true;
            self.watermark_seen = false;
        }
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
            self.follow_columns_of_backfilling_table(b, &column_names).await?;
        }
        let types = relation.columns.iter().map(|c| self.registry.resolve(c.type_oid, c.type_modifier)).collect();
        let bound = binding.map(|index| {
            let binding = &self.bindings[index];
            BoundKeys { index, key_columns: &binding.key_columns, document_key: &binding.document_key }
        });
        let watermarks = (self.config.watermarks_schema.as_str(), self.config.watermarks_table.as_str());
        let entry = RelationEntry::new(&relation, types, bound, watermarks);
        self.check_publication_on_relation(relation.oid, binding, column_names.len()).await?;
        self.relations.insert(relation.oid, entry);
        Ok(())
    }

    /// A Relation message announces a table's columns after they changed. A backfilling
    /// table's chunk queries name its columns as they were read when the session started: a
    /// column added since would be missing from the rows the backfill reads after this, while
    /// a precise backfill drops the changes (which carry it) of rows it has not read yet. So
    /// the backfill follows: the table's columns are read again from the catalog (the current
    /// ones, which a chunk query reads), and chunk queries built before are not used.
    async fn follow_columns_of_backfilling_table(&mut self, index: usize, announced: &[&str]) -> Result<(), Error> {
        let binding = &self.bindings[index];
        if !binding.state.mode.is_backfilling() {
            return Ok(());
        }
        let emitted: Vec<&str> =
            binding.table.columns.iter().filter(|c| !c.generated).map(|c| c.name.as_str()).collect();
        if emitted == announced {
            return Ok(());
        }
        let name = (binding.table.schema.clone(), binding.table.name.clone());
        let only = std::collections::BTreeSet::from([name.clone()]);
        let described = self
            .sql_deadline(
                "reading a backfilling table's columns again",
                crate::discovery::discover_tables(&self.client, &self.config, Some(&only)),
            )
            .await??;
        let binding = &mut self.bindings[index];
        if let Some(fresh) = described.into_iter().find(|t| t.oid == binding.table.oid) {
            tracing::info!(
                table = %format!("{}.{}", name.0, name.1),
                columns = ?fresh.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                "the table's columns changed during its backfill: the backfill reads the current columns"
            );
            binding.table.columns = fresh.columns;
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
        let Some(relation) = self.relations.get(&relation_oid) else {
            return Err(Error::Internal(format!(
                "a change arrived for relation {relation_oid} before its Relation message"
            )));
        };
        if relation.is_watermarks {
            if let (ChangeKind::Insert { new } | ChangeKind::Update { new, .. }, Some(position)) =
                (&change, relation.watermark_position)
            {
                if let (Some(TupleValue::Text(value)), Some(expected)) =
                    (new.values.get(position), &self.pending_watermark)
                {
                    if *value == expected.as_bytes() {
                        self.watermark_seen = true;
                    }
                }
            }
            return Ok(());
        }
        let Some(binding_index) = relation.binding else {
            *self.skipped_changes.entry(format!("{}.{}", relation.namespace, relation.name)).or_default() += 1;
            return Ok(());
        };
        let binding = &self.bindings[binding_index];
        if matches!(binding.state.mode, TableMode::Pending | TableMode::Ignore | TableMode::Missing) {
            return Ok(());
        }
        // Whether this change is dropped (beyond a precise backfill's resume key) or emitted
        // (a normal backfill), the chunk that reads its row later must see it.
        if binding.state.mode.is_backfilling() {
            self.delivered.record(transaction.xid);
        }
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
        // A precise backfill drops changes to rows it has not read yet: it will read their
        // current state later. Keys that cannot be computed are emitted (never lost). An
        // update's new row leaves an unchanged out-of-line key value out; the old row (a FULL
        // identity's) carries it, and the filter must see the same key there that a later
        // delete of the row will carry, or the update is emitted and the delete dropped.
        let backfilled = |tuple: &TupleData<'_>, old: Option<&TupleData<'_>>| -> bool {
            let (TableMode::Backfill, Some(orders)) = (binding.state.mode, &binding.key_orders) else { return true };
            let key: Option<Vec<order::KeyValue>> = relation
                .key_positions
                .iter()
                .zip(orders)
                .map(|(position, key_order)| {
                    let value = match tuple.values.get(*position) {
                        Some(TupleValue::UnchangedToast) => old.and_then(|old| old.values.get(*position)),
                        value => value,
                    };
                    match value {
                        Some(TupleValue::Text(text)) => order::key_value(*key_order, text),
                        _ => None,
                    }
                })
                .collect();
            match key {
                Some(key) if key.len() == orders.len() => order::is_backfilled(&key, binding.scanned_key.as_deref()),
                _ => true,
            }
        };
        let (emit_new, emit_old) = match &change {
            ChangeKind::Insert { new } => (backfilled(new, None), false),
            ChangeKind::Update { old, new } => {
                let old = match old {
                    Some(OldTuple::Key(t) | OldTuple::Full(t)) => Some(t),
                    None => None,
                };
                let new_emitted = backfilled(new, old);
                (new_emitted, old.map_or(new_emitted, |old| backfilled(old, None)))
            }
            ChangeKind::Delete { old: OldTuple::Key(t) | OldTuple::Full(t) } => (false, backfilled(t, None)),
        };
        if !emit_new && !emit_old {
            return Ok(());
        }
        let source = Source {
            ts_ms: Some((transaction.commit_time_us + POSTGRES_EPOCH_MICROS) / 1000),
            schema: &binding.table.schema,
            table: &binding.table.name,
            snapshot: false,
            loc: [lsn_i64(self.cursor), lsn_i64(wal_start), lsn_i64(transaction.final_lsn)],
            txid: Some(transaction.xid),
            tag: self.source_tag.as_deref(),
        };
        let table_name = || format!("{}.{}", relation.namespace, relation.name);
        // The change cannot be placed: covered by the backfill, or the capture fails.
        macro_rules! key_missing {
            ($column:expr, $cause:expr) => {{
                if backfill_covers {
                    return Ok(());
                }
                return Err(missing_key_error(relation, $column, $cause));
            }};
        }
        self.document.clear();
        let mut extra_delete: Option<Vec<u8>> = None;
        match change {
            ChangeKind::Insert { new } => {
                encode_tuple(&mut self.row, relation, new, None, TupleRole::New)
                    .map_err(|e| value_error(&table_name(), e))?;
                if let Some(column) = missing_key(relation, &self.row) {
                    key_missing!(column, KeyLoss::NotPublished);
                }
                document::write_document(&mut self.document, &relation.layout, &self.row, Op::Create, &source, None);
            }
            ChangeKind::Update { old, new } => {
                let (old_tuple, old_is_full) = match old {
                    Some(OldTuple::Key(t)) => (Some(t), false),
                    Some(OldTuple::Full(t)) => (Some(t), true),
                    None => (None, false),
                };
                if let Some(old_tuple) = old_tuple {
                    let role = if old_is_full { TupleRole::OldFull } else { TupleRole::OldKey };
                    encode_tuple(&mut self.old_row, relation, old_tuple, None, role)
                        .map_err(|e| value_error(&table_name(), e))?;
                }
                encode_tuple(&mut self.row, relation, new, old, TupleRole::New)
                    .map_err(|e| value_error(&table_name(), e))?;
                if let Some(column) = missing_key(relation, &self.row) {
                    let unchanged_toast = relation.document_key_positions.iter().any(|(k, p)| {
                        k == column && p.is_some_and(|p| new.values.get(p) == Some(&TupleValue::UnchangedToast))
                    });
                    key_missing!(column, if unchanged_toast { KeyLoss::UnchangedToast } else { KeyLoss::NotPublished });
                }
                let key_changed = old_tuple.is_some()
                    && !binding.keyed_by_location
                    && !relation.key_positions.is_empty()
                    && relation.key_positions.iter().any(|p| self.old_row.value(*p) != self.row.value(*p));
                if key_changed {
                    // The row moved to a new key: delete the old key's document, then
                    // create the new one, so the old key does not linger in the collection.
                    if emit_old {
                        if let Some(column) = missing_key(relation, &self.old_row) {
                            key_missing!(column, KeyLoss::OldKey);
                        }
                        let mut delete = Vec::new();
                        document::write_document(
                            &mut delete,
                            &relation.layout,
                            &self.old_row,
                            Op::Delete,
                            &source,
                            None,
                        );
                        extra_delete = Some(delete);
                    }
                    if emit_new {
                        // The new key's document cannot be merged onto the old key's, so the
                        // unchanged TOAST values the server did not resend would be missing
                        // from it for good: read them from the table.
                        let missing: Vec<usize> = new
                            .values
                            .iter()
                            .enumerate()
                            .filter(|(i, v)| **v == TupleValue::UnchangedToast && self.row.value(*i).is_none())
                            .map(|(i, _)| i)
                            .collect();
                        if !missing.is_empty() {
                            match current_values_query(relation, new, old_tuple, &missing) {
                                Some((sql, params)) => {
                                    let limit = self.silence_limit();
                                    let mut keepalive = Keepalive {
                                        stream: &mut *stream,
                                        last_status: &mut self.last_status,
                                        interval: self.status_interval,
                                        flushed: self.acknowledged,
                                    };
                                    let current = keepalive
                                        .around(current_values(&self.client, &sql, &params, transaction.xid, limit))
                                        .await?;
                                    // Row gone (deleted or moved on since): the stream carries
                                    // that change after this one, so the document needs nothing.
                                    if let Some(values) = current {
                                        fill_current_values(&mut self.row, relation, &missing, &values, &table_name());
                                    }
                                }
                                None => {
                                    if self.toast_warnings.insert(relation_oid) {
                                        tracing::warn!(
                                            table = %table_name(),
                                            "a primary-key change left unchanged TOAST columns without a value, and the row cannot be looked up by its replica identity; set REPLICA IDENTITY FULL on the table so that the old row carries them"
                                        );
                                    }
                                }
                            }
                        }
                        document::write_document(
                            &mut self.document,
                            &relation.layout,
                            &self.row,
                            Op::Create,
                            &source,
                            None,
                        );
                    }
                } else if !emit_new {
                    return Ok(());
                } else {
                    let before = old_tuple.map(|_| (&relation.layout, &self.old_row));
                    document::write_document(
                        &mut self.document,
                        &relation.layout,
                        &self.row,
                        Op::Update,
                        &source,
                        before,
                    );
                }
            }
            ChangeKind::Delete { old } => {
                let (tuple, role) = match old {
                    OldTuple::Key(t) => (t, TupleRole::OldKey),
                    OldTuple::Full(t) => (t, TupleRole::OldFull),
                };
                encode_tuple(&mut self.row, relation, tuple, None, role).map_err(|e| value_error(&table_name(), e))?;
                if let Some(column) = missing_key(relation, &self.row) {
                    key_missing!(column, KeyLoss::OldKey);
                }
                document::write_document(&mut self.document, &relation.layout, &self.row, Op::Delete, &source, None);
            }
        }
        if let Some(delete) = extra_delete {
            let index =
                u32::try_from(binding_index).map_err(|_| Error::Internal("binding index overflows u32".into()))?;
            let mut keepalive = Keepalive {
                stream: &mut *stream,
                last_status: &mut self.last_status,
                interval: self.status_interval,
                flushed: self.acknowledged.min(self.server_flushed),
            };
            keepalive.during(self.emitter.captured(index, &delete)).await?;
            self.documents_since_checkpoint += 1;
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
}

enum ChangeKind<'a, 'b> {
    Insert { new: &'b TupleData<'a> },
    Update { old: Option<&'b OldTuple<'a>>, new: &'b TupleData<'a> },
    Delete { old: &'b OldTuple<'a> },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TupleRole {
    New,
    /// A key-only old tuple: NULLs stand for "not part of the key" and are omitted.
    OldKey,
    OldFull,
}

/// Encode a tuple's values into `row`. An unchanged TOAST value (which the server does not
/// send again) is taken from the old tuple when that carries it: a full old row carries
/// every column, an old key its replica identity's columns, unchanged out-of-line key
/// values included (PostgreSQL logs those since 13.7 and 14.3, so that the key is known).
/// Otherwise it is omitted, and the merge reduction keeps the stored value.
fn encode_tuple(
    row: &mut EncodedRow,
    relation: &RelationEntry,
    tuple: &TupleData<'_>,
    old: Option<&OldTuple<'_>>,
    role: TupleRole,
) -> Result<(), value::ValueError> {
    row.reset(relation.types.len());
    for (index, (value, ty)) in tuple.values.iter().zip(&relation.types).enumerate() {
        let value = match value {
            TupleValue::UnchangedToast => match old {
                Some(OldTuple::Full(old)) => match old.values.get(index) {
                    Some(old @ (TupleValue::Text(_) | TupleValue::Null)) => old,
                    _ => continue,
                },
                // In an old key, NULL stands for "not part of the key".
                Some(OldTuple::Key(old)) => match old.values.get(index) {
                    Some(old @ TupleValue::Text(_)) => old,
                    _ => continue,
                },
                None => continue,
            },
            other => other,
        };
        match value {
            TupleValue::Null if role == TupleRole::OldKey => {}
            TupleValue::Null => row.set_null(index),
            TupleValue::Text(text) => {
                let start = row.bytes.len();
                let is_key = relation.key_positions.contains(&index);
                if is_key {
                    value::encode_key_value(ty, text, &mut row.bytes)?;
                } else {
                    value::encode_value(ty, text, &mut row.bytes)?;
                }
                row.finish_value(index, start);
            }
            TupleValue::UnchangedToast | TupleValue::Binary(_) => {}
        }
    }
    Ok(())
}

/// The first collection key column that `row` has no value for.
fn missing_key<'r>(relation: &'r RelationEntry, row: &EncodedRow) -> Option<&'r str> {
    relation
        .document_key_positions
        .iter()
        .find(|(_, position)| position.is_none_or(|p| row.value(p).is_none()))
        .map(|(column, _)| column.as_str())
}

/// Why a change arrived without a collection key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyLoss {
    /// The relation does not carry the column at all (a publication column list).
    NotPublished,
    /// An update left an out-of-line key value unchanged and the server sent no old key.
    UnchangedToast,
    /// The old key of an update or delete lacks the column.
    OldKey,
}

fn missing_key_error(relation: &RelationEntry, column: &str, cause: KeyLoss) -> Error {
    let name = display_name(&relation.namespace, &relation.name);
    let table = qualified(&relation.namespace, &relation.name);
    let rebackfill = "then increment the binding's backfill counter: the changes already written lack the key, and the backfill reads the table again";
    match cause {
        KeyLoss::NotPublished => Error::user(
            format!("changes of table {name} arrive without its collection key column {column:?}: the publication does not carry that column"),
            format!("publish the column (drop the table's column list in the publication, or add the column to it), {rebackfill}"),
        ),
        KeyLoss::UnchangedToast => Error::user(
            format!("an update of table {name} arrived without the value of its key column {column:?}: the value is stored out of line (TOAST) and did not change, and the server sent no old key (PostgreSQL sends one since 13.7 and 14.3), so the capture cannot tell which document the update changes"),
            format!("run ALTER TABLE {table} REPLICA IDENTITY FULL; (or upgrade the server to its latest minor release), {rebackfill}"),
        ),
        KeyLoss::OldKey => Error::user(
            format!("a change of table {name} arrived without its collection key column {column:?} in the old row, so the capture cannot tell which document it changes"),
            format!("run ALTER TABLE {table} REPLICA IDENTITY FULL; {rebackfill}"),
        ),
    }
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
    let started = std::time::Instant::now();
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
                match value::encode_value(ty, text.as_bytes(), &mut row.bytes) {
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
    use crate::replication::pgoutput::{RelationColumn, ReplicaIdentity};
    use crate::value::PgType;

    fn text() -> PgType {
        PgType::Builtin { name: "text".into(), typmod: -1 }
    }

    fn int4() -> PgType {
        PgType::Builtin { name: "int4".into(), typmod: -1 }
    }

    /// Columns `id int4` (the key), `code text`, `big text`, `doc xml`; identity flags as given.
    fn relation(identity: ReplicaIdentity, flagged: &[&str]) -> RelationEntry {
        let names = ["id", "code", "big", "doc"];
        let columns: Vec<RelationColumn<'static>> = names
            .iter()
            .map(|name| RelationColumn { is_key: flagged.contains(name), name, type_oid: 0, type_modifier: -1 })
            .collect();
        let message = pgoutput::Relation {
            xid: None,
            oid: 1,
            namespace: "we\"ird",
            name: "t",
            replica_identity: identity,
            columns,
        };
        let types = vec![int4(), text(), text(), PgType::Builtin { name: "xml".into(), typmod: -1 }];
        let key = ["id".to_string()];
        let bound = BoundKeys { index: 0, key_columns: &key, document_key: &key };
        RelationEntry::new(&message, types, Some(bound), ("flow", "watermarks"))
    }

    fn tuple(values: &[TupleValue<'static>]) -> TupleData<'static> {
        TupleData { values: values.to_vec() }
    }

    #[test]
    fn unchanged_toast_values_come_from_the_old_tuple_that_carries_them() {
        let entry = relation(ReplicaIdentity::Default, &["id"]);
        let new =
            tuple(&[TupleValue::UnchangedToast, TupleValue::Text(b"c"), TupleValue::UnchangedToast, TupleValue::Null]);
        let mut row = EncodedRow::default();
        // No old tuple: the key is missing, and the document would lack it.
        encode_tuple(&mut row, &entry, &new, None, TupleRole::New).unwrap();
        assert_eq!(missing_key(&entry, &row), Some("id"));
        assert_eq!(row.value(2), None);
        // An old key carries the key (NULLs in it stand for "not in the key").
        let old = OldTuple::Key(tuple(&[TupleValue::Text(b"7"), TupleValue::Null, TupleValue::Null, TupleValue::Null]));
        encode_tuple(&mut row, &entry, &new, Some(&old), TupleRole::New).unwrap();
        assert_eq!(missing_key(&entry, &row), None);
        assert_eq!(
            (row.value(0), row.value(1), row.value(2), row.value(3)),
            (Some(&b"7"[..]), Some(&b"\"c\""[..]), None, Some(&b"null"[..]))
        );
        // A full old row carries everything, NULLs included.
        let old = OldTuple::Full(tuple(&[
            TupleValue::Text(b"7"),
            TupleValue::Text(b"x"),
            TupleValue::Null,
            TupleValue::Null,
        ]));
        encode_tuple(&mut row, &entry, &new, Some(&old), TupleRole::New).unwrap();
        assert_eq!((row.value(0), row.value(2)), (Some(&b"7"[..]), Some(&b"null"[..])));
    }

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
