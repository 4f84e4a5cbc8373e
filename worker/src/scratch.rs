//! The worker's scratch directory: one per process under the temporary
//! directory, for jobs' input files (`inputs.rs`) and permission relays'
//! sockets (`permission_relay.rs`). Its name is unpredictable and its mode
//! 0700, so no other user can read what is in it or plant a file or link.
//! A worker removes its own at a clean exit; one killed (SIGKILL, a crash)
//! cannot, so every worker, when it makes its own, removes those of this
//! user whose worker is gone: each holds a lock on its `lock` file for as
//! long as its process lives, and the kernel lets go of it however the
//! process ends (in whatever pid namespace it ran).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What every scratch directory's name starts with.
const PREFIX: &str = "aam-worker-";

/// The file whose lock says that the directory's worker still runs.
const LOCK: &str = "lock";

/// This process's scratch directory, with the lock that keeps it.
struct Scratch {
    dir: PathBuf,
    _lock: File,
}

static SCRATCH: OnceLock<Scratch> = OnceLock::new();

/// This process's scratch directory, made (and the gone workers' swept)
/// the first time it is asked for, with the files `init` writes in it.
pub fn dir(init: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<&'static Path> {
    if let Some(scratch) = SCRATCH.get() {
        return Ok(&scratch.dir);
    }
    let temp = std::env::temp_dir();
    let swept = sweep(&temp);
    if swept > 0 {
        tracing::info!(swept, "removed the scratch directories of gone workers");
    }
    let made = tempfile::Builder::new()
        .prefix(PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&temp)?;
    let lock = hold_lock(made.path())?;
    init(made.path())?;
    let dir = made.keep();
    // Only the worker actor's thread asks in a worker; a lost race (tests)
    // leaves one extra directory, removed here.
    if let Err(lost) = SCRATCH.set(Scratch { dir, _lock: lock }) {
        let _ = std::fs::remove_dir_all(&lost.dir);
    }
    Ok(&SCRATCH.get().expect("set above").dir)
}

/// Removes this process's scratch directory (at a clean exit).
pub fn remove() {
    if let Some(scratch) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(&scratch.dir);
    }
}

/// Takes the lock of a new scratch directory, for as long as the process
/// runs. The file is made under another name and renamed once locked, so
/// a sweep never finds an unlocked `lock` in a live worker's directory.
fn hold_lock(dir: &Path) -> io::Result<File> {
    let making = dir.join("lock.new");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&making)?;
    // SAFETY: flock on an fd this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::fs::rename(&making, dir.join(LOCK))?;
    Ok(file)
}

/// Removes the scratch directories under `temp` that belong to this user
/// and whose lock nobody holds: their worker is gone. A directory without
/// a lock file (made by an older aam) is left alone. How many it removed.
pub fn sweep(temp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(PREFIX.as_bytes())
        {
            continue;
        }
        let dir = entry.path();
        // Not followed: a link named like a scratch directory is not one.
        let ours = dir
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && is_abandoned(&dir) && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether a scratch directory's lock file is there and nobody holds it.
fn is_abandoned(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(LOCK))
    else {
        return false;
    };
    // SAFETY: flock on an fd this function owns; the lock, if taken, goes
    // with the file when it is dropped.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_whose_worker_is_gone_is_swept_and_the_others_are_kept() {
        let temp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = temp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("inputs.json"), "[]\n").unwrap();
            dir
        };
        // Its worker gone: the lock file is there, nobody holds it.
        let gone = make("aam-worker-gone01");
        drop(hold_lock(&gone).unwrap());
        // Its worker alive: the lock is held (another open file, so the
        // sweep's own attempt conflicts with it even in this process).
        let alive = make("aam-worker-alive1");
        let held = hold_lock(&alive).unwrap();
        // From an older aam, without a lock: nobody can tell, left alone.
        let old = make("aam-worker-old001");
        // Not a scratch directory.
        let other = make("something-else");
        drop(hold_lock(&other).unwrap());
        // A link named like one, to a gone worker's directory elsewhere.
        let elsewhere = tempfile::tempdir().unwrap();
        drop(hold_lock(elsewhere.path()).unwrap());
        std::os::unix::fs::symlink(elsewhere.path(), temp.path().join("aam-worker-link01"))
            .unwrap();

        assert_eq!(sweep(temp.path()), 1);
        assert!(!gone.exists(), "the gone worker's directory stayed");
        assert!(
            alive.join("inputs.json").exists(),
            "a live worker's was removed"
        );
        assert!(old.exists() && other.exists());
        assert!(elsewhere.path().join(LOCK).exists(), "a link was followed");

        // Once its worker is gone, the live one's goes at the next sweep.
        drop(held);
        assert_eq!(sweep(temp.path()), 1);
        assert!(!alive.exists());
    }
}
