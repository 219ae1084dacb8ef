//! The capture's durable state, in the Go connector's format.
//!
//! ```json
//! {"cursor": "16/B374D848",
//!  "bindingStateV1": {"public%2Ft": {"mode": "Active", "key_columns": ["id"],
//!                                     "scanned": "<base64 FoundationDB tuple>", "backfilled": 42}}}
//! ```
//! `cursor` is the end LSN of the last source transaction whose changes were all emitted;
//! restarting there resumes exactly after it. Per-binding state is keyed by the runtime's
//! `stateKey`. Checkpoints are RFC 7396 merge patches holding the cursor and only the
//! bindings that changed, so a `null` field deletes it from the merged state. Because the
//! names and encodings match the Go connector's, a capture can switch implementations in
//! either direction without re-backfilling.
//!
//! # The value-formats marker
//!
//! A capture keeps the value formats it started with ([`crate::value::ValueFormats`]):
//! the names of the improvements in effect are written into every binding's `metadata`
//! (`{"value_formats": ["iso_intervals", …]}`), and read back by
//! [`CaptureState::value_formats`]. A non-empty state without a marker was written by the
//! Go connector (Go formats); an empty state is a new capture (every improvement).
//!
//! The marker is not a top-level field, because the Go connector reads its state with
//! `pf.UnmarshalStrict` (sqlcapture's `Pull`), which refuses unknown fields: a top-level
//! `value_formats` would stop a capture moved back to Go. A binding's `metadata` is a
//! `json.RawMessage` there, kept as is and not read by its PostgreSQL capture, so moving
//! back still works. Every binding carries the marker (the first checkpoint of a session
//! writes it into all of them), so it survives bindings being removed. For the same reason
//! the key types a resume key was read under (`key_types`) live in `metadata` too; a
//! binding state holds exactly Go's fields (`written_binding_states_hold_only_the_go_connectors_fields`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Backfill progress of one binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableMode {
    /// Added, not yet activated.
    Pending,
    /// Precise backfill (the historical name is kept for compatibility).
    Backfill,
    /// Normal backfill: replication changes are never filtered.
    UnfilteredBackfill,
    /// Keyless backfill by CTID ranges.
    KeylessBackfill,
    /// Backfill complete (or skipped): only replication.
    Active,
    /// The binding was removed.
    Ignore,
    /// The table was missing at the last rediscovery.
    Missing,
}

impl TableMode {
    pub fn is_backfilling(self) -> bool {
        matches!(self, TableMode::Backfill | TableMode::UnfilteredBackfill | TableMode::KeylessBackfill)
    }
}

/// The `metadata` field naming the files of a keyless backfill's relation.
const KEYLESS_RELATION: &str = "keyless_relation";
/// The `metadata` field listing the value-format improvements the capture uses.
const VALUE_FORMATS: &str = "value_formats";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredBindingState", into = "StoredBindingState")]
pub struct BindingState {
    pub mode: TableMode,
    #[serde(default)]
    pub key_columns: Option<Vec<String>>,
    /// Resume position: base64 of a FoundationDB tuple (keyed) or of `"(block,offset)"` (keyless).
    #[serde(default)]
    pub scanned: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub backfilled: u64,
    /// The key columns' types (`format_type`, plus ` COLLATE ..` when not the type's
    /// default) under which `scanned` was read: a resume key is only meaningful in the order
    /// it was read in, and `ALTER COLUMN .. TYPE` can change that order (integer to text,
    /// another collation). Written with every resume key, meaningful only with one; absent
    /// in states of the Go connector and of earlier versions (see `capture::retype`). Stored
    /// in `metadata` (see `StoredBindingState`).
    pub key_types: Option<Vec<String>>,
}

/// The `metadata` field holding [`BindingState::key_types`].
const KEY_TYPES: &str = "key_types";

