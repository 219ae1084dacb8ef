//! `json` and `jsonb` text → the embedded JSON value.
//!
//! The text is already JSON (PostgreSQL checked it on input), but it is not always JSON
//! that the Flow runtime can read. Its parser (serde_json, default features) rejects a
//! document with an unpaired UTF-16 surrogate escape such as `"\ud83d"` (which the `json`
//! type stores verbatim), a number beyond the range of `f64` (`1e400`, or the 401-digit
//! integer `jsonb` prints for it), or more than 127 nested arrays and objects. It also
//! accepts, but silently changes, integers beyond 64 bits (read as `f64`) and numbers
//! too small for `f64` (`1e-400` is read as `0`). So the text is re-read rather than
//! trusted, in one forward pass with an explicit container stack (no recursion):
//!
//! - the grammar is checked (a malformed document is an error, never a corrupt output);
//! - insignificant whitespace is dropped, as Go's `encoding/json` does for raw values;
//! - a high surrogate escape not followed by a low one, and a lone low surrogate escape,
//!   become `\ufffd`;
//! - a number that a 64-bit reader cannot hold is written as a JSON string of its exact
//!   text: an integer (no fraction, no exponent) outside `-2^63 ..= 2^64-1`, or any other
//!   number that is not zero and whose magnitude is outside `[1e-307, 1e308)`;
//! - the first [`MAX_DEPTH`] levels of arrays and objects are written as JSON; a container
//!   that would open at level `MAX_DEPTH + 1` is written, with everything inside it, as a
//!   JSON string holding its compacted JSON text.
//!
//! Every other byte of strings and numbers is copied unchanged. The column schema of
//! `json` and `jsonb` has no `type`, so the strings are valid wherever they appear.
//!
//! Why these bounds:
//!
//! - `[1e-307, 1e308)` lies inside the normal range of `f64` (about `2.2e-308` to
//!   `1.8e308`), so every parser, however it rounds, reads such a number as a finite,
//!   normal double, like any other float. Bounds that are powers of ten make the test a
//!   comparison of decimal exponents: exact, and independent of how a parser rounds
//!   (serde_json's default algorithm and its `float_roundtrip` one differ). Beyond the
//!   top serde_json fails the whole document; near and below the bottom a nonzero value
//!   turns into `0` or a subnormal with few significant bits. Zero in any spelling
//!   (`0e400`) stays a number. Fractions and exponents inside the range are read as
//!   binary floating point by every consumer, as they always were.
//! - Integers within 64 bits are read exactly (serde_json keeps `u64` and `i64`); beyond
//!   that, as an `f64` that has lost digits. Big integers are usually identifiers, whose
//!   digits matter, so they are strings.
//! - serde_json allows 127 nested containers in one parse. A column value sits three
//!   containers deep in a document (`{"_meta":{"before":{"c": …}}}`), five in a protocol
//!   line (`{"captured":{"doc":…}}`) if that is parsed as a whole, so a value may hold at
//!   most 122 levels. [`MAX_DEPTH`] keeps 22 of those spare for the array (`json[]`, one
//!   level) or composite fields (one level per row) that may hold the value.
//! - A container written as a string holds the subtree as PostgreSQL had it, only
//!   compacted and with surrogates repaired: numbers inside keep their text, so parsing
//!   the string gives the subtree back. Cutting at the first level too deep, rather than
//!   turning the whole value into a string, keeps everything shallower as structure.

use super::encode::check_utf8;
use super::error::ValueErrorKind;

/// The deepest nesting of arrays and objects written as JSON structure; deeper containers
/// become strings (see the module documentation).
pub(crate) const MAX_DEPTH: usize = 100;

/// What the reader expects next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Any value.
    Value,
    /// A value or `]` right after `[`.
    FirstElement,
    /// A key or `}` right after `{`.
    FirstKey,
    /// A key after `,` in an object.
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the end of the enclosing container.
    CommaOrEnd,
    /// Nothing but trailing whitespace.
    End,
}

/// The output buffer. Inside a container deeper than [`MAX_DEPTH`] it is the content of
/// the JSON string that holds that container, so `"` and `\` are escaped as they are put.
struct Output<'a> {
    buf: &'a mut Vec<u8>,
    /// The stack depth outside the container being written as a string, while inside it.
    quoted_at: Option<usize>,
}

