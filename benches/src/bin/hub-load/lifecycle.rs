//! What a run owns (servers, schemas, Redis keys or a NATS stream) and undoes at the
//! end, and the signals that end a run early.

use benches::servers::{BackplaneTarget, ServerProcess};
use benches::{database, purge};
use test_services::drop_schema;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What this run started or created, undone at the end whatever happened.
#[derive(Debug, Default)]
pub(super) struct Owned {
    /// Servers started here: stopped at the end.
    pub(super) servers: Vec<ServerProcess>,
    /// Schemas this run created (each checked absent first): dropped at the end.
    pub(super) schemas: Vec<String>,
    /// Redis or NATS backplanes of the servers started here: their keys or stream are
    /// removed at the end.
    pub(super) purges: Vec<BackplaneTarget>,
}

impl Owned {
    /// Claim `schema` for this run: it must not exist yet, and is dropped at the end.
    pub(super) async fn claim_schema(
        &mut self,
        database_url: &str,
        schema: &str,
    ) -> Result<(), String> {
        database::ensure_new_schema(database_url, schema).await?;
        self.schemas.push(schema.to_owned());
        Ok(())
    }

    /// Stop every server, then drop every schema and remove every Redis prefix's keys
    /// and NATS stream.
    pub(super) async fn release(&mut self, database_url: &str) {
        for server in self.servers.drain(..) {
            server.stop().await;
        }
        for schema in self.schemas.drain(..) {
            if let Err(error) = drop_schema(database_url, &schema).await {
                eprintln!("warning: could not drop schema {schema:?}: {error}");
            }
        }
        for target in self.purges.drain(..) {
            let outcome = match &target {
                BackplaneTarget::Redis { url, prefix } => purge::redis(url, prefix).await.map(drop),
                BackplaneTarget::Nats { url, prefix } => purge::nats(url, prefix).await,
                _ => Ok(()),
            };
            if let Err(error) = outcome {
                eprintln!(
                    "hub-load: could not remove the {} backplane's data of this run: {error}",
                    target.name()
                );
            }
        }
    }
}

/// Ctrl-C and SIGTERM, listened for from the start of the run, so an interruption
/// while the servers start still stops them and drops the schema.
#[derive(Debug)]
pub(super) struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

impl Interrupts {
    pub(super) fn register() -> Result<Self, String> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|error| format!("cannot listen for {name}: {error}"))
        };
        Ok(Self {
            interrupt: listen(SignalKind::interrupt(), "Ctrl-C")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Completes on the next Ctrl-C or SIGTERM, with its name.
    pub(super) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
