//! Reports about running attempts (output, progress, the end) and what the
//! end of an attempt does to its job. Every report passes the attempt fence
//! (`is_current`). The decisions are pure functions with their own tests:
//! how an ending is classified and described (`classify_end`, after the
//! agent's own word: `agent_runs::classify_agent_end`), and what follows it
//! (`next_step`: retry after a backoff with jitter, requeue, or end).

use super::agent_runs::classify_agent_end;
use super::queue::End;
use super::worktrees::verify_failure;
use super::{duration_key, State, WorkerId};
use aam_protocol::agent_run::AgentRun;
use aam_protocol::messages::{AttemptRef, Stopped};
use aam_protocol::model::{
    AttemptOutcome, ExitInfo, JobRecord, JobStatus, RunPolicy, StopCause, TeardownReceipt,
};
use aam_protocol::output::OutputCapture;
use aam_protocol::worktree::JobChange;
use aam_protocol::JobKey;
use std::time::Duration;

/// How an attempt ended, as far as the job's next step is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AttemptEnd {
    /// The attempt ended with this status (it may still be retried).
    Final(JobStatus),
    /// Its worker was lost: a new attempt, not counted against retries.
    Lost,
    /// Its worker shut down: requeued, counted as nothing.
    Requeue,
    /// Its agent ended on a usage limit: requeued without using a retry,
    /// its limit group paused.
    Limited,
    /// Stopped past its budget: failed, never retried (a retry would
    /// start over budget).
    OverBudget,
    /// It could not be set up (its worktree): failed, never retried (a
    /// retry would meet the same).
    Unrunnable,
}

/// What happens to a job after one of its attempts ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    End(JobStatus),
    /// Queued again once this many ms have passed.
    RetryAfter(u64),
    /// Queued again at once, at the front.
    Requeue,
}

/// The manager's limits on retries.
#[derive(Clone, Copy, Debug)]
pub(super) struct RetryRules {
    /// Losses of its worker after which a job fails.
    pub max_losses: u32,
    /// Longest wait between retries.
    pub backoff_cap_ms: u64,
}

fn human(ms: Option<u64>) -> String {
    humantime::format_duration(Duration::from_millis(ms.unwrap_or(0))).to_string()
}

/// Classifies an attempt's end from what the worker reported, with the
/// reason shown for it.
pub(super) fn classify_end(
    exit: Option<ExitInfo>,
    stopped: Option<StopCause>,
    reason: Option<String>,
    policy: &RunPolicy,
    cancel_requested: bool,
) -> (AttemptEnd, Option<String>) {
    let cancelled = || {
        (
            AttemptEnd::Final(JobStatus::Cancelled),
            Some("cancelled".to_string()),
        )
    };
    match stopped {
        Some(StopCause::Cancelled) => cancelled(),
        Some(StopCause::Timeout) => (
            AttemptEnd::Final(JobStatus::TimedOut),
            Some(format!(
                "timeout: ran longer than {}",
                human(policy.timeout_ms)
            )),
        ),
        Some(StopCause::Idle) => (
            AttemptEnd::Final(JobStatus::TimedOut),
            Some(format!(
                "idle: printed nothing for {}",
                human(policy.idle_timeout_ms)
            )),
        ),
        Some(StopCause::Budget) => (AttemptEnd::OverBudget, Some("budget".to_string())),
        Some(StopCause::Shutdown) => (
            AttemptEnd::Requeue,
            Some("its worker shut down".to_string()),
        ),
        Some(StopCause::Superseded) => (
            AttemptEnd::Requeue,
            Some("given back by its worker".to_string()),
        ),
        None if exit.is_some_and(|e| e.success()) => {
            (AttemptEnd::Final(JobStatus::Succeeded), reason)
        }
        None if cancel_requested => cancelled(),
        None => {
            let reason = reason.or_else(|| {
                let signal = exit.and_then(|e| e.signal)?;
                Some(format!("killed by signal {signal}"))
            });
            (AttemptEnd::Final(JobStatus::Failed), reason)
        }
    }
}

/// How an attempt that ended so is recorded in its job's history.
pub(super) fn outcome_of(end: AttemptEnd) -> AttemptOutcome {
    match end {
        AttemptEnd::Final(JobStatus::Succeeded) => AttemptOutcome::Succeeded,
        AttemptEnd::Final(JobStatus::TimedOut) => AttemptOutcome::TimedOut,
        AttemptEnd::Final(JobStatus::Cancelled) => AttemptOutcome::Cancelled,
        AttemptEnd::Final(_) | AttemptEnd::OverBudget | AttemptEnd::Unrunnable => {
            AttemptOutcome::Failed
        }
        AttemptEnd::Lost | AttemptEnd::Requeue => AttemptOutcome::Requeued,
        AttemptEnd::Limited => AttemptOutcome::Limited,
    }
}

