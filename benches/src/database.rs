//! The load tool's own use of PostgreSQL: the settings a report records, and the check
//! before a run claims a schema (dropping it is `test_services::drop_schema`).
//!
//! A run drops its schema (`CASCADE`) when it ends, so it only ever runs in a schema it
//! created: [`ensure_new_schema`] refuses a name that already exists, so `--schema signalr`
//! cannot wipe a real backplane.

use serde_json::json;
use test_services::connect;

/// PostgreSQL's version and the settings that bound commit throughput, for the report.
///
/// # Errors
///
/// A message when the database cannot be reached or read.
pub async fn facts(url: &str) -> Result<serde_json::Value, String> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'), \
             current_setting('fsync'), current_setting('wal_sync_method'), \
             current_setting('shared_buffers'), current_setting('max_connections'), \
             current_setting('ssl')",
            &[],
        )
        .await
        .map_err(|error| format!("cannot read the database settings: {error}"))?;
    Ok(json!({
        "server_version": row.get::<_, String>(0),
        "synchronous_commit": row.get::<_, String>(1),
        "fsync": row.get::<_, String>(2),
        "wal_sync_method": row.get::<_, String>(3),
        "shared_buffers": row.get::<_, String>(4),
        "max_connections": row.get::<_, String>(5),
        // TLS costs every scenario on this backplane: whether the server offers it, and
        // what the instances ask for (`hub-server` speaks TLS when the server offers it
        // unless the URL says `sslmode=disable`).
        "server_ssl": row.get::<_, String>(6),
        "instances_sslmode": sslmode(url),
    }))
}

/// The `sslmode` a connection string asks for (URL or key=value form), `prefer` (libpq's
/// and `hub-server`'s default) when it names none.
///
/// ```
/// use benches::database::sslmode;
/// assert_eq!(sslmode("postgres://u@h/db?sslmode=disable"), "disable");
/// assert_eq!(sslmode("host=h sslmode=require user=u"), "require");
/// assert_eq!(sslmode("postgres://u@h/db"), "prefer");
/// ```
pub fn sslmode(url: &str) -> String {
    url.split(['?', '&', ' '])
        .find_map(|part| part.strip_prefix("sslmode="))
        .unwrap_or("prefer")
        .to_owned()
}

/// Succeeds only if no schema called `schema` exists: the run may then create it and
/// drop it at the end without destroying anything it did not make.
///
/// # Errors
///
/// A message saying the schema exists (and what to do), or the database error.
pub async fn ensure_new_schema(url: &str, schema: &str) -> Result<(), String> {
    let client = connect(url).await?;
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(|error| format!("cannot look up schema {schema:?}: {error}"))?
        .get(0);
    if exists {
        return Err(format!(
            "schema {schema:?} already exists; hub-load drops the schema it runs in when it \
             ends, so it only uses one it creates: pass a --schema that does not exist (or \
             drop that one yourself if it is a leftover of an earlier run)"
        ));
    }
    Ok(())
}
