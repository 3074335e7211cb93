//! Encoding hub messages straight into a caller's buffer.
//!
//! Every function appends one self-contained frame (a JSON message with its `0x1E`, or a
//! MessagePack message with its length prefix), so a server can encode a message once per
//! protocol and write the same bytes to every connection. On error nothing is appended.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::message::{CompletionResult, HubMessage};
use crate::value::{Arguments, EncodedValue};
use crate::{Headers, Protocol, json, msgpack};

/// A message could not be encoded. The buffer is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A value's `Serialize` implementation failed or produced something JSON cannot
    /// represent (such as a map with non-string keys).
    #[error("cannot serialize value as JSON: {0}")]
    Json(serde_json::Error),
    /// A value's `Serialize` implementation failed under MessagePack.
    #[error("cannot serialize value as MessagePack: {0}")]
    MessagePack(rmp_serde::encode::Error),
    /// Invocation arguments must serialize as a sequence: a tuple, array, slice or `Vec`
    /// (or `()` for none).
    #[error("invocation arguments must serialize as a sequence (tuple, array, slice or Vec)")]
    ArgumentsNotSequence,
    /// A MessagePack frame cannot exceed 2 GiB.
    #[error("message of {len} bytes exceeds the 2 GiB limit of a MessagePack frame")]
    FrameTooLarge {
        /// The size of the message body that was refused.
        len: usize,
    },
}

/// Appends an [`Invocation`](crate::Invocation) of `target` with `arguments`.
///
/// `arguments` must serialize as a sequence: a tuple such as `("alice", "hi")`, an array, a
/// slice or a `Vec`; `&()` means no arguments. With `invocation_id: None` the receiver sends
/// no completion.
///
/// # Errors
///
/// Fails when an argument cannot be serialized or `arguments` is not a sequence.
pub fn encode_invocation<A: Serialize + ?Sized>(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: Option<&str>,
    target: &str,
    arguments: &A,
) -> Result<(), EncodeError> {
    encode_outgoing(
        protocol,
        buf,
        &Outgoing::Invocation {
            headers: &NO_HEADERS,
            invocation_id,
            target,
            arguments: &TypedArguments(arguments),
            stream_ids: &[],
        },
    )
}

/// Appends a [`StreamInvocation`](crate::StreamInvocation) of `target` with `arguments`
/// (see [`encode_invocation`] for what `arguments` may be).
///
/// # Errors
///
/// Fails when an argument cannot be serialized or `arguments` is not a sequence.
pub fn encode_stream_invocation<A: Serialize + ?Sized>(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
    target: &str,
    arguments: &A,
) -> Result<(), EncodeError> {
    encode_outgoing(
        protocol,
        buf,
        &Outgoing::StreamInvocation {
            headers: &NO_HEADERS,
            invocation_id,
            target,
            arguments: &TypedArguments(arguments),
            stream_ids: &[],
        },
    )
}

/// Appends a [`StreamItem`](crate::StreamItem) carrying `item`.
///
/// # Errors
///
/// Fails when `item` cannot be serialized.
pub fn encode_stream_item<T: Serialize + ?Sized>(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
    item: &T,
) -> Result<(), EncodeError> {
    encode_outgoing(
        protocol,
        buf,
        &Outgoing::StreamItem {
            headers: &NO_HEADERS,
            invocation_id,
            item: &TypedValue(item),
        },
    )
}

/// Appends a [`Completion`](crate::Completion) returning `value` (which may be null, e.g.
/// `None::<T>`; that is still a value, unlike [`encode_completion_void`]).
///
/// For a result that is already an [`EncodedValue`] use [`encode_completion`]: it copies the
/// bytes, where passing the `EncodedValue` here would decode and re-encode it.
///
/// # Errors
///
/// Fails when `value` cannot be serialized.
pub fn encode_completion_value<T: Serialize + ?Sized>(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
    value: &T,
) -> Result<(), EncodeError> {
    write_completion(
        protocol,
        buf,
        invocation_id,
        OutgoingResult::Value(&TypedValue(value)),
    )
}

/// Appends a [`Completion`](crate::Completion) with any outcome: an already encoded value
/// (copied as it is when it is encoded in `protocol`, converted otherwise), void, or an error.
///
/// # Errors
///
/// Fails when the value cannot be converted to `protocol`, or the frame would exceed the
/// MessagePack size limit.
pub fn encode_completion(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
    result: &CompletionResult,
) -> Result<(), EncodeError> {
    write_completion(protocol, buf, invocation_id, OutgoingResult::from(result))
}

/// Appends a [`Completion`](crate::Completion) with no result: a void method returned, or a
/// stream ended.
///
/// # Errors
///
/// Fails only when the frame would exceed the MessagePack size limit.
pub fn encode_completion_void(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
) -> Result<(), EncodeError> {
    write_completion(protocol, buf, invocation_id, OutgoingResult::Void)
}

/// Appends a [`Completion`](crate::Completion) reporting that the invocation failed with
/// `error`.
///
/// # Errors
///
/// Fails only when the frame would exceed the MessagePack size limit.
pub fn encode_completion_error(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
    error: &str,
) -> Result<(), EncodeError> {
    write_completion(protocol, buf, invocation_id, OutgoingResult::Error(error))
}

