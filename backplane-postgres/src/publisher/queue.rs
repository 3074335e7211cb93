//! The publish queue: `publish` numbers its envelope and queues it on its first poll (in
//! the core's `PublishQueue`), routed to its hub's table, then waits for its commit.

use std::sync::Arc;

use backplane_core::{BackplaneError, EnvelopeKind, NodeId};

use crate::context::NodeContext;
use crate::names::TableNames;

/// Publishes waiting for the publisher task, numbered by the core's queue; each routed
/// to its hub's table.
pub(crate) type PublishQueue = backplane_core::sequencing::PublishQueue<Arc<TableNames>>;

/// A numbered envelope waiting to be written, with its table.
pub(crate) type Pending = backplane_core::sequencing::Pending<Arc<TableNames>>;

/// Number, queue and wait for the commit of one envelope (see
/// [`backplane_core::sequencing::PublishQueue::publish`]).
pub(crate) async fn publish(
    queue: &PublishQueue,
    shared: &NodeContext,
    hub: &str,
    destination: Option<NodeId>,
    kind: EnvelopeKind,
) -> Result<(), BackplaneError> {
    let table = shared.table_for(hub)?;
    // While the database does not answer, fail at once instead of queueing behind a
    // batch that waits out the command timeout.
    shared.circuit.admit()?;
    queue
        .publish(shared.node, hub, destination, kind, table)
        .await
}
