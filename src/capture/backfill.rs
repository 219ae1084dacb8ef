//! Backfill chunk queries (IO) and their pure planning.
//!
//! Keyed tables are read in key order with keyset pagination:
//! `SELECT .. FROM t WHERE (k1, k2) > ($1, $2) ORDER BY k1, k2 LIMIT n`, where the resume
//! values are cast back to each key column's own type so that PostgreSQL, with its own
//! operators and collations, does every comparison; this code never has to agree with the
//! database about ordering. Keyless tables are read by windows of CTID pages: a TID range
//! scan from PostgreSQL 14 on; PostgreSQL 13 has no TID range scan (a range condition on
//! `ctid` is a sequential scan of the whole table, for every window), so there the window
//! is a list of every possible TID of its pages (`ctid = ANY(..)`, a TID scan), capped at
//! the relation's size. The same window applies to every leaf partition. A keyless
//! backfill ends only when the next window would start past the relation's size, measured
//! in the chunk's own transaction after its rows were read ([`RELATION_SQL`]); the same
//! query names the relation's files, so that a rewrite (VACUUM FULL, CLUSTER, ...), which
//! moves every row to another CTID, is noticed.
//!
//! Rows are read in binary (the driver's result format): the emitted columns of most
//! types, and the key columns whose text is not computed from an emitted cell
//! ([`KeyCell`]), are selected as `::text`, whose binary form is its UTF-8 bytes, so
//! they stream in PostgreSQL's pinned text output — the same input the replication path
//! gives the shared value encoder. The emitted columns of a few fixed-width built-in types
//! (integers, floats, `bool`, `date`, timestamps, `uuid`: [`reads_binary`]) are selected
//! as they are, in their binary send form, which saves the server formatting them and the
//! connector parsing them back; `value::BinaryCodec` turns them into exactly the JSON their
//! text would give. [`ReadForm::binary`] turns this off for a table (all text, as before):
//! the capture does so when a result column is not of the type the table was described
//! with (a column retyped under the backfill), so that such a column is read as today.
//!
//! Identifiers are always quoted; type names come from `format_type`, which quotes them.

use crate::discovery::DiscoveredTable;
use crate::pg::quote_identifier;

/// What one chunk query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkPlan {
    /// Keyset page: rows after `after` (None: from the start), at most `limit`.
    Keyed { after: Option<Vec<Option<String>>>, limit: i64 },
    /// Every row on pages `after_block..until_block` (`(after_block, 0) < ctid <= (until_block, 0)`).
    Keyless { after_block: u64, until_block: u64 },
}

/// How a keyless window is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeylessScan {
    /// `ctid > $1 AND ctid <= $2`: a TID range scan (PostgreSQL 14 and later).
    TidRange,
    /// `ctid = ANY(<every TID of the window's pages>)`: a TID scan, for PostgreSQL 13,
    /// which has no TID range scan.
    TidList,
}

impl KeylessScan {
    /// The form a server of this `server_version_num` reads efficiently.
    pub fn for_server(server_version_num: i32) -> KeylessScan {
        if server_version_num >= 140_000 {
            KeylessScan::TidRange
        } else {
            KeylessScan::TidList
        }
    }
}

/// The columns a backfill emits: all but generated ones (which logical replication does
/// not carry either, so backfill and replication documents have the same shape).
pub fn emitted_columns(table: &DiscoveredTable) -> Vec<usize> {
    (0..table.columns.len()).filter(|i| !table.columns[*i].generated).collect()
}

/// How a chunk query reads its rows, besides which rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadForm {
    /// How a keyless window is found.
    pub scan: KeylessScan,
    /// Emitted columns of the types [`reads_binary`] names are selected in their binary
    /// send form (else every column is `::text`).
    pub binary: bool,
}

/// Whether an emitted column is read in its binary send form (when its table's chunks
/// are): the built-in types `value::BinaryCodec` decodes, never a domain over one.
pub fn reads_binary(column: &crate::discovery::Column) -> bool {
    crate::value::BinaryCodec::for_column(&column.pg_type, column.type_oid, false).is_some()
}

