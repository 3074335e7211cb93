//! The unit the backplane moves between nodes, and its binary codec.
//!
//! # Wire format
//!
//! An encoded envelope is one format byte ([`Envelope::FORMAT_VERSION`]) followed by the
//! [postcard] encoding of [`Envelope`]. postcard was chosen over bincode because bincode
//! 3.0.0 is a placeholder that refuses to compile and RUSTSEC-2025-0141 marks every bincode
//! version unmaintained; postcard is serde-based, maintained and compact (variable-length
//! integers, no field names).
//!
//! New [`EnvelopeKind`] variants are added at the end, so a newer node can always read an
//! older node's envelopes; an older node reading a newer kind gets a [`CodecError`] and
//! skips that envelope. Incompatible layout changes bump the format byte.

use serde::{Deserialize, Serialize};

use crate::id::{ConnectionId, NodeId};
use crate::message::SerializedMessage;

/// One message between nodes: who sent it, in what order, for which hub, and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The node that published this envelope; receivers drop envelopes from themselves.
    pub origin: NodeId,
    /// Position of this envelope among everything `origin` published for `hub`, starting
    /// at 1 with no holes, so receivers can detect a missed envelope exactly.
    pub seq: u64,
    /// The hub the envelope belongs to; a node only receives envelopes for hubs it
    /// subscribed to.
    pub hub: String,
    /// `Some(node)` when the envelope is meant for one node only (an acknowledgement);
    /// every other node ignores it.
    pub destination: Option<NodeId>,
    /// What the envelope asks the receiving node to do.
    pub kind: EnvelopeKind,
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EnvelopeKind {
    /// Deliver a hub message to the matching local connections.
    Invocation {
        /// Which connections should receive the message.
        target: Target,
        /// The message, encoded once per hub protocol.
        message: SerializedMessage,
    },
    /// Add or remove a connection to or from a group on the node that owns the connection.
    GroupCommand(GroupCommand),
    /// The owning node applied a [`GroupCommand`].
    Ack(Ack),
    /// The owning node refused a [`GroupCommand`] (for example: the connection is already
    /// in as many groups as that node allows).
    GroupRefused(GroupRefusal),
    /// Invoke a client method on a connection owned by some other node and send the
    /// client's answer back to the origin (client results).
    ClientInvocation(crate::client_results::ClientInvocation),
    /// The owning node's answer to a [`EnvelopeKind::ClientInvocation`]; sent only to the
    /// node that asked (the envelope's `destination`).
    ClientResult(crate::client_results::ClientResult),
    // New kinds are appended below to keep the encoding compatible.
}

/// Bytes an envelope takes besides its hub name and kind: format byte, origin, sequence
/// number, destination and variant tags, at their largest.
const ENVELOPE_OVERHEAD: usize = 1 + 19 + 10 + 20 + 2;

/// The most bytes postcard spends on a length prefix or a small tag in an envelope.
const PREFIX: usize = 5;

