//! Shared resources (issue 15): who holds what, derived from the jobs that
//! run (those on a worker, and orphans waiting for theirs) for the views
//! that name holders: a job that ends, is requeued with its lost worker or
//! is cancelled holds nothing from that moment on, and a restart rebuilds
//! holdings from the stored running jobs. O(running jobs), and nothing at
//! all when the manager declares no resources. Dispatch reads the room
//! left from the tally in `held`, which the unit tests check against this.

use super::State;
use crate::schedule::{fits, ResourceRoom};
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::resource::{ResourceHolder, ResourceView};
use aam_protocol::JobKey;
use std::collections::BTreeMap;

/// One holder: the job, how much, and its worker's name if connected.
type Holding = (JobKey, u32, Option<String>);

impl State {
    /// Running jobs that use resources, oldest key first, with their worker.
    fn holdings(&self) -> BTreeMap<JobKey, Option<String>> {
        let mut out = BTreeMap::new();
        if self.config.resources.is_empty() {
            return out;
        }
        let on_workers = self
            .workers
            .values()
            .flat_map(|w| w.assigned.iter().map(move |&k| (k, Some(w.name.clone()))));
        let orphans = self.orphans.keys().map(|&k| (k, None));
        for (key, worker) in on_workers.chain(orphans) {
            if self.job(key).is_some_and(holds_resources) {
                out.entry(key).or_insert(worker);
            }
        }
        out
    }

    /// Each declared resource's holders, in job order.
    fn holders_by_resource(&self) -> BTreeMap<&str, Vec<Holding>> {
        let mut by: BTreeMap<&str, Vec<Holding>> = self
            .config
            .resources
            .keys()
            .map(|name| (name.as_str(), Vec::new()))
            .collect();
        for (key, worker) in self.holdings() {
            let Some(job) = self.job(key) else { continue };
            for claim in &job.uses {
                if let Some(list) = by.get_mut(claim.name.as_str()) {
                    list.push((key, claim.count, worker.clone()));
                }
            }
        }
        by
    }

    /// Units of each resource no running job holds, for dispatch: from
    /// the tally (`held`), O(resources).
    pub(super) fn resource_room(&self) -> ResourceRoom {
        self.config
            .resources
            .iter()
            .map(|(name, &capacity)| (name.clone(), capacity.saturating_sub(self.held.units(name))))
            .collect()
    }

    /// `resource_room` derived from the running jobs, to check the tally.
    #[cfg(test)]
    pub(super) fn resource_room_derived(&self) -> ResourceRoom {
        self.room_left(&self.holders_by_resource())
    }

    fn room_left(&self, by: &BTreeMap<&str, Vec<Holding>>) -> ResourceRoom {
        by.iter()
            .map(|(name, holders)| {
                let used: u32 = holders.iter().map(|h| h.1).sum();
                let capacity = self.config.resources[*name];
                (name.to_string(), capacity.saturating_sub(used))
            })
            .collect()
    }

