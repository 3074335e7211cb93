//! Where the servers that the integration tests (`tests`) and the benchmarks (`benches`)
//! run against are, and the few PostgreSQL chores both do, written once.
//!
//! Each server is named by an environment variable, with the machine's own server as the
//! default: [`DATABASE_URL_VAR`] (else [`LOCAL_DATABASE_URL`]), [`REDIS_URL_VAR`] (else
//! [`LOCAL_REDIS_URL`]) and [`NATS_URL_VAR`] (else [`LOCAL_NATS_URL`]). The tests add a
//! container fallback for PostgreSQL on top (`tests/src/database.rs`); that stays there,
//! so the benchmarks do not compile a Docker client.
//!
//! The PostgreSQL chores: whether a server [`answers`], a [`connect`]ed client, a
//! [`quote_identifier`]ed name, [`drop_schema`], and [`terminate_backplane_connection`]
//! (the fault both the tests and the soak inject). And one process chore: reading a child
//! process's output as lines ([`forward_lines`]).
//!
//! ```
//! assert_eq!(test_services::quote_identifier("a\"b"), "\"a\"\"b\"");
//! assert_eq!(
//!     test_services::backplane_application_name("listener", "n1"),
//!     "signalr-backplane listener n1"
//! );
//! ```

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// The environment variable that names the PostgreSQL database.
pub const DATABASE_URL_VAR: &str = "BACKPLANE_TEST_DATABASE_URL";

/// The local PostgreSQL server used when [`DATABASE_URL_VAR`] is not set.
pub const LOCAL_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The environment variable that names the Redis server.
pub const REDIS_URL_VAR: &str = "BACKPLANE_TEST_REDIS_URL";

/// The local Redis server used when [`REDIS_URL_VAR`] is not set.
pub const LOCAL_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The environment variable that names the NATS server (with JetStream).
pub const NATS_URL_VAR: &str = "BACKPLANE_TEST_NATS_URL";

/// The local NATS server used when [`NATS_URL_VAR`] is not set.
pub const LOCAL_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How long [`answers`] waits for a connection.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL URL: [`DATABASE_URL_VAR`] if set, else [`LOCAL_DATABASE_URL`].
pub fn database_url_from_env() -> String {
    from_env(DATABASE_URL_VAR, LOCAL_DATABASE_URL)
}

/// The Redis URL: [`REDIS_URL_VAR`] if set, else [`LOCAL_REDIS_URL`].
pub fn redis_url_from_env() -> String {
    from_env(REDIS_URL_VAR, LOCAL_REDIS_URL)
}

/// The NATS URL: [`NATS_URL_VAR`] if set, else [`LOCAL_NATS_URL`].
pub fn nats_url_from_env() -> String {
    from_env(NATS_URL_VAR, LOCAL_NATS_URL)
}

fn from_env(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Whether the PostgreSQL server at `url` accepts a connection within a few seconds.
///
/// # Errors
///
/// Why not, in words (the driver's error with its cause, or the timeout).
pub async fn answers(url: &str) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, NoTls);
    match tokio::time::timeout(ANSWER_TIMEOUT, connect).await {
        Ok(Ok((client, connection))) => {
            drop(client);
            let _ = connection.await;
            Ok(())
        }
        Ok(Err(error)) => Err(match std::error::Error::source(&error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        }),
        Err(_) => Err(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())),
    }
}

/// A plain client for `url` (no TLS), its connection driven by a spawned task.
///
/// # Errors
///
/// A message naming the database error.
pub async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|error| format!("cannot connect to the database: {error}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `name` as a quoted SQL identifier: inside double quotes, with every double quote
/// doubled, so any name (mixed case, spaces, quotes) means exactly itself.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drop `schema` and everything in it, if it exists.
///
/// # Errors
///
/// A message when the database cannot be reached or refuses.
pub async fn drop_schema(url: &str, schema: &str) -> Result<(), String> {
    let client = connect(url).await?;
    let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_identifier(schema));
    client
        .batch_execute(&sql)
        .await
        .map_err(|error| error.to_string())
}

/// The `application_name` a backplane node gives its `role` connection (`"listener"`,
/// `"publisher"`, `"reader"`) with the default `PostgresOptions::application_name`.
pub fn backplane_application_name(role: &str, node: &str) -> String {
    format!("signalr-backplane {role} {node}")
}

/// Terminate (`pg_terminate_backend`) every backend of `node`'s `role` connection (see
/// [`backplane_application_name`]) through `admin`; how many were terminated (0 while the
/// node is reconnecting).
///
/// # Errors
///
/// The database's error.
pub async fn terminate_backplane_connection(
    admin: &Client,
    role: &str,
    node: &str,
) -> Result<u64, tokio_postgres::Error> {
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&backplane_application_name(role, node)],
        )
        .await?
        .get(0);
    Ok(killed.unsigned_abs())
}

/// Send every line of `stream` (a child process's stdout or stderr) to `tx`, from a task
/// of its own, until either ends.
pub fn forward_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    use tokio::io::AsyncBufReadExt as _;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}
