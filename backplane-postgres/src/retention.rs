//! Deleting old rows: a background task per node, running on one node at a time.
//!
//! Every `retention_interval`, a node tries `pg_try_advisory_lock` on a key derived from
//! the schema; the node that gets it deletes rows older than `retention` from every
//! messages table of the schema (tables carrying the backplane's marker comment, so
//! other tables in the schema are never touched), `retention_batch_size` rows per
//! statement so no delete holds many locks or runs long, then releases the lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

use crate::connect::{self, PostgresError, Role};
use crate::context::NodeContext;
use crate::install::TABLE_MARKER;
use crate::names::{lock_key, quote_ident};

/// Run retention passes until shut down.
pub(crate) async fn run(shared: Arc<NodeContext>, mut shutdown: watch::Receiver<bool>) {
    let node = shared.node;
    let mut client: Option<Client> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.options.retention_interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            match connect::connect(&shared.options, Role::Retention, node).await {
                Ok(fresh) => client = Some(fresh),
                Err(error) => {
                    tracing::debug!(%node, %error, "retention: cannot connect; will retry");
                    continue;
                }
            }
        }
        let pass = run_pass(&shared, client.as_ref().expect("connected above"));
        let outcome = tokio::select! {
            outcome = pass => outcome,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match outcome {
            Ok(Some(deleted)) if deleted > 0 => {
                tracing::debug!(%node, deleted, retention = ?shared.options.retention, "retention: old rows deleted");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%node, %error, "retention pass failed; will retry");
                client = None;
            }
        }
    }
}

/// One pass: `None` if another node holds the retention lock, else rows deleted.
///
/// # Errors
///
/// A [`PostgresError`] if a statement failed.
pub(crate) async fn run_pass(
    shared: &NodeContext,
    client: &Client,
) -> Result<Option<u64>, PostgresError> {
    const CONTEXT: &str = "deleting old rows";
    let err = |e: tokio_postgres::Error| PostgresError::new(CONTEXT, &e);
    let schema = &shared.options.schema_name;
    let key = lock_key("retention", schema);
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(err)?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let result = delete_old(shared, client).await;
    // Unlock even after a failed delete; a broken connection releases it anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await;
    result.map(Some).map_err(err)
}

async fn delete_old(shared: &NodeContext, client: &Client) -> Result<u64, tokio_postgres::Error> {
    let options = &shared.options;
    let tables = client
        .query(
            "SELECT c.relname FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r'
               AND obj_description(c.oid, 'pg_class') = $2",
            &[&options.schema_name, &TABLE_MARKER],
        )
        .await?;
    let retention_secs = options.retention.as_secs_f64();
    let batch = i64::from(options.retention_batch_size);
    let mut total = 0;
    for row in tables {
        let table: String = row.get(0);
        let qualified = format!(
            "{}.{}",
            quote_ident(&options.schema_name),
            quote_ident(&table)
        );
        let sql = format!(
            "DELETE FROM {qualified} WHERE id IN (
                 SELECT id FROM {qualified}
                 WHERE inserted_on < now() - make_interval(secs => $1)
                 ORDER BY inserted_on LIMIT $2)"
        );
        let statement = client.prepare(&sql).await?;
        loop {
            let deleted = client
                .execute(&statement, &[&retention_secs, &batch])
                .await?;
            total += deleted;
            if deleted < options.retention_batch_size.into() {
                break;
            }
            // Leave room for other work between batches.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(total)
}
