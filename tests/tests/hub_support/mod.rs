//! Shared by the hub-server tests: an in-process server on 127.0.0.1:0, a hub with methods
//! for every behaviour under test, and raw clients that speak WebSocket frames and plain
//! HTTP/1.1, so the tests assert exact bytes on the wire.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of it.

pub mod cluster;
mod http;
pub mod raw_socket;
pub mod records;
pub mod rust_client;

#[allow(unused_imports)] // Re-exported for the binaries that use it.
pub use http::{HttpResponse, health, http, http_with_body};

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use hub_server::{
    Caller, CallerClients, Clients, Groups, Hub, HubBuilder, HubOptions, InvokeError, MethodError,
    access_token,
};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where [`test_hub`] is mounted by [`TestServer::start`].
pub const HUB_PATH: &str = "/hub";

/// How long a raw client waits for a frame before the test fails. Generous, because with
/// paused time it is virtual and must outlast the keep-alive and timeouts under test.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(120);

/// The JSON handshake every official client sends, version 2.
pub const JSON_HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":2}\u{1e}";

/// The MessagePack handshake every official client sends, version 2.
pub const MSGPACK_HANDSHAKE: &str = "{\"protocol\":\"messagepack\",\"version\":2}\u{1e}";

/// A hub with one method per behaviour the tests exercise.
pub fn test_hub() -> HubBuilder {
    Hub::builder("TestHub")
        .method("Add", |a: i64, b: i64| async move { a + b })
        .method("Echo", |text: String| async move { text })
        .method("Nothing", || async {})
        .method("Fail", || async {
            Err::<(), _>(MethodError::new("this method always fails"))
        })
        .method("FailInternally", || async {
            Err::<(), _>(MethodError::internal("secret detail for the server log"))
        })
        .method("Panic", |text: String| async move {
            if !text.is_empty() {
                panic!("{text}");
            }
        })
        .method("WhoAmI", |caller: Caller| async move {
            caller.user().map(str::to_owned)
        })
        .method("ConnectionId", |caller: Caller| async move {
            caller.connection_id().to_string()
        })
        .method("Broadcast", |clients: Clients, text: String| async move {
            clients.all().send("Broadcast", (text,)).await?;
            Ok::<_, MethodError>(())
        })
        .method(
            "SendToOthers",
            |clients: CallerClients, text: String| async move {
                clients.others().send("Broadcast", (text,)).await?;
                Ok::<_, MethodError>(())
            },
        )
        .method(
            "SendToUser",
            |clients: Clients, user: String, text: String| async move {
                clients.user(user).send("Direct", (text,)).await?;
                Ok::<_, MethodError>(())
            },
        )
        .method(
            "SendToConnection",
            |clients: Clients, connection_id: String, text: String| async move {
                clients
                    .client(connection_id)
                    .send("Direct", (text,))
                    .await?;
                Ok::<_, MethodError>(())
            },
        )
        .method(
            "JoinGroup",
            |caller: Caller, groups: Groups, group: String| async move {
                groups.add(caller.connection_id(), &group).await?;
                Ok::<_, MethodError>(())
            },
        )
        .method(
            "LeaveGroup",
            |caller: Caller, groups: Groups, group: String| async move {
                groups.remove(caller.connection_id(), &group).await?;
                Ok::<_, MethodError>(())
            },
        )
        .method(
            "SendToGroup",
            |clients: Clients, group: String, text: String| async move {
                clients.group(group).send("GroupMessage", (text,)).await?;
                Ok::<_, MethodError>(())
            },
        )
        .method(
            "FloodCaller",
            |clients: CallerClients, count: u32, size: usize| async move {
                let payload = "x".repeat(size);
                for sequence in 0..count {
                    clients.caller().send("Flood", (sequence, &payload)).await?;
                }
                Ok::<_, MethodError>(count)
            },
        )
        .user_id(access_token)
}

