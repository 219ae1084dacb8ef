//! Discovery for the batch capture: tables (and, with `advanced.discover_views`, views), one
//! binding each, with the Go batch connector's resource and document shape.
//!
//! The catalog reading (columns, primary keys, types) and the column schemas are the CDC
//! connector's own ([`crate::discovery::catalog`], [`crate::value::column_schema`]), so both
//! connectors describe a column the same way. What differs is the binding: the resource is
//! `{name, schema, table, cursor}` (tables poll by xmin, `cursor: ["txid"]`; views have no
//! xmin and are re-read at every poll), the document's `_meta` is the batch metadata, and a
//! relation without a primary key is keyed by `/_meta/row_id`.

use serde_json::{json, Map, Value};
use tokio_postgres::types::Oid;
use tokio_postgres::Client;

use super::config::BatchConfig;
use crate::discovery::catalog::{self, TypeRegistry, SYSTEM_SCHEMAS};
use crate::discovery::schema::{column_property, key_pointer, property_name, recommended_name, SchemaMode};
use crate::discovery::{Column, DiscoveredTable};
use crate::error::Error;
use crate::protocol::responses::DiscoveredBinding;

/// The collection key of relations without a primary key.
pub const ROW_ID_KEY: &str = "/_meta/row_id";
/// The older fallback key (feature flag `no_keyless_row_id`).
pub const OLD_FALLBACK_KEY: [&str; 2] = ["/_meta/polled", "/_meta/index"];

const LIST_RELATIONS: &str = "
    SELECT c.oid, n.nspname, c.relname, c.relkind::text
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
      AND n.nspname <> ALL($1::text[])
      AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast%'
      AND (cardinality($2::text[]) = 0 OR n.nspname = ANY($2::text[]))
      AND ($3 OR c.relkind <> 'v')
    ORDER BY n.nspname, c.relname";

/// A table or view with its columns and primary key.
pub struct Relation {
    pub table: DiscoveredTable,
    pub is_view: bool,
}

/// Tables (and views when asked) with their columns, in (schema, name) byte order.
pub async fn list_relations(client: &Client, config: &BatchConfig) -> Result<Vec<Relation>, Error> {
    let system: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| s.to_string()).collect();
    let mut include: Vec<String> = config.raw.advanced.discover_schemas.iter().map(|s| s.trim().to_string()).collect();
    include.sort();
    include.dedup();
    let rows = client.query(LIST_RELATIONS, &[&system, &include, &config.raw.advanced.discover_views]).await?;
    let mut listed: Vec<(Oid, String, String, bool)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get::<_, String>(3) == "v")).collect();
    listed.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    let oids: Vec<Oid> = listed.iter().map(|r| r.0).collect();
    let mut details = catalog::table_details(client, &oids).await?;
    let type_oids: Vec<Oid> = {
        let mut set: Vec<Oid> = details.values().flat_map(|d| d.columns.iter().map(|c| c.type_oid)).collect();
        set.sort_unstable();
        set.dedup();
        set
    };
    let registry = TypeRegistry::load(client, &type_oids).await?;
    let mut relations = Vec::with_capacity(listed.len());
    for (oid, schema, name, is_view) in listed {
        let detail = details.remove(&oid).unwrap_or_default();
        let columns = detail
            .columns
            .iter()
            .map(|c| {
                let pg_type = registry.resolve(c.type_oid, c.typmod);
                let domain_not_null = crate::discovery::domain_not_null(&pg_type);
                Column {
                    name: c.name.clone(),
                    type_oid: c.type_oid,
                    typmod: c.typmod,
                    nullable: !(c.not_null || domain_not_null),
                    pg_type,
                    generated: false,
                    comment: c.comment.clone(),
                }
            })
            .collect();
        let table = DiscoveredTable {
            oid,
            schema,
            name,
            relkind: if is_view { 'v' } else { 'r' },
            is_partition: false,
            published: false,
            columns,
            key: detail.primary_key,
            key_is_unique_index: false,
        };
        relations.push(Relation { table, is_view });
    }
    Ok(relations)
}

