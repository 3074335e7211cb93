//! Every setting of the PostgreSQL backplane, each with its default and the reason for it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backplane_core::{BackplaneError, ClusterSecret, ReconnectBackoff};

use crate::conninfo;
use crate::names;
use crate::notification;
use crate::tls::{SslMode, SslRootCert};

/// The default schema the backplane's tables live in.
pub const DEFAULT_SCHEMA: &str = "signalr";

/// The largest encoded envelope that travels inline in a notification by default: the
/// largest size whose base64 text, with the notification header, still fits PostgreSQL's
/// 7,999-byte payload limit (see [`PostgresOptions::inline_threshold`]).
pub const DEFAULT_INLINE_THRESHOLD: usize = notification::MAX_INLINE_ENVELOPE;

/// Maps a hub name to the slug of its table (`{slug}_messages`).
pub type TableSlugGenerator = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Maps a (schema, slug) pair to the name of its notification channel.
pub type ChannelNameGenerator = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Whether a publishing transaction waits for its WAL record to be flushed before
/// `publish` returns, and before its notifications go out. Sent as `SET
/// synchronous_commit` on the publishing connection.
///
/// The choice trades durability against throughput and latency: a transaction that
/// issued `NOTIFY` holds a cluster-wide lock until its commit record is flushed, and its
/// notifications are sent only after that, so the flush latency (one `fdatasync`, which
/// a busy or shared disk can stretch to hundreds of milliseconds) is added to every
/// delivery and bounds how many publishing transactions per second the whole cluster
/// can commit. [`NotifyBeforeFlush`](SynchronousCommit::NotifyBeforeFlush) takes the
/// flush out of the receivers' path and keeps `On`'s promise to publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SynchronousCommit {
    /// Use the server's setting (`postgresql.conf`, role or database default); the
    /// backplane sends nothing.
    ServerDefault,
    /// `on`: notifications go out, and `publish` returns, after the WAL flush (and, with
    /// synchronous replicas configured, after a replica confirmed it). A returned `Ok`
    /// survives a PostgreSQL crash. Slowest: every batch pays one flush before anyone
    /// receives it, and holds the cluster-wide notification lock through it.
    On,
    /// `off`: `publish` returns before the WAL flush. If PostgreSQL crashes, batches
    /// committed in roughly the last `3 × wal_writer_delay` (600 ms by default) can vanish
    /// from the table although `publish` returned `Ok` and receivers may already have
    /// delivered them; receivers that had not yet seen them report the sequence hole as
    /// unrepairable. The database itself stays consistent. Fastest.
    Off,
    /// `local`: wait for the local flush only, not for synchronous replicas. A failover to
    /// a replica can lose recently published envelopes.
    Local,
    /// `remote_write`: wait until synchronous replicas wrote (not flushed) the WAL. An
    /// operating-system crash of the replica at the same time as a primary failure can
    /// lose recent envelopes.
    RemoteWrite,
    /// `remote_apply`: wait until synchronous replicas applied the WAL. Safest, slowest.
    RemoteApply,
    /// Commit each batch with `off`, so its notifications go out at once, but return from
    /// `publish` only once the batch is flushed: a second connection (`synchronous_commit
    /// = on`) commits a small WAL-writing transaction (`pg_logical_emit_message`, an
    /// empty transactional message with prefix `signalr-backplane`) after the batch
    /// committed, which flushes the WAL past it; one such confirmation covers every batch
    /// committed before it started. A returned `Ok` survives a PostgreSQL crash, as with
    /// `On` (with synchronous replicas, the confirmation waits for them as `on` does).
    ///
    /// Receivers may deliver an envelope before it is durable. If PostgreSQL crashes in
    /// that window, the envelope can vanish although some receivers delivered it; its
    /// `publish` then returns an error (the node checks which rows of the unconfirmed
    /// batches survived whenever the confirming connection was not open throughout,
    /// and fails only the lost ones), and their sequence numbers become tombstones
    /// (receivers that already gave up waiting for them report them unrepairable). A
    /// `publish` error never promised non-delivery anyway (see the crate docs); here
    /// the window is the flush time rather than the acknowledgement's trip back.
    ///
    /// Costs one more connection per node (opened with the node) and one small
    /// transaction per flush, shared by all batches committed meanwhile. The default:
    /// `On`'s promise to publishers with `Off`'s delivery latency (a slow `fdatasync`
    /// delays acknowledgements, not deliveries). Needs `pg_logical_emit_message`, which
    /// PostgreSQL lets every role run unless an administrator revoked it; `connect`
    /// fails with a message saying so otherwise.
    #[default]
    NotifyBeforeFlush,
}

