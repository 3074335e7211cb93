//! `hub-load --runs N`: every report line of every run is kept, and once all runs are
//! over one `"median"` line per scenario and driver gives the median of each figure
//! with the runs' values beside it, so the medians of three runs the targets ask for
//! come out of one command (ratios stay within each run: the median ratio is the
//! median of the runs' ratios, not a ratio of medians).

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::report::round3;

/// The figures a median line gives, as paths into a report line.
const FIGURES: [&str; 9] = [
    "deliveries_per_s",
    "messages_per_s",
    "ratio_to_baseline",
    "latency.p50_ms",
    "latency.p99_ms",
    "latency.max_ms",
    "latency_from_write.p99_ms",
    "kib_per_connection",
    "connect_s",
];

/// Counts that must be 0 in every run; a median line gives their largest value.
const COUNTS: [&str; 6] = [
    "lost",
    "duplicated",
    "out_of_order",
    "unexpected",
    "refused",
    "dropped",
];

/// Report lines of every run, grouped by scenario and driver in first-seen order.
#[derive(Debug, Default)]
pub struct Runs {
    groups: Vec<(String, Option<String>, Vec<Value>)>,
}

impl Runs {
    /// Keep `report` (a report line) of run `run` (from 1).
    pub fn keep(&mut self, run: usize, report: &impl Serialize) {
        let Ok(mut line) = serde_json::to_value(report) else {
            return;
        };
        if let Some(object) = line.as_object_mut() {
            object.insert("run".into(), json!(run));
        }
        let scenario = line["scenario"].as_str().unwrap_or_default().to_owned();
        let driver = line["driver"].as_str().map(str::to_owned);
        match self
            .groups
            .iter_mut()
            .find(|(s, d, _)| *s == scenario && *d == driver)
        {
            Some((_, _, lines)) => lines.push(line),
            None => self.groups.push((scenario, driver, vec![line])),
        }
    }

    /// One median line per scenario and driver.
    pub fn medians(&self) -> Vec<Value> {
        self.groups
            .iter()
            .map(|(scenario, driver, lines)| median_line(scenario, driver.as_deref(), lines))
            .collect()
    }
}

fn median_line(scenario: &str, driver: Option<&str>, lines: &[Value]) -> Value {
    let mut out = Map::new();
    out.insert("scenario".into(), json!(scenario));
    out.insert("median_of_runs".into(), json!(lines.len()));
    if let Some(driver) = driver {
        out.insert("driver".into(), json!(driver));
    }
    if let Some(flags) = lines.first().and_then(|line| line.get("server_flags")) {
        out.insert("server_flags".into(), flags.clone());
    }
    for path in FIGURES {
        let mut values: Vec<f64> = lines.iter().filter_map(|line| figure(line, path)).collect();
        if values.is_empty() {
            continue;
        }
        let runs = values.clone();
        out.insert(
            path.to_owned(),
            json!({ "median": median(&mut values), "runs": runs }),
        );
    }
    for count in COUNTS {
        let most = lines
            .iter()
            .filter_map(|line| line.get(count)?.as_u64())
            .max();
        if let Some(most) = most {
            out.insert(format!("{count}_most"), json!(most));
        }
    }
    Value::Object(out)
}

/// The number at `path` (`a.b`) of `line`.
fn figure(line: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(line, |value, key| value.get(key))?
        .as_f64()
}

/// The median (the mean of the middle two for an even count), rounded to 3 decimals.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let middle = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    round3(middle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn medians_per_scenario_and_driver() {
        let mut runs = Runs::default();
        for (run, rate, p99, lost) in [(1, 10.0, 5.0, 0), (2, 30.0, 1.0, 2), (3, 20.0, 3.0, 0)] {
            runs.keep(
                run,
                &json!({"scenario": "S1", "driver": "rust", "deliveries_per_s": rate,
                        "latency": {"p50_ms": 1.0, "p99_ms": p99, "max_ms": 9.0}, "lost": lost}),
            );
            runs.keep(
                run,
                &json!({"scenario": "S1", "driver": "js", "deliveries_per_s": rate * 2.0}),
            );
        }
        let lines = runs.medians();
        assert_eq!(lines.len(), 2);
        let rust = &lines[0];
        assert_eq!(rust["driver"], "rust");
        assert_eq!(rust["median_of_runs"], 3);
        assert_eq!(rust["deliveries_per_s"]["median"], 20.0);
        assert_eq!(rust["deliveries_per_s"]["runs"], json!([10.0, 30.0, 20.0]));
        assert_eq!(rust["latency.p99_ms"]["median"], 3.0);
        assert_eq!(rust["lost_most"], 2);
        assert_eq!(lines[1]["deliveries_per_s"]["median"], 40.0);
        assert!(lines[1].get("latency.p99_ms").is_none());
    }
}
