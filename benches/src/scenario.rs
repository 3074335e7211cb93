//! The message scenarios: senders on instance A, receivers on instance B, every message
//! checked for loss, duplication and order, and timed from send to arrival.
//!
//! Receivers join a group of their own on B (`JoinGroup`); the sender invokes
//! `SendMessageToGroup(group, user, text)` on A, with an invocation id, so the server
//! answers each invocation with a completion once the message is on its way to the other
//! instance (committed to PostgreSQL) — or with an error, which the sender counts as a
//! refusal. The text carries a [`Probe`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hub_protocol::{CompletionResult, HubMessage};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{ClientOptions, FrameReader, FrameWriter, HubClient};
use crate::latency::Latencies;
use crate::probe::{Probe, now_micros};
use crate::report::MessageReport;
use crate::tally::{Observed, ReceiverOutcome, Sent, tally};

/// The client method the chat hub calls for group messages.
const RECEIVE_GROUP_MESSAGE: &str = "ReceiveGroupMessage";

/// How often idle halves of a connection send a Ping, well inside the server's 30 s
/// client timeout.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(10);

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
    ok: AtomicU64,
    refused: AtomicU64,
    first_refusal: std::sync::Mutex<Option<String>>,
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

/// Connect to `server` and join `group`, waiting for the server's completion.
async fn join(server: &str, group: &str, options: ClientOptions) -> Result<HubClient, String> {
    let mut client = HubClient::connect(server, options)
        .await
        .map_err(|error| error.to_string())?;
    client
        .writer
        .feed_invocation(Some("join"), "JoinGroup", &(group,))
        .await
        .map_err(|error| error.to_string())?;
    client
        .writer
        .flush()
        .await
        .map_err(|error| error.to_string())?;
    let wait = async {
        loop {
            match client.reader.next().await {
                Ok(Some(HubMessage::Completion(completion)))
                    if completion.invocation_id == "join" =>
                {
                    return match completion.result {
                        CompletionResult::Error(error) => Err(format!("JoinGroup failed: {error}")),
                        _ => Ok(()),
                    };
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err("closed while joining the group".to_owned()),
                Err(error) => return Err(error.to_string()),
            }
        }
    };
    tokio::time::timeout(options.step_timeout, wait)
        .await
        .map_err(|_| "JoinGroup timed out".to_owned())??;
    Ok(client)
}

/// Read until every message arrived and then [`QUIET_PERIOD`] passed without another
/// message of the group (so late duplicates are counted), or until `stop` fires; ping
/// while idle.
async fn receive(
    mut client: HubClient,
    group: String,
    senders: u32,
    messages: u64,
    keep_arrivals: bool,
    mut stop: watch::Receiver<bool>,
) -> ReceiverOutcome {
    let mut outcome = ReceiverOutcome::new(senders, messages, keep_arrivals);
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.reset();
    // Set once every message has arrived, and pushed back by every later one.
    let mut quiet_until: Option<tokio::time::Instant> = None;
    loop {
        if quiet_until.is_none() && outcome.check.complete() {
            quiet_until = Some(tokio::time::Instant::now() + QUIET_PERIOD);
        }
        let quiet = async {
            match quiet_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            next = client.reader.next() => next,
            _ = ping.tick() => {
                if let Err(error) = client.writer.ping().await {
                    outcome.error = Some(format!("receiver ping failed: {error}"));
                    break;
                }
                continue;
            }
            _ = stop.changed() => break,
            () = quiet => break,
        };
        let message = match next {
            Ok(Some(message)) => message,
            Ok(None) => {
                outcome.error = Some("the server closed a receiver's connection".into());
                break;
            }
            Err(error) => {
                outcome.error = Some(format!("receiver: {error}"));
                break;
            }
        };
        let HubMessage::Invocation(invocation) = message else {
            continue;
        };
        if invocation.target != RECEIVE_GROUP_MESSAGE {
            continue;
        }
        let Ok((to, _user, text)) = invocation.arguments.deserialize::<&str>(0).and_then(|to| {
            Ok((
                to,
                invocation.arguments.deserialize::<&str>(1)?,
                invocation.arguments.deserialize::<&str>(2)?,
            ))
        }) else {
            continue;
        };
        if to != group {
            continue;
        }
        if quiet_until.is_some() {
            quiet_until = Some(tokio::time::Instant::now() + QUIET_PERIOD);
        }
        outcome.record(Probe::parse(text), now_micros());
    }
    let _ = client.writer.close().await;
    outcome
}

/// Read the sender's completions, releasing window slots as they arrive.
async fn read_completions(
    mut reader: FrameReader,
    window: Arc<Semaphore>,
    completions: Arc<Completions>,
    messages: u64,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let mut answered = 0;
    while answered < messages {
        let next = tokio::select! {
            next = reader.next() => next,
            _ = stop.changed() => return None,
        };
        match next {
            Ok(Some(HubMessage::Completion(completion))) => {
                answered += 1;
                match completion.result {
                    CompletionResult::Error(error) => {
                        completions.refused.fetch_add(1, Ordering::Relaxed);
                        let mut first = completions
                            .first_refusal
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert(error);
                    }
                    _ => {
                        completions.ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
                window.add_permits(1);
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                // No completion will ever come: a sender waiting for window room must
                // stop rather than wait forever.
                window.close();
                return Some("the server closed the sender's connection".into());
            }
            Err(error) => {
                window.close();
                return Some(format!("sender: {error}"));
            }
        }
    }
    None
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

    /// Whether message `seq` is due.
    fn released(&self, seq: u64) -> bool {
        self.released.load(Ordering::Acquire) > seq
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Send the scenario's messages; returns when the last one is written.
///
/// A closed-loop sender stamps each message with the time it sends it. An open-loop
/// sender stamps the time the schedule says it is due, so when the sender falls behind
/// (the server pushes back, or the machine is busy) the wait counts as latency instead of
/// vanishing; how far behind it fell is reported.
async fn send_all(
    writer: &mut FrameWriter,
    scenario: &MessageScenario,
    group: &str,
    window: &Semaphore,
) -> Result<Sent, String> {
    let fail = |error: crate::client::ClientError| format!("sending: {error}");
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
    let mut id = String::new();
    for seq in 0..scenario.messages {
        let (sent_micros, written_micros) = match &pacer {
            None => {
                if let Ok(permit) = window.try_acquire() {
                    permit.forget();
                } else {
                    writer.flush().await.map_err(fail)?;
                    window
                        .acquire()
                        .await
                        .map_err(|_| "stopped sending: the sender's connection ended".to_owned())?
                        .forget();
                }
                let now = now_micros();
                (now, now)
            }
            Some((pacer, per_second)) => {
                if !pacer.released(seq) {
                    // Write what is due before waiting for the next one.
                    writer.flush().await.map_err(fail)?;
                    pacer.wait_for(seq).await;
                }
                let due = scheduled_micros(started, seq, *per_second);
                let now = now_micros();
                lags.record(now.saturating_sub(due));
                (due, now)
            }
        };
        let probe = Probe {
            sender: 0,
            seq,
            sent_micros,
            written_micros,
        };
        id.clear();
        id.push_str(&seq.to_string());
        writer
            .feed_invocation(
                Some(&id),
                "SendMessageToGroup",
                &(group, "load", probe.to_text(scenario.payload_len)),
            )
            .await
            .map_err(fail)?;
    }
    writer.flush().await.map_err(fail)?;
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
            pending.spawn(async move { join(&server, &group, options).await });
            opened += 1;
        }
        let joined = pending.join_next().await.expect("connections pending");
        let client = joined.map_err(|error| error.to_string())??;
        receivers.push(client);
    }
    let mut receiving = JoinSet::new();
    for client in receivers {
        receiving.spawn(receive(
            client,
            group.clone(),
            1,
            scenario.messages,
            scenario.keep_deliveries,
            stop.clone(),
        ));
    }

    let sender = HubClient::connect(server_a, scenario.client)
        .await
        .map_err(|error| format!("sender: {error}"))?;
    let HubClient {
        mut writer, reader, ..
    } = sender;
    let permits = match scenario.pacing {
        Pacing::Window(window) => window.max(1),
        Pacing::Rate(_) => 0,
    };
    let window = Arc::new(Semaphore::new(permits));
    let completions = Arc::new(Completions::default());
    let completion_reader = tokio::spawn(read_completions(
        reader,
        window.clone(),
        completions.clone(),
        scenario.messages,
        stop.clone(),
    ));

    let mut connection_errors = Vec::new();
    let sent = match send_all(&mut writer, scenario, &group, &window).await {
        Ok(sent) => sent,
        Err(error) => {
            connection_errors.push(error);
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
    let completion_error = match tokio::time::timeout_at(deadline, completion_reader).await {
        Ok(Ok(error)) => error,
        Ok(Err(error)) => Some(format!("completion task: {error}")),
        Err(_) => {
            let _ = stop_tx.send(true);
            Some("some completions never arrived".into())
        }
    };
    let _ = stop_tx.send(true);
    let _ = writer.close().await;
    connection_errors.extend(completion_error);

    let first_refusal = completions
        .first_refusal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(tally(
        scenario,
        Observed {
            sent,
            outcomes,
            refused: completions.refused.load(Ordering::Relaxed),
            first_refusal,
            connection_errors,
        },
    ))
}
