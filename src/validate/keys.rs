//! Backfill keys of the bound tables: a binding that backfills in key order must page by
//! NOT NULL columns that exist (see `capture::unusable_backfill_key` for why). The capture
//! refuses such a binding when it opens; validation says so before it is published, with
//! `SET NOT NULL` as the fix for a nullable column (other fixes are named in the message).

use std::collections::BTreeSet;

use tokio_postgres::Client;

use super::{qualified, Context, Problem, Step};
use crate::config::{BackfillMode, Config, ResourceConfig};
use crate::error::Error;
use crate::pg::quote_identifier;
use crate::protocol::ValidateBinding;

/// One problem per binding whose backfill key cannot be paged.
pub async fn check_backfill_keys(
    client: &Client,
    config: &Config,
    ctx: &Context,
    resources: &[ResourceConfig],
    bindings: &[ValidateBinding],
) -> Result<Vec<Problem>, Error> {
    let scanned: Vec<(usize, &ResourceConfig, &ValidateBinding)> = resources
        .iter()
        .zip(bindings)
        .enumerate()
        .filter(|(_, (resource, _))| {
            !matches!(resource.mode, BackfillMode::OnlyChanges | BackfillMode::WithoutPrimaryKey)
                && !config.skips_backfill(&resource.namespace, &resource.stream)
        })
        .map(|(index, (resource, binding))| (index, resource, binding))
        .collect();
    if scanned.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: BTreeSet<(String, String)> =
        scanned.iter().map(|(_, r, _)| (r.namespace.clone(), r.stream.clone())).collect();
    // Missing tables are reported by the table checks.
    let tables = crate::discovery::discover_tables(client, config, Some(&wanted)).await?;
    let mut problems = Vec::new();
    for (index, resource, binding) in scanned {
        let Some(table) = tables.iter().find(|t| t.schema == resource.namespace && t.name == resource.stream) else {
            continue;
        };
        let keyed_by_location = binding.collection.key.iter().map(String::as_str).eq(crate::discovery::FALLBACK_KEY);
        let key_columns =
            crate::capture::choose_key_columns(resource, &binding.collection.key, table, keyed_by_location);
        let Some(problem) = crate::capture::unusable_backfill_key(table, &key_columns) else { continue };
        let message = format!("{} (binding {index}): {}", problem.message, crate::capture::UNUSABLE_KEY_HINT);
        match problem.nullable {
            Some(column) => {
                let sql = format!(
                    "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL;",
                    qualified(&table.schema, &table.name),
                    quote_identifier(&column)
                );
                problems.push(ctx.problem(message, vec![(Step::TableSetting, sql)]));
            }
            None => problems.push(Problem::without_fix(message)),
        }
    }
    Ok(problems)
}
