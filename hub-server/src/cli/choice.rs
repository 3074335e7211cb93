//! Which backplane the flags choose, checked before anything starts: one URL at most,
//! saying where each came from (a `DATABASE_URL` left in the environment is the usual
//! surprise), empty environment values counted as unset (as container tools often set
//! them), and the naming flag of another backplane warned about rather than silently
//! ignored.

use clap::ArgMatches;
use clap::parser::ValueSource;

use super::Cli;

/// A warning about the flags, in the log.
fn warn(message: &str) {
    tracing::warn!("{message}");
}

/// Where a flag's value came from, as an error names it.
fn source(matches: &ArgMatches, id: &str, flag: &str, env: &str) -> String {
    match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => format!("{env} (from the environment)"),
        _ => flag.to_owned(),
    }
}

/// Check and normalize `cli`'s backplane flags.
///
/// # Errors
///
/// A message for the user when two backplane URLs are given.
pub(crate) fn check(cli: &mut Cli, matches: &ArgMatches) -> Result<(), String> {
    for url in [&mut cli.database_url, &mut cli.redis_url, &mut cli.nats_url] {
        if url.as_deref().is_some_and(|url| url.trim().is_empty()) {
            *url = None;
        }
    }
    let given: Vec<String> = [
        (
            cli.database_url.is_some(),
            "database_url",
            "--database-url",
            "DATABASE_URL",
        ),
        (
            cli.redis_url.is_some(),
            "redis_url",
            "--redis-url",
            "REDIS_URL",
        ),
        (cli.nats_url.is_some(), "nats_url", "--nats-url", "NATS_URL"),
    ]
    .into_iter()
    .filter(|(set, ..)| *set)
    .map(|(_, id, flag, env)| source(matches, id, flag, env))
    .collect();
    if given.len() > 1 {
        let hint = if given.iter().any(|source| source.contains("environment")) {
            " (unset the environment variable of the backplane you do not mean)"
        } else {
            ""
        };
        return Err(format!(
            "more than one backplane URL: {}; give one{hint}",
            given.join(" and ")
        ));
    }
    let explicit = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let postgres = cli.database_url.is_some();
    let log_based = cli.redis_url.is_some() || cli.nats_url.is_some();
    // Warnings, not errors: a launch template shared by instances on different
    // backplanes may pass both, and an upgrade must not stop them from starting.
    if explicit("schema") && log_based {
        warn("--schema is ignored: it names a PostgreSQL schema; Redis and NATS take --prefix");
    }
    if explicit("prefix") && postgres {
        warn(
            "--prefix is ignored: it names a Redis key prefix or NATS stream; PostgreSQL takes --schema",
        );
    }
    if (explicit("schema") || explicit("prefix")) && !postgres && !log_based {
        warn("--schema and --prefix have no effect without a backplane URL");
    }
    Ok(())
}
