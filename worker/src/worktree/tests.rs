//! The git steps of worktree jobs against real temporary repositories:
//! set-up (the workdir's place kept, a base that is no commit, not a
//! repository, a branch that exists), the end (what is committed, the
//! diffstat, the patch and its cut, nothing changed, a follow-up's commit
//! on top), the lock per repository under concurrency, and the root.

use super::finish::{cut_patch, parse_numstat, PATCH_CUT_MARKER};
use super::job::{self, JobTree, ProcessEnd, TreeEnd};
use super::test_repo::{git, job_with, order, runtime, TestRepo};
use super::*;
use crate::child::{EventSink, JobEvent};
use aam_protocol::messages::Assignment;
use aam_protocol::worktree::{DiffStat, WorktreeOrder};

#[derive(Clone)]
struct NoEvents;

impl EventSink for NoEvents {
    async fn send(&self, _event: JobEvent) {}
}

fn assignment(order: &WorktreeOrder) -> Assignment {
    let mut job = job_with(&["true"], None, Some(order.clone()));
    job.env = vec![("AAM_VARIANT".into(), "2".into())];
    job
}

fn worktrees() -> (tempfile::TempDir, Arc<Worktrees>) {
    let root = tempfile::tempdir().unwrap();
    let worktrees = Worktrees::new(root.path().join("root"), 1 << 20);
    (root, worktrees)
}

fn set_up(
    worktrees: &Arc<Worktrees>,
    workdir: &Path,
    order: &WorktreeOrder,
) -> Result<JobTree, String> {
    runtime().block_on(job::set_up(worktrees, workdir, order, 1))
}

/// Ends a job's worktree as if its process ended on its own.
fn end(tree: JobTree, order: &WorktreeOrder, answer: Option<&str>) -> TreeEnd {
    let assignment = assignment(order);
    let process = ProcessEnd {
        assignment: &assignment,
        marker: "AAM_RUN_ID=worktree-tests",
        started: std::time::Instant::now(),
        stopped: None,
        answer,
    };
    runtime().block_on(job::end(tree, process, &NoEvents, &mut None))
}

#[test]
fn a_worktree_keeps_the_workdirs_place_and_leaves_the_checkout_alone() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let order = order("fix");
    let tree = set_up(&worktrees, &repo.dir.path().join("sub/dir"), &order).unwrap();
    assert_eq!(tree.path, worktrees.root().join("s1/fix"));
    assert_eq!(tree.workdir, tree.path.join("sub/dir"));
    assert_eq!(
        std::fs::read_to_string(tree.workdir.join("b.txt")).unwrap(),
        "b\n"
    );
    assert_eq!(tree.repo, repo.top());
    assert_eq!(tree.base, repo.head());
    assert!(tree.made_branch);
    assert_eq!(repo.branch("aam/s1/fix"), Some(repo.head()));
    assert_eq!(git(&tree.path, &["branch", "--show-current"]), "aam/s1/fix");
    assert!(repo.checkout_untouched());
    let mode = std::fs::metadata(worktrees.root())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the root is private");
    end(tree, &order, None);
}

#[test]
fn the_change_is_one_commit_by_aam_without_ignored_files() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let order = order("fix");
    let tree = set_up(&worktrees, repo.dir.path(), &order).unwrap();
    let path = tree.path.clone();
    std::fs::write(path.join("a.txt"), "one\nTWO\nthree\nfour\n").unwrap();
    std::fs::write(path.join("new.txt"), "new\n").unwrap();
    std::fs::write(path.join("debug.log"), "ignored\n").unwrap();
    let ended = end(tree, &order, Some("\n  Fixed the parser.\nMore.\n"));
    let change = ended.change.expect("a change");
    let commit = change.commit.clone().expect("a commit");
    assert_eq!(repo.branch("aam/s1/fix"), Some(commit.clone()));
    assert_eq!(change.base, repo.head());
    assert_eq!(change.repo, repo.top().display().to_string());
    let files = git(
        repo.dir.path(),
        &["show", "--name-only", "--format=", &commit],
    );
    assert_eq!(files.lines().collect::<Vec<_>>(), ["a.txt", "new.txt"]);
    let who = git(
        repo.dir.path(),
        &["show", "-s", "--format=%an <%ae>|%cn <%ce>|%P", &commit],
    );
    assert_eq!(
        who,
        format!("aam <aam@localhost>|aam <aam@localhost>|{}", repo.head())
    );
    let message = git(repo.dir.path(), &["show", "-s", "--format=%B", &commit]);
    assert_eq!(message, "aam s1/fix\n\nFixed the parser.");
    // a.txt: one line changed, one added; new.txt: one added.
    let stat = DiffStat {
        files: 2,
        insertions: 3,
        deletions: 1,
    };
    assert_eq!(change.stat, stat);
    assert!(!change.patch_cut);
    assert_eq!(change.patch_bytes, ended.patch.len() as u64);
    let patch = String::from_utf8(ended.patch).unwrap();
    assert!(patch.starts_with(&format!("From {commit}")), "{patch}");
    assert!(
        patch.contains("+new") && !patch.contains("ignored"),
        "{patch}"
    );
    assert!(!path.exists(), "the worktree is removed");
    assert!(
        !worktrees.root().join("s1").exists(),
        "and its empty session directory"
    );
    assert_eq!(repo.worktrees().len(), 1);
    assert!(repo.checkout_untouched());
}

