//! The "Results Summary" in Markdown (`aam results`, the end of `aam run`):
//! the session's verdict and spend, a table of its jobs, then each job
//! grouped by outcome with what it produced: an agent job's final answer
//! (Markdown as the agent wrote it) or error, a command's output tail, a
//! gate's decision, a worktree job's branch and diffstat, and for a job of
//! variants each variant's outcome and which one won.

use super::agent::{any_agent, has_spend, reports_activity, spend, turns, usd};
use super::change::{any_change, change_cell, change_paragraph, variants_table};
use super::{counts_line, human_duration, job_duration, mark, rfc3339};
use aam_protocol::agent_run::AgentView;
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
    let agents = any_agent(&view.jobs);
    if agents || has_spend(s) {
        let _ = writeln!(out, "**Cost:** {}\n", spend(s));
    }
    let shown: Vec<&JobView> = view
        .jobs
        .iter()
        .filter(|j| !only_failed || j.status != JobStatus::Succeeded)
        .collect();
    if only_failed && shown.is_empty() {
        out.push_str("Every job succeeded.\n");
        return out;
    }
    jobs_table(&mut out, view, &shown, agents);
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
    for (title, statuses) in groups {
        let members: Vec<&JobView> = shown
            .iter()
            .copied()
            .filter(|j| statuses.contains(&j.status))
            .collect();
        if !members.is_empty() {
            let _ = writeln!(out, "\n## {title} ({})", members.len());
            for j in members {
                job_section(&mut out, view, j);
            }
        }
    }
    out
}

/// The table of jobs; with `agents`, each job's turns and cost too; with
/// worktree jobs, what each changed.
fn jobs_table(out: &mut String, view: &SessionView, jobs: &[&JobView], agents: bool) {
    let changes = any_change(jobs);
    let mut header = "| | Job | Status | Duration | Exit | Attempts |".to_string();
    if agents {
        header.push_str(" Turns | Cost |");
    }
    if changes {
        header.push_str(" Change |");
    }
    let columns = header.matches('|').count() - 1;
    let _ = writeln!(out, "{header}\n{}|", "|---".repeat(columns));
    for j in jobs {
        let exit = match (j.exit_code, j.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "-".into(),
        };
        let _ = write!(
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
        match (&j.agent, agents) {
            (Some(a), true) => {
                let _ = write!(out, " {} | {} |", a.turns, usd(a.cost_usd));
            }
            (None, true) => out.push_str(" - | - |"),
            (_, false) => {}
        }
        if changes {
            let _ = write!(out, " {} |", change_cell(view, j));
        }
        out.push('\n');
    }
}

/// One job's part of the Markdown summary.
fn job_section(out: &mut String, view: &SessionView, j: &JobView) {
    let session = &view.summary.id.to_string();
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
    if let Some(agent) = j.agent.as_ref().filter(|a| reports_activity(a)) {
        let _ = write!(out, ", {}, {}", turns(agent.turns), usd(agent.cost_usd));
    }
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
    change_paragraph(out, session, j);
    variants_table(out, view, j);
    if !j.variants.is_empty() {
        // It ran nothing itself: its variants' sections have their output.
        return;
    }
    match &j.agent {
        Some(agent) => agent_answer(out, session, j, agent),
        None => output_tail(out, session, j),
    }
}

/// An agent job's error (unless its reason already says it) and final
/// answer; before it has one, the last thing it said; with neither (it
/// never got going), its output tail.
fn agent_answer(out: &mut String, session: &str, j: &JobView, agent: &AgentView) {
    if let Some(error) = &agent.error {
        if !j
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(error.trim()))
        {
            let _ = writeln!(out, "\n**Error:** {}", error.trim());
        }
    }
    let (label, text) = match (&agent.result, &agent.last_text) {
        (Some(result), _) => ("", result),
        (None, Some(last)) => ("_last message:_\n\n", last),
        (None, None) if agent.error.is_some() => return,
        (None, None) => return output_tail(out, session, j),
    };
    let text = text.trim_matches('\n');
    if text.trim().is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{label}{text}");
    // A fence the answer left open would swallow the rest of the summary.
    let fences = text
        .lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count();
    if fences % 2 == 1 {
        out.push_str("```\n");
    }
}

