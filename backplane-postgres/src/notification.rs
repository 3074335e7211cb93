//! The text carried by each `NOTIFY`.
//!
//! PostgreSQL notification payloads are text of at most 7,999 bytes. Three forms exist,
//! told apart by their first character:
//!
//! - **Inline** `i<origin>:<base64>`: `<origin>` is the publishing node id (32 lowercase
//!   hex digits) and `<base64>` (standard alphabet, padded) encodes a *pack*: one or more
//!   encoded envelopes of that node, each preceded by its length as an unsigned LEB128
//!   varint, in sequence order. Packing many small envelopes of one batch into one
//!   notification means fewer notifications under PostgreSQL's notify lock, and lets a
//!   receiver drop its own echoes without decoding anything.
//! - **Compressed inline** `z<origin>:<base64>`: the same pack, compressed: `<base64>`
//!   encodes the pack's length (LEB128, at most [`MAX_RAW_PACK`]) followed by the pack as
//!   one LZ4 block. The packer writes it whenever it is shorter than the plain form, so
//!   a notification carries up to [`MAX_RAW_PACK`] bytes of envelopes. Why: a batch's
//!   chat envelopes repeat their method, group, sender and every text twice (once per
//!   hub protocol), so they compress about 3:1, and every byte of a notification is
//!   copied by PostgreSQL into its notification queue and sent to every listening node,
//!   the publisher's own listener included (BENCHMARKS.md, 2026-12-06 night).
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

/// The most envelope bytes (a pack, before compression) one compressed notification may
/// carry. The packer fills packs up to this before compressing; a receiver refuses a
/// compressed notification that claims more, so a forged one cannot make it allocate
/// more than this.
pub(crate) const MAX_RAW_PACK: usize = 4 * MAX_PACK;

/// The largest encoded envelope that fits a pack alone (a 2-byte length prefix covers
/// every length up to 16,383).
pub(crate) const MAX_INLINE_ENVELOPE: usize = MAX_PACK - 2;

/// A decoded notification.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Notification {
    /// Envelopes carried in the notification itself (plain or compressed).
    Inline {
        /// The node that published them.
        origin: NodeId,
        /// The decoded (and inflated) pack; iterate it with [`entries`].
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
    /// The cluster has a secret and the notification's tag is wrong.
    #[error("notification failed verification against the cluster secret")]
    Unauthenticated,
    /// The cluster has a secret and the notification has no tag at all: its sender runs
    /// without one.
    #[error(
        "notification carries no tag: the instance that sent it has no cluster secret \
         (every instance of a cluster needs the same one)"
    )]
    Unsigned,
    /// This node has no secret and the notification carries a tag: its sender runs with
    /// one.
    #[error(
        "notification is signed with a cluster secret and this instance has none \
         (every instance of a cluster needs the same one)"
    )]
    SignedButNoSecret,
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
/// [`NotificationError::Unauthenticated`] if the tag is wrong, [`Unsigned`] if it is
/// missing; without a secret, [`SignedButNoSecret`] if the text is a well-formed
/// notification followed by a tag.
///
/// [`Unsigned`]: NotificationError::Unsigned
/// [`SignedButNoSecret`]: NotificationError::SignedButNoSecret
pub(crate) fn open<'a>(
    codec: &EnvelopeCodec,
    channel: &str,
    text: &'a str,
) -> Result<&'a str, NotificationError> {
    let split = tag_start(text);
    if !codec.is_signed() {
        // Inline bodies are standard base64, which has no `.`: only a reference (whose
        // hub name may hold one) can end like a tag without being signed.
        let signed =
            split.is_some_and(|at| text.as_bytes()[0] != b'r' && parse(&text[..at]).is_ok());
        return if signed {
            Err(NotificationError::SignedButNoSecret)
        } else {
            Ok(text)
        };
    }
    let split = split.ok_or(if text.contains('.') {
        NotificationError::Unauthenticated
    } else {
        NotificationError::Unsigned
    })?;
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

/// For a node without a secret: the hub a reference's `hub` field names if it is a hub
/// followed by a cluster-secret tag (`<hub>.<43 characters>`), as a signed reference reads
/// to such a node; `None` otherwise or with a secret.
pub(crate) fn signed_reference_hub<'a>(codec: &EnvelopeCodec, hub: &'a str) -> Option<&'a str> {
    if codec.is_signed() {
        return None;
    }
    tag_start(hub).map(|at| &hub[..at])
}

