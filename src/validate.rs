//! `validate` and `apply`: prerequisite checks that say exactly what to run.
//!
//! Every problem found is collected (nothing stops at the first), sorted, and reported at
//! once; each comes with the SQL (or setting) that fixes it on this server for this user,
//! with every identifier quoted. `apply` is idempotent: it creates only what the capture
//! user may create (the watermarks table, publication membership) and never drops
//! anything.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::config::{BackfillMode, Config, ResourceConfig};
use crate::error::Error;
use crate::pg::{quote_identifier, quote_literal};
use crate::protocol::emitter::ValidatedBinding;
use crate::protocol::{Apply, CaptureSpec, Validate};

/// One unmet prerequisite and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub message: String,
    pub fix: String,
}

/// Format problems the way the Go connector does, plus the fix for each.
pub fn report(problems: &[Problem]) -> Error {
    let mut sorted = problems.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut message = String::from("the capture cannot run due to the following error(s):");
    for problem in sorted.iter().take(20) {
        message.push_str("\n - ");
        message.push_str(&problem.message);
    }
    if sorted.len() > 20 {
        message.push_str(&format!("\n - additional {} errors omitted", sorted.len() - 20));
    }
    let fixes: Vec<&str> = sorted.iter().map(|p| p.fix.as_str()).filter(|f| !f.is_empty()).collect();
    Error::user(message, if fixes.is_empty() { String::new() } else { format!("run:\n{}", fixes.join("\n")) })
}

fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_identifier(schema), quote_identifier(table))
}

/// Server-wide prerequisites: version, wal_level, replication privilege, slot, publication.
pub async fn check_server(client: &Client, config: &Config) -> Result<Vec<Problem>, Error> {
    let mut problems = Vec::new();
    let user = &config.raw.user;
    let version: i32 = client.query_one("SELECT current_setting('server_version_num')::int", &[]).await?.get(0);
    if version < 130_000 {
        problems.push(Problem {
            message: format!("PostgreSQL {} is not supported: the minimum version is 13", version / 10_000),
            fix: String::new(),
        });
        return Ok(problems);
    }
    let wal_level: String = client.query_one("SELECT current_setting('wal_level')", &[]).await?.get(0);
    if wal_level != "logical" {
        problems.push(Problem {
            message: format!("logical replication isn't enabled: current wal_level = {wal_level:?}"),
            fix: "ALTER SYSTEM SET wal_level = logical; -- then restart PostgreSQL (on RDS/Aurora set rds.logical_replication = 1 in the parameter group; on Cloud SQL set the cloudsql.logical_decoding flag; on Azure set wal_level in server parameters)".into(),
        });
    }
    let can_replicate: bool = client
        .query_one(
            "SELECT COALESCE((SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false)
                 OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'rds_replication'
                            AND pg_catalog.pg_has_role(current_user, 'rds_replication', 'member'))",
            &[],
        )
        .await?
        .get(0);
    if !can_replicate {
        problems.push(Problem {
            message: format!("user {user:?} must have the REPLICATION role (or 'rds_replication' on RDS)"),
            fix: format!("ALTER ROLE {} WITH REPLICATION;", quote_identifier(user)),
        });
    }
    let slot = config.slot_name();
    let slot_row = client
        .query_opt(
            "SELECT database, wal_status::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'",
            &[&slot],
        )
        .await?;
    if let Some(row) = slot_row {
        let database: Option<String> = row.get(0);
        if database.as_deref() != Some(config.raw.database.as_str()) {
            problems.push(Problem {
                message: format!(
                    "replication slot {slot:?} exists in database {:?}, but the configured database is {:?}: consider using a different slot name or removing the existing slot",
                    database.unwrap_or_default(),
                    config.raw.database
                ),
                fix: format!("SELECT pg_drop_replication_slot({}); -- in database {}, only if no other capture uses it", quote_literal(slot), quote_identifier(&config.raw.database)),
            });
        }
    }
    let publication = config.publication_name();
    let exists: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)", &[&publication])
        .await?
        .get(0);
    if !exists {
        problems.push(Problem {
            message: format!("publication {publication:?} does not exist"),
            fix: format!("CREATE PUBLICATION {};", quote_identifier(publication)),
        });
    }
    Ok(problems)
}

