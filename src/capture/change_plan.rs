//! What a replication change becomes: which of its rows a precise backfill lets through,
//! its tuples encoded, and the documents to write.
//!
//! All of it is pure, so the rules can be tested without a server; the session
//! (`changes`) does the IO around it: the lookup of a moved row's unchanged TOAST values,
//! the identity's index for an error message, and emitting.
//!
//! Invariants:
//!
//! - A precise backfill drops a change of a row it has not read yet (beyond its resume
//!   key): the backfill reads the row's current state later. A change whose key cannot be
//!   computed (a key column missing, not comparable exactly) is emitted, never lost. An
//!   update's new row leaves an unchanged out-of-line (TOAST) key value out: the old row
//!   (a FULL identity's, or the old key) carries it, and the filter must see there the same
//!   key that a later delete of the row carries, or the update would be emitted and the
//!   delete dropped, leaving a deleted row in the collection.
//! - Every document carries its collection key. A change that cannot (see [`KeyLoss`])
//!   becomes [`Plan::KeyMissing`], which the session turns into an error, or drops when the
//!   binding's backfill has read nothing yet (that backfill reads every row anyway).
//! - A change of the key (not for collections keyed by location) becomes a delete of the old
//!   key's document and a create of the new one, so the old key does not linger.

use super::document::{self, EncodedRow, Op, Source};
use super::order::{self, KeyOrder, KeyValue};
use super::relations::RelationEntry;
use crate::error::Error;
use crate::replication::pgoutput::{OldTuple, TupleData, TupleValue};
use crate::validate::{display_name, qualified};
use crate::value;

/// One insert, update or delete, as pgoutput sent it.
pub(super) enum ChangeKind<'a, 'b> {
    Insert { new: &'b TupleData<'a> },
    Update { old: Option<&'b OldTuple<'a>>, new: &'b TupleData<'a> },
    Delete { old: &'b OldTuple<'a> },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TupleRole {
    New,
    /// A key-only old tuple: NULLs stand for "not part of the key" and are omitted.
    OldKey,
    OldFull,
}

/// A precise backfill's progress, as the change filter needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct PreciseBackfill<'a> {
    /// How each key column orders.
    pub(super) orders: &'a [KeyOrder],
    /// The resume key: rows up to it (inclusive) are read. `None`: nothing read yet.
    pub(super) scanned: Option<&'a [KeyValue]>,
}

impl PreciseBackfill<'_> {
    /// Whether a change to the row of `tuple` must be emitted: the backfill has read the row,
    /// or its key cannot be computed. An unchanged TOAST key value is taken from `old`.
    fn emits(&self, key_positions: &[usize], tuple: &TupleData<'_>, old: Option<&TupleData<'_>>) -> bool {
        let key: Option<Vec<KeyValue>> = key_positions
            .iter()
            .zip(self.orders)
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
            Some(key) if key.len() == self.orders.len() => order::is_backfilled(&key, self.scanned),
            _ => true,
        }
    }
}

/// Which rows of a change to emit: the new row (insert, update) and the old one (the
/// delete, or the old key's document when an update changes the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sides {
    pub(super) new: bool,
    pub(super) old: bool,
}

/// The precise-backfill filter: which rows of `change` are emitted while `precise` (if
/// any: other modes emit everything) has read what it has.
pub(super) fn sides_to_emit(
    precise: Option<PreciseBackfill<'_>>,
    key_positions: &[usize],
    change: &ChangeKind<'_, '_>,
) -> Sides {
    let emits = |tuple: &TupleData<'_>, old: Option<&TupleData<'_>>| {
        precise.is_none_or(|precise| precise.emits(key_positions, tuple, old))
    };
    match change {
        ChangeKind::Insert { new } => Sides { new: emits(new, None), old: false },
        ChangeKind::Update { old, new } => {
            let old = match old {
                Some(OldTuple::Key(t) | OldTuple::Full(t)) => Some(t),
                None => None,
            };
            let new_emitted = emits(new, old);
            Sides { new: new_emitted, old: old.map_or(new_emitted, |old| emits(old, None)) }
        }
        ChangeKind::Delete { old: OldTuple::Key(t) | OldTuple::Full(t) } => Sides { new: false, old: emits(t, None) },
    }
}

