//! A fresh schema per test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backplane_core::{Backplane, NodeId};
use backplane_postgres::{PostgresBackplane, PostgresOptions, ReconnectBackoff};
use test_services::{backplane_application_name, quote_identifier, terminate_backplane_connection};
use tokio::sync::OnceCell;

use crate::CuttingProxy;
use crate::database::database_url;

/// Prefix of every test schema, so leftovers can be recognised and removed.
const PREFIX: &str = "bpt_";

/// Test schemas older than this are leftovers of crashed runs and get dropped.
const STALE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// Makes schema names unique within the process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs the leftover clean-up once per test binary.
static SWEPT: OnceCell<()> = OnceCell::const_new();

/// A uniquely named schema for one test (created by the backplane on first use), on the
/// resolved test database.
#[derive(Debug)]
pub struct TestSchema {
    /// The schema name: `bpt_<label>_<unix seconds>_<pid>_<n>`.
    name: String,
    /// The database it lives in.
    url: &'static str,
}

impl TestSchema {
    /// A fresh schema name for a test called `label`; nothing is created yet.
    ///
    /// # Panics
    ///
    /// Panics when no test database is available (see [`database_url`]).
    pub async fn create(label: &str) -> Self {
        crate::init_logging();
        let url = database_url().await;
        SWEPT.get_or_init(|| sweep_leftovers(url)).await;
        let label: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!(
            "{PREFIX}{label}_{}_{}_{}",
            unix_now(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Self { name, url }
    }

    /// The schema name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database URL.
    pub fn url(&self) -> &'static str {
        self.url
    }

    /// The quoted, schema-qualified name of the messages table of `hub`.
    pub fn messages_table(&self, hub: &str) -> String {
        format!("\"{}\".\"{hub}_messages\"", self.name)
    }

    /// Backplane options on this schema, with timings shortened for tests (faster
    /// reconnects, probes and gap waits; the defaults are for production).
    pub fn options(&self) -> PostgresOptions {
        let mut options = PostgresOptions::new(self.url)
            .expect("the test database URL parses")
            .schema_name(self.name.clone())
            .command_timeout(Duration::from_secs(10))
            .gap_wait(Duration::from_millis(500))
            .probe(Duration::from_secs(1), Duration::from_secs(3));
        options.reconnect_backoff = ReconnectBackoff::default();
        options.reconnect_backoff.initial = Duration::from_millis(50);
        options.reconnect_backoff.max = Duration::from_secs(1);
        options
    }

    /// The TCP address of the test database (for a [`CuttingProxy`] in front of it).
    ///
    /// # Panics
    ///
    /// Panics if the database is reached through a Unix socket or does not resolve.
    pub async fn database_address(&self) -> SocketAddr {
        let options = self.options();
        let host = match &options.config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("a TCP database address is needed, not {other:?}"),
        };
        let port = options.config.get_ports().first().copied().unwrap_or(5432);
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolving the database host")
            .next()
            .expect("the database host resolves")
    }

    /// [`TestSchema::options`] reaching the same database only through `proxy`, with a
    /// fast probe (every 500 ms, 1 s timeout) and a 2 s command timeout, so a partition
    /// is noticed quickly.
    pub fn options_through(&self, proxy: &CuttingProxy) -> PostgresOptions {
        self.options_at(proxy.address)
            .probe(Duration::from_millis(500), Duration::from_secs(1))
            .command_timeout(Duration::from_secs(2))
    }

    /// [`TestSchema::options`] reaching the same database (same user, password and
    /// database name) at `address` instead, e.g. a proxy in front of it.
    pub fn options_at(&self, address: SocketAddr) -> PostgresOptions {
        let mut options = self.options();
        let mut config = tokio_postgres::Config::new();
        config.host(address.ip().to_string()).port(address.port());
        if let Some(user) = options.config.get_user() {
            config.user(user);
        }
        if let Some(password) = options.config.get_password() {
            config.password(password);
        }
        if let Some(dbname) = options.config.get_dbname() {
            config.dbname(dbname);
        }
        options.config = config;
        options
    }

    /// `count` nodes on this schema with [`TestSchema::options`].
    ///
    /// # Panics
    ///
    /// Panics if a node cannot start.
    pub async fn nodes(&self, count: usize) -> Vec<Arc<PostgresBackplane>> {
        self.nodes_with(count, |options| options).await
    }

