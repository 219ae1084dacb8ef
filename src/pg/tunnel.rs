//! SSH tunnels (`networkTunnel.sshForwarding`): PostgreSQL connections carried through a
//! bastion host, in process.
//!
//! ```text
//!   connect_sql / ReplicationClient::connect
//!        │  Transport::prepare(params)   SSH session: TCP, handshake, public-key login
//!        │                               (under its own timeout, before the connection's)
//!        │  Transport::open(params, ..)
//!        ├── no tunnel ──► TCP to address
//!        └── tunnel ─────► a direct-tcpip channel of that session to address
//!   then, on whichever transport: SSLRequest, TLS to PostgreSQL, startup, authentication
//! ```
//!
//! Each PostgreSQL connection is a `direct-tcpip` channel, so TLS and SCRAM channel binding
//! run end to end between the connector and PostgreSQL: the bastion only relays bytes, and
//! the TLS server name is still the configured host. A channel the bastion cannot open (the
//! database is unreachable from it, or forwarding is forbidden) fails that connection with
//! the bastion's reason, which a local listener in front of the tunnel could only report
//! as a closed socket.
//!
//! Each PostgreSQL connection has an SSH session of its own. russh re-opens a channel's
//! window when data arrives, not when it is read, and hands the data to a bounded queue per
//! channel: a channel whose reader pauses fills its queue and then stops the session's
//! whole loop, every other channel with it. The capture pauses a reader all the time (the
//! replication stream waits while a backfill query runs on another connection), so a shared
//! session could deadlock; a session per connection gives each connection TCP's own
//! backpressure (`ssh_tunnel::a_connection_that_is_not_read_does_not_stall_the_others`). A
//! capture holds a handful of connections, so the extra logins cost little.
//!
//! Sessions send a keepalive every 30s and end after six unanswered ones, so a bastion
//! that vanished is noticed like a database that vanished behind TCP keepalives.
//!
//! Host keys: the Go connector's tunnel runs OpenSSH with host-key checking off and its
//! configuration has no field for a known host key, so by default this one accepts any host
//! key too, and logs its SHA-256 fingerprint so that an operator can compare it. The
//! optional `hostKeyFingerprint` (an addition of this connector; the Go connector's spec
//! would refuse a configuration that sets it) pins the key: a session whose bastion presents
//! another key ends before the private key is used, with both fingerprints in the error.
//!
//! The private key is parsed once, when the configuration is read, so that bad key text is
//! a configuration error; neither it nor any of its bytes ever reaches a message or a log.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelOpenFailure, ChannelStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::PgError;

/// The formats [`SshTunnel::new`] reads, for the error that says which are accepted.
pub const ACCEPTED_KEY_FORMATS: &str =
    "an unencrypted private key in OpenSSH format (\"-----BEGIN OPENSSH PRIVATE KEY-----\", \
     what ssh-keygen writes), PEM (\"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\", \
     ssh-keygen -m PEM) or PKCS#8 (\"-----BEGIN PRIVATE KEY-----\"); RSA, ECDSA and Ed25519 keys work";

/// Keepalives on the SSH session: a bastion that vanished without closing the connection is
/// noticed after about three minutes (like the TCP keepalives of direct connections).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_MAX: usize = 6;

/// Why the tunnel configuration cannot be used. Never holds any part of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelConfigError {
    #[error("{0}")]
    Endpoint(String),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    HostKey(String),
}

/// `ssh://user@host[:port]`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl SshEndpoint {
    /// Parse `ssh://user@host[:port]` (port 22 when absent; an IPv6 host in brackets).
    pub fn parse(text: &str) -> Result<SshEndpoint, TunnelConfigError> {
        let bad = |why: &str| TunnelConfigError::Endpoint(format!("{why}; expected ssh://user@host[:port]"));
        let rest = text.trim().strip_prefix("ssh://").ok_or_else(|| bad("does not start with ssh://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (user, host_port) = rest.rsplit_once('@').ok_or_else(|| bad("names no user"))?;
        if user.is_empty() {
            return Err(bad("names no user"));
        }
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("has an unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(bad("names no valid host"));
        }
        let port = match port {
            None => 22,
            Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("has an invalid port"))?,
        };
        Ok(SshEndpoint { user: user.to_string(), host: host.to_string(), port })
    }
}

