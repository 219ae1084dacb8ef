//! Endpoint and resource configuration.
//!
//! Property names, defaults and meanings follow Estuary's Go `source-postgres`, so an
//! existing capture's configuration works unchanged. The `spec` schemas are generated from
//! these types (see [`crate::spec`]) and carry the Flow UI annotations (`order`, `secret`,
//! `advanced`). Parsing is lenient about unknown keys (the stored config may carry a `sops`
//! block and fields of newer connector versions) and strict about values: every error
//! names the field and says what is expected, and never echoes a secret.

use std::collections::BTreeSet;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pg::{ConnectParams, SslMode};

mod backfill_filter;
pub mod feature_flags;

pub use feature_flags::FeatureFlags;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("endpoint configuration is missing {field:?}")]
    Missing { field: String, hint: String },
    #[error("endpoint configuration field {field:?} is invalid: {reason}")]
    Invalid { field: String, reason: String, hint: String },
    #[error("resource configuration of binding {binding} is invalid: {reason}")]
    Resource { binding: usize, reason: String, hint: String },
    /// Settings of the Go connector that parse but are not implemented here yet.
    #[error("{}", unsupported_message(items))]
    Unsupported { items: Vec<Unsupported>, hint: String },
}

/// One setting that is accepted by the parser and refused because this connector does
/// not implement it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The field's path, like `advanced.read_only_capture`.
    pub field: &'static str,
    /// What is not supported, as the end of a sentence.
    pub what: String,
    pub hint: String,
}

fn unsupported_message(items: &[Unsupported]) -> String {
    match items {
        [one] => format!("endpoint configuration field {:?} is not supported yet: {}", one.field, one.what),
        _ => {
            let listed: Vec<String> = items.iter().map(|u| format!("{:?} ({})", u.field, u.what)).collect();
            format!("endpoint configuration fields are not supported yet: {}", listed.join("; "))
        }
    }
}

impl ConfigError {
    pub fn hint(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { hint, .. }
            | ConfigError::Invalid { hint, .. }
            | ConfigError::Resource { hint, .. }
            | ConfigError::Unsupported { hint, .. } => (!hint.is_empty()).then_some(hint.as_str()),
        }
    }

    /// The settings of an [`ConfigError::Unsupported`] error (for tests and tools).
    pub fn unsupported_fields(&self) -> Vec<&'static str> {
        match self {
            ConfigError::Unsupported { items, .. } => items.iter().map(|u| u.field).collect(),
            _ => Vec::new(),
        }
    }
}

/// What a configuration is about to be used for: discovery reads the catalog only, the
/// other requests (validate, apply, open) set up or run a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Discover,
    Capture,
}

fn default_user() -> String {
    "flow_capture".into()
}
fn default_database() -> String {
    "postgres".into()
}

/// Connection to the PostgreSQL server and capture settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(title = "PostgreSQL Connection")]
pub struct EndpointConfig {
    /// The host or host:port at which the database can be reached.
    #[serde(default)]
    #[schemars(title = "Server Address", extend("order" = 0))]
    pub address: String,
    /// The database user to authenticate as.
    #[serde(default = "default_user")]
    #[schemars(title = "User", extend("order" = 1))]
    pub user: String,
    /// Legacy top-level password, used when `credentials` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub password: Option<String>,
    /// Logical database name to capture from.
    #[serde(default = "default_database")]
    #[schemars(title = "Database", extend("order" = 2))]
    pub database: String,
    /// Capture change events without reducing them.
    #[serde(default, rename = "historyMode")]
    #[schemars(title = "History Mode", extend("order" = 3, "nonsensitive" = true))]
    pub history_mode: bool,
    /// How to authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        title = "Authentication",
        extend("order" = 4, "x-iam-auth" = true, "x-iam-azure-scope" = "https://ossrdbms-aad.database.windows.net/.default")
    )]
    pub credentials: Option<Credentials>,
    /// Which tables discovery lists.
    #[serde(default, rename = "discoveryFilters")]
    #[schemars(title = "Discovery Filters", extend("order" = 5))]
    pub discovery_filters: DiscoveryFilters,
    /// Options for advanced users. You should not typically need to modify these.
    #[serde(default)]
    #[schemars(title = "Advanced Options", extend("advanced" = true, "order" = 6))]
    pub advanced: Advanced,
    /// Connect through an SSH server that acts as a bastion host for the database's network. Not supported yet by this connector.
    #[serde(default, rename = "networkTunnel", skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Network Tunnel")]
    pub network_tunnel: Option<NetworkTunnel>,
}

/// The Go connector's `networkTunnel`: parsed with its names, not implemented yet (a
/// configured tunnel is refused by [`Config::check_supported`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkTunnel {
    /// Forward the database connection through an SSH server.
    #[serde(default, rename = "sshForwarding", skip_serializing_if = "Option::is_none")]
    #[schemars(title = "SSH Forwarding")]
    pub ssh_forwarding: Option<SshForwarding>,
}

/// An SSH server and the key to log in with.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshForwarding {
    /// The SSH server that forwards the connection, as ssh://user@host[:port].
    #[serde(default, rename = "sshEndpoint")]
    #[schemars(title = "SSH Endpoint", extend("pattern" = "^ssh://.+@.+$"))]
    pub ssh_endpoint: String,
    /// The private key of the SSH user.
    #[serde(default, rename = "privateKey")]
    #[schemars(title = "SSH Private Key", extend("secret" = true, "multiline" = true))]
    pub private_key: String,
}

impl EndpointConfig {
    /// The SSH endpoint when a tunnel is configured (the Go connector starts a tunnel only
    /// when `sshEndpoint` is set; an empty `networkTunnel` means none).
    pub fn ssh_endpoint(&self) -> Option<&str> {
        let endpoint = self.network_tunnel.as_ref()?.ssh_forwarding.as_ref()?.ssh_endpoint.as_str();
        (!endpoint.trim().is_empty()).then_some(endpoint)
    }
}

