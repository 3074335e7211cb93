//! A `redis-server` of a test's own, on a spare loopback port, that the test may kill
//! and restart (the shared server on 6379 is never touched).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A disposable Redis; killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// With `Some(dir)`: append-only file with `fsync` on every write, in `dir`.
    persistent: Option<PathBuf>,
    /// The running process, if any.
    child: Option<Child>,
}

impl TestServer {
    /// Start a server without persistence (`--save '' --appendonly no`).
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// Start a server that fsyncs every write to an append-only file in a fresh
    /// directory, so a kill loses nothing it acknowledged.
    pub async fn start_persistent() -> Self {
        let dir = std::env::temp_dir().join(format!("backplane-redis-{:x}", rand_u64()));
        std::fs::create_dir_all(&dir).expect("creating the server's directory");
        Self::launch(Some(dir)).await
    }

    async fn launch(persistent: Option<PathBuf>) -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a spare port");
            listener.local_addr().expect("bound").port()
        };
        let mut server = Self {
            port,
            persistent,
            child: None,
        };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the process (SIGKILL: no shutdown save, connections reset).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killing redis-server");
        }
    }

    /// Start the process (again) on the same port and wait until it answers.
    pub async fn restart(&mut self) {
        self.kill().await;
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("");
        match &self.persistent {
            Some(dir) => command
                .arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always")
                .arg("--dir")
                .arg(dir),
            None => command.arg("--appendonly").arg("no"),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting redis-server (is it installed?)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.persistent {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rand_u64() -> u64 {
    backplane_core::NodeId::random().as_u128() as u64
}
