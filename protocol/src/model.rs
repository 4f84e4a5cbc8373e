//! Sessions and jobs as the manager keeps them and the store persists them,
//! and the views clients receive.

use crate::agent_run::{AgentFormat, AgentRun, AgentView, LimitPause};
use crate::ids::{JobKey, SessionId};
use crate::worktree::{Isolation, JobChange, VariantPick};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting on dependencies (or, later, a gate).
    Pending,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// An upstream job did not succeed.
    Skipped,
}

impl JobStatus {
    pub const ALL: [JobStatus; 8] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::TimedOut,
        JobStatus::Skipped,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            JobStatus::Pending | JobStatus::Queued | JobStatus::Running
        )
    }

    /// The name users see (`timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl SessionStatus {
    pub fn is_terminal(self) -> bool {
        self != SessionStatus::Running
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Running => "running",
            SessionStatus::Succeeded => "succeeded",
            SessionStatus::Failed => "failed",
            SessionStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub duration_ms: u64,
}

impl ExitInfo {
    /// The "exit" of an attempt whose process never started (it could not
    /// be spawned, or was stopped while waiting for a slot).
    pub fn not_started() -> ExitInfo {
        ExitInfo {
            code: None,
            signal: None,
            duration_ms: 0,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Whether it is `not_started`'s.
    pub fn is_not_started(&self) -> bool {
        *self == ExitInfo::not_started()
    }
}

/// Why aam stopped a running attempt instead of letting it end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopCause {
    /// `aam cancel`.
    Cancelled,
    /// It ran past its `timeout`.
    Timeout,
    /// It printed nothing for its `idle_timeout`.
    Idle,
    /// Its worker shut down (the job is requeued, not failed).
    Shutdown,
    /// It is not this worker's to run (any more).
    Superseded,
    /// It spent more than its `max_cost_usd`.
    Budget,
}

impl StopCause {
    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::Cancelled => "cancelled",
            StopCause::Timeout => "timeout",
            StopCause::Idle => "idle",
            StopCause::Shutdown => "shutdown",
            StopCause::Superseded => "superseded",
            StopCause::Budget => "budget",
        }
    }
}

/// One signal sent while stopping a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalSent {
    pub pid: u32,
    pub signal: i32,
    pub at_ms: u64,
}

/// What stopping a job did: every signal sent to which process, and the
/// processes still alive afterwards (none, normally).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownReceipt {
    pub signals: Vec<SignalSent>,
    pub survivors: Vec<u32>,
}

/// How one attempt of a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// Its worker was lost or shut down: the job went back to the queue.
    Requeued,
    /// It ended on a rate or usage limit: the job went back to the queue
    /// without using a retry, and its limit group is paused.
    Limited,
}

impl AttemptOutcome {
    /// The name users see (`status --json`'s `outcome`). A requeued attempt
    /// shows the status its job went back to, `queued`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Requeued => "queued",
            AttemptOutcome::Limited => "limited",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt of a job, kept after it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub exit: Option<ExitInfo>,
    pub outcome: AttemptOutcome,
    pub reason: Option<String>,
    pub teardown: Option<TeardownReceipt>,
    /// What its agent did, for an agent job. Boxed: most jobs are
    /// commands, and a finished job keeps this record for good (288 bytes
    /// inline against 8).
    pub agent_run: Option<Box<AgentRun>>,
    /// A worktree job's workspace `setup` and `teardown` times.
    #[serde(default)]
    pub setup_ms: Option<u64>,
    #[serde(default)]
    pub teardown_ms: Option<u64>,
}

/// A person's decision on a gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDecision {
    pub approved: bool,
    /// The name of the token that decided (from the manager's config).
    pub by: String,
    pub at_ms: u64,
    pub comment: Option<String>,
}

/// How a job is run and retried, resolved from its spec, its agent and the
/// manager's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunPolicy {
    pub timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    /// Between SIGTERM and SIGKILL when the job is stopped.
    pub grace_ms: u64,
    pub retries: u32,
    pub retry_backoff_ms: u64,
    /// Which endings are retried (`failed`, `timed_out`).
    pub retry_on: Vec<JobStatus>,
}

/// Hands out one shared copy of each distinct run policy, so that the
/// jobs of a batch (a million, maybe) do not each hold their own 80 bytes.
/// Used as records are made (at a submit) and as they are read back (at a
/// start): each record's own copy is dropped at once, so its place is
/// taken again by the next record's, not left as a hole among the records.
/// A batch has a handful of distinct policies (one per agent, say); past
/// `KEPT` of them the rest stay unshared.
#[derive(Debug, Default)]
pub struct SharedPolicies(Vec<Arc<RunPolicy>>);

