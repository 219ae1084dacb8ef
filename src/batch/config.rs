//! Endpoint and resource configuration of the batch capture.
//!
//! Names and meanings follow Estuary's Go `source-postgres-batch`, so an existing capture's
//! configuration works unchanged: the password is the top-level `password` (a CDC-style
//! `credentials` object is accepted too), and the advanced options are `discover_views`,
//! `poll`, `discover_schemas`, `sslmode`, `source_tag`, `feature_flags` and
//! `statement_timeout`. Parsing is lenient about unknown keys and strict about values, and
//! errors never echo the password (the address, name and SSL checks are the CDC
//! connector's own, see [`crate::config`]).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schedule::Schedule;
use crate::config::{
    check_address_text, check_name, echo, invalid, parse_address, shorten, ConfigError, Secret, SslModeName,
};
use crate::pg::{ConnectParams, SslMode};

fn default_user() -> String {
    "flow_capture".into()
}
fn default_database() -> String {
    "postgres".into()
}

/// The schedule used when neither the binding nor the endpoint sets one.
pub const DEFAULT_POLL: &str = "5m";

/// Connection to the PostgreSQL server and polling settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(title = "Batch SQL")]
pub struct BatchEndpointConfig {
    /// The host or host:port at which the database can be reached.
    #[serde(default)]
    #[schemars(title = "Server Address", extend("order" = 0))]
    pub address: String,
    /// The database user to authenticate as.
    #[serde(default = "default_user")]
    #[schemars(title = "User", extend("order" = 1))]
    pub user: String,
    /// Password for the specified database user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Password", extend("secret" = true, "order" = 2))]
    pub password: Option<Secret>,
    /// Logical database name to capture from.
    #[serde(default = "default_database")]
    #[schemars(title = "Database", extend("order" = 3))]
    pub database: String,
    /// Options for advanced users. You should not typically need to modify these.
    #[serde(default)]
    #[schemars(title = "Advanced Options", extend("advanced" = true))]
    pub advanced: BatchAdvanced,
    /// The CDC connector's credentials object, accepted so that its configurations work too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub credentials: Option<crate::config::Credentials>,
    /// Connect to your system through an SSH server that acts as a bastion host for your network.
    #[serde(default, rename = "networkTunnel", skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Network Tunnel")]
    pub network_tunnel: Option<crate::config::NetworkTunnel>,
}

/// Advanced options.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct BatchAdvanced {
    /// When set, views will be automatically discovered as resources. If unset, only tables will be discovered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(title = "Discover Views", extend("nonsensitive" = true))]
    pub discover_views: bool,
    /// When and how often to execute fetch queries. Accepts a Go duration string like '5m' or '6h' for frequency-based polling, or a string like 'daily at 12:34Z' to poll at a specific time (specified in UTC) every day. Defaults to '5m' if unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        title = "Default Polling Schedule",
        extend("pattern" = "^([-+]?([0-9]+([.][0-9]+)?(h|m|s|ms))+|daily at [0-9][0-9]?:[0-9]{2}Z)$", "nonsensitive" = true)
    )]
    pub poll: String,
    /// If this is specified, only tables in the selected schema(s) will be automatically discovered. Omit all entries to discover tables from all schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(title = "Discovery Schema Selection", extend("nonsensitive" = true))]
    pub discover_schemas: Vec<String>,
    /// Overrides SSL connection behavior by setting the 'sslmode' parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "SSL Mode")]
    pub sslmode: Option<SslModeName>,
    /// A PEM bundle of CA certificates (or a path to one) for `verify-ca` and `verify-full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "SSL Root Certificate", extend("multiline" = true))]
    pub sslrootcert: Option<String>,
    /// When set, the capture will add this value as the property 'tag' in the source metadata of each document.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Source Tag", extend("nonsensitive" = true))]
    pub source_tag: String,
    /// This property is intended for Estuary internal use. You should only modify this field as directed by Estuary support.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Feature Flags", extend("nonsensitive" = true))]
    pub feature_flags: String,
    /// Overrides the default statement timeout for queries.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Statement Timeout", extend("enum" = ["", "30s", "1m", "5m", "30m"], "nonsensitive" = true))]
    pub statement_timeout: String,
}

