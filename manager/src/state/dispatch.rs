//! Dispatch: queued jobs go to free worker slots (the decision is
//! `schedule::plan`'s), each as a new attempt; and the inputs an assignment
//! carries (its dependencies as they ended, with the tail of their output).

use super::{OutputReader, State, INPUTS_BUDGET, INPUT_OUTPUT_CAP};
use crate::schedule::{plan, Candidate};
use aam_protocol::messages::{Assignment, InputRecord};
use aam_protocol::model::JobStatus;
use aam_protocol::output::OutputCapture;
use aam_protocol::{JobKey, SessionId};
use std::collections::HashMap;

impl State {
    /// Assigns queued jobs to free worker slots; each becomes a new attempt.
    /// The assignments carry no inputs yet (`inputs_for` reads outputs).
    pub fn dispatch(&mut self, now: u64) -> Vec<(super::WorkerId, Assignment)> {
        let capacities = self.capacities(true);
        if self.queue.is_empty() || capacities.iter().all(|c| c.free == 0) {
            return Vec::new();
        }
        let mut room: HashMap<SessionId, u32> = self
            .sessions
            .values()
            .filter_map(|e| Some((e.record().id, e.room()?)))
            .collect();
        let sessions = &self.sessions;
        // Keys of jobs no longer waiting (cancelled, ended, gone) leave the queue here.
        let mut stale = Vec::new();
        let candidates = self.queue.iter().filter_map(|key| {
            let job = sessions
                .job(key)
                .filter(|j| j.status == JobStatus::Queued && j.not_before_ms.is_none());
            let Some(job) = job else {
                stale.push(key);
                return None;
            };
            Some(Candidate {
                job: key,
                requires: &job.requires,
            })
        });
        let planned = plan(candidates, &capacities, &mut room);
        drop(capacities);
        for key in stale {
            self.queue.remove(key);
        }
        planned
            .into_iter()
            .filter_map(|(key, worker)| Some((worker, self.begin_attempt(key, worker, now)?)))
            .collect()
    }

    /// Starts a new attempt of a queued job on `worker`.
    fn begin_attempt(
        &mut self,
        key: JobKey,
        worker_id: super::WorkerId,
        now: u64,
    ) -> Option<Assignment> {
        self.queue.remove(key);
        let worker = self.workers.get_mut(&worker_id)?;
        worker.assigned.insert(key);
        let worker_name = worker.name.clone();
        self.set_status(key, JobStatus::Running);
        let cap = self.config.output_cap;
        let entry = self.sessions.get_mut(key.session)?;
        entry.live.insert(key.index, OutputCapture::new(cap));
        let session_name = entry.record().name.clone();
        let job = self.sessions.job_mut(key)?;
        let attempt = job.begin_attempt(worker_name, now);
        Some(Assignment {
            job: key,
            attempt,
            session_name,
            job_name: job.name.clone(),
            argv: job.argv.clone(),
            env: job.env.clone(),
            workdir: job.workdir.clone(),
            timeout_ms: job.policy.timeout_ms,
            idle_timeout_ms: job.policy.idle_timeout_ms,
            grace_ms: job.policy.grace_ms,
            format: job.format,
            inputs: Vec::new(),
        })
    }

    /// Moves retries whose backoff is over to the queue. Returns how many.
    pub fn release_delayed(&mut self, now: u64) -> usize {
        let mut released = 0;
        for (due, key) in self.queue.take_due(now) {
            let Some(job) = self.job(key) else { continue };
            // Cancelled or run again meanwhile: no longer this backoff's.
            if job.status != JobStatus::Queued || job.not_before_ms != Some(due) {
                continue;
            }
            let priority = job.priority;
            if let Some(job) = self.job_mut(key) {
                job.not_before_ms = None;
            }
            self.queue.push_back(key, priority);
            released += 1;
        }
        released
    }

    pub fn job_depends_on_nothing(&self, key: JobKey) -> bool {
        self.job(key).is_none_or(|j| j.depends_on.is_empty())
    }

