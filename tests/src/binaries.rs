//! Executables of other workspace packages (`hub-server`, `chat-client`, `hub-load`), for
//! tests that run them as processes.
//!
//! They belong to other packages of the workspace, so Cargo gives the tests no
//! `CARGO_BIN_EXE_*` for them, and `cargo test -p tests` alone would not even build them.
//! [`workspace_binaries`] therefore runs `cargo build -p <package>... --bins
//! --message-format=json` (with the profile the calling test binary was built with) and
//! takes the executable paths from Cargo's own report. Nothing is guessed from directory
//! layouts, it works with any `CARGO_TARGET_DIR` or `--target`, and when the binaries are
//! already up to date (as under `cargo test --workspace`) it costs a no-op build. Cargo
//! releases its build lock before running tests, so the nested build does not wait on the
//! outer one. Call it once per test binary (keep the result in a `OnceLock`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Builds the binaries of `packages` with the profile of the running test executable
/// and returns every executable Cargo reported, by name.
///
/// # Panics
///
/// When the build fails (with Cargo's output), or when one of `expected` was not
/// reported.
pub fn workspace_binaries(packages: &[&str], expected: &[&str]) -> HashMap<String, PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.arg("build").arg("--manifest-path").arg(&manifest);
    for package in packages {
        command.args(["-p", package]);
    }
    command
        .arg("--bins")
        .args(["--message-format", "json-render-diagnostics"]);
    // Test executables live in `<profile dir>/deps/`: build the binaries in that profile.
    let exe = std::env::current_exe().expect("test executable path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .unwrap_or("debug");
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command.output().expect("running cargo build");
    assert!(
        output.status.success(),
        "cargo build -p {} failed:\n{}",
        packages.join(" -p "),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut binaries = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            binaries.insert(name.to_owned(), PathBuf::from(executable));
        }
    }
    for name in expected {
        assert!(
            binaries.contains_key(*name),
            "cargo did not report the {name} executable"
        );
    }
    binaries
}
