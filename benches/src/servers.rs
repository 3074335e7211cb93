//! `hub-server` processes: finding the binary, starting and stopping instances, and
//! reading a server's memory.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use test_services::forward_lines;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::server_flags::ServerFlags;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of a server's output kept for error messages.
const KEPT_LINES: usize = 40;

/// The `hub-server` executable to start: `explicit` if given, else the one next to this
/// program (where `cargo build --release -p hub-server -p benches` puts both).
///
/// # Errors
///
/// A message saying where it looked and how to build it.
pub fn locate_hub_server(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(format!("--hub-server {}: no such file", path.display()))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|error| format!("cannot find this program's own path: {error}"))?;
    let sibling = exe.with_file_name(format!("hub-server{}", std::env::consts::EXE_SUFFIX));
    if sibling.is_file() {
        Ok(sibling)
    } else {
        Err(format!(
            "hub-server not found at {} (next to hub-load); build both with \
             `cargo build --release -p hub-server -p benches`, pass --hub-server PATH, or use \
             running servers with --server-a/--server-b",
            sibling.display()
        ))
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `hub-server` executable.
    pub binary: PathBuf,
    /// The backplane the instances share, and where.
    pub backplane: BackplaneTarget,
    /// Tuning flags, passed as given after the ones every instance needs to run
    /// ([`RUN_FLAGS`]); none unless asked for, so the binary's defaults are measured.
    pub flags: ServerFlags,
}

/// The flags every instance started here gets, because it needs them to run here (a
/// free port, the shared database and schema, a name in the logs): they are not tuning,
/// and the binary's defaults for them are not what runs.
pub const RUN_FLAGS: [&str; 7] = [
    "urls",
    "database-url",
    "redis-url",
    "nats-url",
    "schema",
    "prefix",
    "server-name",
];

/// The backplane of the instances started here, with what names its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackplaneTarget {
    /// `--database-url URL --schema SCHEMA`.
    Postgres {
        /// Connection string.
        url: String,
        /// Backplane schema.
        schema: String,
    },
    /// `--redis-url URL --prefix PREFIX`.
    Redis {
        /// Redis URL.
        url: String,
        /// Key prefix.
        prefix: String,
    },
    /// `--nats-url URL --prefix PREFIX` (the stream's name).
    Nats {
        /// NATS URL.
        url: String,
        /// Stream name and subject root.
        prefix: String,
    },
    /// No URL: the in-memory backplane, so one instance alone (A and B are the same).
    Memory,
}

impl BackplaneTarget {
    /// `postgres`, `redis`, `nats` or `memory`.
    pub fn name(&self) -> &'static str {
        match self {
            BackplaneTarget::Postgres { .. } => "postgres",
            BackplaneTarget::Redis { .. } => "redis",
            BackplaneTarget::Nats { .. } => "nats",
            BackplaneTarget::Memory => "memory",
        }
    }

    /// The `hub-server` flags that choose it.
    fn args(&self) -> Vec<&str> {
        match self {
            BackplaneTarget::Postgres { url, schema } => {
                vec!["--database-url", url, "--schema", schema]
            }
            BackplaneTarget::Redis { url, prefix } => vec!["--redis-url", url, "--prefix", prefix],
            BackplaneTarget::Nats { url, prefix } => vec!["--nats-url", url, "--prefix", prefix],
            BackplaneTarget::Memory => Vec::new(),
        }
    }
}