impl fmt::Display for SshEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" port {}", self.host, self.port)
    }
}

/// A configured tunnel: the bastion and the key.
pub struct SshTunnel {
    endpoint: SshEndpoint,
    key: Arc<PrivateKey>,
    /// Whether the bastion's host key was logged at `info` yet (once per process is enough;
    /// the later sessions log it at `debug`).
    host_key_logged: Arc<AtomicBool>,
    /// The pinned host key's fingerprint, `SHA256:<base64>` (None: any key is accepted).
    expected_host_key: Option<String>,
}

impl fmt::Debug for SshTunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTunnel")
            .field("endpoint", &self.endpoint)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// An open, authenticated SSH session, for one PostgreSQL connection.
pub struct TunnelSession {
    handle: Handle<Bastion>,
    endpoint: SshEndpoint,
}

impl SshTunnel {
    /// Check the endpoint and parse the key; nothing is connected yet.
    pub fn new(endpoint: &str, private_key: &str) -> Result<SshTunnel, TunnelConfigError> {
        let endpoint = SshEndpoint::parse(endpoint)?;
        let key = parse_private_key(private_key)?;
        Ok(SshTunnel {
            endpoint,
            key: Arc::new(key),
            host_key_logged: Arc::new(AtomicBool::new(false)),
            expected_host_key: None,
        })
    }

    /// Accept only the host key of this SHA-256 fingerprint, as `ssh-keygen -l` prints it
    /// (`SHA256:` and 43 base64 characters; the prefix may be left out). Blank: any key.
    pub fn with_host_key(mut self, fingerprint: &str) -> Result<SshTunnel, TunnelConfigError> {
        let text = fingerprint.trim();
        if text.is_empty() {
            self.expected_host_key = None;
            return Ok(self);
        }
        let digest = text.strip_prefix("SHA256:").unwrap_or(text);
        use base64::Engine as _;
        match base64::engine::general_purpose::STANDARD_NO_PAD.decode(digest.trim_end_matches('=')) {
            Ok(bytes) if bytes.len() == 32 => {
                self.expected_host_key = Some(format!("SHA256:{}", digest.trim_end_matches('=')));
                Ok(self)
            }
            _ => Err(TunnelConfigError::HostKey(format!(
                "{text:?} is not a SHA-256 host key fingerprint; expected SHA256: and 43 base64 characters, \
                 as `ssh-keygen -lf <host key file>` prints"
            ))),
        }
    }

    pub fn endpoint(&self) -> &SshEndpoint {
        &self.endpoint
    }

