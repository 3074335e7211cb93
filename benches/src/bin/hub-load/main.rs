//! `hub-load`: the end-to-end load tool. Starts two `hub-server` instances sharing one
//! backplane (PostgreSQL by default; Redis, NATS JetStream, or one instance on the
//! in-memory backplane with `--backplane`), or uses running ones, with the binary's
//! defaults unless tuning flags are asked for, drives real SignalR WebSocket clients
//! against their chat hub (this program's own, the official JavaScript client in Node,
//! or both), and prints one JSON line per scenario and driver, labelled with both; with
//! `--runs N`, N runs and then the medians. See BENCHMARKS.md.
//!
//! The files: `cli.rs` the flags; `instances.rs` starting or finding the two instances;
//! `runs.rs` running the scenarios and printing their lines; `settings.rs` the settings
//! line and each scenario's sizes; `soak.rs` the soak; `lifecycle.rs` what a run owns
//! and undoes, and the signals that end it early; this file the run's time bounds.

use std::process::ExitCode;
use std::time::Duration;

use benches::database;
use clap::Parser;
use serde_json::json;

mod cli;
mod instances;
mod lifecycle;
mod runs;
mod settings;
mod soak;

use cli::{BackplaneKind, Cli, Scenario};
use lifecycle::{Interrupts, Owned};

/// Time allowed for connecting to the database and starting the instances.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(90);

/// Time allowed for stopping the servers and dropping the schema at the end, before the
/// program gives up on them.
const CLEANUP_ALLOWANCE: Duration = Duration::from_secs(60);

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
    let last_resort = Duration::from_secs_f64(cli.time_limit + cli.soak_allowance())
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

/// Run the selected scenarios; `Ok(false)` if any was not clean.
async fn run(cli: &Cli) -> Result<bool, String> {
    let mut interrupts = Interrupts::register()?;
    let database_url = cli
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| test_services::LOCAL_DATABASE_URL.to_owned());
    let mut owned = Owned::default();
    let limit = Duration::from_secs_f64(cli.time_limit + cli.soak_allowance());
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
            let instances = instances::start_instances(cli, &database_url, &mut owned).await?;
            Ok::<_, String>((database, instances))
        };
        let (database, mut instances) = tokio::time::timeout(SETUP_ALLOWANCE, setup)
            .await
            .map_err(|_| format!("setting up took longer than {SETUP_ALLOWANCE:?}"))??;
        let scenarios =
            runs::run_scenarios(cli, &database_url, &database, &mut instances, &mut owned);
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
