//! The config keys of accounts (issue 16): `[accounts.NAME]` tables, the
//! `accounts` agents list, and `resume_burst` / `resume_interval`.

use super::{ConfigError, ManagerConfig};
use aam_protocol::spec::parse_duration_ms;

impl ManagerConfig {
    /// Accounts are valid names with variable names in their `env` and
    /// `secret_env` (whose values name the worker's variables); every
    /// account an agent lists is declared, once; the resume keys are
    /// positive.
    pub(super) fn check_accounts(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (name, account) in &self.accounts {
            if name.len() > 120 || !aam_protocol::spec::is_valid_name(name) {
                return bad(format!(
                    "accounts.{name}: not a valid account name (letters, digits, '-', '_' or '.')"
                ));
            }
            if let Some(var) = account
                .env
                .keys()
                .find(|v| !aam_protocol::agent::is_env_name(v))
            {
                return bad(format!(
                    "accounts.{name}.env: '{var}' is not a variable name (letters, digits and '_', not starting with a digit)"
                ));
            }
            for (var, source) in &account.secret_env {
                if !aam_protocol::agent::is_env_name(var) {
                    return bad(format!(
                        "accounts.{name}.secret_env: '{var}' is not a variable name (letters, digits and '_', not starting with a digit)"
                    ));
                }
                if !aam_protocol::agent::is_env_name(source) {
                    // Not echoed: a key pasted here is a secret.
                    return bad(format!(
                        "accounts.{name}.secret_env.{var}: the value must name a variable of the worker's environment (letters, digits and '_'), not hold the secret itself"
                    ));
                }
                if account.env.contains_key(var) {
                    return bad(format!(
                        "accounts.{name}: {var} is in both its env and its secret_env"
                    ));
                }
            }
        }
        for (agent, def) in &self.agents {
            for (i, account) in def.accounts.iter().enumerate() {
                if !self.accounts.contains_key(account) {
                    let known: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "the config declares no [accounts.NAME]".to_string()
                    } else {
                        format!("declared: {}", known.join(", "))
                    };
                    return bad(format!(
                        "agents.{agent}.accounts: unknown account '{account}' ({known})"
                    ));
                }
                if let Some(var) = def
                    .secret_env
                    .iter()
                    .find(|v| self.accounts[account].env.contains_key(*v))
                {
                    return bad(format!(
                        "agents.{agent}: {var} is in both its secret_env and accounts.{account}.env"
                    ));
                }
                if def.accounts[..i].contains(account) {
                    return bad(format!(
                        "agents.{agent}.accounts: account '{account}' is listed twice"
                    ));
                }
            }
        }
        if self.resume_burst == 0 {
            return bad("resume_burst must be at least 1".into());
        }
        if parse_duration_ms(&self.resume_interval).is_ok_and(|ms| ms == 0) {
            return bad(format!(
                "resume_interval ({}) must be more than 0",
                self.resume_interval
            ));
        }
        Ok(())
    }
}
