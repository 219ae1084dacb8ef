//! What `apply` and the capture session create on their own: the publication (when the
//! user has CREATE on the database), the watermarks table (when the user may create it in
//! its schema), and publication membership of the watermarks table and the bound tables
//! (when the user owns both the table and the publication).
//!
//! Everything here is idempotent: each step first looks, then acts only on what is
//! missing, and a concurrent creator (SQLSTATE 42710, "already exists") counts as done.
//! Nothing is ever dropped or altered beyond adding. Each action is described in the
//! returned list, which becomes `apply`'s `actionDescription`.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::server::ServerFacts;
use super::tables::TableFacts;
use super::watermarks::watermarks_problems;
use super::{qualified, report, Context};
use crate::config::Config;
use crate::error::Error;
use crate::pg::{quote_identifier, PgError};

/// Run one statement of ours; "already exists" means another run got there first.
async fn run(client: &Client, statement: &str, what: &str) -> Result<bool, Error> {
    match client.batch_execute(statement).await {
        Ok(()) => Ok(true),
        Err(err) => {
            let err = PgError::from(err);
            if err.sqlstate() == Some("42710") {
                return Ok(false);
            }
            Err(Error::user(format!("{what} failed: {err}"), format!("run it yourself as a superuser: {statement};")))
        }
    }
}

/// Create the publication when it is missing and the user may (CREATE on the database).
async fn ensure_publication(
    client: &Client,
    config: &Config,
    ctx: &Context,
    actions: &mut Vec<String>,
) -> Result<(), Error> {
    let publication = config.publication_name();
    let exists: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)", &[&publication])
        .await?
        .get(0);
    if exists || !ctx.can_create_publication {
        return Ok(());
    }
    let quoted = quote_identifier(publication);
    let statement = if config.raw.advanced.capture_as_partitions {
        format!("CREATE PUBLICATION {quoted}")
    } else {
        format!("CREATE PUBLICATION {quoted} WITH (publish_via_partition_root = true)")
    };
    if run(client, &statement, &format!("creating publication {quoted}")).await? {
        actions.push(format!("created publication {quoted}"));
    }
    Ok(())
}

/// Create the watermarks table if missing and make sure the publication carries it
/// (since PostgreSQL 15, pgoutput skips transactions that change no published table, so
/// an unpublished watermark write would never reach the stream). Creates the publication
/// first when it is missing and the user may. Returns what was done; fails with the
/// remediation SQL when the user may not do what is needed.
pub async fn ensure_watermarks_table(client: &Client, config: &Config, ctx: &Context) -> Result<Vec<String>, Error> {
    let mut actions = Vec::new();
    ensure_publication(client, config, ctx, &mut actions).await?;
    // Read after the publication may have been created: these facts include it.
    let facts = ServerFacts::load(client, config, ctx).await?;
    let problems = watermarks_problems(ctx, config, &facts);
    if !problems.is_empty() {
        return Err(report(&problems));
    }
    let table = config.watermarks().quoted();
    if !facts.watermarks.exists {
        let statement = format!("CREATE TABLE IF NOT EXISTS {table} (slot TEXT PRIMARY KEY, watermark TEXT)");
        if run(client, &statement, &format!("creating the watermarks table {table}")).await? {
            actions.push(format!("created watermarks table {table}"));
        }
    }
    if !facts.watermarks.published && !facts.publication.as_ref().is_some_and(|p| p.all_tables) {
        add_to_publication(client, config, &table, &mut actions).await?;
    }
    Ok(actions)
}

async fn add_to_publication(
    client: &Client,
    config: &Config,
    table: &str,
    actions: &mut Vec<String>,
) -> Result<(), Error> {
    let publication = quote_identifier(config.publication_name());
    let statement = format!("ALTER PUBLICATION {publication} ADD TABLE {table}");
    if run(client, &statement, &format!("adding {table} to publication {publication}")).await? {
        actions.push(format!("added {table} to publication {publication}"));
    }
    Ok(())
}

/// Everything `apply` does: [`ensure_watermarks_table`] (with the publication), then add
/// each bound table the user owns to the publication the user owns. Tables the user may
/// not add are left to validation, which reports them with the SQL to run.
pub async fn ensure_capture_objects(
    client: &Client,
    config: &Config,
    ctx: &Context,
    tables: &BTreeSet<(String, String)>,
) -> Result<Vec<String>, Error> {
    let mut actions = ensure_watermarks_table(client, config, ctx).await?;
    let (publication, facts) = TableFacts::load(client, config, ctx, tables).await?;
    if !publication.exists || publication.all_tables || !publication.owned {
        return Ok(actions);
    }
    for table in facts.iter().filter(|t| t.exists && !t.published && t.owned) {
        add_to_publication(client, config, &qualified(&table.schema, &table.name), &mut actions).await?;
    }
    Ok(actions)
}
