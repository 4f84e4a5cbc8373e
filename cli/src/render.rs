//! Everything the CLI prints: tables, JSON documents and the Markdown
//! results summary.

use aam_protocol::messages::AgentInfo;
use aam_protocol::model::{
    AttemptRecord, Estimate, JobStatus, JobView, SessionStatus, SessionSummary, SessionView,
    TeardownReceipt, WorkerView,
};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// RFC 3339 (UTC, milliseconds) for a millisecond timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn opt_time(ms: Option<u64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

/// A short human duration: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn human_duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

pub fn job_duration(job: &JobView) -> Option<u64> {
    job.duration_ms
        .or_else(|| match (job.started_at_ms, job.finished_at_ms) {
            (Some(s), Some(f)) if f >= s => Some(f - s),
            _ => None,
        })
}

pub fn mark(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "✅",
        JobStatus::Failed | JobStatus::TimedOut | JobStatus::Cancelled => "❌",
        JobStatus::Skipped => "⏭",
        JobStatus::Pending | JobStatus::Queued | JobStatus::Running => "⏳",
    }
}

/// "3 succeeded, 1 failed, 2 running" (non-zero counts only).
pub fn counts_line(s: &SessionSummary) -> String {
    let parts: Vec<String> = JobStatus::ALL
        .iter()
        .filter(|st| s.count(**st) > 0)
        .map(|st| format!("{} {}", s.count(*st), st))
        .collect();
    parts.join(", ")
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
    })
}

pub fn sessions_table(sessions: &[SessionSummary]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".into();
    }
    let mut out = format!(
        "{:<8} {:<24} {:<10} {:>11}  {:<24} {}\n",
        "ID", "NAME", "STATUS", "DONE/TOTAL", "CREATED", "JOBS"
    );
    for s in sessions {
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:<10} {:>11}  {:<24} {}",
            s.id.to_string(),
            s.name,
            s.status.as_str(),
            format!("{}/{}", s.finished(), s.total),
            rfc3339(s.created_at_ms),
            counts_line(s)
        );
    }
    out
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
    });
    if with_output {
        v["output"] = json!(String::from_utf8_lossy(&job.output));
        v["output_bytes"] = json!(job.output_bytes);
        // Past the answer's size budget the output is left out, not cut.
        v["output_omitted"] = json!(job.output.is_empty() && job.output_bytes > 0);
    }
    v
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
    })
}

pub fn session_json(view: &SessionView, with_output: bool) -> Value {
    let mut v = summary_json(&view.summary);
    v["jobs"] = view.jobs.iter().map(|j| job_json(j, with_output)).collect();
    v["eta"] = estimate_json(&view.eta);
    v
}

pub fn estimate_json(e: &Estimate) -> Value {
    json!({
        "ms": e.ms,
        "jobs_without_history": e.unknown,
        "gates": e.gates,
        "slots": e.slots,
    })
}

/// "estimate: about 2m05s with 4 slots", or why there is none.
pub fn estimate_line(e: &Estimate) -> String {
    let gates = if e.gates > 0 {
        format!(" (plus {} gate(s) awaiting a person)", e.gates)
    } else {
        String::new()
    };
    match e.ms {
        Some(ms) => format!(
            "estimate: about {} with {} slots{gates}",
            human_duration(ms),
            e.slots
        ),
        None if e.slots == 0 => "no estimate: no worker connected".into(),
        None => format!(
            "no estimate yet: {} job(s) have no history (they have not run before)",
            e.unknown
        ),
    }
}

pub fn session_table(view: &SessionView) -> String {
    let s = &view.summary;
    let mut out = format!(
        "session {} ({}): {} — {}\n",
        s.id,
        s.name,
        s.status,
        counts_line(s)
    );
    if !s.status.is_terminal() {
        let _ = writeln!(
            out,
            "{}",
            estimate_line(&view.eta).replacen("estimate", "ETA", 1)
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:>3} {:>5} {:<20} {:>9}  NOTE",
        "JOB", "STATUS", "TRY", "EXIT", "WORKER", "DURATION"
    );
    for j in &view.jobs {
        let exit = match (j.exit_code, j.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => format!("sig{sig}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:>3} {:>5} {:<20} {:>9}  {}",
            j.name,
            j.status.as_str(),
            j.attempts,
            exit,
            j.worker.as_deref().unwrap_or("-"),
            job_duration(j)
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            note(j)
        );
    }
    out
}

/// Progress while a job runs, else why it is as it is.
fn note(j: &JobView) -> String {
    let left = j
        .expected_remaining_ms
        .map(|ms| format!(" (~{} left)", human_duration(ms)))
        .unwrap_or_default();
    match (j.status, j.progress) {
        (JobStatus::Running, Some(p)) => {
            format!("{p}% {}", j.progress_message.as_deref().unwrap_or(""))
                .trim_end()
                .to_string()
                + &left
        }
        (JobStatus::Running, None) => left.trim_start().to_string(),
        _ => j.reason.clone().unwrap_or_default(),
    }
}

/// Lines of output shown per job in the Markdown summary.
const TAIL_LINES: usize = 15;

/// The "Results Summary" in Markdown.
pub fn results_markdown(view: &SessionView, only_failed: bool) -> String {
    let s = &view.summary;
    let mut out = format!("# Results Summary: {} ({})\n\n", s.name, s.id);
    let verdict = match s.status {
        SessionStatus::Succeeded => "✅ succeeded",
        SessionStatus::Failed => "❌ failed",
        SessionStatus::Cancelled => "❌ cancelled",
        SessionStatus::Running => "⏳ running",
    };
    let wall = s
        .finished_at_ms
        .map(|f| human_duration(f.saturating_sub(s.created_at_ms)))
        .unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "**Session {verdict}** — {} jobs: {} — wall time {wall}\n",
        s.total,
        counts_line(s)
    );
    let shown: Vec<&JobView> = view
        .jobs
        .iter()
        .filter(|j| !only_failed || j.status != JobStatus::Succeeded)
        .collect();
    if only_failed && shown.is_empty() {
        out.push_str("Every job succeeded.\n");
        return out;
    }
    out.push_str("| | Job | Status | Duration | Exit | Attempts |\n|---|---|---|---|---|---|\n");
    for j in &shown {
        let exit = match (j.exit_code, j.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            mark(j.status),
            j.name,
            j.status,
            job_duration(j)
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
            exit,
            j.attempts
        );
    }
    // Then each job, grouped: what did not succeed first.
    let groups: [(&str, &[JobStatus]); 4] = [
        (
            "❌ Did not succeed",
            &[JobStatus::Failed, JobStatus::TimedOut, JobStatus::Cancelled],
        ),
        ("⏭ Skipped", &[JobStatus::Skipped]),
        (
            "⏳ Not finished",
            &[JobStatus::Pending, JobStatus::Queued, JobStatus::Running],
        ),
        ("✅ Succeeded", &[JobStatus::Succeeded]),
    ];
    let mut ordered: Vec<&JobView> = Vec::new();
    for (title, statuses) in groups {
        let members: Vec<&JobView> = shown
            .iter()
            .copied()
            .filter(|j| statuses.contains(&j.status))
            .collect();
        if !members.is_empty() {
            let _ = writeln!(out, "\n## {title} ({})", members.len());
            ordered.extend(members);
            for j in ordered.drain(..) {
                job_section(&mut out, &s.id.to_string(), j);
            }
        }
    }
    out
}

