//! Time from a job's dispatch to its first line of output (`cargo bench
//! -p aam-worker --bench first_line`), each way of running it beside the
//! same done by hand: no isolation (`sh -c 'echo LINE'` in the checkout;
//! by hand: the same command spawned), a worktree (by hand: `git worktree
//! add` and the command), and a worktree with a warm cache of 50,000 small
//! files in `node_modules` (by hand: `git worktree add`, `cp -a` of the
//! 50,000 files, the command). A repository of 1,000 files, its
//! `.aam/workspace.toml` caching `node_modules` keyed on
//! `package-lock.json`, is made in a temporary directory; one job fills the
//! cache first (a miss, untimed). Dispatch is `run_job` being called, as
//! the worker does on an assignment; the first line is the job's own
//! output event, past the setup's log. Each row alternates aam and by hand.
//! A fourth row, when podman runs here and has the tests' busybox image
//! (`localhost/aam-test-busybox`, imported by the container tests): a
//! container job (network none) against `git worktree add` and `podman
//! run --rm` of the same command by hand.

use aam_protocol::messages::Assignment;
use aam_protocol::worktree::WorktreeOrder;
use aam_worker::child::{run_job, EventSink, JobDirs, JobEvent};
use aam_worker::worktree::cache::CacheConfig;
use aam_worker::worktree::Worktrees;
use std::cell::{Cell, RefCell};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Files in the repository: 10 directories of 100.
const REPO_FILES: usize = 1_000;
/// Files in the cached `node_modules`: 500 packages of 100.
const CACHED_FILES: usize = 50_000;
/// What the job prints first.
const LINE: &str = "aam-bench-first-line";
/// Rounds of each row without and with a worktree; with the cache.
const ROUNDS: usize = 15;
const CACHE_ROUNDS: usize = 7;

const WORKSPACE: &str = r#"
setup = ["sh", "-c", "[ \"$AAM_CACHE_HIT\" = 1 ] || cp -a \"$SEED\" node_modules"]
cache = [{ path = "node_modules", key = ["package-lock.json"] }]
"#;

/// When the job's line came, and whether its setup said `hit`.
#[derive(Clone, Default)]
struct FirstLine {
    at: Rc<Cell<Option<Instant>>>,
    log: Rc<RefCell<String>>,
}

impl EventSink for FirstLine {
    async fn send(&self, event: JobEvent) {
        match event {
            JobEvent::Output { data, .. } => {
                let text = String::from_utf8_lossy(&data);
                if self.at.get().is_none() && text.contains(LINE) {
                    self.at.set(Some(Instant::now()));
                }
                self.log.borrow_mut().push_str(&text);
            }
            JobEvent::WorktreeFailed { reason, .. } => panic!("no worktree: {reason}"),
            JobEvent::SpawnFailed { error, .. } => panic!("not started: {error}"),
            _ => {}
        }
    }
}

struct Bench {
    dir: tempfile::TempDir,
    repo: PathBuf,
    seed: PathBuf,
    worktrees: Arc<Worktrees>,
    containers: Option<Arc<aam_worker::container::Containers>>,
    runtime: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
    round: Cell<usize>,
}

