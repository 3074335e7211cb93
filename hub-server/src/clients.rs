//! Sending to clients and managing groups, from hub methods and from anywhere else.
//!
//! Every send serializes the message once per hub protocol (JSON and MessagePack) into one
//! shared allocation and hands the same bytes to every connection, here and on other nodes.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use backplane_core::{
    BackplaneHubLifetimeManager, ClientResultError, ConnectionId, HubError, HubLifetimeManager,
    SerializedMessage, Target,
};
use bytes::BytesMut;
use hub_protocol::{Protocol, encode_invocation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::SendError;
use crate::extract::{BindError, FromInvocation, InvocationContext};

/// Initial size of the buffer both encodings of a message are written into.
const INITIAL_FRAME_CAPACITY: usize = 512;

/// Encode an invocation of `method` once for each hub protocol.
///
/// Both encodings share one allocation. Both are always produced: a message may travel to
/// other nodes, whose connections may speak either protocol.
///
/// # Errors
///
/// [`SendError::Encode`] when `arguments` cannot be serialized.
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
pub fn serialize_invocation<A: Serialize + ?Sized>(
    method: &str,
    arguments: &A,
) -> Result<SerializedMessage, SendError> {
    // Room for a typical chat message in both encodings, so encoding does not grow the
    // buffer step by step (each step a reallocation and a copy); larger messages still
    // grow it, and the MessagePack encoding is given about the JSON one's size up front.
    let mut buf = BytesMut::with_capacity(INITIAL_FRAME_CAPACITY + 2 * method.len());
    let encode_error = |source| SendError::Encode {
        method: method.to_owned(),
        source,
    };
    encode_invocation(Protocol::Json, &mut buf, None, method, arguments).map_err(encode_error)?;
    let json = buf.split().freeze();
    buf.reserve(json.len() + 16);
    encode_invocation(Protocol::MessagePack, &mut buf, None, method, arguments)
        .map_err(encode_error)?;
    Ok(SerializedMessage::new()
        .with(Protocol::Json, json)
        .with(Protocol::MessagePack, buf.freeze()))
}

/// Encode an invocation of `method` that expects an answer (it carries `invocation_id`)
/// once for each hub protocol.
fn serialize_client_invocation<A: Serialize + ?Sized>(
    invocation_id: &str,
    method: &str,
    arguments: &A,
) -> Result<SerializedMessage, SendError> {
    let mut buf = BytesMut::with_capacity(INITIAL_FRAME_CAPACITY + 2 * method.len());
    let encode_error = |source| SendError::Encode {
        method: method.to_owned(),
        source,
    };
    encode_invocation(
        Protocol::Json,
        &mut buf,
        Some(invocation_id),
        method,
        arguments,
    )
    .map_err(encode_error)?;
    let json = buf.split().freeze();
    encode_invocation(
        Protocol::MessagePack,
        &mut buf,
        Some(invocation_id),
        method,
        arguments,
    )
    .map_err(encode_error)?;
    Ok(SerializedMessage::new()
        .with(Protocol::Json, json)
        .with(Protocol::MessagePack, buf.freeze()))
}

/// Why a client-result call ([`ClientProxy::invoke`]) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// `invoke` needs a proxy for exactly one connection, from [`Clients::client`].
    #[error("a client result can only be asked of one connection (clients.client(id))")]
    NotOneConnection,
    /// The connection is the caller of the running hub method and runs one invocation at
    /// a time: it could not answer before that method returns (see
    /// [`ClientProxy::invoke`]).
    #[error(
        "connection {0} runs one invocation at a time and is waiting for this hub method: it cannot answer it (raise max_parallel_invocations above 1)"
    )]
    WouldDeadlock(ConnectionId),
    /// The arguments could not be serialized.
    #[error(transparent)]
    Encode(#[from] SendError),
    /// The call failed: unknown connection, disconnected, the client's error, timeout.
    #[error(transparent)]
    Call(#[from] ClientResultError),
    /// The client's value does not deserialize into the requested type.
    #[error("the client's result does not fit the requested type: {0}")]
    InvalidResult(String),
}

/// A set of connections selected by a [`Target`], ready to receive a message.
///
/// Obtained from [`Clients`] or [`CallerClients`]; [`ClientProxy::send`] calls a client
/// method on every selected connection, on every node.
#[derive(Clone)]
pub struct ClientProxy {
    /// Delivers locally and through the backplane.
    manager: Arc<BackplaneHubLifetimeManager>,
    /// Which connections.
    target: Target,
    /// The connection whose hub method made this proxy, when it runs its invocations one
    /// at a time: a client-result call to it could never be answered.
    serial_caller: Option<ConnectionId>,
}

impl ClientProxy {
    /// Call the client method `method` with `arguments` on every selected connection.
    ///
    /// `arguments` must serialize as a sequence: a tuple such as `(user, message)`, an
    /// array, a slice or a `Vec`; use `()` for no arguments and `(value,)` for one.
    /// Returns once the backplane has accepted the message for the other nodes and then
    /// this node's selected connections have it queued. It then yields to the scheduler once, so that in a
    /// long burst of sends the connections' writers (the caller's own included) drain their
    /// queues instead of overflowing them.
    ///
    /// # Errors
    ///
    /// [`SendError::Encode`] if the arguments cannot be serialized (nothing is sent);
    /// [`SendError::Hub`] if the backplane refused the message: no connection of this node
    /// received it, so retrying cannot duplicate it here (after a timeout other nodes may
    /// have it: a publish can commit after its caller gave up).
    pub async fn send<A: Serialize>(self, method: &str, arguments: A) -> Result<(), SendError> {
        let message = serialize_invocation(method, &arguments)?;
        self.manager.send(self.target, message).await?;
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Invoke the client method `method` with `arguments` on the one selected connection
    /// (from [`Clients::client`]) and wait for the value its handler returns (client
    /// results: ASP.NET Core's `Clients.Client(id).InvokeAsync<T>`). The connection may
    /// live on any node: the request travels through the backplane to the node that owns
    /// it, and the answer comes back to this one.
    ///
    /// A void answer (a handler that returns nothing) deserializes as `null`, so `()` and
    /// `Option<T>` accept it. The wait is bounded by
    /// [`ManagerOptions::client_result_timeout`](backplane_core::ManagerOptions::client_result_timeout)
    /// (30 s by default; set it with
    /// [`HubBuilder::manager_options`](crate::HubBuilder::manager_options)).
    ///
    /// **The deadlock rule.** A connection with
    /// [`HubOptions::max_parallel_invocations`](crate::HubOptions::max_parallel_invocations)
    /// at 1 does not read its next message until its running hub method returns, so a
    /// hub method of that connection waiting for that same connection's answer would wait
    /// until the timeout: such a call fails at once with [`InvokeError::WouldDeadlock`].
    /// Calls to other connections, and calls from outside hub methods
    /// ([`HubContext`]), are not affected.
    ///
    /// # Errors
    ///
    /// An [`InvokeError`]: the proxy does not select exactly one connection, the
    /// arguments cannot be serialized, the connection does not exist, disconnected,
    /// answered with an error or not in time, or its value does not fit `T`.
    pub async fn invoke<T: DeserializeOwned>(
        &self,
        method: &str,
        arguments: impl Serialize,
    ) -> Result<T, InvokeError> {
        let Target::Connection(connection_id) = &self.target else {
            return Err(InvokeError::NotOneConnection);
        };
        if self.serial_caller.as_ref() == Some(connection_id) {
            return Err(InvokeError::WouldDeadlock(connection_id.clone()));
        }
        let invocation_id = self.manager.next_invocation_id();
        let message = serialize_client_invocation(&invocation_id, method, &arguments)?;
        let answer = self
            .manager
            .invoke_connection(connection_id, invocation_id, message)
            .await?;
        let decoded = match &answer {
            Some(value) => value.deserialize::<T>().map_err(|error| error.to_string()),
            None => serde_json::from_slice::<T>(b"null").map_err(|error| error.to_string()),
        };
        decoded.map_err(InvokeError::InvalidResult)
    }

    /// Which connections this proxy selects.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

impl fmt::Debug for ClientProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientProxy")
            .field("hub", &self.manager.hub())
            .field("target", &self.target)
            .finish()
    }
}

/// Selects the connections of a hub to send to: ASP.NET Core's `IHubClients`.
///
/// ```
/// use hub_server::{Clients, MethodError};
///
/// async fn announce(clients: Clients, text: String) -> Result<(), MethodError> {
///     clients.all().send("Announcement", (text,)).await?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Clients {
    /// Delivers locally and through the backplane.
    manager: Arc<BackplaneHubLifetimeManager>,
    /// The calling connection, when these clients were given to a hub method of a
    /// connection that runs one invocation at a time (see [`ClientProxy::invoke`]).
    serial_caller: Option<ConnectionId>,
}

