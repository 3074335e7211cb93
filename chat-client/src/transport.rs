//! Establishing one physical connection: negotiate, open the WebSocket, do the handshake.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hub_protocol::{HandshakeDecoder, HandshakeRequest, Protocol};
use hyper::header::{AUTHORIZATION, HeaderValue};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::config::Config;
use crate::error::ConnectError;
use crate::negotiate::negotiate;
use crate::url::HubUrl;

/// The WebSocket the connection runs on (plain TCP: this build has no TLS).
pub(crate) type Socket = WebSocketStream<TcpStream>;

/// The largest handshake response accepted; real ones are `{}` plus a separator.
const MAX_HANDSHAKE_SIZE: usize = 16 * 1024;

/// An established connection, handshake done, ready for hub messages.
#[derive(Debug)]
pub(crate) struct Link {
    /// The WebSocket.
    pub(crate) socket: Socket,
    /// Bytes received after the handshake response in the same frame: the first hub
    /// messages, which must not be lost.
    pub(crate) received: BytesMut,
    /// The connection id from negotiate; `None` when negotiate was skipped.
    pub(crate) connection_id: Option<String>,
}

/// Negotiates (unless configured not to), opens the WebSocket and completes the handshake.
///
/// # Errors
///
/// Every [`ConnectError`] a step can produce, including timeouts.
pub(crate) async fn connect(config: &Config) -> Result<Link, ConnectError> {
    let access_token = match &config.access_token {
        Some(provider) => provider.token().await?,
        None => None,
    };
    let (url, connection_token, connection_id, access_token) = if config.skip_negotiation {
        (config.url.clone(), None, None, access_token)
    } else {
        let negotiated = negotiate(
            &config.url,
            config.protocol.transfer_format(),
            access_token,
            config.connect_timeout,
        )
        .await?;
        (
            negotiated.url,
            Some(negotiated.connection_token),
            Some(negotiated.connection_id),
            negotiated.access_token,
        )
    };

    let open = open_websocket(
        &url,
        connection_token.as_deref(),
        access_token.as_deref(),
        config,
    );
    let mut socket = tokio::time::timeout(config.connect_timeout, open)
        .await
        .map_err(|_| ConnectError::Timeout {
            step: "websocket connection",
            after: config.connect_timeout,
        })??;
    let handshake = handshake(&mut socket, config.protocol);
    let received = tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout {
            step: "handshake",
            after: config.handshake_timeout,
        })??;
    Ok(Link {
        socket,
        received,
        connection_id,
    })
}

/// Opens the WebSocket. The access token goes both in the `access_token` query parameter
/// (what servers read for browser clients, which cannot set headers) and in the
/// `Authorization` header (what ASP.NET Core reads by default).
async fn open_websocket(
    url: &HubUrl,
    connection_token: Option<&str>,
    access_token: Option<&str>,
    config: &Config,
) -> Result<Socket, ConnectError> {
    let websocket_error = |source| ConnectError::WebSocket {
        url: url.display(),
        source: Box::new(source),
    };
    let mut request = url
        .websocket_url(connection_token, access_token)
        .into_client_request()
        .map_err(websocket_error)?;
    if let Some(token) = access_token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ConnectError::AccessToken(
                "the access token contains characters not allowed in a header".into(),
            )
        })?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let stream = crate::http::dial(url).await?;
    let websocket_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size));
    let (socket, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(websocket_config))
            .await
            .map_err(websocket_error)?;
    Ok(socket)
}

/// Sends the handshake request and reads the response; returns what followed it.
async fn handshake(socket: &mut Socket, protocol: Protocol) -> Result<BytesMut, ConnectError> {
    let mut request = BytesMut::new();
    HandshakeRequest::new(protocol).encode(&mut request);
    // The handshake is JSON text whatever the protocol; the official clients send it as a
    // text frame.
    send_frame(socket, Protocol::Json, request.freeze())
        .await
        .map_err(|error| ConnectError::InvalidHandshake(error.to_string()))?;

    let mut decoder = HandshakeDecoder::new(MAX_HANDSHAKE_SIZE);
    let mut received = BytesMut::new();
    loop {
        match decoder.decode_response(&mut received) {
            Ok(Some(response)) => {
                return match response.error {
                    None => Ok(received),
                    Some(error) => Err(ConnectError::HandshakeRejected(error)),
                };
            }
            Ok(None) => {}
            Err(error) => return Err(ConnectError::InvalidHandshake(error.to_string())),
        }
        match socket.next().await {
            Some(Ok(Message::Text(text))) => received.extend_from_slice(text.as_bytes()),
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            Some(Ok(Message::Close(_))) | None => return Err(ConnectError::ClosedDuringHandshake),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(ConnectError::InvalidHandshake(error.to_string())),
        }
    }
}

/// Sends one frame: text for JSON, binary for MessagePack, as the transfer formats require.
///
/// # Errors
///
/// The WebSocket's error. A JSON frame that is not UTF-8 cannot happen (the encoder writes
/// JSON), and is reported as a protocol error if it does.
pub(crate) async fn send_frame(
    socket: &mut Socket,
    protocol: Protocol,
    frame: Bytes,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let message = match protocol {
        Protocol::Json => Message::Text(Utf8Bytes::try_from(frame).map_err(|_| {
            tokio_tungstenite::tungstenite::Error::Utf8(
                "encoded JSON message is not UTF-8".to_owned(),
            )
        })?),
        Protocol::MessagePack => Message::Binary(frame),
    };
    socket.send(message).await
}
