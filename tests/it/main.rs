//! The integration test binary: every test here runs against a real PostgreSQL server (see
//! [`harness`]) and, where it exercises the connector, the real binary.
//!
//! One binary for all integration tests, so they share one server and one link step.

mod harness;
mod transcript;
mod capture_faults;
mod capture_chaos;
mod capture_visibility;
mod faults_common;
mod pg_connect;
mod discovery;
mod types;
mod driver;
mod capture_stream;
mod validate;
mod bad_input;
