//! Text output → JSON: the entry points and the scalar encoders.
//!
//! Every encoder appends to the caller's buffer in one forward pass over the text. On
//! error the buffer is restored to its length before the call, so a caller can report the
//! error and carry on with the same buffer.
//!
//! Numbers follow the Go connector byte for byte where it had a rule: integers are copied,
//! `numeric` stays a string (digits are never lost), floats print like Go's
//! `encoding/json` (shortest round-trip digits; exponent form below 1e-6 and from 1e21 on;
//! `float4` at 32-bit precision) and NaN/±Infinity become the strings `"NaN"`,
//! `"Infinity"`, `"-Infinity"`.

use std::fmt::{self, Display, LowerExp};

use base64::Engine as _;

use super::error::{ValueError, ValueErrorKind};
use super::kind::{classify, owned_encoding, Kind};
use super::{array, composite, datetime, extension, go_forms, json_text, range, PgType, ValueFormats};

/// Append the JSON encoding of one non-NULL value (PostgreSQL text output `text`) of type
/// `ty` to `out`, in this connector's improved formats (see [`encode_value_with`]).
pub fn encode_value(ty: &PgType, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    encode_value_with(&ValueFormats::improved(), ty, text, out)
}

/// Append the JSON encoding of one non-NULL value (PostgreSQL text output `text`) of type
/// `ty` to `out`, in `formats`.
///
/// On error `out` is left as it was. Errors name the innermost type whose text was
/// malformed (for an array of rows, the field's type).
pub fn encode_value_with(
    formats: &ValueFormats,
    ty: &PgType,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let mark = out.len();
    let result = encode_kind(ty, classify(ty, formats), formats, text, out);
    if result.is_err() {
        out.truncate(mark);
    }
    result
}

/// [`encode_key_value_with`] in this connector's improved formats.
pub fn encode_key_value(ty: &PgType, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    encode_key_value_with(&ValueFormats::improved(), ty, text, out)
}

/// Same as [`encode_value_with`], for a value that is part of the collection key: floats
/// become strings in fixed notation (`"3.14"`, `"-1"`, `"0"`), as Go writes them, so that
/// the key is a string of the exact shortest decimal; everything else as
/// [`encode_value_with`].
pub fn encode_key_value_with(
    formats: &ValueFormats,
    ty: &PgType,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    match classify(ty, formats) {
        Kind::Float { single } => {
            let mark = out.len();
            let result = encode_float_key(text, single, out).map_err(|kind| ValueError::new(ty, text, kind));
            if result.is_err() {
                out.truncate(mark);
            }
            result
        }
        _ => encode_value_with(formats, ty, text, out),
    }
}

/// The encoder of one column: its type classified once, so that encoding a row does no
/// type dispatch beyond one `match` per value. Equivalent to [`encode_value`] (or
/// [`encode_key_value`] for key columns) for every input.
#[derive(Clone, Copy, Debug)]
pub struct ColumnEncoder<'a> {
    ty: &'a PgType,
    kind: Kind<'a>,
    float_key: Option<bool>,
    formats: ValueFormats,
}

/// A column's kind, and for a float key column its width (`Some(single)`): key floats are
/// strings in fixed notation (see `encode_float_key`), other floats JSON numbers.
fn classify_column<'a>(ty: &'a PgType, is_key: bool, formats: &ValueFormats) -> (Kind<'a>, Option<bool>) {
    let kind = classify(ty, formats);
    let float_key = match kind {
        Kind::Float { single } if is_key => Some(single),
        _ => None,
    };
    (kind, float_key)
}

impl<'a> ColumnEncoder<'a> {
    pub fn new(ty: &'a PgType, is_key: bool, formats: &ValueFormats) -> Self {
        let (kind, float_key) = classify_column(ty, is_key, formats);
        ColumnEncoder { ty, kind, float_key, formats: *formats }
    }

    /// Append the JSON encoding of one non-NULL value; on error `out` is left as it was.
    pub fn encode(&self, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
        let mark = out.len();
        let result = match self.float_key {
            Some(single) => encode_float_key(text, single, out).map_err(|kind| ValueError::new(self.ty, text, kind)),
            None => encode_kind(self.ty, self.kind, &self.formats, text, out),
        };
        if result.is_err() {
            out.truncate(mark);
        }
        result
    }
}

