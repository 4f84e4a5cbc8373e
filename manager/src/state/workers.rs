//! Workers as the model knows them: registration (adopting the attempts a
//! worker reports, or telling it to kill them), heartbeats, draining, loss,
//! and the orphans a lost worker leaves behind until they are requeued.

use super::attempts::AttemptEnd;
use super::State;
use crate::schedule::WorkerCapacity;
use aam_protocol::messages::{AttemptRef, Prefetch};
use aam_protocol::model::{JobStatus, WorkerView};
use aam_protocol::JobKey;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Identifies one worker connection inside the manager.
pub type WorkerId = u64;

/// A connected worker as the model knows it.
pub struct WorkerEntry {
    pub name: String,
    /// Drawn once per worker process (see `WorkerToManager::Register`).
    pub instance: u64,
    pub address: String,
    pub slots: u32,
    /// Assignments beyond `slots` the worker queues locally.
    pub prefetch: Prefetch,
    /// How long its recent jobs ran (a moving average, µs, of the ms
    /// they report: kept finer so that it does not round down and stick),
    /// for `Prefetch::Auto`; None until one ends, and after it handed back
    /// an assignment that waited too long for a slot.
    pub recent_job_us: Option<u64>,
    pub labels: BTreeMap<String, String>,
    /// Jobs assigned to it: running, or waiting on it for a slot (prefetch).
    pub assigned: BTreeSet<JobKey>,
    /// Shutting down: it gets no new jobs.
    pub draining: bool,
    pub connected_at_ms: u64,
    pub last_heartbeat_ms: u64,
}

/// `Prefetch::Auto` prefetches while a worker's recent jobs average at
/// most this: a round trip to the manager (about a millisecond) then
/// matters, and a prefetched job waits at most about this long for a slot.
pub const AUTO_PREFETCH_MAX_MS: u64 = 50;

/// `Prefetch::Auto` gives each slot enough short jobs to run for about
/// this long without the manager: an end and the next assignment are a
/// commit each (two syncs and two hops, 0.5-1 ms here), and with one job
/// a slot ahead a worker of millisecond jobs ran dry (BENCHMARKS.md,
/// issue 18's tenth session).
pub const AUTO_PREFETCH_COVER_MS: u64 = 4;

/// Most jobs `Prefetch::Auto` queues per slot.
const AUTO_PREFETCH_PER_SLOT: u64 = AUTO_PREFETCH_COVER_MS;

impl WorkerEntry {
    /// How many assignments beyond its slots it gets now.
    pub fn prefetch_now(&self) -> u32 {
        match self.prefetch {
            Prefetch::Fixed(n) => n,
            Prefetch::Auto => match self.recent_job_us {
                Some(us) if us <= AUTO_PREFETCH_MAX_MS * 1000 => {
                    let per_slot = (AUTO_PREFETCH_COVER_MS * 1000)
                        .div_ceil(us.max(1000))
                        .clamp(1, AUTO_PREFETCH_PER_SLOT);
                    self.slots.saturating_mul(per_slot as u32)
                }
                _ => 0,
            },
        }
    }

    /// An attempt of its ended after `ran_ms`; `handed_back`: it never
    /// started, given back after waiting for a slot (its slots hold long
    /// jobs: no prefetch until a job ends again).
    pub(super) fn attempt_ended(&mut self, ran_ms: u64, handed_back: bool) {
        let ran_us = ran_ms.saturating_mul(1000);
        self.recent_job_us = match (handed_back, self.recent_job_us) {
            (true, _) => None,
            (false, None) => Some(ran_us),
            // A quarter of the new sample: a few long jobs turn it off.
            (false, Some(avg)) => Some((avg.saturating_mul(3).saturating_add(ran_us)) / 4),
        };
    }
}

/// A running job whose worker connection is gone, until the worker comes
/// back for it or it is requeued at `requeue_at`.
pub(super) struct Orphan {
    pub requeue_at: u64,
    /// The worker process that held it; None after a manager restart,
    /// when only its worker's name is known.
    pub instance: Option<u64>,
}

