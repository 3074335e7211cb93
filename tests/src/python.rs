//! The pinned Python SignalR clients of `tests/python` (`signalrcore`, `pysignalr`, pinned
//! with their dependencies by `requirements.txt`), installed into the virtual environment
//! `tests/python/.venv` on first use, so `cargo test` works on a clean clone with Python 3
//! and access to PyPI (and fails, saying so, without them).
//! [`PythonClient`] names the clients and their scenario scripts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::OnceCell;

/// How long creating the virtual environment and installing into it may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/python`: the scenario scripts and `requirements.txt`.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// The virtual environment's interpreter.
pub fn venv_python() -> PathBuf {
    python_dir().join(".venv/bin/python")
}

/// Run `program args` in the Python directory, failing the test with its output (and
/// `what_is_needed`) if it cannot run or fails.
async fn run_setup_step(program: &Path, args: &[&str], what_is_needed: &str) {
    let output = Command::new(program)
        .args(args)
        .current_dir(python_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(INSTALL_TIMEOUT, output)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} {args:?} did not finish in {INSTALL_TIMEOUT:?}",
                program.display()
            )
        })
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {} ({what_is_needed}): {error}",
                program.display()
            )
        });
    assert!(
        output.status.success(),
        "{} {args:?} in {} failed ({}; {what_is_needed}):\n{}{}",
        program.display(),
        python_dir().display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Create the virtual environment with the pinned packages once per test binary, if it
/// is missing.
///
/// # Panics
///
/// When Python 3 with `venv` is missing or the install fails, with its output.
pub async fn ensure_python_clients() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            // Written last by the install below, so a half-made environment is redone.
            let marker = python_dir().join(".venv/installed-requirements.txt");
            let requirements = std::fs::read_to_string(python_dir().join("requirements.txt"))
                .expect("tests/python/requirements.txt is readable");
            if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == requirements) {
                return;
            }
            run_setup_step(
                Path::new("python3"),
                &["-m", "venv", "--clear", ".venv"],
                "Python 3.8+ with the venv module is needed for these tests",
            )
            .await;
            run_setup_step(
                &venv_python(),
                &[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                    "requirements.txt",
                ],
                "PyPI must be reachable, or a pip index configured",
            )
            .await;
            std::fs::write(&marker, requirements).expect("writing the install marker");
        })
        .await;
}

/// A Python SignalR client the tests drive, each with a scenario script per test file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PythonClient {
    /// `signalrcore` (threads).
    Signalrcore,
    /// `pysignalr` (asyncio).
    Pysignalr,
}

impl PythonClient {
    /// Its chat hub scenario (`hub_python_client.rs`).
    pub fn chat_script(self) -> &'static str {
        match self {
            PythonClient::Signalrcore => "chat_scenario.py",
            PythonClient::Pysignalr => "pysignalr_scenario.py",
        }
    }

    /// Its streams and client results scenario (`hub_python_streams.rs`).
    pub fn streams_script(self) -> &'static str {
        match self {
            PythonClient::Signalrcore => "signalrcore_streams.py",
            PythonClient::Pysignalr => "pysignalr_streams.py",
        }
    }
}

/// The keep-alive interval of servers that Python clients use, shorter than the default
/// 15 s because signalrcore's `stop()` closes its socket while its receive thread is
/// blocked reading it: on Linux that read returns, and the socket is really closed (the
/// server sees the disconnect), only when the next frame arrives from the server, at
/// worst a keep-alive Ping later. Pings every half second keep the tests short.
pub const PYTHON_KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(500);