/// Where a keyed chunk row's resume key is read from, per key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCell {
    /// Selected as `key::text`, ahead of the emitted columns (in key order among the key
    /// columns so selected).
    Text,
    /// Computed from the emitted column at `position` (among the emitted columns), read in
    /// binary: an integer, `oid` or `uuid`, whose text output no setting changes
    /// (`BinaryCodec::text_output`). Selecting such a key's text as well costs the server
    /// most of what a chunk costs it beyond a plain COPY (docs/performance.md, finding 14).
    Emitted { position: usize, codec: crate::value::BinaryCodec },
}

/// How a keyed chunk read in binary or not (`ReadForm::binary`) gets each key column's
/// text: the one rule both the chunk's SQL and the reading of its rows follow.
pub fn key_cells(table: &DiscoveredTable, key_columns: &[String], binary: bool) -> Vec<KeyCell> {
    let emitted = emitted_columns(table);
    key_columns
        .iter()
        .map(|name| {
            let emitted_key = emitted.iter().position(|i| table.columns[*i].name == *name).filter(|_| binary);
            emitted_key
                .and_then(|position| {
                    let column = &table.columns[emitted[position]];
                    crate::value::BinaryCodec::for_column(&column.pg_type, column.type_oid, true)
                        .filter(crate::value::BinaryCodec::has_exact_text)
                        .map(|codec| KeyCell::Emitted { position, codec })
                })
                .unwrap_or(KeyCell::Text)
        })
        .collect()
}

/// Which rows a backfill reads, besides its key or CTID window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowFilter<'a> {
    /// `advanced.min_backfill_xid`: only rows whose xmin is this XID or newer.
    pub min_xid: Option<u32>,
    /// The binding's `advanced.additional_backfill_filter`.
    pub user: Option<&'a str>,
}

/// The condition of `advanced.min_backfill_xid`: the row's xmin is a normal XID (not
/// bootstrap or frozen, 0 to 2), is `min_xid` or follows it, and does not follow the
/// query's snapshot (an xmin "after" the snapshot is really from before a wraparound, more
/// than 2^31 transactions ago). "Follows" is PostgreSQL's own circular XID order, the one
/// the Go connector uses: `b` follows `a` when `(b - a) mod 2^32 < 2^31`, that is when
/// bit 31 of the 64-bit difference is clear. xmin has no ordering operators, so it is
/// compared as a number through its text; the snapshot's xmax is a 64-bit XID with its
/// epoch, whose low 32 bits are the XID. Unlike the Go connector, no random sample of the
/// skipped rows is read: the chunk reads exactly the rows the condition keeps (so a long
/// run of skipped rows is one longer query, bounded by `advanced.statement_timeout`).
pub fn min_xid_condition(min_xid: u32) -> String {
    const XMIN: &str = "src.xmin::text::bigint";
    format!(
        "({XMIN} >= 3 AND (({XMIN} - {min_xid}) & 2147483648) = 0 AND \
         ((pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint - {XMIN}) & 2147483648) = 0)"
    )
}

/// SQL of one chunk. Parameters: resume key values as text (keyed), or [`keyless_params`].
/// `key_types` are `format_type` names of the key columns.
pub fn chunk_sql(
    table: &DiscoveredTable,
    key_columns: &[String],
    key_types: &[String],
    collate_c: &[bool],
    plan: &ChunkPlan,
    filter: RowFilter<'_>,
    form: ReadForm,
) -> String {
    let keys = KeyOrder { columns: key_columns, types: key_types, collate_c };
    let window = match plan {
        ChunkPlan::Keyed { after, limit } => Window::Keys { after: after.is_some(), until: false, limit: Some(*limit) },
        ChunkPlan::Keyless { .. } => Window::Pages(form.scan),
    };
    select_sql(table, &keys, &window, filter, form.binary)
}

/// The key columns of a keyed backfill and how they are compared.
#[derive(Debug, Clone, Copy)]
pub struct KeyOrder<'a> {
    pub columns: &'a [String],
    /// `format_type` names of the key columns.
    pub types: &'a [String],
    /// Per column: compared and ordered bytewise (`COLLATE "C"`, precise text keys).
    pub collate_c: &'a [bool],
}

