//! How envelopes look on NATS: subjects, headers, chunks, and the metadata JetStream
//! puts in a delivered message's reply subject.
//!
//! A hub's subject is `<prefix>.h<base64url(hub)>`: the hub name, whatever it holds
//! (`.`, `*`, `>`, spaces, nothing), becomes one token of letters, digits, `-` and `_`,
//! so it can never be a wildcard or split into tokens. Each message carries headers `o`
//! (origin node id, 32 hex digits), `s` (sequence number) and either the envelope (or
//! one chunk of it, with `c: <index>/<count>`) as payload, or `t` (first number of a
//! *skipped run* `t..=s`, empty payload). `Nats-Msg-Id` lets JetStream drop a retried
//! copy.

use std::collections::HashMap;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage as Publish;
use backplane_core::NodeId;
use backplane_core::sequencing::Stored;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};

const ORIGIN: &str = "o";
const SEQ: &str = "s";
const SKIPPED_FROM: &str = "t";
const CHUNK: &str = "c";

/// The subject of `hub` under `prefix`.
pub(crate) fn subject(prefix: &str, hub: &str) -> String {
    format!("{prefix}.h{}", URL_SAFE_NO_PAD.encode(hub))
}

/// The messages of one envelope: one, or its chunks of at most `chunk` bytes.
pub(crate) fn envelope_messages(
    subject: &str,
    origin: NodeId,
    seq: u64,
    encoded: &Bytes,
    chunk: usize,
) -> Vec<Publish> {
    let count = encoded.len().div_ceil(chunk).max(1);
    (0..count)
        .map(|index| {
            let part = encoded.slice(index * chunk..((index + 1) * chunk).min(encoded.len()));
            let mut message = Publish::build()
                .payload(part)
                .message_id(format!("{subject}:{origin}:{seq}:{index}"))
                .header(ORIGIN, origin.to_string())
                .header(SEQ, seq.to_string());
            if count > 1 {
                message = message.header(CHUNK, format!("{index}/{count}"));
            }
            message
        })
        .collect()
}

/// The message of a skipped run `first..=last`.
pub(crate) fn skipped_message(subject: &str, origin: NodeId, first: u64, last: u64) -> Publish {
    Publish::build()
        .payload(Bytes::new())
        .message_id(format!("{subject}:{origin}:{first}-{last}:skipped"))
        .header(ORIGIN, origin.to_string())
        .header(SEQ, last.to_string())
        .header(SKIPPED_FROM, first.to_string())
}

/// JetStream's delivery metadata, from a message's reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The message's sequence number in the stream: reading resumes after it.
    pub(crate) stream_seq: u64,
    /// Its number among this consumer's deliveries: a hole means a delivery was lost.
    pub(crate) consumer_seq: u64,
    /// Messages still waiting for the consumer after this one (0: caught up).
    pub(crate) pending: u64,
}

/// Parse `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (and
/// the longer form with domain and account hash in front).
pub(crate) fn delivery(reply: &str) -> Option<Delivery> {
    let tokens: Vec<&str> = reply.split('.').collect();
    if tokens.len() < 9 || tokens[..2] != ["$JS", "ACK"] {
        return None;
    }
    let base = if tokens.len() == 9 { 4 } else { 6 };
    let number = |i: usize| tokens.get(base + i)?.parse().ok();
    Some(Delivery {
        stream_seq: number(1)?,
        consumer_seq: number(2)?,
        pending: number(4)?,
    })
}

/// Reassembles chunked envelopes. One origin's chunks arrive consecutively (it writes
/// them in order, one batch at a time), so one partial envelope per origin suffices.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    /// origin -> (sequence number, chunk count, chunks so far).
    partial: HashMap<NodeId, (u64, usize, BytesMut)>,
    /// How many chunks of each partial arrived.
    received: HashMap<NodeId, usize>,
}

