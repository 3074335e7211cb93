//! One client connection over a WebSocket, from handshake to close.
//!
//! A connection is one task running two halves side by side:
//!
//! - the reader decodes incoming frames, starts invocations in arrival order (one at a
//!   time by default, like ASP.NET Core; up to `max_parallel_invocations` at once when
//!   configured) and enforces the client timeout;
//! - the writer drains the bounded outgoing queue (completions, and everything the
//!   lifetime manager delivers), batching what is queued into one flush, and sends a Ping
//!   whenever it has been silent for the keep-alive interval.
//!
//! The task also watches for the overflow alarm (the client stopped reading: drop it at
//! once) and for graceful shutdown (send Close, then end). Every timer is a
//! `tokio::time` timer, so tests drive keep-alive and timeouts with paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use backplane_core::{ConnectionId, HubLifetimeManager, LocalConnection};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hub_protocol::{
    Completion, CompletionResult, DecodeError, Decoder, HandshakeDecoder, HandshakeError,
    HandshakeResponse, HubMessage, Invocation, Protocol, TransferFormat, encode_close,
    encode_message, encode_ping,
};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite;

use crate::dispatch;
use crate::extract::ConnectionInfo;
use crate::hub::HubShared;
use crate::outbox::{Outbox, OutboxReceiver, Outgoing};
use crate::tokens::TokenLease;

/// The most queued frames the writer sends before flushing, so one busy connection still
/// gets its bytes on the wire promptly.
const MAX_BATCH: usize = 64;

/// Initial size of a completion frame's buffer (results larger than this grow it).
const COMPLETION_FRAME_CAPACITY: usize = 64;

/// How long a closing connection may take to flush its final Close message.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection accepted by the WebSocket endpoint, before its handshake.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The public connection id: issued by negotiate, or fresh when negotiate was skipped.
    pub(crate) connection_id: ConnectionId,
    /// The user the identity hook derived from the request.
    pub(crate) user: Option<String>,
    /// The claimed connection token (negotiated connections only); releasing it when the
    /// connection ends makes the token unusable.
    pub(crate) token: Option<TokenLease>,
}

/// Why a connection ended; decides what the client is told.
#[derive(Debug)]
enum End {
    /// The client sent a Close message, closed the WebSocket, or went away.
    ClientClosed,
    /// Nothing arrived for the client timeout.
    ClientTimeout(Duration),
    /// A message exceeded the maximum size.
    TooLarge(usize),
    /// A frame could not be decoded.
    InvalidMessage(String),
    /// The on-connected hook failed.
    HookFailed(Option<String>),
    /// The outgoing queue overflowed: the client stopped reading.
    SlowClient,
    /// The WebSocket failed.
    Transport(String),
    /// The server is shutting down.
    Shutdown,
}

/// Serve one WebSocket until it ends.
///
/// The returned future lives as long as the connection, and an idle connection costs
/// about its size: the socket is split here, outside it, so it does not keep room for
/// the whole socket, and states it passes through once or rarely (the handshake) are
/// boxed rather than reserved for its whole life.
pub(crate) fn run(
    hub: Arc<HubShared>,
    socket: WebSocket,
    accepted: Accepted,
) -> impl Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    serve(hub, sink, stream, accepted)
}

