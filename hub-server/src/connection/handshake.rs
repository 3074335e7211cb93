//! The SignalR handshake: the first message each way, which agrees on the hub protocol.

use bytes::BytesMut;
use hub_protocol::{HandshakeDecoder, HandshakeError, HandshakeResponse, Protocol, TransferFormat};
use tokio::time::{Instant, timeout, timeout_at};

use super::CLOSE_FLUSH_TIMEOUT;
use crate::hub::HubShared;
use crate::transport::{FrameSink, Incoming, Received, TransportError};

/// Read the handshake request and answer it. Returns the agreed protocol and the version
/// the client asked for, or `None` once
/// the connection has been answered with an error (or went away). Bytes that followed the
/// handshake stay in `buf`.
pub(super) async fn run<I: Incoming, S: FrameSink>(
    hub: &HubShared,
    sink: &mut S,
    incoming: &mut I,
    buf: &mut BytesMut,
) -> Option<(Protocol, u32)> {
    let deadline = Instant::now() + hub.options.handshake_timeout;
    let mut decoder = HandshakeDecoder::new(hub.options.max_message_size);
    loop {
        match decoder.decode_request(buf) {
            Ok(Some(request)) => {
                return match request.resolve_protocol() {
                    Ok(protocol)
                        if protocol.transfer_format() == TransferFormat::Binary
                            && !S::SUPPORTS_BINARY =>
                    {
                        // ASP.NET Core's wording; the official clients skip such
                        // transports for binary protocols, so only a hand-made client
                        // gets here.
                        let text = format!(
                            "Cannot use the '{protocol}' protocol on the current transport. The transport does not support 'Binary' transfer format: use the JSON protocol or another transport."
                        );
                        fail(sink, &text).await;
                        None
                    }
                    Ok(protocol) => {
                        let mut response = BytesMut::new();
                        HandshakeResponse::success().encode(&mut response);
                        // After the handshake the connection uses its protocol's transfer
                        // format, and so does the response (as ASP.NET Core does).
                        let format = protocol.transfer_format();
                        sink.feed(response.freeze(), format).await.ok()?;
                        sink.flush().await.ok()?;
                        tracing::debug!(hub = %hub.name, %protocol, version = request.version, "handshake complete");
                        Some((protocol, request.version))
                    }
                    Err(error) => {
                        fail(sink, &error_text(&error)).await;
                        None
                    }
                };
            }
            Ok(None) => {}
            Err(error) => {
                fail(sink, &error_text(&error)).await;
                return None;
            }
        }
        match timeout_at(deadline, incoming.read(buf)).await {
            Err(_elapsed) => {
                let text = format!(
                    "Handshake was not received within the handshake timeout of {:?}.",
                    hub.options.handshake_timeout
                );
                fail(sink, &text).await;
                return None;
            }
            Ok(Ok(Received::Activity | Received::Resumed)) => {}
            Ok(Ok(Received::Closed | Received::Lost)) | Ok(Err(TransportError::Io(_))) => {
                return None;
            }
            Ok(Err(TransportError::Violation(reason))) => {
                tracing::debug!(hub = %hub.name, reason, "transport violation before the handshake");
                let _ = timeout(CLOSE_FLUSH_TIMEOUT, sink.close()).await;
                return None;
            }
        }
    }
}

/// Wording of handshake failures, as ASP.NET Core words them where it has a text.
fn error_text(error: &HandshakeError) -> String {
    match error {
        HandshakeError::UnsupportedProtocol(name) => {
            format!("The protocol '{name}' is not supported.")
        }
        HandshakeError::UnsupportedVersion { protocol, version } => {
            format!("The server does not support version {version} of the '{protocol}' protocol.")
        }
        HandshakeError::TooLarge { limit } => {
            format!("The handshake request exceeds the maximum message size of {limit} bytes.")
        }
        HandshakeError::Invalid(reason) => {
            format!("The handshake request is invalid: {reason}.")
        }
    }
}

/// Answer the handshake with an error and close the transport.
pub(super) async fn fail<S: FrameSink>(sink: &mut S, text: &str) {
    tracing::debug!(error = text, "handshake failed");
    let mut response = BytesMut::new();
    HandshakeResponse::failure(text).encode(&mut response);
    // Before a protocol is agreed, errors go out as text, which every client reads.
    let answer = async {
        sink.feed(response.freeze(), TransferFormat::Text).await?;
        sink.close().await
    };
    let _ = timeout(CLOSE_FLUSH_TIMEOUT, answer).await;
}
