//! [`RedisBackplane`]: one node, its tasks, and the [`Backplane`] contract.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use backplane_core::node::{HubReading, NodeRuntime, backend_error, run_reader};
use backplane_core::{Backplane, BackplaneError, EnvelopeKind, NodeId, Subscription};
use redis::aio::MultiplexedConnection;

use crate::context::{KIND, NodeContext, Role};
use crate::entry;
use crate::options::RedisOptions;
use crate::publisher::{StreamKey, StreamWriter};
use crate::reader::{RESET_CAUSE, STORAGE, StreamReader};

/// One node of a Redis backplane.
///
/// Holds one publishing connection, and one reading connection per subscribed hub
/// (`XREAD BLOCK` occupies its connection). See the [crate docs](crate) for the design
/// and the guarantees.
pub struct RedisBackplane {
    /// Identity, settings and client, shared with the tasks.
    context: Arc<NodeContext>,
    /// The queue, subscriptions, tasks and shutdown (the core's), routed by stream key.
    runtime: NodeRuntime<StreamKey>,
}

impl RedisBackplane {
    /// Start a node: check the options, connect the publishing connection (proving the
    /// URL and credentials work) and start the publisher task. Hubs are read from their
    /// first subscription on.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] for invalid options; [`BackplaneError::Backend`] if
    /// Redis cannot be reached or refuses the credentials (check the URL, the network,
    /// and the user's ACL: it needs `XADD XTRIM PEXPIRE XREAD XREVRANGE CLIENT MULTI
    /// EXEC` on the prefix's keys). A running node never gives up after this point.
    pub async fn connect(options: RedisOptions) -> Result<Self, BackplaneError> {
        options.validate()?;
        let context = Arc::new(NodeContext::new(NodeId::random(), options)?);
        let connection = context
            .connect(Role::Publisher)
            .await
            .map_err(|error| backend_error("connecting to Redis", &error))?;
        let writer = StreamWriter::new(context.clone(), connection);
        let runtime = NodeRuntime::start(context.node, &context.options.node, writer, KIND);
        tracing::debug!(node = %context.node, url = %context.options.redacted_url(), prefix = %context.options.key_prefix, "[Init] node started");
        Ok(Self { context, runtime })
    }

    /// The settings this node runs with.
    pub fn options(&self) -> &RedisOptions {
        &self.context.options
    }

    fn key(&self, hub: &str) -> StreamKey {
        self.runtime
            .route(hub, |hub| self.context.options.stream_key(hub).into())
    }

    /// A reading connection for `key`, and the id of its stream's newest entry (reading
    /// starts after it: the subscription receives what is published from now on).
    async fn start_reading(
        &self,
        key: &str,
    ) -> Result<(MultiplexedConnection, String), BackplaneError> {
        let timeout = self.context.options.node.command_timeout;
        let started = tokio::time::timeout(timeout, async {
            let mut connection = self.context.connect(Role::Reader).await?;
            let newest: redis::Value = redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut connection)
                .await?;
            Ok::<_, redis::RedisError>((connection, newest))
        });
        let (connection, newest) = started
            .await
            .map_err(|_| BackplaneError::Timeout(timeout))?
            .map_err(|error| backend_error("starting to read the hub's stream", &error))?;
        let last_id = entry::first_id(newest)
            .map_err(BackplaneError::backend)?
            .unwrap_or_else(|| "0-0".to_owned());
        Ok((connection, last_id))
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    fn node_id(&self) -> NodeId {
        self.context.node
    }

    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        let key = self.key(hub);
        self.runtime.publish(hub, None, kind, |_| key).await
    }

    async fn send_to(
        &self,
        to: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        let key = self.key(hub);
        self.runtime.publish(hub, Some(to), kind, |_| key).await
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        self.runtime
            .subscribe(hub, async |subscribers, stop| {
                let key = self.key(hub);
                let (connection, last_id) = self.start_reading(&key).await?;
                let reader = StreamReader::new(self.context.clone(), key, last_id);
                let options = &self.context.options;
                let reading = HubReading::new(
                    self.context.node,
                    hub,
                    subscribers,
                    stop,
                    options.node.reconnect_backoff,
                    STORAGE,
                    RESET_CAUSE,
                )
                .with_codec(self.context.codec.clone())
                .with_metrics(self.context.receive_metrics.clone());
                Ok(run_reader(reader, reading, connection))
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
        Ok(())
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        // Without an explicit shutdown, stop the tasks anyway (queued publishes are
        // still written).
        self.runtime.stop();
    }
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node_id", &self.context.node)
            .field("options", &self.context.options)
            .field("shut_down", &self.runtime.is_shut_down())
            .finish_non_exhaustive()
    }
}
