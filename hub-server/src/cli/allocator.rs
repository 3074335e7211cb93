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
//! The library leaves the allocator to the application; this is the binary's choice.

use std::time::Duration;

/// mimalloc for the whole binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the collector runs: the purge delay, so a page is returned at most about two
/// delays after it was freed.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// The one place this workspace allows unsafe code (the workspace lint is `deny`, every
/// library crate `forbid`s it): a call into the allocator the binary links.
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
