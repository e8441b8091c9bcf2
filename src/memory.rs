//! A bound on the memory one piece of work may take on its thread.
//!
//! Rendering a template is the one place where a small input can ask for
//! unbounded memory without producing output: `{% set_global s = s ~ s %}`
//! in a loop of 40 doubles a string to terabytes, and Tera gives no hook
//! to stop it (its output is bounded by `templates::limits`, its
//! variables are not). So herd's global allocator counts what each thread
//! allocates and frees, and within [`bounded`] a thread that holds more
//! than its budget ends the process with a message naming the work,
//! instead of taking the machine's memory until the kernel kills
//! something. Outside `bounded` nothing is checked; the cost is one
//! thread-local addition per allocation.
//!
//! Written here rather than taken from a crate: the crates that cap an
//! allocator (cap, stats_alloc...) cap the whole process, and herd's
//! legitimate work (layers, gen at scale) must stay unbounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// herd's global allocator: the system's, with per-thread accounting.
pub struct Counting;

thread_local! {
    /// Bytes this thread allocated minus those it freed (frees of memory
    /// another thread allocated make it drift low, never high).
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// The most `HELD` may reach in the `bounded` scope this thread is in
    /// (no limit outside one): the one value every allocation reads.
    static CEILING: Cell<isize> = const { Cell::new(isize::MAX) };
    /// What that scope is, for the message only (copied here, so the
    /// message needs no allocation).
    static BUDGET: Cell<Budget> = const {
        Cell::new(Budget {
            allowed: 0,
            what: [0; 160],
            what_length: 0,
        })
    };
}

#[derive(Clone, Copy)]
struct Budget {
    /// What the scope allows above where it started.
    allowed: usize,
    what: [u8; 160],
    what_length: usize,
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

impl Counting {
    fn account(grow: isize) {
        // During thread teardown the thread-locals may be gone: count
        // nothing then rather than fail the allocation.
        let held = HELD
            .try_with(|held| {
                let now = held.get() + grow;
                held.set(now);
                now
            })
            .unwrap_or(0);
        if grow > 0
            && CEILING
                .try_with(Cell::get)
                .is_ok_and(|ceiling| held > ceiling)
        {
            over_budget(&BUDGET.with(Cell::get));
        }
    }
}

/// Says why the process ends, without allocating, and ends it.
fn over_budget(budget: &Budget) -> ! {
    let mut message = [0u8; 384];
    let mut length = 0;
    for part in [
        "herd: ".as_bytes(),
        &budget.what[..budget.what_length],
        b" needed more than ",
        mebibytes(budget.allowed, &mut [0u8; 20]),
        b" MiB of memory: a template or value that grows without bound \
          (a string doubled in a loop?)\n",
    ] {
        let take = part.len().min(message.len() - length);
        message[length..length + take].copy_from_slice(&part[..take]);
        length += take;
    }
    // SAFETY: writes a buffer we own to standard error, then exits: no
    // destructor or allocation runs on the way out.
    unsafe {
        libc::write(2, message.as_ptr().cast(), length);
        libc::_exit(2);
    }
}

/// `bytes` in MiB as decimal digits, written into `buffer`.
fn mebibytes(bytes: usize, buffer: &mut [u8; 20]) -> &[u8] {
    let mut value = bytes >> 20;
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &buffer[start..]
}

// SAFETY: every call is passed on to `System` unchanged; the accounting
// only reads and writes this thread's counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::account(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::account(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Counting::account(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::account(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `work` on this thread with at most `limit` more bytes held than
/// when it started; past that the process ends with exit status 2 and a
/// message naming `what` (its first 160 bytes). Scopes nest: the inner
/// budget applies inside.
pub fn bounded<T>(limit: usize, what: &str, work: impl FnOnce() -> T) -> T {
    let mut budget = Budget {
        allowed: limit,
        what: [0; 160],
        what_length: what.len().min(160),
    };
    budget.what[..budget.what_length].copy_from_slice(&what.as_bytes()[..budget.what_length]);
    let ceiling = HELD.with(Cell::get).saturating_add(limit as isize);
    let outer = (
        CEILING.with(|current| current.replace(ceiling)),
        BUDGET.with(|current| current.replace(budget)),
    );
    // Restored however `work` ends.
    struct Restore((isize, Budget));
    impl Drop for Restore {
        fn drop(&mut self) {
            let (ceiling, budget) = self.0;
            let _ = CEILING.try_with(|current| current.set(ceiling));
            let _ = BUDGET.try_with(|current| current.set(budget));
        }
    }
    let _restore = Restore(outer);
    work()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_within_the_budget_and_outside_a_scope_is_not_limited() {
        let kept = bounded(8 << 20, "a test", || vec![1u8; 4 << 20]);
        assert_eq!(kept.len(), 4 << 20);
        // Freed memory is given back to the budget.
        bounded(8 << 20, "a test", || {
            for _ in 0..16 {
                drop(vec![1u8; 4 << 20]);
            }
        });
        let big = vec![0u8; 64 << 20];
        assert_eq!(big.len(), 64 << 20);
    }

    #[test]
    fn mebibytes_are_written_in_decimal() {
        assert_eq!(mebibytes(512 << 20, &mut [0; 20]), b"512");
        assert_eq!(mebibytes(0, &mut [0; 20]), b"0");
    }
}
