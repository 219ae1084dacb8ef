//! The backfill fence: where streaming to a backfill chunk's fence stops.
//!
//! After a chunk is read the session sets a fence that lies after every transaction the
//! chunk's snapshot sees, then streams until the fence is passed: every change committed
//! before the chunk's snapshot is then behind it, so the chunk's rows and those changes can
//! share one checkpoint (see the module docs of [`super`]). There are two kinds of fence.
//!
//! **A watermark** (the default): the session writes a fresh watermark (a random value,
//! naming the capture) into the watermarks table, and the fence is that write's commit.
//!
//! ```text
//!   Idle ──written(value)──► Written(value) ──row carrying value──► Seen ──commit──► Reached
//! ```
//!
//! Only the value written last counts (an older watermark, or another capture's, in the
//! stream is ignored), and the fence is reached at the commit that follows the row: the
//! watermark's own transaction's, since changes arrive inside their transaction. The value
//! also proves slot ownership: it names the capture that wrote it, and the watermarks
//! table's row of a slot shows who streamed from it last (see [`super::slot`]).
//!
//! **A WAL position** (`advanced.read_only_capture`, which writes nothing): the server's
//! WAL position read after the chunk's snapshot was taken, `pg_current_wal_insert_lsn()` on
//! a primary, `pg_last_wal_replay_lsn()` on a standby. A transaction is visible to a
//! snapshot only once its commit record is in the WAL (a primary inserts the record before
//! it ends the transaction; a standby makes it visible by replaying the record), so every
//! commit the snapshot sees ends at or before that position. The insert position, not the
//! flush position: under `synchronous_commit = off` a commit is visible before it is flushed.
//! The fence is passed when the stream
//!
//! - delivers a commit that ends at or after the position (commits arrive in WAL order), or
//! - sends a keepalive whose WAL end is at or after it while no transaction is open: the
//!   walsender has decoded the WAL up to there and sent every transaction that committed in
//!   it (a transaction that is still open, or one streamed in progress, commits later, beyond
//!   the fence). This is what makes an idle database pass its fences, when nothing commits in
//!   it while other databases of the cluster move the WAL on: the Go connector hangs there.
//!
//! ```text
//!   Idle ──at(position)──► Position(p) ──commit ending ≥ p, or idle keepalive ≥ p──► Reached
//! ```
//!
//! A position the stream has already passed is reached at once. Either kind returns to
//! `Idle` at `finish`.

use crate::lsn::Lsn;

/// What the current fence waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Awaited {
    /// No fence is awaited.
    #[default]
    Idle,
    /// This watermark was written; its row has not come through the stream yet.
    Written(String),
    /// The watermark's row came through; its transaction has not committed yet.
    Seen,
    /// A WAL position: every transaction committed before it must have been streamed.
    Position(Lsn),
    /// The fence was passed: everything before it was streamed.
    Reached,
}

/// Where streaming to the current fence stands, and how far the stream is known complete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Fence {
    awaited: Awaited,
    /// Every transaction that committed before this position was streamed: the end of the
    /// last commit, or the WAL end of a keepalive that came between transactions.
    streamed: Lsn,
}

impl Fence {
    /// A fence for a stream that starts at `start` (everything before it was streamed by
    /// earlier sessions).
    pub fn new(start: Lsn) -> Fence {
        Fence { awaited: Awaited::Idle, streamed: start }
    }

    /// What the fence waits for.
    #[cfg(test)]
    pub fn awaited(&self) -> &Awaited {
        &self.awaited
    }

    /// A watermark was written (whatever the fence was waiting for before).
    pub fn written(&mut self, watermark: String) {
        self.awaited = Awaited::Written(watermark);
    }

    /// The fence is the WAL position `position` (whatever it was waiting for before); it is
    /// reached at once if the stream is already there.
    pub fn at(&mut self, position: Lsn) {
        self.awaited = if self.streamed >= position { Awaited::Reached } else { Awaited::Position(position) };
    }

