//! Connection ids and the secret connection tokens negotiate hands out.
//!
//! Negotiate creates a connection id (public: other code addresses the connection by it)
//! and a connection token (secret: only the client that negotiated knows it, and it is what
//! the WebSocket request presents in `?id=`). A token is claimed by at most one WebSocket,
//! and expires if none arrives in time.
//!
//! Negotiate version 0 (clients older than SignalR 3.1, and the Python `signalrcore`) has
//! no token: the client presents the connection id itself. As ASP.NET Core does, the id is
//! then stored as the token, with the same expiry and the same single use, so the id is
//! usable as a claim only until its one WebSocket arrives; that it becomes public later
//! (the chat hub announces it in `UserConnected`) gives nobody a way in.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backplane_core::lock;
use backplane_core::{ConnectionId, NodeTag};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use metrics::Gauge;
use tokio::time::Instant;

/// 128 random bits from the operating system, as 22 URL-safe characters.
///
/// Used for both connection ids and connection tokens: unguessable, and unique across
/// nodes without coordination.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a connection token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Never issued, expired, or its connection already ended.
    Unknown,
    /// A WebSocket already uses it.
    InUse,
}

/// What a connection's transport request presents in `?id=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A secret distinct from the connection id (negotiate version 1).
    Secret,
    /// The connection id itself (negotiate version 0, where the response has no token).
    ConnectionId,
}

/// The tokens of one hub: issued and waiting for their WebSocket, or in use.
#[derive(Debug)]
pub(crate) struct TokenStore {
    /// Behind a mutex held only for map operations, never across an await.
    inner: Mutex<Tokens>,
    /// How long an issued token waits for its WebSocket.
    lifetime: Duration,
    /// How many issued tokens may wait for their transport at once.
    max_pending: usize,
    /// The metrics gauge of the pending tokens, set whenever their number changes.
    outstanding: Gauge,
    /// The tag of this node that the connection ids it issues carry, if the hub's
    /// lifetime manager has one.
    node_tag: Option<NodeTag>,
}

/// Negotiate refused: [`TokenStore::issue`] found the store at its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyPending;

#[derive(Debug)]
struct Tokens {
    /// Issued by negotiate, not claimed yet: token to (connection id, expiry, whether
    /// the client asked for stateful reconnect).
    pending: HashMap<Box<str>, (ConnectionId, Instant, bool)>,
    /// Claimed by a live WebSocket.
    active: HashSet<Box<str>>,
}

impl TokenStore {
    /// A store whose tokens wait `lifetime` for their transport, at most `max_pending`
    /// of them at once.
    pub(crate) fn new(lifetime: Duration, max_pending: usize, outstanding: Gauge) -> Self {
        Self {
            inner: Mutex::new(Tokens {
                pending: HashMap::new(),
                active: HashSet::new(),
            }),
            lifetime,
            max_pending,
            outstanding,
            node_tag: None,
        }
    }

    /// The same store, issuing connection ids that carry `tag` (see
    /// [`ConnectionId::node_tag`]).
    pub(crate) fn with_node_tag(mut self, tag: Option<NodeTag>) -> Self {
        self.node_tag = tag;
        self
    }

    /// A new connection id: 128 random bits, and this node's tag when it has one
    /// (`<22 characters>.<12 hexadecimal digits>`).
    pub(crate) fn new_connection_id(&self) -> ConnectionId {
        let unique = random_id();
        match self.node_tag {
            Some(tag) => ConnectionId::tagged(&unique, tag),
            None => ConnectionId::from(unique),
        }
    }

