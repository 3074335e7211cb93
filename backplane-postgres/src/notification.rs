//! The text carried by each `NOTIFY`.
//!
//! PostgreSQL notification payloads are text of at most 7,999 bytes. Two forms exist,
//! told apart by their first character:
//!
//! - **Inline** `i<origin>:<base64>`: `<origin>` is the publishing node id (32 lowercase
//!   hex digits) and `<base64>` (standard alphabet, padded) encodes a *pack*: one or more
//!   encoded envelopes of that node, each preceded by its length as an unsigned LEB128
//!   varint, in sequence order. Packing many small envelopes of one batch into one
//!   notification means fewer notifications under PostgreSQL's notify lock, and lets a
//!   receiver drop its own echoes without decoding anything.
//! - **Reference** `r<origin>:<from>:<to>:<hub>`: rows `from..=to` (sequence numbers,
//!   decimal) of `<hub>` (the rest of the text, verbatim) from `<origin>` are in the
//!   table; receivers read them. Used for envelopes too large to go inline (`from == to`)
//!   and for tombstones (rows standing for sequence numbers whose publish failed, so
//!   receivers skip them instead of waiting; see the `tombstone` module).
//!
//! Anything else is malformed: receivers log it and skip it.
//!
//! With a cluster secret, every notification ends in `.<tag>`: the HMAC-SHA256 tag
//! ([`EnvelopeCodec::tag`]) over the channel and the text before it, in unpadded
//! URL-safe base64 (43 characters). Receivers check it before reading anything else
//! ([`open`]) and drop and count what fails.

use backplane_core::{EnvelopeCodec, NodeId, TAG_LEN};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hub_protocol::varint;

/// PostgreSQL's limit on a notification payload, in bytes.
pub(crate) const MAX_NOTIFICATION: usize = 7999;

/// `i` or `r`, the origin's 32 hex digits, and `:`.
const HEADER: usize = 1 + 32 + 1;

/// `.` and the tag in unpadded base64, when the cluster has a secret.
const TAG_SUFFIX: usize = 1 + (TAG_LEN * 4).div_ceil(3);

/// Domain of notification tags.
const DOMAIN: &str = "postgres notification";

/// The largest pack whose base64 text fits a notification with its header and a tag.
pub(crate) const MAX_PACK: usize = (MAX_NOTIFICATION - HEADER - TAG_SUFFIX) / 4 * 3;

/// The largest encoded envelope that fits a pack alone (a 2-byte length prefix covers
/// every length up to 16,383).
pub(crate) const MAX_INLINE_ENVELOPE: usize = MAX_PACK - 2;

/// A decoded notification.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Notification {
    /// Envelopes carried in the notification itself.
    Inline {
        /// The node that published them.
        origin: NodeId,
        /// The decoded pack; iterate it with [`entries`].
        pack: Vec<u8>,
    },
    /// Rows to read from the table.
    Reference {
        /// The node that published them.
        origin: NodeId,
        /// First sequence number.
        from: u64,
        /// Last sequence number (inclusive).
        to: u64,
        /// The hub the rows belong to.
        hub: String,
    },
}

/// Why a notification could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotificationError {
    /// The text is not in either form.
    #[error("malformed notification: {0}")]
    Malformed(&'static str),
    /// The cluster has a secret and the notification's tag is missing or wrong.
    #[error("notification failed verification against the cluster secret")]
    Unauthenticated,
}

/// `text` for `channel`, with its tag appended if `codec` has a secret.
pub(crate) fn seal(codec: &EnvelopeCodec, channel: &str, mut text: String) -> String {
    if let Some(tag) = codec.tag(DOMAIN, &[channel.as_bytes(), text.as_bytes()]) {
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut text);
    }
    text
}

/// The text of a notification received on `channel` without its tag, once the tag is
/// verified (if `codec` has a secret; else `text` unchanged). Failures are not counted
/// here.
///
/// # Errors
///
/// [`NotificationError::Unauthenticated`] if the tag is missing or wrong.
pub(crate) fn open<'a>(
    codec: &EnvelopeCodec,
    channel: &str,
    text: &'a str,
) -> Result<&'a str, NotificationError> {
    if !codec.is_signed() {
        return Ok(text);
    }
    let split = text
        .len()
        .checked_sub(TAG_SUFFIX)
        .filter(|&at| text.is_char_boundary(at) && text.as_bytes()[at] == b'.')
        .ok_or(NotificationError::Unauthenticated)?;
    let (body, suffix) = text.split_at(split);
    let tag = URL_SAFE_NO_PAD
        .decode(&suffix[1..])
        .map_err(|_| NotificationError::Unauthenticated)?;
    if codec.verify(DOMAIN, &[channel.as_bytes(), body.as_bytes()], &tag) {
        Ok(body)
    } else {
        Err(NotificationError::Unauthenticated)
    }
}

