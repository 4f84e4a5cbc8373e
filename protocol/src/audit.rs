//! The audit log's record: who (token name, role, peer address) did or was
//! refused what (action, target), and when. The manager makes them, the
//! store keeps them encoded, `aam audit` and `GET /api/audit` show them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How a recorded request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// It was allowed and done.
    Done,
    /// It was allowed but failed (no such session, not a gate, ...).
    Failed,
    /// It was refused: the token's role, a quota, or a bad token.
    Denied,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Done => "done",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Denied => "denied",
        }
    }
}

/// One entry of the audit log. Never holds a token, only its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    /// The token's name (`?` for a token the manager does not know).
    pub token: String,
    /// Its role(s), as configured (`admin`, `submit+worker`, ...).
    pub role: String,
    /// The peer's address (`IP:port`).
    pub peer: String,
    /// `submit`, `cancel`, `approve`, `reject`, `retry`, `continue`, `gc`,
    /// `register`, `connect`, or a read (`status`, `logs`, ...) when denied.
    pub action: String,
    /// What it acted on (`s42`, `s42/build`, a worker's name), or empty.
    pub target: String,
    pub outcome: AuditOutcome,
    /// Why it was denied or failed, or what it did (`s43` for a submit).
    pub detail: String,
}

/// `aam audit --json` and `GET /api/audit`: one object per record, oldest first.
pub fn audit_json(records: &[AuditRecord]) -> Value {
    records
        .iter()
        .map(|r| {
            json!({
                "at": crate::json::rfc3339(r.at_ms),
                "token": r.token,
                "role": r.role,
                "peer": r.peer,
                "action": r.action,
                "target": r.target,
                "outcome": r.outcome.as_str(),
                "detail": r.detail,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let r = AuditRecord {
            at_ms: 0,
            token: "ci".into(),
            role: "read".into(),
            peer: "127.0.0.1:5000".into(),
            action: "cancel".into(),
            target: "s1".into(),
            outcome: AuditOutcome::Denied,
            detail: "permission denied: token ci has role read".into(),
        };
        let doc = audit_json(&[r]);
        assert_eq!(doc[0]["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(doc[0]["outcome"], "denied");
        assert_eq!(doc[0]["token"], "ci");
    }
}
