//! What a node's tasks share, how they connect, and how Redis errors are judged.

use std::fmt;

use backplane_core::{BackplaneError, EnvelopeCodec, NodeId};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RetryMethod};

use crate::options::RedisOptions;

/// This backplane's `backplane` label in metrics.
pub(crate) const KIND: &str = "redis";

/// A node's identity, settings and client, shared by its tasks.
pub(crate) struct NodeContext {
    /// This node's id, stamped on what it publishes and used to drop its own echoes.
    pub(crate) node: NodeId,
    /// The settings it runs with.
    pub(crate) options: RedisOptions,
    /// Opens connections (holds the parsed URL; never printed, it may hold a password).
    client: redis::Client,
    /// Signs what this node writes and verifies what it reads (with a cluster secret).
    pub(crate) codec: EnvelopeCodec,
    /// The node's reconnects and when its readers last heard from the server.
    pub(crate) receive_metrics: backplane_core::metrics::ReceiveMetrics,
}

/// What a connection is for: part of its `CLIENT SETNAME`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// Writes publish batches.
    Publisher,
    /// Reads one hub's stream (`XREAD BLOCK`, so never shared).
    Reader,
}

impl NodeContext {
    pub(crate) fn new(node: NodeId, options: RedisOptions) -> Result<Self, BackplaneError> {
        let client = options.client()?;
        Ok(Self {
            node,
            codec: EnvelopeCodec::new(options.cluster_secret.clone()),
            receive_metrics: backplane_core::metrics::ReceiveMetrics::new(KIND),
            options,
            client,
        })
    }

    /// A fresh connection for `role`, named `<client_name>-<role>-<node>`.
    ///
    /// # Errors
    ///
    /// The driver's error if Redis cannot be reached, refuses the credentials, or does
    /// not answer within `command_timeout`.
    pub(crate) async fn connect(&self, role: Role) -> Result<MultiplexedConnection, RedisError> {
        let options = &self.options;
        let response_timeout = match role {
            Role::Publisher => options.node.command_timeout,
            // A blocked read answers after block_timeout at the latest.
            Role::Reader => options.block_timeout + options.node.command_timeout,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.node.command_timeout))
            .set_response_timeout(Some(response_timeout));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let role = match role {
            Role::Publisher => "publisher",
            Role::Reader => "reader",
        };
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{}-{role}-{}", options.node.client_name, self.node))
            .query_async::<()>(&mut connection)
            .await?;
        Ok(connection)
    }
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContext")
            .field("node", &self.node)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Whether retrying on a fresh connection can help: connection failures, timeouts, and
/// a server that is loading its data or busy. Refusals (wrong type, no permission, out
/// of memory, failed authentication) are final.
pub(crate) fn is_transient(error: &RedisError) -> bool {
    if error.kind() == redis::ErrorKind::AuthenticationFailed {
        return false; // the driver says "reconnect", but new credentials are needed
    }
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.retry_method(),
            RetryMethod::Reconnect | RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry
        )
}
