//! The Server-Sent Events transport: `GET {hub}?id=` with `Accept: text/event-stream`,
//! one event per frame (its `data:` lines joined by newlines), sends as `POST`s. Text only:
//! MessagePack cannot use it.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;

use super::TransportType;
use super::http_transport::{CHUNK_QUEUE, Chunk, HttpTransport};
use crate::config::Config;
use crate::error::ConnectError;
use crate::http::HttpClient;
use crate::url::HubUrl;

/// Room for the `data: ` prefixes and line ends around a frame of the largest size.
const EVENT_OVERHEAD: usize = 64 * 1024;

/// Opens the event stream; returns once the server answered `200 text/event-stream`.
///
/// # Errors
///
/// [`ConnectError::TransportFailed`] when the server answers anything else, and what
/// dialing and the request can fail with.
pub(super) async fn open(
    url: &HubUrl,
    connection_token: &str,
    access_token: Option<&str>,
    config: &Config,
) -> Result<HttpTransport, ConnectError> {
    let failed = |reason: String| ConnectError::TransportFailed {
        transport: TransportType::ServerSentEvents,
        reason,
    };
    // The official clients put the token in the query for event streams (browsers cannot
    // set headers on them); this client sends the header as well.
    let target = url.connection_target(connection_token, access_token);
    let mut stream = HttpClient::new(url, access_token)?;
    let response = stream
        .request(
            Method::GET,
            &target,
            &[(ACCEPT, HeaderValue::from_static("text/event-stream"))],
            Bytes::new(),
        )
        .await?;
    let status = response.status();
    let is_event_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if status != StatusCode::OK {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|body| body.to_bytes());
        let text = body
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        return Err(failed(format!(
            "the event stream was answered {status}: {text}"
        )));
    }
    if !is_event_stream {
        return Err(failed(
            "the answer is not text/event-stream (a proxy in between?)".to_owned(),
        ));
    }
    let (chunks, receiver) = mpsc::channel(CHUNK_QUEUE);
    let limit = config.max_message_size.saturating_add(EVENT_OVERHEAD);
    let reader = tokio::spawn(async move {
        // Keeps the stream's connection open while it is read.
        let _stream = stream;
        read_events(response.into_body(), limit, chunks).await;
    });
    Ok(HttpTransport::new(
        TransportType::ServerSentEvents,
        HttpClient::new(url, access_token)?,
        url.connection_target(connection_token, None),
        receiver,
        reader,
    ))
}

/// Reads the event stream until it ends, handing each event's data over.
async fn read_events(mut body: Incoming, limit: usize, chunks: mpsc::Sender<Chunk>) {
    let mut parser = EventParser::new(limit);
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let _ = chunks
                    .send(Err(format!("the event stream failed: {error}")))
                    .await;
                return;
            }
            // The server ended the stream: the connection is over.
            None => return,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let events = match parser.push(&data) {
            Ok(events) => events,
            Err(reason) => {
                let _ = chunks.send(Err(reason)).await;
                return;
            }
        };
        for event in events {
            if chunks.send(Ok(event)).await.is_err() {
                return;
            }
        }
    }
}

/// Splits an event stream into the data of its events. Comments (`:` lines, such as the
/// server's opening one) and fields other than `data` are skipped.
#[derive(Debug)]
pub(super) struct EventParser {
    /// Bytes of a line not yet complete.
    line: BytesMut,
    /// The data lines of the event being read, joined by `\n`.
    data: BytesMut,
    /// Whether the event being read has a data line yet.
    has_data: bool,
    /// The largest line or event accepted: what the client may hold for one.
    limit: usize,
}

impl EventParser {
    pub(super) fn new(limit: usize) -> Self {
        EventParser {
            line: BytesMut::new(),
            data: BytesMut::new(),
            has_data: false,
            limit,
        }
    }

    /// Takes in bytes of the stream; the data of every event they complete.
    ///
    /// # Errors
    ///
    /// When a line or an event grows past the limit.
    pub(super) fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Bytes>, String> {
        let mut events = Vec::new();
        while !bytes.is_empty() {
            let Some(end) = bytes.iter().position(|&byte| byte == b'\n') else {
                self.line.extend_from_slice(bytes);
                self.check(self.line.len())?;
                break;
            };
            self.line.extend_from_slice(&bytes[..end]);
            bytes.advance(end + 1);
            let mut line = self.line.split();
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    events.push(self.data.split().freeze());
                }
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if self.has_data {
                    self.data.extend_from_slice(b"\n");
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                self.check(self.data.len())?;
            }
        }
        Ok(events)
    }

    fn check(&self, size: usize) -> Result<(), String> {
        if size > self.limit {
            return Err(format!(
                "an event of the stream is larger than {} bytes",
                self.limit
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_across_chunks_and_comments_skipped() {
        let mut parser = EventParser::new(1024);
        assert!(parser.push(b":\r\n").unwrap().is_empty());
        assert!(parser.push(b"data: {\"type\":6}\x1e\r").unwrap().is_empty());
        let events = parser.push(b"\n\r\ndata: a\r\ndata: b\r\n\r\nda").unwrap();
        assert_eq!(
            events,
            [&b"{\"type\":6}\x1e"[..], b"a\nb"].map(Bytes::from_static)
        );
        let events = parser.push(b"ta:c\n\nevent: x\n\n").unwrap();
        assert_eq!(events, [Bytes::from_static(b"c")]);
    }

    #[test]
    fn an_event_past_the_limit_is_an_error() {
        let mut parser = EventParser::new(16);
        assert!(parser.push(b"data: 1234567890").is_ok());
        assert!(parser.push(b"1").is_err());
        let mut parser = EventParser::new(8);
        assert!(parser.push(b"data: 1234\ndata: 5678\n").is_err());
    }
}
