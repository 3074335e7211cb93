//! A WebSocket client written out byte by byte, for tests of the server's frame reader:
//! it sends any frame (fragmented, unmasked, with reserved bits, invalid UTF-8) and reads
//! the server's frames as they are on the wire.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{HUB_PATH, RECV_TIMEOUT};

/// Opcodes (RFC 6455, 5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The mask every frame of this client uses (any value works; a fixed one keeps tests
/// reproducible).
pub const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// A frame with its first header byte (FIN and opcode) and payload.
    Frame { first: u8, payload: Vec<u8> },
    /// The server ended the stream.
    End,
}

impl ServerFrame {
    /// A final text frame with `text`.
    pub fn text(text: &str) -> Self {
        Self::Frame {
            first: 0x80 | TEXT,
            payload: text.as_bytes().to_vec(),
        }
    }

    /// A text frame with the JSON completion of invocation `id` with `result` (JSON).
    pub fn completion(id: &str, result: &str) -> Self {
        Self::text(&format!(
            "{{\"type\":3,\"invocationId\":\"{id}\",\"result\":{result}}}\u{1e}"
        ))
    }

    /// A Close frame with status `code` and no reason.
    pub fn close(code: u16) -> Self {
        Self::Frame {
            first: 0x80 | CLOSE,
            payload: code.to_be_bytes().to_vec(),
        }
    }

    /// A Pong frame with `payload`.
    pub fn pong(payload: &[u8]) -> Self {
        Self::Frame {
            first: 0x80 | PONG,
            payload: payload.to_vec(),
        }
    }
}

/// The bytes of one client frame: `first` is the first header byte (FIN, reserved bits
/// and opcode), `mask` the masking key (`None` sends it unmasked, which servers refuse).
pub fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(mask_bit | payload.len() as u8);
    } else if let Ok(len) = u16::try_from(payload.len()) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A WebSocket opened by hand over `S`.
pub struct RawSocket<S> {
    /// The connection, after the upgrade.
    io: S,
    /// Bytes read and not yet taken apart.
    pending: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawSocket<S> {
    /// Upgrade `io` to a WebSocket on the test hub (no SignalR handshake yet).
    pub async fn upgrade(mut io: S) -> Self {
        let request = format!(
            "GET {HUB_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        io.write_all(request.as_bytes())
            .await
            .expect("send the upgrade");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = io.read_u8().await.expect("read the upgrade answer");
            head.push(byte);
        }
        let head = String::from_utf8(head).expect("an HTTP head");
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        // RFC 6455's example key and its answer.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "wrong accept key: {head}"
        );
        Self {
            io,
            pending: Vec::new(),
        }
    }

    /// Send raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("send");
    }

    /// Send one masked frame.
    pub async fn send(&mut self, first: u8, payload: &[u8]) {
        self.send_raw(&frame(first, payload, Some(MASK))).await;
    }

    /// Send a final text frame with `text`.
    pub async fn send_text(&mut self, text: &str) {
        self.send(0x80 | TEXT, text.as_bytes()).await;
    }

    /// Complete the JSON handshake.
    pub async fn handshake_json(&mut self) {
        self.send_text(super::JSON_HANDSHAKE).await;
        assert_eq!(self.recv().await, ServerFrame::text("{}\u{1e}"));
    }

    /// The next frame from the server.
    pub async fn recv(&mut self) -> ServerFrame {
        self.recv_within(RECV_TIMEOUT).await
    }

    /// The next frame, failing the test if none comes within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> ServerFrame {
        tokio::time::timeout(limit, self.read_frame())
            .await
            .unwrap_or_else(|_| panic!("no frame from the server within {limit:?}"))
    }

    /// The next frame that is not a hub Ping (`{"type":6}`).
    pub async fn recv_skipping_pings(&mut self) -> ServerFrame {
        loop {
            let frame = self.recv().await;
            if frame != ServerFrame::text("{\"type\":6}\u{1e}") {
                return frame;
            }
        }
    }

    async fn read_frame(&mut self) -> ServerFrame {
        loop {
            if let Some(frame) = self.take_frame() {
                return frame;
            }
            let mut chunk = [0; 64 * 1024];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return ServerFrame::End,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A complete frame from `pending`, if there is one.
    fn take_frame(&mut self) -> Option<ServerFrame> {
        let bytes = &self.pending;
        if bytes.len() < 2 {
            return None;
        }
        assert_eq!(bytes[1] & 0x80, 0, "the server masked a frame");
        let (len, start) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 if bytes.len() >= 10 => {
                let mut len = [0; 8];
                len.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(len) as usize, 10)
            }
            126 | 127 => return None,
            len => (usize::from(len), 2),
        };
        if bytes.len() < start + len {
            return None;
        }
        let first = bytes[0];
        let payload = bytes[start..start + len].to_vec();
        self.pending.drain(..start + len);
        Some(ServerFrame::Frame { first, payload })
    }
}
