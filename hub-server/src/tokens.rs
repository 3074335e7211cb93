//! Connection ids and the secret connection tokens negotiate hands out.
//!
//! Negotiate creates a connection id (public: other code addresses the connection by it)
//! and a connection token (secret: only the client that negotiated knows it, and it is what
//! the WebSocket request presents in `?id=`). A token is claimed by at most one WebSocket,
//! and expires if none arrives in time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backplane_core::ConnectionId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

/// The tokens of one hub: issued and waiting for their WebSocket, or in use.
#[derive(Debug)]
pub(crate) struct TokenStore {
    /// Behind a mutex held only for map operations, never across an await.
    inner: Mutex<Tokens>,
    /// How long an issued token waits for its WebSocket.
    lifetime: Duration,
}

#[derive(Debug)]
struct Tokens {
    /// Issued by negotiate, not claimed yet: token to (connection id, expiry).
    pending: HashMap<Box<str>, (ConnectionId, Instant)>,
    /// Claimed by a live WebSocket.
    active: HashSet<Box<str>>,
    /// When expired pending tokens were last swept out.
    last_sweep: Instant,
}

impl TokenStore {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            inner: Mutex::new(Tokens {
                pending: HashMap::new(),
                active: HashSet::new(),
                last_sweep: Instant::now(),
            }),
            lifetime,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // Every operation leaves the maps consistent, so a panic elsewhere cannot have
        // left them half-changed.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issue a new connection id and its token.
    pub(crate) fn issue(&self) -> (ConnectionId, String) {
        let connection_id = ConnectionId::from(random_id());
        let token = random_id();
        let now = Instant::now();
        let mut tokens = self.lock();
        // Sweep at most once per lifetime, so a burst of negotiates costs one pass, and the
        // map never holds much more than one lifetime's worth of abandoned tokens.
        if now.duration_since(tokens.last_sweep) >= self.lifetime {
            tokens.pending.retain(|_, (_, expiry)| *expiry > now);
            tokens.last_sweep = now;
        }
        tokens.pending.insert(
            token.clone().into_boxed_str(),
            (connection_id.clone(), now + self.lifetime),
        );
        (connection_id, token)
    }

    /// Claim a token for a WebSocket; the returned lease releases it when dropped.
    pub(crate) fn claim(self: &Arc<Self>, token: &str) -> Result<TokenLease, ClaimError> {
        let mut tokens = self.lock();
        if tokens.active.contains(token) {
            return Err(ClaimError::InUse);
        }
        let (token, (connection_id, expiry)) = tokens
            .pending
            .remove_entry(token)
            .ok_or(ClaimError::Unknown)?;
        if expiry <= Instant::now() {
            return Err(ClaimError::Unknown);
        }
        tokens.active.insert(token.clone());
        Ok(TokenLease {
            store: self.clone(),
            token,
            connection_id,
        })
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
}

impl TokenLease {
    /// The connection id negotiate issued with the token.
    pub(crate) fn connection_id(&self) -> &ConnectionId {
        &self.connection_id
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

    #[tokio::test]
    async fn token_lifecycle() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(15)));
        let (connection_id, token) = store.issue();
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

    #[tokio::test(start_paused = true)]
    async fn unclaimed_tokens_expire_and_are_swept() {
        let store = Arc::new(TokenStore::new(Duration::from_secs(15)));
        let (_, token) = store.issue();
        tokio::time::advance(Duration::from_secs(16)).await;
        assert_eq!(store.claim(&token).unwrap_err(), ClaimError::Unknown);
        let (_, stale) = store.issue();
        tokio::time::advance(Duration::from_secs(16)).await;
        let _fresh = store.issue();
        // The sweep during the last issue removed the stale token.
        assert_eq!(store.len(), 1);
        assert_eq!(store.claim(&stale).unwrap_err(), ClaimError::Unknown);
    }
}
