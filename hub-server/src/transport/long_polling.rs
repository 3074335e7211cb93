//! The long-polling transport: frames wait for the client's next `GET {hub}?id=`; the
//! client sends with `POST` (`super::posted`) and ends with `DELETE`.
//!
//! As ASP.NET Core's `HttpConnectionDispatcher` and `LongPollingServerTransport` answer:
//! the first poll (the one that opens the connection) is answered 200 at once with an
//! empty body; a later poll is answered with every pending frame, concatenated, as soon
//! as there is one, or 200 with an empty body after [`HubOptions::long_polling_timeout`]
//! (90 s), or 204 once the connection has ended or a newer poll has replaced it. `DELETE`
//! is answered 202 and ends the connection; the open poll then gets 204. No hub Pings are
//! sent (each poll is the keep-alive); a connection with no poll open for
//! [`HubOptions::long_polling_disconnect_timeout`] (15 s) is closed.
//!
//! [`HubOptions::long_polling_timeout`]: crate::HubOptions::long_polling_timeout
//! [`HubOptions::long_polling_disconnect_timeout`]: crate::HubOptions::long_polling_disconnect_timeout

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, EXPIRES, PRAGMA};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hub_protocol::TransferFormat;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, timeout, timeout_at};

use super::FrameSink;
use super::http_connections::{HttpConnection, Registration, Transport};
use super::posted::PostedBytes;
use crate::connection::{self, Accepted};
use crate::endpoints::plain;
use crate::hub::HubShared;
use backplane_core::lock;

/// The poll side of a long-polling connection.
#[derive(Debug)]
pub(crate) struct Polls {
    /// Behind a mutex held only briefly, never across an await.
    state: Mutex<PollState>,
    /// Wakes the open poll: frames arrived, the connection ended, or a newer poll
    /// replaced it.
    changed: Notify,
    /// Wakes the writer waiting for room: a poll took the pending frames.
    taken: Notify,
    /// Wakes the connection's task once a poll has been told (204) the connection ended,
    /// so its entry can go.
    told_closed: Notify,
}

#[derive(Debug)]
struct PollState {
    /// Frames flushed by the writer and not yet taken by a poll. Bounded: the writer
    /// waits while it holds the send queue's worth, and the connection's send queue
    /// (bounded too) overflows if the client stops polling.
    pending: BytesMut,
    /// The connection has ended: polls are answered 204 once `pending` is empty.
    closed: bool,
    /// The number of the newest poll; an older one still open ends with 204.
    newest: u64,
    /// Whether the newest poll is open.
    open: bool,
    /// When the last poll ended (or the connection opened): the disconnect timeout counts
    /// from here while no poll is open.
    last_seen: Instant,
}

/// Whether a long-polling client is still there, for the connection's reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// A poll is open: the client is there.
    Polling,
    /// Between two polls, within the disconnect timeout.
    Between,
    /// No poll for longer than the disconnect timeout: the client has gone.
    Gone,
}

impl Polls {
    fn new() -> Self {
        Self {
            state: Mutex::new(PollState {
                pending: BytesMut::new(),
                closed: false,
                newest: 0,
                open: false,
                last_seen: Instant::now(),
            }),
            changed: Notify::new(),
            taken: Notify::new(),
            told_closed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PollState> {
        // Each critical section leaves the state consistent.
        lock(&self.state)
    }

    /// Whether the client still polls, as of `now`.
    pub(crate) fn liveness(&self, disconnect_timeout: Duration, now: Instant) -> Liveness {
        let state = self.lock();
        if state.open {
            Liveness::Polling
        } else if now.saturating_duration_since(state.last_seen) > disconnect_timeout {
            Liveness::Gone
        } else {
            Liveness::Between
        }
    }
}

/// Ends a poll's turn when its request ends, answered or dropped (the client went away).
struct PollTurn<'a> {
    /// Whose turn.
    polls: &'a Polls,
    /// Which poll.
    number: u64,
}

impl Drop for PollTurn<'_> {
    fn drop(&mut self) {
        let mut state = self.polls.lock();
        if state.newest == self.number {
            state.open = false;
            state.last_seen = Instant::now();
        }
    }
}

/// Open a new long-polling connection: answer its first poll at once, and serve it until
/// it ends and the client has been told so (or has stopped polling).
pub(crate) fn start(
    hub: Arc<HubShared>,
    connection: Arc<HttpConnection>,
    chunks: mpsc::Receiver<Bytes>,
    accepted: Accepted,
    registration: Registration,
) -> Response {
    tokio::spawn(async move {
        let disconnect_timeout = hub.options.long_polling_disconnect_timeout;
        let mut incoming = PostedBytes::new(chunks, connection.clone(), disconnect_timeout);
        let sink = PollSink {
            connection: connection.clone(),
            out: BytesMut::new(),
            limit: hub.options.send_queue_bytes,
        };
        connection::serve(hub, &mut incoming, sink, accepted).await;
        // A POST still streaming gets 404 now rather than after the wait below.
        drop(incoming);
        if let Transport::LongPolling(polls) = &connection.transport {
            // Keep the entry until a poll has been answered 204 (else the client's next
            // poll would get 404 and report an error), but not past the disconnect timeout.
            polls.close();
            let _ = timeout(disconnect_timeout, polls.told_closed.notified()).await;
        }
        drop(registration);
    });
    uncached(plain(StatusCode::OK, ""))
}

