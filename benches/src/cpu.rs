//! Where the CPU went during a scenario: each instance, this program, PostgreSQL, and
//! everything else on the machine (from `/proc`), so a report says what limited it and
//! whether something else was competing for the cores.
//!
//! PostgreSQL backends come and go (the baseline opens and closes its own connections).
//! A backend that exits between two snapshots can no longer be read, but its parent, the
//! postmaster, collects it: its whole CPU time is added to the postmaster's children's
//! times (`cutime`, `cstime`). So PostgreSQL's share counts every `postgres` process's own
//! and collected children's time, minus what the collected backends had already used at
//! the first snapshot.

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
    /// Ticks used by each `postgres` process on the machine, its own plus those of the
    /// children it collected, by process id.
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
            // Without collected children: the instances this program started are its
            // children, and are counted on their own.
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
        let postgres = postgres_delta(&self.postgres, &later.postgres);
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

/// PostgreSQL's ticks between two snapshots of its processes (own + collected children's
/// ticks, by process id).
///
/// A process present in both counts its difference; one that started in between counts
/// from zero (a backend that started and exited in between shows up in its parent's
/// collected time instead). One that exited in between was collected by the postmaster,
/// whose difference then includes that backend's whole life: what it had used at the
/// first snapshot is taken off again.
fn postgres_delta(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    let grown: u64 = after
        .iter()
        .map(|(pid, ticks)| ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    let collected_earlier: u64 = before
        .iter()
        .filter(|(pid, _)| !after.contains_key(pid))
        .map(|(_, ticks)| ticks)
        .sum();
    grown.saturating_sub(collected_earlier)
}

/// User + system ticks of a process (fields 14 and 15 of `/proc/{pid}/stat`).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_ticks(&stat).map(|ticks| ticks.own)
}

/// What a `/proc/{pid}/stat` line says about a process's CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatTicks<'a> {
    /// The command name.
    name: &'a str,
    /// User + system ticks of the process itself.
    own: u64,
    /// User + system ticks of the children it waited for.
    children: u64,
}

/// The command name, and the process's and its collected children's user + system ticks,
/// in a `/proc/{pid}/stat` line.
fn stat_ticks(stat: &str) -> Option<StatTicks<'_>> {
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = &stat[open + 1..close];
    // After the name: state is field 3, utime field 14, stime 15, cutime 16, cstime 17.
    let mut times = stat[close + 1..]
        .split_whitespace()
        .skip(11)
        .map(|field| field.parse::<u64>().ok());
    let mut next = || times.next().flatten();
    let (utime, stime, cutime, cstime) = (next()?, next()?, next()?, next()?);
    Some(StatTicks {
        name,
        own: utime + stime,
        children: cutime + cstime,
    })
}

/// Own and collected children's ticks of every process named `postgres` (the postmaster
/// and its backends), by process id.
fn postgres_ticks() -> HashMap<u32, u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ticks = stat_ticks(&stat)?;
            (ticks.name == "postgres").then_some((pid, ticks.own + ticks.children))
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
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0";
        assert_eq!(
            stat_ticks(line),
            Some(StatTicks {
                name: "my (odd) name",
                own: 300,
                children: 10
            })
        );
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

    #[test]
    fn backends_that_exit_between_snapshots_are_counted_once() {
        // Postmaster 1, backends 2 (runs throughout), 3 (exits), 4 (starts), and one that
        // starts and exits in between (5 ticks, seen only in the postmaster's children).
        let before = HashMap::from([(1, 100), (2, 40), (3, 30)]);
        // 3 used 20 more ticks, then exited: the postmaster collected all its 50, plus 5.
        let after = HashMap::from([(1, 100 + 50 + 5), (2, 45), (4, 7)]);
        assert_eq!(postgres_delta(&before, &after), 20 + 5 + 5 + 7);
    }
}
