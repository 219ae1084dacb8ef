//! `advanced.feature_flags`: the Go connector's switches, parsed in one place.
//!
//! The text is a comma-separated list of names; `no_<name>` turns a flag off, blanks are
//! ignored, and when a flag is named twice the later mention wins (the Go connector folds
//! the list into a map in order). Two flags carry a value in their name,
//! `initial_backfill_cursor=<LSN>` and `force_reset_cursor=<LSN>`. Flags this connector does
//! not know are kept in [`FeatureFlags::unknown`] so the caller can warn about them: Estuary
//! support adds flags to configurations over time, and a flag meant for a newer version must
//! not stop a capture.
//!
//! Every flag has the Go connector's default, and every flag of the Go connector is applied
//! (docs/setup.md lists what each one does); the two valued ones choose where streaming
//! starts (`capture::open`). The flags that choose value formats (Go's
//! `date_as_date`, `time_as_time`, `flatten_arrays`, `multidimensional_arrays`, and this
//! connector's per-difference flags and `go_value_formats`) are resolved with the capture's
//! state by [`crate::value::ValueFormats::resolve`].

use std::collections::BTreeMap;

use crate::lsn::Lsn;

/// The flags, with the Go connector's defaults for the ones not mentioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFlags {
    /// Emit each binding's discovered schema as a `SourcedSchema` response (Go: on).
    pub emit_sourced_schemas: bool,
    /// Discovered collection schemas carry `x-infer-schema: true` (Go: on).
    pub use_schema_inference: bool,
    /// `date` columns are `YYYY-MM-DD` strings, not RFC 3339 timestamps (Go: on).
    pub date_as_date: bool,
    /// `time` columns are `format: time` strings, not microseconds since midnight (Go: on).
    pub time_as_time: bool,
    /// Arrays are their elements in storage order, not `{dimensions, elements}` (Go: on).
    pub flatten_arrays: bool,
    /// Arrays keep their nesting, with an untyped `type: array` schema (Go: off).
    pub multidimensional_arrays: bool,
    /// The capture creates its replication slot, and may replace one it owns (Go: on).
    pub create_replication_slot: bool,
    /// No prerequisite checks at all, server-wide or per table (Go: off).
    pub skip_prerequisites: bool,
    /// No per-table prerequisite checks (Go: off; implied by `skip_prerequisites`).
    pub skip_table_prerequisites: bool,
    /// Start position of a capture that resets its cursor for a backfill.
    pub initial_backfill_cursor: Option<Lsn>,
    /// Replace the checkpointed cursor with this position.
    pub force_reset_cursor: Option<Lsn>,
    /// The flags as written, folded (later mentions win), valued flags under their full
    /// `name=value` text: what the configuration asked for explicitly.
    pub explicit: BTreeMap<String, bool>,
    /// Names that are not flags of the Go connector (warned about, otherwise ignored).
    pub unknown: Vec<String>,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        FeatureFlags {
            emit_sourced_schemas: true,
            use_schema_inference: true,
            date_as_date: true,
            time_as_time: true,
            flatten_arrays: true,
            multidimensional_arrays: false,
            create_replication_slot: true,
            skip_prerequisites: false,
            skip_table_prerequisites: false,
            initial_backfill_cursor: None,
            force_reset_cursor: None,
            explicit: BTreeMap::new(),
            unknown: Vec::new(),
        }
    }
}

/// The flags that carry a value after `=`.
const VALUED_FLAGS: [&str; 2] = ["initial_backfill_cursor", "force_reset_cursor"];