    /// Open a session (TCP, handshake, login), bounded by `timeout` (zero: none).
    pub async fn session(&self, timeout: Duration) -> Result<TunnelSession, PgError> {
        let connecting = self.connect();
        let handle = if timeout.is_zero() {
            connecting.await?
        } else {
            tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_elapsed| PgError::SshTimeout { bastion: self.endpoint.to_string(), after: timeout })??
        };
        Ok(TunnelSession { handle, endpoint: self.endpoint.clone() })
    }

    /// A session and a channel of it to `host:port`, for tests and tools: connections use
    /// [`Transport::prepare`] and [`Transport::open`], which keep the two timeouts apart.
    pub async fn open(&self, host: &str, port: u16, timeout: Duration) -> Result<Transport, PgError> {
        self.session(timeout).await?.open(host, port).await
    }

    async fn connect(&self) -> Result<Handle<Bastion>, PgError> {
        let endpoint = &self.endpoint;
        let unreachable = |source: io::Error| PgError::SshUnreachable { bastion: endpoint.to_string(), source };
        let tcp = connect_tcp(&endpoint.host, endpoint.port).await.map_err(unreachable)?;
        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            keepalive_max: KEEPALIVE_MAX,
            ..client::Config::default()
        });
        let presented = Arc::new(std::sync::Mutex::new(None));
        let handler = Bastion {
            endpoint: endpoint.to_string(),
            host_key_logged: self.host_key_logged.clone(),
            expected: self.expected_host_key.clone(),
            presented: presented.clone(),
        };
        let mut session = client::connect_stream(config, tcp, handler).await.map_err(|err| {
            let presented = presented.lock().ok().and_then(|p| p.clone());
            match (err, presented, &self.expected_host_key) {
                (russh::Error::UnknownKey, Some(presented), Some(expected)) => {
                    PgError::SshHostKeyMismatch { bastion: endpoint.to_string(), presented, expected: expected.clone() }
                }
                (err, _, _) => failed(endpoint, err),
            }
        })?;
        // RSA keys sign with the strongest hash the server announces (rsa-sha2-512/256), and
        // with ssh-rsa (SHA-1) on servers that announce none (they predate rsa-sha2). Only
        // RSA asks: the answer may take the server a second.
        let hash = if self.key.algorithm().is_rsa() {
            session.best_supported_rsa_hash().await.map_err(|err| failed(endpoint, err))?.flatten()
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(self.key.clone(), hash);
        let result =
            session.authenticate_publickey(endpoint.user.as_str(), key).await.map_err(|err| failed(endpoint, err))?;
        if !result.success() {
            return Err(PgError::SshAuthRefused { bastion: endpoint.to_string(), user: endpoint.user.clone() });
        }
        tracing::debug!(bastion = %endpoint, user = %endpoint.user, "SSH tunnel session open");
        Ok(session)
    }
}

impl TunnelSession {
    /// A channel through the bastion to `host:port`; the session lives as long as it.
    pub async fn open(self, host: &str, port: u16) -> Result<Transport, PgError> {
        let channel = self.handle.channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0).await.map_err(
            |err| match err {
                russh::Error::ChannelOpenFailure(reason) => PgError::SshForwardRefused {
                    bastion: self.endpoint.to_string(),
                    host: host.to_string(),
                    port,
                    reason: describe_open_failure(&reason),
                    transient: matches!(
                        reason,
                        ChannelOpenFailure::ConnectFailed | ChannelOpenFailure::ResourceShortage
                    ),
                },
                other => failed(&self.endpoint, other),
            },
        )?;
        tracing::debug!(bastion = %self.endpoint, host, port, "SSH tunnel channel open");
        let bastion = self.endpoint.to_string();
        Ok(Transport::Ssh(Box::new(SshChannel { stream: channel.into_stream(), session: self.handle, bastion })))
    }
}

fn failed(endpoint: &SshEndpoint, err: russh::Error) -> PgError {
    let bastion = endpoint.to_string();
    match err {
        russh::Error::IO(source) => PgError::SshUnreachable { bastion, source },
        russh::Error::ConnectionTimeout | russh::Error::KeepaliveTimeout | russh::Error::InactivityTimeout => {
            PgError::SshLost { bastion, reason: err.to_string() }
        }
        russh::Error::Disconnect | russh::Error::HUP | russh::Error::SendError | russh::Error::RecvError => {
            PgError::SshLost { bastion, reason: "the SSH server closed the connection".into() }
        }
        other => PgError::SshFailed { bastion, reason: other.to_string() },
    }
}

fn describe_open_failure(reason: &ChannelOpenFailure) -> String {
    match reason {
        ChannelOpenFailure::AdministrativelyProhibited => "forwarding is prohibited by the SSH server".into(),
        ChannelOpenFailure::ConnectFailed => "the SSH server could not connect to it".into(),
        ChannelOpenFailure::UnknownChannelType => "the SSH server does not support TCP forwarding".into(),
        ChannelOpenFailure::ResourceShortage => "the SSH server is out of resources".into(),
        ChannelOpenFailure::Other { code, reason } => format!("the SSH server refused ({code}: {reason})"),
    }
}

