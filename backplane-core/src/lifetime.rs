//! The one [`HubLifetimeManager`] implementation, generic over any [`Backplane`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use hub_protocol::Completion;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backplane::{Backplane, BackplaneError, BackplaneEvent, GapRepair, Subscription};
use crate::client_results::{
    ClientAnswer, ClientCalls, ClientInvocation, ClientOutcome, ClientResult, ClientResultError,
    Waiter,
};
use crate::envelope::{
    Ack, Envelope, EnvelopeKind, GroupAction, GroupCommand, GroupRefusal, Target,
};
use crate::id::{ConnectionId, NodeId, NodeTag};
use crate::local_order::LocalOrder;
use crate::manager::{HubError, HubLifetimeManager, LocalConnection};
use crate::message::SerializedMessage;
use crate::metrics::HubReceiveMetrics;
use crate::publish_health::{PublishFailing, PublishHealth};
use crate::registry::Registry;
use crate::sync::{lock, read, write};

/// Settings of a [`BackplaneHubLifetimeManager`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerOptions {
    /// How long `add_to_group` / `remove_from_group` wait for the node that owns a remote
    /// connection to acknowledge, before failing with [`HubError::NoOwner`].
    /// Default: 5 seconds.
    pub group_ack_timeout: Duration,
    /// How many groups one connection of this node may be in at once; adding it to one
    /// more fails with [`HubError::GroupRefused`], whichever node asked. Rejoining a
    /// group it is in still succeeds. Bounds what a client that may choose group names
    /// can make a node hold. `Some(0)` refuses every join. Default: `None`, no limit (as
    /// ASP.NET Core).
    ///
    /// The refusal of a join asked by another node travels back as
    /// [`EnvelopeKind::GroupRefused`], which nodes built before it existed cannot decode:
    /// run every node of a cluster on a version that has it before setting a limit.
    pub max_groups_per_connection: Option<usize>,
    /// How long a client-result call ([`HubLifetimeManager::invoke_connection`]) waits
    /// for the client's answer before failing with
    /// [`ClientResultError::Timeout`](crate::ClientResultError::Timeout). Default: 30
    /// seconds. ASP.NET Core has no such default (a call waits until its cancellation
    /// token fires or the connection ends); here a call never waits for ever, because an
    /// owner on another node that dies or is cut off would otherwise hold it for good. 30 s
    /// is the client timeout: a live client has answered a ping within it.
    pub client_result_timeout: Duration,
    /// How long a client-result call for a connection this node does not have waits for
    /// the owning node to accept it; no acceptance in time means no node has the
    /// connection ([`ClientResultError::UnknownConnection`](crate::ClientResultError::UnknownConnection)).
    /// The acceptance is two backplane hops (the request to every node, the owner's
    /// acceptance back), each a commit on PostgreSQL; on a busy 2-core machine running the
    /// test suite they once took more than 2 seconds, and the call failed although the
    /// connection existed. ASP.NET Core's Redis backplane has no such wait (Redis says at
    /// once that nobody subscribes to the connection's channel); LISTEN/NOTIFY cannot say
    /// that. Default: 5 seconds.
    pub client_result_owner_timeout: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            group_ack_timeout: Duration::from_secs(5),
            max_groups_per_connection: None,
            client_result_timeout: Duration::from_secs(30),
            client_result_owner_timeout: Duration::from_secs(5),
        }
    }
}

impl ManagerOptions {
    /// These options with `timeout` as the group acknowledgement timeout.
    #[must_use]
    pub fn group_ack_timeout(mut self, timeout: Duration) -> Self {
        self.group_ack_timeout = timeout;
        self
    }

    /// These options with `timeout` as the client-result timeout.
    #[must_use]
    pub fn client_result_timeout(mut self, timeout: Duration) -> Self {
        self.client_result_timeout = timeout;
        self
    }

    /// These options with `timeout` as the client-result owner timeout.
    #[must_use]
    pub fn client_result_owner_timeout(mut self, timeout: Duration) -> Self {
        self.client_result_owner_timeout = timeout;
        self
    }

    /// These options with at most `limit` groups per connection (`None`: no limit).
    #[must_use]
    pub fn max_groups_per_connection(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.max_groups_per_connection = limit.into();
        self
    }
}

/// The state of this node's link to the other nodes, as last reported by the backplane.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackplaneStatus {
    /// Subscribed, waiting for the backplane to confirm it is listening.
    Connecting,
    /// Listening; envelopes flow.
    Connected,
    /// The link is down; the backplane is reconnecting.
    Disconnected {
        /// Why, as the backplane reported it.
        reason: String,
    },
    /// The backplane shut down; nothing is received any more.
    Stopped,
}

impl BackplaneStatus {
    /// A short lowercase name (`connecting`, `connected`, `disconnected`, `stopped`) for
    /// health endpoints.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackplaneStatus::Connecting => "connecting",
            BackplaneStatus::Connected => "connected",
            BackplaneStatus::Disconnected { .. } => "disconnected",
            BackplaneStatus::Stopped => "stopped",
        }
    }
}

