//! Shared support for the integration tests: where the test database is, and a fresh
//! schema per test so tests run in parallel without seeing each other.
//!
//! The database is resolved once per test binary, in this order:
//!
//! 1. `BACKPLANE_TEST_DATABASE_URL`, when set (used as is; a failure to connect is an
//!    error, never a silent fallback);
//! 2. the local server at [`LOCAL_URL`], when it answers;
//! 3. a PostgreSQL container started with testcontainers, when Docker is reachable
//!    (cargo feature `containers`, on by default): the image `postgres:`[`POSTGRES_TAG`],
//!    one container per test binary, removed just after the binary exits, however it
//!    exits (`reaper.rs`). `BACKPLANE_TEST_CONTAINER=1` skips step 2; tests/containers/
//!    run.sh uses it to exercise this path where a local server runs.
//!
//! When none is available the tests fail with a message naming all three.
//!
//! Set `RUST_LOG` (for example `RUST_LOG=backplane_postgres=debug`) to see the
//! backplane's logs in failing tests' output; [`init_logging`] is called by
//! [`TestSchema::create`].
//!
//! ```no_run
//! # async fn example() {
//! let schema = tests::TestSchema::create("example").await;
//! let options = schema.options(); // PostgresOptions on this schema, test timings
//! let admin = schema.admin().await; // a plain client, e.g. for pg_terminate_backend
//! # drop((options, admin));
//! schema.drop().await;
//! # }
//! ```

mod backends;
mod binaries;
pub mod cluster;
mod database;
pub mod events;
mod hub_server;
mod js;
mod listen;
mod process;
mod python;
#[cfg(feature = "containers")]
mod reaper;
pub mod scene;
mod schema;
mod script;

pub use backends::{ProcessNamespace, TestBackend, nats_url, redis_url};
pub use backplane_core::testkit::CuttingProxy;
pub use binaries::workspace_binaries;
pub use database::{CONTAINER_VAR, DATABASE_URL_VAR, LOCAL_URL, POSTGRES_TAG, database_url};
pub use hub_server::{HubServerProcess, hub_server_command};
pub use js::{ensure_js_packages, js_dir};
pub use listen::listen;
pub use process::{lines_of, output_lines};
pub use python::{
    PYTHON_KEEP_ALIVE_INTERVAL, PythonClient, ensure_python_clients, python_dir, venv_python,
};

/// Send `tracing` output to the test harness (shown for failing tests), filtered by
/// `RUST_LOG`; nothing is logged when it is unset. Safe to call repeatedly.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
pub use schema::{TestSchema, terminate};
pub use script::{ScriptOutput, json_result, node_script, python_script};
