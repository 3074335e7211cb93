//! The Server-Sent Events transport: frames go out as `data:` events on one long
//! `text/event-stream` response; the client sends with `POST` (`super::posted`).
//!
//! Text only (the JSON protocol): a MessagePack handshake is refused, as ASP.NET Core
//! refuses it. Keep-alive and the client timeout work as over a WebSocket: the server
//! sends hub Pings as events, and the client POSTs its own Pings. The connection ends
//! when the client closes the event stream (the response body is dropped), when the core
//! ends it, or on the client timeout.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use hub_protocol::TransferFormat;
use tokio::sync::mpsc;

use super::FrameSink;
use super::http_connections::{HttpConnection, Registration};
use super::posted::PostedBytes;
use crate::connection::{self, Accepted};
use crate::hub::HubShared;

/// How many flushed batches of events may wait for the client's TCP connection before
/// the writer waits (and the connection's send queue, which is bounded, fills instead).
const EVENT_BUFFER: usize = 4;

/// The first bytes of the stream, sent at once: a comment. The official clients' `start`
/// resolves on the EventSource's `open`, which some proxies and browsers only report once
/// body bytes arrive.
const OPENING_COMMENT: &[u8] = b":\r\n";

/// Open the event stream of a new connection, and serve the connection until it ends.
pub(crate) fn start(
    hub: Arc<HubShared>,
    connection: Arc<HttpConnection>,
    chunks: mpsc::Receiver<Bytes>,
    accepted: Accepted,
    registration: Registration,
) -> Response {
    let (events, outgoing) = mpsc::channel::<Bytes>(EVENT_BUFFER);
    let disconnect_timeout = hub.options.long_polling_disconnect_timeout;
    let task_connection = connection.clone();
    tokio::spawn(async move {
        let mut incoming = PostedBytes::new(chunks, task_connection, disconnect_timeout);
        let sink = EventSink {
            events: Some(events),
            out: BytesMut::new(),
        };
        connection::serve(hub, &mut incoming, sink, accepted).await;
        drop(registration);
    });
    // Dropping the body (the client closed the stream, or went away) ends the connection.
    let guard = EndOnDrop(connection);
    let opening = futures_util::stream::once(async { Ok(Bytes::from_static(OPENING_COMMENT)) });
    let frames =
        futures_util::stream::unfold((outgoing, guard), |(mut outgoing, guard)| async move {
            let bytes = outgoing.recv().await?;
            Some((Ok::<_, Infallible>(bytes), (outgoing, guard)))
        });
    let body = Body::from_stream(futures_util::StreamExt::chain(opening, frames));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Asks nginx-style proxies not to hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Ends the connection when the event stream's body is dropped.
struct EndOnDrop(Arc<HttpConnection>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The connection core's [`FrameSink`] for Server-Sent Events.
#[derive(Debug)]
struct EventSink {
    /// Into the response body; `None` once closed.
    events: Option<mpsc::Sender<Bytes>>,
    /// Events formatted since the last flush.
    out: BytesMut,
}

/// Append `frame` to `out` as one event: a `data: ` line per line of the frame, then an
/// empty line.
fn write_event(out: &mut BytesMut, frame: &[u8]) {
    for line in frame.split(|&byte| byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the event stream has closed")
}

impl FrameSink for EventSink {
    const TRANSPORT: &'static str = "server_sent_events";

    const SUPPORTS_BINARY: bool = false;

    async fn feed(&mut self, frame: Bytes, format: TransferFormat) -> io::Result<()> {
        if format == TransferFormat::Binary {
            // The handshake refuses binary protocols on this transport.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Server-Sent Events carry text only",
            ));
        }
        write_event(&mut self.out, &frame);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let events = self.events.as_ref().ok_or_else(closed)?;
        let bytes = std::mem::take(&mut self.out).freeze();
        events.send(bytes).await.map_err(|_| closed())
    }

    async fn close(&mut self) -> io::Result<()> {
        let flushed = self.flush().await;
        // Dropping the sender ends the response body.
        self.events = None;
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_of_a_frame_is_a_data_line() {
        let mut out = BytesMut::new();
        write_event(&mut out, b"{\"type\":6}\x1e");
        assert_eq!(&out[..], b"data: {\"type\":6}\x1e\r\n\r\n");
        out.clear();
        write_event(&mut out, b"a\r\nb\nc");
        assert_eq!(&out[..], b"data: a\r\ndata: b\r\ndata: c\r\n\r\n");
    }
}