/// Counters and state of the link, for health endpoints and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackplaneHealth {
    /// The current link state.
    pub status: BackplaneStatus,
    /// Envelopes received from other nodes since start.
    pub envelopes_received: u64,
    /// [`BackplaneEvent::Reconnected`] events since start: the link came back after a
    /// disconnection, or a sequence gap seen while connected was repaired.
    pub reconnects: u64,
    /// Envelopes the backplane reported as lost for good (unrepairable gaps, lag).
    pub envelopes_lost: u64,
    /// Envelopes and notifications the backplane dropped because they failed
    /// verification against the cluster secret or its store did not confirm them
    /// ([`Backplane::envelopes_rejected`]; shared by every hub of the backplane).
    pub envelopes_rejected: u64,
    /// While [`BackplaneStatus::Disconnected`]: since when, so an operator can tell a
    /// blip from an outage. `None` otherwise.
    pub disconnected_since: Option<SystemTime>,
    /// How long ago the backplane last heard anything from its backend
    /// ([`Backplane::since_last_heard`]): the lag of a link that looks connected but has
    /// gone quiet. `None` for backplanes without a backend.
    pub since_last_heard: Option<Duration>,
    /// While this node's publishes fail because of the backplane (see
    /// [`publish_health`](crate::publish_health)): since when, and the last error. A node
    /// that hears the others but cannot publish fails every send and refuses new
    /// connections, so health endpoints report it as degraded too.
    pub publish_failing: Option<PublishFailing>,
}

/// A [`HubLifetimeManager`] for one hub over any [`Backplane`].
///
/// It keeps this node's connections, groups and users, publishes through the backplane
/// for the other nodes and then delivers to its local connections directly (a send the
/// backplane refuses reaches no one here, except while the backplane is unavailable:
/// see [`HubError::LocalOnly`]), and applies what other nodes publish to its
/// own connections. Group changes for connections owned by another
/// node travel through the backplane and are acknowledged by the owner.
///
/// `B` defaults to `dyn Backplane`, so a server that picks its backplane at run time
/// writes `BackplaneHubLifetimeManager::new("chat", backplane)` with an
/// `Arc<dyn Backplane>`.
///
/// Dropping the manager stops its receive task; it does not shut the backplane down
/// (several hubs can share one backplane).
pub struct BackplaneHubLifetimeManager<B: Backplane + ?Sized = dyn Backplane> {
    /// State shared with the receive task.
    shared: Arc<ManagerState<B>>,
    /// The task applying what other nodes publish; aborted on drop.
    receiver: JoinHandle<()>,
}

/// Where the owning node's answer to a group command goes: `Err(reason)` for a refusal.
type AckSender = oneshot::Sender<Result<(), String>>;

/// Everything the manager and its receive task share.
struct ManagerState<B: Backplane + ?Sized> {
    /// The hub this manager serves; envelopes name it.
    hub: String,
    /// Where envelopes go to and come from.
    backplane: Arc<B>,
    /// Local connections, groups and users.
    registry: RwLock<Registry>,
    /// Group commands sent to other nodes, waiting for the owner's answer (an ack, or a
    /// refusal's reason), by ack id.
    pending_acks: Mutex<HashMap<u64, AckSender>>,
    /// Source of ack ids; unique per node because node ids are.
    next_ack_id: AtomicU64,
    /// Link state and the counters that change rarely.
    health: Mutex<BackplaneHealth>,
    /// Whether publishes go through.
    publishing: PublishHealth,
    /// Envelopes received; an atomic because it changes on every envelope.
    envelopes_received: AtomicU64,
    /// The received, repaired and lost envelopes, as metrics (no-ops without a recorder).
    metrics: HubReceiveMetrics,
    /// Client-result calls in flight, asked here or answered here.
    client_calls: ClientCalls,
    /// Source of client-result request and invocation ids.
    next_call_id: AtomicU64,
    /// The order of local deliveries of published sends: publish order, whatever order
    /// the senders' futures are resumed in.
    local_order: Arc<LocalOrder>,
    /// Settings.
    options: ManagerOptions,
}

impl<B: Backplane + ?Sized> BackplaneHubLifetimeManager<B> {
    /// A manager for `hub` over `backplane`, with default options.
    ///
    /// # Errors
    ///
    /// [`HubError::Backplane`] if subscribing to the hub failed.
    pub async fn new(hub: impl Into<String>, backplane: Arc<B>) -> Result<Self, HubError> {
        Self::with_options(hub, backplane, ManagerOptions::default()).await
    }

    /// A manager for `hub` over `backplane` with `options`.
    ///
    /// Returns once subscribed: whatever another node publishes for the hub afterwards
    /// reaches this node's connections.
    ///
    /// # Errors
    ///
    /// [`HubError::Backplane`] if subscribing to the hub failed.
    pub async fn with_options(
        hub: impl Into<String>,
        backplane: Arc<B>,
        options: ManagerOptions,
    ) -> Result<Self, HubError> {
        let hub = hub.into();
        let subscription = backplane.subscribe(&hub).await?;
        let metrics = HubReceiveMetrics::new(backplane.kind());
        let shared = Arc::new(ManagerState {
            hub,
            backplane,
            registry: RwLock::new(Registry::default()),
            pending_acks: Mutex::new(HashMap::new()),
            next_ack_id: AtomicU64::new(1),
            health: Mutex::new(BackplaneHealth {
                status: BackplaneStatus::Connecting,
                envelopes_received: 0,
                reconnects: 0,
                envelopes_lost: 0,
                envelopes_rejected: 0,
                disconnected_since: None,
                since_last_heard: None,
                publish_failing: None,
            }),
            publishing: PublishHealth::default(),
            envelopes_received: AtomicU64::new(0),
            metrics,
            client_calls: ClientCalls::default(),
            next_call_id: AtomicU64::new(1),
            local_order: Arc::default(),
            options,
        });
        let receiver = tokio::spawn(receive_loop(shared.clone(), subscription));
        Ok(Self { shared, receiver })
    }