/// A column's encoding decided once, borrowing nothing: what a [`ColumnEncoder`] is for a
/// cache that owns the column types next to it (the replication stream's relation cache,
/// which cannot hold a borrow of its own entry). Scalar types are classified here once;
/// nested ones (arrays, composites, ranges) keep the per-value classification, which for
/// them is a single `match` on the type's variant, with no name lookup.
#[derive(Clone, Copy, Debug)]
pub struct ColumnCodec {
    scalar: Option<Kind<'static>>,
    float_key: Option<bool>,
    formats: ValueFormats,
}

impl ColumnCodec {
    pub fn new(ty: &PgType, is_key: bool, formats: &ValueFormats) -> Self {
        let (kind, float_key) = classify_column(ty, is_key, formats);
        ColumnCodec { scalar: owned_encoding(kind), float_key, formats: *formats }
    }

    /// Append the JSON encoding of one non-NULL value of `ty`, the type this codec was made
    /// for; on error `out` is left as it was. Equivalent to [`encode_value`] (or
    /// [`encode_key_value`] for a key column).
    pub fn encode(&self, ty: &PgType, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
        let mark = out.len();
        let result = match (self.float_key, self.scalar) {
            (Some(single), _) => encode_float_key(text, single, out).map_err(|kind| ValueError::new(ty, text, kind)),
            (None, Some(kind)) => encode_kind(ty, kind, &self.formats, text, out),
            (None, None) => encode_kind(ty, classify(ty, &self.formats), &self.formats, text, out),
        };
        if result.is_err() {
            out.truncate(mark);
        }
        result
    }
}

fn encode_kind(
    ty: &PgType,
    kind: Kind<'_>,
    formats: &ValueFormats,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let scalar = match kind {
        Kind::Array { element } => return array::encode_array(element, formats, text, out),
        Kind::Composite { fields } => return composite::encode_composite(ty, fields, formats, text, out),
        Kind::Range { subtype } => return range::encode_range(ty, subtype, formats, text, out),
        Kind::Multirange { subtype } => return range::encode_multirange(ty, subtype, formats, text, out),
        Kind::Boolean => encode_bool(text, out),
        Kind::Integer => encode_integer(text, out),
        Kind::Numeric => encode_numeric(text, out),
        Kind::GoNumeric if go_forms::go_numeric_zero(text) => encode_numeric(b"0", out),
        Kind::GoNumeric => encode_numeric(text, out),
        Kind::GoInet => go_forms::encode_go_inet(text, out),
        Kind::GoInterval => go_forms::encode_go_interval(text, out),
        Kind::Float { single } => encode_float(text, single, out),
        Kind::Text | Kind::Varchar { .. } | Kind::Enum { .. } | Kind::CatchAll { .. } => encode_string(text, out),
        Kind::Bpchar { length } => encode_bpchar(text, length, out),
        Kind::Inet => encode_inet(text, out),
        Kind::Uuid => encode_uuid(text, out),
        Kind::Bytea => encode_bytea(text, out),
        Kind::Json | Kind::Jsonb => json_text::write_json_text(text, out),
        Kind::Date { saturate } => datetime::encode_date(text, datetime::value_target(saturate), out),
        Kind::DateAsTimestamp { saturate } => {
            datetime::encode_date_as_timestamp(text, datetime::value_target(saturate), out)
        }
        Kind::Timestamp { saturate } => datetime::encode_timestamp(text, false, datetime::value_target(saturate), out),
        Kind::Timestamptz { saturate } => datetime::encode_timestamp(text, true, datetime::value_target(saturate), out),
        Kind::Time => datetime::encode_time(text, out),
        Kind::TimeMicros => datetime::encode_time_micros(text, out),
        Kind::Timetz => datetime::encode_timetz(text, out),
        Kind::Hstore => extension::encode_hstore(text, out),
        Kind::Vector => extension::encode_vector(text, out),
    };
    scalar.map_err(|kind| ValueError::new(ty, text, kind))
}

/// `text` as `&str`, or the offset of its first invalid byte.
pub(crate) fn check_utf8(text: &[u8]) -> Result<&str, ValueErrorKind> {
    std::str::from_utf8(text).map_err(|e| ValueErrorKind::InvalidUtf8 { offset: e.valid_up_to() })
}