/// Where a trailing cluster-secret tag starts in `text` (its `.`), if `text` ends like
/// one: `.` and the tag's unpadded URL-safe base64 characters.
fn tag_start(text: &str) -> Option<usize> {
    let at = text.len().checked_sub(TAG_SUFFIX)?;
    let tag = text.get(at..)?.strip_prefix('.')?;
    tag.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        .then_some(at)
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
        b'z' => {
            let bytes = STANDARD
                .decode(body)
                .map_err(|_| NotificationError::Malformed("invalid base64"))?;
            Ok(Notification::Inline {
                origin,
                pack: inflate(&bytes)?,
            })
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

/// The pack of a compressed notification's body: its declared length, then the LZ4
/// block, which must inflate to exactly that length (at most [`MAX_RAW_PACK`]).
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, NotificationError> {
    let (len, prefix) = match varint::decode(bytes) {
        Ok(Some(found)) => found,
        Ok(None) | Err(_) => return Err(NotificationError::Malformed("bad pack length")),
    };
    if len == 0 || len > MAX_RAW_PACK {
        return Err(NotificationError::Malformed("bad pack length"));
    }
    let mut pack = vec![0u8; len];
    match lz4_flex::block::decompress_into(&bytes[prefix..], &mut pack) {
        Ok(n) if n == len => Ok(pack),
        Ok(_) => Err(NotificationError::Malformed("pack shorter than declared")),
        Err(_) => Err(NotificationError::Malformed("invalid compressed pack")),
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
/// envelopes share a pack, compressed when that is shorter; a reference flushes the pack
/// before it, keeping order.
#[derive(Debug)]
pub(crate) struct Packer {
    /// The origin's 32 hex digits and `:`, after the kind character.
    origin: String,
    /// Whether packs may go compressed (`z`); else always plain (`i`).
    compress: bool,
    /// The pack being filled (at most [`MAX_RAW_PACK`] bytes).
    pack: Vec<u8>,
    /// Where each entry of `pack` ends, so a pack too large for one notification even
    /// compressed can be split between entries.
    ends: Vec<usize>,
    /// Finished notifications.
    out: Vec<String>,
}

impl Packer {
    /// A packer for envelopes of `origin`, compressing packs where that makes them
    /// shorter if `compress`.
    pub(crate) fn new(origin: NodeId, compress: bool) -> Self {
        Self {
            origin: format!("{origin}:"),
            compress,
            pack: Vec::new(),
            ends: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Add an encoded envelope of at most [`MAX_INLINE_ENVELOPE`] bytes (a larger one
    /// goes alone, in a notification PostgreSQL will refuse: see [`Packer::flush`]).
    pub(crate) fn inline(&mut self, envelope: &[u8]) {
        let mut prefix = [0u8; varint::MAX_PREFIX_LEN];
        let n = varint::encode(envelope.len(), &mut prefix);
        let limit = if self.compress {
            MAX_RAW_PACK
        } else {
            MAX_PACK
        };
        if self.pack.len() + n + envelope.len() > limit {
            self.flush();
        }
        self.pack.extend_from_slice(&prefix[..n]);
        self.pack.extend_from_slice(envelope);
        self.ends.push(self.pack.len());
    }

    /// Add an already built reference notification.
    pub(crate) fn reference(&mut self, text: String) {
        self.flush();
        self.out.push(text);
    }

    /// Turn the pack into as few notifications as fit: all of it in one if it does
    /// (compressed or plain), else halves of its entries, and so on. A single entry
    /// always fits plain ([`MAX_INLINE_ENVELOPE`]); should one not, it still goes alone,
    /// plain, as before compression existed (PostgreSQL then refuses the batch's NOTIFY,
    /// an error, never a loop).
    fn flush(&mut self) {
        let mut first = 0;
        while first < self.ends.len() {
            let mut last = self.ends.len();
            loop {
                let start = if first == 0 { 0 } else { self.ends[first - 1] };
                let raw = &self.pack[start..self.ends[last - 1]];
                let text = match self.encode(raw) {
                    Some(text) => text,
                    None if last - first == 1 => self.text('i', raw),
                    None => {
                        last = first + (last - first) / 2;
                        continue;
                    }
                };
                self.out.push(text);
                first = last;
                break;
            }
        }
        self.pack.clear();
        self.ends.clear();
    }

    /// The shorter of the compressed (if allowed) and the plain notification of `raw`
    /// entries, or `None` if neither fits one notification.
    fn encode(&self, raw: &[u8]) -> Option<String> {
        let mut body = Vec::new();
        if self.compress {
            let mut prefix = [0u8; varint::MAX_PREFIX_LEN];
            let n = varint::encode(raw.len(), &mut prefix);
            body.resize(n + lz4_flex::block::get_maximum_output_size(raw.len()), 0);
            body[..n].copy_from_slice(&prefix[..n]);
            let written = lz4_flex::block::compress_into(raw, &mut body[n..])
                .expect("the buffer has the block's maximum size");
            body.truncate(n + written);
        }
        let (kind, bytes) = if self.compress && body.len() < raw.len() {
            ('z', body.as_slice())
        } else {
            ('i', raw)
        };
        (bytes.len() <= MAX_PACK).then(|| self.text(kind, bytes))
    }

    /// The notification of `kind` carrying `bytes`.
    fn text(&self, kind: char, bytes: &[u8]) -> String {
        let mut text = String::with_capacity(HEADER + bytes.len().div_ceil(3) * 4);
        text.push(kind);
        text.push_str(&self.origin);
        STANDARD.encode_string(bytes, &mut text);
        text
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

    /// The notifications a packer of `origin()` writes for `envelopes`.
    fn pack(envelopes: &[Vec<u8>], compress: bool) -> Vec<String> {
        let mut packer = Packer::new(origin(), compress);
        for envelope in envelopes {
            packer.inline(envelope);
        }
        packer.finish()
    }

    /// The entries of inline `notifications` of `origin()`, in order.
    fn unpack(notifications: &[String]) -> Vec<Vec<u8>> {
        let mut decoded = Vec::new();
        for text in notifications {
            assert_eq!(origin_of(text), Some(origin()));
            let Notification::Inline { origin: o, pack } = parse(text).unwrap() else {
                panic!("expected inline");
            };
            assert_eq!(o, origin());
            decoded.extend(entries(&pack).map(|entry| entry.unwrap().to_vec()));
        }
        decoded
    }

    #[test]
    fn packs_round_trip_and_fit() {
        let envelopes: Vec<Vec<u8>> = (0..500u32)
            .map(|i| vec![(i % 251) as u8; (i as usize * 37) % 300])
            .chain([vec![7u8; MAX_INLINE_ENVELOPE], vec![1u8; 200], vec![]])
            .collect();
        let notifications = pack(&envelopes, true);
        assert!(notifications.len() > 1);
        for text in &notifications {
            assert!(text.len() <= MAX_NOTIFICATION, "{} bytes", text.len());
        }
        assert_eq!(unpack(&notifications), envelopes);
    }

    /// `len` bytes of a xorshift stream: LZ4 finds nothing to repeat.
    fn noise(len: usize, seed: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ seed as u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    /// What a chat message's envelope looks like to the packer: the same text twice (once
    /// per hub protocol) among repeated method, group and sender names.
    fn chat_envelope(i: u32) -> Vec<u8> {
        let text = format!("0:{i}:1796592167{i:06}:1796592167{i:06}:{}", ".".repeat(30));
        let mut bytes = format!(
            "{{\"type\":1,\"target\":\"ReceiveGroupMessage\",\"arguments\":[\"room\",\"load\",\"{text}\"]}}\u{1e}"
        )
        .into_bytes();
        bytes.extend_from_slice(&[0x95, 0x01, 0x80, 0xc0, 0xb3]);
        bytes.extend_from_slice(b"ReceiveGroupMessage");
        bytes.extend_from_slice(&[0x93, 0xa4]);
        bytes.extend_from_slice(b"room");
        bytes.extend_from_slice(&[0xa4]);
        bytes.extend_from_slice(b"load");
        bytes.extend_from_slice(text.as_bytes());
        bytes
    }

    #[test]
    fn a_batch_of_chat_envelopes_goes_compressed_in_fewer_notifications() {
        let envelopes: Vec<Vec<u8>> = (0..300).map(chat_envelope).collect();
        let raw: usize = envelopes.iter().map(|e| e.len() + 2).sum();
        let notifications = pack(&envelopes, true);
        let plain_needed = raw.div_ceil(MAX_PACK);
        assert!(
            notifications.len() * 2 <= plain_needed,
            "{} notifications for {raw} bytes of envelopes ({plain_needed} plain)",
            notifications.len()
        );
        for text in &notifications {
            assert!(text.starts_with('z'), "not compressed: {}", &text[..40]);
            assert!(
                text.len() + TAG_SUFFIX <= MAX_NOTIFICATION,
                "{} bytes",
                text.len()
            );
        }
        assert_eq!(unpack(&notifications), envelopes);

        // With compression off (a cluster still running older nodes), plain only.
        let plain = pack(&envelopes, false);
        assert!(plain.len() >= plain_needed);
        for text in &plain {
            assert!(text.starts_with('i'));
            assert!(text.len() + TAG_SUFFIX <= MAX_NOTIFICATION);
        }
        assert_eq!(unpack(&plain), envelopes);
    }

    #[test]
    fn incompressible_envelopes_go_plain_and_fit() {
        let envelopes: Vec<Vec<u8>> = (0..80).map(|i| noise((i * 97) % 900 + 1, i)).collect();
        let notifications = pack(&envelopes, true);
        for text in &notifications {
            assert!(text.starts_with('i'));
            assert!(text.len() + TAG_SUFFIX <= MAX_NOTIFICATION);
        }
        assert_eq!(unpack(&notifications), envelopes);
    }

    #[test]
    fn an_oversized_entry_goes_alone_and_plain_instead_of_looping() {
        // Callers never pass one (the inline threshold is at most MAX_INLINE_ENVELOPE);
        // should one come, the packer must still finish, keeping order and content.
        let envelopes = vec![
            b"before".to_vec(),
            noise(MAX_PACK + 100, 7),
            b"after".to_vec(),
        ];
        let out = pack(&envelopes, true);
        assert_eq!(unpack(&out), envelopes);
        assert!(
            out.iter()
                .any(|text| text.starts_with('i') && text.len() > MAX_NOTIFICATION)
        );
    }

    #[test]
    fn compressed_notifications_that_lie_are_refused() {
        let z = |body: &[u8]| format!("z{}:{}", origin(), STANDARD.encode(body));
        let block = lz4_flex::block::compress(&[b'a'; 1000]);
        let with_len = |len: usize| {
            let mut prefix = [0u8; varint::MAX_PREFIX_LEN];
            let n = varint::encode(len, &mut prefix);
            let mut body = prefix[..n].to_vec();
            body.extend_from_slice(&block);
            body
        };
        assert!(parse(&z(&with_len(1000))).is_ok());
        // Claims more than a notification may carry: refused before allocating.
        assert!(parse(&z(&with_len(MAX_RAW_PACK + 1))).is_err());
        assert!(parse(&z(&with_len(1 << 30))).is_err());
        // Claims more, or less, than the block holds.
        assert!(parse(&z(&with_len(1001))).is_err());
        assert!(parse(&z(&with_len(999))).is_err());
        assert!(parse(&z(&with_len(0))).is_err());
        // Not a block; nothing at all.
        assert!(parse(&z(&[10, 0xff, 0xff, 0xff])).is_err());
        assert!(parse(&z(&[])).is_err());
    }

    #[test]
    fn largest_inline_envelope_fills_a_signed_notification() {
        let mut packer = Packer::new(origin(), true);
        packer.inline(&noise(MAX_INLINE_ENVELOPE, 1));
        let text = packer.finish().pop().unwrap();
        assert!(text.starts_with('i'), "incompressible: sent plain");
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
        assert_eq!(
            open(&other, "ch", &sealed),
            Err(NotificationError::Unauthenticated)
        );
        let unsigned = EnvelopeCodec::default();
        assert_eq!(open(&unsigned, "ch", &text).unwrap(), text);
        // Secrets that differ between instances are named as such, both ways.
        assert_eq!(open(&codec, "ch", &text), Err(NotificationError::Unsigned));
        assert_eq!(
            open(&unsigned, "ch", &sealed),
            Err(NotificationError::SignedButNoSecret)
        );
        // A signed reference reads to a node without a secret as a hub with the tag glued
        // on: the hub is found (the listener counts it when it subscribes to that hub).
        let signed_reference = seal(&codec, "ch", reference(origin(), 1, 2, "chat").unwrap());
        let Notification::Reference { hub: glued, .. } = parse(&signed_reference).unwrap() else {
            panic!("a reference");
        };
        assert_eq!(signed_reference_hub(&unsigned, &glued), Some("chat"));
        assert_eq!(signed_reference_hub(&codec, &glued), None);
        assert_eq!(signed_reference_hub(&unsigned, "chat"), None);
        // A reference whose hub name happens to end like a tag is not taken for one.
        let hub = format!("hub.{}", "a".repeat(TAG_SUFFIX - 1));
        let reference = reference(origin(), 1, 2, &hub).unwrap();
        assert_eq!(open(&unsigned, "ch", &reference).unwrap(), reference);
    }

    #[test]
    fn references_keep_their_place() {
        let mut packer = Packer::new(origin(), true);
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
        let mut packer = Packer::new(origin(), true);
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
