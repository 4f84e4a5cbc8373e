//! A cgroup v2 per job, where the machine lets the worker make one: the
//! job's leader is moved into it before it runs its command, so every
//! descendant is in it too, whatever it does to its process group or its
//! environment, and stopping the job kills the whole cgroup.
//!
//! Layout: `OWN/aam-KEY/RUN-JOB`, where OWN is the worker's own cgroup (from
//! /proc/self/cgroup, on the cgroup2 mount found in /proc/self/mountinfo,
//! which also finds the `unified` mount of a hybrid v1/v2 host), KEY the
//! worker's name key and RUN-JOB the rest of the attempt's `AAM_RUN_ID`
//! (`orphans.rs`), so a cgroup is found from the run id alone and a
//! restarted worker finds the cgroups of its earlier run under `aam-KEY`.
//!
//! No controller is enabled anywhere: only `cgroup.procs`, `cgroup.events`
//! and `cgroup.kill` are used, and those work in any cgroup. The "no
//! internal processes" rule of cgroup v2 only forbids processes in a cgroup
//! that hands controllers to its children, so the worker can stay in its
//! own cgroup while its jobs live in child cgroups of it. Whether the
//! machine allows all this is not guessed from permissions: `detect` makes
//! a probe cgroup and moves a forked child into it, once per process.

use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The worker's own cgroup when job cgroups work here, else why not; set
/// once per process by `detect`.
static OWN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// How long a killed cgroup gets to empty before it is given up on.
const EMPTY_WAIT: Duration = Duration::from_secs(3);

/// Whether jobs get cgroups in this process: the worker's own cgroup, or
/// why not. Detected on the first call (a few small reads, a probe).
pub fn detect() -> Result<&'static Path, &'static str> {
    match OWN.get_or_init(find_own_cgroup) {
        Ok(own) => Ok(own),
        Err(why) => Err(why),
    }
}

/// The worker's own cgroup if job cgroups are in use (never probes).
fn own() -> Option<&'static Path> {
    OWN.get().and_then(|own| own.as_deref().ok())
}

fn find_own_cgroup() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let (mount, mount_root) =
        cgroup2_mount(&mountinfo).ok_or("no cgroup2 file system is mounted")?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = unified_path(&cgroups).ok_or("this process is in no cgroup v2 hierarchy")?;
    let own = own_dir(&mount, &mount_root, path)
        .filter(|dir| dir.join("cgroup.procs").is_file())
        .ok_or_else(|| format!("its cgroup {path} is not under {}", mount.display()))?;
    probe(&own)?;
    Ok(own)
}

/// The mount point and root of the first cgroup2 mount in a
/// /proc/self/mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = before.split_whitespace().skip(3);
        let root = unescape(fields.next()?);
        let mount = unescape(fields.next()?);
        Some((PathBuf::from(mount), root))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path in a /proc/self/cgroup text (its `0::PATH` line).
pub fn unified_path(cgroups: &str) -> Option<&str> {
    cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .filter(|path| path.starts_with('/'))
}

/// Where a cgroup path is on a cgroup2 mount whose root is `mount_root`
/// (not `/` in a container that mounts its part of the hierarchy), or None
/// when it is outside what that mount shows (or climbs with `..`).
pub fn own_dir(mount: &Path, mount_root: &str, path: &str) -> Option<PathBuf> {
    let rest = match mount_root {
        "/" => path,
        root => path.strip_prefix(root)?,
    };
    let rest = rest.trim_start_matches('/');
    if rest.split('/').any(|part| part == "..") {
        return None;
    }
    Some(if rest.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rest)
    })
}

/// Makes a cgroup under `own` and moves a forked child into it, the way a
/// job's leader will be moved: proof that this machine lets us.
fn probe(own: &Path) -> Result<(), String> {
    let dir = own.join(format!("aam-probe-{}", std::process::id()));
    let shown = dir.display().to_string();
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot make a cgroup in {}: {e}", own.display())),
    }
    let moved = open_procs(&dir).and_then(|procs| move_forked_child(&procs));
    // The child is gone (reaped): the probe cgroup is empty again.
    let removed = std::fs::remove_dir(&dir);
    moved.map_err(|e| format!("cannot move a process into {shown}: {e}"))?;
    removed.map_err(|e| format!("cannot remove {shown}: {e}"))
}

/// Forks a child that moves itself into the cgroup of `procs` and exits.
fn move_forked_child(procs: &OwnedFd) -> std::io::Result<()> {
    let fd = procs.as_raw_fd();
    // SAFETY: the child only calls write and _exit (async-signal-safe)
    // before it ends; the parent waits for that one child.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            let moved = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::_exit(if moved { 0 } else { 1 });
        }
        let mut status = 0;
        if libc::waitpid(pid, &mut status, 0) != pid {
            return Err(std::io::Error::last_os_error());
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        }
    }
}

fn open_procs(dir: &Path) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    Ok(OwnedFd::from(file))
}

/// The directory holding a worker's job cgroups: `OWN/aam-KEY`.
pub fn worker_dir(own: &Path, key: &str) -> PathBuf {
    own.join(format!("aam-{key}"))
}

/// A job's cgroup, from its `AAM_RUN_ID=KEY:RUN:JOB` marker:
/// `OWN/aam-KEY/RUN-JOB`; None for a marker of another form.
pub fn job_dir(own: &Path, marker: &str) -> Option<PathBuf> {
    let (key, run, job) = crate::orphans::parse_marker(marker)?;
    Some(worker_dir(own, key).join(format!("{run}-{job}")))
}

