//! A TCP proxy that can silently stop forwarding: a network partition in which both
//! ends keep their TCP connections "established" (the proxy's kernel still acknowledges
//! everything), so only an application-level probe can notice. It can also cut every
//! connection open through it at once (both ends see them closed), while new ones are
//! still accepted: a dropped network path the clients reconnect across.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A loopback proxy to one target address.
#[derive(Debug)]
pub struct PartitionProxy {
    /// Where clients connect.
    address: SocketAddr,
    /// `true` while partitioned: bytes are held, nothing is forwarded.
    partitioned: watch::Sender<bool>,
    /// Bumped to close every connection open at that moment.
    cuts: watch::Sender<u64>,
    /// The accept loop; aborted on drop.
    accept: JoinHandle<()>,
}

impl PartitionProxy {
    /// Start forwarding from a fresh loopback port to `target`.
    ///
    /// # Panics
    ///
    /// Panics if no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let address = listener.local_addr().expect("bound address");
        let (partitioned, watcher) = watch::channel(false);
        let (cuts, cut_watcher) = watch::channel(0u64);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watcher = watcher.clone();
                let mut cut = cut_watcher.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let both = async {
                        tokio::join!(
                            pump(client_read, server_write, watcher.clone()),
                            pump(server_read, client_write, watcher),
                        )
                    };
                    // A cut drops both streams, which closes them at both ends.
                    tokio::select! {
                        _ = both => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            address,
            partitioned,
            cuts,
            accept,
        }
    }

    /// The address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Close every connection open through the proxy now (new ones are still accepted).
    pub fn cut_connections(&self) {
        self.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Stop (`true`) or resume (`false`) forwarding, on every connection at once.
    pub fn partition(&self, partitioned: bool) {
        let _ = self.partitioned.send(partitioned);
    }
}

impl Drop for PartitionProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copy `from` to `to`, holding each chunk while partitioned.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
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
