//! Connections to PostgreSQL: parameters, TLS, the SQL client and the replication client.
//!
//! Two kinds of connection reach the server, and both are opened from one
//! [`ConnectParams`]:
//!
//! ```text
//!   ConnectParams ──► tls::client_config(sslmode, sslrootcert) ──┬─► connect_sql ──► tokio_postgres::Client
//!                                                                │    (discovery, backfills, watermarks)
//!                                                                └─► ReplicationClient::connect
//!                                                                     (replication=database: slots,
//!                                                                      START_REPLICATION, CopyBoth)
//! ```
//!
//! tokio-postgres cannot send the `replication` startup parameter nor speak COPY BOTH, so
//! the replication connection is our own small client on postgres-protocol
//! ([`replication`]), with the pure CopyData codec in [`xlog`].
//!
//! Every connection pins [`SESSION_SETTINGS`] in its startup packet. pgoutput formats
//! values with the walsender's settings, so the replication connection needs them as much
//! as the SQL one; with them fixed, the text we decode never depends on server or role
//! defaults.
//!
//! # Layout
//! - [`error`]: [`PgError`] and its classification.
//! - [`tls`]: one rustls configuration per sslmode.
//! - [`replication`]: the replication-protocol client.
//! - [`xlog`]: XLogData, keepalive and standby status messages (pure).
//! - `wire`: backend message framing for the replication client (pure).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use tracing::Instrument;

pub mod error;
mod read_coalescing;
pub mod replication;
pub mod tls;
pub mod tunnel;
mod wire;
pub mod xlog;

use error::ErrorContext;
pub use error::PgError;

/// libpq's `sslmode`: whether to use TLS and how much of the certificate to check.
/// See [`tls`] for the exact behaviour of each mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// Treated like `prefer` (libpq would try plaintext first).
    Allow,
    /// TLS when the server offers it, without certificate checks.
    #[default]
    Prefer,
    /// TLS, without certificate checks (unless `sslrootcert` is given).
    Require,
    /// TLS, with the certificate chain checked but not the host name.
    VerifyCa,
    /// TLS, with the certificate chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a server without TLS must be refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of libpq's sslmode values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sslmode {0:?}: expected one of disable, allow, prefer, require, verify-ca, verify-full")]
pub struct ParseSslModeError(pub String);

impl FromStr for SslMode {
    type Err = ParseSslModeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(ParseSslModeError(text.to_string())),
        })
    }
}

/// Everything needed to open a connection. `Debug` never shows the password.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub sslmode: SslMode,
    /// CA certificates as PEM text, or the path of a PEM file.
    pub sslrootcert: Option<String>,
    pub application_name: String,
    /// Limit for TCP connect, TLS handshake and authentication together; zero means none.
    pub connect_timeout: Duration,
    /// The SSH tunnel every connection goes through, when one is configured (shared: one
    /// SSH session carries all connections of the process).
    pub tunnel: Option<std::sync::Arc<tunnel::SshTunnel>>,
}

impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert.as_ref().map(|_| "<set>"))
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("tunnel", &self.tunnel.as_ref().map(|t| t.endpoint()))
            .finish()
    }
}

impl ConnectParams {
    fn error_context(&self) -> ErrorContext<'_> {
        ErrorContext::Connect {
            host: &self.host,
            port: self.port,
            user: &self.user,
            database: &self.database,
            sslmode: self.sslmode,
            timeout: self.connect_timeout,
        }
    }
}

/// The session settings pinned on every connection (SQL and replication) so that the text
/// form of values never drifts with server, database or role defaults.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, MDY"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("lc_monetary", "C"),
];

