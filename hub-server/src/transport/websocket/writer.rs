//! The writing half of a server-side WebSocket: hub frames out as RFC 6455 frames.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hub_protocol::TransferFormat;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::control::Control;
use crate::transport::FrameSink;

/// How many bytes of small frames are coalesced before they are written (a flush writes
/// the rest sooner). The buffer is given back after every flush, so idle connections hold
/// none of it. A write to a socket costs the kernel mostly per call, so a burst of small
/// hub messages (a fan-out of 64 chat messages of 150 bytes each) goes out in one call,
/// not one per kilobyte.
const WRITE_COALESCE_BYTES: usize = 16 * 1024;

/// How many bytes of hub messages fed together share one WebSocket message. The SignalR
/// protocols delimit their messages themselves (JSON by the record separator 0x1E,
/// MessagePack by a length prefix), so every client splits a WebSocket message into its
/// hub messages, and ASP.NET Core sends whatever its output pipe holds as one message.
/// One message per burst instead of one per hub message saves the client a frame, an
/// event and a buffer each (what limits a Node client receiving a fast stream). Hub
/// messages larger than this go in a message of their own.
const MESSAGE_COALESCE_BYTES: usize = 16 * 1024;

const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PONG: u8 = 0xA;

/// The writing half of a WebSocket.
pub(crate) struct FrameWriter<W> {
    /// The socket's writing half.
    io: W,
    /// Frames fed and not yet written (unallocated between flushes).
    out: Vec<u8>,
    /// Hub messages fed and not yet framed: the payload of the next data message (held,
    /// not copied: a broadcast's frame is shared by every connection it goes to), whose
    /// opcode is `message_opcode` and length `message_len` (unallocated between flushes).
    message: Vec<Bytes>,
    message_len: usize,
    message_opcode: u8,
    /// Pongs the reading half asked for, and the close code it chose.
    control: Arc<Control>,
    /// A Close frame was sent: nothing more may be.
    closed: bool,
}

impl<W: AsyncWrite + Unpin + Send> FrameWriter<W> {
    /// A writer sending frames on `io`.
    pub(crate) fn new(io: W, control: Arc<Control>) -> Self {
        Self {
            io,
            out: Vec::new(),
            message: Vec::new(),
            message_len: 0,
            message_opcode: OP_TEXT,
            control,
            closed: false,
        }
    }

    /// Queue one frame: small payloads are copied behind the header, large ones written
    /// straight after what is queued.
    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        put_header(&mut self.out, opcode, payload.len());
        if self.out.len() + payload.len() <= WRITE_COALESCE_BYTES {
            self.out.extend_from_slice(payload);
            return Ok(());
        }
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.write_all(payload).await
    }

    /// Frame the hub messages fed so far as one data message.
    async fn end_message(&mut self) -> io::Result<()> {
        if self.message.is_empty() {
            return Ok(());
        }
        let mut parts = std::mem::take(&mut self.message);
        let len = std::mem::take(&mut self.message_len);
        if !self.closed {
            put_header(&mut self.out, self.message_opcode, len);
            for part in &parts {
                if self.out.len() + part.len() <= WRITE_COALESCE_BYTES {
                    self.out.extend_from_slice(part);
                } else {
                    self.io.write_all(&self.out).await?;
                    self.out.clear();
                    self.io.write_all(part).await?;
                }
            }
        }
        // Reused until the flush gives it back.
        parts.clear();
        self.message = parts;
        Ok(())
    }

    async fn write_out(&mut self) -> io::Result<()> {
        self.end_message().await?;
        self.message = Vec::new();
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await?;
        }
        self.out = Vec::new();
        self.io.flush().await
    }
}

impl<W: AsyncWrite + Unpin + Send> FrameSink for FrameWriter<W> {
    const TRANSPORT: &'static str = "websockets";

    async fn feed(&mut self, frame: Bytes, format: TransferFormat) -> io::Result<()> {
        let opcode = match format {
            TransferFormat::Text => OP_TEXT,
            TransferFormat::Binary => OP_BINARY,
        };
        if opcode != self.message_opcode || self.message_len + frame.len() > MESSAGE_COALESCE_BYTES
        {
            self.end_message().await?;
        }
        self.message_opcode = opcode;
        if frame.len() > MESSAGE_COALESCE_BYTES {
            self.write_frame(opcode, &frame).await?;
        } else {
            self.message_len += frame.len();
            self.message.push(frame);
        }
        if self.out.len() >= WRITE_COALESCE_BYTES {
            self.io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.write_out().await
    }

    async fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.end_message().await?;
        let code = self.control.close_code().code();
        self.write_frame(OP_CLOSE, &code.to_be_bytes()).await?;
        self.closed = true;
        self.write_out().await?;
        // End our direction (TCP FIN): the client answers with its own Close and ends.
        self.io.shutdown().await
    }