impl SynchronousCommit {
    /// The value for `SET synchronous_commit` on the publishing connection, or `None` to
    /// leave the server's setting. `off` for
    /// [`NotifyBeforeFlush`](SynchronousCommit::NotifyBeforeFlush), whose confirming
    /// connection uses `on`.
    pub fn as_sql(self) -> Option<&'static str> {
        match self {
            SynchronousCommit::ServerDefault => None,
            SynchronousCommit::On => Some("on"),
            SynchronousCommit::Off | SynchronousCommit::NotifyBeforeFlush => Some("off"),
            SynchronousCommit::Local => Some("local"),
            SynchronousCommit::RemoteWrite => Some("remote_write"),
            SynchronousCommit::RemoteApply => Some("remote_apply"),
        }
    }

    /// Whether `publish` waits for a second connection to confirm the flush
    /// ([`NotifyBeforeFlush`](SynchronousCommit::NotifyBeforeFlush)).
    pub fn confirms_flush(self) -> bool {
        self == SynchronousCommit::NotifyBeforeFlush
    }
}

/// Settings of a [`PostgresBackplane`](crate::PostgresBackplane).
///
/// Built with [`PostgresOptions::new`] from a connection string, then adjusted with the
/// builder methods; every field is public and documented with its default.
///
/// ```
/// use std::time::Duration;
/// use backplane_postgres::{PostgresOptions, SynchronousCommit};
///
/// let options = PostgresOptions::new("postgres://app:hunter2@db.internal/app")?
///     .schema_name("chat_backplane")
///     .retention(Duration::from_secs(600))
///     .synchronous_commit(SynchronousCommit::Off);
/// // The password never shows in Debug output or logs.
/// assert!(!format!("{options:?}").contains("hunter2"));
/// # Ok::<(), backplane_core::BackplaneError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Where the database is. Parsed from the connection string given to
    /// [`PostgresOptions::new`] (URL or `key=value` form). Its `application_name` is
    /// replaced per connection, see [`PostgresOptions::application_name`]. Its `Debug`
    /// output redacts the password; the backplane never logs the connection string.
    pub config: tokio_postgres::Config,
    /// Whether connections use TLS and what they check; from the connection string's
    /// `sslmode` as libpq reads it. Default: [`SslMode::Prefer`] (libpq's default: TLS
    /// when the server offers it, certificate unchecked, plain otherwise), which only
    /// stops passive eavesdroppers. Over any network you do not trust, use
    /// [`SslMode::VerifyFull`]: the weaker modes let someone in the path pose as the
    /// server and read everything, including the password. This field wins over the
    /// `ssl_mode` of [`config`](PostgresOptions::config).
    pub ssl_mode: SslMode,
    /// The certificates trusted to sign the server's certificate; from the connection
    /// string's `sslrootcert` (a PEM file path, or `system`). Default: `None`, which
    /// means the system store for `verify-ca`/`verify-full` and no check otherwise. As
    /// with libpq, a file makes `prefer` and `require` check the chain too, and
    /// `sslrootcert=system` without an `sslmode` means `verify-full` (weaker modes are
    /// refused with it). The system store (read with `rustls-native-certs`) is what
    /// operators already manage (`update-ca-certificates`, `SSL_CERT_FILE`), unlike a
    /// list compiled into the binary; managed databases' own CAs (RDS, Azure, Cloud
    /// SQL) are usually not in it: give their bundle as a file.
    pub ssl_root_cert: Option<SslRootCert>,
    /// The schema holding the messages tables. Default: [`DEFAULT_SCHEMA`] (`signalr`).
    /// Created if missing. Any text up to 63 bytes without NUL is accepted; it is always
    /// quoted, so hostile names are inert.
    pub schema_name: String,
    /// Maps a hub name to its table slug; the table is `{slug}_messages` in the schema.
    /// Default: the hub name lower-cased. Hubs that map to the same slug share a table
    /// and a notification channel (receivers still tell them apart). A slug too long for
    /// PostgreSQL's 63-byte identifiers is shortened with a hash, deterministically.
    pub table_slug_generator: TableSlugGenerator,
    /// Maps a schema name and a table slug to the channel that table's notifications
    /// use. Default: `{schema}.{slug}`, so two hubs (slugs) or two applications
    /// (schemas) in one database never see each other's notifications. A name over
    /// PostgreSQL's 63-byte identifier limit is shortened with a hash, deterministically.
    /// Every table needs a channel of its own, and channels are shared by the whole
    /// database (not per schema): keep the schema in the name, or two applications in
    /// one database would hear each other. A node refuses (with a configuration error) a
    /// hub whose channel another of its own tables already uses; it cannot see other
    /// applications' channels.
    pub channel_name_generator: ChannelNameGenerator,
    /// Envelopes older than this are deleted by a background task. Default: 1 hour. It
    /// bounds how long a node may be disconnected and still recover everything it
    /// missed; longer disconnections report an unrepairable gap.
    pub retention: Duration,
    /// How often the retention task runs (on one node at a time). Default: 60 s.
    pub retention_interval: Duration,
    /// Rows deleted per retention statement, so the delete never holds many locks or a
    /// long transaction. Default: 5,000.
    pub retention_batch_size: u32,
    /// The largest encoded envelope (bytes) sent inline in the notification; larger ones
    /// travel by reference (the notification names the row, receivers read it).
    /// Default and maximum: [`DEFAULT_INLINE_THRESHOLD`] (5,938 bytes, whose base64 form
    /// with the header and room for a cluster-secret tag just fits PostgreSQL's
    /// 7,999-byte limit; a signed envelope counts its own 32-byte tag). Lower it to keep
    /// PostgreSQL's notification queue small at the cost of more reads.
    pub inline_threshold: usize,
    /// Whether inline notifications are LZ4-compressed where that makes them shorter (the
    /// `z` form, see the crate docs). Default: `true`: a batch of chat envelopes then
    /// takes about a third of the notification bytes, which PostgreSQL copies into its
    /// queue and to every listening node. Nodes of versions before this form cannot read
    /// it: they skip it, and read the envelopes it carried from the table only once a
    /// later notification they can read reveals the gap, so messages from a compressing
    /// node may not reach their clients at all. While a cluster is being upgraded from
    /// such a version, run the upgraded nodes with `false` and switch it on once every
    /// node is upgraded. Receivers read both forms either way.
    pub compress_notifications: bool,
    /// Backoff of the listener's reconnect loop; it never gives up.
    pub reconnect_backoff: ReconnectBackoff,
    /// The most envelopes one publishing transaction carries. Default: 1,000.
    pub publish_batch_size: usize,
    /// The most payload bytes one publishing transaction carries (a single larger
    /// envelope still goes, alone). Default: 8 MiB.
    pub publish_batch_bytes: usize,
    /// How long the publisher waits for more envelopes before writing a batch. Default:
    /// zero: batches form naturally from what queues up while the previous transaction
    /// commits (one transaction is in flight per node), so a lone publish is not delayed.
    pub publish_linger: Duration,
    /// The largest envelope payload (hub message bytes) accepted; larger publishes fail
    /// with `TooLarge` before being numbered. Default: 64 MiB (bytea allows 1 GiB, but
    /// every receiver holds the whole envelope in memory).
    pub max_envelope_bytes: usize,
    /// Time limit of one database operation including its retries: a publishing batch
    /// is retried (idempotently) after connection errors until this elapses, then its
    /// publishes fail with `Timeout`. Also bounds connects, DDL and catch-up reads.
    /// Default: 10 s.
    pub command_timeout: Duration,
    /// Whether publishing commits wait for the WAL flush. Default: [`SynchronousCommit::On`].
    pub synchronous_commit: SynchronousCommit,
    /// When a sequence gap is seen while connected, how long to wait for the missing
    /// envelopes to show up in the table before reporting them lost. Default: 1 s.
    pub gap_wait: Duration,
    /// After a reconnect, rows inserted since the listener was last known alive minus
    /// this margin are read (for nodes never heard from before). Must cover the longest
    /// publishing transaction; default: `command_timeout + 2 s`, applied when `None`.
    pub catch_up_margin: Option<Duration>,
    /// The listener sends a tiny query on its connection this often, busy or not: a
    /// probe that goes unanswered reveals a dead connection that TCP has not noticed
    /// yet, and each answer refreshes the time catch-up starts from. Default: 5 s.
    pub probe_interval: Duration,
    /// A probe not answered within this declares the listener connection dead. Default: 5 s.
    pub probe_timeout: Duration,
    /// TCP keepalive idle time on every connection (kernel default is 2 hours).
    /// Default: 10 s. Interval 5 s, 3 retries: a half-open connection is noticed within
    /// about 25 s even with no traffic at all, and the probe notices it sooner.
    pub keepalive_idle: Duration,
    /// How long sent data may stay unacknowledged before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`, Linux). Default: 15 s.
    pub tcp_user_timeout: Duration,
    /// Prefix of `application_name` on the backplane's connections; each connection
    /// appends its role and the node id (`signalr-backplane listener 0af3…`), so
    /// operators can find them in `pg_stat_activity`. Default: `signalr-backplane`.
    pub application_name: String,
    /// Capacity of each subscription's event queue. When it is full the listener waits
    /// (backpressure: PostgreSQL buffers the notifications meanwhile); nothing is
    /// dropped, so `Lagged` is never reported. Default: 8,192.
    pub subscription_capacity: usize,
    /// The secret the nodes of one cluster share: with it, every envelope, tombstone and
    /// notification carries an HMAC-SHA256 tag, and whatever fails verification is
    /// dropped and counted ([`Backplane::envelopes_rejected`](backplane_core::Backplane::envelopes_rejected)),
    /// never delivered. Every node of a cluster needs the same secret: nodes with and
    /// without one cannot talk, and each drops and counts the other's notifications,
    /// logging which side lacks the secret. See the README's threat model. Default:
    /// `None`.
    pub cluster_secret: Option<ClusterSecret>,
    /// Most publishes waiting for the publisher task; more fail at once with
    /// `QueueFull`. Default: 10,000 (about ten full batches; at the default batch size
    /// a healthy node rarely holds more than one).
    pub max_queued_publishes: usize,
    /// While the database does not answer (the listener's probe timed out, a connection
    /// could not be opened, a batch timed out), publishes fail at once with
    /// `Unavailable` (circuit open) instead of queueing; one publish per this interval
    /// goes through as a trial, and a successful one, or the listener reconnecting,
    /// closes the circuit. Default: 2 s.
    pub circuit_cooldown: Duration,
    /// Most notifications the listener holds that arrived while it waited for its own
    /// query (LISTEN, probe) on the listening connection; beyond, it drops them and
    /// reconnects, reading what it missed from the table (nothing is lost).
    /// Default: 10,000.
    pub max_pending_notifications: usize,
}

