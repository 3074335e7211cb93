//! The publishing connection: opened with `synchronous_commit` applied, its prepared
//! INSERT+NOTIFY statements per table, and one attempt to write a batch on it.

use std::collections::HashMap;

use postgres_types::ToSql;
use tokio_postgres::{Client, Statement};

use super::batch::TableWrite;
use super::retry::AttemptError;
use crate::connect::{self, PostgresError, Role, describe};
use crate::context::NodeContext;
use crate::names::TableNames;

/// The publishing connection and its prepared statements.
pub(super) struct PublisherConnection {
    client: Client,
    /// The batch INSERT+NOTIFY statements per table.
    statements: HashMap<String, TableStatements>,
}

impl PublisherConnection {
    /// `client` (opened by [`open`]), with no statement prepared yet.
    pub(super) fn new(client: Client) -> Self {
        Self {
            client,
            statements: HashMap::new(),
        }
    }
}

/// The two forms of a table's batch INSERT+NOTIFY statement.
struct TableStatements {
    /// Plain `INSERT`, for rows that cannot exist yet.
    fresh: Statement,
    /// `INSERT ... ON CONFLICT DO NOTHING`, for retries and tombstones.
    idempotent: Statement,
}

impl TableStatements {
    /// The statement for `write`, in an attempt that is or is not a retry.
    fn for_write(&self, write: &TableWrite, retry: bool) -> &Statement {
        if retry || write.has_tombstones {
            &self.idempotent
        } else {
            &self.fresh
        }
    }
}

/// A connection for publishing, with `synchronous_commit` applied and LZ4 chosen for
/// the rows it writes where the server has it (see [`PREFER_LZ4`]).
pub(crate) async fn open(shared: &NodeContext) -> Result<Client, PostgresError> {
    let client = connect::connect(&shared.options, Role::Publisher, shared.node).await?;
    let mut setup = String::new();
    if let Some(mode) = shared.options.synchronous_commit.as_sql() {
        setup.push_str(&format!("SET synchronous_commit = {mode};"));
    }
    setup.push_str(PREFER_LZ4);
    client
        .batch_execute(&setup)
        .await
        .map_err(|e| PostgresError::new("setting up the publishing connection", &e))?;
    Ok(client)
}

/// Compress what this connection stores with LZ4 instead of PostgreSQL's default pglz,
/// where the server offers it (PostgreSQL 14 and later, built with LZ4: `lz4` is among
/// `default_toast_compression`'s values); elsewhere it selects no row and changes
/// nothing, so older or differently built servers keep pglz.
///
/// Why: a pack row (a hub's run of a batch, see the `row` module) is often larger than
/// the ~2 KB past which PostgreSQL compresses a value, and the `INSERT` compresses it
/// inside the publishing transaction, before the notifications leave. Measured on this
/// project's machine (PostgreSQL 15, 2,000 inserts of an 11.8 KB pack of chat
/// envelopes): pglz 0.28 ms per row, LZ4 0.076 ms, to about the same size (5.2 KB and
/// 5.1 KB). Readers need nothing: PostgreSQL records the method with each value.
/// Only this session's setting changes; the table, and any other writer, are untouched.
const PREFER_LZ4: &str = "SELECT set_config('default_toast_compression', 'lz4', false)
     FROM pg_settings
     WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals);";

/// One attempt to write a batch; `retry` when an earlier attempt failed (it may have
/// committed: rows are then inserted with `ON CONFLICT DO NOTHING`).
pub(super) async fn attempt(
    shared: &NodeContext,
    connection: &mut Option<PublisherConnection>,
    writes: &[TableWrite],
    retry: bool,
) -> Result<(), AttemptError> {
    if connection.as_ref().is_none_or(|c| c.client.is_closed()) {
        let client = open(shared).await.map_err(|e| {
            if e.is_unreachable() {
                AttemptError::Unreachable(e.to_string())
            } else {
                AttemptError::Transient(e.to_string())
            }
        })?;
        *connection = Some(PublisherConnection::new(client));
    }
    let connection = connection.as_mut().expect("connected above");
    let classify = AttemptError::classify;
    for write in writes {
        if !shared.installed.contains(&write.table) {
            connection.statements.remove(&write.table.qualified);
        }
        shared
            .installed
            .ensure(
                &connection.client,
                &shared.options.schema_name,
                &write.table,
            )
            .await
            .map_err(|e| match e.code() {
                Some(code) if !code.starts_with("08") && code != "57P01" => AttemptError::Fatal(e),
                _ => AttemptError::Transient(e.to_string()),
            })?;
        if !connection.statements.contains_key(&write.table.qualified) {
            let prepare = async |idempotent| {
                connection
                    .client
                    .prepare(&insert_sql(&write.table, idempotent))
                    .await
                    .map_err(|e| classify("preparing the publish statement", &e))
            };
            let statements = TableStatements {
                fresh: prepare(false).await?,
                idempotent: prepare(true).await?,
            };
            connection
                .statements
                .insert(write.table.qualified.clone(), statements);
        }
    }
    let origin = shared.node.to_bytes();
    let origin: &[u8] = &origin;
    let result = if let [write] = writes {
        let statement = connection.statements[&write.table.qualified].for_write(write, retry);
        connection
            .client
            .execute(statement, &params(&origin, write))
            .await
            .map(drop)
    } else {
        let PublisherConnection { client, statements } = connection;
        async {
            let transaction = client.transaction().await?;
            for write in writes {
                let statement = statements[&write.table.qualified].for_write(write, retry);
                transaction
                    .execute(statement, &params(&origin, write))
                    .await?;
            }
            transaction.commit().await
        }
        .await
    };
    result.map_err(|error| {
        let code = error.code();
        if code == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
            || code == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME)
        {
            // Someone dropped the table or schema: install it again on the retry.
            for write in writes {
                shared.installed.forget(&write.table);
            }
        }
        if !retry && code == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            // A row of this batch exists already (which fresh sequence numbers
            // should rule out): the retry skips existing rows.
            return AttemptError::Transient(describe(&error));
        }
        classify("publishing a batch", &error)
    })
}

fn params<'a>(origin: &'a &'a [u8], write: &'a TableWrite) -> [&'a (dyn ToSql + Sync); 6] {
    [
        origin,
        &write.hubs,
        &write.seqs,
        &write.payloads,
        &write.table.channel,
        &write.notifications,
    ]
}

/// One statement per table: the rows and the notifications, in order. `idempotent`
/// skips rows that exist (retries, tombstones).
fn insert_sql(table: &TableNames, idempotent: bool) -> String {
    format!(
        "WITH stored AS (
             INSERT INTO {table} (origin, hub, seq, payload)
             SELECT $1::bytea, r.hub, r.seq, r.payload
             FROM unnest($2::text[], $3::int8[], $4::bytea[]) AS r(hub, seq, payload)
             {on_conflict}
         )
         SELECT count(pg_notify($5::text, n)) FROM unnest($6::text[]) AS n",
        table = table.qualified,
        on_conflict = if idempotent {
            "ON CONFLICT (origin, hub, seq) DO NOTHING"
        } else {
            ""
        },
    )
}
