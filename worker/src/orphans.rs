//! No orphaned work: a job's processes die with their worker, even one
//! killed with SIGKILL, and a restarted worker stops what an earlier run of
//! it left behind before it registers.
//!
//! - Every job's leader gets `PR_SET_PDEATHSIG` (SIGKILL) before it execs
//!   (`leader.rs`). The signal comes when the *thread* that forked dies: jobs are
//!   spawned on the worker actor's arbiter thread, which in `aam-worker`,
//!   `aam run` and `aam up` is the main thread (`actix::System::new` runs
//!   its arbiter on the calling thread), so it lives as long as the process.
//!   Never spawn a job from the blocking pool: its threads exit when idle.
//! - Where the machine allows it, the leader is born in a cgroup of its
//!   own, or moves itself there before it runs its command (`cgroup.rs`,
//!   `leader.rs`), which holds every descendant, whatever its group or
//!   environment.
//! - The rest of a job (its descendants: the death signal is not
//!   inherited) is stopped by the worker's watchdog (`start_watchdog`): a
//!   process forked at start that waits for the worker's end on a pipe and
//!   then kills every cgroup and every marked process of that worker run.
//! - Run ids (`AAM_RUN_ID=KEY:RUN:JOB`) say whose a process is: KEY comes
//!   from the worker's name, RUN is the worker process (`PID.STARTTIME`, so
//!   a reused pid is another run) and JOB the attempt. At start, a worker
//!   SIGKILLs the processes and cgroups under its KEY whose RUN is over. A
//!   worker under another name has another KEY, and a live worker under the
//!   same name (two `aam run` on one host are both `local`) is a live RUN:
//!   neither is touched.

use crate::cgroup::{self, JobCgroup};
use crate::teardown::{all_pids, environ_entries, start_time};
use aam_protocol::messages::Assignment;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long killed leftovers get to disappear.
const LEFTOVER_WAIT: Duration = Duration::from_secs(3);

/// Longest part of a worker's name kept in its key (the hash keeps it unique).
const NAME_IN_KEY: usize = 32;

/// The run ids a worker gives its attempts' processes.
#[derive(Clone, Debug)]
pub struct RunIds {
    /// From the worker's name: `[A-Za-z0-9_.-]` only, with a hash of it.
    key: String,
    /// This worker process: `PID.STARTTIME`.
    run: String,
}

impl RunIds {
    /// Run ids of the worker named `name` in this process.
    pub fn new(name: &str) -> RunIds {
        RunIds {
            key: worker_key(name),
            run: this_run(),
        }
    }

    /// The worker's name key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The `AAM_RUN_ID=...` entry every process of an attempt carries.
    pub fn marker(&self, assignment: &Assignment) -> String {
        format!(
            "AAM_RUN_ID={}:{}:{}-{}-{}",
            self.key, self.run, assignment.job.session, assignment.job.index, assignment.attempt
        )
    }
}

/// A worker's key: its name made safe for a file name and an environment
/// value (no `:`), cut, and an FNV-1a hash of the whole name.
pub fn worker_key(name: &str) -> String {
    let safe: String = name
        .chars()
        .take(NAME_IN_KEY)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect();
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    format!("{safe}-{hash:08x}")
}

/// This process as a run: its pid and start time.
fn this_run() -> String {
    let pid = std::process::id();
    format!("{pid}.{}", start_time(pid).unwrap_or(0))
}

