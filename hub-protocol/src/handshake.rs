//! The handshake: the client names a protocol, the server accepts or refuses it.
//!
//! Both messages are JSON text ending with `0x1E`, whatever protocol is requested. With
//! MessagePack, binary hub messages may follow the handshake in the same read; they stay in
//! the buffer for the [`Decoder`](crate::Decoder).

use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::Protocol;
use crate::json::write_escaped_str;
use crate::record::{RECORD_SEPARATOR, RecordScanner};

/// The client's first message: which protocol, and which version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The protocol name as sent, e.g. `"json"` or `"messagepack"`.
    pub protocol: String,
    /// The protocol version; official clients send 2 today, older ones 1, the Python
    /// `signalrcore` 0 or 1 (see [`Protocol::MIN_VERSION`]).
    pub version: u32,
}

impl HandshakeRequest {
    /// The request a client sends to use `protocol` at [`Protocol::VERSION`].
    pub fn new(protocol: Protocol) -> Self {
        HandshakeRequest {
            protocol: protocol.name().to_owned(),
            version: Protocol::VERSION,
        }
    }

    /// The protocol to use for the connection, if this crate supports the one requested.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::UnsupportedProtocol`] or [`HandshakeError::UnsupportedVersion`]; the
    /// server sends the error's text back in its [`HandshakeResponse`].
    pub fn resolve_protocol(&self) -> Result<Protocol, HandshakeError> {
        let protocol = Protocol::from_name(&self.protocol)
            .ok_or_else(|| HandshakeError::UnsupportedProtocol(self.protocol.clone()))?;
        if protocol.supports_version(self.version) {
            Ok(protocol)
        } else {
            Err(HandshakeError::UnsupportedVersion {
                protocol,
                version: self.version,
            })
        }
    }

    /// Appends `{"protocol":"...","version":N}` and `0x1E`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(b"{\"protocol\":");
        write_escaped_str(buf, &self.protocol);
        buf.put_slice(b",\"version\":");
        buf.put_slice(self.version.to_string().as_bytes());
        buf.put_u8(b'}');
        buf.put_u8(RECORD_SEPARATOR);
    }
}

/// The server's answer to the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandshakeResponse {
    /// Why the server refused the handshake; `None` when it accepted. After an error the
    /// server closes the connection.
    pub error: Option<String>,
}

impl HandshakeResponse {
    /// The server accepts the handshake.
    pub fn success() -> Self {
        HandshakeResponse { error: None }
    }

    /// The server refuses the handshake for `reason`.
    pub fn failure(reason: impl Into<String>) -> Self {
        HandshakeResponse {
            error: Some(reason.into()),
        }
    }

    /// Appends `{}` or `{"error":"..."}`, and `0x1E`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match &self.error {
            None => buf.put_slice(b"{}"),
            Some(error) => {
                buf.put_slice(b"{\"error\":");
                write_escaped_str(buf, error);
                buf.put_u8(b'}');
            }
        }
        buf.put_u8(RECORD_SEPARATOR);
    }
}

/// A handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// More than the maximum size arrived without the `0x1E` that ends the handshake.
    #[error("handshake exceeds the maximum size of {limit} bytes")]
    TooLarge {
        /// The maximum the decoder was created with.
        limit: usize,
    },
    /// The handshake is not valid JSON, misses a field, has a mistyped field, or (for a
    /// response) is a hub message instead.
    #[error("invalid handshake: {0}")]
    Invalid(String),
    /// The client asked for a protocol this crate does not implement.
    #[error("the protocol '{0}' is not supported")]
    UnsupportedProtocol(String),
    /// The client asked for a protocol version this crate does not implement.
    #[error("version {version} of the '{protocol}' protocol is not supported")]
    UnsupportedVersion {
        /// The protocol asked for.
        protocol: Protocol,
        /// The version asked for.
        version: u32,
    },
}

