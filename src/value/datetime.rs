//! Dates, timestamps and times: PostgreSQL ISO output → RFC 3339.
//!
//! No date crate covers PostgreSQL's range (timestamps from 4713 BC to 294276 AD, dates
//! to 5874897 AD, plus `infinity` and `-infinity`), so this is a small hand-written
//! converter over the `DateStyle=ISO` text: `2024-01-15 06:30:00.12`,
//! `0044-03-15 10:00:00+00 BC`, `12:00:00+05:30:15`.
//!
//! Dates use the proleptic Gregorian calendar with astronomical year numbering, as
//! ISO 8601 and PostgreSQL do: 1 BC is year 0000, 2 BC is year -0001.
//!
//! What `format: date`/`date-time`/`time` cannot express, and what is written instead:
//!
//! | PostgreSQL | JSON value | range bound |
//! |---|---|---|
//! | `infinity` | `9999-12-31T23:59:59Z` (`9999-12-31` for dates) | `infinity` |
//! | `-infinity` | `0000-01-01T00:00:00Z` (`0000-01-01`) | `-infinity` |
//! | year after 9999 | same as `infinity` (saturates) | `+12345-06-07T…Z` |
//! | year before 1 BC | same as `-infinity` (saturates) | `-0043-03-15T…Z` |
//! | time `24:00:00` | `23:59:59.999999999` (no real value has 9 digits) | — |
//! | timetz offset with seconds (`+05:30:15`) | converted to UTC, `Z` | — |
//!
//! The infinity sentinels are the Go connector's, so existing collections keep their
//! values. Go mapped every out-of-range year (including year 12345) to `0000-01-01…`;
//! saturating instead keeps values in order. Range bounds live in a plain string, so there
//! the conversion is lossless.

use super::error::ValueErrorKind;

/// Where a rendered date or time goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A JSON value checked against `format: date`/`date-time`: years 0000–9999 only;
    /// infinities and other years become the sentinels.
    Value,
    /// A bound inside a range's string: any year, infinities by name.
    RangeBound,
    /// A JSON value in the Go connector's form: infinities become the sentinels, and every
    /// year outside 0000–9999 becomes `0000-01-01` (Go's parse-error fallback).
    GoValue,
}

const MAX_TIMESTAMP: &[u8] = b"9999-12-31T23:59:59Z";
const MIN_TIMESTAMP: &[u8] = b"0000-01-01T00:00:00Z";
const MAX_DATE: &[u8] = b"9999-12-31";
const MIN_DATE: &[u8] = b"0000-01-01";
/// What `24:00:00` becomes: after every real value, and unlike any (PostgreSQL keeps
/// microseconds, so no real value has nine fractional digits).
const END_OF_DAY: &[u8] = b"23:59:59.999999999";

const SECONDS_PER_DAY: i64 = 86_400;

/// A forward-only reader over the text.
struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a [u8]) -> Self {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn error(&self, expected: &'static str) -> ValueErrorKind {
        if self.pos >= self.text.len() {
            ValueErrorKind::Truncated { expected }
        } else {
            ValueErrorKind::Syntax { offset: self.pos, expected }
        }
    }

    fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), ValueErrorKind> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    /// Reads `min..=max` decimal digits.
    fn number(&mut self, min: usize, max: usize, expected: &'static str) -> Result<i64, ValueErrorKind> {
        let start = self.pos;
        let mut value: i64 = 0;
        while self.pos - start < max {
            match self.peek() {
                Some(b @ b'0'..=b'9') => {
                    value = value * 10 + i64::from(b - b'0');
                    self.pos += 1;
                }
                _ => break,
            }
        }
        if self.pos - start < min {
            return Err(self.error(expected));
        }
        Ok(value)
    }

    /// After a `.`: one or more digits, returned without trailing zeros.
    fn fraction(&mut self) -> Result<&'a [u8], ValueErrorKind> {
        if self.peek() != Some(b'.') {
            return Ok(&[]);
        }
        self.pos += 1;
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("a fractional digit"));
        }
        let digits = &self.text[start..self.pos];
        let kept = digits.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
        Ok(&digits[..kept])
    }

    fn finish(&self) -> Result<(), ValueErrorKind> {
        if self.pos == self.text.len() {
            Ok(())
        } else {
            Err(ValueErrorKind::Syntax { offset: self.pos, expected: "end of value" })
        }
    }
}

/// A calendar date, astronomical year numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: i64,
    day: i64,
}

