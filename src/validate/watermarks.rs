//! The watermarks table, which the capture writes a watermark into at each backfill chunk
//! and reads back from the replication stream: [`WatermarksFacts::load`] reads what the
//! catalog says about it (one query, names passed as parameters), and
//! `watermarks_problems` turns the facts into problems and fixes without IO, so that
//! every rule is unit-tested.
//!
//! The table must exist (or be creatable by the user, who then owns it), be writable,
//! have a unique key on `slot` (the watermark upsert's `ON CONFLICT (slot)`), and be in
//! the publication (since PostgreSQL 15 pgoutput skips transactions that change no
//! published table, so an unpublished watermark write never reaches the stream). What the
//! capture can do itself (create the table, add it to a publication it owns) is not a
//! problem; what it cannot comes with the statements an administrator runs, in order.

use tokio_postgres::Client;

use super::server::{published_sql, ServerFacts};
use super::{Context, Problem, Step};
use crate::config::Config;
use crate::error::Error;
use crate::pg::quote_identifier;

/// The watermarks table and the user's rights on it and its schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatermarksFacts {
    pub schema_exists: bool,
    pub schema_usage: bool,
    pub schema_create: bool,
    pub exists: bool,
    pub owned: bool,
    pub select: bool,
    pub insert: bool,
    pub update: bool,
    /// A unique index on `slot` alone, which the watermark upsert's `ON CONFLICT (slot)` needs.
    pub unique_slot: bool,
    pub published: bool,
}

impl WatermarksFacts {
    /// What the catalog says about the configured watermarks table (one query; the names
    /// are parameters).
    pub async fn load(client: &Client, config: &Config, server_version: i32) -> Result<WatermarksFacts, Error> {
        let published = published_sql(server_version, "c.oid", "$3");
        let row = client
            .query_one(
                &format!(
                    "SELECT n.oid IS NOT NULL,
                            COALESCE(pg_catalog.has_schema_privilege(n.oid, 'USAGE'), false),
                            COALESCE(pg_catalog.has_schema_privilege(n.oid, 'CREATE'), false),
                            c.oid IS NOT NULL,
                            COALESCE(pg_catalog.pg_has_role(c.relowner, 'USAGE'), false),
                            COALESCE(pg_catalog.has_table_privilege(c.oid, 'SELECT'), false),
                            COALESCE(pg_catalog.has_table_privilege(c.oid, 'INSERT'), false),
                            COALESCE(pg_catalog.has_table_privilege(c.oid, 'UPDATE'), false),
                            EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                                    WHERE i.indrelid = c.oid AND i.indisunique AND i.indnatts = 1
                                      AND i.indpred IS NULL AND a.attname = 'slot'),
                            {published}
                     FROM (SELECT 1) AS one
                     LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1
                     LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = $2 AND c.relkind IN ('r', 'p')"
                ),
                &[&config.watermarks_schema, &config.watermarks_table, &config.publication_name()],
            )
            .await?;
        Ok(WatermarksFacts {
            schema_exists: row.get(0),
            schema_usage: row.get(1),
            schema_create: row.get(2),
            exists: row.get(3),
            owned: row.get(4),
            select: row.get(5),
            insert: row.get(6),
            update: row.get(7),
            unique_slot: row.get(8),
            published: row.get(9),
        })
    }
}

