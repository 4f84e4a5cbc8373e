//! git for the tests of worktree jobs: run git in a repository with argv
//! (asserting it succeeded), make a repository of N files and one commit,
//! and read back what the tests check (branches, commits, trees, files at a
//! commit, worktrees, a clean checkout).
//!
//! The tests' own git commands are hermetic: no `GIT_*` variable of the
//! caller (a hook's `GIT_DIR` would point them elsewhere), no system or
//! global config (a user's `commit.gpgsign` or hooks path would change what
//! they do), and an identity of their own for the commits they make. What
//! the worker and `aam apply` run is theirs: they see the caller's
//! environment as a user's git would.

use crate::{run_command, CmdOutput};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Who the tests' own commits are by.
const TEST_IDENTITY: [&str; 4] = [
    "-c",
    "user.name=aam tests",
    "-c",
    "user.email=tests@aam.invalid",
];

/// `git ARGS` in `dir`, hermetic (see the module's documentation).
pub fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(TEST_IDENTITY)
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir);
    cmd
}

/// Runs `git ARGS` in `dir` to its end, whatever its exit code.
pub fn git_output(dir: &Path, args: &[&str]) -> CmdOutput {
    run_command(git_command(dir, args), Duration::from_secs(120))
}

/// Runs `git ARGS` in `dir` and returns its stdout; panics, showing its
/// output, when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args);
    assert_eq!(
        out.code,
        0,
        "git failed in {}\n{}",
        dir.display(),
        out.dump()
    );
    out.stdout
}

/// The path of the `i`th file of a repository made by [`make_repo`]: a
/// hundred files to a directory, as in a real source tree.
pub fn repo_file(i: usize) -> String {
    format!("d{:03}/f{i:05}.txt", i / 100)
}

/// What the `i`th file of a repository made by [`make_repo`] holds.
pub fn repo_file_text(i: usize) -> String {
    format!("file {i}\n")
}

/// Makes a git repository at `path` (created) on branch `main`, holding
/// `files` files ([`repo_file`], one line each) in one commit.
pub fn make_repo(path: &Path, files: usize) -> GitRepo {
    std::fs::create_dir_all(path).expect("creating the repository's directory");
    git(path, &["init", "--quiet"]);
    for i in 0..files {
        let file = path.join(repo_file(i));
        if i % 100 == 0 {
            std::fs::create_dir_all(file.parent().expect("a directory"))
                .expect("creating a directory of the repository");
        }
        std::fs::write(&file, repo_file_text(i)).expect("writing a file of the repository");
    }
    let repo = GitRepo::at(path);
    repo.commit_all(&format!("{files} files"));
    repo
}

/// A git repository (or a worktree of one) the test reads.
#[derive(Clone, Debug)]
pub struct GitRepo {
    pub path: PathBuf,
}

impl GitRepo {
    pub fn at(path: &Path) -> GitRepo {
        GitRepo {
            path: path.to_path_buf(),
        }
    }