/// Reads the handshake from the front of a connection's buffer, as its bytes arrive.
///
/// ```
/// use bytes::BytesMut;
/// use hub_protocol::{HandshakeDecoder, Protocol};
///
/// let mut decoder = HandshakeDecoder::new(32 * 1024);
/// let mut buf = BytesMut::from(&b"{\"protocol\":\"messagepack\",\"vers"[..]);
/// assert!(decoder.decode_request(&mut buf)?.is_none());
/// buf.extend_from_slice(b"ion\":2}\x1e\x02\x91\x06"); // a MessagePack ping follows at once
/// let request = decoder.decode_request(&mut buf)?.expect("complete");
/// assert_eq!(request.resolve_protocol()?, Protocol::MessagePack);
/// assert_eq!(&buf[..], b"\x02\x91\x06"); // left for the hub message decoder
/// # Ok::<(), hub_protocol::HandshakeError>(())
/// ```
#[derive(Debug)]
pub struct HandshakeDecoder {
    /// The largest handshake accepted, not counting its `0x1E`.
    max_size: usize,
    /// How far the partial handshake was already searched for `0x1E`.
    scanner: RecordScanner,
}

#[derive(Deserialize)]
struct RawRequest {
    protocol: Option<String>,
    version: Option<u32>,
}

#[derive(Deserialize)]
struct RawResponse {
    error: Option<String>,
    #[serde(rename = "type")]
    message_type: Option<IgnoredAny>,
}

impl HandshakeDecoder {
    /// A decoder that gives up once `max_size` bytes arrived without a complete handshake.
    pub fn new(max_size: usize) -> Self {
        HandshakeDecoder {
            max_size,
            scanner: RecordScanner::default(),
        }
    }

