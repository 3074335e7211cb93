//! Per-origin sequencing, written once for every backplane.
//!
//! Every envelope carries (origin node, sequence number per hub, from 1, no holes). That
//! is how receivers deliver exactly once and notice a missed envelope exactly. This
//! module holds both ends, so a backend only moves and stores envelopes:
//!
//! - sending: [`PublishQueue`] numbers each publish on its first poll and queues it;
//!   the backend's writer task takes ordered batches ([`PublishQueue::next_batch`]),
//!   writes them, and completes each [`Pending`]. A batch that failed for good leaves
//!   holes in the numbering: [`runs_of`] turns it into [`SkippedRun`]s the backend
//!   stores in front of its next batch, so receivers skip those numbers instead of
//!   reporting loss.
//! - receiving: [`Tracker`] remembers the last sequence number delivered per (hub,
//!   origin) and classifies what arrives ([`Observation`]: first, next, duplicate, or a
//!   gap naming the range to read back); [`RepairTally`] counts what a catch-up or a
//!   gap repair recovered and lost, and says so as the [`GapRepair`](crate::GapRepair)
//!   of a [`BackplaneEvent::Reconnected`](crate::BackplaneEvent::Reconnected).
//! - reading a log (Redis Streams, NATS JetStream): [`HubInbox`] turns each [`Stored`]
//!   item into events (echo drop, tracker, decode, destination filter, tally) and
//!   [`HubSubscribers`] fans them out to a hub's subscriptions with backpressure.
//!
//! The conformance suite's repair cases (`testkit`, with a cut hook) prove a backend
//! uses these correctly: nothing lost or duplicated across dropped connections.

mod inbox;
mod queue;
mod repair;
mod tracker;

pub use inbox::{Accepted, HubInbox, HubSubscribers, Outage, Stored};
pub use queue::{Pending, PublishQueue, Sequencer, SkippedRun, runs_of};
pub use repair::RepairTally;
pub use tracker::{Observation, Tracker};
