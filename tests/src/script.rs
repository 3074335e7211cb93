//! Client scenarios written as scripts: the official JavaScript client under Node
//! (`tests/js`), signalrcore and pysignalr under the virtual environment's Python
//! (`tests/python`). Each script prints its result as one JSON document; a test either
//! runs it to completion ([`json_result`]) or talks to it line by line while it runs.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::{ensure_js_packages, ensure_python_clients, js_dir, python_dir, venv_python};

/// `node {script}` in [`js_dir`], its input closed, killed when dropped; the npm packages
/// installed first if they are missing.
pub async fn node_script(script: &str) -> Command {
    ensure_js_packages().await;
    script_command("node", script, js_dir())
}

/// `{venv}/python {script}` in [`python_dir`], its input closed, killed when dropped; the
/// virtual environment made first if it is missing.
pub async fn python_script(script: &str) -> Command {
    ensure_python_clients().await;
    script_command(venv_python(), script, python_dir())
}

/// `program script` in `dir`, its input closed, killed when dropped.
fn script_command(
    program: impl AsRef<std::ffi::OsStr>,
    script: &str,
    dir: std::path::PathBuf,
) -> Command {
    let mut command = Command::new(program);
    command
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// What a script that ran to completion printed.
#[derive(Debug)]
pub struct ScriptOutput {
    /// Its standard output, parsed as JSON.
    pub result: Value,
    /// Its standard error (logs, warnings), for failure messages.
    pub stderr: String,
}

/// Run `command` to completion and parse what it printed on standard output as JSON.
///
/// # Panics
///
/// Names `what` and shows both outputs when the program cannot run, takes longer than
/// `timeout`, fails, or prints something that is not JSON.
pub async fn json_result(command: &mut Command, what: &str, timeout: Duration) -> ScriptOutput {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in {timeout:?}"))
        .unwrap_or_else(|error| panic!("{what}: cannot run {program}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
        output.status
    );
    let result = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("{what}: the output is not JSON ({error}):\n{stdout}\nstderr:\n{stderr}")
    });
    ScriptOutput { result, stderr }
}