/// The watermark a `change` of the watermarks table writes (its text in the watermark
/// column of an inserted or updated row); the fence decides whether it is the awaited one.
pub(super) fn written_watermark<'a>(relation: &RelationEntry, change: &ChangeKind<'a, '_>) -> Option<&'a [u8]> {
    let (ChangeKind::Insert { new } | ChangeKind::Update { new, .. }, Some(position)) =
        (change, relation.watermark_position)
    else {
        return None;
    };
    match new.values.get(position) {
        Some(TupleValue::Text(value)) => Some(*value),
        _ => None,
    }
}

/// The documents a change becomes, its rows being encoded (see [`plan_documents`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan<'r> {
    /// Nothing to write: the precise backfill reads the row later.
    Skip,
    /// A collection key column has no value: the document could not be placed.
    KeyMissing { column: &'r str, cause: KeyLoss },
    /// A create of the new row.
    Create,
    /// An update of the new row, with the old one as `before` when the server sent it.
    Update { before: bool },
    /// A delete of the old row.
    Delete,
    /// The key changed: a delete of the old key's document and a create of the new one
    /// (each only if the filter lets that side through). The new row may lack unchanged
    /// TOAST values the server did not resend (see [`unresent_toast_positions`]).
    KeyChange { delete_old: bool, create_new: bool },
}

/// Encode `change` into `row` (the new row, or the deleted one) and `old_row` (an update's
/// old row or key), and say which documents it becomes given the filter's `sides`.
pub(super) fn plan_documents<'r>(
    row: &mut EncodedRow,
    old_row: &mut EncodedRow,
    relation: &'r RelationEntry,
    keyed_by_location: bool,
    change: &ChangeKind<'_, '_>,
    sides: Sides,
) -> Result<Plan<'r>, value::ValueError> {
    if !sides.new && !sides.old {
        return Ok(Plan::Skip);
    }
    let key_missing = |column, cause| Plan::KeyMissing { column, cause };
    match change {
        ChangeKind::Insert { new } => {
            encode_tuple(row, relation, new, None, TupleRole::New)?;
            Ok(missing_key(relation, row).map_or(Plan::Create, |column| key_missing(column, KeyLoss::NotPublished)))
        }
        ChangeKind::Update { old, new } => {
            let old_tuple = match old {
                Some(OldTuple::Key(t)) => Some((t, TupleRole::OldKey)),
                Some(OldTuple::Full(t)) => Some((t, TupleRole::OldFull)),
                None => None,
            };
            if let Some((old_tuple, role)) = old_tuple {
                encode_tuple(old_row, relation, old_tuple, None, role)?;
            }
            encode_tuple(row, relation, new, *old, TupleRole::New)?;
            if let Some(column) = missing_key(relation, row) {
                let unchanged_toast = relation.document_key_positions.iter().any(|(k, p)| {
                    k == column && p.is_some_and(|p| new.values.get(p) == Some(&TupleValue::UnchangedToast))
                });
                return Ok(key_missing(
                    column,
                    if unchanged_toast { KeyLoss::UnchangedToast } else { KeyLoss::NotPublished },
                ));
            }
            let key_changed = old_tuple.is_some()
                && !keyed_by_location
                && !relation.key_positions.is_empty()
                && relation.key_positions.iter().any(|p| old_row.value(*p) != row.value(*p));
            if key_changed {
                if let Some(column) = missing_key(relation, old_row).filter(|_| sides.old) {
                    return Ok(key_missing(column, KeyLoss::OldKey));
                }
                return Ok(Plan::KeyChange { delete_old: sides.old, create_new: sides.new });
            }
            Ok(if sides.new { Plan::Update { before: old_tuple.is_some() } } else { Plan::Skip })
        }
        ChangeKind::Delete { old } => {
            let (tuple, role) = match old {
                OldTuple::Key(t) => (t, TupleRole::OldKey),
                OldTuple::Full(t) => (t, TupleRole::OldFull),
            };
            encode_tuple(row, relation, tuple, None, role)?;
            Ok(missing_key(relation, row).map_or(Plan::Delete, |column| key_missing(column, KeyLoss::OldKey)))
        }
    }
}