/// Appends a [`CancelInvocation`](crate::CancelInvocation).
///
/// # Errors
///
/// Fails only when the frame would exceed the MessagePack size limit.
pub fn encode_cancel_invocation(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
) -> Result<(), EncodeError> {
    encode_outgoing(
        protocol,
        buf,
        &Outgoing::CancelInvocation {
            headers: &NO_HEADERS,
            invocation_id,
        },
    )
}

/// Appends a Ping (`{"type":6}` + `0x1E`, or exactly `0x91 0x06` after its length prefix).
pub fn encode_ping(protocol: Protocol, buf: &mut BytesMut) {
    match protocol {
        Protocol::Json => json::write_ping(buf),
        Protocol::MessagePack => msgpack::write_ping(buf),
    }
}

/// Appends a [`Close`](crate::Close), with the reason when the connection closes because of
/// an error.
///
/// # Errors
///
/// Fails only when the frame would exceed the MessagePack size limit.
pub fn encode_close(
    protocol: Protocol,
    buf: &mut BytesMut,
    error: Option<&str>,
    allow_reconnect: bool,
) -> Result<(), EncodeError> {
    encode_outgoing(
        protocol,
        buf,
        &Outgoing::Close {
            error,
            allow_reconnect,
        },
    )
}

/// Appends an [`Ack`](crate::Ack) of every trackable message up to `sequence_id`.
pub fn encode_ack(protocol: Protocol, buf: &mut BytesMut, sequence_id: u64) {
    write_sequence_message(protocol, buf, ACK_TYPE, sequence_id);
}

/// Appends a [`Sequence`](crate::Sequence) announcing the id of the next trackable message.
pub fn encode_sequence(protocol: Protocol, buf: &mut BytesMut, sequence_id: u64) {
    write_sequence_message(protocol, buf, SEQUENCE_TYPE, sequence_id);
}

/// Appends any message, for example one decoded earlier (a client relaying, a test
/// round-tripping).
///
/// Values encoded in `protocol` are copied as they are. Values encoded in the other protocol
/// are decoded and re-encoded; MessagePack binary becomes a JSON array of numbers, and
/// MessagePack extension values cannot be converted to JSON.
///
/// # Errors
///
/// Fails when a value cannot be converted to `protocol`, or a MessagePack frame would exceed
/// its size limit.
pub fn encode_message(
    protocol: Protocol,
    buf: &mut BytesMut,
    message: &HubMessage,
) -> Result<(), EncodeError> {
    let outgoing = match message {
        HubMessage::Invocation(invocation) => Outgoing::Invocation {
            headers: &invocation.headers,
            invocation_id: invocation.invocation_id.as_deref(),
            target: &invocation.target,
            arguments: &invocation.arguments,
            stream_ids: &invocation.stream_ids,
        },
        HubMessage::StreamInvocation(invocation) => Outgoing::StreamInvocation {
            headers: &invocation.headers,
            invocation_id: &invocation.invocation_id,
            target: &invocation.target,
            arguments: &invocation.arguments,
            stream_ids: &invocation.stream_ids,
        },
        HubMessage::StreamItem(item) => Outgoing::StreamItem {
            headers: &item.headers,
            invocation_id: &item.invocation_id,
            item: &item.item,
        },
        HubMessage::Completion(completion) => Outgoing::Completion {
            headers: &completion.headers,
            invocation_id: &completion.invocation_id,
            result: OutgoingResult::from(&completion.result),
        },
        HubMessage::CancelInvocation(cancel) => Outgoing::CancelInvocation {
            headers: &cancel.headers,
            invocation_id: &cancel.invocation_id,
        },
        HubMessage::Ping => {
            encode_ping(protocol, buf);
            return Ok(());
        }
        HubMessage::Close(close) => Outgoing::Close {
            error: close.error.as_deref(),
            allow_reconnect: close.allow_reconnect,
        },
        HubMessage::Ack(ack) => {
            encode_ack(protocol, buf, ack.sequence_id);
            return Ok(());
        }
        HubMessage::Sequence(sequence) => {
            encode_sequence(protocol, buf, sequence.sequence_id);
            return Ok(());
        }
    };
    encode_outgoing(protocol, buf, &outgoing)
}

/// The wire type of an Ack message.
pub(crate) const ACK_TYPE: u8 = 8;
/// The wire type of a Sequence message.
pub(crate) const SEQUENCE_TYPE: u8 = 9;

/// Shared by every message that has no headers to send.
static NO_HEADERS: Headers = Headers::new();

fn encode_outgoing(
    protocol: Protocol,
    buf: &mut BytesMut,
    message: &Outgoing<'_>,
) -> Result<(), EncodeError> {
    match protocol {
        Protocol::Json => json::write_message(buf, message),
        Protocol::MessagePack => msgpack::write_message(buf, message),
    }
}

