//! How much of the server's memory its data holds, and how much the allocator holds around it:
//! a diagnostic, built only with the `heap-stats` feature (`benches/heap-split.sh`).
//!
//! ```text
//!   RSS  =  live bytes (every allocation not yet freed)  +  what the allocator keeps around
//!           └ the roll, sled's cache, requests in flight ┘   └ partly used pages, freed pages
//!                                                              not yet given back ┘
//! ```
//!
//! A server that has been loading for a while holds more than one restarted on the same store:
//! its data has grown an allocation at a time, among short-lived ones, where a restart decodes
//! it into fresh, densely packed memory. This counter says which of the two terms the
//! difference is in. With the feature, [`Counting`] is the global allocator (mimalloc, with
//! every allocation's size added to one counter and every free's taken off), and
//! [`report`] logs the counter beside the RSS; without it, [`report`] does nothing and the
//! allocator is mimalloc alone, since one shared counter touched by every thread's every
//! allocation costs CPU on the hot paths.
//!
//! This module touches no data of the store: only the process's allocations and
//! `/proc/self/statm`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Bytes allocated and not yet freed, through [`Counting`]. Relaxed: a reading is a figure
/// for a log line, not a synchronisation point.
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// mimalloc, counting the bytes it has handed out and not had back.
pub struct Counting;

fn count(delta: isize) {
    LIVE.fetch_add(delta, Ordering::Relaxed);
}

/// A size as a signed count. No allocation is larger than `isize::MAX` (`Layout` refuses it).
fn signed(size: usize) -> isize {
    isize::try_from(size).expect("a Layout's size is at most isize::MAX")
}

// SAFETY: every method forwards to mimalloc's own with the same arguments, and only adds
// to a counter beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(signed(layout.size()));
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(signed(layout.size()));
        // SAFETY: as for `alloc`.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-signed(layout.size()));
        // SAFETY: `ptr` came from this allocator, that is from mimalloc, with `layout`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(signed(new_size) - signed(layout.size()));
        // SAFETY: as for `dealloc`, and `new_size` is the caller's, within `Layout`'s limits.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Whether this build counts (the `heap-stats` feature).
pub const COUNTING: bool = cfg!(feature = "heap-stats");

/// The process's resident set, from `/proc/self/statm` (its second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes an integer and returns one; _SC_PAGESIZE is always defined.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Logs the live bytes beside the RSS, with `when` saying what the server had just done;
/// nothing without the `heap-stats` feature.
pub fn report(when: &str) {
    if !COUNTING {
        return;
    }
    let live = LIVE.load(Ordering::Relaxed).max(0) as u64;
    let rss = resident_bytes().unwrap_or(0);
    tracing::info!(
        live_mib = live >> 20,
        rss_mib = rss >> 20,
        held_by_allocator_mib = rss.saturating_sub(live) >> 20,
        "heap {when}"
    );
}
