//! Catalog queries (IO): tables, columns, keys and types.
//!
//! Everything is fetched in a handful of set-oriented queries with bound parameters, so
//! a database with tens of thousands of tables discovers in a few round trips and no
//! identifier ever reaches SQL text. The pure interpretation (key choice, schemas) is in
//! [`super::schema`].

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::types::Oid;
use tokio_postgres::Client;

use crate::value::{self, PgType};

/// Extension types with their own encoding, by (type name, owning extension). A type is
/// only treated as one of these when the catalog records it as a member of that extension,
/// so a user's own type that happens to be called `vector` is not mistaken for pgvector's.
const EXTENSION_TYPES: &[(&str, &str)] = &[
    ("citext", "citext"),
    ("hstore", "hstore"),
    ("ltree", "ltree"),
    ("lquery", "ltree"),
    ("ltxtquery", "ltree"),
    ("geometry", "postgis"),
    ("geography", "postgis"),
    ("vector", "vector"),
    ("halfvec", "vector"),
    ("sparsevec", "vector"),
];

/// Schemas that never hold user tables.
pub const SYSTEM_SCHEMAS: &[&str] =
    &["pg_catalog", "pg_internal", "information_schema", "catalog_history", "cron", "pglogical"];

/// A table as listed by [`list_tables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    /// `r` ordinary table or leaf partition, `p` partitioned table.
    pub relkind: char,
    pub is_partition: bool,
    /// Whether the publication publishes it (or, for a partitioned root, any of its leaves).
    pub published: bool,
}

/// A column of a table.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub number: i16,
    pub name: String,
    pub type_oid: Oid,
    pub typmod: i32,
    pub not_null: bool,
    pub generated: bool,
    pub comment: Option<String>,
}

/// Columns and key candidates of one table.
#[derive(Debug, Clone, Default)]
pub struct TableDetails {
    pub columns: Vec<ColumnInfo>,
    /// Primary key column names in key order (empty: none).
    pub primary_key: Vec<String>,
    /// Unique index candidates by index name: their columns in order. Whether every column
    /// is NOT NULL (declared, or through a NOT NULL domain) is decided with the resolved types.
    pub unique_indexes: BTreeMap<String, Vec<String>>,
}

const LIST_TABLES: &str = "
    SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relispartition
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND c.relpersistence = 'p'
      AND n.nspname <> ALL($1::text[])
      AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%'
      AND (cardinality($2::text[]) = 0 OR n.nspname = ANY($2::text[]))
    ORDER BY n.nspname, c.relname";

/// Tables published by a publication; a partitioned table counts when any of its
/// partitions is published (publications without `publish_via_partition_root` list leaves).
/// `pg_partition_ancestors` returns nothing for plain tables, hence the union.
const PUBLISHED_TABLES: &str = "
    WITH published AS (
        SELECT c.oid
        FROM pg_catalog.pg_publication_tables pt
        JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
        WHERE pt.pubname = $1
    )
    SELECT oid FROM published
    UNION
    SELECT a.relid FROM published p, pg_catalog.pg_partition_ancestors(p.oid) a";

const COLUMNS: &str = "
    SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull,
           a.attgenerated <> '', pg_catalog.col_description(a.attrelid, a.attnum)
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attrelid, a.attnum";

/// Primary key columns in key order; `INCLUDE` columns are not part of the key.
const PRIMARY_KEYS: &str = "
    SELECT i.indrelid, k.ord, a.attname
    FROM pg_catalog.pg_index i
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = ANY($1::oid[]) AND i.indisprimary AND k.ord <= i.indnkeyatts
    ORDER BY i.indrelid, k.ord";

/// Unique indexes usable as a key: valid, not partial, no expressions, key columns only.
const UNIQUE_INDEXES: &str = "
    SELECT i.indrelid, ic.relname, k.ord, a.attname
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND NOT i.indisprimary
      AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
    ORDER BY i.indrelid, ic.relname, k.ord";

