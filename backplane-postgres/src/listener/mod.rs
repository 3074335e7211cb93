//! The receiving side: one task per node holding one dedicated LISTEN connection.
//!
//! The task drives its connection itself through `Connection::poll_message` (the plain
//! `Connection` future would silently discard notifications), and processes
//! notifications one at a time, so a node's envelopes reach subscriptions in sequence
//! order even when one of them must be read from the table. Table reads go through a
//! second connection (the *reader*), never the listening one: while the task waits for
//! a read or for a full subscription queue it simply stops reading the listening socket,
//! and PostgreSQL buffers the notifications meanwhile (backpressure, nothing dropped).
//!
//! After the listening connection drops, the task reports `Disconnected`, reconnects with
//! backoff (forever), LISTENs again, and only then reads from the table what it missed:
//! for origins it knows, every row after the last sequence it delivered; for origins it
//! never heard from, rows inserted since it was last known to be listening (minus a
//! margin covering transactions in flight). Everything is delivered once, in per-origin
//! order, and `Reconnected` reports whether the gap was fully repaired.
//!
//! The files, one concern each, all adding to the one [`Listener`]:
//! - `state.rs`: what the task holds, the requests it takes;
//! - `reconnect.rs`: the loop (serve, reconnect with backoff, catch up);
//! - `connection.rs`: the listening connection, LISTEN, the liveness probe;
//! - `subscribe.rs`: subscribe commands;
//! - `decode.rs`: notifications as they arrive;
//! - `reads.rs`, `repair.rs`, `catch_up.rs`: rows read from the table, gap repair,
//!   catch-up after a reconnect;
//! - `fanout.rs`: delivery to the subscriptions.

mod catch_up;
mod connection;
mod decode;
mod fanout;
mod reads;
mod reconnect;
mod repair;
mod state;
mod subscribe;

pub(crate) use connection::open;
pub(crate) use state::{Command, Listener};
