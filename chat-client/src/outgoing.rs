//! What the app hands the connection task to write (`send`, `invoke`, `stream`, upload
//! items, client results), and who waits for it.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::InvokeError;
use crate::in_flight::{CompletionReply, StreamSink};

/// A message for the connection task to write, and who to tell how it went.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// One complete encoded frame.
    pub(crate) frame: Bytes,
    /// Who waits for this message.
    pub(crate) reply: Reply,
}

/// Who waits for an outgoing message, and for what.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `send`: told once the frame is written.
    Sent(oneshot::Sender<Result<(), InvokeError>>),
    /// `invoke`: told when the completion with this id arrives.
    Completion {
        /// The invocation id in the frame.
        id: String,
        /// Receives the completion.
        reply: CompletionReply,
    },
    /// `stream`: gets the items and the completion with this id.
    Stream {
        /// The invocation id in the frame.
        id: String,
        /// Where the items and the end go.
        sink: StreamSink,
    },
    /// Nobody waits: an upload stream's items, a handler's answer.
    Nothing,
}

impl Reply {
    /// Tells the waiter the message will never complete.
    pub(crate) fn fail(self, error: impl FnOnce() -> InvokeError) {
        // A waiter that gave up (dropped its future) no longer cares.
        match self {
            Reply::Sent(reply) => drop(reply.send(Err(error()))),
            Reply::Completion { reply, .. } => drop(reply.send(Err(error()))),
            Reply::Stream { sink, .. } => drop(sink.end.send(Err(error()))),
            Reply::Nothing => {}
        }
    }
}