/// A hub server running in this process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The hub at [`HUB_PATH`].
    pub hub: Hub,
    /// What it serves, for in-memory connections.
    router: Router,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl TestServer {
    /// Serve [`test_hub`] with `options` at [`HUB_PATH`].
    pub async fn start(options: HubOptions) -> Self {
        Self::start_hub(test_hub().options(options)).await
    }

    /// Serve the hub `builder` describes at [`HUB_PATH`].
    pub async fn start_hub(builder: HubBuilder) -> Self {
        let hub = builder.build().await.expect("the hub starts");
        let router = hub.router(HUB_PATH);
        Self::serve(hub, router).await
    }

    /// Serve `router` (which mounts `hub` somewhere).
    pub async fn serve(hub: Hub, router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let listener = listener.tap_io(|tcp| {
            tcp.set_nodelay(true).expect("TCP_NODELAY");
        });
        let app = router.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            addr,
            hub,
            router,
            task,
        }
    }

    /// A WebSocket to the hub over an in-memory pipe instead of TCP (served by the same
    /// router through hyper), with `query` (e.g. `"access_token=x"`, or `""`).
    ///
    /// With tokio's paused clock, the runtime advances time whenever every task waits,
    /// including while bytes sit in a TCP socket not yet reported by the I/O driver, so a
    /// TCP client can observe a timer's effect only after the clock has jumped further. An
    /// in-memory pipe wakes the reader directly, so timing tests see exact instants.
    pub async fn connect_in_memory(&self, query: &str) -> RawClient<DuplexStream> {
        let client_io = self.in_memory_connection();
        let separator = if query.is_empty() { "" } else { "?" };
        let url = format!("ws://localhost{HUB_PATH}{separator}{query}");
        let (ws, _) = tokio_tungstenite::client_async(url, client_io)
            .await
            .expect("in-memory WebSocket upgrade");
        RawClient {
            ws,
            pending: Default::default(),
        }
    }

    /// One end of an in-memory pipe whose other end the router serves through hyper, as
    /// a TCP connection would be served.
    pub fn in_memory_connection(&self) -> DuplexStream {
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let service = TowerToHyperService::new(self.router.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_io), service)
                .with_upgrades()
                .await;
        });
        client_io
    }

    /// The WebSocket URL of the hub, with `query` (e.g. `"id=..."`, or `""`).
    pub fn ws_url(&self, query: &str) -> String {
        let separator = if query.is_empty() { "" } else { "?" };
        format!("ws://{}{HUB_PATH}{separator}{query}", self.addr)
    }

    /// The answer to a negotiate (version 1) on the test hub.
    pub async fn negotiate_response(&self) -> HttpResponse {
        http(
            self.addr,
            &format!("POST {HUB_PATH}/negotiate?negotiateVersion=1 HTTP/1.1"),
            &[],
        )
        .await
    }

    /// Negotiate and return `(connectionId, connectionToken)`.
    pub async fn negotiate(&self) -> (String, String) {
        let response = self.negotiate_response().await;
        assert_eq!(response.status, 200, "negotiate failed: {}", response.body);
        let body: serde_json::Value = serde_json::from_str(&response.body).expect("negotiate JSON");
        (
            body["connectionId"]
                .as_str()
                .expect("connectionId")
                .to_owned(),
            body["connectionToken"]
                .as_str()
                .expect("connectionToken")
                .to_owned(),
        )
    }

    /// Connect a raw client (skipping negotiate) and complete a JSON handshake.
    pub async fn json_client(&self) -> RawClient {
        let mut client = RawClient::connect(&self.ws_url("")).await;
        client.handshake_json().await;
        client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a raw client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// The server closed the WebSocket (or the connection ended).
    Closed,
}

/// A WebSocket client that sends and receives raw frames, over TCP or (for timing tests)
/// an in-memory pipe.
pub struct RawClient<S = MaybeTlsStream<TcpStream>> {
    /// The socket.
    ws: WebSocketStream<S>,
    /// Hub messages of the last WebSocket message not yet returned.
    pending: std::collections::VecDeque<Frame>,
}

