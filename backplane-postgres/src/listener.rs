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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backplane_core::sequencing::{Observation, RepairTally, Tracker};
use backplane_core::{
    BackplaneError, BackplaneEvent, CodecError, Envelope, EnvelopeCodec, GapRepair, Jitter, NodeId,
};
use futures_util::StreamExt as _;
use futures_util::future::poll_fn;
use postgres_types::ToSql;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client, Row};

use crate::connect::{self, PostgresError, Role, describe, is_transient};
use crate::names::{TableNames, quote_ident};
use crate::notification::{self, Notification};
use crate::shared::Shared;
use crate::tombstone::{self, Reading};

/// The listening connection's socket half, driven by this task.
pub(crate) type ListenConnection = connect::PgConnection;

/// A request to the listener task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start delivering `hub`'s envelopes to `events`; reply once LISTEN is active.
    Subscribe {
        hub: String,
        table: Arc<TableNames>,
        events: mpsc::Sender<BackplaneEvent>,
        reply: oneshot::Sender<Result<(), BackplaneError>>,
    },
}

/// What woke the serving loop. Lives on the stack for one iteration, so the size of
/// the message variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Event {
    Probe,
    Command(Option<Command>),
    Message(Option<Result<AsyncMessage, tokio_postgres::Error>>),
}

/// Why serving stopped.
#[derive(Debug)]
enum Interrupt {
    /// The node is shutting down.
    Shutdown,
    /// The listening (or reading) connection failed; reconnect and catch up.
    Lost(String),
}

/// One LISTENed channel: a table and the subscriptions of the hubs stored in it.
#[derive(Debug)]
struct Channel {
    table: Arc<TableNames>,
    /// Subscriptions per hub (several hubs can share a table when their slugs collide).
    hubs: HashMap<String, Vec<mpsc::Sender<BackplaneEvent>>>,
    /// Database time when this channel was first LISTENed: catch-up never reads rows of
    /// unknown origins from before it.
    listening_since: SystemTime,
}

/// A row read from a messages table.
#[derive(Debug)]
struct StoredRow {
    origin: NodeId,
    hub: String,
    seq: u64,
    /// An encoded envelope, or a tombstone.
    payload: Vec<u8>,
    /// Whether the payload is a tombstone (verified, with a cluster secret).
    tombstone: Reading,
}

impl StoredRow {
    /// The first sequence number this row accounts for.
    fn first_seq(&self) -> u64 {
        match self.tombstone {
            Reading::Covers(first) => first,
            Reading::NotATombstone | Reading::Forged => self.seq,
        }
    }
}

/// What happened to the envelopes of one gap or one catch-up, per hub.
type Repair = RepairTally;

/// Where missing envelopes should have been, for [`RepairTally::outcome`].
const STORAGE: &str = "the table";

/// The listener task's state.
pub(crate) struct Listener {
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    shutdown: watch::Receiver<bool>,
    channels: HashMap<String, Channel>,
    tracker: Tracker,
    /// The connection for table reads, opened on demand.
    reader: Option<Client>,
    /// Database time when the listener was last known to be listening with everything
    /// before it received; catch-up for unknown origins starts there (minus a margin).
    alive_at: SystemTime,
    /// Notifications read from the socket while waiting for a query on the listening
    /// connection (LISTEN, probe); processed before anything newer.
    pending: VecDeque<tokio_postgres::Notification>,
    /// Spreads reconnect attempts of nodes that lost the database together.
    jitter: Jitter,
}

/// Open the listening connection (used at start, so a bad configuration fails fast).
pub(crate) async fn open(shared: &Shared) -> Result<(Client, ListenConnection), PostgresError> {
    connect::connect_raw(&shared.options, Role::Listener, shared.node).await
}

