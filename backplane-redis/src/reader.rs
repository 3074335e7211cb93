//! The receiving side: one task per subscribed hub per node, reading the hub's stream
//! with `XREAD BLOCK` from the last id it saw, on a connection of its own.
//!
//! Resuming from the last id *is* the repair: after a dropped connection the task
//! reports `Disconnected`, reconnects with backoff (forever), reads everything after its
//! last id without blocking until it has caught up, and reports `Reconnected` with what
//! it recovered. The core's tracker drops duplicates (a publish batch retried after a
//! lost reply) and notices numbers nothing accounts for (trimmed by retention before
//! they were read, or lost with a restarted server): those are reported as
//! unrepairable, since the stream is the only copy.

use std::sync::Arc;
use std::time::Duration;

use backplane_core::sequencing::{HubInbox, HubSubscribers, Outage};
use backplane_core::{BackplaneEvent, GapRepair, Jitter};
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use crate::context::{NodeContext, Role};
use crate::entry::{self, StreamEntry};
use crate::publisher::StreamKey;

/// Where missing envelopes should have been, for reports.
const STORAGE: &str = "the stream";

/// Why a stream may no longer reach back to the last entry read.
const RESET_CAUSE: &str = "Redis restarted without persistence, or max_len/max_age trimmed it";

/// Why reading stopped.
enum Stop {
    /// The node shuts down, or nobody subscribes to the hub any more.
    Done,
    /// The connection failed; reconnect and resume.
    Lost(String),
}

/// One hub's reading task.
pub(crate) struct HubReader {
    /// Identity, settings, client.
    context: Arc<NodeContext>,
    /// The hub, as envelopes name it, and what it has delivered (echo drop,
    /// duplicates, gaps, decoding: the core's).
    inbox: HubInbox,
    /// Its stream.
    key: StreamKey,
    /// Who receives what is read.
    subscribers: Arc<HubSubscribers>,
    /// The id of the last entry read: the next read starts after it.
    last_id: String,
    /// Set when the node shuts down.
    stop: watch::Receiver<bool>,
    /// Spreads reconnect attempts.
    jitter: Jitter,
}

impl HubReader {
    pub(crate) fn new(
        context: Arc<NodeContext>,
        hub: String,
        key: StreamKey,
        subscribers: Arc<HubSubscribers>,
        last_id: String,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let jitter = Jitter::new(context.node);
        Self {
            inbox: HubInbox::new(context.node, hub, STORAGE).with_codec(context.codec.clone()),
            context,
            key,
            subscribers,
            last_id,
            stop,
            jitter,
        }
    }

