//! Client methods the server can call: typed handlers registered with
//! [`HubConnection::on`](crate::HubConnection::on), and handlers that answer with a value
//! (client results) registered with [`HubConnection::on_invoke`](crate::HubConnection::on_invoke).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use std::panic::{AssertUnwindSafe, catch_unwind};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, ready};
use hub_protocol::{ArgumentError, Arguments, CompletionResult, EncodedValue, Invocation};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a call that wants a result gets when no `on_invoke` handler answers it: the
/// JavaScript client's words.
pub(crate) const NO_RESULT: &str = "Client didn't provide a result.";

/// What a call that wants a result gets when its handler panicked.
const HANDLER_PANICKED: &str = "the client's handler panicked";

/// Builds a handler's parameter from the arguments of an invocation.
///
/// Implemented for tuples of up to 8 deserializable types (the arguments in order; the
/// argument count must match, as in the .NET client), for `()` (no arguments), and for
/// [`Arguments`] itself when a handler wants to look at the raw values.
///
/// ```
/// use chat_client::FromArguments;
/// use hub_protocol::{Arguments, Protocol};
///
/// let args = Arguments::encode(Protocol::Json, &("alice", 3))?;
/// let (name, count) = <(String, u32)>::from_arguments(&args)?;
/// assert_eq!((name.as_str(), count), ("alice", 3));
/// assert!(<(String,)>::from_arguments(&args).is_err()); // wrong count
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait FromArguments: Sized {
    /// Deserializes the arguments.
    ///
    /// # Errors
    ///
    /// [`ArgumentError`] when the count or a type does not match.
    fn from_arguments(arguments: &Arguments) -> Result<Self, ArgumentError>;
}

impl FromArguments for Arguments {
    fn from_arguments(arguments: &Arguments) -> Result<Self, ArgumentError> {
        Ok(arguments.clone())
    }
}

impl FromArguments for () {
    fn from_arguments(arguments: &Arguments) -> Result<Self, ArgumentError> {
        arguments.check_count(0)
    }
}

/// Implements [`FromArguments`] for a tuple: `(type index)` pairs, in order.
macro_rules! tuple_from_arguments {
    ($count:literal: $($name:ident $index:tt),+) => {
        impl<$($name: DeserializeOwned),+> FromArguments for ($($name,)+) {
            fn from_arguments(arguments: &Arguments) -> Result<Self, ArgumentError> {
                arguments.check_count($count)?;
                Ok(($(arguments.deserialize::<$name>($index)?,)+))
            }
        }
    };
}

