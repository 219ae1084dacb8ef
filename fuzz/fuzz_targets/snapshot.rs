//! Feeds arbitrary text to the parser of `pg_current_snapshot()`'s output, and arbitrary
//! transaction ids to the visibility checks built on it.
//!
//! Besides "never panics", it checks the parser's contract: a parsed snapshot has
//! `xmin <= xmax` and its running transactions sorted within `[xmin, xmax)`, and a check
//! forgets exactly the transactions the snapshot sees.

#![no_main]

use libfuzzer_sys::fuzz_target;
use source_postgres::capture::visibility::{DeliveredXids, Snapshot};

fuzz_target!(|data: &[u8]| {
    // Up to the first NUL: the snapshot text; after it: 32-bit transaction ids.
    let (text, xids) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Ok(snapshot) = Snapshot::parse(text) else { return };
    assert!(snapshot.xmin <= snapshot.xmax);
    assert!(snapshot.xip.windows(2).all(|w| w[0] <= w[1]));
    assert!(snapshot.xip.iter().all(|x| *x >= snapshot.xmin && *x < snapshot.xmax));
    let mut delivered = DeliveredXids::default();
    let xids: Vec<u32> = xids.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    for xid in &xids {
        delivered.record(*xid);
    }
    let unseen = delivered.forget_seen(&snapshot);
    let expected: Vec<u32> = xids.iter().copied().filter(|x| !snapshot.sees_committed(*x)).collect();
    assert_eq!(unseen.is_some(), !expected.is_empty());
    assert_eq!(delivered.len(), expected.iter().collect::<std::collections::BTreeSet<_>>().len());
    if let Some(unseen) = unseen {
        assert!(!snapshot.sees_committed(unseen));
    }
});
