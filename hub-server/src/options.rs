//! The knobs of a hub: timeouts, sizes and queue bounds, with ASP.NET Core's defaults.

use std::time::Duration;

/// Settings shared by every connection of one hub.
///
/// The defaults are ASP.NET Core SignalR's, so the official clients' own defaults (15 s
/// keep-alive, 30 s server timeout) fit without configuration.
///
/// ```
/// use std::time::Duration;
/// use hub_server::HubOptions;
///
/// let options = HubOptions::default()
///     .keep_alive_interval(Duration::from_secs(10))
///     .max_message_size(64 * 1024);
/// assert_eq!(options.client_timeout, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubOptions {
    /// The server sends a Ping when it has sent nothing for this long, so clients (and
    /// proxies) see the connection is alive. Default: 15 seconds.
    pub keep_alive_interval: Duration,
    /// A connection the server has received nothing from (not even a Ping) for this long is
    /// closed. Should be about twice the clients' keep-alive interval. Default: 30 seconds.
    pub client_timeout: Duration,
    /// A client must complete the handshake within this time after its WebSocket opens.
    /// Default: 15 seconds.
    pub handshake_timeout: Duration,
    /// How long a connection token from negotiate stays valid when no WebSocket claims it.
    /// Default: 15 seconds.
    pub negotiate_timeout: Duration,
    /// The largest hub message a client may send, in bytes (not counting the record
    /// separator or length prefix). A larger one closes the connection with an error,
    /// detected before the message is buffered whole. Default: 32 KiB.
    pub max_message_size: usize,
    /// The largest WebSocket message (and frame) a client may send, in bytes. One WebSocket
    /// message may carry many hub messages (the .NET client sends everything it has
    /// queued in one), so this is larger than [`HubOptions::max_message_size`], which
    /// still applies to each hub message inside. A WebSocket message over this limit is
    /// refused from its header, before it is buffered, so it also bounds the memory one
    /// client can make the server hold. It is never less than `max_message_size` plus
    /// framing. Default: 1 MiB.
    pub max_websocket_message_size: usize,
    /// How many bytes of outgoing messages may wait for one connection (each message
    /// counted as its encoded size plus a few dozen bytes for its queue slot). Sends
    /// never wait for a connection, so this queue is what absorbs bursts; a client that
    /// stops reading fills it and is disconnected, so it can neither slow others down nor
    /// make the server hold more than this for it. Bounded by bytes, not by count, so a
    /// healthy client is not dropped for many tiny frames (a connect storm broadcasts one
    /// small `UserConnected` per connection to everyone: 1 MiB holds about 9,000 of them),
    /// while a few large messages cannot hold much memory either. A single message larger
    /// than the bound still goes to a client whose queue is empty. The answers to the
    /// client's own invocations are queued past the bound (they are bounded by
    /// [`HubOptions::max_parallel_invocations`]: the connection stops reading while its
    /// queue is full). Frames are shared between the connections they go to, so a
    /// broadcast costs its bytes once however many queues hold it. Default: 1 MiB.
    pub send_queue_bytes: usize,
    /// How long graceful shutdown waits for connections to flush their Close message and
    /// end before giving up on them. Default: 5 seconds.
    pub shutdown_timeout: Duration,
    /// Whether errors returned by hub methods that were not created with
    /// [`MethodError::new`](crate::MethodError::new) are shown to the client. Off by
    /// default, as in ASP.NET Core: internal errors can leak details. Default: false.
    pub detailed_errors: bool,
    /// How many invocations of one client may run at once. Invocations always *start* in
    /// arrival order, and each runs up to its first await before the next starts, so the
    /// messages a method sends before awaiting anything else keep the client's order, on
    /// this node and across the backplane; invocations then finish concurrently, and their
    /// completions may arrive out of order (the protocol pairs them by invocation id).
    ///
    /// This is what makes one client that sends many messages quickly fast over a
    /// backplane with commit latency (such as PostgreSQL): its messages share commits
    /// instead of waiting one commit each (BENCHMARKS.md: S1 about 1,400 deliveries/s at 1
    /// against tens of thousands at 64, with the official JavaScript client).
    ///
    /// The trade, where it differs from ASP.NET Core (whose
    /// `MaximumParallelInvocationsPerClient` defaults to 1): a method that awaits something
    /// else (a database query, a timer, a remote group change) *before* it sends can be
    /// overtaken by the client's next invocation, and a method that relies on the previous
    /// invocation of the same client having finished must not assume it. Hubs that need
    /// ASP.NET Core's strict one-at-a-time behaviour set 1: each invocation then finishes
    /// before the next message of that client is read. Default: 64.
    pub max_parallel_invocations: usize,
    /// Size of each connection's WebSocket read buffer, in bytes. It is allocated for
    /// every connection, idle or not, so it is kept small: frames larger than it are
    /// still read, in several reads. 2 KiB keeps an idle connection's memory low (see
    /// BENCHMARKS.md, S4); a server whose clients each send many messages back to back
    /// reads them in fewer system calls with 4-8 KiB (BENCHMARKS.md measured about 15%
    /// more single-sender throughput at 4 KiB). Default: 2 KiB.
    pub websocket_read_buffer_size: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            negotiate_timeout: Duration::from_secs(15),
            max_message_size: 32 * 1024,
            max_websocket_message_size: 1024 * 1024,
            send_queue_bytes: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            detailed_errors: false,
            max_parallel_invocations: 64,
            websocket_read_buffer_size: 2 * 1024,
        }
    }
}

