//! The worker's scratch directory: one per process under the temporary
//! directory, for jobs' input files (`inputs.rs`) and permission relays'
//! sockets (`permission_relay.rs`). Its name is unpredictable and its mode
//! 0700, so no other user can read what is in it or plant a file or link.
//! A worker removes its own at a clean exit; one killed (SIGKILL, a crash)
//! cannot, so every worker, when it makes its own, removes those of this
//! user whose worker is gone: each holds a lock on its `lock` file for as
//! long as its process lives, and the kernel lets go of it however the
//! process ends (in whatever pid namespace it ran). The file names the
//! machine and the boot it was made in: a temporary directory shared
//! between machines (where a lock may hold on one machine only) is swept
//! only of this machine's, and one from an earlier boot is gone. The lock
//! is close-on-exec and made after the worker's watchdog is forked, so no
//! other process keeps it; where the file system refuses locks the
//! directory is kept unlocked and never swept.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};

/// What every scratch directory's name starts with.
const PREFIX: &str = "aam-worker-";

/// The file whose lock says that the directory's worker still runs.
const LOCK: &str = "lock";

/// This process's scratch directory, with the lock that keeps it (none
/// where the file system refuses locks).
struct Scratch {
    dir: PathBuf,
    _lock: Option<File>,
}

static SCRATCH: OnceLock<Scratch> = OnceLock::new();

/// This process's scratch directory, made the first time it is asked for
/// (the gone workers' swept before, once), with the files `init` writes
/// in it. `inputs::scratch_dir` is the one caller, so `init` always runs.
pub(crate) fn dir(init: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<&'static Path> {
    if let Some(scratch) = SCRATCH.get() {
        return Ok(&scratch.dir);
    }
    let temp = std::env::temp_dir();
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let swept = sweep(&temp);
        if swept > 0 {
            tracing::info!(swept, "removed the scratch directories of gone workers");
        }
    });
    let made = tempfile::Builder::new()
        .prefix(PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&temp)?;
    let lock = match hold_lock(made.path()) {
        Ok(lock) => Some(lock),
        Err(e) => {
            let dir = made.path().display();
            tracing::warn!(
                "scratch directory {dir} not locked ({e}): if this worker is killed, it stays"
            );
            None
        }
    };
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
/// runs. The file, which names this machine and boot, is made under
/// another name and renamed once locked, so a sweep never finds an
/// unlocked `lock` in a live worker's directory.
fn hold_lock(dir: &Path) -> io::Result<File> {
    let making = dir.join("lock.new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&making)?;
    // SAFETY: flock on an fd this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    file.write_all(this_boot().as_bytes())?;
    std::fs::rename(&making, dir.join(LOCK))?;
    Ok(file)
}

/// This machine and this boot of it: its host name and the kernel's boot
/// id (empty if either cannot be read: then nothing is swept).
fn this_boot() -> String {
    let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string());
    match (
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id"),
    ) {
        (Ok(host), Ok(boot)) if !host.is_empty() && !boot.is_empty() => format!("{host} {boot}\n"),
        _ => String::new(),
    }
}

/// Removes the scratch directories under `temp` that belong to this user
/// and whose worker is gone (see `is_abandoned`). A directory without a
/// lock file (an older aam's) is left alone. How many it removed.
pub(crate) fn sweep(temp: &Path) -> usize {
    let here = this_boot();
    if here.is_empty() {
        return 0;
    }
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
        if ours && is_abandoned(&dir, &here) && std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether a scratch directory's worker is gone: its lock file was made on
/// this machine (`here`: host and boot), and in an earlier boot or nobody
/// holds its lock now. Another machine's is never judged.
fn is_abandoned(dir: &Path, here: &str) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(LOCK))
    else {
        return false;
    };
    let mut made_in = String::new();
    if (&file).take(4096).read_to_string(&mut made_in).is_err() {
        return false;
    }
    let host = |boot: &str| boot.split_whitespace().next().map(str::to_string);
    if host(&made_in) != host(here) {
        return false;
    }
    if made_in != here {
        return true;
    }
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
        // Made on another machine sharing the directory: its lock may hold
        // there only, so it is not this machine's to judge.
        let here = this_boot();
        let (host, boot) = here.trim().split_once(' ').unwrap();
        let remote = make("aam-worker-remote");
        std::fs::write(remote.join(LOCK), format!("another-{host} {boot}\n")).unwrap();
        // Made on this machine before it last booted: gone, lock or not.
        let rebooted = make("aam-worker-reboot");
        let earlier = format!("{host} 00000000-0000-0000-0000-000000000000\n");
        std::fs::write(rebooted.join(LOCK), earlier).unwrap();

        assert_eq!(sweep(temp.path()), 2);
        assert!(!gone.exists(), "the gone worker's directory stayed");
        assert!(!rebooted.exists(), "an earlier boot's directory stayed");
        assert!(remote.exists(), "another machine's was removed");
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
