//! The process's stdin and stdout, read and written on the runtime's own thread when they
//! are pipes.
//!
//! tokio's `Stdin` and `Stdout` run every read and write on a thread of its blocking pool
//! (a descriptor of unknown kind may block), so each checkpoint written and each
//! acknowledgement read crossed threads and back: at 5,000 transactions/s, a few hundred
//! checkpoints a second, that was most of what a checkpoint cost the connector
//! (docs/performance.md, finding 20). Under the Flow runtime both are pipes, which epoll can
//! watch: they are then set non-blocking and registered with the runtime's I/O driver, so
//! a write or a read is one system call where the capture runs, and a full pipe parks the
//! task, never a thread. Anything else (a file, a terminal, `/dev/null`, a socket) keeps
//! tokio's handles.
//!
//! Non-blocking mode belongs to the open file description, which is shared with whoever
//! else holds the same end of the pipe. The runtime holds the other ends only; a process
//! that handed the connector its own stdout (a shell pipeline's `connector | tool`) does
//! not write to it while the connector runs.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// The stdout pipe's size asked for: an output block, which is also Linux's default ceiling
/// for processes without `CAP_SYS_RESOURCE` (`/proc/sys/fs/pipe-max-size`, 1 MiB).
const PIPE_BYTES: usize = super::emitter::BLOCK_BYTES;

/// Set the capacity of a pipe (Linux `F_SETPIPE_SZ`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn grow_pipe(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is borrowed for the duration of the call, and F_SETPIPE_SZ
    // takes one `int` argument, passed by value.
    let result = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, value) };
    if result >= 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere pipes keep their size.
#[cfg(not(target_os = "linux"))]
fn grow_pipe(_fd: BorrowedFd<'_>, _bytes: usize) -> io::Result<()> {
    Ok(())
}

/// Standard input: a registered pipe, or tokio's handle.
pub enum Input {
    Pipe(pipe::Receiver),
    Other(tokio::io::Stdin),
}

/// Standard output: a registered pipe, or tokio's handle.
pub enum Output {
    Pipe(pipe::Sender),
    Other(tokio::io::Stdout),
}

impl Input {
    /// Standard input, as a registered pipe when it is one. Must run inside the runtime.
    pub fn open() -> Input {
        let pipe = io::stdin().as_fd().try_clone_to_owned().and_then(pipe::Receiver::from_owned_fd);
        match pipe {
            Ok(pipe) => Input::Pipe(pipe),
            Err(_) => Input::Other(tokio::io::stdin()),
        }
    }
}

impl Output {
    /// Standard output, as a registered pipe when it is one. Must run inside the runtime.
    pub fn open() -> Output {
        let pipe = io::stdout().as_fd().try_clone_to_owned().and_then(pipe::Sender::from_owned_fd);
        match pipe {
            Ok(pipe) => {
                // A write now lasts until the reader has taken all but a pipe's worth of it
                // (tokio's handle returned at once, its thread writing while the capture
                // encoded the next block). A pipe that holds a whole output block keeps
                // that overlap: a backfill through a 64 KiB pipe took 10 % longer. If the
                // system refuses (a lower `pipe-max-size`), writes just wait sooner.
                if let Err(err) = grow_pipe(pipe.as_fd(), PIPE_BYTES) {
                    tracing::debug!(error = %err, "stdout pipe keeps its size");
                }
                Output::Pipe(pipe)
            }
            Err(_) => Output::Other(tokio::io::stdout()),
        }
    }

    /// Whether writes go straight to a registered pipe.
    pub fn is_pipe(&self) -> bool {
        matches!(self, Output::Pipe(_))
    }
}

impl AsyncRead for Input {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Input::Pipe(pipe) => Pin::new(pipe).poll_read(cx, buf),
            Input::Other(stdin) => Pin::new(stdin).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Output {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Output::Pipe(pipe) => Pin::new(pipe).poll_write(cx, buf),
            Output::Other(stdout) => Pin::new(stdout).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::Pipe(pipe) => Pin::new(pipe).poll_flush(cx),
            Output::Other(stdout) => Pin::new(stdout).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Output::Pipe(pipe) => Pin::new(pipe).poll_shutdown(cx),
            Output::Other(stdout) => Pin::new(stdout).poll_shutdown(cx),
        }
    }
}
