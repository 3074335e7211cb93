//! [`NodeRuntime`]: the lifecycle of one log-based node, whatever its backend: the
//! publish queue, each hub's subscriptions and reader task, the routes of hubs, and
//! shutdown.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::backplane::{BackplaneError, BackplaneEvent, Subscription};
use crate::envelope::EnvelopeKind;
use crate::id::NodeId;
use crate::metrics::PublishMetrics;
use crate::node::{BatchStore, NodeOptions, PublisherTask};
use crate::sequencing::{HubSubscribers, PublishQueue};
use crate::sync::lock;

/// The backend-neutral half of a node: a backend's [`Backplane`](crate::Backplane)
/// implementation delegates `publish`, `send_to`, `subscribe` and `shutdown` here and
/// adds only how a hub is routed and how its reader starts.
pub struct NodeRuntime<R> {
    /// Stamped on what this node publishes, and on logs.
    node: NodeId,
    /// Where publishes are numbered and queued for the publisher task.
    queue: Arc<PublishQueue<R>>,
    /// The subscriptions of each hub with a running reader task. Async, because a hub's
    /// first subscription holds it while the reader starts (a second subscription to
    /// the same hub waits instead of starting a second reader).
    hubs: tokio::sync::Mutex<HashMap<String, Arc<HubSubscribers>>>,
    /// Routes per hub, computed once (a key or subject built from the hub's name).
    routes: Mutex<HashMap<String, R>>,
    /// Tells the tasks to stop.
    stopping: watch::Sender<bool>,
    /// The publisher and reader tasks, awaited by shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Set by shutdown: later calls fail with `Shutdown`.
    shut_down: AtomicBool,
    /// Capacity of each subscription's event queue.
    subscription_capacity: usize,
}

impl<R: Clone + Send + 'static> NodeRuntime<R> {
    /// A node `node` refusing envelopes above `max_envelope_bytes`, with subscription
    /// queues of `subscription_capacity` events. Start its publisher task with
    /// [`NodeRuntime::spawn`] over [`NodeRuntime::queue`].
    pub fn new(node: NodeId, max_envelope_bytes: usize, subscription_capacity: usize) -> Self {
        Self {
            node,
            queue: Arc::new(PublishQueue::new(max_envelope_bytes)),
            hubs: tokio::sync::Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            stopping: watch::Sender::new(false),
            tasks: Mutex::new(Vec::new()),
            shut_down: AtomicBool::new(false),
            subscription_capacity,
        }
    }

    /// A node `node` running with `options`, its publisher task started and writing
    /// through `store` (its metrics labelled `kind`): what a backend's `connect` does
    /// once its connection is up.
    pub fn start<S: BatchStore<Route = R>>(
        node: NodeId,
        options: &NodeOptions,
        store: S,
        kind: &'static str,
    ) -> Self
    where
        R: Sync,
    {
        let runtime = Self::new(
            node,
            options.max_envelope_bytes,
            options.subscription_capacity,
        );
        let publisher = PublisherTask::new(node, runtime.queue(), store, options.publish_limits())
            .with_metrics(PublishMetrics::new(kind));
        runtime.spawn(publisher.run());
        runtime
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The publish queue, for the publisher task.
    pub fn queue(&self) -> Arc<PublishQueue<R>> {
        self.queue.clone()
    }

    /// Whether [`NodeRuntime::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Run `task` until it ends; shutdown awaits it.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|task| !task.is_finished());
        tasks.push(tokio::spawn(task));
    }

    /// The route of `hub`, made by `make` the first time.
    pub fn route(&self, hub: &str, make: impl FnOnce(&str) -> R) -> R {
        let mut routes = lock(&self.routes);
        if let Some(route) = routes.get(hub) {
            return route.clone();
        }
        let route = make(hub);
        routes.insert(hub.to_owned(), route.clone());
        route
    }

    /// Number and queue an envelope for `hub` (for every node, or only `destination`),
    /// and wait until the publisher task stored it.
    ///
    /// # Errors
    ///
    /// As [`PublishQueue::publish`].
    pub async fn publish(
        &self,
        hub: &str,
        destination: Option<NodeId>,
        kind: EnvelopeKind,
        route: impl FnOnce(&str) -> R,
    ) -> Result<(), BackplaneError> {
        let route = self.route(hub, route);
        self.queue
            .publish(self.node, hub, destination, kind, route)
            .await
    }

    /// A subscription to `hub`. Its first event is `Connected`. The hub's first
    /// subscription starts its reader: `start` gets the hub's subscribers and the stop
    /// signal and returns the reader task once reading has begun (from the log's
    /// current end), or why it could not.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Shutdown`] after shutdown, or whatever `start` failed with.
    pub async fn subscribe<F, Fut, T>(
        &self,
        hub: &str,
        start: F,
    ) -> Result<Subscription, BackplaneError>
    where
        F: FnOnce(Arc<HubSubscribers>, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = Result<T, BackplaneError>>,
        T: Future<Output = ()> + Send + 'static,
    {
        self.check_running()?;
        let (events, receiver) = mpsc::channel(self.subscription_capacity);
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
        let reader = start(subscribers.clone(), self.stopping.subscribe()).await?;
        hubs.insert(hub.to_owned(), subscribers);
        self.spawn(reader);
        tracing::debug!(node = %self.node, hub, "[Listener] subscribed");
        Ok(Subscription::new(hub, receiver))
    }

    /// Refuse new work, let the publisher write what is queued, end every subscription,
    /// and wait for every task.
    pub async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.stop();
        for subscribers in self.hubs.lock().await.drain().map(|(_, s)| s) {
            subscribers.close();
        }
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::warn!(node = %self.node, %error, "a backplane task panicked");
            }
        }
        tracing::debug!(node = %self.node, "backplane shut down");
    }

    /// Tell the tasks to stop without waiting for them (queued publishes are still
    /// written): what dropping a node that was not shut down does.
    pub fn stop(&self) {
        self.queue.shut_down();
        self.stopping.send_replace(true);
    }

    fn check_running(&self) -> Result<(), BackplaneError> {
        if self.is_shut_down() {
            Err(BackplaneError::Shutdown)
        } else {
            Ok(())
        }
    }
}

impl<R> fmt::Debug for NodeRuntime<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRuntime")
            .field("node", &self.node)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
