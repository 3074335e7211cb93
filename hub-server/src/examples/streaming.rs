//! The streaming example hub (`StreamingHub`, served at [`PATH`]): a server-to-client
//! stream, an upload stream, and client results, each in a few lines.
//!
//! | client invokes | what happens |
//! |---|---|
//! | `stream("Counter", count, delayMs)` | streams `0..count`, one item every `delayMs` ms |
//! | `stream("Fail", count)` | streams `0..count`, then ends with an error |
//! | `invoke("Sum", subject)` | sums the numbers of the upload stream |
//! | `invoke("AskClient", connectionId, method, argument)` | calls `method(argument)` on that connection (on any server) and returns its answer |
//! | `invoke("Stats")` | `{ started, running, produced, cancelled, lastSum }`: `Counter` streams started, producing right now, items produced since start, streams dropped before their end; the last total `Sum` computed |

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::{Clients, Extension, HubBuilder, HubStream, MethodError, UploadStream};

/// Where the `hub-server` binary serves the example hub.
pub const PATH: &str = "/streaming";

/// What the producers of the example hub did: lets tests check on the server that a
/// cancelled stream stopped producing, or that a stream ran once across reconnects.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Streams whose producer was started.
    started: AtomicU64,
    /// Streams whose producer is alive.
    running: AtomicU64,
    /// Items produced by every stream since start.
    produced: AtomicU64,
    /// Streams dropped before they produced every item (cancelled or disconnected).
    cancelled: AtomicU64,
    /// The total the last `Sum` computed: an upload whose caller wants no result (a
    /// fire-and-forget invocation) can still be checked.
    last_sum: AtomicI64,
}

/// The counters as the `Stats` method returns them.
#[derive(Debug, Serialize)]
struct Snapshot {
    started: u64,
    running: u64,
    produced: u64,
    cancelled: u64,
    #[serde(rename = "lastSum")]
    last_sum: i64,
}

/// Counts one running producer; counts a cancellation if dropped before the end.
struct Producer {
    stats: Arc<StreamStats>,
    finished: bool,
}

impl Producer {
    /// Every item was produced: not a cancellation.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stats.running.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `Counter(count, delayMs)`: the numbers `0..count`.
async fn counter(
    Extension(stats): Extension<Arc<StreamStats>>,
    count: u64,
    delay_ms: u64,
) -> HubStream<u64> {
    stats.started.fetch_add(1, Ordering::SeqCst);
    stats.running.fetch_add(1, Ordering::SeqCst);
    let producer = Producer {
        stats,
        finished: false,
    };
    HubStream::new(futures_util::stream::unfold(
        (0, producer),
        move |(next, producer)| async move {
            if next >= count {
                producer.finish();
                return None;
            }
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            producer.stats.produced.fetch_add(1, Ordering::SeqCst);
            Some((next, (next + 1, producer)))
        },
    ))
}

/// `Fail(count)`: `0..count`, then an error for the caller.
async fn fail(count: u64) -> HubStream<u64> {
    let items = (0..count)
        .map(Ok)
        .chain(std::iter::once(Err(MethodError::new(
            "the stream failed on purpose",
        ))));
    HubStream::try_new(futures_util::stream::iter(items))
}

/// `Sum(stream)`: the sum of the uploaded numbers.
async fn sum(
    Extension(stats): Extension<Arc<StreamStats>>,
    mut numbers: UploadStream<i64>,
) -> Result<i64, MethodError> {
    let mut total: i64 = 0;
    while let Some(number) = numbers.next().await {
        total = total.wrapping_add(number?);
    }
    stats.last_sum.store(total, Ordering::SeqCst);
    Ok(total)
}

/// `AskClient(connectionId, method, argument)`: a client result from any connection.
async fn ask_client(
    clients: Clients,
    connection_id: String,
    method: String,
    argument: serde_json::Value,
) -> Result<serde_json::Value, MethodError> {
    clients
        .client(connection_id)
        .invoke::<serde_json::Value>(&method, (argument,))
        .await
        .map_err(|error| MethodError::new(error.to_string()))
}

/// `Stats()`: the producers' counters.
async fn stats(Extension(stats): Extension<Arc<StreamStats>>) -> Result<Snapshot, MethodError> {
    Ok(Snapshot {
        started: stats.started.load(Ordering::SeqCst),
        running: stats.running.load(Ordering::SeqCst),
        produced: stats.produced.load(Ordering::SeqCst),
        cancelled: stats.cancelled.load(Ordering::SeqCst),
        last_sum: stats.last_sum.load(Ordering::SeqCst),
    })
}

/// The example hub, ready for options and a backplane; mount it with
/// `hub.router(PATH)`.
pub fn hub_builder() -> HubBuilder {
    crate::Hub::builder("StreamingHub")
        .method("Counter", counter)
        .method("Fail", fail)
        .method("Sum", sum)
        .method("AskClient", ask_client)
        .method("Stats", stats)
        .extension(Arc::new(StreamStats::default()))
}
