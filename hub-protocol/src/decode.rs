//! Turning a connection's incoming bytes into hub messages, one at a time.

use bytes::{Buf, Bytes, BytesMut};

use crate::message::HubMessage;
use crate::record::RecordScanner;
use crate::varint::{self, PrefixError};
use crate::{Protocol, json, msgpack};

/// The most a decoder reserves ahead for an announced but not yet received message.
const MAX_SPECULATIVE_RESERVE: usize = 64 * 1024;

/// Incoming bytes could not be decoded into a hub message.
///
/// [`can_continue`](Self::can_continue) tells whether the stream is still usable.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A message is longer than the decoder's maximum. Reported as soon as that is known
    /// (from the length prefix, or once more bytes than the maximum arrived without a
    /// separator), so the caller never has to buffer it.
    #[error("message exceeds the maximum size of {limit} bytes")]
    MessageTooLarge {
        /// The maximum message size the decoder was created with.
        limit: usize,
    },
    /// A MessagePack length prefix is longer than five bytes or announces more than 2 GiB.
    #[error("invalid message length prefix")]
    InvalidLengthPrefix,
    /// A complete frame arrived but is not a valid hub message: malformed JSON or
    /// MessagePack, a missing or mistyped field, a completion with both result and error...
    #[error("invalid {protocol} hub message: {reason}")]
    InvalidMessage {
        /// The protocol being decoded.
        protocol: Protocol,
        /// What is wrong, for logs and close messages.
        reason: String,
    },
    /// A well-formed message of a type this crate does not know, such as one added by a
    /// later protocol version. Clients are expected to ignore such messages.
    #[error("unknown hub message type {message_type}")]
    UnknownMessageType {
        /// The type number found in the message.
        message_type: i64,
    },
}

impl DecodeError {
    /// Whether the offending frame was consumed and decoding can go on with the next message.
    ///
    /// True for [`InvalidMessage`](Self::InvalidMessage) and
    /// [`UnknownMessageType`](Self::UnknownMessageType): the frame boundaries were intact.
    /// A client typically skips unknown types and continues; a server typically closes the
    /// connection on any error, as ASP.NET Core does. False for framing errors, after which
    /// the byte stream cannot be trusted and the buffer is left untouched.
    pub fn can_continue(&self) -> bool {
        matches!(
            self,
            DecodeError::InvalidMessage { .. } | DecodeError::UnknownMessageType { .. }
        )
    }
}

/// Splits one connection's incoming bytes into hub messages, after the handshake.
///
/// Append whatever the transport delivers to a [`BytesMut`] and call
/// [`decode`](Self::decode) until it returns `Ok(None)`; partial frames stay in the buffer
/// until the rest arrives, and several frames in one read come out one by one. Use one
/// decoder per buffer: it remembers how far it already searched.
///
/// ```
/// use bytes::BytesMut;
/// use hub_protocol::{Decoder, HubMessage, Protocol};
///
/// let mut decoder = Decoder::new(Protocol::Json, 32 * 1024);
/// let mut buf = BytesMut::from(&b"{\"type\":6}\x1e{\"type\":"[..]);
/// assert_eq!(decoder.decode(&mut buf)?, Some(HubMessage::Ping));
/// assert_eq!(decoder.decode(&mut buf)?, None); // the second message is incomplete
/// buf.extend_from_slice(b"6}\x1e");
/// assert_eq!(decoder.decode(&mut buf)?, Some(HubMessage::Ping));
/// # Ok::<(), hub_protocol::DecodeError>(())
/// ```
#[derive(Debug)]
pub struct Decoder {
    /// The protocol agreed in the handshake.
    protocol: Protocol,
    /// The largest message body accepted, not counting its separator or length prefix.
    max_message_size: usize,
    /// JSON only: how far the current partial message was already searched for `0x1E`.
    scanner: RecordScanner,
}

