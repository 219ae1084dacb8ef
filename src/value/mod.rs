//! PostgreSQL values and their JSON form.
//!
//! Schema and value must agree, so both live here: [`PgType`] is a column type resolved
//! from the catalog (enough to pick an encoding), the schema module maps a `PgType` to the
//! JSON Schema that discovery publishes, and the encode module turns the type's PostgreSQL
//! *text output* into the JSON value that schema promises. Backfill and replication both
//! feed text (replication's pgoutput tuples are text; backfill casts columns to `text`), so
//! there is exactly one encoder and one set of rules, documented in `docs/types.md`.
//!
//! Everything in this module is pure: no IO, no logging.

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
