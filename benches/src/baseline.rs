//! The baseline: the original .NET PostgreSQL backplane's design, measured on the same
//! database in the same run, so every report can say how far S1 is from it.
//!
//! That design stores each message in a table and sends the whole payload, base64
//! encoded, in a `NOTIFY`, one transaction per message, and waits for each commit before
//! the next. Here: one publishing connection runs, per message, the single statement
//! `WITH stored AS (INSERT INTO messages (payload) VALUES ($1)) SELECT pg_notify($2, $3)`
//! (one round trip and one commit: the cheapest form of that design, so the ratio is not
//! flattered), and one dedicated LISTEN connection receives the notifications, decodes
//! the base64 and the SignalR frame inside, and checks the probe. The messages are the
//! same chat frames the servers send.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use hub_protocol::{Decoder, HubMessage, Protocol, encode_invocation};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::check::DeliveryCheck;
use crate::latency::Latencies;
use crate::probe::{Probe, now_micros};
use crate::report::{MessageReport, round3};

/// The baseline's settings.
#[derive(Debug, Clone)]
pub struct BaselineScenario {
    /// Messages to publish.
    pub messages: u64,
    /// Length of each message's text.
    pub payload_len: usize,
    /// Stop publishing after this long even if not all messages were sent.
    pub time_limit: Duration,
    /// How long to wait for the last notifications after the last commit.
    pub drain_timeout: Duration,
}

/// Run the baseline in `schema` (created if missing; its table is dropped afterwards).
///
/// # Errors
///
/// A message when the database cannot be reached or the table not created.
pub async fn run(
    scenario: &BaselineScenario,
    database_url: &str,
    schema: &str,
) -> Result<MessageReport, String> {
    let db = |error: tokio_postgres::Error| format!("baseline: {error}");
    let quoted_schema = format!("\"{}\"", schema.replace('"', "\"\""));
    let table = format!("{quoted_schema}.baseline_messages");
    let channel = format!("{schema}.baseline");

    let (publisher, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(db)?;
    let publisher_connection = tokio::spawn(connection);
    publisher
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {quoted_schema};
             DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (
                 id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 payload bytea NOT NULL,
                 inserted_on timestamptz NOT NULL DEFAULT now())"
        ))
        .await
        .map_err(db)?;

    // The listener drives its connection by hand: the `Connection` future alone would
    // discard notifications.
    let (listener, mut connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(db)?;
    let (notifications_tx, mut notifications) = mpsc::unbounded_channel();
    let listener_connection = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if notifications_tx
                        .send((now_micros(), notification.payload().to_owned()))
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let listen = format!("LISTEN \"{}\"", channel.replace('"', "\"\""));
    listener.batch_execute(&listen).await.map_err(db)?;

    let statement = publisher
        .prepare(&format!(
            "WITH stored AS (INSERT INTO {table} (payload) VALUES ($1))
             SELECT pg_notify($2, $3)"
        ))
        .await
        .map_err(db)?;

    let receiving = tokio::spawn({
        let messages = scenario.messages;
        async move {
            let mut check = DeliveryCheck::new(1, messages);
            let mut latencies = Latencies::with_capacity(usize::try_from(messages).unwrap_or(0));
            let mut decoder = Decoder::new(Protocol::Json, 64 * 1024);
            let mut last_arrival = 0;
            while !check.complete() {
                let Some((arrived, payload)) = notifications.recv().await else {
                    break;
                };
                let Ok(frame) = BASE64.decode(payload.as_bytes()) else {
                    continue;
                };
                let mut buf = BytesMut::from(&frame[..]);
                let Ok(Some(HubMessage::Invocation(invocation))) = decoder.decode(&mut buf) else {
                    continue;
                };
                let Some(probe) = invocation
                    .arguments
                    .deserialize::<&str>(2)
                    .ok()
                    .and_then(Probe::parse)
                else {
                    continue;
                };
                if check.record(&probe) {
                    latencies.record(arrived.saturating_sub(probe.sent_micros));
                    last_arrival = arrived;
                }
            }
            (check, latencies, last_arrival)
        }
    });

    let started = now_micros();
    let limit = started + u64::try_from(scenario.time_limit.as_micros()).unwrap_or(u64::MAX);
    let mut frame = BytesMut::new();
    let mut sent = 0;
    let mut errors = Vec::new();
    for seq in 0..scenario.messages {
        let probe = Probe {
            sender: 0,
            seq,
            sent_micros: now_micros(),
        };
        if probe.sent_micros > limit {
            errors.push(format!("time limit reached after {sent} messages"));
            break;
        }
        let text = probe.to_text(scenario.payload_len);
        encode_invocation(
            Protocol::Json,
            &mut frame,
            None,
            "ReceiveGroupMessage",
            &("baseline", "load", text.as_str()),
        )
        .map_err(|error| format!("baseline: {error}"))?;
        let payload = frame.split();
        let encoded = BASE64.encode(&payload);
        if let Err(error) = publisher
            .execute(&statement, &[&&payload[..], &channel, &encoded])
            .await
        {
            errors.push(format!("publish failed: {error}"));
            break;
        }
        sent += 1;
    }
    let send_finished = now_micros();
    let outcome = tokio::time::timeout(scenario.drain_timeout, receiving).await;
    let (check, mut latencies, last_arrival) = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => return Err(format!("baseline receiver: {error}")),
        Err(_) => {
            return Err(format!(
                "baseline: notifications stopped arriving ({sent} sent); is the listener blocked?"
            ));
        }
    };
    let _ = publisher
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await;
    drop(publisher);
    drop(listener);
    let _ = publisher_connection.await;
    let _ = listener_connection.await;

    let totals = check.totals();
    let duration = last_arrival.saturating_sub(started) as f64 / 1e6;
    let rate = if duration > 0.0 {
        totals.delivered as f64 / duration
    } else {
        0.0
    };
    Ok(MessageReport {
        scenario: "baseline".into(),
        description: "original .NET backplane design: one INSERT+NOTIFY (base64 payload) \
                      transaction per message, each commit awaited, one connection to one \
                      LISTEN connection"
            .into(),
        senders: 1,
        receivers: 1,
        messages: scenario.messages,
        payload_bytes: scenario.payload_len,
        pacing: "one commit at a time".into(),
        duration_s: round3(duration),
        send_duration_s: round3(send_finished.saturating_sub(started) as f64 / 1e6),
        messages_per_s: rate.round(),
        deliveries_per_s: rate.round(),
        latency: latencies.summary(),
        totals,
        refused: 0,
        first_refusal: None,
        connection_errors: errors,
        ratio_to_baseline: None,
        cpu: None,
    })
}
