//! Our replication-protocol client, on postgres-protocol, tokio and tokio-rustls.
//!
//! tokio-postgres cannot open a walsender session (it has no `replication` startup
//! parameter and no COPY BOTH), so this module speaks the protocol itself:
//!
//! ```text
//!   TCP or SSH channel (tunnel::Transport) ─► SSLRequest ─'S'─► TLS handshake ─┐          (per sslmode; 'N' → plaintext or error)
//!       └────────────'N'────────────────────┤
//!                                           ▼
//!   StartupMessage(user, database, replication=database, application_name, options)
//!   ◄─ Authentication*  (SCRAM-SHA-256[-PLUS], MD5, cleartext)
//!   ◄─ ParameterStatus…, BackendKeyData, ReadyForQuery
//!
//!   ReplicationClient: IDENTIFY_SYSTEM / CREATE_REPLICATION_SLOT / DROP_REPLICATION_SLOT /
//!                      any simple query ─► rows of text
//!   START_REPLICATION ◄─ CopyBothResponse ─► ReplicationStream:
//!                      ◄─ CopyData('w' XLogData | 'k' keepalive)    recv()
//!                      ─► CopyData('r' standby status update)        send_standby_status()
//! ```
//!
//! With TLS, SCRAM uses channel binding (`SCRAM-SHA-256-PLUS`, `tls-server-end-point`)
//! whenever the server offers it, so a man in the middle cannot relay the authentication
//! even when the certificate is not verified.
//!
//! The stream does not answer keepalives by itself: only the capture knows which LSN is
//! safe to confirm, so it sends every status update (see [`ReplicationStream::recv`]).
//!
//! Replication command syntax: identifiers are double-quoted ([`quote_identifier`]); option
//! values are single-quoted with `'` doubled. The walsender's command scanner has no
//! backslash escapes (unlike SQL), so [`quote_literal`](super::quote_literal)'s `E''` form
//! must not be used there.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{AuthenticationSaslBody, DataRowBody, Message};
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::error::{ErrorContext, ServerError};
use super::read_coalescing::{self, ReadCoalescing};
use super::tunnel::{Transport, TunnelSession};
use super::wire::{self, BackendMessage};
use super::{parse_server_version, quote_identifier, session_options, tls, ConnectParams, PgError};
use crate::lsn::Lsn;

pub use super::xlog::ReplicationFrame;
use super::xlog::{self as xlog_codec, StandbyStatus};

/// Reads are sized to what the current message still needs, within these bounds.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 4 * 1024 * 1024;

/// The result of `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's unique system identifier (a 64-bit number, as text).
    pub system_id: String,
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlog_pos: Lsn,
    /// The database of this connection.
    pub dbname: Option<String>,
}

/// A `replication=database` session, before `START_REPLICATION`.
pub struct ReplicationClient {
    connection: Connection,
    server_version_num: u32,
}

impl fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("peer", &self.connection.peer)
            .field("server_version_num", &self.server_version_num)
            .finish_non_exhaustive()
    }
}

impl ReplicationClient {
    /// Connect, negotiate TLS per sslmode, authenticate, and wait until the session is ready.
    pub async fn connect(params: &ConnectParams) -> Result<Self, PgError> {
        // An SSH tunnel's session opens under its own timeout, before the connection's.
        let session = Transport::prepare(params).await?;
        super::with_connect_timeout(params, Self::connect_without_timeout(params, session)).await
    }

    async fn connect_without_timeout(params: &ConnectParams, session: Option<TunnelSession>) -> Result<Self, PgError> {
        let tls_config = tls::client_config(params.sslmode, params.sslrootcert.as_deref())?;
        let tcp = Transport::open(params, session).await?;
        let (stream, channel_binding) = negotiate_tls(tcp, params, tls_config).await?;
        let mut connection = Connection {
            stream,
            read_buf: BytesMut::with_capacity(MIN_READ),
            write_buf: BytesMut::new(),
            peer: format!("{}:{}", params.host, params.port),
        };

        let options = session_options();
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("replication", "database"),
            ("application_name", params.application_name.as_str()),
            ("options", options.as_str()),
        ];
        if startup.iter().any(|(_, value)| value.contains('\0')) {
            return Err(PgError::Protocol("connection parameters contain a NUL character".into()));
        }
        frontend::startup_message(startup, &mut connection.write_buf)
            .map_err(|err| PgError::Protocol(format!("encoding the startup message: {err}")))?;
        connection.flush().await?;

