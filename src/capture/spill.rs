//! Buffers for streamed (in-progress) transactions.
//!
//! With pgoutput protocol 2 and `streaming 'on'`, PostgreSQL sends a large transaction in
//! blocks while it is still running, interleaved with other transactions, and only later
//! says whether it committed or aborted. Nothing may be emitted before the commit, so each
//! streamed transaction's raw messages are kept here — in memory while it is small, then
//! in an anonymous temporary file — and replayed through the normal decoding path at
//! Stream Commit. Subtransactions aborted with Stream Abort are skipped at replay.
//!
//! Memory stays bounded whatever the size of a transaction and whatever the number of
//! transactions streamed at once: every transaction's buffer (all its messages while it is
//! in memory, the unwritten tail once it is on file) counts against one shared budget, and
//! `SpillBudget` (`spill_budget`) says which buffer to write out when a rule is broken (a transaction past
//! 1 MiB, a file's tail past 256 KiB, all buffers past 4 MiB: the largest goes; see
//! `Limits::DEFAULT`). This file
//! does the IO those decisions call for. A committed transaction leaves the budget when it
//! is taken for replay; one is replayed at a time, holding at most its in-memory buffer
//! (1 MiB) or its file's 1 MiB read buffer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};

use super::spill_budget::{Limits, SpillBudget};
use crate::lsn::Lsn;

/// One buffered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpilledMessage {
    pub wal_start: Lsn,
    /// The (sub)transaction the message belongs to.
    pub xid: u32,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Transaction {
    /// Records not written to `file` yet: every record while there is no file.
    memory: Vec<u8>,
    file: Option<std::fs::File>,
    aborted_subtransactions: BTreeSet<u32>,
    bytes: u64,
}

/// All streamed transactions in progress, by top-level XID.
pub struct Spill {
    transactions: BTreeMap<u32, Transaction>,
    budget: SpillBudget,
}

impl Default for Spill {
    fn default() -> Self {
        Spill::with_limits(Limits::DEFAULT)
    }
}

/// Append one record: payload length, WAL position, XID, payload.
fn record(out: &mut Vec<u8>, wal_start: Lsn, xid: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&wal_start.0.to_le_bytes());
    out.extend_from_slice(&xid.to_le_bytes());
    out.extend_from_slice(payload);
}

const RECORD_HEADER: usize = 20;

impl Spill {
    pub(super) fn with_limits(limits: Limits) -> Self {
        Spill { transactions: BTreeMap::new(), budget: SpillBudget::new(limits) }
    }

    /// Buffer a message of streamed transaction `top_xid`, belonging to (sub)transaction
    /// `xid`, then write out whatever buffers the shared budget says must go.
    pub fn push(&mut self, top_xid: u32, wal_start: Lsn, xid: u32, payload: &[u8]) -> std::io::Result<()> {
        let transaction = self.transactions.entry(top_xid).or_default();
        record(&mut transaction.memory, wal_start, xid, payload);
        transaction.bytes += (RECORD_HEADER + payload.len()) as u64;
        // The capacity is what the buffer holds in memory, used or not.
        self.budget.holds(top_xid, transaction.memory.capacity());
        while let Some(victim) = self.budget.next_to_write(top_xid) {
            self.write_out(victim)?;
            self.budget.written_out(victim);
        }
        Ok(())
    }

    /// Write a transaction's buffer to its file (created on first use) and release it.
    fn write_out(&mut self, top_xid: u32) -> std::io::Result<()> {
        let Some(transaction) = self.transactions.get_mut(&top_xid) else {
            return Ok(());
        };
        let file = match &mut transaction.file {
            Some(file) => file,
            None => transaction.file.insert(tempfile::tempfile()?),
        };
        file.write_all(&transaction.memory)?;
        transaction.memory = Vec::new();
        Ok(())
    }

    /// Bytes held in memory by every buffer together.
    pub fn buffered_in_memory(&self) -> usize {
        self.budget.total()
    }

    /// Forget a subtransaction's changes (or the whole transaction when `sub_xid == top_xid`).
    pub fn abort(&mut self, top_xid: u32, sub_xid: u32) {
        if top_xid == sub_xid {
            self.transactions.remove(&top_xid);
            self.budget.forget(top_xid);
        } else if let Some(transaction) = self.transactions.get_mut(&top_xid) {
            transaction.aborted_subtransactions.insert(sub_xid);
        }
    }

    /// Bytes buffered for a transaction.
    pub fn buffered_bytes(&self, top_xid: u32) -> u64 {
        self.transactions.get(&top_xid).map_or(0, |t| t.bytes)
    }

    /// Take a committed transaction's messages for replay, in arrival order.
    pub fn take(&mut self, top_xid: u32) -> std::io::Result<Replay> {
        self.budget.forget(top_xid);
        let Some(transaction) = self.transactions.remove(&top_xid) else {
            return Ok(Replay {
                source: ReplaySource::Memory(std::io::Cursor::new(Vec::new())),
                skip: BTreeSet::new(),
            });
        };
        let source = match transaction.file {
            Some(mut file) => {
                file.write_all(&transaction.memory)?;
                drop(transaction.memory);
                file.seek(SeekFrom::Start(0))?;
                ReplaySource::File(BufReader::with_capacity(1 << 20, file))
            }
            None => ReplaySource::Memory(std::io::Cursor::new(transaction.memory)),
        };
        Ok(Replay { source, skip: transaction.aborted_subtransactions })
    }
}

