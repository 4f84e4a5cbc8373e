//! Accounts (issue 16): `[accounts.NAME]` in the manager's config, each an
//! environment (`CLAUDE_CONFIG_DIR`, `ANTHROPIC_API_KEY`, ...) a job of an
//! agent that lists it (`accounts = ["work", "personal"]`) starts with, and
//! each its own usage-limit group (`account:NAME`). The environment goes to
//! the worker in the assignment only: it is never in a job's record, so
//! never in status, logs, results or the audit log.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an account's limit group is named: `account:` and its name. An
/// agent's own `limit_group` cannot hold a `:`, so the two never meet.
pub const ACCOUNT_GROUP_PREFIX: &str = "account:";

/// The limit group of account `name`.
pub fn account_group(name: &str) -> String {
    format!("{ACCOUNT_GROUP_PREFIX}{name}")
}

/// The account a limit group stands for, if it is an account's.
pub fn account_of_group(group: &str) -> Option<&str> {
    group.strip_prefix(ACCOUNT_GROUP_PREFIX)
}

/// `[accounts.NAME]`. Its `Debug` names the variables, never their values.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDef {
    /// Variables a job on this account starts with, over its agent's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables a job on this account takes from its worker's own
    /// environment, each from the variable its value names (`{
    /// ANTHROPIC_API_KEY = "WORK_ANTHROPIC_KEY" }`): a key that never
    /// travels or lands in the manager's config or store.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
}

impl AccountDef {
    /// Its `secret_env` as an assignment carries it: `NAME=SOURCE`.
    pub fn secret_entries(&self) -> impl Iterator<Item = String> + '_ {
        self.secret_env
            .iter()
            .map(|(name, source)| format!("{name}={source}"))
    }
}

impl std::fmt::Debug for AccountDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountDef")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("secret_env", &self.secret_env)
            .finish()
    }
}

/// One account as `aam accounts` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountView {
    pub name: String,
    /// When its usage-limit pause ends (none: not paused).
    pub paused_until_ms: Option<u64>,
    /// The limit's text the pause came from (while paused).
    pub pause_message: Option<String>,
    /// Its pause has ended and its jobs start a few at a time
    /// (`resume_burst`) until one runs through.
    pub resuming: bool,
    /// Jobs running on it now (`s7/review`).
    pub running: Vec<String>,
    /// What attempts that ran on it cost, in USD: the latest attempt of
    /// each job the manager holds that ran on it (live for a running one).
    pub cost_usd: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_names_the_variables_but_never_their_values() {
        let def = AccountDef {
            env: [(
                "CLAUDE_CONFIG_DIR".to_string(),
                "/home/u/.claude-work".to_string(),
            )]
            .into(),
            ..AccountDef::default()
        };
        let shown = format!("{def:?}");
        assert!(shown.contains("CLAUDE_CONFIG_DIR"), "{shown}");
        assert!(!shown.contains("claude-work"), "{shown}");
    }

    #[test]
    fn a_group_names_its_account() {
        assert_eq!(account_of_group(&account_group("work")), Some("work"));
        assert_eq!(account_of_group("claude"), None);
    }
}
