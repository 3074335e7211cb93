//! [`NatsOptions`]: every knob of the NATS backplane, with its default and what it risks.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use backplane_core::node::{NodeOptions, redact_url};
use backplane_core::{BackplaneError, ClusterSecret};

/// Default [`NatsOptions::prefix`].
pub const DEFAULT_PREFIX: &str = "signalr";

/// How the node proves who it is to NATS. Secrets never show in `Debug` output, logs or
/// errors.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum NatsCredentials {
    /// Nothing beyond what the URL carries (`nats://user:password@host` also works).
    #[default]
    None,
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: String,
    },
    /// An authentication token.
    Token(String),
    /// An NKey seed (cargo feature `nkeys`).
    NKey(String),
    /// A `.creds` file holding a user JWT and its NKey seed (cargo feature `nkeys`).
    CredsFile(PathBuf),
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Self::Token(_) => f.write_str("Token(***)"),
            Self::NKey(_) => f.write_str("NKey(***)"),
            Self::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
        }
    }
}

/// Where JetStream keeps the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Storage {
    /// On disk: survives a server restart (a killed server loses nothing it
    /// acknowledged, short of a machine crash inside the server's sync interval).
    #[default]
    File,
    /// In memory: faster; a restarted server has lost the stream, and receivers report
    /// what they had not read yet as unrepairable.
    Memory,
}

/// Settings of a [`NatsBackplane`](crate::NatsBackplane).
///
/// Built with [`NatsOptions::new`] from a URL, then adjusted with the builder methods.
///
/// ```
/// use std::time::Duration;
/// use backplane_nats::{NatsCredentials, NatsOptions};
///
/// let options = NatsOptions::new("nats://nats.internal:4222")?
///     .prefix("chat")
///     .credentials(NatsCredentials::UserPassword { user: "app".into(), password: "hunter2".into() })
///     .max_age(Some(Duration::from_secs(600)));
/// assert!(!format!("{options:?}").contains("hunter2"));
/// # Ok::<(), backplane_core::BackplaneError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct NatsOptions {
    /// `nats://[user:password@]host[:port]`, `tls://...` for TLS, or several separated by
    /// commas. Private: it may hold a password, and is only shown redacted.
    url: String,
    /// How to authenticate beyond the URL. Default: [`NatsCredentials::None`].
    pub credentials: NatsCredentials,
    /// Require TLS even for `nats://` URLs. Default: false (the server's INFO decides).
    pub require_tls: bool,
    /// Extra root certificates (PEM) to trust, for a private CA. Default: none (the
    /// system's roots).
    pub root_certificates: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS. Default: none.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// Names the stream and roots every subject (`<prefix>.h<hub>`), so several
    /// applications share one NATS without seeing each other, as PostgreSQL's schema
    /// option does. Default: [`DEFAULT_PREFIX`]. Letters, digits, `-` and `_` only (a
    /// stream name and one subject token).
    pub prefix: String,
    /// Messages older than this are removed (the stream's `max_age`). Default: 1 hour:
    /// the longest outage fully repairable. `None`: no age limit (then set `max_bytes`
    /// or `max_messages`).
    pub max_age: Option<Duration>,
    /// The stream keeps at most this many bytes, dropping the oldest messages. Default:
    /// 1 GiB. It bounds the server's disk or memory, and how far a receiver may fall
    /// behind during a burst. `None`: no byte limit.
    pub max_bytes: Option<u64>,
    /// The stream keeps at most this many messages (chunks count one each). Default:
    /// `None` (no count limit).
    pub max_messages: Option<u64>,
    /// File (default) or memory storage of a stream this node creates.
    pub storage: Storage,
    /// Replicas of a stream this node creates (JetStream clusters; 1 on a single
    /// server). Default: 1.
    pub replicas: usize,
    /// JetStream drops a message whose id it saw within this window: a publish retried
    /// after a lost acknowledgement is stored once. Default: 2 minutes (capped at
    /// `max_age`). Retries stop after `command_timeout`, well inside it.
    pub duplicate_window: Duration,
    /// What every log-based node has: timeouts, backoff, batching, limits, the
    /// connection name (`<client_name>-<node id>` in the server's `/connz`; letters,
    /// digits, `-` and `_`). See [`NodeOptions`] for each, with its default. Here the
    /// client reconnects by itself and a batch is retried from its first unacknowledged
    /// message; `command_timeout` also bounds JetStream API requests, and the backoff
    /// paces the client's reconnects too. Envelopes above the server's `max_payload`
    /// (1 MiB by default) travel as chunks, up to `max_envelope_bytes`.
    pub node: NodeOptions,
    /// How long one publish waits for its acknowledgement before the batch is retried
    /// from it. Default: 2 s (an acknowledgement lost with a cut connection costs this).
    pub ack_timeout: Duration,
    /// Idle heartbeat of each hub's consumer: a reader that hears nothing for three of
    /// these recreates its consumer from the last sequence it read. Default: 2 s.
    pub heartbeat: Duration,
    /// The secret the nodes of one cluster share: with it, every envelope carries an
    /// HMAC-SHA256 tag and what fails verification is dropped and counted
    /// ([`Backplane::envelopes_rejected`](backplane_core::Backplane::envelopes_rejected)),
    /// never delivered. Skipped runs (markers of failed batches) are not signed yet.
    /// Every node of a cluster needs the same secret. Default: `None`.
    pub cluster_secret: Option<ClusterSecret>,
}

