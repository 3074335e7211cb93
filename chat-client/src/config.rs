//! Building a connection: the hub URL and every option, with the official clients' defaults.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hub_protocol::{HubMessage, Protocol};

use crate::connection::HubConnection;
use crate::error::{BoxError, ConnectError};
use crate::reconnect::{BoxedPolicy, ReconnectDelays, ReconnectPolicy};
use crate::token::AccessTokenProvider;
use crate::transport::{TransportType, Transports};
use crate::url::HubUrl;

/// The settings of one connection, fixed when it is built.
#[derive(Debug)]
pub(crate) struct Config {
    /// The hub URL, parsed once.
    pub(crate) url: HubUrl,
    /// JSON or MessagePack.
    pub(crate) protocol: Protocol,
    /// Open the WebSocket directly, without negotiate.
    pub(crate) skip_negotiation: bool,
    /// The transports the connection may use.
    pub(crate) transports: Transports,
    /// Ask for stateful reconnect in negotiate.
    pub(crate) stateful_reconnect: bool,
    /// With stateful reconnect: how many bytes of sent messages to keep until the server
    /// acknowledges them.
    pub(crate) stateful_reconnect_buffer_size: usize,
    /// Asked for a bearer token before every connection attempt.
    pub(crate) access_token: Option<AccessTokenProvider>,
    /// Send a Ping when nothing was sent for this long, so the server does not time us out.
    pub(crate) keep_alive_interval: Duration,
    /// Consider the connection dead when nothing was received for this long.
    pub(crate) server_timeout: Duration,
    /// How long the server may take to answer the handshake.
    pub(crate) handshake_timeout: Duration,
    /// How long each negotiate request and the WebSocket opening may take.
    pub(crate) connect_timeout: Duration,
    /// The largest message accepted from the server.
    pub(crate) max_message_size: usize,
    /// How many items of one stream from the server may wait for its consumer before the
    /// connection stops reading.
    pub(crate) stream_buffer_capacity: usize,
    /// Automatic reconnect, when enabled.
    pub(crate) reconnect: Option<BoxedPolicy>,
    /// The WebSocket's read buffer, allocated up front for each connection: a program
    /// holding thousands of connections wants it small.
    pub(crate) websocket_read_buffer_size: usize,
    /// Sees every message from the server before it is dispatched.
    pub(crate) message_observer: Option<MessageObserver>,
}

/// tungstenite's default read buffer: 128 KiB per WebSocket.
const DEFAULT_WEBSOCKET_READ_BUFFER: usize = 128 * 1024;

/// Called with every message the server sends, on the connection's task.
#[derive(Clone)]
pub(crate) struct MessageObserver(pub(crate) Arc<dyn Fn(&HubMessage) + Send + Sync>);

impl fmt::Debug for MessageObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageObserver")
    }
}

/// Configures and builds a [`HubConnection`].
///
/// Defaults follow the official clients: JSON, negotiate first, every transport, 15 s
/// keep-alive, 30 s server timeout, 15 s handshake timeout, no automatic reconnect, no
/// stateful reconnect.
///
/// ```
/// use std::time::Duration;
/// use chat_client::{HubConnectionBuilder, Protocol};
///
/// let connection = HubConnectionBuilder::new("http://localhost:5000/chathub")
///     .protocol(Protocol::MessagePack)
///     .with_automatic_reconnect()
///     .access_token_provider(|| async { Ok("secret".to_owned()) })
///     .server_timeout(Duration::from_secs(60))
///     .build()?;
/// # let _ = connection;
/// # Ok::<(), chat_client::ConnectError>(())
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HubConnectionBuilder {
    /// The configuration being built, or why the URL given to `new` is unusable (reported
    /// by `build`, so that the chain of setters stays infallible).
    config: Result<Config, ConnectError>,
}

