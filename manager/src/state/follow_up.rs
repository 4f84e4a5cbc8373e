//! Follow-ups (`aam continue SESSION/JOB "PROMPT"`): a new session of one
//! job that resumes an agent job's conversation. The new job runs the same
//! agent with the new prompt and `resume` set to the agent's own session id
//! (`{resume}` in its template; Claude Code's stream-json templates get
//! `--resume ID` without asking), with the earlier job's run settings, and
//! is pinned to the worker that ran the attempt the conversation comes
//! from: the conversation lives in that machine's files, so the job waits
//! for that worker rather than fail elsewhere. A follow-up of a worktree job
//! continues its branch, in a new worktree at the same path (Claude Code
//! keeps a conversation under its working directory's path): the branch
//! and path of the first job of the chain (`continues_branch`).

use super::worktrees::JOB_BASE;
use super::{State, StateError};
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::spec::{validate, BatchSpec, JobKind, JobSpec, SpecErrors};
use aam_protocol::worktree::{branch_name, Isolation};
use aam_protocol::SessionId;

/// Appended to the earlier session's name to name the new one.
const NAME_SUFFIX: &str = "-continue";

/// Why a follow-up was not submitted.
#[derive(Debug, PartialEq)]
pub enum ContinueRefused {
    /// No such session or job, or nothing to continue.
    State(StateError),
    /// The new job does not validate (its prompt, or its agent is gone).
    Invalid(SpecErrors),
}

/// The conversation a job's attempts left: the agent's session id, and the
/// worker whose files hold it (the latest attempt that reported one).
fn conversation(job: &JobRecord) -> Option<(String, Option<String>)> {
    job.history.iter().rev().find_map(|a| {
        let id = a.agent_run.as_ref()?.session_id.clone()?;
        Some((id, a.worker.clone()))
    })
}

/// Why `job` has no conversation to continue, naming it.
fn nothing_to_continue(session: SessionId, job: &JobRecord) -> StateError {
    let name = format!("{session}/{}", job.name);
    if !job.variant_jobs.is_empty() {
        let winner = job.pick.as_ref().and_then(|p| p.winner.as_deref());
        let hint = winner
            .map(|w| format!(" (the winner is {session}/{w})"))
            .unwrap_or_default();
        return StateError::Refused(format!(
            "{name} ran as {} variants, each a conversation of its own: continue one of them{hint}",
            job.variant_jobs.len()
        ));
    }
    StateError::Refused(match (&job.agent, job.format) {
        (None, _) => format!("{name} is not an agent job: there is no conversation to continue"),
        (Some(_), Some(aam_protocol::agent_run::AgentFormat::Text)) => format!(
            "{name} has no agent session id to resume: its agent's output is read as text \
             (set format = \"claude-stream-json\" on the agent)"
        ),
        _ if job.attempts == 0 => format!("{name} never ran: there is no conversation to continue"),
        _ => format!("{name} has no agent session id to resume: its agent never reported one"),
    })
}

