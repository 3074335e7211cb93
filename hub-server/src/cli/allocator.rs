//! The binary's allocator: mimalloc, asked once a second to return the memory it freed.
//!
//! mimalloc rather than the system allocator: after the burst of queued frames that
//! opening thousands of chat connections causes (every connect is announced to every
//! connection), glibc's malloc kept 15.9-34.4 KiB per idle connection resident (median
//! 18.8 over nine runs) and mimalloc 9.7-15.6 KiB (median 13.7 over eight), measured by
//! `hub-load --scenarios s4` (BENCHMARKS.md).
//!
//! What it still kept: mimalloc 3 returns a freed page to the operating system only
//! `purge_delay` (1 s) after the page became free, and only when some later allocation or
//! free on the way notices that the delay has passed. A server that falls idle after a
//! connect storm makes no such call, so the storm's frames stay resident for as long as
//! it stays idle. [`spawn_collector`] makes that call once a second (`mi_collect(false)`:
//! this thread's heap, then every purge whose delay has passed; it takes nothing still in
//! use and does not block other threads). Same-hour A/B of S4 on this machine
//! (2026-12-06, BENCHMARKS.md): without it 11.0, 12.1, 11.0 and 7.4 KiB per idle
//! connection (how much stays depends on how the storm queued), with it 7.1-8.0 in every
//! run, the connect storm as fast. Setting `MIMALLOC_PURGE_DELAY=0` instead gave 6.6-7.0
//! KiB but a slower storm (every free page returned at once, then asked back); collecting
//! on every worker thread as it parks (tokio's `on_thread_park`) measured no better than
//! this one task (8.0 and 7.6 KiB), so the simpler one stays; a thread of its own instead
//! of a task measured worse (8.1 and 8.2 KiB: it collects no worker's heap, only the
//! purges). A collection runs on a runtime worker; the burst and S3 p99 A/B of the same
//! evening showed no cost from it (BENCHMARKS.md, 2026-12-06 evening).
//!
//! Transparent huge pages are off for the process ([`disable_transparent_huge_pages`]):
//! mimalloc 3 advises its arenas `MADV_HUGEPAGE`, so on Linux (even with the kernel's THP
//! set to `madvise`) the first touch of a 2 MiB region zeroes all of it at once. Each
//! burst touches memory the collector above gave back, so a burst began with up to
//! ~120 ms of `clear_page_erms` under `do_huge_pmd_anonymous_page` in instance A
//! (`perf record -a -g` during `hub-load --scenarios burst`), stalling the publisher:
//! the first 100-300 ms of such a burst delivered 40-150 ms late. With 4 KiB pages only
//! what is touched is zeroed. Same-hour A/Bs (BENCHMARKS.md, 2026-12-07 day): S1 p99
//! 5.9-8.7 ms against 8.5-41.2 ms with huge pages (two rounds of three, the first run
//! after a start worst), S1's ratio and S2 a little higher, S3, the burst and S4 within
//! the noise on that host; on the machine where it was found, the burst's first-run
//! stall 43.8 / 5.2 ms against 83.7 / 91.5 ms. Redis recommends the same for the same
//! reason (latency of huge-page faults). An operator who wants huge pages sets `MIMALLOC_ALLOW_THP=1` (any
//! value: the choice is then mimalloc's, which reads that variable).
//!
//! The library leaves the allocator to the application; this is the binary's choice.

use std::time::Duration;

/// mimalloc for the whole binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the collector runs: the purge delay, so a page is returned at most about two
/// delays after it was freed.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// The one place this workspace allows unsafe code (the workspace lint is `deny`, every
/// library crate `forbid`s it): a call into the allocator the binary links, and the one
/// `prctl` that turns transparent huge pages off.
#[allow(unsafe_code)]
mod ffi {
    // The symbol is mimalloc's public C API (`mimalloc.h`: `void mi_collect(bool force)`),
    // linked by `libmimalloc-sys`, the `mimalloc` crate's dependency.
    unsafe extern "C" {
        fn mi_collect(force: bool);
    }

    /// Returns freed memory whose purge delay has passed; `force: false` leaves the rest.
    pub(super) fn collect() {
        // SAFETY: `mi_collect` takes no pointers and has no preconditions; mimalloc is
        // the global allocator, initialised before `main`, and the call is thread-safe.
        unsafe { mi_collect(false) }
    }

    #[cfg(target_os = "linux")]
    mod linux {
        use std::ffi::{c_int, c_ulong};

        // The C library's `prctl(2)` wrapper (`<sys/prctl.h>`), linked by std.
        unsafe extern "C" {
            fn prctl(option: c_int, ...) -> c_int;
        }

        /// `PR_SET_THP_DISABLE` from `<linux/prctl.h>`.
        const PR_SET_THP_DISABLE: c_int = 41;

        /// Transparent huge pages off for this process and its future children.
        pub(in super::super) fn disable_thp() -> std::io::Result<()> {
            let on: c_ulong = 1;
            let unused: c_ulong = 0;
            // SAFETY: `PR_SET_THP_DISABLE` takes four unsigned long arguments (the flag,
            // then three that must be zero) and no pointers; it only sets a flag of the
            // calling process.
            let result = unsafe { prctl(PR_SET_THP_DISABLE, on, unused, unused, unused) };
            if result == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    }
    #[cfg(target_os = "linux")]
    pub(super) use linux::disable_thp;
}

/// Transparent huge pages off for the process (Linux), unless `MIMALLOC_ALLOW_THP` is set,
/// which leaves the choice to mimalloc (see the module documentation). Call once, before
/// the runtime starts.
pub(crate) fn disable_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(error) = ffi::disable_thp() {
        tracing::warn!(%error, "could not turn transparent huge pages off; bursts may start slower");
    }
}

/// Starts the once-a-second collection on the current tokio runtime.
pub(crate) fn spawn_collector() {
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(COLLECT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            ffi::collect();
        }
    });
}
