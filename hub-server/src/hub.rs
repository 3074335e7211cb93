//! Defining a hub ([`HubBuilder`]) and running it ([`Hub`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::http::Extensions;
use axum::http::request::Parts;
use axum::response::Response;
use backplane_core::{
    Backplane, BackplaneHealth, BackplaneHubLifetimeManager, HubError, HubLifetimeManager,
    ManagerOptions,
};
use backplane_memory::MemoryBackplane;
use tokio::sync::watch;

use crate::auth::{AuthSettings, Authenticator, Identity, Principal};
use crate::clients::HubContext;
use crate::handler::{Erased, ErasedHandler, Handler};
use crate::identity::UserIdProvider;
use crate::options::HubOptions;
use crate::services::HubServices;
use crate::streaming::StreamOptions;
use crate::tokens::TokenStore;
use crate::transport::http_connections::HttpConnections;

/// Describes a hub: its methods, connection hooks, options, identity hook and backplane.
/// [`HubBuilder::build`] starts it.
///
/// ```
/// use hub_server::{Caller, CallerClients, Hub, MethodError};
///
/// async fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// async fn broadcast(clients: CallerClients, caller: Caller, text: String) -> Result<(), MethodError> {
///     clients.others().send("Message", (caller.connection_id(), text)).await?;
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = Hub::builder("DemoHub")
///     .method("Add", add)
///     .method("Broadcast", broadcast)
///     .method("Echo", |text: String| async move { text })
///     .build()
///     .await?;
/// let app = axum::Router::new().merge(hub.router("/demo"));
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
pub struct HubBuilder {
    /// The hub's name on the backplane (ASP.NET Core uses the hub class name).
    name: String,
    /// Methods by name, exactly as registered.
    methods: HashMap<Box<str>, Arc<dyn ErasedHandler>>,
    /// Runs after a connection's handshake.
    on_connected: Option<Arc<dyn ErasedHandler>>,
    /// Runs when a connection ends.
    on_disconnected: Option<Arc<dyn ErasedHandler>>,
    /// Timeouts and limits.
    options: HubOptions,
    /// Limits of the streams a connection may run.
    stream_options: StreamOptions,
    /// Settings of the lifetime manager (group acknowledgement timeout, groups per
    /// connection).
    manager_options: ManagerOptions,
    /// Where messages for other nodes go; in-memory (single node) when unset.
    backplane: Option<Arc<dyn Backplane>>,
    /// Derives a user id from the connection request.
    user_id: Option<UserIdProvider>,
    /// Application state for [`Extension`](crate::Extension) parameters.
    extensions: Extensions,
    /// Who may connect and call what.
    auth: AuthSettings,
}

impl HubBuilder {
    /// Register `handler` as the hub method `name`.
    ///
    /// Clients invoke it by name; like ASP.NET Core, a name that matches no method exactly
    /// is looked up ignoring ASCII case.
    ///
    /// # Panics
    ///
    /// If a method with the same name (ignoring ASCII case) is already registered.
    #[must_use]
    pub fn method<H, P>(mut self, name: &str, handler: H) -> Self
    where
        H: Handler<P>,
        P: 'static,
    {
        assert!(
            !self.methods.keys().any(|n| n.eq_ignore_ascii_case(name)),
            "hub {:?} already has a method named {name:?}",
            self.name
        );
        self.methods
            .insert(name.into(), Arc::new(Erased::new(handler)));
        self
    }

    /// Run `hook` after each connection's handshake, before its first invocation is
    /// dispatched (ASP.NET Core's `OnConnectedAsync`). If it fails, the connection is
    /// closed with an error.
    ///
    /// # Panics
    ///
    /// If the hook takes invocation arguments (only context parameters such as
    /// [`Caller`](crate::Caller) or [`Clients`](crate::Clients) make sense here).
    #[must_use]
    pub fn on_connected<H, P>(mut self, hook: H) -> Self
    where
        H: Handler<P>,
        P: 'static,
    {
        assert_eq!(
            H::ARGUMENTS,
            0,
            "on_connected hooks take no invocation arguments"
        );
        self.on_connected = Some(Arc::new(Erased::new(hook)));
        self
    }

