//! The worker actor: takes the attempts the manager assigns, runs them
//! (`child.rs`) within its slots, stops them on order, and reports their
//! output, progress and ends over its link to the manager (`link.rs`), which
//! is re-dialed with backoff when it drops; the jobs keep running meanwhile.
//! The worker keeps each attempt's output (head and tail, as the manager
//! does), so after a reconnect it sends the manager the whole of it again
//! (`OutputSync`), whatever the manager lost in a restart.

mod idle;
mod job_events;
mod link;
mod shutdown;

pub use job_events::Event;
pub use shutdown::{Drain, KillAll};

use crate::child::{JobDirs, StopOrder};
use crate::orphans::RunIds;
use crate::teardown::{become_subreaper, reap_adopted};
use crate::worktree::Worktrees;
use aam_protocol::agent_run::AgentRun;
use aam_protocol::codec::{CodecError, MAX_FRAME_CEILING};
use aam_protocol::messages::{
    Assignment, AttemptRef, ManagerToWorker, Prefetch, Stopped, WorkerToManager,
};
use aam_protocol::model::{ExitInfo, StopCause, TeardownReceipt};
use aam_protocol::output::OutputCapture;
use actix::prelude::*;
use link::{Link, FIRST_BACKOFF};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How a worker runs. Its `Debug` hides the token.
#[derive(Clone)]
pub struct WorkerConfig {
    pub manager: String,
    pub token: String,
    pub name: String,
    pub slots: u32,
    /// Assignments accepted beyond `slots`, queued here.
    pub prefetch: Prefetch,
    pub labels: BTreeMap<String, String>,
    /// Base directory for relative job workdirs.
    pub workdir: PathBuf,
    /// The worker's own directory of job worktrees (`--worktrees`; see
    /// `worktree::default_root`); None: worktree jobs fail, saying so.
    pub worktrees: Option<PathBuf>,
    pub max_frame: usize,
    /// The TCP ports jobs' `ports` are reserved from (`--ports`).
    pub ports: crate::ports::PortRange,
    /// The warm cache of workspaces' `cache` paths (`--cache`,
    /// `--cache-max`); None: none kept.
    pub cache: Option<crate::worktree::cache::CacheConfig>,
    /// How the manager's certificate is verified (and ours, if any).
    pub tls: aam_protocol::tls::ClientTls,
    /// The container engine container jobs run with (`--container-engine`);
    /// None: this worker takes no container job.
    pub container_engine: Option<crate::container::Engine>,
    /// Leave after this long with nothing to run (`--once-idle`), once
    /// the manager agrees.
    pub idle_exit: Option<Duration>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("manager", &self.manager)
            .field("token", &aam_protocol::secret::REDACTED)
            .field("name", &self.name)
            .field("slots", &self.slots)
            .field("prefetch", &self.prefetch)
            .field("labels", &self.labels)
            .field("workdir", &self.workdir)
            .field("worktrees", &self.worktrees)
            .field("max_frame", &self.max_frame)
            .field("ports", &self.ports)
            .field("container_engine", &self.container_engine)
            .field("cache", &self.cache)
            .finish()
    }
}

/// What the worker keeps of an assigned attempt.
struct AssignedJob {
    /// Its process group id, 0 until it started.
    pid: u32,
    /// Its processes' `AAM_RUN_ID` marker.
    marker: String,
    /// Tells the running job to stop (taken when used).
    stop: Option<oneshot::Sender<StopOrder>>,
    /// Messages said to its agent (`aam say`), for one that takes input.
    said: Option<tokio::sync::mpsc::UnboundedSender<aam_protocol::say::SaidMessage>>,
    /// Decisions on its agent's relayed permission prompts.
    decided: Option<tokio::sync::mpsc::UnboundedSender<crate::permission_relay::Decision>>,
    /// Its agent's asks not decided yet: ask -> (tool, input), asked again
    /// after a reconnect.
    open_asks: std::collections::BTreeMap<u64, (String, String)>,
    /// What it printed, as kept (resent after a reconnect).
    capture: OutputCapture,
    /// For an agent job: its run as last read (resent after a reconnect).
    agent_run: Option<AgentRun>,
    /// That run is not sent yet (no link, or the link is behind).
    agent_run_unsent: bool,
}

