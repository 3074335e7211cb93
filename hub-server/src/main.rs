//! `hub-server`: the chat server (see `hub_server::chat` for what it serves), and
//! `hub-server doctor`, which checks the backplane (a PostgreSQL database, a Redis, or a
//! NATS with JetStream).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use backplane_core::Backplane;
use backplane_memory::MemoryBackplane;
use backplane_nats::{NatsBackplane, NatsOptions};
use backplane_postgres::{DEFAULT_SCHEMA, PostgresBackplane, PostgresOptions, SynchronousCommit};
use backplane_redis::{RedisBackplane, RedisOptions};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hub_server::chat;
use tokio::net::TcpListener;

#[path = "cli/access.rs"]
mod access;
#[path = "cli/allocator.rs"]
mod allocator;
#[path = "cli/choice.rs"]
mod choice;
#[path = "cli/doctor.rs"]
mod doctor;
#[path = "cli/observe.rs"]
mod observe;

/// SignalR chat server: the ASP.NET Core chat sample's hub at /chathub, on the in-memory
/// backplane (one instance), or scaled out over PostgreSQL, Redis or NATS JetStream when
/// one of --database-url, --redis-url, --nats-url is given.
#[derive(Debug, Parser)]
#[command(name = "hub-server", version)]
struct Cli {
    /// Addresses to listen on, separated by `;` (as ASP.NET Core's --urls); port 0 picks
    /// a free port.
    #[arg(long, default_value = "http://localhost:5000")]
    urls: String,
    /// PostgreSQL connection string (URL or key=value form). When given, instances that
    /// share the database and schema form one cluster; otherwise the in-memory backplane
    /// serves this instance alone. TLS as in libpq: `sslmode` disable, prefer (default),
    /// require, verify-ca or verify-full, and `sslrootcert` (a PEM file, or `system`),
    /// e.g. `postgres://app@db/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    database_url: Option<String>,
    /// Redis URL (`redis://[user:password@]host[:port][/db]`): instances that share the
    /// Redis and --prefix form one cluster over Redis Streams. Not with --database-url.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    redis_url: Option<String>,
    /// NATS URL (`nats://[user:password@]host[:port]`, several separated by commas), with
    /// JetStream enabled: instances that share the NATS and --prefix form one cluster.
    /// Not with --database-url or --redis-url.
    #[arg(long, env = "NATS_URL", hide_env_values = true, global = true)]
    nats_url: Option<String>,
    /// The Redis key prefix or NATS stream name (and subject root) of the backplane, as
    /// --schema is for PostgreSQL.
    #[arg(long, default_value = "signalr", global = true)]
    prefix: String,
    /// A file holding the cluster secret (at least 16 bytes; 32 random bytes
    /// recommended, e.g. `openssl rand -base64 32 > secret`): every instance of the
    /// cluster needs the same one. Backplane envelopes and notifications are then signed
    /// (HMAC-SHA256) and what fails verification is dropped and counted (the hub's
    /// backplane health, `envelopes_rejected`). The secret is never logged. On Redis and
    /// NATS the envelopes are signed; their markers of skipped sequence numbers are not
    /// yet.
    #[arg(long, env = "CLUSTER_SECRET_FILE", global = true)]
    cluster_secret_file: Option<std::path::PathBuf>,
    /// The PostgreSQL schema holding the backplane's tables (created if missing).
    #[arg(long, default_value = DEFAULT_SCHEMA, global = true)]
    schema: String,
    /// The name this instance reports in /health (default: host name and process id).
    #[arg(long)]
    server_name: Option<String>,
    /// How many invocations of one client may run at once. They start in arrival order,
    /// so what a method sends before it awaits anything else keeps the client's order;
    /// with 1024 (the default) a fast sender's messages share PostgreSQL commits. 1 is
    /// ASP.NET Core's behaviour: each invocation finishes before the next is read.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(1..))]
    max_parallel_invocations: u16,
    /// When the PostgreSQL backplane's messages reach other instances and when a sender's
    /// invocation completes, relative to the WAL flush: `notify-before-flush` (the
    /// default: other instances deliver at once, the completion waits for the flush,
    /// confirmed over one more database connection, so a completed message survives a
    /// PostgreSQL crash), `on` (deliveries wait for the flush too), `off` (fastest; a
    /// crash can lose the last ~600 ms of completed messages, already delivered by some
    /// instances), `local`, `remote-write`, `remote-apply` (with synchronous replicas), or
    /// `server-default` (whatever the database or role sets).
    #[arg(long, value_enum, default_value_t = CommitMode::NotifyBeforeFlush)]
    synchronous_commit: CommitMode,
    /// Whether the PostgreSQL backplane compresses its notifications (LZ4, wherever that
    /// makes them shorter; about 3:1 for chat messages). Set `false` while upgrading a
    /// cluster whose other instances run a version from before compressed notifications
    /// (they cannot read them: messages from this instance may not reach their clients),
    /// then back to `true` once every instance is upgraded. Every instance reads both forms.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    compress_notifications: bool,
    /// How many groups one connection may be in at once (`JoinGroup` beyond it fails with
    /// a message saying so); 0 for no limit.
    #[arg(long, default_value_t = chat::MAX_GROUPS_PER_CONNECTION)]
    max_groups_per_connection: usize,
    /// Seconds a client may take to send an HTTP request's headers before its connection
    /// is closed (as Kestrel's RequestHeadersTimeout), so idle half-open requests cannot
    /// pile up.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    request_headers_timeout: u32,
    /// HTTP connections open at once (Server-Sent Events, long polls, idle kept-alive
    /// connections; WebSockets count toward the hub's cap once upgraded). One over the
    /// cap is answered 503 and closed.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_http_connections: u32,
    /// Bytes of outgoing messages that may wait for one connection; a client that lets
    /// more pile up (it stopped reading) is disconnected.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    send_queue_bytes: u64,
    #[command(flatten)]
    access: access::AccessFlags,
    #[command(flatten)]
    observe: observe::ObserveFlags,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--synchronous-commit` values, as PostgreSQL spells them (`_` as `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CommitMode {
    On,
    NotifyBeforeFlush,
    Off,
    Local,
    RemoteWrite,
    RemoteApply,
    ServerDefault,
}

impl From<CommitMode> for SynchronousCommit {
    fn from(mode: CommitMode) -> Self {
        match mode {
            CommitMode::On => SynchronousCommit::On,
            CommitMode::NotifyBeforeFlush => SynchronousCommit::NotifyBeforeFlush,
            CommitMode::Off => SynchronousCommit::Off,
            CommitMode::Local => SynchronousCommit::Local,
            CommitMode::RemoteWrite => SynchronousCommit::RemoteWrite,
            CommitMode::RemoteApply => SynchronousCommit::RemoteApply,
            CommitMode::ServerDefault => SynchronousCommit::ServerDefault,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the backplane. PostgreSQL: connection, schema, the chat hub's table, and a
    /// LISTEN/NOTIFY round trip. Redis or NATS: connecting (URL, credentials; for NATS
    /// also the JetStream stream), then an envelope from one node to another (read and
    /// write permissions). Prints one line per check; exits non-zero if any failed.
    Doctor,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    cli.observe.init_logging();
    if let Err(error) = choice::check(&mut cli, &matches) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    allocator::disable_transparent_huge_pages();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Doctor) => runtime.block_on(doctor::run(&cli)),
        None => runtime.block_on(serve(cli)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster secret `--cluster-secret-file` names, if any.
fn cluster_secret(cli: &Cli) -> Result<Option<backplane_core::ClusterSecret>, String> {
    cli.cluster_secret_file
        .as_ref()
        .map(backplane_core::ClusterSecret::from_file)
        .transpose()
        .map_err(|error| format!("invalid --cluster-secret-file: {error}"))
}

/// The PostgreSQL options the flags describe.
fn postgres_options(cli: &Cli, url: &str) -> Result<PostgresOptions, String> {
    let secret = cluster_secret(cli)?;
    Ok(PostgresOptions::new(url)
        .map_err(|error| format!("invalid --database-url: {error}"))?
        .schema_name(cli.schema.as_str())
        .synchronous_commit(cli.synchronous_commit.into())
        .compress_notifications(cli.compress_notifications)
        .cluster_secret(secret))
}

/// The backplane the flags choose (`choice::check` refused more than one URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend<'a> {
    /// No URL: this instance alone.
    Memory,
    /// `--database-url`.
    Postgres(&'a str),
    /// `--redis-url`.
    Redis(&'a str),
    /// `--nats-url`.
    Nats(&'a str),
}

fn backend(cli: &Cli) -> Backend<'_> {
    match (&cli.database_url, &cli.redis_url, &cli.nats_url) {
        (Some(url), _, _) => Backend::Postgres(url),
        (_, Some(url), _) => Backend::Redis(url),
        (_, _, Some(url)) => Backend::Nats(url),
        _ => Backend::Memory,
    }
}

/// A Redis or NATS node on the flags' prefix, and how /health names it.
async fn connect_log_backend(
    backend: Backend<'_>,
    prefix: &str,
    secret: Option<backplane_core::ClusterSecret>,
) -> Result<(Arc<dyn Backplane>, String), String> {
    match backend {
        Backend::Redis(url) => {
            let mut options = RedisOptions::new(url)
                .map_err(|error| format!("invalid --redis-url: {error}"))?
                .key_prefix(prefix);
            options.cluster_secret = secret;
            let node = RedisBackplane::connect(options)
                .await
                .map_err(|error| format!("cannot start the Redis backplane: {error}"))?;
            Ok((Arc::new(node), format!("redis (prefix {prefix})")))
        }
        Backend::Nats(url) => {
            let mut options = NatsOptions::new(url)
                .map_err(|error| format!("invalid --nats-url: {error}"))?
                .prefix(prefix);
            options.cluster_secret = secret;
            let node = NatsBackplane::connect(options)
                .await
                .map_err(|error| format!("cannot start the NATS backplane: {error}"))?;
            Ok((Arc::new(node), format!("nats (stream {prefix})")))
        }
        Backend::Memory | Backend::Postgres(_) => Err("not a Redis or NATS backend".into()),
    }
}

async fn serve(cli: Cli) -> Result<ExitCode, String> {
    allocator::spawn_collector();
    let addresses = parse_urls(&cli.urls)?;
    let chosen = backend(&cli);
    if !matches!(chosen, Backend::Postgres(_))
        && cli.synchronous_commit != CommitMode::NotifyBeforeFlush
    {
        tracing::warn!("--synchronous-commit has no effect without --database-url");
    }
    if cli.cluster_secret_file.is_some() && chosen == Backend::Memory {
        tracing::warn!("--cluster-secret-file has no effect without a backplane URL");
    }
    // Before the backplane: a bad key must not leave a schema or stream behind.
    let builder = cli.access.authenticate(chat::hub_builder())?;
    // Before the backplane and the hub: they register their metrics as they start.
    let metrics = cli.observe.install_metrics()?;
    let (backplane, kind): (Arc<dyn Backplane>, String) = match chosen {
        Backend::Memory => (Arc::new(MemoryBackplane::new()), "memory".into()),
        Backend::Postgres(url) => {
            let options = postgres_options(&cli, url)?;
            tracing::info!(
                synchronous_commit = ?options.synchronous_commit,
                signed = options.cluster_secret.is_some(),
                "connecting the PostgreSQL backplane"
            );
            let backplane = PostgresBackplane::connect(options)
                .await
                .map_err(|error| format!("cannot start the PostgreSQL backplane: {error}"))?;
            (
                Arc::new(backplane),
                format!("postgres (schema {})", cli.schema),
            )
        }
        backend => connect_log_backend(backend, &cli.prefix, cluster_secret(&cli)?).await?,
    };
    tracing::info!(backplane = %kind, node = %backplane.node_id(), "backplane started");
    let options = cli.access.options(
        hub_server::HubOptions::default()
            .max_parallel_invocations(usize::from(cli.max_parallel_invocations))
            .send_queue_bytes(usize::try_from(cli.send_queue_bytes).unwrap_or(usize::MAX)),
    );
    let hub = builder
        .manager_options(manager_options(&cli))
        .options(options)
        .backplane(backplane.clone())
        .build()
        .await
        .map_err(|error| format!("cannot start the chat hub: {error}"))?;
    let name = cli.server_name.unwrap_or_else(default_server_name);
    let app = chat::router(&hub, chat::ServerInfo::new(&name, &kind));

    let serve_options = hub_server::ServeOptions::default()
        .request_headers_timeout(Duration::from_secs(u64::from(cli.request_headers_timeout)))
        .max_http_connections(usize::try_from(cli.max_http_connections).unwrap_or(usize::MAX));
    let mut servers = tokio::task::JoinSet::new();
    // One signal for every listener (`localhost` is two), logged once.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    let stopped = move || {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };
    let app = metrics
        .serve(app, &mut servers, &serve_options, stopped())
        .await?;
    for address in &addresses {
        let listener = match TcpListener::bind(&address.address).await {
            Ok(listener) => listener,
            // The IPv6 loopback of `localhost` may not exist on this machine; but if it
            // is taken by another process, clients resolving `localhost` to it would
            // reach that process, so that stays an error.
            Err(error)
                if address.optional
                    && !matches!(
                        error.kind(),
                        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                    ) =>
            {
                tracing::warn!(address = %address.address, %error, "not listening on this address");
                continue;
            }
            Err(error) => return Err(format!("cannot listen on {}: {error}", address.address)),
        };
        let address = &address.address;
        let local = listener
            .local_addr()
            .map_err(|error| format!("cannot read the address of {address}: {error}"))?;
        tracing::info!(server = %name, "listening on http://{local}{}", chat::HUB_PATH);
        let app = app.clone();
        let hub = hub.clone();
        servers.spawn(hub_server::serve(listener, app, serve_options.clone(), {
            let stopped = stopped();
            async move {
                stopped.await;
                hub.shutdown().await;
            }
        }));
    }
    tokio::spawn(chat::log_backplane_state(hub.clone()));

    let mut result = Ok(ExitCode::SUCCESS);
    while let Some(joined) = servers.join_next().await {
        if let Err(error) = joined {
            result = Err(format!("server task failed: {error}"));
        }
    }
    tracing::info!("shutting down the backplane");
    if let Err(error) = backplane.shutdown().await {
        tracing::warn!(%error, "backplane did not shut down cleanly");
    }
    result
}

/// One address to listen on.
#[derive(Debug, PartialEq, Eq)]
struct ListenAddress {
    /// `host:port`, as `TcpListener::bind` takes it.
    address: String,
    /// Whether failing to bind it is fine (the IPv6 loopback of `localhost`, on a machine
    /// without IPv6).
    optional: bool,
}

/// `http://host:port` addresses separated by `;`, as addresses to bind. `localhost` with
/// a fixed port means both loopbacks, as in ASP.NET Core: binding the name would take
/// only its first address, and clients resolving it the other way could not connect.
fn parse_urls(urls: &str) -> Result<Vec<ListenAddress>, String> {
    let mut addresses = Vec::new();
    for url in urls.split(';').map(str::trim).filter(|url| !url.is_empty()) {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                format!("{url:?}: https is not supported; terminate TLS in a reverse proxy")
            } else {
                format!("{url:?}: expected an address like http://localhost:5000")
            }
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(format!("{url:?}: a listen address cannot have a path"));
        }
        // ASP.NET Core accepts `*` and `+` for "every interface".
        let authority = match authority.rsplit_once(':') {
            Some(("*" | "+", port)) => format!("0.0.0.0:{port}"),
            // An IPv6 literal without a port: its colons are not a port separator.
            Some(_) if authority.ends_with(']') => format!("{authority}:80"),
            Some(_) => authority.to_owned(),
            None => format!("{authority}:80"),
        };
        match authority.strip_prefix("localhost:") {
            Some(port) if port != "0" => {
                addresses.push(ListenAddress {
                    address: format!("127.0.0.1:{port}"),
                    optional: false,
                });
                addresses.push(ListenAddress {
                    address: format!("[::1]:{port}"),
                    optional: true,
                });
            }
            _ => addresses.push(ListenAddress {
                address: authority,
                optional: false,
            }),
        }
    }
    if addresses.is_empty() {
        return Err("--urls names no address".into());
    }
    Ok(addresses)
}

fn default_server_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "hub-server".into());
    format!("{host}-{}", std::process::id())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested: closing connections");
}

/// The chat hub's lifetime manager settings the command line asks for.
fn manager_options(cli: &Cli) -> backplane_core::ManagerOptions {
    let limit = match cli.max_groups_per_connection {
        0 => None,
        limit => Some(limit),
    };
    backplane_core::ManagerOptions::default().max_groups_per_connection(limit)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::{
        Backend, Cli, SynchronousCommit, backend, choice, manager_options, parse_urls,
        postgres_options,
    };

    #[test]
    fn one_backplane_url_at_most() {
        // As `main` parses: clap, then the backplane check.
        let parse = |args: &[&str]| -> Result<Cli, String> {
            let matches = Cli::command()
                .try_get_matches_from([&["hub-server"], args].concat())
                .map_err(|error| error.to_string())?;
            let mut cli = Cli::from_arg_matches(&matches).map_err(|error| error.to_string())?;
            choice::check(&mut cli, &matches)?;
            Ok(cli)
        };
        let cli = parse(&["--redis-url", "redis://r:6379"]).unwrap();
        assert_eq!(backend(&cli), Backend::Redis("redis://r:6379"));
        let cli = parse(&["--nats-url", "nats://n:4222", "--prefix", "chat"]).unwrap();
        assert_eq!(
            (backend(&cli), cli.prefix.as_str()),
            (Backend::Nats("nats://n:4222"), "chat")
        );
        assert_eq!(backend(&parse(&[]).unwrap()), Backend::Memory);
        let error = parse(&["--database-url", "postgres://p/x", "--nats-url", "nats://n"])
            .err()
            .unwrap_or_default();
        assert_eq!(
            error,
            "more than one backplane URL: --database-url and --nats-url; give one"
        );
        assert!(parse(&["--redis-url", "redis://r", "--nats-url", "nats://n"]).is_err());
    }

    #[test]
    fn max_groups_per_connection_flag_reaches_the_manager() {
        let limit = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["hub-server"], args].concat()).unwrap();
            manager_options(&cli).max_groups_per_connection
        };
        assert_eq!(
            limit(&[]),
            Some(hub_server::chat::MAX_GROUPS_PER_CONNECTION)
        );
        assert_eq!(limit(&["--max-groups-per-connection", "5"]), Some(5));
        assert_eq!(limit(&["--max-groups-per-connection", "0"]), None);
        assert!(Cli::try_parse_from(["hub-server", "--max-groups-per-connection", "-1"]).is_err());
    }
    use clap::Parser;

    #[test]
    fn synchronous_commit_flag_reaches_the_backplane_options() {
        let url = "postgres://postgres@127.0.0.1/test";
        let mode = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["hub-server"], args].concat()).unwrap();
            postgres_options(&cli, url).unwrap().synchronous_commit
        };
        assert_eq!(mode(&[]), SynchronousCommit::NotifyBeforeFlush);
        assert_eq!(mode(&["--synchronous-commit", "on"]), SynchronousCommit::On);
        assert_eq!(
            mode(&["--synchronous-commit", "off"]),
            SynchronousCommit::Off
        );
        assert_eq!(
            mode(&["--synchronous-commit", "notify-before-flush"]),
            SynchronousCommit::NotifyBeforeFlush
        );
        assert_eq!(
            mode(&["--synchronous-commit", "remote-write"]),
            SynchronousCommit::RemoteWrite
        );
        assert_eq!(
            mode(&["--synchronous-commit", "server-default"]),
            SynchronousCommit::ServerDefault
        );
        let error = Cli::try_parse_from(["hub-server", "--synchronous-commit", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid value 'maybe'") && error.contains("remote-apply"),
            "{error}"
        );
    }

    #[test]
    fn parses_aspnet_style_urls() {
        let bound = |urls: &str| -> Vec<(String, bool)> {
            parse_urls(urls)
                .unwrap()
                .into_iter()
                .map(|a| (a.address, a.optional))
                .collect()
        };
        let required = |address: &str| (address.to_owned(), false);
        assert_eq!(
            bound("http://localhost:5000"),
            [required("127.0.0.1:5000"), ("[::1]:5000".to_owned(), true)]
        );
        assert_eq!(bound("http://localhost:0"), [required("localhost:0")]);
        assert_eq!(
            bound("http://127.0.0.1:5001/;http://*:5002"),
            [required("127.0.0.1:5001"), required("0.0.0.0:5002")]
        );
        assert_eq!(bound("http://[::1]:5003"), [required("[::1]:5003")]);
        assert_eq!(bound("http://[::1]"), [required("[::1]:80")]);
        assert_eq!(bound("http://example"), [required("example:80")]);
        assert!(parse_urls("https://localhost:5001").is_err());
        assert!(parse_urls("localhost:5000").is_err());
        assert!(parse_urls("http://localhost:5000/chat").is_err());
        assert!(parse_urls(" ; ").is_err());
    }
}
