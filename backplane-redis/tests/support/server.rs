//! A `redis-server` of a test's own, on a spare loopback port, that the test may kill
//! and restart (the shared server on 6379 is never touched): the core's
//! [`DisposableServer`] running Redis.

use std::path::Path;

use backplane_core::testkit::{DisposableServer, ServerProgram};
use tokio::process::Command;

/// `redis-server`: without a directory, no persistence (`--save '' --appendonly no`);
/// with one, an append-only file there with `fsync` on every write.
#[derive(Debug)]
pub struct Redis;

impl ServerProgram for Redis {
    const NAME: &'static str = "redis-server";

    fn command(&self, port: u16, dir: Option<&Path>) -> Command {
        let mut command = Command::new(Self::NAME);
        command
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("");
        match dir {
            Some(dir) => command
                .arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always")
                .arg("--dir")
                .arg(dir),
            None => command.arg("--appendonly").arg("no"),
        };
        command
    }

    fn url(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    async fn answers(&self, url: &str) -> bool {
        let Ok(client) = redis::Client::open(url) else {
            return false;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .is_ok()
    }
}

/// A disposable Redis; killed when dropped.
pub type TestServer = DisposableServer<Redis>;

/// Start a server without persistence.
pub async fn start() -> TestServer {
    DisposableServer::start(Redis, false).await
}

/// Start a server that fsyncs every write to an append-only file in a fresh directory,
/// so a kill loses nothing it acknowledged.
pub async fn start_persistent() -> TestServer {
    DisposableServer::start(Redis, true).await
}