async fn serve(hub: Arc<HubShared>, mut sink: Sink, mut stream: Stream, accepted: Accepted) {
    let _count = hub.track_connection();
    let Accepted {
        connection_id,
        user,
        token: _token,
    } = accepted;
    let mut shutdown = hub.shutdown.subscribe();
    let mut buf = BytesMut::new();

    let protocol = Box::pin(async {
        let handshake = handshake(&hub, &mut sink, &mut stream, &mut buf);
        tokio::select! {
            protocol = handshake => protocol,
            () = shutdown_requested(&mut shutdown) => {
                fail_handshake(&mut sink, "The server is shutting down.").await;
                None
            }
        }
    })
    .await;
    let Some(protocol) = protocol else {
        return;
    };

    let (outbox, queue) = Outbox::new(protocol, hub.options.send_queue_bytes);
    let outbox = Arc::new(outbox);
    let info = Arc::new(ConnectionInfo {
        id: connection_id,
        user,
        protocol,
    });
    let registered = hub
        .manager
        .on_connected(LocalConnection::new(
            info.id.clone(),
            info.user.clone(),
            outbox.clone(),
        ))
        .await;
    if let Err(error) = registered {
        tracing::error!(hub = %hub.name, connection_id = %info.id, %error, "cannot register connection");
        let _ = timeout(CLOSE_FLUSH_TIMEOUT, close_websocket(&mut sink)).await;
        return;
    }
    tracing::info!(hub = %hub.name, connection_id = %info.id, user = ?info.user, %protocol, "client connected");

    let reader = read_loop(&hub, &info, &outbox, &mut stream, buf);
    let writer = write_loop(sink, queue, protocol, hub.options.keep_alive_interval);
    tokio::pin!(reader, writer);
    let end = tokio::select! {
        end = &mut reader => end,
        result = &mut writer => match result {
            Ok(()) => End::ClientClosed,
            Err(error) => End::Transport(error),
        },
        () = outbox.overflowed() => End::SlowClient,
        () = shutdown_requested(&mut shutdown) => End::Shutdown,
    };

    match &end {
        End::SlowClient => {
            tracing::warn!(hub = %hub.name, connection_id = %info.id, capacity_bytes = hub.options.send_queue_bytes, "client stopped reading its messages; disconnecting it");
        }
        End::Transport(error) => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, %error, "connection failed");
        }
        end => {
            let close = close_frame(protocol, end);
            // A full queue means the client is not reading: do not wait for it.
            if outbox.push(Outgoing::Close(close)).is_ok() {
                let _ = timeout(CLOSE_FLUSH_TIMEOUT, &mut writer).await;
            }
        }
    }

    // A connection whose on_connected hook failed never began, for the application (as
    // in ASP.NET Core): it is not announced as gone either.
    if let Some(hook) = &hub.on_disconnected
        && !matches!(end, End::HookFailed(_))
        && let Err(error) = dispatch::run_hook(&hub, &info, hook).await
    {
        tracing::warn!(hub = %hub.name, connection_id = %info.id, error = %error.log, "on_disconnected hook failed");
    }
    if let Err(error) = hub.manager.on_disconnected(&info.id).await {
        tracing::warn!(hub = %hub.name, connection_id = %info.id, %error, "cannot unregister connection");
    }
    tracing::info!(hub = %hub.name, connection_id = %info.id, user = ?info.user, reason = %describe(&end), "client disconnected");
}

