//! The retry policy of the publisher and the flusher ([`Retries`]): transient failures
//! retried on a fresh connection with a growing delay until the command timeout; and why
//! an attempt ([`AttemptError`]) or a whole batch ([`BatchError`]) failed.

use std::time::Duration;

use backplane_core::{BackplaneError, NodeId};
use tokio::time::Instant;

use crate::connect::{PostgresError, describe, is_transient};

/// Why one attempt to write a batch (or to confirm a flush) failed.
pub(crate) enum AttemptError {
    /// Worth retrying on a fresh connection.
    Transient(String),
    /// Retrying cannot help (a permission or data error).
    Fatal(PostgresError),
    /// No connection could be opened: the database is unreachable (the publisher opens
    /// the circuit; the flusher retries like [`AttemptError::Transient`]).
    Unreachable(String),
}

impl AttemptError {
    /// `error` of an attempt at `context`: transient if retrying on a fresh connection
    /// can help.
    pub(crate) fn classify(context: &'static str, error: &tokio_postgres::Error) -> Self {
        if is_transient(error) {
            AttemptError::Transient(describe(error))
        } else {
            AttemptError::Fatal(PostgresError::new(context, error))
        }
    }
}

/// The retry policy of the publisher and the flusher: transient failures are retried
/// with a growing delay until the command timeout; anything else fails at once.
pub(crate) struct Retries {
    node: NodeId,
    what: &'static str,
    timeout: Duration,
    deadline: Instant,
    delay: Duration,
    last_error: Option<String>,
    /// Whether an attempt failed already.
    pub(crate) retry: bool,
}

impl Retries {
    pub(crate) fn new(node: NodeId, what: &'static str, timeout: Duration) -> Self {
        Self {
            node,
            what,
            timeout,
            deadline: Instant::now() + timeout,
            delay: Duration::from_millis(20),
            last_error: None,
            retry: false,
        }
    }

    /// When the attempts must have succeeded.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// After a failed attempt (`None`: it ran out of time): the error to give up with,
    /// or `Ok` once it is time for the next attempt. The caller drops its connection on
    /// a transient failure or a timeout: an attempt cut short may still be running on
    /// the server.
    pub(crate) async fn failed(&mut self, failure: Option<AttemptError>) -> Result<(), BatchError> {
        let timed_out = |retries: &mut Self| BatchError::Timeout {
            timeout: retries.timeout,
            last_error: retries.last_error.take(),
        };
        match failure {
            None => return Err(timed_out(self)),
            Some(AttemptError::Fatal(error)) => return Err(BatchError::Fatal(error)),
            Some(AttemptError::Transient(reason) | AttemptError::Unreachable(reason)) => {
                tracing::debug!(node = %self.node, %reason, "[Publish] {} attempt failed; retrying on a fresh connection", self.what);
                self.last_error = Some(reason);
                self.retry = true;
            }
        }
        if Instant::now() + self.delay >= self.deadline {
            return Err(timed_out(self));
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(1));
        Ok(())
    }
}

/// Why a batch (or a flush confirmation) failed for good.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// Retried until the command timeout.
    Timeout {
        timeout: Duration,
        last_error: Option<String>,
    },
    /// An error retrying cannot fix.
    Fatal(PostgresError),
    /// The database does not answer (the circuit is open); says why.
    Unavailable(String),
}

impl BatchError {
    pub(crate) fn to_backplane(&self) -> BackplaneError {
        match self {
            BatchError::Timeout { timeout, .. } => BackplaneError::Timeout(*timeout),
            BatchError::Fatal(error) => BackplaneError::backend(error.clone()),
            BatchError::Unavailable(reason) => BackplaneError::Unavailable {
                reason: reason.clone(),
            },
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Timeout {
                timeout,
                last_error: Some(error),
            } => write!(f, "timed out after {timeout:?}; last error: {error}"),
            BatchError::Timeout { timeout, .. } => write!(f, "timed out after {timeout:?}"),
            BatchError::Fatal(error) => error.fmt(f),
            BatchError::Unavailable(reason) => write!(f, "database unavailable: {reason}"),
        }
    }
}