impl SharedPolicies {
    const KEPT: usize = 8;

    /// The shared copy of `policy` (read back with its record).
    pub fn share(&mut self, policy: Arc<RunPolicy>) -> Arc<RunPolicy> {
        match self.find(&policy) {
            Some(shared) => shared,
            None => self.keep(policy),
        }
    }

    /// The shared copy of a policy just resolved.
    pub fn share_new(&mut self, policy: RunPolicy) -> Arc<RunPolicy> {
        match self.find(&policy) {
            Some(shared) => shared,
            None => self.keep(Arc::new(policy)),
        }
    }

    fn find(&self, policy: &RunPolicy) -> Option<Arc<RunPolicy>> {
        self.0.iter().find(|p| ***p == *policy).cloned()
    }

    fn keep(&mut self, policy: Arc<RunPolicy>) -> Arc<RunPolicy> {
        if self.0.len() < Self::KEPT {
            self.0.push(Arc::clone(&policy));
        }
        policy
    }
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub name: String,
    pub status: SessionStatus,
    pub job_count: u32,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub max_parallel: Option<u32>,
    pub idempotency_key: Option<String>,
    /// Most the session's agents may spend, in USD; none: no limit.
    pub max_cost_usd: Option<f64>,
}

/// A job as stored: what to run and where it is in its life. Its `Debug`
/// hides secrets (`secret::debug_redacted`).
///
/// A million of them may be queued at once, so what only some jobs get
/// (a working directory, a reason, an exit, a cost cap, a branch base, ...)
/// is an `Option<Box<_>>`: 8 bytes inline when unset, and bincode writes a
/// box as what it holds, so boxing a field does not change the stored
/// format. Read such a field through its accessor (`reason()`, `exit()`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub key: JobKey,
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<Box<String>>,
    pub agent: Option<String>,
    /// Jobs (indices in the same session) this one waits for, and what
    /// each must have done.
    pub depends_on: Vec<(u32, crate::spec::When)>,
    pub status: JobStatus,
    /// Number of dispatches so far; the current attempt is this number.
    pub attempts: u32,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub exit: Option<Box<ExitInfo>>,
    /// Why the job ended as it did, when the status alone does not say.
    pub reason: Option<Box<String>>,
    /// Shared (`share_policies`): the jobs of a batch mostly run under
    /// one policy, and it never changes after the submit. Stored as the
    /// policy itself.
    pub policy: Arc<RunPolicy>,
    /// Attempts that ended failed or timed out (counted against `retries`).
    pub failures: u32,
    /// Attempts lost with their worker (not counted against `retries`).
    pub losses: u32,
    /// A retry waits until then.
    pub not_before_ms: Option<u64>,
    /// From `::progress::` lines of the current attempt.
    pub progress: Option<u8>,
    pub progress_message: Option<Box<String>>,
    /// Set by `aam cancel` while the attempt is being stopped.
    pub cancel_requested: bool,
    pub teardown: Option<Box<TeardownReceipt>>,
    /// Ended attempts, oldest first.
    pub history: Vec<AttemptRecord>,
    /// A gate: runs nothing, waits for a decision.
    pub gate: bool,
    pub decision: Option<Box<GateDecision>>,
    pub priority: i32,
    /// Worker labels it needs.
    pub requires: BTreeMap<String, String>,
    /// How its agent's output is read; none for a plain command or a gate.
    pub format: Option<AgentFormat>,
    /// The usage-limit group of its agent (by default the agent's name).
    pub limit_group: Option<String>,
    /// Most this job's agent may spend, in USD.
    pub max_cost_usd: Option<Box<f64>>,
    /// The worker it must run on (a follow-up resumes a conversation that
    /// lives in that machine's files).
    pub pinned_worker: Option<Box<String>>,
    /// What its current (or last) attempt's agent did (boxed: most queued
    /// jobs have none, and a job record should stay small).
    pub agent_run: Option<Box<AgentRun>>,
    pub isolation: Isolation,
    /// What a worktree job's branch starts from, as given: a ref or commit,
    /// or `job:NAME`.
    pub base: Option<Box<String>>,
    /// Run in its worktree after it ends, before the commit (a variant's
    /// score; a job whose verify fails has failed).
    pub verify: Option<Box<Vec<String>>>,
    /// For a variant of a job run as N (`fix.2`): its number, 1 to N.
    pub variant: Option<u32>,
    /// For a job run as N variants: the indices of its variant jobs; it
    /// runs nothing itself and ends with the pick.
    pub variant_jobs: Vec<u32>,
    /// Boxed, like the other parts only some jobs get: a queued job's
    /// record stays small (a million of them are queued at once).
    pub pick: Option<Box<VariantPick>>,
    /// What a worktree job changed (the winner's, for a job of variants).
    pub change: Option<Box<JobChange>>,
    /// A follow-up continues this branch in a worktree at this key's path
    /// (`s4/fix`: its first job's), rather than a new branch.
    pub continues_branch: Option<Box<(String, String)>>,
    /// TCP ports its worker reserves for each attempt (`ports`, 0-16).
    #[serde(default)]
    pub ports: u8,
    /// Shared resources it holds while running (issue 15).
    pub uses: Vec<crate::resource::ResourceUse>,
    /// Its own workspace keys and container, its agent's merged in (none:
    /// only the repository's `.aam/workspace.toml`, no container).
    pub workspace: Option<Box<crate::workspace::JobWorkspace>>,
    /// For an agent job that takes input (issue 16): its prompt, linger
    /// and the messages said to it.
    pub input: Option<Box<crate::say::AgentInput>>,
    /// For an agent job that relays its permission prompts (issue 16):
    /// its rules and every request with its decision.
    pub permissions: Option<Box<crate::permission::JobPermissions>>,
}

