//! One soak client: connects, joins a group, sends a few messages to it (now and then
//! to everyone), leaves, sometimes reconnects, and writes all of it down in a
//! [`ClientLog`]; when told to stop it stays where it is, so its last stays can be
//! checked, and reads until told to finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hub_protocol::{CompletionResult, HubMessage};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::ledger::{Arrival, ClientLog, ConnectionLog, Membership, SendRecord, Target};
use crate::client::{ClientOptions, FrameReader, FrameWriter, HubClient};
use crate::probe::{Probe, now_micros};
use crate::scenario::PING_INTERVAL;

/// Sends to all are one in this many: each reaches every connection, so a larger share
/// would make the soak a broadcast benchmark.
const ALL_ONE_IN: u64 = 200;

/// Messages a client sends per stay in a group.
const SENDS_PER_STAY: u32 = 2;

/// Pause after a failed connection attempt, so a struggling server is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What every client shares.
#[derive(Debug)]
pub(crate) struct ChurnPlan {
    /// Groups to pick from.
    pub(crate) groups: u32,
    /// Mean pause before each send (each pause is drawn from half to one and a half
    /// times it).
    pub(crate) send_interval: Duration,
    /// A client reconnects after one stay in this many (on average).
    pub(crate) reconnect_one_in: u64,
    /// Length of each message's text.
    pub(crate) payload_len: usize,
    /// Connection settings.
    pub(crate) client: ClientOptions,
    /// Arrivals on every connection, for the drain to see when they stop.
    pub(crate) arrivals: Arc<AtomicU64>,
}

/// The group client `index` stays in for the whole soak, if it is one of the anchors:
/// one per group, on A and B in turn. Their stays never end, so every message to their
/// group is expected at them, kills included; the others' stays mostly end in a leave.
pub(crate) fn anchor_group(index: u32, groups: u32) -> Option<u32> {
    // Clients alternate between A (even) and B (odd); 6 mod 8 is on A, 3 mod 8 on B, and
    // index / 4 walks through the groups, one anchor each.
    matches!(index % 8, 3 | 6)
        .then_some(index / 4)
        .filter(|group| *group < groups)
}

/// A small deterministic generator (xorshift64*): the soak needs spread, not secrecy,
/// and a seed per client makes each run's pattern the same.
#[derive(Debug)]
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// `mean` scaled by a factor in [0.5, 1.5).
    fn around(&mut self, mean: Duration) -> Duration {
        mean.mul_f64(0.5 + self.below(1000) as f64 / 1000.0)
    }
}

/// A connection in use: its writer, the completions its reader forwards, its log.
struct Live {
    writer: FrameWriter,
    completions: mpsc::UnboundedReceiver<(String, Result<(), String>)>,
    reader: JoinHandle<Vec<Arrival>>,
    log: ConnectionLog,
    next_id: u64,
}

/// Why a stay ended early.
enum Interrupted {
    /// The soak is over: stay where you are.
    Stopped,
    /// The connection failed: reconnect.
    Broken(String),
}

/// Run client `index` against `server` until `stop`, then hold until `finish`.
pub(crate) async fn run(
    plan: Arc<ChurnPlan>,
    index: u32,
    server: String,
    stop: watch::Receiver<bool>,
    finish: watch::Receiver<bool>,
) -> ClientLog {
    let mut dice = Dice::new(u64::from(index) + 1);
    let mut log = ClientLog::default();
    let mut seq = 0;
    // Spread the first connections over one send interval.
    let start = dice.around(plan.send_interval) / 2;
    if pause(start, &stop).await {
        return log;
    }
    let mut live: Option<Live> = None;
    while !*stop.borrow() {
        let mut connection = match live.take() {
            Some(connection) => connection,
            None => match open(&plan, &server, finish.clone()).await {
                Ok(connection) => connection,
                Err(error) => {
                    log.errors.push(error);
                    pause(RETRY_PAUSE, &stop).await;
                    continue;
                }
            },
        };
        match stay(
            &plan,
            &mut connection,
            &mut dice,
            index,
            &mut seq,
            &mut log,
            &stop,
        )
        .await
        {
            Ok(()) if dice.below(plan.reconnect_one_in) == 0 => {
                log.reconnects += 1;
                close(connection, &mut log, true).await;
            }
            Ok(()) => live = Some(connection),
            Err(Interrupted::Stopped) => live = Some(connection),
            Err(Interrupted::Broken(error)) => {
                log.errors.push(error);
                close(connection, &mut log, true).await;
            }
        }
    }
    let Some(mut connection) = live else {
        return log;
    };
    // Stay put, keeping the connection alive, until the drain is over.
    let mut finish = finish;
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.reset();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if let Err(error) = connection.writer.ping().await {
                    log.errors.push(format!("ping while holding: {error}"));
                    connection.log.closed = true;
                    break;
                }
            }
            () = raised(&mut finish) => break,
        }
    }
    close(connection, &mut log, false).await;
    log
}

