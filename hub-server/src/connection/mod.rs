//! One client connection, from handshake to close, over any transport.
//!
//! This is the transport-neutral core: it reads the client's bytes from an
//! [`Incoming`] and sends frames through a [`FrameSink`] (see `crate::transport`), and
//! everything else is written once, here. A connection is one task running two halves
//! side by side:
//!
//! - the reader (`reading`) parses hub messages out of the bytes as they arrive, starts
//!   invocations in arrival order (up to `max_parallel_invocations` at once, 1024 by
//!   default; 1 gives ASP.NET Core's one at a time) and enforces the client timeout. It
//!   stops reading while the hub is behind or the client's queue has no room for what its
//!   invocations will send it, which pushes back on the client;
//! - the writer (`writing`) drains the bounded outgoing queue (completions, and everything
//!   the lifetime manager delivers), batching what is queued into one flush, sends a Ping
//!   whenever it has been silent for the keep-alive interval, and lets the transport send
//!   traffic of its own.
//!
//! The task also watches for the overflow alarm (the client stopped reading: drop it at
//! once) and for graceful shutdown (send Close, then end). Every timer is a
//! `tokio::time` timer, so tests drive keep-alive and timeouts with paused time.

mod handshake;
mod invocation;
mod reading;
mod resume;
mod streams;
mod writing;

pub(crate) use self::resume::{Reattach, ResumeState};

use std::sync::Arc;
use std::time::Duration;

use backplane_core::{ConnectionId, HubLifetimeManager, LocalConnection};
use bytes::{Bytes, BytesMut};
use hub_protocol::{Protocol, encode_close};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::auth::{self, Principal};
use crate::dispatch;
use crate::extract::ConnectionInfo;
use crate::hub::{ConnectionCount, HubShared};
use crate::metrics::ConnectionMetrics;
use crate::outbox::{Outbox, OutboxReceiver, Outgoing};
use crate::tokens::TokenLease;
use crate::transport::{FrameSink, Incoming};

/// How long a closing connection may take to flush its final Close message.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection accepted by a transport endpoint, before its handshake.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The public connection id: issued by negotiate, or fresh when negotiate was skipped.
    pub(crate) connection_id: ConnectionId,
    /// The user the identity hook derived from the request.
    pub(crate) user: Option<String>,
    /// The claimed connection token (negotiated connections only); releasing it when the
    /// connection ends makes the token unusable.
    pub(crate) token: Option<TokenLease>,
    /// What the authenticator vouched for, if the request authenticated.
    pub(crate) principal: Option<Arc<Principal>>,
    /// The connection's place under `max_connections`, taken by the endpoint before it
    /// accepted the request; held until the connection ends.
    pub(crate) count: ConnectionCount,
}

/// Why a connection ended; decides what the client is told.
#[derive(Debug)]
enum End {
    /// The client sent a Close message, closed the transport, or went away.
    ClientClosed,
    /// Nothing arrived for the client timeout.
    ClientTimeout(Duration),
    /// A hub message exceeded the maximum size.
    TooLarge(usize),
    /// A frame could not be decoded.
    InvalidMessage(String),
    /// The on-connected hook failed.
    HookFailed(Option<String>),
    /// The outgoing queue overflowed: the client stopped reading.
    SlowClient,
    /// The client broke the transport's own protocol; the transport says how in its
    /// close.
    TransportViolation(String),
    /// The transport failed.
    Transport(String),
    /// The server is shutting down.
    Shutdown,
    /// The client's credentials expired (`close_on_authentication_expiration`).
    AuthenticationExpired,
}

/// Serve one connection until it ends: `incoming` brings the client's bytes, `sink`
/// takes the frames for it.
///
/// States the connection passes through once or rarely (the handshake) are boxed rather
/// than reserved for its whole life, so an idle connection costs little more than its
/// transport's state.
pub(crate) async fn serve<I: Incoming, S: FrameSink>(
    hub: Arc<HubShared>,
    incoming: &mut I,
    mut sink: S,
    accepted: Accepted,
) {
    let Some((started, queue, buf)) = start(&hub, incoming, &mut sink, accepted, false).await
    else {
        return;
    };
    let end = attached(&hub, &started, incoming, sink, queue, buf).await;
    // Boxed, as the end runs once: the hooks' futures would otherwise enlarge the one
    // every idle connection holds.
    Box::pin(finish(&hub, started, end)).await;
}

