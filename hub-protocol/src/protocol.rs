//! The two hub protocols and what a connection needs to know about them.

use std::fmt;

/// A SignalR hub protocol: how hub messages are encoded on one connection.
///
/// The client names the protocol in its handshake and both sides use it for the rest of the
/// connection. The handshake itself is always JSON, whatever the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// JSON text, each message terminated by the record separator `0x1E`.
    Json,
    /// MessagePack, each message prefixed by its length as a VarInt.
    MessagePack,
}

/// How a protocol's frames travel over a transport: as text or as binary.
///
/// Negotiate responses list the formats a transport accepts, and a WebSocket transport sends
/// text or binary frames depending on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferFormat {
    /// UTF-8 text (WebSocket text frames; the only format Server-Sent Events can carry).
    Text,
    /// Arbitrary bytes (WebSocket binary frames).
    Binary,
}

impl TransferFormat {
    /// The name used in negotiate responses: `"Text"` or `"Binary"`.
    pub const fn name(self) -> &'static str {
        match self {
            TransferFormat::Text => "Text",
            TransferFormat::Binary => "Binary",
        }
    }
}

impl fmt::Display for TransferFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Protocol {
    /// Every protocol this crate implements, in the order a server would list them.
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

    /// The oldest protocol version accepted in a handshake.
    ///
    /// 0, because ASP.NET Core accepts every version up to its own (`IsVersionSupported` is
    /// `version <= Version` in its JSON and MessagePack protocols) and clients send 0: the
    /// Python `signalrcore` 1.0.2 puts the negotiate version in its handshake, so it sends
    /// `"version":0` after a version 0 negotiate (and after skipping negotiate), unless the
    /// application hands it a protocol object, which sends 1. ASP.NET Core reads the version
    /// as a signed 32-bit number and so accepts negative ones too; here a negative version is
    /// an invalid handshake (no client is known to send one).
    pub const MIN_VERSION: u32 = 0;

    /// The newest protocol version accepted in a handshake, and the one [`HandshakeRequest::new`]
    /// sends. Current official clients (`@microsoft/signalr` 10.x, .NET 8 and later) send 2
    /// for both protocols, older ones and the Java client 1, `signalrcore` 0 or 1. This crate encodes and decodes every message type, including the
    /// stateful-reconnect Ack and Sequence, the same way at either version.
    ///
    /// [`HandshakeRequest::new`]: crate::HandshakeRequest::new
    pub const VERSION: u32 = 2;

    /// The name a client puts in its handshake: `"json"` or `"messagepack"`.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::MessagePack => "messagepack",
        }
    }

    /// Looks a protocol up by its handshake name.
    ///
    /// The comparison ignores ASCII case, as ASP.NET Core's protocol resolver does.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|protocol| protocol.name().eq_ignore_ascii_case(name))
    }

    /// The transfer format the protocol's frames need from the transport.
    pub const fn transfer_format(self) -> TransferFormat {
        match self {
            Protocol::Json => TransferFormat::Text,
            Protocol::MessagePack => TransferFormat::Binary,
        }
    }

    /// Whether a handshake asking for `version` of this protocol can be accepted
    /// ([`MIN_VERSION`](Self::MIN_VERSION) to [`VERSION`](Self::VERSION)).
    pub const fn supports_version(self, version: u32) -> bool {
        // MIN_VERSION is 0, the smallest u32, so only the upper bound can refuse: ASP.NET
        // Core's rule (`version <= Version`).
        version <= Self::VERSION
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ignore_case() {
        for protocol in Protocol::ALL {
            assert_eq!(Protocol::from_name(protocol.name()), Some(protocol));
        }
        assert_eq!(
            Protocol::from_name("MessagePack"),
            Some(Protocol::MessagePack)
        );
        assert_eq!(Protocol::from_name("JSON"), Some(Protocol::Json));
        assert_eq!(Protocol::from_name("blazorpack"), None);
        assert_eq!(Protocol::from_name(""), None);
    }

    #[test]
    fn transfer_formats_and_versions() {
        assert_eq!(Protocol::Json.transfer_format(), TransferFormat::Text);
        assert_eq!(
            Protocol::MessagePack.transfer_format(),
            TransferFormat::Binary
        );
        assert_eq!(TransferFormat::Binary.name(), "Binary");
        for protocol in Protocol::ALL {
            // 0 from signalrcore, 1 from older and Java clients, 2 from current ones.
            assert!(protocol.supports_version(0));
            assert!(protocol.supports_version(1));
            assert!(protocol.supports_version(2));
            assert!(!protocol.supports_version(3));
        }
    }
}
