//! Stopping every process of a job: its process group, and descendants that
//! left the group (`setsid`, double fork) but still carry the job's
//! `AAM_RUN_ID` in their environment. SIGTERM first, SIGKILL after the grace,
//! and a receipt of what was signalled and what (if anything) survived.
//!
//! The worker is a child subreaper, so such escaped descendants are
//! reparented to it rather than to init, and `reap_adopted` collects them.
//! Where jobs have cgroups (`cgroup.rs`), every process in the job's cgroup
//! is one of its processes too (even one that cleared its environment and
//! left the group), the SIGKILL goes to the whole cgroup, and the emptied
//! cgroup is removed.

use aam_protocol::model::{SignalSent, TeardownReceipt};
use aam_protocol::now_ms;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How often a teardown looks again while waiting for processes to go.
const POLL: Duration = Duration::from_millis(20);
/// How often /proc is scanned again during the grace.
const RESCAN: Duration = Duration::from_millis(500);

/// Longest grace a stop waits before SIGKILL.
const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);
/// How long SIGKILLed processes get to disappear before they count as survivors.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// Makes this process a child subreaper (Linux); false where unsupported.
pub fn become_subreaper() -> bool {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 }
}

/// Fields of /proc/PID/stat we need.
struct ProcStat {
    state: char,
    ppid: i32,
    pgrp: i32,
    /// When it started, in clock ticks after boot (field 22).
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after it.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Fields 6 to 21 lie between the group and the start time.
    let start = fields.nth(16)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        pgrp,
        start,
    })
}

/// When a live process started (clock ticks after boot): with its pid,
/// it names one process, whatever reuses the pid later.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    proc_stat(pid as i32)
        .filter(|s| s.state != 'Z')
        .map(|s| s.start)
}

/// A process's environment entries (none if it cannot be read).
pub(crate) fn environ_entries(pid: u32) -> Vec<Vec<u8>> {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => env.split(|&b| b == 0).map(<[u8]>::to_vec).collect(),
        Err(_) => Vec::new(),
    }
}

fn environ_has(pid: i32, marker: &[u8]) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => env.split(|&b| b == 0).any(|var| var == marker),
        Err(_) => false,
    }
}

pub(crate) fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live (not zombie) processes of a job: in its process group, marked
/// with its run id, or in its cgroup.
pub fn job_processes(pgid: u32, marker: &str) -> BTreeSet<u32> {
    let me = std::process::id() as i32;
    let in_cgroup = crate::cgroup::members(marker);
    let marker = marker.as_bytes();
    let mut found: BTreeSet<u32> = all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let Some(stat) = proc_stat(pid) else {
                return false;
            };
            stat.state != 'Z'
                && ((pgid > 1 && stat.pgrp == pgid as i32) || environ_has(pid, marker))
        })
        .map(|pid| pid as u32)
        .collect();
    found.extend(in_cgroup.into_iter().filter(|&pid| is_alive(pid)));
    found
}

pub(crate) fn is_alive(pid: u32) -> bool {
    proc_stat(pid as i32).is_some_and(|s| s.state != 'Z')
}

fn signal(pid: u32, sig: i32, receipt: &mut TeardownReceipt) {
    // SAFETY: kill only sends a signal; a pid that is gone fails with ESRCH.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        receipt.signals.push(SignalSent {
            pid,
            signal: sig,
            at_ms: now_ms(),
        });
    }
}

/// Stops every process of a job: SIGTERM, up to `grace` for them to exit,
/// then SIGKILL for the rest. Runs on a blocking thread (it scans /proc).
pub fn stop_job(pgid: u32, marker: &str, grace: Duration) -> TeardownReceipt {
    let mut receipt = TeardownReceipt::default();
    let mut seen = job_processes(pgid, marker);
    for &pid in &seen {
        signal(pid, libc::SIGTERM, &mut receipt);
    }
    // While the grace runs, watch the processes already known (one small
    // read each) and scan /proc only now and then, for processes started
    // meanwhile (a shell forking on SIGTERM): they get their SIGTERM too.
    // Many jobs stopping at once then cost little.
    // The grace comes from the manager: a day is past any sane one.
    let deadline = Instant::now() + grace.min(MAX_GRACE);
    let mut next_scan = Instant::now() + RESCAN;
    while Instant::now() < deadline {
        if Instant::now() >= next_scan {
            let now_running = job_processes(pgid, marker);
            for &pid in now_running.difference(&seen) {
                signal(pid, libc::SIGTERM, &mut receipt);
            }
            seen.extend(now_running.iter().copied());
            if now_running.is_empty() {
                break;
            }
            next_scan = Instant::now() + RESCAN;
        } else if !seen.iter().any(|&p| is_alive(p)) {
            // All known ones are gone: one scan confirms nothing new is left.
            next_scan = Instant::now();
            continue;
        }
        std::thread::sleep(POLL);
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let left = job_processes(pgid, marker);
        if left.is_empty() {
            break;
        }
        for &pid in &left {
            signal(pid, libc::SIGKILL, &mut receipt);
        }
        // Whatever forks in the cgroup meanwhile is killed with it.
        crate::cgroup::kill(marker);
        seen.extend(left.iter().copied());
        if Instant::now() >= deadline {
            receipt.survivors = left.into_iter().filter(|&p| is_alive(p)).collect();
            break;
        }
        std::thread::sleep(POLL);
    }
    crate::cgroup::remove(marker);
    receipt
}

