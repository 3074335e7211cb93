//! Establishing one physical connection and carrying frames over it: negotiate, pick a
//! transport in the official clients' order, open it, do the handshake.
//!
//! Three thin transports sit behind one [`Transport`] that sends frames, receives bytes
//! and closes; everything above it (handshake here, hub messages, keep-alive and stateful
//! reconnect in the driver) is written once, whatever carries the bytes.
//!
//! - `websocket`: frames as WebSocket text (JSON) or binary (MessagePack) messages.
//! - `sse`: Server-Sent Events, `GET` with `Accept: text/event-stream`, one `data:` event
//!   per frame; text only, so JSON only.
//! - `long_polling`: a loop of `GET` polls, each answered with the frames pending, `204`
//!   once the server closed the connection; `DELETE` ends it.
//! - `http_transport`: what the last two share: frames from a reader task, sends as
//!   `POST {hub}?id=`, close.

mod http_transport;
mod long_polling;
mod sse;
mod websocket;

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hub_protocol::{HandshakeDecoder, HandshakeRequest, Protocol, TransferFormat};

use crate::config::Config;
use crate::error::{ConnectError, DisconnectReason};
use crate::negotiate::{Negotiated, negotiate};
use crate::url::HubUrl;

use http_transport::HttpTransport;
use websocket::WebSocketTransport;

/// The largest handshake response accepted; real ones are `{}` plus a separator.
const MAX_HANDSHAKE_SIZE: usize = 16 * 1024;

/// One of the three SignalR transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportType {
    /// WebSockets: one full-duplex connection; the only one that works without negotiate
    /// and the only one with stateful reconnect.
    WebSockets,
    /// Server-Sent Events: an event stream from the server, sends as HTTP `POST`s. Text
    /// only, so JSON only.
    ServerSentEvents,
    /// Long polling: repeated `GET` polls, sends as HTTP `POST`s.
    LongPolling,
}

impl TransportType {
    /// The three transports in the order the official clients try them.
    pub const ALL: [TransportType; 3] = [
        TransportType::WebSockets,
        TransportType::ServerSentEvents,
        TransportType::LongPolling,
    ];

    /// The name negotiate uses (`WebSockets`, `ServerSentEvents`, `LongPolling`).
    pub fn name(self) -> &'static str {
        match self {
            TransportType::WebSockets => "WebSockets",
            TransportType::ServerSentEvents => "ServerSentEvents",
            TransportType::LongPolling => "LongPolling",
        }
    }

    /// The transport negotiate calls `name` (exact spelling, as the official clients
    /// compare).
    pub fn from_name(name: &str) -> Option<TransportType> {
        TransportType::ALL
            .into_iter()
            .find(|transport| transport.name() == name)
    }

    /// Whether it can carry a protocol needing `format`.
    pub fn supports(self, format: TransferFormat) -> bool {
        self != TransportType::ServerSentEvents || format == TransferFormat::Text
    }
}

impl fmt::Display for TransportType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The transports a connection may use (the JavaScript client's `transport` option). The
/// client tries them in the order negotiate lists them, which is the official order
/// (WebSockets, Server-Sent Events, long polling), whatever order they are given in here.
///
/// ```
/// use chat_client::{TransportType, Transports};
///
/// let http_only: Transports = [TransportType::ServerSentEvents, TransportType::LongPolling]
///     .into_iter()
///     .collect();
/// assert!(!http_only.contains(TransportType::WebSockets));
/// assert!(Transports::ALL.contains(TransportType::LongPolling));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transports {
    /// One flag per [`TransportType`], in [`TransportType::ALL`]'s order.
    allowed: [bool; 3],
}

impl Transports {
    /// Every transport: the default.
    pub const ALL: Transports = Transports { allowed: [true; 3] };

    /// Whether `transport` may be used.
    pub fn contains(self, transport: TransportType) -> bool {
        self.allowed[transport as usize]
    }

    /// Whether no transport may be used.
    pub fn is_empty(self) -> bool {
        !self.allowed.iter().any(|allowed| *allowed)
    }

    /// The allowed transports, in the official order.
    pub fn iter(self) -> impl Iterator<Item = TransportType> {
        TransportType::ALL
            .into_iter()
            .filter(move |transport| self.contains(*transport))
    }
}

impl Default for Transports {
    fn default() -> Self {
        Transports::ALL
    }
}

impl From<TransportType> for Transports {
    fn from(transport: TransportType) -> Self {
        std::iter::once(transport).collect()
    }
}

impl FromIterator<TransportType> for Transports {
    fn from_iter<I: IntoIterator<Item = TransportType>>(iter: I) -> Self {
        let mut transports = Transports {
            allowed: [false; 3],
        };
        for transport in iter {
            transports.allowed[transport as usize] = true;
        }
        transports
    }
}

impl fmt::Display for Transports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(TransportType::name).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// An open transport, whichever it is.
#[derive(Debug)]
pub(crate) enum Transport {
    /// A WebSocket.
    WebSocket(WebSocketTransport),
    /// Server-Sent Events or long polling.
    Http(HttpTransport),
}