impl HubConnectionBuilder {
    /// Starts building a connection to the hub at `url`, e.g. `http://localhost:5000/chathub`.
    pub fn new(url: impl Into<String>) -> Self {
        let config = HubUrl::parse(&url.into()).map(|url| Config {
            url,
            protocol: Protocol::Json,
            skip_negotiation: false,
            transports: Transports::ALL,
            stateful_reconnect: false,
            stateful_reconnect_buffer_size: 100_000,
            access_token: None,
            keep_alive_interval: Duration::from_secs(15),
            server_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(15),
            max_message_size: 16 * 1024 * 1024,
            stream_buffer_capacity: 100,
            reconnect: None,
            websocket_read_buffer_size: DEFAULT_WEBSOCKET_READ_BUFFER,
            message_observer: None,
        });
        HubConnectionBuilder { config }
    }

    /// Applies one setting, unless the URL was already found unusable.
    fn set(mut self, apply: impl FnOnce(&mut Config)) -> Self {
        if let Ok(config) = &mut self.config {
            apply(config);
        }
        self
    }

    /// The hub protocol: [`Protocol::Json`] (default) or [`Protocol::MessagePack`].
    pub fn protocol(self, protocol: Protocol) -> Self {
        self.set(|config| config.protocol = protocol)
    }

    /// Skips negotiate and opens the WebSocket directly. Works only with servers that accept
    /// it (ASP.NET Core does, for WebSockets), and saves a round trip. The connection then has
    /// no connection id and no stateful reconnect. Also removes the need for sticky sessions
    /// behind a load balancer. Needs [`TransportType::WebSockets`] among the
    /// [`transports`](Self::transports) (the JavaScript client wants it to be the only one;
    /// here the others are simply not used).
    pub fn skip_negotiation(self, skip: bool) -> Self {
        self.set(|config| config.skip_negotiation = skip)
    }

    /// Restricts the transports the connection may use (default: all three), as the
    /// JavaScript client's `transport` option: one [`TransportType`] forces it, several
    /// are tried in the official order (WebSockets, Server-Sent Events, long polling) among
    /// those negotiate offers. Server-Sent Events carry text only, so a MessagePack
    /// connection never uses them.
    ///
    /// ```
    /// use chat_client::{HubConnectionBuilder, TransportType};
    ///
    /// let connection = HubConnectionBuilder::new("http://localhost:5000/chathub")
    ///     .transports([TransportType::ServerSentEvents, TransportType::LongPolling])
    ///     .build()?;
    /// # let _ = connection;
    /// # Ok::<(), chat_client::ConnectError>(())
    /// ```
    pub fn transports(self, transports: impl IntoIterator<Item = TransportType>) -> Self {
        let transports: Transports = transports.into_iter().collect();
        self.set(|config| config.transports = transports)
    }

    /// Asks the server for stateful reconnect (as `withStatefulReconnect()` in the official
    /// clients; off by default as there). When the server grants it and the transport is
    /// WebSockets, a dropped WebSocket does not drop the connection: the client opens a
    /// new one to the same connection, both sides resend what the other did not
    /// acknowledge, and duplicates are dropped, so nothing is lost and the app sees no
    /// reconnect (no reconnecting event; it is logged). If the server no longer has the
    /// connection, the client falls back to automatic reconnect, when enabled.
    pub fn with_stateful_reconnect(self) -> Self {
        self.set(|config| config.stateful_reconnect = true)
    }

    /// With stateful reconnect, how many bytes of sent messages are kept until the server
    /// acknowledges them (default 100,000, as ASP.NET Core). When it is full, sends wait
    /// for the server's next acknowledgement (about once a second).
    pub fn stateful_reconnect_buffer_size(self, bytes: usize) -> Self {
        self.set(|config| config.stateful_reconnect_buffer_size = bytes.max(1))
    }

    /// Sets an async closure that returns the access token for each connection attempt. The
    /// token is sent as `Authorization: Bearer` with negotiate, and with the WebSocket
    /// request both as that header and as the `access_token` query parameter. An empty token
    /// means none.
    pub fn access_token_provider<F, Fut>(self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
    {
        self.set(|config| config.access_token = Some(AccessTokenProvider::new(provider)))
    }

    /// How long the client may stay silent before it sends a Ping (default 15 s). Keep it
    /// well under the server's client timeout (30 s on ASP.NET Core).
    pub fn keep_alive_interval(self, interval: Duration) -> Self {
        self.set(|config| config.keep_alive_interval = interval)
    }

    /// How long the server may stay silent before the connection is considered lost
    /// (default 30 s). Keep it about twice the server's keep-alive interval (15 s).
    pub fn server_timeout(self, timeout: Duration) -> Self {
        self.set(|config| config.server_timeout = timeout)
    }

    /// How long the server may take to answer the handshake (default 15 s).
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        self.set(|config| config.handshake_timeout = timeout)
    }

