//! The public handle: start, stop, invoke, send, and handler registration.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use hub_protocol::{Protocol, encode_invocation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::driver::{self, stopped};
use crate::error::{ConnectError, DisconnectReason, InvokeError};
use crate::events::Events;
use crate::handlers::{FromArguments, Handlers, erase, erase_responder};
use crate::outgoing::{Outgoing, Reply};
use crate::pending::PendingInvoke;
use crate::transport::{self, TransportType};

/// How many outgoing messages may wait for the connection task before callers wait too.
const OUTGOING_QUEUE: usize = 256;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubConnectionState {
    /// Not connected: before `start`, after `stop`, or after the connection was lost for good.
    Disconnected,
    /// `start` is negotiating, opening the WebSocket or doing the handshake.
    Connecting,
    /// Connected: calls can be made.
    Connected,
    /// The connection was lost and automatic reconnect is trying to restore it.
    Reconnecting,
    /// `stop` was called and the connection is closing.
    Disconnecting,
}

impl fmt::Display for HubConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HubConnectionState::Disconnected => "disconnected",
            HubConnectionState::Connecting => "connecting",
            HubConnectionState::Connected => "connected",
            HubConnectionState::Reconnecting => "reconnecting",
            HubConnectionState::Disconnecting => "disconnecting",
        })
    }
}

/// A connection to a SignalR hub.
///
/// Cheap to clone: clones share one connection. Register handlers with [`on`](Self::on) (they
/// survive reconnects and restarts), then [`start`](Self::start). When the last clone is
/// dropped, the connection is stopped.
#[derive(Clone, Debug)]
pub struct HubConnection {
    /// What the connection task shares with the handles.
    pub(crate) inner: Arc<ConnectionCore>,
    /// Stops the connection when the last handle goes away (the task holds `inner`, so
    /// `inner` alone would keep it running forever).
    _owner: Arc<Owner>,
}

/// State shared by the handles and the connection task.
#[derive(Debug)]
pub(crate) struct ConnectionCore {
    /// The settings given to the builder.
    pub(crate) config: Config,
    /// Client methods the server may call.
    pub(crate) handlers: Handlers,
    /// Lifecycle callbacks.
    pub(crate) events: Events,
    /// Mutable connection state; never held across an await.
    shared: Mutex<RunState>,
    /// Publishes every state change, so `stop` can wait for `Disconnected`.
    state_changes: watch::Sender<HubConnectionState>,
    /// Source of invocation ids, unique for the connection's lifetime.
    next_invocation_id: AtomicU64,
}

/// The parts of the connection that change as it starts, reconnects and stops.
#[derive(Debug)]
struct RunState {
    /// The current state.
    state: HubConnectionState,
    /// Counts `start` calls; the connection task of run `n` only touches the state while it
    /// is still run `n`, so a late task never clobbers a newer run.
    run: u64,
    /// The id from negotiate, while connected.
    connection_id: Option<String>,
    /// The transport in use, while connected.
    transport: Option<TransportType>,
    /// Where calls go while connected.
    outgoing: Option<mpsc::Sender<Outgoing>>,
    /// Where dropped streams ask for their cancel, for the whole run (streams of an
    /// earlier session are simply no longer open).
    cancels: Option<mpsc::UnboundedSender<String>>,
    /// Tells the current run to stop.
    stop: Option<watch::Sender<bool>>,
    /// The current run's connection task, for `stop` to wait on.
    task: Option<JoinHandle<()>>,
}

/// Dropped with the last [`HubConnection`]: stops the connection.
#[derive(Debug)]
struct Owner(Arc<ConnectionCore>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(stop) = &self.0.lock().stop {
            stop.send_replace(true);
        }
    }
}

impl HubConnection {
    pub(crate) fn new(config: Config) -> Self {
        let inner = Arc::new(ConnectionCore {
            config,
            handlers: Handlers::default(),
            events: Events::default(),
            shared: Mutex::new(RunState {
                state: HubConnectionState::Disconnected,
                run: 0,
                connection_id: None,
                transport: None,
                outgoing: None,
                cancels: None,
                stop: None,
                task: None,
            }),
            state_changes: watch::Sender::new(HubConnectionState::Disconnected),
            next_invocation_id: AtomicU64::new(0),
        });
        HubConnection {
            _owner: Arc::new(Owner(inner.clone())),
            inner,
        }
    }