        authenticate(&mut connection, params, channel_binding).await?;

        // After AuthenticationOk: settings, the cancel key, then ReadyForQuery.
        let mut server_version = None;
        loop {
            match connection.read_message().await? {
                BackendMessage::Other(Message::ReadyForQuery(_)) => break,
                BackendMessage::Other(Message::ParameterStatus(body)) => {
                    if body.name().ok() == Some("server_version") {
                        server_version = body.value().ok().map(str::to_string);
                    }
                }
                BackendMessage::Other(Message::BackendKeyData(_)) => {}
                BackendMessage::Other(Message::NoticeResponse(body)) => {
                    log_notice(ServerError::from_fields(body.fields())?)
                }
                BackendMessage::Other(Message::ErrorResponse(body)) => {
                    return Err(PgError::from_server(ServerError::from_fields(body.fields())?, params.error_context()));
                }
                other => return Err(unexpected(&other, "while starting the session")),
            }
        }

        let server_version =
            server_version.ok_or_else(|| PgError::Protocol("the server did not report server_version".into()))?;
        let server_version_num = parse_server_version(&server_version)
            .ok_or_else(|| PgError::Protocol(format!("unrecognized server_version {server_version:?}")))?;
        tracing::debug!(peer = %connection.peer, server_version = %server_version, "replication connection ready");
        Ok(ReplicationClient { connection, server_version_num })
    }

    /// The server version as `server_version_num` (e.g. 150018 for 15.18).
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// `IDENTIFY_SYSTEM`: the cluster identity, timeline and current WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, PgError> {
        let rows = self.query("IDENTIFY_SYSTEM", ErrorContext::Query).await?;
        let row = single_row(&rows, 4, "IDENTIFY_SYSTEM")?;
        let required = |index: usize, name: &str| {
            row[index].clone().ok_or_else(|| PgError::Protocol(format!("IDENTIFY_SYSTEM returned a null {name}")))
        };
        let timeline = required(1, "timeline")?;
        let xlog_pos = required(2, "xlogpos")?;
        Ok(SystemIdentity {
            system_id: required(0, "systemid")?,
            timeline: timeline
                .parse()
                .map_err(|_| PgError::Protocol(format!("IDENTIFY_SYSTEM returned timeline {timeline:?}")))?,
            xlog_pos: xlog_pos.parse().map_err(|err| PgError::Protocol(format!("IDENTIFY_SYSTEM: {err}")))?,
            dbname: row[3].clone(),
        })
    }

    /// Run a statement (or several) with the simple query protocol; all rows, as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.query(sql, ErrorContext::Query).await
    }

    /// `CREATE_REPLICATION_SLOT "<slot>" LOGICAL pgoutput` without exporting a snapshot;
    /// returns the slot's consistent point. Blocks until the slot is consistent, which waits
    /// for transactions running at the time to finish.
    pub async fn create_logical_slot(&mut self, slot: &str) -> Result<Lsn, PgError> {
        // The option list syntax arrived in 15; the keyword form is still accepted there,
        // but deprecated.
        let command = if self.server_version_num >= 150_000 {
            format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'nothing')", quote_identifier(slot))
        } else {
            format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT", quote_identifier(slot))
        };
        let rows = self.query(&command, ErrorContext::Slot(slot)).await?;
        let row = single_row(&rows, 4, "CREATE_REPLICATION_SLOT")?;
        let consistent_point = row[1]
            .as_deref()
            .ok_or_else(|| PgError::Protocol("CREATE_REPLICATION_SLOT returned no consistent_point".into()))?;
        consistent_point.parse().map_err(|err| PgError::Protocol(format!("CREATE_REPLICATION_SLOT: {err}")))
    }

    /// `DROP_REPLICATION_SLOT "<slot>" [WAIT]`. Without `wait`, a slot in use is an error
    /// ([`PgError::SlotActive`]); with it, the command waits until the slot is free.
    pub async fn drop_slot(&mut self, slot: &str, wait: bool) -> Result<(), PgError> {
        let command = format!("DROP_REPLICATION_SLOT {}{}", quote_identifier(slot), if wait { " WAIT" } else { "" });
        self.query(&command, ErrorContext::Slot(slot)).await.map(drop)
    }

    /// `START_REPLICATION SLOT "<slot>" LOGICAL <start> ("<name>" '<value>', …)`, then wait for
    /// the server to switch to COPY BOTH mode.
    ///
    /// `plugin_options` are passed to pgoutput as given, e.g. `("proto_version", "2")`,
    /// `("publication_names", quote_identifier("flow_publication"))`, `("streaming", "on")`.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        plugin_options: &[(&str, String)],
    ) -> Result<ReplicationStream, PgError> {
        let mut command = format!("START_REPLICATION SLOT {} LOGICAL {start}", quote_identifier(slot));
        if !plugin_options.is_empty() {
            let options: Vec<String> = plugin_options
                .iter()
                .map(|(name, value)| format!("{} {}", quote_identifier(name), quote_command_literal(value)))
                .collect();
            command.push_str(&format!(" ({})", options.join(", ")));
        }
        tracing::debug!(%command, "starting replication");
        self.connection.write_buf.extend_from_slice(&wire::encode_query(&command)?);
        self.connection.flush().await?;

        let mut error = None;
        loop {
            match self.connection.read_message().await? {
                BackendMessage::CopyBothResponse => break,
                BackendMessage::Other(Message::ErrorResponse(body)) => {
                    error.get_or_insert(ServerError::from_fields(body.fields())?);
                }
                BackendMessage::Other(Message::ReadyForQuery(_)) => {
                    let error = error.map(|error| PgError::from_server(error, ErrorContext::Slot(slot)));
                    return Err(error.unwrap_or_else(|| {
                        PgError::Protocol("START_REPLICATION finished without entering COPY BOTH mode".into())
                    }));
                }
                BackendMessage::Other(Message::NoticeResponse(body)) => {
                    log_notice(ServerError::from_fields(body.fields())?)
                }
                BackendMessage::Other(Message::ParameterStatus(_)) => {}
                other => return Err(unexpected(&other, "in reply to START_REPLICATION")),
            }
        }
        let coalescing = self.connection.stream.tcp().and_then(|socket| {
            let buffer = read_coalescing::receive_buffer_size(socket)
                .inspect_err(|err| tracing::debug!(error = %err, "could not read the receive buffer's size"))
                .ok()?;
            ReadCoalescing::for_receive_buffer(buffer, Instant::now())
        });
        Ok(ReplicationStream {
            connection: self.connection,
            slot: slot.to_string(),
            copy_done: false,
            coalescing,
            waiting_since: None,
        })
    }

    async fn query(&mut self, sql: &str, context: ErrorContext<'_>) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.connection.write_buf.extend_from_slice(&wire::encode_query(sql)?);
        self.connection.flush().await?;

        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.connection.read_message().await? {
                BackendMessage::Other(Message::DataRow(body)) => rows.push(decode_text_row(&body)?),
                BackendMessage::Other(
                    Message::RowDescription(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::ParameterStatus(_),
                ) => {}
                BackendMessage::Other(Message::ErrorResponse(body)) => {
                    error.get_or_insert(ServerError::from_fields(body.fields())?);
                }
                BackendMessage::Other(Message::NoticeResponse(body)) => {
                    log_notice(ServerError::from_fields(body.fields())?)
                }
                BackendMessage::Other(Message::ReadyForQuery(_)) => {
                    return match error {
                        Some(error) => Err(PgError::from_server(error, context)),
                        None => Ok(rows),
                    };
                }
                other => return Err(unexpected(&other, "in reply to a simple query")),
            }
        }
    }
}

