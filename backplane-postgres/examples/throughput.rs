//! Cross-node throughput of the PostgreSQL backplane: one node publishes, another
//! receives; prints deliveries per second.
//!
//! ```text
//! cargo run --release -p backplane-postgres --example throughput -- \
//!     [URL] [ENVELOPES] [IN_FLIGHT] [on|off]
//! ```
//!
//! Defaults: `postgres://postgres@127.0.0.1:5432/postgres`, 100,000 envelopes of a
//! ~120-byte chat message, 256 publishes in flight, `synchronous_commit` on. Uses (and
//! drops afterwards) a schema of its own.

use std::time::Instant;

use backplane_core::{
    Backplane, BackplaneEvent, EnvelopeKind, Protocol, SerializedMessage, Target,
};
use backplane_postgres::{PostgresBackplane, PostgresOptions, SynchronousCommit};
use futures_util::StreamExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let count: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let in_flight: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let commit = match args.next().as_deref() {
        Some("off") => SynchronousCommit::Off,
        _ => SynchronousCommit::On,
    };
    let schema = format!("throughput_{}", std::process::id());
    let options = PostgresOptions::new(&url)?
        .schema_name(schema.clone())
        .synchronous_commit(commit);
    let sender = std::sync::Arc::new(PostgresBackplane::connect(options.clone()).await?);
    let receiver = PostgresBackplane::connect(options).await?;
    let mut subscription = receiver.subscribe("chat").await?;
    let frame = br#"{"type":1,"target":"ReceiveMessage","arguments":["alice","hello everyone, this is a chat message"]}"#;
    let message = SerializedMessage::new().with(Protocol::Json, &frame[..]);
    // Warm up (table creation, prepared statements).
    sender
        .publish(
            "chat",
            EnvelopeKind::Invocation {
                target: Target::All,
                message: message.clone(),
            },
        )
        .await?;

    let started = Instant::now();
    let publisher = sender.clone();
    let publishing = tokio::spawn(async move {
        futures_util::stream::iter(0..count)
            .map(|_| {
                let publisher = publisher.clone();
                let message = message.clone();
                async move {
                    publisher
                        .publish(
                            "chat",
                            EnvelopeKind::Invocation {
                                target: Target::All,
                                message,
                            },
                        )
                        .await
                }
            })
            .buffered(in_flight)
            .for_each(|result| async move { result.expect("publish failed") })
            .await;
        started.elapsed()
    });
    let mut received = 0;
    while received < count + 1 {
        match subscription.recv().await {
            Some(BackplaneEvent::Envelope(_)) => received += 1,
            Some(_) => {}
            None => break,
        }
    }
    let elapsed = started.elapsed();
    let published_in = publishing.await?;
    println!(
        "{count} envelopes, {in_flight} in flight, synchronous_commit {commit:?}: published in {published_in:.2?}, \
         delivered in {elapsed:.2?} = {:.0} deliveries/s",
        count as f64 / elapsed.as_secs_f64()
    );
    sender.shutdown().await?;
    receiver.shutdown().await?;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
