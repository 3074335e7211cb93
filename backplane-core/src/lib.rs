//! The core of the scale-out story: what moves between server instances, and how a hub's
//! messages reach connections wherever they live.
//!
//! - [`Backplane`]: the small, dyn-compatible contract a scale-out backend implements
//!   (publish to every other node, send to one node, subscribe, shut down).
//! - [`Envelope`]: the unit a backplane moves, with its postcard codec.
//! - [`HubLifetimeManager`]: ASP.NET Core's surface (all, all-except, connection(s),
//!   group(s), group-except, user(s), group add/remove), and
//!   [`BackplaneHubLifetimeManager`], its one implementation over any backplane.
//! - [`ConnectionSink`]: how the manager hands bytes to a connection; the server
//!   implements it, so this crate never depends on the server.
//! - [`sequencing`]: per-(origin, hub) numbering, the publish queue, the receiver's
//!   tracker and gap reporting, so a backend implements transport and storage only.
//! - [`node`]: a log-based node's lifecycle, publisher loop and reader loop, and the
//!   options they share, so a backend on an ordered log (Redis Streams, NATS
//!   JetStream) writes only its transport.
//! - [`lock`]: the poison-tolerant lock every crate uses.
//! - [`EnvelopeCodec`] and [`ClusterSecret`]: envelopes signed and verified with a
//!   cluster secret (HMAC-SHA256), so forged backplane traffic is dropped and counted.
//! - [`CircuitBreaker`]: publishes fail at once while a backend is unreachable.
//! - [`publish_health`]: whether this node's publishes go through, for health endpoints
//!   (in [`BackplaneHealth`]).
//! - [`doctor`]: an end-to-end round trip between two nodes, for health checks.
//! - [`metrics`]: the backplane metrics' names and the handles backends record through.
//! - `testkit` (feature `testkit`): the conformance suite every backplane runs.
//!
//! # Example
//!
//! Two nodes on the in-memory backplane would look like this; any `Arc<dyn Backplane>`
//! works the same way.
//!
//! ```
//! use std::sync::Arc;
//! use backplane_core::{
//!     Backplane, BackplaneHubLifetimeManager, ConnectionSink, DeliveryError,
//!     HubLifetimeManager, LocalConnection, Protocol, SerializedMessage,
//! };
//!
//! // The server side of a connection: here, print what arrives.
//! #[derive(Debug)]
//! struct Printer;
//! impl ConnectionSink for Printer {
//!     fn deliver(&self, message: &SerializedMessage) -> Result<(), DeliveryError> {
//!         let frame = message.get(Protocol::Json).ok_or(DeliveryError::MissingEncoding(Protocol::Json))?;
//!         println!("{}", String::from_utf8_lossy(frame));
//!         Ok(())
//!     }
//! }
//!
//! # async fn example(backplane: Arc<dyn Backplane>) -> Result<(), backplane_core::HubError> {
//! let manager = BackplaneHubLifetimeManager::new("chat", backplane).await?;
//! manager.on_connected(LocalConnection::new("conn-1", Some("alice".into()), Arc::new(Printer))).await?;
//! manager.add_to_group(&"conn-1".into(), "room").await?;
//! let frame = br#"{"type":1,"target":"ReceiveMessage","arguments":["alice","hi"]}"#.to_vec();
//! let mut bytes = frame;
//! bytes.push(0x1e);
//! manager.send_group("room", SerializedMessage::new().with(Protocol::Json, bytes)).await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod backoff;
mod backplane;
mod circuit;
mod client_results;
pub mod doctor;
mod envelope;
mod id;
mod lifetime;
mod local_order;
mod manager;
mod message;
pub mod metrics;
pub mod node;
pub mod publish_health;
mod registry;
pub mod sequencing;
mod sync;
#[cfg(feature = "testkit")]
pub mod testkit;
mod trust;

pub use backoff::{Jitter, ReconnectBackoff};
pub use backplane::{Backplane, BackplaneError, BackplaneEvent, GapRepair, Subscription};
pub use circuit::CircuitBreaker;
pub use client_results::{
    ClientAnswer, ClientInvocation, ClientOutcome, ClientResult, ClientResultError,
};
pub use envelope::{
    Ack, CodecError, Envelope, EnvelopeKind, GroupAction, GroupCommand, GroupRefusal, Target,
};
pub use id::{ConnectionId, NodeId, NodeTag, ParseNodeIdError};
pub use lifetime::{BackplaneHealth, BackplaneHubLifetimeManager, BackplaneStatus, ManagerOptions};
pub use manager::{ConnectionSink, DeliveryError, HubError, HubLifetimeManager, LocalConnection};
pub use message::{Protocol, SerializedMessage};
pub use publish_health::{FailureKind, PublishFailing};
pub use sync::{lock, read, write};
pub use trust::{ClusterSecret, EnvelopeCodec, MIN_SECRET_LEN, TAG_LEN};
