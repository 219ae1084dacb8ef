//! The resource configuration of one binding (one captured table) and its checks.
//!
//! Names follow the Go connector: `namespace` and `stream` are the table's schema and name,
//! `mode` is the backfill mode. Invariants of a parsed resource: both names are non-empty,
//! at most 63 bytes and free of NUL (every other character is a legal quoted name, and
//! discovery offers every table it finds); a backfill filter is one SQL boolean expression
//! and never combined with the precise mode.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::values::{shorten, MAX_IDENTIFIER_BYTES};
use super::{backfill_filter, ConfigError, TableName};

/// How a binding is backfilled.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum BackfillMode {
    /// Automatic: precise when the key order is predictable, normal otherwise.
    #[default]
    #[serde(rename = "")]
    Automatic,
    #[serde(rename = "Normal")]
    Normal,
    #[serde(rename = "Precise")]
    Precise,
    #[serde(rename = "Only Changes")]
    OnlyChanges,
    #[serde(rename = "Without Primary Key")]
    WithoutPrimaryKey,
}

impl BackfillMode {
    pub fn is_automatic(&self) -> bool {
        *self == BackfillMode::Automatic
    }
}

/// One captured table.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(title = "SQL Database Resource Spec")]
pub struct ResourceConfig {
    /// How the table is backfilled.
    #[serde(default, skip_serializing_if = "BackfillMode::is_automatic")]
    #[schemars(title = "Backfill Mode")]
    pub mode: BackfillMode,
    /// The schema (namespace) in which the table resides.
    #[serde(default)]
    #[schemars(title = "Schema", extend("readOnly" = true))]
    pub namespace: String,
    /// The name of the table to be captured.
    #[serde(default)]
    #[schemars(title = "Table Name", extend("readOnly" = true))]
    pub stream: String,
    /// Backfill priority: higher values backfill first.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    #[schemars(title = "Backfill Priority")]
    pub priority: i32,
    /// Options for advanced users.
    #[serde(default, skip_serializing_if = "ResourceAdvanced::is_empty")]
    #[schemars(title = "Advanced Options", extend("advanced" = true))]
    pub advanced: ResourceAdvanced,
    /// Legacy override of the scan key columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub primary_key: Option<Vec<String>>,
    /// Legacy, ignored.
    #[serde(default, rename = "syncMode", skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub sync_mode: Option<Value>,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct ResourceAdvanced {
    /// A SQL boolean expression added to every backfill query of this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Additional Backfill Filter", extend("multiline" = true))]
    pub additional_backfill_filter: Option<String>,
}

impl ResourceAdvanced {
    fn is_empty(&self) -> bool {
        self.additional_backfill_filter.is_none()
    }
}

impl ResourceConfig {
    /// Parse and validate the resource config of binding `index`.
    pub fn parse(index: usize, value: &Value) -> Result<ResourceConfig, ConfigError> {
        if !value.is_object() {
            return Err(ConfigError::Resource {
                binding: index,
                reason: format!("expected an object, got {}", crate::protocol::json_kind(value)),
                hint: "a resource looks like {\"namespace\": \"public\", \"stream\": \"my_table\"}".into(),
            });
        }
        let resource: ResourceConfig =
            serde_path_to_error::deserialize(value).map_err(|err| ConfigError::Resource {
                binding: index,
                reason: format!("field {:?}: {}", err.path().to_string(), shorten(&err.into_inner().to_string())),
                hint: "a resource looks like {\"namespace\": \"public\", \"stream\": \"my_table\"}".into(),
            })?;
        let fail =
            |reason: String, hint: &str| ConfigError::Resource { binding: index, reason, hint: hint.to_string() };
        if resource.namespace.is_empty() {
            return Err(fail("\"namespace\" is missing or empty".into(), "set \"namespace\" to the table's schema"));
        }
        if resource.stream.is_empty() {
            return Err(fail("\"stream\" is missing or empty".into(), "set \"stream\" to the table name"));
        }
        for (field, name) in [("namespace", &resource.namespace), ("stream", &resource.stream)] {
            if name.len() > MAX_IDENTIFIER_BYTES {
                return Err(fail(
                    format!("{field:?} is {} bytes long, over PostgreSQL's 63-byte identifier limit", name.len()),
                    "use the name exactly as the server shows it",
                ));
            }
            // PostgreSQL allows every character but NUL in a quoted name (newlines and other
            // control characters included), and discovery offers every table it finds: refusing
            // more here would reject bindings that discovery itself produced.
            if name.contains('\0') {
                return Err(fail(
                    format!("{field:?} contains a NUL character, which no PostgreSQL name can hold"),
                    "use the name exactly as the server shows it",
                ));
            }
        }
        if let Some(filter) = &resource.advanced.additional_backfill_filter {
            if filter.trim().is_empty() {
                return Err(fail(
                    "\"advanced.additional_backfill_filter\" is blank".into(),
                    "remove it or write a SQL boolean expression",
                ));
            }
            if resource.mode == BackfillMode::Precise {
                return Err(fail(
                    "backfill filters cannot be used in the \"Precise\" backfill mode".into(),
                    "use mode \"Normal\" or remove the filter",
                ));
            }
            if let Err(reason) = backfill_filter::check(filter) {
                return Err(fail(
                    format!(
                        "\"advanced.additional_backfill_filter\" of table {:?} must be exactly one SQL boolean expression, but {reason}",
                        format!("{}.{}", resource.namespace, resource.stream)
                    ),
                    "write one condition on the table's columns, such as \"created_at > '2024-01-01'\", with balanced parentheses and no semicolon",
                ));
            }
        }
        Ok(resource)
    }

    /// The captured table.
    pub fn table_name(&self) -> TableName {
        TableName::new(&self.namespace, &self.stream)
    }

    /// The resource path `[namespace, stream]`.
    pub fn resource_path(&self) -> Vec<String> {
        vec![self.namespace.clone(), self.stream.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_rules_match_the_go_connector() {
        let ok =
            ResourceConfig::parse(0, &json!({"namespace": "public", "stream": "t", "mode": "Only Changes"})).unwrap();
        assert_eq!(ok.mode, BackfillMode::OnlyChanges);
        let err = ResourceConfig::parse(3, &json!({"namespace": "public", "stream": "t", "mode": "Precise", "advanced": {"additional_backfill_filter": "id > 3"}})).unwrap_err();
        assert!(err.to_string().contains("binding 3"));
        assert!(err.to_string().contains("Precise"));
        assert!(ResourceConfig::parse(0, &json!({"namespace": "public"})).is_err());
        // Every name PostgreSQL allows is accepted, control characters included; NUL is not.
        let odd = ResourceConfig::parse(0, &json!({"namespace": "s\u{1}\n", "stream": "t\t\u{7f}\u{85}"})).unwrap();
        assert_eq!(odd.resource_path(), ["s\u{1}\n", "t\t\u{7f}\u{85}"]);
        let err = ResourceConfig::parse(0, &json!({"namespace": "public", "stream": "a\u{0}b"})).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        assert!(ResourceConfig::parse(0, &json!({"namespace": "public", "stream": "t", "mode": "Sometimes"})).is_err());
    }
}