    /// Run `hook` when a connection ends, while it is still a member of its groups
    /// (ASP.NET Core's `OnDisconnectedAsync`). Messages sent to the departing connection
    /// itself are dropped.
    ///
    /// # Panics
    ///
    /// If the hook takes invocation arguments.
    #[must_use]
    pub fn on_disconnected<H, P>(mut self, hook: H) -> Self
    where
        H: Handler<P>,
        P: 'static,
    {
        assert_eq!(
            H::ARGUMENTS,
            0,
            "on_disconnected hooks take no invocation arguments"
        );
        self.on_disconnected = Some(Arc::new(Erased::new(hook)));
        self
    }

    /// Use `options` for timeouts and limits.
    #[must_use]
    pub fn options(mut self, options: HubOptions) -> Self {
        self.options = options;
        self
    }

    /// Use `options` for the limits of streams (server-to-client and upload streams).
    #[must_use]
    pub fn stream_options(mut self, options: StreamOptions) -> Self {
        self.stream_options = options;
        self
    }

    /// Use `options` for the lifetime manager (group acknowledgement timeout, groups per
    /// connection). Replaces all of them, including a limit a hub preset such as
    /// [`chat::hub_builder`](crate::chat::hub_builder) set.
    #[must_use]
    pub fn manager_options(mut self, options: ManagerOptions) -> Self {
        self.manager_options = options;
        self
    }

    /// Scale out through `backplane`. Without this the hub uses a private
    /// [`MemoryBackplane`] and serves a single node. Several hubs may share one backplane.
    #[must_use]
    pub fn backplane(mut self, backplane: Arc<dyn Backplane>) -> Self {
        self.backplane = Some(backplane);
        self
    }

    /// Derive each connection's user id from its request; see [`UserIdProvider`] and
    /// [`access_token`](crate::access_token). Without this every connection is anonymous.
    #[must_use]
    pub fn user_id<F>(mut self, provider: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.user_id = Some(Arc::new(provider));
        self
    }

    /// Authenticate every request (negotiate, and each transport request) with
    /// `authenticator`; see [`Authenticator`]. An authenticated connection's user id is its
    /// principal's; an anonymous one's comes from the [`HubBuilder::user_id`] hook, if any.
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.auth.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Refuse anonymous connections: negotiate and connect without a principal get 401
    /// (ASP.NET Core's `[Authorize]` on the hub).
    #[must_use]
    pub fn require_authentication(mut self) -> Self {
        self.auth.require_authentication = true;
        self
    }

    /// Let only principals for which `policy` holds connect: others get 403 (and anonymous
    /// requests 401) on negotiate and connect (`[Authorize(Policy = ...)]` on the hub).
    /// Several rules must all hold.
    #[must_use]
    pub fn authorize<F>(mut self, policy: F) -> Self
    where
        F: Fn(&Principal) -> bool + Send + Sync + 'static,
    {
        self.auth.hub_policies.push(Arc::new(policy));
        self
    }

    /// Let only principals for which `policy` holds call the method `name` (matched
    /// ignoring ASCII case, as method names are); anonymous callers never may
    /// (`[Authorize]` on a hub method; pass `|_| true` to require authentication only).
    /// Anyone else gets the completion error ASP.NET Core sends: "Failed to invoke
    /// '{name}' because user is unauthorized".
    #[must_use]
    pub fn authorize_method<F>(mut self, name: &str, policy: F) -> Self
    where
        F: Fn(&Principal) -> bool + Send + Sync + 'static,
    {
        self.auth
            .method_policies
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(Arc::new(policy));
        self
    }