/// One captured table, view or query.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(title = "Batch SQL Resource Spec")]
pub struct BatchResource {
    /// The unique name of this resource.
    #[serde(default)]
    #[schemars(title = "Resource Name", extend("order" = 0))]
    pub name: String,
    /// The name of the schema in which the captured table lives. The query template must be overridden if this is unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Schema Name", extend("order" = 1))]
    pub schema: String,
    /// The name of the table to be captured. The query template must be overridden if this is unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Table Name", extend("order" = 2))]
    pub table: String,
    /// The names of columns which should be persisted between query executions as a cursor. ["txid"] (the default for discovered tables) polls by the rows' xmin; no cursor re-reads everything at every poll.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(title = "Cursor Columns", extend("order" = 3))]
    pub cursor: Vec<String>,
    /// When and how often to execute the fetch query (overrides the connector default setting). Accepts a Go duration string like '5m' or '6h' for frequency-based polling, or a string like 'daily at 12:34Z' to poll at a specific time (specified in UTC) every day.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        title = "Polling Schedule",
        extend("order" = 4, "pattern" = "^([-+]?([0-9]+([.][0-9]+)?(h|m|s|ms))+|daily at [0-9][0-9]?:[0-9]{2}Z)$", "nonsensitive" = true)
    )]
    pub poll: String,
    /// Optionally overrides the query template which will be rendered and then executed. Consult documentation for examples.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Query Template Override", extend("multiline" = true, "order" = 5))]
    pub template: String,
}

/// A validated endpoint configuration with defaults applied.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub raw: BatchEndpointConfig,
    pub host: String,
    pub port: u16,
    pub password: Secret,
    pub sslmode: SslMode,
    pub poll: Schedule,
    pub statement_timeout: Option<Duration>,
    /// The SSH tunnel of `networkTunnel.sshForwarding` (the CDC connector's, see
    /// [`crate::pg::tunnel`]), with its key parsed.
    pub tunnel: Option<std::sync::Arc<crate::pg::tunnel::SshTunnel>>,
}

impl BatchConfig {
    /// Parse and validate an endpoint configuration.
    pub fn parse(value: &Value) -> Result<BatchConfig, ConfigError> {
        if !value.is_object() {
            return Err(invalid(
                "config",
                format!("expected an object, got {}", crate::protocol::json_kind(value)),
                "pass the endpoint configuration as a JSON object with at least \"address\" and \"password\"",
            ));
        }
        let raw = deserialize(value)?;
        let address = raw.address.trim();
        if address.is_empty() {
            return Err(ConfigError::Missing {
                field: "address".into(),
                hint: "set \"address\" to the database host, or host:port (the port defaults to 5432)".into(),
            });
        }
        check_address_text(address)?;
        let (host, port) = parse_address(address)?;
        for (field, value) in [("user", &raw.user), ("database", &raw.database)] {
            if value.trim().is_empty() {
                return Err(ConfigError::Missing {
                    field: field.into(),
                    hint: "set it, or remove it to use the default".into(),
                });
            }
            check_name(field, value)?;
        }
        let password = check_password(&raw)?;
        let tunnel = crate::config::parse_tunnel(raw.network_tunnel.as_ref())?;
        let adv = &raw.advanced;
        let poll_text = if adv.poll.trim().is_empty() { DEFAULT_POLL } else { adv.poll.as_str() };
        let poll = Schedule::parse(poll_text).map_err(|reason| {
            invalid("advanced.poll", reason, "use a duration such as \"5m\" or \"6h\", or \"daily at 12:34Z\"")
        })?;
        let statement_timeout = parse_statement_timeout(&adv.statement_timeout)?;
        for schema in &adv.discover_schemas {
            if schema.trim().is_empty() {
                return Err(invalid(
                    "advanced.discover_schemas",
                    "contains a blank schema name",
                    "remove the blank entry",
                ));
            }
        }
        let sslmode = SslModeName::mode_or_default(adv.sslmode);
        Ok(BatchConfig { host, port, password, sslmode, poll, statement_timeout, tunnel, raw })
    }

    pub fn connect_params(&self) -> ConnectParams {
        ConnectParams {
            host: self.host.clone(),
            port: self.port,
            user: self.raw.user.clone(),
            password: Some(self.password.expose().to_string()),
            database: self.raw.database.clone(),
            sslmode: self.sslmode,
            sslrootcert: self.raw.advanced.sslrootcert.clone(),
            application_name: "estuary_flow_batch".to_string(),
            connect_timeout: Duration::from_secs(30),
            tunnel: self.tunnel.clone(),
        }
    }

