//! The client library against a real hub-server, in-process on 127.0.0.1: invocations with
//! results, typed handlers, both protocols, and reconnecting across a server restart.

use std::net::SocketAddr;
use std::time::Duration;

use chat_client::{
    DisconnectReason, HubConnection, HubConnectionBuilder, HubConnectionState, InvokeError,
    Protocol, ReconnectDelays,
};
use hub_server::chat::{self, ServerInfo};
use hub_server::{Caller, Hub, HubOptions, MethodError};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How long a test waits for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(10);

/// A struct argument and result: MessagePack sends it as a map with field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
    label: Option<String>,
}

/// The chat hub plus a few methods with results.
async fn test_hub() -> Hub {
    test_hub_with(HubOptions::default()).await
}

/// [`test_hub`] with the given timeouts and limits.
async fn test_hub_with(options: HubOptions) -> Hub {
    chat::hub_builder()
        .options(options)
        .method("Add", |a: i64, b: i64| async move { a + b })
        .method("Mirror", |point: Point| async move {
            Ok::<_, MethodError>(Point {
                x: point.y,
                y: point.x,
                label: point.label,
            })
        })
        .method("Fail", || async { Err::<(), _>(MethodError::new("nope")) })
        .method("WhoAmI", |caller: Caller| async move {
            caller.user().map(str::to_owned)
        })
        .build()
        .await
        .expect("hub starts")
}

/// A running chat server.
struct Server {
    address: SocketAddr,
    hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        Server::on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    async fn on(listener: TcpListener) -> Server {
        Server::with_hub(listener, test_hub().await)
    }

    fn with_hub(listener: TcpListener, hub: Hub) -> Server {
        let address = listener.local_addr().unwrap();
        let app = chat::router(&hub, ServerInfo::new("test", "memory"));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown_hub = hub.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                    shutdown_hub.shutdown().await;
                })
                .await
                .unwrap();
        });
        Server {
            address,
            hub,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.address, chat::HUB_PATH)
    }

    /// Graceful shutdown: clients get a Close that allows reconnecting; returns once the
    /// port is free.
    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("server did not stop")
            .unwrap();
        drop(self.hub);
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("channel closed")
}

async fn connected(url: &str, protocol: Protocol) -> HubConnection {
    let connection = HubConnectionBuilder::new(url)
        .protocol(protocol)
        .build()
        .unwrap();
    connection.start().await.expect("connects");
    connection
}

#[tokio::test]
async fn invoke_returns_typed_results_and_errors_in_both_protocols() {
    let server = Server::start().await;
    for protocol in Protocol::ALL {
        let connection = connected(&server.url(), protocol).await;
        assert!(connection.connection_id().is_some());

        let sum: i64 = connection.invoke("Add", (40, 2)).await.unwrap();
        assert_eq!(sum, 42, "{protocol}");

        let point = Point {
            x: 1,
            y: -2,
            label: Some("p".into()),
        };
        let mirrored: Point = connection.invoke("Mirror", (&point,)).await.unwrap();
        assert_eq!(
            mirrored,
            Point {
                x: -2,
                y: 1,
                label: Some("p".into())
            },
            "{protocol}"
        );

        let error = connection.invoke::<(), _>("Fail", ()).await.unwrap_err();
        assert!(
            matches!(&error, InvokeError::Hub(message) if message.ends_with("nope")),
            "{protocol}: {error:?}"
        );

        // The server's own errors arrive the same way, and the connection stays up.
        let error = connection
            .invoke::<(), _>("NoSuchMethod", ())
            .await
            .unwrap_err();
        assert!(
            matches!(error, InvokeError::Hub(_)),
            "{protocol}: {error:?}"
        );
        let error = connection
            .invoke::<i64, _>("Add", ("x", 1))
            .await
            .unwrap_err();
        assert!(
            matches!(error, InvokeError::Hub(_)),
            "{protocol}: {error:?}"
        );
        let error = connection
            .invoke::<String, _>("Add", (1, 2))
            .await
            .unwrap_err();
        assert!(
            matches!(error, InvokeError::InvalidResult(_)),
            "{protocol}: {error:?}"
        );
        assert_eq!(connection.invoke::<i64, _>("Add", (1, 2)).await.unwrap(), 3);

        // A void method satisfies `()`.
        connection
            .invoke::<(), _>("SendMessage", ("me", "hello"))
            .await
            .unwrap();
        connection.stop().await;
    }
}

