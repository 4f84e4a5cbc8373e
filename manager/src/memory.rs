//! Giving freed memory back to the system at once after a big change (a
//! large batch logged, or taken by sled). The `aam-manager` binary's
//! allocator says how (`on_give_back`); the library, which does not know
//! the allocator (the `aam` CLI links it with glibc's), says when.

use std::sync::OnceLock;

/// A change whose log frames took at least this many bytes is big: what
/// encoding and storing it allocated is freed together, and is worth
/// giving back before the next answer rather than after the allocator's
/// delay (about 50,000 jobs of a batch).
pub const BIG_CHANGE_BYTES: u64 = 16 << 20;

static GIVE_BACK: OnceLock<fn()> = OnceLock::new();

/// Sets how freed memory is given back (once; later calls are ignored).
pub fn on_give_back(give_back: fn()) {
    let _ = GIVE_BACK.set(give_back);
}

/// Gives freed memory back now, if the allocator can be told to.
pub fn give_back() {
    if let Some(give_back) = GIVE_BACK.get() {
        give_back();
    }
}
