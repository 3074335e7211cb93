//! The message scenarios: senders on instance A, receivers on instance B, every message
//! checked for loss, duplication and order, and timed from send to arrival.
//!
//! Receivers join a group of their own on B (`JoinGroup`); the sender invokes
//! `SendMessageToGroup(group, user, text)` on A, with an invocation id, so the server
//! answers each invocation with a completion once the message is on its way to the other
//! instance (committed to PostgreSQL) — or with an error, which the sender counts as a
//! refusal. The text carries a [`Probe`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat_client::{Arguments, DisconnectReason, HubConnection, InvokeError, PendingInvoke};
use serde::de::IgnoredAny;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::client::{ClientOptions, hub_connection};
use crate::latency::Latencies;
use crate::probe::{Probe, now_micros};
use crate::report::MessageReport;
use crate::tally::{Observed, ReceiverOutcome, Sent, tally};

/// The client method the chat hub calls for group messages.
const RECEIVE_GROUP_MESSAGE: &str = "ReceiveGroupMessage";

/// Connections opened at once while setting up receivers.
const CONNECT_CONCURRENCY: usize = 16;

/// How long a receiver that has every message keeps listening for more: a duplicate
/// arriving after the last new message must still be counted. It stops once this long
/// passes without another message of its group (or at the scenario's drain deadline).
pub(crate) const QUIET_PERIOD: Duration = Duration::from_millis(250);

/// How a sender paces its messages.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// Closed loop: at most this many invocations without a completion.
    Window(usize),
    /// Open loop: this many messages per second on a fixed schedule, whatever happens.
    Rate(f64),
}

/// One message scenario.
#[derive(Debug, Clone)]
pub struct MessageScenario {
    /// Short name (`S1`, `S2`, `S3`, `burst`).
    pub name: String,
    /// What it measures, in words.
    pub description: String,
    /// Receivers on instance B.
    pub receivers: usize,
    /// Messages the sender sends.
    pub messages: u64,
    /// How the sender paces them.
    pub pacing: Pacing,
    /// Length of each message's text.
    pub payload_len: usize,
    /// How long to wait for the last deliveries after the last send.
    pub drain_timeout: Duration,
    /// Connection settings.
    pub client: ClientOptions,
    /// Keep every delivery's timing for [`MessageRun::deliveries`] (`--latency-log`).
    pub keep_deliveries: bool,
}

/// One message arriving at one receiver, in [`now_micros`] time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Which receiver (0-based, in the order they reported).
    pub receiver: usize,
    /// The message's sequence number.
    pub seq: u64,
    /// When it was due to be sent (open loop) or sent (closed loop).
    pub sent_micros: u64,
    /// When it arrived.
    pub arrived_micros: u64,
}

/// A scenario's report, and its deliveries when they were kept.
#[derive(Debug)]
pub struct MessageRun {
    /// The line `hub-load` prints.
    pub report: MessageReport,
    /// Every first delivery of a message to a receiver (duplicates are not repeated),
    /// when [`MessageScenario::keep_deliveries`] is set; empty otherwise.
    pub deliveries: Vec<Delivery>,
}

/// What the sender's completions said.
#[derive(Debug, Default)]
struct Completions {
    refused: u64,
    first_refusal: Option<String>,
}

/// The completion of one `SendMessageToGroup` (it returns nothing; any value is ignored).
type Pending = PendingInvoke<IgnoredAny>;

impl Completions {
    /// Count one completion; `Err` when it says the connection is gone.
    fn count(&mut self, completion: Result<IgnoredAny, InvokeError>) -> Result<(), String> {
        match completion {
            Ok(_) => {}
            Err(InvokeError::Hub(error)) => {
                self.refused += 1;
                self.first_refusal.get_or_insert(error);
            }
            Err(error) => return Err(format!("sender: {error}")),
        }
        Ok(())
    }
}

/// What a receiver's handler shares with the task that waits for it.
#[derive(Debug)]
struct Inbox {
    /// The group it listens to.
    group: String,
    /// What arrived so far; taken when the receiver stops.
    outcome: Mutex<ReceiverOutcome>,
    /// Signalled for every message of the group once all have arrived (the quiet period
    /// starts again), and when the connection is lost.
    arrived: Notify,
    /// Why the connection was lost, if it was.
    lost: Mutex<Option<String>>,
}

