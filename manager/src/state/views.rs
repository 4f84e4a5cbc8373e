//! What clients are shown: session summaries and views (with outputs
//! within a budget, each agent job's `agent` object, the paused limit
//! groups, and why each waiting job waits), a job's logs from an offset,
//! estimates from the duration history, and the agents. A big session's
//! estimate and limit groups come from a cache at most a second old, so
//! its status page costs the page, not a walk of every job.

use super::session::SessionEntry;
use super::worktrees::{pin_of, Pin};
use super::{duration_key, OutputReader, State, StateError};
use crate::estimate::{estimate, Remaining};
use crate::schedule::{why_waiting, WorkerCapacity};
use aam_protocol::account::account_group;
use aam_protocol::agent_run::LimitPause;
use aam_protocol::messages::{AgentInfo, JobPage, OutputWanted};
use aam_protocol::model::{Estimate, JobRecord, JobStatus, JobView, SessionSummary, SessionView};
use aam_protocol::output::{tail_of, OutputCapture};
use aam_protocol::spec::Dependency;
use aam_protocol::SessionId;
use std::collections::BTreeSet;

/// Sessions of more jobs than this get their estimate and limit groups
/// from `SessionFacts` (smaller ones are walked fresh: at most a few ms).
pub(super) const FACTS_CACHE_JOBS: usize = 10_000;

/// How long cached facts of a big session serve.
pub(super) const FACTS_MAX_AGE_MS: u64 = 1_000;

/// What a status page of a big session reads without walking its jobs:
/// its estimate and the limit groups its unfinished jobs may use, as of
/// `at` (ms).
pub(super) struct SessionFacts {
    at: u64,
    eta: Estimate,
    groups: BTreeSet<String>,
}

/// A job's status and what it printed from an offset on.
#[derive(Debug, PartialEq)]
pub struct JobLogs {
    pub status: JobStatus,
    pub attempt: u32,
    /// What it printed from the asked-for offset on.
    pub output: Vec<u8>,
    /// Bytes it printed in all: the offset to ask from next time.
    pub output_bytes: u64,
    /// How its output reads as a transcript (an agent job's format).
    pub format: Option<aam_protocol::agent_run::AgentFormat>,
}

impl State {
    pub fn summary(&self, id: SessionId) -> Option<SessionSummary> {
        self.sessions.get(id).map(SessionEntry::summary)
    }

