//! The reading half of a server-side WebSocket: RFC 6455 frames in, message payload bytes
//! out, as they arrive.
//!
//! Nothing here buffers a message, or even a frame: each socket read (at most the chunk
//! size, into a buffer on the stack) is taken apart at once. Payload bytes of data frames
//! are unmasked straight into the connection core's buffer, text is checked for UTF-8 as
//! it comes (a character may be split anywhere), and control frames (at most 125 bytes)
//! are answered or acted on. A connection waiting for its client therefore holds no read
//! buffer at all.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use super::control::{CloseCode, Control};
use super::utf8::Utf8Validator;
use crate::transport::{Incoming, Received, TransportError};

/// The largest chunk read from the socket at once (the stack buffer's size).
pub(crate) const MAX_READ_CHUNK: usize = 16 * 1024;

/// The longest frame header a client sends: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// The largest control frame payload (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The reading half of a WebSocket, yielding message payload bytes to the connection core.
pub(crate) struct FrameReader<R> {
    /// The socket's reading half.
    io: R,
    /// How many bytes one socket read takes at most: bounds what one
    /// [`Incoming::read`] adds to the core's buffer.
    chunk: usize,
    /// Where pongs to send and the close code to end with are left for the writing half.
    control: Arc<Control>,
    /// Where in the current frame the next byte belongs.
    state: FrameState,
    /// The kind of the data message in progress (its first frame arrived, its final one
    /// not yet), which decides what continuation frames mean and whether pings count as
    /// activity.
    message: Option<MessageKind>,
    /// Checks the text message in progress, across frames and reads.
    utf8: Utf8Validator,
    /// The payload of the control frame being read (empty otherwise, and unallocated
    /// until a control frame with a payload arrives).
    control_payload: Vec<u8>,
    /// The client sent a Close frame or ended the stream: nothing more is read.
    closed: bool,
    /// The stream ended without a Close frame: the transport was lost rather than closed.
    ended_without_close: bool,
}

/// The kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Bytes.
    Binary,
}

/// Where the reader is inside the current frame.
#[derive(Debug)]
enum FrameState {
    /// Collecting the header: `have` bytes of `header` so far.
    Header { header: [u8; MAX_HEADER], have: u8 },
    /// Reading the payload.
    Payload(Payload),
}

/// The payload still to read of one frame.
#[derive(Debug)]
struct Payload {
    /// The frame's opcode.
    opcode: u8,
    /// Whether this frame ends its message.
    fin: bool,
    /// Payload bytes not yet read.
    remaining: u64,
    /// The client's masking key.
    mask: [u8; 4],
    /// Payload bytes read so far, which decides where in the mask the next byte starts.
    offset: usize,
}

/// What taking one read's bytes apart found.
#[derive(Debug, Default)]
struct Consumed {
    /// Something that counts as client activity: payload bytes of a data frame, or any
    /// frame ending while no message is half received.
    activity: bool,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

impl<R> FrameReader<R> {
    /// A reader taking at most `chunk` bytes per socket read (capped at
    /// [`MAX_READ_CHUNK`]).
    pub(crate) fn new(io: R, chunk: usize, control: Arc<Control>) -> Self {
        Self {
            io,
            chunk: chunk.clamp(MAX_HEADER, MAX_READ_CHUNK),
            control,
            state: FrameState::new_header(),
            message: None,
            utf8: Utf8Validator::default(),
            control_payload: Vec::new(),
            closed: false,
            ended_without_close: false,
        }
    }

    /// End the connection for a protocol violation: the writer closes with `code`.
    fn violation(&self, code: CloseCode, reason: &str) -> TransportError {
        self.control.close_with(code);
        TransportError::Violation(reason.to_owned())
    }

