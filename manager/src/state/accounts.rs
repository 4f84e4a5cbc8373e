//! Accounts (issue 16) in the model. A job whose agent lists `accounts`
//! gets one when it is placed (`pick_account`: not paused, a start left if
//! it resumes after a limit, the fewest running jobs, ties in the agent's
//! order); its `limit_group` becomes that account's (`account:NAME`) for
//! the attempt, so a limit pauses the account alone and the job, requeued
//! without using a retry (`attempts`), goes to another account at once.
//! It waits only while every account is paused. Running jobs per account
//! are derived from the running jobs' groups each time, never counted. The
//! account's env goes into the assignment alone (`dispatch`).

use super::State;
use aam_protocol::account::{account_group, AccountView};
use aam_protocol::model::{JobRecord, JobStatus};
use aam_protocol::JobKey;
use std::collections::HashMap;

/// The account a job starts on: of `accounts` (in the agent's order), those
/// `open` (not paused, a start left), the one with the fewest `running`
/// jobs, the earliest listed on a tie. None: every one is closed.
pub(super) fn pick_account(
    accounts: &[String],
    open: impl Fn(&str) -> bool,
    running: impl Fn(&str) -> u32,
) -> Option<&str> {
    accounts
        .iter()
        .map(String::as_str)
        .filter(|a| open(a))
        // `min_by_key` keeps the first of equal keys.
        .min_by_key(|a| running(a))
}

/// What one dispatch hands out beyond slots: starts left to groups resuming
/// after a pause, running jobs per account (both counted as jobs are
/// placed), and the account each placed job got.
pub(super) struct Starts {
    room: HashMap<String, u32>,
    running: HashMap<String, u32>,
    pub chosen: HashMap<JobKey, String>,
}

/// Takes one start from `group`'s room, if it has one (no entry: no cap).
fn take(room: &mut HashMap<String, u32>, group: &str) -> bool {
    match room.get_mut(group) {
        Some(0) => false,
        Some(left) => {
            *left -= 1;
            true
        }
        None => true,
    }
}

impl State {
    /// The accounts a job's agent may use (none for most jobs). A
    /// follow-up (pinned where its conversation is) keeps the account its
    /// conversation ran on, whose files hold it.
    pub(super) fn accounts_of(&self, job: &JobRecord) -> &[String] {
        let Some(def) = job.agent.as_deref().and_then(|a| self.config.agents.get(a)) else {
            return &[];
        };
        let kept = job
            .pinned_worker
            .as_ref()
            .and(job.limit_group.as_deref())
            .and_then(aam_protocol::account::account_of_group)
            .and_then(|a| def.accounts.iter().position(|x| x == a));
        match kept {
            Some(i) => std::slice::from_ref(&def.accounts[i]),
            None => &def.accounts,
        }
    }

    /// Whether account `name` can take a job at `now`: not paused, and a
    /// start left if it is resuming.
    fn account_open(&self, name: &str, now: u64) -> bool {
        let group = account_group(name);
        !self.pauses.holds(&group, now) && self.resume_room(&group, now) != Some(0)
    }

    /// Whether a queued agent job is held at `now`: every account it may
    /// use is closed, or (without accounts) its group is paused or has no
    /// start left.
    pub(super) fn start_held(&self, job: &JobRecord, any_paused: bool, now: u64) -> bool {
        let accounts = self.accounts_of(job);
        if !accounts.is_empty() {
            return !accounts.iter().any(|a| self.account_open(a, now));
        }
        let Some(group) = job.limit_group.as_deref() else {
            return false;
        };
        (any_paused && self.pauses.holds(group, now)) || self.resume_room(group, now) == Some(0)
    }

    /// Running jobs by account: those whose current attempt runs on it.
    pub(super) fn running_by_account(&self) -> HashMap<&str, Vec<JobKey>> {
        let mut out: HashMap<&str, Vec<JobKey>> = HashMap::new();
        if self.config.accounts.is_empty() {
            return out;
        }
        let on_workers = self.workers.values().flat_map(|w| w.assigned.iter());
        for &key in on_workers.chain(self.orphans.keys()) {
            let Some(job) = self.job(key).filter(|j| j.status == JobStatus::Running) else {
                continue;
            };
            let account = job
                .limit_group
                .as_deref()
                .and_then(aam_protocol::account::account_of_group);
            if let Some((name, _)) = account.and_then(|a| self.config.accounts.get_key_value(a)) {
                out.entry(name.as_str()).or_default().push(key);
            }
        }
        for keys in out.values_mut() {
            keys.sort();
            keys.dedup();
        }
        out
    }

