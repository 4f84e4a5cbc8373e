//! A worktree job around its process: the worktree set up before it
//! starts (at `ROOT/<path_key>`, the workdir's place in the repository
//! kept), and at its end, whatever the end, its `verify`, the commit of
//! what it changed, the diffstat and patch, and the worktree removed (its
//! branch kept, unless it was made for a job that changed nothing).

use super::finish::{self, Patch};
use super::setup::{self, RepoPlace};
use super::verify::{run_verify, VerifyCommand};
use super::{leftovers, PathClaim, Worktrees};
use crate::child::{EventSink, StopOrder};
use aam_protocol::messages::{Assignment, Stopped};
use aam_protocol::model::StopCause;
use aam_protocol::worktree::{DiffStat, JobChange, VerifyOutcome, WorktreeOrder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A verify's time when the job has no timeout.
const VERIFY_TIME: Duration = Duration::from_secs(600);
/// The least time a verify gets, even after a job that used up its timeout.
const MIN_VERIFY_TIME: Duration = Duration::from_secs(60);
/// Longest first line of an agent's answer put in a commit message.
const ANSWER_LINE: usize = 200;

/// A job's worktree, set up.
pub struct JobTree {
    /// The repository's top directory on this machine.
    pub repo: PathBuf,
    /// Its git directory (set-ups and removals take turns on it).
    pub git_dir: PathBuf,
    /// The worktree.
    pub path: PathBuf,
    /// Where the job runs: the worktree at the workdir's place in the repository.
    pub workdir: PathBuf,
    pub branch: String,
    /// The commit the branch stood at when the job started.
    pub base: String,
    /// The branch was made for this job (so a job that changes nothing
    /// leaves none).
    pub made_branch: bool,
    patch_cap: usize,
    /// The repository's `.aam/workspace.toml` at the base, if it has one.
    pub workspace: Option<super::workspace::Workspace>,
    /// What its `copy` did, one log line per entry.
    pub copied: Vec<String>,
    /// Its workspace's `cache` paths, placed from the worker's cache or not.
    pub cached: super::cache::Placed,
    /// The container its steps run in (`isolation = "container"`).
    pub container: Option<crate::container::job::JobContainer>,
    /// Keeps other jobs of this worker off the path while it runs.
    claim: PathClaim,
}

impl JobTree {
    /// The worktrees it is one of.
    pub(super) fn worktrees(&self) -> &Worktrees {
        &self.claim.worktrees
    }
}

/// Sets up a job's worktree: its repository found from `workdir`, the
/// worktree added on the order's branch (that repository's turn taken).
/// Why it could not be, as the job's reason otherwise.
pub async fn set_up(
    worktrees: &Arc<Worktrees>,
    workdir: &Path,
    order: &WorktreeOrder,
    attempt: u32,
) -> Result<JobTree, String> {
    if worktrees.is_exiting() {
        return Err("the worker is exiting".to_string());
    }
    let root = worktrees.root().display().to_string();
    worktrees
        .ready()
        .await
        .map_err(|why| format!("the worktree root {root} cannot be used: {why}"))?;
    let path = worktrees.root().join(path_key(&order.path_key)?);
    if !workdir.is_dir() {
        return Err(format!(
            "workdir {} is not a directory on this worker",
            workdir.display()
        ));
    }
    let dir = workdir.to_path_buf();
    let place = blocking(move || setup::find_repo(&dir)).await?;
    let claim = worktrees.claim(&path).ok_or_else(|| {
        format!(
            "{} is the worktree of another job running on this worker",
            path.display()
        )
    })?;
    let turn = worktrees.lock_repo(&place.git_dir).await;
    let dirs = worktrees.dirs.read().await;
    let (git_dir, top) = (place.git_dir.clone(), place.top.clone());
    let (at, job_order) = (path.clone(), order.clone());
    let added = blocking(move || {
        let _turn = setup::repo_turn(&git_dir);
        add(&top, &at, &job_order, attempt)
    })
    .await?;
    drop((dirs, turn));
    let RepoPlace {
        git_dir,
        top,
        prefix,
    } = place;
    let workdir = path.join(prefix);
    // The workdir may be a directory git does not track (empty, ignored):
    // the job still starts at its place.
    if let Err(e) = std::fs::create_dir_all(&workdir) {
        tracing::warn!(workdir = %workdir.display(), "cannot make the job's workdir in its worktree: {e}");
    }
    let mut tree = JobTree {
        repo: top,
        git_dir,
        path,
        workdir,
        branch: order.branch.clone(),
        base: added.base,
        made_branch: added.made_branch,
        patch_cap: (order.patch_cap.min(worktrees.patch_limit as u64)) as usize,
        workspace: None,
        copied: Vec::new(),
        cached: Default::default(),
        container: None,
        claim,
    };
    let (top, base, at) = (tree.repo.clone(), tree.base.clone(), tree.path.clone());
    let cache = worktrees.cache().cloned();
    let own = order.workspace.clone();
    let read = blocking(move || {
        let file = super::workspace::read(&top, &base)?;
        let Some(workspace) = super::overrides::apply(file, own.as_deref()) else {
            return Ok((None, Vec::new(), Default::default()));
        };
        let copied = super::workspace::copy_files(&top, &at, &workspace.copy);
        // After the copies: a key file may be one of them.
        let cached = super::cache::place(cache.as_deref(), &top, &at, &workspace.cache);
        Ok((Some(workspace), copied, cached))
    })
    .await;
    match read {
        Ok((workspace, copied, cached)) => {
            (tree.workspace, tree.copied, tree.cached) = (workspace, copied, cached)
        }
        Err(why) => {
            // Nothing ran in it: the worktree and its new branch go.
            remove(&tree, true).await;
            return Err(why);
        }
    }
    Ok(tree)
}

/// The path key as a relative path of plain names (`s4/fix`), or why it
/// is not one: it must not leave the root.
fn path_key(key: &str) -> Result<PathBuf, String> {
    let plain = !key.is_empty()
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && Path::new(key)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(PathBuf::from(key))
    } else {
        Err(format!("'{key}' is not a worktree path"))
    }
}

