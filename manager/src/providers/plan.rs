//! How many workers each provider should launch now (issue 17), as a pure
//! function with its own tests: the queued jobs that nothing connected or
//! already launching could take, by labels, become workers of the first
//! providers whose workers could take them, up to each one's
//! `max_workers`; each keeps at least `min_workers`. It counts what the
//! caller saw (jobs, workers, launches the engines report), never a
//! running tally of its own, so a lost launch cannot leak capacity.

use crate::schedule::{matches, Labels};

/// Queued jobs ready to start (not held by a backoff, a pause, a
/// dependency or a gate) that require these labels.
#[derive(Clone, Copy, Debug)]
pub struct Unclaimed<'a> {
    pub requires: &'a Labels,
    pub jobs: u32,
}

/// A connected worker's free slots (any worker: a provider's or one
/// started by hand).
#[derive(Clone, Copy, Debug)]
pub struct FreeSlots<'a> {
    pub labels: &'a Labels,
    pub free: u32,
}

/// A provider as the decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct ProviderCapacity<'a> {
    /// The labels its workers get.
    pub labels: &'a Labels,
    /// Slots of each of its workers (at least 1).
    pub slots: u32,
    pub max_workers: u32,
    pub min_workers: u32,
    /// Its workers connected now.
    pub connected: u32,
    /// Launched and not connected yet (as its engine reports them).
    pub launching: u32,
}

impl ProviderCapacity<'_> {
    /// Workers it may still launch beyond `planned`.
    fn room(&self, planned: u32) -> u32 {
        self.max_workers
            .saturating_sub(self.connected)
            .saturating_sub(self.launching)
            .saturating_sub(planned)
    }
}