    /// Remove the expired pending tokens, and give the maps' spare room back when they
    /// hold less than a quarter of it (a burst of negotiates must not keep its table
    /// for ever). Run by the hub's background sweep twice per lifetime.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut tokens = self.lock();
        tokens.pending.retain(|_, (_, expiry, _)| *expiry > now);
        self.outstanding.set(tokens.pending.len() as f64);
        if tokens.pending.capacity() > 64 && tokens.pending.len() < tokens.pending.capacity() / 4 {
            tokens.pending.shrink_to_fit();
        }
        if tokens.active.capacity() > 64 && tokens.active.len() < tokens.active.capacity() / 4 {
            tokens.active.shrink_to_fit();
        }
    }

    /// Sweep `store` every half lifetime until it is dropped.
    pub(crate) fn spawn_sweeper(store: &Arc<Self>) {
        let weak = Arc::downgrade(store);
        let period = (store.lifetime / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(store) = weak.upgrade() else {
                    return;
                };
                store.sweep();
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // Every operation leaves the maps consistent, so a panic elsewhere cannot have
        // left them half-changed.
        lock(&self.inner)
    }

    /// Issue a new connection id and the token that claims it (`kind` says whether that
    /// is a separate secret or the id itself; `stateful`, whether the connection will use
    /// stateful reconnect).
    ///
    /// # Errors
    ///
    /// [`TooManyPending`] when [`HubOptions::max_pending_negotiations`] tokens are
    /// waiting, even after the expired ones were removed.
    ///
    /// [`HubOptions::max_pending_negotiations`]: crate::HubOptions::max_pending_negotiations
    pub(crate) fn issue(
        &self,
        kind: TokenKind,
        stateful: bool,
    ) -> Result<(ConnectionId, String), TooManyPending> {
        let connection_id = self.new_connection_id();
        let token = match kind {
            TokenKind::Secret => random_id(),
            TokenKind::ConnectionId => connection_id.as_str().to_owned(),
        };
        let now = Instant::now();
        let mut tokens = self.lock();
        if tokens.pending.len() >= self.max_pending {
            // Full: expired tokens may still be waiting for the background sweep.
            tokens.pending.retain(|_, (_, expiry, _)| *expiry > now);
            if tokens.pending.len() >= self.max_pending {
                self.outstanding.set(tokens.pending.len() as f64);
                return Err(TooManyPending);
            }
        }
        tokens.pending.insert(
            token.clone().into_boxed_str(),
            (connection_id.clone(), now + self.lifetime, stateful),
        );
        self.outstanding.set(tokens.pending.len() as f64);
        Ok((connection_id, token))
    }

    /// Claim a token for a WebSocket; the returned lease releases it when dropped.
    pub(crate) fn claim(self: &Arc<Self>, token: &str) -> Result<TokenLease, ClaimError> {
        let mut tokens = self.lock();
        if tokens.active.contains(token) {
            return Err(ClaimError::InUse);
        }
        let (token, (connection_id, expiry, stateful)) = tokens
            .pending
            .remove_entry(token)
            .ok_or(ClaimError::Unknown)?;
        self.outstanding.set(tokens.pending.len() as f64);
        if expiry <= Instant::now() {
            return Err(ClaimError::Unknown);
        }
        tokens.active.insert(token.clone());
        Ok(TokenLease {
            store: self.clone(),
            token,
            connection_id,
            stateful,
        })
    }

    /// Whether a live connection holds `token`.
    pub(crate) fn is_claimed(&self, token: &str) -> bool {
        self.lock().active.contains(token)
    }

    /// How many tokens are issued or in use (for tests and diagnostics).
    #[cfg(test)]
    fn len(&self) -> usize {
        let tokens = self.lock();
        tokens.pending.len() + tokens.active.len()
    }
}

/// A claimed token: held by the WebSocket connection for its whole life, and released
/// (never to be usable again) when dropped.
#[derive(Debug)]
pub(crate) struct TokenLease {
    /// Where to release the token.
    store: Arc<TokenStore>,
    /// The token.
    token: Box<str>,
    /// The connection id negotiate issued with it.
    connection_id: ConnectionId,
    /// Whether the client asked for stateful reconnect when it negotiated.
    stateful: bool,
}

impl TokenLease {
    /// The connection id negotiate issued with the token.
    pub(crate) fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
    }

    /// The token itself.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Whether the client asked for stateful reconnect when it negotiated.
    pub(crate) fn stateful(&self) -> bool {
        self.stateful
    }
}

