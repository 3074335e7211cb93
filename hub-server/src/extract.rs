//! Hub method parameters: what a plain async function can ask for.
//!
//! Every parameter type implements [`FromInvocation`]. Context types ([`Caller`],
//! [`Clients`](crate::Clients), [`CallerClients`](crate::CallerClients),
//! [`Groups`](crate::Groups), [`HubContext`](crate::HubContext), [`Extension`]) take
//! nothing from the invocation's arguments; every other type is deserialized from the next
//! positional argument, so `async fn add(a: i32, b: i32)` binds the caller's two arguments
//! in order.

use std::fmt;
use std::sync::Arc;

use backplane_core::ConnectionId;
use hub_protocol::{Arguments, Protocol};
use serde::de::DeserializeOwned;

use crate::services::HubServices;

/// What one connection is, as hub code sees it.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    /// The public connection id (never the secret connection token).
    pub(crate) id: ConnectionId,
    /// The user the identity hook derived from the connection's request, if any.
    pub(crate) user: Option<String>,
    /// What the authenticator vouched for, if the connection authenticated (the
    /// [`Claims`](crate::Claims) parameter).
    pub(crate) principal: Option<Arc<crate::auth::Principal>>,
    /// The hub protocol agreed in the handshake.
    pub(crate) protocol: Protocol,
    /// Stateful reconnect's books, when the client asked for it: the reader counts and
    /// acknowledges through them.
    pub(crate) resume: Option<Arc<crate::connection::ResumeState>>,
    /// The streams the connection has open, in both directions.
    pub(crate) streams: Arc<crate::streaming::ConnectionStreams>,
}

/// Everything a parameter can be extracted from: the calling connection, the hub, and the
/// invocation's arguments with a cursor over them.
///
/// Implement [`FromInvocation`] for your own type to make it a hub method parameter.
pub struct InvocationContext {
    /// The calling connection.
    pub(crate) connection: Arc<ConnectionInfo>,
    /// What the hub of the method lends its parameters (sending, extensions, limits).
    pub(crate) services: Arc<HubServices>,
    /// The arguments the caller sent, still encoded.
    pub(crate) arguments: Arguments,
    /// Index of the next argument a deserialized parameter takes.
    pub(crate) next_argument: usize,
    /// The ids of the upload streams the caller sent, in order; an
    /// [`UploadStream`](crate::UploadStream) parameter takes the next one.
    pub(crate) stream_ids: std::vec::IntoIter<String>,
}

impl InvocationContext {
    /// The calling connection's identity.
    pub fn caller(&self) -> Caller {
        Caller {
            info: self.connection.clone(),
        }
    }

    /// The hub protocol of the calling connection.
    pub fn protocol(&self) -> Protocol {
        self.connection.protocol
    }

    /// How many arguments the caller sent.
    pub fn argument_count(&self) -> usize {
        self.arguments.len()
    }

    /// The id of the next upload stream the caller sent, if any is left.
    pub(crate) fn next_stream_id(&mut self) -> Option<String> {
        self.stream_ids.next()
    }

    /// Deserialize the next positional argument into `T` and advance past it.
    ///
    /// # Errors
    ///
    /// A [`BindError`] (shown to the caller) when there is no next argument or it does not
    /// match `T`.
    pub fn next_argument<T: DeserializeOwned>(&mut self) -> Result<T, BindError> {
        let index = self.next_argument;
        self.next_argument += 1;
        self.arguments
            .deserialize(index)
            .map_err(|error| BindError::arguments(error.to_string()))
    }
}

impl fmt::Debug for InvocationContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvocationContext")
            .field("connection", &self.connection)
            .field("arguments", &self.arguments)
            .field("next_argument", &self.next_argument)
            .finish_non_exhaustive()
    }
}

/// A type a hub method (or connection hook) can take as a parameter.
///
/// Implemented for every `serde::de::DeserializeOwned` type (one positional argument each)
/// and for the context types of this crate (no argument). Implement it for your own
/// non-`Deserialize` types to extract them from the context.
pub trait FromInvocation: Sized {
    /// How many positional arguments this parameter consumes: 1 for deserialized values,
    /// 0 for context. A method's argument count is the sum over its parameters, and an
    /// invocation with a different count is refused before anything is deserialized.
    const ARGUMENTS: usize;

    /// How many of the caller's upload streams this parameter takes: 1 for an
    /// [`UploadStream`](crate::UploadStream), 0 for everything else.
    const STREAMS: usize = 0;

    /// Extract the parameter.
    ///
    /// # Errors
    ///
    /// A [`BindError`]; the method is not called and the caller receives a completion error.
    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError>;
}

impl<T: DeserializeOwned> FromInvocation for T {
    const ARGUMENTS: usize = 1;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        context.next_argument()
    }
}

/// Why a parameter could not be extracted.
#[derive(Debug, Clone)]
pub struct BindError {
    /// What went wrong.
    message: String,
    /// Whether the problem is in the caller's arguments (shown to the caller) or in the
    /// server's setup (logged, hidden from the caller).
    caller_fault: bool,
}

impl BindError {
    /// The caller's arguments do not fit: `message` is sent back in the completion.
    pub fn arguments(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            caller_fault: true,
        }
    }

    /// The server is misconfigured (for example a missing [`Extension`]): `message` is
    /// logged and the caller only learns that the invocation failed.
    pub fn server(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            caller_fault: false,
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the caller's arguments are at fault.
    pub fn is_caller_fault(&self) -> bool {
        self.caller_fault
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The calling connection: its public id, its user and its protocol.
///
/// ```
/// use hub_server::Caller;
///
/// async fn who_am_i(caller: Caller) -> String {
///     caller.user().unwrap_or("anonymous").to_owned()
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Caller {
    /// Shared with the connection task; cloning is a reference-count increment.
    info: Arc<ConnectionInfo>,
}

impl Caller {
    /// The connection's public id (what `clients.client(id)` and groups take).
    pub fn connection_id(&self) -> &ConnectionId {
        &self.info.id
    }

    /// The user the identity hook derived from the connection's request, if any.
    pub fn user(&self) -> Option<&str> {
        self.info.user.as_deref()
    }

    /// The hub protocol the connection speaks.
    pub fn protocol(&self) -> Protocol {
        self.info.protocol
    }
}

impl FromInvocation for Caller {
    const ARGUMENTS: usize = 0;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        Ok(context.caller())
    }
}

/// A value registered with [`HubBuilder::extension`](crate::HubBuilder::extension),
/// cloned for each invocation: the way to give hub methods application state such as a
/// database pool.
///
/// ```
/// use std::sync::Arc;
/// use hub_server::Extension;
///
/// #[derive(Clone)]
/// struct Greeting(Arc<str>);
///
/// async fn greet(Extension(greeting): Extension<Greeting>, name: String) -> String {
///     format!("{}, {name}!", greeting.0)
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Extension<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromInvocation for Extension<T> {
    const ARGUMENTS: usize = 0;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        context
            .services
            .extensions
            .get::<T>()
            .cloned()
            .map(Extension)
            .ok_or_else(|| {
                BindError::server(format!(
                    "no extension of type {} was registered on the hub",
                    std::any::type_name::<T>()
                ))
            })
    }
}