/// A session in COPY BOTH mode, streaming logical replication messages.
pub struct ReplicationStream {
    connection: Connection,
    slot: String,
    /// The server ended the COPY; nothing more will come.
    copy_done: bool,
    /// The socket's low-water mark while the stream catches up; `None` where the transport
    /// is no TCP socket of ours or a mark could not be set.
    coalescing: Option<ReadCoalescing>,
    /// When a read began to wait for the mark (None: no read is waiting for it).
    waiting_since: Option<Instant>,
}

impl fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("peer", &self.connection.peer)
            .field("slot", &self.slot)
            .field("copy_done", &self.copy_done)
            .finish_non_exhaustive()
    }
}

impl ReplicationStream {
    /// The next XLogData or keepalive; `None` once the server has ended the COPY.
    ///
    /// Cancel-safe: bytes read so far stay buffered in `self` and only complete messages
    /// are consumed, so this can be a branch of `tokio::select!`.
    ///
    /// The server ends the stream with an ErrorResponse (e.g. the slot was invalidated, or
    /// the walsender was terminated), which becomes `Err`; a connection that closes
    /// without CopyDone is [`PgError::Closed`].
    pub async fn recv(&mut self) -> Result<Option<ReplicationFrame>, PgError> {
        loop {
            while !self.copy_done {
                let Some(message) = wire::parse_backend_message(&mut self.connection.read_buf)? else {
                    break;
                };
                match message {
                    BackendMessage::CopyData(payload) => {
                        return xlog_codec::decode_copy_data(payload)
                            .map(Some)
                            .map_err(|err| PgError::Protocol(err.to_string()));
                    }
                    BackendMessage::Other(Message::CopyDone) => {
                        tracing::debug!(slot = %self.slot, "server ended the replication stream");
                        self.copy_done = true;
                    }
                    BackendMessage::Other(Message::ErrorResponse(body)) => {
                        let error = ServerError::from_fields(body.fields())?;
                        return Err(PgError::from_server(error, ErrorContext::Slot(&self.slot)));
                    }
                    BackendMessage::Other(Message::NoticeResponse(body)) => {
                        log_notice(ServerError::from_fields(body.fields())?);
                    }
                    BackendMessage::Other(Message::ParameterStatus(_)) => {}
                    other => return Err(unexpected(&other, "during replication")),
                }
            }
            if self.copy_done {
                return Ok(None);
            }
            self.fill_read_buf().await?;
        }
    }