tuple_from_arguments!(1: A 0);
tuple_from_arguments!(2: A 0, B 1);
tuple_from_arguments!(3: A 0, B 1, C 2);
tuple_from_arguments!(4: A 0, B 1, C 2, D 3);
tuple_from_arguments!(5: A 0, B 1, C 2, D 3, E 4);
tuple_from_arguments!(6: A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_arguments!(7: A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_arguments!(8: A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

/// A handler with its argument type erased, so handlers of any signature share one map.
pub(crate) type ErasedHandler = Arc<dyn Fn(&Arguments) -> Result<(), ArgumentError> + Send + Sync>;

/// The answer of a handler that returns a value, ready to become a Completion.
pub(crate) type Answer = BoxFuture<'static, CompletionResult>;

/// A handler that returns a value (a client result), with its types erased: builds the
/// future that computes the answer, encoded in the connection's protocol.
pub(crate) type ErasedResponder =
    Arc<dyn Fn(&Arguments) -> Result<Answer, ArgumentError> + Send + Sync>;

/// Erases a typed handler.
pub(crate) fn erase<A, F>(handler: F) -> ErasedHandler
where
    A: FromArguments,
    F: Fn(A) + Send + Sync + 'static,
{
    Arc::new(move |arguments| {
        handler(A::from_arguments(arguments)?);
        Ok(())
    })
}

/// Erases a typed handler that returns a value: `Ok(value)` is answered as the result
/// (serialized in the protocol of the arguments), `Err(error)` as an error with its text.
pub(crate) fn erase_responder<A, R, E, F, Fut>(handler: F) -> ErasedResponder
where
    A: FromArguments,
    R: Serialize,
    E: fmt::Display,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    Arc::new(move |arguments| {
        let protocol = arguments.protocol();
        let answer = handler(A::from_arguments(arguments)?);
        Ok(Box::pin(async move {
            match answer.await {
                Ok(value) => match EncodedValue::encode(protocol, &value) {
                    Ok(value) => CompletionResult::Value(value),
                    Err(error) => {
                        CompletionResult::Error(format!("cannot serialize the result: {error}"))
                    }
                },
                Err(error) => CompletionResult::Error(error.to_string()),
            }
        }) as Answer)
    })
}

/// The handlers of one client method.
#[derive(Clone, Default)]
pub(crate) struct MethodHandlers {
    /// Handlers registered with `on`, in registration order.
    pub(crate) notify: Vec<ErasedHandler>,
    /// The handler registered with `on_invoke`, which answers calls that want a result.
    pub(crate) respond: Option<ErasedResponder>,
}

impl MethodHandlers {
    /// Runs the `on` handlers with `invocation`'s arguments (one whose arguments do not fit
    /// is skipped, one that panics is logged; neither stops the others), then starts the
    /// `on_invoke` handler. Its answer comes back as a future that never panics (a panic
    /// becomes an error result), or `None` when there is no such handler: the caller
    /// answers a call that wants a result with [`NO_RESULT`] then, as the JavaScript
    /// client does.
    pub(crate) fn call(&self, invocation: &Invocation) -> Option<Answer> {
        let method = &invocation.target;
        if self.notify.is_empty() && self.respond.is_none() {
            tracing::warn!(%method, "no handler registered for a client method the server called");
        }
        for handler in &self.notify {
            match catch_unwind(AssertUnwindSafe(|| handler(&invocation.arguments))) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%method, %error, "the arguments do not fit the handler; skipped");
                }
                Err(_) => tracing::error!(%method, "a handler panicked"),
            }
        }
        let respond = self.respond.as_ref()?;
        let answer = match catch_unwind(AssertUnwindSafe(|| respond(&invocation.arguments))) {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                tracing::warn!(%method, %error, "the arguments do not fit the handler");
                return Some(ready(CompletionResult::Error(error.to_string())).boxed());
            }
            Err(_) => {
                tracing::error!(%method, "a handler panicked");
                return Some(ready(CompletionResult::Error(HANDLER_PANICKED.to_owned())).boxed());
            }
        };
        Some(
            AssertUnwindSafe(answer)
                .catch_unwind()
                .map(|result| {
                    result.unwrap_or_else(|_| CompletionResult::Error(HANDLER_PANICKED.to_owned()))
                })
                .boxed(),
        )
    }
}

/// Every registered handler, by method name. Names match ignoring ASCII case, as in the
/// JavaScript client (hub method names are case-insensitive on ASP.NET Core too).
#[derive(Default)]
pub(crate) struct Handlers {
    /// Lower-cased method name to its handlers, shared so that looking them up for each
    /// message copies a pointer, not the list (changes copy the list instead).
    by_method: Mutex<HashMap<String, Arc<MethodHandlers>>>,
    /// What a method without handlers has.
    none: Arc<MethodHandlers>,
    /// Whether any method has handlers: a connection without any (one that only
    /// counts what arrives) skips the lookup for each message.
    any: AtomicBool,
    /// How many times handlers were added or removed, so a [`LastLookup`] knows whether
    /// what it holds is still current.
    changes: AtomicU64,
}

/// The handlers of the method a connection's task looked up last, reused while the
/// server keeps calling that method and no handler was added or removed since: a
/// fan-out receiver gets thousands of calls of one method in a row, and looking each up
/// (lower-casing the name, locking the map, hashing) was a twentieth of its CPU.
#[derive(Default)]
pub(crate) struct LastLookup {
    /// The method name as the server sent it.
    method: String,
    /// [`Handlers::changes`] when `handlers` was looked up.
    changes: u64,
    /// What the lookup gave.
    handlers: Option<Arc<MethodHandlers>>,
}

/// Longest method name looked up without allocating its lower-case form.
const SHORT_NAME: usize = 64;

