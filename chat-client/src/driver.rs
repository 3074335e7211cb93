//! The connection task: reads and dispatches hub messages, writes calls, keeps the connection
//! alive, notices when it is lost, and reconnects.
//!
//! One task per run (from `start` to closed) owns the transport, so no lock guards it and
//! handlers see messages in arrival order. With stateful reconnect, a lost WebSocket is
//! replaced here, inside the session, without the app seeing a reconnect.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hub_protocol::Decoder;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::connection::ConnectionCore;
use crate::error::{ConnectError, DisconnectReason, InvokeError};
use crate::handlers::LastLookup;
use crate::in_flight::{Held, InFlight};
use crate::outgoing::Outgoing;
use crate::reconnect::RetryContext;
use crate::stateful::StatefulReconnect;
use crate::transport::{self, Link, Transport};

mod reading;
mod writes;

/// How a session ended.
enum End {
    /// `stop` was called (or every handle dropped).
    Stopped,
    /// The connection was lost.
    Lost(DisconnectReason),
}

/// Why stateful reconnect did not resume the connection.
enum Resume {
    /// `stop` was called meanwhile.
    Stopped,
    /// The new WebSocket could not be opened (the server no longer has the connection)
    /// or was lost at once: the connection is lost.
    Failed,
}

/// How a reconnect loop ended.
enum Reconnect {
    /// A new connection is up.
    Connected(Box<Link>),
    /// `stop` was called meanwhile.
    Stopped,
    /// The policy gave up.
    GaveUp(DisconnectReason),
}

/// Resolves once `stop` says so (or its sender is gone, which only happens when the run is
/// over). The `watch::Ref` is dropped here, so callers' futures stay `Send`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Runs the connection of run `run` until it is stopped or lost for good.
pub(crate) async fn run(
    inner: Arc<ConnectionCore>,
    run: u64,
    mut link: Link,
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut cancels: mpsc::UnboundedReceiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut session = Session::new(&inner, link);
        let reason = match session.drive(&mut outgoing, &mut cancels, &mut stop).await {
            End::Stopped => {
                session.shut_down(&mut outgoing).await;
                inner.finished(run);
                inner.events.closed(None);
                return;
            }
            End::Lost(reason) => reason,
        };
        tracing::info!(%reason, "connection lost");
        let first_delay = inner
            .config
            .reconnect
            .as_ref()
            .filter(|_| reason.allows_reconnect())
            .and_then(|policy| {
                policy.0.next_retry_delay(&RetryContext {
                    previous_retry_count: 0,
                    elapsed: Duration::ZERO,
                    retry_reason: &reason,
                })
            });
        // Say we are no longer connected before failing the waiting calls, so that whatever
        // they do next sees the new state.
        let reconnecting = first_delay.is_some() && inner.reconnecting(run);
        if !reconnecting {
            inner.finished(run);
        }
        session.abandon(&mut outgoing, &reason);
        let Some(first_delay) = first_delay else {
            inner.events.closed(Some(&reason));
            return;
        };
        if !reconnecting {
            // `stop` was called as the connection dropped.
            inner.events.closed(None);
            return;
        }
        inner.events.reconnecting(&reason);
        match reconnect(&inner, &reason, first_delay, &mut stop).await {
            Reconnect::Connected(new_link) => {
                let connection_id = new_link.connection_id.clone();
                let transport = new_link.transport.transport_type();
                let Some(new_outgoing) = inner.reconnected(run, connection_id.clone(), transport)
                else {
                    inner.finished(run);
                    inner.events.closed(None);
                    return;
                };
                tracing::info!(connection_id = ?connection_id, "reconnected");
                outgoing = new_outgoing;
                link = *new_link;
                inner.events.reconnected(connection_id.as_deref());
            }
            Reconnect::Stopped => {
                inner.finished(run);
                inner.events.closed(None);
                return;
            }
            Reconnect::GaveUp(reason) => {
                tracing::info!(%reason, "connection closed");
                inner.finished(run);
                inner.events.closed(Some(&reason));
                return;
            }
        }
    }
}

