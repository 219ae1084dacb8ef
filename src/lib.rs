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
//! - [`preview`]: the local runner that drives the binary from a catalog YAML file.
//! - [`error`], [`lsn`], [`log`]: shared pieces.

#![deny(rustdoc::broken_intra_doc_links)]

pub mod capture;
pub mod config;
pub mod discovery;
pub mod error;
pub mod log;
pub mod lsn;
pub mod pg;
pub mod preview;
pub mod protocol;
pub mod replication;
pub mod spec;
pub mod validate;
pub mod value;