/// The wait before retry number `failures` (1 for the first): the job's
/// backoff doubled for each retry before, capped, at least 1 ms.
pub(super) fn backoff_ms(first_ms: u64, failures: u32, cap_ms: u64) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    first_ms
        .saturating_mul(1u64 << doublings)
        .min(cap_ms)
        .max(1)
}

/// Equal jitter: somewhere in the upper half of `delay`, fixed per (job,
/// attempt) so the model stays deterministic and each gap at least the last.
pub(super) fn jittered(delay: u64, key: JobKey, attempt: u32) -> u64 {
    let mut x = key.session.0
        ^ ((key.index as u64) << 32)
        ^ ((attempt as u64) << 48)
        ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    delay / 2 + x % (delay / 2 + 1)
}

/// What follows an attempt's end, for a job whose `failures` and `losses`
/// already count that attempt; and the reason to show instead of the
/// attempt's own, when the decision has one.
pub(super) fn next_step(
    end: AttemptEnd,
    job: &JobRecord,
    attempt_reason: Option<&str>,
    rules: RetryRules,
) -> (Next, Option<String>) {
    match end {
        AttemptEnd::Lost if job.losses >= rules.max_losses => (
            Next::End(JobStatus::Failed),
            Some(format!("worker lost ({} times)", job.losses)),
        ),
        AttemptEnd::Lost | AttemptEnd::Requeue | AttemptEnd::Limited => (Next::Requeue, None),
        AttemptEnd::OverBudget | AttemptEnd::Unrunnable => (Next::End(JobStatus::Failed), None),
        AttemptEnd::Final(status @ (JobStatus::Failed | JobStatus::TimedOut))
            if !job.cancel_requested
                && job.policy.retry_on.contains(&status)
                && job.failures <= job.policy.retries =>
        {
            let delay = backoff_ms(
                job.policy.retry_backoff_ms,
                job.failures,
                rules.backoff_cap_ms,
            );
            let delay = jittered(delay, job.key, job.attempts);
            let reason = format!(
                "attempt {} {}{}; retry {} of {} in {}",
                job.attempts,
                status,
                attempt_reason
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                job.failures,
                job.policy.retries,
                human(Some(delay)),
            );
            (Next::RetryAfter(delay), Some(reason))
        }
        AttemptEnd::Final(status) => (Next::End(status), None),
    }
}

/// What a worker reports about an attempt's end.
#[derive(Clone, Debug, Default)]
pub struct EndReport {
    pub exit: Option<ExitInfo>,
    /// Set when the worker stopped it (cancel, timeout, shutdown, budget).
    pub stopped: Option<Stopped>,
    /// Why it ended, when the exit alone does not say (a spawn failure).
    pub reason: Option<String>,
    /// For an agent job: what its agent did, read to the end.
    pub agent: Option<AgentRun>,
    /// For a worktree job: what it changed, and its patch.
    pub change: Option<JobChange>,
    pub patch: Vec<u8>,
    /// For a worktree job: its workspace's setup and teardown.
    pub workspace: Option<aam_protocol::worktree::WorkspaceSteps>,
}

/// Why the fence turned a report away; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fenced {
    /// Not the current attempt of a running job: an old attempt, or an end
    /// already recorded (a resent end is acknowledged again).
    Stale,
    /// The current attempt, but not assigned to the worker that reports it:
    /// no worker speaks for another's jobs.
    NotYours,
}

impl State {
    /// Whether `attempt` is the current, running attempt of its job and
    /// assigned to `from`, the worker reporting it. Every report about a
    /// job goes through this fence (ARCHITECTURE.md, invariant 3: attempts
    /// are fenced).
    pub(super) fn is_current(&self, attempt: AttemptRef, from: WorkerId) -> Result<(), Fenced> {
        let running = self
            .job(attempt.job)
            .is_some_and(|j| j.status == JobStatus::Running && j.attempts == attempt.attempt);
        if !running {
            return Err(Fenced::Stale);
        }
        match self.workers.get(&from) {
            Some(w) if w.assigned.contains(&attempt.job) => Ok(()),
            _ => Err(Fenced::NotYours),
        }
    }

    /// Output of the current attempt from its worker; nothing is kept otherwise.
    pub fn job_output(
        &mut self,
        from: WorkerId,
        attempt: AttemptRef,
        data: &[u8],
    ) -> Result<(), Fenced> {
        self.is_current(attempt, from)?;
        let cap = self.config.output_cap;
        if let Some(entry) = self.sessions.get_mut(attempt.job.session) {
            entry
                .live
                .entry(attempt.job.index)
                .or_insert_with(|| OutputCapture::new(cap))
                .push(data);
        }
        Ok(())
    }

