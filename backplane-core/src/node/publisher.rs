//! The publishing side of a log-based node: one task per node takes the core's ordered
//! batches, writes each hub's part through the backend's [`BatchStore`], retries with
//! backoff until the command timeout, and completes every publish.
//!
//! A hub's part is written behind the skipped runs of that hub's earlier failed parts,
//! so receivers learn to skip those numbers before they see the next ones. The store
//! says after each failed attempt how many of the part's items (the runs first, then the
//! envelopes) are known stored: the next attempt resumes after them, and once the
//! timeout passes, what was stored completes with success and the rest fails, its
//! numbers queued as skipped runs in front of the hub's next part.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Jitter, ReconnectBackoff};
use crate::backplane::BackplaneError;
use crate::id::NodeId;
use crate::metrics::PublishMetrics;
use crate::sequencing::{Pending, PublishQueue, SkippedRun, runs_of};

/// Why one attempt to store a hub's part failed.
#[derive(Debug)]
pub struct WriteError<E> {
    /// How many of the part's items (its skipped runs first, then its envelopes, in
    /// order) are known stored now, counted from the part's start. Never decreases
    /// across attempts; a store that writes all or nothing says 0.
    pub stored: usize,
    /// Whether another attempt may succeed (a dropped connection, a timeout), or the
    /// backend refused for good (no permission, too large).
    pub transient: bool,
    /// The backend's error.
    pub cause: E,
}

/// How a backend stores one hub's part of a batch: the transport half of the publisher
/// loop. Retries, backoff, completion and skipped runs are [`PublisherTask`]'s.
pub trait BatchStore: Send + 'static {
    /// Where a hub's envelopes go (a stream key, a subject).
    type Route: Clone + PartialEq + fmt::Debug + Send + Sync + 'static;
    /// A hub's part prepared for writing (a pipeline, a list of messages), with
    /// whatever the store tracks across attempts.
    type Part: Send;
    /// What an attempt fails with.
    type Error: fmt::Display + Send + Sync;

    /// What a write does, for errors: `"writing a batch to Redis"`.
    const ACTION: &'static str;

    /// Prepare `envelopes` of the hub at `route`, behind `runs` (skipped runs of that
    /// hub, to be stored first).
    fn prepare(
        &self,
        route: &Self::Route,
        runs: &[SkippedRun<Self::Route>],
        envelopes: &[Pending<Self::Route>],
    ) -> Self::Part;

    /// One attempt to store what of `part` is not stored yet, before `deadline`.
    fn write(
        &mut self,
        part: &mut Self::Part,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), WriteError<Self::Error>>> + Send;

    /// Called before a transient failure is retried (after its backoff is chosen, while
    /// time remains): the place to repair what the failure says is broken.
    fn before_retry(&mut self, _error: &Self::Error) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The publisher's batching and retry settings, from the backend's options.
#[derive(Debug, Clone, Copy)]
pub struct PublishLimits {
    /// The most envelopes one batch carries.
    pub batch_size: usize,
    /// The most payload bytes one batch carries (a single larger envelope still goes).
    pub batch_bytes: usize,
    /// Time limit of writing one part, retries included; then it fails with `Timeout`.
    pub command_timeout: Duration,
    /// Waits between retries.
    pub backoff: ReconnectBackoff,
}

/// One hub's envelopes of a batch, with their route.
type Part<R> = (R, Vec<Pending<R>>);

/// The task that writes a node's publish queue through a [`BatchStore`].
pub struct PublisherTask<S: BatchStore> {
    /// Stamped on logs.
    node: NodeId,
    /// Where publishes wait, numbered.
    queue: Arc<PublishQueue<S::Route>>,
    /// The backend's half.
    store: S,
    /// Batching and retries.
    limits: PublishLimits,
    /// Numbers of failed parts, written in front of their hub's next part.
    skipped: Vec<SkippedRun<S::Route>>,
    /// Spreads retries.
    jitter: Jitter,
    /// Batches stored, their sizes and store times, once the backend names itself
    /// ([`PublisherTask::with_metrics`]).
    metrics: Option<PublishMetrics>,
}

