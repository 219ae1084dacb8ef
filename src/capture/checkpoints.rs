//! The checkpoint policy and the acknowledgement queue: when the session writes a
//! checkpoint, what it records, and how far the replication slot may be confirmed.
//!
//! Pure bookkeeping, driven by the session: it reports commits, documents and the
//! positions the server shows; it asks whether a checkpoint is due, takes one, and passes
//! on the runtime's acknowledgements. The invariants:
//!
//! - The cursor only moves forward: to the end of each committed transaction, or, between
//!   transactions and while checkpoints are not held, to an idle position the server
//!   reports in a keepalive (a document-less checkpoint then lets an idle capture release
//!   WAL).
//! - A checkpoint falls between transactions only (the caller says whether one is open),
//!   never while checkpoints are held (streaming to a backfill fence: the chunk and every
//!   change up to its fence share one checkpoint), and is coalesced: written when the
//!   stream has nothing ready, or at once after [`MAX_TRANSACTIONS_PER_CHECKPOINT`]
//!   transactions or [`MAX_DOCUMENTS_PER_CHECKPOINT`] documents, or once the oldest commit
//!   it covers has waited [`MAX_CHECKPOINT_DELAY`]: documents reach stdout with their
//!   checkpoint, so under a steady stream (frames always ready, or a server a little ahead)
//!   coalescing without a time bound held documents back for up to a thousand transactions.
//!   A live stream's checkpoints are [`MIN_CHECKPOINT_INTERVAL`] apart at least: a commit
//!   that comes sooner waits for the rest of the interval (and for the commits after it),
//!   so a commit alone is written out at once and a fast stream is coalesced.
//! - Every checkpoint's cursor is queued until the runtime acknowledges it; one
//!   acknowledgement may cover several checkpoints, and acknowledging more than were written
//!   is an error (the runtime and the connector disagree about what is durable).
//! - The slot is confirmed only up to [`Checkpoints::confirmable`]: the highest acknowledged
//!   cursor, and never beyond what the server has shown it has written (a cursor from the
//!   state, or a commit's end, may lie past it), so the server never discards WAL a restart
//!   from the last committed checkpoint would need.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::lsn::Lsn;

/// Coalescing bounds: a checkpoint is written when the stream has nothing ready, or after
/// this many transactions or documents.
pub(super) const MAX_TRANSACTIONS_PER_CHECKPOINT: u64 = 1_000;
pub(super) const MAX_DOCUMENTS_PER_CHECKPOINT: u64 = 20_000;
/// How far the server's WAL end may be ahead of the message being read before the stream
/// counts as draining a backlog, and how long to wait for the next frame then.
const BACKLOG_BYTES: u64 = 64 * 1024;
const BACKLOG_WAIT: Duration = Duration::from_millis(5);
/// The longest a commit's documents wait for their checkpoint (and so for stdout) while
/// later frames keep arriving. At 5,000 transactions/s without it, the p99 from commit to
/// stdout was 173 ms, with it 4.7 ms (docs/performance.md, finding 12); a drained backlog
/// pays one checkpoint per this interval, a few hundred a second, each a short line and one
/// write.
pub(super) const MAX_CHECKPOINT_DELAY: Duration = Duration::from_millis(2);
/// The shortest interval between two checkpoints of a stream that is caught up. Looking
/// at the stream once and writing the checkpoint when nothing is ready gives a commit
/// alone the lowest latency, but a fast stream one checkpoint per commit (5,000 a second at
/// 5,000 transactions/s, each a write to stdout and an acknowledgement to read back); a
/// commit that comes sooner than this after the last checkpoint waits for the rest of it.
/// It stays below [`MAX_CHECKPOINT_DELAY`], which bounds the wait in any case.
pub(super) const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(1);

