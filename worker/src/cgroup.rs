//! A cgroup v2 per job, where the machine lets the worker make one: the
//! job's leader is born in it (or moves itself in before it runs its
//! command where it cannot be born there: `leader.rs`), so every
//! descendant is in it too, whatever it does to its process group or its
//! environment, and stopping the job kills the whole cgroup.
//!
//! Layout: `OWN/aam-KEY/RUN-cN`, where OWN is the worker's own cgroup (from
//! /proc/self/cgroup, on the cgroup2 mount found in /proc/self/mountinfo,
//! which also finds the `unified` mount of a hybrid v1/v2 host), KEY the
//! worker's name key and RUN its run, both from the attempt's `AAM_RUN_ID`
//! (`orphans.rs`), and N a number: a restarted worker finds the cgroups of
//! its earlier run under `aam-KEY`. Which job a cgroup serves is known in
//! the worker's memory only (`JobCgroups`): an empty one is kept for the
//! next job rather than removed and made again.
//!
//! No controller is enabled anywhere: only `cgroup.procs`, `cgroup.events`
//! and `cgroup.kill` are used, and those work in any cgroup. The "no
//! internal processes" rule of cgroup v2 only forbids processes in a cgroup
//! that hands controllers to its children, so the worker can stay in its
//! own cgroup while its jobs live in child cgroups of it. Whether the
//! machine allows all this is not guessed from permissions: `detect` makes
//! a probe cgroup and moves a forked child into it, once per process.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
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

/// A job's cgroup: its directory, open for a leader to be born in it, with
/// `cgroup.procs` open for a leader to move itself in where it cannot be
/// (`orphans::guard`, `leader.rs`) and `cgroup.events` open to ask whether
/// anything is left in it.
pub struct JobCgroup {
    pub dir: PathBuf,
    dir_fd: OwnedFd,
    procs: OwnedFd,
    events: OwnedFd,
}

impl JobCgroup {
    pub fn fds(&self) -> crate::leader::CgroupFds {
        crate::leader::CgroupFds {
            dir: self.dir_fd.as_raw_fd(),
            procs: self.procs.as_raw_fd(),
        }
    }

    fn populated(&self) -> bool {
        let mut buf = [0u8; 128];
        // SAFETY: pread into our own buffer from an fd we own; a kernfs
        // file is read whole from offset 0 each time.
        let n = unsafe {
            libc::pread(
                self.events.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
            )
        };
        let text = &buf[..n.max(0) as usize];
        text.split(|b| *b == b'\n').any(|l| l == b"populated 1")
    }
}

/// The job cgroups of this process, by marker, and the empty ones kept for
/// the next jobs: making a cgroup (the kernel makes each of its files) and
/// removing one cost more than the rest of starting a short job. Cgroup v2
/// cannot rename a cgroup, so one is named for its run and a number
/// (`OWN/aam-KEY/RUN-cN`: `clean_runs` and the watchdog find it by its
/// run) and the marker it serves is known here only.
#[derive(Default)]
struct JobCgroups {
    by_marker: HashMap<String, Arc<JobCgroup>>,
    /// Empty, with the directory of the worker (`aam-KEY`) and run they
    /// belong to.
    spare: Vec<(PathBuf, String, Arc<JobCgroup>)>,
    made: u64,
}

/// Empty job cgroups kept at most: about the jobs a worker runs at once.
const SPARE_KEPT: usize = 32;

static JOB_CGROUPS: Mutex<Option<JobCgroups>> = Mutex::new(None);

fn job_cgroups<T>(f: impl FnOnce(&mut JobCgroups) -> T) -> T {
    let mut guard = JOB_CGROUPS.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(|| {
        #[cfg(test)]
        remove_at_exit();
        JobCgroups::default()
    }))
}

/// A unit test process ends without the worker's clean exit or its
/// watchdog, which remove a run's cgroups: the ones its tests made (kept
/// empty for a next job) are removed when it exits, with their worker's
/// directory if that is then empty, so test runs leave no cgroups behind.
#[cfg(test)]
fn remove_at_exit() {
    extern "C" fn remove_all() {
        // At exit no test runs: a lock still held (by a thread that
        // outlived its test) or poisoned (by a test that panicked holding
        // it) leaves them, rather than waiting.
        let Ok(mut guard) = JOB_CGROUPS.try_lock() else {
            return;
        };
        let Some(cgroups) = guard.as_mut() else {
            return;
        };
        let spare = cgroups.spare.drain(..).map(|(_, _, c)| c);
        let in_use = cgroups.by_marker.drain().map(|(_, c)| c);
        for cgroup in spare.chain(in_use) {
            remove_dir(&cgroup.dir);
            if let Some(worker_dir) = cgroup.dir.parent() {
                let _ = std::fs::remove_dir(worker_dir);
            }
        }
    }
    // SAFETY: registers a function without arguments that only takes a
    // lock without waiting and removes directories.
    unsafe { libc::atexit(remove_all) };
}

