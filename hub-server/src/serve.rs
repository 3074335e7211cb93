//! Serving a router over HTTP/1.1 with the timeouts an Internet-facing server needs.
//!
//! `axum::serve` sets no timer on its connections, so a client that opens a connection
//! and never finishes its request headers holds it (and a file descriptor) for ever; a
//! few thousand such clients exhaust the process. [`serve`] is the same accept loop with a
//! request-headers timeout (ASP.NET Core's Kestrel closes such requests after 30 seconds
//! too), `TCP_NODELAY` on every connection, and a graceful shutdown.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Settings of [`serve`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// How long a client may take to send a request's headers, from the first byte (and
    /// on a kept-alive connection, from the end of the previous response) before the
    /// connection is closed. WebSocket connections are not affected once upgraded.
    /// Default: 30 seconds.
    pub request_headers_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            request_headers_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeOptions {
    /// These options with `timeout` as the request-headers timeout.
    #[must_use]
    pub fn request_headers_timeout(mut self, timeout: Duration) -> Self {
        self.request_headers_timeout = timeout;
        self
    }
}

/// Serve `app` on `listener` until `shutdown` completes, then stop accepting, let the
/// requests in progress finish and return.
///
/// Upgraded connections (the hubs' WebSockets) live on after the HTTP exchange: end them
/// with [`Hub::shutdown`](crate::Hub::shutdown) inside `shutdown`, as the chat server
/// does. Failing to accept a connection (too many open files, say) is logged and retried;
/// it does not end the server.
///
/// ```no_run
/// # async fn run(hub: hub_server::Hub) -> std::io::Result<()> {
/// let app = axum::Router::new().merge(hub.router("/chathub"));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
/// hub_server::serve(listener, app, hub_server::ServeOptions::default(), async move {
///     let _ = tokio::signal::ctrl_c().await;
///     hub.shutdown().await;
/// })
/// .await;
/// # Ok(())
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Reap the connections that ended, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                if !is_per_connection(&error) {
                    // Out of file descriptors or memory: wait for some to be released
                    // instead of spinning on the same error.
                    tracing::warn!(%error, "cannot accept a connection; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        // Without TCP_NODELAY, small frames wait for delayed ACKs (tens of milliseconds).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        let timeout = options.request_headers_timeout;
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "HTTP connection ended with an error");
                    }
                }
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    stop.send_replace(true);
    while connections.join_next().await.is_some() {}
}

/// Whether an `accept` error concerns only the connection being accepted (the client
/// gave up), so the next `accept` can go ahead at once.
fn is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
