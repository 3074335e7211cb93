//! The PostgreSQL [`Backplane`](backplane_core::Backplane): LISTEN/NOTIFY for speed, a
//! messages table so that nothing is lost.
//!
//! Every server instance (node) connects with a [`PostgresBackplane`]; nodes that use
//! the same database and schema see each other's envelopes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use backplane_core::{Backplane, BackplaneHubLifetimeManager};
//! use backplane_postgres::{PostgresBackplane, PostgresOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let options = PostgresOptions::new("postgres://app@db.internal/app")?;
//! let backplane: Arc<dyn Backplane> = Arc::new(PostgresBackplane::connect(options).await?);
//! let chat = BackplaneHubLifetimeManager::new("chat", backplane.clone()).await?;
//! // ... serve connections through `chat` ...
//! # drop(chat);
//! backplane.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Options
//!
//! All in [`PostgresOptions`] (public fields, builder methods), each with its default:
//!
//! | option | default | what it does |
//! |---|---|---|
//! | connection string ([`PostgresOptions::new`]) | required | URL or `key=value`; the password is never logged (`Debug` redacts it) |
//! | `ssl_mode` (`sslmode=` in the string) | `prefer` | `disable`, `prefer`, `require`, `verify-ca`, `verify-full`, as libpq: see [`SslMode`] for what each risks |
//! | `ssl_root_cert` (`sslrootcert=`) | system store | CAs trusted for `verify-*`: a PEM file, or `system` |
//! | `schema_name` | `signalr` | schema of the tables; created at start |
//! | `table_slug_generator` | hub name lower-cased | table `{slug}_messages` |
//! | `channel_name_generator` | `{schema}.{slug}` | notification channel of each table (hashed to fit 63 bytes) |
//! | `retention` | 1 h | rows older than this are deleted; also the longest outage fully repairable |
//! | `retention_interval` / `retention_batch_size` | 60 s / 5,000 rows | how often, and how many rows per `DELETE` |
//! | `inline_threshold` | 5,938 bytes (max) | largest encoded envelope sent inside the notification |
//! | `reconnect_backoff` | 100 ms doubling to 10 s, jitter 0.25 | listener reconnects; never gives up |
//! | `publish_batch_size` / `publish_batch_bytes` | 1,000 / 8 MiB | limits of one publishing transaction |
//! | `publish_linger` | 0 | extra wait for a batch to fill (batches form anyway while one commits) |
//! | `max_envelope_bytes` | 64 MiB | larger publishes fail with `TooLarge` |
//! | `command_timeout` | 10 s | one operation incl. retries; connect timeout |
//! | `synchronous_commit` | `NotifyBeforeFlush` | see [`SynchronousCommit`] for what each choice risks |
//! | `gap_wait` | 1 s | wait for a sequence gap to fill before reading/reporting it |
//! | `catch_up_margin` | `command_timeout` + 2 s | how far before the last sign of life catch-up reads for unknown nodes |
//! | `probe_interval` / `probe_timeout` | 5 s / 5 s | listener probe (`SELECT clock_timestamp()`) |
//! | `keepalive_idle` / `tcp_user_timeout` | 10 s / 15 s | TCP keepalive (interval idle/2, 3 probes) and unacknowledged-data limit |
//! | `application_name` | `signalr-backplane` | prefix of each connection's `application_name` |
//! | `subscription_capacity` | 8,192 events | per-subscription queue; when full the listener waits |
//!
//! # Layout in the database
//!
//! Installed automatically and idempotently (each step under `pg_advisory_xact_lock`, so
//! nodes starting together on an empty database are safe): the schema
//! ([`PostgresOptions::schema_name`], default `signalr`) at start, and per hub, on first
//! publish or subscribe, a table `{slug}_messages` (slug from
//! [`PostgresOptions::table_slug_generator`], default: the lower-cased hub name):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `id` | `bigint` identity, primary key | insertion order, for operators and retention |
//! | `origin` | `bytea` (16 bytes) | the publishing node's id |
//! | `hub` | `text` | the hub (hubs whose slugs collide share a table) |
//! | `seq` | `bigint` | the last sequence number for (origin, hub), from 1, that the row holds |
//! | `payload` | `bytea` | one encoded envelope; a *pack* (byte 255 + the first sequence number as 8 big-endian bytes + the envelopes `first..=seq`, each preceded by its LEB128 length); or a *tombstone* (byte 0 + first sequence number covered) |
//! | `inserted_on` | `timestamptz` default `now()` | age, for retention and catch-up |
//!
//! with `UNIQUE (origin, hub, seq)` (idempotent retries, catch-up by sequence) and an
//! index on `inserted_on` (retention, catch-up of unknown origins). Every identifier is
//! quoted with embedded quotes doubled, so hostile names are inert; schema names over 63
//! bytes or containing NUL are rejected, long slugs are shortened with a hash. The
//! notification channel is `{schema}.{slug}` (shortened with a hash to 63 bytes), so
//! different hubs and different schemas never see each other's notifications.
//!
//! A batch stores each hub's run of consecutive envelopes as one pack row (up to 1 MiB,
//! a run of one as a plain envelope row), so the table pays a heap tuple and three index
//! entries per run, not per envelope. Nodes of versions before packs read a pack row as
//! one corrupt row (they count its numbers as lost when catching up from the table; live
//! notifications are unchanged), so upgrade every node before relying on catch-up.
//! A pack larger than about 2 KB is compressed by PostgreSQL as it is inserted, inside
//! the publishing transaction; the publishing connection asks for LZ4 there
//! (`default_toast_compression`, for its session only) where the server offers it
//! (PostgreSQL 14+ built with LZ4), about four times faster than the default pglz for
//! a 12 KB pack; elsewhere pglz stays. Readers need no setting.
//!
//! # Publishing
//!
//! `publish` numbers the envelope and queues it on its first poll; a per-node publisher
//! task writes everything queued (up to [`PostgresOptions::publish_batch_size`]) as one
//! multi-row `INSERT` per table plus its `pg_notify` calls, in one transaction, one
//! transaction in flight per node (retries and tombstones insert with `ON CONFLICT DO
//! NOTHING`; a batch's first attempt does not need to, and is cheaper without). `publish` returns after the
//! commit (by default, after the flush: see [`SynchronousCommit::NotifyBeforeFlush`]), or
//! with an error; never `Ok` for an envelope that was not stored. Batching
//! is what makes this fast: PostgreSQL serializes all notifying commits cluster-wide.
//!
//! A batch that fails on a connection error is retried idempotently on a fresh
//! connection until [`PostgresOptions::command_timeout`]; then its publishes fail with
//! `BackplaneError::Timeout`. A batch the database refuses for good (permission denied,
//! a constraint) fails at once with `BackplaneError::Backend` carrying a
//! [`PostgresError`]. An error does *not* promise the envelope was not stored: a commit
//! whose acknowledgement was lost may still be delivered. The sequence numbers of a
//! failed batch are covered by tombstone rows (one per hub of the batch, at the run's
//! last sequence number, payload `0x00` + the run's first sequence number as 8
//! big-endian bytes, `ON CONFLICT DO NOTHING`, announced by a reference notification
//! for the run) written in front of the next successful batch, so receivers skip those
//! numbers rather than wait or report loss; if the failed batch did commit after all,
//! its real rows win the conflict and are delivered.
//!
//! Why references name `(origin, hub, seq)` and not the row id: every notification is
//! computed before the `INSERT`, so a batch for one table is a single statement (rows
//! and `pg_notify` calls together, no `RETURNING` round trip), and a retry sends exactly
//! the same statement.
//!
//! # Notification format
//!
//! A notification is text of at most 7,999 bytes (PostgreSQL's limit), on the table's
//! channel, in one of three forms told apart by the first character:
//!
//! - **inline** `i<origin>:<base64>`: `<origin>` is the publishing node id (32 lowercase
//!   hex digits), `<base64>` (standard alphabet, padded) encodes a *pack*: one or more
//!   encoded envelopes (`backplane_core::Envelope::encode`) of that node in sequence
//!   order, each preceded by its length as an unsigned LEB128 varint. Consecutive small
//!   envelopes of one batch share a notification, so a batch of chat messages costs a
//!   few notifications, not one each; receivers drop their own echoes from the header.
//!   An envelope travels inline when its encoding is at most
//!   [`PostgresOptions::inline_threshold`] bytes (default and maximum 5,938, the largest
//!   whose base64 fits next to the header and a cluster-secret tag).
//! - **compressed inline** `z<origin>:<base64>`: the same pack compressed, `<base64>`
//!   encoding the pack's length (LEB128, at most 23,760 bytes) and then the pack as one
//!   LZ4 block. Written instead of `i` whenever it is shorter: a batch's chat envelopes
//!   compress about 3:1 (each repeats its method, group and sender, and carries its text
//!   once per hub protocol), so one notification carries up to four times as many, and
//!   PostgreSQL copies a third of the bytes into its notification queue and to every
//!   listening node. Receivers refuse a pack claiming more than that length or inflating
//!   to anything else. Nodes of versions before this form skip `z` notifications as
//!   malformed: they read those envelopes from the table only once a later notification
//!   they can read (plain, or a reference) reveals the gap, so a steady stream of chat
//!   messages from a compressing node may not reach their clients at all. While any such
//!   node remains, run the upgraded ones with
//!   [`PostgresOptions::compress_notifications`] off.
//! - **reference** `r<origin>:<from>:<to>:<hub>`: rows `from..=to` (decimal sequence
//!   numbers) of `<hub>` (the rest of the text, verbatim) from `<origin>` are in the
//!   table; receivers read them by `(origin, hub, seq)`. Used for larger envelopes
//!   (`from == to`) and for tombstones.
//!
//! Anything else is malformed: receivers log it at warn level and skip it.
//!
//! # Receiving
//!
//! One dedicated LISTEN connection per node, driven through `Connection::poll_message`;
//! a second connection reads rows. Notifications are processed one at a time: own
//! echoes are dropped from the header alone, envelopes are deduplicated by (origin, hub,
//! sequence), and those addressed to another node (`send_to`) are skipped.
//!
//! # Guarantees
//!
//! Promised, for each subscription:
//! - the first event is `Connected`, and `subscribe` returns once LISTEN is active;
//! - every envelope another node published after that is delivered exactly once, in
//!   the origin's publish order, as long as it is still in the table (younger than
//!   [`PostgresOptions::retention`]) when it is needed: across dropped connections
//!   (`Disconnected`, then a catch-up from the table, then `Reconnected`) and across
//!   sequence gaps (read from the table after a bounded [`PostgresOptions::gap_wait`]);
//! - when envelopes could not be recovered (deleted by retention, corrupt), `Reconnected`
//!   says so with `GapRepair::Unrepairable` and counts;
//! - queues are bounded and nothing is dropped for a slow subscriber: the listener waits
//!   (PostgreSQL buffers notifications meanwhile, in its 8 GB queue by default), so
//!   `Lagged` is never reported; a slow subscriber slows the node's other subscriptions.
//!   The publish queue holds exactly the publishes in flight (each `publish` waits for
//!   its commit), so callers bound it by how many they start; it has no limit of its
//!   own, because a publish that had to wait for room before being numbered could be
//!   overtaken by a later one, breaking the first-poll ordering contract.
//!
//! Not promised:
//! - order across origins, or across hubs;
//! - envelopes published before the subscription started (a new subscription never
//!   replays the table);
//! - delivery of envelopes from a node never heard from before that were published
//!   while this node was disconnected *and* earlier than the catch-up window (last time
//!   the listener was known alive, minus [`PostgresOptions::catch_up_margin`]);
//! - durability beyond what [`SynchronousCommit`] promises.
//!
//! # Limits
//!
//! - The listener needs a session: PgBouncer (or any pooler) in *transaction* pooling
//!   mode is not supported for it (LISTEN registrations and notifications belong to a
//!   server session). The other connections also rely on their session (named prepared
//!   statements, `SET synchronous_commit`), so point the backplane at PostgreSQL
//!   directly or at a pool in *session* mode. [`diagnose`]'s notify round trip detects a
//!   pooler that swallows notifications.
//! - A node keeps LISTENing to a hub's channel after its last subscription for that hub
//!   ends (its notifications are still read, then dropped).
//! - TLS uses rustls (no OpenSSL): `sslmode` and `sslrootcert` as libpq reads them
//!   (`sslmode=allow` and client certificates, `sslcert`/`sslkey`, are not supported;
//!   `sslmode=prefer` does not retry without TLS after a failed handshake). Environment
//!   variables (`PGSSLMODE`, ...) and `~/.postgresql/root.crt` are not read: put the
//!   settings in the connection string. libpq ignores `sslmode` on Unix-domain sockets;
//!   here `require` and stronger fail there (PostgreSQL offers no TLS on them): use
//!   `prefer` or `disable` for a socket path.
//! - Envelopes are limited by [`PostgresOptions::max_envelope_bytes`] (64 MiB).
//!
//! # Logs
//!
//! At debug level, with the prefixes of the troubleshooting guide: `[Init]` schema and
//! table creation, `[Listener]` connect/LISTEN/reconnect, `[Publish]` each batch,
//! `[Processor]` each received envelope. Connection strings are never logged.
//! Connections carry `application_name` `signalr-backplane <role> <node id>`
//! (`publisher`, `listener`, `reader`, `retention`), visible in `pg_stat_activity`.

#![forbid(unsafe_code)]

mod backplane;
mod connect;
mod conninfo;
mod context;
mod diagnose;
/// Entry points for the fuzz targets in `fuzz/`; not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod install;
mod listener;
mod names;
mod notification;
mod options;
mod publisher;
mod retention;
mod row;
mod tls;
mod tombstone;

pub use backplane::PostgresBackplane;
/// How the listener retries after its connection dropped (shared by every backplane).
pub use backplane_core::ReconnectBackoff;
pub use connect::PostgresError;
pub use diagnose::{Check, CheckStatus, diagnose};
pub use options::{
    ChannelNameGenerator, DEFAULT_INLINE_THRESHOLD, DEFAULT_SCHEMA, PostgresOptions,
    SynchronousCommit, TableSlugGenerator,
};
pub use tls::{SslMode, SslRootCert};