/// The directory of a run's `n`th job cgroup under a worker's directory.
pub fn job_cgroup_dir(worker_dir: &Path, run: &str, n: u64) -> PathBuf {
    worker_dir.join(format!("{run}-c{n}"))
}

/// The cgroup of the job with `marker`, if job cgroups are in use: its own
/// if it has one (a worktree job's verify runs in its job's), else a spare
/// one or a new one.
pub fn create(marker: &str) -> Result<Option<Arc<JobCgroup>>, String> {
    let Some(own) = own() else {
        return Ok(None);
    };
    let Some((key, run, _)) = crate::orphans::parse_marker(marker) else {
        return Ok(None);
    };
    let parent = worker_dir(own, key);
    job_cgroups(|cgroups| {
        if let Some(cgroup) = cgroups.by_marker.get(marker) {
            return Ok(Some(cgroup.clone()));
        }
        let spare = cgroups
            .spare
            .iter()
            .rposition(|(p, r, _)| *p == parent && r == run);
        let cgroup = match spare {
            Some(at) => cgroups.spare.swap_remove(at).2,
            None => {
                cgroups.made += 1;
                let dir = job_cgroup_dir(&parent, run, cgroups.made);
                let made = std::fs::DirBuilder::new().recursive(true).create(&dir);
                let opened = made
                    .and_then(|()| Ok((open_dir(&dir)?, open_procs(&dir)?, open_events(&dir)?)));
                let (dir_fd, procs, events) = opened
                    .map_err(|e| format!("cannot make the job's cgroup {}: {e}", dir.display()))?;
                Arc::new(JobCgroup {
                    dir,
                    dir_fd,
                    procs,
                    events,
                })
            }
        };
        cgroups.by_marker.insert(marker.to_string(), cgroup.clone());
        Ok(Some(cgroup))
    })
}

/// A directory opened read-only (as `clone3` wants a cgroup).
fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(std::fs::File::open(dir)?))
}

fn open_events(dir: &Path) -> std::io::Result<OwnedFd> {
    Ok(OwnedFd::from(std::fs::File::open(
        dir.join("cgroup.events"),
    )?))
}

/// The cgroup of the job with `marker`, if it has one.
fn existing(marker: &str) -> Option<Arc<JobCgroup>> {
    own()?;
    job_cgroups(|cgroups| cgroups.by_marker.get(marker).cloned())
}

/// The processes in the cgroup of the job with `marker`.
pub fn members(marker: &str) -> Vec<u32> {
    existing(marker).map_or_else(Vec::new, |c| pids_in(&c.dir))
}