/// Completes once graceful shutdown has begun.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the hub is gone, which is as final as a shutdown.
    let _ = shutdown.wait_for(|down| *down).await;
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Read the handshake request and answer it. Returns the agreed protocol, or `None` once
/// the connection has been answered with an error (or went away). Bytes that followed the
/// handshake in the same frame stay in `buf`.
async fn handshake(
    hub: &HubShared,
    sink: &mut Sink,
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Option<Protocol> {
    let deadline = Instant::now() + hub.options.handshake_timeout;
    let mut decoder = HandshakeDecoder::new(hub.options.max_message_size);
    loop {
        match decoder.decode_request(buf) {
            Ok(Some(request)) => {
                return match request.resolve_protocol() {
                    Ok(protocol) => {
                        let mut response = BytesMut::new();
                        HandshakeResponse::success().encode(&mut response);
                        // After the handshake the connection uses its protocol's transfer
                        // format, and so does the response (as ASP.NET Core does).
                        let message = frame_message(protocol, response.freeze())?;
                        sink.send(message).await.ok()?;
                        tracing::debug!(hub = %hub.name, %protocol, version = request.version, "handshake complete");
                        Some(protocol)
                    }
                    Err(error) => {
                        fail_handshake(sink, &handshake_error_text(&error)).await;
                        None
                    }
                };
            }
            Ok(None) => {}
            Err(error) => {
                fail_handshake(sink, &handshake_error_text(&error)).await;
                return None;
            }
        }
        let message = match timeout_at(deadline, stream.next()).await {
            Err(_elapsed) => {
                let text = format!(
                    "Handshake was not received within the handshake timeout of {:?}.",
                    hub.options.handshake_timeout
                );
                fail_handshake(sink, &text).await;
                return None;
            }
            Ok(None) => return None,
            Ok(Some(Err(error))) => {
                if let Some(limit) = message_too_large(&error) {
                    let text = handshake_error_text(&HandshakeError::TooLarge { limit });
                    fail_handshake(sink, &text).await;
                }
                return None;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => buf.extend_from_slice(text.as_bytes()),
            Message::Binary(bytes) => buf.extend_from_slice(&bytes),
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

/// Wording of handshake failures, as ASP.NET Core words them where it has a text.
fn handshake_error_text(error: &HandshakeError) -> String {
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

/// Answer the handshake with an error and close the WebSocket.
async fn fail_handshake(sink: &mut Sink, text: &str) {
    tracing::debug!(error = text, "handshake failed");
    let mut response = BytesMut::new();
    HandshakeResponse::failure(text).encode(&mut response);
    // Before a protocol is agreed, errors go out as text, which every client reads.
    if let Ok(text) = Utf8Bytes::try_from(response.freeze()) {
        let _ = timeout(CLOSE_FLUSH_TIMEOUT, sink.send(Message::Text(text))).await;
    }
    let _ = timeout(CLOSE_FLUSH_TIMEOUT, close_websocket(sink)).await;
}

/// Send the WebSocket close frame with status 1000 (normal closure, what ASP.NET Core
/// sends; a frame without a status reads as 1005 on the client), flush and close.
async fn close_websocket(sink: &mut Sink) -> Result<(), axum::Error> {
    sink.send(Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: Utf8Bytes::default(),
    })))
    .await?;
    sink.close().await
}

/// The size limit a WebSocket error reports, if it is a message-too-large error.
fn message_too_large(error: &axum::Error) -> Option<usize> {
    let source = std::error::Error::source(error)?;
    match source.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            max_size,
            ..
        }) => Some(*max_size),
        _ => None,
    }
}

