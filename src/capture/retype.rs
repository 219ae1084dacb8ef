//! Key columns whose type changes under a backfill (`ALTER TABLE .. ALTER COLUMN .. TYPE`).
//!
//! A keyed backfill resumes with `WHERE (k) > (<resume key>) ORDER BY k`: the resume key
//! means "every row up to here was read" only in the order the previous chunks were read
//! in. Changing a key column's type can change that order: after `integer` to `text`, the
//! resume key 999 reads as `'999'`, and no row compares greater than it (`'1000'` <
//! `'999'`), so the backfill "completes" without the rest of the table. A collation change
//! (`TYPE text COLLATE "C"`) does the same without changing the type's name.
//!
//! So every resume key is recorded with its columns' order signatures (the type as
//! `format_type` names it, plus a non-default collation), and:
//! - when a capture opens, a resume key whose columns' signatures changed in a way that
//!   may reorder keys restarts that table's backfill from the start (re-reading rows is
//!   harmless: documents are reduced by key), with a warning naming the table and column;
//!   a change that keeps the order of every key (`integer` to `bigint` or `numeric`,
//!   `varchar(10)` to `text`) continues where it was. States written without signatures
//!   (by the Go connector or an earlier version) are judged by their resume key's tuple:
//!   an integer element under what is now a text column (or the reverse) restarts;
//! - while a capture runs, the signatures of the tables read in a backfill round are read
//!   again after the round's chunks, before their resume keys are checkpointed, and a
//!   change is handled the same way, with the table's columns discovered again. The ALTER
//!   also rewrote the table, and a chunk read with a snapshot older than the rewrite sees
//!   it empty: such a chunk (one that saw no row, and whose snapshot does not see the
//!   table's last definition change, whatever the change) is taken back and read again;
//!   a chunk that saw rows read the table as of its snapshot and stands (see
//!   `Session::check_key_types`).
//!
//! The pure rules are [`order_preserved`] and [`element_fits`].

use std::collections::{BTreeMap, BTreeSet};

use tokio::io::AsyncWrite;

use super::keys::{self, Element};
use super::state::{BindingState, TableMode};
use super::visibility::Snapshot;
use super::{backfill, pg, Binding, Session};
use crate::error::Error;
use crate::value::PgType;

/// The type part and the collation part of an order signature.
fn split_collation(signature: &str) -> (&str, &str) {
    match signature.split_once(" COLLATE ") {
        Some((ty, collation)) => (ty, collation),
        None => (signature, ""),
    }
}

/// Types whose orders relate to one another.
#[derive(Debug, PartialEq, Eq)]
enum Family {
    /// `smallint`, `integer`, `bigint`, by width.
    Integer(u8),
    /// `numeric`, with its scale when constrained.
    Numeric { constrained: bool, scale: i64 },
    /// `text` and `character varying`, with its length limit.
    Text(Option<u64>),
}

fn family(ty: &str) -> Option<Family> {
    let (name, modifier) = match ty.split_once('(') {
        Some((name, rest)) => (name, rest.strip_suffix(')')),
        None => (ty, None),
    };
    Some(match (name, modifier) {
        ("smallint", None) => Family::Integer(2),
        ("integer", None) => Family::Integer(4),
        ("bigint", None) => Family::Integer(8),
        ("numeric", None) => Family::Numeric { constrained: false, scale: 0 },
        ("numeric", Some(modifier)) => {
            let scale = match modifier.split_once(',') {
                Some((_, scale)) => scale.trim().parse().ok()?,
                None => 0,
            };
            Family::Numeric { constrained: true, scale }
        }
        ("text", None) | ("character varying", None) => Family::Text(None),
        ("character varying", Some(length)) => Family::Text(Some(length.trim().parse().ok()?)),
        _ => return None,
    })
}

/// Whether a resume key read under the order signature `old` still marks the same place
/// under `new`: every key compares the same way under both, and converts exactly. Anything
/// not known to be so is treated as a change of order (the backfill restarts, which is
/// always safe).
pub fn order_preserved(old: &str, new: &str) -> bool {
    if old == new {
        return true;
    }
    let ((old_type, old_collation), (new_type, new_collation)) = (split_collation(old), split_collation(new));
    if old_collation != new_collation {
        return false;
    }
    match (family(old_type), family(new_type)) {
        (Some(Family::Integer(from)), Some(Family::Integer(to))) => to >= from,
        // Integers are exact in any numeric that keeps a non-negative scale (a too narrow
        // one makes the ALTER or the resume query fail, never reorder).
        (Some(Family::Integer(_)), Some(Family::Numeric { scale, .. })) => scale >= 0,
        (Some(Family::Numeric { .. }), Some(Family::Numeric { constrained: false, .. })) => true,
        // `character varying` compares as text; a longer limit truncates nothing.
        (Some(Family::Text(from)), Some(Family::Text(to))) => match (from, to) {
            (_, None) => true,
            (Some(from), Some(to)) => to >= from,
            (None, Some(_)) => false,
        },
        _ => false,
    }
}

