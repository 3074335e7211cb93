//! Removing the test database container once the test binary has exited.
//!
//! The container lives in a static, and statics are never dropped, so testcontainers
//! never removes it; this testcontainers version has no reaper container (Ryuk), and
//! its `watchdog` feature reacts only to signals. An `atexit` hook would need `unsafe`
//! (forbidden in this workspace) and runs neither when the binary aborts nor when it is
//! killed.
//!
//! So a watcher process does it: a `sh` whose standard input is a pipe whose only writer
//! this process holds until it ends. However this process ends (tests passed, failed,
//! panicked with `panic = "abort"`, or killed), the kernel closes that pipe; the watcher
//! reads end-of-file and runs the command (`docker rm -f -v` on the containers labelled
//! as this process's). The watcher is in a
//! process group of its own, so a Ctrl-C sent to the test run's group does not stop it
//! before it has cleaned up. Removal therefore happens just *after* the binary exits
//! (typically within a second), not before: scripts that check for leftovers must wait
//! for it (tests/containers/run.sh does).

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// The write ends of the watchers' pipes: never written, never closed while this process
/// runs. Holding them is what keeps the watchers waiting.
static WATCHED: Mutex<Vec<ChildStdin>> = Mutex::new(Vec::new());

/// Remove every container labelled `label` (`key=value`), and their anonymous volumes
/// (such as the official image's data volume), when this process exits. Registered
/// before the container is asked for, so that a container still starting when this
/// process dies is removed too; the label names this process alone.
///
/// # Errors
///
/// When the watcher process cannot be started (no `sh`).
pub(crate) fn remove_labelled_at_exit(label: &str) -> io::Result<()> {
    const REMOVE: &str =
        r#"ids=$(docker ps -aq --filter "label=$1"); [ -z "$ids" ] || docker rm -f -v $ids"#;
    run_at_exit("sh", &["-c", REMOVE, "sh", label])
}

/// Run `program` with `args` once this process has exited, however it exits. Output is
/// discarded: the watcher must not hold the test run's stdout or stderr open (a caller
/// that reads them to the end would wait for the watcher too).
///
/// # Errors
///
/// When the watcher process cannot be started (no `sh`).
pub(crate) fn run_at_exit(program: &str, args: &[&str]) -> io::Result<()> {
    // `read` returns at end-of-file (or if a line ever arrived, which none does).
    let mut watcher = Command::new("sh")
        .args(["-c", r#"read -r _; exec "$@""#, "sh", program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pipe = watcher.stdin.take().expect("stdin was piped");
    WATCHED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(pipe);
    // Dropping `watcher` neither waits for nor stops it; once this process exits it is
    // re-parented and reaped by init.
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::run_at_exit;

    /// Set in the child run of this test binary: where its exit hook writes.
    const MARKER_VAR: &str = "TESTS_REAPER_MARKER";

    /// Not a test on its own: the body of the child process that
    /// [`runs_after_the_process_exits`] starts. It registers a hook, then ends the
    /// process the way the test asks.
    #[test]
    #[ignore = "run by runs_after_the_process_exits in a child process"]
    fn child_registers_a_hook() {
        let marker = std::env::var(MARKER_VAR).expect("run by runs_after_the_process_exits");
        run_at_exit("touch", &[&marker]).expect("watcher starts");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !PathBuf::from(&marker).exists(),
            "the hook ran before the process exited"
        );
        if std::env::var_os("TESTS_REAPER_ABORT").is_some() {
            std::process::abort();
        }
    }

    /// The hook runs after the process exits, whether it exits normally or aborts, and
    /// not before (the child checks that).
    #[test]
    fn runs_after_the_process_exits() {
        for abort in [false, true] {
            let dir = std::env::temp_dir().join(format!("tests-reaper-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let marker = dir.join(if abort { "aborted" } else { "exited" });
            let _ = std::fs::remove_file(&marker);
            let mut child = Command::new(std::env::current_exe().unwrap());
            child
                .args([
                    "--exact",
                    "reaper::tests::child_registers_a_hook",
                    "--ignored",
                ])
                .env(MARKER_VAR, &marker);
            if abort {
                child.env("TESTS_REAPER_ABORT", "1");
            }
            let status = child.output().expect("child runs").status;
            assert_eq!(status.success(), !abort, "child status: {status}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !marker.exists() {
                assert!(
                    Instant::now() < deadline,
                    "no hook ran within 10 s of the child's exit (abort: {abort})"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