/// Per-table prerequisites: the table exists and the user can read it.
pub async fn check_tables(client: &Client, config: &Config, tables: &BTreeSet<(String, String)>) -> Result<Vec<Problem>, Error> {
    let mut problems = Vec::new();
    let user = &config.raw.user;
    for (schema, table) in tables {
        let name = qualified(schema, table);
        let readable: Option<bool> = client
            .query_one(
                "SELECT (SELECT pg_catalog.has_table_privilege(c.oid, 'SELECT')
                         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1 AND c.relname = $2)",
                &[schema, table],
            )
            .await?
            .get(0);
        match readable {
            None => problems.push(Problem {
                message: format!("table \"{schema}.{table}\" does not exist or is not visible to user {user:?}"),
                fix: String::new(),
            }),
            Some(false) => problems.push(Problem {
                message: format!("user {user:?} cannot read from table \"{schema}.{table}\""),
                fix: format!("GRANT SELECT ON {name} TO {};", quote_identifier(user)),
            }),
            Some(true) => {}
        }
    }
    Ok(problems)
}

fn parse_resources(bindings: &[serde_json::Value]) -> Result<Vec<ResourceConfig>, Error> {
    let mut seen = BTreeSet::new();
    let mut resources = Vec::with_capacity(bindings.len());
    for (index, value) in bindings.iter().enumerate() {
        let resource = ResourceConfig::parse(index, value)?;
        if !seen.insert(resource.resource_path()) {
            return Err(Error::user(
                format!("binding {index} captures table \"{}.{}\" again", resource.namespace, resource.stream),
                "each table may be bound once per capture: remove the duplicate binding",
            ));
        }
        resources.push(resource);
    }
    Ok(resources)
}

/// Rules about changing a binding between publications.
fn check_binding_changes(resources: &[ResourceConfig], backfills: &[u32], last: Option<&CaptureSpec>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(last) = last else { return problems };
    for (resource, backfill) in resources.iter().zip(backfills) {
        let previous = last.bindings.iter().find_map(|b| {
            let r = serde_json::from_value::<ResourceConfig>(b.resource_config.clone()).ok()?;
            (r.namespace == resource.namespace && r.stream == resource.stream).then_some((r, b.backfill))
        });
        let Some((previous, previous_backfill)) = previous else { continue };
        if *backfill != previous_backfill {
            continue;
        }
        let table = format!("{}.{}", resource.namespace, resource.stream);
        if previous.mode != resource.mode {
            problems.push(Problem {
                message: format!("must re-backfill when changing backfill mode: table {table:?} changed from {:?} to {:?}", mode_name(previous.mode), mode_name(resource.mode)),
                fix: String::new(),
            });
        }
        let filter = &resource.advanced.additional_backfill_filter;
        if filter.is_some() && *filter != previous.advanced.additional_backfill_filter {
            problems.push(Problem {
                message: format!("must re-backfill when changing the backfill filter: table {table:?}"),
                fix: String::new(),
            });
        }
    }
    problems
}

fn mode_name(mode: BackfillMode) -> &'static str {
    match mode {
        BackfillMode::Automatic => "",
        BackfillMode::Normal => "Normal",
        BackfillMode::Precise => "Precise",
        BackfillMode::OnlyChanges => "Only Changes",
        BackfillMode::WithoutPrimaryKey => "Without Primary Key",
    }
}

