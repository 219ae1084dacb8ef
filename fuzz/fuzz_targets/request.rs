//! Feeds arbitrary bytes to the request parser: it must classify or reject every line,
//! never panic, and name the line in every error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use source_postgres::protocol::parse_request;

fuzz_target!(|data: &[u8]| {
    if let Err(err) = parse_request(7, data) {
        assert!(err.to_string().contains("line 7"), "{err}");
    }
});