impl PostgresOptions {
    /// Options for the database at `connection_string` (URL `postgres://user@host/db` or
    /// `key=value` form), everything else at its default.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] if the connection string cannot be parsed, or its
    /// `sslmode`/`sslrootcert` are invalid. The message never repeats the connection
    /// string, so a password cannot leak into logs.
    pub fn new(connection_string: &str) -> Result<Self, BackplaneError> {
        let params = conninfo::take_tls_params(connection_string)?;
        let config = tokio_postgres::Config::from_str(&params.rest).map_err(|error| {
            BackplaneError::Config(format!("invalid PostgreSQL connection string: {error}"))
        })?;
        let mode = params.sslmode.as_deref().map(str::parse).transpose()?;
        let root = params.sslrootcert.map(|root| match root.as_str() {
            "system" => SslRootCert::System,
            path => SslRootCert::File(path.into()),
        });
        let mode = match (mode, &root) {
            (None, Some(SslRootCert::System)) => SslMode::VerifyFull,
            (Some(mode), Some(SslRootCert::System)) if mode != SslMode::VerifyFull => {
                return Err(BackplaneError::Config(format!(
                    "sslmode={mode} may not be used with sslrootcert=system (as in libpq): use sslmode=verify-full"
                )));
            }
            (mode, _) => mode.unwrap_or_default(),
        };
        let mut options = Self::from_config(config);
        options.ssl_mode = mode;
        options.ssl_root_cert = root;
        Ok(options)
    }

