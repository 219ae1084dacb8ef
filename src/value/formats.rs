//! Which value formats a capture uses: this connector's improved ones, or the Go
//! connector's, one switch per difference (the table in docs/types.md).
//!
//! A capture moved here from the Go connector must keep producing the values its
//! collections already hold, and a new capture should get the better formats. So every
//! difference is a boolean named after the improvement (true = this connector's form,
//! false = Go's), each with a feature flag of the same name (`<name>` on, `no_<name>`
//! off), plus the umbrella flag [`GO_VALUE_FORMATS`] that turns all of them to Go's form.
//! The Go connector's own value flags (`date_as_date`, `time_as_time`, `flatten_arrays`,
//! `multidimensional_arrays`) are carried here too, with Go's meaning and defaults.
//!
//! Which formats a capture uses is resolved by [`ValueFormats::resolve`]: an explicit
//! per-difference flag wins, then the umbrella flag, then the capture's state (the list of
//! improvements it started with, or "written by the Go connector"), then the defaults.
//! This module is pure; the capture owns reading and writing the state's marker.
//!
//! Not switchable, and why:
//! - `timestamptz` is always written in UTC (`Z`). Go wrote the server's `TimeZone`
//!   offset; the instant is the same and reproducing it would tie values to a server
//!   setting.
//! - `time` `24:00:00`: Go had no defined output.
//! - Values over 8 MiB are never truncated: Go's truncation silently lost data, and a
//!   capture that never truncates produces a superset of what Go's collections validate.
//! - JSON is compacted and its unreadable numbers and over-deep nesting are made safe:
//!   Go's raw JSON was the same value (whitespace) or failed the task.

use std::collections::BTreeMap;

/// The umbrella feature flag: every difference in the Go connector's form.
pub const GO_VALUE_FORMATS: &str = "go_value_formats";

/// One switch per difference from the Go connector (true = this connector's form), plus
/// the Go connector's own value flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueFormats {
    /// `interval` as ISO 8601 (`P1Y2M3D`); Go: pgx's text (`14 mon 3 day`, ` 05:30:00`).
    pub iso_intervals: bool,
    /// `inet` as PostgreSQL prints it (`192.168.1.1`); Go: always with a prefix (`/32`).
    pub inet_as_printed: bool,
    /// `daterange` bounds are dates; Go: timestamps at midnight UTC.
    pub date_ranges_as_dates: bool,
    /// Dates and timestamps after year 9999 saturate to the `9999-12-31` sentinel; Go:
    /// every out-of-range year becomes `0000-01-01`.
    pub saturating_dates: bool,
    /// Range bounds that are infinite or out of `format: date-time` range are written
    /// exactly (`infinity`, `+12345-…`); Go: its value sentinels.
    pub exact_range_bounds: bool,
    /// Composites are objects of typed fields; Go: the row literal, catch-all schema.
    pub typed_composites: bool,
    /// `hstore` is an object of strings; Go: its text, catch-all schema.
    pub typed_hstore: bool,
    /// pgvector `vector`/`halfvec` are arrays of numbers; Go: text, catch-all schema.
    pub typed_vectors: bool,
    /// Arrays of enums, composites, ranges and other user types are arrays of typed
    /// elements; Go: the array literal as text, catch-all schema.
    pub typed_user_arrays: bool,
    /// Enum schemas list their labels; Go: `type: string` only.
    pub enum_labels: bool,
    /// `name`, `"char"`, `xid`, `pg_lsn`, `tid`, … have a `type: string` schema; Go: the
    /// catch-all schema (values are the same text).
    pub string_schemas: bool,
    /// `numeric` keeps the server's digits (`0.000`); Go: zero is `0`.
    pub numeric_scale_kept: bool,
    /// Go's `date_as_date` (default on): `date` as `YYYY-MM-DD`; off: an RFC 3339
    /// timestamp at midnight UTC.
    pub date_as_date: bool,
    /// Go's `time_as_time` (default on): `time` as `HH:MM:SS[.f]Z`; off: microseconds
    /// since midnight.
    pub time_as_time: bool,
    /// Go's `flatten_arrays` (default on): arrays are their elements; off: an object
    /// `{dimensions, elements}` (unless `multidimensional_arrays`).
    pub flatten_arrays: bool,
    /// Go's `multidimensional_arrays` (default off): arrays keep their nesting.
    pub multidimensional_arrays: bool,
}