/// Authentication method.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "auth_type")]
#[schemars(extend("discriminator" = {"propertyName": "auth_type"}))]
pub enum Credentials {
    /// Password authentication.
    #[serde(rename = "UserPassword")]
    #[schemars(title = "Password")]
    UserPassword {
        /// Password for the specified database user.
        #[schemars(title = "Password", extend("secret" = true, "order" = 0))]
        password: String,
    },
    // The runtime adds each IAM method's session credentials or token to the configuration
    // (`aws_access_key_id`, `gcp_access_token`, `azure_access_token`, ...): unknown fields
    // are ignored here, and the methods are refused as not supported yet
    // (`Config::check_supported`). Required fields are marked in `spec::endpoint_config_schema`:
    // they default to empty here so that a missing one is named by `Config::parse`.
    /// An IAM token of an AWS role (RDS and Aurora). Not supported yet by this connector.
    #[serde(rename = "AWSIAM")]
    #[schemars(title = "AWS IAM")]
    AwsIam {
        /// The AWS region of the database.
        #[serde(default)]
        #[schemars(title = "AWS Region")]
        aws_region: String,
        /// The AWS role that may connect to the database, assumed by Flow.
        #[serde(default)]
        #[schemars(title = "AWS Role ARN")]
        aws_role_arn: String,
    },
    /// A Google Cloud SQL IAM token of a service account. Not supported yet by this connector.
    #[serde(rename = "GCPIAM")]
    #[schemars(title = "Google Cloud IAM")]
    GcpIam {
        /// The service account's email, for Cloud SQL IAM authentication.
        #[serde(default)]
        #[schemars(title = "Service Account")]
        gcp_service_account_to_impersonate: String,
        /// The workload identity pool audience, like //iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/test-pool/providers/test-provider
        #[serde(default)]
        #[schemars(title = "Workload Identity Pool Audience")]
        gcp_workload_identity_pool_audience: String,
    },
    /// A Microsoft Entra ID (Azure Active Directory) token of an app registration. Not supported yet by this connector.
    #[serde(rename = "AzureIAM")]
    #[schemars(title = "Azure IAM")]
    AzureIam {
        /// The client ID of the Azure app registration.
        #[serde(default)]
        #[schemars(title = "Azure Client ID")]
        azure_client_id: String,
        /// The Azure tenant ID.
        #[serde(default)]
        #[schemars(title = "Azure Tenant ID")]
        azure_tenant_id: String,
    },
}

impl Credentials {
    /// The `auth_type` name.
    pub fn auth_type(&self) -> &'static str {
        match self {
            Credentials::UserPassword { .. } => "UserPassword",
            Credentials::AwsIam { .. } => "AWSIAM",
            Credentials::GcpIam { .. } => "GCPIAM",
            Credentials::AzureIam { .. } => "AzureIAM",
        }
    }

    /// The required fields of an IAM method that are empty, in the Go connector's order
    /// (it reports the first as "missing '<field>'").
    fn missing_fields(&self) -> Vec<&'static str> {
        let fields: Vec<(&'static str, &String)> = match self {
            Credentials::UserPassword { .. } => Vec::new(),
            Credentials::AwsIam { aws_region, aws_role_arn } => {
                vec![("aws_region", aws_region), ("aws_role_arn", aws_role_arn)]
            }
            Credentials::GcpIam { gcp_service_account_to_impersonate, gcp_workload_identity_pool_audience } => vec![
                ("gcp_service_account_to_impersonate", gcp_service_account_to_impersonate),
                ("gcp_workload_identity_pool_audience", gcp_workload_identity_pool_audience),
            ],
            Credentials::AzureIam { azure_client_id, azure_tenant_id } => {
                vec![("azure_client_id", azure_client_id), ("azure_tenant_id", azure_tenant_id)]
            }
        };
        fields.into_iter().filter(|(_, value)| value.trim().is_empty()).map(|(name, _)| name).collect()
    }
}

/// Filters applied when listing tables.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFilters {
    /// Only discover tables in these schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(title = "Include Schemas")]
    pub include_schemas: Vec<String>,
    /// Never discover tables in these schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(title = "Exclude Schemas")]
    pub exclude_schemas: Vec<String>,
    /// Only discover tables matching one of these patterns: `schema.table` globs with `*` and `?`
    /// (`\` escapes), or a table name glob matching in any schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(title = "Table Patterns")]
    pub table_patterns: Vec<String>,
    /// Also discover tables that are not in the publication.
    #[serde(default)]
    #[schemars(title = "Discover Unpublished Tables")]
    pub discover_unpublished_tables: bool,
}

fn default_publication() -> String {
    "flow_publication".into()
}
fn default_slot() -> String {
    "flow_slot".into()
}
fn default_watermarks() -> String {
    "public.flow_watermarks".into()
}
fn default_chunk_size() -> i64 {
    50_000
}

