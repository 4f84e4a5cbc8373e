//! Dispatch: queued jobs go to free worker slots (the decision is
//! `schedule::plan_claiming`'s, with the room left in the shared
//! resources, and the last say to `accounts::claim_start`: an account for
//! a job whose agent lists some, a start left to a group resuming after a
//! limit), each as a new attempt, unless their limit group (or every
//! account they may use) is paused, their budget is spent or the worker they are pinned to is away
//! (the one that holds the conversation a follow-up continues, or the
//! branch a worktree job starts from); a worktree job's assignment carries
//! its `WorktreeOrder`; and the inputs an assignment carries (its
//! dependencies as they ended: an agent's answer and error, the tail of
//! their output, their change; a parent of variants seen through its
//! winner).

use super::budget::OverBudget;
use super::queue::End;
use super::worktrees::{change_source, pin_of, Pin};
use super::{OutputReader, State, WorkerId, INPUTS_BUDGET, INPUT_OUTPUT_CAP};
use crate::schedule::{plan_claiming, Candidate, Labels};
use aam_protocol::messages::{Assignment, InputRecord};
use aam_protocol::model::JobStatus;
use aam_protocol::output::OutputCapture;
use aam_protocol::resource::ResourceUse;
use aam_protocol::JobKey;

/// Whether a queued job may be placed now.
pub(super) enum Admission<'a> {
    /// On a worker with these labels (only this one, when pinned).
    Place {
        requires: &'a Labels,
        only: Option<WorkerId>,
        uses: &'a [ResourceUse],
    },
    /// Not now: its limit group is paused, or its pinned worker is away.
    Hold,
    /// Never: its budget (or its session's) is spent.
    Refuse(OverBudget),
    /// Never: it cannot start (the branch it starts from is not there); it
    /// fails for this reason.
    Fail(String),
    /// No longer queued (cancelled, ended, gone): leaves the queue.
    Stale,
}

impl State {
    /// Assigns queued jobs to free worker slots; each becomes a new attempt.
    /// The assignments carry no inputs yet (`inputs_for` reads outputs).
    /// Jobs refused for their budget end here.
    pub fn dispatch(&mut self, now: u64) -> Vec<(WorkerId, Assignment)> {
        #[cfg(test)]
        self.check_held();
        #[cfg(test)]
        self.workers.check_index();
        let capacities = self.dispatch_capacities();
        if self.queue.is_empty() || capacities.is_empty() {
            return Vec::new();
        }
        let mut room = self.sessions.rooms();
        let any_paused = self.pauses.any_held(now);
        let mut resource_room = self.resource_room();
        let mut starts = self.starts(now);
        let mut stale = Vec::new();
        let mut refused = Vec::new();
        let mut failed = Vec::new();
        let candidates =
            self.queue
                .iter()
                .filter_map(|key| match self.admission(key, any_paused, now) {
                    Admission::Place {
                        requires,
                        only,
                        uses,
                    } => Some(Candidate {
                        job: key,
                        requires,
                        only,
                        uses,
                    }),
                    Admission::Hold => None,
                    Admission::Refuse(why) => {
                        refused.push((key, why));
                        None
                    }
                    Admission::Fail(why) => {
                        failed.push((key, why));
                        None
                    }
                    Admission::Stale => {
                        stale.push(key);
                        None
                    }
                });
        let claim = |key| self.claim_start(&mut starts, key, now);
        let planned = plan_claiming(
            candidates,
            &capacities,
            &mut room,
            &mut resource_room,
            claim,
        );
        drop(capacities);
        let mut chosen = starts.chosen;
        for key in stale {
            self.queue.remove(key);
        }
        for (key, why) in refused {
            self.end_over_budget(key, why, now);
        }
        for (key, why) in failed {
            self.fail_unstarted(key, why, now);
        }
        planned
            .into_iter()
            .filter_map(|(key, worker)| {
                let account = chosen.remove(&key);
                Some((worker, self.begin_attempt(key, worker, account, now)?))
            })
            .collect()
    }

