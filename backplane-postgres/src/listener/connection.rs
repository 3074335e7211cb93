//! The listening connection: opening it, LISTEN on every channel, queries on it while
//! notifications keep arriving ([`drive`]), the liveness probe, and closing it ([`close`]).

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, SystemTime};

use futures_util::future::poll_fn;
use tokio_postgres::{AsyncMessage, Client};

use super::state::{Interrupt, ListenConnection, Listener};
use crate::connect::{self, PostgresError, Role, describe};
use crate::context::NodeContext;
use crate::names::quote_ident;

/// Open the listening connection (used at start, so a bad configuration fails fast).
pub(crate) async fn open(
    shared: &NodeContext,
) -> Result<(Client, ListenConnection), PostgresError> {
    connect::connect_raw(&shared.options, Role::Listener, shared.node).await
}

impl Listener {
    /// LISTEN every channel on a fresh connection; the database time afterwards.
    pub(super) async fn listen_all(
        &mut self,
        client: &Client,
        connection: &mut ListenConnection,
    ) -> Result<SystemTime, String> {
        let sql: String = self
            .channels
            .keys()
            .map(|channel| format!("LISTEN {};", quote_ident(channel)))
            .collect();
        if !sql.is_empty() {
            self.within_command_timeout(connection, "LISTEN", client.batch_execute(&sql))
                .await?;
        }
        let now = self.database_time(client, connection).await?;
        tracing::debug!(node = %self.shared.node, channels = self.channels.len(), "[Listener] connected and listening");
        Ok(now)
    }

    /// The database's clock, read over the listening connection: everything committed
    /// before it has been read from the socket once this returns.
    pub(super) async fn database_time(
        &mut self,
        client: &Client,
        connection: &mut ListenConnection,
    ) -> Result<SystemTime, String> {
        let query = client.query_one("SELECT clock_timestamp()", &[]);
        let row = self
            .within_command_timeout(connection, "query", query)
            .await?;
        Ok(row.get(0))
    }

    /// Run `query` (a statement on the listening connection's client, `what` in
    /// messages) within `command_timeout`, notifications that arrive meanwhile kept for
    /// later ([`drive`]); the error says why it failed.
    pub(super) async fn within_command_timeout<T>(
        &mut self,
        connection: &mut ListenConnection,
        what: &str,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, String> {
        let timeout = self.shared.options.command_timeout;
        let limit = self.shared.options.max_pending_notifications;
        tokio::time::timeout(timeout, drive(connection, &mut self.pending, limit, query))
            .await
            .map_err(|_| format!("{what} not answered within {timeout:?}"))??
            .map_err(|e| describe(&e))
    }

    /// A tiny query with a deadline: proves the connection is alive, and refreshes the
    /// database time catch-up would start from.
    pub(super) async fn probe(
        &mut self,
        client: &Client,
        connection: &mut ListenConnection,
    ) -> Result<(), Interrupt> {
        let timeout = self.shared.options.probe_timeout;
        let query = client.query_one("SELECT clock_timestamp()", &[]);
        let answer = tokio::time::timeout(timeout, drive(connection, &mut self.pending, self.shared.options.max_pending_notifications, query))
            .await
            .map_err(|_| {
                let reason = format!("the database did not answer the listener's probe within {timeout:?}");
                // Publishes would wait out their timeout too: fail them at once.
                if self.shared.circuit.trip(reason.clone()) {
                    tracing::warn!(node = %self.shared.node, %reason, "[Listener] circuit open: publishes fail at once until the database answers");
                }
                Interrupt::Lost(reason)
            })?
            .map_err(Interrupt::Lost)?
            .map_err(|e| Interrupt::Lost(describe(&e)))?;
        // Everything committed before this instant has been read from the socket.
        self.alive_at = answer.get(0);
        self.tracker
            .forget_older_than(self.shared.options.retention + Duration::from_secs(60));
        Ok(())
    }
}

/// Poll `future` (a query on the listening connection's client) while driving the
/// connection, stashing notifications that arrive meanwhile in `pending`.
///
/// At most `limit` notifications are held: past that, this gives up as if the
/// connection were lost, so the listener reconnects and reads what it missed from the
/// table (a flood of notifications cannot grow memory without bound).
pub(super) async fn drive<F: Future>(
    connection: &mut ListenConnection,
    pending: &mut VecDeque<tokio_postgres::Notification>,
    limit: usize,
    future: F,
) -> Result<F::Output, String> {
    futures_util::pin_mut!(future);
    loop {
        tokio::select! {
            biased;
            output = &mut future => return Ok(output),
            message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(_))) if pending.len() >= limit => {
                    return Err(format!(
                        "more than {limit} notifications arrived while waiting for a query on the listening connection; reconnecting to read them from the table"
                    ));
                }
                Some(Ok(AsyncMessage::Notification(notification))) => pending.push_back(notification),
                Some(Ok(_notice)) => {}
                Some(Err(error)) => return Err(describe(&error)),
                None => return Err("the server closed the connection".into()),
            },
        }
    }
}

/// How long a stopping listener waits for the server to see its connection closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Ends the listening connection as PostgreSQL expects: with the client gone the driver
/// sends `Terminate` and shuts the socket down. Dropped unread instead, the socket is
/// reset and the server logs "could not receive data from client: Connection reset by
/// peer" for every node that stops. Notifications that arrive meanwhile are not
/// delivered (the node is stopping); a server that does not answer within
/// [`CLOSE_TIMEOUT`] is left.
pub(super) async fn close(client: Client, mut connection: ListenConnection) {
    drop(client);
    let closing =
        async { while let Some(Ok(_)) = poll_fn(|cx| connection.poll_message(cx)).await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}
