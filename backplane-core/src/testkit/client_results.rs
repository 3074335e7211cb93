//! The conformance cases for client results across nodes: the return route, and a
//! connection that does not exist failing without waiting.

use std::sync::Arc;
use std::time::Duration;

use hub_protocol::{Completion, CompletionResult, EncodedValue};
use tokio::task::JoinHandle;

use super::{ClusterFactory, RecordingSink, WAIT};
use crate::backplane::Backplane;
use crate::client_results::{ClientAnswer, ClientResultError};
use crate::id::{ConnectionId, NodeTag};
use crate::lifetime::{BackplaneHubLifetimeManager, ManagerOptions};
use crate::manager::{ConnectionSink, HubLifetimeManager, LocalConnection};
use crate::message::Protocol;

const HUB: &str = "conformance-client-results";

/// A client-result call from node 0 for a connection on node 1 travels to node 1, which
/// queues the invocation for its connection, and the client's answer comes back to
/// node 0 only: a value, then an error, then the connection's departure in mid-call.
/// A connection no node has fails with `UnknownConnection` once the owner timeout has
/// passed, well before the result timeout.
pub async fn client_result_return_route(factory: impl ClusterFactory) {
    let nodes = factory.cluster(3).await;
    let options = ManagerOptions::default()
        .client_result_timeout(Duration::from_secs(60))
        .client_result_owner_timeout(Duration::from_secs(2));
    let managers = managers(&nodes, &options).await;
    let id = ConnectionId::from("answering");
    let sink = connect(&managers[1], &id).await;

    let answers = [
        CompletionResult::Value(EncodedValue::encode(Protocol::Json, &42).unwrap()),
        CompletionResult::Error("the handler threw".into()),
    ];
    for (round, answer) in answers.into_iter().enumerate() {
        let invocation_id = managers[0].next_invocation_id();
        let label = format!("ask {round}");
        let call = spawn_ask(&managers[0], &id, invocation_id.clone(), &label);
        sink.take_until(&format!("ask {round}"), WAIT).await;
        // Only the owner takes the client's answer.
        let completion = Completion {
            headers: Default::default(),
            invocation_id: invocation_id.clone(),
            result: answer,
        };
        assert!(
            !managers[2].set_connection_result(&id, completion.clone()),
            "a node without the connection must not take its answer"
        );
        assert!(
            managers[1].set_connection_result(&id, completion.clone()),
            "the owner must take the answer to an invocation it queued"
        );
        assert!(
            !managers[1].set_connection_result(&id, completion),
            "an answer is taken once"
        );
        let result = tokio::time::timeout(WAIT, call)
            .await
            .expect("the result came back")
            .unwrap();
        match round {
            0 => {
                let value = result.expect("a value").expect("not void");
                assert_eq!(value.deserialize::<i64>().unwrap(), 42);
            }
            _ => assert!(
                matches!(&result, Err(ClientResultError::Client(error)) if error == "the handler threw"),
                "got {result:?}"
            ),
        }
    }

    // The connection leaves in mid-call: the asking node learns it at once.
    let invocation_id = managers[2].next_invocation_id();
    let call = spawn_ask(&managers[2], &id, invocation_id, "ask leaving");
    sink.take_until("ask leaving", WAIT).await;
    managers[1].on_disconnected(&id).await.unwrap();
    let result = tokio::time::timeout(WAIT, call)
        .await
        .expect("the departure came back before the result timeout")
        .unwrap();
    assert!(
        matches!(&result, Err(ClientResultError::Disconnected(gone)) if gone == &id),
        "got {result:?}"
    );

    // Nobody has it any more.
    let started = tokio::time::Instant::now();
    let result = managers[0]
        .invoke_connection(
            &id,
            managers[0].next_invocation_id(),
            RecordingSink::message("ask ghost"),
        )
        .await;
    assert!(
        matches!(&result, Err(ClientResultError::UnknownConnection(ghost)) if ghost == &id),
        "got {result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "an unknown connection must fail before the result timeout"
    );
    drop(managers);
    for node in &nodes {
        node.shutdown().await.expect("shutdown failed");
    }
}