/// Parse the key text, and say which formats are accepted when it is none of them. The
/// underlying parser's message is not used: it could quote the text.
fn parse_private_key(text: &str) -> Result<PrivateKey, TunnelConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TunnelConfigError::Key(format!("is empty; expected {ACCEPTED_KEY_FORMATS}")));
    }
    match russh::keys::decode_secret_key(text, None) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(TunnelConfigError::Key(format!(
            "is encrypted with a passphrase, which cannot be configured; remove it (ssh-keygen -p) and paste {ACCEPTED_KEY_FORMATS}"
        ))),
        Err(_) => Err(TunnelConfigError::Key(format!("cannot be parsed as a private key; expected {ACCEPTED_KEY_FORMATS}"))),
    }
}

/// The client side of the SSH session: checks the bastion's host key against the pinned
/// fingerprint if there is one, accepts it otherwise as the Go connector does (see the
/// module doc), and logs its fingerprint.
pub struct Bastion {
    endpoint: String,
    host_key_logged: Arc<AtomicBool>,
    expected: Option<String>,
    /// The fingerprint the bastion presented, for the error when it is not the expected one.
    presented: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for Bastion {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let fingerprint = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256).to_string(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
        };
        if let Ok(mut presented) = self.presented.lock() {
            *presented = Some(fingerprint.clone());
        }
        let message = match &self.expected {
            Some(expected) if *expected != fingerprint => return Ok(false),
            Some(_) => "SSH server host key (verified against hostKeyFingerprint)",
            None => "SSH server host key (not verified, as in the Go connector; see hostKeyFingerprint)",
        };
        if self.host_key_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(bastion = %self.endpoint, host_key = %fingerprint, "{message}");
        } else {
            tracing::info!(bastion = %self.endpoint, host_key = %fingerprint, "{message}");
        }
        Ok(true)
    }
}

/// TCP to the first address of `host` that accepts, with no delay and keepalives like
/// the direct connections.
pub(crate) async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, io::Error> {
    let addresses = tokio::net::lookup_host((host, port)).await?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                // A peer that vanished without closing is noticed even while we only send.
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(super::TCP_KEEPALIVE_IDLE)
                    .with_interval(super::TCP_KEEPALIVE_INTERVAL)
                    .with_retries(super::TCP_KEEPALIVE_RETRIES);
                socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
                return Ok(stream);
            }
            Err(err) => {
                tracing::debug!(%address, error = %err, "could not connect to one address of the host");
                last_error = err;
            }
        }
    }
    Err(last_error)
}

/// The byte stream under a PostgreSQL connection: TCP, or a channel through the tunnel.
pub enum Transport {
    Tcp(TcpStream),
    Ssh(Box<SshChannel>),
}

/// A forwarded channel and the session it belongs to (which ends when this is dropped).
pub struct SshChannel {
    stream: ChannelStream<Msg>,
    session: Handle<Bastion>,
    bastion: String,
}

/// The error a channel's reads and writes give once its SSH session has ended, so that the
/// connection's error names the tunnel rather than the database ([`PgError::from_io`]).
#[derive(Debug, thiserror::Error)]
#[error("the SSH tunnel to {bastion} was lost")]
pub struct TunnelLost {
    pub bastion: String,
}

impl SshChannel {
    /// [`TunnelLost`] as an I/O error when the session has ended: a channel's end of file
    /// or failure then means the tunnel went away, not the database.
    fn lost(&self) -> Option<io::Error> {
        self.session
            .is_closed()
            .then(|| io::Error::new(io::ErrorKind::ConnectionAborted, TunnelLost { bastion: self.bastion.clone() }))
    }
}

