//! Rebuilding the model from the store at start: sessions and their
//! indexes (and what their agents spent), the queue, the retries waiting
//! for their backoff, the duration history, the paused limit groups, and
//! running jobs as orphans their workers have a grace to claim.

use super::deps::unmet_dependency;
use super::limits::Pauses;
use super::queue::End;
use super::session::SessionEntry;
use super::workers::Orphan;
use super::{duration_key, State, StateConfig};
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::{JobKey, SessionId};
use aam_store::Snapshot;
use std::collections::BTreeMap;

impl State {
    /// Rebuilds the model from the store at start. Running jobs become
    /// orphans: their workers get `reconnect_grace_ms` to report them.
    pub fn rebuild(config: StateConfig, snapshot: Snapshot, now: u64) -> State {
        let mut state = State::new(config);
        state.next_session = snapshot.next_session;
        state.pauses = Pauses::restored(snapshot.pauses);
        // Each session's jobs in an array of its size: grown push by push,
        // a million-job session's records were copied twenty times over.
        let mut jobs_by_session: BTreeMap<SessionId, Vec<JobRecord>> = snapshot
            .sessions
            .iter()
            .map(|s| (s.id, Vec::with_capacity(s.job_count as usize)))
            .collect();
        for job in snapshot.jobs {
            jobs_by_session
                .entry(job.key.session)
                .or_default()
                .push(job);
        }
        for record in snapshot.sessions {
            let mut jobs = jobs_by_session.remove(&record.id).unwrap_or_default();
            // Jobs past the session's count are leftovers of an unacknowledged
            // write that reused the id; they are not part of this session.
            jobs.retain(|j| j.key.index < record.job_count);
            if jobs.len() != record.job_count as usize {
                tracing::error!(session = %record.id, expected = record.job_count, found = jobs.len(),
                    "session has missing jobs in the store; skipping it");
                continue;
            }
            state.next_session = state.next_session.max(record.id.0 + 1);
            let id = record.id;
            if let Some(k) = &record.idempotency_key {
                state.by_idempotency_key.insert(k.clone(), id);
            }
            let entry = SessionEntry::new(record, jobs, &state.config.prices);
            state.sessions.insert_loaded(entry);
            state.recheck_session(id, now);
        }
        state.restore_owners(snapshot.owners);
        state.restore_queue_and_orphans(now);
        // What rechecking settled was told of before the restart, or never
        // happened as a change of its own: no event is made again.
        state.transitions.clear();
        state
    }

    /// Queued jobs back in the queue (or waiting for their backoff), running
    /// ones as orphans, succeeded ones in the duration history.
    fn restore_queue_and_orphans(&mut self, now: u64) {
        let deadline = now + self.config.reconnect_grace_ms;
        let mut queued = Vec::new();
        let mut running = Vec::new();
        for job in self.sessions.values().flat_map(|s| s.jobs().iter()) {
            if let (JobStatus::Succeeded, Some(exit)) = (job.status, job.exit()) {
                self.history.record(&duration_key(job), exit.duration_ms);
            }
            match job.status {
                // A retry's backoff: delayed whatever its due time, so the
                // next tick releases it before the job is queued.
                JobStatus::Queued => match job.not_before_ms {
                    Some(due) => self.queue.delay(job.key, due),
                    None => queued.push(job.key),
                },
                JobStatus::Running => {
                    let orphan = Orphan {
                        requeue_at: deadline,
                        instance: None,
                    };
                    self.orphans.insert(job.key, orphan);
                    running.push(job.key);
                }
                _ => {}
            }
        }
        self.queue.reserve(queued.len());
        for key in queued {
            self.enqueue(key, End::Back, now);
        }
        for key in running {
            self.hold(key);
        }
    }

    /// Settles pending jobs whose dependencies already decided, and a
    /// session whose jobs all ended.
    fn recheck_session(&mut self, id: SessionId, now: u64) {
        let Some(entry) = self.sessions.get(id) else {
            return;
        };
        let pending: Vec<u32> = entry
            .jobs()
            .iter()
            .enumerate()
            .filter(|(_, j)| j.status == JobStatus::Pending)
            .map(|(i, _)| i as u32)
            .collect();
        for index in pending {
            let entry = self.sessions.get(id).expect("checked above");
            let job = entry.job(index);
            let key = JobKey { session: id, index };
            if job.status != JobStatus::Pending {
                continue; // settled meanwhile, by an earlier one
            }
            if let Some(reason) = unmet_dependency(entry, job) {
                self.skip(key, reason, now);
            } else if entry.waiting_on[index as usize] == 0 && !job.gate {
                // Queued (a parent of variants ends with their pick).
                self.ready(key, now);
            }
        }
        self.enforce_session_budget(id, now);
        self.maybe_finish_session(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn rebuild_restores_queue_and_orphans() {
        let mut s = State::new(config());
        let (id, _) = s
            .submit(
                batch(vec![job("a", &[]), job("b", &[]), job("c", &["a"])]),
                None,
                0,
            )
            .unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let running = attempt_of(&s.dispatch(0)[0].1);
        let mut r = State::rebuild(config(), snapshot_of(&mut s), 10);
        assert_eq!(r.summary(id).unwrap().count(JobStatus::Running), 1);
        let reg = r
            .register_worker(5, worker("w", 2), &[running], 20)
            .unwrap();
        assert_eq!(reg.adopted, vec![running]);
        let next = r.dispatch(30);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1.job_name, "b");
        assert!(r.job_finished(5, running, ended(ok()), 40).is_ok());
        assert_eq!(status(&r, id, "c"), JobStatus::Queued);
        let (new_id, _) = r.submit(batch(vec![job("x", &[])]), None, 50).unwrap();
        assert_eq!(new_id, SessionId(id.0 + 1));
    }

    #[test]
    fn a_retry_whose_backoff_passed_during_a_restart_still_runs() {
        let mut s = State::new(config());
        let mut spec = job("a", &[]);
        spec.retries = Some(1);
        let (id, _) = s.submit(batch(vec![spec]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let first = attempt_of(&s.dispatch(0)[0].1);
        assert!(s.job_finished(1, first, ended(fail()), 10).is_ok());
        // Restarted an hour later: the backoff is long over.
        let mut r = State::rebuild(config(), snapshot_of(&mut s), 3_600_000);
        r.register_worker(1, worker("w", 1), &[], 3_600_000)
            .unwrap();
        r.release_delayed(3_600_000);
        let again = r.dispatch(3_600_000);
        assert_eq!(again.len(), 1, "the retry was lost in the restart");
        assert_eq!(again[0].1.attempt, 2);
        assert_eq!(status(&r, id, "a"), JobStatus::Running);
    }

    #[test]
    fn a_rebuilt_model_holds_what_was_stored_and_the_unacknowledged_tail_is_ignored() {
        let mut s = State::new(config());
        let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        let mut snapshot = snapshot_of(&mut s);
        // A job past the session's count: an unacknowledged write that reused the id.
        let mut extra = snapshot.jobs[0].clone();
        extra.key.index = 1;
        snapshot.jobs.push(extra);
        let r = State::rebuild(config(), snapshot, 5);
        assert_eq!(r.summary(id).unwrap().total, 1);
        assert_eq!(status(&r, id, "a"), JobStatus::Queued);
    }
}
