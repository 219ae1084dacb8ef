//! What the publication lets through, as far as correctness is concerned: the actions it
//! publishes (`publish = 'insert, update, delete, truncate'`) and, from PostgreSQL 15 on,
//! column lists and row filters on the bound tables.
//!
//! pgoutput applies all of these silently: an update of a publication that no longer
//! publishes updates, a column outside a column list, a row outside a row filter simply
//! never reach the stream. A backfill still reads every row and column, so the collection
//! would drift from the table without a word. Validation refuses them (with the statement
//! that fixes them), and the running capture re-reads the same facts every status interval
//! (see `Session::check_publication`), because altering a publication sends nothing down
//! the replication stream.
//!
//! [`PublicationShape::load`] reads the facts (one or two queries, names as parameters);
//! the rules are pure functions.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{display_name, qualified, Context, Problem, Step};
use crate::config::Config;
use crate::pg::quote_identifier;

/// A column list or row filter of the publication on a relation that carries (part of) a
/// bound table: the table itself, a partition ancestor or a partition of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredTable {
    pub schema: String,
    pub name: String,
    pub column_list: bool,
    /// The row filter's text (`pg_get_expr`), when there is one.
    pub row_filter: Option<String>,
}

/// The publication's actions and the filters on bound tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicationShape {
    pub exists: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    pub filtered: Vec<FilteredTable>,
}

impl PublicationShape {
    /// Read the publication named in `config` and its filters on `tables` (schema, name).
    pub async fn load(
        client: &Client,
        config: &Config,
        server_version: i32,
        tables: &BTreeSet<(String, String)>,
    ) -> Result<PublicationShape, tokio_postgres::Error> {
        let publication = config.publication_name();
        let Some(row) = client
            .query_opt(
                "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&publication],
            )
            .await?
        else {
            return Ok(PublicationShape::default());
        };
        let mut shape = PublicationShape {
            exists: true,
            insert: row.get(0),
            update: row.get(1),
            delete: row.get(2),
            truncate: row.get(3),
            filtered: Vec::new(),
        };
        // Column lists and row filters arrived in PostgreSQL 15.
        if server_version < 150_000 || tables.is_empty() {
            return Ok(shape);
        }
        let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
        let names: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
        // pg_partition_tree lists nothing for a table that is not partitioned, and
        // pg_partition_ancestors nothing for one that is not a partition: the table itself
        // is added explicitly.
        let rows = client
            .query(
                "SELECT DISTINCT n.nspname::text, c.relname::text, pr.prattrs IS NOT NULL,
                        pg_catalog.pg_get_expr(pr.prqual, pr.prrelid)
                 FROM unnest($2::text[], $3::text[]) AS b(schema_name, table_name)
                 JOIN pg_catalog.pg_namespace bn ON bn.nspname = b.schema_name
                 JOIN pg_catalog.pg_class bc ON bc.relnamespace = bn.oid AND bc.relname = b.table_name
                 JOIN pg_catalog.pg_publication p ON p.pubname = $1
                 JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid
                 JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE (pr.prattrs IS NOT NULL OR pr.prqual IS NOT NULL)
                   AND pr.prrelid IN (SELECT bc.oid
                                      UNION ALL SELECT relid FROM pg_catalog.pg_partition_ancestors(bc.oid)
                                      UNION ALL SELECT relid FROM pg_catalog.pg_partition_tree(bc.oid))
                 ORDER BY 1, 2",
                &[&publication, &schemas, &names],
            )
            .await?;
        shape.filtered = rows
            .iter()
            .map(|row| FilteredTable {
                schema: row.get(0),
                name: row.get(1),
                column_list: row.get(2),
                row_filter: row.get(3),
            })
            .collect();
        Ok(shape)
    }

    /// The actions among insert, update and delete that the publication does not publish.
    pub fn missing_actions(&self) -> Vec<&'static str> {
        [("insert", self.insert), ("update", self.update), ("delete", self.delete)]
            .into_iter()
            .filter(|(_, published)| !published)
            .map(|(action, _)| action)
            .collect()
    }
}

/// The statement that makes the publication publish every action the capture reads.
pub fn publish_all_sql(publication: &str) -> String {
    format!("ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');", quote_identifier(publication))
}

/// The statement that removes a table's column list and row filter: dropped and added
/// again in one transaction, so that no change of the table falls in between.
pub fn unfiltered_sql(publication: &str, schema: &str, table: &str) -> String {
    let publication = quote_identifier(publication);
    let table = qualified(schema, table);
    format!("BEGIN; ALTER PUBLICATION {publication} DROP TABLE {table}; ALTER PUBLICATION {publication} ADD TABLE {table}; COMMIT;")
}

/// What a filter hides, for messages.
fn filter_message(publication: &str, filtered: &FilteredTable) -> String {
    let name = display_name(&filtered.schema, &filtered.name);
    match (&filtered.row_filter, filtered.column_list) {
        (Some(filter), true) => format!(
            "publication {publication:?} publishes table {name} with a column list and a row filter (WHERE {filter}): \
             the other columns would never be captured, and rows outside the filter would stay stale in the collection"
        ),
        (Some(filter), false) => format!(
            "publication {publication:?} publishes table {name} with a row filter (WHERE {filter}): \
             changes of rows outside the filter never reach the capture, so the backfilled rows would stay stale in the collection"
        ),
        _ => format!(
            "publication {publication:?} publishes only some columns of table {name} (a column list): \
             the other columns would never be captured from changes"
        ),
    }
}

