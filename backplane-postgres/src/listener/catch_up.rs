//! Catch-up after a reconnect: per channel, the rows after the last sequence delivered
//! for known origins, and rows inserted since the listener was last known alive for
//! unknown ones, streamed and applied in per-origin order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt as _;
use postgres_types::ToSql;

use super::state::{Interrupt, Listener, Repair};
use crate::connect::describe;
use crate::names::TableNames;
use crate::row::{seq_i64, stored_rows};

impl Listener {
    /// Read and deliver everything missed while disconnected, per channel.
    pub(super) async fn catch_up(
        &mut self,
    ) -> Result<HashMap<(String, String), Repair>, Interrupt> {
        let margin = self.shared.options.effective_catch_up_margin();
        let mut repairs: HashMap<(String, String), Repair> = HashMap::new();
        let channels: Vec<(String, Arc<TableNames>, Vec<String>, SystemTime)> = self
            .channels
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    c.table.clone(),
                    c.hubs.keys().cloned().collect(),
                    c.listening_since,
                )
            })
            .collect();
        for (channel, table, hubs, listening_since) in channels {
            if hubs.is_empty() {
                continue;
            }
            let since = self
                .alive_at
                .checked_sub(margin)
                .unwrap_or(SystemTime::UNIX_EPOCH)
                .max(listening_since);
            let mut known_origins = Vec::new();
            let mut known_hubs = Vec::new();
            let mut known_seqs = Vec::new();
            for hub in &hubs {
                for (origin, seq) in self.tracker.known(hub) {
                    known_origins.push(origin.to_bytes().to_vec());
                    known_hubs.push(hub.clone());
                    known_seqs.push(seq_i64(seq));
                }
            }
            let me = self.shared.node.to_bytes();
            let after_known = format!(
                "SELECT m.origin, m.hub, m.seq, m.payload
                 FROM unnest($1::bytea[], $2::text[], $3::int8[]) AS k(origin, hub, seq)
                 JOIN {table} m ON m.origin = k.origin AND m.hub = k.hub AND m.seq > k.seq
                 ORDER BY m.origin, m.hub, m.seq",
                table = table.qualified
            );
            let from_unknown = format!(
                "SELECT m.origin, m.hub, m.seq, m.payload
                 FROM {table} m
                 WHERE m.inserted_on >= $1 AND m.hub = ANY($2::text[]) AND m.origin <> $3
                   AND NOT EXISTS (
                       SELECT 1 FROM unnest($4::bytea[], $5::text[]) AS k(origin, hub)
                       WHERE k.origin = m.origin AND k.hub = m.hub)
                 ORDER BY m.origin, m.hub, m.seq",
                table = table.qualified
            );
            self.stream_rows(
                &channel,
                &after_known,
                &[&known_origins, &known_hubs, &known_seqs],
                &mut repairs,
            )
            .await?;
            self.stream_rows(
                &channel,
                &from_unknown,
                &[&since, &hubs, &me.as_slice(), &known_origins, &known_hubs],
                &mut repairs,
            )
            .await?;
        }
        Ok(repairs)
    }

    /// Run a catch-up query and apply its rows as they stream in.
    pub(super) async fn stream_rows(
        &mut self,
        channel: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        repairs: &mut HashMap<(String, String), Repair>,
    ) -> Result<(), Interrupt> {
        let timeout = self.shared.options.command_timeout;
        self.reader().await?;
        // Taken out while streaming, because applying rows needs `&mut self`.
        let reader = self.reader.take().expect("connected above");
        let result = async {
            let rows = tokio::time::timeout(timeout, reader.query_raw(sql, params.iter().copied()))
                .await
                .map_err(|_| Interrupt::Lost(format!("catch-up query not answered within {timeout:?}")))?
                .map_err(|e| Interrupt::Lost(describe(&e)))?;
            futures_util::pin_mut!(rows);
            let mut count = 0u64;
            loop {
                let row = tokio::time::timeout(timeout, rows.next())
                    .await
                    .map_err(|_| Interrupt::Lost(format!("catch-up rows not received within {timeout:?}")))?;
                let Some(row) = row else { break };
                let row = row.map_err(|e| Interrupt::Lost(describe(&e)))?;
                count += 1;
                match stored_rows(&self.shared.codec, &row) {
                    Some(rows) => {
                        for row in rows {
                            let key = (channel.to_owned(), row.hub.clone());
                            let mut repair = repairs.get(&key).copied().unwrap_or_default();
                            self.apply_row(channel, row, &mut repair).await?;
                            repairs.insert(key, repair);
                        }
                    }
                    None => {
                        tracing::warn!(node = %self.shared.node, "[Processor] skipping a row with a malformed origin");
                    }
                }
            }
            tracing::debug!(node = %self.shared.node, channel, rows = count, "[Listener] catch-up query done");
            Ok(())
        }
        .await;
        if result.is_ok() {
            self.reader = Some(reader);
        }
        result
    }
}
