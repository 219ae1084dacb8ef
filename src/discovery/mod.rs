//! Discovery: one binding per capturable table.
//!
//! ```text
//!   catalog::list_tables ──► filters (schemas, patterns, publication, watermarks)
//!          │
//!          ▼
//!   catalog::table_details + TypeRegistry (a few set-oriented queries for all tables)
//!          │
//!          ▼
//!   DiscoveredTable (columns with resolved types, chosen key) ──► schema::binding_for
//! ```
//!
//! Key choice: the primary key in key order; otherwise the alphabetically first unique
//! index that is valid, not partial, has no expressions and only NOT NULL columns
//! (`isFallbackKey`); otherwise the table is keyless and its documents are keyed by
//! `/_meta/source/loc/*` with resource mode "Without Primary Key". A key that includes a
//! generated column (which logical replication does not send before PostgreSQL 18) makes
//! the table keyless too. The same [`DiscoveredTable`] drives capture, so discovery and
//! capture never disagree about columns, types or keys.

pub mod catalog;
pub mod filter;
pub mod schema;

use std::collections::BTreeSet;

use tokio_postgres::types::Oid;
use tokio_postgres::Client;

use crate::config::Config;
use crate::error::Error;
use crate::protocol::responses::DiscoveredBinding;
use crate::value::{self, PgType};
use catalog::TypeRegistry;
use filter::TablePattern;
use schema::SchemaOptions;

/// The collection key of keyless tables.
pub const FALLBACK_KEY: [&str; 3] = ["/_meta/source/loc/0", "/_meta/source/loc/1", "/_meta/source/loc/2"];

/// Tables that are Flow materialization bookkeeping, never user data.
const EXCLUDED_TABLE_NAMES: [&str; 2] = ["flow_materializations_v2", "flow_checkpoints_v1"];

/// A column with its resolved type.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_oid: Oid,
    pub typmod: i32,
    pub pg_type: PgType,
    pub nullable: bool,
    pub generated: bool,
    pub comment: Option<String>,
}

/// A table with everything capture and discovery need.
#[derive(Debug, Clone)]
pub struct DiscoveredTable {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    /// `r` ordinary table or leaf partition, `p` partitioned table.
    pub relkind: char,
    pub is_partition: bool,
    pub published: bool,
    pub columns: Vec<Column>,
    /// Key column names in key order; empty when the table has no usable key.
    pub key: Vec<String>,
    /// The key is a unique index rather than the primary key.
    pub key_is_unique_index: bool,
}

