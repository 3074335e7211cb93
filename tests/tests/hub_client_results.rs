//! Client results and stream backpressure seen from raw protocol frames on one server:
//! the hub context asks a client outside any hub method, the deadlock rule, and a stream
//! whose client stops reading stops producing (bounded), then ends with the connection.

mod hub_support;

use std::time::Duration;

use hub_server::examples::streaming;
use hub_server::{Caller, CallerClients, ClientResultError, HubOptions, InvokeError, MethodError};
use hub_support::{RawClient, TestServer, ask_double};
use serde_json::Value;

/// The example hub, plus a method that tells the caller its connection id and one that
/// asks the caller itself for a value.
fn hub(options: HubOptions) -> hub_server::HubBuilder {
    streaming::hub_builder()
        .options(options)
        .method("MyId", |caller: Caller| async move {
            caller.connection_id().to_string()
        })
        .method("AskMe", |clients: CallerClients| async move {
            clients
                .caller()
                .invoke::<i64>("Question", ())
                .await
                .map_err(|error| MethodError::new(error.to_string()))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_context_asks_a_client_outside_hub_methods() {
    let server = TestServer::start_hub(hub(HubOptions::default())).await;
    let mut client = server.json_client().await;
    let id = client.call_json("MyId").await;
    let id = id["result"].as_str().expect("an id").to_owned();

    for (answer, expected) in [
        (r#""result":42"#, Ok(42)),
        (r#""error":"no handler""#, Err("no handler")),
    ] {
        let asked = ask_double(&server.hub, &id);
        let invocation = client.next_json().await;
        assert_eq!(invocation["type"], 1, "{invocation}");
        assert_eq!(invocation["target"], "Double");
        assert_eq!(invocation["arguments"], serde_json::json!([21]));
        let invocation_id = invocation["invocationId"]
            .as_str()
            .expect("an invocation id");
        client
            .send_text(&format!(
                "{{\"type\":3,\"invocationId\":\"{invocation_id}\",{answer}}}\u{1e}"
            ))
            .await;
        let result = tokio::time::timeout(Duration::from_secs(30), asked)
            .await
            .expect("the answer arrives")
            .unwrap();
        match expected {
            Ok(value) => assert_eq!(result.unwrap(), value),
            Err(text) => assert!(
                matches!(&result, Err(InvokeError::Call(ClientResultError::Client(error))) if error == text),
                "{result:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_invocation_at_a_time_a_method_cannot_wait_for_its_own_caller() {
    let server =
        TestServer::start_hub(hub(HubOptions::default().max_parallel_invocations(1))).await;
    let mut client = server.json_client().await;
    let completion = client.call_json("AskMe").await;
    let error = completion["error"].as_str().expect("a completion error");
    assert!(error.contains("runs one invocation at a time"), "{error}");

    // With parallel invocations the same call works: the client's answer is read while
    // the method waits.
    let server = TestServer::start_hub(hub(HubOptions::default())).await;
    let mut client = server.json_client().await;
    client
        .send_text(
            "{\"type\":1,\"invocationId\":\"ask\",\"target\":\"AskMe\",\"arguments\":[]}\u{1e}",
        )
        .await;
    let question = client.next_json().await;
    assert_eq!(question["target"], "Question");
    let invocation_id = question["invocationId"].as_str().unwrap();
    client
        .send_text(&format!(
            "{{\"type\":3,\"invocationId\":\"{invocation_id}\",\"result\":7}}\u{1e}"
        ))
        .await;
    let completion = client.next_json().await;
    assert_eq!(completion["invocationId"], "ask");
    assert_eq!(completion["result"], 7);
}

/// The producers' counters, asked on another connection.
async fn stats(observer: &mut RawClient) -> Value {
    observer.call_json("Stats").await["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_stops_reading_stops_producing_and_ends_with_it() {
    let server = TestServer::start_hub(hub(HubOptions::default())).await;
    let mut observer = server.json_client().await;
    let mut reader = RawClient::connect_with_small_buffer(server.addr, &server.ws_url("")).await;
    reader.handshake_json().await;
    reader
        .send_text("{\"type\":4,\"invocationId\":\"s\",\"target\":\"Counter\",\"arguments\":[1000000,0]}\u{1e}")
        .await;
    // The reader reads nothing more: production must come to a halt.
    let mut last = stats(&mut observer).await["produced"].as_u64().unwrap();
    let mut stable = 0;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let produced = stats(&mut observer).await["produced"].as_u64().unwrap();
        stable = if produced == last { stable + 1 } else { 0 };
        last = produced;
        if stable == 10 {
            break;
        }
    }
    assert_eq!(stable, 10, "the producer never stopped: {last} items");
    assert!(
        last < 1_000_000,
        "the producer ran to the end ({last} items) for a client that reads nothing"
    );
    eprintln!("a client that reads nothing held its stream at {last} items");
    let now = stats(&mut observer).await;
    assert_eq!(now["running"], 1, "{now}");
    // The client goes away: its stream and producer end with it.
    drop(reader);
    let mut now = stats(&mut observer).await;
    for _ in 0..600 {
        if now["running"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = stats(&mut observer).await;
    }
    assert_eq!(now["running"], 0, "{now}");
    assert_eq!(now["cancelled"], 1, "{now}");
}