    /// The worker's complete record of an attempt's output replaces ours
    /// (which a restart may have emptied). What it sent is rebuilt with our
    /// own cap: its cap and totals are only its word.
    pub fn output_sync(
        &mut self,
        from: WorkerId,
        attempt: AttemptRef,
        received: &OutputCapture,
    ) -> Result<(), Fenced> {
        self.is_current(attempt, from)?;
        let capture = OutputCapture::rebuild(received, self.config.output_cap);
        if let Some(entry) = self.sessions.get_mut(attempt.job.session) {
            let ours = entry
                .live
                .get(&attempt.job.index)
                .map(|c| c.total())
                .unwrap_or(0);
            if capture.total() >= ours {
                entry.live.insert(attempt.job.index, capture);
            }
        }
        Ok(())
    }

    /// A `::progress::` line of the current attempt, from its worker.
    pub fn job_progress(
        &mut self,
        from: WorkerId,
        attempt: AttemptRef,
        percent: u8,
        message: Option<String>,
    ) -> Result<(), Fenced> {
        self.is_current(attempt, from)?;
        if let Some(job) = self.job_mut(attempt.job) {
            job.progress = Some(percent.min(100));
            job.progress_message = message.map(Box::new);
        }
        self.sessions.notify(attempt.job.session);
        Ok(())
    }

    /// Records how an attempt ended, as its worker reports it. Changes
    /// nothing for a stale attempt, so a job is never finished twice, nor
    /// for one another worker holds.
    pub fn job_finished(
        &mut self,
        from: WorkerId,
        attempt: AttemptRef,
        report: EndReport,
        now: u64,
    ) -> Result<(), Fenced> {
        self.is_current(attempt, from)?;
        let key = attempt.job;
        if let Some(mut worker) = self.workers.get_mut(&from) {
            let handed_back = report.stopped.as_ref().is_some_and(|s| {
                s.cause == StopCause::Superseded && report.exit.is_some_and(|e| e.is_not_started())
            });
            let ran_ms = report.exit.map_or(0, |e| e.duration_ms);
            worker.attempt_ended(ran_ms, handed_back);
        }
        let Some(job) = self.job(key) else {
            return Err(Fenced::Stale);
        };
        let EndReport {
            exit,
            stopped,
            reason,
            agent,
            change,
            patch,
            workspace,
        } = report;
        // Only an agent job has an agent's word to take, and only a
        // worktree job a change.
        let agent = agent.filter(|_| job.agent.is_some());
        let change = change.filter(|_| job.isolation.has_worktree());
        let cause = stopped.as_ref().map(|s| s.cause);
        let (end, reason) = classify_agent_end(agent.as_ref(), cause, job.cancel_requested)
            .unwrap_or_else(|| {
                classify_end(exit, cause, reason, &job.policy, job.cancel_requested)
            });
        // A job whose verify failed has failed, whatever its command did.
        let (end, reason) = match verify_failure(change.as_ref()) {
            Some(why) if end == AttemptEnd::Final(JobStatus::Succeeded) => {
                (AttemptEnd::Final(JobStatus::Failed), Some(why))
            }
            _ => (end, reason),
        };
        let limited = (end == AttemptEnd::Limited)
            .then(|| Some((job.limit_group.clone()?, agent.as_ref()?.limit.clone()?)))
            .flatten();
        if let Some(run) = agent {
            self.final_run(key, run);
            // Before its dependents settle: what it spent may be why they
            // do not run.
            self.enforce_session_budget(key.session, now);
        }
        self.keep_output(attempt);
        // Before its dependents settle: they start from it, and see it.
        self.keep_change(attempt, change, patch);
        self.end_attempt(key, end, reason, exit, stopped.map(|s| s.receipt), now);
        if let Some(steps) = workspace {
            let closed = self.job_mut(key).and_then(|job| job.history.last_mut());
            if let Some(closed) = closed.filter(|a| a.attempt == attempt.attempt) {
                (closed.setup_ms, closed.teardown_ms) = (steps.setup_ms, steps.teardown_ms);
            }
        }
        if let Some((group, limit)) = limited {
            self.pause_group(key, &group, &limit, now);
        }
        Ok(())
    }

