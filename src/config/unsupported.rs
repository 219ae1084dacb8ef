//! The Go connector's settings that parse but are not implemented here yet, refused all
//! at once with what to do instead.
//!
//! Invariants: discovery and capture refuse the same settings (each changes what is read or
//! how values are encoded); no message or hint ever includes a secret (an IAM token). SSH
//! tunnels ([`crate::pg::tunnel`]), periodic rediscovery and read-only capture
//! ([`Config::read_only`]) are implemented.

use super::{Config, ConfigError, Credentials};

/// One setting that is accepted by the parser and refused because this connector does
/// not implement it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The field's path, like `advanced.rediscovery_interval`.
    pub field: &'static str,
    /// What is not supported, as the end of a sentence.
    pub what: String,
    pub hint: String,
}

pub(super) fn unsupported_message(items: &[Unsupported]) -> String {
    match items {
        [one] => format!("endpoint configuration field {:?} is not supported yet: {}", one.field, one.what),
        _ => {
            let listed: Vec<String> = items.iter().map(|u| format!("{:?} ({})", u.field, u.what)).collect();
            format!("endpoint configuration fields are not supported yet: {}", listed.join("; "))
        }
    }
}

impl Config {
    /// Refuse the settings of the Go connector that parse but are not implemented here yet,
    /// all at once, each named with what to do instead.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        let mut items = Vec::new();
        if let Some(iam) = self.raw.credentials.as_ref().filter(|c| !matches!(c, Credentials::UserPassword { .. })) {
            items.push(Unsupported {
                field: "credentials.auth_type",
                what: format!("{} authentication is not implemented by this connector", iam.auth_type()),
                hint: "authenticate with a password: {\"auth_type\": \"UserPassword\", \"password\": \"...\"}".into(),
            });
        }
        if items.is_empty() {
            return Ok(());
        }
        let hint = items.iter().map(|u| u.hint.as_str()).collect::<Vec<_>>().join("; ");
        Err(ConfigError::Unsupported { items, hint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResourceConfig;
    use serde_json::json;
    use serde_json::Value;
    use std::time::Duration;

    fn base() -> Value {
        json!({"address": "db.example.com", "credentials": {"auth_type": "UserPassword", "password": "pw"}})
    }

    #[test]
    fn go_fields_parse_and_unimplemented_ones_are_refused_by_name() {
        let mut cfg = base();
        cfg["advanced"] = json!({
            "min_backfill_xid": "4294967297",
            "read_only_capture": true,
            "rediscovery_interval": "1h30m",
            "discover_only_published": true,
            "feature_flags": "no_date_as_date,force_reset_cursor=0/10",
        });
        cfg["credentials"] = json!({"auth_type": "AWSIAM", "aws_region": "us-east-1", "aws_role_arn": "arn:aws:iam::1:role/r", "aws_access_key_id": "AKIA",
                                    "aws_secret_access_key": "s3cr3t-value", "aws_session_token": "t0ken-value"});
        let key = crate::pg::tunnel::TEST_KEY;
        cfg["networkTunnel"] = json!({"sshForwarding": {"sshEndpoint": "ssh://u@bastion:22", "privateKey": key}});
        let config = Config::parse(&cfg).unwrap();
        // The low 32 bits of an epoch-qualified XID.
        assert_eq!(config.min_backfill_xid, Some(1));
        assert_eq!(config.rediscovery_interval, Some(Duration::from_secs(5400)));
        // The tunnel is implemented: parsed, its key read, and not refused.
        assert_eq!(config.tunnel.as_ref().map(|t| t.endpoint().host.as_str()), Some("bastion"));
        let err = config.check_supported().unwrap_err();
        // Every feature flag is applied; IAM authentication is the one setting refused.
        assert_eq!(err.unsupported_fields(), ["credentials.auth_type"]);
        assert!(config.read_only(), "read_only_capture is implemented: parsed, not refused");
        assert_eq!(config.flags.force_reset_cursor, Some(crate::lsn::Lsn(0x10)));
        let text = err.to_string();
        assert_eq!(
            text,
            "endpoint configuration field \"credentials.auth_type\" is not supported yet: AWSIAM authentication is not implemented by this connector"
        );
        for secret in key.lines().filter(|l| !l.starts_with("-----")).chain(["s3cr3t-value", "t0ken-value"]) {
            assert!(!text.contains(secret) && !err.hint().unwrap().contains(secret), "{text}");
        }
        cfg["credentials"] = json!({"auth_type": "UserPassword", "password": "pw"});
        Config::parse(&cfg).unwrap().check_supported().unwrap();

        // Settings equal to what this connector does, or implemented, are accepted.
        let mut cfg = base();
        cfg["advanced"] = json!({"read_only_capture": false, "rediscovery_interval": "900s", "feature_flags": "date_as_date,emit_sourced_schemas"});
        let config = Config::parse(&cfg).unwrap();
        assert!(!config.read_only());
        config.check_supported().unwrap();
        cfg["advanced"]["read_only_capture"] = json!(true);
        let config = Config::parse(&cfg).unwrap();
        assert!(config.read_only());
        config.check_supported().unwrap();
        cfg["advanced"]["read_only_capture"] = json!(false);
        cfg["networkTunnel"] = json!({"sshForwarding": {"sshEndpoint": "", "privateKey": ""}});
        Config::parse(&cfg).unwrap().check_supported().unwrap();
        cfg["networkTunnel"] = json!({});
        Config::parse(&cfg).unwrap().check_supported().unwrap();

        // The Go connector's value flags are applied (see `ValueFormats`), not refused.
        cfg["advanced"] = json!({"feature_flags": "no_date_as_date,multidimensional_arrays,go_value_formats"});
        let config = Config::parse(&cfg).unwrap();
        config.check_supported().unwrap();
        assert!(!config.formats.date_as_date && config.formats.multidimensional_arrays);
        assert!(config.formats.improvement_names().is_empty());
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
                match config.check_supported() {
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
            let err = config.check_supported().unwrap_err();
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
}