/// One job's part of the Markdown summary.
fn job_section(out: &mut String, session: &str, j: &JobView) {
    let _ = write!(
        out,
        "\n### {} {} — {}{}",
        mark(j.status),
        j.name,
        j.status,
        job_duration(j)
            .map(|d| format!(" in {}", human_duration(d)))
            .unwrap_or_default()
    );
    if j.attempts > 1 {
        let _ = write!(out, ", {} attempts", j.attempts);
    }
    if let Some(reason) = &j.reason {
        let _ = write!(out, " ({reason})");
    }
    out.push('\n');
    if let Some(d) = &j.decision {
        let verb = if d.approved { "Approved" } else { "Rejected" };
        let _ = writeln!(
            out,
            "\n**{verb}** by {} at {}{}",
            d.by,
            rfc3339(d.at_ms),
            d.comment
                .as_ref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
        return;
    }
    if j.gate {
        out.push_str("\n_(gate: no decision yet)_\n");
        return;
    }
    let text = String::from_utf8_lossy(&j.output);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        if j.output_bytes > 0 {
            let _ = writeln!(
                out,
                "\n_({} bytes of output did not fit in this answer: `aam logs {session}/{}`)_",
                j.output_bytes, j.name
            );
        } else {
            out.push_str("\n_(no output)_\n");
        }
        return;
    }
    let start = lines.len().saturating_sub(TAIL_LINES);
    if start > 0 || j.output_bytes > j.output.len() as u64 {
        let _ = writeln!(out, "\n_last {} lines of output:_", lines.len() - start);
    }
    out.push_str("\n```text\n");
    for line in &lines[start..] {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("```\n");
}

pub fn agents_json(agents: &[AgentInfo], problems: &[(String, String)]) -> Value {
    json!({
        "agents": agents.iter().map(|a| json!({
            "name": a.name,
            "source": a.source,
            "description": a.description,
            "model": a.model,
            "tools": a.tools,
            "command": a.command,
        })).collect::<Vec<_>>(),
        "problems": problems.iter().map(|(path, why)| json!({"path": path, "problem": why})).collect::<Vec<_>>(),
    })
}

pub fn agents_table(agents: &[AgentInfo], problems: &[(String, String)]) -> String {
    let mut out = String::new();
    if agents.is_empty() {
        out.push_str("no agents: define [agents.NAME] in the manager's config, or add definitions to its agents_dirs\n");
    } else {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<40} DESCRIPTION",
            "NAME", "MODEL", "SOURCE"
        );
        for a in agents {
            let _ = writeln!(
                out,
                "{:<24} {:<10} {:<40} {}",
                a.name,
                a.model.as_deref().unwrap_or("-"),
                a.source,
                a.description.as_deref().unwrap_or("")
            );
        }
    }
    for (path, why) in problems {
        let _ = writeln!(out, "skipped {path}: {why}");
    }
    out
}

pub fn workers_table(workers: &[WorkerView], now_ms: u64) -> String {
    if workers.is_empty() {
        return "no workers connected\n".into();
    }
    let mut out = format!(
        "{:<24} {:<22} {:>5} {:>7}  {:<10} {}\n",
        "NAME", "ADDRESS", "SLOTS", "RUNNING", "HEARTBEAT", "LABELS"
    );
    for w in workers {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "{:<24} {:<22} {:>5} {:>7}  {:<10} {}",
            w.name,
            w.address,
            w.slots,
            w.running.len(),
            format!(
                "{} ago",
                human_duration(now_ms.saturating_sub(w.last_heartbeat_ms))
            ),
            labels.join(",")
        );
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(12_340), "12.3s");
        assert_eq!(human_duration(245_000), "4m05s");
        assert_eq!(human_duration(7_380_000), "2h03m");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
