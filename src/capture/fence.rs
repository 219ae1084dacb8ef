//! The watermark fence: where streaming to a backfill chunk's fence stops.
//!
//! After a chunk is read the session writes a fresh watermark (a random value, naming the
//! capture) into the watermarks table, then streams until the transaction that wrote it
//! commits: every change committed before the chunk's snapshot is then behind it, so the
//! chunk's rows and those changes can share one checkpoint (see the module docs of
//! [`super`]). The fence is a small state machine:
//!
//! ```text
//!   Idle ──written(value)──► Written(value) ──row carrying value──► Seen ──commit──► Reached
//!     ▲                                                                                │
//!     └──────────────────────────────── finish ◄───────────────────────────────────────┘
//! ```
//!
//! Only the value written last counts (an older watermark, or another capture's, in the
//! stream is ignored), and the fence is reached at the commit that follows the row: the
//! watermark's own transaction's, since changes arrive inside their transaction.
//!
//! The value also proves slot ownership: it names the capture that wrote it, and the
//! watermarks table's row of a slot shows who streamed from it last (see [`super::slot`]).

/// Where streaming to the current fence stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Fence {
    /// No watermark is awaited.
    #[default]
    Idle,
    /// This watermark was written; its row has not come through the stream yet.
    Written(String),
    /// The watermark's row came through; its transaction has not committed yet.
    Seen,
    /// The watermark's transaction committed: everything before the fence was streamed.
    Reached,
}

impl Fence {
    /// A watermark was written (whatever the fence was waiting for before).
    pub fn written(&mut self, watermark: String) {
        *self = Fence::Written(watermark);
    }

    /// A row of the watermarks table carrying `value` came through the stream.
    pub fn saw(&mut self, value: &[u8]) {
        if matches!(self, Fence::Written(expected) if expected.as_bytes() == value) {
            *self = Fence::Seen;
        }
    }

    /// A transaction committed.
    pub fn on_commit(&mut self) {
        if *self == Fence::Seen {
            *self = Fence::Reached;
        }
    }

    /// Whether the fence was reached.
    pub fn reached(&self) -> bool {
        *self == Fence::Reached
    }

    /// Streaming to the fence is over: nothing is awaited any more.
    pub fn finish(&mut self) {
        *self = Fence::Idle;
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
        fence.on_commit();
        assert!(!fence.reached(), "an idle fence is never reached");
        fence.written("w1".into());
        fence.on_commit();
        assert!(!fence.reached(), "a commit before the watermark's row is not the fence");
        fence.saw(b"w1");
        assert!(!fence.reached(), "the row alone is not the fence: its transaction must commit");
        fence.on_commit();
        assert!(fence.reached());
        fence.on_commit();
        assert!(fence.reached(), "it stays reached until streaming to it is over");
        fence.finish();
        assert_eq!(fence, Fence::Idle);
        fence.saw(b"w1");
        fence.on_commit();
        assert!(!fence.reached(), "a finished fence is not reached again");
    }

    #[test]
    fn only_the_watermark_written_last_counts() {
        let mut fence = Fence::default();
        fence.written("old".into());
        fence.written("new".into());
        fence.saw(b"old");
        fence.saw(b"other capture's");
        fence.on_commit();
        assert_eq!(fence, Fence::Written("new".into()));
        fence.saw(b"new");
        assert_eq!(fence, Fence::Seen);
        fence.written("newer".into());
        fence.on_commit();
        assert!(!fence.reached(), "a new watermark starts over");
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
