//! `aam apply`'s git steps against real repositories in a temporary
//! directory: the user's repository, a worker's clone of it where a job
//! commits its change (and `git format-patch` makes its patch), and a fresh
//! clone where the patch is applied.

use super::*;
use crate::exit::{code_of, BAD_INPUT};
use aam_protocol::worktree::DiffStat;
use tempfile::TempDir;

const BRANCH: &str = "aam/s1/fix";

/// `git ARGS` in `dir`, which must work; its stdout, trimmed.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository's own identity and settings, whatever the machine's are.
fn configure(dir: &Path) {
    git(dir, &["config", "user.name", "Test User"]);
    git(dir, &["config", "user.email", "test@example.invalid"]);
    git(dir, &["config", "commit.gpgsign", "false"]);
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("file written");
}

/// Commits everything in `dir` with `message`; the new commit.
fn commit_all(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A clone of `from` at `root/name`, configured.
fn clone(root: &Path, from: &Path, name: &str) -> PathBuf {
    let to = root.join(name);
    let status = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(from)
        .arg(&to)
        .status()
        .expect("git clone runs");
    assert!(status.success());
    configure(&to);
    to
}

/// The user's repository (`a.txt` holding `one`), a fresh clone of it
/// (`mine`), and a job's change made in a worker's clone: `a.txt`
/// rewritten, `b.txt` added, committed by aam on `BRANCH`, with its patch.
struct Setup {
    _root: TempDir,
    mine: PathBuf,
    change: JobChange,
    patch: Vec<u8>,
}

fn setup() -> Setup {
    let root = tempfile::tempdir().expect("temporary directory");
    let user = root.path().join("user");
    std::fs::create_dir(&user).expect("directory made");
    git(&user, &["init", "--quiet", "-b", "main"]);
    configure(&user);
    write(&user, "a.txt", "one\n");
    let base = commit_all(&user, "first");
    let worker = clone(root.path(), &user, "worker");
    git(&worker, &["checkout", "--quiet", "-b", BRANCH]);
    write(&worker, "a.txt", "one (fixed)\n");
    write(&worker, "b.txt", "new\n");
    git(&worker, &["add", "-A"]);
    git(
        &worker,
        &[
            "-c",
            "user.name=aam",
            "-c",
            "user.email=aam@localhost",
            "commit",
            "--quiet",
            "-m",
            "aam s1/fix",
        ],
    );
    let commit = git(&worker, &["rev-parse", "HEAD"]);
    let patch = git(&worker, &["format-patch", "-1", "--stdout"]) + "\n";
    let mine = clone(root.path(), &user, "mine");
    let change = JobChange {
        repo: worker.display().to_string(),
        branch: BRANCH.into(),
        base,
        commit: Some(commit),
        stat: DiffStat {
            files: 2,
            insertions: 2,
            deletions: 1,
        },
        patch_bytes: patch.len() as u64,
        patch_cut: false,
        verify: None,
    };
    Setup {
        _root: root,
        mine,
        change,
        patch: patch.into_bytes(),
    }
}

/// The refusal's message, after checking it is one (exit 2).
fn refusal(result: anyhow::Result<Applied>) -> String {
    let err = result.expect_err("refused");
    assert_eq!(code_of(&err), BAD_INPUT, "{err:#}");
    err.to_string()
}

/// What must not move when a patch is refused: the branch checked out,
/// HEAD, a clean tree, no branch of the job's name, no `git am` under way.
fn assert_untouched(repo: &Path, branch: &str, head: &str) {
    assert_eq!(
        git(repo, &["rev-parse", "--abbrev-ref", "HEAD"]),
        branch,
        "checked out"
    );
    assert_eq!(git(repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(repo, &["status", "--porcelain"]), "");
    assert_eq!(git(repo, &["branch", "--list", BRANCH]), "");
    assert!(!repo.join(".git/rebase-apply").exists(), "git am is over");
}

#[test]
fn a_patch_becomes_a_branch_on_its_base_in_a_fresh_clone() {
    let s = setup();
    let applied = apply_patch(&s.mine, &s.change, &s.patch).expect("applied");
    assert!(applied.on_base);
    assert_eq!(applied.start, s.change.base);
    assert_eq!(applied.branch, BRANCH);
    assert_eq!(applied.repo, s.mine.canonicalize().unwrap());
    assert_eq!(git(&s.mine, &["rev-parse", "--abbrev-ref", "HEAD"]), BRANCH);
    assert_eq!(git(&s.mine, &["rev-parse", "HEAD"]), applied.commit);
    assert_eq!(git(&s.mine, &["rev-parse", "HEAD^"]), s.change.base);
    assert_eq!(
        git(&s.mine, &["log", "-1", "--format=%an %s"]),
        "aam aam s1/fix"
    );
    let a = std::fs::read_to_string(s.mine.join("a.txt")).unwrap();
    assert_eq!(a, "one (fixed)\n");
    assert_eq!(
        std::fs::read_to_string(s.mine.join("b.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(git(&s.mine, &["status", "--porcelain"]), "");
}

/// `mine` moved on (`file` rewritten to `text` and committed) and the
/// job's change with a base `mine` does not have: the patch goes on HEAD.
/// That HEAD, and the change.
fn moved_on_without_base(s: &Setup, file: &str, text: &str) -> (String, JobChange) {
    write(&s.mine, file, text);
    let head = commit_all(&s.mine, "mine");
    let mut change = s.change.clone();
    change.base = "0123456789abcdef0123456789abcdef01234567".into();
    (head, change)
}

#[test]
fn without_its_base_a_patch_goes_on_head() {
    let s = setup();
    let (head, change) = moved_on_without_base(&s, "c.txt", "mine\n");
    let applied = apply_patch(&s.mine, &change, &s.patch).expect("applied");
    assert!(!applied.on_base);
    assert_eq!(applied.start, head);
    assert_eq!(git(&s.mine, &["rev-parse", "HEAD^"]), head);
    assert!(s.mine.join("c.txt").exists() && s.mine.join("b.txt").exists());
}

#[test]
fn a_conflict_is_refused_and_the_repository_left_as_it_was() {
    let s = setup();
    // On HEAD, where a.txt changed the same line.
    let (head, change) = moved_on_without_base(&s, "a.txt", "one (mine)\n");
    let message = refusal(apply_patch(&s.mine, &change, &s.patch));
    assert!(
        message.starts_with(&format!(
            "git am could not apply the patch of {BRANCH} on {}: ",
            short(&head)
        )),
        "{message}"
    );
    assert!(
        message.ends_with(
            ": CONFLICT (content): Merge conflict in a.txt; error: Failed to merge in the changes.; the repository is as it was"
        ),
        "{message}"
    );
    assert_untouched(&s.mine, "main", &head);
}

#[test]
fn after_a_conflict_a_detached_head_stays_detached() {
    let s = setup();
    let (head, change) = moved_on_without_base(&s, "a.txt", "one (mine)\n");
    git(&s.mine, &["checkout", "--quiet", "--detach"]);
    refusal(apply_patch(&s.mine, &change, &s.patch));
    assert_untouched(&s.mine, "HEAD", &head);
}

#[test]
fn a_dirty_tree_is_refused() {
    let s = setup();
    write(&s.mine, "scratch.txt", "wip\n");
    let head = git(&s.mine, &["rev-parse", "HEAD"]);
    let message = refusal(apply_patch(&s.mine, &s.change, &s.patch));
    assert!(
        message.contains("has changes (commit or stash them first):\n  ?? scratch.txt"),
        "{message}"
    );
    std::fs::remove_file(s.mine.join("scratch.txt")).unwrap();
    assert_untouched(&s.mine, "main", &head);
}

#[test]
fn a_branch_of_that_name_is_refused() {
    let s = setup();
    git(&s.mine, &["branch", BRANCH]);
    let message = refusal(apply_patch(&s.mine, &s.change, &s.patch));
    assert!(
        message.starts_with(&format!("a branch {BRANCH} exists already in ")),
        "{message}"
    );
    assert_eq!(git(&s.mine, &["rev-parse", "--abbrev-ref", "HEAD"]), "main");
}

#[test]
fn a_cut_patch_and_no_change_are_refused_before_git_runs() {
    let s = setup();
    let mut cut = s.change.clone();
    cut.patch_cut = true;
    let message = refusal(apply_patch(&s.mine, &cut, &s.patch));
    assert!(
        message.starts_with(&format!("the patch of {BRANCH} is cut (")),
        "{message}"
    );
    let mut nothing = s.change.clone();
    nothing.commit = None;
    let message = refusal(apply_patch(&s.mine, &nothing, b""));
    assert!(message.contains("changed nothing"), "{message}");
    let head = git(&s.mine, &["rev-parse", "HEAD"]);
    assert_untouched(&s.mine, "main", &head);
}

#[test]
fn outside_a_repository_is_refused() {
    let s = setup();
    let outside = tempfile::tempdir().unwrap();
    let message = refusal(apply_patch(outside.path(), &s.change, &s.patch));
    assert_eq!(
        message,
        format!("not a git repository: {}", outside.path().display())
    );
}

#[test]
fn git_s_hints_on_how_to_go_on_are_left_out() {
    let ran = Ran {
        ok: false,
        stdout:
            "Applying: x\nCONFLICT (content): Merge conflict in a.txt\nPatch failed at 0001 x\n"
                .into(),
        stderr: "error: patch failed: a.txt:1\nhint: Use 'git am --show-current-patch=diff'\n"
            .into(),
    };
    assert_eq!(
        ran.failure(),
        "CONFLICT (content): Merge conflict in a.txt; error: patch failed: a.txt:1"
    );
}
