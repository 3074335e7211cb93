//! `hub-load`: the end-to-end load tool. Starts two `hub-server` instances sharing one
//! backplane (PostgreSQL by default; Redis, NATS JetStream, or one instance on the
//! in-memory backplane with `--backplane`), or uses running ones, with the binary's
//! defaults unless tuning flags are asked for, drives real SignalR WebSocket clients
//! against their chat hub (this program's own, the official JavaScript client in Node,
//! or both), and prints one JSON line per scenario and driver, labelled with both; with
//! `--runs N`, N runs and then the medians. See BENCHMARKS.md.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use benches::baseline::{self, BaselineScenario};
use benches::client::ClientOptions;
use benches::cpu::CpuSnapshot;
use benches::database;
use benches::idle::{self, IdleScenario};
use benches::js_driver::{self, JsDriver, JsProtocol};
use benches::medians::Runs;
use benches::report::{IdleReport, Labelled, emit, round3};
use benches::scenario;
use benches::servers::{self, BackplaneTarget, ServerConfig, ServerProcess};
use clap::{Parser, ValueEnum};
use serde_json::json;

mod lifecycle;
mod settings;
mod soak;

use lifecycle::{Interrupts, Owned};
use settings::{message_scenario, server_flags, server_settings};

/// Time allowed for connecting to the database and starting the instances.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(90);

/// Time allowed for stopping the servers and dropping the schema at the end, before the
/// program gives up on them.
const CLEANUP_ALLOWANCE: Duration = Duration::from_secs(60);

