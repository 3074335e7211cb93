//! A connection's streams: running a server-to-client stream into the send queue, and
//! routing the client's stream items and completions (upload streams and client results).

use std::sync::Arc;

use backplane_core::HubLifetimeManager;
use bytes::BytesMut;
use futures_util::StreamExt;
use hub_protocol::{
    Completion, CompletionResult, HubMessage, Protocol, StreamInvocation, StreamItem,
    encode_message,
};
use tokio::sync::mpsc;

use super::End;
use super::invocation::complete;
use crate::dispatch;
use crate::extract::ConnectionInfo;
use crate::hub::HubShared;
use crate::outbox::{Outbox, Outgoing};
use crate::streaming::{Upload, lock};

/// Run a stream invocation: call the method, send its items as they come (each waiting
/// for room in the send queue), then the completion. Dropping the future (the caller
/// cancelled, or the connection ended) drops the stream and whatever produces it.
pub(super) async fn run_stream(
    hub: Arc<HubShared>,
    info: Arc<ConnectionInfo>,
    outbox: Arc<Outbox>,
    invocation: StreamInvocation,
) -> Option<End> {
    let invocation_id = invocation.invocation_id.clone();
    let target = invocation.target.clone();
    let mut items = match dispatch::invoke_stream(&hub, &info, invocation).await {
        Ok(items) => items,
        Err(error) => {
            return complete(
                info.protocol,
                &outbox,
                invocation_id,
                CompletionResult::Error(error),
            );
        }
    };
    // A stream fills at most half of the queue: the rest stays free for the connection's
    // other answers and for broadcasts, which would otherwise find the queue full and
    // disconnect a client that is reading as fast as it can.
    let headroom = hub.options.send_queue_bytes / 2;
    while let Some(item) = items.next().await {
        let value = match item {
            Ok(value) => value,
            Err(error) => {
                let error = dispatch::method_failed(&hub, &info, &target, &error);
                return complete(
                    info.protocol,
                    &outbox,
                    invocation_id,
                    CompletionResult::Error(error),
                );
            }
        };
        let frame = match encode(
            info.protocol,
            &HubMessage::StreamItem(StreamItem {
                headers: Default::default(),
                invocation_id: invocation_id.clone(),
                item: value,
            }),
        ) {
            Ok(frame) => frame,
            Err(end) => return Some(end),
        };
        wait_for_room(&outbox, frame.len() + headroom).await;
        if outbox.push(Outgoing::Reply(frame.freeze())).is_err() {
            // The connection is closing: nobody is left to stream to.
            return None;
        }
    }
    complete(
        info.protocol,
        &outbox,
        invocation_id,
        CompletionResult::Void,
    )
}

/// Wait until `bytes` fit in the send queue (or it is empty).
async fn wait_for_room(outbox: &Outbox, bytes: usize) {
    loop {
        let room = outbox.room_freed();
        tokio::pin!(room);
        // Registered before the check, so the writer freeing room in between is seen.
        room.as_mut().enable();
        if outbox.has_room_for(bytes) || outbox.is_empty() {
            return;
        }
        room.await;
    }
}

fn encode(protocol: Protocol, message: &HubMessage) -> Result<BytesMut, End> {
    let mut frame = BytesMut::new();
    encode_message(protocol, &mut frame, message)
        .map_err(|error| End::InvalidMessage(format!("cannot encode a stream item: {error}")))?;
    Ok(frame)
}

/// Where a stream item from the client goes: an open upload stream's channel, or
/// nowhere (the completion error has been queued for the client).
pub(super) fn route_item(
    hub: &HubShared,
    info: &ConnectionInfo,
    outbox: &Outbox,
    item: StreamItem,
) -> Result<(mpsc::Sender<Upload>, Upload), Option<End>> {
    match info.streams.upload(&item.invocation_id) {
        Some(sender) => Ok((sender, Upload::Item(item.item))),
        None => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, stream_id = %item.invocation_id, "stream item for a stream that is not open");
            let error = format!(
                "Received a stream item for stream '{}', which is not open (unknown, completed, or its method has returned).",
                item.invocation_id
            );
            Err(complete(
                info.protocol,
                outbox,
                item.invocation_id,
                CompletionResult::Error(error),
            ))
        }
    }
}

/// A Completion from the client: the end of one of its upload streams, or its answer
/// to a client-result invocation. What to hand the upload stream last, if anything.
pub(super) fn route_completion(
    hub: &HubShared,
    info: &ConnectionInfo,
    completion: Completion,
) -> Option<(mpsc::Sender<Upload>, Upload)> {
    if let Some(sender) = info.streams.close_upload(&completion.invocation_id) {
        // Dropping the last sender ends the stream once its buffered items are taken.
        return match completion.result {
            CompletionResult::Error(error) => Some((sender, Upload::Failed(error))),
            CompletionResult::Void | CompletionResult::Value(_) => None,
        };
    }
    let invocation_id = completion.invocation_id.clone();
    if !hub
        .services
        .manager
        .set_connection_result(&info.id, completion)
    {
        tracing::debug!(hub = %hub.name, connection_id = %info.id, %invocation_id, "completion for nothing waiting (unknown id, or its call timed out)");
    }
    None
}

/// The client cancelled `invocation_id`: stop the stream at once.
pub(super) fn cancel(hub: &HubShared, info: &ConnectionInfo, invocation_id: &str) {
    let handle = lock(&info.streams.downloads).remove(invocation_id);
    match handle {
        Some(handle) => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, %invocation_id, "stream cancelled by the client");
            handle.abort();
        }
        None => {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, %invocation_id, "cancel for no running stream");
        }
    }
}

/// Removes a stream's cancel handle from its connection's books when it ends.
pub(super) struct DownloadRegistration {
    /// The connection.
    pub(super) info: Arc<ConnectionInfo>,
    /// The stream's invocation id.
    pub(super) invocation_id: String,
}

impl Drop for DownloadRegistration {
    fn drop(&mut self) {
        lock(&self.info.streams.downloads).remove(&self.invocation_id);
    }
}