    /// A row of the watermarks table carrying `value` came through the stream.
    pub fn saw(&mut self, value: &[u8]) {
        if matches!(&self.awaited, Awaited::Written(expected) if expected.as_bytes() == value) {
            self.awaited = Awaited::Seen;
        }
    }

    /// A transaction committed, its commit record ending at `end_lsn`.
    pub fn on_commit(&mut self, end_lsn: Lsn) {
        self.streamed = self.streamed.max(end_lsn);
        match self.awaited {
            Awaited::Seen => self.awaited = Awaited::Reached,
            Awaited::Position(position) if end_lsn >= position => self.awaited = Awaited::Reached,
            _ => {}
        }
    }

    /// A keepalive showing that the walsender has sent everything up to `wal_end`; it says so
    /// of transactions only when none is open in the stream (`between_transactions`).
    pub fn on_keepalive(&mut self, wal_end: Lsn, between_transactions: bool) {
        if !between_transactions {
            return;
        }
        self.streamed = self.streamed.max(wal_end);
        if matches!(self.awaited, Awaited::Position(position) if wal_end >= position) {
            self.awaited = Awaited::Reached;
        }
    }

    /// Whether the fence was reached.
    pub fn reached(&self) -> bool {
        self.awaited == Awaited::Reached
    }

    /// Streaming to the fence is over: nothing is awaited any more.
    pub fn finish(&mut self) {
        self.awaited = Awaited::Idle;
    }
}

/// The fence position for a WAL position `position` read from the server: the insert
/// position points past the page header when it is at the start of a page (no record has
/// been written there yet), while records, and so the walsender's positions, end before that
/// header; the position is taken back to where the last record ended, or a fence read at a
/// page boundary would wait for the next record. `block_size` and `segment_size` are the
/// server's `wal_block_size` and `wal_segment_size`, in bytes (a segment's first page has
/// the long header).
pub(super) fn record_end(position: Lsn, block_size: u64, segment_size: u64) -> Lsn {
    const SHORT_HEADER: u64 = 24;
    const LONG_HEADER: u64 = 40;
    let at = position.0;
    if segment_size > 0 && at % segment_size == LONG_HEADER && at >= LONG_HEADER {
        Lsn(at - LONG_HEADER)
    } else if block_size > 0 && at % block_size == SHORT_HEADER {
        Lsn(at - SHORT_HEADER)
    } else {
        position
    }
}

/// A watermark value: random, so each fence is recognised, and naming the capture that
/// wrote it.
pub(super) fn new_watermark(owner: &str) -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{random}:{owner}")
}

