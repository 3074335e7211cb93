//! A log-based node, written once for every backend that stores envelopes in an
//! ordered log (Redis Streams, NATS JetStream): the backend implements transport and
//! storage only.
//!
//! - [`NodeRuntime`]: the node's lifecycle (publish queue, each hub's subscriptions and
//!   reader task, hub routes, shutdown), behind the backend's
//!   [`Backplane`](crate::Backplane) implementation.
//! - [`PublisherTask`] over a [`BatchStore`] ("append this hub's part"): batching,
//!   retries with backoff until the command timeout, completion, skipped runs.
//! - [`run_reader`] over a [`LogReader`] ("read from here"): reconnects with backoff,
//!   `Disconnected` / `Reconnected` reports, accounting and fan-out ([`HubReading`]).
//! - [`NodeOptions`]: the options every such backend shares, with their defaults and
//!   validation.

mod options;
mod publisher;
mod reader;
mod runtime;

use std::fmt;

pub use options::{NodeOptions, redact_url};
pub use publisher::{BatchStore, PublishLimits, PublisherTask, WriteError};
pub use reader::{HubReading, LogReader, ReadStop, run_reader};
pub use runtime::NodeRuntime;

use crate::backplane::BackplaneError;

/// A backend's error as a [`BackplaneError::Backend`], with what was being done
/// (`"connecting to Redis: ..."`). Pass only errors whose message names no secret.
pub fn backend_error(context: &str, error: impl fmt::Display) -> BackplaneError {
    BackplaneError::backend(format!("{context}: {error}"))
}
