//! [`PendingInvoke`]: an invocation already handed to the connection, whose completion
//! is still to come.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hub_protocol::{CompletionResult, EncodedValue, Protocol};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::error::{DisconnectReason, InvokeError};

/// The completion of an invocation started with
/// [`HubConnection::begin_invoke`](crate::HubConnection::begin_invoke): a future of the
/// hub method's result, typed as `T` (`()` for methods that return nothing).
///
/// The invocation is queued for writing whether or not this is awaited; dropping it
/// only stops waiting (the server still runs the method).
#[must_use = "the result of the invocation is only known by awaiting it"]
pub struct PendingInvoke<T> {
    /// Receives the server's completion, or why none will come.
    completion: oneshot::Receiver<Result<CompletionResult, InvokeError>>,
    /// The protocol the result is encoded in (a void result is read as its null).
    protocol: Protocol,
    /// The result type; `fn() -> T` keeps `PendingInvoke` `Send` and `Unpin` for any `T`.
    result: PhantomData<fn() -> T>,
}

impl<T> PendingInvoke<T> {
    pub(crate) fn new(
        protocol: Protocol,
        completion: oneshot::Receiver<Result<CompletionResult, InvokeError>>,
    ) -> Self {
        PendingInvoke {
            completion,
            protocol,
            result: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Future for PendingInvoke<T> {
    type Output = Result<T, InvokeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let received = ready!(Pin::new(&mut self.completion).poll(cx));
        // The connection task dropped the reply without a word: it is gone.
        let result = received
            .map_err(|_| InvokeError::ConnectionLost(DisconnectReason::TransportClosed))
            .and_then(|result| result);
        Poll::Ready(result.and_then(|result| typed(self.protocol, result)))
    }
}

/// A completion's result as `T`: the value, the hub's error, or null for void.
fn typed<T: DeserializeOwned>(
    protocol: Protocol,
    result: CompletionResult,
) -> Result<T, InvokeError> {
    match result {
        CompletionResult::Error(message) => Err(InvokeError::Hub(message)),
        CompletionResult::Value(value) => value.deserialize().map_err(InvokeError::InvalidResult),
        // A void completion is the absence of a value: deserialize from null, so `()` and
        // `Option<T>` accept it and other types say what they expected.
        CompletionResult::Void => EncodedValue::encode(protocol, &())?
            .deserialize()
            .map_err(InvokeError::InvalidResult),
    }
}

impl<T> fmt::Debug for PendingInvoke<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingInvoke")
            .field("protocol", &self.protocol)
            .field("result", &std::any::type_name::<T>())
            .finish()
    }
}
