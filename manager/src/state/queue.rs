//! The queue of jobs waiting for a slot: priority first (higher first), then
//! the order they became queued (FIFO across sessions); and the retries
//! waiting for their backoff before they join it. It holds keys only; the
//! jobs' records say whether a key is still worth dispatching, and since
//! when each waits (for the dispatch latency metric).

use aam_protocol::JobKey;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A place in the queue: higher priority first, then arrival order.
type Position = (Reverse<i32>, i64);

#[derive(Default)]
pub struct Queue {
    order: BTreeMap<Position, JobKey>,
    /// Where each queued job sits in `order`, and since when it is queued (ms).
    position: HashMap<JobKey, (Position, u64)>,
    /// The next arrival number at the back; the next (decreasing) at the front.
    back: i64,
    front: i64,
    /// Retries waiting for their backoff: (due time, job).
    delayed: BTreeSet<(u64, JobKey)>,
    due_of: HashMap<JobKey, u64>,
}

impl Queue {
    /// Puts a job at the back of its priority; it is queued since `now`.
    pub fn push_back(&mut self, key: JobKey, priority: i32, now: u64) {
        let at = (Reverse(priority), self.back);
        self.back += 1;
        self.place(key, at, now);
    }

    /// Puts a job at the front of its priority (it was dispatched before
    /// anything still queued).
    pub fn push_front(&mut self, key: JobKey, priority: i32, now: u64) {
        self.front -= 1;
        let at = (Reverse(priority), self.front);
        self.place(key, at, now);
    }

    fn place(&mut self, key: JobKey, at: Position, now: u64) {
        if let Some((old, _)) = self.position.insert(key, (at, now)) {
            self.order.remove(&old);
        }
        self.order.insert(at, key);
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
        let (at, since) = self.position.remove(&key)?;
        self.order.remove(&at);
        Some(since)
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
        self.position.values().map(|&(_, since)| since).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::SessionId;

    fn key(index: u32) -> JobKey {
        JobKey {
            session: SessionId(1),
            index,
        }
    }

    fn order(q: &Queue) -> Vec<u32> {
        q.iter().map(|k| k.index).collect()
    }

    #[test]
    fn priority_first_then_arrival_and_requeued_jobs_first_of_their_priority() {
        let mut q = Queue::default();
        q.push_back(key(0), 0, 0);
        q.push_back(key(1), 5, 0);
        q.push_back(key(2), 0, 0);
        q.push_front(key(3), 0, 0);
        q.push_front(key(4), 0, 0);
        assert_eq!(order(&q), vec![1, 4, 3, 0, 2]);
        // Placing a queued job again moves it; it is never there twice.
        q.push_back(key(1), 0, 7);
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
        q.push_back(key(0), 0, 0);
        q.delay(key(0), 50);
        q.delay(key(1), 20);
        q.delay(key(2), 90);
        assert!(q.is_empty(), "a delayed job is not queued");
        q.remove(key(2));
        assert_eq!(q.take_due(10), vec![]);
        assert_eq!(q.take_due(60), vec![(20, key(1)), (50, key(0))]);
        assert_eq!(q.take_due(1000), vec![], "removed, and taken ones are gone");
    }
}
