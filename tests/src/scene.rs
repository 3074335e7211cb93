//! The scenes the PostgreSQL backplane's fault tests set up: two nodes on a schema of their
//! own ([`TwoNodes`]), and a node that reaches the database through a proxy the test can
//! partition ([`behind_proxy`]).

use std::sync::Arc;

use backplane_core::{Backplane, Subscription};
use backplane_postgres::PostgresBackplane;

use crate::events::subscribed;
use crate::{CuttingProxy, TestSchema};

/// Two nodes on a schema of their own: the scene of most fault tests.
#[derive(Debug)]
pub struct TwoNodes {
    /// The test's schema, dropped by [`TwoNodes::finish`].
    pub schema: TestSchema,
    /// The first node, which publishes.
    pub sender: Arc<PostgresBackplane>,
    /// The second node, which subscribes.
    pub receiver: Arc<PostgresBackplane>,
}

impl TwoNodes {
    /// Two nodes on a new schema labelled `label`.
    ///
    /// # Panics
    ///
    /// Panics if a node cannot start.
    pub async fn start(label: &str) -> Self {
        let schema = TestSchema::create(label).await;
        let nodes = schema.nodes(2).await;
        let (sender, receiver) = (nodes[0].clone(), nodes[1].clone());
        TwoNodes {
            schema,
            sender,
            receiver,
        }
    }

    /// Shut both nodes down, then drop the schema.
    ///
    /// # Panics
    ///
    /// Panics if a node fails to shut down or the schema cannot be dropped.
    pub async fn finish(self) {
        for node in [&self.sender, &self.receiver] {
            node.shutdown().await.unwrap();
        }
        self.schema.drop().await;
    }
}

/// A node that reaches the database through a proxy the test can partition.
#[derive(Debug)]
pub struct BehindProxy {
    /// The proxy between the node and the database.
    pub proxy: CuttingProxy,
    /// The node.
    pub node: PostgresBackplane,
    /// The node's subscription to the hub, past its `Connected` event.
    pub subscription: Subscription,
}

/// A node on `schema` behind a new proxy, subscribed to `hub`.
///
/// # Panics
///
/// Panics if the node cannot start or subscribe.
pub async fn behind_proxy(schema: &TestSchema, hub: &str) -> BehindProxy {
    let proxy = CuttingProxy::start(schema.database_address().await).await;
    let node = PostgresBackplane::connect(schema.options_through(&proxy))
        .await
        .unwrap();
    let subscription = subscribed(&node, hub).await;
    BehindProxy {
        proxy,
        node,
        subscription,
    }
}