impl Clients {
    pub(crate) fn new(manager: Arc<BackplaneHubLifetimeManager>) -> Self {
        Self {
            manager,
            serial_caller: None,
        }
    }

    /// The clients a hub method of the calling connection in `context` gets.
    fn for_caller(context: &InvocationContext) -> Self {
        let serial = context.services.serial_invocations;
        Self {
            manager: context.services.manager.clone(),
            serial_caller: serial.then(|| context.connection.id.clone()),
        }
    }

    fn proxy(&self, target: Target) -> ClientProxy {
        ClientProxy {
            manager: self.manager.clone(),
            target,
            serial_caller: self.serial_caller.clone(),
        }
    }

    /// Every connection of the hub, on every node.
    pub fn all(&self) -> ClientProxy {
        self.proxy(Target::All)
    }

    /// Every connection except the listed ones.
    pub fn all_except<I>(&self, excluded: I) -> ClientProxy
    where
        I: IntoIterator,
        I::Item: Into<ConnectionId>,
    {
        self.proxy(Target::AllExcept(ids(excluded)))
    }

    /// One connection, wherever it lives.
    pub fn client(&self, connection_id: impl Into<ConnectionId>) -> ClientProxy {
        self.proxy(Target::Connection(connection_id.into()))
    }

    /// Several connections; each receives the message once.
    pub fn clients<I>(&self, connection_ids: I) -> ClientProxy
    where
        I: IntoIterator,
        I::Item: Into<ConnectionId>,
    {
        self.proxy(Target::Connections(ids(connection_ids)))
    }

