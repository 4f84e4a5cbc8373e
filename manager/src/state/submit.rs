//! Submission: a batch, validated and typed, becomes a session and its job
//! records, each with its run policy and isolation resolved (its own
//! settings, else its agent's, else the manager's defaults) and agent
//! templates expanded. A job of N variants becomes N variant jobs of its
//! own, appended after the batch's jobs (`variants`).

use super::queue::End;
use super::session::SessionEntry;
use super::variants::{become_parent, variant_specs};
use super::worktrees::JOB_BASE;
use super::{State, StateConfig, AWAITING};
use aam_protocol::agent::{expand_agent_job, AgentDef};
use aam_protocol::model::{
    JobRecord, JobStatus, RunPolicy, SessionRecord, SessionStatus, SharedPolicies,
};
use aam_protocol::permission::JobPermissions;
use aam_protocol::say::AgentInput;
use aam_protocol::spec::{
    parse_duration_ms, validate_each, Base, BatchHead, BatchSpec, JobKind, JobSpec, SpecError,
    SpecErrors, ValidBatch, ValidJob,
};
use aam_protocol::validate::job_workspace::{check_keys, WorkspaceKeys};
use aam_protocol::workspace::{JobWorkspace, CONTAINER_LABEL, CONTAINER_LABEL_VALUE};
use aam_protocol::worktree::Isolation;
use aam_protocol::{JobKey, SessionId};
use std::collections::HashMap;

impl State {
    /// Validates and stores a batch as a new session; returns its id and job count.
    pub fn submit(
        &mut self,
        batch: BatchSpec,
        idempotency_key: Option<String>,
        now: u64,
    ) -> Result<(SessionId, u32), SpecErrors> {
        self.submit_parts(batch, Vec::new(), idempotency_key, now)
    }

    /// `submit` of a batch streamed in parts: `earlier_parts`' jobs come
    /// before the batch's own. Each job's record is made as soon as it is
    /// typed, and the parts are read where they lie: the records are the
    /// only array of the batch made whole.
    pub fn submit_parts(
        &mut self,
        batch: BatchSpec,
        earlier_parts: Vec<Vec<JobSpec>>,
        idempotency_key: Option<String>,
        now: u64,
    ) -> Result<(SessionId, u32), SpecErrors> {
        let id = SessionId(self.next_session);
        let count = earlier_parts.iter().map(Vec::len).sum::<usize>() + batch.jobs.len();
        let mut records = Records::new(id, count, &self.config);
        let limits = &self.config.limits;
        let head = validate_each(batch, earlier_parts, limits, |job| records.take(job))?;
        if let Some(key) = &idempotency_key {
            if key.is_empty() || key.len() > 256 {
                return Err(SpecError::batch("idempotency_key", "must be 1-256 bytes").into());
            }
        }
        let jobs = records.finish()?;
        Ok(self.store_session(head, jobs, idempotency_key, now))
    }

    /// Stores a validated batch as a new session (its agents are checked
    /// here); returns its id and job count.
    pub(super) fn submit_valid(
        &mut self,
        valid: ValidBatch,
        idempotency_key: Option<String>,
        now: u64,
    ) -> Result<(SessionId, u32), SpecErrors> {
        let id = SessionId(self.next_session);
        let mut records = Records::new(id, valid.jobs.len(), &self.config);
        valid.jobs.into_iter().for_each(|job| records.take(job));
        let jobs = records.finish()?;
        Ok(self.store_session(valid.head, jobs, idempotency_key, now))
    }

