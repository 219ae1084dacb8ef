//! The catalogs in `catalog-examples/` are what users copy: every capture's endpoint
//! configuration parses and passes the supported-settings check, and every binding's
//! resource parses, with the connector's own parsers (the CDC connector's or the batch
//! connector's, by the capture's image or command). No server is needed.
//!
//! The SSH example holds a placeholder where the private key goes: it must fail with the
//! error that names `privateKey` (what a user who forgets to paste the key sees), and parse
//! once a real key (made here with `ssh-keygen`) takes its place.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use source_postgres::batch::config::{BatchConfig, BatchResource};
use source_postgres::config::{Config, ResourceConfig};

/// Marks the placeholder key of `catalog-examples/ssh-tunnel.flow.yaml`.
const KEY_PLACEHOLDER: &str = "(the key's lines";

/// Whether a capture runs the batch connector.
fn is_batch(endpoint: &Value) -> bool {
    let image = endpoint["connector"]["image"].as_str().unwrap_or_default();
    let command = endpoint["local"]["command"][0].as_str().unwrap_or_default();
    image.contains("source-postgres-batch") || command.ends_with("source-postgres-batch")
}

/// A fresh private key without a passphrase, in OpenSSH format.
fn generated_key() -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("key");
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "catalog-example", "-f"])
        .arg(&path)
        .output()
        .expect("run ssh-keygen (from openssh-client)");
    assert!(output.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&output.stderr));
    std::fs::read_to_string(&path).expect("read the key")
}

/// Parse one capture's endpoint configuration and bindings; the error text otherwise.
fn check_capture(endpoint: &Value, bindings: &[Value]) -> Result<(), String> {
    let config = endpoint.get("connector").or_else(|| endpoint.get("local")).expect("a connector or local endpoint");
    let config = &config["config"];
    if is_batch(endpoint) {
        BatchConfig::parse(config).map_err(|e| e.to_string())?;
        for (index, binding) in bindings.iter().enumerate() {
            BatchResource::parse(index, &binding["resource"]).map_err(|e| e.to_string())?;
        }
    } else {
        Config::parse(config).map_err(|e| e.to_string())?.check_supported().map_err(|e| e.to_string())?;
        for (index, binding) in bindings.iter().enumerate() {
            ResourceConfig::parse(index, &binding["resource"]).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[test]
fn every_catalog_example_parses_with_the_connectors_own_parsers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog-examples");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("catalog-examples").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let (mut captures, mut placeholders) = (0, 0);
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(path).expect("read the example");
        let catalog: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let all = catalog["captures"].as_object().unwrap_or_else(|| panic!("{}: no captures", path.display()));
        for (name, capture) in all {
            let context = format!("{} capture {name}", path.display());
            let mut endpoint = capture["endpoint"].clone();
            let bindings = capture["bindings"].as_array().cloned().unwrap_or_default();
            let key_pointer = "/connector/config/networkTunnel/sshForwarding/privateKey";
            if endpoint.pointer(key_pointer).and_then(Value::as_str).is_some_and(|k| k.contains(KEY_PLACEHOLDER)) {
                placeholders += 1;
                let error = check_capture(&endpoint, &bindings).expect_err(&context);
                assert!(error.contains("privateKey"), "{context}: the placeholder key gave: {error}");
                *endpoint.pointer_mut(key_pointer).expect("the key") = Value::String(generated_key());
            }
            check_capture(&endpoint, &bindings).unwrap_or_else(|e| panic!("{context}: {e}"));
            captures += 1;
        }
    }
    assert!(captures >= 6, "{captures} captures in {}", dir.display());
    assert_eq!(placeholders, 1, "the SSH example's placeholder key");
}
