//! The relation cache: what the session knows of each table the stream names.
//!
//! pgoutput sends a Relation message before the first change of a table in a session, and
//! again whenever the table's shape (or the publication) changed; changes then refer to the
//! table by OID and list their values in the order of that message's columns. Each entry
//! records what turning such a change into a document needs, computed once per Relation
//! message rather than per change:
//!
//! - the column names and types, each column's value encoder, and the document layout
//!   built from them;
//! - where the binding's key columns are (backfill order, key-change detection) and where
//!   each collection key column is (`None`: the relation does not carry it, and a change
//!   would arrive without its document's key);
//! - the replica identity's columns (the old key of updates and deletes), and the
//!   [`IdentityGap`] when that identity leaves out collection key columns;
//! - whether the table is the watermarks table, and where its `watermark` column is.
//!
//! Positions are looked up by column name, never assumed: a table whose columns were
//! renamed, dropped or reordered since discovery (or a publication column list) yields
//! positions for the columns that are there and `None` or nothing for the others, which the
//! change path reports or treats as "key unknown" (see `changes`).
//!
//! Building an entry is pure; the session does the IO around it (type lookups, a
//! partition's root, re-reading a backfilling table's columns, the publication check).

use std::collections::BTreeMap;

use super::document::DocumentLayout;
use crate::error::Error;
use crate::pg::quote_identifier;
use crate::replication::pgoutput::{self, ReplicaIdentity};
use crate::validate::{display_name, qualified};
use crate::value::{ColumnCodec, PgType};

/// A relation announced by a Relation message.
#[derive(Debug)]
pub(super) struct RelationEntry {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) types: Vec<PgType>,
    /// Each column's encoder, decided once here (a key column's floats encode as key
    /// strings): a change then does no type-name lookup per value.
    pub(super) codecs: Vec<ColumnCodec>,
    /// The capture's value formats, which `codecs` were made for.
    pub(super) formats: crate::value::ValueFormats,
    pub(super) layout: DocumentLayout,
    pub(super) binding: Option<usize>,
    /// Positions of the binding's key columns among the relation's columns.
    pub(super) key_positions: Vec<usize>,
    /// Column names, in the order tuples list their values.
    pub(super) columns: Vec<String>,
    /// Where each column of the binding's collection key is among the relation's columns
    /// (`None`: the relation does not carry it).
    pub(super) document_key_positions: Vec<(String, Option<usize>)>,
    /// Positions of the replica identity's columns (the old key of updates and deletes).
    pub(super) identity_positions: Vec<usize>,
    /// The replica identity, when its old key leaves out collection key columns: updates
    /// and deletes then cannot be matched to their documents (see [`IdentityGap`]).
    pub(super) identity_gap: Option<IdentityGap>,
    pub(super) is_watermarks: bool,
    pub(super) watermark_position: Option<usize>,
}

/// The binding a relation's changes go to, as far as building its entry needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct BoundKeys<'a> {
    pub(super) index: usize,
    /// Key columns used for backfill order and key-change detection (empty: keyless).
    pub(super) key_columns: &'a [String],
    /// The columns of the collection key (empty: the key is not made of columns).
    pub(super) document_key: &'a [String],
}