/// For a resume key recorded without signatures: whether `element` could have been written
/// for a column of type `ty` (as it is now) such that the order it was read in is still
/// the column's. Integer columns are written as integer elements, by the Go connector and
/// by this one; other types as strings (text output) or their own element kinds. Where the
/// element cannot tell, it fits.
pub fn element_fits(element: &Element, ty: &PgType) -> bool {
    let mut base = ty;
    while let PgType::Domain { base: inner, .. } = base {
        base = inner;
    }
    let name = match base {
        PgType::Builtin { name, .. } => name.as_str(),
        _ => "",
    };
    let integer = matches!(name, "int2" | "int4" | "int8" | "oid");
    match element {
        Element::Null => true,
        Element::Int(_) => integer || matches!(name, "numeric" | "float4" | "float8"),
        // This connector writes every non-integer key as its text.
        Element::String(_) => !integer,
        // The Go connector's order-preserving NUMERIC, and its floats.
        Element::Nested(_) => name == "numeric",
        Element::Float(_) | Element::Double(_) => matches!(name, "float4" | "float8"),
        Element::Bool(_) => name == "bool",
        Element::Uuid(_) => name == "uuid",
        Element::Bytes(_) => name == "bytea",
    }
}

/// A key column whose order changed: its name and its old and new types.
struct Change {
    column: String,
    from: String,
    to: String,
}

fn describe(element: &Element) -> &'static str {
    match element {
        Element::Null => "null",
        Element::Int(_) => "an integer",
        Element::String(_) => "a string",
        Element::Nested(_) => "a numeric",
        Element::Float(_) | Element::Double(_) => "a float",
        Element::Bool(_) => "a boolean",
        Element::Uuid(_) => "a uuid",
        Element::Bytes(_) => "bytes",
    }
}

