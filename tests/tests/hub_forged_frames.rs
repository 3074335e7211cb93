//! A broadcast from the backplane whose JSON frame is not UTF-8 (forged or corrupted
//! traffic, sent on the real PostgreSQL channel by a raw connection, as any role that can
//! connect could): clients using JSON are not sent it and stay connected, clients using
//! MessagePack get it. The frame is checked once, where the envelope is decoded, not by
//! every connection it goes to.

mod forged;
mod hub_support;

use backplane_core::{Backplane, Envelope, EnvelopeKind, Protocol, SerializedMessage, Target};
use forged::{inline_notification, notify};
use hub_protocol::{Decoder, HubMessage};
use hub_support::{TestServer, test_hub};
use tests::TestSchema;

/// The test hub's name, as the backplane names its channel (`schema.slug`).
const HUB: &str = "TestHub";

/// A `Broadcast` of `text` in MessagePack, as the server would encode it.
fn msgpack_broadcast(text: &str) -> Vec<u8> {
    let mut frame = bytes::BytesMut::new();
    hub_protocol::encode_invocation(
        Protocol::MessagePack,
        &mut frame,
        None,
        "Broadcast",
        &(text,),
    )
    .expect("encode");
    frame.to_vec()
}

/// A `Broadcast` of `text` in both protocols, as a server would encode it.
fn both_protocols(text: &str) -> SerializedMessage {
    SerializedMessage::new()
        .with(Protocol::Json, hub_support::broadcast(text))
        .with(Protocol::MessagePack, msgpack_broadcast(text))
}

/// The text of the `Broadcast` in the MessagePack frame `frame` (one message).
fn msgpack_text(frame: &[u8]) -> String {
    let mut frame = bytes::BytesMut::from(frame);
    let mut decoder = Decoder::new(Protocol::MessagePack, 1 << 20);
    let message = decoder.decode(&mut frame).expect("a MessagePack frame");
    let Some(HubMessage::Invocation(invocation)) = message else {
        panic!("expected an invocation, got {message:?}");
    };
    assert!(frame.is_empty(), "one message in the frame");
    assert_eq!(invocation.target, "Broadcast");
    invocation.arguments.deserialize::<String>(0).expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_frame_that_is_not_utf8_reaches_no_json_client_and_breaks_none() {
    let schema = TestSchema::create("hub_forged_frames").await;
    let mut nodes = schema.nodes(2).await;
    let (other, node) = (nodes.remove(0), nodes.remove(0));
    let server = TestServer::start_hub(test_hub().backplane(node.clone())).await;
    let mut json = hub_support::RawClient::connect(&server.ws_url("")).await;
    json.handshake_json().await;
    let mut msgpack = hub_support::RawClient::connect(&server.ws_url("")).await;
    msgpack.handshake_msgpack().await;
    hub_support::wait_for_connections(&server.hub, 2).await;

    // The other node's first broadcast reaches both clients.
    let all = || EnvelopeKind::Invocation {
        target: Target::All,
        message: both_protocols("real"),
    };
    other.publish(HUB, all()).await.expect("publish");
    assert_eq!(
        json.recv_text_skipping_pings().await,
        hub_support::broadcast("real")
    );
    assert_eq!(msgpack_text(&msgpack.recv_binary().await), "real");

    // Its next envelope, forged on the wire: the JSON frame's 2-byte character "é"
    // becomes a lone continuation byte and 0xff.
    let origin = other.node_id();
    let mut forged = both_protocols("\u{e9}");
    forged.set(Protocol::MessagePack, msgpack_broadcast("forged"));
    let mut wire = Envelope {
        origin,
        // Its next number: the schema is new and `other` published once.
        seq: 2,
        hub: HUB.into(),
        destination: None,
        kind: EnvelopeKind::Invocation {
            target: Target::All,
            message: forged,
        },
    }
    .encode();
    // Found by its JSON context, so no byte of the (random) node id is taken for it.
    let pattern = b"[\"\xc3\xa9\"]";
    let at = wire
        .windows(pattern.len())
        .position(|window| window == pattern)
        .expect("the character is in the encoding")
        + 2;
    wire[at] = 0xa9;
    wire[at + 1] = 0xff;
    notify(&schema, HUB, &inline_notification(origin, &wire)).await;

    // The MessagePack client gets the forged broadcast: the rest of the envelope is fine.
    assert_eq!(msgpack_text(&msgpack.recv_binary().await), "forged");

    // The JSON client is sent nothing of it, and is still connected: the next broadcast
    // (from a client, through the backplane) is the first thing it reads.
    let completion = json.invoke_json("1", "Broadcast", "[\"after\"]").await;
    let after = hub_support::broadcast("after");
    let completion_of = "{\"type\":3,\"invocationId\":\"1\"}\u{1e}";
    // The broadcast and the completion may come in either order, possibly in one
    // WebSocket message.
    let mut got = completion;
    while !(got.contains(&after) && got.contains(completion_of)) {
        got.push_str(&json.recv_text_skipping_pings().await);
    }
    assert_eq!(
        got.len(),
        after.len() + completion_of.len(),
        "nothing else before or between: {got:?}"
    );
    drop(json);
    drop(msgpack);
    server.hub.shutdown().await;
    for node in [other, node] {
        node.shutdown().await.expect("shutdown");
    }
    schema.drop().await;
}
