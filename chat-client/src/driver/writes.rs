//! The connection task's writing side: calls written in batches with one flush, the
//! replies recorded for each, keep-alive pings, stateful-reconnect acks and the frames
//! kept for a resend.

use bytes::{Bytes, BytesMut};
use hub_protocol::encode_ping;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Session;
use crate::error::{DisconnectReason, InvokeError};
use crate::outgoing::{Outgoing, Reply};
use crate::stateful::StatefulReconnect;

/// Most queued messages written with one flush: enough to batch a caller that streams
/// invocations, few enough that the other work of the task (reading) is not held up long.
const WRITE_BATCH: usize = 256;

impl Session<'_> {
    /// Writes `first` and what else is queued already (up to [`WRITE_BATCH`] messages)
    /// with one flush, so a caller streaming invocations costs a write to the socket per
    /// batch rather than per message.
    pub(super) async fn write_queued(
        &mut self,
        first: Outgoing,
        outgoing: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), DisconnectReason> {
        let mut batch = std::mem::take(&mut self.batch);
        self.add_to(&mut batch, first);
        while batch.len() < WRITE_BATCH {
            // A replay buffer that fills up holds the rest back, as between batches.
            if self
                .stateful
                .as_ref()
                .is_some_and(StatefulReconnect::is_full)
            {
                break;
            }
            match outgoing.try_recv() {
                Ok(message) => self.add_to(&mut batch, message),
                Err(_) => break,
            }
        }
        let result = self.write_all(&mut batch).await;
        self.batch = batch;
        result
    }

    /// Writes one call and records who waits for it.
    pub(super) async fn write(&mut self, message: Outgoing) -> Result<(), DisconnectReason> {
        let mut batch = Vec::with_capacity(1);
        self.add_to(&mut batch, message);
        self.write_all(&mut batch).await
    }

    /// Adds a message to a batch being written; with stateful reconnect its frame is kept
    /// for a resend from now on.
    fn add_to(&mut self, batch: &mut Vec<Outgoing>, message: Outgoing) {
        if let Some(stateful) = &mut self.stateful {
            stateful.record(message.frame.clone());
        }
        batch.push(message);
    }

    /// Writes the calls of `batch` (leaving it empty; their frames are recorded already)
    /// and records who waits for each.
    async fn write_all(&mut self, batch: &mut Vec<Outgoing>) -> Result<(), DisconnectReason> {
        let format = self.inner.config.protocol.transfer_format();
        self.frames.clear();
        self.frames
            .extend(batch.iter().map(|message| message.frame.clone()));
        let result = self.transport.send_each(&self.frames, format).await;
        self.frames.clear();
        if result.is_ok() {
            self.last_sent = Instant::now();
        }
        for message in batch.drain(..) {
            // With stateful reconnect a frame the transport lost is kept and resent: the
            // call stands.
            if result.is_ok() || self.stateful.is_some() {
                match message.reply {
                    Reply::Sent(reply) => drop(reply.send(Ok(()))),
                    Reply::Completion { id, reply } => self.in_flight.add_invocation(id, reply),
                    Reply::Stream { id, sink } => self.in_flight.add_stream(id, sink),
                    Reply::Nothing => {}
                }
            } else if let Err(reason) = &result {
                message
                    .reply
                    .fail(|| InvokeError::ConnectionLost(reason.clone()));
            }
        }
        result
    }

    /// Sends an Ack when one is due and something arrived since the last.
    pub(super) async fn ack(&mut self) -> Result<(), DisconnectReason> {
        match self.stateful.as_mut().and_then(StatefulReconnect::ack) {
            Some(frame) => self.write_frame(frame).await,
            None => Ok(()),
        }
    }

    /// Sends a keep-alive Ping.
    pub(super) async fn ping(&mut self) -> Result<(), DisconnectReason> {
        let mut frame = BytesMut::new();
        encode_ping(self.inner.config.protocol, &mut frame);
        self.write_frame(frame.freeze()).await
    }

    /// Writes a numbered frame (an invocation or a completion), keeping it for a resend
    /// with stateful reconnect.
    pub(super) async fn write_numbered(&mut self, frame: Bytes) -> Result<(), DisconnectReason> {
        if let Some(stateful) = &mut self.stateful {
            stateful.record(frame.clone());
        }
        self.write_frame(frame).await
    }

    pub(super) async fn write_frame(&mut self, frame: Bytes) -> Result<(), DisconnectReason> {
        let format = self.inner.config.protocol.transfer_format();
        self.transport.send(frame, format).await?;
        self.last_sent = Instant::now();
        Ok(())
    }
}
