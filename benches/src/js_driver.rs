//! The message scenarios driven by the official SignalR JavaScript client
//! (`@microsoft/signalr`) in Node, so the figures include what that client does: its send
//! queue, which coalesces messages written while a send is in flight, its keep-alive
//! pings, its encoding. `hub-load --driver js`.
//!
//! The client runs in `tests/js/load-driver.js`, with the packages that
//! `tests/js/package-lock.json` pins (the one install the official-client tests use too;
//! `npm ci` runs there when `node_modules` is missing). The script sends each message with
//! `connection.send("SendMessageToGroup", ...)`, as an application does, keeping at most a
//! window of messages not yet delivered to every receiver (closed loop) or following a
//! schedule (open loop). It stamps each message with the same probe header as the Rust
//! driver's, in its own clock, and reports every arrival; the checks, latencies and
//! rates are then computed here by the same code as the Rust driver's (`tally`).
//!
//! The sender's connection runs on Node's main thread and the receivers' on one worker
//! thread, each with its own event loop, as a sending application and a receiving one
//! would. Before each measured run the script sends `warmup_messages` through the same
//! code and waits for them to arrive everywhere (unreported), so V8 has compiled the
//! client's paths: measured cold, the first ~300 ms of a 20,000 msg/s burst ran the client
//! unoptimized and queued up to ~90 ms inside Node, on the Rust driver's fast servers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::latency::Latencies;
use crate::probe::Probe;
use crate::scenario::{MessageRun, MessageScenario, Pacing, QUIET_PERIOD, group_name};
use crate::tally::{Observed, ReceiverOutcome, Sent, tally};

/// The script, in the driver's directory.
const SCRIPT: &str = "load-driver.js";

/// How long `npm ci` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Time allowed for Node to start and the connections to open, beyond sending and
/// draining.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(60);

/// The hub protocol the official client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JsProtocol {
    /// `JsonHubProtocol`, the client's default.
    Json,
    /// `MessagePackHubProtocol` from `@microsoft/signalr-protocol-msgpack`.
    Messagepack,
}

impl JsProtocol {
    /// The name the script and the report use.
    pub fn name(self) -> &'static str {
        match self {
            JsProtocol::Json => "json",
            JsProtocol::Messagepack => "messagepack",
        }
    }
}

/// How to run the official client.
#[derive(Debug, Clone)]
pub struct JsDriver {
    /// Directory of the script, `package.json` and the pinned `package-lock.json`.
    pub dir: PathBuf,
    /// The hub protocol it speaks.
    pub protocol: JsProtocol,
    /// Messages sent and delivered everywhere before each measured run, unreported (0:
    /// none, a cold process).
    pub warmup_messages: u64,
}

/// A scenario's result with the JavaScript driver.
#[derive(Debug)]
pub struct JsRun {
    /// The report and deliveries, as the Rust driver's.
    pub run: MessageRun,
    /// CPU seconds the Node process used (user + system), as it measured itself.
    pub node_cpu_s: f64,
}

/// `tests/js` of the source tree this program was built from.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("js")
}

impl JsDriver {
    /// Install the pinned packages with `npm ci` if `node_modules` lacks them, and
    /// return the `@microsoft/signalr` version installed.
    ///
    /// # Errors
    ///
    /// A message when the script is missing, npm cannot run or fails.
    pub async fn prepare(&self) -> Result<String, String> {
        if !self.dir.join(SCRIPT).is_file() {
            return Err(format!(
                "{} not found in {} (pass --js-dir)",
                SCRIPT,
                self.dir.display()
            ));
        }
        let client = self
            .dir
            .join("node_modules/@microsoft/signalr/package.json");
        let msgpack = self
            .dir
            .join("node_modules/@microsoft/signalr-protocol-msgpack/package.json");
        if !client.is_file() || !msgpack.is_file() {
            let output = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(INSTALL_TIMEOUT, output)
                .await
                .map_err(|_| format!("npm ci took longer than {INSTALL_TIMEOUT:?}"))?
                .map_err(|error| {
                    format!("cannot run npm (the JS driver needs Node.js 18+ and npm): {error}")
                })?;
            if !output.status.success() {
                return Err(format!(
                    "npm ci in {} failed ({}):\n{}{}",
                    self.dir.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        let manifest = std::fs::read_to_string(&client)
            .map_err(|error| format!("{}: {error}", client.display()))?;
        let manifest: serde_json::Value = serde_json::from_str(&manifest)
            .map_err(|error| format!("{}: {error}", client.display()))?;
        Ok(manifest["version"].as_str().unwrap_or("unknown").to_owned())
    }

    /// Run `scenario` with the official client: its sender on `server_a`, its
    /// receivers on `server_b`. For closed-loop pacing, the window counts messages sent
    /// and not yet delivered to every receiver (`send` has no completion to wait for).
    ///
    /// # Errors
    ///
    /// A message with the script's output when it could not set up or did not finish
    /// in time; problems during the run are reported in the report instead.
    pub async fn run(
        &self,
        scenario: &MessageScenario,
        server_a: &str,
        server_b: &str,
    ) -> Result<JsRun, String> {
        let (window, rate, send_seconds) = match scenario.pacing {
            Pacing::Window(window) => (Some(window.max(1)), None, scenario.messages as f64 / 100.0),
            Pacing::Rate(rate) => (None, Some(rate), scenario.messages as f64 / rate),
        };
        let config = json!({
            "a": server_a,
            "b": server_b,
            "group": group_name(&format!("{}-js", scenario.name)),
            "receivers": scenario.receivers,
            "messages": scenario.messages,
            "window": window,
            "rate": rate,
            "payload": scenario.payload_len,
            "protocol": self.protocol.name(),
            "warmupMessages": self.warmup_messages,
            "drainTimeoutMs": scenario.drain_timeout.as_millis() as u64,
            "quietMs": QUIET_PERIOD.as_millis() as u64,
        });
        // The warm-up: at least 10,000 deliveries a second, or a stall of a drain timeout.
        let warmup_seconds = (self.warmup_messages * scenario.receivers as u64) as f64 / 10_000.0;
        let limit = SETUP_ALLOWANCE
            + 3 * scenario.drain_timeout
            + Duration::from_secs_f64(send_seconds.clamp(0.0, 3600.0))
            + Duration::from_secs_f64(warmup_seconds.clamp(0.0, 3600.0));
        let mut child = Command::new("node")
            .arg(SCRIPT)
            .arg(config.to_string())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                format!("cannot run node (the JS driver needs Node.js 18+): {error}")
            })?;
        let stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let mut collected = Collected::new(scenario);
        let reading = async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                collected.take(&line)?;
            }
            child.wait().await.map_err(|error| error.to_string())
        };
        let status = tokio::time::timeout(limit, reading).await;
        let stderr = match tokio::time::timeout(Duration::from_secs(5), errors).await {
            Ok(Ok(text)) => text,
            _ => String::new(),
        };
        let failed = |why: String| {
            format!(
                "the JS driver ({}) {why}; its stderr:\n{}",
                scenario.name,
                stderr.trim_end()
            )
        };
        match status {
            Err(_) => return Err(failed(format!("did not finish within {limit:?}"))),
            Ok(Err(error)) => return Err(failed(error)),
            Ok(Ok(status)) if !status.success() => {
                return Err(failed(format!("failed ({status})")));
            }
            Ok(Ok(_)) => {}
        }
        let Some(node_cpu_s) = collected.cpu_s else {
            return Err(failed("ended without its final line".into()));
        };
        let mut run = tally(scenario, collected.observed()?);
        run.report.pacing = match scenario.pacing {
            Pacing::Window(window) => format!("window {window} not yet delivered"),
            Pacing::Rate(rate) => format!("open loop {rate}/s"),
        };
        Ok(JsRun { run, node_cpu_s })
    }
}

