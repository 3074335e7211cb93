//! A `nats-server -js` of a test's own, on a spare loopback port with a store directory
//! of its own, that the test may kill and restart (the shared server on 4222 is never
//! touched): the core's [`DisposableServer`] running NATS.

use std::path::Path;

use backplane_core::testkit::{DisposableServer, ServerProgram};
use tokio::process::Command;

/// `nats-server -js` with its JetStream file store (`-sd`) in the server's directory.
#[derive(Debug)]
pub struct Nats;

impl ServerProgram for Nats {
    const NAME: &'static str = "nats-server";

    fn command(&self, port: u16, dir: Option<&Path>) -> Command {
        let mut command = Command::new(Self::NAME);
        command
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-js");
        if let Some(dir) = dir {
            command.arg("-sd").arg(dir);
        }
        command
    }

    fn url(&self, port: u16) -> String {
        format!("nats://127.0.0.1:{port}")
    }

    /// JetStream answers (not just the server).
    async fn answers(&self, url: &str) -> bool {
        let Ok(client) = async_nats::connect(url).await else {
            return false;
        };
        client
            .request("$JS.API.INFO", "".into())
            .await
            .is_ok_and(|reply| !reply.payload.is_empty())
    }
}

/// A disposable NATS with JetStream (file store); killed when dropped, its store
/// directory removed.
pub type TestServer = DisposableServer<Nats>;

/// Start a server on a spare port with a fresh store directory.
pub async fn start() -> TestServer {
    DisposableServer::start(Nats, true).await
}
