//! State every task of one node shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use backplane_core::metrics::{PublishMetrics, ReceiveMetrics};
use backplane_core::{BackplaneError, CircuitBreaker, EnvelopeCodec, NodeId};

use crate::install::Installed;
use crate::names::TableNames;
use crate::notification::MAX_NOTIFICATION;
use crate::options::PostgresOptions;

/// The longest hub name accepted: a reference notification names the hub and must fit
/// PostgreSQL's 7,999-byte payload limit next to its header and sequence range.
pub(crate) const MAX_HUB_NAME: usize = MAX_NOTIFICATION - 150;

/// This backplane's `backplane` label in metrics.
pub(crate) const KIND: &str = "postgres";

/// Identity, settings and caches of one node.
#[derive(Debug)]
pub(crate) struct NodeContext {
    /// This node's id.
    pub(crate) node: NodeId,
    /// Settings, validated.
    pub(crate) options: PostgresOptions,
    /// Tables known to exist.
    pub(crate) installed: Installed,
    /// Table names per hub, so the slug generator runs once per hub.
    tables: Mutex<HashMap<String, Arc<TableNames>>>,
    /// Signs what this node writes and verifies what it reads (with a cluster secret);
    /// counts what it drops.
    pub(crate) codec: EnvelopeCodec,
    /// Open while the database does not answer: publishes fail at once.
    pub(crate) circuit: CircuitBreaker,
    /// Batches committed, their sizes and commit times (no-ops without a recorder).
    pub(crate) publish_metrics: PublishMetrics,
    /// The listener's reconnects, and when it last heard from the database.
    pub(crate) receive_metrics: ReceiveMetrics,
}

impl NodeContext {
    pub(crate) fn new(node: NodeId, options: PostgresOptions) -> Self {
        Self {
            node,
            codec: EnvelopeCodec::new(options.cluster_secret.clone()),
            circuit: CircuitBreaker::new(options.circuit_cooldown),
            options,
            installed: Installed::default(),
            tables: Mutex::new(HashMap::new()),
            publish_metrics: PublishMetrics::new(KIND),
            receive_metrics: ReceiveMetrics::new(KIND),
        }
    }

    /// The table names of `hub`.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] for a hub name that is empty or too long, or a slug the
    /// generator made that cannot name a table.
    pub(crate) fn table_for(&self, hub: &str) -> Result<Arc<TableNames>, BackplaneError> {
        if let Some(names) = lock(&self.tables).get(hub) {
            return Ok(names.clone());
        }
        if hub.is_empty() || hub.len() > MAX_HUB_NAME {
            return Err(BackplaneError::Config(format!(
                "hub names must be 1 to {MAX_HUB_NAME} bytes long, got {} bytes",
                hub.len()
            )));
        }
        if hub.contains('\0') {
            // PostgreSQL text cannot hold NUL: the row and notification would fail, and
            // take the rest of their batch with them.
            return Err(BackplaneError::Config(
                "hub names must not contain NUL characters".into(),
            ));
        }
        let slug = (self.options.table_slug_generator)(hub);
        let names = TableNames::new(
            &self.options.schema_name,
            &slug,
            &self.options.channel_name_generator,
        )?;
        let mut tables = lock(&self.tables);
        // The listener keys tables by channel: two tables on one channel would have
        // their notifications read against the wrong table.
        if let Some(other) = tables
            .values()
            .find(|other| other.channel == names.channel && other.qualified != names.qualified)
        {
            return Err(BackplaneError::Config(format!(
                "hub {hub:?} would use notification channel {:?}, which table {} already uses; the channel name generator must give every table its own channel",
                names.channel, other.qualified
            )));
        }
        let names = Arc::new(names);
        tables.insert(hub.to_owned(), names.clone());
        Ok(names)
    }
}

pub(crate) use backplane_core::lock;