    /// Connects: negotiate (unless skipped), the first transport that opens, handshake. Returns once the
    /// connection is ready for calls.
    ///
    /// A failed `start` does not trigger automatic reconnect (as in the official clients):
    /// retrying is the caller's choice.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidState`] when the connection is not disconnected,
    /// [`ConnectError::Stopped`] when [`stop`](Self::stop) was called meanwhile, and otherwise
    /// why connecting failed (unreachable server, refused negotiate or handshake, timeout...).
    pub async fn start(&self) -> Result<(), ConnectError> {
        let (run, mut stop) = {
            let mut shared = self.inner.lock();
            if shared.state != HubConnectionState::Disconnected {
                return Err(ConnectError::InvalidState(shared.state));
            }
            let (stop_tx, stop_rx) = watch::channel(false);
            shared.run += 1;
            shared.stop = Some(stop_tx);
            self.inner
                .set_state(&mut shared, HubConnectionState::Connecting);
            (shared.run, stop_rx)
        };
        // If this future is dropped half way, the guard puts the state back.
        let mut guard = StartGuard {
            inner: &self.inner,
            run,
            armed: true,
        };
        let result = tokio::select! {
            result = transport::connect(&self.inner.config) => result,
            () = stopped(&mut stop) => Err(ConnectError::Stopped),
        };
        guard.armed = false;
        let mut shared = self.inner.lock();
        let link = match result {
            Ok(link) if shared.run == run && shared.state == HubConnectionState::Connecting => link,
            Ok(_) => {
                self.inner.release(&mut shared, run);
                return Err(ConnectError::Stopped);
            }
            Err(error) => {
                self.inner.release(&mut shared, run);
                return Err(error);
            }
        };
        let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (cancels_tx, cancels_rx) = mpsc::unbounded_channel();
        shared.outgoing = Some(outgoing_tx);
        shared.cancels = Some(cancels_tx);
        shared.connection_id.clone_from(&link.connection_id);
        shared.transport = Some(link.transport.transport_type());
        self.inner
            .set_state(&mut shared, HubConnectionState::Connected);
        shared.task = Some(tokio::spawn(driver::run(
            self.inner.clone(),
            run,
            link,
            outgoing_rx,
            cancels_rx,
            stop,
        )));
        Ok(())
    }

    /// Stops the connection: messages already handed to [`send`](Self::send) are written,
    /// the WebSocket is closed, pending invocations fail with [`InvokeError::Stopped`], and
    /// the closed event fires with no error. Also cancels a `start` or a reconnect in
    /// progress. Returns once the connection is disconnected; does nothing if it already is.
    pub async fn stop(&self) {
        let (task, mut states) = {
            let mut shared = self.inner.lock();
            if shared.state == HubConnectionState::Disconnected {
                return;
            }
            if let Some(stop) = &shared.stop {
                stop.send_replace(true);
            }
            self.inner
                .set_state(&mut shared, HubConnectionState::Disconnecting);
            (shared.task.take(), self.inner.state_changes.subscribe())
        };
        match task {
            Some(task) => {
                if let Err(error) = task.await {
                    tracing::error!(%error, "the connection task failed");
                    let mut shared = self.inner.lock();
                    let run = shared.run;
                    self.inner.release(&mut shared, run);
                }
            }
            // Still connecting: `start` notices the stop and settles the state.
            None => {
                let _ = states
                    .wait_for(|state| *state == HubConnectionState::Disconnected)
                    .await;
            }
        }
    }

