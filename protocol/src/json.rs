//! The JSON documents aam shows users, one shape wherever they are read:
//! `aam status --json` and the other `--json` outputs, the HTTP API and
//! the MCP tools. Times are RFC 3339 (UTC, milliseconds); a worktree's
//! `change` and a variant `pick` are the protocol types as serde writes
//! them.
//!
//! Secrets (DESIGN.md invariant 9): a job's env and argv are not part of
//! these documents at all; the one configured argv they show, an agent's
//! command template (`agents_json`), goes through `secret::redact_argv`,
//! so a `--api-key VALUE` written into a template reads `***` in the CLI,
//! the HTTP API and MCP alike.

use crate::agent_run::{AgentView, LimitPause};
use crate::messages::AgentInfo;
use crate::model::{
    AttemptRecord, Estimate, JobStatus, JobView, SessionSummary, SessionView, TeardownReceipt,
    WorkerView,
};
use crate::worktree::{JobChange, VariantPick};
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 (UTC, milliseconds) for a millisecond timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn opt_time(ms: Option<u64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

pub fn job_duration(job: &JobView) -> Option<u64> {
    job.duration_ms
        .or_else(|| match (job.started_at_ms, job.finished_at_ms) {
            (Some(s), Some(f)) if f >= s => Some(f - s),
            _ => None,
        })
}

pub fn summary_json(s: &SessionSummary) -> Value {
    let counts: serde_json::Map<String, Value> = JobStatus::ALL
        .iter()
        .map(|st| (st.as_str().to_string(), json!(s.count(*st))))
        .collect();
    json!({
        "id": s.id.to_string(),
        "name": s.name,
        "status": s.status.as_str(),
        "created_at": rfc3339(s.created_at_ms),
        "finished_at": opt_time(s.finished_at_ms),
        "jobs_total": s.total,
        "jobs_finished": s.finished(),
        "counts": counts,
        "cost_usd": s.cost_usd,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "needs_input": s.needs_input,
        "waiting_for_input": s.waiting_for_input,
    })
}

/// A running job that waits for someone: `job` as SESSION/JOB, its open
/// permission requests, and whether its agent lingers for a message.
pub fn waiting_json(w: &crate::model::WaitingJob) -> Value {
    json!({
        "job": format!("{}/{}", w.session, w.job),
        "session": w.session.to_string(),
        "name": w.job,
        "needs_input": !w.requests.is_empty(),
        "requests": w.requests.iter().map(permission_json).collect::<Vec<_>>(),
        "waiting_for_input": w.waiting_for_input,
        "last_answer": w.last_answer,
    })
}

pub fn job_json(job: &JobView, with_output: bool) -> Value {
    let mut v = json!({
        "name": job.name,
        "status": job.status.as_str(),
        "attempts": job.attempts,
        "exit_code": job.exit_code,
        "signal": job.signal,
        "worker": job.worker,
        "started_at": opt_time(job.started_at_ms),
        "finished_at": opt_time(job.finished_at_ms),
        "duration_ms": job_duration(job),
        "reason": job.reason,
        "depends_on": job.depends_on.iter().map(|d| json!({"job": d.job, "when": d.when.as_str()})).collect::<Vec<_>>(),
        "gate": job.gate,
        "decision": job.decision.as_ref().map(|d| json!({
            "approved": d.approved,
            "by": d.by,
            "at": rfc3339(d.at_ms),
            "comment": d.comment,
        })),
        "expected_remaining_ms": job.expected_remaining_ms,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "teardown": job.teardown.as_ref().map(teardown_json),
        "attempt_history": job.history.iter().map(attempt_json).collect::<Vec<_>>(),
        "agent": job.agent.as_ref().map(agent_json),
        "change": job.change.as_ref().map(change_json),
        "variant": job.variant,
        "variants": job.variants,
        "pick": job.pick.as_ref().map(pick_json),
        "takes_input": job.takes_input,
        "waiting_for_input": job.waiting_for_input,
        "permissions": job.permissions.iter().map(permission_json).collect::<Vec<_>>(),
        "needs_input": job.permissions.iter().any(|r| r.decision.is_none()),
    });
    if with_output {
        // The answer beside the raw output it was read from.
        v["result"] = json!(job.agent.as_ref().and_then(|a| a.result.as_deref()));
        v["output"] = json!(String::from_utf8_lossy(&job.output));
        v["output_bytes"] = json!(job.output_bytes);
        // Past the answer's size budget the output is left out, not cut.
        v["output_omitted"] = json!(job.output.is_empty() && job.output_bytes > 0);
    }
    v
}

/// One relayed permission request: `decision` null while it is open.
pub fn permission_json(r: &crate::permission::PermissionRequest) -> Value {
    json!({
        "id": r.id,
        "attempt": r.attempt,
        "tool": r.tool,
        "call": r.summary,
        "asked_at": rfc3339(r.asked_at_ms),
        "decision": r.decision.as_ref().map(|d| json!({
            "allowed": d.allow,
            "message": d.message,
            "by": d.by,
            "at": rfc3339(d.at_ms),
        })),
    })
}

pub fn teardown_json(t: &TeardownReceipt) -> Value {
    json!({
        "signals": t.signals.iter().map(|s| json!({
            "pid": s.pid,
            "signal": signal_name(s.signal),
            "at": rfc3339(s.at_ms),
        })).collect::<Vec<_>>(),
        "survivors": t.survivors,
    })
}

fn signal_name(sig: i32) -> String {
    match sig {
        15 => "SIGTERM".into(),
        9 => "SIGKILL".into(),
        other => format!("signal {other}"),
    }
}

fn attempt_json(a: &AttemptRecord) -> Value {
    json!({
        "attempt": a.attempt,
        "worker": a.worker,
        "started_at": opt_time(a.started_at_ms),
        "finished_at": opt_time(a.finished_at_ms),
        "exit_code": a.exit.and_then(|e| e.code),
        "signal": a.exit.and_then(|e| e.signal),
        "outcome": a.outcome.as_str(),
        "reason": a.reason,
        "teardown": a.teardown.as_ref().map(teardown_json),
        "setup_ms": a.setup_ms,
        "teardown_ms": a.teardown_ms,
    })
}

pub fn session_json(view: &SessionView, with_output: bool) -> Value {
    let mut v = summary_json(&view.summary);
    v["jobs"] = view.jobs.iter().map(|j| job_json(j, with_output)).collect();
    v["offset"] = view.offset.into();
    v["eta"] = estimate_json(&view.eta);
    v["paused"] = paused_json(&view.paused);
    v["waiting"] = waiting_in(view).iter().map(waiting_json).collect();
    v
}

/// A session's running jobs that wait for someone, needing a decision
/// first (as the manager lists them across sessions).
pub fn waiting_in(view: &SessionView) -> Vec<crate::model::WaitingJob> {
    let mut waiting: Vec<_> = view
        .jobs
        .iter()
        .filter(|j| j.status == JobStatus::Running)
        .map(|j| crate::model::WaitingJob {
            session: view.summary.id,
            job: j.name.clone(),
            requests: j
                .permissions
                .iter()
                .filter(|r| r.decision.is_none())
                .cloned()
                .collect(),
            waiting_for_input: j.waiting_for_input,
            last_answer: j
                .agent
                .as_ref()
                .and_then(|a| a.result.clone().or(a.last_text.clone())),
        })
        .filter(|w| !w.requests.is_empty() || w.waiting_for_input)
        .collect();
    waiting.sort_by_key(|w| w.requests.is_empty());
    waiting
}

/// `aam submit --json`: the new session (or, `existing`, the one an
/// idempotency key already made) and its estimate.
pub fn submitted_json(
    session: crate::SessionId,
    name: &str,
    jobs: u32,
    existing: bool,
    estimate: &Estimate,
) -> Value {
    json!({
        "session": session.to_string(),
        "name": name,
        "jobs": jobs,
        "existing": existing,
        "estimate": estimate_json(estimate),
    })
}

/// `aam results --json`: the session with every job's whole output; with
/// `only_failed`, the jobs that did not succeed.
pub fn results_json(view: &SessionView, only_failed: bool) -> Value {
    let mut doc = session_json(view, true);
    if only_failed {
        if let Some(jobs) = doc["jobs"].as_array_mut() {
            jobs.retain(|j| j["status"] != "succeeded");
        }
    }
    doc
}

pub fn estimate_json(e: &Estimate) -> Value {
    json!({
        "ms": e.ms,
        "jobs_without_history": e.unknown,
        "gates": e.gates,
        "slots": e.slots,
    })
}

/// `status --json`'s `agent` object.
pub fn agent_json(agent: &AgentView) -> Value {
    json!({
        "session_id": agent.session_id,
        "model": agent.model,
        "turns": agent.turns,
        "tool_calls": agent.tool_calls,
        "last_tool": agent.last_tool,
        "last_text": agent.last_text,
        "input_tokens": agent.input_tokens,
        "output_tokens": agent.output_tokens,
        "cache_read_tokens": agent.cache_read_tokens,
        "cost_usd": agent.cost_usd,
        "result": agent.result,
        "error": agent.error,
        "retrying": agent.retrying,
    })
}

pub fn paused_json(paused: &[LimitPause]) -> Value {
    paused
        .iter()
        .map(|p| {
            json!({
                "group": p.group,
                "until": rfc3339(p.until_ms),
                "message": p.message,
            })
        })
        .collect()
}

/// `status --json`'s `change` object: the protocol's `JobChange` as serde
/// writes it (`stat` holds `files`, `insertions`, `deletions`), the same
/// shape as in a dependent's `AAM_INPUTS`, so it reads back as that type.
pub fn change_json(change: &JobChange) -> Value {
    protocol_json(change)
}

/// `status --json`'s `pick` object: `{"winner", "reason"}`.
pub fn pick_json(pick: &VariantPick) -> Value {
    protocol_json(pick)
}

/// A protocol type as serde writes it. (These types have no map with
/// keys other than strings, the one thing serde_json cannot write.)
fn protocol_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub fn agents_json(agents: &[AgentInfo], problems: &[(String, String)]) -> Value {
    json!({
        "agents": agents.iter().map(|a| json!({
            "name": a.name,
            "source": a.source,
            "description": a.description,
            "model": a.model,
            "tools": a.tools,
            "command": crate::secret::redact_argv(&a.command),
        })).collect::<Vec<_>>(),
        "problems": problems.iter().map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>(),
    })
}

pub fn workers_json(workers: &[WorkerView]) -> Value {
    workers
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "address": w.address,
                "slots": w.slots,
                "running": w.running,
                "labels": w.labels,
                "connected_at": rfc3339(w.connected_at_ms),
                "last_heartbeat": rfc3339(w.last_heartbeat_ms),
            })
        })
        .collect()
}