/// Whether the worker process of a run (`PID.STARTTIME`) still runs.
pub fn run_alive(run: &str) -> bool {
    let Some((pid, start)) = run.split_once('.') else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// The key, run and job of an `AAM_RUN_ID=KEY:RUN:JOB` marker.
pub fn parse_marker(marker: &str) -> Option<(&str, &str, &str)> {
    let value = marker.strip_prefix("AAM_RUN_ID=")?;
    let mut parts = value.splitn(3, ':');
    let (key, run, job) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
    (plain(key) && plain(run) && plain(job)).then_some((key, run, job))
}

/// Makes the job's cgroup, if the machine allows one, and has the leader
/// start in it (born there, or moving in before it runs anything; the
/// leader's death signal is always set: `leader.rs`). Keep the returned
/// cgroup (its open directory and `cgroup.procs`) until the command has
/// been spawned.
pub fn guard(
    command: &mut crate::leader::Command,
    marker: &str,
) -> Result<Option<Arc<JobCgroup>>, String> {
    let job_cgroup = cgroup::create(marker)?;
    if let Some(c) = &job_cgroup {
        command.into_cgroup(c.fds());
    }
    Ok(job_cgroup)
}

/// How jobs' processes die with this worker, for the log line at start.
pub fn mechanism() -> String {
    match cgroup::detect() {
        Ok(own) => format!(
            "jobs die with the worker: PR_SET_PDEATHSIG on each job, and a cgroup v2 per job under {}",
            own.display()
        ),
        Err(why) => format!(
            "jobs die with the worker: PR_SET_PDEATHSIG on each job, process groups and AAM_RUN_ID \
             (no cgroup per job: {why})"
        ),
    }
}

/// What `stop_earlier_runs` found.
#[derive(Debug, Default, PartialEq)]
pub struct Leftovers {
    pub processes: usize,
    pub cgroups: usize,
}

/// SIGKILLs the processes of earlier runs of the worker keyed `key` (found
/// by their run ids) and removes the cgroups of those runs. Blocking: run
/// it once at start, before registering.
pub fn stop_earlier_runs(key: &str) -> Leftovers {
    stop_runs(key, |run| !run_alive(run))
}

/// SIGKILLs the processes and removes the cgroups of the runs of the worker
/// keyed `key` that `over` picks.
fn stop_runs(key: &str, over: impl Fn(&str) -> bool) -> Leftovers {
    let prefix = format!("AAM_RUN_ID={key}:");
    let mut killed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + LEFTOVER_WAIT;
    loop {
        let found = processes_of_runs(&prefix, &over);
        if found.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in found {
            // SAFETY: kill only sends a signal; a pid that is gone fails with ESRCH.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            killed.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (cgroups, in_cgroups) = cgroup::clean_runs(key, &over);
    Leftovers {
        processes: killed.len() + in_cgroups,
        cgroups,
    }
}

/// Live processes whose run id starts with `prefix` and names a run `over` picks.
fn processes_of_runs(prefix: &str, over: &impl Fn(&str) -> bool) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .map(|pid| pid as u32)
        .filter(|&pid| pid != me && crate::teardown::is_alive(pid))
        .filter(|&pid| {
            environ_entries(pid).iter().any(|entry| {
                let run = entry
                    .strip_prefix(prefix.as_bytes())
                    .and_then(|rest| rest.split(|&b| b == b':').next())
                    .and_then(|run| std::str::from_utf8(run).ok());
                run.is_some_and(over)
            })
        })
        .collect()
}

/// Starts the watchdog of the worker named `name` in this process: a
/// forked child that waits until this process is gone, however it ended
/// (SIGKILL included), then stops every process and cgroup of its jobs.
/// It forks, so call it while the process has one thread (before any
/// runtime starts); with more, it refuses.
pub fn start_watchdog(name: &str) -> Result<(), String> {
    if thread_count() != Some(1) {
        return Err("the process already runs threads".to_string());
    }
    // Detected here so the watchdog knows the cgroups (and the probe's
    // fork happens while there is one thread).
    let _ = cgroup::detect();
    let ids = RunIds::new(name);
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two fds; close-on-exec keeps jobs from
    // holding the write end (the watchdog must see EOF when we die).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let [read, write] = fds;
    // SAFETY: with one thread, the child is a whole copy of this process
    // and may run ordinary code.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: closes the child's copy of the write end.
            unsafe { libc::close(write) };
            watchdog(read, &ids)
        }
        _ => {
            // The write end stays open for this process's life: its close
            // by the kernel, at our exit, is the watchdog's signal.
            // SAFETY: closes the parent's copy of the read end.
            unsafe { libc::close(read) };
            Ok(())
        }
    }
}

fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

/// The watchdog itself: out of the terminal's signals (a Ctrl-C meant for
/// the worker must not take it away first), blocked on the pipe until the
/// worker is gone, then the worker's run stopped.
fn watchdog(read: libc::c_int, ids: &RunIds) -> ! {
    // SAFETY: plain syscalls on this process: its own group, signals ignored
    // (it exits as soon as the worker does), a blocking read of the pipe.
    unsafe {
        libc::setpgid(0, 0);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(read, (&mut byte as *mut u8).cast(), 1);
            let interrupted =
                std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
            if n == 0 || (n < 0 && !interrupted) {
                break;
            }
        }
    }
    let left = stop_runs(&ids.key, |run| run == ids.run);
    if left != Leftovers::default() {
        tracing::warn!(
            processes = left.processes,
            cgroups = left.cgroups,
            "the worker is gone: its watchdog stopped what its jobs left running"
        );
    }
    // SAFETY: ends the watchdog without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_safe_and_tell_names_apart() {
        let key = worker_key("w1");
        assert!(key.starts_with("w1-") && key.len() == 11, "{key}");
        assert_ne!(worker_key("a/b"), worker_key("a:b"));
        let odd = worker_key("../x:y z");
        assert!(
            !odd.contains('/') && !odd.contains(':') && !odd.contains(' '),
            "{odd}"
        );
        assert!(worker_key(&"n".repeat(200)).len() <= NAME_IN_KEY + 9);
    }

    #[test]
    fn markers_parse_back() {
        let marker = "AAM_RUN_ID=w1-0123abcd:4242.99:s7-3-2";
        assert_eq!(
            parse_marker(marker),
            Some(("w1-0123abcd", "4242.99", "s7-3-2"))
        );
        assert_eq!(parse_marker("AAM_RUN_ID=worktree-tests"), None);
        assert_eq!(parse_marker("AAM_RUN_ID=k:..:x"), None);
        assert_eq!(parse_marker("AAM_RUN_ID=k:r:a/b"), None);
        assert_eq!(parse_marker("OTHER=k:r:j"), None);
    }

    #[test]
    fn this_run_is_alive_and_a_reused_pid_is_not() {
        let run = this_run();
        assert!(run_alive(&run), "{run}");
        let pid = std::process::id();
        let start = start_time(pid).unwrap();
        assert!(!run_alive(&format!("{pid}.{}", start + 1)));
        assert!(!run_alive("nonsense"));
    }
}
