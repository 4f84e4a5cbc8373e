//! Real git repositories in temporary directories for the worktree tests,
//! and the orders they are given.

use aam_protocol::messages::Assignment;
use aam_protocol::worktree::WorktreeOrder;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` (the tests' own identity, hooks off), panicking with
/// its stderr when it fails; its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A repository with one commit on `main`: `a.txt` (three lines),
/// `sub/dir/b.txt`, and a `.gitignore` of `*.log`.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let top = dir.path();
        git(top, &["init", "-q", "-b", "main"]);
        std::fs::write(top.join("a.txt"), "one\ntwo\nthree\n").unwrap();
        std::fs::create_dir_all(top.join("sub/dir")).unwrap();
        std::fs::write(top.join("sub/dir/b.txt"), "b\n").unwrap();
        std::fs::write(top.join(".gitignore"), "*.log\n").unwrap();
        git(top, &["add", "-A"]);
        git(top, &["commit", "-q", "-m", "first"]);
        TestRepo { dir }
    }

    /// The repository's top, as git names it (links resolved).
    pub fn top(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    pub fn head(&self) -> String {
        git(self.dir.path(), &["rev-parse", "HEAD"])
    }

    /// The commit a branch points at, if it exists.
    pub fn branch(&self, name: &str) -> Option<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("refs/heads/{name}"))
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The worktrees git lists, the user's checkout first.
    pub fn worktrees(&self) -> Vec<String> {
        git(self.dir.path(), &["worktree", "list", "--porcelain"])
            .lines()
            .filter_map(|l| l.strip_prefix("worktree "))
            .map(str::to_string)
            .collect()
    }

    /// Whether the user's checkout is clean and on `main`.
    pub fn checkout_untouched(&self) -> bool {
        let status = git(self.dir.path(), &["status", "--porcelain"]);
        let branch = git(self.dir.path(), &["branch", "--show-current"]);
        status.is_empty() && branch == "main"
    }
}

/// An order for a new branch `aam/s1/NAME` at `s1/NAME`, from `HEAD`.
/// A job running `argv` in `workdir` (the worker's own when None), with a
/// worktree order.
pub fn job_with(argv: &[&str], workdir: Option<&str>, order: Option<WorktreeOrder>) -> Assignment {
    Assignment {
        job: aam_protocol::JobKey {
            session: aam_protocol::SessionId(1),
            index: 0,
        },
        attempt: 1,
        session_name: "s".into(),
        job_name: "job".into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        secret_env: Vec::new(),
        workdir: workdir.map(Into::into),
        timeout_ms: Some(60_000),
        idle_timeout_ms: None,
        grace_ms: 200,
        format: None,
        worktree: order.map(Box::new),
        inputs: Vec::new(),
        ports: 0,
        input: None,
        permission_relay: false,
    }
}

pub fn order(name: &str) -> WorktreeOrder {
    WorktreeOrder {
        branch: format!("aam/s1/{name}"),
        base: "HEAD".to_string(),
        reuse_branch: false,
        path_key: format!("s1/{name}"),
        verify: None,
        message: format!("aam s1/{name}"),
        patch_cap: 1 << 20,
        workspace: None,
    }
}

/// A current-thread runtime, as an actix arbiter has.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
