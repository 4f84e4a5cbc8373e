//! `scale` (`cargo bench -p aam-tests --bench throughput -- scale`), issue
//! 18 point 5: what one operation of the manager's model costs as it
//! grows — a dispatch decision (labels, a shared resource, accounts and a
//! paused limit group in play), a job's end (with the change set a commit
//! takes), a status page of the biggest session and a provider's launch
//! decision — by queued jobs (1k, 100k, 1M; `AAM_BENCH_SCALE_MAX` caps
//! them) and connected workers (10, 100, 1,000, 4 slots each). Sessions
//! grow with the queue: half the jobs in one big session, half in
//! sessions of 1,000 (one in ten with `max_parallel = 2`).
//!
//! A second table: what a submission's quota check (`State::usage`) costs
//! by the finished sessions its token submitted before (1k, 100k), which
//! retention keeps for days.
//!
//! It drives `State`, the model the scheduler actor wraps, in process:
//! the figures are the scheduler's own CPU per operation, without the
//! network and the store (the `dispatch` benchmark measures those).

use aam_manager::providers::plan::ProviderCapacity;
use aam_manager::providers::run::decide;
use aam_manager::schedule::Labels;
use aam_manager::state::{EndReport, State, StateConfig, WorkerEntry, WorkerId};
use aam_protocol::account::AccountDef;
use aam_protocol::agent::AgentDef;
use aam_protocol::agent_run::{AgentRun, UsageLimit};
use aam_protocol::messages::{AttemptRef, JobPage, OutputWanted, Prefetch};
use aam_protocol::model::ExitInfo;
use aam_protocol::resource::UseSpec;
use aam_protocol::spec::{BatchSpec, JobSpec};
use aam_protocol::SessionId;
use std::collections::VecDeque;
use std::time::Instant;

const SLOTS: u32 = 4;
/// Ends (each followed by a dispatch) timed per row.
const CYCLES: usize = 2_000;
/// The page `aam status SESSION` asks for by default.
const PAGE: u32 = 1_000;

