//! A PostgreSQL change-data-capture connector for the Flow capture protocol.
//!
//! The binary reads newline-delimited JSON requests on stdin and answers on stdout
//! (`spec`, `discover`, `validate`, `apply`, `open`/`acknowledge`); logs are JSON lines on
//! stderr. A capture (`open`) backfills tables in key order, interleaved with watermark
//! fences written into the replication stream, and streams pgoutput logical replication.
//!
//! ```text
//!   stdin ──► protocol (RequestReader) ──► serve ─┬─► spec / discover / validate / apply
//!                                                 └─► capture::run (open)
//!
//!   streaming:  socket ─► pg::replication ─► pg::wire (frames) ─► pg::xlog (XLogData)
//!               ─► replication::pgoutput (messages) ─► capture::transactions (Begin … Commit)
//!               ─► capture::relations + capture::change_plan ─► capture::document (documents)
//!               ─► capture::checkpoints (cursor, acknowledgements) ─► protocol::emitter ─► stdout
//!
//!   backfill:   capture::chunk_plan ─► capture::backfill (chunk SQL) ─► rows ─► value encoders
//!               ─► capture::document ─► capture::fence (watermark, stream to it)
//!               ─► capture::checkpoints ─► protocol::emitter ─► stdout
//!
//!   acknowledgements (stdin) ─► capture::checkpoints ─► capture::status (slot confirmed
//!   only up to acknowledged cursors)
//! ```
//!
//! Pure parts (codecs, the capture core's state machines, config, validation rules) take
//! values and return decisions; only `pg` and `protocol` do IO, and only
//! `protocol::emitter` writes to stdout. `docs/architecture.md` draws the layers.
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
//! - [`capture`]: the capture session (IO and its `select!` loop) and the pure machines it
//!   drives: transactions, relations, change plans, fence, checkpoints, status, chunk plans,
//!   reconciliation of state and bindings.
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
    let stdout = protocol::stdio::Output::open();
    tracing::debug!(pipe = stdout.is_pipe(), "stdout");
    let stdin = tokio::io::BufReader::with_capacity(1 << 20, protocol::stdio::Input::open());
    let mut emitter = Emitter::new(stdout);
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
                config.check_supported()?;
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
