//! No orphaned work: a worker killed with SIGKILL takes its jobs' processes
//! with it (the leader by its death signal, the rest by the worker's
//! watchdog and the job's cgroup), and a restarted worker stops what
//! escaped even that before it registers, never touching the jobs of a
//! worker under another name. Nor is a killed worker's scratch directory
//! left for ever: the next worker on the host removes it.
//!
//! Job cgroups need root and a cgroup v2 hierarchy: without them the tests
//! of jobs' processes fail, saying so (the worker's start log says which
//! mechanism it uses).

use aam_tests::{poll, Cluster};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// Whether a process is gone (a zombie counts as gone: it runs nothing).
fn gone(pid: u32) -> bool {
    !aam_tests::running(pid)
}

/// The pids a job wrote to `file`, once there are `n`.
fn pids(file: &Path, n: usize) -> Vec<u32> {
    let found = poll(Duration::from_secs(20), || {
        let text = std::fs::read_to_string(file).ok()?;
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        (pids.len() >= n).then_some(pids)
    });
    found.unwrap_or_else(|| panic!("the job never wrote {n} pids to {}", file.display()))
}

/// Fails, saying why, unless the worker runs its jobs in cgroups.
fn assert_cgroups(c: &Cluster, worker: usize) {
    let said = poll(Duration::from_secs(10), || {
        let log = c.workers[worker].log_text();
        log.contains("jobs die with the worker").then_some(log)
    })
    .expect("the worker never logged how its jobs die with it");
    assert!(
        said.contains("a cgroup v2 per job"),
        "these tests need job cgroups (root and a writable cgroup v2 hierarchy):\n{said}"
    );
}

/// Kills every pid still running (a failed test must not leave them).
fn kill_all(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill only sends a signal; a pid that is gone fails with ESRCH.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

#[test]
fn a_worker_killed_mid_job_leaves_no_process_of_it() {
    let mut c = Cluster::with_manager();
    let w = c.start_worker("w1", 1);
    assert_cgroups(&c, w);
    let file = c.path("pids");
    // The leader, a child in its group, a grandchild that leaves the group
    // (environment kept), one that clears its environment (group kept),
    // and one that does both.
    let script = r#"
echo $$ >> "$PIDS"
sleep 300 & echo $! >> "$PIDS"
setsid sh -c 'echo $$ >> "$PIDS"; exec sleep 300' &
env -i PIDS="$PIDS" sh -c 'echo $$ >> "$PIDS"; exec sleep 300' &
setsid env -i PIDS="$PIDS" sh -c 'echo $$ >> "$PIDS"; exec sleep 300' &
wait
"#;
    c.submit_json(&json!({"name": "orphans", "jobs": [{
        "name": "tree",
        "command": ["sh", "-c", script],
        "env": {"PIDS": file.to_str().unwrap()},
    }]}));
    let pids = pids(&file, 5);
    c.workers[w].kill();
    let all_gone = poll(Duration::from_secs(1), || {
        pids.iter().all(|&p| gone(p)).then_some(())
    });
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| !gone(p)).collect();
    kill_all(&alive);
    assert!(
        all_gone.is_some(),
        "still alive a second after the worker's SIGKILL: {alive:?} of {pids:?}\n{}",
        c.logs()
    );
}

/// The worker's watchdog: its child that is an aam-worker too.
fn watchdog_of(worker: u32) -> u32 {
    let found = poll(Duration::from_secs(5), || {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
                let ppid: u32 = stat[stat.rfind(')')? + 2..]
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == worker && comm == "aam-worker").then_some(pid)
            })
    });
    found.expect("the worker has no watchdog")
}

#[test]
fn a_restarted_worker_stops_its_earlier_runs_leftovers_and_no_one_elses() {
    let mut c = Cluster::with_manager();
    let w1 = c.start_worker_with("w1", 1, &["--label", "who=w1"]);
    c.start_worker_with("w2", 1, &["--label", "who=w2"]);
    assert_cgroups(&c, w1);
    let (mine, theirs) = (c.path("mine"), c.path("theirs"));
    let daemon =
        r#"echo $$ >> "$PIDS"; setsid sh -c 'echo $$ >> "$PIDS"; exec sleep 300' & exec sleep 300"#;
    c.submit_json(&json!({"name": "two", "jobs": [
        {"name": "mine", "command": ["sh", "-c", daemon], "requires": {"who": "w1"},
         "env": {"PIDS": mine.to_str().unwrap()}},
        {"name": "theirs", "command": ["sh", "-c", daemon], "requires": {"who": "w2"},
         "env": {"PIDS": theirs.to_str().unwrap()}},
    ]}));
    let (mine, theirs) = (pids(&mine, 2), pids(&theirs, 2));
    // Everything that would stop the daemon when w1 dies is gone too: its
    // watchdog first, then w1 itself (the leader dies with it).
    let watchdog = watchdog_of(c.workers[w1].pid());
    kill_all(&[watchdog]);
    c.workers[w1].kill();
    let leader_gone = poll(Duration::from_secs(5), || gone(mine[0]).then_some(()));
    assert!(leader_gone.is_some(), "the leader outlived its worker");
    assert!(!gone(mine[1]), "the daemon should have escaped everything");
    // The restart: the leftover goes before the worker registers.
    c.start_worker_with("w1", 1, &["--label", "who=w1"]);
    let daemon_gone = gone(mine[1]);
    let theirs_alive = theirs.iter().all(|&p| !gone(p));
    kill_all(&[mine[1]]);
    kill_all(&theirs);
    assert!(
        daemon_gone,
        "the restarted worker registered with its earlier run's daemon alive\n{}",
        c.logs()
    );
    assert!(
        theirs_alive,
        "worker w1 touched worker w2's job {theirs:?}\n{}",
        c.logs()
    );
}

/// The scratch directories of workers in `temp`.
fn scratch_dirs(temp: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(temp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("aam-worker-"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn a_killed_workers_scratch_directory_is_removed_by_the_next_worker() {
    let mut c = Cluster::with_manager();
    let temp = c.path("tmp");
    std::fs::create_dir_all(&temp).unwrap();
    c.worker_env
        .push(("TMPDIR".into(), temp.to_str().unwrap().into()));
    let first = c.start_worker("w1", 1);
    // A job with a dependency, so its input files are written there too.
    let session = c.submit_json(&json!({"name": "inputs", "jobs": [
        {"name": "a", "command": ["true"]},
        {"name": "b", "command": ["sh", "-c", "test -s \"$AAM_INPUTS\""], "depends_on": ["a"]},
    ]}));
    c.poll_status(&session, "the session succeeded", |s| {
        s["status"] == "succeeded"
    });
    let dirs = scratch_dirs(&temp);
    assert_eq!(dirs.len(), 1, "one scratch directory per worker: {dirs:?}");
    let killed = dirs[0].clone();

    c.workers[first].kill();
    assert!(killed.is_dir(), "a killed worker cannot remove its own");
    let second = c.start_worker("w2", 1);
    let dirs = scratch_dirs(&temp);
    assert_eq!(dirs.len(), 1, "{dirs:?}\n{}", c.logs());
    assert_ne!(dirs[0], killed, "the killed worker's directory stayed");
    assert!(
        c.workers[second]
            .log_text()
            .contains("removed the scratch directories of gone workers"),
        "{}",
        c.workers[second].log_text()
    );

    // A worker that stops cleanly removes its own.
    c.workers[second].stop(libc::SIGTERM, Duration::from_secs(20));
    assert_eq!(scratch_dirs(&temp), Vec::<std::path::PathBuf>::new());
}