/// An attempt's end (`Finished` or `SpawnFailed`) and its output, kept
/// until the manager acknowledges the end as durable.
struct UnackedEnd {
    report: WorkerToManager,
    capture: OutputCapture,
}

/// How long an assignment prefetched with `--prefetch auto` may wait for
/// a slot before it goes back to the manager.
const HAND_BACK_AFTER: Duration = Duration::from_secs(1);

pub struct WorkerAgent {
    config: WorkerConfig,
    /// Drawn at start: tells the manager a reconnect of this process from
    /// another worker under the same name.
    instance: u64,
    link: Link,
    /// The wait before the next dial after a failed one.
    backoff: Duration,
    /// When the manager was last heard from on the current connection.
    last_heard: Instant,
    /// Every assigned attempt, started or waiting for a slot.
    assigned: HashMap<AttemptRef, AssignedJob>,
    /// Assigned attempts waiting for a free slot (only with prefetch),
    /// with when each came.
    waiting: VecDeque<(Instant, Assignment)>,
    /// Children started and not yet finished.
    active: u32,
    /// Ends reported but not yet acknowledged as durable: resent after a
    /// reconnect, so a report lost with a connection cannot make the
    /// manager run a finished job again (ARCHITECTURE.md invariant 3).
    unacked: HashMap<AttemptRef, UnackedEnd>,
    /// Set by `Drain`: told when the last job has ended and been acknowledged.
    drained: Option<oneshot::Sender<()>>,
    draining: bool,
    /// The latest progress of each attempt, kept while not registered.
    pending_progress: HashMap<AttemptRef, WorkerToManager>,
    /// Output bytes kept per attempt (the manager's setting).
    output_cap: usize,
    /// Where worktree jobs get their worktrees.
    worktrees: Option<Arc<Worktrees>>,
    /// The ports jobs reserve.
    ports: Arc<crate::ports::PortPool>,
    /// The engine and shared state of container jobs, if it has an engine.
    containers: Option<Arc<crate::container::Containers>>,
    /// The run ids this worker process gives its attempts' processes.
    run_ids: RunIds,
    /// Its idle exit (`--once-idle`).
    idle: Option<idle::IdleExit>,
}

/// Starts a worker in the current actix system.
pub fn start(mut config: WorkerConfig) -> Addr<WorkerAgent> {
    // Made now rather than at the first job, so that the scratch
    // directories of workers that were killed are swept at start.
    if let Err(e) = crate::inputs::scratch_dir() {
        let temp = std::env::temp_dir();
        tracing::warn!("no scratch directory in {}: {e}", temp.display());
    }
    // A `Finished` carries the patch: half a frame leaves room for the rest.
    let patch_limit = config.max_frame / 2;
    let worktrees = config
        .worktrees
        .clone()
        .map(|root| Worktrees::with_cache(root, patch_limit, config.cache.clone()));
    let containers = config.container_engine.clone().map(|engine| {
        // Placement sends container jobs only to workers with this label.
        use aam_protocol::workspace::{CONTAINER_LABEL, CONTAINER_LABEL_VALUE};
        config
            .labels
            .insert(CONTAINER_LABEL.into(), CONTAINER_LABEL_VALUE.into());
        let root = config.worktrees.as_deref();
        Arc::new(crate::container::Containers::new(
            engine,
            &config.name,
            root,
        ))
    });
    let idle_exit = config.idle_exit.map(idle::IdleExit::new);
    WorkerAgent {
        worktrees,
        containers,
        ports: crate::ports::PortPool::new(config.ports),
        run_ids: RunIds::new(&config.name),
        config,
        instance: random_instance(),
        link: Link::Down,
        backoff: FIRST_BACKOFF,
        last_heard: Instant::now(),
        assigned: HashMap::new(),
        waiting: VecDeque::new(),
        active: 0,
        unacked: HashMap::new(),
        drained: None,
        draining: false,
        pending_progress: HashMap::new(),
        output_cap: aam_protocol::output::DEFAULT_OUTPUT_CAP,
        idle: idle_exit,
    }
    .start()
}

