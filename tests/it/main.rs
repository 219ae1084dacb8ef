//! The integration test binary: every test here runs against a real PostgreSQL server (see
//! [`harness`]) and, where it exercises the connector, the real binary.
//!
//! One binary for all integration tests, so they share one server and one link step.

// A scenario reads top to bottom as the story it tells; the library's 120-line rule for
// functions (clippy.toml) is not applied to them.
#![allow(clippy::too_many_lines)]

mod backfill_keys;
mod bad_input;
mod batch;
mod binary_values;
mod capture_chaos;
mod capture_faults;
mod capture_stream;
mod capture_visibility;
mod catalog_examples;
mod differential;
mod differential_batch;
mod discovery;
mod driver;
mod faults_common;
mod gen_common;
mod go_configs;
mod go_documents;
mod harness;
mod keyless_backfill;
mod names;
mod parallel_backfill;
mod pg_connect;
mod publication_slot;
mod read_only;
mod sourced_schemas;
mod ssh_tunnel;
mod stream_keys;
mod transcript;
mod types;
mod validate;
