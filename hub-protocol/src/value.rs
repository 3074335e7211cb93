//! Application values kept in their wire encoding until the receiver knows their type.
//!
//! A hub method's parameter types are only known once its target has been looked up, so the
//! decoder does not interpret arguments, stream items or results: it records where each one
//! starts and ends inside the received frame (no copy) and deserializes on request.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::encode::{EncodeError, TypedArguments, TypedValue, WriteValue};
use crate::{Protocol, json, msgpack};

/// One value (an argument, a stream item or a completion result) still in its wire encoding.
///
/// Cloning is cheap: the bytes are shared with the frame they were decoded from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncodedValue {
    /// How `bytes` is encoded.
    protocol: Protocol,
    /// Exactly one complete JSON or MessagePack value.
    bytes: Bytes,
}

impl EncodedValue {
    /// Wraps bytes known to hold exactly one complete value.
    pub(crate) fn from_parts(protocol: Protocol, bytes: Bytes) -> Self {
        EncodedValue { protocol, bytes }
    }

    /// Serializes `value` in `protocol`, e.g. to build messages in tests or to keep a result
    /// for later.
    ///
    /// # Errors
    ///
    /// Fails when `value`'s `Serialize` implementation fails or produces something the format
    /// cannot represent (for example a JSON map with non-string keys).
    pub fn encode<T: Serialize + ?Sized>(
        protocol: Protocol,
        value: &T,
    ) -> Result<Self, EncodeError> {
        let mut buf = BytesMut::new();
        TypedValue(value).write(protocol, &mut buf)?;
        Ok(EncodedValue::from_parts(protocol, buf.freeze()))
    }

    /// Wraps `bytes` received from elsewhere (another server relaying a client's result)
    /// as one value in `protocol`, checking that they hold exactly one complete value (and,
    /// for JSON, that they are UTF-8: a JSON value may be written as it is into a text
    /// frame).
    ///
    /// # Errors
    ///
    /// Fails when `bytes` is not one well-formed JSON or MessagePack value.
    pub fn from_wire(protocol: Protocol, bytes: Bytes) -> Result<Self, ValueError> {
        if protocol == Protocol::Json && std::str::from_utf8(&bytes).is_err() {
            // serde_json skips the strings of a value it ignores without checking them.
            return Err(ValueError::Json(serde::de::Error::custom(
                "the JSON value is not UTF-8",
            )));
        }
        let value = EncodedValue::from_parts(protocol, bytes);
        value.deserialize::<serde::de::IgnoredAny>()?;
        if protocol == Protocol::MessagePack
            && msgpack::value_len(&value.bytes) != Some(value.bytes.len())
        {
            // MessagePack has no terminator: a prefix can be one complete value.
            return Err(ValueError::MessagePack(rmp_serde::decode::Error::Syntax(
                "not exactly one MessagePack value".to_owned(),
            )));
        }
        Ok(value)
    }

    /// The protocol the value is encoded in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The encoded bytes: JSON text or one MessagePack value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the value is JSON `null` or MessagePack `nil`.
    pub fn is_null(&self) -> bool {
        match self.protocol {
            Protocol::Json => &self.bytes[..] == b"null",
            Protocol::MessagePack => self.bytes[..] == [msgpack::NIL],
        }
    }

    /// Deserializes the value into `T`.
    ///
    /// `T` may borrow from the value (`&str`, `Cow<str>`), but a JSON string containing
    /// escapes cannot be borrowed; own the data (`String`) when in doubt.
    ///
    /// MessagePack integers are accepted by any Rust integer or float type they fit in,
    /// whatever width the sender chose (JavaScript clients send the smallest encoding).
    /// Structs are accepted as maps with field names (what JavaScript clients send) or as
    /// arrays.
    ///
    /// # Errors
    ///
    /// Fails when the value does not match `T`; the error says what was expected and found.
    pub fn deserialize<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ValueError> {
        deserialize_slice(self.protocol, &self.bytes)
    }
}