#[test]
fn a_job_that_changed_nothing_leaves_no_commit_and_no_branch() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let order = order("noop");
    let tree = set_up(&worktrees, repo.dir.path(), &order).unwrap();
    std::fs::write(tree.path.join("only.log"), "ignored\n").unwrap();
    let ended = end(tree, &order, None);
    let change = ended.change.expect("a change record");
    assert_eq!(change.commit, None);
    assert_eq!(change.stat, DiffStat::default());
    assert!(ended.patch.is_empty());
    assert_eq!(repo.branch("aam/s1/noop"), None);
    assert_eq!(repo.worktrees().len(), 1);
}

#[test]
fn a_follow_up_continues_the_branch_at_the_same_path() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let first = order("fix");
    let tree = set_up(&worktrees, repo.dir.path(), &first).unwrap();
    let first_path = tree.path.clone();
    std::fs::write(tree.path.join("one.txt"), "1\n").unwrap();
    let c1 = end(tree, &first, None).change.unwrap().commit.unwrap();
    let follow_up = WorktreeOrder {
        reuse_branch: true,
        ..first.clone()
    };
    let tree = set_up(&worktrees, repo.dir.path(), &follow_up).unwrap();
    assert_eq!(
        tree.path, first_path,
        "the same path: the agent's conversation is found"
    );
    assert_eq!(tree.base, c1, "it starts where the first job ended");
    assert!(!tree.made_branch);
    assert!(
        tree.path.join("one.txt").exists(),
        "it sees its earlier change"
    );
    std::fs::write(tree.path.join("two.txt"), "2\n").unwrap();
    let change = end(tree, &follow_up, None).change.unwrap();
    let c2 = change.commit.unwrap();
    assert_eq!(git(repo.dir.path(), &["rev-parse", &format!("{c2}^")]), c1);
    assert_eq!(change.base, c1);
    assert_eq!(change.stat.files, 1, "its own change only");
    // A follow-up that changes nothing keeps the branch it continued.
    let tree = set_up(&worktrees, repo.dir.path(), &follow_up).unwrap();
    assert_eq!(end(tree, &follow_up, None).change.unwrap().commit, None);
    assert_eq!(repo.branch("aam/s1/fix"), Some(c2));
}

#[test]
fn a_branch_that_exists_is_refused_for_a_first_attempt_and_reset_for_a_later_one() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let order = order("fix");
    let tree = set_up(&worktrees, repo.dir.path(), &order).unwrap();
    std::fs::write(tree.path.join("x.txt"), "x\n").unwrap();
    let earlier = end(tree, &order, None).change.unwrap().commit.unwrap();
    let refused = set_up(&worktrees, repo.dir.path(), &order).err().unwrap();
    assert!(
        refused.starts_with("branch aam/s1/fix exists already in"),
        "{refused}"
    );
    assert_eq!(repo.branch("aam/s1/fix"), Some(earlier), "left as it was");
    let retry = runtime().block_on(job::set_up(&worktrees, repo.dir.path(), &order, 2));
    let tree = retry.unwrap();
    assert_eq!(tree.base, repo.head());
    assert!(
        !tree.path.join("x.txt").exists(),
        "a retry starts again from the base"
    );
    end(tree, &order, None);
}

