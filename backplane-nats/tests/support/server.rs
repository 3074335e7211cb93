//! A `nats-server -js` of a test's own, on a spare loopback port with a store directory
//! of its own, that the test may kill and restart (the shared server on 4222 is never
//! touched).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A disposable NATS with JetStream (file store); killed when dropped, its store
/// directory removed.
#[derive(Debug)]
pub struct TestServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The JetStream store directory (`-sd`).
    store: PathBuf,
    /// The running process, if any.
    child: Option<Child>,
}

impl TestServer {
    /// Start a server on a spare port with a fresh store directory.
    pub async fn start() -> Self {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a spare port");
            listener.local_addr().expect("bound").port()
        };
        let store = std::env::temp_dir().join(format!(
            "backplane-nats-{:x}",
            backplane_core::NodeId::random().as_u128() as u64
        ));
        std::fs::create_dir_all(&store).expect("creating the store directory");
        let mut server = Self {
            port,
            store,
            child: None,
        };
        server.restart().await;
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kill the process (SIGKILL: no clean shutdown, connections reset).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killing nats-server");
        }
    }

    /// Start the process (again) on the same port and store, and wait until JetStream
    /// answers.
    pub async fn restart(&mut self) {
        self.kill().await;
        let child = Command::new("nats-server")
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting nats-server (is it installed?)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = async_nats::connect(self.url()).await
                && client
                    .request("$JS.API.INFO", "".into())
                    .await
                    .is_ok_and(|reply| !reply.payload.is_empty())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not answer on port {}",
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
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
