//! A SignalR hub server: the official SignalR clients (JavaScript, .NET, Java, Swift,
//! Python) connect to it unchanged, and it scales out across server instances through any
//! [`Backplane`](backplane_core::Backplane).
//!
//! A hub is a set of methods clients invoke by name. Methods are plain async functions;
//! their parameters are extracted from the invocation (axum-style): context types such as
//! [`Caller`], [`Clients`], [`CallerClients`], [`Groups`], [`HubContext`] and
//! [`Extension`], and any `serde::Deserialize` type, bound to the caller's arguments in
//! order. What a method returns becomes the completion the caller receives
//! ([`IntoHubResult`]).
//!
//! # Example
//!
//! ```no_run
//! use hub_server::{Caller, CallerClients, Groups, Hub, MethodError};
//!
//! async fn send_message(clients: CallerClients, user: String, message: String) -> Result<(), MethodError> {
//!     clients.all().send("ReceiveMessage", (user, message)).await?;
//!     Ok(())
//! }
//!
//! async fn join(caller: Caller, groups: Groups, group: String) -> Result<(), MethodError> {
//!     groups.add(caller.connection_id(), &group).await?;
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let hub = Hub::builder("ChatHub")
//!         .method("SendMessage", send_message)
//!         .method("JoinGroup", join)
//!         .method("Add", |a: i64, b: i64| async move { a + b })
//!         // .authenticator(hub_server::JwtAuthenticator::new(...)?) to know who connects
//!         .build()
//!         .await?;
//!     let app = axum::Router::new()
//!         .route("/", axum::routing::get(|| async { "hello" }))
//!         .merge(hub.router("/chathub"));
//!     // `hub_server::serve` is `axum::serve` with TCP_NODELAY (small frames must not wait
//!     // for delayed ACKs) and a request-headers timeout (a client that never finishes its
//!     // headers must not hold a connection for ever); `axum::serve` works too.
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//!     let shutdown_hub = hub.clone();
//!     hub_server::serve(listener, app, hub_server::ServeOptions::default(), async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         shutdown_hub.shutdown().await;
//!     })
//!     .await;
//!     Ok(())
//! }
//! ```
//!
//! # What is served
//!
//! - `POST {path}/negotiate?negotiateVersion=1`: a version 1 response offering the three
//!   transports in ASP.NET Core's order (WebSockets: Text and Binary; Server-Sent Events:
//!   Text; long polling: Text and Binary), with a secret, unguessable connection token distinct from the
//!   public connection id. Without `negotiateVersion` (or with `0`; older .NET and Java
//!   clients, the Python `signalrcore`), a version 0 response as ASP.NET Core gives it: the
//!   connection id only, which the client then presents as the token. Newer versions are
//!   answered with version 1; a version that is not a number gets an `error` naming it.
//!   Tokens are single use (one connection, on one transport) and expire when no
//!   transport claims them in time.
//! - `GET {path}` with a WebSocket upgrade, with `?id={token}` after negotiate or without
//!   it when the client skips negotiate. An unknown or expired token gets 404, a token
//!   already in use 409.
//! - Server-Sent Events: `GET {path}?id={token}` with `Accept: text/event-stream` opens a
//!   `text/event-stream` response (an opening `:` comment at once, then each frame as
//!   `data:` lines); JSON only, as in ASP.NET Core. Long polling: the first `GET
//!   {path}?id={token}` answers 200 at once, later ones answer with every pending frame,
//!   200 empty after [`HubOptions::long_polling_timeout`] (90 s), or 204 once the
//!   connection ended or a newer poll replaced them; `DELETE` ends the connection (202);
//!   no Pings, and a client with no poll open for
//!   [`HubOptions::long_polling_disconnect_timeout`] (15 s) is closed. Both send with
//!   `POST {path}?id={token}` (several frames per body, streamed into the connection with
//!   backpressure; 409 while another POST of the connection is in flight). Missing id:
//!   400; unknown id: 404; another transport's token: 400 ("Cannot change transports
//!   mid-connection"), as ASP.NET Core answers. Both need sticky sessions behind a load
//!   balancer (see [`Hub::router`]).
//! - The JSON and MessagePack hub protocols (handshake versions 0 to 2, as ASP.NET Core
//!   accepts every version up to its own; `signalrcore` sends 0), invocations
//!   with and without an id, keep-alive pings, the client timeout, the handshake timeout,
//!   the maximum message size, Close messages, and graceful shutdown ([`Hub::shutdown`]).
//!   WebSocket messages may be of any size: they are read as a stream, hub message by hub
//!   message, in bounded memory per connection, and only each hub message is limited
//!   ([`HubOptions::max_message_size`]).
//!   A connection's invocations start in the order they arrive and up to 1024 run at once
//!   ([`HubOptions::max_parallel_invocations`]; 1 gives ASP.NET Core's one-at-a-time
//!   default); a method that panics fails its invocation, not the connection.
//! - Sends never wait for a slow client: each connection has a queue bounded by bytes
//!   ([`HubOptions::send_queue_bytes`]) and a client that lets it overflow (it stopped
//!   reading) is disconnected, so no client can slow the others down.
//! - Stateful reconnect (`withStatefulReconnect()` in the official clients): a client
//!   that asks for it in negotiate keeps its connection across a dropped WebSocket. It
//!   comes back with its token on a new one within
//!   [`HubOptions::stateful_reconnect_window`], both sides resend what the other has not
//!   acknowledged (Sequence and Ack messages, a replay buffer of
//!   [`HubOptions::stateful_reconnect_buffer_size`]), duplicates are dropped, groups stay
//!   and the hooks do not run again. Messages that reached the connection through the
//!   backplane are numbered and kept like any other.
//! - Streams both ways and client results, in both protocols and across instances: a
//!   method returning [`HubStream`] streams its items to the caller (cancellable, paced
//!   by the client's reading), an [`UploadStream`] parameter takes one of the caller's
//!   streams, and [`ClientProxy::invoke`] asks one connection, on any node, for a value
//!   (see `hub-server/README.md` for the limits, the timeouts and the deadlock rule).
//!   [`examples::streaming`] shows each.
//!
//! # Layout
//!
//! - `hub`: [`HubBuilder`] and [`Hub`]; `endpoints`: the axum routes.
//! - `handler`, `extract`: how async functions become methods ([`Handler`],
//!   [`FromInvocation`], [`IntoHubResult`]); `dispatch`: running one invocation.
//! - `clients`: [`Clients`], [`CallerClients`], [`Groups`], [`HubContext`].
//! - `connection`: one connection from handshake to close, whatever its transport;
//!   `outbox`: its bounded send queue, which the lifetime manager fills; `transport`: how
//!   bytes arrive and frames leave (`transport::websocket`: RFC 6455 frames on the
//!   upgraded connection; `transport::sse` and `transport::long_polling` over
//!   `transport::posted`, the POST sends, and `transport::http_connections`, their live
//!   connections by token); `tokens`: connection ids and tokens.
//! - `identity`: the user id hook; `options`: [`HubOptions`]; `error`: [`MethodError`],
//!   [`SendError`].
//! - `metrics`: the Prometheus recorder and its `GET /metrics` route.
//! - `chat`: the chat server of the `hub-server` binary, reusable in tests;
//!   `examples`: example hubs beside it; `streaming`: [`HubStream`], [`UploadStream`],
//!   [`StreamOptions`].