impl FeatureFlags {
    /// Parse the `advanced.feature_flags` text. Fails only on a malformed value of a known
    /// valued flag (an LSN that is not `X/Y`), naming the flag.
    pub fn parse(text: &str) -> Result<FeatureFlags, String> {
        let mut flags = FeatureFlags::default();
        for mention in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (name, on) = match mention.strip_prefix("no_") {
                Some(rest) => (rest, false),
                None => (mention, true),
            };
            if name.is_empty() {
                continue;
            }
            flags.explicit.insert(name.to_string(), on);
        }
        for (name, on) in &flags.explicit {
            let on = *on;
            if let Some((flag, value)) = name.split_once('=') {
                if !VALUED_FLAGS.contains(&flag) {
                    flags.unknown.push(name.clone());
                    continue;
                }
                if !on {
                    // `no_initial_backfill_cursor=X` switches that exact setting off.
                    continue;
                }
                let lsn: Lsn = value.trim().parse().map_err(|_| {
                    format!("{flag}={value:?} does not hold a WAL position: write it as {flag}=<X/Y>, like {flag}=16/B374D848")
                })?;
                match flag {
                    "initial_backfill_cursor" => flags.initial_backfill_cursor = Some(lsn),
                    _ => flags.force_reset_cursor = Some(lsn),
                }
                continue;
            }
            let slot = match name.as_str() {
                "emit_sourced_schemas" => &mut flags.emit_sourced_schemas,
                "use_schema_inference" => &mut flags.use_schema_inference,
                "date_as_date" => &mut flags.date_as_date,
                "time_as_time" => &mut flags.time_as_time,
                "flatten_arrays" => &mut flags.flatten_arrays,
                "multidimensional_arrays" => &mut flags.multidimensional_arrays,
                "create_replication_slot" => &mut flags.create_replication_slot,
                "skip_prerequisites" => &mut flags.skip_prerequisites,
                "skip_table_prerequisites" => &mut flags.skip_table_prerequisites,
                // Value-format flags: read from `explicit` by `ValueFormats::resolve`.
                known if crate::value::ValueFormats::is_flag(known) => continue,
                _ => {
                    flags.unknown.push(name.clone());
                    continue;
                }
            };
            *slot = on;
        }
        Ok(flags)
    }

    /// Whether per-table prerequisite checks are skipped (`skip_prerequisites` implies it).
    pub fn skips_table_prerequisites(&self) -> bool {
        self.skip_prerequisites || self.skip_table_prerequisites
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_go_connectors() {
        let flags = FeatureFlags::parse("").unwrap();
        assert_eq!(flags, FeatureFlags::default());
        assert!(flags.emit_sourced_schemas && flags.use_schema_inference && flags.date_as_date);
        assert!(flags.time_as_time && flags.flatten_arrays && !flags.multidimensional_arrays);
        assert!(flags.create_replication_slot && !flags.skip_prerequisites && !flags.skip_table_prerequisites);
    }

    #[test]
    fn no_prefix_later_mentions_and_blanks() {
        let flags = FeatureFlags::parse(" no_create_replication_slot, ,skip_table_prerequisites,no_,,").unwrap();
        assert!(!flags.create_replication_slot);
        assert!(flags.skip_table_prerequisites && flags.skips_table_prerequisites());
        assert!(flags.unknown.is_empty(), "{:?}", flags.unknown);
        let flags = FeatureFlags::parse("no_create_replication_slot,create_replication_slot").unwrap();
        assert!(flags.create_replication_slot);
        let flags = FeatureFlags::parse("skip_prerequisites").unwrap();
        assert!(flags.skips_table_prerequisites());
    }

    #[test]
    fn unknown_flags_are_kept_for_a_warning() {
        let flags = FeatureFlags::parse("frobnicate,no_wibble,date_as_date,other=3").unwrap();
        assert_eq!(flags.unknown, ["frobnicate", "other=3", "wibble"]);
        assert!(flags.date_as_date);
    }

    #[test]
    fn valued_flags_hold_wal_positions() {
        let flags = FeatureFlags::parse("initial_backfill_cursor=16/B374D848,force_reset_cursor=0/10").unwrap();
        assert_eq!(flags.initial_backfill_cursor, Some("16/B374D848".parse().unwrap()));
        assert_eq!(flags.force_reset_cursor, Some(Lsn(0x10)));
        let off = FeatureFlags::parse("no_force_reset_cursor=0/10").unwrap();
        assert_eq!(off.force_reset_cursor, None);
        let err = FeatureFlags::parse("force_reset_cursor=yesterday").unwrap_err();
        assert!(err.starts_with("force_reset_cursor=\"yesterday\" does not hold a WAL position"), "{err}");
    }

    #[test]
    fn value_format_flags_are_applied_not_refused_nor_unknown() {
        let flags = FeatureFlags::parse(
            "no_date_as_date,no_time_as_time,no_flatten_arrays,multidimensional_arrays,go_value_formats,no_iso_intervals",
        )
        .unwrap();
        assert!(!flags.date_as_date && !flags.time_as_time && !flags.flatten_arrays && flags.multidimensional_arrays);
        assert!(flags.unknown.is_empty(), "{:?}", flags.unknown);
        assert_eq!(flags.explicit.get("go_value_formats"), Some(&true));
        assert_eq!(flags.explicit.get("iso_intervals"), Some(&false));
    }
}