/// The origin of a notification, read from its header alone (to drop own echoes
/// cheaply). `None` if the header is malformed.
pub(crate) fn origin_of(text: &str) -> Option<NodeId> {
    let hex = text.get(1..33)?;
    if text.as_bytes().get(33) != Some(&b':') {
        return None;
    }
    hex.parse().ok()
}

/// Parse a notification.
///
/// # Errors
///
/// [`NotificationError`] for anything not produced by [`Packer`] or [`reference`].
pub(crate) fn parse(text: &str) -> Result<Notification, NotificationError> {
    let origin = origin_of(text).ok_or(NotificationError::Malformed("bad header"))?;
    let body = &text[HEADER..];
    match text.as_bytes()[0] {
        b'i' => {
            let pack = STANDARD
                .decode(body)
                .map_err(|_| NotificationError::Malformed("invalid base64"))?;
            if pack.is_empty() {
                return Err(NotificationError::Malformed("empty pack"));
            }
            Ok(Notification::Inline { origin, pack })
        }
        b'r' => {
            let mut parts = body.splitn(3, ':');
            let mut number = || {
                parts
                    .next()
                    .and_then(|p| p.parse::<u64>().ok())
                    .ok_or(NotificationError::Malformed("bad sequence range"))
            };
            let from = number()?;
            let to = number()?;
            let hub = parts
                .next()
                .ok_or(NotificationError::Malformed("missing hub"))?;
            if from == 0 || to < from {
                return Err(NotificationError::Malformed("bad sequence range"));
            }
            Ok(Notification::Reference {
                origin,
                from,
                to,
                hub: hub.to_owned(),
            })
        }
        _ => Err(NotificationError::Malformed("unknown kind")),
    }
}

/// The encoded envelopes of a pack, in order; an error item ends a corrupt pack.
pub(crate) fn entries(pack: &[u8]) -> impl Iterator<Item = Result<&[u8], NotificationError>> {
    let mut rest = pack;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (len, prefix) = match varint::decode(rest) {
            Ok(Some(found)) => found,
            Ok(None) => {
                rest = &[];
                return Some(Err(NotificationError::Malformed("truncated length")));
            }
            Err(varint::PrefixError::Invalid) => {
                rest = &[];
                return Some(Err(NotificationError::Malformed("length too large")));
            }
        };
        rest = &rest[prefix..];
        if len > rest.len() {
            rest = &[];
            return Some(Err(NotificationError::Malformed("truncated envelope")));
        }
        let (entry, tail) = rest.split_at(len);
        rest = tail;
        Some(Ok(entry))
    })
}

/// A reference notification for rows `from..=to` of `hub` from `origin`, or `None` if
/// the hub name is too long to fit a notification.
pub(crate) fn reference(origin: NodeId, from: u64, to: u64, hub: &str) -> Option<String> {
    let text = format!("r{origin}:{from}:{to}:{hub}");
    (text.len() + TAG_SUFFIX <= MAX_NOTIFICATION).then_some(text)
}

/// Builds the notifications of one batch for one channel, in order: consecutive small
/// envelopes share a pack; a reference flushes the pack before it, keeping order.
#[derive(Debug)]
pub(crate) struct Packer {
    /// `i<origin>:`, the start of every inline notification.
    prefix: String,
    /// The pack being filled.
    pack: Vec<u8>,
    /// Finished notifications.
    out: Vec<String>,
}