/// Column lists and row filters on bound tables: the capture cannot be correct with them.
pub fn filter_problems(ctx: &Context, config: &Config, shape: &PublicationShape) -> Vec<Problem> {
    let publication = config.publication_name();
    shape
        .filtered
        .iter()
        .map(|filtered| {
            ctx.problem(
                filter_message(publication, filtered),
                vec![(Step::PublicationAddTable, unfiltered_sql(publication, &filtered.schema, &filtered.name))],
            )
        })
        .collect()
}

/// Why the running capture cannot go on with this publication, if it cannot: a message and
/// the statements that fix it. Changes the publication kept back are lost for good (the
/// server decodes older WAL with the publication as it was then), so the hint also asks
/// for a re-backfill.
pub fn running_problem(config: &Config, shape: &PublicationShape) -> Option<(String, String)> {
    let publication = config.publication_name();
    let rebackfill =
        "then increment the backfill counter of the affected bindings: changes made in the meantime were not captured";
    if !shape.exists {
        let options =
            if config.raw.advanced.capture_as_partitions { "" } else { " WITH (publish_via_partition_root = true)" };
        return Some((
            format!("publication {publication:?} does not exist: it was dropped while the capture was using it"),
            format!(
                "create it again, e.g. CREATE PUBLICATION {} FOR ALL TABLES{options}; (or FOR TABLE with the captured tables and the watermarks table), {rebackfill}",
                quote_identifier(publication)
            ),
        ));
    }
    let missing = shape.missing_actions();
    if !missing.is_empty() {
        return Some((
            format!(
                "publication {publication:?} no longer publishes {}: the server does not send those changes",
                missing.iter().map(|a| a.to_uppercase()).collect::<Vec<_>>().join(", ")
            ),
            format!("{} {rebackfill}", publish_all_sql(publication)),
        ));
    }
    if config.raw.advanced.fail_on_truncate && !shape.truncate {
        return Some((
            format!(
                "publication {publication:?} does not publish TRUNCATE, so advanced.fail_on_truncate cannot notice one"
            ),
            format!("{} {rebackfill}", publish_all_sql(publication)),
        ));
    }
    let first = shape.filtered.first()?;
    let statements: Vec<String> =
        shape.filtered.iter().map(|f| unfiltered_sql(publication, &f.schema, &f.name)).collect();
    let mut message = filter_message(publication, first);
    if shape.filtered.len() > 1 {
        message.push_str(&format!(" (and {} more tables)", shape.filtered.len() - 1));
    }
    Some((message, format!("{} {rebackfill}", statements.join(" "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::platform::Platform;
    use serde_json::json;

    fn config() -> Config {
        Config::parse(&json!({"address": "h", "credentials": {"auth_type": "UserPassword", "password": "pw"}})).unwrap()
    }

    fn full() -> PublicationShape {
        PublicationShape {
            exists: true,
            insert: true,
            update: true,
            delete: true,
            truncate: true,
            filtered: Vec::new(),
        }
    }

    #[test]
    fn a_publication_of_everything_is_fine() {
        assert_eq!(running_problem(&config(), &full()), None);
        let no_truncate = PublicationShape { truncate: false, ..full() };
        assert_eq!(running_problem(&config(), &no_truncate), None);
    }

    #[test]
    fn narrowed_or_dropped_publications_stop_the_capture_with_the_fix() {
        let (message, hint) = running_problem(&config(), &PublicationShape::default()).unwrap();
        assert!(message.contains("\"flow_publication\" does not exist"), "{message}");
        assert!(hint.starts_with("create it again, e.g. CREATE PUBLICATION \"flow_publication\""), "{hint}");
        let inserts = PublicationShape { update: false, delete: false, ..full() };
        let (message, hint) = running_problem(&config(), &inserts).unwrap();
        assert_eq!(
            message,
            "publication \"flow_publication\" no longer publishes UPDATE, DELETE: the server does not send those changes"
        );
        assert!(hint.starts_with(
            "ALTER PUBLICATION \"flow_publication\" SET (publish = 'insert, update, delete, truncate'); then increment"
        ));
        let mut cfg = config();
        cfg.raw.advanced.fail_on_truncate = true;
        let (message, _) = running_problem(&cfg, &PublicationShape { truncate: false, ..full() }).unwrap();
        assert!(message.contains("does not publish TRUNCATE"), "{message}");
    }

    #[test]
    fn filters_name_the_table_and_the_statement_that_removes_them() {
        let shape = PublicationShape {
            filtered: vec![
                FilteredTable { schema: "s".into(), name: "t\"x".into(), column_list: true, row_filter: None },
                FilteredTable {
                    schema: "s".into(),
                    name: "u".into(),
                    column_list: false,
                    row_filter: Some("(id > 10)".into()),
                },
            ],
            ..full()
        };
        let (message, hint) = running_problem(&config(), &shape).unwrap();
        assert!(message.contains("only some columns of table \"s.t\\\"x\""), "{message}");
        assert!(message.ends_with("(and 1 more tables)"), "{message}");
        assert!(hint.starts_with("BEGIN; ALTER PUBLICATION \"flow_publication\" DROP TABLE \"s\".\"t\"\"x\"; ALTER PUBLICATION \"flow_publication\" ADD TABLE \"s\".\"t\"\"x\"; COMMIT; BEGIN;"), "{hint}");
        let ctx = Context {
            user: "flow_capture".into(),
            database: "shop".into(),
            server_version: 150_004,
            platform: Platform::SelfHosted,
            is_superuser: false,
            bypasses_rls: false,
            can_create_publication: false,
        };
        let problems = filter_problems(&ctx, &config(), &shape);
        assert_eq!(problems.len(), 2);
        assert!(problems[1].message.contains("with a row filter (WHERE (id > 10))"), "{}", problems[1].message);
    }
}