    /// A job's dependencies as they ended, with the tail of their output:
    /// up to `INPUT_OUTPUT_CAP` each and `INPUTS_BUDGET` in all.
    pub fn inputs_for(&self, key: JobKey, stored: &OutputReader) -> Vec<InputRecord> {
        let Some(entry) = self.sessions.get(key.session) else {
            return Vec::new();
        };
        let Some(job) = entry.jobs().get(key.index as usize) else {
            return Vec::new();
        };
        let share = (INPUTS_BUDGET / job.depends_on.len().max(1)).min(INPUT_OUTPUT_CAP);
        // Names and reasons count too, so a huge fan-in still fits a frame:
        // past the budget the rest are summarised in one line.
        let mut spent = 0usize;
        let mut out = Vec::new();
        for (listed, &(d, when)) in job.depends_on.iter().enumerate() {
            let dep = entry.job(d);
            let (output, output_bytes) = self.output_of(dep, Some(share), stored);
            spent +=
                dep.name.len() + dep.reason.as_ref().map_or(0, |r| r.len()) + output.len() + 64;
            if spent > INPUTS_BUDGET {
                out.push(InputRecord {
                    name: "…".into(),
                    when,
                    status: JobStatus::Skipped,
                    exit_code: None,
                    reason: Some(format!(
                        "{} more dependencies not listed (the inputs are capped at {INPUTS_BUDGET} bytes)",
                        job.depends_on.len() - listed
                    )),
                    output: Vec::new(),
                    output_bytes: 0,
                    answer: None,
                    agent_error: None,
                });
                break;
            }
            out.push(InputRecord {
                name: dep.name.clone(),
                when,
                status: dep.status,
                exit_code: dep.exit.and_then(|e| e.code),
                reason: dep.reason.clone(),
                output,
                output_bytes,
                answer: dep.agent_run.as_ref().and_then(|r| r.result.clone()),
                agent_error: dep.agent_run.as_ref().and_then(|r| r.error.clone()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn dependencies_gate_dispatch_and_failures_skip_downstream() {
        let mut s = State::new(config());
        let batch = batch(vec![
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["b"]),
            job("d", &[]),
        ]);
        let (id, n) = s.submit(batch, None, 0).unwrap();
        assert_eq!(n, 4);
        s.register_worker(1, worker("w", 8), &[], 0).unwrap();
        let first = s.dispatch(1);
        let names: Vec<&str> = first.iter().map(|(_, a)| a.job_name.as_str()).collect();
        assert_eq!(names, vec!["a", "d"]);
        assert!(s
            .job_finished(1, attempt_of(&first[0].1), ok(), None, None, 2)
            .is_ok());
        let second = s.dispatch(3);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].1.job_name, "b");
        assert!(s
            .job_finished(1, attempt_of(&second[0].1), fail(), None, None, 4)
            .is_ok());
        assert_eq!(status(&s, id, "c"), JobStatus::Skipped);
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Running);
        assert!(s
            .job_finished(1, attempt_of(&first[1].1), ok(), None, None, 5)
            .is_ok());
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Failed);
    }

    #[test]
    fn queued_jobs_are_dispatched_fifo_across_sessions() {
        let mut s = State::new(config());
        let batch = |name: &str| BatchSpec {
            max_cost_usd: None,
            max_parallel: None,
            name: name.into(),
            jobs: (0..2).map(|i| job(&format!("{name}{i}"), &[])).collect(),
        };
        s.submit(batch("a"), None, 0).unwrap();
        s.submit(batch("b"), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let mut order = Vec::new();
        for t in 0..4 {
            let (_, a) = s.dispatch(t).pop().unwrap();
            order.push(a.job_name.clone());
            s.job_finished(1, attempt_of(&a), ok(), None, None, t)
                .unwrap();
        }
        assert_eq!(order, vec!["a0", "a1", "b0", "b1"]);
    }

    #[test]
    fn a_prefetching_worker_gets_slots_plus_prefetch_assignments() {
        let mut s = State::new(config());
        let jobs = (0..10).map(|i| job(&format!("j{i}"), &[])).collect();
        s.submit(batch(jobs), None, 0).unwrap();
        let mut w = worker("w", 2);
        w.prefetch = 3;
        s.register_worker(1, w, &[], 0).unwrap();
        assert_eq!(s.dispatch(0).len(), 5);
        assert!(s.dispatch(0).is_empty());
    }

    #[test]
    fn a_dispatch_stores_the_new_attempt_number() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        s.take_changes();
        let assigned = s.dispatch(7);
        assert_eq!(assigned[0].1.attempt, 1);
        let stored = s.take_changes().jobs;
        assert_eq!(
            stored.len(),
            1,
            "the attempt is the fence: it must be stored"
        );
        assert_eq!(
            (
                stored[0].attempts,
                stored[0].status,
                stored[0].started_at_ms
            ),
            (1, JobStatus::Running, Some(7))
        );
    }
}
