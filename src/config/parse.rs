//! From the deserialized [`EndpointConfig`] to a validated [`Config`]: every value is
//! checked, defaults are applied, and the derived settings (host and port, watermarks
//! table, skipped backfills, timeouts, feature flags) are computed once.
//!
//! The checks run in a fixed order and the first failure is the error, so a configuration
//! with several problems always reports the same one. Errors never echo a secret: a
//! type error under `credentials` or `password` is reported without serde's message,
//! which may quote the value.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::advanced::default_chunk_size;
use super::values::{
    check_address_text, check_name, check_pooler, echo, invalid, parse_address, parse_duration, shorten,
};
use super::{
    Advanced, Config, ConfigError, Credentials, EndpointConfig, FeatureFlags, NetworkTunnel, Secret, SslModeName,
    TableName,
};
use crate::pg::tunnel::{SshTunnel, TunnelConfigError};

/// The Go connector's rediscovery interval when none is configured, and its bounds.
pub const DEFAULT_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(15 * 60);
const MIN_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
const MAX_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Without `advanced.statement_timeout`, backfill queries time out after 2 minutes.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

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
        let (host, port) = check_connection(&raw)?;
        let password = check_password(&raw)?;
        let adv = &raw.advanced;
        check_replication_names(adv)?;
        let (watermarks_schema, watermarks_table) = parse_watermarks_table(&adv.watermarks_table)?;
        let (skip_backfills, skip_all_backfills) = parse_skip_backfills(&adv.skip_backfills)?;
        let chunk_size = if adv.backfill_chunk_size <= 0 { default_chunk_size() } else { adv.backfill_chunk_size };
        let statement_timeout = parse_statement_timeout(&adv.statement_timeout)?;
        let backfill_readers = parse_backfill_readers(adv.backfill_readers)?;
        let flags = parse_feature_flags(&adv.feature_flags)?;
        let min_backfill_xid = parse_min_backfill_xid(&adv.min_backfill_xid)?;
        let rediscovery_interval = parse_rediscovery_interval(&adv.rediscovery_interval)?;
        check_discovery_filters(&raw)?;
        let tunnel = parse_tunnel(raw.network_tunnel.as_ref())?;
        let sslmode = SslModeName::mode_or_default(adv.sslmode);
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
            formats: crate::value::ValueFormats::resolve(&flags.explicit, &crate::value::StateFormats::New),
            backfill_readers,
            flags,
            min_backfill_xid,
            rediscovery_interval,
            tunnel,
            raw,
        })
    }
}

/// `networkTunnel.sshForwarding`: the endpoint checked and the key parsed, so that bad key
/// text is reported before anything connects. No error quotes the key. Shared with the
/// batch connector, whose `networkTunnel` is the same.
pub(crate) fn parse_tunnel(tunnel: Option<&NetworkTunnel>) -> Result<Option<Arc<SshTunnel>>, ConfigError> {
    let Some(endpoint) = tunnel.and_then(NetworkTunnel::ssh_endpoint) else {
        return Ok(None);
    };
    let forwarding = tunnel.and_then(|t| t.ssh_forwarding.as_ref());
    let key = forwarding.map(|f| f.private_key.expose()).unwrap_or_default();
    let host_key = forwarding.map(|f| f.host_key_fingerprint.as_str()).unwrap_or_default();
    match SshTunnel::new(endpoint, key).and_then(|tunnel| tunnel.with_host_key(host_key)) {
        Ok(tunnel) => Ok(Some(Arc::new(tunnel))),
        Err(TunnelConfigError::HostKey(reason)) => Err(invalid(
            "networkTunnel.sshForwarding.hostKeyFingerprint",
            reason,
            "leave it empty to accept any host key, or give the fingerprint ssh-keygen -l prints",
        )),
        Err(TunnelConfigError::Endpoint(reason)) => Err(invalid(
            "networkTunnel.sshForwarding.sshEndpoint",
            reason,
            "give the SSH server as ssh://user@host or ssh://user@host:port",
        )),
        Err(TunnelConfigError::Key(reason)) => Err(invalid(
            "networkTunnel.sshForwarding.privateKey",
            reason,
            "paste the whole private key file, from its -----BEGIN line to its -----END line",
        )),
    }
}

fn missing(field: &str, hint: &str) -> ConfigError {
    ConfigError::Missing { field: field.into(), hint: hint.into() }
}

/// The address (split into host and port), user and database: present and well-formed.
fn check_connection(raw: &EndpointConfig) -> Result<(String, u16), ConfigError> {
    let address = raw.address.trim();
    if address.is_empty() {
        return Err(missing(
            "address",
            "set \"address\" to the database host, or host:port (the port defaults to 5432)",
        ));
    }
    check_address_text(address)?;
    let (host, port) = parse_address(address)?;
    check_pooler(address, &host, port)?;
    if raw.user.trim().is_empty() {
        return Err(missing("user", "set \"user\" to the database user to connect as"));
    }
    if raw.database.trim().is_empty() {
        return Err(missing("database", "set \"database\" to the logical database to capture from"));
    }
    check_name("user", &raw.user)?;
    check_name("database", &raw.database)?;
    Ok((host, port))
}