    /// The receive low-water mark of the stream's socket (1 when every byte wakes the
    /// reader, also where the stream does not coalesce reads).
    pub fn read_low_water_mark(&self) -> usize {
        self.coalescing.as_ref().map_or(1, ReadCoalescing::mark)
    }

    /// Give the socket a low-water mark as a fast stream would; false where the stream does
    /// not coalesce reads. For tests: the next window of reads decides the mark again.
    #[doc(hidden)]
    pub fn force_read_low_water_mark(&mut self, mark: usize) -> bool {
        let Some(coalescing) = self.coalescing.as_mut() else { return false };
        let change = coalescing.force(mark, Instant::now());
        self.set_low_water_mark(change);
        self.coalescing.is_some()
    }

    /// Read more of the stream: like [`Connection::fill_read_buf`], but while the socket has
    /// a low-water mark, the read waits for that much (up to the deadline) and takes all of
    /// it at once. See [`read_coalescing`].
    async fn fill_read_buf(&mut self) -> Result<(), PgError> {
        let Some(coalescing) = self.coalescing.as_mut() else {
            return self.connection.fill_read_buf().await.map(drop);
        };
        let mark = coalescing.mark();
        let read = if mark > 1 {
            self.connection.read_buf.reserve(2 * mark);
            // The deadline counts from the first read that waited, not from this call: a
            // caller that drops `recv` more often than the deadline (a short timeout in a
            // loop) must not hold data under the mark for ever.
            let since = *self.waiting_since.get_or_insert_with(Instant::now);
            let deadline = tokio::time::Instant::from_std(since + read_coalescing::DEADLINE);
            match tokio::time::timeout_at(deadline, self.connection.fill_read_buf()).await {
                Ok(read) => read?,
                Err(_elapsed) => {
                    // Lowering the mark makes the kernel signal what is waiting, if anything.
                    let change = coalescing.on_deadline(Instant::now());
                    self.waiting_since = None;
                    self.set_low_water_mark(change);
                    self.connection.fill_read_buf().await?
                }
            }
        } else {
            self.connection.fill_read_buf().await?
        };
        self.waiting_since = None;
        if let Some(coalescing) = self.coalescing.as_mut() {
            let change = coalescing.on_read(read, Instant::now());
            self.set_low_water_mark(change);
        }
        Ok(())
    }

    /// Give the socket the mark the policy asked for. If that fails, the stream stops
    /// coalescing (the mark is put back to 1, as far as the socket takes it).
    fn set_low_water_mark(&mut self, change: Option<usize>) {
        let Some(mark) = change else { return };
        let Some(socket) = self.connection.stream.tcp() else { return };
        tracing::debug!(mark, "receive low-water mark");
        if let Err(err) = read_coalescing::set_low_water_mark(socket, mark) {
            tracing::debug!(error = %err, mark, "could not set the receive low-water mark; reading as data arrives");
            let _ = read_coalescing::set_low_water_mark(socket, 1);
            self.coalescing = None;
        }
    }

