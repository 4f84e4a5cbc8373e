//! Messages said to running agents (issue 16, `aam say`): each stored in
//! its job's record (`AgentInput.said`, committed before the answer and
//! before it is sent), then sent to the job's worker, which gives it to
//! the agent's stdin in order and once (it skips a `seq` it gave already).
//! What the worker reports back (`InputState`: given up to which `seq`,
//! waiting for input or not) is kept, and what it lacks is sent again.

use super::workers::WorkerId;
use super::{State, StateError};
use aam_protocol::messages::{AttemptRef, ManagerToWorker};
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::say::{SaidMessage, MAX_SAID, MAX_SAY_BYTES};
use aam_protocol::{JobKey, SessionId};

/// A message on its way to a job's agent.
#[derive(Debug)]
pub struct Said {
    /// `s4/fix`.
    pub job: String,
    /// Its worker and the order to give it; none while the worker is
    /// away (the message goes when it is back, `input_state`, or to the
    /// attempt that replaces this one).
    pub send: Option<(WorkerId, ManagerToWorker)>,
}

impl State {
    /// Says `text` from `from` to the running agent `job` of `session`, or
    /// to every running agent of the session that takes input. Refused
    /// (naming the job and pointing to `aam continue`) when the job takes
    /// no input or is not running, or when the session has no such agent.
    pub fn say(
        &mut self,
        session: SessionId,
        job: Option<&str>,
        text: &str,
        from: &str,
        now: u64,
    ) -> Result<Vec<Said>, StateError> {
        if text.trim().is_empty() {
            return Err(StateError::Refused("there is nothing to say".into()));
        }
        if text.len() > MAX_SAY_BYTES {
            return Err(StateError::Refused(format!(
                "a message is at most {MAX_SAY_BYTES} bytes ({} given)",
                text.len()
            )));
        }
        let keys: Vec<JobKey> = match job {
            Some(name) => {
                let index = self.job_index(session, name)?;
                let key = JobKey { session, index };
                let record = self.job(key).expect("job_index found it");
                if let Some(why) = why_not_said(session, record) {
                    return Err(StateError::Refused(why));
                }
                vec![key]
            }
            None => {
                let entry = self
                    .sessions
                    .get(session)
                    .ok_or(StateError::NoSession(session))?;
                let keys: Vec<JobKey> = entry
                    .jobs()
                    .iter()
                    .filter(|j| why_not_said(session, j).is_none())
                    .map(|j| j.key)
                    .collect();
                if keys.is_empty() {
                    return Err(StateError::Refused(format!(
                        "session {session} has no running agent that takes input \
                         (an ended agent goes on with `aam continue {session}/JOB \"TEXT\"`)"
                    )));
                }
                keys
            }
        };
        let mut said = Vec::new();
        for key in keys {
            let worker = self
                .job(key)
                .and_then(|j| self.worker_by_name.get(j.worker.as_deref()?))
                .copied();
            let Some(job) = self.sessions.job_mut(key) else {
                continue;
            };
            let attempt = AttemptRef {
                job: key,
                attempt: job.attempts,
            };
            let name = format!("{session}/{}", job.name);
            let Some(input) = job.input.as_mut() else {
                continue;
            };
            if input.said.len() >= MAX_SAID {
                return Err(StateError::Refused(format!(
                    "{name} has been told {MAX_SAID} messages, the most one job keeps"
                )));
            }
            let message = SaidMessage {
                seq: input.said.len() as u32 + 1,
                from: from.to_string(),
                text: text.to_string(),
                at_ms: now,
            };
            input.said.push(message.clone());
            let send = worker.map(|w| (w, ManagerToWorker::Say { attempt, message }));
            said.push(Said { job: name, send });
        }
        Ok(said)
    }

    /// What a worker says of an agent's input: given up to `delivered`,
    /// and waiting for more or not. The messages it lacks, to send again.
    /// Only the job's own worker is heard.
    pub fn input_state(
        &mut self,
        worker: WorkerId,
        attempt: AttemptRef,
        delivered: u32,
        waiting: bool,
        now: u64,
    ) -> Vec<ManagerToWorker> {
        let reporter = self.workers.get(&worker).map(|w| w.name.clone());
        let Some(job) = self.sessions.job_mut(attempt.job) else {
            return Vec::new();
        };
        let own = reporter.is_some() && job.worker == reporter;
        if !own || job.attempts != attempt.attempt || job.status != JobStatus::Running {
            return Vec::new();
        }
        let Some(input) = job.input.as_mut() else {
            return Vec::new();
        };
        input.delivered = input.delivered.max(delivered);
        let was_waiting = input.waiting_since_ms.is_some();
        input.waiting_since_ms = match (waiting, input.waiting_since_ms) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(now),
            (false, _) => None,
        };
        if was_waiting != waiting {
            self.sessions.notify(attempt.job.session);
        }
        self.unsaid(attempt)
    }
}

impl State {
    /// The messages said to a running attempt's agent that its worker has
    /// not reported given (sent again when the worker is back).
    pub fn unsaid(&self, attempt: AttemptRef) -> Vec<ManagerToWorker> {
        let Some(job) = self.job(attempt.job) else {
            return Vec::new();
        };
        if job.attempts != attempt.attempt || job.status != JobStatus::Running {
            return Vec::new();
        }
        let Some(input) = job.input.as_deref() else {
            return Vec::new();
        };
        input
            .undelivered()
            .map(|message| ManagerToWorker::Say {
                attempt,
                message: message.clone(),
            })
            .collect()
    }
}

/// Why a job cannot be told anything now, or None when it can.
fn why_not_said(session: SessionId, job: &JobRecord) -> Option<String> {
    let name = format!("{session}/{}", job.name);
    if job.input.is_none() {
        return Some(format!(
            "{name} does not take input (its agent does not read stream-json on stdin): \
             once it ended, `aam continue {name} \"TEXT\"` goes on with its conversation"
        ));
    }
    if job.status != JobStatus::Running {
        return Some(format!(
            "{name} is not running (it is {}): {}",
            job.status,
            if job.status.is_terminal() {
                format!("`aam continue {name} \"TEXT\"` goes on with its conversation")
            } else {
                "say it once it runs".to_string()
            }
        ));
    }
    None
}

#[cfg(test)]
mod tests;