    /// The hub this manager serves.
    pub fn hub(&self) -> &str {
        &self.shared.hub
    }

    /// The backplane this manager publishes through.
    pub fn backplane(&self) -> &Arc<B> {
        &self.shared.backplane
    }

    /// The link state and counters, for health endpoints.
    pub fn health(&self) -> BackplaneHealth {
        let mut health = lock(&self.shared.health).clone();
        health.envelopes_received = self.shared.envelopes_received.load(Ordering::Relaxed);
        health.envelopes_rejected = self.shared.backplane.envelopes_rejected();
        health.since_last_heard = self.shared.backplane.since_last_heard();
        health.publish_failing = self.shared.publishing.failing();
        health
    }

    /// How many connections this node has on the hub.
    pub fn local_connection_count(&self) -> usize {
        read(&self.shared.registry).len()
    }

    /// Whether the connection lives on this node.
    pub fn is_local(&self, connection_id: &ConnectionId) -> bool {
        read(&self.shared.registry).contains(connection_id)
    }
}

impl<B: Backplane + ?Sized> Drop for BackplaneHubLifetimeManager<B> {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl<B: Backplane + ?Sized> fmt::Debug for BackplaneHubLifetimeManager<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackplaneHubLifetimeManager")
            .field("hub", &self.shared.hub)
            .field("backplane", &self.shared.backplane)
            .field("local_connections", &self.local_connection_count())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<B: Backplane + ?Sized> HubLifetimeManager for BackplaneHubLifetimeManager<B> {
    async fn on_connected(&self, connection: LocalConnection) -> Result<(), HubError> {
        let id = connection.id.clone();
        let user = connection.user.clone();
        if !write(&self.shared.registry).insert(connection) {
            return Err(HubError::DuplicateConnection(id));
        }
        tracing::debug!(hub = %self.shared.hub, connection_id = %id, user = ?user, "connection registered");
        Ok(())
    }

    async fn on_disconnected(&self, connection_id: &ConnectionId) -> Result<(), HubError> {
        if write(&self.shared.registry).remove(connection_id) {
            tracing::debug!(hub = %self.shared.hub, %connection_id, "connection unregistered");
        }
        for waiter in self.shared.client_calls.take_connection(connection_id) {
            self.shared
                .resolve(waiter, ClientOutcome::Disconnected, connection_id);
        }
        Ok(())
    }

    async fn send(&self, target: Target, message: SerializedMessage) -> Result<(), HubError> {
        let shared = &self.shared;
        // The other nodes first: a send that fails reaches no connection of this node, so
        // the caller may retry it without this node's connections getting it twice.
        let remote_target = remote_part(&read(&shared.registry), &target);
        let Some(remote) = remote_target else {
            deliver_local(&shared.hub, &shared.registry, &target, &message);
            return Ok(());
        };
        // Taken before publishing, in the order sends are queued: this node's
        // connections get published sends in that order too (see `local_order`).
        let ticket = shared.local_order.ticket();
        let mut unavailable = None;
        tracing::debug!(hub = %shared.hub, target = ?remote, bytes = message.encoded_len(), "publishing invocation");
        let published = shared
            .publish(EnvelopeKind::Invocation {
                target: remote,
                message: message.clone(),
            })
            .await;
        match published {
            Ok(()) => {}
            // The other nodes are out of reach (circuit open): this node's
            // connections still get the message, and the caller learns that only
            // they did.
            Err(error @ BackplaneError::Unavailable { .. }) => unavailable = Some(error),
            Err(error) => return Err(error.into()),
        }
        let shared = Arc::clone(shared);
        ticket.deliver(move || deliver_local(&shared.hub, &shared.registry, &target, &message));
        match unavailable {
            Some(cause) => Err(HubError::LocalOnly(cause)),
            None => Ok(()),
        }
    }

    async fn invoke_connection(
        &self,
        connection_id: &ConnectionId,
        invocation_id: String,
        message: SerializedMessage,
    ) -> ClientAnswer {
        self.shared
            .invoke_connection(connection_id, invocation_id, message)
            .await
    }

    fn set_connection_result(&self, connection_id: &ConnectionId, completion: Completion) -> bool {
        let key = (connection_id.clone(), completion.invocation_id);
        let waiter = lock(&self.shared.client_calls.waiting).remove(&key);
        match waiter {
            Some(waiter) => {
                let outcome = ClientOutcome::from_completion(completion.result);
                self.shared.resolve(waiter, outcome, connection_id);
                true
            }
            None => false,
        }
    }

    fn next_invocation_id(&self) -> String {
        let n = self.shared.next_call_id.fetch_add(1, Ordering::Relaxed);
        // The node id makes it unique across nodes: calls from two nodes to one
        // connection never share an id.
        format!("{}-{n}", self.shared.backplane.node_id())
    }

    fn node_tag(&self) -> Option<NodeTag> {
        Some(NodeTag::of(self.shared.backplane.node_id()))
    }

    async fn add_to_group(
        &self,
        connection_id: &ConnectionId,
        group: &str,
    ) -> Result<(), HubError> {
        self.change_group(connection_id, group, GroupAction::Add)
            .await
    }

    async fn remove_from_group(
        &self,
        connection_id: &ConnectionId,
        group: &str,
    ) -> Result<(), HubError> {
        self.change_group(connection_id, group, GroupAction::Remove)
            .await
    }
}

impl<B: Backplane + ?Sized> BackplaneHubLifetimeManager<B> {
    async fn change_group(
        &self,
        connection_id: &ConnectionId,
        group: &str,
        action: GroupAction,
    ) -> Result<(), HubError> {
        let shared = &self.shared;
        let refused = |reason| HubError::GroupRefused {
            connection_id: connection_id.clone(),
            group: group.to_owned(),
            reason,
        };
        if let Some(applied) = shared.apply_locally(connection_id, group, action) {
            return applied.map_err(refused);
        }
        // Not ours: ask the owner through the backplane and wait for its ack.
        let ack_id = shared.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let (ack_tx, ack_rx) = oneshot::channel();
        lock(&shared.pending_acks).insert(ack_id, ack_tx);
        let _cleanup = PendingAck {
            acks: &shared.pending_acks,
            ack_id,
        };
        let command = GroupCommand {
            ack_id,
            connection_id: connection_id.clone(),
            group: group.to_owned(),
            action,
        };
        tracing::debug!(hub = %shared.hub, %connection_id, group, ?action, ack_id, "sending group command to the owning node");
        shared.publish(EnvelopeKind::GroupCommand(command)).await?;
        let timeout = shared.options.group_ack_timeout;
        match tokio::time::timeout(timeout, ack_rx).await {
            Ok(Ok(answer)) => answer.map_err(refused),
            // The receive task ended (the backplane shut down): no ack can arrive.
            Ok(Err(_)) => Err(HubError::Backplane(BackplaneError::Shutdown)),
            Err(_) => Err(HubError::NoOwner {
                connection_id: connection_id.clone(),
                group: group.to_owned(),
                adding: action == GroupAction::Add,
                timeout,
            }),
        }
    }
}

/// Removes a local client-result call's entry however the wait ends.
struct ForgetWaiting<'a> {
    calls: &'a ClientCalls,
    key: Option<(ConnectionId, String)>,
}

