//! Standby status updates, the reply watchdog and keep-alive while stdout blocks: the one
//! owner of what the session tells the walsender, and of when.
//!
//! The walsender closes a connection that sends nothing for `wal_sender_timeout`, so a
//! status update goes out at least every status interval: from the streaming loop's timer
//! (which also asks for a reply), while a write to stdout is blocked (the runtime applies
//! backpressure by not reading), while a query the stream waits for runs, and promptly after
//! an acknowledgement (so that the server can release WAL).
//!
//! The watchdog: the walsender answers a reply request at once, whatever its
//! `wal_sender_timeout`, and any frame counts as the answer. A request left unanswered for
//! the silence limit (six status intervals, at least [`MIN_UNANSWERED`]) means the
//! connection is gone even if the socket still looks open (a cut network path, a frozen
//! host): the session fails, and the runtime restarts it from its last checkpoint, rather
//! than hang. Six intervals is at least the server's own `wal_sender_timeout` (the interval
//! is at most a third of it), so a walsender busy reading WAL is not mistaken for a dead one.
//!
//! The timing decisions are pure ([`StatusReporter::on_tick`], [`StatusReporter::while_blocked`],
//! [`StatusReporter::after_acknowledgement`]); the IO methods only act on them. The position
//! reported as written, flushed and applied is always the one the caller says the slot may be
//! confirmed to (see [`super::checkpoints::Checkpoints::confirmable`]).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::lsn::Lsn;
use crate::pg::replication::ReplicationStream;

/// Longest interval between standby status updates. The walsender closes a connection
/// that sends nothing for `wal_sender_timeout` (60 s by default), so the interval actually
/// used is a third of the server's setting when that is shorter (see [`interval_for`]).
pub(super) const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest silence after a reply request that counts as a dead connection.
pub(super) const MIN_UNANSWERED: Duration = Duration::from_secs(5);
/// After an acknowledgement, a status update goes out unless one went out this recently.
const ACK_REPORT_AFTER: Duration = Duration::from_secs(1);

/// What to do about status updates now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Nothing,
    Send,
    /// A reply request sent at `since` went unanswered for the silence limit.
    DeclareDead {
        since: Instant,
    },
}

/// The status interval for a server whose `wal_sender_timeout` is `timeout_ms` (0: none):
/// [`STATUS_INTERVAL`], or a third of the timeout when that is shorter, never under 100 ms.
pub(super) fn interval_for(timeout_ms: i64) -> Duration {
    let third = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0) / 3);
    if third.is_zero() { STATUS_INTERVAL } else { third.min(STATUS_INTERVAL) }.max(Duration::from_millis(100))
}

/// Status update bookkeeping of one replication connection.
#[derive(Debug)]
pub(super) struct StatusReporter {
    interval: Duration,
    last_sent: Instant,
    /// When a status update asked the server for a reply that has not come yet.
    reply_awaited_since: Option<Instant>,
}

impl StatusReporter {
    pub fn new(interval: Duration, now: Instant) -> StatusReporter {
        StatusReporter { interval, last_sent: now, reply_awaited_since: None }
    }

    /// How often status updates go out.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long the server may stay silent before it counts as gone: an unanswered reply
    /// request, or a short statement (a watermark write, a catalog query) that takes
    /// milliseconds when all is well.
    pub fn silence_limit(&self) -> Duration {
        (self.interval * 6).max(MIN_UNANSWERED)
    }

    /// A tick of the streaming loop's status timer: ask for a reply, unless an earlier
    /// request went unanswered for too long.
    pub fn on_tick(&self, now: Instant) -> Action {
        match self.reply_awaited_since {
            Some(since) if now.saturating_duration_since(since) >= self.silence_limit() => {
                Action::DeclareDead { since }
            }
            _ => Action::Send,
        }
    }

    /// While something blocks (a stdout write, a query, a long replay): send once the
    /// interval has passed since the last update.
    pub fn while_blocked(&self, now: Instant) -> Action {
        if now >= self.next_keepalive() {
            Action::Send
        } else {
            Action::Nothing
        }
    }

    /// After an acknowledgement: report it, unless an update went out just now.
    pub fn after_acknowledgement(&self, now: Instant) -> Action {
        if now.saturating_duration_since(self.last_sent) >= ACK_REPORT_AFTER {
            Action::Send
        } else {
            Action::Nothing
        }
    }

    /// When the next keep-alive update is due.
    pub fn next_keepalive(&self) -> Instant {
        self.last_sent + self.interval
    }

    /// An update went out at `now` (`reply`: asking for a reply).
    pub fn sent(&mut self, now: Instant, reply: bool) {
        self.last_sent = now;
        if reply && self.reply_awaited_since.is_none() {
            self.reply_awaited_since = Some(now);
        }
    }

    /// A frame arrived: any frame answers a reply request.
    pub fn answered(&mut self) {
        self.reply_awaited_since = None;
    }

