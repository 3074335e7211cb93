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
use test_services::quote_identifier;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::check::DeliveryCheck;
use crate::latency::Latencies;
use crate::probe::{Probe, now_micros};
use crate::report::{MessageReport, round3};
use crate::scenario::QUIET_PERIOD;

/// How the publishing side tells the receiving side what to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    /// Messages are still being published.
    Running,
    /// Publishing ended after this many messages (all of them, or fewer after a failure):
    /// once they are all in, listen for [`QUIET_PERIOD`] more and stop.
    Ended(u64),
    /// The drain timeout passed: stop now with what arrived.
    Stop,
}

/// What the receiving side saw.
#[derive(Debug)]
struct Received {
    check: DeliveryCheck,
    latencies: Latencies,
    /// When the last new message arrived ([`now_micros`] time).
    last_arrival: u64,
    /// Why it stopped early, if it did.
    error: Option<String>,
}

/// Check every notification until publishing ended, everything published arrived and
/// [`QUIET_PERIOD`] passed without another notification (so late duplicates are counted),
/// or until told to stop.
async fn receive(
    mut notifications: mpsc::UnboundedReceiver<(u64, String)>,
    messages: u64,
    mut publishing: watch::Receiver<Publishing>,
) -> Received {
    let mut received = Received {
        check: DeliveryCheck::new(1, messages),
        latencies: Latencies::with_capacity(usize::try_from(messages).unwrap_or(0)),
        last_arrival: 0,
        error: None,
    };
    let mut decoder = Decoder::new(Protocol::Json, 64 * 1024);
    let mut quiet_until: Option<tokio::time::Instant> = None;
    loop {
        match *publishing.borrow_and_update() {
            Publishing::Stop => break,
            Publishing::Ended(published)
                if quiet_until.is_none() && received.check.distinct() >= published =>
            {
                quiet_until = Some(tokio::time::Instant::now() + QUIET_PERIOD);
            }
            _ => {}
        }
        let quiet = async {
            match quiet_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let (arrived, payload) = tokio::select! {
            next = notifications.recv() => match next {
                Some(next) => next,
                None => {
                    received.error = Some("the LISTEN connection ended".into());
                    break;
                }
            },
            changed = publishing.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            () = quiet => break,
        };
        if quiet_until.is_some() {
            quiet_until = Some(tokio::time::Instant::now() + QUIET_PERIOD);
        }
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
        if received.check.record(&probe) {
            received
                .latencies
                .record(arrived.saturating_sub(probe.sent_micros));
            received.last_arrival = arrived;
        }
    }
    received
}

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
    let quoted_schema = quote_identifier(schema);
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
    let (notifications_tx, notifications) = mpsc::unbounded_channel();
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
    let listen = format!("LISTEN {}", quote_identifier(&channel));
    listener.batch_execute(&listen).await.map_err(db)?;

    let statement = publisher
        .prepare(&format!(
            "WITH stored AS (INSERT INTO {table} (payload) VALUES ($1))
             SELECT pg_notify($2, $3)"
        ))
        .await
        .map_err(db)?;

    let (publishing_tx, publishing) = watch::channel(Publishing::Running);
    let mut receiving = tokio::spawn(receive(notifications, scenario.messages, publishing));

    let started = now_micros();
    let limit = started + u64::try_from(scenario.time_limit.as_micros()).unwrap_or(u64::MAX);
    let mut frame = BytesMut::new();
    let mut sent = 0;
    let mut errors = Vec::new();
    for seq in 0..scenario.messages {
        let now = now_micros();
        let probe = Probe {
            sender: 0,
            seq,
            sent_micros: now,
            written_micros: now,
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
    let _ = publishing_tx.send(Publishing::Ended(sent));
    let received = match tokio::time::timeout(scenario.drain_timeout, &mut receiving).await {
        Ok(received) => received,
        Err(_) => {
            errors.push(format!(
                "notifications stopped arriving within {:?} of the last commit",
                scenario.drain_timeout
            ));
            // Stop it and take what arrived.
            let _ = publishing_tx.send(Publishing::Stop);
            receiving.await
        }
    };
    let received = received.unwrap_or_else(|error| {
        errors.push(format!("baseline receiver task: {error}"));
        Received {
            check: DeliveryCheck::new(1, scenario.messages),
            latencies: Latencies::default(),
            last_arrival: 0,
            error: None,
        }
    });
    errors.extend(received.error);
    let Received {
        check,
        mut latencies,
        last_arrival,
        ..
    } = received;
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
        schedule_lag: None,
        messages_per_s: rate.round(),
        deliveries_per_s: rate.round(),
        latency: latencies.summary(),
        latency_from_write: None,
        totals,
        refused: 0,
        first_refusal: None,
        connection_errors: errors,
        ratio_to_baseline: None,
        cpu: None,
    })
}
