//! Sessions as the model holds them: each session's record and jobs with
//! the indexes that follow them (and what its agents spent), the one way to
//! change a record (which marks it to be stored, and its session to be
//! announced), finishing a session, and removing old ones.

use super::agent_runs::LiveAgent;
use super::budget::Spend;
use super::worktrees::BranchDeletion;
use super::State;
use crate::prices::PriceTable;
use aam_protocol::model::{JobRecord, JobStatus, SessionRecord, SessionStatus, SessionSummary};
use aam_protocol::output::OutputCapture;
use aam_protocol::{JobKey, SessionId};
use aam_store::StoredJob;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;

/// Where a status is counted in `SessionEntry::counts` (`JobStatus::ALL` order).
fn status_slot(status: JobStatus) -> usize {
    JobStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

/// One session: its record and jobs (changed only through `Sessions`, so
/// every change is stored) and what the model derives from them.
pub struct SessionEntry {
    record: SessionRecord,
    jobs: Vec<JobRecord>,
    /// Jobs per status, kept in step with `jobs` by `Sessions::set_status`.
    counts: [u32; 8],
    /// For each job, the jobs that wait on it.
    dependents: Dependents,
    /// For each job, how many of its dependencies have not ended yet.
    pub waiting_on: Vec<u32>,
    by_name: NameIndex,
    /// Output of running attempts, kept in memory until they finish.
    pub live: HashMap<u32, OutputCapture>,
    /// What the agents of running attempts did so far, as last reported
    /// (stored now and then: `agent_runs`).
    pub live_agents: HashMap<u32, LiveAgent>,
    /// What the ended attempts of its agent jobs spent: with the live ones,
    /// the session's sums, kept as runs change rather than summed per query.
    pub spent: Spend,
    /// It spent its `max_cost_usd`: its agent jobs not started are skipped.
    pub over_budget: bool,
    /// Some of its jobs are variants of another (`variants = N`).
    pub has_variants: bool,
    /// Its jobs whose agent takes messages or relays permission prompts:
    /// the ones that may wait for someone while they run.
    pub interactive: Vec<u32>,
}

impl SessionEntry {
    /// A session and its jobs; what their ended attempts spent is priced
    /// with `prices`, and running attempts' stored runs are their live ones.
    pub fn new(record: SessionRecord, jobs: Vec<JobRecord>, prices: &PriceTable) -> SessionEntry {
        let dependents = Dependents::build(&jobs);
        let mut waiting_on = vec![0u32; jobs.len()];
        let mut counts = [0u32; 8];
        let by_name = NameIndex::of(&jobs);
        for (i, job) in jobs.iter().enumerate() {
            counts[status_slot(job.status)] += 1;
            // A parent waits for its variants as for dependencies.
            let deps = job.depends_on.iter().map(|&(d, _)| d);
            for dep in deps.chain(job.variant_jobs.iter().copied()) {
                if !jobs
                    .get(dep as usize)
                    .is_some_and(|d| d.status.is_terminal())
                {
                    waiting_on[i] += 1;
                }
            }
        }
        let mut spent = Spend::default();
        let mut live_agents = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            for attempt in &job.history {
                spent.add(Spend::of(attempt.agent_run.as_deref(), prices));
            }
            if let (JobStatus::Running, Some(run)) = (job.status, &job.agent_run) {
                live_agents.insert(i as u32, LiveAgent::restored((**run).clone(), prices));
            }
        }
        SessionEntry {
            record,
            counts,
            dependents,
            waiting_on,
            by_name,
            live: HashMap::new(),
            live_agents,
            spent,
            over_budget: false,
            has_variants: jobs.iter().any(|j| j.variant.is_some()),
            interactive: (0..jobs.len() as u32)
                .filter(|&i| {
                    let job = &jobs[i as usize];
                    job.input.is_some() || job.permissions.is_some()
                })
                .collect(),
            jobs,
        }
    }

    /// What its agents spent so far: ended attempts and running ones.
    pub fn spend(&self) -> Spend {
        let mut total = self.spent;
        for live in self.live_agents.values() {
            total.add(live.spend);
        }
        total
    }

    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    pub fn jobs(&self) -> &[JobRecord] {
        &self.jobs
    }

    /// The jobs that wait on job `index` (its dependents, and a parent
    /// of variants for each of them).
    pub fn dependents_of(&self, index: u32) -> &[u32] {
        self.dependents.get(index)
    }

    /// The index of its job named `name`.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(&self.jobs, name)
    }

    /// The job at `index` (an index from this session's own records).
    pub fn job(&self, index: u32) -> &JobRecord {
        &self.jobs[index as usize]
    }

    pub fn count(&self, status: JobStatus) -> u32 {
        self.counts[status_slot(status)]
    }

    /// How many more of its jobs may start under its `max_parallel`.
    pub fn room(&self) -> Option<u32> {
        let max = self.record.max_parallel?;
        Some(max.saturating_sub(self.count(JobStatus::Running)))
    }

    /// Its running jobs that wait for someone: (job, needs a permission
    /// decision, lingers for a message).
    pub fn waiting(&self) -> impl Iterator<Item = (&JobRecord, bool, bool)> {
        self.interactive
            .iter()
            .map(|&i| &self.jobs[i as usize])
            .filter(|job| job.status == JobStatus::Running)
            .filter_map(|job| {
                let asks = job
                    .permissions
                    .as_ref()
                    .is_some_and(|p| p.open().count() > 0);
                let lingers = job
                    .input
                    .as_ref()
                    .is_some_and(|i| i.waiting_since_ms.is_some());
                (asks || lingers).then_some((job, asks, lingers))
            })
    }

    pub fn summary(&self) -> SessionSummary {
        let spend = self.spend();
        let (mut needs_input, mut waiting_for_input) = (0, 0);
        if self.count(JobStatus::Running) > 0 {
            for (_, asks, lingers) in self.waiting() {
                needs_input += asks as u32;
                waiting_for_input += lingers as u32;
            }
        }
        SessionSummary {
            id: self.record.id,
            name: self.record.name.clone(),
            status: self.record.status,
            created_at_ms: self.record.created_at_ms,
            finished_at_ms: self.record.finished_at_ms,
            counts: self.counts,
            total: self.jobs.len() as u32,
            cost_usd: spend.cost_usd,
            input_tokens: spend.input_tokens,
            output_tokens: spend.output_tokens,
            needs_input,
            waiting_for_input,
        }
    }
}

