//! Running one invocation: finding the method, binding arguments, calling it, and wording
//! the result as the completion the caller receives.
//!
//! Error texts follow ASP.NET Core's, so clients and their users see what they would see
//! against an ASP.NET Core server.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use hub_protocol::{Arguments, CompletionResult, Invocation, StreamInvocation};

use crate::error::MethodError;
use crate::extract::{ConnectionInfo, InvocationContext};
use crate::handler::{ErasedHandler, Failure, Outcome, Reply};
use crate::hub::HubShared;
use crate::streaming::ItemStream;

/// Run `invocation` for the connection `info` and describe how it ended.
pub(crate) async fn invoke(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    invocation: Invocation,
) -> CompletionResult {
    let Invocation {
        target,
        arguments,
        stream_ids,
        ..
    } = invocation;
    match bind_and_call(hub, info, &target, arguments, stream_ids, false).await {
        Ok(Reply::Value(None)) => CompletionResult::Void,
        Ok(Reply::Value(Some(value))) => CompletionResult::Value(value),
        Ok(Reply::Stream(_)) => unreachable!("streaming methods are refused for invocations"),
        Err(error) => CompletionResult::Error(error),
    }
}

/// Run a stream invocation's method: its items, or the error that ends it at once.
pub(crate) async fn invoke_stream(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    invocation: StreamInvocation,
) -> Result<ItemStream, String> {
    let StreamInvocation {
        target,
        arguments,
        stream_ids,
        ..
    } = invocation;
    match bind_and_call(hub, info, &target, arguments, stream_ids, true).await? {
        Reply::Stream(items) => Ok(items),
        Reply::Value(_) => unreachable!("non-streaming methods are refused for stream invocations"),
    }
}

/// Find the method, check the invocation fits it, bind its parameters and run it; the
/// error is the completion text the caller receives.
async fn bind_and_call(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    target: &str,
    arguments: Arguments,
    stream_ids: Vec<String>,
    streaming: bool,
) -> Result<Reply, String> {
    let Some(handler) = hub.method(target) else {
        tracing::debug!(hub = %hub.name, connection_id = %info.id, %target, "unknown hub method");
        return Err(method_does_not_exist(target));
    };
    if !crate::auth::may_invoke(&hub.auth, target, info.principal.as_deref()) {
        tracing::debug!(hub = %hub.name, connection_id = %info.id, %target, "method refused: the caller is not authorized");
        // ASP.NET Core's words for a method its `[Authorize]` refuses.
        return Err(format!(
            "Failed to invoke '{target}' because user is unauthorized"
        ));
    }
    if handler.is_streaming() != streaming {
        let (kind, invocation) = if streaming {
            ("non-streaming", "a streaming")
        } else {
            ("streaming", "a non-streaming")
        };
        return Err(format!(
            "The client attempted to invoke the {kind} '{target}' method with {invocation} invocation."
        ));
    }
    let expected_streams = handler.streams();
    if stream_ids.len() != expected_streams {
        return Err(format!(
            "An unexpected error occurred invoking '{target}' on the server. HubException: Client sent {} stream(s), Hub method expects {expected_streams}.",
            stream_ids.len()
        ));
    }
    if !stream_ids.is_empty() {
        let limit = hub.stream_options.max_upload_streams;
        if info.streams.upload_count() + stream_ids.len() > limit {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, %target, limit, "too many upload streams");
            return Err(format!(
                "Failed to invoke '{target}' due to an error on the server. HubException: the connection may have at most {limit} upload stream(s) open at once."
            ));
        }
        let mut unique = stream_ids.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != stream_ids.len() || info.streams.any_upload_open(&stream_ids) {
            return Err(format!(
                "Failed to invoke '{target}' due to an error on the server. HubException: a stream id is already in use."
            ));
        }
    }
    let expected = handler.arguments();
    let actual = arguments.len();
    if actual != expected {
        tracing::debug!(hub = %hub.name, connection_id = %info.id, %target, expected, actual, "wrong argument count");
        return Err(format!(
            "Failed to invoke '{target}' due to an error on the server. InvalidDataException: Invocation provides {actual} argument(s) but target expects {expected}."
        ));
    }
    let context = InvocationContext {
        connection: info.clone(),
        services: hub.services.clone(),
        arguments,
        next_argument: 0,
        stream_ids: stream_ids.into_iter(),
    };
    let started = std::time::Instant::now();
    let Outcome(outcome) = call(handler, context).await;
    hub.invocation_duration.record(started.elapsed());
    match outcome {
        Ok(reply) => Ok(reply),
        Err(Failure::Bind(error)) if error.is_caller_fault() => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, %target, %error, "invalid arguments");
            Err(format!(
                "Failed to invoke '{target}' due to an error on the server. InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked. {}",
                capitalize(without_json_position(error.message()))
            ))
        }
        Err(Failure::Bind(error)) => {
            tracing::error!(hub = %hub.name, connection_id = %info.id, %target, %error, "cannot bind hub method parameters");
            Err(format!(
                "Failed to invoke '{target}' due to an error on the server."
            ))
        }
        Err(Failure::Method(error)) => Err(method_failed(hub, info, target, &error)),
    }
}

