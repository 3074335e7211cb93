//! Turning plain async functions into hub methods: the [`Handler`] trait, implemented for
//! every async function whose parameters implement [`FromInvocation`] and whose output
//! implements [`IntoHubResult`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use hub_protocol::{EncodedValue, Protocol};
use serde::Serialize;

use crate::error::MethodError;
use crate::extract::{BindError, FromInvocation, InvocationContext};

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// How a hub method call ended, ready to become a completion (or a stream).
#[derive(Debug)]
pub struct Outcome(pub(crate) Result<Reply, Failure>);

/// What a method that ran successfully gives back.
pub(crate) enum Reply {
    /// A value for the completion (`None`: a void completion).
    Value(Option<EncodedValue>),
    /// Items to stream, then a completion.
    Stream(crate::streaming::ItemStream),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Value(value) => f.debug_tuple("Value").field(value).finish(),
            Reply::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Why a call produced no value.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A parameter could not be extracted; the method never ran.
    Bind(BindError),
    /// The method ran and failed.
    Method(MethodError),
}

/// A hub method or connection hook: implemented for async functions (and closures
/// returning futures) of up to 12 parameters, each implementing [`FromInvocation`], whose
/// output implements [`IntoHubResult`]. You do not implement it yourself.
///
/// `Params` is the tuple of parameter types; it only exists so that one function type can
/// implement the trait for its own signature.
pub trait Handler<Params>: Clone + Send + Sync + 'static {
    /// How many positional arguments an invocation must carry.
    const ARGUMENTS: usize;

    /// How many upload streams an invocation must carry.
    const STREAMS: usize = 0;

    /// Whether the function returns a stream ([`HubStream`](crate::HubStream)).
    const STREAMING: bool = false;

    /// Extract the parameters from `context` and run the function.
    fn call(self, context: InvocationContext) -> HandlerFuture;
}

/// What a hub method may return: how it becomes the value (or error) of the completion the
/// caller receives.
///
/// Implemented for `()` (a void completion), for common standard types (numbers, `bool`,
/// `char`, strings, `Option`, `Vec`, maps, `serde_json::Value`), and for
/// `Result<T, E>` with any `T: Serialize` and any `E: Into<MethodError>` (so `?` works). To
/// return your own serializable type, return `Result<YourType, MethodError>`.
pub trait IntoHubResult: Send {
    /// Serialize the result in `protocol`: `Ok(None)` for a void method, `Ok(Some(value))`
    /// for a value.
    ///
    /// # Errors
    ///
    /// The method's error, or a [`MethodError`] if the value could not be serialized.
    fn into_hub_result(self, protocol: Protocol) -> Result<Option<EncodedValue>, MethodError>;

    /// Whether this is a stream of items rather than one result (only
    /// [`HubStream`](crate::HubStream) says yes).
    const STREAMING: bool = false;

    /// How the call ended. The default wraps [`IntoHubResult::into_hub_result`]; streams
    /// override it.
    #[doc(hidden)]
    fn into_outcome(self, protocol: Protocol) -> Outcome
    where
        Self: Sized,
    {
        Outcome(
            self.into_hub_result(protocol)
                .map(Reply::Value)
                .map_err(Failure::Method),
        )
    }
}

/// Serialize a returned value, treating `()` as "no value" (a void completion).
fn encode_value<T: Serialize + 'static>(
    value: &T,
    protocol: Protocol,
) -> Result<Option<EncodedValue>, MethodError> {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<()>() {
        return Ok(None);
    }
    EncodedValue::encode(protocol, value)
        .map(Some)
        .map_err(MethodError::internal)
}

impl IntoHubResult for () {
    fn into_hub_result(self, _protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        Ok(None)
    }
}

impl<T, E> IntoHubResult for Result<T, E>
where
    T: Serialize + Send + 'static,
    E: Into<MethodError> + Send,
{
    fn into_hub_result(self, protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        match self {
            Ok(value) => encode_value(&value, protocol),
            Err(error) => Err(error.into()),
        }
    }
}

