//! The model's side of providers (issue 17): what their launch decision
//! needs (the queued jobs a new worker could start, grouped by the labels
//! they require, and each connected worker's name, labels and free
//! slots), and what their loop last saw (`aam providers`, and why a queued
//! job waits).

use aam_protocol::model::{JobRecord, JobStatus, ProviderView};

use super::dispatch::Admission;
use super::State;
use crate::schedule::{fits, Labels};
use std::collections::{BTreeMap, HashMap};

/// The model's capacity at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Queued jobs no worker has been given that a new worker could start
    /// now, by required labels: not those held for a reason more workers
    /// do not change (a paused limit group or account, its session's
    /// `max_parallel`, a shared resource at its limit, a pin to one
    /// worker, a budget spent).
    pub unclaimed: Vec<(Labels, u32)>,
    /// Connected workers: (name, labels, free slots), draining ones left out
    /// of the free slots.
    pub workers: Vec<(String, Labels, u32)>,
}

impl State {
    /// What the providers' loop saw last.
    pub fn set_providers(&mut self, seen: Vec<ProviderView>) {
        self.providers = seen;
    }

    pub fn providers(&self) -> &[ProviderView] {
        &self.providers
    }

    /// A queued job's reason, with the provider that launches workers for
    /// it: `waiting for capacity from pods (2 launching)`, or its last
    /// error when it launches none.
    pub(super) fn with_provider(&self, job: &JobRecord, reason: String) -> String {
        if job.status != JobStatus::Queued {
            return reason;
        }
        let fits = |p: &&ProviderView| crate::schedule::matches(&job.requires, &p.labels);
        let Some(p) = self.providers.iter().find(fits) else {
            return reason;
        };
        match (&p.last_error, p.launching) {
            (_, n) if n > 0 => format!("waiting for capacity from {} ({n} launching)", p.name),
            (Some(error), _) => format!("{reason}; provider {}: {error}", p.name),
            (None, _) => reason,
        }
    }

    /// A walk over the queue at `now`, with the admission, session room,
    /// resource room and account starts dispatch uses (so a job dispatch
    /// would hold back does not make a worker launch): once a tick of the
    /// providers' loop, only when providers are configured. `launchable`:
    /// the most job slots the providers could ever bring (their
    /// `max_workers` × `slots`). A group of labels needs counting only up
    /// to that plus the free slots of the connected workers (more jobs
    /// than every slot there could be launch nothing more), so the walk
    /// stops once each group queued has that many counted or has been
    /// seen whole: with a million jobs queued it reads a few thousand.
    pub fn capacity(&self, now: u64, launchable: u32) -> Capacity {
        let any_paused = self.pauses.any_held(now);
        let mut room = self.sessions.rooms();
        let mut resource_room = self.resource_room();
        let mut starts = self.starts(now);
        let free: u32 = self.free_slots().map(|(_, f)| f).sum();
        let enough = launchable.saturating_add(free);
        let mut unseen: Vec<u32> = self.queue.group_sizes().to_vec();
        let mut counted = vec![0u32; unseen.len()];
        let mut open = unseen.iter().filter(|&&n| n > 0).count();
        let mut groups: BTreeMap<&Labels, u32> = BTreeMap::new();
        for key in self.queue.iter() {
            if open == 0 || enough == 0 {
                break;
            }
            let Some(g) = self.queue.group(key) else {
                continue;
            };
            let was_open = counted[g] < enough;
            unseen[g] -= 1;
            if was_open
                && self.counts_for_capacity(
                    key,
                    any_paused,
                    now,
                    &mut room,
                    &mut resource_room,
                    &mut starts,
                )
            {
                let Some(job) = self.job(key) else { continue };
                *groups.entry(&job.requires).or_default() += 1;
                counted[g] += 1;
            }
            if was_open && (counted[g] >= enough || unseen[g] == 0) {
                open -= 1;
            }
        }
        Capacity {
            unclaimed: groups.into_iter().map(|(l, n)| (l.clone(), n)).collect(),
            workers: self
                .free_slots()
                .map(|(w, free)| (w.name.clone(), w.labels.clone(), free))
                .collect(),
        }
    }

    /// Each connected worker with its free slots (none when draining).
    fn free_slots(&self) -> impl Iterator<Item = (&super::WorkerEntry, u32)> {
        self.workers.values().map(|w| {
            let free = match w.draining {
                true => 0,
                false => w.slots.saturating_sub(w.assigned.len() as u32),
            };
            (w, free)
        })
    }