/// For each byte, the character after `\` that escapes it in a JSON string (`u` for
/// `\u00XX`), or 0 when the byte is copied as is.
static JSON_ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Append `text` (valid UTF-8) escaped as the inside of a JSON string, copying unescaped
/// runs whole.
pub(crate) fn write_json_string_content(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut run_start = 0;
    for (i, &b) in text.iter().enumerate() {
        let escape = JSON_ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&text[run_start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&text[run_start..]);
}

/// Append `text` (valid UTF-8) as a JSON string.
pub(crate) fn write_json_string(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    write_json_string_content(out, text);
    out.push(b'"');
}

fn encode_string(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    check_utf8(text)?;
    write_json_string(out, text);
    Ok(())
}

/// `bool` prints `t`/`f`; a `::text` cast prints `true`/`false`.
fn encode_bool(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    match text {
        b"t" | b"true" => out.extend_from_slice(b"true"),
        b"f" | b"false" => out.extend_from_slice(b"false"),
        _ => return Err(ValueErrorKind::Syntax { offset: 0, expected: "t or f" }),
    }
    Ok(())
}

/// Checks `-?(0|[1-9][0-9]*)` and copies it: the text is already a JSON number.
fn encode_integer(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    let digits_start = usize::from(text.first() == Some(&b'-'));
    check_digits(text, digits_start, "a digit")?;
    if text.len() > digits_start + 1 && text[digits_start] == b'0' {
        return Err(ValueErrorKind::Syntax { offset: digits_start, expected: "no leading zero" });
    }
    // Every integer type's output fits in an i64; longer digit strings (never printed by
    // PostgreSQL, but the wire is not trusted) would be JSON numbers that strict readers
    // reject as out of range. Shorter ones always fit, so only those are parsed.
    if text.len() - digits_start >= 19 {
        let fits = std::str::from_utf8(text).ok().and_then(|t| t.parse::<i64>().ok()).is_some();
        if !fits {
            return Err(ValueErrorKind::OutOfRange { what: "integer" });
        }
    }
    out.extend_from_slice(text);
    Ok(())
}

/// Checks that `text[start..]` is one or more ASCII digits.
fn check_digits(text: &[u8], start: usize, expected: &'static str) -> Result<(), ValueErrorKind> {
    if start >= text.len() {
        return Err(ValueErrorKind::Truncated { expected });
    }
    match text[start..].iter().position(|b| !b.is_ascii_digit()) {
        Some(i) => Err(ValueErrorKind::Syntax { offset: start + i, expected }),
        None => Ok(()),
    }
}

/// `numeric` prints plain decimals (never an exponent) or `NaN`/`Infinity`/`-Infinity`;
/// all are kept verbatim as a string, so no digit or trailing zero is lost.
fn encode_numeric(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    if !matches!(text, b"NaN" | b"Infinity" | b"-Infinity") {
        let digits_start = usize::from(text.first() == Some(&b'-'));
        match text.iter().position(|&b| b == b'.') {
            Some(point) => {
                check_digits(&text[..point], digits_start, "a digit")?;
                check_digits(text, point + 1, "a digit")?;
            }
            None => check_digits(text, digits_start, "a digit")?,
        }
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
    Ok(())
}

/// A float's text, parsed: a finite value, or the name of a non-finite one.
enum ParsedFloat<T> {
    Finite(T),
    NonFinite(&'static str),
}

/// Parses PostgreSQL float output: digits, `.`, `e`, signs, or `NaN`/`Infinity`/`-Infinity`.
fn parse_float<T: std::str::FromStr>(text: &[u8]) -> Result<ParsedFloat<T>, ValueErrorKind> {
    match text {
        b"NaN" => return Ok(ParsedFloat::NonFinite("NaN")),
        b"Infinity" => return Ok(ParsedFloat::NonFinite("Infinity")),
        b"-Infinity" => return Ok(ParsedFloat::NonFinite("-Infinity")),
        _ => {}
    }
    // Rust's parser also takes "inf", "nan" and friends; PostgreSQL never prints those.
    if let Some(i) = text.iter().position(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')) {
        return Err(ValueErrorKind::Syntax { offset: i, expected: "a floating-point number" });
    }
    let s = std::str::from_utf8(text).map_err(|e| ValueErrorKind::InvalidUtf8 { offset: e.valid_up_to() })?;
    s.parse::<T>()
        .map(ParsedFloat::Finite)
        .map_err(|_| ValueErrorKind::Syntax { offset: 0, expected: "a floating-point number" })
}

/// A float type as Go's `encoding/json` prints it.
pub(crate) trait GoFloat: Copy + Display + LowerExp {
    fn is_finite(self) -> bool;
    fn is_nan(self) -> bool;
    fn is_sign_negative(self) -> bool;
    /// Go switches to exponent form below 1e-6 and from 1e21 on (compared at the type's
    /// own precision), except for zero.
    fn wants_exponent(self) -> bool;
}

impl GoFloat for f32 {
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn is_sign_negative(self) -> bool {
        f32::is_sign_negative(self)
    }
    fn wants_exponent(self) -> bool {
        let abs = self.abs();
        abs != 0.0 && !(1e-6..1e21).contains(&abs)
    }
}

impl GoFloat for f64 {
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn is_sign_negative(self) -> bool {
        f64::is_sign_negative(self)
    }
    fn wants_exponent(self) -> bool {
        let abs = self.abs();
        abs != 0.0 && !(1e-6..1e21).contains(&abs)
    }
}

/// Appends formatted text to a byte buffer (formatting floats cannot fail).
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The name of a non-finite float, as Go and PostgreSQL spell it.
fn non_finite_name<T: GoFloat>(value: T) -> &'static str {
    if value.is_nan() {
        "NaN"
    } else if value.is_sign_negative() {
        "-Infinity"
    } else {
        "Infinity"
    }
}

/// Appends a finite `value` as a JSON number, with the shortest digits that read back to
/// the same `T`, in Go's notation: `123.456`, `1e+21`, `1e-7`, `-0`.
pub(crate) fn write_go_number<T: GoFloat>(out: &mut Vec<u8>, value: T) {
    use fmt::Write as _;
    if value.wants_exponent() {
        let start = out.len();
        // Rust writes "1e21" and "1e-7"; Go writes "1e+21" and "1e-7".
        let _ = write!(ByteWriter(out), "{value:e}");
        if let Some(e) = out[start..].iter().position(|&b| b == b'e') {
            let after = start + e + 1;
            if out.get(after) != Some(&b'-') {
                out.insert(after, b'+');
            }
        }
    } else {
        let _ = write!(ByteWriter(out), "{value}");
    }
}

/// Appends `value` as a JSON number, or as `"NaN"`/`"Infinity"`/`"-Infinity"`.
pub(crate) fn write_go_float<T: GoFloat>(out: &mut Vec<u8>, value: T) {
    if value.is_finite() {
        write_go_number(out, value);
    } else {
        out.push(b'"');
        out.extend_from_slice(non_finite_name(value).as_bytes());
        out.push(b'"');
    }
}

fn encode_float(text: &[u8], single: bool, out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    // Fast path: PostgreSQL prints float8 with the shortest round-trip digits, in fixed
    // notation exactly where Go's formatting is fixed too (it switches to an exponent much
    // earlier, below 1e-4 and from 1e15 or so), so plain `-?digits[.digits]` text already
    // is the Go form and a valid JSON number.
    if !single && is_plain_decimal(text) {
        out.extend_from_slice(text);
        return Ok(());
    }
    if single {
        match parse_float::<f32>(text)? {
            ParsedFloat::Finite(v) => write_go_float(out, v),
            ParsedFloat::NonFinite(name) => write_quoted_ascii(out, name),
        }
    } else {
        match parse_float::<f64>(text)? {
            ParsedFloat::Finite(v) => write_go_float(out, v),
            ParsedFloat::NonFinite(name) => write_quoted_ascii(out, name),
        }
    }
    Ok(())
}

/// `-?D+(.D+)?` with no superfluous leading zero: text that is its own JSON number.
pub(crate) fn is_plain_decimal(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let (integer, fraction) = match digits.iter().position(|b| *b == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    !integer.is_empty()
        && integer.len() <= 15
        && integer.iter().all(u8::is_ascii_digit)
        && (integer.len() == 1 || integer[0] != b'0')
        && fraction.is_none_or(|f| !f.is_empty() && f.len() <= 17 && f.iter().all(u8::is_ascii_digit))
}

/// A float key: a string in fixed notation with the shortest round-trip digits.
fn encode_float_key(text: &[u8], single: bool, out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    if single {
        match parse_float::<f32>(text)? {
            ParsedFloat::Finite(v) => write_float_key(out, v),
            ParsedFloat::NonFinite(name) => write_quoted_ascii(out, name),
        }
    } else {
        match parse_float::<f64>(text)? {
            ParsedFloat::Finite(v) => write_float_key(out, v),
            ParsedFloat::NonFinite(name) => write_quoted_ascii(out, name),
        }
    }
    Ok(())
}

/// Appends a float that is part of the collection key: a string in fixed notation with
/// the shortest round-trip digits (`"3.14"`, `"-0"`), or the name of a non-finite value.
pub(crate) fn write_float_key<T: GoFloat>(out: &mut Vec<u8>, value: T) {
    use fmt::Write as _;
    out.push(b'"');
    if value.is_finite() {
        let _ = write!(ByteWriter(out), "{value}");
    } else {
        out.extend_from_slice(non_finite_name(value).as_bytes());
    }
    out.push(b'"');
}

fn write_quoted_ascii(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// `char(n)` is stored blank-padded to `n` characters and printed so; a `::text` cast
/// trims the blanks, so they are restored here and both paths give the same string.
fn encode_bpchar(text: &[u8], length: Option<u32>, out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    let s = check_utf8(text)?;
    out.reserve(text.len() + 2);
    out.push(b'"');
    write_json_string_content(out, text);
    if let Some(length) = length.and_then(|n| usize::try_from(n).ok()) {
        let characters = s.chars().count();
        if characters < length {
            out.resize(out.len() + (length - characters), b' ');
        }
    }
    out.push(b'"');
    Ok(())
}

/// `inet`'s output function omits the prefix length of a host address; a `::text` cast
/// adds `/32` or `/128`. Both become the output-function form.
fn encode_inet(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    check_utf8(text)?;
    let is_v6 = text.contains(&b':');
    let host_suffix: &[u8] = if is_v6 { b"/128" } else { b"/32" };
    let address = text.strip_suffix(host_suffix).unwrap_or(text);
    write_json_string(out, address);
    Ok(())
}

/// A `uuid` prints as 8-4-4-4-12 hex digits; anything else would fail `format: uuid`.
fn encode_uuid(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    if text.len() != 36 {
        return Err(ValueErrorKind::Syntax { offset: text.len().min(36), expected: "a 36-character uuid" });
    }
    for (i, &b) in text.iter().enumerate() {
        let ok = if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() };
        if !ok {
            return Err(ValueErrorKind::Syntax { offset: i, expected: "a hyphenated hex uuid" });
        }
    }
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
    Ok(())
}

/// Bytes decoded per base64 step: a multiple of 3, so only the last step pads.
const BYTEA_CHUNK: usize = 3 * 4096;

/// `bytea` in hex output (`\x0aff…`) or, for robustness, escape output (`\\`, `\ooo`),
/// as standard padded base64. Hex input is decoded and encoded in fixed-size steps.
fn encode_bytea(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    out.push(b'"');
    if let Some(hex) = text.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return Err(ValueErrorKind::Truncated { expected: "a second hex digit" });
        }
        out.reserve(base64::encoded_len(hex.len() / 2, true).unwrap_or(0) + 1);
        let mut buffer = [0u8; BYTEA_CHUNK];
        for (step, chunk) in hex.chunks(2 * BYTEA_CHUNK).enumerate() {
            for (j, pair) in chunk.chunks_exact(2).enumerate() {
                let offset = 2 + step * 2 * BYTEA_CHUNK + 2 * j;
                let high = hex_value(pair[0]).ok_or(ValueErrorKind::Syntax { offset, expected: "a hex digit" })?;
                let low =
                    hex_value(pair[1]).ok_or(ValueErrorKind::Syntax { offset: offset + 1, expected: "a hex digit" })?;
                buffer[j] = (high << 4) | low;
            }
            append_base64(out, &buffer[..chunk.len() / 2]);
        }
    } else {
        let bytes = decode_bytea_escape(text)?;
        append_base64(out, &bytes);
    }
    out.push(b'"');
    Ok(())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn append_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    // Encode straight into the tail of `out`, no side buffer.
    let start = out.len();
    let Some(length) = base64::encoded_len(bytes.len(), true) else {
        return;
    };
    out.resize(start + length, 0);
    let written = base64::engine::general_purpose::STANDARD.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// Decodes `bytea_output=escape` text: `\\` is a backslash, `\ooo` an octal byte.
fn decode_bytea_escape(text: &[u8]) -> Result<Vec<u8>, ValueErrorKind> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            bytes.push(text[i]);
            i += 1;
            continue;
        }
        match text.get(i + 1..i + 4) {
            _ if text.get(i + 1) == Some(&b'\\') => {
                bytes.push(b'\\');
                i += 2;
            }
            Some(&[a, b, c])
                if (b'0'..=b'3').contains(&a) && (b'0'..=b'7').contains(&b) && (b'0'..=b'7').contains(&c) =>
            {
                bytes.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
            }
            _ => return Err(ValueErrorKind::Syntax { offset: i, expected: "\\\\ or an octal escape" }),
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod column_encoder_tests {
    use super::*;

    #[test]
    fn integers_beyond_64_bits_are_rejected_not_written() {
        // Found by the value fuzz target: a 315-digit "int8" became a JSON number that
        // serde_json refuses as out of range.
        let int8 = PgType::Builtin { name: "int8".into(), typmod: -1 };
        for ok in ["9223372036854775807", "-9223372036854775808", "1234567890123456789", "0", "-1"] {
            let mut out = Vec::new();
            ColumnEncoder::new(&int8, false, &ValueFormats::improved()).encode(ok.as_bytes(), &mut out).unwrap();
            assert_eq!(out, ok.as_bytes());
        }
        let long = "5".repeat(315);
        for bad in ["9223372036854775808", "-9223372036854775809", "12345678901234567890", long.as_str()] {
            let mut out = b"kept".to_vec();
            assert!(
                ColumnEncoder::new(&int8, false, &ValueFormats::improved()).encode(bad.as_bytes(), &mut out).is_err(),
                "{bad}"
            );
            assert_eq!(out, b"kept");
        }
    }

    #[test]
    fn plain_float_text_is_copied_only_when_it_is_already_go_and_json_form() {
        for text in ["0", "-0", "3.5", "100", "0.30000000000000004", "-123456.789"] {
            assert!(is_plain_decimal(text.as_bytes()), "{text}");
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            encode_float(text.as_bytes(), false, &mut fast).unwrap();
            match parse_float::<f64>(text.as_bytes()).unwrap() {
                ParsedFloat::Finite(v) => write_go_float(&mut slow, v),
                ParsedFloat::NonFinite(_) => unreachable!(),
            }
            assert_eq!(fast, slow, "{text}");
        }
        for text in ["1e-05", "1.5e+20", "", "-", "01", ".5", "5.", "1.2.3", "Infinity", "+1"] {
            assert!(!is_plain_decimal(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn column_encoders_match_the_per_value_entry_points() {
        let builtin = |name: &str| PgType::Builtin { name: name.into(), typmod: -1 };
        let cases: Vec<(PgType, &[u8])> = vec![
            (builtin("int8"), b"-42"),
            (builtin("float8"), b"3.5"),
            (builtin("float8"), b"NaN"),
            (builtin("float8"), b"-0.000125"),
            (builtin("float8"), b"1e-05"),
            (builtin("float8"), b"1.2345678901234567e+19"),
            (builtin("text"), b"a \"quoted\" text"),
            (builtin("timestamptz"), b"2024-01-15 14:30:00+00"),
            (builtin("numeric"), b"123.4500"),
            (PgType::Array { element: Box::new(builtin("int4")) }, b"{1,NULL,3}"),
            (builtin("int4"), b"not a number"),
            (builtin("bpchar"), b"ab  "),
            (PgType::Enum { name: "mood".into(), labels: vec!["ok".into()] }, b"ok"),
            (PgType::Unknown { name: "mystery".into() }, b"\\x\"y"),
            (PgType::Domain { name: "pos".into(), base: Box::new(builtin("float4")), not_null: true }, b"1.5"),
            (
                PgType::Domain {
                    name: "ints".into(),
                    base: Box::new(PgType::Array { element: Box::new(builtin("int8")) }),
                    not_null: false,
                },
                b"{7}",
            ),
            (builtin("jsonb"), b"{\"a\": [1, 2]}"),
        ];
        for (ty, text) in &cases {
            for is_key in [false, true] {
                let (mut expected, mut actual) = (b"x".to_vec(), b"x".to_vec());
                let expected_result = if is_key {
                    encode_key_value(ty, text, &mut expected)
                } else {
                    encode_value(ty, text, &mut expected)
                };
                let actual_result = ColumnEncoder::new(ty, is_key, &ValueFormats::improved()).encode(text, &mut actual);
                assert_eq!(expected_result.is_ok(), actual_result.is_ok(), "{ty:?} {is_key}");
                assert_eq!(expected, actual, "{ty:?} key={is_key}");
                let mut owned = b"x".to_vec();
                let owned_result = ColumnCodec::new(ty, is_key, &ValueFormats::improved()).encode(ty, text, &mut owned);
                assert_eq!(expected_result.is_ok(), owned_result.is_ok(), "codec {ty:?} {is_key}");
                assert_eq!(expected, owned, "codec {ty:?} key={is_key}");
            }
        }
    }
}
