//! Submission: a batch, validated and typed, becomes a session and its job
//! records, each with its run policy resolved (its own settings, else its
//! agent's, else the manager's defaults) and agent templates expanded.

use super::session::SessionEntry;
use super::{State, StateConfig, AWAITING};
use aam_protocol::agent::{expand_agent_job, AgentDef};
use aam_protocol::model::{JobRecord, JobStatus, RunPolicy, SessionRecord, SessionStatus};
use aam_protocol::spec::{
    parse_duration_ms, validate, BatchSpec, JobKind, SpecError, SpecErrors, ValidBatch, ValidJob,
};
use aam_protocol::{JobKey, SessionId};

impl State {
    /// Validates and stores a batch as a new session; returns its id and job count.
    pub fn submit(
        &mut self,
        batch: BatchSpec,
        idempotency_key: Option<String>,
        now: u64,
    ) -> Result<(SessionId, u32), SpecErrors> {
        let valid = validate(batch, &self.config.limits)?;
        if let Some(key) = &idempotency_key {
            if key.is_empty() || key.len() > 256 {
                return Err(SpecError::batch("idempotency_key", "must be 1-256 bytes").into());
            }
        }
        self.submit_valid(valid, idempotency_key, now)
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
        let mut errors = Vec::new();
        let mut jobs = Vec::with_capacity(valid.jobs.len());
        for (index, spec) in valid.jobs.into_iter().enumerate() {
            let key = JobKey {
                session: id,
                index: index as u32,
            };
            match job_record(key, spec, &self.config) {
                Ok(job) => jobs.push(job),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(SpecErrors(errors));
        }
        let record = SessionRecord {
            id,
            name: valid.name,
            status: SessionStatus::Running,
            job_count: jobs.len() as u32,
            created_at_ms: now,
            finished_at_ms: None,
            max_parallel: valid.max_parallel,
            max_cost_usd: valid.max_cost_usd.or(self.config.default_max_cost_usd),
            idempotency_key: idempotency_key.clone(),
        };
        self.next_session += 1;
        self.next_session_unsaved = true;
        let count = jobs.len() as u32;
        let queued: Vec<(JobKey, i32)> = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Queued)
            .map(|j| (j.key, j.priority))
            .collect();
        let entry = SessionEntry::new(record, jobs, &self.config.prices);
        self.sessions.insert_new(entry);
        for (key, priority) in queued {
            self.queue.push_back(key, priority);
        }
        if let Some(k) = idempotency_key {
            self.by_idempotency_key.insert(k, id);
        }
        Ok((id, count))
    }
}

/// A job's record as submitted: queued when it waits for nothing, else pending.
fn job_record(
    key: JobKey,
    mut spec: ValidJob,
    config: &StateConfig,
) -> Result<JobRecord, SpecError> {
    let agent = match &spec.kind {
        JobKind::Agent(call) => config.agents.get(&call.agent),
        _ => None,
    };
    let policy = resolve_policy(&mut spec, agent, config);
    let gate = spec.kind == JobKind::Gate;
    let (argv, mut env, format, limit_group) = match &spec.kind {
        JobKind::Command(argv) => (argv.clone(), Vec::new(), None, None),
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
    // The job's own env wins over the agent's.
    env.retain(|(k, _): &(String, String)| !spec.env.contains_key(k));
    env.extend(spec.env);
    let waits = !spec.depends_on.is_empty();
    Ok(JobRecord {
        env,
        workdir: spec.workdir,
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
        policy,
        gate,
        priority: spec.priority,
        requires: spec.requires,
        reason: (gate && !waits).then(|| AWAITING.to_string()),
        format,
        limit_group,
        max_cost_usd: spec.max_cost_usd,
        ..JobRecord::new(key, spec.name, argv)
    })
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
    use aam_protocol::spec::JobSpec;

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