impl RelationEntry {
    /// The entry for `relation`, whose columns have `types` (resolved by the session), bound
    /// to `binding` if any. `watermarks` is the watermarks table's `(schema, name)`.
    pub(super) fn new(
        relation: &pgoutput::Relation<'_>,
        types: Vec<PgType>,
        binding: Option<BoundKeys<'_>>,
        watermarks: (&str, &str),
        formats: &crate::value::ValueFormats,
    ) -> RelationEntry {
        let column_names: Vec<&str> = relation.columns.iter().map(|c| c.name).collect();
        let position = |column: &str| column_names.iter().position(|c| *c == column);
        let key_positions: Vec<usize> =
            binding.map(|b| b.key_columns.iter().filter_map(|k| position(k)).collect()).unwrap_or_default();
        let document_key_positions: Vec<(String, Option<usize>)> =
            binding.map(|b| b.document_key.iter().map(|k| (k.clone(), position(k))).collect()).unwrap_or_default();
        let identity_positions: Vec<usize> =
            relation.columns.iter().enumerate().filter(|(_, c)| c.is_key).map(|(i, _)| i).collect();
        let codecs = types
            .iter()
            .enumerate()
            .map(|(index, ty)| ColumnCodec::new(ty, key_positions.contains(&index), formats))
            .collect();
        RelationEntry {
            types,
            codecs,
            formats: *formats,
            layout: DocumentLayout::new(&column_names),
            watermark_position: position("watermark"),
            columns: column_names.iter().map(|c| c.to_string()).collect(),
            namespace: relation.namespace.to_string(),
            name: relation.name.to_string(),
            binding: binding.map(|b| b.index),
            key_positions,
            identity_gap: IdentityGap::of(relation, &document_key_positions),
            document_key_positions,
            identity_positions,
            is_watermarks: (relation.namespace, relation.name) == watermarks,
        }
    }
}

/// The relations announced in this session, by OID.
#[derive(Debug, Default)]
pub(super) struct Relations {
    by_oid: BTreeMap<u32, RelationEntry>,
}

impl Relations {
    pub(super) fn get(&self, oid: &u32) -> Option<&RelationEntry> {
        self.by_oid.get(oid)
    }

    /// The relation a change refers to: its Relation message always comes first.
    pub(super) fn of_change(&self, oid: u32) -> Result<&RelationEntry, Error> {
        self.by_oid
            .get(&oid)
            .ok_or_else(|| Error::Internal(format!("a change arrived for relation {oid} before its Relation message")))
    }

    /// Whether a Relation message of `oid` arrived before (a second one announces a change).
    pub(super) fn contains_key(&self, oid: &u32) -> bool {
        self.by_oid.contains_key(oid)
    }

    /// Record (or replace) the entry of `oid`.
    pub(super) fn insert(&mut self, oid: u32, entry: RelationEntry) {
        self.by_oid.insert(oid, entry);
    }
}

/// A replica identity whose old key leaves out collection key columns. Updates and deletes
/// then arrive without the key: a delete cannot name its document, and a change of the key
/// cannot be recognized, so the old key's document would linger in the collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IdentityGap {
    /// `USING INDEX` (else `DEFAULT`: the primary key).
    pub(super) using_index: bool,
    /// The identity's columns.
    identity: Vec<String>,
    /// The collection key columns it leaves out.
    missing: Vec<String>,
}

impl IdentityGap {
    /// The gap of `relation`'s identity against the collection key, if any. A relation
    /// without identity columns has none: the server refuses its updates and deletes.
    pub(super) fn of(relation: &pgoutput::Relation<'_>, key: &[(String, Option<usize>)]) -> Option<IdentityGap> {
        let using_index = match relation.replica_identity {
            ReplicaIdentity::Index => true,
            ReplicaIdentity::Default => false,
            ReplicaIdentity::Full | ReplicaIdentity::Nothing => return None,
        };
        let identity: Vec<String> = relation.columns.iter().filter(|c| c.is_key).map(|c| c.name.to_string()).collect();
        if identity.is_empty() {
            return None;
        }
        let missing: Vec<String> = key
            .iter()
            .filter(|(_, position)| position.and_then(|p| relation.columns.get(p)).is_some_and(|c| !c.is_key))
            .map(|(column, _)| column.clone())
            .collect();
        (!missing.is_empty()).then_some(IdentityGap { using_index, identity, missing })
    }

