//! A loopback TCP proxy for fault tests, put between a client (a node, a hub server) and
//! its server. It can cut every connection through it at once (both ends see them
//! closed, and new ones are still accepted: a dropped network path the clients reconnect
//! across), and it can silently stop forwarding: a partition in which both ends keep
//! their TCP connections "established" (the proxy's kernel still acknowledges
//! everything), so only an application-level probe can notice.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards a fresh loopback port to one target.
#[derive(Debug)]
pub struct CuttingProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    /// Bumped by [`CuttingProxy::cut`]: connections opened before end.
    generation: watch::Sender<u64>,
    /// `true` while partitioned: bytes are held, nothing is forwarded.
    partitioned: watch::Sender<bool>,
    /// The accept loop; aborted on drop.
    accept: JoinHandle<()>,
}

impl CuttingProxy {
    /// Start forwarding to `target`.
    ///
    /// # Panics
    ///
    /// Panics if no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound");
        let (generation, watcher) = watch::channel(0u64);
        let (partitioned, partition_watcher) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watcher = watcher.clone();
                let born = *watcher.borrow_and_update();
                let partitioned = partition_watcher.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let both = async {
                        tokio::join!(
                            pump(client_read, server_write, partitioned.clone()),
                            pump(server_read, client_write, partitioned),
                        )
                    };
                    tokio::select! {
                        _ = both => {}
                        _ = watcher.wait_for(|now| *now != born) => {}
                    }
                    // Dropping both streams closes them: the client sees its
                    // connection end, as after a network failure or a server restart.
                });
            }
        });
        Self {
            address,
            generation,
            partitioned,
            accept,
        }
    }

    /// Close every connection currently open through the proxy (new ones are still
    /// accepted).
    pub fn cut(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Stop (`true`) or resume (`false`) forwarding, on every connection at once,
    /// without closing any: what each side sends meanwhile is held, then delivered.
    pub fn partition(&self, partitioned: bool) {
        self.partitioned.send_replace(partitioned);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copy `from` to `to`, holding each chunk while partitioned; shut `to` down at the end.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if partitioned.wait_for(|p| !*p).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
