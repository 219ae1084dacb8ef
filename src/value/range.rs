//! Ranges and multiranges → strings in PostgreSQL's own notation.
//!
//! `[1,5)`, `empty`, `(,)`, `{[1,3),[5,7)}`: the literal is kept, as in the Go connector,
//! with one change: bounds of date and time subtypes are rewritten the way their scalars
//! are, so a `tstzrange` reads `[2024-01-01T00:00:00Z,2024-12-31T00:00:00Z)` and a
//! `daterange` keeps plain dates `[2024-01-01,2024-12-31)` (Go rendered daterange bounds
//! as timestamps). The bound is inside a plain string, so nothing needs clamping:
//! `infinity` stays `infinity` and years outside 0000–9999 are written in ISO 8601
//! expanded form (`+12345-…`, `-0043-…`). Bounds of every other subtype are copied
//! exactly as printed, quotes included, so the string is still a valid range literal.

use super::datetime::{write_date, write_date_as_timestamp, write_timestamp, Target};
use super::encode::{check_utf8, write_json_string};
use super::error::{ValueError, ValueErrorKind};
use super::kind::{classify, Kind};
use super::{PgType, ValueFormats};

/// How a bound is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BoundRule {
    Verbatim,
    Date {
        target: Target,
    },
    /// A date bound as a timestamp at midnight UTC (the Go connector's form).
    DateAsTimestamp {
        target: Target,
    },
    Timestamp {
        with_time_zone: bool,
        target: Target,
    },
}

/// The rule for bounds of `subtype`. In the Go connector's form (without
/// `exact_range_bounds`), bounds went through its value conversion: infinities and years
/// outside 0000–9999 became its value sentinels; without `date_ranges_as_dates`, date
/// bounds were timestamps.
fn bound_rule(subtype: &PgType, formats: &ValueFormats) -> BoundRule {
    let target = if formats.exact_range_bounds { Target::RangeBound } else { Target::GoValue };
    // Bounds are dates or timestamps whatever the column-level `date_as_date` says.
    let scalar = ValueFormats { date_as_date: true, ..*formats };
    match classify(subtype, &scalar) {
        Kind::Date { .. } if formats.date_ranges_as_dates => BoundRule::Date { target },
        Kind::Date { .. } => BoundRule::DateAsTimestamp { target },
        Kind::Timestamp { .. } => BoundRule::Timestamp { with_time_zone: false, target },
        Kind::Timestamptz { .. } => BoundRule::Timestamp { with_time_zone: true, target },
        _ => BoundRule::Verbatim,
    }
}

/// Appends range literal `text` as a JSON string.
pub(crate) fn encode_range(
    ty: &PgType,
    subtype: &PgType,
    formats: &ValueFormats,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let fail = |kind| ValueError::new(ty, text, kind);
    check_utf8(text).map_err(fail)?;
    let mut literal = Vec::with_capacity(text.len() + 8);
    let end = write_range(text, 0, bound_rule(subtype, formats), &mut literal).map_err(fail)?;
    if end != text.len() {
        return Err(fail(ValueErrorKind::Syntax { offset: end, expected: "end of range" }));
    }
    write_json_string(out, &literal);
    Ok(())
}

/// Appends multirange literal `text` (`{[1,3),[5,7)}`, `{}`) as a JSON string.
pub(crate) fn encode_multirange(
    ty: &PgType,
    subtype: &PgType,
    formats: &ValueFormats,
    text: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let fail = |kind| ValueError::new(ty, text, kind);
    check_utf8(text).map_err(fail)?;
    let rule = bound_rule(subtype, formats);
    let mut literal = Vec::with_capacity(text.len() + 8);
    let mut pos = match text.first() {
        Some(b'{') => 1,
        Some(_) => return Err(fail(ValueErrorKind::Syntax { offset: 0, expected: "'{'" })),
        None => return Err(fail(ValueErrorKind::Truncated { expected: "'{'" })),
    };
    literal.push(b'{');
    if text.get(pos) != Some(&b'}') {
        loop {
            pos = write_range(text, pos, rule, &mut literal).map_err(fail)?;
            match text.get(pos) {
                Some(b',') => {
                    literal.push(b',');
                    pos += 1;
                }
                Some(b'}') => break,
                Some(_) => return Err(fail(ValueErrorKind::Syntax { offset: pos, expected: "',' or '}'" })),
                None => return Err(fail(ValueErrorKind::Truncated { expected: "'}'" })),
            }
        }
    }
    literal.push(b'}');
    pos += 1;
    if pos != text.len() {
        return Err(fail(ValueErrorKind::Syntax { offset: pos, expected: "end of multirange" }));
    }
    write_json_string(out, &literal);
    Ok(())
}

