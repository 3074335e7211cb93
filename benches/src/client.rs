//! A lean SignalR client for load generation: negotiate, WebSocket, the JSON hub protocol.
//!
//! It does what the official clients do on the wire (`POST {hub}/negotiate?negotiateVersion=1`,
//! a WebSocket to `{hub}?id={token}`, the handshake `{"protocol":"json","version":1}`, JSON
//! frames ending in 0x1E) and nothing more: no reconnect, no handler registry, no typed
//! dispatch. Writing and reading are separate halves ([`FrameWriter`], [`FrameReader`]) so a
//! sender can stream invocations while another task reads their completions.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Limited};
use hub_protocol::{
    DecodeError, Decoder, HandshakeDecoder, HandshakeRequest, HubMessage, Protocol,
    encode_invocation, encode_ping,
};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// The chat hub's path on a `hub-server`.
pub const HUB_PATH: &str = "/chathub";

/// Largest hub message the client accepts (the server's default limit).
const MAX_MESSAGE_SIZE: usize = 32 * 1024;

/// Largest negotiate answer accepted; real ones are a few hundred bytes.
const MAX_NEGOTIATE_BODY: usize = 64 * 1024;

/// A WebSocket over plain TCP.
type Socket = WebSocketStream<TcpStream>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL is not `http://host:port`.
    #[error("invalid server url {0:?}: expected http://host:port")]
    InvalidUrl(String),
    /// No TCP connection could be made.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address dialled.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The negotiate request failed or its answer was unusable.
    #[error("negotiate with {address} failed: {reason}")]
    Negotiate {
        /// The server.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The WebSocket failed.
    #[error("websocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// The server refused the handshake or answered something else.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server sent a frame that is not valid hub protocol.
    #[error("invalid frame from the server: {0}")]
    Protocol(#[from] DecodeError),
    /// Arguments that cannot be encoded as JSON.
    #[error("cannot encode an invocation of {target}: {reason}")]
    Encode {
        /// The hub method.
        target: String,
        /// The encoder's error.
        reason: String,
    },
    /// A step did not finish in time.
    #[error("{step} timed out after {after:?}")]
    Timeout {
        /// Which step.
        step: &'static str,
        /// How long it was given.
        after: Duration,
    },
}

/// How to open connections.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Bound on negotiate, the WebSocket upgrade and the handshake, each.
    pub step_timeout: Duration,
    /// The WebSocket read buffer per connection (tungstenite's default is 128 KiB, which
    /// adds up with thousands of idle connections).
    pub read_buffer_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(10),
            read_buffer_size: 16 * 1024,
        }
    }
}

/// A connected client: handshake done, ready for hub messages.
#[derive(Debug)]
pub struct HubClient {
    /// The public connection id the server assigned at negotiate.
    pub connection_id: String,
    /// Writes frames.
    pub writer: FrameWriter,
    /// Reads and decodes frames.
    pub reader: FrameReader,
}

/// The sending half of a connection.
#[derive(Debug)]
pub struct FrameWriter {
    /// The WebSocket's sending half.
    sink: SplitSink<Socket, Message>,
    /// Encoding buffer; each frame is split off it, so it is reused.
    buf: BytesMut,
}

/// The receiving half of a connection.
#[derive(Debug)]
pub struct FrameReader {
    /// The WebSocket's receiving half.
    stream: SplitStream<Socket>,
    /// Bytes received and not yet decoded.
    buf: BytesMut,
    /// Splits the bytes into hub messages.
    decoder: Decoder,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NegotiateResponse {
    connection_id: Option<String>,
    connection_token: Option<String>,
    error: Option<String>,
}

/// `host:port` of an `http://host:port` URL.
fn address_of(server: &str) -> Result<&str, ClientError> {
    server
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| ClientError::InvalidUrl(server.to_owned()))
}

async fn dial(address: &str) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|source| ClientError::Connect {
            address: address.to_owned(),
            source,
        })?;
    // Small frames must not wait for delayed ACKs.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn within<T>(
    step: &'static str,
    after: Duration,
    future: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(after, future)
        .await
        .map_err(|_| ClientError::Timeout { step, after })?
}

