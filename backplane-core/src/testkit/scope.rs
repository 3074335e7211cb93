//! Clusters that clean up after themselves: a networked backplane's test cluster lives
//! in a namespace of its own (a key prefix, a stream name), deleted when the cluster's
//! last node shuts down.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::backplane::{Backplane, BackplaneError, Subscription};
use crate::envelope::EnvelopeKind;
use crate::id::NodeId;
use crate::sync::lock;

/// What runs after the last node of a scoped cluster shut down.
type Cleanup = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Wrap `nodes` so that `cleanup` runs once, when the last of them shuts down (a case
/// that shuts a node down twice counts it once).
pub fn scoped<F, Fut>(nodes: Vec<Arc<dyn Backplane>>, cleanup: F) -> Vec<Arc<dyn Backplane>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let scope = Arc::new(Scope {
        running: AtomicUsize::new(nodes.len()),
        cleanup: Mutex::new(Some(Box::new(move || Box::pin(cleanup())))),
    });
    nodes
        .into_iter()
        .map(|node| {
            Arc::new(ScopedNode {
                node,
                scope: scope.clone(),
                shut_down: AtomicBool::new(false),
            }) as Arc<dyn Backplane>
        })
        .collect()
}

/// What the nodes of one scoped cluster share.
struct Scope {
    /// Nodes not shut down yet.
    running: AtomicUsize,
    /// Taken by the last node to shut down.
    cleanup: Mutex<Option<Cleanup>>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// A node that runs its cluster's cleanup when it is the last to shut down.
#[derive(Debug)]
struct ScopedNode {
    /// The real node.
    node: Arc<dyn Backplane>,
    /// Shared with the cluster's other nodes.
    scope: Arc<Scope>,
    /// Counted once even if a case shuts the node down twice.
    shut_down: AtomicBool,
}

#[async_trait]
impl Backplane for ScopedNode {
    fn node_id(&self) -> NodeId {
        self.node.node_id()
    }

    async fn publish(&self, hub: &str, kind: EnvelopeKind) -> Result<(), BackplaneError> {
        self.node.publish(hub, kind).await
    }

    async fn send_to(
        &self,
        node: NodeId,
        hub: &str,
        kind: EnvelopeKind,
    ) -> Result<(), BackplaneError> {
        self.node.send_to(node, hub, kind).await
    }

    async fn subscribe(&self, hub: &str) -> Result<Subscription, BackplaneError> {
        self.node.subscribe(hub).await
    }

    async fn shutdown(&self) -> Result<(), BackplaneError> {
        let result = self.node.shutdown().await;
        if !self.shut_down.swap(true, Ordering::AcqRel)
            && self.scope.running.fetch_sub(1, Ordering::AcqRel) == 1
        {
            let cleanup = lock(&self.scope.cleanup).take();
            if let Some(cleanup) = cleanup {
                cleanup().await;
            }
        }
        result
    }
}