/// Send every `ReceiveMessage` that `connection` gets to `tx`, as `[ALL] user: message`.
fn forward_messages(connection: &HubConnection, tx: mpsc::UnboundedSender<String>) {
    connection.on(
        "ReceiveMessage",
        move |(user, message): (String, String)| {
            let _ = tx.send(format!("[ALL] {user}: {message}"));
        },
    );
}

#[tokio::test]
async fn handlers_receive_typed_arguments_across_protocols() {
    let server = Server::start().await;
    // One JSON and one MessagePack client: each message is encoded for the other's protocol.
    let alice = HubConnectionBuilder::new(server.url())
        .protocol(Protocol::Json)
        .access_token_provider(|| async { Ok("alice".to_owned()) })
        .build()
        .unwrap();
    let bob = HubConnectionBuilder::new(server.url())
        .protocol(Protocol::MessagePack)
        .access_token_provider(|| async { Ok("bob".to_owned()) })
        .build()
        .unwrap();

    let (tx, mut at_alice) = mpsc::unbounded_channel();
    forward_messages(&alice, tx.clone());
    let sender = tx.clone();
    alice.on(
        "ReceiveGroupMessage",
        move |(group, user, message): (String, String, String)| {
            let _ = sender.send(format!("[{group}] {user}: {message}"));
        },
    );
    let sender = tx.clone();
    alice.on(
        "UserJoinedGroup",
        move |(user, group): (Option<String>, String)| {
            let _ = sender.send(format!("{user:?} joined {group}"));
        },
    );
    let sender = tx;
    alice.on("UserConnected", move |(id,): (String,)| {
        let _ = sender.send(format!("connected {id}"));
    });

    let (tx, mut at_bob) = mpsc::unbounded_channel();
    forward_messages(&bob, tx);

    alice.start().await.unwrap();
    bob.start().await.unwrap();
    // The access token became the user id on the server.
    assert_eq!(
        alice
            .invoke::<Option<String>, _>("WhoAmI", ())
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    let bob_id = bob.connection_id().unwrap();
    // Alice may also see her own UserConnected first; skip to Bob's.
    loop {
        if next(&mut at_alice).await == format!("connected {bob_id}") {
            break;
        }
    }

    bob.invoke::<(), _>("SendMessage", ("bob", "hi all"))
        .await
        .unwrap();
    assert_eq!(next(&mut at_alice).await, "[ALL] bob: hi all");
    assert_eq!(next(&mut at_bob).await, "[ALL] bob: hi all");

    alice.invoke::<(), _>("JoinGroup", ("room",)).await.unwrap();
    assert_eq!(next(&mut at_alice).await, "Some(\"alice\") joined room");
    bob.invoke::<(), _>("JoinGroup", ("room",)).await.unwrap();
    assert_eq!(next(&mut at_alice).await, "Some(\"bob\") joined room");

    // Fire and forget reaches the handlers too.
    bob.send("SendMessageToGroup", ("room", "bob", "in the room"))
        .await
        .unwrap();
    assert_eq!(next(&mut at_alice).await, "[room] bob: in the room");

    alice.stop().await;
    bob.stop().await;
}

#[tokio::test]
async fn skip_negotiation_works_against_the_server() {
    let server = Server::start().await;
    let connection = HubConnectionBuilder::new(server.url())
        .skip_negotiation(true)
        .protocol(Protocol::MessagePack)
        .build()
        .unwrap();
    connection.start().await.unwrap();
    assert_eq!(connection.connection_id(), None);
    assert_eq!(connection.invoke::<i64, _>("Add", (2, 3)).await.unwrap(), 5);
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_on_the_same_port() {
    let server = Server::start().await;
    let address = server.address;
    let url = server.url();
    let connection = HubConnectionBuilder::new(&url)
        .protocol(Protocol::MessagePack)
        .reconnect_policy(ReconnectDelays::new([Duration::from_millis(100)]).forever())
        .build()
        .unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    forward_messages(&connection, tx.clone());
    let sender = tx.clone();
    connection.on_reconnecting(move |reason| {
        let _ = sender.send(format!("reconnecting: {reason}"));
    });
    let sender = tx.clone();
    connection.on_reconnected(move |id| {
        let _ = sender.send(format!("reconnected: {}", id.is_some()));
    });
    connection.on_closed(move |reason| {
        let _ = tx.send(format!("closed: {reason:?}"));
    });
    connection.start().await.unwrap();
    let first_id = connection.connection_id().unwrap();

    // A graceful shutdown sends Close with allowReconnect: the client starts reconnecting.
    server.shut_down().await;
    assert_eq!(
        next(&mut events).await,
        "reconnecting: the server closed the connection"
    );
    // Attempts fail while nothing listens; then a new server comes up on the same port.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connection.state(), HubConnectionState::Reconnecting);
    let error = connection
        .send("SendMessage", ("x", "y"))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        InvokeError::NotConnected(HubConnectionState::Reconnecting)
    ));
    let server = Server::on(TcpListener::bind(address).await.unwrap()).await;

    assert_eq!(next(&mut events).await, "reconnected: true");
    assert_eq!(connection.state(), HubConnectionState::Connected);
    assert_ne!(connection.connection_id().unwrap(), first_id);

    // The handler registered before the first start still works.
    let other = connected(&server.url(), Protocol::Json).await;
    other
        .invoke::<(), _>("SendMessage", ("other", "after restart"))
        .await
        .unwrap();
    assert_eq!(next(&mut events).await, "[ALL] other: after restart");
    assert_eq!(connection.invoke::<i64, _>("Add", (1, 1)).await.unwrap(), 2);
    connection.stop().await;
    assert_eq!(next(&mut events).await, "closed: None");
}

