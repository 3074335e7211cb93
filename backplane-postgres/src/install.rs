//! Creating the schema and the messages tables, idempotently and safely under
//! concurrent starts.
//!
//! Each installation step runs as one multi-statement query, which PostgreSQL executes
//! as a single implicit transaction, behind `pg_advisory_xact_lock` on a key derived
//! from the schema name: two nodes starting at once on an empty database take turns, and
//! the second finds everything in place. A fast existence check first avoids the lock
//! (and the `CREATE` privilege) when the objects already exist.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio_postgres::Client;

use crate::connect::PostgresError;
use crate::context::lock;
use crate::names::{TableNames, lock_key, quote_ident};

/// The comment that marks a table as a backplane messages table; retention only deletes
/// from tables that carry it.
pub(crate) const TABLE_MARKER: &str = "signalr-backplane messages table";

/// Tables this node already knows to exist, so each is installed once per node.
#[derive(Debug, Default)]
pub(crate) struct Installed {
    /// Qualified names of tables known to exist.
    tables: Mutex<HashSet<String>>,
}

impl Installed {
    /// Whether `names` was installed by (or found by) this node.
    pub(crate) fn contains(&self, names: &TableNames) -> bool {
        lock(&self.tables).contains(&names.qualified)
    }

    /// Forget `names` (after the table turned out to be missing).
    pub(crate) fn forget(&self, names: &TableNames) {
        lock(&self.tables).remove(&names.qualified);
    }

    /// Create the table for `names` unless this node already did.
    pub(crate) async fn ensure(
        &self,
        client: &Client,
        schema: &str,
        names: &TableNames,
    ) -> Result<(), PostgresError> {
        if self.contains(names) {
            return Ok(());
        }
        install_table(client, schema, names).await?;
        lock(&self.tables).insert(names.qualified.clone());
        Ok(())
    }
}

/// Create the schema if it does not exist.
pub(crate) async fn install_schema(client: &Client, schema: &str) -> Result<(), PostgresError> {
    const CONTEXT: &str = "installing the backplane schema";
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(|e| PostgresError::new(CONTEXT, &e))?
        .get(0);
    if exists {
        return Ok(());
    }
    let sql = format!(
        "SELECT pg_advisory_xact_lock({key}); CREATE SCHEMA IF NOT EXISTS {schema};",
        key = lock_key("install", schema),
        schema = quote_ident(schema),
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| PostgresError::new(CONTEXT, &e))?;
    tracing::debug!(schema, "[Init] schema created");
    Ok(())
}

/// Create the messages table of `names` (and the schema) if they do not exist.
async fn install_table(
    client: &Client,
    schema: &str,
    names: &TableNames,
) -> Result<(), PostgresError> {
    const CONTEXT: &str = "installing a messages table";
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&names.qualified])
        .await
        .map_err(|e| PostgresError::new(CONTEXT, &e))?
        .get(0);
    if exists {
        tracing::debug!(table = %names.qualified, "[Init] messages table present");
        return Ok(());
    }
    // `id` orders rows for operators and gives retention a cheap key; the unique
    // (origin, hub, seq) makes retried publishes idempotent (ON CONFLICT DO NOTHING) and
    // serves catch-up by sequence; the inserted_on index serves retention and catch-up
    // of nodes not heard from before.
    let sql = format!(
        "SELECT pg_advisory_xact_lock({key});
         CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {table} (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             origin bytea NOT NULL,
             hub text NOT NULL,
             seq bigint NOT NULL,
             payload bytea NOT NULL,
             inserted_on timestamptz NOT NULL DEFAULT now(),
             UNIQUE (origin, hub, seq)
         );
         CREATE INDEX IF NOT EXISTS {index} ON {table} (inserted_on);
         COMMENT ON TABLE {table} IS '{TABLE_MARKER}';",
        key = lock_key("install", schema),
        schema = quote_ident(schema),
        table = names.qualified,
        index = names.time_index,
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| PostgresError::new(CONTEXT, &e))?;
    tracing::debug!(table = %names.qualified, channel = %names.channel, "[Init] messages table created");
    Ok(())
}
