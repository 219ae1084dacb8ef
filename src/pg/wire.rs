//! Backend message framing for the replication client (pure, no IO).
//!
//! postgres-protocol parses nearly every backend message, but it does not know
//! CopyBothResponse (`'W'`), and it reserves buffer space for whatever length a header
//! claims. So we look at each header first: the length is checked (at least 4, at most
//! [`MAX_MESSAGE_LEN`]) before anything is allocated for it; `'W'` is handled here; CopyData
//! (`'d'`, every replication message) is split off without a copy; everything else goes to
//! postgres-protocol once it is complete.
//!
//! Incomplete input is `Ok(None)`: the caller reads more bytes and tries again, which is
//! what makes reading cancel-safe.

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::PgError;

/// The largest backend message we accept. PostgreSQL itself cannot build a message over
/// 1 GiB (`MaxAllocSize`), so a larger length means a broken or hostile peer.
pub(crate) const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Tag byte and length field.
const HEADER_LEN: usize = 5;

/// One complete backend message.
pub(crate) enum BackendMessage {
    /// The payload of a CopyData message.
    CopyData(Bytes),
    /// The server switched to COPY BOTH mode (the reply to `START_REPLICATION`).
    CopyBothResponse,
    /// Any other message, parsed by postgres-protocol.
    Other(Message),
}

/// Split the first complete message off `buf`, or `Ok(None)` when more bytes are needed.
pub(crate) fn parse_backend_message(buf: &mut BytesMut) -> Result<Option<BackendMessage>, PgError> {
    let Some(total) = message_total_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    match buf[0] {
        b'd' => {
            let mut message = buf.split_to(total);
            message.advance(HEADER_LEN);
            Ok(Some(BackendMessage::CopyData(message.freeze())))
        }
        b'W' => {
            // Overall format (1 byte), column count (2), one 2-byte format per column.
            // Logical replication has no columns; we only check the body is well-formed.
            let body = &buf[HEADER_LEN..total];
            if body.len() < 3 {
                return Err(PgError::Protocol("truncated CopyBothResponse message".into()));
            }
            let columns = usize::from(u16::from_be_bytes([body[1], body[2]]));
            if body.len() != 3 + 2 * columns {
                return Err(PgError::Protocol("malformed CopyBothResponse message".into()));
            }
            buf.advance(total);
            Ok(Some(BackendMessage::CopyBothResponse))
        }
        tag => match Message::parse(buf) {
            Ok(Some(message)) => Ok(Some(BackendMessage::Other(message))),
            Ok(None) => {
                Err(PgError::Protocol(format!("message {:?} was complete but could not be parsed", char::from(tag))))
            }
            Err(err) => Err(PgError::Protocol(format!("malformed message {:?}: {err}", char::from(tag)))),
        },
    }
}

/// How many more bytes the first message in `buf` needs (at least 1 when none is buffered
/// in full); used to size reads.
pub(crate) fn missing_bytes(buf: &[u8]) -> usize {
    match message_total_len(buf) {
        Ok(Some(total)) => total.saturating_sub(buf.len()),
        Ok(None) => HEADER_LEN - buf.len(),
        Err(_) => 0,
    }
    .max(1)
}

/// The full length (tag included) of the first message, once its header is buffered.
fn message_total_len(buf: &[u8]) -> Result<Option<usize>, PgError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let length = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let length = usize::try_from(length)
        .ok()
        .filter(|&length| length >= 4)
        .ok_or_else(|| PgError::Protocol(format!("invalid message length {length}")))?;
    if length > MAX_MESSAGE_LEN {
        return Err(PgError::Protocol(format!(
            "message {:?} of {length} bytes exceeds the limit of {MAX_MESSAGE_LEN} bytes",
            char::from(header[0])
        )));
    }
    Ok(Some(1 + length))
}

/// A simple-protocol Query message for `sql`.
pub(crate) fn encode_query(sql: &str) -> Result<BytesMut, PgError> {
    if sql.contains('\0') {
        return Err(PgError::Protocol("statement text contains a NUL character".into()));
    }
    let mut buf = BytesMut::new();
    frontend::query(sql, &mut buf).map_err(|err| PgError::Protocol(format!("encoding a query: {err}")))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut buf = vec![tag];
        buf.extend_from_slice(&i32::try_from(body.len() + 4).unwrap().to_be_bytes());
        buf.extend_from_slice(body);
        buf
    }

    #[test]
    fn messages_are_split_only_when_complete() {
        let mut stream = message(b'd', b"kpayload");
        stream.extend(message(b'W', &[0, 0, 0]));
        stream.extend(message(b'Z', b"I"));

        let mut buf = BytesMut::new();
        let mut parsed = Vec::new();
        // Feed one byte at a time, like the slowest possible socket.
        for &byte in &stream {
            buf.put_u8(byte);
            while let Some(message) = parse_backend_message(&mut buf).unwrap() {
                parsed.push(message);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(parsed.len(), 3);
        assert!(matches!(&parsed[0], BackendMessage::CopyData(data) if &data[..] == b"kpayload"));
        assert!(matches!(parsed[1], BackendMessage::CopyBothResponse));
        assert!(matches!(parsed[2], BackendMessage::Other(Message::ReadyForQuery(_))));
    }

    #[test]
    fn missing_bytes_counts_what_the_first_message_still_needs() {
        assert_eq!(missing_bytes(&[]), 5);
        assert_eq!(missing_bytes(b"d\0\0"), 2);
        assert_eq!(missing_bytes(&message(b'd', b"abc")[..5]), 3);
        assert_eq!(missing_bytes(&message(b'd', b"abc")), 1);
    }

    #[test]
    fn bad_lengths_are_errors_not_allocations() {
        for length in [-1i32, 0, 3, i32::MAX, (MAX_MESSAGE_LEN + 1) as i32] {
            let mut buf = BytesMut::from(&b"d"[..]);
            buf.put_i32(length);
            assert!(parse_backend_message(&mut buf).is_err(), "length {length}");
            assert!(buf.capacity() < 1024, "length {length} reserved {}", buf.capacity());
        }
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
        let tags = b"dWERSZTDCNKcnIt12?";
        for _ in 0..20_000 {
            // Mostly plausible headers with short random bodies, so parsing gets past the
            // length check and into the bodies.
            let body_len = rng.gen_range(0..24usize);
            let mut input = vec![tags[rng.gen_range(0..tags.len())]];
            let claimed = if rng.gen_bool(0.9) { body_len + 4 } else { rng.gen_range(0..64) };
            input.extend_from_slice(&i32::try_from(claimed).unwrap().to_be_bytes());
            input.extend((0..body_len).map(|_| rng.gen::<u8>()));
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(message)) = parse_backend_message(&mut buf) {
                if let BackendMessage::CopyData(payload) = message {
                    let _ = super::super::xlog::decode_copy_data(payload);
                }
            }
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let mut buf = BytesMut::from(&message(b'W', &[0, 0, 1])[..]);
        assert!(parse_backend_message(&mut buf).is_err());
        let mut buf = BytesMut::from(&message(b'Z', b"")[..]);
        assert!(parse_backend_message(&mut buf).is_err());
        let mut buf = BytesMut::from(&message(b'?', b"")[..]);
        assert!(parse_backend_message(&mut buf).is_err());
    }
}
