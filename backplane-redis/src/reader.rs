//! The receiving side's transport: how one hub's stream is read, with `XREAD BLOCK`
//! from the last id seen, on a connection of its own. The loop around it (backoff,
//! `Disconnected` / `Reconnected`, accounting, fan-out) is `backplane_core::node`'s.
//!
//! Resuming from the last id *is* the repair: after a dropped connection the reader
//! reads everything after its last id without blocking until it has caught up. Numbers
//! nothing accounts for (trimmed by retention before they were read, or lost with a
//! restarted server) are reported as unrepairable, since the stream is the only copy.

use std::sync::Arc;
use std::time::Duration;

use backplane_core::node::{HubReading, LogReader, ReadStop};
use redis::aio::MultiplexedConnection;

use crate::context::{NodeContext, Role};
use crate::entry;
use crate::publisher::StreamKey;

/// Where missing envelopes should have been, for reports.
pub(crate) const STORAGE: &str = "the stream";

/// Why a stream may no longer reach back to the last entry read.
pub(crate) const RESET_CAUSE: &str =
    "Redis restarted without persistence, or max_len/max_age trimmed it";

/// Reads one hub's stream.
pub(crate) struct StreamReader {
    /// Identity, settings, client.
    context: Arc<NodeContext>,
    /// The hub's stream.
    key: StreamKey,
    /// The id of the last entry read: the next read starts after it.
    last_id: String,
}

impl StreamReader {
    /// A reader of `key` starting after `last_id`.
    pub(crate) fn new(context: Arc<NodeContext>, key: StreamKey, last_id: String) -> Self {
        Self {
            context,
            key,
            last_id,
        }
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
}

impl LogReader for StreamReader {
    type Link = MultiplexedConnection;

    async fn reconnect(&mut self, hub: &mut HubReading) -> Result<MultiplexedConnection, String> {
        let mut link = self
            .context
            .connect(Role::Reader)
            .await
            .map_err(|error| error.to_string())?;
        let reaches_back = self
            .reaches_back(&mut link)
            .await
            .map_err(|error| error.to_string())?;
        if !reaches_back {
            hub.mark_reset();
        }
        Ok(link)
    }

    async fn serve(&mut self, mut link: MultiplexedConnection, hub: &mut HubReading) -> ReadStop {
        let context = self.context.clone();
        let options = &context.options;
        let block = options.block_timeout.as_millis().max(1).to_string();
        let retention = options.max_age.unwrap_or(Duration::from_secs(86_400));
        let mut stop = hub.stop_signal();
        loop {
            if hub.prune() {
                return ReadStop::Done;
            }
            let mut command = redis::cmd("XREAD");
            // Catching up: never block, so an empty reply means "caught up".
            if !hub.is_catching_up() {
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
                _ = stop.wait_for(|stop| *stop) => return ReadStop::Done,
                reply = command.query_async::<redis::Value>(&mut link) => reply,
            };
            let entries = match reply
                .map_err(|e| e.to_string())
                .and_then(entry::parse_xread)
            {
                Ok(entries) => entries,
                Err(reason) => return ReadStop::Lost(reason),
            };
            hub.read_succeeded();
            let count = entries.len();
            for entry in entries {
                self.last_id = entry.id;
                if hub.deliver(entry.body).await.is_err() {
                    return ReadStop::Done;
                }
            }
            if count < options.read_count && hub.caught_up().await.is_err() {
                return ReadStop::Done;
            }
            hub.forget_idle(retention);
        }
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
