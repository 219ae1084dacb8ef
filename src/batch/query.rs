//! Pure: the built-in polling queries, transaction-id comparison, and text parameters.
//!
//! Every identifier in these queries is quoted ([`quote_identifier`]) and every value is a
//! `$n` parameter sent as text ([`TextParam`]): the server parses it with the type's own
//! input function, so a cursor value round-trips exactly, whatever its type.
//!
//! # Transaction ids
//!
//! `xmin` is a 32-bit transaction id that wraps around. PostgreSQL orders ids circularly
//! (`a` precedes `b` when `b - a`, as a wrapping 32-bit difference, is in `(0, 2^31)`), but
//! exposes no SQL operator for it, so the queries compute the wrapping difference on
//! bigints: `(((x - y) << 32) >> 32)` keeps the low 32 bits of `x - y` and sign-extends
//! them, which is the wrapping difference as a signed 32-bit number. The same rule is
//! [`compare_xid32`] in Rust (used to filter rows again as they arrive), and
//! [`wrapping_delta`] is the SQL expression's arithmetic, tested against each other at the
//! wraparound.

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};

use crate::pg::quote_identifier;

/// A query parameter sent in text format, for a parameter of any type (`None`: NULL).
#[derive(Debug, Clone)]
pub struct TextParam(pub Option<String>);

impl ToSql for TextParam {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// `"schema"."table"`.
pub fn quote_table(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_identifier(schema), quote_identifier(table))
}

/// The built-in query of a binding without a template: everything (no cursor), or the rows
/// after the cursor in cursor order. With a multi-column cursor `(a, b)` the condition is
/// `(a > $1) OR (a = $1 AND b > $2)`, which is the row comparison `(a, b) > ($1, $2)`
/// spelled so that each column's own operators are used.
pub fn builtin_query(schema: &str, table: &str, cursor: &[String], first: bool) -> String {
    let mut sql = format!("SELECT * FROM {}", quote_table(schema, table));
    if cursor.is_empty() {
        return sql;
    }
    let quoted: Vec<String> = cursor.iter().map(|c| quote_identifier(c)).collect();
    if !first {
        sql.push_str(" WHERE ");
        for i in 0..quoted.len() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            sql.push('(');
            for (j, name) in quoted.iter().enumerate().take(i) {
                sql.push_str(&format!("{name} = ${} AND ", j + 1));
            }
            sql.push_str(&format!("{} > ${})", quoted[i], i + 1));
        }
    }
    sql.push_str(" ORDER BY ");
    sql.push_str(&quoted.join(", "));
    sql
}

/// One chunk of an xmin scan: rows in the pages `($1, $2]` (as `tid`s), with their xmin as
/// the first column `txid`. With `bounded`, only rows whose xmin lies in `[$3, $4)`
/// circularly (and is a normal id, at least 3) are read.
pub fn xmin_chunk_query(schema: &str, table: &str, bounded: bool) -> String {
    let mut sql = format!(
        "SELECT xmin::text::bigint AS txid, * FROM {} WHERE ctid > $1::text::tid AND ctid <= $2::text::tid",
        quote_table(schema, table)
    );
    if bounded {
        sql.push_str(
            " AND xmin::text::bigint >= 3 \
             AND (((xmin::text::bigint - $3::text::bigint) << 32) >> 32) >= 0 \
             AND ((($4::text::bigint - xmin::text::bigint) << 32) >> 32) > 0",
        );
    }
    sql
}

/// An id that every running and future transaction follows: all transactions before it have
/// ended, so rows they wrote are visible to every query from now on (64-bit, epoch included).
pub const CURRENT_XID_SQL: &str = "SELECT txid_snapshot_xmin(txid_current_snapshot())::text";

/// The table's page count (its largest partition's, plus 5% for growth), its partition count,
/// its `relkind` and its oid.
pub const TABLE_PAGES_SQL: &str = "
    SELECT CEIL(1.05 * GREATEST(
             pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int,
             COALESCE((SELECT MAX(pg_catalog.pg_relation_size(i.inhrelid) / current_setting('block_size')::int)
                       FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid), 0)))::bigint,
           (SELECT COUNT(*) FROM pg_catalog.pg_inherits i WHERE i.inhparent = c.oid)::bigint + 1,
           c.relkind::text, c.oid
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relname = $2";

/// The storage files of a table and its partitions: a table rewrite (`VACUUM FULL`,
/// `CLUSTER`) changes them, and moves rows to other pages. (`pg_partition_tree` lists nothing
/// for a table that is not partitioned, hence the union with the table itself.)
pub const FILENODES_SQL: &str = "
    SELECT COALESCE(string_agg(COALESCE(pg_catalog.pg_relation_filenode(t.relid)::text, '-'), ',' ORDER BY t.relid), '')
    FROM (SELECT $1::oid AS relid
          UNION SELECT p.relid FROM pg_catalog.pg_partition_tree($1::oid::regclass) p) t";