fn main() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let (repo, seed) = (dir.path().join("repo"), dir.path().join("seed"));
    let made = Instant::now();
    make_repo(&repo);
    make_node_modules(&seed);
    println!(
        "dispatch to first line: a repository of {REPO_FILES} files, a node_modules of \
         {CACHED_FILES} files (made in {:.1} s), `sh -c 'echo {LINE}'`",
        made.elapsed().as_secs_f64()
    );
    let cache = CacheConfig {
        dir: dir.path().join("cache"),
        max_bytes: 10 << 30,
    };
    let worktrees = Worktrees::with_cache(dir.path().join("worktrees"), 8 << 20, Some(cache));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    local
        .block_on(&runtime, worktrees.ready())
        .expect("the worktree root");
    let containers = container_engine().map(|engine| {
        Arc::new(aam_worker::container::Containers::new(
            engine,
            "bench",
            Some(&dir.path().join("worktrees")),
        ))
    });
    let bench = Bench {
        dir,
        repo,
        seed,
        worktrees,
        containers,
        runtime,
        local,
        round: Cell::new(0),
    };
    let filled = bench.aam(true);
    assert!(filled.1.contains("miss, saved"), "{}", filled.1);
    println!(
        "  the cache filled by a first job (a miss) in {:.1} ms",
        ms(filled.0)
    );

    let mut rows = vec![
        ("no isolation", ROUNDS, Way::Plain),
        ("worktree", ROUNDS, Way::Worktree),
        ("worktree, warm cache", CACHE_ROUNDS, Way::Cached),
    ];
    match bench.containers {
        Some(_) => rows.push(("container", ROUNDS, Way::Container)),
        None => {
            println!("  (no container row: podman does not run here, or it has no image {IMAGE})")
        }
    }
    for (name, rounds, way) in rows {
        let (mut aam, mut by_hand) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            // Alternated, so drift on a shared machine hits both alike.
            aam.push(match way {
                Way::Plain => bench.aam_plain(),
                Way::Container => bench.aam_container(),
                Way::Worktree | Way::Cached => {
                    let (time, log) = bench.aam(way == Way::Cached);
                    if way == Way::Cached {
                        assert!(log.contains("cache: node_modules: hit ("), "{log}");
                    }
                    time
                }
            });
            by_hand.push(bench.by_hand(way));
        }
        let (aam, by_hand) = (median(&mut aam), median(&mut by_hand));
        println!(
            "  {name:<22} aam {:>8.1} ms   by hand {:>8.1} ms   ratio {:.2} (medians of {rounds})",
            ms(aam),
            ms(by_hand),
            aam.as_secs_f64() / by_hand.as_secs_f64()
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Plain,
    Worktree,
    Cached,
    Container,
}

/// The container row's image: the tests' busybox image.
const IMAGE: &str = "localhost/aam-test-busybox:latest";

/// Podman, when it runs here and has `IMAGE`.
fn container_engine() -> Option<aam_worker::container::Engine> {
    let engine = aam_worker::container::detect("podman").ok()??;
    let has_image = Command::new(&engine.program)
        .args(["image", "exists", IMAGE])
        .status()
        .is_ok_and(|s| s.success());
    has_image.then_some(engine)
}

impl Bench {
    fn next_round(&self) -> usize {
        let round = self.round.get() + 1;
        self.round.set(round);
        round
    }

    fn dirs(&self) -> JobDirs {
        JobDirs {
            base: self.repo.clone(),
            worktrees: Some(self.worktrees.clone()),
            ports: aam_worker::ports::PortPool::new(aam_worker::ports::DEFAULT_RANGE),
            containers: self.containers.clone(),
            run_ids: aam_worker::orphans::RunIds::new("bench"),
        }
    }

    /// A job in the checkout: dispatch to its first line.
    fn aam_plain(&self) -> Duration {
        let round = self.next_round();
        self.run(assignment(round, None, &self.seed)).0
    }

    /// A worktree job of the repository (its workspace file on the
    /// `cached` branch, else none): dispatch to its first line, and its log.
    fn aam(&self, cached: bool) -> (Duration, String) {
        let round = self.next_round();
        let base = if cached { "cached" } else { "main" };
        let order = order(&format!("run{round}"), base);
        self.run(assignment(round, Some(order), &self.seed))
    }