/// What a [`Decoder`] takes messages from: the connection's growing buffer, or a chunk
/// as the transport delivered it.
trait Input: Buf + std::ops::Deref<Target = [u8]> {
    /// The first `len` bytes, removed, without copying them.
    fn take_front(&mut self, len: usize) -> Bytes;

    /// Room for `additional` more bytes is about to be needed.
    fn reserve_hint(&mut self, additional: usize);
}

impl Input for BytesMut {
    fn take_front(&mut self, len: usize) -> Bytes {
        self.split_to(len).freeze()
    }

    fn reserve_hint(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl Input for Bytes {
    fn take_front(&mut self, len: usize) -> Bytes {
        self.split_to(len)
    }

    /// A chunk never grows: its rest is copied into a buffer, which reserves then.
    fn reserve_hint(&mut self, _additional: usize) {}
}

impl Decoder {
    /// A decoder for `protocol` that refuses message bodies over `max_message_size` bytes
    /// (not counting the `0x1E` separator or the length prefix). ASP.NET Core's default is
    /// 32 KiB.
    pub fn new(protocol: Protocol, max_message_size: usize) -> Self {
        Decoder {
            protocol,
            max_message_size,
            scanner: RecordScanner::default(),
        }
    }

    /// The protocol being decoded.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The largest message body accepted.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Removes the first complete message from `buf` and decodes it.
    ///
    /// Returns `Ok(None)` when `buf` does not hold a complete message yet. Argument values are
    /// not copied: they share the frame's memory with `buf`'s former contents.
    ///
    /// # Errors
    ///
    /// See [`DecodeError`]; [`DecodeError::can_continue`] says whether the frame was consumed
    /// and decoding may go on.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<HubMessage>, DecodeError> {
        self.decode_input(buf)
    }

    /// [`decode`](Self::decode) straight from a chunk a transport delivered, without copying
    /// it into a buffer first: what a client does with each WebSocket message while nothing
    /// is left over from the last one. When this returns `Ok(None)`, the rest of `chunk` (a
    /// partial message) is the start of the buffer to [`decode`](Self::decode) from next.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    pub fn decode_chunk(&mut self, chunk: &mut Bytes) -> Result<Option<HubMessage>, DecodeError> {
        self.decode_input(chunk)
    }

    fn decode_input(&mut self, buf: &mut impl Input) -> Result<Option<HubMessage>, DecodeError> {
        match self.protocol {
            Protocol::Json => self.decode_json(buf),
            Protocol::MessagePack => self.decode_msgpack(buf),
        }
    }

    fn decode_json(&mut self, buf: &mut impl Input) -> Result<Option<HubMessage>, DecodeError> {
        let limit = self.max_message_size;
        let Some(len) = self
            .scanner
            .next_record(buf, limit)
            .map_err(|_| DecodeError::MessageTooLarge { limit })?
        else {
            return Ok(None);
        };
        let frame = buf.take_front(len + 1).slice(..len);
        json::parse(&frame).map(Some)
    }

    fn decode_msgpack(&mut self, buf: &mut impl Input) -> Result<Option<HubMessage>, DecodeError> {
        let Some((len, prefix_len)) =
            varint::decode(buf).map_err(|PrefixError::Invalid| DecodeError::InvalidLengthPrefix)?
        else {
            return Ok(None);
        };
        if len > self.max_message_size {
            return Err(DecodeError::MessageTooLarge {
                limit: self.max_message_size,
            });
        }
        let needed = prefix_len + len;
        if buf.len() < needed {
            // The size is known and allowed: make room for the rest so the next reads fill it
            // without regrowing, but only up to a point, since a peer can announce a large
            // message and then send nothing.
            buf.reserve_hint((needed - buf.len()).min(MAX_SPECULATIVE_RESERVE));
            return Ok(None);
        }
        buf.advance(prefix_len);
        let frame = buf.take_front(len);
        if frame.is_empty() {
            return Err(DecodeError::InvalidMessage {
                protocol: Protocol::MessagePack,
                reason: "empty message".into(),
            });
        }
        msgpack::parse(&frame).map(Some)
    }
}