/// How a session whose jobs have all ended ends, from its counts; None while
/// some job has not ended.
fn outcome(entry: &SessionEntry) -> Option<SessionStatus> {
    let unfinished: u32 = JobStatus::ALL
        .iter()
        .filter(|s| !s.is_terminal())
        .map(|s| entry.count(*s))
        .sum();
    if unfinished > 0 {
        return None;
    }
    // A variant's end is its parent's to judge: one that lost (or failed)
    // does not fail a session whose parent picked a winner.
    let without_variants = entry.has_variants.then(|| {
        let mut counts = [0u32; 8];
        for job in entry.jobs.iter().filter(|j| j.variant.is_none()) {
            counts[status_slot(job.status)] += 1;
        }
        counts
    });
    let count = |status| match &without_variants {
        Some(counts) => counts[status_slot(status)],
        None => entry.count(status),
    };
    // Skipped jobs do not fail a session by themselves: a handler for a
    // failure that did not happen is skipped in a session that went well.
    // Jobs skipped because the budget ran out were work left undone.
    let budget_cut = entry.over_budget && count(JobStatus::Skipped) > 0;
    Some(
        if count(JobStatus::Failed) + count(JobStatus::TimedOut) > 0 || budget_cut {
            SessionStatus::Failed
        } else if count(JobStatus::Cancelled) > 0 {
            SessionStatus::Cancelled
        } else if count(JobStatus::Succeeded) > 0 {
            SessionStatus::Succeeded
        } else {
            // Nothing ran at all (every job skipped): that is no success.
            SessionStatus::Failed
        },
    )
}

/// What `gc` removed.
#[derive(Debug, Default, PartialEq)]
pub struct Collected {
    /// Each session removed, with its job count.
    pub removed: Vec<(SessionId, u32)>,
    /// Branches their workers are to delete (only with `gc_branches`).
    pub branches: Vec<BranchDeletion>,
}

/// Every session, and what changed since it was last stored and announced.
#[derive(Default)]
pub struct Sessions {
    map: BTreeMap<SessionId, SessionEntry>,
    /// Records changed since `take_unsaved`: to store.
    unsaved_jobs: BTreeSet<JobKey>,
    unsaved_sessions: BTreeSet<SessionId>,
    /// Sessions whose summary or progress changed since `take_to_notify`:
    /// their watchers are to be told.
    to_notify: BTreeSet<SessionId>,
    /// Sessions with a `max_parallel` (set at submit, never changed), so
    /// dispatch reads their room without walking every session.
    capped: BTreeSet<SessionId>,
}

