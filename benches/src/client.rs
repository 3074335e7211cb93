//! How the load tool connects: `chat-client` connections to a `hub-server`'s chat hub,
//! set up the way every scenario needs them.
//!
//! The tool drives the servers through the same client library users get (negotiate,
//! WebSocket, JSON hub protocol), with its load-generator knobs: pipelined invocations
//! ([`HubConnection::begin_invoke`](chat_client::HubConnection::begin_invoke)), arrival
//! times read in handlers and observers (they run as each message is decoded), and a
//! small WebSocket read buffer for thousands of idle connections.

use std::time::Duration;

use chat_client::{HubConnectionBuilder, TransportType};

/// The chat hub's path on a `hub-server`.
pub const HUB_PATH: &str = "/chathub";

/// Largest hub message the client accepts (the server's default limit).
const MAX_MESSAGE_SIZE: usize = 32 * 1024;

/// How often an otherwise silent connection sends a Ping, well inside the server's 30 s
/// client timeout.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How long the server may stay silent before a connection gives up on it: never, in
/// practice. The scenarios judge the servers by what arrives, with their own deadlines;
/// a machine saturated by the load must not make clients drop connections by themselves.
const SERVER_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// How to open connections.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Bound on each negotiate request, the WebSocket upgrade and the handshake.
    pub step_timeout: Duration,
    /// The WebSocket read buffer per connection (tungstenite's default is 128 KiB, which
    /// adds up with thousands of idle connections).
    pub read_buffer_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(10),
            read_buffer_size: 16 * 1024,
        }
    }
}

/// A connection to the chat hub of `server` (`http://host:port`), not started yet:
/// WebSockets after negotiate, JSON, keep-alive Pings every [`PING_INTERVAL`].
pub fn hub_connection(server: &str, options: ClientOptions) -> HubConnectionBuilder {
    HubConnectionBuilder::new(format!("{}{HUB_PATH}", server.trim_end_matches('/')))
        .transports([TransportType::WebSockets])
        .connect_timeout(options.step_timeout)
        .handshake_timeout(options.step_timeout)
        .websocket_read_buffer_size(options.read_buffer_size)
        .max_message_size(MAX_MESSAGE_SIZE)
        .keep_alive_interval(PING_INTERVAL)
        .server_timeout(SERVER_TIMEOUT)
}
