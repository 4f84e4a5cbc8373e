//! Which token submitted each session (stored in the store's `owners`
//! tree, removed with the session), what each token has open, and the
//! per-token quotas checked at submission (`quota_refusal`, pure).

use super::State;
use crate::tokens::Quotas;
use aam_protocol::model::JobStatus;
use aam_protocol::SessionId;
use std::collections::{BTreeSet, HashMap};

/// Who submitted which session, and each token's unfinished sessions.
#[derive(Default)]
pub struct Owners {
    of: HashMap<SessionId, String>,
    /// Each token's sessions not finished: what `usage` reads, so that a
    /// submission costs what its token has open, not all the sessions it
    /// ever submitted that retention still keeps.
    open: HashMap<String, BTreeSet<SessionId>>,
    /// Set since the last commit: to store.
    unsaved: Vec<(SessionId, String)>,
}

impl Owners {
    /// Records the owner of `id`, and whether it is still `open`.
    fn insert(&mut self, id: SessionId, token: String, open: bool) {
        if open {
            self.open.entry(token.clone()).or_default().insert(id);
        }
        self.of.insert(id, token);
    }

    /// `id` finished: its token no longer has it open.
    pub(super) fn closed(&mut self, id: SessionId) {
        let Some(token) = self.of.get(&id) else {
            return;
        };
        if let Some(set) = self.open.get_mut(token) {
            set.remove(&id);
            if set.is_empty() {
                self.open.remove(token);
            }
        }
    }

    /// `id` runs again (a retry): its token has it open again.
    pub(super) fn reopened(&mut self, id: SessionId) {
        if let Some(token) = self.of.get(&id) {
            self.open.entry(token.clone()).or_default().insert(id);
        }
    }

    pub(super) fn remove(&mut self, id: SessionId) {
        self.closed(id);
        self.of.remove(&id);
    }

    pub(super) fn take_unsaved(&mut self) -> Vec<(SessionId, String)> {
        std::mem::take(&mut self.unsaved)
    }
}

/// What a token has open now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Its sessions not finished.
    pub sessions: u32,
    /// Jobs of its sessions waiting to run (queued, or pending on
    /// dependencies or a gate).
    pub queued_jobs: u32,
}

/// A submission refused by a quota: the metric's reason and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaRefusal {
    pub reason: &'static str,
    pub message: String,
}

/// Whether a token with `quotas` and `usage` may open one more session of
/// `jobs` waiting jobs. Pure.
pub fn quota_refusal(token: &str, quotas: Quotas, usage: Usage, jobs: u32) -> Option<QuotaRefusal> {
    if let Some(max) = quotas.max_sessions {
        if usage.sessions >= max {
            return Some(QuotaRefusal {
                reason: "max_sessions",
                message: format!(
                    "quota reached: token {token} has {} unfinished sessions, its max_sessions is \
                     {max}; wait for one to finish or cancel one",
                    usage.sessions
                ),
            });
        }
    }
    if let Some(max) = quotas.max_queued_jobs {
        if usage.queued_jobs.saturating_add(jobs) > max {
            return Some(QuotaRefusal {
                reason: "max_queued_jobs",
                message: format!(
                    "quota reached: token {token} has {} jobs waiting to run and asks for {jobs} \
                     more, its max_queued_jobs is {max}",
                    usage.queued_jobs
                ),
            });
        }
    }
    None
}

impl State {
    /// The token that submitted `id`, when known (sessions from before
    /// roles have none).
    pub fn owner(&self, id: SessionId) -> Option<&str> {
        self.owners.of.get(&id).map(String::as_str)
    }

    /// Records that `token` submitted `id` (stored with the next commit).
    pub fn set_owner(&mut self, id: SessionId, token: &str) {
        let open = self.session_is_open(id);
        self.owners.insert(id, token.to_string(), open);
        self.owners.unsaved.push((id, token.to_string()));
    }

    /// Owners read back from the store, for sessions that exist.
    pub(super) fn restore_owners(&mut self, owners: Vec<(SessionId, String)>) {
        for (id, token) in owners {
            if self.sessions.get(id).is_some() {
                let open = self.session_is_open(id);
                self.owners.insert(id, token, open);
            }
        }
    }

    fn session_is_open(&self, id: SessionId) -> bool {
        self.sessions
            .get(id)
            .is_some_and(|entry| !entry.record().status.is_terminal())
    }

