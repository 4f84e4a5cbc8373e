//! Dependencies: whether a dependency's end meets its dependent's condition
//! (`when`), and what a job's end does downstream: dependents whose
//! conditions all hold are queued (or, gates, await their decision; a
//! parent of variants, whose variants are its last dependencies, ends with
//! their pick); those whose condition can no longer hold are skipped, and
//! so on down the chain.

use super::queue::End;
use super::session::SessionEntry;
use super::variants::edge_condition;
use super::{State, AWAITING};
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::spec::When;
use aam_protocol::JobKey;

/// Whether a dependency that ended with `status` lets a dependent run.
pub(super) fn condition_met(when: When, status: JobStatus) -> bool {
    match when {
        When::Succeeded => status == JobStatus::Succeeded,
        When::Failed => matches!(status, JobStatus::Failed | JobStatus::TimedOut),
        When::Finished => status.is_terminal(),
    }
}

/// Why a dependent is skipped: its dependency ended the wrong way.
pub(super) fn unmet_reason(dependency: &JobRecord, when: When) -> String {
    format!(
        "dependency '{}' ended {}, not {}",
        dependency.name,
        dependency.status,
        when.as_str()
    )
}

/// The first of a job's dependencies that has ended without meeting its
/// condition, with the reason to skip the job for it.
pub(super) fn unmet_dependency(entry: &SessionEntry, job: &JobRecord) -> Option<String> {
    job.depends_on.iter().find_map(|&(d, when)| {
        let dependency = entry.job(d);
        let decided = dependency.status.is_terminal() && !condition_met(when, dependency.status);
        decided.then(|| unmet_reason(dependency, when))
    })
}

impl State {
    /// A job ended: each pending dependent whose condition on it is met
    /// waits for one dependency less (and is ready when none is left); one
    /// whose condition can no longer be met is skipped, and so on downstream.
    pub(super) fn settle_dependents(&mut self, ended: JobKey, now: u64) {
        let session = ended.session;
        let mut stack = vec![ended.index];
        while let Some(at) = stack.pop() {
            let Some(entry) = self.sessions.get(session) else {
                return;
            };
            let at_job = entry.job(at);
            let mut met = Vec::new();
            let mut skip = Vec::new();
            for &d in entry.dependents_of(at) {
                let dependent = entry.job(d);
                if dependent.status != JobStatus::Pending {
                    continue;
                }
                let when = edge_condition(dependent, at);
                if condition_met(when, at_job.status) {
                    met.push(d);
                } else {
                    skip.push((d, unmet_reason(at_job, when)));
                }
            }
            for d in met {
                let entry = self.sessions.get_mut(session).expect("checked above");
                // Settled meanwhile: a parent of variants that ended just
                // now settled its own dependents, this one among them.
                if entry.job(d).status != JobStatus::Pending {
                    continue;
                }
                let waiting = &mut entry.waiting_on[d as usize];
                *waiting = waiting.saturating_sub(1);
                if *waiting > 0 {
                    continue;
                }
                // Every dependency has ended; one may have ended the wrong
                // way before this one did (after a retry).
                match unmet_dependency(entry, entry.job(d)) {
                    Some(reason) => skip.push((d, reason)),
                    None => self.ready(JobKey { session, index: d }, now),
                }
            }
            for (d, reason) in skip {
                self.skip(JobKey { session, index: d }, reason, now);
                stack.push(d);
            }
        }
    }

    /// A job whose dependencies all allow it: queued, or (a gate) awaiting
    /// its decision, or (a parent, whose variants have all ended) ended
    /// with their pick.
    pub(super) fn ready(&mut self, key: JobKey, now: u64) {
        let Some(job) = self.job(key) else {
            return;
        };
        if !job.variant_jobs.is_empty() {
            self.end_variants(key, now);
        } else if job.gate {
            if let Some(job) = self.job_mut(key) {
                job.set_reason(Some(AWAITING.into()));
            }
            self.sessions.notify(key.session);
            self.note_gate_waiting(key);
        } else {
            self.set_status(key, JobStatus::Queued);
            self.enqueue(key, End::Back, now);
        }
    }

    pub(super) fn skip(&mut self, key: JobKey, reason: String, now: u64) {
        self.set_status(key, JobStatus::Skipped);
        if let Some(job) = self.job_mut(key) {
            job.finished_at_ms = Some(now);
            job.set_reason(Some(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn conditions_match_the_documented_endings() {
        use JobStatus::*;
        for status in [Succeeded, Failed, TimedOut, Cancelled, Skipped] {
            assert_eq!(condition_met(When::Succeeded, status), status == Succeeded);
            assert_eq!(
                condition_met(When::Failed, status),
                matches!(status, Failed | TimedOut)
            );
            assert!(condition_met(When::Finished, status));
        }
        assert!(!condition_met(When::Finished, Running));
    }

    #[test]
    fn a_skip_runs_down_the_whole_chain_with_a_reason_naming_the_dependency() {
        use JobStatus::Skipped;
        let mut s = State::new(config());
        let jobs = vec![job("a", &[]), job("b", &["a"]), job("c", &["b"])];
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let a = attempt_of(&s.dispatch(0)[0].1);
        s.job_finished(1, a, ended(fail()), 1).unwrap();
        let view = s.view(id, OutputWanted::None, 0, &|_| None, 2).unwrap();
        let reasons: Vec<(JobStatus, Option<&str>)> = view
            .jobs
            .iter()
            .map(|j| (j.status, j.reason.as_deref()))
            .collect();
        assert_eq!(
            reasons[1..],
            [
                (Skipped, Some("dependency 'a' ended failed, not succeeded")),
                (Skipped, Some("dependency 'b' ended skipped, not succeeded")),
            ]
        );
    }

    #[test]
    fn retry_does_not_run_a_job_whose_other_condition_already_failed() {
        let mut s = State::new(config());
        let mut x = job("x", &["w"]);
        x.depends_on = vec![Dependency {
            job: "w".into(),
            when: When::Failed,
        }];
        let mut y = job("y", &[]);
        y.depends_on = vec![
            Dependency {
                job: "x".into(),
                when: When::Finished,
            },
            Dependency {
                job: "z".into(),
                when: When::Failed,
            },
        ];
        let jobs = vec![job("w", &[]), job("z", &[]), x, y];
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w1", 4), &[], 0).unwrap();
        for (_, a) in s.dispatch(0) {
            s.job_finished(1, attempt_of(&a), ended(ok()), 1).unwrap();
        }
        assert_eq!(status(&s, id, "x"), JobStatus::Skipped);
        assert_eq!(status(&s, id, "y"), JobStatus::Skipped);
        s.retry(id, 2).unwrap();
        assert_eq!(
            status(&s, id, "y"),
            JobStatus::Skipped,
            "z succeeded: y must not run"
        );
        assert!(s.dispatch(3).is_empty());
    }
}
