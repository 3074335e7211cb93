//! What can go wrong: starting a connection, calling the hub, and losing the connection.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hub_protocol::{EncodeError, ValueError};

use crate::transport::{TransportType, Transports};

/// The error type access token providers return: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A connection could not be established (by [`HubConnection::start`] or a reconnect
/// attempt).
///
/// [`HubConnection::start`]: crate::HubConnection::start
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The hub URL cannot be used.
    #[error("invalid hub url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No TCP connection could be made to the server.
    #[error("cannot connect to {address}: {source}")]
    Unreachable {
        /// The `host:port` that was dialed.
        address: String,
        /// The operating system's reason (refused, no route, name not resolved...).
        source: std::io::Error,
    },
    /// An HTTP request (negotiate, or a request of the Server-Sent Events or long-polling
    /// transport) failed at the HTTP level (connection reset, malformed answer).
    #[error("http request to {url} failed: {source}")]
    Http {
        /// The hub URL being negotiated with.
        url: String,
        /// What the HTTP client reported.
        source: hyper::Error,
    },
    /// The server answered negotiate with a non-success status, e.g. 404 when there is no
    /// hub at that path or 401 when an access token is required.
    #[error(
        "negotiate request to {url} failed with status {status}{}",
        explained(reason)
    )]
    #[non_exhaustive]
    Status {
        /// The hub URL being negotiated with.
        url: String,
        /// The HTTP status received.
        status: hyper::StatusCode,
        /// The server's explanation (its answer's text, up to 300 characters, control
        /// characters removed), as the official clients show it; empty when it gave none.
        reason: String,
    },
    /// An HTTP answer was larger than the client accepts.
    #[error("the answer from {url} is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The hub URL the request went to.
        url: String,
        /// The largest answer accepted.
        limit: usize,
    },
    /// The negotiate response is not what the protocol describes.
    #[error("invalid negotiate response from {url}: {reason}")]
    InvalidNegotiateResponse {
        /// The hub URL being negotiated with.
        url: String,
        /// What is wrong with the response.
        reason: String,
    },
    /// The server refused the connection in its negotiate response (`{"error": ...}`).
    #[error("the server refused the connection: {0}")]
    Refused(String),
    /// Negotiate redirected more than 100 times, the limit of the official clients.
    #[error("negotiate redirection limit exceeded")]
    TooManyRedirects,
    /// The server offers none of the transports the client may use with the transfer
    /// format its protocol needs (Server-Sent Events carry text only, so MessagePack cannot
    /// use them).
    #[error(
        "the server offers no transport this client may use with the {format} transfer format (client: {allowed}; server: {offered})"
    )]
    NoTransport {
        /// The transfer format the hub protocol needs (`Text` or `Binary`).
        format: hub_protocol::TransferFormat,
        /// The transports the client was allowed to use.
        allowed: Transports,
        /// What negotiate offered, as `name (formats)` entries.
        offered: String,
    },
    /// A transport could not be opened: its request was refused or failed.
    #[error("{transport} failed: {reason}")]
    TransportFailed {
        /// The transport tried.
        transport: TransportType,
        /// Why it failed.
        reason: String,
    },
    /// Every transport the server offered and the client may use failed to open; each
    /// failure in the order tried.
    #[error("unable to connect with any of the available transports: {}", list_failures(.0))]
    AllTransportsFailed(Vec<(TransportType, Arc<ConnectError>)>),
    /// The builder's options contradict each other.
    #[error("invalid options: {0}")]
    InvalidOptions(&'static str),
    /// The access token provider failed.
    #[error("the access token provider failed: {0}")]
    AccessToken(#[source] BoxError),
    /// The WebSocket could not be opened (the HTTP upgrade was refused or failed).
    #[error("websocket connection to {url} failed: {source}")]
    WebSocket {
        /// The hub URL, without query.
        url: String,
        /// What the WebSocket client reported.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The server rejected the hub protocol handshake.
    #[error("the server rejected the handshake: {0}")]
    HandshakeRejected(String),
    /// The server's handshake response could not be understood.
    #[error("invalid handshake response: {0}")]
    InvalidHandshake(String),
    /// The server closed the connection before the handshake completed.
    #[error("the server closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// A step of connecting took longer than its configured timeout.
    #[error("{step} timed out after {after:?}")]
    Timeout {
        /// Which step: "negotiate", "websocket connection" or "handshake".
        step: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// [`HubConnection::start`] was called on a connection that is not disconnected.
    ///
    /// [`HubConnection::start`]: crate::HubConnection::start
    #[error("cannot start a connection that is {0}")]
    InvalidState(crate::HubConnectionState),
    /// [`HubConnection::stop`] was called while the connection was being established.
    ///
    /// [`HubConnection::stop`]: crate::HubConnection::stop
    #[error("the connection was stopped while connecting")]
    Stopped,
}

/// `WebSockets failed: ...; ServerSentEvents failed: ...`.
fn list_failures(failures: &[(TransportType, Arc<ConnectError>)]) -> String {
    failures
        .iter()
        .map(|(transport, error)| format!("{transport}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A call to the hub ([`invoke`](crate::HubConnection::invoke) or
/// [`send`](crate::HubConnection::send)) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// The connection is not connected (not started yet, reconnecting, or closed).
    #[error("cannot send to the hub: the connection is {0}")]
    NotConnected(crate::HubConnectionState),
    /// The arguments could not be serialized.
    #[error("cannot serialize the arguments: {0}")]
    Encode(#[from] EncodeError),
    /// The hub method failed: the error message the server sent in its completion.
    /// ASP.NET Core sends a generic message unless the server enables detailed errors.
    #[error("the hub method failed: {0}")]
    Hub(String),
    /// The result does not deserialize into the requested type.
    #[error("cannot deserialize the result: {0}")]
    InvalidResult(#[source] ValueError),
    /// The connection was lost before the message was sent or its completion arrived. The
    /// call may or may not have run on the server.
    #[error("the connection was lost before the call completed: {0}")]
    ConnectionLost(DisconnectReason),
    /// [`HubConnection::stop`](crate::HubConnection::stop) was called before the completion
    /// arrived.
    #[error("the connection was stopped before the call completed")]
    Stopped,
}

/// Why an established connection ended; given to reconnecting and closed event handlers and
/// carried by [`InvokeError::ConnectionLost`].
///
/// Cheap to clone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server sent a Close message.
    ServerClosed {
        /// The error the server gave, if it closed because of one.
        error: Option<String>,
        /// Whether the server allows an automatic reconnect.
        allow_reconnect: bool,
    },
    /// The transport ended without a hub Close message (server stopped, network gone, the
    /// event stream ended, a poll was answered 204).
    TransportClosed,
    /// The WebSocket failed.
    Transport(Arc<tokio_tungstenite::tungstenite::Error>),
    /// A request of the Server-Sent Events or long-polling transport failed.
    HttpTransport {
        /// Which transport.
        transport: TransportType,
        /// What failed.
        reason: String,
    },
    /// Stateful reconnect cannot go on: the server's Ack or Sequence does not match what
    /// was sent and received, so messages would be lost.
    Sequence(hub_protocol::replay::SequenceError),
    /// Nothing arrived from the server within the server timeout.
    ServerTimeout(Duration),
    /// The server sent bytes that are not a valid hub message; the stream cannot be trusted.
    InvalidMessage(Arc<hub_protocol::DecodeError>),
    /// Automatic reconnect gave up; `last_error` is why the last attempt failed.
    ReconnectFailed {
        /// How many reconnect attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        last_error: Arc<ConnectError>,
    },
}

impl DisconnectReason {
    /// Whether automatic reconnect may be attempted: false only when the server said so in
    /// its Close message.
    pub fn allows_reconnect(&self) -> bool {
        match self {
            DisconnectReason::ServerClosed {
                allow_reconnect, ..
            } => *allow_reconnect,
            _ => true,
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ServerClosed { error: None, .. } => {
                f.write_str("the server closed the connection")
            }
            DisconnectReason::ServerClosed {
                error: Some(error), ..
            } => write!(f, "the server closed the connection with an error: {error}"),
            DisconnectReason::TransportClosed => f.write_str("the server closed the transport"),
            DisconnectReason::Transport(error) => write!(f, "websocket error: {error}"),
            DisconnectReason::HttpTransport { transport, reason } => {
                write!(f, "{transport} error: {reason}")
            }
            DisconnectReason::Sequence(error) => write!(f, "stateful reconnect failed: {error}"),
            DisconnectReason::ServerTimeout(after) => write!(
                f,
                "server timeout elapsed: nothing received from the server for {after:?}"
            ),
            DisconnectReason::InvalidMessage(error) => {
                write!(f, "invalid message from the server: {error}")
            }
            DisconnectReason::ReconnectFailed {
                attempts,
                last_error,
            } => write!(
                f,
                "gave up reconnecting after {attempts} attempt(s): {last_error}"
            ),
        }
    }
}

impl std::error::Error for DisconnectReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DisconnectReason::Transport(error) => Some(error.as_ref()),
            DisconnectReason::Sequence(error) => Some(error),
            DisconnectReason::InvalidMessage(error) => Some(error.as_ref()),
            DisconnectReason::ReconnectFailed { last_error, .. } => Some(last_error.as_ref()),
            _ => None,
        }
    }
}

/// `reason` as the end of an error message: `": reason"`, or nothing when empty.
fn explained(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}