/// Advanced options.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Advanced {
    /// The name of the PostgreSQL publication to replicate from.
    #[serde(default = "default_publication", rename = "publicationName")]
    #[schemars(title = "Publication Name")]
    pub publication_name: String,
    /// The name of the PostgreSQL replication slot to replicate from.
    #[serde(default = "default_slot", rename = "slotName")]
    #[schemars(title = "Slot Name")]
    pub slot_name: String,
    /// The name of the table used for watermark writes during backfills. Must be fully-qualified in '<schema>.<table>' form.
    #[serde(default = "default_watermarks", rename = "watermarksTable")]
    #[schemars(title = "Watermarks Table")]
    pub watermarks_table: String,
    /// A comma-separated list of fully-qualified table names which should not be backfilled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Skip Backfills")]
    pub skip_backfills: String,
    /// The number of rows which should be fetched from the database in a single backfill query.
    #[serde(default = "default_chunk_size")]
    #[schemars(title = "Backfill Chunk Size")]
    pub backfill_chunk_size: i64,
    /// Overrides SSL connection behavior by setting the 'sslmode' parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "SSL Mode")]
    pub sslmode: Option<SslModeName>,
    /// A PEM bundle of CA certificates (or a path to one) for `verify-ca` and `verify-full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(title = "SSL Root Certificate", extend("multiline" = true))]
    pub sslrootcert: Option<String>,
    /// Legacy list of schemas to discover; combined with the discovery filters' include list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(title = "Discovery Schema Selection")]
    pub discover_schemas: Vec<String>,
    /// Backfill only rows whose xmin is this transaction ID or newer (a 32-bit modular comparison, as PostgreSQL compares XIDs), to make a re-backfill read less.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Minimum Backfill XID", extend("pattern" = "^[0-9]+$"))]
    pub min_backfill_xid: String,
    /// Capture without writing to the database (no watermark writes). Not supported yet by this connector.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(title = "Read-Only Capture", extend("nonsensitive" = true))]
    pub read_only_capture: bool,
    /// Discover leaf partitions of partitioned tables as separate bindings instead of their roots.
    #[serde(default)]
    #[schemars(title = "Capture Partitioned Tables As Partitions")]
    pub capture_as_partitions: bool,
    /// Also discover tables that are not in the publication.
    #[serde(default)]
    #[schemars(title = "Discover Unpublished Tables")]
    pub discover_unpublished_tables: bool,
    /// When set, every document carries this value at `/_meta/source/tag`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Source Tag")]
    pub source_tag: String,
    /// How often a running capture discovers its tables again, as a duration like 15m or 1h (1m to 8760h). Only the default, 15m, is supported yet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Rediscovery Interval", extend("default" = "15m", "pattern" = "^[0-9]+(ms|s|m|h)$"))]
    pub rediscovery_interval: String,
    /// Comma-separated feature flags (`no_<flag>` disables a default flag).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Feature Flags")]
    pub feature_flags: String,
    /// Fail the capture when a captured table is truncated, instead of logging a warning and going on (rows captured before the TRUNCATE stay in the collection either way).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(title = "Fail On Truncate")]
    pub fail_on_truncate: bool,
    /// Overrides the statement timeout of backfill queries. Blank means 2 minutes; 0 disables it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(title = "Statement Timeout", extend("enum" = ["", "0", "30s", "1m", "2m", "5m", "30m"]))]
    pub statement_timeout: String,
    /// Skip all prerequisite checks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(skip)]
    pub skip_prerequisites: bool,
    /// Ignored; kept so that older configurations still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-hidden-field" = true, "nonsensitive" = true))]
    pub discover_only_published: Option<bool>,
}

impl Default for Advanced {
    fn default() -> Self {
        // Implemented by hand: a derived Default would give empty names instead of the
        // documented defaults when `advanced` is absent.
        serde_json::from_value(Value::Object(Default::default())).unwrap_or_else(|_| unreachable_default())
    }
}

fn unreachable_default() -> Advanced {
    Advanced {
        publication_name: default_publication(),
        slot_name: default_slot(),
        watermarks_table: default_watermarks(),
        skip_backfills: String::new(),
        backfill_chunk_size: default_chunk_size(),
        sslmode: None,
        sslrootcert: None,
        discover_schemas: Vec::new(),
        min_backfill_xid: String::new(),
        read_only_capture: false,
        capture_as_partitions: false,
        discover_unpublished_tables: false,
        source_tag: String::new(),
        rediscovery_interval: String::new(),
        feature_flags: String::new(),
        fail_on_truncate: false,
        statement_timeout: String::new(),
        skip_prerequisites: false,
        discover_only_published: None,
    }
}

/// libpq `sslmode` values.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslModeName {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

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

/// A validated endpoint configuration with defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub raw: EndpointConfig,
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub sslmode: SslMode,
    pub watermarks_schema: String,
    pub watermarks_table: String,
    pub skip_backfills: BTreeSet<(String, String)>,
    pub skip_all_backfills: bool,
    pub statement_timeout: Option<Duration>,
    pub chunk_size: i64,
    /// `advanced.feature_flags`, parsed.
    pub flags: FeatureFlags,
    /// `advanced.min_backfill_xid` as a 32-bit XID (backfills read only rows whose xmin
    /// is this XID or newer, modulo 2^32).
    pub min_backfill_xid: Option<u32>,
    /// `advanced.rediscovery_interval`, when set.
    pub rediscovery_interval: Option<Duration>,
}

/// The Go connector's rediscovery interval when none is configured, and its bounds.
pub const DEFAULT_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(15 * 60);
const MIN_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
const MAX_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// `advanced.min_backfill_xid`: digits (Go's schema pattern), a 32-bit XID or a 64-bit
/// one with its epoch (`pg_current_xact_id()`); only the low 32 bits count, as in the Go
/// connector's comparison.
fn parse_min_backfill_xid(text: &str) -> Result<Option<u32>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let xid = text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse::<u64>().ok()).flatten();
    match xid {
        Some(xid) => Ok(Some((xid & 0xFFFF_FFFF) as u32)),
        None => Err(invalid(
            "advanced.min_backfill_xid",
            format!("{} is not a transaction ID", echo(text)),
            "write the XID as digits only, for example the result of SELECT pg_current_xact_id()",
        )),
    }
}

/// `advanced.rediscovery_interval`: a Go duration from 1m to 8760h; blank means the default.
fn parse_rediscovery_interval(text: &str) -> Result<Option<Duration>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |reason: String| {
        invalid("advanced.rediscovery_interval", reason, "write a duration like 15m or 1h, from 1m to 8760h")
    };
    let interval = parse_duration(text).ok_or_else(|| bad(format!("{} is not a duration", echo(text))))?;
    if interval < MIN_REDISCOVERY_INTERVAL {
        return Err(bad(format!("{} must be at least 1m", echo(text))));
    }
    if interval > MAX_REDISCOVERY_INTERVAL {
        return Err(bad(format!("{} must not exceed 8760h", echo(text))));
    }
    Ok(Some(interval))
}

