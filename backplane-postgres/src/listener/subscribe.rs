//! Subscribe commands: install the hub's table, LISTEN to its channel if new, and add
//! the subscription's queue.

use std::collections::HashMap;

use backplane_core::{BackplaneError, BackplaneEvent};
use tokio_postgres::Client;

use super::state::{Channel, Command, Interrupt, ListenConnection, Listener};
use crate::connect::PostgresError;
use crate::names::quote_ident;

impl Listener {
    pub(super) async fn command(
        &mut self,
        command: Command,
        client: &Client,
        connection: &mut ListenConnection,
    ) -> Result<(), Interrupt> {
        let Command::Subscribe {
            hub,
            table,
            events,
            reply,
        } = command;
        let shared = self.shared.clone();
        // Twice: the reader connection may have died since its last use.
        let mut installed = Ok(());
        for _ in 0..2 {
            installed = match self.reader().await {
                Ok(reader) => shared
                    .installed
                    .ensure(reader, &shared.options.schema_name, &table)
                    .await
                    .map_err(BackplaneError::from),
                Err(Interrupt::Lost(reason)) => Err(BackplaneError::from(PostgresError::message(
                    "opening the reader connection",
                    reason,
                ))),
                Err(Interrupt::Shutdown) => return Err(Interrupt::Shutdown),
            };
            if installed.is_ok() {
                break;
            }
            self.reader = None;
        }
        if let Err(error) = installed {
            let _ = reply.send(Err(error));
            return Ok(());
        }
        if !self.channels.contains_key(&table.channel) {
            let sql = format!("LISTEN {}", quote_ident(&table.channel));
            let listened = match self
                .within_command_timeout(connection, "LISTEN", client.batch_execute(&sql))
                .await
            {
                Ok(()) => self.database_time(client, connection).await,
                Err(reason) => Err(reason),
            };
            let listening_since = match listened {
                Ok(time) => time,
                Err(reason) => {
                    let _ = reply.send(Err(BackplaneError::from(PostgresError::message(
                        "listening to the hub's channel",
                        reason.clone(),
                    ))));
                    return Err(Interrupt::Lost(reason));
                }
            };
            tracing::debug!(node = %shared.node, channel = %table.channel, table = %table.qualified, "[Listener] LISTEN");
            self.channels.insert(
                table.channel.clone(),
                Channel {
                    table: table.clone(),
                    hubs: HashMap::new(),
                    listening_since,
                },
            );
        }
        // A fresh queue has room for its first event.
        let _ = events.try_send(BackplaneEvent::Connected);
        if reply.send(Ok(())).is_ok() {
            let channel = self
                .channels
                .get_mut(&table.channel)
                .expect("inserted above");
            let senders = channel.hubs.entry(hub.clone()).or_default();
            // Subscriptions dropped since the last envelope for this hub are only noticed
            // on the next delivery: prune them now, so that a subscription replacing the
            // last one starts afresh, as if it had been noticed.
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                self.tracker.forget_hub(&hub);
            }
            senders.push(events);
            tracing::debug!(node = %shared.node, hub, "[Listener] subscribed");
        }
        Ok(())
    }
}
