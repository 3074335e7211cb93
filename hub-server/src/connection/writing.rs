//! The writing half of a connection: the send queue drained into the transport, and
//! keep-alive Pings.

use std::time::Duration;

use bytes::BytesMut;
use hub_protocol::{Protocol, encode_ping};
use metrics::Counter;
use tokio::time::{Instant, sleep_until};

use crate::outbox::{OutboxReceiver, Outgoing};
use crate::transport::FrameSink;

/// The most queued frames the writer sends before flushing, so one busy connection still
/// gets its bytes on the wire promptly.
const MAX_BATCH: usize = 64;

/// Send what is queued, and a Ping when idle, until told to close or the transport fails.
pub(super) async fn write_loop<S: FrameSink>(
    mut sink: S,
    mut queue: OutboxReceiver,
    protocol: Protocol,
    keep_alive: Duration,
    sent: Counter,
) -> Result<(), String> {
    let format = protocol.transfer_format();
    let mut ping = BytesMut::new();
    encode_ping(protocol, &mut ping);
    let ping = ping.freeze();
    let idle = sleep_until(Instant::now() + keep_alive);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            item = queue.recv() => {
                // The outbox is gone: nothing more will be queued.
                let Some(item) = item else {
                    return Ok(());
                };
                let mut next = Some(item);
                let mut batched = 0;
                while let Some(item) = next.take() {
                    match item {
                        // JSON frames are UTF-8 already: replies and Close frames are
                        // this server's encoding (values relayed from elsewhere are
                        // checked by `EncodedValue::from_wire`), and a broadcast's frame
                        // was checked once, where its `SerializedMessage` was made or
                        // decoded.
                        Outgoing::Frame(frame) | Outgoing::Reply(frame) => {
                            // Counted before it is handed over: a transport may deliver
                            // it before `feed` returns.
                            sent.increment(1);
                            sink.feed_message(frame, format).await.map_err(|e| e.to_string())?;
                        }
                        Outgoing::Close(frame) => {
                            if let Some(frame) = frame {
                                sink.feed(frame, format).await.map_err(|e| e.to_string())?;
                            }
                            sink.close().await.map_err(|e| e.to_string())?;
                            return Ok(());
                        }
                    }
                    batched += 1;
                    if batched < MAX_BATCH {
                        next = queue.try_recv();
                    }
                }
                sink.flush().await.map_err(|e| e.to_string())?;
                idle.as_mut().reset(Instant::now() + keep_alive);
            }
            () = &mut idle, if !S::INHERENT_KEEP_ALIVE => {
                sink.feed(ping.clone(), format).await.map_err(|e| e.to_string())?;
                sink.flush().await.map_err(|e| e.to_string())?;
                idle.as_mut().reset(Instant::now() + keep_alive);
            }
            // The transport's own traffic (a WebSocket's pongs).
            result = sink.serve() => result.map_err(|e| e.to_string())?,
        }
    }
}
