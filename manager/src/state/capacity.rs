//! The model's side of providers (issue 17): what their launch decision
//! needs (the queued jobs grouped by the labels they require, and each
//! connected worker's name, labels and free slots), and what their loop
//! last saw (`aam providers`, and why a queued job waits).

use aam_protocol::model::{JobRecord, JobStatus, ProviderView};

use super::State;
use crate::schedule::Labels;
use std::collections::BTreeMap;

/// The model's capacity at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Queued jobs (no worker given them yet), by required labels.
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

    /// A walk over the queue: once a tick of the providers' loop, only
    /// when providers are configured.
    pub fn capacity(&self) -> Capacity {
        let mut groups: BTreeMap<&Labels, u32> = BTreeMap::new();
        for key in self.queue.iter() {
            if let Some(job) = self.sessions.job(key) {
                *groups.entry(&job.requires).or_default() += 1;
            }
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
        let c = s.capacity();
        assert_eq!(c.unclaimed.len(), 2, "{c:?}");
        assert_eq!(c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(), 3);
        s.register_worker(1, worker("p-1", 2), &[], 0).unwrap();
        s.dispatch(1);
        let c = s.capacity();
        assert_eq!(c.workers, [("p-1".to_string(), Default::default(), 0)]);
        assert_eq!(c.unclaimed.iter().map(|(_, n)| n).sum::<u32>(), 1, "{c:?}");
    }
}
