//! The manager's model of sessions, jobs and workers, and every transition
//! between states: a reducer, plain data and methods, no actors, no I/O and
//! no clock (every transition is given `now`). The scheduler actor owns one
//! `State`, and persists what `take_changes` returns.
//!
//! One type, one file per concern: `session` (entries and the only way to
//! change a record, which marks it to be stored), `queue`, `submit`,
//! `dispatch`, `attempts` (reports and the end of an attempt), `agent_runs`
//! (what agents did, live and at their end), `limits` (usage-limit pauses),
//! `resume` (a few starts at a time after a pause), `accounts`,
//! `budget` (what agents spent, and budgets), `follow_up` (`aam continue`),
//! `deps`, `control` (cancel, retry, gates), `variants` (best of N),
//! `worktrees` (orders, changes, patches, branches), `workers`, `views`,
//! `counts` (the gauges of `GET /metrics`), `rebuild`, `notices` (the
//! transitions `[[notify]]` tells of). Events the metrics count (dispatch
//! latency, attempt ends, agents' spend, limit pauses) are observed
//! through `StateConfig::metrics`: atomics, no I/O.

mod accounts;
mod agent_runs;
mod attempts;
mod budget;
mod capacity;
mod control;
mod counts;
mod deps;
mod dispatch;
mod follow_up;
mod held;
mod limits;
mod notices;
mod owners;
pub mod permissions;
mod queue;
mod rebuild;
mod resources;
mod resume;
mod say;
mod session;
mod submit;
mod variants;
mod views;
mod waiting;
mod worker_map;
mod workers;
mod worktrees;

#[cfg(test)]
mod testing;

pub use agent_runs::STORE_EVERY_MS;
pub use attempts::{EndReport, Fenced};
pub use budget::{BudgetStop, Spend};
pub use capacity::Capacity;
pub use control::CancelOutcome;
pub use follow_up::ContinueRefused;
pub use limits::LIMIT_BACKOFF_CAP_MS;
pub use notices::{EventKind, Transition};
pub use owners::{quota_refusal, QuotaRefusal, Usage};
pub use session::Collected;
pub use variants::VARIANT_ENV;
pub use views::JobLogs;
pub use workers::{NameInUse, Registration, WorkerEntry, WorkerId};
pub use worktrees::{BranchDeletion, PatchReader, BRANCHES_PER_ORDER};

use crate::estimate::History;
use crate::prices::PriceTable;
use aam_protocol::account::AccountDef;
use aam_protocol::agent::AgentDef;
use aam_protocol::messages::ErrorKind;
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::output::OutputCapture;
use aam_protocol::spec::Limits;
use aam_protocol::{JobKey, SessionId};
use aam_store::Changes;
use limits::Pauses;
use queue::Queue;
use session::Sessions;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The reason a gate shows while it waits for `aam approve` / `aam reject`.
pub const AWAITING: &str = "awaiting approval";

/// Output bytes of one dependency passed to a job (its tail).
pub const INPUT_OUTPUT_CAP: usize = 64 * 1024;
/// Output bytes of all dependencies passed to one job.
pub const INPUTS_BUDGET: usize = 4 * 1024 * 1024;

/// Reads a finished job's stored output.
pub type OutputReader = dyn Fn(JobKey) -> Option<OutputCapture>;

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
    /// What agents' tokens cost.
    pub prices: PriceTable,
    /// First pause of a limit group after a limit with no reset time.
    pub limit_backoff_ms: u64,
    /// Budget of sessions that set none.
    pub default_max_cost_usd: Option<f64>,
    /// Most bytes of a worktree job's patch (`patch_cap_bytes`).
    pub patch_cap: u64,
    /// Removing a session also orders its worktree jobs' branches deleted.
    pub gc_branches: bool,
    /// Shared resources and their capacities (`[resources]`).
    pub resources: BTreeMap<String, u32>,
    /// Accounts agents' jobs may run under (`[accounts]`).
    pub accounts: BTreeMap<String, AccountDef>,
    /// Jobs of a limit group resuming after a pause start at most this
    /// many per `resume_interval_ms` until one runs through.
    pub resume_burst: u32,
    pub resume_interval_ms: u64,
    /// Where the model observes events for `GET /metrics` (atomics only).
    pub metrics: crate::metrics::Observer,
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
            prices: PriceTable::default(),
            limit_backoff_ms: 60_000,
            default_max_cost_usd: None,
            patch_cap: crate::config::DEFAULT_PATCH_CAP,
            gc_branches: false,
            resources: BTreeMap::new(),
            accounts: BTreeMap::new(),
            resume_burst: 2,
            resume_interval_ms: 10_000,
            metrics: Default::default(),
        }
    }
}

/// Why the model refused a request; `kind` is what the client is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("no session {0}")]
    NoSession(SessionId),
    #[error("session {session} has no job '{job}'")]
    NoJob { session: SessionId, job: String },
    /// The request does not apply to the session or job as it is now.
    #[error("{0}")]
    Refused(String),
}

impl StateError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StateError::NoSession(_) | StateError::NoJob { .. } => ErrorKind::NotFound,
            StateError::Refused(_) => ErrorKind::Conflict,
        }
    }
}

