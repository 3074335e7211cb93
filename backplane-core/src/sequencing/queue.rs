//! The sending side: numbering per (origin, hub), and the queue a backend's writer task
//! takes ordered batches from.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::backplane::BackplaneError;
use crate::envelope::{Envelope, EnvelopeKind};
use crate::id::NodeId;
use crate::sync::lock;

/// The next sequence number per hub, for one origin: 1, 2, 3, ... with no holes.
#[derive(Debug, Default, Clone)]
pub struct Sequencer {
    /// Last number handed out per hub.
    last: HashMap<String, u64>,
}

impl Sequencer {
    /// The next sequence number for `hub` (1 for its first envelope).
    pub fn next(&mut self, hub: &str) -> u64 {
        // Looked up by `&str` first: the hub's name is only copied the first time.
        match self.last.get_mut(hub) {
            Some(seq) => {
                *seq += 1;
                *seq
            }
            None => {
                self.last.insert(hub.to_owned(), 1);
                1
            }
        }
    }
}

/// A numbered envelope waiting for the backend's writer task.
#[derive(Debug)]
pub struct Pending<R> {
    /// The envelope, stamped with origin and sequence number.
    pub envelope: Envelope,
    /// Where the backend writes it (a table, a stream key), computed at publish time so
    /// that a bad hub name fails the publish instead of the batch.
    pub route: R,
    /// Completes the `publish` call that queued it.
    pub done: oneshot::Sender<Result<(), BackplaneError>>,
}

impl<R> Pending<R> {
    /// Complete the publish with `result` (a publish that stopped waiting is ignored).
    pub fn finish(self, result: Result<(), BackplaneError>) {
        let _ = self.done.send(result);
    }
}

/// Publishes waiting for a backend's writer task, and this node's sequence counters.
///
/// Numbering and queueing happen together under one lock, in the first poll of
/// [`PublishQueue::publish`], so queue order is sequence order and equals the order in
/// which publishes were first polled (the [`Backplane`](crate::Backplane) ordering
/// contract). The queue holds the publishes in flight; with a limit
/// ([`PublishQueue::with_max_queued`]) a publish finding it full fails at once with
/// [`BackplaneError::QueueFull`] instead of waiting for room (waiting would let a later
/// publish overtake it), unnumbered, so it leaves no hole.
#[derive(Debug)]
pub struct PublishQueue<R> {
    /// Counters and queued envelopes.
    state: Mutex<QueueState<R>>,
    /// Wakes the writer task.
    wake: Notify,
    /// Larger envelopes ([`Envelope::size_hint_of`]) fail with `TooLarge` before they
    /// are numbered, so they leave no hole.
    max_envelope_bytes: usize,
    /// Most envelopes waiting for the writer task; beyond, publishes fail at once with
    /// `QueueFull` (a backend that cannot keep up must not grow memory without bound).
    max_queued: usize,
}

#[derive(Debug)]
struct QueueState<R> {
    /// Set by shutdown: nothing is queued afterwards.
    shut_down: bool,
    /// This node's numbering.
    sequences: Sequencer,
    /// Numbered envelopes not yet taken by the writer task.
    items: VecDeque<Pending<R>>,
}

impl<R> PublishQueue<R> {
    /// An empty queue refusing envelopes larger than `max_envelope_bytes`.
    pub fn new(max_envelope_bytes: usize) -> Self {
        Self {
            state: Mutex::new(QueueState {
                shut_down: false,
                sequences: Sequencer::default(),
                items: VecDeque::new(),
            }),
            wake: Notify::new(),
            max_envelope_bytes,
            max_queued: usize::MAX,
        }
    }

    /// This queue holding at most `limit` envelopes waiting for the writer task (at
    /// least 1); more publishes fail with [`BackplaneError::QueueFull`].
    #[must_use]
    pub fn with_max_queued(mut self, limit: usize) -> Self {
        self.max_queued = limit.max(1);
        self
    }

