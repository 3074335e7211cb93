//! The contract every backplane implements, and what a subscription yields.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::envelope::{CodecError, Envelope, EnvelopeKind};
use crate::id::NodeId;

/// Moves envelopes between the nodes (server instances) of one deployment.
///
/// A backplane knows nothing about connections, groups or users: those live in the
/// [`HubLifetimeManager`](crate::HubLifetimeManager), written once for every backplane. A
/// backplane only has to:
///
/// - stamp each published envelope with its node id and the next sequence number for
///   that hub (starting at 1, no holes), so receivers can detect loss exactly
///   ([`sequencing::PublishQueue`](crate::sequencing::PublishQueue) does this, and
///   hands a backend ordered batches to write);
/// - deliver every envelope to every *other* node subscribed to the hub, in the order the
///   origin published them (order is per origin, not global), and never back to the
///   node that published it;
/// - report connection lifecycle on each subscription, and after a dropped connection
///   read back what it missed ([`sequencing::Tracker`](crate::sequencing::Tracker) and
///   [`sequencing::RepairTally`](crate::sequencing::RepairTally) drop duplicates, find
///   gaps and word the `Reconnected` report).
///
/// The trait is dyn-compatible, so a server can pick its backplane at run time and hold
/// an `Arc<dyn Backplane>`.
///
/// # Ordering contract
///
/// Envelopes published by one node for one hub arrive in the order their `publish` (or
/// `send_to`) futures were *first polled*. A single task that awaits each publish in turn
/// therefore sees its envelopes delivered in call order.
#[async_trait]
pub trait Backplane: Send + Sync + fmt::Debug + 'static {
    /// This node's identity, stamped on everything it publishes.
    fn node_id(&self) -> NodeId;

    /// Publish an envelope of `kind` for `hub` to every other node.
    ///
    /// Returns once the envelope has been handed over durably enough that the backplane
    /// will deliver it (for PostgreSQL: committed), or with an error; it never reports
    /// success for an envelope that will not be delivered. It may wait when receivers are
    /// behind (backpressure) instead of dropping.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Shutdown`] after [`Backplane::shutdown`]; otherwise a
    /// backend-specific error (too large, timed out, connection lost).
    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError>;

    /// Send an envelope of `kind` for `hub` to one node only.
    ///
    /// It shares the hub's sequence with [`Backplane::publish`] (other nodes may see and
    /// skip it), so ordering and loss detection work the same way.
    ///
    /// # Errors
    ///
    /// As for [`Backplane::publish`].
    async fn send_to(
        &self,
        node: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError>;

    /// Start receiving what other nodes publish for `hub`.
    ///
    /// The subscription's first event is [`BackplaneEvent::Connected`] once the node is
    /// listening; envelopes published by other nodes after that point are delivered. Each
    /// call creates an independent subscription.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Shutdown`] after shutdown, or a backend error if listening could
    /// not be set up.
    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError>;

    /// Stop this node: later publishes fail with [`BackplaneError::Shutdown`], every
    /// subscription ends (its stream yields `None`), and background work stops.
    ///
    /// # Errors
    ///
    /// A backend error if shutting down could not complete cleanly; the node is shut down
    /// regardless.
    async fn shutdown(&self) -> Result<(), BackplaneError>;

    /// Envelopes and notifications this node dropped since start because they failed
    /// verification against the cluster secret or their store did not confirm them
    /// (see [`EnvelopeCodec`](crate::EnvelopeCodec)). 0 for backplanes without a store
    /// anyone else can write to.
    fn envelopes_rejected(&self) -> u64 {
        0
    }

    /// What kind of backplane this is (`postgres`, `redis`, `nats`, `memory`): the
    /// `backplane` label of its metrics ([`crate::metrics`]). `custom` unless the
    /// backplane says.
    fn kind(&self) -> &'static str {
        "custom"
    }

    /// How long ago the receiving side last heard anything from the backend (a
    /// notification, a probe's answer, a read): a silent link shows here before any
    /// timeout declares it lost. `None` for backplanes with no backend to hear from.
    fn since_last_heard(&self) -> Option<Duration> {
        None
    }
}

/// The future an `async_trait` method returns.
type BoxedFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[async_trait]
impl<B: Backplane + ?Sized> Backplane for Arc<B> {
    fn node_id(&self) -> NodeId {
        (**self).node_id()
    }

