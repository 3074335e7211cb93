//! `hub-server` processes on a backplane (PostgreSQL, Redis or NATS), for tests that run
//! the chat server as a user does: a real binary on a real port, sharing one namespace.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::lines_of;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `hub-server`, killed when stopped or dropped.
#[derive(Debug)]
pub struct HubServerProcess {
    /// The process, so the test can stop it (as an operator or a crash would).
    child: Child,
    /// `http://127.0.0.1:{port}`, the address it reported listening on.
    pub url: String,
}

impl HubServerProcess {
    /// Starts `binary` on a free port of 127.0.0.1, on `schema` of `database_url`, and
    /// waits until it listens.
    pub async fn start(binary: &Path, database_url: &str, schema: &str) -> Self {
        Self::start_at(binary, database_url, schema, "http://127.0.0.1:0").await
    }

    /// Starts `binary` listening on `urls` (such as `http://127.0.0.1:{port}`, to come
    /// back on the address of a server stopped before).
    ///
    /// # Panics
    ///
    /// When it does not start listening in time, with everything it printed.
    pub async fn start_at(binary: &Path, database_url: &str, schema: &str, urls: &str) -> Self {
        let flags = ["--database-url", database_url, "--schema", schema];
        Self::start_with(binary, &flags, urls).await
    }

    /// Starts `binary` listening on `urls` with the backplane `flags` (such as
    /// [`ProcessNamespace::flags`](crate::ProcessNamespace::flags)).
    ///
    /// # Panics
    ///
    /// When it does not start listening in time, with everything it printed.
    pub async fn start_with(
        binary: &Path,
        flags: &[impl AsRef<std::ffi::OsStr>],
        urls: &str,
    ) -> Self {
        let mut child = Command::new(binary)
            .args(["--urls", urls])
            .args(flags)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("NATS_URL")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting hub-server");
        let mut stdout = lines_of(child.stdout.take().expect("piped stdout"));
        let mut stderr = lines_of(child.stderr.take().expect("piped stderr"));
        let mut log = Vec::new();
        let url = loop {
            let line = tokio::select! {
                line = stdout.recv() => line,
                line = stderr.recv() => line,
                () = tokio::time::sleep(START_TIMEOUT) => None,
            };
            let Some(line) = line else {
                panic!(
                    "hub-server did not start listening; its output:\n{}",
                    log.join("\n")
                );
            };
            if let Some(url) = listening_url(&line) {
                break url;
            }
            log.push(line);
        };
        // Keep draining its output so the server never blocks on a full pipe.
        tokio::spawn(async move { while stdout.recv().await.is_some() {} });
        tokio::spawn(async move { while stderr.recv().await.is_some() {} });
        Self { child, url }
    }

    /// Kills it and waits until it is gone, so its port is free again.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The `http://host:port` in a "listening on http://host:port/chathub" log line.
fn listening_url(line: &str) -> Option<String> {
    let start = line.find("listening on http://")? + "listening on ".len();
    let url = line[start..].split_whitespace().next()?;
    let url = url.trim_end_matches("/chathub");
    Some(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::listening_url;

    #[test]
    fn finds_the_url_in_the_listening_line() {
        assert_eq!(
            listening_url("INFO hub_server: listening on http://127.0.0.1:4321/chathub server=a")
                .as_deref(),
            Some("http://127.0.0.1:4321")
        );
        assert_eq!(listening_url("INFO hub_server: starting"), None);
    }
}