impl EnvelopeKind {
    /// An upper estimate of this kind's encoded size in bytes: the message encodings
    /// plus every connection id, group and user name the target lists. Backplanes use it
    /// to enforce size limits without encoding; a target naming thousands of
    /// connections counts as much as it weighs.
    pub fn size_hint(&self) -> usize {
        fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> usize {
            items
                .into_iter()
                .map(|item| PREFIX + item.len())
                .sum::<usize>()
                + PREFIX
        }
        match self {
            EnvelopeKind::Invocation { target, message } => {
                let target = match target {
                    Target::All => 0,
                    Target::AllExcept(ids) | Target::Connections(ids) => {
                        strings(ids.iter().map(ConnectionId::as_str))
                    }
                    Target::Connection(id) => PREFIX + id.as_str().len(),
                    Target::Group(name) | Target::User(name) => PREFIX + name.len(),
                    Target::Groups(names) | Target::Users(names) => {
                        strings(names.iter().map(String::as_str))
                    }
                    Target::GroupExcept { group, excluded } => {
                        PREFIX + group.len() + strings(excluded.iter().map(ConnectionId::as_str))
                    }
                };
                PREFIX + target + 2 * PREFIX + message.encoded_len()
            }
            EnvelopeKind::GroupCommand(command) => {
                PREFIX
                    + 10
                    + 2 * PREFIX
                    + command.connection_id.as_str().len()
                    + command.group.len()
            }
            EnvelopeKind::Ack(_) => PREFIX + 10,
            EnvelopeKind::GroupRefused(refusal) => PREFIX + 10 + PREFIX + refusal.reason.len(),
            EnvelopeKind::ClientInvocation(call) => {
                3 * PREFIX
                    + 2 * 10
                    + call.connection_id.as_str().len()
                    + call.invocation_id.len()
                    + 2 * PREFIX
                    + call.message.encoded_len()
            }
            EnvelopeKind::ClientResult(result) => PREFIX + 10 + PREFIX + result.outcome.size_hint(),
        }
    }
}

/// Which connections a hub message is for. Mirrors the ASP.NET Core
/// `HubLifetimeManager` send methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every connection of the hub.
    All,
    /// Every connection except the listed ones.
    AllExcept(Vec<ConnectionId>),
    /// One connection.
    Connection(ConnectionId),
    /// Several connections; each receives the message once.
    Connections(Vec<ConnectionId>),
    /// Every member of a group.
    Group(String),
    /// Every member of any of the groups; a connection in several receives it once.
    Groups(Vec<String>),
    /// Every member of a group except the listed connections.
    GroupExcept {
        /// The group.
        group: String,
        /// Members that must not receive the message.
        excluded: Vec<ConnectionId>,
    },
    /// Every connection of one user, on every node.
    User(String),
    /// Every connection of any of the users.
    Users(Vec<String>),
}

/// A request to change group membership of a connection owned by some other node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommand {
    /// Identifies the request among the origin's outstanding requests; echoed in the [`Ack`].
    pub ack_id: u64,
    /// The connection whose membership changes.
    pub connection_id: ConnectionId,
    /// The group.
    pub group: String,
    /// Add or remove.
    pub action: GroupAction,
}

/// Whether a [`GroupCommand`] adds or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupAction {
    /// Add the connection to the group.
    Add,
    /// Remove the connection from the group.
    Remove,
}

/// The answer of the node that owns a connection to a [`GroupCommand`]; sent only to the
/// node that asked (the envelope's `destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The `ack_id` of the command this answers.
    pub ack_id: u64,
}

/// The answer of the node that owns a connection to a [`GroupCommand`] it did not apply;
/// sent only to the node that asked (the envelope's `destination`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRefusal {
    /// The `ack_id` of the command this answers.
    pub ack_id: u64,
    /// Why, in words fit for the caller of `add_to_group`.
    pub reason: String,
}

/// Why bytes could not be decoded into an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// There were no bytes at all.
    #[error("empty envelope")]
    Empty,
    /// The format byte names a format this build does not know.
    #[error("unsupported envelope format {0} (this build reads format {expected})", expected = Envelope::FORMAT_VERSION)]
    UnsupportedFormat(u8),
    /// The bytes are not a valid envelope (corrupt, truncated, or from an unknown kind).
    #[error("malformed envelope: {0}")]
    Malformed(postcard::Error),
    /// A valid envelope was followed by extra bytes.
    #[error("malformed envelope: {0} trailing bytes")]
    TrailingBytes(usize),
    /// The cluster has a secret and the envelope's tag is missing or wrong: forged,
    /// tampered with, or from a node with another secret (see [`crate::EnvelopeCodec`]).
    #[error(
        "envelope failed verification against the cluster secret (forged, tampered with, or signed with another secret)"
    )]
    Unauthenticated,
    /// This node has no cluster secret but the envelope carries a tag: the nodes of the
    /// cluster disagree on whether a secret is set.
    #[error("envelope is signed but this node has no cluster secret")]
    UnexpectedTag,
}