/// The key columns a resumed backfill pages by: those its state recorded, else the binding's.
fn resume_key_columns(binding: &Binding) -> Vec<String> {
    binding.state.key_columns.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| binding.key_columns.clone())
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    /// The current type names and order signatures of `columns` of each binding in
    /// `wanted`, in one catalog query. A table or column that is gone is left out (the next
    /// chunk query reports it).
    async fn current_key_types(
        &self,
        wanted: &[(usize, Vec<String>)],
    ) -> Result<BTreeMap<usize, (Vec<String>, Vec<String>)>, Error> {
        let oids: Vec<u32> = wanted.iter().map(|(index, _)| self.bindings[*index].table.oid).collect();
        let rows = self
            .sql_deadline("reading key column types", self.client.query(backfill::COLUMN_TYPES_BATCH_SQL, &[&oids]))
            .await?
            .map_err(pg)?;
        let mut types: BTreeMap<(u32, String), (String, String)> = BTreeMap::new();
        for row in &rows {
            types.insert((row.get(0), row.get(1)), (row.get(2), row.get(3)));
        }
        let mut current = BTreeMap::new();
        for (index, columns) in wanted {
            let oid = self.bindings[*index].table.oid;
            let found: Option<Vec<(String, String)>> =
                columns.iter().map(|c| types.get(&(oid, c.clone())).cloned()).collect();
            if let Some(found) = found {
                current.insert(*index, found.into_iter().unzip());
            }
        }
        Ok(current)
    }

    /// Whether the key columns of binding `index` no longer have the types its chunks are
    /// planned with.
    pub(super) async fn key_types_changed(&self, index: usize) -> Result<bool, Error> {
        let binding = &self.bindings[index];
        let Some(expected) = &binding.key_signature else { return Ok(false) };
        let current = self.current_key_types(&[(index, binding.key_columns.clone())]).await?;
        Ok(current.get(&index).is_some_and(|(_, signatures)| signatures != expected))
    }

    /// When the capture opens: restart every resumed keyed backfill whose key order changed
    /// since its resume key was read (see the module docs). Runs before `activate_pending`,
    /// which starts the restarted ones afresh.
    pub(super) async fn check_resume_key_types(&mut self) -> Result<(), Error> {
        let resuming: Vec<(usize, Vec<String>)> = self
            .bindings
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                matches!(b.state.mode, TableMode::Backfill | TableMode::UnfilteredBackfill) && b.state.scanned.is_some()
            })
            .map(|(index, b)| (index, resume_key_columns(b)))
            .collect();
        if resuming.is_empty() {
            return Ok(());
        }
        let current = self.current_key_types(&resuming).await?;
        for (index, columns) in resuming {
            let Some((names, signatures)) = current.get(&index).cloned() else { continue };
            let binding = &mut self.bindings[index];
            let change = match &binding.state.key_types {
                Some(recorded) => columns
                    .iter()
                    .zip(signatures.iter())
                    .enumerate()
                    .find(|(i, (_, now))| recorded.get(*i).is_none_or(|old| !order_preserved(old, now)))
                    .map(|(i, (column, now))| Change {
                        column: column.clone(),
                        from: recorded.get(i).cloned().unwrap_or_else(|| "(not recorded)".into()),
                        to: now.clone(),
                    }),
                None => {
                    // An unreadable resume key is reported by the chunk query, with its fix.
                    let elements = binding.state.scanned.as_deref().and_then(|s| keys::decode_base64(s).ok());
                    elements.and_then(|elements| {
                        elements.iter().zip(columns.iter().zip(signatures.iter())).find_map(
                            |(element, (column, now))| {
                                let ty = binding.table.column(column).map(|c| &c.pg_type)?;
                                (!element_fits(element, ty)).then(|| Change {
                                    column: column.clone(),
                                    from: format!("a type whose keys were recorded as {}", describe(element)),
                                    to: now.clone(),
                                })
                            },
                        )
                    })
                }
            };
            match change {
                Some(change) => {
                    restart_backfill(binding, &change, REORDERED);
                    self.checkpoints.binding_changed(index);
                }
                None => {
                    binding.key_types = Some(names);
                    binding.key_signature = Some(signatures);
                }
            }
        }
        Ok(())
    }

    /// A keyed chunk of this round against the last changes to its table's definition
    /// (`definitions`: their transactions): see [`Session::check_key_types`]. True: the
    /// binding's state changed.
    fn settle_chunk_undo(&mut self, index: usize, definitions: Option<&Vec<u32>>) -> bool {
        let binding = &mut self.bindings[index];
        let Some(undo) = binding.chunk_undo.take() else { return false };
        let misses = |snapshot: &Snapshot| {
            definitions.and_then(|xids| {
                xids.iter().copied().find(|xid| *xid >= FIRST_NORMAL_XID && !snapshot.sees_committed(*xid))
            })
        };
        // A range of a chunk read by several connections that saw no row, with a snapshot
        // from before the rewrite (see `parallel`).
        let empty_range = undo.empty_ranges.iter().find_map(|s| misses(s).map(|xid| (xid, s.clone())));
        let Some(xid) = misses(&undo.snapshot).or(empty_range.as_ref().map(|(xid, _)| *xid)) else { return false };
        let table = format!("{}.{}", binding.table.schema, binding.table.name);
        if undo.rows == 0 {
            // An empty chunk would end the backfill: it may be a rewritten table seen through
            // the older snapshot. It emitted nothing, so taking it back is exact in every
            // mode, the precise one included.
            tracing::info!(
                table = %table,
                xid,
                snapshot = %undo.snapshot,
                "the table's definition changed after its backfill chunk's snapshot was taken (a rewrite makes the table look empty to that snapshot): the chunk is read again"
            );
            binding.state = undo.state;
            binding.scanned_key = undo.scanned_key;
        } else if let Some((_, snapshot)) = empty_range {
            // Rows of the other ranges were emitted (a precise backfill dropped changes to
            // them), so the chunk cannot be taken back, and the empty range may have hidden
            // rows: start over, emitting every change.
            tracing::warn!(
                table = %table,
                xid,
                snapshot = %snapshot,
                "table {table:?} was rewritten while several connections read its backfill chunk, and one of them saw it empty: its backfill restarts from the start"
            );
            start_over_unfiltered(binding);
        } else {
            // The query held its lock while it read, so a change that took the table's lock
            // ran wholly before or after it; a rewrite gives every row a new xmin, invisible
            // to an older snapshot. Rows seen therefore mean the table was read as of the
            // chunk's snapshot, which the fence covers: the chunk stands. (Taking it back
            // would also be wrong for a precise backfill, which dropped changes to the rows
            // it emitted.)
            tracing::debug!(table = %table, xid, snapshot = %undo.snapshot, rows = undo.rows,
                "the table's definition changed after its backfill chunk's snapshot was taken, and the chunk saw rows: it stands");
            return false;
        }
        self.checkpoints.binding_changed(index);
        true
    }

    /// After a backfill round, before its resume keys are checkpointed, for each keyed
    /// table it read:
    /// - a chunk that saw no row, and whose snapshot does not see the last change to its
    ///   table's definition (the `pg_class` rows of the table and its partitions), is taken
    ///   back, to be read again:
    ///   PostgreSQL's table rewrites (`ALTER COLUMN .. TYPE` of any column, `ADD COLUMN`
    ///   with a volatile default, `TRUNCATE`) are not MVCC-safe, and a chunk query whose
    ///   snapshot was taken before the rewrite committed (one queued behind the ALTER's
    ///   lock, typically) finds the rewritten table empty, which would end the backfill;
    /// - key columns whose types changed since the chunks were planned: a change that keeps
    ///   the key order continues (the table's columns discovered again, so that rows are
    ///   encoded by their new types), any other restarts the table's backfill (see the
    ///   module docs). A chunk query that failed because of the new type (no operator
    ///   compares it with the resume key's old one) is one of these.
    pub(super) async fn check_key_types(&mut self, read: &BTreeSet<usize>) -> Result<(), Error> {
        let planned: Vec<(usize, Vec<String>)> = read
            .iter()
            .filter(|index| self.bindings[**index].key_signature.is_some())
            .map(|index| (*index, self.bindings[*index].key_columns.clone()))
            .collect();
        if planned.is_empty() {
            return Ok(());
        }
        let current = self.current_key_types(&planned).await?;
        let definitions = self.definition_xids(&planned).await?;
        let mut changed = false;
        for (index, columns) in planned {
            changed |= self.settle_chunk_undo(index, definitions.get(&index));
            let Some((names, signatures)) = current.get(&index).cloned() else { continue };
            let binding = &self.bindings[index];
            let planned_signature = binding.key_signature.clone().unwrap_or_default();
            if planned_signature == signatures {
                continue;
            }
            // The order the resume key (if any) was read in.
            let recorded = binding.state.key_types.clone().unwrap_or_else(|| planned_signature.clone());
            let resuming = binding.state.scanned.is_some() && binding.state.mode.is_backfilling();
            let reordered = (0..columns.len()).find(|i| {
                resuming && recorded.get(*i).zip(signatures.get(*i)).is_none_or(|(old, new)| !order_preserved(old, new))
            });
            let position = (0..columns.len()).find(|i| planned_signature.get(*i) != signatures.get(*i)).unwrap_or(0);
            self.describe_again(index, "reading a retyped table's columns again").await?;
            let binding = &mut self.bindings[index];
            match reordered {
                Some(i) => {
                    let change = Change {
                        column: columns[i].clone(),
                        from: recorded.get(i).cloned().unwrap_or_default(),
                        to: signatures.get(i).cloned().unwrap_or_default(),
                    };
                    restart_backfill(binding, &change, REORDERED);
                }
                None => {
                    tracing::info!(
                        table = %format!("{}.{}", binding.table.schema, binding.table.name),
                        column = %columns[position],
                        from = %planned_signature.get(position).cloned().unwrap_or_default(),
                        to = %signatures.get(position).cloned().unwrap_or_default(),
                        "a key column's type changed during the backfill without changing the key order: the backfill continues"
                    );
                    if resuming {
                        binding.state.key_types = Some(signatures.clone());
                    }
                    binding.key_types = Some(names);
                    binding.key_signature = Some(signatures);
                    binding.key_orders = None;
                    binding.scanned_key = None;
                    binding.chunk_limit = None;
                }
            }
            self.checkpoints.binding_changed(index);
            changed = true;
        }
        if changed {
            // Re-derives each binding's key order (and precise mode) from its columns' new
            // types, and starts the restarted backfills.
            self.activate_pending();
        }
        Ok(())
    }

    /// The transactions that last changed the definitions (`pg_class` rows) of each
    /// binding's table and its partitions.
    async fn definition_xids(&self, wanted: &[(usize, Vec<String>)]) -> Result<BTreeMap<usize, Vec<u32>>, Error> {
        let oids: Vec<u32> = wanted.iter().map(|(index, _)| self.bindings[*index].table.oid).collect();
        let rows = self
            .sql_deadline("reading table definitions", self.client.query(DEFINITION_XIDS_SQL, &[&oids]))
            .await?
            .map_err(pg)?;
        let by_oid: BTreeMap<u32, Vec<u32>> = rows
            .iter()
            .map(|row| {
                let xids: Vec<String> = row.get(1);
                (row.get(0), xids.iter().filter_map(|x| x.parse().ok()).collect())
            })
            .collect();
        Ok(wanted
            .iter()
            .filter_map(|(index, _)| by_oid.get(&self.bindings[*index].table.oid).map(|x| (*index, x.clone())))
            .collect())
    }
}