impl NatsOptions {
    /// Options for the NATS at `url`, everything else at its default.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] if the URL is empty or not a `nats://`, `tls://`
    /// URL. The message never repeats the URL.
    pub fn new(url: &str) -> Result<Self, BackplaneError> {
        let options = Self {
            url: url.to_owned(),
            credentials: NatsCredentials::None,
            require_tls: false,
            root_certificates: None,
            client_certificate: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: Some(1 << 30),
            max_messages: None,
            storage: Storage::File,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            node: NodeOptions::default(),
            ack_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(2),
            cluster_secret: None,
        };
        options.check_url()?;
        Ok(options)
    }

    /// Set [`NatsOptions::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Set [`NatsOptions::credentials`].
    pub fn credentials(mut self, credentials: NatsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Set [`NatsOptions::max_age`].
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// Set [`NatsOptions::max_messages`].
    pub fn max_messages(mut self, max_messages: Option<u64>) -> Self {
        self.max_messages = max_messages;
        self
    }

    /// Set [`NatsOptions::storage`].
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Set [`NodeOptions::command_timeout`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.node.command_timeout = timeout;
        self
    }

    /// The URL(s), for connecting.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The URL(s) without user and password, for logs.
    pub fn redacted_url(&self) -> String {
        self.url
            .split(',')
            .map(|url| redact_url(url.trim()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn check_url(&self) -> Result<(), BackplaneError> {
        let valid = !self.url.trim().is_empty()
            && self.url.split(',').all(|url| {
                let url = url.trim();
                ["nats://", "tls://"].iter().any(|s| url.starts_with(s))
                    && url.len() > "nats://".len()
            });
        if valid {
            Ok(())
        } else {
            Err(BackplaneError::Config(
                "the NATS URL must look like nats://host:4222 or tls://host:4222 (several separated by commas)".into(),
            ))
        }
    }

    /// Check that the options are usable.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] naming the first invalid option.
    pub fn validate(&self) -> Result<(), BackplaneError> {
        let invalid = |what: &str| Err(BackplaneError::Config(what.to_owned()));
        self.check_url()?;
        self.node.validate()?;
        let token_safe = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token_safe(&self.prefix) {
            return invalid("prefix must be 1 to 64 letters, digits, '-' or '_'");
        }
        if !token_safe(&self.node.client_name) {
            return invalid("client_name must be 1 to 64 letters, digits, '-' or '_'");
        }
        if matches!(
            self.credentials,
            NatsCredentials::NKey(_) | NatsCredentials::CredsFile(_)
        ) && !cfg!(feature = "nkeys")
        {
            return invalid(
                "NKey and .creds credentials need backplane-nats's cargo feature `nkeys`",
            );
        }
        if self.max_age.is_some_and(|age| age < Duration::from_secs(1)) {
            return invalid("max_age must be at least 1 s (or None)");
        }
        if self.max_bytes == Some(0) || self.max_messages == Some(0) || self.replicas == 0 {
            return invalid(
                "max_bytes and max_messages must be positive (or None), replicas at least 1",
            );
        }
        if self.ack_timeout.is_zero()
            || self.heartbeat < Duration::from_millis(100)
            || self.duplicate_window.is_zero()
        {
            return invalid(
                "ack_timeout and duplicate_window must be positive, heartbeat at least 100 ms",
            );
        }
        Ok(())
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &self.redacted_url())
            .field("credentials", &self.credentials)
            .field("require_tls", &self.require_tls)
            .field("root_certificates", &self.root_certificates)
            .field("client_certificate", &self.client_certificate)
            .field("prefix", &self.prefix)
            .field("max_age", &self.max_age)
            .field("max_bytes", &self.max_bytes)
            .field("max_messages", &self.max_messages)
            .field("storage", &self.storage)
            .field("replicas", &self.replicas)
            .field("duplicate_window", &self.duplicate_window)
            .field("node", &self.node)
            .field("ack_timeout", &self.ack_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("cluster_secret", &self.cluster_secret.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        let options = NatsOptions::new("nats://user:pa@ss@host:4222, nats://other:4222").unwrap();
        assert_eq!(
            options.redacted_url(),
            "nats://***@host:4222,nats://other:4222"
        );
        assert!(!format!("{options:?}").contains("pa@ss"));
        let error = NatsOptions::new("http://secret@host")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("secret"), "{error}");
        assert!(options.clone().prefix("a.b").validate().is_err());
        assert!(options.clone().prefix("a*").validate().is_err());
        assert!(options.validate().is_ok());
        let token = options.credentials(NatsCredentials::Token("t0k".into()));
        assert!(!format!("{token:?}").contains("t0k"));
    }
}
