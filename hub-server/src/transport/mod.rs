//! The seam between the connection core and the transports.
//!
//! The connection core (`crate::connection`) runs a connection's whole life once: the
//! handshake, hub message parsing, invocation dispatch, keep-alive, the client timeout and
//! the send queue. A transport only says how a client's bytes arrive and how frames leave,
//! through two traits:
//!
//! - [`Incoming`]: the client's bytes, appended to the core's buffer a bounded chunk at a
//!   time, as they arrive. The core parses hub messages out of that buffer as soon as they
//!   are complete, so no transport ever buffers a whole transport message. Backpressure is
//!   simply not calling [`Incoming::read`]: while the hub is behind (invocations at their
//!   limit, or no room in the send queue for their answers) the core stops reading, and the
//!   transport stops pulling bytes from the network.
//! - [`FrameSink`]: writes whole hub message frames (buffered, then flushed), and ends the
//!   transport. [`FrameSink::serve`] lets a transport send traffic of its own (a WebSocket
//!   answers pings with pongs) from the connection's writer.
//!
//! WebSockets ([`websocket`]) reads and writes RFC 6455 frames over the upgraded HTTP
//! connection itself. Server-Sent Events ([`sse`]) and long polling ([`long_polling`])
//! read the client's `POST` bodies ([`posted`]) and find their connection by token in
//! [`http_connections`].
//!
//! # How Server-Sent Events and long polling plug in
//!
//! Both receive the client's bytes as `POST {hub}?id=` bodies and send frames on another
//! request, so their adapters are a pair of handles around a per-connection registry entry:
//!
//! - their [`Incoming`] is the receiving end of a small bounded channel of body chunks. A
//!   POST handler streams its request body into the channel, chunk by chunk, and answers
//!   once the body is consumed; when the core stops reading, the channel fills, the POST
//!   handler stops polling the body, and TCP pushes back on the client, exactly as with a
//!   WebSocket. A second POST while one is in flight gets 409. Long polling also reports
//!   each poll request as [`Received::Activity`], since a polling client may have nothing
//!   to send for longer than the client timeout.
//! - their [`FrameSink`] writes into the open `GET` response: for Server-Sent Events each
//!   frame becomes `data:` lines on a streaming `text/event-stream` body, flushed as
//!   written; for long polling, frames accumulate until the pending poll (or the next one)
//!   takes them, and `close` answers the last poll with 204. Neither needs
//!   [`FrameSink::serve`]. Server-Sent Events carry text only
//!   ([`FrameSink::SUPPORTS_BINARY`]), and long polling sends no Pings
//!   ([`FrameSink::INHERENT_KEEP_ALIVE`]).
//!
//! The core is generic over both traits, so each transport is monomorphised and an idle
//! connection holds only what its transport's state needs.

pub(crate) mod http_connections;
pub(crate) mod long_polling;
pub(crate) mod posted;
pub(crate) mod sse;
pub(crate) mod websocket;

use std::future::Future;
use std::io;

use bytes::{Bytes, BytesMut};
use hub_protocol::TransferFormat;

/// What one [`Incoming::read`] brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// The client is alive: bytes were appended to the buffer, or the transport saw traffic
    /// that counts as activity (see the transport's rule). Resets the client timeout.
    Activity,
    /// The client ended the transport on purpose (a WebSocket Close frame).
    Closed,
    /// The transport ended without the client saying so (end of stream without a Close
    /// frame: a dropped network path, a proxy that cut it). A connection with stateful
    /// reconnect waits for the client to come back on a new transport; any other ends.
    Lost,
    /// A new transport replaced a lost one (stateful reconnect): bytes of a message that
    /// was half received on the old one were discarded, and the client now resends from
    /// its Sequence message.
    Resumed,
}

/// Why reading from a transport failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The client broke the transport's own protocol (for a WebSocket: an unmasked frame,
    /// a bad opcode, text that is not UTF-8). The transport has chosen how to say so; the
    /// connection ends by closing the transport through its [`FrameSink`].
    #[error("the client broke the transport protocol: {0}")]
    Violation(String),
    /// The network failed; nothing more can be sent either.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The client's bytes, as they arrive.
pub(crate) trait Incoming: Send {
    /// Wait until the client sends something, append at most a bounded chunk of its bytes
    /// to `buf` and say what arrived. While nothing arrives, an empty `buf` may be replaced
    /// by an unallocated one, so an idle connection holds no read buffer.
    ///
    /// Cancel-safe: dropping the future loses no bytes (the core does, on timeouts).
    fn read(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl Future<Output = Result<Received, TransportError>> + Send;
}

/// Where a connection's frames go.
pub(crate) trait FrameSink: Send {
    /// The transport's name as the `transport` label of the connection metrics
    /// (`websockets`, `server_sent_events`, `long_polling`).
    const TRANSPORT: &'static str;

    /// Whether the transport carries binary frames (MessagePack). Server-Sent Events
    /// carry text only; the handshake refuses a binary protocol on them, as ASP.NET Core
    /// does.
    const SUPPORTS_BINARY: bool = true;

    /// Whether the transport shows the client alive by itself, so the writer sends no
    /// keep-alive Pings (ASP.NET Core's `HasInherentKeepAlive`): long polling, where each
    /// poll is the client's keep-alive and a Ping would only end a poll early.
    const INHERENT_KEEP_ALIVE: bool = false;

    /// Queue one complete frame to be sent in `format` (text frames are UTF-8: this
    /// server's encodings, or JSON checked where its `SerializedMessage` was made or
    /// decoded). May write earlier frames when the transport's buffer is full; nothing is
    /// guaranteed to reach the client before [`FrameSink::flush`].
    fn feed(
        &mut self,
        frame: Bytes,
        format: TransferFormat,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Queue one hub message that stateful reconnect numbers (an Invocation, Completion,
    /// StreamItem, StreamInvocation or CancelInvocation), as [`FrameSink::feed`] does for
    /// any frame; a resumable connection's sink also keeps it until the client
    /// acknowledges it.
    fn feed_message(
        &mut self,
        frame: Bytes,
        format: TransferFormat,
    ) -> impl Future<Output = io::Result<()>> + Send {
        self.feed(frame, format)
    }

    /// Send everything fed so far.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Flush, then end the transport the way it ends normally (a WebSocket Close frame),
    /// or with the error the transport itself reported from [`Incoming::read`].
    fn close(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// The transport's own traffic, run by the writer whenever it waits for frames:
    /// completes after sending something (the writer then calls it again), or fails.
    /// Transports without traffic of their own never complete.
    fn serve(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::pending()
    }
}
