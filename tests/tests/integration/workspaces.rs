//! Issue 15, workspaces that start ready, end to end through the real
//! manager, worker and `aam` binaries: TCP ports reserved per job
//! (`ports = N`, `AAM_PORT` / `AAM_PORTS`, from the worker's `--ports`),
//! and a repository's `.aam/workspace.toml` (setup once per job in its
//! worktree with the copied `.env`, a failing setup, a bad file, teardown
//! after success and after a cancel, `setup_ms` / `teardown_ms`), `copy`
//! globs, and warm caches (a hit for the second job of a lock file, a miss
//! for a changed one, `aam-worker --clear-cache`).

use aam_tests::git::{make_repo, GitRepo};
use aam_tests::{poll, Cluster, WAIT_FOR_GATE};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The worker's port range in these tests (`--ports`): its own, so the
/// test checks the flag is obeyed.
const RANGE: (u16, u16) = (47100, 47199);

/// A job that binds every port in `AAM_PORTS` on loopback, says which in
/// the file `$OUT` (written whole, then renamed), and holds them until
/// its gate opens.
const HOLD_PORTS: &str = r#"
import os, socket, time
ports = [int(p) for p in os.environ["AAM_PORTS"].split(",")]
assert int(os.environ["AAM_PORT"]) == ports[0], "AAM_PORT is not the first"
held = []
for port in ports:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    held.append(s)
out = os.environ["OUT"]
with open(out + ".tmp", "w") as f:
    f.write(os.environ["AAM_PORTS"])
os.replace(out + ".tmp", out)
while not os.path.exists(os.environ["GATE"]):
    time.sleep(0.01)
"#;

#[test]
fn three_jobs_at_once_get_distinct_ports_they_each_bind() {
    let mut c = Cluster::with_manager();
    let range = format!("{}-{}", RANGE.0, RANGE.1);
    c.start_worker_with("w", 3, &["--ports", &range]);
    let gate = c.gate("gate");
    let jobs: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "command": ["python3", "-c", HOLD_PORTS],
                "ports": 2,
                "env": {
                    "GATE": gate.env(),
                    "OUT": c.path(&format!("ports-{name}")).to_str().unwrap(),
                },
            })
        })
        .collect();
    let session = c.submit_json(&json!({ "name": "ports", "jobs": jobs }));
    // All three hold their sockets at the same time: each wrote its file
    // after binding and keeps them until the gate opens.
    let held = poll(Duration::from_secs(20), || {
        let read = |name: &str| std::fs::read_to_string(c.path(&format!("ports-{name}"))).ok();
        Some([read("a")?, read("b")?, read("c")?])
    })
    .unwrap_or_else(|| panic!("the jobs never all bound their ports\n{}", c.logs()));
    let ports: Vec<u16> = held
        .iter()
        .flat_map(|list| list.split(',').map(|p| p.parse::<u16>().expect("a port")))
        .collect();
    assert_eq!(ports.len(), 6, "{held:?}");
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 6, "{held:?}");
    assert!(
        ports.iter().all(|p| (RANGE.0..=RANGE.1).contains(p)),
        "{held:?}"
    );
    gate.open();
    let done = c.poll_status(&session, "the jobs' ends", |s| s["status"] == "succeeded");
    assert_eq!(done["status"], "succeeded");
}

#[test]
fn more_than_16_ports_are_refused_at_submit_naming_job_and_field() {
    let c = Cluster::with_manager();
    let file = c.write(
        "ports.toml",
        "name = \"p\"\n[[jobs]]\nname = \"web\"\ncommand = [\"true\"]\nports = 17\n",
    );
    let out = c.aam(&["submit", file.to_str().unwrap()]).expect_code(2);
    assert!(
        out.stderr.contains("job 'web': field 'ports'") && out.stderr.contains("0 to 16"),
        "{}",
        out.dump()
    );
}

/// A manager, the worker `w` (worktrees in the scratch directory) and the
/// repository `work/repo` with `workspace` committed as its
/// `.aam/workspace.toml`, `.env` ignored, and a `.env` in the checkout.
fn cluster_with_workspace(workspace: &str) -> (Cluster, GitRepo) {
    cluster_with(workspace, ".env\n")
}