impl Chunks {
    /// What a message amounts to: an item for the inbox, or `None` while an envelope's
    /// chunks are still arriving.
    pub(crate) fn item(&mut self, headers: Option<&HeaderMap>, payload: Bytes) -> Option<Stored> {
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
        let origin = header(ORIGIN).and_then(|v| v.parse::<NodeId>().ok());
        let (Some(origin), Some(seq)) = (origin, number(SEQ)) else {
            return Some(Stored::Malformed(
                "message without a valid origin and sequence number",
            ));
        };
        if let Some(first) = number(SKIPPED_FROM) {
            return Some(if (1..=seq).contains(&first) {
                Stored::Skipped {
                    origin,
                    first,
                    last: seq,
                }
            } else {
                Stored::Malformed("skipped run with an invalid range")
            });
        }
        let Some(chunk) = header(CHUNK) else {
            return Some(Stored::Envelope {
                origin,
                seq,
                bytes: payload,
            });
        };
        let Some((index, count)) = chunk
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
            .filter(|(i, n)| i < n)
        else {
            return Some(Stored::Malformed("chunk header is not <index>/<count>"));
        };
        if index == 0 {
            self.partial
                .insert(origin, (seq, count, BytesMut::from(&payload[..])));
            self.received.insert(origin, 1);
        } else {
            let expected = self.received.get(&origin).copied();
            match self.partial.get_mut(&origin) {
                Some((s, n, bytes)) if *s == seq && *n == count && expected == Some(index) => {
                    bytes.extend_from_slice(&payload);
                    self.received.insert(origin, index + 1);
                }
                // A repeated chunk of the envelope being assembled: already have it.
                Some((s, _, _)) if *s == seq && expected.is_some_and(|e| index < e) => {
                    return None;
                }
                // Its first chunks are gone (retention, or read before the subscription
                // started): the envelope is lost; the origin's next one shows the gap.
                _ => {
                    self.forget(origin);
                    return None;
                }
            }
        }
        if self.received.get(&origin) == Some(&count) {
            let (seq, _, bytes) = self.partial.remove(&origin).expect("assembled above");
            self.received.remove(&origin);
            return Some(Stored::Envelope {
                origin,
                seq,
                bytes: bytes.freeze(),
            });
        }
        None
    }

    fn forget(&mut self, origin: NodeId) {
        self.partial.remove(&origin);
        self.received.remove(&origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_hub_names_become_one_safe_token() {
        for hub in ["chat", "a.b", "*", ">", "", "a b\t", "ü.>.*"] {
            let subject = subject("signalr", hub);
            let token = subject.strip_prefix("signalr.").unwrap();
            assert!(
                token.starts_with('h')
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{hub:?} -> {subject}"
            );
        }
        assert_ne!(subject("p", "a"), subject("p", "b"));
    }

    #[test]
    fn reply_subjects_carry_sequences_and_pending() {
        let v1 = delivery("$JS.ACK.S.C.1.42.7.1700000000000000000.3").unwrap();
        assert_eq!((v1.stream_seq, v1.consumer_seq, v1.pending), (42, 7, 3));
        let v2 = delivery("$JS.ACK.dom.acc.S.C.1.42.7.1700000000000000000.0.rand").unwrap();
        assert_eq!((v2.stream_seq, v2.consumer_seq, v2.pending), (42, 7, 0));
        assert_eq!(delivery("_INBOX.x"), None);
    }

    fn headers_of(message: &Publish) -> HeaderMap {
        // The builder keeps its headers private; rebuild them the way the server would
        // deliver them, through the outbound message.
        message.clone().outbound_message("x").headers.unwrap()
    }

    #[test]
    fn chunks_reassemble_and_a_headless_tail_is_dropped() {
        let origin = NodeId::from_u128(9);
        let encoded = Bytes::from((0..2500u32).map(|i| i as u8).collect::<Vec<_>>());
        let messages = envelope_messages("p.hx", origin, 5, &encoded, 1000);
        assert_eq!(messages.len(), 3);
        let mut chunks = Chunks::default();
        let mut out = Vec::new();
        for message in &messages {
            let outbound = message.clone().outbound_message("x");
            out.push(chunks.item(Some(&headers_of(message)), outbound.payload));
        }
        assert!(out[0].is_none() && out[1].is_none());
        assert!(
            matches!(&out[2], Some(Stored::Envelope { seq: 5, bytes, .. }) if *bytes == encoded)
        );
        // Without its first chunk, nothing comes out.
        let tail = messages[2].clone().outbound_message("x");
        assert!(
            chunks
                .item(Some(&headers_of(&messages[2])), tail.payload)
                .is_none()
        );
        let skipped = skipped_message("p.hx", origin, 3, 4);
        assert!(matches!(
            chunks.item(Some(&headers_of(&skipped)), Bytes::new()),
            Some(Stored::Skipped {
                first: 3,
                last: 4,
                ..
            })
        ));
        assert!(matches!(
            chunks.item(None, Bytes::new()),
            Some(Stored::Malformed(_))
        ));
    }
}
