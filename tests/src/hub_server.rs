//! `hub-server` processes on a backplane (PostgreSQL, Redis or NATS), for tests that run
//! the chat server as a user does: a real binary on a real port, sharing one namespace.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::output_lines;

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
        let mut child = hub_server_command(binary)
            .args(["--urls", urls])
            .args(flags)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("starting hub-server");
        let mut output = output_lines(&mut child);
        let mut log = Vec::new();
        let url = loop {
            let line = tokio::time::timeout(START_TIMEOUT, output.recv())
                .await
                .ok()
                .flatten();
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
        tokio::spawn(async move { while output.recv().await.is_some() {} });
        Self { child, url }
    }

    /// Kills it and waits until it is gone, so its port is free again.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A command that runs the `hub-server` at `binary` as the tests want it: blind to the
/// backplane variables of the environment (`DATABASE_URL`, `REDIS_URL`, `NATS_URL`, so
/// only its flags choose), without colours, its input closed, its output piped, and
/// killed when dropped.
pub fn hub_server_command(binary: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("NATS_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
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
