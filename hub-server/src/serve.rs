//! Serving a router over HTTP/1.1 with the timeouts an Internet-facing server needs.
//!
//! `axum::serve` sets no timer on its connections, so a client that opens a connection
//! and never finishes its request headers holds it (and a file descriptor) for ever; a
//! few thousand such clients exhaust the process. [`serve`] is the same accept loop with a
//! request-headers timeout (ASP.NET Core's Kestrel closes such requests after 30 seconds
//! too), a cap on the size of a request's head, a cap on the HTTP connections open at
//! once, `TCP_NODELAY` on every connection, and a graceful shutdown.
//!
//! The connection cap is what bounds the memory of clients that open connections and
//! leave them idle: each HTTP connection keeps hyper's read buffer (up to the head size
//! it was sent) until it closes. A connection leaves the count when it becomes a
//! WebSocket; the hub's own `max_connections` counts it from then on.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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
    /// How many HTTP connections one [`serve`] may hold open at once, WebSockets not counted once
    /// upgraded (the hub's `max_connections` caps those). Server-Sent Events streams and
    /// long polls are HTTP connections, as are idle kept-alive ones. A connection over the
    /// cap is answered `503 Service Unavailable` and closed at once. Kestrel's
    /// `MaxConcurrentConnections` is unlimited by default; a cap is what keeps idle
    /// connections from growing memory without end: an idle connection costs about
    /// 20 KiB (more if it was sent a large head), so 50,000 is near 1 GiB. Default: 50,000.
    pub max_http_connections: usize,
    /// The largest request head (request line and headers) accepted, in bytes; a larger
    /// one is answered `431 Request Header Fields Too Large` (a longer URI alone, `414`).
    /// Kestrel accepts 8 KiB of request line and 32 KiB of headers; access tokens travel
    /// in the query string of WebSocket and SSE requests, so the line may be long.
    /// Default: 64 KiB (at least 8 KiB).
    pub max_request_head_size: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            request_headers_timeout: Duration::from_secs(30),
            max_http_connections: 50_000,
            max_request_head_size: 64 * 1024,
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

    /// These options with `count` as [`ServeOptions::max_http_connections`] (at least 1).
    #[must_use]
    pub fn max_http_connections(mut self, count: usize) -> Self {
        self.max_http_connections = count.max(1);
        self
    }

    /// These options with `bytes` as [`ServeOptions::max_request_head_size`] (at least
    /// 8 KiB, hyper's smallest buffer).
    #[must_use]
    pub fn max_request_head_size(mut self, bytes: usize) -> Self {
        self.max_request_head_size = bytes.max(MIN_HEAD_SIZE);
        self
    }
}

/// hyper's smallest read buffer, and so the smallest head limit.
const MIN_HEAD_SIZE: usize = 8 * 1024;

/// What a connection over [`ServeOptions::max_http_connections`] is told before it is
/// closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 37\r\n\r\n\
The server has too many connections.\n";

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
    let capacity = Arc::new(Semaphore::new(
        options
            .max_http_connections
            .clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut refusals = Refusals::default();
    let head_size = options.max_request_head_size.max(MIN_HEAD_SIZE);
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
        let Ok(permit) = Arc::clone(&capacity).try_acquire_owned() else {
            // The socket was just accepted, so its send buffer is empty and the short
            // answer fits without waiting; a client that already sent its request may
            // see a reset instead, which refuses it just as clearly.
            let _ = tcp.try_write(OVER_CAPACITY);
            refusals.count(options.max_http_connections);
            continue;
        };
        // Without TCP_NODELAY, small frames wait for delayed ACKs (tens of milliseconds).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        let timeout = options.request_headers_timeout;
        connections.spawn(async move {
            // Held while the connection speaks HTTP; an upgrade ends this task (the
            // WebSocket lives on in the hub's), which releases it.
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_header_size(head_size);
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

/// Connections refused for the cap, logged at most once every ten seconds so a flood
/// does not flood the log too.
#[derive(Default)]
struct Refusals {
    /// Refused since the last warning.
    unreported: u64,
    /// When the last warning was written.
    last_warning: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, cap: usize) {
        self.unreported += 1;
        let due = self
            .last_warning
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if due {
            tracing::warn!(
                refused = self.unreported,
                max_http_connections = cap,
                "HTTP connections refused: the server is at its connection cap"
            );
            self.unreported = 0;
            self.last_warning = Some(Instant::now());
        }
    }
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
