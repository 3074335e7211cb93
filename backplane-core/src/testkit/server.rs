//! A server of a test's own (`redis-server`, `nats-server -js`), on a spare loopback
//! port, that the test may kill and restart; the machine's shared servers are never
//! touched. The backend's tests say how to start the program and how to tell it
//! answers ([`ServerProgram`]); the lifecycle is here.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::id::NodeId;

/// How to run one kind of server.
pub trait ServerProgram {
    /// The executable, for messages (`"redis-server"`).
    const NAME: &'static str;

    /// The command line serving on 127.0.0.1:`port`, keeping its data in `dir` if
    /// the server was started with one.
    fn command(&self, port: u16, dir: Option<&Path>) -> Command;

    /// The URL a client connects to.
    fn url(&self, port: u16) -> String;

    /// Whether the server at `url` answers (and is ready for the backplane).
    fn answers(&self, url: &str) -> impl Future<Output = bool>;
}

/// A port on 127.0.0.1 that nothing listens on: bound, then closed again.
///
/// # Panics
///
/// If no port is free.
pub fn spare_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a spare port");
    listener.local_addr().expect("bound").port()
}

/// A disposable server; killed when dropped, its data directory removed.
#[derive(Debug)]
pub struct DisposableServer<P: ServerProgram> {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// What runs.
    program: P,
    /// Its data directory, if it keeps one (persistence, a JetStream store).
    dir: Option<PathBuf>,
    /// The running process, if any.
    child: Option<Child>,
}

impl<P: ServerProgram> DisposableServer<P> {
    /// Start `program` on a spare port, with a fresh data directory if `with_dir`, and
    /// wait until it answers.
    ///
    /// # Panics
    ///
    /// If no port is free, the directory cannot be made, or the server does not start
    /// or answer within 20 s.
    pub async fn start(program: P, with_dir: bool) -> Self {
        let port = spare_port();
        let dir = with_dir.then(|| {
            let name = format!("{}-{:x}", P::NAME, NodeId::random().as_u128() as u64);
            let dir = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&dir).expect("creating the server's directory");
            dir
        });
        let mut server = Self {
            port,
            program,
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    /// The URL a client connects to.
    pub fn url(&self) -> String {
        self.program.url(self.port)
    }

    /// Kill the process (SIGKILL: no clean shutdown, connections reset).
    ///
    /// # Panics
    ///
    /// If the process cannot be killed.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .unwrap_or_else(|error| panic!("killing {}: {error}", P::NAME));
        }
    }

    /// Start the process (again) on the same port and directory, and wait until it
    /// answers.
    ///
    /// # Panics
    ///
    /// If it does not start or answer within 20 s.
    pub async fn restart(&mut self) {
        self.kill().await;
        let child = self
            .program
            .command(self.port, self.dir.as_deref())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {} (is it installed?): {error}", P::NAME));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let url = self.url();
        while !self.program.answers(&url).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not answer on port {}",
                P::NAME,
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl<P: ServerProgram> Drop for DisposableServer<P> {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