/// Serve one connection whose client asked for stateful reconnect: when its transport is
/// lost, it waits for the client to come back on a new one from `reattach` (see the
/// `resume` module). Clients that did not send handshake version 2 or later (before
/// which Ack and Sequence do not exist) are served as any other.
pub(crate) async fn serve_resumable<I, S, R>(
    hub: Arc<HubShared>,
    mut incoming: I,
    mut sink: S,
    accepted: Accepted,
    reattach: R,
) where
    I: Incoming,
    S: FrameSink,
    R: Reattach<I, S>,
{
    let Some((started, queue, buf)) = start(&hub, &mut incoming, &mut sink, accepted, true).await
    else {
        return;
    };
    let end = match started.info.resume.clone() {
        Some(state) => {
            let (mut incoming, sink) = resume::wrap(
                incoming,
                sink,
                reattach,
                state,
                started.info.protocol,
                hub.options.stateful_reconnect_window,
            );
            attached(&hub, &started, &mut incoming, sink, queue, buf).await
        }
        None => attached(&hub, &started, &mut incoming, sink, queue, buf).await,
    };
    finish(&hub, started, end).await;
}

/// A connection past its handshake and registered with the lifetime manager.
struct Started {
    /// Who it is.
    info: Arc<ConnectionInfo>,
    /// Its send queue, registered with the lifetime manager.
    outbox: Arc<Outbox>,
    /// The claimed connection token, released when the connection ends.
    _token: Option<TokenLease>,
    /// Counts the connection until it has ended (hooks run, unregistered).
    _count: ConnectionCount,
    /// Counts it in the connections gauge, likewise, and its messages.
    metrics: ConnectionMetrics,
}

/// Run the handshake and register the connection; `None` when it ended before that.
/// Also returns the writer's end of the send queue and the bytes that followed the
/// handshake.
async fn start<I: Incoming, S: FrameSink>(
    hub: &Arc<HubShared>,
    incoming: &mut I,
    sink: &mut S,
    accepted: Accepted,
    stateful: bool,
) -> Option<(Started, OutboxReceiver, BytesMut)> {
    let Accepted {
        connection_id,
        user,
        token,
        principal,
        count,
    } = accepted;
    let mut shutdown = hub.shutdown.subscribe();
    let mut buf = BytesMut::new();

    let handshake = Box::pin(async {
        let handshake = handshake::run(hub, sink, incoming, &mut buf);
        tokio::select! {
            agreed = handshake => agreed,
            () = shutdown_requested(&mut shutdown) => {
                handshake::fail(sink, "The server is shutting down.").await;
                None
            }
        }
    })
    .await;
    let (protocol, version) = handshake?;

    let (outbox, queue) = Outbox::new(protocol, hub.options.send_queue_bytes);
    let outbox = Arc::new(outbox);
    // Ack and Sequence exist from version 2 of the hub protocols on.
    let resume = (stateful && version >= 2)
        .then(|| Arc::new(ResumeState::new(hub.options.stateful_reconnect_buffer_size)));
    let info = Arc::new(ConnectionInfo {
        id: connection_id,
        user,
        principal,
        protocol,
        resume,
        streams: Default::default(),
    });
    let registered = hub
        .services
        .manager
        .on_connected(LocalConnection::new(
            info.id.clone(),
            info.user.clone(),
            outbox.clone(),
        ))
        .await;
    if let Err(error) = registered {
        tracing::error!(hub = %hub.name, connection_id = %info.id, %error, "cannot register connection");
        let _ = timeout(CLOSE_FLUSH_TIMEOUT, sink.close()).await;
        return None;
    }
    tracing::info!(hub = %hub.name, connection_id = %info.id, authenticated = info.principal.is_some(), %protocol, stateful_reconnect = info.resume.is_some(), "client connected");
    let started = Started {
        metrics: ConnectionMetrics::open(S::TRANSPORT, protocol),
        info,
        outbox,
        _token: token,
        _count: count,
    };
    Some((started, queue, buf))
}