impl RawClient {
    /// Connect to `url`, panicking if the upgrade is refused.
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url, &[])
            .await
            .unwrap_or_else(|status| panic!("WebSocket to {url} refused with {status}"))
    }

    /// Connect to `url` with extra headers; the HTTP status and body if refused.
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Self, String> {
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => Ok(Self {
                ws,
                pending: Default::default(),
            }),
            Err(tungstenite::Error::Http(response)) => {
                let body = response
                    .body()
                    .as_ref()
                    .map(|body| String::from_utf8_lossy(body).into_owned())
                    .unwrap_or_default();
                Err(format!("{} {body}", response.status().as_u16()))
            }
            Err(error) => panic!("cannot connect to {url}: {error}"),
        }
    }

    /// Connect with a tiny socket receive buffer, for a client that will stop reading.
    pub async fn connect_with_small_buffer(addr: SocketAddr, url: &str) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .expect("upgrade");
        Self {
            ws,
            pending: Default::default(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// Send a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send text");
    }

    /// Send a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send binary");
    }

    /// The next text or binary frame (or the close), within [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(RECV_TIMEOUT).await
    }

    /// The next hub message (text or binary; a WebSocket message holding several is
    /// split as clients do, [`records::split`]) or the close, within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Frame {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        loop {
            let next = tokio::time::timeout(limit, self.ws.next())
                .await
                .expect("a frame within the time limit");
            let frame = match next {
                None | Some(Ok(Message::Close(_))) => return Frame::Closed,
                Some(Err(_)) => return Frame::Closed,
                Some(Ok(Message::Text(text))) => Frame::Text(text.as_str().to_owned()),
                Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
                Some(Ok(_)) => continue,
            };
            self.pending = records::split(frame);
            return self
                .pending
                .pop_front()
                .expect("a message holds at least one");
        }
    }

    /// The next frame, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Frame::Text(text) => text,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame, which must be binary.
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv().await {
            Frame::Binary(bytes) => bytes,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// The next text frame that is not a Ping.
    pub async fn recv_text_skipping_pings(&mut self) -> String {
        loop {
            let text = self.recv_text().await;
            if text != "{\"type\":6}\u{1e}" {
                return text;
            }
        }
    }

    /// Assert that the server closes the connection next (after any Pings).
    pub async fn expect_closed(&mut self) {
        loop {
            match self.recv().await {
                Frame::Closed => return,
                Frame::Text(text) if text == "{\"type\":6}\u{1e}" => continue,
                other => panic!("expected the connection to close, got {other:?}"),
            }
        }
    }

    /// The next frame after any Pings, as JSON.
    pub async fn next_json(&mut self) -> serde_json::Value {
        let text = self.recv_text_skipping_pings().await;
        serde_json::from_str(text.trim_end_matches('\u{1e}')).expect("a JSON frame")
    }

    /// Invoke `target` without arguments; its completion, as JSON.
    pub async fn call_json(&mut self, target: &str) -> serde_json::Value {
        let text = self.invoke_json("call", target, "[]").await;
        serde_json::from_str(text.trim_end_matches('\u{1e}')).expect("a JSON completion")
    }

    /// Send the broadcasts `"0"` to `"{count - 1}"` as fire-and-forget invocations of the
    /// test hub's `Broadcast`, `per_message` to a WebSocket message, as a busy client
    /// batches them.
    pub async fn send_broadcasts(&mut self, count: usize, per_message: usize) {
        for chunk in (0..count).collect::<Vec<_>>().chunks(per_message) {
            let message: String = chunk.iter().map(|&i| broadcast(i)).collect();
            self.send_text(&message).await;
        }
    }

    /// Send the JSON handshake and expect success.
    pub async fn handshake_json(&mut self) {
        self.send_text(JSON_HANDSHAKE).await;
        assert_eq!(self.recv_text().await, "{}\u{1e}");
    }

    /// Send the MessagePack handshake and expect success (in a binary frame).
    pub async fn handshake_msgpack(&mut self) {
        self.send_text(MSGPACK_HANDSHAKE).await;
        assert_eq!(self.recv_binary().await, b"{}\x1e");
    }

    /// Invoke `target` with JSON `arguments` (a JSON array text) and id `id`; return the
    /// next non-Ping frame's text, which should be the completion.
    pub async fn invoke_json(&mut self, id: &str, target: &str, arguments: &str) -> String {
        self.send_text(&invocation_json(id, target, arguments))
            .await;
        self.recv_text_skipping_pings().await
    }

    /// Invoke `target` with JSON `arguments` (a JSON array text) and id `id`, and read
    /// until its completion: the completion, and the frames that came before it (a
    /// broadcast's own echo, announcements), pings skipped.
    pub async fn invoke_json_until_completion(
        &mut self,
        id: &str,
        target: &str,
        arguments: &str,
    ) -> (serde_json::Value, Vec<serde_json::Value>) {
        self.send_text(&invocation_json(id, target, arguments))
            .await;
        let mut before = Vec::new();
        loop {
            let frame = self.next_json().await;
            if frame["type"] == 3 && frame["invocationId"] == id {
                return (frame, before);
            }
            before.push(frame);
        }
    }

    /// Close the WebSocket from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The JSON invocation of `target` with id `id` and JSON `arguments` (a JSON array text).
fn invocation_json(id: &str, target: &str, arguments: &str) -> String {
    format!(
        "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{target}\",\"arguments\":{arguments}}}\u{1e}"
    )
}

/// The JSON invocation of the test hub's `Broadcast` with the text `text` (written as it
/// is, so it must need no escaping), without an invocation id: what a client sends to
/// broadcast, and what every client then receives.
pub fn broadcast(text: impl std::fmt::Display) -> String {
    format!("{{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"{text}\"]}}\u{1e}")
}

/// Ask connection `id`, through `hub`'s context (outside any hub method), for the result
/// of `Double(21)`, in a task of its own.
pub fn ask_double(hub: &Hub, id: &str) -> JoinHandle<Result<i64, InvokeError>> {
    let context = hub.context();
    let id = id.to_owned();
    tokio::spawn(async move {
        context
            .clients()
            .client(id)
            .invoke::<i64>("Double", (21,))
            .await
    })
}

/// Wait until `hub` has exactly `count` connections (connections register and unregister
/// asynchronously to the client's view).
pub async fn wait_for_connections(hub: &Hub, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.connection_count() != count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} connections, the hub has {}",
            hub.connection_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `received` holds the texts `"0"` to `"{sent - 1}"`, each once and in
/// order; otherwise fails, prefixed with `what`, saying how many are missing and where
/// the first differences are.
pub fn assert_all_in_order(what: &str, received: &[String], sent: usize) {
    let expected: Vec<String> = (0..sent).map(|n| n.to_string()).collect();
    if received != expected {
        let missing = expected.iter().filter(|n| !received.contains(n)).count();
        panic!(
            "{what}: got {} messages for {sent} sent ({missing} missing), first differences: {:?}",
            received.len(),
            received
                .iter()
                .zip(&expected)
                .filter(|(got, want)| got != want)
                .take(5)
                .collect::<Vec<_>>()
        );
    }
}
