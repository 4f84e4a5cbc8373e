//! Issue 10 end to end: jobs isolated in git worktrees, through the real
//! manager, worker and `aam` binaries (and the real Claude Code CLI against
//! the stand-in model server where agents are the point): three agents
//! editing one repository at once, each on its own branch while the user's
//! checkout stays as it was; `aam diff` and `aam apply` in a fresh clone; a
//! job that changes nothing; a cancelled (or timed-out) job's partial
//! change; `base = "job:NAME"`; best of N with `verify`; a worker killed
//! mid-job and the worktree it left; `aam continue` on the branch, at the
//! same path; a workdir outside any repository; dependents' inputs; an
//! agent's default isolation; `aam gc` with `gc_branches`.
//!
//! NOT YET REGISTERED in main.rs: it is registered once the worker, manager
//! and CLI parts of issue 10 are merged (until then nothing sets up a
//! worktree and every test here fails).
//!
//! What the tests rely on (the agreed protocol and CLI): the worker takes
//! `--worktrees DIR`; `aam status --json` shows each job's `change` (the
//! protocol's `JobChange` as serde writes it, see `aam_tests::change`),
//! a variant's `variant`, and a job of variants' `variants` and `pick`;
//! `aam diff SESSION/JOB` prints the patch, `aam apply SESSION/JOB` makes
//! the branch in the current repository; commits are by `aam
//! <aam@localhost>`.

use aam_protocol::worktree::{branch_name, DiffStat, JobChange};
use aam_tests::change::{
    change_of, committed_change, job_named, mentions_diffstat, pick_of, variants_of,
};
use aam_tests::claude::processes_mentioning;
use aam_tests::git::{make_repo, repo_file, GitRepo};
use aam_tests::model_server::{Message, ModelServer, When};
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Files of the repositories the tests make: few, the tests are about
/// isolation (the benchmark makes 10,000).
const REPO_FILES: usize = 20;

/// Who the worker commits a job's change as.
const AAM_AUTHOR: &str = "aam <aam@localhost>";

/// Where the worker keeps its worktrees (`--worktrees`): in the scratch
/// directory, so a test sees (and cleans) all of them.
fn worktree_root(c: &Cluster) -> PathBuf {
    c.path("worktrees")
}

/// Starts the worker `w` with its worktrees under [`worktree_root`], and
/// `extra` flags.
fn start_worker(c: &mut Cluster, slots: u32, extra: &[&str]) {
    let root = worktree_root(c);
    let mut flags = vec!["--worktrees", root.to_str().expect("utf-8 path")];
    flags.extend_from_slice(extra);
    c.start_worker_with("w", slots, &flags);
}

/// The repository jobs name as `workdir = "repo"` (in the worker's
/// `--workdir`): [`REPO_FILES`] files in one commit on `main`.
fn make_work_repo(c: &Cluster) -> GitRepo {
    make_repo(&c.path("work").join("repo"), REPO_FILES)
}

/// A manager, the worker `w` and the repository.
fn cluster_with_repo(slots: u32) -> (Cluster, GitRepo) {
    let mut c = Cluster::with_manager();
    start_worker(&mut c, slots, &[]);
    let repo = make_work_repo(&c);
    (c, repo)
}

/// A command job `sh -c SCRIPT` in a worktree of the repository.
fn worktree_job(name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "command": ["sh", "-c", script],
        "isolation": "worktree",
        "workdir": "repo",
    })
}

/// A path with its links resolved (what git and the agents report).
fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What is in the worker's worktree root (nothing when it does not exist),
/// but the lock file by which one worker process holds it.
fn root_entries(c: &Cluster) -> Vec<PathBuf> {
    std::fs::read_dir(worktree_root(c))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| !p.ends_with(".aam-worker.lock"))
                .collect()
        })
        .unwrap_or_default()
}

/// No worktree is left: git lists only the main one and the worker's
/// root is empty. Polled, as the worker may report a job's end before it
/// has removed its worktree.
fn assert_no_worktree_left(c: &Cluster, repo: &GitRepo) {
    let gone = poll(Duration::from_secs(20), || {
        (repo.worktrees().len() == 1 && root_entries(c).is_empty()).then_some(())
    });
    assert!(
        gone.is_some(),
        "worktrees left: git lists {:?}, the worker's root holds {:?}\n{}",
        repo.worktrees(),
        root_entries(c),
        c.logs()
    );
}

/// The user's checkout is as it was: clean, on `main`, at `base`.
fn assert_checkout_untouched(repo: &GitRepo, base: &str) {
    assert_eq!(repo.status_porcelain(), "", "the user's checkout changed");
    assert_eq!(repo.current_branch(), "main");
    assert_eq!(repo.commit("HEAD"), base, "the user's branch moved");
}