impl Output<'_> {
    /// One structural byte (`:`, `,`, a bracket): none of them needs escaping in a string.
    #[inline]
    fn put_byte(&mut self, byte: u8) {
        self.buf.push(byte);
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if self.quoted_at.is_none() {
            self.buf.extend_from_slice(bytes);
            return;
        }
        // Compact JSON has no raw control characters, so only these two need escaping.
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'"' || b == b'\\' {
                self.buf.extend_from_slice(&bytes[run..i]);
                self.buf.push(b'\\');
                run = i;
            }
        }
        self.buf.extend_from_slice(&bytes[run..]);
    }
}

/// Appends the JSON document `text` to `out`, checked and compacted, with unpaired
/// surrogate escapes replaced by `\ufffd`, numbers a 64-bit reader cannot hold written as
/// strings, and containers deeper than [`MAX_DEPTH`] written as strings.
pub(crate) fn write_json_text(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    check_utf8(text)?;
    out.reserve(text.len());
    let mut out = Output { buf: out, quoted_at: None };
    let mut stack = Containers::default();
    let mut expect = Expect::Value;
    let mut pos = 0;
    loop {
        while matches!(text.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            pos += 1;
        }
        let Some(&b) = text.get(pos) else {
            return if expect == Expect::End {
                Ok(())
            } else {
                Err(ValueErrorKind::Truncated { expected: "more JSON" })
            };
        };
        let syntax = |expected| ValueErrorKind::Syntax { offset: pos, expected };
        match expect {
            Expect::End => return Err(syntax("end of JSON document")),
            Expect::Colon => {
                if b != b':' {
                    return Err(syntax("':' after an object key"));
                }
                out.put_byte(b':');
                pos += 1;
                expect = Expect::Value;
            }
            Expect::FirstKey | Expect::Key => {
                if b == b'}' && expect == Expect::FirstKey {
                    pos = close(&mut stack, &mut out, pos, &mut expect);
                } else if b == b'"' {
                    pos = copy_string(text, pos, &mut out)?;
                    expect = Expect::Colon;
                } else {
                    return Err(syntax("an object key"));
                }
            }
            Expect::CommaOrEnd => match (stack.last(), b) {
                (Some(b'{'), b',') => {
                    out.put_byte(b',');
                    pos += 1;
                    expect = Expect::Key;
                }
                (Some(b'['), b',') => {
                    out.put_byte(b',');
                    pos += 1;
                    expect = Expect::Value;
                }
                (Some(b'{'), b'}') | (Some(b'['), b']') => {
                    pos = close(&mut stack, &mut out, pos, &mut expect);
                }
                _ => return Err(syntax("',' or the end of the container")),
            },
            Expect::Value | Expect::FirstElement => {
                if b == b']' && expect == Expect::FirstElement {
                    pos = close(&mut stack, &mut out, pos, &mut expect);
                    continue;
                }
                match b {
                    b'{' | b'[' => {
                        if out.quoted_at.is_none() && stack.len() == MAX_DEPTH {
                            out.buf.push(b'"');
                            out.quoted_at = Some(stack.len());
                        }
                        stack.push(b);
                        out.put_byte(b);
                        pos += 1;
                        expect = if b == b'{' { Expect::FirstKey } else { Expect::FirstElement };
                        continue;
                    }
                    b'"' => pos = copy_string(text, pos, &mut out)?,
                    b'-' | b'0'..=b'9' => {
                        let (end, as_number) = scan_number(text, pos)?;
                        let number = &text[pos..end];
                        if as_number || out.quoted_at.is_some() {
                            out.put(number);
                        } else {
                            // Only `-+.0-9eE`: nothing to escape.
                            out.buf.push(b'"');
                            out.buf.extend_from_slice(number);
                            out.buf.push(b'"');
                        }
                        pos = end;
                    }
                    b't' | b'f' | b'n' => {
                        let literal: &[u8] = match b {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        if !text[pos..].starts_with(literal) {
                            return Err(syntax("true, false or null"));
                        }
                        out.put(literal);
                        pos += literal.len();
                    }
                    _ => return Err(syntax("a JSON value")),
                }
                expect = after_value(&stack);
            }
        }
    }
}

fn after_value(stack: &Containers) -> Expect {
    if stack.is_empty() {
        Expect::End
    } else {
        Expect::CommaOrEnd
    }
}

/// Closes the innermost container (the caller checked the bracket matches), and the
/// string holding it if it is the container written as one.
fn close(stack: &mut Containers, out: &mut Output<'_>, pos: usize, expect: &mut Expect) -> usize {
    let open = stack.pop().unwrap_or(b'[');
    out.put_byte(if open == b'{' { b'}' } else { b']' });
    if out.quoted_at == Some(stack.len()) {
        out.quoted_at = None;
        out.buf.push(b'"');
    }
    *expect = after_value(stack);
    pos + 1
}

/// How many levels of open containers [`Containers`] holds without allocating: enough for
/// nearly every real document, so the usual value costs no allocation.
const INLINE_LEVELS: usize = 32;

/// The open arrays and objects (`[` or `{`), innermost last. The first
/// [`INLINE_LEVELS`] live in an array; only deeper ones use the heap.
struct Containers {
    inline: [u8; INLINE_LEVELS],
    len: usize,
    deeper: Vec<u8>,
}

impl Default for Containers {
    fn default() -> Self {
        Containers { inline: [0; INLINE_LEVELS], len: 0, deeper: Vec::new() }
    }
}

impl Containers {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push(&mut self, open: u8) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = open,
            None => self.deeper.push(open),
        }
        self.len += 1;
    }

    fn pop(&mut self) -> Option<u8> {
        let last = self.last()?;
        if self.len > INLINE_LEVELS {
            self.deeper.pop();
        }
        self.len -= 1;
        Some(last)
    }

    fn last(&self) -> Option<u8> {
        match self.len {
            0 => None,
            n if n <= INLINE_LEVELS => Some(self.inline[n - 1]),
            _ => self.deeper.last().copied(),
        }
    }
}