/// `aam resources --json`: each shared resource, its capacity, how much
/// is in use and by whom.
pub fn resources_json(resources: &[crate::resource::ResourceView]) -> Value {
    resources
        .iter()
        .map(|r| {
            let holders: Vec<Value> = r
                .holders
                .iter()
                .map(|h| json!({"job": h.job, "count": h.count, "worker": h.worker}))
                .collect();
            json!({
                "name": r.name,
                "capacity": r.capacity,
                "in_use": r.in_use,
                "holders": holders,
            })
        })
        .collect()
}

/// `aam accounts --json`: each account, paused until when (and why),
/// whether it is resuming, its running jobs and what ran on it cost.
pub fn accounts_json(accounts: &[crate::account::AccountView]) -> Value {
    accounts
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "paused_until": opt_time(a.paused_until_ms),
                "pause_message": a.pause_message,
                "resuming": a.resuming,
                "running": a.running,
                "cost_usd": a.cost_usd,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_commands_hide_the_value_of_secret_flags() {
        let agent = AgentInfo {
            name: "a".into(),
            source: "config".into(),
            description: None,
            model: None,
            tools: None,
            command: [
                "agent",
                "--api-key",
                "sk-live-123",
                "--token=t-1",
                "{prompt}",
            ]
            .map(String::from)
            .to_vec(),
        };
        let doc = agents_json(&[agent], &[]).to_string();
        assert!(
            !doc.contains("sk-live-123") && !doc.contains("t-1"),
            "{doc}"
        );
        assert!(doc.contains(r#"["agent","--api-key","***","--token=***","{prompt}"]"#));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(opt_time(None), Value::Null);
    }
}