/// Go's resource name for a table: `schema_table` lowercased, with `public` left out, and
/// characters outside `[a-z0-9-_.]` replaced by `_`.
pub fn resource_name(schema: &str, table: &str) -> String {
    let joined = if schema == "public" || schema == "dbo" { table.to_string() } else { format!("{schema}_{table}") };
    joined
        .chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect()
}

/// The schema of `_meta` in batch documents.
pub fn meta_schema(row_id_required: bool) -> Value {
    let mut required = vec!["polled", "index"];
    if row_id_required {
        required.push("row_id");
    }
    required.push("source");
    json!({
        "type": "object",
        "properties": {
            "polled": {"type": "string", "format": "date-time", "title": "Polled Timestamp", "description": "The time at which the update query which produced this document as executed."},
            "index": {"type": "integer", "title": "Result Index", "description": "The index of this document within the query execution which produced it."},
            "row_id": {"type": "integer", "title": "Row ID", "description": "Row ID of the Document"},
            "op": {"type": "string", "enum": ["c", "u", "d"], "title": "Change Operation", "description": "Operation type (c: Create / u: Update / d: Delete)", "default": "u"},
            "source": {
                "type": "object",
                "properties": {
                    "resource": {"type": "string", "description": "Resource name of the binding from which this document was captured."},
                    "schema": {"type": "string", "description": "Database schema from which the document was read."},
                    "table": {"type": "string", "description": "Database table from which the document was read."},
                    "tag": {"type": "string", "description": "Optional 'Source Tag' property as defined in the endpoint configuration."}
                },
                "required": ["resource"]
            }
        },
        "required": required
    })
}

/// The discovered binding of a relation.
pub fn binding_for(relation: &Relation, config: &BatchConfig) -> DiscoveredBinding {
    let table = &relation.table;
    let mut properties = Map::new();
    properties.insert("_meta".into(), meta_schema(config.keyless_row_id()));
    for index in 0..table.columns.len() {
        properties.insert(
            property_name(&table.columns[index].name).into_owned(),
            column_property(table, index, SchemaMode::Write, &crate::value::ValueFormats::improved()),
        );
    }
    let mut required: Vec<String> = table.key.iter().map(|k| property_name(k).into_owned()).collect();
    required.push("_meta".into());
    required.sort_unstable();
    let document_schema = json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "x-infer-schema": true,
    });
    let name = resource_name(&table.schema, &table.name);
    let mut resource = json!({"name": name, "schema": table.schema, "table": table.name});
    if !relation.is_view {
        resource["cursor"] = json!(["txid"]);
    }
    let keyless = table.key.is_empty();
    let key: Vec<String> = if !keyless {
        table.key.iter().map(|c| key_pointer(c)).collect()
    } else if config.keyless_row_id() {
        vec![ROW_ID_KEY.to_string()]
    } else {
        OLD_FALLBACK_KEY.iter().map(|s| s.to_string()).collect()
    };
    DiscoveredBinding {
        recommended_name: recommended_name(&table.schema, &table.name),
        resource_config: resource,
        document_schema,
        key,
        is_fallback_key: keyless,
    }
}

/// Connect and discover.
pub async fn discover(config: &BatchConfig) -> Result<Vec<DiscoveredBinding>, Error> {
    let client = crate::pg::connect_sql(&config.connect_params()).await?;
    let relations = list_relations(&client, config).await?;
    if relations.is_empty() {
        tracing::warn!("no tables were discovered: check advanced.discover_schemas and the user's privileges");
    }
    Ok(relations.iter().map(|r| binding_for(r, config)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_follow_go() {
        assert_eq!(resource_name("public", "Orders"), "orders");
        assert_eq!(resource_name("Sales", "big table"), "sales_big_table");
        assert_eq!(meta_schema(false)["required"], json!(["polled", "index", "source"]));
    }
}