impl Drop for ForgetWaiting<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.calls.waiting).remove(&key);
        }
    }
}

/// Removes a remote client-result call's entry however the wait ends.
struct ForgetAsked<'a> {
    calls: &'a ClientCalls,
    request_id: u64,
}

impl Drop for ForgetAsked<'_> {
    fn drop(&mut self) {
        lock(&self.calls.asked).remove(&self.request_id);
    }
}

/// Removes a pending ack entry however the wait ends (ack, timeout, error, cancellation).
struct PendingAck<'a> {
    acks: &'a Mutex<HashMap<u64, AckSender>>,
    ack_id: u64,
}

impl Drop for PendingAck<'_> {
    fn drop(&mut self) {
        lock(self.acks).remove(&self.ack_id);
    }
}

impl<B: Backplane + ?Sized> ManagerState<B> {
    /// Publish `kind` to the hub's other nodes, noting whether it went through.
    async fn publish(&self, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        let outcome = self.backplane.publish(&self.hub, kind).await;
        self.publishing.record(&outcome);
        outcome
    }

    /// Send `kind` to `node`, noting whether it went through.
    async fn send_to(&self, node: NodeId, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        let outcome = self.backplane.send_to(node, &self.hub, kind).await;
        self.publishing.record(&outcome);
        outcome
    }

    /// Apply a group change if the connection is local: `None` if it is not, else
    /// whether it was applied or refused, and why.
    fn apply_locally(
        &self,
        connection_id: &ConnectionId,
        group: &str,
        action: GroupAction,
    ) -> Option<Result<(), String>> {
        let mut registry = write(&self.registry);
        let changed = match action {
            GroupAction::Add => {
                registry.join(connection_id, group, self.options.max_groups_per_connection)?
            }
            GroupAction::Remove => Ok(registry.leave(connection_id, group)?),
        };
        drop(registry);
        match changed {
            Ok(changed) => {
                tracing::debug!(hub = %self.hub, %connection_id, group, ?action, changed, "group membership applied");
                Some(Ok(()))
            }
            Err(limit) => {
                tracing::info!(hub = %self.hub, %connection_id, group, limit, "group join refused: the connection is in as many groups as allowed");
                let groups = if limit == 1 { "group" } else { "groups" };
                Some(Err(format!(
                    "the connection is already in {limit} {groups}, the most this server allows"
                )))
            }
        }
    }

