//! The payloads of CopyData messages on a replication connection (pure, no IO).
//!
//! Once `START_REPLICATION` has switched the connection to COPY BOTH mode, every message
//! in either direction is a CopyData whose first byte says what it carries
//! (<https://www.postgresql.org/docs/current/protocol-replication.html>):
//!
//! ```text
//! server → client   'w' XLogData          walStart:u64 walEnd:u64 sendTime:i64 data…
//!                   'k' Primary keepalive walEnd:u64 sendTime:i64 replyRequested:u8
//! client → server   'r' Standby status    write:u64 flush:u64 apply:u64 clientTime:i64 replyRequested:u8
//! ```
//!
//! Times are microseconds since 2000-01-01 00:00:00 UTC, PostgreSQL's epoch. The `data` of
//! an XLogData is one pgoutput message, decoded by [`crate::replication::pgoutput`].

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::lsn::Lsn;

/// One message from the server in COPY BOTH mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationFrame {
    /// WAL data: one logical decoding message.
    XLogData {
        /// Where in the WAL this message starts (0 for some pgoutput messages, e.g. in
        /// streamed transactions).
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// The server's clock when it sent the message, µs since 2000-01-01.
        server_time_us: i64,
        /// The pgoutput message.
        data: Bytes,
    },
    /// A keepalive. `wal_end` is the position the server has sent everything up to.
    Keepalive {
        wal_end: Lsn,
        server_time_us: i64,
        /// The server wants a standby status update now, or it will time the connection out.
        reply_requested: bool,
    },
}

/// A CopyData payload that is not a well-formed XLogData or keepalive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XLogDecodeError {
    #[error("empty CopyData message")]
    Empty,
    #[error("truncated {message} message: {actual} bytes, expected {expected}")]
    Truncated { message: &'static str, expected: usize, actual: usize },
    #[error("keepalive message of {actual} bytes, expected {expected}")]
    TrailingBytes { expected: usize, actual: usize },
    #[error("unknown CopyData message type {0:?}")]
    UnknownType(char),
}

const XLOG_DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8;
const KEEPALIVE_LEN: usize = 1 + 8 + 8 + 1;
/// The length of a standby status update payload.
pub const STANDBY_STATUS_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

/// Decode the payload of a CopyData message received in COPY BOTH mode.
pub fn decode_copy_data(mut payload: Bytes) -> Result<ReplicationFrame, XLogDecodeError> {
    let Some(&tag) = payload.first() else {
        return Err(XLogDecodeError::Empty);
    };
    match tag {
        b'w' => {
            if payload.len() < XLOG_DATA_HEADER_LEN {
                return Err(XLogDecodeError::Truncated {
                    message: "XLogData",
                    expected: XLOG_DATA_HEADER_LEN,
                    actual: payload.len(),
                });
            }
            payload.advance(1);
            let wal_start = Lsn(payload.get_u64());
            let wal_end = Lsn(payload.get_u64());
            let server_time_us = payload.get_i64();
            Ok(ReplicationFrame::XLogData { wal_start, wal_end, server_time_us, data: payload })
        }
        b'k' => {
            if payload.len() < KEEPALIVE_LEN {
                return Err(XLogDecodeError::Truncated {
                    message: "keepalive",
                    expected: KEEPALIVE_LEN,
                    actual: payload.len(),
                });
            }
            if payload.len() > KEEPALIVE_LEN {
                return Err(XLogDecodeError::TrailingBytes { expected: KEEPALIVE_LEN, actual: payload.len() });
            }
            payload.advance(1);
            let wal_end = Lsn(payload.get_u64());
            let server_time_us = payload.get_i64();
            let reply_requested = payload.get_u8() != 0;
            Ok(ReplicationFrame::Keepalive { wal_end, server_time_us, reply_requested })
        }
        other => Err(XLogDecodeError::UnknownType(char::from(other))),
    }
}

/// A standby status update: how far the client has written, flushed and applied the WAL.
///
/// The server may recycle WAL (and advances the slot's `confirmed_flush_lsn`) up to
/// `flush`, so it must only ever name positions whose changes are durably committed
/// downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    pub write: Lsn,
    pub flush: Lsn,
    pub apply: Lsn,
    /// The client's clock, µs since 2000-01-01.
    pub client_time_us: i64,
    /// Ask the server to answer with a keepalive right away.
    pub reply_requested: bool,
}

