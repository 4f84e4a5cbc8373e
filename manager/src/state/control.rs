//! What people do to sessions: cancel a session or a job, run again what
//! did not succeed (`aam retry`), and decide a gate (`aam approve` / `reject`).

use super::attempts::AttemptEnd;
use super::deps::unmet_dependency;
use super::{State, StateError, WorkerId};
use aam_protocol::messages::AttemptRef;
use aam_protocol::model::{GateDecision, JobStatus, SessionStatus};
use aam_protocol::{JobKey, SessionId};
use std::collections::HashSet;

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

impl State {
    /// The index of a job of a session, by name.
    pub(super) fn job_index(&self, session: SessionId, name: &str) -> Result<u32, StateError> {
        let entry = self
            .sessions
            .get(session)
            .ok_or(StateError::NoSession(session))?;
        entry.index_of(name).ok_or_else(|| StateError::NoJob {
            session,
            job: name.to_string(),
        })
    }

    /// Cancels a session, or one job of it: jobs not started end at once;
    /// running ones are marked, and their workers are to stop them.
    pub fn cancel(
        &mut self,
        session: SessionId,
        job: Option<&str>,
        grace_ms: Option<u64>,
        now: u64,
    ) -> Result<CancelOutcome, StateError> {
        let targets: Vec<u32> = match job {
            // A parent first (it ends cancelled, not picked), then its variants.
            Some(name) => {
                let index = self.job_index(session, name)?;
                let entry = self.sessions.get(session);
                let variants = entry.map(|e| e.job(index).variant_jobs.clone());
                std::iter::once(index)
                    .chain(variants.unwrap_or_default())
                    .collect()
            }
            None => {
                let entry = self
                    .sessions
                    .get(session)
                    .ok_or(StateError::NoSession(session))?;
                (0..entry.jobs().len() as u32).collect()
            }
        };
        let mut out = CancelOutcome::default();
        for index in targets {
            self.cancel_job(JobKey { session, index }, grace_ms, now, &mut out);
        }
        self.maybe_finish_session(session, now);
        Ok(out)
    }

    fn cancel_job(
        &mut self,
        key: JobKey,
        grace_ms: Option<u64>,
        now: u64,
        out: &mut CancelOutcome,
    ) {
        let Some(job) = self.job(key) else { return };
        let name = job.name.clone();
        match job.status {
            JobStatus::Pending | JobStatus::Queued => {
                let reason = match job.variant_jobs.is_empty() {
                    true => "cancelled before it started",
                    false => "cancelled, with its variants",
                };
                self.queue.remove(key);
                if let Some(job) = self.job_mut(key) {
                    job.finished_at_ms = Some(now);
                    job.not_before_ms = None;
                    job.set_reason(Some(reason.into()));
                }
                self.set_status(key, JobStatus::Cancelled);
                self.settle_dependents(key, now);
                out.cancelled.push(name);
            }
            JobStatus::Running => {
                let attempt = AttemptRef {
                    job: key,
                    attempt: job.attempts,
                };
                let grace = grace_ms.unwrap_or(job.policy.grace_ms);
                let holder = self.holder(key);
                if let Some(job) = self.job_mut(key) {
                    job.cancel_requested = true;
                }
                match holder {
                    Some(worker) => {
                        out.stopping.push((worker, attempt, grace));
                        out.stopping_names.push(name);
                    }
                    None => {
                        let reason = "cancelled while its worker was unreachable".to_string();
                        let end = AttemptEnd::Final(JobStatus::Cancelled);
                        self.end_attempt(key, end, Some(reason), None, None, now);
                        out.cancelled.push(name);
                    }
                }
            }
            _ => {}
        }
    }

