//! The reading half of a connection: hub messages out of the client's bytes, invocations
//! started in arrival order, backpressure and the client timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::future::abortable;
use futures_util::stream::FuturesUnordered;
use hub_protocol::{CompletionResult, DecodeError, Decoder, HubMessage, StreamInvocation};
use metrics::Counter;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::End;
use super::invocation::{complete, handle, run_invocation};
use super::resume::ResumeState;
use super::streams;
use crate::dispatch;
use crate::extract::ConnectionInfo;
use crate::hub::HubShared;
use crate::outbox::Outbox;
use crate::streaming::{ConnectionStreams, Upload, lock};
use crate::transport::{Incoming, Received, TransportError};

/// Read and dispatch until the connection should end.
///
/// Invocations are started in the order they arrive. With
/// [`HubOptions::max_parallel_invocations`](crate::HubOptions::max_parallel_invocations)
/// at 1 each one finishes before the next message is read, as in ASP.NET Core. Above 1
/// (the default is 64), an invocation is polled once as soon as it arrives (so it has reached
/// its first await, typically a send that has taken its place in the backplane's ordered
/// queue) before the next one starts; up to that many then run at once, and reading stops
/// while the limit is reached, which pushes back on the client through TCP.
///
/// Memory stays bounded whatever the client sends: `buf` holds at most one partial hub
/// message (the decoder refuses one over `max_message_size` as soon as it is that long)
/// plus one chunk from the transport, which is only asked for more once every complete
/// message in `buf` has been handled.
///
/// The client timeout counts from the last time the transport reported activity, or from
/// the end of a wait of the server's own (backpressure), whichever is later: a client is
/// not blamed for the time the server was not reading.
pub(super) async fn read_loop<I: Incoming>(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    outbox: &Arc<Outbox>,
    incoming: &mut I,
    mut buf: BytesMut,
    received: &Counter,
) -> End {
    if let Some(hook) = &hub.on_connected
        && let Err(error) = dispatch::run_hook(hub, info, hook).await
    {
        tracing::warn!(hub = %hub.name, connection_id = %info.id, error = %error.log, "on_connected hook failed");
        return End::HookFailed(error.for_client);
    }
    let max_message_size = hub.options.max_message_size;
    let client_timeout = hub.options.client_timeout;
    let max_in_flight = hub.options.max_parallel_invocations.max(1);
    let mut decoder = Decoder::new(info.protocol, max_message_size);
    let mut in_flight = Running::default();
    let mut last_received = Instant::now();
    loop {
        // Messages left over from the handshake or the last read come first.
        let mut stalled = false;
        loop {
            // Nothing more is read while the client's queue is full: its answers are
            // queued past the bound (a client is never dropped as a slow reader because
            // of its own completions), and this wait is what bounds them. Waiting here
            // stops reading, which pushes back on the client through TCP.
            match wait_for_room(outbox, &mut in_flight, 0).await {
                Ok(waited) => stalled |= waited,
                Err(end) => return end,
            }
            let before = buf.len();
            let message = match decoder.decode(&mut buf) {
                Ok(Some(message)) => {
                    received.increment(1);
                    message
                }
                Ok(None) => break,
                Err(DecodeError::MessageTooLarge { limit }) => return End::TooLarge(limit),
                Err(DecodeError::UnknownMessageType { message_type }) => {
                    // Later protocol versions may add types; receivers ignore them.
                    tracing::debug!(hub = %hub.name, connection_id = %info.id, message_type, "ignoring unknown message type");
                    continue;
                }
                Err(error) => return End::InvalidMessage(error.to_string()),
            };
            if let Some(resume) = &info.resume {
                match stateful_reconnect(resume, &message) {
                    Ok(true) => {}
                    // Handled here, or a resent duplicate of a message already processed.
                    Ok(false) => continue,
                    Err(error) => return End::InvalidMessage(error.to_string()),
                }
            }
            let message = match message {
                HubMessage::StreamInvocation(invocation) => {
                    if let Some(end) =
                        start_stream(hub, info, outbox, &mut in_flight, invocation).await
                    {
                        return end;
                    }
                    continue;
                }
                HubMessage::StreamItem(item) => {
                    match streams::route_item(hub, info, outbox, item) {
                        Ok((sender, upload)) => {
                            match Box::pin(send_upload(&mut in_flight, &sender, upload)).await {
                                Ok(waited) => stalled |= waited,
                                Err(end) => return end,
                            }
                        }
                        Err(Some(end)) => return end,
                        Err(None) => {}
                    }
                    continue;
                }
                HubMessage::Completion(completion) => {
                    if let Some((sender, upload)) = streams::route_completion(hub, info, completion)
                    {
                        match Box::pin(send_upload(&mut in_flight, &sender, upload)).await {
                            Ok(waited) => stalled |= waited,
                            Err(end) => return end,
                        }
                    }
                    continue;
                }
                other => other,
            };
            if let HubMessage::Invocation(invocation) = message {
                // Room in the client's queue for what this invocation will most likely
                // send it (its completion, and the echo of a message it broadcasts, about
                // as large as the invocation), on top of what the invocations already
                // running may still send: a burst of large broadcasts from one client must
                // not overflow its own queue with its own echoes and get it dropped as a
                // slow reader. The client's reading pace then paces its sending.
                let reservation = before - buf.len() + REPLY_RESERVE;
                match wait_for_room(outbox, &mut in_flight, reservation).await {
                    Ok(waited) => stalled |= waited,
                    Err(end) => return end,
                }
                let mut invocation: InFlight = Box::pin({
                    let running =
                        run_invocation(hub.clone(), info.clone(), outbox.clone(), invocation);
                    async move { (running.await, reservation, false) }
                });
                // One poll now: the invocation takes its place (its first send is queued)
                // before any later one starts.
                match poll_once(invocation.as_mut()).await {
                    Poll::Ready((Some(end), _, _)) => return end,
                    Poll::Ready((None, _, _)) => {}
                    Poll::Pending => in_flight.push(invocation, reservation, false),
                }
                while in_flight.invocations(&info.streams) >= max_in_flight {
                    // Not reading meanwhile is the backpressure on a client that sends
                    // faster than its invocations complete.
                    stalled = true;
                    if let Some(end) = in_flight.next().await {
                        return end;
                    }
                }
            } else if let Some(end) = handle(hub, info, outbox, message).await {
                return end;
            }
        }
        if stalled {
            last_received = Instant::now();
        }
        let next = tokio::select! {
            // Completing invocations while waiting for the client's next bytes.
            finished = in_flight.next(), if !in_flight.is_empty() => match finished {
                Some(end) => return end,
                None => continue,
            },
            next = timeout_at(last_received + client_timeout, incoming.read(&mut buf)) => next,
        };
        match next {
            Err(_elapsed) => return End::ClientTimeout(client_timeout),
            Ok(Ok(Received::Activity)) => last_received = Instant::now(),
            Ok(Ok(Received::Resumed)) => {
                // A new transport: whatever the decoder had seen of a half-received
                // message is gone with the old one.
                decoder = Decoder::new(info.protocol, max_message_size);
                last_received = Instant::now();
            }
            Ok(Ok(Received::Closed | Received::Lost)) => return End::ClientClosed,
            Ok(Err(TransportError::Violation(reason))) => return End::TransportViolation(reason),
            Ok(Err(TransportError::Io(error))) => return End::Transport(error.to_string()),
        }
    }
}

