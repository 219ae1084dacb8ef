//! `advanced`: the endpoint options of the Go connector that few users change, with its
//! defaults (publication `flow_publication`, slot `flow_slot`, watermarks table
//! `public.flow_watermarks`, chunks of 50,000 rows), and libpq's `sslmode` names.
//!
//! Invariant: an absent `advanced` object and an empty one give the same documented
//! defaults (see `impl Default for Advanced`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pg::SslMode;

fn default_publication() -> String {
    "flow_publication".into()
}
fn default_slot() -> String {
    "flow_slot".into()
}
fn default_watermarks() -> String {
    "public.flow_watermarks".into()
}
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(value: &i64) -> bool {
    *value == 0
}
pub(super) fn default_chunk_size() -> i64 {
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
    // The description is the Go connector's text, verbatim (spec parity); rustdoc reads
    // `<schema>` as an HTML tag.
    #[allow(rustdoc::invalid_html_tags)]
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
    /// Connections that read one large table's backfill at once, each a range of its keys (or of its pages, for a keyless table), 1 to 8. 0 or absent: chosen from the table's estimated size, 1 below 20 chunks of rows, 2 from 20 chunks, 4 from 200 (1 M and 10 M rows with the default chunk size), used while they read the table faster than one connection (measured as it goes). Each extra reader is one more connection while that table is backfilled; 1 reads every table with one connection.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(title = "Backfill Readers", range(min = 0, max = 8))]
    pub backfill_readers: i64,
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
    /// Capture without writing to the database: no watermark writes (backfills are fenced by WAL positions instead), no watermarks table, no publication created or altered. For standby servers (PostgreSQL 16+) and users without write access; the replication slot is still created when missing.
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
        backfill_readers: 0,
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

impl SslModeName {
    /// The connection's mode for a configured `sslmode`; none configured is libpq's default,
    /// `prefer`.
    pub fn mode_or_default(name: Option<SslModeName>) -> SslMode {
        match name {
            None => SslMode::Prefer,
            Some(SslModeName::Disable) => SslMode::Disable,
            Some(SslModeName::Allow) => SslMode::Allow,
            Some(SslModeName::Prefer) => SslMode::Prefer,
            Some(SslModeName::Require) => SslMode::Require,
            Some(SslModeName::VerifyCa) => SslMode::VerifyCa,
            Some(SslModeName::VerifyFull) => SslMode::VerifyFull,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_and_empty_advanced_give_the_documented_defaults() {
        let empty: Advanced = serde_json::from_value(serde_json::json!({})).unwrap();
        for advanced in [Advanced::default(), empty, unreachable_default()] {
            assert_eq!(advanced.publication_name, "flow_publication");
            assert_eq!(advanced.slot_name, "flow_slot");
            assert_eq!(advanced.watermarks_table, "public.flow_watermarks");
            assert_eq!(advanced.backfill_chunk_size, 50_000);
        }
    }

    #[test]
    fn ssl_mode_names_are_libpq_names() {
        let name: SslModeName = serde_json::from_value(serde_json::json!("verify-full")).unwrap();
        assert_eq!(SslModeName::mode_or_default(Some(name)), SslMode::VerifyFull);
        assert_eq!(SslModeName::mode_or_default(None), SslMode::Prefer);
        assert!(serde_json::from_value::<SslModeName>(serde_json::json!("VerifyFull")).is_err());
    }
}