/// End-to-end load tool for hub-server: two instances on one backplane (PostgreSQL,
/// Redis, NATS; or one instance on the in-memory backplane), real SignalR WebSocket
/// clients, one JSON line per scenario.
#[derive(Debug, Parser)]
#[command(name = "hub-load", version)]
struct Cli {
    /// Scenarios to run, in this order whatever the order given.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "baseline,s1,s2,s3,burst,s4"
    )]
    scenarios: Vec<Scenario>,
    /// The backplane of the instances started here: `postgres` (two instances on
    /// --database-url), `redis` (two on --redis-url), `nats` (two on --nats-url, with
    /// JetStream), or `memory` (one instance alone, which is then both A and B: no
    /// backplane hop, the reference for what the others cost).
    #[arg(long, value_enum, default_value = "postgres")]
    backplane: BackplaneKind,
    /// PostgreSQL the instances share (default: BACKPLANE_TEST_DATABASE_URL, else the
    /// local server); also the baseline's database, whatever the backplane.
    #[arg(long, env = test_services::DATABASE_URL_VAR, hide_env_values = true)]
    database_url: Option<String>,
    /// With `--backplane redis`: the Redis the instances share (a fresh key prefix
    /// `hub_load_<pid>`, its keys deleted at the end).
    #[arg(long, default_value = test_services::LOCAL_REDIS_URL)]
    redis_url: String,
    /// With `--backplane nats`: the NATS server (JetStream enabled) the instances share
    /// (a fresh stream `hub_load_<pid>`, deleted at the end).
    #[arg(long, default_value = test_services::LOCAL_NATS_URL)]
    nats_url: String,
    /// Run the selected scenarios this many times on the same instances (S4 on a fresh
    /// one each time), then print one `median` line per scenario and driver: the median
    /// of each figure and every run's value. Ratios to the baseline are taken within each
    /// run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    runs: u32,
    /// The hub-server executable (default: the one next to this program).
    #[arg(long)]
    hub_server: Option<PathBuf>,
    /// Backplane schema of the instances this program starts; created by them and
    /// dropped at the end (default: `hub_load_<pid>`). It must not exist yet: an existing
    /// schema is refused, never dropped.
    #[arg(long)]
    schema: Option<String>,
    /// Use this running instance as A (`http://host:port`) instead of starting one.
    #[arg(long, requires = "server_b")]
    server_a: Option<String>,
    /// Use this running instance as B.
    #[arg(long, requires = "server_a")]
    server_b: Option<String>,
    /// A tuning flag for the instances this program starts, passed to `hub-server` as
    /// given; repeat for more (`--server-arg=--max-parallel-invocations=256`). None by
    /// default: the instances run with the binary's own defaults, which is what users
    /// get. Every report line lists the flags passed (`server_flags`), so a tuned figure
    /// is never taken for the defaults.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Shorthand for `--server-arg=--max-parallel-invocations=N` (how many of one
    /// client's invocations the server runs at once). Not passed unless given.
    #[arg(long)]
    max_parallel_invocations: Option<u16>,
    /// Shorthand for `--server-arg=--synchronous-commit=MODE` (when the PostgreSQL
    /// backplane's deliveries and completions wait for the WAL flush; `hub-server --help`
    /// lists the modes). Not passed unless given.
    #[arg(long)]
    synchronous_commit: Option<String>,
    /// Which client drives S1, S2, S3 and the burst: `rust` (this program's lean client:
    /// invocations with completions, at most `--window` unanswered), `js` (the official
    /// `@microsoft/signalr` client in Node: `connection.send`, at most `--js-window`
    /// messages not yet delivered), or `rust,js` (each scenario once per driver).
    #[arg(long, value_delimiter = ',', default_value = "rust")]
    driver: Vec<Driver>,
    /// JS driver, S1 and S2: most messages sent and not yet delivered to every receiver
    /// (the official client's `send` has no completion to wait for).
    #[arg(long, default_value_t = 100)]
    js_window: usize,
    /// JS driver: the hub protocol the official client speaks.
    #[arg(long, value_enum, default_value = "json")]
    js_protocol: JsProtocol,
    /// JS driver: the directory of `load-driver.js` and the pinned `package-lock.json`
    /// (default: `tests/js` of the source tree this program was built from); `npm ci`
    /// runs there when `node_modules` is missing.
    #[arg(long)]
    js_dir: Option<PathBuf>,
    /// Length of each message's text in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// S1: messages.
    #[arg(long, default_value_t = 20_000)]
    s1_messages: u64,
    /// Rust driver, S1 and S2: most invocations without a completion. Enough to keep
    /// any parallel-invocation limit of the server busy while the next batch is read.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// S2: messages.
    #[arg(long, default_value_t = 2_000)]
    s2_messages: u64,
    /// S2: receivers on B.
    #[arg(long, default_value_t = 100)]
    s2_receivers: usize,
    /// S3: messages per second.
    #[arg(long, default_value_t = 500.0)]
    s3_rate: f64,
    /// S3: seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    s3_seconds: f64,
    /// S3: receivers on B.
    #[arg(long, default_value_t = 10)]
    s3_receivers: usize,
    /// Burst: messages per second offered.
    #[arg(long, default_value_t = 20_000.0)]
    burst_rate: f64,
    /// Burst: seconds of offering.
    #[arg(long, default_value_t = 1.0)]
    burst_seconds: f64,
    /// S4: idle connections.
    #[arg(long, default_value_t = 10_000)]
    s4_connections: usize,
    /// S4: connections being opened at once.
    #[arg(long, default_value_t = 64)]
    s4_concurrency: usize,
    /// Baseline: messages.
    #[arg(long, default_value_t = 5_000)]
    baseline_messages: u64,
    /// The soak's flags (`--soak-*`).
    #[command(flatten)]
    soak: soak::SoakArgs,
    /// Seconds to wait for the last deliveries after the last send.
    #[arg(long, default_value_t = 20.0)]
    drain_timeout: f64,
    /// Seconds the scenarios may take in all; then the run stops (servers stopped, schema
    /// dropped), reports the failure and exits 1.
    #[arg(long, default_value_t = 900.0)]
    time_limit: f64,
    /// Write every delivery of S1, S2, S3 and the burst to this CSV file (`scenario,
    /// receiver, seq, sent_us, arrived_us, latency_us`), to look at a latency tail
    /// beyond the percentiles: when it happened, which messages, which receivers.
    #[arg(long)]
    latency_log: Option<PathBuf>,
}

