//! Pure: one memory budget shared by the buffers of every streamed transaction in progress.
//!
//! Each streamed transaction (see [`super::spill`]) buffers its raw messages in memory:
//! all of them while it is small, and once it has moved to a temporary file, the messages
//! not yet written out (writes are batched). A budget per transaction would let memory grow
//! with the number of transactions streamed at once (40 concurrent large transactions held
//! 40 budgets). So the budget is shared: [`SpillBudget`] records how many bytes each
//! transaction's buffer holds and says, after each message, which buffer to write out to
//! its file (creating the file if needed), until every rule holds again:
//!
//! - a transaction still wholly in memory moves to a file once its buffer passes
//!   [`Limits::transaction`] (a large transaction never holds more than that);
//! - a transaction already on file writes its buffer out once it passes
//!   [`Limits::write_batch`] (so writes stay large);
//! - the buffers together stay within [`Limits::total`]: past it, the largest buffer is
//!   written out (the oldest among equals), which frees the most with one write.
//!
//! Memory for buffered messages is then at most `total` plus the message being added,
//! whatever the number of transactions. Counting is the spill's job (it reports the
//! buffer's capacity, which is what it holds, not the bytes used); this module holds no
//! data and does no IO.

use std::collections::BTreeMap;

/// The rules' thresholds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// All buffers together.
    pub(super) total: usize,
    /// One transaction that is still wholly in memory.
    pub(super) transaction: usize,
    /// The unwritten tail of a transaction already on file.
    pub(super) write_batch: usize,
}

impl Limits {
    /// 4 MiB in all, 1 MiB per transaction, writes of 256 KiB. Every transaction the server
    /// streams is already larger than `logical_decoding_work_mem` (64 MB by default), so it
    /// lands on file whatever the limit; holding more of it in memory saves no write, and
    /// 256 KiB writes are still few. Measured with 40 concurrent streamed transactions
    /// (docs/performance.md): peak RSS 58.7 MiB at 16/4/1 MiB, 36.7 at 8/2/0.5, 26.0 at
    /// these limits, with the same connector CPU.
    pub(super) const DEFAULT: Limits = Limits { total: 4 << 20, transaction: 1 << 20, write_batch: 256 << 10 };
}

#[derive(Debug, Clone, Copy)]
struct Buffer {
    bytes: usize,
    on_file: bool,
    /// Order of first appearance: the oldest buffer is written out first among equals.
    since: u64,
}

/// What each streamed transaction's buffer holds, and which to write out.
#[derive(Debug)]
pub(super) struct SpillBudget {
    limits: Limits,
    buffers: BTreeMap<u32, Buffer>,
    total: usize,
    next_since: u64,
}

impl SpillBudget {
    pub(super) fn new(limits: Limits) -> Self {
        SpillBudget { limits, buffers: BTreeMap::new(), total: 0, next_since: 0 }
    }

    /// Transaction `xid`'s buffer now holds `bytes`.
    pub(super) fn holds(&mut self, xid: u32, bytes: usize) {
        let since = self.next_since;
        let buffer = self.buffers.entry(xid).or_insert(Buffer { bytes: 0, on_file: false, since });
        if buffer.since == since {
            self.next_since += 1;
        }
        self.total = self.total - buffer.bytes + bytes;
        buffer.bytes = bytes;
    }

    /// Transaction `xid`'s buffer was written out to its file and released.
    pub(super) fn written_out(&mut self, xid: u32) {
        if let Some(buffer) = self.buffers.get_mut(&xid) {
            self.total -= buffer.bytes;
            buffer.bytes = 0;
            buffer.on_file = true;
        }
    }

    /// Transaction `xid` ended (committed and taken for replay, or aborted).
    pub(super) fn forget(&mut self, xid: u32) {
        if let Some(buffer) = self.buffers.remove(&xid) {
            self.total -= buffer.bytes;
        }
    }

    /// The buffer to write out next, after a message was added to `added`'s buffer; `None`
    /// once every rule holds. Writing out the answer (and calling [`Self::written_out`])
    /// until `None` ends, since each answer releases a non-empty buffer.
    pub(super) fn next_to_write(&self, added: u32) -> Option<u32> {
        if let Some(buffer) = self.buffers.get(&added) {
            let own_limit = if buffer.on_file { self.limits.write_batch } else { self.limits.transaction };
            if buffer.bytes > own_limit {
                return Some(added);
            }
        }
        if self.total <= self.limits.total {
            return None;
        }
        self.buffers
            .iter()
            .filter(|(_, buffer)| buffer.bytes > 0)
            .max_by(|(_, a), (_, b)| a.bytes.cmp(&b.bytes).then(b.since.cmp(&a.since)))
            .map(|(xid, _)| *xid)
    }

