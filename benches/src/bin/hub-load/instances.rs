//! The two instances a run measures: started here on the chosen backplane (and owned
//! by the run), or given with `--server-a`/`--server-b`.

use benches::servers::{self, BackplaneTarget, ServerConfig, ServerProcess};

use crate::cli::{BackplaneKind, Cli};
use crate::lifecycle::Owned;
use crate::settings::server_flags;

/// The two instances: started here, or given.
#[derive(Debug)]
pub(crate) struct Instances {
    /// Instance A (`http://host:port`): where the senders connect.
    pub(crate) a: String,
    /// Instance B: where the receivers connect (A itself on the in-memory backplane).
    pub(crate) b: String,
    /// Process of A, for CPU accounting (and S4's memory readings on given instances).
    pub(crate) a_pid: Option<u32>,
    /// Process of B, for CPU accounting.
    pub(crate) b_pid: Option<u32>,
    /// How the instances were started, if this program started them (S4 then starts a
    /// fresh one the same way).
    pub(crate) config: Option<ServerConfig>,
    /// The backplane schema of the instances started here.
    pub(crate) schema: Option<String>,
}

/// Start the instances as `cli` says (claiming their schema or backplane data for
/// `owned` to remove at the end), or describe the given ones.
pub(crate) async fn start_instances(
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
