//! Checks an operator can run against a database before (or instead of) starting a node,
//! for a `doctor` command. Nothing here prints; each check says what it found.

use std::fmt;

use backplane_core::NodeId;
use futures_util::future::poll_fn;
use tokio_postgres::AsyncMessage;

use crate::connect::{self, Role, describe};
use crate::names::{TableNames, quote_ident, validate_schema};
use crate::options::PostgresOptions;

/// What one diagnostic check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckStatus {
    /// The check passed.
    Passed,
    /// Not there yet, and a node starting with these options creates it (a fresh
    /// database): nothing is wrong.
    NotCreatedYet,
    /// Something that would stop a node (or its delivery).
    Failed,
}

/// The outcome of one diagnostic check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// What was checked (`"connect"`, `"schema exists"`, ...).
    pub name: &'static str,
    /// Whether nothing found here would stop a node: `status` is `Passed` or
    /// `NotCreatedYet`.
    pub ok: bool,
    /// What was found.
    pub status: CheckStatus,
    /// What was found, or why it failed.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, status: CheckStatus, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: status != CheckStatus::Failed,
            status,
            detail: detail.into(),
        }
    }

    fn passed(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, CheckStatus::Passed, detail)
    }

    fn failed(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, CheckStatus::Failed, detail)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            CheckStatus::Passed => "ok",
            CheckStatus::NotCreatedYet => "absent",
            CheckStatus::Failed => "FAILED",
        };
        write!(f, "{status:6} {}: {}", self.name, self.detail)
    }
}

/// Check that a node with `options` could serve `hub`: the connection works, the schema
/// and the hub's messages table exist (or, on a fresh database, the role may create
/// them, as a node does at start: [`CheckStatus::NotCreatedYet`]), and a LISTEN/NOTIFY round
/// trip on a private channel arrives within the command timeout (this fails, for example,
/// behind PgBouncer in transaction-pooling mode). Changes nothing in the database.
///
/// Checks that cannot run because an earlier one failed are reported as failed, saying
/// why. The result always has the same checks in the same order:
/// `connect`, `schema exists`, `messages table exists`, `notify round trip`.
pub async fn diagnose(options: &PostgresOptions, hub: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    let node = NodeId::random();
    let names = validate_schema(&options.schema_name).and_then(|()| {
        TableNames::new(
            &options.schema_name,
            &(options.table_slug_generator)(hub),
            &options.channel_name_generator,
        )
    });
    let client = match connect::connect(options, Role::Doctor, node).await {
        Ok(client) => {
            // Whether this connection is encrypted, as the server sees it (sslmode
            // prefer falls back to plain TCP silently).
            let (version, tls) = client
                .query_one(
                    "SELECT current_setting('server_version'),
                            coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                    &[],
                )
                .await
                .map(|row| (row.get::<_, String>(0), row.get::<_, bool>(1)))
                .unwrap_or_else(|_| ("unknown".into(), false));
            let tls = if tls { "TLS" } else { "no TLS" };
            checks.push(Check::passed(
                "connect",
                format!(
                    "connected (PostgreSQL {version}, {tls}, sslmode={})",
                    options.ssl_mode
                ),
            ));
            Some(client)
        }
        Err(error) => {
            checks.push(Check::failed("connect", error.to_string()));
            None
        }
    };
    let Some(client) = client else {
        for name in [
            "schema exists",
            "messages table exists",
            "notify round trip",
        ] {
            checks.push(Check::failed(name, "not checked: cannot connect"));
        }
        return checks;
    };
    let schema = &options.schema_name;
    // Whether the schema exists, and whether this role may create what is missing: a
    // schema needs CREATE on the database, a table CREATE on its schema (a node that
    // creates the schema owns it).
    let found = client
        .query_one(
            "SELECT n.oid IS NOT NULL,
                    has_database_privilege(current_database(), 'CREATE'),
                    n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'CREATE'),
                    current_user::text
             FROM (SELECT 1) AS one
             LEFT JOIN pg_namespace AS n ON n.nspname = $1",
            &[schema],
        )
        .await
        .map(|row| Found {
            schema: row.get(0),
            may_create_schema: row.get(1),
            may_create_table: row.get(2),
            role: row.get(3),
        });
    let found = match found {
        Ok(found) => found,
        Err(error) => {
            let error = describe(&error);
            checks.push(Check::failed("schema exists", error.clone()));
            checks.push(Check::failed("messages table exists", error));
            checks.push(notify_round_trip(options, node, &client).await);
            return checks;
        }
    };
    let quoted = quote_ident(schema);
    checks.push(if found.schema {
        Check::passed("schema exists", format!("schema {quoted}"))
    } else if found.may_create_schema {
        Check::new(
            "schema exists",
            CheckStatus::NotCreatedYet,
            format!("schema {quoted} not created yet: a node creates it at start"),
        )
    } else {
        Check::failed(
            "schema exists",
            format!(
                "schema {quoted} does not exist and role {} may not create it: \
                 create it (CREATE SCHEMA {quoted} AUTHORIZATION {}) or grant CREATE on the database",
                found.role,
                quote_ident(&found.role)
            ),
        )
    });
    match &names {
        Err(error) => checks.push(Check::failed("messages table exists", error.to_string())),
        Ok(names) => match client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&names.qualified])
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => checks.push(Check::passed(
                "messages table exists",
                format!("table {} (channel {:?})", names.qualified, names.channel),
            )),
            Ok(_) if found.may_create_table || (!found.schema && found.may_create_schema) => {
                checks.push(Check::new(
                    "messages table exists",
                    CheckStatus::NotCreatedYet,
                    format!(
                        "table {} not created yet: a node creates it on first use of hub {hub:?}",
                        names.qualified
                    ),
                ))
            }
            Ok(_) => checks.push(Check::failed(
                "messages table exists",
                format!(
                    "table {} does not exist and role {} may not create it: grant CREATE on schema {quoted}",
                    names.qualified, found.role
                ),
            )),
            Err(error) => checks.push(Check::failed("messages table exists", describe(&error))),
        },
    }
    checks.push(notify_round_trip(options, node, &client).await);
    checks
}