/// A time of day. `fraction` holds the fractional-second digits without trailing zeros.
#[derive(Clone, Copy, Debug)]
struct Clock<'a> {
    hour: i64,
    minute: i64,
    second: i64,
    fraction: &'a [u8],
}

impl Clock<'_> {
    fn seconds_of_day(&self) -> i64 {
        self.hour * 3600 + self.minute * 60 + self.second
    }
}

fn is_leap_year(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(date: Civil) -> i64 {
    let year = if date.month <= 2 { date.year - 1 } else { date.year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = if date.month > 2 { date.month - 3 } else { date.month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + date.day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> Civil {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    Civil { year, month, day }
}

/// `YYYY-MM-DD` with a year of four or more digits (the era comes later in the text).
fn parse_date(cursor: &mut Cursor<'_>) -> Result<Civil, ValueErrorKind> {
    let year = cursor.number(4, 9, "a four-digit year")?;
    cursor.expect(b'-', "'-' after the year")?;
    let month = cursor.number(2, 2, "a two-digit month")?;
    cursor.expect(b'-', "'-' after the month")?;
    let day = cursor.number(2, 2, "a two-digit day")?;
    Ok(Civil { year, month, day })
}

/// `HH:MM:SS[.f]`; `24:00:00` is the only time with hour 24.
fn parse_clock<'a>(cursor: &mut Cursor<'a>) -> Result<Clock<'a>, ValueErrorKind> {
    let start = cursor.pos;
    let hour = cursor.number(2, 2, "a two-digit hour")?;
    cursor.expect(b':', "':' after the hour")?;
    let minute = cursor.number(2, 2, "two-digit minutes")?;
    cursor.expect(b':', "':' after the minutes")?;
    let second = cursor.number(2, 2, "two-digit seconds")?;
    let fraction = cursor.fraction()?;
    let valid = minute <= 59
        && second <= 59
        && (hour <= 23 || (hour == 24 && minute == 0 && second == 0 && fraction.is_empty()));
    if !valid {
        return Err(ValueErrorKind::Syntax { offset: start, expected: "a time of day up to 24:00:00" });
    }
    Ok(Clock { hour, minute, second, fraction })
}

/// `±HH[:MM[:SS]]` as seconds east of UTC.
fn parse_offset(cursor: &mut Cursor<'_>) -> Result<i64, ValueErrorKind> {
    let sign = match cursor.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(cursor.error("a UTC offset")),
    };
    cursor.pos += 1;
    let hours = cursor.number(2, 2, "two-digit offset hours")?;
    let mut minutes = 0;
    let mut seconds = 0;
    if cursor.peek() == Some(b':') {
        cursor.pos += 1;
        minutes = cursor.number(2, 2, "two-digit offset minutes")?;
        if cursor.peek() == Some(b':') {
            cursor.pos += 1;
            seconds = cursor.number(2, 2, "two-digit offset seconds")?;
        }
    }
    if minutes > 59 || seconds > 59 {
        return Err(ValueErrorKind::OutOfRange { what: "UTC offset" });
    }
    Ok(sign * (hours * 3600 + minutes * 60 + seconds))
}

/// A trailing ` BC` turns the year into an astronomical one; then the date is checked.
fn parse_era(cursor: &mut Cursor<'_>, date: &mut Civil) -> Result<(), ValueErrorKind> {
    if cursor.text[cursor.pos..].starts_with(b" BC") {
        cursor.pos += 3;
        if date.year == 0 {
            return Err(ValueErrorKind::OutOfRange { what: "year 0 BC" });
        }
        date.year = 1 - date.year;
    }
    if !(1..=12).contains(&date.month) || date.day < 1 || date.day > days_in_month(date.year, date.month) {
        return Err(ValueErrorKind::OutOfRange { what: "date" });
    }
    Ok(())
}

fn push_two(out: &mut Vec<u8>, value: i64) {
    out.push(b'0' + u8::try_from(value.rem_euclid(100) / 10).unwrap_or(0));
    out.push(b'0' + u8::try_from(value.rem_euclid(10)).unwrap_or(0));
}

/// Writes a year: four digits for 0–9999, otherwise ISO 8601 expanded (`+12345`, `-0043`).
fn push_year(out: &mut Vec<u8>, year: i64) {
    if (0..=9999).contains(&year) {
        push_two(out, year / 100);
        push_two(out, year % 100);
    } else if year > 9999 {
        out.push(b'+');
        out.extend_from_slice(year.to_string().as_bytes());
    } else {
        out.push(b'-');
        let magnitude = year.unsigned_abs();
        out.extend_from_slice(format!("{magnitude:04}").as_bytes());
    }
}

fn push_date(out: &mut Vec<u8>, date: Civil) {
    push_year(out, date.year);
    out.push(b'-');
    push_two(out, date.month);
    out.push(b'-');
    push_two(out, date.day);
}

/// `HH:MM:SS[.f]` from a time of day in seconds plus fraction digits.
fn push_clock(out: &mut Vec<u8>, seconds_of_day: i64, fraction: &[u8]) {
    push_two(out, seconds_of_day / 3600);
    out.push(b':');
    push_two(out, seconds_of_day / 60 % 60);
    out.push(b':');
    push_two(out, seconds_of_day % 60);
    if !fraction.is_empty() {
        out.push(b'.');
        out.extend_from_slice(fraction);
    }
}

/// The value (or bound) of an infinite date or timestamp, if `text` is one.
fn infinity(text: &[u8], target: Target, max: &'static [u8], min: &'static [u8]) -> Option<&'static [u8]> {
    match (text, target) {
        (b"infinity", Target::Value | Target::GoValue) => Some(max),
        (b"-infinity", Target::Value | Target::GoValue) => Some(min),
        (b"infinity", Target::RangeBound) => Some(b"infinity"),
        (b"-infinity", Target::RangeBound) => Some(b"-infinity"),
        _ => None,
    }
}

