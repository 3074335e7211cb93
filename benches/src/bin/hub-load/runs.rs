//! Running the selected scenarios: each run in the order `--scenarios` sorts them, the
//! report line of each (numbered with `--runs N`, then the medians), the latency log,
//! and S4 on a fresh instance.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use benches::baseline::{self, BaselineScenario};
use benches::client::ClientOptions;
use benches::cpu::CpuSnapshot;
use benches::idle::{self, IdleScenario};
use benches::js_driver::{self, JsDriver};
use benches::medians::Runs;
use benches::report::{IdleReport, Labelled, emit, round3};
use benches::scenario;
use benches::servers::ServerProcess;
use serde_json::json;

use crate::cli::{Cli, Driver, Scenario};
use crate::instances::Instances;
use crate::lifecycle::Owned;
use crate::settings::{self, message_scenario, server_settings};
use crate::soak;

/// Run the selected scenarios `--runs` times on `instances`, printing a line for each
/// (and the medians); `Ok(false)` if any was not clean.
pub(crate) async fn run_scenarios(
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
            warmup_messages: cli.js_warmup,
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