/// The columns of a moved row (a [`Plan::KeyChange`]) whose values the server did not
/// resend (unchanged TOAST) and no old tuple supplied: the new key's document cannot be
/// merged onto the old key's, so they must be read from the table.
pub(super) fn unresent_toast_positions(new: &TupleData<'_>, row: &EncodedRow) -> Vec<usize> {
    new.values
        .iter()
        .enumerate()
        .filter(|(i, v)| **v == TupleValue::UnchangedToast && row.value(*i).is_none())
        .map(|(i, _)| i)
        .collect()
}

/// Write the documents of `plan` (not [`Plan::Skip`] or [`Plan::KeyMissing`]): the main one
/// into `document`, and the old key's delete of a key change, returned apart because it is
/// emitted first.
pub(super) fn write_documents(
    document: &mut Vec<u8>,
    relation: &RelationEntry,
    (row, old_row): (&EncodedRow, &EncodedRow),
    plan: Plan<'_>,
    source: &Source<'_>,
) -> Option<Vec<u8>> {
    let layout = &relation.layout;
    document.clear();
    let mut old_key_delete = None;
    match plan {
        Plan::Skip | Plan::KeyMissing { .. } => {}
        Plan::Create => document::write_document(document, layout, row, Op::Create, source, None),
        Plan::Update { before } => {
            document::write_document(document, layout, row, Op::Update, source, before.then_some((layout, old_row)));
        }
        Plan::Delete => document::write_document(document, layout, row, Op::Delete, source, None),
        Plan::KeyChange { delete_old, create_new } => {
            if delete_old {
                let mut delete = Vec::new();
                document::write_document(&mut delete, layout, old_row, Op::Delete, source, None);
                old_key_delete = Some(delete);
            }
            if create_new {
                document::write_document(document, layout, row, Op::Create, source, None);
            }
        }
    }
    old_key_delete
}

/// Encode a tuple's values into `row`. An unchanged TOAST value (which the server does not
/// send again) is taken from the old tuple when that carries it: a full old row carries
/// every column, an old key its replica identity's columns, unchanged out-of-line key
/// values included (PostgreSQL logs those since 13.7 and 14.3, so that the key is known).
/// Otherwise it is omitted, and the merge reduction keeps the stored value.
pub(super) fn encode_tuple(
    row: &mut EncodedRow,
    relation: &RelationEntry,
    tuple: &TupleData<'_>,
    old: Option<&OldTuple<'_>>,
    role: TupleRole,
) -> Result<(), value::ValueError> {
    row.reset(relation.types.len());
    for (index, ((value, ty), codec)) in tuple.values.iter().zip(&relation.types).zip(&relation.codecs).enumerate() {
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
                codec.encode(ty, text, &mut row.bytes)?;
                row.finish_value(index, start);
            }
            TupleValue::UnchangedToast | TupleValue::Binary(_) => {}
        }
    }
    Ok(())
}

/// The first collection key column that `row` has no value for.
pub(super) fn missing_key<'r>(relation: &'r RelationEntry, row: &EncodedRow) -> Option<&'r str> {
    relation
        .document_key_positions
        .iter()
        .find(|(_, position)| position.is_none_or(|p| row.value(p).is_none()))
        .map(|(column, _)| column.as_str())
}

/// Why a change arrived without a collection key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyLoss {
    /// The relation does not carry the column at all (a publication column list).
    NotPublished,
    /// An update left an out-of-line key value unchanged and the server sent no old key.
    UnchangedToast,
    /// The old key of an update or delete lacks the column.
    OldKey,
}

