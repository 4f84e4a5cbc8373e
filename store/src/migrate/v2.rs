//! The records of schema version 2 whose layout schema 3 changed (issue 15:
//! workspaces, ports and shared resources), copied from `aam_protocol` as
//! they were, and how each reads now.

use super::v3::JobRecordV3;
use aam_protocol::agent_run::{AgentFormat, AgentRun};
use aam_protocol::model::{
    AttemptOutcome, AttemptRecord, ExitInfo, GateDecision, JobStatus, RunPolicy, TeardownReceipt,
};
use aam_protocol::spec::When;
use aam_protocol::worktree::{Isolation, JobChange, VariantPick};
use aam_protocol::JobKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `AttemptRecord` as schema version 2 wrote it (no `setup_ms`,
/// `teardown_ms`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AttemptRecordV2 {
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub exit: Option<ExitInfo>,
    pub outcome: AttemptOutcome,
    pub reason: Option<String>,
    pub teardown: Option<TeardownReceipt>,
    pub agent_run: Option<AgentRun>,
}

impl From<AttemptRecordV2> for AttemptRecord {
    /// Workspaces came after schema 2: no attempt of it ran a setup or a
    /// teardown.
    fn from(old: AttemptRecordV2) -> AttemptRecord {
        AttemptRecord {
            attempt: old.attempt,
            worker: old.worker,
            started_at_ms: old.started_at_ms,
            finished_at_ms: old.finished_at_ms,
            exit: old.exit,
            outcome: old.outcome,
            reason: old.reason,
            teardown: old.teardown,
            agent_run: old.agent_run.map(Box::new),
            setup_ms: None,
            teardown_ms: None,
        }
    }
}

/// `JobRecord` as schema version 2 wrote it (no `ports`, `uses`). No
/// `Debug`: its `env` may hold secrets (`JobRecord` redacts them).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobRecordV2 {
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
    pub history: Vec<AttemptRecordV2>,
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
}

impl From<JobRecordV2> for JobRecordV3 {
    /// Ports and shared resources came after schema 2: a job of it
    /// reserves no port and uses no resource.
    fn from(old: JobRecordV2) -> JobRecordV3 {
        JobRecordV3 {
            key: old.key,
            name: old.name,
            argv: old.argv,
            env: old.env,
            workdir: old.workdir,
            agent: old.agent,
            depends_on: old.depends_on,
            status: old.status,
            attempts: old.attempts,
            worker: old.worker,
            started_at_ms: old.started_at_ms,
            finished_at_ms: old.finished_at_ms,
            exit: old.exit,
            reason: old.reason,
            policy: old.policy,
            failures: old.failures,
            losses: old.losses,
            not_before_ms: old.not_before_ms,
            progress: old.progress,
            progress_message: old.progress_message,
            cancel_requested: old.cancel_requested,
            teardown: old.teardown,
            history: old.history.into_iter().map(AttemptRecord::from).collect(),
            gate: old.gate,
            decision: old.decision,
            priority: old.priority,
            requires: old.requires,
            format: old.format,
            limit_group: old.limit_group,
            max_cost_usd: old.max_cost_usd,
            pinned_worker: old.pinned_worker,
            agent_run: old.agent_run,
            isolation: old.isolation,
            base: old.base,
            verify: old.verify,
            variant: old.variant,
            variant_jobs: old.variant_jobs,
            pick: old.pick,
            change: old.change,
            continues_branch: old.continues_branch,
            ports: 0,
            uses: Vec::new(),
        }
    }
}