/// All tables that could be captured, in (schema, name) order.
pub async fn list_tables(
    client: &Client,
    include_schemas: &[String],
    publication: &str,
) -> Result<Vec<TableRef>, tokio_postgres::Error> {
    let system: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| s.to_string()).collect();
    let rows = client.query(LIST_TABLES, &[&system, &include_schemas]).await?;
    let published: BTreeSet<Oid> =
        client.query(PUBLISHED_TABLES, &[&publication]).await?.iter().map(|row| row.get::<_, Oid>(0)).collect();
    Ok(rows
        .iter()
        .map(|row| {
            let oid: Oid = row.get(0);
            let relkind: String = row.get(3);
            TableRef {
                oid,
                schema: row.get(1),
                name: row.get(2),
                relkind: relkind.chars().next().unwrap_or('r'),
                is_partition: row.get(4),
                published: published.contains(&oid),
            }
        })
        .collect())
}

/// Columns and key candidates for the given tables.
pub async fn table_details(
    client: &Client,
    oids: &[Oid],
) -> Result<BTreeMap<Oid, TableDetails>, tokio_postgres::Error> {
    let mut details: BTreeMap<Oid, TableDetails> = oids.iter().map(|oid| (*oid, TableDetails::default())).collect();
    let oid_list: Vec<Oid> = oids.to_vec();
    for row in client.query(COLUMNS, &[&oid_list]).await? {
        let table: Oid = row.get(0);
        if let Some(entry) = details.get_mut(&table) {
            entry.columns.push(ColumnInfo {
                number: row.get(1),
                name: row.get(2),
                type_oid: row.get(3),
                typmod: row.get(4),
                not_null: row.get(5),
                generated: row.get(6),
                comment: row.get::<_, Option<String>>(7).filter(|c| !c.is_empty()),
            });
        }
    }
    for row in client.query(PRIMARY_KEYS, &[&oid_list]).await? {
        if let Some(entry) = details.get_mut(&row.get::<_, Oid>(0)) {
            entry.primary_key.push(row.get(2));
        }
    }
    for row in client.query(UNIQUE_INDEXES, &[&oid_list]).await? {
        if let Some(entry) = details.get_mut(&row.get::<_, Oid>(0)) {
            entry.unique_indexes.entry(row.get(1)).or_default().push(row.get(3));
        }
    }
    Ok(details)
}

/// One `pg_type` row, as needed to resolve a [`PgType`].
#[derive(Debug, Clone)]
struct TypeRow {
    namespace: String,
    name: String,
    typtype: char,
    category: char,
    /// `typdelim`: the element delimiter in array literals of this type.
    delimiter: char,
    length: i16,
    element: Oid,
    base: Oid,
    base_typmod: i32,
    not_null: bool,
    range_subtype: Oid,
    enum_labels: Vec<String>,
    fields: Vec<(String, Oid, i32)>,
    /// The extension the type belongs to, if any.
    extension: Option<String>,
}

