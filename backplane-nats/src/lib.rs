//! The NATS JetStream [`Backplane`](backplane_core::Backplane): one stream per cluster,
//! a subject per hub, and a consumer per subscribed hub that resumes after the last
//! stream sequence its node read, so a reconnect continues exactly where it stopped.
//!
//! ```no_run
//! use std::sync::Arc;
//! use backplane_core::{Backplane, BackplaneHubLifetimeManager};
//! use backplane_nats::{NatsBackplane, NatsOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let options = NatsOptions::new("nats://nats.internal:4222")?;
//! let backplane: Arc<dyn Backplane> = Arc::new(NatsBackplane::connect(options).await?);
//! let chat = BackplaneHubLifetimeManager::new("chat", backplane.clone()).await?;
//! // ... serve connections through `chat` ...
//! # drop(chat);
//! backplane.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Why JetStream, one stream per cluster
//!
//! Core NATS forgets: a subscriber whose connection is down misses what is published
//! meanwhile. A JetStream stream is the transport and the storage at once: publishing
//! with an acknowledgement stores, a consumer started *by sequence* replays, retention
//! (`max_age`, `max_bytes`, `max_messages`) trims. One stream per cluster
//! ([`NatsOptions::prefix`], default `signalr`) with a subject per hub keeps the server's
//! object count flat however many hubs there are (streams are the heavy objects in a
//! JetStream cluster: each is a replicated log); each node's consumer filters its hub's
//! subject, so no hub processes another's envelopes.
//!
//! # Layout in NATS
//!
//! Stream `<prefix>`, subjects `<prefix>.>`; hub `H` publishes on
//! `<prefix>.h<base64url(H)>`, so no hub name can become a wildcard (`*`, `>`) or split
//! into tokens on `.`. Each message has headers `o` (origin node id), `s` (sequence
//! number), `Nats-Msg-Id`, and either the encoded envelope as payload (or one chunk of
//! it, `c: <index>/<count>`) or `t` instead: a *skipped run* `t..=s` of a batch that
//! failed, which receivers skip rather than report lost.
//!
//! # Sequencing
//!
//! Numbering, the publish queue, duplicate and gap detection and the `Reconnected`
//! report are `backplane_core::sequencing`'s; this crate moves and stores. `publish`
//! numbers its envelope on first poll; one task per node sends each batch's messages
//! pipelined and awaits JetStream's acknowledgements in order, and a `publish` returns
//! after its envelope was acknowledged. Retries (after a lost acknowledgement or a
//! dropped connection, until [`NodeOptions::command_timeout`](backplane_core::node::NodeOptions::command_timeout)) resend from the first
//! unacknowledged message; JetStream drops copies by `Nats-Msg-Id` within
//! [`NatsOptions::duplicate_window`]. An error does *not* promise the envelope was not
//! stored.
//!
//! # Large envelopes: chunked
//!
//! NATS refuses messages above the server's `max_payload` (1 MiB by default, 64 MiB at
//! most). Envelopes larger than that less 1 KiB are split into chunks sent as
//! consecutive messages (one origin's messages are consecutive in its hub's subject) and
//! reassembled by receivers; [`NodeOptions::max_envelope_bytes`](backplane_core::node::NodeOptions::max_envelope_bytes) (64 MiB) is the limit
//! (`TooLarge` above it, before numbering).
//!
//! # Guarantees
//!
//! Promised, for each subscription:
//! - the first event is `Connected`, and `subscribe` returns once its consumer runs;
//! - every envelope another node published after that is delivered exactly once, in
//!   the origin's publish order, while it is still in the stream (within retention):
//!   across dropped connections (`Disconnected`, then the missed messages, then
//!   `Reconnected`);
//! - own echoes are dropped, and envelopes addressed to another node (`send_to`) skipped;
//! - numbers nothing accounts for (trimmed before they were read, or lost with a server
//!   using memory storage) are reported with `GapRepair::Unrepairable`; a reconnect that
//!   finds the stream no longer reaching back to the last message read says so at once;
//! - nothing is dropped for a slow subscriber (the reader waits; messages wait in the
//!   stream), so `Lagged` is never reported.
//!
//! Not promised: order across origins or hubs; envelopes from before the subscription;
//! durability beyond the stream's storage (file storage, the default, survives a server
//! restart; a machine crash may lose what the server had not synced yet). Trimming of
//! *other* hubs' messages past the last one a node read makes a reconnect report
//! possible loss (`missing: 0`) conservatively.
//!
//! # Logs
//!
//! At debug level, with the prefixes of the other backplanes: `[Init]`, `[Listener]`
//! connection events and consumer re-creation, `[Publish]` each batch, `[Processor]`
//! each received envelope. URLs are logged redacted; the connection is named
//! `signalr-backplane-<node id>` in the server's `/connz`.

#![forbid(unsafe_code)]

mod backplane;
mod context;
mod options;
mod publisher;
mod reader;
mod wire;

pub use backplane::NatsBackplane;
pub use options::{DEFAULT_PREFIX, NatsCredentials, NatsOptions, Storage};