/// Stateful reconnect's part in reading `message`: Ack and Sequence are applied here, and
/// numbered messages are counted. Whether the message is still to be handled (`false`
/// for Ack, Sequence, and a resent duplicate of a message already processed).
fn stateful_reconnect(
    resume: &ResumeState,
    message: &HubMessage,
) -> Result<bool, hub_protocol::replay::SequenceError> {
    match message {
        HubMessage::Ack(ack) => resume.ack(ack.sequence_id).map(|()| false),
        HubMessage::Sequence(sequence) => resume.resume_at(sequence.sequence_id).map(|()| false),
        HubMessage::Invocation(_)
        | HubMessage::StreamItem(_)
        | HubMessage::Completion(_)
        | HubMessage::StreamInvocation(_)
        | HubMessage::CancelInvocation(_) => Ok(resume.receive()),
        HubMessage::Ping | HubMessage::Close(_) => Ok(true),
    }
}

/// What the reader reserves in the client's queue for an invocation's completion, on top
/// of the invocation's own size.
const REPLY_RESERVE: usize = 64;

/// An invocation or stream that has started and not finished; it ends with its outcome,
/// the bytes reserved for it, and whether it was a stream.
type InFlight = Pin<Box<dyn Future<Output = (Option<End>, usize, bool)> + Send>>;