/// The client that drives the message scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Driver {
    /// This program's own client (`benches::client`).
    Rust,
    /// The official `@microsoft/signalr` client in Node (`benches::js_driver`).
    Js,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Rust => "rust",
            Driver::Js => "js",
        }
    }
}

/// `--backplane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackplaneKind {
    Postgres,
    Redis,
    Nats,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    Baseline,
    S1,
    S2,
    S3,
    Burst,
    S4,
    /// Not in the default list: minutes of churn (see `benches::soak`).
    Soak,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.scenarios.sort();
    cli.scenarios.dedup();
    cli.driver.sort();
    cli.driver.dedup();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Setup and scenarios are bounded inside `run`, which then still stops the servers
    // and drops the schema; this outer bound only covers a clean-up that hangs.
    let last_resort = Duration::from_secs_f64(cli.time_limit + soak_allowance(&cli))
        + SETUP_ALLOWANCE
        + CLEANUP_ALLOWANCE;
    let result = runtime.block_on(async {
        match tokio::time::timeout(last_resort, run(&cli)).await {
            Ok(result) => result,
            Err(_) => Err(format!("the run did not end within {last_resort:?}")),
        }
    });
    // Servers started by this program are killed when their handles drop (here at the
    // latest); the runtime shutdown aborts whatever clients are left.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "error: some scenarios were not clean (messages lost, duplicated, reordered \
                 or refused, connections failed, or idle connections dropped): see their lines"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Seconds added to --time-limit when the soak runs: its own length.
fn soak_allowance(cli: &Cli) -> f64 {
    if cli.scenarios.contains(&Scenario::Soak) {
        cli.soak.soak_seconds * f64::from(cli.runs)
    } else {
        0.0
    }
}

/// The two instances: started here, or given.
#[derive(Debug)]
struct Instances {
    a: String,
    b: String,
    /// Process of A, for CPU accounting (and S4's memory readings on given instances).
    a_pid: Option<u32>,
    /// Process of B, for CPU accounting.
    b_pid: Option<u32>,
    /// How the instances were started, if this program started them (S4 then starts a
    /// fresh one the same way).
    config: Option<ServerConfig>,
    /// The backplane schema of the instances started here.
    schema: Option<String>,
}

/// Run the selected scenarios; `Ok(false)` if any was not clean.
async fn run(cli: &Cli) -> Result<bool, String> {
    let mut interrupts = Interrupts::register()?;
    let database_url = cli
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| test_services::LOCAL_DATABASE_URL.to_owned());
    let mut owned = Owned::default();
    let limit = Duration::from_secs_f64(cli.time_limit + soak_allowance(cli));
    let work = async {
        let setup = async {
            // The database is only needed for its backplane or the baseline.
            let database = if cli.backplane == BackplaneKind::Postgres
                || cli.scenarios.contains(&Scenario::Baseline)
            {
                database::facts(&database_url).await?
            } else {
                json!("not used")
            };
            let instances = start_instances(cli, &database_url, &mut owned).await?;
            Ok::<_, String>((database, instances))
        };
        let (database, mut instances) = tokio::time::timeout(SETUP_ALLOWANCE, setup)
            .await
            .map_err(|_| format!("setting up took longer than {SETUP_ALLOWANCE:?}"))??;
        let scenarios = run_scenarios(cli, &database_url, &database, &mut instances, &mut owned);
        tokio::time::timeout(limit, scenarios)
            .await
            .map_err(|_| format!("the scenarios exceeded --time-limit {limit:?}"))?
    };
    // Interrupted or out of time, the servers are still stopped and the schema dropped.
    let outcome = tokio::select! {
        outcome = work => outcome,
        signal = interrupts.recv() => Err(format!("interrupted by {signal}; stopping")),
    };
    owned.release(&database_url).await;
    outcome
}

