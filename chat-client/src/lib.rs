//! A SignalR client for Rust, and the `chat-client` terminal program built on it.
//!
//! The client speaks the ASP.NET Core SignalR protocol, so it works with `hub-server` and
//! with ASP.NET Core servers alike:
//!
//! - negotiate (`POST {hub}/negotiate?negotiateVersion=1`, following `url`/`accessToken`
//!   redirects, reporting `error` answers), or skip it and open the WebSocket directly;
//! - WebSockets, Server-Sent Events and long polling, tried in that order among those
//!   negotiate offers, or restricted with
//!   [`transports`](HubConnectionBuilder::transports);
//! - stateful reconnect ([`with_stateful_reconnect`](HubConnectionBuilder::with_stateful_reconnect)):
//!   a dropped WebSocket is replaced without losing or repeating a message, unseen by the
//!   app;
//! - the JSON and MessagePack hub protocols (wire format from the `hub-protocol` crate);
//! - [`invoke`](HubConnection::invoke) awaits a typed result, and a failing hub method
//!   comes back as [`InvokeError::Hub`]; [`send`](HubConnection::send) is fire and forget;
//!   [`begin_invoke`](HubConnection::begin_invoke) pipelines: many calls in flight,
//!   written in order with one flush per batch, their [`PendingInvoke`] results awaited
//!   later;
//! - [`on`](HubConnection::on) registers handlers for client methods, with typed arguments
//!   (a closure taking a tuple);
//! - keep-alive Pings (15 s) and a server timeout (30 s), both configurable;
//! - for load generators: an observer of every arriving message, run as it is decoded
//!   ([`observe_messages`](HubConnectionBuilder::observe_messages), to count or time
//!   arrivals), and the WebSocket read buffer per connection
//!   ([`websocket_read_buffer_size`](HubConnectionBuilder::websocket_read_buffer_size));
//! - automatic reconnect with backoff (0, 2, 10, 30 s by default, or any
//!   [`ReconnectPolicy`]), with reconnecting / reconnected / closed events;
//! - an async access token provider, sent as `Authorization: Bearer` with negotiate and as
//!   both that header and the `access_token` query parameter with the WebSocket.
//!
//! # Example
//!
//! ```
//! use chat_client::{HubConnectionBuilder, InvokeError, Protocol};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // A chat server in-process, so the example runs as a test.
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let address = listener.local_addr()?;
//! # let hub = hub_server::chat::hub_builder().build().await?;
//! # let app = hub_server::chat::router(&hub, hub_server::chat::ServerInfo::new("doc", "memory"));
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! # let url = format!("http://{address}/chathub");
//! // let url = "http://localhost:5000/chathub";
//! let connection = HubConnectionBuilder::new(url)
//!     .protocol(Protocol::MessagePack)
//!     .with_automatic_reconnect()
//!     .build()?;
//!
//! // Client methods the server calls: arguments arrive as a typed tuple. Handlers
//! // registered before `start` stay registered across reconnects.
//! let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
//! connection.on("ReceiveMessage", move |(user, message): (String, String)| {
//!     let _ = tx.send(format!("{user}: {message}"));
//! });
//! connection.on_reconnecting(|reason| eprintln!("connection lost ({reason}), reconnecting"));
//! connection.on_closed(|reason| eprintln!("closed: {reason:?}"));
//!
//! connection.start().await?;
//! println!("connected as {:?}", connection.connection_id());
//!
//! // Call a hub method and wait for it to complete (`()`: it returns nothing).
//! connection.invoke::<(), _>("SendMessage", ("alice", "hello")).await?;
//! assert_eq!(messages.recv().await.as_deref(), Some("alice: hello"));
//!
//! // Hub errors are values, not panics; the connection stays up.
//! match connection.invoke::<i32, _>("NoSuchMethod", ()).await {
//!     Err(InvokeError::Hub(message)) => println!("the server said: {message}"),
//!     other => panic!("unexpected {other:?}"),
//! }
//!
//! // Fire and forget: returns once the message is written.
//! connection.send("SendMessage", ("alice", "bye")).await?;
//! connection.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Connection lifecycle
//!
//! [`HubConnection::start`] connects once; if it fails, it says why ([`ConnectError`]) and
//! does not retry. Once connected, a lost connection (the server went away, a Close message
//! that allows reconnecting, the server timeout) starts automatic reconnect when enabled:
//! calls made meanwhile fail with [`InvokeError::NotConnected`], calls waiting for a
//! completion fail with [`InvokeError::ConnectionLost`], and after a successful reconnect
//! the connection has a new connection id. When the policy gives up, or without automatic
//! reconnect, the connection closes and the closed callbacks get the
//! [`DisconnectReason`]. [`HubConnection::stop`] closes it deliberately (closed callbacks
//! get `None`). Dropping the last handle stops the connection too.
//!
//! # Compatibility
//!
//! The client uses what ASP.NET Core SignalR servers offer: negotiate version 1 (and 0
//! answers), the three transports, handshake version 2, messages 1 to 7, and Ack and
//! Sequence (8, 9) with stateful reconnect, streams both ways
//! ([`HubConnection::stream`], [`ClientStream`]) and client results
//! ([`HubConnection::on_invoke`]). Not supported (yet): TLS (`https`/`wss`; put the server
//! behind a local TLS terminator or use plain `http`).
//!
//! # Layout
//!
//! - `config`: [`HubConnectionBuilder`] and the settings it fixes.
//! - `connection`: [`HubConnection`], the shared state, start, stop, invoke, send.
//! - `driver`: the task that owns the transport: dispatch, keep-alive, timeouts, stateful
//!   and automatic reconnect; `stateful`: stateful reconnect's books and rules;
//!   `outgoing`: what the app hands the task to write and who waits for it; `in_flight`:
//!   the calls and streams waiting for the server; `pending`: [`PendingInvoke`], a call's
//!   completion still to come.
//! - `transport`: one physical connection (negotiate fallback, handshake) over
//!   `transport::websocket`, `transport::sse` or `transport::long_polling`;
//!   `negotiate` and `http` (a minimal HTTP/1.1 client over hyper) do the HTTP requests,
//!   `url` derives the URLs, `token` wraps the access token provider.
//! - `handlers`: [`FromArguments`], the handler registry and running a server's call
//!   (client results answered); `streaming`, `server_stream`, `client_stream`: streams
//!   both ways; `events`: lifecycle callbacks;
//!   `reconnect`: [`ReconnectPolicy`] and [`ReconnectDelays`]; `error`: the error types.
//!
//! The `chat-client` binary (cargo feature `cli`, on by default) lives in
//! `src/bin/chat-client`; library users can leave it out with `default-features = false`.

#![forbid(unsafe_code)]

mod client_stream;
mod config;
mod connection;
mod driver;
mod error;
mod events;
mod handlers;
mod http;
mod in_flight;
mod negotiate;
mod outgoing;
mod pending;
mod reconnect;
mod server_stream;
mod stateful;
mod streaming;
mod token;
mod transport;
mod url;

pub use client_stream::ClientStream;
pub use config::HubConnectionBuilder;
pub use connection::{HubConnection, HubConnectionState};
pub use error::{BoxError, ConnectError, DisconnectReason, InvokeError};
pub use handlers::FromArguments;
pub use hub_protocol::{ArgumentError, Arguments, HubMessage, Protocol};
pub use pending::PendingInvoke;
pub use reconnect::{ReconnectDelays, ReconnectPolicy, RetryContext};
pub use server_stream::ServerStream;
pub use transport::{TransportType, Transports};