/// When the next checkpoint should be written (see [`Checkpoints::timing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timing {
    /// Nothing to checkpoint, a transaction is open, or checkpoints are held.
    NotDue,
    /// A coalescing bound was hit: write it without looking at the stream.
    Now,
    /// Write it unless a frame arrives within this time (zero: unless one is ready now);
    /// such a frame is handled first, and the question asked again.
    UnlessFrameWithin(Duration),
}

/// What a checkpoint records: taken by [`Checkpoints::take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    pub cursor: Lsn,
    /// Indices of the bindings whose state changed since the last checkpoint, ascending.
    pub bindings: Vec<usize>,
    /// Documents emitted since the last checkpoint (that this one makes durable).
    pub documents: u64,
}

/// The runtime acknowledged more checkpoints than were written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the runtime acknowledged {acknowledged} checkpoints, more than were written")]
pub(super) struct ExcessAcknowledgement {
    pub acknowledged: u32,
    pub outstanding: usize,
}

/// Checkpoint and acknowledgement bookkeeping of one capture session.
#[derive(Debug)]
pub(super) struct Checkpoints {
    /// End LSN of the last transaction whose changes were emitted (or an idle position).
    cursor: Lsn,
    /// Cursor of every checkpoint written and not yet acknowledged, oldest first.
    unacknowledged: VecDeque<Lsn>,
    /// Highest acknowledged cursor.
    acknowledged: Lsn,
    /// The furthest position the server has shown it has (its WAL end at the start, then
    /// every XLogData's and keepalive's WAL end).
    server_flushed: Lsn,
    /// The server's WAL end as of the last XLogData, and where that message started.
    server_wal_end: Lsn,
    last_message_start: Lsn,
    documents: u64,
    transactions: u64,
    /// Whether a transaction committed since the last checkpoint (or the cursor moved).
    due: bool,
    /// When the first commit since the last checkpoint was seen.
    due_since: Option<Instant>,
    /// When the last checkpoint was taken.
    last_taken: Option<Instant>,
    /// Per-commit checkpoints are held back while streaming to a backfill fence.
    held: bool,
    changed_bindings: BTreeSet<usize>,
}

impl Checkpoints {
    /// Bookkeeping of a session streaming from `start`, whose server has written up to
    /// `server_flushed`.
    pub fn new(start: Lsn, server_flushed: Lsn) -> Checkpoints {
        Checkpoints {
            cursor: start,
            unacknowledged: VecDeque::new(),
            acknowledged: start,
            server_flushed,
            server_wal_end: start,
            last_message_start: start,
            documents: 0,
            transactions: 0,
            due: false,
            due_since: None,
            last_taken: None,
            held: false,
            changed_bindings: BTreeSet::new(),
        }
    }

    /// The cursor the next checkpoint records.
    pub fn cursor(&self) -> Lsn {
        self.cursor
    }

    /// The position the slot may be confirmed to: acknowledged, and shown by the server.
    pub fn confirmable(&self) -> Lsn {
        self.acknowledged.min(self.server_flushed)
    }

    /// An XLogData message that starts at `wal_start`, sent when the server's WAL ended at
    /// `wal_end`.
    pub fn on_data(&mut self, wal_start: Lsn, wal_end: Lsn) {
        self.server_wal_end = self.server_wal_end.max(wal_end);
        self.server_flushed = self.server_flushed.max(wal_end);
        self.last_message_start = wal_start;
    }

    /// A keepalive showing the server's WAL end. Between transactions nothing of ours is in
    /// flight below it, so it can become the cursor (and, once acknowledged, the slot's
    /// confirmed position), unless checkpoints are held.
    pub fn on_keepalive(&mut self, wal_end: Lsn, between_transactions: bool) {
        self.server_flushed = self.server_flushed.max(wal_end);
        if between_transactions && wal_end > self.cursor && !self.held {
            self.cursor = wal_end;
            self.due = true;
        }
    }