impl KeyOrder<'_> {
    /// The key columns of `alias`, as they are compared and ordered.
    fn expressions(&self, alias: &str) -> Vec<String> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{alias}.{}{}", quote_identifier(k), self.collate(i)))
            .collect()
    }

    fn collate(&self, i: usize) -> &'static str {
        if self.collate_c.get(i).copied().unwrap_or(false) {
            " COLLATE \"C\""
        } else {
            ""
        }
    }

    /// The key values of parameters `$first..`, cast back to the key columns' types.
    fn values(&self, first: usize) -> Vec<String> {
        self.types
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("CAST(${}::text AS {ty}){}", first + i, self.collate(i)))
            .collect()
    }

    /// `(key) <op> ($first, ..)`.
    fn compare(&self, op: &str, first: usize) -> String {
        format!("({}) {op} ({})", self.expressions("src").join(", "), self.values(first).join(", "))
    }
}

/// The rows a backfill query reads.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// Keys after the resume key (parameters `$1..`, when `after`), up to and including an
    /// upper bound (the next parameters, when `until`), in key order, at most `limit`.
    Keys { after: bool, until: bool, limit: Option<i64> },
    /// A keyless page window ([`keyless_params`]).
    Pages(KeylessScan),
}

fn select_sql(
    table: &DiscoveredTable,
    keys: &KeyOrder<'_>,
    window: &Window,
    filter: RowFilter<'_>,
    binary: bool,
) -> String {
    // Precise backfills order text keys bytewise, as the capture compares them.
    // Key references are qualified with the table's alias: a bare name in ORDER BY would
    // refer to the *output* column of that name, which is the key's text form.
    let relation = format!("{}.{}", quote_identifier(&table.schema), quote_identifier(&table.name));
    // A keyed row starts with the text of the key columns whose text is not computed from
    // their binary cell (`key_cells`); a keyless window has no resume key.
    let key_cells = match window {
        Window::Keys { .. } => key_cells(table, keys.columns, binary),
        Window::Pages(_) => Vec::new(),
    };
    let mut select: Vec<String> = keys
        .columns
        .iter()
        .zip(&key_cells)
        .filter(|(_, cell)| **cell == KeyCell::Text)
        .map(|(k, _)| format!("{}::text", quote_identifier(k)))
        .collect();
    select.extend(emitted_columns(table).iter().map(|i| {
        let column = &table.columns[*i];
        if binary && reads_binary(column) {
            quote_identifier(&column.name)
        } else {
            column_text(column)
        }
    }));
    let mut sql = format!("SELECT {} FROM {relation} AS src", select.join(", "));
    let mut conditions = Vec::new();
    match window {
        Window::Keys { after, until, .. } => {
            if *after {
                conditions.push(keys.compare(">", 1));
            }
            if *until {
                conditions.push(keys.compare("<=", if *after { keys.columns.len() + 1 } else { 1 }));
            }
        }
        Window::Pages(scan) => conditions.push(match scan {
            KeylessScan::TidRange => "src.ctid > $1::text::tid AND src.ctid <= $2::text::tid".to_string(),
            KeylessScan::TidList => TID_LIST_CONDITION.to_string(),
        }),
    }
    if let Some(min_xid) = filter.min_xid {
        conditions.push(min_xid_condition(min_xid));
    }
    if let Some(filter) = filter.user {
        // The newline ends a `--` comment that closes the filter (it is checked to be one
        // expression when the configuration is read: config/backfill_filter.rs).
        conditions.push(format!("({filter}\n)"));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if let Window::Keys { limit, .. } = window {
        sql.push_str(&format!(" ORDER BY {}", keys.expressions("src").join(", ")));
        if let Some(limit) = limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
    }
    sql
}

/// SQL of one key range of a keyed chunk read by several connections at once: the rows
/// after the resume key (parameters `$1..`, when `after`) up to and including `until`'s key
/// (the next parameters), in key order; the last range has no upper bound but `limit`.
pub fn range_sql(
    table: &DiscoveredTable,
    keys: &KeyOrder<'_>,
    after: bool,
    until: bool,
    limit: i64,
    filter: RowFilter<'_>,
    binary: bool,
) -> String {
    let window = Window::Keys { after, until, limit: (!until).then_some(limit) };
    select_sql(table, keys, &window, filter, binary)
}

/// The keys that split the next `count * every` rows after the resume key (parameters
/// `$1..`, when `after`) into ranges of `every` rows: the key of every `every`-th row, as
/// text, at most `count`. It reads key columns only (an index-only scan where the key is
/// indexed), ignores the row filters (bounds need not be rows the backfill emits), and
/// orders exactly as the chunk queries do.
///
/// Each split is the row `every - 1` rows past the previous one (`OFFSET every - 1 LIMIT 1`,
/// one common table expression per split, each comparing with the one before through a
/// scalar subquery, which the index scan takes as its bound). Numbering every row with a
/// window function instead cost the server three times as much: the rows went through a
/// tuplestore, and a round's reads waited for it (docs/performance.md, finding 18). A split
/// that has no row (the table ends first) is NULL, and so are the ones after it: they
/// compare with nothing, and are left out.
pub fn split_keys_sql(table: &DiscoveredTable, keys: &KeyOrder<'_>, after: bool, every: i64, count: i64) -> String {
    let relation = format!("{}.{}", quote_identifier(&table.schema), quote_identifier(&table.name));
    let columns: Vec<String> =
        keys.columns.iter().enumerate().map(|(i, k)| format!("src.{} AS k{i}", quote_identifier(k))).collect();
    let order = keys.expressions("src").join(", ");
    let offset = every.max(1) - 1;
    let splits: Vec<String> = (1..=count.max(1))
        .map(|n| {
            let condition = if n > 1 {
                let previous: Vec<String> = (0..keys.columns.len())
                    .map(|i| format!("(SELECT k{i} FROM b{})", n - 1) + keys.collate(i))
                    .collect();
                format!(" WHERE ({order}) > ({})", previous.join(", "))
            } else if after {
                format!(" WHERE {}", keys.compare(">", 1))
            } else {
                String::new()
            };
            format!(
                "b{n} AS (SELECT {columns} FROM {relation} AS src{condition} ORDER BY {order} OFFSET {offset} LIMIT 1)",
                columns = columns.join(", "),
            )
        })
        .collect();
    let texts: Vec<String> = (0..keys.columns.len()).map(|i| format!("s.k{i}::text")).collect();
    let numbered: Vec<String> = (1..=count.max(1)).map(|n| format!("SELECT {n} AS n, b{n}.* FROM b{n}")).collect();
    format!(
        "WITH {splits} SELECT {texts} FROM ({numbered}) AS s ORDER BY s.n",
        splits = splits.join(", "),
        texts = texts.join(", "),
        numbered = numbered.join(" UNION ALL "),
    )
}

/// The parameters of a keyless chunk's SQL (all text): the window's bounds, and for
/// [`KeylessScan::TidList`] the table's OID.
pub fn keyless_params(plan: &ChunkPlan, scan: KeylessScan, table_oid: u32) -> Vec<Option<String>> {
    let ChunkPlan::Keyless { after_block, until_block } = plan else { return Vec::new() };
    match scan {
        KeylessScan::TidRange => vec![Some(format!("({after_block},0)")), Some(format!("({until_block},0)"))],
        KeylessScan::TidList => {
            vec![Some(after_block.to_string()), Some(until_block.to_string()), Some(table_oid.to_string())]
        }
    }
}

/// The keyless window as a TID scan (`$1`, `$2`: first page and the page past the window;
/// `$3`: the table's OID). The planner turns `ctid = ANY(<array>)` into a TID scan when the
/// array does not depend on the row, which a sub-select (an init plan, evaluated once) does
/// not. The array holds every TID the window's pages can hold: offsets 1 to
/// MaxHeapTuplesPerPage (291 with 8 kB pages, derived from `block_size`), on the window's
/// pages up to the relation's current size (so that the last window, or a small table,
/// costs no more than its pages). TIDs are built as text from a page part and an offset
/// part, each formatted once per page or offset: the concatenation and the `tid` input
/// function are then the whole cost, about a third of formatting both numbers per TID.
///
/// Capping at the size read during the query is safe: the query's locks keep VACUUM from
/// truncating the relation, and every row its snapshot sees was written before that
/// snapshot was taken, so on a page that existed then.
const TID_LIST_CONDITION: &str = "src.ctid = ANY (ARRAY(
        SELECT (page.prefix || item.suffix)::tid
        FROM unnest(ARRAY(
                SELECT '(' || p || ','
                FROM pg_catalog.generate_series($1::text::bigint, LEAST($2::text::bigint, (
                    SELECT COALESCE(max(pg_catalog.pg_relation_size(l.relid)), 0)::bigint
                           / current_setting('block_size')::bigint
                    FROM (SELECT t.relid FROM pg_catalog.pg_partition_tree($3::text::oid::regclass) t WHERE t.isleaf
                          UNION ALL
                          SELECT $3::text::oid::regclass
                          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree($3::text::oid::regclass))) l
                )) - 1) AS p)) AS page(prefix),
             unnest(ARRAY(
                SELECT o || ')'
                FROM pg_catalog.generate_series(1, (current_setting('block_size')::int - 24) / 28) AS o)) AS item(suffix)))";