/// A random number for this process (not secret, but not guessable either:
/// it lets a reconnect take over the name's connection at once).
fn random_instance() -> u64 {
    let mut bytes = [0u8; 8];
    if let Err(e) = getrandom::getrandom(&mut bytes) {
        // Fall back on what differs between processes and starts.
        tracing::warn!("no OS randomness for the worker's instance ({e})");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return nanos ^ ((std::process::id() as u64) << 32);
    }
    u64::from_le_bytes(bytes)
}

impl WorkerAgent {
    /// Takes an assignment: it waits for a slot (started at once if one is
    /// free), or goes back to the manager if the worker drains.
    fn assign(&mut self, assignment: Assignment, ctx: &mut Context<Self>) {
        let attempt = assignment.attempt_ref();
        if self.draining {
            // Sent before the manager heard we drain: hand it back.
            return self.end_unstarted(attempt, StopCause::Shutdown);
        }
        let job = AssignedJob {
            pid: 0,
            marker: self.run_ids.marker(&assignment),
            stop: None,
            said: None,
            decided: None,
            open_asks: Default::default(),
            capture: OutputCapture::new(self.output_cap),
            agent_run: None,
            agent_run_unsent: false,
        };
        self.assigned.insert(attempt, job);
        self.waiting.push_back((Instant::now(), assignment));
        self.start_waiting(ctx);
    }

    /// With `--prefetch auto`, an assignment that has waited here past
    /// `HAND_BACK_AFTER` goes back to the manager (which requeues it, and
    /// prefetches no more to this worker until its jobs are short again):
    /// the jobs in its slots turned out long, and another worker may be
    /// free. A fixed prefetch keeps what it was given, as asked.
    fn hand_back_stale(&mut self) {
        if self.config.prefetch != Prefetch::Auto || self.draining {
            return;
        }
        while let Some((since, assignment)) = self.waiting.front() {
            if since.elapsed() < HAND_BACK_AFTER {
                break;
            }
            let attempt = assignment.attempt_ref();
            tracing::debug!(job = %assignment.job_name, "handing back an assignment that waited for a slot");
            self.waiting.pop_front();
            self.assigned.remove(&attempt);
            self.end_unstarted(attempt, StopCause::Superseded);
        }
    }