    /// Runs the jobs of a session that did not succeed again (failed, timed
    /// out, cancelled, skipped): each goes back to waiting for its
    /// dependencies, and its next dispatch is a new attempt. What succeeded
    /// stays. Returns the names of the jobs to run again.
    pub fn retry(&mut self, session: SessionId, now: u64) -> Result<Vec<String>, StateError> {
        let entry = self
            .sessions
            .get(session)
            .ok_or(StateError::NoSession(session))?;
        // The variants that lost to a winner are done with: not run again.
        let picked: HashSet<u32> = entry
            .jobs()
            .iter()
            .filter(|j| j.status == JobStatus::Succeeded)
            .flat_map(|j| j.variant_jobs.iter().copied())
            .collect();
        let again: Vec<u32> = entry
            .jobs()
            .iter()
            .enumerate()
            .filter(|(i, j)| {
                matches!(
                    j.status,
                    JobStatus::Failed
                        | JobStatus::TimedOut
                        | JobStatus::Cancelled
                        | JobStatus::Skipped
                ) && !picked.contains(&(*i as u32))
            })
            .map(|(i, _)| i as u32)
            .collect();
        if again.is_empty() {
            return Err(StateError::Refused(format!(
                "{session} has nothing to retry: no job failed, timed out, was cancelled or skipped"
            )));
        }
        let mut names = Vec::new();
        for &index in &again {
            let key = JobKey { session, index };
            self.set_status(key, JobStatus::Pending);
            if let Some(job) = self.job_mut(key) {
                names.push(job.name.clone());
                job.reset_for_rerun();
            }
        }
        self.recount_waiting(session);
        if let Some(record) = self.sessions.record_mut(session) {
            record.status = SessionStatus::Running;
            record.finished_at_ms = None;
        }
        self.owners.reopened(session);
        for index in again {
            self.start_if_ready(JobKey { session, index }, now);
        }
        self.maybe_finish_session(session, now);
        Ok(names)
    }

    /// Counts again, for each pending job of a session, the dependencies it
    /// waits for.
    fn recount_waiting(&mut self, session: SessionId) {
        let Some(entry) = self.sessions.get_mut(session) else {
            return;
        };
        let waiting: Vec<(usize, u32)> = entry
            .jobs()
            .iter()
            .enumerate()
            .filter(|(_, job)| job.status == JobStatus::Pending)
            .map(|(i, job)| {
                // A parent waits for its variants too.
                let open = job
                    .depends_on
                    .iter()
                    .map(|&(d, _)| d)
                    .chain(job.variant_jobs.iter().copied())
                    .filter(|&d| !entry.job(d).status.is_terminal())
                    .count();
                (i, open as u32)
            })
            .collect();
        for (i, open) in waiting {
            entry.waiting_on[i] = open;
        }
    }

    /// A pending job to run again: skipped if a dependency already ended the
    /// wrong way, ready if none is left to wait for.
    fn start_if_ready(&mut self, key: JobKey, now: u64) {
        let Some(entry) = self.sessions.get(key.session) else {
            return;
        };
        let job = entry.job(key.index);
        if job.status != JobStatus::Pending {
            return; // skipped meanwhile by an earlier one of the same retry
        }
        if let Some(reason) = unmet_dependency(entry, job) {
            self.skip(key, reason, now);
            self.settle_dependents(key, now);
        } else if entry.waiting_on[key.index as usize] == 0 {
            self.ready(key, now);
        }
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
    ) -> Result<JobStatus, StateError> {
        let index = self.job_index(session, name)?;
        let entry = self.sessions.get(session).expect("job_index found it");
        let job = entry.job(index);
        if !job.gate {
            return Err(StateError::Refused(format!(
                "{session}/{name} is not a gate"
            )));
        }
        if let Some(d) = &job.decision {
            let verb = if d.approved { "approved" } else { "rejected" };
            return Err(StateError::Refused(format!(
                "{session}/{name} was already {verb} by {}",
                d.by
            )));
        }
        if job.status != JobStatus::Pending || entry.waiting_on[index as usize] > 0 {
            let waiting = if job.status == JobStatus::Pending {
                ", waiting for its dependencies"
            } else {
                ""
            };
            return Err(StateError::Refused(format!(
                "{session}/{name} is not awaiting approval (it is {}{waiting})",
                job.status
            )));
        }
        let key = JobKey { session, index };
        let (status, verb) = if approve {
            (JobStatus::Succeeded, "approved")
        } else {
            (JobStatus::Failed, "rejected")
        };
        if let Some(job) = self.job_mut(key) {
            job.decision = Some(Box::new(GateDecision {
                approved: approve,
                by: who.to_string(),
                at_ms: now,
                comment: comment.clone(),
            }));
            job.finished_at_ms = Some(now);
            job.started_at_ms.get_or_insert(now);
            job.set_reason(Some(match &comment {
                Some(c) => format!("{verb} by {who}: {c}"),
                None => format!("{verb} by {who}"),
            }));
        }
        self.set_status(key, status);
        self.settle_dependents(key, now);
        self.maybe_finish_session(session, now);
        Ok(status)
    }
}

#[cfg(test)]
mod tests;
