//! The only writer of stdout.
//!
//! Every response is one compact JSON object followed by `\n`. Documents (`captured`) are
//! buffered for throughput; every other response flushes, so the runtime sees a checkpoint
//! (and the documents before it) as soon as it is written. Document bodies are serialized
//! straight into the output buffer ([`Emitter::captured_with`]), so the hot path neither
//! builds a `Value` nor copies a finished document.
//!
//! Ordering invariants the capture relies on: documents written before a checkpoint
//! belong to that checkpoint; a checkpoint is never written in the middle of a source
//! transaction (the capture decides when to call [`Emitter::checkpoint`]).
//!
//! ## Writing stdout
//!
//! Responses accumulate in one plain buffer of about `BLOCK_BYTES` (1 MiB). A full buffer is handed
//! whole to a dedicated writer thread ([`Emitter::stdout`]), which writes it to the file
//! descriptor and hands the emptied buffer back; the capture fills a spare meanwhile (double
//! buffering). At most `MAX_IN_FLIGHT` (2) blocks wait for the thread, so memory stays at a few
//! blocks however slow the reader. tokio's own `Stdout` would copy every write once more into
//! its blocking pool's buffer and wake a pool thread per write; the profile of issue 16 showed
//! those copies and wakeups. A flush (every response but `captured`) hands the buffer over and
//! waits until the thread has written every block: a checkpoint is in the pipe when
//! [`Emitter::checkpoint`] returns, as before. Other writers (tests) get the buffer through
//! `AsyncWrite`.

use std::io::Write;

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::responses::{DiscoveredBinding, Response, SpecResponse, ValidatedBinding};

/// Size of one output block: documents are written out in blocks of about this size.
const BLOCK_BYTES: usize = 1 << 20;

/// Full blocks that may wait for the writer thread before the capture waits in turn.
const MAX_IN_FLIGHT: usize = 2;

/// A returned block bigger than this (one huge document grew it) is not kept as a spare.
const SPARE_LIMIT: usize = 4 * BLOCK_BYTES;

pub struct Emitter<W: AsyncWrite + Unpin> {
    /// Responses not yet handed to the sink; ends on a whole line when handed over.
    buffer: Vec<u8>,
    sink: Sink<W>,
    /// Documents written since the last checkpoint.
    pending_documents: u64,
}

enum Sink<W> {
    Async(W),
    Thread(WriterThread),
}

/// The far end of the stdout writer thread.
struct WriterThread {
    blocks: std::sync::mpsc::Sender<Vec<u8>>,
    /// The thread's result for each block, with the emptied block to reuse.
    returned: mpsc::UnboundedReceiver<std::io::Result<Vec<u8>>>,
    in_flight: usize,
    spares: Vec<Vec<u8>>,
}

impl WriterThread {
    fn spawn<O: Write + Send + 'static>(mut out: O) -> std::io::Result<Self> {
        let (blocks, blocks_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let (returned_tx, returned) = mpsc::unbounded_channel();
        std::thread::Builder::new().name("stdout".into()).spawn(move || {
            while let Ok(mut block) = blocks_rx.recv() {
                // Every block ends with `\n`, so the line-buffered `Stdout` passes it to the
                // descriptor without copying it.
                let result = out.write_all(&block).and_then(|()| out.flush());
                block.clear();
                if block.capacity() > SPARE_LIMIT {
                    block = Vec::new();
                }
                if returned_tx.send(result.map(|()| block)).is_err() {
                    break;
                }
            }
        })?;
        Ok(WriterThread { blocks, returned, in_flight: 0, spares: Vec::new() })
    }

    /// Wait for one block to come back.
    async fn collect(&mut self) -> std::io::Result<()> {
        let block = self.returned.recv().await.ok_or_else(|| std::io::Error::other("stdout writer thread ended"))?;
        self.in_flight -= 1;
        self.spares.push(block?);
        Ok(())
    }

