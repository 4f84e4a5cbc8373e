//! The tokens the manager accepts: the `[tokens.NAME]` tables of the config
//! (a token, its role(s), its quotas), the set built from them and the main
//! token, and the live copy connections check against, which SIGHUP
//! replaces (rotation without a restart).

use crate::access::{Grant, Role};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

/// A token's own limits (`[tokens.NAME]` keys; none: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quotas {
    /// Sessions of this token not yet finished.
    pub max_sessions: Option<u32>,
    /// Queued jobs across this token's sessions.
    pub max_queued_jobs: Option<u32>,
}

/// One `[tokens.NAME]` entry. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    pub token: String,
    pub grant: Grant,
    pub quotas: Quotas,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &aam_protocol::secret::REDACTED)
            .field("grant", &self.grant.to_string())
            .field("quotas", &self.quotas)
            .finish()
    }
}

/// Reads `[tokens.NAME]`: a table `{ token, role, max_sessions,
/// max_queued_jobs }` (`role` one name or a list), or the old form `NAME =
/// "TOKEN"`, which is `admin` plus `worker` as every token was before
/// roles. The error names the token and the problem.
pub fn parse(name: &str, value: &toml::Value) -> Result<TokenConfig, String> {
    let table = match value {
        toml::Value::String(token) => {
            return Ok(TokenConfig {
                token: checked(name, token)?,
                grant: Grant::admin_and_worker(),
                quotas: Quotas::default(),
            })
        }
        toml::Value::Table(table) => table,
        _ => {
            return Err(format!(
                "tokens.{name}: expected a table {{ token = \"...\", role = \"...\" }}"
            ))
        }
    };
    let mut config = TokenConfig {
        token: String::new(),
        grant: Grant::new([]),
        quotas: Quotas::default(),
    };
    for (key, value) in table {
        match key.as_str() {
            "token" => match value.as_str() {
                Some(token) => config.token = checked(name, token)?,
                None => return Err(format!("tokens.{name}.token: expected a string")),
            },
            "role" => config.grant = roles(name, value)?,
            "max_sessions" => config.quotas.max_sessions = Some(count(name, key, value)?),
            "max_queued_jobs" => config.quotas.max_queued_jobs = Some(count(name, key, value)?),
            other => {
                return Err(format!(
                    "tokens.{name}: unknown key `{other}` (expected token, role, max_sessions, \
                     max_queued_jobs)"
                ))
            }
        }
    }
    if config.token.is_empty() {
        return Err(format!("tokens.{name}: `token` is missing"));
    }
    if config.grant == Grant::new([]) {
        return Err(format!(
            "tokens.{name}: `role` is missing (one of {})",
            role_names()
        ));
    }
    Ok(config)
}

fn role_names() -> String {
    Role::ALL.map(Role::as_str).join(", ")
}

fn checked(name: &str, token: &str) -> Result<String, String> {
    let token = token.trim();
    if token.len() < 16 {
        return Err(format!(
            "tokens.{name}: a token needs at least 16 characters"
        ));
    }
    Ok(token.to_string())
}

fn roles(name: &str, value: &toml::Value) -> Result<Grant, String> {
    let one = |v: &toml::Value| -> Result<Role, String> {
        let text = v.as_str().unwrap_or_default();
        Role::parse(text).ok_or_else(|| {
            format!(
                "tokens.{name}.role: unknown role {v} (expected {})",
                role_names()
            )
        })
    };
    match value {
        toml::Value::Array(list) if !list.is_empty() => Ok(Grant::new(
            list.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        )),
        toml::Value::Array(_) => Err(format!("tokens.{name}.role: the list is empty")),
        single => Ok(Grant::new([one(single)?])),
    }
}

fn count(name: &str, key: &str, value: &toml::Value) -> Result<u32, String> {
    value
        .as_integer()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("tokens.{name}.{key}: expected a whole number, 0 or more"))
}

/// One accepted token.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub config: TokenConfig,
}

/// Every token accepted at one time.
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

impl TokenSet {
    /// The main token (`admin` plus `worker`) under `main_name`, and the
    /// configured ones.
    pub fn new(
        main_name: &str,
        main_token: &str,
        configured: &BTreeMap<String, TokenConfig>,
    ) -> TokenSet {
        let main = Entry {
            name: main_name.to_string(),
            config: TokenConfig {
                token: main_token.trim().to_string(),
                grant: Grant::admin_and_worker(),
                quotas: Quotas::default(),
            },
        };
        let others = configured.iter().map(|(name, config)| Entry {
            name: name.clone(),
            config: config.clone(),
        });
        TokenSet {
            entries: std::iter::once(main).chain(others).collect(),
        }
    }

