//! What Server-Sent Events and long polling share: frames arrive from a reader task (the
//! event stream or the poll loop) through a bounded channel, sends are `POST {hub}?id=`
//! on a kept-alive connection of their own, and closing stops the reader.

use std::time::Duration;

use bytes::Bytes;
use hub_protocol::TransferFormat;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::TransportType;
use crate::error::{ConnectError, DisconnectReason};
use crate::http::HttpClient;

/// How many chunks the reader may hold ahead of the connection; past it the reader stops
/// reading, and TCP tells the server to wait.
pub(super) const CHUNK_QUEUE: usize = 16;

/// The largest answer to a send (the server answers with an empty body or a short error).
const MAX_SEND_ANSWER: usize = 4 * 1024;

/// How long closing waits for long polling's `DELETE`.
const DELETE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the reader task hands over: bytes, or why it stopped (a closed channel without an
/// error means the server ended the connection).
pub(super) type Chunk = Result<Bytes, String>;

/// An open Server-Sent Events or long-polling transport.
#[derive(Debug)]
pub(crate) struct HttpTransport {
    /// Which of the two.
    transport: TransportType,
    /// Sends, and long polling's `DELETE`.
    sender: HttpClient,
    /// `{hub}?id=...`: where sends and the `DELETE` go.
    target: String,
    /// What the reader task received.
    chunks: mpsc::Receiver<Chunk>,
    /// The event stream or the poll loop; stopped on close and drop.
    reader: JoinHandle<()>,
}

impl HttpTransport {
    pub(super) fn new(
        transport: TransportType,
        sender: HttpClient,
        target: String,
        chunks: mpsc::Receiver<Chunk>,
        reader: JoinHandle<()>,
    ) -> Self {
        HttpTransport {
            transport,
            sender,
            target,
            chunks,
            reader,
        }
    }

    pub(super) fn transport_type(&self) -> TransportType {
        self.transport
    }

    /// The reason for a failed request.
    fn failed(&self, reason: String) -> DisconnectReason {
        DisconnectReason::HttpTransport {
            transport: self.transport,
            reason,
        }
    }

    /// `POST`s frames; the server answers 200 once it took them.
    pub(super) async fn send(
        &mut self,
        frames: Bytes,
        format: TransferFormat,
    ) -> Result<(), DisconnectReason> {
        let content_type = match format {
            TransferFormat::Text => HeaderValue::from_static("text/plain;charset=UTF-8"),
            TransferFormat::Binary => HeaderValue::from_static("application/octet-stream"),
        };
        let answer = self
            .sender
            .exchange(
                Method::POST,
                &self.target,
                &[(CONTENT_TYPE, content_type)],
                frames,
                MAX_SEND_ANSWER,
            )
            .await
            .map_err(|error| self.failed(format!("send failed: {error}")))?;
        match answer.status {
            StatusCode::OK => Ok(()),
            // The connection is gone on the server (closed, timed out, or replaced).
            StatusCode::NOT_FOUND => Err(DisconnectReason::TransportClosed),
            status => Err(self.failed(format!(
                "send answered {status}: {}",
                String::from_utf8_lossy(&answer.body)
            ))),
        }
    }

    /// The next chunk from the reader. Cancel-safe.
    pub(super) async fn receive(&mut self) -> Result<Bytes, DisconnectReason> {
        match self.chunks.recv().await {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(reason)) => Err(self.failed(reason)),
            None => Err(DisconnectReason::TransportClosed),
        }
    }

    /// Stops the reader (which ends the event stream, or the poll in flight) and, for long
    /// polling, tells the server with `DELETE` (an event stream's end tells it already).
    pub(super) async fn close(&mut self) {
        self.reader.abort();
        self.chunks.close();
        if self.transport == TransportType::LongPolling {
            let delete = self.sender.exchange(
                Method::DELETE,
                &self.target,
                &[],
                Bytes::new(),
                MAX_SEND_ANSWER,
            );
            match tokio::time::timeout(DELETE_TIMEOUT, delete).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::debug!(%error, "long polling DELETE failed"),
                Err(_) => tracing::debug!("long polling DELETE timed out"),
            }
        }
    }
}

impl Drop for HttpTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The reader's report of a failed request, for the channel.
pub(super) fn request_failed(what: &str, error: &ConnectError) -> Chunk {
    Err(format!("{what} failed: {error}"))
}
