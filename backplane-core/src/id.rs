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

/// The part of a [`NodeId`] that the connection ids a node issues carry, so any node can
/// tell which node owns a connection from its id alone.
///
/// It is the id's first 48 bits, written as the first 12 hexadecimal digits of the
/// node id's text, so an operator can match it against the node ids in logs. Two nodes
/// of one cluster share a tag with a chance of about n²/2⁴⁹ (one in 10¹² for 20 nodes);
/// a shared tag only costs speed (see [`ConnectionId::node_tag`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeTag(u64);

impl NodeTag {
    /// The tag of `node`.
    pub const fn of(node: NodeId) -> Self {
        Self((node.as_u128() >> 80) as u64)
    }
}

impl fmt::Display for NodeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

impl fmt::Debug for NodeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeTag({self})")
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

    /// The id `<unique>.<tag>`: `unique` (random text without a `.`, unique across the
    /// cluster) followed by the tag of the node the connection lives on.
    pub fn tagged(unique: &str, tag: NodeTag) -> Self {
        Self(format!("{unique}.{tag}").into())
    }

    /// The tag of the node this connection lives on, if its id carries one (ids built by
    /// [`ConnectionId::tagged`]; other ids, such as those an application chose itself,
    /// have none).
    ///
    /// Client results use it to fail a call to a connection that does not exist without
    /// waiting: the node named by the tag says at once that it has no such connection.
    /// A tag is a hint, never trusted for delivery: a connection is still found only in
    /// the registry of the node that has it.
    pub fn node_tag(&self) -> Option<NodeTag> {
        let (unique, tag) = self.0.rsplit_once('.')?;
        if unique.is_empty()
            || tag.len() != 12
            || !tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        u64::from_str_radix(tag, 16).ok().map(NodeTag)
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
    fn tagged_connection_ids_name_their_node() {
        let node = NodeId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let tag = NodeTag::of(node);
        assert_eq!(tag.to_string(), "0123456789ab");
        assert!(node.to_string().starts_with(&tag.to_string()));
        let id = ConnectionId::tagged("AbC-_xyz0123456789abcd", tag);
        assert_eq!(id.as_str(), "AbC-_xyz0123456789abcd.0123456789ab");
        assert_eq!(id.node_tag(), Some(tag));
        assert_ne!(NodeTag::of(NodeId::random()), NodeTag::of(NodeId::random()));
    }

    #[test]
    fn ids_without_a_well_formed_tag_have_none() {
        for id in [
            "AbC-_xyz0123456789abcd",
            ".0123456789ab",
            "a.0123456789AB",
            "a.0123456789a",
            "a.0123456789abc",
            "a.+123456789ab",
            "a.0123456789ab.",
            "",
        ] {
            assert_eq!(ConnectionId::from(id).node_tag(), None, "{id:?}");
        }
        assert!(ConnectionId::from("a.b.0123456789ab").node_tag().is_some());
    }

    #[test]
    fn random_node_ids_differ() {
        assert_ne!(NodeId::random(), NodeId::random());
    }
}
