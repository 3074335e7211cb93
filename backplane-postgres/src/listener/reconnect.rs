//! The task's loop: serve notifications, commands and probes until the connection fails,
//! then report `Disconnected`, reconnect with backoff (forever), LISTEN again, catch up
//! and report `Reconnected`.

use std::time::Duration;

use futures_util::future::poll_fn;
use tokio_postgres::{AsyncMessage, Client};

use super::connection::{close, open};
use super::state::{Command, Interrupt, ListenConnection, Listener};
use crate::connect::describe;

/// What woke the serving loop. Lives on the stack for one iteration, so the size of
/// the message variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Event {
    Probe,
    Command(Option<Command>),
    Message(Option<Result<AsyncMessage, tokio_postgres::Error>>),
}

impl Listener {
    /// Listen, process, reconnect; until shut down.
    pub(crate) async fn run(mut self, initial: (Client, ListenConnection)) {
        let node = self.shared.node;
        let mut link = Some(initial);
        let mut outage: Option<String> = None;
        let mut attempt: u32 = 0;
        loop {
            let (client, mut connection) = match link.take() {
                Some(link) => link,
                None => {
                    let delay = self.backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::debug!(%node, ?delay, attempt, "[Listener] reconnecting");
                    let mut shutdown = self.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                    match open(&self.shared).await {
                        Ok(link) => link,
                        Err(error) => {
                            tracing::debug!(%node, %error, "[Listener] reconnect failed");
                            if error.is_unreachable() && self.shared.circuit.trip(error.to_string())
                            {
                                tracing::warn!(%node, %error, "[Listener] circuit open: publishes fail at once until the database answers");
                            }
                            continue;
                        }
                    }
                }
            };
            let listening_since = match self.listen_all(&client, &mut connection).await {
                Ok(now) => now,
                Err(reason) => {
                    tracing::debug!(%node, %reason, "[Listener] LISTEN failed");
                    self.report_outage(&mut outage, reason).await;
                    continue;
                }
            };
            if let Some(reason) = outage.take() {
                match self.catch_up().await {
                    Ok(repairs) => {
                        tracing::info!(%node, %reason, "[Listener] reconnected and caught up");
                        self.shared.receive_metrics.reconnected();
                        self.report_reconnected(repairs).await;
                    }
                    Err(Interrupt::Shutdown) => {
                        close(client, connection).await;
                        break;
                    }
                    Err(Interrupt::Lost(reason)) => {
                        tracing::debug!(%node, %reason, "[Listener] catch-up failed; retrying");
                        outage = Some(reason);
                        continue;
                    }
                }
            }
            self.alive_at = listening_since;
            self.shared.receive_metrics.heard();
            attempt = 0;
            if self.shared.circuit.reset() {
                tracing::info!(%node, "[Listener] the database answers again; circuit closed");
            }
            match self.serve(&client, &mut connection).await {
                Interrupt::Shutdown => {
                    close(client, connection).await;
                    break;
                }
                Interrupt::Lost(reason) => {
                    tracing::warn!(%node, %reason, "[Listener] connection lost");
                    drop(client);
                    // Notifications already read are valid: deliver them before
                    // catch-up, so catch-up starts after them.
                    if let Err(Interrupt::Shutdown) = self.drain_pending().await {
                        break;
                    }
                    self.report_outage(&mut outage, reason).await;
                }
            }
        }
        tracing::debug!(%node, "[Listener] stopped");
    }

    /// Process notifications, commands and probes until the connection fails.
    pub(super) async fn serve(
        &mut self,
        client: &Client,
        connection: &mut ListenConnection,
    ) -> Interrupt {
        let mut probe = tokio::time::interval(self.shared.options.probe_interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        let mut stop = self.shutdown.clone();
        loop {
            if let Err(interrupt) = self.drain_pending().await {
                return interrupt;
            }
            let event = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return Interrupt::Shutdown,
                _ = probe.tick() => Event::Probe,
                command = self.commands.recv() => Event::Command(command),
                message = poll_fn(|cx| connection.poll_message(cx)) => Event::Message(message),
            };
            if matches!(event, Event::Message(Some(Ok(_)))) {
                self.shared.receive_metrics.heard();
            }
            let outcome = match event {
                Event::Probe => {
                    let probed = self.probe(client, connection).await;
                    if probed.is_ok() {
                        self.shared.receive_metrics.heard();
                    }
                    probed
                }
                Event::Command(Some(command)) => self.command(command, client, connection).await,
                Event::Command(None) => Err(Interrupt::Shutdown),
                Event::Message(Some(Ok(AsyncMessage::Notification(notification)))) => {
                    self.process(&notification).await
                }
                Event::Message(Some(Ok(_notice))) => Ok(()),
                Event::Message(Some(Err(error))) => Err(Interrupt::Lost(describe(&error))),
                Event::Message(None) => {
                    Err(Interrupt::Lost("the server closed the connection".into()))
                }
            };
            if let Err(interrupt) = outcome {
                return interrupt;
            }
        }
    }

    pub(super) async fn drain_pending(&mut self) -> Result<(), Interrupt> {
        while let Some(notification) = self.pending.pop_front() {
            self.process(&notification).await?;
        }
        Ok(())
    }

    /// The wait before reconnect attempt `attempt`, with a fresh random jitter.
    pub(super) fn backoff(&mut self, attempt: u32) -> Duration {
        let fraction = self.jitter.next_fraction();
        self.shared
            .options
            .reconnect_backoff
            .delay(attempt, fraction)
    }
}
