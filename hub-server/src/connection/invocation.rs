//! Running one hub message from the client: invocations and their completions, and the
//! messages that need no method.

use std::sync::Arc;

use bytes::BytesMut;
use hub_protocol::{
    Completion, CompletionResult, HubMessage, Invocation, Protocol, encode_message,
};

use super::End;
use crate::dispatch;
use crate::extract::ConnectionInfo;
use crate::hub::HubShared;
use crate::outbox::Outbox;

/// Initial size of a completion frame's buffer (results larger than this grow it).
const COMPLETION_FRAME_CAPACITY: usize = 64;

/// Run one invocation to its end and queue its completion, if the caller wants one.
pub(super) async fn run_invocation(
    hub: Arc<HubShared>,
    info: Arc<ConnectionInfo>,
    outbox: Arc<Outbox>,
    invocation: Invocation,
) -> Option<End> {
    let invocation_id = invocation.invocation_id.clone();
    let target_for_log = invocation_id.is_none().then(|| invocation.target.clone());
    let result = dispatch::invoke(&hub, &info, invocation).await;
    match invocation_id {
        Some(invocation_id) => complete(info.protocol, &outbox, invocation_id, result),
        None => {
            // Fire-and-forget: the caller wants no reply, so errors only get logged.
            if let CompletionResult::Error(error) = result {
                tracing::debug!(hub = %hub.name, connection_id = %info.id, target = ?target_for_log, %error, "non-blocking invocation failed");
            }
            None
        }
    }
}

/// Act on one hub message from the client; `Some` ends the connection.
pub(super) async fn handle(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    outbox: &Arc<Outbox>,
    message: HubMessage,
) -> Option<End> {
    match message {
        HubMessage::Invocation(invocation) => {
            // The read loop starts invocations itself; this path is only for completeness.
            // Boxed: inline, its state would make every connection's read loop (and so
            // every idle connection) a kilobyte larger.
            Box::pin(run_invocation(
                hub.clone(),
                info.clone(),
                outbox.clone(),
                invocation,
            ))
            .await
        }
        HubMessage::StreamInvocation(invocation) => {
            // The read loop runs streams itself; this path is only for completeness.
            Box::pin(super::streams::run_stream(
                hub.clone(),
                info.clone(),
                outbox.clone(),
                invocation,
            ))
            .await
        }
        HubMessage::Close(close) => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, error = ?close.error, "client sent Close");
            Some(End::ClientClosed)
        }
        HubMessage::Ping => None,
        HubMessage::CancelInvocation(cancel) => {
            super::streams::cancel(hub, info, &cancel.invocation_id);
            None
        }
        HubMessage::StreamItem(item) => match super::streams::route_item(hub, info, outbox, item) {
            Ok((sender, upload)) => {
                let _ = sender.send(upload).await;
                None
            }
            Err(end) => end,
        },
        HubMessage::Completion(completion) => {
            if let Some((sender, upload)) = super::streams::route_completion(hub, info, completion)
            {
                let _ = sender.send(upload).await;
            }
            None
        }
        HubMessage::Ack(_) | HubMessage::Sequence(_) => {
            // A connection with stateful reconnect handles these as it reads them; any
            // other has no reason to send them.
            tracing::debug!(hub = %hub.name, connection_id = %info.id, "ignoring a stateful reconnect message on a connection without it");
            None
        }
    }
}

/// Queue the completion of `invocation_id`; `Some` ends the connection.
pub(super) fn complete(
    protocol: Protocol,
    outbox: &Outbox,
    invocation_id: String,
    result: CompletionResult,
) -> Option<End> {
    // A void completion is about 40 bytes plus the id: starting with room for it spares
    // the encoder several reallocations per invocation.
    let mut frame = BytesMut::with_capacity(COMPLETION_FRAME_CAPACITY + invocation_id.len());
    let completion = HubMessage::Completion(Completion {
        headers: Default::default(),
        invocation_id,
        result,
    });
    if let Err(error) = encode_message(protocol, &mut frame, &completion) {
        // Only a result over the 2 GiB MessagePack limit gets here.
        return Some(End::InvalidMessage(format!(
            "cannot encode completion: {error}"
        )));
    }
    outbox.reply(frame.freeze());
    None
}
