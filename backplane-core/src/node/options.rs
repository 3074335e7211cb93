//! [`NodeOptions`]: the knobs every log-based backend shares (timeouts, backoff,
//! batching, limits), with their defaults, what they risk and their validation.

use std::time::Duration;

use crate::backoff::ReconnectBackoff;
use crate::backplane::BackplaneError;
use crate::node::PublishLimits;

/// Settings every log-based node has, whatever its backend. A backend's options hold
/// them as their `node` field, beside what only that backend knows (its URL, key prefix
/// or stream, retention).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeOptions {
    /// Time limit of one operation including its retries: a publish batch is retried
    /// after connection errors until this elapses, then its publishes fail with
    /// `Timeout`. Also bounds connecting and the backend's requests. Default: 10 s.
    pub command_timeout: Duration,
    /// Backoff of the reconnect loops (readers forever, the publisher within
    /// `command_timeout`). Default: 100 ms doubling to 10 s, jitter 0.25.
    pub reconnect_backoff: ReconnectBackoff,
    /// The largest envelope (estimated encoded size) accepted; larger publishes fail
    /// with `TooLarge` before being numbered. Default: 64 MiB (every receiver holds a
    /// whole envelope in memory, and the log keeps as many as its retention allows).
    pub max_envelope_bytes: usize,
    /// The most envelopes one publishing batch carries. Default: 1,000.
    pub publish_batch_size: usize,
    /// The most payload bytes one publishing batch carries (a single larger envelope
    /// still goes, alone). Default: 8 MiB.
    pub publish_batch_bytes: usize,
    /// Capacity of each subscription's event queue. When it is full the hub's reader
    /// waits (backpressure: entries wait in the log meanwhile, within retention);
    /// nothing is dropped, so `Lagged` is never reported. Default: 8,192.
    pub subscription_capacity: usize,
    /// Prefix of each connection's name as the server shows it to operators (Redis
    /// `CLIENT LIST`, NATS `/connz`), followed by the node id. Default:
    /// `signalr-backplane`.
    pub client_name: String,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(10),
            reconnect_backoff: ReconnectBackoff::default(),
            max_envelope_bytes: 64 * 1024 * 1024,
            publish_batch_size: 1000,
            publish_batch_bytes: 8 * 1024 * 1024,
            subscription_capacity: 8192,
            client_name: "signalr-backplane".to_owned(),
        }
    }
}

impl NodeOptions {
    /// Check the shared settings (a backend checks `client_name`'s alphabet itself).
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] naming the first invalid option.
    pub fn validate(&self) -> Result<(), BackplaneError> {
        let invalid = |what: &str| Err(BackplaneError::Config(what.to_owned()));
        if self.command_timeout.is_zero() {
            return invalid("command_timeout must be positive");
        }
        if self.publish_batch_size == 0 || self.subscription_capacity == 0 {
            return invalid("publish_batch_size and subscription_capacity must be at least 1");
        }
        if self.client_name.is_empty() {
            return invalid("client_name must not be empty");
        }
        if !(0.0..=1.0).contains(&self.reconnect_backoff.jitter) {
            return invalid("reconnect_backoff.jitter must be between 0.0 and 1.0");
        }
        Ok(())
    }

    /// The publisher task's share of these settings.
    pub fn publish_limits(&self) -> PublishLimits {
        PublishLimits {
            batch_size: self.publish_batch_size,
            batch_bytes: self.publish_batch_bytes,
            command_timeout: self.command_timeout,
            backoff: self.reconnect_backoff,
        }
    }
}

/// `url` with anything between `://` and the last `@` of the authority removed, for
/// logs and `Debug` output: `redis://app:secret@host:6379/0` becomes
/// `redis://***@host:6379/0`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("redis://u:pa@ss@host:1/2"),
            "redis://***@host:1/2"
        );
        assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
        assert_eq!(redact_url("host@secret"), "<not a URL>");
    }

    #[test]
    fn shared_settings_are_checked() {
        assert!(NodeOptions::default().validate().is_ok());
        let empty = NodeOptions {
            subscription_capacity: 0,
            ..NodeOptions::default()
        };
        assert!(empty.validate().is_err());
        let mut options = NodeOptions::default();
        options.reconnect_backoff.jitter = 1.5;
        assert!(options.validate().is_err());
    }
}
