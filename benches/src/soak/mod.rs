//! The soak: many clients churning on two instances for a long while (joining and
//! leaving groups, messaging, reconnecting) while one instance's LISTEN connection is
//! killed at intervals, checking that nothing is lost, duplicated or reordered and that
//! the instances' memory levels off.
//!
//! Clients are spread over both instances; each loops over stays of a few messages in a
//! random group, but for one anchor per group that stays in it throughout (see
//! [`churn`]). Every message carries a [`Probe`](crate::probe::Probe)
//! with its sender and sequence number. When the time is up the clients stay where they
//! are, the deliveries drain, and the [`ledger`] counts what arrived against what must
//! have: only deliveries no timing can excuse are expected (module [`ledger`] says
//! which), so a loss it reports is a real one.

mod churn;
mod ledger;
mod observe;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use ledger::SoakTotals;
pub use observe::RssSummary;

use crate::client::ClientOptions;
use crate::cpu::CpuUsage;

/// Longest pause between memory readings (shorter soaks read more often, so there are
/// always about ten).
const RSS_EVERY: Duration = Duration::from_secs(10);

/// Share of the duration counted as warm-up: memory growth is measured from the first
/// reading after it.
const WARMUP_SHARE: f64 = 0.2;

/// The drain ends once no message arrived for this long (and both backplanes are
/// connected), or at the drain timeout.
const DRAIN_QUIET: Duration = Duration::from_secs(3);

/// Time the clients get to hand in their logs after the drain.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakScenario {
    /// How long the clients churn.
    pub duration: Duration,
    /// Clients, alternately on A and B.
    pub clients: usize,
    /// Pause between listener kills; `None`: no kills.
    pub kill_every: Option<Duration>,
    /// Mean pause before each message of a client.
    pub send_interval: Duration,
    /// A client reconnects after one stay in this many, on average.
    pub reconnect_one_in: u64,
    /// Largest memory growth after the warm-up still counted clean, in percent.
    pub rss_limit_pct: f64,
    /// Length of each message's text.
    pub payload_len: usize,
    /// Longest wait for the last deliveries once the clients stopped.
    pub drain_timeout: Duration,
    /// Connection settings.
    pub client: ClientOptions,
}

/// One instance under soak.
#[derive(Debug, Clone)]
pub struct SoakInstance {
    /// `http://host:port`.
    pub url: String,
    /// Its process, for memory readings (none: no readings).
    pub pid: Option<u32>,
    /// Its backplane node id, to find its LISTEN connection (none: never killed).
    pub node: Option<String>,
}

/// What a soak found; one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Always `soak`.
    pub scenario: &'static str,
    /// What was done, in words.
    pub description: String,
    /// Seconds the clients churned.
    pub duration_s: f64,
    /// Clients.
    pub clients: usize,
    /// Groups they picked from.
    pub groups: u32,
    /// Clients that stayed in one group the whole time (one per group), so that every
    /// message to a group is expected somewhere.
    pub anchors: usize,
    /// Mean pause before each message of a client, in seconds.
    pub send_interval_s: f64,
    /// A client reconnected after one stay in this many, on average.
    pub reconnect_one_in: u64,
    /// Seconds between listener kills, if any were planned.
    pub kill_every_s: Option<f64>,
    /// Messages and deliveries.
    #[serde(flatten)]
    pub totals: SoakTotals,
    /// Reconnects the clients made.
    pub reconnects: u64,
    /// LISTEN connections terminated.
    pub kills_done: u64,
    /// Kill attempts that found no LISTEN connection (it was reconnecting), or failed.
    pub kills_missed: u64,
    /// Why kills failed, or were not done.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kill_notes: Vec<String>,
    /// Connection failures and unanswered invocations on the client side.
    pub client_errors: u64,
    /// The first few of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_client_errors: Vec<String>,
    /// Memory of A and B (`null` where it could not be read).
    pub rss_a: Option<RssSummary>,
    /// See `rss_a`.
    pub rss_b: Option<RssSummary>,
    /// Growth at or above this fails the soak, in percent.
    pub rss_limit_pct: f64,
    /// Seconds the drain took.
    pub drain_s: f64,
    /// What A and B report about their backplane at the end (`/health`, `/metrics`).
    pub backplane_a: Value,
    /// See `backplane_a`.
    pub backplane_b: Value,
    /// Where the CPU went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuUsage>,
}

impl SoakReport {
    /// No loss, duplicate or reordering, deliveries expected at all, memory within the
    /// limit, and no envelope the servers gave up on.
    pub fn clean(&self) -> bool {
        let totals = &self.totals;
        let rss_ok = |rss: &Option<RssSummary>| {
            rss.as_ref()
                .is_none_or(|rss| rss.growth_pct < self.rss_limit_pct)
        };
        let nothing_given_up = |backplane: &Value| {
            backplane["health"]["envelopesLost"]
                .as_u64()
                .is_none_or(|lost| lost == 0)
        };
        totals.expected > 0
            && totals.lost == 0
            && totals.duplicated == 0
            && totals.out_of_order == 0
            && rss_ok(&self.rss_a)
            && rss_ok(&self.rss_b)
            && nothing_given_up(&self.backplane_a)
            && nothing_given_up(&self.backplane_b)
    }
}

