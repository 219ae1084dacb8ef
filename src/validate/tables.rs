//! Per-table prerequisites of the bound tables: the table exists, the user can read it,
//! the publication carries it (or the user may add it), its changes can be replicated
//! (logged, with a replica identity), row-level security does not hide rows, and a
//! partitioned table fits the publication's `publish_via_partition_root`. Tables that
//! store TOASTed values get advice (a warning, not a failure) about `REPLICA IDENTITY FULL`.
//!
//! One query reads the facts of every bound table ([`TableFacts::load`]);
//! [`table_problems`] applies the rules without IO.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::server::published_sql;
use super::{display_name, qualified, Context, Problem, Step};
use crate::config::Config;
use crate::error::Error;
use crate::pg::quote_identifier;

/// The publication as far as table membership is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicationState {
    pub exists: bool,
    pub all_tables: bool,
    pub via_root: bool,
    pub owned: bool,
}

/// One bound table and the user's rights on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFacts {
    pub schema: String,
    pub name: String,
    pub schema_usage: bool,
    pub exists: bool,
    /// `r` ordinary table or partition, `p` partitioned table.
    pub relkind: char,
    pub is_partition: bool,
    /// `p` permanent, `u` unlogged.
    pub persistence: char,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    pub select: bool,
    pub owned: bool,
    pub has_primary_key: bool,
    pub has_identity_index: bool,
    pub row_security: bool,
    pub force_row_security: bool,
    /// The table's TOAST relation holds data.
    pub toasted: bool,
    pub published: bool,
}

impl TableFacts {
    pub async fn load(
        client: &Client,
        config: &Config,
        ctx: &Context,
        tables: &BTreeSet<(String, String)>,
    ) -> Result<(PublicationState, Vec<TableFacts>), Error> {
        let publication = client
            .query_opt(
                "SELECT puballtables, pubviaroot, pg_catalog.pg_has_role(pubowner, 'USAGE')
                 FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&config.publication_name()],
            )
            .await?
            .map(|row| PublicationState {
                exists: true,
                all_tables: row.get(0),
                via_root: row.get(1),
                owned: row.get(2),
            })
            .unwrap_or_default();
        if tables.is_empty() {
            return Ok((publication, Vec::new()));
        }
        let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
        let names: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
        let published = published_sql(ctx.server_version, "c.oid", "$3");
        let rows = client
            .query(
                &format!(
                    "SELECT w.schema_name, w.table_name,
                            COALESCE(pg_catalog.has_schema_privilege(n.oid, 'USAGE'), false),
                            c.oid IS NOT NULL,
                            COALESCE(c.relkind::text, ''), COALESCE(c.relispartition, false),
                            COALESCE(c.relpersistence::text, ''), COALESCE(c.relreplident::text, ''),
                            COALESCE(pg_catalog.has_table_privilege(c.oid, 'SELECT'), false),
                            COALESCE(pg_catalog.pg_has_role(c.relowner, 'USAGE'), false),
                            EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                            EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                    WHERE i.indrelid = c.oid AND i.indisreplident AND i.indisvalid),
                            COALESCE(c.relrowsecurity, false), COALESCE(c.relforcerowsecurity, false),
                            COALESCE(c.reltoastrelid <> 0 AND pg_catalog.pg_relation_size(c.reltoastrelid) > 0, false),
                            {published}
                     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(schema_name, table_name, ord)
                     LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema_name
                     LEFT JOIN pg_catalog.pg_class c
                       ON c.relnamespace = n.oid AND c.relname = w.table_name AND c.relkind IN ('r', 'p')
                     ORDER BY w.ord"
                ),
                &[&schemas, &names, &config.publication_name()],
            )
            .await?;
        let first_char = |text: String| text.chars().next().unwrap_or(' ');
        let facts = rows
            .into_iter()
            .map(|row| TableFacts {
                schema: row.get(0),
                name: row.get(1),
                schema_usage: row.get(2),
                exists: row.get(3),
                relkind: first_char(row.get(4)),
                is_partition: row.get(5),
                persistence: first_char(row.get(6)),
                replica_identity: first_char(row.get(7)),
                select: row.get(8),
                owned: row.get(9),
                has_primary_key: row.get(10),
                has_identity_index: row.get(11),
                row_security: row.get(12),
                force_row_security: row.get(13),
                toasted: row.get(14),
                published: row.get(15),
            })
            .collect();
        Ok((publication, facts))
    }
}

/// Per-table prerequisites of `tables`. Changes nothing; logs advice as warnings.
pub async fn check_tables(
    client: &Client,
    config: &Config,
    tables: &BTreeSet<(String, String)>,
) -> Result<Vec<Problem>, Error> {
    let ctx = Context::load(client, config).await?;
    let (publication, facts) = TableFacts::load(client, config, &ctx, tables).await?;
    for advice in table_advice(&facts) {
        tracing::warn!(advice = %advice, "capture advice");
    }
    Ok(table_problems(&ctx, config, &publication, &facts))
}