    /// The summaries of `limit` sessions (0: all) after the newest
    /// `offset`, oldest first: as costly as the offset and the page are
    /// long, however many sessions retention keeps.
    pub fn summaries(&self, limit: u32, offset: u32) -> Vec<SessionSummary> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let mut page: Vec<SessionSummary> = self
            .sessions
            .newest()
            .skip(offset as usize)
            .take(limit)
            .map(SessionEntry::summary)
            .collect();
        page.reverse();
        page
    }

    /// How many sessions are kept.
    pub fn session_count(&self) -> u32 {
        u32::try_from(self.sessions.len()).unwrap_or(u32::MAX)
    }

    /// A session with its jobs. Outputs (as `wanted`) are added while their
    /// bytes stay within `budget`; past it a job's `output` is left empty
    /// (its `output_bytes` still says how much there is), so an answer
    /// always fits in a frame. `stored` reads a finished job's output.
    pub fn view(
        &self,
        id: SessionId,
        wanted: OutputWanted,
        budget: usize,
        stored: &OutputReader,
        now: u64,
    ) -> Option<SessionView> {
        self.view_page(id, wanted, None, budget, stored, now)
    }

    /// [`State::view`] of the jobs of `page` only; counts and totals are
    /// the whole session's. A page past the end has no jobs.
    pub fn view_page(
        &self,
        id: SessionId,
        wanted: OutputWanted,
        page: Option<JobPage>,
        budget: usize,
        stored: &OutputReader,
        now: u64,
    ) -> Option<SessionView> {
        let entry = self.sessions.get(id)?;
        let capacities = self.capacities();
        let mut spent = 0usize;
        let all = entry.jobs();
        let (offset, limit) =
            page.map_or((0, all.len()), |p| (p.offset as usize, p.limit as usize));
        let jobs = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|job| {
                let mut view = self.job_view(entry, job, &capacities, now);
                (view.output, view.output_bytes) = match wanted {
                    OutputWanted::None => (Vec::new(), 0),
                    OutputWanted::Tail(n) => self.output_of(job, Some(n as usize), stored),
                    OutputWanted::All => self.output_of(job, None, stored),
                };
                if spent + view.output.len() > budget {
                    view.output = Vec::new();
                } else {
                    spent += view.output.len();
                }
                view
            })
            .collect();
        let (eta, paused) = self.eta_and_pauses(entry, now);
        Some(SessionView {
            summary: entry.summary(),
            jobs,
            offset: offset as u32,
            eta,
            paused,
        })
    }

    /// A session's estimate and the pauses in force that hold (or may
    /// hold) its jobs: fresh for a small session, from its cached facts
    /// (renewed once they are `FACTS_MAX_AGE_MS` old) for a big one; the
    /// pauses themselves are always the ones in force now.
    fn eta_and_pauses(&self, entry: &SessionEntry, now: u64) -> (Estimate, Vec<LimitPause>) {
        let id = entry.record().id;
        let pauses_of = |groups: &BTreeSet<String>| -> Vec<LimitPause> {
            self.pauses
                .active(now)
                .filter(|p| groups.contains(&p.group))
                .cloned()
                .collect()
        };
        if entry.jobs().len() <= FACTS_CACHE_JOBS {
            let paused = match self.pauses.any_held(now) {
                true => pauses_of(&self.limit_groups_of(entry)),
                false => Vec::new(),
            };
            return (self.estimate(id, now), paused);
        }
        let mut cache = self.facts.borrow_mut();
        let fresh = cache
            .get(&id)
            .is_some_and(|f| f.at <= now && now < f.at + FACTS_MAX_AGE_MS);
        if !fresh {
            let facts = SessionFacts {
                at: now,
                eta: self.estimate(id, now),
                groups: self.limit_groups_of(entry),
            };
            cache.insert(id, facts);
        }
        let facts = &cache[&id];
        let mut eta = facts.eta.clone();
        eta.ms = eta.ms.map(|ms| ms.saturating_sub(now - facts.at));
        (eta, pauses_of(&facts.groups))
    }

    /// The limit groups a session's unfinished agent jobs may use.
    fn limit_groups_of(&self, entry: &SessionEntry) -> BTreeSet<String> {
        let mut groups: BTreeSet<String> = BTreeSet::new();
        for job in entry.jobs().iter().filter(|j| !j.status.is_terminal()) {
            let accounts = self.accounts_of(job);
            groups.extend(job.limit_group.iter().cloned());
            groups.extend(accounts.iter().map(|a| account_group(a)));
        }
        groups
    }

    /// A job as clients see it, without its output.
    fn job_view(
        &self,
        entry: &SessionEntry,
        job: &JobRecord,
        capacities: &[WorkerCapacity],
        now: u64,
    ) -> JobView {
        JobView {
            name: job.name.clone(),
            status: job.status,
            attempts: job.attempts,
            exit_code: job.exit().and_then(|e| e.code),
            signal: job.exit().and_then(|e| e.signal),
            worker: job.worker.clone(),
            started_at_ms: job.started_at_ms,
            finished_at_ms: job.finished_at_ms,
            duration_ms: job.exit().map(|e| e.duration_ms),
            reason: self.held_reason(entry, job, now).or_else(|| {
                waiting_reason(entry, job, capacities).map(|r| self.with_provider(job, r))
            }),
            expected_remaining_ms: (job.status == JobStatus::Running)
                .then(|| expected_remaining(self.history.mean(&duration_key(job)), job, now))
                .flatten(),
            gate: job.gate,
            decision: job.decision.clone(),
            priority: job.priority,
            requires: job.requires.clone(),
            progress: job.progress,
            progress_message: job.progress_message().map(str::to_owned),
            teardown: job.teardown.as_deref().cloned(),
            history: job.history.clone(),
            depends_on: job
                .depends_on
                .iter()
                .map(|&(d, when)| Dependency {
                    job: entry.job(d).name.clone(),
                    when,
                })
                .collect(),
            output: Vec::new(),
            output_bytes: 0,
            agent: self.agent_view(entry, job),
            change: job.change.as_deref().cloned(),
            variant: job.variant,
            variants: job
                .variant_jobs
                .iter()
                .map(|&i| entry.job(i).name.clone())
                .collect(),
            pick: job.pick.as_deref().cloned(),
            takes_input: job.input.is_some(),
            waiting_for_input: job.status == JobStatus::Running
                && job
                    .input
                    .as_ref()
                    .is_some_and(|i| i.waiting_since_ms.is_some()),
            permissions: job
                .permissions
                .as_ref()
                .map(|p| p.requests.clone())
                .unwrap_or_default(),
        }
    }

    /// Why a queued job is held back beyond the slots and labels it
    /// needs: its limit group is paused, a shared resource it uses is
    /// full, or it waits for the worker it is
    /// pinned to (where its conversation or its base branch lives).
    fn held_reason(&self, entry: &SessionEntry, job: &JobRecord, now: u64) -> Option<String> {
        if job.status != JobStatus::Queued || job.not_before_ms.is_some() {
            return None;
        }
        let reason = if self.accounts_of(job).is_empty() {
            job.limit_group.as_deref().and_then(|g| {
                self.pause_reason(g, now)
                    .or_else(|| self.resume_reason(g, now))
            })
        } else {
            self.account_wait(job, now)
        };
        if reason.is_some() {
            return reason;
        }
        if let Some(reason) = self.resource_wait(job) {
            return Some(reason);
        }
        let Pin::On(pinned, why) = pin_of(entry, job) else {
            return None;
        };
        Some(if self.worker_by_name.contains_key(pinned) {
            format!("waiting for a free slot on worker {pinned} ({why})")
        } else {
            format!("waiting for worker {pinned} to connect ({why})")
        })
    }

    /// A job's output as captured: live for a running job, from memory
    /// while its end is being committed, else from the store.
    fn capture_of(&self, job: &JobRecord, stored: &OutputReader) -> Option<OutputCapture> {
        let live = self
            .sessions
            .get(job.key.session)
            .and_then(|s| s.live.get(&job.key.index));
        match (job.status, live) {
            (JobStatus::Running, Some(capture)) => return Some(capture.clone()),
            // Running but nothing heard yet (say, after a restart, before
            // the worker resends it): the stored output is an older attempt's.
            (JobStatus::Running, None) => return None,
            _ => {}
        }
        if let Some((_, capture)) = self.committing_outputs.get(&job.key) {
            return Some(capture.clone());
        }
        stored(job.key)
    }

    /// A job's kept output (its tail when `tail` is set) and the bytes it
    /// printed in all.
    pub(super) fn output_of(
        &self,
        job: &JobRecord,
        tail: Option<usize>,
        stored: &OutputReader,
    ) -> (Vec<u8>, u64) {
        let Some(capture) = self.capture_of(job, stored) else {
            return (Vec::new(), 0);
        };
        let full = capture.render();
        let kept = match tail {
            Some(n) => tail_of(&full, n).to_vec(),
            None => full,
        };
        (kept, capture.total())
    }

    /// A job's status and what it printed from byte offset `from` on.
    pub fn logs(
        &self,
        session: SessionId,
        name: &str,
        from: u64,
        stored: &OutputReader,
    ) -> Result<JobLogs, StateError> {
        let index = self.job_index(session, name)?;
        let job = self.job(aam_protocol::JobKey { session, index });
        let job = job.ok_or(StateError::NoSession(session))?;
        let (output, output_bytes) = match self.capture_of(job, stored) {
            Some(capture) => (capture.since(from), capture.total()),
            None => (Vec::new(), 0),
        };
        Ok(JobLogs {
            status: job.status,
            attempt: job.attempts,
            output,
            output_bytes,
            format: job.format,
        })
    }

    /// How long the rest of a session should take, from history, with the
    /// slots of the connected workers (and its `max_parallel`).
    pub fn estimate(&self, session: SessionId, now: u64) -> Estimate {
        let Some(entry) = self.sessions.get(session) else {
            return Estimate::default();
        };
        let mut slots: u32 = self
            .workers
            .values()
            .filter(|w| !w.draining)
            .map(|w| w.slots)
            .sum();
        if let Some(max) = entry.record().max_parallel {
            slots = slots.min(max);
        }
        let jobs = entry.jobs();
        let left: Vec<usize> = (0..jobs.len())
            .filter(|&i| !jobs[i].status.is_terminal())
            .collect();
        // Each unfinished job's place in `left` (by job index; a million
        // jobs: an array, not a map).
        let mut position = vec![u32::MAX; jobs.len()];
        for (p, &i) in left.iter().enumerate() {
            position[i] = p as u32;
        }
        // The jobs of a batch mostly share a command: its mean duration is
        // looked up once per run of them, not once per job.
        let mut last_mean: Option<(&JobRecord, Option<u64>)> = None;
        let remaining: Vec<Remaining> = left
            .iter()
            .map(|&i| {
                let job = &jobs[i];
                // A parent of variants ends with them: it takes no time.
                let parent = !job.variant_jobs.is_empty();
                Remaining {
                    ms: if parent {
                        Some(0)
                    } else {
                        let mean = match last_mean {
                            Some((seen, mean)) if same_duration_key(seen, job) => mean,
                            _ => self.history.mean(&duration_key(job)),
                        };
                        last_mean = Some((job, mean));
                        expected_remaining(mean, job, now)
                    },
                    running: job.status == JobStatus::Running,
                    gate: job.gate,
                    instant: parent,
                    deps: job
                        .depends_on
                        .iter()
                        .map(|&(d, _)| d)
                        .chain(job.variant_jobs.iter().copied())
                        .filter_map(|d| position.get(d as usize).copied())
                        .filter(|&p| p != u32::MAX)
                        .map(|p| p as usize)
                        .collect(),
                }
            })
            .collect();
        estimate(&remaining, slots)
    }

    /// Every agent, and the definition files skipped (path, why), for `aam agents`.
    pub fn agents(&self) -> (Vec<AgentInfo>, Vec<(String, String)>) {
        let agents = self
            .config
            .agents
            .iter()
            .map(|(name, def)| AgentInfo {
                name: name.clone(),
                source: self
                    .config
                    .agent_sources
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "config".into()),
                description: def.description.clone(),
                model: def.model.clone(),
                tools: def.tools.clone(),
                // A value written into a template after `--api-key` is
                // not shown (every reader of AgentInfo gets it so).
                command: aam_protocol::secret::redact_argv(&def.command),
            })
            .collect();
        (agents, self.config.agent_problems.clone())
    }
}

