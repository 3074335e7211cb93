//! Hub servers on every node of a PostgreSQL cluster, each instance served on its own
//! port: what the tests whose clients cross instances run against, the chat application
//! ([`ServedCluster::chat`]) or the example streaming hub ([`ServedCluster::streaming`],
//! [`streaming_servers`]).

use std::sync::Arc;

use backplane_core::Backplane;
use hub_server::examples::streaming;
use hub_server::{HubBuilder, HubOptions, chat};
use tests::TestSchema;

use super::TestServer;

/// Servers on the nodes of one schema, shut down together.
pub struct ServedCluster {
    /// The schema the nodes share; dropped by [`ServedCluster::shut_down`].
    pub schema: TestSchema,
    /// One backplane node per server.
    pub nodes: Vec<Arc<dyn Backplane>>,
    /// One server per node, in the nodes' order.
    pub servers: Vec<TestServer>,
}

impl ServedCluster {
    /// One chat server per entry of `options`, each on its own node of a new schema
    /// labelled `label`; server `index` calls itself `{name}-{index}` (in `/health`).
    pub async fn chat(label: &str, name: &str, options: &[HubOptions]) -> Self {
        let schema = TestSchema::create(label).await;
        let nodes = schema.cluster(options.len()).await;
        let mut servers = Vec::new();
        for (index, (node, options)) in nodes.iter().zip(options).enumerate() {
            let hub = chat::hub_builder()
                .options(options.clone())
                .backplane(node.clone())
                .build()
                .await
                .expect("chat hub");
            let router = chat::router(
                &hub,
                chat::ServerInfo::new(format!("{name}-{index}"), "postgres"),
            );
            servers.push(TestServer::serve(hub, router).await);
        }
        Self {
            schema,
            nodes,
            servers,
        }
    }

    /// Two servers of the example streaming hub, as [`streaming_servers`] makes them, on a
    /// new schema labelled `label`.
    pub async fn streaming(
        label: &str,
        path: &str,
        configure: impl Fn(HubBuilder) -> HubBuilder,
    ) -> Self {
        let schema = TestSchema::create(label).await;
        let nodes = schema.cluster(2).await;
        let servers = streaming_servers(&nodes, path, configure).await;
        Self {
            schema,
            nodes,
            servers,
        }
    }

    /// The chat hub's URL on server `index`.
    pub fn chat_url(&self, index: usize) -> String {
        format!("http://{}{}", self.servers[index].addr, chat::HUB_PATH)
    }

    /// Shut every hub down, then every node, then drop the schema.
    pub async fn shut_down(self) {
        for server in &self.servers {
            server.hub.shutdown().await;
        }
        for node in &self.nodes {
            node.shutdown().await.expect("backplane shutdown");
        }
        self.schema.drop().await;
    }
}

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