impl Envelope {
    /// The format byte written in front of every encoded envelope.
    pub const FORMAT_VERSION: u8 = 1;

    /// Encode this envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.size_hint());
        self.encode_into(&mut buf);
        buf
    }

    /// Append the encoding of this envelope to `buf` (lets a batch reuse one buffer).
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.push(Self::FORMAT_VERSION);
        // Serializing these types into a Vec cannot fail: every field is a plain value,
        // string, sequence or byte string, all of which postcard supports.
        postcard::to_io(self, &mut *buf).expect("envelope serialization into memory cannot fail");
    }

    /// Decode an envelope from `bytes`.
    ///
    /// # Errors
    ///
    /// Returns a [`CodecError`] for empty, corrupt, truncated or over-long input, or an
    /// unknown format byte. Never panics, and hostile length prefixes cannot make it
    /// allocate more than the input's size (postcard checks lengths against the input).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
        if format != Self::FORMAT_VERSION {
            return Err(CodecError::UnsupportedFormat(format));
        }
        let (envelope, rest) =
            postcard::take_from_bytes::<Envelope>(body).map_err(CodecError::Malformed)?;
        if !rest.is_empty() {
            return Err(CodecError::TrailingBytes(rest.len()));
        }
        Ok(envelope)
    }

    /// An upper estimate of this envelope's encoded size in bytes, for size limits and
    /// batch budgets (see [`EnvelopeKind::size_hint`]); cheaper than encoding.
    pub fn size_hint(&self) -> usize {
        Self::size_hint_of(&self.hub, &self.kind)
    }

    /// The [`Envelope::size_hint`] of an envelope for `hub` carrying `kind`, before it
    /// exists (a backplane checks its size limit before stamping origin and sequence).
    pub fn size_hint_of(hub: &str, kind: &EnvelopeKind) -> usize {
        ENVELOPE_OVERHEAD + hub.len() + kind.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Protocol;
    use proptest::prelude::*;

    fn sample(kind: EnvelopeKind) -> Envelope {
        Envelope {
            origin: NodeId::from_u128(0xdead_beef),
            seq: 42,
            hub: "chat".into(),
            destination: None,
            kind,
        }
    }

    fn every_kind() -> Vec<EnvelopeKind> {
        let message = SerializedMessage::new()
            .with(Protocol::Json, &b"{\"type\":1}\x1e"[..])
            .with(Protocol::MessagePack, vec![0x03, 0x91, 0x01, 0x80]);
        let ids = vec![ConnectionId::from("a"), ConnectionId::from("b")];
        let targets = vec![
            Target::All,
            Target::AllExcept(ids.clone()),
            Target::Connection("c".into()),
            Target::Connections(ids.clone()),
            Target::Group("room".into()),
            Target::Groups(vec!["r1".into(), "r2".into()]),
            Target::GroupExcept {
                group: "room".into(),
                excluded: ids,
            },
            Target::User("alice".into()),
            Target::Users(vec!["alice".into(), "bob".into()]),
        ];
        let mut kinds: Vec<EnvelopeKind> = targets
            .into_iter()
            .map(|target| EnvelopeKind::Invocation {
                target,
                message: message.clone(),
            })
            .collect();
        for action in [GroupAction::Add, GroupAction::Remove] {
            kinds.push(EnvelopeKind::GroupCommand(GroupCommand {
                ack_id: 7,
                connection_id: "c".into(),
                group: "room".into(),
                action,
            }));
        }
        kinds.push(EnvelopeKind::Ack(Ack { ack_id: 7 }));
        kinds.push(EnvelopeKind::ClientInvocation(
            crate::client_results::ClientInvocation {
                request_id: 9,
                connection_id: "c".into(),
                invocation_id: "node-9".into(),
                message,
                timeout_ms: 30_000,
            },
        ));
        for outcome in [
            crate::client_results::ClientOutcome::Accepted,
            crate::client_results::ClientOutcome::Void,
            crate::client_results::ClientOutcome::Value {
                messagepack: true,
                bytes: bytes::Bytes::from_static(&[0x2a]),
            },
            crate::client_results::ClientOutcome::Error("no handler".into()),
            crate::client_results::ClientOutcome::Disconnected,
        ] {
            kinds.push(EnvelopeKind::ClientResult(
                crate::client_results::ClientResult {
                    request_id: 9,
                    outcome,
                },
            ));
        }
        kinds.push(EnvelopeKind::GroupRefused(GroupRefusal {
            ack_id: 8,
            reason: "connection c1 is already in 100 groups, the most this node allows".into(),
        }));
        kinds
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in every_kind() {
            let mut envelope = sample(kind);
            envelope.destination = Some(NodeId::from_u128(u128::MAX));
            let bytes = envelope.encode();
            assert_eq!(bytes[0], Envelope::FORMAT_VERSION);
            assert_eq!(Envelope::decode(&bytes).unwrap(), envelope);
        }
    }

    #[test]
    fn size_hint_is_an_upper_bound_that_counts_targets() {
        for kind in every_kind() {
            let envelope = sample(kind);
            assert!(
                envelope.size_hint() >= envelope.encode().len(),
                "{envelope:?}"
            );
        }
        let ids: Vec<ConnectionId> = (0..1000)
            .map(|i| ConnectionId::from(format!("connection-{i:05}")))
            .collect();
        let envelope = sample(EnvelopeKind::Invocation {
            target: Target::Connections(ids),
            message: SerializedMessage::new(),
        });
        let encoded = envelope.encode().len();
        assert!(encoded > 16_000);
        assert!(envelope.size_hint() >= encoded && envelope.size_hint() < 2 * encoded);
    }

    #[test]
    fn rejects_empty_unknown_format_truncated_and_trailing() {
        assert_eq!(Envelope::decode(&[]), Err(CodecError::Empty));
        let mut bytes = sample(EnvelopeKind::Ack(Ack { ack_id: 1 })).encode();
        bytes[0] = 99;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(CodecError::UnsupportedFormat(99))
        );
        bytes[0] = Envelope::FORMAT_VERSION;
        assert!(matches!(
            Envelope::decode(&bytes[..bytes.len() - 1]),
            Err(CodecError::Malformed(_))
        ));
        bytes.push(0);
        assert_eq!(Envelope::decode(&bytes), Err(CodecError::TrailingBytes(1)));
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate() {
        // A hub name that claims to be 2^63 bytes long in a 20-byte input.
        let mut bytes = vec![Envelope::FORMAT_VERSION];
        bytes.extend_from_slice(&[0x01; 16][..1]); // start of the origin varint
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(Envelope::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes);
        }

        #[test]
        fn corrupted_envelopes_never_panic(
            kind_index in 0usize..18,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = sample(every_kind().swap_remove(kind_index)).encode();
            for (index, value) in flips {
                let i = index.index(bytes.len());
                bytes[i] = value;
            }
            // Either an error or some envelope; never a panic. If it decodes, it re-encodes
            // to something that decodes to the same value.
            if let Ok(envelope) = Envelope::decode(&bytes) {
                prop_assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
            }
        }

        #[test]
        fn arbitrary_envelopes_round_trip(
            origin in any::<u128>(),
            seq in any::<u64>(),
            hub in ".{0,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            group in ".{0,20}",
        ) {
            let envelope = Envelope {
                origin: NodeId::from_u128(origin),
                seq,
                hub,
                destination: None,
                kind: EnvelopeKind::Invocation {
                    target: Target::Group(group),
                    message: SerializedMessage::new().with(Protocol::MessagePack, payload),
                },
            };
            prop_assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
        }
    }
}
