//! The only writer of stdout.
//!
//! Every response is one compact JSON object followed by `\n`. Documents (`captured`) are
//! buffered for throughput; every other response flushes, so the runtime sees a checkpoint
//! (and the documents before it) as soon as it is written. Document bodies arrive already
//! serialized as JSON bytes, so the hot path copies bytes and never builds a `Value`.
//!
//! Ordering invariants the capture relies on: documents written before a checkpoint
//! belong to that checkpoint; a checkpoint is never written in the middle of a source
//! transaction (the capture decides when to call [`Emitter::checkpoint`]).

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::responses::{DiscoveredBinding, Response, SpecResponse, ValidatedBinding};

/// Capacity of the stdout buffer: documents are flushed in blocks of this size.
const BUFFER_BYTES: usize = 1 << 20;

pub struct Emitter<W: AsyncWrite + Unpin> {
    out: BufWriter<W>,
    /// Documents written since the last checkpoint.
    pending_documents: u64,
}

impl<W: AsyncWrite + Unpin> Emitter<W> {
    pub fn new(out: W) -> Self {
        Emitter { out: BufWriter::with_capacity(BUFFER_BYTES, out), pending_documents: 0 }
    }

    async fn write_flushed(&mut self, response: &Response<'_>) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line).await?;
        self.out.flush().await
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
        self.out.write_all(b"{\"captured\":{").await?;
        if binding != 0 {
            let mut number = itoa::Buffer::new();
            self.out.write_all(b"\"binding\":").await?;
            self.out.write_all(number.format(binding).as_bytes()).await?;
            self.out.write_all(b",").await?;
        }
        self.out.write_all(b"\"doc\":").await?;
        self.out.write_all(doc).await?;
        self.out.write_all(b"}}\n").await?;
        self.pending_documents += 1;
        Ok(())
    }

    /// Write a merge-patch checkpoint and flush: everything before it may now commit.
    pub async fn checkpoint(&mut self, state_patch: &Value) -> std::io::Result<()> {
        self.out.write_all(b"{\"checkpoint\":{\"state\":{\"updated\":").await?;
        let patch = serde_json::to_vec(state_patch).map_err(std::io::Error::other)?;
        self.out.write_all(&patch).await?;
        self.out.write_all(b",\"mergePatch\":true}}}\n").await?;
        self.pending_documents = 0;
        self.out.flush().await
    }

    /// Documents written since the last checkpoint.
    pub fn pending_documents(&self) -> u64 {
        self.pending_documents
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().await
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
}
