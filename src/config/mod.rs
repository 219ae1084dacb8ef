//! Endpoint and resource configuration.
//!
//! Property names, defaults and meanings follow Estuary's Go `source-postgres`, so an
//! existing capture's configuration works unchanged. The `spec` schemas are generated from
//! these types (see [`crate::spec`]) and carry the Flow UI annotations (`order`, `secret`,
//! `advanced`). Parsing is lenient about unknown keys (the stored config may carry a `sops`
//! block and fields of newer connector versions) and strict about values: every error
//! names the field and says what is expected, and never echoes a secret.

//!
//! The module is split by concern:
//! - [`endpoint`]: the stored endpoint configuration (connection, credentials, discovery
//!   filters, the Go connector's network tunnel);
//! - [`advanced`]: the `advanced` options and their defaults;
//! - [`resource`]: the per-binding resource configuration and its checks;
//! - `parse`: from the stored configuration to a validated [`Config`];
//! - `unsupported`: the Go settings that parse but are refused as not implemented yet;
//! - `values`: readers and checks of single values (addresses, names, durations),
//!   shared with the batch connector's configuration;
//! - [`secret`]: the [`Secret`] type that keeps passwords out of `Debug` output;
//! - [`table_name`]: [`TableName`], a schema-qualified name in its SQL and message forms.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::pg::{ConnectParams, SslMode};

pub mod advanced;
mod backfill_filter;
pub mod endpoint;
pub mod feature_flags;
mod parse;
pub mod resource;
pub mod secret;
pub mod table_name;
mod unsupported;
mod values;

pub use advanced::{Advanced, SslModeName};
pub use endpoint::{Credentials, DiscoveryFilters, EndpointConfig, NetworkTunnel, SshForwarding};
pub use feature_flags::FeatureFlags;
pub(crate) use parse::parse_tunnel;
pub use parse::DEFAULT_REDISCOVERY_INTERVAL;
pub use resource::{BackfillMode, ResourceAdvanced, ResourceConfig};
pub use secret::Secret;
pub use table_name::TableName;
pub use unsupported::Unsupported;
pub use values::parse_duration;
pub(crate) use values::{check_address_text, check_name, echo, invalid, parse_address, shorten};

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
    #[error("{}", unsupported::unsupported_message(items))]
    Unsupported { items: Vec<Unsupported>, hint: String },
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

/// A validated endpoint configuration with defaults applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub raw: EndpointConfig,
    pub host: String,
    pub port: u16,
    /// The password of password authentication (none for the IAM methods).
    pub password: Option<Secret>,
    pub sslmode: SslMode,
    pub watermarks_schema: String,
    pub watermarks_table: String,
    /// `advanced.skip_backfills`, lower-cased.
    pub skip_backfills: BTreeSet<TableName>,
    pub skip_all_backfills: bool,
    pub statement_timeout: Option<Duration>,
    pub chunk_size: i64,
    /// `advanced.backfill_readers`: connections reading one table's backfill at once
    /// (None: chosen from the table's size, see `Config::backfill_readers_for`).
    pub backfill_readers: Option<usize>,
    /// `advanced.feature_flags`, parsed.
    pub flags: FeatureFlags,
    /// The value formats: from the flags and the defaults when parsed (what discovery and
    /// validation use), then resolved with the state by the capture at `open` (see
    /// [`crate::value::ValueFormats::resolve`]).
    pub formats: crate::value::ValueFormats,
    /// `advanced.min_backfill_xid` as a 32-bit XID (backfills read only rows whose xmin
    /// is this XID or newer, modulo 2^32).
    pub min_backfill_xid: Option<u32>,
    /// `advanced.rediscovery_interval`, when set.
    pub rediscovery_interval: Option<Duration>,
    /// The SSH tunnel of `networkTunnel.sshForwarding`, with its key parsed, when one is
    /// configured (an empty `sshEndpoint` means none, as in the Go connector).
    pub tunnel: Option<std::sync::Arc<crate::pg::tunnel::SshTunnel>>,
}

/// The most connections that read one table's backfill at once.
pub const MAX_BACKFILL_READERS: usize = 8;
/// Chunks of rows (`advanced.backfill_chunk_size`) from which a table is read by two
/// connections when `advanced.backfill_readers` is not set (1 M rows with the default size).
pub const TWO_READERS_FROM_CHUNKS: u64 = 20;
/// Chunks of rows from which it is read by four (10 M rows with the default size).
pub const FOUR_READERS_FROM_CHUNKS: u64 = 200;

