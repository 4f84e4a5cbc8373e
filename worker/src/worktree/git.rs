//! Running git for the worker's own steps: never through a shell, with the
//! user's hooks, signing, automatic gc and the environment's `GIT_*`
//! redirections switched off, so a step does what it says whatever the
//! repository's or the worker's configuration, and its errors come back as
//! git's own words.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The author and committer of every commit the worker makes.
pub const AAM_NAME: &str = "aam";
pub const AAM_EMAIL: &str = "aam@localhost";

/// Longest piece of git's error output kept in a reason.
const MAX_MESSAGE: usize = 2048;

/// Variables that would point git at another repository, index or work
/// tree than the one named (a worker started from inside a git hook has
/// them set, for example).
const REDIRECTING_VARS: [&str; 9] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CEILING_DIRECTORIES",
];

/// `git -C DIR` with the worker's settings: no hooks (a post-checkout or
/// post-commit hook of the user's is not the worker's to run), no signing
/// prompt, no automatic gc or maintenance (it would take the repository's
/// locks while other jobs set up worktrees), C locale (errors are read),
/// no terminal prompt, stdin from /dev/null.
pub fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir);
    for setting in [
        "core.hooksPath=/dev/null",
        "commit.gpgsign=false",
        "tag.gpgsign=false",
        "gc.auto=0",
        "maintenance.auto=false",
        "core.fsmonitor=false",
    ] {
        command.args(["-c", setting]);
    }
    for var in REDIRECTING_VARS {
        command.env_remove(var);
    }
    command
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    command
}

/// A git command that failed: how, in git's words.
#[derive(Debug)]
pub struct GitError {
    /// The exit code, none when it did not run or died of a signal.
    pub code: Option<i32>,
    pub message: String,
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs a git command to its end: its stdout (trailing newline trimmed)
/// when it exits 0, git's error otherwise.
pub fn run(command: &mut Command) -> Result<String, GitError> {
    let output = output(command)?;
    if output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        return Ok(text.trim_end_matches('\n').to_string());
    }
    Err(failure(command, &output))
}

/// Runs a git command and gives back its output whatever its exit, or an
/// error when it could not run at all.
pub fn output(command: &mut Command) -> Result<Output, GitError> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| GitError {
            code: None,
            message: format!("cannot run git: {e}"),
        })
}

/// The error of a git command that exited non-zero: its stderr (else its
/// stdout), cut, and the subcommand it was.
pub fn failure(command: &Command, output: &Output) -> GitError {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    let said = said
        .lines()
        .map(|l| {
            l.trim_start_matches("fatal: ")
                .trim_start_matches("error: ")
        })
        .collect::<Vec<_>>()
        .join("; ");
    GitError {
        code: output.status.code(),
        message: format!("git {}: {}", subcommand(command), cut(&said, MAX_MESSAGE)),
    }
}

/// The git subcommand a command runs (the first argument after the
/// `-C DIR` and `-c` settings), for messages.
fn subcommand(command: &Command) -> String {
    let mut args = command.get_args().map(OsStr::to_string_lossy);
    while let Some(arg) = args.next() {
        match arg.as_ref() {
            "-C" | "-c" => {
                args.next();
            }
            other => return other.to_string(),
        }
    }
    String::new()
}

/// `text` cut to at most `max` bytes on a character boundary, with an
/// ellipsis when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The commit a revision names, or None when it names none. The revision
/// follows `--end-of-options`, so it is never read as an option.
pub fn resolve_commit(repo: &Path, revision: &str) -> Result<Option<String>, GitError> {
    let mut command = git(repo);
    command.args(["rev-parse", "--verify", "--quiet", "--end-of-options"]);
    command.arg(format!("{revision}^{{commit}}"));
    let output = output(&mut command)?;
    if output.status.success() {
        return Ok(Some(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        ));
    }
    // `--verify --quiet` exits 1 for a revision that names nothing.
    match output.status.code() {
        Some(1) => Ok(None),
        _ => Err(failure(&command, &output)),
    }
}

/// The commit a local branch points at, or None when there is no such branch.
pub fn branch_tip(repo: &Path, branch: &str) -> Result<Option<String>, GitError> {
    resolve_commit(repo, &format!("refs/heads/{branch}"))
}