macro_rules! into_hub_result_by_serialize {
    ($($ty:ty),* $(,)?) => {
        $(
            impl IntoHubResult for $ty {
                fn into_hub_result(
                    self,
                    protocol: Protocol,
                ) -> Result<Option<EncodedValue>, MethodError> {
                    encode_value(&self, protocol)
                }
            }
        )*
    };
}

into_hub_result_by_serialize!(
    bool,
    char,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    f32,
    f64,
    String,
    &'static str,
    Cow<'static, str>,
    serde_json::Value,
);

impl<T: Serialize + Send + 'static> IntoHubResult for Option<T> {
    fn into_hub_result(self, protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        encode_value(&self, protocol)
    }
}

impl<T: Serialize + Send + 'static> IntoHubResult for Vec<T> {
    fn into_hub_result(self, protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        encode_value(&self, protocol)
    }
}

impl<K, V, S> IntoHubResult for HashMap<K, V, S>
where
    K: Serialize + Send + 'static,
    V: Serialize + Send + 'static,
    S: Send + 'static,
{
    fn into_hub_result(self, protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        encode_value(&self, protocol)
    }
}

impl<K, V> IntoHubResult for BTreeMap<K, V>
where
    K: Serialize + Send + 'static,
    V: Serialize + Send + 'static,
{
    fn into_hub_result(self, protocol: Protocol) -> Result<Option<EncodedValue>, MethodError> {
        encode_value(&self, protocol)
    }
}

macro_rules! impl_handler {
    ($($param:ident),*) => {
        impl<F, Fut, R, $($param,)*> Handler<($($param,)*)> for F
        where
            F: FnOnce($($param,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoHubResult,
            $($param: FromInvocation + Send + 'static,)*
        {
            const ARGUMENTS: usize = 0 $(+ <$param as FromInvocation>::ARGUMENTS)*;
            const STREAMS: usize = 0 $(+ <$param as FromInvocation>::STREAMS)*;
            const STREAMING: bool = <R as IntoHubResult>::STREAMING;

            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn call(self, mut context: InvocationContext) -> HandlerFuture {
                let protocol = context.protocol();
                $(
                    let $param = match <$param as FromInvocation>::from_invocation(&mut context) {
                        Ok(value) => value,
                        Err(error) => {
                            return Box::pin(std::future::ready(Outcome(Err(Failure::Bind(error)))));
                        }
                    };
                )*
                // Drop the context (and the argument bytes it holds) before the method runs.
                drop(context);
                let future = self($($param,)*);
                Box::pin(async move {
                    future.await.into_outcome(protocol)
                })
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);

/// A [`Handler`] with its parameter types erased, so methods of any signature share one
/// table.
pub(crate) trait ErasedHandler: Send + Sync {
    /// How many positional arguments an invocation must carry.
    fn arguments(&self) -> usize;

    /// How many upload streams an invocation must carry.
    fn streams(&self) -> usize;

    /// Whether the method streams its result.
    fn is_streaming(&self) -> bool;

    /// Run the handler.
    fn call(&self, context: InvocationContext) -> HandlerFuture;
}

/// Holds a handler together with the parameter tuple it was registered for.
pub(crate) struct Erased<H, P> {
    /// The function.
    handler: H,
    /// Ties `P` to the struct without owning one.
    params: std::marker::PhantomData<fn() -> P>,
}

impl<H, P> Erased<H, P> {
    pub(crate) fn new(handler: H) -> Self {
        Self {
            handler,
            params: std::marker::PhantomData,
        }
    }
}

impl<H: Handler<P>, P: 'static> ErasedHandler for Erased<H, P> {
    fn arguments(&self) -> usize {
        H::ARGUMENTS
    }

    fn streams(&self) -> usize {
        H::STREAMS
    }

    fn is_streaming(&self) -> bool {
        H::STREAMING
    }

    fn call(&self, context: InvocationContext) -> HandlerFuture {
        self.handler.clone().call(context)
    }
}
