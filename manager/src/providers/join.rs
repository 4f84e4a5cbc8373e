//! Join tokens (issue 17): each worker a provider launches gets a token of
//! its own, good for the `worker` role only and for registering that
//! worker's name alone, made at launch and dropped when the provider
//! forgets the worker (stopped, gone, retired). They are kept beside the
//! configured tokens (a SIGHUP reload of those leaves them be) and in
//! `DATA_DIR/join-tokens` (0600, like the main token), so a restarted
//! manager takes its launched workers back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How a worker that joined with such a token is named in the audit log
/// (`join:pods-1a2b3c4d`); its registration must carry that name.
pub const PREFIX: &str = "join:";

#[derive(Default)]
struct Inner {
    /// Worker name → its token.
    tokens: BTreeMap<String, String>,
    /// Where they are kept (none: in memory only).
    file: Option<PathBuf>,
}

#[derive(Clone, Default)]
pub struct JoinTokens(Arc<Mutex<Inner>>);

impl JoinTokens {
    /// The tokens kept in `file` (none if it is missing or unreadable: the
    /// workers they were for cannot come back, and are stopped).
    pub fn load(file: PathBuf) -> JoinTokens {
        let tokens = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        JoinTokens(Arc::new(Mutex::new(Inner {
            tokens,
            file: Some(file),
        })))
    }

    /// A new token for `worker` (replacing any it had).
    pub fn issue(&self, worker: &str) -> String {
        let token = crate::token::generate();
        let mut inner = self.0.lock().expect("join tokens");
        inner.tokens.insert(worker.to_string(), token.clone());
        save(&inner);
        token
    }

    pub fn revoke(&self, worker: &str) {
        let mut inner = self.0.lock().expect("join tokens");
        if inner.tokens.remove(worker).is_some() {
            save(&inner);
        }
    }

    /// The workers holding a token.
    pub fn workers(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("join tokens")
            .tokens
            .keys()
            .cloned()
            .collect()
    }

    /// Whether `worker` holds a token (a worker launched before a restart).
    pub fn holds(&self, worker: &str) -> bool {
        self.0
            .lock()
            .expect("join tokens")
            .tokens
            .contains_key(worker)
    }

    /// The worker the token `given` was issued to. Every token is compared
    /// in constant time, so the time taken does not tell which one matched.
    pub fn find(&self, given: &str) -> Option<String> {
        let inner = self.0.lock().expect("join tokens");
        let mut found = None;
        for (worker, token) in &inner.tokens {
            if crate::token::matches(token, given) {
                found = Some(worker.clone());
            }
        }
        found
    }
}

/// Writes the tokens to their file, whole (a new file renamed over the
/// old, so a crash leaves one or the other).
fn save(inner: &Inner) {
    let Some(file) = &inner.file else {
        return;
    };
    let text = serde_json::to_string(&inner.tokens).unwrap_or_default();
    let new = file.with_extension("new");
    let saved = aam_store::files::write_private(&new, text.as_bytes())
        .and_then(|()| std::fs::rename(&new, file));
    if let Err(e) = saved {
        tracing::warn!(file = %file.display(), "providers: keeping the join tokens: {e}");
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

    #[test]
    fn tokens_outlive_the_process_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("join-tokens");
        let joins = JoinTokens::load(file.clone());
        let a = joins.issue("p-1");
        joins.issue("p-2");
        joins.revoke("p-2");
        let again = JoinTokens::load(file.clone());
        assert_eq!(again.find(&a).as_deref(), Some("p-1"));
        assert!(again.holds("p-1") && !again.holds("p-2"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A damaged file: no tokens, no panic.
        std::fs::write(&file, "{").unwrap();
        assert!(!JoinTokens::load(file).holds("p-1"));
    }
}
