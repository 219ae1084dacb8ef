//! Counts, per thread, the allocations this test binary makes and the bytes they ask for
//! (`realloc` counts as an allocation of its new size): the deterministic measure of the
//! encoders' work that `encoding_work_grows_linearly_with_the_value` relies on.
//!
//! Installed as the global allocator of the library's unit-test binary only. A global
//! allocator is unsafe code by nature: this is the crate's one exception to its
//! `unsafe_code` lint, and it only forwards to the system allocator.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static COUNT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn record(bytes: usize) {
    // `try_with`: the allocator also serves threads that are being torn down.
    let _ = COUNT.try_with(|count| {
        let (calls, total) = count.get();
        count.set((calls + 1, total + bytes as u64));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting
// touches only a thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations made on this thread by `work`: (calls, bytes).
pub fn during(work: impl FnOnce()) -> (u64, u64) {
    let before = COUNT.with(Cell::get);
    work();
    let after = COUNT.with(Cell::get);
    (after.0 - before.0, after.1 - before.1)
}

#[test]
fn allocations_are_counted_on_this_thread_only() {
    let (calls, bytes) = during(|| {
        let mut buffer: Vec<u8> = Vec::with_capacity(1000);
        buffer.reserve_exact(3000);
        std::hint::black_box(&buffer);
    });
    assert_eq!((calls, bytes), (2, 4000));
    // Another thread's allocations are its own.
    let (_, bytes) = during(|| {
        std::thread::scope(|scope| {
            scope.spawn(|| std::hint::black_box(vec![0u8; 1 << 20]));
        });
    });
    assert!(bytes < 1 << 20, "{bytes} bytes counted here for a megabyte allocated by another thread");
}