pub(crate) fn invalid(field: &str, reason: impl Into<String>, hint: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_string(), reason: reason.into(), hint: hint.into() }
}

/// Split `schema.table` at the first unquoted dot; both parts non-empty.
fn split_qualified(name: &str) -> Option<(String, String)> {
    let (schema, table) = name.split_once('.')?;
    let (schema, table) = (schema.trim(), table.trim());
    (!schema.is_empty() && !table.is_empty()).then(|| (schema.to_string(), table.to_string()))
}

impl Config {
    /// Parse and validate an endpoint configuration.
    pub fn parse(value: &Value) -> Result<Config, ConfigError> {
        if !value.is_object() {
            return Err(invalid(
                "config",
                format!("expected an object, got {}", crate::protocol::json_kind(value)),
                "pass the endpoint configuration as a JSON object with at least \"address\"",
            ));
        }
        let raw: EndpointConfig = serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            // serde's messages may quote the offending value ("invalid type: integer `42`"):
            // never for a secret, and never at length.
            let text = err.into_inner().to_string();
            let secret_path = path.contains("password") || path.contains("credentials");
            let reason = if secret_path && (text.starts_with("invalid type") || text.starts_with("invalid value")) {
                "has a value of the wrong type (the password must be a string)".to_string()
            } else {
                shorten(&text)
            };
            invalid(
                &path,
                reason,
                "see the connector's configuration schema (the `spec` response) for the expected type",
            )
        })?;
        Config::from_raw(raw)
    }

    fn from_raw(raw: EndpointConfig) -> Result<Config, ConfigError> {
        let address = raw.address.trim();
        if address.is_empty() {
            return Err(ConfigError::Missing {
                field: "address".into(),
                hint: "set \"address\" to the database host, or host:port (the port defaults to 5432)".into(),
            });
        }
        check_address_text(address)?;
        let (host, port) = parse_address(address)?;
        check_pooler(address, &host, port)?;
        if raw.user.trim().is_empty() {
            return Err(ConfigError::Missing {
                field: "user".into(),
                hint: "set \"user\" to the database user to connect as".into(),
            });
        }
        if raw.database.trim().is_empty() {
            return Err(ConfigError::Missing {
                field: "database".into(),
                hint: "set \"database\" to the logical database to capture from".into(),
            });
        }
        check_name("user", &raw.user)?;
        check_name("database", &raw.database)?;
        // The IAM methods carry no password (the runtime adds a token); they are refused
        // later as not supported yet, after the rest of the configuration was checked.
        let password = match &raw.credentials {
            Some(Credentials::UserPassword { password }) => Some(password.clone()),
            Some(iam) => {
                if let Some(field) = iam.missing_fields().first() {
                    return Err(ConfigError::Missing {
                        field: format!("credentials.{field}"),
                        hint: format!("{} authentication needs \"{field}\"", iam.auth_type()),
                    });
                }
                None
            }
            None => raw.password.clone(),
        };
        if matches!(raw.credentials, None | Some(Credentials::UserPassword { .. }))
            && password.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::Missing {
                field: "credentials.password".into(),
                hint: "set credentials to {\"auth_type\": \"UserPassword\", \"password\": \"...\"}".into(),
            });
        }
        if password.as_deref().is_some_and(|p| p.contains('\0')) {
            // Never echo the password, not even in part.
            return Err(invalid(
                "credentials.password",
                "contains a NUL character, which cannot be sent to PostgreSQL",
                "check the password",
            ));
        }
        let adv = &raw.advanced;
        for (field, value) in
            [("advanced.publicationName", &adv.publication_name), ("advanced.slotName", &adv.slot_name)]
        {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty", "remove the field to use the default"));
            }
            check_name(field, value)?;
        }
        if !adv.slot_name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(invalid(
                "advanced.slotName",
                format!("{} is not a valid replication slot name", echo(&adv.slot_name)),
                "slot names may contain only lower case letters, digits and underscores, e.g. \"flow_slot\"",
            ));
        }
        let (watermarks_schema, watermarks_table) = split_qualified(&adv.watermarks_table).ok_or_else(|| {
            invalid(
                "advanced.watermarksTable",
                format!("{} must be fully-qualified as \"<schema>.<table>\"", echo(&adv.watermarks_table)),
                "for example \"public.flow_watermarks\"",
            )
        })?;
        check_name("advanced.watermarksTable", &watermarks_schema)?;
        check_name("advanced.watermarksTable", &watermarks_table)?;
        let mut skip_backfills = BTreeSet::new();
        let mut skip_all_backfills = false;
        for entry in adv.skip_backfills.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*.*" {
                skip_all_backfills = true;
                continue;
            }
            let pair = split_qualified(entry).ok_or_else(|| {
                invalid(
                    "advanced.skip_backfills",
                    format!("{} must be fully-qualified as \"<schema>.<table>\"", echo(entry)),
                    "list tables as comma-separated schema.table names, or *.* for all",
                )
            })?;
            skip_backfills.insert((pair.0.to_lowercase(), pair.1.to_lowercase()));
        }
        let chunk_size = if adv.backfill_chunk_size <= 0 { default_chunk_size() } else { adv.backfill_chunk_size };
        let statement_timeout = match adv.statement_timeout.trim() {
            "" => Some(Duration::from_secs(120)),
            "0" => None,
            text => Some(parse_duration(text).ok_or_else(|| {
                invalid(
                    "advanced.statement_timeout",
                    format!("{} is not a duration", echo(text)),
                    "use one of 30s, 1m, 2m, 5m, 30m, or 0 for none",
                )
            })?),
        };
        let flags = FeatureFlags::parse(&adv.feature_flags).map_err(|reason| {
            invalid(
                "advanced.feature_flags",
                reason,
                "feature flags are comma-separated names, no_<name> turns one off",
            )
        })?;
        if !adv.feature_flags.trim().is_empty() {
            tracing::info!(flags = %adv.feature_flags.trim(), "parsed feature flags");
        }
        if !flags.unknown.is_empty() {
            tracing::warn!(
                unknown = %flags.unknown.join(","),
                "advanced.feature_flags names flags this connector does not know; they are ignored"
            );
        }
        let min_backfill_xid = parse_min_backfill_xid(&adv.min_backfill_xid)?;
        let rediscovery_interval = parse_rediscovery_interval(&adv.rediscovery_interval)?;
        for schema in adv.discover_schemas.iter().chain(&raw.discovery_filters.include_schemas) {
            if schema.trim().is_empty() {
                return Err(invalid(
                    "discoveryFilters.include_schemas",
                    "contains a blank schema name",
                    "remove the blank entry",
                ));
            }
        }
        for pattern in &raw.discovery_filters.table_patterns {
            crate::discovery::filter::TablePattern::parse(pattern).map_err(|reason| {
                invalid(
                    "discoveryFilters.table_patterns",
                    format!("invalid table pattern {}: {reason}", echo(pattern)),
                    "patterns look like schema.table with * and ? wildcards",
                )
            })?;
        }
        let sslmode = match adv.sslmode {
            None => SslMode::Prefer,
            Some(SslModeName::Disable) => SslMode::Disable,
            Some(SslModeName::Allow) => SslMode::Allow,
            Some(SslModeName::Prefer) => SslMode::Prefer,
            Some(SslModeName::Require) => SslMode::Require,
            Some(SslModeName::VerifyCa) => SslMode::VerifyCa,
            Some(SslModeName::VerifyFull) => SslMode::VerifyFull,
        };
        Ok(Config {
            host,
            port,
            password,
            sslmode,
            watermarks_schema,
            watermarks_table,
            skip_backfills,
            skip_all_backfills,
            statement_timeout,
            chunk_size,
            flags,
            min_backfill_xid,
            rediscovery_interval,
            raw,
        })
    }

    /// Refuse the settings of the Go connector that parse but are not implemented here yet,
    /// all at once, each named with what to do instead. Discovery only reads the catalog, so
    /// the settings that change what a capture does (read-only mode, rediscovery) are
    /// checked only for the other requests.
    pub fn check_supported(&self, purpose: Purpose) -> Result<(), ConfigError> {
        let mut items = Vec::new();
        if self.raw.ssh_endpoint().is_some() {
            items.push(Unsupported {
                field: "networkTunnel.sshForwarding",
                what: "SSH tunnels are not implemented by this connector".into(),
                hint: "connect directly, or run an SSH tunnel next to the connector (ssh -L) and point \"address\" at its local end".into(),
            });
        }
        if let Some(iam) = self.raw.credentials.as_ref().filter(|c| !matches!(c, Credentials::UserPassword { .. })) {
            items.push(Unsupported {
                field: "credentials.auth_type",
                what: format!("{} authentication is not implemented by this connector", iam.auth_type()),
                hint: "authenticate with a password: {\"auth_type\": \"UserPassword\", \"password\": \"...\"}".into(),
            });
        }
        let refused_flags = self.flags.not_applied();
        if !refused_flags.is_empty() {
            items.push(Unsupported {
                field: "advanced.feature_flags",
                what: format!(
                    "{} {} not applied by this connector, and would change the documents, their schemas or where the capture starts",
                    refused_flags.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", "),
                    if refused_flags.len() == 1 { "is" } else { "are" }
                ),
                hint: "remove these flags (docs/setup.md lists what each flag does in the Go connector and which ones this connector applies)".into(),
            });
        }
        if purpose == Purpose::Capture {
            if self.raw.advanced.read_only_capture {
                items.push(Unsupported {
                    field: "advanced.read_only_capture",
                    what: "read-only capture (without watermark writes) is not implemented by this connector".into(),
                    hint: "remove advanced.read_only_capture: the capture then writes watermarks into advanced.watermarksTable, which needs a writable (primary) server".into(),
                });
            }
            if self.rediscovery_interval.is_some_and(|interval| interval != DEFAULT_REDISCOVERY_INTERVAL) {
                items.push(Unsupported {
                    field: "advanced.rediscovery_interval",
                    what: format!(
                        "{} asks for periodic rediscovery, which a running capture of this connector does not do yet",
                        echo(self.raw.advanced.rediscovery_interval.trim())
                    ),
                    hint: "remove advanced.rediscovery_interval, or set it to the default, 15m".into(),
                });
            }
            let quiet = self.flags.accepted_not_applied();
            if !quiet.is_empty() {
                tracing::warn!(
                    flags = %quiet.join(","),
                    "advanced.feature_flags: accepted, not applied yet: this connector does not send SourcedSchema responses"
                );
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        let hint = items.iter().map(|u| u.hint.as_str()).collect::<Vec<_>>().join("; ");
        Err(ConfigError::Unsupported { items, hint })
    }

    /// Whether all prerequisite checks are skipped: the `skip_prerequisites` feature flag,
    /// or this connector's older `advanced.skip_prerequisites` field.
    pub fn skips_prerequisites(&self) -> bool {
        self.flags.skip_prerequisites || self.raw.advanced.skip_prerequisites
    }

    /// Whether per-table prerequisite checks are skipped (`skip_table_prerequisites`, or
    /// [`Config::skips_prerequisites`]).
    pub fn skips_table_prerequisites(&self) -> bool {
        self.skips_prerequisites() || self.flags.skip_table_prerequisites
    }

    /// Connection parameters for both the SQL and the replication connection.
    pub fn connect_params(&self) -> ConnectParams {
        ConnectParams {
            host: self.host.clone(),
            port: self.port,
            user: self.raw.user.clone(),
            password: self.password.clone(),
            database: self.raw.database.clone(),
            sslmode: self.sslmode,
            sslrootcert: self.raw.advanced.sslrootcert.clone(),
            application_name: "estuary_flow".to_string(),
            connect_timeout: Duration::from_secs(30),
        }
    }

    pub fn slot_name(&self) -> &str {
        &self.raw.advanced.slot_name
    }

    pub fn publication_name(&self) -> &str {
        &self.raw.advanced.publication_name
    }

    /// Whether the capture manages its replication slot (Go's `create_replication_slot`
    /// flag, on by default): it creates the slot when it starts without a resume position,
    /// and may replace a slot it can prove is its own. With `no_create_replication_slot`
    /// the slot is the user's: it must exist, and it is used as it is, never dropped.
    pub fn creates_replication_slot(&self) -> bool {
        self.flags.create_replication_slot
    }

    /// Whether backfill of `schema.table` is skipped by `advanced.skip_backfills`.
    pub fn skips_backfill(&self, schema: &str, table: &str) -> bool {
        self.skip_all_backfills || self.skip_backfills.contains(&(schema.to_lowercase(), table.to_lowercase()))
    }
}

