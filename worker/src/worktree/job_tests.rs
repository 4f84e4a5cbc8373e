//! Worktree jobs run for real through `run_job` (a `sh -c` command in a
//! temporary repository): the change comes with `Finished`, a cancel's
//! partial change is committed, what cannot be set up ends as
//! `WorktreeFailed` with nothing started; and the clean-up at start.

use super::test_repo::{git, job_with, order, runtime, TestRepo};
use super::*;
use crate::child::{run_job, EventSink, JobDirs, JobEvent, StopOrder};
use aam_protocol::messages::Assignment;
use aam_protocol::model::StopCause;
use aam_protocol::worktree::WorktreeOrder;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Keeps every event; sends the stop order once the job printed `ready`.
#[derive(Clone, Default)]
struct Recorder {
    events: Rc<RefCell<Vec<JobEvent>>>,
    stop_when_ready: Rc<RefCell<Option<oneshot::Sender<StopOrder>>>>,
}

impl EventSink for Recorder {
    async fn send(&self, event: JobEvent) {
        if let JobEvent::Output { data, .. } = &event {
            if data.windows(5).any(|w| w == b"ready") {
                if let Some(stop) = self.stop_when_ready.borrow_mut().take() {
                    let order = StopOrder {
                        cause: StopCause::Cancelled,
                        grace: Duration::from_millis(200),
                    };
                    let _ = stop.send(order);
                }
            }
        }
        self.events.borrow_mut().push(event);
    }
}

fn command_job(script: &str, workdir: &str, order: Option<WorktreeOrder>) -> Assignment {
    job_with(&["sh", "-c", script], Some(workdir), order)
}

/// Runs a job to its end; `cancel_when_ready` stops it (as `aam cancel`)
/// once it printed `ready`.
fn run(assignment: Assignment, dirs: JobDirs, cancel_when_ready: bool) -> Vec<JobEvent> {
    let recorder = Recorder::default();
    let (stop, stop_rx) = oneshot::channel();
    if cancel_when_ready {
        *recorder.stop_when_ready.borrow_mut() = Some(stop);
    }
    let job = run_job(assignment, dirs, recorder.clone(), stop_rx);
    tokio::task::LocalSet::new().block_on(&runtime(), job);
    recorder.events.take()
}

fn dirs(base: &Path, worktrees: &Arc<Worktrees>) -> JobDirs {
    JobDirs {
        base: base.to_path_buf(),
        worktrees: Some(worktrees.clone()),
        ports: crate::ports::PortPool::new(crate::ports::DEFAULT_RANGE),
        containers: None,
        run_ids: crate::orphans::RunIds::new("job-tests"),
    }
}

