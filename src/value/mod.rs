//! PostgreSQL values and their JSON form.
//!
//! Schema and value must agree, so both live here: [`PgType`] is a column type resolved
//! from the catalog (enough to pick an encoding), the schema module maps a `PgType` to the
//! JSON Schema that discovery publishes, and the encode module turns the type's PostgreSQL
//! *text output* into the JSON value that schema promises. Backfill and replication both
//! feed text (replication's pgoutput tuples are text; backfill casts columns to `text`), so
//! there is exactly one encoder and one set of rules, documented in `docs/types.md`. The
//! one exception is a handful of fixed-width built-in types (integers, floats, `bool`,
//! `date`, timestamps, `uuid`), which backfill reads in their binary send form: the
//! `binary` module turns those into exactly the JSON their text would give.
//!
//! Everything in this module is pure: no IO, no logging.
//!
//! # How schema and value are kept in agreement
//!
//! ```text
//!   PgType ──► kind::classify ──► Kind ──┬─► schema::column_schema   (discovery)
//!   (domains unwrapped here, once)       └─► encode::encode_value    (backfill + replication)
//! ```
//!
//! Both sides match on the same `kind::Kind`, so a type cannot get a schema from one
//! table and an encoding from another. Every encoding is a single forward pass that
//! appends to the caller's buffer: no intermediate `serde_json::Value`, no quadratic
//! re-scans, so a 100 MB value costs about 100 MB of output and one pass over the input.
//!
//! # Session settings the encoder relies on
//!
//! The text it parses is what a session pinned to `DateStyle=ISO, MDY`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex`,
//! `client_encoding=UTF8` and `lc_monetary=C` prints. Where the output of a type's own
//! output function and of a `::text` cast differ (`bool` prints `t` but casts to `true`;
//! `char(n)` casts with its padding trimmed; `inet` casts with a forced `/32`), the
//! encoder accepts both and produces the output-function form, so backfill and
//! replication agree.
//!
//! # Layout
//! - `formats`: [`ValueFormats`], this connector's value formats or the Go connector's,
//!   one switch per difference, and how a capture resolves them.
//! - `kind`: [`PgType`] and the formats → the encoding family shared by schema and value.
//! - `go_forms`: the Go connector's scalar forms (interval, numeric zero, inet).
//! - `schema`: [`column_schema`], [`source_type_name`].
//! - `encode`: [`encode_value`], [`encode_key_value`] and the scalar encoders.
//! - `datetime`: ISO dates, timestamps and times → RFC 3339.
//! - `binary`: the binary send form of a few fixed-width types (backfill reads them so) →
//!   the same JSON as their text.
//! - `array`: array literals, flattened.
//! - `composite`: row literals → objects.
//! - `range`: ranges and multiranges → strings, with date and time bounds rewritten.
//! - `extension`: hstore and pgvector.
//! - `json_text`: `json`/`jsonb` text, checked and compacted, lone surrogates repaired.
//! - `error`: [`ValueError`].

mod array;
mod binary;
mod composite;
mod datetime;
mod encode;
mod error;
mod extension;
mod formats;
mod go_forms;
mod json_text;
mod kind;
mod range;
mod schema;

pub use array::array_delimiter_known;
pub use binary::BinaryCodec;
pub use encode::{
    encode_key_value, encode_key_value_with, encode_value, encode_value_with, ColumnCodec, ColumnEncoder,
};
pub use error::{ValueError, ValueErrorKind};
pub use formats::{StateFormats, ValueFormats, GO_VALUE_FORMATS};
pub use kind::{is_text_like_key, type_from_typname};
pub use schema::{column_schema, source_type_name};

/// A column type resolved from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgType {
    /// A built-in scalar type, by its `pg_type.typname` (e.g. `int4`, `timestamptz`,
    /// `varchar`). `typmod` is the attribute's type modifier (`-1` when none), used for
    /// lengths of `varchar(n)`/`bpchar(n)`/`bit(n)`.
    Builtin { name: String, typmod: i32 },
    /// An enum type with its labels in sort order.
    Enum { name: String, labels: Vec<String> },
    /// A domain, resolved to its base type. `not_null` is the domain's own NOT NULL.
    Domain { name: String, base: Box<PgType>, not_null: bool },
    /// An array of `element` (PostgreSQL arrays of any dimension).
    Array { element: Box<PgType> },
    /// A range type over `subtype` (e.g. `int4range`, `tstzrange`).
    Range { name: String, subtype: Box<PgType> },
    /// A multirange type whose ranges are over `subtype`.
    Multirange { name: String, subtype: Box<PgType> },
    /// A composite (row) type with its attributes in order.
    Composite { name: String, fields: Vec<(String, PgType)> },
    /// A well-known extension type, by name: `citext`, `hstore`, `ltree`, `lquery`,
    /// `geometry`, `geography`, `vector`, `halfvec`, `sparsevec`.
    Extension { name: String },
    /// Anything else. Encoded as its text output; schema is the permissive catch-all.
    Unknown { name: String },
}

impl PgType {
    /// The type's own name as PostgreSQL spells it, for messages: `int4`, `mood`,
    /// `int4[]`. Unlike [`source_type_name`], a domain is named after itself.
    pub fn display_name(&self) -> String {
        match self {
            PgType::Builtin { name, .. }
            | PgType::Enum { name, .. }
            | PgType::Domain { name, .. }
            | PgType::Range { name, .. }
            | PgType::Multirange { name, .. }
            | PgType::Composite { name, .. }
            | PgType::Extension { name }
            | PgType::Unknown { name } => name.clone(),
            PgType::Array { element } => format!("{}[]", element.display_name()),
        }
    }
}

impl std::fmt::Display for PgType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display_name())
    }
}

#[cfg(test)]
pub(crate) mod tests;
