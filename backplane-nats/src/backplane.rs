//! [`NatsBackplane`]: one node, its tasks, and the [`Backplane`] contract.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backplane_core::sequencing::HubSubscribers;
use backplane_core::{
    Backplane, BackplaneError, BackplaneEvent, EnvelopeKind, NodeId, Subscription,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::context::{NodeContext, backend};
use crate::options::NatsOptions;
use crate::publisher::{Publisher, Queue, Route};
use crate::reader::HubReader;
use crate::wire;

/// One node of a NATS JetStream backplane.
///
/// Holds one connection (async-nats multiplexes publishing, acknowledgements and every
/// hub's consumer on it). See the [crate docs](crate) for the design and the guarantees.
pub struct NatsBackplane {
    /// Identity, settings and connection, shared with the tasks.
    context: Arc<NodeContext>,
    /// Where publishes are numbered and queued (the core's queue).
    queue: Arc<Queue>,
    /// The subscriptions of each hub with a running reader task.
    hubs: tokio::sync::Mutex<HashMap<String, Arc<HubSubscribers>>>,
    /// Subjects per hub, computed once.
    subjects: Mutex<HashMap<String, Route>>,
    /// Tells the tasks to stop.
    stop: watch::Sender<bool>,
    /// The publisher and reader tasks, awaited by shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set by shutdown.
    shut_down: AtomicBool,
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
        let queue = Arc::new(Queue::new(context.options.max_envelope_bytes));
        let publisher = Publisher::new(context.clone(), queue.clone());
        tracing::debug!(node = %context.node, url = %context.options.redacted_url(), prefix = %context.options.prefix, "[Init] node started");
        Ok(Self {
            context,
            queue,
            hubs: tokio::sync::Mutex::new(HashMap::new()),
            subjects: Mutex::new(HashMap::new()),
            stop: watch::Sender::new(false),
            tasks: Mutex::new(vec![tokio::spawn(publisher.run())]),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The settings this node runs with.
    pub fn options(&self) -> &NatsOptions {
        &self.context.options
    }

    /// The subject `hub`'s envelopes travel on (`<prefix>.h<base64url(hub)>`).
    pub fn subject(&self, hub: &str) -> String {
        wire::subject(&self.context.options.prefix, hub)
    }

    fn check_running(&self) -> Result<(), BackplaneError> {
        if self.shut_down.load(Ordering::Acquire) {
            Err(BackplaneError::Shutdown)
        } else {
            Ok(())
        }
    }

    fn route(&self, hub: &str) -> Route {
        let mut subjects = self.subjects.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(subject) = subjects.get(hub) {
            return subject.clone();
        }
        let subject: Route = self.subject(hub).into();
        subjects.insert(hub.to_owned(), subject.clone());
        subject
    }
}

#[async_trait]
impl Backplane for NatsBackplane {
    fn node_id(&self) -> NodeId {
        self.context.node
    }

    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        let route = self.route(hub);
        self.queue
            .publish(self.context.node, hub, None, kind, route)
            .await
    }

    async fn send_to(
        &self,
        node: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        let route = self.route(hub);
        self.queue
            .publish(self.context.node, hub, Some(node), kind, route)
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
        let subscribers = Arc::new(HubSubscribers::default());
        subscribers.add(events);
        let timeout = self.context.options.command_timeout;
        let started = tokio::time::timeout(
            timeout,
            HubReader::start(
                self.context.clone(),
                hub,
                self.route(hub),
                subscribers.clone(),
                self.stop.subscribe(),
            ),
        )
        .await
        .map_err(|_| BackplaneError::Timeout(timeout))?;
        let (reader, feed) =
            started.map_err(|error| backend("starting to read the hub's subject", error))?;
        hubs.insert(hub.to_owned(), subscribers);
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|task| !task.is_finished());
        tasks.push(tokio::spawn(reader.run(feed)));
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
        // Whatever the server still holds for this connection is sent before it closes.
        let _ = self.context.client.flush().await;
        tracing::debug!(node = %self.context.node, "backplane shut down");
        Ok(())
    }
}

impl Drop for NatsBackplane {
    fn drop(&mut self) {
        // Without an explicit shutdown, stop the tasks anyway (queued publishes are
        // still written).
        self.queue.shut_down();
        self.stop.send_replace(true);
    }
}

impl fmt::Debug for NatsBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBackplane")
            .field("node_id", &self.context.node)
            .field("options", &self.context.options)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
