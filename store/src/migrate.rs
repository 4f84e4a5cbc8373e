//! Migrations of the records in sled from an older schema version to the
//! current one (`SCHEMA_VERSION`). Records are bincode, which has no field
//! names: an old record decodes only as the exact struct it was written
//! from, so each older layout keeps a copy of its structs here.
//!
//! A migration reads every session and job (after the log was replayed
//! into sled, so the log's records are migrated too), and the writer
//! commits all of them rewritten, with the new version, as one log frame
//! (`StoreWriter::migrate`): it is durable as a whole or not at all, and
//! nothing reaches sled before the log holds it.
//!
//! 1 → 2 (issue 9, agents understood): `JobRecord` gained `format`,
//! `limit_group`, `max_cost_usd`, `pinned_worker` and `agent_run`;
//! `AttemptRecord.outcome` became an `AttemptOutcome` and it gained
//! `agent_run`; `SessionRecord` gained `max_cost_usd`. The pauses tree is new
//! (empty).
//!
//! 2 → 3 (issue 15, workspaces and shared resources): `JobRecord` gained
//! `ports` (0: none reserved) and `uses` (empty: no resource);
//! `AttemptRecord` gained `setup_ms` and `teardown_ms` (none: no workspace
//! step ran). Sessions are unchanged. Their schema 2 layouts are in `v2.rs`.
//!
//! 3 → 4 (issue 15, containers): `JobRecord` gained `workspace` (none:
//! the job gave no workspace keys of its own). Its schema 3 layout is in
//! `v3.rs`.
//!
//! 4 → 5 (issue 16, say): `JobRecord` gained `input` (none: the job takes
//! no input). Its schema 4 layout is in `v4.rs`.
//!
//! 5 → 6 (issue 16, permission prompts): `JobRecord` gained `permissions`
//! (none: its agent asks nobody). Its schema 5 layout is in `v5.rs`.
//!
//! A record of schema 1 is read through each schema after it (1 → 2 → 3
//! → 4 → 5 → 6), so each step is written once.

use crate::trees::Trees;
use crate::{Changes, Result, StoreError, StoredJob, SCHEMA_VERSION};
use aam_protocol::agent_run::AgentFormat;
use aam_protocol::codec;
use aam_protocol::model::{
    AttemptOutcome, ExitInfo, GateDecision, JobRecord, JobStatus, RunPolicy, SessionRecord,
    SessionStatus, TeardownReceipt,
};
use aam_protocol::spec::When;
use aam_protocol::{JobKey, SessionId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use v2::{AttemptRecordV2, JobRecordV2};
use v3::JobRecordV3;
use v4::JobRecordV4;
use v5::JobRecordV5;

mod v2;
mod v3;
mod v4;
mod v5;

/// The oldest schema version a migration starts from.
pub(crate) const OLDEST_MIGRATED: u32 = 1;

/// What a migration rewrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Migrated {
    pub sessions: usize,
    pub jobs: usize,
    pub attempts: usize,
}

/// Every session and job in sled, decoded as schema `from` and rewritten
/// in the current schema, as one group of changes.
pub(crate) fn rewrite(trees: &Trees, from: u32) -> Result<(Changes, Migrated)> {
    if !(OLDEST_MIGRATED..SCHEMA_VERSION).contains(&from) {
        return Err(StoreError::Corrupt(format!(
            "no migration from schema version {from} to {SCHEMA_VERSION}"
        )));
    }
    let mut changes = Changes::default();
    let mut counts = Migrated::default();
    for item in trees.sessions.iter() {
        let (key, bytes) = item.map_err(|e| trees.err(e))?;
        changes.sessions.push(session_from(from, &key, &bytes)?);
        counts.sessions += 1;
    }
    for item in trees.jobs.iter() {
        let (key, bytes) = item.map_err(|e| trees.err(e))?;
        let job = job_from(from, &key, &bytes)?;
        counts.attempts += job.history.len();
        changes.jobs.push(StoredJob::encode(&job));
        counts.jobs += 1;
    }
    Ok((changes, counts))
}

/// A session record of schema `from`, as it reads now.
fn session_from(from: u32, key: &[u8], bytes: &[u8]) -> Result<SessionRecord> {
    let err = |e| old_record("session", key, from, e);
    match from {
        1 => Ok(codec::decode::<SessionRecordV1>(bytes).map_err(err)?.into()),
        // Later schemas left sessions as schema 2 wrote them.
        _ => codec::decode::<SessionRecord>(bytes).map_err(err),
    }
}