    /// Send a standby status update, stamped with the current time.
    ///
    /// `flush` is what the server may consider durably received: it advances the slot's
    /// `confirmed_flush_lsn`. With `reply_requested`, the server answers with a keepalive.
    ///
    /// If this future is dropped before it completes, the unsent rest of the message stays
    /// queued and goes out first with the next update.
    pub async fn send_standby_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), PgError> {
        let status = StandbyStatus {
            write,
            flush,
            apply,
            client_time_us: xlog_codec::postgres_epoch_micros(SystemTime::now()),
            reply_requested,
        };
        xlog_codec::encode_standby_status(&status, &mut self.connection.write_buf);
        self.connection.flush().await
    }
}

/// Quote an option value of a replication command: `'` around it, `'` doubled. The
/// walsender's scanner does not process backslashes.
fn quote_command_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn decode_text_row(body: &DataRowBody) -> Result<Vec<Option<String>>, PgError> {
    let buffer = body.buffer();
    body.ranges()
        .map(|range| {
            Ok(match range {
                None => None,
                Some(range) => {
                    let bytes = buffer.get(range).ok_or_else(|| io::Error::other("column out of range"))?;
                    let text = std::str::from_utf8(bytes).map_err(io::Error::other)?;
                    Some(text.to_string())
                }
            })
        })
        .collect()
        .map_err(|err: io::Error| PgError::Protocol(format!("malformed data row: {err}")))
}

fn single_row<'a>(
    rows: &'a [Vec<Option<String>>],
    columns: usize,
    command: &str,
) -> Result<&'a [Option<String>], PgError> {
    match rows {
        [row] if row.len() >= columns => Ok(row),
        _ => Err(PgError::Protocol(format!(
            "{command} returned {} rows, expected one row of {columns} columns",
            rows.len()
        ))),
    }
}

fn unexpected(message: &BackendMessage, when: &str) -> PgError {
    let name = match message {
        BackendMessage::CopyData(_) => "CopyData",
        BackendMessage::CopyBothResponse => "CopyBothResponse",
        BackendMessage::Other(message) => match message {
            Message::AuthenticationOk
            | Message::AuthenticationCleartextPassword
            | Message::AuthenticationMd5Password(_)
            | Message::AuthenticationSasl(_)
            | Message::AuthenticationSaslContinue(_)
            | Message::AuthenticationSaslFinal(_) => "an authentication request",
            Message::CopyInResponse(_) => "CopyInResponse",
            Message::CopyOutResponse(_) => "CopyOutResponse",
            Message::CopyDone => "CopyDone",
            Message::DataRow(_) => "DataRow",
            Message::ReadyForQuery(_) => "ReadyForQuery",
            Message::NotificationResponse(_) => "NotificationResponse",
            _ => "a message",
        },
    };
    PgError::Protocol(format!("unexpected {name} {when}"))
}

fn log_notice(notice: ServerError) {
    tracing::info!(
        severity = %notice.severity,
        code = %notice.code,
        message = %notice.message,
        detail = notice.detail.as_deref().unwrap_or(""),
        "server notice"
    );
}