/// The blocking part of a set-up: the way cleared, the parent made, the
/// worktree added.
fn add(
    repo: &Path,
    path: &Path,
    order: &WorktreeOrder,
    attempt: u32,
) -> Result<setup::Added, String> {
    leftovers::clear_stale(path)?;
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
    }
    setup::add_worktree(repo, path, order, attempt)
}

/// How a job's process ended, as its worktree's end needs to know.
pub struct ProcessEnd<'a> {
    pub assignment: &'a Assignment,
    /// The job's `AAM_RUN_ID=...` entry.
    pub marker: &'a str,
    /// When its process started.
    pub started: Instant,
    pub stopped: Option<&'a Stopped>,
    /// An agent's answer, whose first line goes into the commit message.
    pub answer: Option<&'a str>,
}

/// What a job's worktree gave at its end.
#[derive(Default)]
pub struct TreeEnd {
    pub change: Option<Box<JobChange>>,
    pub patch: Vec<u8>,
    /// A stop order that came during the verify, which it ended.
    pub stopped: Option<Stopped>,
    /// How long the workspace's teardown took, when it has one.
    pub teardown_ms: Option<u64>,
}

/// Ends a job's worktree after its process ended: its verify (unless the
/// job was cancelled or taken away), the commit, diffstat and patch of its
/// change, then the worktree removed and the branch kept, or deleted when
/// it was made for a job that changed nothing. When the worker is exiting,
/// or the commit fails, the worktree is left as it is (removed at the next
/// start) and no change is reported.
pub async fn end<S: EventSink>(
    tree: JobTree,
    process: ProcessEnd<'_>,
    sink: &S,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
) -> TreeEnd {
    let order = process.assignment.worktree.as_deref();
    let argv = order.and_then(|o| o.verify.as_deref());
    let mut ended = TreeEnd::default();
    let mut verify = None;
    if let Some(argv) = argv.filter(|_| wants_verify(process.stopped)) {
        let (outcome, stopped) = verify_job(&tree, argv, &process, sink, stop).await;
        verify = Some(outcome);
        ended.stopped = stopped;
    }
    // After the verify (which may use what the setup started), before the
    // commit (so what it deletes is not committed).
    ended.teardown_ms =
        super::steps::teardown(&tree, process.assignment, process.marker, sink).await;
    // Nothing of the job runs on while its change is committed.
    let mut tree = tree;
    if let Some(container) = tree.container.take() {
        container.remove().await;
    }
    if tree.worktrees().is_exiting() {
        return ended;
    }
    let message = commit_message(order.map_or("", |o| o.message.as_str()), process.answer);
    let recorded = {
        let (path, repo, base) = (tree.path.clone(), tree.repo.clone(), tree.base.clone());
        let (branch, cap) = (tree.branch.clone(), tree.patch_cap);
        blocking(move || record_change(&path, &repo, &base, &branch, &message, cap)).await
    };
    let recorded = match recorded {
        Ok(recorded) => recorded,
        Err(why) => {
            tracing::error!(worktree = %tree.path.display(), branch = %tree.branch,
                "could not commit the job's change, its worktree is left as it is: {why}");
            return ended;
        }
    };
    remove(&tree, recorded.commit.is_none()).await;
    ended.change = Some(Box::new(JobChange {
        repo: tree.repo.display().to_string(),
        branch: tree.branch.clone(),
        base: tree.base.clone(),
        commit: recorded.commit,
        stat: recorded.stat,
        patch_bytes: recorded.patch.total,
        patch_cut: recorded.patch.cut,
        verify,
    }));
    ended.patch = recorded.patch.bytes;
    ended
}

