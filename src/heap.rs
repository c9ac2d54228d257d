//! The server's allocator: mimalloc, with the roll's long-lived data in a heap of its own, and
//! (with the `heap-stats` feature) a count of the live bytes for `benches/heap-split.sh`.
//!
//! ```text
//!   RSS  =  live bytes (every allocation not yet freed)  +  what the allocator keeps around
//!           └ the roll, sled's cache, requests in flight ┘   └ partly used pages, freed pages
//!                                                              not yet given back ┘
//!
//!   mimalloc's default heaps   requests, decoded commands, bodies, sled's nodes: freed soon
//!   the long-lived heap        what the writer allocates while it applies events to the roll
//!                              (households, timelines, index runs), and a start-up's replay
//! ```
//!
//! A page of mimalloc holds blocks of one size, and is given back only once all of them are
//! free. While the roll grew among the requests' short-lived allocations of the same sizes, its
//! few blocks kept many such pages from being given back: after 10M events with request_ids,
//! 262 MiB of RSS was the allocator's around 734 MiB live. With the roll's growth in pages of its
//! own ([`long_lived`]), the same load left 217 MiB (`benches/heap-split.sh`, README's
//! Performance section). A restart decodes the roll densely, so it needs no such care.
//!
//! [`Allocator`] is the global allocator of the `rollstore` binary and its benches. Without the
//! `heap-stats` feature it counts nothing, since one shared counter touched by every thread's
//! every allocation costs CPU on the hot paths; with it, [`report`] logs the live bytes beside
//! the RSS.
//!
//! This module touches no data of the store: only the process's allocations and
//! `/proc/self/statm`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::OnceLock;

use libmimalloc_sys as mi;

/// Bytes allocated and not yet freed, through [`Allocator`] with the `heap-stats` feature.
/// Relaxed: a reading is a figure for a log line, not a synchronisation point.
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The server's allocator: mimalloc, with what [`long_lived`] allocates in a heap of its own,
/// and (with the `heap-stats` feature) every allocation's size counted.
pub struct Allocator;

/// The heap for long-lived data, as an address (a raw pointer is not `Sync`). mimalloc's heaps
/// (version 3, `libmimalloc-sys`'s default) can be allocated from on any thread and freed from
/// any thread; version 2's belonged to the thread that made them, so its `v2` feature must stay
/// off.
static LONG_LIVED: OnceLock<usize> = OnceLock::new();

thread_local! {
    /// The heap this thread allocates from, if not mimalloc's default: set only inside
    /// [`long_lived`]. A constant initializer and no destructor, so that reading it inside the
    /// allocator never allocates.
    static HEAP: Cell<*mut mi::mi_heap_t> = const { Cell::new(std::ptr::null_mut()) };
}

