//! Join tokens (issue 17): each worker a provider launches gets a token of
//! its own, good for the `worker` role only, made at launch and dropped
//! when the provider forgets the worker (stopped, gone, retired). It lives
//! in the manager's memory beside the configured tokens (a SIGHUP reload
//! of those leaves it be); a manager restart forgets it, and its worker,
//! unable to come back, is stopped by the provider's reconciliation. A
//! token registers only the worker it was made for.

use std::collections::HashMap;

/// How a worker that joined with such a token is named in the audit log
/// (`join:pods-1a2b3c4d`); its registration must carry that name.
pub const PREFIX: &str = "join:";
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct JoinTokens(Arc<Mutex<HashMap<String, String>>>);

impl JoinTokens {
    /// A new token for `worker` (replacing any it had).
    pub fn issue(&self, worker: &str) -> String {
        let token = crate::token::generate();
        self.0
            .lock()
            .expect("join tokens")
            .insert(worker.to_string(), token.clone());
        token
    }

    pub fn revoke(&self, worker: &str) {
        self.0.lock().expect("join tokens").remove(worker);
    }

    /// The worker the token `given` was issued to. Every token is compared
    /// in constant time, so the time taken does not tell which one matched.
    pub fn find(&self, given: &str) -> Option<String> {
        let tokens = self.0.lock().expect("join tokens");
        let mut found = None;
        for (worker, token) in tokens.iter() {
            if crate::token::matches(token, given) {
                found = Some(worker.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_worker_until_revoked() {
        let joins = JoinTokens::default();
        let a = joins.issue("p-1");
        let b = joins.issue("p-2");
        assert_ne!(a, b);
        assert_eq!(joins.find(&a).as_deref(), Some("p-1"));
        assert_eq!(joins.find("nope"), None);
        joins.revoke("p-1");
        assert_eq!(joins.find(&a), None);
        assert_eq!(joins.find(&b).as_deref(), Some("p-2"));
    }
}