    /// Calls the hub method `method` with `arguments` and waits for its result.
    ///
    /// `arguments` is a tuple (`("alice", 42)`, `(message,)`), an array, a slice or a `Vec`;
    /// `()` means no arguments. `T` is the result type; use `()` for methods that return
    /// nothing, and `Option<T>` for results that may be null.
    ///
    /// # Errors
    ///
    /// [`InvokeError::Hub`] with the server's message when the method failed,
    /// [`InvokeError::InvalidResult`] when the result does not fit `T`,
    /// [`InvokeError::NotConnected`], [`InvokeError::ConnectionLost`] and
    /// [`InvokeError::Stopped`] when there is no connection to complete the call on, and
    /// [`InvokeError::Encode`] when the arguments do not serialize.
    pub async fn invoke<T, A>(&self, method: &str, arguments: A) -> Result<T, InvokeError>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        self.begin_invoke(method, arguments).await?.await
    }

    /// Starts an invocation of `method` and returns once it is queued for writing, with
    /// its completion still to come: a [`PendingInvoke`] to await when the result is
    /// wanted. [`invoke`](Self::invoke) is this, awaited at once.
    ///
    /// Invocations begun one after another (from one task) are written in that order, and
    /// the connection writes whatever is queued at once with a single flush. So a caller can
    /// keep many invocations in flight, a window of them, and await their completions
    /// later, in order, without waiting a round trip for each:
    ///
    /// ```
    /// # async fn pipeline(connection: chat_client::HubConnection) -> Result<(), chat_client::InvokeError> {
    /// let mut window = std::collections::VecDeque::new();
    /// for n in 0..1_000 {
    ///     if window.len() == 64 {
    ///         let oldest: chat_client::PendingInvoke<()> = window.pop_front().unwrap();
    ///         oldest.await?;
    ///     }
    ///     window.push_back(connection.begin_invoke("SendMessage", ("load", n.to_string())).await?);
    /// }
    /// for pending in window {
    ///     pending.await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvokeError::NotConnected`] when the connection cannot take calls now, and
    /// [`InvokeError::Encode`] when the arguments do not serialize; the [`PendingInvoke`]
    /// resolves to [`invoke`](Self::invoke)'s other errors.
    pub async fn begin_invoke<T, A>(
        &self,
        method: &str,
        arguments: A,
    ) -> Result<PendingInvoke<T>, InvokeError>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        let id = self.inner.next_id();
        let frame = self.encode(Some(&id), method, &arguments)?;
        let (reply, completion) = oneshot::channel();
        self.inner
            .enqueue(Outgoing {
                frame,
                reply: Reply::Completion { id, reply },
            })
            .await?;
        Ok(PendingInvoke::new(self.protocol(), completion))
    }

    /// Calls the hub method `method` without waiting for it to run (fire and forget: no
    /// invocation id, so the server sends no completion, and errors on the server side are
    /// not reported). Returns once the message is written to the WebSocket.
    ///
    /// See [`invoke`](Self::invoke) for what `arguments` may be.
    ///
    /// # Errors
    ///
    /// [`InvokeError::NotConnected`] or [`InvokeError::ConnectionLost`] when the message
    /// could not be written, [`InvokeError::Encode`] when the arguments do not serialize.
    pub async fn send<A: Serialize>(&self, method: &str, arguments: A) -> Result<(), InvokeError> {
        let frame = self.encode(None, method, &arguments)?;
        let (reply, sent) = oneshot::channel();
        self.inner
            .enqueue(Outgoing {
                frame,
                reply: Reply::Sent(reply),
            })
            .await?;
        sent.await
            .map_err(|_| InvokeError::ConnectionLost(DisconnectReason::TransportClosed))?
    }

    /// Registers a handler for the client method `method`, which the server calls with
    /// `Clients.All.SendAsync(method, ...)` and the like. Method names match ignoring ASCII
    /// case; several handlers for one method all run, in registration order.
    ///
    /// The handler's parameter is built with [`FromArguments`]: a tuple of deserializable
    /// types, one per argument, such as `|(user, message): (String, String)|`. An invocation
    /// whose arguments do not fit is logged (with `tracing`) and skipped.
    ///
    /// Handlers run on the connection's task, one message at a time, in the order messages
    /// arrive: keep them short, and spawn a task for slow work.
    pub fn on<A, F>(&self, method: &str, handler: F)
    where
        A: FromArguments,
        F: Fn(A) + Send + Sync + 'static,
    {
        self.inner.handlers.add(method, erase(handler));
    }

    /// Removes every handler of the client method `method`.
    pub fn off(&self, method: &str) {
        self.inner.handlers.remove(method);
    }

    /// Registers the handler that answers the client method `method` when the server
    /// waits for a result (client results: `Clients.Client(id).InvokeAsync<T>` on ASP.NET
    /// Core, `clients.client(id).invoke::<T>` on `hub-server`).
    ///
    /// The handler takes its arguments as [`on`](Self::on) handlers do and returns a
    /// future of `Result<R, E>`: `Ok(value)` goes back as the result, `Err(error)` as an
    /// error with `error`'s text (the server's call fails with it). It runs on a task of
    /// its own, so it may take its time and call the hub. One per method: registering
    /// another replaces it. [`on`](Self::on) handlers of the same method run too (first,
    /// and without a say in the result). When the server wants a result and no
    /// `on_invoke` handler is registered, it gets the error "Client didn't provide a
    /// result." as from the JavaScript client. A call that wants no result still runs the
    /// handler, and its value is dropped.
    ///
    /// ```
    /// # fn register(connection: &chat_client::HubConnection) {
    /// connection.on_invoke("GetAnswer", |(question,): (String,)| async move {
    ///     if question.is_empty() {
    ///         return Err("no question");
    ///     }
    ///     Ok(42)
    /// });
    /// # }
    /// ```
    pub fn on_invoke<A, R, E, F, Fut>(&self, method: &str, handler: F)
    where
        A: FromArguments,
        R: Serialize,
        E: fmt::Display,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.inner
            .handlers
            .set_responder(method, erase_responder(handler));
    }

    /// Registers a callback run when the connection is lost and automatic reconnect starts,
    /// with the reason it was lost.
    pub fn on_reconnecting(&self, callback: impl Fn(&DisconnectReason) + Send + Sync + 'static) {
        self.inner.events.add_reconnecting(Arc::new(callback));
    }

    /// Registers a callback run after automatic reconnect succeeded, with the new connection
    /// id (`None` when negotiate is skipped).
    pub fn on_reconnected(&self, callback: impl Fn(Option<&str>) + Send + Sync + 'static) {
        self.inner.events.add_reconnected(Arc::new(callback));
    }

    /// Registers a callback run when the connection closes for good: `None` after
    /// [`stop`](Self::stop), otherwise why (lost without automatic reconnect, closed by the
    /// server without permission to reconnect, or reconnect gave up).
    pub fn on_closed(&self, callback: impl Fn(Option<&DisconnectReason>) + Send + Sync + 'static) {
        self.inner.events.add_closed(Arc::new(callback));
    }

    /// The current state.
    pub fn state(&self) -> HubConnectionState {
        self.inner.lock().state
    }

    /// The connection id the server assigned in negotiate, while connected. `None` when
    /// negotiate is skipped, because the id is only given out by negotiate.
    pub fn connection_id(&self) -> Option<String> {
        self.inner.lock().connection_id.clone()
    }

    /// The transport in use while connected: the one negotiate fallback settled on (it may
    /// change across an automatic reconnect, never across a stateful one).
    pub fn transport(&self) -> Option<TransportType> {
        self.inner.lock().transport
    }

    /// The hub protocol in use.
    pub fn protocol(&self) -> Protocol {
        self.inner.config.protocol
    }

    /// Encodes one invocation frame.
    pub(crate) fn encode<A: Serialize>(
        &self,
        invocation_id: Option<&str>,
        method: &str,
        arguments: &A,
    ) -> Result<bytes::Bytes, InvokeError> {
        // Most calls fit, which saves growing the buffer step by step while encoding.
        let mut buf = BytesMut::with_capacity(256);
        encode_invocation(self.protocol(), &mut buf, invocation_id, method, arguments)?;
        Ok(buf.freeze())
    }
}