/// Transaction ids below this one are permanent (bootstrap, frozen): every snapshot sees them.
const FIRST_NORMAL_XID: u32 = 3;

/// The `xmin` of the `pg_class` rows of each table (`$1`) and of its partitions at any depth.
const DEFINITION_XIDS_SQL: &str = "
    SELECT r.oid,
           ARRAY(SELECT c.xmin::text FROM pg_catalog.pg_class c
                 WHERE c.oid = r.oid
                    OR c.oid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree(r.oid::regclass) t))
    FROM unnest($1::oid[]) AS r(oid)";

/// Why a backfill restarts.
const REORDERED: &str = "since the backfill's resume key was read, which can change the order of its keys";

/// Start a binding's backfill over, from the start of the table.
fn restart_backfill(binding: &mut Binding, change: &Change, why: &str) {
    let table = format!("{}.{}", binding.table.schema, binding.table.name);
    tracing::warn!(
        table = %table,
        column = %change.column,
        from = %change.from,
        to = %change.to,
        "the type of key column {:?} of table {table:?} changed from {} to {} {why}: the backfill of {table:?} restarts from the start",
        change.column,
        change.from,
        change.to
    );
    start_over_unfiltered(binding);
}

/// Start a binding's backfill over from the start of the table, unfiltered. Not `Pending`,
/// which could choose a precise backfill: rows of the first pass were emitted already, beyond
/// the new resume key, and a precise backfill would drop changes to them (a delete among them
/// would be lost for good). A restarted backfill emits every change.
fn start_over_unfiltered(binding: &mut Binding) {
    let key_columns = (!binding.key_columns.is_empty()).then(|| binding.key_columns.clone());
    binding.state = BindingState {
        mode: TableMode::UnfilteredBackfill,
        key_columns,
        scanned: None,
        metadata: None,
        backfilled: 0,
        key_types: None,
    };
    binding.key_types = None;
    binding.key_signature = None;
    binding.key_orders = None;
    binding.scanned_key = None;
    binding.chunk_limit = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_keeps_the_order_and_anything_else_restarts() {
        for (old, new) in [
            ("integer", "integer"),
            ("smallint", "integer"),
            ("integer", "bigint"),
            ("bigint", "numeric"),
            ("integer", "numeric(12,2)"),
            ("numeric(10,2)", "numeric"),
            ("character varying(10)", "text"),
            ("character varying(10)", "character varying(20)"),
            ("text", "character varying"),
            ("text COLLATE \"C\"", "character varying COLLATE \"C\""),
        ] {
            assert!(order_preserved(old, new), "{old} -> {new}");
        }
        for (old, new) in [
            ("integer", "text"),
            ("text", "integer"),
            ("bigint", "integer"),
            ("numeric", "bigint"),
            ("numeric", "numeric(10,2)"),
            ("integer", "numeric(5,-2)"),
            ("integer", "double precision"),
            ("text", "text COLLATE \"C\""),
            ("text COLLATE \"C\"", "text"),
            ("text", "character varying(5)"),
            ("uuid", "text"),
            ("timestamp without time zone", "timestamp with time zone"),
        ] {
            assert!(!order_preserved(old, new), "{old} -> {new}");
        }
    }

    #[test]
    fn resume_keys_without_types_are_judged_by_their_elements() {
        let builtin = |name: &str| PgType::Builtin { name: name.into(), typmod: -1 };
        assert!(element_fits(&Element::Int(999), &builtin("int4")));
        assert!(element_fits(&Element::Int(999), &builtin("numeric")));
        assert!(!element_fits(&Element::Int(999), &builtin("text")), "integer -> text reorders keys");
        assert!(!element_fits(&Element::String("a".into()), &builtin("int8")), "text -> integer reorders keys");
        assert!(element_fits(&Element::String("a".into()), &builtin("text")));
        assert!(!element_fits(&Element::Uuid([0; 16]), &builtin("text")));
        assert!(!element_fits(&Element::Nested(vec![]), &builtin("text")), "numeric -> text reorders keys");
        let domain = PgType::Domain { name: "d".into(), base: Box::new(builtin("int8")), not_null: true };
        assert!(element_fits(&Element::Int(1), &domain));
    }
}