impl fmt::Debug for EncodedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_encoded(self.protocol, &self.bytes, f)
    }
}

/// Shows JSON as text and MessagePack as hex, which is what one wants in a test failure.
fn debug_encoded(protocol: Protocol, bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match protocol {
        Protocol::Json => write!(f, "json:{}", String::from_utf8_lossy(bytes)),
        Protocol::MessagePack => {
            f.write_str("messagepack:")?;
            for byte in bytes {
                write!(f, "{byte:02x}")?;
            }
            Ok(())
        }
    }
}

/// How deeply arrays and maps may nest in a MessagePack value being deserialized: the limit
/// serde_json applies to JSON, so hostile nesting fails the same way in both protocols
/// instead of exhausting the stack.
const MAX_NESTING: usize = 128;

/// Deserializes one complete encoded value; the single place both formats' settings live.
pub(crate) fn deserialize_slice<'a, T: Deserialize<'a>>(
    protocol: Protocol,
    bytes: &'a [u8],
) -> Result<T, ValueError> {
    match protocol {
        Protocol::Json => serde_json::from_slice(bytes).map_err(ValueError::Json),
        Protocol::MessagePack => {
            // Human-readable mode mirrors the encoder: types such as UUIDs or IP addresses
            // travel as strings, which is what JavaScript and .NET peers produce and expect.
            let mut deserializer =
                rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
            deserializer.set_max_depth(MAX_NESTING);
            T::deserialize(&mut deserializer)
                .map_err(|error| ValueError::MessagePack(explain::<T>(error)))
        }
    }
}

/// rmp-serde reports a value of the wrong kind as just a marker ("wrong msgpack marker
/// FixStr(5)"); say what was found and what was being read instead.
fn explain<T>(error: rmp_serde::decode::Error) -> rmp_serde::decode::Error {
    match error {
        rmp_serde::decode::Error::TypeMismatch(marker) => {
            rmp_serde::decode::Error::Syntax(format!(
                "invalid type: found {} while deserializing `{}`",
                msgpack::describe_marker(marker.to_u8()),
                std::any::type_name::<T>()
            ))
        }
        other => other,
    }
}

/// The arguments of an invocation, each still in its wire encoding.
///
/// ```
/// use hub_protocol::{Arguments, Protocol};
///
/// let args = Arguments::encode(Protocol::MessagePack, &("alice", 42u8))?;
/// assert_eq!(args.len(), 2);
/// let name: String = args.deserialize(0)?;
/// let count: i64 = args.deserialize(1)?; // a one-byte MessagePack integer fits an i64
/// assert_eq!((name.as_str(), count), ("alice", 42));
/// assert!(args.deserialize::<u32>(0).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Arguments {
    /// How the arguments are encoded.
    protocol: Protocol,
    /// The frame (or buffer) the arguments were found in; shared, never copied.
    frame: Bytes,
    /// Where each argument starts and ends inside `frame`.
    spans: Vec<(usize, usize)>,
}

impl Arguments {
    /// Wraps the argument spans found inside `frame`.
    pub(crate) fn from_parts(protocol: Protocol, frame: Bytes, spans: Vec<(usize, usize)>) -> Self {
        Arguments {
            protocol,
            frame,
            spans,
        }
    }

    /// No arguments.
    pub fn empty(protocol: Protocol) -> Self {
        Arguments::from_parts(protocol, Bytes::new(), Vec::new())
    }

    /// Serializes `arguments` (a tuple, array, slice or `Vec`; `()` means none) in `protocol`.
    ///
    /// # Errors
    ///
    /// Fails when serialization fails or `arguments` does not serialize as a sequence.
    pub fn encode<A: Serialize + ?Sized>(
        protocol: Protocol,
        arguments: &A,
    ) -> Result<Self, EncodeError> {
        let mut buf = BytesMut::new();
        TypedArguments(arguments).write(protocol, &mut buf)?;
        let frame = buf.freeze();
        let spans = match protocol {
            Protocol::Json => json::array_spans(&frame),
            Protocol::MessagePack => msgpack::array_spans(&frame),
        };
        // Our own encoder produced the array, so it always splits; an error here is a bug in
        // a user `Serialize` impl that wrote malformed output (possible for JSON via raw values).
        let spans = spans.map_err(|_| EncodeError::ArgumentsNotSequence)?;
        Ok(Arguments::from_parts(protocol, frame, spans))
    }

