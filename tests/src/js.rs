//! The pinned npm packages of `tests/js` (the official SignalR client, playwright-core),
//! installed on first use so `cargo test` works on a clean clone with Node and npm.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::OnceCell;

/// How long `npm ci` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// `tests/js`: the scripts the tests run with Node, and their `package-lock.json`.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs `npm ci` in [`js_dir`] once per test binary when a dependency of its
/// `package.json` is not installed.
///
/// # Panics
///
/// When npm cannot run or the install fails, with npm's output.
pub async fn ensure_js_packages() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let dir = js_dir();
            if missing_dependencies(&dir).is_empty() {
                return;
            }
            let output = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(INSTALL_TIMEOUT, output)
                .await
                .expect("npm ci finishes in time")
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot run npm (Node.js 18+ and npm are needed for these tests): {error}"
                    )
                });
            assert!(
                output.status.success(),
                "npm ci in {} failed ({}):\n{}{}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        })
        .await;
}

/// The dependencies named in `dir/package.json` that `dir/node_modules` lacks.
fn missing_dependencies(dir: &Path) -> Vec<String> {
    let manifest =
        std::fs::read_to_string(dir.join("package.json")).expect("tests/js/package.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest).expect("package.json is JSON");
    manifest["dependencies"]
        .as_object()
        .map(|dependencies| {
            dependencies
                .keys()
                .filter(|name| {
                    !dir.join("node_modules")
                        .join(name)
                        .join("package.json")
                        .exists()
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}