/// An error text cut to a readable length (serde quotes whole offending values).
pub(crate) fn shorten(text: &str) -> String {
    const LIMIT: usize = 600;
    if text.chars().count() <= LIMIT {
        return text.to_string();
    }
    let head: String = text.chars().take(LIMIT).collect();
    format!("{head}...")
}

/// A configured value quoted for an error message, shortened when it is long.
pub(crate) fn echo(value: &str) -> String {
    const LIMIT: usize = 80;
    if value.chars().count() <= LIMIT {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(LIMIT).collect();
    format!("{head:?}... ({} bytes)", value.len())
}

/// PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A name that reaches the server as an identifier: at most 63 bytes, no control
/// characters (a NUL cannot be sent at all). The name is echoed only when it is short.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(invalid(
            field,
            format!("a name of {} bytes is longer than PostgreSQL's 63-byte identifier limit", name.len()),
            "PostgreSQL truncates longer names, so this one can never match: use the name as the server shows it",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{} contains a control character", echo(name)),
            "remove control characters such as NUL, tab or newline",
        ));
    }
    Ok(())
}

/// The address text before it is split: a host name, not a URL or a connection string.
pub(crate) fn check_address_text(address: &str) -> Result<(), ConfigError> {
    if address.len() > 255 {
        return Err(invalid(
            "address",
            format!("an address of {} bytes is too long", address.len()),
            "write the address as host or host:port",
        ));
    }
    if address.contains("://") || address.contains('@') || address.contains('/') {
        return Err(invalid(
            "address",
            "looks like a connection URL or string, not host:port",
            "set \"address\" to host or host:port only, and put the user, password and database in their own fields",
        ));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "address",
            format!("{} contains whitespace or control characters", echo(address)),
            "write the address as host or host:port",
        ));
    }
    Ok(())
}

