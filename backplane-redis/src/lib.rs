//! The Redis [`Backplane`](backplane_core::Backplane): a Redis Stream per hub, read from
//! the last id each node saw, so a reconnect resumes exactly where it stopped.
//!
//! Every server instance (node) connects with a [`RedisBackplane`]; nodes that use the
//! same Redis and key prefix see each other's envelopes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use backplane_core::{Backplane, BackplaneHubLifetimeManager};
//! use backplane_redis::{RedisBackplane, RedisOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let options = RedisOptions::new("redis://cache.internal:6379")?;
//! let backplane: Arc<dyn Backplane> = Arc::new(RedisBackplane::connect(options).await?);
//! let chat = BackplaneHubLifetimeManager::new("chat", backplane.clone()).await?;
//! // ... serve connections through `chat` ...
//! # drop(chat);
//! backplane.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Why Streams, not pub/sub
//!
//! Pub/sub forgets: whatever is published while a subscriber's connection is down is
//! gone, which is exactly how ASP.NET Core's Redis backplane loses messages. Pub/sub
//! plus a stream for repair would write everything twice and need a second path to
//! merge. A stream alone is both the transport and the storage: `XADD` appends (and
//! trims: retention), `XREAD BLOCK` from the last id waits for what comes next, and
//! after a dropped connection the same `XREAD` from the same id returns everything
//! missed, in order, once. The cost is one read connection per subscribed hub per node
//! (a blocking read occupies its connection) and a read round trip per
//! [`RedisOptions::block_timeout`] while idle.
//!
//! # Layout in Redis
//!
//! One stream per hub at `{prefix:hub}` ([`RedisOptions::key_prefix`], default
//! `signalr`). Each entry has the fields `o` (origin node id, 16 bytes), `s` (sequence
//! number) and `e` (the encoded envelope), or `t` instead of `e` for a *skipped run*:
//! numbers `t..=s` of a batch that failed, which receivers skip rather than report lost.
//!
//! # Sequencing
//!
//! Numbering, the publish queue, duplicate and gap detection and the `Reconnected`
//! report are `backplane_core::sequencing`'s; this crate moves and stores. `publish`
//! numbers its envelope on first poll; one task per node writes everything queued as one
//! `MULTI` / `XADD`... / `EXEC` pipeline per hub, one at a time, so a node's envelopes
//! enter each stream in sequence order, and returns after `EXEC` succeeded. A batch that
//! fails on a connection error is retried on a fresh connection until
//! [`NodeOptions::command_timeout`](backplane_core::node::NodeOptions::command_timeout) (then `Timeout`); a retry after a lost reply may
//! store a batch twice, and receivers drop the copy by sequence number. An error does
//! *not* promise the envelope was not stored.
//!
//! # Guarantees
//!
//! Promised, for each subscription:
//! - the first event is `Connected`, and `subscribe` returns once the stream's current
//!   end is known;
//! - every envelope another node published after that is delivered exactly once, in the
//!   origin's publish order, while it is still in the stream (within
//!   [`RedisOptions::max_len`] and [`RedisOptions::max_age`]): across dropped
//!   connections (`Disconnected`, then the missed entries, then `Reconnected`);
//! - own echoes are dropped, and envelopes addressed to another node (`send_to`) skipped;
//! - numbers nothing accounts for (trimmed before they were read, or lost with a Redis
//!   that restarted without persistence) are reported with `GapRepair::Unrepairable`
//!   and counted when the origin's next envelope arrives; a restart of a non-persistent
//!   Redis loses whatever was not read yet, and that is all it loses. A reconnect that
//!   finds the stream no longer reaching back to the last entry read says so at once
//!   (`Unrepairable` with `missing: 0` until the counts are known), never `Repaired`;
//! - queues are bounded and nothing is dropped for a slow subscriber (the reader waits;
//!   entries wait in the stream), so `Lagged` is never reported.
//!
//! Not promised: order across origins or hubs; envelopes from before the subscription;
//! loss detection for an origin never heard from before whose first envelopes are gone;
//! durability beyond what the Redis server's persistence settings give (use
//! `appendonly yes` with `appendfsync always` for none lost on a Redis crash).
//!
//! # Redis Cluster
//!
//! A hub's keys are hash-tagged (`{prefix:hub}`), so each hub lives on one slot and its
//! transactions never cross slots; hubs spread over the shards by the hash of
//! `prefix:hub`, so many hubs balance across shards while one busy hub stays on one
//! shard. Batches spanning hubs are written as one transaction per hub. This crate
//! connects to one Redis endpoint: running against a cluster needs the cluster client,
//! which is **not wired in and untested here**.
//!
//! # Limits
//!
//! - TLS (`rediss://`) needs the cargo feature `tls` (rustls, webpki roots).
//! - `XTRIM MINID` uses the publisher's clock: a skewed clock shifts retention by the
//!   skew.
//! - Envelopes are limited by [`NodeOptions::max_envelope_bytes`](backplane_core::node::NodeOptions::max_envelope_bytes) (64 MiB).
//!
//! # Logs
//!
//! At debug level, with the prefixes of the PostgreSQL backplane: `[Init]`,
//! `[Listener]` connect/reconnect, `[Publish]` each batch, `[Processor]` each received
//! envelope. URLs are logged redacted; connections are named
//! `signalr-backplane-<publisher|reader>-<node id>` in `CLIENT LIST`.

#![forbid(unsafe_code)]

mod backplane;
mod context;
mod entry;
mod options;
mod publisher;
mod reader;

pub use backplane::RedisBackplane;
pub use options::{DEFAULT_KEY_PREFIX, RedisOptions};
