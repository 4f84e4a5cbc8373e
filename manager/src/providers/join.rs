//! Join tokens (issue 17): each worker a provider launches gets a token of
//! its own, good for the `worker` role only and for registering that
//! worker's name alone (one connection at a time: a second one of that
//! name is refused), made at launch and dropped when the provider forgets
//! the worker (stopped, gone, retired). A token not used within its
//! provider's `connect_timeout` expires; once used it stays good for its
//! worker's reconnections (a network blip, a manager restart). Kept beside the
//! configured tokens (a SIGHUP reload of those leaves them be) and in
//! `DATA_DIR/join-tokens` (0600, like the main token), so a restarted
//! manager takes its launched workers back.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// How a worker that joined with such a token is named in the audit log
/// (`join:pods-1a2b3c4d`); its registration must carry that name.
pub const PREFIX: &str = "join:";

/// One worker's token, as kept.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum Kept {
    Token {
        token: String,
        /// Unix ms after which it no longer joins, until its first use.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_ms: Option<u64>,
    },
    /// As the first build with providers kept it: used, no expiry.
    Bare(String),
}

impl Kept {
    fn token(&self) -> &str {
        match self {
            Kept::Token { token, .. } | Kept::Bare(token) => token,
        }
    }

    fn expired(&self, now_ms: u64) -> bool {
        matches!(self, Kept::Token { expires_ms: Some(at), .. } if now_ms > *at)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct Inner {
    /// Worker name → its token.
    tokens: BTreeMap<String, Kept>,
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

    /// A new token for `worker` (replacing any it had), good for its
    /// first registration within `ttl_ms`.
    pub fn issue(&self, worker: &str, ttl_ms: u64) -> String {
        let token = crate::token::generate();
        let mut inner = self.0.lock().expect("join tokens");
        let kept = Kept::Token {
            token: token.clone(),
            expires_ms: Some(now_ms().saturating_add(ttl_ms)),
        };
        inner.tokens.insert(worker.to_string(), kept);
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

    /// Whether `worker`'s token has joined it at least once: it connected,
    /// even if it has left again by the time anyone looks.
    pub fn used(&self, worker: &str) -> bool {
        let inner = self.0.lock().expect("join tokens");
        matches!(
            inner.tokens.get(worker),
            Some(
                Kept::Bare(_)
                    | Kept::Token {
                        expires_ms: None,
                        ..
                    }
            )
        )
    }

    /// Whether `worker` holds a token (a worker launched before a restart).
    pub fn holds(&self, worker: &str) -> bool {
        self.0
            .lock()
            .expect("join tokens")
            .tokens
            .contains_key(worker)
    }

    /// The worker the token `given` was issued to, unless it expired
    /// unused; this use ends its expiry. Every token is compared in
    /// constant time, so the time taken does not tell which one matched.
    pub fn find(&self, given: &str) -> Option<String> {
        self.find_at(given, now_ms())
    }

    /// `find` at the Unix time `now_ms`.
    fn find_at(&self, given: &str, now_ms: u64) -> Option<String> {
        let mut inner = self.0.lock().expect("join tokens");
        let mut found = None;
        for (worker, kept) in &inner.tokens {
            if crate::token::matches(kept.token(), given) {
                found = Some(worker.clone());
            }
        }
        let worker = found?;
        let kept = inner.tokens.get_mut(&worker)?;
        if kept.expired(now_ms) {
            return None;
        }
        if let Kept::Token { expires_ms, .. } = kept {
            if expires_ms.take().is_some() {
                save(&inner);
            }
        }
        Some(worker)
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
        let a = joins.issue("p-1", 60_000);
        let b = joins.issue("p-2", 60_000);
        assert_ne!(a, b);
        assert_eq!(joins.find(&a).as_deref(), Some("p-1"));
        assert_eq!(joins.find("nope"), None);
        joins.revoke("p-1");
        assert_eq!(joins.find(&a), None);
        assert_eq!(joins.find(&b).as_deref(), Some("p-2"));
    }

    #[test]
    fn a_token_unused_past_its_expiry_joins_nothing_and_a_used_one_does_not_expire() {
        let joins = JoinTokens::default();
        let late = joins.issue("p-1", 60_000);
        let used = joins.issue("p-2", 60_000);
        assert!(!joins.used("p-2"));
        assert_eq!(joins.find(&used).as_deref(), Some("p-2"));
        assert!(joins.used("p-2") && !joins.used("p-1"));
        let later = now_ms() + 61_000;
        assert_eq!(
            joins.find_at(&late, later),
            None,
            "expired before its first use"
        );
        assert_eq!(
            joins.find_at(&used, later).as_deref(),
            Some("p-2"),
            "used in time: good for its reconnections"
        );
    }

    #[test]
    fn tokens_outlive_the_process_in_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("join-tokens");
        let joins = JoinTokens::load(file.clone());
        let a = joins.issue("p-1", 60_000);
        joins.issue("p-2", 60_000);
        joins.revoke("p-2");
        let again = JoinTokens::load(file.clone());
        assert_eq!(again.find(&a).as_deref(), Some("p-1"));
        assert!(again.holds("p-1") && !again.holds("p-2"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The first build's file (worker → token) still reads.
        std::fs::write(&file, r#"{"p-3": "old-token"}"#).unwrap();
        assert_eq!(
            JoinTokens::load(file.clone()).find("old-token").as_deref(),
            Some("p-3")
        );
        // A damaged file: no tokens, no panic.
        std::fs::write(&file, "{").unwrap();
        assert!(!JoinTokens::load(file).holds("p-1"));
    }
}