pub struct State {
    config: StateConfig,
    sessions: Sessions,
    queue: Queue,
    /// Mean durations of successful runs, per agent or command.
    history: History,
    /// Sessions by the idempotency key they were submitted with.
    by_idempotency_key: HashMap<String, SessionId>,
    next_session: u64,
    next_session_unsaved: bool,
    workers: worker_map::Workers,
    worker_by_name: HashMap<String, WorkerId>,
    /// Running jobs whose worker is gone, with the time they are requeued at.
    orphans: HashMap<JobKey, workers::Orphan>,
    /// Encoded outputs of ended attempts, to store.
    unsaved_outputs: Vec<(JobKey, Vec<u8>)>,
    /// Sessions removed by `gc`, to delete from the store: (id, job count).
    removed: Vec<(SessionId, u32)>,
    /// Outputs of ended attempts until the store holds them, so queries in
    /// between still see them: (attempt, output).
    committing_outputs: HashMap<JobKey, (u32, OutputCapture)>,
    /// Patches of ended worktree attempts, to store.
    unsaved_patches: Vec<(JobKey, Vec<u8>)>,
    /// The same until the store holds them: (attempt, patch).
    committing_patches: HashMap<JobKey, (u32, Vec<u8>)>,
    /// Usage-limit groups paused, or whose backoff is still raised.
    pauses: Pauses,
    /// Starts of groups resuming after a pause, per window.
    resumes: resume::Resumes,
    /// Transitions to tell `[[notify]]` targets of, since last taken.
    transitions: Vec<Transition>,
    /// Which token submitted each session.
    owners: owners::Owners,
    /// Providers of workers on demand, as their loop last saw them.
    providers: Vec<aam_protocol::model::ProviderView>,
    /// What running jobs hold (resources, accounts), for dispatch.
    held: held::Held,
    /// Big sessions' estimates and limit groups, for their status pages
    /// (a cache: a view takes `&self`; the scheduler is its one thread).
    facts: std::cell::RefCell<HashMap<SessionId, views::SessionFacts>>,
}

impl State {
    pub fn new(config: StateConfig) -> State {
        State {
            config,
            sessions: Sessions::default(),
            queue: Queue::default(),
            history: History::default(),
            by_idempotency_key: HashMap::new(),
            next_session: 1,
            next_session_unsaved: false,
            workers: worker_map::Workers::default(),
            worker_by_name: HashMap::new(),
            orphans: HashMap::new(),
            unsaved_outputs: Vec::new(),
            removed: Vec::new(),
            committing_outputs: HashMap::new(),
            unsaved_patches: Vec::new(),
            committing_patches: HashMap::new(),
            pauses: Pauses::default(),
            resumes: resume::Resumes::default(),
            transitions: Vec::new(),
            owners: owners::Owners::default(),
            providers: Vec::new(),
            held: held::Held::default(),
            facts: Default::default(),
        }
    }

    fn job(&self, key: JobKey) -> Option<&JobRecord> {
        self.sessions.job(key)
    }

    /// The only mutable access to a job: it marks the record to be stored.
    /// Its status changes through `set_status` alone.
    fn job_mut(&mut self, key: JobKey) -> Option<&mut JobRecord> {
        self.sessions.job_mut(key)
    }

    fn set_status(&mut self, key: JobKey, status: JobStatus) {
        let was = self.job(key).map(|j| j.status);
        if was == Some(JobStatus::Running) && status != JobStatus::Running {
            self.held.release(key);
        }
        self.sessions.set_status(key, status);
        self.note_status(key, was, status);
    }

    /// Whether a job has ended for good.
    pub fn is_terminal(&self, key: JobKey) -> bool {
        self.job(key).is_none_or(|j| j.status.is_terminal())
    }

    pub fn session_exists(&self, id: SessionId) -> bool {
        self.sessions.get(id).is_some()
    }

    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    pub fn output_cap(&self) -> usize {
        self.config.output_cap
    }

    // ---- persistence and notification ----

    /// Every record changed since the last call, for the store.
    pub fn take_changes(&mut self) -> Changes {
        let (sessions, jobs) = self.sessions.take_unsaved();
        let (pauses, pauses_ended) = self.pauses.take_unsaved();
        Changes {
            sessions,
            jobs,
            outputs: std::mem::take(&mut self.unsaved_outputs),
            patches: std::mem::take(&mut self.unsaved_patches),
            removed: std::mem::take(&mut self.removed),
            next_session: std::mem::take(&mut self.next_session_unsaved)
                .then_some(self.next_session),
            pauses,
            pauses_ended,
            owners: self.owners.take_unsaved(),
            // The outbox's are added by the scheduler (`notify::Outbox`).
            ..Changes::default()
        }
    }

    /// Sessions whose summary or progress changed since the last call: the
    /// watchers to notify.
    pub fn take_to_notify(&mut self) -> BTreeSet<SessionId> {
        self.sessions.take_to_notify()
    }
}

/// What a job's duration is remembered under: its agent, or its command.
fn duration_key(job: &JobRecord) -> String {
    match &job.agent {
        Some(agent) => format!("agent:{agent}"),
        None => format!("command:{}", job.argv.join("\u{1f}")),
    }
}