    /// `aam resources`: each resource, its capacity, in use and holders.
    pub fn resources(&self) -> Vec<ResourceView> {
        self.holders_by_resource()
            .into_iter()
            .map(|(name, holders)| ResourceView {
                name: name.to_string(),
                capacity: self.config.resources[name],
                in_use: holders.iter().map(|h| h.1).sum(),
                holders: holders
                    .into_iter()
                    .map(|(key, count, worker)| ResourceHolder {
                        job: self.job_label(key),
                        count,
                        worker,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Why a queued job waits for a resource, if it does: `waiting for
    /// resource db (1 of 1 in use by s7/tests)`, naming the first holder
    /// (`and 2 more` when there are others).
    pub(super) fn resource_wait(&self, job: &JobRecord) -> Option<String> {
        if job.uses.is_empty() {
            return None;
        }
        if fits(&job.uses, &self.resource_room()) {
            return None;
        }
        let by = self.holders_by_resource();
        let room = self.room_left(&by);
        let claim = job
            .uses
            .iter()
            .find(|c| room.get(&c.name).is_none_or(|&r| r < c.count))?;
        let Some(holders) = by.get(claim.name.as_str()) else {
            return Some(format!(
                "waiting for resource {} (the manager no longer declares it)",
                claim.name
            ));
        };
        let capacity = self.config.resources[&claim.name];
        let used: u32 = holders.iter().map(|h| h.1).sum();
        let who = match holders.split_first() {
            None => String::new(),
            Some(((key, _, _), [])) => format!(" by {}", self.job_label(*key)),
            Some(((key, _, _), rest)) => {
                format!(" by {} and {} more", self.job_label(*key), rest.len())
            }
        };
        Some(format!(
            "waiting for resource {} ({used} of {capacity} in use{who})",
            claim.name
        ))
    }

    /// `s7/tests`.
    pub(super) fn job_label(&self, key: JobKey) -> String {
        let name = self.job(key).map_or("?", |j| j.name.as_str());
        format!("{}/{name}", key.session)
    }
}

/// Whether a job holds its resources now: it runs (its slot's assignment
/// included) and uses some.
fn holds_resources(job: &JobRecord) -> bool {
    job.status == JobStatus::Running && !job.uses.is_empty()
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use aam_protocol::resource::UseSpec;

    fn with_resources(pairs: &[(&str, u32)]) -> StateConfig {
        StateConfig {
            resources: pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            ..config()
        }
    }

    fn using(name: &str, uses: &[(&str, u32)]) -> JobSpec {
        JobSpec {
            uses: uses
                .iter()
                .map(|&(n, count)| UseSpec {
                    name: n.into(),
                    count,
                })
                .collect(),
            ..job(name, &[])
        }
    }

    fn named(name: &str, jobs: Vec<JobSpec>) -> BatchSpec {
        BatchSpec {
            name: name.into(),
            ..batch(jobs)
        }
    }

    fn names(assigned: &[(WorkerId, Assignment)]) -> Vec<String> {
        assigned.iter().map(|(_, a)| a.job_name.clone()).collect()
    }

    #[test]
    fn a_resource_of_capacity_one_is_held_across_sessions_until_the_end() {
        let mut s = State::new(with_resources(&[("db", 1)]));
        let (first, _) = s
            .submit(named("tests", vec![using("a", &[("db", 1)])]), None, 0)
            .unwrap();
        let (second, _) = s
            .submit(named("more", vec![using("b", &[("db", 1)])]), None, 0)
            .unwrap();
        s.register_worker(1, worker("w", 4), &[], 0).unwrap();
        let started = s.dispatch(1);
        assert_eq!(names(&started), vec!["a"]);
        assert!(s.dispatch(2).is_empty(), "db is held by a");
        let reason = job_view(&s, second, "b", 2).reason.unwrap();
        assert_eq!(
            reason,
            format!("waiting for resource db (1 of 1 in use by {first}/a)")
        );
        let view = s.resources();
        assert_eq!((view[0].capacity, view[0].in_use), (1, 1));
        assert_eq!(view[0].holders[0].job, format!("{first}/a"));
        assert_eq!(view[0].holders[0].worker.as_deref(), Some("w"));

        s.job_finished(1, attempt_of(&started[0].1), ended(fail()), 3)
            .unwrap();
        assert_eq!(s.resources()[0].in_use, 0, "an end of any outcome releases");
        assert_eq!(names(&s.dispatch(4)), vec!["b"]);
    }

    #[test]
    fn a_job_that_does_not_fit_lets_smaller_ones_past() {
        let mut s = State::new(with_resources(&[("emulator", 4)]));
        let jobs = vec![
            using("holder", &[("emulator", 3)]),
            using("big", &[("emulator", 2)]),
            using("small", &[("emulator", 1)]),
            using("other", &[("emulator", 1)]),
        ];
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w", 8), &[], 0).unwrap();
        let started = s.dispatch(1);
        assert_eq!(names(&started), vec!["holder", "small"]);
        let reason = job_view(&s, id, "big", 1).reason.unwrap();
        assert!(
            reason.starts_with("waiting for resource emulator (4 of 4 in use by "),
            "{reason}"
        );
        assert!(reason.ends_with(" and 1 more)"), "{reason}");
        s.job_finished(1, attempt_of(&started[0].1), ended(ok()), 2)
            .unwrap();
        // 3 free: the big one (first in the queue) goes, then the other.
        assert_eq!(names(&s.dispatch(3)), vec!["big", "other"]);
    }

    #[test]
    fn a_lost_worker_s_jobs_release_what_they_held() {
        let mut s = State::new(with_resources(&[("db", 1)]));
        s.submit(
            batch(vec![using("a", &[("db", 1)]), using("b", &[("db", 1)])]),
            None,
            0,
        )
        .unwrap();
        s.register_worker(1, worker("w1", 1), &[], 0).unwrap();
        s.register_worker(2, worker("w2", 1), &[], 0).unwrap();
        assert_eq!(names(&s.dispatch(1)), vec!["a"]);
        s.worker_gone(1, true, 2);
        // An orphan still runs, as far as anyone knows: it still holds.
        assert_eq!(s.resources()[0].in_use, 1);
        assert!(s.resources()[0].holders[0].worker.is_none());
        s.expire_orphans(2);
        assert_eq!(s.resources()[0].in_use, 0);
        // The requeued job goes first (it was dispatched first).
        assert_eq!(names(&s.dispatch(3)), vec!["a"]);
    }

    #[test]
    fn a_cancelled_job_holds_until_it_stops_and_a_restart_rebuilds_holdings() {
        let mut s = State::new(with_resources(&[("db", 2)]));
        let (id, _) = s
            .submit(
                batch(vec![using("a", &[("db", 2)]), using("b", &[("db", 1)])]),
                None,
                0,
            )
            .unwrap();
        s.register_worker(1, worker("w", 4), &[], 0).unwrap();
        let started = s.dispatch(1);
        assert_eq!(names(&started), vec!["a"]);
        let mut r = State::rebuild(with_resources(&[("db", 2)]), snapshot_of(&mut s), 5);
        assert_eq!(r.resources()[0].in_use, 2, "rebuilt from the running job");
        r.register_worker(1, worker("w", 4), &[], 5).unwrap();
        assert!(r.dispatch(6).is_empty());
        assert!(job_view(&r, id, "b", 6)
            .reason
            .unwrap()
            .contains("2 of 2 in use"));

        s.cancel(id, Some("a"), None, 2).unwrap();
        assert_eq!(s.resources()[0].in_use, 2, "still running until it stops");
        s.job_finished(1, attempt_of(&started[0].1), ended(fail()), 3)
            .unwrap();
        assert_eq!(s.resources()[0].in_use, 0);
        assert_eq!(names(&s.dispatch(4)), vec!["b"]);
    }

    #[test]
    fn unknown_resources_and_counts_past_capacity_are_refused_at_submit() {
        let mut s = State::new(with_resources(&[("db", 1)]));
        let e = s
            .submit(batch(vec![using("t", &[("gpu", 1)])]), None, 0)
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("job 't': field 'uses': "), "{text}");
        assert!(
            text.contains("unknown resource gpu (the manager declares db)"),
            "{text}"
        );
        let e = s
            .submit(batch(vec![using("t", &[("db", 2)])]), None, 0)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("uses 2 of resource db, more than its capacity of 1"),
            "{e}"
        );
    }

    #[test]
    fn variants_each_hold_their_own() {
        let mut s = State::new(with_resources(&[("db", 1)]));
        let mut spec = using("fix", &[("db", 1)]);
        spec.variants = Some(2);
        spec.isolation = Some("worktree".into());
        spec.workdir = Some("/repo".into());
        s.submit(batch(vec![spec]), None, 0).unwrap();
        s.register_worker(1, worker("w", 4), &[], 0).unwrap();
        assert_eq!(s.dispatch(1).len(), 1, "one variant at a time");
    }

    /// A long queue waiting for a full resource: each decision is one pass
    /// (how long it takes is the bench's to measure, not a test's).
    #[test]
    fn a_long_queue_waiting_for_a_resource_is_one_cheap_decision() {
        let mut s = State::new(with_resources(&[("db", 1)]));
        let jobs = (0..10_000)
            .map(|i| using(&format!("j{i}"), &[("db", 1)]))
            .collect();
        s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w", 64), &[], 0).unwrap();
        assert_eq!(s.dispatch(1).len(), 1);
        for t in 2..12 {
            assert!(s.dispatch(t).is_empty());
        }
    }
}