    /// Server side: removes the client's handshake request from the front of `buf`.
    ///
    /// Returns `Ok(None)` until its `0x1E` has arrived. Bytes after the `0x1E` are left in
    /// `buf`. Unknown fields are ignored. The requested protocol is not checked here; see
    /// [`HandshakeRequest::resolve_protocol`].
    ///
    /// # Errors
    ///
    /// [`HandshakeError::TooLarge`] (nothing is consumed) or [`HandshakeError::Invalid`]
    /// (the handshake is consumed), e.g. when a hub message arrives before the handshake.
    pub fn decode_request(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<HandshakeRequest>, HandshakeError> {
        let Some(frame) = self.next_frame(buf)? else {
            return Ok(None);
        };
        let raw: RawRequest = parse_object(&frame)?;
        let protocol = raw.protocol.ok_or_else(|| {
            HandshakeError::Invalid("missing required property 'protocol'".into())
        })?;
        let version = raw
            .version
            .ok_or_else(|| HandshakeError::Invalid("missing required property 'version'".into()))?;
        Ok(Some(HandshakeRequest { protocol, version }))
    }

    /// Client side: removes the server's handshake response from the front of `buf`.
    ///
    /// Returns `Ok(None)` until its `0x1E` has arrived. Bytes after the `0x1E` (hub messages
    /// the server sent right away) are left in `buf`. An empty error string counts as
    /// success, as in the official clients.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::TooLarge`] (nothing is consumed) or [`HandshakeError::Invalid`]
    /// (the response is consumed), including when the server sent a hub message instead.
    pub fn decode_response(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<HandshakeResponse>, HandshakeError> {
        let Some(frame) = self.next_frame(buf)? else {
            return Ok(None);
        };
        let raw: RawResponse = parse_object(&frame)?;
        if raw.message_type.is_some() {
            return Err(HandshakeError::Invalid(
                "expected a handshake response from the server, received a hub message".into(),
            ));
        }
        Ok(Some(HandshakeResponse {
            error: raw.error.filter(|error| !error.is_empty()),
        }))
    }

    /// Removes the front record and its separator, returning the record.
    fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, HandshakeError> {
        let limit = self.max_size;
        let Some(len) = self
            .scanner
            .next_record(buf, limit)
            .map_err(|_| HandshakeError::TooLarge { limit })?
        else {
            return Ok(None);
        };
        let mut frame = buf.split_to(len + 1);
        frame.truncate(len);
        Ok(Some(frame))
    }
}

/// Parses a handshake message, which must be a JSON object.
fn parse_object<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, HandshakeError> {
    let first = frame.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(HandshakeError::Invalid(
            "the handshake must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(frame).map_err(|error| HandshakeError::Invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_request(bytes: &[u8]) -> Result<Option<HandshakeRequest>, HandshakeError> {
        HandshakeDecoder::new(1024).decode_request(&mut BytesMut::from(bytes))
    }

    #[test]
    fn requests_from_official_clients() {
        let request = decode_request(b"{\"protocol\":\"json\",\"version\":2}\x1e")
            .unwrap()
            .unwrap();
        assert_eq!(request, HandshakeRequest::new(Protocol::Json));
        assert_eq!(request.resolve_protocol().unwrap(), Protocol::Json);

        // Older clients send version 1; whitespace and unknown fields are fine.
        let request =
            decode_request(b" { \"version\": 1, \"protocol\": \"messagepack\", \"x\": [1] } \x1e")
                .unwrap()
                .unwrap();
        assert_eq!(request.resolve_protocol().unwrap(), Protocol::MessagePack);

        // signalrcore sends the negotiate version, 0, as its protocol version.
        for (bytes, protocol) in [
            (
                &b"{\"protocol\": \"json\", \"version\": 0}\x1e"[..],
                Protocol::Json,
            ),
            (
                b"{\"protocol\": \"messagepack\", \"version\": 0}\x1e",
                Protocol::MessagePack,
            ),
        ] {
            let request = decode_request(bytes).unwrap().unwrap();
            assert_eq!(request.version, 0);
            assert_eq!(request.resolve_protocol().unwrap(), protocol);
        }
    }

    #[test]
    fn request_encoding_is_what_clients_send() {
        let mut buf = BytesMut::new();
        HandshakeRequest::new(Protocol::MessagePack).encode(&mut buf);
        assert_eq!(
            &buf[..],
            b"{\"protocol\":\"messagepack\",\"version\":2}\x1e"
        );
    }

    #[test]
    fn unsupported_protocols_and_versions() {
        let request = HandshakeRequest {
            protocol: "blazorpack".into(),
            version: 1,
        };
        assert_eq!(
            request.resolve_protocol().unwrap_err().to_string(),
            "the protocol 'blazorpack' is not supported"
        );
        let request = HandshakeRequest {
            protocol: "json".into(),
            version: 3,
        };
        assert_eq!(
            request.resolve_protocol().unwrap_err().to_string(),
            "version 3 of the 'json' protocol is not supported"
        );
    }

    #[test]
    fn malformed_requests() {
        for bytes in [
            &b"{\"protocol\":\"json\"}\x1e"[..],
            b"{\"version\":1}\x1e",
            b"{\"protocol\":1,\"version\":1}\x1e",
            b"{\"protocol\":\"json\",\"version\":-1}\x1e",
            b"{\"protocol\":\"json\",\"version\":\"1\"}\x1e",
            b"{\"type\":1,\"target\":\"Send\",\"arguments\":[]}\x1e",
            b"[\"json\",1]\x1e",
            b"{\x1e",
            b"\x1e",
            b"\xff\xfe\x1e",
        ] {
            assert!(
                matches!(decode_request(bytes), Err(HandshakeError::Invalid(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn oversized_request_is_refused_before_its_end_arrives() {
        let mut decoder = HandshakeDecoder::new(16);
        let mut buf = BytesMut::from(&b"{\"protocol\":\"json\""[..]);
        assert!(matches!(
            decoder.decode_request(&mut buf),
            Err(HandshakeError::TooLarge { limit: 16 })
        ));
    }

    #[test]
    fn responses() {
        let mut buf = BytesMut::new();
        HandshakeResponse::success().encode(&mut buf);
        HandshakeResponse::failure("Requested protocol 'x' is not \"available\".").encode(&mut buf);
        assert_eq!(
            &buf[..],
            &b"{}\x1e{\"error\":\"Requested protocol 'x' is not \\\"available\\\".\"}\x1e"[..]
        );
        let mut decoder = HandshakeDecoder::new(1024);
        assert_eq!(
            decoder.decode_response(&mut buf).unwrap(),
            Some(HandshakeResponse::success())
        );
        assert_eq!(
            decoder.decode_response(&mut buf).unwrap(),
            Some(HandshakeResponse::failure(
                "Requested protocol 'x' is not \"available\"."
            ))
        );
        assert!(buf.is_empty());

        let mut buf =
            BytesMut::from(&b"{\"error\":\"\",\"minorVersion\":1}\x1e{\"type\":6}\x1e"[..]);
        assert_eq!(
            decoder.decode_response(&mut buf).unwrap(),
            Some(HandshakeResponse::success())
        );
        assert_eq!(&buf[..], b"{\"type\":6}\x1e");
        assert!(matches!(
            decoder.decode_response(&mut buf),
            Err(HandshakeError::Invalid(_))
        ));
    }
}