/// `change`'s branch holds exactly one commit on top of its base, by aam,
/// touching exactly `files`.
fn assert_one_commit_of(repo: &GitRepo, change: &JobChange, files: &[&str]) {
    let commit = change.commit.as_deref().expect("a commit");
    assert_eq!(repo.commit(&change.branch), commit, "{change:?}");
    assert_eq!(
        repo.commits(&format!("{}..{}", change.base, change.branch)),
        [commit],
        "{change:?}"
    );
    assert_eq!(repo.commit(&format!("{commit}^")), change.base);
    assert_eq!(
        repo.changed_files(&change.base, commit),
        files,
        "{change:?}"
    );
    assert_eq!(repo.commit_field(commit, "%an <%ae>"), AAM_AUTHOR);
}

/// A manager whose agent `claude` runs the real Claude Code CLI against
/// `server`, the worker and the repository.
fn claude_cluster_with_repo(server: &ModelServer, slots: u32) -> (Cluster, GitRepo) {
    let mut c = Cluster::new();
    let agent = c.claude_agent("claude", server);
    c.set_config(&agent.toml());
    c.start_manager();
    start_worker(&mut c, slots, &[]);
    let repo = make_work_repo(&c);
    (c, repo)
}

/// Scripts the stand-in: the agent given `prompt` writes `(file,
/// content)` in its working directory with the `Write` tool, then answers
/// `answer`. `held`: its first reply stops after its text until
/// [`ModelServer::release`].
fn agent_writes(
    server: &ModelServer,
    prompt: &str,
    (file, content): (&str, &str),
    answer: &str,
    held: bool,
) {
    let mut write = Message::write_file_in_cwd(file, content);
    if held {
        write = write.hold_after(1);
    }
    server
        .once(When::prompt_contains(prompt).and(When::first_turn()), write)
        .once(
            When::prompt_contains(prompt).and(When::tool_result()),
            Message::answer(answer),
        );
}

/// `aam apply JOB` in `clone` is refused, saying why, and makes no branch
/// (the clone stays on `main`); returns what it printed.
fn assert_apply_refused(c: &Cluster, clone: &GitRepo, job: &str) -> aam_tests::CmdOutput {
    let refused = c.aam_in(&clone.path, &["apply", job]);
    assert_ne!(refused.code, 0, "applied\n{}", refused.dump());
    assert!(!refused.stderr.trim().is_empty(), "{}", refused.dump());
    assert!(clone.branches("aam/").is_empty(), "{}", refused.dump());
    assert_eq!(clone.current_branch(), "main", "{}", refused.dump());
    refused
}

/// What `aam diff SESSION/JOB` prints.
fn patch_of(c: &Cluster, session: &str, job: &str) -> String {
    c.aam(&["diff", &format!("{session}/{job}")])
        .expect_code(0)
        .stdout
}

#[test]
fn three_agents_edit_one_repository_at_once_each_on_its_own_branch() {
    let server = ModelServer::start();
    let names = ["alpha", "beta", "gamma"];
    for name in names {
        // Held: all three agents are then seen asking at once, each from
        // its own worktree.
        agent_writes(
            &server,
            &format!("Write {name}.txt"),
            (&format!("{name}.txt"), &format!("{name}\n")),
            &format!("Wrote {name}.txt.\nNothing else changed."),
            true,
        );
    }
    let (c, repo) = claude_cluster_with_repo(&server, 3);
    let base = repo.commit("HEAD");
    let jobs: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({ "name": name, "agent": "claude", "prompt": format!("Write {name}.txt"),
                    "isolation": "worktree", "workdir": "repo" })
        })
        .collect();
    let session = c.submit_json(&json!({"name": "three", "jobs": jobs}));

    let first_turns = poll(Duration::from_secs(60), || {
        let firsts: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| !r.has_tool_result())
            .collect();
        (firsts.len() == names.len()).then_some(firsts)
    })
    .unwrap_or_else(|| {
        panic!(
            "the three agents were never asking at once: {} requests\n{}",
            server.requests().len(),
            c.logs()
        )
    });
    let root = real(&worktree_root(&c));
    let mut cwds: Vec<PathBuf> = first_turns
        .iter()
        .map(|r| real(&r.working_directory().expect("the CLI names its cwd")))
        .collect();
    for cwd in &cwds {
        assert!(
            cwd.starts_with(&root),
            "an agent ran outside the worker's worktrees: {}",
            cwd.display()
        );
    }
    cwds.sort();
    cwds.dedup();
    assert_eq!(cwds.len(), 3, "agents shared a worktree: {cwds:?}");
    server.release();
    c.aam(&["wait", &session]).expect_code(0);

    let s = c.status(&session);
    for name in names {
        let job = job_named(&s, name);
        assert_eq!(job["status"], "succeeded", "{job}");
        let (change, commit) = committed_change(job);
        assert_eq!(change.branch, branch_name(&session, name), "{job}");
        assert_eq!(change.base, base, "{job}");
        assert_eq!(real(Path::new(&change.repo)), real(&repo.path), "{job}");
        assert_eq!(
            change.stat,
            DiffStat {
                files: 1,
                insertions: 1,
                deletions: 0
            },
            "{job}"
        );
        let file = format!("{name}.txt");
        assert_one_commit_of(&repo, &change, &[&file]);
        assert_eq!(repo.read_at(&commit, &file), format!("{name}\n"));
        // The message names the session, the job, the agent and the first
        // line of the agent's answer.
        let message = repo.commit_field(&commit, "%B");
        let first_line = format!("Wrote {name}.txt.");
        for part in [session.as_str(), name, "claude", &first_line] {
            assert!(message.contains(part), "no '{part}' in: {message}");
        }
        assert!(!message.contains("Nothing else changed."), "{message}");
    }
    let mut branches: Vec<String> = names.iter().map(|n| branch_name(&session, n)).collect();
    branches.sort();
    assert_eq!(repo.branches("aam/"), branches);
    assert_checkout_untouched(&repo, &base);
    assert_no_worktree_left(&c, &repo);
    assert!(server.unanswered().is_empty());
    c.assert_no_agent_left();
}