/// What the schema check found out about the schema and the role.
struct Found {
    schema: bool,
    may_create_schema: bool,
    may_create_table: bool,
    role: String,
}

/// LISTEN on a private channel over a second connection, NOTIFY it from the first, and
/// wait for the notification.
async fn notify_round_trip(
    options: &PostgresOptions,
    node: NodeId,
    sender: &tokio_postgres::Client,
) -> Check {
    const NAME: &str = "notify round trip";
    let timeout = options.command_timeout;
    let channel = format!("signalr_doctor_{node}");
    let (listener, mut connection) = match connect::connect_raw(options, Role::Doctor, node).await {
        Ok(pair) => pair,
        Err(error) => return Check::failed(NAME, error.to_string()),
    };
    let started = tokio::time::Instant::now();
    let listen_sql = format!("LISTEN {}", quote_ident(&channel));
    let listen = listener.batch_execute(&listen_sql);
    let outcome = tokio::time::timeout(timeout, async {
        // Drive the connection while LISTEN runs.
        futures_util::pin_mut!(listen);
        loop {
            tokio::select! {
                done = &mut listen => { done.map_err(|e| describe(&e))?; break; }
                message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(describe(&error)),
                    None => return Err("connection closed".to_owned()),
                },
            }
        }
        sender
            .execute("SELECT pg_notify($1, 'ping')", &[&channel])
            .await
            .map_err(|e| describe(&e))?;
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == channel => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(describe(&error)),
                None => return Err("connection closed".to_owned()),
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Check::passed(
            NAME,
            format!(
                "notification received after {} ms",
                started.elapsed().as_millis()
            ),
        ),
        Ok(Err(error)) => Check::failed(NAME, error),
        Err(_) => Check::failed(
            NAME,
            format!(
                "no notification within {timeout:?} (LISTEN needs a session: PgBouncer in transaction pooling mode does not deliver notifications)"
            ),
        ),
    }
}
