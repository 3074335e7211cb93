//! A scripted SignalR server for protocol tests: the test decides every negotiate answer and
//! every frame, and sees exactly what the client sent.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use hub_protocol::{Decoder, HubMessage, Protocol};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Decides the negotiate answer: given the request number (0-based), status and body.
pub type NegotiateScript = Arc<dyn Fn(usize) -> (StatusCode, String) + Send + Sync>;

/// What a negotiate request carried.
#[derive(Debug, Clone)]
pub struct NegotiateRequest {
    /// The query parameters.
    pub query: HashMap<String, String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Clone)]
struct AppState {
    negotiate: NegotiateScript,
    count: Arc<AtomicUsize>,
    negotiates: Arc<Mutex<Vec<NegotiateRequest>>>,
    sockets: mpsc::UnboundedSender<FakeSocket>,
}

/// A fake hub at `/hub`.
pub struct FakeServer {
    /// `http://127.0.0.1:{port}/hub`.
    pub url: String,
    /// Every negotiate request received so far.
    pub negotiates: Arc<Mutex<Vec<NegotiateRequest>>>,
    sockets: mpsc::UnboundedReceiver<FakeSocket>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The standard version 1 answer for connection `n`.
pub fn negotiate_ok(n: usize) -> (StatusCode, String) {
    (
        StatusCode::OK,
        format!(
            r#"{{"connectionId":"conn-{n}","connectionToken":"token/{n}+x","negotiateVersion":1,"availableTransports":[{{"transport":"WebSockets","transferFormats":["Text","Binary"]}}]}}"#
        ),
    )
}

impl FakeServer {
    /// A server answering every negotiate with [`negotiate_ok`].
    pub async fn start() -> FakeServer {
        FakeServer::with_negotiate(negotiate_ok).await
    }

    /// A server answering negotiate as `script` says.
    pub async fn with_negotiate(
        script: impl Fn(usize) -> (StatusCode, String) + Send + Sync + 'static,
    ) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sockets_tx, sockets) = mpsc::unbounded_channel();
        let negotiates = Arc::new(Mutex::new(Vec::new()));
        let state = AppState {
            negotiate: Arc::new(script),
            count: Arc::new(AtomicUsize::new(0)),
            negotiates: negotiates.clone(),
            sockets: sockets_tx,
        };
        let app = Router::new()
            .route("/hub/negotiate", post(negotiate))
            .route("/hub", get(upgrade))
            .with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeServer {
            url: format!("http://127.0.0.1:{port}/hub"),
            negotiates,
            sockets,
            task,
        }
    }

    /// The next WebSocket a client opened.
    pub async fn next_socket(&mut self) -> FakeSocket {
        tokio::time::timeout(PATIENCE, self.sockets.recv())
            .await
            .expect("no websocket connection arrived")
            .expect("server gone")
    }

    /// Whether another WebSocket arrives within `wait`.
    pub async fn socket_within(&mut self, wait: Duration) -> Option<FakeSocket> {
        tokio::time::timeout(wait, self.sockets.recv())
            .await
            .ok()
            .flatten()
    }

    /// How many negotiate requests arrived.
    pub fn negotiate_count(&self) -> usize {
        self.negotiates.lock().unwrap().len()
    }
}

async fn negotiate(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    state.negotiates.lock().unwrap().push(NegotiateRequest {
        query,
        authorization: authorization(&headers),
    });
    let n = state.count.fetch_add(1, Ordering::SeqCst);
    (state.negotiate)(n)
}

async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> impl IntoResponse {
    let authorization = authorization(&headers);
    ws.on_upgrade(move |socket| async move {
        let _ = state.sockets.send(FakeSocket {
            query,
            authorization,
            socket,
            buffered: BytesMut::new(),
        });
    })
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_owned())
}

/// One frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

/// The server end of one client WebSocket.
pub struct FakeSocket {
    /// The query of the upgrade request.
    pub query: HashMap<String, String>,
    /// The `Authorization` header of the upgrade request.
    pub authorization: Option<String>,
    socket: WebSocket,
    buffered: BytesMut,
}

impl FakeSocket {
    /// The next data frame, or `None` when the client closed.
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.recv())
                .await
                .expect("the client sent nothing");
            match message {
                Some(Ok(Message::Text(text))) => return Some(Frame::Text(text.to_string())),
                Some(Ok(Message::Binary(data))) => return Some(Frame::Binary(data)),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next data frame, which must arrive.
    pub async fn frame(&mut self) -> Frame {
        self.recv().await.expect("the client closed the websocket")
    }

    /// Reads the client's handshake, checks it asks for `protocol` version 2, accepts it.
    pub async fn accept_handshake(&mut self, protocol: Protocol) {
        let expected = format!(
            "{{\"protocol\":\"{}\",\"version\":2}}\u{1e}",
            protocol.name()
        );
        assert_eq!(self.frame().await, Frame::Text(expected));
        self.send_text("{}\u{1e}").await;
    }

    /// The next hub message the client sent, decoded, skipping Pings when `skip_pings`.
    pub async fn message(&mut self, protocol: Protocol, skip_pings: bool) -> HubMessage {
        let mut decoder = Decoder::new(protocol, 1 << 20);
        loop {
            if let Some(message) = decoder.decode(&mut self.buffered).unwrap() {
                if skip_pings && message == HubMessage::Ping {
                    continue;
                }
                return message;
            }
            match self.frame().await {
                Frame::Text(text) => self.buffered.extend_from_slice(text.as_bytes()),
                Frame::Binary(data) => self.buffered.extend_from_slice(&data),
            }
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("client gone");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: Bytes) {
        self.socket
            .send(Message::Binary(data))
            .await
            .expect("client gone");
    }

    /// Sends a frame as `protocol` requires.
    pub async fn send(&mut self, protocol: Protocol, frame: BytesMut) {
        match protocol {
            Protocol::Json => self.send_text(std::str::from_utf8(&frame).unwrap()).await,
            Protocol::MessagePack => self.send_binary(frame.freeze()).await,
        }
    }
}
