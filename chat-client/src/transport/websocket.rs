//! The WebSockets transport: frames as text (JSON) or binary (MessagePack) messages.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hub_protocol::TransferFormat;
use hyper::header::{AUTHORIZATION, HeaderValue};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::config::Config;
use crate::error::{ConnectError, DisconnectReason};
use crate::url::HubUrl;

/// How long closing waits for the server to acknowledge the WebSocket close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// An open WebSocket (plain TCP: this build has no TLS).
#[derive(Debug)]
pub(crate) struct WebSocketTransport {
    /// The socket.
    socket: WebSocketStream<TcpStream>,
}

impl WebSocketTransport {
    /// Opens the WebSocket. The access token goes both in the `access_token` query
    /// parameter (what servers read for browser clients, which cannot set headers) and in
    /// the `Authorization` header (what ASP.NET Core reads by default).
    ///
    /// # Errors
    ///
    /// [`ConnectError::WebSocket`] when the upgrade is refused or fails, and what dialing
    /// can fail with.
    pub(crate) async fn open(
        url: &HubUrl,
        connection_token: Option<&str>,
        access_token: Option<&str>,
        config: &Config,
    ) -> Result<Self, ConnectError> {
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
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(settings(config)))
                .await
                .map_err(websocket_error)?;
        Ok(WebSocketTransport { socket })
    }

    /// Sends each of `frames` as a message of its own (text for JSON, binary for
    /// MessagePack, as the transfer formats require), then flushes once: a batch of
    /// frames costs one write to the socket, not one each.
    pub(crate) async fn send_each(
        &mut self,
        frames: &[Bytes],
        format: TransferFormat,
    ) -> Result<(), DisconnectReason> {
        for frames in frames {
            let message = match format {
                TransferFormat::Text => {
                    Message::Text(Utf8Bytes::try_from(frames.clone()).map_err(|_| {
                        lost(WsError::Utf8(
                            "encoded JSON message is not UTF-8".to_owned(),
                        ))
                    })?)
                }
                TransferFormat::Binary => Message::Binary(frames.clone()),
            };
            self.socket.feed(message).await.map_err(lost)?;
        }
        self.socket.flush().await.map_err(lost)
    }

    /// The next message's bytes; empty for a ping or pong (answered by tungstenite; they
    /// still prove the server lives). Cancel-safe.
    pub(crate) async fn receive(&mut self) -> Result<Bytes, DisconnectReason> {
        match self.socket.next().await {
            Some(Ok(Message::Text(text))) => Ok(Bytes::from(text)),
            Some(Ok(Message::Binary(data))) => Ok(data),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(Bytes::new()),
            Some(Ok(Message::Close(_))) | None => Err(DisconnectReason::TransportClosed),
            Some(Err(error)) => Err(lost(error)),
        }
    }

    /// Sends our close frame and reads until the server's answer ends the stream, for at
    /// most [`CLOSE_TIMEOUT`].
    pub(crate) async fn close(&mut self) {
        let socket = &mut self.socket;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if socket.close(None).await.is_ok() {
                while let Some(Ok(_)) = socket.next().await {}
            }
        })
        .await;
    }
}

/// The WebSocket's settings from the connection's.
fn settings(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.websocket_read_buffer_size)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_message_size))
}

/// The reason for a failed WebSocket.
fn lost(error: WsError) -> DisconnectReason {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => DisconnectReason::TransportClosed,
        other => DisconnectReason::Transport(Arc::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConnectionBuilder;

    #[test]
    fn the_websocket_gets_the_configured_buffer_and_limits() {
        let connection = HubConnectionBuilder::new("http://localhost/hub")
            .websocket_read_buffer_size(4096)
            .max_message_size(32 * 1024)
            .build()
            .unwrap();
        let websocket = settings(&connection.inner.config);
        assert_eq!(websocket.read_buffer_size, 4096);
        assert_eq!(websocket.max_message_size, Some(32 * 1024));
        assert_eq!(websocket.max_frame_size, Some(32 * 1024));

        let default = HubConnectionBuilder::new("http://localhost/hub")
            .build()
            .unwrap();
        assert_eq!(
            settings(&default.inner.config).read_buffer_size,
            WebSocketConfig::default().read_buffer_size
        );
    }
}
