//! A node that shuts down says goodbye to PostgreSQL on every connection: the protocol's
//! `Terminate` message, then the end of the stream. A connection dropped without it (the
//! listening connection was, until this test) makes the server log "could not receive
//! data from client: Connection reset by peer" for every instance an operator restarts.
//!
//! The node reaches the database through a small recording proxy with TLS off, so the
//! last bytes each connection sent before its end can be read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane_core::testkit::RecordingSink;
use backplane_core::{Backplane, BackplaneEvent, EnvelopeKind, Target};
use backplane_postgres::{PostgresBackplane, SslMode};
use tests::TestSchema;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HUB: &str = "goodbye";
/// The frontend `Terminate` message: type `X`, length 4, no body.
const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// How one proxied connection's client side ended.
#[derive(Debug, Clone)]
struct Ending {
    /// The last bytes the client sent (up to five).
    tail: Vec<u8>,
    /// Whether the client ended with an orderly end of stream rather than an error.
    orderly: bool,
}

/// Forwards connections to the database and records how each client side ended.
struct RecordingProxy {
    address: SocketAddr,
    opened: Arc<Mutex<usize>>,
    endings: Arc<Mutex<Vec<Ending>>>,
}

impl RecordingProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let opened = Arc::new(Mutex::new(0));
        let endings = Arc::new(Mutex::new(Vec::new()));
        let (count, ends) = (opened.clone(), endings.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                let ends = ends.clone();
                tokio::spawn(async move {
                    let server = TcpStream::connect(target)
                        .await
                        .expect("reach the database");
                    forward(client, server, ends).await;
                });
            }
        });
        Self {
            address,
            opened,
            endings,
        }
    }
}

async fn forward(client: TcpStream, server: TcpStream, endings: Arc<Mutex<Vec<Ending>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut tail = Vec::new();
        let mut buffer = vec![0u8; 16 * 1024];
        let orderly = loop {
            match client_read.read(&mut buffer).await {
                Ok(0) => break true,
                Ok(n) => {
                    tail.extend_from_slice(&buffer[..n]);
                    let keep = tail.len().saturating_sub(TERMINATE.len());
                    tail.drain(..keep);
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break false;
                    }
                }
                Err(_) => break false,
            }
        };
        let _ = server_write.shutdown().await;
        endings.lock().unwrap().push(Ending { tail, orderly });
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_terminates_every_database_connection() {
    let schema = TestSchema::create("shutdown_goodbye").await;
    let proxy = RecordingProxy::start(schema.database_address().await).await;
    let mut options = schema.options_at(proxy.address);
    options.ssl_mode = SslMode::Disable;
    let a = PostgresBackplane::connect(options.clone())
        .await
        .expect("node a starts");
    let b = PostgresBackplane::connect(options)
        .await
        .expect("node b starts");

    // Traffic on every role: a subscription (the listener LISTENs), a publish (the
    // publisher and the flush confirmation), its delivery to the other node.
    let mut subscription = b.subscribe(HUB).await.expect("subscribe");
    a.publish(
        HUB,
        EnvelopeKind::Invocation {
            target: Target::All,
            message: RecordingSink::message("before shutdown"),
        },
    )
    .await
    .expect("publish");
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match subscription.recv().await {
                Some(BackplaneEvent::Envelope(_)) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(delivered, Ok(true), "a's message did not reach b");

    a.shutdown().await.expect("a shuts down");
    b.shutdown().await.expect("b shuts down");
    drop(subscription);
    drop((a, b));

    let opened = *proxy.opened.lock().unwrap();
    assert!(
        opened >= 4,
        "expected several connections per node, saw {opened}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.endings.lock().unwrap().len() < opened && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let endings = proxy.endings.lock().unwrap().clone();
    assert_eq!(
        endings.len(),
        opened,
        "every connection the node opened ends once it is shut down: {endings:?}"
    );
    for ending in &endings {
        assert!(
            ending.orderly && ending.tail == TERMINATE,
            "a connection ended without Terminate: {ending:?} (of {endings:?})"
        );
    }
    schema.drop().await;
}