/// Send the SSLRequest when the sslmode asks for TLS, and upgrade if the server agrees.
/// Returns the stream and, with TLS, the channel binding data of the server certificate.
async fn negotiate_tls(
    mut tcp: Transport,
    params: &ConnectParams,
    tls_config: Option<Arc<ClientConfig>>,
) -> Result<(Stream, Option<Vec<u8>>), PgError> {
    let Some(tls_config) = tls_config else {
        return Ok((Stream::Plain(tcp), None));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(PgError::Io)?;
    // Exactly one byte: anything the server sent after it before the handshake would
    // otherwise be mistaken for TLS-protected data (CVE-2021-23222).
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|err| match err.kind() {
        io::ErrorKind::UnexpectedEof => PgError::Closed,
        _ => PgError::Io(err),
    })?;
    match answer[0] {
        b'S' => {}
        b'N' if params.sslmode.requires_tls() => {
            return Err(PgError::TlsUnsupported {
                host: params.host.clone(),
                port: params.port,
                sslmode: params.sslmode,
            });
        }
        b'N' => {
            tracing::debug!(host = %params.host, "server refused TLS; continuing in plaintext as sslmode allows");
            return Ok((Stream::Plain(tcp), None));
        }
        other => {
            return Err(PgError::Protocol(format!("unexpected answer {:?} to the SSLRequest", char::from(other))));
        }
    }

    let server_name = tls::server_name(&params.host)?;
    let connector = tokio_rustls::TlsConnector::from(tls_config);
    let stream = connector.connect(server_name, tcp).await.map_err(|err| {
        match err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls_error) => tls::handshake_error(&params.host, params.sslmode, tls_error),
            None if err.kind() == io::ErrorKind::UnexpectedEof => PgError::Closed,
            None => PgError::Io(err),
        }
    })?;
    let channel_binding = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certificates| certificates.first())
        .and_then(|end_entity| tls::channel_binding_data(end_entity));
    Ok((Stream::Tls(Box::new(stream)), channel_binding))
}

async fn authenticate(
    connection: &mut Connection,
    params: &ConnectParams,
    channel_binding: Option<Vec<u8>>,
) -> Result<(), PgError> {
    let password = || params.password.as_deref().ok_or_else(|| PgError::PasswordMissing { user: params.user.clone() });
    let encode_error = |err: io::Error| PgError::Protocol(format!("encoding an authentication message: {err}"));
    loop {
        match connection.read_message().await? {
            BackendMessage::Other(Message::AuthenticationOk) => return Ok(()),
            BackendMessage::Other(Message::AuthenticationCleartextPassword) => {
                frontend::password_message(password()?.as_bytes(), &mut connection.write_buf).map_err(encode_error)?;
                connection.flush().await?;
            }
            BackendMessage::Other(Message::AuthenticationMd5Password(body)) => {
                let hash = authentication::md5_hash(params.user.as_bytes(), password()?.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut connection.write_buf).map_err(encode_error)?;
                connection.flush().await?;
            }
            BackendMessage::Other(Message::AuthenticationSasl(body)) => {
                authenticate_scram(connection, params, password()?, &body, channel_binding.clone()).await?;
            }
            BackendMessage::Other(Message::AuthenticationKerberosV5) => {
                return Err(PgError::UnsupportedAuth { method: "Kerberos V5" });
            }
            BackendMessage::Other(Message::AuthenticationScmCredential) => {
                return Err(PgError::UnsupportedAuth { method: "SCM credentials" });
            }
            BackendMessage::Other(Message::AuthenticationGss | Message::AuthenticationGssContinue(_)) => {
                return Err(PgError::UnsupportedAuth { method: "GSSAPI" });
            }
            BackendMessage::Other(Message::AuthenticationSspi) => {
                return Err(PgError::UnsupportedAuth { method: "SSPI" });
            }
            BackendMessage::Other(Message::ErrorResponse(body)) => {
                return Err(PgError::from_server(ServerError::from_fields(body.fields())?, params.error_context()));
            }
            BackendMessage::Other(Message::NoticeResponse(body)) => {
                log_notice(ServerError::from_fields(body.fields())?)
            }
            other => return Err(unexpected(&other, "during authentication")),
        }
    }
}

