//! Pure: whether a table whose backfill readers were chosen by default reads faster with
//! them or with one connection, measured as it goes.
//!
//! More readers pay where the server has cores to spare and its work per row bounds one
//! connection; where the server and the capture share few cores they only add a busy
//! process (docs/performance.md, finding 21: two readers 10–15 % slower than one on two
//! shared cores). Nothing the capture can ask tells which case it is in, so it measures:
//! the table's throughput with one reader (a chunk) and with its default readers (a
//! round), each as rows per second from the table's previous chunk's end to this one's,
//! which covers everything a chunk costs: its fence, its split query, and the chunks of other
//! tables read in the same rounds (the same either way), so that tables backfilled together
//! are measured as they are read. It then reads with whichever
//! was faster, more readers only when they were at least [`MORE_READERS_GAIN`] faster
//! (each is one more connection on the user's server), and measures both again after
//! [`MEASURE_AGAIN_AFTER`] chunks, since the server's load changes.
//!
//! The choice never changes what is read, only how fast: chunks and rounds are both
//! exactly-once (see `parallel`). A number of readers set in the configuration is used as
//! it is, unmeasured.

use std::time::Duration;

/// How much faster (rows per second) the default readers must be than one to be used.
pub const MORE_READERS_GAIN: f64 = 1.05;

/// Chunks read after a choice before both are measured again.
pub const MEASURE_AGAIN_AFTER: u32 = 20;

/// One table's measurements.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReaderTrial {
    /// Rows per second of the last measured chunk read by one connection.
    one: Option<f64>,
    /// Rows per second of the last measured round read by several.
    several: Option<f64>,
    /// Chunks measured since both were known.
    since_choice: u32,
}

impl ReaderTrial {
    /// How many connections read the table's next chunk, out of `default` (chosen from the
    /// table's size): one until one reader was measured, then `default` until it was, then
    /// the faster.
    pub fn readers(&self, default: usize) -> usize {
        if default < 2 {
            return default.max(1);
        }
        match (self.one, self.several) {
            (None, _) => 1,
            (Some(_), None) => default,
            (Some(one), Some(several)) if several >= one * MORE_READERS_GAIN => default,
            (Some(_), Some(_)) => 1,
        }
    }

    /// A chunk of `rows` read by `readers` connections ended `since_previous` after the
    /// table's previous one. Chunks that are not a whole chunk's worth (the table's last, or
    /// one cut by the statement timeout) are not given here.
    pub fn record(&mut self, readers: usize, rows: u64, since_previous: Duration) {
        let seconds = since_previous.as_secs_f64();
        if rows == 0 || seconds <= 0.0 {
            return;
        }
        #[allow(clippy::cast_precision_loss)] // rows per second, a measurement
        let rate = rows as f64 / seconds;
        if readers > 1 {
            self.several = Some(rate);
        } else {
            self.one = Some(rate);
        }
        if self.one.is_some() && self.several.is_some() {
            self.since_choice += 1;
            if self.since_choice > MEASURE_AGAIN_AFTER {
                *self = ReaderTrial::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn one_reader_is_measured_first_then_the_default() {
        let mut trial = ReaderTrial::default();
        assert_eq!(trial.readers(2), 1);
        trial.record(1, 50_000, MS(50));
        assert_eq!(trial.readers(2), 2);
        assert_eq!(trial.readers(4), 4);
    }

    #[test]
    fn a_table_with_one_default_reader_is_never_read_by_more() {
        let mut trial = ReaderTrial::default();
        assert_eq!(trial.readers(1), 1);
        trial.record(1, 50_000, MS(100));
        trial.record(2, 100_000, MS(10));
        assert_eq!(trial.readers(1), 1);
        assert_eq!(trial.readers(0), 1);
    }

    #[test]
    fn the_faster_is_kept_and_more_readers_must_gain_enough() {
        // Two readers 15 % slower, as on two shared cores: one reader.
        let mut trial = ReaderTrial::default();
        trial.record(1, 50_000, MS(44));
        trial.record(2, 100_000, MS(100));
        assert_eq!(trial.readers(2), 1);
        // Two readers twice as fast: two.
        let mut trial = ReaderTrial::default();
        trial.record(1, 50_000, MS(100));
        trial.record(2, 100_000, MS(100));
        assert_eq!(trial.readers(2), 2);
        // Two readers 2 % faster: not worth another connection.
        let mut trial = ReaderTrial::default();
        trial.record(1, 50_000, MS(102));
        trial.record(2, 100_000, MS(200));
        assert_eq!(trial.readers(2), 1);
    }

    #[test]
    fn both_are_measured_again_after_a_while() {
        let mut trial = ReaderTrial::default();
        trial.record(1, 50_000, MS(44));
        trial.record(2, 100_000, MS(100));
        for _ in 0..MEASURE_AGAIN_AFTER - 1 {
            trial.record(1, 50_000, MS(44));
            assert_eq!(trial.readers(2), 1);
        }
        trial.record(1, 50_000, MS(44));
        assert_eq!(trial, ReaderTrial::default(), "measured {} times since the choice", MEASURE_AGAIN_AFTER + 1);
        assert_eq!(trial.readers(2), 1, "a new trial starts with one reader");
        trial.record(1, 50_000, MS(100));
        assert_eq!(trial.readers(2), 2, "then the default");
        trial.record(2, 100_000, MS(100));
        assert_eq!(trial.readers(2), 2, "which is now faster");
    }

    #[test]
    fn empty_or_instant_chunks_measure_nothing() {
        let mut trial = ReaderTrial::default();
        trial.record(1, 0, MS(40));
        trial.record(1, 10, Duration::ZERO);
        assert_eq!(trial, ReaderTrial::default());
    }
}
