//! The scheduling decision as a pure function: which queued job goes to which
//! worker slot, under each session's `max_parallel`, each job's `requires`
//! labels, the worker a job is pinned to and the room left in the shared
//! resources it `uses`. The scheduler actor only feeds it and applies its
//! answer; `why_waiting` explains a job it did not place.

use crate::state::WorkerId;
use aam_protocol::resource::ResourceUse;
use aam_protocol::{JobKey, SessionId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// Labels a job requires, or a worker offers.
pub type Labels = BTreeMap<String, String>;

/// A worker's free slots and labels at the moment of deciding.
#[derive(Clone, Copy, Debug)]
pub struct WorkerCapacity<'a> {
    pub worker: WorkerId,
    pub free: u32,
    pub labels: &'a Labels,
}

/// A queued job, in queue order (priority, then FIFO).
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub job: JobKey,
    pub requires: &'a Labels,
    /// The only worker it may run on (a follow-up, where its conversation
    /// lives).
    pub only: Option<WorkerId>,
    /// Shared resources it holds while it runs.
    pub uses: &'a [ResourceUse],
}

/// Units of each shared resource not held by a running job.
pub type ResourceRoom = HashMap<String, u32>;

/// Whether a worker's labels satisfy a job's requirements.
pub fn matches(requires: &Labels, labels: &Labels) -> bool {
    requires.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Assigns queued jobs, in the order given, each to a worker with a free
/// slot and matching labels (the one with the most free slots; ties go to
/// the earlier worker), while its session has room under `max_parallel`
/// (`session_room`: sessions absent from it have no limit). A job that
/// cannot be placed now is passed over, so it does not hold back the jobs
/// behind it. Stops when no slot is free. Unlabelled jobs cost O(log w)
/// each; a requirement set that found no worker is remembered for the rest
/// of the call, so a long queue of unplaceable jobs costs O(1) per job.
pub fn plan<'a>(
    queued: impl IntoIterator<Item = Candidate<'a>>,
    workers: &[WorkerCapacity<'_>],
    session_room: &mut HashMap<SessionId, u32>,
) -> Vec<(JobKey, WorkerId)> {
    plan_with_resources(queued, workers, session_room, &mut ResourceRoom::new())
}

/// `plan`, where a job also needs room in every resource it uses
/// (`resource_room`; a resource absent from it has none). A job without
/// room is passed over like one without a slot: the jobs behind it that
/// fit go first (no head-of-line blocking; a job wanting many units may
/// wait while smaller ones keep fitting, the price of never idling a
/// resource). What a placed job uses is taken from the room.
pub fn plan_with_resources<'a>(
    queued: impl IntoIterator<Item = Candidate<'a>>,
    workers: &[WorkerCapacity<'_>],
    session_room: &mut HashMap<SessionId, u32>,
    resource_room: &mut ResourceRoom,
) -> Vec<(JobKey, WorkerId)> {
    plan_claiming(queued, workers, session_room, resource_room, |_| true)
}

/// `plan_with_resources`, where a job that found a slot is placed only if
/// `claim` takes it (its last say: an account with room, a start left to
/// a group resuming after a limit); one refused is passed over and its
/// slot stays free for the jobs behind it. `claim` is asked only once a
/// slot is found, so it may count what it gives.
pub fn plan_claiming<'a>(
    queued: impl IntoIterator<Item = Candidate<'a>>,
    workers: &[WorkerCapacity<'_>],
    session_room: &mut HashMap<SessionId, u32>,
    resource_room: &mut ResourceRoom,
    mut claim: impl FnMut(JobKey) -> bool,
) -> Vec<(JobKey, WorkerId)> {
    let mut free: Vec<u32> = workers.iter().map(|w| w.free).collect();
    let mut total: u64 = free.iter().map(|&f| f as u64).sum();
    // Entries may be stale (a labelled job took a slot): checked when popped.
    let mut heap: BinaryHeap<(u32, Reverse<usize>)> = free
        .iter()
        .enumerate()
        .filter(|(_, &f)| f > 0)
        .map(|(i, &f)| (f, Reverse(i)))
        .collect();
    let mut unplaceable: Vec<&Labels> = Vec::new();
    let mut out = Vec::new();
    for candidate in queued {
        if total == 0 {
            break;
        }
        let session = candidate.job.session;
        if session_room.get(&session) == Some(&0) {
            continue;
        }
        if !fits(candidate.uses, resource_room) {
            continue;
        }
        let chosen = if let Some(only) = candidate.only {
            // Pinned jobs are few: a scan of the workers each.
            (0..workers.len()).find(|&i| {
                workers[i].worker == only
                    && free[i] > 0
                    && matches(candidate.requires, workers[i].labels)
            })
        } else if candidate.requires.is_empty() {
            loop {
                let Some((f, Reverse(i))) = heap.pop() else {
                    break None;
                };
                if f == free[i] && f > 0 {
                    break Some(i);
                }
                if free[i] > 0 {
                    heap.push((free[i], Reverse(i)));
                }
            }
        } else if unplaceable.contains(&candidate.requires) {
            None
        } else {
            let best = (0..workers.len())
                .filter(|&i| free[i] > 0 && matches(candidate.requires, workers[i].labels))
                .max_by_key(|&i| (free[i], Reverse(i)));
            if best.is_none() {
                unplaceable.push(candidate.requires);
            }
            best
        };
        let Some(i) = chosen else { continue };
        if !claim(candidate.job) {
            // Popped from the heap only on the unlabelled path.
            if candidate.only.is_none() && candidate.requires.is_empty() {
                heap.push((free[i], Reverse(i)));
            }
            continue;
        }
        free[i] -= 1;
        total -= 1;
        if free[i] > 0 {
            heap.push((free[i], Reverse(i)));
        }
        if let Some(room) = session_room.get_mut(&session) {
            *room -= 1;
        }
        for claim in candidate.uses {
            if let Some(room) = resource_room.get_mut(&claim.name) {
                *room -= claim.count;
            }
        }
        out.push((candidate.job, workers[i].worker));
    }
    out
}

/// Whether every resource in `uses` has room for it.
pub fn fits(uses: &[ResourceUse], room: &ResourceRoom) -> bool {
    uses.iter()
        .all(|claim| room.get(&claim.name).is_some_and(|&r| r >= claim.count))
}

/// Why a queued job is not running, for `aam status`.
pub fn why_waiting(
    requires: &Labels,
    workers: &[WorkerCapacity<'_>],
    session_room: Option<u32>,
    max_parallel: Option<u32>,
) -> String {
    use aam_protocol::workspace::CONTAINER_LABEL;
    let can_contain =
        |w: &WorkerCapacity<'_>| w.labels.get(CONTAINER_LABEL) == requires.get(CONTAINER_LABEL);
    if requires.contains_key(CONTAINER_LABEL) && !workers.iter().any(can_contain) {
        return "no worker can run containers".into();
    }
    if !requires.is_empty() && !workers.iter().any(|w| matches(requires, w.labels)) {
        let wanted: Vec<String> = requires.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return format!("no connected worker has the labels {}", wanted.join(", "));
    }
    if session_room == Some(0) {
        return format!(
            "session limit reached (max_parallel = {})",
            max_parallel.unwrap_or(0)
        );
    }
    if workers.is_empty() {
        return "no worker connected".into();
    }
    "waiting for a free slot".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: u64, index: u32) -> JobKey {
        JobKey {
            session: SessionId(session),
            index,
        }
    }

    fn no_labels() -> &'static Labels {
        static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();
        EMPTY.get_or_init(Labels::new)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn plain(keys: &[JobKey]) -> Vec<Candidate<'static>> {
        keys.iter()
            .map(|&job| Candidate {
                job,
                requires: no_labels(),
                only: None,
                uses: &[],
            })
            .collect()
    }

    fn cap(worker: WorkerId, free: u32) -> WorkerCapacity<'static> {
        WorkerCapacity {
            worker,
            free,
            labels: no_labels(),
        }
    }

    fn jobs(n: u32) -> Vec<JobKey> {
        (0..n).map(|i| key(1, i)).collect()
    }

    #[test]
    fn nothing_to_do_without_workers_or_jobs() {
        let mut room = HashMap::new();
        assert!(plan(plain(&jobs(3)), &[], &mut room).is_empty());
        assert!(plan(plain(&jobs(3)), &[cap(1, 0)], &mut room).is_empty());
        assert!(plan(plain(&jobs(0)), &[cap(1, 4)], &mut room).is_empty());
    }

    #[test]
    fn queue_order_and_never_more_than_free_slots() {
        let out = plan(
            plain(&jobs(10)),
            &[cap(1, 2), cap(2, 1)],
            &mut HashMap::new(),
        );
        let indices: Vec<u32> = out.iter().map(|(j, _)| j.index).collect();
        assert_eq!(indices, vec![0, 1, 2]);
        assert_eq!(out.iter().filter(|(_, w)| *w == 1).count(), 2);
        assert_eq!(out.iter().filter(|(_, w)| *w == 2).count(), 1);
    }

    #[test]
    fn spreads_across_workers_and_prefers_the_emptiest() {
        let out = plan(
            plain(&jobs(4)),
            &[cap(1, 4), cap(2, 4)],
            &mut HashMap::new(),
        );
        let workers: Vec<WorkerId> = out.iter().map(|(_, w)| *w).collect();
        assert_eq!(workers, vec![1, 2, 1, 2]);
        let out = plan(
            plain(&jobs(2)),
            &[cap(1, 1), cap(2, 3)],
            &mut HashMap::new(),
        );
        assert!(out.iter().all(|(_, w)| *w == 2));
    }

    #[test]
    fn max_parallel_caps_a_session_but_not_the_others() {
        let queued = [key(1, 0), key(1, 1), key(1, 2), key(2, 0)];
        let mut room = HashMap::from([(SessionId(1), 2)]);
        let out = plan(plain(&queued), &[cap(1, 8)], &mut room);
        let placed: Vec<JobKey> = out.iter().map(|(j, _)| *j).collect();
        assert_eq!(placed, vec![key(1, 0), key(1, 1), key(2, 0)]);
        assert_eq!(room[&SessionId(1)], 0);
    }

    #[test]
    fn labels_place_jobs_on_matching_workers_only_and_others_go_past() {
        let gpu = labels(&[("gpu", "true")]);
        let plain_worker = cap(1, 2);
        let gpu_worker = WorkerCapacity {
            worker: 2,
            free: 1,
            labels: &gpu,
        };
        let queued = vec![
            Candidate {
                job: key(1, 0),
                requires: &gpu,
                only: None,
                uses: &[],
            },
            Candidate {
                job: key(1, 1),
                requires: &gpu,
                only: None,
                uses: &[],
            },
            Candidate {
                job: key(1, 2),
                requires: no_labels(),
                only: None,
                uses: &[],
            },
        ];
        let out = plan(queued, &[plain_worker, gpu_worker], &mut HashMap::new());
        assert_eq!(out, vec![(key(1, 0), 2), (key(1, 2), 1)]);
        let tpu = labels(&[("tpu", "v5")]);
        assert_eq!(
            why_waiting(&tpu, &[plain_worker, gpu_worker], None, None),
            "no connected worker has the labels tpu=v5"
        );
        assert_eq!(
            why_waiting(no_labels(), &[plain_worker], Some(0), Some(4)),
            "session limit reached (max_parallel = 4)"
        );
        assert_eq!(
            why_waiting(no_labels(), &[], None, None),
            "no worker connected"
        );
    }

    #[test]
    fn a_pinned_job_goes_to_its_worker_only_and_others_go_past() {
        let mut queued = plain(&jobs(3));
        queued[0].only = Some(2);
        queued[1].only = Some(3);
        let out = plan(queued, &[cap(1, 4), cap(2, 1)], &mut HashMap::new());
        assert_eq!(out, vec![(key(1, 0), 2), (key(1, 2), 1)]);
        let mut busy = plain(&jobs(1));
        busy[0].only = Some(2);
        assert!(plan(busy, &[cap(1, 4), cap(2, 0)], &mut HashMap::new()).is_empty());
    }

    #[test]
    fn resources_are_taken_from_the_room_and_a_job_without_room_is_passed_over() {
        let claim = |name: &str, count| ResourceUse {
            name: name.into(),
            count,
        };
        let two = [claim("emulator", 2)];
        let one = [claim("emulator", 1)];
        let db = [claim("db", 1), claim("emulator", 1)];
        let mut queued = plain(&jobs(5));
        queued[0].uses = &two;
        queued[1].uses = &two; // no room left after the first: passed over
        queued[2].uses = &one;
        queued[3].uses = &db; // db is full
        let mut room = ResourceRoom::from([("emulator".into(), 3), ("db".into(), 0)]);
        let out = plan_with_resources(queued, &[cap(1, 8)], &mut HashMap::new(), &mut room);
        let placed: Vec<u32> = out.iter().map(|(j, _)| j.index).collect();
        assert_eq!(placed, vec![0, 2, 4]);
        assert_eq!(room["emulator"], 0);
        // A resource the room does not know has none.
        let mut unknown = plain(&jobs(1));
        let gpu = [claim("gpu", 1)];
        unknown[0].uses = &gpu;
        assert!(
            plan_with_resources(unknown, &[cap(1, 8)], &mut HashMap::new(), &mut room).is_empty()
        );
    }

    #[test]
    fn a_job_its_claim_refuses_is_passed_over_and_its_slot_goes_to_the_next() {
        let queued = jobs(4);
        let mut asked = Vec::new();
        let out = plan_claiming(
            plain(&queued),
            &[cap(1, 1), cap(2, 1)],
            &mut HashMap::new(),
            &mut ResourceRoom::new(),
            |job| {
                asked.push(job.index);
                job.index != 0
            },
        );
        assert_eq!(out, vec![(key(1, 1), 1), (key(1, 2), 2)]);
        // Asked only for jobs that found a slot: not the last one.
        assert_eq!(asked, vec![0, 1, 2]);
    }

    /// One decision with 100,000 queued jobs and 1,000 workers: when a slot
    /// frees, when nothing can be placed, and when only the last session has
    /// room. (How long each takes is measured by the bench, not here.)
    #[test]
    fn one_decision_stays_cheap_with_a_long_queue_and_many_workers() {
        let gpu = labels(&[("gpu", "true")]);
        let queued: Vec<JobKey> = (0..100_000).map(|i| key(1 + (i % 100) as u64, i)).collect();
        let mut busy: Vec<WorkerCapacity> = (0..1000).map(|w| cap(w, 0)).collect();
        busy[500].free = 1;
        let out = plan(plain(&queued), &busy, &mut HashMap::new());
        assert_eq!(out, vec![(queued[0], 500)]);
        // Every job wants a label nobody has: one pass, one lookup each.
        let wanting: Vec<Candidate> = queued
            .iter()
            .map(|&job| Candidate {
                job,
                requires: &gpu,
                only: None,
                uses: &[],
            })
            .collect();
        let idle: Vec<WorkerCapacity> = (0..1000).map(|w| cap(w, 4)).collect();
        assert!(plan(wanting, &idle, &mut HashMap::new()).is_empty());
        // Every session is at its limit but the last one.
        let mut room: HashMap<SessionId, u32> = (1..=100).map(|s| (SessionId(s), 0)).collect();
        room.insert(SessionId(100), 1);
        let out = plan(plain(&queued), &idle, &mut room);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.session, SessionId(100));
    }
}