impl std::fmt::Debug for JobRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::secret::debug_redacted("JobRecord", self, f)
    }
}

impl JobRecord {
    /// A job that has not run yet: queued, no attempt, no dependencies, the
    /// default run policy. Callers set what else their job has.
    pub fn new(key: JobKey, name: String, argv: Vec<String>) -> JobRecord {
        JobRecord {
            key,
            name,
            argv,
            env: Vec::new(),
            workdir: None,
            agent: None,
            depends_on: Vec::new(),
            status: JobStatus::Queued,
            attempts: 0,
            worker: None,
            started_at_ms: None,
            finished_at_ms: None,
            exit: None,
            reason: None,
            policy: Arc::default(),
            failures: 0,
            losses: 0,
            not_before_ms: None,
            progress: None,
            progress_message: None,
            cancel_requested: false,
            teardown: None,
            history: Vec::new(),
            gate: false,
            decision: None,
            priority: 0,
            requires: BTreeMap::new(),
            format: None,
            limit_group: None,
            max_cost_usd: None,
            pinned_worker: None,
            agent_run: None,
            isolation: Isolation::None,
            base: None,
            verify: None,
            variant: None,
            variant_jobs: Vec::new(),
            pick: None,
            change: None,
            continues_branch: None,
            ports: 0,
            uses: Vec::new(),
            workspace: None,
            input: None,
            permissions: None,
        }
    }

    /// Why the job ended as it did, when the status alone does not say.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref().map(String::as_str)
    }

    /// Sets (or clears) why the job ended as it did.
    pub fn set_reason(&mut self, reason: Option<String>) {
        self.reason = reason.map(Box::new);
    }

    pub fn workdir(&self) -> Option<&str> {
        self.workdir.as_deref().map(String::as_str)
    }

    pub fn base(&self) -> Option<&str> {
        self.base.as_deref().map(String::as_str)
    }

    pub fn pinned_worker(&self) -> Option<&str> {
        self.pinned_worker.as_deref().map(String::as_str)
    }

    pub fn progress_message(&self) -> Option<&str> {
        self.progress_message.as_deref().map(String::as_str)
    }

    pub fn verify(&self) -> Option<&[String]> {
        self.verify.as_deref().map(Vec::as_slice)
    }

    pub fn max_cost_usd(&self) -> Option<f64> {
        self.max_cost_usd.as_deref().copied()
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        self.exit.as_deref().copied()
    }

    /// A new attempt starts on `worker`: the attempt number (the fence of
    /// stale reports) goes up and what described the last attempt is cleared.
    /// Returns the new attempt number.
    pub fn begin_attempt(&mut self, worker: String, now_ms: u64) -> u32 {
        self.attempts += 1;
        self.worker = Some(worker);
        self.started_at_ms = Some(now_ms);
        self.finished_at_ms = None;
        self.exit = None;
        self.reason = None;
        self.progress = None;
        self.progress_message = None;
        self.teardown = None;
        self.agent_run = None;
        // A new attempt starts its branch again.
        self.change = None;
        self.attempts
    }

    /// The current attempt ended with `outcome` (the job's own status is the
    /// caller's to decide): it joins the job's history, and the job shows
    /// how it ended.
    pub fn close_attempt(
        &mut self,
        outcome: AttemptOutcome,
        exit: Option<ExitInfo>,
        reason: Option<String>,
        teardown: Option<TeardownReceipt>,
        now_ms: u64,
    ) {
        // Room for this one record only: a first push would make room for
        // four (480 bytes each), which every finished job would keep.
        self.history.reserve_exact(1);
        self.history.push(AttemptRecord {
            attempt: self.attempts,
            worker: self.worker.clone(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: Some(now_ms),
            exit,
            outcome,
            reason: reason.clone(),
            teardown: teardown.clone(),
            agent_run: self.agent_run.clone(),
            setup_ms: None,
            teardown_ms: None,
        });
        self.exit = exit.map(Box::new);
        self.teardown = teardown.map(Box::new);
        self.finished_at_ms = Some(now_ms);
        self.reason = reason.map(Box::new);
    }

    /// The job is to run again from the start (`aam retry`): its retry and
    /// loss counts, its cancel, its gate's decision, its change and its
    /// variants' pick are forgotten; its attempt number and attempt history
    /// are kept. Its status is the caller's to set.
    pub fn reset_for_rerun(&mut self) {
        self.change = None;
        self.pick = None;
        self.finished_at_ms = None;
        self.exit = None;
        self.reason = None;
        self.failures = 0;
        self.losses = 0;
        self.not_before_ms = None;
        self.progress = None;
        self.progress_message = None;
        self.cancel_requested = false;
        self.teardown = None;
        self.decision = None;
    }
}