    /// A client-result call from this node (see the `client_results` module).
    async fn invoke_connection(
        self: &Arc<Self>,
        connection_id: &ConnectionId,
        invocation_id: String,
        message: SerializedMessage,
    ) -> ClientAnswer {
        let timeout = self.options.client_result_timeout;
        let key = (connection_id.clone(), invocation_id.clone());
        let (tx, rx) = oneshot::channel();
        // Registered before the invocation is queued, so an answer cannot overtake it.
        lock(&self.client_calls.waiting).insert(key.clone(), Waiter::Local(tx));
        let _forget = ForgetWaiting {
            calls: &self.client_calls,
            key: Some(key.clone()),
        };
        match self.deliver_to_local(connection_id, &message) {
            Some(Ok(())) => {
                tracing::debug!(hub = %self.hub, %connection_id, %invocation_id, "client-result invocation queued");
                return match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(_)) => Err(ClientResultError::Disconnected(connection_id.clone())),
                    Err(_) => Err(ClientResultError::Timeout {
                        connection_id: connection_id.clone(),
                        timeout,
                    }),
                };
            }
            Some(Err(())) => return Err(ClientResultError::Disconnected(connection_id.clone())),
            None => {}
        }
        drop(_forget);
        if self.issued_here(connection_id) {
            // Issued by this node and not in its registry: it does not exist (any more).
            return Err(ClientResultError::UnknownConnection(connection_id.clone()));
        }
        // Not ours: ask every node; the owner accepts and answers through the return route.
        let request_id = self.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (answers_tx, answers_rx) = mpsc::channel(2);
        lock(&self.client_calls.asked).insert(request_id, answers_tx);
        let _forget = ForgetAsked {
            calls: &self.client_calls,
            request_id,
        };
        let call = ClientInvocation {
            request_id,
            connection_id: connection_id.clone(),
            invocation_id,
            message,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        tracing::debug!(hub = %self.hub, %connection_id, request_id, "asking the owning node for a client result");
        self.publish(EnvelopeKind::ClientInvocation(call)).await?;
        crate::client_results::await_remote(
            answers_rx,
            connection_id,
            self.options.client_result_owner_timeout,
            timeout,
        )
        .await
    }

    /// Queue `message` for a connection of this node: `None` if it is not here, `Err`
    /// if it could not take it.
    fn deliver_to_local(
        &self,
        connection_id: &ConnectionId,
        message: &SerializedMessage,
    ) -> Option<Result<(), ()>> {
        let registry = read(&self.registry);
        if !registry.contains(connection_id) {
            return None;
        }
        let fanout = registry.deliver(&Target::Connection(connection_id.clone()), message);
        Some(if fanout.delivered > 0 {
            Ok(())
        } else {
            Err(())
        })
    }

    /// Whether `connection_id` carries this node's tag (see [`ConnectionId::node_tag`]).
    fn issued_here(&self, connection_id: &ConnectionId) -> bool {
        connection_id.node_tag() == Some(NodeTag::of(self.backplane.node_id()))
    }

    /// A client-result request from another node: act on it if the connection is ours.
    fn accept_client_invocation(self: &Arc<Self>, origin: NodeId, call: &ClientInvocation) {
        let key = (call.connection_id.clone(), call.invocation_id.clone());
        // The outcome must reach the asking node after the acceptance (a `Disconnected`
        // first would read as "no such connection"): it waits for this to drop.
        let (accepted_sent, accepted) = oneshot::channel();
        let waiter = Waiter::Remote {
            origin,
            request_id: call.request_id,
            accepted,
        };
        {
            // Checked and registered under the registry lock, so a disconnect cannot slip
            // in between and leave the request waiting for a connection that is gone.
            let registry = read(&self.registry);
            if !registry.contains(&call.connection_id) {
                drop(registry);
                if self.issued_here(&call.connection_id) {
                    // The id names this node, which does not have the connection: say so
                    // now (a `Disconnected` before any `Accepted` means "no such
                    // connection"), so the asking node need not wait for the owner timeout.
                    self.send_client_outcome(
                        origin,
                        call.request_id,
                        ClientOutcome::Disconnected,
                        None,
                        None,
                    );
                }
                return;
            }
            lock(&self.client_calls.waiting).insert(key.clone(), waiter);
        }
        self.send_client_outcome(
            origin,
            call.request_id,
            ClientOutcome::Accepted,
            None,
            Some(accepted_sent),
        );
        let Some(Ok(())) = self.deliver_to_local(&call.connection_id, &call.message) else {
            if let Some(waiter) = lock(&self.client_calls.waiting).remove(&key) {
                self.resolve(waiter, ClientOutcome::Disconnected, &call.connection_id);
            }
            return;
        };
        tracing::debug!(hub = %self.hub, %origin, connection_id = %call.connection_id, request_id = call.request_id, "client-result invocation queued for another node");
        // Forget the request once the asking node has given up on it.
        let shared = Arc::downgrade(self);
        let timeout = Duration::from_millis(call.timeout_ms);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(shared) = shared.upgrade() {
                lock(&shared.client_calls.waiting).remove(&key);
            }
        });
    }

    /// Give `outcome` to whoever waits for it.
    fn resolve(
        self: &Arc<Self>,
        waiter: Waiter,
        outcome: ClientOutcome,
        connection_id: &ConnectionId,
    ) {
        match waiter {
            Waiter::Local(sender) => {
                let answer = outcome
                    .into_answer(connection_id)
                    .unwrap_or_else(|| Err(ClientResultError::Disconnected(connection_id.clone())));
                let _ = sender.send(answer);
            }
            Waiter::Remote {
                origin,
                request_id,
                accepted,
            } => {
                self.send_client_outcome(origin, request_id, outcome, Some(accepted), None);
            }
        }
    }

    /// Send a client-result answer to the node that asked, without blocking the caller:
    /// once `after` has resolved or dropped (the answer sent before this one), and
    /// dropping `done` when this one was sent or failed.
    fn send_client_outcome(
        self: &Arc<Self>,
        origin: NodeId,
        request_id: u64,
        outcome: ClientOutcome,
        after: Option<oneshot::Receiver<()>>,
        done: Option<oneshot::Sender<()>>,
    ) {
        let shared = self.clone();
        tokio::spawn(async move {
            let _done = done;
            if let Some(after) = after {
                let _ = after.await;
            }
            let kind = EnvelopeKind::ClientResult(ClientResult {
                request_id,
                outcome,
            });
            if let Err(error) = shared.send_to(origin, kind).await {
                tracing::warn!(hub = %shared.hub, %origin, request_id, %error, "could not send a client result back");
            }
        });
    }

    /// Apply one envelope from another node.
    fn handle_envelope(self: &Arc<Self>, envelope: &Envelope) {
        let me = self.backplane.node_id();
        if envelope.origin == me {
            tracing::debug!(hub = %self.hub, seq = envelope.seq, "dropping own echo");
            return;
        }
        if envelope.destination.is_some_and(|node| node != me) || envelope.hub != self.hub {
            return;
        }
        tracing::debug!(hub = %self.hub, origin = %envelope.origin, seq = envelope.seq, "envelope received");
        match &envelope.kind {
            EnvelopeKind::Invocation { target, message } => {
                let fanout = read(&self.registry).deliver(target, message);
                tracing::trace!(
                    delivered = fanout.delivered,
                    failed = fanout.failed,
                    "remote invocation delivered"
                );
            }
            EnvelopeKind::GroupCommand(command) => {
                let ack_id = command.ack_id;
                let answer = match self.apply_locally(
                    &command.connection_id,
                    &command.group,
                    command.action,
                ) {
                    None => return,
                    Some(Ok(())) => EnvelopeKind::Ack(Ack { ack_id }),
                    Some(Err(reason)) => {
                        EnvelopeKind::GroupRefused(GroupRefusal { ack_id, reason })
                    }
                };
                self.answer(envelope.origin, ack_id, answer);
            }
            EnvelopeKind::Ack(Ack { ack_id }) => {
                if let Some(waiter) = lock(&self.pending_acks).remove(ack_id) {
                    let _ = waiter.send(Ok(()));
                }
            }
            EnvelopeKind::GroupRefused(GroupRefusal { ack_id, reason }) => {
                if let Some(waiter) = lock(&self.pending_acks).remove(ack_id) {
                    let _ = waiter.send(Err(reason.clone()));
                }
            }
            EnvelopeKind::ClientInvocation(call) => {
                self.accept_client_invocation(envelope.origin, call);
            }
            EnvelopeKind::ClientResult(result) => {
                if !self.client_calls.answer_from_owner(result.clone()) {
                    tracing::debug!(hub = %self.hub, request_id = result.request_id, "client result for a call that no longer waits");
                }
            }
        }
    }

    /// Answer a group command without blocking the receive loop: if the backplane is
    /// applying backpressure, envelopes keep flowing in meanwhile.
    fn answer(self: &Arc<Self>, origin: crate::id::NodeId, ack_id: u64, answer: EnvelopeKind) {
        let shared = self.clone();
        tokio::spawn(async move {
            if let Err(error) = shared.send_to(origin, answer).await {
                tracing::warn!(hub = %shared.hub, %origin, ack_id, %error, "could not answer a group command");
            }
        });
    }

    fn handle_lifecycle(&self, event: BackplaneEvent) {
        let mut health = lock(&self.health);
        match event {
            BackplaneEvent::Connected => {
                tracing::debug!(hub = %self.hub, "backplane connected");
                health.status = BackplaneStatus::Connected;
                health.disconnected_since = None;
            }
            BackplaneEvent::Disconnected { reason } => {
                tracing::warn!(hub = %self.hub, %reason, "backplane disconnected");
                health.status = BackplaneStatus::Disconnected { reason };
                health
                    .disconnected_since
                    .get_or_insert_with(SystemTime::now);
            }
            BackplaneEvent::Reconnected { gap } => {
                health.status = BackplaneStatus::Connected;
                health.disconnected_since = None;
                self.publishing.link_restored();
                health.reconnects = health.reconnects.saturating_add(1);
                self.metrics.gap(&gap);
                match gap {
                    GapRepair::Repaired { recovered } => {
                        tracing::info!(hub = %self.hub, recovered, "backplane reconnected or gap repaired; nothing lost");
                    }
                    GapRepair::Unrepairable {
                        recovered,
                        missing,
                        detail,
                    } => {
                        health.envelopes_lost = health.envelopes_lost.saturating_add(missing);
                        tracing::error!(hub = %self.hub, recovered, missing, %detail, "backplane reconnected or gap repaired; envelopes lost");
                    }
                }
            }
            BackplaneEvent::Lagged { missed } => {
                health.envelopes_lost = health.envelopes_lost.saturating_add(missed);
                self.metrics.lost(missed);
                tracing::error!(hub = %self.hub, missed, "backplane subscriber lagged; envelopes dropped");
            }
            BackplaneEvent::Envelope(_) => {}
        }
    }
}

