//! [`RedisOptions`]: every knob of the Redis backplane, with its default and what it risks.

use std::fmt;
use std::time::Duration;

use backplane_core::node::{NodeOptions, redact_url};
use backplane_core::{BackplaneError, ClusterSecret};

/// Default [`RedisOptions::key_prefix`].
pub const DEFAULT_KEY_PREFIX: &str = "signalr";

/// Settings of a [`RedisBackplane`](crate::RedisBackplane).
///
/// Built with [`RedisOptions::new`] from a URL, then adjusted with the builder methods;
/// every field but the URL is public and documented with its default.
///
/// ```
/// use std::time::Duration;
/// use backplane_redis::RedisOptions;
///
/// let options = RedisOptions::new("redis://app:hunter2@cache.internal:6379/0")?
///     .key_prefix("chat")
///     .max_age(Some(Duration::from_secs(600)));
/// // The password never shows in Debug output or logs.
/// assert!(!format!("{options:?}").contains("hunter2"));
/// # Ok::<(), backplane_core::BackplaneError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS (cargo
    /// feature `tls`). Private: it may hold a password, and is only shown redacted.
    url: String,
    /// Every key starts with it (`{prefix:hub}` is a hub's stream), so several
    /// applications share one Redis without seeing each other, as PostgreSQL's schema
    /// option does. Default: [`DEFAULT_KEY_PREFIX`]. Must not contain `{` or `}` (they
    /// would move the hash tag that keeps a hub on one cluster slot).
    pub key_prefix: String,
    /// Each `XADD` trims the hub's stream to about this many entries (`MAXLEN ~`, whole
    /// macro nodes, so cheap). Default: 100,000. It bounds Redis memory (at most this
    /// many envelopes per hub, times their size) and how far a receiver may fall behind
    /// or stay disconnected during a burst: older entries are gone, and a receiver that
    /// needed them reports them as unrepairable. `None`: no length limit.
    pub max_len: Option<u64>,
    /// Entries older than this are trimmed (`XTRIM MINID ~`, by the publisher's clock,
    /// once per batch) and a hub's stream expires this long after its last publish.
    /// Default: 1 hour: the longest outage fully repairable (as PostgreSQL's
    /// retention). `None`: no age limit (then set `max_len`, or streams grow forever).
    pub max_age: Option<Duration>,
    /// How long one `XREAD BLOCK` waits on Redis for new entries before asking again.
    /// Default: 5 s. Shorter costs a round trip per idle interval per hub; a silently
    /// dead connection is noticed after this plus `command_timeout`.
    pub block_timeout: Duration,
    /// What every log-based node has: timeouts, backoff, batching, limits, the
    /// connection name (`<client_name>-<publisher|reader>-<node>` in `CLIENT LIST`;
    /// no spaces). See [`NodeOptions`] for each, with its default. Here
    /// `command_timeout` also bounds the reply to a read (beyond `block_timeout`), and a
    /// batch is retried on a fresh connection.
    pub node: NodeOptions,
    /// Entries asked for per `XREAD` (`COUNT`). Default: 1,000. Larger reads fewer
    /// times during a burst; each reply is held in memory at once.
    pub read_count: usize,
    /// The secret the nodes of one cluster share: with it, every envelope carries an
    /// HMAC-SHA256 tag and what fails verification is dropped and counted
    /// ([`Backplane::envelopes_rejected`](backplane_core::Backplane::envelopes_rejected)),
    /// never delivered. Skipped runs (markers of failed batches) are not signed yet.
    /// Every node of a cluster needs the same secret. Default: `None`.
    pub cluster_secret: Option<ClusterSecret>,
}

impl RedisOptions {
    /// Options for the Redis at `url`, everything else at its default.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] if the URL is not a `redis://` or `rediss://` URL Redis
    /// accepts. The message never repeats the URL, so a password cannot leak into logs.
    pub fn new(url: &str) -> Result<Self, BackplaneError> {
        let options = Self {
            url: url.to_owned(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            max_len: Some(100_000),
            max_age: Some(Duration::from_secs(3600)),
            block_timeout: Duration::from_secs(5),
            node: NodeOptions::default(),
            read_count: 1000,
            cluster_secret: None,
        };
        options.client()?;
        Ok(options)
    }

    /// Set [`RedisOptions::key_prefix`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Set [`RedisOptions::max_len`].
    pub fn max_len(mut self, max_len: Option<u64>) -> Self {
        self.max_len = max_len;
        self
    }

    /// Set [`RedisOptions::max_age`].
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Set [`RedisOptions::block_timeout`].
    pub fn block_timeout(mut self, timeout: Duration) -> Self {
        self.block_timeout = timeout;
        self
    }

    /// Set [`NodeOptions::command_timeout`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.node.command_timeout = timeout;
        self
    }

    /// The stream key of `hub`: `{prefix:hub}`. The braces make the whole name the
    /// Redis Cluster hash tag, so everything of one hub lives on one slot (a hub name
    /// containing `}` is hashed on the part before it: still one slot per hub).
    pub fn stream_key(&self, hub: &str) -> String {
        format!("{{{}:{hub}}}", self.key_prefix)
    }

    /// A client for the URL (connects nothing yet).
    pub(crate) fn client(&self) -> Result<redis::Client, BackplaneError> {
        if self.url.starts_with("rediss://") && !cfg!(feature = "tls") {
            return Err(BackplaneError::Config(
                "rediss:// (TLS) needs backplane-redis's cargo feature `tls`; enable it or use redis://".into(),
            ));
        }
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(BackplaneError::Config(
                "the Redis URL must start with redis:// or rediss://".into(),
            ));
        }
        // The driver's message is not repeated: it might quote the URL.
        redis::Client::open(self.url.as_str()).map_err(|_| {
            BackplaneError::Config(
                "invalid Redis URL: expected redis://[user[:password]@]host[:port][/db]".into(),
            )
        })
    }

    /// The URL without its user and password, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Check that the options are usable.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] naming the first invalid option.
    pub fn validate(&self) -> Result<(), BackplaneError> {
        let invalid = |what: &str| Err(BackplaneError::Config(what.to_owned()));
        self.client()?;
        self.node.validate()?;
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return invalid("key_prefix must be non-empty and contain no '{' or '}'");
        }
        if self.node.client_name.contains(char::is_whitespace) {
            return invalid("client_name must contain no spaces");
        }
        if self.max_len == Some(0) {
            return invalid("max_len must be at least 1 (or None)");
        }
        if self
            .max_age
            .is_some_and(|age| age < Duration::from_millis(1))
        {
            return invalid("max_age must be at least 1 ms (or None)");
        }
        if self.block_timeout < Duration::from_millis(1) {
            return invalid("block_timeout must be at least 1 ms");
        }
        if self.read_count == 0 {
            return invalid("read_count must be at least 1");
        }
        Ok(())
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.redacted_url())
            .field("key_prefix", &self.key_prefix)
            .field("max_len", &self.max_len)
            .field("max_age", &self.max_age)
            .field("block_timeout", &self.block_timeout)
            .field("node", &self.node)
            .field("read_count", &self.read_count)
            .field("cluster_secret", &self.cluster_secret.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        let options = RedisOptions::new("redis://user:pa@ss@host:6379/2").unwrap();
        assert_eq!(options.redacted_url(), "redis://***@host:6379/2");
        assert!(!format!("{options:?}").contains("pa@ss"));
        let error = RedisOptions::new("http://secret@host")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
        assert_eq!(options.stream_key("chat"), "{signalr:chat}");
        assert!(options.clone().key_prefix("a{b").validate().is_err());
        assert!(options.validate().is_ok());
    }
}