/// Runs `f` with every allocation it makes on this thread in the heap of long-lived data.
pub fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: mi_heap_new takes nothing and returns a new heap (or null, which `HEAP` reads as
    // the default heap).
    let heap = *LONG_LIVED.get_or_init(|| unsafe { mi::mi_heap_new() } as usize);
    /// Puts back the heap that was in use, even if `f` unwinds.
    struct Restore(*mut mi::mi_heap_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            HEAP.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(HEAP.with(|h| h.replace(heap as *mut mi::mi_heap_t)));
    f()
}

fn count(delta: isize) {
    if COUNTING {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

/// A size as a signed count. No allocation is larger than `isize::MAX` (`Layout` refuses it).
fn signed(size: usize) -> isize {
    isize::try_from(size).expect("a Layout's size is at most isize::MAX")
}

fn heap() -> *mut mi::mi_heap_t {
    HEAP.with(Cell::get)
}

/// A new block for `layout`, zeroed or not, from this thread's heap of the moment.
///
/// # Safety
/// As for [`GlobalAlloc::alloc`]: `layout` has a non-zero size.
unsafe fn allocate(layout: Layout, zeroed: bool) -> *mut u8 {
    count(signed(layout.size()));
    let (size, align, heap) = (layout.size(), layout.align(), heap());
    // SAFETY: the caller's contract, passed on; `heap` is null or a live heap.
    unsafe {
        match (heap.is_null(), zeroed) {
            (true, false) => mi::mi_malloc_aligned(size, align),
            (true, true) => mi::mi_zalloc_aligned(size, align),
            (false, false) => mi::mi_heap_malloc_aligned(heap, size, align),
            (false, true) => mi::mi_heap_zalloc_aligned(heap, size, align),
        }
        .cast()
    }
}

// SAFETY: every method calls mimalloc's aligned functions with the caller's size and
// alignment, as `mimalloc::MiMalloc` does, on the thread's heap of the moment; mimalloc frees a
// block of any heap with `mi_free`.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { allocate(layout, false) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { allocate(layout, true) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-signed(layout.size()));
        // SAFETY: `ptr` came from this allocator, that is from one of mimalloc's heaps.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(signed(new_size) - signed(layout.size()));
        let heap = heap();
        // SAFETY: as for `dealloc`, and `new_size` is the caller's, within `Layout`'s limits.
        unsafe {
            if heap.is_null() {
                mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            } else {
                mi::mi_heap_realloc_aligned(heap, ptr.cast(), new_size, layout.align()).cast()
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        /// mimalloc's own (version 3), which `libmimalloc-sys` does not declare.
        fn mi_heap_contains(heap: *const mi::mi_heap_t, p: *const c_void) -> bool;
    }

    /// Whether `p` is a block of the long-lived heap.
    fn in_long_lived_heap(p: *mut u8) -> bool {
        let heap = LONG_LIVED.get().copied().unwrap_or(0) as *const mi::mi_heap_t;
        // SAFETY: `heap` is null or the live long-lived heap; `p` is only compared.
        !heap.is_null() && unsafe { mi_heap_contains(heap, p.cast()) }
    }

    /// Allocates (zeroed, the second time), grows and frees through [`Allocator`], and says
    /// where each block was.
    fn placed(size: usize, grown: usize) -> (bool, bool) {
        let first = placed_as(size, grown, false);
        assert_eq!(placed_as(size, grown, true), first, "{size}, zeroed");
        first
    }

    fn placed_as(size: usize, grown: usize, zeroed: bool) -> (bool, bool) {
        let layout = Layout::from_size_align(size, 8).expect("a small layout");
        // SAFETY: a non-zero size; the block is freed below with its layout.
        unsafe {
            let p = if zeroed {
                Allocator.alloc_zeroed(layout)
            } else {
                Allocator.alloc(layout)
            };
            assert!(!p.is_null());
            if zeroed {
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
            }
            let first = in_long_lived_heap(p);
            let q = Allocator.realloc(p, layout, grown);
            assert!(!q.is_null());
            let then = in_long_lived_heap(q);
            Allocator.dealloc(
                q,
                Layout::from_size_align(grown, 8).expect("a small layout"),
            );
            (first, then)
        }
    }

    #[test]
    fn what_long_lived_allocates_is_in_its_own_heap_and_nothing_else_is() {
        // (size, grown to): small, medium and large blocks, grown past their size class.
        for (size, grown) in [
            (16, 48),
            (1_000, 9_000),
            (70_000, 700_000),
            (3 << 20, 9 << 20),
        ] {
            assert_eq!(long_lived(|| placed(size, grown)), (true, true), "{size}");
            assert_eq!(placed(size, grown), (false, false), "{size}, after");
            // Nested, and on another thread, which does not share this thread's setting.
            let nested = long_lived(|| long_lived(|| placed(size, grown)));
            assert_eq!(nested, (true, true), "{size}, nested");
            let elsewhere = long_lived(|| std::thread::spawn(move || placed(size, grown)).join());
            assert_eq!(
                elsewhere.ok(),
                Some((false, false)),
                "{size}, another thread"
            );
        }
    }

    #[test]
    fn a_panic_inside_long_lived_puts_the_default_heap_back() {
        let caught = std::panic::catch_unwind(|| long_lived(|| panic!("a failed apply")));
        assert!(caught.is_err());
        assert_eq!(placed(64, 128), (false, false));
    }
}