/// Writes a `date` (unquoted) for `target`.
pub(crate) fn write_date(text: &[u8], target: Target, out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    write_date_in(text, target, (MAX_DATE, MIN_DATE), b"", out)
}

/// Writes a `date` (unquoted) as the Go connector did without `date_as_date`, and for
/// `daterange` bounds: a timestamp at midnight UTC.
pub(crate) fn write_date_as_timestamp(text: &[u8], target: Target, out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    write_date_in(text, target, (MAX_TIMESTAMP, MIN_TIMESTAMP), b"T00:00:00Z", out)
}

/// A date followed by `suffix`, or one of the `(max, min)` sentinels for `target` (see
/// [`infinity`]; out-of-range years saturate, or are Go's minimum in Go's form).
fn write_date_in(
    text: &[u8],
    target: Target,
    (max, min): (&'static [u8], &'static [u8]),
    suffix: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ValueErrorKind> {
    if let Some(fixed) = infinity(text, target, max, min) {
        out.extend_from_slice(fixed);
        return Ok(());
    }
    let mut cursor = Cursor::new(text);
    let mut date = parse_date(&mut cursor)?;
    parse_era(&mut cursor, &mut date)?;
    cursor.finish()?;
    match target {
        Target::Value if date.year > 9999 => out.extend_from_slice(max),
        Target::Value if date.year < 0 => out.extend_from_slice(min),
        Target::GoValue if !(0..=9999).contains(&date.year) => out.extend_from_slice(min),
        _ => {
            push_date(out, date);
            out.extend_from_slice(suffix);
        }
    }
    Ok(())
}

/// Writes a `timestamp` or `timestamptz` (unquoted) for `target`, in UTC.
pub(crate) fn write_timestamp(
    text: &[u8],
    with_time_zone: bool,
    target: Target,
    out: &mut Vec<u8>,
) -> Result<(), ValueErrorKind> {
    if let Some(fixed) = infinity(text, target, MAX_TIMESTAMP, MIN_TIMESTAMP) {
        out.extend_from_slice(fixed);
        return Ok(());
    }
    let mut cursor = Cursor::new(text);
    let mut date = parse_date(&mut cursor)?;
    match cursor.peek() {
        Some(b' ' | b'T') => cursor.pos += 1,
        _ => return Err(cursor.error("' ' between date and time")),
    }
    let clock = parse_clock(&mut cursor)?;
    let offset = if with_time_zone { parse_offset(&mut cursor)? } else { 0 };
    parse_era(&mut cursor, &mut date)?;
    cursor.finish()?;

    // Shift to UTC (TimeZone=UTC makes this a no-op, but any offset is honoured).
    let seconds = clock.seconds_of_day() - offset;
    let days = days_from_civil(date) + seconds.div_euclid(SECONDS_PER_DAY);
    let date = civil_from_days(days);
    let seconds_of_day = seconds.rem_euclid(SECONDS_PER_DAY);

    match target {
        Target::Value if date.year > 9999 => out.extend_from_slice(MAX_TIMESTAMP),
        Target::Value if date.year < 0 => out.extend_from_slice(MIN_TIMESTAMP),
        Target::GoValue if !(0..=9999).contains(&date.year) => out.extend_from_slice(MIN_TIMESTAMP),
        _ => {
            push_date(out, date);
            out.push(b'T');
            push_clock(out, seconds_of_day, clock.fraction);
            out.push(b'Z');
        }
    }
    Ok(())
}

fn quoted(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), ValueErrorKind>,
) -> Result<(), ValueErrorKind> {
    out.push(b'"');
    write(out)?;
    out.push(b'"');
    Ok(())
}