async fn receive_loop<B: Backplane + ?Sized>(
    shared: Arc<ManagerState<B>>,
    mut subscription: Subscription,
) {
    while let Some(event) = subscription.recv().await {
        match event {
            BackplaneEvent::Envelope(envelope) => {
                shared.envelopes_received.fetch_add(1, Ordering::Relaxed);
                shared.metrics.received();
                shared.handle_envelope(&envelope);
            }
            other => shared.handle_lifecycle(other),
        }
    }
    tracing::debug!(hub = %shared.hub, "backplane subscription ended");
    lock(&shared.health).status = BackplaneStatus::Stopped;
    // Nobody will ack any more: fail the waiters now rather than at their timeout.
    lock(&shared.pending_acks).clear();
    lock(&shared.client_calls.asked).clear();
}

/// Queue `message` for this node's connections that `target` names.
fn deliver_local(
    hub: &str,
    registry: &RwLock<Registry>,
    target: &Target,
    message: &SerializedMessage,
) {
    let fanout = read(registry).deliver(target, message);
    tracing::trace!(%hub, ?target, delivered = fanout.delivered, failed = fanout.failed, "local delivery");
}

/// The part of `target` other nodes still have to deliver, or `None` if nothing is left
/// (every addressed connection was local).
fn remote_part(registry: &Registry, target: &Target) -> Option<Target> {
    match target {
        Target::Connection(id) if registry.contains(id) => None,
        Target::Connections(ids) => {
            let remote: Vec<ConnectionId> = ids
                .iter()
                .filter(|id| !registry.contains(id))
                .cloned()
                .collect();
            (!remote.is_empty()).then_some(Target::Connections(remote))
        }
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::mpsc;

    use super::*;
    use crate::id::NodeId;
    use crate::manager::{ConnectionSink, DeliveryError};
    use crate::message::Protocol;

    /// A backplane double: counts publishes and fails them when told to.
    #[derive(Debug, Default)]
    struct FaultyBackplane {
        fail: bool,
        published: AtomicUsize,
        /// Keeps the subscription open for the manager's lifetime.
        events: Mutex<Option<mpsc::Sender<BackplaneEvent>>>,
    }

    #[async_trait]
    impl Backplane for FaultyBackplane {
        fn node_id(&self) -> NodeId {
            NodeId::from_u128(1)
        }
        async fn publish(&self, _hub: &str, _kind: EnvelopeKind) -> Result<(), BackplaneError> {
            self.published.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                Err(BackplaneError::backend("database unreachable"))
            } else {
                Ok(())
            }
        }
        async fn send_to(
            &self,
            _: NodeId,
            hub: &str,
            kind: EnvelopeKind,
        ) -> Result<(), BackplaneError> {
            self.publish(hub, kind).await
        }
        async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
            let (tx, rx) = mpsc::channel(8);
            tx.try_send(BackplaneEvent::Connected).unwrap();
            *lock(&self.events) = Some(tx);
            Ok(Subscription::new(hub, rx))
        }
        async fn shutdown(&self) -> Result<(), BackplaneError> {
            lock(&self.events).take();
            Ok(())
        }
    }

    #[derive(Debug, Default)]
    struct CountingSink(AtomicUsize);

    impl ConnectionSink for CountingSink {
        fn deliver(&self, _: &SerializedMessage) -> Result<(), DeliveryError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// A manager over `backplane` with one local connection, `c`, counting what it gets.
    async fn with_connection_c(
        backplane: &Arc<FaultyBackplane>,
    ) -> (
        BackplaneHubLifetimeManager<FaultyBackplane>,
        Arc<CountingSink>,
    ) {
        let manager = BackplaneHubLifetimeManager::new("hub", backplane.clone())
            .await
            .unwrap();
        let sink = Arc::new(CountingSink::default());
        manager
            .on_connected(LocalConnection::new("c", None, sink.clone()))
            .await
            .unwrap();
        (manager, sink)
    }

    fn message() -> SerializedMessage {
        SerializedMessage::new().with(Protocol::Json, &b"{}\x1e"[..])
    }

    #[tokio::test]
    async fn a_send_the_backplane_refuses_reaches_no_local_connection() {
        let backplane = Arc::new(FaultyBackplane {
            fail: true,
            ..Default::default()
        });
        let (manager, sink) = with_connection_c(&backplane).await;
        let result = manager.send_all(message()).await;
        assert!(
            matches!(result, Err(HubError::Backplane(BackplaneError::Backend(_)))),
            "got {result:?}"
        );
        assert_eq!(
            sink.0.load(Ordering::SeqCst),
            0,
            "a failed send must not have reached local connections (a retry would duplicate it)"
        );
        assert_eq!(backplane.published.load(Ordering::SeqCst), 1);
    }

    #[derive(Debug, Default)]
    struct DownBackplane(FaultyBackplane);

    #[async_trait]
    impl Backplane for DownBackplane {
        fn node_id(&self) -> NodeId {
            self.0.node_id()
        }
        async fn publish(&self, _hub: &str, _kind: EnvelopeKind) -> Result<(), BackplaneError> {
            Err(BackplaneError::Unavailable {
                reason: "database unreachable".into(),
            })
        }
        async fn send_to(&self, _: NodeId, h: &str, k: EnvelopeKind) -> Result<(), BackplaneError> {
            self.publish(h, k).await
        }
        async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
            self.0.subscribe(hub).await
        }
        async fn shutdown(&self) -> Result<(), BackplaneError> {
            self.0.shutdown().await
        }
    }

    #[tokio::test]
    async fn while_the_backplane_is_unavailable_local_connections_still_get_sends() {
        let manager = BackplaneHubLifetimeManager::new("hub", Arc::new(DownBackplane::default()))
            .await
            .unwrap();
        let sink = Arc::new(CountingSink::default());
        manager
            .on_connected(LocalConnection::new("c", None, sink.clone()))
            .await
            .unwrap();
        let result = manager.send_all(message()).await;
        assert!(
            matches!(
                &result,
                Err(HubError::LocalOnly(BackplaneError::Unavailable { .. }))
            ),
            "got {result:?}"
        );
        assert!(result.unwrap_err().to_string().contains("circuit open"));
        assert_eq!(sink.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn local_connections_get_a_send_once_the_backplane_took_it() {
        let backplane = Arc::new(FaultyBackplane::default());
        let (manager, sink) = with_connection_c(&backplane).await;
        manager.send_all(message()).await.unwrap();
        manager
            .send_connections(
                &[ConnectionId::from("c"), ConnectionId::from("elsewhere")],
                message(),
            )
            .await
            .unwrap();
        assert_eq!(sink.0.load(Ordering::SeqCst), 2);
        assert_eq!(backplane.published.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn local_only_targets_do_not_touch_the_backplane() {
        let backplane = Arc::new(FaultyBackplane::default());
        let (manager, sink) = with_connection_c(&backplane).await;
        let id = ConnectionId::from("c");
        manager.send_connection(&id, message()).await.unwrap();
        manager
            .send_connections(&[id.clone(), id.clone()], message())
            .await
            .unwrap();
        manager.add_to_group(&id, "g").await.unwrap();
        manager.remove_from_group(&id, "g").await.unwrap();
        assert_eq!(backplane.published.load(Ordering::SeqCst), 0);
        assert_eq!(sink.0.load(Ordering::SeqCst), 2);
        // A connection elsewhere needs the backplane.
        manager
            .send_connections(&[id, "elsewhere".into()], message())
            .await
            .unwrap();
        assert_eq!(backplane.published.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_group_change_waiting_when_the_backplane_stops_fails_with_shutdown() {
        let backplane = Arc::new(FaultyBackplane::default());
        let options = ManagerOptions::default().group_ack_timeout(Duration::from_secs(60));
        let manager = Arc::new(
            BackplaneHubLifetimeManager::with_options("hub", backplane.clone(), options)
                .await
                .unwrap(),
        );
        let waiting = tokio::spawn({
            let manager = manager.clone();
            async move { manager.add_to_group(&"elsewhere".into(), "g").await }
        });
        while backplane.published.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        backplane.shutdown().await.unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter must not sit out its 60 s timeout")
            .unwrap();
        assert!(
            matches!(result, Err(HubError::Backplane(BackplaneError::Shutdown))),
            "got {result:?}"
        );
    }

    #[tokio::test]
    async fn duplicate_connection_is_rejected_and_health_tracks_the_link() {
        let backplane = Arc::new(FaultyBackplane::default());
        let manager = BackplaneHubLifetimeManager::new("hub", backplane.clone())
            .await
            .unwrap();
        let sink: Arc<dyn ConnectionSink> = Arc::new(CountingSink::default());
        manager
            .on_connected(LocalConnection::new("c", None, sink.clone()))
            .await
            .unwrap();
        let again = manager
            .on_connected(LocalConnection::new("c", None, sink))
            .await;
        assert!(matches!(again, Err(HubError::DuplicateConnection(id)) if id.as_str() == "c"));
        assert_eq!(manager.local_connection_count(), 1);
        // The receive task sees Connected, then the end of the subscription.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while manager.health().status != BackplaneStatus::Connected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "status never became connected"
            );
            tokio::task::yield_now().await;
        }
        backplane.shutdown().await.unwrap();
        while manager.health().status != BackplaneStatus::Stopped {
            assert!(
                tokio::time::Instant::now() < deadline,
                "status never became stopped"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