/// Retries connecting as the policy says, until it succeeds, gives up, or `stop` is called.
async fn reconnect(
    inner: &ConnectionCore,
    lost: &DisconnectReason,
    first_delay: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Reconnect {
    let Some(policy) = &inner.config.reconnect else {
        return Reconnect::GaveUp(lost.clone());
    };
    let started = Instant::now();
    let mut delay = first_delay;
    let mut attempts: u32 = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(stop) => return Reconnect::Stopped,
        }
        let result = tokio::select! {
            result = transport::connect(&inner.config) => result,
            () = stopped(stop) => return Reconnect::Stopped,
        };
        attempts = attempts.saturating_add(1);
        let error: Arc<ConnectError> = match result {
            Ok(link) => return Reconnect::Connected(Box::new(link)),
            Err(error) => Arc::new(error),
        };
        tracing::info!(attempt = attempts, %error, "reconnect attempt failed");
        let next = policy.0.next_retry_delay(&RetryContext {
            previous_retry_count: attempts,
            elapsed: started.elapsed(),
            retry_reason: error.as_ref(),
        });
        match next {
            Some(next) => delay = next,
            None => {
                return Reconnect::GaveUp(DisconnectReason::ReconnectFailed {
                    attempts,
                    last_error: error,
                });
            }
        }
    }
}

/// One physical connection's worth of state.
struct Session<'a> {
    /// Handlers, events and configuration.
    inner: &'a ConnectionCore,
    /// The transport.
    transport: Transport,
    /// Received bytes not yet decoded (a transport chunk may end mid-message, and the
    /// handshake may leave the first messages here).
    received: BytesMut,
    /// Splits `received` into hub messages.
    decoder: Decoder,
    /// Invocations and streams written and waiting for the server.
    in_flight: InFlight,
    /// A stream item waiting for room in its stream's buffer: while there is one, the
    /// transport is not read (backpressure).
    held: Option<Held>,
    /// When the last frame was written: the keep-alive Ping is due `keep_alive_interval` later.
    last_sent: Instant,
    /// When the last frame arrived: the connection is lost `server_timeout` later.
    last_received: Instant,
    /// Present when the server granted stateful reconnect.
    stateful: Option<StatefulReconnect>,
    /// The messages being written together; kept to reuse its allocation.
    batch: Vec<Outgoing>,
    /// Their frames, as the transport takes them; kept to reuse its allocation.
    frames: Vec<Bytes>,
    /// The handlers of the client method the server called last.
    last_lookup: LastLookup,
}

impl<'a> Session<'a> {
    fn new(inner: &'a ConnectionCore, link: Link) -> Self {
        let now = Instant::now();
        let config = &inner.config;
        Session {
            inner,
            transport: link.transport,
            received: link.received,
            decoder: Decoder::new(config.protocol, config.max_message_size),
            in_flight: InFlight::default(),
            held: None,
            last_sent: now,
            last_received: now,
            stateful: link.resume.map(|ticket| {
                StatefulReconnect::new(
                    ticket,
                    config.stateful_reconnect_buffer_size,
                    config.protocol,
                )
            }),
            batch: Vec::new(),
            frames: Vec::new(),
            last_lookup: LastLookup::default(),
        }
    }

    /// Runs until `stop` or until the connection is lost (and, with stateful reconnect,
    /// could not be resumed).
    async fn drive(
        &mut self,
        outgoing: &mut mpsc::Receiver<Outgoing>,
        cancels: &mut mpsc::UnboundedReceiver<String>,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        // The handshake may have left messages behind.
        if let Err(reason) = self.dispatch_received().await {
            return End::Lost(reason);
        }
        let keep_alive = self.inner.config.keep_alive_interval;
        let server_timeout = self.inner.config.server_timeout;
        // Two timers for the whole session rather than new ones on every message: when one
        // fires, it checks whether the Ping or the timeout is really due (something may
        // have been sent or received since it was set) and is set again if not.
        let ping_timer = tokio::time::sleep_until(self.last_sent + keep_alive);
        let silence_timer = tokio::time::sleep_until(self.last_received + server_timeout);
        // Likewise one wait for `stop` (on a copy of the receiver: resuming needs its own).
        let mut stop_watch = stop.clone();
        let stop_requested = stopped(&mut stop_watch);
        tokio::pin!(ping_timer, silence_timer, stop_requested);
        loop {
            // With stateful reconnect, a full replay buffer holds sends back until the
            // server acknowledges (they wait in the queue, and then in `send`).
            let may_send = !self
                .stateful
                .as_ref()
                .is_some_and(StatefulReconnect::is_full);
            // While a stream item waits for its consumer, nothing more is read, and the
            // server's silence is ours.
            let reading = self.held.is_none();
            let step = tokio::select! {
                biased;
                () = &mut stop_requested => return End::Stopped,
                chunk = self.transport.receive(), if reading => self.receive(chunk).await,
                () = Held::make_room(&mut self.held), if !reading => {
                    self.last_received = Instant::now();
                    self.dispatch_received().await
                }
                Some(id) = cancels.recv() => self.cancel(&id).await,
                message = outgoing.recv(), if may_send => match message {
                    Some(message) => self.write_queued(message, outgoing).await,
                    // Every sender is gone: only possible once the connection is shutting down.
                    None => return End::Stopped,
                },
                () = ack_due(&mut self.stateful) => self.ack().await,
                () = &mut ping_timer => {
                    let result = if Instant::now() >= self.last_sent + keep_alive {
                        self.ping().await
                    } else {
                        Ok(())
                    };
                    ping_timer.as_mut().reset(self.last_sent + keep_alive);
                    result
                }
                () = &mut silence_timer, if reading => {
                    let due = self.last_received + server_timeout;
                    if Instant::now() >= due {
                        Err(DisconnectReason::ServerTimeout(server_timeout))
                    } else {
                        silence_timer.as_mut().reset(due);
                        Ok(())
                    }
                }
            };
            let Err(reason) = step else {
                continue;
            };
            if !self.may_resume(&reason) {
                return End::Lost(reason);
            }
            match self.resume(stop).await {
                Ok(()) => {}
                Err(Resume::Stopped) => return End::Stopped,
                Err(Resume::Failed) => return End::Lost(reason),
            }
        }
    }

