//! PostgreSQL log sequence numbers.
//!
//! An LSN is a 64-bit byte position in the write-ahead log. PostgreSQL prints it as two
//! hexadecimal halves, `X/Y` (upper and lower 32 bits), and that text is also the form
//! the capture state stores as its `cursor`, so that checkpoints written by Estuary's Go
//! connector and by this one are interchangeable.

use std::fmt;
use std::str::FromStr;

/// A write-ahead log position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The zero position, which PostgreSQL uses to mean "no position".
    pub const ZERO: Lsn = Lsn(0);

    /// Whether this is the zero position.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not of the form `X/Y` with two hexadecimal halves of at most 32 bits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by \"/\", like \"16/B374D848\"")]
pub struct ParseLsnError(pub String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(text.to_string());
        let (high, low) = text.trim().split_once('/').ok_or_else(err)?;
        let parse_half = |half: &str| -> Result<u64, ParseLsnError> {
            if half.is_empty() || half.len() > 8 {
                return Err(err());
            }
            u64::from_str_radix(half, 16).map_err(|_| err())
        };
        Ok(Lsn((parse_half(high)? << 32) | parse_half(low)?))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips_in_postgres_notation() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
    }

    #[test]
    fn malformed_lsn_text_is_rejected() {
        for bad in ["", "16", "/1", "1/", "G/1", "123456789/0", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn lsn_order_follows_wal_position() {
        assert!("0/FFFFFFFF".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
    }
}