    async fn serve(&mut self) -> io::Result<()> {
        let payload = self.control.next_pong().await;
        self.write_frame(OP_PONG, &payload).await?;
        self.write_out().await
    }
}

/// Append the header of an unmasked, final frame (servers never mask).
fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames of `bytes` (unmasked, as a server writes them): (opcode, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let opcode = bytes[0] & 0x0F;
            let (len, header) = match bytes[1] {
                126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
                127 => (
                    usize::try_from(u64::from_be_bytes(bytes[2..10].try_into().unwrap())).unwrap(),
                    10,
                ),
                len => (usize::from(len), 2),
            };
            out.push((opcode, bytes[header..header + len].to_vec()));
            bytes = &bytes[header + len..];
        }
        out
    }

    #[tokio::test]
    async fn hub_messages_fed_together_share_one_websocket_message() {
        let mut writer = FrameWriter::new(Vec::new(), Arc::new(Control::default()));
        let text = TransferFormat::Text;
        for record in ["{\"type\":6}\u{1e}", "{\"type\":1}\u{1e}", "{}\u{1e}"] {
            writer.feed(Bytes::from(record), text).await.unwrap();
        }
        writer.flush().await.unwrap();
        // A large message goes alone, between what came before and after it.
        let large = vec![b'x'; MESSAGE_COALESCE_BYTES + 1];
        writer
            .feed(Bytes::from_static(b"a\x1e"), text)
            .await
            .unwrap();
        writer.feed(Bytes::from(large.clone()), text).await.unwrap();
        writer
            .feed(Bytes::from_static(b"b\x1e"), text)
            .await
            .unwrap();
        // Another format starts another message.
        writer
            .feed(Bytes::from_static(&[1, 0x90]), TransferFormat::Binary)
            .await
            .unwrap();
        writer.close().await.unwrap();
        let written = frames(&writer.io);
        let expected: Vec<(u8, Vec<u8>)> = vec![
            (OP_TEXT, b"{\"type\":6}\x1e{\"type\":1}\x1e{}\x1e".to_vec()),
            (OP_TEXT, b"a\x1e".to_vec()),
            (OP_TEXT, large),
            (OP_TEXT, b"b\x1e".to_vec()),
            (OP_BINARY, vec![1, 0x90]),
            (OP_CLOSE, 1000u16.to_be_bytes().to_vec()),
        ];
        assert_eq!(written, expected);
        assert_eq!(writer.message.capacity(), 0, "the buffer is given back");
    }

    /// A socket that records each write call it gets.
    #[derive(Default)]
    struct Writes(Vec<usize>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.0.push(buf.len());
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_burst_of_small_hub_messages_is_one_socket_write() {
        let mut writer = FrameWriter::new(Writes::default(), Arc::new(Control::default()));
        // 64 chat messages of about 150 bytes: what a fan-out hands a writer at once.
        let record = format!(
            "{{\"type\":1,\"target\":\"m\",\"arguments\":[\"{}\"]}}\u{1e}",
            "x".repeat(110)
        );
        for _ in 0..64 {
            writer
                .feed(Bytes::from(record.clone()), TransferFormat::Text)
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
        assert_eq!(writer.io.0.len(), 1, "writes: {:?}", writer.io.0);
        assert_eq!(writer.io.0[0], 4 + 64 * record.len());
        assert_eq!(writer.out.capacity(), 0, "the buffer is given back");
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        let header = |len| {
            let mut out = Vec::new();
            put_header(&mut out, OP_TEXT, len);
            out
        };
        assert_eq!(header(0), [0x81, 0]);
        assert_eq!(header(125), [0x81, 125]);
        assert_eq!(header(126), [0x81, 126, 0, 126]);
        assert_eq!(header(65_535), [0x81, 126, 0xFF, 0xFF]);
        assert_eq!(header(65_536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
