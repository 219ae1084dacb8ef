//! The capture's input while the session runs: the runtime's acknowledgements on stdin.
//!
//! A task reads stdin for the whole session, so that acknowledgements are taken in while
//! the session waits on the database or on stdout, and hands them to the streaming loop
//! over a channel. Anything but an acknowledgement after `open` is an error; the end of
//! stdin ends the session cleanly.

use tokio::io::AsyncBufRead;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::protocol::{Request, RequestReader};

/// Events from the stdin reader task.
pub(super) enum Input {
    Acknowledge(u32),
    Eof,
    Failed(Error),
}

/// Reads acknowledgements from stdin for the whole session; anything else is an error.
pub(super) async fn read_input<R: AsyncBufRead + Unpin>(
    mut reader: RequestReader<R>,
    tx: mpsc::UnboundedSender<Input>,
) {
    loop {
        let input = match reader.next().await {
            // The count as sent: an explicit 0 acknowledges nothing (the protocol reads an
            // absent count as 1).
            Ok(Some(Request::Acknowledge(ack))) => Input::Acknowledge(ack.checkpoints),
            Ok(Some(other)) => Input::Failed(Error::user(
                format!("unexpected {} request during a capture session", request_name(&other)),
                "only acknowledge requests may follow open",
            )),
            Ok(None) => Input::Eof,
            Err(err) => Input::Failed(err.into()),
        };
        let done = !matches!(input, Input::Acknowledge(_));
        if tx.send(input).is_err() || done {
            return;
        }
    }
}

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Spec => "spec",
        Request::Discover(_) => "discover",
        Request::Validate(_) => "validate",
        Request::Apply(_) => "apply",
        Request::Open(_) => "open",
        Request::Acknowledge(_) => "acknowledge",
    }
}