/// Read and dispatch until the connection should end.
///
/// Invocations are started in the order they arrive. With
/// [`HubOptions::max_parallel_invocations`](crate::HubOptions::max_parallel_invocations)
/// at 1 (the default) each one finishes before the next message is read, as in ASP.NET
/// Core. Above 1, an invocation is polled once as soon as it arrives (so it has reached
/// its first await, typically a send that has taken its place in the backplane's ordered
/// queue) before the next one starts; up to that many then run at once, and reading stops
/// while the limit is reached, which pushes back on the client through TCP.
async fn read_loop(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    outbox: &Arc<Outbox>,
    stream: &mut Stream,
    mut buf: BytesMut,
) -> End {
    if let Some(hook) = &hub.on_connected
        && let Err(error) = dispatch::run_hook(hub, info, hook).await
    {
        tracing::warn!(hub = %hub.name, connection_id = %info.id, error = %error.log, "on_connected hook failed");
        return End::HookFailed(error.for_client);
    }
    let max_message_size = hub.options.max_message_size;
    let client_timeout = hub.options.client_timeout;
    let max_in_flight = hub.options.max_parallel_invocations.max(1);
    let mut decoder = Decoder::new(info.protocol, max_message_size);
    let mut in_flight = Running::default();
    let mut last_received = Instant::now();
    loop {
        // Frames left over from the handshake or the last read come first.
        loop {
            // Nothing more is read while the client's queue is full: its answers are
            // queued past the bound (a client is never dropped as a slow reader because
            // of its own completions), and this wait is what bounds them. Waiting here
            // stops reading, which pushes back on the client through TCP.
            if let Some(end) = wait_for_room(outbox, &mut in_flight).await {
                return end;
            }
            let message = match decoder.decode(&mut buf) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(DecodeError::MessageTooLarge { limit }) => return End::TooLarge(limit),
                Err(DecodeError::UnknownMessageType { message_type }) => {
                    // Later protocol versions may add types; receivers ignore them.
                    tracing::debug!(hub = %hub.name, connection_id = %info.id, message_type, "ignoring unknown message type");
                    continue;
                }
                Err(error) => return End::InvalidMessage(error.to_string()),
            };
            if let HubMessage::Invocation(invocation) = message {
                let mut invocation = Box::pin(run_invocation(
                    hub.clone(),
                    info.clone(),
                    outbox.clone(),
                    invocation,
                ));
                // One poll now: the invocation takes its place (its first send is queued)
                // before any later one starts.
                match poll_once(invocation.as_mut()).await {
                    Poll::Ready(Some(end)) => return end,
                    Poll::Ready(None) => {}
                    Poll::Pending => in_flight.push(invocation),
                }
                while in_flight.len() >= max_in_flight {
                    // Not reading meanwhile is the backpressure on a client that sends
                    // faster than its invocations complete.
                    if let Some(end) = in_flight.next().await {
                        return end;
                    }
                }
            } else if let Some(end) = handle(hub, info, outbox, message).await {
                return end;
            }
        }
        // A large message made the buffer grow; an idle connection should not keep that.
        if buf.is_empty() && buf.capacity() > 2 * hub.options.websocket_read_buffer_size {
            buf = BytesMut::new();
        }
        let next = tokio::select! {
            // Completing invocations while waiting for the next frame.
            finished = in_flight.next(), if !in_flight.is_empty() => match finished {
                Some(end) => return end,
                None => continue,
            },
            next = timeout_at(last_received + client_timeout, stream.next()) => next,
        };
        let message = match next {
            Err(_elapsed) => return End::ClientTimeout(client_timeout),
            Ok(None) => return End::ClientClosed,
            Ok(Some(Err(error))) => {
                return match message_too_large(&error) {
                    // The WebSocket layer's limit (per WebSocket message) was exceeded.
                    Some(limit) => End::TooLarge(limit),
                    None => End::Transport(error.to_string()),
                };
            }
            Ok(Some(Ok(message))) => message,
        };
        last_received = Instant::now();
        match message {
            Message::Text(text) => buf.extend_from_slice(text.as_bytes()),
            Message::Binary(bytes) => buf.extend_from_slice(&bytes),
            Message::Close(_) => return End::ClientClosed,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

/// An invocation that has started and not finished.
type InFlight = Pin<Box<dyn Future<Output = Option<End>> + Send>>;

/// The invocations of one connection that have started and not finished. The set is
/// only allocated once one is pending, so a connection that never runs invocations in
/// parallel (the default) does not pay for it.
#[derive(Default)]
struct Running(Option<FuturesUnordered<InFlight>>);

impl Running {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, invocation: InFlight) {
        self.0
            .get_or_insert_with(FuturesUnordered::new)
            .push(invocation);
    }

    /// The outcome of the next invocation to finish (`Some` ends the connection);
    /// `None` at once when none is running.
    async fn next(&mut self) -> Option<End> {
        match &mut self.0 {
            Some(running) => running.next().await.flatten(),
            None => None,
        }
    }
}

/// Wait until the outbox is below its capacity, letting running invocations finish
/// meanwhile. `Some` ends the connection.
async fn wait_for_room(outbox: &Outbox, in_flight: &mut Running) -> Option<End> {
    if outbox.has_room() {
        return None;
    }
    loop {
        let room = outbox.room_freed();
        tokio::pin!(room);
        // Registered before the check, so the writer freeing room in between is seen.
        room.as_mut().enable();
        if outbox.has_room() {
            return None;
        }
        tokio::select! {
            () = room => {}
            finished = in_flight.next(), if !in_flight.is_empty() => {
                if finished.is_some() {
                    return finished;
                }
            }
        }
    }
}

/// Poll `future` once with the current task's waker.
async fn poll_once<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// Run one invocation to its end and queue its completion, if the caller wants one.
async fn run_invocation(
    hub: Arc<HubShared>,
    info: Arc<ConnectionInfo>,
    outbox: Arc<Outbox>,
    invocation: Invocation,
) -> Option<End> {
    let invocation_id = invocation.invocation_id.clone();
    let target_for_log = invocation_id.is_none().then(|| invocation.target.clone());
    let result = dispatch::invoke(&hub, &info, invocation).await;
    match invocation_id {
        Some(invocation_id) => complete(info.protocol, &outbox, invocation_id, result),
        None => {
            // Fire-and-forget: the caller wants no reply, so errors only get logged.
            if let CompletionResult::Error(error) = result {
                tracing::debug!(hub = %hub.name, connection_id = %info.id, target = ?target_for_log, %error, "non-blocking invocation failed");
            }
            None
        }
    }
}

/// Act on one hub message from the client; `Some` ends the connection.
async fn handle(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    outbox: &Arc<Outbox>,
    message: HubMessage,
) -> Option<End> {
    match message {
        HubMessage::Invocation(invocation) => {
            // The read loop starts invocations itself; this path is only for completeness.
            // Boxed: inline, its state would make every connection's read loop (and so
            // every idle connection) a kilobyte larger.
            Box::pin(run_invocation(
                hub.clone(),
                info.clone(),
                outbox.clone(),
                invocation,
            ))
            .await
        }
        HubMessage::StreamInvocation(invocation) => {
            let result = dispatch::refuse_stream(hub, &invocation);
            complete(info.protocol, outbox, invocation.invocation_id, result)
        }
        HubMessage::Close(close) => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, error = ?close.error, "client sent Close");
            Some(End::ClientClosed)
        }
        HubMessage::Ping => None,
        HubMessage::CancelInvocation(_) => None,
        HubMessage::StreamItem(item) => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, invocation_id = %item.invocation_id, "ignoring stream item: upload streams are not supported");
            None
        }
        HubMessage::Completion(completion) => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, invocation_id = %completion.invocation_id, "ignoring completion: client results are not supported");
            None
        }
        HubMessage::Ack(_) | HubMessage::Sequence(_) => {
            // Stateful reconnect is never offered, so a client has no reason to send these.
            tracing::debug!(hub = %hub.name, connection_id = %info.id, "ignoring stateful reconnect message");
            None
        }
    }
}