/// A binding's state as stored: exactly the fields of the Go connector's `TableState`, whose
/// state parser refuses unknown fields (so that a capture can move back to it), with this
/// connector's additions inside the opaque `metadata`. Versions before this one wrote
/// `key_types` as a field of its own; it is still read, never written.
#[derive(Serialize, Deserialize)]
struct StoredBindingState {
    mode: TableMode,
    #[serde(default)]
    key_columns: Option<Vec<String>>,
    #[serde(default)]
    scanned: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(default)]
    backfilled: u64,
    #[serde(default, skip_serializing)]
    key_types: Option<Vec<String>>,
}

impl From<StoredBindingState> for BindingState {
    fn from(stored: StoredBindingState) -> Self {
        let mut metadata = stored.metadata;
        let mut key_types = stored.key_types;
        if let Some(Value::Object(map)) = &mut metadata {
            if let Some(Value::Array(names)) = map.remove(KEY_TYPES) {
                key_types = names.into_iter().map(|n| n.as_str().map(str::to_string)).collect();
            }
        }
        BindingState {
            mode: stored.mode,
            key_columns: stored.key_columns,
            scanned: stored.scanned,
            metadata,
            backfilled: stored.backfilled,
            key_types,
        }
    }
}

impl From<BindingState> for StoredBindingState {
    fn from(state: BindingState) -> Self {
        let mut metadata = state.metadata;
        if let Some(key_types) = state.key_types {
            let mut map = match metadata.take() {
                Some(Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            };
            map.insert(KEY_TYPES.to_string(), Value::from(key_types));
            metadata = Some(Value::Object(map));
        }
        StoredBindingState {
            mode: state.mode,
            key_columns: state.key_columns,
            scanned: state.scanned,
            metadata,
            backfilled: state.backfilled,
            key_types: None,
        }
    }
}

impl BindingState {
    pub fn pending() -> Self {
        BindingState {
            mode: TableMode::Pending,
            key_columns: None,
            scanned: None,
            metadata: None,
            backfilled: 0,
            key_types: None,
        }
    }

    /// The files a keyless backfill's resume position refers to (see
    /// [`crate::capture::backfill::RELATION_SQL`]), kept in `metadata`, which the Go
    /// connector's PostgreSQL capture neither uses nor drops.
    pub fn keyless_relation(&self) -> Option<&str> {
        self.metadata.as_ref()?.get(KEYLESS_RELATION)?.as_str()
    }

    /// Record (or with `None`, forget) [`BindingState::keyless_relation`]. Forgetting one
    /// that was recorded leaves `metadata` as an explicit null, so that the next checkpoint
    /// clears it from the merged state too.
    pub fn set_keyless_relation(&mut self, relation: Option<String>) {
        match relation {
            Some(relation) => {
                let mut metadata = match self.metadata.take() {
                    Some(Value::Object(map)) => map,
                    _ => serde_json::Map::new(),
                };
                metadata.insert(KEYLESS_RELATION.to_string(), Value::String(relation));
                self.metadata = Some(Value::Object(metadata));
            }
            None if self.keyless_relation().is_some() => {
                // Other fields (the value-formats marker) stay; an explicit null clears
                // this one from the merged state.
                if let Some(Value::Object(map)) = &mut self.metadata {
                    map.insert(KEYLESS_RELATION.to_string(), Value::Null);
                    if map.values().all(Value::is_null) {
                        self.metadata = Some(Value::Null);
                    }
                }
            }
            None => {}
        }
    }

    /// The value-formats marker in this binding's metadata, if any.
    pub fn value_formats(&self) -> Option<Vec<String>> {
        let list = self.metadata.as_ref()?.get(VALUE_FORMATS)?.as_array()?;
        Some(list.iter().filter_map(|name| name.as_str().map(str::to_string)).collect())
    }