/// Connection poolers drop the `replication` startup parameter, so logical replication
/// through them fails in confusing ways: refuse the well-known pooler addresses upfront.
fn check_pooler(address: &str, host: &str, port: u16) -> Result<(), ConfigError> {
    let host = host.to_ascii_lowercase();
    if host.ends_with(".pooler.supabase.com") || (host.ends_with(".supabase.co") && port == 6543) {
        return Err(invalid(
            "address",
            format!("{address:?} is a Supabase connection pooler, which cannot carry logical replication"),
            "use the direct database address (db.<project>.supabase.co:5432) instead of the pooler",
        ));
    }
    if host.ends_with(".neon.tech") && host.split('.').next().is_some_and(|label| label.ends_with("-pooler")) {
        return Err(invalid(
            "address",
            format!("{address:?} is a Neon pooled connection, which cannot carry logical replication"),
            "use the direct endpoint: remove \"-pooler\" from the host name",
        ));
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
pub(crate) fn parse_address(address: &str) -> Result<(String, u16), ConfigError> {
    let bad_port = |port: &str| {
        invalid(
            "address",
            format!("port {} is not a number between 1 and 65535", echo(port)),
            "write the address as host or host:port",
        )
    };
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| {
            invalid("address", "unterminated \"[\" in an IPv6 address", "write IPv6 addresses as [addr]:port")
        })?;
        let port = match tail.strip_prefix(':') {
            Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad_port(port))?,
            None if tail.is_empty() => 5432,
            None => {
                return Err(invalid("address", "unexpected text after \"]\"", "write IPv6 addresses as [addr]:port"))
            }
        };
        return Ok((host.to_string(), port));
    }
    if address.matches(':').count() > 1 {
        return Ok((address.to_string(), 5432));
    }
    match address.split_once(':') {
        Some((host, port)) => {
            if host.is_empty() {
                return Err(invalid("address", "the host part is empty", "write the address as host or host:port"));
            }
            Ok((host.to_string(), port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad_port(port))?))
        }
        None => Ok((address.to_string(), 5432)),
    }
}