/// The same with `ignored` as the repository's `.gitignore`; the worker's
/// cache is `cache` in the scratch directory.
fn cluster_with(workspace: &str, ignored: &str) -> (Cluster, GitRepo) {
    let mut c = Cluster::with_manager();
    let root = c.path("worktrees");
    let cache = c.path("cache");
    let flags = [
        "--worktrees",
        root.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    c.start_worker_with("w", 2, &flags);
    let repo = make_repo(&c.path("work").join("repo"), 3);
    std::fs::create_dir_all(repo.path.join(".aam")).unwrap();
    std::fs::write(repo.path.join(".aam/workspace.toml"), workspace).unwrap();
    std::fs::write(repo.path.join(".gitignore"), ignored).unwrap();
    repo.commit_all("workspace file");
    std::fs::write(repo.path.join(".env"), "API_KEY=from-the-checkout\n").unwrap();
    (c, repo)
}

/// A command job `sh -c SCRIPT` in a worktree of the repository.
fn worktree_job(name: &str, script: &str, env: Value) -> Value {
    json!({
        "name": name,
        "command": ["sh", "-c", script],
        "isolation": "worktree",
        "workdir": "repo",
        "env": env,
    })
}

fn log_of(c: &Cluster, session: &str, job: &str) -> String {
    c.aam(&["logs", &format!("{session}/{job}")])
        .expect_code(0)
        .stdout
}

/// Lines of a file the steps append to (none when it is not there).
fn lines_of(c: &Cluster, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(c.path(name)).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

const STEPS: &str = r#"
setup = ["sh", "-c", "echo setup in $(basename $(pwd)) >> \"$STEPS\"; cp .env setup-saw.env; echo setting up"]
teardown = ["sh", "-c", "echo teardown >> \"$STEPS\"; echo tearing down"]
copy = [".env", "not-there.txt"]
"#;

#[test]
fn setup_runs_once_in_the_worktree_with_the_copied_env_and_teardown_after() {
    let (c, _repo) = cluster_with_workspace(STEPS);
    let steps = c.path("steps");
    let env = json!({ "STEPS": steps.to_str().unwrap() });
    let job = worktree_job("app", "cat setup-saw.env; echo job ran", env);
    let session = c.submit_json(&json!({ "name": "ws", "jobs": [job] }));
    let s = c.poll_status(&session, "the job's end", |s| s["status"] != "running");
    let job = &s["jobs"][0];
    assert_eq!(job["status"], "succeeded", "{s}\n{}", c.logs());
    // Once, at the worktree's top (`ROOT/SESSION/JOB`), then the teardown.
    assert_eq!(lines_of(&c, "steps"), ["setup in app", "teardown"]);
    let log = log_of(&c, &session, "app");
    let order = [
        "== setup ==",
        "copy: .env",
        "copy: not-there.txt: not in",
        "setting up",
        "== job ==",
        "API_KEY=from-the-checkout",
        "job ran",
        "== teardown ==",
        "tearing down",
    ];
    let mut from = 0;
    for part in order {
        let at = log[from..].find(part);
        assert!(at.is_some(), "{part:?} missing or out of order in:\n{log}");
        from += at.unwrap() + part.len();
    }
    let attempt = &job["attempt_history"][0];
    assert!(attempt["setup_ms"].is_u64(), "{attempt}");
    assert!(attempt["teardown_ms"].is_u64(), "{attempt}");
}

#[test]
fn a_failing_setup_fails_the_attempt_with_its_reason_and_counts_for_retries() {
    let workspace = r#"
setup = ["sh", "-c", "echo installing >&2; echo 'npm ERR! no lockfile' >&2; exit 3"]
"#;
    // One pipe: the order of its lines is known (two pipes interleave as
    // they are read).
    let (c, _repo) = cluster_with_workspace(workspace);
    let ran = c.path("ran");
    let script = format!("touch {}", ran.display());
    let mut job = worktree_job("app", &script, json!({}));
    job["retries"] = json!(1);
    job["retry_backoff"] = json!("10ms");
    let session = c.submit_json(&json!({ "name": "ws", "jobs": [job] }));
    let s = c.poll_status(&session, "the job's end", |s| s["status"] == "failed");
    let job = &s["jobs"][0];
    assert_eq!(
        job["reason"], "setup failed: exit 3 (npm ERR! no lockfile)",
        "{s}"
    );
    let history = job["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "one retry: {s}");
    assert!(history
        .iter()
        .all(|a| a["outcome"] == "failed" && a["setup_ms"].is_u64()));
    assert!(!ran.exists(), "the job ran after a failed setup");
    let log = log_of(&c, &session, "app");
    assert!(
        log.contains("== setup ==") && log.contains("installing"),
        "{log}"
    );
    assert!(log.contains("== setup failed: exit 3"), "{log}");
}

#[test]
fn a_bad_workspace_file_fails_the_attempt_naming_the_file_and_key() {
    let (c, _repo) = cluster_with_workspace("setup = \"npm ci\"\n");
    let job = worktree_job("app", "true", json!({}));
    let session = c.submit_json(&json!({ "name": "ws", "jobs": [job] }));
    let s = c.poll_status(&session, "the job's end", |s| s["status"] == "failed");
    let reason = s["jobs"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains(".aam/workspace.toml: key 'setup'"), "{s}");
}

#[test]
fn teardown_runs_after_a_cancel() {
    let (c, _repo) = cluster_with_workspace(STEPS);
    let steps = c.path("steps");
    // Never opened: only the cancel ends the job.
    let gate = c.gate("gate");
    let env = json!({ "STEPS": steps.to_str().unwrap(), "GATE": gate.env() });
    let script = format!("echo '::progress:: 50 holding'; {WAIT_FOR_GATE}");
    let mut job = worktree_job("held", &script, env);
    job["grace"] = json!("2s");
    let session = c.submit_json(&json!({ "name": "ws", "jobs": [job] }));
    c.poll_status(&session, "the job holding", |s| {
        s["jobs"][0]["progress"] == 50
    });
    c.aam(&["cancel", &format!("{session}/held")])
        .expect_code(0);
    let s = c.poll_status(&session, "the cancel", |s| {
        s["jobs"][0]["status"] == "cancelled"
    });
    assert_eq!(lines_of(&c, "steps"), ["setup in held", "teardown"], "{s}");
    let attempt = &s["jobs"][0]["attempt_history"][0];
    assert!(attempt["teardown_ms"].is_u64(), "{attempt}");
    assert!(log_of(&c, &session, "held").contains("== teardown =="));
}

#[test]
fn teardown_runs_after_a_job_that_could_not_start() {
    let (c, _repo) = cluster_with_workspace(STEPS);
    let steps = c.path("steps");
    let mut job = worktree_job("app", "true", json!({ "STEPS": steps.to_str().unwrap() }));
    job["command"] = json!(["/nonexistent/aam-test-program"]);
    let session = c.submit_json(&json!({ "name": "ws", "jobs": [job] }));
    let s = c.poll_status(&session, "the job's end", |s| s["status"] == "failed");
    assert_eq!(lines_of(&c, "steps"), ["setup in app", "teardown"], "{s}");
}

#[test]
fn copy_globs_bring_every_match_and_skip_ones_matching_nothing() {
    let workspace = "copy = [\"config/*.local.json\", \"**/.env\", \"*.pem\"]\n";
    let (c, repo) = cluster_with(workspace, ".env\n*.local.json\n");
    std::fs::create_dir_all(repo.path.join("config")).unwrap();
    std::fs::create_dir_all(repo.path.join("api")).unwrap();
    std::fs::write(repo.path.join("config/db.local.json"), "{\"db\": 1}\n").unwrap();
    std::fs::write(repo.path.join("config/ui.local.json"), "{\"ui\": 1}\n").unwrap();
    std::fs::write(repo.path.join("api/.env"), "API=nested\n").unwrap();
    let script = "cat config/db.local.json config/ui.local.json .env api/.env";
    let job = worktree_job("app", script, json!({}));
    let session = c.submit_json(&json!({ "name": "ws", "jobs": [job] }));
    let s = c.poll_status(&session, "the job's end", |s| s["status"] != "running");
    assert_eq!(s["jobs"][0]["status"], "succeeded", "{s}\n{}", c.logs());
    let log = log_of(&c, &session, "app");
    for line in [
        "copy: config/db.local.json\n",
        "copy: config/ui.local.json\n",
        "copy: .env\n",
        "copy: api/.env\n",
        "copy: *.pem: no match in ",
        "{\"db\": 1}\n{\"ui\": 1}\nAPI_KEY=from-the-checkout\nAPI=nested\n",
    ] {
        assert!(log.contains(line), "{line:?} missing in:\n{log}");
    }
}

/// A workspace whose setup "installs" `node_modules` (three files, and a
/// line in `$INSTALLS`, outside the worktree) unless the cache placed it.
const CACHED: &str = r#"
setup = ["sh", "-c", """
if [ "$AAM_CACHE_HIT" = 1 ]; then echo "setup: cached"; exit 0; fi
mkdir -p node_modules/left-pad
for n in 1 2 3; do echo "module $n" > node_modules/left-pad/m$n.js; done
echo install >> "$INSTALLS"
echo "setup: installed"
"""]
cache = [{ path = "node_modules", key = ["package-lock.json"] }]
"#;

/// Runs one job of the cached workspace in a session of its own, to its
/// end: its log.
fn run_cached_job(c: &Cluster, name: &str) -> String {
    let env = json!({ "INSTALLS": c.path("installs").to_str().unwrap() });
    let script = "cat node_modules/left-pad/m2.js; echo hit=$AAM_CACHE_HIT";
    let job = worktree_job(name, script, env);
    let session = c.submit_json(&json!({ "name": name, "jobs": [job] }));
    let s = c.poll_status(&session, "the job's end", |s| s["status"] != "running");
    assert_eq!(s["jobs"][0]["status"], "succeeded", "{s}\n{}", c.logs());
    log_of(c, &session, name)
}

/// The cache's entries (directories under `entries/`).
fn cache_entries(c: &Cluster) -> usize {
    std::fs::read_dir(c.path("cache").join("entries")).map_or(0, |dir| dir.count())
}

#[test]
fn the_second_job_of_a_lock_file_gets_a_cache_hit_and_installs_nothing() {
    let (c, repo) = cluster_with(CACHED, "node_modules/\n");
    std::fs::write(
        repo.path.join("package-lock.json"),
        "{\"left-pad\": \"1.0.0\"}\n",
    )
    .unwrap();
    repo.commit_all("lock file");

    let first = run_cached_job(&c, "first");
    assert!(
        first.contains("cache: node_modules: miss, saved (3 files, "),
        "{first}"
    );
    assert!(
        first.contains("setup: installed") && first.contains("hit=0"),
        "{first}"
    );
    assert_eq!(lines_of(&c, "installs").len(), 1);

    let second = run_cached_job(&c, "second");
    let order = [
        "== setup ==",
        "cache: node_modules: hit (",
        "setup: cached",
        "== job ==",
        "module 2",
        "hit=1",
    ];
    let mut from = 0;
    for part in order {
        let at = second[from..].find(part);
        assert!(
            at.is_some(),
            "{part:?} missing or out of order in:\n{second}"
        );
        from += at.unwrap() + part.len();
    }
    assert_eq!(
        lines_of(&c, "installs").len(),
        1,
        "the second job installed"
    );
    assert_eq!(cache_entries(&c), 1);

    // A changed lock file misses: installed again, saved beside the first.
    std::fs::write(
        repo.path.join("package-lock.json"),
        "{\"left-pad\": \"1.1.0\"}\n",
    )
    .unwrap();
    repo.commit_all("left-pad 1.1.0");
    let third = run_cached_job(&c, "third");
    assert!(
        third.contains("cache: node_modules: miss, saved (3 files, "),
        "{third}"
    );
    assert_eq!(lines_of(&c, "installs").len(), 2);
    assert_eq!(cache_entries(&c), 2);
    // node_modules is ignored: no job committed it.
    assert!(repo.branches("").iter().all(|b| !repo
        .files_at(b)
        .iter()
        .any(|f| f.starts_with("node_modules"))));
}

#[test]
fn clear_cache_empties_the_cache_and_says_what_it_removed() {
    let (c, repo) = cluster_with(CACHED, "node_modules/\n");
    std::fs::write(repo.path.join("package-lock.json"), "{}\n").unwrap();
    repo.commit_all("lock file");
    run_cached_job(&c, "first");
    assert_eq!(cache_entries(&c), 1);

    let cache = c.path("cache");
    let mut clear = std::process::Command::new(aam_tests::bin("aam-worker"));
    clear.args(["--clear-cache", "--cache", cache.to_str().unwrap()]);
    let out = aam_tests::run_command(clear, Duration::from_secs(30)).expect_code(0);
    let said = format!("cleared the cache {}: removed 1 entries (", cache.display());
    assert!(out.stdout.contains(&said), "{}", out.dump());
    assert_eq!(cache_entries(&c), 0);

    // So the next job of the same lock file installs again.
    let next = run_cached_job(&c, "next");
    assert!(
        next.contains("miss, saved") && next.contains("hit=0"),
        "{next}"
    );
    assert_eq!(lines_of(&c, "installs").len(), 2);
}