/// The field of one switch.
type Field = fn(&mut ValueFormats) -> &mut bool;

/// The improvements, by flag name, with their field: the names written in the state's
/// marker and accepted as feature flags.
const IMPROVEMENTS: [(&str, Field); 12] = [
    ("iso_intervals", |f| &mut f.iso_intervals),
    ("inet_as_printed", |f| &mut f.inet_as_printed),
    ("date_ranges_as_dates", |f| &mut f.date_ranges_as_dates),
    ("saturating_dates", |f| &mut f.saturating_dates),
    ("exact_range_bounds", |f| &mut f.exact_range_bounds),
    ("typed_composites", |f| &mut f.typed_composites),
    ("typed_hstore", |f| &mut f.typed_hstore),
    ("typed_vectors", |f| &mut f.typed_vectors),
    ("typed_user_arrays", |f| &mut f.typed_user_arrays),
    ("enum_labels", |f| &mut f.enum_labels),
    ("string_schemas", |f| &mut f.string_schemas),
    ("numeric_scale_kept", |f| &mut f.numeric_scale_kept),
];

/// The Go connector's own value flags, with their defaults (the same in both modes).
const GO_FLAGS: [(&str, bool, Field); 4] = [
    ("date_as_date", true, |f| &mut f.date_as_date),
    ("time_as_time", true, |f| &mut f.time_as_time),
    ("flatten_arrays", true, |f| &mut f.flatten_arrays),
    ("multidimensional_arrays", false, |f| &mut f.multidimensional_arrays),
];

/// What the capture's state says about the formats it was started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateFormats {
    /// An empty state: a new capture.
    New,
    /// A non-empty state without a marker: written by the Go connector.
    Go,
    /// The marker: the improvements in effect when the capture started.
    Marked(Vec<String>),
}

impl Default for ValueFormats {
    /// Every improvement, Go's defaults for its own flags: a new capture.
    fn default() -> Self {
        ValueFormats::improved()
    }
}

impl ValueFormats {
    /// Whether backfills may read fixed-width types in binary ([`crate::value::BinaryCodec`]):
    /// its encodings are this connector's own (dates saturate, `date` is a date), so in
    /// formats that change those the backfill reads text, whose encoder follows the formats.
    pub fn binary_reads_apply(&self) -> bool {
        self.saturating_dates && self.date_as_date
    }

    /// Every improvement on.
    pub fn improved() -> Self {
        Self::with_improvements(true)
    }

    /// Every difference in the Go connector's form (and Go's defaults for its flags).
    pub fn go() -> Self {
        Self::with_improvements(false)
    }

    fn with_improvements(on: bool) -> Self {
        let mut formats = ValueFormats {
            iso_intervals: on,
            inet_as_printed: on,
            date_ranges_as_dates: on,
            saturating_dates: on,
            exact_range_bounds: on,
            typed_composites: on,
            typed_hstore: on,
            typed_vectors: on,
            typed_user_arrays: on,
            enum_labels: on,
            string_schemas: on,
            numeric_scale_kept: on,
            date_as_date: true,
            time_as_time: true,
            flatten_arrays: true,
            multidimensional_arrays: false,
        };
        for (_, default, field) in GO_FLAGS {
            *field(&mut formats) = default;
        }
        formats
    }

    /// Whether `name` is a flag this module decides (an improvement, a Go value flag or
    /// the umbrella).
    pub fn is_flag(name: &str) -> bool {
        name == GO_VALUE_FORMATS
            || IMPROVEMENTS.iter().any(|(n, _)| *n == name)
            || GO_FLAGS.iter().any(|(n, _, _)| *n == name)
    }

    /// The names of the improvements in effect, in a fixed order: the state's marker.
    pub fn improvement_names(&self) -> Vec<String> {
        let mut copy = *self;
        IMPROVEMENTS.iter().filter(|(_, field)| *field(&mut copy)).map(|(name, _)| (*name).to_string()).collect()
    }