    /// Starts waiting assignments while slots are free.
    fn start_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.active < self.config.slots {
            let Some((_, assignment)) = self.waiting.pop_front() else {
                break;
            };
            // A secret the job needs and this host lacks: it fails at once,
            // saying which (the values themselves are read again at spawn).
            if let Err(error) =
                crate::secret_env::from_process(&assignment.secret_env, &self.config.name)
            {
                tracing::warn!(job = %assignment.job_name, session = %assignment.job.session,
                    "could not start: {error}");
                let attempt = assignment.attempt_ref();
                self.assigned.remove(&attempt);
                let end = WorkerToManager::SpawnFailed { attempt, error };
                self.report_end(attempt, end, OutputCapture::new(0));
                continue;
            }
            tracing::debug!(job = %assignment.job_name, session = %assignment.job.session,
                attempt = assignment.attempt, "starting job");
            self.active += 1;
            let (stop, stop_rx) = oneshot::channel();
            let (said, said_rx) = tokio::sync::mpsc::unbounded_channel();
            let (decided, decided_rx) = tokio::sync::mpsc::unbounded_channel();
            if let Some(job) = self.assigned.get_mut(&assignment.attempt_ref()) {
                job.stop = Some(stop);
                job.said = assignment.input.is_some().then_some(said);
                job.decided = assignment.permission_relay.then_some(decided);
            }
            let dirs = JobDirs {
                base: self.config.workdir.clone(),
                worktrees: self.worktrees.clone(),
                ports: self.ports.clone(),
                containers: self.containers.clone(),
                run_ids: self.run_ids.clone(),
            };
            let span = tracing::info_span!("job", session = %assignment.job.session,
                job = %assignment.job_name, attempt = assignment.attempt);
            actix::spawn(tracing::Instrument::instrument(
                crate::child::run_job_told(
                    assignment,
                    dirs,
                    ctx.address(),
                    stop_rx,
                    said_rx,
                    decided_rx,
                ),
                span,
            ));
        }
    }

    /// Stops one attempt: a waiting one ends at once, a running one gets
    /// its stop order and reports its end (with a receipt) when done.
    fn stop(&mut self, attempt: AttemptRef, cause: StopCause, grace: Duration) {
        let waiting = self.waiting.iter();
        if let Some(pos) = waiting
            .into_iter()
            .position(|(_, a)| a.attempt_ref() == attempt)
        {
            self.waiting.remove(pos);
            self.assigned.remove(&attempt);
            self.end_unstarted(attempt, cause);
        } else if let Some(order) = self.assigned.get_mut(&attempt).and_then(|j| j.stop.take()) {
            let _ = order.send(StopOrder { cause, grace });
        }
    }

    /// Reports the end of an attempt that never started: stopped for
    /// `cause`, with no exit, no time and nothing to tear down.
    fn end_unstarted(&mut self, attempt: AttemptRef, cause: StopCause) {
        let end = WorkerToManager::Finished {
            attempt,
            exit: ExitInfo::not_started(),
            stopped: Some(Stopped {
                cause,
                receipt: TeardownReceipt::default(),
            }),
            agent: None,
            change: None,
            patch: Vec::new(),
            workspace: None,
        };
        self.report_end(attempt, end, OutputCapture::new(0));
    }

    /// Sends an attempt's end (`Finished` or `SpawnFailed`) now if
    /// registered, and keeps it with its output until acknowledged.
    fn report_end(&mut self, attempt: AttemptRef, end: WorkerToManager, capture: OutputCapture) {
        self.pending_progress.remove(&attempt);
        self.link.send_end(attempt, &end, &capture);
        let end = UnackedEnd {
            report: end,
            capture,
        };
        self.unacked.insert(attempt, end);
    }

    /// Deletes branches `aam gc` removed the sessions of, off the actor's
    /// thread, in the repository's turn.
    fn delete_branches(&mut self, repo: String, branches: Vec<String>) {
        let Some(worktrees) = self.worktrees.clone() else {
            return tracing::warn!(%repo, "no worktree root: branches not deleted");
        };
        actix::spawn(async move { worktrees.delete_branches(repo.into(), branches).await });
    }

    /// Tells `Drain` its work is done once nothing runs and every end is acknowledged.
    fn check_drained(&mut self) {
        if self.draining && self.assigned.is_empty() && self.unacked.is_empty() {
            if let Some(done) = self.drained.take() {
                let _ = done.send(());
            }
        }
    }
}

