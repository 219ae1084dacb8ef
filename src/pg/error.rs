//! Connection and server errors, classified once at the boundary.
//!
//! Every failure that reaches us from PostgreSQL — whether through tokio-postgres (the SQL
//! client) or through our own replication client — becomes one [`PgError`]. The variants
//! name what went wrong in PostgreSQL's own style (a lowercase message that quotes the
//! thing), carry a hint the user can act on, and say whether retrying may help.
//!
//! Server errors are mapped by SQLSTATE *and* by where they happened: `42501` while
//! connecting means the role lacks `CONNECT` on the database, while the same code from a
//! query is an ordinary permission error. The same goes for the slot errors `55006` and
//! `42704`, which only mean "slot busy" and "slot missing" on replication commands.
//!
//! Passwords never reach this module: no variant holds one, so neither `Display` nor
//! `Debug` can print one.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use postgres_protocol::message::backend::ErrorFields;
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::{quote_identifier, quote_literal, SslMode};

/// A failure to connect to PostgreSQL or to run a command on it.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// SQLSTATE `28P01`.
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed { user: String },

    /// The server asked for a password and none is configured.
    #[error("the server requires a password for user \"{user}\", but none is configured")]
    PasswordMissing { user: String },

    /// GSSAPI, SSPI, Kerberos or SCM credentials, which we do not implement.
    #[error("the server requested the unsupported authentication method {method}")]
    UnsupportedAuth { method: &'static str },

    /// SQLSTATE `3D000` while connecting.
    #[error("database \"{database}\" does not exist")]
    DatabaseMissing { database: String },

    /// SQLSTATE `42501` while connecting.
    #[error("user \"{user}\" does not have CONNECT privilege on database \"{database}\"")]
    NoConnectPrivilege { user: String, database: String },

    /// The TCP connection could not be opened (refused, unresolvable name, no route).
    #[error("could not connect to server at \"{host}\" port {port}: {source}")]
    Unreachable { host: String, port: u16, source: io::Error },

    /// The SSH tunnel's bastion could not be reached (refused, unresolvable name, no route).
    #[error("could not connect to SSH server {bastion} (networkTunnel.sshForwarding.sshEndpoint): {source}")]
    SshUnreachable { bastion: String, source: io::Error },

    /// Opening the SSH session took longer than the connect timeout.
    #[error("timed out after {after:?} connecting to SSH server {bastion} (networkTunnel.sshForwarding.sshEndpoint)")]
    SshTimeout { bastion: String, after: Duration },

    /// The bastion refused the configured private key for the configured user.
    #[error("SSH server {bastion} refused public-key authentication for user \"{user}\" with the configured networkTunnel.sshForwarding.privateKey")]
    SshAuthRefused { bastion: String, user: String },

    /// The bastion could not open the forwarded connection to the database address.
    #[error("SSH server {bastion} could not forward a connection to the database at \"{host}\" port {port}: {reason}")]
    SshForwardRefused {
        bastion: String,
        host: String,
        port: u16,
        reason: String,
        /// The bastion could not connect (the database may come back); otherwise refused.
        transient: bool,
    },

    /// The SSH session ended (closed by the bastion, keepalives unanswered).
    #[error("the SSH tunnel to {bastion} was lost: {reason}")]
    SshLost { bastion: String, reason: String },

    /// The bastion presented another host key than the configured fingerprint.
    #[error("SSH server {bastion} presented the host key {presented}, not the {expected} of networkTunnel.sshForwarding.hostKeyFingerprint")]
    SshHostKeyMismatch { bastion: String, presented: String, expected: String },

    /// The SSH handshake failed for another reason (no common algorithm, a protocol error).
    #[error("SSH session with {bastion} failed: {reason}")]
    SshFailed { bastion: String, reason: String },

    /// Connecting (TCP, TLS and authentication together) took longer than the timeout.
    #[error("timed out after {after:?} connecting to server at \"{host}\" port {port}")]
    Timeout { host: String, port: u16, after: Duration },

    /// `pg_hba.conf` rejected an unencrypted connection (SQLSTATE `28000`, "no encryption").
    #[error("the server at \"{host}\" port {port} only accepts encrypted connections, but sslmode is \"{sslmode}\"")]
    TlsRequired { host: String, port: u16, sslmode: SslMode },

    /// The server answered the SSLRequest with "no", and the sslmode does not allow plaintext.
    #[error("the server at \"{host}\" port {port} does not support TLS, but sslmode is \"{sslmode}\"")]
    TlsUnsupported { host: String, port: u16, sslmode: SslMode },

    /// The TLS handshake failed, typically because the certificate did not verify.
    #[error("TLS handshake with \"{host}\" failed: {reason}")]
    TlsFailed {
        host: String,
        reason: String,
        /// What the user can do about it; depends on why verification failed.
        hint: Option<&'static str>,
    },

    /// `sslrootcert` could not be read or held no certificate.
    #[error("invalid sslrootcert: {reason}")]
    InvalidRootCert { reason: String },

    /// SQLSTATE `55006` on a replication command: another connection is using the slot.
    #[error("{message}")]
    SlotActive { slot: String, message: String },

    /// SQLSTATE `42704` on a replication command.
    #[error("replication slot \"{slot}\" does not exist")]
    SlotMissing { slot: String },

    /// Any other error the server reported.
    #[error("{message} (SQLSTATE {code}){}", .detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Server { code: String, message: String, detail: Option<String>, hint: Option<String> },

    /// The server closed the connection without telling us why.
    #[error("server closed the connection unexpectedly")]
    Closed,

    /// Reading from or writing to the connection failed.
    #[error("error communicating with the server: {0}")]
    Io(#[source] io::Error),

    /// The server (or something pretending to be one) broke the wire protocol, or a
    /// statement could not be encoded.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl PgError {
    /// The five-character SQLSTATE, when the error came from the server.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::AuthFailed { .. } => Some("28P01"),
            PgError::DatabaseMissing { .. } => Some("3D000"),
            PgError::NoConnectPrivilege { .. } => Some("42501"),
            PgError::TlsRequired { .. } => Some("28000"),
            PgError::SlotActive { .. } => Some("55006"),
            PgError::SlotMissing { .. } => Some("42704"),
            PgError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// An actionable sentence for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            PgError::AuthFailed { .. } => "check the user and password in the endpoint configuration",
            PgError::PasswordMissing { .. } => "set the password in the endpoint configuration",
            PgError::UnsupportedAuth { .. } => {
                "configure pg_hba.conf to use scram-sha-256, md5 or password authentication for this user"
            }
            PgError::DatabaseMissing { .. } => "check the database name in the endpoint configuration",
            PgError::NoConnectPrivilege { user, database } => {
                return Some(format!(
                    "grant it with: GRANT CONNECT ON DATABASE {} TO {};",
                    quote_identifier(database),
                    quote_identifier(user)
                ));
            }
            PgError::Unreachable { .. } => {
                "check the server address and port, and that the server accepts connections from \
                 this network (firewalls, IP allow-lists, or an SSH tunnel)"
            }
            PgError::SshUnreachable { .. } | PgError::SshTimeout { .. } => {
                "check the host and port of networkTunnel.sshForwarding.sshEndpoint \
                 (ssh://user@host[:port]), and that the SSH server accepts connections from this network"
            }
            PgError::SshAuthRefused { user, .. } => {
                return Some(format!(
                    "add the public key of networkTunnel.sshForwarding.privateKey to the authorized_keys \
                     of user \"{user}\" on the SSH server (ssh-keygen -y -f <key file> prints it), \
                     or fix the user in sshEndpoint"
                ));
            }
            PgError::SshForwardRefused { .. } => {
                "\"address\" is connected to from the SSH server: check that it names the database as \
                 the SSH server sees it, that the database accepts connections from the SSH server, and \
                 that the SSH server allows TCP forwarding (AllowTcpForwarding in sshd_config)"
            }
            PgError::SshLost { .. } => {
                "the capture restarts and opens the tunnel again; if this repeats, check the SSH server"
            }
            PgError::SshHostKeyMismatch { bastion, .. } => {
                return Some(format!(
                    "if the SSH server's host key was replaced on purpose, set hostKeyFingerprint to the new \
                     one (ssh-keyscan -p <port> <host> | ssh-keygen -lf - prints it for {bastion}); \
                     otherwise something between the connector and the SSH server may be intercepting the connection"
                ));
            }
            PgError::SshFailed { .. } => "check that networkTunnel.sshForwarding.sshEndpoint names an SSH server",
            PgError::Timeout { .. } => {
                "check the server address, and that firewalls and IP allow-lists let this \
                 connection through"
            }
            PgError::TlsRequired { .. } => {
                "set sslmode to \"require\", \"verify-ca\" or \"verify-full\" in the endpoint configuration"
            }
            PgError::TlsUnsupported { .. } => "enable ssl on the server, or set sslmode to \"prefer\" or \"disable\"",
            PgError::TlsFailed { hint, .. } => return hint.map(str::to_string),
            PgError::InvalidRootCert { .. } => {
                "sslrootcert must hold PEM-encoded CA certificates (\"-----BEGIN CERTIFICATE-----\"), \
                 or be the path of a file that does"
            }
            PgError::SlotActive { .. } => {
                "another capture, or another instance of this one, is reading from the replication \
                 slot; stop it, or give this capture its own slot name"
            }
            PgError::SlotMissing { slot } => {
                return Some(format!(
                    "the slot was dropped or never created; backfilling all bindings again recreates \
                     it, or create it with: SELECT pg_create_logical_replication_slot({}, 'pgoutput');",
                    quote_literal(slot)
                ));
            }
            PgError::Server { code, hint, .. } => {
                return hint.clone().or_else(|| default_server_hint(code).map(str::to_string));
            }
            PgError::Closed => "the server may have restarted or terminated the session; see the server log",
            PgError::Io(_) | PgError::Protocol(_) => return None,
        };
        Some(hint.to_string())
    }

    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Unreachable { .. }
            | PgError::Timeout { .. }
            | PgError::Closed
            | PgError::Io(_)
            | PgError::SlotActive { .. }
            | PgError::SshUnreachable { .. }
            | PgError::SshTimeout { .. }
            | PgError::SshLost { .. } => true,
            PgError::SshForwardRefused { transient, .. } => *transient,
            PgError::Server { code, .. } => is_transient_sqlstate(code),
            _ => false,
        }
    }
}

