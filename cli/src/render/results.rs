//! The "Results Summary" in Markdown (`aam results`, the end of `aam run`):
//! the session's verdict, a table of its jobs, then each job grouped by
//! outcome with its output tail or, for a gate, its decision.

use super::{counts_line, human_duration, job_duration, mark, rfc3339};
use aam_protocol::model::{JobStatus, JobView, SessionStatus, SessionView};
use std::fmt::Write as _;

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
