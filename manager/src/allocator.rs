//! The allocator of the `aam-manager` binary: mimalloc, whose options
//! `tune` sets at start, and the thread that gives freed memory back to
//! the system (`start_purging`). Under the dispatch load glibc's allocator
//! was a quarter of the manager's CPU (BENCHMARKS.md, issue 18). The `aam`
//! CLI keeps glibc's: mimalloc's arenas added 0.2 ms to each start of a
//! command (`aam --help` 2.3 ms against 2.1), which is most of what a CLI
//! call costs, so `aam run` and `aam up` (its embedded manager) keep it too.
//!
//! A module of `main.rs`, not of the library: the `aam` CLI links the
//! library, and a reference to mimalloc from it linked mimalloc in, whose
//! initialisation then ran at every start of a command.

use std::time::Duration;

pub use mimalloc::MiMalloc as Allocator;

/// mimalloc 3's `arena_eager_commit` and `purge_delay` (its option enum;
/// the sys crate names neither).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed stays about this long before it goes back to the system
/// (an arena's clock starts at its first free range, and the purging
/// thread looks every `PURGE_TICK`: 100 to 200 ms). Given back at once
/// (0), the pages a dispatch loop frees and takes again were returned and
/// faulted in again, thousands of times a second: a sixth of the
/// manager's CPU per job (BENCHMARKS.md, fourteenth session).
const PURGE_DELAY_MS: libc::c_long = 100;

/// How often the purging thread asks mimalloc to give back what has
/// waited `PURGE_DELAY_MS`: mimalloc itself only does it when something
/// allocates, and a manager that just took a million jobs may allocate
/// nothing for a long time.
const PURGE_TICK: Duration = Duration::from_millis(100);

/// Arenas are committed as they are used, and memory freed goes back to
/// the system after about `PURGE_DELAY_MS` (mimalloc's default is a
/// second), so the resident size follows what is live. First thing in
/// `main`.
/// mimalloc's own variables (`MIMALLOC_PURGE_DELAY`, ...) still win.
pub fn tune() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: sets two of the allocator's options; called before any
    // other thread exists.
    unsafe {
        if unset("MIMALLOC_ARENA_EAGER_COMMIT") {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
        if unset("MIMALLOC_PURGE_DELAY") {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// Starts the thread that runs mimalloc's collection every `PURGE_TICK`:
/// an unforced one, which gives back only what has waited its delay (the
/// arenas' part of a collection is program wide), so the pages in use
/// keep being reused.
pub fn start_purging() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("aam-purge".into())
        .spawn(|| {
            // SAFETY: sets up this thread's heap: mimalloc skips the
            // collection of a thread that has none, arenas included, and a
            // thread gets one only at its first allocation, which this
            // thread may never make.
            unsafe { libmimalloc_sys::mi_thread_init() };
            loop {
                std::thread::sleep(PURGE_TICK);
                // SAFETY: collects this thread's (empty) heap and purges
                // the arenas' ranges whose delay has passed.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        })
        .map(drop)
}

/// Gives back at once every range freed so far, however long it waited
/// (`aam_manager::memory` calls it after a big change).
pub fn give_back() {
    // SAFETY: a forced collection of this thread's heap and of the arenas.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
