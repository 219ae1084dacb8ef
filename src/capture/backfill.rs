//! Backfill chunk queries (IO) and their pure planning.
//!
//! Keyed tables are read in key order with keyset pagination:
//! `SELECT .. FROM t WHERE (k1, k2) > ($1, $2) ORDER BY k1, k2 LIMIT n`, where the resume
//! values are cast back to each key column's own type so that PostgreSQL, with its own
//! operators and collations, does every comparison; this code never has to agree with the
//! database about ordering. Keyless tables are read by CTID page ranges (a TID range scan),
//! counting pages over every leaf partition so that partitioned roots of any depth are
//! covered. Every column is selected as `::text`: the binary form of `text` is its UTF-8
//! bytes, so rows stream in PostgreSQL's pinned text output — the same input the
//! replication path gives the shared value encoder.
//!
//! Identifiers are always quoted; type names come from `format_type`, which quotes them.

use crate::discovery::DiscoveredTable;
use crate::pg::quote_identifier;

/// What one chunk query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkPlan {
    /// Keyset page: rows after `after` (None: from the start), at most `limit`.
    Keyed { after: Option<Vec<Option<String>>>, limit: i64 },
    /// CTID page range `(after_block, 0) < ctid <= (until_block, 0)`.
    Keyless { after_block: u64, until_block: u64 },
}

/// The columns a backfill emits: all but generated ones (which logical replication does
/// not carry either, so backfill and replication documents have the same shape).
pub fn emitted_columns(table: &DiscoveredTable) -> Vec<usize> {
    (0..table.columns.len()).filter(|i| !table.columns[*i].generated).collect()
}

/// SQL of one chunk. Parameters: resume key values as text (keyed) or the two TIDs as
/// text (keyless). `key_types` are `format_type` names of the key columns.
pub fn chunk_sql(
    table: &DiscoveredTable,
    key_columns: &[String],
    key_types: &[String],
    collate_c: &[bool],
    plan: &ChunkPlan,
    filter: Option<&str>,
) -> String {
    // Precise backfills order text keys bytewise, as the capture compares them.
    // Key references are qualified with the table's alias: a bare name in ORDER BY would
    // refer to the *output* column of that name, which is the key's text form.
    let key_expression = |i: usize, k: &String| {
        if collate_c.get(i).copied().unwrap_or(false) {
            format!("src.{} COLLATE \"C\"", quote_identifier(k))
        } else {
            format!("src.{}", quote_identifier(k))
        }
    };
    let relation = format!("{}.{}", quote_identifier(&table.schema), quote_identifier(&table.name));
    let mut select: Vec<String> = key_columns.iter().map(|k| format!("{}::text", quote_identifier(k))).collect();
    select.extend(emitted_columns(table).iter().map(|i| column_text(&table.columns[*i])));
    let mut sql = format!("SELECT {} FROM {relation} AS src", select.join(", "));
    let mut conditions = Vec::new();
    match plan {
        ChunkPlan::Keyed { after, .. } => {
            if after.is_some() {
                let columns: Vec<String> = key_columns.iter().enumerate().map(|(i, k)| key_expression(i, k)).collect();
                let values: Vec<String> = key_types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| {
                        let collate = if collate_c.get(i).copied().unwrap_or(false) { " COLLATE \"C\"" } else { "" };
                        format!("CAST(${}::text AS {ty}){collate}", i + 1)
                    })
                    .collect();
                conditions.push(format!("({}) > ({})", columns.join(", "), values.join(", ")));
            }
        }
        ChunkPlan::Keyless { .. } => {
            conditions.push("src.ctid > $1::text::tid AND src.ctid <= $2::text::tid".to_string())
        }
    }
    if let Some(filter) = filter {
        // The newline ends a `--` comment that closes the filter (it is checked to be one
        // expression when the configuration is read: config/backfill_filter.rs).
        conditions.push(format!("({filter}\n)"));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if let ChunkPlan::Keyed { limit, .. } = plan {
        let order: Vec<String> = key_columns.iter().enumerate().map(|(i, k)| key_expression(i, k)).collect();
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", order.join(", ")));
    }
    sql
}

/// A column as PostgreSQL text. A `::text` cast is the type's output function for every
/// type but the few with their own cast to text; the value encoder normalizes bool, char(n)
/// and inet, and xml (whose cast keeps the `<?xml ...?>` declaration the output function
/// drops) goes through `format('%s')`, which calls the output function.
fn column_text(column: &crate::discovery::Column) -> String {
    let name = quote_identifier(&column.name);
    let mut ty = &column.pg_type;
    while let crate::value::PgType::Domain { base, .. } = ty {
        ty = base;
    }
    match ty {
        crate::value::PgType::Builtin { name: type_name, .. } if type_name == "xml" => {
            format!("CASE WHEN {name} IS NULL THEN NULL ELSE pg_catalog.format('%s', {name}) END")
        }
        _ => format!("{name}::text"),
    }
}

/// `format_type` names of a table's columns, by column name, and each column's order
/// signature: the type name plus its collation when that is not the type's default (see
/// `retype`: a resume key is only valid under the signature it was read with).
pub const COLUMN_TYPES_SQL: &str = "
    SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
           pg_catalog.format_type(a.atttypid, a.atttypmod)
             || CASE WHEN a.attcollation <> t.typcollation
                     THEN ' COLLATE ' || COALESCE(pg_catalog.quote_ident(co.collname), a.attcollation::text) ELSE '' END
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
    WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped";