/// Queue the completion of `invocation_id`; `Some` ends the connection.
fn complete(
    protocol: Protocol,
    outbox: &Outbox,
    invocation_id: String,
    result: CompletionResult,
) -> Option<End> {
    // A void completion is about 40 bytes plus the id: starting with room for it spares
    // the encoder several reallocations per invocation.
    let mut frame = BytesMut::with_capacity(COMPLETION_FRAME_CAPACITY + invocation_id.len());
    let completion = HubMessage::Completion(Completion {
        headers: Default::default(),
        invocation_id,
        result,
    });
    if let Err(error) = encode_message(protocol, &mut frame, &completion) {
        // Only a result over the 2 GiB MessagePack limit gets here.
        return Some(End::InvalidMessage(format!(
            "cannot encode completion: {error}"
        )));
    }
    outbox.reply(frame.freeze());
    None
}

/// Send what is queued, and a Ping when idle, until told to close or the socket fails.
async fn write_loop(
    mut sink: Sink,
    mut queue: OutboxReceiver,
    protocol: Protocol,
    keep_alive: Duration,
) -> Result<(), String> {
    let mut ping = BytesMut::new();
    encode_ping(protocol, &mut ping);
    let ping = ping.freeze();
    let idle = sleep_until(Instant::now() + keep_alive);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            item = queue.recv() => {
                // The outbox is gone: nothing more will be queued.
                let Some(item) = item else {
                    return Ok(());
                };
                let mut next = Some(item);
                let mut batched = 0;
                while let Some(item) = next.take() {
                    match item {
                        Outgoing::Frame(frame) | Outgoing::Reply(frame) => {
                            if let Some(message) = frame_message(protocol, frame) {
                                sink.feed(message).await.map_err(|e| e.to_string())?;
                            }
                        }
                        Outgoing::Close(frame) => {
                            if let Some(message) = frame.and_then(|frame| frame_message(protocol, frame)) {
                                sink.feed(message).await.map_err(|e| e.to_string())?;
                            }
                            close_websocket(&mut sink).await.map_err(|e| e.to_string())?;
                            return Ok(());
                        }
                    }
                    batched += 1;
                    if batched < MAX_BATCH {
                        next = queue.try_recv();
                    }
                }
                sink.flush().await.map_err(|e| e.to_string())?;
                idle.as_mut().reset(Instant::now() + keep_alive);
            }
            () = &mut idle => {
                if let Some(message) = frame_message(protocol, ping.clone()) {
                    sink.send(message).await.map_err(|e| e.to_string())?;
                }
                idle.as_mut().reset(Instant::now() + keep_alive);
            }
        }
    }
}

