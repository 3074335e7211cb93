//! Reading rows from the table over the reader connection (never the listening one),
//! opened on demand and retried once.

use backplane_core::NodeId;
use postgres_types::ToSql;
use tokio_postgres::Client;

use super::state::{Interrupt, Listener};
use crate::connect::{self, Role, describe, is_transient};
use crate::names::TableNames;
use crate::row::{StoredRow, seq_i64, stored_rows};

impl Listener {
    /// The reader connection, opened if needed.
    pub(super) async fn reader(&mut self) -> Result<&Client, Interrupt> {
        if self.reader.as_ref().is_none_or(Client::is_closed) {
            let client = connect::connect(&self.shared.options, Role::Reader, self.shared.node)
                .await
                .map_err(|e| Interrupt::Lost(e.to_string()))?;
            self.reader = Some(client);
        }
        Ok(self.reader.as_ref().expect("connected above"))
    }

    /// The envelopes and tombstones of `hub` from `origin` whose rows' numbers lie in
    /// `from..=to`, in sequence order. A row is keyed by the last number it holds, so the
    /// first row past `to` is read too: a pack there may begin inside the range.
    pub(super) async fn read_range(
        &mut self,
        table: &TableNames,
        origin: NodeId,
        hub: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredRow>, Interrupt> {
        let sql = format!(
            "(SELECT origin, hub, seq, payload FROM {table}
              WHERE origin = $1 AND hub = $2 AND seq BETWEEN $3 AND $4)
             UNION ALL
             (SELECT origin, hub, seq, payload FROM {table}
              WHERE origin = $1 AND hub = $2 AND seq > $4 ORDER BY seq LIMIT 1)",
            table = table.qualified
        );
        let range = from..=to;
        let origin_bytes = origin.to_bytes();
        let origin_bytes: &[u8] = &origin_bytes;
        let (from, to) = (seq_i64(from), seq_i64(to));
        let timeout = self.shared.options.command_timeout;
        let mut last_error = String::new();
        for _ in 0..2 {
            let reader = self.reader().await?;
            let params: [&(dyn ToSql + Sync); 4] = [&origin_bytes, &hub, &from, &to];
            let query = reader.query(&sql, &params);
            match tokio::time::timeout(timeout, query).await {
                Ok(Ok(rows)) => {
                    let codec = &self.shared.codec;
                    let mut found: Vec<StoredRow> = rows
                        .iter()
                        .filter_map(|row| stored_rows(codec, row))
                        .flatten()
                        .filter(|row| range.contains(&row.seq))
                        .collect();
                    found.sort_by_key(|row| row.seq);
                    return Ok(found);
                }
                Ok(Err(error)) if is_transient(&error) => {
                    last_error = describe(&error);
                    self.reader = None;
                }
                Ok(Err(error)) => {
                    self.reader = None;
                    return Err(Interrupt::Lost(describe(&error)));
                }
                Err(_) => {
                    self.reader = None;
                    last_error = format!("read not answered within {timeout:?}");
                }
            }
        }
        Err(Interrupt::Lost(format!(
            "reading envelopes from the table: {last_error}"
        )))
    }

    /// Whether the table holds any row of `origin`'s `hub` numbered `from..=to`.
    pub(super) async fn holds(
        &mut self,
        table: &TableNames,
        origin: NodeId,
        hub: &str,
        from: u64,
        to: u64,
    ) -> Result<bool, Interrupt> {
        let rows = self.read_range(table, origin, hub, from, to).await?;
        Ok(!rows.is_empty())
    }
}