/// The rules, without IO.
pub fn table_problems(
    ctx: &Context,
    config: &Config,
    publication: &PublicationState,
    tables: &[TableFacts],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let user = ctx.quoted_user();
    let publication_name = config.publication_name();
    let quoted_publication = quote_identifier(publication_name);
    let as_partitions = config.raw.advanced.capture_as_partitions;
    for table in tables {
        let name = display_name(&table.schema, &table.name);
        let quoted = qualified(&table.schema, &table.name);
        if !table.exists {
            problems.push(Problem::without_fix(format!(
                "table {name} does not exist: create it, or remove its binding (names are case-sensitive)"
            )));
            continue;
        }
        if !(table.select && table.schema_usage) {
            let mut fixes = vec![(Step::TableGrant, format!("GRANT SELECT ON TABLE {quoted} TO {user};"))];
            if !table.schema_usage {
                fixes.push((
                    Step::SchemaGrant,
                    format!("GRANT USAGE ON SCHEMA {} TO {user};", quote_identifier(&table.schema)),
                ));
            }
            problems.push(ctx.problem(format!("user {:?} cannot read from table {name}", ctx.user), fixes));
        }
        if table.persistence == 'u' {
            problems.push(ctx.problem(
                format!("table {name} is UNLOGGED, so its changes never reach the replication stream"),
                vec![(Step::TableSetting, format!("ALTER TABLE {quoted} SET LOGGED;"))],
            ));
        }
        if table.relkind == 'r' {
            let identity_missing = match table.replica_identity {
                'f' => None,
                'd' if table.has_primary_key => None,
                'd' => Some("has no primary key and its replica identity is DEFAULT"),
                'i' if table.has_identity_index => None,
                'i' => Some("has replica identity USING INDEX, but the index is gone or invalid"),
                _ => Some("has REPLICA IDENTITY NOTHING"),
            };
            if let Some(why) = identity_missing {
                problems.push(ctx.problem(
                    format!("table {name} {why}: updates and deletes cannot be captured, and fail on the server once the table is published"),
                    vec![(Step::TableSetting, format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL;"))],
                ));
            }
        }
        let rls_applies = table.row_security && !ctx.bypasses_rls && (table.force_row_security || !table.owned);
        if rls_applies {
            problems.push(ctx.problem(
                format!("table {name} has row-level security enabled, so user {:?} would capture only the rows its policies allow", ctx.user),
                vec![(Step::Role, format!("ALTER ROLE {user} BYPASSRLS;"))],
            ));
        }
        if table.relkind == 'p' && as_partitions {
            problems.push(Problem::without_fix(format!(
                "table {name} is partitioned, but capture_as_partitions is set: bind its partitions instead, or turn capture_as_partitions off"
            )));
        }
        if table.relkind == 'p' && !as_partitions && publication.exists && !publication.via_root {
            problems.push(ctx.problem(
                format!("publication {publication_name:?} has publish_via_partition_root disabled, so changes of the partitioned table {name} would arrive under its partitions' names"),
                vec![(Step::AlterPublication, format!("ALTER PUBLICATION {quoted_publication} SET (publish_via_partition_root = true);"))],
            ));
        }
        let may_add = table.owned
            && !publication.all_tables
            && if publication.exists { publication.owned } else { ctx.can_create_publication };
        if !table.published && !may_add {
            problems.push(ctx.problem(
                format!("table {name} is not in publication {publication_name:?} and couldn't be added automatically"),
                vec![(
                    Step::PublicationAddTable,
                    format!("ALTER PUBLICATION {quoted_publication} ADD TABLE {quoted};"),
                )],
            ));
        }
    }
    problems
}

/// Advice that does not stop the capture.
pub fn table_advice(tables: &[TableFacts]) -> Vec<String> {
    tables
        .iter()
        .filter(|t| t.exists && t.relkind == 'r' && t.toasted && t.replica_identity != 'f')
        .map(|t| {
            format!(
                "table {} stores large values out of line (TOAST): an update that leaves such a value unchanged does not carry it, \
                 and the captured document then lacks it. To capture every column on every update, run: ALTER TABLE {} REPLICA IDENTITY FULL;",
                display_name(&t.schema, &t.name),
                qualified(&t.schema, &t.name)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::platform::Platform;
    use crate::validate::{report, script_of};
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            user: "flow_capture".into(),
            database: "shop".into(),
            server_version: 150_004,
            platform: Platform::SelfHosted,
            is_superuser: false,
            bypasses_rls: false,
            can_create_publication: false,
        }
    }

    fn config() -> Config {
        Config::parse(&json!({"address": "h", "credentials": {"auth_type": "UserPassword", "password": "pw"}})).unwrap()
    }

    fn good(schema: &str, name: &str) -> TableFacts {
        TableFacts {
            schema: schema.into(),
            name: name.into(),
            schema_usage: true,
            exists: true,
            relkind: 'r',
            persistence: 'p',
            replica_identity: 'd',
            select: true,
            has_primary_key: true,
            published: true,
            ..Default::default()
        }
    }

    fn publication() -> PublicationState {
        PublicationState { exists: true, via_root: true, ..Default::default() }
    }

    fn run(tables: &[TableFacts]) -> (String, Vec<String>) {
        let problems = table_problems(&ctx(), &config(), &publication(), tables);
        if problems.is_empty() {
            return (String::new(), Vec::new());
        }
        let err = report(&problems);
        let hint = err.hint().unwrap_or_default();
        (err.to_string(), script_of(&hint).iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn readable_published_keyed_tables_pass() {
        assert_eq!(run(&[good("public", "t")]), (String::new(), Vec::new()));
    }

    #[test]
    fn unreadable_unpublished_tables_get_grants_then_membership() {
        let table = TableFacts { select: false, schema_usage: false, published: false, ..good("Sales", "Order\"s") };
        let (message, script) = run(&[table]);
        assert!(message.contains(" - user \"flow_capture\" cannot read from table \"Sales.Order\\\"s\""), "{message}");
        assert_eq!(
            script,
            [
                "-- as a superuser, connected to database \"shop\":",
                "GRANT USAGE ON SCHEMA \"Sales\" TO \"flow_capture\";",
                "GRANT SELECT ON TABLE \"Sales\".\"Order\"\"s\" TO \"flow_capture\";",
                "ALTER PUBLICATION \"flow_publication\" ADD TABLE \"Sales\".\"Order\"\"s\";",
            ]
        );
    }

    #[test]
    fn owned_tables_in_an_owned_publication_are_added_by_apply() {
        let table = TableFacts { owned: true, published: false, ..good("public", "t") };
        let owned = PublicationState { owned: true, ..publication() };
        assert!(table_problems(&ctx(), &config(), &owned, std::slice::from_ref(&table)).is_empty());
        let creatable = Context { can_create_publication: true, ..ctx() };
        assert!(table_problems(&creatable, &config(), &PublicationState::default(), &[table]).is_empty());
    }

    #[test]
    fn keyless_tables_need_a_replica_identity() {
        let (message, script) = run(&[TableFacts { has_primary_key: false, ..good("public", "log") }]);
        assert!(message.contains("has no primary key and its replica identity is DEFAULT"), "{message}");
        assert_eq!(script[1], "ALTER TABLE \"public\".\"log\" REPLICA IDENTITY FULL;");
        assert_eq!(
            run(&[TableFacts { has_primary_key: false, replica_identity: 'f', ..good("public", "log") }]).1.len(),
            0
        );
        assert!(run(&[TableFacts { replica_identity: 'n', ..good("public", "t") }])
            .0
            .contains("REPLICA IDENTITY NOTHING"));
        assert!(run(&[TableFacts { replica_identity: 'i', ..good("public", "t") }]).0.contains("USING INDEX"));
        // Partitioned tables have no replica identity of their own.
        let root = TableFacts { relkind: 'p', has_primary_key: false, ..good("public", "p") };
        assert_eq!(run(&[root]).1.len(), 0);
    }

    #[test]
    fn missing_unlogged_and_row_secured_tables_are_reported() {
        let (message, script) = run(&[
            TableFacts { exists: false, ..Default::default() },
            TableFacts { persistence: 'u', ..good("public", "u") },
            TableFacts { row_security: true, ..good("public", "r") },
        ]);
        assert!(message.contains("table \".\" does not exist"), "{message}");
        assert!(message.contains("table \"public.u\" is UNLOGGED"), "{message}");
        assert!(message.contains("table \"public.r\" has row-level security enabled"), "{message}");
        assert_eq!(script[1..], ["ALTER ROLE \"flow_capture\" BYPASSRLS;", "ALTER TABLE \"public\".\"u\" SET LOGGED;"]);
        // The owner is exempt unless security is forced.
        assert_eq!(run(&[TableFacts { row_security: true, owned: true, ..good("public", "r") }]).1.len(), 0);
        assert_eq!(
            run(&[TableFacts { row_security: true, force_row_security: true, owned: true, ..good("public", "r") }])
                .1
                .len(),
            2
        );
    }

    #[test]
    fn partitioned_tables_need_publish_via_partition_root() {
        let root = TableFacts { relkind: 'p', ..good("public", "events") };
        let without_root = PublicationState { via_root: false, ..publication() };
        let problems = table_problems(&ctx(), &config(), &without_root, std::slice::from_ref(&root));
        assert_eq!(problems.len(), 1);
        assert!(problems[0]
            .fixes
            .iter()
            .any(|f| f.sql == "ALTER PUBLICATION \"flow_publication\" SET (publish_via_partition_root = true);"));
        let mut cfg = config();
        cfg.raw.advanced.capture_as_partitions = true;
        let problems = table_problems(&ctx(), &cfg, &publication(), &[root]);
        assert!(problems[0].message.contains("capture_as_partitions is set"));
    }

    #[test]
    fn toasted_tables_get_advice_unless_identity_is_full() {
        let toasted = TableFacts { toasted: true, ..good("public", "docs") };
        let advice = table_advice(std::slice::from_ref(&toasted));
        assert_eq!(advice.len(), 1);
        assert!(advice[0].ends_with("ALTER TABLE \"public\".\"docs\" REPLICA IDENTITY FULL;"));
        assert!(table_advice(&[TableFacts { replica_identity: 'f', ..toasted }]).is_empty());
    }
}