/// [`COLUMN_TYPES_SQL`] for many tables at once (`$1`: their OIDs).
pub const COLUMN_TYPES_BATCH_SQL: &str = "
    SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
           pg_catalog.format_type(a.atttypid, a.atttypmod)
             || CASE WHEN a.attcollation <> t.typcollation
                     THEN ' COLLATE ' || COALESCE(pg_catalog.quote_ident(co.collname), a.attcollation::text) ELSE '' END
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
    WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped";

/// [`TABLE_ROWS_ESTIMATE_SQL`] for many tables at once (`$1`: their OIDs).
pub const TABLE_ROWS_ESTIMATE_BATCH_SQL: &str = "
    SELECT r.oid,
           (SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::bigint
            FROM pg_catalog.pg_partition_tree(r.oid::regclass) t
            JOIN pg_catalog.pg_class c ON c.oid = t.relid)
    FROM unnest($1::oid[]) AS r(oid)";

/// Largest page number over the table and all its partitions (any depth), and the leaf count.
pub const TABLE_PAGES_SQL: &str = "
    SELECT COALESCE(max(pg_catalog.pg_relation_size(t.relid) / current_setting('block_size')::bigint), 0)::bigint,
           count(*) FILTER (WHERE t.isleaf)::bigint
    FROM pg_catalog.pg_partition_tree($1::oid::regclass) t";

/// The planner's estimate of a table's rows, over all partitions (for progress reports).
pub const TABLE_ROWS_ESTIMATE_SQL: &str = "
    SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::bigint
    FROM pg_catalog.pg_partition_tree($1::oid::regclass) t
    JOIN pg_catalog.pg_class c ON c.oid = t.relid";

/// Pages per keyless chunk: the Go connector's heuristic of ~100 rows per page, spread
/// over the partitions (each chunk reads the same page window of every partition).
pub fn pages_per_chunk(chunk_size: i64, partitions: i64) -> u64 {
    let rows_per_page = 100 * partitions.max(1);
    u64::try_from(chunk_size / rows_per_page).unwrap_or(0) + 1
}

/// The page beyond which a keyless backfill is complete: 5% headroom over the current
/// size, since rows written meanwhile arrive through replication anyway.
pub fn keyless_end_page(max_page: i64) -> u64 {
    let pages = u64::try_from(max_page.max(0)).unwrap_or(0);
    pages + pages / 20 + 1
}

/// Parse a keyless resume position `"(block,offset)"`.
pub fn parse_ctid(text: &str) -> Option<(u64, u64)> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (block, offset) = inner.split_once(',')?;
    Some((block.trim().parse().ok()?, offset.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Column;
    use crate::value::PgType;

    fn table() -> DiscoveredTable {
        let column = |name: &str, generated: bool| Column {
            name: name.into(),
            type_oid: 23,
            typmod: -1,
            pg_type: PgType::Builtin { name: "int4".into(), typmod: -1 },
            nullable: false,
            generated,
            comment: None,
        };
        DiscoveredTable {
            oid: 1,
            schema: "My\"Schema".into(),
            name: "t".into(),
            relkind: 'r',
            is_partition: false,
            published: true,
            columns: vec![column("id", false), column("Data", false), column("g", true)],
            key: vec!["id".into()],
            key_is_unique_index: false,
        }
    }

    #[test]
    fn keyed_chunks_quote_everything_and_cast_resume_values() {
        let first = chunk_sql(
            &table(),
            &["id".into()],
            &["integer".into()],
            &[false],
            &ChunkPlan::Keyed { after: None, limit: 10 },
            None,
        );
        assert_eq!(
            first,
            r#"SELECT "id"::text, "id"::text, "Data"::text FROM "My""Schema"."t" AS src ORDER BY src."id" LIMIT 10"#
        );
        let next = chunk_sql(
            &table(),
            &["id".into()],
            &["integer".into()],
            &[false],
            &ChunkPlan::Keyed { after: Some(vec![Some("5".into())]), limit: 10 },
            Some("id % 2 = 0"),
        );
        assert_eq!(
            next,
            r#"SELECT "id"::text, "id"::text, "Data"::text FROM "My""Schema"."t" AS src WHERE (src."id") > (CAST($1::text AS integer)) AND (id % 2 = 0
) ORDER BY src."id" LIMIT 10"#
        );
    }

    #[test]
    fn precise_text_keys_order_and_compare_bytewise() {
        let sql = chunk_sql(
            &table(),
            &["Data".into(), "id".into()],
            &["text".into(), "integer".into()],
            &[true, false],
            &ChunkPlan::Keyed { after: Some(vec![Some("a".into()), Some("1".into())]), limit: 2 },
            None,
        );
        assert!(sql.ends_with(r#"WHERE (src."Data" COLLATE "C", src."id") > (CAST($1::text AS text) COLLATE "C", CAST($2::text AS integer)) ORDER BY src."Data" COLLATE "C", src."id" LIMIT 2"#), "{sql}");
    }

    #[test]
    fn keyless_chunks_use_tid_ranges() {
        let sql = chunk_sql(&table(), &[], &[], &[], &ChunkPlan::Keyless { after_block: 0, until_block: 5 }, None);
        assert_eq!(
            sql,
            r#"SELECT "id"::text, "Data"::text FROM "My""Schema"."t" AS src WHERE src.ctid > $1::text::tid AND src.ctid <= $2::text::tid"#
        );
        assert_eq!(parse_ctid("(12,0)"), Some((12, 0)));
        assert_eq!(parse_ctid("12,0"), None);
        assert_eq!(pages_per_chunk(50_000, 1), 501);
        assert_eq!(pages_per_chunk(1, 3), 1);
        assert_eq!(keyless_end_page(100), 106);
    }
}