pub(super) fn missing_key_error(relation: &RelationEntry, column: &str, cause: KeyLoss) -> Error {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::capture::relations::BoundKeys;
    use crate::replication::pgoutput::{self, RelationColumn, ReplicaIdentity};
    use crate::value::PgType;
    use TupleValue::{Null, Text, UnchangedToast};

    /// Table `we"ird.t` with columns `id int4` (the key), `code text`, `big text`, `doc xml`;
    /// replica identity columns as flagged.
    pub(in crate::capture) fn relation(identity: ReplicaIdentity, flagged: &[&str]) -> RelationEntry {
        relation_keyed(identity, flagged, &["id"], &["id"])
    }

    /// [`relation`], with the binding's key columns `key` and collection key `document_key`.
    fn relation_keyed(
        identity: ReplicaIdentity,
        flagged: &[&str],
        key: &[&str],
        document_key: &[&str],
    ) -> RelationEntry {
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
        let builtin = |name: &str| PgType::Builtin { name: name.into(), typmod: -1 };
        let types = vec![builtin("int4"), builtin("text"), builtin("text"), builtin("xml")];
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        let document_key: Vec<String> = document_key.iter().map(|k| k.to_string()).collect();
        let bound = BoundKeys { index: 0, key_columns: &key, document_key: &document_key };
        RelationEntry::new(
            &message,
            types,
            Some(bound),
            ("flow", "watermarks"),
            &crate::value::ValueFormats::improved(),
        )
    }

    pub(in crate::capture) fn tuple(values: &[TupleValue<'static>]) -> TupleData<'static> {
        TupleData { values: values.to_vec() }
    }

    /// A row of `id`, and the other three columns as given.
    fn row(id: TupleValue<'static>, rest: [TupleValue<'static>; 3]) -> TupleData<'static> {
        tuple(&[id, rest[0], rest[1], rest[2]])
    }

    const ANY: [TupleValue<'static>; 3] = [Text(b"c"), Text(b"b"), Null];

    fn sides(new: bool, old: bool) -> Sides {
        Sides { new, old }
    }

    /// The stream's per-change work, once its buffers have grown: encoding the tuples and
    /// writing the document allocate nothing (the per-message cost the streaming benchmark
    /// measures; a key change's separate delete document is the one exception, not here).
    #[test]
    fn a_change_becomes_its_document_without_allocating_once_buffers_are_warm() {
        let entry = relation(ReplicaIdentity::Full, &["id", "code", "big", "doc"]);
        let new = row(Text(b"7"), [Text(b"co\"de"), Text(b"a big value"), Text(b"<a>x</a>")]);
        let old = OldTuple::Full(row(Text(b"7"), [Text(b"old"), UnchangedToast, Null]));
        let changes = [
            ChangeKind::Insert { new: &new },
            ChangeKind::Update { old: Some(&old), new: &new },
            ChangeKind::Update { old: None, new: &new },
            ChangeKind::Delete { old: &old },
        ];
        let source = Source {
            ts_ms: Some(1_700_000_000_000),
            schema: "we\"ird",
            table: "t",
            snapshot: false,
            loc: [1, 2, 3],
            txid: Some(9),
            tag: Some("tag"),
        };
        let (mut new_row, mut old_row, mut document) = (EncodedRow::default(), EncodedRow::default(), Vec::new());
        let mut apply = |change: &ChangeKind<'_, '_>| {
            let sides = sides_to_emit(None, &entry.key_positions, change);
            let plan = plan_documents(&mut new_row, &mut old_row, &entry, false, change, sides).unwrap();
            assert!(!matches!(plan, Plan::KeyChange { .. } | Plan::Skip | Plan::KeyMissing { .. }), "{plan:?}");
            assert!(write_documents(&mut document, &entry, (&new_row, &old_row), plan, &source).is_none());
            assert!(!document.is_empty());
        };
        for change in &changes {
            apply(change);
        }
        for change in &changes {
            let (calls, bytes) = crate::value::tests::allocations::during(|| apply(change));
            assert_eq!((calls, bytes), (0, 0), "allocations for one change once warm");
        }
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
    fn a_precise_backfill_drops_changes_of_rows_beyond_its_resume_key() {
        let orders = [KeyOrder::Integer];
        let scanned = [KeyValue::Integer(5)];
        let precise = Some(PreciseBackfill { orders: &orders, scanned: Some(&scanned) });
        let (read, unread) = (row(Text(b"3"), ANY), row(Text(b"7"), ANY));
        let filter = |change: &ChangeKind<'_, '_>| sides_to_emit(precise, &[0], change);
        assert_eq!(filter(&ChangeKind::Insert { new: &read }), sides(true, false));
        assert_eq!(filter(&ChangeKind::Insert { new: &unread }), sides(false, false));
        // The resume key itself is read (inclusive).
        assert_eq!(filter(&ChangeKind::Insert { new: &row(Text(b"5"), ANY) }), sides(true, false));
        let (old_read, old_unread) = (OldTuple::Key(read.clone()), OldTuple::Key(unread.clone()));
        assert_eq!(filter(&ChangeKind::Delete { old: &old_read }), sides(false, true));
        assert_eq!(filter(&ChangeKind::Delete { old: &old_unread }), sides(false, false));
        // A row moving out of the read range: its old key's document goes, the new one waits.
        assert_eq!(filter(&ChangeKind::Update { old: Some(&old_read), new: &unread }), sides(false, true));
        assert_eq!(filter(&ChangeKind::Update { old: Some(&old_unread), new: &read }), sides(true, false));
        // Without an old key (the key did not change) both sides follow the new row.
        assert_eq!(filter(&ChangeKind::Update { old: None, new: &unread }), sides(false, false));
        // Before the first chunk nothing is read; other modes emit everything.
        let nothing_read = Some(PreciseBackfill { orders: &orders, scanned: None });
        assert_eq!(sides_to_emit(nothing_read, &[0], &ChangeKind::Insert { new: &read }), sides(false, false));
        assert_eq!(sides_to_emit(None, &[0], &ChangeKind::Insert { new: &unread }), sides(true, false));
        assert_eq!(sides_to_emit(None, &[0], &ChangeKind::Delete { old: &old_unread }), sides(false, true));
    }

    #[test]
    fn a_precise_backfill_takes_an_unchanged_out_of_line_key_from_the_old_row() {
        let orders = [KeyOrder::Text];
        let scanned = [KeyValue::Bytes(b"m".to_vec())];
        let precise = Some(PreciseBackfill { orders: &orders, scanned: Some(&scanned) });
        let filter = |change: &ChangeKind<'_, '_>| sides_to_emit(precise, &[0], change);
        // FULL identity: the update's new row leaves the TOASTed key out, the old row has it.
        let new = row(UnchangedToast, [Text(b"changed"), Null, Null]);
        let beyond = OldTuple::Full(row(Text(b"zebra"), ANY));
        // Dropped like the later delete of the same row: the backfill reads both later.
        assert_eq!(filter(&ChangeKind::Update { old: Some(&beyond), new: &new }), sides(false, false));
        assert_eq!(filter(&ChangeKind::Delete { old: &beyond }), sides(false, false));
        let within = OldTuple::Full(row(Text(b"apple"), ANY));
        assert_eq!(filter(&ChangeKind::Update { old: Some(&within), new: &new }), sides(true, true));
        assert_eq!(filter(&ChangeKind::Delete { old: &within }), sides(false, true));
    }

    #[test]
    fn a_change_whose_key_cannot_be_computed_is_emitted() {
        let orders = [KeyOrder::Integer];
        let scanned = [KeyValue::Integer(5)];
        let precise = Some(PreciseBackfill { orders: &orders, scanned: Some(&scanned) });
        let emitted = |key_positions: &[usize], new: TupleData<'static>| {
            sides_to_emit(precise, key_positions, &ChangeKind::Insert { new: &new }).new
        };
        assert!(!emitted(&[0], row(Text(b"7"), ANY)), "the control: a computable key beyond the resume key");
        // The relation does not carry the key column (fewer positions than key columns).
        assert!(emitted(&[], row(Text(b"7"), ANY)));
        assert!(emitted(&[0], row(Null, ANY)));
        assert!(emitted(&[0], row(UnchangedToast, ANY)), "unchanged TOAST and no old row");
        assert!(emitted(&[0], row(Text(b"seven"), ANY)), "not an integer");
    }

    #[test]
    fn changes_become_the_documents_of_their_keys() {
        let entry = relation(ReplicaIdentity::Default, &["id"]);
        let (mut row_, mut old_row) = (EncodedRow::default(), EncodedRow::default());
        let mut plan = |change: ChangeKind<'_, '_>, sides: Sides, keyed_by_location: bool| {
            plan_documents(&mut row_, &mut old_row, &entry, keyed_by_location, &change, sides).unwrap()
        };
        let seven = row(Text(b"7"), ANY);
        let (old_seven, old_eight) =
            (OldTuple::Key(row(Text(b"7"), [Null; 3])), OldTuple::Key(row(Text(b"8"), [Null; 3])));
        assert_eq!(plan(ChangeKind::Insert { new: &seven }, sides(true, false), false), Plan::Create);
        assert_eq!(plan(ChangeKind::Insert { new: &seven }, sides(false, false), false), Plan::Skip);
        assert_eq!(plan(ChangeKind::Delete { old: &old_seven }, sides(false, true), false), Plan::Delete);
        let update = |old, new| ChangeKind::Update { old, new };
        assert_eq!(plan(update(None, &seven), sides(true, true), false), Plan::Update { before: false });
        assert_eq!(plan(update(Some(&old_seven), &seven), sides(true, true), false), Plan::Update { before: true });
        // Not read yet by a precise backfill, and the key is the same: nothing.
        assert_eq!(plan(update(Some(&old_seven), &seven), sides(false, true), false), Plan::Skip);
        // The key changed: delete the old key's document, create the new one, as filtered.
        for (new, old) in [(true, true), (true, false), (false, true)] {
            let expected = Plan::KeyChange { delete_old: old, create_new: new };
            assert_eq!(plan(update(Some(&old_eight), &seven), sides(new, old), false), expected);
        }
        // Keyed by location, a key change is an update like any other.
        assert_eq!(plan(update(Some(&old_eight), &seven), sides(true, true), true), Plan::Update { before: true });
    }

    #[test]
    fn changes_without_their_collection_key_say_why() {
        let missing = |column, cause| Plan::KeyMissing { column, cause };
        // The collection is keyed by `id` and `code`; the backfill orders by `id` only.
        let entry = relation_keyed(ReplicaIdentity::Default, &["id"], &["id"], &["id", "code"]);
        let (mut row_, mut old_row) = (EncodedRow::default(), EncodedRow::default());
        let mut plan = |change: ChangeKind<'_, '_>| {
            plan_documents(&mut row_, &mut old_row, &entry, false, &change, sides(true, true)).unwrap()
        };
        let old_key = OldTuple::Key(row(Text(b"8"), [Null; 3]));
        // The old key (the primary key) lacks `code`: a key change cannot delete its document.
        assert_eq!(
            plan(ChangeKind::Update { old: Some(&old_key), new: &row(Text(b"7"), ANY) }),
            missing("code", KeyLoss::OldKey)
        );
        assert_eq!(plan(ChangeKind::Delete { old: &old_key }), missing("code", KeyLoss::OldKey));
        // An unchanged out-of-line key with no old key, or a key column not published.
        let entry = relation(ReplicaIdentity::Default, &["id"]);
        let mut plan = |change: ChangeKind<'_, '_>| {
            plan_documents(&mut row_, &mut old_row, &entry, false, &change, sides(true, true)).unwrap()
        };
        let new = row(UnchangedToast, ANY);
        assert_eq!(plan(ChangeKind::Update { old: None, new: &new }), missing("id", KeyLoss::UnchangedToast));
        let unpublished = relation_keyed(ReplicaIdentity::Default, &["id"], &["id"], &["id", "gone"]);
        let change = ChangeKind::Insert { new: &row(Text(b"7"), ANY) };
        let plan = plan_documents(&mut row_, &mut old_row, &unpublished, false, &change, sides(true, false));
        assert_eq!(plan.unwrap(), missing("gone", KeyLoss::NotPublished));
        let error = missing_key_error(&unpublished, "gone", KeyLoss::NotPublished).to_string();
        assert!(
            error.starts_with("changes of table \"we\\\"ird.t\" arrive without its collection key column \"gone\""),
            "{error}"
        );
    }

    #[test]
    fn a_key_change_writes_the_old_keys_delete_apart_from_the_new_keys_create() {
        let entry = relation(ReplicaIdentity::Default, &["id"]);
        let (mut new_row, mut old_row) = (EncodedRow::default(), EncodedRow::default());
        let old = OldTuple::Key(row(Text(b"8"), [Null; 3]));
        let new = row(Text(b"7"), [Text(b"c"), UnchangedToast, Null]);
        let change = ChangeKind::Update { old: Some(&old), new: &new };
        let plan = plan_documents(&mut new_row, &mut old_row, &entry, false, &change, sides(true, true)).unwrap();
        assert_eq!(plan, Plan::KeyChange { delete_old: true, create_new: true });
        // `big` was not resent and no old tuple carries it: the session reads it.
        assert_eq!(unresent_toast_positions(&new, &new_row), [2]);
        let source =
            Source { ts_ms: None, schema: "s", table: "t", snapshot: false, loc: [1, 2, 3], txid: Some(9), tag: None };
        let mut document = b"stale".to_vec();
        let delete = write_documents(&mut document, &entry, (&new_row, &old_row), plan, &source).expect("a delete");
        let (delete, document) = (String::from_utf8(delete).unwrap(), String::from_utf8(document).unwrap());
        assert!(delete.starts_with(r#"{"_meta":{"op":"d""#) && delete.ends_with(r#""id":8}"#), "{delete}");
        assert!(
            document.starts_with(r#"{"_meta":{"op":"c""#) && document.ends_with(r#""code":"c","doc":null,"id":7}"#),
            "{document}"
        );
        // Filtered to the old side only: no create.
        let plan = Plan::KeyChange { delete_old: true, create_new: false };
        assert!(write_documents(&mut document.into_bytes(), &entry, (&new_row, &old_row), plan, &source).is_some());
        let mut document = Vec::new();
        assert_eq!(
            write_documents(&mut document, &entry, (&new_row, &old_row), Plan::Update { before: true }, &source),
            None
        );
        assert!(String::from_utf8(document).unwrap().starts_with(r#"{"_meta":{"before":{"id":8},"op":"u""#));
    }

    #[test]
    fn the_written_watermark_is_read_from_inserts_and_updates() {
        let mut entry = relation(ReplicaIdentity::Default, &["id"]);
        entry.watermark_position = Some(1);
        let written = row(Text(b"1"), [Text(b"w-42"), Null, Null]);
        let watermark = Some(&b"w-42"[..]);
        assert_eq!(written_watermark(&entry, &ChangeKind::Insert { new: &written }), watermark);
        assert_eq!(written_watermark(&entry, &ChangeKind::Update { old: None, new: &written }), watermark);
        let deleted = OldTuple::Full(written.clone());
        assert_eq!(written_watermark(&entry, &ChangeKind::Delete { old: &deleted }), None, "a delete writes none");
        let cleared = row(Text(b"1"), [Null, Null, Null]);
        assert_eq!(written_watermark(&entry, &ChangeKind::Insert { new: &cleared }), None);
        entry.watermark_position = None;
        assert_eq!(written_watermark(&entry, &ChangeKind::Insert { new: &written }), None);
    }
}
