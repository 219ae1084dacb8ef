//! The checkpoint state of the batch capture, in the Go connector's shape:
//! `{"bindingStateV1": {"<stateKey>": {"Mode", "LastPolled", "DocumentCount", "CursorNames",
//! "CursorValues", "BaseXID", "NextXID", "ScanTID"}}}`, so a capture can move between the
//! two connectors; an xmin scan in progress also records `ScanFilenodes` (an extra field
//! the Go connector ignores). Cursor values are kept as the server's text output of each cursor column
//! (they go back to the server as text parameters, which every type's input function reads);
//! values the Go connector wrote (numbers, booleans, RFC 3339 strings) are read the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Polling by xmin (the built-in query with the cursor `["txid"]`).
pub const MODE_XMIN: &str = "Incremental (XMIN)";
/// Everything else: the built-in cursor or full-refresh query, or a template.
pub const MODE_QUERY: &str = "Custom Query";

/// The state of one binding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamState {
    #[serde(rename = "Mode")]
    pub mode: String,
    /// When the last completed poll started (RFC 3339), or Go's zero time.
    #[serde(rename = "LastPolled")]
    pub last_polled: String,
    /// Documents emitted since the last full refresh started (the next `row_id`). In the
    /// middle of a full refresh it is at least the row ids that refresh has emitted, so a
    /// resumed refresh deletes every row id past its new end.
    #[serde(rename = "DocumentCount")]
    pub document_count: i64,
    #[serde(rename = "CursorNames", skip_serializing_if = "Vec::is_empty")]
    pub cursor_names: Vec<String>,
    /// The cursor of the last row that is known to be captured with every row before it.
    #[serde(rename = "CursorValues", skip_serializing_if = "Vec::is_empty")]
    pub cursor_values: Vec<Value>,
    /// xmin mode: rows whose xmin lies in `[BaseXID, NextXID)` are captured by this scan
    /// (`BaseXID` 0: no lower bound). Both are 64-bit transaction ids (epoch included).
    #[serde(rename = "BaseXID")]
    pub base_xid: u64,
    #[serde(rename = "NextXID")]
    pub next_xid: u64,
    /// xmin mode: the scan's progress, `(page,0)`; empty between scans.
    #[serde(rename = "ScanTID")]
    pub scan_tid: String,
    /// xmin mode: the storage files (relfilenodes, with the partitions') that the pages
    /// before `ScanTID` were read from; a scan that finds other files starts again from its
    /// first page. Empty between scans, and in states the Go connector (which ignores the
    /// field) or an earlier version wrote: a scan resumed mid-table without it starts again
    /// too.
    #[serde(rename = "ScanFilenodes", skip_serializing_if = "String::is_empty")]
    pub scan_filenodes: String,
}

/// Go's zero `time.Time`, which it writes for a binding that never polled.
pub const NEVER: &str = "0001-01-01T00:00:00Z";

/// The whole state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchState {
    #[serde(rename = "bindingStateV1")]
    pub streams: BTreeMap<String, StreamState>,
}

impl BatchState {
    pub fn parse(value: &Value) -> Result<BatchState, String> {
        if value.is_null() || value.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(BatchState::default());
        }
        serde_path_to_error::deserialize(value).map_err(|err| {
            let path = err.path().to_string();
            format!("the capture state is not a batch capture's state: field {path}: {}", err.into_inner())
        })
    }
}

impl StreamState {
    /// A fresh state for a binding in `mode` with these cursor columns.
    pub fn new(mode: &str, cursor: &[String]) -> StreamState {
        StreamState {
            mode: mode.to_string(),
            last_polled: NEVER.to_string(),
            cursor_names: cursor.to_vec(),
            ..Default::default()
        }
    }

    /// Carry a previous state over to a binding, or start afresh when its mode or cursor
    /// columns changed (as the Go connector does; the log says so).
    pub fn reconcile(previous: Option<StreamState>, mode: &str, cursor: &[String], name: &str) -> StreamState {
        let Some(mut state) = previous else { return StreamState::new(mode, cursor) };
        if state.mode.is_empty() {
            state.mode = mode.to_string();
        }
        if state.mode != mode {
            tracing::warn!(name, previous = %state.mode, next = mode, "capture mode changed, resetting the binding's state");
            return StreamState::new(mode, cursor);
        }
        if state.cursor_names != cursor {
            tracing::warn!(name, previous = ?state.cursor_names, next = ?cursor, "cursor columns changed, resetting the binding's state");
            return StreamState::new(mode, cursor);
        }
        if state.last_polled.is_empty() {
            state.last_polled = NEVER.to_string();
        }
        state
    }
}

/// A stored cursor value as a text parameter (`None`: SQL NULL).
pub fn cursor_param(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_states_round_trip_and_changes_of_mode_or_cursor_reset() {
        let go = json!({"bindingStateV1": {"t": {
            "Mode": "Custom Query", "LastPolled": "2024-01-02T03:04:05.123Z", "DocumentCount": 7,
            "CursorNames": ["updated_at"], "CursorValues": ["2024-01-01T00:00:00Z"],
            "BaseXID": 0, "NextXID": 0, "ScanTID": ""}}});
        let state = BatchState::parse(&go).unwrap();
        assert_eq!(serde_json::to_value(&state).unwrap(), go);
        let kept = StreamState::reconcile(state.streams.get("t").cloned(), MODE_QUERY, &["updated_at".into()], "t");
        assert_eq!(kept.document_count, 7);
        let reset = StreamState::reconcile(state.streams.get("t").cloned(), MODE_QUERY, &["id".into()], "t");
        assert_eq!((reset.document_count, reset.last_polled.as_str()), (0, NEVER));
        let reset = StreamState::reconcile(state.streams.get("t").cloned(), MODE_XMIN, &["updated_at".into()], "t");
        assert_eq!(reset.mode, MODE_XMIN);
        assert_eq!(cursor_param(&json!(5)).as_deref(), Some("5"));
        assert_eq!(cursor_param(&json!(null)), None);
        assert!(BatchState::parse(&json!({"bindingStateV1": {"t": {"DocumentCount": "x"}}})).is_err());
        assert_eq!(BatchState::parse(&json!({})).unwrap(), BatchState::default());
    }

    #[test]
    fn scan_filenodes_are_optional_and_written_only_during_a_scan() {
        // A state written before the field existed (or by Go, mid-scan) loads with none.
        let old = json!({"bindingStateV1": {"x": {
            "Mode": MODE_XMIN, "LastPolled": NEVER, "DocumentCount": 3,
            "BaseXID": 0, "NextXID": 900, "ScanTID": "(40,0)"}}});
        let state = BatchState::parse(&old).unwrap();
        assert_eq!(state.streams["x"].scan_filenodes, "");
        assert_eq!(serde_json::to_value(&state).unwrap(), old);
        let mut scanning = state.streams["x"].clone();
        scanning.scan_filenodes = "16384".into();
        let value = serde_json::to_value(&scanning).unwrap();
        assert_eq!(value["ScanFilenodes"], "16384");
        assert_eq!(serde_json::from_value::<StreamState>(value).unwrap(), scanning);
    }
}
