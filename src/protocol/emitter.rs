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
//! Responses accumulate in one plain buffer, handed to the writer in blocks of about
//! `BLOCK_BYTES` (1 MiB) and on every flush. The writer is stdout as [`super::stdio`] opens
//! it: a pipe written on the runtime's thread (sized to hold a block, so the capture encodes
//! the next block while the reader drains this one), or tokio's handle for anything else.
//! A dedicated stdout thread (double-buffered blocks) was measured for issue 16 and gave no
//! CPU or wall time difference on the backfill or streaming benchmarks (finding 10); what
//! the thread hand-offs did cost was each checkpoint's (finding 20).

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::responses::{DiscoveredBinding, Response, SpecResponse, ValidatedBinding};

/// Size of one output block: documents are written out in blocks of about this size.
pub(super) const BLOCK_BYTES: usize = 1 << 20;

pub struct Emitter<W: AsyncWrite + Unpin> {
    /// Responses not yet written to `out`; ends on a whole line when written.
    buffer: Vec<u8>,
    out: W,
    /// Documents written since the last checkpoint.
    pending_documents: u64,
}

impl<W: AsyncWrite + Unpin> Emitter<W> {
    pub fn new(out: W) -> Self {
        Emitter { buffer: Vec::with_capacity(BLOCK_BYTES + BLOCK_BYTES / 4), out, pending_documents: 0 }
    }

    /// Write the buffer out (not flushing the writer).
    async fn hand_off(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            self.out.write_all(&self.buffer).await?;
            self.buffer.clear();
            // One huge document grew the buffer: give the memory back.
            if self.buffer.capacity() > 4 * BLOCK_BYTES {
                self.buffer = Vec::with_capacity(BLOCK_BYTES + BLOCK_BYTES / 4);
            }
        }
        Ok(())
    }

    /// Write everything buffered and flush the writer.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.hand_off().await?;
        self.out.flush().await
    }

    async fn write_flushed(&mut self, response: &Response<'_>) -> std::io::Result<()> {
        self.append_json(response)?;
        self.buffer.push(b'\n');
        self.flush().await
    }

    /// Serialize `value` at the end of the buffer; on failure the buffer is left as it was,
    /// so no partial line is ever written.
    fn append_json(&mut self, value: &impl serde::Serialize) -> std::io::Result<()> {
        let mark = self.buffer.len();
        serde_json::to_writer(&mut self.buffer, value).map_err(|err| {
            self.buffer.truncate(mark);
            std::io::Error::other(err)
        })
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
        let appended: Result<(), std::convert::Infallible> = self.append_captured(binding, |out| {
            write_doc(out);
            Ok(())
        });
        if let Err(never) = appended {
            match never {}
        }
        self.write_if_full().await
    }

    /// Append one captured document that `write_doc` writes, as one serialized JSON
    /// object, straight into the output buffer; if it fails, nothing of the document stays
    /// in the buffer. [`Emitter::write_if_full`] then hands a full buffer to the writer.
    pub fn append_captured<E>(
        &mut self,
        binding: u32,
        write_doc: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mark = self.buffer.len();
        let out = &mut self.buffer;
        out.extend_from_slice(b"{\"captured\":{");
        if binding != 0 {
            out.extend_from_slice(b"\"binding\":");
            out.extend_from_slice(itoa::Buffer::new().format(binding).as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(b"\"doc\":");
        if let Err(err) = write_doc(out) {
            out.truncate(mark);
            return Err(err);
        }
        out.extend_from_slice(b"}}\n");
        self.pending_documents += 1;
        Ok(())
    }

    /// Hand the buffer to the writer once it holds a block (documents are written in
    /// blocks; a checkpoint flushes whatever is buffered).
    pub async fn write_if_full(&mut self) -> std::io::Result<()> {
        if self.buffer.len() >= BLOCK_BYTES {
            self.hand_off().await?;
        }
        Ok(())
    }

    /// Write a merge-patch checkpoint and flush: everything before it may now commit.
    pub async fn checkpoint(&mut self, state_patch: &Value) -> std::io::Result<()> {
        let mark = self.buffer.len();
        self.buffer.extend_from_slice(b"{\"checkpoint\":{\"state\":{\"updated\":");
        if let Err(err) = self.append_json(state_patch) {
            self.buffer.truncate(mark);
            return Err(err);
        }
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

    /// A document whose writer fails leaves nothing behind: the lines around it are whole.
    #[tokio::test]
    async fn a_failed_document_leaves_no_partial_line() {
        let mut out = Vec::new();
        {
            let mut emitter = Emitter::new(&mut out);
            emitter.captured(1, br#"{"id":1}"#).await.unwrap();
            let failed = emitter.append_captured(3, |out| {
                out.extend_from_slice(br#"{"id":2,"half":"#);
                Err("the value would not encode")
            });
            assert_eq!(failed, Err("the value would not encode"));
            assert_eq!(emitter.pending_documents(), 1);
            let appended: Result<(), ()> = emitter.append_captured(0, |out| {
                out.extend_from_slice(br#"{"id":3}"#);
                Ok(())
            });
            appended.unwrap();
            emitter.write_if_full().await.unwrap();
            emitter.flush().await.unwrap();
            assert_eq!(emitter.pending_documents(), 2);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"captured\":{\"binding\":1,\"doc\":{\"id\":1}}}\n{\"captured\":{\"doc\":{\"id\":3}}}\n"
        );
    }

    /// Documents written through `captured_with` across many blocks (one bigger than a block)
    /// come out whole and in order, each checkpoint written out when it returns.
    #[tokio::test]
    async fn documents_span_blocks_whole_and_in_order() {
        let mut out = Vec::new();
        let mut expected = Vec::new();
        {
            let mut emitter = Emitter::new(&mut out);
            for i in 0..20_000usize {
                let size = if i == 10_000 { 3 * BLOCK_BYTES } else { (i * 7919) % 1000 };
                let body = format!("{{\"x\":\"{}\"}}", "a".repeat(size));
                emitter.captured_with(1, |out| out.extend_from_slice(body.as_bytes())).await.unwrap();
                expected.extend_from_slice(format!("{{\"captured\":{{\"binding\":1,\"doc\":{body}}}}}\n").as_bytes());
                if i % 4_999 == 0 {
                    emitter.checkpoint(&serde_json::json!({ "i": i })).await.unwrap();
                    let line =
                        format!("{{\"checkpoint\":{{\"state\":{{\"updated\":{{\"i\":{i}}},\"mergePatch\":true}}}}}}\n");
                    expected.extend_from_slice(line.as_bytes());
                    assert!(emitter.buffer.is_empty(), "a checkpoint leaves nothing buffered");
                }
            }
            emitter.flush().await.unwrap();
        }
        assert!(out.len() > 8 * BLOCK_BYTES, "the test spans many blocks");
        assert!(out == expected, "documents or checkpoints came out changed");
    }
}
