//! Setting up a job's worktree (blocking git steps, run off the actor's
//! thread): the repository of the job's workdir and the workdir's place in
//! it, then `git worktree add` on the order's branch, new from its base or,
//! for a follow-up, the branch as it is.

use super::git::{self, branch_tip, resolve_commit, GitError};
use aam_protocol::worktree::WorktreeOrder;
use std::path::{Path, PathBuf};

/// The lock reason of every worktree the worker makes: what marks it as one.
pub const LOCK_REASON: &str = "aam job worktree";

/// The repository a workdir belongs to, and where in it the workdir is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPlace {
    /// The repository's git directory (shared by all its worktrees): what
    /// set-ups and removals take turns on.
    pub git_dir: PathBuf,
    /// The top of the working tree the workdir is in.
    pub top: PathBuf,
    /// The workdir relative to that top (empty at the top).
    pub prefix: PathBuf,
}

/// Finds the repository of `workdir` (`git rev-parse --git-common-dir
/// --show-toplevel --show-prefix`). A workdir in no repository is `not a
/// git repository: PATH`, the reason the job fails with.
pub fn find_repo(workdir: &Path) -> Result<RepoPlace, String> {
    let mut command = git::git(workdir);
    command.args(["rev-parse", "--path-format=absolute", "--git-common-dir"]);
    command.args(["--show-toplevel", "--show-prefix"]);
    let output = git::output(&mut command).map_err(|e| e.message)?;
    if !output.status.success() {
        let error = git::failure(&command, &output);
        if error.message.contains("not a git repository") {
            return Err(format!("not a git repository: {}", workdir.display()));
        }
        return Err(format!(
            "cannot use {} as a git repository: {error}",
            workdir.display()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let git_dir = lines.next().unwrap_or_default();
    let top = lines.next().unwrap_or_default();
    if git_dir.is_empty() || top.is_empty() {
        // A bare repository, or inside `.git`: no working tree to copy.
        return Err(format!("not a git repository: {}", workdir.display()));
    }
    let prefix = lines.next().unwrap_or_default().trim_end_matches('/');
    Ok(RepoPlace {
        git_dir: PathBuf::from(git_dir),
        top: PathBuf::from(top),
        prefix: PathBuf::from(prefix),
    })
}

/// The file in a repository's git directory that worker processes lock
/// while they add or remove a worktree of it.
const TURN_FILE: &str = "aam-worktrees.lock";

/// Waits for the repository's turn across processes (two workers on one
/// machine may share a repository): an exclusive `flock` on a file in its
/// git directory, held until the file is dropped. None when the file
/// cannot be made (a read-only repository: git will say what is wrong).
pub fn repo_turn(git_dir: &Path) -> Option<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(git_dir.join(TURN_FILE))
        .ok()?;
    // SAFETY: flock only locks the open file it is given; it waits (this
    // runs on a blocking thread) and is retried when a signal interrupts it.
    loop {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
            return Some(file);
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// What `add_worktree` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    /// The commit the branch stood at when the job started.
    pub base: String,
    /// The branch was made (or reset) for this job, so a job that changes
    /// nothing leaves none; false when the job continues an existing one.
    pub made_branch: bool,
}

/// Adds a worktree of `repo` at `path` on the order's branch: a new branch
/// from the order's base; the existing branch for a follow-up
/// (`reuse_branch`; made from the base if it is gone: the job it continues
/// changed nothing). A branch that exists for a first attempt is refused:
/// it is not this job's. A later attempt (a retry, or a requeue after its
/// worker was lost) starts again from the base, replacing what the earlier
/// attempt left on the branch.
pub fn add_worktree(
    repo: &Path,
    path: &Path,
    order: &WorktreeOrder,
    attempt: u32,
) -> Result<Added, String> {
    let branch = order.branch.as_str();
    check_branch_name(repo, branch)?;
    let tip = branch_tip(repo, branch).map_err(|e| e.message)?;
    let mut command = git::git(repo);
    // Locked with aam's reason from its first moment: marked as the
    // worker's (a clean-up removes nothing else), and safe from a `git
    // worktree prune` run by someone else meanwhile.
    command.args([
        "worktree",
        "add",
        "--quiet",
        "--lock",
        "--reason",
        LOCK_REASON,
    ]);
    let added = match tip {
        Some(tip) if order.reuse_branch => {
            command.arg("--").arg(path).arg(branch);
            Added {
                base: tip,
                made_branch: false,
            }
        }
        Some(tip) if attempt <= 1 => {
            return Err(format!(
                "branch {branch} exists already in {} (at {}): a worktree job makes its own branch",
                repo.display(),
                short(&tip)
            ));
        }
        Some(tip) => {
            let base = resolve_base(repo, &order.base)?;
            tracing::info!(branch, earlier = %tip, %base,
                "a new attempt starts its branch again from its base");
            command.args(["-B", branch, "--"]).arg(path).arg(&base);
            Added {
                base,
                made_branch: true,
            }
        }
        None => {
            let base = resolve_base(repo, &order.base)?;
            command.args(["-b", branch, "--"]).arg(path).arg(&base);
            Added {
                base,
                made_branch: true,
            }
        }
    };
    git::run(&mut command).map_err(|e| e.message)?;
    Ok(added)
}

/// The commit a job's base names in `repo`, or why there is none.
fn resolve_base(repo: &Path, base: &str) -> Result<String, String> {
    match resolve_commit(repo, base) {
        Ok(Some(commit)) => Ok(commit),
        Ok(None) => Err(format!(
            "base '{base}' is not a commit of {}",
            repo.display()
        )),
        Err(e) => Err(format!("base '{base}': {e}")),
    }
}

/// Refuses a branch name git would not take for a branch (or could read
/// as an option).
fn check_branch_name(repo: &Path, branch: &str) -> Result<(), String> {
    if branch.is_empty() || branch.starts_with('-') {
        return Err(format!("'{branch}' is not a branch name"));
    }
    let mut command = git::git(repo);
    command.args(["check-ref-format", "--branch", branch]);
    match git::run(&mut command) {
        Ok(_) => Ok(()),
        Err(GitError { code: Some(_), .. }) => Err(format!("'{branch}' is not a branch name")),
        Err(e) => Err(e.message),
    }
}

/// The first 12 digits of a commit, for messages.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
