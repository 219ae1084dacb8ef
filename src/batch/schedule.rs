//! Pure: polling schedules, written as the Go connector writes them.
//!
//! A schedule is either a Go duration (`5m`, `1h30m`, `90s`, `1.5h`): poll that long after
//! the previous poll started, or `daily at HH:MMZ` (UTC; the `Z` may be left out): poll once
//! a day at that time. The next poll is computed from when the last one started, which the
//! state records, so a restarted capture keeps its rhythm instead of polling at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When to poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// This long after the previous poll started.
    Every(Duration),
    /// Every day at this many seconds after midnight UTC.
    DailyAt(u32),
}

impl Schedule {
    /// Parse a schedule; the error says what is wrong, for a message that names the field.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if let Some(time) = text.strip_prefix("daily at ") {
            let time = time.trim();
            let clock = time.strip_suffix('Z').unwrap_or(time);
            let parsed = clock.split_once(':').and_then(|(h, m)| {
                let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
                (h < 24 && m < 60 && clock.len() <= 5 && m.to_string().len() <= 2).then_some(h * 3600 + m * 60)
            });
            return parsed
                .map(Schedule::DailyAt)
                .ok_or_else(|| format!("{time:?} is not a time of day (write it like \"daily at 13:05Z\", in UTC)"));
        }
        parse_go_duration(text).map(Schedule::Every)
    }

    /// The first instant after `after` that the schedule allows.
    pub fn next(&self, after: SystemTime) -> SystemTime {
        match *self {
            Schedule::Every(period) => after + period,
            Schedule::DailyAt(seconds) => {
                let since_epoch = after.duration_since(UNIX_EPOCH).unwrap_or_default();
                let day_start = since_epoch.as_secs() / 86_400 * 86_400;
                let mut next = UNIX_EPOCH + Duration::from_secs(day_start + u64::from(seconds));
                if next <= after {
                    next += Duration::from_secs(86_400);
                }
                next
            }
        }
    }
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`), like `1h30m` or `1.5s`. Negative durations are refused here (Go
/// accepts them, and then polls continuously); `0` alone is allowed.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let original = text;
    let bad = || {
        format!(
            "{original:?} is not a duration or a daily schedule (write e.g. \"5m\", \"1h30m\", \"24h\" or \"daily at 13:05Z\")"
        )
    };
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.starts_with('-') {
        return Err(format!("{original:?} is a negative duration"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        let mut part = whole.checked_mul(unit_nanos).ok_or_else(bad)?;
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| bad())?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(Schedule::parse("5m"), Ok(Schedule::Every(Duration::from_secs(300))));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("+2s"), Ok(Duration::from_secs(2)));
        for bad in ["", "5", "m", "5 m", "5d", "1..2s", "-5m", "daily"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn daily_schedules_poll_at_the_next_time_of_day_in_utc() {
        let schedule = Schedule::parse("daily at 12:34Z").unwrap();
        assert_eq!(schedule, Schedule::DailyAt(12 * 3600 + 34 * 60));
        assert_eq!(Schedule::parse("daily at 7:05"), Ok(Schedule::DailyAt(7 * 3600 + 5 * 60)));
        for bad in ["daily at 24:00Z", "daily at 12:60Z", "daily at noon", "daily at 12:345Z"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let day = 86_400;
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        // Before the time of day: today; at or after it: tomorrow.
        assert_eq!(schedule.next(at(10 * day + 3600)), at(10 * day + 12 * 3600 + 34 * 60));
        assert_eq!(schedule.next(at(10 * day + 12 * 3600 + 34 * 60)), at(11 * day + 12 * 3600 + 34 * 60));
        assert_eq!(Schedule::Every(Duration::from_secs(5)).next(at(7)), at(12));
    }
}