    /// Every member of a group.
    pub fn group(&self, group: impl Into<String>) -> ClientProxy {
        self.proxy(Target::Group(group.into()))
    }

    /// Every member of any of the groups; a member of several receives the message once.
    pub fn groups<I>(&self, groups: I) -> ClientProxy
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.proxy(Target::Groups(groups.into_iter().map(Into::into).collect()))
    }

    /// Every member of a group except the listed connections.
    pub fn group_except<I>(&self, group: impl Into<String>, excluded: I) -> ClientProxy
    where
        I: IntoIterator,
        I::Item: Into<ConnectionId>,
    {
        self.proxy(Target::GroupExcept {
            group: group.into(),
            excluded: ids(excluded),
        })
    }

    /// Every connection of a user, on every node.
    pub fn user(&self, user: impl Into<String>) -> ClientProxy {
        self.proxy(Target::User(user.into()))
    }

    /// Every connection of any of the users.
    pub fn users<I>(&self, users: I) -> ClientProxy
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.proxy(Target::Users(users.into_iter().map(Into::into).collect()))
    }
}

fn ids<I>(ids: I) -> Vec<ConnectionId>
where
    I: IntoIterator,
    I::Item: Into<ConnectionId>,
{
    ids.into_iter().map(Into::into).collect()
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clients")
            .field("hub", &self.manager.hub())
            .finish()
    }
}

impl FromInvocation for Clients {
    const ARGUMENTS: usize = 0;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        Ok(Clients::for_caller(context))
    }
}

/// [`Clients`] plus the targets relative to the calling connection: ASP.NET Core's
/// `IHubCallerClients`. Everything [`Clients`] offers is available through `Deref`.
///
/// ```
/// use hub_server::{CallerClients, MethodError};
///
/// async fn shout(clients: CallerClients, text: String) -> Result<(), MethodError> {
///     clients.others().send("Shout", (&text,)).await?;
///     clients.caller().send("Shouted", ()).await?;
///     Ok(())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct CallerClients {
    /// The hub-wide targets.
    clients: Clients,
    /// The calling connection.
    caller: ConnectionId,
}