/// A completion of `invocation_id` without headers, carrying `result`.
fn write_completion(
    protocol: Protocol,
    buf: &mut BytesMut,
    invocation_id: &str,
    result: OutgoingResult<'_>,
) -> Result<(), EncodeError> {
    encode_outgoing(
        protocol,
        buf,
        &Outgoing::Completion {
            headers: &NO_HEADERS,
            invocation_id,
            result,
        },
    )
}

fn write_sequence_message(protocol: Protocol, buf: &mut BytesMut, message_type: u8, id: u64) {
    match protocol {
        Protocol::Json => json::write_sequence_message(buf, message_type, id),
        Protocol::MessagePack => msgpack::write_sequence_message(buf, message_type, id),
    }
}

/// A message to encode, borrowing everything: one description feeds both protocol writers.
/// Ping, Ack and Sequence have no entry because they are written by infallible functions.
pub(crate) enum Outgoing<'a> {
    Invocation {
        headers: &'a Headers,
        invocation_id: Option<&'a str>,
        target: &'a str,
        arguments: &'a dyn WriteValue,
        stream_ids: &'a [String],
    },
    StreamInvocation {
        headers: &'a Headers,
        invocation_id: &'a str,
        target: &'a str,
        arguments: &'a dyn WriteValue,
        stream_ids: &'a [String],
    },
    StreamItem {
        headers: &'a Headers,
        invocation_id: &'a str,
        item: &'a dyn WriteValue,
    },
    Completion {
        headers: &'a Headers,
        invocation_id: &'a str,
        result: OutgoingResult<'a>,
    },
    CancelInvocation {
        headers: &'a Headers,
        invocation_id: &'a str,
    },
    Close {
        error: Option<&'a str>,
        allow_reconnect: bool,
    },
}

/// The outcome carried by an outgoing completion.
pub(crate) enum OutgoingResult<'a> {
    Void,
    Value(&'a dyn WriteValue),
    Error(&'a str),
}

impl<'a> From<&'a CompletionResult> for OutgoingResult<'a> {
    fn from(result: &'a CompletionResult) -> Self {
        match result {
            CompletionResult::Void => OutgoingResult::Void,
            CompletionResult::Value(value) => OutgoingResult::Value(value),
            CompletionResult::Error(error) => OutgoingResult::Error(error),
        }
    }
}

/// Something that can write itself as one value (or, for arguments, one array) in either
/// protocol: typed data through serde, or values that are already encoded.
pub(crate) trait WriteValue {
    fn write(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError>;
}

/// A typed value, serialized with serde.
pub(crate) struct TypedValue<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> WriteValue for TypedValue<'_, T> {
    fn write(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match protocol {
            Protocol::Json => {
                let mut serializer = serde_json::Serializer::new(buf.writer());
                self.0.serialize(&mut serializer).map_err(EncodeError::Json)
            }
            Protocol::MessagePack => {
                // Structs as maps with field names: JavaScript clients decode maps into
                // objects, arrays would lose the field names. Human-readable mode sends
                // UUIDs, addresses and the like as strings, as JSON does.
                let mut serializer = rmp_serde::Serializer::new(buf.writer())
                    .with_struct_map()
                    .with_human_readable();
                self.0
                    .serialize(&mut serializer)
                    .map_err(EncodeError::MessagePack)
            }
        }
    }
}

/// Typed invocation arguments: must come out as an array; null (from `()`) means none.
pub(crate) struct TypedArguments<'a, T: ?Sized>(pub(crate) &'a T);

impl<T: Serialize + ?Sized> WriteValue for TypedArguments<'_, T> {
    fn write(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let start = buf.len();
        TypedValue(self.0).write(protocol, buf)?;
        let written = &buf[start..];
        let is_array = match protocol {
            Protocol::Json => written.first() == Some(&b'['),
            Protocol::MessagePack => msgpack::is_array_marker(written.first().copied()),
        };
        if is_array {
            return Ok(());
        }
        let is_null = match protocol {
            Protocol::Json => written == b"null",
            Protocol::MessagePack => written == [msgpack::NIL],
        };
        buf.truncate(start);
        if is_null {
            match protocol {
                Protocol::Json => buf.put_slice(b"[]"),
                Protocol::MessagePack => buf.put_u8(msgpack::EMPTY_ARRAY),
            }
            Ok(())
        } else {
            Err(EncodeError::ArgumentsNotSequence)
        }
    }
}

impl WriteValue for EncodedValue {
    fn write(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if self.protocol() == protocol {
            buf.put_slice(self.as_bytes());
            Ok(())
        } else {
            TypedValue(self).write(protocol, buf)
        }
    }
}

impl WriteValue for Arguments {
    fn write(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if self.protocol() != protocol {
            return TypedValue(self).write(protocol, buf);
        }
        match protocol {
            Protocol::Json => {
                buf.put_u8(b'[');
                for index in 0..self.len() {
                    if index > 0 {
                        buf.put_u8(b',');
                    }
                    buf.put_slice(self.slice(index));
                }
                buf.put_u8(b']');
            }
            Protocol::MessagePack => {
                msgpack::write_array_len(buf, self.len());
                for index in 0..self.len() {
                    buf.put_slice(self.slice(index));
                }
            }
        }
        Ok(())
    }
}