impl Transport {
    /// With a tunnel, open this connection's SSH session, under its own timeout: the caller
    /// then runs [`Transport::open`] under the connection's, so that a bastion that does not
    /// answer is reported as such and not as a database that does not.
    pub async fn prepare(params: &super::ConnectParams) -> Result<Option<TunnelSession>, PgError> {
        match &params.tunnel {
            None => Ok(None),
            Some(tunnel) => tunnel.session(params.connect_timeout).await.map(Some),
        }
    }

    /// Open the transport to the configured host and port: directly, or through `session`
    /// (from [`Transport::prepare`]; opened here when missing).
    pub async fn open(params: &super::ConnectParams, session: Option<TunnelSession>) -> Result<Transport, PgError> {
        let session = match (session, &params.tunnel) {
            (Some(session), _) => session,
            (None, Some(tunnel)) => tunnel.session(params.connect_timeout).await?,
            (None, None) => {
                return connect_tcp(&params.host, params.port)
                    .await
                    .map(Transport::Tcp)
                    .map_err(|source| PgError::Unreachable { host: params.host.clone(), port: params.port, source });
            }
        };
        session.open(&params.host, params.port).await
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Ssh(channel) => {
                let before = buf.filled().len();
                match Pin::new(&mut channel.stream).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                        Poll::Ready(channel.lost().map_or(Ok(()), Err))
                    }
                    Poll::Ready(Err(err)) => Poll::Ready(Err(channel.lost().unwrap_or(err))),
                    other => other,
                }
            }
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Ssh(channel) => match Pin::new(&mut channel.stream).poll_write(cx, buf) {
                Poll::Ready(Err(err)) => Poll::Ready(Err(channel.lost().unwrap_or(err))),
                other => other,
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Ssh(channel) => Pin::new(&mut channel.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Ssh(channel) => Pin::new(&mut channel.stream).poll_shutdown(cx),
        }
    }
}

