//! The manager's model of sessions, jobs and workers, and every transition
//! between states. Plain data and methods, no actors and no I/O: the
//! scheduler actor owns one `State`, and persists what `take_changes` returns.

use crate::estimate::{estimate, History, Remaining};
use crate::schedule::{plan, why_waiting, Candidate, WorkerCapacity, WorkerId};
use aam_protocol::agent::{expand_agent_job, AgentDef};
use aam_protocol::messages::Stopped;
use aam_protocol::messages::{AgentInfo, Assignment, AttemptRef, InputRecord, OutputWanted};
use aam_protocol::model::{
    AttemptRecord, Estimate, ExitInfo, GateDecision, JobRecord, JobStatus, JobView, RunPolicy,
    SessionRecord, SessionStatus, SessionSummary, SessionView, StopCause, TeardownReceipt,
    WorkerView,
};
use aam_protocol::output::{tail_of, OutputCapture};
use aam_protocol::spec::{
    parse_duration_ms, validate, BatchSpec, Dependency, Limits, SpecError, SpecErrors, When,
};
use aam_protocol::{now_ms, JobKey, SessionId};
use aam_store::{Changes, Snapshot};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a job's duration is remembered under: its agent, or its command.
fn duration_key(job: &JobRecord) -> String {
    match &job.agent {
        Some(agent) => format!("agent:{agent}"),
        None => format!("command:{}", job.argv.join("\u{1f}")),
    }
}

/// Whether a dependency that ended with `status` lets a dependent run.
fn condition_met(when: When, status: JobStatus) -> bool {
    match when {
        When::Succeeded => status == JobStatus::Succeeded,
        When::Failed => matches!(status, JobStatus::Failed | JobStatus::TimedOut),
        When::Finished => status.is_terminal(),
    }
}

fn unmet_reason(dependency: &JobRecord, when: When) -> String {
    format!(
        "dependency '{}' ended {}, not {}",
        dependency.name,
        dependency.status,
        when.as_str()
    )
}

/// The reason a gate shows while it waits for `aam approve` / `aam reject`.
pub const AWAITING: &str = "awaiting approval";

/// Output bytes of one dependency passed to a job (its tail).
pub const INPUT_OUTPUT_CAP: usize = 64 * 1024;
/// Output bytes of all dependencies passed to one job.
pub const INPUTS_BUDGET: usize = 4 * 1024 * 1024;

/// Reads a finished job's stored output.
pub type OutputReader = dyn Fn(JobKey) -> Option<OutputCapture>;

fn status_slot(status: JobStatus) -> usize {
    JobStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

struct SessionEntry {
    record: SessionRecord,
    jobs: Vec<JobRecord>,
    /// For each job, the jobs that wait on it.
    dependents: Vec<Vec<u32>>,
    /// For each job, how many of its dependencies have not succeeded yet.
    waiting_on: Vec<u32>,
    by_name: HashMap<String, u32>,
    counts: [u32; 8],
    /// Output of running attempts, kept in memory until they finish.
    live: HashMap<u32, OutputCapture>,
}

impl SessionEntry {
    fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.record.id,
            name: self.record.name.clone(),
            status: self.record.status,
            created_at_ms: self.record.created_at_ms,
            finished_at_ms: self.record.finished_at_ms,
            counts: self.counts,
            total: self.jobs.len() as u32,
        }
    }
}

/// A connected worker as the model knows it.
pub struct WorkerEntry {
    pub name: String,
    pub address: String,
    pub slots: u32,
    /// Assignments beyond `slots` the worker queues locally.
    pub prefetch: u32,
    pub labels: BTreeMap<String, String>,
    /// Jobs assigned to it (running, or queued on it when prefetching).
    pub running: BTreeSet<JobKey>,
    /// Shutting down: it gets no new jobs.
    pub draining: bool,
    pub connected_at_ms: u64,
    pub last_heartbeat_ms: u64,
}

/// Settings the model needs.
#[derive(Clone, Debug)]
pub struct StateConfig {
    pub limits: Limits,
    pub output_cap: usize,
    pub agents: BTreeMap<String, AgentDef>,
    /// Where each agent comes from ("config" or a definition file).
    pub agent_sources: BTreeMap<String, String>,
    /// Definition files that could not be loaded: (path, why).
    pub agent_problems: Vec<(String, String)>,
    /// How long a running job waits for its worker to come back after a
    /// manager restart.
    pub reconnect_grace_ms: u64,
    /// The same after its worker's connection closed.
    pub disconnect_grace_ms: u64,
    /// Defaults for jobs (and agents) that set none.
    pub default_timeout_ms: Option<u64>,
    pub default_idle_timeout_ms: Option<u64>,
    pub default_grace_ms: u64,
    pub default_retry_backoff_ms: u64,
    /// Longest wait between retries.
    pub retry_backoff_max_ms: u64,
    /// Losses of its worker after which a job fails (`worker lost`).
    pub max_losses: u32,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            limits: Limits::default(),
            output_cap: aam_protocol::output::DEFAULT_OUTPUT_CAP,
            agents: BTreeMap::new(),
            agent_sources: BTreeMap::new(),
            agent_problems: Vec::new(),
            reconnect_grace_ms: 10_000,
            disconnect_grace_ms: 5_000,
            default_timeout_ms: None,
            default_idle_timeout_ms: None,
            default_grace_ms: 10_000,
            default_retry_backoff_ms: 5_000,
            retry_backoff_max_ms: 300_000,
            max_losses: 3,
        }
    }
}

/// A place in the queue: higher priority first, then arrival order.
type QueuePos = (Reverse<i32>, i64);

/// How an attempt ended, as far as the job's next step is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttemptEnd {
    /// The attempt ended with this status (it may still be retried).
    Final(JobStatus),
    /// Its worker was lost: a new attempt, not counted against retries.
    Lost,
    /// Its worker shut down: requeued, counted as nothing.
    Requeue,
}

/// What `cancel` did.
#[derive(Debug, Default, PartialEq)]
pub struct CancelOutcome {
    /// Jobs that had not started, cancelled at once.
    pub cancelled: Vec<String>,
    /// Running attempts to stop: (worker, attempt, grace).
    pub stopping: Vec<(WorkerId, AttemptRef, u64)>,
    /// Names of the jobs being stopped.
    pub stopping_names: Vec<String>,
}

/// Equal jitter: somewhere in the upper half of `delay`, fixed per (job,
/// attempt) so the model stays deterministic and each gap at least the last.
fn jittered(delay: u64, key: JobKey, attempt: u32) -> u64 {
    let mut x = key.session.0
        ^ ((key.index as u64) << 32)
        ^ ((attempt as u64) << 48)
        ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    delay / 2 + x % (delay / 2 + 1)
}

/// What a worker's registration decided.
#[derive(Debug, Default, PartialEq)]
pub struct Registration {
    /// Attempts the worker reported that are still its own: it keeps running them.
    pub adopted: Vec<AttemptRef>,
    /// Attempts it must kill: not (or no longer) assigned to it.
    pub kill: Vec<AttemptRef>,
    /// Adopted attempts a cancel is still waiting on: stop them (again; the
    /// first order may have been lost with a connection or a restart).
    pub cancel: Vec<(AttemptRef, u64)>,
    /// A previous connection under the same name, now replaced.
    pub replaced: Option<WorkerId>,
}

pub struct State {
    config: StateConfig,
    sessions: BTreeMap<SessionId, SessionEntry>,
    /// Queued jobs by (priority, higher first; then the order they became
    /// queued: FIFO across sessions). May hold stale keys, dropped when met.
    queue: BTreeMap<QueuePos, JobKey>,
    /// Mean durations of successful runs, per agent or command.
    history: History,
    /// Sessions by the idempotency key they were submitted with.
    by_idempotency_key: HashMap<String, SessionId>,
    /// Where each queued job sits in `queue`.
    queued_at: HashMap<JobKey, QueuePos>,
    /// Next position at the back, and (decreasing) at the front, of its priority.
    queue_back: i64,
    queue_front: i64,
    next_session: u64,
    workers: BTreeMap<WorkerId, WorkerEntry>,
    worker_by_name: HashMap<String, WorkerId>,
    /// Running jobs whose worker is gone, with the time they are requeued at.
    orphans: HashMap<JobKey, u64>,
    /// Queued retries waiting for their backoff: (due time, job).
    delayed: BTreeSet<(u64, JobKey)>,
    dirty_jobs: BTreeSet<JobKey>,
    dirty_sessions: BTreeSet<SessionId>,
    outputs: Vec<(JobKey, Vec<u8>)>,
    /// Sessions removed by `gc`, to delete from the store: (id, job count).
    removed: Vec<(SessionId, u32)>,
    /// Outputs of ended attempts until the store holds them, so queries in
    /// between still see them.
    committing_outputs: HashMap<JobKey, (u32, OutputCapture)>,
    next_session_dirty: bool,
    /// Sessions whose progress changed since the last `take_changed_sessions`.
    changed: BTreeSet<SessionId>,
}

impl State {
    pub fn new(config: StateConfig) -> State {
        State {
            config,
            sessions: BTreeMap::new(),
            queue: BTreeMap::new(),
            queued_at: HashMap::new(),
            by_idempotency_key: HashMap::new(),
            history: History::default(),
            queue_back: 0,
            queue_front: -1,
            next_session: 1,
            workers: BTreeMap::new(),
            worker_by_name: HashMap::new(),
            orphans: HashMap::new(),
            delayed: BTreeSet::new(),
            dirty_jobs: BTreeSet::new(),
            dirty_sessions: BTreeSet::new(),
            outputs: Vec::new(),
            removed: Vec::new(),
            committing_outputs: HashMap::new(),
            next_session_dirty: false,
            changed: BTreeSet::new(),
        }
    }

