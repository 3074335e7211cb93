//! The live Server-Sent Events and long-polling connections of one hub, by connection
//! token.
//!
//! Both transports use several HTTP requests per connection (a `GET` that opens it, `POST`
//! sends, further polls, `DELETE`), so each later request finds its connection here. An
//! entry exists only while its connection runs (plus, for long polling, until the client
//! has been told it ended), and each one holds a claimed token, so the registry is bounded
//! by the connections themselves: a request with an unknown token adds nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::long_polling::Polls;
use crate::tokens::{ClaimError, TokenLease, TokenStore};
use backplane_core::lock;

/// How many POST body chunks may wait for the connection's reader: with chunks of at most
/// [`super::posted::MAX_CHUNK`], what a sending client can make the server hold.
const POSTED_CHUNKS: usize = 4;

/// Which transport a connection uses, and that transport's state.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Frames go out on one long `text/event-stream` response.
    ServerSentEvents,
    /// Frames wait for the client's next poll.
    LongPolling(Polls),
}

/// One live Server-Sent Events or long-polling connection, shared by its requests and
/// its connection task.
#[derive(Debug)]
pub(crate) struct HttpConnection {
    /// The transport that opened the connection: requests of another for the same token
    /// are refused ("Cannot change transports mid-connection").
    pub(crate) transport: Transport,
    /// The user the connection was opened for: later requests must come from the same
    /// one (with credentials that still verify).
    pub(crate) user: Option<String>,
    /// Where POST handlers put the client's bytes; the connection's reader holds the
    /// receiving end. Bounded, so a POST handler stops reading its body while the hub is
    /// behind.
    pub(crate) posts: mpsc::Sender<Bytes>,
    /// Set while a POST streams its body into `posts`: a second POST at the same time
    /// would interleave the client's bytes, so it gets 409.
    sending: AtomicBool,
    /// Set once the client ended the connection (`DELETE`, or it dropped the event
    /// stream); the reader then reports the transport closed.
    ended: AtomicBool,
    /// Wakes the reader when `ended` is set.
    ended_changed: Notify,
}

impl HttpConnection {
    /// A new connection and the receiving end of its POST channel.
    pub(crate) fn new(transport: Transport, user: Option<String>) -> (Self, mpsc::Receiver<Bytes>) {
        let (posts, chunks) = mpsc::channel(POSTED_CHUNKS);
        let connection = Self {
            transport,
            user,
            posts,
            sending: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            ended_changed: Notify::new(),
        };
        (connection, chunks)
    }

    /// Mark a POST in flight until the guard is dropped; `None` while another one is.
    pub(crate) fn start_sending(self: &Arc<Self>) -> Option<SendingGuard> {
        if self.sending.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(SendingGuard(self.clone()))
    }

    /// The client ended the connection.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.ended_changed.notify_waiters();
    }

    /// Whether the client ended the connection.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Completes once the client ended the connection.
    pub(crate) async fn ended(&self) {
        loop {
            let changed = self.ended_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_ended() {
                return;
            }
            changed.await;
        }
    }
}

/// Clears [`HttpConnection`]'s in-flight POST mark when dropped.
#[derive(Debug)]
pub(crate) struct SendingGuard(Arc<HttpConnection>);

impl Drop for SendingGuard {
    fn drop(&mut self) {
        self.0.sending.store(false, Ordering::Release);
    }
}

/// What a request's token refers to.
#[derive(Debug)]
pub(crate) enum Found {
    /// A live Server-Sent Events or long-polling connection.
    Http(Arc<HttpConnection>),
    /// A live WebSocket connection.
    WebSocket,
    /// Nothing live (never issued, expired, or ended).
    Unknown,
}

/// The outcome of opening a connection for a token.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The token already has a live connection: this is a later request of it.
    Existing(Arc<HttpConnection>),
    /// A new connection, registered until `registration` is dropped.
    New {
        /// The connection.
        connection: Arc<HttpConnection>,
        /// The receiving end of its POST channel.
        chunks: mpsc::Receiver<Bytes>,
        /// The claimed token, released when the connection ends.
        lease: TokenLease,
        /// Removes the entry when dropped.
        registration: Registration,
    },
}

/// The registry.
#[derive(Debug, Default)]
pub(crate) struct HttpConnections {
    /// Token to connection; behind a mutex held only for map operations.
    inner: Mutex<HashMap<Box<str>, Arc<HttpConnection>>>,
}

impl HttpConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<HttpConnection>>> {
        // Every operation is a single map call: a panic cannot leave it half-changed.
        lock(&self.inner)
    }

    /// What `token` refers to now.
    pub(crate) fn find(&self, tokens: &TokenStore, token: &str) -> Found {
        if let Some(connection) = self.lock().get(token) {
            return Found::Http(connection.clone());
        }
        if tokens.is_claimed(token) {
            Found::WebSocket
        } else {
            Found::Unknown
        }
    }

    /// The live connection of `token`, or a new one with `transport` if the token was
    /// issued by negotiate and is not claimed yet. Atomic, so two first requests racing
    /// for one token open one connection.
    ///
    /// # Errors
    ///
    /// [`ClaimError::InUse`] when a WebSocket holds the token, [`ClaimError::Unknown`]
    /// when nothing does and negotiate did not issue it (or it expired).
    pub(crate) fn open(
        self: &Arc<Self>,
        tokens: &Arc<TokenStore>,
        token: &str,
        transport: impl FnOnce() -> Transport,
        user: Option<String>,
    ) -> Result<Opened, ClaimError> {
        let mut map = self.lock();
        if let Some(connection) = map.get(token) {
            return Ok(Opened::Existing(connection.clone()));
        }
        let lease = tokens.claim(token)?;
        let (connection, chunks) = HttpConnection::new(transport(), user);
        let connection = Arc::new(connection);
        map.insert(token.into(), connection.clone());
        Ok(Opened::New {
            connection,
            chunks,
            lease,
            registration: Registration {
                registry: self.clone(),
                token: token.into(),
            },
        })
    }
}

/// A connection's place in the registry, removed when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    /// Where the entry is.
    registry: Arc<HttpConnections>,
    /// Its key.
    token: Box<str>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.token);
    }
}