fn output(events: &[JobEvent]) -> String {
    let bytes: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Output { data, .. } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn a_command_runs_in_its_worktree_and_finishes_with_its_change() {
    let repo = TestRepo::new();
    let root = tempfile::tempdir().unwrap();
    let worktrees = Worktrees::new(root.path().to_path_buf(), 1 << 20);
    let job = command_job("echo x > f; pwd", "sub/dir", Some(order("fix")));
    let events = run(job, dirs(repo.dir.path(), &worktrees), false);
    let place = root.path().join("s1/fix/sub/dir");
    assert_eq!(output(&events).trim(), place.display().to_string());
    let Some(JobEvent::Finished {
        exit,
        change,
        patch,
        ..
    }) = events.last()
    else {
        panic!("no Finished last");
    };
    assert_eq!(exit.code, Some(0));
    let change = change.as_ref().expect("a change");
    let commit = change.commit.clone().unwrap();
    let files = git(
        repo.dir.path(),
        &["show", "--name-only", "--format=", &commit],
    );
    assert_eq!(files, "sub/dir/f");
    assert!(String::from_utf8_lossy(patch).contains("+x"));
    assert!(!place.exists() && repo.checkout_untouched());
    assert!(!repo.dir.path().join("sub/dir/f").exists());
}

#[test]
fn a_cancelled_jobs_partial_change_is_committed_on_its_branch() {
    let repo = TestRepo::new();
    let root = tempfile::tempdir().unwrap();
    let worktrees = Worktrees::new(root.path().to_path_buf(), 1 << 20);
    let script = "echo half > partial.txt; echo ready; exec sleep 60";
    let job = command_job(script, ".", Some(order("slow")));
    let events = run(job, dirs(repo.dir.path(), &worktrees), true);
    let Some(JobEvent::Finished {
        stopped, change, ..
    }) = events.last()
    else {
        panic!("no Finished last");
    };
    assert_eq!(
        stopped.as_ref().map(|s| s.cause),
        Some(StopCause::Cancelled)
    );
    let commit = change.as_ref().unwrap().commit.clone().expect("a commit");
    assert_eq!(repo.branch("aam/s1/slow"), Some(commit.clone()));
    let text = git(repo.dir.path(), &["show", &format!("{commit}:partial.txt")]);
    assert_eq!(text, "half");
    assert_eq!(repo.worktrees().len(), 1);
}

#[test]
fn a_job_whose_worktree_cannot_be_set_up_starts_nothing() {
    let plain = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let worktrees = Worktrees::new(root.path().to_path_buf(), 1 << 20);
    let job = command_job("echo ran > ran.txt", ".", Some(order("fix")));
    let events = run(job.clone(), dirs(plain.path(), &worktrees), false);
    let [JobEvent::WorktreeFailed { reason, .. }] = events.as_slice() else {
        panic!("not one WorktreeFailed");
    };
    assert_eq!(
        reason,
        &format!("not a git repository: {}", plain.path().join(".").display())
    );
    assert!(!plain.path().join("ran.txt").exists());
    let events = run(job, plain.path().to_path_buf().into(), false);
    let [JobEvent::WorktreeFailed { reason, .. }] = events.as_slice() else {
        panic!("not one WorktreeFailed");
    };
    assert!(reason.contains("no worktree root"), "{reason}");
}

#[test]
fn a_job_that_cannot_start_leaves_no_worktree_and_no_branch() {
    let repo = TestRepo::new();
    let root = tempfile::tempdir().unwrap();
    let worktrees = Worktrees::new(root.path().to_path_buf(), 1 << 20);
    let mut job = command_job("", ".", Some(order("fix")));
    job.argv = vec!["/no/such/program".into()];
    let events = run(job, dirs(repo.dir.path(), &worktrees), false);
    assert!(matches!(events.as_slice(), [JobEvent::SpawnFailed { .. }]));
    assert_eq!(repo.branch("aam/s1/fix"), None);
    assert_eq!(repo.worktrees().len(), 1);
}

#[test]
fn worktrees_left_by_a_killed_worker_are_removed_at_the_next_start() {
    let repo = TestRepo::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let crashed = Worktrees::new(root.clone(), 1 << 20);
    let tree = runtime()
        .block_on(job::set_up(&crashed, repo.dir.path(), &order("fix"), 1))
        .unwrap();
    let left = tree.path.clone();
    // A job process still working in it, as after the worker's SIGKILL.
    let mut still_running = std::process::Command::new("sleep")
        .arg("60")
        .current_dir(&tree.workdir)
        .spawn()
        .unwrap();
    // A worktree of the user's under the root is not aam's to remove.
    let mine = root.join("mine");
    git(
        repo.dir.path(),
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "mine",
            mine.to_str().unwrap(),
        ],
    );
    drop((tree, crashed));
    let restarted = Worktrees::new(root.clone(), 1 << 20);
    runtime().block_on(restarted.ready()).unwrap();
    let status = still_running.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(!left.exists() && !root.join("s1").exists());
    assert!(mine.join("a.txt").exists());
    let listed = repo.worktrees();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[1].ends_with("/root/mine"), "{listed:?}");
    assert!(repo.branch("aam/s1/fix").is_some(), "branches are kept");
}

#[test]
fn aam_gc_deletes_aams_branches_not_checked_out() {
    let repo = TestRepo::new();
    for branch in ["aam/s1/a", "aam/s1/b", "user"] {
        git(repo.dir.path(), &["branch", branch]);
    }
    let checked_out = tempfile::tempdir().unwrap();
    let wt = checked_out.path().join("wt");
    git(
        repo.dir.path(),
        &["worktree", "add", "-q", wt.to_str().unwrap(), "aam/s1/b"],
    );
    let branches: Vec<String> = ["aam/s1/a", "aam/s1/b", "user", "aam/s1/gone"]
        .map(String::from)
        .to_vec();
    let failed = leftovers::delete_branches(repo.dir.path(), &branches);
    let failed: Vec<&str> = failed.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(failed, ["aam/s1/b", "user", "aam/s1/gone"]);
    assert_eq!(repo.branch("aam/s1/a"), None);
    assert!(repo.branch("aam/s1/b").is_some() && repo.branch("user").is_some());
}
