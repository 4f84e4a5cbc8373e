//! `aam audit [--since DUR] [--json]`: the manager's audit log (admin
//! tokens only), oldest first: when, which token (name and role), from
//! where, what, on what, and how it ended.

use super::{duration_flag, print_json};
use crate::args::ManagerFlags;
use crate::endpoint;
use aam_protocol::audit::{audit_json, AuditRecord};
use aam_protocol::json::rfc3339;
use aam_protocol::now_ms;

pub async fn run(flags: &ManagerFlags, since: Option<String>, json: bool) -> anyhow::Result<i32> {
    let since_ms = duration_flag("--since", since)?.map(|ago| now_ms().saturating_sub(ago));
    let mut client = endpoint::connect(flags).await?;
    let (records, truncated) = client.audit(since_ms).await?;
    if json {
        print_json(&audit_json(&records));
    } else {
        print!("{}", table(&records));
    }
    if truncated {
        stderr_line!(
            "(older records left out: the newest {} are shown; use --since)",
            records.len()
        );
    }
    Ok(0)
}

/// One line a record, in columns.
fn table(records: &[AuditRecord]) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:<14} {:<21} {:<9} {:<16} {:<7} {}\n",
        "TIME", "TOKEN", "ROLE", "PEER", "ACTION", "TARGET", "OUTCOME", "DETAIL"
    );
    for r in records {
        out.push_str(&format!(
            "{:<24} {:<12} {:<14} {:<21} {:<9} {:<16} {:<7} {}\n",
            rfc3339(r.at_ms),
            r.token,
            r.role,
            r.peer,
            r.action,
            r.target,
            r.outcome.as_str(),
            r.detail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::audit::AuditOutcome;

    #[test]
    fn one_line_a_record() {
        let r = AuditRecord {
            at_ms: 0,
            token: "ci".into(),
            role: "read".into(),
            peer: "10.0.0.2:4000".into(),
            action: "cancel".into(),
            target: "s4".into(),
            outcome: AuditOutcome::Denied,
            detail: "permission denied: token ci has role read".into(),
        };
        let text = table(&[r]);
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("1970-01-01T00:00:00.000Z ci "), "{line}");
        assert!(
            line.ends_with("denied  permission denied: token ci has role read"),
            "{line}"
        );
    }
}
