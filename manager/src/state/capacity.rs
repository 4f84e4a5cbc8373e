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
    /// providers' loop, only when providers are configured.
    pub fn capacity(&self, now: u64) -> Capacity {
        let any_paused = self.pauses.any_held(now);
        let mut room: HashMap<_, u32> = self
            .sessions
            .values()
            .filter_map(|e| Some((e.record().id, e.room()?)))
            .collect();
        let mut resource_room = self.resource_room();
        let mut starts = self.starts(now);
        let mut groups: BTreeMap<&Labels, u32> = BTreeMap::new();
        for key in self.queue.iter() {
            let Admission::Place {
                requires,
                only: None,
                uses,
            } = self.admission(key, any_paused, now)
            else {
                continue;
            };
            if room.get(&key.session) == Some(&0) || !fits(uses, &resource_room) {
                continue;
            }
            if !self.claim_start(&mut starts, key, now) {
                continue;
            }
            if let Some(r) = room.get_mut(&key.session) {
                *r -= 1;
            }
            for claim in uses {
                if let Some(r) = resource_room.get_mut(&claim.name) {
                    *r -= claim.count;
                }
            }
            *groups.entry(requires).or_default() += 1;
        }
        Capacity {
            unclaimed: groups.into_iter().map(|(l, n)| (l.clone(), n)).collect(),
            workers: self
                .workers
                .values()
                .map(|w| {
                    let free = if w.draining {
                        0
                    } else {
                        w.slots.saturating_sub(w.assigned.len() as u32)
                    };
                    (w.name.clone(), w.labels.clone(), free)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use std::collections::BTreeMap;

    #[test]
    fn queued_jobs_are_grouped_by_their_labels_and_workers_show_free_slots() {
        let mut s = State::new(config());
        let mut gpu = job("g", &[]);
        gpu.requires = BTreeMap::from([("gpu".to_string(), "yes".to_string())]);
        s.submit(batch(vec![job("a", &[]), job("b", &[]), gpu]), None, 0)
            .unwrap();
        let c = s.capacity(1);
        assert_eq!(c.unclaimed.len(), 2, "{c:?}");
        assert_eq!(c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(), 3);
        s.register_worker(1, worker("p-1", 2), &[], 0).unwrap();
        s.dispatch(1);
        let c = s.capacity(1);
        assert_eq!(c.workers, [("p-1".to_string(), Default::default(), 0)]);
        assert_eq!(c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(), 1, "{c:?}");
    }

    #[test]
    fn jobs_their_session_may_not_start_yet_make_no_worker_launch() {
        let mut s = State::new(config());
        let mut b = batch(vec![job("a", &[]), job("b", &[]), job("c", &[])]);
        b.max_parallel = Some(1);
        s.submit(b, None, 0).unwrap();
        let c = s.capacity(1);
        assert_eq!(
            c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(),
            1,
            "max_parallel 1: one worker's worth, not three: {c:?}"
        );
        s.register_worker(1, worker("p-1", 2), &[], 0).unwrap();
        s.dispatch(1);
        let c = s.capacity(2);
        assert!(
            c.unclaimed.is_empty(),
            "one runs, the others wait for it: {c:?}"
        );
    }
}