fn default_server_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "28000" => {
            "the server's pg_hba.conf does not allow this connection; it needs an entry for this \
             user, database and client address"
        }
        "53300" => "the server has no free connection slots; raise max_connections or close idle sessions",
        "42501" => "the capture user lacks a privilege; see the connector's setup instructions",
        "57P01" | "57P02" => {
            "the server ended this session (an administrator terminated it, a replication slot in \
             use was dropped, or the server is shutting down); the capture restarts from its last \
             checkpoint, and the error it meets then says whether anything must be changed"
        }
        _ => return None,
    })
}

fn is_transient_sqlstate(code: &str) -> bool {
    // Class 08: connection exception. Class 53: insufficient resources (too many
    // connections, out of memory, disk full). 57P01-57P03: shutdown or startup in progress.
    // 40001/40P01: serialization failure and deadlock. 58000/58030: system and I/O errors.
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "58000" | "58030")
}

/// The fields of an ErrorResponse, before classification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerError {
    pub(crate) severity: String,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) hint: Option<String>,
}

impl ServerError {
    /// Read the fields of an ErrorResponse or NoticeResponse body.
    pub(crate) fn from_fields(mut fields: ErrorFields<'_>) -> Result<ServerError, PgError> {
        let mut error = ServerError::default();
        while let Some(field) =
            fields.next().map_err(|err| PgError::Protocol(format!("malformed error response: {err}")))?
        {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                // 'V' is the untranslated severity; prefer it over the localized 'S'.
                b'V' => error.severity = value,
                b'S' if error.severity.is_empty() => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        Ok(error)
    }

    fn from_db_error(db: &tokio_postgres::error::DbError) -> ServerError {
        ServerError {
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
    }
}

/// Where a server error happened, which decides what its SQLSTATE means.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorContext<'a> {
    /// During startup and authentication.
    Connect { host: &'a str, port: u16, user: &'a str, database: &'a str, sslmode: SslMode, timeout: Duration },
    /// A replication command naming this slot.
    Slot(&'a str),
    /// Anything else.
    Query,
}

impl PgError {
    pub(crate) fn from_server(error: ServerError, context: ErrorContext<'_>) -> PgError {
        match (context, error.code.as_str()) {
            (ErrorContext::Connect { user, .. }, "28P01") => {
                return PgError::AuthFailed { user: user.to_string() };
            }
            (ErrorContext::Connect { database, .. }, "3D000") => {
                return PgError::DatabaseMissing { database: database.to_string() };
            }
            (ErrorContext::Connect { user, database, .. }, "42501") => {
                return PgError::NoConnectPrivilege { user: user.to_string(), database: database.to_string() };
            }
            // PostgreSQL 14+ says "no encryption", older servers "SSL off".
            (ErrorContext::Connect { host, port, sslmode, .. }, "28000")
                if error.message.contains("no encryption") || error.message.contains("SSL off") =>
            {
                return PgError::TlsRequired { host: host.to_string(), port, sslmode };
            }
            (ErrorContext::Slot(slot), "55006") => {
                return PgError::SlotActive { slot: slot.to_string(), message: error.message };
            }
            // The same code reports any missing object: pgoutput raises it for a publication
            // named in START_REPLICATION that does not exist (or was dropped while streaming).
            (ErrorContext::Slot(slot), "42704") if error.message.starts_with("replication slot") => {
                return PgError::SlotMissing { slot: slot.to_string() };
            }
            _ => {}
        }
        PgError::Server { code: error.code, message: error.message, detail: error.detail, hint: error.hint }
    }

    /// Classify an error from tokio-postgres while connecting to `context`.
    pub(crate) fn from_sql_connect(err: tokio_postgres::Error, context: ErrorContext<'_>) -> PgError {
        if let Some(db) = err.as_db_error() {
            return PgError::from_server(ServerError::from_db_error(db), context);
        }
        let ErrorContext::Connect { host, port, user, sslmode, timeout, .. } = context else {
            return PgError::from(err);
        };
        // tokio-postgres does not expose its error kinds, only their fixed descriptions.
        match err.to_string().as_str() {
            "error connecting to server" => match into_io_error(err) {
                Ok(io) if io.kind() == io::ErrorKind::TimedOut => {
                    PgError::Timeout { host: host.to_string(), port, after: timeout }
                }
                Ok(io) => PgError::Unreachable { host: host.to_string(), port, source: io },
                Err(text) => PgError::Protocol(text),
            },
            "error performing TLS handshake" => {
                let cause = err.source().map(|source| source.to_string()).unwrap_or_default();
                if cause == "server does not support TLS" {
                    return PgError::TlsUnsupported { host: host.to_string(), port, sslmode };
                }
                match find_rustls_error(&err) {
                    Some(tls) => super::tls::handshake_error(host, sslmode, tls),
                    None => PgError::TlsFailed { host: host.to_string(), reason: cause, hint: None },
                }
            }
            "invalid configuration" if err.source().is_some_and(|s| s.to_string() == "password missing") => {
                PgError::PasswordMissing { user: user.to_string() }
            }
            "authentication error"
                if err.source().is_some_and(|s| s.to_string() == "unsupported authentication method") =>
            {
                PgError::UnsupportedAuth { method: "GSSAPI, SSPI, Kerberos or SCM credentials" }
            }
            _ => PgError::from(err),
        }
    }
}

impl PgError {
    /// An I/O error of a connection: the loss of its SSH tunnel is named as such
    /// ([`super::tunnel::TunnelLost`]), anything else is [`PgError::Io`].
    pub fn from_io(err: io::Error) -> PgError {
        match err.get_ref().and_then(|inner| inner.downcast_ref::<super::tunnel::TunnelLost>()) {
            Some(lost) => PgError::SshLost {
                bastion: lost.bastion.clone(),
                reason: "the connection to the SSH server ended".into(),
            },
            None => PgError::Io(err),
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            return PgError::from_server(ServerError::from_db_error(db), ErrorContext::Query);
        }
        if err.is_closed() {
            return PgError::Closed;
        }
        let text = error_chain_text(&err);
        match into_io_error(err) {
            Ok(io) if io.kind() == io::ErrorKind::UnexpectedEof => PgError::Closed,
            Ok(io) => PgError::from_io(io),
            Err(_) => PgError::Protocol(text),
        }
    }
}

/// The io::Error a tokio-postgres error wraps, if that is what it wraps.
fn into_io_error(err: tokio_postgres::Error) -> Result<io::Error, String> {
    let text = error_chain_text(&err);
    match err.into_source().map(|source| source.downcast::<io::Error>()) {
        Some(Ok(io)) => Ok(*io),
        _ => Err(text),
    }
}

fn find_rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error hides its payload from `source()`; look inside explicitly.
        if let Some(inner) = current.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
        }
        next = current.source();
    }
    None
}

