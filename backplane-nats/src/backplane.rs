//! [`NatsBackplane`]: one node, its tasks, and the [`Backplane`] contract.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use backplane_core::node::{HubReading, NodeRuntime, backend_error, run_reader};
use backplane_core::{Backplane, BackplaneError, EnvelopeKind, NodeId, Subscription};

use crate::context::{KIND, NodeContext};
use crate::options::NatsOptions;
use crate::publisher::{Route, SubjectWriter};
use crate::reader::{RESET_CAUSE, STORAGE, SubjectReader};
use crate::wire;

/// One node of a NATS JetStream backplane.
///
/// Holds one connection (async-nats multiplexes publishing, acknowledgements and every
/// hub's consumer on it). See the [crate docs](crate) for the design and the guarantees.
pub struct NatsBackplane {
    /// Identity, settings and connection, shared with the tasks.
    context: Arc<NodeContext>,
    /// The queue, subscriptions, tasks and shutdown (the core's), routed by subject.
    runtime: NodeRuntime<Route>,
}

impl NatsBackplane {
    /// Start a node: check the options, connect (proving the URL, credentials and TLS
    /// settings work), create the stream if it does not exist, and start the publisher
    /// task. Hubs are read from their first subscription on.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] for invalid options; [`BackplaneError::Backend`] if
    /// NATS cannot be reached, refuses the credentials, or JetStream refuses the stream
    /// (is JetStream enabled, `nats-server -js`? The user needs publish rights on
    /// `<prefix>.>` and `$JS.API.>`, and subscribe rights on `_INBOX.>`). A running node
    /// never gives up after this point.
    pub async fn connect(options: NatsOptions) -> Result<Self, BackplaneError> {
        options.validate()?;
        let context = Arc::new(NodeContext::connect(NodeId::random(), options).await?);
        let writer = SubjectWriter::new(context.clone());
        let runtime = NodeRuntime::start(context.node, &context.options.node, writer, KIND);
        tracing::debug!(node = %context.node, url = %context.options.redacted_url(), prefix = %context.options.prefix, "[Init] node started");
        Ok(Self { context, runtime })
    }

    /// The settings this node runs with.
    pub fn options(&self) -> &NatsOptions {
        &self.context.options
    }

    /// The subject `hub`'s envelopes travel on (`<prefix>.h<base64url(hub)>`).
    pub fn subject(&self, hub: &str) -> String {
        wire::subject(&self.context.options.prefix, hub)
    }

    fn route(&self, hub: &str) -> Route {
        self.runtime.route(hub, |hub| self.subject(hub).into())
    }
}

#[async_trait]
impl Backplane for NatsBackplane {
    fn node_id(&self) -> NodeId {
        self.context.node
    }

    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        let route = self.route(hub);
        self.runtime.publish(hub, None, kind, |_| route).await
    }

    async fn send_to(
        &self,
        to: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        let route = self.route(hub);
        self.runtime.publish(hub, Some(to), kind, |_| route).await
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        self.runtime
            .subscribe(hub, async |subscribers, stop| {
                let timeout = self.context.options.node.command_timeout;
                let started = SubjectReader::start(self.context.clone(), self.route(hub));
                let (reader, feed) = tokio::time::timeout(timeout, started)
                    .await
                    .map_err(|_| BackplaneError::Timeout(timeout))?
                    .map_err(|error| backend_error("starting to read the hub's subject", error))?;
                let reading = HubReading::new(
                    self.context.node,
                    hub,
                    subscribers,
                    stop,
                    self.context.options.node.reconnect_backoff,
                    STORAGE,
                    RESET_CAUSE,
                )
                .with_codec(self.context.codec.clone())
                .with_metrics(self.context.receive_metrics.clone());
                Ok(run_reader(reader, reading, feed))
            })
            .await
    }

    fn envelopes_rejected(&self) -> u64 {
        self.context.codec.rejected()
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn since_last_heard(&self) -> Option<std::time::Duration> {
        Some(self.context.receive_metrics.since_last_heard())
    }

    async fn shutdown(&self) -> Result<(), BackplaneError> {
        self.runtime.shutdown().await;
        // Whatever the server still holds for this connection is sent before it closes.
        let _ = self.context.client.flush().await;
        Ok(())
    }
}

impl Drop for NatsBackplane {
    fn drop(&mut self) {
        // Without an explicit shutdown, stop the tasks anyway (queued publishes are
        // still written).
        self.runtime.stop();
    }
}

impl fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("node_id", &self.context.node)
            .field("options", &self.context.options)
            .field("shut_down", &self.runtime.is_shut_down())
            .finish_non_exhaustive()
    }
}