    /// Hand `buffer`'s contents to the thread and leave an empty block in its place.
    async fn send(&mut self, buffer: &mut Vec<u8>) -> std::io::Result<()> {
        while let Ok(block) = self.returned.try_recv() {
            self.in_flight -= 1;
            self.spares.push(block?);
        }
        if self.in_flight >= MAX_IN_FLIGHT {
            self.collect().await?;
        }
        let spare = self.spares.pop().unwrap_or_else(|| Vec::with_capacity(BLOCK_BYTES + BLOCK_BYTES / 4));
        let full = std::mem::replace(buffer, spare);
        self.blocks.send(full).map_err(|_| std::io::Error::other("stdout writer thread ended"))?;
        self.in_flight += 1;
        Ok(())
    }

    async fn drain(&mut self) -> std::io::Result<()> {
        while self.in_flight > 0 {
            self.collect().await?;
        }
        Ok(())
    }
}

impl Emitter<tokio::io::Stdout> {
    /// The process's emitter: stdout, written by a dedicated thread.
    pub fn stdout() -> std::io::Result<Self> {
        Self::threaded(std::io::stdout())
    }

    /// An emitter whose blocks a dedicated thread writes to `out` (the type parameter is unused).
    fn threaded<O: Write + Send + 'static>(out: O) -> std::io::Result<Self> {
        Ok(Emitter {
            buffer: Vec::with_capacity(BLOCK_BYTES + BLOCK_BYTES / 4),
            sink: Sink::Thread(WriterThread::spawn(out)?),
            pending_documents: 0,
        })
    }
}

impl<W: AsyncWrite + Unpin> Emitter<W> {
    pub fn new(out: W) -> Self {
        Emitter { buffer: Vec::with_capacity(BLOCK_BYTES), sink: Sink::Async(out), pending_documents: 0 }
    }

