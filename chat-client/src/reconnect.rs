//! Automatic reconnect policies: how long to wait before each attempt, and when to give up.

use std::fmt;
use std::time::Duration;

/// What a [`ReconnectPolicy`] knows when asked for the next delay.
#[derive(Debug)]
pub struct RetryContext<'a> {
    /// How many reconnect attempts already failed (0 when the connection was just lost).
    pub previous_retry_count: u32,
    /// Time since the connection was lost.
    pub elapsed: Duration,
    /// Why the connection was lost (first call) or why the last attempt failed (later calls).
    pub retry_reason: &'a (dyn std::error::Error + Send + Sync + 'static),
}

/// Decides whether and when to try reconnecting after a connection is lost.
///
/// Implemented for closures `Fn(&RetryContext<'_>) -> Option<Duration>`, and by
/// [`ReconnectDelays`] (the official clients' default schedule).
pub trait ReconnectPolicy: Send + Sync + 'static {
    /// The delay before the next attempt, or `None` to stop trying (the connection then
    /// closes and the closed event fires).
    fn next_retry_delay(&self, context: &RetryContext<'_>) -> Option<Duration>;
}

impl<F> ReconnectPolicy for F
where
    F: Fn(&RetryContext<'_>) -> Option<Duration> + Send + Sync + 'static,
{
    fn next_retry_delay(&self, context: &RetryContext<'_>) -> Option<Duration> {
        self(context)
    }
}

/// A fixed list of delays, one per attempt, then give up (or keep the last delay forever).
///
/// The default is the official clients' schedule: 0, 2, 10 and 30 seconds, then give up.
///
/// ```
/// use std::time::Duration;
/// use chat_client::ReconnectDelays;
///
/// // Retry immediately, then every 5 seconds, never giving up.
/// let policy = ReconnectDelays::new([Duration::ZERO, Duration::from_secs(5)]).forever();
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectDelays {
    /// The delay before attempt `n` (zero-based) is `delays[n]`.
    delays: Vec<Duration>,
    /// Whether to keep retrying with the last delay once the list is used up.
    forever: bool,
}

impl ReconnectDelays {
    /// Retries once per delay, in order, then gives up. An empty list never retries.
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Self {
        ReconnectDelays {
            delays: delays.into_iter().collect(),
            forever: false,
        }
    }

    /// Keeps retrying with the last delay after the list is used up, never giving up.
    pub fn forever(mut self) -> Self {
        self.forever = true;
        self
    }
}

impl Default for ReconnectDelays {
    fn default() -> Self {
        ReconnectDelays::new([0, 2, 10, 30].map(Duration::from_secs))
    }
}

impl ReconnectPolicy for ReconnectDelays {
    fn next_retry_delay(&self, context: &RetryContext<'_>) -> Option<Duration> {
        let index = usize::try_from(context.previous_retry_count).unwrap_or(usize::MAX);
        match self.delays.get(index) {
            Some(delay) => Some(*delay),
            None if self.forever => self.delays.last().copied(),
            None => None,
        }
    }
}

/// A boxed policy with a `Debug` that does not require one from user closures.
pub(crate) struct BoxedPolicy(pub(crate) Box<dyn ReconnectPolicy>);

impl fmt::Debug for BoxedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReconnectPolicy(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(policy: &dyn ReconnectPolicy, previous_retry_count: u32) -> Option<Duration> {
        let reason = std::io::Error::other("lost");
        policy.next_retry_delay(&RetryContext {
            previous_retry_count,
            elapsed: Duration::ZERO,
            retry_reason: &reason,
        })
    }

    #[test]
    fn default_schedule_matches_official_clients() {
        let policy = ReconnectDelays::default();
        let delays: Vec<_> = (0..5).map(|n| delay(&policy, n)).collect();
        assert_eq!(
            delays,
            [Some(0), Some(2), Some(10), Some(30), None].map(|secs| secs.map(Duration::from_secs))
        );
    }

    #[test]
    fn forever_repeats_the_last_delay() {
        let policy = ReconnectDelays::new([Duration::ZERO, Duration::from_secs(5)]).forever();
        assert_eq!(delay(&policy, 0), Some(Duration::ZERO));
        assert_eq!(delay(&policy, 1), Some(Duration::from_secs(5)));
        assert_eq!(delay(&policy, 1000), Some(Duration::from_secs(5)));
        assert_eq!(delay(&ReconnectDelays::new([]).forever(), 0), None);
    }

    #[test]
    fn closures_are_policies() {
        let policy = |context: &RetryContext<'_>| {
            (context.previous_retry_count < 2).then_some(Duration::from_millis(10))
        };
        assert_eq!(delay(&policy, 1), Some(Duration::from_millis(10)));
        assert_eq!(delay(&policy, 2), None);
    }
}
