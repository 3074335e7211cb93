//! Upload streams: [`ClientStream`] wraps a `Stream` the client sends to a hub method
//! parameter, item by item, and `Uploads` runs them for one call.

use std::convert::Infallible;
use std::fmt;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use futures_util::{Stream, stream};
use hub_protocol::{Protocol, encode_completion_error, encode_completion_void, encode_stream_item};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::outgoing::{Outgoing, Reply};

/// Turns the protocol and the stream id into the frames to send.
type Frames = Box<dyn FnOnce(Protocol, String) -> BoxStream<'static, Bytes> + Send>;

/// A stream the client uploads to the hub: an argument of
/// [`invoke_with_streams`], [`send_with_streams`] or [`stream_with_streams`].
///
/// Each item goes to the server as a StreamItem once the call is sent, as fast as the
/// connection takes them (the call's queue is bounded, so a fast source waits for the
/// connection, not the other way round). When the source ends, a Completion closes the
/// stream on the server; when it yields an error ([`try_new`](Self::try_new)), or an
/// item does not serialize, a Completion with the error's text does. The hub method
/// receives the streams in the order given, as its stream parameters
/// (`UploadStream<T>` in `hub-server`, `IAsyncEnumerable<T>` or `ChannelReader<T>` in
/// ASP.NET Core).
///
/// ```
/// use chat_client::ClientStream;
///
/// let numbers = ClientStream::new(futures_util::stream::iter(1..=10_i64));
/// # let _ = numbers;
/// ```
///
/// [`invoke_with_streams`]: crate::HubConnection::invoke_with_streams
/// [`send_with_streams`]: crate::HubConnection::send_with_streams
/// [`stream_with_streams`]: crate::HubConnection::stream_with_streams
pub struct ClientStream {
    /// The source, turned into frames once the protocol and stream id are known.
    frames: Frames,
}

impl ClientStream {
    /// Uploads every item of `items`, then completes the stream.
    pub fn new<T, S>(items: S) -> Self
    where
        T: Serialize + Send + 'static,
        S: Stream<Item = T> + Send + 'static,
    {
        ClientStream::try_new(items.map(Ok::<T, Infallible>))
    }

    /// Uploads the items of `items` until it ends or yields an error; an error completes
    /// the stream with its text (the hub method's stream then fails with it).
    pub fn try_new<T, E, S>(items: S) -> Self
    where
        T: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
    {
        let frames: Frames = Box::new(move |protocol, id| {
            let items = Box::pin(items);
            stream::unfold(Some((items, id)), move |state| async move {
                let (mut items, id) = state?;
                let mut frame = BytesMut::new();
                let last = match items.next().await {
                    Some(Ok(item)) => match encode_stream_item(protocol, &mut frame, &id, &item) {
                        Ok(()) => false,
                        Err(error) => {
                            let message = format!("cannot serialize a stream item: {error}");
                            encode_completion_error(protocol, &mut frame, &id, &message).ok()?;
                            true
                        }
                    },
                    Some(Err(error)) => {
                        encode_completion_error(protocol, &mut frame, &id, &error.to_string())
                            .ok()?;
                        true
                    }
                    None => {
                        encode_completion_void(protocol, &mut frame, &id).ok()?;
                        true
                    }
                };
                let next = if last { None } else { Some((items, id)) };
                Some((frame.freeze(), next))
            })
            .boxed()
        });
        ClientStream { frames }
    }

    /// The frames to send for stream `id`: its items, then its Completion.
    pub(crate) fn into_frames(self, protocol: Protocol, id: String) -> BoxStream<'static, Bytes> {
        (self.frames)(protocol, id)
    }
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStream").finish_non_exhaustive()
    }
}

/// The upload streams of one call, each pumped by a task; dropping this stops them.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    /// One task per stream.
    tasks: Vec<JoinHandle<()>>,
}

impl Uploads {
    /// Starts sending `streams` (with their ids) through `outgoing`, the queue the call
    /// itself went into, so every item follows the call and a lost connection (a closed
    /// queue) ends them.
    pub(crate) fn start(
        protocol: Protocol,
        streams: Vec<(String, ClientStream)>,
        outgoing: &mpsc::Sender<Outgoing>,
    ) -> Self {
        let tasks = streams
            .into_iter()
            .map(|(id, stream)| {
                let mut frames = stream.into_frames(protocol, id);
                let outgoing = outgoing.clone();
                tokio::spawn(async move {
                    while let Some(frame) = frames.next().await {
                        let message = Outgoing {
                            frame,
                            reply: Reply::Nothing,
                        };
                        if outgoing.send(message).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Uploads { tasks }
    }

    /// Lets the streams run to their end, whatever happens to the call (`send`, which
    /// does not wait for the call).
    pub(crate) fn detach(mut self) {
        self.tasks.clear();
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