    /// What `token` has open now: as costly as its unfinished sessions
    /// are many.
    pub fn usage(&self, token: &str) -> Usage {
        let mut usage = Usage::default();
        for &id in self.owners.open.get(token).into_iter().flatten() {
            let Some(entry) = self.sessions.get(id) else {
                continue;
            };
            debug_assert!(
                !entry.record().status.is_terminal(),
                "{id} finished but is still in its token's open sessions"
            );
            usage.sessions += 1;
            usage.queued_jobs += entry.count(JobStatus::Queued) + entry.count(JobStatus::Pending);
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(sessions: Option<u32>, jobs: Option<u32>) -> Quotas {
        Quotas {
            max_sessions: sessions,
            max_queued_jobs: jobs,
        }
    }

    fn usage(sessions: u32, queued_jobs: u32) -> Usage {
        Usage {
            sessions,
            queued_jobs,
        }
    }

    #[test]
    fn quotas_refuse_past_their_limit_and_name_it() {
        assert_eq!(
            quota_refusal("ci", Quotas::default(), usage(99, 99), 99),
            None
        );
        assert_eq!(
            quota_refusal("ci", quotas(Some(2), None), usage(1, 0), 1),
            None
        );
        let r = quota_refusal("ci", quotas(Some(2), None), usage(2, 0), 1).unwrap();
        assert_eq!(r.reason, "max_sessions");
        assert!(
            r.message.starts_with(
                "quota reached: token ci has 2 unfinished sessions, its max_sessions is 2"
            ),
            "{}",
            r.message
        );
        assert_eq!(
            quota_refusal("ci", quotas(None, Some(5)), usage(1, 3), 2),
            None
        );
        let r = quota_refusal("ci", quotas(None, Some(5)), usage(1, 3), 3).unwrap();
        assert_eq!(r.reason, "max_queued_jobs");
        assert!(
            r.message.contains("token ci") && r.message.contains("max_queued_jobs is 5"),
            "{}",
            r.message
        );
    }

    #[test]
    fn usage_counts_unfinished_sessions_and_waiting_jobs_of_one_token() {
        use crate::state::testing::*;
        let mut state = State::new(config());
        let (a, _) = state
            .submit(batch(vec![job("x", &[]), job("y", &["x"])]), None, 1)
            .unwrap();
        let (b, _) = state.submit(batch(vec![job("z", &[])]), None, 1).unwrap();
        state.set_owner(a, "ci");
        state.set_owner(b, "ann");
        assert_eq!(state.usage("ci"), usage(1, 2));
        assert_eq!(state.usage("ann"), usage(1, 1));
        assert_eq!(state.usage("nobody"), usage(0, 0));
        assert_eq!(state.owner(a), Some("ci"));
        assert_eq!(state.take_changes().owners.len(), 2);
        state.cancel(a, None, None, 10).unwrap();
        assert_eq!(state.usage("ci"), usage(0, 0));
    }

    /// What `usage` counts from the open sessions it keeps, counted again
    /// from every session there is.
    fn usage_of_all(state: &State, token: &str) -> Usage {
        let mut usage = Usage::default();
        for entry in state.sessions.values() {
            let id = entry.record().id;
            if state.owner(id) == Some(token) && !entry.record().status.is_terminal() {
                usage.sessions += 1;
                usage.queued_jobs +=
                    entry.count(JobStatus::Queued) + entry.count(JobStatus::Pending);
            }
        }
        usage
    }

    #[test]
    fn usage_follows_sessions_that_finish_run_again_go_and_come_back_from_the_store() {
        use crate::state::testing::*;
        let mut state = State::new(config());
        let mut ids = Vec::new();
        for n in 0..4 {
            let (id, _) = state.submit(batch(vec![job("x", &[])]), None, n).unwrap();
            state.set_owner(id, if n % 2 == 0 { "ci" } else { "ann" });
            ids.push(id);
        }
        let check = |state: &State, step: &str| {
            for token in ["ci", "ann", "nobody"] {
                assert_eq!(
                    state.usage(token),
                    usage_of_all(state, token),
                    "{step}: {token}"
                );
            }
        };
        check(&state, "submitted");
        assert_eq!(state.usage("ci"), usage(2, 2));
        state.cancel(ids[0], None, None, 10).unwrap();
        state.cancel(ids[1], None, None, 10).unwrap();
        check(&state, "two cancelled");
        assert_eq!(state.usage("ci"), usage(1, 1));
        state.retry(ids[0], 20).unwrap();
        check(&state, "one retried");
        assert_eq!(state.usage("ci"), usage(2, 2));
        state.cancel(ids[0], None, None, 30).unwrap();
        state.gc(31);
        check(&state, "the ended ones collected");
        assert!(state.owner(ids[0]).is_none() && state.owner(ids[1]).is_none());
        // A session that finished before its owner was recorded is not open.
        let (done, _) = state.submit(batch(vec![job("y", &[])]), None, 40).unwrap();
        state.cancel(done, None, None, 41).unwrap();
        state.set_owner(done, "ci");
        check(&state, "owner set after the end");
        // Read back from the store, as a restart does.
        let owners: Vec<(SessionId, String)> = [ids[2], ids[3], done]
            .into_iter()
            .map(|id| (id, state.owner(id).unwrap().to_string()))
            .collect();
        state.owners = Owners::default();
        state.restore_owners(owners);
        check(&state, "restored");
        assert_eq!(state.usage("ci"), usage(1, 1));
        assert_eq!(state.usage("ann"), usage(1, 1));
    }
}