    /// Read, deliver, reconnect; until the node shuts down or the hub has no subscriber.
    pub(crate) async fn run(mut self, connection: MultiplexedConnection) {
        let node = self.context.node;
        let mut connection = Some(connection);
        // While reconnecting and catching up: what the catch-up found so far.
        let mut outage: Option<Outage> = None;
        let mut attempt = 0u32;
        loop {
            let mut link = match connection.take() {
                Some(link) => link,
                None => {
                    let delay = self.context.backoff(attempt, self.jitter.next_fraction());
                    attempt = attempt.saturating_add(1);
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|stop| *stop) => break,
                    }
                    let connected = match self.context.connect(Role::Reader).await {
                        Ok(mut link) => self
                            .reaches_back(&mut link)
                            .await
                            .map(|reaches| (link, reaches)),
                        Err(error) => Err(error),
                    };
                    match connected {
                        Ok((link, reaches_back)) => {
                            if let Some(outage) = &mut outage {
                                outage.log_reset |= !reaches_back;
                            }
                            link
                        }
                        Err(error) => {
                            tracing::debug!(%node, hub = self.inbox.hub(), %error, attempt, "[Listener] reconnect failed");
                            continue;
                        }
                    }
                }
            };
            match self.serve(&mut link, &mut outage, &mut attempt).await {
                Stop::Done => break,
                Stop::Lost(reason) => {
                    tracing::warn!(%node, hub = self.inbox.hub(), %reason, "[Listener] connection lost");
                    if outage.is_none() {
                        outage = Some(Outage::default());
                        let event = BackplaneEvent::Disconnected { reason };
                        if self.send(&event).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        self.subscribers.close();
        tracing::debug!(%node, hub = self.inbox.hub(), "[Listener] stopped");
    }

    /// Whether the stream still holds the last entry read or older (false: the entries
    /// between may be gone, trimmed or lost with the server's data).
    async fn reaches_back(
        &self,
        link: &mut MultiplexedConnection,
    ) -> Result<bool, redis::RedisError> {
        let Some(last) = stream_id(&self.last_id) else {
            return Ok(true); // nothing read yet
        };
        let first: redis::Value = redis::cmd("XRANGE")
            .arg(&*self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(link)
            .await?;
        let first = entry::first_id(first).map_err(|reason| {
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "XRANGE", reason))
        })?;
        Ok(first
            .as_deref()
            .and_then(stream_id)
            .is_some_and(|first| first <= last))
    }

    /// Read until the connection fails or there is nothing left to do.
    async fn serve(
        &mut self,
        link: &mut MultiplexedConnection,
        outage: &mut Option<Outage>,
        attempt: &mut u32,
    ) -> Stop {
        let context = self.context.clone();
        let options = &context.options;
        let block = options.block_timeout.as_millis().max(1).to_string();
        let mut stop = self.stop.clone();
        loop {
            if self.subscribers.prune() {
                return Stop::Done;
            }
            let mut command = redis::cmd("XREAD");
            // Catching up: never block, so an empty reply means "caught up".
            if outage.is_none() {
                command.arg("BLOCK").arg(&block);
            }
            command
                .arg("COUNT")
                .arg(options.read_count)
                .arg("STREAMS")
                .arg(&*self.key)
                .arg(&self.last_id);
            let reply = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return Stop::Done,
                reply = command.query_async::<redis::Value>(link) => reply,
            };
            let entries = match reply
                .map_err(|e| e.to_string())
                .and_then(entry::parse_xread)
            {
                Ok(entries) => entries,
                Err(reason) => return Stop::Lost(reason),
            };
            *attempt = 0;
            let count = entries.len();
            for entry in entries {
                if self.apply(entry, outage.as_mut()).await.is_err() {
                    return Stop::Done;
                }
            }
            if count < options.read_count
                && let Some(outage) = outage.take()
            {
                let gap = outage.report(STORAGE, RESET_CAUSE);
                if let GapRepair::Unrepairable { .. } = gap {
                    tracing::warn!(node = %self.context.node, hub = self.inbox.hub(), ?gap, "[Listener] reconnected with envelopes lost");
                } else {
                    tracing::info!(node = %self.context.node, hub = self.inbox.hub(), ?gap, "[Listener] reconnected and caught up");
                }
                if self
                    .send(&BackplaneEvent::Reconnected { gap })
                    .await
                    .is_err()
                {
                    return Stop::Done;
                }
            }
            self.inbox
                .forget_idle(options.max_age.unwrap_or(Duration::from_secs(86_400)));
        }
    }

    /// Account for one entry and deliver it if it is news for this node. `outage` is
    /// set while catching up after a reconnect; otherwise a gap is reported at once.
    async fn apply(&mut self, entry: StreamEntry, outage: Option<&mut Outage>) -> Result<(), ()> {
        self.last_id = entry.id;
        let accepted = self.inbox.accept(entry.body, outage);
        self.subscribers.deliver(accepted, &mut self.stop).await
    }

    /// Send `event` to every subscription of the hub, waiting for room (backpressure),
    /// but not past shutdown (`Err` then).
    async fn send(&mut self, event: &BackplaneEvent) -> Result<(), ()> {
        self.subscribers.send(event, &mut self.stop).await
    }
}

/// A stream id (`<ms>-<seq>`) as comparable numbers; `None` for `0-0` (nothing read) or
/// anything else.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let id = (ms.parse().ok()?, seq.parse().ok()?);
    (id != (0, 0)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert_eq!(stream_id("0-0"), None);
        assert_eq!(stream_id("junk"), None);
        assert!(stream_id("999-5") < stream_id("1000-0"));
        assert!(stream_id("1000-2") < stream_id("1000-10"));
    }
}