    /// Rebuilds the model from the store at start. Running jobs become
    /// orphans: their workers get `reconnect_grace_ms` to report them.
    pub fn rebuild(config: StateConfig, snapshot: Snapshot, now: u64) -> State {
        let mut state = State::new(config);
        state.next_session = snapshot.next_session;
        let mut jobs_by_session: BTreeMap<SessionId, Vec<JobRecord>> = BTreeMap::new();
        for job in snapshot.jobs {
            jobs_by_session
                .entry(job.key.session)
                .or_default()
                .push(job);
        }
        for record in snapshot.sessions {
            let mut jobs = jobs_by_session.remove(&record.id).unwrap_or_default();
            // Jobs past the session's count are leftovers of an unacknowledged
            // write that reused the id; they are not part of this session.
            jobs.retain(|j| j.key.index < record.job_count);
            if jobs.len() != record.job_count as usize {
                tracing::error!(session = %record.id, expected = record.job_count, found = jobs.len(),
                    "session has missing jobs in the store; skipping it");
                continue;
            }
            state.next_session = state.next_session.max(record.id.0 + 1);
            let id = record.id;
            if let Some(k) = &record.idempotency_key {
                state.by_idempotency_key.insert(k.clone(), id);
            }
            let entry = state.make_entry(record, jobs);
            state.sessions.insert(id, entry);
            state.recheck_session(id, now);
        }
        let deadline = now + state.config.reconnect_grace_ms;
        let mut queued = Vec::new();
        for job in state.sessions.values().flat_map(|s| s.jobs.iter()) {
            if let (JobStatus::Succeeded, Some(exit)) = (job.status, job.exit) {
                state.history.record(&duration_key(job), exit.duration_ms);
            }
            match job.status {
                // A retry's backoff: in `delayed` whatever its due time, so
                // the next tick clears it before the job is queued.
                JobStatus::Queued => match job.not_before_ms {
                    Some(due) => {
                        state.delayed.insert((due, job.key));
                    }
                    None => queued.push(job.key),
                },
                JobStatus::Running => {
                    state.orphans.insert(job.key, deadline);
                }
                _ => {}
            }
        }
        for key in queued {
            state.enqueue(key);
        }
        state
    }