    /// Hand the buffer to the sink (not waiting for it to be written).
    async fn hand_off(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Async(out) => {
                out.write_all(&self.buffer).await?;
                self.buffer.clear();
                Ok(())
            }
            Sink::Thread(thread) => thread.send(&mut self.buffer).await,
        }
    }

    /// Write everything buffered and wait until it is written.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.hand_off().await?;
        match &mut self.sink {
            Sink::Async(out) => out.flush().await,
            Sink::Thread(thread) => thread.drain().await,
        }
    }

    async fn write_flushed(&mut self, response: &Response<'_>) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.buffer, response).map_err(std::io::Error::other)?;
        self.buffer.push(b'\n');
        self.flush().await
    }

    pub async fn spec(&mut self, spec: &SpecResponse) -> std::io::Result<()> {
        self.write_flushed(&Response::Spec(spec)).await
    }

    pub async fn discovered(&mut self, bindings: &[DiscoveredBinding]) -> std::io::Result<()> {
        self.write_flushed(&Response::Discovered { bindings }).await
    }

    pub async fn validated(&mut self, bindings: &[ValidatedBinding]) -> std::io::Result<()> {
        self.write_flushed(&Response::Validated { bindings }).await
    }

    pub async fn applied(&mut self, action_description: &str) -> std::io::Result<()> {
        self.write_flushed(&Response::Applied { action_description }).await
    }

    pub async fn opened(&mut self) -> std::io::Result<()> {
        self.write_flushed(&Response::Opened { explicit_acknowledgements: true }).await
    }

    pub async fn sourced_schema(&mut self, binding: u32, document_schema: &Value) -> std::io::Result<()> {
        self.write_flushed(&Response::SourcedSchema { binding, document_schema }).await
    }

    /// Write one captured document. `doc` must be a serialized JSON object.
    pub async fn captured(&mut self, binding: u32, doc: &[u8]) -> std::io::Result<()> {
        self.captured_with(binding, |out| out.extend_from_slice(doc)).await
    }

    /// Write one captured document that `write_doc` appends, as one serialized JSON object,
    /// straight into the output buffer. It runs before the first await.
    pub async fn captured_with(&mut self, binding: u32, write_doc: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
        let out = &mut self.buffer;
        out.extend_from_slice(b"{\"captured\":{");
        if binding != 0 {
            out.extend_from_slice(b"\"binding\":");
            out.extend_from_slice(itoa::Buffer::new().format(binding).as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(b"\"doc\":");
        write_doc(out);
        out.extend_from_slice(b"}}\n");
        self.pending_documents += 1;
        if self.buffer.len() >= BLOCK_BYTES {
            self.hand_off().await?;
        }
        Ok(())
    }

    /// Write a merge-patch checkpoint and flush: everything before it may now commit.
    pub async fn checkpoint(&mut self, state_patch: &Value) -> std::io::Result<()> {
        self.buffer.extend_from_slice(b"{\"checkpoint\":{\"state\":{\"updated\":");
        serde_json::to_writer(&mut self.buffer, state_patch).map_err(std::io::Error::other)?;
        self.buffer.extend_from_slice(b",\"mergePatch\":true}}}\n");
        self.pending_documents = 0;
        self.flush().await
    }

    /// Documents written since the last checkpoint.
    pub fn pending_documents(&self) -> u64 {
        self.pending_documents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn responses_use_protocol_keys_and_omit_defaults() {
        let mut out = Vec::new();
        {
            let mut emitter = Emitter::new(&mut out);
            emitter.opened().await.unwrap();
            emitter.captured(0, br#"{"id":1}"#).await.unwrap();
            emitter.captured(2, br#"{"id":2}"#).await.unwrap();
            emitter.checkpoint(&serde_json::json!({"cursor":"0/1"})).await.unwrap();
            emitter.applied("").await.unwrap();
            emitter.validated(&[ValidatedBinding { resource_path: vec!["a".into(), "b".into()] }]).await.unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            concat!(
                "{\"opened\":{\"explicitAcknowledgements\":true}}\n",
                "{\"captured\":{\"doc\":{\"id\":1}}}\n",
                "{\"captured\":{\"binding\":2,\"doc\":{\"id\":2}}}\n",
                "{\"checkpoint\":{\"state\":{\"updated\":{\"cursor\":\"0/1\"},\"mergePatch\":true}}}\n",
                "{\"applied\":{}}\n",
                "{\"validated\":{\"bindings\":[{\"resourcePath\":[\"a\",\"b\"]}]}}\n",
            )
        );
        assert_eq!(crate::protocol::PROTOCOL_VERSION, 3032023);
    }

    /// A `Write` that keeps what it is given, written in small pieces like a pipe.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(65536);
            self.0.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Drive both emitters through the same responses: many blocks of documents of every
    /// size (one bigger than a block), checkpoints between them.
    async fn drive<W: AsyncWrite + Unpin>(emitter: &mut Emitter<W>, shared: Option<&Shared>) {
        let mut written = 0;
        for i in 0..40_000u32 {
            let size = if i == 20_000 { 3 * BLOCK_BYTES } else { (i as usize * 7919) % 500 };
            emitter
                .captured_with(i % 3, |out| {
                    out.extend_from_slice(b"{\"x\":\"");
                    out.resize(out.len() + size, b'a' + (i % 26) as u8);
                    out.extend_from_slice(b"\"}");
                })
                .await
                .unwrap();
            if i % 9_999 == 0 {
                emitter.checkpoint(&serde_json::json!({ "i": i })).await.unwrap();
                if let Some(shared) = shared {
                    // A checkpoint is written when `checkpoint` returns.
                    let now = shared.0.lock().unwrap().len();
                    assert!(now > written && shared.0.lock().unwrap().ends_with(b"true}}}\n"));
                    written = now;
                }
            }
        }
        emitter.applied("done").await.unwrap();
    }

    #[tokio::test]
    async fn the_writer_thread_writes_the_same_bytes_in_order_and_flushes_checkpoints() {
        let mut expected = Vec::new();
        drive(&mut Emitter::new(&mut expected), None).await;
        let shared = Shared::default();
        let mut emitter = Emitter::threaded(shared.clone()).unwrap();
        drive(&mut emitter, Some(&shared)).await;
        let got = shared.0.lock().unwrap();
        assert!(expected.len() > 8 * BLOCK_BYTES, "the test spans many blocks");
        assert!(*got == expected, "the threaded emitter wrote other bytes");
    }
}