/// The password of password authentication (from `credentials`, or the legacy top-level
/// field). The IAM methods carry no password (the runtime adds a token): only their
/// required fields are checked here, and they are refused later as not supported yet,
/// after the rest of the configuration was checked.
fn check_password(raw: &EndpointConfig) -> Result<Option<Secret>, ConfigError> {
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
        && password.as_ref().is_none_or(Secret::is_empty)
    {
        return Err(missing(
            "credentials.password",
            "set credentials to {\"auth_type\": \"UserPassword\", \"password\": \"...\"}",
        ));
    }
    if password.as_ref().is_some_and(|p| p.expose().contains('\0')) {
        // Never echo the password, not even in part.
        return Err(invalid(
            "credentials.password",
            "contains a NUL character, which cannot be sent to PostgreSQL",
            "check the password",
        ));
    }
    Ok(password)
}

/// The publication and slot names: non-empty identifiers; a slot name in the characters
/// PostgreSQL allows for slots.
fn check_replication_names(adv: &Advanced) -> Result<(), ConfigError> {
    for (field, value) in [("advanced.publicationName", &adv.publication_name), ("advanced.slotName", &adv.slot_name)] {
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
    Ok(())
}

/// `advanced.watermarksTable` as (schema, table): fully qualified, both identifiers.
fn parse_watermarks_table(text: &str) -> Result<(String, String), ConfigError> {
    let TableName { schema, name: table } = split_qualified(text).ok_or_else(|| {
        invalid(
            "advanced.watermarksTable",
            format!("{} must be fully-qualified as \"<schema>.<table>\"", echo(text)),
            "for example \"public.flow_watermarks\"",
        )
    })?;
    check_name("advanced.watermarksTable", &schema)?;
    check_name("advanced.watermarksTable", &table)?;
    Ok((schema, table))
}

/// `advanced.skip_backfills`: lower-cased (schema, table) pairs, and whether `*.*` skips all.
fn parse_skip_backfills(text: &str) -> Result<(BTreeSet<TableName>, bool), ConfigError> {
    let mut tables = BTreeSet::new();
    let mut all = false;
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*.*" {
            all = true;
            continue;
        }
        let table = split_qualified(entry).ok_or_else(|| {
            invalid(
                "advanced.skip_backfills",
                format!("{} must be fully-qualified as \"<schema>.<table>\"", echo(entry)),
                "list tables as comma-separated schema.table names, or *.* for all",
            )
        })?;
        tables.insert(table.to_lowercase());
    }
    Ok((tables, all))
}

/// `advanced.statement_timeout`: blank is the default, `0` is none, else a Go duration.
fn parse_statement_timeout(text: &str) -> Result<Option<Duration>, ConfigError> {
    match text.trim() {
        "" => Ok(Some(DEFAULT_STATEMENT_TIMEOUT)),
        "0" => Ok(None),
        text => Ok(Some(parse_duration(text).ok_or_else(|| {
            invalid(
                "advanced.statement_timeout",
                format!("{} is not a duration", echo(text)),
                "use one of 30s, 1m, 2m, 5m, 30m, or 0 for none",
            )
        })?)),
    }
}

/// `advanced.feature_flags`, logged when set; unknown flags are a warning, not an error.
fn parse_feature_flags(text: &str) -> Result<FeatureFlags, ConfigError> {
    let flags = FeatureFlags::parse(text).map_err(|reason| {
        invalid("advanced.feature_flags", reason, "feature flags are comma-separated names, no_<name> turns one off")
    })?;
    if !text.trim().is_empty() {
        tracing::info!(flags = %text.trim(), "parsed feature flags");
    }
    if !flags.unknown.is_empty() {
        tracing::warn!(
            unknown = %flags.unknown.join(","),
            "advanced.feature_flags names flags this connector does not know; they are ignored"
        );
    }
    Ok(flags)
}

/// The schema lists hold no blank name, and every table pattern parses.
fn check_discovery_filters(raw: &EndpointConfig) -> Result<(), ConfigError> {
    for schema in raw.advanced.discover_schemas.iter().chain(&raw.discovery_filters.include_schemas) {
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
    Ok(())
}

/// `advanced.backfill_readers`: 0 (chosen from each table's size) or 1 to
/// [`MAX_BACKFILL_READERS`].
fn parse_backfill_readers(readers: i64) -> Result<Option<usize>, ConfigError> {
    match usize::try_from(readers) {
        Ok(0) => Ok(None),
        Ok(n) if n <= super::MAX_BACKFILL_READERS => Ok(Some(n)),
        _ => Err(invalid(
            "advanced.backfill_readers",
            format!("{readers} is not a number of backfill readers"),
            format!(
                "set 0 (chosen from each table's size), or 1 to {} (1 reads every table with one connection)",
                super::MAX_BACKFILL_READERS
            ),
        )),
    }
}

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

/// Split `schema.table` at the first dot; both parts non-empty.
fn split_qualified(name: &str) -> Option<TableName> {
    let (schema, table) = name.split_once('.')?;
    let (schema, table) = (schema.trim(), table.trim());
    (!schema.is_empty() && !table.is_empty()).then(|| TableName::new(schema, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"address": "db.example.com", "credentials": {"auth_type": "UserPassword", "password": "pw"}})
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
    fn bad_values_of_the_new_fields_name_the_field() {
        for (advanced, field) in [
            (json!({"min_backfill_xid": "12a"}), "advanced.min_backfill_xid"),
            (json!({"backfill_readers": 9}), "advanced.backfill_readers"),
            (json!({"backfill_readers": -1}), "advanced.backfill_readers"),
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
