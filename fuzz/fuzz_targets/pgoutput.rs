//! Feeds arbitrary bytes to the pgoutput decoder under every decoding context.
//!
//! Besides "never panics", it checks one property of the format: each protocol version
//! only adds to the previous one, so a message that decodes under version `v` decodes to
//! the same message under every later version.

#![no_main]

use libfuzzer_sys::fuzz_target;
use source_postgres::replication::pgoutput::{
    decode_message, DecodeContext, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
};

fuzz_target!(|data: &[u8]| {
    for in_streamed_block in [false, true] {
        let mut earlier = None;
        for protocol_version in MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION {
            let ctx = DecodeContext { protocol_version, in_streamed_block };
            let decoded = decode_message(data, &ctx).ok();
            if let Some(earlier) = &earlier {
                assert_eq!(decoded.as_ref(), Some(earlier), "{ctx:?}");
            }
            if decoded.is_some() {
                earlier = decoded;
            }
        }
    }
});
