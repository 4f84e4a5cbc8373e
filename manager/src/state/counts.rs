//! The model's gauges for `GET /metrics` (`metrics::ModelCounts`), counted
//! when scraped: from the counts per status each session keeps, the queue's
//! length, the workers, the pauses and the shared resources; O(sessions +
//! workers + running jobs that use resources), no other job is visited.

use super::State;
use crate::metrics::{ModelCounts, SESSION_STATUSES};
use aam_protocol::model::JobStatus;

impl State {
    /// What the model holds at `now`, counted.
    pub fn counts(&self, now: u64) -> ModelCounts {
        let mut counts = ModelCounts {
            queue_length: self.queue.len() as u64,
            oldest_queued_ms: self
                .queue
                .oldest_since()
                .map_or(0, |since| now.saturating_sub(since)),
            workers: self.workers.len() as u64,
            paused_groups: self.pauses.active(now).count() as u64,
            ..ModelCounts::default()
        };
        for entry in self.sessions.values() {
            for (slot, status) in JobStatus::ALL.iter().enumerate() {
                counts.jobs[slot] += u64::from(entry.count(*status));
            }
            let status = entry.record().status;
            if let Some(slot) = SESSION_STATUSES.iter().position(|s| *s == status) {
                counts.sessions[slot] += 1;
            }
        }
        counts.launching = self
            .providers()
            .iter()
            .map(|p| (p.name.clone(), u64::from(p.launching)))
            .collect();
        counts.resources = self
            .resources()
            .into_iter()
            .map(|r| (r.name, u64::from(r.capacity), u64::from(r.in_use)))
            .collect();
        for worker in self.workers.values() {
            let assigned = worker.assigned.len() as u64;
            counts.running += assigned;
            counts.slots += u64::from(worker.slots);
            counts.slots_free += u64::from(worker.slots).saturating_sub(assigned);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    /// The counts by walking every job, the slow way.
    fn walked(s: &State) -> [u64; 8] {
        let mut jobs = [0u64; 8];
        for entry in s.sessions.values() {
            for job in entry.jobs() {
                let slot = JobStatus::ALL
                    .iter()
                    .position(|x| *x == job.status)
                    .unwrap();
                jobs[slot] += 1;
            }
        }
        jobs
    }

    #[test]
    fn counts_follow_the_model_through_dispatch_ends_and_a_cancel() {
        let mut s = State::new(config());
        s.register_worker(1, worker("w1", 2), &[], 0).unwrap();
        s.register_worker(2, worker("w2", 1), &[], 0).unwrap();
        let jobs = vec![
            job("a", &[]),
            job("b", &[]),
            job("c", &[]),
            job("d", &[]),
            job("e", &["a"]),
        ];
        s.submit(batch(jobs), None, 0).unwrap();
        let (second, _) = s.submit(batch(vec![job("x", &[])]), None, 0).unwrap();
        let c = s.counts(0);
        assert_eq!(c.jobs, walked(&s));
        assert_eq!(c.jobs[JobStatus::Pending as usize], 1);
        assert_eq!(c.jobs[JobStatus::Queued as usize], 5);
        assert_eq!(c.queue_length, 5);
        assert_eq!(s.counts(2500).oldest_queued_ms, 2500, "queued at 0");
        assert_eq!((c.workers, c.slots, c.slots_free, c.running), (2, 3, 3, 0));
        assert_eq!(c.sessions, [2, 0, 0, 0]);

        let started = s.dispatch(1);
        assert_eq!(started.len(), 3);
        let c = s.counts(1);
        assert_eq!(c.jobs, walked(&s));
        assert_eq!(c.jobs[JobStatus::Running as usize], 3);
        assert_eq!((c.queue_length, c.running, c.slots_free), (2, 3, 0));

        s.job_finished(started[0].0, attempt_of(&started[0].1), ended(ok()), 2)
            .unwrap();
        s.job_finished(started[1].0, attempt_of(&started[1].1), ended(fail()), 2)
            .unwrap();
        s.cancel(second, None, None, 3).unwrap();
        let c = s.counts(3);
        assert_eq!(c.jobs, walked(&s));
        assert_eq!(c.jobs[JobStatus::Succeeded as usize], 1);
        assert_eq!(c.jobs[JobStatus::Failed as usize], 1);
        assert_eq!(c.sessions[3], 1, "the second session is cancelled");
        assert_eq!(c.jobs.iter().sum::<u64>(), 6);
    }

    #[test]
    fn dispatch_latency_and_attempt_durations_are_observed_once_each() {
        let mut s = State::new(config());
        let (_, _) = s.submit(batch(vec![job("a", &[])]), None, 100).unwrap();
        s.register_worker(1, worker("w", 1), &[], 100).unwrap();
        let started = s.dispatch(350);
        s.job_finished(1, attempt_of(&started[0].1), ended(ok()), 1350)
            .unwrap();
        let text = futures::executor::block_on(
            crate::metrics::Metrics::for_observer(s.config().metrics.clone()).render(),
        );
        assert!(
            text.contains("aam_dispatch_latency_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("aam_dispatch_latency_seconds_sum 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("aam_job_duration_seconds_sum{outcome=\"succeeded\"} 1.0\n"),
            "{text}"
        );
    }

    #[test]
    fn an_agent_attempt_s_tokens_are_counted_by_agent_at_its_end() {
        let mut s = State::new(agent_config());
        s.submit(batch(vec![agent_job("a", "codex")]), None, 0)
            .unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let started = s.dispatch(0);
        let run = agent_run("x", "gpt", 100, 20);
        s.job_finished(1, attempt_of(&started[0].1), ended_with(ok(), run), 5)
            .unwrap();
        let text = futures::executor::block_on(
            crate::metrics::Metrics::for_observer(s.config().metrics.clone()).render(),
        );
        for line in [
            "aam_agent_tokens_total{agent=\"codex\",kind=\"input\"} 100\n",
            "aam_agent_tokens_total{agent=\"codex\",kind=\"output\"} 20\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