impl Transport {
    /// Which transport this is.
    pub(crate) fn transport_type(&self) -> TransportType {
        match self {
            Transport::WebSocket(_) => TransportType::WebSockets,
            Transport::Http(http) => http.transport_type(),
        }
    }

    /// Sends one or more complete frames in `format`.
    ///
    /// # Errors
    ///
    /// Why the transport cannot carry them: it is lost.
    pub(crate) async fn send(
        &mut self,
        frames: Bytes,
        format: TransferFormat,
    ) -> Result<(), DisconnectReason> {
        self.send_each(std::slice::from_ref(&frames), format).await
    }

    /// Sends several messages' frames, in order: over a WebSocket each as a message of its
    /// own with one flush at the end, over HTTP one request each.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub(crate) async fn send_each(
        &mut self,
        frames: &[Bytes],
        format: TransferFormat,
    ) -> Result<(), DisconnectReason> {
        match self {
            Transport::WebSocket(socket) => socket.send_each(frames, format).await,
            Transport::Http(http) => {
                for frames in frames {
                    http.send(frames.clone(), format).await?;
                }
                Ok(())
            }
        }
    }

    /// The next bytes from the server, which may be empty (a WebSocket ping: the server
    /// lives). Cancel-safe, so the driver can race it against its other work.
    ///
    /// # Errors
    ///
    /// [`DisconnectReason::TransportClosed`] when the server ended the transport, or what
    /// failed.
    pub(crate) async fn receive(&mut self) -> Result<Bytes, DisconnectReason> {
        match self {
            Transport::WebSocket(socket) => socket.receive().await,
            Transport::Http(http) => http.receive().await,
        }
    }

    /// Ends the transport politely (WebSocket close handshake, long polling's `DELETE`).
    pub(crate) async fn close(&mut self) {
        match self {
            Transport::WebSocket(socket) => socket.close().await,
            Transport::Http(http) => http.close().await,
        }
    }
}

/// What a connection with stateful reconnect needs to open a new WebSocket to itself.
#[derive(Debug, Clone)]
pub(crate) struct ResumeTicket {
    /// The hub URL negotiate settled on.
    url: HubUrl,
    /// The connection token the server knows the connection by.
    connection_token: String,
    /// The access token a negotiate redirect handed out, used when there is no provider.
    access_token: Option<String>,
}

impl ResumeTicket {
    pub(crate) fn new(url: HubUrl, connection_token: String, access_token: Option<String>) -> Self {
        ResumeTicket {
            url,
            connection_token,
            access_token,
        }
    }
}

/// An established connection, handshake done, ready for hub messages.
#[derive(Debug)]
pub(crate) struct Link {
    /// The transport.
    pub(crate) transport: Transport,
    /// Bytes received after the handshake response: the first hub messages, which must not
    /// be lost.
    pub(crate) received: BytesMut,
    /// The connection id from negotiate; `None` when negotiate was skipped.
    pub(crate) connection_id: Option<String>,
    /// Present when the server granted stateful reconnect (WebSockets only).
    pub(crate) resume: Option<ResumeTicket>,
}

/// Negotiates (unless configured not to), opens the first transport that works in the
/// order negotiate lists them, and completes the handshake over it.
///
/// A transport that fails to open is skipped for the next one, after a new negotiate (the
/// failed attempt may have used up the connection token), as the official clients do. A
/// handshake that fails is final: the transport worked, the server refused.
///
/// # Errors
///
/// Every [`ConnectError`] a step can produce, including timeouts; when several transports
/// were tried, [`ConnectError::AllTransportsFailed`] with each one's error.
pub(crate) async fn connect(config: &Config) -> Result<Link, ConnectError> {
    let access_token = match &config.access_token {
        Some(provider) => provider.token().await?,
        None => None,
    };
    if config.skip_negotiation {
        let socket = with_timeout(
            config,
            "websocket connection",
            WebSocketTransport::open(&config.url, None, access_token.as_deref(), config),
        )
        .await?;
        return finish(config, Transport::WebSocket(socket), None, None).await;
    }
    let format = config.protocol.transfer_format();
    let mut negotiated = negotiate(config, access_token).await?;
    let candidates: Vec<TransportType> = negotiated
        .transports
        .iter()
        .filter(|(transport, formats)| {
            config.transports.contains(*transport)
                && transport.supports(format)
                && formats.contains(&format)
        })
        .map(|(transport, _)| *transport)
        .collect();
    if candidates.is_empty() {
        return Err(ConnectError::NoTransport {
            format,
            allowed: config.transports,
            offered: negotiated.describe_transports(),
        });
    }
    let mut failures = Vec::new();
    for (attempt, transport) in candidates.into_iter().enumerate() {
        if attempt > 0 {
            let access_token = match &config.access_token {
                Some(provider) => provider.token().await?,
                None => negotiated.access_token.clone(),
            };
            negotiated = negotiate(config, access_token).await?;
        }
        match open(config, transport, &negotiated).await {
            Ok(opened) => {
                tracing::debug!(%transport, "transport open");
                let resume = (transport == TransportType::WebSockets
                    && negotiated.use_stateful_reconnect)
                    .then(|| {
                        ResumeTicket::new(
                            negotiated.url.clone(),
                            negotiated.connection_token.clone(),
                            negotiated.access_token.clone(),
                        )
                    });
                return finish(config, opened, Some(negotiated.connection_id), resume).await;
            }
            Err(error) => {
                tracing::info!(%transport, %error, "transport failed; trying the next one");
                failures.push((transport, error));
            }
        }
    }
    if failures.len() == 1
        && let Some((_, error)) = failures.pop()
    {
        // The only attempt's error says it best.
        return Err(error);
    }
    Err(ConnectError::AllTransportsFailed(
        failures
            .into_iter()
            .map(|(transport, error)| (transport, Arc::new(error)))
            .collect(),
    ))
}