/// Append the standby status update as a complete CopyData message (`'d'`, length, payload).
pub fn encode_standby_status(status: &StandbyStatus, out: &mut BytesMut) {
    out.reserve(1 + 4 + STANDBY_STATUS_LEN);
    out.put_u8(b'd');
    // The length counts itself (4) and the payload; a small constant, so the cast is exact.
    out.put_i32((4 + STANDBY_STATUS_LEN) as i32);
    out.put_u8(b'r');
    out.put_u64(status.write.0);
    out.put_u64(status.flush.0);
    out.put_u64(status.apply.0);
    out.put_i64(status.client_time_us);
    out.put_u8(u8::from(status.reply_requested));
}

/// `time` as microseconds since 2000-01-01 00:00:00 UTC (saturating far outside that range).
pub fn postgres_epoch_micros(time: SystemTime) -> i64 {
    let unix_micros: i64 = match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    };
    unix_micros.saturating_sub(POSTGRES_EPOCH_UNIX_SECONDS * 1_000_000)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn xlog_data_payload(wal_start: u64, wal_end: u64, time: i64, data: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(b'w');
        buf.put_u64(wal_start);
        buf.put_u64(wal_end);
        buf.put_i64(time);
        buf.put_slice(data);
        buf.freeze()
    }

    #[test]
    fn xlog_data_is_decoded_with_its_payload() {
        let payload = xlog_data_payload(0x16_B374_D848, 0x16_B374_D900, 789_000_000, b"B\x00\x01");
        let frame = decode_copy_data(payload).unwrap();
        assert_eq!(
            frame,
            ReplicationFrame::XLogData {
                wal_start: "16/B374D848".parse().unwrap(),
                wal_end: "16/B374D900".parse().unwrap(),
                server_time_us: 789_000_000,
                data: Bytes::from_static(b"B\x00\x01"),
            }
        );
    }

    #[test]
    fn xlog_data_may_carry_no_data() {
        let frame = decode_copy_data(xlog_data_payload(1, 2, 3, b"")).unwrap();
        assert!(matches!(frame, ReplicationFrame::XLogData { data, .. } if data.is_empty()));
    }

    #[test]
    fn keepalives_are_decoded() {
        let mut buf = BytesMut::new();
        buf.put_u8(b'k');
        buf.put_u64(0x1_0000_0010);
        buf.put_i64(-5);
        buf.put_u8(1);
        let frame = decode_copy_data(buf.freeze()).unwrap();
        assert_eq!(
            frame,
            ReplicationFrame::Keepalive { wal_end: Lsn(0x1_0000_0010), server_time_us: -5, reply_requested: true }
        );
    }

    #[test]
    fn short_long_and_unknown_payloads_are_errors() {
        assert_eq!(decode_copy_data(Bytes::new()), Err(XLogDecodeError::Empty));
        let full = xlog_data_payload(1, 2, 3, b"");
        for len in 1..full.len() {
            assert!(
                matches!(decode_copy_data(full.slice(..len)), Err(XLogDecodeError::Truncated { .. })),
                "XLogData cut to {len} bytes"
            );
        }
        assert!(matches!(
            decode_copy_data(Bytes::from_static(b"k\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")),
            Err(XLogDecodeError::Truncated { expected: 18, actual: 17, .. })
        ));
        assert!(matches!(
            decode_copy_data(Bytes::from_static(b"k\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")),
            Err(XLogDecodeError::TrailingBytes { expected: 18, actual: 19 })
        ));
        assert_eq!(decode_copy_data(Bytes::from_static(b"x123")), Err(XLogDecodeError::UnknownType('x')));
    }

    #[test]
    fn standby_status_is_a_complete_copy_data_message() {
        let mut out = BytesMut::new();
        encode_standby_status(
            &StandbyStatus {
                write: Lsn(0x0102_0304_0506_0708),
                flush: Lsn(0x10),
                apply: Lsn(0x20),
                client_time_us: 0x0A0B,
                reply_requested: true,
            },
            &mut out,
        );
        let expected: &[u8] = &[
            b'd', 0, 0, 0, 38, b'r', //
            1, 2, 3, 4, 5, 6, 7, 8, //
            0, 0, 0, 0, 0, 0, 0, 0x10, //
            0, 0, 0, 0, 0, 0, 0, 0x20, //
            0, 0, 0, 0, 0, 0, 0x0A, 0x0B, //
            1,
        ];
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn client_time_counts_from_the_postgres_epoch() {
        let epoch = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(postgres_epoch_micros(epoch), 0);
        assert_eq!(postgres_epoch_micros(epoch + Duration::from_micros(1_500_000)), 1_500_000);
        assert_eq!(postgres_epoch_micros(UNIX_EPOCH), -946_684_800_000_000);
    }
}
