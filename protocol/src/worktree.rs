//! Jobs isolated in a git worktree: what a worker is told to set up (a
//! worktree of the job's repository on its own branch), and what comes back
//! (the commit of everything the job changed, its diffstat, its patch, and
//! for a variant the result of its `verify`).

use serde::{Deserialize, Serialize};

/// Where a job runs: in the workdir as it is, or in a worktree of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Isolation {
    #[default]
    None,
    /// A git worktree of the workdir's repository, on a branch of its own.
    Worktree,
    /// A worktree, and the job (its setup and teardown too) in a container
    /// of its own, the worktree mounted at its path (`workspace.rs`).
    Container,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Worktree => "worktree",
            Isolation::Container => "container",
        }
    }

    /// Whether the job runs in a worktree of its own (a container job too).
    pub fn has_worktree(self) -> bool {
        self != Isolation::None
    }

    pub fn parse(name: &str) -> Result<Isolation, String> {
        match name {
            "none" => Ok(Isolation::None),
            "worktree" => Ok(Isolation::Worktree),
            "container" => Ok(Isolation::Container),
            other => Err(format!(
                "unknown isolation '{other}' (use none, worktree or container)"
            )),
        }
    }
}

/// The branch of a worktree job: `aam/SESSION/JOB`.
pub fn branch_name(session: &str, job: &str) -> String {
    format!("aam/{session}/{job}")
}

/// What a worker sets up for a worktree job, and how it ends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorktreeOrder {
    /// The job's branch (`aam/s4/fix`, `aam/s4/fix.2` for a variant).
    pub branch: String,
    /// What a new branch starts from: a ref or a commit of the repository
    /// (`HEAD` by default; for `base = "job:NAME"`, the commit of that
    /// dependency's change). Not used when the branch exists and is reused.
    pub base: String,
    /// The job continues this branch (a follow-up): it is checked out as
    /// it is, or, when it is gone (the earlier job changed nothing, so its
    /// branch was removed), created at `base`. Otherwise the branch is
    /// created at `base`; one of that name left by an earlier attempt of
    /// the same job (a retry, a requeue after a lost worker) is reset to it.
    pub reuse_branch: bool,
    /// Names the worktree's directory under the worker's own root
    /// (`s4/fix`): a follow-up gets its first job's, so the agent's
    /// conversation, kept under its working directory's path, is found.
    pub path_key: String,
    /// Run in the worktree after the job's command ends, before the commit
    /// (a variant's score: it passes when this exits 0).
    pub verify: Option<Vec<String>>,
    /// The commit message of the job's change, made by the manager: one
    /// line naming the job, its session and agent (`aam s4/fix (session
    /// nightly, agent claude)`). The worker appends a blank line and the
    /// first non-empty line of the agent's answer when there is one.
    pub message: String,
    /// Most bytes of patch sent back (past it the patch is cut, with a
    /// marker saying so).
    pub patch_cap: u64,
    /// The job's own workspace keys (over the repository's file) and its
    /// container, when it has any.
    pub workspace: Option<Box<crate::workspace::JobWorkspace>>,
}

/// Files, lines added and lines removed by a change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffStat {
    pub files: u32,
    pub insertions: u32,
    pub deletions: u32,
}

/// How a variant's `verify` ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    pub exit_code: Option<i32>,
    pub passed: bool,
    pub duration_ms: u64,
    /// The tail of what it printed.
    pub output_tail: String,
}

/// What a worktree job changed, as its worker committed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobChange {
    /// The repository, as a path on the worker that ran the job.
    pub repo: String,
    pub branch: String,
    /// The commit the job started from.
    pub base: String,
    /// The commit of its change; none when it changed nothing (and then
    /// its branch was removed, unless it was a follow-up's).
    pub commit: Option<String>,
    pub stat: DiffStat,
    /// Size of the whole patch, and whether what was sent is cut.
    pub patch_bytes: u64,
    pub patch_cut: bool,
    /// A variant's verify, when it has one.
    pub verify: Option<VerifyOutcome>,
}

/// A worktree job's workspace steps (`.aam/workspace.toml`), as its
/// worker ran them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSteps {
    /// How long its `setup` ran, when it has one.
    pub setup_ms: Option<u64>,
    /// How long its `teardown` ran, when it has one.
    pub teardown_ms: Option<u64>,
    /// Why the setup failed (`setup failed: exit 3 (last line)`): the
    /// attempt's reason.
    pub setup_failed: Option<String>,
}

/// A job run as N variants: the one that won, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantPick {
    /// The winning variant's job name (`fix.2`), if one passed.
    pub winner: Option<String>,
    /// Why it won, or why none did.
    pub reason: String,
}