    /// A keepalive between transactions passed a WAL-position fence (see [`super::fence`]):
    /// nothing of ours is in flight below `wal_end`, so it becomes the cursor of the fence's
    /// checkpoint although checkpoints are held. Without this, the cursor of a read-only
    /// capture would not move while it backfills a database where nothing commits, and the
    /// slot would keep all the WAL the other databases write meanwhile.
    pub fn on_fence_passed_idle(&mut self, wal_end: Lsn) {
        self.server_flushed = self.server_flushed.max(wal_end);
        if wal_end > self.cursor {
            self.cursor = wal_end;
            self.due = true;
        }
    }

    /// A source transaction committed, ending at `end_lsn`, at `now`: its documents were
    /// emitted.
    pub fn on_commit(&mut self, end_lsn: Lsn, now: Instant) {
        self.cursor = self.cursor.max(end_lsn);
        self.due = true;
        self.due_since.get_or_insert(now);
        self.transactions += 1;
    }

    /// A document was emitted (it is made durable by the next checkpoint).
    pub fn on_document(&mut self) {
        self.documents += 1;
    }

    /// The state of binding `index` changed: the next checkpoint records it.
    pub fn binding_changed(&mut self, index: usize) {
        self.changed_bindings.insert(index);
    }

    /// A `sourcedSchema` response was written: it takes effect only once a checkpoint
    /// follows, so one is due (at the next point between transactions).
    pub fn on_sourced_schema(&mut self) {
        self.due = true;
    }

    /// Hold back (or release) per-commit checkpoints.
    pub fn hold(&mut self, held: bool) {
        self.held = held;
    }

    /// When to write a checkpoint of what streamed since the last one, at `now` (read only
    /// when one is due between transactions).
    pub fn timing(&self, between_transactions: bool, now: impl FnOnce() -> Instant) -> Timing {
        if !self.due || self.held || !between_transactions {
            return Timing::NotDue;
        }
        if self.transactions >= MAX_TRANSACTIONS_PER_CHECKPOINT || self.documents >= MAX_DOCUMENTS_PER_CHECKPOINT {
            return Timing::Now;
        }
        let now = now();
        let waited = self.due_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let Some(left) = MAX_CHECKPOINT_DELAY.checked_sub(waited).filter(|left| !left.is_zero()) else {
            return Timing::Now;
        };
        // While draining a backlog (the server's WAL end is well ahead of what we are
        // reading) the next frame is in flight: wait for it briefly rather than paying a
        // checkpoint per small transaction.
        let lagging = self.server_wal_end.0.saturating_sub(self.last_message_start.0) > BACKLOG_BYTES;
        if lagging {
            return Timing::UnlessFrameWithin(BACKLOG_WAIT.min(left));
        }
        // Caught up: at once unless a frame is ready, or, right after the last checkpoint,
        // once the rest of the minimum interval has passed without one.
        let since_last = self.last_taken.map_or(MIN_CHECKPOINT_INTERVAL, |at| now.saturating_duration_since(at));
        Timing::UnlessFrameWithin(MIN_CHECKPOINT_INTERVAL.saturating_sub(since_last).min(left))
    }

    /// Whether there is anything to checkpoint: a commit or a moved cursor, documents, or
    /// (with `with_bindings`) changed binding states.
    pub fn pending(&self, with_bindings: bool) -> bool {
        self.due || (with_bindings && !self.changed_bindings.is_empty()) || self.documents > 0
    }

    /// Take a checkpoint at `now`: what it records, queued until acknowledged, with the
    /// counters started afresh.
    pub fn take(&mut self, now: Instant) -> Checkpoint {
        let checkpoint = Checkpoint {
            cursor: self.cursor,
            bindings: std::mem::take(&mut self.changed_bindings).into_iter().collect(),
            documents: self.documents,
        };
        self.unacknowledged.push_back(self.cursor);
        self.due = false;
        self.due_since = None;
        self.last_taken = Some(now);
        self.documents = 0;
        self.transactions = 0;
        checkpoint
    }