impl Sessions {
    pub fn get(&self, id: SessionId) -> Option<&SessionEntry> {
        self.map.get(&id)
    }

    /// The parts of a session that are not stored (its indexes and live
    /// output); records change through `job_mut`, `set_status` and `record_mut`.
    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut SessionEntry> {
        self.map.get_mut(&id)
    }

    pub fn values(&self) -> impl Iterator<Item = &SessionEntry> {
        self.map.values()
    }

    /// Newest first.
    pub fn newest(&self) -> impl Iterator<Item = &SessionEntry> {
        self.map.values().rev()
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn job(&self, key: JobKey) -> Option<&JobRecord> {
        self.map.get(&key.session)?.jobs.get(key.index as usize)
    }

    /// A job to change; it will be stored. Its status changes through
    /// `set_status` alone, which keeps the counts.
    pub fn job_mut(&mut self, key: JobKey) -> Option<&mut JobRecord> {
        let job = self
            .map
            .get_mut(&key.session)?
            .jobs
            .get_mut(key.index as usize)?;
        self.unsaved_jobs.insert(key);
        Some(job)
    }

    /// A session record to change; it will be stored and announced.
    pub fn record_mut(&mut self, id: SessionId) -> Option<&mut SessionRecord> {
        let entry = self.map.get_mut(&id)?;
        self.unsaved_sessions.insert(id);
        self.to_notify.insert(id);
        Some(&mut entry.record)
    }

    pub fn set_status(&mut self, key: JobKey, status: JobStatus) {
        let Some(entry) = self.map.get_mut(&key.session) else {
            return;
        };
        let Some(job) = entry.jobs.get_mut(key.index as usize) else {
            return;
        };
        entry.counts[status_slot(job.status)] -= 1;
        entry.counts[status_slot(status)] += 1;
        job.status = status;
        self.unsaved_jobs.insert(key);
        self.to_notify.insert(key.session);
    }

    /// Something watchers see changed in this session (progress, a reason).
    pub fn notify(&mut self, id: SessionId) {
        self.to_notify.insert(id);
    }

    /// A new session: all of it is to be stored.
    pub fn insert_new(&mut self, entry: SessionEntry) {
        let id = entry.record.id;
        self.unsaved_jobs.extend(entry.jobs.iter().map(|j| j.key));
        self.unsaved_sessions.insert(id);
        self.to_notify.insert(id);
        self.insert_loaded(entry);
    }

    /// A session read from the store: nothing to store.
    pub fn insert_loaded(&mut self, entry: SessionEntry) {
        if entry.record.max_parallel.is_some() {
            self.capped.insert(entry.record.id);
        }
        self.map.insert(entry.record.id, entry);
    }

    /// How many more jobs each session with a `max_parallel` and queued
    /// jobs may start (others are absent: no limit, or nothing to start).
    pub fn rooms(&self) -> HashMap<SessionId, u32> {
        self.capped
            .iter()
            .filter_map(|id| {
                let entry = self.map.get(id)?;
                let queued = entry.count(JobStatus::Queued) > 0;
                Some((*id, entry.room().filter(|_| queued)?))
            })
            .collect()
    }

    /// Forgets a session, and any change of it not yet stored.
    pub fn remove(&mut self, id: SessionId) -> Option<SessionEntry> {
        let entry = self.map.remove(&id)?;
        for job in &entry.jobs {
            self.unsaved_jobs.remove(&job.key);
        }
        self.unsaved_sessions.remove(&id);
        self.to_notify.remove(&id);
        self.capped.remove(&id);
        Some(entry)
    }

    /// The records changed since the last call, to store; jobs encoded
    /// for the store here rather than copied (`StoredJob`).
    pub fn take_unsaved(&mut self) -> (Vec<SessionRecord>, Vec<StoredJob>) {
        let sessions = std::mem::take(&mut self.unsaved_sessions)
            .into_iter()
            .filter_map(|id| Some(self.map.get(&id)?.record.clone()))
            .collect();
        let records: Vec<&JobRecord> = std::mem::take(&mut self.unsaved_jobs)
            .into_iter()
            .filter_map(|key| self.job(key))
            .collect();
        (sessions, encode_records(&records))
    }

    pub fn take_to_notify(&mut self) -> BTreeSet<SessionId> {
        std::mem::take(&mut self.to_notify)
    }
}

/// The records' bytes for the store. A big batch's are encoded half on
/// another thread: the scheduler's thread is a submission's bottleneck.
fn encode_records(records: &[&JobRecord]) -> Vec<StoredJob> {
    const SPLIT_FROM: usize = 16_384;
    let encode = |part: &[&JobRecord]| part.iter().map(|r| StoredJob::encode(r)).collect();
    if records.len() < SPLIT_FROM {
        return encode(records);
    }
    let (first, second) = records.split_at(records.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| encode(second));
        let mut jobs: Vec<StoredJob> = encode(first);
        match other.join() {
            Ok(rest) => jobs.extend(rest),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        jobs
    })
}