/// Rewrites the range starting at `start` into `literal`; returns the position after it.
fn write_range(text: &[u8], start: usize, rule: BoundRule, literal: &mut Vec<u8>) -> Result<usize, ValueErrorKind> {
    if text[start..].starts_with(b"empty") {
        literal.extend_from_slice(b"empty");
        return Ok(start + 5);
    }
    let mut pos = start;
    match text.get(pos) {
        Some(&b @ (b'[' | b'(')) => literal.push(b),
        Some(_) => return Err(ValueErrorKind::Syntax { offset: pos, expected: "'[', '(' or empty" }),
        None => return Err(ValueErrorKind::Truncated { expected: "'[' or '('" }),
    }
    pos += 1;
    let mut bound = Vec::new();
    pos = write_bound(text, pos, rule, &mut bound, literal)?;
    match text.get(pos) {
        Some(b',') => literal.push(b','),
        Some(_) => return Err(ValueErrorKind::Syntax { offset: pos, expected: "',' between bounds" }),
        None => return Err(ValueErrorKind::Truncated { expected: "','" }),
    }
    pos += 1;
    pos = write_bound(text, pos, rule, &mut bound, literal)?;
    match text.get(pos) {
        Some(&b @ (b']' | b')')) => literal.push(b),
        Some(_) => return Err(ValueErrorKind::Syntax { offset: pos, expected: "']' or ')'" }),
        None => return Err(ValueErrorKind::Truncated { expected: "']' or ')'" }),
    }
    Ok(pos + 1)
}

/// Reads one bound at `start` (possibly empty: unbounded) and writes it to `literal`;
/// returns the position of the `,` or closing bracket after it.
fn write_bound(
    text: &[u8],
    start: usize,
    rule: BoundRule,
    bound: &mut Vec<u8>,
    literal: &mut Vec<u8>,
) -> Result<usize, ValueErrorKind> {
    bound.clear();
    let mut pos = start;
    let mut in_quotes = false;
    loop {
        let Some(&b) = text.get(pos) else {
            return Err(ValueErrorKind::Truncated { expected: "the end of a range bound" });
        };
        match b {
            b'"' if in_quotes && text.get(pos + 1) == Some(&b'"') => {
                bound.push(b'"');
                pos += 2;
            }
            b'"' => {
                in_quotes = !in_quotes;
                pos += 1;
            }
            b'\\' => {
                let Some(&next) = text.get(pos + 1) else {
                    return Err(ValueErrorKind::Truncated { expected: "an escaped character" });
                };
                bound.push(next);
                pos += 2;
            }
            b',' | b']' | b')' if !in_quotes => break,
            _ => {
                bound.push(b);
                pos += 1;
            }
        }
    }
    if pos == start {
        return Ok(pos);
    }
    let inner_error = |kind: ValueErrorKind| match kind {
        // Offsets inside the bound are not offsets into the range text.
        ValueErrorKind::Syntax { expected, .. } => ValueErrorKind::Syntax { offset: start, expected },
        other => other,
    };
    match rule {
        BoundRule::Verbatim => literal.extend_from_slice(&text[start..pos]),
        BoundRule::Date { target } => write_date(bound, target, literal).map_err(inner_error)?,
        BoundRule::DateAsTimestamp { target } => {
            write_date_as_timestamp(bound, target, literal).map_err(inner_error)?
        }
        BoundRule::Timestamp { with_time_zone, target } => {
            write_timestamp(bound, with_time_zone, target, literal).map_err(inner_error)?
        }
    }
    Ok(pos)
}