    /// How long each negotiate request, and opening the WebSocket, may take (default 15 s).
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.set(|config| config.connect_timeout = timeout)
    }

    /// The largest message accepted from the server (default 16 MiB); a larger one closes
    /// the connection.
    pub fn max_message_size(self, bytes: usize) -> Self {
        self.set(|config| config.max_message_size = bytes)
    }

    /// How many items of one stream from the server ([`HubConnection::stream`]) may wait
    /// for the consumer (default 100). When a stream's buffer is full, the connection
    /// stops reading from the server until the consumer takes an item, so the server's
    /// producer slows down to the consumer's pace; see [`ServerStream`](crate::ServerStream).
    pub fn stream_buffer_capacity(self, items: usize) -> Self {
        self.set(|config| config.stream_buffer_capacity = items.max(1))
    }

    /// The WebSocket's read buffer, in bytes (default 128 KiB, tungstenite's). It is
    /// allocated when the WebSocket opens, so a program holding thousands of mostly idle
    /// connections (a load generator) wants a few KiB instead; a busy connection reads
    /// in more, smaller chunks then.
    pub fn websocket_read_buffer_size(self, bytes: usize) -> Self {
        self.set(|config| config.websocket_read_buffer_size = bytes.max(1))
    }

    /// Registers a callback that sees every message the server sends (invocations,
    /// completions, stream items, pings, close), before it is dispatched. It runs on the
    /// connection's task as each message is decoded, so the clock read in it is the
    /// message's arrival time: for counting, tracing and timing what arrives (a load
    /// generator's latency), not for work (keep it short; handlers are for work).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use chat_client::HubConnectionBuilder;
    ///
    /// let received = Arc::new(AtomicU64::new(0));
    /// let counter = received.clone();
    /// let connection = HubConnectionBuilder::new("http://localhost:5000/chathub")
    ///     .observe_messages(move |_message| {
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build()?;
    /// # let _ = connection;
    /// # Ok::<(), chat_client::ConnectError>(())
    /// ```
    pub fn observe_messages(self, observer: impl Fn(&HubMessage) + Send + Sync + 'static) -> Self {
        let observer = MessageObserver(Arc::new(observer));
        self.set(|config| config.message_observer = Some(observer))
    }

    /// Reconnects automatically after losing the connection, waiting 0, 2, 10 and 30 seconds
    /// before the four attempts, like the official clients ([`ReconnectDelays::default`]).
    pub fn with_automatic_reconnect(self) -> Self {
        self.reconnect_policy(ReconnectDelays::default())
    }

    /// Reconnects automatically, asking `policy` when to try next and when to give up.
    pub fn reconnect_policy(self, policy: impl ReconnectPolicy) -> Self {
        self.set(|config| config.reconnect = Some(BoxedPolicy(Box::new(policy))))
    }

    /// Builds the connection; call [`HubConnection::start`] to connect.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidUrl`] when the URL is not an absolute `http` or `ws` URL,
    /// [`ConnectError::InvalidOptions`] when no transport is allowed, or negotiate is
    /// skipped without WebSockets.
    pub fn build(self) -> Result<HubConnection, ConnectError> {
        let config = self.config?;
        if config.transports.is_empty() {
            return Err(ConnectError::InvalidOptions("no transport is allowed"));
        }
        if config.skip_negotiation && !config.transports.contains(TransportType::WebSockets) {
            return Err(ConnectError::InvalidOptions(
                "negotiate can only be skipped with the WebSockets transport",
            ));
        }
        Ok(HubConnection::new(config))
    }
}