    /// `git ARGS` here; its stdout (panics when it fails).
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }

    /// `git ARGS` here, whatever its exit code.
    pub fn git_output(&self, args: &[&str]) -> CmdOutput {
        git_output(&self.path, args)
    }

    /// Commits everything in the checkout (`git add -A`) as the tests'
    /// identity; returns the new commit.
    pub fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "-m", message]);
        self.commit("HEAD")
    }

    /// The commit `rev` names (full hash); panics when it names none.
    pub fn commit(&self, rev: &str) -> String {
        self.git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
            .trim()
            .to_string()
    }

    /// Whether `rev` names a commit.
    pub fn has_commit(&self, rev: &str) -> bool {
        self.git_output(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .code
            == 0
    }

    /// The tree of commit `rev` (equal trees: equal contents).
    pub fn tree(&self, rev: &str) -> String {
        self.git(&["rev-parse", "--verify", &format!("{rev}^{{tree}}")])
            .trim()
            .to_string()
    }

    /// The branch checked out (`main`); panics on a detached HEAD.
    pub fn current_branch(&self) -> String {
        self.git(&["symbolic-ref", "--short", "HEAD"])
            .trim()
            .to_string()
    }

    /// Local branches whose names start with `prefix` (`aam/`), sorted.
    pub fn branches(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .git(&["for-each-ref", "--format=%(refname)", "refs/heads/"])
            .lines()
            .filter_map(|r| r.strip_prefix("refs/heads/"))
            .filter(|n| n.starts_with(prefix))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// `git status --porcelain` (untracked files included): empty when the
    /// checkout is clean.
    pub fn status_porcelain(&self) -> String {
        self.git(&["status", "--porcelain", "--untracked-files=all"])
    }

    /// The paths of every worktree of the repository, the main one first
    /// (stale ones, whose directory is gone, included until a prune).
    pub fn worktrees(&self) -> Vec<PathBuf> {
        self.git(&["worktree", "list", "--porcelain"])
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(PathBuf::from)
            .collect()
    }

    /// Every file of commit `rev`, sorted.
    pub fn files_at(&self, rev: &str) -> Vec<String> {
        self.git(&["ls-tree", "-r", "--name-only", rev])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The files that differ between two commits, sorted.
    pub fn changed_files(&self, from: &str, to: &str) -> Vec<String> {
        self.git(&["diff", "--name-only", from, to])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What `path` holds in commit `rev`.
    pub fn read_at(&self, rev: &str, path: &str) -> String {
        self.git(&["show", &format!("{rev}:{path}")])
    }

    /// The commits of `range` (`base..branch`), newest first.
    pub fn commits(&self, range: &str) -> Vec<String> {
        self.git(&["rev-list", range])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A field of commit `rev` in `git log --format` terms (`%an <%ae>`,
    /// `%B`).
    pub fn commit_field(&self, rev: &str, format: &str) -> String {
        self.git(&["log", "-1", &format!("--format={format}"), rev])
            .trim_end()
            .to_string()
    }

    /// `git diff --shortstat FROM TO`, trimmed: ` 1 file changed, 3
    /// insertions(+), 1 deletion(-)` as git words a diffstat.
    pub fn shortstat(&self, from: &str, to: &str) -> String {
        self.git(&["diff", "--shortstat", from, to])
            .trim()
            .to_string()
    }

    /// Clones this repository to `dest` (as a user would, elsewhere) with a
    /// committer identity of its own, as a user's checkout has.
    pub fn clone_to(&self, dest: &Path) -> GitRepo {
        let parent = dest.parent().expect("a clone's parent directory");
        let (from, to) = (
            self.path.to_str().expect("utf-8 path"),
            dest.to_str().expect("utf-8 path"),
        );
        git(parent, &["clone", "--quiet", from, to]);
        let clone = GitRepo::at(dest);
        clone.git(&["config", "user.name", "aam tests"]);
        clone.git(&["config", "user.email", "tests@aam.invalid"]);
        clone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_returns_stdout_and_a_failure_shows_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        assert!(git(dir.path(), &["--version"]).starts_with("git version "));
        let failed = std::panic::catch_unwind(|| git(dir.path(), &["rev-parse", "HEAD"]));
        let message = *failed
            .expect_err("git outside a repository failed")
            .downcast::<String>()
            .unwrap();
        assert!(message.contains("git failed in"), "{message}");
        assert!(message.contains("not a git repository"), "{message}");
        assert_ne!(git_output(dir.path(), &["rev-parse", "HEAD"]).code, 0);
    }

    #[test]
    fn a_made_repository_holds_its_files_in_one_commit_on_main_and_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let repo = make_repo(&dir.path().join("repo"), 250);
        assert_eq!(repo.current_branch(), "main");
        assert_eq!(repo.commits("HEAD").len(), 1);
        let files = repo.files_at("HEAD");
        assert_eq!(files.len(), 250);
        assert_eq!(files[0], "d000/f00000.txt");
        assert_eq!(files[249], repo_file(249));
        assert_eq!(repo.read_at("HEAD", &repo_file(123)), repo_file_text(123));
        assert_eq!(repo.status_porcelain(), "");
        assert_eq!(
            repo.worktrees(),
            [std::fs::canonicalize(&repo.path).unwrap()]
        );
        assert_eq!(
            repo.commit_field("HEAD", "%an <%ae>"),
            "aam tests <tests@aam.invalid>"
        );
    }

    #[test]
    fn branches_commits_worktrees_and_diffstats_read_back_what_git_did() {
        let dir = tempfile::tempdir().unwrap();
        let repo = make_repo(&dir.path().join("repo"), 3);
        let base = repo.commit("HEAD");
        let tree = dir.path().join("wt");
        repo.git(&[
            "worktree",
            "add",
            "--quiet",
            "-b",
            "aam/s1/job",
            tree.to_str().unwrap(),
        ]);
        let worktree = GitRepo::at(&tree);
        std::fs::write(tree.join(repo_file(0)), "changed\nmore\nand more\n").unwrap();
        std::fs::write(tree.join("new.txt"), "new\n").unwrap();
        assert_eq!(
            worktree.status_porcelain(),
            " M d000/f00000.txt\n?? new.txt\n"
        );
        let commit = worktree.commit_all("the job's change");

        assert_eq!(repo.branches("aam/"), ["aam/s1/job"]);
        assert_eq!(repo.branches("aam/s1/j"), ["aam/s1/job"]);
        assert_eq!(repo.branches("other/"), Vec::<String>::new());
        assert_eq!(repo.commit("aam/s1/job"), commit);
        assert!(repo.has_commit("aam/s1/job"));
        assert!(!repo.has_commit("aam/s1/none"));
        assert_eq!(
            repo.commits(&format!("{base}..aam/s1/job")),
            [commit.as_str()]
        );
        assert_eq!(
            repo.changed_files(&base, &commit),
            ["d000/f00000.txt", "new.txt"]
        );
        assert_eq!(repo.read_at(&commit, "new.txt"), "new\n");
        let shortstat = repo.shortstat(&base, &commit);
        assert_eq!(shortstat, "2 files changed, 4 insertions(+), 1 deletion(-)");
        let stat = aam_protocol::worktree::DiffStat {
            files: 2,
            insertions: 4,
            deletions: 1,
        };
        assert!(crate::change::mentions_diffstat(&shortstat, &stat));
        let real = |p: &Path| std::fs::canonicalize(p).unwrap();
        assert_eq!(repo.worktrees(), [real(&repo.path), real(&tree)]);
        // The user's checkout is untouched by the worktree's commit.
        assert_eq!(repo.current_branch(), "main");
        assert_eq!(repo.commit("HEAD"), base);
        assert_eq!(repo.status_porcelain(), "");

        let clone = repo.clone_to(&dir.path().join("clone"));
        assert_eq!(clone.tree("HEAD"), repo.tree(&base));
        assert!(clone.has_commit("origin/aam/s1/job"));
        assert!(clone.branches("aam/").is_empty(), "a clone has only main");
    }
}