    /// The formats of a capture: explicit per-difference flags (`explicit`, flag name →
    /// on) win, then the umbrella `go_value_formats`, then what the state says, then every
    /// improvement. A marker names the improvements in effect, so one it does not name
    /// (added by a later release) stays off. Go's own value flags take their explicit
    /// setting or Go's default.
    pub fn resolve(explicit: &BTreeMap<String, bool>, state: &StateFormats) -> ValueFormats {
        let mut formats = match (explicit.get(GO_VALUE_FORMATS), state) {
            (Some(true), _) => ValueFormats::go(),
            (Some(false), _) | (None, StateFormats::New) => ValueFormats::improved(),
            (None, StateFormats::Go) => ValueFormats::go(),
            (None, StateFormats::Marked(names)) => {
                let mut formats = ValueFormats::go();
                for (name, field) in IMPROVEMENTS {
                    *field(&mut formats) = names.iter().any(|n| n == name);
                }
                formats
            }
        };
        for (name, field) in IMPROVEMENTS {
            if let Some(on) = explicit.get(name) {
                *field(&mut formats) = *on;
            }
        }
        for (name, _, field) in GO_FLAGS {
            if let Some(on) = explicit.get(name) {
                *field(&mut formats) = *on;
            }
        }
        formats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
        pairs.iter().map(|(n, on)| ((*n).to_string(), *on)).collect()
    }

    #[test]
    fn new_captures_improve_go_states_keep_go_and_markers_are_kept_exactly() {
        assert_eq!(ValueFormats::resolve(&flags(&[]), &StateFormats::New), ValueFormats::improved());
        assert_eq!(ValueFormats::resolve(&flags(&[]), &StateFormats::Go), ValueFormats::go());
        let marked = StateFormats::Marked(vec!["inet_as_printed".into(), "some_future_one".into()]);
        let formats = ValueFormats::resolve(&flags(&[]), &marked);
        assert!(formats.inet_as_printed && !formats.iso_intervals && !formats.typed_composites);
        assert_eq!(formats.improvement_names(), ["inet_as_printed"]);
        let all = StateFormats::Marked(ValueFormats::improved().improvement_names());
        assert_eq!(ValueFormats::resolve(&flags(&[]), &all), ValueFormats::improved());
        assert_eq!(ValueFormats::resolve(&flags(&[]), &StateFormats::Marked(vec![])), ValueFormats::go());
    }

    #[test]
    fn explicit_flags_win_over_the_umbrella_and_the_state_both_ways() {
        let go = ValueFormats::resolve(&flags(&[("go_value_formats", true)]), &StateFormats::New);
        assert_eq!(go, ValueFormats::go());
        let improved = ValueFormats::resolve(&flags(&[("go_value_formats", false)]), &StateFormats::Go);
        assert_eq!(improved, ValueFormats::improved());
        let one =
            ValueFormats::resolve(&flags(&[("go_value_formats", true), ("iso_intervals", true)]), &StateFormats::New);
        assert!(one.iso_intervals && !one.inet_as_printed);
        let off = ValueFormats::resolve(&flags(&[("iso_intervals", false)]), &StateFormats::New);
        assert!(!off.iso_intervals && off.inet_as_printed);
        let on = ValueFormats::resolve(&flags(&[("typed_composites", true)]), &StateFormats::Go);
        assert!(on.typed_composites && !on.typed_hstore);
        let legacy = ValueFormats::resolve(
            &flags(&[("date_as_date", false), ("multidimensional_arrays", true)]),
            &StateFormats::Go,
        );
        assert!(!legacy.date_as_date && legacy.multidimensional_arrays && legacy.time_as_time && legacy.flatten_arrays);
    }

    #[test]
    fn every_name_is_a_flag_and_go_flags_keep_go_defaults_in_both_modes() {
        for name in ValueFormats::improved().improvement_names() {
            assert!(ValueFormats::is_flag(&name), "{name}");
        }
        assert_eq!(ValueFormats::improved().improvement_names().len(), IMPROVEMENTS.len());
        assert!(ValueFormats::go().improvement_names().is_empty());
        for formats in [ValueFormats::go(), ValueFormats::improved()] {
            assert!(formats.date_as_date && formats.time_as_time && formats.flatten_arrays);
            assert!(!formats.multidimensional_arrays);
        }
        assert!(ValueFormats::is_flag("go_value_formats") && !ValueFormats::is_flag("frobnicate"));
    }
}
