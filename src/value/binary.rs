//! Binary wire values → JSON, for the fixed-width types whose JSON does not depend on how
//! the value was read.
//!
//! Backfill reads most columns as text (see the module doc of [`super`]); formatting a
//! number or a timestamp as text on the server and parsing it back here is most of a
//! backfilled row's cost for tables of numbers and timestamps. For the types below, the
//! binary send form is a fixed-width integer, float or byte string from which the exact
//! JSON the text path writes can be computed directly:
//!
//! | type | wire | JSON (the same as from the text output) |
//! |---|---|---|
//! | `bool` | 1 byte, 0 or 1 | `true`/`false` |
//! | `int2`/`int4`/`int8` | 2/4/8 bytes, big-endian two's complement | digits |
//! | `oid` | 4 bytes, big-endian unsigned | digits |
//! | `float4`/`float8` | IEEE 754 bits, big-endian | Go's notation ([`write_go_float`]), keys as fixed-notation strings |
//! | `date` | i32 days since 2000-01-01, `i32::MAX`/`MIN` infinite | [`encode_date_days`] |
//! | `timestamp`/`timestamptz` | i64 µs since 2000-01-01, `i64::MAX`/`MIN` infinite | [`encode_timestamp_micros`] |
//! | `uuid` | 16 bytes | lowercase 8-4-4-4-12 hex |
//!
//! Floats are the subtle case. PostgreSQL prints a float with the shortest digits that
//! read back to the same value (`extra_float_digits=3`), so where the text path parses
//! that text (always for `float4` and keys, and for `float8` outside plain decimals) it
//! gets exactly the binary value, and both paths then write it with the same function.
//! Where the text path copies PostgreSQL's `float8` digits, this module computes the same
//! digits with Ryū ([`write_float8`]); `tests/it/binary_values.rs` checks all of it
//! against a real server.
//!
//! Only the built-in types themselves qualify ([`BinaryCodec::for_column`]), checked by
//! their fixed catalog OIDs: domains over them, arrays and every other type stay text.
//! Lengths come from the wire and are never trusted: a cell of another length is an error.
//!
//! Pure: no IO.

use super::datetime::{encode_date_days, encode_timestamp_micros};
use super::encode::{is_plain_decimal, write_float_key, write_go_float};
use super::error::{ValueError, ValueErrorKind};
use super::PgType;

/// A type read in binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
}

impl BinaryKind {
    fn of(name: &str) -> Option<BinaryKind> {
        Some(match name {
            "bool" => BinaryKind::Bool,
            "int2" => BinaryKind::Int2,
            "int4" => BinaryKind::Int4,
            "int8" => BinaryKind::Int8,
            "oid" => BinaryKind::Oid,
            "float4" => BinaryKind::Float4,
            "float8" => BinaryKind::Float8,
            "date" => BinaryKind::Date,
            "timestamp" => BinaryKind::Timestamp,
            "timestamptz" => BinaryKind::Timestamptz,
            "uuid" => BinaryKind::Uuid,
            _ => return None,
        })
    }

    /// The type's OID (fixed for built-in types: `pg_type.dat`).
    fn oid(self) -> u32 {
        match self {
            BinaryKind::Bool => 16,
            BinaryKind::Int8 => 20,
            BinaryKind::Int2 => 21,
            BinaryKind::Int4 => 23,
            BinaryKind::Oid => 26,
            BinaryKind::Float4 => 700,
            BinaryKind::Float8 => 701,
            BinaryKind::Date => 1082,
            BinaryKind::Timestamp => 1114,
            BinaryKind::Timestamptz => 1184,
            BinaryKind::Uuid => 2950,
        }
    }

    /// The send form's length in bytes.
    fn width(self) -> usize {
        match self {
            BinaryKind::Bool => 1,
            BinaryKind::Int2 => 2,
            BinaryKind::Int4 | BinaryKind::Oid | BinaryKind::Float4 | BinaryKind::Date => 4,
            BinaryKind::Int8 | BinaryKind::Float8 | BinaryKind::Timestamp | BinaryKind::Timestamptz => 8,
            BinaryKind::Uuid => 16,
        }
    }
}

/// How one column's binary cells become JSON: equivalent to the column's text encoder
/// ([`super::ColumnEncoder`]) on the same value's text output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryCodec {
    kind: BinaryKind,
    /// A float in the collection key: a string in fixed notation, as the text path writes it.
    key: bool,
}

impl BinaryCodec {
    /// The codec of a column of type `ty` whose catalog type OID is `type_oid`, if it is
    /// read in binary: a built-in type of the table above, not a domain over one (whose
    /// values may need the domain's own rules one day) nor anything else.
    pub fn for_column(ty: &PgType, type_oid: u32, is_key: bool) -> Option<BinaryCodec> {
        let PgType::Builtin { name, .. } = ty else { return None };
        let kind = BinaryKind::of(name)?;
        (kind.oid() == type_oid).then_some(BinaryCodec { kind, key: is_key })
    }