/// A job's expected time until it ends (for a running one, from now), from
/// the mean duration of its kind of job.
fn expected_remaining(mean: Option<u64>, job: &JobRecord, now: u64) -> Option<u64> {
    let mean = mean?;
    Some(match (job.status, job.started_at_ms) {
        (JobStatus::Running, Some(started)) => mean.saturating_sub(now.saturating_sub(started)),
        _ => mean,
    })
}

/// Whether two jobs' durations are remembered under one key
/// (`duration_key`: the agent, or else the command).
fn same_duration_key(a: &JobRecord, b: &JobRecord) -> bool {
    a.agent == b.agent && (a.agent.is_some() || a.argv == b.argv)
}

/// Why a job is as it is: for a job that waits, what it waits for.
fn waiting_reason(
    entry: &SessionEntry,
    job: &JobRecord,
    capacities: &[WorkerCapacity],
) -> Option<String> {
    match job.status {
        JobStatus::Queued if job.not_before_ms.is_none() => Some(why_waiting(
            &job.requires,
            capacities,
            entry.room(),
            entry.record().max_parallel,
        )),
        JobStatus::Pending if !job.gate || entry.waiting_on[job.key.index as usize] > 0 => {
            let open = |list: &mut dyn Iterator<Item = u32>| -> Vec<&str> {
                list.map(|d| entry.job(d))
                    .filter(|d| !d.status.is_terminal())
                    .map(|d| d.name.as_str())
                    .collect()
            };
            let dependencies = open(&mut job.depends_on.iter().map(|&(d, _)| d));
            if dependencies.is_empty() && !job.variant_jobs.is_empty() {
                let variants = open(&mut job.variant_jobs.iter().copied());
                return Some(format!("waiting for its variants: {}", variants.join(", ")));
            }
            Some(format!(
                "waiting for dependencies: {}",
                dependencies.join(", ")
            ))
        }
        JobStatus::Running
            if job
                .permissions
                .as_ref()
                .is_some_and(|p| p.open().count() > 0) =>
        {
            let open: Vec<String> = job
                .permissions
                .iter()
                .flat_map(|p| p.open())
                .map(|r| format!("[{}] {}", r.id, r.summary))
                .collect();
            Some(format!(
                "needs input: {} (aam allow|deny {}/{} ID)",
                open.join(", "),
                job.key.session,
                job.name
            ))
        }
        JobStatus::Running
            if job
                .input
                .as_ref()
                .is_some_and(|i| i.waiting_since_ms.is_some()) =>
        {
            Some(format!(
                "waiting for input (aam say {}/{} \"TEXT\")",
                job.key.session, job.name
            ))
        }
        _ => job.reason().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn the_session_list_is_a_page_of_the_newest_oldest_first() {
        let mut s = State::new(config());
        let ids: Vec<_> = (0..5)
            .map(|_| s.submit(batch(vec![job("x", &[])]), None, 0).unwrap().0)
            .collect();
        let page =
            |limit, offset| -> Vec<_> { s.summaries(limit, offset).iter().map(|x| x.id).collect() };
        assert_eq!(page(2, 0), vec![ids[3], ids[4]]);
        assert_eq!(page(2, 2), vec![ids[1], ids[2]]);
        assert_eq!(page(2, 4), vec![ids[0]]);
        assert!(page(2, 5).is_empty());
        assert_eq!(page(0, 0), ids);
        assert_eq!(page(0, 3), ids[..2].to_vec());
        assert_eq!(s.session_count(), 5);
    }

    #[test]
    fn a_view_keeps_outputs_within_its_budget_and_sees_uncommitted_ones() {
        let mut s = State::new(config());
        let jobs = (0..3).map(|i| job(&format!("j{i}"), &[])).collect();
        let (id, _) = s.submit(batch(jobs), None, 0).unwrap();
        s.register_worker(1, worker("w", 3), &[], 0).unwrap();
        for (_, a) in s.dispatch(0) {
            let attempt = attempt_of(&a);
            s.job_output(1, attempt, &[b'x'; 400]).unwrap();
            s.job_finished(1, attempt, ended(ok()), 1).unwrap();
        }
        // Nothing is in the store yet: the outputs come from memory.
        let nothing = |_| None;
        let view = s.view(id, OutputWanted::All, 1000, &nothing, 2).unwrap();
        let sizes: Vec<(usize, u64)> = view
            .jobs
            .iter()
            .map(|j| (j.output.len(), j.output_bytes))
            .collect();
        assert_eq!(sizes, vec![(400, 400), (400, 400), (0, 400)]);
        let tails = s
            .view(id, OutputWanted::Tail(10), 1000, &nothing, 2)
            .unwrap();
        assert!(tails.jobs.iter().all(|j| j.output.len() == 10));
        let committed: Vec<(JobKey, u32)> = (0..3)
            .map(|index| (JobKey { session: id, index }, 1))
            .collect();
        s.outputs_committed(&committed);
        let after = s.view(id, OutputWanted::All, 1000, &nothing, 2).unwrap();
        assert!(
            after.jobs.iter().all(|j| j.output_bytes == 0),
            "forgotten once durable"
        );
    }

    #[test]
    fn an_estimate_follows_each_command_s_history_and_the_dependencies() {
        let mut s = State::new(config());
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let command = |argv: &str, name: &str, deps: &[&str]| JobSpec {
            command: Some(vec![argv.into()]),
            ..job(name, deps)
        };
        // History: `true` takes 1 s, `sleep` half a second; `false` none.
        let ran = [("true", 1_000), ("sleep", 500)];
        for (now, (argv, ms)) in (0..).step_by(1_000).zip(ran) {
            s.submit(batch(vec![command(argv, "a", &[])]), None, now)
                .unwrap();
            let a = attempt_of(&s.dispatch(now)[0].1);
            s.job_finished(1, a, ended(Some(exit_after(0, ms))), now + ms)
                .unwrap();
        }
        // A run of `true` jobs with another command between them, and a
        // chain: three seconds of `true` and a half of `sleep` on one slot.
        let jobs = vec![
            command("true", "t1", &[]),
            command("true", "t2", &["t1"]),
            command("sleep", "s", &[]),
            command("true", "t3", &["t2"]),
        ];
        let (id, _) = s.submit(batch(jobs), None, 2_000).unwrap();
        let eta = s.estimate(id, 2_000);
        assert_eq!((eta.ms, eta.unknown, eta.slots), (Some(3_500), 0, 1));
        // One job without history: no figure, and it is counted.
        let jobs = vec![command("true", "t", &[]), command("false", "f", &[])];
        let (id, _) = s.submit(batch(jobs), None, 2_000).unwrap();
        let eta = s.estimate(id, 2_000);
        assert_eq!((eta.ms, eta.unknown), (None, 1));
    }

    #[test]
    fn a_view_is_a_function_of_the_time_it_is_given() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let first = attempt_of(&s.dispatch(0)[0].1);
        s.job_finished(1, first, ended(Some(exit_after(0, 10_000))), 10_000)
            .unwrap();
        let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 20_000).unwrap();
        s.dispatch(20_000);
        let remaining = |now| {
            s.view(id, OutputWanted::None, 0, &|_| None, now)
                .unwrap()
                .jobs[0]
                .expected_remaining_ms
        };
        assert_eq!(remaining(20_000), Some(10_000));
        assert_eq!(remaining(24_000), Some(6_000));
        assert_eq!(remaining(40_000), Some(0));
    }

    #[test]
    fn logs_name_a_missing_session_or_job() {
        let mut s = State::new(config());
        let (id, _) = s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        let missing = SessionId(id.0 + 1);
        let e = s.logs(missing, "a", 0, &|_| None).unwrap_err();
        assert_eq!(e, StateError::NoSession(missing));
        assert_eq!(e.to_string(), format!("no session {missing}"));
        let e = s.logs(id, "b", 0, &|_| None).unwrap_err();
        assert_eq!(e.to_string(), format!("session {id} has no job 'b'"));
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
