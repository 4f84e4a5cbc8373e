//! `aam apply`'s git steps: a worktree job's patch made a new local branch
//! of the repository at a path (`git checkout -b`, then `git am --3way`),
//! or refused with a clear message and the repository left as it was.
//! Git runs as child processes with argv, the patch on its stdin.

use crate::exit::bad_input;
use aam_protocol::worktree::JobChange;
use anyhow::Context as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Most lines of a dirty tree's `git status` quoted in the refusal.
const DIRTY_LINES: usize = 10;

/// A patch applied as a branch.
#[derive(Debug)]
pub struct Applied {
    /// The repository's top directory.
    pub repo: PathBuf,
    pub branch: String,
    /// The commit `git am` made on the branch.
    pub commit: String,
    /// The commit the branch starts from.
    pub start: String,
    /// Whether that is the job's own base commit (else it is this
    /// repository's HEAD: the base is not here).
    pub on_base: bool,
}

/// Where HEAD was before, to go back to it when the patch does not apply.
enum Origin {
    Branch(String),
    Detached(String),
}

/// Applies `patch` (the `git format-patch` of `change`'s commit) in the
/// repository holding `dir`, as a new branch named like the job's branch,
/// and leaves that branch checked out. The branch starts from the job's
/// base commit when this repository has it (the patch then applies as it
/// was made), else from HEAD (with a three-way merge where the patch's
/// blobs are known here). Refused (exit 2), with nothing changed: a job
/// that changed nothing, a cut patch, a directory outside a repository, a
/// repository without a commit or where git knows no committer, a dirty
/// working tree, a branch of that name already there, and a patch that
/// does not apply.
pub fn apply_patch(dir: &Path, change: &JobChange, patch: &[u8]) -> anyhow::Result<Applied> {
    let branch = change.branch.as_str();
    if change.commit.is_none() || patch.is_empty() {
        return Err(bad_input(format!(
            "the job of branch {branch} changed nothing: there is no patch to apply"
        )));
    }
    if change.patch_cut {
        return Err(bad_input(format!(
            "the patch of {branch} is cut ({} bytes in all, past the worker's patch limit) and cannot be applied; the whole change is on branch {branch} in {} on the worker that ran the job",
            change.patch_bytes, change.repo
        )));
    }
    let git = Git::at(dir)?;
    git.check_ready(branch)?;
    let origin = git.origin()?;
    let (start, on_base) = match git.commit_of(&change.base) {
        Some(base) => (base, true),
        None => (git.head()?, false),
    };
    git.must("checkout", &["checkout", "--quiet", "-b", branch, &start])?;
    // Not --quiet: a conflict is named only in what git am prints.
    let am = git.run(&["am", "--3way"], Some(patch))?;
    if !am.ok {
        let restored = git.restore(&origin, branch);
        let mut message = format!(
            "git am could not apply the patch of {branch} on {}: {}",
            short(&start),
            am.failure()
        );
        match restored {
            Ok(()) => message.push_str("; the repository is as it was"),
            Err(e) => message.push_str(&format!("; putting the repository back failed: {e:#}")),
        }
        return Err(bad_input(message));
    }
    Ok(Applied {
        repo: git.top.clone(),
        branch: branch.to_string(),
        commit: git.head()?,
        start,
        on_base,
    })
}