impl State {
    /// Submits a follow-up of `name` in `session` with `prompt`; returns
    /// the new session and its job count (one).
    pub fn continue_job(
        &mut self,
        session: SessionId,
        name: &str,
        prompt: String,
        now: u64,
    ) -> Result<(SessionId, u32), ContinueRefused> {
        let refused = ContinueRefused::State;
        let index = self.job_index(session, name).map_err(refused)?;
        let entry = self
            .sessions
            .get(session)
            .ok_or_else(|| refused(StateError::NoSession(session)))?;
        let job = entry.job(index);
        if !job.status.is_terminal() {
            return Err(refused(StateError::Refused(format!(
                "{session}/{name} is {}: continue it once it has ended",
                job.status
            ))));
        }
        let conversation = conversation(job).filter(|_| job.variant_jobs.is_empty());
        let Some((agent, (resume, worker))) = job.agent.clone().zip(conversation) else {
            return Err(refused(nothing_to_continue(session, job)));
        };
        let worktree = continued_worktree(session, job);
        // The conversation lives in its account's files (its config dir):
        // a follow-up keeps the account (`accounts_of`).
        let account_group = job
            .limit_group
            .clone()
            .filter(|g| aam_protocol::account::account_of_group(g).is_some());
        let mut batch_name = entry.record().name.clone();
        batch_name.truncate(
            self.config
                .limits
                .max_name_len
                .saturating_sub(NAME_SUFFIX.len()),
        );
        batch_name.push_str(NAME_SUFFIX);
        let model = job.agent_run.as_ref().and_then(|r| r.model.clone());
        let spec = JobSpec {
            name: job.name.clone(),
            agent: Some(agent),
            prompt: Some(prompt),
            model: model.filter(|_| self.agent_uses_model(job)),
            env: job.env.iter().cloned().collect(),
            workdir: job.workdir().map(str::to_owned),
            priority: job.priority,
            requires: job.requires.clone(),
            max_cost_usd: job.max_cost_usd(),
            ports: Some(job.ports.into()),
            // A follow-up works where its job did: it needs what it used.
            uses: job
                .uses
                .iter()
                .map(|u| aam_protocol::resource::UseSpec {
                    name: u.name.clone(),
                    count: u.count,
                })
                .collect(),
            ..JobSpec::default()
        };
        let policy = job.policy.clone();
        let batch = BatchSpec {
            name: batch_name,
            max_parallel: None,
            max_cost_usd: None,
            jobs: vec![spec],
        };
        let mut valid = validate(batch, &self.config.limits).map_err(ContinueRefused::Invalid)?;
        let new_job = &mut valid.jobs[0];
        if let JobKind::Agent(call) = &mut new_job.kind {
            call.resume = Some(resume);
        }
        new_job.timeout_ms = policy.timeout_ms;
        new_job.idle_timeout_ms = policy.idle_timeout_ms;
        new_job.grace_ms = Some(policy.grace_ms);
        new_job.retries = Some(policy.retries);
        new_job.retry_backoff_ms = Some(policy.retry_backoff_ms);
        new_job.retry_on = policy.retry_on.clone();
        let (id, count) = self
            .submit_valid(valid, None, now)
            .map_err(ContinueRefused::Invalid)?;
        let key = aam_protocol::JobKey {
            session: id,
            index: 0,
        };
        if let Some(job) = self.job_mut(key) {
            job.pinned_worker = worker.map(Box::new);
            if account_group.is_some() {
                job.limit_group = account_group;
            }
            if let Some(worktree) = worktree {
                job.isolation = worktree.isolation;
                job.workspace = worktree.workspace;
                job.requires.extend(worktree.requires);
                job.continues_branch = Some(Box::new((worktree.branch, worktree.path_key)));
                job.base = worktree.at.map(Box::new);
                job.verify = worktree.verify.map(Box::new);
            }
        }
        // Queued with the labels it was submitted with: again, with those
        // its branch adds (the queue counts jobs by the labels they require).
        if self.job(key).is_some_and(|j| j.status == JobStatus::Queued) {
            self.enqueue(key, super::queue::End::Back, now);
        }
        Ok((id, count))
    }

    /// Whether the job's agent template takes a `{model}`: then the model
    /// the conversation ran on is passed again.
    fn agent_uses_model(&self, job: &JobRecord) -> bool {
        let def = job.agent.as_ref().and_then(|a| self.config.agents.get(a));
        def.is_some_and(|d| d.command.iter().any(|e| e.contains("{model}")))
    }
}

/// What a follow-up of a worktree job continues.
struct ContinuedWorktree {
    /// The job's branch.
    branch: String,
    /// The path key of the first job of the chain (the conversation is kept
    /// under its worktree's path).
    path_key: String,
    /// The commit the branch is at: where it starts again when it is gone
    /// (the job changed nothing, so its branch was removed).
    at: Option<String>,
    verify: Option<Vec<String>>,
    /// `worktree` or `container`, with the job's own workspace keys and
    /// container, and the labels that asks of a worker.
    isolation: Isolation,
    workspace: Option<Box<aam_protocol::workspace::JobWorkspace>>,
    requires: std::collections::BTreeMap<String, String>,
}

/// What a follow-up of `job` continues; None for a job that ran in place.
fn continued_worktree(session: SessionId, job: &JobRecord) -> Option<ContinuedWorktree> {
    if !job.isolation.has_worktree() {
        return None;
    }
    // A follow-up's own branch and path are its chain's first job's.
    let (first_branch, path_key) = match job.continues_branch.as_deref() {
        Some((branch, key)) => (branch.clone(), key.clone()),
        None => (
            branch_name(&session.to_string(), &job.name),
            format!("{session}/{}", job.name),
        ),
    };
    let branch = job
        .change
        .as_ref()
        .map_or(first_branch, |c| c.branch.clone());
    let at = match &job.change {
        Some(c) => Some(c.commit.clone().unwrap_or_else(|| c.base.clone())),
        None => job
            .base()
            .filter(|b| !b.starts_with(JOB_BASE))
            .map(str::to_owned),
    };
    Some(ContinuedWorktree {
        branch,
        path_key,
        at,
        verify: job.verify().map(<[String]>::to_vec),
        isolation: job.isolation,
        workspace: job.workspace.clone(),
        requires: job.requires.clone(),
    })
}

#[cfg(test)]
mod tests;