    /// What a dispatch at `now` starts from.
    pub(super) fn starts(&self, now: u64) -> Starts {
        Starts {
            room: self.resume_rooms(now),
            running: self
                .held
                .on_accounts()
                .map(|(a, n)| (a.to_string(), n))
                .collect(),
            chosen: HashMap::new(),
        }
    }

    /// The last say on a job that found a slot: an agent job takes a start
    /// from its group if that resumes, and one with accounts an account
    /// (recorded in `starts.chosen`). False: it stays queued.
    pub(super) fn claim_start(&self, starts: &mut Starts, key: JobKey, now: u64) -> bool {
        let Some(job) = self.job(key).filter(|j| j.agent.is_some()) else {
            return true;
        };
        let accounts = self.accounts_of(job);
        if accounts.is_empty() {
            return job
                .limit_group
                .as_deref()
                .is_none_or(|g| take(&mut starts.room, g));
        }
        let open = |a: &str| {
            let group = account_group(a);
            !self.pauses.holds(&group, now) && starts.room.get(&group) != Some(&0)
        };
        let running = |a: &str| starts.running.get(a).copied().unwrap_or(0);
        let Some(account) = pick_account(accounts, open, running) else {
            return false;
        };
        let account = account.to_string();
        take(&mut starts.room, &account_group(&account));
        *starts.running.entry(account.clone()).or_default() += 1;
        starts.chosen.insert(key, account);
        true
    }

    /// Why a queued job with accounts waits for one, if it does: every
    /// account is paused (naming the earliest reset), or those not paused
    /// have started all they may for now.
    pub(super) fn account_wait(&self, job: &JobRecord, now: u64) -> Option<String> {
        let accounts = self.accounts_of(job);
        if accounts.iter().any(|a| self.account_open(a, now)) {
            return None;
        }
        let pauses: Vec<_> = accounts
            .iter()
            .filter_map(|a| self.pauses.get_active(&account_group(a), now))
            .collect();
        if pauses.len() < accounts.len() {
            // Some are not paused but resuming, with no start left.
            return accounts
                .iter()
                .find_map(|a| self.resume_reason(&account_group(a), now));
        }
        let first = pauses.iter().map(|p| p.until_ms).min()?;
        Some(format!(
            "usage limit: every account paused ({}); the first resumes at {}",
            accounts.join(", "),
            super::limits::clock_time(first, now)
        ))
    }

    /// `aam accounts`: each account, its pause, its running jobs and what
    /// ran on it cost (the latest attempt of each job the manager holds
    /// whose attempt ran there; live for a running one).
    pub fn accounts(&self, now: u64) -> Vec<AccountView> {
        let running = self.running_by_account();
        let mut cost: HashMap<&str, f64> = HashMap::new();
        for entry in self.sessions.values() {
            for job in entry.jobs() {
                let account = job
                    .limit_group
                    .as_deref()
                    .and_then(aam_protocol::account::account_of_group);
                let Some(account) = account.filter(|_| job.started_at_ms.is_some()) else {
                    continue;
                };
                let live = entry.live_agents.get(&job.key.index);
                let spend = match live {
                    Some(live) => live.spend.cost_usd,
                    None => {
                        super::Spend::of(job.agent_run.as_deref(), &self.config.prices).cost_usd
                    }
                };
                *cost.entry(account).or_default() += spend;
            }
        }
        self.config
            .accounts
            .keys()
            .map(|name| {
                let group = account_group(name);
                let pause = self.pauses.get_active(&group, now);
                AccountView {
                    name: name.clone(),
                    paused_until_ms: pause.map(|p| p.until_ms),
                    pause_message: pause.map(|p| p.message.clone()),
                    resuming: self.resume_room(&group, now).is_some(),
                    running: running
                        .get(name.as_str())
                        .into_iter()
                        .flatten()
                        .map(|&k| self.job_label(k))
                        .collect(),
                    cost_usd: cost.get(name.as_str()).copied().unwrap_or(0.0),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