    /// The runtime acknowledged the `count` oldest unacknowledged checkpoints.
    pub fn acknowledge(&mut self, count: u32) -> Result<(), ExcessAcknowledgement> {
        let outstanding = self.unacknowledged.len();
        let covered = usize::try_from(count).unwrap_or(usize::MAX);
        if covered > outstanding {
            return Err(ExcessAcknowledgement { acknowledged: count, outstanding });
        }
        for lsn in self.unacknowledged.drain(..covered) {
            self.acknowledged = self.acknowledged.max(lsn);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Lsn = Lsn(100);

    /// One instant for every event of a test (no time passes unless a test says so).
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    /// A session whose server has written far ahead of the start.
    fn session() -> Checkpoints {
        Checkpoints::new(START, Lsn(10_000))
    }

    #[test]
    fn the_slot_is_confirmed_only_up_to_acknowledged_cursors() {
        let mut c = session();
        for end in [200, 300, 400] {
            c.on_commit(Lsn(end), t0());
            assert_eq!(c.take(t0()).cursor, Lsn(end));
        }
        assert_eq!(c.confirmable(), START, "nothing acknowledged yet");
        c.acknowledge(1).unwrap();
        assert_eq!(c.confirmable(), Lsn(200));
        // One acknowledgement covering the two others.
        c.acknowledge(2).unwrap();
        assert_eq!(c.confirmable(), Lsn(400));
    }

    #[test]
    fn acknowledgements_arriving_after_more_checkpoints_apply_oldest_first() {
        let mut c = session();
        c.on_commit(Lsn(200), t0());
        c.take(t0());
        c.acknowledge(1).unwrap();
        c.on_commit(Lsn(300), t0());
        c.take(t0());
        c.on_commit(Lsn(350), t0());
        c.take(t0());
        c.acknowledge(1).unwrap();
        assert_eq!(c.confirmable(), Lsn(300), "the later checkpoint is not acknowledged yet");
    }

    #[test]
    fn more_acknowledgements_than_checkpoints_is_an_error_that_changes_nothing() {
        let mut c = session();
        assert_eq!(c.acknowledge(0), Ok(()), "an explicit zero acknowledges nothing");
        assert_eq!(c.acknowledge(1), Err(ExcessAcknowledgement { acknowledged: 1, outstanding: 0 }));
        c.on_commit(Lsn(200), t0());
        c.take(t0());
        assert!(c.acknowledge(2).is_err());
        assert_eq!(c.confirmable(), START);
        c.acknowledge(1).unwrap();
        assert_eq!(c.confirmable(), Lsn(200));
        assert!(c.acknowledge(1).is_err());
    }

    #[test]
    fn the_slot_is_never_confirmed_past_what_the_server_has_shown() {
        let mut c = Checkpoints::new(START, Lsn(150));
        c.on_commit(Lsn(500), t0());
        c.take(t0());
        c.acknowledge(1).unwrap();
        assert_eq!(c.confirmable(), Lsn(150));
        c.on_data(Lsn(450), Lsn(480));
        assert_eq!(c.confirmable(), Lsn(480));
        c.on_keepalive(Lsn(600), false);
        assert_eq!(c.confirmable(), Lsn(500), "then the acknowledged cursor bounds it");
    }

    #[test]
    fn an_idle_keepalive_makes_a_document_less_checkpoint() {
        let mut c = session();
        assert_eq!(c.timing(true, t0), Timing::NotDue);
        assert!(!c.pending(true));
        c.on_keepalive(Lsn(900), true);
        assert_eq!(c.timing(true, t0), Timing::UnlessFrameWithin(Duration::ZERO));
        let checkpoint = c.take(t0());
        assert_eq!(checkpoint, Checkpoint { cursor: Lsn(900), bindings: vec![], documents: 0 });
        c.acknowledge(1).unwrap();
        assert_eq!(c.confirmable(), Lsn(900));
        assert!(!c.pending(true));
    }

    #[test]
    fn keepalives_never_move_the_cursor_back_or_inside_a_transaction() {
        let mut c = session();
        c.on_commit(Lsn(500), t0());
        c.take(t0());
        c.on_keepalive(Lsn(400), true);
        assert_eq!(c.cursor(), Lsn(500));
        c.on_keepalive(Lsn(700), false);
        assert_eq!(c.cursor(), Lsn(500), "a transaction is open: its documents precede the position");
        assert_eq!(c.timing(true, t0), Timing::NotDue);
        c.on_commit(Lsn(450), t0());
        assert_eq!(c.cursor(), Lsn(500), "commits never move the cursor back");
    }

    #[test]
    fn held_checkpoints_wait_for_the_fence() {
        let mut c = session();
        c.hold(true);
        c.on_commit(Lsn(200), t0());
        c.on_document();
        c.on_keepalive(Lsn(900), true);
        assert_eq!(c.cursor(), Lsn(200), "an idle position does not move a held cursor");
        assert_eq!(c.timing(true, t0), Timing::NotDue);
        for _ in 0..MAX_TRANSACTIONS_PER_CHECKPOINT {
            c.on_commit(Lsn(300), t0());
        }
        assert_eq!(c.timing(true, t0), Timing::NotDue, "not even past the coalescing bounds");
        c.hold(false);
        assert_eq!(c.timing(true, t0), Timing::Now);
        let checkpoint = c.take(t0());
        assert_eq!((checkpoint.cursor, checkpoint.documents), (Lsn(300), 1));
    }

    #[test]
    fn an_idle_keepalive_passing_a_fence_moves_a_held_cursor() {
        let mut c = session();
        c.hold(true);
        c.on_commit(Lsn(200), t0());
        c.on_fence_passed_idle(Lsn(150));
        assert_eq!(c.cursor(), Lsn(200), "never back");
        c.on_fence_passed_idle(Lsn(900));
        assert_eq!(c.cursor(), Lsn(900));
        assert_eq!(c.timing(true, t0), Timing::NotDue, "still held until the fence's checkpoint");
        c.hold(false);
        assert_eq!(c.take(t0()).cursor, Lsn(900));
        c.acknowledge(1).unwrap();
        assert_eq!(c.confirmable(), Lsn(900), "the server showed the position: the slot may move there");
    }

    #[test]
    fn checkpoints_fall_between_transactions_and_coalesce_within_bounds() {
        let mut c = session();
        c.on_commit(Lsn(200), t0());
        assert_eq!(c.timing(false, t0), Timing::NotDue, "a transaction is open");
        c.on_data(Lsn(300), Lsn(300 + BACKLOG_BYTES + 1));
        assert_eq!(
            c.timing(true, t0),
            Timing::UnlessFrameWithin(BACKLOG_WAIT.min(MAX_CHECKPOINT_DELAY)),
            "draining a backlog"
        );
        for _ in 0..MAX_DOCUMENTS_PER_CHECKPOINT {
            c.on_document();
        }
        assert_eq!(c.timing(true, t0), Timing::Now);
        c.take(t0());
        assert_eq!(c.timing(true, t0), Timing::NotDue);
        for end in 0..MAX_TRANSACTIONS_PER_CHECKPOINT - 1 {
            c.on_commit(Lsn(400 + end), t0());
        }
        assert_ne!(c.timing(true, t0), Timing::Now);
        c.on_commit(Lsn(5_000), t0());
        assert_eq!(c.timing(true, t0), Timing::Now);
    }

    #[test]
    fn changed_bindings_are_recorded_once_and_only_when_asked_for() {
        let mut c = session();
        c.binding_changed(3);
        c.binding_changed(1);
        c.binding_changed(3);
        assert!(!c.pending(false), "binding changes alone wait for a checkpoint that records them");
        assert!(c.pending(true));
        assert_eq!(c.take(t0()).bindings, vec![1, 3]);
        assert!(!c.pending(true));
        assert_eq!(c.take(t0()).bindings, Vec::<usize>::new());
    }

    #[test]
    fn documents_alone_make_a_checkpoint_pending() {
        let mut c = session();
        c.on_document();
        assert!(c.pending(false));
        assert_eq!(c.timing(true, t0), Timing::NotDue, "only commits and cursor moves make it due");
        assert_eq!(c.take(t0()), Checkpoint { cursor: START, bindings: vec![], documents: 1 });
    }

    #[test]
    fn a_commit_waits_at_most_the_delay_bound_for_its_checkpoint() {
        let mut c = session();
        c.on_data(Lsn(300), Lsn(300 + BACKLOG_BYTES + 1));
        c.on_commit(Lsn(200), t0());
        let later = |ms: u64| move || t0() + Duration::from_micros(ms * 1000);
        assert_eq!(c.timing(true, later(0)), Timing::UnlessFrameWithin(MAX_CHECKPOINT_DELAY), "draining a backlog");
        // Later commits do not restart the clock: the oldest one's wait counts.
        c.on_commit(Lsn(210), t0() + Duration::from_millis(1));
        assert_eq!(
            c.timing(true, later(1)),
            Timing::UnlessFrameWithin(MAX_CHECKPOINT_DELAY - Duration::from_millis(1))
        );
        assert_eq!(c.timing(true, later(2)), Timing::Now);
        c.take(t0());
        c.on_commit(Lsn(220), t0() + Duration::from_millis(5));
        assert_eq!(c.timing(true, later(5)), Timing::UnlessFrameWithin(MAX_CHECKPOINT_DELAY), "a new wait");
        // Caught up, the stream is looked at once, and the bound holds too.
        c.on_data(Lsn(300 + BACKLOG_BYTES), Lsn(300 + BACKLOG_BYTES + 1));
        assert_eq!(c.timing(true, later(5)), Timing::UnlessFrameWithin(Duration::ZERO));
        assert_eq!(c.timing(true, later(7)), Timing::Now);
        assert_eq!(c.timing(false, later(60)), Timing::NotDue, "never inside a transaction");
    }

    #[test]
    fn a_live_stream_checkpoints_at_once_but_at_most_once_per_interval() {
        let mut c = session();
        // Caught up: the server's WAL end is where the last message started.
        c.on_data(Lsn(300), Lsn(300));
        let at = |us: u64| t0() + Duration::from_micros(us);
        c.on_commit(Lsn(310), at(0));
        assert_eq!(c.timing(true, || at(0)), Timing::UnlessFrameWithin(Duration::ZERO), "the first commit");
        c.take(at(0));
        // A commit right after the last checkpoint waits for the rest of the interval...
        c.on_commit(Lsn(320), at(300));
        assert_eq!(
            c.timing(true, || at(300)),
            Timing::UnlessFrameWithin(MIN_CHECKPOINT_INTERVAL - Duration::from_micros(300))
        );
        // ...and no longer: once it has passed, at once unless a frame is ready.
        assert_eq!(c.timing(true, || at(1_000)), Timing::UnlessFrameWithin(Duration::ZERO));
        c.take(at(1_200));
        // A commit long after the last checkpoint goes out at once.
        c.on_commit(Lsn(330), at(50_000));
        assert_eq!(c.timing(true, || at(50_000)), Timing::UnlessFrameWithin(Duration::ZERO));
        // The delay bound still holds over the interval: a clock that went backwards
        // (the last checkpoint "in the future") waits no longer than the bound.
        c.take(at(60_000));
        c.on_commit(Lsn(340), at(52_000));
        assert_eq!(c.timing(true, || at(53_000)), Timing::UnlessFrameWithin(MIN_CHECKPOINT_INTERVAL));
        assert_eq!(c.timing(true, || at(54_000)), Timing::Now);
    }
}
