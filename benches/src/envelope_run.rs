//! The work the node-to-node criterion benches measure, written once: one node publishes
//! a number of envelopes (a bounded number in flight) and another receives them all.

use std::time::{Duration, Instant};

use backplane_core::{
    Backplane, BackplaneEvent, EnvelopeKind, Protocol, SerializedMessage, Subscription, Target,
};
use futures_util::StreamExt as _;

/// The runtime the backplane benches run on: multi-threaded with two workers, the same
/// for every bench so that their numbers compare.
///
/// # Panics
///
/// When the runtime cannot be built.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the bench runtime")
}

/// Envelopes published per round.
pub const BATCH: u64 = 10_000;

/// Most publishes in flight at once.
pub const IN_FLIGHT: usize = 256;

/// The hub the envelopes are published to.
pub const HUB: &str = "bench";

/// Run `rounds` rounds, each publishing [`BATCH`] copies of `message` to every
/// connection of [`HUB`] from `sender`, with up to [`IN_FLIGHT`] publishes at once, and
/// waiting until `subscription` (another node's) received all of them. Returns the time
/// the rounds took (criterion's `iter_custom`).
///
/// # Panics
///
/// When a publish fails or the subscription ends: a benchmark has nothing to report then.
pub async fn publish_and_receive(
    sender: &dyn Backplane,
    subscription: &mut Subscription,
    message: &SerializedMessage,
    rounds: u64,
) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..rounds {
        elapsed += one_round(sender, subscription, message).await;
    }
    elapsed
}

async fn one_round(
    sender: &dyn Backplane,
    subscription: &mut Subscription,
    message: &SerializedMessage,
) -> Duration {
    let started = Instant::now();
    let publishing = futures_util::stream::iter(0..BATCH)
        .map(|_| {
            let kind = EnvelopeKind::Invocation {
                target: Target::All,
                message: message.clone(),
            };
            sender.publish(HUB, kind)
        })
        .buffered(IN_FLIGHT)
        .for_each(|result| async move { result.expect("publish failed") });
    let receiving = async {
        let mut received = 0;
        while received < BATCH {
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
