//! The example streaming hub (`hub_server::examples::streaming`) on every node of a
//! cluster, each instance served on its own port: what the streaming and client-result
//! tests run their clients against.

use std::sync::Arc;

use backplane_core::Backplane;
use hub_server::HubBuilder;
use hub_server::examples::streaming;

use super::TestServer;

/// One server per node, each with the example hub built by `configure` from the
/// example's builder (options, manager options, extra methods) and mounted at `path`.
pub async fn streaming_servers(
    nodes: &[Arc<dyn Backplane>],
    path: &str,
    configure: impl Fn(HubBuilder) -> HubBuilder,
) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for node in nodes {
        let hub = configure(streaming::hub_builder().backplane(node.clone()))
            .build()
            .await
            .expect("streaming hub");
        let router = hub.router(path);
        servers.push(TestServer::serve(hub, router).await);
    }
    servers
}