    /// The OID of the type whose send form this codec reads: a result column of any other
    /// type must not be decoded with it.
    pub fn type_oid(&self) -> u32 {
        self.kind.oid()
    }

    /// Whether the type's text output (what `::text` gives) is computed exactly from its send
    /// form whatever the session's settings: the integers, `oid` and `uuid`. Not floats
    /// (`extra_float_digits`), dates and timestamps (`DateStyle`, `TimeZone`) nor `bool`
    /// (whose JSON is not its text).
    pub fn has_exact_text(&self) -> bool {
        matches!(self.kind, BinaryKind::Int2 | BinaryKind::Int4 | BinaryKind::Int8 | BinaryKind::Oid | BinaryKind::Uuid)
    }

    /// The text output of one non-NULL binary cell of `ty` (for messages), if
    /// [`BinaryCodec::has_exact_text`]: the digits of an integer, the lowercase 8-4-4-4-12
    /// form of a `uuid` — exactly what PostgreSQL's output functions print. Ok(None) for
    /// the other types.
    pub fn text_output(&self, ty: &PgType, raw: &[u8]) -> Result<Option<String>, ValueError> {
        if !self.has_exact_text() {
            return Ok(None);
        }
        // The JSON of these kinds is their text, quoted for a `uuid`.
        let mut json = Vec::with_capacity(38);
        self.encode(ty, raw, &mut json)?;
        let text = json.iter().filter(|b| **b != b'"').map(|b| char::from(*b)).collect();
        Ok(Some(text))
    }

    /// Append the JSON of one non-NULL binary cell of `ty` (the column's type, for
    /// messages); on error `out` is left as it was.
    pub fn encode(&self, ty: &PgType, raw: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
        let width = self.kind.width();
        if raw.len() != width {
            return Err(ValueError::binary(ty, raw, ValueErrorKind::Length { expected: width, found: raw.len() }));
        }
        match self.kind {
            BinaryKind::Bool => match raw[0] {
                0 => out.extend_from_slice(b"false"),
                1 => out.extend_from_slice(b"true"),
                _ => {
                    let kind = ValueErrorKind::Syntax { offset: 0, expected: "a bool byte, 0 or 1" };
                    return Err(ValueError::binary(ty, raw, kind));
                }
            },
            BinaryKind::Int2 => write_integer(out, i16::from_be_bytes(array(raw))),
            BinaryKind::Int4 => write_integer(out, i32::from_be_bytes(array(raw))),
            BinaryKind::Int8 => write_integer(out, i64::from_be_bytes(array(raw))),
            BinaryKind::Oid => write_integer(out, u32::from_be_bytes(array(raw))),
            BinaryKind::Float4 => {
                let value = f32::from_be_bytes(array(raw));
                if self.key {
                    write_float_key(out, value);
                } else {
                    write_go_float(out, value);
                }
            }
            BinaryKind::Float8 => {
                let value = f64::from_be_bytes(array(raw));
                if self.key {
                    write_float_key(out, value);
                } else {
                    write_float8(out, value);
                }
            }
            BinaryKind::Date => encode_date_days(i32::from_be_bytes(array(raw)), out),
            BinaryKind::Timestamp | BinaryKind::Timestamptz => {
                encode_timestamp_micros(i64::from_be_bytes(array(raw)), out);
            }
            BinaryKind::Uuid => write_uuid(out, raw),
        }
        Ok(())
    }
}

/// A `float8` value as the text path writes it from the server's text output.
///
/// That text is the shortest decimal that reads back to the value — Ryū's digits, with
/// ties between two shortest candidates rounded to even (PostgreSQL's `d2s.c` is a port
/// of Ryū, as is the `ryu` crate) — in fixed notation from 1e-4 to below 1e15, scientific
/// elsewhere. The text path copies a plain decimal as is ([`is_plain_decimal`]) and
/// otherwise parses the text, which gives back exactly this value, and writes it with
/// [`write_go_float`]. So: the same fixed text when the server would print one that is
/// copied, else [`write_go_float`]. Rust's own shortest digits (what `write_go_float`
/// uses) break such ties upwards (`685692862906654.25` prints as `…654.3`, PostgreSQL
/// prints `…654.2`), which is why the digits come from Ryū here.
fn write_float8(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() && value != 0.0 {
        let mut buffer = ryu::Buffer::new();
        let text = buffer.format_finite(value).as_bytes();
        if let Some(fixed) = postgres_fixed_notation(text) {
            if is_plain_decimal(fixed) {
                out.extend_from_slice(fixed);
                return;
            }
        }
    }
    write_go_float(out, value);
}

