//! Budgets: what agents spent (`Spend`, per attempt, job and session), a
//! session that reached its `max_cost_usd` (its agent jobs not started are
//! skipped, `budget: spent $X of $Y`; running ones finish), and a job past
//! its own `max_cost_usd` (stopped while it runs, cause `budget`; not
//! started again).

use super::session::SessionEntry;
use super::{State, WorkerId};
use crate::prices::{usd, PriceTable};
use aam_protocol::agent_run::AgentRun;
use aam_protocol::messages::AttemptRef;
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::{JobKey, SessionId};

/// What agents spent: USD and tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
}

impl Spend {
    /// What one run spent (nothing for none).
    pub fn of(run: Option<&AgentRun>, prices: &PriceTable) -> Spend {
        let Some(run) = run else {
            return Spend::default();
        };
        let tokens = run.tokens();
        Spend {
            cost_usd: prices.run_cost(run),
            input_tokens: tokens.input_tokens,
            output_tokens: tokens.output_tokens,
            cache_read_tokens: tokens.cache_read_tokens,
        }
    }

    pub fn add(&mut self, other: Spend) {
        self.cost_usd += other.cost_usd;
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
    }
}

/// A running attempt to stop: it spent more than its job may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetStop {
    pub worker: WorkerId,
    pub attempt: AttemptRef,
    pub grace_ms: u64,
}

/// Why a queued job may not start for its budget.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum OverBudget {
    /// Its session spent its budget: skipped with this reason.
    Session(String),
    /// It spent its own: failed, reason `budget`.
    Job,
}

/// The reason a session's jobs are skipped for its budget.
fn session_reason(spent: f64, budget: f64) -> String {
    format!("budget: spent {} of {}", usd(spent), usd(budget))
}

impl State {
    /// What a job's attempts spent, the running one included (for a
    /// parent of variants, which runs nothing: what they spent).
    pub(super) fn job_spend(&self, entry: &SessionEntry, job: &JobRecord) -> Spend {
        let prices = &self.config.prices;
        let mut spend = Spend::default();
        for variant in job
            .variant_jobs
            .iter()
            .filter_map(|&i| entry.jobs().get(i as usize))
        {
            spend.add(self.job_spend(entry, variant));
        }
        for attempt in &job.history {
            spend.add(Spend::of(attempt.agent_run.as_deref(), prices));
        }
        if let Some(live) = entry.live_agents.get(&job.key.index) {
            spend.add(live.spend);
        }
        spend
    }

    /// Whether a queued agent job may start as far as budgets go.
    pub(super) fn budget_refusal(
        &self,
        entry: &SessionEntry,
        job: &JobRecord,
    ) -> Option<OverBudget> {
        if entry.over_budget {
            let budget = entry.record().max_cost_usd.unwrap_or(0.0);
            let reason = session_reason(entry.spend().cost_usd, budget);
            return Some(OverBudget::Session(reason));
        }
        let max = job.max_cost_usd()?;
        (self.job_spend(entry, job).cost_usd > max).then_some(OverBudget::Job)
    }

    /// A queued job refused for its budget ends: skipped for its session's,
    /// failed for its own. Its dependents settle as usual.
    pub(super) fn end_over_budget(&mut self, key: JobKey, why: OverBudget, now: u64) {
        self.queue.remove(key);
        match why {
            OverBudget::Session(reason) => self.skip(key, reason, now),
            OverBudget::Job => {
                self.set_status(key, JobStatus::Failed);
                if let Some(job) = self.job_mut(key) {
                    job.finished_at_ms = Some(now);
                    job.set_reason(Some("budget".into()));
                }
            }
        }
        self.settle_dependents(key, now);
        self.maybe_finish_session(key.session, now);
    }

    /// After a session's spend changed: once it reaches its budget, its
    /// agent jobs that have not started are skipped (once; later ones are
    /// refused at dispatch). Running ones finish.
    pub(super) fn enforce_session_budget(&mut self, session: SessionId, now: u64) {
        let Some(entry) = self.sessions.get(session) else {
            return;
        };
        let Some(budget) = entry.record().max_cost_usd else {
            return;
        };
        let spent = entry.spend().cost_usd;
        if entry.over_budget || spent < budget {
            return;
        }
        // A parent of variants spends nothing: it ends with them.
        let left: Vec<u32> = entry
            .jobs()
            .iter()
            .filter(|j| j.agent.is_some() && j.variant_jobs.is_empty() && not_started(j.status))
            .map(|j| j.key.index)
            .collect();
        if let Some(entry) = self.sessions.get_mut(session) {
            entry.over_budget = true;
        }
        tracing::info!(session = %session, spent, budget, skipped = left.len(),
            "session reached its budget");
        let reason = session_reason(spent, budget);
        for index in left {
            let key = JobKey { session, index };
            // Skipped meanwhile, as a dependent of one skipped before it.
            if self.job(key).is_some_and(|j| not_started(j.status)) {
                self.end_over_budget(key, OverBudget::Session(reason.clone()), now);
            }
        }
    }

    /// A running job that spent more than its own budget is to be stopped
    /// (once per attempt, unless the manager restarted since).
    pub(super) fn check_job_budget(&mut self, key: JobKey) -> Option<BudgetStop> {
        let entry = self.sessions.get(key.session)?;
        let job = entry.jobs().get(key.index as usize)?;
        let max = job.max_cost_usd()?;
        let live = entry.live_agents.get(&key.index)?;
        if live.stop_sent || self.job_spend(entry, job).cost_usd <= max {
            return None;
        }
        let attempt = AttemptRef {
            job: key,
            attempt: job.attempts,
        };
        let grace_ms = job.policy.grace_ms;
        let worker = self.holder(key)?;
        if let Some(live) = self
            .sessions
            .get_mut(key.session)
            .and_then(|e| e.live_agents.get_mut(&key.index))
        {
            live.stop_sent = true;
        }
        tracing::info!(job = %key, max, "stopping a job past its budget");
        Some(BudgetStop {
            worker,
            attempt,
            grace_ms,
        })
    }
}

/// Pending or queued: it has not started (a retry waiting for its backoff
/// is queued too).
fn not_started(status: JobStatus) -> bool {
    matches!(status, JobStatus::Pending | JobStatus::Queued)
}

#[cfg(test)]
mod tests;
