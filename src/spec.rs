//! The `spec` response: configuration schemas generated from the Rust config types.
//!
//! The schemas are committed under `spec/` and a test fails when the generated ones drift
//! from them, so every change to the configuration surface is reviewed as a diff.

use serde_json::Value;

use crate::config::{EndpointConfig, ResourceConfig};
use crate::protocol::responses::SpecResponse;
use crate::protocol::PROTOCOL_VERSION;

pub const DOCUMENTATION_URL: &str = "https://go.estuary.dev/source-postgresql";

pub(crate) fn generate<T: schemars::JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator();
    let schema = generator.into_root_schema_for::<T>();
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// JSON Schema of the endpoint configuration.
pub fn endpoint_config_schema() -> Value {
    let mut schema = generate::<EndpointConfig>();
    // `address` deserializes with a default only so that its absence gets a friendlier
    // error than serde's; in the form it is required and has no default.
    if let Some(address) = schema.pointer_mut("/properties/address").and_then(Value::as_object_mut) {
        address.remove("default");
    }
    if let Some(object) = schema.as_object_mut() {
        object.insert("required".to_string(), serde_json::json!(["address"]));
    }
    strip_null_options(&mut schema);
    if let Some(credentials) = schema.pointer_mut("/properties/credentials").and_then(Value::as_object_mut) {
        credentials.insert("default".into(), serde_json::json!({"auth_type": "UserPassword"}));
        credentials.insert("type".into(), "object".into());
    }
    // Each method's `auth_type` defaults to its own name, as in the Go connector's form.
    if let Some(Value::Array(methods)) = schema.pointer_mut("/properties/credentials/oneOf") {
        for method in methods {
            if let Some(auth_type) = method.pointer_mut("/properties/auth_type").and_then(Value::as_object_mut) {
                if let Some(name) = auth_type.get("const").cloned() {
                    auth_type.insert("default".into(), name);
                }
            }
        }
    }
    // Fields that parse with an empty default (so that `Config::parse` names a missing one)
    // but are required in the form, as in the Go connector.
    for (object, fields) in [
        ("/properties/credentials/oneOf/1", &["aws_region", "aws_role_arn"][..]),
        (
            "/properties/credentials/oneOf/2",
            &["gcp_service_account_to_impersonate", "gcp_workload_identity_pool_audience"],
        ),
        ("/properties/credentials/oneOf/3", &["azure_client_id", "azure_tenant_id"]),
        ("/properties/networkTunnel/properties/sshForwarding", &["sshEndpoint", "privateKey"]),
    ] {
        require(&mut schema, object, fields);
    }
    schema
}

/// Mark `fields` of the object schema at `pointer` as required, without a default.
fn require(schema: &mut Value, pointer: &str, fields: &[&str]) {
    let Some(object) = schema.pointer_mut(pointer).and_then(Value::as_object_mut) else { return };
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for field in fields {
            if let Some(Value::Object(property)) = properties.get_mut(*field) {
                property.remove("default");
            }
        }
    }
    let required = object.entry("required").or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(required) = required {
        for field in fields {
            if !required.iter().any(|r| r == field) {
                required.push(Value::String(field.to_string()));
            }
        }
    }
}

/// Optional fields are modelled as `Option<T>`, which schemars renders as `[T, "null"]`
/// with `null` among enum values; the Flow UI wants the plain type (absence is the option).
pub(crate) fn strip_null_options(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            // `anyOf: [X, {type: null}]` becomes X itself.
            let nullable_union = matches!(map.get("anyOf"), Some(Value::Array(options))
                if options.len() == 2 && options.iter().any(|o| *o == serde_json::json!({"type": "null"})));
            if nullable_union {
                if let Some(Value::Array(options)) = map.remove("anyOf") {
                    for option in options.into_iter().filter(|o| *o != serde_json::json!({"type": "null"})) {
                        if let Value::Object(inner) = option {
                            for (key, value) in inner {
                                map.entry(key).or_insert(value);
                            }
                        }
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let single = types.remove(0);
                    map.insert("type".to_string(), single);
                }
            }
            if let Some(Value::Array(options)) = map.get_mut("enum") {
                options.retain(|o| !o.is_null());
            }
            map.values_mut().for_each(strip_null_options);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_options),
        _ => {}
    }
}

/// JSON Schema of a binding's resource configuration.
pub fn resource_config_schema() -> Value {
    let mut schema = generate::<ResourceConfig>();
    // A flat enum renders as a plain dropdown; the generated oneOf does not.
    if let Some(mode) = schema.pointer_mut("/properties/mode").and_then(Value::as_object_mut) {
        mode.remove("oneOf");
        mode.insert("type".into(), "string".into());
        mode.insert("enum".into(), serde_json::json!(["", "Normal", "Precise", "Only Changes", "Without Primary Key"]));
        mode.insert("default".into(), "".into());
    }
    for field in ["namespace", "stream"] {
        if let Some(property) = schema.pointer_mut(&format!("/properties/{field}")).and_then(Value::as_object_mut) {
            property.remove("default");
        }
    }
    if let Some(object) = schema.as_object_mut() {
        object.insert("required".to_string(), serde_json::json!(["namespace", "stream"]));
    }
    strip_null_options(&mut schema);
    schema
}