/// Wait until `flag` is raised (or its sender is gone).
async fn raised(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the caller's awaits.
    let _ = flag.wait_for(|raised| *raised).await.map(|_| ());
}

/// Sleep `duration`; `true` if the soak stopped meanwhile.
async fn pause(duration: Duration, stop: &watch::Receiver<bool>) -> bool {
    let mut stop = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = raised(&mut stop) => true,
    }
}

/// Connect and start reading.
async fn open(
    plan: &ChurnPlan,
    server: &str,
    finish: watch::Receiver<bool>,
) -> Result<Live, String> {
    let client = HubClient::connect(server, plan.client)
        .await
        .map_err(|error| format!("connecting: {error}"))?;
    let opened = now_micros();
    let (tx, completions) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read(client.reader, tx, plan.arrivals.clone(), finish));
    Ok(Live {
        writer: client.writer,
        completions,
        reader,
        log: ConnectionLog {
            opened,
            ..ConnectionLog::default()
        },
        next_id: 0,
    })
}

/// Close `connection` (if it still is) and file its log with what its reader saw;
/// `early` when the soak is not over, so none of its stays expect deliveries.
async fn close(mut connection: Live, log: &mut ClientLog, early: bool) {
    connection.log.closed |= early;
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.writer.close()).await;
    connection.log.arrivals =
        match tokio::time::timeout(Duration::from_secs(5), &mut connection.reader).await {
            Ok(Ok(arrivals)) => arrivals,
            _ => {
                connection.reader.abort();
                log.errors
                    .push("a reader did not end after its connection closed".into());
                Vec::new()
            }
        };
    log.connections.push(std::mem::take(&mut connection.log));
}

/// Read `reader` until the connection ends or `finish`: messages into the returned
/// arrivals, completions to the client.
async fn read(
    mut reader: FrameReader,
    completions: mpsc::UnboundedSender<(String, Result<(), String>)>,
    counter: Arc<AtomicU64>,
    mut finish: watch::Receiver<bool>,
) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    loop {
        let message = tokio::select! {
            message = reader.next() => message,
            () = raised(&mut finish) => break,
        };
        let invocation = match message {
            Ok(Some(HubMessage::Invocation(invocation))) => invocation,
            Ok(Some(HubMessage::Completion(completion))) => {
                let result = match completion.result {
                    CompletionResult::Error(error) => Err(error),
                    _ => Ok(()),
                };
                let _ = completions.send((completion.invocation_id, result));
                continue;
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        };
        // ReceiveGroupMessage(group, user, text); ReceiveMessage(user, text).
        let (to_all, text_at) = match invocation.target.as_str() {
            "ReceiveGroupMessage" => (false, 2),
            "ReceiveMessage" => (true, 1),
            _ => continue,
        };
        let Some(probe) = invocation
            .arguments
            .deserialize::<&str>(text_at)
            .ok()
            .and_then(Probe::parse)
        else {
            continue;
        };
        counter.fetch_add(1, Ordering::Relaxed);
        arrivals.push(Arrival {
            sender: probe.sender,
            seq: probe.seq,
            to_all,
        });
    }
    arrivals
}

