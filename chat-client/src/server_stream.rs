//! [`ServerStream`]: the items of a streaming hub method, as a typed `Stream`.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use hub_protocol::EncodedValue;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::client_stream::Uploads;
use crate::error::{DisconnectReason, InvokeError};

/// The items a streaming hub method sends, from [`HubConnection::stream`]: a
/// [`Stream`] of `Result<T, InvokeError>`.
///
/// - Items arrive in order, each deserialized into `T`; an item that does not fit `T` is
///   an [`InvokeError::InvalidResult`] in its place, and the stream goes on.
/// - The stream ends (`None`) when the method completes. When it fails, the last item is
///   [`InvokeError::Hub`] with the server's message; when the connection is lost or
///   stopped first, [`InvokeError::ConnectionLost`] or [`InvokeError::Stopped`].
/// - Dropping it before the end sends CancelInvocation: the server stops the method at
///   once. Upload streams passed to the call stop too.
/// - Buffering is bounded ([`stream_buffer_capacity`], 100 items by default). When this
///   stream's buffer is full, the connection stops reading from the server until the
///   consumer takes an item: the server's producer slows down to the consumer's pace, and
///   every other message of the connection (other streams, completions, handler calls)
///   waits too. Keep-alive pings still go out and calls can still be sent. So read
///   streams promptly, or drop them; waiting on something else of the same connection
///   while a stream is full and unread waits forever.
///
/// [`HubConnection::stream`]: crate::HubConnection::stream
/// [`stream_buffer_capacity`]: crate::HubConnectionBuilder::stream_buffer_capacity
#[must_use = "a stream does nothing unless polled; dropping it cancels the stream on the server"]
pub struct ServerStream<T> {
    /// The invocation id, sent back in the CancelInvocation.
    id: String,
    /// Items as the server sent them.
    items: mpsc::Receiver<EncodedValue>,
    /// How the stream ended, read once `items` is exhausted.
    end: Option<oneshot::Receiver<Result<(), InvokeError>>>,
    /// Where to ask for a cancel when dropped early; `None` once the stream ended.
    cancel: Option<mpsc::UnboundedSender<String>>,
    /// The upload streams of the call, stopped with it.
    _uploads: Uploads,
    /// The item type.
    _item: PhantomData<fn() -> T>,
}

impl<T> ServerStream<T> {
    pub(crate) fn new(
        id: String,
        items: mpsc::Receiver<EncodedValue>,
        end: oneshot::Receiver<Result<(), InvokeError>>,
        cancel: mpsc::UnboundedSender<String>,
        uploads: Uploads,
    ) -> Self {
        ServerStream {
            id,
            items,
            end: Some(end),
            cancel: Some(cancel),
            _uploads: uploads,
            _item: PhantomData,
        }
    }

    /// The invocation id of the stream (as the server logs it).
    pub fn invocation_id(&self) -> &str {
        &self.id
    }
}

impl<T: DeserializeOwned> Stream for ServerStream<T> {
    type Item = Result<T, InvokeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin.
        let this = self.get_mut();
        if let Some(value) = ready!(this.items.poll_recv(cx)) {
            return Poll::Ready(Some(
                value.deserialize().map_err(InvokeError::InvalidResult),
            ));
        }
        let Some(end) = &mut this.end else {
            return Poll::Ready(None);
        };
        let outcome = ready!(Pin::new(end).poll(cx));
        this.end = None;
        // Ended: nothing left to cancel.
        this.cancel = None;
        Poll::Ready(match outcome {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(Err(error)),
            // The session went away without a word: only when its task ended abruptly.
            Err(_) => Some(Err(InvokeError::ConnectionLost(
                DisconnectReason::TransportClosed,
            ))),
        })
    }
}

impl<T> Drop for ServerStream<T> {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            // The driver sends CancelInvocation if the stream is still open; when the
            // connection is gone there is nothing to cancel.
            let _ = cancel.send(std::mem::take(&mut self.id));
        }
    }
}

impl<T> fmt::Debug for ServerStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream")
            .field("invocation_id", &self.id)
            .field("ended", &self.end.is_none())
            .finish_non_exhaustive()
    }
}
