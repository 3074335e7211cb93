//! A loopback TCP proxy that can cut every connection through it at once: the client
//! sees its connection end, and reconnects through the proxy. Fault tests of networked
//! backplanes (Redis, NATS) put it between a node and its server.

use std::net::SocketAddr;

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
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watcher = watcher.clone();
                let born = *watcher.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
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
            accept,
        }
    }

    /// Close every connection currently open through the proxy.
    pub fn cut(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
