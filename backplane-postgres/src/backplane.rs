//! [`PostgresBackplane`]: one node, its background tasks, and the [`Backplane`] contract.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backplane_core::{Backplane, BackplaneError, EnvelopeKind, NodeId, Subscription};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::context::{NodeContext, lock};
use crate::install::install_schema;
use crate::listener::{self, Command, Listener};
use crate::options::PostgresOptions;
use crate::publisher::flush::{self, Flusher, FlusherLink};
use crate::publisher::{self, PublishQueue, Publisher};
use crate::retention;

/// One node of a PostgreSQL backplane.
///
/// Each node holds up to five connections: one publishing, one confirming flushes (with
/// [`SynchronousCommit::NotifyBeforeFlush`](crate::SynchronousCommit), the default), one
/// dedicated to LISTEN, one reading rows for the listener (opened on first use), and one
/// for retention (opened at its first pass). Several hubs share a node (subscribe once per hub). See the
/// [crate docs](crate) for the design and the guarantees.
pub struct PostgresBackplane {
    /// Identity, settings and caches shared with the tasks.
    shared: Arc<NodeContext>,
    /// Where publishes are numbered and queued.
    queue: Arc<PublishQueue>,
    /// Requests to the listener task.
    listener: mpsc::Sender<Command>,
    /// Tells the tasks to stop.
    stop: watch::Sender<bool>,
    /// The background tasks, awaited by shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set by shutdown.
    shut_down: AtomicBool,
}

impl PostgresBackplane {
    /// Start a node: connect (publishing and listening connections), create the schema
    /// if missing, and start the background tasks. Messages tables are created on first
    /// use of each hub.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] for invalid options; [`BackplaneError::Backend`] if the
    /// database cannot be reached or the schema cannot be created. A running node never
    /// gives up after this point: it reconnects as long as it lives.
    pub async fn connect(options: PostgresOptions) -> Result<Self, BackplaneError> {
        options.validate()?;
        let shared = Arc::new(NodeContext::new(NodeId::random(), options));
        let node = shared.node;
        let publisher_client = publisher::open(&shared).await?;
        install_schema(&publisher_client, &shared.options.schema_name).await?;
        let listen = listener::open(&shared).await?;

        let flusher = if shared.options.synchronous_commit.confirms_flush() {
            Some(flush::open_checked(&shared).await?)
        } else {
            None
        };
        tracing::debug!(%node, schema = %shared.options.schema_name, "[Init] node started");

        let queue = Arc::new(
            PublishQueue::new(shared.options.max_envelope_bytes)
                .with_max_queued(shared.options.max_queued_publishes),
        );
        let (stop, stopped) = watch::channel(false);
        let (commands, command_rx) = mpsc::channel(64);
        let mut tasks = Vec::with_capacity(4);
        let flusher_link = flusher.map(|client| {
            let (committed, committed_rx) = mpsc::unbounded_channel();
            let lost = Arc::new(Mutex::new(Vec::new()));
            tasks.push(tokio::spawn(
                Flusher::new(shared.clone(), committed_rx, lost.clone(), client).run(),
            ));
            FlusherLink { committed, lost }
        });
        tasks.extend([
            tokio::spawn(
                Publisher::new(
                    shared.clone(),
                    queue.clone(),
                    Some(publisher_client),
                    flusher_link,
                )
                .run(),
            ),
            tokio::spawn(Listener::new(shared.clone(), command_rx, stopped.clone()).run(listen)),
            tokio::spawn(retention::run(shared.clone(), stopped)),
        ]);
        Ok(Self {
            shared,
            queue,
            listener: commands,
            stop,
            tasks: Mutex::new(tasks),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The settings this node runs with.
    pub fn options(&self) -> &PostgresOptions {
        &self.shared.options
    }

    fn check_running(&self) -> Result<(), BackplaneError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(BackplaneError::Shutdown)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Backplane for PostgresBackplane {
    fn node_id(&self) -> NodeId {
        self.shared.node
    }

    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        publisher::publish(&self.queue, &self.shared, hub, None, kind).await
    }

    async fn send_to(
        &self,
        node: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        publisher::publish(&self.queue, &self.shared, hub, Some(node), kind).await
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        self.check_running()?;
        let table = self.shared.table_for(hub)?;
        let (events, receiver) = mpsc::channel(self.shared.options.subscription_capacity);
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            hub: hub.to_owned(),
            table,
            events,
            reply,
        };
        // Both steps wait while the listener is reconnecting (its command queue is not
        // read meanwhile), but not forever.
        let timeout = self.shared.options.command_timeout;
        let subscribed = tokio::time::timeout(timeout, async {
            self.listener
                .send(command)
                .await
                .map_err(|_| BackplaneError::Shutdown)?;
            answer.await.map_err(|_| BackplaneError::Shutdown)?
        });
        match subscribed.await {
            Ok(Ok(())) => Ok(Subscription::new(hub, receiver)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(BackplaneError::Timeout(timeout)),
        }
    }

    async fn shutdown(&self) -> Result<(), BackplaneError> {
        self.shut_down.store(true, Ordering::Release);
        self.queue.shut_down();
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::warn!(node = %self.shared.node, %error, "a backplane task panicked");
            }
        }
        tracing::debug!(node = %self.shared.node, "backplane shut down");
        Ok(())
    }

    fn envelopes_rejected(&self) -> u64 {
        self.shared.codec.rejected()
    }

    fn kind(&self) -> &'static str {
        crate::context::KIND
    }

    fn since_last_heard(&self) -> Option<Duration> {
        Some(self.shared.receive_metrics.since_last_heard())
    }
}

impl Drop for PostgresBackplane {
    fn drop(&mut self) {
        // Without an explicit shutdown, stop the tasks anyway (queued publishes are
        // still written).
        self.queue.shut_down();
        let _ = self.stop.send(true);
    }
}

impl fmt::Debug for PostgresBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackplane")
            .field("node_id", &self.shared.node)
            .field("schema", &self.shared.options.schema_name)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
