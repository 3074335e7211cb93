//! The work the node-to-node criterion benches measure, written once: one node publishes
//! a number of envelopes (a bounded number in flight) and another receives them all.

use std::time::{Duration, Instant};

use backplane_core::{
    Backplane, BackplaneEvent, EnvelopeKind, Protocol, SerializedMessage, Subscription, Target,
};
use futures_util::StreamExt as _;

/// Publish `count` copies of `message` to every connection of `hub` from `sender`, with
/// up to `in_flight` publishes at once, and wait until `subscription` (another node's)
/// received all of them. Returns how long that took.
///
/// # Panics
///
/// When a publish fails or the subscription ends: a benchmark has nothing to report then.
pub async fn publish_and_receive(
    sender: &dyn Backplane,
    subscription: &mut Subscription,
    hub: &str,
    message: &SerializedMessage,
    count: u64,
    in_flight: usize,
) -> Duration {
    let started = Instant::now();
    let publishing = futures_util::stream::iter(0..count)
        .map(|_| {
            let kind = EnvelopeKind::Invocation {
                target: Target::All,
                message: message.clone(),
            };
            sender.publish(hub, kind)
        })
        .buffered(in_flight)
        .for_each(|result| async move { result.expect("publish failed") });
    let receiving = async {
        let mut received = 0;
        while received < count {
            match subscription.recv().await {
                Some(BackplaneEvent::Envelope(_)) => received += 1,
                Some(_) => {}
                None => panic!("the subscription ended"),
            }
        }
    };
    tokio::join!(publishing, receiving);
    started.elapsed()
}

/// A chat message as the chat server sends it (`ReceiveMessage` with a user and a
/// sentence), encoded once per hub protocol.
pub fn chat_message() -> SerializedMessage {
    let arguments = ("alice", "hello everyone, this is a chat message");
    let mut message = SerializedMessage::new();
    for protocol in Protocol::ALL {
        let mut frame = hub_protocol::BytesMut::new();
        hub_protocol::encode_invocation(protocol, &mut frame, None, "ReceiveMessage", &arguments)
            .expect("encodable");
        message.set(protocol, frame.freeze());
    }
    message
}