impl DiscoveredTable {
    /// Whether bytewise order of encoded keys may disagree with the database's order
    /// (text-like keys follow the collation, enums their declared order).
    pub fn unpredictable_key_order(&self) -> bool {
        self.key.iter().any(|k| self.columns.iter().any(|c| c.name == *k && value::is_text_like_key(&c.pg_type)))
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Whether a type (through domains) forbids NULL.
pub(crate) fn domain_not_null(ty: &PgType) -> bool {
    match ty {
        PgType::Domain { base, not_null, .. } => *not_null || domain_not_null(base),
        _ => false,
    }
}

/// Connect and discover every capturable table, as bindings.
pub async fn discover(config: &Config) -> Result<Vec<DiscoveredBinding>, Error> {
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    let tables = discover_tables(&client, config, None).await?;
    let options = SchemaOptions::for_config(config);
    let bindings: Vec<DiscoveredBinding> = tables.iter().map(|t| schema::binding_for(t, &options)).collect();
    if bindings.is_empty() {
        tracing::warn!(
            publication = config.publication_name(),
            "no tables were discovered: check the publication, the discovery filters and the user's privileges"
        );
    }
    Ok(bindings)
}

/// Discover tables. With `only`, just those `(schema, table)` pairs (no publication or
/// filter rules: they were chosen by the user), as capture does for its bindings.
pub async fn discover_tables(
    client: &Client,
    config: &Config,
    only: Option<&BTreeSet<(String, String)>>,
) -> Result<Vec<DiscoveredTable>, Error> {
    let raw = &config.raw;
    let filters = &raw.discovery_filters;
    let mut include: Vec<String> =
        raw.advanced.discover_schemas.iter().chain(&filters.include_schemas).map(|s| s.trim().to_string()).collect();
    include.sort();
    include.dedup();
    if only.is_some() {
        include.clear();
    }
    let patterns: Vec<TablePattern> =
        filters.table_patterns.iter().filter_map(|p| TablePattern::parse(p).ok()).collect();
    let unpublished_ok = filters.discover_unpublished_tables || raw.advanced.discover_unpublished_tables;
    let as_partitions = raw.advanced.capture_as_partitions;

    let listed = catalog::list_tables(client, &include, config.publication_name()).await?;
    let mut selected: Vec<catalog::TableRef> = listed
        .into_iter()
        .filter(|t| match only {
            Some(wanted) => wanted.contains(&(t.schema.clone(), t.name.clone())),
            None => {
                let shape_ok = if as_partitions { t.relkind == 'r' } else { !t.is_partition };
                shape_ok
                    && !filters.exclude_schemas.contains(&t.schema)
                    && (patterns.is_empty() || patterns.iter().any(|p| p.matches(&t.schema, &t.name)))
                    && !(t.schema.eq_ignore_ascii_case(&config.watermarks_schema)
                        && t.name.eq_ignore_ascii_case(&config.watermarks_table))
                    && !EXCLUDED_TABLE_NAMES.contains(&t.name.as_str())
                    && (unpublished_ok || t.published)
            }
        })
        .collect();
    // Bytewise by (schema, name), whatever the server's collation: output must be stable.
    selected.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));

    let oids: Vec<Oid> = selected.iter().map(|t| t.oid).collect();
    let mut details = catalog::table_details(client, &oids).await?;
    let type_oids: BTreeSet<Oid> = details.values().flat_map(|d| d.columns.iter().map(|c| c.type_oid)).collect();
    let registry = TypeRegistry::load(client, &type_oids.into_iter().collect::<Vec<_>>()).await?;

    let mut tables = Vec::with_capacity(selected.len());
    for table in selected {
        let detail = details.remove(&table.oid).unwrap_or_default();
        if only.is_none() && detail.columns.iter().any(|c| c.name == "flow_published_at") {
            // Tables written by Flow materializations: capturing them would loop data back.
            continue;
        }
        let columns: Vec<Column> = detail
            .columns
            .iter()
            .map(|c| {
                let pg_type = registry.resolve(c.type_oid, c.typmod);
                Column {
                    name: c.name.clone(),
                    type_oid: c.type_oid,
                    typmod: c.typmod,
                    nullable: !(c.not_null || domain_not_null(&pg_type)),
                    pg_type,
                    generated: c.generated,
                    comment: c.comment.clone(),
                }
            })
            .collect();
        let (mut key, mut key_is_unique_index) = (detail.primary_key.clone(), false);
        if key.is_empty() {
            // BTreeMap iteration is by index name: the alphabetically first usable index wins.
            // Columns must be NOT NULL, by declaration or through a NOT NULL domain.
            let not_null = |name: &String| columns.iter().any(|c| c.name == *name && !c.nullable);
            if let Some(index_columns) =
                detail.unique_indexes.values().find(|index_columns| index_columns.iter().all(not_null))
            {
                key = index_columns.clone();
                key_is_unique_index = true;
            }
        }
        if key.iter().any(|k| columns.iter().any(|c| c.name == *k && c.generated)) {
            key.clear();
            key_is_unique_index = false;
        }
        tables.push(DiscoveredTable {
            oid: table.oid,
            schema: table.schema,
            name: table.name,
            relkind: table.relkind,
            is_partition: table.is_partition,
            published: table.published,
            columns,
            key,
            key_is_unique_index,
        });
    }
    Ok(tables)
}