/// The last lines of a job's captured output, in a code block.
fn output_tail(out: &mut String, session: &str, j: &JobView) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_views::{agent_job, agent_view, job, session};

    fn answered(name: &str, status: JobStatus, result: Option<&str>) -> JobView {
        let mut agent = agent_view(2, Some("Write notes.md"), 0.0312);
        agent.result = result.map(String::from);
        agent_job(name, status, agent)
    }

    #[test]
    fn an_agent_job_shows_its_answer_cost_and_turns_not_its_stream() {
        let review = answered(
            "review",
            JobStatus::Succeeded,
            Some("## Findings\n\n- `parse` panics on empty input\n"),
        );
        let tests = job("tests", JobStatus::Succeeded, "12 passed\n");
        let md = results_markdown(
            &session(SessionStatus::Succeeded, vec![review, tests]),
            false,
        );
        let expected = "\
# Results Summary: review (s7)

**Session ✅ succeeded** — 2 jobs: 2 succeeded — wall time 3.0s

**Cost:** $0.03 (1.2k input, 340 output tokens)

| | Job | Status | Duration | Exit | Attempts | Turns | Cost |
|---|---|---|---|---|---|---|---|
| ✅ | review | succeeded | 1.5s | 0 | 1 | 2 | $0.03 |
| ✅ | tests | succeeded | 1.5s | 0 | 1 | - | - |

## ✅ Succeeded (2)

### ✅ review — succeeded in 1.5s, 2 turns, $0.03

## Findings

- `parse` panics on empty input

### ✅ tests — succeeded in 1.5s

```text
12 passed
```
";
        assert_eq!(md, expected);
    }

    #[test]
    fn an_agent_error_shows_once() {
        let mut failed = answered("fix", JobStatus::Failed, None);
        failed.agent.as_mut().unwrap().error = Some("API Error: 500 overloaded".into());
        let mut budget = answered("budget", JobStatus::Failed, None);
        budget.reason = Some("agent error: API Error: 500 overloaded".into());
        budget.agent.as_mut().unwrap().error = Some("API Error: 500 overloaded".into());
        let md = results_markdown(&session(SessionStatus::Failed, vec![failed, budget]), false);
        assert!(
            md.contains("### ❌ fix — failed in 1.5s, 2 turns, $0.03\n\n**Error:** API Error: 500 overloaded\n"),
            "{md}"
        );
        assert!(
            md.ends_with("### ❌ budget — failed in 1.5s, 2 turns, $0.03 (agent error: API Error: 500 overloaded)\n"),
            "the reason already says it: {md}"
        );
        assert!(!md.contains("```"), "no raw stream: {md}");
    }

    #[test]
    fn before_its_answer_an_agent_job_shows_what_it_last_said() {
        let mut running = answered("review", JobStatus::Running, None);
        running.agent.as_mut().unwrap().last_text = Some("Reading the parser.".into());
        let md = results_markdown(&session(SessionStatus::Running, vec![running]), false);
        assert!(
            md.ends_with("### ⏳ review — running, 2 turns, $0.03\n\n_last message:_\n\nReading the parser.\n"),
            "{md}"
        );
    }

    #[test]
    fn a_text_agent_reads_like_a_command_without_turns_or_cost() {
        let mut text = agent_job("summary", JobStatus::Succeeded, AgentView::default());
        text.agent.as_mut().unwrap().result = Some("Three bullet points.".into());
        let md = results_markdown(&session(SessionStatus::Succeeded, vec![text]), false);
        assert!(md.contains("### ✅ summary — succeeded in 1.5s\n"), "{md}");
        assert!(!md.contains("turns"), "{md}");
        assert!(!md.contains("$0.00"), "{md}");
    }

    #[test]
    fn an_agent_job_that_never_got_going_shows_its_output() {
        let mut broken = agent_job("review", JobStatus::Failed, agent_view(0, None, 0.0));
        broken.output = b"claude: command not found\n".to_vec();
        broken.output_bytes = broken.output.len() as u64;
        let md = results_markdown(&session(SessionStatus::Failed, vec![broken]), false);
        assert!(
            md.ends_with("0 turns, $0.00\n\n```text\nclaude: command not found\n```\n"),
            "{md}"
        );
    }

    #[test]
    fn an_answer_that_leaves_a_fence_open_is_closed() {
        let review = answered(
            "review",
            JobStatus::Succeeded,
            Some("```rust\nfn main() {}\n"),
        );
        let md = results_markdown(&session(SessionStatus::Succeeded, vec![review]), false);
        assert!(md.ends_with("\n```rust\nfn main() {}\n```\n"), "{md}");
    }

    #[test]
    fn a_session_of_commands_has_no_cost_line_nor_columns() {
        let tests = job("tests", JobStatus::Succeeded, "12 passed\n");
        let md = results_markdown(&session(SessionStatus::Succeeded, vec![tests]), false);
        assert!(!md.contains("Cost"), "{md}");
        assert!(md.contains(
            "| | Job | Status | Duration | Exit | Attempts |\n|---|---|---|---|---|---|\n"
        ));
    }
}