    /// Whether a queued job may be placed now (`any_paused`: some limit
    /// group is paused, so agent jobs' groups are worth a look).
    pub(super) fn admission(&self, key: JobKey, any_paused: bool, now: u64) -> Admission<'_> {
        let Some(entry) = self.sessions.get(key.session) else {
            return Admission::Stale;
        };
        let job = entry
            .jobs()
            .get(key.index as usize)
            .filter(|j| j.status == JobStatus::Queued && j.not_before_ms.is_none());
        // A parent of variants runs nothing (it is never queued).
        let Some(job) = job.filter(|j| j.variant_jobs.is_empty()) else {
            return Admission::Stale;
        };
        if job.agent.is_some() {
            if self.start_held(job, any_paused, now) {
                return Admission::Hold;
            }
            if let Some(why) = self.budget_refusal(entry, job) {
                return Admission::Refuse(why);
            }
        }
        let only = match pin_of(entry, job) {
            Pin::Anywhere => None,
            Pin::On(name, _) => match self.worker_by_name.get(name) {
                Some(&id) => Some(id),
                None => return Admission::Hold,
            },
            Pin::Never(why) => return Admission::Fail(why),
        };
        Admission::Place {
            requires: &job.requires,
            only,
            uses: &job.uses,
        }
    }

    /// A queued job that cannot start fails, for `reason`; its dependents
    /// settle.
    pub(super) fn fail_unstarted(&mut self, key: JobKey, reason: String, now: u64) {
        self.queue.remove(key);
        self.set_status(key, JobStatus::Failed);
        if let Some(job) = self.job_mut(key) {
            job.finished_at_ms = Some(now);
            job.set_reason(Some(reason));
        }
        self.settle_dependents(key, now);
        self.maybe_finish_session(key.session, now);
    }

    /// Starts a new attempt of a queued job on `worker` (under `account`,
    /// for a job whose agent lists accounts).
    fn begin_attempt(
        &mut self,
        key: JobKey,
        worker_id: WorkerId,
        account: Option<String>,
        now: u64,
    ) -> Option<Assignment> {
        let worktree = match self.worktree_order(key) {
            Ok(order) => order.map(Box::new),
            Err(why) => {
                self.fail_unstarted(key, why, now);
                return None;
            }
        };
        let queued_since = self.queue.remove(key);
        let worker_name = {
            let mut worker = self.workers.get_mut(&worker_id)?;
            worker.assigned.insert(key);
            worker.name.clone()
        };
        self.set_status(key, JobStatus::Running);
        let cap = self.config.output_cap;
        let entry = self.sessions.get_mut(key.session)?;
        entry.live.insert(key.index, OutputCapture::new(cap));
        entry.live_agents.remove(&key.index);
        let session_name = entry.record().name.clone();
        // Names only, from the agent's definition as it is now (the record
        // keeps none: they are config, and the values never reach here).
        let mut secret_env = self
            .sessions
            .job(key)
            .and_then(|job| self.config.agents.get(job.agent.as_deref()?))
            .map(|agent| agent.secret_env.clone())
            .unwrap_or_default();
        // The account's env goes into this assignment alone, over the
        // agent's: never into the job's record. Its secret_env too, named.
        let account_def = account.as_deref().and_then(|a| self.config.accounts.get(a));
        let account_env = account_def.map(|def| def.env.clone()).unwrap_or_default();
        if let Some(def) = account_def {
            secret_env.retain(|name| !def.secret_env.contains_key(name));
            secret_env.extend(def.secret_entries());
        }
        let account_secrets: Vec<String> = account_def
            .map(|def| def.secret_env.keys().cloned().collect())
            .unwrap_or_default();
        let job = self.sessions.job_mut(key)?;
        if let Some(account) = &account {
            job.limit_group = Some(aam_protocol::account::account_group(account));
        }
        let group = job.limit_group.clone();
        let attempt = job.begin_attempt(worker_name, now);
        // A new attempt's agent gets the prompt, then what it was told and
        // no earlier attempt's agent got.
        let input = job.input.as_mut().map(|input| {
            input.waiting_since_ms = None;
            Box::new(aam_protocol::say::AgentInput {
                said: input.undelivered().cloned().collect(),
                ..(**input).clone()
            })
        });
        let mut env = job.env.clone();
        env.retain(|(name, _)| !account_env.contains_key(name) && !account_secrets.contains(name));
        env.extend(account_env);
        if let Some(since) = queued_since {
            self.config.metrics.dispatched(now.saturating_sub(since));
        }
        let assignment = Some(Assignment {
            job: key,
            attempt,
            session_name,
            job_name: job.name.clone(),
            argv: job.argv.clone(),
            env,
            secret_env,
            workdir: job.workdir().map(str::to_owned),
            timeout_ms: job.policy.timeout_ms,
            idle_timeout_ms: job.policy.idle_timeout_ms,
            grace_ms: job.policy.grace_ms,
            format: job.format,
            worktree,
            inputs: Vec::new(),
            ports: job.ports,
            input,
            permission_relay: job.permissions.is_some(),
        });
        if let Some(group) = group {
            self.note_resume_start(&group, now);
        }
        self.hold(key);
        assignment
    }

    /// Moves retries whose backoff is over to the queue. Returns how many.
    pub fn release_delayed(&mut self, now: u64) -> usize {
        let mut released = 0;
        for (due, key) in self.queue.take_due(now) {
            let Some(job) = self.job(key) else { continue };
            // Cancelled or run again meanwhile: no longer this backoff's.
            if job.status != JobStatus::Queued || job.not_before_ms != Some(due) {
                continue;
            }
            if let Some(job) = self.job_mut(key) {
                job.not_before_ms = None;
            }
            self.enqueue(key, End::Back, due);
            released += 1;
        }
        released
    }

    pub fn job_depends_on_nothing(&self, key: JobKey) -> bool {
        self.job(key).is_none_or(|j| j.depends_on.is_empty())
    }

    /// A job's dependencies as they ended, with the tail of their output:
    /// up to `INPUT_OUTPUT_CAP` each and `INPUTS_BUDGET` in all.
    pub fn inputs_for(&self, key: JobKey, stored: &OutputReader) -> Vec<InputRecord> {
        let Some(entry) = self.sessions.get(key.session) else {
            return Vec::new();
        };
        let Some(job) = entry.jobs().get(key.index as usize) else {
            return Vec::new();
        };
        let share = (INPUTS_BUDGET / job.depends_on.len().max(1)).min(INPUT_OUTPUT_CAP);
        // Names and reasons count too, so a huge fan-in still fits a frame:
        // past the budget the rest are summarised in one line.
        let mut spent = 0usize;
        let mut out = Vec::new();
        for (listed, &(d, when)) in job.depends_on.iter().enumerate() {
            let dep = entry.job(d);
            // A parent of variants is seen through its winner.
            let source = change_source(entry, dep);
            let (output, output_bytes) = self.output_of(source, Some(share), stored);
            let run = source.agent_run.as_ref();
            let (answer, agent_error) = (
                run.and_then(|r| r.result.clone()),
                run.and_then(|r| r.error.clone()),
            );
            let text = |t: Option<&str>| t.map_or(0, str::len);
            let change = dep.change.as_ref().map_or(0, |c| {
                c.repo.len() + c.branch.len() + c.base.len() + text(c.commit.as_deref()) + 64
            });
            spent += dep.name.len()
                + text(dep.reason())
                + text(answer.as_deref())
                + text(agent_error.as_deref())
                + output.len()
                + change
                + 64;
            if spent > INPUTS_BUDGET {
                out.push(InputRecord {
                    name: "…".into(),
                    when,
                    status: JobStatus::Skipped,
                    exit_code: None,
                    reason: Some(format!(
                        "{} more dependencies not listed (the inputs are capped at {INPUTS_BUDGET} bytes)",
                        job.depends_on.len() - listed
                    )),
                    output: Vec::new(),
                    output_bytes: 0,
                    answer: None,
                    agent_error: None,
                    change: None,
                });
                break;
            }
            out.push(InputRecord {
                name: dep.name.clone(),
                when,
                status: dep.status,
                exit_code: source.exit().and_then(|e| e.code),
                reason: dep.reason().map(str::to_owned),
                output,
                output_bytes,
                answer,
                agent_error,
                change: dep.change.as_deref().cloned(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn dependencies_gate_dispatch_and_failures_skip_downstream() {
        let mut s = State::new(config());
        let batch = batch(vec![
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["b"]),
            job("d", &[]),
        ]);
        let (id, n) = s.submit(batch, None, 0).unwrap();
        assert_eq!(n, 4);
        s.register_worker(1, worker("w", 8), &[], 0).unwrap();
        let first = s.dispatch(1);
        let names: Vec<&str> = first.iter().map(|(_, a)| a.job_name.as_str()).collect();
        assert_eq!(names, vec!["a", "d"]);
        assert!(s
            .job_finished(1, attempt_of(&first[0].1), ended(ok()), 2)
            .is_ok());
        let second = s.dispatch(3);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].1.job_name, "b");
        assert!(s
            .job_finished(1, attempt_of(&second[0].1), ended(fail()), 4)
            .is_ok());
        assert_eq!(status(&s, id, "c"), JobStatus::Skipped);
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Running);
        assert!(s
            .job_finished(1, attempt_of(&first[1].1), ended(ok()), 5)
            .is_ok());
        assert_eq!(s.summary(id).unwrap().status, SessionStatus::Failed);
    }

    #[test]
    fn queued_jobs_are_dispatched_fifo_across_sessions() {
        let mut s = State::new(config());
        let batch = |name: &str| BatchSpec {
            max_cost_usd: None,
            max_parallel: None,
            name: name.into(),
            jobs: (0..2).map(|i| job(&format!("{name}{i}"), &[])).collect(),
        };
        s.submit(batch("a"), None, 0).unwrap();
        s.submit(batch("b"), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        let mut order = Vec::new();
        for t in 0..4 {
            let (_, a) = s.dispatch(t).pop().unwrap();
            order.push(a.job_name.clone());
            s.job_finished(1, attempt_of(&a), ended(ok()), t).unwrap();
        }
        assert_eq!(order, vec!["a0", "a1", "b0", "b1"]);
    }

    #[test]
    fn a_prefetching_worker_gets_slots_plus_prefetch_assignments() {
        let mut s = State::new(config());
        let jobs = (0..10).map(|i| job(&format!("j{i}"), &[])).collect();
        s.submit(batch(jobs), None, 0).unwrap();
        let mut w = worker("w", 2);
        w.prefetch = aam_protocol::messages::Prefetch::Fixed(3);
        s.register_worker(1, w, &[], 0).unwrap();
        assert_eq!(s.dispatch(0).len(), 5);
        assert!(s.dispatch(0).is_empty());
    }

    /// Runs what `s` dispatches now (each for `ran_ms`) and returns how
    /// many assignments it made.
    fn dispatch_and_end(s: &mut State, ran_ms: u64, t: u64) -> usize {
        let assigned = s.dispatch(t);
        for (_, a) in &assigned {
            s.job_finished(1, attempt_of(a), ended(Some(exit_after(0, ran_ms))), t)
                .unwrap();
        }
        assigned.len()
    }

    #[test]
    fn an_auto_prefetching_worker_gets_more_than_its_slots_only_while_its_jobs_are_short() {
        use crate::state::EndReport;
        use aam_protocol::messages::{Prefetch, Stopped};
        use aam_protocol::model::{ExitInfo, StopCause};
        let mut s = State::new(config());
        let jobs = (0..1000).map(|i| job(&format!("j{i}"), &[])).collect();
        s.submit(batch(jobs), None, 0).unwrap();
        let mut w = worker("w", 2);
        w.prefetch = Prefetch::Auto;
        s.register_worker(1, w, &[], 0).unwrap();
        // Nothing has ended yet: its slots alone.
        assert_eq!(dispatch_and_end(&mut s, 5, 1), 2);
        // Short jobs ended: its slots and as many again.
        assert_eq!(dispatch_and_end(&mut s, 5, 2), 4);
        // Shorter jobs: enough a slot ahead to run 4 ms without the
        // manager, two each at 2 ms, four at a millisecond or less.
        let settled =
            |s: &mut State, ran_ms, t| (0..20).map(|_| dispatch_and_end(s, ran_ms, t)).last();
        assert_eq!(settled(&mut s, 2, 3), Some(2 + 2 * 2));
        // Rounded up: at 3 ms one job a slot would cover 3 ms only.
        assert_eq!(settled(&mut s, 3, 3), Some(2 + 2 * 2));
        assert_eq!(settled(&mut s, 0, 3), Some(2 + 2 * 4));
        assert_eq!(settled(&mut s, 5, 3), Some(2 + 2));
        // Long jobs pull the average past the threshold: slots alone.
        assert_eq!(dispatch_and_end(&mut s, 5_000, 3), 4);
        assert_eq!(dispatch_and_end(&mut s, 5, 4), 2);
        // Short again: prefetched again within a few rounds...
        let rounds = (5..25).take_while(|&t| dispatch_and_end(&mut s, 5, t) < 4);
        assert!(rounds.count() < 19, "no prefetch after short jobs again");
        // ... until an assignment comes back unstarted.
        let assigned = s.dispatch(30);
        assert_eq!(assigned.len(), 4);
        let back = EndReport {
            exit: Some(ExitInfo::not_started()),
            stopped: Some(Stopped {
                cause: StopCause::Superseded,
                receipt: Default::default(),
            }),
            ..EndReport::default()
        };
        s.job_finished(1, attempt_of(&assigned[3].1), back, 30)
            .unwrap();
        // Given back, it is queued again, and the worker gets no prefetch.
        let requeued = &assigned[3].1.job_name;
        assert_eq!(
            s.logs(assigned[3].1.job.session, requeued, 0, &|_| None)
                .unwrap()
                .status,
            JobStatus::Queued
        );
        assert!(s.dispatch(31).is_empty());
    }

    #[test]
    fn a_dispatch_stores_the_new_attempt_number() {
        let mut s = State::new(config());
        s.submit(batch(vec![job("a", &[])]), None, 0).unwrap();
        s.register_worker(1, worker("w", 1), &[], 0).unwrap();
        s.take_changes();
        let assigned = s.dispatch(7);
        assert_eq!(assigned[0].1.attempt, 1);
        let stored = testing::stored_jobs(&mut s);
        assert_eq!(
            stored.len(),
            1,
            "the attempt is the fence: it must be stored"
        );
        assert_eq!(
            (
                stored[0].attempts,
                stored[0].status,
                stored[0].started_at_ms
            ),
            (1, JobStatus::Running, Some(7))
        );
    }
}
