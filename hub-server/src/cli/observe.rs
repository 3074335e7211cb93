//! The binary's flags for watching it run: the log's format, and where Prometheus
//! metrics are served.

use std::future::Future;
use std::io::IsTerminal;

use axum::Router;
use hub_server::ServeOptions;
use hub_server::metrics::{self, MetricsHandle};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing_subscriber::EnvFilter;

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event (colored on a terminal unless NO_COLOR is set).
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `spans`), for
    /// log collectors.
    Json,
}

/// Logs and metrics.
#[derive(Debug, clap::Args)]
pub(crate) struct ObserveFlags {
    /// How log lines are written to standard output. The level comes from RUST_LOG
    /// (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Serve Prometheus metrics at GET /metrics (`--metrics false` turns them off). They
    /// tell whoever can read them how busy the server is: keep /metrics away from the
    /// public Internet (block it in the reverse proxy, or use --metrics-listen).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    metrics: bool,
    /// Serve /metrics on this address (`127.0.0.1:9464`) instead of the main one(s), so a
    /// firewall or a private interface keeps it to the monitoring system.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

/// Where the metrics go, once installed.
#[derive(Debug)]
pub(crate) enum MetricsPlace {
    /// Not recorded.
    Off,
    /// Merged into the chat router.
    MainPort(MetricsHandle),
    /// On a listener of their own.
    Separate(MetricsHandle, String),
}

impl ObserveFlags {
    /// Set up the log as the flags say; call once, first.
    pub(crate) fn init_logging(&self) {
        // async-nats logs each (re)connect at info; the backplane reports its state itself.
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        match self.log_format {
            LogFormat::Text => builder
                .with_ansi(
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                )
                .init(),
            LogFormat::Json => builder
                .json()
                .with_current_span(false)
                .with_ansi(false)
                .init(),
        }
    }

    /// Install the Prometheus recorder if metrics are on; before the backplane and the
    /// hub start, so their metrics are recorded.
    ///
    /// # Errors
    ///
    /// When the recorder cannot be installed.
    pub(crate) fn install_metrics(&self) -> Result<MetricsPlace, String> {
        if !self.metrics {
            if self.metrics_listen.is_some() {
                return Err("--metrics-listen needs metrics on (not --metrics false)".into());
            }
            return Ok(MetricsPlace::Off);
        }
        let handle = metrics::install().map_err(|error| error.to_string())?;
        Ok(match &self.metrics_listen {
            Some(address) => MetricsPlace::Separate(handle, address.clone()),
            None => MetricsPlace::MainPort(handle),
        })
    }
}

impl MetricsPlace {
    /// Serve the metrics where the flags say: merged into `app` (returned), or on their
    /// own listener, a server in `servers` that stops on `shutdown`.
    ///
    /// # Errors
    ///
    /// When the metrics address cannot be listened on.
    pub(crate) async fn serve(
        self,
        app: Router,
        servers: &mut JoinSet<()>,
        options: &ServeOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Router, String> {
        match self {
            MetricsPlace::Off => Ok(app),
            MetricsPlace::MainPort(handle) => Ok(app.merge(metrics::router(handle))),
            MetricsPlace::Separate(handle, address) => {
                let listener = TcpListener::bind(&address)
                    .await
                    .map_err(|error| format!("cannot listen on {address} for metrics: {error}"))?;
                let local = listener
                    .local_addr()
                    .map_err(|error| format!("cannot read the address of {address}: {error}"))?;
                tracing::info!("metrics on http://{local}/metrics");
                servers.spawn(hub_server::serve(
                    listener,
                    metrics::router(handle),
                    options.clone(),
                    shutdown,
                ));
                Ok(app)
            }
        }
    }
}
