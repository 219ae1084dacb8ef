//! Per-table prerequisites of the bound tables: the table exists, the user can read it,
//! the publication carries it (or the user may add it), its changes can be replicated
//! (logged, with a replica identity), row-level security does not hide rows, and a
//! partitioned table fits the publication's `publish_via_partition_root`, and its replica
//! identity carries the collection key (else deletes and key changes arrive without it).
//! Tables that store TOASTed values get advice (a warning, not a failure) about
//! `REPLICA IDENTITY FULL`, as do tables whose key can be stored out of line on a server
//! that does not send such keys with updates.
//!
//! One query reads the facts of every bound table ([`TableFacts::load`]);
//! [`table_problems`] applies the rules without IO.

use std::collections::{BTreeMap, BTreeSet};

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
    /// The table's columns.
    pub columns: Vec<String>,
    /// The columns of the replica identity's index (the primary key under `DEFAULT`).
    pub identity_columns: Vec<String>,
    /// The name of that index.
    pub identity_index: Option<String>,
    /// Identity columns whose values can be stored out of line (variable-length, storage
    /// other than `PLAIN`: even `MAIN` moves out of line as a last resort).
    pub out_of_line_identity: Vec<String>,
    /// The collection key's columns, from the binding (`None`: not made of columns).
    pub key_columns: Option<Vec<String>>,
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
                            {published},
                            ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
                            ARRAY(SELECT a.attname::text FROM {IDENTITY_COLUMNS} ORDER BY a.attnum),
                            (SELECT ic.relname::text FROM pg_catalog.pg_index i
                             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                             WHERE i.indrelid = c.oid AND {IDENTITY_INDEX} LIMIT 1),
                            ARRAY(SELECT a.attname::text FROM {IDENTITY_COLUMNS}
                                  AND a.attlen = -1 AND a.attstorage <> 'p' ORDER BY a.attnum)
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
                columns: row.get(16),
                identity_columns: row.get(17),
                identity_index: row.get(18),
                out_of_line_identity: row.get(19),
                key_columns: None,
            })
            .collect();
        Ok((publication, facts))
    }
}

/// The index of a table's replica identity (the primary key under `DEFAULT`), as a
/// condition on `pg_index i` of the table `c`.
const IDENTITY_INDEX: &str =
    "CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END";

/// The columns of that index, as a `FROM` clause over `pg_attribute a` ending in a `WHERE`
/// condition (the same as [`IDENTITY_INDEX`]).
const IDENTITY_COLUMNS: &str = "pg_catalog.pg_index i
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END";

