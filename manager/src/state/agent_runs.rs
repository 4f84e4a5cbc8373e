//! What agents do, as their workers read it from the agents' output:
//! `AgentUpdate`s pass the attempt fence into the live run of the job's
//! attempt, the run an attempt ends with lands in the job and its attempt
//! record, the agent's own word on how it ended (an error, a usage limit)
//! classifies the end, and clients see each agent job's `agent` object.
//!
//! A live run is kept in memory (like live output) and written into the
//! job's record, to be stored, at most every `STORE_EVERY_MS` and at the
//! end: updates come several times a second per job, and a restart loses
//! at most those seconds, which the worker's next update brings back.

use super::attempts::AttemptEnd;
use super::budget::{BudgetStop, Spend};
use super::session::SessionEntry;
use super::{Fenced, State, WorkerId};
use crate::prices::PriceTable;
use aam_protocol::agent_run::{AgentRun, AgentView};
use aam_protocol::messages::AttemptRef;
use aam_protocol::model::{JobRecord, StopCause};
use aam_protocol::JobKey;

/// How often a running agent's run is written into its job's record.
pub const STORE_EVERY_MS: u64 = 5_000;

/// The agent of a running attempt, as last reported.
#[derive(Clone, Debug)]
pub struct LiveAgent {
    pub run: AgentRun,
    /// What the run spent so far (its tokens priced, or its own figure).
    pub spend: Spend,
    /// When the run was last written into the job's record (None: not
    /// since the manager started).
    stored_at_ms: Option<u64>,
    /// A budget stop was sent for this attempt.
    pub stop_sent: bool,
}

impl LiveAgent {
    /// A run read back from the store (a running job at the manager's start).
    pub fn restored(run: AgentRun, prices: &PriceTable) -> LiveAgent {
        LiveAgent {
            spend: Spend::of(Some(&run), prices),
            run,
            stored_at_ms: None,
            stop_sent: false,
        }
    }
}

/// How an agent's own report decides an attempt's end, when it does: a run
/// that ended on a usage limit is `Limited` (requeued, no retry used); one
/// whose agent reported an error fails with that error as its reason,
/// whatever its exit code. A stop by aam (cancel, timeout, budget,
/// shutdown) and a cancel in progress decide before the agent does.
pub(super) fn classify_agent_end(
    run: Option<&AgentRun>,
    stopped: Option<StopCause>,
    cancel_requested: bool,
) -> Option<(AttemptEnd, Option<String>)> {
    if stopped.is_some() || cancel_requested {
        return None;
    }
    let run = run?;
    if let Some(limit) = &run.limit {
        return Some((
            AttemptEnd::Limited,
            Some(format!("usage limit: {}", limit.message)),
        ));
    }
    let error = run.error.clone()?;
    Some((
        AttemptEnd::Final(aam_protocol::model::JobStatus::Failed),
        Some(error),
    ))
}

impl State {
    /// What the agent of the current attempt did so far, from its worker.
    /// Returns a stop order when the job spent more than its budget.
    pub fn agent_update(
        &mut self,
        from: WorkerId,
        attempt: AttemptRef,
        run: AgentRun,
        now: u64,
    ) -> Result<Option<BudgetStop>, Fenced> {
        self.is_current(attempt, from)?;
        let key = attempt.job;
        if self.job(key).is_none_or(|j| j.agent.is_none()) {
            // A command has no agent to follow.
            return Ok(None);
        }
        let spend = Spend::of(Some(&run), &self.config.prices);
        let Some(entry) = self.sessions.get_mut(key.session) else {
            return Err(Fenced::Stale);
        };
        let live = entry.live_agents.entry(key.index).or_insert(LiveAgent {
            run: AgentRun::default(),
            spend,
            stored_at_ms: None,
            stop_sent: false,
        });
        let store = live
            .stored_at_ms
            .is_none_or(|at| now.saturating_sub(at) >= STORE_EVERY_MS);
        if store {
            live.stored_at_ms = Some(now);
        }
        live.spend = spend;
        let stored = store.then(|| run.clone());
        live.run = run;
        // `job_mut` marks the record to be stored: only when it is.
        if let Some(run) = stored {
            if let Some(job) = self.job_mut(key) {
                job.agent_run = Some(Box::new(run));
            }
        }
        self.sessions.notify(key.session);
        self.enforce_session_budget(key.session, now);
        Ok(self.check_job_budget(key))
    }

    /// The run an attempt ended with replaces its live one (the worker's
    /// final reading, to the end of the output).
    pub(super) fn final_run(&mut self, key: JobKey, run: AgentRun) {
        let spend = Spend::of(Some(&run), &self.config.prices);
        if let Some(entry) = self.sessions.get_mut(key.session) {
            let live = LiveAgent {
                run,
                spend,
                stored_at_ms: None,
                stop_sent: false,
            };
            entry.live_agents.insert(key.index, live);
        }
    }

    /// An attempt ended: its live run goes into the job's record (and with
    /// it, into the attempt's record), its cost into the session's sums.
    pub(super) fn settle_run(&mut self, key: JobKey) {
        let Some(entry) = self.sessions.get_mut(key.session) else {
            return;
        };
        let Some(live) = entry.live_agents.remove(&key.index) else {
            return;
        };
        entry.spent.add(live.spend);
        if let Some(agent) = entry
            .jobs()
            .get(key.index as usize)
            .and_then(|j| j.agent.as_deref())
        {
            let s = live.spend;
            let tokens = (s.input_tokens, s.output_tokens, s.cache_read_tokens);
            self.config.metrics.agent_spent(agent, s.cost_usd, tokens);
        }
        if let Some(job) = self.job_mut(key) {
            job.agent_run = Some(Box::new(live.run));
        }
    }

    /// The run of a job's current (or last) attempt: live while it runs.
    pub(super) fn current_run<'a>(
        &self,
        entry: &'a SessionEntry,
        job: &'a JobRecord,
    ) -> Option<&'a AgentRun> {
        match entry.live_agents.get(&job.key.index) {
            Some(live) => Some(&live.run),
            None => job.agent_run.as_deref(),
        }
    }

    /// An agent job's `agent` object: its latest attempt's run, with the
    /// tokens and cost of every attempt. None for a command or a gate.
    pub(super) fn agent_view(&self, entry: &SessionEntry, job: &JobRecord) -> Option<AgentView> {
        job.agent.as_ref()?;
        let spend = self.job_spend(entry, job);
        let mut view = AgentView {
            input_tokens: spend.input_tokens,
            output_tokens: spend.output_tokens,
            cache_read_tokens: spend.cache_read_tokens,
            cost_usd: spend.cost_usd,
            ..AgentView::default()
        };
        if let Some(run) = self.current_run(entry, job) {
            view.session_id = run.session_id.clone();
            view.model = run.model.clone();
            view.turns = run.turns;
            view.tool_calls = run.tool_calls;
            view.last_tool = run.last_tool.clone();
            view.last_text = run.last_text.clone();
            view.result = run.result.clone();
            view.error = run.error.clone();
            view.retrying = run.retrying;
        }
        Some(view)
    }
}

#[cfg(test)]
mod tests;