    /// `count` nodes on this schema, with options adjusted by `adjust`.
    ///
    /// # Panics
    ///
    /// Panics if a node cannot start.
    pub async fn nodes_with(
        &self,
        count: usize,
        adjust: impl Fn(PostgresOptions) -> PostgresOptions,
    ) -> Vec<Arc<PostgresBackplane>> {
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let node = PostgresBackplane::connect(adjust(self.options()))
                .await
                .unwrap_or_else(|error| panic!("starting a node on {}: {error}", self.name));
            nodes.push(Arc::new(node));
        }
        nodes
    }

    /// `count` nodes as `Arc<dyn Backplane>`, the shape the conformance suite and
    /// servers use.
    pub async fn cluster(&self, count: usize) -> Vec<Arc<dyn Backplane>> {
        self.nodes(count)
            .await
            .into_iter()
            .map(|node| node as Arc<dyn Backplane>)
            .collect()
    }

    /// A plain client on the test database, for inspecting tables or killing backends.
    ///
    /// # Panics
    ///
    /// Panics if the database does not answer.
    pub async fn admin(&self) -> tokio_postgres::Client {
        test_services::connect(self.url)
            .await
            .unwrap_or_else(|error| panic!("connecting the admin client: {error}"))
    }

    /// Terminate (`pg_terminate_backend`) the backend of `node`'s `role` connection
    /// (`"listener"`, `"publisher"`, `"reader"`), waiting up to 10 s for it to exist
    /// (after a previous kill the node may still be reconnecting). Returns how many
    /// backends were terminated.
    ///
    /// # Panics
    ///
    /// Panics if no such backend shows up within 10 s.
    pub async fn terminate(&self, role: &str, node: NodeId) -> u64 {
        terminate(role, node).await
    }

    /// Drop the schema and everything in it.
    ///
    /// # Panics
    ///
    /// Panics if the database refuses.
    pub async fn drop(self) {
        test_services::drop_schema(self.url, &self.name)
            .await
            .unwrap_or_else(|error| panic!("dropping schema {}: {error}", self.name));
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Drop test schemas left behind by runs that crashed long ago (their names carry the
/// creation time; recent ones may belong to a run in progress and are kept).
async fn sweep_leftovers(url: &str) {
    let Ok(client) = test_services::connect(url).await else {
        return;
    };
    let Ok(rows) = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&PREFIX],
        )
        .await
    else {
        return;
    };
    let now = unix_now();
    for row in rows {
        let name: String = row.get(0);
        // bpt_<label>_<unix>_<pid>_<n>: the time is third from the end.
        if is_stale(&name, 2, now) {
            let _ = client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_identifier(&name)
                ))
                .await;
        }
    }
    // Login roles some tests create, named after their schema plus a suffix
    // (`bpt_<label>_<unix>_<pid>_<n>_<suffix>`), left behind by runs that failed.
    let Ok(rows) = client
        .query(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&PREFIX],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        if is_stale(&name, 3, now) {
            let _ = client
                .batch_execute(&format!(
                    "DROP OWNED BY \"{name}\" CASCADE; DROP ROLE IF EXISTS \"{name}\""
                ))
                .await;
        }
    }
}

/// Whether `name`, which carries its creation time (unix seconds) as its
/// `from_end`-th `_`-separated part counted from the end (0 = last), is older than
/// [`STALE_AFTER`].
fn is_stale(name: &str, from_end: usize, now: u64) -> bool {
    name.rsplit('_')
        .nth(from_end)
        .and_then(|part| part.parse::<u64>().ok())
        .is_some_and(|created| now.saturating_sub(created) > STALE_AFTER.as_secs())
}

/// Terminate (`pg_terminate_backend`) the backend of `node`'s `role` connection
/// (`"listener"`, `"publisher"`, `"reader"`) in the test database, waiting up to 10 s for
/// it to exist (after a previous kill the node may still be reconnecting). Returns how
/// many backends were terminated. [`TestSchema::terminate`] without the schema, for
/// fault hooks that only know the node.
///
/// # Panics
///
/// Panics if no such backend shows up within 10 s.
pub async fn terminate(role: &str, node: NodeId) -> u64 {
    let admin = test_services::connect(database_url().await)
        .await
        .unwrap_or_else(|error| panic!("connecting the admin client: {error}"));
    let node = node.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let killed = terminate_backplane_connection(&admin, role, &node)
            .await
            .expect("querying pg_stat_activity");
        if killed > 0 {
            return killed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backend with application_name {:?} to terminate",
            backplane_application_name(role, &node)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
