//! Whether this node's publishes go through, for health endpoints.
//!
//! A backplane's link state ([`BackplaneStatus`](crate::BackplaneStatus)) says whether
//! the node *hears* the others. A node can hear them and still be unable to *publish*: a
//! table that refuses rows, a revoked permission, a broker that does not acknowledge.
//! Such a node fails every send and refuses every new connection (its `UserConnected`
//! announcement cannot go out), so a load balancer should stop sending clients to it.
//! [`PublishHealth`] keeps the current streak of failed publishes: it starts with a
//! publish that fails because of the backplane (not the caller: an envelope too large
//! or a full queue do not count), and ends with the next publish that goes through, or
//! [`FAILURE_WINDOW`] after the streak's last failure if nothing was published since, or
//! when the backplane's link comes back after an outage, so a node left idle by its load
//! balancer is tried again rather than kept out for good.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::backplane::BackplaneError;
use crate::sync::lock;

/// How long after its last failure a streak of failed publishes still counts when
/// nothing has been published since.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(30);

/// The current streak of failed publishes, if any (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct PublishHealth {
    /// Whether a streak may be on: lets a publish that goes through skip the lock.
    failing: AtomicBool,
    streak: Mutex<Option<Streak>>,
}

#[derive(Debug)]
struct Streak {
    since: SystemTime,
    last_failure: Instant,
    kind: FailureKind,
}

/// What kind of failure a publish had, as health endpoints show it: never the backend's
/// own text, which may quote stored data (a constraint's failing row) or name internal
/// hosts; that goes to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// No answer within the command timeout.
    Timeout,
    /// The backend is out of reach (the circuit is open).
    Unavailable,
    /// The backend refused the publish (a permission, a constraint, a broken store).
    Backend,
}

impl FailureKind {
    /// The kind as one word: `timeout`, `unavailable` or `backend`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Unavailable => "unavailable",
            FailureKind::Backend => "backend",
        }
    }

    /// The kind of `error`, if it says the backplane cannot publish (rather than that
    /// this one envelope or this moment was the problem).
    fn of(error: &BackplaneError) -> Option<Self> {
        match error {
            BackplaneError::Timeout(_) => Some(FailureKind::Timeout),
            BackplaneError::Unavailable { .. } => Some(FailureKind::Unavailable),
            BackplaneError::Backend(_) => Some(FailureKind::Backend),
            _ => None,
        }
    }
}

/// A streak of failed publishes, as health endpoints show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishFailing {
    /// When the first publish of the streak failed.
    pub since: SystemTime,
    /// The last failure's kind (its text is logged when the streak starts).
    pub last_failure: FailureKind,
}

impl PublishHealth {
    /// Note the outcome of a publish (or a send to one node).
    pub(crate) fn record(&self, outcome: &Result<(), BackplaneError>) {
        match outcome {
            Ok(()) => {
                if self.failing.load(Ordering::Relaxed) {
                    let mut streak = lock(&self.streak);
                    // Under the lock, so a failure recorded meanwhile is not hidden.
                    self.failing.store(false, Ordering::Relaxed);
                    if let Some(ended) = streak.take() {
                        tracing::info!(since = ?ended.since, "publishes go through again");
                    }
                }
            }
            Err(error) => {
                let Some(kind) = FailureKind::of(error) else {
                    return;
                };
                let mut streak = lock(&self.streak);
                match &mut *streak {
                    Some(streak) if streak.last_failure.elapsed() < FAILURE_WINDOW => {
                        streak.last_failure = Instant::now();
                        streak.kind = kind;
                    }
                    _ => {
                        tracing::warn!(%error, "publishes fail: this node is degraded until one goes through");
                        *streak = Some(Streak {
                            since: SystemTime::now(),
                            last_failure: Instant::now(),
                            kind,
                        });
                    }
                }
                self.failing.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The backplane's link came back after an outage: end a streak of failures that an
    /// unreachable backend explains (timeouts, an open circuit) rather than wait for a
    /// publish, which a load balancer that took this node out would never send. A streak
    /// of refusals (a constraint, a permission) is not the link's doing and stays.
    pub(crate) fn link_restored(&self) {
        if self.failing.load(Ordering::Relaxed) {
            let mut streak = lock(&self.streak);
            if streak
                .as_ref()
                .is_some_and(|streak| streak.kind != FailureKind::Backend)
            {
                *streak = None;
                self.failing.store(false, Ordering::Relaxed);
            }
        }
    }

    /// The current streak, if its last failure is within [`FAILURE_WINDOW`].
    pub(crate) fn failing(&self) -> Option<PublishFailing> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        lock(&self.streak)
            .as_ref()
            .filter(|streak| streak.last_failure.elapsed() < FAILURE_WINDOW)
            .map(|streak| PublishFailing {
                since: streak.since,
                last_failure: streak.kind,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> BackplaneError {
        BackplaneError::backend(std::io::Error::other("new row violates check constraint"))
    }

    #[test]
    fn a_streak_starts_with_a_backplane_failure_and_ends_with_a_success() {
        let health = PublishHealth::default();
        assert_eq!(health.failing(), None);
        health.record(&Ok(()));
        assert_eq!(health.failing(), None);
        health.record(&Err(backend()));
        let first = health.failing().expect("failing after a backend error");
        assert_eq!(first.last_failure, FailureKind::Backend);
        health.record(&Err(BackplaneError::Timeout(Duration::from_secs(10))));
        let second = health.failing().expect("still failing");
        assert_eq!(second.since, first.since, "one streak");
        assert_eq!(second.last_failure, FailureKind::Timeout);
        health.record(&Ok(()));
        assert_eq!(health.failing(), None);
    }

    #[test]
    fn the_callers_own_errors_do_not_count() {
        let health = PublishHealth::default();
        health.record(&Err(BackplaneError::TooLarge { size: 10, limit: 5 }));
        health.record(&Err(BackplaneError::QueueFull { limit: 5 }));
        health.record(&Err(BackplaneError::Shutdown));
        assert_eq!(health.failing(), None);
    }

    #[test]
    fn an_outage_streak_ends_when_the_link_comes_back_a_refusal_streak_does_not() {
        let health = PublishHealth::default();
        health.record(&Err(BackplaneError::Unavailable {
            reason: "connection refused".into(),
        }));
        assert!(health.failing().is_some());
        health.link_restored();
        assert_eq!(health.failing(), None);
        health.record(&Err(backend()));
        health.link_restored();
        assert!(health.failing().is_some(), "the link is not why it refuses");
    }

    #[tokio::test(start_paused = true)]
    async fn a_streak_expires_when_nothing_is_published() {
        let health = PublishHealth::default();
        health.record(&Err(backend()));
        tokio::time::advance(FAILURE_WINDOW - Duration::from_secs(1)).await;
        assert!(health.failing().is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(health.failing(), None, "expired");
        // A failure after the window starts a new streak.
        health.record(&Err(backend()));
        assert!(health.failing().is_some());
    }
}