impl CallerClients {
    /// The calling connection only.
    pub fn caller(&self) -> ClientProxy {
        self.clients.client(self.caller.clone())
    }

    /// Every connection except the caller.
    pub fn others(&self) -> ClientProxy {
        self.clients.all_except([self.caller.clone()])
    }

    /// Every member of `group` except the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> ClientProxy {
        self.clients.group_except(group, [self.caller.clone()])
    }
}

impl Deref for CallerClients {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

impl FromInvocation for CallerClients {
    const ARGUMENTS: usize = 0;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        Ok(CallerClients {
            clients: Clients::for_caller(context),
            caller: context.connection.id.clone(),
        })
    }
}

/// Adds connections to groups and removes them, wherever the connection lives: ASP.NET
/// Core's `IGroupManager`.
///
/// ```
/// use hub_server::{Caller, Groups, MethodError};
///
/// async fn join(caller: Caller, groups: Groups, room: String) -> Result<(), MethodError> {
///     groups.add(caller.connection_id(), &room).await?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Groups {
    /// Applies local changes directly and sends the others to the owning node.
    manager: Arc<BackplaneHubLifetimeManager>,
}

impl Groups {
    pub(crate) fn new(manager: Arc<BackplaneHubLifetimeManager>) -> Self {
        Self { manager }
    }

    /// Add a connection to a group. Returns once the node that owns the connection has
    /// applied the change; adding a member again changes nothing.
    ///
    /// # Errors
    ///
    /// [`HubError::NoOwner`] when no node owns the connection (it does not exist or has
    /// gone), [`HubError::GroupRefused`] when it is in as many groups as its node allows
    /// ([`ManagerOptions::max_groups_per_connection`](backplane_core::ManagerOptions::max_groups_per_connection)),
    /// [`HubError::Backplane`] when the request could not be sent.
    pub async fn add(&self, connection_id: &ConnectionId, group: &str) -> Result<(), HubError> {
        self.manager.add_to_group(connection_id, group).await
    }

    /// Remove a connection from a group. Returns once the owning node applied the change;
    /// removing a non-member changes nothing.
    ///
    /// # Errors
    ///
    /// As for [`Groups::add`].
    pub async fn remove(&self, connection_id: &ConnectionId, group: &str) -> Result<(), HubError> {
        self.manager.remove_from_group(connection_id, group).await
    }
}

impl fmt::Debug for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Groups")
            .field("hub", &self.manager.hub())
            .finish()
    }
}

impl FromInvocation for Groups {
    const ARGUMENTS: usize = 0;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        Ok(Groups::new(context.services.manager.clone()))
    }
}

/// A hub's clients and groups, usable outside hub methods (background tasks, HTTP
/// handlers): ASP.NET Core's `IHubContext`. Get one from
/// [`Hub::context`](crate::Hub::context); it is cheap to clone.
#[derive(Clone, Debug)]
pub struct HubContext {
    /// Sending.
    clients: Clients,
    /// Group membership.
    groups: Groups,
}

impl HubContext {
    pub(crate) fn new(manager: Arc<BackplaneHubLifetimeManager>) -> Self {
        Self {
            clients: Clients::new(manager.clone()),
            groups: Groups::new(manager),
        }
    }

    /// Select connections to send to.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Change group membership.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }
}

impl FromInvocation for HubContext {
    const ARGUMENTS: usize = 0;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        Ok(HubContext::new(context.services.manager.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_once_per_protocol_in_one_allocation() {
        let message = serialize_invocation("ReceiveMessage", &("alice", "hi")).unwrap();
        let json = message.get(Protocol::Json).unwrap();
        assert_eq!(
            &json[..],
            b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"alice\",\"hi\"]}\x1e"
        );
        let msgpack = message.get(Protocol::MessagePack).unwrap();
        // Length prefix, then [1, {}, nil, "ReceiveMessage", ["alice", "hi"], []].
        assert_eq!(msgpack[0] as usize, msgpack.len() - 1);
        assert_eq!(&msgpack[1..5], &[0x96, 0x01, 0x80, 0xc0]);
    }

    #[test]
    fn arguments_must_be_a_sequence() {
        let error = serialize_invocation("X", &42).unwrap_err();
        assert!(matches!(error, SendError::Encode { .. }), "{error}");
    }
}
