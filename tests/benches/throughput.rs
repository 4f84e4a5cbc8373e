//! Benchmarks against the real binaries (run with `cargo bench -p aam-tests`):
//! dispatch throughput against raw spawning (run again after aam, since
//! its rate drifts with the machine) and xargs -P2, sequential
//! session latency, a 100,000-job submission's ack time, memory and first
//! status page, and a restart holding it (`AAM_BENCH_QUEUED` jobs), the
//! worker's CPU per agent job against a plain command job, and the time a
//! git worktree adds to a job.
//! Figures go to BENCHMARKS.md; this prints them and asserts nothing of
//! them (only that the jobs measured did their work).
//!
//! One benchmark alone: `cargo bench -p aam-tests --bench throughput --
//! agent_cpu` (any part of a name filters). `agent_cpu` runs 2,000 jobs
//! (`AAM_BENCH_AGENT_JOBS` sets how many) of an agent that is `cat` of a
//! recorded Claude Code stream-json run (tests/fixtures/
//! claude-write-tool.jsonl, format claude-stream-json, so the worker reads
//! it as the agent's events), then as many plain command jobs running the
//! same `cat`, and prints the worker's CPU per job for each: the
//! difference is what reading an agent's output costs the worker.
//!
//! `worktree` (`cargo bench -p aam-tests --bench throughput -- worktree`)
//! makes a repository of 10,000 files (`AAM_BENCH_REPO_FILES`), then runs
//! 50 one-job sessions (`AAM_BENCH_WORKTREE_JOBS`) of `sh -c 'echo x >
//! bench.txt'` in it with `isolation = "worktree"` and 50 without,
//! alternately, one at a time, submit to end through the real binaries,
//! and prints the median and p90 per job of each: the difference is what
//! setting up the worktree, committing the change and removing the
//! worktree add to a job.
//!
//! `doors` (`cargo bench -p aam-tests --bench throughput -- doors`) runs
//! the `/bin/true` throughput (`AAM_BENCH_JOBS`, 2 slots, prefetch 2)
//! with the HTTP doors open, 20 clients on `/api/events`
//! (`AAM_BENCH_SSE_CLIENTS`) and a dashboard (its page and files fetched,
//! its session's stream followed and the session re-read at most once a
//! second; `AAM_BENCH_DASHBOARD=0`: no dashboard), against the same with
//! none, alternately (`AAM_BENCH_ROUNDS` pairs, 3 by default), and prints
//! the ratio of the medians.
//!
//! `handshake`: the cost of a new connection (`throughput/handshake.rs`).
//! `dispatch`: the manager's dispatch capacity, driven by simulated
//! workers over the real protocol (`throughput/dispatch.rs`).
//! `say`: from a message said to a running agent to its stdin
//! (`throughput/say.rs`). `permission`: from an agent's permission request
//! to `needs input` in status and on the event stream
//! (`throughput/permission.rs`). `providers`: a launch decision's cost and
//! submit to first job with a podman provider (`throughput/providers.rs`).
//! `scale`: the model's cost per operation by queued jobs and workers
//! (`throughput/scale.rs`).
//!
//! The binaries are built from this tree, unless `AAM_BIN_DIR` names a
//! directory holding `aam-manager`, `aam-worker` and `aam`: then those run
//! and nothing is built. To compare an older build with the current one,
//! build the old commit into its own target directory and run, e.g.
//! `AAM_BIN_DIR=/tmp/old/release cargo bench -p aam-tests -- latency`, then
//! the same without it (`aam_tests::bin` reads the variable at each call, so
//! one run may also switch it between two clusters). A build of an older
//! protocol version whose client messages are unchanged also needs
//! `AAM_PEER_PROTOCOL_VERSION=N` (the version this client claims).

#[path = "throughput/dispatch.rs"]
mod dispatch;
#[path = "throughput/handshake.rs"]
mod handshake;
#[path = "throughput/permission.rs"]
mod permission;
#[path = "throughput/providers.rs"]
mod providers;
#[path = "throughput/say.rs"]
mod say;
#[path = "throughput/scale.rs"]
mod scale;

