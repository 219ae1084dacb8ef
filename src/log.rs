//! JSON-lines logging on stderr.
//!
//! The Flow runtime parses every stderr line as a structured log when it is a JSON object
//! (`ts`, `level`, `msg`, `fields`), and shows the *last* line as the task's error when the
//! connector exits non-zero. So every line we write is one compact JSON object, and the
//! final error is written through [`log_fatal`] as a `level: error` line. Field maps are
//! sorted so that log output is deterministic for a given event.
//!
//! The level comes from `LOG_LEVEL` (`error|warn|info|debug|trace`, default `info`) and
//! applies to this crate only; dependencies log at `warn` and above.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Install the stderr JSON logger. Safe to call once per process.
pub fn init() {
    let level = std::env::var("LOG_LEVEL").unwrap_or_default();
    let ours = match level.trim().to_ascii_lowercase().as_str() {
        "error" => Level::ERROR,
        "warn" | "warning" => Level::WARN,
        "debug" => Level::DEBUG,
        "trace" => Level::TRACE,
        _ => Level::INFO,
    };
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(Level::WARN.min(ours))
        .with_target(env!("CARGO_CRATE_NAME"), ours);
    let _ = tracing_subscriber::registry().with(JsonLines.with_filter(filter)).try_init();
}

/// The final line of a run that failed: the error's message and hint, and its class
/// (transient or definite, see [`crate::error`]) in the fields.
pub fn log_error(err: &crate::error::Error) {
    let fields = BTreeMap::from([("error_class", serde_json::Value::from(err.class().as_str()))]);
    log_fatal(&err.to_user_text(), fields);
}

/// A panic is a bug; it still ends with one JSON error line and exit code 1 (the runtime
/// shows the last stderr line), never a stack trace, and never a task dying silently.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_string());
        log_fatal(
            &format!("internal error: {payload}{location}\nHINT: this is a bug in the connector; please report it with this message"),
            BTreeMap::new(),
        );
        std::process::exit(1);
    }));
}

/// Write the final error line and nothing else; used right before exiting with code 1.
pub fn log_fatal(message: &str, fields: BTreeMap<&'static str, serde_json::Value>) {
    write_line("error", message, fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
}

struct JsonLines;

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = FieldCollector::default();
        event.record(&mut visitor);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warn",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write_line(level, &visitor.message, visitor.fields);
    }
}

#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: BTreeMap<String, serde_json::Value>,
}

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_string(), serde_json::Value::String(text));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.insert(field.name().to_string(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), value.into());
    }
}

fn write_line(level: &str, message: &str, fields: BTreeMap<String, serde_json::Value>) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        ts: String,
        level: &'a str,
        msg: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, serde_json::Value>,
    }
    let line = Line { ts: now_rfc3339(), level, msg: message, fields };
    let mut buf = serde_json::to_vec(&line).unwrap_or_else(|_| b"{\"level\":\"error\"}".to_vec());
    buf.push(b'\n');
    // One write call per line keeps lines whole when several threads log at once.
    let _ = std::io::stderr().lock().write_all(&buf);
}

/// Current UTC time as RFC 3339 with milliseconds, without a date-time crate.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format_unix_millis(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
}

/// Format milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian).
pub fn format_unix_millis(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Log a status line that the Flow UI shows as the task's current status.
pub fn status(message: &str) {
    tracing::info!(eventType = "connectorStatus", "{}", message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_millis_format_as_rfc3339_utc() {
        assert_eq!(format_unix_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_unix_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_unix_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
