//! The encoding family of a type: the single decision both the schema and the encoder use.
//!
//! [`classify`] unwraps domains and maps every [`PgType`] to a [`Kind`]. The schema
//! module turns a `Kind` into JSON Schema and the encode module turns a `Kind` plus text
//! into JSON, each with one `match`; adding a type means adding it here first.

use super::{PgType, ValueFormats};

/// How a type's values are encoded, and therefore what its schema says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind<'a> {
    /// `bool`: `true`/`false`.
    Boolean,
    /// `int2`, `int4`, `int8`, `oid`: a JSON number, digits copied.
    Integer,
    /// `numeric`: a string of the exact decimal (`NaN`, `Infinity`, `-Infinity` kept).
    Numeric,
    /// `numeric` in Go's form: as [`Kind::Numeric`], except that zero is `"0"`.
    GoNumeric,
    /// `float4` (`single`) and `float8`: a JSON number, or a string for NaN and infinities.
    Float { single: bool },
    /// A string copied from the text output, with no further constraint.
    Text,
    /// `varchar(n)`: a string of at most `max_length` characters.
    Varchar { max_length: Option<u32> },
    /// `char(n)`: a string of exactly `length` characters (blank padded).
    Bpchar { length: Option<u32> },
    /// `inet`: as its output function prints it (no `/32` on a host address).
    Inet,
    /// `inet` in Go's form: always with its prefix length (`/32`, `/128`).
    GoInet,
    /// `interval` in Go's form (pgx's text: `14 mon 3 day`, ` 05:30:00`, empty for zero).
    GoInterval,
    /// `uuid`: the canonical hyphenated string.
    Uuid,
    /// `bytea`: standard padded base64.
    Bytea,
    /// `json`: the document itself.
    Json,
    /// `jsonb`: the document itself.
    Jsonb,
    /// `date`: `YYYY-MM-DD`; `saturate` picks the sentinel for years after 9999.
    Date { saturate: bool },
    /// `date` as Go without `date_as_date`: an RFC 3339 timestamp at midnight UTC.
    DateAsTimestamp { saturate: bool },
    /// `timestamp`: RFC 3339 in UTC.
    Timestamp { saturate: bool },
    /// `timestamptz`: RFC 3339 in UTC.
    Timestamptz { saturate: bool },
    /// `time`: `HH:MM:SS[.f]Z`.
    Time,
    /// `time` as Go without `time_as_time`: microseconds since midnight.
    TimeMicros,
    /// `timetz`: `HH:MM:SS[.f]±hh:mm` or `Z`.
    Timetz,
    /// An enum: its label.
    Enum { labels: &'a [String] },
    /// An array: the flattened elements (or Go's other shapes, by the formats).
    Array { element: &'a PgType },
    /// A range: its literal, with date and time bounds rewritten.
    Range { subtype: &'a PgType },
    /// A multirange: its literal, with date and time bounds rewritten.
    Multirange { subtype: &'a PgType },
    /// A composite: an object of its fields.
    Composite { fields: &'a [(String, PgType)] },
    /// `hstore`: an object of strings or nulls.
    Hstore,
    /// pgvector `vector`/`halfvec`: an array of numbers.
    Vector,
    /// Anything the encoder has no rule for: its text output as a string, catch-all schema.
    CatchAll { name: &'a str },
}

/// Domains may nest (a domain over a domain); PostgreSQL has no depth limit, but a chain
/// longer than this is certainly a cycle in a hand-built `PgType`.
const DOMAIN_DEPTH_LIMIT: usize = 64;

/// The encoding family of `ty` under `formats`, looking through domains. This is where
/// every difference between this connector's formats and the Go connector's is decided,
/// once for both the schema and the value.
pub(crate) fn classify<'a>(ty: &'a PgType, formats: &ValueFormats) -> Kind<'a> {
    let mut ty = ty;
    for _ in 0..DOMAIN_DEPTH_LIMIT {
        return match ty {
            PgType::Domain { base, .. } => {
                ty = base;
                continue;
            }
            PgType::Builtin { name, typmod } => match builtin_kind(name, *typmod) {
                Some(kind) => go_scalar(kind, name, formats),
                None => Kind::CatchAll { name },
            },
            PgType::Enum { labels, .. } if formats.enum_labels => Kind::Enum { labels },
            PgType::Enum { .. } => Kind::Text,
            PgType::Array { element } if formats.typed_user_arrays || go_array_element_is_typed(element) => {
                Kind::Array { element }
            }
            PgType::Array { .. } => Kind::CatchAll { name: "array" },
            PgType::Range { subtype, .. } => Kind::Range { subtype },
            PgType::Multirange { subtype, .. } => Kind::Multirange { subtype },
            PgType::Composite { fields, .. } if formats.typed_composites => Kind::Composite { fields },
            PgType::Composite { name, .. } => Kind::CatchAll { name },
            PgType::Extension { name } => match extension_kind(name) {
                Some(Kind::Hstore) if !formats.typed_hstore => Kind::CatchAll { name },
                Some(Kind::Vector) if !formats.typed_vectors => Kind::CatchAll { name },
                Some(kind) => kind,
                None => Kind::CatchAll { name },
            },
            PgType::Unknown { name } => Kind::CatchAll { name },
        };
    }
    Kind::CatchAll { name: "domain" }
}

/// A built-in scalar kind adjusted to `formats`: the Go connector's forms where they are
/// switched off.
fn go_scalar<'a>(kind: Kind<'static>, name: &'a str, formats: &ValueFormats) -> Kind<'a> {
    let saturate = formats.saturating_dates;
    match kind {
        Kind::Numeric if !formats.numeric_scale_kept => Kind::GoNumeric,
        Kind::Inet if !formats.inet_as_printed => Kind::GoInet,
        Kind::Text if name == "interval" && !formats.iso_intervals => Kind::GoInterval,
        // The types the Go connector had no schema for (`name`, `"char"`, `xid`, …).
        Kind::Text if !formats.string_schemas && !GO_STRING_TYPES.contains(&name) => Kind::CatchAll { name },
        Kind::Date { .. } if !formats.date_as_date => Kind::DateAsTimestamp { saturate },
        Kind::Date { .. } => Kind::Date { saturate },
        Kind::Timestamp { .. } => Kind::Timestamp { saturate },
        Kind::Timestamptz { .. } => Kind::Timestamptz { saturate },
        Kind::Time if !formats.time_as_time => Kind::TimeMicros,
        other => other,
    }
}

/// The text-like built-ins the Go connector's discovery gave a `type: string` schema.
const GO_STRING_TYPES: [&str; 20] = [
    "text", "xml", "bit", "varbit", "jsonpath", "interval", "money", "point", "line", "lseg", "box", "path", "polygon",
    "circle", "cidr", "macaddr", "macaddr8", "tsvector", "tsquery", "citext",
];

/// Whether the Go connector decoded arrays of `element` element by element: arrays of
/// built-in types and of `citext`, which it registered array codecs for. Arrays of enums,
/// domains, composites, user ranges and other extension types reached it as their text.
fn go_array_element_is_typed(element: &PgType) -> bool {
    match element {
        PgType::Builtin { .. } => true,
        PgType::Extension { name } => name == "citext",
        PgType::Range { name, .. } => {
            matches!(name.as_str(), "int4range" | "int8range" | "numrange" | "tsrange" | "tstzrange" | "daterange")
        }
        _ => false,
    }
}

/// `kind` as a value that borrows nothing from its type, when its encoding needs nothing of
/// the type: every scalar kind. Enums and catch-alls encode as their text, so they become
/// [`Kind::Text`] (their labels and names only matter to the schema). `None` for the
/// nested kinds (arrays, composites, ranges), which need their element types.
pub(crate) fn owned_encoding(kind: Kind<'_>) -> Option<Kind<'static>> {
    Some(match kind {
        Kind::Boolean => Kind::Boolean,
        Kind::Integer => Kind::Integer,
        Kind::Numeric => Kind::Numeric,
        Kind::GoNumeric => Kind::GoNumeric,
        Kind::GoInet => Kind::GoInet,
        Kind::GoInterval => Kind::GoInterval,
        Kind::Float { single } => Kind::Float { single },
        Kind::Text | Kind::Enum { .. } | Kind::CatchAll { .. } => Kind::Text,
        Kind::Varchar { max_length } => Kind::Varchar { max_length },
        Kind::Bpchar { length } => Kind::Bpchar { length },
        Kind::Inet => Kind::Inet,
        Kind::Uuid => Kind::Uuid,
        Kind::Bytea => Kind::Bytea,
        Kind::Json => Kind::Json,
        Kind::Jsonb => Kind::Jsonb,
        Kind::Date { saturate } => Kind::Date { saturate },
        Kind::DateAsTimestamp { saturate } => Kind::DateAsTimestamp { saturate },
        Kind::Timestamp { saturate } => Kind::Timestamp { saturate },
        Kind::Timestamptz { saturate } => Kind::Timestamptz { saturate },
        Kind::Time => Kind::Time,
        Kind::TimeMicros => Kind::TimeMicros,
        Kind::Timetz => Kind::Timetz,
        Kind::Hstore => Kind::Hstore,
        Kind::Vector => Kind::Vector,
        Kind::Array { .. } | Kind::Range { .. } | Kind::Multirange { .. } | Kind::Composite { .. } => return None,
    })
}

/// Whether `ty` is a domain (or a chain of domains) declared NOT NULL.
pub(crate) fn domain_is_not_null(ty: &PgType) -> bool {
    let mut ty = ty;
    for _ in 0..DOMAIN_DEPTH_LIMIT {
        match ty {
            PgType::Domain { not_null: true, .. } => return true,
            PgType::Domain { base, .. } => ty = base,
            _ => return false,
        }
    }
    false
}

/// A length from a character type's `typmod` (`n + 4` for `varchar(n)`, `char(n)`).
fn character_length(typmod: i32) -> Option<u32> {
    u32::try_from(typmod).ok().and_then(|m| m.checked_sub(4))
}

/// The kind of a built-in type, or `None` for a name this encoder has no rule for.
fn builtin_kind(name: &str, typmod: i32) -> Option<Kind<'static>> {
    let kind = match name {
        "bool" => Kind::Boolean,
        "int2" | "int4" | "int8" | "oid" => Kind::Integer,
        "numeric" => Kind::Numeric,
        "float4" => Kind::Float { single: true },
        "float8" => Kind::Float { single: false },
        "varchar" => Kind::Varchar { max_length: character_length(typmod) },
        "bpchar" => Kind::Bpchar { length: character_length(typmod) },
        "inet" => Kind::Inet,
        "uuid" => Kind::Uuid,
        "bytea" => Kind::Bytea,
        "json" => Kind::Json,
        "jsonb" => Kind::Jsonb,
        "date" => Kind::Date { saturate: true },
        "timestamp" => Kind::Timestamp { saturate: true },
        "timestamptz" => Kind::Timestamptz { saturate: true },
        "time" => Kind::Time,
        "timetz" => Kind::Timetz,
        // Strings whose text output is the value: character data, and types whose text
        // form is their only sensible JSON form.
        "text" | "name" | "char" | "xml" | "jsonpath" | "bit" | "varbit" | "interval" | "money" | "point" | "line"
        | "lseg" | "box" | "path" | "polygon" | "circle" | "cidr" | "macaddr" | "macaddr8" | "tsvector" | "tsquery"
        | "pg_lsn" | "xid" | "xid8" | "cid" | "tid" | "txid_snapshot" | "pg_snapshot" | "refcursor" | "regclass"
        | "regcollation" | "regconfig" | "regdictionary" | "regnamespace" | "regoper" | "regoperator" | "regproc"
        | "regprocedure" | "regrole" | "regtype" => Kind::Text,
        _ => return None,
    };
    Some(kind)
}

/// The kind of a well-known extension type, or `None` for a name without a rule.
fn extension_kind(name: &str) -> Option<Kind<'static>> {
    let kind = match name {
        // PostGIS prints geometry and geography as hex EWKB; ltree's types and pgvector's
        // sparse vectors have no JSON structure worth inventing.
        "citext" | "ltree" | "lquery" | "ltxtquery" | "geometry" | "geography" | "sparsevec" => Kind::Text,
        "hstore" => Kind::Hstore,
        "vector" | "halfvec" => Kind::Vector,
        _ => return None,
    };
    Some(kind)
}

/// The [`PgType`] of a column whose type is known by `pg_type.typname` alone: a built-in
/// scalar (`Builtin`), a well-known extension type (`Extension`), or else `Unknown`.
///
/// Arrays, enums, domains, ranges, multiranges and composites need catalog information
/// (element type, labels, base type, subtype, fields) and are not recognized here; an
/// extension type is only recognized by name, so callers should check the type really
/// belongs to the extension (and is not, say, a user's composite called `vector`).
pub fn type_from_typname(typname: &str, typmod: i32) -> PgType {
    if builtin_kind(typname, typmod).is_some() {
        PgType::Builtin { name: typname.to_string(), typmod }
    } else if extension_kind(typname).is_some() {
        PgType::Extension { name: typname.to_string() }
    } else {
        PgType::Unknown { name: typname.to_string() }
    }
}

/// Whether a key column of this type has values whose database order cannot be predicted
/// from the bytes of their encoded key: collation-ordered text (`text`, `varchar`,
/// `bpchar`, `citext`) and enums (ordered by declaration, not by label). A table with such
/// a key column is backfilled without relying on key order matching byte order.
pub fn is_text_like_key(ty: &PgType) -> bool {
    match ty {
        PgType::Domain { .. } => base_of(ty).is_some_and(is_text_like_key),
        PgType::Builtin { name, .. } => matches!(name.as_str(), "text" | "varchar" | "bpchar"),
        PgType::Extension { name } => name == "citext",
        PgType::Enum { .. } => true,
        _ => false,
    }
}

/// The innermost non-domain type below a domain chain.
fn base_of(ty: &PgType) -> Option<&PgType> {
    let mut ty = ty;
    for _ in 0..DOMAIN_DEPTH_LIMIT {
        match ty {
            PgType::Domain { base, .. } => ty = base,
            other => return Some(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str) -> PgType {
        PgType::Builtin { name: name.into(), typmod: -1 }
    }

    #[test]
    fn domains_are_classified_as_their_base_type() {
        let domain = PgType::Domain {
            name: "outer".into(),
            base: Box::new(PgType::Domain { name: "inner".into(), base: Box::new(builtin("int8")), not_null: true }),
            not_null: false,
        };
        assert!(matches!(classify(&domain, &ValueFormats::default()), Kind::Integer));
        assert!(domain_is_not_null(&domain));
        assert!(!domain_is_not_null(&builtin("int8")));
    }

    #[test]
    fn character_lengths_come_from_the_typmod() {
        let varchar = PgType::Builtin { name: "varchar".into(), typmod: 14 };
        assert!(matches!(classify(&varchar, &ValueFormats::default()), Kind::Varchar { max_length: Some(10) }));
        assert!(matches!(classify(&builtin("varchar"), &ValueFormats::default()), Kind::Varchar { max_length: None }));
        let bpchar = PgType::Builtin { name: "bpchar".into(), typmod: 5 };
        assert!(matches!(classify(&bpchar, &ValueFormats::default()), Kind::Bpchar { length: Some(1) }));
    }

    #[test]
    fn typnames_resolve_to_builtins_extensions_or_unknown() {
        assert_eq!(type_from_typname("int4", -1), builtin("int4"));
        assert_eq!(type_from_typname("hstore", -1), PgType::Extension { name: "hstore".into() });
        assert_eq!(type_from_typname("int2vector", -1), PgType::Unknown { name: "int2vector".into() });
    }

    #[test]
    fn text_like_keys_are_collated_strings_and_enums() {
        assert!(is_text_like_key(&builtin("text")));
        assert!(is_text_like_key(&builtin("varchar")));
        assert!(is_text_like_key(&builtin("bpchar")));
        assert!(is_text_like_key(&PgType::Extension { name: "citext".into() }));
        assert!(is_text_like_key(&PgType::Enum { name: "mood".into(), labels: vec![] }));
        let domain = PgType::Domain { name: "d".into(), base: Box::new(builtin("text")), not_null: true };
        assert!(is_text_like_key(&domain));
        assert!(!is_text_like_key(&builtin("int4")));
        assert!(!is_text_like_key(&builtin("uuid")));
        assert!(!is_text_like_key(&builtin("name")));
    }
}
