//! Which `hub-server` flags a run passes, and what the binary's own defaults are.
//!
//! `hub-load` measures what users run: the instances it starts get only what they need
//! to run (address, database, schema, instance name) unless a tuning flag is asked for,
//! and every line of the report says which flags were passed, so no figure can be
//! mistaken for the defaults. The defaults it reports are read from the binary's
//! `--help`, never written down here, so they cannot go stale when the binary changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// How long `hub-server --help` may take.
const HELP_TIMEOUT: Duration = Duration::from_secs(10);

/// The tuning flags passed to every instance a run starts, as given (`--flag=value`,
/// or `--flag` followed by its value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerFlags {
    /// The arguments, in the order given; empty when the binary's defaults are measured.
    args: Vec<String>,
}

impl ServerFlags {
    /// These arguments, passed as given.
    pub fn new(args: Vec<String>) -> Self {
        Self { args }
    }

    /// The arguments to pass.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Whether the instances run with the binary's defaults.
    pub fn are_defaults(&self) -> bool {
        self.args.is_empty()
    }

    /// What every report line says about the instances: `"defaults"`, or the list of
    /// flags passed.
    pub fn label(&self) -> Value {
        if self.are_defaults() {
            json!("defaults")
        } else {
            json!(self.args)
        }
    }

    /// Each flag given and its value: `--flag=value` and `--flag value` both count;
    /// a flag with no value reads `true`.
    pub fn overrides(&self) -> BTreeMap<String, String> {
        let mut overrides = BTreeMap::new();
        let mut args = self.args.iter().peekable();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name, value.to_owned()),
                None => match args.next_if(|next| !next.starts_with("--")) {
                    Some(value) => (flag, value.clone()),
                    None => (flag, "true".to_owned()),
                },
            };
            overrides.insert(name.to_owned(), value);
        }
        overrides
    }
}

/// The defaults the binary states for its flags, by flag name without `--`.
///
/// # Errors
///
/// A message when the binary cannot be run or its help states no default at all.
pub async fn binary_defaults(binary: &Path) -> Result<BTreeMap<String, String>, String> {
    let output = tokio::process::Command::new(binary)
        .arg("--help")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(HELP_TIMEOUT, output)
        .await
        .map_err(|_| format!("{} --help did not answer", binary.display()))?
        .map_err(|error| format!("cannot run {} --help: {error}", binary.display()))?;
    let defaults = help_defaults(&String::from_utf8_lossy(&output.stdout));
    if defaults.is_empty() {
        return Err(format!(
            "{} --help states no default for any flag ({})",
            binary.display(),
            output.status
        ));
    }
    Ok(defaults)
}

/// The settings of instances started with `flags`: the binary's defaults, with what
/// the flags set instead.
pub fn effective(
    defaults: &BTreeMap<String, String>,
    flags: &ServerFlags,
) -> BTreeMap<String, String> {
    let mut settings = defaults.clone();
    settings.extend(flags.overrides());
    settings
}

/// Every `[default: X]` of a clap help text, attached to the flag whose entry it ends.
fn help_defaults(help: &str) -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        // An entry starts with its flag: `--name <VALUE>` or `-n, --name <VALUE>`.
        if trimmed.starts_with('-') {
            current = trimmed
                .split_whitespace()
                .find_map(|word| word.trim_end_matches(',').strip_prefix("--"))
                .filter(|name| !name.is_empty());
        }
        if let (Some(flag), Some(start)) = (current, line.find("[default: ")) {
            let rest = &line[start + "[default: ".len()..];
            if let Some(end) = rest.find(']') {
                defaults.insert(flag.to_owned(), rest[..end].to_owned());
            }
        }
    }
    defaults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_defaults_from_short_and_long_help() {
        let long = "Options:
      --urls <URLS>
          Addresses to listen on

          [default: http://localhost:5000]

      --database-url <DATABASE_URL>
          PostgreSQL connection string

          [env: DATABASE_URL]

      --max-parallel-invocations <MAX_PARALLEL_INVOCATIONS>
          How many invocations of one client may run at once

          [default: 1]

  -h, --help
          Print help (see a summary with '-h')
";
        let defaults = help_defaults(long);
        assert_eq!(defaults["urls"], "http://localhost:5000");
        assert_eq!(defaults["max-parallel-invocations"], "1");
        assert!(!defaults.contains_key("database-url"));
        let short = "      --synchronous-commit <SYNCHRONOUS_COMMIT>  When messages reach \
                     other instances [default: notify-before-flush] [possible values: on, off]";
        assert_eq!(
            help_defaults(short)["synchronous-commit"],
            "notify-before-flush"
        );
    }

    #[test]
    fn labels_and_overrides() {
        let defaults = ServerFlags::default();
        assert_eq!(defaults.label(), json!("defaults"));
        let tuned = ServerFlags::new(vec![
            "--max-parallel-invocations=256".into(),
            "--synchronous-commit".into(),
            "off".into(),
            "--quiet".into(),
        ]);
        assert_eq!(
            tuned.label(),
            json!([
                "--max-parallel-invocations=256",
                "--synchronous-commit",
                "off",
                "--quiet"
            ])
        );
        let binary = BTreeMap::from([
            ("max-parallel-invocations".to_owned(), "1".to_owned()),
            ("urls".to_owned(), "x".to_owned()),
        ]);
        let settings = effective(&binary, &tuned);
        assert_eq!(settings["max-parallel-invocations"], "256");
        assert_eq!(settings["synchronous-commit"], "off");
        assert_eq!(settings["quiet"], "true");
        assert_eq!(settings["urls"], "x");
    }
}
