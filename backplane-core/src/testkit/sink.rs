//! A connection sink that records what it receives, for tests.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::manager::{ConnectionSink, DeliveryError};
use crate::message::{Protocol, SerializedMessage};
use crate::sync::lock;

/// A [`ConnectionSink`] that keeps every message it is given, and lets a test wait for
/// one. Messages are identified by their JSON encoding as text (the test's "label").
#[derive(Default)]
pub struct RecordingSink {
    /// Labels of the messages received, in order.
    received: Mutex<Vec<String>>,
    /// Wakes waiters on every delivery.
    delivered: Notify,
}

impl RecordingSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A message whose JSON encoding is `label` (and whose MessagePack encoding is the
    /// same bytes, so any connection can take it).
    pub fn message(label: &str) -> SerializedMessage {
        SerializedMessage::new()
            .with(Protocol::Json, label.as_bytes().to_vec())
            .with(Protocol::MessagePack, label.as_bytes().to_vec())
    }

    /// Labels of every message received so far, in order.
    pub fn received(&self) -> Vec<String> {
        lock(&self.received).clone()
    }

    /// Wait until a message with `label` has arrived; the labels received up to and
    /// including it are returned and removed from the sink.
    ///
    /// # Panics
    ///
    /// Panics if it does not arrive within `timeout`, naming what arrived instead.
    pub async fn take_until(&self, label: &str, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.delivered.notified();
            {
                let mut received = lock(&self.received);
                if let Some(position) = received.iter().position(|l| l == label) {
                    return received.drain(..=position).collect();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "message {label:?} did not arrive within {timeout:?}; received instead: {:?}",
                    self.received()
                );
            }
        }
    }
}

impl ConnectionSink for RecordingSink {
    fn deliver(&self, message: &SerializedMessage) -> Result<(), DeliveryError> {
        let bytes = message
            .get(Protocol::Json)
            .ok_or(DeliveryError::MissingEncoding(Protocol::Json))?;
        let label = String::from_utf8_lossy(bytes).into_owned();
        lock(&self.received).push(label);
        self.delivered.notify_waiters();
        Ok(())
    }
}

impl fmt::Debug for RecordingSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingSink")
            .field("received", &self.received())
            .finish()
    }
}