impl<S: BatchStore> fmt::Debug for PublisherTask<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherTask")
            .field("node", &self.node)
            .field("limits", &self.limits)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl<S: BatchStore> PublisherTask<S> {
    /// A task writing `queue` of `node` through `store`.
    pub fn new(
        node: NodeId,
        queue: Arc<PublishQueue<S::Route>>,
        store: S,
        limits: PublishLimits,
    ) -> Self {
        Self {
            node,
            queue,
            store,
            limits,
            skipped: Vec::new(),
            jitter: Jitter::new(node),
            metrics: None,
        }
    }

    /// This task recording its batches through `metrics` (see [`crate::metrics`]).
    pub fn with_metrics(mut self, metrics: PublishMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Write batches until the queue is shut down and drained.
    pub async fn run(mut self) {
        let (items, bytes) = (self.limits.batch_size, self.limits.batch_bytes);
        while let Some(batch) = self.queue.next_batch(items, bytes, Duration::ZERO).await {
            // One part per hub, in first-seen order; order only matters within a hub.
            let mut parts: Vec<Part<S::Route>> = Vec::new();
            for pending in batch {
                match parts.iter_mut().find(|(route, _)| *route == pending.route) {
                    Some((_, part)) => part.push(pending),
                    None => parts.push((pending.route.clone(), vec![pending])),
                }
            }
            for (route, part) in parts {
                self.write(&route, part).await;
            }
        }
        tracing::debug!(node = %self.node, "[Publish] publisher stopped");
    }

    /// Write one hub's part of a batch (behind its skipped runs) and complete it.
    async fn write(&mut self, route: &S::Route, envelopes: Vec<Pending<S::Route>>) {
        let node = self.node;
        let (runs, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.skipped)
            .into_iter()
            .partition(|run| run.route == *route);
        self.skipped = others;
        let mut part = self.store.prepare(route, &runs, &envelopes);
        let timeout = self.limits.command_timeout;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut stored = 0;
        let mut attempt = 0;
        let outcome = loop {
            let error = match self.store.write(&mut part, deadline).await {
                Ok(()) => break Ok(()),
                Err(error) => error,
            };
            stored = stored.max(error.stored);
            let now = Instant::now();
            if !error.transient {
                break Err(BackplaneError::backend(format!(
                    "{}: {}",
                    S::ACTION,
                    error.cause
                )));
            }
            if now >= deadline {
                tracing::warn!(%node, error = %error.cause, "[Publish] batch failed until the command timeout");
                break Err(BackplaneError::Timeout(timeout));
            }
            self.store.before_retry(&error.cause).await;
            let delay = self
                .limits
                .backoff
                .delay(attempt, self.jitter.next_fraction())
                .min(deadline.saturating_duration_since(Instant::now()));
            attempt += 1;
            tracing::debug!(%node, error = %error.cause, ?delay, stored, "[Publish] batch failed; retrying what is not stored yet");
            tokio::time::sleep(delay).await;
        };
        let error = match outcome {
            Ok(()) => {
                tracing::debug!(%node, ?route, envelopes = envelopes.len(), "[Publish] batch written");
                if let Some(metrics) = &self.metrics {
                    metrics.batch_stored(envelopes.len(), started.elapsed());
                }
                for pending in envelopes {
                    pending.finish(Ok(()));
                }
                return;
            }
            Err(error) => error,
        };
        // Runs not stored stay pending, ahead of this part's own numbers, in order.
        let runs_stored = stored.min(runs.len());
        let envelopes_stored = stored - runs_stored;
        self.skipped.extend(runs.into_iter().skip(runs_stored));
        let mut envelopes = envelopes.into_iter();
        for pending in envelopes.by_ref().take(envelopes_stored) {
            pending.finish(Ok(()));
        }
        let failed: Vec<_> = envelopes.collect();
        self.skipped.extend(runs_of(&failed));
        let message = error.to_string();
        for pending in failed {
            let error = match &error {
                BackplaneError::Timeout(timeout) => BackplaneError::Timeout(*timeout),
                _ => BackplaneError::backend(message.clone()),
            };
            pending.finish(Err(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::envelope::{Ack, EnvelopeKind};

    /// What the store was asked to write: each part's skipped runs and sequence numbers.
    type Prepared = Arc<Mutex<Vec<(Vec<(u64, u64)>, Vec<u64>)>>>;

    /// A store that fails as scripted (`(stored, transient)`), then succeeds.
    struct ScriptedStore {
        prepared: Prepared,
        script: VecDeque<(usize, bool)>,
    }

    impl BatchStore for ScriptedStore {
        type Route = Arc<str>;
        type Part = ();
        type Error = String;

        const ACTION: &'static str = "writing a test batch";

        fn prepare(
            &self,
            _route: &Arc<str>,
            runs: &[SkippedRun<Arc<str>>],
            envelopes: &[Pending<Arc<str>>],
        ) {
            let runs = runs.iter().map(|run| (run.first, run.last)).collect();
            let seqs = envelopes.iter().map(|p| p.envelope.seq).collect();
            crate::lock(&self.prepared).push((runs, seqs));
        }

        async fn write(
            &mut self,
            _part: &mut (),
            _deadline: Instant,
        ) -> Result<(), WriteError<String>> {
            match self.script.pop_front() {
                None => Ok(()),
                Some((stored, transient)) => Err(WriteError {
                    stored,
                    transient,
                    cause: "scripted failure".into(),
                }),
            }
        }
    }

    /// Publishes `count` envelopes on hub `h` through a publisher over `script`; the
    /// results in sequence order, and what the store prepared.
    async fn run(
        script: &[(usize, bool)],
        count: u64,
    ) -> (
        Vec<Result<(), BackplaneError>>,
        Prepared,
        Arc<PublishQueue<Arc<str>>>,
    ) {
        let node = NodeId::random();
        let queue = Arc::new(PublishQueue::new(1 << 20));
        let prepared = Prepared::default();
        let store = ScriptedStore {
            prepared: prepared.clone(),
            script: script.iter().copied().collect(),
        };
        let limits = PublishLimits {
            batch_size: 100,
            batch_bytes: 1 << 20,
            command_timeout: Duration::from_secs(30),
            backoff: ReconnectBackoff::default(),
        };
        // Current-thread runtime: the publishes are queued before the publisher runs,
        // so they form one part.
        let publishes: Vec<_> = (0..count)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let kind = EnvelopeKind::Ack(Ack { ack_id: i });
                    queue.publish(node, "h", None, kind, "route".into()).await
                })
            })
            .collect();
        tokio::spawn(PublisherTask::new(node, queue.clone(), store, limits).run());
        let mut results = Vec::new();
        for publish in publishes {
            results.push(publish.await.unwrap());
        }
        (results, prepared, queue)
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_and_every_publish_succeeds() {
        let (results, prepared, queue) = run(&[(0, true), (0, true)], 3).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(*crate::lock(&prepared), [(vec![], vec![1, 2, 3])]);
        queue.shut_down();
    }

    #[tokio::test]
    async fn a_refused_part_completes_what_was_stored_and_skips_the_rest() {
        // No skipped runs yet, so item 1 is envelope 1: stored; 2 and 3 fail for good.
        let (results, prepared, queue) = run(&[(1, false)], 3).await;
        assert!(results[0].is_ok(), "{results:?}");
        for result in &results[1..] {
            let error = result.as_ref().unwrap_err().to_string();
            assert!(
                error.contains("writing a test batch: scripted failure"),
                "{error}"
            );
        }
        // The next part of the hub carries numbers 2..=3 as a skipped run first.
        let node = NodeId::random();
        let kind = EnvelopeKind::Ack(Ack { ack_id: 9 });
        queue
            .publish(node, "h", None, kind, "route".into())
            .await
            .unwrap();
        assert_eq!(
            *crate::lock(&prepared),
            [(vec![], vec![1, 2, 3]), (vec![(2, 3)], vec![4])]
        );
        queue.shut_down();
    }
}
