//! `hub-server`: the chat server. See `hub_server::chat` for what it serves.

use std::process::ExitCode;
use std::sync::Arc;

use axum::serve::ListenerExt;
use backplane_core::Backplane;
use backplane_memory::MemoryBackplane;
use clap::{Parser, Subcommand};
use hub_server::chat;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// SignalR chat server: the ASP.NET Core chat sample's hub at /chathub, scaled out over
/// PostgreSQL when a database URL is given.
#[derive(Debug, Parser)]
#[command(name = "hub-server", version)]
struct Cli {
    /// Addresses to listen on, separated by `;` (as ASP.NET Core's --urls).
    #[arg(long, default_value = "http://localhost:5000")]
    urls: String,
    /// The name this instance reports in /health (default: host name and process id).
    #[arg(long)]
    server_name: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> Result<(), String> {
    let addresses = parse_urls(&cli.urls)?;
    let backplane: Arc<dyn Backplane> = Arc::new(MemoryBackplane::new());
    let backplane_kind = "memory";
    let hub = chat::hub_builder()
        .backplane(backplane.clone())
        .build()
        .await
        .map_err(|error| format!("cannot start the chat hub: {error}"))?;
    let name = cli.server_name.unwrap_or_else(default_server_name);
    let app = chat::router(&hub, chat::ServerInfo::new(&name, backplane_kind));

    let mut servers = tokio::task::JoinSet::new();
    for address in &addresses {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|error| format!("cannot listen on {address}: {error}"))?;
        let local = listener
            .local_addr()
            .map_err(|error| format!("cannot read the address of {address}: {error}"))?;
        tracing::info!(server = %name, backplane = backplane_kind, "listening on http://{local}{}", chat::HUB_PATH);
        let app = app.clone();
        let hub = hub.clone();
        // Without TCP_NODELAY, small frames wait for delayed ACKs (tens of milliseconds).
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    shutdown_signal().await;
                    hub.shutdown().await;
                })
                .await
        });
    }
    tokio::spawn(chat::log_backplane_state(hub.clone()));

    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => result = Err(format!("server failed: {error}")),
            Err(error) => result = Err(format!("server task failed: {error}")),
        }
    }
    tracing::info!("shutting down the backplane");
    if let Err(error) = backplane.shutdown().await {
        tracing::warn!(%error, "backplane did not shut down cleanly");
    }
    result
}

/// `http://host:port` addresses separated by `;`, as host:port strings to bind.
fn parse_urls(urls: &str) -> Result<Vec<String>, String> {
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
        let authority = match authority.split_once(':') {
            Some(("*" | "+", port)) => format!("0.0.0.0:{port}"),
            Some(_) => authority.to_owned(),
            None => format!("{authority}:80"),
        };
        addresses.push(authority);
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

#[cfg(test)]
mod tests {
    use super::parse_urls;

    #[test]
    fn parses_aspnet_style_urls() {
        assert_eq!(
            parse_urls("http://localhost:5000").unwrap(),
            ["localhost:5000"]
        );
        assert_eq!(
            parse_urls("http://127.0.0.1:5001/;http://*:5002").unwrap(),
            ["127.0.0.1:5001", "0.0.0.0:5002"]
        );
        assert_eq!(parse_urls("http://example").unwrap(), ["example:80"]);
        assert!(parse_urls("https://localhost:5001").is_err());
        assert!(parse_urls("localhost:5000").is_err());
        assert!(parse_urls("http://localhost:5000/chat").is_err());
        assert!(parse_urls(" ; ").is_err());
    }
}