/// Circular order of 32-bit transaction ids: `Less` when `b` lies in `(a, a + 2^31)`.
pub fn compare_xid32(a: u32, b: u32) -> std::cmp::Ordering {
    if a == b {
        std::cmp::Ordering::Equal
    } else if b.wrapping_sub(a) & 0x8000_0000 == 0 {
        std::cmp::Ordering::Less
    } else {
        std::cmp::Ordering::Greater
    }
}

/// The SQL expression `(((x - y) << 32) >> 32)` on 64-bit integers: the wrapping 32-bit
/// difference `x - y`, signed.
pub fn wrapping_delta(x: i64, y: i64) -> i64 {
    (x.wrapping_sub(y) << 32) >> 32
}

/// Whether a row whose xmin is `xmin` belongs to the scan of `[base, next)` (`base` 0: the
/// first scan, which has no lower bound; its upper bound only applies while ids have not
/// wrapped, i.e. while `next` is a plain 32-bit number).
pub fn xmin_in_window(xmin: u32, base: u64, next: u64) -> bool {
    if base == 0 {
        return u64::from(xmin) < next;
    }
    xmin >= 3
        && compare_xid32(xmin, base as u32) != std::cmp::Ordering::Less
        && compare_xid32(next as u32, xmin) == std::cmp::Ordering::Greater
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering::*;

    #[test]
    fn builtin_queries_quote_names_and_compare_cursors_lexicographically() {
        assert_eq!(builtin_query("s", "t\"x", &[], true), r#"SELECT * FROM "s"."t""x""#);
        assert_eq!(builtin_query("s", "t", &["a".into()], true), r#"SELECT * FROM "s"."t" ORDER BY "a""#);
        assert_eq!(
            builtin_query("s", "t", &["a".into(), "B".into()], false),
            r#"SELECT * FROM "s"."t" WHERE ("a" > $1) OR ("a" = $1 AND "B" > $2) ORDER BY "a", "B""#
        );
        assert!(xmin_chunk_query("s", "t", true).contains("$4::text::bigint"));
        assert!(!xmin_chunk_query("s", "t", false).contains("$3"));
    }

    #[test]
    fn xid_comparison_is_circular_and_safe_at_the_wraparound() {
        assert_eq!(compare_xid32(5, 7), Less);
        assert_eq!(compare_xid32(7, 5), Greater);
        assert_eq!(compare_xid32(9, 9), Equal);
        // Across the wraparound: 4294967290 precedes 5, which is 11 ids later.
        assert_eq!(compare_xid32(4_294_967_290, 5), Less);
        assert_eq!(compare_xid32(5, 4_294_967_290), Greater);
        assert_eq!(compare_xid32(u32::MAX, 0), Less);
        // Half the id space away is the horizon: beyond it an id counts as older.
        assert_eq!(compare_xid32(0, 0x7fff_ffff), Less);
        assert_eq!(compare_xid32(0, 0x8000_0000), Greater);
        // The SQL arithmetic agrees with the Rust rule, for 32-bit and epoch-extended ids.
        for (x, y) in [(5_u32, 7_u32), (7, 5), (4_294_967_290, 5), (5, 4_294_967_290), (u32::MAX, 0), (3, 3)] {
            for epoch in [0_i64, 1 << 32, 7 << 32] {
                let delta = wrapping_delta(i64::from(x), i64::from(y) + epoch);
                assert_eq!(delta.cmp(&0), compare_xid32(x, y), "{x} - {y} (epoch {epoch})");
            }
        }
        // The window [base, next) across the wraparound.
        let (base, next) = ((1_u64 << 32) + 4_294_967_000, (2_u64 << 32) + 100);
        assert!(xmin_in_window(4_294_967_000, base, next));
        assert!(xmin_in_window(4_294_967_295, base, next));
        assert!(xmin_in_window(3, base, next));
        assert!(xmin_in_window(99, base, next));
        assert!(!xmin_in_window(100, base, next));
        assert!(!xmin_in_window(4_294_966_999, base, next));
        assert!(!xmin_in_window(2, base, next), "frozen and special ids are never in a window");
        // The first scan: everything before `next`.
        assert!(xmin_in_window(99, 0, 100) && !xmin_in_window(100, 0, 100));
        assert!(xmin_in_window(u32::MAX, 0, 1 << 32));
    }
}