    /// Whether queued job `key` counts as wanting a new worker, taking
    /// its share of its session's room, the resources and its account.
    fn counts_for_capacity(
        &self,
        key: aam_protocol::JobKey,
        any_paused: bool,
        now: u64,
        room: &mut HashMap<aam_protocol::SessionId, u32>,
        resource_room: &mut crate::schedule::ResourceRoom,
        starts: &mut super::accounts::Starts,
    ) -> bool {
        let Admission::Place {
            only: None, uses, ..
        } = self.admission(key, any_paused, now)
        else {
            return false;
        };
        if room.get(&key.session) == Some(&0) || !fits(uses, resource_room) {
            return false;
        }
        if !self.claim_start(starts, key, now) {
            return false;
        }
        if let Some(r) = room.get_mut(&key.session) {
            *r -= 1;
        }
        for claim in uses {
            if let Some(r) = resource_room.get_mut(&claim.name) {
                *r -= claim.count;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::providers::plan::ProviderCapacity;
    use crate::providers::run::decide;
    use crate::schedule::Labels;
    use std::collections::BTreeMap;

    /// Count every queued job.
    const ALL: u32 = u32::MAX;

    #[test]
    fn queued_jobs_are_grouped_by_their_labels_and_workers_show_free_slots() {
        let mut s = State::new(config());
        let mut gpu = job("g", &[]);
        gpu.requires = BTreeMap::from([("gpu".to_string(), "yes".to_string())]);
        s.submit(batch(vec![job("a", &[]), job("b", &[]), gpu]), None, 0)
            .unwrap();
        let c = s.capacity(1, ALL);
        assert_eq!(c.unclaimed.len(), 2, "{c:?}");
        assert_eq!(c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(), 3);
        s.register_worker(1, worker("p-1", 2), &[], 0).unwrap();
        s.dispatch(1);
        let c = s.capacity(1, ALL);
        assert_eq!(c.workers, [("p-1".to_string(), Default::default(), 0)]);
        assert_eq!(c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(), 1, "{c:?}");
    }

    #[test]
    fn jobs_their_session_may_not_start_yet_make_no_worker_launch() {
        let mut s = State::new(config());
        let mut b = batch(vec![job("a", &[]), job("b", &[]), job("c", &[])]);
        b.max_parallel = Some(1);
        s.submit(b, None, 0).unwrap();
        let c = s.capacity(1, ALL);
        assert_eq!(
            c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(),
            1,
            "max_parallel 1: one worker's worth, not three: {c:?}"
        );
        s.register_worker(1, worker("p-1", 2), &[], 0).unwrap();
        s.dispatch(1);
        let c = s.capacity(2, ALL);
        assert!(
            c.unclaimed.is_empty(),
            "one runs, the others wait for it: {c:?}"
        );
    }

    #[test]
    fn the_walk_counts_a_group_only_up_to_every_slot_there_could_be_and_still_finds_the_groups_behind(
    ) {
        let mut s = State::new(config());
        let mut jobs: Vec<JobSpec> = (0..50).map(|i| job(&format!("p{i}"), &[])).collect();
        let gpus: Labels = BTreeMap::from([("gpu".to_string(), "yes".to_string())]);
        let mut gpu = job("g", &[]);
        gpu.requires = gpus.clone();
        jobs.push(gpu);
        s.submit(batch(jobs), None, 0).unwrap();
        let plain = Labels::new();
        let counted = |s: &State, launchable| s.capacity(1, launchable).unclaimed;
        assert_eq!(
            counted(&s, 4),
            vec![(plain.clone(), 4), (gpus.clone(), 1)],
            "4 plain jobs are as many as could launch; the gpu job behind them is counted"
        );
        assert_eq!(
            counted(&s, ALL),
            vec![(plain.clone(), 50), (gpus.clone(), 1)]
        );
        // A connected worker's free slots count too.
        s.register_worker(1, worker("w-1", 3), &[], 0).unwrap();
        assert_eq!(counted(&s, 4)[0], (plain.clone(), 7));
        // The decision is the one every job counted makes.
        let providers = [
            ProviderCapacity {
                labels: &plain,
                slots: 2,
                max_workers: 2,
                min_workers: 0,
                connected: 0,
                launching: 1,
            },
            ProviderCapacity {
                labels: &gpus,
                slots: 1,
                max_workers: 1,
                min_workers: 0,
                connected: 0,
                launching: 0,
            },
        ];
        let launchable = 2 * 2 + 1;
        let bounded = decide(&s.capacity(1, launchable), &providers);
        assert_eq!(bounded, vec![1, 1]);
        assert_eq!(bounded, decide(&s.capacity(1, ALL), &providers));
    }
}