    /// Whether losing the connection for `reason` is a lost transport that stateful
    /// reconnect can repair (not a Close from the server, a server timeout, or broken
    /// books).
    fn may_resume(&self, reason: &DisconnectReason) -> bool {
        self.stateful.is_some()
            && matches!(
                reason,
                DisconnectReason::TransportClosed
                    | DisconnectReason::Transport(_)
                    | DisconnectReason::HttpTransport { .. }
            )
    }

    /// Stateful reconnect: opens a new WebSocket to the same connection, then sends
    /// Sequence and everything not acknowledged. The app sees nothing; pending
    /// invocations stay pending.
    async fn resume(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Resume> {
        let Some(stateful) = &self.stateful else {
            return Err(Resume::Failed);
        };
        tracing::info!(
            "transport lost; resuming the connection on a new WebSocket (stateful reconnect)"
        );
        let opened = tokio::select! {
            opened = transport::reattach(&self.inner.config, &stateful.ticket) => opened,
            () = stopped(stop) => return Err(Resume::Stopped),
        };
        let transport = match opened {
            Ok(transport) => transport,
            Err(error) => {
                tracing::info!(%error, "stateful reconnect failed; the connection is lost");
                return Err(Resume::Failed);
            }
        };
        self.transport = transport;
        // Half a message from the old transport is not completed by the new one: the
        // server resends whole messages.
        self.received.clear();
        self.decoder = Decoder::new(
            self.inner.config.protocol,
            self.inner.config.max_message_size,
        );
        self.last_received = Instant::now();
        let Some(stateful) = &mut self.stateful else {
            return Err(Resume::Failed);
        };
        let (frames, resent_bytes) = stateful.resume();
        let mut batch = BytesMut::new();
        for frame in frames {
            batch.extend_from_slice(&frame);
        }
        match self.write_frame(batch.freeze()).await {
            Ok(()) => {
                tracing::info!(resent_bytes, "connection resumed on a new WebSocket");
                Ok(())
            }
            // Lost again at once: let the loop try again with what it gets next.
            Err(reason) => {
                tracing::info!(%reason, "the new WebSocket was lost while resending");
                Err(Resume::Failed)
            }
        }
    }

    /// The connection was lost: every call queued or waiting fails with `reason`.
    fn abandon(mut self, outgoing: &mut mpsc::Receiver<Outgoing>, reason: &DisconnectReason) {
        outgoing.close();
        while let Ok(message) = outgoing.try_recv() {
            message
                .reply
                .fail(|| InvokeError::ConnectionLost(reason.clone()));
        }
        self.in_flight
            .fail_all(|| InvokeError::ConnectionLost(reason.clone()));
    }

    /// `stop`: writes what callers already queued, closes the transport politely, and
    /// fails the invocations still waiting for a completion.
    async fn shut_down(mut self, outgoing: &mut mpsc::Receiver<Outgoing>) {
        outgoing.close();
        let mut broken = false;
        while let Ok(message) = outgoing.try_recv() {
            if broken {
                message.reply.fail(|| InvokeError::Stopped);
            } else if self.write(message).await.is_err() {
                broken = true;
            }
        }
        self.in_flight.fail_all(|| InvokeError::Stopped);
        if !broken {
            self.transport.close().await;
        }
    }
}

/// Resolves when an Ack may be sent; never without stateful reconnect. Cancel-safe.
async fn ack_due(stateful: &mut Option<StatefulReconnect>) {
    match stateful {
        Some(stateful) => stateful.ack_due().await,
        None => std::future::pending().await,
    }
}