/// Puts the state back to disconnected when a `start` future is dropped before it finished.
struct StartGuard<'a> {
    /// The connection being started.
    inner: &'a ConnectionCore,
    /// The run `start` opened.
    run: u64,
    /// Cleared once `start` settles the state itself.
    armed: bool,
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut shared = self.inner.lock();
            self.inner.release(&mut shared, self.run);
        }
    }
}

impl ConnectionCore {
    /// Locks the shared state. Nothing panics while holding it, so poisoning cannot leave it
    /// inconsistent.
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_state(&self, shared: &mut RunState, state: HubConnectionState) {
        shared.state = state;
        self.state_changes.send_replace(state);
    }

    /// Ends run `run`, if it is still the current one: disconnected, nothing to send to.
    fn release(&self, shared: &mut RunState, run: u64) {
        if shared.run != run || shared.state == HubConnectionState::Disconnected {
            return;
        }
        shared.outgoing = None;
        shared.cancels = None;
        shared.connection_id = None;
        shared.transport = None;
        shared.stop = None;
        shared.task = None;
        self.set_state(shared, HubConnectionState::Disconnected);
    }

    /// Hands a message to the connection task.
    async fn enqueue(&self, message: Outgoing) -> Result<(), InvokeError> {
        let sender = self.sender()?;
        self.enqueue_on(&sender, message).await
    }