    /// Options for an already built connection configuration; its `ssl_mode`
    /// (`disable`, `prefer` or `require`) becomes [`PostgresOptions::ssl_mode`].
    pub fn from_config(config: tokio_postgres::Config) -> Self {
        let ssl_mode = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        Self {
            config,
            ssl_mode,
            ssl_root_cert: None,
            schema_name: DEFAULT_SCHEMA.to_owned(),
            table_slug_generator: Arc::new(|hub: &str| hub.to_lowercase()),
            channel_name_generator: Arc::new(|schema: &str, slug: &str| format!("{schema}.{slug}")),
            retention: Duration::from_secs(3600),
            retention_interval: Duration::from_secs(60),
            retention_batch_size: 5000,
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            compress_notifications: true,
            reconnect_backoff: ReconnectBackoff::default(),
            publish_batch_size: 1000,
            publish_batch_bytes: 8 * 1024 * 1024,
            publish_linger: Duration::ZERO,
            max_envelope_bytes: 64 * 1024 * 1024,
            command_timeout: Duration::from_secs(10),
            synchronous_commit: SynchronousCommit::default(),
            gap_wait: Duration::from_secs(1),
            catch_up_margin: None,
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            keepalive_idle: Duration::from_secs(10),
            tcp_user_timeout: Duration::from_secs(15),
            application_name: "signalr-backplane".to_owned(),
            subscription_capacity: 8192,
            cluster_secret: None,
            max_queued_publishes: 10_000,
            circuit_cooldown: Duration::from_secs(2),
            max_pending_notifications: 10_000,
        }
    }