/// Invoke `method` with `arguments` and wait for its completion.
async fn invoke<A: serde::Serialize + ?Sized>(
    connection: &mut Live,
    method: &str,
    arguments: &A,
    step_timeout: Duration,
) -> Result<Result<(), String>, Interrupted> {
    connection.next_id += 1;
    let id = connection.next_id.to_string();
    let broken = |error: String| Interrupted::Broken(format!("{method}: {error}"));
    connection
        .writer
        .feed_invocation(Some(&id), method, arguments)
        .await
        .map_err(|error| broken(error.to_string()))?;
    connection
        .writer
        .flush()
        .await
        .map_err(|error| broken(error.to_string()))?;
    let answer = async {
        while let Some((answered, result)) = connection.completions.recv().await {
            if answered == id {
                return Ok(result);
            }
        }
        Err(broken("the connection closed before the completion".into()))
    };
    tokio::time::timeout(step_timeout, answer)
        .await
        .map_err(|_| broken(format!("no completion within {step_timeout:?}")))?
}

/// One stay: join a group, send to it (or to all) a few times, leave; an anchor's stay
/// lasts until the soak stops (or its connection breaks).
#[allow(clippy::too_many_arguments)]
async fn stay(
    plan: &ChurnPlan,
    connection: &mut Live,
    dice: &mut Dice,
    index: u32,
    seq: &mut u64,
    log: &mut ClientLog,
    stop: &watch::Receiver<bool>,
) -> Result<(), Interrupted> {
    let step = plan.client.step_timeout;
    let anchored = anchor_group(index, plan.groups);
    let group = anchored.unwrap_or_else(|| dice.below(u64::from(plan.groups)) as u32);
    let name = group_name(group);
    if let Err(error) = invoke(connection, "JoinGroup", &(&name,), step).await? {
        return Err(Interrupted::Broken(format!("JoinGroup refused: {error}")));
    }
    connection.log.memberships.push(Membership {
        group,
        joined: now_micros(),
        left: false,
    });
    let user = format!("soak-{index}");
    let sends = if anchored.is_some() {
        u32::MAX
    } else {
        SENDS_PER_STAY
    };
    for _ in 0..sends {
        if pause(dice.around(plan.send_interval), stop).await {
            return Err(Interrupted::Stopped);
        }
        *seq += 1;
        let target = if dice.below(ALL_ONE_IN) == 0 {
            Target::All
        } else {
            Target::Group(group)
        };
        let started = now_micros();
        let probe = Probe {
            sender: index,
            seq: *seq,
            sent_micros: started,
            written_micros: started,
        };
        let text = probe.to_text(plan.payload_len);
        let answer = match target {
            Target::All => invoke(connection, "SendMessage", &(&user, &text), step).await,
            Target::Group(_) => {
                invoke(
                    connection,
                    "SendMessageToGroup",
                    &(&name, &user, &text),
                    step,
                )
                .await
            }
        };
        let record = |accepted| SendRecord {
            sender: index,
            seq: *seq,
            target,
            started,
            accepted,
        };
        match answer {
            Ok(Ok(())) => log.sends.push(record(true)),
            Ok(Err(_)) => log.sends.push(record(false)),
            Err(interrupted) => {
                log.sends.push(record(false));
                return Err(interrupted);
            }
        }
    }
    if *stop.borrow() {
        return Err(Interrupted::Stopped);
    }
    // Left from the moment the leave is written: a message may or may not reach it now.
    if let Some(membership) = connection.log.memberships.last_mut() {
        membership.left = true;
    }
    if let Err(error) = invoke(connection, "LeaveGroup", &(&name,), step).await? {
        return Err(Interrupted::Broken(format!("LeaveGroup refused: {error}")));
    }
    Ok(())
}

/// The name of group number `group`, unique to this process.
fn group_name(group: u32) -> String {
    format!("soak-{}-{group}", std::process::id())
}

/// A connection dropped without [`close`] (the soak cut short) stops its reader too.
impl Drop for Live {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