    /// Make `value` available to hub methods as an [`Extension<T>`](crate::Extension)
    /// parameter. A second value of the same type replaces the first.
    #[must_use]
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Start the hub: subscribe to the backplane and make it ready to serve.
    ///
    /// # Errors
    ///
    /// [`HubError::Backplane`] if subscribing to the backplane failed.
    pub async fn build(self) -> Result<Hub, HubError> {
        let backplane = self
            .backplane
            .unwrap_or_else(|| Arc::new(MemoryBackplane::new()));
        let manager = BackplaneHubLifetimeManager::with_options(
            self.name.clone(),
            backplane,
            self.manager_options,
        )
        .await?;
        let (shutdown, _) = watch::channel(false);
        let (connections, _) = watch::channel(0);
        let options = self.options.normalized();
        let hub_label = [("hub", self.name.clone())];
        let tokens = Arc::new(
            TokenStore::new(
                options.negotiate_timeout,
                options.max_pending_negotiations,
                ::metrics::gauge!(crate::metrics::NEGOTIATE_TOKENS_OUTSTANDING, &hub_label),
            )
            .with_node_tag(manager.node_tag()),
        );
        let invocation_duration =
            ::metrics::histogram!(crate::metrics::INVOCATION_DURATION, &hub_label);
        TokenStore::spawn_sweeper(&tokens);
        let services = Arc::new(HubServices {
            manager: Arc::new(manager),
            extensions: self.extensions,
            serial_invocations: options.max_parallel_invocations <= 1,
            upload_buffer: self.stream_options.upload_buffer,
        });
        let shared = HubShared {
            tokens,
            reattachments: Default::default(),
            http_connections: Arc::new(HttpConnections::default()),
            name: self.name,
            methods: self.methods,
            on_connected: self.on_connected,
            on_disconnected: self.on_disconnected,
            options,
            stream_options: self.stream_options,
            services,
            user_id: self.user_id,
            auth: self.auth,
            shutdown,
            connections,
            invocation_duration,
        };
        Ok(Hub {
            shared: Arc::new(shared),
        })
    }
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<&str> = self.methods.keys().map(|name| &**name).collect();
        methods.sort_unstable();
        f.debug_struct("HubBuilder")
            .field("name", &self.name)
            .field("methods", &methods)
            .field("options", &self.options)
            .field("backplane", &self.backplane)
            .finish_non_exhaustive()
    }
}

/// A running hub: mount it on a router with [`Hub::router`], send from anywhere with
/// [`Hub::context`], stop it with [`Hub::shutdown`]. Cloning gives another handle to the
/// same hub.
#[derive(Clone)]
pub struct Hub {
    /// Everything connections and endpoints share.
    shared: Arc<HubShared>,
}

/// The state of one hub, shared by its endpoints and connections.
pub(crate) struct HubShared {
    /// The hub's name on the backplane.
    pub(crate) name: String,
    /// Methods by registered name.
    pub(crate) methods: HashMap<Box<str>, Arc<dyn ErasedHandler>>,
    /// See [`HubBuilder::on_connected`].
    pub(crate) on_connected: Option<Arc<dyn ErasedHandler>>,
    /// See [`HubBuilder::on_disconnected`].
    pub(crate) on_disconnected: Option<Arc<dyn ErasedHandler>>,
    /// Timeouts and limits.
    pub(crate) options: HubOptions,
    /// Limits of the streams a connection may run.
    pub(crate) stream_options: StreamOptions,
    /// The lifetime manager (connections, groups, users and the backplane) and what else
    /// hub method parameters reach.
    pub(crate) services: Arc<HubServices>,
    /// See [`HubBuilder::user_id`].
    pub(crate) user_id: Option<UserIdProvider>,
    /// See [`HubBuilder::authenticator`] and the rules after it.
    pub(crate) auth: AuthSettings,
    /// Connection tokens issued by negotiate.
    pub(crate) tokens: Arc<TokenStore>,
    /// Live connections with stateful reconnect, for a client that comes back on a new
    /// WebSocket.
    pub(crate) reattachments: crate::transport::websocket::Reattachments,
    /// The live Server-Sent Events and long-polling connections, by token: their later
    /// requests (POST sends, polls, DELETE) find their connection here.
    pub(crate) http_connections: Arc<HttpConnections>,
    /// Flipped to `true` once to close every connection (graceful shutdown).
    pub(crate) shutdown: watch::Sender<bool>,
    /// How many connections are running (handshaking or connected), every transport.
    pub(crate) connections: watch::Sender<usize>,
    /// How long its methods run, registered once so that recording is cheap.
    pub(crate) invocation_duration: ::metrics::Histogram,
}