    /// How many envelopes wait for the writer task.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no envelope waits for the writer task.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Complete every queued publish with the error `error()` returns (for example when
    /// the backend became unreachable: nothing queued would get through in time).
    pub fn fail_all(&self, error: impl Fn() -> BackplaneError) {
        for pending in self.take_all() {
            pending.finish(Err(error()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<R>> {
        lock(&self.state)
    }

    /// Number and queue one envelope from `origin`, then wait until the writer task
    /// completes it.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::TooLarge`] (nothing numbered), [`BackplaneError::Shutdown`]
    /// after [`PublishQueue::shut_down`] or if the writer task dropped the publish, or
    /// whatever error the writer task completed it with.
    pub async fn publish(
        &self,
        origin: NodeId,
        hub: &str,
        destination: Option<NodeId>,
        kind: EnvelopeKind,
        route: R,
    ) -> Result<(), BackplaneError> {
        // Nothing here awaits before the envelope is numbered and queued: an await could
        // yield and let a publish polled later overtake this one.
        let size = Envelope::size_hint_of(hub, &kind);
        if size > self.max_envelope_bytes {
            return Err(BackplaneError::TooLarge {
                size,
                limit: self.max_envelope_bytes,
            });
        }
        let (done, result) = oneshot::channel();
        {
            let mut state = self.lock();
            if state.shut_down {
                return Err(BackplaneError::Shutdown);
            }
            if state.items.len() >= self.max_queued {
                return Err(BackplaneError::QueueFull {
                    limit: self.max_queued,
                });
            }
            let seq = state.sequences.next(hub);
            state.items.push_back(Pending {
                envelope: Envelope {
                    origin,
                    seq,
                    hub: hub.to_owned(),
                    destination,
                    kind,
                },
                route,
                done,
            });
        }
        self.wake.notify_one();
        result.await.unwrap_or(Err(BackplaneError::Shutdown))
    }

    /// Refuse new publishes; the writer task still takes what is queued, then
    /// [`PublishQueue::next_batch`] returns `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.wake.notify_one();
    }

    /// Whether [`PublishQueue::shut_down`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.lock().shut_down
    }

    /// Everything queued, removed from the queue.
    pub fn take_all(&self) -> Vec<Pending<R>> {
        self.lock().items.drain(..).collect()
    }

    /// The next batch in sequence order: at least one envelope, at most `max_items` and,
    /// beyond the first, at most `max_bytes` by [`Envelope::size_hint`]; after `linger`
    /// to let it fill. `None` once shut down and empty.
    pub async fn next_batch(
        &self,
        max_items: usize,
        max_bytes: usize,
        linger: Duration,
    ) -> Option<Vec<Pending<R>>> {
        loop {
            {
                let state = self.lock();
                if !state.items.is_empty() {
                    break;
                }
                if state.shut_down {
                    return None;
                }
            }
            // notify_one stores a permit when nobody waits, so no wake-up is lost.
            self.wake.notified().await;
        }
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
        }
        let mut state = self.lock();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = state.items.front() {
            let size = next.envelope.size_hint();
            if !batch.is_empty() && (batch.len() >= max_items || bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            batch.push(state.items.pop_front().expect("front exists"));
        }
        Some(batch)
    }
}

/// Consecutive sequence numbers of one hub whose batch failed: stored (as a tombstone)
/// in front of the next batch, so receivers skip them instead of waiting or reporting
/// loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRun<R> {
    /// Where the backend stores it: the route of the failed envelopes.
    pub route: R,
    /// The hub whose numbers are skipped.
    pub hub: String,
    /// First skipped number.
    pub first: u64,
    /// Last skipped number.
    pub last: u64,
}

/// The runs covering `pendings`: one per run of consecutive sequence numbers of a hub,
/// in the order given. Never pass envelopes of more than one batch: a batch may have
/// been stored after all, and its real envelope at a merged run's end would void the
/// whole run.
pub fn runs_of<'a, R: Clone + 'a>(
    pendings: impl IntoIterator<Item = &'a Pending<R>>,
) -> Vec<SkippedRun<R>> {
    let mut runs: Vec<SkippedRun<R>> = Vec::new();
    for pending in pendings {
        let envelope = &pending.envelope;
        match runs.iter_mut().rev().find(|run| run.hub == envelope.hub) {
            Some(run) if run.last.checked_add(1) == Some(envelope.seq) => run.last = envelope.seq,
            _ => runs.push(SkippedRun {
                route: pending.route.clone(),
                hub: envelope.hub.clone(),
                first: envelope.seq,
                last: envelope.seq,
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Ack;

    fn pending(hub: &str, seq: u64) -> Pending<()> {
        Pending {
            envelope: Envelope {
                origin: NodeId::random(),
                seq,
                hub: hub.to_owned(),
                destination: None,
                kind: EnvelopeKind::Ack(Ack { ack_id: seq }),
            },
            route: (),
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn runs_follow_consecutive_numbers_per_hub_and_never_span_a_gap() {
        let batch = [
            pending("a", 4),
            pending("b", 9),
            pending("a", 5),
            pending("a", 6),
            pending("b", 10),
            // 7 of hub a survived (left out by the caller): a new run starts at 8.
            pending("a", 8),
            pending("b", 12),
        ];
        let runs: Vec<(String, u64, u64)> = runs_of(&batch)
            .into_iter()
            .map(|run| (run.hub, run.first, run.last))
            .collect();
        assert_eq!(
            runs,
            [
                ("a".to_owned(), 4, 6),
                ("b".to_owned(), 9, 10),
                ("a".to_owned(), 8, 8),
                ("b".to_owned(), 12, 12),
            ]
        );
    }

    #[test]
    fn sequencer_counts_per_hub_from_one() {
        let mut sequencer = Sequencer::default();
        assert_eq!(
            [
                sequencer.next("a"),
                sequencer.next("a"),
                sequencer.next("b")
            ],
            [1, 2, 1]
        );
    }

    #[tokio::test]
    async fn publishes_are_numbered_in_first_poll_order_and_batched() {
        let queue = std::sync::Arc::new(PublishQueue::<()>::new(1024));
        let node = NodeId::random();
        let mut waiting = Vec::new();
        for i in 0..3u64 {
            let queue = queue.clone();
            let publish = tokio::spawn(async move {
                queue
                    .publish(node, "h", None, EnvelopeKind::Ack(Ack { ack_id: i }), ())
                    .await
            });
            tokio::task::yield_now().await;
            waiting.push(publish);
        }
        let batch = queue
            .next_batch(2, usize::MAX, Duration::ZERO)
            .await
            .unwrap();
        let seqs: Vec<u64> = batch.iter().map(|p| p.envelope.seq).collect();
        assert_eq!(seqs, [1, 2]);
        for pending in batch {
            pending.finish(Ok(()));
        }
        queue.shut_down();
        let rest = queue
            .next_batch(2, usize::MAX, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(rest[0].envelope.seq, 3);
        drop(rest);
        assert!(
            queue
                .next_batch(2, usize::MAX, Duration::ZERO)
                .await
                .is_none()
        );
        let results: Vec<bool> = futures_util::future::join_all(waiting)
            .await
            .into_iter()
            .map(|r| r.unwrap().is_ok())
            .collect();
        assert_eq!(results, [true, true, false]);
        let bounded = std::sync::Arc::new(PublishQueue::<()>::new(1024).with_max_queued(1));
        let first = tokio::spawn({
            let bounded = bounded.clone();
            async move {
                bounded
                    .publish(node, "h", None, EnvelopeKind::Ack(Ack { ack_id: 1 }), ())
                    .await
            }
        });
        while bounded.is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            bounded
                .publish(node, "h", None, EnvelopeKind::Ack(Ack { ack_id: 2 }), ())
                .await,
            Err(BackplaneError::QueueFull { limit: 1 })
        ));
        bounded.fail_all(|| BackplaneError::Unavailable {
            reason: "down".into(),
        });
        assert!(matches!(
            first.await.unwrap(),
            Err(BackplaneError::Unavailable { .. })
        ));
        let next = bounded.publish(node, "h", None, EnvelopeKind::Ack(Ack { ack_id: 3 }), ());
        tokio::pin!(next);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), &mut next)
                .await
                .is_err(),
            "numbered and queued, waiting for the writer"
        );
        let batch = bounded
            .next_batch(8, usize::MAX, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(batch[0].envelope.seq, 2, "the refused publish left no hole");
        let big = EnvelopeKind::Ack(Ack { ack_id: 0 });
        assert!(matches!(
            PublishQueue::<()>::new(4)
                .publish(node, "h", None, big, ())
                .await,
            Err(BackplaneError::TooLarge { .. })
        ));
    }
}
