//! Time a worktree adds to a job (`cargo bench -p aam-worker --bench
//! worktree_job`): a repository of 10,000 small files in one commit is
//! made in a temporary directory, then the same job, `sh -c 'echo x > f'`,
//! runs through `run_job` again and again, in turn without isolation (in
//! the checkout) and with a worktree order (a worktree set up, the job, its
//! commit, diffstat and patch, the worktree removed). Printed: the median
//! wall time per job each way and the difference; then the worktree's two
//! halves apart (set-up; commit to removal), called directly.

use aam_protocol::messages::Assignment;
use aam_protocol::worktree::WorktreeOrder;
use aam_worker::child::{run_job, EventSink, JobDirs, JobEvent};
use aam_worker::worktree::job::{self, ProcessEnd};
use aam_worker::worktree::Worktrees;
use std::cell::Cell;
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Files in the repository: 100 directories of 100.
const FILES: usize = 10_000;
/// Jobs run each way.
const JOBS: usize = 15;

/// Counts the worktree jobs whose change was committed (a sanity check).
#[derive(Clone, Default)]
struct Committed(Rc<Cell<usize>>);

impl EventSink for Committed {
    async fn send(&self, event: JobEvent) {
        if let JobEvent::Finished {
            change: Some(change),
            ..
        } = event
        {
            if change.commit.is_some() {
                self.0.set(self.0.get() + 1);
            }
        }
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let repo = dir.path().join("repo");
    let made = Instant::now();
    make_repo(&repo);
    println!(
        "worktree jobs: a repository of {FILES} files (made in {:.1} s), `sh -c 'echo x > f'`, {JOBS} jobs each way",
        made.elapsed().as_secs_f64()
    );
    let worktrees = Worktrees::new(dir.path().join("worktrees"), 8 << 20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    local
        .block_on(&runtime, worktrees.ready())
        .expect("the worktree root");
    let committed = Committed::default();
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    // Alternate the two kinds so drift on a shared machine hits both alike.
    for round in 0..JOBS * 2 {
        let isolated = round % 2 == 1;
        let order = isolated.then(|| order(&format!("run{round}")));
        let dirs = JobDirs {
            base: repo.clone(),
            worktrees: Some(worktrees.clone()),
            ports: aam_worker::ports::PortPool::new(aam_worker::ports::DEFAULT_RANGE),
            containers: None,
            run_ids: aam_worker::orphans::RunIds::new("bench"),
        };
        let (_stop, stop_rx) = tokio::sync::oneshot::channel();
        let started = Instant::now();
        let job = run_job(assignment(round, order), dirs, committed.clone(), stop_rx);
        local.block_on(&runtime, job);
        times[isolated as usize].push(started.elapsed());
    }
    assert_eq!(
        committed.0.get(),
        JOBS,
        "every worktree job committed its change"
    );
    let (plain, isolated) = (median(&mut times[0]), median(&mut times[1]));
    println!("  no isolation: {:>8.1} ms per job (median)", ms(plain));
    println!("  worktree:     {:>8.1} ms per job (median)", ms(isolated));
    println!(
        "  added by the worktree: {:.1} ms per job",
        ms(isolated.saturating_sub(plain))
    );
    halves(&worktrees, &repo, &runtime, &local);
}

/// The worktree's set-up and its end (commit, diffstat, patch, removal)
/// timed apart, called directly around a file written as the job would.
fn halves(
    worktrees: &Arc<Worktrees>,
    repo: &Path,
    runtime: &tokio::runtime::Runtime,
    local: &tokio::task::LocalSet,
) {
    let mut set_up = Vec::new();
    let mut end = Vec::new();
    for round in 0..JOBS {
        let order = order(&format!("half{round}"));
        let assignment = assignment(round, Some(order.clone()));
        let started = Instant::now();
        let tree = local
            .block_on(runtime, job::set_up(worktrees, repo, &order, 1))
            .expect("a worktree");
        set_up.push(started.elapsed());
        std::fs::write(tree.workdir.join("f"), "x\n").expect("writing the job's file");
        let process = ProcessEnd {
            assignment: &assignment,
            marker: "AAM_RUN_ID=bench",
            started: Instant::now(),
            stopped: None,
            answer: None,
        };
        let started = Instant::now();
        local.block_on(
            runtime,
            job::end(tree, process, &Committed::default(), &mut None),
        );
        end.push(started.elapsed());
    }
    println!(
        "  of which set-up (git worktree add, {FILES} files checked out): {:.1} ms",
        ms(median(&mut set_up))
    );
    println!(
        "  and the end (add -A, commit, diffstat, patch, worktree remove): {:.1} ms",
        ms(median(&mut end))
    );
}

/// A repository of `FILES` one-line files in one commit.
fn make_repo(repo: &Path) {
    for i in 0..FILES {
        let dir = repo.join(format!("d{:02}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).expect("a directory");
        }
        std::fs::write(
            dir.join(format!("f{:03}.txt", i % 100)),
            format!("file {i}\n"),
        )
        .expect("a file");
    }
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "10,000 files"]);
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
        ])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn order(name: &str) -> WorktreeOrder {
    WorktreeOrder {
        branch: format!("aam/bench/{name}"),
        base: "HEAD".into(),
        reuse_branch: false,
        path_key: format!("bench/{name}"),
        verify: None,
        message: format!("aam bench/{name}"),
        patch_cap: 8 << 20,
        workspace: None,
    }
}

fn assignment(round: usize, worktree: Option<WorktreeOrder>) -> Assignment {
    Assignment {
        job: aam_protocol::JobKey {
            session: aam_protocol::SessionId(1),
            index: round as u32,
        },
        attempt: 1,
        session_name: "bench".into(),
        job_name: format!("job{round}"),
        argv: vec!["sh".into(), "-c".into(), "echo x > f".into()],
        env: Vec::new(),
        secret_env: Vec::new(),
        workdir: None,
        timeout_ms: None,
        idle_timeout_ms: None,
        grace_ms: 100,
        format: None,
        worktree: worktree.map(Box::new),
        inputs: Vec::new(),
        ports: 0,
        input: None,
        permission_relay: false,
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