pub fn scale() {
    let max: usize = std::env::var("AAM_BENCH_SCALE_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("scale: the model's cost per operation (us; mean), by queued jobs and workers ({SLOTS} slots each)");
    println!(
        "  {:>9} {:>8} {:>8} {:>9} {:>6} {:>7} {:>12} {:>11} {:>11}",
        "queued",
        "sessions",
        "workers",
        "dispatch",
        "end",
        "commit",
        "status 1st",
        "status",
        "launch dec."
    );
    for queued in [1_000usize, 100_000, 1_000_000] {
        if queued > max {
            break;
        }
        let mut model = Model::new(queued);
        for workers in [10u64, 100, 1_000] {
            model.connect(workers);
            let row = model.measure();
            println!(
                "  {queued:>9} {:>8} {workers:>8} {:>9.2} {:>6.2} {:>7.2} {:>12.0} {:>11.0} {:>11.0}",
                model.sessions,
                row.dispatch,
                row.end,
                row.commit,
                row.status_first,
                row.status,
                row.launch
            );
        }
    }
    quota_check(max);
}

/// The quota check of a submission by a token with `finished` sessions
/// behind it and one open.
fn quota_check(max: usize) {
    println!("  a submission's quota check (us; mean of 2,000), by the token's finished sessions");
    for finished in [1_000usize, 100_000] {
        if finished > max {
            break;
        }
        let mut state = State::new(config());
        let now = aam_protocol::now_ms();
        for i in 0..=finished {
            let one = batch("one", None, vec![job(i, "claude")]);
            let (id, _) = state.submit(one, None, now).expect("a one-job session");
            state.set_owner(id, "ci");
            if i < finished {
                state.cancel(id, None, None, now).expect("cancelled");
            }
        }
        let start = Instant::now();
        for _ in 0..2_000 {
            std::hint::black_box(state.usage(std::hint::black_box("ci")));
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / 2_000.0;
        println!("  {finished:>9} finished, 1 open: {us:>8.3}");
    }
}

/// One row's figures, in microseconds per operation.
struct Row {
    dispatch: f64,
    end: f64,
    commit: f64,
    status: f64,
    status_first: f64,
    launch: f64,
}

struct Model {
    state: State,
    now: u64,
    sessions: usize,
    big: SessionId,
    workers: u64,
    /// Running attempts, oldest first: the next to end.
    running: VecDeque<(WorkerId, AttemptRef)>,
}

impl Model {
    /// A model holding `queued` jobs beyond what 1,000 workers run and
    /// what the measured cycles take, with one limit group paused.
    fn new(queued: usize) -> Model {
        let mut state = State::new(config());
        let now = aam_protocol::now_ms();
        let total = queued + 1_000 * SLOTS as usize + 3 * CYCLES;
        // The paused group first: a `codex` job that hits its usage limit.
        state
            .submit(batch("limit", None, vec![job(0, "codex")]), None, now)
            .expect("the limit session");
        state
            .register_worker(0, worker(0), &[], now)
            .expect("the first worker");
        let (w, a) = state.dispatch(now).pop().expect("the codex job runs");
        let limited = AgentRun {
            limit: Some(UsageLimit {
                resets_at_ms: Some(now + 3_600_000),
                message: "limit".into(),
            }),
            ..AgentRun::default()
        };
        let report = EndReport {
            exit: Some(exit(1)),
            agent: Some(limited),
            ..EndReport::default()
        };
        state
            .job_finished(w, a.attempt_ref(), report, now)
            .expect("the limited end");
        state.worker_gone(0, false, now);
        // The big session, then sessions of 1,000.
        let big_jobs = total / 2;
        let (big, _) = state
            .submit(
                batch("big", None, (0..big_jobs).map(mixed).collect()),
                None,
                now,
            )
            .expect("the big session");
        let mut sessions = 2;
        let mut left = total - big_jobs;
        while left > 0 {
            let n = left.min(1_000);
            let cap = (sessions % 10 == 0).then_some(2);
            state
                .submit(batch("small", cap, (0..n).map(mixed).collect()), None, now)
                .expect("a small session");
            left -= n;
            sessions += 1;
        }
        state.take_changes();
        Model {
            state,
            now,
            sessions,
            big,
            workers: 0,
            running: VecDeque::new(),
        }
    }

    /// Connects workers up to `n` and fills their slots.
    fn connect(&mut self, n: u64) {
        while self.workers < n {
            self.workers += 1;
            let id = self.workers;
            self.state
                .register_worker(id, worker(id), &[], self.now)
                .expect("a worker");
        }
        self.dispatch();
        self.state.take_changes();
    }

    fn dispatch(&mut self) -> usize {
        let placed = self.state.dispatch(self.now);
        let n = placed.len();
        self.running
            .extend(placed.into_iter().map(|(w, a)| (w, a.attempt_ref())));
        n
    }

    fn measure(&mut self) -> Row {
        let (mut end, mut dispatch, mut commit) = (0.0, 0.0, 0.0);
        let mut filled = 0;
        for _ in 0..CYCLES {
            self.now += 1;
            let (worker, attempt) = self.running.pop_front().expect("a running job");
            let report = EndReport {
                exit: Some(exit(0)),
                ..EndReport::default()
            };
            let started = Instant::now();
            self.state
                .job_finished(worker, attempt, report, self.now)
                .expect("a current attempt");
            end += secs(started);
            let started = Instant::now();
            let placed = self.dispatch();
            dispatch += secs(started);
            assert!(placed <= 1, "one slot freed");
            filled += placed;
            let started = Instant::now();
            self.state.take_changes();
            commit += secs(started);
        }
        // A slot freed on a worker without `pool = a` may find only jobs
        // that need it; most must be filled, or the queue ran dry.
        assert!(
            filled * 10 >= CYCLES * 9,
            "only {filled} of {CYCLES} freed slots filled"
        );
        let per_cycle = |total: f64| total * 1e6 / CYCLES as f64;
        let page = JobPage {
            offset: 0,
            limit: PAGE,
        };
        let rounds = 10;
        let page_of_big = |state: &State, now| {
            let view = state
                .view_page(self.big, OutputWanted::None, Some(page), 0, &|_| None, now)
                .expect("the big session");
            assert_eq!(view.jobs.len(), PAGE as usize);
        };
        // The first page in a second walks the session for its estimate
        // and limit groups (a big one's are then cached for a second).
        self.now += 1_000;
        let started = Instant::now();
        page_of_big(&self.state, self.now);
        let status_first = secs(started) * 1e6;
        let started = Instant::now();
        for _ in 0..rounds {
            page_of_big(&self.state, self.now);
        }
        let status = secs(started) * 1e6 / rounds as f64;
        let none = Labels::new();
        let providers = [ProviderCapacity {
            labels: &none,
            slots: SLOTS,
            max_workers: 2_000,
            min_workers: 0,
            connected: self.workers as u32,
            launching: 0,
        }];
        let started = Instant::now();
        for _ in 0..rounds {
            let capacity = self.state.capacity(self.now, 2_000 * SLOTS);
            let launched: u32 = decide(&capacity, &providers).iter().sum();
            assert!(launched > 0, "the queue wants more workers");
        }
        let launch = secs(started) * 1e6 / rounds as f64;
        Row {
            dispatch: per_cycle(dispatch),
            end: per_cycle(end),
            commit: per_cycle(commit),
            status,
            status_first,
            launch,
        }
    }
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// Agents `claude` (on two accounts) and `codex` (limit group `openai`),
/// and a shared resource `db` roomy enough never to hold a job.
fn config() -> StateConfig {
    let agent = |command: &str, accounts: &[&str], group: Option<&str>| AgentDef {
        command: vec![command.into(), "{prompt}".into()],
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        limit_group: group.map(String::from),
        ..AgentDef::default()
    };
    StateConfig {
        agents: [
            (
                "claude".to_string(),
                agent("claude", &["acct-a", "acct-b"], None),
            ),
            ("codex".to_string(), agent("codex", &[], Some("openai"))),
        ]
        .into(),
        accounts: ["acct-a", "acct-b"]
            .map(|a| (a.to_string(), AccountDef::default()))
            .into(),
        resources: [("db".to_string(), 1_000_000)].into(),
        ..StateConfig::default()
    }
}

fn batch(name: &str, max_parallel: Option<u32>, jobs: Vec<JobSpec>) -> BatchSpec {
    BatchSpec {
        name: name.into(),
        max_parallel,
        max_cost_usd: None,
        jobs,
    }
}

/// Job `i` of a session: a plain command, one requiring `pool = a`, one
/// using a unit of `db`, a `claude` job (accounts) in turn; one in a
/// hundred is a `codex` job, held by its paused group.
fn mixed(i: usize) -> JobSpec {
    if i % 100 == 99 {
        return job(i, "codex");
    }
    let mut spec = JobSpec {
        name: format!("j{i}"),
        command: Some(vec!["true".into()]),
        ..JobSpec::default()
    };
    match i % 4 {
        1 => spec.requires = [("pool".to_string(), "a".to_string())].into(),
        2 => spec.uses = vec![UseSpec::one("db")],
        3 => return job(i, "claude"),
        _ => {}
    }
    spec
}

fn job(i: usize, agent: &str) -> JobSpec {
    JobSpec {
        name: format!("j{i}"),
        agent: Some(agent.into()),
        prompt: Some("go".into()),
        ..JobSpec::default()
    }
}

/// Worker `id`; every other one offers `pool = a`.
fn worker(id: u64) -> WorkerEntry {
    WorkerEntry {
        name: format!("w{id}"),
        instance: id,
        address: "bench".into(),
        slots: SLOTS,
        prefetch: Prefetch::Fixed(0),
        recent_job_us: None,
        labels: if id.is_multiple_of(2) {
            [("pool".to_string(), "a".to_string())].into()
        } else {
            Labels::new()
        },
        assigned: Default::default(),
        draining: false,
        connected_at_ms: 0,
        last_heartbeat_ms: 0,
    }
}

fn exit(code: i32) -> ExitInfo {
    ExitInfo {
        code: Some(code),
        signal: None,
        duration_ms: 1,
    }
}