/// Opens `transport` with what negotiate gave, within the connect timeout.
async fn open(
    config: &Config,
    transport: TransportType,
    negotiated: &Negotiated,
) -> Result<Transport, ConnectError> {
    let url = &negotiated.url;
    let token = negotiated.connection_token.as_str();
    let access_token = negotiated.access_token.as_deref();
    match transport {
        TransportType::WebSockets => with_timeout(
            config,
            "websocket connection",
            WebSocketTransport::open(url, Some(token), access_token, config),
        )
        .await
        .map(Transport::WebSocket),
        TransportType::ServerSentEvents => with_timeout(
            config,
            "event stream connection",
            sse::open(url, token, access_token, config),
        )
        .await
        .map(Transport::Http),
        TransportType::LongPolling => with_timeout(
            config,
            "first poll",
            long_polling::open(url, token, access_token, config),
        )
        .await
        .map(Transport::Http),
    }
}

/// Opens a new WebSocket to the live connection of `ticket` (stateful reconnect). No
/// handshake: the server's connection goes on where it was.
///
/// # Errors
///
/// Why the WebSocket could not be opened (a 404 once the server gave the connection up).
pub(crate) async fn reattach(
    config: &Config,
    ticket: &ResumeTicket,
) -> Result<Transport, ConnectError> {
    let access_token = match &config.access_token {
        Some(provider) => provider.token().await?,
        None => ticket.access_token.clone(),
    };
    let socket = with_timeout(
        config,
        "websocket reconnection",
        WebSocketTransport::open(
            &ticket.url,
            Some(&ticket.connection_token),
            access_token.as_deref(),
            config,
        ),
    )
    .await?;
    Ok(Transport::WebSocket(socket))
}

/// Runs `step` within the connect timeout.
async fn with_timeout<T>(
    config: &Config,
    step: &'static str,
    future: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(config.connect_timeout, future)
        .await
        .map_err(|_| ConnectError::Timeout {
            step,
            after: config.connect_timeout,
        })?
}

/// Does the handshake on an open transport; closes it if the handshake fails.
async fn finish(
    config: &Config,
    mut transport: Transport,
    connection_id: Option<String>,
    resume: Option<ResumeTicket>,
) -> Result<Link, ConnectError> {
    let handshake = handshake(&mut transport, config.protocol);
    let result = tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout {
            step: "handshake",
            after: config.handshake_timeout,
        })
        .and_then(|result| result);
    match result {
        Ok(received) => Ok(Link {
            transport,
            received,
            connection_id,
            resume,
        }),
        Err(error) => {
            transport.close().await;
            Err(error)
        }
    }
}

/// Sends the handshake request and reads the response; returns what followed it.
async fn handshake(
    transport: &mut Transport,
    protocol: Protocol,
) -> Result<BytesMut, ConnectError> {
    let mut request = BytesMut::new();
    HandshakeRequest::new(protocol).encode(&mut request);
    // The handshake is JSON text whatever the protocol; the official clients send it as
    // text.
    transport
        .send(request.freeze(), TransferFormat::Text)
        .await
        .map_err(|error| ConnectError::InvalidHandshake(error.to_string()))?;

    let mut decoder = HandshakeDecoder::new(MAX_HANDSHAKE_SIZE);
    let mut received = BytesMut::new();
    loop {
        match decoder.decode_response(&mut received) {
            Ok(Some(response)) => {
                return match response.error {
                    None => Ok(received),
                    Some(error) => Err(ConnectError::HandshakeRejected(error)),
                };
            }
            Ok(None) => {}
            Err(error) => return Err(ConnectError::InvalidHandshake(error.to_string())),
        }
        match transport.receive().await {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(DisconnectReason::TransportClosed) => {
                return Err(ConnectError::ClosedDuringHandshake);
            }
            Err(error) => return Err(ConnectError::InvalidHandshake(error.to_string())),
        }
    }
}
