//! The queue of jobs waiting for a slot: priority first (higher first), then
//! the order they became queued (FIFO across sessions); and the retries
//! waiting for their backoff before they join it. It holds keys only; the
//! jobs' records say whether a key is still worth dispatching, and since
//! when each waits (for the dispatch latency metric); and how many wait in
//! each group of required labels, so a walk that needs only so many of
//! each group (the providers' capacity) knows when it has seen enough.

use super::State;
use crate::schedule::Labels;
use aam_protocol::JobKey;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A place in the queue: higher priority first, then arrival order.
type Position = (Reverse<i32>, i64);

/// A group of queued jobs: those requiring the same labels.
pub type GroupId = usize;

/// Which end of its priority a job joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Back,
    /// Dispatched before anything still queued: it goes first.
    Front,
}

/// A queued job's place, since when it waits (ms), and its group.
#[derive(Clone, Copy)]
struct Place {
    at: Position,
    since: u64,
    group: GroupId,
}

#[derive(Default)]
pub struct Queue {
    order: BTreeMap<Position, JobKey>,
    /// Where each queued job sits in `order`.
    position: HashMap<JobKey, Place>,
    /// The label sets jobs were queued with, each its group (never
    /// removed: there are as many as distinct `requires`, few in practice).
    group_of: HashMap<Labels, GroupId>,
    /// Jobs queued in each group.
    in_group: Vec<u32>,
    /// The next arrival number at the back; the next (decreasing) at the front.
    back: i64,
    front: i64,
    /// Retries waiting for their backoff: (due time, job).
    delayed: BTreeSet<(u64, JobKey)>,
    due_of: HashMap<JobKey, u64>,
}

impl State {
    /// Queues a job (at `end` of its priority, in the group of the labels
    /// it requires); it is queued since `now`.
    pub(super) fn enqueue(&mut self, key: JobKey, end: End, now: u64) {
        let Some(job) = self.sessions.job(key) else {
            return;
        };
        self.queue.push(key, job.priority, &job.requires, end, now);
    }
}

impl Queue {
    /// Room for `more` queued jobs without growing the index on the way
    /// (a start that queues a million jobs again).
    pub fn reserve(&mut self, more: usize) {
        self.position.reserve(more);
    }

    /// Puts a job at `end` of its priority; it is queued since `now`.
    pub fn push(&mut self, key: JobKey, priority: i32, requires: &Labels, end: End, now: u64) {
        let n = match end {
            End::Back => {
                self.back += 1;
                self.back - 1
            }
            End::Front => {
                self.front -= 1;
                self.front
            }
        };
        let at = (Reverse(priority), n);
        let group = match self.group_of.get(requires) {
            Some(&g) => g,
            None => {
                let g = self.in_group.len();
                self.in_group.push(0);
                self.group_of.insert(requires.clone(), g);
                g
            }
        };
        self.remove_queued(key);
        self.position.insert(
            key,
            Place {
                at,
                since: now,
                group,
            },
        );
        self.order.insert(at, key);
        self.in_group[group] += 1;
    }

    fn remove_queued(&mut self, key: JobKey) -> Option<u64> {
        let place = self.position.remove(&key)?;
        self.order.remove(&place.at);
        self.in_group[place.group] -= 1;
        Some(place.since)
    }

    /// Holds a job back until `due` (a retry's backoff).
    pub fn delay(&mut self, key: JobKey, due: u64) {
        self.remove(key);
        self.delayed.insert((due, key));
        self.due_of.insert(key, due);
    }

    /// Takes a job out, queued or delayed; says since when it was queued
    /// (None when it was not in the queue proper).
    pub fn remove(&mut self, key: JobKey) -> Option<u64> {
        if let Some(due) = self.due_of.remove(&key) {
            self.delayed.remove(&(due, key));
        }
        self.remove_queued(key)
    }