    /// Send a status update reporting `confirmable` as written, flushed and applied.
    pub async fn send(&mut self, stream: &mut ReplicationStream, confirmable: Lsn, reply: bool) -> Result<(), Error> {
        stream.send_standby_status(confirmable, confirmable, confirmable, reply).await?;
        self.sent(Instant::now(), reply);
        Ok(())
    }

    /// Send a keep-alive update if one is due.
    pub async fn send_if_due(&mut self, stream: &mut ReplicationStream, confirmable: Lsn) -> Result<(), Error> {
        if self.while_blocked(Instant::now()) == Action::Send {
            self.send(stream, confirmable, false).await?;
        }
        Ok(())
    }

    /// Drive `work` (a query the stream waits for) to completion, sending keep-alive
    /// updates meanwhile.
    pub async fn around<T, F: Future<Output = Result<T, Error>>>(
        &mut self,
        stream: &mut ReplicationStream,
        confirmable: Lsn,
        work: F,
    ) -> Result<T, Error> {
        tokio::pin!(work);
        loop {
            let next = tokio::time::Instant::from_std(self.next_keepalive());
            tokio::select! {
                result = &mut work => return result,
                _ = tokio::time::sleep_until(next) => self.send(stream, confirmable, false).await?,
            }
        }
    }

    /// Drive a write to stdout to completion, sending keep-alive updates while it is
    /// blocked.
    pub async fn during<F: Future<Output = std::io::Result<()>>>(
        &mut self,
        stream: &mut ReplicationStream,
        confirmable: Lsn,
        write: F,
    ) -> Result<(), Error> {
        use futures::FutureExt;
        tokio::pin!(write);
        // Almost every write lands in the buffer at once; only a blocked one needs a timer.
        if let Some(result) = (&mut write).now_or_never() {
            return result.map_err(Error::Output);
        }
        self.around(stream, confirmable, async { write.await.map_err(Error::Output) }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    #[test]
    fn an_unanswered_reply_request_is_declared_dead_after_six_intervals() {
        let start = Instant::now();
        let mut status = StatusReporter::new(INTERVAL, start);
        assert_eq!(status.on_tick(start + INTERVAL * 100), Action::Send, "nothing was asked yet");
        status.sent(start + INTERVAL, true);
        // A second request does not restart the wait: the first is still unanswered.
        status.sent(start + INTERVAL * 2, true);
        assert_eq!(status.on_tick(start + INTERVAL * 6), Action::Send);
        assert_eq!(status.on_tick(start + INTERVAL * 7), Action::DeclareDead { since: start + INTERVAL });
        status.answered();
        assert_eq!(status.on_tick(start + INTERVAL * 70), Action::Send, "any frame answers");
    }

    #[test]
    fn updates_without_a_reply_request_never_arm_the_watchdog() {
        let start = Instant::now();
        let mut status = StatusReporter::new(INTERVAL, start);
        status.sent(start, false);
        assert_eq!(status.on_tick(start + INTERVAL * 100), Action::Send);
    }

    #[test]
    fn short_intervals_still_allow_the_minimum_silence() {
        let start = Instant::now();
        let mut status = StatusReporter::new(Duration::from_millis(100), start);
        assert_eq!(status.silence_limit(), MIN_UNANSWERED);
        status.sent(start, true);
        assert_eq!(status.on_tick(start + Duration::from_secs(4)), Action::Send);
        assert!(matches!(status.on_tick(start + MIN_UNANSWERED), Action::DeclareDead { .. }));
    }

    #[test]
    fn keepalives_go_out_once_per_interval_since_the_last_update() {
        let start = Instant::now();
        let mut status = StatusReporter::new(INTERVAL, start);
        assert_eq!(status.while_blocked(start + INTERVAL / 2), Action::Nothing);
        assert_eq!(status.while_blocked(start + INTERVAL), Action::Send);
        // Any update, a reply request or an acknowledgement report, restarts the interval.
        status.sent(start + INTERVAL, false);
        assert_eq!(status.while_blocked(start + INTERVAL * 3 / 2), Action::Nothing);
        assert_eq!(status.next_keepalive(), start + INTERVAL * 2);
    }

    #[test]
    fn acknowledgements_are_reported_unless_an_update_just_went_out() {
        let start = Instant::now();
        let mut status = StatusReporter::new(INTERVAL, start);
        assert_eq!(status.after_acknowledgement(start + Duration::from_millis(500)), Action::Nothing);
        assert_eq!(status.after_acknowledgement(start + ACK_REPORT_AFTER), Action::Send);
        status.sent(start + ACK_REPORT_AFTER, false);
        assert_eq!(status.after_acknowledgement(start + ACK_REPORT_AFTER), Action::Nothing);
    }

    #[test]
    fn the_interval_is_a_third_of_the_server_timeout_within_bounds() {
        assert_eq!(interval_for(60_000), STATUS_INTERVAL);
        assert_eq!(interval_for(0), STATUS_INTERVAL, "no timeout");
        assert_eq!(interval_for(-1), STATUS_INTERVAL);
        assert_eq!(interval_for(6_000), Duration::from_secs(2));
        assert_eq!(interval_for(30), Duration::from_millis(100));
    }
}