/// Answer `validate`: one binding per request binding, in order.
pub async fn validate(request: &Validate) -> Result<Vec<ValidatedBinding>, Error> {
    let config = Config::parse(&request.config)?;
    let values: Vec<serde_json::Value> = request.bindings.iter().map(|b| b.resource_config.clone()).collect();
    let resources = parse_resources(&values)?;
    let backfills: Vec<u32> = request.bindings.iter().map(|b| b.backfill).collect();
    let mut problems = check_binding_changes(&resources, &backfills, request.last_capture.as_ref());
    for (index, (resource, binding)) in resources.iter().zip(&request.bindings).enumerate() {
        let keyless = binding.collection.key.iter().map(String::as_str).eq(crate::discovery::FALLBACK_KEY);
        if keyless && resource.mode != BackfillMode::WithoutPrimaryKey && resource.mode != BackfillMode::OnlyChanges && resource.primary_key.is_none() {
            problems.push(Problem {
                message: format!("output collection for stream \"{}.{}\" (binding {index}) has the fallback key, which can't be used for a backfill", resource.namespace, resource.stream),
                fix: String::new(),
            });
        }
    }
    if !config.raw.advanced.skip_prerequisites {
        let client = crate::pg::connect_sql(&config.connect_params()).await?;
        problems.extend(check_server(&client, &config).await?);
        let tables: BTreeSet<(String, String)> = resources.iter().map(|r| (r.namespace.clone(), r.stream.clone())).collect();
        problems.extend(check_tables(&client, &config, &tables).await?);
    }
    if !problems.is_empty() {
        return Err(report(&problems));
    }
    Ok(resources.iter().map(|r| ValidatedBinding { resource_path: r.resource_path() }).collect())
}

/// Answer `apply`: create the watermarks table and publication membership when allowed.
pub async fn apply(request: &Apply) -> Result<String, Error> {
    if request.capture.bindings.is_empty() {
        return Ok(String::new());
    }
    let config = Config::parse(&request.capture.config)?;
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    let actions = ensure_watermarks_table(&client, &config).await?;
    Ok(actions.join("\n"))
}

/// Create the watermarks table if missing and make sure the publication carries it
/// (since PostgreSQL 15, pgoutput skips transactions that change no published table, so an
/// unpublished watermark write would never reach the stream). Returns what was done.
pub async fn ensure_watermarks_table(client: &Client, config: &Config) -> Result<Vec<String>, Error> {
    let mut actions = Vec::new();
    let table = qualified(&config.watermarks_schema, &config.watermarks_table);
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)",
            &[&config.watermarks_schema, &config.watermarks_table],
        )
        .await?
        .get(0);
    if !exists {
        client
            .batch_execute(&format!("CREATE TABLE IF NOT EXISTS {table} (slot TEXT PRIMARY KEY, watermark TEXT)"))
            .await
            .map_err(|err| {
                Error::user(
                    format!("user {:?} cannot create the watermarks table \"{}.{}\": {}", config.raw.user, config.watermarks_schema, config.watermarks_table, crate::pg::PgError::from(err)),
                    format!("CREATE TABLE {table} (slot TEXT PRIMARY KEY, watermark TEXT); GRANT ALL ON {table} TO {};", quote_identifier(&config.raw.user)),
                )
            })?;
        actions.push(format!("created watermarks table {table}"));
    }
    let publication = config.publication_name();
    let published: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
            &[&publication, &config.watermarks_schema, &config.watermarks_table],
        )
        .await?
        .get(0);
    if !published {
        let statement = format!("ALTER PUBLICATION {} ADD TABLE {table}", quote_identifier(publication));
        client.batch_execute(&statement).await.map_err(|err| {
            Error::user(
                format!("the watermarks table \"{}.{}\" is not in publication {publication:?} and couldn't be added automatically: {}", config.watermarks_schema, config.watermarks_table, crate::pg::PgError::from(err)),
                format!("{statement};"),
            )
        })?;
        actions.push(format!("added {table} to publication {}", quote_identifier(publication)));
    }
    Ok(actions)
}