/// [`SESSION_SETTINGS`] as the startup packet's `options` value: `-c name=value` each,
/// with spaces and backslashes escaped by a backslash (the server splits on whitespace).
pub fn session_options() -> String {
    let escape = |text: &str| {
        let mut escaped = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\\' || c.is_ascii_whitespace() {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped
    };
    SESSION_SETTINGS
        .iter()
        .map(|(name, value)| format!("-c {}={}", escape(name), escape(value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quote a name for SQL text: `"` around it, and every `"` in it doubled.
///
/// Use this whenever an identifier reaches SQL text; never splice names in bare. A NUL
/// character cannot appear in SQL text at all: a statement containing one is refused when
/// it is sent (by tokio-postgres and by our replication client alike), before it reaches
/// the server.
pub fn quote_identifier(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Quote a string literal for SQL text, as PostgreSQL's `quote_literal()` does: `'` around
/// it with every `'` doubled, and when it contains a backslash, the `E'...'` form with every
/// backslash doubled, so the result means the same whatever `standard_conforming_strings`
/// is. NUL characters are refused when the statement is sent (see [`quote_identifier`]).
pub fn quote_literal(text: &str) -> String {
    let has_backslash = text.contains('\\');
    let mut quoted = String::with_capacity(text.len() + 3);
    if has_backslash {
        quoted.push('E');
    }
    quoted.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            quoted.push(c);
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// Parse the `server_version` setting into the `server_version_num` form:
/// `"15.18 (Debian 15.18-1.pgdg120+1)"` → 150018, `"17beta1"` → 170000, `"9.6.24"` → 90624.
pub fn parse_server_version(text: &str) -> Option<u32> {
    let version = text.split_whitespace().next()?;
    let mut numbers = version.split('.').map(|part| {
        let digits_end = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
        (part[..digits_end].parse::<u32>().ok(), digits_end == part.len())
    });
    let (major, major_is_whole) = numbers.next()?;
    let major = major?;
    // After "17beta1" nothing else counts; "15.18" goes on to the minor number.
    let mut next_number = || {
        if major_is_whole {
            numbers.next().and_then(|(n, _)| n)
        } else {
            None
        }
    };
    if major >= 10 {
        let minor = next_number().unwrap_or(0);
        major.checked_mul(10_000)?.checked_add(minor.min(9_999))
    } else {
        let minor = next_number().unwrap_or(0).min(99);
        let patch = next_number().unwrap_or(0).min(99);
        Some(major * 10_000 + minor * 100 + patch)
    }
}

/// TCP keepalives of every connection: a server that disappears without closing the
/// connection (a cut network, a failed-over host) is noticed after about five minutes
/// instead of the kernel's two hours. The values follow Estuary's connector.
pub(crate) const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
pub(crate) const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub(crate) const TCP_KEEPALIVE_RETRIES: u32 = 6;

/// Open a SQL connection with the pinned [`SESSION_SETTINGS`], TLS per sslmode, and TCP
/// keepalives (idle 120s, interval 30s, 6 probes, like Estuary's connector).
///
/// The connection itself runs on a spawned task, inside a `pg_sql_connection` span; it
/// logs server notices and ends (logging any error) when the returned client is dropped.
pub async fn connect_sql(params: &ConnectParams) -> Result<tokio_postgres::Client, PgError> {
    let tls_config = tls::client_config(params.sslmode, params.sslrootcert.as_deref())?;

    let mut config = tokio_postgres::Config::new();
    config
        .host(&params.host)
        .port(params.port)
        .user(&params.user)
        .dbname(&params.database)
        .application_name(&params.application_name)
        .options(session_options())
        .keepalives(true)
        .keepalives_idle(TCP_KEEPALIVE_IDLE)
        .keepalives_interval(TCP_KEEPALIVE_INTERVAL)
        .keepalives_retries(TCP_KEEPALIVE_RETRIES)
        // tokio-postgres knows only disable/prefer/require; the verifier inside the rustls
        // configuration supplies the verify-ca and verify-full checks.
        .ssl_mode(match params.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    if let Some(password) = &params.password {
        config.password(password);
    }
    if !params.connect_timeout.is_zero() {
        config.connect_timeout(params.connect_timeout);
    }

    let span = tracing::debug_span!("pg_sql_connection", host = %params.host, port = params.port);
    if params.tunnel.is_some() {
        return connect_sql_tunneled(params, &config, tls_config, span).await;
    }
    let connecting = async {
        match tls_config {
            None => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                spawn_sql_connection(connection, span);
                Ok(client)
            }
            Some(tls_config) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls_config).clone());
                let (client, connection) = config.connect(tls).await?;
                spawn_sql_connection(connection, span);
                Ok(client)
            }
        }
    };
    with_connect_timeout(params, async {
        connecting.await.map_err(|err| PgError::from_sql_connect(err, params.error_context()))
    })
    .await
}

/// [`connect_sql`] through the SSH tunnel: tokio-postgres runs its protocol, TLS included,
/// on the tunnel's channel (`connect_raw`), so the TLS server name is still the configured
/// host. The TCP keepalives of `config` do not apply; the SSH session has its own.
async fn connect_sql_tunneled(
    params: &ConnectParams,
    config: &tokio_postgres::Config,
    tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
    span: tracing::Span,
) -> Result<tokio_postgres::Client, PgError> {
    let session = tunnel::Transport::prepare(params).await?;
    with_connect_timeout(params, async {
        let stream = tunnel::Transport::open(params, session).await?;
        let connected = match tls_config {
            None => config.connect_raw(stream, tokio_postgres::NoTls).await.map(|(client, connection)| {
                spawn_sql_connection(connection, span);
                client
            }),
            Some(tls_config) => {
                let mut make_tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls_config).clone());
                let tls = <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tunnel::Transport,
                >>::make_tls_connect(&mut make_tls, &params.host)
                .map_err(|never: std::convert::Infallible| -> PgError { match never {} })?;
                config.connect_raw(stream, tls).await.map(|(client, connection)| {
                    spawn_sql_connection(connection, span);
                    client
                })
            }
        };
        connected.map_err(|err| PgError::from_sql_connect(err, params.error_context()))
    })
    .await
}

fn spawn_sql_connection<S, T>(mut connection: tokio_postgres::Connection<S, T>, span: tracing::Span)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let task = async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                    tracing::info!(
                        severity = notice.severity(),
                        code = notice.code().code(),
                        message = notice.message(),
                        "server notice"
                    );
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %PgError::from(err), "sql connection failed");
                    return;
                }
            }
        }
        tracing::debug!("sql connection closed");
    };
    // Not awaited: the task ends by itself once the client (and every clone of its
    // handle) is dropped, because tokio-postgres then closes the connection.
    drop(tokio::spawn(task.instrument(span)));
}