/// A throwaway Ed25519 key, made for the unit tests with `ssh-keygen -t ed25519 -N ''` and
/// authorized nowhere.
#[cfg(test)]
pub(crate) const TEST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCltwRuV8GBi7BiLEpdOPmZ0AmV5HBwG1J+EODe/ilhfAAAAJAFr0YsBa9G
LAAAAAtzc2gtZWQyNTUxOQAAACCltwRuV8GBi7BiLEpdOPmZ0AmV5HBwG1J+EODe/ilhfA
AAAEDTntj2wR4iXGPqkuQSibSfFPWzx/WFehdOJzlcaslcy6W3BG5XwYGLsGIsSl04+ZnQ
CZXkcHAbUn4Q4N7+KWF8AAAAC3Rlc3RAdHVubmVsAQI=
-----END OPENSSH PRIVATE KEY-----";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_the_go_connector_documents_them() {
        let parse = |text| SshEndpoint::parse(text);
        assert_eq!(
            parse("ssh://flow@bastion.example.com").unwrap(),
            SshEndpoint { user: "flow".into(), host: "bastion.example.com".into(), port: 22 }
        );
        assert_eq!(
            parse(" ssh://u@10.0.0.1:2222 ").unwrap(),
            SshEndpoint { user: "u".into(), host: "10.0.0.1".into(), port: 2222 }
        );
        assert_eq!(parse("ssh://u@[::1]:22").unwrap(), SshEndpoint { user: "u".into(), host: "::1".into(), port: 22 });
        for bad in ["bastion:22", "ssh://bastion", "ssh://@bastion", "ssh://u@", "ssh://u@b:0", "ssh://u@b:x"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.ends_with("expected ssh://user@host[:port]"), "{bad}: {err}");
        }
    }

    #[test]
    fn host_key_fingerprints_are_sha256_as_ssh_keygen_prints_them() {
        let tunnel = || SshTunnel::new("ssh://u@b", TEST_KEY).unwrap();
        let digest = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
        for text in [format!("SHA256:{digest}"), digest.to_string(), format!(" SHA256:{digest}= ")] {
            let pinned = tunnel().with_host_key(&text).unwrap();
            assert_eq!(pinned.expected_host_key.as_deref(), Some(format!("SHA256:{digest}").as_str()), "{text}");
        }
        assert_eq!(tunnel().with_host_key("  ").unwrap().expected_host_key, None);
        for bad in ["MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", "SHA256:abc", "SHA256:not base64 at all!"] {
            let err = tunnel().with_host_key(bad).unwrap_err();
            assert!(matches!(err, TunnelConfigError::HostKey(_)), "{bad}");
            assert!(err.to_string().contains("ssh-keygen -lf"), "{err}");
        }
    }

    #[test]
    fn bad_key_text_names_the_accepted_formats_and_never_echoes_the_text() {
        for text in
            ["", "not a key", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAASECRET\n-----END OPENSSH PRIVATE KEY-----"]
        {
            let err = SshTunnel::new("ssh://u@b", text).unwrap_err().to_string();
            assert!(err.contains("OpenSSH format") && err.contains("PKCS#8"), "{err}");
            assert!(!err.contains("SECRET") && !err.contains("not a key"), "{err}");
        }
    }

    /// A bastion that is not listening, and one that accepts and never speaks: each named
    /// as the SSH server, not as the database, and both transient.
    #[tokio::test]
    async fn an_unreachable_or_silent_bastion_is_named() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let tunnel = SshTunnel::new(&format!("ssh://u@127.0.0.1:{closed}"), TEST_KEY).unwrap();
        let Err(err) = tunnel.open("db", 5432, Duration::from_secs(5)).await else {
            panic!("connected to a closed port")
        };
        assert!(matches!(err, PgError::SshUnreachable { .. }) && err.is_transient(), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "could not connect to SSH server \"127.0.0.1\" port {closed} (networkTunnel.sshForwarding.sshEndpoint): "
            )),
            "{err}"
        );

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { silent.accept().await });
        let tunnel = SshTunnel::new(&format!("ssh://u@127.0.0.1:{port}"), TEST_KEY).unwrap();
        let Err(err) = tunnel.open("db", 5432, Duration::from_millis(300)).await else {
            panic!("a silent server opened a session")
        };
        assert!(matches!(err, PgError::SshTimeout { .. }) && err.is_transient(), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "timed out after 300ms connecting to SSH server \"127.0.0.1\" port {port} (networkTunnel.sshForwarding.sshEndpoint)"
            )
        );
        drop(accepted);
    }

    #[test]
    fn a_key_with_a_passphrase_is_refused_with_how_to_remove_it() {
        // A throwaway key, made for this test with ssh-keygen -t ed25519 -N passphrase.
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABBqLHvMFD
rTpVb9hEwfKq/LAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAILKlR4/tVe8FyQC8
0KXSsPGJd3hAVNwe2jfzrttuO2BrAAAAkB7d8e1webduOUMLjirY0/Sx4x8v2cRepd4uEi
071Ub7JhUH2BMnlBz2fjkVXFLtuHRsAiQCqr58Lw3iULNzWAyDpo3S7uVupR1PZnOEaZKK
7rpT4zlV09nmbC6xHdZOqyjp1OrvD8OLyUqyHoK5slHooCBWRzgEIiTGYISiaTJrYmxXYM
zsb2r/me8MoUVjBw==
-----END OPENSSH PRIVATE KEY-----";
        let err = SshTunnel::new("ssh://u@b", key).unwrap_err().to_string();
        assert!(
            err.starts_with("is encrypted with a passphrase, which cannot be configured; remove it (ssh-keygen -p)"),
            "{err}"
        );
        assert!(!err.contains("b3BlbnNz"), "{err}");
    }

    #[test]
    fn an_openssh_ed25519_key_parses_and_debug_hides_it() {
        let key = TEST_KEY;
        let tunnel = SshTunnel::new("ssh://u@b:2200", key).unwrap();
        assert_eq!(tunnel.endpoint().port, 2200);
        let debug = format!("{tunnel:?}");
        assert!(debug.contains("<redacted>") && !debug.contains("b3BlbnNz"), "{debug}");
    }
}