/// A job's cgroup, made, with its `cgroup.procs` open for the leader to
/// move itself in before it runs its command (`orphans::guard`).
pub struct JobCgroup {
    pub dir: PathBuf,
    pub procs: OwnedFd,
}

/// Makes the cgroup of the job with `marker`, if job cgroups are in use
/// (an existing one is reused: a worktree job's verify runs in its job's).
pub fn create(marker: &str) -> Result<Option<JobCgroup>, String> {
    let Some(dir) = own().and_then(|own| job_dir(own, marker)) else {
        return Ok(None);
    };
    let made = std::fs::DirBuilder::new().recursive(true).create(&dir);
    let procs = made.and_then(|()| open_procs(&dir));
    let procs =
        procs.map_err(|e| format!("cannot make the job's cgroup {}: {e}", dir.display()))?;
    Ok(Some(JobCgroup { dir, procs }))
}

/// The cgroup of the job with `marker`, if there is one.
fn existing(marker: &str) -> Option<PathBuf> {
    own().and_then(|own| job_dir(own, marker))
}

/// The processes in the cgroup of the job with `marker`.
pub fn members(marker: &str) -> Vec<u32> {
    existing(marker).map_or_else(Vec::new, |dir| pids_in(&dir))
}

fn pids_in(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether the job with `marker` has processes left in its cgroup.
pub fn populated(marker: &str) -> bool {
    existing(marker).is_some_and(|dir| is_populated(&dir))
}

fn is_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|text| text.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// SIGKILLs every process in the cgroup of the job with `marker`.
pub fn kill(marker: &str) {
    if let Some(dir) = existing(marker) {
        kill_dir(&dir);
    }
}

/// `cgroup.kill` (Linux 5.14), else SIGKILL to each process listed (a
/// process forking meanwhile is caught by the caller's next round).
fn kill_dir(dir: &Path) {
    let killed = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut file| file.write_all(b"1"));
    if killed.is_err() {
        for pid in pids_in(dir) {
            // SAFETY: kill only sends a signal; a pid that is gone fails with ESRCH.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Removes the cgroup of the job with `marker` if it is empty (a cgroup
/// with processes cannot be removed; it is left for a later stop).
pub fn remove(marker: &str) {
    if let Some(dir) = existing(marker) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::debug!(dir = %dir.display(), "job cgroup not removed: {e}"),
        }
    }
}

/// Kills and removes the job cgroups of a worker under `key` whose runs
/// `over` picks (others are never touched). Returns how many were removed
/// and how many processes they held.
pub fn clean_runs(key: &str, over: impl Fn(&str) -> bool) -> (usize, usize) {
    let Some(own) = own() else {
        return (0, 0);
    };
    let Ok(entries) = std::fs::read_dir(worker_dir(own, key)) else {
        return (0, 0);
    };
    let (mut removed, mut processes) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let Some((run, _)) = name.split_once('-') else {
            continue;
        };
        if !dir.is_dir() || !over(run) {
            continue;
        }
        processes += pids_in(&dir).len();
        let deadline = Instant::now() + EMPTY_WAIT;
        while is_populated(&dir) && Instant::now() < deadline {
            kill_dir(&dir);
            std::thread::sleep(Duration::from_millis(20));
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(dir = %dir.display(), "leftover job cgroup not removed: {e}"),
        }
    }
    // Gone once no run under this key has a job left (else it stays: busy).
    let _ = std::fs::remove_dir(worker_dir(own, key));
    (removed, processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:23 / /sys ro,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 33 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
44 33 0:39 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_host() {
        let (mount, root) = cgroup2_mount(MOUNTINFO).unwrap();
        assert_eq!(mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(root, "/");
        let pure = "29 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(pure).unwrap().0,
            PathBuf::from("/sys/fs/cgroup")
        );
        let spaced = "29 23 0:26 /a\\040b /mnt/c\\040g rw - cgroup2 cgroup2 rw\n";
        let (mount, root) = cgroup2_mount(spaced).unwrap();
        assert_eq!(
            (mount.to_str().unwrap(), root.as_str()),
            ("/mnt/c g", "/a b")
        );
        assert!(cgroup2_mount("34 33 0:29 / /x rw - cgroup cgroup rw,memory\n").is_none());
    }

    #[test]
    fn reads_the_unified_line_of_proc_self_cgroup() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/07\n0::/\n";
        assert_eq!(unified_path(hybrid), Some("/"));
        let unified = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            unified_path(unified),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(unified_path("4:memory:/x\n"), None);
        assert_eq!(unified_path("0::relative\n"), None);
    }

    #[test]
    fn own_cgroup_directories() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(own_dir(mount, "/", "/"), Some(mount.to_path_buf()));
        assert_eq!(
            own_dir(mount, "/", "/system.slice/aam.service"),
            Some(mount.join("system.slice/aam.service"))
        );
        // A container's mount shows only its part of the hierarchy.
        assert_eq!(
            own_dir(mount, "/docker/abc", "/docker/abc/inner"),
            Some(mount.join("inner"))
        );
        assert_eq!(own_dir(mount, "/docker/abc", "/elsewhere"), None);
        assert_eq!(own_dir(mount, "/", "/../../x"), None);
    }

    #[test]
    fn job_cgroups_follow_from_run_ids() {
        let own = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            job_dir(own, "AAM_RUN_ID=w1-0123abcd:4242.99:s7-3-2"),
            Some(own.join("aam-w1-0123abcd/4242.99-s7-3-2"))
        );
        assert_eq!(job_dir(own, "AAM_RUN_ID=worktree-tests"), None);
        assert_eq!(worker_dir(own, "k"), own.join("aam-k"));
    }
}
