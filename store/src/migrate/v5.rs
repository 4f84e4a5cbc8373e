//! The job record of schema version 5, whose layout schema 6 changed
//! (issue 16: relayed permission prompts), copied from `aam_protocol` as
//! it was, and how it reads now.

use aam_protocol::agent_run::{AgentFormat, AgentRun};
use aam_protocol::model::{
    AttemptRecord, ExitInfo, GateDecision, JobRecord, JobStatus, RunPolicy, TeardownReceipt,
};
use aam_protocol::resource::ResourceUse;
use aam_protocol::say::AgentInput;
use aam_protocol::spec::When;
use aam_protocol::workspace::JobWorkspace;
use aam_protocol::worktree::{Isolation, JobChange, VariantPick};
use aam_protocol::JobKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `JobRecord` as schema version 5 wrote it (no `permissions`). No `Debug`:
/// its `env` may hold secrets (`JobRecord` redacts them).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobRecordV5 {
    pub key: JobKey,
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub agent: Option<String>,
    pub depends_on: Vec<(u32, When)>,
    pub status: JobStatus,
    pub attempts: u32,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub exit: Option<ExitInfo>,
    pub reason: Option<String>,
    pub policy: RunPolicy,
    pub failures: u32,
    pub losses: u32,
    pub not_before_ms: Option<u64>,
    pub progress: Option<u8>,
    pub progress_message: Option<String>,
    pub cancel_requested: bool,
    pub teardown: Option<TeardownReceipt>,
    pub history: Vec<AttemptRecord>,
    pub gate: bool,
    pub decision: Option<GateDecision>,
    pub priority: i32,
    pub requires: BTreeMap<String, String>,
    pub format: Option<AgentFormat>,
    pub limit_group: Option<String>,
    pub max_cost_usd: Option<f64>,
    pub pinned_worker: Option<String>,
    pub agent_run: Option<AgentRun>,
    pub isolation: Isolation,
    pub base: Option<String>,
    pub verify: Option<Vec<String>>,
    pub variant: Option<u32>,
    pub variant_jobs: Vec<u32>,
    pub pick: Option<VariantPick>,
    pub change: Option<JobChange>,
    pub continues_branch: Option<(String, String)>,
    pub ports: u8,
    pub uses: Vec<ResourceUse>,
    pub workspace: Option<Box<JobWorkspace>>,
    pub input: Option<Box<AgentInput>>,
}

impl From<JobRecordV5> for JobRecord {
    /// Relayed permission prompts came after schema 5: a job of it has none.
    fn from(old: JobRecordV5) -> JobRecord {
        JobRecord {
            key: old.key,
            name: old.name,
            argv: old.argv,
            env: old.env,
            workdir: old.workdir.map(Box::new),
            agent: old.agent,
            depends_on: old.depends_on,
            status: old.status,
            attempts: old.attempts,
            worker: old.worker,
            started_at_ms: old.started_at_ms,
            finished_at_ms: old.finished_at_ms,
            exit: old.exit.map(Box::new),
            reason: old.reason.map(Box::new),
            policy: old.policy.into(),
            failures: old.failures,
            losses: old.losses,
            not_before_ms: old.not_before_ms,
            progress: old.progress,
            progress_message: old.progress_message.map(Box::new),
            cancel_requested: old.cancel_requested,
            teardown: old.teardown.map(Box::new),
            history: old.history,
            gate: old.gate,
            decision: old.decision.map(Box::new),
            priority: old.priority,
            requires: old.requires,
            format: old.format,
            limit_group: old.limit_group,
            max_cost_usd: old.max_cost_usd.map(Box::new),
            pinned_worker: old.pinned_worker.map(Box::new),
            agent_run: old.agent_run.map(Box::new),
            isolation: old.isolation,
            base: old.base.map(Box::new),
            verify: old.verify.map(Box::new),
            variant: old.variant,
            variant_jobs: old.variant_jobs,
            pick: old.pick.map(Box::new),
            change: old.change.map(Box::new),
            continues_branch: old.continues_branch.map(Box::new),
            ports: old.ports,
            uses: old.uses,
            workspace: old.workspace,
            input: old.input,
            permissions: None,
        }
    }
}
