//! The Rust client library's streams and client results (`chat_client`'s `stream`,
//! `ClientStream` uploads and `on_invoke`) against the example hub
//! (`hub_server::examples::streaming`) on two hub-server instances sharing a PostgreSQL
//! backplane: a 10,000-item stream arrives complete and in order on every transport and
//! protocol, dropping a stream stops its producer on the server, an upload of 10,000
//! numbers is summed, and a client result asked on instance A of a Rust client on
//! instance B comes back with the handler's value (or its error).

mod hub_support;

use std::time::Duration;

use backplane_core::ManagerOptions;
use chat_client::{ClientStream, HubConnection, HubConnectionBuilder, Protocol, TransportType};
use futures_util::StreamExt;
use hub_server::examples::streaming;
use hub_support::TestServer;
use hub_support::cluster::ServedCluster;
use hub_support::rust_client::EVERY_TRANSPORT_AND_PROTOCOL;
use serde_json::Value;

/// How long each step may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

async fn cluster(name: &str) -> ServedCluster {
    ServedCluster::streaming(name, streaming::PATH, |hub| {
        // The owner's acceptance may wait 15 s, not the default 5 s: these tests run
        // beside each other's 10,000-item streams on a 2-core machine, where the default
        // fails as "does not exist" when an acceptance arrives late.
        hub.manager_options(
            ManagerOptions::default()
                .client_result_timeout(Duration::from_secs(30))
                .client_result_owner_timeout(Duration::from_secs(15)),
        )
    })
    .await
}

fn url(server: &TestServer) -> String {
    format!("http://{}{}", server.addr, streaming::PATH)
}

async fn connect(
    server: &TestServer,
    transport: TransportType,
    protocol: Protocol,
) -> HubConnection {
    let connection = HubConnectionBuilder::new(url(server))
        .transports([transport])
        .protocol(protocol)
        .build()
        .expect("client");
    tokio::time::timeout(PATIENCE, connection.start())
        .await
        .expect("start in time")
        .expect("start");
    connection
}

async fn stats(connection: &HubConnection) -> Value {
    connection
        .invoke::<Value, _>("Stats", ())
        .await
        .expect("Stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_10000_items_arrives_complete_and_in_order_on_every_transport() {
    let cluster = cluster("client_streams_order").await;
    let servers = &cluster.servers;
    for (transport, protocol) in EVERY_TRANSPORT_AND_PROTOCOL {
        let what = format!("{transport:?}/{protocol:?}");
        let connection = connect(&servers[0], transport, protocol).await;
        let mut numbers = connection
            .stream::<u64, _>("Counter", (10_000u64, 0u64))
            .await
            .expect("stream");
        let mut expected = 0u64;
        while let Some(item) = tokio::time::timeout(PATIENCE, numbers.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: stuck after {expected} items"))
        {
            let number = item.unwrap_or_else(|error| panic!("{what}: {error}"));
            assert_eq!(number, expected, "{what}: out of order");
            expected += 1;
        }
        assert_eq!(expected, 10_000, "{what}: items missing");

        // An error mid-stream ends it with the server's message, after the items before it.
        let mut failing = connection
            .stream::<u64, _>("Fail", (3u64,))
            .await
            .expect("stream");
        let mut items = Vec::new();
        let mut error = None;
        while let Some(item) = tokio::time::timeout(PATIENCE, failing.next())
            .await
            .expect("the failing stream ends")
        {
            match item {
                Ok(number) => items.push(number),
                Err(failure) => error = Some(failure.to_string()),
            }
        }
        assert_eq!(items, [0, 1, 2], "{what}");
        let error = error.unwrap_or_else(|| panic!("{what}: no error item"));
        assert!(
            error.contains("the stream failed on purpose"),
            "{what}: {error}"
        );
        connection.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_stops_its_producer_on_the_server() {
    let cluster = cluster("client_streams_cancel").await;
    let servers = &cluster.servers;
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let connection = connect(&servers[0], TransportType::WebSockets, protocol).await;
        let before = stats(&connection).await;
        let mut numbers = connection
            .stream::<u64, _>("Counter", (1_000_000u64, 1u64))
            .await
            .expect("stream");
        for expected in 0..20u64 {
            let number = tokio::time::timeout(PATIENCE, numbers.next())
                .await
                .expect("an item")
                .expect("not ended")
                .expect("not an error");
            assert_eq!(number, expected);
        }
        drop(numbers);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let after = loop {
            let now = stats(&connection).await;
            if now["running"] == 0 {
                break now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{protocol:?}: the producer still runs: {now}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            after["cancelled"].as_u64().unwrap(),
            before["cancelled"].as_u64().unwrap() + 1,
            "{protocol:?}: {after}"
        );
        // Nothing is produced once it stopped.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let later = stats(&connection).await;
        assert_eq!(later["produced"], after["produced"], "{protocol:?}");
        connection.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_10000_numbers_is_summed() {
    let cluster = cluster("client_streams_upload").await;
    let servers = &cluster.servers;
    for (transport, protocol) in [
        (TransportType::WebSockets, Protocol::Json),
        (TransportType::WebSockets, Protocol::MessagePack),
        (TransportType::LongPolling, Protocol::Json),
    ] {
        let connection = connect(&servers[1], transport, protocol).await;
        let numbers = ClientStream::new(futures_util::stream::iter(1..=10_000i64));
        let total = tokio::time::timeout(
            PATIENCE,
            connection.invoke_with_streams::<i64, _>("Sum", (), [numbers]),
        )
        .await
        .expect("the sum in time")
        .expect("Sum");
        assert_eq!(total, 50_005_000, "{transport:?}/{protocol:?}");
        connection.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_result_asked_on_one_instance_comes_from_a_rust_client_on_the_other() {
    let cluster = cluster("client_streams_results").await;
    let servers = &cluster.servers;
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let asker = connect(&servers[0], TransportType::WebSockets, protocol).await;
        let answerer = connect(&servers[1], TransportType::WebSockets, protocol).await;
        answerer.on_invoke("GetAnswer", |(number,): (i64,)| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, String>(number * 2)
        });
        answerer.on_invoke("Refuse", |(_,): (Value,)| async move {
            Err::<i64, _>("not telling")
        });
        let id = answerer.connection_id().expect("connected");

        let answer: Value = tokio::time::timeout(
            PATIENCE,
            asker.invoke("AskClient", (id.clone(), "GetAnswer", 21)),
        )
        .await
        .expect("in time")
        .expect("the answer");
        assert_eq!(answer, 42, "{protocol:?}");

        let refused = tokio::time::timeout(
            PATIENCE,
            asker.invoke::<Value, _>("AskClient", (id.clone(), "Refuse", 0)),
        )
        .await
        .expect("in time")
        .expect_err("the handler's error");
        assert!(
            refused.to_string().contains("not telling"),
            "{protocol:?}: {refused}"
        );

        // No handler for the method: the client says so, as the JavaScript client does.
        let unhandled = tokio::time::timeout(
            PATIENCE,
            asker.invoke::<Value, _>("AskClient", (id, "NoSuchHandler", 0)),
        )
        .await
        .expect("in time")
        .expect_err("no handler");
        assert!(
            unhandled
                .to_string()
                .contains("Client didn't provide a result."),
            "{protocol:?}: {unhandled}"
        );
        asker.stop().await;
        answerer.stop().await;
    }
}