/// Run `connecting` under the connect timeout of `params` (none when it is zero).
async fn with_connect_timeout<T>(
    params: &ConnectParams,
    connecting: impl std::future::Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    if params.connect_timeout.is_zero() {
        return connecting.await;
    }
    match tokio::time::timeout(params.connect_timeout, connecting).await {
        Ok(result) => result,
        Err(_elapsed) => {
            Err(PgError::Timeout { host: params.host.clone(), port: params.port, after: params.connect_timeout })
        }
    }
}

/// Fuzzing entry point for the pure decoders of this module: backend message framing, the
/// CopyData payloads of replication, and the certificate walk of channel binding. None of
/// them may panic or allocate by a length read from the input.
#[cfg(feature = "fuzzing")]
pub fn fuzz_decoders(data: &[u8]) {
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(message)) = wire::parse_backend_message(&mut buf) {
        if let wire::BackendMessage::CopyData(payload) = message {
            let _ = xlog::decode_copy_data(payload);
        }
    }
    let _ = tls::channel_binding_data(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_double_quoted_with_quotes_doubled() {
        assert_eq!(quote_identifier("users"), r#""users""#);
        assert_eq!(quote_identifier("Mixed Case"), r#""Mixed Case""#);
        assert_eq!(quote_identifier(r#"a"b""c"#), r#""a""b""""c""#);
        assert_eq!(quote_identifier(r"back\slash"), r#""back\slash""#);
        assert_eq!(quote_identifier("ünïcödé_表"), "\"ünïcödé_表\"");
        assert_eq!(quote_identifier(""), r#""""#);
    }

    #[test]
    fn literals_are_single_quoted_and_backslashes_use_the_escape_form() {
        assert_eq!(quote_literal("flow_slot"), "'flow_slot'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"C:\dir\"), r"E'C:\\dir\\'");
        assert_eq!(quote_literal(r"a\'b"), r"E'a\\''b'");
        assert_eq!(quote_literal("ünïcödé 表"), "'ünïcödé 表'");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn statements_with_nul_characters_are_refused_before_sending() {
        let sql = format!("SELECT {}, {}", quote_identifier("a\0b"), quote_literal("c\0d"));
        let err = wire::encode_query(&sql).unwrap_err();
        assert_eq!(err.to_string(), "protocol error: statement text contains a NUL character");
    }

    #[test]
    fn sslmode_parses_libpq_spellings() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Allow),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(text.parse::<SslMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), text);
            assert_eq!(serde_json::to_value(mode).unwrap(), serde_json::json!(text));
            assert_eq!(serde_json::from_value::<SslMode>(serde_json::json!(text)).unwrap(), mode);
        }
        assert_eq!(" Verify-Full ".parse::<SslMode>().unwrap(), SslMode::VerifyFull);
        let err = "verify_full".parse::<SslMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown sslmode \"verify_full\": expected one of disable, allow, prefer, require, verify-ca, verify-full"
        );
        assert!(serde_json::from_value::<SslMode>(serde_json::json!("verify_ca")).is_err());
        assert_eq!(SslMode::default(), SslMode::Prefer);
    }

    #[test]
    fn server_versions_parse_into_version_numbers() {
        for (text, num) in [
            ("15.18 (Debian 15.18-1.pgdg120+1)", Some(150018)),
            ("15.18", Some(150018)),
            ("17beta1", Some(170000)),
            ("16devel", Some(160000)),
            ("18rc1", Some(180000)),
            ("13.23", Some(130023)),
            ("10.5 (Ubuntu 10.5-1)", Some(100005)),
            ("9.6.24", Some(90624)),
            ("9.6beta2", Some(90600)),
            ("", None),
            ("devel", None),
            ("x15.1", None),
        ] {
            assert_eq!(parse_server_version(text), num, "{text:?}");
        }
    }

    #[test]
    fn session_options_escape_spaces() {
        assert_eq!(
            session_options(),
            r"-c DateStyle=ISO,\ MDY -c TimeZone=UTC -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex -c client_encoding=UTF8 -c lc_monetary=C"
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let params = ConnectParams {
            host: "db".into(),
            port: 5432,
            user: "flow".into(),
            password: Some("hunter2".into()),
            database: "shop".into(),
            sslmode: SslMode::Require,
            sslrootcert: None,
            application_name: "estuary_flow".into(),
            connect_timeout: Duration::from_secs(20),
            tunnel: None,
        };
        let text = format!("{params:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