    /// These options signing and verifying backplane traffic with `secret`.
    #[must_use]
    pub fn cluster_secret(mut self, secret: impl Into<Option<ClusterSecret>>) -> Self {
        self.cluster_secret = secret.into();
        self
    }

    /// These options with at most `limit` publishes queued.
    #[must_use]
    pub fn max_queued_publishes(mut self, limit: usize) -> Self {
        self.max_queued_publishes = limit;
        self
    }

    /// These options letting one trial publish through per `cooldown` while the circuit
    /// is open.
    #[must_use]
    pub fn circuit_cooldown(mut self, cooldown: Duration) -> Self {
        self.circuit_cooldown = cooldown;
        self
    }

    /// These options with `mode` as the TLS mode.
    #[must_use]
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = mode;
        self
    }

    /// These options trusting `root` to sign the server's certificate.
    #[must_use]
    pub fn ssl_root_cert(mut self, root: SslRootCert) -> Self {
        self.ssl_root_cert = Some(root);
        self
    }

    /// These options with `schema` as the schema name.
    #[must_use]
    pub fn schema_name(mut self, schema: impl Into<String>) -> Self {
        self.schema_name = schema.into();
        self
    }

    /// These options with `generator` mapping hub names to table slugs.
    #[must_use]
    pub fn table_slug_generator(
        mut self,
        generator: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.table_slug_generator = Arc::new(generator);
        self
    }

    /// These options with `generator` mapping (schema, slug) pairs to notification
    /// channel names.
    #[must_use]
    pub fn channel_name_generator(
        mut self,
        generator: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        self.channel_name_generator = Arc::new(generator);
        self
    }

    /// These options with `retention` as the age after which rows are deleted.
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// These options with the retention task running every `interval`.
    #[must_use]
    pub fn retention_interval(mut self, interval: Duration) -> Self {
        self.retention_interval = interval;
        self
    }

    /// These options with `threshold` as the largest inline envelope.
    #[must_use]
    pub fn inline_threshold(mut self, threshold: usize) -> Self {
        self.inline_threshold = threshold;
        self
    }

    /// These options with inline notifications compressed (`true`, the default) or always
    /// plain (`false`, for a cluster with nodes of versions before compression).
    #[must_use]
    pub fn compress_notifications(mut self, compress: bool) -> Self {
        self.compress_notifications = compress;
        self
    }

    /// These options with `backoff` for the listener's reconnect loop.
    #[must_use]
    pub fn reconnect_backoff(mut self, backoff: ReconnectBackoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// These options with at most `size` envelopes per publishing transaction.
    #[must_use]
    pub fn publish_batch_size(mut self, size: usize) -> Self {
        self.publish_batch_size = size;
        self
    }

    /// These options with the publisher waiting `linger` for more envelopes per batch.
    #[must_use]
    pub fn publish_linger(mut self, linger: Duration) -> Self {
        self.publish_linger = linger;
        self
    }

    /// These options with `timeout` as the command timeout.
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// These options with `mode` for publishing commits.
    #[must_use]
    pub fn synchronous_commit(mut self, mode: SynchronousCommit) -> Self {
        self.synchronous_commit = mode;
        self
    }

    /// These options with `wait` as the bounded wait for a sequence gap to fill.
    #[must_use]
    pub fn gap_wait(mut self, wait: Duration) -> Self {
        self.gap_wait = wait;
        self
    }

    /// These options probing the listener connection every `interval`, failing after
    /// `timeout`.
    #[must_use]
    pub fn probe(mut self, interval: Duration, timeout: Duration) -> Self {
        self.probe_interval = interval;
        self.probe_timeout = timeout;
        self
    }

    /// These options with `name` as the `application_name` prefix.
    #[must_use]
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The catch-up margin in force (explicit, or `command_timeout + 2 s`).
    pub fn effective_catch_up_margin(&self) -> Duration {
        self.catch_up_margin
            .unwrap_or(self.command_timeout + Duration::from_secs(2))
    }

    /// Check the settings that can be checked without a database.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Config`] naming the first invalid setting.
    pub fn validate(&self) -> Result<(), BackplaneError> {
        names::validate_schema(&self.schema_name)?;
        let invalid = |what: &str| Err(BackplaneError::Config(what.to_owned()));
        if self.inline_threshold > notification::MAX_INLINE_ENVELOPE {
            return Err(BackplaneError::Config(format!(
                "inline_threshold {} exceeds the maximum of {} bytes (PostgreSQL notifications hold at most 7999 bytes of base64 text)",
                self.inline_threshold,
                notification::MAX_INLINE_ENVELOPE
            )));
        }
        if self.publish_batch_size == 0 {
            return invalid("publish_batch_size must be at least 1");
        }
        if self.subscription_capacity == 0 {
            return invalid("subscription_capacity must be at least 1");
        }
        if self.max_queued_publishes == 0 {
            return invalid("max_queued_publishes must be at least 1");
        }
        if self.max_pending_notifications == 0 {
            return invalid("max_pending_notifications must be at least 1");
        }
        if self.circuit_cooldown.is_zero() {
            return invalid("circuit_cooldown must be greater than zero");
        }
        if self.retention_batch_size == 0 {
            return invalid("retention_batch_size must be at least 1");
        }
        if self.command_timeout.is_zero() {
            return invalid("command_timeout must be greater than zero");
        }
        if self.probe_interval.is_zero() || self.probe_timeout.is_zero() {
            return invalid("probe_interval and probe_timeout must be greater than zero");
        }
        if self.retention_interval.is_zero() {
            return invalid("retention_interval must be greater than zero");
        }
        if !(0.0..=1.0).contains(&self.reconnect_backoff.jitter) {
            return invalid("reconnect_backoff.jitter must be between 0.0 and 1.0");
        }
        if self.reconnect_backoff.initial.is_zero()
            || self.reconnect_backoff.max < self.reconnect_backoff.initial
        {
            return invalid("reconnect_backoff needs 0 < initial <= max");
        }
        Ok(())
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug redacts the password.
        f.debug_struct("PostgresOptions")
            .field("config", &self.config)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("schema_name", &self.schema_name)
            .field("retention", &self.retention)
            .field("retention_interval", &self.retention_interval)
            .field("retention_batch_size", &self.retention_batch_size)
            .field("inline_threshold", &self.inline_threshold)
            .field("compress_notifications", &self.compress_notifications)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("publish_batch_size", &self.publish_batch_size)
            .field("publish_batch_bytes", &self.publish_batch_bytes)
            .field("publish_linger", &self.publish_linger)
            .field("max_envelope_bytes", &self.max_envelope_bytes)
            .field("command_timeout", &self.command_timeout)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("gap_wait", &self.gap_wait)
            .field("catch_up_margin", &self.effective_catch_up_margin())
            .field("probe_interval", &self.probe_interval)
            .field("probe_timeout", &self.probe_timeout)
            .field("keepalive_idle", &self.keepalive_idle)
            .field("tcp_user_timeout", &self.tcp_user_timeout)
            .field("application_name", &self.application_name)
            .field("subscription_capacity", &self.subscription_capacity)
            // The secret itself is never shown (ClusterSecret's Debug redacts it).
            .field("cluster_secret", &self.cluster_secret.is_some())
            .field("max_queued_publishes", &self.max_queued_publishes)
            .field("circuit_cooldown", &self.circuit_cooldown)
            .field("max_pending_notifications", &self.max_pending_notifications)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_read_as_libpq_reads_them() {
        let options = PostgresOptions::new("postgres://u:pw@db/app").unwrap();
        assert_eq!(
            (options.ssl_mode, options.ssl_root_cert),
            (SslMode::Prefer, None)
        );
        let options =
            PostgresOptions::new("host=db user=u sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(options.ssl_mode, SslMode::VerifyCa);
        assert_eq!(
            options.ssl_root_cert,
            Some(SslRootCert::File("/ca.pem".into()))
        );
        // sslrootcert=system means verify-full, and refuses weaker modes.
        let options = PostgresOptions::new("postgres://db/app?sslrootcert=system").unwrap();
        assert_eq!(options.ssl_mode, SslMode::VerifyFull);
        let error =
            PostgresOptions::new("postgres://u:pw@db/app?sslmode=require&sslrootcert=system")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("verify-full") && !error.contains("pw"),
            "{error}"
        );
        let error = PostgresOptions::new("postgres://u:pw@db/app?sslmode=verify-everything")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid sslmode") && !error.contains("pw@"),
            "{error}"
        );
    }
}
