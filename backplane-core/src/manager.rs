//! The ASP.NET Core `HubLifetimeManager` surface, and how it reaches local connections.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use hub_protocol::Completion;

use crate::backplane::BackplaneError;
use crate::client_results::ClientAnswer;
use crate::envelope::Target;
use crate::id::{ConnectionId, NodeTag};
use crate::message::{Protocol, SerializedMessage};

/// Where a hub's messages go: the connections of this node, and (through a backplane)
/// the connections of every other node.
///
/// This mirrors ASP.NET Core's `HubLifetimeManager<THub>`. Every `send_*` method is a
/// shorthand for [`HubLifetimeManager::send`] with the matching [`Target`]; an
/// implementation only has to provide `send`, the connection hooks and the group changes.
///
/// Messages arrive already serialized once per hub protocol ([`SerializedMessage`]); an
/// implementation hands the same bytes to every connection and never re-serializes.
#[async_trait]
pub trait HubLifetimeManager: Send + Sync + fmt::Debug {
    /// A connection completed its handshake on this node.
    ///
    /// # Errors
    ///
    /// [`HubError::DuplicateConnection`] if a connection with that id is already registered.
    async fn on_connected(&self, connection: LocalConnection) -> Result<(), HubError>;

    /// A connection of this node went away; it leaves every group and user index.
    /// Unknown ids are ignored.
    ///
    /// # Errors
    ///
    /// Implementations over a remote store may fail; the generic one never does.
    async fn on_disconnected(&self, connection_id: &ConnectionId) -> Result<(), HubError>;

    /// Deliver `message` to every connection `target` selects, on every node, each at
    /// most once.
    ///
    /// # Errors
    ///
    /// [`HubError::Backplane`] if the message could not be handed to the other nodes.
    /// The generic implementation delivers to this node's connections only once the
    /// other nodes have it, so after this error no connection of this node has received
    /// it and retrying the send cannot deliver it twice here. Other nodes may have it
    /// when the error is a timeout (a publish can commit after its caller gave up).
    /// [`HubError::LocalOnly`] while the backplane is unavailable (its circuit is open):
    /// this node's connections received the message, no other node did.
    async fn send(&self, target: Target, message: SerializedMessage) -> Result<(), HubError>;

    /// Add a connection (of any node) to a group. Returns once the node that owns the
    /// connection has applied the change.
    ///
    /// # Errors
    ///
    /// [`HubError::NoOwner`] when no node acknowledged the change in time (no node owns
    /// that connection); [`HubError::GroupRefused`] when the owning node refused it (the
    /// connection is in as many groups as that node allows); [`HubError::Backplane`] if
    /// the request could not be sent.
    async fn add_to_group(&self, connection_id: &ConnectionId, group: &str)
    -> Result<(), HubError>;

    /// Remove a connection (of any node) from a group. Returns once the owning node
    /// applied the change.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::add_to_group`].
    async fn remove_from_group(
        &self,
        connection_id: &ConnectionId,
        group: &str,
    ) -> Result<(), HubError>;

    /// Invoke a client method on one connection, wherever it lives, and wait for the
    /// client's answer (client results, ASP.NET Core's `InvokeConnectionAsync`).
    /// `message` is the Invocation frame for each hub protocol, carrying `invocation_id`
    /// (take it from [`HubLifetimeManager::next_invocation_id`]). `Ok(None)` is a void
    /// completion.
    ///
    /// # Errors
    ///
    /// A [`ClientResultError`](crate::ClientResultError): the connection does not exist, disconnected, answered
    /// with an error, or did not answer within the client-result timeout.
    async fn invoke_connection(
        &self,
        connection_id: &ConnectionId,
        invocation_id: String,
        message: SerializedMessage,
    ) -> ClientAnswer;

    /// A client of this node answered an invocation with `completion` (ASP.NET Core's
    /// `SetConnectionResultAsync`). Returns whether a call was waiting for it; one that
    /// was not (an unknown or expired invocation id) changes nothing.
    fn set_connection_result(&self, connection_id: &ConnectionId, completion: Completion) -> bool;

    /// A fresh invocation id for [`HubLifetimeManager::invoke_connection`], unique across
    /// the nodes of the cluster.
    fn next_invocation_id(&self) -> String;

    /// The tag this node's connection ids carry ([`ConnectionId::tagged`]), or `None`
    /// when the implementation does not use tags (the default). A server that issues
    /// connection ids tags them with it, so that a client result asked of a connection
    /// that does not exist fails at once instead of after a timeout.
    fn node_tag(&self) -> Option<NodeTag> {
        None
    }

