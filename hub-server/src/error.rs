//! Errors hub code deals with: a failed hub method, a failed send.

use std::error::Error as StdError;
use std::fmt;

/// Why a hub method failed, as returned by a method whose result is `Result<T, MethodError>`.
///
/// Like ASP.NET Core's `HubException`, [`MethodError::new`] is an error meant for the
/// caller: its message travels in the completion. Any other error converted with `?`
/// (every `std::error::Error`, or [`MethodError::internal`]) is logged on the server and the
/// caller only learns that the method failed, unless
/// [`HubOptions::detailed_errors`](crate::HubOptions::detailed_errors) is on, because
/// internal errors can leak details the client should not see.
///
/// ```
/// use hub_server::MethodError;
///
/// async fn divide(a: f64, b: f64) -> Result<f64, MethodError> {
///     if b == 0.0 {
///         return Err(MethodError::new("cannot divide by zero"));
///     }
///     Ok(a / b)
/// }
/// ```
///
/// It deliberately does not implement `std::error::Error`, so that `?` can convert every
/// error type into it (the same trade-off as `anyhow::Error`).
pub struct MethodError {
    /// What went wrong.
    message: String,
    /// Whether the message is meant for the caller (a [`MethodError::new`]).
    for_caller: bool,
    /// The underlying error, for the server log.
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl MethodError {
    /// An error whose `message` is sent to the caller, like throwing `HubException` in
    /// ASP.NET Core. The caller sees
    /// `An unexpected error occurred invoking 'Method' on the server. HubException: {message}`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            for_caller: true,
            source: None,
        }
    }

    /// An internal error: logged on the server, not shown to the caller unless detailed
    /// errors are enabled. `?` does this for every `std::error::Error`; use this for error
    /// types that are not one (such as `anyhow::Error`).
    pub fn internal(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        let error = error.into();
        Self {
            message: error.to_string(),
            for_caller: false,
            source: Some(error),
        }
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the message is meant for the caller ([`MethodError::new`]).
    pub fn is_for_caller(&self) -> bool {
        self.for_caller
    }

    /// The underlying error, if this one wraps another.
    pub fn source(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for MethodError {
    fn from(error: E) -> Self {
        Self::internal(error)
    }
}

impl fmt::Display for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodError")
            .field("message", &self.message)
            .field("for_caller", &self.for_caller)
            .field("source", &self.source)
            .finish()
    }
}

/// Why sending a message to clients failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The arguments could not be serialized (they must serialize as a sequence, such as a
    /// tuple).
    #[error("cannot serialize the arguments of {method:?}: {source}")]
    Encode {
        /// The client method being called.
        method: String,
        /// What failed.
        #[source]
        source: hub_protocol::EncodeError,
    },
    /// The message could not be handed to the other nodes, so it was not delivered to
    /// this node's connections either (after a timeout, other nodes may have it).
    #[error(transparent)]
    Hub(#[from] backplane_core::HubError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_makes_internal_errors() {
        fn parse(text: &str) -> Result<i32, MethodError> {
            Ok(text.parse::<i32>()?)
        }
        let error = parse("x").unwrap_err();
        assert!(!error.is_for_caller());
        assert!(error.source().is_some());
        assert_eq!(error.message(), "invalid digit found in string");
        let error = MethodError::new("nope");
        assert!(error.is_for_caller());
        assert_eq!(error.to_string(), "nope");
    }
}
