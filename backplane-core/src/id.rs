//! Identifiers: which node a message came from, which connection it is for.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The identity of one server instance (node) on a backplane.
///
/// Every envelope carries the id of the node that published it, so receivers can drop
/// their own echoes, answer the right node, and track sequence numbers per origin.
/// Ids are 128 random bits, so two nodes never share one, not even across restarts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(u128);

impl NodeId {
    /// A fresh random node id from the operating system's random source.
    ///
    /// # Panics
    ///
    /// Panics if the operating system cannot provide random bytes, which on the platforms
    /// tokio supports means the process is in no state to serve anything.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system random source failed");
        Self(u128::from_be_bytes(bytes))
    }

    /// The id whose numeric value is `value` (for tests and storage round trips).
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// The numeric value of this id.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The 16 big-endian bytes of this id, as stored by backplanes that keep ids in binary.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id stored as 16 big-endian bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// The error returned when a string is not the 32 hexadecimal digits of a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: expected 32 hexadecimal digits")]
pub struct ParseNodeIdError(String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseNodeIdError(s.to_owned()));
        }
        u128::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| ParseNodeIdError(s.to_owned()))
    }
}

/// The public name of one client connection (SignalR's `connectionId`).
///
/// This is the id other code uses to address a connection (`send_connection`), never the
/// secret `connectionToken` a client reconnects with. Cloning is a reference-count
/// increment, because the same id sits in the connection registry, the group index and
/// the user index at once.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    /// A connection id with the given text.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({:?})", &*self.0)
    }
}

impl From<&str> for ConnectionId {
    fn from(value: &str) -> Self {
        Self(value.into())
    }
}

impl From<String> for ConnectionId {
    fn from(value: String) -> Self {
        Self(value.into())
    }
}

impl AsRef<str> for ConnectionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ConnectionId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for ConnectionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConnectionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_text_round_trip() {
        let id = NodeId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert_eq!(NodeId::from_bytes(id.to_bytes()), id);
    }

    #[test]
    fn node_id_rejects_bad_text() {
        assert!("xyz".parse::<NodeId>().is_err());
        assert!(
            "+0000000000000000000000000000001"
                .parse::<NodeId>()
                .is_err()
        );
        assert!("0".repeat(33).parse::<NodeId>().is_err());
    }

    #[test]
    fn random_node_ids_differ() {
        assert_ne!(NodeId::random(), NodeId::random());
    }
}