    /// Take one read's bytes apart, appending data payload to `buf`.
    fn consume(
        &mut self,
        mut input: &[u8],
        buf: &mut BytesMut,
    ) -> Result<Consumed, TransportError> {
        let mut consumed = Consumed::default();
        while !input.is_empty() && !self.closed {
            match &mut self.state {
                FrameState::Header { header, have } => {
                    let had = usize::from(*have);
                    let needed = header_len(&header[..had]);
                    let take = (needed - had).min(input.len());
                    header[had..had + take].copy_from_slice(&input[..take]);
                    input = &input[take..];
                    let have_now = had + take;
                    *have = have_now as u8;
                    let header = *header;
                    if have_now == 2 {
                        self.check_start(header[0], header[1])?;
                    }
                    if have_now >= 2 && have_now == header_len(&header[..have_now]) {
                        self.start_frame(&header[..have_now], &mut consumed)?;
                    }
                }
                FrameState::Payload(payload) => {
                    let n = usize::try_from(payload.remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (bytes, rest) = input.split_at(n);
                    input = rest;
                    let (mask, offset) = (payload.mask, payload.offset);
                    payload.remaining -= n as u64;
                    payload.offset += n;
                    let done = payload.remaining == 0;
                    if payload.opcode >= OP_CLOSE {
                        let start = self.control_payload.len();
                        self.control_payload.extend_from_slice(bytes);
                        unmask(&mut self.control_payload[start..], mask, offset);
                    } else {
                        let start = buf.len();
                        buf.extend_from_slice(bytes);
                        unmask(&mut buf[start..], mask, offset);
                        if self.message == Some(MessageKind::Text)
                            && self.utf8.feed(&buf[start..]).is_err()
                        {
                            return Err(self.violation(
                                CloseCode::InvalidPayload,
                                "a text message is not valid UTF-8",
                            ));
                        }
                        consumed.activity |= n > 0;
                    }
                    if done {
                        self.end_frame(&mut consumed)?;
                    }
                }
            }
        }
        Ok(consumed)
    }

    /// Check the first two header bytes, before the rest of the header arrives.
    fn check_start(&self, first: u8, second: u8) -> Result<(), TransportError> {
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        let protocol = CloseCode::ProtocolError;
        if first & 0x70 != 0 {
            // No extension was negotiated, so no reserved bit may be set.
            return Err(self.violation(protocol, "a frame has a reserved bit set"));
        }
        if second & 0x80 == 0 {
            return Err(self.violation(protocol, "a client frame is not masked"));
        }
        match opcode {
            OP_CONTINUATION if self.message.is_none() => Err(self.violation(
                protocol,
                "a continuation frame arrived with no message to continue",
            )),
            OP_TEXT | OP_BINARY if self.message.is_some() => Err(self.violation(
                protocol,
                "a new message started before the previous one ended",
            )),
            OP_CONTINUATION | OP_TEXT | OP_BINARY => Ok(()),
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    Err(self.violation(protocol, "a control frame is fragmented"))
                } else if usize::from(second & 0x7F) > MAX_CONTROL_PAYLOAD {
                    Err(self.violation(protocol, "a control frame is longer than 125 bytes"))
                } else {
                    Ok(())
                }
            }
            _ => Err(self.violation(protocol, "a frame has an unknown opcode")),
        }
    }