    /// The protocol the arguments are encoded in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// How many arguments the caller sent.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the caller sent no arguments.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The encoded argument at `index` (zero-based), if there is one.
    pub fn get(&self, index: usize) -> Option<EncodedValue> {
        let &(start, end) = self.spans.get(index)?;
        Some(EncodedValue::from_parts(
            self.protocol,
            self.frame.slice(start..end),
        ))
    }

    /// Every argument in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EncodedValue> + '_ {
        self.spans.iter().map(|&(start, end)| {
            EncodedValue::from_parts(self.protocol, self.frame.slice(start..end))
        })
    }

    /// Checks that exactly `expected` arguments were sent, before binding them one by one.
    ///
    /// # Errors
    ///
    /// [`ArgumentError::Count`] when the count differs.
    pub fn check_count(&self, expected: usize) -> Result<(), ArgumentError> {
        if self.len() == expected {
            Ok(())
        } else {
            Err(ArgumentError::Count {
                expected,
                actual: self.len(),
            })
        }
    }

    /// Deserializes the argument at `index` (zero-based) into `T`.
    ///
    /// See [`EncodedValue::deserialize`] for the conversions accepted.
    ///
    /// # Errors
    ///
    /// [`ArgumentError::Missing`] when there is no such argument, [`ArgumentError::Invalid`]
    /// when it does not match `T`.
    pub fn deserialize<'a, T: Deserialize<'a>>(&'a self, index: usize) -> Result<T, ArgumentError> {
        let &(start, end) = self.spans.get(index).ok_or(ArgumentError::Missing {
            index,
            count: self.len(),
        })?;
        deserialize_slice(self.protocol, &self.frame[start..end])
            .map_err(|error| ArgumentError::Invalid { index, error })
    }

    /// The bytes of the argument at `index`; `index` must be in range.
    pub(crate) fn slice(&self, index: usize) -> &[u8] {
        let (start, end) = self.spans[index];
        &self.frame[start..end]
    }
}

impl PartialEq for Arguments {
    fn eq(&self, other: &Self) -> bool {
        self.protocol == other.protocol
            && self.len() == other.len()
            && (0..self.len()).all(|index| self.slice(index) == other.slice(index))
    }
}

impl fmt::Debug for Arguments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A value did not deserialize into the requested type.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// The JSON value does not match the type.
    #[error("{0}")]
    Json(serde_json::Error),
    /// The MessagePack value does not match the type.
    #[error("{0}")]
    MessagePack(rmp_serde::decode::Error),
}

/// An invocation's arguments do not fit the parameters of the method it targets.
///
/// The `Display` text names the argument and the reason, ready to be sent back to the caller
/// in a completion error.
#[derive(Debug, thiserror::Error)]
pub enum ArgumentError {
    /// The caller sent a different number of arguments than the method takes.
    #[error("invocation provides {actual} argument(s) but target expects {expected}")]
    Count {
        /// How many parameters the method takes.
        expected: usize,
        /// How many arguments the caller sent.
        actual: usize,
    },
    /// An argument was asked for that the caller did not send.
    #[error("no argument at index {index}: invocation provides {count} argument(s)")]
    Missing {
        /// The zero-based index asked for.
        index: usize,
        /// How many arguments the caller sent.
        count: usize,
    },
    /// An argument does not match its parameter's type.
    #[error("argument at index {index} is invalid: {error}")]
    Invalid {
        /// The zero-based index of the argument.
        index: usize,
        /// What did not match.
        error: ValueError,
    },
}