/// Read and write until the connection ends, and say why it did.
async fn attached<I: Incoming, S: FrameSink>(
    hub: &Arc<HubShared>,
    started: &Started,
    incoming: &mut I,
    sink: S,
    queue: OutboxReceiver,
    buf: BytesMut,
) -> End {
    let Started {
        info,
        outbox,
        metrics,
        ..
    } = started;
    let mut shutdown = hub.shutdown.subscribe();
    let protocol = info.protocol;
    // Leaving this function drops the reader, and with it the invocations still running,
    // before the disconnect hooks run. They may be waiting for something only the hooks'
    // own sends would wait behind (a place in the backplane's ordered queue), and nothing
    // polls them once the connection has ended.
    let expiry = auth::expiry_timer(
        info.principal.as_deref(),
        hub.options.close_on_authentication_expiration,
    );
    let reader = reading::read_loop(hub, info, outbox, incoming, buf, &metrics.received);
    let writer = writing::write_loop(
        sink,
        queue,
        protocol,
        hub.options.keep_alive_interval,
        metrics.sent.clone(),
    );
    tokio::pin!(reader, writer);
    let end = tokio::select! {
        end = &mut reader => end,
        result = &mut writer => match result {
            Ok(()) => End::ClientClosed,
            Err(error) => End::Transport(error),
        },
        () = outbox.overflowed() => End::SlowClient,
        () = shutdown_requested(&mut shutdown) => End::Shutdown,
        () = auth::expired(expiry) => End::AuthenticationExpired,
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
                // Boxed: the timer is needed once, at the end; inline it would enlarge
                // the future every idle connection holds.
                let _ = Box::pin(timeout(CLOSE_FLUSH_TIMEOUT, &mut writer)).await;
            }
        }
    }
    end
}

/// Run the disconnect hook and unregister the connection.
async fn finish(hub: &Arc<HubShared>, started: Started, end: End) {
    let info = &started.info;
    // A connection whose on_connected hook failed never began, for the application (as
    // in ASP.NET Core): it is not announced as gone either.
    if let Some(hook) = &hub.on_disconnected
        && !matches!(end, End::HookFailed(_))
        && let Err(error) = dispatch::run_hook(hub, info, hook).await
    {
        tracing::warn!(hub = %hub.name, connection_id = %info.id, error = %error.log, "on_disconnected hook failed");
    }
    if let Err(error) = hub.services.manager.on_disconnected(&info.id).await {
        tracing::warn!(hub = %hub.name, connection_id = %info.id, %error, "cannot unregister connection");
    }
    tracing::info!(hub = %hub.name, connection_id = %info.id, reason = %describe(&end), "client disconnected");
}

/// Completes once graceful shutdown has begun.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the hub is gone, which is as final as a shutdown.
    let _ = shutdown.wait_for(|down| *down).await;
}

/// The Close message that tells the client why the connection ends.
fn close_frame(protocol: Protocol, end: &End) -> Option<Bytes> {
    let (error, allow_reconnect) = match end {
        End::ClientClosed => return None,
        End::Shutdown => (None, true),
        // As ASP.NET Core: a Close without an error ("a non-errored closed message"),
        // reconnecting allowed, so the client comes back at once with fresh credentials.
        // Why it closed goes to the log only.
        End::AuthenticationExpired => (None, true),
        End::ClientTimeout(_) => (Some(describe(end)), true),
        End::TooLarge(_) | End::InvalidMessage(_) | End::HookFailed(_) => {
            (Some(describe(end)), false)
        }
        // The transport's own close says what went wrong (as in ASP.NET Core, where the
        // WebSocket layer closes with its status code and no hub message).
        End::TransportViolation(_) | End::SlowClient | End::Transport(_) => return None,
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
        End::TransportViolation(reason) => format!("transport protocol violation: {reason}"),
        End::Transport(error) => format!("transport error: {error}"),
        End::Shutdown => "the server is shutting down".into(),
        End::AuthenticationExpired => {
            "Connection closed with an error. The authentication token expired.".into()
        }
    }
}