/// The value target for saturating (this connector) or Go's out-of-range years.
pub(crate) fn value_target(saturate: bool) -> Target {
    if saturate {
        Target::Value
    } else {
        Target::GoValue
    }
}

/// A `date` as a JSON string: `"2024-01-15"`.
pub(crate) fn encode_date(text: &[u8], target: Target, out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    quoted(out, |out| write_date(text, target, out))
}

/// A `date` as a JSON timestamp string at midnight UTC: `"2024-01-15T00:00:00Z"`.
pub(crate) fn encode_date_as_timestamp(text: &[u8], target: Target, out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    quoted(out, |out| write_date_as_timestamp(text, target, out))
}

/// A `timestamp`/`timestamptz` as a JSON string: `"2024-01-15T06:30:00.12Z"`.
pub(crate) fn encode_timestamp(
    text: &[u8],
    with_time_zone: bool,
    target: Target,
    out: &mut Vec<u8>,
) -> Result<(), ValueErrorKind> {
    quoted(out, |out| write_timestamp(text, with_time_zone, target, out))
}

/// A `time` as the Go connector wrote it without `time_as_time`: microseconds since
/// midnight, a JSON integer (`24:00:00` is 86400000000).
pub(crate) fn encode_time_micros(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    let mut cursor = Cursor::new(text);
    let clock = parse_clock(&mut cursor)?;
    cursor.finish()?;
    let mut micros: i64 = 0;
    for i in 0..6 {
        micros = micros * 10 + clock.fraction.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    let total = clock.seconds_of_day() * 1_000_000 + micros;
    out.extend_from_slice(total.to_string().as_bytes());
    Ok(())
}

/// A `time` as a JSON string: `"14:30:00Z"`.
pub(crate) fn encode_time(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    let mut cursor = Cursor::new(text);
    let clock = parse_clock(&mut cursor)?;
    cursor.finish()?;
    quoted(out, |out| {
        push_clock_or_end_of_day(out, &clock);
        out.push(b'Z');
        Ok(())
    })
}

fn push_clock_or_end_of_day(out: &mut Vec<u8>, clock: &Clock<'_>) {
    if clock.hour == 24 {
        out.extend_from_slice(END_OF_DAY);
    } else {
        push_clock(out, clock.seconds_of_day(), clock.fraction);
    }
}

/// A `timetz` as a JSON string with its offset (`"14:30:00+05:30"`), `Z` for UTC.
/// An offset RFC 3339 cannot write (with seconds) is applied instead: the time in UTC.
pub(crate) fn encode_timetz(text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueErrorKind> {
    let mut cursor = Cursor::new(text);
    let clock = parse_clock(&mut cursor)?;
    let offset = parse_offset(&mut cursor)?;
    cursor.finish()?;
    quoted(out, |out| {
        let magnitude = offset.abs();
        if magnitude % 60 != 0 || magnitude / 3600 > 23 {
            let utc = (clock.seconds_of_day() - offset).rem_euclid(SECONDS_PER_DAY);
            push_clock(out, utc, clock.fraction);
            out.push(b'Z');
        } else {
            push_clock_or_end_of_day(out, &clock);
            if offset == 0 {
                out.push(b'Z');
            } else {
                out.push(if offset > 0 { b'+' } else { b'-' });
                push_two(out, magnitude / 3600);
                out.push(b':');
                push_two(out, magnitude / 60 % 60);
            }
        }
        Ok(())
    })
}

/// PostgreSQL's epoch, 2000-01-01, in days since 1970-01-01: binary dates count days from
/// it, binary timestamps microseconds.
const POSTGRES_EPOCH_DAYS: i64 = 10_957;
const MICROS_PER_DAY: i64 = SECONDS_PER_DAY * 1_000_000;

/// A binary `date` (days since 2000-01-01; `i32::MAX` and `i32::MIN` are `infinity` and
/// `-infinity`) as a JSON string, exactly as [`encode_date`] writes the same date's text.
pub(crate) fn encode_date_days(days: i32, out: &mut Vec<u8>) {
    out.push(b'"');
    match days {
        i32::MAX => out.extend_from_slice(MAX_DATE),
        i32::MIN => out.extend_from_slice(MIN_DATE),
        _ => {
            let date = civil_from_days(i64::from(days) + POSTGRES_EPOCH_DAYS);
            match date.year {
                10_000.. => out.extend_from_slice(MAX_DATE),
                ..0 => out.extend_from_slice(MIN_DATE),
                _ => push_date(out, date),
            }
        }
    }
    out.push(b'"');
}

/// A binary `timestamp` or `timestamptz` (microseconds since 2000-01-01 00:00 UTC;
/// `i64::MAX` and `i64::MIN` are the infinities) as a JSON string, exactly as
/// [`encode_timestamp`] writes the same instant's text: fraction digits without trailing
/// zeros, years outside 0000–9999 saturated. Any `i64` is accepted (PostgreSQL's own range
/// is narrower, and every value beyond it saturates like the years it would have).
pub(crate) fn encode_timestamp_micros(micros: i64, out: &mut Vec<u8>) {
    out.push(b'"');
    match micros {
        i64::MAX => out.extend_from_slice(MAX_TIMESTAMP),
        i64::MIN => out.extend_from_slice(MIN_TIMESTAMP),
        _ => {
            let date = civil_from_days(micros.div_euclid(MICROS_PER_DAY) + POSTGRES_EPOCH_DAYS);
            let of_day = micros.rem_euclid(MICROS_PER_DAY);
            match date.year {
                10_000.. => out.extend_from_slice(MAX_TIMESTAMP),
                ..0 => out.extend_from_slice(MIN_TIMESTAMP),
                _ => {
                    let mut digits = [b'0'; 6];
                    let mut rest = of_day % 1_000_000;
                    for digit in digits.iter_mut().rev() {
                        *digit = b'0' + u8::try_from(rest % 10).unwrap_or(0);
                        rest /= 10;
                    }
                    let kept = digits.iter().rposition(|&b| b != b'0').map_or(0, |i| i + 1);
                    push_date(out, date);
                    out.push(b'T');
                    push_clock(out, of_day / 1_000_000, &digits[..kept]);
                    out.push(b'Z');
                }
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(f: impl FnOnce(&mut Vec<u8>) -> Result<(), ValueErrorKind>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn civil_day_arithmetic_round_trips_across_eras() {
        for days in (-3_000_000..3_000_000).step_by(997) {
            assert_eq!(days_from_civil(civil_from_days(days)), days);
        }
        assert_eq!(days_from_civil(Civil { year: 1970, month: 1, day: 1 }), 0);
        assert_eq!(civil_from_days(-1), Civil { year: 1969, month: 12, day: 31 });
        assert_eq!(civil_from_days(days_from_civil(Civil { year: 0, month: 2, day: 29 })).day, 29);
    }

    #[test]
    fn timestamps_become_rfc3339_utc_with_trimmed_fractions() {
        assert_eq!(
            value(|o| encode_timestamp(b"2024-01-15 06:30:00.120", false, Target::Value, o)),
            r#""2024-01-15T06:30:00.12Z""#
        );
        assert_eq!(
            value(|o| encode_timestamp(b"2024-01-15 06:30:00", false, Target::Value, o)),
            r#""2024-01-15T06:30:00Z""#
        );
        assert_eq!(
            value(|o| encode_timestamp(b"2024-01-15 06:30:00.5+00", true, Target::Value, o)),
            r#""2024-01-15T06:30:00.5Z""#
        );
    }

    #[test]
    fn timestamptz_offsets_are_converted_to_utc_across_midnight() {
        assert_eq!(
            value(|o| encode_timestamp(b"2024-01-01 01:00:00+05:30", true, Target::Value, o)),
            r#""2023-12-31T19:30:00Z""#
        );
        assert_eq!(
            value(|o| encode_timestamp(b"2024-02-28 23:00:00-08", true, Target::Value, o)),
            r#""2024-02-29T07:00:00Z""#
        );
        assert_eq!(
            value(|o| encode_timestamp(b"1850-01-01 00:00:00+00:53:28", true, Target::Value, o)),
            r#""1849-12-31T23:06:32Z""#
        );
    }

    #[test]
    fn out_of_range_timestamps_saturate_and_range_bounds_stay_exact() {
        assert_eq!(value(|o| encode_timestamp(b"infinity", false, Target::Value, o)), r#""9999-12-31T23:59:59Z""#);
        assert_eq!(value(|o| encode_timestamp(b"-infinity", true, Target::Value, o)), r#""0000-01-01T00:00:00Z""#);
        assert_eq!(
            value(|o| encode_timestamp(b"12345-06-07 01:02:03", false, Target::Value, o)),
            r#""9999-12-31T23:59:59Z""#
        );
        assert_eq!(
            value(|o| encode_timestamp(b"0044-03-15 10:00:00+00 BC", true, Target::Value, o)),
            r#""0000-01-01T00:00:00Z""#
        );
        assert_eq!(
            value(|o| encode_timestamp(b"0001-06-01 10:00:00 BC", false, Target::Value, o)),
            r#""0000-06-01T10:00:00Z""#
        );
        assert_eq!(
            value(|o| write_timestamp(b"12345-06-07 01:02:03", false, Target::RangeBound, o)),
            "+12345-06-07T01:02:03Z"
        );
        assert_eq!(
            value(|o| write_timestamp(b"0044-03-15 10:00:00+00 BC", true, Target::RangeBound, o)),
            "-0043-03-15T10:00:00Z"
        );
        assert_eq!(value(|o| write_timestamp(b"infinity", true, Target::RangeBound, o)), "infinity");
    }

    #[test]
    fn dates_stay_dates_and_saturate_out_of_range() {
        assert_eq!(value(|o| encode_date(b"2024-02-29", Target::Value, o)), r#""2024-02-29""#);
        assert_eq!(value(|o| encode_date(b"infinity", Target::Value, o)), r#""9999-12-31""#);
        assert_eq!(value(|o| encode_date(b"-infinity", Target::Value, o)), r#""0000-01-01""#);
        assert_eq!(value(|o| encode_date(b"5874897-12-31", Target::Value, o)), r#""9999-12-31""#);
        assert_eq!(value(|o| encode_date(b"0044-03-15 BC", Target::Value, o)), r#""0000-01-01""#);
        assert_eq!(value(|o| write_date(b"5874897-12-31", Target::RangeBound, o)), "+5874897-12-31");
    }

    #[test]
    fn times_end_in_z_and_midnight_at_the_end_of_day_stays_distinct() {
        assert_eq!(value(|o| encode_time(b"14:30:00", o)), r#""14:30:00Z""#);
        assert_eq!(value(|o| encode_time(b"23:59:59.999999", o)), r#""23:59:59.999999Z""#);
        assert_eq!(value(|o| encode_time(b"24:00:00", o)), r#""23:59:59.999999999Z""#);
    }

    #[test]
    fn timetz_keeps_minute_offsets_and_converts_second_offsets() {
        assert_eq!(value(|o| encode_timetz(b"14:30:00+05:30", o)), r#""14:30:00+05:30""#);
        assert_eq!(value(|o| encode_timetz(b"12:00:00-08", o)), r#""12:00:00-08:00""#);
        assert_eq!(value(|o| encode_timetz(b"00:00:00+00", o)), r#""00:00:00Z""#);
        assert_eq!(value(|o| encode_timetz(b"12:00:00+05:30:15", o)), r#""06:29:45Z""#);
        assert_eq!(value(|o| encode_timetz(b"24:00:00+05", o)), r#""23:59:59.999999999+05:00""#);
    }

    #[test]
    fn malformed_dates_and_times_are_errors() {
        let mut out = Vec::new();
        assert!(encode_date(b"2023-02-29", Target::Value, &mut out).is_err());
        assert!(encode_date(b"2023-13-01", Target::Value, &mut out).is_err());
        assert!(encode_date(b"0000-01-01 BC", Target::Value, &mut out).is_err());
        assert!(encode_date(b"2023-01-0", Target::Value, &mut out).is_err());
        assert!(encode_timestamp(b"2023-01-01 10:00", false, Target::Value, &mut out).is_err());
        assert!(encode_timestamp(b"2023-01-01 10:00:00", true, Target::Value, &mut out).is_err());
        assert!(encode_timestamp(b"2023-01-01 10:00:00.", false, Target::Value, &mut out).is_err());
        assert!(encode_time(b"24:00:01", &mut out).is_err());
        assert!(encode_time(b"12:60:00", &mut out).is_err());
        assert!(encode_timetz(b"12:00:00", &mut out).is_err());
        assert!(encode_time(b"", &mut out).is_err());
    }
}