    /// Record the value-formats marker (the names of the improvements in effect).
    pub fn set_value_formats(&mut self, names: &[String]) {
        let mut metadata = match self.metadata.take() {
            Some(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        metadata.insert(VALUE_FORMATS.to_string(), Value::from(names.to_vec()));
        self.metadata = Some(Value::Object(metadata));
    }

    /// This state as a merge-patch value: absent optional fields become explicit nulls so
    /// that they are cleared in the merged state.
    pub fn to_patch(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            for field in ["key_columns", "scanned"] {
                map.entry(field).or_insert(Value::Null);
            }
        }
        value
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureState {
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default, rename = "bindingStateV1")]
    pub bindings: BTreeMap<String, BindingState>,
}

/// The state could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the capture state is not valid: {reason}")]
pub struct StateError {
    pub reason: String,
}

impl CaptureState {
    /// What this state says about the capture's value formats: the marker of the first
    /// binding that has one; else, for a state with a cursor or bindings, the Go
    /// connector's; else (an empty state) a new capture.
    pub fn value_formats(&self) -> crate::value::StateFormats {
        use crate::value::StateFormats;
        if let Some(names) = self.bindings.values().find_map(BindingState::value_formats) {
            return StateFormats::Marked(names);
        }
        if self.cursor.is_some() || !self.bindings.is_empty() {
            return StateFormats::Go;
        }
        StateFormats::New
    }

    /// Parse the state handed to `open`; absent or `{}` is the empty state.
    pub fn parse(value: &Value) -> Result<CaptureState, StateError> {
        if value.is_null() {
            return Ok(CaptureState::default());
        }
        serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            StateError { reason: format!("at {path}: {}", err.into_inner()) }
        })
    }
}