    /// Delayed jobs whose time has come, earliest first, each with the due
    /// time it was delayed to. They leave the delayed set; the caller queues them.
    pub fn take_due(&mut self, now: u64) -> Vec<(u64, JobKey)> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            self.due_of.remove(&key);
            due.push((at, key));
        }
        due
    }

    /// Queued jobs, in the order they are to be dispatched.
    pub fn iter(&self) -> impl Iterator<Item = JobKey> + '_ {
        self.order.values().copied()
    }

    /// Nothing queued (delayed jobs aside).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// How many jobs are queued (delayed jobs aside).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Since when the job queued longest waits (ms), if any is queued. A
    /// walk over the queue: for a scrape, not for the dispatch path.
    pub fn oldest_since(&self) -> Option<u64> {
        self.position.values().map(|p| p.since).min()
    }

    /// How many jobs are queued in each group (indexed by `GroupId`).
    pub fn group_sizes(&self) -> &[u32] {
        &self.in_group
    }

    /// The group a queued job was queued in.
    pub fn group(&self, key: JobKey) -> Option<GroupId> {
        self.position.get(&key).map(|p| p.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::key;

    fn push_back(q: &mut Queue, key: JobKey, priority: i32, now: u64) {
        q.push(key, priority, &Labels::new(), End::Back, now);
    }

    fn push_front(q: &mut Queue, key: JobKey, priority: i32, now: u64) {
        q.push(key, priority, &Labels::new(), End::Front, now);
    }

    fn order(q: &Queue) -> Vec<u32> {
        q.iter().map(|k| k.index).collect()
    }

    #[test]
    fn priority_first_then_arrival_and_requeued_jobs_first_of_their_priority() {
        let mut q = Queue::default();
        push_back(&mut q, key(0), 0, 0);
        push_back(&mut q, key(1), 5, 0);
        push_back(&mut q, key(2), 0, 0);
        push_front(&mut q, key(3), 0, 0);
        push_front(&mut q, key(4), 0, 0);
        assert_eq!(order(&q), vec![1, 4, 3, 0, 2]);
        // Placing a queued job again moves it; it is never there twice.
        push_back(&mut q, key(1), 0, 7);
        assert_eq!(order(&q), vec![4, 3, 0, 2, 1]);
        assert_eq!(q.len(), 5);
        assert_eq!(
            q.remove(key(1)),
            Some(7),
            "queued since it was placed again"
        );
        assert_eq!(q.remove(key(1)), None);
    }

    #[test]
    fn delayed_jobs_come_due_in_time_order_and_removal_reaches_both() {
        let mut q = Queue::default();
        push_back(&mut q, key(0), 0, 0);
        q.delay(key(0), 50);
        q.delay(key(1), 20);
        q.delay(key(2), 90);
        assert!(q.is_empty(), "a delayed job is not queued");
        q.remove(key(2));
        assert_eq!(q.take_due(10), vec![]);
        assert_eq!(q.take_due(60), vec![(20, key(1)), (50, key(0))]);
        assert_eq!(q.take_due(1000), vec![], "removed, and taken ones are gone");
    }

    #[test]
    fn each_group_counts_its_queued_jobs_and_a_job_moved_is_counted_once() {
        let mut q = Queue::default();
        let gpu: Labels = [("gpu".to_string(), "yes".to_string())].into();
        q.push(key(0), 0, &Labels::new(), End::Back, 0);
        q.push(key(1), 0, &gpu, End::Back, 0);
        q.push(key(2), 0, &gpu, End::Back, 0);
        let (plain, gpus) = (q.group(key(0)).unwrap(), q.group(key(1)).unwrap());
        assert_ne!(plain, gpus);
        assert_eq!((q.group_sizes()[plain], q.group_sizes()[gpus]), (1, 2));
        q.push(key(2), 0, &gpu, End::Front, 1);
        assert_eq!(q.group_sizes()[gpus], 2, "placed again, not twice");
        q.delay(key(1), 50);
        q.remove(key(0));
        assert_eq!((q.group_sizes()[plain], q.group_sizes()[gpus]), (0, 1));
        assert_eq!(q.group(key(1)), None, "a delayed job is in no group");
    }
}
