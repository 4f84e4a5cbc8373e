//! Estimates from history: how long the rest of a session should take, by
//! list-scheduling its remaining jobs (each taking the mean duration of
//! earlier runs of its agent or command) over the slots at hand. A pure
//! function; a job with no history makes the estimate "unknown" rather than
//! a guess.

use aam_protocol::model::Estimate;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A job still to finish.
#[derive(Clone, Debug, Default)]
pub struct Remaining {
    /// Expected time until it ends once started (for a running job: from
    /// now); `None` without history.
    pub ms: Option<u64>,
    /// Already running (it holds a slot now).
    pub running: bool,
    /// A gate: waits for a person, takes no slot, is not estimated.
    pub gate: bool,
    /// Ends as soon as its dependencies do, taking no slot (a parent of
    /// variants: it runs nothing, and ends with them).
    pub instant: bool,
    /// Indices (in the same list) of the jobs it waits for.
    pub deps: Vec<usize>,
}

/// Mean durations per agent or command.
#[derive(Clone, Debug, Default)]
pub struct History {
    means: std::collections::HashMap<String, (u64, u64)>,
}

impl History {
    /// Records one successful run's duration.
    pub fn record(&mut self, key: &str, ms: u64) {
        let (count, mean) = self.means.entry(key.to_string()).or_insert((0, 0));
        // In u128: a worker's reported duration is only its word, and any
        // u64 must leave the mean intact rather than overflow it.
        let sum = *mean as u128 * *count as u128 + ms as u128;
        *mean = (sum / (*count as u128 + 1)) as u64;
        *count = count.saturating_add(1);
    }

    pub fn mean(&self, key: &str) -> Option<u64> {
        self.means.get(key).map(|(_, m)| *m)
    }
}

/// Simulates the remaining jobs over `slots` slots, dependencies first,
/// each started as early as a slot and its dependencies allow.
pub fn estimate(jobs: &[Remaining], slots: u32) -> Estimate {
    let unknown = jobs.iter().filter(|j| !j.gate && j.ms.is_none()).count() as u32;
    let gates = jobs.iter().filter(|j| j.gate).count() as u32;
    let mut out = Estimate {
        ms: None,
        unknown,
        gates,
        slots,
    };
    if unknown > 0 || slots == 0 {
        return out;
    }
    // Kahn's order over the dependencies inside the list.
    let mut waiting: Vec<usize> = jobs.iter().map(|j| j.deps.len()).collect();
    let mut dependents = vec![Vec::new(); jobs.len()];
    for (i, j) in jobs.iter().enumerate() {
        for &d in &j.deps {
            dependents[d].push(i);
        }
    }
    let mut ready: std::collections::VecDeque<usize> =
        (0..jobs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut free_at: BinaryHeap<Reverse<u64>> = (0..slots).map(|_| Reverse(0)).collect();
    let mut finish = vec![0u64; jobs.len()];
    // Running jobs hold slots from now.
    for (i, j) in jobs.iter().enumerate() {
        if j.running {
            let Reverse(_) = free_at.pop().unwrap_or(Reverse(0));
            finish[i] = j.ms.unwrap_or(0);
            free_at.push(Reverse(finish[i]));
        }
    }
    let mut end = 0u64;
    while let Some(i) = ready.pop_front() {
        let job = &jobs[i];
        let deps_done = job.deps.iter().map(|&d| finish[d]).max().unwrap_or(0);
        if !job.running {
            if job.gate || job.instant {
                finish[i] = deps_done;
            } else {
                let Reverse(slot) = free_at.pop().unwrap_or(Reverse(0));
                let start = slot.max(deps_done);
                finish[i] = start.saturating_add(job.ms.unwrap_or(0));
                free_at.push(Reverse(finish[i]));
            }
        }
        end = end.max(finish[i]);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    out.ms = Some(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ms: u64, deps: &[usize]) -> Remaining {
        Remaining {
            ms: Some(ms),
            deps: deps.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn parallel_jobs_share_the_slots_and_dependents_wait() {
        let jobs = vec![
            job(100, &[]),
            job(100, &[]),
            job(100, &[]),
            job(50, &[0, 1, 2]),
        ];
        assert_eq!(estimate(&jobs, 3).ms, Some(150));
        assert_eq!(estimate(&jobs, 1).ms, Some(350));
        assert_eq!(estimate(&jobs, 2).ms, Some(250));
    }

    #[test]
    fn running_jobs_hold_their_slots_and_gates_take_none() {
        let mut running = job(40, &[]);
        running.running = true;
        let gate = Remaining {
            gate: true,
            deps: vec![0],
            ..Default::default()
        };
        let jobs = vec![running, gate, job(100, &[1]), job(10, &[])];
        let e = estimate(&jobs, 1);
        // The slot frees at 40; the 10 ms job, ready first, takes it; the
        // gated one follows at 50 (list scheduling, in readiness order).
        assert_eq!(e.ms, Some(150));
        assert_eq!(e.gates, 1);
    }

    #[test]
    fn a_job_that_ends_with_its_dependencies_takes_no_slot() {
        let parent = Remaining {
            ms: Some(0),
            instant: true,
            deps: vec![0, 1],
            ..Default::default()
        };
        let jobs = vec![job(100, &[]), job(60, &[]), parent, job(10, &[2])];
        let e = estimate(&jobs, 2);
        assert_eq!((e.ms, e.gates, e.unknown), (Some(110), 0, 0));
    }

    #[test]
    fn no_history_is_no_estimate() {
        let jobs = vec![job(100, &[]), Remaining::default()];
        let e = estimate(&jobs, 4);
        assert_eq!((e.ms, e.unknown), (None, 1));
    }

    #[test]
    fn history_keeps_a_running_mean() {
        let mut h = History::default();
        assert_eq!(h.mean("x"), None);
        h.record("x", 100);
        h.record("x", 300);
        assert_eq!(h.mean("x"), Some(200));
    }

    #[test]
    fn durations_a_worker_makes_up_do_not_overflow() {
        let mut h = History::default();
        h.record("x", u64::MAX);
        h.record("x", u64::MAX);
        assert_eq!(h.mean("x"), Some(u64::MAX));
        let e = estimate(&[job(u64::MAX, &[]), job(u64::MAX, &[0])], 1);
        assert_eq!(e.ms, Some(u64::MAX));
    }
}