#[test]
fn a_base_that_is_no_commit_and_a_workdir_in_no_repository_fail_saying_so() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let bad_base = WorktreeOrder {
        base: "no-such-ref".into(),
        ..order("fix")
    };
    let why = set_up(&worktrees, repo.dir.path(), &bad_base)
        .err()
        .unwrap();
    assert_eq!(
        why,
        format!(
            "base 'no-such-ref' is not a commit of {}",
            repo.top().display()
        )
    );
    assert_eq!(repo.branch("aam/s1/fix"), None);
    let plain = tempfile::tempdir().unwrap();
    let why = set_up(&worktrees, plain.path(), &order("fix"))
        .err()
        .unwrap();
    assert_eq!(
        why,
        format!("not a git repository: {}", plain.path().display())
    );
    let escape = WorktreeOrder {
        path_key: "s1/../../x".into(),
        ..order("fix")
    };
    let why = set_up(&worktrees, repo.dir.path(), &escape).err().unwrap();
    assert_eq!(why, "'s1/../../x' is not a worktree path");
    assert_eq!(repo.worktrees().len(), 1);
}

#[test]
fn worktrees_of_one_repository_set_up_and_removed_at_once_take_turns() {
    // Without the lock per repository git fails here in about one run of
    // three ("failed to read .git/worktrees/v.6/commondir").
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let orders: Vec<WorktreeOrder> = (0..16).map(|i| order(&format!("v.{i}"))).collect();
    let runtime = runtime();
    let set_ups = orders
        .iter()
        .map(|o| job::set_up(&worktrees, repo.dir.path(), o, 1));
    let trees = runtime.block_on(futures::future::join_all(set_ups));
    let trees: Vec<JobTree> = trees.into_iter().map(|t| t.unwrap()).collect();
    assert_eq!(repo.worktrees().len(), 17);
    for (i, tree) in trees.iter().enumerate() {
        std::fs::write(tree.path.join("v.txt"), format!("{i}\n")).unwrap();
    }
    let ends = trees.into_iter().zip(&orders).map(|(tree, order)| async {
        let assignment = assignment(order);
        let process = ProcessEnd {
            assignment: &assignment,
            marker: "AAM_RUN_ID=worktree-tests",
            started: std::time::Instant::now(),
            stopped: None,
            answer: None,
        };
        job::end(tree, process, &NoEvents, &mut None).await
    });
    let ends = runtime.block_on(futures::future::join_all(ends));
    for (ended, order) in ends.iter().zip(&orders) {
        let commit = ended.change.as_ref().unwrap().commit.clone();
        assert_eq!(repo.branch(&order.branch), commit);
    }
    assert_eq!(repo.worktrees().len(), 1);
}

#[test]
fn a_patch_past_its_cap_is_cut_at_a_line_with_a_marker() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let order = WorktreeOrder {
        patch_cap: 600,
        ..order("big")
    };
    let tree = set_up(&worktrees, repo.dir.path(), &order).unwrap();
    let lines: String = (0..500).map(|i| format!("line {i}\n")).collect();
    std::fs::write(tree.path.join("big.txt"), lines).unwrap();
    let ended = end(tree, &order, None);
    let change = ended.change.unwrap();
    assert!(change.patch_cut);
    assert!(change.patch_bytes > 4000, "{}", change.patch_bytes);
    assert!(ended.patch.len() <= 600, "{}", ended.patch.len());
    let patch = String::from_utf8(ended.patch).unwrap();
    let last = patch.lines().last().unwrap();
    let commit = change.commit.unwrap();
    assert!(last.starts_with(PATCH_CUT_MARKER), "{last}");
    assert!(
        last.contains(&format!("of {} bytes shown", change.patch_bytes)),
        "{last}"
    );
    assert!(
        last.contains(&commit) && last.contains("aam/s1/big"),
        "{last}"
    );
    assert!(
        patch.starts_with("From "),
        "what is shown is the patch's start"
    );
    let whole = cut_patch(b"a\nb\n".to_vec(), 4, 4, "c", "b");
    assert_eq!((whole.bytes, whole.cut), (b"a\nb\n".to_vec(), false));
}

#[test]
fn numstat_lines_are_summed_with_binary_files_counted() {
    let text = "3\t1\tsrc/a.rs\n-\t-\timage.png\n10\t0\tpath with\ttab\n";
    let stat = DiffStat {
        files: 3,
        insertions: 13,
        deletions: 1,
    };
    assert_eq!(parse_numstat(text), stat);
    assert_eq!(parse_numstat(""), DiffStat::default());
}