/// Workers to launch now, per provider (in the order given). Costs
/// O(groups × (workers + providers)): callers group queued jobs by the
/// labels they require, so a million plain jobs are one group.
pub fn launches(
    unclaimed: &[Unclaimed<'_>],
    free: &[FreeSlots<'_>],
    providers: &[ProviderCapacity<'_>],
) -> Vec<u32> {
    let mut free_left: Vec<u32> = free.iter().map(|f| f.free).collect();
    let mut planned = vec![0u32; providers.len()];
    // Slots of launching (and planned) workers not spoken for yet.
    let mut coming: Vec<u64> = providers
        .iter()
        .map(|p| u64::from(p.launching) * u64::from(p.slots.max(1)))
        .collect();
    for group in unclaimed {
        let mut left = u64::from(group.jobs);
        // First the free slots of connected workers that could take them.
        for (slot, f) in free_left.iter_mut().zip(free) {
            if left == 0 {
                break;
            }
            if matches(group.requires, f.labels) {
                let take = left.min(u64::from(*slot));
                *slot -= take as u32;
                left -= take;
            }
        }
        // Then the workers on their way.
        for (room, p) in coming.iter_mut().zip(providers) {
            if left == 0 {
                break;
            }
            if matches(group.requires, p.labels) {
                let take = left.min(*room);
                *room -= take;
                left -= take;
            }
        }
        // Then new workers, from the first providers that may launch.
        for (i, p) in providers.iter().enumerate() {
            if left == 0 {
                break;
            }
            if !matches(group.requires, p.labels) {
                continue;
            }
            let slots = u64::from(p.slots.max(1));
            let needed = left.div_ceil(slots);
            let n = needed.min(u64::from(p.room(planned[i]))) as u32;
            planned[i] += n;
            let capacity = u64::from(n) * slots;
            let take = left.min(capacity);
            left -= take;
            // What the new workers have beyond this group serves the next.
            coming[i] += capacity - take;
        }
    }
    for (i, p) in providers.iter().enumerate() {
        let have = p.connected + p.launching + planned[i];
        if have < p.min_workers {
            planned[i] += (p.min_workers - have).min(p.room(planned[i]));
        }
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn provider(labels: &Labels, slots: u32, max: u32) -> ProviderCapacity<'_> {
        ProviderCapacity {
            labels,
            slots,
            max_workers: max,
            min_workers: 0,
            connected: 0,
            launching: 0,
        }
    }

    #[test]
    fn queued_jobs_become_workers_of_slots_each_up_to_max() {
        let none = Labels::new();
        let p = [provider(&none, 2, 4)];
        let jobs = |n| {
            [Unclaimed {
                requires: &none,
                jobs: n,
            }]
        };
        assert_eq!(launches(&jobs(0), &[], &p), [0]);
        assert_eq!(launches(&jobs(1), &[], &p), [1]);
        assert_eq!(launches(&jobs(5), &[], &p), [3], "ceil(5 / 2)");
        assert_eq!(launches(&jobs(100), &[], &p), [4], "max_workers");
    }

    #[test]
    fn free_slots_and_workers_on_their_way_count_first() {
        let none = Labels::new();
        let jobs = [Unclaimed {
            requires: &none,
            jobs: 6,
        }];
        let free = [FreeSlots {
            labels: &none,
            free: 2,
        }];
        let mut p = provider(&none, 2, 10);
        assert_eq!(
            launches(&jobs, &free, &[p]),
            [2],
            "6 - 2 free = 4 = 2 workers"
        );
        p.launching = 1;
        assert_eq!(launches(&jobs, &free, &[p]), [1], "less what is launching");
        p.launching = 3;
        assert_eq!(launches(&jobs, &free, &[p]), [0]);
        // Connected workers count against max_workers.
        p.launching = 0;
        p.connected = 9;
        assert_eq!(launches(&jobs, &[], &[p]), [1]);
    }

    #[test]
    fn labels_choose_the_provider_and_a_busy_worker_without_them_does_not_count() {
        let gpu = labels(&[("gpu", "yes")]);
        let none = Labels::new();
        let cpu_pool = provider(&none, 4, 10);
        let gpu_pool = provider(&gpu, 1, 10);
        let jobs = [
            Unclaimed {
                requires: &gpu,
                jobs: 2,
            },
            Unclaimed {
                requires: &none,
                jobs: 3,
            },
        ];
        // A free slot without the label takes none of the gpu jobs.
        let free = [FreeSlots {
            labels: &none,
            free: 1,
        }];
        assert_eq!(launches(&jobs, &free, &[cpu_pool, gpu_pool]), [1, 2]);
        // Plain jobs go to the first provider listed that takes them (a
        // config lists special pools after the general ones); gpu jobs
        // only where the label is.
        assert_eq!(launches(&jobs, &[], &[gpu_pool, cpu_pool]), [5, 0]);
        // No provider has the label: nothing is launched for them.
        let tpu = labels(&[("tpu", "v5")]);
        let stuck = [Unclaimed {
            requires: &tpu,
            jobs: 5,
        }];
        assert_eq!(launches(&stuck, &[], &[cpu_pool, gpu_pool]), [0, 0]);
    }

    #[test]
    fn a_full_provider_overflows_to_the_next_and_spare_slots_serve_later_groups() {
        let none = Labels::new();
        let small = provider(&none, 2, 1);
        let big = provider(&none, 4, 5);
        let jobs = [Unclaimed {
            requires: &none,
            jobs: 7,
        }];
        assert_eq!(launches(&jobs, &[], &[small, big]), [1, 2]);
        // 3 jobs -> one 4-slot worker, whose spare slot takes the next group.
        let a = labels(&[("team", "a")]);
        let pool = provider(&a, 4, 5);
        let two = [
            Unclaimed {
                requires: &none,
                jobs: 3,
            },
            Unclaimed {
                requires: &a,
                jobs: 1,
            },
        ];
        assert_eq!(launches(&two, &[], &[pool]), [1]);
    }

    #[test]
    fn min_workers_are_kept_within_max() {
        let none = Labels::new();
        let mut p = provider(&none, 2, 3);
        p.min_workers = 2;
        assert_eq!(launches(&[], &[], &[p]), [2]);
        p.connected = 1;
        assert_eq!(launches(&[], &[], &[p]), [1]);
        p.min_workers = 5;
        assert_eq!(launches(&[], &[], &[p]), [2], "never past max_workers");
    }

    #[test]
    fn a_large_queue_is_one_group_and_costs_nothing_per_job() {
        let none = Labels::new();
        let providers: Vec<ProviderCapacity<'_>> =
            (0..100).map(|_| provider(&none, 10, 10)).collect();
        let free: Vec<FreeSlots<'_>> = (0..1000)
            .map(|_| FreeSlots {
                labels: &none,
                free: 1,
            })
            .collect();
        let jobs = [Unclaimed {
            requires: &none,
            jobs: 1_000_000,
        }];
        let planned = launches(&jobs, &free, &providers);
        assert_eq!(planned.iter().sum::<u32>(), 100 * 10, "every provider full");
    }
}