    fn make_entry(&self, record: SessionRecord, jobs: Vec<JobRecord>) -> SessionEntry {
        let mut dependents = vec![Vec::new(); jobs.len()];
        let mut waiting_on = vec![0u32; jobs.len()];
        let mut counts = [0u32; 8];
        let mut by_name = HashMap::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            by_name.insert(job.name.clone(), i as u32);
            counts[status_slot(job.status)] += 1;
            for &(dep, _) in &job.depends_on {
                if let Some(list) = dependents.get_mut(dep as usize) {
                    list.push(i as u32);
                }
                if !jobs
                    .get(dep as usize)
                    .is_some_and(|d| d.status.is_terminal())
                {
                    waiting_on[i] += 1;
                }
            }
        }
        SessionEntry {
            record,
            jobs,
            dependents,
            waiting_on,
            by_name,
            counts,
            live: HashMap::new(),
        }
    }

    /// After a rebuild: settle pending jobs whose dependencies already
    /// decided, and sessions whose jobs all ended.
    fn recheck_session(&mut self, id: SessionId, now: u64) {
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let pending: Vec<u32> = entry
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.status == JobStatus::Pending)
            .map(|(i, _)| i as u32)
            .collect();
        for index in pending {
            let entry = &self.sessions[&id];
            let job = &entry.jobs[index as usize];
            let unmet = job.depends_on.iter().find(|&&(d, when)| {
                let s = entry.jobs[d as usize].status;
                s.is_terminal() && !condition_met(when, s)
            });
            if let Some(&(dep, when)) = unmet {
                let reason = unmet_reason(&entry.jobs[dep as usize], when);
                self.skip(JobKey { session: id, index }, reason, now);
            } else if entry.waiting_on[index as usize] == 0 && !job.gate {
                self.set_status(JobKey { session: id, index }, JobStatus::Queued);
            }
        }
        self.maybe_finish_session(id, now);
    }

    /// Puts a job at the back of its priority in the queue.
    fn enqueue(&mut self, key: JobKey) {
        let priority = self.job(key).map(|j| j.priority).unwrap_or(0);
        let at = (Reverse(priority), self.queue_back);
        self.queue_back += 1;
        self.place(key, at);
    }

    /// Puts a job at the front of its priority (it was dispatched before).
    fn enqueue_front(&mut self, key: JobKey) {
        let priority = self.job(key).map(|j| j.priority).unwrap_or(0);
        let at = (Reverse(priority), self.queue_front);
        self.queue_front -= 1;
        self.place(key, at);
    }

    fn place(&mut self, key: JobKey, at: QueuePos) {
        if let Some(old) = self.queued_at.insert(key, at) {
            self.queue.remove(&old);
        }
        self.queue.insert(at, key);
    }

    /// The session submitted with this idempotency key, and its job count.
    pub fn session_for_key(&self, key: &str) -> Option<(SessionId, u32)> {
        let id = *self.by_idempotency_key.get(key)?;
        Some((id, self.sessions.get(&id)?.jobs.len() as u32))
    }

    pub fn session_exists(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    // ---- submission ----

    /// Validates and stores a batch as a new session.
    pub fn submit(
        &mut self,
        batch: BatchSpec,
        idempotency_key: Option<String>,
        now: u64,
    ) -> Result<(SessionId, u32), SpecErrors> {
        validate(&batch, &self.config.limits)?;
        if let Some(key) = &idempotency_key {
            if key.is_empty() || key.len() > 256 {
                return Err(SpecError::batch("idempotency_key", "must be 1-256 bytes").into());
            }
        }
        let id = SessionId(self.next_session);
        let session_label = id.to_string();
        let mut errors = Vec::new();
        let index_of: HashMap<&str, u32> = batch
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i as u32))
            .collect();
        let mut jobs = Vec::with_capacity(batch.jobs.len());
        for (i, spec) in batch.jobs.iter().enumerate() {
            let (argv, mut env) = match (&spec.command, &spec.agent) {
                (Some(cmd), _) => (cmd.clone(), Vec::new()),
                (None, Some(_)) => {
                    match expand_agent_job(spec, &self.config.agents, &session_label) {
                        Ok(x) => (x.argv, x.env.into_iter().collect()),
                        Err(e) => {
                            errors.push(e);
                            continue;
                        }
                    }
                }
                (None, None) if spec.gate => (Vec::new(), Vec::new()),
                (None, None) => unreachable_spec(&mut errors, &spec.name),
            };
            // The job's own env wins over the agent's.
            env.retain(|(k, _): &(String, String)| !spec.env.contains_key(k));
            env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let depends_on: Vec<(u32, When)> = spec
                .depends_on
                .iter()
                .map(|d| (index_of[d.job.as_str()], d.when))
                .collect();
            let policy = match self.policy_for(spec) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let key = JobKey {
                session: id,
                index: i as u32,
            };
            jobs.push(JobRecord {
                env,
                workdir: spec.workdir.clone(),
                agent: spec.agent.clone(),
                status: if depends_on.is_empty() && !spec.gate {
                    JobStatus::Queued
                } else {
                    JobStatus::Pending
                },
                depends_on,
                policy,
                gate: spec.gate,
                priority: spec.priority,
                requires: spec.requires.clone(),
                reason: (spec.gate && spec.depends_on.is_empty()).then(|| AWAITING.to_string()),
                ..JobRecord::new(key, spec.name.clone(), argv)
            });
        }
        if !errors.is_empty() {
            return Err(SpecErrors(errors));
        }
        let record = SessionRecord {
            id,
            name: batch.name,
            status: SessionStatus::Running,
            job_count: jobs.len() as u32,
            created_at_ms: now,
            finished_at_ms: None,
            max_parallel: batch.max_parallel,
            idempotency_key: idempotency_key.clone(),
        };
        self.next_session += 1;
        self.next_session_dirty = true;
        let count = jobs.len() as u32;
        let queued: Vec<JobKey> = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Queued)
            .map(|j| j.key)
            .collect();
        self.dirty_jobs.extend(jobs.iter().map(|j| j.key));
        let entry = self.make_entry(record, jobs);
        self.sessions.insert(id, entry);
        for key in queued {
            self.enqueue(key);
        }
        self.dirty_sessions.insert(id);
        self.changed.insert(id);
        if let Some(k) = idempotency_key {
            self.by_idempotency_key.insert(k, id);
        }
        Ok((id, count))
    }

    /// Resolves a job's timeouts and retries: its own, else its agent's,
    /// else the manager's defaults.
    fn policy_for(&self, spec: &aam_protocol::spec::JobSpec) -> Result<RunPolicy, SpecError> {
        let agent = spec.agent.as_ref().and_then(|a| self.config.agents.get(a));
        let duration = |field: &str, own: &Option<String>, fallback: Option<&String>| {
            own.as_ref()
                .or(fallback)
                .map(|t| parse_duration_ms(t).map_err(|e| SpecError::job(&spec.name, field, e)))
                .transpose()
        };
        let retry_on = match &spec.retry_on {
            None => vec![JobStatus::Failed, JobStatus::TimedOut],
            Some(list) => list
                .iter()
                .map(|s| match s.as_str() {
                    "timed_out" => JobStatus::TimedOut,
                    _ => JobStatus::Failed,
                })
                .collect(),
        };
        Ok(RunPolicy {
            timeout_ms: duration(
                "timeout",
                &spec.timeout,
                agent.and_then(|a| a.timeout.as_ref()),
            )?
            .or(self.config.default_timeout_ms),
            idle_timeout_ms: duration(
                "idle_timeout",
                &spec.idle_timeout,
                agent.and_then(|a| a.idle_timeout.as_ref()),
            )?
            .or(self.config.default_idle_timeout_ms),
            grace_ms: duration("grace", &spec.grace, None)?.unwrap_or(self.config.default_grace_ms),
            retries: spec.retries.unwrap_or(0),
            retry_backoff_ms: duration("retry_backoff", &spec.retry_backoff, None)?
                .unwrap_or(self.config.default_retry_backoff_ms),
            retry_on,
        })
    }

    // ---- workers ----

    pub fn register_worker(
        &mut self,
        id: WorkerId,
        worker: WorkerEntry,
        reported: &[AttemptRef],
        now: u64,
    ) -> Registration {
        let mut out = Registration::default();
        if let Some(old) = self.worker_by_name.get(&worker.name).copied() {
            self.worker_gone(old, false, now);
            out.replaced = Some(old);
        }
        let name = worker.name.clone();
        self.worker_by_name.insert(name.clone(), id);
        self.workers.insert(id, worker);
        for r in reported {
            let ours = self
                .job(r.job)
                .map(|j| {
                    j.status == JobStatus::Running
                        && j.attempts == r.attempt
                        && j.worker.as_deref() == Some(name.as_str())
                })
                .unwrap_or(false);
            if ours {
                self.orphans.remove(&r.job);
                if let Some(w) = self.workers.get_mut(&id) {
                    w.running.insert(r.job);
                }
                if let Some(job) = self.job(r.job).filter(|j| j.cancel_requested) {
                    out.cancel.push((*r, job.policy.grace_ms));
                }
                out.adopted.push(*r);
            } else {
                out.kill.push(*r);
            }
        }
        out
    }

    /// A worker connection ended: its running jobs wait for it to come back
    /// (`lost`: it went silent past its lease; they are requeued at once).
    pub fn worker_gone(&mut self, id: WorkerId, lost: bool, now: u64) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        if self.worker_by_name.get(&worker.name) == Some(&id) {
            self.worker_by_name.remove(&worker.name);
        }
        let grace = if lost {
            0
        } else {
            self.config.disconnect_grace_ms
        };
        for job in worker.running {
            self.orphans.insert(job, now + grace);
        }
    }

    pub fn worker_draining(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.draining = true;
        }
    }

    pub fn heartbeat(&mut self, id: WorkerId, now: u64) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_heartbeat_ms = now;
        }
    }

    /// Requeues orphaned jobs whose grace ran out (a lost attempt each).
    /// Returns how many.
    pub fn expire_orphans(&mut self, now: u64) -> usize {
        let mut expired: Vec<JobKey> = self
            .orphans
            .iter()
            .filter(|(_, &deadline)| deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        // Requeued jobs go to the front; the earliest must end up first.
        expired.sort();
        let mut requeued = 0;
        for key in expired.into_iter().rev() {
            self.orphans.remove(&key);
            if self.job(key).map(|j| j.status) == Some(JobStatus::Running) {
                let reason = "worker lost".to_string();
                self.end_attempt(key, AttemptEnd::Lost, Some(reason), None, None, now);
                requeued += 1;
            }
        }
        requeued
    }

    /// Moves retries whose backoff is over to the queue. Returns how many.
    pub fn release_delayed(&mut self, now: u64) -> usize {
        let mut released = 0;
        while let Some(&(due, key)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            let waiting = self
                .job(key)
                .is_some_and(|j| j.status == JobStatus::Queued && j.not_before_ms == Some(due));
            if waiting {
                if let Some(job) = self.job_mut(key) {
                    job.not_before_ms = None;
                }
                self.enqueue(key);
                released += 1;
            }
        }
        released
    }

    pub fn next_orphan_deadline(&self) -> Option<u64> {
        self.orphans.values().min().copied()
    }

    // ---- dispatch ----

    /// Assigns queued jobs to free worker slots; each becomes a new attempt.
    pub fn dispatch(&mut self, now: u64) -> Vec<(WorkerId, Assignment)> {
        let capacities: Vec<WorkerCapacity> = self
            .workers
            .iter()
            .map(|(&worker, w)| WorkerCapacity {
                worker,
                free: if w.draining {
                    0
                } else {
                    (w.slots + w.prefetch).saturating_sub(w.running.len() as u32)
                },
                labels: &w.labels,
            })
            .collect();
        if self.queue.is_empty() || capacities.iter().all(|c| c.free == 0) {
            return Vec::new();
        }
        let mut room: HashMap<SessionId, u32> = self
            .sessions
            .iter()
            .filter_map(|(id, e)| {
                let max = e.record.max_parallel?;
                Some((
                    *id,
                    max.saturating_sub(e.counts[status_slot(JobStatus::Running)]),
                ))
            })
            .collect();
        let sessions = &self.sessions;
        let mut stale = Vec::new();
        let candidates = self.queue.iter().filter_map(|(&at, &key)| {
            let Some(job) = sessions
                .get(&key.session)
                .and_then(|e| e.jobs.get(key.index as usize))
            else {
                stale.push(at);
                return None;
            };
            if job.status != JobStatus::Queued || job.not_before_ms.is_some() {
                stale.push(at);
                return None;
            }
            Some(Candidate {
                job: key,
                requires: &job.requires,
            })
        });
        let planned = plan(candidates, &capacities, &mut room);
        for at in stale {
            if let Some(key) = self.queue.remove(&at) {
                self.queued_at.remove(&key);
            }
        }
        for (key, _) in &planned {
            if let Some(at) = self.queued_at.remove(key) {
                self.queue.remove(&at);
            }
        }
        let mut out = Vec::with_capacity(planned.len());
        for (key, worker_id) in planned {
            let Some(worker) = self.workers.get_mut(&worker_id) else {
                continue;
            };
            worker.running.insert(key);
            let worker_name = worker.name.clone();
            self.set_status(key, JobStatus::Running);
            let cap = self.config.output_cap;
            let entry = self
                .sessions
                .get_mut(&key.session)
                .expect("job's session exists");
            entry.live.insert(key.index, OutputCapture::new(cap));
            let session_name = entry.record.name.clone();
            let job = &mut entry.jobs[key.index as usize];
            job.attempts += 1;
            job.worker = Some(worker_name);
            job.started_at_ms = Some(now);
            job.finished_at_ms = None;
            job.exit = None;
            job.reason = None;
            job.progress = None;
            job.progress_message = None;
            job.teardown = None;
            out.push((
                worker_id,
                Assignment {
                    job: key,
                    attempt: job.attempts,
                    session_name,
                    job_name: job.name.clone(),
                    argv: job.argv.clone(),
                    env: job.env.clone(),
                    workdir: job.workdir.clone(),
                    timeout_ms: job.policy.timeout_ms,
                    idle_timeout_ms: job.policy.idle_timeout_ms,
                    grace_ms: job.policy.grace_ms,
                    inputs: Vec::new(),
                },
            ));
        }
        out
    }

    // ---- reports from workers ----

    /// Whether `attempt` is the current, running attempt of its job. Every
    /// report about a job goes through this fence (DESIGN.md invariant 3).
    fn is_current(&self, attempt: AttemptRef) -> bool {
        self.job(attempt.job)
            .map(|j| j.status == JobStatus::Running && j.attempts == attempt.attempt)
            .unwrap_or(false)
    }

    pub fn job_output(&mut self, attempt: AttemptRef, data: &[u8]) -> bool {
        if !self.is_current(attempt) {
            return false;
        }
        let cap = self.config.output_cap;
        if let Some(entry) = self.sessions.get_mut(&attempt.job.session) {
            entry
                .live
                .entry(attempt.job.index)
                .or_insert_with(|| OutputCapture::new(cap))
                .push(data);
        }
        true
    }

    /// Removes sessions that ended before `cutoff` (ms), with their jobs and
    /// outputs; returns (session, job count) of each.
    pub fn gc(&mut self, cutoff: u64) -> Vec<(SessionId, u32)> {
        let old: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|e| {
                e.record.status.is_terminal() && e.record.finished_at_ms.is_some_and(|f| f < cutoff)
            })
            .map(|e| e.record.id)
            .collect();
        let mut out = Vec::new();
        for id in old {
            let Some(entry) = self.sessions.remove(&id) else {
                continue;
            };
            if let Some(key) = &entry.record.idempotency_key {
                self.by_idempotency_key.remove(key);
            }
            for job in &entry.jobs {
                self.dirty_jobs.remove(&job.key);
                self.committing_outputs.remove(&job.key);
                if let Some(at) = self.queued_at.remove(&job.key) {
                    self.queue.remove(&at);
                }
            }
            self.dirty_sessions.remove(&id);
            self.changed.remove(&id);
            let count = entry.jobs.len() as u32;
            self.removed.push((id, count));
            out.push((id, count));
        }
        out
    }

    /// How long the rest of a session should take, from history, with the
    /// slots of the connected workers (and its `max_parallel`).
    pub fn estimate(&self, session: SessionId, now: u64) -> Estimate {
        let Some(entry) = self.sessions.get(&session) else {
            return Estimate::default();
        };
        let mut slots: u32 = self
            .workers
            .values()
            .filter(|w| !w.draining)
            .map(|w| w.slots)
            .sum();
        if let Some(max) = entry.record.max_parallel {
            slots = slots.min(max);
        }
        let left: Vec<usize> = (0..entry.jobs.len())
            .filter(|&i| !entry.jobs[i].status.is_terminal())
            .collect();
        let position: HashMap<usize, usize> =
            left.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        let jobs: Vec<Remaining> = left
            .iter()
            .map(|&i| {
                let job = &entry.jobs[i];
                Remaining {
                    ms: self.expected_remaining(job, now),
                    running: job.status == JobStatus::Running,
                    gate: job.gate,
                    deps: job
                        .depends_on
                        .iter()
                        .filter_map(|&(d, _)| position.get(&(d as usize)).copied())
                        .collect(),
                }
            })
            .collect();
        estimate(&jobs, slots)
    }

    /// A job's expected time until it ends (for a running one, from now).
    fn expected_remaining(&self, job: &JobRecord, now: u64) -> Option<u64> {
        let mean = self.history.mean(&duration_key(job))?;
        Some(match (job.status, job.started_at_ms) {
            (JobStatus::Running, Some(started)) => mean.saturating_sub(now.saturating_sub(started)),
            _ => mean,
        })
    }

    /// Every agent, for `aam agents`.
    pub fn agents(&self) -> (Vec<AgentInfo>, Vec<(String, String)>) {
        let agents = self
            .config
            .agents
            .iter()
            .map(|(name, def)| AgentInfo {
                name: name.clone(),
                source: self
                    .config
                    .agent_sources
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "config".into()),
                description: def.description.clone(),
                model: def.model.clone(),
                tools: def.tools.clone(),
                command: def.command.clone(),
            })
            .collect();
        (agents, self.config.agent_problems.clone())
    }

    pub fn output_cap(&self) -> usize {
        self.config.output_cap
    }

    /// The worker's complete record of an attempt's output replaces ours
    /// (which a restart may have emptied).
    pub fn output_sync(&mut self, attempt: AttemptRef, capture: OutputCapture) -> bool {
        if !self.is_current(attempt) {
            return false;
        }
        if let Some(entry) = self.sessions.get_mut(&attempt.job.session) {
            let ours = entry
                .live
                .get(&attempt.job.index)
                .map(|c| c.total())
                .unwrap_or(0);
            if capture.total() >= ours {
                entry.live.insert(attempt.job.index, capture);
            }
        }
        true
    }

    /// A `::progress::` line of the current attempt.
    pub fn job_progress(
        &mut self,
        attempt: AttemptRef,
        percent: u8,
        message: Option<String>,
    ) -> bool {
        if !self.is_current(attempt) {
            return false;
        }
        if let Some(job) = self.job_mut(attempt.job) {
            job.progress = Some(percent.min(100));
            job.progress_message = message;
        }
        self.changed.insert(attempt.job.session);
        true
    }

    /// Records how an attempt ended. Returns false (and changes nothing) for
    /// a stale attempt, so a job is never finished twice.
    pub fn job_finished(
        &mut self,
        attempt: AttemptRef,
        exit: Option<ExitInfo>,
        stopped: Option<Stopped>,
        reason: Option<String>,
        now: u64,
    ) -> bool {
        if !self.is_current(attempt) {
            return false;
        }
        let key = attempt.job;
        let Some(job) = self.job(key) else {
            return false;
        };
        let succeeded = exit.is_some_and(|e| e.success());
        let human = |ms: Option<u64>| {
            humantime::format_duration(std::time::Duration::from_millis(ms.unwrap_or(0)))
                .to_string()
        };
        let (end, reason) = match stopped.as_ref().map(|s| s.cause) {
            Some(StopCause::Cancelled) => (
                AttemptEnd::Final(JobStatus::Cancelled),
                Some("cancelled".to_string()),
            ),
            Some(StopCause::Timeout) => (
                AttemptEnd::Final(JobStatus::TimedOut),
                Some(format!(
                    "timeout: ran longer than {}",
                    human(job.policy.timeout_ms)
                )),
            ),
            Some(StopCause::Idle) => (
                AttemptEnd::Final(JobStatus::TimedOut),
                Some(format!(
                    "idle: printed nothing for {}",
                    human(job.policy.idle_timeout_ms)
                )),
            ),
            Some(StopCause::Shutdown) | Some(StopCause::Superseded) => (
                AttemptEnd::Requeue,
                Some("its worker shut down".to_string()),
            ),
            None if succeeded => (AttemptEnd::Final(JobStatus::Succeeded), reason),
            None if job.cancel_requested => (
                AttemptEnd::Final(JobStatus::Cancelled),
                Some("cancelled".to_string()),
            ),
            None => {
                let reason = reason.or_else(|| match exit {
                    Some(ExitInfo {
                        signal: Some(sig), ..
                    }) => Some(format!("killed by signal {sig}")),
                    _ => None,
                });
                (AttemptEnd::Final(JobStatus::Failed), reason)
            }
        };
        let output = self
            .sessions
            .get_mut(&key.session)
            .and_then(|e| e.live.remove(&key.index))
            .unwrap_or_else(|| OutputCapture::new(self.config.output_cap));
        // An empty first output needs no record; a later attempt's must
        // replace what an earlier attempt may have left.
        if !output.is_empty() || attempt.attempt > 1 {
            match aam_protocol::codec::encode(&output) {
                Ok(bytes) => self.outputs.push((key, bytes)),
                Err(e) => tracing::error!(job = %key, "cannot encode an output: {e}"),
            }
            self.committing_outputs
                .insert(key, (attempt.attempt, output));
        }
        self.end_attempt(key, end, reason, exit, stopped.map(|s| s.receipt), now);
        true
    }

    /// Ends the current attempt of a running job, records it in the job's
    /// history, and moves the job on: retried after a backoff, requeued,
    /// or ended (releasing or skipping its dependents).
    fn end_attempt(
        &mut self,
        key: JobKey,
        end: AttemptEnd,
        reason: Option<String>,
        exit: Option<ExitInfo>,
        teardown: Option<TeardownReceipt>,
        now: u64,
    ) {
        self.orphans.remove(&key);
        let worker_name = self.job(key).and_then(|j| j.worker.clone());
        if let Some(id) = worker_name.and_then(|n| self.worker_by_name.get(&n).copied()) {
            if let Some(w) = self.workers.get_mut(&id) {
                w.running.remove(&key);
            }
        }
        if let Some(entry) = self.sessions.get_mut(&key.session) {
            entry.live.remove(&key.index);
        }
        let max_losses = self.config.max_losses;
        let backoff_cap = self.config.retry_backoff_max_ms;
        let Some(job) = self.job_mut(key) else {
            return;
        };
        // A job being cancelled is not requeued, whatever stopped it.
        let end = match end {
            AttemptEnd::Lost | AttemptEnd::Requeue if job.cancel_requested => {
                AttemptEnd::Final(JobStatus::Cancelled)
            }
            other => other,
        };
        let outcome = match end {
            AttemptEnd::Final(status) => status,
            AttemptEnd::Lost | AttemptEnd::Requeue => JobStatus::Queued,
        };
        job.history.push(AttemptRecord {
            attempt: job.attempts,
            worker: job.worker.clone(),
            started_at_ms: job.started_at_ms,
            finished_at_ms: Some(now),
            exit,
            outcome,
            reason: reason.clone(),
            teardown: teardown.clone(),
        });
        job.exit = exit;
        job.teardown = teardown;
        job.finished_at_ms = Some(now);
        job.reason = reason.clone();
        enum Next {
            End(JobStatus),
            RetryAfter(u64),
            Requeue,
        }
        let next = match end {
            AttemptEnd::Lost => {
                job.losses += 1;
                if job.losses >= max_losses {
                    job.reason = Some(format!("worker lost ({} times)", job.losses));
                    Next::End(JobStatus::Failed)
                } else {
                    Next::Requeue
                }
            }
            AttemptEnd::Requeue => Next::Requeue,
            AttemptEnd::Final(status @ (JobStatus::Failed | JobStatus::TimedOut)) => {
                job.failures += 1;
                let retry = !job.cancel_requested
                    && job.policy.retry_on.contains(&status)
                    && job.failures <= job.policy.retries;
                if retry {
                    let exp = (job.failures - 1).min(32);
                    let delay = job
                        .policy
                        .retry_backoff_ms
                        .saturating_mul(1u64 << exp)
                        .min(backoff_cap)
                        .max(1);
                    let delay = jittered(delay, key, job.attempts);
                    job.reason = Some(format!(
                        "attempt {} {}{}; retry {} of {} in {}",
                        job.attempts,
                        status,
                        reason.map(|r| format!(" ({r})")).unwrap_or_default(),
                        job.failures,
                        job.policy.retries,
                        humantime::format_duration(std::time::Duration::from_millis(delay)),
                    ));
                    Next::RetryAfter(delay)
                } else {
                    Next::End(status)
                }
            }
            AttemptEnd::Final(status) => Next::End(status),
        };
        match next {
            Next::End(status) => {
                if let (JobStatus::Succeeded, Some(exit)) = (status, exit) {
                    if let Some(job) = self.job(key) {
                        let k = duration_key(job);
                        self.history.record(&k, exit.duration_ms);
                    }
                }
                self.set_status(key, status);
                self.settle_dependents(key, now);
                self.maybe_finish_session(key.session, now);
            }
            Next::RetryAfter(delay) => {
                let due = now + delay;
                if let Some(job) = self.job_mut(key) {
                    job.not_before_ms = Some(due);
                    job.worker = None;
                }
                self.set_status(key, JobStatus::Queued);
                self.delayed.insert((due, key));
            }
            Next::Requeue => {
                if let Some(job) = self.job_mut(key) {
                    job.worker = None;
                }
                self.set_status(key, JobStatus::Queued);
                // It was dispatched before anything still queued: it goes first.
                self.enqueue_front(key);
            }
        }
    }

    /// Cancels a session, or one job of it: jobs not started end at once;
    /// running ones are marked, and their workers are to stop them.
    pub fn cancel(
        &mut self,
        session: SessionId,
        job: Option<&str>,
        grace_ms: Option<u64>,
        now: u64,
    ) -> Result<CancelOutcome, String> {
        let entry = self
            .sessions
            .get(&session)
            .ok_or_else(|| format!("no session {session}"))?;
        let targets: Vec<u32> = match job {
            Some(name) => vec![*entry
                .by_name
                .get(name)
                .ok_or_else(|| format!("session {session} has no job '{name}'"))?],
            None => (0..entry.jobs.len() as u32).collect(),
        };
        let mut out = CancelOutcome::default();
        for index in targets {
            let key = JobKey { session, index };
            let Some(job) = self.job(key) else { continue };
            let (status, name) = (job.status, job.name.clone());
            match status {
                JobStatus::Pending | JobStatus::Queued => {
                    if let Some(job) = self.job_mut(key) {
                        job.finished_at_ms = Some(now);
                        job.not_before_ms = None;
                        job.reason = Some("cancelled before it started".into());
                    }
                    self.set_status(key, JobStatus::Cancelled);
                    self.settle_dependents(key, now);
                    out.cancelled.push(name);
                }
                JobStatus::Running => {
                    let holder = job
                        .worker
                        .as_ref()
                        .and_then(|w| self.worker_by_name.get(w).copied())
                        .filter(|id| {
                            self.workers
                                .get(id)
                                .is_some_and(|w| w.running.contains(&key))
                        });
                    let attempt = AttemptRef {
                        job: key,
                        attempt: job.attempts,
                    };
                    let grace = grace_ms.unwrap_or(job.policy.grace_ms);
                    match holder {
                        Some(worker) => {
                            if let Some(job) = self.job_mut(key) {
                                job.cancel_requested = true;
                            }
                            out.stopping.push((worker, attempt, grace));
                            out.stopping_names.push(name);
                        }
                        None => {
                            let reason = "cancelled while its worker was unreachable".to_string();
                            if let Some(job) = self.job_mut(key) {
                                job.cancel_requested = true;
                            }
                            self.end_attempt(
                                key,
                                AttemptEnd::Final(JobStatus::Cancelled),
                                Some(reason),
                                None,
                                None,
                                now,
                            );
                            out.cancelled.push(name);
                        }
                    }
                }
                _ => {}
            }
        }
        self.maybe_finish_session(session, now);
        Ok(out)
    }

    /// Whether a job has ended for good.
    pub fn is_terminal(&self, key: JobKey) -> bool {
        self.job(key).is_none_or(|j| j.status.is_terminal())
    }

    /// A job ended: each pending dependent whose condition on it is met
    /// waits for one dependency less (and is queued when none is left); one
    /// whose condition can no longer be met is skipped, and so on downstream.
    fn settle_dependents(&mut self, ended: JobKey, now: u64) {
        let session = ended.session;
        let mut stack = vec![ended.index];
        while let Some(at) = stack.pop() {
            let Some(entry) = self.sessions.get(&session) else {
                return;
            };
            let at_job = &entry.jobs[at as usize];
            let mut queue = Vec::new();
            let mut skip = Vec::new();
            for &d in &entry.dependents[at as usize] {
                let dependent = &entry.jobs[d as usize];
                if dependent.status != JobStatus::Pending {
                    continue;
                }
                let when = dependent
                    .depends_on
                    .iter()
                    .find(|(i, _)| *i == at)
                    .map(|(_, w)| *w)
                    .unwrap_or_default();
                if condition_met(when, at_job.status) {
                    queue.push(d);
                } else {
                    skip.push((d, unmet_reason(at_job, when)));
                }
            }
            for d in queue {
                let entry = self.sessions.get_mut(&session).expect("checked above");
                let waiting = &mut entry.waiting_on[d as usize];
                *waiting = waiting.saturating_sub(1);
                if *waiting == 0 {
                    // Every dependency has ended; one may have ended the
                    // wrong way before this one did (after a retry).
                    let entry = &self.sessions[&session];
                    let unmet = entry.jobs[d as usize]
                        .depends_on
                        .iter()
                        .find(|&&(i, when)| !condition_met(when, entry.jobs[i as usize].status));
                    match unmet {
                        Some(&(i, when)) => {
                            let reason = unmet_reason(&entry.jobs[i as usize], when);
                            skip.push((d, reason));
                        }
                        None => self.ready(JobKey { session, index: d }),
                    }
                }
            }
            for (d, reason) in skip {
                self.skip(JobKey { session, index: d }, reason, now);
                stack.push(d);
            }
        }
    }

    /// A job whose dependencies all allow it: queued, or (a gate) awaiting
    /// its decision.
    fn ready(&mut self, key: JobKey) {
        if self.job(key).is_some_and(|j| j.gate) {
            if let Some(job) = self.job_mut(key) {
                job.reason = Some(AWAITING.into());
            }
            self.changed.insert(key.session);
        } else {
            self.set_status(key, JobStatus::Queued);
            self.enqueue(key);
        }
    }

    /// Runs the jobs of a session that did not succeed again (failed, timed
    /// out, cancelled, skipped): each goes back to waiting for its
    /// dependencies, and its next dispatch is a new attempt. What succeeded
    /// stays. Returns the names of the jobs to run again.
    pub fn retry(&mut self, session: SessionId, now: u64) -> Result<Vec<String>, String> {
        let entry = self
            .sessions
            .get(&session)
            .ok_or_else(|| format!("no session {session}"))?;
        let again: Vec<u32> = entry
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| {
                matches!(
                    j.status,
                    JobStatus::Failed
                        | JobStatus::TimedOut
                        | JobStatus::Cancelled
                        | JobStatus::Skipped
                )
            })
            .map(|(i, _)| i as u32)
            .collect();
        if again.is_empty() {
            return Err(format!("{session} has nothing to retry: no job failed, timed out, was cancelled or skipped"));
        }
        let mut names = Vec::new();
        for &index in &again {
            let key = JobKey { session, index };
            self.set_status(key, JobStatus::Pending);
            if let Some(job) = self.job_mut(key) {
                names.push(job.name.clone());
                job.finished_at_ms = None;
                job.exit = None;
                job.reason = None;
                job.failures = 0;
                job.losses = 0;
                job.not_before_ms = None;
                job.cancel_requested = false;
                job.teardown = None;
                job.decision = None;
            }
        }
        // Count again what each waiting job waits for, then start what can.
        let entry = self.sessions.get_mut(&session).expect("checked above");
        for (i, job) in entry.jobs.iter().enumerate() {
            if job.status == JobStatus::Pending {
                entry.waiting_on[i] = job
                    .depends_on
                    .iter()
                    .filter(|&&(d, _)| !entry.jobs[d as usize].status.is_terminal())
                    .count() as u32;
            }
        }
        entry.record.status = SessionStatus::Running;
        entry.record.finished_at_ms = None;
        self.dirty_sessions.insert(session);
        for index in again {
            let key = JobKey { session, index };
            let entry = &self.sessions[&session];
            let job = &entry.jobs[index as usize];
            if job.status != JobStatus::Pending {
                continue; // skipped meanwhile by an earlier one of these
            }
            let unmet = job.depends_on.iter().find(|&&(d, when)| {
                let s = entry.jobs[d as usize].status;
                s.is_terminal() && !condition_met(when, s)
            });
            if let Some(&(dep, when)) = unmet {
                let reason = unmet_reason(&entry.jobs[dep as usize], when);
                self.skip(key, reason, now);
                self.settle_dependents(key, now);
            } else if entry.waiting_on[index as usize] == 0 {
                self.ready(key);
            }
        }
        self.maybe_finish_session(session, now);
        Ok(names)
    }

    /// Approves or rejects a gate awaiting its decision; returns its status.
    pub fn decide(
        &mut self,
        session: SessionId,
        name: &str,
        approve: bool,
        who: &str,
        comment: Option<String>,
        now: u64,
    ) -> Result<JobStatus, String> {
        let entry = self
            .sessions
            .get(&session)
            .ok_or_else(|| format!("no session {session}"))?;
        let index = *entry
            .by_name
            .get(name)
            .ok_or_else(|| format!("session {session} has no job '{name}'"))?;
        let job = &entry.jobs[index as usize];
        if !job.gate {
            return Err(format!("{session}/{name} is not a gate"));
        }
        if let Some(d) = &job.decision {
            let verb = if d.approved { "approved" } else { "rejected" };
            return Err(format!("{session}/{name} was already {verb} by {}", d.by));
        }
        if job.status != JobStatus::Pending || entry.waiting_on[index as usize] > 0 {
            return Err(format!(
                "{session}/{name} is not awaiting approval (it is {}{})",
                job.status,
                if job.status == JobStatus::Pending {
                    ", waiting for its dependencies"
                } else {
                    ""
                }
            ));
        }
        let key = JobKey { session, index };
        let status = if approve {
            JobStatus::Succeeded
        } else {
            JobStatus::Failed
        };
        let verb = if approve { "approved" } else { "rejected" };
        if let Some(job) = self.job_mut(key) {
            job.decision = Some(GateDecision {
                approved: approve,
                by: who.to_string(),
                at_ms: now,
                comment: comment.clone(),
            });
            job.finished_at_ms = Some(now);
            job.started_at_ms.get_or_insert(now);
            job.reason = Some(match &comment {
                Some(c) => format!("{verb} by {who}: {c}"),
                None => format!("{verb} by {who}"),
            });
        }
        self.set_status(key, status);
        self.settle_dependents(key, now);
        self.maybe_finish_session(session, now);
        Ok(status)
    }

    fn skip(&mut self, key: JobKey, reason: String, now: u64) {
        self.set_status(key, JobStatus::Skipped);
        if let Some(job) = self.job_mut(key) {
            job.finished_at_ms = Some(now);
            job.reason = Some(reason);
        }
    }

    fn maybe_finish_session(&mut self, session: SessionId, now: u64) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        if entry.record.status.is_terminal() {
            return;
        }
        let unfinished: u32 = JobStatus::ALL
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| entry.counts[status_slot(*s)])
            .sum();
        if unfinished > 0 {
            return;
        }
        // Skipped jobs do not fail a session by themselves: a handler for a
        // failure that did not happen is skipped in a session that went well.
        let count = |st: JobStatus| entry.counts[status_slot(st)];
        entry.record.status = if count(JobStatus::Failed) + count(JobStatus::TimedOut) > 0 {
            SessionStatus::Failed
        } else if count(JobStatus::Cancelled) > 0 {
            SessionStatus::Cancelled
        } else if count(JobStatus::Succeeded) > 0 {
            SessionStatus::Succeeded
        } else {
            // Nothing ran at all (every job skipped): that is no success.
            SessionStatus::Failed
        };
        entry.record.finished_at_ms = Some(now);
        self.dirty_sessions.insert(session);
        self.changed.insert(session);
        tracing::info!(session = %session, status = %entry.record.status, "session finished");
    }

    fn job(&self, key: JobKey) -> Option<&JobRecord> {
        self.sessions
            .get(&key.session)?
            .jobs
            .get(key.index as usize)
    }

    fn job_mut(&mut self, key: JobKey) -> Option<&mut JobRecord> {
        self.dirty_jobs.insert(key);
        self.sessions
            .get_mut(&key.session)?
            .jobs
            .get_mut(key.index as usize)
    }

    fn set_status(&mut self, key: JobKey, status: JobStatus) {
        let Some(entry) = self.sessions.get_mut(&key.session) else {
            return;
        };
        let Some(job) = entry.jobs.get_mut(key.index as usize) else {
            return;
        };
        entry.counts[status_slot(job.status)] -= 1;
        entry.counts[status_slot(status)] += 1;
        job.status = status;
        self.dirty_jobs.insert(key);
        self.changed.insert(key.session);
    }

    // ---- persistence ----

    /// Everything changed since the last call, for the store.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = Changes::default();
        for id in std::mem::take(&mut self.dirty_sessions) {
            if let Some(s) = self.sessions.get(&id) {
                changes.sessions.push(s.record.clone());
            }
        }
        for key in std::mem::take(&mut self.dirty_jobs) {
            if let Some(j) = self.job(key) {
                changes.jobs.push(j.clone());
            }
        }
        changes.outputs = std::mem::take(&mut self.outputs);
        changes.removed = std::mem::take(&mut self.removed);
        if std::mem::take(&mut self.next_session_dirty) {
            changes.next_session = Some(self.next_session);
        }
        changes
    }

    pub fn take_changed_sessions(&mut self) -> BTreeSet<SessionId> {
        std::mem::take(&mut self.changed)
    }

    // ---- queries ----

    pub fn summary(&self, id: SessionId) -> Option<SessionSummary> {
        self.sessions.get(&id).map(SessionEntry::summary)
    }

    pub fn summaries(&self) -> Vec<SessionSummary> {
        self.sessions.values().map(SessionEntry::summary).collect()
    }

    /// A session with its jobs. Outputs (as `wanted`) are added while their
    /// bytes stay within `budget`; past it a job's `output` is left empty
    /// (its `output_bytes` still says how much there is), so an answer
    /// always fits in a frame. `stored` reads a finished job's output.
    pub fn view(
        &self,
        id: SessionId,
        wanted: OutputWanted,
        budget: usize,
        stored: &OutputReader,
    ) -> Option<SessionView> {
        let entry = self.sessions.get(&id)?;
        let tail = match wanted {
            OutputWanted::Tail(n) => Some(n as usize),
            _ => None,
        };
        let mut spent = 0usize;
        let capacities: Vec<WorkerCapacity> = self
            .workers
            .iter()
            .map(|(&worker, w)| WorkerCapacity {
                worker,
                free: w.slots.saturating_sub(w.running.len() as u32),
                labels: &w.labels,
            })
            .collect();
        let room = entry
            .record
            .max_parallel
            .map(|m| m.saturating_sub(entry.counts[status_slot(JobStatus::Running)]));
        let jobs = entry
            .jobs
            .iter()
            .map(|job| {
                let (mut output, output_bytes) = match wanted {
                    OutputWanted::None => (Vec::new(), 0),
                    _ => self.output_of(job, tail, stored),
                };
                if spent + output.len() > budget {
                    output = Vec::new();
                } else {
                    spent += output.len();
                }
                JobView {
                    name: job.name.clone(),
                    status: job.status,
                    attempts: job.attempts,
                    exit_code: job.exit.and_then(|e| e.code),
                    signal: job.exit.and_then(|e| e.signal),
                    worker: job.worker.clone(),
                    started_at_ms: job.started_at_ms,
                    finished_at_ms: job.finished_at_ms,
                    duration_ms: job.exit.map(|e| e.duration_ms),
                    reason: self.waiting_reason(entry, job, &capacities, room),
                    expected_remaining_ms: (job.status == JobStatus::Running)
                        .then(|| self.expected_remaining(job, now_ms()))
                        .flatten(),
                    gate: job.gate,
                    decision: job.decision.clone(),
                    priority: job.priority,
                    requires: job.requires.clone(),
                    progress: job.progress,
                    progress_message: job.progress_message.clone(),
                    teardown: job.teardown.clone(),
                    history: job.history.clone(),
                    depends_on: job
                        .depends_on
                        .iter()
                        .map(|&(d, when)| Dependency {
                            job: entry.jobs[d as usize].name.clone(),
                            when,
                        })
                        .collect(),
                    output,
                    output_bytes,
                }
            })
            .collect();
        Some(SessionView {
            summary: entry.summary(),
            jobs,
            eta: self.estimate(id, now_ms()),
        })
    }

    /// Why a job is as it is: for a job that waits, what it waits for.
    fn waiting_reason(
        &self,
        entry: &SessionEntry,
        job: &JobRecord,
        capacities: &[WorkerCapacity],
        room: Option<u32>,
    ) -> Option<String> {
        match job.status {
            JobStatus::Queued if job.not_before_ms.is_none() => Some(why_waiting(
                &job.requires,
                capacities,
                room,
                entry.record.max_parallel,
            )),
            JobStatus::Pending if !job.gate || entry.waiting_on[job.key.index as usize] > 0 => {
                let waiting: Vec<&str> = job
                    .depends_on
                    .iter()
                    .map(|&(d, _)| &entry.jobs[d as usize])
                    .filter(|d| !d.status.is_terminal())
                    .map(|d| d.name.as_str())
                    .collect();
                Some(format!("waiting for dependencies: {}", waiting.join(", ")))
            }
            _ => job.reason.clone(),
        }
    }

    /// A job's output as captured: live for a running job, from memory
    /// while its end is being committed, else from the store.
    fn capture_of(&self, job: &JobRecord, stored: &OutputReader) -> Option<OutputCapture> {
        let live = self
            .sessions
            .get(&job.key.session)
            .and_then(|s| s.live.get(&job.key.index));
        match (job.status, live) {
            (JobStatus::Running, Some(capture)) => return Some(capture.clone()),
            // Running but nothing heard yet (say, after a restart, before
            // the worker resends it): the stored output is an older attempt's.
            (JobStatus::Running, None) => return None,
            _ => {}
        }
        if let Some((_, capture)) = self.committing_outputs.get(&job.key) {
            return Some(capture.clone());
        }
        stored(job.key)
    }

    /// A job's kept output (its tail when `tail` is set) and the bytes it
    /// printed in all.
    fn output_of(
        &self,
        job: &JobRecord,
        tail: Option<usize>,
        stored: &OutputReader,
    ) -> (Vec<u8>, u64) {
        let Some(capture) = self.capture_of(job, stored) else {
            return (Vec::new(), 0);
        };
        let full = capture.render();
        let kept = match tail {
            Some(n) => tail_of(&full, n).to_vec(),
            None => full,
        };
        (kept, capture.total())
    }

    /// A job's status, what it printed from byte offset `from` on, and the
    /// bytes it printed in all (the offset to ask from next time).
    pub fn logs(
        &self,
        session: SessionId,
        name: &str,
        from: u64,
        stored: &OutputReader,
    ) -> Result<(JobStatus, u32, Vec<u8>, u64), String> {
        let entry = self
            .sessions
            .get(&session)
            .ok_or_else(|| format!("no session {session}"))?;
        let index = *entry
            .by_name
            .get(name)
            .ok_or_else(|| format!("session {session} has no job '{name}'"))?;
        let job = &entry.jobs[index as usize];
        Ok(match self.capture_of(job, stored) {
            Some(capture) => (
                job.status,
                job.attempts,
                capture.since(from),
                capture.total(),
            ),
            None => (job.status, job.attempts, Vec::new(), 0),
        })
    }

    /// A job's dependencies as they ended, with the tail of their output:
    /// up to `INPUT_OUTPUT_CAP` each and `INPUTS_BUDGET` in all.
    pub fn inputs_for(&self, key: JobKey, stored: &OutputReader) -> Vec<InputRecord> {
        let Some(entry) = self.sessions.get(&key.session) else {
            return Vec::new();
        };
        let Some(job) = entry.jobs.get(key.index as usize) else {
            return Vec::new();
        };
        let share = (INPUTS_BUDGET / job.depends_on.len().max(1)).min(INPUT_OUTPUT_CAP);
        // Names and reasons count too, so a huge fan-in still fits a frame:
        // past the budget the rest are summarised in one line.
        let mut spent = 0usize;
        let mut out = Vec::new();
        for (listed, &(d, when)) in job.depends_on.iter().enumerate() {
            let dep = &entry.jobs[d as usize];
            let (output, output_bytes) = self.output_of(dep, Some(share), stored);
            spent +=
                dep.name.len() + dep.reason.as_ref().map_or(0, |r| r.len()) + output.len() + 64;
            if spent > INPUTS_BUDGET {
                out.push(InputRecord {
                    name: "…".into(),
                    when,
                    status: JobStatus::Skipped,
                    exit_code: None,
                    reason: Some(format!(
                        "{} more dependencies not listed (the inputs are capped at {INPUTS_BUDGET} bytes)",
                        job.depends_on.len() - listed
                    )),
                    output: Vec::new(),
                    output_bytes: 0,
                });
                break;
            }
            out.push(InputRecord {
                name: dep.name.clone(),
                when,
                status: dep.status,
                exit_code: dep.exit.and_then(|e| e.code),
                reason: dep.reason.clone(),
                output,
                output_bytes,
            });
        }
        out
    }

    pub fn job_depends_on_nothing(&self, key: JobKey) -> bool {
        self.job(key).is_none_or(|j| j.depends_on.is_empty())
    }

    /// The attempt whose output is waiting for its commit, if any.
    pub fn committing_attempt(&self, key: JobKey) -> Option<u32> {
        self.committing_outputs.get(&key).map(|(a, _)| *a)
    }

    /// Outputs of these (job, attempt)s are durable in the store now.
    pub fn outputs_committed(&mut self, committed: &[(JobKey, u32)]) {
        for (key, attempt) in committed {
            if self.committing_outputs.get(key).map(|(a, _)| a) == Some(attempt) {
                self.committing_outputs.remove(key);
            }
        }
    }

    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .values()
            .map(|w| WorkerView {
                name: w.name.clone(),
                address: w.address.clone(),
                slots: w.slots,
                running: w
                    .running
                    .iter()
                    .map(|k| {
                        let job = self.job(*k).map(|j| j.name.as_str()).unwrap_or("?");
                        format!("{}/{}", k.session, job)
                    })
                    .collect(),
                labels: w.labels.clone(),
                connected_at_ms: w.connected_at_ms,
                last_heartbeat_ms: w.last_heartbeat_ms,
            })
            .collect()
    }

    pub fn worker_name(&self, id: WorkerId) -> Option<&str> {
        self.workers.get(&id).map(|w| w.name.as_str())
    }
}