impl Listener {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            jitter: Jitter::new(shared.node),
            shared,
            commands,
            shutdown,
            channels: HashMap::new(),
            tracker: Tracker::default(),
            reader: None,
            alive_at: SystemTime::now(),
            pending: VecDeque::new(),
        }
    }

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
                        self.report_reconnected(repairs).await;
                    }
                    Err(Interrupt::Shutdown) => break,
                    Err(Interrupt::Lost(reason)) => {
                        tracing::debug!(%node, %reason, "[Listener] catch-up failed; retrying");
                        outage = Some(reason);
                        continue;
                    }
                }
            }
            self.alive_at = listening_since;
            attempt = 0;
            if self.shared.circuit.reset() {
                tracing::info!(%node, "[Listener] the database answers again; circuit closed");
            }
            match self.serve(&client, &mut connection).await {
                Interrupt::Shutdown => break,
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

    /// Report `Disconnected` once per outage.
    async fn report_outage(&mut self, outage: &mut Option<String>, reason: String) {
        if outage.is_none() {
            self.broadcast(|| BackplaneEvent::Disconnected {
                reason: reason.clone(),
            })
            .await;
            *outage = Some(reason);
        }
    }

    /// LISTEN every channel on a fresh connection; the database time afterwards.
    async fn listen_all(
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
            let timeout = self.shared.options.command_timeout;
            tokio::time::timeout(
                timeout,
                drive(
                    connection,
                    &mut self.pending,
                    self.shared.options.max_pending_notifications,
                    client.batch_execute(&sql),
                ),
            )
            .await
            .map_err(|_| format!("LISTEN not answered within {timeout:?}"))??
            .map_err(|e| describe(&e))?;
        }
        let now = self.database_time(client, connection).await?;
        tracing::debug!(node = %self.shared.node, channels = self.channels.len(), "[Listener] connected and listening");
        Ok(now)
    }

    /// The database's clock, read over the listening connection: everything committed
    /// before it has been read from the socket once this returns.
    async fn database_time(
        &mut self,
        client: &Client,
        connection: &mut ListenConnection,
    ) -> Result<SystemTime, String> {
        let timeout = self.shared.options.command_timeout;
        let query = client.query_one("SELECT clock_timestamp()", &[]);
        let row = tokio::time::timeout(
            timeout,
            drive(
                connection,
                &mut self.pending,
                self.shared.options.max_pending_notifications,
                query,
            ),
        )
        .await
        .map_err(|_| format!("query not answered within {timeout:?}"))??
        .map_err(|e| describe(&e))?;
        Ok(row.get(0))
    }

    /// Process notifications, commands and probes until the connection fails.
    async fn serve(&mut self, client: &Client, connection: &mut ListenConnection) -> Interrupt {
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
            let outcome = match event {
                Event::Probe => self.probe(client, connection).await,
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

    async fn drain_pending(&mut self) -> Result<(), Interrupt> {
        while let Some(notification) = self.pending.pop_front() {
            self.process(&notification).await?;
        }
        Ok(())
    }

    /// A tiny query with a deadline: proves the connection is alive, and refreshes the
    /// database time catch-up would start from.
    async fn probe(
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

    async fn command(
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
            let timeout = shared.options.command_timeout;
            let listened = tokio::time::timeout(
                timeout,
                drive(
                    connection,
                    &mut self.pending,
                    self.shared.options.max_pending_notifications,
                    client.batch_execute(&sql),
                ),
            )
            .await;
            let listened = match listened {
                Ok(Ok(Ok(()))) => self.database_time(client, connection).await,
                Ok(Ok(Err(error))) => Err(describe(&error)),
                Ok(Err(reason)) => Err(reason),
                Err(_) => Err(format!("LISTEN not answered within {timeout:?}")),
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

    /// Handle one notification.
    async fn process(
        &mut self,
        notification: &tokio_postgres::Notification,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        let channel = notification.channel();
        if !self.channels.contains_key(channel) {
            return Ok(());
        }
        let text = notification.payload();
        if notification::origin_of(text) == Some(node) {
            return Ok(()); // our own echo
        }
        let codec = self.shared.codec.clone();
        let text = match notification::open(&codec, channel, text) {
            Ok(text) => text,
            Err(error) => {
                codec.reject();
                tracing::warn!(%node, channel, %error, payload_prefix = %prefix(text), "[Processor] dropping a notification");
                return Ok(());
            }
        };
        match notification::parse(text) {
            Err(error) => {
                tracing::warn!(%node, channel, %error, payload_prefix = %prefix(text), "[Processor] skipping a corrupt notification");
            }
            Ok(Notification::Inline { origin, pack }) => {
                for entry in notification::entries(&pack) {
                    let bytes = match entry {
                        Ok(bytes) => bytes,
                        Err(error) => {
                            tracing::warn!(%node, channel, %origin, %error, "[Processor] skipping the rest of a corrupt notification");
                            break;
                        }
                    };
                    match codec.decode(bytes) {
                        Ok(envelope) if envelope.origin == origin => {
                            self.accept_live(channel, envelope).await?;
                        }
                        Err(error @ CodecError::Unauthenticated) => {
                            // Counted by the codec; it never reaches the tracker.
                            tracing::warn!(%node, channel, %origin, %error, "[Processor] dropping an envelope in a notification");
                        }
                        Ok(envelope) => {
                            tracing::warn!(%node, channel, %origin, claimed = %envelope.origin, "[Processor] skipping an envelope whose origin does not match its notification");
                        }
                        Err(error) => {
                            // Its sequence number is unknown: the next envelope from this
                            // origin shows a gap, which is repaired from the table.
                            tracing::warn!(%node, channel, %origin, %error, "[Processor] skipping a corrupt envelope in a notification");
                        }
                    }
                }
            }
            Ok(Notification::Reference {
                origin,
                from,
                to,
                hub,
            }) => {
                if !self.is_subscribed(channel, &hub)
                    || self
                        .tracker
                        .last(origin, &hub)
                        .is_some_and(|last| last >= to)
                {
                    return Ok(());
                }
                // Only a range the table holds is believed: a forged reference naming a
                // far-ahead range changes nothing.
                let table = self.channels[channel].table.clone();
                if !self.holds(&table, origin, &hub, from, to).await? {
                    self.shared.codec.reject();
                    tracing::warn!(%node, %origin, hub, from, to, "[Processor] dropping a reference to rows the table does not hold (forged?)");
                    return Ok(());
                }
                // A gap in front of the referenced rows is repaired (and reported) first,
                // as in front of an inline envelope.
                let start = self
                    .tracker
                    .last(origin, &hub)
                    .map_or(from, |last| last + 1);
                if start < from {
                    tracing::debug!(%node, %origin, hub, from = start, to = from - 1, "[Processor] sequence gap; reading the missing envelopes from the table");
                    self.read_and_apply(channel, origin, &hub, start, from - 1, Range::Gap)
                        .await?;
                }
                // Only rows found move the tracker (a reference may name more).
                self.read_and_apply(
                    channel,
                    origin,
                    &hub,
                    start.max(from),
                    to,
                    Range::Referenced,
                )
                .await?;
            }
        }
        Ok(())
    }

    fn is_subscribed(&self, channel: &str, hub: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| c.hubs.contains_key(hub))
    }

    /// Deliver one envelope seen while connected. The next one of its origin is
    /// delivered as it is. The first one seen from its origin, or one after a sequence
    /// gap, could be a forged notification naming a real node and a far-ahead number
    /// (which would make every later envelope of that node look like a duplicate): the
    /// table must hold its row, or it is dropped and counted and the tracker does not
    /// move; then the gap is read from the table (and reported) before it is delivered.
    async fn accept_live(&mut self, channel: &str, envelope: Envelope) -> Result<(), Interrupt> {
        let (origin, seq) = (envelope.origin, envelope.seq);
        if !self.is_subscribed(channel, &envelope.hub) {
            return Ok(());
        }
        let observation = self.tracker.observe(origin, &envelope.hub, seq);
        let gap = match observation {
            Observation::Duplicate => return Ok(()),
            Observation::Gap { from, to } => Some((from, to)),
            Observation::First | Observation::Next => None,
        };
        let first = observation == Observation::First;
        if gap.is_some() || first {
            let table = self.channels[channel].table.clone();
            // Its row committed before its notification left: there now, or never.
            if !self.holds(&table, origin, &envelope.hub, seq, seq).await? {
                self.shared.codec.reject();
                tracing::warn!(node = %self.shared.node, %origin, hub = %envelope.hub, seq, "[Processor] dropping a notified envelope the table does not hold (forged?)");
                return Ok(());
            }
        }
        if let Some((from, to)) = gap {
            tracing::debug!(node = %self.shared.node, %origin, hub = %envelope.hub, from, to, "[Processor] sequence gap; reading the missing envelopes from the table");
            self.read_and_apply(channel, origin, &envelope.hub, from, to, Range::Gap)
                .await?;
        }
        let mut repair = Repair::default();
        self.tracker.advance(origin, &envelope.hub, seq);
        self.deliver(channel, envelope, &mut repair).await
    }

    /// Whether the table holds any row of `origin`'s `hub` numbered `from..=to`.
    async fn holds(
        &mut self,
        table: &TableNames,
        origin: NodeId,
        hub: &str,
        from: u64,
        to: u64,
    ) -> Result<bool, Interrupt> {
        let rows = self.read_range(table, origin, hub, from, to).await?;
        Ok(!rows.is_empty())
    }

    /// Read `from..=to` of `origin`'s `hub` from the table and apply the rows in order,
    /// waiting up to `gap_wait` for rows whose commit may still be in flight. The outcome
    /// is reported as `Reconnected` when the range is a sequence gap, or whenever
    /// something in it could not be recovered. A gap's numbers that no row accounts for
    /// are counted missing (the caller confirmed a later row exists); a referenced range
    /// moves the tracker only as far as the rows found.
    async fn read_and_apply(
        &mut self,
        channel: &str,
        origin: NodeId,
        hub: &str,
        from: u64,
        to: u64,
        range: Range,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        let table = self.channels[channel].table.clone();
        let deadline = Instant::now() + self.shared.options.gap_wait;
        let mut repair = Repair::default();
        let next = |tracker: &Tracker| {
            tracker
                .last(origin, hub)
                .map_or(from, |last| last.saturating_add(1))
        };
        loop {
            if !self.is_subscribed(channel, hub) {
                return Ok(()); // the last subscription ended meanwhile
            }
            if next(&self.tracker) > to {
                break;
            }
            let rows = self
                .read_range(&table, origin, hub, next(&self.tracker), to)
                .await?;
            let waited_enough = Instant::now() >= deadline;
            for row in rows {
                if row.first_seq() > next(&self.tracker) && !waited_enough {
                    break; // a hole: maybe in flight, wait and read again
                }
                self.apply_row(channel, row, &mut repair).await?;
            }
            if waited_enough {
                break;
            }
            if next(&self.tracker) <= to {
                tokio::time::sleep(Duration::from_millis(50).min(deadline - Instant::now())).await;
            }
        }
        if !self.is_subscribed(channel, hub) {
            return Ok(());
        }
        let last = self
            .tracker
            .last(origin, hub)
            .unwrap_or(from.saturating_sub(1));
        if range == Range::Gap && last < to {
            // A later row exists: these numbers were used and are gone.
            repair.missing = repair.missing.saturating_add(to - last);
            self.tracker.advance(origin, hub, to);
        }
        let outcome = repair.outcome(
            &format!("sequence numbers {from}..={to} from node {origin}"),
            STORAGE,
        );
        let lost = matches!(outcome, GapRepair::Unrepairable { .. });
        if lost {
            tracing::warn!(%node, %origin, hub, ?outcome, "[Processor] envelopes could not be recovered");
        }
        if range == Range::Gap || lost {
            self.send_to_hub(channel, hub, BackplaneEvent::Reconnected { gap: outcome })
                .await?;
        }
        Ok(())
    }

    /// Apply a stored row: deliver it, or skip a tombstone or a corrupt row.
    async fn apply_row(
        &mut self,
        channel: &str,
        row: StoredRow,
        repair: &mut Repair,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        if !self.is_subscribed(channel, &row.hub) {
            return Ok(());
        }
        if self
            .tracker
            .last(row.origin, &row.hub)
            .is_some_and(|last| last >= row.seq)
        {
            return Ok(()); // already delivered or skipped
        }
        // Verified before the row may move the tracker (with a cluster secret).
        let decoded = match row.tombstone {
            Reading::Covers(_) => None,
            Reading::Forged => {
                self.shared.codec.reject();
                tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, "[Processor] dropping a tombstone row that failed verification");
                return Ok(());
            }
            Reading::NotATombstone => match self.shared.codec.decode(&row.payload) {
                Err(error @ CodecError::Unauthenticated) => {
                    tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, %error, "[Processor] dropping a row");
                    return Ok(());
                }
                other => Some(other),
            },
        };
        // Numbers between the last delivered and this row that no row accounts for.
        match self
            .tracker
            .accept(row.origin, &row.hub, row.first_seq(), row.seq)
        {
            None => return Ok(()), // already delivered or skipped
            Some(missing) => repair.missing = repair.missing.saturating_add(missing),
        }
        let Some(decoded) = decoded else {
            tracing::debug!(%node, origin = %row.origin, hub = row.hub, first = row.first_seq(), last = row.seq, "[Processor] tombstone (publish failed at its origin); numbers skipped");
            return Ok(());
        };
        match decoded {
            Ok(envelope)
                if envelope.origin == row.origin
                    && envelope.hub == row.hub
                    && envelope.seq == row.seq =>
            {
                self.deliver(channel, envelope, repair).await
            }
            Ok(_) => {
                tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, "[Processor] skipping a row whose envelope does not match its columns");
                repair.corrupt += 1;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%node, origin = %row.origin, hub = row.hub, seq = row.seq, %error, "[Processor] skipping a corrupt row");
                repair.corrupt += 1;
                Ok(())
            }
        }
    }

    /// Hand an envelope to the hub's subscriptions (waiting for room: backpressure).
    async fn deliver(
        &mut self,
        channel: &str,
        envelope: Envelope,
        repair: &mut Repair,
    ) -> Result<(), Interrupt> {
        let node = self.shared.node;
        if envelope.destination.is_some_and(|d| d != node) {
            return Ok(()); // addressed to another node; its sequence is tracked anyway
        }
        tracing::debug!(%node, origin = %envelope.origin, hub = envelope.hub, seq = envelope.seq, "[Processor] envelope received");
        repair.recovered += 1;
        let hub = envelope.hub.clone();
        self.send_to_hub(channel, &hub, BackplaneEvent::Envelope(Arc::new(envelope)))
            .await
    }

    /// Send `event` to every subscription of `hub`, dropping subscriptions that ended.
    async fn send_to_hub(
        &mut self,
        channel: &str,
        hub: &str,
        event: BackplaneEvent,
    ) -> Result<(), Interrupt> {
        let Some(senders) = self
            .channels
            .get_mut(channel)
            .and_then(|c| c.hubs.get_mut(hub))
        else {
            return Ok(());
        };
        let mut closed = false;
        for sender in senders.iter() {
            match sender.try_send(event.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
                // Full: wait for room (backpressure), but not past shutdown.
                Err(mpsc::error::TrySendError::Full(event)) => tokio::select! {
                    sent = sender.send(event) => closed |= sent.is_err(),
                    _ = self.shutdown.wait_for(|stop| *stop) => return Err(Interrupt::Shutdown),
                },
            }
        }
        if closed {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                // Nobody listens to this hub on this node any more: stop decoding and
                // tracking its envelopes (the channel stays LISTENed; cheap).
                if let Some(channel) = self.channels.get_mut(channel) {
                    channel.hubs.remove(hub);
                }
                // A later subscription starts afresh, not with what was published
                // while nobody here listened.
                self.tracker.forget_hub(hub);
            }
        }
        Ok(())
    }

    /// Send an event to every subscription of every hub.
    async fn broadcast(&mut self, event: impl Fn() -> BackplaneEvent) {
        let targets: Vec<(String, String)> = self
            .channels
            .iter()
            .flat_map(|(name, c)| c.hubs.keys().map(move |hub| (name.clone(), hub.clone())))
            .collect();
        for (channel, hub) in targets {
            if self.send_to_hub(&channel, &hub, event()).await.is_err() {
                return;
            }
        }
    }

    async fn report_reconnected(&mut self, repairs: HashMap<(String, String), Repair>) {
        let targets: Vec<(String, String)> = self
            .channels
            .iter()
            .flat_map(|(name, c)| c.hubs.keys().map(move |hub| (name.clone(), hub.clone())))
            .collect();
        for (channel, hub) in targets {
            let repair = repairs
                .get(&(channel.clone(), hub.clone()))
                .copied()
                .unwrap_or_default();
            let gap = repair.outcome("while disconnected", STORAGE);
            if let GapRepair::Unrepairable { .. } = gap {
                tracing::warn!(node = %self.shared.node, hub, ?gap, "[Listener] reconnected with envelopes lost");
            }
            if self
                .send_to_hub(&channel, &hub, BackplaneEvent::Reconnected { gap })
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Read and deliver everything missed while disconnected, per channel.
    async fn catch_up(&mut self) -> Result<HashMap<(String, String), Repair>, Interrupt> {
        let margin = self.shared.options.effective_catch_up_margin();
        let mut repairs: HashMap<(String, String), Repair> = HashMap::new();
        let channels: Vec<(String, Arc<TableNames>, Vec<String>, SystemTime)> = self
            .channels
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    c.table.clone(),
                    c.hubs.keys().cloned().collect(),
                    c.listening_since,
                )
            })
            .collect();
        for (channel, table, hubs, listening_since) in channels {
            if hubs.is_empty() {
                continue;
            }
            let since = self
                .alive_at
                .checked_sub(margin)
                .unwrap_or(SystemTime::UNIX_EPOCH)
                .max(listening_since);
            let mut known_origins = Vec::new();
            let mut known_hubs = Vec::new();
            let mut known_seqs = Vec::new();
            for hub in &hubs {
                for (origin, seq) in self.tracker.known(hub) {
                    known_origins.push(origin.to_bytes().to_vec());
                    known_hubs.push(hub.clone());
                    known_seqs.push(i64::try_from(seq).unwrap_or(i64::MAX));
                }
            }
            let me = self.shared.node.to_bytes();
            let after_known = format!(
                "SELECT m.origin, m.hub, m.seq, m.payload
                 FROM unnest($1::bytea[], $2::text[], $3::int8[]) AS k(origin, hub, seq)
                 JOIN {table} m ON m.origin = k.origin AND m.hub = k.hub AND m.seq > k.seq
                 ORDER BY m.origin, m.hub, m.seq",
                table = table.qualified
            );
            let from_unknown = format!(
                "SELECT m.origin, m.hub, m.seq, m.payload
                 FROM {table} m
                 WHERE m.inserted_on >= $1 AND m.hub = ANY($2::text[]) AND m.origin <> $3
                   AND NOT EXISTS (
                       SELECT 1 FROM unnest($4::bytea[], $5::text[]) AS k(origin, hub)
                       WHERE k.origin = m.origin AND k.hub = m.hub)
                 ORDER BY m.origin, m.hub, m.seq",
                table = table.qualified
            );
            self.stream_rows(
                &channel,
                &after_known,
                &[&known_origins, &known_hubs, &known_seqs],
                &mut repairs,
            )
            .await?;
            self.stream_rows(
                &channel,
                &from_unknown,
                &[&since, &hubs, &me.as_slice(), &known_origins, &known_hubs],
                &mut repairs,
            )
            .await?;
        }
        Ok(repairs)
    }

    /// Run a catch-up query and apply its rows as they stream in.
    async fn stream_rows(
        &mut self,
        channel: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        repairs: &mut HashMap<(String, String), Repair>,
    ) -> Result<(), Interrupt> {
        let timeout = self.shared.options.command_timeout;
        self.reader().await?;
        // Taken out while streaming, because applying rows needs `&mut self`.
        let reader = self.reader.take().expect("connected above");
        let result = async {
            let rows = tokio::time::timeout(timeout, reader.query_raw(sql, params.iter().copied()))
                .await
                .map_err(|_| Interrupt::Lost(format!("catch-up query not answered within {timeout:?}")))?
                .map_err(|e| Interrupt::Lost(describe(&e)))?;
            futures_util::pin_mut!(rows);
            let mut count = 0u64;
            loop {
                let row = tokio::time::timeout(timeout, rows.next())
                    .await
                    .map_err(|_| Interrupt::Lost(format!("catch-up rows not received within {timeout:?}")))?;
                let Some(row) = row else { break };
                let row = row.map_err(|e| Interrupt::Lost(describe(&e)))?;
                count += 1;
                match stored_row(&self.shared.codec, &row) {
                    Some(row) => {
                        let key = (channel.to_owned(), row.hub.clone());
                        let mut repair = repairs.get(&key).copied().unwrap_or_default();
                        self.apply_row(channel, row, &mut repair).await?;
                        repairs.insert(key, repair);
                    }
                    None => {
                        tracing::warn!(node = %self.shared.node, "[Processor] skipping a row with a malformed origin");
                    }
                }
            }
            tracing::debug!(node = %self.shared.node, channel, rows = count, "[Listener] catch-up query done");
            Ok(())
        }
        .await;
        if result.is_ok() {
            self.reader = Some(reader);
        }
        result
    }

    /// Rows `from..=to` of `hub` from `origin`, in sequence order.
    async fn read_range(
        &mut self,
        table: &TableNames,
        origin: NodeId,
        hub: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredRow>, Interrupt> {
        let sql = format!(
            "SELECT origin, hub, seq, payload FROM {table}
             WHERE origin = $1 AND hub = $2 AND seq BETWEEN $3 AND $4 ORDER BY seq",
            table = table.qualified
        );
        let origin_bytes = origin.to_bytes();
        let origin_bytes: &[u8] = &origin_bytes;
        let (from, to) = (
            i64::try_from(from).unwrap_or(i64::MAX),
            i64::try_from(to).unwrap_or(i64::MAX),
        );
        let timeout = self.shared.options.command_timeout;
        let mut last_error = String::new();
        for _ in 0..2 {
            let reader = self.reader().await?;
            let params: [&(dyn ToSql + Sync); 4] = [&origin_bytes, &hub, &from, &to];
            let query = reader.query(&sql, &params);
            match tokio::time::timeout(timeout, query).await {
                Ok(Ok(rows)) => {
                    let codec = &self.shared.codec;
                    return Ok(rows
                        .iter()
                        .filter_map(|row| stored_row(codec, row))
                        .collect());
                }
                Ok(Err(error)) if is_transient(&error) => {
                    last_error = describe(&error);
                    self.reader = None;
                }
                Ok(Err(error)) => {
                    self.reader = None;
                    return Err(Interrupt::Lost(describe(&error)));
                }
                Err(_) => {
                    self.reader = None;
                    last_error = format!("read not answered within {timeout:?}");
                }
            }
        }
        Err(Interrupt::Lost(format!(
            "reading envelopes from the table: {last_error}"
        )))
    }

    /// The reader connection, opened if needed.
    async fn reader(&mut self) -> Result<&Client, Interrupt> {
        if self.reader.as_ref().is_none_or(Client::is_closed) {
            let client = connect::connect(&self.shared.options, Role::Reader, self.shared.node)
                .await
                .map_err(|e| Interrupt::Lost(e.to_string()))?;
            self.reader = Some(client);
        }
        Ok(self.reader.as_ref().expect("connected above"))
    }

    /// The wait before reconnect attempt `attempt`, with a fresh random jitter.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let fraction = self.jitter.next_fraction();
        self.shared
            .options
            .reconnect_backoff
            .delay(attempt, fraction)
    }
}