/// Whether a job that ended so is verified: not when it was cancelled,
/// taken away or stopped for a shutdown (nobody will use the score).
fn wants_verify(stopped: Option<&Stopped>) -> bool {
    !matches!(
        stopped.map(|s| s.cause),
        Some(StopCause::Cancelled | StopCause::Superseded | StopCause::Shutdown)
    )
}

/// Runs the order's verify at the job's place in its worktree, with the
/// job's environment, for the job's remaining time (at least a minute;
/// ten when the job has no timeout).
async fn verify_job(
    tree: &JobTree,
    argv: &[String],
    process: &ProcessEnd<'_>,
    sink: &impl EventSink,
    stop: &mut Option<oneshot::Receiver<StopOrder>>,
) -> (VerifyOutcome, Option<Stopped>) {
    let assignment = process.assignment;
    let timeout = match assignment.timeout_ms {
        Some(ms) => Duration::from_millis(ms)
            .saturating_sub(process.started.elapsed())
            .max(MIN_VERIFY_TIME),
        None => VERIFY_TIME,
    };
    let mut env = assignment.env.clone();
    env.extend(crate::child::aam_vars(assignment));
    let command = VerifyCommand {
        what: "verify",
        argv,
        container: tree.container.as_ref(),
        dir: &tree.workdir,
        env: &env,
        marker: process.marker,
        timeout,
        grace: Duration::from_millis(assignment.grace_ms),
    };
    let attempt = assignment.attempt_ref();
    let (outcome, stopped) = run_verify(&command, attempt, sink, stop).await;
    tracing::info!(exit = ?outcome.exit_code, passed = outcome.passed,
        duration_ms = outcome.duration_ms, "verify ended");
    (outcome, stopped)
}

/// The order's message and, when an agent answered, the first line of its
/// answer below it.
pub fn commit_message(message: &str, answer: Option<&str>) -> String {
    let first_line = answer
        .and_then(|a| a.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(|line| super::git::cut(line, ANSWER_LINE));
    match first_line {
        Some(line) => format!("{}\n\n{line}\n", message.trim_end()),
        None => format!("{}\n", message.trim_end()),
    }
}

/// A job's change as committed.
struct Recorded {
    /// The branch's commit, when the job changed anything.
    commit: Option<String>,
    stat: DiffStat,
    patch: Patch,
}

/// The blocking part of a job's end: everything committed, then the
/// branch's tip against its base (an agent may have committed too).
fn record_change(
    worktree: &Path,
    repo: &Path,
    base: &str,
    branch: &str,
    message: &str,
    cap: usize,
) -> Result<Recorded, String> {
    finish::commit_all(worktree, message)?;
    let tip = super::git::branch_tip(repo, branch).map_err(|e| e.message)?;
    let Some(tip) = tip.filter(|tip| tip != base) else {
        return Ok(Recorded {
            commit: None,
            stat: DiffStat::default(),
            patch: Patch::default(),
        });
    };
    // The change is committed: a diffstat or patch that fails is logged,
    // not a reason to lose the commit.
    let stat = finish::diff_stat(repo, base, &tip).unwrap_or_else(|why| {
        tracing::warn!(branch, "no diffstat: {why}");
        DiffStat::default()
    });
    let patch = finish::patch(repo, base, &tip, cap, branch).unwrap_or_else(|why| {
        tracing::warn!(branch, "no patch: {why}");
        Patch::default()
    });
    Ok(Recorded {
        commit: Some(tip),
        stat,
        patch,
    })
}

/// Removes a job's worktree (the repository's turn taken), and its branch
/// too when `unchanged` and the branch was made for it.
pub async fn remove(tree: &JobTree, unchanged: bool) {
    let worktrees = tree.worktrees();
    let _turn = worktrees.lock_repo(&tree.git_dir).await;
    let (repo, path, branch) = (tree.repo.clone(), tree.path.clone(), tree.branch.clone());
    let git_dir = tree.git_dir.clone();
    let delete_branch = unchanged && tree.made_branch;
    let removed = blocking(move || {
        let _turn = setup::repo_turn(&git_dir);
        finish::remove_worktree(&repo, &path)?;
        if delete_branch {
            finish::delete_branch(&repo, &branch)?;
        }
        Ok(())
    })
    .await;
    if let Err(why) = removed {
        return tracing::warn!(worktree = %tree.path.display(), "{why}");
    }
    // Only while no worktree is being added; else the empty directory
    // waits for the clean-up at the next start.
    if let Ok(_dirs) = worktrees.dirs.try_write() {
        let (path, root) = (tree.path.clone(), worktrees.root().to_path_buf());
        let _ = blocking(move || {
            leftovers::remove_empty_parents(&path, &root);
            Ok(())
        })
        .await;
    }
}

/// Runs a blocking step on the blocking pool.
async fn blocking<T: Send + 'static>(
    step: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(step)
        .await
        .unwrap_or_else(|e| Err(format!("a worktree step failed: {e}")))
}
