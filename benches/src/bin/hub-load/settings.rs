//! What a run is measured with: the instances' flags (none unless asked for), the
//! settings line that opens every report, and each message scenario's sizes.

use std::time::Duration;

use benches::client::ClientOptions;
use benches::report::round3;
use benches::scenario::{MessageScenario, Pacing};
use benches::server_flags::{self, ServerFlags};
use benches::servers::{BackplaneTarget, RUN_FLAGS, ServerConfig};
use serde_json::{Value, json};

use crate::cli::{Cli, Driver, Scenario};
use crate::instances::Instances;

/// The tuning flags the instances get: `--server-arg`s, then the shorthands given.
pub(super) fn server_flags(cli: &Cli) -> ServerFlags {
    let mut args = cli.server_args.clone();
    if let Some(parallel) = cli.max_parallel_invocations {
        args.push(format!("--max-parallel-invocations={parallel}"));
    }
    if let Some(mode) = &cli.synchronous_commit {
        args.push(format!("--synchronous-commit={mode}"));
    }
    ServerFlags::new(args)
}

/// What the settings line says about the instances' flags: which were passed, the
/// binary's defaults (read from its `--help`) and what ran, leaving out the flags every
/// instance gets to run here ([`RUN_FLAGS`]).
pub(super) async fn server_settings(
    config: Option<&ServerConfig>,
) -> (serde_json::Value, serde_json::Value) {
    let Some(config) = config else {
        let unknown = json!("unknown: instances started by someone else");
        return (unknown.clone(), unknown);
    };
    let label = config.flags.label();
    let settings = match server_flags::binary_defaults(&config.binary).await {
        Ok(mut defaults) => {
            defaults.retain(|flag, _| !RUN_FLAGS.contains(&flag.as_str()));
            let effective = server_flags::effective(&defaults, &config.flags);
            json!({"binary_defaults": defaults, "effective": effective})
        }
        Err(error) => json!({"binary_defaults": error}),
    };
    (label, settings)
}

/// The first line of every report: where and how everything ran.
pub(super) fn settings_line(
    cli: &Cli,
    instances: &Instances,
    database: &Value,
    js_version: Option<&str>,
    flags: &Value,
    server_settings: &Value,
) -> Value {
    json!({
        "scenario": "settings",
        "instances": {
            "a": instances.a,
            "b": instances.b,
            "started_by_hub_load": instances.config.is_some(),
            "server_flags": flags,
            "hub_server": server_settings,
            "backplane": match &instances.config {
                Some(config) if config.backplane == BackplaneTarget::Memory =>
                    json!("memory: one instance, which is both A and B (no backplane hop)"),
                Some(config) => json!(config.backplane.name()),
                None => json!("unknown: instances started by someone else"),
            },
            "schema": instances.schema,
            "log_level": "RUST_LOG=info, set by hub-load: it waits for the listening line",
        },
        "database": database,
        "machine": machine_facts(),
        "drivers": {
            "rust": cli.driver.contains(&Driver::Rust).then(|| json!({
                "client": "chat-client (benches::client)",
                "protocol": "json",
                "sends": "invocations with an id, each answered by a completion",
                "window": cli.window,
            })),
            "js": js_version.map(|version| json!({
                "client": format!("@microsoft/signalr {version} in Node"),
                "protocol": cli.js_protocol.name(),
                "sends": "connection.send, no completion",
                "window": cli.js_window,
                "warmup_messages": cli.js_warmup,
                "threads": "sender on the main thread, receivers on a worker thread",
            })),
        },
        "payload_bytes": cli.payload,
    })
}

/// The sizes and pacing of message scenario `which` for `driver`: the same for both
/// drivers but the window, which counts what each client can wait for (completions for
/// the Rust client, deliveries for the official one).
pub(super) fn message_scenario(
    cli: &Cli,
    which: Scenario,
    driver: Driver,
    client: ClientOptions,
    drain_timeout: Duration,
) -> MessageScenario {
    let window = match driver {
        Driver::Rust => cli.window,
        Driver::Js => cli.js_window,
    };
    let (name, receivers, messages, pacing, description) = match which {
        Scenario::S1 => (
            "S1",
            1,
            cli.s1_messages,
            Pacing::Window(window),
            "backplane throughput: 1 sender on A, 1 receiver on B, as fast as delivery allows",
        ),
        Scenario::S2 => (
            "S2",
            cli.s2_receivers,
            cli.s2_messages,
            Pacing::Window(window),
            "fan-out: 1 sender on A, many receivers on B",
        ),
        Scenario::S3 => (
            "S3",
            cli.s3_receivers,
            (cli.s3_rate * cli.s3_seconds).round() as u64,
            Pacing::Rate(cli.s3_rate),
            "latency under steady load: 1 sender on A at a fixed rate, receivers on B",
        ),
        _ => (
            "burst",
            1,
            (cli.burst_rate * cli.burst_seconds).round() as u64,
            Pacing::Rate(cli.burst_rate),
            "open-loop burst: 1 sender on A offering a fixed rate regardless of completions, 1 receiver on B",
        ),
    };
    MessageScenario {
        name: name.into(),
        description: description.into(),
        receivers,
        messages,
        pacing,
        payload_len: cli.payload,
        drain_timeout,
        client,
        keep_deliveries: cli.latency_log.is_some(),
    }
}

/// Cores, memory and kernel of this machine.
fn machine_facts() -> serde_json::Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cores": cores,
        "memory_gib": memory_kib.map(|kib| round3(kib as f64 / 1024.0 / 1024.0)),
        "kernel": kernel,
    })
}
