//! The command line: every flag with its default, and the names it takes (scenarios,
//! drivers, backplanes).

use std::path::PathBuf;

use benches::js_driver::JsProtocol;
use clap::{Parser, ValueEnum};

use crate::soak;

/// End-to-end load tool for hub-server: two instances on one backplane (PostgreSQL,
/// Redis, NATS; or one instance on the in-memory backplane), real SignalR WebSocket
/// clients, one JSON line per scenario.
#[derive(Debug, Parser)]
#[command(name = "hub-load", version)]
pub(crate) struct Cli {
    /// Scenarios to run, in this order whatever the order given.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "baseline,s1,s2,s3,burst,s4"
    )]
    pub(crate) scenarios: Vec<Scenario>,
    /// The backplane of the instances started here: `postgres` (two instances on
    /// --database-url), `redis` (two on --redis-url), `nats` (two on --nats-url, with
    /// JetStream), or `memory` (one instance alone, which is then both A and B: no
    /// backplane hop, the reference for what the others cost).
    #[arg(long, value_enum, default_value = "postgres")]
    pub(crate) backplane: BackplaneKind,
    /// PostgreSQL the instances share (default: BACKPLANE_TEST_DATABASE_URL, else the
    /// local server); also the baseline's database, whatever the backplane.
    #[arg(long, env = test_services::DATABASE_URL_VAR, hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// With `--backplane redis`: the Redis the instances share (a fresh key prefix
    /// `hub_load_<pid>`, its keys deleted at the end).
    #[arg(long, default_value = test_services::LOCAL_REDIS_URL)]
    pub(crate) redis_url: String,
    /// With `--backplane nats`: the NATS server (JetStream enabled) the instances share
    /// (a fresh stream `hub_load_<pid>`, deleted at the end).
    #[arg(long, default_value = test_services::LOCAL_NATS_URL)]
    pub(crate) nats_url: String,
    /// Run the selected scenarios this many times on the same instances (S4 on a fresh
    /// one each time), then print one `median` line per scenario and driver: the median
    /// of each figure and every run's value. Ratios to the baseline are taken within each
    /// run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub(crate) runs: u32,
    /// The hub-server executable (default: the one next to this program).
    #[arg(long)]
    pub(crate) hub_server: Option<PathBuf>,
    /// Backplane schema of the instances this program starts; created by them and
    /// dropped at the end (default: `hub_load_<pid>`). It must not exist yet: an existing
    /// schema is refused, never dropped.
    #[arg(long)]
    pub(crate) schema: Option<String>,
    /// Use this running instance as A (`http://host:port`) instead of starting one.
    #[arg(long, requires = "server_b")]
    pub(crate) server_a: Option<String>,
    /// Use this running instance as B.
    #[arg(long, requires = "server_a")]
    pub(crate) server_b: Option<String>,
    /// A tuning flag for the instances this program starts, passed to `hub-server` as
    /// given; repeat for more (`--server-arg=--max-parallel-invocations=256`). None by
    /// default: the instances run with the binary's own defaults, which is what users
    /// get. Every report line lists the flags passed (`server_flags`), so a tuned figure
    /// is never taken for the defaults.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) server_args: Vec<String>,
    /// Shorthand for `--server-arg=--max-parallel-invocations=N` (how many of one
    /// client's invocations the server runs at once). Not passed unless given.
    #[arg(long)]
    pub(crate) max_parallel_invocations: Option<u16>,
    /// Shorthand for `--server-arg=--synchronous-commit=MODE` (when the PostgreSQL
    /// backplane's deliveries and completions wait for the WAL flush; `hub-server --help`
    /// lists the modes). Not passed unless given.
    #[arg(long)]
    pub(crate) synchronous_commit: Option<String>,
    /// Which client drives S1, S2, S3 and the burst: `rust` (the `chat-client` library:
    /// pipelined invocations with completions, at most `--window` unanswered), `js` (the official
    /// `@microsoft/signalr` client in Node: `connection.send`, at most `--js-window`
    /// messages not yet delivered), or `rust,js` (each scenario once per driver).
    #[arg(long, value_delimiter = ',', default_value = "rust")]
    pub(crate) driver: Vec<Driver>,
    /// JS driver, S1 and S2: most messages sent and not yet delivered to every receiver
    /// (the official client's `send` has no completion to wait for).
    #[arg(long, default_value_t = 100)]
    pub(crate) js_window: usize,
    /// JS driver: messages sent (closed loop) and delivered to every receiver before each
    /// measured run, through the same code and connections, unreported, so Node's JIT has
    /// compiled the client as in an application that has been running; 0 measures a cold
    /// Node process (the first ~300 ms of a burst ran the client unoptimized). The warm-up
    /// goes through the servers too, and the JS lines' `cpu` figures include it.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) js_warmup: u64,
    /// JS driver: the hub protocol the official client speaks.
    #[arg(long, value_enum, default_value = "json")]
    pub(crate) js_protocol: JsProtocol,
    /// JS driver: the directory of `load-driver.js` and the pinned `package-lock.json`
    /// (default: `tests/js` of the source tree this program was built from); `npm ci`
    /// runs there when `node_modules` is missing.
    #[arg(long)]
    pub(crate) js_dir: Option<PathBuf>,
    /// Length of each message's text in bytes.
    #[arg(long, default_value_t = 64)]
    pub(crate) payload: usize,
    /// S1: messages.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) s1_messages: u64,
    /// Rust driver, S1 and S2: most invocations without a completion. Enough to keep
    /// any parallel-invocation limit of the server busy while the next batch is read.
    #[arg(long, default_value_t = 512)]
    pub(crate) window: usize,
    /// S2: messages.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) s2_messages: u64,
    /// S2: receivers on B.
    #[arg(long, default_value_t = 100)]
    pub(crate) s2_receivers: usize,
    /// S3: messages per second.
    #[arg(long, default_value_t = 500.0)]
    pub(crate) s3_rate: f64,
    /// S3: seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) s3_seconds: f64,
    /// S3: receivers on B.
    #[arg(long, default_value_t = 10)]
    pub(crate) s3_receivers: usize,
    /// Burst: messages per second offered.
    #[arg(long, default_value_t = 20_000.0)]
    pub(crate) burst_rate: f64,
    /// Burst: seconds of offering.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) burst_seconds: f64,
    /// S4: idle connections.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) s4_connections: usize,
    /// S4: connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub(crate) s4_concurrency: usize,
    /// Baseline: messages.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) baseline_messages: u64,
    /// The soak's flags (`--soak-*`).
    #[command(flatten)]
    pub(crate) soak: soak::SoakArgs,
    /// Seconds to wait for the last deliveries after the last send.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) drain_timeout: f64,
    /// Seconds the scenarios may take in all; then the run stops (servers stopped, schema
    /// dropped), reports the failure and exits 1.
    #[arg(long, default_value_t = 900.0)]
    pub(crate) time_limit: f64,
    /// Write every delivery of S1, S2, S3 and the burst to this CSV file (`scenario,
    /// receiver, seq, sent_us, arrived_us, latency_us`), to look at a latency tail
    /// beyond the percentiles: when it happened, which messages, which receivers.
    #[arg(long)]
    pub(crate) latency_log: Option<PathBuf>,
}

/// The client that drives the message scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Driver {
    /// The `chat-client` library, as `benches::client` sets it up.
    Rust,
    /// The official `@microsoft/signalr` client in Node (`benches::js_driver`).
    Js,
}

impl Driver {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Driver::Rust => "rust",
            Driver::Js => "js",
        }
    }
}

/// `--backplane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackplaneKind {
    Postgres,
    Redis,
    Nats,
    Memory,
}

/// `--scenarios`: what a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Scenario {
    Baseline,
    S1,
    S2,
    S3,
    Burst,
    S4,
    /// Not in the default list: minutes of churn (see `benches::soak`).
    Soak,
}

impl Cli {
    /// Seconds added to --time-limit when the soak runs: its own length.
    pub(crate) fn soak_allowance(&self) -> f64 {
        if self.scenarios.contains(&Scenario::Soak) {
            self.soak.soak_seconds * f64::from(self.runs)
        } else {
            0.0
        }
    }
}