/// The closure of types reachable from the given ones (elements, domain bases, range
/// subtypes, composite fields), with everything needed to resolve them.
const TYPE_CLOSURE: &str = "
    WITH RECURSIVE needed(oid) AS (
        SELECT unnest($1::oid[])
        UNION
        SELECT x FROM needed n
        JOIN pg_catalog.pg_type t ON t.oid = n.oid
        CROSS JOIN LATERAL unnest(
            ARRAY[t.typelem, t.typbasetype,
                  (SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid)]
            || ARRAY(SELECT a.atttypid FROM pg_catalog.pg_attribute a
                     WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
            || ARRAY(SELECT rr.rngsubtype FROM pg_catalog.pg_range rr
                     WHERE (to_jsonb(rr) ->> 'rngmultitypid')::oid = t.oid)
        ) AS x
        WHERE x IS NOT NULL AND x <> 0
    )
    SELECT t.oid, n.nspname, t.typname, t.typtype::text, t.typcategory::text, t.typlen,
           t.typelem, t.typbasetype, t.typtypmod, t.typnotnull,
           COALESCE((SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid),
                    (SELECT r.rngsubtype FROM pg_catalog.pg_range r
                     WHERE (to_jsonb(r) ->> 'rngmultitypid')::oid = t.oid), 0),
           ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
           ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                 WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
           ARRAY(SELECT a.atttypid FROM pg_catalog.pg_attribute a
                 WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
           ARRAY(SELECT a.atttypmod FROM pg_catalog.pg_attribute a
                 WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
           (SELECT e.extname::text FROM pg_catalog.pg_depend d
            JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
            WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = t.oid
              AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
            LIMIT 1),
           t.typdelim::text
    FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    WHERE t.oid IN (SELECT oid FROM needed)";

/// Resolved knowledge of the types in use, keyed by OID.
#[derive(Debug, Clone, Default)]
pub struct TypeRegistry {
    rows: BTreeMap<Oid, TypeRow>,
}

impl TypeRegistry {
    /// Load the given types and everything they refer to. Multirange subtypes are read
    /// through `to_jsonb` because `pg_range.rngmultitypid` only exists from PostgreSQL 14.
    pub async fn load(client: &Client, oids: &[Oid]) -> Result<TypeRegistry, tokio_postgres::Error> {
        let mut registry = TypeRegistry::default();
        registry.extend(client, oids).await?;
        Ok(registry)
    }

    /// Whether every one of `oids` is known.
    pub fn knows_all(&self, oids: &[Oid]) -> bool {
        oids.iter().all(|oid| self.rows.contains_key(oid))
    }

    /// Load more types (e.g. those of a column added while capturing).
    pub async fn extend(&mut self, client: &Client, oids: &[Oid]) -> Result<(), tokio_postgres::Error> {
        let wanted: Vec<Oid> = oids.iter().copied().filter(|oid| !self.rows.contains_key(oid)).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        for row in client.query(TYPE_CLOSURE, &[&wanted]).await? {
            let typtype: String = row.get(3);
            let category: String = row.get(4);
            let names: Vec<String> = row.get(12);
            let types: Vec<Oid> = row.get(13);
            let typmods: Vec<i32> = row.get(14);
            let fields =
                names.into_iter().zip(types).zip(typmods).map(|((name, oid), typmod)| (name, oid, typmod)).collect();
            self.rows.insert(
                row.get(0),
                TypeRow {
                    namespace: row.get(1),
                    name: row.get(2),
                    typtype: typtype.chars().next().unwrap_or('b'),
                    category: category.chars().next().unwrap_or('U'),
                    length: row.get(5),
                    element: row.get(6),
                    base: row.get(7),
                    base_typmod: row.get(8),
                    not_null: row.get(9),
                    range_subtype: row.get(10),
                    enum_labels: row.get(11),
                    fields,
                    extension: row.get(15),
                    delimiter: row.get::<_, String>(16).chars().next().unwrap_or(','),
                },
            );
        }
        Ok(())
    }

    /// The type of a column with type `oid` and modifier `typmod`.
    pub fn resolve(&self, oid: Oid, typmod: i32) -> PgType {
        self.resolve_depth(oid, typmod, 0)
    }

    fn resolve_depth(&self, oid: Oid, typmod: i32, depth: u32) -> PgType {
        let Some(row) = self.rows.get(&oid) else {
            return PgType::Unknown { name: format!("oid {oid}") };
        };
        // Composite types can nest (and a domain chain can be long); a cycle is impossible
        // in PostgreSQL, but a bound keeps a corrupt catalog from recursing forever.
        if depth > 32 {
            return PgType::Unknown { name: row.name.clone() };
        }
        let next = depth + 1;
        match row.typtype {
            'd' => PgType::Domain {
                name: row.name.clone(),
                base: Box::new(self.resolve_depth(row.base, row.base_typmod, next)),
                not_null: row.not_null,
            },
            'e' => PgType::Enum { name: row.name.clone(), labels: row.enum_labels.clone() },
            'r' => PgType::Range {
                name: row.name.clone(),
                subtype: Box::new(self.resolve_depth(row.range_subtype, -1, next)),
            },
            'm' => PgType::Multirange {
                name: row.name.clone(),
                subtype: Box::new(self.resolve_depth(row.range_subtype, -1, next)),
            },
            'c' => PgType::Composite {
                name: row.name.clone(),
                fields: row
                    .fields
                    .iter()
                    .map(|(name, oid, typmod)| (name.clone(), self.resolve_depth(*oid, *typmod, next)))
                    .collect(),
            },
            'b' if row.category == 'A'
                && row.length == -1
                && row.element != 0
                && !matches!(row.name.as_str(), "int2vector" | "oidvector") =>
            {
                let element = self.resolve_depth(row.element, typmod, next);
                let delimiter = self.rows.get(&row.element).map_or(',', |e| e.delimiter);
                if value::array_delimiter_known(&element, delimiter) {
                    PgType::Array { element: Box::new(element) }
                } else {
                    // The array encoder would split elements at the wrong character.
                    PgType::Unknown { name: row.name.clone() }
                }
            }
            'b' if row.namespace == "pg_catalog" => PgType::Builtin { name: row.name.clone(), typmod },
            'b' if EXTENSION_TYPES
                .iter()
                .any(|(name, extension)| row.name == *name && row.extension.as_deref() == Some(*extension)) =>
            {
                PgType::Extension { name: row.name.clone() }
            }
            _ => PgType::Unknown { name: row.name.clone() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(namespace: &str, name: &str) -> TypeRow {
        TypeRow {
            namespace: namespace.into(),
            name: name.into(),
            typtype: 'b',
            category: 'U',
            delimiter: ',',
            length: -1,
            element: 0,
            base: 0,
            base_typmod: -1,
            not_null: false,
            range_subtype: 0,
            enum_labels: Vec::new(),
            fields: Vec::new(),
            extension: None,
        }
    }

    fn array_of(name: &str, element: Oid) -> TypeRow {
        TypeRow { category: 'A', element, ..base("public", name) }
    }

    fn registry(rows: Vec<(Oid, TypeRow)>) -> TypeRegistry {
        TypeRegistry { rows: rows.into_iter().collect() }
    }

    #[test]
    fn extension_types_are_recognized_only_as_members_of_their_extension() {
        let registry = registry(vec![
            (1, TypeRow { extension: Some("vector".into()), ..base("public", "vector") }),
            (2, base("public", "vector")),
            (3, TypeRow { extension: Some("other".into()), ..base("public", "hstore") }),
            (4, TypeRow { extension: Some("ltree".into()), ..base("ext", "ltxtquery") }),
            (5, TypeRow { extension: Some("postgis".into()), delimiter: ':', ..base("public", "geometry") }),
            (6, array_of("_geometry", 5)),
        ]);
        assert_eq!(registry.resolve(1, -1), PgType::Extension { name: "vector".into() });
        assert_eq!(registry.resolve(2, -1), PgType::Unknown { name: "vector".into() });
        assert_eq!(registry.resolve(3, -1), PgType::Unknown { name: "hstore".into() });
        assert_eq!(registry.resolve(4, -1), PgType::Extension { name: "ltxtquery".into() });
        assert_eq!(
            registry.resolve(6, -1),
            PgType::Array { element: Box::new(PgType::Extension { name: "geometry".into() }) }
        );
    }

    #[test]
    fn arrays_with_an_unknown_delimiter_get_the_catch_all() {
        let registry = registry(vec![
            (1, TypeRow { delimiter: ';', ..base("public", "odd") }),
            (2, array_of("_odd", 1)),
            (3, TypeRow { delimiter: ';', ..base("pg_catalog", "box") }),
            (4, array_of("_box", 3)),
            (5, TypeRow { typtype: 'd', base: 3, delimiter: ';', ..base("public", "box_domain") }),
            (6, array_of("_box_domain", 5)),
        ]);
        assert_eq!(registry.resolve(2, -1), PgType::Unknown { name: "_odd".into() });
        assert!(matches!(registry.resolve(4, -1), PgType::Array { .. }));
        // A domain has its base type's delimiter, and the encoder looks through domains.
        assert!(matches!(registry.resolve(6, -1), PgType::Array { .. }));
    }

    #[test]
    fn unknown_oids_and_deep_nesting_do_not_panic() {
        assert_eq!(TypeRegistry::default().resolve(42, -1), PgType::Unknown { name: "oid 42".into() });
        // A corrupt catalog with a cycle (a domain over itself) stops at the depth bound.
        let cyclic = registry(vec![(1, TypeRow { typtype: 'd', base: 1, ..base("public", "loop") })]);
        let mut ty = cyclic.resolve(1, -1);
        let mut depth = 0;
        while let PgType::Domain { base, .. } = ty {
            ty = *base;
            depth += 1;
        }
        assert_eq!(ty, PgType::Unknown { name: "loop".into() });
        assert!(depth > 30);
    }
}