    /// Moves an ended attempt's output from memory to the next commit. An
    /// empty first output needs no record; a later attempt's must replace
    /// what an earlier attempt may have left.
    fn keep_output(&mut self, attempt: AttemptRef) {
        let key = attempt.job;
        let output = self
            .sessions
            .get_mut(key.session)
            .and_then(|e| e.live.remove(&key.index))
            .unwrap_or_else(|| OutputCapture::new(self.config.output_cap));
        if output.is_empty() && attempt.attempt <= 1 {
            return;
        }
        match aam_protocol::codec::encode(&output) {
            Ok(bytes) => self.unsaved_outputs.push((key, bytes)),
            Err(e) => tracing::error!(job = %key, "cannot encode an output: {e}"),
        }
        self.committing_outputs
            .insert(key, (attempt.attempt, output));
    }

    /// Ends the current attempt of a running job, records it in the job's
    /// history, and moves the job on: retried after a backoff, requeued,
    /// or ended (releasing or skipping its dependents).
    pub(super) fn end_attempt(
        &mut self,
        key: JobKey,
        end: AttemptEnd,
        reason: Option<String>,
        exit: Option<ExitInfo>,
        teardown: Option<TeardownReceipt>,
        now: u64,
    ) {
        // Its agent is gone: what it asked and nobody answered is closed.
        if let Some(attempt) = self.job(key).map(|j| j.attempts) {
            self.close_permissions(key, attempt, now);
        }
        self.orphans.remove(&key);
        self.release_worker_slot(key);
        if let Some(entry) = self.sessions.get_mut(key.session) {
            entry.live.remove(&key.index);
        }
        self.settle_run(key);
        let rules = RetryRules {
            max_losses: self.config.max_losses,
            backoff_cap_ms: self.config.retry_backoff_max_ms,
        };
        // `sessions` directly, not `job_mut`: the record is borrowed beside
        // the queue and history below.
        let Some(job) = self.sessions.job_mut(key) else {
            return;
        };
        // A job being cancelled is not requeued, whatever stopped it.
        let end = match end {
            AttemptEnd::Lost | AttemptEnd::Requeue | AttemptEnd::Limited
                if job.cancel_requested =>
            {
                AttemptEnd::Final(JobStatus::Cancelled)
            }
            other => other,
        };
        job.close_attempt(outcome_of(end), exit, reason.clone(), teardown, now);
        let took = now.saturating_sub(job.started_at_ms.unwrap_or(now));
        self.config.metrics.attempt_ended(outcome_of(end), took);
        match end {
            AttemptEnd::Lost => job.losses += 1,
            AttemptEnd::Final(JobStatus::Failed | JobStatus::TimedOut)
            | AttemptEnd::OverBudget
            | AttemptEnd::Unrunnable => job.failures += 1,
            _ => {}
        }
        let (next, decided_reason) = next_step(end, job, reason.as_deref(), rules);
        if decided_reason.is_some() {
            job.set_reason(decided_reason);
        }
        match next {
            Next::End(status) => {
                let group = job.limit_group.clone();
                if let (JobStatus::Succeeded, Some(exit)) = (status, exit) {
                    self.history.record(&duration_key(job), exit.duration_ms);
                    if let Some(group) = &group {
                        self.limit_group_succeeded(group, now);
                    }
                }
                // It ran through without a limit: a group resuming after a
                // pause starts its jobs as usual again.
                if let (Some(group), Some(_)) = (&group, exit) {
                    self.resume_ran_through(group, now);
                }
                self.set_status(key, status);
                self.settle_dependents(key, now);
                self.maybe_finish_session(key.session, now);
            }
            Next::RetryAfter(delay) => {
                let due = now + delay;
                job.not_before_ms = Some(due);
                job.worker = None;
                self.set_status(key, JobStatus::Queued);
                self.queue.delay(key, due);
            }
            Next::Requeue => {
                job.worker = None;
                self.set_status(key, JobStatus::Queued);
                // It was dispatched before anything still queued: it goes first.
                self.enqueue(key, End::Front, now);
            }
        }
    }

    /// The attempt whose output or patch is waiting for its commit, if any.
    pub fn committing_attempt(&self, key: JobKey) -> Option<u32> {
        let output = self.committing_outputs.get(&key).map(|(a, _)| *a);
        output.or_else(|| self.committing_patches.get(&key).map(|(a, _)| *a))
    }

    /// Outputs and patches of these (job, attempt)s are durable in the
    /// store now.
    pub fn outputs_committed(&mut self, committed: &[(JobKey, u32)]) {
        for (key, attempt) in committed {
            if self.committing_outputs.get(key).map(|(a, _)| a) == Some(attempt) {
                self.committing_outputs.remove(key);
            }
            if self.committing_patches.get(key).map(|(a, _)| a) == Some(attempt) {
                self.committing_patches.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