use aam_protocol::messages::{ClientRequest, ClientResponse, Role};
use aam_protocol::model::SessionStatus;
use aam_protocol::spec::{BatchSpec, JobSpec};
use aam_protocol::SessionId;
use aam_tests::git::make_repo;
use aam_tests::http::{bearer, get, Events, Next};
use aam_tests::wire::Wire;
use aam_tests::{workspace_root, Cluster};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A client speaking the wire protocol directly, so figures do not
/// include starting an `aam` process per request.
struct Client {
    wire: Wire,
}

impl Client {
    fn connect(addr: &str, token: &str) -> Client {
        Client {
            wire: Wire::connect(addr, Role::Client, token),
        }
    }

    fn write(&mut self, request: &ClientRequest) {
        self.wire.send(request);
    }

    fn read(&mut self) -> ClientResponse {
        self.wire.recv()
    }

    /// Reads the answer to a `SubmitPart`.
    fn part_received(&mut self) {
        match self.read() {
            ClientResponse::PartReceived { .. } => {}
            other => panic!("part refused: {other:?}"),
        }
    }

    /// Submits `batch`, its jobs in parts of 10,000 before the `Submit`
    /// when there are more (as the CLI does past a part's bytes).
    fn submit(&mut self, mut batch: BatchSpec) -> SessionId {
        let total = batch.jobs.len();
        let mut jobs = std::mem::take(&mut batch.jobs).into_iter();
        // As `aam submit` sends them: one part ahead, each answer read
        // before the part after it goes.
        let parts = total.saturating_sub(1) / 10_000;
        for sent in 0..parts {
            let part = jobs.by_ref().take(10_000).collect();
            let request = ClientRequest::SubmitPart { jobs: part };
            let bytes = aam_protocol::codec::encode(&request).expect("a part encodes");
            if sent > 0 {
                self.part_received();
            }
            self.wire.send_encoded(&bytes).expect("writing a part");
        }
        if parts > 0 {
            self.part_received();
        }
        batch.jobs = jobs.collect();
        self.write(&ClientRequest::Submit {
            batch,
            idempotency_key: None,
        });
        match self.read() {
            ClientResponse::Submitted { session, .. } => session,
            other => panic!("submit failed: {other:?}"),
        }
    }

    fn wait(&mut self, session: SessionId) -> ClientResponse {
        self.write(&ClientRequest::Watch { session });
        loop {
            match self.read() {
                ClientResponse::Progress(s) if s.status.is_terminal() => {
                    return ClientResponse::Progress(s)
                }
                ClientResponse::Progress(_) => {}
                other => panic!("watch failed: {other:?}"),
            }
        }
    }
}

fn true_jobs(n: usize) -> BatchSpec {
    BatchSpec {
        max_cost_usd: None,
        name: "bench".into(),
        max_parallel: None,
        jobs: (0..n)
            .map(|i| JobSpec {
                name: format!("t{i}"),
                command: Some(vec!["/bin/true".into()]),
                ..Default::default()
            })
            .collect(),
    }
}