/// A column as PostgreSQL text. A `::text` cast is the type's output function for every
/// type but the few with their own cast to text; the value encoder normalizes bool, char(n)
/// and inet, and xml (whose cast keeps the `<?xml ...?>` declaration the output function
/// drops) goes through `format('%s')`, which calls the output function.
fn column_text(column: &crate::discovery::Column) -> String {
    text_expression(&quote_identifier(&column.name), &column.pg_type)
}

/// `column_text` of a column reference (already quoted, perhaps qualified) of type `ty`.
pub fn text_expression(name: &str, ty: &crate::value::PgType) -> String {
    let mut ty = ty;
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
            FROM (SELECT t.relid FROM pg_catalog.pg_partition_tree(r.oid::regclass) t WHERE t.isleaf
                  UNION ALL
                  SELECT r.oid::regclass
                  WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree(r.oid::regclass))) l
            JOIN pg_catalog.pg_class c ON c.oid = l.relid)
    FROM unnest($1::oid[]) AS r(oid)";

/// How many heap relations hold a table's rows: its leaf partitions (any depth), or 1 for a
/// table that is not partitioned (for which `pg_partition_tree` lists nothing at all).
pub const TABLE_LEAVES_SQL: &str = "
    SELECT count(*)::bigint
    FROM (SELECT t.relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) t WHERE t.isleaf
          UNION ALL
          SELECT $1::oid::regclass
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree($1::oid::regclass))) l";