    /// The header is complete: start reading the payload.
    fn start_frame(
        &mut self,
        header: &[u8],
        consumed: &mut Consumed,
    ) -> Result<(), TransportError> {
        let fin = header[0] & 0x80 != 0;
        let opcode = header[0] & 0x0F;
        let (remaining, mask_at) = match header[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut length = [0; 8];
                length.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(length), 10)
            }
            short => (u64::from(short), 2),
        };
        if remaining >> 63 != 0 {
            return Err(self.violation(
                CloseCode::ProtocolError,
                "a frame length has its most significant bit set",
            ));
        }
        let mut mask = [0; 4];
        mask.copy_from_slice(&header[mask_at..mask_at + 4]);
        match opcode {
            OP_TEXT => self.message = Some(MessageKind::Text),
            OP_BINARY => self.message = Some(MessageKind::Binary),
            _ => {}
        }
        self.state = FrameState::Payload(Payload {
            opcode,
            fin,
            remaining,
            mask,
            offset: 0,
        });
        if remaining == 0 {
            self.end_frame(consumed)?;
        }
        Ok(())
    }

    /// The current frame's payload has been read.
    fn end_frame(&mut self, consumed: &mut Consumed) -> Result<(), TransportError> {
        let FrameState::Payload(payload) =
            std::mem::replace(&mut self.state, FrameState::new_header())
        else {
            return Ok(());
        };
        match payload.opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY if payload.fin => {
                if self.message == Some(MessageKind::Text) && self.utf8.finish().is_err() {
                    return Err(self.violation(
                        CloseCode::InvalidPayload,
                        "a text message ends inside a UTF-8 character",
                    ));
                }
                self.message = None;
            }
            OP_PING => self.control.pong(&self.control_payload),
            OP_CLOSE => {
                self.check_close_payload()?;
                self.closed = true;
            }
            _ => {} // A pong needs no answer.
        }
        self.control_payload.clear();
        if self.control_payload.capacity() > MAX_CONTROL_PAYLOAD {
            self.control_payload = Vec::new();
        }
        // A half-received message is only kept alive by more of its data: pings and pongs
        // between its frames do not count (see `HubOptions::client_timeout`).
        consumed.activity |= self.message.is_none();
        Ok(())
    }

    /// A Close frame's payload is empty, or a status code and a UTF-8 reason.
    fn check_close_payload(&self) -> Result<(), TransportError> {
        match self.control_payload.as_slice() {
            [] => Ok(()),
            [_] => Err(self.violation(
                CloseCode::ProtocolError,
                "a close frame has a one-byte payload",
            )),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !close_code_allowed(code) {
                    Err(self.violation(
                        CloseCode::ProtocolError,
                        "a close frame has a status code a client may not send",
                    ))
                } else if std::str::from_utf8(reason).is_err() {
                    Err(self.violation(
                        CloseCode::InvalidPayload,
                        "a close frame's reason is not valid UTF-8",
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<Result<Received, TransportError>> {
        loop {
            if self.closed {
                return Poll::Ready(Ok(if self.ended_without_close {
                    Received::Lost
                } else {
                    Received::Closed
                }));
            }
            let mut raw = [MaybeUninit::<u8>::uninit(); MAX_READ_CHUNK];
            let mut read = ReadBuf::uninit(&mut raw[..self.chunk]);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Pending => {
                    // Waiting for the client: hold no read buffer meanwhile.
                    if buf.is_empty() && buf.capacity() > 0 {
                        *buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                Poll::Ready(Ok(())) => {}
            }
            let bytes = read.filled();
            if bytes.is_empty() {
                // The client ended the stream without a Close frame.
                self.closed = true;
                self.ended_without_close = true;
                return Poll::Ready(Ok(Received::Lost));
            }
            let consumed = self.consume(bytes, buf)?;
            if consumed.activity {
                // Payload before a Close frame in the same read is handed over first;
                // the next call reports the close.
                return Poll::Ready(Ok(Received::Activity));
            }
        }
    }

    /// Read and discard what the client still sends, until it ends the stream: after the
    /// server's Close frame, so that closing the socket with unread bytes (which makes
    /// the kernel reset the connection) cannot destroy that frame before the client reads
    /// it. The caller bounds how long this may take.
    pub(crate) async fn drain(&mut self) {
        std::future::poll_fn(|cx| {
            loop {
                let mut raw = [MaybeUninit::<u8>::uninit(); MAX_READ_CHUNK];
                let mut read = ReadBuf::uninit(&mut raw);
                match ready!(Pin::new(&mut self.io).poll_read(cx, &mut read)) {
                    Ok(()) if !read.filled().is_empty() => {}
                    _ => return Poll::Ready(()),
                }
            }
        })
        .await;
    }
}

impl<R: AsyncRead + Unpin + Send> Incoming for FrameReader<R> {
    async fn read(&mut self, buf: &mut BytesMut) -> Result<Received, TransportError> {
        std::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }
}

impl FrameState {
    fn new_header() -> Self {
        Self::Header {
            header: [0; MAX_HEADER],
            have: 0,
        }
    }
}

/// The full length of a client frame header whose first bytes are `start` (at least 2
/// bytes of it are needed to know; fewer give 2).
fn header_len(start: &[u8]) -> usize {
    let Some(second) = start.get(1) else {
        return 2;
    };
    let length_bytes = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + length_bytes + 4
}

/// Whether a client may send `code` in a Close frame (RFC 6455, 7.4).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Unmask `bytes`, the payload bytes starting at `offset` in their frame.
fn unmask(bytes: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasking_in_pieces_matches_unmasking_at_once() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let original: Vec<u8> = (0..=255).collect();
        let mut whole = original.clone();
        unmask(&mut whole, mask, 0);
        for split in [1, 3, 5, 8, 13, 100] {
            let mut pieces = original.clone();
            let (first, second) = pieces.split_at_mut(split);
            unmask(first, mask, 0);
            unmask(second, mask, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
        // Unmasking twice gives the original back.
        unmask(&mut whole, mask, 0);
        assert_eq!(whole, original);
    }
}