    /// The error that ends the capture. `index` names the identity's index (the
    /// replication stream names only its columns), when it could be looked up.
    pub(super) fn describe(&self, relation: &RelationEntry, index: Option<&str>) -> Error {
        let name = display_name(&relation.namespace, &relation.name);
        let table = qualified(&relation.namespace, &relation.name);
        let list = |columns: &[String]| columns.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
        let identity = match (self.using_index, index) {
            (true, Some(index)) => {
                format!("REPLICA IDENTITY USING INDEX {} (columns {})", quote_identifier(index), list(&self.identity))
            }
            (true, None) => format!("REPLICA IDENTITY USING INDEX on columns {}", list(&self.identity)),
            (false, _) => format!("REPLICA IDENTITY DEFAULT, the primary key (columns {})", list(&self.identity)),
        };
        let plural = if self.missing.len() == 1 { "" } else { "s" };
        Error::user(
            format!(
                "table {name} has {identity}, which leaves out collection key column{plural} {}: its updates and deletes arrive without the key, so the capture cannot tell which document they change",
                list(&self.missing)
            ),
            format!("run ALTER TABLE {table} REPLICA IDENTITY FULL; (or REPLICA IDENTITY USING INDEX on a unique index of the key columns), then increment the binding's backfill counter: the changes already written lack the key, and the backfill reads the table again"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::pgoutput::RelationColumn;

    /// A Relation message of table `we"ird.t` with `columns` (name, in the replica identity).
    fn message(identity: ReplicaIdentity, columns: &[(&'static str, bool)]) -> pgoutput::Relation<'static> {
        let columns = columns.iter().map(|(name, is_key)| RelationColumn {
            is_key: *is_key,
            name,
            type_oid: 25,
            type_modifier: -1,
        });
        pgoutput::Relation {
            xid: None,
            oid: 1,
            namespace: "we\"ird",
            name: "t",
            replica_identity: identity,
            columns: columns.collect(),
        }
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The entry of `relation` bound to binding 3 with key columns `key` and collection key
    /// columns `document_key`.
    fn entry(relation: &pgoutput::Relation<'_>, key: &[&str], document_key: &[&str]) -> RelationEntry {
        let (key, document_key) = (strings(key), strings(document_key));
        let bound = BoundKeys { index: 3, key_columns: &key, document_key: &document_key };
        let types = vec![PgType::Builtin { name: "text".into(), typmod: -1 }; relation.columns.len()];
        RelationEntry::new(
            relation,
            types,
            Some(bound),
            ("flow", "watermarks"),
            &crate::value::ValueFormats::improved(),
        )
    }

    #[test]
    fn key_positions_are_found_by_name_whatever_the_column_order() {
        let relation = message(ReplicaIdentity::Default, &[("code", false), ("id", true), ("tenant", true)]);
        let entry = entry(&relation, &["tenant", "id"], &["tenant", "id"]);
        assert_eq!(entry.binding, Some(3));
        assert_eq!(entry.columns, ["code", "id", "tenant"]);
        assert_eq!(entry.key_positions, [2, 1]);
        assert_eq!(entry.document_key_positions, [("tenant".to_string(), Some(2)), ("id".to_string(), Some(1))]);
        assert_eq!(entry.identity_positions, [1, 2]);
        assert_eq!(entry.identity_gap, None);
        assert!(!entry.is_watermarks);
        assert_eq!(entry.watermark_position, None);
    }

    #[test]
    fn key_columns_the_relation_does_not_carry_have_no_position() {
        // `id` renamed to `ident` (or dropped, or left out by a column list) since discovery.
        let relation = message(ReplicaIdentity::Default, &[("ident", true), ("code", false)]);
        let entry = entry(&relation, &["id", "code"], &["id"]);
        // Fewer key positions than key columns: the key cannot be computed from a change.
        assert_eq!(entry.key_positions, [1]);
        assert_eq!(entry.document_key_positions, [("id".to_string(), None)]);
        // Not a gap of the identity: the column is not there at all (reported per change).
        assert_eq!(entry.identity_gap, None);
        // A relation of no binding (an unbound table) has no keys.
        let unbound = RelationEntry::new(
            &relation,
            Vec::new(),
            None,
            ("flow", "watermarks"),
            &crate::value::ValueFormats::improved(),
        );
        assert_eq!((unbound.binding, unbound.key_positions.len(), unbound.document_key_positions.len()), (None, 0, 0));
        assert_eq!(unbound.identity_positions, [0]);
    }

    #[test]
    fn identities_that_leave_out_key_columns_are_gaps() {
        let columns = |flagged: &[&str]| -> Vec<(&'static str, bool)> {
            ["id", "code", "big", "doc"].into_iter().map(|name| (name, flagged.contains(&name))).collect()
        };
        let gap_of =
            |identity, flagged: &[&str]| entry(&message(identity, &columns(flagged)), &["id"], &["id"]).identity_gap;
        let relation = message(ReplicaIdentity::Index, &columns(&["code"]));
        let entry = entry(&relation, &["id"], &["id"]);
        let gap = entry.identity_gap.clone().expect("a gap");
        assert_eq!(gap.missing, ["id"]);
        let error = gap.describe(&entry, Some("t_code"));
        assert_eq!(
            error.to_string(),
            "table \"we\\\"ird.t\" has REPLICA IDENTITY USING INDEX \"t_code\" (columns \"code\"), which leaves out collection key column \"id\": its updates and deletes arrive without the key, so the capture cannot tell which document they change"
        );
        assert!(error.hint().unwrap().starts_with("run ALTER TABLE \"we\"\"ird\".\"t\" REPLICA IDENTITY FULL;"));
        let error = gap.describe(&entry, None).to_string();
        assert!(error.contains("has REPLICA IDENTITY USING INDEX on columns \"code\", which"), "{error}");
        let gap = gap_of(ReplicaIdentity::Default, &["code"]).expect("a gap");
        let error = gap.describe(&entry, None).to_string();
        assert!(error.contains("has REPLICA IDENTITY DEFAULT, the primary key (columns \"code\")"), "{error}");
        // Identities holding the key, FULL, and tables without identity columns (whose
        // updates and deletes the server refuses) are fine.
        for (identity, flagged) in [
            (ReplicaIdentity::Default, &["id"][..]),
            (ReplicaIdentity::Index, &["code", "id"][..]),
            (ReplicaIdentity::Full, &["id", "code", "big", "doc"][..]),
            (ReplicaIdentity::Default, &[][..]),
            (ReplicaIdentity::Nothing, &[][..]),
        ] {
            assert_eq!(gap_of(identity, flagged), None, "{identity:?} {flagged:?}");
        }
    }

    #[test]
    fn the_watermarks_table_is_recognized_by_schema_and_name() {
        let columns = [("slot", true), ("watermark", false)];
        let mut relation = message(ReplicaIdentity::Default, &columns);
        (relation.namespace, relation.name) = ("flow", "watermarks");
        let watermarks = RelationEntry::new(
            &relation,
            Vec::new(),
            None,
            ("flow", "watermarks"),
            &crate::value::ValueFormats::improved(),
        );
        assert!(watermarks.is_watermarks);
        assert_eq!(watermarks.watermark_position, Some(1));
        // The same name in another schema, or another table of the schema, is not it.
        for (namespace, name) in [("public", "watermarks"), ("flow", "watermarks2")] {
            (relation.namespace, relation.name) = (namespace, name);
            assert!(
                !RelationEntry::new(
                    &relation,
                    Vec::new(),
                    None,
                    ("flow", "watermarks"),
                    &crate::value::ValueFormats::improved()
                )
                .is_watermarks
            );
        }
    }

    #[test]
    fn a_relation_message_replaces_what_an_earlier_one_said() {
        let mut relations = Relations::default();
        assert!(!relations.contains_key(&1));
        relations.insert(1, entry(&message(ReplicaIdentity::Default, &[("id", true)]), &["id"], &["id"]));
        relations.insert(1, entry(&message(ReplicaIdentity::Full, &[("x", true), ("id", true)]), &["id"], &["id"]));
        assert!(relations.contains_key(&1));
        assert_eq!(relations.get(&1).map(|r| r.key_positions.clone()), Some(vec![1]));
        assert!(relations.get(&2).is_none());
        let error = relations.of_change(2).expect_err("not announced").to_string();
        assert_eq!(error, "internal error: a change arrived for relation 2 before its Relation message");
    }
}