    /// The entry of the token `given`. Every token is compared in constant
    /// time, so the time taken does not tell which one matched.
    pub fn find(&self, given: &str) -> Option<&Entry> {
        let mut found = None;
        for entry in &self.entries {
            if crate::token::matches(&entry.config.token, given) {
                found = Some(entry);
            }
        }
        found
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }
}

/// The token set in force, shared by the listener and the HTTP server;
/// `replace` swaps it whole (SIGHUP). Connections already open keep the
/// identity they authenticated with.
#[derive(Clone, Default)]
pub struct LiveTokens(Arc<RwLock<Arc<TokenSet>>>);

impl LiveTokens {
    pub fn new(set: TokenSet) -> LiveTokens {
        LiveTokens(Arc::new(RwLock::new(Arc::new(set))))
    }

    pub fn current(&self) -> Arc<TokenSet> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, set: TokenSet) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<TokenConfig, String> {
        let value: toml::Value = toml::from_str(text).unwrap();
        parse("ci", &value["tokens"]["ci"])
    }

    #[test]
    fn tables_and_the_old_string_form() {
        let t = parsed(
            "[tokens.ci]\ntoken = \"ci-token-0123456789\"\nrole = \"submit\"\nmax_sessions = 2\n",
        )
        .unwrap();
        assert_eq!(t.grant.to_string(), "submit");
        assert_eq!(t.quotas.max_sessions, Some(2));
        assert_eq!(t.quotas.max_queued_jobs, None);
        let both =
            parsed("[tokens.ci]\ntoken = \"ci-token-0123456789\"\nrole = [\"read\", \"worker\"]\n")
                .unwrap();
        assert_eq!(both.grant.to_string(), "read+worker");
        let old = parsed("[tokens]\nci = \"ci-token-0123456789\"\n").unwrap();
        assert_eq!(old.grant, Grant::admin_and_worker());
        assert!(!format!("{old:?}").contains("ci-token"));
    }

    #[test]
    fn errors_name_the_token_and_the_problem() {
        let err = |text: &str| parsed(text).unwrap_err();
        assert_eq!(
            err("[tokens.ci]\ntoken = \"ci-token-0123456789\"\nrole = \"boss\"\n"),
            "tokens.ci.role: unknown role \"boss\" (expected admin, submit, agent, read, worker)"
        );
        assert!(err("[tokens.ci]\ntoken = \"ci-token-0123456789\"\n").contains("`role` is missing"));
        assert!(err("[tokens.ci]\nrole = \"read\"\n").contains("`token` is missing"));
        assert!(err("[tokens.ci]\ntoken = \"short\"\nrole = \"read\"\n").contains("16 characters"));
        assert!(
            err("[tokens.ci]\ntoken = \"ci-token-0123456789\"\nrole = \"read\"\nmax = 1\n")
                .contains("unknown key `max`")
        );
        assert!(err(
            "[tokens.ci]\ntoken = \"ci-token-0123456789\"\nrole = \"read\"\nmax_sessions = -1\n"
        )
        .contains("tokens.ci.max_sessions"));
    }

    #[test]
    fn find_names_the_token_given_and_replace_swaps_the_set() {
        let mut configured = BTreeMap::new();
        configured.insert(
            "ci".to_string(),
            parsed("[tokens.ci]\ntoken = \"ci-token-0123456789\"\nrole = \"read\"\n").unwrap(),
        );
        let live = LiveTokens::new(TokenSet::new("admin", "main-token-0123456789", &configured));
        let set = live.current();
        assert_eq!(set.find("ci-token-0123456789").unwrap().name, "ci");
        assert_eq!(set.find("main-token-0123456789").unwrap().name, "admin");
        assert!(set.find("ci-token-012345678").is_none());
        live.replace(TokenSet::new(
            "admin",
            "main-token-0123456789",
            &BTreeMap::new(),
        ));
        assert!(live.current().find("ci-token-0123456789").is_none());
        assert!(
            set.find("ci-token-0123456789").is_some(),
            "a held set stays as it was"
        );
    }
}