fn pids_in(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether the job with `marker` has processes left in its cgroup.
pub fn populated(marker: &str) -> bool {
    existing(marker).is_some_and(|c| c.populated())
}

fn is_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|text| text.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// SIGKILLs every process in the cgroup of the job with `marker`.
pub fn kill(marker: &str) {
    if let Some(cgroup) = existing(marker) {
        kill_dir(&cgroup.dir);
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

/// The job with `marker` is done with its cgroup: kept for a next job if
/// it is empty (and few are kept), else removed (a cgroup with processes
/// cannot be: it is left for a later stop, or the watchdog).
pub fn release(marker: &str) {
    let Some(own) = own() else { return };
    let Some((key, run, _)) = crate::orphans::parse_marker(marker) else {
        return;
    };
    let parent = worker_dir(own, key);
    let kept = job_cgroups(|cgroups| {
        let cgroup = cgroups.by_marker.remove(marker)?;
        if cgroups.spare.len() < SPARE_KEPT && !cgroup.populated() {
            cgroups.spare.push((parent, run.to_string(), cgroup));
            return None;
        }
        Some(cgroup)
    });
    if let Some(cgroup) = kept {
        remove_dir(&cgroup.dir);
    }
}

/// Removes the cgroup of the job with `marker` (after a stop: it is not
/// kept for another job).
pub fn remove(marker: &str) {
    if own().is_none() {
        return;
    }
    if let Some(cgroup) = job_cgroups(|cgroups| cgroups.by_marker.remove(marker)) {
        remove_dir(&cgroup.dir);
    }
}

fn remove_dir(dir: &Path) {
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::debug!(dir = %dir.display(), "job cgroup not removed: {e}"),
    }
}

/// Kills and removes the job cgroups of a worker under `key` whose runs
/// `over` picks (others are never touched). Returns how many of them were
/// busy (held processes) and how many processes they held: empty ones, kept
/// for the next job (`JobCgroups`), are removed without being counted.
pub fn clean_runs(key: &str, over: impl Fn(&str) -> bool) -> (usize, usize) {
    let Some(own) = own() else {
        return (0, 0);
    };
    let Ok(entries) = std::fs::read_dir(worker_dir(own, key)) else {
        return (0, 0);
    };
    let (mut busy_removed, mut processes) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let Some((run, _)) = name.split_once('-') else {
            continue;
        };
        if !dir.is_dir() || !over(run) {
            continue;
        }
        let held = pids_in(&dir).len();
        let busy = held > 0 || is_populated(&dir);
        processes += held;
        let deadline = Instant::now() + EMPTY_WAIT;
        while is_populated(&dir) && Instant::now() < deadline {
            kill_dir(&dir);
            std::thread::sleep(Duration::from_millis(20));
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => busy_removed += usize::from(busy),
            Err(e) => tracing::warn!(dir = %dir.display(), "leftover job cgroup not removed: {e}"),
        }
    }
    // Gone once no run under this key has a job left (else it stays: busy).
    let _ = std::fs::remove_dir(worker_dir(own, key));
    (busy_removed, processes)
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

    /// Needs job cgroups (root, cgroup v2), as the orphans tests do.
    #[test]
    fn an_empty_job_cgroup_serves_the_next_job_and_a_busy_one_is_not_kept() {
        if let Err(why) = detect() {
            panic!("this test needs job cgroups (root and a writable cgroup v2): {why}");
        }
        let key = format!("pooltest-{}", std::process::id());
        let marker = |job: &str| format!("AAM_RUN_ID={key}:1.1:{job}");
        let first = create(&marker("a")).unwrap().unwrap();
        assert!(first.dir.is_dir());
        // Asked again for the same job (its verify): the same cgroup.
        let again = create(&marker("a")).unwrap().unwrap();
        assert_eq!(again.dir, first.dir);
        let first_dir = first.dir.clone();
        release(&marker("a"));
        assert!(!populated(&marker("a")) && members(&marker("a")).is_empty());
        let next = create(&marker("b")).unwrap().unwrap();
        assert_eq!(next.dir, first_dir, "the empty cgroup was not reused");

        // A process in it: released, the cgroup is neither kept nor lost.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut leader = rt.block_on(async {
            let mut command = crate::leader::Command::new("sleep");
            command.arg("30").into_cgroup(next.fds());
            command.spawn().unwrap()
        });
        let pid = leader.id();
        assert_eq!(members(&marker("b")), vec![pid]);
        assert!(populated(&marker("b")));
        release(&marker("b"));
        let other = create(&marker("c")).unwrap().unwrap();
        assert_ne!(other.dir, next.dir, "a busy cgroup was handed out");
        // Not removable while busy: still there, with its process.
        assert_eq!(pids_in(&next.dir), vec![pid]);
        remove(&marker("c"));
        assert!(!other.dir.exists());
        // A spare: an empty cgroup kept for the next job.
        create(&marker("d")).unwrap().unwrap();
        release(&marker("d"));
        // The watchdog's clean-up counts the busy cgroup and its process,
        // not the spare (nothing ran there), and removes both.
        assert_eq!(clean_runs(&key, |_| true), (1, 1));
        rt.block_on(leader.wait()).unwrap();
        assert!(!worker_dir(own().unwrap(), &key).exists());
    }

    #[test]
    fn job_cgroups_are_named_for_their_worker_and_run() {
        let own = Path::new("/sys/fs/cgroup/unified");
        let worker = worker_dir(own, "w1-0123abcd");
        assert_eq!(worker, own.join("aam-w1-0123abcd"));
        let dir = job_cgroup_dir(&worker, "4242.99", 7);
        assert_eq!(dir, own.join("aam-w1-0123abcd/4242.99-c7"));
        // `clean_runs` reads the run back from the name.
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.split_once('-').map(|(run, _)| run), Some("4242.99"));
    }
}