/// What a worker's registration decided.
#[derive(Debug, Default, PartialEq)]
pub struct Registration {
    /// Attempts the worker reported that are still its own: it keeps running them.
    pub adopted: Vec<AttemptRef>,
    /// Attempts it must kill: not (or no longer) assigned to it.
    pub kill: Vec<AttemptRef>,
    /// Adopted attempts a cancel is still waiting on: stop them (again; the
    /// first order may have been lost with a connection or a restart).
    pub cancel: Vec<(AttemptRef, u64)>,
    /// A previous connection of the same worker process, now replaced.
    pub replaced: Option<WorkerId>,
}

/// A registration refused: another worker process is connected under that
/// name (from `address`). The newcomer may try again once it is gone.
#[derive(Debug, PartialEq)]
pub struct NameInUse {
    pub address: String,
}

impl State {
    /// A worker registered, reporting the attempts it holds. A name taken
    /// by a connected worker is refused, unless the newcomer is the same
    /// process (its `instance`) back on a new connection: its old one is
    /// dead, and is replaced. Only attempts assigned under its name are
    /// adopted; each reported attempt counts once.
    pub fn register_worker(
        &mut self,
        id: WorkerId,
        worker: WorkerEntry,
        reported: &[AttemptRef],
        now: u64,
    ) -> Result<Registration, NameInUse> {
        let mut out = Registration::default();
        if let Some(old) = self.worker_by_name.get(&worker.name).copied() {
            match self.workers.get(&old) {
                Some(entry) if entry.instance != worker.instance => {
                    return Err(NameInUse {
                        address: entry.address.clone(),
                    });
                }
                _ => {
                    self.worker_gone(old, false, now);
                    out.replaced = Some(old);
                }
            }
        }
        let (name, instance) = (worker.name.clone(), worker.instance);
        self.worker_by_name.insert(name.clone(), id);
        self.workers.insert(id, worker);
        let mut seen = HashSet::with_capacity(reported.len());
        for r in reported.iter().filter(|r| seen.insert(**r)) {
            let ours = self.job(r.job).is_some_and(|j| {
                j.status == JobStatus::Running
                    && j.attempts == r.attempt
                    && j.worker.as_deref() == Some(name.as_str())
            }) && self
                .orphans
                .get(&r.job)
                .is_some_and(|o| o.instance.is_none_or(|i| i == instance));
            if !ours {
                out.kill.push(*r);
                continue;
            }
            self.orphans.remove(&r.job);
            if let Some(mut w) = self.workers.get_mut(&id) {
                w.assigned.insert(r.job);
            }
            if let Some(job) = self.job(r.job).filter(|j| j.cancel_requested) {
                out.cancel.push((*r, job.policy.grace_ms));
            }
            out.adopted.push(*r);
        }
        Ok(out)
    }

