//! Readers and checks of single configured values, shared by the CDC and batch
//! configurations: host names and addresses, identifiers, Go durations, and the helpers
//! that build error messages.
//!
//! Invariants: every error names its field and carries a hint; a configured value is
//! echoed only through [`echo`] (quoted and cut at 80 characters) and serde's messages only
//! through [`shorten`], so no error grows with its input. None of these ever sees a secret.

use std::time::Duration;

use super::ConfigError;

/// An invalid field, with why and what to do.
pub(crate) fn invalid(field: &str, reason: impl Into<String>, hint: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_string(), reason: reason.into(), hint: hint.into() }
}

/// An error text cut to a readable length (serde quotes whole offending values).
pub(crate) fn shorten(text: &str) -> String {
    const LIMIT: usize = 600;
    if text.chars().count() <= LIMIT {
        return text.to_string();
    }
    let head: String = text.chars().take(LIMIT).collect();
    format!("{head}...")
}

/// A configured value quoted for an error message, shortened when it is long.
pub(crate) fn echo(value: &str) -> String {
    const LIMIT: usize = 80;
    if value.chars().count() <= LIMIT {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(LIMIT).collect();
    format!("{head:?}... ({} bytes)", value.len())
}

/// PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1).
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// A name that reaches the server as an identifier: at most 63 bytes, no control
/// characters (a NUL cannot be sent at all). The name is echoed only when it is short.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(invalid(
            field,
            format!("a name of {} bytes is longer than PostgreSQL's 63-byte identifier limit", name.len()),
            "PostgreSQL truncates longer names, so this one can never match: use the name as the server shows it",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{} contains a control character", echo(name)),
            "remove control characters such as NUL, tab or newline",
        ));
    }
    Ok(())
}

/// The address text before it is split: a host name, not a URL or a connection string.
pub(crate) fn check_address_text(address: &str) -> Result<(), ConfigError> {
    if address.len() > 255 {
        return Err(invalid(
            "address",
            format!("an address of {} bytes is too long", address.len()),
            "write the address as host or host:port",
        ));
    }
    if address.contains("://") || address.contains('@') || address.contains('/') {
        return Err(invalid(
            "address",
            "looks like a connection URL or string, not host:port",
            "set \"address\" to host or host:port only, and put the user, password and database in their own fields",
        ));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "address",
            format!("{} contains whitespace or control characters", echo(address)),
            "write the address as host or host:port",
        ));
    }
    Ok(())
}

/// Connection poolers drop the `replication` startup parameter, so logical replication
/// through them fails in confusing ways: refuse the well-known pooler addresses upfront.
pub(super) fn check_pooler(address: &str, host: &str, port: u16) -> Result<(), ConfigError> {
    let host = host.to_ascii_lowercase();
    if host.ends_with(".pooler.supabase.com") || (host.ends_with(".supabase.co") && port == 6543) {
        return Err(invalid(
            "address",
            format!("{address:?} is a Supabase connection pooler, which cannot carry logical replication"),
            "use the direct database address (db.<project>.supabase.co:5432) instead of the pooler",
        ));
    }
    if host.ends_with(".neon.tech") && host.split('.').next().is_some_and(|label| label.ends_with("-pooler")) {
        return Err(invalid(
            "address",
            format!("{address:?} is a Neon pooled connection, which cannot carry logical replication"),
            "use the direct endpoint: remove \"-pooler\" from the host name",
        ));
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
pub(crate) fn parse_address(address: &str) -> Result<(String, u16), ConfigError> {
    let bad_port = |port: &str| {
        invalid(
            "address",
            format!("port {} is not a number between 1 and 65535", echo(port)),
            "write the address as host or host:port",
        )
    };
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| {
            invalid("address", "unterminated \"[\" in an IPv6 address", "write IPv6 addresses as [addr]:port")
        })?;
        let port = match tail.strip_prefix(':') {
            Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad_port(port))?,
            None if tail.is_empty() => 5432,
            None => {
                return Err(invalid("address", "unexpected text after \"]\"", "write IPv6 addresses as [addr]:port"))
            }
        };
        return Ok((host.to_string(), port));
    }
    if address.matches(':').count() > 1 {
        return Ok((address.to_string(), 5432));
    }
    match address.split_once(':') {
        Some((host, port)) => {
            if host.is_empty() {
                return Err(invalid("address", "the host part is empty", "write the address as host or host:port"));
            }
            Ok((host.to_string(), port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad_port(port))?))
        }
        None => Ok((address.to_string(), 5432)),
    }
}

/// A duration as Go's `time.ParseDuration` reads it (the Go connector validates its
/// duration settings with it): a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), like `15m`, `1h30m`, `1.5h`;
/// `0` alone needs no unit. Negative durations, and those beyond Go's 2^63-1 ns, are `None`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
            fraction = &after_dot[..len];
            rest = &after_dot[len..];
        }
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per_unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        // Fraction digits beyond nanosecond precision of the largest unit change nothing.
        let fraction = &fraction[..fraction.len().min(20)];
        let fraction_nanos = if fraction.is_empty() {
            0
        } else {
            fraction.parse::<u128>().ok()? * nanos_per_unit / 10u128.pow(fraction.len() as u32)
        };
        total = total.checked_add(whole.checked_mul(nanos_per_unit)?.checked_add(fraction_nanos)?)?;
        if total > i64::MAX as u128 {
            return None;
        }
    }
    Some(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_accept_ports_and_ipv6() {
        assert_eq!(parse_address("h:6000").unwrap(), ("h".to_string(), 6000));
        assert_eq!(parse_address("[::1]:7").unwrap(), ("::1".to_string(), 7));
        assert_eq!(parse_address("::1").unwrap(), ("::1".to_string(), 5432));
        assert!(parse_address("h:0").is_err());
        assert!(parse_address("h:x").is_err());
    }

    #[test]
    fn durations_are_read_like_go() {
        let d = |text: &str| parse_duration(text);
        assert_eq!(d("15m"), Some(Duration::from_secs(900)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(d("2us"), Some(Duration::from_micros(2)));
        assert_eq!(d("2\u{b5}s"), Some(Duration::from_micros(2)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("+5s"), Some(Duration::from_secs(5)));
        for bad in ["", "5", "-5m", "5x", ".s", "1h 30m", "3000000h"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }
}
