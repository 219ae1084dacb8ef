//! Fewer wake-ups while the replication stream catches up: the socket's receive low-water
//! mark (`SO_RCVLOWAT`) rises with the stream's rate.
//!
//! The walsender sends each message as soon as it is decoded, in segments of a few
//! kilobytes, and the capture reads them faster than the server decodes them. So while a
//! backlog drains, the capture drains the socket, parks in `epoll_wait`, and is woken again
//! for the next segment: tens of thousands of context switches per second, which on a
//! virtual machine cost more CPU than decoding and encoding the messages (measured in
//! docs/performance.md, finding 17).
//!
//! Linux wakes a reader of a TCP socket only once the bytes waiting reach the socket's
//! low-water mark (or on end of stream, an error, or memory pressure). While the stream
//! arrives fast, the mark is set to about [`LINGER`] worth of it, so each wake-up finds a
//! batch of messages; a read that waits longer than [`DEADLINE`] lowers the mark to 1 again,
//! which makes the kernel signal at once if anything is waiting. So a message is never held
//! back by more than the deadline, and a slow or idle stream (live changes, keepalives) is
//! read as it arrives, exactly as without this.
//!
//! [`ReadCoalescing`] is the policy, pure and tested by itself; [`set_low_water_mark`] is
//! the one system call. Transports without a TCP socket of their own (the SSH tunnel's
//! channels) do not coalesce.

use std::io;
use std::time::{Duration, Instant};

/// How much of the stream one wake-up should find: the mark is the stream's rate times this.
pub const LINGER: Duration = Duration::from_millis(1);

/// A read waits at most this long for the mark before taking whatever has arrived. Also
/// the most a message can be delayed by coalescing (plus the timer's granularity, 1 ms).
pub const DEADLINE: Duration = Duration::from_millis(2);

/// The rate is measured over windows of this length.
const WINDOW: Duration = Duration::from_millis(10);

/// Below this many bytes per [`LINGER`] the stream is read as it arrives: at 16 KiB per
/// millisecond (16 MB/s) a wake-up already finds several segments without waiting.
pub const MIN_MARK: usize = 16 * 1024;

/// The highest mark. Linux clamps the receive window to the mark when the socket's buffer
/// cannot hold twice the mark ([`ReadCoalescing::for_receive_buffer`] keeps far below
/// that), and a larger batch saves little more: at this size a wake-up is already a small
/// part of the work of reading its messages.
pub const MAX_MARK: usize = 32 * 1024;

/// The low-water mark policy of one replication stream.
#[derive(Debug)]
pub struct ReadCoalescing {
    window_start: Instant,
    window_bytes: u64,
    /// The mark the socket has now (1: every byte wakes the reader).
    mark: usize,
    /// The highest mark this socket takes.
    max_mark: usize,
}

impl ReadCoalescing {
    /// The policy for a socket whose receive buffer is `receive_buffer` bytes, or `None`
    /// when that buffer is too small for a mark to be safe: a mark must stay at most a
    /// quarter of the buffer, or the kernel narrows the TCP window to it.
    pub fn for_receive_buffer(receive_buffer: usize, now: Instant) -> Option<Self> {
        let max_mark = (receive_buffer / 4).min(MAX_MARK);
        (max_mark >= MIN_MARK).then_some(ReadCoalescing { window_start: now, window_bytes: 0, mark: 1, max_mark })
    }

    /// The mark the socket has now: above 1, reads wait for it, under [`DEADLINE`].
    pub fn mark(&self) -> usize {
        self.mark
    }

    /// Record `bytes` read at `now`. Returns the new mark when it changes: the caller sets
    /// it on the socket before its next read.
    pub fn on_read(&mut self, bytes: usize, now: Instant) -> Option<usize> {
        self.window_bytes = self.window_bytes.saturating_add(bytes as u64);
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        // Bytes per LINGER over the window that just ended.
        let per_linger = u128::from(self.window_bytes) * LINGER.as_nanos() / elapsed.as_nanos().max(1);
        let per_linger = usize::try_from(per_linger).unwrap_or(usize::MAX);
        self.window_start = now;
        self.window_bytes = 0;
        let mark = if per_linger < MIN_MARK {
            1
        } else {
            // The power of two at or below: small changes of rate do not cost a system call.
            let rounded = 1_usize << (usize::BITS - 1 - per_linger.leading_zeros());
            rounded.clamp(MIN_MARK, self.max_mark)
        };
        self.change(mark)
    }

    /// A read waited [`DEADLINE`] without reaching the mark: the stream has slowed down, so
    /// it is read as it arrives until a window measures it fast again. Returns the new mark
    /// (1) when it changes.
    pub fn on_deadline(&mut self, now: Instant) -> Option<usize> {
        self.window_start = now;
        self.window_bytes = 0;
        self.change(1)
    }

    /// Take `mark` (within this socket's bounds, or 1) as if a window had measured it.
    pub fn force(&mut self, mark: usize, now: Instant) -> Option<usize> {
        self.window_start = now;
        self.window_bytes = 0;
        self.change(if mark <= 1 { 1 } else { mark.clamp(MIN_MARK, self.max_mark) })
    }

