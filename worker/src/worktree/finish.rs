//! The end of a worktree job (blocking git steps, run off the actor's
//! thread): everything it changed or added committed as one commit
//! (`.gitignore` respected, hooks not run), the diffstat and the patch of
//! its change against its base, then the worktree removed and, when the
//! job changed nothing, its branch deleted.

use super::git::{self, AAM_EMAIL, AAM_NAME};
use aam_protocol::worktree::DiffStat;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;

/// The start of the line that ends a patch cut at its cap.
pub const PATCH_CUT_MARKER: &str = "[aam: patch cut";

/// Commits everything in the worktree that differs from its HEAD (`git
/// add -A`, so ignored files stay out) with aam as author and committer,
/// no hooks, and `message` as written. The commit made, or None when there
/// was nothing to commit.
pub fn commit_all(worktree: &Path, message: &str) -> Result<Option<String>, String> {
    remove_stale_index_lock(worktree);
    git::run(git::git(worktree).args(["add", "-A"])).map_err(|e| e.message)?;
    let mut staged = git::git(worktree);
    staged.args(["diff", "--cached", "--quiet", "--exit-code"]);
    let output = git::output(&mut staged).map_err(|e| e.message)?;
    match output.status.code() {
        Some(0) => return Ok(None),
        Some(1) => {}
        _ => return Err(git::failure(&staged, &output).message),
    }
    let message = if message.trim().is_empty() {
        "aam job"
    } else {
        message
    };
    let mut commit = git::git(worktree);
    commit
        .args(["-c", &format!("user.name={AAM_NAME}")])
        .args(["-c", &format!("user.email={AAM_EMAIL}")])
        .args(["commit", "--quiet", "--no-verify", "--cleanup=whitespace"])
        .arg("--message")
        .arg(message)
        // The environment would win over the settings above.
        .env("GIT_AUTHOR_NAME", AAM_NAME)
        .env("GIT_AUTHOR_EMAIL", AAM_EMAIL)
        .env("GIT_COMMITTER_NAME", AAM_NAME)
        .env("GIT_COMMITTER_EMAIL", AAM_EMAIL);
    git::run(&mut commit).map_err(|e| e.message)?;
    let head = git::run(git::git(worktree).args(["rev-parse", "--verify", "HEAD"]));
    head.map(Some).map_err(|e| e.message)
}

/// A job stopped in the middle of a git command of its own leaves the
/// index locked; nothing of the job runs any more, so the lock is stale.
fn remove_stale_index_lock(worktree: &Path) {
    let gitdir = git::run(git::git(worktree).args(["rev-parse", "--absolute-git-dir"]));
    let Ok(gitdir) = gitdir else { return };
    let lock = Path::new(&gitdir).join("index.lock");
    if std::fs::remove_file(&lock).is_ok() {
        tracing::info!(lock = %lock.display(), "removed the index lock the job left");
    }
}

/// Files, insertions and deletions from `base` to `commit` (`git diff
/// --numstat`; a binary file counts as a file with no lines).
pub fn diff_stat(repo: &Path, base: &str, commit: &str) -> Result<DiffStat, String> {
    let mut command = git::git(repo);
    command.args(["diff", "--numstat", "--no-renames", base, commit, "--"]);
    let text = git::run(&mut command).map_err(|e| e.message)?;
    Ok(parse_numstat(&text))
}

/// Sums `git diff --numstat` lines (`INS\tDEL\tPATH`, `-` for binary).
pub fn parse_numstat(text: &str) -> DiffStat {
    let mut stat = DiffStat::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(3, '\t');
        let count = |field: Option<&str>| field.and_then(|f| f.parse::<u32>().ok()).unwrap_or(0);
        stat.insertions = stat.insertions.saturating_add(count(fields.next()));
        stat.deletions = stat.deletions.saturating_add(count(fields.next()));
        stat.files = stat.files.saturating_add(1);
    }
    stat
}

/// A job's patch as sent: at most its cap, and the whole size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patch {
    pub bytes: Vec<u8>,
    /// The size of the whole patch.
    pub total: u64,
    pub cut: bool,
}

/// The patch of `base..commit` (`git format-patch --stdout`, one mail per
/// commit, for `git am`), read as git writes it and kept up to `cap`
/// bytes; past the cap it is cut at a line's end and ends with a marker
/// line naming the commit and branch that hold the whole change.
pub fn patch(
    repo: &Path,
    base: &str,
    commit: &str,
    cap: usize,
    branch: &str,
) -> Result<Patch, String> {
    let mut command = git::git(repo);
    command.args(["format-patch", "--stdout", &format!("{base}..{commit}")]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("git format-patch: no pipes".to_string());
    };
    // stderr is drained apart, so git never blocks on it while we read.
    let (read, errors) = std::thread::scope(|scope| {
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut text);
            text
        });
        let read = read_capped(&mut stdout, cap);
        (read, errors.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|e| format!("git format-patch: {e}"))?;
    let (kept, total) = read.map_err(|e| format!("reading git format-patch: {e}"))?;
    if !status.success() {
        let said = String::from_utf8_lossy(&errors);
        return Err(format!("git format-patch: {}", git::cut(said.trim(), 2048)));
    }
    Ok(cut_patch(kept, total, cap, commit, branch))
}

/// Reads all of `pipe`, keeping its first `cap` bytes: those and the total.
fn read_capped(pipe: &mut impl Read, cap: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        let room = cap.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
    }
    Ok((kept, total))
}

/// The patch as sent: whole when it fits in `cap`, else cut at the last
/// line end that leaves room for the marker line, which says so.
pub fn cut_patch(mut kept: Vec<u8>, total: u64, cap: usize, commit: &str, branch: &str) -> Patch {
    if total <= cap as u64 {
        return Patch {
            bytes: kept,
            total,
            cut: false,
        };
    }
    let marker = |shown: usize| {
        format!(
            "{PATCH_CUT_MARKER}: {shown} of {total} bytes shown; the whole change is commit {commit} on branch {branch}]\n"
        )
    };
    // The marker's length with the longest count it can show.
    let room = cap.saturating_sub(marker(cap).len());
    kept.truncate(room);
    let line_end = kept.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    kept.truncate(line_end);
    let shown = kept.len();
    kept.extend_from_slice(marker(shown).as_bytes());
    Patch {
        bytes: kept,
        total,
        cut: true,
    }
}

/// Removes a job's worktree, whatever it holds (what mattered is
/// committed) and though it is locked (by the worker: `setup.rs`); its
/// branch stays.
pub fn remove_worktree(repo: &Path, worktree: &Path) -> Result<(), String> {
    let mut command = git::git(repo);
    command.args(["worktree", "remove", "--force", "--force", "--"]);
    command.arg(worktree);
    git::run(&mut command).map(drop).map_err(|e| e.message)
}

/// Deletes a local branch (`git branch -D`); git refuses one checked out
/// in a worktree.
pub fn delete_branch(repo: &Path, branch: &str) -> Result<(), String> {
    let mut command = git::git(repo);
    command.args(["branch", "--quiet", "-D", "--", branch]);
    git::run(&mut command).map(drop).map_err(|e| e.message)
}
