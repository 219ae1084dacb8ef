//! Pure: whether a backfill query's snapshot sees the transactions the replication stream
//! has already delivered.
//!
//! The fence algorithm reasons in WAL order: a chunk query started after a watermark's
//! commit is assumed to see every transaction that committed before it. PostgreSQL does not
//! promise that. A committing backend writes and flushes its commit record, marks the
//! transaction committed in `pg_xact`, waits for synchronous standbys if any are
//! configured, and only then leaves the set of running transactions, at which point new
//! snapshots see it. The logical walsender does not wait for any of that: it decodes the
//! transaction as soon as its commit record is flushed. So the stream can deliver a
//! transaction before a fence while a chunk query started after the fence does not see it,
//! for microseconds ordinarily and for as long as a synchronous standby takes to confirm.
//! A precise backfill that dropped such a change (its row was not read yet) would then read
//! the row without it, and a normal backfill would overwrite the emitted change with the
//! older row: a lost update either way.
//!
//! So every chunk query runs in a `REPEATABLE READ` transaction whose snapshot
//! (`pg_current_snapshot()`) is read first, and the capture remembers the transactions that
//! changed a backfilling table ([`DeliveredXids`]). A chunk is used only if its snapshot
//! sees all of them; otherwise its rows are dropped, the capture waits (polling a cheap
//! snapshot query) until those transactions finish committing, and runs the chunk query
//! again. A transaction seen by one snapshot is seen by
//! every later one, so each check forgets the transactions it found visible and the set
//! stays small.

use std::collections::BTreeSet;

/// A snapshot as `pg_current_snapshot()` prints it: `xmin:xmax:xip,...`, with 64-bit
/// transaction ids (epoch and xid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction below this one had finished when the snapshot was taken.
    pub xmin: u64,
    /// Transactions from this one on had not started (or not finished) yet.
    pub xmax: u64,
    /// Transactions between the two that were still running, in ascending order.
    pub xip: Vec<u64>,
}