    /// The queue of the current connection, while connected.
    ///
    /// # Errors
    ///
    /// [`InvokeError::NotConnected`] otherwise.
    pub(crate) fn sender(&self) -> Result<mpsc::Sender<Outgoing>, InvokeError> {
        let shared = self.lock();
        match (&shared.outgoing, shared.state) {
            (Some(sender), HubConnectionState::Connected) => Ok(sender.clone()),
            (_, state) => Err(InvokeError::NotConnected(state)),
        }
    }

    /// The queue of the current connection, if connected.
    pub(crate) fn outgoing(&self) -> Option<mpsc::Sender<Outgoing>> {
        self.sender().ok()
    }

    /// Where dropped streams of this run ask for their cancel.
    pub(crate) fn cancels(&self) -> Option<mpsc::UnboundedSender<String>> {
        self.lock().cancels.clone()
    }

    /// Hands a message to the connection task through `sender`, a queue taken from
    /// [`sender`](Self::sender).
    pub(crate) async fn enqueue_on(
        &self,
        sender: &mpsc::Sender<Outgoing>,
        message: Outgoing,
    ) -> Result<(), InvokeError> {
        // The task closes the queue when the connection drops; then the state says why.
        sender
            .send(message)
            .await
            .map_err(|_| InvokeError::NotConnected(self.lock().state))
    }

    /// A new invocation id, unique for the connection's lifetime.
    pub(crate) fn next_id(&self) -> String {
        self.next_invocation_id
            .fetch_add(1, Ordering::Relaxed)
            .to_string()
    }

    /// Run `run` lost its connection and will try to reconnect: no calls meanwhile.
    pub(crate) fn reconnecting(&self, run: u64) -> bool {
        let mut shared = self.lock();
        if shared.run != run || shared.state != HubConnectionState::Connected {
            return false;
        }
        shared.outgoing = None;
        shared.connection_id = None;
        shared.transport = None;
        self.set_state(&mut shared, HubConnectionState::Reconnecting);
        true
    }

    /// Run `run` reconnected: returns the queue for the new connection, or `None` when the
    /// run was stopped meanwhile.
    pub(crate) fn reconnected(
        &self,
        run: u64,
        connection_id: Option<String>,
        transport: TransportType,
    ) -> Option<mpsc::Receiver<Outgoing>> {
        let mut shared = self.lock();
        if shared.run != run || shared.state != HubConnectionState::Reconnecting {
            return None;
        }
        let (sender, receiver) = mpsc::channel(OUTGOING_QUEUE);
        shared.outgoing = Some(sender);
        shared.connection_id = connection_id;
        shared.transport = Some(transport);
        self.set_state(&mut shared, HubConnectionState::Connected);
        Some(receiver)
    }

    /// Run `run` is over: disconnected.
    pub(crate) fn finished(&self, run: u64) {
        let mut shared = self.lock();
        self.release(&mut shared, run);
    }
}