    /// Send to every connection.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_all(&self, message: SerializedMessage) -> Result<(), HubError> {
        self.send(Target::All, message).await
    }

    /// Send to every connection except `excluded`.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_all_except(
        &self,
        message: SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<(), HubError> {
        self.send(Target::AllExcept(excluded.to_vec()), message)
            .await
    }

    /// Send to one connection, wherever it lives.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_connection(
        &self,
        connection_id: &ConnectionId,
        message: SerializedMessage,
    ) -> Result<(), HubError> {
        self.send(Target::Connection(connection_id.clone()), message)
            .await
    }

    /// Send to several connections, each once.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_connections(
        &self,
        connection_ids: &[ConnectionId],
        message: SerializedMessage,
    ) -> Result<(), HubError> {
        self.send(Target::Connections(connection_ids.to_vec()), message)
            .await
    }

    /// Send to every member of a group.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_group(&self, group: &str, message: SerializedMessage) -> Result<(), HubError> {
        self.send(Target::Group(group.to_owned()), message).await
    }

    /// Send to every member of any of the groups; a member of several receives it once.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_groups(
        &self,
        groups: &[String],
        message: SerializedMessage,
    ) -> Result<(), HubError> {
        self.send(Target::Groups(groups.to_vec()), message).await
    }

    /// Send to every member of a group except `excluded`.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_group_except(
        &self,
        group: &str,
        message: SerializedMessage,
        excluded: &[ConnectionId],
    ) -> Result<(), HubError> {
        let target = Target::GroupExcept {
            group: group.to_owned(),
            excluded: excluded.to_vec(),
        };
        self.send(target, message).await
    }

    /// Send to every connection of a user, on every node.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_user(&self, user: &str, message: SerializedMessage) -> Result<(), HubError> {
        self.send(Target::User(user.to_owned()), message).await
    }

    /// Send to every connection of any of the users.
    ///
    /// # Errors
    ///
    /// As for [`HubLifetimeManager::send`].
    async fn send_users(
        &self,
        users: &[String],
        message: SerializedMessage,
    ) -> Result<(), HubError> {
        self.send(Target::Users(users.to_vec()), message).await
    }
}

/// How the lifetime manager hands a message to one local connection.
///
/// The server implements this (typically by pushing onto the connection's bounded
/// outgoing queue), so this crate never depends on the server. `deliver` is called with
/// the manager's registry locked for reading while it fans out, so it must be quick and
/// must never block or await: queue the bytes and return.
pub trait ConnectionSink: Send + Sync + fmt::Debug + 'static {
    /// Queue the encoding of `message` for this connection's protocol.
    ///
    /// # Errors
    ///
    /// A [`DeliveryError`] saying why the message was not queued; the manager logs it and
    /// carries on with the other connections.
    fn deliver(&self, message: &SerializedMessage) -> Result<(), DeliveryError>;
}

/// Why a [`ConnectionSink`] did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The connection is closing or closed.
    #[error("connection is closed")]
    Closed,
    /// The connection's outgoing queue is full (the client stopped reading); the sink is
    /// expected to disconnect it.
    #[error("connection send queue is full")]
    QueueFull,
    /// The message carries no encoding for the connection's protocol.
    #[error("message has no {} encoding", .0.name())]
    MissingEncoding(Protocol),
}

/// A connection of this node, as the lifetime manager sees it.
#[derive(Debug, Clone)]
pub struct LocalConnection {
    /// The connection's public id.
    pub id: ConnectionId,
    /// The authenticated user the connection belongs to, for user targeting.
    pub user: Option<String>,
    /// Where its messages go.
    pub sink: Arc<dyn ConnectionSink>,
}

impl LocalConnection {
    /// A connection with `id`, optionally belonging to `user`, delivering into `sink`.
    pub fn new(
        id: impl Into<ConnectionId>,
        user: Option<String>,
        sink: Arc<dyn ConnectionSink>,
    ) -> Self {
        Self {
            id: id.into(),
            user,
            sink,
        }
    }
}

/// Why a lifetime manager operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The backplane failed.
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
    /// The backplane is unavailable (its circuit is open,
    /// [`BackplaneError::Unavailable`]): the message reached this node's connections
    /// only, none of the other nodes'. Retrying would deliver it twice here. Unlike a
    /// send that goes through, it is not ordered with the messages other nodes publish
    /// meanwhile, and the other nodes never get it (nothing is queued for later).
    #[error("delivered to this server's connections only: {0}")]
    LocalOnly(#[source] BackplaneError),
    /// A group change for a connection no node acknowledged in time.
    #[error(
        "no node acknowledged {action} connection {connection_id} {preposition} group {group:?} within {timeout:?}: no node owns that connection",
        action = if *.adding { "adding" } else { "removing" },
        preposition = if *.adding { "to" } else { "from" }
    )]
    NoOwner {
        /// The connection.
        connection_id: ConnectionId,
        /// The group.
        group: String,
        /// Whether it was an add (else a remove).
        adding: bool,
        /// How long the manager waited.
        timeout: Duration,
    },
    /// A connection with this id is already registered on this node.
    #[error("connection {0} is already registered")]
    DuplicateConnection(ConnectionId),
    /// The node that owns the connection refused to add it to the group (see
    /// [`ManagerOptions::max_groups_per_connection`](crate::ManagerOptions::max_groups_per_connection)).
    /// Nothing changed.
    #[error("connection {connection_id} was not added to group {group:?}: {reason}")]
    GroupRefused {
        /// The connection.
        connection_id: ConnectionId,
        /// The group.
        group: String,
        /// Why, as the owning node put it.
        reason: String,
    },
}
