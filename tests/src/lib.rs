//! Shared support for the integration tests: where the test database is, and a fresh
//! schema per test so tests run in parallel without seeing each other.
//!
//! The database is resolved once per test binary, in this order:
//!
//! 1. `BACKPLANE_TEST_DATABASE_URL`, when set (used as is; a failure to connect is an
//!    error, never a silent fallback);
//! 2. the local server at [`LOCAL_URL`], when it answers;
//! 3. a PostgreSQL container started with testcontainers, when Docker is reachable
//!    (cargo feature `containers`, on by default).
//!
//! When none is available the tests fail with a message naming all three.
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

mod database;
pub mod events;
mod schema;

pub use database::{DATABASE_URL_VAR, LOCAL_URL, database_url};
pub use schema::TestSchema;