/// This process's children, zombies included: those of each of its
/// threads (`/proc/self/task/TID/children`; an orphan is reparented to a
/// thread of its subreaper). None where the kernel has no such files
/// (built without CONFIG_PROC_CHILDREN).
fn own_children() -> Option<Vec<i32>> {
    if !std::path::Path::new("/proc/thread-self/children").exists() {
        return None;
    }
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that ended meanwhile has no children to read.
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        children.extend(
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(children)
}

/// Reaps zombies reparented to this subreaper that are not `own` children
/// (those are waited for by whoever spawned them). Returns how many.
///
/// A child in this process's own process group is one the worker spawned
/// for itself (git, the container engine, `ip`, `iptables`: jobs and their
/// steps get groups of their own, and what they leave behind is in those
/// or in sessions of its own): its spawner waits for it, and reaping it
/// here would make that wait fail (`ECHILD`).
///
/// It runs every second on the worker's event loop, so it reads only this
/// process's children (`own_children`), not the stat of every process on
/// the machine (a few hundred reads a second on a busy host).
pub fn reap_adopted(own: &BTreeSet<u32>) -> usize {
    reap_among(own_children().unwrap_or_else(all_pids), own)
}

/// `reap_adopted` of the zombies among `candidates`.
fn reap_among(candidates: Vec<i32>, own: &BTreeSet<u32>) -> usize {
    let me = std::process::id() as i32;
    // SAFETY: getpgrp has no preconditions and cannot fail.
    let my_group = unsafe { libc::getpgrp() };
    let mut reaped = 0;
    for pid in candidates {
        if own.contains(&(pid as u32)) {
            continue;
        }
        let adopted = |s: &ProcStat| s.ppid == me && s.state == 'Z' && s.pgrp != my_group;
        if proc_stat(pid).is_some_and(|s| adopted(&s)) {
            let mut status = 0;
            // SAFETY: waits for one specific zombie child; never blocks (WNOHANG).
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                reaped += 1;
            }
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn stops_a_group_and_an_escaped_marked_process() {
        let marker = format!("AAM_RUN_ID=unit-{}", std::process::id());
        let (key, value) = marker.split_once('=').unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("escaped");
        // A shell in its own group that ignores SIGTERM, and a grandchild
        // that leaves the group with setsid.
        let script = format!(
            "trap '' TERM; setsid sh -c 'echo $$ > {}; trap \"\" TERM; exec sleep 60' & exec sleep 60",
            pidfile.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .env(key, value)
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        let start = Instant::now();
        let escaped: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the escaped process never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(job_processes(pgid, &marker).contains(&escaped));
        let receipt = stop_job(pgid, &marker, Duration::from_millis(200));
        let _ = child.wait();
        assert!(receipt.survivors.is_empty(), "{receipt:?}");
        let killed: BTreeSet<u32> = receipt
            .signals
            .iter()
            .filter(|s| s.signal == libc::SIGKILL)
            .map(|s| s.pid)
            .collect();
        assert!(killed.contains(&escaped), "{receipt:?}");
        assert!(receipt
            .signals
            .iter()
            .any(|s| s.pid == pgid && s.signal == libc::SIGTERM));
        assert!(job_processes(pgid, &marker).is_empty());
        // The escaped process was reparented to init or a subreaper; make sure it is gone.
        let gone = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !is_alive(escaped)
        });
        assert!(gone);
    }

    #[test]
    fn an_exited_child_of_a_group_of_its_own_is_reaped() {
        // As an adopted orphan is: a child of this process, in a group of
        // its own, exited, waited for by nobody.
        let orphan = Command::new("true").process_group(0).spawn().unwrap();
        let pid = orphan.id() as i32;
        assert!(
            own_children().is_some_and(|c| c.contains(&pid)),
            "a child is listed among this process's children"
        );
        let exited = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            proc_stat(pid).is_some_and(|s| s.state == 'Z')
        });
        assert!(exited);
        assert!(
            own_children().is_some_and(|c| c.contains(&pid)),
            "a zombie is still listed among the children, so it is found"
        );
        // Only it: the other children are other tests', for them to wait for.
        assert_eq!(reap_among(vec![pid], &BTreeSet::new()), 1);
        assert!(proc_stat(pid).is_none(), "the zombie is gone");
        std::mem::forget(orphan);
    }

    #[test]
    fn the_workers_own_helpers_are_left_to_their_waiters() {
        // A helper in this process's group (as git or podman are spawned),
        // exited and not waited for yet.
        let mut helper = Command::new("true").spawn().unwrap();
        let pid = helper.id() as i32;
        let exited = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            proc_stat(pid).is_some_and(|s| s.state == 'Z')
        });
        assert!(exited);
        // Every other process counts as owned: other tests' children are
        // theirs to wait for.
        let own: BTreeSet<u32> = all_pids()
            .into_iter()
            .filter(|&p| p != pid)
            .map(|p| p as u32)
            .collect();
        reap_adopted(&own);
        assert!(
            helper.wait().unwrap().success(),
            "the helper was reaped under its waiter"
        );
    }
}
