//! The access token provider: an async closure asked for a token before each connection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{BoxError, ConnectError};

/// The boxed future a provider returns.
type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

/// Produces the bearer token sent with negotiate (`Authorization: Bearer`) and with the
/// WebSocket request. Called again for every connection attempt, so a provider can refresh
/// expired tokens.
#[derive(Clone)]
pub(crate) struct AccessTokenProvider(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl AccessTokenProvider {
    /// Wraps an async closure.
    pub(crate) fn new<F, Fut>(provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
    {
        AccessTokenProvider(Arc::new(move || Box::pin(provider())))
    }

    /// Asks for a token; an empty token means "none", as in the official clients.
    ///
    /// # Errors
    ///
    /// [`ConnectError::AccessToken`] with the provider's error.
    pub(crate) async fn token(&self) -> Result<Option<String>, ConnectError> {
        let token = (self.0)().await.map_err(ConnectError::AccessToken)?;
        Ok(Some(token).filter(|token| !token.is_empty()))
    }
}

impl fmt::Debug for AccessTokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessTokenProvider(..)")
    }
}
