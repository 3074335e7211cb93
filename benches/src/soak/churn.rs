//! One soak client: connects, joins a group, sends a few messages to it (now and then
//! to everyone), leaves, sometimes reconnects, and writes all of it down in a
//! [`ClientLog`]; when told to stop it stays where it is, so its last stays can be
//! checked, and reads until told to finish.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat_client::{Arguments, HubConnection, InvokeError};
use serde::de::IgnoredAny;
use tokio::sync::watch;

use super::ledger::{Arrival, ClientLog, ConnectionLog, Membership, SendRecord, Target};
use crate::client::{ClientOptions, hub_connection};
use crate::probe::{Probe, now_micros};

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

/// A connection in use: the connection, what its handlers record, its log.
struct Live {
    connection: HubConnection,
    /// The probes that arrived, in order.
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    /// Why the connection was lost, once it was.
    lost: watch::Receiver<Option<String>>,
    log: ConnectionLog,
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
    // Stay put (the connection keeps itself alive) until the drain is over.
    let mut finish = finish;
    tokio::select! {
        lost = connection.lost.wait_for(Option::is_some) => {
            if let Ok(reason) = lost {
                log.errors.push(format!("lost while holding: {}", reason.as_deref().unwrap_or("")));
            }
            connection.log.closed = true;
        }
        () = raised(&mut finish) => {}
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

/// Connect, recording the probes that arrive until `finish`.
async fn open(
    plan: &ChurnPlan,
    server: &str,
    finish: watch::Receiver<bool>,
) -> Result<Live, String> {
    let connection = hub_connection(server, plan.client)
        .build()
        .map_err(|error| format!("connecting: {error}"))?;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    // ReceiveGroupMessage(group, user, text); ReceiveMessage(user, text).
    for (method, to_all, text_at) in [
        ("ReceiveGroupMessage", false, 2),
        ("ReceiveMessage", true, 1),
    ] {
        let (arrivals, counter, finish) = (arrivals.clone(), plan.arrivals.clone(), finish.clone());
        connection.on(method, move |arguments: Arguments| {
            if *finish.borrow() {
                return;
            }
            let Some(probe) = arguments
                .deserialize::<&str>(text_at)
                .ok()
                .and_then(Probe::parse)
            else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            arrivals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arrival {
                    sender: probe.sender,
                    seq: probe.seq,
                    to_all,
                });
        });
    }
    let (lost_tx, lost) = watch::channel(None);
    connection.on_closed(move |reason| {
        if let Some(reason) = reason {
            lost_tx.send_replace(Some(reason.to_string()));
        }
    });
    connection
        .start()
        .await
        .map_err(|error| format!("connecting: {error}"))?;
    Ok(Live {
        connection,
        arrivals,
        lost,
        log: ConnectionLog {
            opened: now_micros(),
            ..ConnectionLog::default()
        },
    })
}

/// Close `connection` (if it still is) and file its log with what arrived;
/// `early` when the soak is not over, so none of its stays expect deliveries.
async fn close(mut connection: Live, log: &mut ClientLog, early: bool) {
    connection.log.closed |= early;
    if tokio::time::timeout(Duration::from_secs(5), connection.connection.stop())
        .await
        .is_err()
    {
        log.errors
            .push("a connection did not close within 5 s".into());
    }
    // Stopped: its handlers run no more.
    connection.log.arrivals = std::mem::take(
        &mut *connection
            .arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    log.connections.push(std::mem::take(&mut connection.log));
}

/// Invoke `method` with `arguments` and wait for its completion.
async fn invoke<A: serde::Serialize>(
    connection: &Live,
    method: &str,
    arguments: A,
    step_timeout: Duration,
) -> Result<Result<(), String>, Interrupted> {
    let broken = |error: String| Interrupted::Broken(format!("{method}: {error}"));
    let answer = tokio::time::timeout(
        step_timeout,
        connection
            .connection
            .invoke::<IgnoredAny, _>(method, arguments),
    )
    .await
    .map_err(|_| broken(format!("no completion within {step_timeout:?}")))?;
    match answer {
        Ok(_) => Ok(Ok(())),
        Err(InvokeError::Hub(error)) => Ok(Err(error)),
        Err(error) => Err(broken(error.to_string())),
    }
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
    if let Err(error) = invoke(connection, "JoinGroup", (&name,), step).await? {
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
            Target::All => invoke(connection, "SendMessage", (&user, &text), step).await,
            Target::Group(_) => {
                invoke(
                    connection,
                    "SendMessageToGroup",
                    (&name, &user, &text),
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
    if let Err(error) = invoke(connection, "LeaveGroup", (&name,), step).await? {
        return Err(Interrupted::Broken(format!("LeaveGroup refused: {error}")));
    }
    Ok(())
}

/// The name of group number `group`, unique to this process.
fn group_name(group: u32) -> String {
    format!("soak-{}-{group}", std::process::id())
}