#[test]
fn a_verify_runs_in_the_worktree_before_the_commit() {
    let repo = TestRepo::new();
    let (_dir, worktrees) = worktrees();
    let script =
        "test -f new.txt && echo \"variant $AAM_VARIANT ok\" && exit 0; echo missing >&2; exit 3";
    let verify = Some(vec!["sh".into(), "-c".into(), script.into()]);
    let passing = WorktreeOrder {
        verify: verify.clone(),
        ..order("pass")
    };
    let tree = set_up(&worktrees, repo.dir.path(), &passing).unwrap();
    std::fs::write(tree.path.join("new.txt"), "x\n").unwrap();
    let outcome = end(tree, &passing, None).change.unwrap().verify.unwrap();
    assert!(outcome.passed, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.output_tail, "variant 2 ok\n");
    let failing = WorktreeOrder {
        verify,
        ..order("fail")
    };
    let tree = set_up(&worktrees, repo.dir.path(), &failing).unwrap();
    let change = end(tree, &failing, None).change.unwrap();
    let outcome = change.verify.unwrap();
    assert!(!outcome.passed);
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.output_tail, "missing\n");
    assert_eq!(change.commit, None, "verify left nothing to commit");
}

#[test]
fn a_root_is_used_by_one_worker_process_at_a_time() {
    let (_dir, first) = worktrees();
    runtime().block_on(first.ready()).unwrap();
    let second = Worktrees::new(first.root().to_path_buf(), 1 << 20);
    let why = runtime().block_on(second.ready()).err().unwrap();
    assert!(why.contains("in use by another worker process"), "{why}");
}

#[test]
fn default_roots_are_per_worker_name_and_never_a_path() {
    let Some(root) = default_root("w1") else {
        return;
    };
    assert!(root.ends_with("aam/worktrees/w1"), "{}", root.display());
    assert!(default_root("../x")
        .unwrap()
        .ends_with("aam/worktrees/..-x"));
    assert!(default_root("..")
        .unwrap()
        .ends_with("aam/worktrees/worker.."));
    let a = embedded_root(Path::new("/tmp/one/.aam")).unwrap();
    let b = embedded_root(Path::new("/tmp/two/.aam")).unwrap();
    assert_ne!(a, b);
    assert_eq!(a, embedded_root(Path::new("/tmp/one/.aam")).unwrap());
}

#[test]
fn a_verify_past_its_time_or_stopped_is_ended_and_fails() {
    use super::verify::{run_verify, VerifyCommand};
    use crate::child::StopOrder;
    use aam_protocol::model::StopCause;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let argv: Vec<String> = ["sh", "-c", "echo started; exec sleep 30"]
        .map(String::from)
        .to_vec();
    let command = VerifyCommand {
        what: "verify",
        argv: &argv,
        container: None,
        dir: dir.path(),
        env: &[],
        marker: "AAM_RUN_ID=verify-tests",
        timeout: Duration::from_millis(300),
        grace: Duration::from_millis(100),
    };
    let attempt = assignment(&order("v")).attempt_ref();
    let (outcome, stopped) =
        runtime().block_on(run_verify(&command, attempt, &NoEvents, &mut None));
    assert!(!outcome.passed && outcome.exit_code.is_none() && stopped.is_none());
    assert!(
        outcome.output_tail.starts_with("started\n"),
        "{:?}",
        outcome.output_tail
    );
    assert!(
        outcome.output_tail.contains("time limit"),
        "{:?}",
        outcome.output_tail
    );
    // A stop order (a cancel while it runs) ends it too, and says so.
    let (stop, stop_rx) = tokio::sync::oneshot::channel();
    let cancel = StopOrder {
        cause: StopCause::Cancelled,
        grace: Duration::from_millis(100),
    };
    stop.send(cancel).unwrap();
    let patient = VerifyCommand {
        what: "verify",
        timeout: Duration::from_secs(60),
        ..command
    };
    let mut stop = Some(stop_rx);
    let (outcome, stopped) =
        runtime().block_on(run_verify(&patient, attempt, &NoEvents, &mut stop));
    assert!(!outcome.passed);
    assert_eq!(stopped.map(|s| s.cause), Some(StopCause::Cancelled));
    let missing = ["/no/such/verify".to_string()];
    let absent = VerifyCommand {
        what: "verify",
        argv: &missing,
        container: None,
        ..patient
    };
    let (outcome, _) = runtime().block_on(run_verify(&absent, attempt, &NoEvents, &mut None));
    assert!(!outcome.passed && outcome.output_tail.contains("could not start"));
}
