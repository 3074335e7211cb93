//! The ASP.NET Core SignalR hub protocol, for servers and clients.
//!
//! A SignalR connection starts with a handshake in which the client picks a [`Protocol`]
//! (JSON or MessagePack); after it, both sides exchange [`HubMessage`]s encoded in that
//! protocol. This crate implements both ends of that exchange without doing any I/O:
//!
//! - [`HandshakeDecoder`] reads a [`HandshakeRequest`] (server) or [`HandshakeResponse`]
//!   (client) from the front of a buffer, as bytes arrive.
//! - [`Decoder`] splits the following bytes into hub messages, one at a time, coping with
//!   partial and batched frames and refusing oversized messages before buffering them.
//! - The `encode_*` functions append one self-contained frame to a [`BytesMut`] straight from
//!   borrowed, serde-serializable data, so a message sent to many connections is encoded
//!   once per protocol.
//! - Application values (invocation [`Arguments`], stream items, completion results) stay
//!   [`EncodedValue`]s, slices of the received frame, until the receiver deserializes them
//!   into the types it expects.
//!
//! # Layout
//!
//! - `protocol`: [`Protocol`] and [`TransferFormat`].
//! - `handshake`: the handshake messages and their decoder.
//! - `message`: the decoded hub message types.
//! - `value`: [`EncodedValue`] and [`Arguments`], lazily deserialized.
//! - `decode`: [`Decoder`] and [`DecodeError`]; `json` and `msgpack` hold each format's
//!   parser and writer, `varint` the MessagePack length prefix, `record` the `0x1E` scanner.
//! - `encode`: the `encode_*` functions and [`EncodeError`].
//! - `replay`: stateful reconnect's books (what was sent and not acknowledged, what was
//!   received), kept alike by servers and clients.
//!
//! # Example
//!
//! A server's view of a MessagePack connection:
//!
//! ```
//! use bytes::BytesMut;
//! use hub_protocol::{
//!     Decoder, HandshakeDecoder, HandshakeRequest, HandshakeResponse, HubMessage, Protocol,
//!     encode_completion_value, encode_invocation,
//! };
//!
//! // What a client sends: the handshake, then an invocation of Add(40, 2), in one write.
//! let mut incoming = BytesMut::new();
//! HandshakeRequest::new(Protocol::MessagePack).encode(&mut incoming);
//! encode_invocation(Protocol::MessagePack, &mut incoming, Some("7"), "Add", &(40, 2))?;
//!
//! // The server reads the handshake; the binary frame stays in the buffer.
//! let request = HandshakeDecoder::new(32 * 1024)
//!     .decode_request(&mut incoming)?
//!     .expect("handshake complete");
//! let protocol = request.resolve_protocol()?;
//! let mut outgoing = BytesMut::new();
//! HandshakeResponse::success().encode(&mut outgoing);
//!
//! // Then decodes hub messages and binds arguments to typed parameters.
//! let mut decoder = Decoder::new(protocol, 32 * 1024);
//! let Some(HubMessage::Invocation(invocation)) = decoder.decode(&mut incoming)? else {
//!     panic!("expected an invocation");
//! };
//! assert_eq!(invocation.target, "Add");
//! invocation.arguments.check_count(2)?;
//! let x: i64 = invocation.arguments.deserialize(0)?;
//! let y: f64 = invocation.arguments.deserialize(1)?;
//! assert!(decoder.decode(&mut incoming)?.is_none());
//!
//! // And answers with the result, encoded straight into the outgoing buffer.
//! let id = invocation.invocation_id.as_deref().expect("the caller wants a result");
//! encode_completion_value(protocol, &mut outgoing, id, &(x + y as i64))?;
//! assert_eq!(&outgoing[..3], b"{}\x1e");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Unknown message types
//!
//! The protocol lets later versions add message types and expects receivers to ignore the
//! ones they do not know. [`Decoder::decode`] reports such a message as
//! [`DecodeError::UnknownMessageType`] after consuming its frame, and
//! [`DecodeError::can_continue`] returns true: a client logs and keeps decoding, a server may
//! do the same or close the connection.
//!
//! # Compatibility notes
//!
//! - Decoding is lenient where the official implementations are: unknown JSON properties and
//!   extra MessagePack array elements are ignored, an empty invocation id means none, and
//!   MessagePack integers of any width bind to any Rust number type they fit.
//! - User values are serialized with serde: MessagePack structs as maps with field names
//!   (what `@microsoft/signalr-protocol-msgpack` turns into JavaScript objects), types with a
//!   human-readable form (UUIDs, addresses, dates) as strings in both protocols, and `Vec<u8>`
//!   as an array of numbers unless marked with `serde_bytes`.

#![forbid(unsafe_code)]

mod decode;
mod encode;
mod handshake;
mod json;
mod message;
mod msgpack;
mod protocol;
mod record;
pub mod replay;
mod transcode;
mod value;
pub mod varint;

pub use bytes::{Bytes, BytesMut};

pub use decode::{DecodeError, Decoder};
pub use encode::{
    EncodeError, encode_ack, encode_cancel_invocation, encode_close, encode_completion,
    encode_completion_error, encode_completion_value, encode_completion_void, encode_invocation,
    encode_message, encode_ping, encode_sequence, encode_stream_invocation, encode_stream_item,
};
pub use handshake::{HandshakeDecoder, HandshakeError, HandshakeRequest, HandshakeResponse};
pub use message::{
    Ack, CancelInvocation, Close, Completion, CompletionResult, Headers, HubMessage, Invocation,
    Sequence, StreamInvocation, StreamItem,
};
pub use protocol::{Protocol, TransferFormat};
pub use value::{ArgumentError, Arguments, EncodedValue, ValueError};