/// SASL with SCRAM-SHA-256, with channel binding when TLS is on and the server offers it.
async fn authenticate_scram(
    connection: &mut Connection,
    params: &ConnectParams,
    password: &str,
    body: &AuthenticationSaslBody,
    channel_binding: Option<Vec<u8>>,
) -> Result<(), PgError> {
    let mechanisms: Vec<String> = body
        .mechanisms()
        .map(|mechanism| Ok(mechanism.to_string()))
        .collect()
        .map_err(|err| PgError::Protocol(format!("malformed SASL mechanism list: {err}")))?;
    let offers = |name: &str| mechanisms.iter().any(|mechanism| mechanism == name);
    let (mechanism, binding) = match channel_binding {
        Some(data) if offers(sasl::SCRAM_SHA_256_PLUS) => {
            (sasl::SCRAM_SHA_256_PLUS, ChannelBinding::tls_server_end_point(data))
        }
        // We could bind but the server did not offer it: say so ('y'), so a server that
        // does support it can detect a downgrade.
        Some(_) if offers(sasl::SCRAM_SHA_256) && !offers(sasl::SCRAM_SHA_256_PLUS) => {
            (sasl::SCRAM_SHA_256, ChannelBinding::unrequested())
        }
        _ if offers(sasl::SCRAM_SHA_256) => (sasl::SCRAM_SHA_256, ChannelBinding::unsupported()),
        _ => return Err(PgError::UnsupportedAuth { method: "SASL without SCRAM-SHA-256" }),
    };
    tracing::debug!(mechanism, "authenticating");

    let protocol_error = |err: io::Error| PgError::Protocol(format!("SCRAM authentication: {err}"));
    let mut scram = ScramSha256::new(password.as_bytes(), binding);
    frontend::sasl_initial_response(mechanism, scram.message(), &mut connection.write_buf).map_err(protocol_error)?;
    connection.flush().await?;

    match connection.read_message().await? {
        BackendMessage::Other(Message::AuthenticationSaslContinue(body)) => {
            scram.update(body.data()).map_err(protocol_error)?;
        }
        BackendMessage::Other(Message::ErrorResponse(body)) => {
            return Err(PgError::from_server(ServerError::from_fields(body.fields())?, params.error_context()));
        }
        other => return Err(unexpected(&other, "during SCRAM authentication")),
    }
    frontend::sasl_response(scram.message(), &mut connection.write_buf).map_err(protocol_error)?;
    connection.flush().await?;

    match connection.read_message().await? {
        BackendMessage::Other(Message::AuthenticationSaslFinal(body)) => scram.finish(body.data()).map_err(|_| {
            PgError::Protocol("the server's SCRAM signature did not verify: it does not know the password".into())
        }),
        BackendMessage::Other(Message::ErrorResponse(body)) => {
            Err(PgError::from_server(ServerError::from_fields(body.fields())?, params.error_context()))
        }
        other => Err(unexpected(&other, "during SCRAM authentication")),
    }
}

/// The socket with its buffers. Reads append to `read_buf`; writes drain `write_buf`.
struct Connection {
    stream: Stream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// `host:port`, for logs.
    peer: String,
}

impl Connection {
    /// The next complete message; the server closing the connection is an error here.
    async fn read_message(&mut self) -> Result<BackendMessage, PgError> {
        loop {
            if let Some(message) = wire::parse_backend_message(&mut self.read_buf)? {
                return Ok(message);
            }
            self.fill_read_buf().await?;
        }
    }

    /// Read more bytes into `read_buf`; how many were read. Cancel-safe: bytes are appended
    /// only when a read completes.
    async fn fill_read_buf(&mut self) -> Result<usize, PgError> {
        let wanted = wire::missing_bytes(&self.read_buf).clamp(MIN_READ, MAX_READ);
        self.read_buf.reserve(wanted);
        let read = self.stream.read_buf(&mut self.read_buf).await.map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => PgError::Closed,
            _ => PgError::from_io(err),
        })?;
        if read == 0 {
            return Err(PgError::Closed);
        }
        Ok(read)
    }

    /// Write out everything queued in `write_buf`. If cancelled, what was not written stays
    /// queued.
    async fn flush(&mut self) -> Result<(), PgError> {
        while !self.write_buf.is_empty() {
            let written = self.stream.write(&self.write_buf).await.map_err(PgError::from_io)?;
            if written == 0 {
                return Err(PgError::Closed);
            }
            self.write_buf.advance(written);
        }
        self.stream.flush().await.map_err(PgError::from_io)
    }
}

enum Stream {
    Plain(Transport),
    Tls(Box<tokio_rustls::client::TlsStream<Transport>>),
}

impl Stream {
    /// The TCP socket under the stream, if it is one (not an SSH tunnel's channel).
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        let transport = match self {
            Stream::Plain(transport) => transport,
            Stream::Tls(stream) => stream.get_ref().0,
        };
        match transport {
            Transport::Tcp(socket) => Some(socket),
            Transport::Ssh(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_literals_double_quotes_and_keep_backslashes() {
        assert_eq!(quote_command_literal("2"), "'2'");
        assert_eq!(quote_command_literal(r#""flow_publication""#), r#"'"flow_publication"'"#);
        assert_eq!(quote_command_literal(r"it's a \ test"), r"'it''s a \ test'");
    }
}
