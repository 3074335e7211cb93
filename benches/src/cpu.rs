//! Where the CPU went during a scenario: each instance, this program, PostgreSQL, and
//! everything else on the machine (from `/proc`), so a report says what limited it and
//! whether something else was competing for the cores.

use std::collections::HashMap;

use serde::Serialize;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    /// Ticks used by instance A, if its process is known.
    a: Option<u64>,
    /// Ticks used by instance B, if its process is known.
    b: Option<u64>,
    /// Ticks used by this program.
    tool: u64,
    /// Ticks used by each `postgres` process on the machine, by process id (backends come
    /// and go; only what a process used between two snapshots counts).
    postgres: HashMap<u32, u64>,
    /// Ticks the whole machine spent busy and idle.
    machine_busy: u64,
    /// Ticks the whole machine spent idle.
    machine_idle: u64,
}

/// CPU seconds used between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuUsage {
    /// Instance A (the sender's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_s: Option<f64>,
    /// Instance B (the receivers').
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_s: Option<f64>,
    /// This program (the clients).
    pub hub_load_s: f64,
    /// Every PostgreSQL process.
    pub postgres_s: f64,
    /// Everything else on the machine; more than a few percent means the numbers are
    /// disturbed.
    pub other_s: f64,
    /// Share of the machine's cores that was busy, in percent.
    pub machine_busy_pct: f64,
}

impl CpuSnapshot {
    /// Read the counters now, for instances `a` and `b` (process ids, when known).
    pub fn take(a: Option<u32>, b: Option<u32>) -> CpuSnapshot {
        let (machine_busy, machine_idle) = machine_ticks().unwrap_or_default();
        CpuSnapshot {
            a: a.and_then(process_ticks),
            b: b.and_then(process_ticks),
            tool: process_ticks(std::process::id()).unwrap_or(0),
            postgres: postgres_ticks(),
            machine_busy,
            machine_idle,
        }
    }

    /// What was used from `self` until `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUsage {
        let seconds = |ticks: u64| (ticks as f64 / TICKS_PER_SECOND * 100.0).round() / 100.0;
        let delta = |before: u64, after: u64| after.saturating_sub(before);
        let a = self.a.zip(later.a).map(|(x, y)| delta(x, y));
        let b = self.b.zip(later.b).map(|(x, y)| delta(x, y));
        let tool = delta(self.tool, later.tool);
        // A backend that started in between counts from zero; one that ended in between
        // is missed (its last moments are usually idle).
        let postgres = later
            .postgres
            .iter()
            .map(|(pid, ticks)| delta(self.postgres.get(pid).copied().unwrap_or(0), *ticks))
            .sum();
        let busy = delta(self.machine_busy, later.machine_busy);
        let idle = delta(self.machine_idle, later.machine_idle);
        let known = a.unwrap_or(0) + b.unwrap_or(0) + tool + postgres;
        CpuUsage {
            a_s: a.map(seconds),
            b_s: b.map(seconds),
            hub_load_s: seconds(tool),
            postgres_s: seconds(postgres),
            other_s: seconds(busy.saturating_sub(known)),
            machine_busy_pct: if busy + idle == 0 {
                0.0
            } else {
                (busy as f64 * 1000.0 / (busy + idle) as f64).round() / 10.0
            },
        }
    }
}

/// User + system ticks of a process (fields 14 and 15 of `/proc/{pid}/stat`).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_ticks(&stat).map(|(_, ticks)| ticks)
}

/// The command name and user + system ticks in a `/proc/{pid}/stat` line.
fn stat_ticks(stat: &str) -> Option<(&str, u64)> {
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = &stat[open + 1..close];
    let mut fields = stat[close + 1..].split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// Ticks of every process named `postgres` (the server and its backends), by process id.
fn postgres_ticks() -> HashMap<u32, u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, ticks) = stat_ticks(&stat)?;
            (name == "postgres").then_some((pid, ticks))
        })
        .collect()
}

/// Busy and idle ticks of the whole machine (first line of `/proc/stat`).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    let busy: u64 = values.iter().take(8).sum::<u64>() - idle;
    Some((busy, idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_lines_and_this_process() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_ticks(line), Some(("my (odd) name", 300)));
        let before = CpuSnapshot::take(None, None);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let usage = before.until(&CpuSnapshot::take(None, None));
        assert!(usage.hub_load_s >= 0.0 && usage.machine_busy_pct <= 100.0);
        assert_eq!(usage.a_s, None);
    }
}
