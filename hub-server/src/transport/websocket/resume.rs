//! Stateful reconnect over WebSockets: the live connections a client may come back to,
//! and how a new WebSocket reaches the connection it belongs to.
//!
//! A connection whose client asked for stateful reconnect registers its token here for
//! its whole life. When the client opens a new WebSocket with that token (its old one
//! dropped), the endpoint finds the connection here and hands it the upgraded socket; the
//! connection core then resumes on it (see `connection::resume`). An entry goes when its
//! connection ends, after which the token gets 404 like any spent token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::control::Control;
use super::reader::FrameReader;
use super::writer::FrameWriter;
use crate::connection::{self, Accepted, Reattach};
use crate::hub::HubShared;
use backplane_core::lock;

/// An upgraded WebSocket connection, before it is split into its reader and writer.
type Socket = TokioIo<Upgraded>;

/// Where a new WebSocket for a live connection is sent.
#[derive(Debug, Clone)]
pub(crate) struct Reattachment(mpsc::Sender<Socket>);

/// The live connections with stateful reconnect of one hub, by connection token.
#[derive(Debug, Default)]
pub(crate) struct Reattachments {
    /// Behind a mutex held only for map operations, never across an await.
    live: Mutex<HashMap<Box<str>, Reattachment>>,
}

impl Reattachments {
    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Reattachment>> {
        // Every operation leaves the map consistent.
        lock(&self.live)
    }

    /// The live connection `token` belongs to, if it has stateful reconnect.
    pub(crate) fn find(&self, token: &str) -> Option<Reattachment> {
        self.lock().get(token).cloned()
    }
}

/// Serve a connection whose client asked for stateful reconnect, registered under its
/// token until it ends.
pub(super) async fn run(hub: Arc<HubShared>, io: Socket, accepted: Accepted) {
    let Some(token) = accepted
        .token
        .as_ref()
        .map(|lease| Box::from(lease.token()))
    else {
        return super::run(hub, io, accepted).await;
    };
    // One new socket at a time is plenty: a client reconnects once its old one is gone.
    let (sender, receiver) = mpsc::channel(1);
    hub.reattachments
        .lock()
        .insert(Box::clone(&token), Reattachment(sender));
    let chunk = hub.options.websocket_read_buffer_size;
    let (reader, writer) = split(io, chunk);
    let sockets = Sockets { receiver, chunk };
    connection::serve_resumable(hub.clone(), reader, writer, accepted, sockets).await;
    hub.reattachments.lock().remove(&token);
}

/// Split an upgraded socket into the frame reader and writer the core uses.
fn split(
    io: Socket,
    chunk: usize,
) -> (
    FrameReader<ReadHalf<Socket>>,
    FrameWriter<WriteHalf<Socket>>,
) {
    let (read, write) = tokio::io::split(io);
    let control = Arc::new(Control::default());
    (
        FrameReader::new(read, chunk, control.clone()),
        FrameWriter::new(write, control),
    )
}

/// The new WebSockets a client opens for its live connection.
struct Sockets {
    /// Fed by the endpoint, which finds the connection by its token.
    receiver: mpsc::Receiver<Socket>,
    /// The read chunk size of the connection's readers.
    chunk: usize,
}

impl Reattach<FrameReader<ReadHalf<Socket>>, FrameWriter<WriteHalf<Socket>>> for Sockets {
    async fn next(
        &mut self,
    ) -> Option<(
        FrameReader<ReadHalf<Socket>>,
        FrameWriter<WriteHalf<Socket>>,
    )> {
        let io = self.receiver.recv().await?;
        Some(split(io, self.chunk))
    }
}

impl Reattachment {
    /// Hand `io`, a new WebSocket of the client, to its connection. If the connection has
    /// just ended, the socket is dropped, which closes it; the client then starts over.
    pub(super) async fn hand_over(&self, io: Socket) {
        if self.0.send(io).await.is_err() {
            tracing::debug!(
                "a reconnecting client's connection ended before its new WebSocket arrived"
            );
        }
    }
}
