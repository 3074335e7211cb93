//! The books of one session: calls waiting for their completion and streams from the
//! server still open, and where each message from the server about them goes.
//!
//! Stream items go into a bounded channel per stream ([`ServerStream`] reads it). When a
//! stream's channel is full, the item is [`Held`] and the driver stops reading the
//! transport until the consumer makes room: the server's writes then wait, and its
//! producer with them (backpressure), instead of the client buffering without bound.
//!
//! [`ServerStream`]: crate::ServerStream

use std::collections::HashMap;

use hub_protocol::{Completion, CompletionResult, EncodedValue, StreamItem};
use tokio::sync::{mpsc, oneshot};

use crate::error::InvokeError;

/// Where the completion of an `invoke` goes.
pub(crate) type CompletionReply = oneshot::Sender<Result<CompletionResult, InvokeError>>;

/// The driver's end of one stream from the server.
#[derive(Debug)]
pub(crate) struct StreamSink {
    /// Items, in order; bounded, so a slow consumer holds the connection back rather than
    /// filling memory.
    pub(crate) items: mpsc::Sender<EncodedValue>,
    /// How the stream ended: `Ok` for a plain Completion, the error otherwise. Sent after
    /// `items` is dropped, so the consumer sees every item first.
    pub(crate) end: oneshot::Sender<Result<(), InvokeError>>,
}

/// A stream item that found its stream's channel full, waiting for room.
#[derive(Debug)]
pub(crate) struct Held {
    /// The stream's channel.
    items: mpsc::Sender<EncodedValue>,
    /// The item.
    item: EncodedValue,
}

impl Held {
    /// Waits until the consumer takes an item (or drops the stream), then hands the held
    /// item over. Cancel-safe: the item stays held until this completes.
    pub(crate) async fn make_room(held: &mut Option<Held>) {
        let Some(waiting) = held else {
            return std::future::pending().await;
        };
        let permit = waiting.items.clone().reserve_owned().await;
        let Some(waiting) = held.take() else {
            return;
        };
        // A dropped stream (closed channel) no longer wants the item.
        if let Ok(permit) = permit {
            permit.send(waiting.item);
        }
    }
}

/// Calls and streams waiting for the server, by invocation id.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    /// `invoke` calls written and waiting for their completion.
    invocations: HashMap<String, CompletionReply>,
    /// Streams from the server still open.
    streams: HashMap<String, StreamSink>,
}

impl InFlight {
    /// Records an invocation waiting for its completion.
    pub(crate) fn add_invocation(&mut self, id: String, reply: CompletionReply) {
        self.invocations.insert(id, reply);
    }

    /// Records a stream waiting for its items.
    pub(crate) fn add_stream(&mut self, id: String, sink: StreamSink) {
        self.streams.insert(id, sink);
    }

    /// A Completion from the server: ends the invocation or the stream it names.
    pub(crate) fn complete(&mut self, completion: Completion) {
        let id = completion.invocation_id;
        if let Some(reply) = self.invocations.remove(&id) {
            // The caller may have stopped waiting; nothing to do then.
            drop(reply.send(Ok(completion.result)));
        } else if let Some(sink) = self.streams.remove(&id) {
            let StreamSink { items, end } = sink;
            drop(items);
            let outcome = match completion.result {
                CompletionResult::Error(message) => Err(InvokeError::Hub(message)),
                CompletionResult::Void | CompletionResult::Value(_) => Ok(()),
            };
            drop(end.send(outcome));
        } else {
            tracing::debug!(invocation_id = %id, "completion for an unknown invocation");
        }
    }

    /// A StreamItem from the server: into its stream's channel, or held when the channel
    /// is full.
    pub(crate) fn item(&mut self, item: StreamItem) -> Option<Held> {
        let Some(sink) = self.streams.get(&item.invocation_id) else {
            // A stream the consumer dropped (its cancel may still be on its way), or one
            // this client never asked for.
            tracing::debug!(invocation_id = %item.invocation_id, "stream item for no open stream");
            return None;
        };
        match sink.items.try_send(item.item) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
            Err(mpsc::error::TrySendError::Full(value)) => Some(Held {
                items: sink.items.clone(),
                item: value,
            }),
        }
    }

    /// The consumer dropped stream `id`: forgets it, and says whether it was still open
    /// (then the server must be told to stop it).
    pub(crate) fn cancel(&mut self, id: &str) -> bool {
        self.streams.remove(id).is_some()
    }

    /// The session is over: every call and stream fails with `error()`.
    pub(crate) fn fail_all(&mut self, error: impl Fn() -> InvokeError) {
        for (_, reply) in self.invocations.drain() {
            drop(reply.send(Err(error())));
        }
        for (_, sink) in self.streams.drain() {
            let StreamSink { items, end } = sink;
            drop(items);
            drop(end.send(Err(error())));
        }
    }
}