impl HubOptions {
    /// These options with values that cannot work raised to the smallest that can: the
    /// fields are public, so the builder methods' clamps can be bypassed. A zero queue
    /// capacity or parallelism becomes 1, a keep-alive interval under 10 ms becomes
    /// 10 ms (zero would make every connection send Pings in a busy loop).
    pub(crate) fn normalized(mut self) -> Self {
        self.send_queue_bytes = self.send_queue_bytes.max(1);
        self.max_parallel_invocations = self.max_parallel_invocations.max(1);
        self.keep_alive_interval = self.keep_alive_interval.max(Duration::from_millis(10));
        self
    }

    /// These options with `interval` as [`HubOptions::keep_alive_interval`].
    #[must_use]
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = interval;
        self
    }

    /// These options with `timeout` as [`HubOptions::client_timeout`].
    #[must_use]
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout;
        self
    }

    /// These options with `timeout` as [`HubOptions::handshake_timeout`].
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// These options with `timeout` as [`HubOptions::negotiate_timeout`].
    #[must_use]
    pub fn negotiate_timeout(mut self, timeout: Duration) -> Self {
        self.negotiate_timeout = timeout;
        self
    }

    /// These options with `bytes` as [`HubOptions::max_message_size`].
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// These options with `bytes` as [`HubOptions::max_websocket_message_size`].
    #[must_use]
    pub fn max_websocket_message_size(mut self, bytes: usize) -> Self {
        self.max_websocket_message_size = bytes;
        self
    }

    /// These options with `bytes` as [`HubOptions::send_queue_bytes`] (at least 1).
    #[must_use]
    pub fn send_queue_bytes(mut self, bytes: usize) -> Self {
        self.send_queue_bytes = bytes.max(1);
        self
    }

    /// These options with `timeout` as [`HubOptions::shutdown_timeout`].
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// These options with [`HubOptions::detailed_errors`] set to `enabled`.
    #[must_use]
    pub fn detailed_errors(mut self, enabled: bool) -> Self {
        self.detailed_errors = enabled;
        self
    }

    /// These options with `count` as [`HubOptions::max_parallel_invocations`] (at least 1).
    #[must_use]
    pub fn max_parallel_invocations(mut self, count: usize) -> Self {
        self.max_parallel_invocations = count.max(1);
        self
    }

    /// These options with `bytes` as [`HubOptions::websocket_read_buffer_size`].
    #[must_use]
    pub fn websocket_read_buffer_size(mut self, bytes: usize) -> Self {
        self.websocket_read_buffer_size = bytes;
        self
    }
}