/// Bytes that end an unescaped run inside a JSON string: the closing quote, a backslash,
/// and the control characters, which must be escaped.
static STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Four hex digits at `text[at..]`, as a number.
fn hex4(text: &[u8], at: usize) -> Option<u32> {
    let digits = text.get(at..at + 4)?;
    let mut value = 0;
    for &d in digits {
        value = value * 16 + char::from(d).to_digit(16)?;
    }
    Some(value)
}

const REPLACEMENT: &[u8] = b"\\ufffd";

/// Copies the string starting at the `"` at `start`; returns the position after its
/// closing quote. Unescaped runs are copied whole.
fn copy_string(text: &[u8], start: usize, out: &mut Output<'_>) -> Result<usize, ValueErrorKind> {
    out.put(b"\"");
    let mut pos = start + 1;
    let mut run_start = pos;
    loop {
        // Skip the run of plain bytes in one scan.
        let run = text.get(pos..).unwrap_or_default();
        let Some(plain) = run.iter().position(|&b| STRING_STOP[usize::from(b)]) else {
            return Err(ValueErrorKind::Truncated { expected: "the end of a JSON string" });
        };
        pos += plain;
        let b = text[pos];
        match b {
            b'"' => {
                out.put(&text[run_start..=pos]);
                return Ok(pos + 1);
            }
            0x00..=0x1f => {
                return Err(ValueErrorKind::Syntax { offset: pos, expected: "an escaped control character" });
            }
            b'\\' => {
                out.put(&text[run_start..pos]);
                match text.get(pos + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                        out.put(&text[pos..pos + 2]);
                        pos += 2;
                    }
                    Some(b'u') => {
                        let code = hex4(text, pos + 2)
                            .ok_or(ValueErrorKind::Syntax { offset: pos, expected: "\\u and four hex digits" })?;
                        let next_is_low = text.get(pos + 6..pos + 8) == Some(b"\\u")
                            && hex4(text, pos + 8).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                        match code {
                            0xD800..=0xDBFF if next_is_low => {
                                out.put(&text[pos..pos + 12]);
                                pos += 12;
                            }
                            0xD800..=0xDFFF => {
                                out.put(REPLACEMENT);
                                pos += 6;
                            }
                            _ => {
                                out.put(&text[pos..pos + 6]);
                                pos += 6;
                            }
                        }
                    }
                    Some(_) => return Err(ValueErrorKind::Syntax { offset: pos, expected: "a valid escape" }),
                    None => return Err(ValueErrorKind::Truncated { expected: "an escape" }),
                }
                run_start = pos;
            }
            _ => pos += 1,
        }
    }
}