impl Handlers {
    /// Adds a handler for `method`; earlier handlers stay.
    pub(crate) fn add(&self, method: &str, handler: ErasedHandler) {
        let mut map = self.lock();
        let entry = map.entry(method.to_ascii_lowercase()).or_default();
        Arc::make_mut(entry).notify.push(handler);
        self.any.store(true, Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Sets the handler that answers `method`, replacing an earlier one (a call has one
    /// result).
    pub(crate) fn set_responder(&self, method: &str, responder: ErasedResponder) {
        let previous = {
            let mut map = self.lock();
            let entry = map.entry(method.to_ascii_lowercase()).or_default();
            let previous = Arc::make_mut(entry).respond.replace(responder);
            self.any.store(true, Ordering::Release);
            self.changes.fetch_add(1, Ordering::AcqRel);
            previous
        };
        if previous.is_some() {
            tracing::warn!(method, "a second on_invoke handler replaces the first");
        }
    }

    /// Removes every handler of `method`.
    pub(crate) fn remove(&self, method: &str) {
        let mut map = self.lock();
        map.remove(&method.to_ascii_lowercase());
        self.any.store(!map.is_empty(), Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The handlers of `method`, shared out so they run without the lock held (a handler
    /// may register or remove handlers). Called for every invocation from the server, so
    /// a short name is lower-cased on the stack.
    pub(crate) fn get(&self, method: &str) -> Arc<MethodHandlers> {
        if !self.any.load(Ordering::Acquire) {
            return self.none.clone();
        }
        let mut short = [0u8; SHORT_NAME];
        let lowered;
        let key = match short.get_mut(..method.len()) {
            Some(bytes) => {
                bytes.copy_from_slice(method.as_bytes());
                bytes.make_ascii_lowercase();
                // Lower-casing ASCII letters keeps UTF-8 valid.
                std::str::from_utf8(bytes).unwrap_or(method)
            }
            None => {
                lowered = method.to_ascii_lowercase();
                &lowered
            }
        };
        self.lock()
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.none.clone())
    }

    /// [`get`](Self::get), through the caller's `last` lookup: the same handlers again when
    /// `method` is the one looked up last and nothing changed since.
    pub(crate) fn get_through<'a>(
        &self,
        method: &str,
        last: &'a mut LastLookup,
    ) -> &'a MethodHandlers {
        // Read before looking up: a change racing with the lookup leaves `last` marked
        // older than what it holds, so the next call looks up again.
        let changes = self.changes.load(Ordering::Acquire);
        if last.changes != changes || last.method != method {
            last.handlers = None;
        }
        last.handlers.get_or_insert_with(|| {
            last.changes = changes;
            last.method.clear();
            last.method.push_str(method);
            self.get(method)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<MethodHandlers>>> {
        // A handler cannot panic while the lock is held (they run outside it), so a poisoned
        // map is still consistent.
        self.by_method
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.lock();
        f.debug_map()
            .entries(map.iter().map(|(method, handlers)| {
                (method, (handlers.notify.len(), handlers.respond.is_some()))
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(handlers: &Handlers, method: &str) -> Arc<std::sync::atomic::AtomicUsize> {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        handlers.add(
            method,
            erase(move |_: Arguments| {
                counter.fetch_add(1, Ordering::SeqCst);
            }),
        );
        count
    }

    fn handler_count(handlers: &Handlers, method: &str, last: &mut LastLookup) -> usize {
        handlers.get_through(method, last).notify.len()
    }

    #[test]
    fn the_last_lookup_is_reused_only_while_nothing_changed() {
        let handlers = Handlers::default();
        let mut last = LastLookup::default();
        assert_eq!(handler_count(&handlers, "Receive", &mut last), 0);
        let _first = counting(&handlers, "receive");
        assert_eq!(
            handler_count(&handlers, "Receive", &mut last),
            1,
            "an added handler is seen"
        );
        let before = Arc::as_ptr(last.handlers.as_ref().unwrap());
        assert_eq!(handler_count(&handlers, "Receive", &mut last), 1);
        assert_eq!(
            Arc::as_ptr(last.handlers.as_ref().unwrap()),
            before,
            "reused"
        );
        assert_eq!(
            handler_count(&handlers, "Other", &mut last),
            0,
            "another method is looked up"
        );
        let _second = counting(&handlers, "RECEIVE");
        assert_eq!(handler_count(&handlers, "Receive", &mut last), 2);
        handlers.remove("Receive");
        assert_eq!(
            handler_count(&handlers, "Receive", &mut last),
            0,
            "a removal is seen"
        );
    }
}