    /// A worker connection ended: its jobs wait for it to come back for the
    /// disconnect grace (`lost`: it went silent past its lease; they are
    /// requeued at once).
    pub fn worker_gone(&mut self, id: WorkerId, lost: bool, now: u64) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        if self.worker_by_name.get(&worker.name) == Some(&id) {
            self.worker_by_name.remove(&worker.name);
        }
        let grace = if lost {
            0
        } else {
            self.config.disconnect_grace_ms
        };
        for job in worker.assigned {
            let orphan = Orphan {
                requeue_at: now + grace,
                instance: Some(worker.instance),
            };
            self.orphans.insert(job, orphan);
        }
    }

    pub fn worker_draining(&mut self, id: WorkerId) {
        if let Some(mut w) = self.workers.get_mut(&id) {
            w.draining = true;
        }
    }

    /// A worker idle for its idle timeout asks to leave: granted, and it
    /// is assigned nothing more, only while nothing is assigned to it (a
    /// job sent before its ask keeps it). One step of the single writer,
    /// so no job is sent to a worker that is leaving.
    pub fn retire_if_idle(&mut self, id: WorkerId) -> bool {
        match self.workers.get_mut(&id) {
            Some(mut w) if w.assigned.is_empty() => {
                w.draining = true;
                true
            }
            _ => false,
        }
    }

    pub fn heartbeat(&mut self, id: WorkerId, now: u64) {
        if let Some(mut w) = self.workers.get_mut(&id) {
            w.last_heartbeat_ms = now;
        }
    }

    /// Requeues orphaned jobs whose grace ran out (a lost attempt each).
    /// Returns how many.
    pub fn expire_orphans(&mut self, now: u64) -> usize {
        let mut expired: Vec<JobKey> = self
            .orphans
            .iter()
            .filter(|(_, orphan)| orphan.requeue_at <= now)
            .map(|(k, _)| *k)
            .collect();
        // Requeued jobs go to the front; the earliest must end up first.
        expired.sort();
        let mut requeued = 0;
        for key in expired.into_iter().rev() {
            self.orphans.remove(&key);
            if self.job(key).map(|j| j.status) == Some(JobStatus::Running) {
                let reason = Some("worker lost".to_string());
                self.end_attempt(key, AttemptEnd::Lost, reason, None, None, now);
                requeued += 1;
            }
        }
        requeued
    }

    pub fn next_orphan_deadline(&self) -> Option<u64> {
        self.orphans.values().map(|o| o.requeue_at).min()
    }

    /// The connected worker a running job is assigned to, if any.
    pub(super) fn holder(&self, key: JobKey) -> Option<WorkerId> {
        let name = self.job(key)?.worker.as_ref()?;
        let id = *self.worker_by_name.get(name)?;
        self.workers
            .get(&id)
            .is_some_and(|w| w.assigned.contains(&key))
            .then_some(id)
    }

    /// A job's attempt ended: its worker's slot is free again.
    pub(super) fn release_worker_slot(&mut self, key: JobKey) {
        let Some(name) = self.job(key).and_then(|j| j.worker.as_ref()) else {
            return;
        };
        let Some(&id) = self.worker_by_name.get(name) else {
            return;
        };
        if let Some(mut w) = self.workers.get_mut(&id) {
            w.assigned.remove(&key);
        }
    }

    /// Each worker's free slots (its slots alone) and labels, to explain
    /// a wait.
    pub(super) fn capacities(&self) -> Vec<WorkerCapacity<'_>> {
        self.workers
            .iter()
            .map(|(&worker, w)| WorkerCapacity {
                worker,
                free: w.slots.saturating_sub(w.assigned.len() as u32),
                labels: &w.labels,
            })
            .collect()
    }

    /// The workers that may take another assignment (their prefetch
    /// counted; a draining one takes none), from the index kept beside
    /// them: O(workers with room), not O(workers).
    pub(super) fn dispatch_capacities(&self) -> Vec<WorkerCapacity<'_>> {
        self.workers
            .with_room()
            .map(|(worker, w)| WorkerCapacity {
                worker,
                free: w.room_for_dispatch(),
                labels: &w.labels,
            })
            .collect()
    }

    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers
            .values()
            .map(|w| WorkerView {
                name: w.name.clone(),
                address: w.address.clone(),
                slots: w.slots,
                running: w
                    .assigned
                    .iter()
                    .map(|k| {
                        let job = self.job(*k).map(|j| j.name.as_str()).unwrap_or("?");
                        format!("{}/{}", k.session, job)
                    })
                    .collect(),
                labels: w.labels.clone(),
                connected_at_ms: w.connected_at_ms,
                last_heartbeat_ms: w.last_heartbeat_ms,
            })
            .collect()
    }

    pub fn worker_name(&self, id: WorkerId) -> Option<&str> {
        self.workers.get(&id).map(|w| w.name.as_str())
    }

    /// The connected worker of this name, if any.
    pub fn worker_id(&self, name: &str) -> Option<WorkerId> {
        self.worker_by_name.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn an_idle_worker_retires_only_with_nothing_assigned_and_then_gets_nothing() {
        let mut s = State::new(StateConfig::default());
        s.register_worker(1, worker("pilot", 1), &[], 0).unwrap();
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        let sent = s.dispatch(1);
        assert_eq!(sent.len(), 1);
        // A job went to it before it asked: it stays.
        assert!(!s.retire_if_idle(1));
        let attempt = sent[0].1.attempt_ref();
        s.job_finished(1, attempt, ended(ok()), 2).unwrap();
        assert!(s.retire_if_idle(1));
        // Retired: a job queued now is not sent to it.
        s.submit(batch(vec![job("b", &[])]), None, 3).unwrap();
        assert!(s.dispatch(4).is_empty());
    }

    #[test]
    fn orphans_are_adopted_on_reconnect_or_requeued_after_grace() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[]), job("b", &[])]), None, 0)
            .unwrap();
        s.register_worker(1, worker("w", 2), &[], 0).unwrap();
        let assigned: Vec<AttemptRef> = s.dispatch(0).iter().map(|(_, a)| attempt_of(a)).collect();
        s.worker_gone(1, false, 100);
        // Back before the grace ran out, still running only the first job.
        let reg = s
            .register_worker(2, worker("w", 2), &assigned[..1], 200)
            .unwrap();
        assert_eq!(reg.adopted, assigned[..1]);
        assert_eq!(s.expire_orphans(1099), 0);
        assert_eq!(s.expire_orphans(1100), 1);
        let again = s.dispatch(1200);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1.job, assigned[1].job);
        assert_eq!(again[0].1.attempt, 2);
        // The old attempt's late report is fenced off.
        assert!(s.job_finished(2, assigned[1], ended(ok()), 1300).is_err());
    }

    #[test]
    fn worker_losses_requeue_without_using_retries_until_the_limit() {
        let mut s = State::new(config());
        let mut spec = job("a", &[]);
        spec.retries = Some(5);
        let (id, _) = s.submit(batch(vec![spec]), None, 0).unwrap();
        for round in 0..3u64 {
            let worker_id = 10 + round;
            s.register_worker(worker_id, worker(&format!("w{round}"), 1), &[], round * 10)
                .unwrap();
            assert_eq!(s.dispatch(round * 10).len(), 1, "round {round}");
            s.worker_gone(worker_id, true, round * 10 + 1);
            s.expire_orphans(round * 10 + 1);
        }
        let view = s.view(id, OutputWanted::None, 0, &|_| None, 100).unwrap();
        let a = &view.jobs[0];
        assert_eq!(a.status, JobStatus::Failed);
        assert_eq!(a.reason.as_deref(), Some("worker lost (3 times)"));
        assert_eq!(a.history.len(), 3);
        assert!(a
            .history
            .iter()
            .all(|h| h.outcome == aam_protocol::model::AttemptOutcome::Requeued));
    }

    #[test]
    fn a_worker_reporting_jobs_that_are_not_its_own_is_told_to_kill_them() {
        let mut s = State::new(config());
        let bogus = AttemptRef {
            job: JobKey {
                session: SessionId(99),
                index: 0,
            },
            attempt: 1,
        };
        let reg = s.register_worker(1, worker("w", 1), &[bogus], 0).unwrap();
        assert_eq!(reg.kill, vec![bogus]);
    }

    fn another_process(name: &str) -> WorkerEntry {
        WorkerEntry {
            instance: 2,
            address: "elsewhere".into(),
            ..worker(name, 1)
        }
    }

    #[test]
    fn a_second_worker_process_under_a_connected_name_is_refused() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let a = attempt_of(&s.dispatch(0)[0].1);
        let refused = s.register_worker(2, another_process("w"), &[a], 1);
        let address = "test".to_string();
        assert_eq!(refused, Err(NameInUse { address }));
        // The first is left alone: its job, its reports, its name.
        assert_eq!(s.worker_name(2), None);
        assert!(s.job_output(1, a, b"still mine").is_ok());
        // Once it is gone, the name is free; the newcomer adopts nothing it
        // did not run (the attempt belongs to the process that left).
        s.worker_gone(1, false, 2);
        let reg = s.register_worker(2, another_process("w"), &[a], 3).unwrap();
        assert_eq!(
            (reg.adopted, reg.kill, reg.replaced),
            (vec![], vec![a], None)
        );
        assert_eq!(s.expire_orphans(2 + 1000), 1);
    }

    #[test]
    fn the_same_process_on_a_new_connection_replaces_its_old_one() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let a = attempt_of(&s.dispatch(0)[0].1);
        // Its old connection still looks alive; it reports its attempt thrice.
        let reg = s.register_worker(2, worker("w", 1), &[a, a, a], 1).unwrap();
        assert_eq!((reg.adopted, reg.replaced), (vec![a], Some(1)));
        assert_eq!(s.job_output(1, a, b"old"), Err(Fenced::NotYours));
        assert!(s.job_output(2, a, b"new").is_ok());
        assert_eq!(s.expire_orphans(10_000), 0);
    }

    #[test]
    fn a_draining_worker_gets_nothing_new() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        s.worker_draining(1);
        assert!(s.dispatch(1).is_empty());
        s.register_worker(2, worker("v", 1), &[], 2).unwrap();
        assert_eq!(s.dispatch(3).len(), 1);
    }
}
