//! The Flow capture protocol: request and response messages, and the stdin reader.
//!
//! Requests are parsed leniently, as the runtime's own decoder does: every field is
//! optional with a default, unknown fields are ignored (newer runtimes add fields), both
//! camelCase and snake_case names are accepted, and 32-bit numbers may arrive as strings.
//! Responses are written strictly: only the protocol's camelCase keys, defaults omitted,
//! because the runtime rejects unknown keys. Their types are in [`responses`]; they are
//! written only by [`emitter`], the one writer of stdout.

pub mod emitter;
pub mod responses;
pub mod stdio;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The protocol version `spec` must announce.
pub const PROTOCOL_VERSION: u32 = 3_032_023;

/// The largest request line we accept; a spec with thousands of bindings is a few MB.
pub const MAX_REQUEST_BYTES: usize = 512 * 1024 * 1024;

/// One request read from stdin: exactly one of the variants is set.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawRequest {
    pub spec: Option<Value>,
    pub discover: Option<Discover>,
    pub validate: Option<Validate>,
    pub apply: Option<Apply>,
    pub open: Option<Open>,
    pub acknowledge: Option<Acknowledge>,
}

/// A request, classified.
#[derive(Debug)]
pub enum Request {
    Spec,
    Discover(Discover),
    Validate(Validate),
    Apply(Apply),
    Open(Box<Open>),
    Acknowledge(Acknowledge),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Discover {
    pub config: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Validate {
    pub name: String,
    pub config: Value,
    pub bindings: Vec<ValidateBinding>,
    #[serde(alias = "last_capture")]
    pub last_capture: Option<CaptureSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ValidateBinding {
    #[serde(alias = "resource_config", alias = "resourceConfigJson")]
    pub resource_config: Value,
    pub collection: CollectionSpec,
    #[serde(deserialize_with = "lenient_u32")]
    pub backfill: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Apply {
    pub capture: CaptureSpec,
    pub version: String,
    #[serde(alias = "last_capture")]
    pub last_capture: Option<CaptureSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Open {
    pub capture: CaptureSpec,
    pub version: String,
    pub range: Option<Value>,
    #[serde(alias = "state_json")]
    pub state: Value,
}

/// `checkpoints` is how many of the preceding checkpoints the runtime has committed. An
/// absent (or `null`) count means one, as the Go connector and older runtimes have it; an
/// explicit `0` acknowledges none, so it must never release the slot past a checkpoint the
/// runtime has not committed.
#[derive(Debug, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Acknowledge {
    #[serde(deserialize_with = "acknowledged_count")]
    pub checkpoints: u32,
}

impl Default for Acknowledge {
    fn default() -> Self {
        Acknowledge { checkpoints: 1 }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CaptureSpec {
    pub name: String,
    pub config: Value,
    pub bindings: Vec<CaptureBinding>,
    #[serde(alias = "interval_seconds", deserialize_with = "lenient_u32")]
    pub interval_seconds: u32,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CaptureBinding {
    #[serde(alias = "resource_config")]
    pub resource_config: Value,
    #[serde(alias = "resource_path")]
    pub resource_path: Vec<String>,
    pub collection: CollectionSpec,
    #[serde(deserialize_with = "lenient_u32")]
    pub backfill: u32,
    #[serde(alias = "state_key")]
    pub state_key: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CollectionSpec {
    pub name: String,
    pub key: Vec<String>,
    #[serde(alias = "write_schema")]
    pub write_schema: Value,
    #[serde(alias = "read_schema")]
    pub read_schema: Value,
    pub projections: Vec<Value>,
}

/// u32 fields may be absent, `null`, a number, or a decimal string.
fn lenient_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("expected a 32-bit unsigned integer, got {n}"))),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| {
            let shown: String = s.chars().take(40).collect();
            let ellipsis = if shown.len() < s.len() { "..." } else { "" };
            serde::de::Error::custom(format!("expected a 32-bit unsigned integer, got {shown:?}{ellipsis}"))
        }),
        Some(other) => {
            Err(serde::de::Error::custom(format!("expected a 32-bit unsigned integer, got {}", json_kind(&other))))
        }
    }
}

/// The count of an acknowledgement: `null` is read as absent (one), anything else as a u32.
fn acknowledged_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    match value {
        None | Some(Value::Null) => Ok(1),
        Some(value) => lenient_u32(value).map_err(serde::de::Error::custom),
    }
}

/// A short name for the kind of a JSON value, for error messages that must not echo values.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A request line that could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("request line {line} is not valid JSON: {reason}")]
    MalformedJson { line: u64, reason: String },
    #[error("request line {line} is {kind}, not a JSON object")]
    NotAnObject { line: u64, kind: &'static str },
    #[error("request line {line} has an invalid {request:?} request: {reason}")]
    InvalidRequest { line: u64, request: &'static str, reason: String },
    #[error("request line {line} is not a known request: expected exactly one of \"spec\", \"discover\", \"validate\", \"apply\", \"open\" or \"acknowledge\", got {keys}")]
    UnknownRequest { line: u64, keys: String },
    #[error("request line {line} is longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong { line: u64 },
    #[error("request line {line} is not valid UTF-8")]
    NotUtf8 { line: u64 },
    #[error("reading requests from stdin failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Parse one request line. Blank lines are skipped by the caller.
pub fn parse_request(line_number: u64, line: &[u8]) -> Result<Request, ProtocolError> {
    let line_text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8 { line: line_number })?;
    let value: Value = serde_json::from_str(line_text)
        .map_err(|err| ProtocolError::MalformedJson { line: line_number, reason: err.to_string() })?;
    let Value::Object(object) = &value else {
        return Err(ProtocolError::NotAnObject { line: line_number, kind: json_kind(&value) });
    };
    const KNOWN: [&str; 6] = ["spec", "discover", "validate", "apply", "open", "acknowledge"];
    let present: Vec<&str> = KNOWN.iter().copied().filter(|k| object.get(*k).is_some_and(|v| !v.is_null())).collect();
    if present.len() != 1 {
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let keys = if keys.is_empty() {
            "an empty object".to_string()
        } else {
            format!("keys {}", keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "))
        };
        return Err(ProtocolError::UnknownRequest { line: line_number, keys });
    }
    let request = present[0];
    let raw: RawRequest = serde_json::from_value(value).map_err(|err| ProtocolError::InvalidRequest {
        line: line_number,
        request: KNOWN.iter().copied().find(|k| *k == request).unwrap_or("request"),
        reason: err.to_string(),
    })?;
    Ok(match raw {
        RawRequest { spec: Some(_), .. } => Request::Spec,
        RawRequest { discover: Some(d), .. } => Request::Discover(d),
        RawRequest { validate: Some(v), .. } => Request::Validate(v),
        RawRequest { apply: Some(a), .. } => Request::Apply(a),
        RawRequest { open: Some(o), .. } => Request::Open(Box::new(o)),
        RawRequest { acknowledge: Some(a), .. } => Request::Acknowledge(a),
        _ => return Err(ProtocolError::UnknownRequest { line: line_number, keys: request.to_string() }),
    })
}

/// Reads newline-delimited requests, skipping blank lines, with a bound on line length.
pub struct RequestReader<R> {
    input: R,
    line_number: u64,
    buffer: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> RequestReader<R> {
    pub fn new(input: R) -> Self {
        RequestReader { input, line_number: 0, buffer: Vec::new() }
    }

    /// The next request, or `None` at end of input.
    pub async fn next(&mut self) -> Result<Option<Request>, ProtocolError> {
        loop {
            self.buffer.clear();
            self.line_number += 1;
            // Read in pieces so an endless line without a newline cannot exhaust memory.
            loop {
                let available = self.input.fill_buf().await?;
                if available.is_empty() {
                    break;
                }
                let (taken, done) = match available.iter().position(|b| *b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                if self.buffer.len() + taken > MAX_REQUEST_BYTES {
                    return Err(ProtocolError::TooLong { line: self.line_number });
                }
                self.buffer.extend_from_slice(&available[..taken]);
                self.input.consume(taken);
                if done {
                    break;
                }
            }
            if self.buffer.is_empty() {
                return Ok(None);
            }
            let line = self.buffer.trim_ascii();
            if line.is_empty() {
                continue;
            }
            return parse_request(self.line_number, line).map(Some);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_leniently_with_unknown_fields_and_string_numbers() {
        let req = parse_request(1, br#"{"acknowledge":{"checkpoints":"3","future":1}}"#).unwrap();
        assert!(matches!(req, Request::Acknowledge(Acknowledge { checkpoints: 3 })));
        let req = parse_request(
            1,
            br#"{"open":{"capture":{"bindings":[{"resource_config":{"stream":"t"},"stateKey":"k"}]}}}"#,
        )
        .unwrap();
        let Request::Open(open) = req else { panic!("expected open") };
        assert_eq!(open.capture.bindings[0].state_key, "k");
        assert_eq!(open.capture.bindings[0].resource_config["stream"], "t");
        assert!(open.state.is_null());
    }

    #[test]
    fn acknowledgements_count_zero_as_none_and_only_an_absent_count_as_one() {
        let count = |line: &str| match parse_request(1, line.as_bytes()).unwrap() {
            Request::Acknowledge(ack) => ack.checkpoints,
            other => panic!("expected acknowledge, got {other:?}"),
        };
        assert_eq!(count(r#"{"acknowledge":{"checkpoints":0}}"#), 0);
        assert_eq!(count(r#"{"acknowledge":{"checkpoints":"0"}}"#), 0);
        assert_eq!(count(r#"{"acknowledge":{}}"#), 1);
        assert_eq!(count(r#"{"acknowledge":{"checkpoints":null}}"#), 1);
        assert_eq!(count(r#"{"acknowledge":{"checkpoints":2}}"#), 2);
        let err = parse_request(1, br#"{"acknowledge":{"checkpoints":true}}"#).unwrap_err().to_string();
        assert!(err.contains("expected a 32-bit unsigned integer, got a boolean"), "{err}");
    }

    #[test]
    fn garbage_and_unknown_requests_are_named_errors() {
        let err = parse_request(4, b"not json").unwrap_err().to_string();
        assert!(err.starts_with("request line 4 is not valid JSON"), "{err}");
        let err = parse_request(1, br#"{"frobnicate":{}}"#).unwrap_err().to_string();
        assert!(err.contains("\"frobnicate\""), "{err}");
        let err = parse_request(1, br#"[1]"#).unwrap_err().to_string();
        assert!(err.contains("is an array, not a JSON object"), "{err}");
        let err = parse_request(1, br#"{"spec":{},"discover":{}}"#).unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
        let err = parse_request(1, br#"{"acknowledge":{"checkpoints":-1}}"#).unwrap_err().to_string();
        assert!(err.contains("acknowledge"), "{err}");
    }

    #[tokio::test]
    async fn reader_skips_blank_lines_and_ends_at_eof() {
        let input: &[u8] = b"\n{\"spec\":{}}\n\n{\"spec\":{\"connectorType\":\"IMAGE\"}}";
        let mut reader = RequestReader::new(input);
        assert!(matches!(reader.next().await.unwrap(), Some(Request::Spec)));
        assert!(matches!(reader.next().await.unwrap(), Some(Request::Spec)));
        assert!(reader.next().await.unwrap().is_none());
    }
}