/// The completion text for a method (or a stream) that failed with `error`.
pub(crate) fn method_failed(
    hub: &HubShared,
    info: &ConnectionInfo,
    target: &str,
    error: &MethodError,
) -> String {
    let prefix = format!("An unexpected error occurred invoking '{target}' on the server.");
    if error.is_for_caller() {
        tracing::debug!(hub = %hub.name, connection_id = %info.id, %target, %error, "hub method failed");
        format!("{prefix} HubException: {error}")
    } else {
        tracing::warn!(hub = %hub.name, connection_id = %info.id, %target, %error, "hub method failed");
        if hub.options.detailed_errors {
            format!("{prefix} {error}")
        } else {
            prefix
        }
    }
}

/// Run a connection hook (which takes no arguments) and report a failure as text for the
/// log, or for the Close message when it is meant for the client.
pub(crate) async fn run_hook(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    hook: &Arc<dyn ErasedHandler>,
) -> Result<(), HookError> {
    let context = InvocationContext {
        connection: info.clone(),
        services: hub.services.clone(),
        arguments: Arguments::empty(info.protocol),
        next_argument: 0,
        stream_ids: Vec::new().into_iter(),
    };
    match call(hook, context).await {
        Outcome(Ok(_)) => Ok(()),
        Outcome(Err(Failure::Bind(error))) => Err(HookError {
            log: error.to_string(),
            for_client: None,
        }),
        Outcome(Err(Failure::Method(error))) => Err(HookError {
            log: error.to_string(),
            for_client: error.is_for_caller().then(|| error.to_string()),
        }),
    }
}

/// How a connection hook failed.
#[derive(Debug)]
pub(crate) struct HookError {
    /// The whole story, for the server log.
    pub(crate) log: String,
    /// The message meant for the client, if the hook returned one.
    pub(crate) for_client: Option<String>,
}

/// Run a handler, turning a panic (in parameter extraction or in the method) into a method
/// error, as ASP.NET Core turns an exception into a completion error: the connection, and
/// its registration with the lifetime manager, outlive a buggy method.
async fn call(handler: &Arc<dyn ErasedHandler>, context: InvocationContext) -> Outcome {
    // The handler is called inside the guarded future, so a panic while extracting
    // parameters is caught too.
    let guarded = AssertUnwindSafe(async move { handler.call(context).await });
    match guarded.catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic payload".to_owned());
            Outcome(Err(Failure::Method(MethodError::internal(format!(
                "the hub method panicked: {reason}"
            )))))
        }
    }
}

fn method_does_not_exist(target: &str) -> String {
    format!(
        "Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
    )
}

/// `message` without the " at line 1 column 5" serde_json appends: the caller's
/// arguments are not the text it wrote, so the position would only mislead.
fn without_json_position(message: &str) -> &str {
    let Some((head, position)) = message.rsplit_once(" at line ") else {
        return message;
    };
    let is_position = position
        .split_once(" column ")
        .is_some_and(|(line, column)| {
            !line.is_empty()
                && !column.is_empty()
                && line.bytes().all(|b| b.is_ascii_digit())
                && column.bytes().all(|b| b.is_ascii_digit())
        });
    if is_position { head } else { message }
}

/// `text` with its first letter upper-cased and a final period, to fit in a sentence.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{capitalize, without_json_position};

    #[test]
    fn strips_json_positions_only() {
        assert_eq!(
            without_json_position("invalid type: string \"x\", expected i64 at line 1 column 5"),
            "invalid type: string \"x\", expected i64"
        );
        assert_eq!(without_json_position("look at line 3"), "look at line 3");
        assert_eq!(without_json_position("plain"), "plain");
    }

    #[test]
    fn capitalizes_into_a_sentence() {
        assert_eq!(
            capitalize("argument at index 0 is invalid: x"),
            "Argument at index 0 is invalid: x."
        );
        assert_eq!(capitalize("done."), "Done.");
        assert_eq!(capitalize(""), ".");
    }
}