#[test]
fn diff_prints_a_patch_that_applies_in_a_fresh_clone_and_apply_makes_the_branch_there() {
    let (c, repo) = cluster_with_repo(1);
    let base = repo.commit("HEAD");
    let edited = repo_file(1);
    let session = c.submit_json(&json!({"name": "patch", "jobs": [
        worktree_job("edit", &format!("printf 'changed\\nmore\\n' > {edited} && echo new > added.txt")),
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    let (change, commit) = committed_change(job_named(&s, "edit"));
    let branch = branch_name(&session, "edit");
    assert_eq!(change.branch, branch);
    assert_eq!(
        change.stat,
        DiffStat {
            files: 2,
            insertions: 3,
            deletions: 1
        }
    );
    assert_one_commit_of(&repo, &change, &["added.txt", &edited]);
    assert_checkout_untouched(&repo, &base);

    // The patch: git format-patch of the commit, whole.
    let patch = patch_of(&c, &session, "edit");
    assert!(!change.patch_cut);
    assert_eq!(patch.len() as u64, change.patch_bytes, "{patch}");
    assert!(patch.starts_with(&format!("From {commit} ")), "{patch}");
    assert!(patch.contains("\nSubject: "), "{patch}");
    let patch_file = c.write("edit.patch", &patch);

    // Elsewhere: a fresh clone takes it, and `aam apply` makes the branch.
    let clone = repo.clone_to(&c.path("clone"));
    clone.git(&["apply", "--check", patch_file.to_str().unwrap()]);
    c.aam_in(&clone.path, &["apply", &format!("{session}/edit")])
        .expect_code(0);
    assert_eq!(
        clone.tree(&branch),
        repo.tree(&commit),
        "not the job's tree"
    );
    assert_eq!(
        clone.commits(&format!("{base}..{branch}")).len(),
        1,
        "one commit on top of the base"
    );
    assert_eq!(clone.commit_field(&branch, "%an <%ae>"), AAM_AUTHOR);
    assert_eq!(clone.status_porcelain(), "");

    // Refused on a dirty tree, even where the patch would apply (the edit
    // is to a file it does not touch): nothing changes.
    let dirty = repo.clone_to(&c.path("dirty"));
    let unrelated = repo_file(5);
    std::fs::write(dirty.path.join(&unrelated), "the user's own edit\n").unwrap();
    let refused = assert_apply_refused(&c, &dirty, &format!("{session}/edit"));
    assert_eq!(
        dirty.status_porcelain(),
        format!(" M {unrelated}\n"),
        "{}",
        refused.dump()
    );

    // Refused on a conflict: the clone is left as it was (no half-applied
    // patch, no branch, still on main). Where the clone has the change's
    // base, aam apply makes the branch there, which never conflicts; so
    // this clone's history is its own (the same files, the edited line
    // changed, the base commit gone) and the patch must go onto its HEAD.
    let conflicting = repo.clone_to(&c.path("conflicting"));
    conflicting.git(&["checkout", "--quiet", "--orphan", "own"]);
    std::fs::write(conflicting.path.join(&edited), "theirs\n").unwrap();
    let theirs = conflicting.commit_all("a history of its own, the same line changed");
    conflicting.git(&["branch", "-M", "own", "main"]);
    conflicting.git(&["remote", "remove", "origin"]);
    conflicting.git(&["reflog", "expire", "--expire=now", "--all"]);
    conflicting.git(&["gc", "--quiet", "--prune=now"]);
    assert!(
        !conflicting.has_commit(&base),
        "the clone still has the base"
    );
    let refused = assert_apply_refused(&c, &conflicting, &format!("{session}/edit"));
    assert_eq!(conflicting.commit("HEAD"), theirs);
    assert_eq!(conflicting.status_porcelain(), "", "{}", refused.dump());
    assert!(
        !conflicting.path.join(".git/rebase-apply").exists(),
        "a git am was left in progress"
    );

    // results shows the branch and the diffstat.
    let results = c.aam(&["results", &session]).expect_code(0).stdout;
    assert!(results.contains(&branch), "{results}");
    assert!(mentions_diffstat(&results, &change.stat), "{results}");
}

#[test]
fn a_job_that_changes_nothing_leaves_no_branch_and_ignored_files_are_no_change() {
    let (c, repo) = cluster_with_repo(2);
    std::fs::write(repo.path.join(".gitignore"), "build/\n").unwrap();
    let base = repo.commit_all("ignore build/");
    let session = c.submit_json(&json!({"name": "nothing", "jobs": [
        worktree_job("idle", "cat d000/f00000.txt"),
        worktree_job("ignored", "mkdir -p build && echo out > build/out.txt"),
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    for name in ["idle", "ignored"] {
        let job = job_named(&s, name);
        let change = change_of(job).unwrap_or_else(|| panic!("no change record: {job}"));
        assert_eq!(change.commit, None, "{job}");
        assert_eq!(change.stat, DiffStat::default(), "{job}");
        assert_eq!(change.base, base, "{job}");
        assert!(
            !repo.has_commit(&branch_name(&session, name)),
            "{name} left a branch"
        );
    }
    assert!(
        repo.branches("aam/").is_empty(),
        "{:?}",
        repo.branches("aam/")
    );
    assert_checkout_untouched(&repo, &base);
    assert_no_worktree_left(&c, &repo);
}

#[test]
fn a_job_in_a_subdirectory_of_the_repository_runs_in_the_same_one_of_its_worktree() {
    let (c, repo) = cluster_with_repo(1);
    let session = c.submit_json(&json!({"name": "sub", "jobs": [{
        "name": "sub",
        "command": ["sh", "-c", "pwd; echo here > here.txt"],
        "isolation": "worktree",
        "workdir": "repo/d000",
    }]}));
    c.aam(&["wait", &session]).expect_code(0);
    let (change, _) = committed_change(job_named(&c.status(&session), "sub"));
    assert_one_commit_of(&repo, &change, &["d000/here.txt"]);
    let cwd = c
        .aam(&["logs", &format!("{session}/sub")])
        .expect_code(0)
        .stdout;
    let cwd = PathBuf::from(cwd.trim());
    assert!(cwd.ends_with("d000"), "{}", cwd.display());
    assert!(
        cwd.starts_with(worktree_root(&c)) || cwd.starts_with(real(&worktree_root(&c))),
        "not in a worktree: {}",
        cwd.display()
    );
}

#[test]
fn a_cancelled_or_timed_out_jobs_partial_change_is_committed_on_its_branch() {
    let (c, repo) = cluster_with_repo(2);
    let base = repo.commit("HEAD");
    // Never opened: only the cancel, or the timeout, ends the jobs.
    let gate = c.gate("gate");
    let partial = |name: &str| {
        let mut job = worktree_job(
            name,
            &format!(
                "echo partial > {name}.txt; echo '::progress:: 50 wrote {name}.txt'; {WAIT_FOR_GATE}"
            ),
        );
        job["env"] = json!({ "GATE": gate.env() });
        job["grace"] = json!("2s");
        job
    };
    let mut timed = partial("timed");
    timed["timeout"] = json!("3s");
    let session = c.submit_json(&json!({"name": "cancel", "jobs": [partial("held"), timed]}));
    c.poll_status(&session, "the partial file written", |s| {
        job_named(s, "held")["progress"] == 50
    });
    c.aam(&["cancel", &format!("{session}/held")])
        .expect_code(0);
    let s = c.poll_status(&session, "both jobs' changes", |s| {
        [("held", "cancelled"), ("timed", "timed_out")]
            .iter()
            .all(|(name, status)| {
                let job = job_named(s, name);
                job["status"] == *status && !job["change"]["commit"].is_null()
            })
    });
    for name in ["held", "timed"] {
        let (change, commit) = committed_change(job_named(&s, name));
        assert_eq!(change.branch, branch_name(&session, name));
        let file = format!("{name}.txt");
        assert_one_commit_of(&repo, &change, &[&file]);
        assert_eq!(repo.read_at(&commit, &file), "partial\n");
    }
    assert_checkout_untouched(&repo, &base);
    assert_no_worktree_left(&c, &repo);
}

#[test]
fn a_job_based_on_a_dependency_sees_its_file_and_continues_its_line_of_history() {
    let (c, repo) = cluster_with_repo(2);
    let base = repo.commit("HEAD");
    let mut b = worktree_job("b", "test -f a.txt && echo y > b.txt");
    b["depends_on"] = json!(["a"]);
    b["base"] = json!("job:a");
    let session = c.submit_json(&json!({"name": "chain", "jobs": [
        worktree_job("a", "echo x > a.txt"),
        b,
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    let (a, a_commit) = committed_change(job_named(&s, "a"));
    let (b, b_commit) = committed_change(job_named(&s, "b"));
    assert_eq!(a.base, base);
    assert_one_commit_of(&repo, &a, &["a.txt"]);
    // b started from a's commit: its one commit sits on top of it.
    assert_eq!(b.base, a_commit, "{b:?}");
    assert_eq!(b.branch, branch_name(&session, "b"));
    assert_one_commit_of(&repo, &b, &["b.txt"]);
    let files = repo.files_at(&b_commit);
    assert!(
        files.contains(&"a.txt".to_string()) && files.contains(&"b.txt".to_string()),
        "{files:?}"
    );
    assert_eq!(
        repo.commits(&format!("{base}..{}", b.branch)),
        [b_commit, a_commit]
    );
    assert_checkout_untouched(&repo, &base);
}

#[test]
fn dependents_inputs_list_the_dependencys_branch_commit_and_diffstat() {
    let (c, repo) = cluster_with_repo(1);
    let copy = c.path("inputs-copy.json");
    let session = c.submit_json(&json!({"name": "inputs", "jobs": [
        worktree_job("a", &format!("printf 'changed\\nmore\\nand more\\n' > {}", repo_file(0))),
        { "name": "read", "depends_on": ["a"],
          "command": ["sh", "-c", "cat \"$AAM_INPUTS_MD\"; cp \"$AAM_INPUTS\" \"$COPY\""],
          "env": { "COPY": copy.to_str().unwrap() } },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    let (change, commit) = committed_change(job_named(&c.status(&session), "a"));
    assert_eq!(
        change.stat,
        DiffStat {
            files: 1,
            insertions: 3,
            deletions: 1
        }
    );
    assert_one_commit_of(&repo, &change, &[&repo_file(0)]);

    let inputs: Value = serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(inputs[0]["name"], "a", "{inputs}");
    assert_eq!(change_of(&inputs[0]), Some(change.clone()), "{inputs}");

    let markdown = c
        .aam(&["logs", &format!("{session}/read")])
        .expect_code(0)
        .stdout;
    assert!(markdown.contains(&change.branch), "{markdown}");
    assert!(markdown.contains(&commit[..7]), "{markdown}");
    assert!(mentions_diffstat(&markdown, &change.stat), "{markdown}");
}

#[test]
fn variants_with_a_verify_keep_the_one_that_passes() {
    let (c, repo) = cluster_with_repo(3);
    let session = c.submit_json(&json!({"name": "best-of-3", "jobs": [
        { "name": "pick", "workdir": "repo", "variants": 3,
          "command": ["sh", "-c", "echo \"$AAM_VARIANT\" > v"],
          "verify": ["sh", "-c", "test \"$(cat v)\" = 2"] },
        // Dependents see the winner.
        { "name": "after", "workdir": "repo", "depends_on": ["pick"], "base": "job:pick",
          "command": ["sh", "-c", "test \"$(cat v)\" = 2 && echo ok > after.txt"] },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    assert_eq!(s["status"], "succeeded", "{s}");
    let parent = job_named(&s, "pick");
    assert_eq!(parent["status"], "succeeded", "{parent}");
    assert_eq!(variants_of(parent), ["pick.1", "pick.2", "pick.3"]);
    let pick = pick_of(parent).unwrap_or_else(|| panic!("no pick: {parent}"));
    assert_eq!(pick.winner.as_deref(), Some("pick.2"), "{parent}");
    assert!(!pick.reason.is_empty(), "{parent}");

    let mut winner = None;
    for k in 1..=3u32 {
        let name = format!("pick.{k}");
        let variant = job_named(&s, &name);
        assert_eq!(variant["variant"], k, "{variant}");
        let (change, commit) = committed_change(variant);
        assert_eq!(change.branch, branch_name(&session, &name), "{variant}");
        assert_one_commit_of(&repo, &change, &["v"]);
        assert_eq!(repo.read_at(&commit, "v"), format!("{k}\n"));
        let verify = change
            .verify
            .clone()
            .unwrap_or_else(|| panic!("no verify outcome: {variant}"));
        let passes = k == 2;
        assert_eq!(verify.passed, passes, "{variant}");
        assert_eq!(
            verify.exit_code,
            Some(if passes { 0 } else { 1 }),
            "{variant}"
        );
        if passes {
            winner = Some(change);
        }
    }
    // The job's change and patch are the winner's.
    let winner = winner.unwrap();
    assert_eq!(change_of(parent), Some(winner.clone()), "{parent}");
    let patch = patch_of(&c, &session, "pick");
    assert!(!patch.is_empty());
    assert_eq!(patch, patch_of(&c, &session, "pick.2"));

    let (after, after_commit) = committed_change(job_named(&s, "after"));
    assert_eq!(after.base, winner.commit.clone().unwrap(), "{after:?}");
    assert_one_commit_of(&repo, &after, &["after.txt"]);
    assert!(repo.files_at(&after_commit).contains(&"v".to_string()));

    // status and results show each variant and which one won.
    for shown in [
        c.aam(&["status", &session]).expect_code(0).stdout,
        c.aam(&["results", &session]).expect_code(0).stdout,
    ] {
        for k in 1..=3 {
            assert!(shown.contains(&format!("pick.{k}")), "{shown}");
        }
        let lower = shown.to_lowercase();
        assert!(
            lower.contains("won") || lower.contains("winner"),
            "which variant won is not shown:\n{shown}"
        );
    }
    let results = c.aam(&["results", &session]).expect_code(0).stdout;
    assert!(results.contains(&winner.branch), "{results}");
}

#[test]
fn variants_of_which_none_passes_fail_the_job_saying_so() {
    let (c, repo) = cluster_with_repo(2);
    let session = c.submit_json(&json!({"name": "none-pass", "jobs": [
        { "name": "fix", "workdir": "repo", "variants": 2,
          "command": ["sh", "-c", "echo \"$AAM_VARIANT\" > v"],
          "verify": ["false"] },
        { "name": "later", "depends_on": ["fix"], "command": ["true"] },
    ]}));
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    let fix = job_named(&s, "fix");
    assert_eq!(fix["status"], "failed", "{fix}");
    let reason = fix["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains("variant") && reason.contains("verify"),
        "the reason does not say no variant passed its verify: {fix}"
    );
    let pick = pick_of(fix).unwrap_or_else(|| panic!("no pick: {fix}"));
    assert_eq!(pick.winner, None, "{fix}");
    assert!(!pick.reason.is_empty(), "{fix}");
    for k in 1..=2 {
        let variant = job_named(&s, &format!("fix.{k}"));
        let (change, _) = committed_change(variant);
        let verify = change.verify.expect("a verify outcome");
        assert!(!verify.passed, "{variant}");
        assert_eq!(verify.exit_code, Some(1), "{variant}");
        assert!(repo.has_commit(&change.branch));
    }
    assert_eq!(job_named(&s, "later")["status"], "skipped", "{s}");
}

#[test]
fn a_verify_that_fails_fails_a_job_that_is_not_a_variant() {
    let (c, _repo) = cluster_with_repo(2);
    let session = c.submit_json(&json!({"name": "verified", "jobs": [
        { "name": "good", "workdir": "repo", "command": ["sh", "-c", "echo x > x.txt"],
          "verify": ["sh", "-c", "test -f x.txt"] },
        { "name": "bad", "workdir": "repo", "command": ["sh", "-c", "echo x > x.txt"],
          "verify": ["sh", "-c", "exit 3"] },
    ]}));
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    let good = job_named(&s, "good");
    assert_eq!(good["status"], "succeeded", "{good}");
    let (change, _) = committed_change(good);
    assert!(change.verify.expect("a verify outcome").passed, "{good}");
    let bad = job_named(&s, "bad");
    assert_eq!(bad["status"], "failed", "{bad}");
    assert_eq!(bad["reason"], "verify failed: exit 3", "{bad}");
}

#[test]
fn a_worktree_left_by_a_killed_worker_is_removed_when_it_starts_again() {
    let mut c = Cluster::with_manager();
    start_worker(&mut c, 1, &["--label", "tier=first"]);
    let repo = make_work_repo(&c);
    let gate = c.gate("gate");
    let mut held = worktree_job(
        "held",
        &format!("echo 1 > held.txt; echo '::progress:: 50 in its worktree'; {WAIT_FOR_GATE}"),
    );
    held["env"] = json!({ "GATE": gate.env() });
    // Only the first worker can take it: the restarted one has not the
    // label, so whatever it does to the worktree is its start-up sweep.
    held["requires"] = json!({ "tier": "first" });
    let session = c.submit_json(&json!({"name": "killed", "jobs": [held]}));
    c.poll_status(&session, "the job running in its worktree", |s| {
        job_named(s, "held")["progress"] == 50
    });
    let worktrees = repo.worktrees();
    assert_eq!(worktrees.len(), 2, "{worktrees:?}");
    let leftover = worktrees[1].clone();
    assert!(
        real(&leftover).starts_with(real(&worktree_root(&c))),
        "{}",
        leftover.display()
    );
    assert!(leftover.join("held.txt").exists());

    c.workers[0].kill();
    // The job's shell outlives the worker (its own process group): let it
    // end, so what is left is the worktree alone.
    gate.open();
    let ended = poll(Duration::from_secs(20), || {
        processes_mentioning(gate.env()).is_empty().then_some(())
    });
    assert!(ended.is_some(), "the job's processes never ended");
    assert!(leftover.exists(), "removed before any worker started");

    start_worker(&mut c, 1, &[]);
    let removed = poll(Duration::from_secs(20), || {
        (!leftover.exists() && repo.worktrees().len() == 1).then_some(())
    });
    assert!(
        removed.is_some(),
        "the restarted worker left {} (git lists {:?})\n{}",
        leftover.display(),
        repo.worktrees(),
        c.logs()
    );
    assert!(root_entries(&c).is_empty(), "{:?}", root_entries(&c));
    assert_eq!(repo.status_porcelain(), "");
    // No worker may run the job any more.
    c.aam(&["cancel", &session, "--no-wait"]).expect_code(0);
}

#[test]
fn continue_runs_on_the_same_branch_at_the_same_path_and_resumes_the_conversation() {
    let server = ModelServer::start();
    for (prompt, file) in [("first edit", "one.txt"), ("second edit", "two.txt")] {
        let content = format!("{file}\n");
        agent_writes(
            &server,
            prompt,
            (file, &content),
            &format!("Wrote {file}."),
            false,
        );
    }
    let (c, repo) = claude_cluster_with_repo(&server, 1);
    let base = repo.commit("HEAD");
    let first = c.submit_json(&json!({"name": "edit", "jobs": [
        { "name": "edit", "agent": "claude", "prompt": "first edit",
          "isolation": "worktree", "workdir": "repo" },
    ]}));
    c.aam(&["wait", &first]).expect_code(0);
    let before = c.status(&first);
    let (change, one) = committed_change(job_named(&before, "edit"));
    assert_one_commit_of(&repo, &change, &["one.txt"]);
    let conversation = job_named(&before, "edit")["agent"]["session_id"].clone();
    assert!(conversation.is_string(), "{before}");
    assert_no_worktree_left(&c, &repo);

    let out = c
        .aam(&[
            "continue",
            &format!("{first}/edit"),
            "second edit",
            "--json",
        ])
        .expect_code(0)
        .json();
    let follow_up = out["session"].as_str().unwrap().to_string();
    c.aam(&["wait", &follow_up]).expect_code(0);
    let after = c.status(&follow_up);
    let resumed = &after["jobs"][0];
    assert_eq!(resumed["agent"]["session_id"], conversation, "{resumed}");
    let (next, two) = committed_change(resumed);
    // On the same branch, on top of the first commit.
    assert_eq!(next.branch, change.branch, "{resumed}");
    assert_eq!(next.base, one, "{resumed}");
    assert_eq!(repo.commit(&change.branch), two);
    assert_eq!(
        repo.commits(&format!("{base}..{}", change.branch)),
        [two.clone(), one.clone()]
    );
    assert_eq!(repo.changed_files(&one, &two), ["two.txt"]);
    assert_eq!(repo.commit_field(&two, "%an <%ae>"), AAM_AUTHOR);
    let files = repo.files_at(&two);
    assert!(
        files.contains(&"one.txt".to_string()) && files.contains(&"two.txt".to_string()),
        "{files:?}"
    );

    // At the same path, so the CLI found its conversation: the follow-up's
    // first request carries the earlier turns.
    let requests = server.requests();
    let first_request_of = |prompt: &str| {
        requests
            .iter()
            .find(|r| r.last_prompt().as_deref() == Some(prompt) && !r.has_tool_result())
            .unwrap_or_else(|| panic!("no request for {prompt}"))
    };
    let (asked, continued) = (
        first_request_of("first edit"),
        first_request_of("second edit"),
    );
    assert!(asked.working_directory().is_some());
    assert_eq!(asked.working_directory(), continued.working_directory());
    assert_eq!(continued.user_texts(), ["first edit", "second edit"]);
    assert!(
        continued
            .assistant_texts()
            .contains(&"Wrote one.txt.".to_string()),
        "{:?}",
        continued.assistant_texts()
    );
    assert_checkout_untouched(&repo, &base);
    assert_no_worktree_left(&c, &repo);
    c.assert_no_agent_left();
}

#[test]
fn a_worktree_job_outside_any_repository_fails_saying_so() {
    let mut c = Cluster::with_manager();
    start_worker(&mut c, 1, &[]);
    let plain = c.path("work").join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    assert_ne!(
        aam_tests::git::git_output(&plain, &["rev-parse", "--git-dir"]).code,
        0,
        "the scratch directory is inside a git repository: set TMPDIR elsewhere"
    );
    let session = c.submit_json(&json!({"name": "no-repo", "jobs": [
        { "name": "lost", "command": ["true"], "isolation": "worktree", "workdir": "plain" },
    ]}));
    c.aam(&["wait", &session]).expect_code(1);
    let s = c.status(&session);
    let lost = job_named(&s, "lost");
    assert_eq!(lost["status"], "failed", "{lost}");
    let reason = lost["reason"].as_str().unwrap_or_default();
    let said = |p: &Path| format!("not a git repository: {}", p.display());
    assert!(
        reason == said(&plain) || reason == said(&real(&plain)),
        "{lost}"
    );
    assert_eq!(lost["attempts"], 1, "{lost}");
    assert!(root_entries(&c).is_empty(), "{:?}", root_entries(&c));
}

#[test]
fn an_agents_default_isolation_applies_unless_a_job_says_none() {
    let mut c = Cluster::new();
    c.set_config(
        r#"
[agents.editor]
command = ["sh", "-c", "printf '%s\\n' \"$0\" > edited.txt", "{prompt}"]
isolation = "worktree"
"#,
    );
    c.start_manager();
    start_worker(&mut c, 1, &[]);
    let repo = make_work_repo(&c);
    let base = repo.commit("HEAD");
    let session = c.submit_json(&json!({"name": "defaults", "jobs": [
        { "name": "isolated", "agent": "editor", "prompt": "by default", "workdir": "repo" },
        { "name": "in-place", "agent": "editor", "prompt": "in place", "workdir": "repo",
          "isolation": "none", "depends_on": ["isolated"] },
    ]}));
    c.aam(&["wait", &session]).expect_code(0);
    let s = c.status(&session);
    let (change, commit) = committed_change(job_named(&s, "isolated"));
    assert_eq!(change.branch, branch_name(&session, "isolated"));
    assert_one_commit_of(&repo, &change, &["edited.txt"]);
    assert_eq!(repo.read_at(&commit, "edited.txt"), "by default\n");
    // The job that said none ran in the user's checkout, as asked.
    assert_eq!(change_of(job_named(&s, "in-place")), None, "{s}");
    assert_eq!(
        std::fs::read_to_string(repo.path.join("edited.txt")).unwrap(),
        "in place\n"
    );
    assert_eq!(repo.commit("HEAD"), base);
    assert_eq!(repo.branches("aam/"), [change.branch]);
}

#[test]
fn gc_removes_the_branches_of_the_sessions_it_removes_only_with_gc_branches() {
    let (mut c, repo) = cluster_with_repo(1);
    let kept = c.submit_json(&json!({"name": "kept", "jobs": [
        worktree_job("k", "echo k > k.txt"),
    ]}));
    c.aam(&["wait", &kept]).expect_code(0);
    c.aam(&["gc", "--older-than", "0s"]).expect_code(0);
    assert!(
        c.aam(&["status", &kept]).code != 0,
        "gc did not remove the session"
    );

    // The same manager with gc_branches: the next gc takes its sessions'
    // branches with them.
    if let Some(m) = &mut c.manager {
        m.stop(libc::SIGTERM, Duration::from_secs(10));
    }
    c.set_config("gc_branches = true\n");
    c.start_manager();
    let removed = c.submit_json(&json!({"name": "removed", "jobs": [
        worktree_job("r", "echo r > r.txt"),
    ]}));
    c.aam(&["wait", &removed]).expect_code(0);
    let removed_branch = branch_name(&removed, "r");
    assert!(repo.has_commit(&removed_branch));
    c.aam(&["gc", "--older-than", "0s"]).expect_code(0);
    let gone = poll(Duration::from_secs(20), || {
        (!repo.has_commit(&removed_branch)).then_some(())
    });
    assert!(
        gone.is_some(),
        "{removed_branch} outlived its session's gc\n{}",
        c.logs()
    );
    // The branch of the session removed without gc_branches stays.
    assert_eq!(repo.branches("aam/"), [branch_name(&kept, "k")]);
}