    /// A feature flag as the Go connector reads them: comma-separated names, `no_<name>`
    /// turns one off, the last mention wins, unmentioned flags take their default.
    pub fn feature_flag(&self, name: &str, default: bool) -> bool {
        let mut value = default;
        for flag in self.raw.advanced.feature_flags.split(',').map(str::trim) {
            if flag == name {
                value = true;
            } else if flag.strip_prefix("no_") == Some(name) {
                value = false;
            }
        }
        value
    }

    /// Whether keyless tables are keyed by `/_meta/row_id` (Go's `keyless_row_id`, on by
    /// default) rather than by `/_meta/polled` and `/_meta/index`.
    pub fn keyless_row_id(&self) -> bool {
        self.feature_flag("keyless_row_id", true)
    }
}

/// The stored configuration; serde's messages never quote a value under `password` or
/// `credentials`.
fn deserialize(value: &Value) -> Result<BatchEndpointConfig, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let text = err.into_inner().to_string();
        let secret = path.contains("password") || path.contains("credentials");
        let reason = if secret && (text.starts_with("invalid type") || text.starts_with("invalid value")) {
            "has a value of the wrong type (the password must be a string)".to_string()
        } else {
            shorten(&text)
        };
        invalid(&path, reason, "see the connector's configuration schema (the `spec` response) for the expected type")
    })
}

/// The top-level password, else the CDC-style `credentials` one: present, and free of NUL.
fn check_password(raw: &BatchEndpointConfig) -> Result<Secret, ConfigError> {
    let password = match (&raw.password, &raw.credentials) {
        (Some(password), _) if !password.is_empty() => password.clone(),
        (_, Some(crate::config::Credentials::UserPassword { password })) if !password.is_empty() => password.clone(),
        _ => {
            return Err(ConfigError::Missing {
                field: "password".into(),
                hint: "set \"password\" to the password of the database user".into(),
            })
        }
    };
    if password.expose().contains('\0') {
        return Err(invalid(
            "password",
            "contains a NUL character, which cannot be sent to PostgreSQL",
            "check the password",
        ));
    }
    Ok(password)
}

/// `advanced.statement_timeout`: blank or `0` leaves the server's setting, else a Go duration.
fn parse_statement_timeout(text: &str) -> Result<Option<Duration>, ConfigError> {
    match text.trim() {
        "" | "0" => Ok(None),
        text => Ok(Some(super::schedule::parse_go_duration(text).map_err(|_| {
            invalid(
                "advanced.statement_timeout",
                format!("{} is not a duration", echo(text)),
                "use one of 30s, 1m, 5m, 30m, or leave it empty for the server's setting",
            )
        })?)),
    }
}