    /// Stores the records of a new session's jobs, its next id, and
    /// queues those that wait for nothing.
    fn store_session(
        &mut self,
        head: BatchHead,
        jobs: Vec<JobRecord>,
        idempotency_key: Option<String>,
        now: u64,
    ) -> (SessionId, u32) {
        let id = SessionId(self.next_session);
        let record = SessionRecord {
            id,
            name: head.name,
            status: SessionStatus::Running,
            job_count: jobs.len() as u32,
            created_at_ms: now,
            finished_at_ms: None,
            max_parallel: head.max_parallel,
            max_cost_usd: head.max_cost_usd.or(self.config.default_max_cost_usd),
            idempotency_key: idempotency_key.clone(),
        };
        self.next_session += 1;
        self.next_session_unsaved = true;
        let count = jobs.len() as u32;
        let queued: Vec<JobKey> = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Queued)
            .map(|j| j.key)
            .collect();
        // Gates with nothing to wait for wait for their decision at once.
        let gates: Vec<JobKey> = jobs
            .iter()
            .filter(|j| j.gate && j.reason() == Some(AWAITING))
            .map(|j| j.key)
            .collect();
        let entry = SessionEntry::new(record, jobs, &self.config.prices);
        self.sessions.insert_new(entry);
        for key in gates {
            self.note_gate_waiting(key);
        }
        self.queue.reserve(queued.len());
        for key in queued {
            self.enqueue(key, End::Back, now);
        }
        if let Some(k) = idempotency_key {
            self.by_idempotency_key.insert(k, id);
        }
        (id, count)
    }
}

/// The records of a batch's jobs, made one typed job at a time: each at
/// its index, the variant jobs of a job of variants after them all, in
/// order (`fix.1` ... of the first such job, then those of the next).
struct Records<'a> {
    session: SessionId,
    config: &'a StateConfig,
    policies: SharedPolicies,
    jobs: Vec<JobRecord>,
    variants: Vec<JobRecord>,
    /// The index of the next job taken, and of the next variant.
    next_index: u32,
    next_variant: u32,
    /// Jobs with their variants so far: past the limit, no more are made.
    total: usize,
    errors: Vec<SpecError>,
}