/// A client-result call for a connection whose id names a node (as the ids a server
/// issues do) but which that node does not have fails with `UnknownConnection` without
/// waiting for the owner timeout: at once when the id names the asking node, after one
/// round trip when it names another. A tagged connection that does exist still answers.
pub async fn client_result_for_a_missing_tagged_connection_fails_fast(
    factory: impl ClusterFactory,
) {
    let nodes = factory.cluster(2).await;
    // Timeouts far above what the case allows, so only the tags can make it pass.
    let owner_timeout = Duration::from_secs(60);
    let options = ManagerOptions::default()
        .client_result_timeout(Duration::from_secs(120))
        .client_result_owner_timeout(owner_timeout);
    let managers = managers(&nodes, &options).await;
    let tags: Vec<NodeTag> = managers
        .iter()
        .map(|manager| {
            manager
                .node_tag()
                .expect("the generic manager tags its ids")
        })
        .collect();
    assert_ne!(tags[0], tags[1], "two nodes must not share a tag");
    let ask = |from: usize, id: ConnectionId| {
        let manager = managers[from].clone();
        async move {
            let started = tokio::time::Instant::now();
            let invocation_id = manager.next_invocation_id();
            let result = tokio::time::timeout(
                owner_timeout / 2,
                manager.invoke_connection(&id, invocation_id, RecordingSink::message("ask")),
            )
            .await
            .expect("a missing tagged connection must fail long before the owner timeout");
            (result, started.elapsed())
        }
    };
    let is_unknown = |result: &Result<_, ClientResultError>, id: &ConnectionId| matches!(result, Err(ClientResultError::UnknownConnection(missing)) if missing == id);

    // The asking node's own tag: nothing to ask anybody.
    let own = ConnectionId::tagged("never-connected-here", tags[0]);
    let (result, took) = ask(0, own.clone()).await;
    assert!(is_unknown(&result, &own), "got {result:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // Another node's tag: that node says it has no such connection.
    let theirs = ConnectionId::tagged("never-connected-there", tags[1]);
    let (result, took) = ask(0, theirs.clone()).await;
    assert!(
        is_unknown(&result, &theirs),
        "got {result:?} after {took:?}"
    );

    // A tagged connection that exists answers as usual, and once it left, it is unknown
    // again without waiting.
    let present = ConnectionId::tagged("connected-there", tags[1]);
    let sink = connect(&managers[1], &present).await;
    let invocation_id = managers[0].next_invocation_id();
    let call = spawn_ask(&managers[0], &present, invocation_id.clone(), "ask present");
    sink.take_until("ask present", WAIT).await;
    let completion = Completion {
        headers: Default::default(),
        invocation_id,
        result: CompletionResult::Value(EncodedValue::encode(Protocol::Json, &7).unwrap()),
    };
    assert!(managers[1].set_connection_result(&present, completion));
    let value = tokio::time::timeout(WAIT, call)
        .await
        .expect("the result came back")
        .unwrap()
        .expect("a value")
        .expect("not void");
    assert_eq!(value.deserialize::<i64>().unwrap(), 7);
    managers[1].on_disconnected(&present).await.unwrap();
    let (result, took) = ask(0, present.clone()).await;
    assert!(
        is_unknown(&result, &present),
        "got {result:?} after {took:?}"
    );
    let (result, took) = ask(1, present.clone()).await;
    assert!(is_unknown(&result, &present), "got {result:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    drop(managers);
    for node in &nodes {
        node.shutdown().await.expect("shutdown failed");
    }
}

/// One lifetime manager of hub [`HUB`] per node.
async fn managers(
    nodes: &[Arc<dyn Backplane>],
    options: &ManagerOptions,
) -> Vec<Arc<BackplaneHubLifetimeManager>> {
    let mut managers = Vec::new();
    for node in nodes {
        let manager = BackplaneHubLifetimeManager::with_options(HUB, node.clone(), options.clone())
            .await
            .expect("creating the lifetime manager failed");
        managers.push(Arc::new(manager));
    }
    managers
}

/// Register connection `id` on `manager`'s node; what it is sent is recorded.
async fn connect(manager: &BackplaneHubLifetimeManager, id: &ConnectionId) -> Arc<RecordingSink> {
    let sink = Arc::new(RecordingSink::new());
    manager
        .on_connected(LocalConnection::new(
            id.clone(),
            None,
            sink.clone() as Arc<dyn ConnectionSink>,
        ))
        .await
        .expect("on_connected failed");
    sink
}

/// Ask connection `id` through `manager` in a task of its own; the recorded message
/// is `label`.
fn spawn_ask(
    manager: &Arc<BackplaneHubLifetimeManager>,
    id: &ConnectionId,
    invocation_id: String,
    label: &str,
) -> JoinHandle<ClientAnswer> {
    let manager = manager.clone();
    let id = id.clone();
    let message = RecordingSink::message(label);
    tokio::spawn(async move { manager.invoke_connection(&id, invocation_id, message).await })
}
