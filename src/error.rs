//! The error that ends a request, and how it is shown to the user.
//!
//! Each boundary has its own error type (protocol, configuration, connection, discovery,
//! capture); this enum gathers them at the top so `main` can print one PostgreSQL-style
//! line — a lowercase message naming the thing, then a `HINT:` saying how to fix it —
//! and exit with code 1. Nothing here ever includes a password.
//!
//! Every error is classified once, here ([`Error::class`]): *transient* when trying again
//! later may succeed with nobody changing anything (the runtime restarts the connector from
//! its last checkpoint), *definite* when a person must act (configuration, privileges,
//! table definitions, a bug). The class goes into the final log line (`fields.error_class`),
//! so that a person or an alert can tell "it will retry" from "it needs you" without parsing
//! the message. The exit code stays 1 for both: the protocol's convention, on which the
//! runtime's restart policy already acts.

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

/// Whether an error may go away on its own (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Trying again later may succeed: a lost connection, a server restart, a timeout, a
    /// slot another session still holds, stdout closed by the runtime.
    Transient,
    /// Someone must change something: the configuration, the database, or (for internal
    /// errors) the connector.
    Definite,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Definite => "definite",
        }
    }
}

impl Error {
    /// The error's class, decided by its type (and a server error's SQLSTATE), never by its
    /// message text.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Pg(err) if err.is_transient() => ErrorClass::Transient,
            Error::Output(_) => ErrorClass::Transient,
            Error::Pg(_) | Error::Protocol(_) | Error::Config(_) | Error::User { .. } | Error::Internal(_) => {
                ErrorClass::Definite
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_losses_are_transient_and_what_a_person_must_fix_is_definite() {
        assert_eq!(Error::Pg(PgError::Closed).class(), ErrorClass::Transient);
        let shutdown = PgError::Server {
            code: "57P01".into(),
            message: "terminating connection due to administrator command".into(),
            detail: None,
            hint: None,
        };
        assert_eq!(Error::Pg(shutdown).class(), ErrorClass::Transient);
        let privilege =
            PgError::Server { code: "42501".into(), message: "permission denied".into(), detail: None, hint: None };
        assert_eq!(Error::Pg(privilege).class(), ErrorClass::Definite);
        assert_eq!(Error::Pg(PgError::AuthFailed { user: "flow".into() }).class(), ErrorClass::Definite);
        assert_eq!(Error::user("table \"t\" has no key", "add one").class(), ErrorClass::Definite);
        assert_eq!(Error::Internal("invariant".into()).class(), ErrorClass::Definite);
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed");
        assert_eq!(Error::Output(closed).class(), ErrorClass::Transient);
    }

    /// SSH tunnel failures: a bastion or database that does not answer may come back; a
    /// refused key, a refused forward or a broken handshake needs a person.
    #[test]
    fn ssh_tunnel_failures_are_classified_like_connection_errors() {
        let bastion = || "\"bastion\" port 22".to_string();
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let forward = |transient| PgError::SshForwardRefused {
            bastion: bastion(),
            host: "db".into(),
            port: 5432,
            reason: "the SSH server could not connect to it".into(),
            transient,
        };
        for (err, class) in [
            (PgError::SshUnreachable { bastion: bastion(), source: refused() }, ErrorClass::Transient),
            (
                PgError::SshTimeout { bastion: bastion(), after: std::time::Duration::from_secs(30) },
                ErrorClass::Transient,
            ),
            (PgError::SshLost { bastion: bastion(), reason: "closed".into() }, ErrorClass::Transient),
            (forward(true), ErrorClass::Transient),
            (forward(false), ErrorClass::Definite),
            (PgError::SshAuthRefused { bastion: bastion(), user: "flow".into() }, ErrorClass::Definite),
            (PgError::SshFailed { bastion: bastion(), reason: "no common algorithm".into() }, ErrorClass::Definite),
            (
                PgError::SshHostKeyMismatch {
                    bastion: bastion(),
                    presented: "SHA256:a".into(),
                    expected: "SHA256:b".into(),
                },
                ErrorClass::Definite,
            ),
        ] {
            let err = Error::Pg(err);
            assert_eq!(err.class(), class, "{err}");
            let text = err.to_user_text();
            assert_eq!(text.lines().count(), 2, "one message line and one hint line: {text}");
        }
    }
}
