//! What the listener task holds: its subscriptions per LISTENed channel, the sequence
//! tracker, the reader connection, and the requests it takes. Every other file of the
//! listener adds methods to [`Listener`] for one concern.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use backplane_core::sequencing::{RepairTally, Tracker};
use backplane_core::{BackplaneError, BackplaneEvent, Jitter};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;

use crate::connect;
use crate::context::NodeContext;
use crate::names::TableNames;

/// The listening connection's socket half, driven by this task.
pub(crate) type ListenConnection = connect::PgConnection;

/// A request to the listener task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start delivering `hub`'s envelopes to `events`; reply once LISTEN is active.
    Subscribe {
        hub: String,
        table: Arc<TableNames>,
        events: mpsc::Sender<BackplaneEvent>,
        reply: oneshot::Sender<Result<(), BackplaneError>>,
    },
}

/// Why serving stopped.
#[derive(Debug)]
pub(super) enum Interrupt {
    /// The node is shutting down.
    Shutdown,
    /// The listening (or reading) connection failed; reconnect and catch up.
    Lost(String),
}

/// One LISTENed channel: a table and the subscriptions of the hubs stored in it.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) table: Arc<TableNames>,
    /// Subscriptions per hub (several hubs can share a table when their slugs collide).
    pub(super) hubs: HashMap<String, Vec<mpsc::Sender<BackplaneEvent>>>,
    /// Database time when this channel was first LISTENed: catch-up never reads rows of
    /// unknown origins from before it.
    pub(super) listening_since: SystemTime,
}

/// What happened to the envelopes of one gap or one catch-up, per hub.
pub(super) type Repair = RepairTally;

/// Where missing envelopes should have been, for [`RepairTally::outcome`].
pub(super) const STORAGE: &str = "the table";

/// The listener task's state.
pub(crate) struct Listener {
    pub(super) shared: Arc<NodeContext>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) channels: HashMap<String, Channel>,
    pub(super) tracker: Tracker,
    /// The connection for table reads, opened on demand.
    pub(super) reader: Option<Client>,
    /// Database time when the listener was last known to be listening with everything
    /// before it received; catch-up for unknown origins starts there (minus a margin).
    pub(super) alive_at: SystemTime,
    /// Notifications read from the socket while waiting for a query on the listening
    /// connection (LISTEN, probe); processed before anything newer.
    pub(super) pending: VecDeque<tokio_postgres::Notification>,
    /// Spreads reconnect attempts of nodes that lost the database together.
    pub(super) jitter: Jitter,
}

impl Listener {
    pub(crate) fn new(
        shared: Arc<NodeContext>,
        commands: mpsc::Receiver<Command>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            jitter: Jitter::new(shared.node),
            shared,
            commands,
            shutdown,
            channels: HashMap::new(),
            tracker: Tracker::default(),
            reader: None,
            alive_at: SystemTime::now(),
            pending: VecDeque::new(),
        }
    }

    pub(super) fn is_subscribed(&self, channel: &str, hub: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| c.hubs.contains_key(hub))
    }
}
