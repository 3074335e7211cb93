//! The calls that stream: [`HubConnection::stream`] (the server streams to the client) and
//! the `*_with_streams` calls (the client uploads streams to the hub method).

use bytes::{Bytes, BytesMut};
use hub_protocol::{
    Arguments, HubMessage, Invocation, StreamInvocation, encode_message, encode_stream_invocation,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use crate::client_stream::{ClientStream, Uploads};
use crate::connection::HubConnection;
use crate::error::InvokeError;
use crate::in_flight::StreamSink;
use crate::outgoing::{Outgoing, Reply};
use crate::pending::PendingInvoke;
use crate::server_stream::ServerStream;

impl HubConnection {
    /// Calls the streaming hub method `method` (one returning `IAsyncEnumerable<T>` or
    /// `ChannelReader<T>` on ASP.NET Core, `HubStream<T>` on `hub-server`) and returns its
    /// items as they come, each deserialized into `T`.
    ///
    /// See [`invoke`](Self::invoke) for what `arguments` may be, and [`ServerStream`] for
    /// how the stream ends, what dropping it does, and how buffering is bounded.
    ///
    /// ```
    /// # async fn count(connection: chat_client::HubConnection) -> Result<(), chat_client::InvokeError> {
    /// use futures_util::StreamExt;
    ///
    /// let mut numbers = connection.stream::<u64, _>("Counter", (10, 0)).await?;
    /// while let Some(number) = numbers.next().await {
    ///     println!("{}", number?);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvokeError::NotConnected`] when there is no connection to send the call on, and
    /// [`InvokeError::Encode`] when the arguments do not serialize. Errors after the call
    /// was sent are items of the stream.
    pub async fn stream<T, A>(
        &self,
        method: &str,
        arguments: A,
    ) -> Result<ServerStream<T>, InvokeError>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        self.stream_with_streams(method, arguments, []).await
    }

    /// [`stream`](Self::stream), with upload streams for the method's stream parameters
    /// (see [`invoke_with_streams`](Self::invoke_with_streams)). The uploads stop when the
    /// returned stream ends or is dropped.
    ///
    /// # Errors
    ///
    /// As [`stream`](Self::stream).
    pub async fn stream_with_streams<T, A>(
        &self,
        method: &str,
        arguments: A,
        streams: impl IntoIterator<Item = ClientStream>,
    ) -> Result<ServerStream<T>, InvokeError>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        let id = self.inner.next_id();
        let streams = self.number(streams);
        let frame = self.encode_call(Kind::Stream(&id), method, &arguments, &streams)?;
        let outgoing = self.inner.sender()?;
        let cancels = self
            .inner
            .cancels()
            .ok_or(InvokeError::NotConnected(self.state()))?;
        let (items_tx, items) = mpsc::channel(self.inner.config.stream_buffer_capacity);
        let (end_tx, end) = oneshot::channel();
        let sink = StreamSink {
            items: items_tx,
            end: end_tx,
        };
        self.inner
            .enqueue_on(
                &outgoing,
                Outgoing {
                    frame,
                    reply: Reply::Stream {
                        id: id.clone(),
                        sink,
                    },
                },
            )
            .await?;
        let uploads = Uploads::start(self.protocol(), streams, &outgoing);
        Ok(ServerStream::new(id, items, end, cancels, uploads))
    }

    /// [`invoke`](Self::invoke) with upload streams: `arguments` are the ordinary
    /// arguments, and `streams` feed the method's stream parameters, in order (the
    /// position of a stream parameter among the others does not matter on the wire).
    ///
    /// The streams start once the call is queued and are stopped when the call completes
    /// (or this future is dropped).
    ///
    /// ```
    /// # async fn sum(connection: chat_client::HubConnection) -> Result<(), chat_client::InvokeError> {
    /// use chat_client::ClientStream;
    ///
    /// let numbers = ClientStream::new(futures_util::stream::iter(1..=100_i64));
    /// let total: i64 = connection.invoke_with_streams("Sum", (), [numbers]).await?;
    /// assert_eq!(total, 5050);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`invoke`](Self::invoke).
    pub async fn invoke_with_streams<T, A>(
        &self,
        method: &str,
        arguments: A,
        streams: impl IntoIterator<Item = ClientStream>,
    ) -> Result<T, InvokeError>
    where
        T: DeserializeOwned,
        A: Serialize,
    {
        let id = self.inner.next_id();
        let streams = self.number(streams);
        let frame = self.encode_call(Kind::Invoke(&id), method, &arguments, &streams)?;
        let outgoing = self.inner.sender()?;
        let (reply, completion) = oneshot::channel();
        self.inner
            .enqueue_on(
                &outgoing,
                Outgoing {
                    frame,
                    reply: Reply::Completion { id, reply },
                },
            )
            .await?;
        let _uploads = Uploads::start(self.protocol(), streams, &outgoing);
        PendingInvoke::new(self.protocol(), completion).await
    }

    /// [`send`](Self::send) with upload streams (see
    /// [`invoke_with_streams`](Self::invoke_with_streams)). Returns once the call is
    /// written; the streams go on until they end or the connection is lost.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn send_with_streams<A: Serialize>(
        &self,
        method: &str,
        arguments: A,
        streams: impl IntoIterator<Item = ClientStream>,
    ) -> Result<(), InvokeError> {
        let streams = self.number(streams);
        let frame = self.encode_call(Kind::Send, method, &arguments, &streams)?;
        let outgoing = self.inner.sender()?;
        let (reply, sent) = oneshot::channel();
        self.inner
            .enqueue_on(
                &outgoing,
                Outgoing {
                    frame,
                    reply: Reply::Sent(reply),
                },
            )
            .await?;
        Uploads::start(self.protocol(), streams, &outgoing).detach();
        sent.await
            .map_err(|_| InvokeError::ConnectionLost(crate::DisconnectReason::TransportClosed))?
    }

    /// Gives each upload stream its id (from the invocation ids, as the official clients
    /// do).
    fn number(
        &self,
        streams: impl IntoIterator<Item = ClientStream>,
    ) -> Vec<(String, ClientStream)> {
        streams
            .into_iter()
            .map(|stream| (self.inner.next_id(), stream))
            .collect()
    }

    /// Encodes the call, naming the upload streams in `streamIds`.
    fn encode_call<A: Serialize>(
        &self,
        kind: Kind<'_>,
        method: &str,
        arguments: &A,
        streams: &[(String, ClientStream)],
    ) -> Result<Bytes, InvokeError> {
        let protocol = self.protocol();
        if streams.is_empty() {
            // The common case, without the copy through `Arguments`.
            return match kind {
                Kind::Invoke(id) => self.encode(Some(id), method, arguments),
                Kind::Send => self.encode(None, method, arguments),
                Kind::Stream(id) => {
                    let mut frame = BytesMut::new();
                    encode_stream_invocation(protocol, &mut frame, id, method, arguments)?;
                    Ok(frame.freeze())
                }
            };
        }
        let arguments = Arguments::encode(protocol, arguments)?;
        let stream_ids = streams.iter().map(|(id, _)| id.clone()).collect();
        let message = match kind {
            Kind::Invoke(_) | Kind::Send => HubMessage::Invocation(Invocation {
                headers: Default::default(),
                invocation_id: match kind {
                    Kind::Invoke(id) => Some(id.to_owned()),
                    _ => None,
                },
                target: method.to_owned(),
                arguments,
                stream_ids,
            }),
            Kind::Stream(id) => HubMessage::StreamInvocation(StreamInvocation {
                headers: Default::default(),
                invocation_id: id.to_owned(),
                target: method.to_owned(),
                arguments,
                stream_ids,
            }),
        };
        let mut frame = BytesMut::new();
        encode_message(protocol, &mut frame, &message)?;
        Ok(frame.freeze())
    }
}

/// Which message a call is.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// An Invocation with this id (`invoke`).
    Invoke(&'a str),
    /// An Invocation without id (`send`).
    Send,
    /// A StreamInvocation with this id.
    Stream(&'a str),
}
