//! `ManagerOptions::max_groups_per_connection`, enforced by the node that owns the
//! connection whichever node asks, over the in-memory backplane.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backplane_core::{
    BackplaneHubLifetimeManager, ConnectionId, ConnectionSink, DeliveryError, HubError,
    HubLifetimeManager, LocalConnection, ManagerOptions, Protocol, SerializedMessage,
};
use backplane_memory::MemoryBus;

#[derive(Debug, Default)]
struct Counting(AtomicUsize);

impl ConnectionSink for Counting {
    fn deliver(&self, _: &SerializedMessage) -> Result<(), DeliveryError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn message() -> SerializedMessage {
    SerializedMessage::new().with(Protocol::Json, &b"{}\x1e"[..])
}

async fn two_nodes(limit: usize) -> (BackplaneHubLifetimeManager, BackplaneHubLifetimeManager) {
    let nodes = MemoryBus::cluster(2);
    let options = ManagerOptions::default().max_groups_per_connection(limit);
    let a = BackplaneHubLifetimeManager::with_options("chat", nodes[0].clone(), options.clone())
        .await
        .unwrap();
    let b = BackplaneHubLifetimeManager::with_options("chat", nodes[1].clone(), options)
        .await
        .unwrap();
    (a, b)
}

fn assert_refused(result: Result<(), HubError>, connection: &str, group: &str) {
    match result {
        Err(HubError::GroupRefused {
            connection_id,
            group: refused,
            reason,
        }) => {
            assert_eq!(
                (connection_id.as_str(), refused.as_str()),
                (connection, group)
            );
            assert!(reason.contains("already in 3 groups"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_joins_at_most_the_limit_locally_and_from_another_node() {
    let (a, b) = two_nodes(3).await;
    let sink = Arc::new(Counting::default());
    a.on_connected(LocalConnection::new("c1", None, sink.clone()))
        .await
        .unwrap();
    let c1 = ConnectionId::from("c1");

    for group in ["g1", "g2", "g3"] {
        a.add_to_group(&c1, group).await.unwrap();
    }
    // Joining a group it is in is not a new group.
    a.add_to_group(&c1, "g2").await.unwrap();

    // Refused on its own node and when another node asks; with the error that says why,
    // not a timeout.
    assert_refused(a.add_to_group(&c1, "g4").await, "c1", "g4");
    let started = std::time::Instant::now();
    assert_refused(b.add_to_group(&c1, "g5").await, "c1", "g5");
    assert!(
        started.elapsed() < ManagerOptions::default().group_ack_timeout,
        "the remote refusal waited for the ack timeout"
    );

    // Nothing changed: messages to the refused groups reach nobody, the others still arrive.
    for group in ["g4", "g5"] {
        a.send_group(group, message()).await.unwrap();
    }
    assert_eq!(sink.0.load(Ordering::SeqCst), 0);
    b.send_group("g3", message()).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while sink.0.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("a message to a joined group arrives");

    // Leaving one makes room for another, from either node.
    b.remove_from_group(&c1, "g1").await.unwrap();
    b.add_to_group(&c1, "g4").await.unwrap();
    assert_refused(a.add_to_group(&c1, "g5").await, "c1", "g5");
}

#[tokio::test]
async fn the_limit_is_per_connection_and_off_by_default() {
    let (a, _b) = two_nodes(3).await;
    for id in ["c1", "c2"] {
        a.on_connected(LocalConnection::new(
            id,
            None,
            Arc::new(Counting::default()),
        ))
        .await
        .unwrap();
    }
    for group in ["g1", "g2", "g3"] {
        a.add_to_group(&ConnectionId::from("c1"), group)
            .await
            .unwrap();
        a.add_to_group(&ConnectionId::from("c2"), group)
            .await
            .unwrap();
    }

    let unlimited = BackplaneHubLifetimeManager::new("chat", MemoryBus::cluster(1)[0].clone())
        .await
        .unwrap();
    unlimited
        .on_connected(LocalConnection::new(
            "c",
            None,
            Arc::new(Counting::default()),
        ))
        .await
        .unwrap();
    for i in 0..1_000 {
        unlimited
            .add_to_group(&ConnectionId::from("c"), &format!("group {i}"))
            .await
            .unwrap();
    }
}
