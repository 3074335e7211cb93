//! Where the CPU went during a scenario: each instance, this program, PostgreSQL, and
//! everything else on the machine (from `/proc`), so a report says what limited it and
//! whether something else was competing for the cores.
//!
//! Every figure comes from the processes' own CPU times (`/proc/{pid}/stat`), the
//! machine's total too: the busy and idle counters of `/proc/stat` proved inconsistent
//! with them on this VM when the machine is mostly idle (S3 read 2% to 37% busy over
//! three runs of the same work, while the processes' times agreed within 10%).
//!
//! Processes come and go (the baseline's PostgreSQL backends, short-lived commands). One
//! that exits between two snapshots can no longer be read, but its parent collects it: its
//! whole CPU time is added to the parent's children's times (`cutime`, `cstime`). So each
//! process counts its own and its collected children's time, and what an exited process
//! had already used at the first snapshot is taken off again.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    /// When it was taken.
    at: Instant,
    /// Ticks used by instance A, if its process is known.
    a: Option<u64>,
    /// Ticks used by instance B, if its process is known.
    b: Option<u64>,
    /// Ticks used by this program.
    tool: u64,
    /// Every process's own ticks plus those of the children it collected, by process id,
    /// and whether it is a `postgres` process.
    processes: HashMap<u32, (u64, bool)>,
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
    /// This program (the clients, with the Rust driver).
    pub hub_load_s: f64,
    /// The Node process of the JavaScript driver (`--driver js`), as it measured
    /// itself: it runs and exits within the scenario, so `/proc` would only show it in
    /// this program's collected children and it would land in `other_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_driver_s: Option<f64>,
    /// Every PostgreSQL process.
    pub postgres_s: f64,
    /// Everything else on the machine; more than a few percent means the numbers are
    /// disturbed.
    pub other_s: f64,
    /// Share of the machine's cores that was busy (every process's CPU time over the
    /// elapsed time of all cores), in percent.
    pub machine_busy_pct: f64,
}

impl CpuSnapshot {
    /// Read the counters now, for instances `a` and `b` (process ids, when known).
    pub fn take(a: Option<u32>, b: Option<u32>) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            a: a.and_then(process_ticks),
            b: b.and_then(process_ticks),
            // Without collected children: the instances this program started are its
            // children, and are counted on their own.
            tool: process_ticks(std::process::id()).unwrap_or(0),
            processes: all_ticks(),
        }
    }

    /// What was used from `self` until `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUsage {
        let seconds = |ticks: u64| (ticks as f64 / TICKS_PER_SECOND * 100.0).round() / 100.0;
        let delta = |before: u64, after: u64| after.saturating_sub(before);
        let a = self.a.zip(later.a).map(|(x, y)| delta(x, y));
        let b = self.b.zip(later.b).map(|(x, y)| delta(x, y));
        let tool = delta(self.tool, later.tool);
        let only = |postgres: bool, snapshot: &CpuSnapshot| -> HashMap<u32, u64> {
            snapshot
                .processes
                .iter()
                .filter(|(_, (_, is_postgres))| !postgres || *is_postgres)
                .map(|(pid, (ticks, _))| (*pid, *ticks))
                .collect()
        };
        let postgres = lifetime_delta(&only(true, self), &only(true, later));
        let everything = lifetime_delta(&only(false, self), &only(false, later));
        let known = a.unwrap_or(0) + b.unwrap_or(0) + tool + postgres;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let capacity = later.at.duration_since(self.at).as_secs_f64() * cores as f64;
        CpuUsage {
            a_s: a.map(seconds),
            b_s: b.map(seconds),
            hub_load_s: seconds(tool),
            node_driver_s: None,
            postgres_s: seconds(postgres),
            other_s: seconds(everything.saturating_sub(known)),
            machine_busy_pct: if capacity > 0.0 {
                (everything as f64 / TICKS_PER_SECOND / capacity * 1000.0)
                    .round()
                    .min(1000.0)
                    / 10.0
            } else {
                0.0
            },
        }
    }
}

impl CpuUsage {
    /// Count `seconds` of what `other_s` holds as the Node driver's.
    pub fn with_node_driver(mut self, seconds: f64) -> Self {
        let seconds = (seconds * 100.0).round() / 100.0;
        self.node_driver_s = Some(seconds);
        self.other_s = ((self.other_s - seconds).max(0.0) * 100.0).round() / 100.0;
        self
    }
}

/// Ticks used between two snapshots by a set of processes (own + collected children's
/// ticks, by process id).
///
/// A process present in both counts its difference; one that started in between counts
/// from zero (one that started and exited in between shows up in its parent's collected
/// time instead). One that exited in between was collected by its parent, whose
/// difference then includes that process's whole life: what it had used at the first
/// snapshot is taken off again.
fn lifetime_delta(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
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

/// Own and collected children's ticks of every process on the machine, by process id,
/// and whether it is a `postgres` process (the postmaster and its backends).
fn all_ticks() -> HashMap<u32, (u64, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ticks = stat_ticks(&stat)?;
            Some((pid, (ticks.own + ticks.children, ticks.name == "postgres")))
        })
        .collect()
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
        // Burn at least 0.2 s of CPU in this process (bounded by wall time).
        let before = CpuSnapshot::take(None, None);
        let started = Instant::now();
        let mut x = 0u64;
        while process_ticks(std::process::id()).unwrap() < before.tool + 20
            && started.elapsed().as_secs() < 20
        {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let usage = before.until(&CpuSnapshot::take(None, None));
        assert!(usage.hub_load_s >= 0.2, "{usage:?}");
        // The machine's total comes from the same per-process times, so it includes
        // this program's.
        assert!(
            usage.machine_busy_pct > 0.0 && usage.machine_busy_pct <= 100.0,
            "{usage:?}"
        );
        assert_eq!(usage.a_s, None);
    }

    #[test]
    fn backends_that_exit_between_snapshots_are_counted_once() {
        // Postmaster 1, backends 2 (runs throughout), 3 (exits), 4 (starts), and one that
        // starts and exits in between (5 ticks, seen only in the postmaster's children).
        let before = HashMap::from([(1, 100), (2, 40), (3, 30)]);
        // 3 used 20 more ticks, then exited: the postmaster collected all its 50, plus 5.
        let after = HashMap::from([(1, 100 + 50 + 5), (2, 45), (4, 7)]);
        assert_eq!(lifetime_delta(&before, &after), 20 + 5 + 5 + 7);
    }
}
