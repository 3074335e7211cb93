//! `--scenarios soak`: the soak ([`benches::soak`]) on the two instances, with the
//! listener kills on PostgreSQL when this program started the instances (it knows their
//! node ids then).

use std::time::Duration;

use benches::client::ClientOptions;
use benches::cpu::CpuSnapshot;
use benches::servers::BackplaneTarget;
use benches::soak::{self, SoakInstance, SoakReport, SoakScenario};

use crate::cli::Cli;
use crate::instances::Instances;
use crate::lifecycle::Owned;

/// The soak's flags.
#[derive(Debug, clap::Args)]
pub(super) struct SoakArgs {
    /// Soak: seconds of churn (the run's --time-limit is extended by as much).
    #[arg(long, default_value_t = 600.0)]
    pub(super) soak_seconds: f64,
    /// Soak: clients, alternately on A and B.
    #[arg(long, default_value_t = 1_000)]
    pub(super) soak_clients: usize,
    /// Soak: seconds between kills of one instance's LISTEN connection (PostgreSQL
    /// only, A and B in turn); 0: no kills.
    #[arg(long, default_value_t = 60.0)]
    pub(super) soak_kill_every: f64,
    /// Soak: mean seconds between two messages of one client.
    #[arg(long, default_value_t = 3.0)]
    pub(super) soak_send_interval: f64,
    /// Soak: a client reconnects after one group stay (two messages) in this many, on
    /// average.
    #[arg(long, default_value_t = 60)]
    pub(super) soak_reconnect_one_in: u64,
    /// Soak: memory growth after the warm-up (the first 20%) that fails it, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub(super) soak_rss_limit: f64,
}

/// Run the soak as the flags say.
pub(super) async fn run(
    cli: &Cli,
    database_url: &str,
    instances: &Instances,
    owned: &Owned,
    client: ClientOptions,
) -> Result<SoakReport, String> {
    let node_of = |pid: Option<u32>| {
        owned
            .servers
            .iter()
            .find(|server| Some(server.pid) == pid)
            .and_then(|server| server.node.clone())
    };
    let a = SoakInstance {
        url: instances.a.clone(),
        pid: instances.a_pid,
        node: node_of(instances.a_pid),
    };
    let b = SoakInstance {
        url: instances.b.clone(),
        pid: instances.b_pid,
        node: node_of(instances.b_pid),
    };
    let on_postgres = matches!(
        instances.config.as_ref().map(|config| &config.backplane),
        Some(BackplaneTarget::Postgres { .. })
    );
    let scenario = SoakScenario {
        duration: Duration::from_secs_f64(cli.soak.soak_seconds),
        clients: cli.soak.soak_clients,
        kill_every: (cli.soak.soak_kill_every > 0.0)
            .then(|| Duration::from_secs_f64(cli.soak.soak_kill_every)),
        send_interval: Duration::from_secs_f64(cli.soak.soak_send_interval),
        reconnect_one_in: cli.soak.soak_reconnect_one_in,
        rss_limit_pct: cli.soak.soak_rss_limit,
        payload_len: cli.payload,
        drain_timeout: Duration::from_secs_f64(cli.drain_timeout),
        client,
    };
    let cpu_before = CpuSnapshot::take(instances.a_pid, instances.b_pid);
    let mut report = soak::run(&scenario, &a, &b, on_postgres.then_some(database_url)).await?;
    report.cpu = Some(cpu_before.until(&CpuSnapshot::take(instances.a_pid, instances.b_pid)));
    Ok(report)
}