/// Start a server-to-client stream, unless the connection runs too many or the id is
/// taken (answered with a completion error); `Some` ends the connection.
async fn start_stream(
    hub: &Arc<HubShared>,
    info: &Arc<ConnectionInfo>,
    outbox: &Arc<Outbox>,
    in_flight: &mut Running,
    invocation: StreamInvocation,
) -> Option<End> {
    let invocation_id = invocation.invocation_id.clone();
    let refusal = {
        let downloads = lock(&info.streams.downloads);
        let limit = hub.stream_options.max_streams;
        if downloads.contains_key(&invocation_id) {
            Some(format!(
                "Failed to invoke '{}' due to an error on the server. HubException: a stream with invocation id '{invocation_id}' is already running.",
                invocation.target
            ))
        } else if downloads.len() >= limit {
            tracing::debug!(hub = %hub.name, connection_id = %info.id, limit, "too many streams");
            Some(format!(
                "Failed to invoke '{}' due to an error on the server. HubException: the connection may run at most {limit} stream(s) at once.",
                invocation.target
            ))
        } else {
            None
        }
    };
    if let Some(error) = refusal {
        return complete(
            info.protocol,
            outbox,
            invocation_id,
            CompletionResult::Error(error),
        );
    }
    let (running, handle) = abortable(streams::run_stream(
        hub.clone(),
        info.clone(),
        outbox.clone(),
        invocation,
    ));
    lock(&info.streams.downloads).insert(invocation_id.clone(), handle);
    let registration = streams::DownloadRegistration {
        info: info.clone(),
        invocation_id,
    };
    let mut stream: InFlight = Box::pin(async move {
        let _registration = registration;
        // Aborted: the client cancelled; it expects nothing more.
        (running.await.unwrap_or(None), 0, true)
    });
    match poll_once(stream.as_mut()).await {
        Poll::Ready((end, _, _)) => end,
        Poll::Pending => {
            in_flight.push(stream, 0, true);
            None
        }
    }
}

/// Hand `upload` to its stream's method, running the connection's invocations meanwhile
/// (the method taking it is one of them). Says whether it had to wait; `Err` ends the
/// connection.
async fn send_upload(
    in_flight: &mut Running,
    sender: &mpsc::Sender<Upload>,
    upload: Upload,
) -> Result<bool, End> {
    let send = sender.send(upload);
    tokio::pin!(send);
    let mut waited = false;
    loop {
        tokio::select! {
            biased;
            // An error means the method dropped its stream: the item has nowhere to go.
            _ = &mut send => return Ok(waited),
            finished = in_flight.next(), if !in_flight.is_empty() => {
                waited = true;
                if let Some(end) = finished {
                    return Err(end);
                }
            }
        }
    }
}

/// The invocations of one connection that have started and not finished. The set is
/// only allocated once one is pending, so a connection whose invocations all finish at
/// once does not pay for it.
#[derive(Default)]
struct Running {
    /// The invocations, polled together.
    set: Option<FuturesUnordered<InFlight>>,
    /// Bytes reserved in the client's queue for what they will send it.
    reserved: usize,
}

impl Running {
    fn len(&self) -> usize {
        self.set.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many invocations (not server-to-client streams, which do not count against
    /// the parallel invocation limit) are running. Streams are counted by their cancel
    /// handles rather than by a field here, which would grow every connection's future.
    fn invocations(&self, streams: &ConnectionStreams) -> usize {
        self.len().saturating_sub(lock(&streams.downloads).len())
    }

    fn push(&mut self, invocation: InFlight, reservation: usize, stream: bool) {
        debug_assert!(!stream || reservation == 0, "streams reserve nothing");
        self.reserved += reservation;
        self.set
            .get_or_insert_with(FuturesUnordered::new)
            .push(invocation);
    }

    /// The outcome of the next invocation to finish (`Some` ends the connection);
    /// `None` at once when none is running.
    async fn next(&mut self) -> Option<End> {
        let set = self.set.as_mut()?;
        let (end, reservation, _stream) = set.next().await?;
        self.reserved -= reservation;
        end
    }
}

/// Wait until the outbox has room for `bytes` more on top of what the running
/// invocations reserved (or, when nothing is queued or running, at all: one message
/// larger than the queue still goes), letting running invocations finish meanwhile.
/// Says whether it had to wait; `Err` ends the connection.
async fn wait_for_room(
    outbox: &Outbox,
    in_flight: &mut Running,
    bytes: usize,
) -> Result<bool, End> {
    let fits = |in_flight: &Running| {
        outbox.has_room_for(in_flight.reserved + bytes)
            || (in_flight.is_empty() && outbox.is_empty())
    };
    if fits(in_flight) {
        return Ok(false);
    }
    loop {
        let room = outbox.room_freed();
        tokio::pin!(room);
        // Registered before the check, so the writer freeing room in between is seen.
        room.as_mut().enable();
        if fits(in_flight) {
            return Ok(true);
        }
        tokio::select! {
            () = room => {}
            finished = in_flight.next(), if !in_flight.is_empty() => {
                if let Some(end) = finished {
                    return Err(end);
                }
            }
        }
    }
}

/// Poll `future` once with the current task's waker.
async fn poll_once<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}