/// A duration as Go's `time.ParseDuration` reads it (the Go connector validates its
/// duration settings with it): a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), like `15m`, `1h30m`, `1.5h`;
/// `0` alone needs no unit. Negative durations, and those beyond Go's 2^63-1 ns, are `None`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
            fraction = &after_dot[..len];
            rest = &after_dot[len..];
        }
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per_unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        // Fraction digits beyond nanosecond precision of the largest unit change nothing.
        let fraction = &fraction[..fraction.len().min(20)];
        let fraction_nanos = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u128>().ok()? * nanos_per_unit / 10u128.pow(fraction.len() as u32)
        };
        total = total.checked_add(whole.checked_mul(nanos_per_unit)?.checked_add(fraction_nanos)?)?;
        if total > i64::MAX as u128 {
            return None;
        }
    }
    Some(Duration::from_nanos(total as u64))
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

    /// The resource path `[namespace, stream]`.
    pub fn resource_path(&self) -> Vec<String> {
        vec![self.namespace.clone(), self.stream.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"address": "db.example.com", "credentials": {"auth_type": "UserPassword", "password": "pw"}})
    }

    #[test]
    fn defaults_match_the_go_connector() {
        let config = Config::parse(&base()).unwrap();
        assert_eq!((config.host.as_str(), config.port), ("db.example.com", 5432));
        assert_eq!(config.raw.user, "flow_capture");
        assert_eq!(config.raw.database, "postgres");
        assert_eq!(config.slot_name(), "flow_slot");
        assert_eq!(config.publication_name(), "flow_publication");
        assert_eq!(
            (config.watermarks_schema.as_str(), config.watermarks_table.as_str()),
            ("public", "flow_watermarks")
        );
        assert_eq!(config.chunk_size, 50_000);
        assert_eq!(config.statement_timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn errors_name_the_field_and_never_echo_the_password() {
        let err =
            Config::parse(&json!({"credentials": {"auth_type": "UserPassword", "password": "hunter2"}})).unwrap_err();
        assert_eq!(err.to_string(), "endpoint configuration is missing \"address\"");
        let mut bad = base();
        bad["advanced"] = json!({"backfill_chunk_size": "lots"});
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("advanced.backfill_chunk_size"), "{err}");
        let mut bad = base();
        bad["credentials"]["password"] = json!(42);
        let err = Config::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("credentials"), "{err}");
        assert!(!err.contains("hunter2") && !err.contains("pw\""), "{err}");
        let mut bad = base();
        bad["advanced"] = json!({"sslmode": "sometimes"});
        assert!(Config::parse(&bad).unwrap_err().to_string().contains("sslmode"));
        let mut bad = base();
        bad["advanced"] = json!({"watermarksTable": "flow_watermarks"});
        assert!(Config::parse(&bad).unwrap_err().to_string().contains("fully-qualified"));
    }

    #[test]
    fn addresses_accept_ports_and_ipv6() {
        assert_eq!(parse_address("h:6000").unwrap(), ("h".to_string(), 6000));
        assert_eq!(parse_address("[::1]:7").unwrap(), ("::1".to_string(), 7));
        assert_eq!(parse_address("::1").unwrap(), ("::1".to_string(), 5432));
        assert!(parse_address("h:0").is_err());
        assert!(parse_address("h:x").is_err());
    }

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

    #[test]
    fn feature_flags_parse_like_the_go_connector() {
        let mut cfg = base();
        assert!(Config::parse(&cfg).unwrap().creates_replication_slot());
        cfg["advanced"] = json!({"feature_flags": "date_as_date, no_create_replication_slot"});
        let config = Config::parse(&cfg).unwrap();
        assert!(!config.creates_replication_slot());
        assert_eq!(config.flags.explicit.get("date_as_date"), Some(&true));
        assert_eq!(config.flags.explicit.get("time_as_time"), None);
        assert!(config.flags.time_as_time);
        cfg["advanced"] = json!({"feature_flags": "no_create_replication_slot,create_replication_slot"});
        assert!(Config::parse(&cfg).unwrap().creates_replication_slot());
        // Unknown flags are not an error.
        cfg["advanced"] = json!({"feature_flags": "some_future_flag,no_other"});
        assert_eq!(Config::parse(&cfg).unwrap().flags.unknown, ["other", "some_future_flag"]);
        // A malformed value of a valued flag names the flag.
        cfg["advanced"] = json!({"feature_flags": "force_reset_cursor=soon"});
        let err = Config::parse(&cfg).unwrap_err().to_string();
        assert!(err.contains("advanced.feature_flags") && err.contains("force_reset_cursor"), "{err}");
    }

    #[test]
    fn prerequisite_flags_follow_the_go_connector() {
        let mut cfg = base();
        let config = Config::parse(&cfg).unwrap();
        assert!(!config.skips_prerequisites() && !config.skips_table_prerequisites());
        cfg["advanced"] = json!({"feature_flags": "skip_table_prerequisites"});
        let config = Config::parse(&cfg).unwrap();
        assert!(!config.skips_prerequisites() && config.skips_table_prerequisites());
        cfg["advanced"] = json!({"feature_flags": "skip_prerequisites"});
        let config = Config::parse(&cfg).unwrap();
        assert!(config.skips_prerequisites() && config.skips_table_prerequisites());
        // This connector's older field still works.
        cfg["advanced"] = json!({"skip_prerequisites": true});
        assert!(Config::parse(&cfg).unwrap().skips_table_prerequisites());
    }

    #[test]
    fn go_fields_parse_and_unimplemented_ones_are_refused_by_name() {
        let mut cfg = base();
        cfg["advanced"] = json!({
            "min_backfill_xid": "4294967297",
            "read_only_capture": true,
            "rediscovery_interval": "1h30m",
            "discover_only_published": true,
        });
        cfg["networkTunnel"] = json!({"sshForwarding": {"sshEndpoint": "ssh://u@bastion:22", "privateKey": "KEY"}});
        let config = Config::parse(&cfg).unwrap();
        // The low 32 bits of an epoch-qualified XID.
        assert_eq!(config.min_backfill_xid, Some(1));
        assert_eq!(config.rediscovery_interval, Some(Duration::from_secs(5400)));
        let err = config.check_supported(Purpose::Capture).unwrap_err();
        assert_eq!(
            err.unsupported_fields(),
            ["networkTunnel.sshForwarding", "advanced.read_only_capture", "advanced.rediscovery_interval"]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("endpoint configuration fields are not supported yet: \"networkTunnel.sshForwarding\""),
            "{text}"
        );
        assert!(!text.contains("KEY") && !err.hint().unwrap().contains("KEY"), "{text}");
        // Discovery reads the catalog only: the tunnel still matters there, the rest not.
        let err = config.check_supported(Purpose::Discover).unwrap_err();
        assert_eq!(err.unsupported_fields(), ["networkTunnel.sshForwarding"]);
        assert_eq!(
            err.to_string(),
            "endpoint configuration field \"networkTunnel.sshForwarding\" is not supported yet: SSH tunnels are not implemented by this connector"
        );

        // Settings equal to what this connector does are accepted.
        let mut cfg = base();
        cfg["advanced"] = json!({"read_only_capture": false, "rediscovery_interval": "900s", "feature_flags": "date_as_date,emit_sourced_schemas"});
        cfg["networkTunnel"] = json!({"sshForwarding": {"sshEndpoint": "", "privateKey": ""}});
        Config::parse(&cfg).unwrap().check_supported(Purpose::Capture).unwrap();
        cfg["networkTunnel"] = json!({});
        Config::parse(&cfg).unwrap().check_supported(Purpose::Capture).unwrap();

        // Feature flags that change values are refused, named.
        cfg["advanced"] = json!({"feature_flags": "no_date_as_date,multidimensional_arrays"});
        let err = Config::parse(&cfg).unwrap().check_supported(Purpose::Discover).unwrap_err();
        assert_eq!(
            err.to_string(),
            "endpoint configuration field \"advanced.feature_flags\" is not supported yet: \"no_date_as_date\", \"multidimensional_arrays\" are not applied by this connector, and would change the documents, their schemas or where the capture starts"
        );
    }

    /// Every example of tests/fixtures/go-configs parses, its bindings too, and exactly the
    /// fields it names are refused as not supported yet.
    #[test]
    fn go_connector_examples_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go-configs");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for example in file["examples"].as_array().unwrap() {
                let name = format!("{}: {}", path.display(), example["name"]);
                count += 1;
                let parsed = Config::parse(&example["config"]);
                if let Some(field) = example["invalid"].as_str() {
                    let err = parsed.expect_err(&name).to_string();
                    assert!(err.contains(&format!("{field:?} is invalid")), "{name}: {err}");
                    continue;
                }
                let config = parsed.unwrap_or_else(|err| panic!("{name}: {err}"));
                for (index, binding) in example["bindings"].as_array().unwrap().iter().enumerate() {
                    ResourceConfig::parse(index, binding).unwrap_or_else(|err| panic!("{name}: {err}"));
                }
                let expected: Vec<&str> =
                    example["unsupported"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
                match config.check_supported(Purpose::Capture) {
                    Ok(()) => assert!(expected.is_empty(), "{name}: accepted, expected {expected:?} to be refused"),
                    Err(err) => assert_eq!(err.unsupported_fields(), expected, "{name}: {err}"),
                }
            }
        }
        assert!(count >= 20, "{count} examples");
    }

    #[test]
    fn iam_credentials_parse_with_go_names_and_are_refused() {
        let iam = [
            json!({"auth_type": "AWSIAM", "aws_region": "us-east-1", "aws_role_arn": "arn:aws:iam::1:role/r",
                   "aws_access_key_id": "AKIA", "aws_secret_access_key": "SECRET", "aws_session_token": "TOKEN"}),
            json!({"auth_type": "GCPIAM", "gcp_service_account_to_impersonate": "sa@p.iam.gserviceaccount.com",
                   "gcp_workload_identity_pool_audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
                   "gcp_access_token": "SECRET"}),
            json!({"auth_type": "AzureIAM", "azure_client_id": "c", "azure_tenant_id": "t", "azure_access_token": "SECRET"}),
        ];
        for (credentials, name) in iam.into_iter().zip(["AWSIAM", "GCPIAM", "AzureIAM"]) {
            let config = Config::parse(&json!({"address": "db", "credentials": credentials})).unwrap();
            assert_eq!(config.password, None);
            let err = config.check_supported(Purpose::Discover).unwrap_err();
            let text = err.to_string();
            assert_eq!(
                text,
                format!("endpoint configuration field \"credentials.auth_type\" is not supported yet: {name} authentication is not implemented by this connector")
            );
            assert!(!text.contains("SECRET") && !err.hint().unwrap().contains("SECRET"));
        }
        // A required field of the method, named as the Go connector does.
        let err = Config::parse(&json!({"address": "db", "credentials": {"auth_type": "AWSIAM", "aws_region": "x"}}))
            .unwrap_err();
        assert_eq!(err.to_string(), "endpoint configuration is missing \"credentials.aws_role_arn\"");
    }

    #[test]
    fn bad_values_of_the_new_fields_name_the_field() {
        for (advanced, field) in [
            (json!({"min_backfill_xid": "12a"}), "advanced.min_backfill_xid"),
            (json!({"min_backfill_xid": "99999999999999999999999"}), "advanced.min_backfill_xid"),
            (json!({"rediscovery_interval": "30s"}), "advanced.rediscovery_interval"),
            (json!({"rediscovery_interval": "8761h"}), "advanced.rediscovery_interval"),
            (json!({"rediscovery_interval": "often"}), "advanced.rediscovery_interval"),
        ] {
            let mut cfg = base();
            cfg["advanced"] = advanced.clone();
            let err = Config::parse(&cfg).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("endpoint configuration field {field:?} is invalid")),
                "{advanced}: {err}"
            );
        }
    }

    #[test]
    fn durations_are_read_like_go() {
        let d = |text: &str| parse_duration(text);
        assert_eq!(d("15m"), Some(Duration::from_secs(900)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(d("2us"), Some(Duration::from_micros(2)));
        assert_eq!(d("2\u{b5}s"), Some(Duration::from_micros(2)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("+5s"), Some(Duration::from_secs(5)));
        for bad in ["", "5", "-5m", "5x", ".s", "1h 30m", "3000000h"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn skip_backfills_are_case_insensitive_and_qualified() {
        let mut cfg = base();
        cfg["advanced"] = json!({"skip_backfills": "Public.Big, other.t"});
        let config = Config::parse(&cfg).unwrap();
        assert!(config.skips_backfill("public", "BIG"));
        assert!(!config.skips_backfill("public", "t"));
        cfg["advanced"] = json!({"skip_backfills": "nodot"});
        assert!(Config::parse(&cfg).is_err());
    }
}