impl Packer {
    /// A packer for envelopes of `origin`.
    pub(crate) fn new(origin: NodeId) -> Self {
        Self {
            prefix: format!("i{origin}:"),
            pack: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Add an encoded envelope of at most [`MAX_INLINE_ENVELOPE`] bytes.
    pub(crate) fn inline(&mut self, envelope: &[u8]) {
        debug_assert!(envelope.len() <= MAX_INLINE_ENVELOPE);
        let mut prefix = [0u8; varint::MAX_PREFIX_LEN];
        let n = varint::encode(envelope.len(), &mut prefix);
        if self.pack.len() + n + envelope.len() > MAX_PACK {
            self.flush();
        }
        self.pack.extend_from_slice(&prefix[..n]);
        self.pack.extend_from_slice(envelope);
    }

    /// Add an already built reference notification.
    pub(crate) fn reference(&mut self, text: String) {
        self.flush();
        self.out.push(text);
    }

    fn flush(&mut self) {
        if self.pack.is_empty() {
            return;
        }
        let mut text = String::with_capacity(HEADER + self.pack.len().div_ceil(3) * 4);
        text.push_str(&self.prefix);
        STANDARD.encode_string(&self.pack, &mut text);
        self.pack.clear();
        self.out.push(text);
    }

    /// The notifications, in order.
    pub(crate) fn finish(mut self) -> Vec<String> {
        self.flush();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> NodeId {
        NodeId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
    }

    #[test]
    fn packs_round_trip_and_fit() {
        let envelopes: Vec<Vec<u8>> = (0..500u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 37) % 300])
            .chain([vec![7u8; MAX_INLINE_ENVELOPE], vec![1u8; 200], vec![]])
            .collect();
        let mut packer = Packer::new(origin());
        for envelope in &envelopes {
            packer.inline(envelope);
        }
        let notifications = packer.finish();
        assert!(notifications.len() > 1);
        let mut decoded = Vec::new();
        for text in &notifications {
            assert!(text.len() <= MAX_NOTIFICATION, "{} bytes", text.len());
            assert_eq!(origin_of(text), Some(origin()));
            let Notification::Inline { origin: o, pack } = parse(text).unwrap() else {
                panic!("expected inline");
            };
            assert_eq!(o, origin());
            for entry in entries(&pack) {
                decoded.push(entry.unwrap().to_vec());
            }
        }
        assert_eq!(decoded, envelopes);
    }

    #[test]
    fn largest_inline_envelope_fills_a_signed_notification() {
        let mut packer = Packer::new(origin());
        packer.inline(&vec![0xAB; MAX_INLINE_ENVELOPE]);
        let text = packer.finish().pop().unwrap();
        let codec = EnvelopeCodec::new(Some(
            backplane_core::ClusterSecret::new("0123456789abcdef").unwrap(),
        ));
        let sealed = seal(&codec, "ch", text.clone());
        assert!(sealed.len() <= MAX_NOTIFICATION);
        assert!(sealed.len() > MAX_NOTIFICATION - 4);
        assert_eq!(open(&codec, "ch", &sealed).unwrap(), text);
        // Another channel, a missing or altered tag, another secret: refused.
        assert!(open(&codec, "other", &sealed).is_err());
        assert!(open(&codec, "ch", &text).is_err());
        let mut altered = sealed.clone();
        altered.replace_range(40..41, if &sealed[40..41] == "A" { "B" } else { "A" });
        assert!(open(&codec, "ch", &altered).is_err());
        let other = EnvelopeCodec::new(Some(
            backplane_core::ClusterSecret::new("another secret!!").unwrap(),
        ));
        assert!(open(&other, "ch", &sealed).is_err());
        assert_eq!(open(&EnvelopeCodec::default(), "ch", &text).unwrap(), text);
    }

    #[test]
    fn references_keep_their_place() {
        let mut packer = Packer::new(origin());
        packer.inline(b"a");
        packer.reference(reference(origin(), 2, 2, "hub:with:colons").unwrap());
        packer.inline(b"c");
        let out = packer.finish();
        assert_eq!(out.len(), 3);
        assert_eq!(
            parse(&out[1]).unwrap(),
            Notification::Reference {
                origin: origin(),
                from: 2,
                to: 2,
                hub: "hub:with:colons".into()
            }
        );
        assert!(reference(origin(), 1, 1, &"h".repeat(8000)).is_none());
    }

    #[test]
    fn malformed_notifications_are_errors() {
        for text in [
            "",
            "x",
            "i0123",
            "q0123456789abcdef0123456789abcdef:AAAA",
            "i0123456789abcdef0123456789abcdef:not base64!",
            "i0123456789abcdef0123456789abcdef:",
            "r0123456789abcdef0123456789abcdef:1:x:hub",
            "r0123456789abcdef0123456789abcdef:5:4:hub",
            "r0123456789abcdef0123456789abcdef:0:0:hub",
            "r0123456789abcdef0123456789abcdef:1:2",
            "iXYZ3456789abcdef0123456789abcdef:AAAA",
        ] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
        // A pack whose length prefix overruns.
        let mut packer = Packer::new(origin());
        packer.inline(b"abc");
        let text = packer.finish().pop().unwrap();
        let Notification::Inline { mut pack, .. } = parse(&text).unwrap() else {
            panic!()
        };
        pack[0] = 100;
        assert!(entries(&pack).any(|e| e.is_err()));
        assert!(entries(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).any(|e| e.is_err()));
    }
}