    fn change(&mut self, mark: usize) -> Option<usize> {
        (mark != self.mark).then(|| {
            self.mark = mark;
            mark
        })
    }
}

/// The receive buffer of `socket`, in bytes.
pub fn receive_buffer_size(socket: &tokio::net::TcpStream) -> io::Result<usize> {
    socket2::SockRef::from(socket).recv_buffer_size()
}

/// Set the receive low-water mark of `socket` (`SO_RCVLOWAT`). Lowering it makes Linux
/// signal the socket readable at once if the bytes waiting reach the new mark.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn set_low_water_mark(socket: &tokio::net::TcpStream, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let size = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the descriptor belongs to `socket`, which is borrowed for the call, and the
    // option value points to a `c_int` that outlives the call, with its size passed beside it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            size,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere a lowered mark need not wake a waiting reader, so no mark is ever set.
#[cfg(not(target_os = "linux"))]
pub fn set_low_water_mark(_socket: &tokio::net::TcpStream, _bytes: usize) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "receive low-water marks are used on Linux only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(now: Instant) -> ReadCoalescing {
        ReadCoalescing::for_receive_buffer(128 * 1024, now).expect("a default receive buffer takes a mark")
    }

    /// Feed `rate` bytes per millisecond in reads of `chunk` bytes for `millis` ms; the
    /// marks the policy asked for, in order.
    fn feed(policy: &mut ReadCoalescing, start: Instant, rate: usize, chunk: usize, millis: u64) -> Vec<usize> {
        let mut marks = Vec::new();
        let total = rate * usize::try_from(millis).unwrap();
        let mut sent = 0;
        while sent < total {
            sent += chunk;
            let at =
                start + Duration::from_nanos(u64::try_from(sent).unwrap() * 1_000_000 / u64::try_from(rate).unwrap());
            marks.extend(policy.on_read(chunk, at));
        }
        marks
    }

    #[test]
    fn a_slow_stream_is_read_as_it_arrives() {
        let start = Instant::now();
        let mut p = policy(start);
        // 5,000 small transactions a second: about 1.5 KiB per millisecond.
        assert_eq!(feed(&mut p, start, 1_500, 300, 200), Vec::<usize>::new());
        assert_eq!(p.mark(), 1);
        // Just under the threshold.
        let mut p = policy(start);
        assert_eq!(feed(&mut p, start, MIN_MARK - 512, 4_096, 200), Vec::<usize>::new());
        assert_eq!(p.mark(), 1);
    }

    #[test]
    fn a_fast_stream_raises_the_mark_to_its_rate_within_bounds() {
        let start = Instant::now();
        let mut p = policy(start);
        // 20 KiB per ms: the mark is the power of two below, 16 KiB, set once.
        assert_eq!(feed(&mut p, start, 20 * 1024, 5_000, 100), vec![16 * 1024]);
        // 50 MB/s: the highest mark, set once.
        let mut p = policy(start);
        assert_eq!(feed(&mut p, start, 50_000, 5_000, 100), vec![MAX_MARK]);
        // A rate of exactly a power of two is that mark.
        let mut p = policy(start);
        assert_eq!(feed(&mut p, start, 16 * 1024, 1024, 100), vec![16 * 1024]);
    }

    #[test]
    fn the_mark_follows_the_rate_down_and_a_deadline_drops_it_at_once() {
        let start = Instant::now();
        let mut p = policy(start);
        assert_eq!(feed(&mut p, start, 50_000, 5_000, 50), vec![MAX_MARK]);
        let later = start + Duration::from_millis(60);
        assert_eq!(p.on_deadline(later), Some(1));
        assert_eq!(p.mark(), 1);
        // A second deadline changes nothing.
        assert_eq!(p.on_deadline(later), None);
        // The rate comes back: the mark rises again after one window.
        assert_eq!(feed(&mut p, later, 50_000, 5_000, 50), vec![MAX_MARK]);
        // The rate falls under the threshold: one window later the mark is 1.
        let later = later + Duration::from_millis(50);
        assert_eq!(feed(&mut p, later, 2_000, 500, 50), vec![1]);
    }

    #[test]
    fn a_small_receive_buffer_takes_no_mark_or_a_lower_one() {
        let now = Instant::now();
        assert!(ReadCoalescing::for_receive_buffer(MIN_MARK * 4 - 1, now).is_none());
        assert!(ReadCoalescing::for_receive_buffer(0, now).is_none());
        let mut p = ReadCoalescing::for_receive_buffer(MIN_MARK * 4, now).unwrap();
        assert_eq!(feed(&mut p, now, 50_000, 5_000, 50), vec![MIN_MARK]);
    }

    #[test]
    fn reads_at_one_instant_or_huge_counts_do_not_overflow() {
        let now = Instant::now();
        let mut p = policy(now);
        assert_eq!(p.on_read(usize::MAX, now), None);
        assert_eq!(p.on_read(usize::MAX, now + WINDOW), Some(MAX_MARK));
        // A clock that appears to go backwards is a zero elapsed time, not a panic.
        let mut p = policy(now + WINDOW);
        assert_eq!(p.on_read(1, now), None);
    }
}