impl HubShared {
    /// Authenticate a negotiate or connect request and apply the hub's rules; the answer
    /// to send instead when it is refused.
    pub(crate) async fn identify(&self, request: &Parts) -> Result<Identity, Response> {
        crate::auth::identify(
            &self.name,
            &self.auth,
            self.user_id.as_ref(),
            self.options.max_user_id_bytes,
            request,
        )
        .await
    }

    /// Look a method up by exact name, then ignoring ASCII case (as ASP.NET Core does).
    pub(crate) fn method(&self, name: &str) -> Option<&Arc<dyn ErasedHandler>> {
        self.methods.get(name).or_else(|| {
            self.methods
                .iter()
                .find(|(registered, _)| registered.eq_ignore_ascii_case(name))
                .map(|(_, handler)| handler)
        })
    }

    /// Whether graceful shutdown has begun.
    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Count a new connection until the returned guard is dropped, unless
    /// [`HubOptions::max_connections`] are running already.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<ConnectionCount> {
        let max = self.options.max_connections;
        let admitted = self.connections.send_if_modified(|count| {
            let room = *count < max;
            if room {
                *count += 1;
            }
            room
        });
        admitted.then(|| ConnectionCount { hub: self.clone() })
    }

    /// Whether [`HubOptions::max_connections`] connections are running.
    pub(crate) fn is_full(&self) -> bool {
        *self.connections.borrow() >= self.options.max_connections
    }
}

/// Counts one running connection; see [`HubShared::admit`].
pub(crate) struct ConnectionCount {
    /// The hub whose count this is.
    hub: Arc<HubShared>,
}

impl fmt::Debug for ConnectionCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionCount").finish_non_exhaustive()
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.hub.connections.send_modify(|count| *count -= 1);
    }
}

impl Hub {
    /// Start describing a hub called `name`. The name identifies the hub on the backplane,
    /// so every node of a deployment must use the same one for the same hub.
    pub fn builder(name: impl Into<String>) -> HubBuilder {
        HubBuilder {
            name: name.into(),
            methods: HashMap::new(),
            on_connected: None,
            on_disconnected: None,
            options: HubOptions::default(),
            stream_options: StreamOptions::default(),
            manager_options: ManagerOptions::default(),
            backplane: None,
            user_id: None,
            extensions: Extensions::new(),
            auth: AuthSettings::default(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<HubShared> {
        &self.shared
    }

    /// The hub's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The hub's options.
    pub fn options(&self) -> &HubOptions {
        &self.shared.options
    }

    /// Send to clients and manage groups from outside hub methods.
    pub fn context(&self) -> HubContext {
        HubContext::new(self.shared.services.manager.clone())
    }

    /// The state of this node's link to the backplane, for health endpoints.
    pub fn health(&self) -> BackplaneHealth {
        self.shared.services.manager.health()
    }

    /// The backplane the hub publishes through.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        self.shared.services.manager.backplane()
    }

    /// How many connections have completed their handshake on this node.
    pub fn connection_count(&self) -> usize {
        self.shared.services.manager.local_connection_count()
    }

    /// Close every connection gracefully: stop accepting new ones (negotiate and WebSocket
    /// requests get 503), send each client a Close message that allows it to reconnect
    /// (to another node, say), and wait until every connection has ended or
    /// [`HubOptions::shutdown_timeout`] has passed. Idempotent.
    ///
    /// This does not shut the backplane down, since several hubs may share it.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let mut connections = self.shared.connections.subscribe();
        let all_closed = connections.wait_for(|count| *count == 0);
        if tokio::time::timeout(self.shared.options.shutdown_timeout, all_closed)
            .await
            .is_err()
        {
            tracing::warn!(
                hub = %self.shared.name,
                remaining = *self.shared.connections.borrow(),
                timeout = ?self.shared.options.shutdown_timeout,
                "connections still open after the shutdown timeout"
            );
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("name", &self.shared.name)
            .field("connections", &self.connection_count())
            .field("manager", &self.shared.services.manager)
            .finish_non_exhaustive()
    }
}