/// A running `hub-server` started by this program; killed if dropped.
#[derive(Debug)]
pub struct ServerProcess {
    /// The instance name it reports (`--server-name`).
    pub name: String,
    /// `http://127.0.0.1:{port}`.
    pub url: String,
    /// Its process id, for memory readings.
    pub pid: u32,
    /// Its backplane node id, from its "backplane started" log line (none if it logged
    /// none): the soak finds its PostgreSQL connections by it.
    pub node: Option<String>,
    /// The process.
    child: Child,
    /// Its last lines of output, for error messages.
    output: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Start an instance on a free port of 127.0.0.1 and wait until it listens.
    ///
    /// # Errors
    ///
    /// A message with the server's output when it did not start.
    pub async fn start(config: &ServerConfig, name: &str) -> Result<ServerProcess, String> {
        let mut child = Command::new(&config.binary)
            .args(["--urls", "http://127.0.0.1:0"])
            .args(config.backplane.args())
            .args(["--server-name", name])
            .args(config.flags.args())
            // The listening line, which says the instance is ready, is logged at info.
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // The backplane is chosen by the flags above alone (the binary also reads
            // these, and refuses two of them).
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", config.binary.display()))?;
        let pid = child.id().ok_or("hub-server exited at once")?;
        let (tx, mut lines) = mpsc::unbounded_channel();
        forward_lines(child.stdout.take().expect("piped"), tx.clone());
        forward_lines(child.stderr.take().expect("piped"), tx);
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let mut node = None;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let url = loop {
            let line = tokio::time::timeout_at(deadline, lines.recv())
                .await
                .ok()
                .flatten();
            let Some(line) = line else {
                let _ = child.start_kill();
                return Err(format!(
                    "{name} did not start listening within {START_TIMEOUT:?}; its output:\n{}",
                    joined(&output)
                ));
            };
            if let Some(url) = listening_url(&line) {
                break url;
            }
            node = node.or_else(|| node_id(&line));
            keep(&output, line);
        };
        // Keep draining its output so it never blocks on a full pipe.
        let kept = output.clone();
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                keep(&kept, line);
            }
        });
        Ok(ServerProcess {
            name: name.to_owned(),
            url,
            pid,
            node,
            child,
            output,
        })
    }

    /// The server's last lines of output.
    pub fn recent_output(&self) -> String {
        joined(&self.output)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stop it: SIGTERM (graceful shutdown), then SIGKILL if it lingers.
    pub async fn stop(mut self) {
        let terminated = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if terminated
            && tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_ok()
        {
            return;
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn keep(output: &Mutex<VecDeque<String>>, line: String) {
    let mut output = output.lock().unwrap_or_else(|e| e.into_inner());
    if output.len() == KEPT_LINES {
        output.pop_front();
    }
    output.push_back(line);
}

fn joined(output: &Mutex<VecDeque<String>>) -> String {
    let output = output.lock().unwrap_or_else(|e| e.into_inner());
    output.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// The `http://host:port` of a "listening on http://host:port/chathub" log line.
fn listening_url(line: &str) -> Option<String> {
    let start = line.find("listening on http://")? + "listening on ".len();
    let url = line[start..].split_whitespace().next()?;
    Some(url.trim_end_matches(crate::client::HUB_PATH).to_owned())
}

/// The node id of a "backplane started ... node=ID" log line.
fn node_id(line: &str) -> Option<String> {
    if !line.contains("backplane started") {
        return None;
    }
    let start = line.find("node=")? + "node=".len();
    let id = line[start..].split_whitespace().next()?.trim_matches('"');
    (!id.is_empty()).then(|| id.to_owned())
}

/// Resident memory of a process in bytes (`VmRSS` of `/proc/{pid}/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process listening on TCP `port` of this machine, found through `/proc/net/tcp*`
/// and `/proc/*/fd` (for servers this program did not start).
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|table| listening_inode(&table, port))?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp` table.
fn listening_inode(table: &str, port: u16) -> Option<String> {
    let wanted = format!("{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        // State 0A is LISTEN.
        (local_port == wanted && *fields.get(3)? == "0A")
            .then(|| fields.get(9).map(|s| (*s).to_owned()))?
    })
}

/// The port of an `http://host:port` URL.
pub fn port_of(url: &str) -> Option<u16> {
    url.trim_end_matches('/').rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line_and_proc_tables() {
        assert_eq!(
            listening_url(
                "2025 INFO hub_server: listening on http://127.0.0.1:4321/chathub server=a"
            )
            .as_deref(),
            Some("http://127.0.0.1:4321")
        );
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:10E1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 98765 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inode(table, 4321).as_deref(), Some("98765"));
        assert_eq!(listening_inode(table, 4322), None);
        assert_eq!(port_of("http://127.0.0.1:4321"), Some(4321));
    }

    #[tokio::test]
    async fn finds_this_process_listening() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