#![forbid(unsafe_code)]

mod auth;
mod clients;
mod connection;
mod dispatch;
mod endpoints;
mod error;
mod extract;
mod handler;
mod hub;
mod identity;
mod options;
mod origins;
// Public for the benchmarks' `bench_internals` only; crate-private otherwise.
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
mod outbox;
mod serve;
mod services;
mod streaming;
mod tokens;
mod transport;

pub mod chat;
pub mod examples;
pub mod metrics;

/// A connection's send queue and the hub's message encoding, for the workspace's
/// benchmarks (`benches/`) only: compiled with the `bench-internals` feature, which
/// nothing else turns on.
///
/// **Not a stable API**: free to change or disappear in any release. The fan-out
/// benchmark encodes with `serialize_invocation`, registers real `Outbox`es with a
/// lifetime manager and drains them as a connection's writer does, so it measures the
/// code the server ships rather than a copy of it.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals {
    pub use crate::clients::serialize_invocation;
    pub use crate::outbox::{Outbox, OutboxReceiver, Outgoing};
}

pub use auth::{
    AuthError, AuthFuture, Authenticator, Claims, JwtAlgorithm, JwtAuthenticator, JwtError, JwtKey,
    JwtOptions, Policy, Principal,
};
pub use backplane_core::{BackplaneHealth, BackplaneStatus, ConnectionId, Target};
pub use backplane_core::{ClientResultError, ManagerOptions};
pub use clients::{CallerClients, ClientProxy, Clients, Groups, HubContext, InvokeError};
pub use error::{MethodError, SendError};
pub use extract::{BindError, Caller, Extension, FromInvocation, InvocationContext};
pub use handler::{Handler, HandlerFuture, IntoHubResult, Outcome};
pub use hub::{Hub, HubBuilder};
pub use hub_protocol::Protocol;
pub use identity::{UserIdProvider, access_token};
pub use options::{HubOptions, Transports};
pub use origins::AllowedOrigins;
pub use serve::{ServeOptions, serve};
pub use streaming::{HubStream, StreamOptions, UploadStream};
