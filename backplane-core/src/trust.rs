//! Trusted backplane traffic: an optional cluster secret, and the codec every backplane
//! encodes and decodes envelopes with.
//!
//! Whoever can write to a backplane's store or channel (a database role that can
//! `NOTIFY` or `INSERT`, a Redis client that can `XADD`, a NATS user that can publish)
//! can otherwise forge envelopes: any frame to any client, in the name of any node. With
//! a [`ClusterSecret`] shared by the nodes of one cluster, every envelope carries an
//! HMAC-SHA256 tag and every node drops (and counts, see [`EnvelopeCodec::rejected`])
//! what fails verification, before it can move a sequence tracker or reach a client.
//!
//! # Wire format
//!
//! A signed envelope is its plain encoding ([`Envelope::encode`]) followed by a 32-byte
//! tag: HMAC-SHA256, keyed with a key derived from the secret, over a domain string
//! and the plain encoding (which names origin, sequence number and hub, so a tag cannot
//! be moved to another position). Backends sign their own side data (PostgreSQL
//! notifications, tombstones, skipped runs) with [`EnvelopeCodec::tag`] under their own
//! domain strings.
//!
//! The secret authenticates; it does not encrypt: whoever can read the store reads the
//! messages. A replayed signed envelope is dropped as a duplicate by the tracker while
//! its origin is remembered (the retention period).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::hmac;

use crate::backplane::BackplaneError;
use crate::envelope::{CodecError, Envelope};

/// Bytes of an HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;

/// The fewest bytes a cluster secret may have (128 bits).
pub const MIN_SECRET_LEN: usize = 16;

/// Domain string of envelope tags.
const ENVELOPE_DOMAIN: &str = "envelope";

/// The secret the nodes of one cluster share to authenticate backplane traffic.
///
/// Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct ClusterSecret {
    /// The HMAC key derived from the secret (the secret itself is not kept).
    key: hmac::Key,
}

impl ClusterSecret {
    /// A secret from raw bytes (at least [`MIN_SECRET_LEN`]; 32 random bytes recommended,
    /// for example `openssl rand -base64 32`).
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] if it is shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, BackplaneError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(BackplaneError::Config(format!(
                "the cluster secret has {} bytes; it needs at least {MIN_SECRET_LEN} (32 random bytes recommended)",
                secret.len()
            )));
        }
        // A key of its own for backplane traffic, so the same secret used elsewhere
        // yields unrelated tags.
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derived = hmac::sign(&root, b"signalr-backplane cluster key v1");
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        })
    }

    /// A secret read from a file: its contents, without a trailing newline.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] if the file cannot be read or the secret is too short
    /// (the message names the file, never its contents).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BackplaneError> {
        let path = path.as_ref();
        let contents = std::fs::read(path).map_err(|error| {
            BackplaneError::Config(format!(
                "cannot read the cluster secret file {}: {error}",
                path.display()
            ))
        })?;
        let trimmed = contents
            .strip_suffix(b"\n")
            .map(|rest| rest.strip_suffix(b"\r").unwrap_or(rest))
            .unwrap_or(&contents);
        Self::new(trimmed).map_err(|error| match error {
            BackplaneError::Config(reason) => {
                BackplaneError::Config(format!("{reason} (file {})", path.display()))
            }
            other => other,
        })
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Encodes and decodes envelopes for a backplane: plain, or signed and verified with a
/// [`ClusterSecret`]. Cheap to clone; clones share the rejection counter.
#[derive(Clone, Debug, Default)]
pub struct EnvelopeCodec {
    /// The key, when the cluster has a secret.
    secret: Option<ClusterSecret>,
    /// Envelopes and notifications dropped because they failed verification (or, for
    /// a backend, because its store did not confirm them).
    rejected: Arc<AtomicU64>,
}

impl EnvelopeCodec {
    /// A codec that signs and verifies with `secret`, or reads and writes plain
    /// envelopes when `None`.
    pub fn new(secret: Option<ClusterSecret>) -> Self {
        Self {
            secret,
            rejected: Arc::default(),
        }
    }

    /// Whether envelopes are signed and verified.
    pub fn is_signed(&self) -> bool {
        self.secret.is_some()
    }

    /// How many bytes signing adds to an encoded envelope (0 without a secret).
    pub fn overhead(&self) -> usize {
        if self.is_signed() { TAG_LEN } else { 0 }
    }