/// The planner's estimate of a table's rows, over all leaf partitions (for progress
/// reports). A table never analyzed counts as empty.
pub const TABLE_ROWS_ESTIMATE_SQL: &str = "
    SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::bigint
    FROM (SELECT t.relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) t WHERE t.isleaf
          UNION ALL
          SELECT $1::oid::regclass
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree($1::oid::regclass))) l
    JOIN pg_catalog.pg_class c ON c.oid = l.relid";

/// The relation a keyless chunk just read (`$1`: the table's OID, as text): its size in
/// pages (the largest leaf's) and the identity of its files, each leaf's `oid:filenode`.
/// It runs in the chunk's transaction, after the chunk's query: the locks that query took
/// are held until the transaction ends, so no rewrite can have happened in between, and
/// both describe exactly the files the chunk read.
pub const RELATION_SQL: &str = "
    SELECT COALESCE(max(pg_catalog.pg_relation_size(l.relid)), 0)::bigint / current_setting('block_size')::bigint,
           COALESCE(string_agg(l.relid::oid::text || ':' || COALESCE(pg_catalog.pg_relation_filenode(l.relid)::text, '-'),
                               ',' ORDER BY l.relid::oid), '')
    FROM (SELECT t.relid FROM pg_catalog.pg_partition_tree($1::text::oid::regclass) t WHERE t.isleaf
          UNION ALL
          SELECT $1::text::oid::regclass
          WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_partition_tree($1::text::oid::regclass))) l";