/// Reads the number at `start`, checking `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
/// Returns the position after it and whether it is written as a JSON number (rather than
/// as a string of its text).
fn scan_number(text: &[u8], start: usize) -> Result<(usize, bool), ValueErrorKind> {
    let digits = |mut pos: usize| {
        let from = pos;
        while matches!(text.get(pos), Some(b'0'..=b'9')) {
            pos += 1;
        }
        (pos, pos - from)
    };
    let fail = |pos: usize| {
        if pos >= text.len() {
            ValueErrorKind::Truncated { expected: "a digit" }
        } else {
            ValueErrorKind::Syntax { offset: pos, expected: "a digit" }
        }
    };
    let negative = text[start] == b'-';
    let integer_start = start + usize::from(negative);
    let (mut pos, count) = digits(integer_start);
    if count == 0 {
        return Err(fail(integer_start));
    }
    if count > 1 && text[integer_start] == b'0' {
        return Err(ValueErrorKind::Syntax { offset: integer_start, expected: "no leading zero" });
    }
    let integer = &text[integer_start..pos];
    let mut fraction: Option<&[u8]> = None;
    if text.get(pos) == Some(&b'.') {
        let (end, count) = digits(pos + 1);
        if count == 0 {
            return Err(fail(pos + 1));
        }
        fraction = Some(&text[pos + 1..end]);
        pos = end;
    }
    let mut exponent: Option<i64> = None;
    if matches!(text.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        let exponent_negative = text.get(pos) == Some(&b'-');
        if matches!(text.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        let (end, count) = digits(pos);
        if count == 0 {
            return Err(fail(pos));
        }
        let magnitude = saturating_decimal(&text[pos..end]);
        exponent = Some(if exponent_negative { -magnitude } else { magnitude });
        pos = end;
    }
    let as_number = match (fraction, exponent) {
        (None, None) => fits_64_bits(negative, integer),
        _ => zero_or_normal(integer, fraction.unwrap_or(b""), exponent.unwrap_or(0)),
    };
    Ok((pos, as_number))
}

/// The value of the decimal `digits`, capped at 2^40: larger than any digit count a
/// PostgreSQL value (1 GB at most) can offset it by.
fn saturating_decimal(digits: &[u8]) -> i64 {
    const CAP: i64 = 1 << 40;
    digits.iter().fold(0, |value, &d| (value * 10 + i64::from(d - b'0')).min(CAP))
}

/// Whether the integer `digits` (no sign, no leading zero) negated if `negative` is in
/// `-2^63 ..= 2^64-1`, which serde_json reads exactly as an `i64` or a `u64`.
fn fits_64_bits(negative: bool, digits: &[u8]) -> bool {
    let limit: &[u8] = if negative { b"9223372036854775808" } else { b"18446744073709551615" };
    // Same-length ASCII digit strings compare as their numbers.
    digits.len() < limit.len() || (digits.len() == limit.len() && digits <= limit)
}

/// Whether `integer.fraction × 10^exponent` is zero or has a magnitude in `[1e-307, 1e308)`.
fn zero_or_normal(integer: &[u8], fraction: &[u8], exponent: i64) -> bool {
    // The value is in [10^lead, 10^(lead+1)) for `lead`, the decimal exponent of its first
    // significant digit. Without leading zeros, that is the integer's first digit unless
    // the integer is 0.
    let lead = if integer == b"0" {
        match fraction.iter().position(|&d| d != b'0') {
            Some(zeros) => -i64::try_from(zeros).unwrap_or(i64::MAX) - 1,
            None => return true,
        }
    } else {
        i64::try_from(integer.len()).unwrap_or(i64::MAX) - 1
    };
    (-307..=307).contains(&lead.saturating_add(exponent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn rewrite(text: &str) -> Result<String, ValueErrorKind> {
        let mut out = Vec::new();
        write_json_text(text.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    /// `value` as a column of `_meta.before` in a document: three containers deep.
    fn in_document(value: &[u8]) -> Vec<u8> {
        [br#"{"_meta":{"before":{"c":"#, value, b"}}}"].concat()
    }

    /// `value` as an element of a `json[]` column of `_meta.before`, in a protocol line
    /// parsed as a whole: six containers deep.
    fn in_protocol_line_array(value: &[u8]) -> Vec<u8> {
        [br#"{"captured":{"binding":0,"doc":{"_meta":{"before":{"c":["#, value, b"]}}}}}"].concat()
    }

    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn nested(levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn documents_are_compacted_without_changing_values() {
        assert_eq!(
            rewrite(r#"{"a" : 1, "b": [1, 2.50, "x y"], "c": {}}"#).unwrap(),
            r#"{"a":1,"b":[1,2.50,"x y"],"c":{}}"#
        );
        assert_eq!(
            rewrite(" [1e5, -0.0, \"\\u0000\", true, false, null] ").unwrap(),
            r#"[1e5,-0.0,"\u0000",true,false,null]"#
        );
        assert_eq!(rewrite("null").unwrap(), "null");
        assert_eq!(rewrite(r#""só ünïcödé ☃""#).unwrap(), r#""só ünïcödé ☃""#);
    }

    #[test]
    fn unpaired_surrogates_become_replacement_characters() {
        assert_eq!(rewrite(r#""\ud83d""#).unwrap(), r#""\ufffd""#);
        assert_eq!(rewrite(r#""\ud83d\ude00""#).unwrap(), r#""\ud83d\ude00""#);
        assert_eq!(rewrite(r#""\udc00x""#).unwrap(), r#""\ufffdx""#);
        assert_eq!(rewrite(r#""\ud83d\u0041""#).unwrap(), r#""\ufffd\u0041""#);
        assert_eq!(rewrite(r#""\ud83d\ud83d\ude00""#).unwrap(), r#""\ufffd\ud83d\ude00""#);
        let fixed = rewrite(r#"{"\udbff": ["\ud800", "\uDFFF"]}"#).unwrap();
        serde_json::from_str::<Value>(&fixed).unwrap();
    }

    #[test]
    fn the_test_parser_is_as_strict_as_the_runtime() {
        // The properties below are only worth something if these hold.
        assert!(serde_json::from_str::<Value>("1e400").is_err());
        assert!(serde_json::from_str::<Value>(&nested(127, "")).is_ok());
        assert!(serde_json::from_str::<Value>(&nested(128, "")).is_err());
        // Accepted, but changed: why those numbers are strings too.
        assert_eq!(serde_json::from_str::<Value>("1e-400").unwrap(), serde_json::json!(0.0));
        assert!(serde_json::from_str::<Value>("18446744073709551616").unwrap().is_f64());
    }

    #[test]
    fn numbers_beyond_the_range_of_f64_become_strings_of_their_text() {
        for (text, expected) in [
            ("1e400", r#""1e400""#),
            ("-1e400", r#""-1e400""#),
            ("[1E+400, 2]", r#"["1E+400",2]"#),
            ("1e308", r#""1e308""#),
            ("10e307", r#""10e307""#),
            ("123.456e306", r#""123.456e306""#),
            ("1.7976931348623157e308", r#""1.7976931348623157e308""#),
            ("1e99999999999999999999999", r#""1e99999999999999999999999""#),
            ("9.99e307", "9.99e307"),
            ("0.1e308", "0.1e308"),
            ("-1.5e300", "-1.5e300"),
            ("1e0000000000000000000000001", "1e0000000000000000000000001"),
        ] {
            let out = rewrite(text).unwrap();
            assert_eq!(out, expected, "{text}");
            serde_json::from_slice::<Value>(&in_document(out.as_bytes())).unwrap();
        }
        let mut object = serde_json::Map::new();
        object.insert("n".into(), Value::String("-1e400".into()));
        assert_eq!(
            serde_json::from_str::<Value>(&rewrite(r#"{"n": -1e400}"#).unwrap()).unwrap(),
            Value::Object(object)
        );
    }

    #[test]
    fn integers_beyond_64_bits_become_strings_of_their_digits() {
        // jsonb prints `1e400` as a numeric: a 401-digit integer.
        let jsonb_1e400 = format!("1{}", "0".repeat(400));
        assert_eq!(rewrite(&jsonb_1e400).unwrap(), format!("\"{jsonb_1e400}\""));
        assert_eq!(rewrite(&format!("-{jsonb_1e400}")).unwrap(), format!("\"-{jsonb_1e400}\""));
        for (text, expected) in [
            ("18446744073709551615", "18446744073709551615"),
            ("18446744073709551616", r#""18446744073709551616""#),
            ("99999999999999999999", r#""99999999999999999999""#),
            ("-9223372036854775808", "-9223372036854775808"),
            ("-9223372036854775809", r#""-9223372036854775809""#),
            ("-18446744073709551615", r#""-18446744073709551615""#),
            ("12345678901234567890123", r#""12345678901234567890123""#),
            ("0", "0"),
            ("-0", "-0"),
            // Not integers in JSON's grammar: floats within range stay numbers.
            ("1e20", "1e20"),
            ("100000000000000000000.0", "100000000000000000000.0"),
        ] {
            assert_eq!(rewrite(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn numbers_too_small_for_f64_become_strings_but_zero_stays_a_number() {
        // jsonb prints `1e-400` as a numeric with 400 decimals.
        let jsonb_1e_minus_400 = format!("0.{}1", "0".repeat(399));
        assert_eq!(rewrite(&jsonb_1e_minus_400).unwrap(), format!("\"{jsonb_1e_minus_400}\""));
        for (text, expected) in [
            ("1e-400", r#""1e-400""#),
            ("-1e-400", r#""-1e-400""#),
            ("9.9e-308", r#""9.9e-308""#),
            ("4.9e-324", r#""4.9e-324""#),
            ("0.00001e-303", r#""0.00001e-303""#),
            ("1e-99999999999999999999999", r#""1e-99999999999999999999999""#),
            ("1e-307", "1e-307"),
            ("0.0001e-303", "0.0001e-303"),
            ("2.2250738585072014e-308", r#""2.2250738585072014e-308""#),
            ("0e400", "0e400"),
            ("0.000e-99999", "0.000e-99999"),
            ("-0.0e999999999999999999999", "-0.0e999999999999999999999"),
        ] {
            assert_eq!(rewrite(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn huge_arrays_are_kept_flat_with_their_numbers() {
        let count = 200_000;
        let mut text = String::from("[");
        for i in 0..count {
            text.push_str(match i % 4 {
                0 => "1e400, ",
                1 => "1.5, ",
                2 => "123456789012345678901234567890, ",
                _ => "{\"a\": [-1e-400]}, ",
            });
        }
        text.push_str("null]");
        let out = rewrite(&text).unwrap();
        let value: Value = serde_json::from_slice(&in_document(out.as_bytes())).unwrap();
        let items = value["_meta"]["before"]["c"].as_array().unwrap();
        assert_eq!(items.len(), count + 1);
        assert_eq!(items[0], "1e400");
        assert_eq!(items[1], 1.5);
        assert_eq!(items[2], "123456789012345678901234567890");
        assert_eq!(items[3]["a"][0], "-1e-400");
    }

    #[test]
    fn nesting_up_to_the_limit_is_kept_as_json() {
        let text = nested(MAX_DEPTH, "1e400");
        let out = rewrite(&text).unwrap();
        assert_eq!(out, nested(MAX_DEPTH, "\"1e400\""));
        let value: Value = serde_json::from_slice(&in_document(out.as_bytes())).unwrap();
        assert_eq!(depth(&value["_meta"]["before"]["c"]), MAX_DEPTH);

        let objects = format!("{}1{}", "{\"k\":".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(rewrite(&objects).unwrap(), objects);
    }

    #[test]
    fn a_container_one_level_beyond_the_limit_becomes_a_string_of_its_json() {
        assert_eq!(rewrite(&nested(MAX_DEPTH + 1, "")).unwrap(), nested(MAX_DEPTH, "\"[]\""));
        // The string holds the compacted subtree, repaired, with its numbers as written;
        // later siblings are written as usual, and a second deep container is a second
        // string.
        let deep = r#"{"k" : "a\"b\\c\ud83d", "n": [1e400, 2], "d": [[{}]]}"#;
        let text =
            format!("{}[{deep}, 1e400, {{\"x\": [3]}}, true]{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        let inner = r#"{"k":"a\"b\\c\ufffd","n":[1e400,2],"d":[[{}]]}"#;
        let expected = format!(
            "{}[{},\"1e400\",{},true]{}",
            "[".repeat(MAX_DEPTH - 1),
            serde_json::to_string(inner).unwrap(),
            serde_json::to_string(r#"{"x":[3]}"#).unwrap(),
            "]".repeat(MAX_DEPTH - 1)
        );
        let out = rewrite(&text).unwrap();
        assert_eq!(out, expected);
        let value: Value = serde_json::from_slice(&in_document(out.as_bytes())).unwrap();
        assert_eq!(depth(&value["_meta"]["before"]["c"]), MAX_DEPTH);

        // Parsing the string gives the subtree back.
        let subtree = r#"{"k":"\ud83d","a":[[[-2.50e3,"\\\"/"]]],"e":{}}"#;
        let text = nested(MAX_DEPTH, subtree);
        let out = rewrite(&text).unwrap();
        let mut value: &Value = &serde_json::from_str(&out).unwrap();
        for _ in 0..MAX_DEPTH {
            value = &value[0];
        }
        let held: Value = serde_json::from_str(value.as_str().unwrap()).unwrap();
        let original: Value = serde_json::from_str(&subtree.replace(r"\ud83d", r"\ufffd")).unwrap();
        assert_eq!(held, original);
    }

    #[test]
    fn the_limit_leaves_room_for_the_protocol_line_and_enclosing_values() {
        let out = rewrite(&nested(10 * MAX_DEPTH, "")).unwrap();
        // The protocol line, a `json[]` column and 21 more levels of arrays or rows.
        let spare = 21;
        let line = in_protocol_line_array(nested(spare, &out).as_bytes());
        serde_json::from_slice::<Value>(&line).unwrap();
    }

    #[test]
    fn deep_nesting_is_not_limited_by_the_call_stack() {
        let depth = 100_000;
        let out = rewrite(&nested(depth, "")).unwrap();
        let inner = nested(depth - MAX_DEPTH, "");
        assert_eq!(out, nested(MAX_DEPTH, &format!("\"{inner}\"")));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            "",
            "{",
            "[1,",
            "[1 2]",
            "{\"a\" 1}",
            "{\"a\":}",
            "{1:2}",
            "[1,]",
            "{\"a\":1,}",
            "\"abc",
            "\"\\x\"",
            "\"\\u12\"",
            "01",
            "-",
            "1.",
            "1e",
            "1e+",
            "-01e400",
            "tru",
            "[1]]",
            "{]",
            "[}",
            "1 2",
            "\"a\nb\"",
            "[\"a\\",
        ] {
            assert!(rewrite(bad).is_err(), "{bad:?} should be rejected");
        }
        let deep_bad = format!("{}1,]{}", "[".repeat(MAX_DEPTH + 5), "]".repeat(MAX_DEPTH + 4));
        assert!(rewrite(&deep_bad).is_err());
    }

    /// Pieces of string content: escapes, lone and paired surrogates, non-ASCII, and text
    /// that looks like JSON.
    const STRING_PIECES: &[&str] = &[
        "a",
        "b c",
        "\\\"",
        "\\\\",
        "\\/",
        "\\n",
        "\\t",
        "\\u00e9",
        "\\ud83d",
        "\\udc00",
        "\\ud83d\\ude00",
        "\\uDBFF\\uDFFF",
        "é",
        "☃",
        "😀",
        "{[1e400]}",
        "'",
        "\u{2028}",
    ];

    /// A small xorshift generator of valid, awkward JSON texts.
    struct Gen {
        state: u64,
        text: String,
    }

    impl Gen {
        fn next(&mut self) -> u64 {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }

        fn space(&mut self) {
            if self.below(4) == 0 {
                let space = self.pick(&[" ", "\n", "\t ", "\r\n  "]);
                self.text.push_str(space);
            }
        }

        fn digits(&mut self, count: usize) {
            for _ in 0..count {
                let digit = char::from(b'0' + u8::try_from(self.below(10)).unwrap());
                self.text.push(digit);
            }
        }

        fn number(&mut self) {
            if self.below(2) == 0 {
                self.text.push('-');
            }
            let length = match self.below(6) {
                0 => 0,
                1 => 18 + self.below(4),
                2 => 300 + self.below(120),
                _ => 1 + self.below(8),
            };
            if length == 0 {
                self.text.push('0');
            } else {
                let first = char::from(b'1' + u8::try_from(self.below(9)).unwrap());
                self.text.push(first);
                self.digits(length - 1);
            }
            if self.below(2) == 0 {
                self.text.push('.');
                let zeros = match self.below(4) {
                    0 => 300 + self.below(120),
                    _ => self.below(3),
                };
                let zeros = "0".repeat(zeros);
                self.text.push_str(&zeros);
                let count = 1 + self.below(25);
                self.digits(count);
            }
            if self.below(2) == 0 {
                let marker = self.pick(&["e", "E", "e+", "E-", "e-", "e00"]);
                self.text.push_str(marker);
                let magnitude = match self.below(5) {
                    0 => "99999999999999999999999".to_string(),
                    1 => (290 + self.below(40)).to_string(),
                    2 => (self.below(700)).to_string(),
                    _ => self.below(20).to_string(),
                };
                self.text.push_str(&magnitude);
            }
        }

        /// A string starting with `prefix` (which keeps keys of one object distinct, so that
        /// the deepest member is never overwritten by a duplicate).
        fn string(&mut self, prefix: &str) {
            self.text.push('"');
            self.text.push_str(prefix);
            for _ in 0..self.below(6) {
                let piece = self.pick(STRING_PIECES);
                self.text.push_str(piece);
            }
            self.text.push('"');
        }

        fn scalar(&mut self) {
            match self.below(6) {
                0 | 1 => self.number(),
                2 | 3 => self.string(""),
                _ => {
                    let literal = self.pick(&["true", "false", "null"]);
                    self.text.push_str(literal);
                }
            }
        }

        /// A value nesting exactly `levels` containers at its deepest.
        fn value(&mut self, levels: usize) {
            self.space();
            if levels == 0 {
                self.scalar();
                self.space();
                return;
            }
            let object = self.below(2) == 0;
            self.text.push(if object { '{' } else { '[' });
            let count = 1 + self.below(3);
            let deep = self.below(count);
            for i in 0..count {
                if i > 0 {
                    self.text.push(',');
                }
                if object {
                    self.space();
                    self.string(&i.to_string());
                    self.space();
                    self.text.push(':');
                }
                let inner = if i == deep { levels - 1 } else { self.below(levels.min(3)) };
                self.value(inner);
            }
            self.text.push(if object { '}' } else { ']' });
            self.space();
        }
    }

    #[test]
    fn random_json_always_parses_strictly_inside_a_document() {
        let mut gen = Gen { state: 0x9E37_79B9_7F4A_7C15, text: String::new() };
        for case in 0..3_000 {
            gen.text.clear();
            let levels = match case % 4 {
                0 => gen.below(4),
                1 => gen.below(12),
                2 => MAX_DEPTH - 3 + gen.below(7),
                _ => 120 + gen.below(30),
            };
            gen.value(levels);
            let text = gen.text.clone();
            let mut out = Vec::new();
            write_json_text(text.as_bytes(), &mut out)
                .unwrap_or_else(|e| panic!("valid JSON {text:?} was rejected: {e:?}"));
            let document: Value = serde_json::from_slice(&in_document(&out)).unwrap_or_else(|e| {
                panic!("{text:?} gave {:?}, which fails in a document: {e}", String::from_utf8_lossy(&out))
            });
            let value = &document["_meta"]["before"]["c"];
            assert!(depth(value) <= MAX_DEPTH, "{text:?}");
            assert_eq!(depth(value), levels.min(MAX_DEPTH), "{text:?}");
            serde_json::from_slice::<Value>(&in_protocol_line_array(&out)).unwrap();
            // The output is its own encoding: nothing is left to fix.
            let mut again = Vec::new();
            write_json_text(&out, &mut again).unwrap();
            assert_eq!(again, out, "{text:?}");
        }
    }
}