async fn start_instances(
    cli: &Cli,
    database_url: &str,
    owned: &mut Owned,
) -> Result<Instances, String> {
    if let (Some(a), Some(b)) = (&cli.server_a, &cli.server_b) {
        let pid_of = |url: &str| servers::port_of(url).and_then(servers::pid_listening_on);
        return Ok(Instances {
            a: a.trim_end_matches('/').to_owned(),
            b: b.trim_end_matches('/').to_owned(),
            a_pid: pid_of(a),
            b_pid: pid_of(b),
            config: None,
            schema: None,
        });
    }
    let binary = servers::locate_hub_server(cli.hub_server.as_deref())?;
    let name = cli
        .schema
        .clone()
        .unwrap_or_else(|| format!("hub_load_{}", std::process::id()));
    let backplane = match cli.backplane {
        BackplaneKind::Postgres => {
            owned.claim_schema(database_url, &name).await?;
            BackplaneTarget::Postgres {
                url: database_url.to_owned(),
                schema: name.clone(),
            }
        }
        BackplaneKind::Redis => BackplaneTarget::Redis {
            url: cli.redis_url.clone(),
            prefix: name.clone(),
        },
        BackplaneKind::Nats => BackplaneTarget::Nats {
            url: cli.nats_url.clone(),
            prefix: name.clone(),
        },
        BackplaneKind::Memory => BackplaneTarget::Memory,
    };
    if matches!(
        backplane,
        BackplaneTarget::Redis { .. } | BackplaneTarget::Nats { .. }
    ) {
        owned.purges.push(backplane.clone());
    }
    let config = ServerConfig {
        binary,
        backplane,
        flags: server_flags(cli),
    };
    let a = ServerProcess::start(&config, "load-a").await?;
    let (a_url, a_pid) = (a.url.clone(), a.pid);
    owned.servers.push(a);
    let (b_url, b_pid) = if config.backplane == BackplaneTarget::Memory {
        // One instance: senders and receivers meet on it (B's CPU is A's).
        (a_url.clone(), None)
    } else {
        let b = ServerProcess::start(&config, "load-b").await?;
        let started = (b.url.clone(), Some(b.pid));
        owned.servers.push(b);
        started
    };
    let schema = matches!(config.backplane, BackplaneTarget::Postgres { .. }).then_some(name);
    Ok(Instances {
        a: a_url,
        b: b_url,
        a_pid: Some(a_pid),
        b_pid,
        config: Some(config),
        schema,
    })
}