/// "outer: inner: innermost", for errors we can only describe.
fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_context() -> ErrorContext<'static> {
        ErrorContext::Connect {
            host: "db.example.com",
            port: 5432,
            user: "flow_capture",
            database: "shop",
            sslmode: SslMode::Disable,
            timeout: Duration::from_secs(20),
        }
    }

    fn server_error(code: &str, message: &str) -> ServerError {
        ServerError { severity: "FATAL".into(), code: code.into(), message: message.into(), ..ServerError::default() }
    }

    #[test]
    fn connect_errors_are_mapped_by_sqlstate() {
        let err = PgError::from_server(
            server_error("28P01", "password authentication failed for user \"flow_capture\""),
            connect_context(),
        );
        assert_eq!(err.to_string(), "password authentication failed for user \"flow_capture\"");
        assert_eq!(err.sqlstate(), Some("28P01"));
        assert!(!err.is_transient());
        assert_eq!(err.hint().unwrap(), "check the user and password in the endpoint configuration");

        let err = PgError::from_server(server_error("3D000", "x"), connect_context());
        assert_eq!(err.to_string(), "database \"shop\" does not exist");

        let err = PgError::from_server(server_error("42501", "x"), connect_context());
        assert_eq!(err.to_string(), "user \"flow_capture\" does not have CONNECT privilege on database \"shop\"");
        assert_eq!(err.hint().unwrap(), "grant it with: GRANT CONNECT ON DATABASE \"shop\" TO \"flow_capture\";");
    }

    #[test]
    fn unencrypted_connection_rejected_by_pg_hba_means_tls_is_required() {
        let message = "no pg_hba.conf entry for host \"10.0.0.1\", user \"u\", database \"d\", no encryption";
        let err = PgError::from_server(server_error("28000", message), connect_context());
        assert!(matches!(err, PgError::TlsRequired { .. }), "{err:?}");
        assert!(err.to_string().contains("only accepts encrypted connections"));

        let message = "no pg_hba.conf entry for host \"10.0.0.1\", user \"u\", database \"d\", SSL encryption";
        let err = PgError::from_server(server_error("28000", message), connect_context());
        assert!(matches!(err, PgError::Server { .. }), "{err:?}");
        assert!(err.hint().unwrap().contains("pg_hba.conf"));
    }

    #[test]
    fn slot_errors_are_mapped_only_on_slot_commands() {
        let busy = server_error("55006", "replication slot \"flow_slot\" is active for PID 4242");
        let err = PgError::from_server(busy.clone(), ErrorContext::Slot("flow_slot"));
        assert_eq!(err.to_string(), "replication slot \"flow_slot\" is active for PID 4242");
        assert!(err.is_transient());
        assert_eq!(err.sqlstate(), Some("55006"));

        let missing = server_error("42704", "replication slot \"flow_slot\" does not exist");
        let err = PgError::from_server(missing.clone(), ErrorContext::Slot("flow_slot"));
        assert!(matches!(err, PgError::SlotMissing { .. }));
        assert!(err.hint().unwrap().contains("pg_create_logical_replication_slot('flow_slot'"));

        let err = PgError::from_server(missing, ErrorContext::Query);
        assert!(matches!(err, PgError::Server { .. }));

        // pgoutput's missing publication has the same SQLSTATE, on the slot's stream.
        let publication = server_error("42704", "publication \"flow_publication\" does not exist");
        let err = PgError::from_server(publication, ErrorContext::Slot("flow_slot"));
        assert!(matches!(err, PgError::Server { .. }), "{err:?}");
        assert!(err.to_string().starts_with("publication \"flow_publication\" does not exist"));
    }

    #[test]
    fn other_server_errors_keep_their_fields() {
        let err = PgError::from_server(
            ServerError {
                detail: Some("the detail".into()),
                hint: Some("the hint".into()),
                ..server_error("55000", "logical decoding requires wal_level >= logical")
            },
            ErrorContext::Query,
        );
        assert_eq!(err.to_string(), "logical decoding requires wal_level >= logical (SQLSTATE 55000): the detail");
        assert_eq!(err.hint().as_deref(), Some("the hint"));
        assert!(!err.is_transient());

        let err = PgError::from_server(server_error("57P01", "terminating connection"), ErrorContext::Query);
        assert!(err.is_transient());
        let err = PgError::from_server(server_error("08006", "connection failure"), ErrorContext::Query);
        assert!(err.is_transient());
    }
}
