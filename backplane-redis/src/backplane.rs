//! [`RedisBackplane`]: one node, its tasks, and the [`Backplane`] contract.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backplane_core::sequencing::HubSubscribers;
use backplane_core::{
    Backplane, BackplaneError, BackplaneEvent, EnvelopeKind, NodeId, Subscription,
};
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::context::{NodeContext, Role, backend};
use crate::entry;
use crate::options::RedisOptions;
use crate::publisher::{Publisher, Queue, StreamKey};
use crate::reader::HubReader;

/// One node of a Redis backplane.
///
/// Holds one publishing connection, and one reading connection per subscribed hub
/// (`XREAD BLOCK` occupies its connection). See the [crate docs](crate) for the design
/// and the guarantees.
pub struct RedisBackplane {
    /// Identity, settings and client, shared with the tasks.
    context: Arc<NodeContext>,
    /// Where publishes are numbered and queued (the core's queue).
    queue: Arc<Queue>,
    /// The subscriptions of each hub with a running reader task.
    hubs: tokio::sync::Mutex<HashMap<String, Arc<HubSubscribers>>>,
    /// Stream keys per hub, computed once.
    keys: Mutex<HashMap<String, StreamKey>>,
    /// Tells the tasks to stop.
    stop: watch::Sender<bool>,
    /// The publisher and reader tasks, awaited by shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set by shutdown.
    shut_down: AtomicBool,
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
            .map_err(|error| backend("connecting to Redis", &error))?;
        let queue = Arc::new(Queue::new(context.options.max_envelope_bytes));
        let publisher = Publisher::new(context.clone(), queue.clone(), connection);
        tracing::debug!(node = %context.node, url = %context.options.redacted_url(), prefix = %context.options.key_prefix, "[Init] node started");
        Ok(Self {
            context,
            queue,
            hubs: tokio::sync::Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            stop: watch::Sender::new(false),
            tasks: Mutex::new(vec![tokio::spawn(publisher.run())]),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The settings this node runs with.
    pub fn options(&self) -> &RedisOptions {
        &self.context.options
    }

    fn check_running(&self) -> Result<(), BackplaneError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(BackplaneError::Shutdown)
        } else {
            Ok(())
        }
    }

    fn key(&self, hub: &str) -> StreamKey {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = keys.get(hub) {
            return key.clone();
        }
        let key: StreamKey = self.context.options.stream_key(hub).into();
        keys.insert(hub.to_owned(), key.clone());
        key
    }

    /// A reading connection for `key`, and the id of its stream's newest entry (reading
    /// starts after it: the subscription receives what is published from now on).
    async fn start_reading(
        &self,
        key: &str,
    ) -> Result<(MultiplexedConnection, String), BackplaneError> {
        let timeout = self.context.options.command_timeout;
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
            .map_err(|error| backend("starting to read the hub's stream", &error))?;
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
        self.queue
            .publish(self.context.node, hub, None, kind, key)
            .await
    }

    async fn send_to(
        &self,
        node: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        let key = self.key(hub);
        self.queue
            .publish(self.context.node, hub, Some(node), kind, key)
            .await
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        self.check_running()?;
        let (events, receiver) = mpsc::channel(self.context.options.subscription_capacity);
        // A fresh queue has room for its first event.
        let _ = events.try_send(BackplaneEvent::Connected);
        let mut hubs = self.hubs.lock().await;
        self.check_running()?;
        if let Some(subscribers) = hubs.get(hub)
            && subscribers.add(events.clone())
        {
            return Ok(Subscription::new(hub, receiver));
        }
        let key = self.key(hub);
        let (connection, last_id) = self.start_reading(&key).await?;
        let subscribers = Arc::new(HubSubscribers::default());
        subscribers.add(events);
        hubs.insert(hub.to_owned(), subscribers.clone());
        let reader = HubReader::new(
            self.context.clone(),
            hub.to_owned(),
            key,
            subscribers,
            last_id,
            self.stop.subscribe(),
        );
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|task| !task.is_finished());
        tasks.push(tokio::spawn(reader.run(connection)));
        tracing::debug!(node = %self.context.node, hub, "[Listener] subscribed");
        Ok(Subscription::new(hub, receiver))
    }

    fn envelopes_rejected(&self) -> u64 {
        self.context.codec.rejected()
    }

    async fn shutdown(&self) -> Result<(), BackplaneError> {
        self.shut_down.store(true, Ordering::Release);
        self.queue.shut_down();
        self.stop.send_replace(true);
        for subscribers in self.hubs.lock().await.drain().map(|(_, s)| s) {
            subscribers.close();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::warn!(node = %self.context.node, %error, "a backplane task panicked");
            }
        }
        tracing::debug!(node = %self.context.node, "backplane shut down");
        Ok(())
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        // Without an explicit shutdown, stop the tasks anyway (queued publishes are
        // still written).
        self.queue.shut_down();
        self.stop.send_replace(true);
    }
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node_id", &self.context.node)
            .field("options", &self.context.options)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
