//! The client-to-server half of Server-Sent Events and long polling: `POST {hub}?id=`
//! bodies, streamed into the connection core.
//!
//! A POST handler hands its body to the connection a chunk at a time through the
//! connection's small bounded channel, and answers once the whole body is consumed. When
//! the hub is behind, the core stops reading, the channel fills, the handler stops polling
//! the body and TCP pushes back on the client: a body of any size passes in bounded
//! memory, and each hub message in it is limited by `max_message_size`, as over a
//! WebSocket.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::time::{Instant, sleep};

use super::http_connections::{HttpConnection, Transport};
use super::long_polling::Liveness;
use super::{Incoming, Received, TransportError};
use crate::endpoints::plain;

/// The largest piece of a POST body handed to the connection at once.
pub(crate) const MAX_CHUNK: usize = 16 * 1024;

/// How often a long-polling connection's reader checks whether its client still polls.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// The client's bytes from its POST requests: the connection core's [`Incoming`] for
/// Server-Sent Events and long polling.
#[derive(Debug)]
pub(crate) struct PostedBytes {
    /// The receiving end of the connection's POST channel.
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    /// The connection, to see it ended (`DELETE`, dropped event stream) and, for long
    /// polling, whether its client still polls.
    connection: Arc<HttpConnection>,
    /// Long polling: a connection with no poll open for this long is closed.
    disconnect_timeout: Duration,
}

impl PostedBytes {
    pub(crate) fn new(
        chunks: tokio::sync::mpsc::Receiver<Bytes>,
        connection: Arc<HttpConnection>,
        disconnect_timeout: Duration,
    ) -> Self {
        Self {
            chunks,
            connection,
            disconnect_timeout,
        }
    }
}

impl Incoming for PostedBytes {
    /// Activity rule: bytes from a POST count, and for long polling an open poll counts
    /// (checked each second), since a polling client may have nothing to send for longer
    /// than the client timeout and sends no Pings. A long-polling client with no poll open
    /// for the disconnect timeout has gone: the transport is then closed, as ASP.NET Core
    /// closes such connections.
    async fn read(&mut self, buf: &mut BytesMut) -> Result<Received, TransportError> {
        let polls = match &self.connection.transport {
            Transport::LongPolling(polls) => Some(polls),
            Transport::ServerSentEvents => None,
        };
        loop {
            let check = async {
                match polls {
                    Some(_) => sleep(LIVENESS_CHECK).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                chunk = self.chunks.recv() => {
                    return match chunk {
                        Some(chunk) => {
                            buf.extend_from_slice(&chunk);
                            Ok(Received::Activity)
                        }
                        // The connection holds the sender: not before it is gone.
                        None => Ok(Received::Closed),
                    };
                }
                () = self.connection.ended() => return Ok(Received::Closed),
                () = check => {
                    if let Some(polls) = polls {
                        match polls.liveness(self.disconnect_timeout, Instant::now()) {
                            Liveness::Polling => return Ok(Received::Activity),
                            Liveness::Between => {}
                            Liveness::Gone => return Ok(Received::Closed),
                        }
                    }
                }
            }
        }
    }
}

/// `POST {hub}?id=` for a live Server-Sent Events or long-polling connection.
pub(crate) async fn send(connection: &Arc<HttpConnection>, body: Body) -> Response {
    let Some(_sending) = connection.start_sending() else {
        return plain(
            StatusCode::CONFLICT,
            "Another send request is already in progress for this connection: send the next POST once the previous one has been answered.",
        );
    };
    let mut body = body.into_data_stream();
    while let Some(chunk) = body.next().await {
        let mut chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                // The client broke off its own request; nobody reads this answer.
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("Cannot read the request body: {error}"),
                );
            }
        };
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(MAX_CHUNK));
            if connection.posts.send(piece).await.is_err() {
                return gone();
            }
        }
    }
    if connection.is_ended() {
        return gone();
    }
    plain(StatusCode::OK, "")
}

/// The answer to a POST whose connection ended while its body was being read.
fn gone() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "The connection has ended while this request was being read (its Close message, if any, says why): negotiate and connect again.",
    )
}
