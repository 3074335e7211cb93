//! Streams in both directions: [`HubStream`], what a streaming hub method returns, and
//! [`UploadStream`], a hub method parameter fed by the caller's own stream; their limits
//! ([`StreamOptions`]) and the per-connection books that route items to them.
//!
//! # Server to client
//!
//! A method returning [`HubStream<T>`] is a streaming method: the caller invokes it with a
//! StreamInvocation (`connection.stream(...)` in the official clients), receives one
//! StreamItem per item, then a Completion (with an error if the stream yielded one).
//! A CancelInvocation from the caller drops the stream at once, and with it whatever
//! produces its items. Items wait for room in the connection's bounded send queue (a
//! stream may fill at most half of it, so broadcasts to a streaming client still fit):
//! a slow reader slows the producer down, and memory does not grow.
//!
//! # Client to server
//!
//! A parameter of type [`UploadStream<T>`] takes one of the streams the caller sent
//! (`streamIds`; a `Subject` passed as an argument in the JavaScript client), in order.
//! Items are buffered up to [`StreamOptions::upload_buffer`] per stream; past it the
//! connection stops reading until the method takes some (as ASP.NET Core's
//! `StreamBufferCapacity`). The stream ends when the caller completes it, with an error
//! if the caller completed it with one; if the caller disconnects, the method is dropped
//! with the connection.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::AbortHandle;
use futures_util::{Stream, StreamExt};
use hub_protocol::{EncodedValue, Protocol};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::error::MethodError;
use crate::extract::{BindError, FromInvocation, InvocationContext};
use crate::handler::{Failure, IntoHubResult, Outcome, Reply};

/// Limits of the streams one connection may run. Set with
/// [`HubBuilder::stream_options`](crate::HubBuilder::stream_options).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StreamOptions {
    /// How many server-to-client streams one connection may run at once; a stream
    /// invocation beyond it is answered with a completion error. Default: 64.
    ///
    /// Running streams do not count against
    /// [`HubOptions::max_parallel_invocations`](crate::HubOptions::max_parallel_invocations):
    /// with one invocation at a time (ASP.NET Core's default) a stream that held the slot
    /// would keep the connection from reading the CancelInvocation that ends it. ASP.NET
    /// Core releases the slot once the method has returned its stream; here the stream
    /// counts against this limit from its start instead, and ASP.NET Core has no such
    /// limit.
    pub max_streams: usize,
    /// How many client-to-server streams one connection may have open at once; an
    /// invocation that would open more is answered with a completion error. Default: 10.
    /// ASP.NET Core has no such limit; it bounds each stream's buffer only.
    pub max_upload_streams: usize,
    /// How many items of one upload stream are buffered before the connection stops
    /// reading until the method takes some. Default: 10 (ASP.NET Core's
    /// `StreamBufferCapacity`).
    pub upload_buffer: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            max_streams: 64,
            max_upload_streams: 10,
            upload_buffer: 10,
        }
    }
}

impl StreamOptions {
    /// These options with at most `count` server-to-client streams per connection.
    #[must_use]
    pub fn max_streams(mut self, count: usize) -> Self {
        self.max_streams = count;
        self
    }

    /// These options with at most `count` upload streams per connection.
    #[must_use]
    pub fn max_upload_streams(mut self, count: usize) -> Self {
        self.max_upload_streams = count;
        self
    }

    /// These options with `items` buffered per upload stream (at least 1).
    #[must_use]
    pub fn upload_buffer(mut self, items: usize) -> Self {
        self.upload_buffer = items.max(1);
        self
    }
}

/// The items of a server-to-client stream, encoded for the caller's protocol.
pub(crate) type ItemStream = Pin<Box<dyn Stream<Item = Result<EncodedValue, MethodError>> + Send>>;

/// What a streaming hub method returns: a stream of serializable items, sent to the
/// caller one StreamItem each, then a Completion.
///
/// ```
/// use hub_server::HubStream;
///
/// async fn count_to(n: u32) -> HubStream<u32> {
///     HubStream::new(futures_util::stream::iter(1..=n))
/// }
/// ```
///
/// An item that is an `Err` ends the stream with a completion error (worded as a
/// failed invocation is, see [`MethodError`]). Dropping the stream (the caller
/// cancelled or disconnected) drops whatever produces its items.
pub struct HubStream<T> {
    /// The items.
    items: Pin<Box<dyn Stream<Item = Result<T, MethodError>> + Send>>,
}

impl<T: Serialize + Send + 'static> HubStream<T> {
    /// Stream every item of `stream`.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        Self {
            items: Box::pin(stream.map(Ok)),
        }
    }

    /// Stream the items of `stream` until it yields an error, which ends the stream with
    /// a completion error.
    pub fn try_new<S, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        E: Into<MethodError> + 'static,
    {
        Self {
            items: Box::pin(stream.map(|item| item.map_err(Into::into))),
        }
    }

    /// Stream what is sent into the channel, until every sender is gone: the shape of
    /// ASP.NET Core's `ChannelReader<T>`. A bounded channel makes the producer wait for
    /// the client.
    pub fn from_receiver(mut receiver: mpsc::Receiver<T>) -> Self {
        Self::new(futures_util::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        }))
    }
}