/// One session's summary line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: SessionId,
    pub name: String,
    pub status: SessionStatus,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// Job count per status, in `JobStatus::ALL` order.
    pub counts: [u32; 8],
    pub total: u32,
    /// What its agents spent so far, every attempt counted.
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Running jobs whose agent waits for a permission decision.
    pub needs_input: u32,
    /// Running jobs whose agent answered and lingers for a message.
    pub waiting_for_input: u32,
}

impl SessionSummary {
    pub fn count(&self, status: JobStatus) -> u32 {
        self.counts[JobStatus::ALL
            .iter()
            .position(|s| *s == status)
            .unwrap_or(0)]
    }

    pub fn finished(&self) -> u32 {
        JobStatus::ALL
            .iter()
            .zip(self.counts)
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }
}

/// One job as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    pub status: JobStatus,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub reason: Option<String>,
    /// For a running job: its expected remaining time, from history.
    pub expected_remaining_ms: Option<u64>,
    pub progress: Option<u8>,
    pub progress_message: Option<String>,
    pub teardown: Option<TeardownReceipt>,
    pub history: Vec<AttemptRecord>,
    pub gate: bool,
    pub decision: Option<Box<GateDecision>>,
    pub priority: i32,
    pub requires: BTreeMap<String, String>,
    pub depends_on: Vec<crate::spec::Dependency>,
    /// Captured output (whole or tail, as asked), when asked for.
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    /// Bytes the job printed in all (more than `output` when it was cut).
    pub output_bytes: u64,
    /// For an agent job: what its agent did.
    pub agent: Option<AgentView>,
    /// For a worktree job: what it changed (branch, commit, diffstat).
    pub change: Option<JobChange>,
    /// For a variant: its number; for a job of variants: their job names
    /// and the pick.
    pub variant: Option<u32>,
    pub variants: Vec<String>,
    pub pick: Option<VariantPick>,
    /// Its agent reads messages on stdin (`aam say` reaches it).
    #[serde(default)]
    pub takes_input: bool,
    /// Its agent answered everything said to it and lingers for more.
    #[serde(default)]
    pub waiting_for_input: bool,
    /// For an agent that relays its permission prompts: every request,
    /// open ones without a decision.
    pub permissions: Vec<crate::permission::PermissionRequest>,
}

/// A provider of workers on demand (issue 17), as its loop last saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderView {
    pub name: String,
    /// `podman`, `slurm` or `kubernetes`.
    pub kind: String,
    /// The labels its workers get.
    pub labels: BTreeMap<String, String>,
    pub max_workers: u32,
    /// Its workers connected now, and launched but not connected yet.
    pub connected: u32,
    pub launching: u32,
    /// What went wrong last (a launch the engine refused, a worker that
    /// never connected), in the engine's words where it had some.
    pub last_error: Option<String>,
}

/// A running job that waits for someone (issue 16): its agent asks a
/// permission, or answered and lingers for a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitingJob {
    pub session: SessionId,
    pub job: String,
    /// Its open permission requests, oldest first.
    pub requests: Vec<crate::permission::PermissionRequest>,
    /// Its agent lingers for a message (`aam say`).
    pub waiting_for_input: bool,
    /// What its agent said last.
    pub last_answer: Option<String>,
}