    /// A container job (network none) of the repository: dispatch to its
    /// first line, the container made and its command run in it.
    fn aam_container(&self) -> Duration {
        let round = self.next_round();
        let mut order = order(&format!("run{round}"), "main");
        order.workspace = Some(Box::new(aam_protocol::workspace::JobWorkspace {
            container: Some(aam_protocol::workspace::ContainerSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            ..Default::default()
        }));
        self.run(assignment(round, Some(order), &self.seed)).0
    }

    fn run(&self, assignment: Assignment) -> (Duration, String) {
        let sink = FirstLine::default();
        let (_stop, stop_rx) = tokio::sync::oneshot::channel();
        let dispatched = Instant::now();
        let job = run_job(assignment, self.dirs(), sink.clone(), stop_rx);
        self.local.block_on(&self.runtime, job);
        let at = sink.at.get().expect("the job's line");
        let log = sink.log.borrow().clone();
        (at - dispatched, log)
    }

    /// The same by hand: the worktree added (and `node_modules` copied),
    /// the command spawned, to its first line. Cleaned up untimed.
    fn by_hand(&self, way: Way) -> Duration {
        let round = self.next_round();
        let tree = self.dir.path().join(format!("by-hand/{round}"));
        let started = Instant::now();
        let workdir = match way {
            Way::Plain => self.repo.clone(),
            Way::Worktree | Way::Cached | Way::Container => {
                let base = if way == Way::Cached { "cached" } else { "main" };
                let tree_arg = tree.to_str().expect("a utf-8 path");
                git(
                    &self.repo,
                    &["worktree", "add", "-q", "--detach", tree_arg, base],
                );
                if way == Way::Cached {
                    let status = Command::new("cp")
                        .arg("-a")
                        .arg(&self.seed)
                        .arg(tree.join("node_modules"))
                        .status()
                        .expect("cp runs");
                    assert!(status.success());
                }
                tree.clone()
            }
        };
        let mut command = match way {
            Way::Container => {
                let mount = format!("{0}:{0}", workdir.display());
                let mut podman = Command::new("podman");
                podman.args(["run", "--rm", "--network", "none", "-v", &mount, "-w"]);
                podman.arg(&workdir).args([IMAGE, "sh"]);
                podman
            }
            _ => Command::new("sh"),
        };
        let mut child = command
            .args(["-c", &format!("echo {LINE}")])
            .current_dir(&workdir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("its stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("its line");
        let time = started.elapsed();
        assert_eq!(line.trim(), LINE);
        let _ = child.wait();
        if way != Way::Plain {
            let tree_arg = tree.to_str().expect("a utf-8 path");
            git(&self.repo, &["worktree", "remove", "--force", tree_arg]);
        }
        time
    }
}

/// A repository of `REPO_FILES` one-line files on `main`, and the branch
/// `cached` with the workspace file, a lock file and `node_modules/`
/// ignored.
fn make_repo(repo: &Path) {
    for i in 0..REPO_FILES {
        let dir = repo.join(format!("d{:02}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).expect("a directory");
        }
        let file = dir.join(format!("f{:03}.txt", i % 100));
        std::fs::write(file, format!("file {i}\n")).expect("a file");
    }
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "files"]);
    git(repo, &["checkout", "-q", "-b", "cached"]);
    std::fs::create_dir_all(repo.join(".aam")).expect("a directory");
    std::fs::write(repo.join(".aam/workspace.toml"), WORKSPACE).expect("a file");
    std::fs::write(repo.join("package-lock.json"), "{}\n").expect("a file");
    std::fs::write(repo.join(".gitignore"), "node_modules/\n").expect("a file");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "workspace"]);
    git(repo, &["checkout", "-q", "main"]);
}

/// `CACHED_FILES` small files, as `npm ci` leaves them: a package per
/// directory, each with its `package.json` and modules.
fn make_node_modules(seed: &Path) {
    for i in 0..CACHED_FILES {
        let dir = seed.join(format!("pkg{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).expect("a directory");
            std::fs::write(dir.join("package.json"), "{}\n").expect("a file");
            continue;
        }
        let file = dir.join(format!("m{:02}.js", i % 100));
        std::fs::write(file, format!("module.exports = {i};\n")).expect("a file");
    }
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

fn order(name: &str, base: &str) -> WorktreeOrder {
    WorktreeOrder {
        branch: format!("aam/bench/{name}"),
        base: base.into(),
        reuse_branch: false,
        path_key: format!("bench/{name}"),
        verify: None,
        message: format!("aam bench/{name}"),
        patch_cap: 8 << 20,
        workspace: None,
    }
}

fn assignment(round: usize, worktree: Option<WorktreeOrder>, seed: &Path) -> Assignment {
    Assignment {
        job: aam_protocol::JobKey {
            session: aam_protocol::SessionId(1),
            index: round as u32,
        },
        attempt: 1,
        session_name: "bench".into(),
        job_name: format!("job{round}"),
        argv: vec!["sh".into(), "-c".into(), format!("echo {LINE}")],
        env: vec![("SEED".into(), seed.display().to_string())],
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