async fn run_scenarios(
    cli: &Cli,
    database_url: &str,
    database: &serde_json::Value,
    instances: &mut Instances,
    owned: &mut Owned,
) -> Result<bool, String> {
    let mut latency_log = match &cli.latency_log {
        Some(path) => {
            let create = || -> std::io::Result<_> {
                let mut log = std::io::BufWriter::new(std::fs::File::create(path)?);
                writeln!(log, "{}", scenario::DELIVERY_LOG_HEADER)?;
                Ok(log)
            };
            let log =
                create().map_err(|error| format!("--latency-log {}: {error}", path.display()))?;
            Some((path, log))
        }
        None => None,
    };
    let messages_selected = cli.scenarios.iter().any(|s| {
        matches!(
            s,
            Scenario::S1 | Scenario::S2 | Scenario::S3 | Scenario::Burst
        )
    });
    let js = if messages_selected && cli.driver.contains(&Driver::Js) {
        let driver = JsDriver {
            dir: cli.js_dir.clone().unwrap_or_else(js_driver::default_dir),
            protocol: cli.js_protocol,
        };
        let version = driver.prepare().await?;
        Some((driver, version))
    } else {
        None
    };
    let (flags, server_settings) = server_settings(instances.config.as_ref()).await;
    eprintln!(
        "hub-load: hub-server instances run with {}",
        match flags.as_array() {
            Some(list) => format!("TUNED flags (not the defaults): {}", json!(list)),
            None => flags.as_str().unwrap_or_default().to_owned(),
        }
    );
    emit(&settings::settings_line(
        cli,
        instances,
        database,
        js.as_ref().map(|(_, version)| version.as_str()),
        &flags,
        &server_settings,
    ));
    let mut clean = true;
    let mut runs = Runs::default();
    let total_runs = cli.runs as usize;
    let mut baseline_schema = instances.schema.clone();
    for run in 1..=total_runs {
        let mut output = |line: &dyn erased::Line| {
            let mut value = line.value();
            if total_runs > 1 {
                if let Some(object) = value.as_object_mut() {
                    object.insert("run".into(), json!(run));
                }
                runs.keep(run, &value);
            }
            emit(&value);
        };
        if total_runs > 1 {
            eprintln!("hub-load: run {run} of {total_runs}");
        }
        clean &= run_once(
            cli,
            database_url,
            instances,
            owned,
            &flags,
            &js,
            &mut latency_log,
            &mut baseline_schema,
            &mut output,
        )
        .await?;
    }
    if total_runs > 1 {
        for line in runs.medians() {
            emit(&line);
        }
    }
    Ok(clean)
}

/// Report lines of any type, as JSON values (so a run number can be added).
mod erased {
    /// A report line.
    pub(super) trait Line {
        fn value(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Line for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_else(
                |error| serde_json::json!({"error": format!("cannot print a report: {error}")}),
            )
        }
    }
}

/// The log of every delivery, if asked for.
type LatencyLog<'a> = Option<(&'a PathBuf, std::io::BufWriter<std::fs::File>)>;