    // The hot paths hand on the inner backplane's future as it is, rather than boxing a
    // second future around it (`async fn` here would allocate twice per publish).
    fn publish<'life0, 'life1, 'async_trait>(
        &'life0 self,
        hub: &'life1 str,
        kind: EnvelopeKind,
    ) -> BoxedFuture<'async_trait, Result<(), BackplaneError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        (**self).publish(hub, kind)
    }

    fn send_to<'life0, 'life1, 'async_trait>(
        &'life0 self,
        node: NodeId,
        hub: &'life1 str,
        kind: EnvelopeKind,
    ) -> BoxedFuture<'async_trait, Result<(), BackplaneError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        (**self).send_to(node, hub, kind)
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        (**self).subscribe(hub).await
    }

    async fn shutdown(&self) -> Result<(), BackplaneError> {
        (**self).shutdown().await
    }

    fn envelopes_rejected(&self) -> u64 {
        (**self).envelopes_rejected()
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn since_last_heard(&self) -> Option<Duration> {
        (**self).since_last_heard()
    }
}

/// Something a subscription reports: an envelope, or a change in the backplane's link.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BackplaneEvent {
    /// An envelope published by another node.
    Envelope(Arc<Envelope>),
    /// The node is listening. Always the first event of a subscription.
    Connected,
    /// The link to the other nodes is down; envelopes published meanwhile are not lost if
    /// the backplane can repair the gap, which [`BackplaneEvent::Reconnected`] reports.
    Disconnected {
        /// Why, for logs and health checks.
        reason: String,
    },
    /// The link is back after [`BackplaneEvent::Disconnected`], or a sequence gap was
    /// detected while connected; says whether the envelopes missed meanwhile were recovered.
    Reconnected {
        /// What happened to the envelopes published while the link was down.
        gap: GapRepair,
    },
    /// The subscriber fell behind and `missed` envelopes were dropped for it (only from
    /// backplanes whose queue policy drops rather than waits; see each backplane's docs).
    Lagged {
        /// How many envelopes were dropped.
        missed: u64,
    },
}

/// The outcome of recovering envelopes missed during a disconnection or a sequence gap.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapRepair {
    /// Every missed envelope was recovered and delivered, in order, exactly once.
    Repaired {
        /// How many missed envelopes were recovered (0 if nothing was missed).
        recovered: u64,
    },
    /// Some missed envelopes could not be recovered (for example, already deleted by
    /// retention); everything recoverable was delivered.
    Unrepairable {
        /// How many envelopes were recovered anyway.
        recovered: u64,
        /// How many are known to be lost.
        missing: u64,
        /// Why, for logs.
        detail: String,
    },
}

/// The receiving end of [`Backplane::subscribe`]: a bounded stream of [`BackplaneEvent`]s.
///
/// Ends (yields `None`) when the backplane shuts down.
pub struct Subscription {
    /// The hub this subscription receives envelopes for, for diagnostics.
    hub: String,
    /// Bounded, so a slow subscriber pushes back on the backplane instead of growing
    /// memory without limit.
    events: mpsc::Receiver<BackplaneEvent>,
}

impl Subscription {
    /// Wrap the receiving half of a channel a backplane feeds for `hub`.
    pub fn new(hub: impl Into<String>, events: mpsc::Receiver<BackplaneEvent>) -> Self {
        Self {
            hub: hub.into(),
            events,
        }
    }

    /// The hub this subscription receives envelopes for.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The next event, or `None` once the backplane has shut down.
    pub async fn recv(&mut self) -> Option<BackplaneEvent> {
        self.events.recv().await
    }

    /// Poll for the next event (for use in hand-written futures).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<BackplaneEvent>> {
        self.events.poll_recv(cx)
    }
}

impl futures_util::Stream for Subscription {
    type Item = BackplaneEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().events.poll_recv(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

/// Why a backplane operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The node was shut down.
    #[error("backplane is shut down")]
    Shutdown,
    /// The envelope is larger than this backplane can carry.
    #[error("envelope of {size} bytes exceeds the backplane limit of {limit} bytes")]
    TooLarge {
        /// Encoded size of the envelope.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The operation did not complete in time.
    #[error("backplane operation timed out after {0:?}")]
    Timeout(Duration),
    /// The backend is unreachable and the circuit is open: publishes fail at once,
    /// without being queued or numbered, until it is reachable again (see
    /// [`CircuitBreaker`](crate::CircuitBreaker)). Nothing was sent; the caller may retry
    /// later.
    #[error(
        "backplane unavailable (circuit open): {reason}; publishes fail at once until it is reachable again"
    )]
    Unavailable {
        /// Why the circuit opened (the backend's last error), for logs.
        reason: String,
    },
    /// The publish queue holds as many envelopes as it may: the backend is not keeping
    /// up. Nothing was sent or numbered; the caller may retry later.
    #[error("backplane publish queue is full ({limit} envelopes waiting); try again later")]
    QueueFull {
        /// The queue's limit.
        limit: usize,
    },
    /// An envelope could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The configuration is invalid.
    #[error("invalid backplane configuration: {0}")]
    Config(String),
    /// The backend (database, broker) reported an error.
    #[error("backplane backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BackplaneError {
    /// Wrap a backend's error.
    pub fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend(error.into())
    }
}
