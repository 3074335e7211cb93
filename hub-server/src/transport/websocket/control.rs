//! What the reading half of a WebSocket asks its writing half to send.

use std::sync::Mutex;

use backplane_core::lock;
use bytes::Bytes;
use tokio::sync::Notify;

/// The WebSocket close status codes this server sends (RFC 6455, 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCode {
    /// 1000: the connection ended as intended (also after a hub-level error, which the
    /// hub Close message explains, as ASP.NET Core does).
    Normal,
    /// 1002: the client broke the WebSocket protocol.
    ProtocolError,
    /// 1007: a text message is not UTF-8.
    InvalidPayload,
}

impl CloseCode {
    /// The code on the wire.
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
        }
    }
}

/// Shared by the two halves of one WebSocket.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// What is waiting to be sent.
    state: Mutex<ControlState>,
    /// Wakes the writing half when something was left for it.
    wake: Notify,
}

#[derive(Debug, Default)]
struct ControlState {
    /// The payload of the latest ping not yet answered (RFC 6455 allows answering only
    /// the most recent one).
    pong: Option<Bytes>,
    /// How the connection must close, when the reader found a protocol violation.
    close: Option<CloseCode>,
}

impl Control {
    /// Ask the writer to answer a ping with `payload`.
    pub(crate) fn pong(&self, payload: &[u8]) {
        self.lock().pong = Some(Bytes::copy_from_slice(payload));
        self.wake.notify_one();
    }

    /// Ask the writer to close with `code` when the connection ends.
    pub(crate) fn close_with(&self, code: CloseCode) {
        self.lock().close.get_or_insert(code);
    }

    /// The pong to send, waiting until there is one.
    pub(crate) async fn next_pong(&self) -> Bytes {
        loop {
            let notified = self.wake.notified();
            if let Some(payload) = self.lock().pong.take() {
                return payload;
            }
            notified.await;
        }
    }

    /// The code to close with.
    pub(crate) fn close_code(&self) -> CloseCode {
        self.lock().close.unwrap_or(CloseCode::Normal)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        // Each operation is one assignment: a panic cannot leave the state inconsistent.
        lock(&self.state)
    }
}
