//! Opening connections, and turning driver errors into clear messages.
//!
//! Every connection of the backplane (publisher, flusher, listener, reader, retention,
//! installer, [`diagnose`](crate::diagnose)) is opened by [`connect_raw`], so TLS,
//! keepalives and timeouts are set in this one place.

use std::fmt;

use backplane_core::{BackplaneError, NodeId};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Connection, Socket};

use crate::options::PostgresOptions;
use crate::tls::{self, RustlsStream};

/// A connection's socket half, plain or TLS (chosen by [`PostgresOptions::ssl_mode`]);
/// the caller drives it.
pub(crate) type PgConnection = Connection<Socket, RustlsStream>;

/// What a connection is for; named in its `application_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Writes publishing batches.
    Publisher,
    /// Confirms that committed batches are flushed
    /// ([`SynchronousCommit::NotifyBeforeFlush`](crate::SynchronousCommit::NotifyBeforeFlush)).
    Flusher,
    /// Holds the LISTENs, driven through `poll_message`.
    Listener,
    /// Reads rows for the listener (references, gaps, catch-up) and installs tables.
    Reader,
    /// Deletes old rows.
    Retention,
    /// Used by [`diagnose`](crate::diagnose).
    Doctor,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Flusher => "flusher",
            Role::Listener => "listener",
            Role::Reader => "reader",
            Role::Retention => "retention",
            Role::Doctor => "doctor",
        }
    }
}

/// The `application_name` of `role` connections of `node`.
pub(crate) fn application_name(options: &PostgresOptions, role: Role, node: NodeId) -> String {
    format!("{} {} {node}", options.application_name, role.name())
}

/// The context of connection failures.
const CONNECTING: &str = "connecting to PostgreSQL";

/// A connection of `role`, with the TLS, keepalive and timeout settings applied. The
/// caller drives the returned [`Connection`].
pub(crate) async fn connect_raw(
    options: &PostgresOptions,
    role: Role,
    node: NodeId,
) -> Result<(Client, PgConnection), PostgresError> {
    const CONTEXT: &str = CONNECTING;
    let root = options.ssl_root_cert.as_ref();
    let connector = tls::connector(options.ssl_mode, root)
        .map_err(|message| PostgresError::message(CONTEXT, message))?;
    let mut config = options.config.clone();
    config
        .ssl_mode(options.ssl_mode.driver_mode())
        .application_name(application_name(options, role, node))
        .connect_timeout(options.command_timeout)
        .keepalives(true)
        .keepalives_idle(options.keepalive_idle)
        .keepalives_interval(options.keepalive_idle / 2)
        .keepalives_retries(3)
        .tcp_user_timeout(options.tcp_user_timeout);
    let connecting = config.connect(connector);
    match tokio::time::timeout(options.command_timeout, connecting).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(error)) => {
            let mut failure = PostgresError::new(CONTEXT, &error);
            if let Some(hint) = tls::hint(&error, options.ssl_mode, root) {
                failure.message = format!("{} ({hint})", failure.message);
            }
            if error.as_db_error().is_none() {
                // The server was not reached: say which one was tried.
                failure.message = format!("{} (server {})", failure.message, servers(&config));
            }
            Err(failure)
        }
        Err(_) => Err(PostgresError::message(
            CONTEXT,
            format!(
                "timed out after {:?} (server {})",
                options.command_timeout,
                servers(&config)
            ),
        )),
    }
}

/// The servers `config` names, as `host:port` (or the socket directory), for errors: never
/// the user or the password.
fn servers(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => {
                format!("{}/.s.PGSQL.{}", path.display(), port(i))
            }
        })
        .collect();
    if hosts.is_empty() {
        "none given".to_owned()
    } else {
        hosts.join(", ")
    }
}

/// A connection of `role` whose connection future runs on its own task (for roles that
/// need no notifications).
pub(crate) async fn connect(
    options: &PostgresOptions,
    role: Role,
    node: NodeId,
) -> Result<Client, PostgresError> {
    let (client, connection) = connect_raw(options, role, node).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(role = role.name(), error = %describe(&error), "connection ended");
        }
    });
    Ok(client)
}

/// Whether retrying after `error` on a fresh connection can succeed: the connection
/// broke, the server is restarting or overloaded, or a transient conflict.
pub(crate) fn is_transient(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    let Some(code) = error.code() else {
        // No SQL state: an I/O, protocol or timeout error on the connection.
        return true;
    };
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::UNDEFINED_TABLE,
            SqlState::INVALID_SCHEMA_NAME,
            SqlState::QUERY_CANCELED,
        ]
        .contains(code)
}

/// `error` as one line: the server's message and SQL state for database errors, the
/// underlying cause otherwise. Never contains the connection string.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(" (");
            text.push_str(detail);
            text.push(')');
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// A PostgreSQL failure with what the backplane was doing; the error inside
/// [`BackplaneError::Backend`] from this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresError {
    /// What the backplane was doing (`"publishing a batch"`).
    context: &'static str,
    /// What went wrong, from the server or the driver.
    message: String,
    /// The SQL state, for database errors.
    code: Option<String>,
}

impl PostgresError {
    pub(crate) fn new(context: &'static str, error: &tokio_postgres::Error) -> Self {
        Self {
            context,
            message: describe(error),
            code: error.code().map(|code| code.code().to_owned()),
        }
    }

    pub(crate) fn message(context: &'static str, message: impl Into<String>) -> Self {
        Self {
            context,
            message: message.into(),
            code: None,
        }
    }

    /// What the backplane was doing when it failed.
    pub fn context(&self) -> &str {
        self.context
    }

    /// The SQL state (`"42501"`), for errors the server reported.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether this is a failure to reach the server at all (no connection, a timeout,
    /// a server refusing connections while starting or shutting down), as opposed to a
    /// server that answered with an error (bad password, missing database).
    pub(crate) fn is_unreachable(&self) -> bool {
        self.context == CONNECTING
            && self
                .code
                .as_deref()
                .is_none_or(|code| code.starts_with("08") || code == "57P03")
    }
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

impl std::error::Error for PostgresError {}

impl From<PostgresError> for BackplaneError {
    fn from(error: PostgresError) -> Self {
        BackplaneError::backend(error)
    }
}
