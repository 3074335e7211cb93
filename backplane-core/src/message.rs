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
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerializedMessage {
    /// The complete JSON frame (including the trailing 0x1E), if encoded.
    json: Option<Bytes>,
    /// The complete MessagePack frame (including its length prefix), if encoded.
    messagepack: Option<Bytes>,
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

    /// Set (or replace) the encoding for `protocol`.
    pub fn set(&mut self, protocol: Protocol, frame: impl Into<Bytes>) {
        let slot = match protocol {
            Protocol::Json => &mut self.json,
            Protocol::MessagePack => &mut self.messagepack,
        };
        *slot = Some(frame.into());
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
}