/// `POST {hub}/negotiate?negotiateVersion=1`; the connection id and token.
async fn negotiate(address: &str) -> Result<(String, String), ClientError> {
    let failed = |reason: String| ClientError::Negotiate {
        address: address.to_owned(),
        reason,
    };
    let stream = dial(address).await?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{HUB_PATH}/negotiate?negotiateVersion=1"))
        .header(HOST, address)
        .header(CONTENT_LENGTH, "0")
        .body(Empty::<Bytes>::new())
        .map_err(|error| failed(error.to_string()))?;
    let (status, body) = exchange(stream, request, MAX_NEGOTIATE_BODY)
        .await
        .map_err(failed)?;
    if !status.is_success() {
        return Err(failed(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let answer: NegotiateResponse =
        serde_json::from_slice(&body).map_err(|error| failed(error.to_string()))?;
    if let Some(error) = answer.error {
        return Err(failed(format!("the server refused: {error}")));
    }
    match (answer.connection_id, answer.connection_token) {
        (Some(id), Some(token)) => Ok((id, token)),
        _ => Err(failed(
            "no connectionId/connectionToken in the answer".into(),
        )),
    }
}

/// One HTTP/1.1 request on `stream`: the answer's status and body (an error past
/// `max_body` bytes).
pub(crate) async fn exchange(
    stream: TcpStream,
    request: Request<Empty<Bytes>>,
    max_body: usize,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    // Drives the HTTP connection; it ends when the answer is read and `sender` dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok((status, body))
}

impl HubClient {
    /// Negotiate with the chat hub of `server` (`http://host:port`), open the WebSocket and
    /// complete the JSON handshake.
    ///
    /// # Errors
    ///
    /// A [`ClientError`] naming the step that failed.
    pub async fn connect(server: &str, options: ClientOptions) -> Result<HubClient, ClientError> {
        let address = address_of(server)?;
        let step = options.step_timeout;
        let (connection_id, token) = within("negotiate", step, negotiate(address)).await?;
        let config = WebSocketConfig::default()
            .read_buffer_size(options.read_buffer_size)
            .max_message_size(Some(MAX_MESSAGE_SIZE))
            .max_frame_size(Some(MAX_MESSAGE_SIZE));
        let url = format!("ws://{address}{HUB_PATH}?id={token}");
        let socket = within("websocket upgrade", step, async {
            let stream = dial(address).await?;
            let (socket, _response) =
                tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
            Ok(socket)
        })
        .await?;
        let (sink, stream) = socket.split();
        let mut writer = FrameWriter {
            sink,
            buf: BytesMut::with_capacity(512),
        };
        let mut reader = FrameReader {
            stream,
            buf: BytesMut::with_capacity(512),
            decoder: Decoder::new(Protocol::Json, MAX_MESSAGE_SIZE),
        };
        within("handshake", step, async {
            HandshakeRequest::new(Protocol::Json).encode(&mut writer.buf);
            let request = writer.buf.split().freeze();
            writer.send_text(request).await?;
            reader.handshake().await
        })
        .await?;
        Ok(HubClient {
            connection_id,
            writer,
            reader,
        })
    }
}

impl FrameWriter {
    /// Queue an invocation of `target` (with `invocation_id` if a completion is wanted)
    /// without flushing; call [`FrameWriter::flush`] after a batch.
    ///
    /// # Errors
    ///
    /// The WebSocket's error, or [`ClientError::Encode`].
    pub async fn feed_invocation<A: Serialize + ?Sized>(
        &mut self,
        invocation_id: Option<&str>,
        target: &str,
        arguments: &A,
    ) -> Result<(), ClientError> {
        encode_invocation(
            Protocol::Json,
            &mut self.buf,
            invocation_id,
            target,
            arguments,
        )
        .map_err(|error| ClientError::Encode {
            target: target.to_owned(),
            reason: error.to_string(),
        })?;
        let frame = self.buf.split().freeze();
        self.sink.feed(Message::Text(text_of(frame)?)).await?;
        Ok(())
    }

    /// Write everything queued.
    ///
    /// # Errors
    ///
    /// The WebSocket's error.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.sink.flush().await?;
        Ok(())
    }

    /// Send a Ping hub message, so the server's client timeout never fires.
    ///
    /// # Errors
    ///
    /// The WebSocket's error.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        encode_ping(Protocol::Json, &mut self.buf);
        let frame = self.buf.split().freeze();
        self.send_text(frame).await
    }

    /// Close the WebSocket.
    ///
    /// # Errors
    ///
    /// The WebSocket's error.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.sink.close().await?;
        Ok(())
    }

    async fn send_text(&mut self, frame: Bytes) -> Result<(), ClientError> {
        self.sink.send(Message::Text(text_of(frame)?)).await?;
        Ok(())
    }
}

/// A JSON frame as WebSocket text (our encoder only writes UTF-8).
fn text_of(frame: Bytes) -> Result<Utf8Bytes, ClientError> {
    Utf8Bytes::try_from(frame)
        .map_err(|_| tungstenite::Error::Utf8("JSON frame is not UTF-8".into()).into())
}

impl FrameReader {
    /// The next hub message, or `None` when the server closed the connection.
    ///
    /// # Errors
    ///
    /// The WebSocket's error, or [`ClientError::Protocol`] for an undecodable frame.
    pub async fn next(&mut self) -> Result<Option<HubMessage>, ClientError> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(message)) => return Ok(Some(message)),
                Ok(None) => {}
                // Later protocol versions may add types; receivers ignore them.
                Err(error) if error.can_continue() => continue,
                Err(error) => return Err(error.into()),
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Read one WebSocket message into the buffer; `false` when the connection closed.
    async fn read_more(&mut self) -> Result<bool, ClientError> {
        match self.stream.next().await {
            Some(Ok(Message::Text(text))) => self.buf.extend_from_slice(text.as_bytes()),
            Some(Ok(Message::Binary(data))) => self.buf.extend_from_slice(&data),
            Some(Ok(Message::Close(_))) | None => return Ok(false),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
        }
        Ok(true)
    }

    /// Read the handshake response; what follows it stays buffered.
    async fn handshake(&mut self) -> Result<(), ClientError> {
        let mut decoder = HandshakeDecoder::new(MAX_MESSAGE_SIZE);
        loop {
            match decoder.decode_response(&mut self.buf) {
                Ok(Some(response)) => {
                    return match response.error {
                        None => Ok(()),
                        Some(error) => Err(ClientError::Handshake(error)),
                    };
                }
                Ok(None) => {}
                Err(error) => return Err(ClientError::Handshake(error.to_string())),
            }
            if !self.read_more().await? {
                return Err(ClientError::Handshake(
                    "the server closed the connection during the handshake".into(),
                ));
            }
        }
    }
}