/// Spawns /bin/true `n` times, two at a time: the floor for any runner.
fn raw_spawn(n: usize) -> Duration {
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..n / 2 {
                    Command::new("/bin/true").status().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

fn xargs(n: usize) -> Duration {
    let start = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P2", "-n1", "/bin/true"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("xargs");
    let input: String = (0..n).map(|i| format!("{i}\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    start.elapsed()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Runs `n` /bin/true jobs through a manager and one worker with 2 slots
/// (`--prefetch` as given: `auto` is the default).
fn aam_run(n: usize, prefetch: &str) -> (Duration, f64, f64) {
    let mut c = Cluster::with_manager();
    c.start_worker_with("bench", 2, &["--prefetch", prefetch]);
    let mut client = Client::connect(&c.addr, &c.token);
    let start = Instant::now();
    let session = client.submit(true_jobs(n));
    client.wait(session);
    let took = start.elapsed();
    let manager_cpu = cpu_secs(c.manager.as_ref().unwrap().pid());
    let worker_cpu = cpu_secs(c.workers[0].pid());
    (took, manager_cpu, worker_cpu)
}

fn throughput() {
    // `AAM_BENCH_JOBS` runs fewer (say, under valgrind, which counts
    // instructions instead of time).
    let n = env_count("AAM_BENCH_JOBS", 10_000);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let share = |raw: Duration, d: Duration| 100.0 * raw.as_secs_f64() / d.as_secs_f64();
    let raw = raw_spawn(n);
    let xargs = xargs(n);
    println!("throughput: {n} x /bin/true, 2 at a time");
    println!(
        "  raw spawn (2 threads):   {:>6.0} jobs/s  ({:.2} s)",
        rate(raw),
        raw.as_secs_f64()
    );
    println!(
        "  xargs -P2:               {:>6.0} jobs/s  ({:.2} s)  = {:.0}% of raw",
        rate(xargs),
        xargs.as_secs_f64(),
        share(raw, xargs)
    );
    // `AAM_BENCH_PREFETCH=auto,8` measures other settings.
    let settings = std::env::var("AAM_BENCH_PREFETCH").unwrap_or_else(|_| "auto,0,2".into());
    let runs: Vec<_> = settings
        .split(',')
        .map(|prefetch| (prefetch, aam_run(n, prefetch)))
        .collect();
    // The raw rate drifts with the machine (and with anything polling
    // beside the bench): measured again after aam, each share is given
    // against both runs.
    let raw_after = raw_spawn(n);
    println!(
        "  raw spawn again, after aam: {:>6.0} jobs/s  ({:.2} s); xargs = {:.0}% of it",
        rate(raw_after),
        raw_after.as_secs_f64(),
        share(raw_after, xargs)
    );
    for (prefetch, (took, manager_cpu, worker_cpu)) in runs {
        println!(
            "  aam, 2 slots, prefetch {prefetch}: {:>6.0} jobs/s  ({:.2} s)  = {:.0}% of raw ({:.0}% of the raw run after it); CPU per job: manager {:.0} us, worker {:.0} us",
            rate(took),
            took.as_secs_f64(),
            share(raw, took),
            share(raw_after, took),
            manager_cpu * 1e6 / n as f64,
            worker_cpu * 1e6 / n as f64
        );
    }
}

fn latency() {
    // More sessions show what grows with the sessions a manager keeps.
    let n = env_count("AAM_BENCH_SESSIONS", 200).max(1);
    let mut c = Cluster::with_manager();
    c.start_worker("bench", 2);
    let mut client = Client::connect(&c.addr, &c.token);
    // Warm up the connection, the worker and the store.
    for _ in 0..10 {
        let s = client.submit(true_jobs(1));
        client.wait(s);
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let s = client.submit(true_jobs(1));
        client.wait(s);
        samples.push(start.elapsed());
    }
    let mut floor = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        Command::new("/bin/true").status().unwrap();
        floor.push(start.elapsed());
    }
    samples.sort();
    floor.sort();
    println!("latency: {n} sequential one-job sessions (submit, wait for the end, next), durable");
    println!(
        "  aam:            {}",
        quantiles(&samples, &[("p50", 0.5), ("p99", 0.99), ("max", 1.0)])
    );
    println!(
        "  spawn+wait /bin/true alone: {}",
        quantiles(&floor, &[("p50", 0.5), ("p99", 0.99)])
    );
}

fn submission() {
    let n = env_count("AAM_BENCH_QUEUED", 100_000);
    let mut c = Cluster::new();
    c.manager_env
        .push(("AAM_MAX_JOBS_PER_SESSION".into(), n.max(1).to_string()));
    c.start_manager();
    let pid = c.manager.as_ref().unwrap().pid();
    let before = rss_kib(pid, "VmRSS:");
    let batch = true_jobs(n);
    let mut client = Client::connect(&c.addr, &c.token);
    let start = Instant::now();
    let session = client.submit(batch);
    let ack = start.elapsed();
    let after_ack = rss_kib(pid, "VmRSS:");
    // A commit is answered once the log holds it, before sled takes it;
    // the audit log is read on the commit thread once sled has every
    // commit before it: its answer says sled holds the big session, and
    // what is held then is what stays.
    let settling = Instant::now();
    client.write(&ClientRequest::Audit { since_ms: None });
    match client.read() {
        ClientResponse::Audit { .. } => {}
        other => panic!("audit refused: {other:?}"),
    }
    let settled_after = settling.elapsed();
    let settled = rss_kib(pid, "VmRSS:");
    let peak_ack = rss_kib(pid, "VmHWM:");
    // The allocator gives freed memory back within 100-200 ms (the
    // manager's `allocator.rs`; at once after a big change, `memory.rs`):
    // what an idle manager holds is read a second later.
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kib(pid, "VmRSS:");
    // A status query (its first page, counts whole) proves the manager
    // holds and serves it.
    let asked = Instant::now();
    let (total, shown) = status_page(&mut client, session);
    let answered = asked.elapsed();
    assert_eq!((total, shown), (n as u32, n.min(1000)));
    println!("submission: one session of {n} jobs, no workers (all stay queued)");
    println!("  durable ack after {:.0} ms", ack.as_secs_f64() * 1000.0);
    println!(
        "  manager RSS before {:.1} MiB, {:.1} MiB at the ack, {:.1} MiB once sled holds it ({:.0} ms after the ack), {:.1} MiB a second later ({:.0} bytes per job), peak {:.1} MiB",
        before as f64 / 1024.0,
        after_ack as f64 / 1024.0,
        settled as f64 / 1024.0,
        settled_after.as_secs_f64() * 1000.0,
        idle as f64 / 1024.0,
        (idle - before) as f64 * 1024.0 / n as f64,
        peak_ack as f64 / 1024.0,
    );
    println!(
        "  status (counts and the first 1,000 jobs) in {:.1} ms",
        answered.as_secs_f64() * 1000.0
    );
}

/// A session's job total and how many jobs its first page (1,000) shows.
fn status_page(client: &mut Client, session: SessionId) -> (u32, usize) {
    client.write(&ClientRequest::Session {
        session,
        output: aam_protocol::messages::OutputWanted::None,
        page: Some(aam_protocol::messages::JobPage {
            offset: 0,
            limit: 1000,
        }),
    });
    match client.read() {
        ClientResponse::Session(view) => (view.summary.total, view.jobs.len()),
        other => panic!("status failed: {other:?}"),
    }
}

/// The status of one job, read through the protocol.
fn job_state(client: &mut Client, session: SessionId) -> (String, Option<String>) {
    client.write(&ClientRequest::Session {
        session,
        output: aam_protocol::messages::OutputWanted::None,
        page: None,
    });
    match client.read() {
        ClientResponse::Session(view) => {
            (view.jobs[0].status.to_string(), view.jobs[0].worker.clone())
        }
        other => panic!("status failed: {other:?}"),
    }
}

/// Time from kill -9 of the worker running a job to the job running again
/// on another worker (default heartbeat, lease and grace).
fn failover() {
    let mut c = Cluster::with_manager();
    c.start_worker("first", 1);
    let mut client = Client::connect(&c.addr, &c.token);
    let pidfile = c.path("job.pid");
    let batch = BatchSpec {
        max_cost_usd: None,
        name: "failover".into(),
        max_parallel: None,
        jobs: vec![JobSpec {
            name: "long".into(),
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!("echo $$ >> {}; exec sleep 600", pidfile.display()),
            ]),
            ..Default::default()
        }],
    };
    let session = client.submit(batch);
    while job_state(&mut client, session).0 != "running" {
        std::thread::sleep(Duration::from_millis(5));
    }
    c.start_worker("second", 1);
    let killed = Instant::now();
    c.workers[0].kill();
    let moved = loop {
        let (status, worker) = job_state(&mut client, session);
        if status == "running" && worker.as_deref() == Some("second") {
            break killed.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    println!(
        "failover: kill -9 of a worker to its job running on another (heartbeat 1 s, lease 5 s)"
    );
    println!("  {:.2} s", moved.as_secs_f64());
    // The first worker's job process outlives it (its own process group).
    for pid in std::fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .lines()
    {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

/// Time for a restarted manager holding 100,000 jobs (`AAM_BENCH_QUEUED`)
/// to answer a status.
fn restart() {
    let n = env_count("AAM_BENCH_QUEUED", 100_000);
    let mut c = Cluster::new();
    c.manager_env
        .push(("AAM_MAX_JOBS_PER_SESSION".into(), n.max(1).to_string()));
    c.start_manager();
    let mut client = Client::connect(&c.addr, &c.token);
    let session = client.submit(true_jobs(n));
    drop(client);
    println!("restart: kill -9 of a manager holding {n} queued jobs, then start it again");
    // At once: a commit is answered when the log holds it, so sled may not
    // have the batch yet; the start serves from sled with the log laid over
    // it while the commit thread replays the log into sled. Then again once
    // that replay emptied the log, so everything is read from sled.
    for when in ["right after the ack", "once sled holds it"] {
        if when == "once sled holds it" {
            let log = c.data_dir().join("store.wal");
            let emptied = Instant::now();
            let deadline = emptied + Duration::from_secs(300);
            while std::fs::metadata(&log).map_or(0, |m| m.len()) > 1 << 20 {
                assert!(Instant::now() < deadline, "the log was never emptied");
                std::thread::sleep(Duration::from_millis(100));
            }
            println!(
                "  (sled took the log in {:.1} s after the status was served)",
                emptied.elapsed().as_secs_f64()
            );
        }
        c.kill_manager();
        let started = Instant::now();
        c.start_manager();
        let mut client = Client::connect(&c.addr, &c.token);
        let (total, _) = status_page(&mut client, session);
        let served = started.elapsed();
        assert_eq!(total, n as u32);
        let pid = c.manager.as_ref().unwrap().pid();
        println!(
            "  killed {when}: its status (counts, first 1,000 jobs) served {:.0} ms after the start; RSS {:.1} MiB",
            served.as_secs_f64() * 1000.0,
            rss_kib(pid, "VmRSS:") as f64 / 1024.0
        );
    }
}

/// One scheduling decision (`schedule::plan`) as the queue grows, with
/// 1,000 workers: a slot frees and the front job takes it; nothing can be
/// placed (every job needs a label no worker has); only the last of 100
/// sessions has room under its max_parallel.
fn schedule() {
    use aam_manager::schedule::{plan, Candidate, Labels, WorkerCapacity};
    use aam_protocol::JobKey;
    use std::collections::HashMap;
    let none = Labels::new();
    let gpu: Labels = [("gpu".to_string(), "true".to_string())].into();
    let idle: Vec<WorkerCapacity> = (0..1000)
        .map(|w| WorkerCapacity {
            worker: w,
            free: 4,
            labels: &none,
        })
        .collect();
    let mut one_free: Vec<WorkerCapacity> = (0..1000)
        .map(|w| WorkerCapacity {
            worker: w,
            free: 0,
            labels: &none,
        })
        .collect();
    one_free[500].free = 1;
    let time = |f: &mut dyn FnMut()| {
        let runs = 20;
        let start = Instant::now();
        for _ in 0..runs {
            f();
        }
        start.elapsed().as_secs_f64() * 1e6 / runs as f64
    };
    println!("schedule: one decision (schedule::plan) with 1,000 workers, by queue length");
    println!(
        "  {:>8} {:>16} {:>22} {:>22}",
        "queued", "slot frees (us)", "none placeable (us)", "last session (us)"
    );
    for n in [1_000u32, 10_000, 100_000] {
        let keys: Vec<JobKey> = (0..n)
            .map(|i| JobKey {
                session: SessionId(1 + (i % 100) as u64),
                index: i,
            })
            .collect();
        let plain = || {
            keys.iter().map(|&job| Candidate {
                job,
                requires: &none,
                only: None,
                uses: &[],
            })
        };
        let frees =
            time(&mut || assert_eq!(plan(plain(), &one_free, &mut HashMap::new()).len(), 1));
        let blocked = time(&mut || {
            let wanting = keys.iter().map(|&job| Candidate {
                job,
                requires: &gpu,
                only: None,
                uses: &[],
            });
            assert!(plan(wanting, &idle, &mut HashMap::new()).is_empty());
        });
        let last = time(&mut || {
            let mut room: HashMap<SessionId, u32> = (1..=100).map(|s| (SessionId(s), 0)).collect();
            room.insert(SessionId(100), 1);
            assert_eq!(plan(plain(), &idle, &mut room).len(), 1);
        });
        println!("  {n:>8} {frees:>16.1} {blocked:>22.1} {last:>22.1}");
    }
}

/// The worker's CPU per job: `n` jobs of an agent whose command prints a
/// recorded stream-json run (read by the worker as the agent's events),
/// then `n` plain command jobs printing the same file.
fn agent_cpu() {
    let n = env_count("AAM_BENCH_AGENT_JOBS", 2_000);
    let recording = workspace_root().join("tests/fixtures/claude-write-tool.jsonl");
    let recording = recording.to_str().expect("utf-8 path").to_string();
    let bytes = std::fs::metadata(&recording).expect("the recording").len();
    let mut c = Cluster::new();
    c.set_config(&format!(
        "[agents.replay]\ncommand = [\"cat\", {recording:?}]\nformat = \"claude-stream-json\"\n"
    ));
    c.start_manager();
    c.start_worker_with("bench", 2, &["--prefetch", "2"]);
    let worker = c.workers[0].pid();
    let mut client = Client::connect(&c.addr, &c.token);
    let batch = |name: &str, job: &dyn Fn(usize) -> JobSpec| BatchSpec {
        max_cost_usd: None,
        name: name.into(),
        max_parallel: None,
        jobs: (0..n).map(job).collect(),
    };
    let mut run = |batch: BatchSpec| {
        let before = cpu_secs(worker);
        let start = Instant::now();
        let session = client.submit(batch);
        match client.wait(session) {
            ClientResponse::Progress(s) if s.status == SessionStatus::Succeeded => {}
            other => panic!("the benchmark's session did not succeed: {other:?}"),
        }
        (start.elapsed(), cpu_secs(worker) - before)
    };
    let (agent_took, agent_cpu) = run(batch("agents", &|i| JobSpec {
        name: format!("a{i}"),
        agent: Some("replay".into()),
        prompt: Some("replay".into()),
        ..Default::default()
    }));
    let (command_took, command_cpu) = run(batch("commands", &|i| JobSpec {
        name: format!("c{i}"),
        command: Some(vec!["cat".into(), recording.clone()]),
        ..Default::default()
    }));
    let per_job = |cpu: f64| cpu * 1e6 / n as f64;
    println!(
        "agent_cpu: worker CPU per job, {n} jobs each printing a {bytes}-byte stream-json run, 2 slots"
    );
    println!(
        "  agent job (claude-stream-json): {:>5.0} us  ({:.2} s wall)",
        per_job(agent_cpu),
        agent_took.as_secs_f64()
    );
    println!(
        "  plain command job:              {:>5.0} us  ({:.2} s wall)",
        per_job(command_cpu),
        command_took.as_secs_f64()
    );
}

/// The `p` quantile (0 to 1) of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0
}

/// Named quantiles of sorted durations: `p50 1.20 ms  p99 3.40 ms`.
fn quantiles(sorted: &[Duration], names: &[(&str, f64)]) -> String {
    names
        .iter()
        .map(|(name, p)| format!("{name} {:.2} ms", percentile_ms(sorted, *p)))
        .collect::<Vec<_>>()
        .join("  ")
}

/// A count from the environment, else `default`.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The time a git worktree adds to a job: one-job sessions run one at a
/// time in a repository of 10,000 files, with `isolation = "worktree"` and
/// without, alternately (so drift in the machine's speed hits both).
fn worktree() {
    let files = env_count("AAM_BENCH_REPO_FILES", 10_000);
    let n = env_count("AAM_BENCH_WORKTREE_JOBS", 50);
    let mut c = Cluster::with_manager();
    let root = c.path("worktrees");
    c.start_worker_with(
        "bench",
        2,
        &["--worktrees", root.to_str().expect("utf-8 path")],
    );
    let made = Instant::now();
    let repo = make_repo(&c.path("work").join("repo"), files);
    let made = made.elapsed();
    let mut client = Client::connect(&c.addr, &c.token);
    let mut run = |isolation: &str| {
        let batch = BatchSpec {
            max_cost_usd: None,
            name: format!("worktree-{isolation}"),
            max_parallel: None,
            jobs: vec![JobSpec {
                name: "edit".into(),
                command: Some(vec!["sh".into(), "-c".into(), "echo x > bench.txt".into()]),
                workdir: Some("repo".into()),
                isolation: Some(isolation.into()),
                ..Default::default()
            }],
        };
        let start = Instant::now();
        let session = client.submit(batch);
        match client.wait(session) {
            ClientResponse::Progress(s) if s.status == SessionStatus::Succeeded => {}
            other => panic!("the benchmark's {isolation} job did not succeed: {other:?}"),
        }
        start.elapsed()
    };
    // Warm up the worker, the store and git's caches of the repository.
    for _ in 0..3 {
        run("worktree");
        run("none");
    }
    let (mut isolated, mut plain) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        isolated.push(run("worktree"));
        plain.push(run("none"));
    }
    isolated.sort();
    plain.sort();
    let spread = [("median", 0.5), ("p90", 0.9)];
    println!(
        "worktree: {n} one-job sessions each way, one at a time, in a repository of {files} files \
         (made in {:.1} s)",
        made.as_secs_f64()
    );
    println!(
        "  isolation = \"worktree\": {}",
        quantiles(&isolated, &spread)
    );
    println!("  no isolation:           {}", quantiles(&plain, &spread));
    println!(
        "  added by the worktree:  median {:.2} ms",
        percentile_ms(&isolated, 0.5) - percentile_ms(&plain, 0.5)
    );
    // One branch per isolated job (each changed bench.txt).
    let branches = repo.branches("aam/").len();
    assert_eq!(branches, n + 3, "isolated jobs that left no branch");
}

fn main() {
    // `cargo bench` passes --bench; a name filters which benchmark runs.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("throughput") {
        throughput();
    }
    if wanted("latency") {
        latency();
    }
    if wanted("submission") {
        submission();
    }
    if wanted("failover") {
        failover();
    }
    if wanted("restart") {
        restart();
    }
    if wanted("schedule") {
        schedule();
    }
    if wanted("agent_cpu") {
        agent_cpu();
    }
    if wanted("worktree") {
        worktree();
    }
    if wanted("doors") {
        doors();
    }
    if wanted("handshake") {
        handshake::handshake();
    }
    if wanted("dispatch") {
        dispatch::dispatch();
    }
    if wanted("say") {
        say::say();
    }
    if wanted("permission") {
        permission::permission();
    }
    if wanted("providers") {
        providers::providers();
    }
    if wanted("scale") {
        scale::scale();
    }
}

/// What the clients of the HTTP doors saw in one run.
#[derive(Default)]
struct DoorsSeen {
    events: u64,
    /// Streams that ended before the run did (dropped as too slow).
    dropped: u64,
    /// The dashboard's re-reads of its session.
    reads: u64,
}

impl DoorsSeen {
    fn add(&mut self, other: DoorsSeen) {
        self.events += other.events;
        self.dropped += other.dropped;
        self.reads += other.reads;
    }
}

/// One client of `/api/events` (the dashboard's when `session`): counts
/// events until `stop`; the dashboard re-reads its session at most once a
/// second while events come.
fn door_client(
    url: &str,
    token: &str,
    session: Option<SessionId>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<DoorsSeen> {
    let auth = bearer(token);
    let only = session
        .map(|id| format!("?session={id}"))
        .unwrap_or_default();
    // Open (subscribed) before this returns.
    let events = Events::open(&format!("{url}/api/events{only}"), &[(auth.0, &auth.1)]);
    let read = session.map(|id| format!("{url}/api/sessions/{id}"));
    std::thread::spawn(move || {
        let headers = [(auth.0, auth.1.as_str())];
        let mut seen = DoorsSeen::default();
        let mut last_read = Instant::now() - Duration::from_secs(1);
        let mut stale = false;
        while !stop.load(Ordering::Relaxed) {
            match events.wait(Duration::from_millis(50)) {
                Next::Event(e) if e.event == "session" => {
                    seen.events += 1;
                    stale = true;
                }
                Next::Event(_) | Next::Nothing => {}
                Next::Ended => {
                    seen.dropped += 1;
                    break;
                }
            }
            if let Some(read) = read.as_ref().filter(|_| stale) {
                if last_read.elapsed() >= Duration::from_secs(1) {
                    assert_eq!(get(read, &headers).status, 200);
                    (last_read, stale, seen.reads) = (Instant::now(), false, seen.reads + 1);
                }
            }
        }
        seen
    })
}

/// `n` /bin/true jobs through a manager serving HTTP and one worker (2
/// slots, prefetch 2); with `clients` > 0, that many event streams are
/// open from the start, and a dashboard from the submission on.
fn doors_run(n: usize, clients: usize) -> (Duration, f64, DoorsSeen) {
    let mut c = Cluster::new();
    c.http = true;
    c.start_manager();
    c.start_worker_with("bench", 2, &["--prefetch", "2"]);
    let mut client = Client::connect(&c.addr, &c.token);
    let url = c.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<_> = (0..clients)
        .map(|_| door_client(&url, &c.token, None, stop.clone()))
        .collect();
    let start = Instant::now();
    let session = client.submit(true_jobs(n));
    if clients > 0 && env_count("AAM_BENCH_DASHBOARD", 1) > 0 {
        let auth = bearer(&c.token);
        for path in [
            "/",
            "/app.js",
            "/style.css",
            "/api/sessions",
            "/api/workers",
        ] {
            assert_eq!(
                get(&format!("{url}{path}"), &[(auth.0, &auth.1)]).status,
                200
            );
        }
        threads.push(door_client(&url, &c.token, Some(session), stop.clone()));
    }
    client.wait(session);
    let took = start.elapsed();
    let cpu = cpu_secs(c.manager.as_ref().expect("a manager").pid());
    stop.store(true, Ordering::Relaxed);
    let mut seen = DoorsSeen::default();
    for t in threads {
        seen.add(t.join().expect("a door client"));
    }
    (took, cpu, seen)
}

/// Throughput with the HTTP doors open against none, alternately; the
/// manager's CPU per job beside it (less swayed by other load).
fn doors() {
    let n = env_count("AAM_BENCH_JOBS", 10_000);
    let clients = env_count("AAM_BENCH_SSE_CLIENTS", 20);
    let rounds = env_count("AAM_BENCH_ROUNDS", 5);
    let (mut closed, mut open, mut seen) = (Vec::new(), Vec::new(), DoorsSeen::default());
    for _ in 0..rounds {
        let (took, cpu, _) = doors_run(n, 0);
        closed.push((took, cpu));
        let (took, cpu, s) = doors_run(n, clients);
        open.push((took, cpu));
        seen.add(s);
    }
    let median = |runs: &mut Vec<(Duration, f64)>| {
        let mut cpu: Vec<f64> = runs.iter().map(|r| r.1).collect();
        cpu.sort_by(f64::total_cmp);
        runs.sort_by_key(|r| r.0);
        let all: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", n as f64 / r.0.as_secs_f64()))
            .collect();
        let rate = n as f64 / runs[runs.len() / 2].0.as_secs_f64();
        (rate, cpu[cpu.len() / 2] * 1e6 / n as f64, all.join(" "))
    };
    let (none, none_cpu, none_all) = median(&mut closed);
    let (doors, doors_cpu, doors_all) = median(&mut open);
    let dashboard = if env_count("AAM_BENCH_DASHBOARD", 1) > 0 {
        " + a dashboard"
    } else {
        ""
    };
    println!(
        "doors: {n} x /bin/true, 2 slots, prefetch 2, {rounds} runs each, alternated (medians)"
    );
    println!(
        "  no HTTP client: {none:.0} jobs/s, manager CPU {none_cpu:.0} us/job  (runs: {none_all})"
    );
    println!(
        "  {clients} event streams{dashboard}: {doors:.0} jobs/s = {:.2} of none, manager CPU {doors_cpu:.0} us/job = {:.2} of none  (runs: {doors_all})",
        doors / none,
        doors_cpu / none_cpu
    );
    println!(
        "  per run with clients: {:.0} events received in all, {:.1} dashboard re-reads, {} streams dropped",
        seen.events as f64 / rounds as f64,
        seen.reads as f64 / rounds as f64,
        seen.dropped
    );
}