/// A job record of schema `from`, as it reads now (each older schema
/// through the next).
fn job_from(from: u32, key: &[u8], bytes: &[u8]) -> Result<JobRecord> {
    let err = |e| old_record("job", key, from, e);
    let v3: JobRecordV3 = match from {
        1 => JobRecordV2::from(codec::decode::<JobRecordV1>(bytes).map_err(err)?).into(),
        2 => codec::decode::<JobRecordV2>(bytes).map_err(err)?.into(),
        3 => codec::decode(bytes).map_err(err)?,
        4 => {
            let v4 = codec::decode::<JobRecordV4>(bytes).map_err(err)?;
            return Ok(JobRecordV5::from(v4).into());
        }
        _ => return Ok(codec::decode::<JobRecordV5>(bytes).map_err(err)?.into()),
    };
    Ok(JobRecordV5::from(JobRecordV4::from(v3)).into())
}

fn old_record(kind: &str, key: &[u8], from: u32, e: codec::CodecError) -> StoreError {
    StoreError::Corrupt(format!(
        "a {kind} record (key {key:02x?}) does not read as schema version {from}: {e}"
    ))
}

/// How a schema 1 attempt's outcome (the status its job took, `queued` for
/// a lost or shut-down worker's) reads now.
fn outcome_from_v1(status: JobStatus) -> AttemptOutcome {
    match status {
        JobStatus::Succeeded => AttemptOutcome::Succeeded,
        JobStatus::TimedOut => AttemptOutcome::TimedOut,
        JobStatus::Cancelled => AttemptOutcome::Cancelled,
        JobStatus::Queued | JobStatus::Pending | JobStatus::Running => AttemptOutcome::Requeued,
        // Schema 1 wrote no other ending for an attempt.
        JobStatus::Failed | JobStatus::Skipped => AttemptOutcome::Failed,
    }
}

/// `SessionRecord` as schema version 1 wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionRecordV1 {
    pub id: SessionId,
    pub name: String,
    pub status: SessionStatus,
    pub job_count: u32,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub max_parallel: Option<u32>,
    pub idempotency_key: Option<String>,
}

impl From<SessionRecordV1> for SessionRecord {
    fn from(old: SessionRecordV1) -> SessionRecord {
        SessionRecord {
            id: old.id,
            name: old.name,
            status: old.status,
            job_count: old.job_count,
            created_at_ms: old.created_at_ms,
            finished_at_ms: old.finished_at_ms,
            max_parallel: old.max_parallel,
            idempotency_key: old.idempotency_key,
            max_cost_usd: None,
        }
    }
}

/// `AttemptRecord` as schema version 1 wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AttemptRecordV1 {
    pub attempt: u32,
    pub worker: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub exit: Option<ExitInfo>,
    pub outcome: JobStatus,
    pub reason: Option<String>,
    pub teardown: Option<TeardownReceipt>,
}

impl From<AttemptRecordV1> for AttemptRecordV2 {
    fn from(old: AttemptRecordV1) -> AttemptRecordV2 {
        AttemptRecordV2 {
            attempt: old.attempt,
            worker: old.worker,
            started_at_ms: old.started_at_ms,
            finished_at_ms: old.finished_at_ms,
            exit: old.exit,
            outcome: outcome_from_v1(old.outcome),
            reason: old.reason,
            teardown: old.teardown,
            agent_run: None,
        }
    }
}

/// `JobRecord` as schema version 1 wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobRecordV1 {
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
    pub history: Vec<AttemptRecordV1>,
    pub gate: bool,
    pub decision: Option<GateDecision>,
    pub priority: i32,
    pub requires: BTreeMap<String, String>,
}

impl From<JobRecordV1> for JobRecordV2 {
    /// An agent job of schema 1 gets the format its command implies (the
    /// config's `format` was not recorded) and its agent's name as its
    /// limit group (the default; a configured `limit_group` was not
    /// recorded either). Its runs were never read: none.
    fn from(old: JobRecordV1) -> JobRecordV2 {
        let format = old.agent.as_ref().map(|_| AgentFormat::detect(&old.argv));
        JobRecordV2 {
            key: old.key,
            name: old.name,
            env: old.env,
            workdir: old.workdir,
            limit_group: old.agent.clone(),
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
            history: old.history.into_iter().map(AttemptRecordV2::from).collect(),
            gate: old.gate,
            decision: old.decision,
            priority: old.priority,
            requires: old.requires,
            format,
            max_cost_usd: None,
            pinned_worker: None,
            agent_run: None,
            argv: old.argv,
            // Worktrees came after schema 1: every job of it ran in place.
            isolation: Default::default(),
            base: None,
            verify: None,
            variant: None,
            variant_jobs: Vec::new(),
            pick: None,
            change: None,
            continues_branch: None,
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_v2;