/// The owner a watermark names, if it names one.
pub(super) fn owner_of(watermark: &str) -> Option<&str> {
    let (random, owner) = watermark.split_once(':')?;
    (random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit())).then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_reached_at_the_commit_after_its_watermark() {
        let mut fence = Fence::default();
        fence.on_commit(Lsn(10));
        assert!(!fence.reached(), "an idle fence is never reached");
        fence.written("w1".into());
        fence.on_commit(Lsn(20));
        fence.on_keepalive(Lsn(1_000), true);
        assert!(!fence.reached(), "a commit or a keepalive before the watermark's row is not the fence");
        fence.saw(b"w1");
        assert!(!fence.reached(), "the row alone is not the fence: its transaction must commit");
        fence.on_commit(Lsn(30));
        assert!(fence.reached());
        fence.on_commit(Lsn(40));
        assert!(fence.reached(), "it stays reached until streaming to it is over");
        fence.finish();
        assert_eq!(fence.awaited(), &Awaited::Idle);
        fence.saw(b"w1");
        fence.on_commit(Lsn(50));
        assert!(!fence.reached(), "a finished fence is not reached again");
    }

    #[test]
    fn only_the_watermark_written_last_counts() {
        let mut fence = Fence::default();
        fence.written("old".into());
        fence.written("new".into());
        fence.saw(b"old");
        fence.saw(b"other capture's");
        fence.on_commit(Lsn(1));
        assert_eq!(fence.awaited(), &Awaited::Written("new".into()));
        fence.saw(b"new");
        assert_eq!(fence.awaited(), &Awaited::Seen);
        fence.written("newer".into());
        fence.on_commit(Lsn(2));
        assert!(!fence.reached(), "a new watermark starts over");
    }

    #[test]
    fn a_position_fence_is_reached_by_a_commit_ending_at_or_after_it() {
        let mut fence = Fence::new(Lsn(100));
        fence.at(Lsn(500));
        fence.on_commit(Lsn(499));
        assert!(!fence.reached(), "a commit that ends before the fence");
        fence.saw(b"anything");
        assert_eq!(fence.awaited(), &Awaited::Position(Lsn(500)), "watermark rows do not matter");
        fence.on_commit(Lsn(500));
        assert!(fence.reached(), "a commit ending exactly at the fence");
        fence.finish();
        fence.at(Lsn(600));
        fence.on_commit(Lsn(700));
        assert!(fence.reached(), "a commit ending past the fence");
    }

    #[test]
    fn a_position_fence_is_reached_by_an_idle_keepalive_only() {
        let mut fence = Fence::new(Lsn(100));
        fence.at(Lsn(500));
        fence.on_keepalive(Lsn(499), true);
        assert!(!fence.reached(), "the walsender has not sent everything up to the fence yet");
        fence.on_keepalive(Lsn(900), false);
        assert!(!fence.reached(), "a transaction is open: it may have committed before the fence");
        fence.on_keepalive(Lsn(500), true);
        assert!(fence.reached(), "between transactions, everything up to the WAL end was sent");
    }

    #[test]
    fn a_position_the_stream_has_passed_is_reached_at_once() {
        let mut fence = Fence::new(Lsn(100));
        fence.at(Lsn(100));
        assert!(fence.reached(), "the start position: earlier sessions streamed everything before it");
        fence.finish();
        fence.on_keepalive(Lsn(300), true);
        fence.at(Lsn(250));
        assert!(fence.reached(), "an idle keepalive already showed the stream past it");
        fence.finish();
        fence.on_keepalive(Lsn(1_000), false);
        fence.at(Lsn(400));
        assert!(!fence.reached(), "a keepalive inside a transaction shows nothing");
        fence.on_commit(Lsn(350));
        assert!(!fence.reached());
        fence.finish();
        fence.at(Lsn(350));
        assert!(fence.reached(), "the last commit ended there");
    }

    #[test]
    fn insert_positions_at_a_page_start_go_back_to_the_last_record_end() {
        const BLOCK: u64 = 8192;
        const SEGMENT: u64 = 16 * 1024 * 1024;
        assert_eq!(record_end(Lsn(3 * BLOCK + 24), BLOCK, SEGMENT), Lsn(3 * BLOCK));
        assert_eq!(record_end(Lsn(2 * SEGMENT + 40), BLOCK, SEGMENT), Lsn(2 * SEGMENT));
        // A record may end 40 bytes into a page that is not a segment's first.
        assert_eq!(record_end(Lsn(3 * BLOCK + 40), BLOCK, SEGMENT), Lsn(3 * BLOCK + 40));
        assert_eq!(record_end(Lsn(3 * BLOCK + 32), BLOCK, SEGMENT), Lsn(3 * BLOCK + 32));
        assert_eq!(record_end(Lsn(5), 0, 0), Lsn(5), "unknown sizes change nothing");
    }

    #[test]
    fn watermarks_are_fresh_and_name_their_capture() {
        let watermark = new_watermark("acmeCo/source-postgres");
        assert_eq!(owner_of(&watermark), Some("acmeCo/source-postgres"));
        assert_ne!(new_watermark("a"), new_watermark("a"));
        assert_eq!(owner_of(&new_watermark("")), Some(""));
        // Watermarks of the Go connector (a UUID) and of older versions (hex) name nobody.
        assert_eq!(owner_of("3f2b8a4e-58c4-4b8e-9a3c-2b7f1d0e6c11"), None);
        assert_eq!(owner_of("0123456789abcdef0123456789abcdef"), None);
        assert_eq!(owner_of("not hex at all:someone"), None);
    }
}
