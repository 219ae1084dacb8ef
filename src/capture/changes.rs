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
//! merge reduction keeps the stored value) unless a full old row carries them.

use tokio::io::AsyncWrite;

use super::document::{self, DocumentLayout, EncodedRow, Op, Source};
use super::spill::SpilledMessage;
use super::state::TableMode;
use super::{lsn_i64, order, pg, value_error, Keepalive, RelationEntry, Session, Transaction};
use crate::error::Error;
use crate::failpoint::{self, Failpoint};
use crate::lsn::Lsn;
use crate::pg::replication::{ReplicationFrame, ReplicationStream};
use crate::replication::pgoutput::{self, DecodeContext, LogicalMessage, OldTuple, TupleData, TupleValue};
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
                if self.transaction.is_none()
                    && self.streamed_block.is_none()
                    && wal_end > self.cursor
                    && !self.hold_checkpoints
                {
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
                let context = DecodeContext {
                    protocol_version: self.protocol_version,
                    in_streamed_block: self.streamed_block.is_some(),
                };
                let message = pgoutput::decode_message(&data, &context).map_err(|err| {
                    Error::Internal(format!("cannot decode a pgoutput message at {wal_start}: {err}"))
                })?;
                if let Some(top_xid) = self.streamed_block {
                    match &message {
                        LogicalMessage::StreamStop => {
                            self.streamed_block = None;
                            return Ok(());
                        }
                        LogicalMessage::Relation(_)
                        | LogicalMessage::Insert(_)
                        | LogicalMessage::Update(_)
                        | LogicalMessage::Delete(_)
                        | LogicalMessage::Truncate(_) => {
                            let xid = message_xid(&message).unwrap_or(top_xid);
                            self.spill
                                .push(top_xid, &SpilledMessage { wal_start, xid, payload: data.to_vec() })
                                .map_err(|err| {
                                    Error::Internal(format!("buffering streamed transaction {top_xid} failed: {err}"))
                                })?;
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                self.on_message(message, wal_start, stream).await
            }
        }
    }

    async fn on_message(
        &mut self,
        message: LogicalMessage<'_>,
        wal_start: Lsn,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        match message {
            LogicalMessage::Begin(begin) => {
                if self.transaction.is_some() {
                    return Err(Error::Internal(format!(
                        "BEGIN of transaction {} inside another transaction",
                        begin.xid
                    )));
                }
                self.transaction = Some(Transaction {
                    final_lsn: begin.final_lsn,
                    commit_time_us: begin.commit_time_us,
                    xid: begin.xid,
                });
                Ok(())
            }
            LogicalMessage::Commit(commit) => {
                let transaction =
                    self.transaction.take().ok_or_else(|| Error::Internal("COMMIT without BEGIN".into()))?;
                if transaction.final_lsn != commit.commit_lsn {
                    return Err(Error::Internal(format!(
                        "COMMIT at {} does not match BEGIN's {}",
                        commit.commit_lsn, transaction.final_lsn
                    )));
                }
                self.on_commit(commit.end_lsn);
                Ok(())
            }
            LogicalMessage::Relation(relation) => self.on_relation(relation).await,
            LogicalMessage::Insert(insert) => {
                self.on_change(insert.relation_oid, wal_start, ChangeKind::Insert { new: &insert.new }, stream).await
            }
            LogicalMessage::Update(update) => {
                self.on_change(
                    update.relation_oid,
                    wal_start,
                    ChangeKind::Update { old: update.old.as_ref(), new: &update.new },
                    stream,
                )
                .await
            }
            LogicalMessage::Delete(delete) => {
                self.on_change(delete.relation_oid, wal_start, ChangeKind::Delete { old: &delete.old }, stream).await
            }
            LogicalMessage::Truncate(truncate) => {
                for oid in truncate.relation_oids {
                    if let Some(relation) = self.relations.get(&oid) {
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
            LogicalMessage::StreamStart { xid, .. } => {
                self.streamed_block = Some(xid);
                Ok(())
            }
            LogicalMessage::StreamStop => {
                self.streamed_block = None;
                Ok(())
            }
            LogicalMessage::StreamAbort(abort) => {
                self.spill.abort(abort.xid, abort.subxid);
                Ok(())
            }
            LogicalMessage::StreamCommit(commit) => {
                if self.transaction.is_some() {
                    return Err(Error::Internal("STREAM COMMIT inside a transaction".into()));
                }
                let mut replay = self.spill.take(commit.xid).map_err(|err| {
                    Error::Internal(format!("reading streamed transaction {} failed: {err}", commit.xid))
                })?;
                self.transaction = Some(Transaction {
                    final_lsn: commit.commit_lsn,
                    commit_time_us: commit.commit_time_us,
                    xid: commit.xid,
                });
                let context = DecodeContext { protocol_version: self.protocol_version, in_streamed_block: true };
                while let Some(spilled) = replay.next_message().map_err(|err| {
                    Error::Internal(format!("reading streamed transaction {} failed: {err}", commit.xid))
                })? {
                    let message = pgoutput::decode_message(&spilled.payload, &context)
                        .map_err(|err| Error::Internal(format!("cannot decode a buffered pgoutput message: {err}")))?;
                    Box::pin(self.on_message(message, spilled.wal_start, stream)).await?;
                    // Replaying a huge transaction takes a while: keep the walsender, which
                    // waits for our replies, from timing the connection out meanwhile.
                    if self.last_status.elapsed() >= self.status_interval {
                        self.send_status(stream, false).await?;
                    }
                }
                self.transaction = None;
                self.on_commit(commit.end_lsn);
                Ok(())
            }
            LogicalMessage::Type(_) | LogicalMessage::Origin { .. } | LogicalMessage::Message(_) => Ok(()),
            other => Err(Error::Internal(format!("unexpected pgoutput message {other:?}"))),
        }
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
            self.registry.extend(&self.client, &oids).await.map_err(pg)?;
        }
        let namespace = relation.namespace.to_string();
        let name = relation.name.to_string();
        let mut binding = self.by_table.get(&(namespace.clone(), name.clone())).copied();
        if binding.is_none() {
            // A partition published on its own while its root is captured.
            binding = self.bound_ancestor(relation.oid).await?;
        }
        let column_names: Vec<&str> = relation.columns.iter().map(|c| c.name).collect();
        let key_positions = binding
            .map(|b| {
                self.bindings[b].key_columns.iter().filter_map(|k| column_names.iter().position(|c| c == k)).collect()
            })
            .unwrap_or_default();
        let is_watermarks = namespace == self.config.watermarks_schema && name == self.config.watermarks_table;
        let entry = RelationEntry {
            types: relation.columns.iter().map(|c| self.registry.resolve(c.type_oid, c.type_modifier)).collect(),
            layout: DocumentLayout::new(&column_names),
            watermark_position: column_names.iter().position(|c| *c == "watermark"),
            namespace,
            name,
            binding,
            key_positions,
            is_watermarks,
        };
        self.check_publication_on_relation(relation.oid, binding, column_names.len()).await?;
        self.relations.insert(relation.oid, entry);
        Ok(())
    }

    async fn bound_ancestor(&self, oid: u32) -> Result<Option<usize>, Error> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_ancestors($1::oid::regclass) a
                 JOIN pg_catalog.pg_class c ON c.oid = a.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
                &[&oid],
            )
            .await;
        // The relation may already be gone (dropped after the change was written).
        let Ok(rows) = rows else { return Ok(None) };
        Ok(rows.iter().find_map(|row| self.by_table.get(&(row.get::<_, String>(0), row.get::<_, String>(1))).copied()))
    }

    async fn on_change(
        &mut self,
        relation_oid: u32,
        wal_start: Lsn,
        change: ChangeKind<'_, '_>,
        stream: &mut ReplicationStream,
    ) -> Result<(), Error> {
        let transaction =
            self.transaction.ok_or_else(|| Error::Internal("a change arrived outside of a transaction".into()))?;
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
        // A precise backfill drops changes to rows it has not read yet: it will read their
        // current state later. Keys that cannot be computed are emitted (never lost).
        let backfilled = |tuple: &TupleData<'_>| -> bool {
            let (TableMode::Backfill, Some(orders)) = (binding.state.mode, &binding.key_orders) else { return true };
            let key: Option<Vec<order::KeyValue>> = relation
                .key_positions
                .iter()
                .zip(orders)
                .map(|(position, key_order)| match tuple.values.get(*position) {
                    Some(TupleValue::Text(text)) => order::key_value(*key_order, text),
                    _ => None,
                })
                .collect();
            match key {
                Some(key) if key.len() == orders.len() => order::is_backfilled(&key, binding.scanned_key.as_deref()),
                _ => true,
            }
        };
        let (emit_new, emit_old) = match &change {
            ChangeKind::Insert { new } => (backfilled(new), false),
            ChangeKind::Update { old, new } => {
                let old_emitted = match old {
                    Some(OldTuple::Key(t) | OldTuple::Full(t)) => backfilled(t),
                    None => backfilled(new),
                };
                (backfilled(new), old_emitted)
            }
            ChangeKind::Delete { old: OldTuple::Key(t) | OldTuple::Full(t) } => (false, backfilled(t)),
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
        self.document.clear();
        let mut extra_delete: Option<Vec<u8>> = None;
        match change {
            ChangeKind::Insert { new } => {
                encode_tuple(&mut self.row, relation, new, None, TupleRole::New)
                    .map_err(|e| value_error(&table_name(), e))?;
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
                let full_old = if old_is_full { old_tuple } else { None };
                encode_tuple(&mut self.row, relation, new, full_old, TupleRole::New)
                    .map_err(|e| value_error(&table_name(), e))?;
                let key_changed = old_tuple.is_some()
                    && !binding.keyed_by_location
                    && !relation.key_positions.is_empty()
                    && relation.key_positions.iter().any(|p| self.old_row.value(*p) != self.row.value(*p));
                if key_changed
                    && full_old.is_none()
                    && new.values.iter().any(|v| matches!(v, TupleValue::UnchangedToast))
                    && self.toast_warnings.insert(relation_oid)
                {
                    // The new key's document cannot be merged onto the old key's, so
                    // unchanged TOAST values (which the server does not resend) are missing.
                    tracing::warn!(
                        table = %table_name(),
                        "a primary-key change left unchanged TOAST columns without a value; set REPLICA IDENTITY FULL on the table so that the old row carries them"
                    );
                }
                if key_changed {
                    // The row moved to a new key: delete the old key's document, then
                    // create the new one, so the old key does not linger in the collection.
                    if emit_old {
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

fn message_xid(message: &LogicalMessage<'_>) -> Option<u32> {
    match message {
        LogicalMessage::Relation(r) => r.xid,
        LogicalMessage::Insert(m) => m.xid,
        LogicalMessage::Update(m) => m.xid,
        LogicalMessage::Delete(m) => m.xid,
        LogicalMessage::Truncate(m) => m.xid,
        _ => None,
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

/// Encode a tuple's values into `row`. Unchanged TOAST values are taken from the full old
/// tuple when there is one, else omitted (the merge reduction keeps the stored value).
fn encode_tuple(
    row: &mut EncodedRow,
    relation: &RelationEntry,
    tuple: &TupleData<'_>,
    full_old: Option<&TupleData<'_>>,
    role: TupleRole,
) -> Result<(), value::ValueError> {
    row.reset(relation.types.len());
    for (index, (value, ty)) in tuple.values.iter().zip(&relation.types).enumerate() {
        let value = match value {
            TupleValue::UnchangedToast => match full_old.and_then(|old| old.values.get(index)) {
                Some(old @ TupleValue::Text(_)) | Some(old @ TupleValue::Null) => old,
                _ => continue,
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