impl BatchResource {
    /// Parse and validate the resource config of binding `index`.
    pub fn parse(index: usize, value: &Value) -> Result<BatchResource, ConfigError> {
        let example = "a resource looks like {\"name\": \"orders\", \"schema\": \"public\", \"table\": \"orders\", \"cursor\": [\"txid\"]}";
        let fail =
            |reason: String, hint: &str| ConfigError::Resource { binding: index, reason, hint: hint.to_string() };
        if !value.is_object() {
            return Err(fail(format!("expected an object, got {}", crate::protocol::json_kind(value)), example));
        }
        let resource: BatchResource = serde_path_to_error::deserialize(value).map_err(|err| {
            fail(format!("field {:?}: {}", err.path().to_string(), shorten(&err.into_inner().to_string())), example)
        })?;
        if resource.name.trim().is_empty() {
            return Err(fail("\"name\" is missing or empty".into(), "set \"name\" to a unique name for this resource"));
        }
        if resource.template.trim().is_empty() && (resource.schema.is_empty() || resource.table.is_empty()) {
            return Err(fail(
                format!(
                    "resource {:?} names no table: \"schema\" and \"table\" are required unless \"template\" is set",
                    resource.name
                ),
                "set \"schema\" and \"table\", or write a query template",
            ));
        }
        for (field, name) in [("schema", &resource.schema), ("table", &resource.table)] {
            if name.contains('\0') || name.len() > 63 {
                return Err(fail(
                    format!(
                        "{field:?} of resource {:?} is not a PostgreSQL name (longer than 63 bytes or containing NUL)",
                        resource.name
                    ),
                    "use the name exactly as the server shows it",
                ));
            }
        }
        if let Some(position) = resource.cursor.iter().position(|c| c.is_empty() || c.contains('\0')) {
            return Err(fail(
                format!("cursor column {} of resource {:?} is empty or contains NUL", position + 1, resource.name),
                "list the cursor columns by their names, e.g. [\"updated_at\"] or [\"txid\"] for the xmin mode",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(duplicate) = resource.cursor.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(fail(
                format!("cursor column {duplicate:?} of resource {:?} is listed twice", resource.name),
                "list each cursor column once",
            ));
        }
        if !resource.poll.trim().is_empty() {
            Schedule::parse(&resource.poll).map_err(|reason| {
                fail(
                    format!("\"poll\" of resource {:?}: {reason}", resource.name),
                    "use a duration such as \"5m\" or \"6h\", or \"daily at 12:34Z\"",
                )
            })?;
        }
        if !resource.template.trim().is_empty() {
            super::template::Template::parse(&resource.template).map_err(|err| {
                fail(
                    format!("the query template of resource {:?} is invalid: {err}", resource.name),
                    "fix the template (Go text/template syntax, e.g. {{quoteTableName .SchemaName .TableName}}), or remove it to use the built-in query",
                )
            })?;
        }
        Ok(resource)
    }

    /// The polling schedule: the binding's own, or the endpoint's.
    pub fn schedule(&self, config: &BatchConfig) -> Schedule {
        Schedule::parse(&self.poll).unwrap_or(config.poll)
    }

    /// Whether the binding polls by xmin: the built-in query with the cursor `["txid"]`.
    pub fn is_xmin(&self) -> bool {
        self.template.trim().is_empty() && self.cursor.len() == 1 && self.cursor[0] == "txid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_config_names_parse_and_errors_name_the_field() {
        let config = BatchConfig::parse(&json!({
            "address": "db:6000", "user": "u", "password": "pw", "database": "d",
            "advanced": {"discover_views": true, "poll": "daily at 01:00Z", "discover_schemas": ["a"],
                         "sslmode": "require", "source_tag": "t", "feature_flags": "no_keyless_row_id",
                         "statement_timeout": "30s"}
        }))
        .unwrap();
        assert_eq!((config.host.as_str(), config.port), ("db", 6000));
        assert_eq!(config.poll, Schedule::DailyAt(3600));
        assert_eq!(config.statement_timeout, Some(Duration::from_secs(30)));
        assert!(!config.keyless_row_id());
        let defaults = BatchConfig::parse(&json!({"address": "db", "password": "pw"})).unwrap();
        assert_eq!(defaults.poll, Schedule::Every(Duration::from_secs(300)));
        assert_eq!((defaults.raw.user.as_str(), defaults.raw.database.as_str()), ("flow_capture", "postgres"));
        assert!(defaults.keyless_row_id());
        let err = BatchConfig::parse(&json!({"address": "db"})).unwrap_err().to_string();
        assert!(err.contains("password"), "{err}");
        let err = BatchConfig::parse(&json!({"address": "db", "password": 42})).unwrap_err().to_string();
        assert!(err.contains("password") && !err.contains("42"), "{err}");
        let err = BatchConfig::parse(&json!({"address": "db", "password": "p", "advanced": {"poll": "often"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("advanced.poll"), "{err}");
        // The CDC connector's credentials object works too.
        let cdc = json!({"address": "db", "credentials": {"auth_type": "UserPassword", "password": "pw"}});
        assert_eq!(BatchConfig::parse(&cdc).unwrap().password.expose(), "pw");
    }

    #[test]
    fn resources_need_a_table_or_a_template_and_valid_cursors() {
        let ok = BatchResource::parse(0, &json!({"name": "t", "schema": "public", "table": "t", "cursor": ["txid"]}))
            .unwrap();
        assert!(ok.is_xmin());
        let err = BatchResource::parse(1, &json!({"name": "t"})).unwrap_err().to_string();
        assert!(err.contains("binding 1") && err.contains("template"), "{err}");
        let err = BatchResource::parse(0, &json!({"name": "t", "schema": "s", "table": "t", "cursor": ["a", "a"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let err = BatchResource::parse(0, &json!({"name": "q", "template": "SELECT {{if}}"})).unwrap_err().to_string();
        assert!(err.contains("query template of resource \"q\""), "{err}");
        let templated = BatchResource::parse(0, &json!({"name": "q", "template": "SELECT 1 AS x", "cursor": ["txid"]}));
        assert!(!templated.unwrap().is_xmin());
    }
}