impl Snapshot {
    /// Parse the text form of `pg_snapshot` (or `txid_snapshot`).
    pub fn parse(text: &str) -> Result<Snapshot, String> {
        let bad = || format!("{text:?} is not a snapshot of the form xmin:xmax:xip,...");
        let mut parts = text.trim().split(':');
        let (Some(xmin), Some(xmax), Some(xip), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let xmin: u64 = xmin.parse().map_err(|_| bad())?;
        let xmax: u64 = xmax.parse().map_err(|_| bad())?;
        let mut xip = if xip.is_empty() {
            Vec::new()
        } else {
            xip.split(',').map(|x| x.parse::<u64>().map_err(|_| bad())).collect::<Result<Vec<_>, _>>()?
        };
        if xmin > xmax || xip.iter().any(|x| *x < xmin || *x >= xmax) {
            return Err(bad());
        }
        xip.sort_unstable();
        Ok(Snapshot { xmin, xmax, xip })
    }

    /// The 64-bit id of a 32-bit transaction id (as pgoutput sends them) near this
    /// snapshot: the one within 2^31 of `xmax`.
    pub fn full_xid(&self, xid: u32) -> u64 {
        // Truncations to 32 bits are the point: the distance is taken modulo 2^32, then
        // read as signed (the nearer of the two directions).
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let distance = xid.wrapping_sub(self.xmax as u32) as i32;
        self.xmax.wrapping_add_signed(i64::from(distance))
    }

    /// Whether the snapshot sees the changes of `xid`, a transaction known to have
    /// committed: it does unless the transaction was still running (or not yet started)
    /// when the snapshot was taken.
    pub fn sees_committed(&self, xid: u32) -> bool {
        let full = self.full_xid(xid);
        full < self.xmin || (full < self.xmax && self.xip.binary_search(&full).is_err())
    }
}

/// `pg_current_snapshot()`'s text form, as [`Snapshot::parse`] reads it.
impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, xid) in self.xip.iter().enumerate() {
            write!(f, "{}{xid}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

/// Transactions the replication stream delivered that changed a table being backfilled,
/// not yet confirmed visible to a backfill snapshot.
#[derive(Debug, Default)]
pub struct DeliveredXids {
    xids: BTreeSet<u32>,
    /// The last recorded transaction: its further changes need no lookup.
    last: Option<u32>,
}

impl DeliveredXids {
    /// Remember a committed transaction that changed a backfilling table.
    pub fn record(&mut self, xid: u32) {
        if self.last != Some(xid) {
            self.xids.insert(xid);
            self.last = Some(xid);
        }
    }

    pub fn len(&self) -> usize {
        self.xids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.xids.is_empty()
    }

    /// The first (oldest) transaction `snapshot` does not see, if any, forgetting nothing:
    /// for several snapshots taken at about the same time, one seeing a transaction does not
    /// mean that the others do.
    pub fn first_unseen(&self, snapshot: &Snapshot) -> Option<u32> {
        self.xids.iter().copied().filter(|xid| !snapshot.sees_committed(*xid)).min_by_key(|xid| snapshot.full_xid(*xid))
    }

    /// Forget every transaction `snapshot` sees, and return the first it does not see, if
    /// any (the snapshot is then too old to read rows with).
    pub fn forget_seen(&mut self, snapshot: &Snapshot) -> Option<u32> {
        self.xids.retain(|xid| !snapshot.sees_committed(*xid));
        if self.last.is_some_and(|xid| !self.xids.contains(&xid)) {
            self.last = None;
        }
        self.xids.iter().copied().min_by_key(|xid| snapshot.full_xid(*xid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_postgresql_prints() {
        assert_eq!(Snapshot::parse("745:745:").unwrap(), Snapshot { xmin: 745, xmax: 745, xip: vec![] });
        assert_eq!(Snapshot::parse("10:20:12,15\n").unwrap(), Snapshot { xmin: 10, xmax: 20, xip: vec![12, 15] });
        for text in ["745:745:", "10:20:12,15", "100:110:103"] {
            assert_eq!(Snapshot::parse(text).unwrap().to_string(), text, "printed as PostgreSQL prints it");
        }
        // Epoch 1: 2^32 + 5.
        assert_eq!(Snapshot::parse("4294967301:4294967310:4294967302").unwrap().xip, vec![4_294_967_302]);
    }

    #[test]
    fn rejects_what_is_not_a_snapshot() {
        for bad in ["", "1:2", "1:2:3:4", "a:2:", "5:3:", "1:5:7", "1:5:0", "1:5:2,,3", "-1:5:", "1:5: 2"] {
            let err = Snapshot::parse(bad).unwrap_err();
            assert!(err.contains("not a snapshot"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_committed_transaction_is_seen_unless_it_was_running_or_had_not_finished() {
        let snapshot = Snapshot::parse("100:110:103,107").unwrap();
        assert!(snapshot.sees_committed(99));
        assert!(snapshot.sees_committed(100));
        assert!(snapshot.sees_committed(104));
        assert!(!snapshot.sees_committed(103), "running when the snapshot was taken");
        assert!(!snapshot.sees_committed(107));
        assert!(!snapshot.sees_committed(110), "not finished when the snapshot was taken");
        assert!(!snapshot.sees_committed(200));
    }

    #[test]
    fn thirty_two_bit_ids_are_placed_in_the_snapshot_epoch_across_wraparound() {
        // xmax just past a wraparound (epoch 3, xid 5); xid 4294967290 belongs to epoch 2.
        let epoch3 = 3u64 << 32;
        let snapshot = Snapshot { xmin: epoch3 - 10, xmax: epoch3 + 5, xip: vec![epoch3 - 6] };
        assert_eq!(snapshot.full_xid(4_294_967_290), epoch3 - 6);
        assert_eq!(snapshot.full_xid(7), epoch3 + 7);
        assert!(!snapshot.sees_committed(4_294_967_290));
        assert!(snapshot.sees_committed(4_294_967_291));
        assert!(snapshot.sees_committed(2));
        assert!(!snapshot.sees_committed(5));
        assert!(snapshot.sees_committed(4_294_967_280), "below xmin, in the previous epoch");
    }

    #[test]
    fn checks_forget_what_they_saw_and_name_the_oldest_unseen() {
        let mut delivered = DeliveredXids::default();
        for xid in [101, 101, 103, 105, 108, 120] {
            delivered.record(xid);
        }
        assert_eq!(delivered.len(), 5);
        let old = Snapshot::parse("103:106:103,104").unwrap();
        assert_eq!(delivered.forget_seen(&old), Some(103));
        assert_eq!(delivered.xids.iter().copied().collect::<Vec<_>>(), vec![103, 108, 120]);
        // The last recorded transaction was forgotten? No: 120 is still unseen.
        delivered.record(120);
        assert_eq!(delivered.len(), 3);
        assert_eq!(delivered.first_unseen(&old), Some(103));
        assert_eq!(delivered.first_unseen(&Snapshot::parse("104:110:").unwrap()), Some(120));
        assert_eq!(delivered.len(), 3, "looking forgets nothing");
        let later = Snapshot::parse("121:121:").unwrap();
        assert_eq!(delivered.forget_seen(&later), None);
        assert!(delivered.is_empty());
        // Recording the same transaction again after it was forgotten keeps it.
        delivered.record(120);
        assert_eq!(delivered.len(), 1);
    }
}