/// One line of the script's output.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    /// Arrivals at one receiver, in order: sender (-1: no probe), seq, sent, written,
    /// arrived.
    Arrivals {
        receiver: usize,
        arrivals: Vec<(i64, u64, u64, u64, u64)>,
    },
    /// The sender's side.
    Sent {
        started_us: u64,
        finished_us: u64,
        schedule_lag_us: Option<Vec<u64>>,
    },
    /// A connection or send that failed during the run.
    Error { message: String },
    /// The last line: the process's CPU time.
    Done { cpu_us: u64 },
}

/// What the script reported so far.
#[derive(Debug)]
struct Collected {
    /// One per receiver.
    outcomes: Vec<ReceiverOutcome>,
    /// The sender's line, once read.
    sent: Option<Sent>,
    /// Failures the script reported.
    errors: Vec<String>,
    /// The script's CPU seconds, from its last line.
    cpu_s: Option<f64>,
}

impl Collected {
    fn new(scenario: &MessageScenario) -> Self {
        Self {
            outcomes: (0..scenario.receivers)
                .map(|_| ReceiverOutcome::new(1, scenario.messages, scenario.keep_deliveries))
                .collect(),
            sent: None,
            errors: Vec::new(),
            cpu_s: None,
        }
    }

    /// Take one line of output; lines that are not JSON (a library's log) are skipped.
    fn take(&mut self, line: &str) -> Result<(), String> {
        if !line.starts_with('{') {
            return Ok(());
        }
        let line: Line = serde_json::from_str(line).map_err(|error| {
            let start: String = line.chars().take(200).collect();
            format!("printed a line it should not ({error}): {start}...")
        })?;
        match line {
            Line::Arrivals { receiver, arrivals } => {
                let outcome = self.outcomes.get_mut(receiver).ok_or_else(|| {
                    format!("reported receiver {receiver}, which it was not given")
                })?;
                for (sender, seq, sent_micros, written_micros, arrived) in arrivals {
                    let probe = u32::try_from(sender).ok().map(|sender| Probe {
                        sender,
                        seq,
                        sent_micros,
                        written_micros,
                    });
                    outcome.record(probe, arrived);
                }
            }
            Line::Sent {
                started_us,
                finished_us,
                schedule_lag_us,
            } => {
                self.sent = Some(Sent {
                    started: started_us,
                    finished: finished_us,
                    schedule_lag: schedule_lag_us.map(|lags| {
                        let mut latencies = Latencies::with_capacity(lags.len());
                        lags.into_iter().for_each(|lag| latencies.record(lag));
                        latencies.summary()
                    }),
                });
            }
            Line::Error { message } => self.errors.push(message),
            Line::Done { cpu_us } => self.cpu_s = Some(cpu_us as f64 / 1e6),
        }
        Ok(())
    }

    fn observed(self) -> Result<Observed, String> {
        let sent = self
            .sent
            .ok_or("the JS driver did not report its sending")?;
        Ok(Observed {
            sent,
            outcomes: self.outcomes,
            // `send` asks for no completion: a refusal is invisible to this client.
            refused: 0,
            first_refusal: None,
            connection_errors: self.errors,
        })
    }
}
