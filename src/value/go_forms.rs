//! Scalar values in the Go connector's forms, for captures that keep them
//! ([`super::ValueFormats`]): `interval` as pgx printed it, `numeric` zero as `0`, `inet`
//! always with its prefix length.
//!
//! The interval form is pgx's text: the months (`14 mon`), the days (`3 day`) and the
//! time of day (`05:30:00`, `-01:02:03.500000`), each only when non-zero, joined by one
//! space, with a space before the time even when it is alone (` 05:30:00`); a zero
//! interval is the empty string. This is what the Go connector's documents hold (its
//! snapshots show `14 mon 3 day`, ` 05:30:00` and ``).

use super::encode::{check_utf8, write_json_string};
use super::error::ValueErrorKind;

const MICROS_PER_SECOND: i128 = 1_000_000;

/// `interval` text in `IntervalStyle=iso_8601` (`P1Y2M3DT4H5M6.5S`, `PT0S`,
/// `P-1Y-2M3DT-4H`) as the Go connector's string.
pub(crate) fn encode_go_interval(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    let (months, days, micros) = parse_iso_interval(text)?;
    let mut parts: Vec<String> = Vec::new();
    if months != 0 {
        parts.push(format!("{months} mon"));
    }
    if days != 0 {
        parts.push(format!("{days} day"));
    }
    let mut value = parts.join(" ");
    if micros != 0 {
        let sign = if micros < 0 { "-" } else { "" };
        let abs = micros.unsigned_abs();
        let seconds = abs / 1_000_000;
        let fraction = abs % 1_000_000;
        value.push(' ');
        value.push_str(&format!("{sign}{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60));
        if fraction != 0 {
            value.push_str(&format!(".{fraction:06}"));
        }
    }
    write_json_string(out, value.as_bytes());
    Ok(())
}

/// Months, days and microseconds of an ISO 8601 interval as PostgreSQL prints it.
fn parse_iso_interval(text: &[u8]) -> Result<(i128, i128, i128), ValueErrorKind> {
    let text = check_utf8(text)?;
    let Some(body) = text.strip_prefix('P') else {
        return Err(ValueErrorKind::Syntax { offset: 0, expected: "'P' of an ISO 8601 interval" });
    };
    let (mut months, mut days, mut micros) = (0i128, 0i128, 0i128);
    let mut in_time = false;
    let mut number_start = 0;
    for (i, c) in body.char_indices() {
        let offset = i + 1;
        match c {
            'T' => {
                in_time = true;
                number_start = i + 1;
            }
            '0'..='9' | '.' | '-' | '+' => {}
            unit => {
                let number = &body[number_start..i];
                let overflow = ValueErrorKind::OutOfRange { what: "interval" };
                let (whole, fraction) = parse_decimal_micros(number)
                    .ok_or(ValueErrorKind::Syntax { offset, expected: "a number before the unit" })?;
                match (unit, in_time) {
                    ('Y', false) => months += whole * 12,
                    ('M', false) => months += whole,
                    ('W', false) => days += whole * 7,
                    ('D', false) => days += whole,
                    ('H', true) => micros += whole * 3600 * MICROS_PER_SECOND + fraction * 3600,
                    ('M', true) => micros += whole * 60 * MICROS_PER_SECOND + fraction * 60,
                    ('S', true) => micros += whole * MICROS_PER_SECOND + fraction,
                    _ => return Err(ValueErrorKind::Syntax { offset, expected: "an interval unit" }),
                }
                if months.abs() > i128::from(i32::MAX) * 12 || micros.abs() > i128::from(i64::MAX) {
                    return Err(overflow);
                }
                number_start = i + 1;
            }
        }
    }
    if number_start != body.len() {
        return Err(ValueErrorKind::Truncated { expected: "an interval unit" });
    }
    Ok((months, days, micros))
}

/// A signed decimal as its whole part and its fraction in microseconds (same sign).
fn parse_decimal_micros(number: &str) -> Option<(i128, i128)> {
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let mut micros: i128 = 0;
    for i in 0..6 {
        micros = micros * 10 + fraction.as_bytes().get(i).map_or(0, |d| i128::from(d - b'0'));
    }
    Some(if negative { (-whole, -micros) } else { (whole, micros) })
}

/// `numeric` as the Go connector wrote it: the server's digits, except that a zero (with
/// any scale) is `"0"`.
pub(crate) fn go_numeric_zero(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.iter().all(|b| matches!(b, b'0' | b'.')) && digits.contains(&b'0')
}

/// `inet` as the Go connector wrote it: always with a prefix length (`/32` or `/128` on
/// a host address).
pub(crate) fn encode_go_inet(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    check_utf8(text)?;
    if text.contains(&b'/') {
        write_json_string(out, text);
    } else {
        let suffix: &[u8] = if text.contains(&b':') { b"/128" } else { b"/32" };
        let mut value = text.to_vec();
        value.extend_from_slice(suffix);
        write_json_string(out, &value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(text: &str) -> String {
        let mut out = Vec::new();
        encode_go_interval(text.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn intervals_read_like_the_go_connectors_snapshots() {
        assert_eq!(interval("P1Y2M3D"), r#""14 mon 3 day""#);
        assert_eq!(interval("PT5H30M"), r#"" 05:30:00""#);
        assert_eq!(interval("PT0S"), r#""""#);
        assert_eq!(interval("P1MT-1H-2M-3.5S"), r#""1 mon -01:02:03.500000""#);
        assert_eq!(interval("P-3DT100H"), r#""-3 day 100:00:00""#);
        assert!(encode_go_interval(b"1 day", &mut Vec::new()).is_err());
        assert!(encode_go_interval(b"P1", &mut Vec::new()).is_err());
    }

    #[test]
    fn inet_always_has_a_prefix_and_zero_numerics_are_detected() {
        let mut out = Vec::new();
        encode_go_inet(b"192.168.1.1", &mut out).unwrap();
        encode_go_inet(b"10.0.0.1/8", &mut out).unwrap();
        encode_go_inet(b"::1", &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#""192.168.1.1/32""10.0.0.1/8""::1/128""#);
        for zero in ["0", "0.000", "-0.0"] {
            assert!(go_numeric_zero(zero.as_bytes()), "{zero}");
        }
        for other in ["0.001", "10", "NaN", "", "."] {
            assert!(!go_numeric_zero(other.as_bytes()), "{other}");
        }
    }
}