/// The watermarks table must be writable and published; the capture creates it (and adds
/// it to the publication) when the user may.
pub(super) fn watermarks_problems(ctx: &Context, config: &Config, facts: &ServerFacts) -> Vec<Problem> {
    let mut problems = Vec::new();
    let wm = &facts.watermarks;
    let table = config.watermarks();
    let (schema, name, quoted) = (&table.schema, table.to_string(), table.quoted());
    let user = ctx.quoted_user();
    let grant_usage = (Step::SchemaGrant, format!("GRANT USAGE ON SCHEMA {} TO {user};", quote_identifier(schema)));
    let grant_write = (Step::TableGrant, format!("GRANT SELECT, INSERT, UPDATE ON TABLE {quoted} TO {user};"));
    // Whether the user will own the table: it exists and is owned, or the user creates it.
    let user_creates = !wm.exists && wm.schema_exists && wm.schema_usage && wm.schema_create;
    if !wm.exists && !user_creates {
        let mut fixes = Vec::new();
        if !wm.schema_exists {
            fixes.push((Step::CreateSchema, format!("CREATE SCHEMA IF NOT EXISTS {};", quote_identifier(schema))));
        }
        if !wm.schema_usage {
            fixes.push(grant_usage.clone());
        }
        fixes.push((
            Step::CreateTable,
            format!("CREATE TABLE IF NOT EXISTS {quoted} (slot TEXT PRIMARY KEY, watermark TEXT);"),
        ));
        fixes.push(grant_write.clone());
        problems.push(ctx.problem(format!("user {:?} cannot create the watermarks table {name}", ctx.user), fixes));
    } else if wm.exists {
        if !(wm.schema_usage && wm.select && wm.insert && wm.update) {
            let mut fixes = vec![grant_write.clone()];
            if !wm.schema_usage {
                fixes.push(grant_usage.clone());
            }
            problems
                .push(ctx.problem(format!("user {:?} cannot write to the watermarks table {name}", ctx.user), fixes));
        }
        if !wm.unique_slot {
            problems.push(ctx.problem(
                format!("the watermarks table {name} has no primary key or unique index on its \"slot\" column"),
                vec![(Step::TableSetting, format!("ALTER TABLE {quoted} ADD PRIMARY KEY (slot);"))],
            ));
        }
    }
    // Publication membership (since PostgreSQL 15 pgoutput skips transactions that change
    // no published table, so an unpublished watermark write never reaches the stream).
    let will_own = user_creates || (wm.exists && wm.owned);
    let may_add = will_own
        && match &facts.publication {
            Some(publication) => publication.owned,
            None => ctx.can_create_publication,
        };
    let published = wm.published || facts.publication.as_ref().is_some_and(|p| p.all_tables);
    if !published && !may_add {
        let publication = config.publication_name();
        let mut fixes = vec![(
            Step::PublicationAddTable,
            format!("ALTER PUBLICATION {} ADD TABLE {quoted};", quote_identifier(publication)),
        )];
        if !wm.exists {
            // The table must exist before it can be added: the admin creates it too.
            fixes.push((
                Step::CreateTable,
                format!("CREATE TABLE IF NOT EXISTS {quoted} (slot TEXT PRIMARY KEY, watermark TEXT);"),
            ));
            fixes.push(grant_write.clone());
            if wm.schema_exists && !wm.schema_usage {
                fixes.push(grant_usage.clone());
            }
            if !wm.schema_exists {
                fixes.push((Step::CreateSchema, format!("CREATE SCHEMA IF NOT EXISTS {};", quote_identifier(schema))));
            }
        }
        problems.push(ctx.problem(
            format!(
                "the watermarks table {name} is not in publication {publication:?} and couldn't be added automatically"
            ),
            fixes,
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::platform::Platform;
    use crate::validate::server::tests::{config, context, outcome, ready};
    use crate::validate::server::{server_problems, PublicationFacts};

    #[test]
    fn watermarks_table_rights_and_shape() {
        let ctx = context(Platform::SelfHosted);
        let read_only = WatermarksFacts { insert: false, update: false, ..ready().watermarks };
        let (message, script) = outcome(&ctx, &ServerFacts { watermarks: read_only, ..ready() });
        assert!(message.contains("cannot write to the watermarks table \"public.flow_watermarks\""), "{message}");
        assert_eq!(
            script[1],
            "GRANT SELECT, INSERT, UPDATE ON TABLE \"public\".\"flow_watermarks\" TO \"flow_capture\";"
        );
        let no_key = WatermarksFacts { unique_slot: false, ..ready().watermarks };
        let (_, script) = outcome(&ctx, &ServerFacts { watermarks: no_key, ..ready() });
        assert_eq!(script[1], "ALTER TABLE \"public\".\"flow_watermarks\" ADD PRIMARY KEY (slot);");
        // Creatable by the user, publication owned by the user: apply does both.
        let creatable =
            WatermarksFacts { schema_exists: true, schema_usage: true, schema_create: true, ..Default::default() };
        let owned = PublicationFacts { owned: true, ..ready().publication.unwrap() };
        let facts = ServerFacts { watermarks: creatable.clone(), publication: Some(owned), ..ready() };
        assert!(server_problems(&ctx, &config(), &facts).is_empty());
        // Creatable by the user, but the publication is someone else's: the admin creates
        // the table too, since it must exist to be added.
        let facts = ServerFacts { watermarks: creatable, ..ready() };
        let (message, script) = outcome(&ctx, &facts);
        assert!(
            message.contains("is not in publication \"flow_publication\" and couldn't be added automatically"),
            "{message}"
        );
        assert_eq!(
            script[1..],
            [
                "CREATE TABLE IF NOT EXISTS \"public\".\"flow_watermarks\" (slot TEXT PRIMARY KEY, watermark TEXT);",
                "GRANT SELECT, INSERT, UPDATE ON TABLE \"public\".\"flow_watermarks\" TO \"flow_capture\";",
                "ALTER PUBLICATION \"flow_publication\" ADD TABLE \"public\".\"flow_watermarks\";",
            ]
        );
        // A missing schema is created first.
        let (_, script) = outcome(&ctx, &ServerFacts { watermarks: WatermarksFacts::default(), ..ready() });
        assert_eq!(script[1], "CREATE SCHEMA IF NOT EXISTS \"public\";");
        assert_eq!(script[2], "GRANT USAGE ON SCHEMA \"public\" TO \"flow_capture\";");
    }
}