/// The first 10 characters of a commit id, for messages.
pub fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// What a git command did.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Why it failed, in git's words: its errors, without the hints on
    /// how to go on (`git am --continue`...), as aam goes back instead.
    fn failure(&self) -> String {
        let text = format!("{}\n{}", self.stdout, self.stderr);
        let errors: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| {
                ["CONFLICT", "error:", "fatal:"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        if errors.is_empty() {
            text.trim().lines().collect::<Vec<_>>().join("; ")
        } else {
            errors.join("; ")
        }
    }
}

/// Git run in one repository.
struct Git {
    top: PathBuf,
}

impl Git {
    /// The repository holding `dir`.
    fn at(dir: &Path) -> anyhow::Result<Git> {
        let probe = Git {
            top: dir.to_path_buf(),
        };
        let top = probe.run(&["rev-parse", "--show-toplevel"], None)?;
        if !top.ok || top.stdout.trim().is_empty() {
            return Err(bad_input(format!(
                "not a git repository: {}",
                dir.display()
            )));
        }
        Ok(Git {
            top: PathBuf::from(top.stdout.trim()),
        })
    }

    /// Runs `git ARGS` in the repository, with `input` on its stdin
    /// (written from another thread, so a git that talks back while it
    /// reads never blocks on a full pipe).
    fn run(&self, args: &[&str], input: Option<&[u8]>) -> anyhow::Result<Ran> {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.top)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run git")?;
        let stdin = child.stdin.take();
        let output = std::thread::scope(|scope| {
            if let (Some(mut stdin), Some(bytes)) = (stdin, input) {
                // A git that stops reading early says why on stderr.
                scope.spawn(move || stdin.write_all(bytes));
            }
            child.wait_with_output()
        })
        .with_context(|| format!("running git {}", args.join(" ")))?;
        Ok(Ran {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs a git command that must work: its failure, in git's words, is
    /// an error naming `what`.
    fn must(&self, what: &str, args: &[&str]) -> anyhow::Result<String> {
        let ran = self.run(args, None)?;
        if !ran.ok {
            anyhow::bail!("git {what} failed: {}", ran.failure());
        }
        Ok(ran.stdout.trim().to_string())
    }

    /// Refuses a branch name git would not take, a repository without a
    /// commit, one where git knows no committer, a dirty working tree and a
    /// branch that is there already.
    fn check_ready(&self, branch: &str) -> anyhow::Result<()> {
        let top = self.top.display();
        if !self
            .run(&["check-ref-format", "--branch", branch], None)?
            .ok
        {
            return Err(bad_input(format!("'{branch}' is not a valid branch name")));
        }
        if !self
            .run(&["rev-parse", "--verify", "--quiet", "HEAD"], None)?
            .ok
        {
            return Err(bad_input(format!("{top} has no commit yet")));
        }
        if !self.run(&["var", "GIT_COMMITTER_IDENT"], None)?.ok {
            // git am would fail after the branch is made; say it first.
            return Err(bad_input(format!(
                "git has no committer identity in {top} (set user.name and user.email with git config): git am needs one"
            )));
        }
        let status = self.must("status", &["status", "--porcelain"])?;
        if !status.is_empty() {
            let lines: Vec<&str> = status.lines().take(DIRTY_LINES).collect();
            return Err(bad_input(format!(
                "the working tree of {top} has changes (commit or stash them first):\n  {}",
                lines.join("\n  ")
            )));
        }
        let exists = self.run(
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
            None,
        )?;
        if exists.ok {
            return Err(bad_input(format!(
                "a branch {branch} exists already in {top} (remove it with `git branch -D {branch}` to apply again)"
            )));
        }
        Ok(())
    }

    /// Where HEAD is: on a branch, or detached at a commit.
    fn origin(&self) -> anyhow::Result<Origin> {
        let branch = self.run(&["symbolic-ref", "--quiet", "--short", "HEAD"], None)?;
        Ok(match branch.ok {
            true => Origin::Branch(branch.stdout.trim().to_string()),
            false => Origin::Detached(self.head()?),
        })
    }

    fn head(&self) -> anyhow::Result<String> {
        self.must("rev-parse", &["rev-parse", "--verify", "HEAD"])
    }

    /// The commit `id` names in this repository, if it is here. Only a
    /// hexadecimal id is looked up (the worker sends a commit id; anything
    /// else is not one, and never reaches git where it could read as an
    /// option).
    fn commit_of(&self, id: &str) -> Option<String> {
        let hex = (4..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return None;
        }
        let spec = format!("{id}^{{commit}}");
        let ran = self
            .run(&["rev-parse", "--verify", "--quiet", &spec], None)
            .ok()?;
        ran.ok.then(|| ran.stdout.trim().to_string())
    }

    /// After a failed `git am`: aborts it, goes back to where HEAD was and
    /// removes the new branch.
    fn restore(&self, origin: &Origin, branch: &str) -> anyhow::Result<()> {
        // Nothing to abort when `git am` refused before starting.
        let _ = self.run(&["am", "--abort"], None)?;
        match origin {
            Origin::Branch(name) => self.must("checkout", &["checkout", "--quiet", name])?,
            Origin::Detached(commit) => {
                self.must("checkout", &["checkout", "--quiet", "--detach", commit])?
            }
        };
        self.must("branch", &["branch", "--quiet", "-D", branch])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
