//! Buffers for streamed (in-progress) transactions.
//!
//! With pgoutput protocol 2 and `streaming 'on'`, PostgreSQL sends a large transaction in
//! blocks while it is still running, interleaved with other transactions, and only later
//! says whether it committed or aborted. Nothing may be emitted before the commit, so each
//! streamed transaction's raw messages are kept here — in memory up to a small budget, then
//! in an anonymous temporary file — and replayed through the normal decoding path at
//! Stream Commit. Memory stays bounded whatever the transaction size. Subtransactions
//! aborted with Stream Abort are skipped at replay.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use crate::lsn::Lsn;

/// Bytes of one transaction kept in memory before it moves to a temporary file.
const MEMORY_BUDGET: usize = 4 << 20;

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
    memory: Vec<u8>,
    file: Option<BufWriter<std::fs::File>>,
    aborted_subtransactions: BTreeSet<u32>,
    bytes: u64,
}

/// All streamed transactions in progress, by top-level XID.
#[derive(Default)]
pub struct Spill {
    transactions: BTreeMap<u32, Transaction>,
}

fn record(out: &mut Vec<u8>, message: &SpilledMessage) {
    out.extend_from_slice(&(message.payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&message.wal_start.0.to_le_bytes());
    out.extend_from_slice(&message.xid.to_le_bytes());
    out.extend_from_slice(&message.payload);
}

impl Spill {
    /// Buffer a message of streamed transaction `top_xid`.
    pub fn push(&mut self, top_xid: u32, message: &SpilledMessage) -> std::io::Result<()> {
        let transaction = self.transactions.entry(top_xid).or_default();
        let mut encoded = Vec::with_capacity(message.payload.len() + 20);
        record(&mut encoded, message);
        transaction.bytes += encoded.len() as u64;
        if let Some(file) = &mut transaction.file {
            return file.write_all(&encoded);
        }
        transaction.memory.extend_from_slice(&encoded);
        if transaction.memory.len() > MEMORY_BUDGET {
            let mut file = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
            file.write_all(&transaction.memory)?;
            transaction.memory = Vec::new();
            transaction.file = Some(file);
        }
        Ok(())
    }

    /// Forget a subtransaction's changes (or the whole transaction when `sub_xid == top_xid`).
    pub fn abort(&mut self, top_xid: u32, sub_xid: u32) {
        if top_xid == sub_xid {
            self.transactions.remove(&top_xid);
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
        let Some(transaction) = self.transactions.remove(&top_xid) else {
            return Ok(Replay {
                source: ReplaySource::Memory(std::io::Cursor::new(Vec::new())),
                skip: BTreeSet::new(),
            });
        };
        let source = match transaction.file {
            Some(file) => {
                let mut file = file.into_inner().map_err(|err| err.into_error())?;
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
            let mut header = [0u8; 20];
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

    #[test]
    fn committed_transactions_replay_in_order_skipping_aborted_subtransactions() {
        let mut spill = Spill::default();
        spill.push(10, &message(1, 10, 3)).unwrap();
        spill.push(20, &message(2, 20, 3)).unwrap();
        spill.push(10, &message(3, 11, 3)).unwrap();
        spill.push(10, &message(4, 10, 3)).unwrap();
        spill.abort(10, 11);
        spill.abort(20, 20);
        let mut replay = spill.take(10).unwrap();
        let mut seen = Vec::new();
        while let Some(m) = replay.next_message().unwrap() {
            seen.push(m.wal_start.0);
        }
        assert_eq!(seen, vec![1, 4]);
        assert!(spill.take(20).unwrap().next_message().unwrap().is_none());
    }

    #[test]
    fn large_transactions_move_to_a_file_and_replay_whole() {
        let mut spill = Spill::default();
        let count = 3 * MEMORY_BUDGET / 10_000;
        for n in 0..count {
            spill.push(7, &message(n as u64, 7, 10_000)).unwrap();
        }
        assert!(spill.buffered_bytes(7) > MEMORY_BUDGET as u64);
        let mut replay = spill.take(7).unwrap();
        let mut n = 0u64;
        while let Some(m) = replay.next_message().unwrap() {
            assert_eq!(m, message(n, 7, 10_000));
            n += 1;
        }
        assert_eq!(n, count as u64);
    }
}