/// The identity kept in the state for [`RELATION_SQL`]'s file list: the list itself while
/// short (one leaf, or a few), else a digest of it.
pub fn relation_identity(files: &str) -> String {
    use sha2::Digest as _;
    if files.len() <= 64 {
        return files.to_string();
    }
    let digest = sha2::Sha256::digest(files.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Pages per keyless chunk: the Go connector's heuristic of ~100 rows per page, spread
/// over the partitions (each chunk reads the same page window of every partition).
pub fn pages_per_chunk(chunk_size: i64, partitions: i64) -> u64 {
    let rows_per_page = 100 * partitions.max(1);
    u64::try_from(chunk_size / rows_per_page).unwrap_or(0) + 1
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

    fn text(scan: KeylessScan) -> ReadForm {
        ReadForm { scan, binary: false }
    }

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
            RowFilter::default(),
            text(KeylessScan::TidRange),
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
            RowFilter { user: Some("id % 2 = 0"), ..RowFilter::default() },
            text(KeylessScan::TidRange),
        );
        assert_eq!(
            next,
            r#"SELECT "id"::text, "id"::text, "Data"::text FROM "My""Schema"."t" AS src WHERE (src."id") > (CAST($1::text AS integer)) AND (id % 2 = 0
) ORDER BY src."id" LIMIT 10"#
        );
    }

    #[test]
    fn binary_reads_select_fixed_width_builtins_as_they_are_and_keys_as_text_unless_computed() {
        let mut table = table();
        // A domain over int4 stays text, as does a type named int4 that is not the built-in one.
        table.columns[1].pg_type = PgType::Domain {
            name: "positive".into(),
            base: Box::new(PgType::Builtin { name: "int4".into(), typmod: -1 }),
            not_null: false,
        };
        table.columns.push(Column { name: "t".into(), type_oid: 1184, ..table.columns[0].clone() });
        table.columns[3].pg_type = PgType::Builtin { name: "timestamptz".into(), typmod: -1 };
        table.columns.push(Column { name: "fake".into(), type_oid: 16_500, ..table.columns[0].clone() });
        let sql = |binary| {
            chunk_sql(
                &table,
                &["id".into()],
                &["integer".into()],
                &[false],
                &ChunkPlan::Keyed { after: None, limit: 10 },
                RowFilter::default(),
                ReadForm { scan: KeylessScan::TidRange, binary },
            )
        };
        // The int4 key's text is computed from its binary cell: not selected twice.
        assert_eq!(
            sql(true),
            r#"SELECT "id", "Data"::text, "t", "fake"::text FROM "My""Schema"."t" AS src ORDER BY src."id" LIMIT 10"#
        );
        assert_eq!(
            sql(false),
            r#"SELECT "id"::text, "id"::text, "Data"::text, "t"::text, "fake"::text FROM "My""Schema"."t" AS src ORDER BY src."id" LIMIT 10"#
        );
    }

    /// Only a key column that is emitted, read in binary, and of a type whose text no
    /// setting changes has its text computed; the rest lead the row as `::text`, in key
    /// order. The SQL and the reading of rows take the rule from `key_cells` alike.
    #[test]
    fn key_texts_are_selected_unless_computed_from_an_emitted_binary_cell() {
        let mut table = table();
        table.columns.push(Column { name: "t".into(), type_oid: 1184, ..table.columns[0].clone() });
        table.columns[3].pg_type = PgType::Builtin { name: "timestamptz".into(), typmod: -1 };
        table.columns.push(Column { name: "u".into(), type_oid: 2950, ..table.columns[0].clone() });
        table.columns[4].pg_type = PgType::Builtin { name: "uuid".into(), typmod: -1 };
        table.columns.push(Column { name: "s".into(), type_oid: 25, ..table.columns[0].clone() });
        table.columns[5].pg_type = PgType::Builtin { name: "text".into(), typmod: -1 };
        // Emitted: id, Data, t, u, s (g is generated).
        let key: Vec<String> = ["t", "u", "g", "s", "id"].iter().map(|k| k.to_string()).collect();
        let cells = key_cells(&table, &key, true);
        let int4 = crate::value::BinaryCodec::for_column(&table.columns[0].pg_type, 23, true).unwrap();
        let uuid = crate::value::BinaryCodec::for_column(&table.columns[4].pg_type, 2950, true).unwrap();
        assert_eq!(
            cells,
            [
                KeyCell::Text,
                KeyCell::Emitted { position: 3, codec: uuid },
                KeyCell::Text,
                KeyCell::Text,
                KeyCell::Emitted { position: 0, codec: int4 },
            ]
        );
        assert_eq!(key_cells(&table, &key, false), [KeyCell::Text; 5]);
        let types: Vec<String> =
            ["timestamptz", "uuid", "integer", "text", "integer"].iter().map(|t| t.to_string()).collect();
        let sql = chunk_sql(
            &table,
            &key,
            &types,
            &[false; 5],
            &ChunkPlan::Keyed { after: None, limit: 10 },
            RowFilter::default(),
            ReadForm { scan: KeylessScan::TidRange, binary: true },
        );
        assert!(
            sql.starts_with(r#"SELECT "t"::text, "g"::text, "s"::text, "id", "Data", "t", "u", "s"::text FROM"#),
            "{sql}"
        );
        // A keyless window reads no key, whatever key columns it is given.
        let keyless = chunk_sql(
            &table,
            &key,
            &types,
            &[false; 5],
            &ChunkPlan::Keyless { after_block: 0, until_block: 8 },
            RowFilter::default(),
            ReadForm { scan: KeylessScan::TidRange, binary: true },
        );
        assert!(keyless.starts_with(r#"SELECT "id", "Data", "t", "u", "s"::text FROM"#), "{keyless}");
    }

    #[test]
    fn min_backfill_xid_is_one_more_condition_before_the_users_filter() {
        let condition = min_xid_condition(12345);
        assert_eq!(
            condition,
            "(src.xmin::text::bigint >= 3 AND ((src.xmin::text::bigint - 12345) & 2147483648) = 0 AND \
             ((pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint - src.xmin::text::bigint) & 2147483648) = 0)"
        );
        let both = RowFilter { min_xid: Some(12345), user: Some("id > 123") };
        let keyed = chunk_sql(
            &table(),
            &["id".into()],
            &["integer".into()],
            &[false],
            &ChunkPlan::Keyed { after: Some(vec![Some("5".into())]), limit: 10 },
            both,
            text(KeylessScan::TidRange),
        );
        assert_eq!(
            keyed,
            format!(
                r#"SELECT "id"::text, "id"::text, "Data"::text FROM "My""Schema"."t" AS src WHERE (src."id") > (CAST($1::text AS integer)) AND {condition} AND (id > 123
) ORDER BY src."id" LIMIT 10"#
            )
        );
        let first = chunk_sql(
            &table(),
            &["id".into()],
            &["integer".into()],
            &[false],
            &ChunkPlan::Keyed { after: None, limit: 10 },
            RowFilter { min_xid: Some(7), user: None },
            text(KeylessScan::TidRange),
        );
        assert!(
            first.ends_with(&format!(r#" AS src WHERE {} ORDER BY src."id" LIMIT 10"#, min_xid_condition(7))),
            "{first}"
        );
        let plan = ChunkPlan::Keyless { after_block: 0, until_block: 5 };
        let keyless = chunk_sql(&table(), &[], &[], &[], &plan, both, text(KeylessScan::TidRange));
        assert!(
            keyless.ends_with(&format!(
                "WHERE src.ctid > $1::text::tid AND src.ctid <= $2::text::tid AND {condition} AND (id > 123\n)"
            )),
            "{keyless}"
        );
    }

    #[test]
    fn ranges_of_a_chunk_read_at_once_are_bounded_by_split_keys() {
        let columns = ["Data".to_string(), "id".to_string()];
        let types = ["text".to_string(), "integer".to_string()];
        let keys = KeyOrder { columns: &columns, types: &types, collate_c: &[true, false] };
        let middle = range_sql(&table(), &keys, true, true, 10, RowFilter::default(), false);
        assert!(middle.ends_with(r#"WHERE (src."Data" COLLATE "C", src."id") > (CAST($1::text AS text) COLLATE "C", CAST($2::text AS integer)) AND (src."Data" COLLATE "C", src."id") <= (CAST($3::text AS text) COLLATE "C", CAST($4::text AS integer)) ORDER BY src."Data" COLLATE "C", src."id""#), "{middle}");
        let first = range_sql(
            &table(),
            &keys,
            false,
            true,
            10,
            RowFilter { user: Some("true"), ..RowFilter::default() },
            false,
        );
        assert!(first.ends_with(r#"WHERE (src."Data" COLLATE "C", src."id") <= (CAST($1::text AS text) COLLATE "C", CAST($2::text AS integer)) AND (true
) ORDER BY src."Data" COLLATE "C", src."id""#), "{first}");
        let last = range_sql(&table(), &keys, true, false, 10, RowFilter::default(), false);
        assert!(last.ends_with(r#"ORDER BY src."Data" COLLATE "C", src."id" LIMIT 10"#), "{last}");
        let split = split_keys_sql(&table(), &keys, true, 100, 3);
        assert_eq!(
            split,
            concat!(
                r#"WITH b1 AS (SELECT src."Data" AS k0, src."id" AS k1 FROM "My""Schema"."t" AS src WHERE (src."Data" COLLATE "C", src."id") > (CAST($1::text AS text) COLLATE "C", CAST($2::text AS integer)) ORDER BY src."Data" COLLATE "C", src."id" OFFSET 99 LIMIT 1), "#,
                r#"b2 AS (SELECT src."Data" AS k0, src."id" AS k1 FROM "My""Schema"."t" AS src WHERE (src."Data" COLLATE "C", src."id") > ((SELECT k0 FROM b1) COLLATE "C", (SELECT k1 FROM b1)) ORDER BY src."Data" COLLATE "C", src."id" OFFSET 99 LIMIT 1), "#,
                r#"b3 AS (SELECT src."Data" AS k0, src."id" AS k1 FROM "My""Schema"."t" AS src WHERE (src."Data" COLLATE "C", src."id") > ((SELECT k0 FROM b2) COLLATE "C", (SELECT k1 FROM b2)) ORDER BY src."Data" COLLATE "C", src."id" OFFSET 99 LIMIT 1) "#,
                r#"SELECT s.k0::text, s.k1::text FROM (SELECT 1 AS n, b1.* FROM b1 UNION ALL SELECT 2 AS n, b2.* FROM b2 UNION ALL SELECT 3 AS n, b3.* FROM b3) AS s ORDER BY s.n"#,
            )
        );
        let first = split_keys_sql(&table(), &keys, false, 100, 3);
        assert!(
            first.starts_with(
                r#"WITH b1 AS (SELECT src."Data" AS k0, src."id" AS k1 FROM "My""Schema"."t" AS src ORDER BY"#
            ),
            "{first}"
        );
        assert!(!first.contains("$1"), "{first}");
        let one = split_keys_sql(&table(), &keys, true, 1, 0);
        assert!(one.contains("OFFSET 0 LIMIT 1) SELECT"), "every row, one split at least: {one}");
    }

    #[test]
    fn precise_text_keys_order_and_compare_bytewise() {
        let sql = chunk_sql(
            &table(),
            &["Data".into(), "id".into()],
            &["text".into(), "integer".into()],
            &[true, false],
            &ChunkPlan::Keyed { after: Some(vec![Some("a".into()), Some("1".into())]), limit: 2 },
            RowFilter::default(),
            text(KeylessScan::TidRange),
        );
        assert!(sql.ends_with(r#"WHERE (src."Data" COLLATE "C", src."id") > (CAST($1::text AS text) COLLATE "C", CAST($2::text AS integer)) ORDER BY src."Data" COLLATE "C", src."id" LIMIT 2"#), "{sql}");
    }

    #[test]
    fn keyless_chunks_use_tid_ranges() {
        let plan = ChunkPlan::Keyless { after_block: 0, until_block: 5 };
        let sql = chunk_sql(&table(), &[], &[], &[], &plan, RowFilter::default(), text(KeylessScan::TidRange));
        assert_eq!(
            sql,
            r#"SELECT "id"::text, "Data"::text FROM "My""Schema"."t" AS src WHERE src.ctid > $1::text::tid AND src.ctid <= $2::text::tid"#
        );
        assert_eq!(keyless_params(&plan, KeylessScan::TidRange, 7), [Some("(0,0)".into()), Some("(5,0)".into())]);
        let listed = chunk_sql(
            &table(),
            &[],
            &[],
            &[],
            &plan,
            RowFilter { user: Some("true"), ..RowFilter::default() },
            text(KeylessScan::TidList),
        );
        assert!(listed.contains("WHERE src.ctid = ANY (ARRAY("), "{listed}");
        // The filter is followed by a newline, so that a trailing `--` comment ends there.
        assert!(listed.ends_with(" AND (true\n)"), "{listed}");
        assert_eq!(
            keyless_params(&plan, KeylessScan::TidList, 7),
            [Some("0".into()), Some("5".into()), Some("7".into())]
        );
        assert_eq!(KeylessScan::for_server(130_023), KeylessScan::TidList);
        assert_eq!(KeylessScan::for_server(140_000), KeylessScan::TidRange);
        assert_eq!(parse_ctid("(12,0)"), Some((12, 0)));
        assert_eq!(parse_ctid("12,0"), None);
        assert_eq!(pages_per_chunk(50_000, 1), 501);
        assert_eq!(pages_per_chunk(1, 3), 1);
        assert_eq!(relation_identity("16384:16390"), "16384:16390");
        let long = relation_identity(&"16384:16390,".repeat(10));
        assert!(long.starts_with("sha256:") && long.len() == 39, "{long}");
    }
}
