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
    ///
    /// What counts as receiving something, on a WebSocket: any payload byte of a data
    /// frame, and any frame (including a WebSocket ping or pong) that arrives while no
    /// WebSocket message is half received. Once a message has started, only more of its
    /// data counts until its final frame: pings and pongs in between do not. So a client
    /// that starts a message and then only pings is closed one client timeout after its
    /// last data frame, and meanwhile the server holds at most one partial hub message
    /// for it (up to [`HubOptions::max_message_size`]). Time the server spends not
    /// reading (backpressure, while the client's invocations are behind) is not counted
    /// against the client.
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
    ///
    /// This is the only size limit on what a client sends: a WebSocket message may be of
    /// any size (the JavaScript and .NET clients send everything they have queued as one,
    /// megabytes during a burst), and is read as a stream, hub message by hub message, so
    /// a connection holds at most one partial hub message plus one read chunk
    /// ([`HubOptions::websocket_read_buffer_size`]) whatever the WebSocket message's size.
    pub max_message_size: usize,
    /// No longer used: WebSocket messages are read as a stream and may be of any size;
    /// only each hub message inside is limited, by [`HubOptions::max_message_size`].
    /// Kept so code that sets it still compiles; it will be removed.
    #[deprecated(
        note = "WebSocket messages now stream in and may be of any size; `max_message_size` limits each hub message"
    )]
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
    /// client's own invocations are queued past the bound, and a client is paced rather
    /// than dropped for what its own invocations send it: before starting an invocation
    /// the connection waits until the queue has room for about the invocation's size (the
    /// echo of a broadcast it makes) on top of what the running ones reserved, and it
    /// stops reading meanwhile. A client whose burst of large broadcasts is echoed back
    /// to it is therefore slowed to its own reading pace. Frames are shared between the connections they go to, so a
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
    /// before the next message of that client is read.
    ///
    /// What the running invocations of one client will send it is reserved in its send
    /// queue ([`HubOptions::send_queue_bytes`]) before each starts, so their number is
    /// bounded by that queue too, and their memory with it.
    ///
    /// However many run at once, what they publish reaches this node's connections in
    /// publish order too: the lifetime manager releases local deliveries in that order,
    /// whatever order the invocations are resumed in. Default: 1024 (it was 64 while the
    /// order of local deliveries depended on how many ran at once).
    pub max_parallel_invocations: usize,
    /// Whether clients may use stateful reconnect (they ask for it in negotiate with
    /// `useStatefulReconnect=true`; the official JavaScript and .NET clients do with
    /// `withStatefulReconnect()`). Such a connection survives a dropped WebSocket: the
    /// client opens a new one within [`HubOptions::stateful_reconnect_window`], both sides
    /// resend what the other did not acknowledge, and nothing is lost or duplicated; groups
    /// stay and the connect and disconnect hooks do not run again. ASP.NET Core leaves it
    /// off unless the application allows it (`AllowStatefulReconnects`); here it is on,
    /// since only clients that ask for it get it. Default: true.
    pub stateful_reconnect: bool,
    /// How many bytes of sent messages a connection with stateful reconnect keeps until
    /// the client acknowledges them. Past it, the connection sends no more until an
    /// acknowledgement arrives (the official clients acknowledge once a second), so it
    /// also paces such a connection to about this many bytes per second; what waits
    /// meanwhile is held by the send queue ([`HubOptions::send_queue_bytes`]). ASP.NET
    /// Core's `StatefulReconnectBufferSize` default. Default: 100,000 bytes.
    pub stateful_reconnect_buffer_size: usize,
    /// How long a connection with stateful reconnect waits for its client to come back
    /// after its WebSocket dropped; then it ends as any connection does. The token stays
    /// valid meanwhile (a new WebSocket with it re-attaches; after the window it gets 404).
    /// Default: 15 seconds (ASP.NET Core's disconnect timeout).
    pub stateful_reconnect_window: Duration,
    /// How many bytes one read from a connection's WebSocket takes at most, and so how
    /// much one read adds to what the connection holds (on top of a partial hub message).
    /// The bytes are read into a buffer on the reading task's stack and taken apart at
    /// once, so no connection keeps a read buffer between reads, and an idle connection's
    /// memory does not depend on this. Larger chunks mean fewer system calls for clients
    /// that send a lot back to back (BENCHMARKS.md measured about 15% more single-sender
    /// throughput at 4 KiB than at 2 KiB). Clamped to 14 bytes..16 KiB. Default: 8 KiB.
    pub websocket_read_buffer_size: usize,
    /// How long a long-polling request waits for frames before it is answered 200 with an
    /// empty body (the client then polls again). Shorter than the official clients' own
    /// request timeout (100 s), so polls end here rather than time out there; also what
    /// proxies in between must allow. Default: 90 seconds (ASP.NET Core's
    /// `LongPolling.PollTimeout`).
    pub long_polling_timeout: Duration,
    /// A long-polling connection with no poll open for this long is closed: the client
    /// went away without `DELETE`. Long-polling clients send no Pings (each poll is their
    /// keep-alive), so this rather than the client timeout is what notices them gone.
    /// Default: 15 seconds (ASP.NET Core's `DisconnectTimeout`).
    pub long_polling_disconnect_timeout: Duration,
    /// The transports negotiate offers and the hub path accepts (ASP.NET Core's
    /// `HttpConnectionDispatcherOptions.Transports`). A request for a transport left out
    /// gets 404, as ASP.NET Core answers it. Restrict it where a proxy in front breaks one
    /// (or to test a client's fallback). Default: all three.
    pub transports: Transports,
    /// How many connection tokens negotiate may have issued that no transport has claimed
    /// yet. Past it, negotiate answers 503 with `Retry-After` (the negotiate timeout), so a
    /// client that negotiates without ever connecting cannot make the server hold more
    /// than about this many tokens (each ~150 bytes); a background sweep removes expired
    /// ones every half [`HubOptions::negotiate_timeout`] and gives their memory back.
    /// ASP.NET Core has no such cap. Default: 100,000.
    pub max_pending_negotiations: usize,
    /// How many connections this hub serves at once on this node (handshaking or
    /// connected, every transport). Past it, negotiate answers 503 with `Retry-After` and
    /// a connect request (a WebSocket upgrade, an event stream, a first poll) is refused
    /// with 503 before anything is upgraded. An idle connection costs roughly 10-15 KiB
    /// (BENCHMARKS.md, S4). ASP.NET Core leaves this to Kestrel's
    /// `MaxConcurrentConnections` (unlimited by default). Default: 100,000.
    pub max_connections: usize,
    /// The longest user id a connection may have, in bytes (UTF-8). A longer one (from
    /// the authenticator or the user id hook) gets 401: a user id is kept by every
    /// node's user index, so a client must not choose its size. Default: 256.
    pub max_user_id_bytes: usize,
    /// Whether a connection is closed when its credentials expire (a JWT's `exp`), as
    /// ASP.NET Core's `CloseOnAuthenticationExpiration`. The client receives a Close
    /// message without an error and with reconnecting allowed, as ASP.NET Core sends (it
    /// then presents a fresh token); the reason is logged on the server.
    /// Default: false (as in ASP.NET Core).
    pub close_on_authentication_expiration: bool,
    /// Which browser pages may use the hub: checked on every request that carries an
    /// `Origin` header, the WebSocket upgrade included (403 otherwise), and what
    /// [`AllowedOrigins::cors_layer`](crate::AllowedOrigins::cors_layer) answers
    /// preflights with. Default: [`AllowedOrigins::SameOrigin`](crate::AllowedOrigins::SameOrigin).
    pub allowed_origins: crate::AllowedOrigins,
}

