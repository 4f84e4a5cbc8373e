//! What earlier worker processes left (blocking, run off the actor's
//! thread): at start every worktree under the worker's root belongs to a
//! process that crashed or was killed (this one runs nothing yet), so the
//! processes still working in them are killed, the worktrees removed and
//! their repositories pruned. And the branches `aam gc` removes.

use super::git;
use super::setup::LOCK_REASON;
use crate::teardown::{all_pids, is_alive};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How deep under the root worktrees are looked for (`SESSION/JOB` is 2).
const MAX_DEPTH: usize = 6;
/// How long killed processes get to disappear before removal goes on.
const KILL_WAIT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

/// What a clean-up did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Processes killed because their working directory was under the root.
    pub killed: Vec<u32>,
    pub removed: Vec<PathBuf>,
    /// Repositories `git worktree prune` ran in (their git directories).
    pub pruned: Vec<PathBuf>,
    /// What could not be removed, and why.
    pub failed: Vec<(PathBuf, String)>,
}

/// Removes every worktree under `root` (the lock file and anything that is
/// not a worktree stay: a root given by mistake loses nothing else), after
/// killing the processes working in them, and prunes their repositories'
/// worktree lists; directories a removal left empty go too.
pub fn remove_leftovers(root: &Path) -> Cleanup {
    let mut cleanup = Cleanup::default();
    let mut worktrees = Vec::new();
    find_worktrees(root, 0, &mut worktrees);
    if worktrees.is_empty() {
        return cleanup;
    }
    cleanup.killed = kill_processes_in(&worktrees);
    let mut repos = BTreeSet::new();
    for worktree in worktrees {
        let common = common_git_dir(&worktree);
        match remove_leftover(&worktree, common.as_deref()) {
            Ok(()) => {
                remove_empty_parents(&worktree, root);
                cleanup.removed.push(worktree);
            }
            Err(why) => cleanup.failed.push((worktree, why)),
        }
        repos.extend(common);
    }
    for repo in repos {
        match git::run(git::git(&repo).args(["worktree", "prune"])) {
            Ok(_) => cleanup.pruned.push(repo),
            Err(e) => cleanup.failed.push((repo, e.message)),
        }
    }
    cleanup
}

/// Worktrees under `dir` that the worker made (their lock says so: see
/// `setup.rs`); links are not followed, and another worktree is logged
/// and left alone.
fn find_worktrees(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if !std::fs::symlink_metadata(path.join(".git")).is_ok_and(|m| m.is_file()) {
            if depth < MAX_DEPTH {
                find_worktrees(&path, depth + 1, found);
            }
        } else if is_aams(&path) {
            found.push(path);
        } else {
            tracing::warn!(path = %path.display(),
                "a worktree under the worker's root that is not aam's: left alone");
        }
    }
}

/// Whether a worktree is locked with aam's reason (its repository gone,
/// nothing tells, and it is left).
fn is_aams(worktree: &Path) -> bool {
    worktree_git_dir(worktree)
        .and_then(|gitdir| std::fs::read_to_string(gitdir.join("locked")).ok())
        .is_some_and(|reason| reason.trim() == LOCK_REASON)
}

/// A worktree's own git directory, from its `.git` file (`gitdir:
/// /repo/.git/worktrees/NAME`).
fn worktree_git_dir(worktree: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(worktree.join(".git")).ok()?;
    let gitdir = text.lines().next()?.strip_prefix("gitdir:")?.trim();
    // Relative with `worktree.useRelativePaths`.
    Some(worktree.join(gitdir))
}

/// The git directory of the repository a worktree belongs to (its own git
/// directory's `commondir`); None when it is gone.
pub fn common_git_dir(worktree: &Path) -> Option<PathBuf> {
    let gitdir = worktree_git_dir(worktree)?;
    let common = match std::fs::read_to_string(gitdir.join("commondir")) {
        Ok(rel) => gitdir.join(rel.trim()),
        Err(_) => gitdir.parent()?.parent()?.to_path_buf(),
    };
    let common = std::fs::canonicalize(common).ok()?;
    common.is_dir().then_some(common)
}

/// Removes one leftover worktree: through git when its repository is
/// still there (locked or dirty alike), else as a directory.
fn remove_leftover(worktree: &Path, common: Option<&Path>) -> Result<(), String> {
    if let Some(common) = common {
        let mut command = git::git(common);
        command.args(["worktree", "remove", "--force", "--force", "--"]);
        match git::run(command.arg(worktree)) {
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(worktree = %worktree.display(), "{e}; removing it as a directory")
            }
        }
    }
    match std::fs::remove_dir_all(worktree) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", worktree.display())),
    }
}

/// Clears the way for a new worktree at `path`: a worktree of aam's left
/// there (no job of this worker uses it) is removed; an empty directory
/// does not stand in git's way; anything else does, and is left.
pub fn clear_stale(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() && is_aams(path) {
        tracing::info!(path = %path.display(), "removing a worktree left at a job's path");
        return remove_leftover(path, common_git_dir(path).as_deref());
    }
    let empty = meta.is_dir() && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
    if empty {
        return Ok(());
    }
    Err(format!(
        "{} is in the way of the job's worktree (not a worktree of aam's)",
        path.display()
    ))
}

/// SIGKILLs every process (this one aside) whose working directory is in
/// one of `dirs`, and waits a little for them to go. The pids killed.
pub fn kill_processes_in(dirs: &[PathBuf]) -> Vec<u32> {
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect();
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    for pid in all_pids().into_iter().filter(|&pid| pid != me) {
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        if dirs.iter().any(|d| cwd.starts_with(d)) {
            // SAFETY: kill only sends a signal; a pid that is gone fails with ESRCH.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed.push(pid as u32);
            }
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    while killed.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    killed
}

/// Removes the directories between a removed `path` and `root` that it
/// left empty (`ROOT/s4` once `ROOT/s4/fix` is gone).
pub fn remove_empty_parents(path: &Path, root: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        // Fails, as meant, on one that is not empty.
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Deletes branches of `repo` for `aam gc` (`git branch -D`, one at a
/// time so one that fails does not hold back the others). Only aam's own
/// branches (`aam/...`) are touched; git refuses one checked out in a
/// worktree. Each branch that could not be deleted, with why.
pub fn delete_branches(repo: &Path, branches: &[String]) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    for branch in branches {
        if !branch.starts_with("aam/") {
            failed.push((branch.clone(), "not a branch of aam's".to_string()));
            continue;
        }
        if let Err(why) = super::finish::delete_branch(repo, branch) {
            failed.push((branch.clone(), why));
        }
    }
    failed
}