    /// Bytes held by all buffers.
    pub(super) fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits { total: 100, transaction: 40, write_batch: 10 };

    /// Add `bytes` to `xid`'s buffer, then write out what the budget says; returns the
    /// transactions written out, in order.
    fn push(budget: &mut SpillBudget, held: &mut BTreeMap<u32, usize>, xid: u32, bytes: usize) -> Vec<u32> {
        let now = held.entry(xid).or_default();
        *now += bytes;
        budget.holds(xid, *now);
        let mut written = Vec::new();
        while let Some(victim) = budget.next_to_write(xid) {
            held.insert(victim, 0);
            budget.written_out(victim);
            written.push(victim);
            assert!(written.len() <= held.len(), "writing out must end: {written:?}");
        }
        written
    }

    #[test]
    fn many_transactions_share_one_total() {
        let mut budget = SpillBudget::new(SMALL);
        let mut held = BTreeMap::new();
        // 40 transactions of 30 bytes each: none passes its own limit (40), but together
        // they would hold 1200 bytes.
        for round in 0..3 {
            for xid in 0..40 {
                push(&mut budget, &mut held, xid, 10);
                assert!(budget.total() <= SMALL.total, "round {round}, xid {xid}: {}", budget.total());
                assert_eq!(budget.total(), held.values().sum::<usize>());
            }
        }
        assert!(held.values().filter(|b| **b == 0).count() >= 30, "most were written out: {held:?}");
    }

    #[test]
    fn past_the_total_the_largest_buffer_is_written_out() {
        let mut budget = SpillBudget::new(SMALL);
        let mut held = BTreeMap::new();
        assert!(push(&mut budget, &mut held, 7, 30).is_empty());
        assert!(push(&mut budget, &mut held, 3, 30).is_empty());
        assert!(push(&mut budget, &mut held, 5, 35).is_empty());
        assert_eq!(push(&mut budget, &mut held, 9, 10), vec![5], "the largest, not the one added");
        assert_eq!(budget.total(), 70);
        assert!(push(&mut budget, &mut held, 9, 30).is_empty(), "at the total, within it");
        assert_eq!(push(&mut budget, &mut held, 1, 5), vec![9], "9 holds 40 now");
    }

    #[test]
    fn among_equal_buffers_the_oldest_is_written_out() {
        let mut budget = SpillBudget::new(SMALL);
        let mut held = BTreeMap::new();
        for xid in [7, 3, 1] {
            assert!(push(&mut budget, &mut held, xid, 30).is_empty());
        }
        assert_eq!(push(&mut budget, &mut held, 2, 11), vec![7], "7 came first");
        assert_eq!(push(&mut budget, &mut held, 4, 30), vec![3], "then 3, though 4 and 1 hold as much");
        assert_eq!(push(&mut budget, &mut held, 2, 30), vec![2], "2 passed its own limit of 40");
    }

    #[test]
    fn one_transaction_moves_to_a_file_past_its_own_limit_then_writes_in_batches() {
        let mut budget = SpillBudget::new(SMALL);
        let mut held = BTreeMap::new();
        assert!(push(&mut budget, &mut held, 1, 40).is_empty(), "at the limit, still in memory");
        assert_eq!(push(&mut budget, &mut held, 1, 1), vec![1]);
        // On file, the buffer is only a write batch.
        assert!(push(&mut budget, &mut held, 1, 10).is_empty());
        assert_eq!(push(&mut budget, &mut held, 1, 1), vec![1]);
        // Another transaction still has the larger in-memory limit.
        assert!(push(&mut budget, &mut held, 2, 25).is_empty());
    }

    #[test]
    fn ended_transactions_give_their_bytes_back() {
        let mut budget = SpillBudget::new(SMALL);
        let mut held = BTreeMap::new();
        push(&mut budget, &mut held, 1, 30);
        push(&mut budget, &mut held, 2, 30);
        budget.forget(1);
        assert_eq!(budget.total(), 30);
        budget.forget(1);
        budget.forget(99);
        assert_eq!(budget.total(), 30);
        push(&mut budget, &mut held, 3, 40);
        assert_eq!(budget.total(), 70, "within the total: nothing written out");
        budget.forget(2);
        budget.forget(3);
        assert_eq!(budget.total(), 0);
    }
}
