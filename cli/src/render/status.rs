//! Sessions and jobs as `aam status` and `aam sessions` show them: the
//! session table, one session's job table, and their JSON documents.

use super::{counts_line, human_duration, job_duration, opt_time, rfc3339};
use aam_protocol::model::{
    AttemptRecord, Estimate, JobStatus, JobView, SessionSummary, SessionView, TeardownReceipt,
};
use serde_json::{json, Value};
use std::fmt::Write as _;

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
