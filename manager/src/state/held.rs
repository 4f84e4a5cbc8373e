//! What running jobs hold, kept as a tally for dispatch: units of each
//! shared resource, and jobs on each account. A job takes its claim when
//! its attempt begins (or when a restart finds it running) and gives back
//! exactly what it took when it stops running, whatever its record says by
//! then; so a dispatch costs O(resources + accounts), not O(running jobs).
//! The views that name holders (`aam resources`, `aam accounts`, a job's
//! wait) still derive them from the running jobs; the unit tests check
//! the tally against that derivation at every dispatch.

use super::State;
use aam_protocol::account::account_of_group;
use aam_protocol::resource::ResourceUse;
use aam_protocol::JobKey;
use std::collections::HashMap;

/// What one running job holds.
struct Claim {
    uses: Vec<ResourceUse>,
    account: Option<String>,
}

#[derive(Default)]
pub(super) struct Held {
    /// Only jobs that hold something.
    claims: HashMap<JobKey, Claim>,
    units: HashMap<String, u32>,
    on_account: HashMap<String, u32>,
}

impl Held {
    /// `key` runs, holding `uses` and running on `account` (a declared one).
    pub fn take(&mut self, key: JobKey, uses: &[ResourceUse], account: Option<&str>) {
        if uses.is_empty() && account.is_none() {
            return;
        }
        self.release(key);
        for u in uses {
            *self.units.entry(u.name.clone()).or_default() += u.count;
        }
        if let Some(a) = account {
            *self.on_account.entry(a.to_string()).or_default() += 1;
        }
        let claim = Claim {
            uses: uses.to_vec(),
            account: account.map(String::from),
        };
        self.claims.insert(key, claim);
    }

    /// `key` no longer runs: what it took is free again.
    pub fn release(&mut self, key: JobKey) {
        let Some(claim) = self.claims.remove(&key) else {
            return;
        };
        for u in &claim.uses {
            if let Some(n) = self.units.get_mut(&u.name) {
                *n = n.saturating_sub(u.count);
            }
        }
        if let Some(n) = claim.account.and_then(|a| self.on_account.get_mut(&a)) {
            *n = n.saturating_sub(1);
        }
    }

    /// Units of `resource` running jobs hold.
    pub fn units(&self, resource: &str) -> u32 {
        self.units.get(resource).copied().unwrap_or(0)
    }

    /// Running jobs on each account (those with none may be absent).
    pub fn on_accounts(&self) -> impl Iterator<Item = (&str, u32)> {
        self.on_account
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(a, &n)| (a.as_str(), n))
    }
}

impl State {
    /// `key`'s attempt runs from now: it holds its resources, and the
    /// account its limit group names (a declared one).
    pub(super) fn hold(&mut self, key: JobKey) {
        let Some(job) = self.sessions.job(key) else {
            return;
        };
        let account = job
            .limit_group
            .as_deref()
            .and_then(account_of_group)
            .filter(|a| self.config.accounts.contains_key(*a));
        self.held.take(key, &job.uses, account);
    }

    /// The tally against what the running jobs hold, derived (unit tests
    /// call it at every dispatch).
    #[cfg(test)]
    pub(super) fn check_held(&self) {
        for (name, room) in self.resource_room_derived() {
            let units = self.held.units(&name);
            let capacity = self.config.resources[&name];
            assert_eq!(capacity.saturating_sub(units), room, "units of {name} held");
        }
        let derived: HashMap<String, u32> = self
            .running_by_account()
            .into_iter()
            .map(|(a, keys)| (a.to_string(), keys.len() as u32))
            .collect();
        let tally: HashMap<String, u32> = self
            .held
            .on_accounts()
            .map(|(a, n)| (a.to_string(), n))
            .collect();
        assert_eq!(tally, derived, "jobs running on each account");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::key;

    fn db(count: u32) -> Vec<ResourceUse> {
        vec![ResourceUse {
            name: "db".into(),
            count,
        }]
    }

    #[test]
    fn a_release_gives_back_what_was_taken_once() {
        let mut held = Held::default();
        held.take(key(1), &db(2), Some("a"));
        held.take(key(2), &db(1), None);
        assert_eq!(held.units("db"), 3);
        assert_eq!(held.on_accounts().collect::<Vec<_>>(), vec![("a", 1)]);
        held.release(key(1));
        held.release(key(1));
        assert_eq!(held.units("db"), 1);
        assert_eq!(held.on_accounts().count(), 0);
        // Taken again (a new attempt): the old claim is replaced, not added.
        held.take(key(2), &db(1), None);
        assert_eq!(held.units("db"), 1);
        held.release(key(2));
        assert_eq!(held.units("db"), 0);
    }
}