/// A session with its jobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub summary: SessionSummary,
    /// Its jobs, or the page of them asked for (`summary.total` counts all).
    pub jobs: Vec<JobView>,
    /// Index of the first of `jobs` among the session's jobs.
    pub offset: u32,
    /// How long until the session ends, from the durations of earlier runs.
    pub eta: Estimate,
    /// Limit groups whose jobs are held until a usage limit resets.
    pub paused: Vec<LimitPause>,
}

/// A duration estimated from the durations of earlier runs of the same
/// agent or command. `ms` is `None` when some job has no history: then there
/// is no estimate rather than a guess.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub ms: Option<u64>,
    /// Jobs still to run that have no history.
    pub unknown: u32,
    /// Gates still to decide (a person's time is not estimated).
    pub gates: u32,
    /// Slots the estimate assumed.
    pub slots: u32,
}

/// A connected worker as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub name: String,
    pub address: String,
    pub slots: u32,
    pub running: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub connected_at_ms: u64,
    pub last_heartbeat_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_job_record_stays_small_inline() {
        // 696 bytes before its rarely set fields were boxed and its policy
        // shared; a million queued jobs must fit in a gigabyte with
        // everything around them.
        let size = std::mem::size_of::<JobRecord>();
        assert!(size <= 520, "JobRecord is {size} bytes inline");
    }

    #[test]
    fn an_attempt_record_stays_small_inline() {
        // 480 bytes while an agent's run was inline; every finished job
        // keeps one per attempt.
        let size = std::mem::size_of::<AttemptRecord>();
        assert!(size <= 200, "AttemptRecord is {size} bytes inline");
    }

    /// Job 3 of session 7, running `true`.
    fn record(name: &str) -> JobRecord {
        let key = JobKey {
            session: crate::SessionId(7),
            index: 3,
        };
        JobRecord::new(key, name.into(), vec!["true".into()])
    }

    #[test]
    fn a_finished_job_keeps_room_for_the_attempts_it_had_only() {
        let mut job = record("t");
        for attempts in 1..=3 {
            job.begin_attempt("w".into(), attempts as u64);
            job.close_attempt(AttemptOutcome::Failed, None, None, None, 10);
            assert_eq!(job.history.len(), attempts);
            assert_eq!(job.history.capacity(), attempts, "no room kept spare");
        }
    }

    #[test]
    fn a_boxed_field_is_stored_as_the_value_it_holds() {
        let mut job = record("fix");
        job.set_reason(Some("budget".into()));
        job.workdir = Some(Box::new("/src".into()));
        job.max_cost_usd = Some(Box::new(2.5));
        job.verify = Some(Box::new(vec!["make".into(), "test".into()]));
        let boxed = crate::codec::encode(&job).unwrap();
        // The boxed fields encode exactly as the plain values would.
        let plain = crate::codec::encode(&(
            Some("/src".to_string()),
            Some(2.5f64),
            Some(vec!["make".to_string(), "test".to_string()]),
        ))
        .unwrap();
        let back: JobRecord = crate::codec::decode(&boxed).unwrap();
        assert_eq!(back, job);
        assert_eq!(back.reason(), Some("budget"));
        assert_eq!(back.workdir(), Some("/src"));
        let boxed_parts = crate::codec::encode(&(
            job.workdir.clone(),
            job.max_cost_usd.clone(),
            job.verify.clone(),
        ))
        .unwrap();
        assert_eq!(boxed_parts, plain);
        let policy = RunPolicy {
            retries: 2,
            ..RunPolicy::default()
        };
        assert_eq!(
            crate::codec::encode(&Arc::new(policy.clone())).unwrap(),
            crate::codec::encode(&policy).unwrap()
        );
    }

    #[test]
    fn equal_policies_share_one_copy_and_others_keep_their_own() {
        let mut shared = SharedPolicies::default();
        let retried = |retries| RunPolicy {
            retries,
            ..RunPolicy::default()
        };
        let first = shared.share_new(retried(1));
        let again = shared.share_new(retried(1));
        let read_back = shared.share(Arc::new(retried(1)));
        let other = shared.share_new(retried(2));
        assert!(Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(&first, &read_back));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.retries, 2);
        // Past the kept few, a policy is its own copy, still the right one.
        let many: Vec<_> = (10..30).map(|n| shared.share_new(retried(n))).collect();
        let late = shared.share_new(retried(29));
        assert_eq!(late.retries, 29);
        assert!(!Arc::ptr_eq(&late, &many[19]));
        assert!(Arc::ptr_eq(&shared.share_new(retried(10)), &many[0]));
    }
}