impl State {
    /// Ends a running session whose jobs have all ended.
    pub(super) fn maybe_finish_session(&mut self, session: SessionId, now: u64) {
        let Some(entry) = self.sessions.get(session) else {
            return;
        };
        if entry.record.status.is_terminal() {
            return;
        }
        let Some(status) = outcome(entry) else {
            return;
        };
        if let Some(record) = self.sessions.record_mut(session) {
            record.status = status;
            record.finished_at_ms = Some(now);
        }
        self.owners.closed(session);
        self.note_session_finished(session);
        tracing::info!(session = %session, status = %status, "session finished");
    }

    /// The session submitted with this idempotency key, and its job count.
    pub fn session_for_key(&self, key: &str) -> Option<(SessionId, u32)> {
        let id = *self.by_idempotency_key.get(key)?;
        Some((id, self.sessions.get(id)?.jobs.len() as u32))
    }

    /// Removes sessions that ended before `cutoff` (ms), with their jobs,
    /// outputs and patches; says which (and, with `gc_branches`, which
    /// branches their workers are to delete).
    pub fn gc(&mut self, cutoff: u64) -> Collected {
        let old: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|e| {
                e.record.status.is_terminal() && e.record.finished_at_ms.is_some_and(|f| f < cutoff)
            })
            .map(|e| e.record.id)
            .collect();
        let mut out = Collected::default();
        let mut gone = Vec::new();
        for id in old {
            let Some(entry) = self.sessions.remove(id) else {
                continue;
            };
            if let Some(key) = &entry.record.idempotency_key {
                self.by_idempotency_key.remove(key);
            }
            self.owners.remove(id);
            self.facts.get_mut().remove(&id);
            for job in &entry.jobs {
                self.committing_outputs.remove(&job.key);
                self.committing_patches.remove(&job.key);
                self.queue.remove(job.key);
            }
            let count = entry.jobs.len() as u32;
            self.removed.push((id, count));
            out.removed.push((id, count));
            gone.push(entry);
        }
        if self.config.gc_branches {
            out.branches = self.branches_to_delete(&gone);
        }
        out
    }
}

/// A session's jobs by name: their indices, hashed by the name each
/// record holds (a million-job session keeps no second copy of its names:
/// 4 bytes a job instead of a name and a map entry).
struct NameIndex {
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl NameIndex {
    fn of(jobs: &[JobRecord]) -> NameIndex {
        let hasher = std::hash::RandomState::new();
        let mut table = hashbrown::HashTable::with_capacity(jobs.len());
        let hash = |i: &u32| hasher.hash_one(jobs[*i as usize].name.as_str());
        for i in 0..jobs.len() as u32 {
            // Names are unique within a session (validated at submit).
            table.insert_unique(hash(&i), i, hash);
        }
        NameIndex { table, hasher }
    }

    fn get(&self, jobs: &[JobRecord], name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        let same = |i: &u32| jobs.get(*i as usize).is_some_and(|j| j.name == name);
        self.table.find(hash, same).copied()
    }
}

/// Each job's dependents in one array (a job's are `of[start[i]..start[i
/// + 1]]`): 4 bytes a job and 4 an edge, where a `Vec` each was 24 a job.
struct Dependents {
    start: Vec<u32>,
    of: Vec<u32>,
}

impl Dependents {
    /// A job waits on its dependencies, and a parent on its variants.
    fn build(jobs: &[JobRecord]) -> Dependents {
        let n = jobs.len();
        fn edges(n: usize, (i, job): (usize, &JobRecord)) -> impl Iterator<Item = (u32, u32)> + '_ {
            let deps = job.depends_on.iter().map(|&(d, _)| d);
            deps.chain(job.variant_jobs.iter().copied())
                .filter(move |&d| (d as usize) < n)
                .map(move |d| (d, i as u32))
        }
        let edges = |pair| edges(n, pair);
        let mut start = vec![0u32; jobs.len() + 1];
        for (d, _) in jobs.iter().enumerate().flat_map(edges) {
            start[d as usize + 1] += 1;
        }
        for i in 0..jobs.len() {
            start[i + 1] += start[i];
        }
        let mut next: Vec<u32> = start[..jobs.len()].to_vec();
        let mut of = vec![0u32; start[jobs.len()] as usize];
        for (d, i) in jobs.iter().enumerate().flat_map(edges) {
            of[next[d as usize] as usize] = i;
            next[d as usize] += 1;
        }
        Dependents { start, of }
    }

