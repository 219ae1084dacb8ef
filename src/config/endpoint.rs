//! The endpoint configuration as stored: the connection (address, user, database,
//! credentials), the discovery filters and the Go connector's `networkTunnel`.
//!
//! These types only deserialize (leniently: unknown keys are ignored) and generate the
//! `spec` schema; what the values must be is checked by [`super::Config::parse`]. Secrets
//! are [`Secret`]s, so debug-printing a configuration never shows them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Advanced, Secret};

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
    pub password: Option<Secret>,
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
    /// Connect through an SSH server that acts as a bastion host for the database's network: every connection is forwarded through it, with TLS to the database kept end to end.
    #[serde(default, rename = "networkTunnel", skip_serializing_if = "Option::is_none")]
    #[schemars(title = "Network Tunnel")]
    pub network_tunnel: Option<NetworkTunnel>,
}

/// The Go connector's `networkTunnel`, with its names; the tunnel itself is
/// [`crate::pg::tunnel`].
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
    // The description is the spec's text: `[:port]` is not a rustdoc link.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[serde(default, rename = "sshEndpoint")]
    #[schemars(title = "SSH Endpoint", extend("pattern" = "^ssh://.+@.+$"))]
    pub ssh_endpoint: String,
    /// The private key of the SSH user, without a passphrase: OpenSSH format, PEM (RSA or EC) or PKCS#8.
    #[serde(default, rename = "privateKey")]
    #[schemars(title = "SSH Private Key", extend("secret" = true, "multiline" = true))]
    pub private_key: Secret,
    /// Optional: the SHA-256 fingerprint of the SSH server's host key (SHA256:..., as `ssh-keyscan <host> | ssh-keygen -lf -` prints it). When set, any other host key is refused. Not a field of the Go connector: remove it before moving a capture back to it.
    #[serde(default, rename = "hostKeyFingerprint", skip_serializing_if = "String::is_empty")]
    #[schemars(title = "SSH Host Key Fingerprint")]
    pub host_key_fingerprint: String,
}

impl NetworkTunnel {
    /// The SSH endpoint when a tunnel is configured (the Go connector starts a tunnel only
    /// when `sshEndpoint` is set; an empty `networkTunnel` means none).
    pub fn ssh_endpoint(&self) -> Option<&str> {
        let endpoint = self.ssh_forwarding.as_ref()?.ssh_endpoint.as_str();
        (!endpoint.trim().is_empty()).then_some(endpoint)
    }
}

impl EndpointConfig {
    /// See [`NetworkTunnel::ssh_endpoint`].
    pub fn ssh_endpoint(&self) -> Option<&str> {
        self.network_tunnel.as_ref()?.ssh_endpoint()
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
        password: Secret,
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
    pub(super) fn missing_fields(&self) -> Vec<&'static str> {
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
