//! Connection lifecycle callbacks: reconnecting, reconnected, closed.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::DisconnectReason;

/// Called when the connection was lost and automatic reconnect starts.
type ReconnectingCallback = Arc<dyn Fn(&DisconnectReason) + Send + Sync>;
/// Called with the new connection id (none when negotiate is skipped) after a reconnect.
type ReconnectedCallback = Arc<dyn Fn(Option<&str>) + Send + Sync>;
/// Called once the connection is closed for good: `None` after `stop`.
type ClosedCallback = Arc<dyn Fn(Option<&DisconnectReason>) + Send + Sync>;

/// The registered lifecycle callbacks. They run on the connection's task, in registration
/// order, without any lock held.
#[derive(Default)]
pub(crate) struct Events {
    /// See [`HubConnection::on_reconnecting`](crate::HubConnection::on_reconnecting).
    reconnecting: Mutex<Vec<ReconnectingCallback>>,
    /// See [`HubConnection::on_reconnected`](crate::HubConnection::on_reconnected).
    reconnected: Mutex<Vec<ReconnectedCallback>>,
    /// See [`HubConnection::on_closed`](crate::HubConnection::on_closed).
    closed: Mutex<Vec<ClosedCallback>>,
}

/// Copies a callback list out of its lock.
fn snapshot<T: Clone>(list: &Mutex<Vec<T>>) -> Vec<T> {
    list.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Appends to a callback list.
fn push<T>(list: &Mutex<Vec<T>>, callback: T) {
    list.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(callback);
}

impl Events {
    pub(crate) fn add_reconnecting(&self, callback: ReconnectingCallback) {
        push(&self.reconnecting, callback);
    }

    pub(crate) fn add_reconnected(&self, callback: ReconnectedCallback) {
        push(&self.reconnected, callback);
    }

    pub(crate) fn add_closed(&self, callback: ClosedCallback) {
        push(&self.closed, callback);
    }

    pub(crate) fn reconnecting(&self, reason: &DisconnectReason) {
        for callback in snapshot(&self.reconnecting) {
            callback(reason);
        }
    }

    pub(crate) fn reconnected(&self, connection_id: Option<&str>) {
        for callback in snapshot(&self.reconnected) {
            callback(connection_id);
        }
    }

    pub(crate) fn closed(&self, reason: Option<&DisconnectReason>) {
        for callback in snapshot(&self.closed) {
            callback(reason);
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("reconnecting", &snapshot(&self.reconnecting).len())
            .field("reconnected", &snapshot(&self.reconnected).len())
            .field("closed", &snapshot(&self.closed).len())
            .finish()
    }
}