fn unreachable_spec(
    errors: &mut Vec<SpecError>,
    name: &str,
) -> (Vec<String>, Vec<(String, String)>) {
    // `validate` already refused jobs with neither command nor agent.
    errors.push(SpecError::job(
        name,
        "command",
        "each job needs 'command' or 'agent'",
    ));
    (Vec::new(), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::spec::JobSpec;

    fn config() -> StateConfig {
        StateConfig {
            output_cap: 1024,
            reconnect_grace_ms: 1000,
            disconnect_grace_ms: 1000,
            ..StateConfig::default()
        }
    }

    fn batch(jobs: Vec<JobSpec>) -> BatchSpec {
        BatchSpec {
            max_parallel: None,
            name: "b".into(),
            jobs,
        }
    }

    fn job(name: &str, deps: &[&str]) -> JobSpec {
        JobSpec {
            name: name.into(),
            command: Some(vec!["true".into()]),
            depends_on: deps.iter().map(|d| Dependency::after(d)).collect(),
            ..Default::default()
        }
    }

    fn worker(name: &str, slots: u32) -> WorkerEntry {
        WorkerEntry {
            name: name.into(),
            address: "test".into(),
            slots,
            prefetch: 0,
            labels: BTreeMap::new(),
            running: BTreeSet::new(),
            draining: false,
            connected_at_ms: 0,
            last_heartbeat_ms: 0,
        }
    }

    fn ok() -> Option<ExitInfo> {
        Some(ExitInfo {
            code: Some(0),
            signal: None,
            duration_ms: 1,
        })
    }

    fn fail() -> Option<ExitInfo> {
        Some(ExitInfo {
            code: Some(1),
            signal: None,
            duration_ms: 1,
        })
    }

    fn attempt_of(a: &Assignment) -> AttemptRef {
        AttemptRef {
            job: a.job,
            attempt: a.attempt,
        }
    }

    fn status(state: &State, session: SessionId, name: &str) -> JobStatus {
        state.logs(session, name, 0, &|_| None).unwrap().0
    }

    #[test]
    fn dependencies_gate_dispatch_and_failures_skip_downstream() {
        let mut s = State::new(config());
        let batch = batch(vec![
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["b"]),
            job("d", &[]),
        ]);
        let (id, n) = s.submit(batch, None, 0).unwrap();
        assert_eq!(n, 4);
        s.register_worker(1, worker("w", 8), &[], 0);
        let first = s.dispatch(1);
        let names: Vec<&str> = first.iter().map(|(_, a)| a.job_name.as_str()).collect();
        assert_eq!(names, vec!["a", "d"]);
        assert!(s.job_finished(attempt_of(&first[0].1), ok(), None, None, 2));
        let second = s.dispatch(3);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].1.job_name, "b");
        assert!(s.job_finished(attempt_of(&second[0].1), fail(), None, None, 4));
        assert_eq!(status(&s, id, "c"), JobStatus::Skipped);
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Running);
        assert!(s.job_finished(attempt_of(&first[1].1), ok(), None, None, 5));
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Failed);
    }

    #[test]
    fn queued_jobs_are_dispatched_fifo_across_sessions() {
        let mut s = State::new(config());
        let batch = |name: &str| BatchSpec {
            max_parallel: None,
            name: name.into(),
            jobs: (0..2).map(|i| job(&format!("{name}{i}"), &[])).collect(),
        };
        s.submit(batch("a"), None, 0).unwrap();
        s.submit(batch("b"), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        let mut order = Vec::new();
        for t in 0..4 {
            let (_, a) = s.dispatch(t).pop().unwrap();
            order.push(a.job_name.clone());
            s.job_finished(attempt_of(&a), ok(), None, None, t);
        }
        assert_eq!(order, vec!["a0", "a1", "b0", "b1"]);
    }

    #[test]
    fn a_stale_or_repeated_report_changes_nothing() {
        let mut s = State::new(config());
        let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        let a = attempt_of(&s.dispatch(0)[0].1);
        let stale = AttemptRef {
            attempt: a.attempt + 1,
            ..a
        };
        assert!(!s.job_finished(stale, fail(), None, None, 1));
        assert!(s.job_finished(a, ok(), None, None, 1));
        assert!(!s.job_finished(a, fail(), None, None, 2));
        assert_eq!(status(&s, id, "a"), JobStatus::Succeeded);
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Succeeded);
    }

    #[test]
    fn orphans_are_adopted_on_reconnect_or_requeued_after_grace() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[]), job("b", &[])]), None, 0)
            .unwrap();
        s.register_worker(1, worker("w", 2), &[], 0);
        let assigned: Vec<AttemptRef> = s.dispatch(0).iter().map(|(_, a)| attempt_of(a)).collect();
        s.worker_gone(1, false, 100);
        // Back before the grace ran out, still running only the first job.
        let reg = s.register_worker(2, worker("w", 2), &assigned[..1], 200);
        assert_eq!(reg.adopted, assigned[..1]);
        assert_eq!(s.expire_orphans(1099), 0);
        assert_eq!(s.expire_orphans(1100), 1);
        let again = s.dispatch(1200);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.job, assigned[1].job);
        assert_eq!(again[0].1.attempt, 2);
        // The old attempt's late report is fenced off.
        assert!(!s.job_finished(assigned[1], ok(), None, None, 1300));
    }

    #[test]
    fn worker_losses_requeue_without_using_retries_until_the_limit() {
        let mut s = State::new(config());
        let mut spec = job("a", &[]);
        spec.retries = Some(5);
        let (id, _) = s.submit(batch(vec![spec]), None, 0).unwrap();
        for round in 0..3u64 {
            let worker_id = 10 + round;
            s.register_worker(worker_id, worker(&format!("w{round}"), 1), &[], round * 10);
            assert_eq!(s.dispatch(round * 10).len(), 1, "round {round}");
            s.worker_gone(worker_id, true, round * 10 + 1);
            s.expire_orphans(round * 10 + 1);
        }
        let view = s.view(id, OutputWanted::None, 0, &|_| None).unwrap();
        let a = &view.jobs[0];
        assert_eq!(a.status, JobStatus::Failed);
        assert_eq!(a.reason.as_deref(), Some("worker lost (3 times)"));
        assert_eq!(a.history.len(), 3);
        assert!(a.history.iter().all(|h| h.outcome == JobStatus::Queued));
    }

    #[test]
    fn cancel_ends_unstarted_jobs_at_once_and_asks_workers_to_stop_running_ones() {
        let mut s = State::new(config());
        let jobs = vec![job("run", &[]), job("wait", &[]), job("after", &["run"])];
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        let running = attempt_of(&s.dispatch(0)[0].1);
        let out = s.cancel(id, None, Some(250), 1).unwrap();
        assert_eq!(out.cancelled, vec!["wait", "after"]);
        assert_eq!(out.stopping, vec![(1, running, 250)]);
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Running);
        // The worker stops it: the stop is the end of the job.
        let stopped = Stopped {
            cause: StopCause::Cancelled,
            receipt: TeardownReceipt::default(),
        };
        assert!(s.job_finished(running, ok(), Some(stopped), None, 2));
        assert_eq!(status(&s, id, "run"), JobStatus::Cancelled);
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Cancelled);
        assert!(s.dispatch(3).is_empty());
    }

    #[test]
    fn a_cancel_is_ordered_again_when_the_worker_reconnects() {
        let mut s = State::new(config());
        let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        let running = attempt_of(&s.dispatch(0)[0].1);
        let out = s.cancel(id, None, Some(300), 1).unwrap();
        assert_eq!(out.stopping.len(), 1);
        // The connection (or the manager) dies before the stop arrives; the
        // worker comes back still running the job.
        s.worker_gone(1, false, 2);
        let reg = s.register_worker(2, worker("w", 1), &[running], 3);
        assert_eq!(reg.adopted, vec![running]);
        assert_eq!(reg.cancel, vec![(running, 10_000)]);
    }

    #[test]
    fn cancelling_a_job_whose_worker_is_gone_ends_it_at_once() {
        let mut s = State::new(config());
        let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        s.dispatch(0);
        s.worker_gone(1, false, 1);
        let out = s.cancel(id, Some("a"), None, 2).unwrap();
        assert_eq!(out.cancelled, vec!["a"]);
        assert!(out.stopping.is_empty());
        assert_eq!(status(&s, id, "a"), JobStatus::Cancelled);
        assert_eq!(
            s.expire_orphans(1_000_000),
            0,
            "a cancelled job is not requeued"
        );
    }

    #[test]
    fn a_retry_whose_backoff_passed_during_a_restart_still_runs() {
        let mut s = State::new(config());
        let mut spec = job("a", &[]);
        spec.retries = Some(1);
        let (id, _) = s.submit(batch(vec![spec]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        let first = attempt_of(&s.dispatch(0)[0].1);
        assert!(s.job_finished(first, fail(), None, None, 10));
        let changes = s.take_changes();
        let snapshot = Snapshot {
            sessions: changes.sessions,
            jobs: changes.jobs,
            next_session: 2,
        };
        // Restarted an hour later: the backoff is long over.
        let mut r = State::rebuild(config(), snapshot, 3_600_000);
        r.register_worker(1, worker("w", 1), &[], 3_600_000);
        r.release_delayed(3_600_000);
        let again = r.dispatch(3_600_000);
        assert_eq!(again.len(), 1, "the retry was lost in the restart");
        assert_eq!(again[0].1.attempt, 2);
        assert_eq!(status(&r, id, "a"), JobStatus::Running);
    }

    #[test]
    fn retry_does_not_run_a_job_whose_other_condition_already_failed() {
        let mut s = State::new(config());
        let mut x = job("x", &["w"]);
        x.depends_on = vec![Dependency {
            job: "w".into(),
            when: When::Failed,
        }];
        let mut y = job("y", &[]);
        y.depends_on = vec![
            Dependency {
                job: "x".into(),
                when: When::Finished,
            },
            Dependency {
                job: "z".into(),
                when: When::Failed,
            },
        ];
        let jobs = vec![job("w", &[]), job("z", &[]), x, y];
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w1", 4), &[], 0);
        for (_, a) in s.dispatch(0) {
            s.job_finished(attempt_of(&a), ok(), None, None, 1);
        }
        assert_eq!(status(&s, id, "x"), JobStatus::Skipped);
        assert_eq!(status(&s, id, "y"), JobStatus::Skipped);
        s.retry(id, 2).unwrap();
        assert_eq!(
            status(&s, id, "y"),
            JobStatus::Skipped,
            "z succeeded: y must not run"
        );
        assert!(s.dispatch(3).is_empty());
    }

    #[test]
    fn gc_leaves_no_queue_entries_behind() {
        let mut s = State::new(config());
        let jobs = (0..3).map(|i| job(&format!("j{i}"), &[])).collect();
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.cancel(id, None, None, 1).unwrap();
        assert_eq!(s.gc(2).len(), 1);
        assert!(s.queue.is_empty() && s.queued_at.is_empty());
    }

    #[test]
    fn a_prefetching_worker_gets_slots_plus_prefetch_assignments() {
        let mut s = State::new(config());
        let jobs = (0..10).map(|i| job(&format!("j{i}"), &[])).collect();
        s.submit(batch(jobs), None, 0).unwrap();
        let mut w = worker("w", 2);
        w.prefetch = 3;
        s.register_worker(1, w, &[], 0);
        assert_eq!(s.dispatch(0).len(), 5);
        assert!(s.dispatch(0).is_empty());
    }

    #[test]
    fn a_worker_reporting_jobs_that_are_not_its_own_is_told_to_kill_them() {
        let mut s = State::new(config());
        let bogus = AttemptRef {
            job: JobKey {
                session: SessionId(99),
                index: 0,
            },
            attempt: 1,
        };
        let reg = s.register_worker(1, worker("w", 1), &[bogus], 0);
        assert_eq!(reg.kill, vec![bogus]);
    }

    #[test]
    fn rebuild_restores_queue_and_orphans() {
        let mut s = State::new(config());
        let (id, _) = s
            .submit(
                batch(vec![job("a", &[]), job("b", &[]), job("c", &["a"])]),
                None,
                0,
            )
            .unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        let running = attempt_of(&s.dispatch(0)[0].1);
        let changes = s.take_changes();
        let snapshot = Snapshot {
            sessions: changes.sessions,
            jobs: changes.jobs,
            next_session: changes.next_session.unwrap(),
        };
        let mut r = State::rebuild(config(), snapshot, 10);
        assert_eq!(r.summary(id).unwrap().count(JobStatus::Running), 1);
        let reg = r.register_worker(5, worker("w", 2), &[running], 20);
        assert_eq!(reg.adopted, vec![running]);
        let next = r.dispatch(30);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1.job_name, "b");
        assert!(r.job_finished(running, ok(), None, None, 40));
        assert_eq!(status(&r, id, "c"), JobStatus::Queued);
        let (new_id, _) = r
            .submit(
                BatchSpec {
                    max_parallel: None,
                    name: "n".into(),
                    jobs: vec![job("x", &[])],
                },
                None,
                50,
            )
            .unwrap();
        assert_eq!(new_id, SessionId(id.0 + 1));
    }

    #[test]
    fn a_view_keeps_outputs_within_its_budget_and_sees_uncommitted_ones() {
        let mut s = State::new(config());
        let jobs = (0..3).map(|i| job(&format!("j{i}"), &[])).collect();
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w", 3), &[], 0);
        for (_, a) in s.dispatch(0) {
            let attempt = attempt_of(&a);
            s.job_output(attempt, &[b'x'; 400]);
            s.job_finished(attempt, ok(), None, None, 1);
        }
        // Nothing is in the store yet: the outputs come from memory.
        let nothing = |_| None;
        let view = s.view(id, OutputWanted::All, 1000, &nothing).unwrap();
        let sizes: Vec<(usize, u64)> = view
            .jobs
            .iter()
            .map(|j| (j.output.len(), j.output_bytes))
            .collect();
        assert_eq!(sizes, vec![(400, 400), (400, 400), (0, 400)]);
        let tails = s.view(id, OutputWanted::Tail(10), 1000, &nothing).unwrap();
        assert!(tails.jobs.iter().all(|j| j.output.len() == 10));
        let committed: Vec<(JobKey, u32)> = view
            .jobs
            .iter()
            .enumerate()
            .map(|(i, _)| {
                (
                    JobKey {
                        session: id,
                        index: i as u32,
                    },
                    1,
                )
            })
            .collect();
        s.outputs_committed(&committed);
        let after = s.view(id, OutputWanted::All, 1000, &nothing).unwrap();
        assert!(
            after.jobs.iter().all(|j| j.output_bytes == 0),
            "forgotten once durable"
        );
    }

    #[test]
    fn output_is_capped_and_stored_at_the_end() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0);
        let a = attempt_of(&s.dispatch(0)[0].1);
        s.take_changes();
        for _ in 0..10 {
            assert!(s.job_output(a, &[b'x'; 1000]));
        }
        s.job_finished(a, ok(), None, None, 1);
        let changes = s.take_changes();
        assert_eq!(changes.outputs.len(), 1);
        let stored: OutputCapture = aam_protocol::codec::decode(&changes.outputs[0].1).unwrap();
        let out = stored.render();
        assert!(out.len() < 1100, "{}", out.len());
        assert!(String::from_utf8_lossy(&out).contains("8976 bytes of output omitted"));
        assert_eq!(stored.total(), 10_000);
    }
}
