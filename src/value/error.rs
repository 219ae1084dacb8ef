//! The one error type of value encoding.
//!
//! A [`ValueError`] names the type whose text output could not be read, what was wrong and
//! where (a byte offset into that text), and shows the text itself only when it is short:
//! values can be hundreds of megabytes and may hold data that does not belong in logs in
//! bulk, so anything over [`EXCERPT_LIMIT`] bytes is shown as a short prefix plus its size.
//! For a value nested in an array, row or range, the type and text are those of the
//! innermost value that failed.

use super::PgType;

/// Values up to this many bytes are quoted whole in messages; longer ones are cut.
const EXCERPT_LIMIT: usize = 100;
/// How much of a long value a message shows.
const EXCERPT_PREFIX: usize = 32;

/// What was wrong with a value's text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueErrorKind {
    /// The text is not valid UTF-8 (the session is pinned to `client_encoding=UTF8`).
    #[error("invalid UTF-8 at byte {offset}")]
    InvalidUtf8 { offset: usize },
    /// The text does not follow the type's output syntax.
    #[error("expected {expected} at byte {offset}")]
    Syntax { offset: usize, expected: &'static str },
    /// The text ended before the value was complete.
    #[error("unexpected end of input, expected {expected}")]
    Truncated { expected: &'static str },
    /// A row literal has a different number of fields than its composite type.
    #[error("row has {found} fields but the type has {expected}")]
    FieldCount { expected: usize, found: usize },
    /// A value parsed but is out of the range its type allows.
    #[error("{what} out of range")]
    OutOfRange { what: &'static str },
    /// A binary cell of another length than its type's send form.
    #[error("binary value of {found} bytes, expected {expected}")]
    Length { expected: usize, found: usize },
}

/// A value whose PostgreSQL text output could not be encoded as JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {type_name} value {excerpt}: {kind}")]
pub struct ValueError {
    type_name: String,
    excerpt: String,
    kind: ValueErrorKind,
}

impl ValueError {
    /// An error about `text`, a value of type `ty`.
    pub(crate) fn new(ty: &PgType, text: &[u8], kind: ValueErrorKind) -> Self {
        ValueError { type_name: ty.display_name(), excerpt: excerpt(text), kind }
    }

    /// An error about `raw`, a binary cell of type `ty`, shown as hex.
    pub(crate) fn binary(ty: &PgType, raw: &[u8], kind: ValueErrorKind) -> Self {
        use std::fmt::Write as _;
        let mut excerpt = String::from("0x");
        for byte in raw.iter().take(EXCERPT_LIMIT / 2) {
            let _ = write!(excerpt, "{byte:02x}");
        }
        if raw.len() > EXCERPT_LIMIT / 2 {
            let _ = write!(excerpt, "… ({} bytes)", raw.len());
        }
        ValueError { type_name: ty.display_name(), excerpt, kind }
    }

    /// The PostgreSQL type whose value failed, e.g. `int4` or `mood[]`.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// What was wrong.
    pub fn kind(&self) -> &ValueErrorKind {
        &self.kind
    }
}

/// The text for a message: quoted whole when short, otherwise a prefix and the size.
fn excerpt(text: &[u8]) -> String {
    if text.len() <= EXCERPT_LIMIT {
        format!("{:?}", String::from_utf8_lossy(text))
    } else {
        format!("{:?}… ({} bytes)", String::from_utf8_lossy(&text[..EXCERPT_PREFIX]), text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int4() -> PgType {
        PgType::Builtin { name: "int4".into(), typmod: -1 }
    }

    #[test]
    fn short_values_are_quoted_whole() {
        let err = ValueError::new(&int4(), b"12x", ValueErrorKind::Syntax { offset: 2, expected: "a digit" });
        assert_eq!(err.to_string(), r#"invalid int4 value "12x": expected a digit at byte 2"#);
        assert_eq!(err.type_name(), "int4");
    }

    #[test]
    fn long_values_are_cut_to_a_prefix_and_a_size() {
        let text = vec![b'a'; 10_000];
        let err = ValueError::new(&int4(), &text, ValueErrorKind::Syntax { offset: 0, expected: "a digit" });
        let message = err.to_string();
        assert!(message.contains("(10000 bytes)"), "{message}");
        assert!(message.len() < 120, "{message}");
    }
}