impl Inbox {
    fn outcome(&self) -> std::sync::MutexGuard<'_, ReceiverOutcome> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A `ReceiveGroupMessage(group, user, text)` arrived: record it (on the connection's
    /// task, as it is decoded, so the clock read here is its arrival).
    fn receive(&self, arguments: &Arguments) {
        let (Ok(to), Ok(_user), Ok(text)) = (
            arguments.deserialize::<&str>(0),
            arguments.deserialize::<&str>(1),
            arguments.deserialize::<&str>(2),
        ) else {
            return;
        };
        if to != self.group {
            return;
        }
        let mut outcome = self.outcome();
        outcome.record(Probe::parse(text), now_micros());
        if outcome.check.complete() {
            self.arrived.notify_one();
        }
    }
}

/// The first line of a latency log (`hub-load --latency-log`).
pub const DELIVERY_LOG_HEADER: &str = "scenario,receiver,seq,sent_us,arrived_us,latency_us";

/// Append `deliveries` of `scenario` to a latency log, one CSV line each (see
/// [`DELIVERY_LOG_HEADER`]); times are [`now_micros`]: microseconds on the load tool's
/// own clock, which the sender and the receivers share, counted from its first reading.
///
/// # Errors
///
/// Whatever writing to `out` returns.
pub fn write_deliveries(
    out: &mut impl std::io::Write,
    scenario: &str,
    deliveries: &[Delivery],
) -> std::io::Result<()> {
    for delivery in deliveries {
        writeln!(
            out,
            "{scenario},{},{},{},{},{}",
            delivery.receiver,
            delivery.seq,
            delivery.sent_micros,
            delivery.arrived_micros,
            delivery.arrived_micros.saturating_sub(delivery.sent_micros)
        )?;
    }
    Ok(())
}

/// A group name no other run or scenario shares.
pub(crate) fn group_name(scenario: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "load-{scenario}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A receiver: connected to `server`, in `group`, recording what arrives.
struct Receiver {
    connection: HubConnection,
    inbox: Arc<Inbox>,
}

/// Connect to `server` and join `group`, waiting for the server's completion.
async fn join(
    server: &str,
    group: &str,
    options: ClientOptions,
    outcome: ReceiverOutcome,
) -> Result<Receiver, String> {
    let connection = hub_connection(server, options)
        .build()
        .map_err(|error| error.to_string())?;
    let inbox = Arc::new(Inbox {
        group: group.to_owned(),
        outcome: Mutex::new(outcome),
        arrived: Notify::new(),
        lost: Mutex::new(None),
    });
    let receiving = inbox.clone();
    connection.on(RECEIVE_GROUP_MESSAGE, move |arguments: Arguments| {
        receiving.receive(&arguments);
    });
    let losing = inbox.clone();
    connection.on_closed(move |reason| {
        let Some(reason) = reason else { return };
        let error = match reason {
            DisconnectReason::TransportClosed | DisconnectReason::ServerClosed { .. } => {
                "the server closed a receiver's connection".to_owned()
            }
            other => format!("receiver: {other}"),
        };
        *losing.lost.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        losing.arrived.notify_one();
    });
    connection
        .start()
        .await
        .map_err(|error| error.to_string())?;
    let joined = tokio::time::timeout(
        options.step_timeout,
        connection.invoke::<IgnoredAny, _>("JoinGroup", (group,)),
    )
    .await
    .map_err(|_| "JoinGroup timed out".to_owned())?;
    match joined {
        Ok(_) => Ok(Receiver { connection, inbox }),
        Err(InvokeError::Hub(error)) => Err(format!("JoinGroup failed: {error}")),
        Err(error) => Err(error.to_string()),
    }
}

/// Wait until every message arrived and then [`QUIET_PERIOD`] passed without another
/// message of the group (so late duplicates are counted), or until `stop` fires.
async fn receive(receiver: Receiver, mut stop: watch::Receiver<bool>) -> ReceiverOutcome {
    let Receiver { connection, inbox } = receiver;
    // Set once every message has arrived, and pushed back by every later one.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    loop {
        if quiet_until.is_none() && inbox.outcome().check.complete() {
            quiet_until = Some(tokio::time::Instant::now() + QUIET_PERIOD);
        }
        let quiet = async {
            match quiet_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = inbox.arrived.notified() => {
                if inbox.lost.lock().unwrap_or_else(PoisonError::into_inner).is_some() {
                    break;
                }
                if quiet_until.is_some() {
                    quiet_until = Some(tokio::time::Instant::now() + QUIET_PERIOD);
                }
            }
            _ = stop.changed() => break,
            () = quiet => break,
        }
    }
    connection.stop().await;
    let lost = inbox
        .lost
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let mut outcome = inbox.outcome();
    let mut outcome = std::mem::replace(&mut *outcome, ReceiverOutcome::new(1, 0, false));
    if outcome.error.is_none() {
        outcome.error = lost;
    }
    outcome
}