impl Config {
    /// Connections that read the backfill of a table of about `estimated_rows` rows (the
    /// server's statistics): the configured number, else one below
    /// [`TWO_READERS_FROM_CHUNKS`] chunks of rows, two from there, four from
    /// [`FOUR_READERS_FROM_CHUNKS`]. The default stays modest on purpose: each reader is one
    /// more backend producing rows on the user's server, and past a few the client's encoding
    /// is the bound (docs/performance.md). A table never analyzed (no estimate) gets one.
    pub fn backfill_readers_for(&self, estimated_rows: u64) -> usize {
        if let Some(readers) = self.backfill_readers {
            return readers.clamp(1, MAX_BACKFILL_READERS);
        }
        let chunks = estimated_rows / u64::try_from(self.chunk_size.max(1)).unwrap_or(1);
        match chunks {
            c if c >= FOUR_READERS_FROM_CHUNKS => 4,
            c if c >= TWO_READERS_FROM_CHUNKS => 2,
            _ => 1,
        }
    }

    /// Whether the capture writes nothing to the database (`advanced.read_only_capture`): no
    /// watermark writes (its backfill fences are WAL positions), no watermarks table, no
    /// publication created or altered. The replication slot is still created when missing.
    pub fn read_only(&self) -> bool {
        self.raw.advanced.read_only_capture
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
            password: self.password.as_ref().map(|secret| secret.expose().to_string()),
            database: self.raw.database.clone(),
            sslmode: self.sslmode,
            sslrootcert: self.raw.advanced.sslrootcert.clone(),
            application_name: "estuary_flow".to_string(),
            connect_timeout: Duration::from_secs(30),
            tunnel: self.tunnel.clone(),
        }
    }

    /// The watermarks table (`advanced.watermarksTable`).
    pub fn watermarks(&self) -> TableName {
        TableName::new(&self.watermarks_schema, &self.watermarks_table)
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
        self.skip_all_backfills || self.skip_backfills.contains(&TableName::new(schema, table).to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    fn base() -> Value {
        json!({"address": "db.example.com", "credentials": {"auth_type": "UserPassword", "password": "pw"}})
    }

    #[test]
    fn backfill_readers_follow_the_table_size_unless_configured() {
        let mut config = Config::parse(&base()).unwrap();
        assert_eq!(config.backfill_readers, None);
        // Default chunk size 50,000: two readers from 1 M rows, four from 10 M.
        for (rows, readers) in [(0, 1), (999_999, 1), (1_000_000, 2), (9_999_999, 2), (10_000_000, 4), (u64::MAX, 4)] {
            assert_eq!(config.backfill_readers_for(rows), readers, "{rows} rows");
        }
        let mut raw = base();
        raw["advanced"] = json!({"backfill_chunk_size": 10});
        config = Config::parse(&raw).unwrap();
        assert_eq!((config.backfill_readers_for(199), config.backfill_readers_for(200)), (1, 2));
        raw["advanced"] = json!({"backfill_readers": 3, "backfill_chunk_size": 10});
        config = Config::parse(&raw).unwrap();
        assert_eq!((config.backfill_readers_for(0), config.backfill_readers_for(1 << 40)), (3, 3));
        raw["advanced"] = json!({"backfill_readers": 1});
        assert_eq!(Config::parse(&raw).unwrap().backfill_readers_for(1 << 40), 1);
        raw["advanced"] = json!({"backfill_readers": 0});
        assert_eq!(Config::parse(&raw).unwrap().backfill_readers_for(1 << 40), 4);
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
    fn debug_of_a_config_never_shows_a_secret() {
        let mut cfg = base();
        cfg["credentials"]["password"] = json!("hunter2");
        let key = crate::pg::tunnel::TEST_KEY;
        cfg["networkTunnel"] = json!({"sshForwarding": {"sshEndpoint": "ssh://u@b", "privateKey": key}});
        let config = Config::parse(&cfg).unwrap();
        assert_eq!(config.password.as_ref().map(Secret::expose), Some("hunter2"));
        let text = format!("{config:?} {:?}", config.connect_params());
        assert!(!text.contains("hunter2"), "{text}");
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(line), "{text}");
        }
        let legacy = Config::parse(&json!({"address": "db", "password": "hunter2"})).unwrap();
        assert!(!format!("{legacy:?}").contains("hunter2"));
        assert_eq!(legacy.connect_params().password.as_deref(), Some("hunter2"));
    }
}