/// Which transports a hub offers. Clients try them in the official order: WebSockets,
/// Server-Sent Events, long polling.
///
/// ```
/// use hub_server::{HubOptions, Transports};
///
/// // Behind a proxy that breaks WebSockets: offer the two HTTP transports only.
/// let options = HubOptions::default().transports(Transports {
///     websockets: false,
///     ..Transports::ALL
/// });
/// assert!(options.transports.long_polling);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// WebSockets (with or without negotiate; stateful reconnect needs it).
    pub websockets: bool,
    /// Server-Sent Events (text only: JSON clients).
    pub server_sent_events: bool,
    /// Long polling.
    pub long_polling: bool,
}

impl Transports {
    /// All three transports: the default.
    pub const ALL: Transports = Transports {
        websockets: true,
        server_sent_events: true,
        long_polling: true,
    };
}

impl Default for Transports {
    fn default() -> Self {
        Transports::ALL
    }
}

impl Default for HubOptions {
    #[allow(deprecated)] // Sets `max_websocket_message_size` until it is removed.
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
            max_parallel_invocations: 1024,
            stateful_reconnect: true,
            stateful_reconnect_buffer_size: 100_000,
            stateful_reconnect_window: Duration::from_secs(15),
            websocket_read_buffer_size: 8 * 1024,
            long_polling_timeout: Duration::from_secs(90),
            long_polling_disconnect_timeout: Duration::from_secs(15),
            transports: Transports::ALL,
            max_pending_negotiations: 100_000,
            max_connections: 100_000,
            max_user_id_bytes: 256,
            close_on_authentication_expiration: false,
            allowed_origins: crate::AllowedOrigins::SameOrigin,
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
        self.max_pending_negotiations = self.max_pending_negotiations.max(1);
        self.max_connections = self.max_connections.max(1);
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

