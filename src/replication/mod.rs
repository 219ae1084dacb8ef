//! Logical replication: pgoutput decoding (pure) and the change-event stream.

pub mod pgoutput;