/// `response` marked as never to be cached, as ASP.NET Core marks poll answers: a proxy
/// or browser cache that answered a poll from memory would lose frames.
fn uncached(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    response
}

/// A later `GET {hub}?id=` of a long-polling connection.
pub(crate) async fn poll(hub: &HubShared, polls: &Polls) -> Response {
    uncached(answer_poll(hub, polls).await)
}

async fn answer_poll(hub: &HubShared, polls: &Polls) -> Response {
    let number = {
        let mut state = polls.lock();
        state.newest += 1;
        state.open = true;
        state.newest
    };
    // The older poll, if one is open, sees it was replaced.
    polls.changed.notify_waiters();
    let _turn = PollTurn { polls, number };
    let deadline = Instant::now() + hub.options.long_polling_timeout;
    loop {
        let changed = polls.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let mut state = polls.lock();
            if state.newest != number {
                return plain(StatusCode::NO_CONTENT, "");
            }
            if !state.pending.is_empty() {
                let frames = std::mem::take(&mut state.pending).freeze();
                drop(state);
                polls.taken.notify_waiters();
                // Whatever the transfer format, as ASP.NET Core answers: the clients read
                // the body as text or bytes by the format they asked for.
                return (
                    [(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    )],
                    frames,
                )
                    .into_response();
            }
            if state.closed {
                drop(state);
                polls.told_closed.notify_one();
                return plain(StatusCode::NO_CONTENT, "");
            }
        }
        if timeout_at(deadline, changed).await.is_err() {
            return plain(StatusCode::OK, "");
        }
    }
}

impl Polls {
    /// The connection has ended: polls get what is pending, then 204.
    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }
}

/// The connection core's [`FrameSink`] for long polling.
#[derive(Debug)]
struct PollSink {
    /// The connection, whose [`Polls`] take the frames.
    connection: Arc<HttpConnection>,
    /// Frames fed since the last flush.
    out: BytesMut,
    /// How many pending bytes the writer may leave for the polls before it waits.
    limit: usize,
}

/// The poll side of a connection that long polling opened.
fn polls_of(connection: &HttpConnection) -> &Polls {
    match &connection.transport {
        Transport::LongPolling(polls) => polls,
        Transport::ServerSentEvents => unreachable!("a poll sink serves long polling"),
    }
}

impl FrameSink for PollSink {
    const TRANSPORT: &'static str = "long_polling";

    const INHERENT_KEEP_ALIVE: bool = true;

    async fn feed(&mut self, frame: Bytes, _format: TransferFormat) -> io::Result<()> {
        self.out.extend_from_slice(&frame);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let connection = self.connection.clone();
        let polls = polls_of(&connection);
        loop {
            let taken = polls.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            {
                let mut state = polls.lock();
                if state.pending.is_empty() || state.pending.len() + self.out.len() <= self.limit {
                    state.pending.extend_from_slice(&self.out);
                    drop(state);
                    polls.changed.notify_waiters();
                    // An idle connection holds no write buffer.
                    self.out = BytesMut::new();
                    return Ok(());
                }
            }
            if self.connection.is_ended() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the long-polling client has ended the connection",
                ));
            }
            // The client has not polled what is pending yet; the connection's send
            // queue absorbs what comes meanwhile, and overflows if it never polls.
            tokio::select! {
                () = taken => {}
                () = self.connection.ended() => {}
            }
        }
    }

    async fn close(&mut self) -> io::Result<()> {
        let flushed = self.flush().await;
        polls_of(&self.connection).close();
        flushed
    }
}

/// The transport state of a new long-polling connection.
pub(crate) fn transport() -> Transport {
    Transport::LongPolling(Polls::new())
}

/// `DELETE {hub}?id=`: the client ends its long-polling connection.
pub(crate) fn delete(connection: &HttpConnection) -> Response {
    match &connection.transport {
        Transport::LongPolling(_) => {
            connection.end();
            plain(StatusCode::ACCEPTED, "")
        }
        Transport::ServerSentEvents => plain(
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint: only long-polling connections end with DELETE; close the event stream instead.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_client_is_gone_once_no_poll_was_open_for_the_disconnect_timeout() {
        let timeout = Duration::from_secs(15);
        let polls = Polls::new();
        assert_eq!(polls.liveness(timeout, Instant::now()), Liveness::Between);
        {
            let _turn = PollTurn {
                polls: &polls,
                number: {
                    let mut state = polls.lock();
                    state.newest += 1;
                    state.open = true;
                    state.newest
                },
            };
            // However long a poll stays open, the client is there.
            tokio::time::advance(Duration::from_secs(100)).await;
            assert_eq!(polls.liveness(timeout, Instant::now()), Liveness::Polling);
        }
        // The disconnect timeout counts from the end of the last poll.
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(polls.liveness(timeout, Instant::now()), Liveness::Between);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(polls.liveness(timeout, Instant::now()), Liveness::Gone);
    }
}