#[tokio::test]
async fn closed_fires_when_reconnect_attempts_run_out() {
    let server = Server::start().await;
    let connection = HubConnectionBuilder::new(server.url())
        .reconnect_policy(ReconnectDelays::new([
            Duration::ZERO,
            Duration::from_millis(50),
            Duration::from_millis(50),
        ]))
        .build()
        .unwrap();
    let (tx, mut closed) = mpsc::unbounded_channel();
    connection.on_closed(move |reason| {
        let _ = tx.send(reason.cloned());
    });
    connection.start().await.unwrap();
    server.shut_down().await;

    let reason = next(&mut closed).await.expect("closed with a reason");
    let DisconnectReason::ReconnectFailed {
        attempts,
        last_error,
    } = &reason
    else {
        panic!("unexpected reason {reason:?}");
    };
    assert_eq!(*attempts, 3);
    assert!(
        matches!(**last_error, chat_client::ConnectError::Unreachable { .. }),
        "{last_error:?}"
    );
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    let error = connection
        .invoke::<i64, _>("Add", (1, 1))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        InvokeError::NotConnected(HubConnectionState::Disconnected)
    ));
}

#[tokio::test]
async fn keep_alive_in_both_directions_holds_an_idle_connection() {
    // The server drops clients silent for 1 s and pings every 100 ms; the client pings
    // every 100 ms and gives up on a server silent for 1 s. Idle for far longer than
    // either timeout, the connection must survive on keep-alives alone. (The timeouts are
    // ten pings long so that a loaded machine's scheduling delays cannot trip them.)
    let options = HubOptions::default()
        .keep_alive_interval(Duration::from_millis(100))
        .client_timeout(Duration::from_secs(1));
    let server = Server::with_hub(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        test_hub_with(options).await,
    );
    for protocol in Protocol::ALL {
        let connection = HubConnectionBuilder::new(server.url())
            .protocol(protocol)
            .keep_alive_interval(Duration::from_millis(100))
            .server_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let (tx, mut closed) = mpsc::unbounded_channel();
        connection.on_closed(move |reason| {
            let _ = tx.send(reason.map(ToString::to_string));
        });
        connection.start().await.unwrap();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(
            connection.state(),
            HubConnectionState::Connected,
            "{protocol}"
        );
        assert!(closed.try_recv().is_err(), "{protocol}: closed while idle");
        assert_eq!(connection.invoke::<i64, _>("Add", (2, 2)).await.unwrap(), 4);
        connection.stop().await;
    }
}