enum ReplaySource {
    Memory(std::io::Cursor<Vec<u8>>),
    File(BufReader<std::fs::File>),
}

/// Iterator over a committed streamed transaction.
pub struct Replay {
    source: ReplaySource,
    skip: BTreeSet<u32>,
}

impl Replay {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let result = match &mut self.source {
            ReplaySource::Memory(cursor) => cursor.read_exact(buf),
            ReplaySource::File(file) => file.read_exact(buf),
        };
        match result {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The next message not belonging to an aborted subtransaction.
    pub fn next_message(&mut self) -> std::io::Result<Option<SpilledMessage>> {
        loop {
            let mut header = [0u8; RECORD_HEADER];
            if !self.read_exact(&mut header)? {
                return Ok(None);
            }
            let mut word = [0u8; 8];
            word.copy_from_slice(&header[0..8]);
            let length = usize::try_from(u64::from_le_bytes(word))
                .map_err(|_| std::io::Error::other("spilled message length overflows"))?;
            word.copy_from_slice(&header[8..16]);
            let wal_start = Lsn(u64::from_le_bytes(word));
            let xid = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
            let mut payload = vec![0u8; length];
            if !self.read_exact(&mut payload)? {
                return Err(std::io::Error::other("spilled transaction file is truncated"));
            }
            if self.skip.contains(&xid) {
                continue;
            }
            return Ok(Some(SpilledMessage { wal_start, xid, payload }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: u64, xid: u32, size: usize) -> SpilledMessage {
        SpilledMessage { wal_start: Lsn(n), xid, payload: vec![u8::try_from(n % 251).unwrap(); size] }
    }

    fn push(spill: &mut Spill, top_xid: u32, message: &SpilledMessage) {
        spill.push(top_xid, message.wal_start, message.xid, &message.payload).unwrap();
    }

    fn replayed(spill: &mut Spill, top_xid: u32) -> Vec<SpilledMessage> {
        let mut replay = spill.take(top_xid).unwrap();
        let mut seen = Vec::new();
        while let Some(m) = replay.next_message().unwrap() {
            seen.push(m);
        }
        seen
    }

    #[test]
    fn committed_transactions_replay_in_order_skipping_aborted_subtransactions() {
        let mut spill = Spill::default();
        push(&mut spill, 10, &message(1, 10, 3));
        push(&mut spill, 20, &message(2, 20, 3));
        push(&mut spill, 10, &message(3, 11, 3));
        push(&mut spill, 10, &message(4, 10, 3));
        spill.abort(10, 11);
        spill.abort(20, 20);
        let seen: Vec<u64> = replayed(&mut spill, 10).iter().map(|m| m.wal_start.0).collect();
        assert_eq!(seen, vec![1, 4]);
        assert!(replayed(&mut spill, 20).is_empty());
        assert_eq!(spill.buffered_in_memory(), 0, "ended transactions hold nothing");
    }

    #[test]
    fn large_transactions_move_to_a_file_and_replay_whole() {
        let mut spill = Spill::default();
        let count = 3 * Limits::DEFAULT.transaction / 10_000;
        for n in 0..count {
            push(&mut spill, 7, &message(n as u64, 7, 10_000));
            assert!(spill.buffered_in_memory() <= Limits::DEFAULT.transaction);
        }
        assert!(spill.buffered_bytes(7) > Limits::DEFAULT.transaction as u64);
        assert!(spill.buffered_in_memory() <= Limits::DEFAULT.write_batch, "on file, only a write batch is held");
        let seen = replayed(&mut spill, 7);
        assert_eq!(seen.len(), count);
        for (n, m) in seen.iter().enumerate() {
            assert_eq!(*m, message(n as u64, 7, 10_000));
        }
    }

    #[test]
    fn concurrent_transactions_share_one_budget_and_each_replays_whole() {
        let limits = Limits { total: 64 << 10, transaction: 32 << 10, write_batch: 8 << 10 };
        let mut spill = Spill::with_limits(limits);
        // 40 transactions of 200 messages of 100 bytes, interleaved: 20 kB each, under the
        // limit of one transaction, 800 kB together.
        for n in 0..200u64 {
            for top_xid in 0..40u32 {
                push(&mut spill, top_xid, &message(n * 40 + u64::from(top_xid), top_xid, 100));
                assert!(spill.buffered_in_memory() <= limits.total, "{}", spill.buffered_in_memory());
            }
        }
        for top_xid in (0..40u32).rev() {
            let seen = replayed(&mut spill, top_xid);
            let expected: Vec<SpilledMessage> =
                (0..200u64).map(|n| message(n * 40 + u64::from(top_xid), top_xid, 100)).collect();
            assert!(seen == expected, "transaction {top_xid} replays whole and in order");
        }
        assert_eq!(spill.buffered_in_memory(), 0);
    }
}