impl<'a> Records<'a> {
    /// For a batch of `count` jobs (their variants not counted).
    fn new(session: SessionId, count: usize, config: &'a StateConfig) -> Records<'a> {
        Records {
            session,
            config,
            policies: SharedPolicies::default(),
            // A batch over the limit is refused before any record is made.
            jobs: Vec::with_capacity(count.min(config.limits.max_jobs)),
            variants: Vec::new(),
            next_index: 0,
            next_variant: count as u32,
            total: 0,
            errors: Vec::new(),
        }
    }

    /// Makes the record of the next job of the batch, and its variants'.
    fn take(&mut self, spec: ValidJob) {
        let index = self.next_index;
        self.next_index += 1;
        let variants = spec.variants.unwrap_or(0);
        self.total += 1 + variants as usize;
        if self.total > self.config.limits.max_jobs {
            return;
        }
        let key = |index| JobKey {
            session: self.session,
            index,
        };
        let (config, policies) = (self.config, &mut self.policies);
        let made: Result<Vec<JobRecord>, SpecError> = variant_specs(&spec, self.next_variant)
            .map(|(index, spec)| job_record(key(index), spec, config, policies))
            .collect();
        self.next_variant += variants;
        match (job_record(key(index), spec, config, policies), made) {
            (Ok(mut job), Ok(mut made)) => {
                become_parent(&mut job, &mut made);
                self.jobs.push(job);
                self.variants.extend(made);
            }
            // A variant's error is its parent's: said once.
            (Err(e), _) | (_, Err(e)) => self.errors.push(e),
        }
    }

    fn finish(mut self) -> Result<Vec<JobRecord>, SpecErrors> {
        let max = self.config.limits.max_jobs;
        if self.total > max {
            let message = format!(
                "{} jobs with their variants, more than the {max} allowed",
                self.total
            );
            return Err(SpecError::batch("jobs", message).into());
        }
        self.jobs.append(&mut self.variants);
        check_worktree_jobs(&self.jobs, &mut self.errors);
        match self.errors.is_empty() {
            true => Ok(self.jobs),
            false => Err(SpecErrors::listed(self.errors)),
        }
    }
}

/// A job's record as submitted: queued when it waits for nothing, else pending.
fn job_record(
    key: JobKey,
    mut spec: ValidJob,
    config: &StateConfig,
    policies: &mut SharedPolicies,
) -> Result<JobRecord, SpecError> {
    let agent = match &spec.kind {
        JobKind::Agent(call) => config.agents.get(&call.agent),
        _ => None,
    };
    check_uses(&spec, config)?;
    let policy = resolve_policy(&mut spec, agent, config);
    let gate = spec.kind == JobKind::Gate;
    let (argv, mut env, format, limit_group) = match &mut spec.kind {
        // Moved, not copied: a command job's spec is read no further.
        JobKind::Command(argv) => (std::mem::take(argv), Vec::new(), None, None),
        JobKind::Agent(call) => {
            let session = key.session.to_string();
            let expanded = expand_agent_job(&spec.name, call, &config.agents, &session)?;
            let env = expanded.env.into_iter().collect();
            (
                expanded.argv,
                env,
                Some(expanded.format),
                Some(expanded.limit_group),
            )
        }
        JobKind::Gate => (Vec::new(), Vec::new(), None, None),
    };
    let input = agent_input(&spec, agent, &argv);
    let permissions = job_permissions(&spec, agent);
    let isolation = isolation_of(&spec, agent);
    let workspace = job_workspace(&spec, agent, isolation, config)?;
    // The job's own env wins over the agent's.
    env.retain(|(k, _): &(String, String)| !spec.env.contains_key(k));
    env.extend(spec.env);
    let waits = !spec.depends_on.is_empty();
    let mut requires = spec.requires;
    if isolation == Isolation::Container {
        requires.insert(CONTAINER_LABEL.into(), CONTAINER_LABEL_VALUE.into());
    }
    Ok(JobRecord {
        env,
        workdir: spec.workdir.map(Box::new),
        agent: match spec.kind {
            JobKind::Agent(call) => Some(call.agent),
            _ => None,
        },
        status: if waits || gate {
            JobStatus::Pending
        } else {
            JobStatus::Queued
        },
        depends_on: spec.depends_on,
        policy: policies.share_new(policy),
        gate,
        priority: spec.priority,
        requires,
        reason: (gate && !waits).then(|| Box::new(AWAITING.to_string())),
        format,
        limit_group,
        max_cost_usd: spec.max_cost_usd.map(Box::new),
        isolation,
        base: spec
            .base
            .map(|base| match base {
                Base::Ref(name) => name,
                Base::Job(name) => format!("{JOB_BASE}{name}"),
            })
            .map(Box::new),
        verify: spec.verify.map(Box::new),
        ports: spec.ports,
        uses: spec.uses,
        workspace,
        input,
        permissions,
        ..JobRecord::new(key, spec.name, argv)
    })
}

/// For an agent job whose agent takes input (its `input` key, else its
/// command's `--input-format stream-json`): its prompt, given on stdin,
/// and its linger (the job's, else its agent's; checked at config load).
fn agent_input(
    spec: &ValidJob,
    agent: Option<&AgentDef>,
    argv: &[String],
) -> Option<Box<AgentInput>> {
    let JobKind::Agent(call) = &spec.kind else {
        return None;
    };
    let agent = agent?;
    if !aam_protocol::say::takes_input(agent.input.as_deref(), argv).unwrap_or(false) {
        return None;
    }
    let agent_linger = agent
        .linger
        .as_deref()
        .and_then(|l| aam_protocol::spec::parse_duration_ms(l).ok());
    Some(Box::new(AgentInput {
        prompt: call.prompt.clone().unwrap_or_default(),
        linger_ms: spec.linger_ms.or(agent_linger).unwrap_or(0),
        ..AgentInput::default()
    }))
}

/// For an agent job whose agent relays its permission prompts
/// (`permissions = "relay"`): its agent's rules and timeout (checked at
/// config load).
fn job_permissions(spec: &ValidJob, agent: Option<&AgentDef>) -> Option<Box<JobPermissions>> {
    let JobKind::Agent(_) = &spec.kind else {
        return None;
    };
    let agent = agent?;
    if agent.permissions.as_deref() != Some("relay") {
        return None;
    }
    let timeout_ms = agent
        .permission_timeout
        .as_deref()
        .and_then(|t| parse_duration_ms(t).ok())
        .unwrap_or(aam_protocol::permission::DEFAULT_TIMEOUT_MS);
    Some(Box::new(JobPermissions {
        allow: agent.allow.clone(),
        deny: agent.deny.clone(),
        timeout_ms,
        ..JobPermissions::default()
    }))
}

/// The job's own isolation, else its agent's (checked at config load),
/// else what its agent's workspace keys imply (a container's keys a
/// container, the others a worktree), else none.
fn isolation_of(spec: &ValidJob, agent: Option<&AgentDef>) -> Isolation {
    let implied = |agent: &AgentDef| {
        let keys = WorkspaceKeys::from(agent);
        if keys.container_key().is_some() {
            Some(Isolation::Container)
        } else {
            keys.worktree_key().map(|_| Isolation::Worktree)
        }
    };
    spec.isolation
        .or_else(|| Isolation::parse(agent?.isolation.as_deref()?).ok())
        .or_else(|| implied(agent?))
        .unwrap_or_default()
}

/// A worktree job's own workspace keys over its agent's (checked at
/// config load); a container job must have an image from one of them.
fn job_workspace(
    spec: &ValidJob,
    agent: Option<&AgentDef>,
    isolation: Isolation,
    config: &StateConfig,
) -> Result<Option<Box<JobWorkspace>>, SpecError> {
    if !isolation.has_worktree() {
        return Ok(None);
    }
    let from_agent = agent
        .map(|agent| check_keys(&WorkspaceKeys::from(agent), &config.limits, |_, _| {}))
        .unwrap_or_default();
    let mut workspace = spec.workspace.clone().or(&from_agent);
    if isolation == Isolation::Container {
        let container = workspace.container.get_or_insert_with(Default::default);
        if container.image.is_empty() {
            let message =
                "isolation = \"container\" needs an image (the job's `image`, or its agent's)";
            return Err(SpecError::job(&spec.name, "image", message));
        }
    } else {
        workspace.container = None;
    }
    Ok((!workspace.is_empty()).then(|| Box::new(workspace)))
}

/// A job's `uses` name resources the manager declares, each within its
/// capacity (a job that could never start is refused now).
fn check_uses(spec: &ValidJob, config: &StateConfig) -> Result<(), SpecError> {
    for claim in &spec.uses {
        let message = match config.resources.get(&claim.name) {
            None if config.resources.is_empty() => format!(
                "unknown resource {} (the manager declares no [resources])",
                claim.name
            ),
            None => {
                let known: Vec<&str> = config.resources.keys().map(String::as_str).collect();
                format!(
                    "unknown resource {} (the manager declares {})",
                    claim.name,
                    known.join(", ")
                )
            }
            Some(&capacity) if claim.count > capacity => format!(
                "uses {} of resource {}, more than its capacity of {capacity}",
                claim.count, claim.name
            ),
            Some(_) => continue,
        };
        return Err(SpecError::job(&spec.name, "uses", message));
    }
    Ok(())
}

/// A worktree job's name makes its branch (`aam/s4/NAME`) and its
/// worktree's directory: it must be a name git takes, and no path that
/// leaves the worktree root. Its `base = "job:NAME"` must name a job that
/// runs in a worktree, or there is no branch to start from.
fn check_worktree_jobs(jobs: &[JobRecord], errors: &mut Vec<SpecError>) {
    // Built at the first `job:` base only: most batches have none (a
    // million jobs' index was a twentieth of their submission).
    let mut by_name: Option<HashMap<&str, &JobRecord>> = None;
    // A variant is its parent's name and base again: said once, of the parent.
    let worktree_jobs = jobs
        .iter()
        .filter(|j| j.isolation.has_worktree() && j.variant.is_none());
    for job in worktree_jobs {
        let name = job.name.as_str();
        if name.starts_with('.')
            || name.ends_with('.')
            || name.contains("..")
            || name.ends_with(".lock")
        {
            let message = "a worktree job's name makes a git branch: it must not start or end \
                           with '.', hold '..' or end with '.lock'";
            errors.push(SpecError::job(name, "name", message));
        }
        let base = job.base.as_deref();
        let Some(dependency) = base.and_then(|b| b.strip_prefix(JOB_BASE)) else {
            continue;
        };
        let by_name =
            by_name.get_or_insert_with(|| jobs.iter().map(|j| (j.name.as_str(), j)).collect());
        if by_name
            .get(dependency)
            .is_some_and(|d| !d.isolation.has_worktree())
        {
            let message = format!(
                "'{dependency}' does not run in a worktree, so it has no branch to start from \
                 (give it isolation = \"worktree\")"
            );
            errors.push(SpecError::job(name, "base", message));
        }
    }
}

/// A job's timeouts and retries: its own, else its agent's, else the
/// manager's defaults. Takes the job's `retry_on` list.
fn resolve_policy(
    spec: &mut ValidJob,
    agent: Option<&AgentDef>,
    config: &StateConfig,
) -> RunPolicy {
    // An agent's durations were checked when the config was loaded.
    let agent_ms = |value: Option<&String>| value.and_then(|t| parse_duration_ms(t).ok());
    RunPolicy {
        timeout_ms: spec
            .timeout_ms
            .or_else(|| agent_ms(agent.and_then(|a| a.timeout.as_ref())))
            .or(config.default_timeout_ms),
        idle_timeout_ms: spec
            .idle_timeout_ms
            .or_else(|| agent_ms(agent.and_then(|a| a.idle_timeout.as_ref())))
            .or(config.default_idle_timeout_ms),
        grace_ms: spec.grace_ms.unwrap_or(config.default_grace_ms),
        retries: spec.retries.unwrap_or(0),
        retry_backoff_ms: spec
            .retry_backoff_ms
            .unwrap_or(config.default_retry_backoff_ms),
        retry_on: std::mem::take(&mut spec.retry_on),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use aam_protocol::spec::validate;

    fn valid(spec: JobSpec) -> ValidJob {
        validate(batch(vec![spec]), &Default::default())
            .unwrap()
            .jobs
            .remove(0)
    }

    #[test]
    fn a_policy_takes_the_job_s_own_value_then_its_agent_s_then_the_default() {
        let agent = AgentDef {
            command: vec!["true".into()],
            timeout: Some("2m".into()),
            idle_timeout: Some("30s".into()),
            ..Default::default()
        };
        let config = StateConfig {
            default_timeout_ms: Some(1),
            default_idle_timeout_ms: Some(2),
            default_grace_ms: 3,
            default_retry_backoff_ms: 4,
            ..config()
        };
        let mut own = valid(JobSpec {
            timeout: Some("5s".into()),
            grace: Some("0s".into()),
            retries: Some(2),
            ..job("a", &[])
        });
        let p = resolve_policy(&mut own, Some(&agent), &config);
        assert_eq!(
            (p.timeout_ms, p.idle_timeout_ms, p.grace_ms, p.retries),
            (Some(5_000), Some(30_000), 0, 2)
        );
        assert_eq!(p.retry_backoff_ms, 4);
        let mut bare = valid(job("b", &[]));
        let p = resolve_policy(&mut bare, None, &config);
        assert_eq!(
            (p.timeout_ms, p.idle_timeout_ms, p.grace_ms),
            (Some(1), Some(2), 3)
        );
    }

    #[test]
    fn the_jobs_of_a_batch_share_their_run_policy_and_keep_their_own_values() {
        let mut s = State::new(config());
        let retried = JobSpec {
            retries: Some(3),
            ..job("c", &[])
        };
        let batch = batch(vec![job("a", &[]), job("b", &[]), retried]);
        let (id, _) = s.submit(batch, None, 0).unwrap();
        let policy = |index| {
            let key = JobKey { session: id, index };
            std::sync::Arc::clone(&s.sessions.job(key).unwrap().policy)
        };
        assert!(std::sync::Arc::ptr_eq(&policy(0), &policy(1)));
        assert!(!std::sync::Arc::ptr_eq(&policy(0), &policy(2)));
        assert_eq!((policy(0).retries, policy(2).retries), (0, 3));
    }

    #[test]
    fn an_unknown_agent_is_refused_naming_the_job_and_nothing_is_stored() {
        let mut s = State::new(config());
        let spec = JobSpec {
            name: "review".into(),
            agent: Some("nobody".into()),
            ..Default::default()
        };
        let e = s.submit(batch(vec![spec]), None, 0).unwrap_err();
        assert!(e.to_string().contains("job 'review': field 'agent'"), "{e}");
        assert!(s.take_changes().is_empty());
    }
}