/// One run of the selected scenarios; `Ok(false)` if any was not clean.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    cli: &Cli,
    database_url: &str,
    instances: &Instances,
    owned: &mut Owned,
    flags: &serde_json::Value,
    js: &Option<(JsDriver, String)>,
    latency_log: &mut LatencyLog<'_>,
    baseline_schema: &mut Option<String>,
    output: &mut dyn FnMut(&dyn erased::Line),
) -> Result<bool, String> {
    let drain = Duration::from_secs_f64(cli.drain_timeout);
    let client = ClientOptions::default();
    let mut clean = true;
    let mut baseline_rate = None;
    for selected in &cli.scenarios {
        let cpu_snapshot = || CpuSnapshot::take(instances.a_pid, instances.b_pid);
        match selected {
            Scenario::Baseline => {
                let cpu_before = cpu_snapshot();
                let schema = match baseline_schema {
                    Some(schema) => schema.clone(),
                    None => {
                        let schema = format!("hub_load_baseline_{}", std::process::id());
                        owned.claim_schema(database_url, &schema).await?;
                        *baseline_schema = Some(schema.clone());
                        schema
                    }
                };
                let scenario = BaselineScenario {
                    messages: cli.baseline_messages,
                    payload_len: cli.payload,
                    time_limit: Duration::from_secs(60),
                    drain_timeout: drain,
                };
                let mut report = baseline::run(&scenario, database_url, &schema).await?;
                baseline_rate = Some(report.deliveries_per_s);
                report.cpu = Some(cpu_before.until(&cpu_snapshot()));
                clean &= report.clean();
                output(&report);
            }
            Scenario::S1 | Scenario::S2 | Scenario::S3 | Scenario::Burst => {
                for driver in &cli.driver {
                    let cpu_before = cpu_snapshot();
                    let scenario = message_scenario(cli, *selected, *driver, client, drain);
                    let (run, node_cpu_s) = match (driver, js) {
                        (Driver::Js, Some((js, _))) => {
                            let run = js.run(&scenario, &instances.a, &instances.b).await?;
                            (run.run, Some(run.node_cpu_s))
                        }
                        _ => (
                            scenario::run(&scenario, &instances.a, &instances.b).await?,
                            None,
                        ),
                    };
                    if let Some((path, log)) = latency_log {
                        let name = match driver {
                            Driver::Rust => run.report.scenario.clone(),
                            Driver::Js => format!("{}-js", run.report.scenario),
                        };
                        scenario::write_deliveries(log, &name, &run.deliveries)
                            .and_then(|()| log.flush())
                            .map_err(|error| format!("writing {}: {error}", path.display()))?;
                    }
                    let mut report = run.report;
                    if *selected == Scenario::S1 {
                        report.ratio_to_baseline = baseline_rate
                            .filter(|rate| *rate > 0.0)
                            .map(|rate| round3(report.deliveries_per_s / rate));
                    }
                    let cpu = cpu_before.until(&cpu_snapshot());
                    report.cpu = Some(match node_cpu_s {
                        Some(seconds) => cpu.with_node_driver(seconds),
                        None => cpu,
                    });
                    clean &= report.clean();
                    output(&Labelled {
                        report: &report,
                        driver: Some(driver.name()),
                        server_flags: Some(flags),
                    });
                }
            }
            Scenario::Soak => {
                let report = soak::run(cli, database_url, instances, owned, client).await?;
                clean &= report.clean();
                output(&Labelled {
                    report: &report,
                    driver: Some(Driver::Rust.name()),
                    server_flags: Some(flags),
                });
            }
            Scenario::S4 => {
                let report = run_s4(cli, client, instances, owned).await?;
                clean &= report.clean();
                output(&Labelled {
                    report: &report,
                    driver: Some(Driver::Rust.name()),
                    server_flags: Some(flags),
                });
            }
        }
        for server in &mut owned.servers {
            if !server.is_running() {
                return Err(format!(
                    "{} exited during {selected:?}; its last output:\n{}",
                    server.name,
                    server.recent_output()
                ));
            }
        }
    }
    Ok(clean)
}

/// S4 on a freshly started instance when this program started the servers (a server
/// that ran the other scenarios has freed heap that new connections reuse, which would
/// bias the figure low), else on instance A.
async fn run_s4(
    cli: &Cli,
    client: ClientOptions,
    instances: &Instances,
    owned: &mut Owned,
) -> Result<IdleReport, String> {
    let (url, pid, fresh) = match &instances.config {
        Some(config) => {
            let server = ServerProcess::start(config, "load-s4").await?;
            let started = (server.url.clone(), server.pid, true);
            owned.servers.push(server);
            started
        }
        None => {
            let pid = instances.a_pid.ok_or_else(|| {
                format!(
                    "S4 needs the process of instance A ({}) to read its memory, and no \
                     process on this machine listens on its port",
                    instances.a
                )
            })?;
            (instances.a.clone(), pid, false)
        }
    };
    let scenario = IdleScenario {
        connections: cli.s4_connections,
        concurrency: cli.s4_concurrency,
        settle_timeout: Duration::from_secs(60),
        client: ClientOptions {
            read_buffer_size: 4 * 1024,
            ..client
        },
        fresh_instance: fresh,
    };
    // The S4 instance's CPU is reported as A's.
    let cpu_before = CpuSnapshot::take(Some(pid), instances.b_pid);
    let mut report = idle::run(&scenario, &url, pid).await?;
    report.cpu = Some(cpu_before.until(&CpuSnapshot::take(Some(pid), instances.b_pid)));
    if fresh && let Some(at) = owned.servers.iter().position(|server| server.pid == pid) {
        let mut server = owned.servers.remove(at);
        if !server.is_running() {
            return Err(format!(
                "{} exited during S4; its last output:\n{}",
                server.name,
                server.recent_output()
            ));
        }
        server.stop().await;
    }
    Ok(report)
}