    /// These options with `timeout` as [`HubOptions::long_polling_timeout`].
    #[must_use]
    pub fn long_polling_timeout(mut self, timeout: Duration) -> Self {
        self.long_polling_timeout = timeout;
        self
    }

    /// These options with `timeout` as [`HubOptions::long_polling_disconnect_timeout`].
    #[must_use]
    pub fn long_polling_disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.long_polling_disconnect_timeout = timeout;
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

    /// No longer has any effect; see [`HubOptions::max_websocket_message_size`].
    #[deprecated(
        note = "WebSocket messages now stream in and may be of any size; `max_message_size` limits each hub message"
    )]
    #[must_use]
    pub fn max_websocket_message_size(mut self, bytes: usize) -> Self {
        #[allow(deprecated)]
        {
            self.max_websocket_message_size = bytes;
        }
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

    /// These options with [`HubOptions::stateful_reconnect`] set to `enabled`.
    #[must_use]
    pub fn stateful_reconnect(mut self, enabled: bool) -> Self {
        self.stateful_reconnect = enabled;
        self
    }

    /// These options with `bytes` as [`HubOptions::stateful_reconnect_buffer_size`].
    #[must_use]
    pub fn stateful_reconnect_buffer_size(mut self, bytes: usize) -> Self {
        self.stateful_reconnect_buffer_size = bytes;
        self
    }

    /// These options with `transports` as [`HubOptions::transports`].
    #[must_use]
    pub fn transports(mut self, transports: Transports) -> Self {
        self.transports = transports;
        self
    }

    /// These options with `window` as [`HubOptions::stateful_reconnect_window`].
    #[must_use]
    pub fn stateful_reconnect_window(mut self, window: Duration) -> Self {
        self.stateful_reconnect_window = window;
        self
    }

    /// These options with `bytes` as [`HubOptions::websocket_read_buffer_size`].
    #[must_use]
    pub fn websocket_read_buffer_size(mut self, bytes: usize) -> Self {
        self.websocket_read_buffer_size = bytes;
        self
    }

    /// These options with `count` as [`HubOptions::max_pending_negotiations`] (at least 1).
    #[must_use]
    pub fn max_pending_negotiations(mut self, count: usize) -> Self {
        self.max_pending_negotiations = count.max(1);
        self
    }

    /// These options with `count` as [`HubOptions::max_connections`] (at least 1).
    #[must_use]
    pub fn max_connections(mut self, count: usize) -> Self {
        self.max_connections = count.max(1);
        self
    }

    /// These options with `bytes` as [`HubOptions::max_user_id_bytes`].
    #[must_use]
    pub fn max_user_id_bytes(mut self, bytes: usize) -> Self {
        self.max_user_id_bytes = bytes;
        self
    }

    /// These options with [`HubOptions::close_on_authentication_expiration`] set to
    /// `enabled`.
    #[must_use]
    pub fn close_on_authentication_expiration(mut self, enabled: bool) -> Self {
        self.close_on_authentication_expiration = enabled;
        self
    }

    /// These options with `origins` as [`HubOptions::allowed_origins`].
    #[must_use]
    pub fn allowed_origins(mut self, origins: crate::AllowedOrigins) -> Self {
        self.allowed_origins = origins;
        self
    }
}
