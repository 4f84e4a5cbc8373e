//! The allocator of the `aam-manager` binary: mimalloc, whose options
//! `tune` sets at start. Under the dispatch load glibc's allocator was a
//! quarter of the manager's CPU (BENCHMARKS.md, issue 18). The `aam` CLI
//! keeps glibc's: mimalloc's arenas added 0.2 ms to each start of a
//! command (`aam --help` 2.3 ms against 2.1), which is most of what a CLI
//! call costs, so `aam run` and `aam up` (its embedded manager) keep it too.
//!
//! A module of `main.rs`, not of the library: the `aam` CLI links the
//! library, and a reference to mimalloc from it linked mimalloc in, whose
//! initialisation then ran at every start of a command.

pub use mimalloc::MiMalloc as Allocator;

/// mimalloc 3's `arena_eager_commit` and `purge_delay` (its option enum;
/// the sys crate names neither).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed goes back to the system at once (mimalloc's default keeps
/// it a second, ten for arenas) and arenas are committed as they are used,
/// so the resident size follows what is live. First thing in `main`.
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
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}