/// Run the soak on `a` and `b`, killing listeners on the PostgreSQL at `database_url`
/// when given.
///
/// # Errors
///
/// Only when the clients cannot be collected; everything else is in the report.
pub async fn run(
    scenario: &SoakScenario,
    a: &SoakInstance,
    b: &SoakInstance,
    database_url: Option<&str>,
) -> Result<SoakReport, String> {
    let groups = u32::try_from((scenario.clients / 4).max(2)).unwrap_or(u32::MAX);
    let arrivals = Arc::new(AtomicU64::new(0));
    let plan = Arc::new(churn::ChurnPlan {
        groups,
        send_interval: scenario.send_interval,
        reconnect_one_in: scenario.reconnect_one_in.max(1),
        payload_len: scenario.payload_len,
        client: scenario.client,
        arrivals: arrivals.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let (finish, finished) = watch::channel(false);
    let mut clients = JoinSet::new();
    for index in 0..scenario.clients {
        let server = if index % 2 == 0 { &a.url } else { &b.url };
        clients.spawn(churn::run(
            plan.clone(),
            u32::try_from(index).unwrap_or(u32::MAX),
            server.clone(),
            stopped.clone(),
            finished.clone(),
        ));
    }

    let started = Instant::now();
    let seconds = || started.elapsed().as_secs_f64();
    let mut rss = [
        observe::RssSamples::default(),
        observe::RssSamples::default(),
    ];
    let pids = [a.pid, b.pid];
    let read_rss = |rss: &mut [observe::RssSamples; 2], at: f64| {
        for (samples, pid) in rss.iter_mut().zip(pids) {
            if let Some(pid) = pid {
                samples.take(pid, at);
            }
        }
    };
    let rss_every = RSS_EVERY
        .min(scenario.duration / 10)
        .max(Duration::from_millis(500));
    let mut rss_tick = tokio::time::interval(rss_every);
    let kill_every = scenario.kill_every.unwrap_or(Duration::MAX / 4);
    let mut kill_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + kill_every, kill_every);
    let nodes = [a.node.as_deref(), b.node.as_deref()];
    let mut kill_notes = Vec::new();
    let killing = match (scenario.kill_every, database_url, nodes) {
        (None, _, _) => false,
        (Some(_), Some(_), [Some(_), Some(_)]) => true,
        (Some(_), None, _) => {
            kill_notes.push("no kills: only a PostgreSQL backplane's listener is killed".into());
            false
        }
        (Some(_), Some(_), _) => {
            kill_notes.push("no kills: the instances' backplane node ids are unknown".into());
            false
        }
    };
    let (mut kills_done, mut kills_missed, mut next_victim) = (0, 0, 0);
    let end = tokio::time::sleep(scenario.duration);
    tokio::pin!(end);
    loop {
        tokio::select! {
            () = &mut end => break,
            _ = rss_tick.tick() => read_rss(&mut rss, seconds()),
            _ = kill_tick.tick(), if killing => {
                let (Some(url), Some(node)) = (database_url, nodes[next_victim]) else { break };
                next_victim = 1 - next_victim;
                match observe::kill_listener(url, node).await {
                    Ok(0) => kills_missed += 1,
                    Ok(killed) => kills_done += killed,
                    Err(error) => {
                        kills_missed += 1;
                        if kill_notes.len() < 5 {
                            kill_notes.push(error);
                        }
                    }
                }
            }
        }
    }
    let duration_s = seconds();
    read_rss(&mut rss, duration_s);
    let _ = stop.send(true);

    // Drain: until nothing arrived for a while and both backplanes are connected.
    let drain_started = Instant::now();
    let mut last_count = arrivals.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while drain_started.elapsed() < scenario.drain_timeout {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let count = arrivals.load(Ordering::Relaxed);
        if count != last_count {
            last_count = count;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= DRAIN_QUIET
            && observe::healthy(&a.url).await
            && observe::healthy(&b.url).await
        {
            break;
        }
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let _ = finish.send(true);

    let mut logs = Vec::with_capacity(scenario.clients);
    let collect = async {
        while let Some(log) = clients.join_next().await {
            logs.push(log.map_err(|error| format!("a soak client failed: {error}"))?);
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(COLLECT_TIMEOUT, collect)
        .await
        .map_err(|_| {
            format!("the soak clients did not hand in their logs within {COLLECT_TIMEOUT:?}")
        })??;

    let totals = ledger::tally(&logs);
    let errors: Vec<&String> = logs.iter().flat_map(|log| &log.errors).collect();
    let warmup = duration_s * WARMUP_SHARE;
    let round3 = crate::report::round3;
    Ok(SoakReport {
        scenario: "soak",
        description: "churn: clients on A and B join and leave groups, message them (and now \
                      and then everyone), reconnect, while one instance's LISTEN connection \
                      is killed at intervals"
            .into(),
        duration_s: round3(duration_s),
        clients: scenario.clients,
        groups,
        anchors: (0..scenario.clients)
            .filter(|&index| {
                churn::anchor_group(u32::try_from(index).unwrap_or(u32::MAX), groups).is_some()
            })
            .count(),
        send_interval_s: round3(scenario.send_interval.as_secs_f64()),
        reconnect_one_in: plan.reconnect_one_in,
        kill_every_s: scenario.kill_every.map(|every| round3(every.as_secs_f64())),
        totals,
        reconnects: logs.iter().map(|log| log.reconnects).sum(),
        kills_done,
        kills_missed,
        kill_notes,
        client_errors: errors.len() as u64,
        first_client_errors: errors
            .iter()
            .take(10)
            .map(|error| (*error).clone())
            .collect(),
        rss_a: rss[0].summary(warmup),
        rss_b: rss[1].summary(warmup),
        rss_limit_pct: scenario.rss_limit_pct,
        drain_s: round3(drain_s),
        backplane_a: observe::backplane_figures(&a.url).await,
        backplane_b: observe::backplane_figures(&b.url).await,
        cpu: None,
    })
}