pub fn spec_response() -> SpecResponse {
    SpecResponse {
        protocol: PROTOCOL_VERSION,
        config_schema: endpoint_config_schema(),
        resource_config_schema: resource_config_schema(),
        documentation_url: std::env::var("DOCS_URL").unwrap_or_else(|_| DOCUMENTATION_URL.to_string()),
        resource_path_pointers: vec!["/namespace".to_string(), "/stream".to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(path: &str) -> Value {
        let text =
            std::fs::read_to_string(format!("{}/spec/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|err| {
                panic!("spec/{path} is missing ({err}): run `cargo run --bin source-postgres -- schemas --write`")
            });
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn generated_schemas_match_the_committed_spec_files() {
        assert_eq!(
            endpoint_config_schema(),
            committed("endpoint-config.schema.json"),
            "the endpoint config schema changed: review it and run `cargo run --bin source-postgres -- schemas --write`"
        );
        assert_eq!(
            resource_config_schema(),
            committed("resource-config.schema.json"),
            "the resource config schema changed: review it and run `cargo run --bin source-postgres -- schemas --write`"
        );
    }

    /// Every property of a schema as `<kind> <path> <type>` lines, methods of a `oneOf`
    /// as `path[auth_type].field` (the format of the Go connector's list in the fixture).
    fn property_lines(kind: &str, schema: &Value, prefix: &str, lines: &mut Vec<String>) {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return };
        for (name, property) in properties {
            let path = format!("{prefix}{name}");
            let ty = property.get("type").and_then(Value::as_str).unwrap_or("?");
            lines.push(format!("{kind} {path} {ty}"));
            if let Some(Value::Array(methods)) = property.get("oneOf") {
                for method in methods {
                    let tag = method.pointer("/properties/auth_type/const").and_then(Value::as_str).unwrap_or("?");
                    property_lines(kind, method, &format!("{path}[{tag}]."), lines);
                }
            }
            property_lines(kind, property, &format!("{path}."), lines);
        }
    }

    #[test]
    fn the_spec_has_every_property_of_the_go_connector_with_its_type() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/go-configs/go-spec-properties.txt");
        let text = std::fs::read_to_string(path).expect("the fixture of the Go connector's properties");
        let go: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
        assert!(go.len() > 40, "{go:?}");
        let mut ours = Vec::new();
        property_lines("endpoint", &endpoint_config_schema(), "", &mut ours);
        property_lines("resource", &resource_config_schema(), "", &mut ours);
        let missing: Vec<&&str> = go.iter().filter(|line| !ours.iter().any(|o| o == **line)).collect();
        assert!(missing.is_empty(), "properties of the Go connector missing here (or of another type): {missing:#?}");
        // What this connector has beyond the Go connector's spec, on purpose.
        let mut extra: Vec<&String> = ours.iter().filter(|o| !go.contains(&o.as_str())).collect();
        extra.sort();
        assert_eq!(
            extra,
            [
                "endpoint advanced.backfill_readers integer",
                "endpoint advanced.fail_on_truncate boolean",
                "endpoint advanced.sslrootcert string",
                "endpoint networkTunnel.sshForwarding.hostKeyFingerprint string"
            ]
        );
    }

    #[test]
    fn schemas_carry_flow_ui_annotations_and_real_defaults() {
        let schema = endpoint_config_schema();
        assert_eq!(schema["title"], "PostgreSQL Connection");
        assert_eq!(schema["properties"]["address"]["order"], 0);
        assert_eq!(schema["properties"]["advanced"]["advanced"], true);
        assert_eq!(schema["properties"]["advanced"]["properties"]["slotName"]["default"], "flow_slot");
        let readers = &schema["properties"]["advanced"]["properties"]["backfill_readers"];
        assert_eq!(
            (readers["type"].as_str(), readers["minimum"].as_f64(), readers["maximum"].as_f64()),
            (Some("integer"), Some(0.0), Some(8.0)),
            "{readers:#}"
        );
        let password = &schema["properties"]["credentials"]["oneOf"][0]["properties"]["password"];
        assert_eq!(password["secret"], true, "{schema:#}");
        assert!(schema.get("additionalProperties").is_none(), "the root must stay open for sops");
        let resource = resource_config_schema();
        assert_eq!(resource["properties"]["namespace"]["readOnly"], true);
    }
}
