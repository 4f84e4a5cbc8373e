//! The scheduling decision as a pure function: which queued job goes to which
//! worker slot. The scheduler actor only feeds it and applies its answer.

use aam_protocol::JobKey;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Identifies one worker connection inside the manager.
pub type WorkerId = u64;

/// A worker's free slots at the moment of deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerCapacity {
    pub worker: WorkerId,
    pub free: u32,
}

/// Assigns queued jobs, in queue order (FIFO across sessions), each to the
/// worker with the most free slots (ties go to the earlier worker in
/// `workers`), until the queue or the free slots run out. Spreading by free
/// slots keeps workers evenly loaded. Costs O(k log w) for k assignments.
pub fn plan(
    queued: impl IntoIterator<Item = JobKey>,
    workers: &[WorkerCapacity],
) -> Vec<(JobKey, WorkerId)> {
    let mut heap: BinaryHeap<(u32, Reverse<usize>)> = workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.free > 0)
        .map(|(i, w)| (w.free, Reverse(i)))
        .collect();
    let mut out = Vec::new();
    for job in queued {
        let Some((free, Reverse(i))) = heap.pop() else {
            break;
        };
        out.push((job, workers[i].worker));
        if free > 1 {
            heap.push((free - 1, Reverse(i)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::SessionId;

    fn jobs(n: u32) -> Vec<JobKey> {
        (0..n)
            .map(|index| JobKey {
                session: SessionId(1),
                index,
            })
            .collect()
    }

    fn cap(worker: WorkerId, free: u32) -> WorkerCapacity {
        WorkerCapacity { worker, free }
    }

    #[test]
    fn nothing_to_do_without_workers_or_jobs() {
        assert!(plan(jobs(3), &[]).is_empty());
        assert!(plan(jobs(3), &[cap(1, 0)]).is_empty());
        assert!(plan(jobs(0), &[cap(1, 4)]).is_empty());
    }

    #[test]
    fn fifo_order_and_never_more_than_free_slots() {
        let out = plan(jobs(10), &[cap(1, 2), cap(2, 1)]);
        assert_eq!(out.len(), 3);
        let indices: Vec<u32> = out.iter().map(|(j, _)| j.index).collect();
        assert_eq!(indices, vec![0, 1, 2]);
        assert_eq!(out.iter().filter(|(_, w)| *w == 1).count(), 2);
        assert_eq!(out.iter().filter(|(_, w)| *w == 2).count(), 1);
    }

    #[test]
    fn spreads_across_workers() {
        let out = plan(jobs(4), &[cap(1, 4), cap(2, 4)]);
        let workers: Vec<WorkerId> = out.iter().map(|(_, w)| *w).collect();
        assert_eq!(workers, vec![1, 2, 1, 2]);
    }

    #[test]
    fn prefers_the_emptiest_worker() {
        let out = plan(jobs(2), &[cap(1, 1), cap(2, 3)]);
        assert_eq!(out[0].1, 2);
        assert_eq!(out[1].1, 2);
    }

    #[test]
    fn scales_to_a_long_queue_and_many_workers() {
        let workers: Vec<_> = (0..1000).map(|w| cap(w, 2)).collect();
        let out = plan(jobs(100_000), &workers);
        assert_eq!(out.len(), 2000);
        assert_eq!(out.last().unwrap().0.index, 1999);
    }
}