/// The text PostgreSQL prints for a value whose `ryu` formatting is `text`, if it prints it
/// in fixed notation (decimal exponent from -4 to 14): `ryu` writes fixed notation for a
/// wider range (exponents -5 to 15), and integers with a trailing `.0`.
fn postgres_fixed_notation(text: &[u8]) -> Option<&[u8]> {
    if text.contains(&b'e') {
        return None;
    }
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if let Some(fraction) = digits.strip_prefix(b"0.") {
        // 10^-(zeros + 1) <= |value| < 10^-zeros
        let zeros = fraction.iter().take_while(|&&b| b == b'0').count();
        return (zeros <= 3).then_some(text);
    }
    let integer = digits.iter().position(|&b| b == b'.').unwrap_or(digits.len());
    if integer > 15 {
        return None;
    }
    Some(text.strip_suffix(b".0").unwrap_or(text))
}

/// The first `N` bytes of `raw` (its length was checked: shorter input gives zeros, never
/// a panic).
fn array<const N: usize>(raw: &[u8]) -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Some(prefix) = raw.get(..N) {
        bytes.copy_from_slice(prefix);
    }
    bytes
}

fn write_integer<I: itoa::Integer>(out: &mut Vec<u8>, value: I) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// 16 bytes as `"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"`, lowercase, as `uuid_out` prints.
fn write_uuid(out: &mut Vec<u8>, raw: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(38);
    out.push(b'"');
    for (i, byte) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xf)]);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{encode_key_value, encode_value};

    fn builtin(name: &str) -> PgType {
        PgType::Builtin { name: name.into(), typmod: -1 }
    }

    fn binary(name: &str, oid: u32, key: bool, raw: &[u8]) -> Result<String, ValueError> {
        let ty = builtin(name);
        let codec = BinaryCodec::for_column(&ty, oid, key).unwrap();
        let mut out = b"x".to_vec();
        let result = codec.encode(&ty, raw, &mut out);
        if result.is_err() {
            assert_eq!(out, b"x", "a failed cell must leave the buffer as it was");
        }
        result.map(|()| String::from_utf8(out[1..].to_vec()).unwrap())
    }

    fn text(name: &str, key: bool, text: &str) -> String {
        let mut out = Vec::new();
        if key {
            encode_key_value(&builtin(name), text.as_bytes(), &mut out).unwrap();
        } else {
            encode_value(&builtin(name), text.as_bytes(), &mut out).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_the_builtin_types_themselves_are_read_in_binary() {
        assert!(BinaryCodec::for_column(&builtin("int4"), 23, false).is_some());
        // A type named like a built-in one but of another OID (a user type in another schema).
        assert!(BinaryCodec::for_column(&builtin("int4"), 16_384, false).is_none());
        assert!(BinaryCodec::for_column(&builtin("numeric"), 1700, false).is_none());
        let domain = PgType::Domain { name: "positive".into(), base: Box::new(builtin("int4")), not_null: false };
        assert!(BinaryCodec::for_column(&domain, 23, false).is_none());
        let array = PgType::Array { element: Box::new(builtin("int4")) };
        assert!(BinaryCodec::for_column(&array, 1007, false).is_none());
    }

    #[test]
    fn cells_of_the_wrong_length_are_errors() {
        let err = binary("int8", 20, false, &[0, 0, 0, 1]).unwrap_err();
        assert_eq!(err.to_string(), "invalid int8 value 0x00000001: binary value of 4 bytes, expected 8");
        assert!(binary("uuid", 2950, false, &[0; 17]).is_err());
        assert!(binary("bool", 16, false, &[]).is_err());
        assert!(binary("bool", 16, false, &[2]).is_err());
        assert!(binary("timestamptz", 1184, false, &[0; 7]).is_err());
    }

    #[test]
    fn binary_cells_encode_as_their_text_output_does() {
        let cases: &[(&str, u32, Vec<u8>, &str)] = &[
            ("bool", 16, vec![1], "t"),
            ("bool", 16, vec![0], "false"),
            ("int2", 21, (-32768i16).to_be_bytes().to_vec(), "-32768"),
            ("int4", 23, i32::MAX.to_be_bytes().to_vec(), "2147483647"),
            ("int8", 20, i64::MIN.to_be_bytes().to_vec(), "-9223372036854775808"),
            ("oid", 26, u32::MAX.to_be_bytes().to_vec(), "4294967295"),
            ("float8", 701, (-0.0f64).to_be_bytes().to_vec(), "-0"),
            ("float8", 701, 0.1f64.to_be_bytes().to_vec(), "0.1"),
            ("float8", 701, 1e-7f64.to_be_bytes().to_vec(), "1e-07"),
            ("float8", 701, 1.5e300f64.to_be_bytes().to_vec(), "1.5e+300"),
            ("float8", 701, f64::NAN.to_be_bytes().to_vec(), "NaN"),
            ("float8", 701, f64::NEG_INFINITY.to_be_bytes().to_vec(), "-Infinity"),
            ("float8", 701, 5e-324f64.to_be_bytes().to_vec(), "5e-324"),
            // A tie between two shortest candidates: PostgreSQL rounds to even.
            ("float8", 701, (5_485_542_903_253_234.0f64 / 8.0).to_be_bytes().to_vec(), "685692862906654.2"),
            ("float8", 701, 100.0f64.to_be_bytes().to_vec(), "100"),
            ("float8", 701, 1e14f64.to_be_bytes().to_vec(), "100000000000000"),
            ("float8", 701, 1e15f64.to_be_bytes().to_vec(), "1e+15"),
            ("float8", 701, 0.000_123_4f64.to_be_bytes().to_vec(), "0.0001234"),
            ("float8", 701, 0.000_012_34f64.to_be_bytes().to_vec(), "1.234e-05"),
            ("float4", 700, 3.4028235e38f32.to_be_bytes().to_vec(), "3.4028235e+38"),
            ("float4", 700, 0.1f32.to_be_bytes().to_vec(), "0.1"),
            ("float4", 700, f32::INFINITY.to_be_bytes().to_vec(), "Infinity"),
            ("date", 1082, 0i32.to_be_bytes().to_vec(), "2000-01-01"),
            ("date", 1082, i32::MAX.to_be_bytes().to_vec(), "infinity"),
            ("date", 1082, i32::MIN.to_be_bytes().to_vec(), "-infinity"),
            ("date", 1082, (-730_485i32).to_be_bytes().to_vec(), "0001-01-01 BC"),
            ("date", 1082, 2_145_031_948i32.to_be_bytes().to_vec(), "5874897-12-31"),
            ("timestamp", 1114, 0i64.to_be_bytes().to_vec(), "2000-01-01 00:00:00"),
            ("timestamp", 1114, (-1i64).to_be_bytes().to_vec(), "1999-12-31 23:59:59.999999"),
            ("timestamptz", 1184, 120_000i64.to_be_bytes().to_vec(), "2000-01-01 00:00:00.12+00"),
            ("timestamptz", 1184, i64::MAX.to_be_bytes().to_vec(), "infinity"),
            ("timestamptz", 1184, i64::MIN.to_be_bytes().to_vec(), "-infinity"),
            ("timestamp", 1114, 9_223_371_331_200_000_000i64.to_be_bytes().to_vec(), "294277-01-01 00:00:00"),
            (
                "uuid",
                2950,
                vec![0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11],
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            ),
        ];
        for (name, oid, raw, output) in cases {
            for key in [false, true] {
                assert_eq!(binary(name, *oid, key, raw).unwrap(), text(name, key, output), "{name} {output} key={key}");
            }
        }
    }

    #[test]
    fn exact_text_is_the_output_functions_text_and_only_where_no_setting_changes_it() {
        let cases: &[(&str, u32, Vec<u8>, &str)] = &[
            ("int2", 21, (-32768i16).to_be_bytes().to_vec(), "-32768"),
            ("int4", 23, 0i32.to_be_bytes().to_vec(), "0"),
            ("int8", 20, i64::MIN.to_be_bytes().to_vec(), "-9223372036854775808"),
            ("oid", 26, u32::MAX.to_be_bytes().to_vec(), "4294967295"),
            ("uuid", 2950, (0u8..16).map(|b| b * 17).collect(), "00112233-4455-6677-8899-aabbccddeeff"),
        ];
        for (name, oid, raw, output) in cases {
            let ty = builtin(name);
            let codec = BinaryCodec::for_column(&ty, *oid, true).unwrap();
            assert!(codec.has_exact_text(), "{name}");
            assert_eq!(codec.text_output(&ty, raw).unwrap().as_deref(), Some(*output), "{name}");
        }
        for (name, oid, width) in
            [("float8", 701, 8), ("float4", 700, 4), ("date", 1082, 4), ("timestamptz", 1184, 8), ("bool", 16, 1)]
        {
            let ty = builtin(name);
            let codec = BinaryCodec::for_column(&ty, oid, true).unwrap();
            assert!(!codec.has_exact_text(), "{name}");
            assert_eq!(codec.text_output(&ty, &vec![0; width]).unwrap(), None, "{name}");
        }
        // Lengths from the wire are checked here too.
        let ty = builtin("int8");
        assert!(BinaryCodec::for_column(&ty, 20, true).unwrap().text_output(&ty, &[0; 4]).is_err());
    }
}