/// When message `seq` of an open-loop sender is due, in [`now_micros`] time.
fn scheduled_micros(started: u64, seq: u64, per_second: f64) -> u64 {
    started + (seq as f64 * 1_000_000.0 / per_second) as u64
}

/// Releases an open-loop sender's messages on schedule, from a thread of its own.
///
/// tokio's timers tick in milliseconds, so a sender sleeping on them would send up to a
/// millisecond late; since latency is measured from the scheduled time, that lateness
/// would be charged to the servers. A thread's sleep is precise to tens of microseconds.
#[derive(Debug)]
struct Pacer {
    /// Messages released so far (`seq < released` may be sent).
    released: Arc<AtomicU64>,
    /// Signalled after each release; a permit is stored when nobody waits.
    ready: Arc<Notify>,
    /// Tells the thread to stop early (the sender gave up).
    stop: Arc<AtomicBool>,
}

impl Pacer {
    /// Start releasing `messages` messages at `per_second` from `started`.
    fn start(started: u64, messages: u64, per_second: f64) -> Self {
        let pacer = Self {
            released: Arc::new(AtomicU64::new(0)),
            ready: Arc::new(Notify::new()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (released, ready, stop) = (
            pacer.released.clone(),
            pacer.ready.clone(),
            pacer.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut count = 0;
            while count < messages && !stop.load(Ordering::Relaxed) {
                let now = now_micros();
                let before = count;
                while count < messages && scheduled_micros(started, count, per_second) <= now {
                    count += 1;
                }
                if count > before {
                    released.store(count, Ordering::Release);
                    ready.notify_one();
                }
                if count < messages {
                    let due = scheduled_micros(started, count, per_second);
                    std::thread::sleep(Duration::from_micros(due.saturating_sub(now_micros())));
                }
            }
        });
        pacer
    }

    /// Wait until message `seq` is due.
    async fn wait_for(&self, seq: u64) {
        while self.released.load(Ordering::Acquire) <= seq {
            self.ready.notified().await;
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Send the scenario's messages; returns when the last one is handed to the connection,
/// with the completions not awaited yet (`in_flight`, oldest first).
///
/// A closed-loop sender stamps each message with the time it sends it, and keeps at most
/// its window of invocations without a completion. An open-loop sender stamps the time
/// the schedule says it is due, so when the sender falls behind (the server pushes back,
/// or the machine is busy) the wait counts as latency instead of vanishing; how far
/// behind it fell is reported.
async fn send_all(
    connection: &HubConnection,
    scenario: &MessageScenario,
    group: &str,
    completions: &mut Completions,
    in_flight: &mut VecDeque<Pending>,
) -> Result<Sent, String> {
    let started = now_micros();
    let pacer = match scenario.pacing {
        Pacing::Rate(per_second) => Some((
            Pacer::start(started, scenario.messages, per_second),
            per_second,
        )),
        Pacing::Window(_) => None,
    };
    let mut lags = Latencies::with_capacity(match pacer {
        Some(_) => usize::try_from(scenario.messages).unwrap_or(0),
        None => 0,
    });
    for seq in 0..scenario.messages {
        let (sent_micros, written_micros) = match (&pacer, scenario.pacing) {
            (Some((pacer, per_second)), _) => {
                pacer.wait_for(seq).await;
                let due = scheduled_micros(started, seq, *per_second);
                let now = now_micros();
                lags.record(now.saturating_sub(due));
                (due, now)
            }
            (None, Pacing::Window(window)) => {
                // The connection writes what is queued while the oldest completes.
                while in_flight.len() >= window.max(1) {
                    let oldest = in_flight.pop_front().expect("a full window");
                    completions.count(oldest.await)?;
                }
                let now = now_micros();
                (now, now)
            }
            (None, Pacing::Rate(_)) => unreachable!("a rate has a pacer"),
        };
        let probe = Probe {
            sender: 0,
            seq,
            sent_micros,
            written_micros,
        };
        let pending = connection
            .begin_invoke(
                "SendMessageToGroup",
                (group, "load", probe.to_text(scenario.payload_len)),
            )
            .await
            .map_err(|error| format!("sending: {error}"))?;
        in_flight.push_back(pending);
    }
    Ok(Sent {
        started,
        finished: now_micros(),
        schedule_lag: pacer.map(|_| lags.summary()),
    })
}

/// Run `scenario`: its sender on `server_a`, its receivers on `server_b`.
///
/// # Errors
///
/// A message when the clients could not be set up; problems during the run (dropped
/// connections, refusals, loss) are reported in the [`MessageReport`] instead.
pub async fn run(
    scenario: &MessageScenario,
    server_a: &str,
    server_b: &str,
) -> Result<MessageRun, String> {
    let group = group_name(&scenario.name);
    let (stop_tx, stop) = watch::channel(false);

    // Receivers first, all joined before anything is sent.
    let mut receivers = Vec::with_capacity(scenario.receivers);
    let mut pending = JoinSet::new();
    let mut opened = 0;
    while receivers.len() < scenario.receivers {
        while opened < scenario.receivers && pending.len() < CONNECT_CONCURRENCY {
            let (server, group, options) = (server_b.to_owned(), group.clone(), scenario.client);
            let outcome = ReceiverOutcome::new(1, scenario.messages, scenario.keep_deliveries);
            pending.spawn(async move { join(&server, &group, options, outcome).await });
            opened += 1;
        }
        let joined = pending.join_next().await.expect("connections pending");
        let receiver = joined.map_err(|error| error.to_string())??;
        receivers.push(receiver);
    }
    let mut receiving = JoinSet::new();
    for receiver in receivers {
        receiving.spawn(receive(receiver, stop.clone()));
    }

    let sender = hub_connection(server_a, scenario.client)
        .build()
        .map_err(|error| format!("sender: {error}"))?;
    sender
        .start()
        .await
        .map_err(|error| format!("sender: {error}"))?;
    let mut completions = Completions::default();
    let mut in_flight = VecDeque::new();

    let mut connection_errors = Vec::new();
    let sent = match send_all(&sender, scenario, &group, &mut completions, &mut in_flight).await {
        Ok(sent) => sent,
        Err(error) => {
            connection_errors.push(error);
            in_flight.clear();
            let now = now_micros();
            Sent {
                started: now,
                finished: now,
                schedule_lag: None,
            }
        }
    };
    // Wait for the deliveries, bounded.
    let mut outcomes = Vec::with_capacity(scenario.receivers);
    let deadline = tokio::time::Instant::now() + scenario.drain_timeout;
    let mut stopped = false;
    loop {
        let next = if stopped {
            receiving.join_next().await
        } else {
            match tokio::time::timeout_at(deadline, receiving.join_next()).await {
                Ok(next) => next,
                Err(_) => {
                    // Receivers still waiting now report what they have.
                    let _ = stop_tx.send(true);
                    stopped = true;
                    continue;
                }
            }
        };
        match next {
            Some(Ok(outcome)) => outcomes.push(outcome),
            Some(Err(error)) => connection_errors.push(format!("receiver task: {error}")),
            None => break,
        }
    }
    // Completions may trail the last delivery slightly.
    let completed = tokio::time::timeout_at(deadline, async {
        while let Some(pending) = in_flight.pop_front() {
            completions.count(pending.await)?;
        }
        Ok::<(), String>(())
    })
    .await;
    match completed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => connection_errors.push(error),
        Err(_) => connection_errors.push("some completions never arrived".into()),
    }
    let _ = stop_tx.send(true);
    sender.stop().await;

    Ok(tally(
        scenario,
        Observed {
            sent,
            outcomes,
            refused: completions.refused,
            first_refusal: completions.first_refusal,
            connection_errors,
        },
    ))
}
