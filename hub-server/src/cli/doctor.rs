//! `hub-server doctor`: checks the backplane the flags name. PostgreSQL gets the crate's
//! own checks (`backplane_postgres::diagnose`: connect, schema and messages table (or
//! the right to create them), a LISTEN/NOTIFY round trip); Redis and NATS get a
//! connection and an envelope's round trip between two nodes.

use std::process::ExitCode;
use std::time::Duration;

use hub_server::chat;

use super::{Backend, Cli, backend, cluster_secret, connect_log_backend, postgres_options};

/// Check the backplane the flags name and print one line per check; fails unless all
/// passed.
pub(crate) async fn run(cli: &Cli) -> Result<ExitCode, String> {
    let lines = match backend(cli) {
        Backend::Memory => {
            return Err("doctor needs a backplane to check: pass --database-url, --redis-url or --nats-url (or set DATABASE_URL, REDIS_URL or NATS_URL)".into());
        }
        Backend::Postgres(url) => {
            let options = postgres_options(cli, url)?;
            let checks = backplane_postgres::diagnose(&options, chat::HUB_NAME).await;
            checks
                .iter()
                .map(|check| (check.ok, check.to_string()))
                .collect()
        }
        backend => doctor_round_trip(backend, &cli.prefix, cluster_secret(cli)?).await,
    };
    for (_, line) in &lines {
        println!("{line}");
    }
    Ok(if lines.iter().all(|(ok, _)| *ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `connect` and `round trip` for Redis or NATS, as (passed, line) in the format of the
/// PostgreSQL checks; both nodes sign with `secret`, as the cluster's instances do.
async fn doctor_round_trip(
    backend: Backend<'_>,
    prefix: &str,
    secret: Option<backplane_core::ClusterSecret>,
) -> Vec<(bool, String)> {
    let line = |ok: bool, name: &str, detail: &str| {
        let status = if ok { "ok" } else { "FAILED" };
        (ok, format!("{status:6} {name}: {detail}"))
    };
    let (sender, receiver) = match (
        connect_log_backend(backend, prefix, secret.clone()).await,
        connect_log_backend(backend, prefix, secret).await,
    ) {
        (Ok(sender), Ok(receiver)) => (sender, receiver),
        (Err(error), _) | (_, Err(error)) => {
            return vec![
                line(false, "connect", &error),
                line(false, "round trip", "not tried: cannot connect"),
            ];
        }
    };
    let mut lines = vec![line(true, "connect", &format!("{} reachable", sender.1))];
    let hub = format!("{}-doctor", chat::HUB_NAME);
    let trip =
        backplane_core::doctor::round_trip(&*sender.0, &*receiver.0, &hub, Duration::from_secs(10))
            .await;
    lines.push(match trip {
        Ok(elapsed) => line(
            true,
            "round trip",
            &format!("an envelope reached another node in {elapsed:?}"),
        ),
        Err(error) => line(false, "round trip", &error),
    });
    for node in [sender.0, receiver.0] {
        let _ = node.shutdown().await;
    }
    lines
}