impl Drop for TokenLease {
    fn drop(&mut self) {
        self.store.lock().active.remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_long_distinct_and_url_safe() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn connection_ids_carry_the_node_tag_when_there_is_one() {
        let tag = NodeTag::of(backplane_core::NodeId::random());
        let store =
            TokenStore::new(Duration::from_secs(15), 100, Gauge::noop()).with_node_tag(Some(tag));
        let (connection_id, token) = store.issue(TokenKind::ConnectionId, false).unwrap();
        assert_eq!(connection_id.node_tag(), Some(tag));
        assert_eq!(connection_id.as_str().len(), 22 + 1 + 12);
        assert_eq!(token, connection_id.as_str());
        let (other, _) = store.issue(TokenKind::Secret, false).unwrap();
        assert_ne!(other, connection_id);
        let untagged = TokenStore::new(Duration::from_secs(15), 100, Gauge::noop());
        assert_eq!(untagged.new_connection_id().as_str().len(), 22);
        assert_eq!(untagged.new_connection_id().node_tag(), None);
    }

    #[tokio::test]
    async fn token_lifecycle() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(15), 100, Gauge::noop()));
        let (connection_id, token) = store.issue(TokenKind::Secret, false).unwrap();
        assert_ne!(connection_id.as_str(), token);
        assert_eq!(store.claim("nope").unwrap_err(), ClaimError::Unknown);
        let lease = store.claim(&token).unwrap();
        assert_eq!(lease.connection_id(), &connection_id);
        assert_eq!(store.claim(&token).unwrap_err(), ClaimError::InUse);
        drop(lease);
        // Once its connection ended, a token is gone for good.
        assert_eq!(store.claim(&token).unwrap_err(), ClaimError::Unknown);
        assert_eq!(store.len(), 0);
    }

    #[tokio::test]
    async fn version_0_tokens_are_the_connection_id_and_claimable_once() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(15), 100, Gauge::noop()));
        let (connection_id, token) = store.issue(TokenKind::ConnectionId, false).unwrap();
        assert_eq!(connection_id.as_str(), token);
        let lease = store.claim(connection_id.as_str()).unwrap();
        assert_eq!(lease.connection_id(), &connection_id);
        assert_eq!(store.claim(&token).unwrap_err(), ClaimError::InUse);
        drop(lease);
        assert_eq!(store.claim(&token).unwrap_err(), ClaimError::Unknown);
        assert_eq!(store.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn version_0_tokens_expire_like_secrets() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(15), 100, Gauge::noop()));
        let (_, token) = store.issue(TokenKind::ConnectionId, false).unwrap();
        tokio::time::advance(Duration::from_secs(16)).await;
        assert_eq!(store.claim(&token).unwrap_err(), ClaimError::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn unclaimed_tokens_expire_and_are_swept() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(15), 100, Gauge::noop()));
        let (_, token) = store.issue(TokenKind::Secret, false).unwrap();
        tokio::time::advance(Duration::from_secs(16)).await;
        assert_eq!(store.claim(&token).unwrap_err(), ClaimError::Unknown);
        let (_, stale) = store.issue(TokenKind::Secret, false).unwrap();
        tokio::time::advance(Duration::from_secs(16)).await;
        let _fresh = store.issue(TokenKind::Secret, false).unwrap();
        store.sweep();
        assert_eq!(store.len(), 1);
        assert_eq!(store.claim(&stale).unwrap_err(), ClaimError::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn pending_tokens_are_capped_until_they_expire_or_are_claimed() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(15), 3, Gauge::noop()));
        let tokens: Vec<String> = (0..3)
            .map(|_| store.issue(TokenKind::Secret, false).unwrap().1)
            .collect();
        assert_eq!(
            store.issue(TokenKind::Secret, false).unwrap_err(),
            TooManyPending
        );
        // A claimed token no longer counts against the cap.
        let _lease = store.claim(&tokens[0]).unwrap();
        store.issue(TokenKind::Secret, false).unwrap();
        assert_eq!(
            store.issue(TokenKind::Secret, false).unwrap_err(),
            TooManyPending
        );
        // Expired ones do not either, swept or not.
        tokio::time::advance(Duration::from_secs(16)).await;
        store.issue(TokenKind::Secret, false).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_sweep_empties_and_shrinks_the_map() {
        let store = Arc::new(TokenStore::new(
            Duration::from_secs(2),
            100_000,
            Gauge::noop(),
        ));
        TokenStore::spawn_sweeper(&store);
        for _ in 0..10_000 {
            store.issue(TokenKind::Secret, false).unwrap();
        }
        assert!(store.lock().pending.capacity() >= 10_000);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(store.len(), 0);
        assert!(store.lock().pending.capacity() < 1_000);
    }
}