/// Per-table prerequisites of `tables`, whose collection keys are made of `keys` (tables
/// missing there have a key that is not made of columns). Changes nothing; logs advice as
/// warnings.
pub async fn check_tables(
    client: &Client,
    config: &Config,
    ctx: &Context,
    tables: &BTreeSet<(String, String)>,
    keys: &BTreeMap<(String, String), Vec<String>>,
) -> Result<Vec<Problem>, Error> {
    let (publication, mut facts) = TableFacts::load(client, config, ctx, tables).await?;
    for table in &mut facts {
        table.key_columns = keys.get(&(table.schema.clone(), table.name.clone())).cloned();
    }
    for advice in table_advice(&facts, ctx.server_version) {
        tracing::warn!(advice = %advice, "capture advice");
    }
    Ok(table_problems(ctx, config, &publication, &facts))
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
            } else if let Some(gap) = identity_gap(table) {
                problems.push(ctx.problem(
                    format!("table {name} has {gap}: its updates and deletes would reach the capture without the key, so deleted rows would stay in the collection and a changed key would leave its old document behind. REPLICA IDENTITY FULL (below) or USING INDEX on a unique index of the key columns fixes it"),
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
        // A read-only capture alters no publication.
        let may_add = table.owned
            && !config.read_only()
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
pub fn table_advice(tables: &[TableFacts], server_version: i32) -> Vec<String> {
    let mut advice: Vec<String> = tables
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
        .collect();
    // Servers with the fix send the old key of such an update, and the capture takes the
    // key from it; without it, the capture has to fail at the first such update.
    if !sends_unchanged_out_of_line_keys(server_version) {
        advice.extend(
            tables
                .iter()
                .filter(|t| t.exists && t.relkind == 'r' && t.replica_identity != 'f' && !t.out_of_line_identity.is_empty())
                .map(|t| {
                    format!(
                        "table {}: key column{} {} can be stored out of line (TOAST), and this server (PostgreSQL {}) does not send such a key with an update \
                         that leaves it unchanged: the capture would stop at the first such update, since it cannot tell which document the update changes. \
                         Upgrade to the latest minor release (13.7 and 14.3 fixed this), or run: ALTER TABLE {} REPLICA IDENTITY FULL;",
                        display_name(&t.schema, &t.name),
                        if t.out_of_line_identity.len() == 1 { "" } else { "s" },
                        t.out_of_line_identity.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
                        version_text(server_version),
                        qualified(&t.schema, &t.name)
                    )
                }),
        );
    }
    advice
}

/// Whether the server sends an unchanged out-of-line replica identity value in the old key
/// of an update (the new row only marks it as unchanged): fixed in 13.7 and 14.3, and in
/// every release since.
pub fn sends_unchanged_out_of_line_keys(server_version: i32) -> bool {
    server_version >= 140_003 || (130_007..140_000).contains(&server_version)
}

fn version_text(server_version: i32) -> String {
    format!("{}.{}", server_version / 10_000, server_version % 10_000)
}

/// The replica identity of `table`, described, when it leaves out collection key columns
/// (which then never reach the capture with updates and deletes).
fn identity_gap(table: &TableFacts) -> Option<String> {
    let key = table.key_columns.as_ref()?;
    let missing: Vec<&String> =
        key.iter().filter(|k| table.columns.contains(k) && !table.identity_columns.contains(k)).collect();
    if missing.is_empty() || table.identity_columns.is_empty() {
        return None;
    }
    let list =
        |columns: &mut dyn Iterator<Item = &String>| columns.map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    let index = table.identity_index.as_deref().map(quote_identifier).unwrap_or_default();
    let identity = match table.replica_identity {
        'i' => format!("REPLICA IDENTITY USING INDEX {index} (columns {})", list(&mut table.identity_columns.iter())),
        _ => format!(
            "REPLICA IDENTITY DEFAULT, the primary key {index} (columns {})",
            list(&mut table.identity_columns.iter())
        ),
    };
    Some(format!(
        "{identity}, which leaves out collection key column{} {}",
        if missing.len() == 1 { "" } else { "s" },
        list(&mut missing.into_iter())
    ))
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
        assert!(table_problems(&creatable, &config(), &PublicationState::default(), std::slice::from_ref(&table))
            .is_empty());
        // A read-only capture alters no publication: an administrator adds the table.
        let read_only =
            Config::parse(&json!({"address": "h", "credentials": {"auth_type": "UserPassword", "password": "pw"},
            "advanced": {"read_only_capture": true}}))
            .unwrap();
        let problems = table_problems(&ctx(), &read_only, &owned, &[table]);
        let (message, hint) = (problems[0].message.clone(), problems[0].fixes[0].sql.clone());
        assert_eq!(problems.len(), 1);
        assert!(
            message.contains("is not in publication \"flow_publication\" and couldn't be added automatically"),
            "{message}"
        );
        assert_eq!(hint, "ALTER PUBLICATION \"flow_publication\" ADD TABLE \"public\".\"t\";");
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
        let advice = table_advice(std::slice::from_ref(&toasted), 150_004);
        assert_eq!(advice.len(), 1);
        assert!(advice[0].ends_with("ALTER TABLE \"public\".\"docs\" REPLICA IDENTITY FULL;"));
        assert!(table_advice(&[TableFacts { replica_identity: 'f', ..toasted }], 150_004).is_empty());
    }

    fn keyed(identity: char, identity_columns: &[&str], key: &[&str]) -> TableFacts {
        TableFacts {
            replica_identity: identity,
            has_identity_index: identity == 'i',
            columns: ["id", "code", "v"].map(String::from).to_vec(),
            identity_columns: identity_columns.iter().map(|c| c.to_string()).collect(),
            identity_index: Some(if identity == 'i' { "t_code_key" } else { "t_pkey" }.into()),
            key_columns: Some(key.iter().map(|c| c.to_string()).collect()),
            ..good("public", "t")
        }
    }

    #[test]
    fn a_replica_identity_without_the_collection_key_is_refused() {
        let (message, script) = run(&[keyed('i', &["code"], &["id"])]);
        assert!(
            message.contains("table \"public.t\" has REPLICA IDENTITY USING INDEX \"t_code_key\" (columns \"code\"), which leaves out collection key column \"id\": its updates and deletes would reach the capture without the key"),
            "{message}"
        );
        assert_eq!(script[1], "ALTER TABLE \"public\".\"t\" REPLICA IDENTITY FULL;");
        // A primary key that is not the collection key is the same problem.
        let (message, _) = run(&[keyed('d', &["code"], &["id", "code"])]);
        assert!(message.contains("REPLICA IDENTITY DEFAULT, the primary key \"t_pkey\" (columns \"code\"), which leaves out collection key column \"id\""), "{message}");
        // Identities holding every key column, FULL, keys that are not columns: fine.
        assert_eq!(run(&[keyed('i', &["code", "id"], &["id"])]).1.len(), 0);
        assert_eq!(run(&[keyed('d', &["id"], &["id"])]).1.len(), 0);
        assert_eq!(run(&[keyed('f', &[], &["id"])]).1.len(), 0);
        assert_eq!(run(&[TableFacts { key_columns: None, ..keyed('i', &["code"], &["id"]) }]).1.len(), 0);
    }

    #[test]
    fn out_of_line_keys_get_advice_only_where_the_server_drops_them() {
        let table = TableFacts { out_of_line_identity: vec!["id".into()], ..good("public", "t") };
        for fixed in [130_007, 130_020, 140_003, 150_000, 170_002] {
            assert!(table_advice(std::slice::from_ref(&table), fixed).is_empty(), "{fixed}");
        }
        for unfixed in [130_000, 130_006, 140_000, 140_002] {
            let advice = table_advice(std::slice::from_ref(&table), unfixed);
            assert_eq!(advice.len(), 1, "{unfixed}");
            assert!(
                advice[0].starts_with("table \"public.t\": key column \"id\" can be stored out of line (TOAST)"),
                "{}",
                advice[0]
            );
            assert!(advice[0].ends_with("ALTER TABLE \"public\".\"t\" REPLICA IDENTITY FULL;"), "{}", advice[0]);
        }
        assert!(table_advice(&[TableFacts { replica_identity: 'f', ..table }], 140_000).is_empty());
    }
}