    fn get(&self, index: u32) -> &[u32] {
        let i = index as usize;
        match (self.start.get(i), self.start.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.of[a as usize..b as usize],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::{Dependents, NameIndex};

    #[test]
    fn a_big_batch_encoded_on_two_threads_keeps_every_record_in_order() {
        use aam_protocol::model::JobRecord;
        use aam_protocol::{JobKey, SessionId};
        let records: Vec<JobRecord> = (0..20_000)
            .map(|index| {
                let key = JobKey {
                    session: SessionId(1),
                    index,
                };
                JobRecord::new(key, format!("j{index}"), vec![format!("echo {index}")])
            })
            .collect();
        let refs: Vec<&JobRecord> = records.iter().collect();
        let stored = super::encode_records(&refs);
        assert_eq!(stored.len(), records.len());
        for (record, stored) in records.iter().zip(&stored) {
            assert_eq!(stored.key, record.key);
            assert_eq!(stored.decode().unwrap().name, record.name);
        }
    }

    #[test]
    fn gc_leaves_no_queue_entries_behind() {
        let mut s = State::new(config());
        let jobs = (0..3).map(|i| job(&format!("j{i}"), &[])).collect();
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.cancel(id, None, None, 1).unwrap();
        assert_eq!(s.gc(2).removed.len(), 1);
        assert!(s.queue.is_empty());
        assert!(s.take_changes().jobs.is_empty(), "nothing of it is stored");
    }

    #[test]
    fn a_session_of_skipped_jobs_alone_fails_and_one_with_a_skip_succeeds() {
        let mut s = State::new(config());
        let mut handler = job("on-failure", &[]);
        handler.depends_on = vec![Dependency {
            job: "a".into(),
            when: When::Failed,
        }];
        let (id, _) = s
            .submit(batch(vec![job("a", &[]), handler]), None, 0)
            .unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let a = attempt_of(&s.dispatch(0)[0].1);
        s.job_finished(1, a, ended(ok()), 1).unwrap();
        assert_eq!(status(&s, id, "on-failure"), JobStatus::Skipped);
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Succeeded);
    }

    fn records(names: &[&str]) -> Vec<JobRecord> {
        (0..)
            .zip(names)
            .map(|(i, name)| JobRecord::new(key(i), name.to_string(), vec!["true".into()]))
            .collect()
    }

    #[test]
    fn the_name_index_finds_every_job_by_its_own_record_s_name_and_nothing_else() {
        let names: Vec<String> = (0..1000).map(|i| format!("job-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let jobs = records(&names);
        let index = NameIndex::of(&jobs);
        for (i, name) in (0..).zip(&names) {
            assert_eq!(index.get(&jobs, name), Some(i));
        }
        assert_eq!(index.get(&jobs, "job-1000"), None);
        assert_eq!(index.get(&jobs, ""), None);
        // Asked against fewer records (a session cut short), it finds no
        // index past their end.
        assert_eq!(index.get(&jobs[..10], "job-999"), None);
    }

    #[test]
    fn dependents_list_who_waits_on_each_job_and_each_parent_s_variants() {
        let mut jobs = records(&["a", "b", "c", "d", "fix", "fix.1", "fix.2"]);
        jobs[1].depends_on = vec![(0, When::Succeeded)];
        jobs[2].depends_on = vec![(0, When::Failed), (1, When::Finished)];
        // Out of range (never valid): ignored, not a panic.
        jobs[3].depends_on = vec![(99, When::Succeeded)];
        jobs[4].variant_jobs = vec![5, 6];
        let deps = Dependents::build(&jobs);
        assert_eq!(deps.get(0), [1, 2]);
        assert_eq!(deps.get(1), [2]);
        assert_eq!(deps.get(2), [] as [u32; 0]);
        assert_eq!(deps.get(3), [] as [u32; 0]);
        assert_eq!(deps.get(5), [4]);
        assert_eq!(deps.get(6), [4]);
        assert_eq!(deps.get(7), [] as [u32; 0], "past the last job");
        assert_eq!(Dependents::build(&[]).get(0), [] as [u32; 0]);
    }
}
