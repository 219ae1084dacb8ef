//! A PostgreSQL change-data-capture connector for the Flow capture protocol.
//!
//! The binary reads newline-delimited JSON requests on stdin and answers on stdout
//! (`spec`, `discover`, `validate`, `apply`, `open`/`acknowledge`); logs are JSON lines on
//! stderr. A capture (`open`) backfills tables in key order, interleaved with watermark
//! fences written into the replication stream, and streams pgoutput logical replication.
//!
//! ```text
//!   stdin ──► protocol::read ──► dispatch ─┬─► spec / discover / validate / apply
//!                                          └─► capture::run ──┬─► backfill chunks (SQL)
//!                                                             └─► replication stream
//!                                                                   (pg::replication +
//!                                                                    replication::pgoutput)
//!                                                  documents + checkpoints
//!   stdout ◄── protocol::emitter (the only writer) ◄───────────┘
//! ```
//!
//! # Layout
//! - [`protocol`]: request/response types, the stdin reader and the single stdout writer.
//! - [`config`]: endpoint and resource configuration (the `spec` schemas derive from it).
//! - [`spec`]: the `spec` response.
//! - [`value`]: PostgreSQL types, their JSON schemas and their value encoding (pure).
//! - [`pg`]: connections: TLS, the SQL client, the replication-protocol client.
//! - [`replication`]: pgoutput decoding (pure) and the change-event stream.
//! - [`discovery`]: catalog queries and per-table collection schemas.
//! - [`validate`]: prerequisite checks with remediation SQL; `apply`.
//! - [`capture`]: the capture session: state, backfill, fences, checkpoints, acks.
//! - [`batch`]: the `source-postgres-batch` connector (polling, no replication), built on
//!   the same protocol, connection, discovery and value modules.
//! - [`error`], [`lsn`], [`log`]: shared pieces; [`failpoint`]: crash points for fault tests.

pub mod batch;
pub mod capture;
pub mod config;
pub mod discovery;
pub mod error;
pub mod failpoint;
pub mod log;
pub mod lsn;
pub mod pg;
pub mod protocol;
pub mod replication;
pub mod spec;
pub mod validate;
pub mod value;

use protocol::emitter::Emitter;
use protocol::{Request, RequestReader};

/// Run the connector over stdin/stdout until end of input (or until a capture ends).
pub async fn run_connector() -> Result<(), error::Error> {
    let stdin = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin());
    let mut emitter = Emitter::new(tokio::io::stdout());
    serve(RequestReader::new(stdin), &mut emitter).await
}

/// Answer requests in a loop: the runtime sends an internal `spec` before the real request,
/// and unary requests end with end of input.
pub async fn serve<R, W>(mut reader: RequestReader<R>, emitter: &mut Emitter<W>) -> Result<(), error::Error>
where
    R: tokio::io::AsyncBufRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin,
{
    use error::Error;
    while let Some(request) = reader.next().await? {
        match request {
            Request::Spec => emitter.spec(&spec::spec_response()).await.map_err(Error::Output)?,
            Request::Discover(discover) => {
                let config = config::Config::parse(&discover.config)?;
                config.check_supported(config::Purpose::Discover)?;
                let bindings = discovery::discover(&config).await?;
                emitter.discovered(&bindings).await.map_err(Error::Output)?;
            }
            Request::Validate(request) => {
                let bindings = validate::validate(&request).await?;
                emitter.validated(&bindings).await.map_err(Error::Output)?;
            }
            Request::Apply(request) => {
                let description = validate::apply(&request).await?;
                emitter.applied(&description).await.map_err(Error::Output)?;
            }
            Request::Open(open) => {
                // The capture owns stdin from here on: it keeps reading acknowledgements.
                return capture::run(*open, reader, emitter).await;
            }
            Request::Acknowledge(_) => {
                return Err(Error::user(
                    "received an acknowledge request outside of a capture session",
                    "send \"open\" before acknowledging checkpoints",
                ));
            }
        }
    }
    emitter.flush().await.map_err(Error::Output)
}