/// Apply an RFC 7396 merge patch (used by the local runner to persist state exactly as
/// the runtime does).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(target_map) = target {
                for (key, value) in patch_map {
                    if value.is_null() {
                        target_map.remove(key);
                    } else {
                        merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The runtime's state key: the resource path joined by `/`, percent-encoded except
/// letters, digits and `-_+.=`, plus `.v<N>` when the backfill counter is non-zero.
pub fn encode_state_key(resource_path: &[String], backfill: u32) -> String {
    let joined = resource_path.join("/");
    let mut key = String::with_capacity(joined.len());
    for c in joined.chars() {
        if c.is_alphanumeric() || matches!(c, '-' | '_' | '+' | '.' | '=') {
            key.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                key.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    if backfill != 0 {
        key.push_str(&format!(".v{backfill}"));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_connector_state_parses_and_round_trips() {
        let go = json!({
            "cursor": "16/B374D848",
            "bindingStateV1": {
                "test%2Ftable.v1": {"mode": "Backfill", "key_columns": ["id", "name"], "scanned": "AkIAFQQ=", "backfilled": 12},
                "test%2Fother": {"mode": "Active", "key_columns": null, "scanned": null, "metadata": null, "backfilled": 0}
            }
        });
        let state = CaptureState::parse(&go).unwrap();
        assert_eq!(state.cursor.as_deref(), Some("16/B374D848"));
        let binding = &state.bindings["test%2Ftable.v1"];
        assert_eq!(binding.mode, TableMode::Backfill);
        assert_eq!(binding.scanned.as_deref(), Some("AkIAFQQ="));
        assert_eq!(state.bindings["test%2Fother"].mode, TableMode::Active);
        assert!(CaptureState::parse(&json!({"cursor": 5})).is_err());
        assert_eq!(CaptureState::parse(&Value::Null).unwrap(), CaptureState::default());
    }

    #[test]
    fn keyless_relation_is_kept_in_metadata_and_cleared_by_the_patch() {
        let mut state = BindingState::pending();
        state.set_keyless_relation(None);
        assert_eq!(state.metadata, None);
        state.set_keyless_relation(Some("16384:16390".into()));
        assert_eq!(state.keyless_relation(), Some("16384:16390"));
        let mut merged = json!({"k": state.to_patch()});
        assert_eq!(merged["k"]["metadata"], json!({"keyless_relation": "16384:16390"}));
        state.set_keyless_relation(None);
        assert_eq!(state.keyless_relation(), None);
        merge_patch(&mut merged, &json!({"k": state.to_patch()}));
        assert_eq!(merged["k"].get("metadata"), None);
    }

    /// The Go connector parses its state strictly (unknown fields fail the capture), so a
    /// state this connector writes must hold only the fields of Go's `PersistentState` and
    /// `TableState`; everything of its own lives in the opaque `metadata`.
    #[test]
    fn written_binding_states_hold_only_the_go_connectors_fields() {
        let mut binding = BindingState::pending();
        binding.mode = TableMode::Backfill;
        binding.key_columns = Some(vec!["id".into()]);
        binding.scanned = Some("AhU=".into());
        binding.key_types = Some(vec!["integer".into()]);
        binding.set_value_formats(&["iso_intervals".to_string()]);
        let written = serde_json::to_value(&binding).unwrap();
        let fields: Vec<&str> = written.as_object().unwrap().keys().map(String::as_str).collect();
        for field in &fields {
            assert!(["mode", "key_columns", "scanned", "metadata", "backfilled"].contains(field), "{written}");
        }
        assert_eq!(written["metadata"], json!({"key_types": ["integer"], "value_formats": ["iso_intervals"]}));
        let read: BindingState = serde_json::from_value(written).unwrap();
        assert_eq!(read, binding, "read back as written");
        // Earlier versions wrote key_types as a field of its own: still read.
        let legacy: BindingState = serde_json::from_value(json!({
            "mode": "Backfill", "key_columns": ["id"], "scanned": "AhU=", "backfilled": 3, "key_types": ["text"]
        }))
        .unwrap();
        assert_eq!(legacy.key_types, Some(vec!["text".to_string()]));
        assert_eq!(serde_json::to_value(&legacy).unwrap()["metadata"], json!({"key_types": ["text"]}));
    }

    #[test]
    fn the_value_formats_marker_lives_in_binding_metadata_next_to_the_keyless_relation() {
        use crate::value::StateFormats;
        assert_eq!(CaptureState::parse(&json!({})).unwrap().value_formats(), StateFormats::New);
        let go = json!({"cursor": "0/10", "bindingStateV1": {"k": {"mode": "Active", "backfilled": 1}}});
        assert_eq!(CaptureState::parse(&go).unwrap().value_formats(), StateFormats::Go);
        assert_eq!(CaptureState::parse(&json!({"cursor": "0/10"})).unwrap().value_formats(), StateFormats::Go);

        let mut binding = BindingState::pending();
        binding.set_keyless_relation(Some("1:2".into()));
        binding.set_value_formats(&["iso_intervals".to_string()]);
        let mut merged = json!({"cursor": "0/10", "bindingStateV1": {"k": binding.to_patch()}});
        let state = CaptureState::parse(&merged).unwrap();
        assert_eq!(state.value_formats(), StateFormats::Marked(vec!["iso_intervals".into()]));
        // Forgetting the keyless relation keeps the marker in the merged state.
        binding.set_keyless_relation(None);
        merge_patch(&mut merged, &json!({"bindingStateV1": {"k": binding.to_patch()}}));
        assert_eq!(merged["bindingStateV1"]["k"]["metadata"], json!({"value_formats": ["iso_intervals"]}));
        let marked_empty = json!({"bindingStateV1": {"k": {"mode": "Active", "metadata": {"value_formats": []}}}});
        assert_eq!(CaptureState::parse(&marked_empty).unwrap().value_formats(), StateFormats::Marked(vec![]));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut target, &json!({"a": {"b": null, "e": 3}, "d": [2], "f": null}));
        assert_eq!(target, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn patches_clear_absent_resume_keys() {
        let mut merged = json!({"bindingStateV1": {"k": {"mode": "Backfill", "scanned": "AA==", "backfilled": 1}}});
        let done = BindingState {
            mode: TableMode::Active,
            key_columns: None,
            scanned: None,
            metadata: None,
            backfilled: 9,
            key_types: None,
        };
        merge_patch(&mut merged, &json!({"bindingStateV1": {"k": done.to_patch()}}));
        assert_eq!(merged, json!({"bindingStateV1": {"k": {"mode": "Active", "backfilled": 9}}}));
    }

    #[test]
    fn state_keys_are_the_runtimes_percent_encoded_resource_paths() {
        assert_eq!(encode_state_key(&["test".into(), "USERS".into()], 0), "test%2FUSERS");
        assert_eq!(encode_state_key(&["a/cdc".into(), "table+baz".into()], 3), "a%2Fcdc%2Ftable+baz.v3");
        assert_eq!(encode_state_key(&["public".into(), "my table".into()], 0), "public%2Fmy%20table");
    }
}
