//! The error that ends a request, and how it is shown to the user.
//!
//! Each boundary has its own error type (protocol, configuration, connection, discovery,
//! capture); this enum gathers them at the top so `main` can print one PostgreSQL-style
//! line — a lowercase message naming the thing, then a `HINT:` saying how to fix it —
//! and exit with code 1. Nothing here ever includes a password.

use crate::config::ConfigError;
use crate::pg::PgError;
use crate::protocol::ProtocolError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("{message}")]
    User { message: String, hint: Option<String> },
    #[error("writing responses to stdout failed: {0}")]
    Output(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn user(message: impl Into<String>, hint: impl Into<String>) -> Error {
        let hint = hint.into();
        Error::User { message: message.into(), hint: (!hint.is_empty()).then_some(hint) }
    }

    /// An actionable sentence for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config(err) => err.hint().map(str::to_string),
            Error::Pg(err) => err.hint(),
            Error::User { hint, .. } => hint.clone(),
            Error::Protocol(_) => {
                Some("the connector expects newline-delimited JSON requests of the Flow capture protocol".into())
            }
            Error::Output(_) | Error::Internal(_) => None,
        }
    }

    /// The message and hint as one line of text (the runtime shows the last log line).
    pub fn to_user_text(&self) -> String {
        match self.hint() {
            Some(hint) => format!("{self}\nHINT: {hint}"),
            None => self.to_string(),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        Error::Pg(PgError::from(err))
    }
}