impl Actor for WorkerAgent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        // Descendants that escape a job's process group are reparented to
        // us rather than to init: we can find them and must reap them.
        if !become_subreaper() {
            tracing::warn!("cannot become a child subreaper; escaped job processes go to init");
        }
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            let own: BTreeSet<u32> = act.assigned.values().map(|j| j.pid).collect();
            reap_adopted(&own);
        });
        ctx.run_interval(HAND_BACK_AFTER / 4, |act, _| act.hand_back_stale());
        if self.idle.is_some() {
            ctx.run_interval(idle::CHECK_EVERY, |act, ctx| act.check_idle(ctx));
        }
        // Leftover worktrees go now, before any job needs the root (jobs
        // that come meanwhile wait for it).
        if let Some(worktrees) = self.worktrees.clone() {
            actix::spawn(async move {
                let _ = worktrees.ready().await;
            });
        }
        if let Some(containers) = self.containers.clone() {
            let engine = containers.engine.program.display().to_string();
            tracing::info!(%engine, "container jobs run here");
            // What an earlier process of this worker left goes first.
            ctx.wait(actix::fut::wrap_future(async move {
                let removed = containers.remove_leftovers().await;
                if removed > 0 {
                    tracing::info!(
                        removed,
                        "removed containers left by an earlier worker process"
                    );
                }
            }));
        }
        tracing::info!("{}", crate::orphans::mechanism());
        // What an earlier run under this name left goes before we register
        // (the manager has given those attempts to others by now).
        let key = self.run_ids.key().to_string();
        let stopped = tokio::task::spawn_blocking(move || crate::orphans::stop_earlier_runs(&key));
        ctx.wait(stopped.into_actor(self).map(|stopped, act, ctx| {
            match stopped {
                Ok(left) if left != Default::default() => tracing::warn!(
                    processes = left.processes,
                    cgroups = left.cgroups,
                    "stopped what an earlier run of this worker left running"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!("looking for an earlier run's processes: {e}"),
            }
            act.dial(ctx);
        }));
    }
}

impl StreamHandler<Result<ManagerToWorker, CodecError>> for WorkerAgent {
    fn handle(&mut self, item: Result<ManagerToWorker, CodecError>, ctx: &mut Context<Self>) {
        let msg = match item {
            Ok(m) => m,
            Err(e) => return self.disconnected(ctx, &e.to_string()),
        };
        self.last_heard = Instant::now();
        match msg {
            ManagerToWorker::Registered {
                heartbeat_ms,
                lease_ms,
                output_cap,
            } => {
                // A capture larger than a frame could not be resent whole.
                self.output_cap = output_cap.min(MAX_FRAME_CEILING as u64) as usize;
                self.registered(heartbeat_ms, lease_ms, ctx);
            }
            ManagerToWorker::Assign(assignment) => self.assign(assignment, ctx),
            ManagerToWorker::Stop {
                attempt,
                cause,
                grace_ms,
            } => {
                tracing::info!(job = %attempt.job, attempt = attempt.attempt,
                    cause = cause.as_str(), "manager ordered a stop");
                self.stop(attempt, cause, Duration::from_millis(grace_ms));
            }
            ManagerToWorker::Refused { reason } => {
                tracing::error!("manager refused this worker: {reason}");
                self.exit_refused(2, ctx);
            }
            ManagerToWorker::RetryLater { reason } => self.retry_later(&reason, ctx),
            ManagerToWorker::PermissionDecided {
                attempt,
                ask,
                allow,
                message,
            } => {
                let to = self.assigned.get_mut(&attempt).and_then(|job| {
                    let open = job.open_asks.remove(&ask).is_some();
                    job.decided.as_ref().filter(|_| open)
                });
                match to {
                    Some(to) => drop(to.send((ask, allow, message))),
                    // Answered already (a repeat after a reconnect).
                    None => tracing::debug!(job = %attempt.job, ask, "a decision for no open ask"),
                }
            }
            ManagerToWorker::Say { attempt, message } => {
                let to = self.assigned.get(&attempt).and_then(|j| j.said.as_ref());
                match to {
                    // The job's stdin feeder skips what it gave already.
                    Some(to) => drop(to.send(message)),
                    None => {
                        tracing::debug!(job = %attempt.job, "a message for an attempt not running here")
                    }
                }
            }
            ManagerToWorker::DeleteBranches { repo, branches } => {
                self.delete_branches(repo, branches)
            }
            ManagerToWorker::Retire { granted } => self.retire(granted, ctx),
            ManagerToWorker::Pong => {}
            ManagerToWorker::Ack(attempt) => {
                self.unacked.remove(&attempt);
                self.check_drained();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.disconnected(ctx, "connection closed");
    }
}