    /// Encode `envelope`, signed if the codec has a secret.
    pub fn encode(&self, envelope: &Envelope) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(envelope.size_hint() + self.overhead());
        envelope.encode_into(&mut bytes);
        if let Some(tag) = self.tag(ENVELOPE_DOMAIN, &[&bytes]) {
            bytes.extend_from_slice(&tag);
        }
        bytes
    }

    /// Decode `bytes`, verifying the tag first if the codec has a secret. A failed
    /// verification is counted ([`EnvelopeCodec::rejected`]); other decoding errors are
    /// not (they are corruption, which the caller accounts for).
    ///
    /// # Errors
    ///
    /// [`CodecError::Unauthenticated`] if the tag is missing or wrong (nothing of the
    /// envelope was decoded), [`CodecError::UnexpectedTag`] if this node has no secret
    /// but the envelope seems signed, or any other [`CodecError`] of [`Envelope::decode`].
    pub fn decode(&self, bytes: &[u8]) -> Result<Envelope, CodecError> {
        let Some(secret) = &self.secret else {
            return Envelope::decode(bytes).map_err(|error| match error {
                CodecError::TrailingBytes(TAG_LEN) => CodecError::UnexpectedTag,
                other => other,
            });
        };
        let Some(split) = bytes.len().checked_sub(TAG_LEN) else {
            self.reject();
            return Err(CodecError::Unauthenticated);
        };
        let (body, tag) = bytes.split_at(split);
        if !verify(secret, ENVELOPE_DOMAIN, &[body], tag) {
            self.reject();
            return Err(CodecError::Unauthenticated);
        }
        Envelope::decode(body)
    }

    /// The tag of `parts` under `domain` (a string naming what is signed, distinct per
    /// kind of data), or `None` without a secret.
    pub fn tag(&self, domain: &str, parts: &[&[u8]]) -> Option<[u8; TAG_LEN]> {
        let secret = self.secret.as_ref()?;
        let mut context = hmac::Context::with_key(&secret.key);
        feed(&mut context, domain, parts);
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(context.sign().as_ref());
        Some(tag)
    }

    /// Whether `tag` is the tag of `parts` under `domain` (in constant time); always
    /// `true` without a secret. Does not count failures: call [`EnvelopeCodec::reject`].
    pub fn verify(&self, domain: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.secret
            .as_ref()
            .is_none_or(|secret| verify(secret, domain, parts, tag))
    }

    /// Count one dropped envelope or notification.
    pub fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Envelopes and notifications dropped since start because they failed verification
    /// or their store did not confirm them.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

fn feed(context: &mut hmac::Context, domain: &str, parts: &[&[u8]]) {
    // Lengths first, so no two different (domain, parts) lists feed the same bytes.
    context.update(&(domain.len() as u64).to_be_bytes());
    context.update(domain.as_bytes());
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
}

fn verify(secret: &ClusterSecret, domain: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut context = hmac::Context::with_key(&secret.key);
    feed(&mut context, domain, parts);
    let expected = context.sign();
    let expected = expected.as_ref();
    // Constant time: every byte is compared whatever the first difference.
    expected.len() == tag.len()
        && expected
            .iter()
            .zip(tag)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Ack, EnvelopeKind};
    use crate::id::NodeId;

    fn envelope() -> Envelope {
        Envelope {
            origin: NodeId::from_u128(7),
            seq: 3,
            hub: "chat".into(),
            destination: None,
            kind: EnvelopeKind::Ack(Ack { ack_id: 1 }),
        }
    }

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text).unwrap()
    }

    #[test]
    fn signed_envelopes_round_trip_and_forgeries_are_counted() {
        let codec = EnvelopeCodec::new(Some(secret("a cluster secret of some length")));
        let bytes = codec.encode(&envelope());
        assert_eq!(bytes.len(), envelope().encode().len() + TAG_LEN);
        assert_eq!(codec.decode(&bytes).unwrap(), envelope());
        assert_eq!(codec.rejected(), 0);

        // Unsigned, signed with another secret, tampered, truncated: all rejected.
        let other = EnvelopeCodec::new(Some(secret("another secret, same length...")));
        let mut tampered = bytes.clone();
        tampered[3] ^= 1;
        for forged in [
            envelope().encode(),
            other.encode(&envelope()),
            tampered,
            bytes[..10].to_vec(),
            Vec::new(),
        ] {
            assert_eq!(codec.decode(&forged), Err(CodecError::Unauthenticated));
        }
        assert_eq!(codec.rejected(), 5);
        let clone = codec.clone();
        clone.reject();
        assert_eq!(codec.rejected(), 6, "clones share the counter");
    }

    #[test]
    fn plain_codec_reads_plain_and_names_signed_envelopes() {
        let plain = EnvelopeCodec::default();
        assert!(!plain.is_signed());
        assert_eq!(plain.encode(&envelope()), envelope().encode());
        assert_eq!(plain.decode(&envelope().encode()).unwrap(), envelope());
        let signed = EnvelopeCodec::new(Some(secret("0123456789abcdef")));
        assert_eq!(
            plain.decode(&signed.encode(&envelope())),
            Err(CodecError::UnexpectedTag)
        );
        assert!(plain.tag("x", &[b"y"]).is_none());
        assert!(plain.verify("x", &[b"y"], b""));
    }

    #[test]
    fn tags_depend_on_domain_and_part_boundaries() {
        let codec = EnvelopeCodec::new(Some(secret("0123456789abcdef")));
        let tag = codec.tag("skip", &[b"ab", b"c"]).unwrap();
        assert!(codec.verify("skip", &[b"ab", b"c"], &tag));
        assert!(!codec.verify("skip", &[b"a", b"bc"], &tag));
        assert!(!codec.verify("other", &[b"ab", b"c"], &tag));
        assert!(!codec.verify("skip", &[b"ab", b"c"], &tag[..31]));
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert!(matches!(
            ClusterSecret::new("short"),
            Err(BackplaneError::Config(_))
        ));
        let dir = std::env::temp_dir().join(format!("cluster-secret-{}", std::process::id()));
        std::fs::write(&dir, "0123456789abcdef\n").unwrap();
        let from_file = ClusterSecret::from_file(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let a = EnvelopeCodec::new(Some(from_file));
        let b = EnvelopeCodec::new(Some(secret("0123456789abcdef")));
        assert_eq!(a.decode(&b.encode(&envelope())).unwrap(), envelope());
        assert_eq!(
            format!("{:?}", secret("0123456789abcdef")),
            "ClusterSecret(<redacted>)"
        );
        let missing = ClusterSecret::from_file("/nonexistent/secret").unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/secret"));
    }
}
