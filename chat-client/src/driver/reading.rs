//! The connection task's reading side: chunks from the transport decoded in place where
//! they can be, each hub message handled (completions, stream items, the server's
//! invocations of client methods and their answers).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use hub_protocol::{
    DecodeError, Decoder, HubMessage, Invocation, encode_cancel_invocation, encode_completion,
    encode_completion_error,
};
use tokio::time::Instant;

use super::Session;
use crate::error::DisconnectReason;
use crate::handlers::NO_RESULT;
use crate::outgoing::{Outgoing, Reply};

/// What the session decodes messages from: a chunk as the transport delivered it, or the
/// buffer of what a chunk left unfinished.
trait Input {
    fn decode_with(&mut self, decoder: &mut Decoder) -> Result<Option<HubMessage>, DecodeError>;
}

impl Input for Bytes {
    fn decode_with(&mut self, decoder: &mut Decoder) -> Result<Option<HubMessage>, DecodeError> {
        decoder.decode_chunk(self)
    }
}

impl Input for BytesMut {
    fn decode_with(&mut self, decoder: &mut Decoder) -> Result<Option<HubMessage>, DecodeError> {
        decoder.decode(self)
    }
}

/// Most transport chunks handled in one turn of the task's loop when they are ready
/// already: under load, reading what has arrived costs one turn (polling stop, the
/// queues and the timers) per batch, not per message; writes and `stop` wait at most
/// one batch.
const READ_BATCH: usize = 64;

impl Session<'_> {
    /// Handles one chunk from the transport, and the chunks that are ready right after it
    /// (up to [`READ_BATCH`] in all) without going back through the task's loop for each.
    pub(super) async fn receive(
        &mut self,
        chunk: Result<Bytes, DisconnectReason>,
    ) -> Result<(), DisconnectReason> {
        let mut chunk = chunk;
        let mut handled = 0;
        loop {
            self.last_received = Instant::now();
            let bytes = chunk?;
            if self.received.is_empty() {
                // Nothing left over: decode the chunk where it lies, and keep only its
                // unfinished tail (copying every byte received cost a fan-out receiver
                // more than its socket reads did).
                let mut chunk = bytes;
                let dispatched = self.dispatch(&mut chunk).await;
                self.received.extend_from_slice(&chunk);
                dispatched?;
            } else if !bytes.is_empty() {
                self.received.extend_from_slice(&bytes);
                self.dispatch_received().await?;
            }
            handled += 1;
            // A held stream item stops reading (backpressure).
            if handled == READ_BATCH || self.held.is_some() {
                return Ok(());
            }
            // `receive` is cancel-safe: a chunk not ready yet stays for the loop's turn.
            match self.transport.receive().now_or_never() {
                Some(next) => chunk = next,
                None => return Ok(()),
            }
        }
    }

    /// Decodes and handles every complete message received so far.
    pub(super) async fn dispatch_received(&mut self) -> Result<(), DisconnectReason> {
        let mut received = std::mem::take(&mut self.received);
        let dispatched = self.dispatch(&mut received).await;
        // Whatever arrived meanwhile cannot have: only this task receives.
        debug_assert!(self.received.is_empty());
        self.received = received;
        dispatched
    }

    /// Decodes and handles every complete message in `input`, a chunk from the
    /// transport or the buffer of what was left over, until it holds none or a held
    /// stream item stops reading.
    async fn dispatch(&mut self, input: &mut impl Input) -> Result<(), DisconnectReason> {
        loop {
            if self.held.is_some() {
                // The rest waits until the consumer makes room.
                return Ok(());
            }
            match input.decode_with(&mut self.decoder) {
                Ok(Some(message)) => self.handle(message).await?,
                Ok(None) => return Ok(()),
                // Later protocol versions may add message types; clients ignore them.
                Err(DecodeError::UnknownMessageType { message_type }) => {
                    tracing::debug!(message_type, "ignoring a hub message of unknown type");
                }
                Err(error) => {
                    tracing::warn!(%error, "invalid message from the server");
                    return Err(DisconnectReason::InvalidMessage(Arc::new(error)));
                }
            }
        }
    }

    /// Handles one hub message.
    async fn handle(&mut self, message: HubMessage) -> Result<(), DisconnectReason> {
        if let Some(stateful) = &mut self.stateful
            && !stateful
                .accept(&message)
                .map_err(DisconnectReason::Sequence)?
        {
            return Ok(());
        }
        if let Some(observer) = &self.inner.config.message_observer {
            (observer.0)(&message);
        }
        match message {
            HubMessage::Invocation(invocation) => self.invoke_handlers(invocation).await,
            HubMessage::Completion(completion) => {
                self.in_flight.complete(completion);
                Ok(())
            }
            HubMessage::StreamItem(item) => {
                self.held = self.in_flight.item(item);
                Ok(())
            }
            HubMessage::Ping => Ok(()),
            HubMessage::Close(close) => Err(DisconnectReason::ServerClosed {
                error: close.error,
                allow_reconnect: close.allow_reconnect,
            }),
            // Servers do not stream to clients or cancel their calls, and Ack and Sequence
            // without stateful reconnect are not expected; ignoring strays is what the
            // official clients do.
            other => {
                tracing::debug!(
                    message_type = other.message_type(),
                    "ignoring an unexpected hub message"
                );
                Ok(())
            }
        }
    }

    /// Runs the handlers of an invocation from the server, and answers it when the
    /// server wants a result (it sent an invocation id), as the JavaScript client does:
    /// with the `on_invoke` handler's value or error, or with an error when there is none.
    async fn invoke_handlers(&mut self, invocation: Invocation) -> Result<(), DisconnectReason> {
        let answer = self
            .inner
            .handlers
            .get_through(&invocation.target, &mut self.last_lookup)
            .call(&invocation);
        let (id, answer) = match (invocation.invocation_id, answer) {
            (Some(id), Some(answer)) => (id, answer),
            (Some(id), None) => {
                let mut frame = BytesMut::new();
                if encode_completion_error(self.inner.config.protocol, &mut frame, &id, NO_RESULT)
                    .is_ok()
                {
                    self.write_numbered(frame.freeze()).await?;
                }
                return Ok(());
            }
            (None, answer) => {
                // Nobody waits for the value, but the handler's work is still done.
                if let Some(answer) = answer {
                    tokio::spawn(answer);
                }
                return Ok(());
            }
        };
        // The answer may take a while (or call the hub itself): it runs on its own task, and
        // goes out through this connection's queue, behind what is already there.
        let Some(outgoing) = self.inner.outgoing() else {
            return Ok(());
        };
        let protocol = self.inner.config.protocol;
        tokio::spawn(async move {
            let result = answer.await;
            let mut frame = BytesMut::new();
            if let Err(error) = encode_completion(protocol, &mut frame, &id, &result) {
                tracing::warn!(%error, "cannot encode a client result");
                return;
            }
            let message = Outgoing {
                frame: frame.freeze(),
                reply: Reply::Nothing,
            };
            // A connection lost meanwhile took the call with it.
            let _ = outgoing.send(message).await;
        });
        Ok(())
    }

    /// The consumer dropped stream `id`: tells the server to stop it, if it is still open.
    pub(super) async fn cancel(&mut self, id: &str) -> Result<(), DisconnectReason> {
        if !self.in_flight.cancel(id) {
            return Ok(());
        }
        let mut frame = BytesMut::new();
        match encode_cancel_invocation(self.inner.config.protocol, &mut frame, id) {
            Ok(()) => self.write_numbered(frame.freeze()).await,
            Err(_) => Ok(()),
        }
    }
}
