//! A hub message serialized once per hub protocol.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use hub_protocol::Protocol;

/// One hub message, already encoded as a complete frame for each hub protocol in use.
///
/// This is what travels to connections and across the backplane: a message sent to a
/// group of 10,000 is encoded once for JSON and once for MessagePack, then every
/// connection gets a reference-counted handle to the bytes of its own protocol. Nothing
/// downstream re-serializes per connection.
///
/// Its JSON frame, if any, is always UTF-8: JSON travels in WebSocket text messages and
/// Server-Sent Events, which can carry nothing else (a browser closes a WebSocket that
/// sends other text). A JSON frame that is not UTF-8, whether [set](Self::set) here or
/// decoded from another node's envelope (forged or corrupted backplane traffic), is
/// dropped once, with a warning, and the message goes on without its JSON encoding:
/// connections using JSON are not sent it, connections using MessagePack still are. So a
/// fan-out checks the text once, not once per connection it goes to.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WireMessage")]
pub struct SerializedMessage {
    /// The complete JSON frame (including the trailing 0x1E), if encoded; UTF-8.
    json: Option<Bytes>,
    /// The complete MessagePack frame (including its length prefix), if encoded.
    messagepack: Option<Bytes>,
}

/// [`SerializedMessage`] as decoded, before its JSON frame is checked (same fields, in the
/// same order, so the encoding is the same).
#[derive(Deserialize)]
struct WireMessage {
    json: Option<Bytes>,
    messagepack: Option<Bytes>,
}

impl From<WireMessage> for SerializedMessage {
    fn from(wire: WireMessage) -> Self {
        let mut message = Self {
            json: None,
            messagepack: wire.messagepack,
        };
        if let Some(json) = wire.json {
            message.set(Protocol::Json, json);
        }
        message
    }
}

impl SerializedMessage {
    /// A message with no encodings yet; add them with [`SerializedMessage::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// This message with `frame` as its encoding for `protocol`.
    #[must_use]
    pub fn with(mut self, protocol: Protocol, frame: impl Into<Bytes>) -> Self {
        self.set(protocol, frame);
        self
    }

    /// Set (or replace) the encoding for `protocol`. A JSON frame that is not UTF-8 is not
    /// kept (a warning says so), and removes any JSON encoding set before.
    pub fn set(&mut self, protocol: Protocol, frame: impl Into<Bytes>) {
        let frame = frame.into();
        match protocol {
            Protocol::Json => {
                self.json = if std::str::from_utf8(&frame).is_ok() {
                    Some(frame)
                } else {
                    tracing::warn!(
                        bytes = frame.len(),
                        "dropping a JSON frame that is not UTF-8: connections using JSON will not be sent this message"
                    );
                    None
                };
            }
            Protocol::MessagePack => self.messagepack = Some(frame),
        }
    }

    /// The encoding for `protocol`, if the sender produced one.
    pub fn get(&self, protocol: Protocol) -> Option<&Bytes> {
        match protocol {
            Protocol::Json => self.json.as_ref(),
            Protocol::MessagePack => self.messagepack.as_ref(),
        }
    }

    /// The protocols this message is encoded for.
    pub fn protocols(&self) -> impl Iterator<Item = Protocol> + '_ {
        Protocol::ALL.into_iter().filter(|p| self.get(*p).is_some())
    }

    /// Total size of all encodings in bytes.
    pub fn encoded_len(&self) -> usize {
        Protocol::ALL
            .into_iter()
            .filter_map(|p| self.get(p))
            .map(Bytes::len)
            .sum()
    }
}

impl std::fmt::Debug for SerializedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Payloads can be megabytes; show sizes, not contents.
        f.debug_struct("SerializedMessage")
            .field("json_len", &self.json.as_ref().map(Bytes::len))
            .field(
                "messagepack_len",
                &self.messagepack.as_ref().map(Bytes::len),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_encoding_per_protocol() {
        let message = SerializedMessage::new()
            .with(Protocol::Json, &b"{}\x1e"[..])
            .with(Protocol::MessagePack, vec![1u8, 0x90]);
        assert_eq!(message.get(Protocol::Json).unwrap().as_ref(), b"{}\x1e");
        assert_eq!(
            message.get(Protocol::MessagePack).unwrap().as_ref(),
            &[1, 0x90]
        );
        assert_eq!(message.encoded_len(), 5);
        assert_eq!(message.protocols().count(), 2);
        let json_only = SerializedMessage::new().with(Protocol::Json, &b"x"[..]);
        assert_eq!(json_only.get(Protocol::MessagePack), None);
        assert_eq!(
            json_only.protocols().collect::<Vec<_>>(),
            vec![Protocol::Json]
        );
    }

    #[test]
    fn a_json_frame_that_is_not_utf8_is_not_kept() {
        let message = SerializedMessage::new()
            .with(Protocol::Json, &b"{\"type\":1}\x1e"[..])
            .with(Protocol::MessagePack, vec![1u8, 0x90])
            .with(Protocol::Json, &b"{\"a\":\"\xff\"}\x1e"[..]);
        assert_eq!(message.get(Protocol::Json), None);
        assert_eq!(
            message.get(Protocol::MessagePack).unwrap().as_ref(),
            &[1, 0x90]
        );
        assert_eq!(
            message.protocols().collect::<Vec<_>>(),
            vec![Protocol::MessagePack]
        );
    }

    #[test]
    fn a_decoded_json_frame_that_is_not_utf8_is_dropped_and_the_rest_kept() {
        let sent = SerializedMessage::new()
            .with(Protocol::Json, &b"{\"a\":\"\xc3\xa9\"}\x1e"[..])
            .with(Protocol::MessagePack, vec![1u8, 0x90]);
        let wire = postcard::to_allocvec(&sent).unwrap();
        assert_eq!(
            postcard::from_bytes::<SerializedMessage>(&wire).unwrap(),
            sent
        );
        // Forge the wire bytes: the 2-byte character becomes a lone continuation byte
        // and 0xff, neither of which UTF-8 allows.
        let at = wire
            .windows(2)
            .position(|pair| pair == b"\xc3\xa9")
            .unwrap();
        let mut forged = wire;
        forged[at] = 0xa9;
        forged[at + 1] = 0xff;
        let received: SerializedMessage = postcard::from_bytes(&forged).unwrap();
        assert_eq!(received.get(Protocol::Json), None);
        assert_eq!(
            received.get(Protocol::MessagePack).unwrap().as_ref(),
            &[1, 0x90]
        );
    }
}
