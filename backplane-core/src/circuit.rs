//! Failing fast while a backplane's backend is unreachable.
//!
//! Without it, every publish made during an outage queues behind a batch that retries
//! for the whole command timeout, and callers wait far longer than any user would. The
//! [`CircuitBreaker`] opens when a backend notices that its server does not answer (a
//! health probe timing out, a connection that cannot be opened, a batch that timed out);
//! while it is open, publishes fail at once with [`BackplaneError::Unavailable`], without
//! being numbered or queued. It closes by itself when the backend proves its server
//! reachable again (a reconnect, or a successful trial publish: one is let through per
//! cool-down).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backplane::BackplaneError;

/// Whether a backend is reachable, as far as its publishes are concerned.
#[derive(Debug)]
pub struct CircuitBreaker {
    /// Closed, or open with the reason and the time of the next trial.
    state: Mutex<State>,
    /// `true` while open; lets a writer abandon an attempt the moment the circuit opens.
    open: watch::Sender<bool>,
    /// How long publishes fail at once before one is let through as a trial.
    cooldown: Duration,
}

#[derive(Debug)]
enum State {
    Closed,
    Open {
        /// The backend's last error, for the caller.
        reason: String,
        /// When the next publish may go through as a trial.
        next_trial: Instant,
    },
}

impl CircuitBreaker {
    /// A closed circuit that, once open, lets one publish through per `cooldown`.
    pub fn new(cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed),
            open: watch::channel(false).0,
            cooldown,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// Whether a publish may go ahead now: always while closed; while open, once per
    /// cool-down (a trial, whose outcome closes the circuit or keeps it open).
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Unavailable`] while open (outside a trial).
    pub fn admit(&self) -> Result<(), BackplaneError> {
        let mut state = self.lock();
        match &mut *state {
            State::Closed => Ok(()),
            State::Open { next_trial, .. } if Instant::now() >= *next_trial => {
                *next_trial = Instant::now() + self.cooldown;
                Ok(())
            }
            State::Open { reason, .. } => Err(BackplaneError::Unavailable {
                reason: reason.clone(),
            }),
        }
    }

    /// The backend's server did not answer: open the circuit (or keep it open with this
    /// reason). Returns `true` if it was closed.
    pub fn trip(&self, reason: impl Into<String>) -> bool {
        let mut state = self.lock();
        let was_closed = matches!(*state, State::Closed);
        let next_trial = match &*state {
            State::Open { next_trial, .. } => *next_trial,
            State::Closed => Instant::now() + self.cooldown,
        };
        *state = State::Open {
            reason: reason.into(),
            next_trial,
        };
        drop(state);
        if was_closed {
            self.open.send_replace(true);
        }
        was_closed
    }

    /// The backend's server answered: close the circuit. Returns `true` if it was open.
    pub fn reset(&self) -> bool {
        let mut state = self.lock();
        let was_open = matches!(*state, State::Open { .. });
        *state = State::Closed;
        drop(state);
        if was_open {
            self.open.send_replace(false);
        }
        was_open
    }

    /// Whether the circuit is open.
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { .. })
    }

    /// The error publishes fail with while open, or `None` while closed.
    pub fn error(&self) -> Option<BackplaneError> {
        match &*self.lock() {
            State::Closed => None,
            State::Open { reason, .. } => Some(BackplaneError::Unavailable {
                reason: reason.clone(),
            }),
        }
    }

    /// Resolves once the circuit is open (at once if it is).
    pub async fn opened(&self) {
        let mut open = self.open.subscribe();
        // The sender lives as long as `self`, which this future borrows.
        let _ = open.wait_for(|open| *open).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_fails_fast_lets_a_trial_through_per_cooldown_and_closes() {
        let circuit = CircuitBreaker::new(Duration::from_secs(2));
        assert!(circuit.admit().is_ok());
        assert!(!circuit.is_open());
        assert!(circuit.trip("database unreachable"));
        assert!(!circuit.trip("still unreachable"), "already open");
        let error = circuit.admit().unwrap_err();
        assert!(
            matches!(&error, BackplaneError::Unavailable { reason } if reason == "still unreachable")
        );
        assert!(error.to_string().contains("circuit open"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(circuit.admit().is_ok(), "one trial per cool-down");
        assert!(circuit.admit().is_err(), "only one");
        circuit.opened().await; // resolves at once while open
        assert!(circuit.reset());
        assert!(!circuit.reset());
        assert!(circuit.admit().is_ok() && circuit.error().is_none());
        // `opened` waits for the next trip.
        let waiting = circuit.opened();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), &mut waiting)
                .await
                .is_err()
        );
        circuit.trip("again");
        waiting.await;
    }
}