impl<T> fmt::Debug for HubStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubStream")
            .field("item", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + Send + 'static> IntoHubResult for HubStream<T> {
    const STREAMING: bool = true;

    fn into_hub_result(self, _protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        Err(MethodError::internal(
            "a stream is sent item by item, not as one result",
        ))
    }

    fn into_outcome(self, protocol: Protocol) -> Outcome {
        let items = self.items.map(move |item| {
            item.and_then(|value| {
                EncodedValue::encode(protocol, &value).map_err(MethodError::internal)
            })
        });
        Outcome(Ok(Reply::Stream(Box::pin(items))))
    }
}

impl<T, E> IntoHubResult for Result<HubStream<T>, E>
where
    T: Serialize + Send + 'static,
    E: Into<MethodError> + Send,
{
    const STREAMING: bool = true;

    fn into_hub_result(self, protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        self.map_err(Into::into)?.into_hub_result(protocol)
    }

    fn into_outcome(self, protocol: Protocol) -> Outcome {
        match self {
            Ok(stream) => stream.into_outcome(protocol),
            Err(error) => Outcome(Err(Failure::Method(error.into()))),
        }
    }
}

/// What arrives for an upload stream.
#[derive(Debug)]
pub(crate) enum Upload {
    /// One item, still encoded.
    Item(EncodedValue),
    /// The caller completed the stream with this error.
    Failed(String),
}

/// A hub method parameter fed by one of the caller's streams (client-to-server
/// streaming). It takes no positional argument: upload streams are bound in the order
/// the caller listed them (`streamIds`).
///
/// ```
/// use hub_server::{MethodError, UploadStream};
///
/// async fn sum(mut numbers: UploadStream<i64>) -> Result<i64, MethodError> {
///     let mut total = 0;
///     while let Some(number) = numbers.next().await {
///         total += number?;
///     }
///     Ok(total)
/// }
/// ```
pub struct UploadStream<T> {
    /// Items routed here by the connection's reader.
    receiver: mpsc::Receiver<Upload>,
    /// Removes the stream from the connection's books when dropped, so later items for
    /// it get an error instead of piling up.
    _registration: UploadRegistration,
    /// The item type.
    item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> UploadStream<T> {
    /// The next item; `None` once the caller completed the stream. An item that does
    /// not deserialize into `T`, or the caller completing the stream with an error, is an
    /// `Err` meant for the caller (`?` in the method sends it back in the completion).
    pub async fn next(&mut self) -> Option<Result<T, MethodError>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, MethodError>>> {
        self.receiver.poll_recv(cx).map(|upload| {
            upload.map(|upload| match upload {
                Upload::Item(value) => value.deserialize::<T>().map_err(|error| {
                    MethodError::new(format!("an item of the upload stream is invalid: {error}"))
                }),
                Upload::Failed(error) => Err(MethodError::new(format!(
                    "the client completed the upload stream with an error: {error}"
                ))),
            })
        })
    }
}

impl<T: DeserializeOwned> Stream for UploadStream<T> {
    type Item = Result<T, MethodError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

impl<T> fmt::Debug for UploadStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadStream")
            .field("stream_id", &self._registration.stream_id)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned + Send + 'static> FromInvocation for UploadStream<T> {
    const ARGUMENTS: usize = 0;
    const STREAMS: usize = 1;

    fn from_invocation(context: &mut InvocationContext) -> Result<Self, BindError> {
        let stream_id = context.next_stream_id().ok_or_else(|| {
            BindError::arguments("the method takes more upload streams than the client sent")
        })?;
        let streams = &context.connection.streams;
        let (sender, receiver) = mpsc::channel(context.services.upload_buffer.max(1));
        lock(&streams.uploads).insert(stream_id.clone(), sender);
        Ok(UploadStream {
            receiver,
            _registration: UploadRegistration {
                streams: streams.clone(),
                stream_id,
            },
            item: PhantomData,
        })
    }
}

/// Keeps an upload stream in its connection's books while its [`UploadStream`] lives.
struct UploadRegistration {
    /// The connection's books.
    streams: Arc<ConnectionStreams>,
    /// The stream's id, chosen by the client.
    stream_id: String,
}

impl Drop for UploadRegistration {
    fn drop(&mut self) {
        lock(&self.streams.uploads).remove(&self.stream_id);
    }
}

/// The streams one connection has open, in both directions.
#[derive(Debug, Default)]
pub(crate) struct ConnectionStreams {
    /// Upload streams bound to running methods, by the id the client gave them.
    pub(crate) uploads: Mutex<HashMap<String, mpsc::Sender<Upload>>>,
    /// Running server-to-client streams, by invocation id: the handle cancels one.
    pub(crate) downloads: Mutex<HashMap<String, AbortHandle>>,
}

impl ConnectionStreams {
    /// The upload stream `stream_id`'s channel, if it is open.
    pub(crate) fn upload(&self, stream_id: &str) -> Option<mpsc::Sender<Upload>> {
        lock(&self.uploads).get(stream_id).cloned()
    }

    /// Close the upload stream `stream_id` (the caller completed it); whether it was open.
    pub(crate) fn close_upload(&self, stream_id: &str) -> Option<mpsc::Sender<Upload>> {
        lock(&self.uploads).remove(stream_id)
    }

    /// How many upload streams are open.
    pub(crate) fn upload_count(&self) -> usize {
        lock(&self.uploads).len()
    }

    /// Whether any of `ids` is already an open upload stream.
    pub(crate) fn any_upload_open(&self, ids: &[String]) -> bool {
        let uploads = lock(&self.uploads);
        ids.iter().any(|id| uploads.contains_key(id))
    }
}

pub(crate) use backplane_core::lock;