/// A frame as a WebSocket message in the protocol's transfer format.
fn frame_message(protocol: Protocol, frame: Bytes) -> Option<Message> {
    match protocol.transfer_format() {
        TransferFormat::Binary => Some(Message::Binary(frame)),
        TransferFormat::Text => match Utf8Bytes::try_from(frame) {
            Ok(text) => Some(Message::Text(text)),
            Err(error) => {
                // Our encoder only writes UTF-8 JSON; a frame from a misbehaving node is
                // dropped rather than breaking the connection.
                tracing::warn!(%error, "dropping a JSON frame that is not UTF-8");
                None
            }
        },
    }
}

/// The Close message that tells the client why the connection ends.
fn close_frame(protocol: Protocol, end: &End) -> Option<Bytes> {
    let (error, allow_reconnect) = match end {
        End::ClientClosed => return None,
        End::Shutdown => (None, true),
        End::ClientTimeout(_) => (Some(describe(end)), true),
        End::TooLarge(_) | End::InvalidMessage(_) | End::HookFailed(_) => {
            (Some(describe(end)), false)
        }
        End::SlowClient | End::Transport(_) => return None,
    };
    let mut frame = BytesMut::new();
    encode_close(protocol, &mut frame, error.as_deref(), allow_reconnect).ok()?;
    Some(frame.freeze())
}

/// Why the connection ended, for the Close message and the log.
fn describe(end: &End) -> String {
    match end {
        End::ClientClosed => "the client closed the connection".into(),
        End::ClientTimeout(timeout) => format!(
            "Connection closed with an error. No message was received from the client within the client timeout of {timeout:?}."
        ),
        End::TooLarge(limit) => format!(
            "Connection closed with an error. InvalidDataException: The maximum message size of {limit} bytes was exceeded."
        ),
        End::InvalidMessage(reason) => {
            format!("Connection closed with an error. InvalidDataException: {reason}.")
        }
        End::HookFailed(Some(message)) => {
            format!("Connection closed with an error. HubException: {message}")
        }
        End::HookFailed(None) => "Connection closed with an error.".into(),
        End::SlowClient => "the client stopped reading and its send queue overflowed".into(),
        End::Transport(error) => format!("transport error: {error}"),
        End::Shutdown => "the server is shutting down".into(),
    }
}