/// Poll `future` (a query on the listening connection's client) while driving the
/// connection, stashing notifications that arrive meanwhile in `pending`.
///
/// At most `limit` notifications are held: past that, this gives up as if the
/// connection were lost, so the listener reconnects and reads what it missed from the
/// table (a flood of notifications cannot grow memory without bound).
async fn drive<F: Future>(
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

/// A row of a messages table, or `None` if its origin column is malformed.
fn stored_row(codec: &EnvelopeCodec, row: &Row) -> Option<StoredRow> {
    let origin: &[u8] = row.try_get(0).ok()?;
    let origin = NodeId::from_bytes(origin.try_into().ok()?);
    let hub: String = row.try_get(1).ok()?;
    let seq = u64::try_from(row.try_get::<_, i64>(2).ok()?).ok()?;
    let payload: Vec<u8> = row.try_get(3).ok()?;
    let place = tombstone::Place {
        origin,
        hub: &hub,
        last: seq,
    };
    let tombstone = tombstone::read(codec, place, &payload);
    Some(StoredRow {
        origin,
        hub,
        seq,
        payload,
        tombstone,
    })
}

/// What a range read by [`Listener::read_and_apply`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    /// A sequence gap in front of a row the table holds: report the outcome.
    Gap,
    /// Rows a reference notification names.
    Referenced,
}

/// The start of a notification, for logs (never the whole of a large payload).
fn prefix(text: &str) -> &str {
    let mut end = text.len().min(80);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
